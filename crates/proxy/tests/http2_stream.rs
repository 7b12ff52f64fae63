//! The HTTP/2 reader over byte streams (no sockets): every request stream judged, allowed
//! blocks forwarded as received, refusals answered on their stream with the connection ending,
//! the HPACK table kept in step, and protocol faults closing the connection; the same outcome
//! however the stream is split.

mod support;

use loona_hpack::{Decoder, Encoder};
use proptest::prelude::*;
use sluice_proxy::http::{RefusalReason, RequestError};
use sluice_proxy::http2::{
    Http2Connection, Http2Decision, Http2Error, Http2Limits, Http2Output, PREFACE, ToClient,
};
use support::{open_rules, partner_rules};

const HEADERS: u8 = 1;
const DATA: u8 = 0;
const SETTINGS: u8 = 4;
const RST_STREAM: u8 = 3;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;

/// A header field as the encoder takes it.
type Field<'a> = (&'a [u8], &'a [u8]);
/// Whether an error is the one a case expects.
type ErrorCheck = fn(&Http2Error) -> bool;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len();
    let mut bytes = vec![
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A client: its encoder indexes names no table has, so later blocks refer to earlier ones.
struct Client {
    encoder: Encoder<'static>,
}

impl Client {
    fn new() -> Client {
        Client {
            encoder: Encoder::new(),
        }
    }

    fn block(&mut self, method: &str, path: &str, authority: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", method.as_bytes()),
            (b":scheme", b"http"),
            (b":authority", authority.as_bytes()),
            (b":path", path.as_bytes()),
        ];
        fields.extend(
            extra
                .iter()
                .map(|(name, value)| (name.as_bytes(), value.as_bytes())),
        );
        self.encoder.encode(fields)
    }

    /// A request's HEADERS frame (END_HEADERS; END_STREAM when it has no body).
    fn request(&mut self, stream: u32, method: &str, path: &str, end_stream: bool) -> Vec<u8> {
        let block = self.block(method, path, "api.example.com", &[("x-trace", "one")]);
        frame(HEADERS, 0x4 | u8::from(end_stream), stream, &block)
    }
}

fn start() -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    bytes
}

/// What a connection did, whatever the splits: forwarded bytes joined, decisions, and the
/// bytes for the client.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    forwarded: Vec<u8>,
    decisions: Vec<String>,
    to_client: Vec<u8>,
    finished: Option<Vec<u8>>,
    closed: Option<Http2Error>,
}

fn feed(connection: &mut Http2Connection, outcome: &mut Outcome, piece: &[u8]) {
    let mut outputs = Vec::new();
    connection.receive(piece, &mut outputs);
    for output in outputs {
        match output {
            Http2Output::ForwardInput(range) => outcome.forwarded.extend_from_slice(&piece[range]),
            Http2Output::Forward(bytes) => outcome.forwarded.extend(bytes),
            Http2Output::Decided(decision) => outcome.decisions.push(match *decision {
                Http2Decision::Allowed { stream, request, .. } => {
                    format!("{stream} allowed {} {}", request.method, request.path)
                }
                Http2Decision::Refused {
                    stream,
                    reason: RefusalReason::Denied { request, .. },
                } => format!("{stream} denied {} {}", request.method, request.path),
                Http2Decision::Refused {
                    stream,
                    reason: RefusalReason::Invalid(error),
                } => format!("{stream} invalid: {error}"),
            }),
            Http2Output::ToClient(bytes) => outcome.to_client.extend(bytes),
            Http2Output::Finish(bytes) => outcome.finished = Some(bytes),
            Http2Output::Close(error) => outcome.closed = Some(error),
        }
    }
}

fn run(rules: std::sync::Arc<[sluice_proxy::HttpAlternative]>, stream: &[u8], splits: &[usize]) -> Outcome {
    let mut connection = Http2Connection::with_alternatives(rules, Http2Limits::default());
    let mut outcome = Outcome::default();
    let mut start = 0;
    for end in splits.iter().copied().chain([stream.len()]) {
        let end = end.clamp(start, stream.len());
        feed(&mut connection, &mut outcome, &stream[start..end]);
        start = end;
    }
    outcome
}

