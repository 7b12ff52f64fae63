//! Event sequences through the aggregator, with hits taken from a compiled IR the way the
//! kernel reports them: `evaluate` → `hit_of` → `id`.

use std::collections::HashMap;
use std::net::IpAddr;

use sluice_api::values::PolicyType;
use sluice_flowlog::events::{ConntrackEvent, ConntrackEventKind, Counters, LoggedPacket, Timestamp, Tuple};
use sluice_flowlog::{
    Aggregator, Config, EndpointType, FlowAction, FlowRecord, PendingQuery, Reporter,
    network_sets_from_entities,
};
use sluice_policy::{Dataplane, Flow, HitId, PolicyHit};

mod common;
use common::{MANIFESTS, STAGED, compiled};

const WEB: &str = "10.10.0.10";
const API: &str = "10.10.0.11";

fn address(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn tcp(source: &str, source_port: u16, destination: &str, destination_port: u16) -> Tuple {
    Tuple {
        source: address(source),
        destination: address(destination),
        protocol: 6,
        source_port,
        destination_port,
    }
}

fn flow_of_tuple(tuple: &Tuple) -> Flow {
    sluice_flowlog::flow_of(tuple)
}

/// The hit the kernel would log for one side of a tuple, as the renderer derives it.
fn hit(dataplane: &Dataplane, tuple: &Tuple, direction: PolicyType) -> PolicyHit {
    let verdict = dataplane.evaluate(&flow_of_tuple(tuple));
    let (endpoint, decision) = match direction {
        PolicyType::Egress => verdict.egress,
        PolicyType::Ingress => verdict.ingress,
    }
    .expect("the side is an endpoint");
    dataplane
        .hit_of(&dataplane.endpoints[endpoint], direction, decision)
        .expect("a kernel decision")
}

fn logged(at: u64, hit: Option<HitId>, tuple: Tuple) -> LoggedPacket {
    LoggedPacket {
        at: Timestamp(at),
        hit,
        tuple,
        length: 60,
        icmp: None,
        tcp_sequence: None,
    }
}

fn counters(packets: u64, bytes: u64) -> Option<Counters> {
    Some(Counters { packets, bytes })
}

fn conntrack(
    at: u64,
    kind: ConntrackEventKind,
    id: u32,
    tuple: Tuple,
    original: (u64, u64),
    reply: (u64, u64),
) -> ConntrackEvent {
    ConntrackEvent {
        at: Timestamp(at),
        kind,
        id,
        original: tuple,
        reply: Tuple {
            source: tuple.destination,
            destination: tuple.source,
            source_port: tuple.destination_port,
            destination_port: tuple.source_port,
            protocol: tuple.protocol,
        },
        original_counters: counters(original.0, original.1),
        reply_counters: counters(reply.0, reply.1),
        closed: false,
        mark: 0,
    }
}

fn aggregator_with(config: Config) -> (Aggregator, Dataplane) {
    let (dataplane, network_sets) = compiled(MANIFESTS);
    let mut aggregator = Aggregator::new(config, Timestamp(0)).unwrap();
    aggregator.update_policy(&dataplane, &network_sets, Timestamp(0));
    (aggregator, dataplane)
}

fn node_one() -> Config {
    Config {
        host: "node-1".to_string(),
        ..Config::default()
    }
}

fn only(records: &[FlowRecord]) -> &FlowRecord {
    assert_eq!(records.len(), 1, "{records:#?}");
    &records[0]
}

#[test]
fn an_allowed_connection_across_two_intervals() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let tuple = tcp(WEB, 40000, "203.0.113.5", 443);
    let allowed = hit(&dataplane, &tuple, PolicyType::Egress);
    assert_eq!(allowed.text(), "default|NetworkPolicy|prod/web-egress|1|allow");
    aggregator.logged_packet(&logged(1_000, Some(allowed.id()), tuple));
    aggregator.conntrack(&conntrack(
        1_001,
        ConntrackEventKind::New,
        7,
        tuple,
        (1, 60),
        (0, 0),
    ));
    aggregator.conntrack(&conntrack(
        5_000,
        ConntrackEventKind::Update,
        7,
        tuple,
        (10, 1_000),
        (8, 5_000),
    ));
    assert_eq!(aggregator.next_drain(), Timestamp(15_000));
    let first = aggregator.drain(Timestamp(15_000));
    let record = only(&first);
    assert_eq!((record.start_time, record.end_time), (0, 15));
    assert_eq!(record.host, "node-1");
    assert_eq!(
        (
            record.source_type,
            record.source_namespace.as_str(),
            record.source_name.as_str()
        ),
        (EndpointType::Workload, "prod", "web")
    );
    assert_eq!(
        (
            record.dest_type,
            record.dest_namespace.as_str(),
            record.dest_name_aggr.as_str()
        ),
        (EndpointType::NetworkSet, "-", "partners")
    );
    assert_eq!(record.dest_ip, None, "a network set is named, not addressed");
    assert_eq!((record.dest_port, record.proto.as_str()), (Some(443), "tcp"));
    assert_eq!(
        (record.reporter, record.action),
        (Reporter::Src, FlowAction::Allow)
    );
    assert_eq!(record.policies, vec![allowed.text()]);
    assert!(record.pending_policies.is_empty());
    assert_eq!((record.packets_out, record.bytes_out), (10, 1_000));
    assert_eq!((record.packets_in, record.bytes_in), (8, 5_000));
    assert_eq!(
        (
            record.num_flows,
            record.num_flows_started,
            record.num_flows_completed,
            record.num_flows_live
        ),
        (1, 1, 0, 1)
    );

    aggregator.conntrack(&conntrack(
        20_000,
        ConntrackEventKind::Update,
        7,
        tuple,
        (15, 1_500),
        (12, 9_000),
    ));
    aggregator.conntrack(&conntrack(
        25_000,
        ConntrackEventKind::Destroy,
        7,
        tuple,
        (20, 2_000),
        (14, 9_500),
    ));
    let second = aggregator.drain(Timestamp(30_000));
    let record = only(&second);
    assert_eq!((record.start_time, record.end_time), (15, 30));
    assert_eq!((record.packets_out, record.bytes_out), (10, 1_000));
    assert_eq!((record.packets_in, record.bytes_in), (6, 4_500));
    assert_eq!(
        (
            record.num_flows,
            record.num_flows_started,
            record.num_flows_completed,
            record.num_flows_live
        ),
        (1, 0, 1, 0)
    );
    assert!(aggregator.drain(Timestamp(45_000)).is_empty());
    assert_eq!(aggregator.gauges().tracked_connections, 0);

    let counted = aggregator
        .hit_counters()
        .into_iter()
        .find(|(counted, _)| **counted == allowed)
        .expect("the hit is counted")
        .1;
    assert_eq!(
        (counted.packets, counted.bytes, counted.connections),
        (34, 11_500, 1)
    );
    assert_eq!(aggregator.action_counters().allow.connections, 1);
}

