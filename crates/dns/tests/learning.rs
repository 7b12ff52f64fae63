//! The learner against real packets: UDP and TCP responses built as IP packets.

mod support;

use simple_dns::RCODE;
use sluice_dns::{Config, Decision, Endpoint, Learner};
use support::*;

const POD_A_SOCKET: &str = "10.65.0.2:40000";

fn partner_answer(ttl: u32) -> Vec<u8> {
    response(
        "api.partner.example",
        &[("api.partner.example", "192.0.2.1", ttl)],
    )
}

#[test]
fn an_answer_is_held_until_programmed_then_the_same_answer_passes() {
    let mut learner = node(config());
    let packet = udp(SERVER, POD_A_SOCKET, &partner_answer(30));
    let batch = hold(learner.decide(at(0), &packet));
    assert_eq!(additions(&batch), vec![row("partner", POD_A, "192.0.2.1", 30)]);
    assert_eq!(
        batch.additions[0].expires,
        at(30),
        "expiry is absolute wall-clock"
    );
    assert!(batch.removals.is_empty());

    // Until the shell confirms, the element is not believed programmed: a second copy waits too.
    let again = hold(learner.decide(at(0), &packet));
    assert_eq!(additions(&again), additions(&batch));
    learner.programmed(batch.token);
    assert_eq!(learner.decide(at(0), &packet), Decision::Pass);
    // Same answer from a cache, 10 s later with 20 s left: same expiry, nothing to do.
    let cached = udp(SERVER, POD_A_SOCKET, &partner_answer(20));
    assert_eq!(learner.decide(at(10), &cached), Decision::Pass);
    let counters = learner.counters();
    assert_eq!(
        (counters.holds, counters.messages, counters.batches_programmed),
        (2, 4, 1)
    );
}

#[test]
fn a_failed_batch_is_not_believed_and_the_retry_is_held_again() {
    let mut learner = node(config());
    let packet = udp(SERVER, POD_A_SOCKET, &partner_answer(30));
    let batch = hold(learner.decide(at(0), &packet));
    learner.failed(batch.token);
    let retry = hold(learner.decide(at(1), &packet));
    assert_eq!(additions(&retry), vec![row("partner", POD_A, "192.0.2.1", 30)]);
    learner.programmed(retry.token);
    assert_eq!(learner.decide(at(1), &packet), Decision::Pass);
    // An answer for a token the learner never gave changes nothing.
    learner.failed(retry.token);
    assert_eq!(learner.counters().batches_failed, 1);
}

#[test]
fn ipv6_answers_pair_with_the_endpoints_ipv6_address_whatever_carried_them() {
    let mut learner = node(config());
    let message = response(
        "api.partner.example",
        &[
            ("api.partner.example", "192.0.2.1", 30),
            ("api.partner.example", "2001:db8::1", 40),
        ],
    );
    let over_ipv6 = udp(SERVER_V6, "[fd00:65::2]:40000", &message);
    let batch = hold(learner.decide(at(0), &over_ipv6));
    assert_eq!(
        additions(&batch),
        vec![
            row("partner", POD_A, "192.0.2.1", 30),
            row("partner", POD_A_V6, "2001:db8::1", 40),
        ]
    );
    // pod-b has no IPv6 address: it gets the IPv4 element only.
    let batch = hold(learner.decide(at(0), &udp(SERVER, "10.65.0.3:40000", &message)));
    assert_eq!(additions(&batch), vec![row("partner", POD_B, "192.0.2.1", 30)]);
}

