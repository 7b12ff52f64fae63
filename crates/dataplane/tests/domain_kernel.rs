//! Domain sets in the kernel (root; private network namespaces): a pod whose egress policy
//! allows a name reaches an address only while the (pod address . address) pair is in the
//! domain set, as the agent adds it over netlink with `SetElementWriter`; a full rebuild given
//! the learned elements keeps the pair (and one not given them loses it, which shows the
//! input is what keeps it); an incremental sync leaves it; the evaluator agrees.

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use sluice_dataplane::{
    DnsRender, IpFamily, LearnedElement, LocalEndpoint, Syncer, TABLE_NAME, domain_set_name, render_with_dns,
};
use sluice_nft::{CommandBackend, ElementChange, ElementKey, Family, SetElementWriter, Table};
use sluice_policy::Flow;

const POD: &str = "10.61.0.5";
const OUTSIDE: &str = "192.0.2.2";
const PORT: u16 = 8080;
const INTERFACE: &str = "slcdomaintest";

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
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
  interfaceName: slcdomaintest
  ipNetworks: ["10.61.0.5/32"]
  profiles: [kns.shop]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: client-egress}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - {action: Allow, protocol: TCP, destination: {domains: ['*.partner.example'], ports: [8080]}}
"#;

/// Three namespaces, deleted on drop.
struct Topology {
    pod: String,
    node: String,
    outside: String,
}

impl Topology {
    fn new() -> Topology {
        let prefix = format!("sluicedom-{}", std::process::id());
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

fn connects(topology: &Topology) -> bool {
    let target = SocketAddr::new(OUTSIDE.parse().unwrap(), PORT);
    in_namespace(&topology.pod, || {
        TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
    })
}

fn evaluator_allows(dataplane: &sluice_policy::Dataplane, name: Option<&str>) -> bool {
    let flow = Flow {
        source: POD.parse().unwrap(),
        destination: OUTSIDE.parse().unwrap(),
        protocol: 6,
        source_port: None,
        destination_port: Some(PORT),
        icmp_type: None,
        icmp_code: None,
    };
    dataplane.evaluate_with_domain(&flow, name).allowed
}

#[test]
fn a_pod_reaches_a_learned_address_only_while_its_pair_is_in_the_domain_set() {
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
    let dataplane = sluice_policy::compile(&sluice_api::load_str("domains.yaml", MANIFESTS).unwrap());
    let set = dataplane.domain_sets[0].name.clone();
    let kernel_set = domain_set_name(&set, IpFamily::V4);
    let key = ElementKey::Pair(POD.parse().unwrap(), OUTSIDE.parse().unwrap());
    let table = Table::new(Family::Inet, TABLE_NAME);
    let mut writer = SetElementWriter::open(Some(&topology.node)).expect("netlink socket");
    let add = ElementChange::Add {
        table: table.clone(),
        set: kernel_set.clone(),
        key,
        timeout: Some(Duration::from_secs(60)),
    };

    // Learned from the start, so that the path answers (neighbours resolved) before any
    // silence is read as the policy's drop.
    syncer
        .sync(&render_with_dns(&dataplane, &local, &DnsRender::default()))
        .expect("the kernel takes the ruleset");
    writer
        .apply(std::slice::from_ref(&add))
        .expect("the pair is added");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connects(&topology) {
        assert!(Instant::now() < deadline, "the outside host never answered");
    }
    assert!(evaluator_allows(&dataplane, Some("api.partner.example")));

    // Without the pair: denied, as the evaluator says for the address alone.
    writer
        .apply(&[ElementChange::Delete {
            table: table.clone(),
            set: kernel_set.clone(),
            key,
        }])
        .expect("the pair is deleted");
    assert!(!connects(&topology), "allowed without the learned pair");
    assert!(!evaluator_allows(&dataplane, None));
    assert!(!evaluator_allows(&dataplane, Some("partner.example")));

    // Added again, then a full rebuild that is given what was learned keeps it.
    writer
        .apply(std::slice::from_ref(&add))
        .expect("the pair is added");
    assert!(connects(&topology));
    syncer.resync_next();
    let with_learned = DnsRender {
        learned: vec![LearnedElement {
            set: set.clone(),
            endpoint: POD.parse().unwrap(),
            destination: OUTSIDE.parse().unwrap(),
            remaining: Duration::from_secs(60),
        }],
        ..DnsRender::default()
    };
    let report = syncer
        .sync(&render_with_dns(&dataplane, &local, &with_learned))
        .expect("full rebuild");
    assert!(report.full);
    let listed = writer.list(&table, &kernel_set).expect("the set is listed");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, key);
    let left = listed[0].expires.expect("a timeout");
    assert!(
        left > Duration::from_secs(50) && left <= Duration::from_secs(60),
        "{left:?}"
    );
    assert!(connects(&topology), "the full rebuild lost the learned pair");

    // An incremental sync never touches the set's elements.
    let report = syncer
        .sync(&render_with_dns(&dataplane, &local, &DnsRender::default()))
        .expect("incremental sync");
    assert!(!report.full);
    assert_eq!(writer.list(&table, &kernel_set).unwrap().len(), 1);
    assert!(connects(&topology));

    // A full rebuild not given the learned elements starts the set empty: the input is what
    // keeps them.
    syncer.resync_next();
    syncer
        .sync(&render_with_dns(&dataplane, &local, &DnsRender::default()))
        .expect("full rebuild");
    assert!(writer.list(&table, &kernel_set).unwrap().is_empty());
    assert!(!connects(&topology));
}
