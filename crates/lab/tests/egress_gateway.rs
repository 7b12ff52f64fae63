//! Egress gateway pods in a lab (root; skipped otherwise). A pod with `egressGateway` runs
//! `sluice gateway` in its namespace: it takes its address from the pool its annotation names
//! (a Manual pool meant for gateways), is stored with the named port `health` (TCP 8080), and
//! answers `/readiness` from its node's namespace once its ICMP probe of an outside host
//! succeeds. The library finds its process (a test SIGKILLs it) and takes a pod's link down;
//! `lab down` leaves no gateway running.
//!
//! A second test runs the whole thing on real packets: clients on two nodes leave through
//! gateway pods, chosen by namespace and pod annotations (the pod's win), `maxNextHops`, and
//! EgressGatewayPolicies (a CIDR that bypasses the gateways, another gateway set,
//! `PreferNodeLocal`, a policy that does not exist, which drops); `lab probe --against-explain`
//! checks every flow's verdict and the source the outside saw against the plan each node's
//! agent published; then a gateway is killed (its clients move to the other) and the last one's
//! link goes down (its clients find no route, and the outside sees nothing of them).
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_agent::gateway::record::EgressRecord;
use sluice_api::Resource;
use sluice_lab::{ConnectResult, ProbeOptions, ServiceProtocol};
use support::{HeldConnection, Lab, Test};

