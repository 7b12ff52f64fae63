//! Flow logs read back from the kernel (root; private network namespaces): a pod wired as the
//! CNI plugin wires one, its node running the rendered ruleset with flow logs on, an outside
//! host. The NFLOG reader sees each allowed connection's first packet once with the hit id of
//! the rule that allowed it (inline, or through a merged run's verdict map), denied packets
//! with the deny rule's or the tier end's id, an incoming connection with the profile's id, and
//! a flood of denied packets only at the configured rate; every id is the one the evaluator
//! gives the same flow. The conntrack reader sees the connection start and end, and its
//! counters (live in a dump, final in the Destroy event) match what was sent.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sluice_api::values::{Action, PolicyType};
use sluice_dataplane::conntrack_events::{ConntrackDump, ConntrackEvents, ConntrackGroup, enable_accounting};
use sluice_dataplane::nflog::NflogReader;
use sluice_dataplane::{DnsRender, FlowLogs, LocalEndpoint, Syncer, render_with_flow_logs};
use sluice_flowlog::events::{ConntrackEvent, ConntrackEventKind, LoggedPacket};
use sluice_nft::CommandBackend;
use sluice_policy::{Dataplane, Flow, PolicyHit};
use support::{OUTSIDE, POD, Topology, in_namespace, sysctl};

mod support;

const INTERFACE: &str = "slcflowlog";
const DENY_RATE: u32 = 10;
const FLOW_LOGS: FlowLogs = FlowLogs {
    group: 7100,
    deny_rate_per_second: DENY_RATE,
};
/// Bytes the measured connection sends.
const SENT: usize = 200_000;

fn manifests() -> String {
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    text.push_str(&support::workload_endpoint(
        "shop", "client", "client", POD, INTERFACE,
    ));
    text.push_str(&format!(
        r#"
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: client-egress}}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - {{action: Allow, protocol: TCP, destination: {{nets: ["{OUTSIDE}/32"], ports: [8080]}}}}
    - {{action: Allow, protocol: TCP, destination: {{nets: ["{OUTSIDE}/32"], ports: [8083]}}}}
    - {{action: Deny, protocol: TCP, destination: {{nets: ["{OUTSIDE}/32"], ports: [8081]}}}}
    - {{action: Deny, protocol: TCP, destination: {{nets: ["{OUTSIDE}/32"], ports: [8084]}}}}
    - {{action: Allow, protocol: ICMP}}
    - {{action: Deny, protocol: UDP, destination: {{nets: ["{OUTSIDE}/32"], ports: [9999]}}}}
"#
    ));
    text
}

/// The hit the evaluator gives a flow in `direction`.
fn expected_hit(ir: &Dataplane, flow: Flow, direction: PolicyType) -> PolicyHit {
    let verdict = ir.evaluate(&flow);
    let (endpoint, decision) = match direction {
        PolicyType::Egress => verdict.egress,
        PolicyType::Ingress => verdict.ingress,
    }
    .expect("a local endpoint");
    ir.hit_of(&ir.endpoints[endpoint], direction, decision)
        .expect("a hit")
}

fn tcp_flow(source: &str, destination: &str, port: u16) -> Flow {
    Flow {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
        protocol: 6,
        source_port: None,
        destination_port: Some(port),
        icmp_type: None,
        icmp_code: None,
    }
}

/// Accepts connections forever, reporting each one's peer port and the bytes it read.
fn serve(listener: TcpListener, report: mpsc::Sender<(u16, usize)>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let report = report.clone();
            std::thread::spawn(move || {
                let peer = stream.peer_addr().map(|address| address.port()).unwrap_or(0);
                let mut received = Vec::new();
                let _ = stream.read_to_end(&mut received);
                let _ = report.send((peer, received.len()));
            });
        }
    });
}

/// Connects from the pod, sends `bytes`, closes the sending side and waits for the server to
/// close; returns the local port.
fn send_from_pod(topology: &Topology, port: u16, bytes: usize) -> u16 {
    in_namespace(&topology.pod, || {
        let target = SocketAddr::new(OUTSIDE.parse().unwrap(), port);
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2)).expect("allowed");
        stream.write_all(&vec![7u8; bytes]).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let _ = stream.read(&mut [0; 16]);
        stream.local_addr().unwrap().port()
    })
}

/// What the server read from the connection from `port`.
fn received_from(reports: &mpsc::Receiver<(u16, usize)>, port: u16) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (peer, bytes) = reports
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the server never saw the connection from port {port}"));
        if peer == port {
            return bytes;
        }
    }
}