/// The frames in `bytes`: (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        frames.push((bytes[3], bytes[4], stream, bytes[9..9 + length].to_vec()));
        bytes = &bytes[9 + length..];
    }
    assert!(bytes.is_empty(), "a partial frame");
    frames
}

/// Checks the proxy's answer on `stream`: its head decodes with an empty table (nothing
/// indexed), then the body, RST_STREAM and GOAWAY naming `last`; returns the status and body.
fn answer(bytes: &[u8], stream: u32, last: u32) -> (String, String) {
    let frames = frames(bytes);
    let (kind, flags, on, block) = &frames[0];
    assert_eq!((*kind, *flags & 0x4, *on), (HEADERS, 0x4, stream));
    let fields = Decoder::new().decode(block).expect("a block any decoder reads");
    let status = String::from_utf8(fields[0].1.clone()).unwrap();
    assert_eq!(fields[0].0, b":status");
    let (kind, flags, on, body) = &frames[1];
    assert_eq!((*kind, *flags, *on), (DATA, 1, stream));
    assert_eq!(frames[2].0, RST_STREAM);
    assert_eq!(frames[2].3, vec![0, 0, 0, 0]);
    let (kind, _, on, goaway) = &frames[3];
    assert_eq!((*kind, *on), (GOAWAY, 0));
    assert_eq!(&goaway[..8], &[last.to_be_bytes(), [0; 4]].concat()[..]);
    (status, String::from_utf8(body.clone()).unwrap())
}

#[test]
fn an_allowed_request_goes_on_with_everything_before_it_exactly_as_sent_at_every_split() {
    let mut client = Client::new();
    let mut stream = start();
    stream.extend(client.request(1, "GET", "/v1/items", true));
    for split in 0..=stream.len() {
        let outcome = run(partner_rules(), &stream, &[split]);
        assert_eq!(
            outcome.decisions,
            vec!["1 allowed GET /v1/items"],
            "split {split}"
        );
        assert_eq!(outcome.forwarded, stream, "split {split}");
        assert!(outcome.closed.is_none() && outcome.to_client.is_empty());
    }
}

#[test]
fn nothing_is_forwarded_before_the_first_request_is_allowed() {
    let outcome = run(partner_rules(), &start(), &[]);
    assert!(outcome.forwarded.is_empty());
    assert!(outcome.decisions.is_empty());
}

#[test]
fn a_first_request_denied_is_answered_by_the_proxy_as_the_server_and_nothing_is_forwarded() {
    let mut client = Client::new();
    let mut stream = start();
    stream.extend(client.request(1, "POST", "/v1/items", false));
    stream.extend(frame(DATA, 1, 1, b"{\"order\": 1}"));
    let outcome = run(partner_rules(), &stream, &[]);
    assert!(outcome.forwarded.is_empty());
    assert_eq!(outcome.decisions, vec!["1 denied POST /v1/items"]);
    let finished = outcome.finished.expect("the proxy answered and closes");
    // Its own SETTINGS, the acknowledgement of the client's, then the answer.
    assert_eq!(
        &finished[..18],
        &[frame(SETTINGS, 0, 0, &[]), frame(SETTINGS, 1, 0, &[])].concat()[..]
    );
    let (status, body) = answer(&finished[18..], 1, 1);
    assert_eq!(status, "403");
    assert_eq!(
        body,
        "Denied by Sluice: POST /v1/items to api.example.com is not allowed by the HTTP match of default.partner, egress rule 0.\n"
    );
}

