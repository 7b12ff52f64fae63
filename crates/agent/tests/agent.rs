//! The agent against an embedded datastore and a fake kernel: it programs what is stored,
//! follows changes through the watch, and when the kernel refuses a ruleset it keeps the
//! previous one and says so in its status and metrics.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_agent::{Agent, AgentConfig, Metrics};
use sluice_api::Resource;
use sluice_nft::{Backend, FakeBackend, Family, NftError, Table, Transaction};
use sluice_store::{EmbeddedStore, Store};
use support::{examples, put_all, status, wait_for, workload_endpoints};

/// A fake kernel shared with the test, which can be told to refuse every transaction, or only
/// the operation that carries a given text.
#[derive(Clone, Default)]
struct SharedKernel {
    state: Arc<Mutex<FakeBackend>>,
    refuse: Arc<AtomicBool>,
    refuse_operation_containing: Arc<Mutex<Option<String>>>,
    attempts: Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend for SharedKernel {
    fn apply(&mut self, transaction: &Transaction) -> Result<(), NftError> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if self.refuse.load(Ordering::Relaxed) {
            return Err(NftError::Rejected(
                "Could not process rule: Message too long".into(),
            ));
        }
        let poison = self.refuse_operation_containing.lock().unwrap().clone();
        let mut state = self.state.lock().unwrap();
        let Some(poison) = poison else {
            return state.apply(transaction);
        };
        // Like the kernel: operations are applied one by one to a working copy, and the first
        // refused one discards the copy with everything before it already applied. Transactions
        // without the poisoned operation go through, so a sync that splits its changes over
        // several transactions, or tears the table down first, shows in the state.
        let mut working = state.clone();
        for operation in &transaction.operations {
            let mut single = Transaction::new(transaction.table.clone());
            single.operations.push(operation.clone());
            if single.render().contains(&poison) {
                return Err(NftError::Rejected(
                    "Could not process rule: Message too long".into(),
                ));
            }
            working.apply(&single)?;
        }
        *state = working;
        Ok(())
    }

    fn check(&mut self, transaction: &Transaction) -> Result<(), NftError> {
        self.state.lock().unwrap().check(transaction)
    }
}

impl SharedKernel {
    fn dump(&self) -> String {
        self.state
            .lock()
            .unwrap()
            .dump(&Table::new(Family::Inet, "sluice"))
    }
}

#[test]
fn the_agent_programs_follows_changes_and_survives_a_refusal() {
    let directory = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory.path().join("store.db")).unwrap());
    let examples = examples();
    let endpoints = workload_endpoints(&examples);
    put_all(store.as_ref(), examples.clone().into_resources());
    put_all(store.as_ref(), endpoints);

    let kernel = SharedKernel::default();
    let metrics = Metrics::new();
    let mut config = AgentConfig::new("node-1");
    config.resync_interval = Duration::from_secs(3600);
    let mut agent = Agent::new(config, store.clone(), kernel.clone(), metrics.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        std::thread::spawn(move || agent.run_until(&stop))
    };

    wait_for("the first sync", || {
        status(store.as_ref(), "node-1").is_some_and(|status| status.in_sync)
    });
    let first = status(store.as_ref(), "node-1").unwrap();
    // node-1 runs prod/web and staging/web in the examples.
    assert_eq!(first.local_endpoints, 2, "{first:?}");
    assert!(first.unprogrammed_endpoints.is_empty(), "{first:?}");

    // An endpoint that names a host interface is left out and reported; the rest stays.
    put_all(
        store.as_ref(),
        support::load(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: wep-host, namespace: prod}\nspec: {node: node-1, pod: web, endpoint: eth1, containerID: c99, orchestrator: k8s, interfaceName: eth0, ipNetworks: [10.10.0.99/32]}\n",
        ),
    );
    wait_for("the left-out endpoint in the status", || {
        status(store.as_ref(), "node-1").is_some_and(|status| {
            status.in_sync
                && status
                    .unprogrammed_endpoints
                    .iter()
                    .any(|endpoint| endpoint.contains("eth0 is not a pod interface"))
        })
    });
    assert_eq!(status(store.as_ref(), "node-1").unwrap().local_endpoints, 2);
    assert!(kernel.dump().contains("203.0.113.0/24"));

    // A change to a network set reaches the kernel.
    let mut partners = examples.global_network_sets[0].clone();
    partners.spec.nets.push("192.0.2.200/32".parse().unwrap());
    put_all(store.as_ref(), vec![Resource::GlobalNetworkSet(partners.clone())]);
    wait_for("the new partner address", || {
        kernel.dump().contains("192.0.2.200")
    });

    // The kernel refuses the next ruleset part way through (after the operation adding .205,
    // at the one adding .210): the previous one stays, and the status says why.
    *kernel.refuse_operation_containing.lock().unwrap() = Some("192.0.2.210".into());
    let before = kernel.dump();
    partners.spec.nets.push("192.0.2.205/32".parse().unwrap());
    partners.spec.nets.push("192.0.2.210/32".parse().unwrap());
    put_all(store.as_ref(), vec![Resource::GlobalNetworkSet(partners.clone())]);
    wait_for("the refusal in the status", || {
        status(store.as_ref(), "node-1").is_some_and(|status| !status.in_sync && status.error.is_some())
    });
    assert_eq!(kernel.dump(), before);
    assert!(!before.contains("192.0.2.205"));
    assert!(!metrics.is_healthy());
    assert!(metrics.render().contains("sluice_agent_sync_errors_total"));
    let refused = status(store.as_ref(), "node-1").unwrap();
    assert!(refused.error.unwrap().contains("Message too long"));
    assert!(refused.seen_revision > refused.programmed_revision);

    // Once the kernel accepts again, the agent catches up on its own.
    *kernel.refuse_operation_containing.lock().unwrap() = None;
    wait_for("recovery", || {
        status(store.as_ref(), "node-1").is_some_and(|status| status.in_sync)
    });
    assert!(kernel.dump().contains("192.0.2.210"));
    assert!(kernel.dump().contains("192.0.2.205"));
    assert!(metrics.is_healthy());

    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap();
}