fn refused_from_pod(topology: &Topology, port: u16) -> bool {
    in_namespace(&topology.pod, || {
        let target = SocketAddr::new(OUTSIDE.parse().unwrap(), port);
        TcpStream::connect_timeout(&target, Duration::from_millis(1500)).is_err()
    })
}

/// Everything logged until the group has been quiet for half a second.
fn drain(reader: &mut NflogReader) -> Vec<LoggedPacket> {
    let mut packets = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(500) {
        let batch = reader.receive().expect("reading NFLOG");
        assert_eq!(batch.unreadable, 0);
        if !batch.packets.is_empty() {
            quiet_since = Instant::now();
        }
        packets.extend(batch.packets);
    }
    packets
}

fn conntrack_events(events: &mut ConntrackEvents) -> Vec<ConntrackEvent> {
    let mut all = Vec::new();
    loop {
        let batch = events.receive().expect("reading conntrack events");
        if batch.events.is_empty() {
            return all;
        }
        all.extend(batch.events);
    }
}

#[test]
fn the_kernel_logs_each_decision_with_its_hit_and_conntrack_counts_what_was_sent() {
    let topology = Topology::new("sluiceflowlog", INTERFACE);
    let outside: IpAddr = OUTSIDE.parse().unwrap();
    let (report, reports) = mpsc::channel();
    for port in [8080, 8083] {
        let listener = in_namespace(&topology.outside, || {
            TcpListener::bind(SocketAddr::new(outside, port)).expect("listen")
        });
        serve(listener, report.clone());
    }
    let pod_listener = in_namespace(&topology.pod, || {
        TcpListener::bind(SocketAddr::new(POD.parse().unwrap(), 9090)).expect("listen")
    });
    serve(pod_listener, report.clone());

    // Accounting before any connection (only later ones are counted); closed connections
    // leave conntrack a second after, so the test sees them end.
    enable_accounting(Some(&topology.node)).expect("accounting");
    sysctl(
        &topology.node,
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1",
    );

    let ir = sluice_policy::compile(&sluice_api::load_str("flow-log-kernel.yaml", &manifests()).unwrap());
    let local = [LocalEndpoint {
        namespace: "shop".into(),
        name: "client".into(),
        interface: INTERFACE.into(),
        egress_gateway: false,
    }];
    let ruleset = render_with_flow_logs(&ir, &local, &DnsRender::default(), Some(FLOW_LOGS));
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&topology.node).expect("nft is installed"));
    syncer.sync(&ruleset).expect("the kernel takes the ruleset");

    // The path answers (neighbours resolved) before anything is measured.
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_namespace(&topology.pod, || {
        TcpStream::connect_timeout(&SocketAddr::new(outside, 8080), Duration::from_millis(500)).is_err()
    }) {
        assert!(Instant::now() < deadline, "the allowed path never answered");
    }
    reports.recv_timeout(Duration::from_secs(2)).unwrap();

    let mut log = NflogReader::open(FLOW_LOGS.group, Some(&topology.node), Duration::from_millis(200))
        .expect("bind the NFLOG group");
    let mut events = ConntrackEvents::subscribe(
        Some(&topology.node),
        &[ConntrackGroup::New, ConntrackGroup::Destroy],
        Duration::from_millis(200),
    )
    .expect("subscribe to conntrack events");
    let mut dump = ConntrackDump::open(Some(&topology.node)).expect("conntrack dump socket");

    // A connection that stays open while the table is dumped: its live counters.
    let live = in_namespace(&topology.pod, || {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::new(outside, 8083), Duration::from_secs(2))
            .expect("allowed");
        stream.write_all(&vec![1u8; SENT]).unwrap();
        stream
    });
    let live_port = live.local_addr().unwrap().port();
    std::thread::sleep(Duration::from_millis(300));
    let listed = dump.dump().expect("dump");
    let entry = listed
        .events
        .iter()
        .find(|event| event.original.source_port == live_port)
        .unwrap_or_else(|| panic!("the live connection is not in the dump: {listed:?}"));
    assert_eq!(entry.kind, ConntrackEventKind::Update);
    let counted = entry.original_counters.expect("accounting is on");
    assert!(
        counted.bytes >= SENT as u64 && counted.bytes <= SENT as u64 + counted.packets * 80,
        "{SENT} bytes sent, {counted:?} counted"
    );
    live.shutdown(Shutdown::Write).unwrap();
    drop(live);

    // The measured connection, allowed by rule 0 (one lookup in the merged run).
    let measured_port = send_from_pod(&topology, 8080, SENT);
    assert_eq!(received_from(&reports, measured_port), SENT);
    // Fifty more allowed connections: allowed traffic is logged unlimited, once per connection.
    let burst: Vec<u16> = (0..50).map(|_| send_from_pod(&topology, 8080, 10)).collect();
    // Denied: rule 2 (merged run of two Deny rules), and the end of the tier (8082).
    assert!(refused_from_pod(&topology, 8081), "8081 is denied");
    assert!(
        refused_from_pod(&topology, 8082),
        "8082 is denied at the tier's end"
    );
    // Rule 4, an inline Allow.
    let ping = Command::new("ip")
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
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stderr)
    );
    // Into the pod, which has no ingress policy: the profile allows.
    let incoming_port = in_namespace(&topology.outside, || {
        let stream = TcpStream::connect_timeout(
            &SocketAddr::new(POD.parse().unwrap(), 9090),
            Duration::from_secs(2),
        )
        .expect("the profile allows");
        stream.local_addr().unwrap().port()
    });
    // A flood of denied datagrams (rule 5) for a second.
    let flood_start = Instant::now();
    let sent = in_namespace(&topology.pod, || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut sent = 0u64;
        while flood_start.elapsed() < Duration::from_secs(1) {
            if socket.send_to(b"flood", (outside, 9999)).is_ok() {
                sent += 1;
            }
        }
        sent
    });
    let flood_seconds = flood_start.elapsed().as_secs_f64();
    let logged = drain(&mut log);
    assert_eq!(log.overflows(), 0);

    let hit = |flow: Flow, direction: PolicyType| expected_hit(&ir, flow, direction);
    let of = |logged: &[LoggedPacket], check: &dyn Fn(&LoggedPacket) -> bool| -> Vec<LoggedPacket> {
        logged.iter().filter(|packet| check(packet)).cloned().collect()
    };
    let rule_0 = hit(tcp_flow(POD, OUTSIDE, 8080), PolicyType::Egress);
    assert_eq!((rule_0.rule_index, rule_0.action), (0, Action::Allow));
    let measured = of(&logged, &|packet| packet.tuple.source_port == measured_port);
    assert_eq!(measured.len(), 1, "once per connection: {measured:?}");
    assert_eq!(measured[0].hit, Some(rule_0.id()));
    assert_eq!(measured[0].tuple.protocol, 6);
    assert_eq!(measured[0].tuple.destination, outside);
    assert!(
        measured[0].length <= 80,
        "the first packet is the SYN: {measured:?}"
    );
    for port in &burst {
        let packets = of(&logged, &|packet| packet.tuple.source_port == *port);
        assert_eq!(packets.len(), 1, "connection from port {port}: {packets:?}");
        assert_eq!(packets[0].hit, Some(rule_0.id()));
    }

    // Rule 1 shares the verdict map lookup with rule 0, and is attributed to itself.
    let rule_1 = hit(tcp_flow(POD, OUTSIDE, 8083), PolicyType::Egress);
    assert_eq!((rule_1.rule_index, rule_1.action), (1, Action::Allow));
    let kept_open = of(&logged, &|packet| packet.tuple.source_port == live_port);
    assert_eq!(kept_open.len(), 1, "{kept_open:?}");
    assert_eq!(kept_open[0].hit, Some(rule_1.id()));

    let rule_2 = hit(tcp_flow(POD, OUTSIDE, 8081), PolicyType::Egress);
    assert_eq!((rule_2.rule_index, rule_2.action), (2, Action::Deny));
    let denied = of(&logged, &|packet| packet.tuple.destination_port == 8081);
    assert!(
        !denied.is_empty() && denied.iter().all(|packet| packet.hit == Some(rule_2.id())),
        "{denied:?}"
    );

    let tier_end = hit(tcp_flow(POD, OUTSIDE, 8082), PolicyType::Egress);
    assert_eq!((tier_end.rule_index, tier_end.action), (-1, Action::Deny));
    let ended = of(&logged, &|packet| packet.tuple.destination_port == 8082);
    assert!(
        !ended.is_empty() && ended.iter().all(|packet| packet.hit == Some(tier_end.id())),
        "{ended:?}"
    );

    let icmp_flow = Flow {
        protocol: 1,
        destination_port: None,
        icmp_type: Some(8),
        icmp_code: Some(0),
        ..tcp_flow(POD, OUTSIDE, 0)
    };
    let rule_4 = hit(icmp_flow, PolicyType::Egress);
    assert_eq!((rule_4.rule_index, rule_4.action), (4, Action::Allow));
    let pinged = of(&logged, &|packet| packet.tuple.protocol == 1);
    assert_eq!(pinged.len(), 1, "{pinged:?}");
    assert_eq!((pinged[0].hit, pinged[0].icmp), (Some(rule_4.id()), Some((8, 0))));

    let profile = hit(tcp_flow(OUTSIDE, POD, 9090), PolicyType::Ingress);
    assert_eq!(profile, PolicyHit::profile("shop", PolicyType::Ingress));
    let incoming = of(&logged, &|packet| packet.tuple.source_port == incoming_port);
    assert_eq!(incoming.len(), 1, "{incoming:?}");
    assert_eq!(incoming[0].hit, Some(profile.id()));
    assert_eq!(incoming[0].tuple.destination_port, 9090);

    let rule_5 = hit(
        Flow {
            protocol: 17,
            ..tcp_flow(POD, OUTSIDE, 9999)
        },
        PolicyType::Egress,
    );
    assert_eq!((rule_5.rule_index, rule_5.action), (5, Action::Deny));
    let flooded = of(&logged, &|packet| packet.tuple.destination_port == 9999);
    assert!(flooded.iter().all(|packet| packet.hit == Some(rule_5.id())));
    // nft's limit allows a burst of 5 on top of the rate.
    let ceiling = (f64::from(DENY_RATE) * (flood_seconds + 0.5)).ceil() as usize + 5;
    assert!(
        !flooded.is_empty() && flooded.len() <= ceiling,
        "{sent} datagrams sent in {flood_seconds:.2} s, {} logged (at most {ceiling})",
        flooded.len()
    );
    assert!(sent > 1000, "the flood sent only {sent} datagrams");

    // Conntrack: the measured connection started (New) and, once its entry left (a dump
    // reaps entries whose last timeout ran out), ended with the counters of what was sent.
    std::thread::sleep(Duration::from_millis(1500));
    dump.dump().expect("dump");
    let seen = conntrack_events(&mut events);
    assert_eq!(events.overflows(), 0);
    let started: Vec<&ConntrackEvent> = seen
        .iter()
        .filter(|event| event.original.source_port == measured_port && event.kind == ConntrackEventKind::New)
        .collect();
    assert_eq!(started.len(), 1, "{seen:?}");
    let new = started[0];
    // The same entry (conntrack's id) ended once, after it started.
    let of_entry: Vec<ConntrackEventKind> = seen
        .iter()
        .filter(|event| event.id == new.id && event.original == new.original)
        .map(|event| event.kind)
        .collect();
    assert_eq!(
        of_entry,
        [ConntrackEventKind::New, ConntrackEventKind::Destroy],
        "{seen:?}"
    );
    let destroy = seen
        .iter()
        .find(|event| event.id == new.id && event.kind == ConntrackEventKind::Destroy)
        .unwrap();
    assert_eq!(new.original.destination, outside);
    assert_eq!(new.original.destination_port, 8080);
    assert_eq!(new.reply.source, outside);
    assert_eq!(new.reply.destination_port, measured_port);
    let original = destroy.original_counters.expect("final counters");
    let reply = destroy.reply_counters.expect("final counters");
    assert!(
        original.bytes >= SENT as u64 && original.bytes <= SENT as u64 + original.packets * 80,
        "{SENT} bytes sent, {original:?} counted"
    );
    assert!(
        reply.packets >= 2 && reply.bytes <= reply.packets * 80,
        "{reply:?}"
    );
    // The live connection ended too, with everything it sent.
    let live_end = seen
        .iter()
        .find(|event| event.original.source_port == live_port && event.kind == ConntrackEventKind::Destroy)
        .unwrap_or_else(|| panic!("no end of the live connection: {seen:?}"));
    assert!(live_end.original_counters.unwrap().bytes >= SENT as u64);
}

