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
