//! The agent's failures in a real lab (root only; skipped otherwise), issue 4:
//!
//! - `kill -9` of a node's agent while probes run: the kernel keeps the last ruleset, so nothing
//!   denied gets through while it is dead; a policy change made meanwhile is enforced once it is
//!   restarted (its first sync rebuilds the table in one transaction), nothing denied gets
//!   through during the restart either, and an allowed long-lived connection survives it all
//!   (`ct state established,related accept` keeps established flows across the rebuild).
//! - A document the agent cannot program leaves the previous ruleset working and is reported in
//!   the agent's log, its metrics and its status record (what `sluice get nodestatus` prints);
//!   once fixed, the agent catches up by itself.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness: it is also the programs the lab runs
//! (see `support`).

mod support;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_lab::{ConnectResult, ProbeOptions, ServiceProtocol};
use support::{HeldConnection, Lab, Test};

const TESTS: [(&str, Test); 2] = [
    (
        "a_killed_agent_lets_nothing_denied_through_and_catches_up_on_restart",
        killed_agent,
    ),
    (
        "an_unprogrammable_document_keeps_the_previous_ruleset_and_is_reported",
        unprogrammable_document,
    ),
];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

const PARTNER: &str = "203.0.113.10";
const OTHER: &str = "198.51.100.20";
/// The long-lived connection's port on the partner (served by `support hold-server`).
const HOLD_PORT: u16 = 7000;

const NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: shop-pool
spec:
  cidr: 10.60.0.0/16
  natOutgoing: true
"#;

/// client may reach the partner on 443 and the held port, and api; nothing else. db takes
/// connections only from client (which may not make them): api -> db is denied by node-1's
/// ingress rules, client -> anything else by its egress rules.
const POLICIES: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: client-egress
  namespace: shop
spec:
  selector: app == "client"
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination:
        nets: [203.0.113.10/32]
        ports: [443, 7000]
    - action: Allow
      protocol: TCP
      destination:
        selector: app == "api"
        ports: [8080]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: db-ingress
  namespace: shop
spec:
  selector: app == "db"
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: app == "client"
      destination:
        ports: [5432]
"#;

/// The change made while the agent is dead: client may no longer reach the partner on 443.
const DENY_PARTNER_HTTPS: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: client-no-partner-https
  namespace: shop
spec:
  order: 10
  selector: app == "client"
  types: [Egress]
  egress:
    - action: Deny
      protocol: TCP
      destination:
        nets: [203.0.113.10/32]
        ports: [443]
"#;

fn lab_file(two_nodes: bool) -> String {
    let mut text = format!(
        r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
{}outside:
  - {{name: partner, address: {PARTNER}, tcp: [443, 8443]}}
  - {{name: other, address: {OTHER}, tcp: [443], udp: [53]}}
manifests: [manifests/]
pods:
  - {{namespace: shop, name: client, node: node-1, labels: {{app: client}}}}
  - {{namespace: shop, name: db, node: node-1, labels: {{app: db}}, ports: [{{containerPort: 5432}}]}}
"#,
        if two_nodes { "  - name: node-2\n" } else { "" }
    );
    if two_nodes {
        text.push_str(
            "  - {namespace: shop, name: api, node: node-2, labels: {app: api}, ports: [{containerPort: 8080}]}\n",
        );
    }
    text
}

fn manifests() -> Vec<(&'static str, String)> {
    vec![
        ("00-namespace.yaml", NAMESPACE.to_string()),
        ("01-policies.yaml", POLICIES.to_string()),
    ]
}

/// A flow to probe: from a pod's namespace to an address and TCP port.
#[derive(Debug, Clone)]
struct Flow {
    shown: String,
    from_netns: String,
    to: IpAddr,
    port: u16,
}

fn flow(lab: &Lab, from: &str, to: &str, port: u16) -> Result<Flow, String> {
    let address = match to.parse::<IpAddr>() {
        Ok(address) => address,
        Err(_) => lab.pod_address(to)?,
    };
    Ok(Flow {
        shown: format!("{from} -> {to}:{port}"),
        from_netns: lab.netns(from)?,
        to: address,
        port,
    })
}

/// Probes the flows at once; returns each one's result.
fn probe_all(lab: &Lab, flows: &[Flow], timeout: Duration) -> Vec<ConnectResult> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = flows
            .iter()
            .map(|flow| {
                scope.spawn(move || {
                    lab.connect(
                        &flow.from_netns,
                        ServiceProtocol::Tcp,
                        flow.to,
                        flow.port,
                        timeout,
                    )
                    .result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or(ConnectResult::Error))
            .collect()
    })
}

