//! Any bytes, split any way, through the HTTP core: it must not panic, splitting must not
//! change what it decides or forwards, and it forwards only a prefix of what it was given.
//!
//! Input: one byte `count`, then `count % 8` piece lengths (each byte + 1, used in turn), then
//! the stream. A seed starting with `\0` is fed whole and split by nothing.
#![no_main]

use std::sync::Arc;

#[path = "input.rs"]
mod input;

use libfuzzer_sys::fuzz_target;
use sluice_proxy::http::{HttpConnection, Limits, Output};
use sluice_proxy::{HttpAlternative, PathMatch, RuleIdentity};

/// Everything the shell would do, with forwarded bytes joined into one stream.
#[derive(Debug, PartialEq)]
struct Transcript {
    forwarded: Vec<u8>,
    decisions: Vec<String>,
}

fn run(alternatives: &Arc<[HttpAlternative]>, limits: Limits, pieces: &[&[u8]]) -> Transcript {
    let mut connection = HttpConnection::new(alternatives.clone(), limits);
    let mut transcript = Transcript {
        forwarded: Vec::new(),
        decisions: Vec::new(),
    };
    let mut outputs = Vec::new();
    for piece in pieces {
        outputs.clear();
        connection.receive(piece, &mut outputs);
        for output in outputs.drain(..) {
            match output {
                Output::ForwardHead(allowed) => {
                    transcript.forwarded.extend_from_slice(&allowed.head);
                    transcript
                        .decisions
                        .push(format!("allowed at {} {allowed:?}", transcript.forwarded.len()));
                }
                Output::ForwardInput(range) => {
                    transcript.forwarded.extend_from_slice(&piece[range]);
                }
                other => transcript
                    .decisions
                    .push(format!("at {} {other:?}", transcript.forwarded.len())),
            }
        }
    }
    transcript
}

fuzz_target!(|data: &[u8]| {
    let (stream, split) = input::pieces(data);
    let rule = RuleIdentity {
        policy: "default.fuzz".to_string(),
        rule_index: 0,
    };
    let alternatives: Arc<[HttpAlternative]> = Arc::from(vec![HttpAlternative {
        rule,
        methods: vec!["GET".to_string()],
        paths: vec![PathMatch::Prefix("/v1/".to_string())],
        hosts: vec!["*.example.com".parse().expect("a valid pattern")],
    }]);
    let small = Limits {
        maximum_head_bytes: 256,
        maximum_headers: 8,
        maximum_chunk_line_bytes: 16,
        maximum_trailer_bytes: 32,
    };
    for limits in [Limits::default(), small] {
        let whole = run(&alternatives, limits, &[stream]);
        let pieces = run(&alternatives, limits, &split);
        assert_eq!(whole, pieces, "splitting changed the outcome");
        assert!(stream.starts_with(&whole.forwarded), "forwarded bytes not given");
    }
});