#[test]
fn a_later_denial_is_answered_on_its_stream_between_the_destinations_frames_and_ends_the_connection() {
    let mut client = Client::new();
    let mut connection = Http2Connection::with_alternatives(partner_rules(), Http2Limits::default());
    let mut outcome = Outcome::default();
    let mut stream = start();
    stream.extend(client.request(1, "GET", "/v1/big", true));
    feed(&mut connection, &mut outcome, &stream);
    assert_eq!(outcome.decisions, vec!["1 allowed GET /v1/big"]);
    let forwarded_before = outcome.forwarded.len();

    // The destination's SETTINGS, then half of a DATA frame of stream 1's answer.
    let settings = frame(SETTINGS, 0, 0, &[]);
    let data = frame(DATA, 0, 1, &[b'x'; 100]);
    let mut to_client = Vec::new();
    let mut from = |connection: &mut Http2Connection, bytes: &[u8]| {
        let mut outputs = Vec::new();
        connection.from_destination(bytes, &mut outputs);
        for output in outputs {
            match output {
                ToClient::Pass(range) => to_client.extend_from_slice(&bytes[range]),
                ToClient::Inject(frames) => {
                    to_client.extend_from_slice(b"<proxy>");
                    to_client.extend(frames);
                }
            }
        }
    };
    let mut first = settings.clone();
    first.extend_from_slice(&data[..50]);
    from(&mut connection, &first);

    // A denied request while the destination is inside a frame: the answer waits for it.
    let denied = client.request(3, "DELETE", "/v1/items/7", true);
    feed(&mut connection, &mut outcome, &denied);
    assert_eq!(outcome.decisions[1], "3 denied DELETE /v1/items/7");
    assert!(outcome.to_client.is_empty());
    from(&mut connection, &data[50..]);
    let expected_prefix = [settings.as_slice(), data.as_slice(), b"<proxy>"].concat();
    assert_eq!(&to_client[..expected_prefix.len()], &expected_prefix[..]);
    let (status, body) = answer(&to_client[expected_prefix.len()..], 3, 3);
    assert_eq!(status, "403");
    assert!(body.contains("DELETE /v1/items/7"));
    assert!(connection.is_refusing());

    // After the refusal: stream 1's frames still pass; the denied stream's and a new stream's
    // go nowhere (the new block is still read, so the table stays in step).
    let mut after = frame(0x8, 0, 1, &[0, 0, 1, 0]);
    after.extend(frame(DATA, 1, 3, b"body of the denied one"));
    after.extend(client.request(5, "GET", "/v1/after", true));
    after.extend(frame(0x8, 0, 0, &[0, 0, 1, 0]));
    feed(&mut connection, &mut outcome, &after);
    let forwarded_after = &outcome.forwarded[forwarded_before..];
    assert_eq!(
        forwarded_after,
        &[frame(0x8, 0, 1, &[0, 0, 1, 0]), frame(0x8, 0, 0, &[0, 0, 1, 0])].concat()[..]
    );
    assert_eq!(outcome.decisions.len(), 2);
    assert!(outcome.closed.is_none());
    // Trailers of a forwarded stream cannot be forwarded after a dropped block.
    let trailers = frame(
        HEADERS,
        0x5,
        1,
        &client.encoder.encode([(&b"x-sum"[..], &b"1"[..])]),
    );
    feed(&mut connection, &mut outcome, &trailers);
    assert_eq!(outcome.closed, Some(Http2Error::HeadersAfterRefusal));
}

#[test]
fn the_table_stays_in_step_across_allowed_and_refused_blocks() {
    let mut client = Client::new();
    let mut stream = start();
    // The first block indexes `x-trace: one`; the later ones refer to it by index.
    for (stream_id, path) in [(1, "/v1/a"), (3, "/v1/b"), (5, "/v1/c")] {
        stream.extend(client.request(stream_id, "GET", path, true));
    }
    let outcome = run(partner_rules(), &stream, &[]);
    assert_eq!(
        outcome.decisions,
        vec![
            "1 allowed GET /v1/a",
            "3 allowed GET /v1/b",
            "5 allowed GET /v1/c"
        ]
    );
    assert_eq!(outcome.forwarded, stream);
}

