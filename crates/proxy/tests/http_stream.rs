//! The HTTP core over byte streams: what is forwarded, what is refused and why, however the
//! stream is split.

mod support;

use std::sync::Arc;

use sluice_proxy::http::{
    BodyFraming, HttpConnection, Limits, Output, PathError, RefusalReason, RequestError,
};
use support::{Event, forwarded_bytes, open_rules, partner_rules, run_http, run_http_whole};

const CURL_GET: &[u8] = include_bytes!("data/curl-get.bin");
const CURL_HTTP2: &[u8] = include_bytes!("data/curl-http2-prior-knowledge.bin");

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n").into_bytes()
}

fn refusal_error(events: &[Event]) -> &RequestError {
    events
        .last()
        .and_then(Event::refusal_error)
        .unwrap_or_else(|| panic!("no refusal at the end of {events:#?}"))
}

fn response_of(events: &[Event]) -> String {
    match events.last() {
        Some(Event::Refused { response, .. }) => String::from_utf8_lossy(response).into_owned(),
        other => panic!("no refusal at the end: {other:?}"),
    }
}

#[test]
fn a_request_from_curl_is_allowed_and_forwarded_as_received() {
    let events = run_http_whole(partner_rules(), CURL_GET);
    assert_eq!(
        events,
        vec![Event::Allowed {
            method: "GET".to_string(),
            path: "/v1/items".to_string(),
            host: Some("api.example.com".to_string()),
            rule_index: 0,
            head: CURL_GET.to_vec(),
        }]
    );
}

