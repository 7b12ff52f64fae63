//! Any bytes, split any way, through the ClientHello reader and TLS admission: it must not
//! panic, splitting must not change the decision, and an admitted connection forwards exactly
//! the bytes it was given.
//!
//! Input: one byte `count`, then `count % 8` piece lengths (each byte + 1, used in turn), then
//! the stream. A seed starting with `\0` is fed whole.
#![no_main]

use std::sync::Arc;

#[path = "input.rs"]
mod input;

use libfuzzer_sys::fuzz_target;
use sluice_proxy::tls::{Limits, TlsConnection, TlsDecision};
use sluice_proxy::{RuleIdentity, TlsAlternative};

/// The decision without the bytes it carries (those depend on the split), and everything the
/// shell would forward.
fn run(alternatives: &Arc<[TlsAlternative]>, limits: Limits, pieces: &[&[u8]]) -> (String, Vec<u8>) {
    let mut connection = TlsConnection::new(alternatives.clone(), limits);
    let mut decision = String::from("need more");
    let mut forwarded = Vec::new();
    let mut admitted = false;
    for piece in pieces {
        if connection.is_decided() {
            if admitted {
                forwarded.extend_from_slice(piece);
            }
            continue;
        }
        match connection.receive(piece) {
            TlsDecision::NeedMore => {}
            TlsDecision::Forward {
                hello,
                allowed_by,
                bytes,
            } => {
                admitted = true;
                forwarded.extend_from_slice(&bytes);
                decision = format!("forward {hello:?} {allowed_by:?}");
            }
            TlsDecision::Reset(reason) => decision = format!("reset {reason:?}"),
        }
    }
    (decision, forwarded)
}

fuzz_target!(|data: &[u8]| {
    let (stream, split) = input::pieces(data);
    let alternatives: Arc<[TlsAlternative]> = Arc::from(vec![TlsAlternative {
        rule: RuleIdentity {
            policy: "default.fuzz".to_string(),
            rule_index: 0,
        },
        server_names: vec!["*.example.com".parse().expect("a valid pattern")],
    }]);
    let small = Limits {
        maximum_hello_bytes: 256,
        maximum_records: 4,
    };
    for limits in [Limits::default(), small] {
        let whole = run(&alternatives, limits, &[stream]);
        let pieces = run(&alternatives, limits, &split);
        assert_eq!(whole, pieces, "splitting changed the outcome");
        if whole.0.starts_with("forward") {
            assert_eq!(whole.1, stream, "an admitted connection lost or changed bytes");
        } else {
            assert!(whole.1.is_empty());
        }
    }
});