/// Fails on any denied flow that did not time out (a drop is silent; anything else means a
/// packet got somewhere).
fn check_denied(lab: &Lab, denied: &[Flow], when: &str) -> Result<(), String> {
    let results = probe_all(lab, denied, Duration::from_millis(400));
    let leaks: Vec<String> = denied
        .iter()
        .zip(&results)
        .filter(|(_, result)| **result != ConnectResult::TimedOut)
        .map(|(flow, result)| format!("{} {result:?}", flow.shown))
        .collect();
    if leaks.is_empty() {
        Ok(())
    } else {
        Err(format!("{when}: denied flows got through: {}", leaks.join(", ")))
    }
}

fn agrees_with_explain(lab: &Lab) -> Result<sluice_lab::ProbeReport, String> {
    let report = sluice_lab::probe(
        &lab.environment,
        &lab.name,
        &ProbeOptions {
            against_explain: true,
            services: Vec::new(),
            ..Default::default()
        },
    )?;
    let disagreements = support::disagreements(&report);
    if disagreements.is_empty() {
        Ok(report)
    } else {
        Err(format!(
            "probes disagree with explain:\n  {}",
            disagreements.join("\n  ")
        ))
    }
}

fn status_field(lab: &Lab, node: &str) -> (bool, i64, i64, Option<String>) {
    let status = lab.node_status(node).unwrap_or_default();
    (
        status["inSync"].as_bool().unwrap_or(false),
        status["programmedRevision"].as_i64().unwrap_or(0),
        status["seenRevision"].as_i64().unwrap_or(0),
        status["error"].as_str().map(str::to_string),
    )
}

fn killed_agent() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: the lab needs root");
        return Ok(());
    }
    let started = Instant::now();
    let lab = Lab::up("k", &lab_file(true), &manifests())?;
    println!("lab up in {:.1?}", started.elapsed());
    let outcome = killed_agent_in(&lab);
    let cleaned = lab.finish();
    outcome?;
    cleaned
}

