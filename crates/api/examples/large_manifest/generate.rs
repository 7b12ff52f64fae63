//! The large manifest: `write_manifest(count, out)` writes `count` policies, the same bytes
//! every run. Shared by the example (`main.rs`) and the memory test
//! (`crates/api/tests/load_memory.rs`).

use std::io::Write;

/// A small deterministic generator (a 64-bit LCG), so the manifest is the same every run.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

const NAMESPACES: [&str; 6] = ["prod", "staging", "payments", "search", "batch", "edge"];
const APPS: [&str; 8] = ["web", "api", "db", "cache", "queue", "worker", "auth", "billing"];

/// Writes a Namespace per namespace, then `count` policies: Calico NetworkPolicies and
/// GlobalNetworkPolicies (each with 13 rules: selectors, nets, ports, ICMP) and Kubernetes
/// NetworkPolicies, about 2.6 KB each.
pub fn write_manifest(count: usize, out: &mut impl Write) -> std::io::Result<()> {
    let mut numbers = Numbers(8);
    for namespace in NAMESPACES {
        writeln!(
            out,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels:\n    team: {namespace}\n---"
        )?;
    }
    for index in 0..count {
        let namespace = NAMESPACES[index % NAMESPACES.len()];
        match index % 4 {
            0 | 1 => calico_policy(out, &mut numbers, index, Some(namespace))?,
            2 => calico_policy(out, &mut numbers, index, None)?,
            _ => kubernetes_policy(out, &mut numbers, index, namespace)?,
        }
        if index + 1 < count {
            writeln!(out, "---")?;
        }
    }
    Ok(())
}

fn app(numbers: &mut Numbers) -> &'static str {
    APPS[numbers.next(APPS.len() as u64) as usize]
}

fn net(numbers: &mut Numbers) -> String {
    format!("10.{}.{}.0/24", numbers.next(256), numbers.next(256))
}

fn calico_policy(
    out: &mut impl Write,
    numbers: &mut Numbers,
    index: usize,
    namespace: Option<&str>,
) -> std::io::Result<()> {
    let (kind, namespace_line) = match namespace {
        Some(namespace) => ("NetworkPolicy", format!("\n  namespace: {namespace}")),
        None => ("GlobalNetworkPolicy", String::new()),
    };
    writeln!(
        out,
        "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: policy-{index:06}{namespace_line}\n  labels:\n    generated: \"true\"\n    owner: team-{}\n  annotations:\n    description: \"generated policy {index} for measuring how much memory loading takes\"\n    runbook: \"https://runbooks.example.com/network/policies/policy-{index:06}: who owns this policy, what it protects and whom to call when it blocks traffic that should pass\"\nspec:\n  order: {}\n  selector: app == '{}' && tier in {{'frontend', 'backend'}}\n  types:\n    - Ingress\n    - Egress\n  ingress:",
        numbers.next(50),
        numbers.next(1000),
        app(numbers),
    )?;
    for _ in 0..4 {
        writeln!(
            out,
            "    - action: Allow\n      protocol: TCP\n      source:\n        selector: app == '{}'\n        nets:\n          - {}\n          - {}\n      destination:\n        ports:\n          - {}\n          - {}:{}",
            app(numbers),
            net(numbers),
            net(numbers),
            1 + numbers.next(10_000),
            20_000 + numbers.next(1000),
            21_000 + numbers.next(1000),
        )?;
    }
    writeln!(
        out,
        "    - action: Deny\n      protocol: ICMP\n      icmp:\n        type: 8\n  egress:"
    )?;
    for _ in 0..5 {
        writeln!(
            out,
            "    - action: Allow\n      protocol: UDP\n      destination:\n        selector: app == '{}'\n        notNets:\n          - {}\n        ports:\n          - {}",
            app(numbers),
            net(numbers),
            1 + numbers.next(10_000),
        )?;
    }
    writeln!(
        out,
        "    - action: Allow\n      protocol: TCP\n      destination:\n        nets:\n          - {}\n          - {}\n          - {}\n        ports:\n          - 443\n          - 8443\n    - action: Log\n    - action: Deny",
        net(numbers),
        net(numbers),
        net(numbers),
    )
}

fn kubernetes_policy(
    out: &mut impl Write,
    numbers: &mut Numbers,
    index: usize,
    namespace: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k8s-policy-{index:06}\n  namespace: {namespace}\n  labels:\n    generated: \"true\"\nspec:\n  podSelector:\n    matchLabels:\n      app: {}\n  policyTypes:\n    - Ingress\n    - Egress\n  ingress:",
        app(numbers),
    )?;
    for _ in 0..4 {
        let block = numbers.next(256);
        writeln!(
            out,
            "    - from:\n        - podSelector:\n            matchLabels:\n              app: {}\n        - namespaceSelector:\n            matchLabels:\n              team: {}\n        - ipBlock:\n            cidr: 10.{block}.0.0/16\n            except:\n              - 10.{block}.{}.0/24\n      ports:\n        - protocol: TCP\n          port: {}\n        - protocol: UDP\n          port: {}",
            app(numbers),
            NAMESPACES[numbers.next(NAMESPACES.len() as u64) as usize],
            numbers.next(256),
            1 + numbers.next(10_000),
            1 + numbers.next(10_000),
        )?;
    }
    writeln!(out, "  egress:")?;
    for _ in 0..3 {
        writeln!(
            out,
            "    - to:\n        - podSelector:\n            matchExpressions:\n              - key: app\n                operator: In\n                values:\n                  - {}\n                  - {}\n      ports:\n        - protocol: TCP\n          port: {}",
            app(numbers),
            app(numbers),
            1 + numbers.next(10_000),
        )?;
    }
    Ok(())
}
