//! A node and pods made of network namespaces, an embedded store with an IP pool, and the real
//! `sluice-cni` binary run as a container runtime runs it. Nothing touches the root namespace:
//! the plugin runs inside the node's namespace through `ip netns exec`.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use sluice_store::{Condition, Operation, Store};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_sluice-cni");
/// The node's own address, on a veth uplink that also carries its default route (proxy ARP
/// answers only for destinations the node can route).
pub const NODE_ADDRESS: &str = "10.255.0.1";
/// The node's IPv6 address, for tests that add one (`Lab::add_node_ipv6`).
pub const NODE_ADDRESS_V6: &str = "fd64::1";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs a command, panicking with its output when it fails.
pub fn run(program: &str, arguments: &[&str]) -> String {
    let output = Command::new(program).args(arguments).output().expect("spawn");
    assert!(
        output.status.success(),
        "{program} {}: {}{}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A node namespace, pod namespaces on it, and a store; all removed on drop.
pub struct Lab {
    pub prefix: String,
    pub node: String,
    pods: Vec<String>,
    pub directory: tempfile::TempDir,
    pub datastore: String,
}

/// What the plugin printed and its exit code.
#[derive(Debug)]
pub struct Reply {
    pub code: i32,
    pub json: Value,
    pub stderr: String,
}

impl Lab {
    /// `tag` keeps names apart between tests; the pid and a counter between runs.
    pub fn new(tag: &str) -> Lab {
        let prefix = format!(
            "sluicecni-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let node = format!("{prefix}-node");
        let directory = tempfile::tempdir().expect("temp dir");
        let datastore = format!("file://{}/store.db", directory.path().display());
        // The plugin only opens an existing store; the cluster's store is set up first.
        sluice_store::open_or_create(&datastore).expect("create the store");
        let lab = Lab {
            prefix,
            node: node.clone(),
            pods: Vec::new(),
            directory,
            datastore,
        };
        run("ip", &["netns", "add", &node]);
        run("ip", &["-n", &node, "link", "set", "lo", "up"]);
        // A veth pair standing in for the node's uplink (the dummy module may be absent).
        run(
            "ip",
            &[
                "-n",
                &node,
                "link",
                "add",
                "uplink",
                "type",
                "veth",
                "peer",
                "name",
                "uplink-peer",
            ],
        );
        run("ip", &["-n", &node, "link", "set", "uplink-peer", "up"]);
        run("ip", &["-n", &node, "link", "set", "uplink", "up"]);
        run(
            "ip",
            &[
                "-n",
                &node,
                "address",
                "add",
                &format!("{NODE_ADDRESS}/32"),
                "dev",
                "uplink",
            ],
        );
        run("ip", &["-n", &node, "route", "add", "default", "dev", "uplink"]);
        lab.apply(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pods\nspec:\n  cidr: 10.100.0.0/16\n  blockSize: 26\n  natOutgoing: true\n",
        );
        lab
    }

    /// Gives the node an IPv6 address and route, as a dual-stack node has.
    pub fn add_node_ipv6(&self) {
        let address = format!("{NODE_ADDRESS_V6}/128");
        run(
            "ip",
            &[
                "-n", &self.node, "address", "add", &address, "dev", "uplink", "nodad",
            ],
        );
        run(
            "ip",
            &["-n", &self.node, "-6", "route", "add", "default", "dev", "uplink"],
        );
    }

    pub fn store(&self) -> Box<dyn Store> {
        sluice_store::open_or_create(&self.datastore).expect("open store")
    }

    /// Writes the resources of a YAML manifest to the store.
    pub fn apply(&self, manifest: &str) {
        let set = sluice_api::load_str("test.yaml", manifest).expect("valid manifest");
        let operations: Vec<Operation> = set
            .into_resources()
            .into_iter()
            .map(|resource| Operation::Put {
                key: resource.key(),
                value: resource.encode(),
                condition: Condition::Any,
            })
            .collect();
        self.store().commit(&operations).expect("commit");
    }

    /// A new pod namespace; returns its name (its path is `/var/run/netns/<name>`).
    pub fn pod_namespace(&mut self, name: &str) -> String {
        let namespace = format!("{}-{name}", self.prefix);
        run("ip", &["netns", "add", &namespace]);
        run("ip", &["-n", &namespace, "link", "set", "lo", "up"]);
        self.pods.push(namespace.clone());
        namespace
    }

    pub fn remove_pod_namespace(&mut self, namespace: &str) {
        let _ = Command::new("ip").args(["netns", "delete", namespace]).status();
        self.pods.retain(|pod| pod != namespace);
    }

    pub fn config(&self, version: &str) -> String {
        serde_json::json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "sluice-cni",
            "datastore": self.datastore,
            "nodename": "node-1",
            "mtu": 1400,
            "lockDirectory": self.directory.path().join("locks"),
        })
        .to_string()
    }

    /// Runs the plugin inside the node's namespace.
    pub fn invoke(&self, command: &str, attachment: &Attachment, config: &str) -> Reply {
        let netns = attachment
            .netns
            .as_ref()
            .map(|name| format!("/var/run/netns/{name}"));
        invoke_plugin(Some(&self.node), command, attachment, netns.as_deref(), config)
    }

    /// Runs the plugin inside the node's namespace with `CNI_NETNS` set to `path` as given.
    pub fn invoke_with_netns_path(
        &self,
        command: &str,
        attachment: &Attachment,
        path: &str,
        config: &str,
    ) -> Reply {
        invoke_plugin(Some(&self.node), command, attachment, Some(path), config)
    }

    pub fn in_node(&self, arguments: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.node];
        full.extend_from_slice(arguments);
        run("ip", &full)
    }

    pub fn in_node_status(&self, arguments: &[&str]) -> bool {
        let mut full = vec!["netns", "exec", &self.node];
        full.extend_from_slice(arguments);
        Command::new("ip")
            .args(&full)
            .output()
            .expect("spawn")
            .status
            .success()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for namespace in self.pods.iter().chain(std::iter::once(&self.node)) {
            let _ = Command::new("ip").args(["netns", "delete", namespace]).status();
        }
    }
}