#[test]
fn a_connection_between_two_local_pods_gives_a_record_per_reporter() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let tuple = tcp(WEB, 40001, API, 8080);
    let egress = hit(&dataplane, &tuple, PolicyType::Egress);
    let ingress = hit(&dataplane, &tuple, PolicyType::Ingress);
    aggregator.logged_packet(&logged(1_000, Some(egress.id()), tuple));
    aggregator.logged_packet(&logged(1_000, Some(ingress.id()), tuple));
    aggregator.conntrack(&conntrack(
        1_001,
        ConntrackEventKind::New,
        9,
        tuple,
        (1, 60),
        (0, 0),
    ));
    aggregator.conntrack(&conntrack(
        2_000,
        ConntrackEventKind::Destroy,
        9,
        tuple,
        (5, 400),
        (4, 900),
    ));
    let records = aggregator.drain(Timestamp(15_000));
    assert_eq!(records.len(), 2, "{records:#?}");
    let source = records
        .iter()
        .find(|record| record.reporter == Reporter::Src)
        .unwrap();
    let destination = records
        .iter()
        .find(|record| record.reporter == Reporter::Dst)
        .unwrap();
    assert_eq!(
        source.policies,
        vec!["default|NetworkPolicy|prod/web-egress|0|allow"]
    );
    assert_eq!(
        destination.policies,
        vec!["default|NetworkPolicy|prod/api-ingress|0|allow"]
    );
    for record in &records {
        assert_eq!(
            (record.dest_type, record.dest_name.as_str()),
            (EndpointType::Workload, "api")
        );
        assert_eq!(
            (
                record.num_flows,
                record.num_flows_started,
                record.num_flows_completed,
                record.num_flows_live
            ),
            (1, 1, 1, 0)
        );
    }
    // The source sent the original direction; the destination received it.
    assert_eq!(
        (
            source.packets_out,
            source.bytes_out,
            source.packets_in,
            source.bytes_in
        ),
        (5, 400, 4, 900)
    );
    assert_eq!(
        (
            destination.packets_in,
            destination.bytes_in,
            destination.packets_out,
            destination.bytes_out
        ),
        (5, 400, 4, 900)
    );
}

