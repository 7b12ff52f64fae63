//! Fail closed before the agent, with real packets (root; skipped otherwise). A pod wired by
//! CNI ADD on a node whose kernel holds no Sluice program (the agent stopped, its table gone:
//! the node as it is before its agent first runs) may send nothing: a TCP connection and a
//! ping to a pod on another node (forwarded) and to the node itself (input) all die. The
//! control: the same probes from the same pod pass once the agent has programmed it with a
//! policy that allows them, before and after.
//!
//! A missing tool (`ping`) fails the test, naming its Debian package; nothing is skipped.
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::net::IpAddr;
use std::process::{Command, ExitCode};
use std::time::Duration;

use sluice_lab::{ConnectResult, ServiceProtocol};
use support::{Lab, Test};

const TESTS: [(&str, Test); 1] = [(
    "a_pod_on_a_node_without_a_program_can_send_nothing",
    unprogrammed_pod,
)];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: routed}
spec: {cidr: 10.62.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: client-may-send}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - action: Allow
"#;

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
  - name: node-2
manifests: [manifests/]
pods:
  - {namespace: shop, name: client, node: node-1, labels: {app: client}}
  - {namespace: shop, name: server, node: node-2, labels: {app: server}, ports: [{containerPort: 8080}]}
"#;

/// A port nothing listens on in the node: a reset (Refused) shows the SYN got there.
const CLOSED_PORT: u16 = 9;

fn unprogrammed_pod() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("fc", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    let outcome = run(&lab);
    let finished = lab.finish();
    outcome.and(finished)
}

struct Targets {
    server: IpAddr,
    node: IpAddr,
}

/// (what, passed) for the four probes from the client.
fn probe(lab: &Lab, client: &str, targets: &Targets) -> Result<Vec<(String, bool)>, String> {
    let timeout = Duration::from_millis(1500);
    let to_server = lab.connect(client, ServiceProtocol::Tcp, targets.server, 8080, timeout);
    let to_node = lab.connect(client, ServiceProtocol::Tcp, targets.node, CLOSED_PORT, timeout);
    Ok(vec![
        (
            format!(
                "TCP to the server pod {} (forwarded): {to_server:?}",
                targets.server
            ),
            to_server.result == ConnectResult::Connected,
        ),
        (
            format!("TCP to the node {} (input): {to_node:?}", targets.node),
            to_node.result == ConnectResult::Refused,
        ),
        (
            format!("ping to the server pod {}", targets.server),
            ping(client, targets.server)?,
        ),
        (
            format!("ping to the node {}", targets.node),
            ping(client, targets.node)?,
        ),
    ])
}

/// One echo request; a missing `ping` is an error naming its package, never a skip.
fn ping(netns: &str, to: IpAddr) -> Result<bool, String> {
    let output = Command::new("ip")
        .args(["netns", "exec", netns, "ping", "-n", "-c", "1", "-W", "1"])
        .arg(to.to_string())
        .output()
        .map_err(|error| format!("cannot run ip: {error}"))?;
    let error = String::from_utf8_lossy(&output.stderr);
    if error.contains("No such file") || error.contains("not found") {
        panic!("ping is missing: install the Debian package iputils-ping ({error})");
    }
    Ok(output.status.success())
}

fn expect_all(probes: &[(String, bool)], passed: bool, when: &str) -> Result<(), String> {
    let wrong: Vec<&String> = probes
        .iter()
        .filter(|(_, outcome)| *outcome != passed)
        .map(|(what, _)| what)
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{when}: expected every probe to {}, but: {wrong:#?}",
            if passed { "pass" } else { "die" }
        ))
    }
}

fn wait_programmed(lab: &Lab, node: &str) -> Result<(), String> {
    let revision = lab
        .store()?
        .list("/sluice/")
        .map_err(|error| error.to_string())?
        .1;
    if support::wait_until(Duration::from_secs(20), || {
        lab.node_status(node).is_some_and(|status| {
            status["inSync"].as_bool() == Some(true)
                && status["programmedRevision"].as_i64().unwrap_or(0) >= revision
        })
    }) {
        Ok(())
    } else {
        Err(format!("{node}'s agent did not program revision {revision}"))
    }
}

fn run(lab: &Lab) -> Result<(), String> {
    let client = lab.netns("shop/client")?;
    let node = lab.netns("node-1")?;
    let node_address = lab
        .state()?
        .node("node-1")
        .map(|state| IpAddr::V4(state.address))
        .ok_or("no node-1")?;
    let targets = Targets {
        server: lab.pod_address("shop/server")?,
        node: node_address,
    };

    // Control: programmed, with a policy that allows everything the probes send.
    expect_all(&probe(lab, &client, &targets)?, true, "programmed")?;

    // node-1 as before its agent's first run: no agent, no table; then CNI ADD wires the pod.
    let pid = sluice_lab::agent_pid(&lab.environment, &lab.name, "node-1")
        .ok_or("node-1's agent is not running")?;
    let killed = Command::new("kill")
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
    support::run_checked(
        "ip",
        &["netns", "exec", &node, "nft", "delete", "table", "inet", "sluice"],
    )?;
    sluice_lab::rewire_pod(&lab.environment, &lab.name, "shop/client")?;
    let table = support::run_checked(
        "ip",
        &["netns", "exec", &node, "nft", "list", "table", "inet", "sluice"],
    )?;
    if !table.contains("pod interface without a program yet") {
        return Err(format!("CNI ADD did not make the node fail closed:\n{table}"));
    }
    expect_all(
        &probe(lab, &client, &targets)?,
        false,
        "wired by CNI ADD, never programmed",
    )?;

    // The same pod once the agent has programmed it: everything passes again.
    sluice_lab::restart_agent(&lab.environment, &lab.name, "node-1", &[])?;
    wait_programmed(lab, "node-1")?;
    expect_all(&probe(lab, &client, &targets)?, true, "programmed after CNI ADD")?;
    Ok(())
}