#[test]
fn every_name_of_a_cname_chain_maps_to_the_final_addresses() {
    let mut config = config();
    config.trusted_servers = vec![SERVER.parse().unwrap()];
    let mut learner = Learner::new(config);
    learner.set_endpoints(
        at(0),
        vec![endpoint(
            "default/pod-a",
            &[POD_A],
            vec![
                interest("alias", &["www.partner.example"]),
                interest("edge", &["*.cdn.example"]),
            ],
        )],
    );
    let message = response(
        "www.partner.example",
        &[
            ("www.partner.example", "cname:partner.edge.cdn.example", 300),
            ("partner.edge.cdn.example", "cname:node7.cdn.example", 60),
            ("node7.cdn.example", "192.0.2.7", 120),
        ],
    );
    let batch = hold(learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &message)));
    assert_eq!(
        additions(&batch),
        vec![
            row("alias", POD_A, "192.0.2.7", 60),
            row("edge", POD_A, "192.0.2.7", 120),
        ]
    );
    let names: Vec<String> = learner.snapshot()[0].names.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "node7.cdn.example",
            "partner.edge.cdn.example",
            "www.partner.example"
        ]
    );
}

#[test]
fn a_cname_loop_teaches_nothing_and_ends() {
    let mut learner = node(config());
    let message = response(
        "api.partner.example",
        &[
            ("api.partner.example", "cname:b.example", 30),
            ("b.example", "cname:api.partner.example", 30),
        ],
    );
    assert_eq!(
        learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &message)),
        Decision::Pass
    );
    assert_eq!(learner.mappings(), 0);
}

#[test]
fn responses_that_must_teach_nothing_pass_and_are_counted() {
    let answer = partner_answer(30);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("untrusted address", udp("10.96.0.11:53", POD_A_SOCKET, &answer)),
        (
            "trusted address, other port",
            udp("10.96.0.10:5353", POD_A_SOCKET, &answer),
        ),
        (
            "the pod's own resolver",
            udp("10.65.0.3:53", POD_A_SOCKET, &answer),
        ),
        ("to no local endpoint", udp(SERVER, "10.65.0.99:40000", &answer)),
        (
            "NXDOMAIN",
            udp(
                SERVER,
                POD_A_SOCKET,
                &error_response("api.partner.example", RCODE::NameError),
            ),
        ),
        (
            "SERVFAIL",
            udp(
                SERVER,
                POD_A_SOCKET,
                &error_response("api.partner.example", RCODE::ServerFailure),
            ),
        ),
        ("truncated", {
            let mut packet =
                response_packet("api.partner.example", &[("api.partner.example", "192.0.2.1", 30)]);
            packet.set_flags(simple_dns::PacketFlag::TRUNCATION);
            udp(SERVER, POD_A_SOCKET, &packet.build_bytes_vec().unwrap())
        }),
        ("garbled", udp(SERVER, POD_A_SOCKET, &answer[..answer.len() - 3])),
        ("not an IP packet", b"\x00\x01garbage".to_vec()),
    ];
    let mut learner = node(config());
    for (case, packet) in &cases {
        assert_eq!(learner.decide(at(0), packet), Decision::Pass, "{case}");
    }
    assert_eq!(learner.mappings(), 0);
    let counters = learner.counters();
    assert_eq!(counters.untrusted, 3);
    assert_eq!(counters.not_to_endpoint, 1);
    assert_eq!(counters.refused_messages, 4);
    assert_eq!(counters.unreadable, 1);
    assert_eq!(counters.holds, 0);
}

#[test]
fn another_endpoints_lookup_does_not_open_this_ones_set() {
    let mut learner = node(config());
    let batch = hold(learner.decide(at(0), &udp(SERVER, "10.65.0.3:40000", &partner_answer(30))));
    // Only pod-b's address is paired with the answer, though pod-a uses the same set.
    assert_eq!(additions(&batch), vec![row("partner", POD_B, "192.0.2.1", 30)]);
    learner.programmed(batch.token);
    let snapshot = learner.snapshot();
    assert_eq!(snapshot[0].endpoint, "default/pod-a");
    assert!(snapshot[0].names.is_empty());
    assert_eq!(snapshot[1].names["api.partner.example"].len(), 1);
    // pod-a's own lookup is not "already there" because pod-b's was programmed.
    let batch = hold(learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &partner_answer(30))));
    assert_eq!(additions(&batch), vec![row("partner", POD_A, "192.0.2.1", 30)]);
}