#[test]
fn repeated_denied_syns_are_one_flow_per_interval() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let tuple = tcp(WEB, 40002, "8.8.8.8", 53);
    let denied = hit(&dataplane, &tuple, PolicyType::Egress);
    assert_eq!(denied.text(), "default|NetworkPolicy|prod/web-egress|-1|deny");
    for at in [1_000, 2_000, 4_000] {
        aggregator.logged_packet(&logged(at, Some(denied.id()), tuple));
    }
    let other_port = Tuple {
        source_port: 40003,
        ..tuple
    };
    aggregator.logged_packet(&logged(5_000, Some(denied.id()), other_port));
    let records = aggregator.drain(Timestamp(15_000));
    let record = only(&records);
    assert_eq!(
        (record.action, record.reporter),
        (FlowAction::Deny, Reporter::Src)
    );
    assert_eq!(record.policies, vec![denied.text()]);
    assert_eq!(
        (record.dest_type, record.dest_name_aggr.as_str(), record.dest_ip),
        (EndpointType::Network, "pub", Some(address("8.8.8.8")))
    );
    assert_eq!(
        (record.packets_out, record.bytes_out, record.packets_in),
        (4, 240, 0)
    );
    assert_eq!(
        (
            record.num_flows,
            record.num_flows_started,
            record.num_flows_completed,
            record.num_flows_live
        ),
        (2, 2, 2, 0)
    );
    assert_eq!(
        aggregator.gauges().tracked_connections,
        0,
        "denied flows are not tracked"
    );
    // The next interval starts afresh: the same tuple is a flow of its own there.
    aggregator.logged_packet(&logged(16_000, Some(denied.id()), tuple));
    let records = aggregator.drain(Timestamp(30_000));
    assert_eq!(only(&records).num_flows_started, 1);
    let deny = aggregator.action_counters().deny;
    assert_eq!((deny.packets, deny.bytes, deny.connections), (5, 300, 3));
}

#[test]
fn unknown_hit_ids_are_counted_and_their_connection_recorded_without_policy() {
    let (mut aggregator, _) = aggregator_with(node_one());
    let tuple = tcp(WEB, 40004, "198.51.100.9", 443);
    aggregator.logged_packet(&logged(1_000, Some(HitId(0x1234)), tuple));
    aggregator.logged_packet(&logged(1_000, None, tuple));
    let statistics = aggregator.statistics();
    assert_eq!(
        (statistics.unknown_hit_ids, statistics.foreign_log_packets),
        (1, 1)
    );
    assert_eq!(aggregator.gauges().tracked_connections, 0);
    // Conntrack confirms it: every hook accepted it, but no logged hit says which rule.
    aggregator.conntrack(&conntrack(
        1_001,
        ConntrackEventKind::New,
        3,
        tuple,
        (2, 120),
        (1, 60),
    ));
    // Traffic between two outside hosts is not this node's to report.
    aggregator.conntrack(&conntrack(
        1_002,
        ConntrackEventKind::New,
        4,
        tcp("192.0.2.1", 1, "192.0.2.2", 2),
        (1, 60),
        (0, 0),
    ));
    let records = aggregator.drain(Timestamp(15_000));
    let record = only(&records);
    assert_eq!(
        (record.action, record.reporter),
        (FlowAction::Allow, Reporter::Src)
    );
    assert!(record.policies.is_empty());
    assert_eq!(
        (record.packets_out, record.packets_in, record.num_flows_started),
        (2, 1, 1)
    );
    let statistics = aggregator.statistics();
    assert_eq!(
        (
            statistics.unattributed_connections,
            statistics.foreign_connections
        ),
        (1, 1)
    );
}

