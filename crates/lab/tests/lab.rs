//! End-to-end: a real lab of network namespaces (root only; skipped otherwise).
//!
//! This binary has no libtest harness because it is also every program the lab runs (see
//! `support::dispatch`): the CNI plugin through a `sluice-cni` symlink, the node agent, and the
//! lab's helpers. So the test needs no binary from another package.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use sluice_lab::{ConnectResult, Environment, ProbeOptions, ProbeReport};
use support::{Test, is_root};

const TESTS: [(&str, Test); 3] = [
    ("a_lab_agrees_with_explain_and_cleans_up", end_to_end),
    ("the_repository_examples_agree_with_explain", the_examples),
    (
        "an_outside_host_without_services_only_sends",
        an_outside_host_without_services,
    ),
];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

/// A unique lab for this run: the name is the namespace prefix `sl-<name>-`.
fn test_environment() -> Result<(Environment, String, PathBuf), String> {
    let process = std::process::id();
    let root = std::env::temp_dir().join(format!("sluice-lab-test-{process}"));
    std::fs::create_dir_all(&root).map_err(|error| error.to_string())?;
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let cni = root.join("sluice-cni");
    let _ = std::fs::remove_file(&cni);
    std::os::unix::fs::symlink(&executable, &cni).map_err(|error| error.to_string())?;
    let environment = Environment {
        state_root: root.join("state"),
        sluice_binary: executable,
        cni_binary: cni,
    };
    Ok((environment, format!("t{}", process % 1_000_000), root))
}

fn end_to_end() -> Result<(), String> {
    if !is_root() {
        println!("skipped: the lab needs root");
        return Ok(());
    }
    let (environment, name, root) = test_environment()?;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/demo.yaml");
    let started = Instant::now();
    let outcome = sluice_lab::up(&environment, &file, Some(&name)).and_then(|()| {
        let up = started.elapsed();
        let report = sluice_lab::probe(
            &environment,
            &name,
            &ProbeOptions {
                against_explain: true,
                services: Vec::new(),
                ..Default::default()
            },
        )?;
        println!(
            "lab up in {up:.1?}, {} probes in {:.1?}",
            report.rows.len(),
            started.elapsed() - up
        );
        check_report(&report)?;
        check_routes(&environment, &name)
    });
    let removed = sluice_lab::down(&environment, &name);
    let prefix = format!("sl-{name}-");
    let left: Vec<String> = sluice_lab::network_namespaces()
        .into_iter()
        .filter(|netns| netns.starts_with(&prefix))
        .collect();
    let _ = std::fs::remove_dir_all(&root);
    outcome?;
    removed?;
    if !left.is_empty() {
        return Err(format!("`lab down` left namespaces {left:?}"));
    }
    if environment.state_root.join(&name).exists() {
        return Err("`lab down` left the state directory".into());
    }
    Ok(())
}

/// The repository's `examples/` in a lab: every probe agrees with explain, and the policies
/// visibly did something (some flows are denied, some allowed).
fn the_examples() -> Result<(), String> {
    if !is_root() {
        println!("skipped: the lab needs root");
        return Ok(());
    }
    let (environment, name, root) = test_environment()?;
    let name = format!("{name}x");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples-lab.yaml");
    let outcome = sluice_lab::up(&environment, &file, Some(&name)).and_then(|()| {
        let report = sluice_lab::probe(
            &environment,
            &name,
            &ProbeOptions {
                against_explain: true,
                services: Vec::new(),
                ..Default::default()
            },
        )?;
        let disagreements = support::disagreements(&report);
        let allowed = report.rows.iter().filter(|row| row.allowed()).count();
        println!("{} probes, {allowed} allowed", report.rows.len());
        if !disagreements.is_empty() {
            return Err(format!(
                "probes disagree with explain:\n  {}",
                disagreements.join("\n  ")
            ));
        }
        // docs/lab.md quotes these counts.
        if (report.rows.len(), allowed) != (60, 31) {
            return Err(format!(
                "expected 60 probes with 31 allowed (as docs/lab.md says), {allowed} of {} allowed",
                report.rows.len()
            ));
        }
        Ok(())
    });
    let removed = sluice_lab::down(&environment, &name);
    let _ = std::fs::remove_dir_all(&root);
    outcome.and(removed)
}

