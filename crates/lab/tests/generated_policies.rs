//! Probes agree with explain over generated policy sets (issue 4), in a real lab (root only;
//! skipped otherwise).
//!
//! One small lab (two nodes, five pods in three namespaces with varied labels and named ports,
//! two outside hosts with TCP and UDP services) is built once. Then, for each seed, a small
//! random policy set (3-8 policies, with their tiers and network sets) replaces the previous
//! one in one commit, as `sluice apply` would; once every agent has programmed it, every
//! pod → pod and pod → outside service is probed and compared with the evaluator's verdict
//! (`lab probe --against-explain`). A disagreement prints the seed, the generated YAML, each
//! flow's explain trace with the nft rules made from the rule that decided, and where the nodes'
//! nft tables were saved.
//!
//! The generator covers what the dataplane renders: GlobalNetworkPolicy, Calico and Kubernetes
//! NetworkPolicy; tiers with order and defaultAction Pass; Allow, Deny, Pass and Log; pod and
//! namespace selectors (`all()`, `global()` with GlobalNetworkSets, a namespaced NetworkSet),
//! notSelector, service account names; nets and notNets over pod and outside addresses; TCP,
//! UDP, notProtocol; ports, ranges, named ports and notPorts; ingress and egress; policies with
//! no rules. Not ICMP (the probes make none) nor source ports (a probe's is the kernel's choice,
//! and explain judges flows without one).
//!
//! Reproduce one set with `SLUICE_GENERATED_SEEDS=3,7 cargo test -p sluice-lab --test
//! generated_policies` (the default seeds are 1-10). The first test only checks that many seeds
//! give valid sets and needs no root.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness: it is also the programs the lab runs
//! (see `support`).

mod support;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_lab::{ProbeOptions, ProbeReport};
use support::{Lab, Test};

const TESTS: [(&str, Test); 2] = [
    ("generated_policy_sets_are_valid", generated_sets_are_valid),
    (
        "probes_agree_with_explain_over_generated_policy_sets",
        probes_agree_over_generated_sets,
    ),
];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

/// Seeds probed in the lab unless `SLUICE_GENERATED_SEEDS` names others.
const DEFAULT_SEEDS: std::ops::RangeInclusive<u64> = 1..=10;
const SEEDS_VARIABLE: &str = "SLUICE_GENERATED_SEEDS";

// ---- The lab: the generator and the lab file are written from the same constants. ----

type Labels = &'static [(&'static str, &'static str)];

#[derive(Clone, Copy)]
struct NamespaceSpec {
    name: &'static str,
    labels: Labels,
}

/// `beta` takes the routed pool (the outside sees its pods' addresses); the others are
/// masqueraded behind their node.
const NAMESPACES: [NamespaceSpec; 3] = [
    NamespaceSpec {
        name: "alpha",
        labels: &[("team", "a"), ("env", "prod")],
    },
    NamespaceSpec {
        name: "beta",
        labels: &[("team", "b"), ("env", "dev"), ("pool", "routed")],
    },
    NamespaceSpec {
        name: "gamma",
        labels: &[("env", "prod")],
    },
];

struct PodSpec {
    namespace: &'static str,
    name: &'static str,
    node: &'static str,
    labels: Labels,
    service_account: Option<&'static str>,
    /// (name, number, protocol)
    ports: &'static [(Option<&'static str>, u16, &'static str)],
}

/// `http` is a named port of two pods with different numbers; `dns` is UDP.
const PODS: [PodSpec; 5] = [
    PodSpec {
        namespace: "alpha",
        name: "web",
        node: "node-1",
        labels: &[("app", "web"), ("tier", "front")],
        service_account: Some("frontend"),
        ports: &[(Some("http"), 8080, "TCP"), (None, 9090, "TCP")],
    },
    PodSpec {
        namespace: "alpha",
        name: "db",
        node: "node-2",
        labels: &[("app", "db"), ("tier", "back")],
        service_account: Some("backend"),
        ports: &[(Some("sql"), 5432, "TCP"), (Some("dns"), 53, "UDP")],
    },
    PodSpec {
        namespace: "beta",
        name: "api",
        node: "node-1",
        labels: &[("app", "api"), ("tier", "front")],
        service_account: Some("frontend"),
        ports: &[(Some("http"), 8081, "TCP")],
    },
    PodSpec {
        namespace: "beta",
        name: "worker",
        node: "node-2",
        labels: &[("app", "worker")],
        service_account: None,
        ports: &[(Some("dns"), 5353, "UDP")],
    },
    PodSpec {
        namespace: "gamma",
        name: "batch",
        node: "node-2",
        labels: &[("app", "batch"), ("tier", "back")],
        service_account: None,
        ports: &[(None, 9100, "TCP")],
    },
];

