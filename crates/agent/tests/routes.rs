//! The agent's routes: addresses assigned by IPAM on other nodes are routed through those
//! nodes' InternalIPs, the node's own blocks are blackholed, changes follow through the watch,
//! and a route the kernel refuses is reported in the status and the metrics.

mod support;

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use sluice_agent::{Agent, AgentConfig, Metrics};
use sluice_dataplane::routes::{FakeRoutes, KernelRoute, Route, RouteBackend, RouteError};
use sluice_ipam::{AssignRequest, Ipam};
use sluice_nft::FakeBackend;
use sluice_store::{EmbeddedStore, Store};
use support::{load, put_all, status, wait_for};

/// A fake routing table shared with the test.
#[derive(Clone, Default)]
struct SharedRoutes(Arc<Mutex<FakeRoutes>>);

impl RouteBackend for SharedRoutes {
    fn list(&mut self) -> Result<Vec<KernelRoute>, RouteError> {
        self.0.lock().unwrap().list()
    }

    fn add(&mut self, route: &Route) -> Result<bool, RouteError> {
        self.0.lock().unwrap().add(route)
    }

    fn replace(&mut self, route: &Route) -> Result<(), RouteError> {
        self.0.lock().unwrap().replace(route)
    }

    fn delete(&mut self, route: &Route) -> Result<(), RouteError> {
        self.0.lock().unwrap().delete(route)
    }
}

impl SharedRoutes {
    fn routes(&self) -> Vec<String> {
        let mut routes: Vec<String> = self
            .0
            .lock()
            .unwrap()
            .routes
            .iter()
            .map(|kernel| kernel.route.to_string())
            .collect();
        routes.sort();
        routes
    }
}

fn node(name: &str, address: Option<&str>) -> String {
    let status = address
        .map(|address| format!("status: {{addresses: [{{type: InternalIP, address: {address}}}]}}"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n{status}\n---\n")
}

/// The value of `sluice_agent_route_errors_total`.
fn route_errors(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix("sluice_agent_route_errors_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the metric is exported")
}

fn assign(ipam: &Ipam, node: &str, pod: &str) -> (IpAddr, IpNet) {
    let allocation = ipam
        .assign(&AssignRequest {
            handle: format!("container-{pod}.eth0"),
            node: node.into(),
            namespace: "default".into(),
            pod: pod.into(),
            ..AssignRequest::default()
        })
        .unwrap()
        .remove(0);
    (allocation.address, allocation.block)
}

#[test]
fn other_nodes_blocks_are_routed_through_them_and_changes_follow() {
    let directory = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory.path().join("store.db")).unwrap());
    let manifests = format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pods}}\nspec: {{cidr: 10.60.0.0/16, blockSize: 26}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: default}}\n---\n{}{}{}",
        node("node-1", Some("100.64.0.10")),
        node("node-2", Some("100.64.0.11")),
        node("node-3", None),
    );
    put_all(store.as_ref(), load(&manifests));
    let ipam = Ipam::new(store.clone());
    let (_, own_block) = assign(&ipam, "node-1", "a");
    let (_, remote_block) = assign(&ipam, "node-2", "b");

    let routes = SharedRoutes::default();
    let metrics = Metrics::new();
    let mut config = AgentConfig::new("node-1");
    config.resync_interval = Duration::from_secs(3600);
    config.route_refresh_interval = Duration::from_secs(1);
    let agent = Agent::new(config, store.clone(), FakeBackend::default(), metrics.clone())
        .with_routes(Box::new(routes.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        let mut agent = agent;
        std::thread::spawn(move || agent.run_until(&stop))
    };

    let expected = vec![
        format!("{remote_block} via 100.64.0.11"),
        format!("blackhole {own_block}"),
    ];
    wait_for("routes for both blocks", || routes.routes() == expected);
    wait_for("the status", || {
        status(store.as_ref(), "node-1").is_some_and(|status| status.in_sync && status.routes == 2)
    });

    // Another address from node-1's own block moves no route: the agent is not even woken
    // (it would rewrite its status).
    let status_revision = || {
        store
            .get(&sluice_agent::status_key("node-1"))
            .unwrap()
            .unwrap()
            .modify_revision
    };
    let before = status_revision();
    let (_, same_block) = assign(&ipam, "node-1", "a2");
    assert_eq!(same_block, own_block);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        status_revision(),
        before,
        "an allocation in the node's own block woke the agent"
    );
    // While a change that matters does wake it: the quiet above was not a stalled agent.
    put_all(store.as_ref(), load(&node("node-4", Some("100.64.0.14"))));
    wait_for("the agent to take a Node change", || status_revision() != before);

    // node-3 has no address: its block cannot be routed, which is logged, not an error.
    let (_, unroutable_block) = assign(&ipam, "node-3", "c");
    let block_written = store
        .get(&sluice_ipam::layout::block_key(unroutable_block))
        .unwrap()
        .unwrap()
        .modify_revision;
    wait_for("the agent to see node-3's block", || {
        status(store.as_ref(), "node-1")
            .is_some_and(|status| status.in_sync && status.programmed_revision >= block_written)
    });
    assert!(
        !routes
            .routes()
            .iter()
            .any(|route| route.contains(&unroutable_block.to_string()))
    );

    // node-2 moves to another address; node-3 gets one.
    put_all(
        store.as_ref(),
        load(&format!(
            "{}{}",
            node("node-2", Some("100.64.0.21")),
            node("node-3", Some("100.64.0.12"))
        )),
    );
    let mut expected = vec![
        format!("{remote_block} via 100.64.0.21"),
        format!("{unroutable_block} via 100.64.0.12"),
        format!("blackhole {own_block}"),
    ];
    expected.sort();
    wait_for("routes through the new addresses", || routes.routes() == expected);

    // A route the kernel refuses: the others stay, the status and the metrics say so, and
    // the node's policy stays in sync and healthy.
    routes.0.lock().unwrap().unreachable.insert(remote_block);
    put_all(store.as_ref(), load(&node("node-2", Some("100.64.0.31"))));
    wait_for("the refused route in the status", || {
        status(store.as_ref(), "node-1").is_some_and(|status| status.route_error.is_some())
    });
    let refused = status(store.as_ref(), "node-1").unwrap();
    assert!(refused.in_sync, "{refused:?}");
    assert!(
        refused
            .route_error
            .unwrap()
            .contains(&format!("{remote_block} via 100.64.0.31"))
    );
    assert!(metrics.is_healthy());
    assert!(route_errors(&metrics) >= 1);
    assert!(
        routes
            .routes()
            .contains(&format!("{unroutable_block} via 100.64.0.12"))
    );

    // It is retried, with backoff, until the kernel takes it.
    routes.0.lock().unwrap().unreachable.clear();
    wait_for("recovery", || {
        status(store.as_ref(), "node-1").is_some_and(|status| status.route_error.is_none())
    });
    assert!(
        routes
            .routes()
            .contains(&format!("{remote_block} via 100.64.0.31"))
    );

    // A route removed behind the agent's back comes back at the next refresh (1 s here).
    let removed = format!("{remote_block} via 100.64.0.31");
    routes
        .0
        .lock()
        .unwrap()
        .routes
        .retain(|kernel| kernel.route.to_string() != removed);
    wait_for("the refresh", || routes.routes().contains(&removed));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
}
