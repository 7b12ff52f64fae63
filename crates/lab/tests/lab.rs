//! End-to-end: a real lab of network namespaces (root only; skipped otherwise).
//!
//! This binary has no libtest harness because it is also every program the lab runs: invoked
//! as `sluice-cni` (through a symlink) it is the CNI plugin, with `agent …` the node agent, and
//! with `lab …` the lab's helpers. So the test needs no binary from another package. It speaks
//! just enough of libtest's command line (`--list`, a name filter, `--exact`) for cargo test
//! and nextest.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use sluice_lab::{ConnectResult, Environment, LabCommand, ProbeOptions, ProbeReport};

#[derive(Debug, Parser)]
#[command(name = "sluice")]
enum Helper {
    /// The node agent, as `sluice agent` runs it.
    Agent {
        #[arg(long)]
        node: String,
        #[arg(long)]
        datastore: String,
    },
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// `sluice demo`, for trying it by hand through this binary.
    Demo,
}

type Test = fn() -> Result<(), String>;

const TESTS: [(&str, Test); 1] = [("a_lab_agrees_with_explain_and_cleans_up", end_to_end)];

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().collect();
    let program = arguments
        .first()
        .map(|path| Path::new(path).file_name().unwrap_or_default().to_os_string());
    if program.as_deref() == Some("sluice-cni".as_ref()) {
        return run_cni();
    }
    if matches!(
        arguments.get(1).map(String::as_str),
        Some("agent" | "lab" | "demo")
    ) {
        return run_helper();
    }
    run_tests(&arguments[1..])
}

fn run_cni() -> ExitCode {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let outcome = sluice_cni::run(|name| std::env::var(name).ok(), &stdin);
    if let Some(stdout) = outcome.stdout {
        println!("{stdout}");
    }
    ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1))
}

fn run_helper() -> ExitCode {
    let result = match Helper::parse() {
        Helper::Agent { node, datastore } => sluice_store::open(&datastore)
            .map_err(|error| error.to_string())
            .and_then(|store| {
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                    .with_writer(std::io::stderr)
                    .init();
                let config = sluice_agent::AgentConfig::new(node);
                sluice_agent::run(config, std::sync::Arc::from(store), None)
            })
            .map(|()| ExitCode::SUCCESS),
        Helper::Demo => {
            let here = std::env::current_exe().unwrap_or_default();
            let called = PathBuf::from(std::env::args().next().unwrap_or_default());
            sluice_lab::demo(&here, &called.with_file_name("sluice-cni"))
        }
        Helper::Lab { command } => {
            // For a lab built by hand (debugging): a `sluice-cni` symlink beside the one this
            // binary was called through.
            let here = std::env::current_exe().unwrap_or_default();
            let called = PathBuf::from(std::env::args().next().unwrap_or_default());
            sluice_lab::run(command, &here, &called.with_file_name("sluice-cni"))
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::FAILURE
    })
}

fn run_tests(arguments: &[String]) -> ExitCode {
    let flag = |name: &str| arguments.iter().any(|argument| argument == name);
    let filters: Vec<&String> = arguments
        .iter()
        .filter(|argument| !argument.starts_with('-'))
        .collect();
    if flag("--list") {
        if !flag("--ignored") {
            for (name, _) in TESTS {
                println!("{name}: test");
            }
        }
        return ExitCode::SUCCESS;
    }
    let selected = TESTS.iter().filter(|(name, _)| {
        filters.is_empty()
            || filters.iter().any(|filter| {
                if flag("--exact") {
                    name == filter
                } else {
                    name.contains(filter.as_str())
                }
            })
    });
    let mut failed = 0;
    let mut count = 0;
    for (name, test) in selected {
        count += 1;
        let started = Instant::now();
        match test() {
            Ok(()) => println!("test {name} ... ok ({:.1?})", started.elapsed()),
            Err(error) => {
                failed += 1;
                println!("test {name} ... FAILED ({:.1?})\n{error}", started.elapsed());
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        count - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .and_then(|line| line.split_whitespace().nth(2).map(|uid| uid == "0"))
            .unwrap_or(false)
    })
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
        check_report(&report)
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

fn check_report(report: &ProbeReport) -> Result<(), String> {
    let disagreements: Vec<String> = report
        .rows
        .iter()
        .filter_map(|row| {
            let problem = row.disagreement.as_ref()?;
            Some(format!(
                "{} -> {} {:?}/{}: {problem}",
                row.from, row.to, row.protocol, row.port
            ))
        })
        .collect();
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
