//! IPv6 policy with real packets (root; private network namespaces): a dual-stack pod wired as
//! the CNI plugin wires one (a /128, the node's link-local address as its gateway), a node
//! programmed by Sluice, and an outside host. Egress rules allow one TCP port and one UDP port
//! over IPv6; another TCP port is denied by the tier's default, and a datagram from a spoofed
//! IPv6 source is dropped while the same datagram from the pod's own address arrives.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_dataplane::{LocalEndpoint, Syncer, render};
use sluice_nft::CommandBackend;
use support::{in_namespace, ip};

mod support;

const POD_V6: &str = "fd00:61::5";
const OUTSIDE_V6: &str = "fd64::2";
const ALLOWED_PORT: u16 = 443;
const DENIED_PORT: u16 = 8443;
const UDP_PORT: u16 = 53;
const SPOOFED_V6: &str = "fd00:61::99";

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods-v6}
spec: {cidr: "fd00:61::/64", blockSize: 122}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node--1-k8s-client-eth0
  namespace: shop
  labels: {app: client}
spec:
  orchestrator: k8s
  node: node-1
  pod: client
  endpoint: eth0
  interfaceName: slc6test
  ipNetworks: ["10.61.0.5/32", "fd00:61::5/128"]
  profiles: [kns.shop]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: client-egress}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {nets: ["fd64::2/128"], ports: [443]}
    - action: Allow
      protocol: UDP
      destination: {nets: ["fd64::2/128"], ports: [53]}
"#;

/// Three namespaces, deleted on drop.
struct Topology {
    pod: String,
    node: String,
    outside: String,
}

impl Topology {
    fn new() -> Topology {
        let prefix = format!("sluice6-{}", std::process::id());
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
        // The pod's veth as the CNI plugin makes it: Calico's MAC on the node side, whose
        // EUI-64 link-local address fe80::ecee:eeff:feee:eeee is the pod's gateway.
        ip(&[
            "-n",
            node,
            "link",
            "add",
            "slc6test",
            "address",
            "ee:ee:ee:ee:ee:ee",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod,
        ]);
        ip(&[
            "-n", node, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside,
        ]);
        for (namespace, link) in [
            (node, "slc6test"),
            (node, "uplink"),
            (pod, "eth0"),
            (outside, "eth0"),
        ] {
            ip(&["-n", namespace, "link", "set", link, "up"]);
        }
        ip(&[
            "netns",
            "exec",
            node,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        ip(&[
            "-n",
            pod,
            "address",
            "add",
            &format!("{POD_V6}/128"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&[
            "-n",
            pod,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fe80::ecee:eeff:feee:eeee",
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            node,
            "-6",
            "route",
            "add",
            &format!("{POD_V6}/128"),
            "dev",
            "slc6test",
        ]);
        ip(&[
            "-n",
            node,
            "address",
            "add",
            "fd64::1/64",
            "dev",
            "uplink",
            "nodad",
        ]);
        ip(&[
            "-n",
            outside,
            "address",
            "add",
            &format!("{OUTSIDE_V6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&[
            "-n",
            outside,
            "-6",
            "route",
            "add",
            "fd00:61::/64",
            "via",
            "fd64::1",
        ]);
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

fn connects(topology: &Topology, port: u16, timeout: Duration) -> bool {
    let target = SocketAddr::new(OUTSIDE_V6.parse().unwrap(), port);
    in_namespace(&topology.pod, || {
        TcpStream::connect_timeout(&target, timeout).is_ok()
    })
}

#[test]
fn ipv6_egress_is_allowed_denied_and_anti_spoofed_as_the_policy_says() {
    let topology = Topology::new();
    let listeners: Vec<TcpListener> = [ALLOWED_PORT, DENIED_PORT]
        .iter()
        .map(|port| {
            in_namespace(&topology.outside, || {
                TcpListener::bind(SocketAddr::new(OUTSIDE_V6.parse().unwrap(), *port)).expect("listen")
            })
        })
        .collect();

    let resources = sluice_api::load_str("ipv6.yaml", MANIFESTS).expect("valid manifests");
    let local = [LocalEndpoint {
        namespace: "shop".into(),
        name: "client".into(),
        interface: "slc6test".into(),
        egress_gateway: false,
    }];
    let ruleset = render(&sluice_policy::compile(&resources), &local);
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&topology.node).expect("nft is installed"));
    syncer.sync(&ruleset).expect("the kernel takes the ruleset");

    // The allowed port answers once neighbour discovery has run (bounded retries).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connects(&topology, ALLOWED_PORT, Duration::from_millis(500)) {
        assert!(Instant::now() < deadline, "the allowed IPv6 port never answered");
    }
    // Neighbours are resolved now, so silence on the other port is the policy's drop.
    assert!(!connects(&topology, DENIED_PORT, Duration::from_secs(1)));
    drop(listeners);

    // The pod gets a second address the node does not know it by, and routes back to it, so
    // that only anti-spoofing can stop a datagram sent from it.
    ip(&[
        "-n",
        &topology.pod,
        "address",
        "add",
        &format!("{SPOOFED_V6}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);
    ip(&[
        "-n",
        &topology.node,
        "-6",
        "route",
        "add",
        &format!("{SPOOFED_V6}/128"),
        "dev",
        "slc6test",
    ]);
    let receiver = in_namespace(&topology.outside, || {
        UdpSocket::bind(SocketAddr::new(OUTSIDE_V6.parse().unwrap(), UDP_PORT)).expect("bind")
    });
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let arrives_from = |source: &str| {
        let source: IpAddr = source.parse().unwrap();
        let sender = in_namespace(&topology.pod, || {
            UdpSocket::bind(SocketAddr::new(source, 0)).expect("bind")
        });
        let target = SocketAddr::new(OUTSIDE_V6.parse().unwrap(), UDP_PORT);
        let mut buffer = [0_u8; 16];
        (0..3).any(|_| {
            sender.send_to(b"hello", target).unwrap();
            matches!(receiver.recv_from(&mut buffer), Ok((_, from)) if from.ip() == source)
        })
    };
    assert!(arrives_from(POD_V6), "the pod's own IPv6 datagram did not arrive");
    assert!(
        !arrives_from(SPOOFED_V6),
        "a datagram from a spoofed IPv6 source got through"
    );
}
