//! Whatever bytes arrive, the learner decides without panicking and keeps its bounds.

mod support;

use proptest::prelude::*;
use sluice_dns::{Config, Decision};
use support::*;

fn small_config() -> Config {
    Config {
        addresses_per_name: 3,
        mappings_per_node: 20,
        ..config()
    }
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
            prop_assert!(learner.mappings() <= 20);
        }
    }
}