const TESTS: [(&str, Test); 3] = [
    (
        "connections_stay_on_their_gateway_while_another_drains_and_returns",
        pinned_connections,
    ),
    (
        "gateway_pods_run_sluice_gateway_answer_readiness_from_their_node_and_stop_with_the_lab",
        gateway_pods,
    ),
    (
        "clients_leave_through_their_gateways_fail_over_and_never_leak",
        egress_gateways,
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

const SELECT: &str = "egress.projectcalico.org/namespaceSelector: \"projectcalico.org/name == 'egress'\"";

fn manifests() -> String {
    format!(
        r#"
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {{name: default}}
spec: {{egressIPSupport: EnabledPerNamespaceOrPerPod}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: 10.71.0.0/16, natOutgoing: true}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: gateways}}
spec: {{cidr: 10.72.0.0/24, blockSize: 28, assignmentMode: Manual}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: egress}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: apps
  annotations:
    egress.projectcalico.org/selector: "color == 'red'"
    {SELECT}
---
apiVersion: v1
kind: Namespace
metadata:
  name: split
  annotations: {{egress.projectcalico.org/egressGatewayPolicy: split}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: local
  annotations: {{egress.projectcalico.org/egressGatewayPolicy: local}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: missing
  annotations: {{egress.projectcalico.org/egressGatewayPolicy: does-not-exist}}
---
apiVersion: projectcalico.org/v3
kind: EgressGatewayPolicy
metadata: {{name: split}}
spec:
  rules:
  - destination: {{cidr: 198.51.100.20/32}}
    description: the bypass host goes the normal way
  - gateway:
      selector: "color == 'blue'"
      namespaceSelector: "projectcalico.org/name == 'egress'"
---
apiVersion: projectcalico.org/v3
kind: EgressGatewayPolicy
metadata: {{name: local}}
spec:
  rules:
  - gateway:
      selector: "color == 'red'"
      namespaceSelector: "projectcalico.org/name == 'egress'"
    gatewayPreference: PreferNodeLocal
"#
    )
}

const GATEWAY_POOL: &str = "cni.projectcalico.org/ipv4pools: '[\"gateways\"]'";

fn lab_file() -> String {
    format!(
        r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
  - name: node-2
outside:
  - {{name: partner, address: 203.0.113.10, tcp: [443]}}
  - {{name: bypass, address: 198.51.100.20, tcp: [443]}}
manifests: [manifests/]
pods:
  - {{namespace: egress, name: red-1, node: node-1, labels: {{color: red}}, annotations: {{{GATEWAY_POOL}}}, egressGateway: {{}}}}
  - {{namespace: egress, name: red-2, node: node-2, labels: {{color: red}}, annotations: {{{GATEWAY_POOL}}}, egressGateway: {{}}}}
  - {{namespace: egress, name: blue-1, node: node-2, labels: {{color: blue}}, annotations: {{{GATEWAY_POOL}}}, egressGateway: {{}}}}
  - {{namespace: apps, name: client, node: node-1}}
  - {{namespace: apps, name: special, node: node-1, annotations: {{egress.projectcalico.org/selector: "color == 'blue'", {SELECT}}}}}
  - {{namespace: apps, name: single, node: node-2, annotations: {{egress.projectcalico.org/selector: "color == 'red'", {SELECT}, egress.projectcalico.org/maxNextHops: "1"}}}}
  - {{namespace: split, name: client, node: node-1}}
  - {{namespace: local, name: client, node: node-2}}
  - {{namespace: missing, name: client, node: node-1}}
"#
    )
}

/// Every node's published egress record.
fn records(lab: &Lab) -> Vec<EgressRecord> {
    lab.store()
        .map(|store| sluice_lab::egress::read_records(store.as_ref()))
        .unwrap_or_default()
}

/// The gateways (`namespace/name`) a client's default route uses in its node's record, and
/// whether all of them are ready there.
fn gateways_of(records: &[EgressRecord], client: &str) -> (Vec<String>, bool) {
    for record in records {
        if let Some(found) = record.clients.iter().find(|candidate| candidate.client == client) {
            let gateways: Vec<String> = found
                .routes
                .iter()
                .filter(|route| route.destination == "0.0.0.0/0")
                .flat_map(|route| route.gateways.clone())
                .collect();
            let ready = gateways.iter().all(|gateway| {
                record
                    .gateways
                    .iter()
                    .any(|known| &known.gateway == gateway && known.health == "ready")
            });
            return (gateways, ready);
        }
    }
    (Vec::new(), false)
}

fn egress_gateways() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: the lab needs root");
        return Ok(());
    }
    let lab = Lab::up("eg", &lab_file(), &[("egress.yaml", manifests())])?;
    let address = |pod: &str| lab.pod_address(pod);
    let red: BTreeSet<IpAddr> = [address("egress/red-1")?, address("egress/red-2")?].into();
    let blue = address("egress/blue-1")?;
    let node_1 = IpAddr::V4(lab.state()?.node("node-1").ok_or("no node-1")?.address);

    // Every client's gateways probed ready on its node (a new gateway is not ready until it
    // answers, so until then the clients are unreachable, never the normal way).
    let settled = support::wait_until(Duration::from_secs(20), || {
        let records = records(&lab);
        [
            "apps/client",
            "apps/special",
            "apps/single",
            "split/client",
            "local/client",
        ]
        .iter()
        .all(|client| {
            let (gateways, ready) = gateways_of(&records, client);
            !gateways.is_empty() && ready
        })
    });
    if !settled {
        return Err(format!(
            "the clients' gateways never became ready: {:#?}\n{}",
            records(&lab),
            lab.agent_log("node-1")
        ));
    }
    let records = records(&lab);
    let names = |client: &str| gateways_of(&records, client).0;
    // Namespace annotations: both red gateways; the pod's own annotation wins; maxNextHops 1;
    // PreferNodeLocal takes only the red gateway on the client's node.
    check(names("apps/client") == ["egress/red-1", "egress/red-2"], || {
        format!("apps/client: {:?}", names("apps/client"))
    })?;
    check(names("apps/special") == ["egress/blue-1"], || {
        format!("apps/special: {:?}", names("apps/special"))
    })?;
    check(names("apps/single").len() == 1, || {
        format!("apps/single: {:?}", names("apps/single"))
    })?;
    check(names("local/client") == ["egress/red-2"], || {
        format!("local/client: {:?}", names("local/client"))
    })?;

    let report = sluice_lab::probe(
        &lab.environment,
        &lab.name,
        &ProbeOptions {
            against_explain: true,
            services: vec![(ServiceProtocol::Tcp, 443)],
            ..Default::default()
        },
    )?;
    let problems = support::disagreements(&report);
    if !problems.is_empty() {
        return Err(format!(
            "{} disagreement(s):\n{}\nthe agents' egress records: {}",
            problems.len(),
            problems.join("\n"),
            serde_json::to_string_pretty(&records).unwrap_or_default()
        ));
    }
    let seen = |from: &str, to: &str| {
        report
            .rows
            .iter()
            .find(|row| row.from == from && row.to == to && row.domain.is_none())
            .map(|row| (row.outcome.result, row.outcome.seen))
    };
    let through_red = seen("apps/client", "partner");
    check(
        matches!(through_red, Some((ConnectResult::Connected, Some(source))) if red.contains(&source)),
        || format!("apps/client -> partner: {through_red:?}, red gateways {red:?}"),
    )?;
    check(
        seen("apps/special", "partner") == Some((ConnectResult::Connected, Some(blue))),
        || format!("apps/special -> partner: {:?}", seen("apps/special", "partner")),
    )?;
    check(
        seen("split/client", "partner") == Some((ConnectResult::Connected, Some(blue))),
        || format!("split/client -> partner: {:?}", seen("split/client", "partner")),
    )?;
    // The policy's bypass rule: the normal way, so the pool's NAT gives the node's address.
    check(
        seen("split/client", "bypass") == Some((ConnectResult::Connected, Some(node_1))),
        || format!("split/client -> bypass: {:?}", seen("split/client", "bypass")),
    )?;
    let missing = seen("missing/client", "partner");
    check(
        matches!(missing, Some((result, None)) if result != ConnectResult::Connected),
        || format!("a client naming a missing policy must be dropped: {missing:?}"),
    )?;

    // Failover: the gateway process killed (its namespace keeps forwarding until the agents
    // see the health port gone), then the other gateway's link down: nothing left.
    let client = lab.netns("apps/client")?;
    let partner = IpAddr::V4("203.0.113.10".parse().expect("an address"));
    let red_1 = sluice_lab::gateway_pid(&lab.environment, &lab.name, "egress/red-1")?
        .ok_or("red-1 is not running")?;
    support::run_checked("kill", &["-KILL", &red_1.to_string()])?;
    let failed_over = support::wait_until(Duration::from_secs(10), || {
        gateways_of(&self::records(&lab), "apps/client").0 == ["egress/red-2"]
    });
    check(failed_over, || {
        format!("apps/client never left red-1: {:#?}", self::records(&lab))
    })?;
    let red_2 = address("egress/red-2")?;
    for attempt in 0..5 {
        let outcome = lab.connect(
            &client,
            ServiceProtocol::Tcp,
            partner,
            443,
            Duration::from_secs(1),
        );
        check(
            outcome.result == ConnectResult::Connected && outcome.seen == Some(red_2),
            || format!("attempt {attempt} after red-1 died: {outcome:?}"),
        )?;
    }
    sluice_lab::pod_link_down(&lab.environment, &lab.name, "egress/red-2")?;
    let none_left = support::wait_until(Duration::from_secs(10), || {
        let records = self::records(&lab);
        records.iter().any(|record| {
            record.clients.iter().any(|found| {
                found.client == "apps/client"
                    && found.routes.iter().any(|route| route.action == "unreachable")
            })
        })
    });
    check(none_left, || {
        format!("apps/client never became unreachable: {:#?}", self::records(&lab))
    })?;
    for attempt in 0..5 {
        let outcome = lab.connect(
            &client,
            ServiceProtocol::Tcp,
            partner,
            443,
            Duration::from_secs(1),
        );
        check(
            outcome.result != ConnectResult::Connected && outcome.seen.is_none(),
            || format!("attempt {attempt} with every gateway down reached the outside: {outcome:?}"),
        )?;
    }
    lab.finish()
}

fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(message()) }
}

const PIN_LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
  - name: node-2
outside:
  - {name: partner, address: 203.0.113.10, tcp: [443]}
manifests: [manifests/]
pods:
  - {namespace: egress, name: g1, node: node-1, labels: {role: gateway}, annotations: {cni.projectcalico.org/ipv4pools: '["gateways"]'}, egressGateway: {}}
  - {namespace: egress, name: g2, node: node-2, labels: {role: gateway}, annotations: {cni.projectcalico.org/ipv4pools: '["gateways"]'}, egressGateway: {}}
  - {namespace: egress, name: g3, node: node-2, labels: {role: gateway}, annotations: {cni.projectcalico.org/ipv4pools: '["gateways"]'}, egressGateway: {}}
  - {namespace: apps, name: client, node: node-1}
"#;

const HOLD_PORT: &str = "7000";

/// Several long-lived connections spread over three gateways; then one gateway drains (its pod
/// gets a deletionTimestamp) and comes back. The kernel's ECMP re-hashes flows whenever the
/// set changes, so without pins some of these connections would move to a gateway with no
/// state for them and be reset; with pins every one lives on, and while draining no new
/// connection takes the draining gateway.
fn pinned_connections() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: the lab needs root");
        return Ok(());
    }
    let lab = Lab::up(
        "ep",
        PIN_LAB,
        &[(
            "egress.yaml",
            support::egress_manifests("10.77.0.0/16", "10.78.0.0/24", &["apps"], &[]),
        )],
    )?;
    let outcome = pinned(&lab);
    let finished = lab.finish();
    outcome?;
    finished
}

