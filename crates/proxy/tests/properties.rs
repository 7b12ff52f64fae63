//! Properties over arbitrary streams split arbitrarily: the cores never panic, how a stream is
//! split never changes what they decide or forward, and they forward only what they were given,
//! in order.

mod support;

use proptest::prelude::*;
use sluice_proxy::http::{self, canonical_path};
use sluice_proxy::tls;
use support::{Event, forwarded_bytes, open_rules, partner_rules, run_http, run_tls, tls_rules};

/// Pieces of realistic traffic, so that generated streams reach deep states (bodies, pipelined
/// heads, trailers), not only the first-byte refusals random bytes hit.
const HTTP_PIECES: &[&[u8]] = &[
    b"GET /v1/items?x=1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    b"POST /v1/upload HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\n\r\n",
    b"hello",
    b"PUT /v1/c HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"0\r\nTrailer: x\r\n\r\n",
    b"\r\n",
    b"GET /admin HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    b"GET http://api.example.com/v1/%61 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    b"OPTIONS * HTTP/1.0\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"Content-Length: 2\r\n",
    b"Transfer-Encoding: chunked\r\n",
];

fn http_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptest::sample::select(HTTP_PIECES).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ];
    proptest::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

fn splits(length: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..=length, 0..12).prop_map(|mut splits| {
        splits.sort_unstable();
        splits
    })
}

fn stream_and_splits(stream: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    stream.prop_flat_map(|stream| {
        let length = stream.len();
        (Just(stream), splits(length))
    })
}

fn small_http_limits() -> http::Limits {
    http::Limits {
        maximum_head_bytes: 96,
        maximum_headers: 4,
        maximum_chunk_line_bytes: 8,
        maximum_trailer_bytes: 16,
    }
}

fn tls_stream() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("api.example.com".to_string()),
        Just("other.example".to_string()),
        "[a-z0-9.-]{0,20}",
    ];
    (
        name,
        1usize..80,
        proptest::collection::vec((0usize..600, any::<u8>()), 0..3),
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(name, record_size, mutations, tail)| {
            let message = support::handshake(&support::client_hello_body(&[
                support::server_name_extension(&[&name]),
                support::supported_versions_extension(),
            ]));
            let mut stream = support::records(&message, record_size);
            for (position, byte) in mutations {
                if let Some(slot) = stream.get_mut(position) {
                    *slot = byte;
                }
            }
            stream.extend_from_slice(&tail);
            stream
        })
}

/// Short records of mostly handshake type, with lengths right or wrong: reaches the record and
/// handshake-header faults in every order.
fn tls_record_soup() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        prop_oneof![6 => Just(22u8), 1 => Just(21u8), 1 => any::<u8>()],
        0u8..6,
        proptest::collection::vec(
            prop_oneof![3 => Just(1u8), 1 => Just(0u8), 2 => any::<u8>()],
            0..6,
        ),
        proptest::option::weighted(0.8, Just(())),
    )
        .prop_map(|(kind, minor, payload, right_length)| {
            let length = if right_length.is_some() {
                payload.len() as u16
            } else {
                payload.len() as u16 + 3
            };
            let mut bytes = vec![kind, 3, minor];
            bytes.extend_from_slice(&length.to_be_bytes());
            bytes.extend_from_slice(&payload);
            bytes
        });
    proptest::collection::vec(record, 0..8).prop_map(|records| records.concat())
}

fn check_http(stream: &[u8], splits: &[usize], limits: http::Limits) -> Result<(), TestCaseError> {
    for rules in [open_rules(), partner_rules()] {
        let whole = run_http(rules.clone(), limits, stream, &[]);
        let split = run_http(rules.clone(), limits, stream, splits);
        prop_assert_eq!(&split, &whole);
        let forwarded = forwarded_bytes(&whole);
        prop_assert!(stream.starts_with(&forwarded), "forwarded bytes not a prefix");
        // Nothing follows a refusal or a close.
        if let Some(position) = whole
            .iter()
            .position(|event| matches!(event, Event::Refused { .. } | Event::Closed(_)))
        {
            prop_assert_eq!(position, whole.len() - 1);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn http_arbitrary_bytes((stream, splits) in stream_and_splits(proptest::collection::vec(any::<u8>(), 0..512))) {
        check_http(&stream, &splits, http::Limits::default())?;
        check_http(&stream, &splits, small_http_limits())?;
    }

    #[test]
    fn http_traffic_like_streams((stream, splits) in stream_and_splits(http_stream())) {
        check_http(&stream, &splits, http::Limits::default())?;
        check_http(&stream, &splits, small_http_limits())?;
    }

    #[test]
    fn tls_arbitrary_bytes((stream, splits) in stream_and_splits(proptest::collection::vec(any::<u8>(), 0..512))) {
        check_tls(&stream, &splits)?;
    }

    #[test]
    fn tls_hello_like_streams((stream, splits) in stream_and_splits(tls_stream())) {
        check_tls(&stream, &splits)?;
    }

    #[test]
    fn tls_record_soups((stream, splits) in stream_and_splits(tls_record_soup())) {
        check_tls(&stream, &splits)?;
    }

    #[test]
    fn canonical_paths_are_fixed_points_without_dot_segments(path in "/[a-zA-Z0-9%./_~:-]{0,40}") {
        if let Ok(canonical) = canonical_path(&path) {
            prop_assert_eq!(canonical_path(&canonical), Ok(canonical.clone()));
            prop_assert!(!canonical.split('/').any(|segment| segment == "." || segment == ".."));
            prop_assert!(!canonical.to_ascii_lowercase().contains("%2f"));
        }
    }
}

fn check_tls(stream: &[u8], splits: &[usize]) -> Result<(), TestCaseError> {
    let limits = [
        tls::Limits::default(),
        tls::Limits {
            maximum_hello_bytes: 200,
            maximum_records: 3,
        },
    ];
    for limits in limits {
        for rules in [tls_rules(&[]), tls_rules(&["api.example.com"])] {
            let whole = without_decision_bytes(run_tls(rules.clone(), limits, stream, &[]));
            let split = without_decision_bytes(run_tls(rules, limits, stream, splits));
            prop_assert_eq!(&split, &whole);
            if let tls::TlsDecision::Forward { .. } = whole.0 {
                prop_assert_eq!(&whole.1, &stream.to_vec());
            } else {
                prop_assert!(whole.1.is_empty());
            }
        }
    }
    Ok(())
}

/// The bytes a `Forward` carries are whatever arrived before the decision, which depends on the
/// splits; what the shell forwards in all (the second element) must not.
fn without_decision_bytes((decision, forwarded): (tls::TlsDecision, Vec<u8>)) -> (tls::TlsDecision, Vec<u8>) {
    let decision = match decision {
        tls::TlsDecision::Forward {
            hello, allowed_by, ..
        } => tls::TlsDecision::Forward {
            hello,
            allowed_by,
            bytes: Vec::new(),
        },
        other => other,
    };
    (decision, forwarded)
}