const PARTNER: &str = "203.0.113.10";
const OTHER: &str = "198.51.100.20";
const NAT_POOL: &str = "10.72.0.0/16";
const ROUTED_POOL: &str = "10.73.0.0/16";

fn lab_file() -> String {
    let mut text = format!(
        "kind: Lab\nname: placeholder\nnodes:\n  - name: node-1\n  - name: node-2\noutside:\n  \
         - {{name: partner, address: {PARTNER}, tcp: [443, 8443], udp: [53]}}\n  \
         - {{name: other, address: {OTHER}, tcp: [80, 443], udp: [123]}}\nmanifests: [manifests/]\npods:\n"
    );
    for pod in &PODS {
        let labels: Vec<String> = pod
            .labels
            .iter()
            .map(|(key, value)| format!("{key}: {value}"))
            .collect();
        let ports: Vec<String> = pod
            .ports
            .iter()
            .map(|(name, number, protocol)| {
                let name = name.map(|name| format!("name: {name}, ")).unwrap_or_default();
                format!("{{{name}containerPort: {number}, protocol: {protocol}}}")
            })
            .collect();
        let account = pod
            .service_account
            .map(|account| format!(", serviceAccount: {account}"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "  - {{namespace: {}, name: {}, node: {}, labels: {{{}}}{account}, ports: [{}]}}",
            pod.namespace,
            pod.name,
            pod.node,
            labels.join(", "),
            ports.join(", ")
        );
    }
    text
}

fn lab_manifests() -> Vec<(&'static str, String)> {
    let mut namespaces = String::new();
    for namespace in &NAMESPACES {
        let _ = writeln!(
            namespaces,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels:",
            namespace.name
        );
        for (key, value) in namespace.labels {
            let _ = writeln!(namespaces, "    {key}: {value}");
        }
    }
    let pools = format!(
        r#"apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: gen-nat
spec:
  cidr: {NAT_POOL}
  natOutgoing: true
  namespaceSelector: pool != "routed"
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: gen-routed
spec:
  cidr: {ROUTED_POOL}
  namespaceSelector: pool == "routed"
"#
    );
    vec![("00-namespaces.yaml", namespaces), ("01-pools.yaml", pools)]
}

// ---- The generator. ----

/// xorshift64, seeded through splitmix64 so that neighbouring seeds differ from the start.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut mixed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((mixed ^ (mixed >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut state = self.0;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        self.0 = state;
        state
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn percent(&mut self, chance: u64) -> bool {
        self.next() % 100 < chance
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn weighted<T: Copy>(&mut self, items: &[(u32, T)]) -> T {
        let total: u32 = items.iter().map(|(weight, _)| weight).sum();
        let mut roll = (self.next() % u64::from(total)) as u32;
        for (weight, item) in items {
            if roll < *weight {
                return *item;
            }
            roll -= weight;
        }
        items[items.len() - 1].1
    }

    /// Up to `most` distinct items, at least one.
    fn some<T: Copy + PartialEq>(&mut self, items: &[T], most: usize) -> Vec<T> {
        let count = 1 + self.below(most);
        let mut chosen = Vec::new();
        for _ in 0..count {
            let item = self.pick(items);
            if !chosen.contains(&item) {
                chosen.push(item);
            }
        }
        chosen
    }
}

/// Calico selectors on pod labels (and one on network sets' `role`).
const POD_SELECTORS: &[&str] = &[
    "all()",
    r#"app == "web""#,
    r#"app == "db""#,
    r#"app == "api""#,
    r#"app == "worker""#,
    r#"tier == "front""#,
    r#"tier == "back""#,
    "has(tier)",
    "!has(tier)",
    r#"app in {"web", "api"}"#,
    r#"tier != "front""#,
    r#"app == "batch" || app == "worker""#,
    r#"app not in {"db"} && has(app)"#,
    r#"role == "partner""#,
];
/// Rule namespace selectors, `global()` aside.
const NAMESPACE_SELECTORS: &[&str] = &[
    "all()",
    r#"team == "a""#,
    r#"env == "prod""#,
    "has(team)",
    "!has(team)",
    r#"projectcalico.org/name == "gamma""#,
];
/// Selectors for the network sets' labels, used with `namespaceSelector: global()`.
const SET_SELECTORS: &[&str] = &[
    "all()",
    r#"role == "partner""#,
    r#"role == "other""#,
    r#"zone == "outside""#,
    "has(role)",
];
/// Outside networks for rules, ipBlocks and network sets.
const OUTSIDE_NETS: &[&str] = &[
    "203.0.113.10/32",
    "203.0.113.0/24",
    "198.51.100.20/32",
    "198.51.100.0/24",
    "198.51.100.0/25",
    "198.51.100.128/25",
];
const TCP_PORTS: &[&str] = &["80", "443", "8443", "8080", "8081", "9090", "5432", "9100"];
const TCP_RANGES: &[&str] = &["\"8000:8100\"", "\"400:9000\"", "\"9000:9999\"", "\"1:1024\""];
const UDP_PORTS: &[&str] = &["53", "123", "5353"];
const UDP_RANGES: &[&str] = &["\"50:130\"", "\"5000:6000\""];
/// `missing` is no pod's port.
const NAMED_PORTS: &[&str] = &["http", "sql", "dns", "missing"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn field(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
}

/// A generated policy set: the YAML and the tiers it made.
struct Generator<'a> {
    rng: Rng,
    /// Pod addresses, in the order of [`PODS`].
    pod_addresses: &'a [IpAddr],
    tiers: Vec<&'static str>,
    text: String,
}

/// Writes the policy set of a seed as one multi-document YAML text.
fn generate(seed: u64, pod_addresses: &[IpAddr]) -> String {
    let mut generator = Generator {
        rng: Rng::new(seed),
        pod_addresses,
        tiers: Vec::new(),
        text: format!("# generated policy set, seed {seed}\n"),
    };
    generator.network_sets();
    generator.tiers();
    let count = 3 + generator.rng.below(6);
    for index in 1..=count {
        match generator.rng.weighted(&[(3, 0), (4, 1), (3, 2)]) {
            0 => generator.calico_policy(index, None),
            1 => {
                let namespace = generator.rng.pick(&NAMESPACES).name;
                generator.calico_policy(index, Some(namespace));
            }
            _ => generator.kubernetes_policy(index),
        }
    }
    generator.text
}

impl Generator<'_> {
    fn document(&mut self, api_version: &str, kind: &str) {
        let _ = writeln!(self.text, "---\napiVersion: {api_version}\nkind: {kind}");
    }

    fn line(&mut self, indent: usize, text: &str) {
        let _ = writeln!(self.text, "{:indent$}{text}", "");
    }

    fn pod_net(&mut self) -> String {
        format!("{}/32", self.rng.pick(self.pod_addresses))
    }

    /// Any network a rule may name: a pod, a pool, the outside, everything.
    fn net(&mut self, catch_all: bool) -> String {
        match self.rng.weighted(&[(3, 0), (2, 1), (4, 2), (1, 3), (1, 4)]) {
            0 => self.pod_net(),
            1 => self.rng.pick(&[NAT_POOL, ROUTED_POOL]).to_string(),
            2 => self.rng.pick(OUTSIDE_NETS).to_string(),
            3 => "10.0.0.0/8".to_string(),
            _ if catch_all => "0.0.0.0/0".to_string(),
            _ => "203.0.113.0/24".to_string(),
        }
    }

    fn nets(&mut self, catch_all: bool) -> String {
        let count = 1 + self.rng.below(2);
        let nets: BTreeSet<String> = (0..count).map(|_| self.net(catch_all)).collect();
        format!("[{}]", nets.into_iter().collect::<Vec<_>>().join(", "))
    }

    /// A GlobalNetworkSet with the outside hosts' ranges, sometimes another one (which may hold
    /// a pod's address) and sometimes a namespaced NetworkSet.
    fn network_sets(&mut self) {
        let partner_nets = self
            .rng
            .some(&["203.0.113.0/24", "203.0.113.10/32", "198.51.100.0/25"], 2);
        self.document("projectcalico.org/v3", "GlobalNetworkSet");
        self.line(
            0,
            "metadata:\n  name: gen-partners\n  labels: {role: partner, zone: outside}",
        );
        self.line(0, &format!("spec:\n  nets: [{}]", partner_nets.join(", ")));
        if self.rng.percent(60) {
            let mut nets = vec!["198.51.100.0/24".to_string()];
            if self.rng.percent(40) {
                nets.push(self.pod_net());
            }
            self.document("projectcalico.org/v3", "GlobalNetworkSet");
            self.line(
                0,
                "metadata:\n  name: gen-others\n  labels: {role: other, zone: outside}",
            );
            self.line(0, &format!("spec:\n  nets: [{}]", nets.join(", ")));
        }
        if self.rng.percent(40) {
            let namespace = self.rng.pick(&NAMESPACES).name;
            let net = if self.rng.percent(50) {
                self.pod_net()
            } else {
                self.rng.pick(OUTSIDE_NETS).to_string()
            };
            self.document("projectcalico.org/v3", "NetworkSet");
            self.line(
                0,
                &format!(
                    "metadata:\n  name: gen-local\n  namespace: {namespace}\n  labels: {{role: partner}}"
                ),
            );
            self.line(0, &format!("spec:\n  nets: [{net}]"));
        }
    }

    fn tiers(&mut self) {
        for (name, order) in [("gen-first", 100), ("gen-second", 200)] {
            if !self.rng.percent(45) {
                continue;
            }
            self.tiers.push(name);
            self.document("projectcalico.org/v3", "Tier");
            self.line(0, &format!("metadata:\n  name: {name}\nspec:\n  order: {order}"));
            if self.rng.percent(50) {
                self.line(2, "defaultAction: Pass");
            }
        }
    }

    fn quoted(selector: &str) -> String {
        format!("'{}'", selector.replace('\'', "''"))
    }

    fn calico_policy(&mut self, index: usize, namespace: Option<&'static str>) {
        let tier = if !self.tiers.is_empty() && self.rng.percent(50) {
            Some(self.rng.pick(&self.tiers))
        } else {
            None
        };
        // Calico's convention: a policy in a tier is named `<tier>.<name>`.
        let name = match tier {
            Some(tier) => format!("{tier}.p{index}"),
            None => format!("p{index}"),
        };
        match namespace {
            Some(namespace) => {
                self.document("projectcalico.org/v3", "NetworkPolicy");
                self.line(0, &format!("metadata:\n  name: {name}\n  namespace: {namespace}"));
            }
            None => {
                self.document("projectcalico.org/v3", "GlobalNetworkPolicy");
                self.line(0, &format!("metadata:\n  name: {name}"));
            }
        }
        self.line(0, "spec:");
        if let Some(tier) = tier {
            self.line(2, &format!("tier: {tier}"));
        }
        if let Some(order) = self.rng.pick(&[None, Some(10), Some(100), Some(100), Some(1000)]) {
            self.line(2, &format!("order: {order}"));
        }
        let selector = self.rng.pick(POD_SELECTORS);
        self.line(2, &format!("selector: {}", Self::quoted(selector)));
        if namespace.is_none() && self.rng.percent(20) {
            let selector = self.rng.pick(&NAMESPACE_SELECTORS[1..]);
            self.line(2, &format!("namespaceSelector: {}", Self::quoted(selector)));
        }
        let types: &[Direction] = self.rng.pick(&[
            &[Direction::Egress][..],
            &[Direction::Ingress][..],
            &[Direction::Ingress, Direction::Egress][..],
            &[][..],
        ]);
        if !types.is_empty() {
            let names: Vec<&str> = types.iter().map(|direction| direction.type_name()).collect();
            self.line(2, &format!("types: [{}]", names.join(", ")));
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            let count = self.rng.weighted(&[(2, 0), (4, 1), (3, 2), (1, 3)]);
            // Rules for a direction the policy does not have are ignored (but valid): some.
            let ignored = !types.is_empty() && !types.contains(&direction);
            if count == 0 || (ignored && self.rng.percent(70)) {
                continue;
            }
            self.line(2, &format!("{}:", direction.field()));
            for _ in 0..count {
                self.calico_rule(direction);
            }
        }
    }

    fn calico_rule(&mut self, direction: Direction) {
        let action = self
            .rng
            .weighted(&[(9, "Allow"), (5, "Deny"), (3, "Pass"), (3, "Log")]);
        self.line(4, &format!("- action: {action}"));
        let protocol = self
            .rng
            .weighted(&[(7, None), (8, Some("TCP")), (5, Some("UDP"))]);
        if let Some(protocol) = protocol {
            self.line(6, &format!("protocol: {protocol}"));
        }
        if self.rng.percent(12) {
            let not_protocol = self.rng.pick(&["TCP", "UDP"]);
            self.line(6, &format!("notProtocol: {not_protocol}"));
        }
        let mut remote = self.remote_peer();
        let mut local = self.local_peer();
        // Ports only on the destination: a probe's source port is whatever the kernel picks.
        let ports = if self.rng.percent(40) {
            Some(format!("ports: [{}]", self.ports(protocol).join(", ")))
        } else {
            None
        };
        let not_ports = if self.rng.percent(15) {
            Some(format!("notPorts: [{}]", self.ports(protocol).join(", ")))
        } else {
            None
        };
        let destination = match direction {
            Direction::Egress => &mut remote,
            Direction::Ingress => &mut local,
        };
        destination.extend(ports);
        destination.extend(not_ports);
        let (source, destination) = match direction {
            Direction::Egress => (local, remote),
            Direction::Ingress => (remote, local),
        };
        for (side, fields) in [("source", source), ("destination", destination)] {
            if fields.is_empty() {
                continue;
            }
            self.line(6, &format!("{side}:"));
            for field in fields {
                self.line(8, &field);
            }
        }
    }

    /// The other end of a rule: the destination of an egress rule, the source of an ingress one.
    fn remote_peer(&mut self) -> Vec<String> {
        let mut fields = Vec::new();
        let selector = |generator: &mut Self, list: &[&str]| Self::quoted(generator.rng.pick(list));
        match self.rng.weighted(&[
            (15, 0),
            (22, 1),
            (8, 2),
            (12, 3),
            (8, 4),
            (14, 5),
            (7, 6),
            (6, 7),
            (4, 8),
            (4, 9),
        ]) {
            0 => {}
            1 => {
                fields.push(format!("selector: {}", selector(self, POD_SELECTORS)));
                if self.rng.percent(50) {
                    fields.push(format!(
                        "namespaceSelector: {}",
                        selector(self, NAMESPACE_SELECTORS)
                    ));
                }
            }
            2 => {
                let namespaces = [NAMESPACE_SELECTORS, &["global()"][..]].concat();
                fields.push(format!("namespaceSelector: {}", selector(self, &namespaces)));
            }
            3 => {
                fields.push("namespaceSelector: global()".to_string());
                fields.push(format!("selector: {}", selector(self, SET_SELECTORS)));
            }
            4 => {
                fields.push(format!("notSelector: {}", selector(self, POD_SELECTORS)));
                if self.rng.percent(50) {
                    fields.push(format!("selector: {}", selector(self, POD_SELECTORS)));
                }
            }
            5 => fields.push(format!("nets: {}", self.nets(true))),
            6 => {
                fields.push(format!("nets: {}", self.nets(true)));
                fields.push(format!("notNets: {}", self.nets(false)));
            }
            7 => fields.push(format!("notNets: {}", self.nets(false))),
            8 => {
                fields.push(format!("selector: {}", selector(self, POD_SELECTORS)));
                fields.push(format!("notNets: {}", self.nets(false)));
            }
            _ => {
                let names = self
                    .rng
                    .pick(&["[frontend]", "[backend]", "[backend, frontend]", "[default]"]);
                fields.push(format!("serviceAccounts: {{names: {names}}}"));
                if self.rng.percent(30) {
                    fields.push(format!("selector: {}", selector(self, POD_SELECTORS)));
                }
            }
        }
        fields
    }

    /// The policy's own end, rarely constrained further.
    fn local_peer(&mut self) -> Vec<String> {
        match self.rng.weighted(&[(85, 0), (8, 1), (7, 2)]) {
            0 => Vec::new(),
            1 => vec![format!(
                "selector: {}",
                Self::quoted(self.rng.pick(POD_SELECTORS))
            )],
            _ => vec![format!("nets: {}", self.nets(true))],
        }
    }

    /// Port items for a rule with this protocol: numbers and ranges need TCP or UDP.
    fn ports(&mut self, protocol: Option<&str>) -> Vec<String> {
        let (numbers, ranges) = match protocol {
            Some("TCP") => (TCP_PORTS, TCP_RANGES),
            Some("UDP") => (UDP_PORTS, UDP_RANGES),
            _ => (&[][..], &[][..]),
        };
        let count = 1 + self.rng.below(3);
        let mut items = Vec::new();
        for _ in 0..count {
            let item = match self.rng.below(3) {
                0 if !numbers.is_empty() => self.rng.pick(numbers),
                1 if !ranges.is_empty() => self.rng.pick(ranges),
                _ => self.rng.pick(NAMED_PORTS),
            };
            if !items.contains(&item.to_string()) {
                items.push(item.to_string());
            }
        }
        items
    }

    fn label_selector(&mut self, namespace: bool) -> &'static str {
        if namespace {
            self.rng.pick(&[
                "{}",
                "{matchLabels: {team: a}}",
                "{matchLabels: {env: prod}}",
                "{matchLabels: {kubernetes.io/metadata.name: beta}}",
                "{matchExpressions: [{key: team, operator: Exists}]}",
            ])
        } else {
            self.rng.pick(&[
                "{}",
                "{matchLabels: {app: web}}",
                "{matchLabels: {app: db}}",
                "{matchLabels: {tier: front}}",
                "{matchExpressions: [{key: tier, operator: In, values: [front, back]}]}",
                "{matchExpressions: [{key: tier, operator: DoesNotExist}]}",
                "{matchExpressions: [{key: app, operator: NotIn, values: [db, worker]}]}",
            ])
        }
    }

    fn kubernetes_policy(&mut self, index: usize) {
        let namespace = self.rng.pick(&NAMESPACES).name;
        self.document("networking.k8s.io/v1", "NetworkPolicy");
        self.line(
            0,
            &format!("metadata:\n  name: k{index}\n  namespace: {namespace}\nspec:"),
        );
        let pod_selector = self.label_selector(false);
        self.line(2, &format!("podSelector: {pod_selector}"));
        let types = self.rng.pick(&[
            None,
            Some("[Ingress]"),
            Some("[Egress]"),
            Some("[Ingress, Egress]"),
        ]);
        if let Some(types) = types {
            self.line(2, &format!("policyTypes: {types}"));
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            let count = self.rng.weighted(&[(3, 0), (4, 1), (2, 2)]);
            if count == 0 {
                continue;
            }
            self.line(2, &format!("{}:", direction.field()));
            for _ in 0..count {
                self.kubernetes_rule(direction);
            }
        }
    }

    fn kubernetes_rule(&mut self, direction: Direction) {
        let peers_field = match direction {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        let mut fields: Vec<(String, Vec<String>)> = Vec::new();
        let peer_count = self.rng.weighted(&[(2, 0), (5, 1), (2, 2)]);
        if peer_count > 0 {
            let mut peers = Vec::new();
            for _ in 0..peer_count {
                peers.push(match self.rng.below(4) {
                    0 => format!("podSelector: {}", self.label_selector(false)),
                    1 => format!("namespaceSelector: {}", self.label_selector(true)),
                    2 => format!(
                        "{{podSelector: {}, namespaceSelector: {}}}",
                        self.label_selector(false),
                        self.label_selector(true)
                    ),
                    _ => self.ip_block(),
                });
            }
            fields.push((peers_field.to_string(), peers));
        }
        if self.rng.percent(55) {
            let mut ports = Vec::new();
            for _ in 0..1 + self.rng.below(2) {
                let protocol = self
                    .rng
                    .weighted(&[(2, None), (3, Some("TCP")), (2, Some("UDP"))]);
                let mut parts = Vec::new();
                if let Some(protocol) = protocol {
                    parts.push(format!("protocol: {protocol}"));
                }
                let udp = protocol == Some("UDP");
                match self.rng.below(4) {
                    0 => {}
                    1 => parts.push(format!("port: {}", self.rng.pick(NAMED_PORTS))),
                    2 => {
                        let (low, high) = if udp { (50, 130) } else { (8000, 8100) };
                        parts.push(format!("port: {low}, endPort: {high}"));
                    }
                    _ => {
                        let number = self.rng.pick(if udp { UDP_PORTS } else { TCP_PORTS });
                        parts.push(format!("port: {number}"));
                    }
                }
                ports.push(format!("{{{}}}", parts.join(", ")));
            }
            fields.push(("ports".to_string(), ports));
        }
        if fields.is_empty() {
            self.line(4, "- {}");
            return;
        }
        for (position, (field, items)) in fields.into_iter().enumerate() {
            let dash = if position == 0 { "- " } else { "  " };
            self.line(4, &format!("{dash}{field}:"));
            for item in items {
                let item = if item.starts_with('{') {
                    item
                } else {
                    format!("{{{item}}}")
                };
                self.line(8, &format!("- {item}"));
            }
        }
    }

    fn ip_block(&mut self) -> String {
        let cidr = self.rng.pick(&[
            "0.0.0.0/0",
            "10.0.0.0/8",
            "203.0.113.0/24",
            "198.51.100.0/24",
            NAT_POOL,
        ]);
        let cidr_net: ipnet::Ipv4Net = cidr.parse().expect("cidr");
        let mut candidates: Vec<String> = OUTSIDE_NETS.iter().map(|net| net.to_string()).collect();
        candidates.extend(self.pod_addresses.iter().map(|address| format!("{address}/32")));
        candidates.push(ROUTED_POOL.to_string());
        let inside: Vec<String> = candidates
            .into_iter()
            .filter(|candidate| {
                let net: ipnet::Ipv4Net = candidate.parse().expect("net");
                cidr_net.contains(&net) && net.prefix_len() > cidr_net.prefix_len()
            })
            .collect();
        if !inside.is_empty() && self.rng.percent(50) {
            let except = self
                .rng
                .some(&inside.iter().map(String::as_str).collect::<Vec<_>>(), 2);
            format!("ipBlock: {{cidr: {cidr}, except: [{}]}}", except.join(", "))
        } else {
            format!("ipBlock: {{cidr: {cidr}}}")
        }
    }
}