#[test]
fn a_connection_first_seen_in_a_dump_counts_only_what_follows() {
    let (mut aggregator, _) = aggregator_with(node_one());
    let tuple = tcp(WEB, 40005, "198.51.100.9", 443);
    aggregator.conntrack(&conntrack(
        1_000,
        ConntrackEventKind::Update,
        5,
        tuple,
        (100, 10_000),
        (90, 90_000),
    ));
    aggregator.conntrack(&conntrack(
        2_000,
        ConntrackEventKind::Update,
        5,
        tuple,
        (103, 10_300),
        (91, 91_000),
    ));
    let records = aggregator.drain(Timestamp(15_000));
    let record = only(&records);
    assert_eq!(
        (
            record.packets_out,
            record.bytes_out,
            record.packets_in,
            record.bytes_in
        ),
        (3, 300, 1, 1_000)
    );
    assert_eq!((record.num_flows_started, record.num_flows_live), (0, 1));
}

/// The counts of a record: flows, started, completed, live.
fn flow_counts(record: &FlowRecord) -> (u64, u64, u64, u64) {
    (
        record.num_flows,
        record.num_flows_started,
        record.num_flows_completed,
        record.num_flows_live,
    )
}

#[test]
fn read_by_dumps_alone_a_connection_ends_when_closed_or_gone_from_a_dump() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let closing = tcp(WEB, 41000, "203.0.113.5", 443);
    let allowed = hit(&dataplane, &closing, PolicyType::Egress);
    aggregator.logged_packet(&logged(1_000, Some(allowed.id()), closing));
    let update = |at, original, reply| conntrack(at, ConntrackEventKind::Update, 7, closing, original, reply);
    aggregator.dumped(&[update(5_000, (3, 180), (2, 120))], Timestamp(4_990));
    aggregator.dumped(
        &[ConntrackEvent {
            closed: true,
            ..update(10_000, (5, 300), (4, 240))
        }],
        Timestamp(9_990),
    );
    let records = aggregator.drain(Timestamp(15_000));
    let record = only(&records);
    assert_eq!((record.packets_out, record.bytes_out), (5, 300));
    assert_eq!((record.packets_in, record.bytes_in), (4, 240));
    assert_eq!(flow_counts(record), (1, 1, 1, 0), "TIME_WAIT completes it");
    assert_eq!(aggregator.statistics().closed_in_dumps, 1);

    // Conntrack lists the closed entry until its TIME_WAIT ends: it is not a connection again.
    aggregator.dumped(
        &[ConntrackEvent {
            closed: true,
            ..update(20_000, (5, 300), (4, 240))
        }],
        Timestamp(19_990),
    );
    assert_eq!(aggregator.gauges().tracked_connections, 0);
    assert!(aggregator.drain(Timestamp(30_000)).is_empty());
    assert_eq!(aggregator.statistics().unattributed_connections, 0);

    // Opened before a dump that does not list it: it went between two dumps. Opened after the
    // dump was asked for: the dump could not know it yet.
    let gone = tcp(WEB, 41001, "203.0.113.5", 443);
    let too_new = tcp(WEB, 41002, "203.0.113.5", 443);
    aggregator.logged_packet(&logged(31_000, Some(allowed.id()), gone));
    aggregator.logged_packet(&logged(34_995, Some(allowed.id()), too_new));
    aggregator.dumped(&[], Timestamp(34_990));
    assert_eq!(aggregator.statistics().gone_from_dumps, 1);
    let records = aggregator.drain(Timestamp(45_000));
    let record = only(&records);
    assert_eq!(flow_counts(record), (2, 2, 1, 1));
}