#[test]
fn wildcard_interests_match_one_or_more_labels_in_place_of_the_star() {
    let table: &[(&str, bool)] = &[
        ("bucket.s3.example", true),
        ("a.b.s3.example", true),
        ("BUCKET.S3.Example", true),
        ("s3.example", false),
        ("bucket.s3.example.evil", false),
        ("bucket-s3.example", false),
    ];
    for (name, opens) in table {
        let mut learner = node(config());
        let message = response(name, &[(name, "198.51.100.9", 30)]);
        let decision = learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &message));
        match decision {
            Decision::Hold(batch) => {
                assert!(opens, "{name} should open nothing");
                assert_eq!(additions(&batch), vec![row("buckets", POD_A, "198.51.100.9", 30)]);
            }
            Decision::Pass => assert!(!opens, "{name} should open the buckets set"),
            other => panic!("{name}: {other:?}"),
        }
        // Learned either way: a later policy may want it.
        assert_eq!(learner.mappings(), 1, "{name}");
    }
}

#[test]
fn expiry_is_ttl_plus_extra_ttl_and_at_least_two_seconds() {
    let table: &[(u32, u32, u64)] = &[
        (30, 0, 30),
        (30, 15, 45),
        (0, 0, 2),
        (1, 0, 2),
        (1, 1, 2),
        (0, 3, 3),
    ];
    for (ttl, extra, expected) in table {
        let mut learner = node(Config {
            extra_ttl_seconds: *extra,
            ..config()
        });
        let batch = hold(learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &partner_answer(*ttl))));
        assert_eq!(
            batch.additions[0].expires,
            at(*expected),
            "ttl {ttl} + extra {extra}"
        );
        assert_eq!(batch.additions[0].timeout_milliseconds, expected * 1000);
        learner.programmed(batch.token);
        assert_eq!(learner.expire(at(expected - 1)), None);
        assert_eq!(learner.mappings(), 1);
        // The kernel drops the element by its timeout; the learner forgets it at the same time.
        assert_eq!(learner.expire(at(*expected)), None);
        assert_eq!(learner.mappings(), 0);
        assert_eq!(learner.elements(), 0);
        assert_eq!(learner.counters().expired, 1);
    }
}

#[test]
fn copies_of_a_cached_answer_within_a_second_share_one_expiry() {
    let mut learner = node(config());
    let batch = hold(learner.decide(
        at_milliseconds(300),
        &udp(SERVER, POD_A_SOCKET, &partner_answer(30)),
    ));
    // Rounded up to the whole second: never shorter than the TTL.
    assert_eq!(batch.additions[0].expires, at(31));
    assert_eq!(batch.additions[0].timeout_milliseconds, 30_700);
    learner.programmed(batch.token);
    // The resolver's cache counts down in whole seconds.
    for (milliseconds, ttl) in [(800, 30), (1_200, 29), (1_999, 29), (28_500, 2)] {
        let packet = udp(SERVER, POD_A_SOCKET, &partner_answer(ttl));
        assert_eq!(
            learner.decide(at_milliseconds(milliseconds), &packet),
            Decision::Pass,
            "{milliseconds} ms, ttl {ttl}"
        );
    }
}

#[test]
fn a_repeated_answer_only_extends() {
    let mut learner = node(config());
    let batch = hold(learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &partner_answer(60))));
    learner.programmed(batch.token);
    // A shorter life later on: keeps 60, nothing to program.
    assert_eq!(
        learner.decide(at(10), &udp(SERVER, POD_A_SOCKET, &partner_answer(30))),
        Decision::Pass
    );
    assert_eq!(
        learner.snapshot()[0].names["api.partner.example"][0].expires,
        at(60).unix_seconds()
    );
    // A longer one: extends to 110.
    let batch = hold(learner.decide(at(50), &udp(SERVER, POD_A_SOCKET, &partner_answer(60))));
    assert_eq!(batch.additions[0].expires, at(110));
    assert_eq!(batch.additions[0].timeout_milliseconds, 60_000);
    learner.programmed(batch.token);
    assert_eq!(learner.expire(at(60)), None);
    assert_eq!(learner.mappings(), 1, "the extension holds past the first expiry");
}