#[test]
fn a_denied_request_gets_a_403_naming_the_rule_and_nothing_after_it_is_read() {
    let mut stream =
        b"POST /v1/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 3\r\n\r\nabc".to_vec();
    stream.extend_from_slice(&get("/v1/items"));
    let events = run_http_whole(partner_rules(), &stream);
    assert_eq!(events.len(), 1, "{events:#?}");
    let Event::Refused {
        reason,
        after_forwarded_requests,
        ..
    } = &events[0]
    else {
        panic!("{events:#?}");
    };
    let RefusalReason::Denied {
        request,
        alternatives,
    } = reason
    else {
        panic!("{reason:?}");
    };
    assert_eq!(request.method, "POST");
    assert_eq!(alternatives, &[support::rule("default.partner", 0)]);
    assert_eq!(*after_forwarded_requests, 0);
    let response = response_of(&events);
    assert!(response.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{response}");
    assert!(response.contains("connection: close\r\n"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        body,
        "Denied by Sluice: POST /v1/items to api.example.com is not allowed by the HTTP match of default.partner, egress rule 0.\n"
    );
    let length: usize = response
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len());
}

#[test]
fn a_denied_head_request_gets_no_body() {
    let events = run_http_whole(
        partner_rules(),
        b"HEAD /admin HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    );
    let response = response_of(&events);
    assert!(response.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{response}");
    assert!(response.ends_with("connection: close\r\n\r\n"), "{response}");
}

#[test]
fn each_pipelined_request_is_checked_and_a_denial_waits_for_earlier_answers() {
    let mut stream = get("/v1/a");
    stream.extend_from_slice(&get("/v1/b"));
    stream.extend_from_slice(&get("/admin"));
    stream.extend_from_slice(&get("/v1/c"));
    let events = run_http_whole(partner_rules(), &stream);
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(matches!(&events[0], Event::Allowed { path, .. } if path == "/v1/a"));
    assert!(matches!(&events[1], Event::Allowed { path, .. } if path == "/v1/b"));
    assert!(matches!(
        &events[2],
        Event::Refused {
            reason: RefusalReason::Denied { .. },
            after_forwarded_requests: 2,
            ..
        }
    ));
}

/// Requests with bodies of every framing, back to back on one connection.
fn keep_alive_stream() -> Vec<u8> {
    let mut stream = Vec::new();
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(
        b"POST /v1/upload HTTP/1.1\r\nHost: api.example.com:8080\r\nContent-Length: 11\r\n\r\nhello world",
    );
    stream.extend_from_slice(
        b"PUT /v1/chunks HTTP/1.1\r\nHost: API.Example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nChecksum: 1\r\n\r\n",
    );
    stream.extend_from_slice(
        b"GET http://api.example.com/v1/%61bsolute?q HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    );
    stream
        .extend_from_slice(b"POST /v1/empty HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 0\r\n\r\n");
    stream.extend_from_slice(b"OPTIONS * HTTP/1.0\r\n\r\n");
    stream.extend_from_slice(&get("/v1/last"));
    stream
}

#[test]
fn bodies_of_every_framing_are_passed_through_and_the_next_request_found() {
    let stream = keep_alive_stream();
    let events = run_http_whole(open_rules(), &stream);
    let summary: Vec<String> = events
        .iter()
        .map(|event| match event {
            Event::Allowed {
                method, path, host, ..
            } => format!("{method} {path} {host:?}"),
            Event::Body(body) => format!("body {}", String::from_utf8_lossy(body)),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            "POST /v1/upload Some(\"api.example.com\")",
            "body hello world",
            "PUT /v1/chunks Some(\"api.example.com\")",
            "body 4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nChecksum: 1\r\n\r\n",
            "GET /v1/absolute Some(\"api.example.com\")",
            "POST /v1/empty Some(\"api.example.com\")",
            "OPTIONS * None",
            "GET /v1/last Some(\"api.example.com\")",
        ]
    );
    // Every byte reaches the destination unchanged, the leading empty line with the first head.
    assert_eq!(forwarded_bytes(&events), stream);
}

#[test]
fn splitting_the_stream_at_any_byte_changes_nothing() {
    let mut stream = keep_alive_stream();
    stream.extend_from_slice(&get("/v1/../x"));
    let whole = run_http_whole(open_rules(), &stream);
    assert!(matches!(whole.last(), Some(Event::Refused { .. })));
    for split in 0..=stream.len() {
        assert_eq!(
            run_http(open_rules(), Limits::default(), &stream, &[split]),
            whole,
            "split at {split}"
        );
    }
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(
        run_http(open_rules(), Limits::default(), &stream, &every_byte),
        whole
    );
}

#[test]
fn a_large_body_passes_through_without_being_held() {
    let body_length = 1 << 20;
    let mut connection = HttpConnection::new(open_rules(), Limits::default());
    let mut outputs = Vec::new();
    connection.receive(
        format!("PUT /blob HTTP/1.1\r\nHost: h\r\nContent-Length: {body_length}\r\n\r\n").as_bytes(),
        &mut outputs,
    );
    assert!(matches!(outputs.as_slice(), [Output::ForwardHead(_)]));
    let piece = vec![b'x'; 64 * 1024];
    for _ in 0..body_length / piece.len() {
        outputs.clear();
        connection.receive(&piece, &mut outputs);
        // One range covering the whole read: the bytes go out from the shell's own buffer.
        assert_eq!(outputs, vec![Output::ForwardInput(0..piece.len())]);
    }
    assert!(connection.is_between_requests());
    assert_eq!(connection.forwarded_requests(), 1);
}

#[test]
fn expect_100_continue_is_forwarded_with_the_head() {
    let mut connection = HttpConnection::new(open_rules(), Limits::default());
    let mut outputs = Vec::new();
    connection.receive(
        b"PUT /v1/x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n",
        &mut outputs,
    );
    let [Output::ForwardHead(allowed)] = outputs.as_slice() else {
        panic!("{outputs:?}");
    };
    assert!(allowed.request.expects_continue);
    assert_eq!(allowed.request.body, BodyFraming::Length(2));
    assert!(!connection.is_between_requests());
    outputs.clear();
    connection.receive(b"ok", &mut outputs);
    assert_eq!(outputs, vec![Output::ForwardInput(0..2)]);
    assert!(connection.is_between_requests());
}

#[test]
fn smuggling_attempts_are_refused() {
    let cases: &[(&str, RequestError)] = &[
        // CL.TE and TE.CL: the classic desync.
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED",
            RequestError::ContentLengthWithTransferEncoding,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            RequestError::ContentLengthWithTransferEncoding,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            RequestError::MultipleContentLengths,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
            RequestError::MultipleContentLengths,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
            RequestError::InvalidContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            RequestError::InvalidContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n",
            RequestError::InvalidContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            RequestError::InvalidContentLength,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            RequestError::TransferEncodingNotChunked,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            RequestError::TransferEncodingNotChunked,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            RequestError::TransferEncodingNotChunked,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
            RequestError::TransferEncodingNotChunked,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
            RequestError::TransferEncodingNotChunked,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
            RequestError::TransferEncodingNotChunked,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n",
            RequestError::TransferEncodingNotChunked,
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            RequestError::TransferEncodingInHttp10,
        ),
        (
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
            RequestError::UpgradeNotSupported,
        ),
        (
            "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            RequestError::UpgradeNotSupported,
        ),
        (
            "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
            RequestError::MethodNotSupported {
                method: "CONNECT".to_string(),
            },
        ),
        (
            "GET http://api.example.com/v1/x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            RequestError::HostMismatch,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            RequestError::MultipleHosts,
        ),
    ];
    for (stream, expected) in cases {
        let events = run_http_whole(open_rules(), stream.as_bytes());
        assert_eq!(events.len(), 1, "{stream:?}: {events:#?}");
        assert_eq!(refusal_error(&events), expected, "{stream:?}");
    }
}

#[test]
fn malformed_heads_are_refused_with_their_status() {
    let malformed = |detail: &str| RequestError::Malformed {
        detail: detail.to_string(),
    };
    let cases: &[(&[u8], RequestError, &str)] = &[
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\n",
            malformed("invalid header name"),
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
            malformed("invalid header name"),
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n",
            malformed("invalid new line"),
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/3.0\r\nHost: h\r\n\r\n",
            malformed("invalid HTTP version"),
            "400 Bad Request",
        ),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\r\n",
            malformed("invalid token"),
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\nHost: h\n\n",
            malformed("a line ends in LF without CR"),
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n",
            malformed("a line ends in LF without CR"),
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\r\n\r\n",
            RequestError::MissingHost,
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: api example\r\n\r\n",
            RequestError::InvalidHost,
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: api.example:80x\r\n\r\n",
            RequestError::InvalidHost,
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: user@api.example\r\n\r\n",
            RequestError::InvalidHost,
            "400 Bad Request",
        ),
        (
            b"GET /v1/../admin HTTP/1.1\r\nHost: h\r\n\r\n",
            RequestError::Path(PathError::DotSegment),
            "400 Bad Request",
        ),
        (
            b"GET /v1/%2e%2e/admin HTTP/1.1\r\nHost: h\r\n\r\n",
            RequestError::Path(PathError::DotSegment),
            "400 Bad Request",
        ),
        (
            b"GET /v1%2F..%2Fadmin HTTP/1.1\r\nHost: h\r\n\r\n",
            RequestError::Path(PathError::EncodedSeparator),
            "400 Bad Request",
        ),
        (
            b"GET /v1/x#fragment HTTP/1.1\r\nHost: h\r\n\r\n",
            RequestError::InvalidTarget {
                detail: "the target holds a fragment (`#`)",
            },
            "400 Bad Request",
        ),
        (
            b"GET https://api.example/ HTTP/1.1\r\nHost: api.example\r\n\r\n",
            RequestError::InvalidTarget {
                detail: "only origin-form (`/path`) and `http://` absolute-form targets are read",
            },
            "400 Bad Request",
        ),
        (
            b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            RequestError::InvalidTarget {
                detail: "`*` is a target for OPTIONS only",
            },
            "400 Bad Request",
        ),
        (
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
            RequestError::InvalidTarget {
                detail: "the target holds bytes that are not ASCII",
            },
            "400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            RequestError::UpgradeNotSupported,
            "501 Not Implemented",
        ),
    ];
    for (stream, expected, status) in cases {
        let events = run_http_whole(open_rules(), stream);
        assert_eq!(
            refusal_error(&events),
            expected,
            "{:?}",
            String::from_utf8_lossy(stream)
        );
        let response = response_of(&events);
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{response}"
        );
        assert!(response.contains(&expected.to_string()), "{response}");
    }
}