fn killed_agent_in(lab: &Lab) -> Result<(), String> {
    // The long-lived allowed connection: client -> partner:7000 through node-1 (masqueraded).
    let mut server = lab.spawn_in(
        &lab.netns("partner")?,
        &["support", "hold-server", "--port", &HOLD_PORT.to_string()],
    )?;
    server.first_line()?;
    let held = HeldConnection::follow(lab.spawn_in(
        &lab.netns("shop/client")?,
        &[
            "support",
            "hold-client",
            "--to",
            PARTNER,
            "--port",
            &HOLD_PORT.to_string(),
        ],
    )?);
    held.wait_beyond(3, Duration::from_secs(5))?;
    // A denied flow tried every few milliseconds from before the kill to the end: any answer
    // is a leak (a fresh UDP socket each time, so every attempt is a new flow).
    let tight = lab
        .spawn_in(
            &lab.netns("shop/client")?,
            &[
                "support",
                "flip-probe",
                "--to",
                OTHER,
                "--port",
                "53",
                "--interval-us",
                "1000",
                "--timeout-ms",
                "5",
                "--confirm",
                "1",
            ],
        )?
        .lines();
    match tight.recv_timeout(Duration::from_secs(2)) {
        Ok(line) if line.starts_with("denied ") => {}
        other => return Err(format!("client -> other udp/53 should start denied: {other:?}")),
    }

    let report = agrees_with_explain(lab)?;
    let https = flow(lab, "shop/client", PARTNER, 443)?;
    // Every flow whose denial node-1 enforces: client's egress, db's ingress.
    let denied = vec![
        flow(lab, "shop/client", PARTNER, 8443)?,
        flow(lab, "shop/client", OTHER, 443)?,
        flow(lab, "shop/client", "shop/db", 5432)?,
        flow(lab, "shop/api", "shop/db", 5432)?,
    ];
    for expected in &denied {
        let row = report
            .rows
            .iter()
            .find(|row| {
                row.to_address == expected.to
                    && row.port == expected.port
                    && expected.shown.starts_with(&row.from)
            })
            .ok_or_else(|| format!("no probe row for {}", expected.shown))?;
        if row.explain_allows != Some(false) {
            return Err(format!(
                "{} should be denied to begin with: {row:?}",
                expected.shown
            ));
        }
    }

    let pid = sluice_lab::agent_pid(&lab.environment, &lab.name, "node-1")
        .ok_or("node-1's agent is not running")?;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map_err(|error| error.to_string())?;
    if !killed.success()
        || !support::wait_until(Duration::from_secs(5), || {
            sluice_lab::agent_pid(&lab.environment, &lab.name, "node-1").is_none()
        })
    {
        return Err(format!("could not kill node-1's agent ({pid})"));
    }
    let echoes_at_kill = held.echoes();

    // Dead: the kernel keeps the last ruleset. Denied stays denied, allowed stays allowed.
    for round in 0..2 {
        check_denied(lab, &denied, &format!("agent dead, round {round}"))?;
    }
    // A policy change while nobody programs the node: written, but not enforced yet.
    let change = lab.apply(DENY_PARTNER_HTTPS, &[])?;
    check_denied(lab, &denied, "agent dead, after the change")?;
    let before_restart = probe_all(lab, std::slice::from_ref(&https), Duration::from_millis(400));
    if before_restart != [ConnectResult::Connected] {
        return Err(format!(
            "with the agent dead the previous ruleset should still allow {}: {before_restart:?}",
            https.shown
        ));
    }
    held.wait_beyond(echoes_at_kill, Duration::from_secs(2))?;

    // Restart with the lab's command line and probe throughout, until the change is enforced.
    let log_before = lab.agent_log("node-1").len();
    let restarted_at = Instant::now();
    sluice_lab::restart_agent(&lab.environment, &lab.name, "node-1", &[])?;
    let mut watched: Vec<Flow> = denied.clone();
    watched.push(https.clone());
    let mut rounds = 0;
    let converged = loop {
        rounds += 1;
        let results = probe_all(lab, &watched, Duration::from_millis(300));
        let leaks: Vec<String> = denied
            .iter()
            .zip(&results)
            .filter(|(_, result)| **result != ConnectResult::TimedOut)
            .map(|(flow, result)| format!("{} {result:?}", flow.shown))
            .collect();
        if !leaks.is_empty() {
            return Err(format!(
                "during the restart (round {rounds}, {:.1?} in), denied flows got through: {}",
                restarted_at.elapsed(),
                leaks.join(", ")
            ));
        }
        let (in_sync, programmed, _, _) = status_field(lab, "node-1");
        let https_denied = results.last() == Some(&ConnectResult::TimedOut);
        if in_sync && programmed >= change && https_denied {
            break restarted_at.elapsed();
        }
        if restarted_at.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "the restarted agent did not enforce the change within 20 s: status {:?}, {} {:?}\nagent log:\n{}",
                lab.node_status("node-1"),
                https.shown,
                results.last(),
                &lab.agent_log("node-1")[log_before..]
            ));
        }
    };
    println!("restarted agent enforced the change after {converged:.1?} ({rounds} probe rounds, no leak)");

    // Its first sync rebuilt the whole table in one transaction.
    let log = lab.agent_log("node-1");
    let first = log[log_before..]
        .lines()
        .find(|line| line.contains("programmed"))
        .ok_or("the restarted agent logged no sync")?;
    if !first.contains("full=true") {
        return Err(format!(
            "the restarted agent's first sync was not a full one: {first}"
        ));
    }

    let leaks: Vec<String> = tight.try_iter().collect();
    if !leaks.is_empty() {
        return Err(format!(
            "the tight-loop probe of client -> other udp/53 saw answers: {leaks:?}"
        ));
    }

    let report = agrees_with_explain(lab)?;
    let https_row = report
        .rows
        .iter()
        .find(|row| row.from == "shop/client" && row.to == "partner" && row.port == 443)
        .ok_or("no probe of client -> partner:443")?;
    if https_row.allowed() {
        return Err(format!("the change is not enforced: {https_row:?}"));
    }
    // Still exchanging bytes after the restart, on the same connection.
    let echoes = held.echoes();
    let later = held.wait_beyond(echoes + 5, Duration::from_secs(3))?;
    println!("long-lived connection: {echoes_at_kill} echoes at the kill, {later} now, unbroken");
    Ok(())
}

