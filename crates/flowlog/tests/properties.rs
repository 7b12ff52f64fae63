//! Random event sequences: the aggregator never panics, its counters (totals, per action, and per
//! hit while the hit is reported) never decrease, whether conntrack is read by events or by
//! whole dumps, its caps hold after every event, and every
//! record is consistent with itself.

use std::collections::HashMap;
use std::net::IpAddr;

use proptest::prelude::*;
use sluice_flowlog::events::{ConntrackEvent, ConntrackEventKind, Counters, LoggedPacket, Timestamp, Tuple};
use sluice_flowlog::{Aggregator, Config, FlowRecord, Usage};
use sluice_policy::{HitId, PolicyHit};

mod common;
use common::{MANIFESTS, STAGED, compiled};

/// Local pods, a pod on another node, a network set's address, outside addresses.
const ADDRESSES: [&str; 6] = [
    "10.10.0.10",
    "10.10.0.11",
    "10.10.0.20",
    "203.0.113.5",
    "8.8.8.8",
    "192.168.7.7",
];
const PORTS: [u16; 3] = [443, 8080, 53];
const PROTOCOLS: [u8; 3] = [6, 17, 1];

#[derive(Debug, Clone)]
enum Operation {
    Logged {
        advance: u64,
        hit: usize,
        tuple: (usize, usize, usize, usize, u16),
        length: u32,
        tcp_sequence: Option<u32>,
    },
    Conntrack {
        advance: u64,
        kind: u8,
        id: u32,
        tuple: (usize, usize, usize, usize, u16),
        original: (u64, u64),
        reply: (u64, u64),
        closed: bool,
    },
    /// A whole dump: entries as (id, tuple, original, reply, closed).
    Dump {
        advance: u64,
        entries: Vec<DumpEntry>,
    },
    Drain {
        advance: u64,
    },
    Compile {
        staged: bool,
    },
}

type DumpEntry = (
    u32,
    (usize, usize, usize, usize, u16),
    (u64, u64),
    (u64, u64),
    bool,
);

fn tuple_strategy() -> impl Strategy<Value = (usize, usize, usize, usize, u16)> {
    (
        0..ADDRESSES.len(),
        0..ADDRESSES.len(),
        0..PORTS.len(),
        0..PROTOCOLS.len(),
        40_000..40_004u16,
    )
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        4 => (0..3_000u64, 0..24usize, tuple_strategy(), 40..1_500u32, proptest::option::of(0..3u32)).prop_map(
            |(advance, hit, tuple, length, tcp_sequence)| Operation::Logged { advance, hit, tuple, length, tcp_sequence }
        ),
        4 => (
            0..3_000u64,
            0..3u8,
            0..3u32,
            tuple_strategy(),
            (0..1_000u64, 0..100_000u64),
            (0..1_000u64, 0..100_000u64),
            any::<bool>(),
        )
            .prop_map(|(advance, kind, id, tuple, original, reply, closed)| Operation::Conntrack {
                advance,
                kind,
                id,
                tuple,
                original,
                reply,
                closed,
            }),
        2 => (
            0..3_000u64,
            proptest::collection::vec(
                (0..3u32, tuple_strategy(), (0..1_000u64, 0..100_000u64), (0..1_000u64, 0..100_000u64), any::<bool>()),
                0..6,
            ),
        )
            .prop_map(|(advance, entries)| Operation::Dump { advance, entries }),
        1 => (0..40_000u64).prop_map(|advance| Operation::Drain { advance }),
        1 => any::<bool>().prop_map(|staged| Operation::Compile { staged }),
    ]
}

fn tuple((source, destination, port, protocol, source_port): (usize, usize, usize, usize, u16)) -> Tuple {
    let address = |index: usize| ADDRESSES[index].parse::<IpAddr>().unwrap();
    Tuple {
        source: address(source),
        destination: address(destination),
        protocol: PROTOCOLS[protocol],
        source_port,
        destination_port: if PROTOCOLS[protocol] == 1 {
            0x0800
        } else {
            PORTS[port]
        },
    }
}

fn numbers(value: &impl serde::Serialize) -> Vec<u64> {
    serde_json::to_value(value)
        .unwrap()
        .as_object()
        .unwrap()
        .values()
        .flat_map(|field| match field {
            serde_json::Value::Object(inner) => inner.values().filter_map(|value| value.as_u64()).collect(),
            other => other.as_u64().into_iter().collect::<Vec<u64>>(),
        })
        .collect()
}

fn hit_counters(aggregator: &Aggregator) -> HashMap<PolicyHit, Usage> {
    aggregator
        .hit_counters()
        .into_iter()
        .map(|(hit, usage)| (hit.clone(), usage))
        .collect()
}