#[test]
fn a_group_has_one_reader_until_it_is_dropped_and_a_missing_namespace_is_named() {
    let namespace = support::Namespace::new("nflogbind");
    let elsewhere = support::Namespace::new("nflogbind2");
    let (namespace, elsewhere) = (&namespace.0, &elsewhere.0);
    let timeout = Duration::from_millis(100);
    let first = NflogReader::open(7100, Some(namespace), timeout).expect("bind");
    let error = NflogReader::open(7100, Some(namespace), timeout)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("NFLOG group 7100")
            && error.contains(namespace.as_str())
            && error.contains("another socket"),
        "{error}"
    );
    // Another group is free, and so is the same group in another namespace.
    let _other = NflogReader::open(7101, Some(namespace), timeout).expect("another group");
    NflogReader::open(7100, Some(elsewhere), timeout).expect("the same group in another namespace");
    drop(first);
    let mut again = NflogReader::open(7100, Some(namespace), timeout).expect("free again once dropped");
    assert!(again.receive().unwrap().packets.is_empty());
    let missing = NflogReader::open(7100, Some("sluice-no-such-namespace"), timeout)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("sluice-no-such-namespace"), "{missing}");
    let missing = enable_accounting(Some("sluice-no-such-namespace"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("sluice-no-such-namespace"), "{missing}");
}