#[test]
fn a_refused_rebuild_is_retried_at_the_retry_pace_not_in_a_loop() {
    let directory = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory.path().join("store.db")).unwrap());
    let examples = examples();
    put_all(store.as_ref(), examples.clone().into_resources());
    put_all(store.as_ref(), workload_endpoints(&examples));

    let kernel = SharedKernel::default();
    let mut config = AgentConfig::new("node-1");
    // A rebuild is due every 100 ms, and the kernel will refuse every one of them.
    config.resync_interval = Duration::from_millis(100);
    let mut agent = Agent::new(config, store.clone(), kernel.clone(), Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        std::thread::spawn(move || agent.run_until(&stop))
    };
    wait_for("the first sync", || {
        status(store.as_ref(), "node-1").is_some_and(|status| status.in_sync)
    });
    kernel.refuse.store(true, Ordering::Relaxed);
    let before = kernel.attempts.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    let attempts = kernel.attempts.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap();
    // One rebuild, then a retry every 500 ms: about 4. A loop would make hundreds.
    assert!((1..=10).contains(&attempts), "{attempts} attempts in 1.5 s");
}

/// A stored value that bypassed `sluice apply` (here a namespace with both quote kinds, which
/// once panicked the compile) is left out and reported in the node status; the node keeps
/// programming everything else, and the object comes back once it is valid again.
#[test]
fn an_invalid_stored_object_is_left_out_and_reported() {
    let directory = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory.path().join("store.db")).unwrap());
    let examples = examples();
    put_all(store.as_ref(), examples.clone().into_resources());
    put_all(store.as_ref(), workload_endpoints(&examples));
    let mut partners = examples.global_network_sets[0].clone();
    partners.spec.nets.push("192.0.2.230/32".parse().unwrap());
    let key = Resource::GlobalNetworkSet(partners.clone()).key();
    // The same object as another writer could store it: a label value no `apply` takes.
    let invalid = String::from_utf8(Resource::GlobalNetworkSet(partners.clone()).encode())
        .unwrap()
        .replacen("\"labels\":{", "\"labels\":{\"bad\":\"it's \\\"odd\\\"\",", 1);
    assert!(invalid.contains("odd"), "{invalid}");
    store
        .commit(&[sluice_store::Operation::Put {
            key: key.clone(),
            value: invalid.into_bytes(),
            condition: sluice_store::Condition::Any,
        }])
        .unwrap();

    let kernel = SharedKernel::default();
    let mut agent = Agent::new(
        AgentConfig::new("node-1"),
        store.clone(),
        kernel.clone(),
        Metrics::new(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        std::thread::spawn(move || agent.run_until(&stop))
    };
    wait_for("the left-out object in the status", || {
        status(store.as_ref(), "node-1").is_some_and(|status| {
            status.in_sync
                && status
                    .left_out_objects
                    .iter()
                    .any(|object| object.starts_with(&key) && object.contains("metadata.labels.bad"))
        })
    });
    assert_eq!(status(store.as_ref(), "node-1").unwrap().local_endpoints, 2);
    assert!(!kernel.dump().contains("192.0.2.230"));

    put_all(store.as_ref(), vec![Resource::GlobalNetworkSet(partners)]);
    wait_for("the repaired object in the kernel", || {
        kernel.dump().contains("192.0.2.230")
            && status(store.as_ref(), "node-1").is_some_and(|status| status.left_out_objects.is_empty())
    });
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap();
}

