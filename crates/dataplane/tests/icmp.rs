//! The renderer and the evaluator read a rule's protocol, notProtocol, icmp and notICMP fields
//! the same way (root; private network namespaces). One egress Allow rule per case on a pod
//! wired as the CNI plugin wires one; the kernel, programmed from the rendered ruleset, decides
//! a ping (ICMP echo, type 8 code 0) and a TCP connection to an outside host, and each must be
//! what the evaluator says for the same flow.

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use sluice_api::calico::IcmpFields;
use sluice_dataplane::{LocalEndpoint, Syncer, render};
use sluice_nft::CommandBackend;
use sluice_policy::Flow;

const POD: &str = "10.61.0.5";
const OUTSIDE: &str = "192.0.2.2";
const PORT: u16 = 8080;
const INTERFACE: &str = "slcicmptest";

fn manifests(rule: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node--1-k8s-client-eth0
  namespace: shop
  labels: {{app: client}}
spec:
  orchestrator: k8s
  node: node-1
  pod: client
  endpoint: eth0
  interfaceName: {INTERFACE}
  ipNetworks: ["{POD}/32"]
  profiles: [kns.shop]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: client-egress}}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - {{action: Allow, {rule}}}
"#
    )
}

/// Three namespaces, deleted on drop.
struct Topology {
    pod: String,
    node: String,
    outside: String,
}

impl Topology {
    fn new() -> Topology {
        let prefix = format!("sluiceicmp-{}", std::process::id());
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
            "-n", node, "link", "add", INTERFACE, "type", "veth", "peer", "name", "eth0", "netns", pod,
        ]);
        ip(&[
            "-n", node, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside,
        ]);
        for (namespace, link) in [
            (node, INTERFACE),
            (node, "uplink"),
            (pod, "eth0"),
            (outside, "eth0"),
        ] {
            ip(&["-n", namespace, "link", "set", link, "up"]);
        }
        sysctl(node, "net.ipv4.ip_forward=1");
        sysctl(node, &format!("net.ipv4.conf.{INTERFACE}.proxy_arp=1"));
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
        ip(&["-n", node, "route", "add", &format!("{POD}/32"), "dev", INTERFACE]);
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

fn ip(arguments: &[&str]) {
    let output = Command::new("ip").args(arguments).output().expect("ip runs");
    assert!(
        output.status.success(),
        "ip {arguments:?}: {} (needs root)",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sysctl(namespace: &str, setting: &str) {
    ip(&["netns", "exec", namespace, "sysctl", "-qw", setting]);
}

/// Runs `work` on a thread inside the namespace; sockets made there stay in it.
fn in_namespace<T: Send>(namespace: &str, work: impl FnOnce() -> T + Send) -> T {
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

/// One echo request from the pod; a missing `ping` fails the test rather than skipping a check.
fn pings(topology: &Topology) -> bool {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topology.pod,
            "ping",
            "-n",
            "-c",
            "1",
            "-W",
            "1",
            OUTSIDE,
        ])
        .output()
        .expect("ip runs");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        !error.contains("No such file") && !error.contains("not found"),
        "ping is missing: install the Debian package iputils-ping ({error})"
    );
    output.status.success()
}

fn connects(topology: &Topology) -> bool {
    let target = SocketAddr::new(OUTSIDE.parse().unwrap(), PORT);
    in_namespace(&topology.pod, || {
        TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
    })
}

fn flow(protocol: u8) -> Flow {
    Flow {
        source: POD.parse().unwrap(),
        destination: OUTSIDE.parse().unwrap(),
        protocol,
        source_port: None,
        destination_port: (protocol == 6).then_some(PORT),
        icmp_type: (protocol == 1).then_some(8),
        icmp_code: (protocol == 1).then_some(0),
    }
}

#[test]
fn the_kernel_and_the_evaluator_agree_on_protocol_and_icmp_matches() {
    let topology = Topology::new();
    let _listener = in_namespace(&topology.outside, || {
        TcpListener::bind(SocketAddr::new(OUTSIDE.parse::<IpAddr>().unwrap(), PORT)).expect("listen")
    });
    let local = [LocalEndpoint {
        namespace: "shop".into(),
        name: "client".into(),
        interface: INTERFACE.into(),
    }];
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&topology.node).expect("nft is installed"));

    // Everything allowed first, until the path answers (neighbours resolved), so that silence
    // later is the policy's drop.
    let open = sluice_api::load_str("open.yaml", &manifests("protocol: TCP")).unwrap();
    syncer
        .sync(&render(&sluice_policy::compile(&open), &local))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connects(&topology) {
        assert!(Instant::now() < deadline, "the outside host never answered");
    }

    // (rule fields, a stored notICMP to put in place of the loaded one, bypassing validation)
    let cases: [(&str, Option<IcmpFields>); 11] = [
        ("protocol: ICMP", None),
        ("protocol: TCP", None),
        ("notProtocol: ICMP", None),
        ("notProtocol: TCP", None),
        ("protocol: ICMP, icmp: {type: 8}", None),
        ("protocol: ICMP, icmp: {type: 8, code: 1}", None),
        ("protocol: ICMP, notICMP: {type: 8}", None),
        ("protocol: ICMP, notICMP: {type: 0}", None),
        ("protocol: ICMP, notICMP: {type: 8, code: 0}", None),
        // No protocol: the kernel's `icmp type != 0` only matches ICMP.
        ("notICMP: {type: 0}", None),
        // A code without a type, as another writer of the datastore could store it.
        (
            "notICMP: {type: 0}",
            Some(IcmpFields {
                icmp_type: None,
                code: Some(0),
            }),
        ),
    ];
    let mut disagreements = Vec::new();
    let mut outcomes = std::collections::BTreeSet::new();
    for (rule, stored_not_icmp) in cases {
        let mut resources = sluice_api::load_str("case.yaml", &manifests(rule)).unwrap();
        if let Some(fields) = stored_not_icmp {
            resources.global_network_policies[0].spec.egress[0].not_icmp = Some(fields);
        }
        let dataplane = sluice_policy::compile(&resources);
        syncer
            .sync(&render(&dataplane, &local))
            .unwrap_or_else(|error| panic!("{rule}: the kernel refused the ruleset: {error}"));
        for (name, protocol, kernel) in [("ping", 1, pings(&topology)), ("TCP", 6, connects(&topology))] {
            let evaluator = dataplane.evaluate(&flow(protocol)).allowed;
            outcomes.insert(kernel);
            if kernel != evaluator {
                disagreements.push(format!(
                    "{rule} (stored notICMP {stored_not_icmp:?}): {name} kernel {kernel}, evaluator {evaluator}"
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    // Both verdicts occurred, so the probes can tell them apart.
    assert_eq!(outcomes.len(), 2);
}
