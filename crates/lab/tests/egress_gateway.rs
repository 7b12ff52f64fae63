//! Egress gateway pods in a lab (root; skipped otherwise). A pod with `egressGateway` runs
//! `sluice gateway` in its namespace: it takes its address from the pool its annotation names
//! (a Manual pool meant for gateways), is stored with the named port `health` (TCP 8080), and
//! answers `/readiness` from its node's namespace once its ICMP probe of an outside host
//! succeeds. The library finds its process (a test SIGKILLs it) and takes a pod's link down;
//! `lab down` leaves no gateway running.
//!
//! A second test plays the client node's part by hand (what the agent will do: a VXLAN device,
//! a neighbour and FDB entry for the gateway, a rule and a table) to show that a gateway pod in
//! the lab, among real agents, CNI and the fabric, carries a client's traffic out with its own
//! address, and nothing once its link is down. It does not check the way back: the gateway
//! returns replies through its pod interface, and the gateway's node drops them (TCP and ICMP
//! replies as `ct state invalid`, since that node saw the request only encapsulated; UDP by
//! anti-spoofing, since the source is the outside host's). See "Egress gateways" in
//! docs/semantics.md.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_api::Resource;
use sluice_lab::{ConnectResult, ServiceProtocol};
use support::{Lab, Test};

const TESTS: [(&str, Test); 2] = [
    (
        "gateway_pods_run_sluice_gateway_answer_readiness_from_their_node_and_stop_with_the_lab",
        gateway_pods,
    ),
    (
        "a_client_tunnelled_by_hand_reaches_the_outside_with_the_address_of_a_gateway_on_another_node",
        tunnelled_client,
    ),
];

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

const TUNNEL_MANIFESTS: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: routed}
spec: {cidr: 10.67.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: gateways}
spec: {cidr: 10.66.0.0/24, blockSize: 28, assignmentMode: Manual}
"#;

const TUNNEL_LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
  - name: node-2
outside:
  - {name: partner, address: 203.0.113.10, tcp: [443], udp: [7000]}
manifests: [manifests/]
pods:
  - namespace: egress
    name: gateway
    node: node-2
    annotations: {cni.projectcalico.org/ipv4pools: '["gateways"]'}
    egressGateway: {}
  - {namespace: shop, name: client, node: node-1}
"#;

fn tunnelled_client() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("t", TUNNEL_LAB, &[("00.yaml", TUNNEL_MANIFESTS.to_string())])?;
    let outcome = tunnel_through(&lab);
    let finished = lab.finish();
    outcome.and(finished)
}

fn tunnel_through(lab: &Lab) -> Result<(), String> {
    let gateway = match lab.pod_address("egress/gateway")? {
        IpAddr::V4(address) => address,
        other => return Err(format!("the gateway has {other}, not IPv4")),
    };
    let client = lab.pod_address("shop/client")?;
    let client_netns = lab.netns("shop/client")?;
    let partner: IpAddr = "203.0.113.10".parse().expect("an address");
    let seen = |lab: &Lab| {
        lab.connect(
            &client_netns,
            ServiceProtocol::Tcp,
            partner,
            443,
            Duration::from_millis(1500),
        )
    };
    // A routed pool: without the gateway the partner sees the client itself.
    let direct = seen(lab);
    if direct.seen != Some(client) {
        return Err(format!(
            "before the tunnel: {direct:?}, expected the client's {client}"
        ));
    }

    let node = lab.netns("node-1")?;
    let mac = sluice_gateway::tunnel::mac_text(sluice_gateway::tunnel::gateway_mac(gateway));
    let (gateway_text, client_text) = (gateway.to_string(), client.to_string());
    let device = sluice_gateway::tunnel::DEVICE;
    for command in [
        vec![
            "link",
            "add",
            device,
            "mtu",
            "1450",
            "type",
            "vxlan",
            "id",
            "4097",
            "dstport",
            "4790",
            "nolearning",
        ],
        vec!["link", "set", device, "up"],
        vec![
            "neighbour",
            "add",
            &gateway_text,
            "lladdr",
            &mac,
            "dev",
            device,
            "nud",
            "permanent",
        ],
        vec![
            "route",
            "add",
            "default",
            "via",
            &gateway_text,
            "dev",
            device,
            "onlink",
            "table",
            "250",
        ],
        vec![
            "rule",
            "add",
            "from",
            &client_text,
            "lookup",
            "250",
            "priority",
            "100",
        ],
    ] {
        let mut arguments = vec!["-n", node.as_str()];
        arguments.extend(command);
        support::run_checked("ip", &arguments)?;
    }
    support::run_checked(
        "bridge",
        &[
            "-netns",
            &node,
            "fdb",
            "append",
            &mac,
            "dev",
            device,
            "dst",
            &gateway_text,
        ],
    )?;

    // What the partner's UDP server saw: one line a datagram, `udp 7000 from ADDRESS:PORT`.
    let served = lab.paths().log_file("host-partner").with_extension("served");
    let sources = || -> Vec<String> {
        std::fs::read_to_string(&served)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.strip_prefix("udp 7000 from "))
            .filter_map(|peer| peer.rsplit_once(':').map(|(address, _)| address.to_string()))
            .collect()
    };
    let send = |lab: &Lab| {
        lab.connect(
            &client_netns,
            ServiceProtocol::Udp,
            partner,
            7000,
            Duration::from_millis(300),
        )
    };
    for _ in 0..3 {
        send(lab);
    }
    let through = sources();
    if through.is_empty() || through.iter().any(|source| *source != gateway_text) {
        return Err(format!(
            "through the gateway on node-2 the partner saw {through:?}, expected only {gateway}"
        ));
    }

    // The gateway's link down: nothing gets out, with any source.
    sluice_lab::pod_link_down(&lab.environment, &lab.name, "egress/gateway")?;
    for _ in 0..3 {
        send(lab);
    }
    let after = sources();
    if after.len() != through.len() {
        return Err(format!(
            "with the gateway's link down the partner saw {:?}",
            &after[through.len()..]
        ));
    }
    if seen(lab).result == ConnectResult::Connected {
        return Err("a TCP connection got through with the gateway's link down".into());
    }
    Ok(())
}