/// Each agent routes the other node's two blocks (one per pool it has pods of) through that
/// node's InternalIP and blackholes its own two, all marked as Sluice's (proto 83); the
/// pod-to-pod probes across nodes in `check_report` went over these routes.
fn check_routes(environment: &Environment, name: &str) -> Result<(), String> {
    let paths = sluice_lab::state::LabPaths::new(&environment.state_root, name);
    // Node 1 holds web, reporter, invoicer and gateway-1 (four blocks of four pools); node 2
    // payments, notebook and gateway-2 (three).
    for (index, other_node, expected) in [(0, "100.64.0.11", (3, 4)), (1, "100.64.0.10", (4, 3))] {
        let netns = paths.node_netns(index);
        let output = std::process::Command::new("ip")
            .args(["-n", &netns, "route", "show", "proto", "83"])
            .output()
            .map_err(|error| error.to_string())?;
        let routes = String::from_utf8_lossy(&output.stdout).into_owned();
        let through_other = routes
            .lines()
            .filter(|line| line.contains(&format!("via {other_node} dev eth0")))
            .count();
        let blackholes = routes
            .lines()
            .filter(|line| line.starts_with("blackhole "))
            .count();
        if (through_other, blackholes) != expected || routes.lines().count() != expected.0 + expected.1 {
            return Err(format!(
                "node {index} should have {} routes via {other_node} and {} blackholes:\n{routes}",
                expected.0, expected.1
            ));
        }
    }
    Ok(())
}

fn check_report(report: &ProbeReport) -> Result<(), String> {
    let disagreements = support::disagreements(report);
    if !disagreements.is_empty() {
        return Err(format!(
            "probes disagree with explain:\n  {}",
            disagreements.join("\n  ")
        ));
    }
    let find = |from: &str, to: &str, port: u16| {
        report
            .rows
            .iter()
            .find(|row| row.from == from && row.to == to && row.port == port)
            .ok_or_else(|| format!("no probe {from} -> {to} port {port}"))
    };
    // NAT: prod-pool masquerades, so the partner sees web's node, not web.
    let web = find("prod/web", "partner", 443)?;
    let node_address: IpAddr = "100.64.0.10".parse().expect("address");
    if web.outcome.seen != Some(node_address) || web.from_address == node_address {
        return Err(format!(
            "prod/web should reach the partner as its node 100.64.0.10: {web:?}"
        ));
    }
    // Routed: research-pool and the annotation's partner-pool do not NAT.
    for (from, pool) in [
        ("research/notebook", "10.40.0.0/16"),
        ("prod/reporter", "10.50.0.0/24"),
    ] {
        let row = find(from, "partner", 443)?;
        let pool: ipnet::IpNet = pool.parse().expect("pool");
        if row.outcome.seen != Some(row.from_address) || !pool.contains(&row.from_address) {
            return Err(format!(
                "{from} should reach the partner as itself, from {pool}: {row:?}"
            ));
        }
    }
    // Policy did something in both directions: the security tier, a K8s ingress policy.
    for (from, to, port) in [
        ("prod/web", "threat", 443),
        ("prod/reporter", "prod/payments", 9090),
    ] {
        let row = find(from, to, port)?;
        if row.outcome.result != ConnectResult::TimedOut {
            return Err(format!("{from} -> {to} should be denied: {row:?}"));
        }
    }
    let allowed: BTreeSet<(&str, &str)> = report
        .rows
        .iter()
        .filter(|row| row.allowed())
        .map(|row| (row.from.as_str(), row.to.as_str()))
        .collect();
    if !allowed.contains(&("prod/web", "prod/payments")) || !allowed.contains(&("prod/payments", "resolver"))
    {
        return Err(format!(
            "expected web -> payments and payments -> resolver to pass: {allowed:?}"
        ));
    }
    Ok(())
}