#[test]
fn a_block_across_continuation_frames_is_judged_whole_and_forwarded_as_received() {
    let mut client = Client::new();
    let block = client.block(
        "GET",
        "/v1/long",
        "api.example.com",
        &[("x-long", &"y".repeat(300))],
    );
    let mut stream = start();
    stream.extend(frame(HEADERS, 0x1, 1, &block[..10]));
    stream.extend(frame(CONTINUATION, 0, 1, &block[10..200]));
    stream.extend(frame(CONTINUATION, 0x4, 1, &block[200..]));
    for splits in [vec![], vec![40, 60, 200, 250]] {
        let outcome = run(partner_rules(), &stream, &splits);
        assert_eq!(outcome.decisions, vec!["1 allowed GET /v1/long"]);
        assert_eq!(outcome.forwarded, stream);
    }
}

#[test]
fn padding_and_priority_are_not_part_of_the_block() {
    let mut client = Client::new();
    let block = client.block("GET", "/v1/padded", "api.example.com", &[]);
    let mut payload = vec![4];
    payload.extend_from_slice(&[0, 0, 0, 0, 16]);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0; 4]);
    let mut stream = start();
    stream.extend(frame(HEADERS, 0x4 | 0x8 | 0x20 | 0x1, 1, &payload));
    let outcome = run(partner_rules(), &stream, &[]);
    assert_eq!(outcome.decisions, vec!["1 allowed GET /v1/padded"]);
    // Padding longer than the frame is a fault.
    let mut stream = start();
    stream.extend(frame(HEADERS, 0x4 | 0x8, 1, &[200, 1, 2]));
    assert!(matches!(
        run(partner_rules(), &stream, &[]).closed,
        Some(Http2Error::Protocol { .. })
    ));
}

#[test]
fn unreadable_requests_are_refused_with_the_status_of_their_fault() {
    let cases: [(&[Field], &str); 8] = [
        (
            &[(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")],
            "400",
        ),
        (&[(b":method", b"CONNECT"), (b":authority", b"a:443")], "501"),
        (
            &[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b":authority", b"a"),
                (b"Upper", b"x"),
            ],
            "400",
        ),
        (
            &[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b":authority", b"a"),
                (b"connection", b"close"),
            ],
            "400",
        ),
        (
            &[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b"x", b"y"),
                (b":authority", b"a"),
            ],
            "400",
        ),
        (
            &[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/a/../../etc"),
                (b":authority", b"a"),
            ],
            "400",
        ),
        (
            &[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b":authority", b"a"),
                (b"host", b"b"),
            ],
            "400",
        ),
        (
            &[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b":authority", b"a"),
                (b":protocol", b"websocket"),
            ],
            "501",
        ),
    ];
    for (fields, status) in cases {
        let mut encoder = Encoder::new();
        let mut stream = start();
        stream.extend(frame(HEADERS, 0x5, 1, &encoder.encode(fields.iter().copied())));
        let outcome = run(open_rules(), &stream, &[]);
        assert!(outcome.forwarded.is_empty(), "{fields:?}");
        assert!(
            outcome.decisions[0].starts_with("1 invalid"),
            "{fields:?}: {:?}",
            outcome.decisions
        );
        let finished = outcome.finished.expect("answered");
        let (answered, _) = answer(&finished[18..], 1, 1);
        assert_eq!(answered, status, "{fields:?}");
    }
}

