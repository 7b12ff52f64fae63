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

const TESTS: [(&str, Test); 2] = [
    ("a_lab_agrees_with_explain_and_cleans_up", end_to_end),
    ("the_repository_examples_agree_with_explain", the_examples),
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
    for (index, other_node) in [(0, "100.64.0.11"), (1, "100.64.0.10")] {
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
        if (through_other, blackholes) != (2, 2) || routes.lines().count() != 4 {
            return Err(format!(
                "node {index} should have 2 routes via {other_node} and 2 blackholes:\n{routes}"
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
