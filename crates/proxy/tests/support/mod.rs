//! Running the cores over byte streams split at chosen points, and building ClientHellos.
#![allow(dead_code)]

use std::sync::Arc;

use sluice_proxy::http::{HttpConnection, Limits, Output, RefusalReason, RequestError};
use sluice_proxy::tls::{self, TlsConnection, TlsDecision};
use sluice_proxy::{HttpAlternative, PathMatch, RuleIdentity, TlsAlternative};

pub fn rule(policy: &str, rule_index: usize) -> RuleIdentity {
    RuleIdentity {
        policy: policy.to_string(),
        rule_index,
    }
}

/// GET anything under `/v1/` on `api.example.com`, from `default.partner` rule 0.
pub fn partner_rules() -> Arc<[HttpAlternative]> {
    Arc::from(vec![HttpAlternative {
        rule: rule("default.partner", 0),
        methods: vec!["GET".to_string(), "HEAD".to_string()],
        paths: vec![PathMatch::Prefix("/v1/".to_string())],
        hosts: vec!["api.example.com".parse().unwrap()],
    }])
}

/// Everything allowed, from `default.open` rule 0.
pub fn open_rules() -> Arc<[HttpAlternative]> {
    Arc::from(vec![HttpAlternative {
        rule: rule("default.open", 0),
        methods: vec![],
        paths: vec![],
        hosts: vec![],
    }])
}

/// What a connection did with a stream, independent of how the stream was split: body bytes
/// are joined, and each decision is recorded with the forwarded bytes before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A forwarded head: method, canonical path, host, the rule's index, and the head's bytes.
    Allowed {
        method: String,
        path: String,
        host: Option<String>,
        rule_index: usize,
        head: Vec<u8>,
    },
    Body(Vec<u8>),
    Refused {
        reason: RefusalReason,
        response: Vec<u8>,
        after_forwarded_requests: u64,
    },
    Closed(RequestError),
    /// Handed to the HTTP/2 reader: the bytes received so far, and every piece after.
    Http2(Vec<u8>),
}

impl Event {
    pub fn refusal_error(&self) -> Option<&RequestError> {
        match self {
            Event::Refused {
                reason: RefusalReason::Invalid(error),
                ..
            } => Some(error),
            Event::Closed(error) => Some(error),
            _ => None,
        }
    }
}

/// Feeds `stream` in pieces ending at `splits` (sorted, in range) and returns the events.
pub fn run_http(
    alternatives: Arc<[HttpAlternative]>,
    limits: Limits,
    stream: &[u8],
    splits: &[usize],
) -> Vec<Event> {
    let mut connection = HttpConnection::new(alternatives, limits);
    let mut events = Vec::new();
    let mut outputs = Vec::new();
    let mut start = 0;
    for end in splits.iter().copied().chain([stream.len()]) {
        let end = end.clamp(start, stream.len());
        let piece = &stream[start..end];
        if let Some(Event::Http2(received)) = events.last_mut() {
            // As the shell does: what follows goes to the HTTP/2 reader.
            received.extend_from_slice(piece);
            start = end;
            continue;
        }
        outputs.clear();
        connection.receive(piece, &mut outputs);
        for output in outputs.drain(..) {
            match output {
                Output::ForwardHead(allowed) => events.push(Event::Allowed {
                    method: allowed.request.method.clone(),
                    path: allowed.request.path.clone(),
                    host: allowed.request.host.clone(),
                    rule_index: allowed.allowed_by.rule_index,
                    head: allowed.head,
                }),
                Output::ForwardInput(range) => match events.last_mut() {
                    Some(Event::Body(body)) => body.extend_from_slice(&piece[range]),
                    _ => events.push(Event::Body(piece[range].to_vec())),
                },
                Output::Refuse(refusal) => events.push(Event::Refused {
                    reason: refusal.reason,
                    response: refusal.response,
                    after_forwarded_requests: refusal.after_forwarded_requests,
                }),
                Output::Close(error) => events.push(Event::Closed(error)),
                Output::Http2(received) => events.push(Event::Http2(received)),
            }
        }
        start = end;
    }
    events
}

pub fn run_http_whole(alternatives: Arc<[HttpAlternative]>, stream: &[u8]) -> Vec<Event> {
    run_http(alternatives, Limits::default(), stream, &[])
}

/// Every byte forwarded, heads and bodies, in order.
pub fn forwarded_bytes(events: &[Event]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for event in events {
        match event {
            Event::Allowed { head, .. } => bytes.extend_from_slice(head),
            Event::Body(body) => bytes.extend_from_slice(body),
            _ => {}
        }
    }
    bytes
}

/// The decision for a TLS stream fed in pieces, with the bytes the shell would forward (the
/// decision's bytes and everything given after it).
pub fn run_tls(
    alternatives: Arc<[TlsAlternative]>,
    limits: tls::Limits,
    stream: &[u8],
    splits: &[usize],
) -> (TlsDecision, Vec<u8>) {
    let mut connection = TlsConnection::new(alternatives, limits);
    let mut decision = TlsDecision::NeedMore;
    let mut forwarded = Vec::new();
    let mut start = 0;
    for end in splits.iter().copied().chain([stream.len()]) {
        let end = end.clamp(start, stream.len());
        let piece = &stream[start..end];
        if connection.is_decided() {
            if matches!(decision, TlsDecision::Forward { .. }) {
                forwarded.extend_from_slice(piece);
            }
        } else {
            decision = connection.receive(piece);
            if let TlsDecision::Forward { bytes, .. } = &decision {
                forwarded.extend_from_slice(bytes);
            }
        }
        start = end;
    }
    (decision, forwarded)
}

pub fn tls_rules(names: &[&str]) -> Arc<[TlsAlternative]> {
    Arc::from(vec![TlsAlternative {
        rule: rule("default.cdn", 2),
        server_names: names.iter().map(|name| name.parse().unwrap()).collect(),
    }])
}

/// A ClientHello body (without the handshake header) with the given extensions.
pub fn client_hello_body(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(32);
    body.extend_from_slice(&[9; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    let mut list = Vec::new();
    for (extension, data) in extensions {
        list.extend_from_slice(&extension.to_be_bytes());
        list.extend_from_slice(&(data.len() as u16).to_be_bytes());
        list.extend_from_slice(data);
    }
    body.extend_from_slice(&(list.len() as u16).to_be_bytes());
    body.extend_from_slice(&list);
    body
}

/// The data of a server-name extension listing `names` as host names.
pub fn server_name_extension(names: &[&str]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for name in names {
        list.push(0);
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name.as_bytes());
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (0, data)
}

/// Supported versions (TLS 1.3), an extension every modern hello carries.
pub fn supported_versions_extension() -> (u16, Vec<u8>) {
    (43, vec![2, 3, 4])
}

/// A handshake message around a ClientHello body.
pub fn handshake(body: &[u8]) -> Vec<u8> {
    let mut message = vec![1];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(body);
    message
}

/// A handshake message in records of at most `record_size` bytes each.
pub fn records(message: &[u8], record_size: usize) -> Vec<u8> {
    let mut stream = Vec::new();
    for fragment in message.chunks(record_size) {
        stream.extend_from_slice(&[22, 3, 1]);
        stream.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        stream.extend_from_slice(fragment);
    }
    stream
}

/// A one-record ClientHello naming `server_name`.
pub fn simple_hello(server_name: &str) -> Vec<u8> {
    records(
        &handshake(&client_hello_body(&[
            server_name_extension(&[server_name]),
            supported_versions_extension(),
        ])),
        1 << 14,
    )
}