/// A wrapper `nft` that refuses any transaction naming [`MARKER`] and runs the real `nft`
/// otherwise.
///
/// Why a wrapper rather than the real kernel: no kernel limit could be made to refuse a
/// ruleset quickly and reliably. Sets without a `size` (Sluice declares none) have no element
/// limit, so refusing one would take millions of elements; jump depth and expressions per rule
/// are far below the kernel's limits (16, 128) by construction; kernel memory limits would
/// need a memory cgroup around the agent, outside the lab's namespaces. The real `nft` does
/// refuse one kind of document today, but through a renderer bug that is due to be fixed, not
/// a limit a test can rely on: a selector with a long non-ASCII string literal (`app in {"b",
/// "ééé…"}` with two or more matching pods) gets a set comment of 120 characters but more than
/// nft's 128 bytes ("comment too long"). So this node's `nft` refuses like a kernel that ran
/// out of room (the fake-kernel test in crates/agent does the same one level lower);
/// everything else, the agent, its metrics and status and the kernel's ruleset, is real.
const MARKER: &str = "unprogrammable";

fn nft_wrapper(real: &str) -> String {
    format!(
        r#"#!/bin/sh
# Written by crates/lab/tests/agent_faults.rs: refuses transactions that mention {MARKER}.
case " $* " in
  *" -f "*)
    input=$(mktemp) || exit 1
    cat > "$input"
    if grep -q '{MARKER}' "$input"; then
      rm -f "$input"
      echo "Error: Could not process rule: Message too long (refused by the lab test's nft wrapper)" >&2
      exit 1
    fi
    "{real}" "$@" < "$input"
    status=$?
    rm -f "$input"
    exit $status
    ;;
esac
exec "{real}" "$@"
"#
    )
}

const UNPROGRAMMABLE: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: unprogrammable-partner-https
  namespace: shop
spec:
  order: 10
  selector: app == "client"
  types: [Egress]
  egress:
    - action: Deny
      protocol: TCP
      destination:
        nets: [203.0.113.10/32]
        ports: [443]
"#;

const METRICS_ADDRESS: &str = "127.0.0.1:9464";

fn unprogrammable_document() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: the lab needs root");
        return Ok(());
    }
    let started = Instant::now();
    let lab = Lab::up("r", &lab_file(false), &manifests())?;
    println!("lab up in {:.1?}", started.elapsed());
    let outcome = unprogrammable_in(&lab);
    let cleaned = lab.finish();
    outcome?;
    cleaned
}