#[test]
fn a_first_packet_read_after_a_dump_listed_its_connection_counts_it_whole_and_started() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let tuple = tcp(WEB, 41030, "203.0.113.5", 443);
    let allowed = hit(&dataplane, &tuple, PolicyType::Egress);
    // The dump ran between the first packet and the agent reading its log message.
    aggregator.dumped(
        &[conntrack(
            1_000,
            ConntrackEventKind::Update,
            9,
            tuple,
            (3, 180),
            (2, 120),
        )],
        Timestamp(995),
    );
    aggregator.logged_packet(&LoggedPacket {
        tcp_sequence: Some(5),
        ..logged(1_010, Some(allowed.id()), tuple)
    });
    let records = aggregator.drain(Timestamp(15_000));
    let record = only(&records);
    assert_eq!(record.policies, vec![allowed.text()]);
    assert_eq!(flow_counts(record), (1, 1, 0, 1));
    assert_eq!((record.packets_out, record.bytes_out), (3, 180));
    assert_eq!((record.packets_in, record.bytes_in), (2, 120));
}

#[test]
fn a_connection_a_dump_listed_just_before_an_interval_ends_waits_for_its_logged_first_packet() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let tuple = tcp(WEB, 41040, "203.0.113.5", 443);
    let allowed = hit(&dataplane, &tuple, PolicyType::Egress);
    let unlogged = tcp(WEB, 41041, "203.0.113.5", 443);
    // The interval's last dump lists both while their log messages wait to be read.
    let entry = |id, tuple| conntrack(14_900, ConntrackEventKind::Update, id, tuple, (3, 180), (2, 120));
    aggregator.dumped(&[entry(9, tuple), entry(10, unlogged)], Timestamp(14_895));
    // No record without a deciding rule yet: the packet is likely on its way.
    assert!(aggregator.drain(Timestamp(15_000)).is_empty());
    aggregator.logged_packet(&LoggedPacket {
        tcp_sequence: Some(5),
        ..logged(15_010, Some(allowed.id()), tuple)
    });
    let records = aggregator.drain(Timestamp(30_000));
    let attributed: Vec<_> = records
        .iter()
        .filter(|record| !record.policies.is_empty())
        .collect();
    assert_eq!(attributed.len(), 1);
    assert_eq!(attributed[0].policies, vec![allowed.text()]);
    assert_eq!(flow_counts(attributed[0]), (1, 1, 0, 1));
    // The one whose packet never came is recorded after the grace, without policies.
    assert_eq!(records.len(), 2);
}

#[test]
fn entries_with_a_skipped_mark_bit_are_not_recorded() {
    let (mut aggregator, _) = aggregator_with(Config {
        skipped_connection_mark: 0x0008_0000,
        ..node_one()
    });
    let upstream = tcp(WEB, 41020, "203.0.113.5", 80);
    let own = tcp(WEB, 41021, "203.0.113.5", 80);
    let entry = |id, tuple, mark| ConntrackEvent {
        mark,
        ..conntrack(1_000, ConntrackEventKind::Update, id, tuple, (4, 400), (3, 300))
    };
    aggregator.dumped(
        &[entry(1, upstream, 0x000c_0000), entry(2, own, 0x0004_0000)],
        Timestamp(990),
    );
    assert_eq!(aggregator.statistics().skipped_by_mark, 1);
    assert_eq!(aggregator.gauges().tracked_connections, 1);
    let records = aggregator.drain(Timestamp(15_000));
    assert_eq!(only(&records).source_name, "web");
}

#[test]
fn a_new_syn_on_a_tracked_tuple_ends_the_connection_that_had_it() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let tuple = tcp(WEB, 41010, "203.0.113.5", 443);
    let allowed = hit(&dataplane, &tuple, PolicyType::Egress);
    let syn = |at, sequence| LoggedPacket {
        tcp_sequence: Some(sequence),
        ..logged(at, Some(allowed.id()), tuple)
    };
    aggregator.logged_packet(&syn(1_000, 100));
    aggregator.logged_packet(&syn(2_000, 100)); // retransmitted: the same connection
    aggregator.dumped(
        &[conntrack(
            3_000,
            ConntrackEventKind::Update,
            7,
            tuple,
            (4, 400),
            (3, 300),
        )],
        Timestamp(2_990),
    );
    // The connection closed and a new one took its tuple between two dumps.
    aggregator.logged_packet(&syn(4_000, 9_000));
    aggregator.logged_packet(&syn(4_500, 9_000));
    aggregator.dumped(
        &[conntrack(
            5_000,
            ConntrackEventKind::Update,
            8,
            tuple,
            (2, 120),
            (1, 60),
        )],
        Timestamp(4_990),
    );
    let records = aggregator.drain(Timestamp(15_000));
    let record = only(&records);
    assert_eq!(record.policies, vec![allowed.text()], "both attributed");
    assert_eq!(flow_counts(record), (2, 2, 1, 1));
    assert_eq!((record.packets_out, record.packets_in), (6, 4));
    assert_eq!(aggregator.statistics().unattributed_connections, 0);
}

