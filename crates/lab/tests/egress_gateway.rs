//! Egress gateway pods in a lab (root; skipped otherwise). A pod with `egressGateway` runs
//! `sluice gateway` in its namespace: it takes its address from the pool its annotation names
//! (a Manual pool meant for gateways), is stored with the named port `health` (TCP 8080), and
//! answers `/readiness` from its node's namespace once its ICMP probe of an outside host
//! succeeds. The library finds its process (a test SIGKILLs it) and takes a pod's link down;
//! `lab down` leaves no gateway running.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_api::Resource;
use support::{Lab, Test};

const TESTS: [(&str, Test); 1] = [(
    "gateway_pods_run_sluice_gateway_answer_readiness_from_their_node_and_stop_with_the_lab",
    gateway_pods,
)];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

const MANIFESTS: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.65.0.0/16, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: gateways}
spec: {cidr: 10.66.0.0/24, blockSize: 28, assignmentMode: Manual}
"#;

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
  - name: node-2
outside:
  - {name: partner, address: 203.0.113.10, tcp: [443]}
manifests: [manifests/]
pods:
  - namespace: egress
    name: gateway-a
    node: node-1
    labels: {egress-gateway: "true"}
    annotations: {cni.projectcalico.org/ipv4pools: '["gateways"]'}
    egressGateway:
      icmpProbes: [203.0.113.10]
      probeIntervalSeconds: 0.2
      probeTimeoutSeconds: 1
  - namespace: egress
    name: gateway-b
    node: node-2
    annotations: {cni.projectcalico.org/ipv4pools: '["gateways"]'}
    egressGateway: {}
  - {namespace: shop, name: web, node: node-1}
"#;

fn gateway_pods() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("g", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    let outcome = run(&lab);
    let gateway = sluice_lab::gateway_pid(&lab.environment, &lab.name, "egress/gateway-a");
    let finished = lab.finish();
    outcome?;
    finished?;
    // `lab down` stopped the gateway it found running.
    let pid = gateway?.ok_or("gateway-a was not running before `lab down`")?;
    // This process started it (`Lab::up` runs `lab up` in-process), so it stays a zombie here.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
    if !(stat.is_empty() || state.starts_with('Z')) {
        return Err(format!(
            "gateway-a (pid {pid}) still runs after `lab down`: {stat}"
        ));
    }
    Ok(())
}

fn run(lab: &Lab) -> Result<(), String> {
    let gateways: ipnet::IpNet = "10.66.0.0/24".parse().expect("a network");
    let mut addresses = Vec::new();
    for pod in ["egress/gateway-a", "egress/gateway-b"] {
        let address = lab.pod_address(pod)?;
        if !gateways.contains(&address) {
            return Err(format!(
                "{pod} has {address}, not an address of the gateways' pool"
            ));
        }
        addresses.push(address);
    }
    let web = lab.pod_address("shop/web")?;
    if gateways.contains(&web) {
        return Err(format!("shop/web took {web} from the Manual gateways' pool"));
    }

    // The stored Pod tells agents where to probe: the named port `health`, TCP 8080.
    let store = lab.store()?;
    let (values, _) = store
        .list(sluice_api::resource::RESOURCE_PREFIX)
        .map_err(|error| error.to_string())?;
    let stored = sluice_api::stored::decode_values(
        values
            .iter()
            .map(|value| (value.key.as_str(), value.value.as_slice(), value.modify_revision)),
    );
    let pods: Vec<_> = stored
        .resources
        .into_values()
        .filter_map(|resource| match resource {
            Resource::Pod(pod) => Some(pod),
            _ => None,
        })
        .collect();
    for pod in &pods {
        let health: Vec<_> = pod
            .spec
            .containers
            .iter()
            .flat_map(|container| &container.ports)
            .filter(|port| port.name.as_deref() == Some("health"))
            .map(|port| (port.container_port, port.protocol))
            .collect();
        let gateway = pod.metadata.namespace.as_deref() == Some("egress");
        let expected = if gateway {
            vec![(8080, Some(sluice_api::values::Protocol::Tcp))]
        } else {
            Vec::new()
        };
        if health != expected {
            return Err(format!(
                "pod {}: health ports {health:?}, expected {expected:?}",
                pod.metadata.name
            ));
        }
    }

    // Ready from each gateway's node: gateway-a once its ping of the partner is answered,
    // gateway-b (no probes) once set up.
    for (pod, node, address) in [
        ("egress/gateway-a", "node-1", addresses[0]),
        ("egress/gateway-b", "node-2", addresses[1]),
    ] {
        wait_for(&format!("{pod} to be ready"), Duration::from_secs(15), || {
            readiness(lab, node, address).is_some_and(|status| status.contains(" 200 "))
        })?;
    }

    // Each runs in its own pod, where it made the tunnel's far end.
    for pod in ["egress/gateway-a", "egress/gateway-b"] {
        support::run_checked(
            "ip",
            &["-n", &lab.netns(pod)?, "link", "show", "egress.sluice", "up"],
        )
        .and_then(|listing| {
            if listing.contains("egress.sluice") {
                Ok(())
            } else {
                Err(format!("no egress.sluice device up in {pod}"))
            }
        })?;
    }

    // SIGKILL: the process is gone and nothing answers.
    let pid = sluice_lab::gateway_pid(&lab.environment, &lab.name, "egress/gateway-b")?
        .ok_or("gateway-b does not run")?;
    support::run_checked("kill", &["-KILL", &pid.to_string()])?;
    wait_for("gateway-b's process to be gone", Duration::from_secs(5), || {
        sluice_lab::gateway_pid(&lab.environment, &lab.name, "egress/gateway-b")
            .is_ok_and(|pid| pid.is_none())
    })?;
    if let Some(answer) = readiness(lab, "node-2", addresses[1]) {
        return Err(format!("a killed gateway answered {answer}"));
    }
    if sluice_lab::gateway_pid(&lab.environment, &lab.name, "shop/web").is_ok() {
        return Err("shop/web is no gateway, yet gateway_pid answered".into());
    }

    // Link down: the process runs on, but its node reaches it no more.
    sluice_lab::pod_link_down(&lab.environment, &lab.name, "egress/gateway-a")?;
    if readiness(lab, "node-1", addresses[0]).is_some() {
        return Err("gateway-a answered with its link down".into());
    }
    if sluice_lab::gateway_pid(&lab.environment, &lab.name, "egress/gateway-a")?.is_none() {
        return Err("gateway-a's process ended when its link went down".into());
    }
    Ok(())
}

/// The status line of `GET /readiness` on a gateway, asked from a node's namespace; none when
/// nothing answers.
fn readiness(lab: &Lab, node: &str, address: IpAddr) -> Option<String> {
    let output = lab
        .command_in(
            &lab.netns(node).ok()?,
            &[
                "support",
                "http-get",
                "--address",
                &format!("{address}:8080"),
                "--path",
                "/readiness",
            ],
        )
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines().next().map(str::to_string)
}

fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
