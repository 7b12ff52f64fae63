//! A pod wired as the CNI plugin wires one (a /32, 169.254.1.1 as its gateway through proxy
//! ARP), its node and an outside host, as private network namespaces (root), shared by the
//! kernel tests of this crate; the `ip`/namespace helpers they use; and the manifest of a pod.
#![allow(dead_code)] // each test file uses a part

use std::fs::File;
use std::process::Command;

use nix::sched::CloneFlags;

/// The pod's address.
pub const POD: &str = "10.61.0.5";
/// The outside host's address.
pub const OUTSIDE: &str = "192.0.2.2";

/// Three namespaces, deleted on drop.
pub struct Topology {
    pub pod: String,
    pub node: String,
    pub outside: String,
}

impl Topology {
    /// `prefix` names the namespaces (with the process id, so parallel runs stay apart);
    /// `interface` is the pod's host-side veth, as the CNI plugin names one.
    pub fn new(prefix: &str, interface: &str) -> Topology {
        let prefix = format!("{prefix}-{}", std::process::id());
        let topology = Topology {
            pod: format!("{prefix}-pod"),
            node: format!("{prefix}-node"),
            outside: format!("{prefix}-out"),
        };
        for namespace in [&topology.pod, &topology.node, &topology.outside] {
            ip(&["netns", "add", namespace]);
            ip(&["-n", namespace, "link", "set", "lo", "up"]);
        }
        let (pod, node, outside) = (&topology.pod, &topology.node, &topology.outside);
        ip(&[
            "-n", node, "link", "add", interface, "type", "veth", "peer", "name", "eth0", "netns", pod,
        ]);
        ip(&[
            "-n", node, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside,
        ]);
        for (namespace, link) in [
            (node, interface),
            (node, "uplink"),
            (pod, "eth0"),
            (outside, "eth0"),
        ] {
            ip(&["-n", namespace, "link", "set", link, "up"]);
        }
        sysctl(node, "net.ipv4.ip_forward=1");
        sysctl(node, &format!("net.ipv4.conf.{interface}.proxy_arp=1"));
        ip(&["-n", pod, "address", "add", &format!("{POD}/32"), "dev", "eth0"]);
        ip(&[
            "-n",
            pod,
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        ip(&[
            "-n",
            pod,
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ]);
        ip(&["-n", node, "route", "add", &format!("{POD}/32"), "dev", interface]);
        ip(&["-n", node, "address", "add", "192.0.2.1/24", "dev", "uplink"]);
        ip(&[
            "-n",
            outside,
            "address",
            "add",
            &format!("{OUTSIDE}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", outside, "route", "add", "10.61.0.0/16", "via", "192.0.2.1"]);
        // Proxy ARP answers for 169.254.1.1 only if the node routes it out another interface.
        ip(&["-n", node, "route", "add", "default", "via", OUTSIDE]);
        topology
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for namespace in [&self.pod, &self.node, &self.outside] {
            let _ = Command::new("ip").args(["netns", "delete", namespace]).status();
        }
    }
}

pub fn ip(arguments: &[&str]) {
    let output = Command::new("ip").args(arguments).output().expect("ip runs");
    assert!(
        output.status.success(),
        "ip {arguments:?}: {} (needs root)",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn sysctl(namespace: &str, setting: &str) {
    ip(&["netns", "exec", namespace, "sysctl", "-qw", setting]);
}

/// Runs `work` on a thread inside the namespace; sockets made there stay in it.
pub fn in_namespace<T: Send>(namespace: &str, work: impl FnOnce() -> T + Send) -> T {
    let file = File::open(format!("/run/netns/{namespace}")).expect("namespace exists");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                work()
            })
            .join()
            .expect("namespace thread")
    })
}

/// One private network namespace (`sluicedp-<purpose>-<pid>`), deleted on drop.
pub struct Namespace(pub String);

impl Namespace {
    pub fn new(purpose: &str) -> Namespace {
        let name = format!("sluicedp-{purpose}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        Namespace(name)
    }

    /// `nft list <what…>` inside the namespace.
    pub fn nft_list(&self, what: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list"])
            .args(what)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// A pod on node-1 as its WorkloadEndpoint document (`---` first), labelled `app: <app>`, in
/// its namespace's profile.
pub fn workload_endpoint(namespace: &str, pod: &str, app: &str, address: &str, interface: &str) -> String {
    format!(
        r#"
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node--1-k8s-{pod}-eth0
  namespace: {namespace}
  labels: {{app: {app}}}
spec:
  orchestrator: k8s
  node: node-1
  pod: {pod}
  endpoint: eth0
  interfaceName: {interface}
  ipNetworks: ["{address}/32"]
  profiles: [kns.{namespace}]
"#
    )
}