/// `GET path` from the agent's metrics server inside node-1: (status line, body).
fn http_get(lab: &Lab, path: &str) -> Result<(String, String), String> {
    let output = lab
        .command_in(
            &lab.netns("node-1")?,
            &[
                "support",
                "http-get",
                "--address",
                METRICS_ADDRESS,
                "--path",
                path,
            ],
        )
        .output()
        .map_err(|error| error.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
    if !output.status.success() {
        return Err(format!(
            "GET {path}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok((status.to_string(), body.to_string()))
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(-1.0)
}

fn unprogrammable_in(lab: &Lab) -> Result<(), String> {
    let real = which("nft").ok_or("nft is not on PATH")?;
    let wrapper_directory = lab.root.join("nft-wrapper");
    std::fs::create_dir_all(&wrapper_directory).map_err(|error| error.to_string())?;
    let wrapper = wrapper_directory.join("nft");
    std::fs::write(&wrapper, nft_wrapper(&real.display().to_string())).map_err(|error| error.to_string())?;
    let mut permissions = std::fs::metadata(&wrapper)
        .map_err(|error| error.to_string())?
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&wrapper, permissions).map_err(|error| error.to_string())?;
    let path = format!(
        "{}:{}",
        wrapper_directory.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // node-1's agent again, with the wrapper first on its PATH and metrics served.
    sluice_lab::restart_agent(
        &lab.environment,
        &lab.name,
        "node-1",
        &[("PATH", &path), (support::METRICS_VARIABLE, METRICS_ADDRESS)],
    )?;
    let healthy = support::wait_until(Duration::from_secs(10), || {
        http_get(lab, "/healthz").is_ok_and(|(status, _)| status.contains(" 200"))
    });
    if !healthy {
        return Err(format!(
            "the agent with the wrapper did not become healthy:\n{}",
            lab.agent_log("node-1")
        ));
    }
    let https = flow(lab, "shop/client", PARTNER, 443)?;
    let blocked = flow(lab, "shop/client", PARTNER, 8443)?;
    let both = [https.clone(), blocked.clone()];
    let expect = |when: &str, https_result: ConnectResult| -> Result<(), String> {
        let results = probe_all(lab, &both, Duration::from_millis(400));
        if results != [https_result, ConnectResult::TimedOut] {
            return Err(format!(
                "{when}: expected {} {https_result:?} and {} TimedOut, got {results:?}",
                https.shown, blocked.shown
            ));
        }
        Ok(())
    };
    expect("before the change", ConnectResult::Connected)?;
    let log_before = lab.agent_log("node-1").len();

    let refused_revision = lab.apply(UNPROGRAMMABLE, &[])?;
    let reported = support::wait_until(Duration::from_secs(10), || {
        let (in_sync, _, seen, error) = status_field(lab, "node-1");
        !in_sync && seen >= refused_revision && error.is_some()
    });
    let (in_sync, programmed, seen, error) = status_field(lab, "node-1");
    if !reported {
        return Err(format!(
            "the refusal is not in node-1's status: in sync {in_sync}, programmed {programmed}, seen {seen}, error {error:?}"
        ));
    }
    let error = error.unwrap_or_default();
    if !error.contains("Message too long") || programmed >= refused_revision {
        return Err(format!(
            "node-1's status should name the refusal and keep the previous revision: programmed {programmed}, refused {refused_revision}, error {error:?}"
        ));
    }
    // The log says so, and the metrics count it and fail the health check.
    let log = lab.agent_log("node-1");
    if !log[log_before..].contains("the kernel refused the ruleset") {
        return Err(format!(
            "the agent's log does not report the refusal:\n{}",
            &log[log_before..]
        ));
    }
    let (health, _) = http_get(lab, "/healthz")?;
    let (_, metrics) = http_get(lab, "/metrics")?;
    let errors = metric(&metrics, "sluice_agent_sync_errors_total");
    if !health.contains(" 503") || errors < 1.0 {
        return Err(format!(
            "metrics should show the refusal: /healthz {health:?}, sync_errors_total {errors}"
        ));
    }
    // `sluice get nodestatus`, when the CLI is built beside this binary (cargo build -p sluice).
    if let Some(cli) = sluice_cli() {
        let state = lab.state()?;
        let output = std::process::Command::new(&cli)
            .args(["get", "nodestatus", "--datastore", &state.datastore])
            .output()
            .map_err(|error| error.to_string())?;
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find(|line| line.starts_with("node-1 "))
            .unwrap_or_default();
        if !line.contains("false") || !line.contains("Message too long") {
            return Err(format!(
                "`sluice get nodestatus` does not show the refusal:\n{text}"
            ));
        }
    } else {
        println!("(target/debug/sluice not built: `sluice get nodestatus` checked through its record only)");
    }

    // The previous ruleset still works: 443 still passes, 8443 is still dropped, also while
    // the agent keeps retrying (a full resync every half second, each refused).
    expect("after the refusal", ConnectResult::Connected)?;
    std::thread::sleep(Duration::from_millis(1200));
    let (_, metrics) = http_get(lab, "/metrics")?;
    let retried = metric(&metrics, "sluice_agent_sync_errors_total");
    if retried <= errors {
        return Err(format!(
            "the agent did not retry: sync_errors_total {errors} then {retried}"
        ));
    }
    expect("while retrying", ConnectResult::Connected)?;

    // Fixed (the same rule under a name the wrapper accepts): the agent catches up by itself.
    let fixed = lab.apply(
        &UNPROGRAMMABLE.replace("unprogrammable-partner-https", "client-no-partner-https"),
        &[sluice_api::resource::key(
            sluice_api::Kind::NetworkPolicy,
            Some("shop"),
            "unprogrammable-partner-https",
        )],
    )?;
    let caught_up = support::wait_until(Duration::from_secs(10), || {
        let (in_sync, programmed, _, error) = status_field(lab, "node-1");
        in_sync && programmed >= fixed && error.is_none()
    });
    if !caught_up {
        return Err(format!(
            "the agent did not catch up after the fix: {:?}",
            lab.node_status("node-1")
        ));
    }
    let (health, _) = http_get(lab, "/healthz")?;
    if !health.contains(" 200") {
        return Err(format!("/healthz after the fix: {health:?}"));
    }
    let report = agrees_with_explain(lab)?;
    expect("after the fix", ConnectResult::TimedOut)?;
    println!(
        "refused at revision {refused_revision} (kept {programmed}), {} sync errors, fixed at {fixed}; {} probes agree with explain",
        retried,
        report.rows.len()
    );
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([
            std::path::PathBuf::from("/usr/sbin"),
            std::path::PathBuf::from("/sbin"),
        ])
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

/// `target/<profile>/sluice` beside this test binary (`target/<profile>/deps/…`), if built.
fn sluice_cli() -> Option<std::path::PathBuf> {
    let executable = std::env::current_exe().ok()?;
    let candidate = executable.parent()?.parent()?.join("sluice");
    candidate.is_file().then_some(candidate)
}
