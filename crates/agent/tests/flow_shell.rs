//! The flow-log shell with the kernel's readers replaced by channels and a table: a logged first
//! packet naming a rule's hit id and the connection's conntrack entry (read by dumps alone, its
//! end a closed TCP state; or with Destroy events) become one record, in the node's file and
//! served over the agent's Unix socket, with the deciding policy, the staged "what if" from a
//! staged policy in the same resources, and conntrack's byte counts.

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
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

/// The conntrack table as the test sets it: what each dump lists.
#[derive(Clone, Default)]
struct Table(Arc<Mutex<Vec<ConntrackEvent>>>);

impl ConntrackDump for Table {
    fn dump(&mut self) -> Result<Vec<ConntrackEvent>, String> {
        Ok(self.0.lock().unwrap().clone())
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
fn a_logged_connection_read_by_dumps_becomes_a_record_in_the_file_and_on_the_socket() {
    logged_connection_becomes_a_record(false);
}

#[test]
fn a_logged_connection_with_conntrack_events_becomes_a_record_in_the_file_and_on_the_socket() {
    logged_connection_becomes_a_record(true);
}

fn logged_connection_becomes_a_record(conntrack_events: bool) {
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
        dump_interval: Duration::from_secs(1),
        conntrack_events,
    };
    let table = Table::default();
    let metrics = Metrics::new();
    let shell = FlowShell::start(
        "node-1",
        &flags,
        Channel(log_receiver),
        conntrack_events.then(|| Box::new(Channel(event_receiver)) as Box<dyn ConntrackSource>),
        table.clone(),
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
    let entry = |kind, closed| ConntrackEvent {
        at: now(),
        kind,
        id: 7,
        original: tuple,
        reply,
        original_counters: Some(Counters {
            packets: 10,
            bytes: 1_000,
        }),
        reply_counters: Some(Counters {
            packets: 8,
            bytes: 6_000,
        }),
        closed,
        mark: 0,
    };
    // In the table before the first packet is read, as in the kernel (a dump may come between).
    *table.0.lock().unwrap() = vec![entry(ConntrackEventKind::Update, false)];
    log_sender
        .send(LoggedPacket {
            at: now(),
            hit: Some(allow.id()),
            tuple,
            length: 60,
            icmp: None,
            tcp_sequence: Some(1),
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    if conntrack_events {
        table.0.lock().unwrap().clear();
        event_sender
            .send(entry(ConntrackEventKind::Destroy, false))
            .unwrap();
    } else {
        // Closed: TIME_WAIT, listed until it times out.
        *table.0.lock().unwrap() = vec![entry(ConntrackEventKind::Update, true)];
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