/// The datastore keys of a policy set's resources (what replacing it must delete).
fn resource_keys(text: &str) -> Result<BTreeSet<String>, String> {
    let mut loader = sluice_api::Loader::default();
    loader.add_str("generated.yaml", text);
    let resources = loader
        .finish()
        .map_err(|errors| format!("the generated set has errors:\n{errors}\n{text}"))?
        .into_resources();
    Ok(resources.iter().map(|resource| resource.key()).collect())
}

// ---- The tests. ----

/// Many seeds give valid sets that compile (no lab needed): the generator itself is right.
fn generated_sets_are_valid() -> Result<(), String> {
    let addresses: Vec<IpAddr> = (1..=PODS.len())
        .map(|index| IpAddr::V4(Ipv4Addr::new(10, 72, 0, index as u8)))
        .collect();
    let mut text_of_all = String::new();
    for seed in 0..300 {
        let text = generate(seed, &addresses);
        let keys = resource_keys(&text).map_err(|error| format!("seed {seed}: {error}"))?;
        if keys.is_empty() {
            return Err(format!("seed {seed} generated nothing"));
        }
        text_of_all.push_str(&text);
    }
    for wanted in [
        "kind: GlobalNetworkPolicy",
        "kind: NetworkPolicy",
        "kind: Tier",
        "kind: GlobalNetworkSet",
        "kind: NetworkSet",
        "action: Allow",
        "action: Deny",
        "action: Pass",
        "action: Log",
        "defaultAction: Pass",
        "notSelector:",
        "notNets:",
        "notPorts:",
        "notProtocol:",
        "namespaceSelector: global()",
        "ipBlock:",
        "endPort:",
        "\"8000:8100\"",
        "port: http",
        "ports: [http",
        "serviceAccounts:",
    ] {
        if !text_of_all.contains(wanted) {
            return Err(format!("300 seeds never generated `{wanted}`"));
        }
    }
    Ok(())
}