#[test]
fn a_late_logged_packet_attributes_a_connection_conntrack_reported_first() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let tuple = tcp(WEB, 40006, "203.0.113.8", 443);
    let allowed = hit(&dataplane, &tuple, PolicyType::Egress);
    aggregator.conntrack(&conntrack(
        1_000,
        ConntrackEventKind::New,
        6,
        tuple,
        (1, 60),
        (0, 0),
    ));
    aggregator.logged_packet(&logged(999, Some(allowed.id()), tuple));
    let records = aggregator.drain(Timestamp(15_000));
    let record = only(&records);
    assert_eq!(record.policies, vec![allowed.text()]);
    assert_eq!((record.num_flows, record.num_flows_started), (1, 1));
}

#[test]
fn caps_evict_the_least_recent_connection_and_refuse_keys() {
    let (mut aggregator, dataplane) = aggregator_with(Config {
        max_connections: 2,
        max_denied_keys: 2,
        ..node_one()
    });
    let tuples: Vec<Tuple> = (0..3)
        .map(|port| tcp(WEB, 41000 + port, "203.0.113.9", 443))
        .collect();
    let allowed = hit(&dataplane, &tuples[0], PolicyType::Egress);
    let open = |aggregator: &mut Aggregator, index: usize| {
        let at = 1_000 + index as u64;
        aggregator.logged_packet(&logged(at, Some(allowed.id()), tuples[index]));
        aggregator.conntrack(&conntrack(
            at,
            ConntrackEventKind::New,
            index as u32,
            tuples[index],
            (1, 60),
            (0, 0),
        ));
    };
    open(&mut aggregator, 0);
    open(&mut aggregator, 1);
    // The first one is active again, so the second is the least recent when the third opens.
    aggregator.conntrack(&conntrack(
        2_000,
        ConntrackEventKind::Update,
        0,
        tuples[0],
        (2, 120),
        (1, 60),
    ));
    open(&mut aggregator, 2);
    assert_eq!(aggregator.gauges().tracked_connections, 2);
    assert_eq!(aggregator.statistics().connections_evicted, 1);
    // The survivors are the first and the third: the first's next update is no new connection.
    aggregator.conntrack(&conntrack(
        2_500,
        ConntrackEventKind::Update,
        0,
        tuples[0],
        (3, 180),
        (1, 60),
    ));
    assert_eq!(aggregator.statistics().connections_evicted, 1);
    let denied = hit(&dataplane, &tcp(WEB, 1, "8.8.8.8", 53), PolicyType::Egress);
    for last in 1..=5u8 {
        let destination = format!("8.8.8.{last}");
        aggregator.logged_packet(&logged(3_000, Some(denied.id()), tcp(WEB, 1, &destination, 53)));
    }
    assert_eq!(aggregator.gauges().denied_keys, 2);
    assert_eq!(aggregator.statistics().denied_keys_refused, 3);
    let records = aggregator.drain(Timestamp(15_000));
    let allowed_record = records
        .iter()
        .find(|record| record.action == FlowAction::Allow)
        .unwrap();
    // Evicted connections keep what they carried (they were started) but are not live.
    assert_eq!(
        (
            allowed_record.num_flows,
            allowed_record.num_flows_started,
            allowed_record.num_flows_live
        ),
        (3, 3, 2)
    );
    assert_eq!(
        records
            .iter()
            .filter(|record| record.action == FlowAction::Deny)
            .count(),
        2
    );
}

