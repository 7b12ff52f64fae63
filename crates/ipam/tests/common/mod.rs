//! Test support: stores on temporary files, resources written into them, and an etcd server on
//! loopback (from `sluice_store::testing`) that is killed when dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sluice_ipam::{AssignRequest, Ipam};
use sluice_store::{Condition, EmbeddedStore, Operation, Store};

/// A store file in a temporary directory removed on drop.
pub struct TempStore {
    pub directory: tempfile::TempDir,
    pub store: Arc<dyn Store>,
}

impl TempStore {
    pub fn new() -> TempStore {
        TempStore::in_directory(&std::env::temp_dir())
    }

    /// A store file under `parent` (e.g. `/dev/shm`, to measure without the disk).
    pub fn in_directory(parent: &std::path::Path) -> TempStore {
        let directory = tempfile::Builder::new()
            .prefix("sluice-ipam-")
            .tempdir_in(parent)
            .expect("temporary directory");
        let store = EmbeddedStore::open(directory.path().join("store.db")).expect("open the store");
        TempStore {
            directory,
            store: Arc::new(store),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.directory.path().join("store.db")
    }

    pub fn ipam(&self) -> Ipam {
        Ipam::new(self.store.clone())
    }
}

/// Writes every resource of a YAML manifest into the store.
pub fn apply(store: &dyn Store, manifest: &str) {
    let set = sluice_api::load_str("test.yaml", manifest).unwrap_or_else(|error| panic!("{error}"));
    let operations: Vec<Operation> = set
        .into_resources()
        .into_iter()
        .map(|resource| Operation::Put {
            key: resource.key(),
            value: resource.encode(),
            condition: Condition::Any,
        })
        .collect();
    store.commit(&operations).expect("write resources");
}

pub fn pool(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  {}\n",
        spec.trim().replace('\n', "\n  ")
    )
}

pub fn request(handle: &str, node: &str, namespace: &str) -> AssignRequest {
    AssignRequest {
        handle: handle.to_string(),
        node: node.to_string(),
        namespace: namespace.to_string(),
        pod: format!("pod-{handle}"),
        pod_annotations: BTreeMap::new(),
    }
}

pub fn with_annotation(mut request: AssignRequest, name: &str, value: &str) -> AssignRequest {
    request
        .pod_annotations
        .insert(name.to_string(), value.to_string());
    request
}

/// One etcd server on loopback, from the store crate's test support.
pub struct Etcd {
    cluster: sluice_store::testing::EtcdCluster,
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd {
            cluster: sluice_store::testing::EtcdCluster::start(1),
        }
    }

    /// An etcd whose data directory is under `parent`.
    pub fn start_in(parent: &std::path::Path) -> Etcd {
        Etcd {
            cluster: sluice_store::testing::EtcdCluster::start_in(1, parent),
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.cluster.store()
    }
}

/// The concurrency check the issue asks of every datastore: eight allocators on eight nodes,
/// each with its own connection (`connect` makes one, as a separate CNI process would have),
/// 500 allocations each: no address is given twice, and none is left after releasing all.
pub fn concurrent_allocators(connect: &(dyn Fn() -> Arc<dyn Store> + Sync)) {
    use std::collections::BTreeSet;
    use std::net::IpAddr;
    const NODES: usize = 8;
    const PER_NODE: usize = 500;
    let store = connect();
    apply(&*store, &pool("pool-a", "cidr: 10.0.0.0/16"));
    let run = |release: bool| {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..NODES)
                .map(|node| {
                    scope.spawn(move || {
                        let ipam = Ipam::new(connect());
                        let mut addresses = Vec::new();
                        for index in 0..PER_NODE {
                            let handle = format!("n{node}-c{index}.eth0");
                            if release {
                                addresses.extend(ipam.release(&handle).expect("release"));
                            } else {
                                let request = request(&handle, &format!("node-{node}"), "prod");
                                addresses.push(ipam.assign(&request).expect("assign")[0].address);
                            }
                        }
                        addresses
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("worker"))
                .collect::<Vec<IpAddr>>()
        })
    };
    let assigned = run(false);
    let distinct: BTreeSet<IpAddr> = assigned.iter().copied().collect();
    assert_eq!(assigned.len(), NODES * PER_NODE);
    assert_eq!(distinct.len(), assigned.len(), "an address was given twice");
    let ipam = Ipam::new(store.clone());
    assert_eq!(ipam.report().unwrap().allocations.len(), NODES * PER_NODE);
    let result = ipam.check().unwrap();
    assert!(result.doubly_owned.is_empty(), "{:?}", result.doubly_owned);
    let released: BTreeSet<IpAddr> = run(true).into_iter().collect();
    assert_eq!(released, distinct);
    assert!(ipam.report().unwrap().allocations.is_empty());
    assert!(
        store
            .list(sluice_ipam::layout::HANDLE_PREFIX)
            .unwrap()
            .0
            .is_empty(),
        "handles left behind"
    );
}