#[test]
fn addresses_per_name_are_capped_oldest_first_and_counted() {
    let mut learner = node(Config {
        addresses_per_name: 2,
        ..config()
    });
    for (second, address) in [(0, "192.0.2.1"), (1, "192.0.2.2")] {
        let message = response("api.partner.example", &[("api.partner.example", address, 60)]);
        let batch = hold(learner.decide(at(second), &udp(SERVER, POD_A_SOCKET, &message)));
        learner.programmed(batch.token);
    }
    let message = response("api.partner.example", &[("api.partner.example", "192.0.2.3", 60)]);
    let batch = hold(learner.decide(at(2), &udp(SERVER, POD_A_SOCKET, &message)));
    assert_eq!(additions(&batch), vec![row("partner", POD_A, "192.0.2.3", 60)]);
    // The oldest mapping's element leaves the kernel now, not at its timeout.
    assert_eq!(batch.removals.len(), 1);
    assert_eq!(batch.removals[0].address, ip("192.0.2.1"));
    let addresses: Vec<String> = learner.snapshot()[0].names["api.partner.example"]
        .iter()
        .map(|learned| learned.address.to_string())
        .collect();
    assert_eq!(addresses, ["192.0.2.2", "192.0.2.3"]);
    assert_eq!(learner.counters().evicted_per_name, 1);
}

#[test]
fn an_endpoint_resolving_endless_names_evicts_only_its_own() {
    let mut learner = node(Config {
        mappings_per_endpoint: 3,
        ..config()
    });
    let batch = hold(learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &partner_answer(60))));
    learner.programmed(batch.token);
    for index in 0..10 {
        let name = format!("n{index}.s3.example");
        let message = response(&name, &[(&name, &format!("198.51.100.{index}"), 60)]);
        let batch = hold(learner.decide(at(1 + index), &udp(SERVER, "10.65.0.3:40000", &message)));
        if index >= 3 {
            // pod-b's own oldest programmed element makes room.
            let evicted = format!("198.51.100.{}", index - 3);
            assert_eq!(batch.removals.len(), 1, "{name}");
            assert_eq!(batch.removals[0].address, ip(&evicted));
            assert_eq!(batch.removals[0].endpoint_address, ip(POD_B));
        }
        learner.programmed(batch.token);
    }
    let snapshot = learner.snapshot();
    assert_eq!(snapshot[0].names.len(), 1, "pod-a keeps what it learned");
    let names: Vec<&String> = snapshot[1].names.keys().collect();
    assert_eq!(names, ["n7.s3.example", "n8.s3.example", "n9.s3.example"]);
    assert_eq!(learner.counters().evicted_per_endpoint, 7);
    assert_eq!(learner.mappings(), 4);
}