#[test]
fn oversized_heads_are_refused_at_the_limit() {
    let limits = Limits {
        maximum_head_bytes: 256,
        maximum_headers: 8,
        ..Limits::default()
    };
    // A head of exactly the limit is read.
    let prefix = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    let filler = 256 - prefix.len() - 4;
    let exact = [prefix.clone(), vec![b'a'; filler], b"\r\n\r\n".to_vec()].concat();
    assert_eq!(exact.len(), 256);
    let events = run_http(open_rules(), limits, &exact, &[]);
    assert!(
        matches!(events.as_slice(), [Event::Allowed { .. }]),
        "{events:#?}"
    );
    // One byte more is not, whether it arrives at once or a byte at a time.
    let over = [prefix, vec![b'a'; filler + 1], b"\r\n\r\n".to_vec()].concat();
    for splits in [vec![], (1..over.len()).collect::<Vec<_>>()] {
        let events = run_http(open_rules(), limits, &over, &splits);
        assert_eq!(refusal_error(&events), &RequestError::HeadTooLarge { limit: 256 });
        assert!(response_of(&events).starts_with("HTTP/1.1 431 "));
    }
    // A stream that never ends its head is refused once it passes the limit.
    let endless = vec![b'A'; 1000];
    let events = run_http(open_rules(), limits, &endless, &[100, 300]);
    assert_eq!(refusal_error(&events), &RequestError::HeadTooLarge { limit: 256 });
    let many: String = (0..9).map(|index| format!("X-{index}: y\r\n")).collect();
    let stream = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
    let events = run_http(open_rules(), limits, stream.as_bytes(), &[]);
    assert_eq!(refusal_error(&events), &RequestError::TooManyHeaders { limit: 8 });
    assert!(response_of(&events).starts_with("HTTP/1.1 431 "));
}

