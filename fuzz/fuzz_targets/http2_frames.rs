//! Any bytes after the HTTP/2 preface, split any way, through the HTTP/2 core, with the
//! destination's bytes the same stream read back: it must not panic, splitting must not change
//! what it decides, forwards or answers, and it forwards only bytes it was given, in order.
//!
//! Input: as `http_request` (see `input.rs`); the stream follows the preface and a SETTINGS.
#![no_main]

use std::sync::Arc;

#[path = "input.rs"]
mod input;

use libfuzzer_sys::fuzz_target;
use sluice_proxy::http2::{Http2Connection, Http2Limits, Http2Output, PREFACE, ToClient};
use sluice_proxy::{HttpAlternative, PathMatch, RuleIdentity};

#[derive(Debug, PartialEq)]
struct Transcript {
    forwarded: Vec<u8>,
    decisions: Vec<String>,
    to_client: Vec<u8>,
}

fn run(alternatives: &Arc<[HttpAlternative]>, limits: Http2Limits, pieces: &[&[u8]]) -> Transcript {
    let mut connection = Http2Connection::with_alternatives(alternatives.clone(), limits);
    let mut transcript = Transcript {
        forwarded: Vec::new(),
        decisions: Vec::new(),
        to_client: Vec::new(),
    };
    let mut outputs = Vec::new();
    for piece in pieces {
        outputs.clear();
        connection.receive(piece, &mut outputs);
        for output in outputs.drain(..) {
            match output {
                Http2Output::ForwardInput(range) => transcript.forwarded.extend_from_slice(&piece[range]),
                Http2Output::Forward(bytes) => transcript.forwarded.extend(bytes),
                Http2Output::ToClient(bytes) => transcript.to_client.extend(bytes),
                other => transcript
                    .decisions
                    .push(format!("at {} {other:?}", transcript.forwarded.len())),
            }
        }
        // The destination answers with the same bytes: its frames are read the same way.
        let mut answers = Vec::new();
        connection.from_destination(piece, &mut answers);
        for answer in answers {
            match answer {
                ToClient::Pass(range) => transcript.to_client.extend_from_slice(&piece[range]),
                ToClient::Inject(bytes) => transcript.to_client.extend(bytes),
            }
        }
    }
    transcript
}

fuzz_target!(|data: &[u8]| {
    let (stream, split) = input::pieces(data);
    let mut whole_stream = PREFACE.to_vec();
    whole_stream.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let head = whole_stream.clone();
    whole_stream.extend_from_slice(stream);
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
    let small = Http2Limits {
        maximum_frame_bytes: 64,
        maximum_header_block_bytes: 128,
        maximum_headers: 4,
        maximum_table_bytes: 256,
        maximum_held_bytes: 256,
    };
    let mut pieces: Vec<&[u8]> = vec![&head];
    pieces.extend(split.iter().copied());
    for limits in [Http2Limits::default(), small] {
        let whole = run(&alternatives, limits, &[&whole_stream]);
        let split = run(&alternatives, limits, &pieces);
        assert_eq!(whole.forwarded, split.forwarded, "splitting changed what was forwarded");
        assert_eq!(whole.decisions, split.decisions, "splitting changed the decisions");
        let mut rest = whole_stream.iter();
        assert!(
            whole.forwarded.iter().all(|byte| rest.any(|given| given == byte)),
            "forwarded bytes not given, or out of order"
        );
    }
});
