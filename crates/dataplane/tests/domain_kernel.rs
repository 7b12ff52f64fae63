//! Domain sets in the kernel (root; private network namespaces): a pod whose egress policy
//! allows a name reaches an address only while the (pod address . address) pair is in the
//! domain set, as the agent adds it over netlink with `SetElementWriter`; a full rebuild given
//! the learned elements keeps the pair (and one not given them loses it, which shows the
//! input is what keeps it); an incremental sync leaves it; the evaluator agrees.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_dataplane::{
    DnsRender, IpFamily, LearnedElement, LocalEndpoint, Syncer, TABLE_NAME, domain_set_name, render_with_dns,
};
use sluice_nft::{CommandBackend, ElementChange, ElementKey, Family, SetElementWriter, Table};
use sluice_policy::Flow;
use support::{OUTSIDE, POD, Topology, in_namespace};

mod support;

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
    let topology = Topology::new("sluicedomset", INTERFACE);
    let _listener = in_namespace(&topology.outside, || {
        TcpListener::bind(SocketAddr::new(OUTSIDE.parse::<IpAddr>().unwrap(), PORT)).expect("listen")
    });
    let local = [LocalEndpoint {
        namespace: "shop".into(),
        name: "client".into(),
        interface: INTERFACE.into(),
        egress_gateway: false,
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

/// Counts, after the `dns-queue` chain, the packets to the pod that carry the hold mark, per
/// source port (a table of the test's own, in the test's node namespace).
fn install_mark_counter(topology: &Topology) {
    let script = format!(
        "add table inet probe\n\
         add chain inet probe after {{ type filter hook postrouting priority 120 ; }}\n\
         add rule inet probe after ip daddr {POD} udp sport 53 meta mark & {mark:#x} != 0 counter\n\
         add rule inet probe after ip daddr {POD} udp sport 5353 meta mark & {mark:#x} != 0 counter\n",
        mark = sluice_dataplane::domains::MARK_DNS_QUEUE
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &topology.node, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft runs");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// The marked packets counted for source port 53 and 5353.
fn marked(topology: &Topology) -> (u64, u64) {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topology.node,
            "nft",
            "list",
            "chain",
            "inet",
            "probe",
            "after",
        ])
        .output()
        .expect("nft runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let count = |port: &str| {
        text.lines()
            .find(|line| line.contains(&format!("udp sport {port} ")))
            .and_then(|line| line.split("packets ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no counter for port {port} in {text}"))
    };
    (count("53"), count("5353"))
}

/// One query from the pod to the outside host's port; whether an answer came back.
fn asks(topology: &Topology, port: u16) -> bool {
    let server = SocketAddr::new(OUTSIDE.parse().unwrap(), port);
    in_namespace(&topology.pod, || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        socket.send_to(b"query", server).expect("send");
        let mut buffer = [0u8; 64];
        socket.recv_from(&mut buffer).is_ok()
    })
}

#[test]
fn dns_responses_from_a_trusted_server_to_a_pod_with_domain_interests_are_marked_to_hold() {
    let topology = Topology::new("sluicedommark", INTERFACE);
    let local = [LocalEndpoint {
        namespace: "shop".into(),
        name: "client".into(),
        interface: INTERFACE.into(),
        egress_gateway: false,
    }];
    // Echo servers on the outside host: port 53 trusted, port 5353 not.
    let servers: Vec<UdpSocket> = in_namespace(&topology.outside, || {
        [53, 5353]
            .into_iter()
            .map(|port| {
                let socket = UdpSocket::bind(SocketAddr::new(OUTSIDE.parse().unwrap(), port)).expect("bind");
                socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                socket
            })
            .collect()
    });
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for server in &servers {
            let stop = &stop;
            scope.spawn(move || {
                let mut buffer = [0u8; 512];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((length, peer)) = server.recv_from(&mut buffer) {
                        let _ = server.send_to(&buffer[..length], peer);
                    }
                }
            });
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The pod may send UDP anywhere, and reach names under *.partner.example.
            let manifests = MANIFESTS.replace(
                "    - {action: Allow, protocol: TCP,",
                "    - {action: Allow, protocol: UDP}\n    - {action: Allow, protocol: TCP,",
            );
            let dataplane =
                sluice_policy::compile(&sluice_api::load_str("domains.yaml", &manifests).unwrap());
            let dns = DnsRender {
                trusted_servers: vec![SocketAddr::new(OUTSIDE.parse().unwrap(), 53)],
                ..DnsRender::default()
            };
            let mut syncer =
                Syncer::new(CommandBackend::in_namespace(&topology.node).expect("nft is installed"));
            syncer
                .sync(&render_with_dns(&dataplane, &local, &dns))
                .expect("the kernel takes the ruleset");
            install_mark_counter(&topology);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !asks(&topology, 53) {
                assert!(Instant::now() < deadline, "the outside host never answered");
            }
            let (trusted, untrusted) = marked(&topology);
            assert!(trusted >= 1, "a response from the trusted server was not marked");
            assert!(asks(&topology, 5353));
            assert_eq!(
                marked(&topology),
                (trusted, untrusted),
                "an untrusted port was marked"
            );
            assert_eq!(untrusted, 0);

            // The same pod without domain rules: its responses are not held.
            let plain = sluice_policy::compile(
                &sluice_api::load_str(
                    "plain.yaml",
                    &manifests.replace("domains: ['*.partner.example']", "nets: [192.0.2.0/24]"),
                )
                .unwrap(),
            );
            syncer
                .sync(&render_with_dns(&plain, &local, &dns))
                .expect("the kernel takes the ruleset");
            assert!(asks(&topology, 53), "the response was not delivered");
            assert_eq!(marked(&topology).0, trusted, "a pod without interests was marked");
        }));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    });
}