#[test]
fn a_flood_of_denied_packets_from_random_sources_stays_within_the_caps() {
    let config = Config {
        max_denied_keys: 100,
        max_denied_tuples: 1_000,
        network_source_addresses: true,
        ..node_one()
    };
    let (mut aggregator, dataplane) = aggregator_with(config);
    let denied = hit(&dataplane, &tcp("192.0.2.1", 1, API, 22), PolicyType::Ingress);
    assert_eq!(denied.action, sluice_api::values::Action::Deny);
    // A deterministic stream of "random" sources (xorshift).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..3u64 {
        for index in 0..100_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let source = std::net::Ipv4Addr::from((state >> 32) as u32);
            let tuple = Tuple {
                source: IpAddr::V4(source),
                destination: address(API),
                protocol: 6,
                source_port: state as u16,
                destination_port: 22,
            };
            aggregator.logged_packet(&logged(round * 15_000 + index / 10, Some(denied.id()), tuple));
            let gauges = aggregator.gauges();
            assert!(
                gauges.denied_keys <= 100 && gauges.denied_tuples <= 1_000,
                "{gauges:?}"
            );
            assert_eq!(gauges.tracked_connections, 0);
        }
        let records = aggregator.drain(Timestamp((round + 1) * 15_000));
        assert_eq!(records.len(), 100);
    }
    let statistics = aggregator.statistics();
    assert_eq!(statistics.denied_keys_refused, 3 * (100_000 - 100));
    assert_eq!(statistics.denied_tuples_evicted, 3 * (100_000 - 1_000));
    assert_eq!(aggregator.action_counters().deny.packets, 300_000);
}

#[test]
fn pending_policies_come_from_the_staged_ir_and_domains_name_destinations() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let (staged, _) = compiled(STAGED);
    aggregator.set_pending_policies(Some(Box::new(move |query: &PendingQuery<'_>| {
        let verdict = staged.evaluate_with_domain(&query.flow, query.destination_domain);
        let side = match query.reporter {
            Reporter::Src => verdict.egress.map(|side| (side, PolicyType::Egress)),
            Reporter::Dst => verdict.ingress.map(|side| (side, PolicyType::Ingress)),
        };
        side.and_then(|((endpoint, decision), direction)| {
            staged.hit_of(&staged.endpoints[endpoint], direction, decision)
        })
        .into_iter()
        .collect()
    })));
    let names: HashMap<(IpAddr, IpAddr), String> = HashMap::from([(
        (address(WEB), address("203.0.113.5")),
        "api.partner.example".to_string(),
    )]);
    aggregator.set_domain_names(Some(Box::new(names)));
    let tuple = tcp(WEB, 40007, "203.0.113.5", 443);
    let allowed = hit(&dataplane, &tuple, PolicyType::Egress);
    aggregator.logged_packet(&logged(1_000, Some(allowed.id()), tuple));
    let records = aggregator.drain(Timestamp(15_000));
    let record = only(&records);
    assert_eq!(record.policies, vec![allowed.text()]);
    assert_eq!(
        record.pending_policies,
        vec!["default|NetworkPolicy|prod/default-deny|-1|deny"]
    );
    assert_eq!(record.dest_domains, vec!["api.partner.example"]);
    let line = record.to_json_line();
    assert!(
        line.contains(r#""dest_domains":["api.partner.example"]"#),
        "{line}"
    );
    assert_eq!(&FlowRecord::from_json_line(&line).unwrap(), record);
}

#[test]
fn the_previous_compiles_hits_resolve_for_the_grace_period() {
    let (mut aggregator, dataplane) = aggregator_with(node_one());
    let tuple = tcp(WEB, 40008, "8.8.8.8", 53);
    let denied = hit(&dataplane, &tuple, PolicyType::Egress);
    let (other, network_sets) = compiled(STAGED);
    aggregator.update_policy(&other, &network_sets, Timestamp(10_000));
    aggregator.logged_packet(&logged(69_999, Some(denied.id()), tuple));
    assert_eq!(aggregator.statistics().unknown_hit_ids, 0);
    aggregator.logged_packet(&logged(70_000, Some(denied.id()), tuple));
    assert_eq!(aggregator.statistics().unknown_hit_ids, 1);
    let records = aggregator.drain(Timestamp(75_000));
    assert_eq!(only(&records).policies, vec![denied.text()]);
    assert!(
        aggregator
            .hit_counters()
            .iter()
            .all(|(counted, _)| **counted != denied),
        "counters of hits no compile knows are dropped"
    );
}