/// The CNI_* facts of one attachment.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub interface_name: String,
    /// The pod namespace's name under /var/run/netns.
    pub netns: Option<String>,
    pub pod_namespace: String,
    pub pod_name: String,
}

impl Attachment {
    pub fn new(container_id: &str, netns: &str, pod_namespace: &str, pod_name: &str) -> Attachment {
        Attachment {
            container_id: container_id.into(),
            interface_name: "eth0".into(),
            netns: Some(netns.into()),
            pod_namespace: pod_namespace.into(),
            pod_name: pod_name.into(),
        }
    }

    pub fn handle(&self) -> String {
        format!("{}.{}", self.container_id, self.interface_name)
    }
}

/// Runs the binary with the runtime's environment and `config` on stdin; in `node` through
/// `ip netns exec` when given.
pub fn invoke_plugin(
    node: Option<&str>,
    command: &str,
    attachment: &Attachment,
    netns: Option<&str>,
    config: &str,
) -> Reply {
    let mut process = match node {
        Some(node) => {
            let mut process = Command::new("ip");
            process.args(["netns", "exec", node, PLUGIN]);
            process
        }
        None => Command::new(PLUGIN),
    };
    process
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &attachment.container_id)
        .env("CNI_IFNAME", &attachment.interface_name)
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                attachment.pod_namespace, attachment.pod_name, attachment.container_id
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(netns) = netns {
        process.env("CNI_NETNS", netns);
    }
    let mut child = process.spawn().expect("spawn plugin");
    child.stdin.take().unwrap().write_all(config.as_bytes()).unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&stdout);
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("stdout is not JSON: {text}"))
    };
    Reply {
        code: status.code().unwrap_or(-1),
        json,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `work` on a thread that entered the named namespace; sockets it creates stay there.
pub fn in_netns<T: Send>(namespace: &str, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(format!("/var/run/netns/{namespace}")).expect("open netns");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                work()
            })
            .join()
            .expect("namespace thread")
    })
}

/// A UDP request from the node's namespace to the pod and the pod's answer back: both
/// directions of the pod's wiring, without needing `ping` installed.
pub fn udp_round_trip(node: &str, pod: &str, pod_address: std::net::IpAddr) {
    use std::net::UdpSocket;
    use std::time::Duration;
    let pod_socket = in_netns(pod, || UdpSocket::bind((pod_address, 0)).expect("bind in pod"));
    let (any, node_address) = if pod_address.is_ipv6() {
        ("[::]:0", NODE_ADDRESS_V6)
    } else {
        ("0.0.0.0:0", NODE_ADDRESS)
    };
    let node_socket = in_netns(node, || UdpSocket::bind(any).expect("bind in node"));
    let timeout = Some(Duration::from_millis(500));
    pod_socket.set_read_timeout(timeout).unwrap();
    node_socket.set_read_timeout(timeout).unwrap();
    let target = (pod_address, pod_socket.local_addr().unwrap().port());
    let mut buffer = [0u8; 16];
    // Eight tries: an IPv6 pod first resolves its link-local gateway.
    for _ in 0..8 {
        node_socket.send_to(b"request", target).unwrap();
        let Ok((_, sender)) = pod_socket.recv_from(&mut buffer) else {
            continue;
        };
        assert_eq!(sender.ip().to_string(), node_address);
        pod_socket.send_to(b"answer", sender).unwrap();
        if let Ok((length, from)) = node_socket.recv_from(&mut buffer) {
            assert_eq!((&buffer[..length], from.ip()), (&b"answer"[..], pod_address));
            return;
        }
    }
    panic!("no UDP round trip between the node and {pod_address}");
}

/// `ping` from `namespace`, bounded, when ping is installed; `None` when it is not.
pub fn ping(namespace: &str, address: &str) -> Option<bool> {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace, "ping", "-c", "1", "-W", "2", address])
        .output()
        .ok()?;
    let missing = String::from_utf8_lossy(&output.stderr).contains("No such file");
    (!missing).then_some(output.status.success())
}
