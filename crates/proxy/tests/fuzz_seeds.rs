//! The fuzz targets' seeds (fuzz/seeds/, read as the targets read them: a count byte, that many
//! piece lengths modulo 8, then the stream) through the cores on stable, so each seed is known
//! to parse as intended and reach the decision it was written for.

mod support;

use std::path::Path;

use sluice_proxy::http::{Limits, RefusalReason};
use sluice_proxy::tls::{self, TlsDecision};
use support::{Event, forwarded_bytes, run_http, run_tls};

/// The stream and the split points the fuzz targets derive from an input.
fn stream_and_splits(data: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let (count, rest) = data.split_first().expect("a seed is not empty");
    let count = usize::from(count % 8).min(rest.len());
    let (lengths, stream) = rest.split_at(count);
    let mut splits = Vec::new();
    if !lengths.is_empty() {
        let mut position = 0;
        let mut turn = 0;
        loop {
            position += usize::from(lengths[turn % lengths.len()]) + 1;
            if position >= stream.len() {
                break;
            }
            splits.push(position);
            turn += 1;
        }
    }
    (stream.to_vec(), splits)
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("{}: {error}", directory.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn http_seeds_reach_their_decisions() {
    let alternatives = support::open_rules();
    let mut seen = Vec::new();
    for (name, data) in seeds("http_request") {
        let (stream, splits) = stream_and_splits(&data);
        let whole = run_http(alternatives.clone(), Limits::default(), &stream, &[]);
        assert_eq!(
            run_http(alternatives.clone(), Limits::default(), &stream, &splits),
            whole,
            "{name}"
        );
        let allowed = whole
            .iter()
            .filter(|event| matches!(event, Event::Allowed { .. }))
            .count();
        let refused = matches!(
            whole.last(),
            Some(Event::Refused {
                reason: RefusalReason::Invalid(_),
                ..
            })
        );
        match name.as_str() {
            "curl-get" | "curl-get-split" => assert_eq!((allowed, refused), (1, false), "{name}"),
            "chunked-then-pipelined" | "length-body-pipelined" => {
                assert_eq!((allowed, refused), (2, false), "{name}");
                assert_eq!(forwarded_bytes(&whole), stream, "{name}");
            }
            "http2-prior-knowledge" => {
                assert_eq!(whole, vec![Event::Http2(stream.clone())], "{name}")
            }
            "smuggling-cl-te" | "dot-segments" => {
                assert_eq!((allowed, refused), (0, true), "{name}")
            }
            other => panic!("seed {other} has no expectation here"),
        }
        seen.push(name);
    }
    assert_eq!(seen.len(), 7);
}

#[test]
fn tls_seeds_reach_their_decisions() {
    let alternatives = support::tls_rules(&["api.example.com"]);
    let mut seen = Vec::new();
    for (name, data) in seeds("tls_client_hello") {
        let (stream, splits) = stream_and_splits(&data);
        let (decision, forwarded) = run_tls(alternatives.clone(), tls::Limits::default(), &stream, &splits);
        match name.as_str() {
            "curl" | "curl-split" | "openssl" => {
                assert!(matches!(decision, TlsDecision::Forward { .. }), "{name}");
                assert_eq!(forwarded, stream, "{name}");
            }
            "sslv2" | "regression-record-split-fault-order" => {
                assert!(matches!(decision, TlsDecision::Reset(_)), "{name}")
            }
            other => panic!("seed {other} has no expectation here"),
        }
        seen.push(name);
    }
    assert_eq!(seen.len(), 5);
}