#[test]
fn a_request_without_a_host_is_refused() {
    let error = sluice_proxy::http2::request_of(&[
        (b":method".to_vec(), b"GET".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (b":path".to_vec(), b"/".to_vec()),
    ]);
    assert_eq!(error, Err(RequestError::MissingHost));
    let request = sluice_proxy::http2::request_of(&[
        (b":method".to_vec(), b"GET".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (b":path".to_vec(), b"/v1/%61?q=1".to_vec()),
        (b"host".to_vec(), b"API.Example.com:8080".to_vec()),
    ])
    .unwrap();
    assert_eq!(
        (request.path.as_str(), request.host.as_deref()),
        ("/v1/a", Some("api.example.com"))
    );
}

#[test]
fn protocol_faults_close_the_connection() {
    let mut client = Client::new();
    let block = client.block("GET", "/v1/x", "api.example.com", &[]);
    let cases: Vec<(Vec<u8>, ErrorCheck)> = vec![
        (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec(), |error| {
            *error == Http2Error::NotPreface
        }),
        // A block interrupted by another frame.
        (
            [frame(HEADERS, 0, 1, &block[..3]), frame(0x6, 0, 0, &[0; 8])].concat(),
            |error| matches!(error, Http2Error::Protocol { .. }),
        ),
        (frame(CONTINUATION, 0x4, 1, &block), |error| {
            matches!(error, Http2Error::Protocol { .. })
        }),
        (frame(0x5, 0x4, 1, &[0, 0, 0, 2]), |error| {
            matches!(error, Http2Error::Protocol { .. })
        }),
        (frame(HEADERS, 0x5, 2, &block), |error| {
            matches!(error, Http2Error::Protocol { .. })
        }),
        (frame(DATA, 0, 0, b"x"), |error| {
            matches!(error, Http2Error::Protocol { .. })
        }),
        // An index no table has.
        (frame(HEADERS, 0x5, 1, &[0xff, 0x7f]), |error| {
            *error == Http2Error::Compression
        }),
        (
            // An extension frame, passed on: held until a request, and too much of it.
            [vec![0x01, 0x00, 0x00, 0x0a, 0, 0, 0, 0, 0], vec![0; 0x10000]].concat(),
            |error| matches!(error, Http2Error::TooMuchBeforeRequest { .. }),
        ),
    ];
    for (case, expected) in cases {
        let mut stream = start();
        if case.starts_with(b"PRI") {
            stream = case.clone();
        } else {
            stream.extend(&case);
        }
        let outcome = run(open_rules(), &stream, &[]);
        let closed = outcome.closed.clone().unwrap_or_else(|| panic!("{outcome:?}"));
        assert!(expected(&closed), "{closed:?}");
        assert!(outcome.forwarded.is_empty());
    }
    let limits = Http2Limits {
        maximum_frame_bytes: 100,
        ..Http2Limits::default()
    };
    let mut connection = Http2Connection::with_alternatives(open_rules(), limits);
    let mut outcome = Outcome::default();
    let mut stream = start();
    stream.extend(frame(0x6, 0, 0, &[0; 101]));
    feed(&mut connection, &mut outcome, &stream);
    assert!(matches!(
        outcome.closed,
        Some(Http2Error::FrameTooLarge {
            length: 101,
            limit: 100
        })
    ));
}

proptest! {
    #[test]
    fn splits_change_nothing(splits in proptest::collection::vec(0..400_usize, 0..12)) {
        let mut client = Client::new();
        let mut stream = start();
        stream.extend(client.request(1, "GET", "/v1/a", false));
        stream.extend(frame(DATA, 0, 1, b"first part"));
        stream.extend(client.request(3, "HEAD", "/v1/b", true));
        stream.extend(frame(DATA, 1, 1, b"last part"));
        stream.extend(client.request(5, "PUT", "/v1/c", true));
        let mut splits = splits;
        splits.sort_unstable();
        let whole = run(partner_rules(), &stream, &[]);
        prop_assert_eq!(
            &whole.decisions,
            &vec!["1 allowed GET /v1/a".to_string(), "3 allowed HEAD /v1/b".to_string(), "5 denied PUT /v1/c".to_string()]
        );
        prop_assert_eq!(run(partner_rules(), &stream, &splits), whole);
    }

    #[test]
    fn arbitrary_bytes_after_the_preface_never_panic_and_forward_only_what_was_given(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        splits in proptest::collection::vec(0..600_usize, 0..8),
    ) {
        let mut stream = start();
        stream.extend(bytes);
        let mut splits = splits;
        splits.sort_unstable();
        let outcome = run(open_rules(), &stream, &splits);
        // Whatever was forwarded came in, in that order: nothing made up, nothing reordered.
        let mut rest = stream.iter();
        prop_assert!(outcome.forwarded.iter().all(|byte| rest.any(|given| given == byte)));
    }
}