/// Starts an agent for `node` on its own thread; returns the stop flag and the thread.
fn start(store: &Arc<dyn Store>, config: AgentConfig) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let mut agent = Agent::new(config, store.clone(), SharedKernel::default(), Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        std::thread::spawn(move || agent.run_until(&stop))
    };
    (stop, runner)
}

#[test]
fn a_node_name_the_datastore_does_not_know_is_warned_about_until_it_does() {
    let directory = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory.path().join("store.db")).unwrap());
    let examples = examples();
    put_all(store.as_ref(), examples.clone().into_resources());
    put_all(store.as_ref(), workload_endpoints(&examples));

    // node-1 has workload endpoints in the examples: no warning.
    let (stop, runner) = start(&store, AgentConfig::new("node-1"));
    wait_for("node-1's first sync", || {
        status(store.as_ref(), "node-1").is_some_and(|status| status.in_sync)
    });
    assert_eq!(status(store.as_ref(), "node-1").unwrap().warning, None);
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap();

    // A mistyped name programs an empty ruleset, and says why.
    let (stop, runner) = start(&store, AgentConfig::new("ndoe-1"));
    wait_for("the typo's first sync", || {
        status(store.as_ref(), "ndoe-1").is_some_and(|status| status.in_sync)
    });
    let typo = status(store.as_ref(), "ndoe-1").unwrap();
    assert_eq!(typo.local_endpoints, 0);
    let warning = typo.warning.expect("a warning for a node nothing names");
    assert!(
        warning.contains("no Node `ndoe-1` and no workload endpoint") && warning.contains("--node"),
        "{warning}"
    );

    // A Node resource of that name makes it a real (empty) node: the warning goes.
    put_all(
        store.as_ref(),
        support::load("apiVersion: v1\nkind: Node\nmetadata: {name: ndoe-1}\n"),
    );
    wait_for("the warning to clear", || {
        status(store.as_ref(), "ndoe-1").is_some_and(|status| status.in_sync && status.warning.is_none())
    });
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap();
}

#[test]
fn the_status_is_rewritten_every_heartbeat_and_says_when_the_agent_stopped() {
    let directory = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory.path().join("store.db")).unwrap());
    let examples = examples();
    put_all(store.as_ref(), examples.clone().into_resources());
    put_all(store.as_ref(), workload_endpoints(&examples));

    let mut config = AgentConfig::new("node-1");
    config.heartbeat_interval = Duration::from_millis(300);
    let (stop, runner) = start(&store, config);
    wait_for("the first sync", || {
        status(store.as_ref(), "node-1").is_some_and(|status| status.in_sync)
    });
    let first = status(store.as_ref(), "node-1").unwrap();
    assert!(!first.stopped);
    assert_eq!(first.heartbeat_seconds, 1, "sub-second heartbeats round up");
    // Nothing changes in the datastore, yet the record is written again (the timestamp has
    // whole seconds, so wait for it to move on).
    wait_for("a heartbeat", || {
        status(store.as_ref(), "node-1").is_some_and(|status| status.updated > first.updated)
    });
    let now = std::time::SystemTime::now();
    let beat = status(store.as_ref(), "node-1").unwrap();
    assert!(!beat.is_stale(now), "{beat:?}");
    assert_eq!(beat.sync_state(now), "true");

    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap();
    let last = status(store.as_ref(), "node-1").unwrap();
    assert!(last.stopped, "{last:?}");
    assert_eq!(last.sync_state(std::time::SystemTime::now()), "unknown (stopped)");
    assert_eq!(last.programmed_revision, first.programmed_revision);
}