/// A lab whose outside host `sender` offers no service: no server is started for it and no
/// probe goes to it, and it sends into the cluster as the pod's ingress policy allows (port
/// 8080 from it only) and to another outside host.
const SENDER_LAB: &str = "kind: Lab\nname: sender\nnodes: [{name: node-1}]\noutside:\n  - {name: sender, address: 198.51.100.5}\n  - {name: partner, address: 203.0.113.10, tcp: [443]}\nmanifests: [manifests.yaml]\npods:\n  - {namespace: shop, name: api, node: node-1, labels: {app: api}, ports: [{containerPort: 8080}, {containerPort: 9090}]}\n";

const SENDER_MANIFESTS: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: routed}\nspec: {cidr: 10.60.0.0/24, natOutgoing: false}\n---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: api-from-sender, namespace: shop}\nspec:\n  selector: app == 'api'\n  types: [Ingress]\n  ingress:\n    - action: Allow\n      protocol: TCP\n      source: {nets: [198.51.100.5/32]}\n      destination: {ports: [8080]}\n";

fn an_outside_host_without_services() -> Result<(), String> {
    if !is_root() {
        println!("skipped: the lab needs root");
        return Ok(());
    }
    let (environment, name, root) = test_environment()?;
    let name = format!("{name}s");
    let file = root.join("sender-lab.yaml");
    std::fs::write(&file, SENDER_LAB).map_err(|error| error.to_string())?;
    std::fs::write(root.join("manifests.yaml"), SENDER_MANIFESTS).map_err(|error| error.to_string())?;
    let outcome = sluice_lab::up(&environment, &file, Some(&name))
        .map_err(|error| format!("`lab up` with a sender-only host failed: {error}"))
        .and_then(|()| check_sender(&environment, &name));
    let removed = sluice_lab::down(&environment, &name);
    let _ = std::fs::remove_dir_all(&root);
    outcome.and(removed)
}

fn check_sender(environment: &Environment, name: &str) -> Result<(), String> {
    let paths = sluice_lab::state::LabPaths::new(&environment.state_root, name);
    let state = paths.load()?;
    let sender = &state.hosts[0];
    if sluice_lab::state::live_pid(&paths.pid_file("host-sender")).is_some() {
        return Err("a server was started for the host without services".into());
    }
    let report = sluice_lab::probe(
        environment,
        name,
        &ProbeOptions {
            against_explain: true,
            services: Vec::new(),
            ..Default::default()
        },
    )?;
    if report.rows.iter().any(|row| row.to == "sender") {
        return Err("a probe went to the host without services".into());
    }
    let disagreements = support::disagreements(&report);
    if !disagreements.is_empty() {
        return Err(format!(
            "probes disagree with explain:\n  {}",
            disagreements.join("\n  ")
        ));
    }
    let api = state.pods[0].addresses[0];
    let partner: IpAddr = "203.0.113.10".parse().expect("address");
    let sender_address = IpAddr::V4(sender.spec.address);
    let send = |to: IpAddr, port: u16| -> Result<sluice_lab::ConnectOutcome, String> {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", &sender.netns])
            .arg(&environment.sluice_binary)
            .args(["lab", "connect", "--protocol", "tcp", "--to", &to.to_string()])
            .args(["--port", &port.to_string(), "--timeout-ms", "1000"])
            .output()
            .map_err(|error| error.to_string())?;
        serde_json::from_slice(&output.stdout).map_err(|error| {
            format!(
                "`lab connect` from the sender printed {:?} ({error}): {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
    };
    let allowed = send(api, 8080)?;
    if allowed.result != ConnectResult::Connected || allowed.seen != Some(sender_address) {
        return Err(format!(
            "sender -> shop/api:8080 should pass, seen as the sender: {allowed:?}"
        ));
    }
    let denied = send(api, 9090)?;
    if denied.result != ConnectResult::TimedOut {
        return Err(format!(
            "sender -> shop/api:9090 should be dropped by policy: {denied:?}"
        ));
    }
    let outside = send(partner, 443)?;
    if outside.result != ConnectResult::Connected || outside.seen != Some(sender_address) {
        return Err(format!("sender -> partner:443 should pass: {outside:?}"));
    }
    Ok(())
}
