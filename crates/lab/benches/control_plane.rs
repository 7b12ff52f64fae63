//! Control plane: the time from a policy change written to the datastore (one commit, as
//! `sluice apply` writes it) to the first packet that obeys it, in a real lab (root; not run in
//! CI):
//!
//! ```sh
//! cargo bench -p sluice-lab --bench control_plane            # as root
//! SLUICE_BENCH_PODS=200 SLUICE_BENCH_POLICIES=1000 SLUICE_BENCH_FLIPS=50 cargo bench …
//! ```
//!
//! Two nodes, 200 pods wired by the real CNI plugin (half on each node), 1,000 NetworkPolicies
//! in 10 namespaces (each with ingress and egress rules on pod selectors, so every pod has
//! programs on its node; 50 of them select the probing pod), one outside host. A prober in the
//! pod's namespace sends a UDP datagram from a fresh socket (a new flow, so conntrack never
//! answers for the policy) every 2 ms and waits 10 ms for the echo. Each round commits a Deny
//! for that flow at order 1 (allowed → denied) or deletes it (denied → allowed); the latency is
//! from just before the commit to the start of the first attempt that obeyed it (confirmed by
//! the next one). Prints p50, p99 and max per direction and overall.
//!
//! Like the lab tests, this binary is also every program the lab runs (see
//! `tests/support/mod.rs`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use support::Lab;

const TARGET: &str = "203.0.113.50";
const TARGET_PORT: u16 = 5353;
const NAMESPACES: usize = 10;

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_bench("control_plane", run)
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn lab_file(pods: usize) -> String {
    let mut text = format!(
        "kind: Lab\nname: placeholder\nnodes:\n  - name: node-1\n  - name: node-2\noutside:\n  - {{name: target, address: {TARGET}, udp: [{TARGET_PORT}], tcp: [443]}}\nmanifests: [manifests/]\npods:\n"
    );
    // Pod 0 probes; the others give the policies something to select on both nodes.
    text.push_str("  - {namespace: team-0, name: probe, node: node-1, labels: {app: app-0, role: probe}}\n");
    for index in 1..pods {
        let _ = writeln!(
            text,
            "  - {{namespace: team-{}, name: pod-{index}, node: node-{}, labels: {{app: app-{}, tier: t-{}}}}}",
            index % NAMESPACES,
            index % 2 + 1,
            index % 20,
            index % 5
        );
    }
    text
}

fn manifests(policies: usize) -> Vec<(&'static str, String)> {
    let mut base = String::new();
    for namespace in 0..NAMESPACES {
        let _ = write!(
            base,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-{namespace}\n  labels: {{team: team-{namespace}}}\n---\n"
        );
    }
    base.push_str(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: bench-pool\nspec:\n  cidr: 10.70.0.0/16\n  natOutgoing: true\n---\n",
    );
    // What lets the probe reach the target: the policies below select it too, and allow other
    // things only.
    let _ = write!(
        base,
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: probe-egress
  namespace: team-0
spec:
  order: 500
  selector: role == "probe"
  types: [Egress]
  egress:
    - action: Allow
      protocol: UDP
      destination:
        nets: [{TARGET}/32]
        ports: [{TARGET_PORT}]
"#
    );
    let mut generated = String::new();
    for index in 0..policies {
        let _ = write!(
            generated,
            r#"---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: policy-{index}
  namespace: team-{namespace}
spec:
  order: {order}
  selector: app == "app-{app}"
  types: [Ingress, Egress]
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: tier == "t-{tier}"
      destination:
        ports: [{ingress_port}]
    - action: Deny
      protocol: TCP
      source:
        nets: [192.0.2.{net}/32, 198.18.{net}.0/24]
  egress:
    - action: Allow
      protocol: TCP
      destination:
        selector: app == "app-{next}"
        ports: [{egress_port}, {second_port}]
    - action: Allow
      protocol: UDP
      destination:
        nets: [10.{net}.0.0/16]
        ports: [53]
"#,
            namespace = index % NAMESPACES,
            order = 100 + index % 50,
            app = index % 20,
            tier = index % 5,
            ingress_port = 8000 + index % 100,
            net = index % 250,
            next = (index + 1) % 20,
            egress_port = 9000 + index % 100,
            second_port = 9500 + index % 100,
        );
    }
    vec![
        ("00-base.yaml", base),
        (
            "01-policies.yaml",
            generated.trim_start_matches("---\n").to_string(),
        ),
    ]
}

const FLIP: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: flip
  namespace: team-0
spec:
  order: 1
  selector: role == "probe"
  types: [Egress]
  egress:
    - action: Deny
      protocol: UDP
      destination:
        nets: [203.0.113.50/32]
        ports: [5353]
"#;

fn run() -> Result<(), String> {
    let pods = setting("SLUICE_BENCH_PODS", 200).max(2);
    let policies = setting("SLUICE_BENCH_POLICIES", 1000);
    let flips = setting("SLUICE_BENCH_FLIPS", 50);
    println!("lab: 2 nodes, {pods} pods, {policies} policies; {flips} flips");
    let started = Instant::now();
    let lab = Lab::up("b", &lab_file(pods), &manifests(policies))?;
    let up = started.elapsed();
    println!("lab up (namespaces, {pods} CNI ADDs, agents in sync) in {up:.1?}");
    let outcome = measure(&lab, flips);
    let cleaned = lab.finish();
    outcome?;
    cleaned
}