fn entry(
    now: u64,
    kind: ConntrackEventKind,
    (id, chosen, original, reply, closed): DumpEntry,
) -> ConntrackEvent {
    let original_tuple = tuple(chosen);
    ConntrackEvent {
        at: Timestamp(now),
        kind,
        id,
        original: original_tuple,
        reply: Tuple {
            source: original_tuple.destination,
            destination: original_tuple.source,
            source_port: original_tuple.destination_port,
            destination_port: original_tuple.source_port,
            protocol: original_tuple.protocol,
        },
        original_counters: Some(Counters {
            packets: original.0,
            bytes: original.1,
        }),
        reply_counters: (id != 2).then_some(Counters {
            packets: reply.0,
            bytes: reply.1,
        }),
        closed,
        mark: 0,
    }
}

fn check_record(record: &FlowRecord) {
    assert!(record.start_time <= record.end_time, "{record:?}");
    assert!(record.num_flows_started <= record.num_flows, "{record:?}");
    assert!(
        record.num_flows_completed + record.num_flows_live <= record.num_flows,
        "{record:?}"
    );
    assert!(record.policies.len() <= 1, "{record:?}");
    assert_eq!(
        &FlowRecord::from_json_line(&record.to_json_line()).unwrap(),
        record
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn counters_grow_and_caps_hold(operations in proptest::collection::vec(operation(), 1..200)) {
        let (dataplane, network_sets) = compiled(MANIFESTS);
        let (staged, staged_sets) = compiled(STAGED);
        let mut hits: Vec<HitId> = dataplane.hits().iter().map(|hit| hit.id()).collect();
        hits.extend(staged.hits().iter().map(|hit| hit.id()));
        let config = Config {
            host: "node-1".to_string(),
            max_connections: 4,
            max_allowed_keys: 5,
            max_denied_keys: 3,
            max_denied_tuples: 4,
            idle_timeout_milliseconds: 30_000,
            unconfirmed_timeout_milliseconds: 20_000,
            attribution_grace_milliseconds: 10_000,
            network_source_addresses: true,
            ..Config::default()
        };
        let mut aggregator = Aggregator::new(config, Timestamp(0)).unwrap();
        aggregator.update_policy(&dataplane, &network_sets, Timestamp(0));
        let mut now = 0u64;
        let mut statistics = numbers(&aggregator.statistics());
        let mut actions = numbers(&aggregator.action_counters());
        let mut per_hit = hit_counters(&aggregator);
        for operation in operations {
            match operation {
                Operation::Logged { advance, hit, tuple: chosen, length, tcp_sequence } => {
                    now += advance;
                    // Some ids are unknown, some are not hit ids at all.
                    let hit = match hit {
                        23 => None,
                        index if index < hits.len() => Some(hits[index]),
                        index => Some(HitId(index as u64)),
                    };
                    aggregator.logged_packet(&LoggedPacket {
                        at: Timestamp(now.saturating_sub(advance / 2)),
                        hit,
                        tuple: tuple(chosen),
                        length,
                        icmp: None,
                        tcp_sequence,
                    });
                }
                Operation::Conntrack { advance, kind, id, tuple: chosen, original, reply, closed } => {
                    now += advance;
                    let kind = [ConntrackEventKind::New, ConntrackEventKind::Update, ConntrackEventKind::Destroy][kind as usize];
                    aggregator.conntrack(&entry(now, kind, (id, chosen, original, reply, closed)));
                }
                Operation::Dump { advance, entries } => {
                    now += advance;
                    let entries: Vec<ConntrackEvent> = entries
                        .into_iter()
                        .map(|dumped| entry(now, ConntrackEventKind::Update, dumped))
                        .collect();
                    aggregator.dumped(&entries, Timestamp(now.saturating_sub(advance / 2)));
                }
                Operation::Drain { advance } => {
                    now += advance;
                    let records = aggregator.drain(Timestamp(now));
                    prop_assert!(records.len() <= 5 + 3);
                    for record in &records {
                        check_record(record);
                    }
                }
                Operation::Compile { staged: use_staged } => {
                    if use_staged {
                        aggregator.update_policy(&staged, &staged_sets, Timestamp(now));
                    } else {
                        aggregator.update_policy(&dataplane, &network_sets, Timestamp(now));
                    }
                }
            }
            let gauges = aggregator.gauges();
            prop_assert!(gauges.tracked_connections <= 4, "{gauges:?}");
            prop_assert!(gauges.allowed_keys <= 5, "{gauges:?}");
            prop_assert!(gauges.denied_keys <= 3, "{gauges:?}");
            prop_assert!(gauges.denied_tuples <= 4, "{gauges:?}");
            let now_statistics = numbers(&aggregator.statistics());
            let now_actions = numbers(&aggregator.action_counters());
            prop_assert!(statistics.iter().zip(&now_statistics).all(|(before, after)| before <= after));
            prop_assert!(actions.iter().zip(&now_actions).all(|(before, after)| before <= after));
            let now_per_hit = hit_counters(&aggregator);
            for (hit, before) in &per_hit {
                if let Some(after) = now_per_hit.get(hit) {
                    prop_assert!(
                        before.packets <= after.packets
                            && before.bytes <= after.bytes
                            && before.connections <= after.connections,
                        "{hit}: {before:?} then {after:?}"
                    );
                }
            }
            statistics = now_statistics;
            actions = now_actions;
            per_hit = now_per_hit;
        }
    }
}
