//! The flow-log shell with the kernel's readers replaced by channels: a logged first packet
//! naming a rule's hit id and conntrack's events for the connection become one record, in the
//! node's file and served over the agent's Unix socket, with the deciding policy, the staged
//! "what if" from a staged policy in the same resources, and conntrack's byte counts.

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use sluice_agent::Metrics;
use sluice_agent::flows::client;
use sluice_agent::flows::now;
use sluice_agent::flows::{ConntrackDump, ConntrackSource, FlowLogFlags, FlowShell, LogSource};
use sluice_api::values::{Action, PolicyType};
use sluice_flowlog::events::{ConntrackEvent, ConntrackEventKind, Counters, LoggedPacket, Tuple};
use sluice_policy::PolicyHit;

struct Channel<T>(Receiver<T>);

impl LogSource for Channel<LoggedPacket> {
    fn read(&mut self) -> Result<Vec<LoggedPacket>, String> {
        Ok(self
            .0
            .recv_timeout(Duration::from_millis(100))
            .into_iter()
            .collect())
    }
}

impl ConntrackSource for Channel<ConntrackEvent> {
    fn read(&mut self) -> Result<Vec<ConntrackEvent>, String> {
        Ok(self
            .0
            .recv_timeout(Duration::from_millis(100))
            .into_iter()
            .collect())
    }
}

struct NoLiveConnections;

impl ConntrackDump for NoLiveConnections {
    fn dump(&mut self) -> Result<Vec<ConntrackEvent>, String> {
        Ok(Vec::new())
    }
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1}
status: {podIP: 10.10.0.10}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-egress, namespace: prod}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {nets: [198.51.100.0/24], ports: [443]}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: web-egress, namespace: prod}
spec:
  stagedAction: Delete
"#;

fn address(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn a_logged_connection_becomes_a_record_in_the_file_and_on_the_socket() {
    let directory = tempfile::tempdir().unwrap();
    let resources = sluice_api::load_str("cluster.yaml", MANIFESTS).unwrap();
    let dataplane = sluice_policy::compile(&resources);
    let (log_sender, log_receiver): (Sender<LoggedPacket>, _) = channel();
    let (event_sender, event_receiver): (Sender<ConntrackEvent>, _) = channel();
    let flags = FlowLogFlags {
        file: directory.path().join("log/flows.log"),
        interval: Duration::from_secs(1),
        socket: Some(directory.path().join("flows.sock")),
        address: None,
        group: 20,
        deny_rate: 100,
    };
    let metrics = Metrics::new();
    let shell = FlowShell::start(
        "node-1",
        &flags,
        Channel(log_receiver),
        Channel(event_receiver),
        NoLiveConnections,
        metrics.clone(),
    )
    .unwrap();
    shell.update(&dataplane, &resources);
    let endpoint = shell.endpoints()[0].clone();
    assert!(endpoint.starts_with("unix:"), "{endpoint}");

    let allow = PolicyHit::rule(
        &dataplane.policies[0].reference,
        PolicyType::Egress,
        0,
        Action::Allow,
    );
    let tuple = Tuple {
        source: address("10.10.0.10"),
        destination: address("198.51.100.7"),
        protocol: 6,
        source_port: 40_000,
        destination_port: 443,
    };
    let reply = Tuple {
        source: tuple.destination,
        destination: tuple.source,
        source_port: 443,
        destination_port: 40_000,
        ..tuple
    };
    log_sender
        .send(LoggedPacket {
            at: now(),
            hit: Some(allow.id()),
            tuple,
            length: 60,
            icmp: None,
        })
        .unwrap();
    for kind in [ConntrackEventKind::New, ConntrackEventKind::Destroy] {
        let counters =
            |packets, bytes| (kind == ConntrackEventKind::Destroy).then_some(Counters { packets, bytes });
        event_sender
            .send(ConntrackEvent {
                at: now(),
                kind,
                id: 7,
                original: tuple,
                reply,
                original_counters: counters(10, 1_000),
                reply_counters: counters(8, 6_000),
            })
            .unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        let text = client::get(&endpoint, "/flows", Duration::from_secs(5))
            .unwrap()
            .text()
            .unwrap();
        if !text.is_empty() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let record: serde_json::Value = serde_json::from_str(served.lines().next().expect("a record")).unwrap();
    assert_eq!(record["source_namespace"], "prod");
    assert_eq!(record["source_name"], "web");
    assert_eq!(record["dest_type"], "net");
    assert_eq!(record["dest_ip"], "198.51.100.7");
    assert_eq!(record["dest_port"], 443);
    assert_eq!(record["reporter"], "src");
    assert_eq!(record["action"], "allow");
    assert_eq!(record["policies"], serde_json::json!([allow.text()]));
    // The staged Delete takes web-egress away: the profile would allow (no policy left).
    assert_eq!(
        record["pending_policies"],
        serde_json::json!(["__PROFILE__|Profile|kns.prod|0|allow"])
    );
    assert_eq!(record["bytes_out"], 1_000);
    assert_eq!(record["bytes_in"], 6_000);
    assert_eq!(record["packets_out"], 10);
    assert_eq!(record["num_flows_started"], 1);
    assert_eq!(record["num_flows_completed"], 1);

    // The same line is in the node's file, synced.
    let file = std::fs::read_to_string(&flags.file).unwrap();
    assert_eq!(file.lines().next(), served.lines().next());
    // And the rule's counters are in the metrics.
    let text = metrics.render();
    assert!(
        text.contains("sluice_agent_flow_policy_bytes_total{tier=\"default\",kind=\"NetworkPolicy\",policy=\"prod/web-egress\",rule=\"0\",action=\"allow\",direction=\"egress\"} 7000"),
        "{text}"
    );
    shell.stop();
    assert!(!directory.path().join("flows.sock").exists());
}