fn measure(lab: &Lab, flips: usize) -> Result<(), String> {
    for node in ["node-1", "node-2"] {
        let status = lab.node_status(node).unwrap_or_default();
        println!(
            "{node}: {} pods, {} rules, {} set elements programmed",
            status["localEndpoints"], status["rules"], status["setElements"]
        );
    }
    let transitions = lab
        .spawn_in(
            &lab.netns("team-0/probe")?,
            &[
                "support",
                "flip-probe",
                "--to",
                TARGET,
                "--port",
                &TARGET_PORT.to_string(),
                "--interval-us",
                "2000",
                "--timeout-ms",
                "10",
                "--confirm",
                "2",
            ],
        )?
        .lines();
    let first = transitions
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "the prober said nothing")?;
    if !first.starts_with("allowed ") {
        return Err(format!("the probed flow should start allowed: {first}"));
    }
    let key = sluice_api::resource::key(sluice_api::Kind::NetworkPolicy, Some("team-0"), "flip");
    let mut to_denied = Vec::new();
    let mut to_allowed = Vec::new();
    // (latency, how long the apply call took: open, list, validate, commit), to tell slow
    // applies from slow agents in the slowest rounds.
    let mut rounds: Vec<(Duration, Duration)> = Vec::new();
    let mut allowed = true;
    for round in 0..flips {
        // Let the agents idle between rounds, as between two applies.
        std::thread::sleep(Duration::from_millis(150));
        let _ = transitions.try_iter().count();
        let committed = support::unix_micros();
        let commit_started = Instant::now();
        if allowed {
            lab.apply(FLIP, &[])?;
        } else {
            lab.apply("", std::slice::from_ref(&key))?;
        }
        let commit_time = commit_started.elapsed();
        let wanted = if allowed { "denied" } else { "allowed" };
        let deadline = Instant::now() + Duration::from_secs(5);
        let obeyed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = transitions
                .recv_timeout(left)
                .map_err(|_| format!("round {round}: the flow did not become {wanted} within 5 s"))?;
            let Some((state, at)) = line.split_once(' ') else {
                continue;
            };
            let at: u128 = at.parse().map_err(|_| format!("prober printed {line:?}"))?;
            if state == wanted && at >= committed {
                break at;
            }
        };
        let latency = Duration::from_micros((obeyed - committed) as u64);
        rounds.push((latency, commit_time));
        if allowed {
            to_denied.push(latency);
        } else {
            to_allowed.push(latency);
        }
        allowed = !allowed;
    }
    let mut all: Vec<Duration> = to_denied.iter().chain(&to_allowed).copied().collect();
    println!(
        "\napply → first packet that obeys it (prober resolution: ≤ 2 ms becoming denied, ≤ 10 ms becoming allowed):"
    );
    println!(
        "{:<22} {:>5} {:>9} {:>9} {:>9}",
        "direction", "n", "p50", "p99", "max"
    );
    for (label, samples) in [
        ("allowed → denied", &mut to_denied),
        ("denied → allowed", &mut to_allowed),
        ("both", &mut all),
    ] {
        samples.sort();
        println!(
            "{label:<22} {:>5} {:>9.1?} {:>9.1?} {:>9.1?}",
            samples.len(),
            percentile(samples, 50),
            percentile(samples, 99),
            samples.last().copied().unwrap_or_default()
        );
    }
    rounds.sort();
    let slowest: Vec<String> = rounds
        .iter()
        .rev()
        .take(3)
        .map(|(latency, commit)| format!("{latency:.1?} (apply {commit:.1?})"))
        .collect();
    let mut commits: Vec<Duration> = rounds.iter().map(|(_, commit)| *commit).collect();
    commits.sort();
    println!(
        "slowest rounds: {}; apply call p50 {:.1?}, max {:.1?}",
        slowest.join(", "),
        percentile(&commits, 50),
        commits.last().copied().unwrap_or_default()
    );
    // Where the agents' time went during the rounds, from their "programmed" log lines.
    for node in ["node-1", "node-2"] {
        let log = lab.agent_log(node);
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(" programmed ") && line.contains("kernel_ms="))
            .collect();
        let recent = &lines[lines.len().saturating_sub(flips)..];
        let parts: Vec<String> = ["since_change_ms", "compile_ms", "render_ms", "kernel_ms"]
            .iter()
            .map(|field| {
                let mut values: Vec<u64> = recent
                    .iter()
                    .filter_map(|line| {
                        line.split_whitespace()
                            .find_map(|token| token.strip_prefix(&format!("{field}=")))
                            .and_then(|value| value.parse().ok())
                    })
                    .collect();
                values.sort_unstable();
                let middle = values.get(values.len() / 2).copied().unwrap_or(0);
                let most = values.last().copied().unwrap_or(0);
                format!("{field} p50 {middle} max {most}")
            })
            .collect();
        println!("{node} agent, last {} syncs: {}", recent.len(), parts.join(", "));
    }
    Ok(())
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}