#[test]
fn mappings_per_node_are_capped_oldest_first_across_endpoints() {
    let mut learner = node(Config {
        mappings_per_node: 2,
        ..config()
    });
    let unwanted = response("a.example", &[("a.example", "192.0.2.10", 60)]);
    assert_eq!(
        learner.decide(at(0), &udp(SERVER, "10.65.0.3:40000", &unwanted)),
        Decision::Pass
    );
    let batch = hold(learner.decide(at(1), &udp(SERVER, POD_A_SOCKET, &partner_answer(60))));
    learner.programmed(batch.token);
    // A refresh makes pod-a's mapping the newest, so pod-b's a.example goes first.
    let batch = hold(learner.decide(at(2), &udp(SERVER, POD_A_SOCKET, &partner_answer(60))));
    learner.programmed(batch.token);
    let other = response("b.example", &[("b.example", "192.0.2.11", 60)]);
    assert_eq!(
        learner.decide(at(3), &udp(SERVER, POD_A_SOCKET, &other)),
        Decision::Pass
    );
    assert_eq!(learner.mappings(), 2);
    assert!(
        learner.snapshot()[1].names.is_empty(),
        "pod-b's mapping was the oldest"
    );
    // Next, the partner mapping is the oldest: evicting it removes its programmed element
    // while the packet passes (it teaches nothing pod-a's sets want).
    let third = response("c.example", &[("c.example", "192.0.2.12", 60)]);
    match learner.decide(at(4), &udp(SERVER, POD_A_SOCKET, &third)) {
        Decision::PassAndProgram(batch) => {
            assert!(batch.additions.is_empty());
            assert_eq!(batch.removals.len(), 1);
            assert_eq!(batch.removals[0].address, ip("192.0.2.1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(learner.counters().evicted_per_node, 2);
}

#[test]
fn tcp_messages_spanning_segments_hold_only_the_completing_segment() {
    let mut learner = node(config());
    let client = "10.65.0.2:41000";
    let message = partner_answer(30);
    let stream = framed(&[&message]);
    assert_eq!(
        learner.decide(at(0), &tcp(SERVER, client, 5000, true, b"")),
        Decision::Pass
    );
    let (first, rest) = stream.split_at(1);
    let (second, third) = rest.split_at(10);
    assert_eq!(
        learner.decide(at(0), &tcp(SERVER, client, 5001, false, first)),
        Decision::Pass
    );
    assert_eq!(
        learner.decide(at(0), &tcp(SERVER, client, 5002, false, second)),
        Decision::Pass
    );
    let batch = hold(learner.decide(at(0), &tcp(SERVER, client, 5012, false, third)));
    assert_eq!(additions(&batch), vec![row("partner", POD_A, "192.0.2.1", 30)]);
}

#[test]
fn tcp_several_messages_in_one_segment_are_all_learned() {
    let mut learner = node(config());
    let client = "10.65.0.2:41001";
    let bucket = response("logs.s3.example", &[("logs.s3.example", "198.51.100.1", 30)]);
    let stream = framed(&[&partner_answer(30), &bucket]);
    let batch = hold(learner.decide(at(0), &tcp(SERVER, client, 9000, false, &stream)));
    assert_eq!(
        additions(&batch),
        vec![
            row("buckets", POD_A, "198.51.100.1", 30),
            row("partner", POD_A, "192.0.2.1", 30),
        ]
    );
}

#[test]
fn a_duplicated_tcp_segment_teaches_once_and_is_decided_again_after_a_failure() {
    let mut learner = node(config());
    let client = "10.65.0.2:41002";
    let segment = tcp(SERVER, client, 7000, false, &framed(&[&partner_answer(30)]));
    let batch = hold(learner.decide(at(0), &segment));
    learner.programmed(batch.token);
    // The same segment again, later: nothing new, and the expiry is not pushed out.
    assert_eq!(learner.decide(at(5), &segment), Decision::Pass);
    assert_eq!(learner.cache_entries()[0].expires, at(30).unix_seconds());

    // Another connection whose first copy is dropped: the retransmission is held again.
    let client = "10.65.0.2:41003";
    let segment = tcp(SERVER, client, 100, false, &framed(&[&partner_answer(30)]));
    let _ = learner.expire(at(31));
    let batch = hold(learner.decide(at(40), &segment));
    learner.failed(batch.token);
    let retransmitted = hold(learner.decide(at(41), &segment));
    assert_eq!(
        additions(&retransmitted),
        vec![row("partner", POD_A, "192.0.2.1", 29)]
    );
    assert_eq!(
        retransmitted.additions[0].expires,
        at(70),
        "the first copy's expiry"
    );
    assert_eq!(
        learner.counters().messages,
        2,
        "the message was parsed once per connection"
    );
}

#[test]
fn tcp_over_ipv6_with_a_gap_learns_when_the_gap_fills() {
    let mut learner = node(config());
    let client = "[fd00:65::2]:41004";
    let message = response(
        "api.partner.example",
        &[("api.partner.example", "2001:db8::1", 30)],
    );
    let stream = framed(&[&message]);
    assert_eq!(
        learner.decide(at(0), &tcp(SERVER_V6, client, 0, true, b"")),
        Decision::Pass
    );
    assert_eq!(
        learner.decide(at(0), &tcp(SERVER_V6, client, 11, false, &stream[10..])),
        Decision::Pass
    );
    let batch = hold(learner.decide(at(0), &tcp(SERVER_V6, client, 1, false, &stream[..10])));
    assert_eq!(
        additions(&batch),
        vec![row("partner", POD_A_V6, "2001:db8::1", 30)]
    );
}

#[test]
fn a_dropped_gap_filler_is_held_again_when_retransmitted() {
    let mut learner = node(config());
    let client = "10.65.0.2:41005";
    let stream = framed(&[&partner_answer(30)]);
    assert_eq!(
        learner.decide(at(0), &tcp(SERVER, client, 0, true, b"")),
        Decision::Pass
    );
    // The message's tail arrives first and passes: the client cannot read it before the gap.
    assert_eq!(
        learner.decide(at(0), &tcp(SERVER, client, 11, false, &stream[10..])),
        Decision::Pass
    );
    let filler = tcp(SERVER, client, 1, false, &stream[..10]);
    let batch = hold(learner.decide(at(0), &filler));
    learner.failed(batch.token);
    // The server retransmits only the gap (the client acknowledged the tail selectively); the
    // message ends beyond it, yet this copy completes it for the client: held again.
    let again = hold(learner.decide(at(1), &filler));
    assert_eq!(additions(&again), vec![row("partner", POD_A, "192.0.2.1", 29)]);
    learner.programmed(again.token);
    assert_eq!(learner.decide(at(2), &filler), Decision::Pass);
}

#[test]
fn a_new_interest_programs_what_was_learned_and_a_removed_one_is_taken_out() {
    let mut learner = node(config());
    let logs = response("logs.example", &[("logs.example", "203.0.113.5", 60)]);
    assert_eq!(
        learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &logs)),
        Decision::Pass
    );
    let with_logs = |extra: Vec<sluice_dns::Interest>| -> Vec<Endpoint> {
        let mut interests = vec![interest("partner", &["api.partner.example"])];
        interests.extend(extra);
        vec![
            endpoint("default/pod-a", &[POD_A], interests),
            endpoint(
                "default/pod-b",
                &[POD_B],
                vec![interest("logs", &["logs.example"])],
            ),
        ]
    };
    // A policy applied after the lookup: pod-a's learned answer goes in, for its remaining life;
    // pod-b never looked it up, so it gets nothing.
    let batch = learner
        .set_endpoints(at(20), with_logs(vec![interest("logs", &["*.example"])]))
        .expect("a batch");
    assert_eq!(additions(&batch), vec![row("logs", POD_A, "203.0.113.5", 40)]);
    learner.programmed(batch.token);
    assert_eq!(
        learner.set_endpoints(at(21), with_logs(vec![interest("logs", &["*.example"])])),
        None
    );
    // The interest goes away: its programmed element is removed.
    let batch = learner.set_endpoints(at(22), with_logs(vec![])).expect("a batch");
    assert!(batch.additions.is_empty());
    assert_eq!(batch.removals.len(), 1);
    assert_eq!(
        (batch.removals[0].set.as_str(), batch.removals[0].address),
        ("logs", ip("203.0.113.5"))
    );
    // The mapping itself stays learned.
    assert_eq!(learner.mappings(), 1);
}

#[test]
fn a_removed_endpoint_is_forgotten_and_its_elements_removed() {
    let mut learner = node(config());
    let batch = hold(learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &partner_answer(60))));
    learner.programmed(batch.token);
    let batch = learner
        .set_endpoints(at(1), vec![endpoint("default/pod-b", &[POD_B], vec![])])
        .expect("a batch");
    assert_eq!(batch.removals.len(), 1);
    assert_eq!(batch.removals[0].endpoint_address, ip(POD_A));
    assert_eq!(learner.mappings(), 0);
    // Its address is no local endpoint any more.
    assert_eq!(
        learner.decide(at(2), &udp(SERVER, POD_A_SOCKET, &partner_answer(60))),
        Decision::Pass
    );
    assert_eq!(learner.counters().not_to_endpoint, 1);
}