#[test]
fn empty_lines_before_a_request_are_skipped_up_to_a_bound() {
    let few = [b"\r\n\r\n\r\n".as_slice(), &get("/v1/x")].concat();
    let events = run_http_whole(open_rules(), &few);
    assert!(
        matches!(events.as_slice(), [Event::Allowed { .. }]),
        "{events:#?}"
    );
    assert_eq!(forwarded_bytes(&events), few);
    let many = [b"\r\n".repeat(20).as_slice(), &get("/v1/x")].concat();
    let events = run_http_whole(open_rules(), &many);
    assert_eq!(
        refusal_error(&events),
        &RequestError::Malformed {
            detail: "too many empty lines before the request line".to_string()
        }
    );
}

#[test]
fn http2_prior_knowledge_is_handed_to_the_http2_reader_with_every_byte() {
    for splits in [vec![], vec![3], vec![16, 18, 20], vec![24, 30]] {
        let events = run_http(open_rules(), Limits::default(), CURL_HTTP2, &splits);
        assert_eq!(
            events,
            vec![Event::Http2(CURL_HTTP2.to_vec())],
            "splits {splits:?}"
        );
    }
}

#[test]
fn http2_preface_after_a_request_gets_goaway_http_1_1_required() {
    let mut stream = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
    stream.extend_from_slice(CURL_HTTP2);
    for splits in [vec![], vec![30], vec![46, 48, 50]] {
        let events = run_http(open_rules(), Limits::default(), &stream, &splits);
        assert_eq!(events.len(), 2);
        assert!(matches!(events[0], Event::Allowed { .. }));
        let events = &events[1..];
        assert_eq!(refusal_error(events), &RequestError::Http2PriorKnowledge);
        let Event::Refused { response, .. } = &events[0] else {
            unreachable!()
        };
        // An empty SETTINGS frame, then GOAWAY (type 7) on stream 0 with last stream 0 and
        // error code HTTP_1_1_REQUIRED (0xd).
        assert_eq!(&response[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(response[12], 7);
        assert_eq!(&response[13..18], &[0, 0, 0, 0, 0]);
        assert_eq!(&response[18..22], &[0, 0, 0, 0]);
        assert_eq!(&response[22..26], &[0, 0, 0, 0xd]);
        let length =
            usize::from(response[9]) << 16 | usize::from(response[10]) << 8 | usize::from(response[11]);
        assert_eq!(response.len(), 18 + length);
    }
}

#[test]
fn a_malformed_chunked_body_closes_the_connection_after_what_was_forwarded() {
    let stream = b"POST /v1/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n";
    let events = run_http_whole(open_rules(), stream);
    assert!(matches!(events[0], Event::Allowed { .. }));
    assert_eq!(events[1], Event::Body(b"3\r\nabc\r\n".to_vec()));
    assert_eq!(events[2], Event::Closed(RequestError::InvalidChunkSize));
    assert_eq!(events.len(), 3);
    let mut connection = HttpConnection::new(open_rules(), Limits::default());
    let mut outputs = Vec::new();
    connection.receive(stream, &mut outputs);
    assert!(connection.is_finished());
    outputs.clear();
    connection.receive(&get("/"), &mut outputs);
    assert!(outputs.is_empty());
}

#[test]
fn hosts_and_http_1_0() {
    let rules = partner_rules();
    let cases: &[(&[u8], bool)] = &[
        (b"GET /v1/x HTTP/1.1\r\nHost: API.EXAMPLE.COM:443\r\n\r\n", true),
        (b"GET /v1/x HTTP/1.1\r\nHost: api.example.com.\r\n\r\n", true),
        (b"GET /v1/x HTTP/1.1\r\nHost: api.example.com\t \r\n\r\n", true),
        (b"GET /v1/x HTTP/1.1\r\nHost: www.example.com\r\n\r\n", false),
        (b"GET /v1/x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", false),
        (b"GET /v1/x HTTP/1.0\r\n\r\n", false),
        (b"GET /v1/x HTTP/1.0\r\nHost: api.example.com\r\n\r\n", true),
        (b"GET /v1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n", false),
        (b"GET /v1//x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", true),
        (
            b"GET /%76%31/x?y=1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
            true,
        ),
        (b"get /v1/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", false),
    ];
    let events = run_http_whole(Arc::clone(&rules), b"GET /v1/x HTTP/1.1\r\nHost:\r\n\r\n");
    assert_eq!(refusal_error(&events), &RequestError::MissingHost);
    for (stream, allowed) in cases {
        let events = run_http_whole(Arc::clone(&rules), stream);
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(
            matches!(events[0], Event::Allowed { .. }),
            *allowed,
            "{:?}: {events:#?}",
            String::from_utf8_lossy(stream)
        );
        if !allowed {
            assert!(
                matches!(
                    events[0],
                    Event::Refused {
                        reason: RefusalReason::Denied { .. },
                        ..
                    }
                ),
                "{events:#?}"
            );
        }
    }
}

#[test]
fn a_denial_names_every_rule_tried_and_counts_the_rest() {
    let alternatives: Vec<_> = (0..6)
        .map(|index| sluice_proxy::HttpAlternative {
            rule: support::rule("default.many", index),
            methods: vec!["GET".to_string()],
            paths: vec![],
            hosts: vec![],
        })
        .collect();
    let events = run_http_whole(Arc::from(alternatives), b"DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n");
    let response = response_of(&events);
    assert!(
        response.ends_with(
            "\r\n\r\nDenied by Sluice: DELETE /x to h is not allowed by the HTTP matches of default.many, egress rule 0, default.many, egress rule 1, default.many, egress rule 2, default.many, egress rule 3 and 2 more.\n"
        ),
        "{response}"
    );
    let events = run_http_whole(Arc::from(vec![]), &get("/"));
    assert!(response_of(&events).ends_with("is not allowed by any rule.\n"));
}