#[test]
fn an_unconfirmed_connection_ends_after_its_timeout() {
    let (mut aggregator, dataplane) = aggregator_with(Config {
        unconfirmed_timeout_milliseconds: 20_000,
        ..node_one()
    });
    let tuple = tcp(WEB, 40009, "203.0.113.5", 443);
    let allowed = hit(&dataplane, &tuple, PolicyType::Egress);
    aggregator.logged_packet(&logged(1_000, Some(allowed.id()), tuple));
    let first = aggregator.drain(Timestamp(15_000));
    assert_eq!(only(&first).num_flows_live, 1);
    let second = aggregator.drain(Timestamp(30_000));
    let record = only(&second);
    assert_eq!((record.num_flows_completed, record.num_flows_live), (1, 0));
    assert_eq!(aggregator.statistics().unconfirmed_expired, 1);
}

/// The attribution test over the repository's examples: for every flow of `flows.jsonl`, each
/// side the kernel decides is logged with the id of `hit_of` on the node of its endpoint, and
/// that node's record carries the same hit text, action and reporter.
#[test]
fn records_carry_the_hit_the_evaluator_names_for_the_examples() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut paths: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .collect();
    paths.sort();
    let resources = sluice_api::load_paths(&paths).expect("the examples load");
    let (entities, _) = sluice_policy::build_entities(&resources);
    let network_sets = network_sets_from_entities(&entities);
    let dataplane = sluice_policy::compile(&resources);
    let mut nodes: HashMap<String, Aggregator> = HashMap::new();
    for node in ["node-1", "node-2"] {
        let config = Config {
            host: node.to_string(),
            ..Config::default()
        };
        let mut aggregator = Aggregator::new(config, Timestamp(0)).unwrap();
        aggregator.update_policy(&dataplane, &network_sets, Timestamp(0));
        nodes.insert(node.to_string(), aggregator);
    }
    let resolve = |text: &str| -> IpAddr {
        match text.split_once('/') {
            Some((namespace, name)) => dataplane.endpoint_by_name(namespace, name).unwrap().addresses[0],
            None => address(text),
        }
    };
    let text = std::fs::read_to_string(root.join("flows.jsonl")).unwrap();
    let mut expected = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let protocol = match value["protocol"].as_str().unwrap() {
            "TCP" => 6,
            "UDP" => 17,
            other => panic!("protocol {other}"),
        };
        let tuple = Tuple {
            source: resolve(value["from"].as_str().unwrap()),
            destination: resolve(value["to"].as_str().unwrap()),
            protocol,
            source_port: 50_000 + index as u16,
            destination_port: value["port"].as_u64().unwrap() as u16,
        };
        let verdict = dataplane.evaluate(&flow_of_tuple(&tuple));
        let egress_allows = verdict.egress.is_none_or(|(_, decision)| decision.allows());
        for (side, direction) in [
            (verdict.egress, PolicyType::Egress),
            (verdict.ingress, PolicyType::Ingress),
        ] {
            let Some((endpoint, decision)) = side else {
                continue;
            };
            // A packet its source's egress denied never reaches the destination's ingress.
            if direction == PolicyType::Ingress && !egress_allows {
                continue;
            }
            let endpoint = &dataplane.endpoints[endpoint];
            let Some(hit) = dataplane.hit_of(endpoint, direction, decision) else {
                continue;
            };
            let node = endpoint.node.clone().unwrap();
            nodes
                .get_mut(&node)
                .unwrap()
                .logged_packet(&logged(1_000, Some(hit.id()), tuple));
            expected.push((node, tuple, direction, decision.allows(), hit));
        }
    }
    assert!(expected.len() >= 11, "every example flow is decided somewhere");
    let records: HashMap<String, Vec<FlowRecord>> = nodes
        .iter_mut()
        .map(|(node, aggregator)| (node.clone(), aggregator.drain(Timestamp(15_000))))
        .collect();
    for (node, tuple, direction, allows, hit) in expected {
        let reporter = Reporter::of_direction(direction);
        let action = if allows {
            FlowAction::Allow
        } else {
            FlowAction::Deny
        };
        let found = records[&node].iter().any(|record| {
            record.reporter == reporter
                && record.action == action
                && record.dest_port == Some(tuple.destination_port)
                && record.policies == vec![hit.text()]
        });
        assert!(
            found,
            "{node}: {tuple:?} {direction} {}: {:#?}",
            hit.text(),
            records[&node]
        );
    }
}