#[test]
fn the_cache_file_carries_mappings_to_a_restarted_learner() {
    let mut learner = node(config());
    let batch = hold(learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &partner_answer(60))));
    learner.programmed(batch.token);
    let short = response("short.example", &[("short.example", "192.0.2.50", 3)]);
    let _ = learner.decide(at(0), &udp(SERVER, "10.65.0.3:40000", &short));
    let bytes = sluice_dns::cache::to_bytes(4, &learner.cache_entries());

    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("dns-cache.json");
    sluice_dns::cache_file::write(&path, &bytes).unwrap();
    let read = sluice_dns::cache_file::read(&path).unwrap().unwrap();

    // Two seconds later: short.example has one second left and is dropped.
    let entries = sluice_dns::cache::from_bytes(&read, 4, at(2)).unwrap();
    assert_eq!(entries.len(), 1);
    let mut restarted = node(config());
    let batch = restarted.restore(at(2), entries).expect("a batch");
    assert_eq!(additions(&batch), vec![row("partner", POD_A, "192.0.2.1", 58)]);
    // Until the batch is confirmed, the answer is still held.
    let packet = udp(SERVER, POD_A_SOCKET, &partner_answer(58));
    assert!(matches!(restarted.decide(at(2), &packet), Decision::Hold(_)));
    restarted.programmed(batch.token);
    assert_eq!(restarted.decide(at(2), &packet), Decision::Pass);
    assert_eq!(restarted.snapshot()[0], learner.snapshot()[0]);

    assert!(matches!(
        sluice_dns::cache::from_bytes(&read, 5, at(2)),
        Err(sluice_dns::CacheError::Epoch {
            found: 4,
            expected: 5
        })
    ));
}