fn seeds() -> Result<Vec<u64>, String> {
    match std::env::var(SEEDS_VARIABLE) {
        Ok(text) if !text.trim().is_empty() => text
            .split(',')
            .map(|seed| {
                seed.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{SEEDS_VARIABLE}: `{seed}` is not a seed"))
            })
            .collect(),
        _ => Ok(DEFAULT_SEEDS.collect()),
    }
}

fn probes_agree_over_generated_sets() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: the lab needs root");
        return Ok(());
    }
    let seeds = seeds()?;
    let started = Instant::now();
    let lab = Lab::up("g", &lab_file(), &lab_manifests())?;
    println!("lab up in {:.1?}", started.elapsed());
    let outcome = probe_seeds(&lab, &seeds);
    let cleaned = lab.finish();
    outcome?;
    cleaned
}

/// Where the evidence of a failing seed is kept (the lab's own directory is removed).
fn evidence_directory() -> PathBuf {
    std::env::temp_dir().join("sluice-generated-policies")
}

fn probe_seeds(lab: &Lab, seeds: &[u64]) -> Result<(), String> {
    let state = lab.state()?;
    let pod_addresses: Vec<IpAddr> = PODS
        .iter()
        .map(|pod| lab.pod_address(&format!("{}/{}", pod.namespace, pod.name)))
        .collect::<Result<_, _>>()?;
    // A UDP flow answered under one seed stays in conntrack for up to two minutes, and the
    // lab's probes bind random source ports: a later probe that happened to reuse one would
    // ride the old entry past a policy that now denies it (established flows survive policy
    // changes by design). Short UDP timeouts in the nodes make every seed's flows new.
    for node in &state.nodes {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", &node.netns, "sysctl", "-q", "-w"])
            .args([
                "net.netfilter.nf_conntrack_udp_timeout=1",
                "net.netfilter.nf_conntrack_udp_timeout_stream=1",
            ])
            .output()
            .map_err(|error| error.to_string())?;
        if !output.status.success() {
            return Err(format!(
                "setting conntrack timeouts in {}: {}",
                node.netns,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(evidence_directory());
    let mut previous: BTreeSet<String> = BTreeSet::new();
    let mut failures = Vec::new();
    let (mut allowed_total, mut denied_total) = (0, 0);
    for &seed in seeds {
        let seed_started = Instant::now();
        let text = generate(seed, &pod_addresses);
        let keys = resource_keys(&text).map_err(|error| format!("seed {seed}: {error}"))?;
        // One commit: the new set, and what of the previous one it does not replace.
        let deletions: Vec<String> = previous.difference(&keys).cloned().collect();
        let revision = lab
            .apply(&text, &deletions)
            .map_err(|error| format!("seed {seed}: {error}"))?;
        previous = keys;
        let programmed = support::wait_until(Duration::from_secs(20), || {
            state.nodes.iter().all(|node| {
                lab.node_status(&node.name).is_some_and(|status| {
                    status["inSync"].as_bool() == Some(true)
                        && status["programmedRevision"].as_i64().unwrap_or(0) >= revision
                })
            })
        });
        if !programmed {
            let statuses: Vec<String> = state
                .nodes
                .iter()
                .map(|node| format!("{}: {:?}", node.name, lab.node_status(&node.name)))
                .collect();
            failures.push(format!(
                "seed {seed}: the agents did not program revision {revision} within 20 s: {}\n{text}",
                statuses.join("; ")
            ));
            continue;
        }
        let programmed_after = seed_started.elapsed();
        let report = sluice_lab::probe(
            &lab.environment,
            &lab.name,
            &ProbeOptions {
                against_explain: true,
                services: Vec::new(),
                ..Default::default()
            },
        )
        .map_err(|error| format!("seed {seed}: {error}"))?;
        let allowed = report
            .rows
            .iter()
            .filter(|row| row.explain_allows == Some(true))
            .count();
        allowed_total += allowed;
        denied_total += report.rows.len() - allowed;
        let disagreements = support::disagreements(&report);
        println!(
            "seed {seed}: {} resources, programmed in {programmed_after:.1?}, {} probes ({allowed} allowed by explain), {} disagreement(s), {:.1?}",
            previous.len(),
            report.rows.len(),
            disagreements.len(),
            seed_started.elapsed()
        );
        if !disagreements.is_empty() {
            failures.push(describe_failure(lab, seed, &text, &report, &disagreements));
        }
    }
    if failures.is_empty() && seeds.len() > 1 && (allowed_total == 0 || denied_total == 0) {
        return Err(format!(
            "the generated sets are too uniform: {allowed_total} flows allowed, {denied_total} denied over seeds {seeds:?}"
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} seeds disagree with explain (rerun with {SEEDS_VARIABLE}=<seed>):\n\n{}",
            failures.len(),
            seeds.len(),
            failures.join("\n\n")
        ))
    }
}

/// The seed, its YAML, each disagreeing flow with its explain trace and the nft rules of the
/// rule that decided, and where the nodes' nft tables were saved (with the YAML).
fn describe_failure(
    lab: &Lab,
    seed: u64,
    text: &str,
    report: &ProbeReport,
    disagreements: &[String],
) -> String {
    let directory = evidence_directory().join(format!("seed-{seed}"));
    let _ = std::fs::create_dir_all(&directory);
    let _ = std::fs::write(directory.join("policies.yaml"), text);
    let state = lab.state().unwrap_or_default();
    // Each node's table as the kernel has it now, before the next seed replaces it.
    let mut tables: Vec<(String, String)> = Vec::new();
    for node in &state.nodes {
        let listed = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &node.netns,
                "nft",
                "list",
                "table",
                "inet",
                "sluice",
            ])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default();
        let _ = std::fs::write(directory.join(format!("{}.nft", node.name)), &listed);
        tables.push((node.name.clone(), listed));
    }
    let node_of = |endpoint: &str| {
        state
            .pods
            .iter()
            .find(|pod| pod.shown() == endpoint)
            .map(|pod| pod.node.clone())
            .unwrap_or_default()
    };
    let mut message = format!(
        "seed {seed}: {} disagreement(s):\n  {}\n",
        disagreements.len(),
        disagreements.join("\n  ")
    );
    for row in report.rows.iter().filter(|row| row.disagreement.is_some()) {
        let explanation = sluice_policy::explain(&report.dataplane, &row.flow());
        let _ = writeln!(
            message,
            "explain {} ({}) -> {} ({}) {:?}/{}: {}",
            row.from, row.from_address, row.to, row.to_address, row.protocol, row.port, explanation.verdict
        );
        for direction in [&explanation.egress, &explanation.ingress].into_iter().flatten() {
            let node = node_of(&direction.endpoint);
            let _ = writeln!(
                message,
                "  {} of {} (on {node}): {}",
                direction.direction, direction.endpoint, direction.reason
            );
            for step in &direction.steps {
                let _ = writeln!(message, "    {step}");
            }
            let Some(rule) = &direction.rule else { continue };
            // The renderer's comment on every nft rule it made from this Calico rule.
            let policy = rule.to_string();
            let policy = policy.split(',').next().unwrap_or_default();
            let comment = format!("comment \"{policy} {} rule {}\"", rule.direction, rule.rule_index);
            let table = tables
                .iter()
                .find(|(name, _)| *name == node)
                .map(|(_, table)| table.as_str())
                .unwrap_or_default();
            for line in table.lines().filter(|line| line.contains(&comment)) {
                let _ = writeln!(message, "    nft: {}", line.trim());
            }
        }
    }
    let _ = writeln!(
        message,
        "saved under {}: policies.yaml and each node's `nft list table inet sluice`\ngenerated set:\n{text}",
        directory.display()
    );
    message
}
