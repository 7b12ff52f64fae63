//! Whatever bytes arrive, the learner decides without panicking and keeps its bounds.

mod support;

use proptest::prelude::*;
use sluice_dns::{Config, Decision};
use support::*;

fn small_config() -> Config {
    Config {
        addresses_per_name: 3,
        mappings_per_endpoint: 12,
        mappings_per_node: 20,
        ..config()
    }
}

/// What must hold after any sequence of events.
fn check_invariants(learner: &sluice_dns::Learner) -> Result<(), TestCaseError> {
    let entries = learner.cache_entries();
    prop_assert_eq!(
        entries.len(),
        learner.mappings(),
        "the eviction order and the names agree"
    );
    prop_assert!(learner.mappings() <= 20);
    for endpoint in learner.snapshot() {
        let count: usize = endpoint.names.values().map(Vec::len).sum();
        prop_assert!(count <= 12, "{} holds {}", endpoint.endpoint, count);
        prop_assert!(endpoint.names.values().all(|addresses| addresses.len() <= 3));
    }
    Ok(())
}

fn check_batch(batch: &sluice_dns::Batch, now: sluice_dns::Timestamp) -> Result<(), TestCaseError> {
    for addition in &batch.additions {
        prop_assert!(addition.expires > now);
        prop_assert_eq!(
            addition.timeout_milliseconds,
            addition.expires.unix_milliseconds() - now.unix_milliseconds()
        );
        prop_assert_eq!(
            addition.element.endpoint_address.is_ipv4(),
            addition.element.address.is_ipv4()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut learner = node(small_config());
        let _ = learner.decide(at(0), &bytes);
    }

    #[test]
    fn arbitrary_udp_payloads_from_a_trusted_server_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut learner = node(small_config());
        let _ = learner.decide(at(0), &udp(SERVER, "10.65.0.2:40000", &payload));
    }

    #[test]
    fn mutated_responses_never_panic_and_keep_the_caps(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut message = response(
            "www.partner.example",
            &[
                ("www.partner.example", "cname:api.partner.example", 30),
                ("api.partner.example", "192.0.2.1", 30),
                ("api.partner.example", "192.0.2.2", 30),
                ("api.partner.example", "2001:db8::1", 30),
            ],
        );
        for (index, value) in flips {
            let at_index = index.index(message.len());
            message[at_index] = value;
        }
        let mut learner = node(small_config());
        let _ = learner.decide(at(0), &udp(SERVER, "10.65.0.2:40000", &message));
        prop_assert!(learner.mappings() <= 20);
    }

    #[test]
    fn arbitrary_tcp_segments_and_answers_never_panic(
        segments in proptest::collection::vec(
            (0u32..200, any::<bool>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..80), 0u8..4),
            0..40,
        ),
    ) {
        let mut learner = node(small_config());
        let message = framed(&[&response("api.partner.example", &[("api.partner.example", "192.0.2.1", 5)])]);
        for (step, (offset, syn, use_message, noise, shell)) in segments.into_iter().enumerate() {
            let now = at_milliseconds(step as u64 * 700);
            let payload = if use_message {
                let start = (offset as usize).min(message.len());
                message[start..].to_vec()
            } else {
                noise
            };
            let packet = tcp(SERVER, "10.65.0.2:41000", 1000 + offset, syn, &payload);
            let decision = learner.decide(now, &packet);
            if let Decision::Hold(batch) | Decision::PassAndProgram(batch) = decision {
                match shell {
                    0 => learner.programmed(batch.token),
                    1 => learner.failed(batch.token),
                    _ => {}
                }
            }
            if shell == 3 {
                let _ = learner.expire(now);
            }
            check_invariants(&learner)?;
        }
    }

    /// Random answers, shell replies, clock steps and interest changes, checked against the
    /// learner's invariants, and a resync asking for exactly the elements it holds.
    #[test]
    fn random_event_sequences_keep_the_invariants(
        events in proptest::collection::vec((0u8..6, 0usize..8, 0usize..6, 0u32..40), 1..60),
    ) {
        const NAMES: [&str; 8] = [
            "api.partner.example", "a.s3.example", "b.s3.example", "x.y.s3.example",
            "other.example", "www.partner.example", "s3.example", "c.s3.example",
        ];
        const CLIENTS: [&str; 3] = ["10.65.0.2:40000", "10.65.0.3:40000", "[fd00:65::2]:40000"];
        let mut learner = node(small_config());
        let mut now = at(0);
        let mut unanswered = Vec::new();
        for (kind, name, address, ttl) in events {
            match kind {
                0..=2 => {
                    let name = NAMES[name];
                    let client = CLIENTS[address % CLIENTS.len()];
                    let learned = if address % 2 == 0 {
                        format!("192.0.2.{address}")
                    } else {
                        format!("2001:db8::{address}")
                    };
                    let message = if ttl % 7 == 0 {
                        response(name, &[(name, "cname:a.s3.example", ttl), ("a.s3.example", &learned, ttl)])
                    } else {
                        response(name, &[(name, &learned, ttl)])
                    };
                    let source = if client.starts_with('[') { SERVER_V6 } else { SERVER };
                    match learner.decide(now, &udp(source, client, &message)) {
                        Decision::Pass => {}
                        Decision::Hold(batch) | Decision::PassAndProgram(batch) => {
                            check_batch(&batch, now)?;
                            unanswered.push(batch.token);
                        }
                    }
                }
                3 => {
                    // The shell answers the oldest batch, well or badly.
                    if !unanswered.is_empty() {
                        let token = unanswered.remove(0);
                        if ttl % 3 == 0 { learner.failed(token) } else { learner.programmed(token) }
                    }
                }
                4 => {
                    now = sluice_dns::Timestamp::from_unix_milliseconds(now.unix_milliseconds() + u64::from(ttl) * 500);
                    if let Some(batch) = learner.expire(now) {
                        check_batch(&batch, now)?;
                        prop_assert!(batch.additions.is_empty());
                    }
                }
                _ => {
                    let patterns: &[&str] = match name % 3 {
                        0 => &["*.s3.example"],
                        1 => &["api.partner.example", "other.example"],
                        _ => &[],
                    };
                    let endpoints = vec![
                        endpoint("default/pod-a", &[POD_A, POD_A_V6], vec![interest("one", patterns)]),
                        endpoint("default/pod-b", &[POD_B], vec![interest("two", &["*.example"])]),
                    ];
                    if let Some(batch) = learner.set_endpoints(now, endpoints) {
                        check_batch(&batch, now)?;
                        unanswered.push(batch.token);
                    }
                }
            }
            check_invariants(&learner)?;
        }
        let elements = learner.elements();
        let resync = learner.resync(now);
        let asked = resync.as_ref().map_or(0, |batch| batch.additions.len());
        prop_assert_eq!(asked, learner.elements());
        prop_assert!(learner.elements() <= elements);
    }
}