#[test]
fn restore_drops_unknown_endpoints_and_resync_asks_for_everything_again() {
    let mut learner = node(config());
    let entries = vec![
        sluice_dns::CacheEntry {
            endpoint: "default/gone".to_string(),
            name: "api.partner.example".to_string(),
            address: ip("192.0.2.1"),
            expires: at(60).unix_seconds(),
        },
        sluice_dns::CacheEntry {
            endpoint: "default/pod-b".to_string(),
            name: "api.partner.example".to_string(),
            address: ip("192.0.2.1"),
            expires: at(60).unix_seconds(),
        },
    ];
    let batch = learner.restore(at(0), entries).expect("a batch");
    assert_eq!(additions(&batch), vec![row("partner", POD_B, "192.0.2.1", 60)]);
    learner.programmed(batch.token);
    let batch = learner.resync(at(10)).expect("a batch");
    assert_eq!(additions(&batch), vec![row("partner", POD_B, "192.0.2.1", 50)]);
}

#[test]
fn the_snapshot_serializes_per_endpoint_name_addresses_and_expiry() {
    let mut learner = node(config());
    let _ = learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &partner_answer(60)));
    let json = serde_json::to_value(learner.snapshot()).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"endpoint": "default/pod-a", "names": {"api.partner.example": [
                {"address": "192.0.2.1", "expires": at(60).unix_seconds()}]}},
            {"endpoint": "default/pod-b", "names": {}}
        ])
    );
}

/// What a full rebuild writes back: every element wanted and still alive, confirmed or not
/// (an unconfirmed one was learned from a trusted answer all the same), never an expired one.
#[test]
fn wanted_elements_are_what_a_full_rebuild_writes_back() {
    let mut learner = node(config());
    let _ = hold(learner.decide(at(0), &udp(SERVER, POD_A_SOCKET, &partner_answer(60))));
    let wanted = learner.wanted_elements(at(1));
    assert_eq!(wanted.len(), 1);
    assert_eq!(wanted[0].0.address, ip("192.0.2.1"));
    assert_eq!(wanted[0].1, at(60));
    assert!(learner.wanted_elements(at(60)).is_empty());
}
