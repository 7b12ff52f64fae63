//! The flow-log core's cost per kernel event, what the agent's shell pays for each new
//! connection (one logged first packet, one conntrack Destroy) and each interval's drain:
//! `cargo bench -p sluice-flowlog --bench aggregate`. Single-threaded CPU work, so it measures
//! the same on a busy machine within a few percent. Under `cargo test` it runs one small round.

// Shared with the tests, which use more of it.
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use sluice_api::values::{Action, PolicyType};
use sluice_flowlog::events::{ConntrackEvent, ConntrackEventKind, Counters, LoggedPacket, Timestamp, Tuple};
use sluice_flowlog::{Aggregator, Config};
use sluice_policy::PolicyHit;

fn main() {
    let benchmarking = std::env::args().any(|argument| argument == "--bench");
    let connections: u32 = if benchmarking { 200_000 } else { 1_000 };
    let rounds = if benchmarking { 5 } else { 1 };
    let (dataplane, network_sets) = common::compiled(common::MANIFESTS);
    let web = dataplane
        .policies
        .iter()
        .find(|policy| policy.reference.name == "web-egress")
        .expect("web-egress");
    // The rule that allows web to the partners' network set.
    let hit = PolicyHit::rule(&web.reference, PolicyType::Egress, 1, Action::Allow).id();
    let mut per_connection = Vec::new();
    let mut per_drain = Vec::new();
    for _ in 0..rounds {
        let mut aggregator = Aggregator::new(
            Config {
                host: "node-1".to_string(),
                max_connections: 1_000_000,
                ..Config::default()
            },
            Timestamp(1_000),
        )
        .expect("a valid configuration");
        aggregator.update_policy(&dataplane, &network_sets, Timestamp(1_000));
        let tuples: Vec<Tuple> = (0..connections)
            .map(|index| Tuple {
                source: IpAddr::V4(Ipv4Addr::new(10, 10, 0, 10)),
                destination: IpAddr::V4(Ipv4Addr::new(203, 0, 113, (index % 250) as u8 + 1)),
                protocol: 6,
                source_port: 1024 + (index % 60_000) as u16,
                destination_port: 443,
            })
            .collect();
        let started = Instant::now();
        for (index, tuple) in tuples.iter().enumerate() {
            let at = Timestamp(2_000 + index as u64 / 20);
            aggregator.logged_packet(black_box(&LoggedPacket {
                at,
                hit: Some(hit),
                tuple: *tuple,
                length: 60,
                icmp: None,
                tcp_sequence: None,
            }));
            let reply = Tuple {
                source: tuple.destination,
                destination: tuple.source,
                source_port: tuple.destination_port,
                destination_port: tuple.source_port,
                ..*tuple
            };
            aggregator.conntrack(black_box(&ConntrackEvent {
                at,
                kind: ConntrackEventKind::Destroy,
                id: index as u32,
                original: *tuple,
                reply,
                original_counters: Some(Counters {
                    packets: 6,
                    bytes: 400,
                }),
                reply_counters: Some(Counters {
                    packets: 5,
                    bytes: 900,
                }),
                closed: false,
                mark: 0,
            }));
        }
        let events = started.elapsed();
        let started = Instant::now();
        let records = aggregator.drain(Timestamp(20_000));
        let drained = started.elapsed();
        assert!(!records.is_empty());
        per_connection.push(events.as_nanos() as f64 / f64::from(connections));
        per_drain.push(drained.as_secs_f64() * 1000.0);
    }
    per_connection.sort_by(f64::total_cmp);
    per_drain.sort_by(f64::total_cmp);
    println!(
        "{connections} connections (a logged first packet and a Destroy each): median {:.0} ns per connection (best {:.0}); drain {:.2} ms; {rounds} rounds",
        per_connection[per_connection.len() / 2],
        per_connection[0],
        per_drain[per_drain.len() / 2]
    );
}
