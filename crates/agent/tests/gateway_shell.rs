//! The egress gateway shell without root: a fake kernel (`FakeRouting`), a real store file, and
//! real probes of a gateway whose `health` port is a server on loopback. A gateway is used only
//! once it answered; when it stops answering it leaves the client's table (unreachable, never
//! the normal way) after the configured failures; the record and the metrics say so.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_agent::Metrics;
use sluice_agent::gateway::record::{EGRESS_PREFIX, EgressRecord};
use sluice_agent::gateway::{GatewayShell, GatewayUpdate, PinWriter};
use sluice_gateway::Inputs;
use sluice_gateway::routing::{FakeRouting, Pin};
use sluice_store::{EmbeddedStore, Store};

/// A `/readiness` server on loopback that answers 200 while `up` is set (and closes the
/// connection unanswered otherwise).
fn health_server(up: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0_u8; 512];
            let _ = stream.read(&mut request);
            if up.load(Ordering::Relaxed) {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        }
    });
    port
}

fn resources(port: u16) -> sluice_api::ResourceSet {
    let text = format!(
        r#"apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {{name: default}}
spec: {{egressIPSupport: EnabledPerNamespace, egressGatewayPollInterval: 50ms, egressGatewayPollFailureCount: 2}}
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
    egress.projectcalico.org/selector: "role == 'gateway'"
    egress.projectcalico.org/namespaceSelector: "projectcalico.org/name == 'egress'"
---
apiVersion: v1
kind: Pod
metadata: {{name: gateway, namespace: egress, labels: {{role: gateway}}}}
spec:
  nodeName: node-2
  containers:
  - name: gateway
    ports: [{{name: health, containerPort: {port}}}]
status: {{podIP: 127.0.0.1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: apps}}
spec: {{nodeName: node-1}}
status: {{podIP: 10.0.1.5}}
"#
    );
    sluice_api::load_str("cluster.yaml", &text).unwrap_or_else(|errors| panic!("{errors}"))
}

/// The pins the shell wrote last.
#[derive(Debug, Clone, Default)]
struct RecordedPins(Arc<Mutex<Vec<Pin>>>);

impl PinWriter for RecordedPins {
    fn write(&mut self, pins: &[Pin]) -> Result<(), String> {
        *self.0.lock().unwrap() = pins.to_vec();
        Ok(())
    }
}

fn record(store: &dyn Store) -> Option<EgressRecord> {
    let (values, _) = store.list(EGRESS_PREFIX).unwrap();
    values
        .first()
        .map(|value| serde_json::from_slice(&value.value).unwrap())
}

/// The client's default route in the latest record: its action and gateways.
fn default_route(store: &dyn Store) -> Option<(String, Vec<String>)> {
    let record = record(store)?;
    let client = record
        .clients
        .iter()
        .find(|client| client.client == "apps/client")?;
    let route = client
        .routes
        .iter()
        .find(|route| route.destination == "0.0.0.0/0")?;
    Some((route.action.clone(), route.gateways.clone()))
}

fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_gateway_is_used_once_it_answers_and_dropped_when_it_stops() {
    let directory = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory.path().join("store.db")).unwrap());
    let metrics = Metrics::new();
    let up = Arc::new(AtomicBool::new(true));
    let port = health_server(up.clone());
    let set = resources(port);
    let pins = RecordedPins::default();
    let mut shell = GatewayShell::start(
        "node-1",
        FakeRouting::default(),
        pins.clone(),
        store.clone(),
        metrics.clone(),
        1450,
    );
    shell.update(GatewayUpdate::new(Inputs::from_resources(&set), &set, 7));

    wait_for(
        "the gateway to be probed ready and used",
        Duration::from_secs(10),
        || default_route(store.as_ref()) == Some(("gateways".into(), vec!["egress/gateway".into()])),
    );
    let published = record(store.as_ref()).unwrap();
    assert_eq!(published.revision, 7);
    assert_eq!(published.gateways[0].health, "ready");
    assert!(published.gateways[0].probe_milliseconds.is_some());
    let pinned: Vec<String> = pins
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|pin| format!("{}#{}", pin.gateway, pin.index))
        .collect();
    assert_eq!(pinned, vec!["127.0.0.1#1"], "the gateway in use is pinned");
    let text = metrics.render();
    assert!(text.contains("sluice_agent_egress_gateways_ready 1"), "{text}");
    assert!(text.contains("sluice_agent_egress_gateway_clients 1"), "{text}");

    // It stops answering: out after two failed polls, and the client has no gateway left.
    up.store(false, Ordering::Relaxed);
    wait_for(
        "the client to become unreachable",
        Duration::from_secs(10),
        || default_route(store.as_ref()).is_some_and(|(action, _)| action == "unreachable"),
    );
    let published = record(store.as_ref()).unwrap();
    assert_eq!(published.gateways[0].health, "not-ready");
    assert!(published.gateways[0].last_error.is_some());
    let text = metrics.render();
    assert!(
        text.contains("sluice_agent_egress_gateway_failovers_total 1"),
        "{text}"
    );
    assert!(
        text.contains("sluice_agent_egress_gateways_not_ready 1"),
        "{text}"
    );

    // Back: used again.
    up.store(true, Ordering::Relaxed);
    wait_for("the gateway to be used again", Duration::from_secs(10), || {
        default_route(store.as_ref()).is_some_and(|(action, _)| action == "gateways")
    });
    shell.shutdown();
}
