//! Test support: stores on temporary files, resources written into them, and an etcd server on
//! loopback that is killed when dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_ipam::{AssignRequest, Ipam};
use sluice_store::{Condition, EmbeddedStore, EtcdStore, Operation, Store};

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

/// One etcd server on free loopback ports with a temporary data directory.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    _directory: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_in(&std::env::temp_dir())
    }

    /// An etcd whose data directory is under `parent`.
    pub fn start_in(parent: &std::path::Path) -> Etcd {
        let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .expect("etcd is installed (apt-get install etcd-server)");
        let directory = tempfile::Builder::new()
            .prefix("sluice-ipam-etcd-")
            .tempdir_in(parent)
            .expect("temporary directory");
        // Bound together so the two ports differ, then freed for etcd.
        let listeners: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|listener| listener.local_addr().expect("port").port())
            .collect();
        drop(listeners);
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let log = std::fs::File::create(directory.path().join("etcd.log")).expect("log file");
        let child = Command::new(binary)
            .arg("--data-dir")
            .arg(directory.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("default={peer}")])
            // Short timers: loopback is fast, and tests should not wait for an election.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child,
            endpoint: client,
            _directory: directory,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
                .is_ok_and(|store| store.revision().is_ok());
            if ready {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not start within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(EtcdStore::connect(std::slice::from_ref(&self.endpoint)).expect("connect to etcd"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