fn spread_over(lab: &Lab, count: usize) -> bool {
    let records = records(lab);
    records.iter().any(|record| {
        record.clients.iter().any(|client| {
            client.client == "apps/client" && client.routes.iter().any(|route| route.gateways.len() == count)
        }) && record.gateways.iter().all(|gateway| gateway.health == "ready")
    })
}

fn pinned(lab: &Lab) -> Result<(), String> {
    check(
        support::wait_until(Duration::from_secs(20), || spread_over(lab, 3)),
        || format!("the client never spread over three gateways: {:#?}", records(lab)),
    )?;
    let mut server = lab.spawn_in(
        &lab.netns("partner")?,
        &["support", "hold-server", "--port", HOLD_PORT],
    )?;
    server.first_line()?;
    let client = lab.netns("apps/client")?;
    let partner: IpAddr = "203.0.113.10".parse().expect("an address");
    let mut held = Vec::new();
    for _ in 0..9 {
        let spawned = lab.spawn_in(
            &client,
            &[
                "support",
                "hold-client",
                "--to",
                "203.0.113.10",
                "--port",
                HOLD_PORT,
            ],
        )?;
        held.push(HeldConnection::follow(spawned));
    }
    for connection in &held {
        connection.wait_beyond(2, Duration::from_secs(5))?;
    }
    let g3 = lab.pod_address("egress/g3")?;

    // g3 drains: it keeps its connections, new ones spread over g1 and g2 only.
    set_deleting(lab, "egress", "g3", true)?;
    let draining = || {
        records(lab).iter().any(|record| {
            record.node == "node-1"
                && record
                    .gateways
                    .iter()
                    .any(|gateway| gateway.gateway == "egress/g3" && gateway.health == "draining")
        })
    };
    check(support::wait_until(Duration::from_secs(10), draining), || {
        format!("g3 never drained: {:#?}", records(lab))
    })?;
    for attempt in 0..20 {
        let outcome = lab.connect(
            &client,
            ServiceProtocol::Tcp,
            partner,
            443,
            Duration::from_secs(1),
        );
        check(
            outcome.result == ConnectResult::Connected && outcome.seen != Some(g3),
            || format!("new connection {attempt} while g3 drains: {outcome:?}"),
        )?;
    }
    all_alive(&held, "while g3 drains")?;
    // g3 is back: the spread grows again, and no connection moves.
    set_deleting(lab, "egress", "g3", false)?;
    check(
        support::wait_until(Duration::from_secs(10), || spread_over(lab, 3)),
        || format!("g3 never came back: {:#?}", records(lab)),
    )?;
    all_alive(&held, "after g3 came back")
}

/// Every held connection still echoes, well after the change.
fn all_alive(held: &[HeldConnection], when: &str) -> Result<(), String> {
    for (index, connection) in held.iter().enumerate() {
        let echoes = connection.echoes();
        connection
            .wait_beyond(echoes + 3, Duration::from_secs(3))
            .map_err(|error| format!("long-lived connection {index} {when}: {error}"))?;
    }
    Ok(())
}

/// Sets or clears a stored Pod's deletionTimestamp, as Kubernetes does when a pod is deleted.
fn set_deleting(lab: &Lab, namespace: &str, name: &str, deleting: bool) -> Result<(), String> {
    let store = lab.store()?;
    let key = sluice_api::resource::key(sluice_api::Kind::Pod, Some(namespace), name);
    let value = store
        .get(&key)
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("no Pod {namespace}/{name} stored"))?;
    let Resource::Pod(mut pod) = Resource::decode(&value.value, value.modify_revision)? else {
        return Err(format!("{key} is not a Pod"));
    };
    pod.metadata.deletion_timestamp = deleting.then(|| serde_json::Value::from("2026-12-05T12:00:00Z"));
    let write = [sluice_store::Operation::Put {
        key,
        value: Resource::Pod(pod).encode(),
        condition: sluice_store::Condition::Any,
    }];
    store
        .commit(&write)
        .map(|_| ())
        .map_err(|error| error.to_string())
}
