//! HTTP/1.1 requests on one proxied connection: bytes from the client in, per-request
//! decisions out.
//!
//! The shell reads from the client and hands every read to [`HttpConnection::receive`], which
//! appends [`Output`]s in the order the shell must carry them out:
//!
//! - [`Output::ForwardHead`]: a request was allowed; write its head (the exact bytes received)
//!   to the original destination.
//! - [`Output::ForwardInput`]: write this range of the bytes just given to the destination
//!   (body bytes, passed on as they arrive; the core holds only request heads).
//! - [`Output::Refuse`]: stop writing to the destination and half-close it; if
//!   [`Refusal::after_forwarded_requests`] is not zero, keep copying the destination's answers
//!   to the client until it closes (the answers to requests already forwarded come first);
//!   then write [`Refusal::response`] to the client and close.
//! - [`Output::Close`]: the body of a forwarded request turned out malformed; close both sides
//!   without another word (the destination already has part of the request).
//!
//! After `Refuse` or `Close` the connection takes no more bytes. Responses are the shell's to
//! copy back untouched; the core never reads them.
//!
//! Every request on a keep-alive connection is checked, pipelined ones included: the body's
//! framing says where the next head starts. A connection that starts with the HTTP/2 preface
//! (prior knowledge) is handed to [`crate::http2`] ([`Output::Http2`]); the preface later on is
//! refused with an HTTP/2 `GOAWAY` (`HTTP_1_1_REQUIRED`), which tells a client to use HTTP/1.1;
//! upgrades (`Upgrade`, so also `h2c`) and `CONNECT` are refused, since after them the bytes are
//! no longer requests the core can read.

mod chunked;
mod head;
mod path;
pub(crate) mod response;

use std::ops::Range;
use std::sync::Arc;

pub use head::{BodyFraming, Request, RequestError, Version};
pub use path::{PathError, canonical_path};

use crate::matcher::{HttpAlternative, RuleIdentity, match_request};
pub use crate::matcher::{Judgement, RequestJudge};
use chunked::{ChunkProgress, ChunkedBody};
use head::{HeadParse, parse_head};
pub(crate) use head::{normalise_host, read_target};

/// The first bytes of HTTP/2 with prior knowledge (RFC 9113 §3.4), up to the first empty line.
const HTTP2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// Empty lines accepted before a request line (RFC 9112 §2.2 asks servers to skip at least
/// one); each one costs a parse of the head so far, so they are bounded.
const MAXIMUM_LEADING_EMPTY_LINES: u8 = 8;

/// Bounds on what one connection may make the core hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line and header fields, with their line ends (Envoy's default is 60 KiB,
    /// nginx's large buffers 4 × 8 KiB).
    pub maximum_head_bytes: usize,
    /// Header fields per request (Envoy's default: 100).
    pub maximum_headers: usize,
    /// One chunk-size line with its extensions.
    pub maximum_chunk_line_bytes: usize,
    /// The trailer section of a chunked body.
    pub maximum_trailer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            maximum_head_bytes: 32 * 1024,
            maximum_headers: 100,
            maximum_chunk_line_bytes: 4 * 1024,
            maximum_trailer_bytes: 8 * 1024,
        }
    }
}

/// A request the rules allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRequest {
    pub request: Request,
    pub allowed_by: RuleIdentity,
    /// The head as received, to be written to the destination.
    pub head: Vec<u8>,
}

/// Why a request was answered instead of forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalReason {
    /// No alternative allows the request; `alternatives` names every rule that was tried
    /// (any of which, matching, would have allowed it).
    Denied {
        request: Request,
        alternatives: Vec<RuleIdentity>,
    },
    /// The request could not be read safely.
    Invalid(RequestError),
}

/// A request answered by the proxy itself, after which the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// The bytes to write to the client: an HTTP/1.1 response with `Connection: close`, or an
    /// HTTP/2 `SETTINGS` and `GOAWAY` for a client speaking HTTP/2.
    pub response: Vec<u8>,
    /// How many requests were forwarded on this connection before, whose answers must reach
    /// the client first.
    pub after_forwarded_requests: u64,
}

/// What the shell does next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    ForwardHead(Box<AllowedRequest>),
    /// A range of the bytes given to this `receive` call.
    ForwardInput(Range<usize>),
    Refuse(Box<Refusal>),
    Close(RequestError),
    /// The connection starts with the HTTP/2 preface: hand it, with every byte received so
    /// far (nothing was forwarded), to [`crate::http2::Http2Connection`].
    Http2(Vec<u8>),
}

#[derive(Debug, Clone)]
enum State {
    /// Reading a head; `scanned` is how far the buffer was searched for its empty line.
    Head {
        scanned: usize,
    },
    Body {
        remaining: u64,
    },
    Chunked(ChunkedBody),
    Finished,
}

/// One client connection's requests. See the module documentation for the shell's part.
#[derive(Debug, Clone)]
pub struct HttpConnection {
    judge: Arc<dyn RequestJudge>,
    limits: Limits,
    state: State,
    head: Vec<u8>,
    /// Empty lines seen before the current head's request line.
    leading_empty_lines: u8,
    forwarded_requests: u64,
}

impl HttpConnection {
    /// A connection whose requests are matched against `alternatives` in order.
    pub fn new(alternatives: Arc<[HttpAlternative]>, limits: Limits) -> HttpConnection {
        HttpConnection::with_judge(Arc::new(Alternatives(alternatives)), limits)
    }

    /// A connection whose requests `judge` decides (the shell's evaluator): the core still
    /// reads and frames every request, and asks the judge only about complete, safe heads.
    pub fn with_judge(judge: Arc<dyn RequestJudge>, limits: Limits) -> HttpConnection {
        HttpConnection {
            judge,
            limits,
            state: State::Head { scanned: 0 },
            head: Vec::new(),
            leading_empty_lines: 0,
            forwarded_requests: 0,
        }
    }

    /// Requests forwarded so far.
    pub fn forwarded_requests(&self) -> u64 {
        self.forwarded_requests
    }

    /// Whether the connection ended with a refusal or a close and takes no more bytes.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// Whether the client may close here without cutting a request short: no head or body is
    /// partly received. When the client closes elsewhere the shell just half-closes the
    /// destination; an incomplete head was never forwarded.
    pub fn is_between_requests(&self) -> bool {
        matches!(self.state, State::Head { .. }) && self.head.is_empty()
    }

    /// Takes bytes the client sent and appends what to do with them to `outputs`.
    pub fn receive(&mut self, input: &[u8], outputs: &mut Vec<Output>) {
        let mut index = 0;
        while index < input.len() {
            match &mut self.state {
                State::Finished => return,
                State::Body { remaining } => {
                    let taken = (*remaining).min((input.len() - index) as u64) as usize;
                    *remaining -= taken as u64;
                    forward(outputs, index..index + taken);
                    index += taken;
                    if *remaining == 0 {
                        self.state = State::Head { scanned: 0 };
                    }
                }
                State::Chunked(body) => match body.advance(&input[index..]) {
                    ChunkProgress::Consumed => {
                        forward(outputs, index..input.len());
                        index = input.len();
                    }
                    ChunkProgress::Finished(length) => {
                        forward(outputs, index..index + length);
                        index += length;
                        self.state = State::Head { scanned: 0 };
                    }
                    ChunkProgress::Failed(length, error) => {
                        forward(outputs, index..index + length);
                        self.state = State::Finished;
                        outputs.push(Output::Close(error));
                        return;
                    }
                },
                State::Head { scanned } => {
                    let scanned = *scanned;
                    index += self.read_head(&input[index..], scanned, outputs);
                }
            }
        }
    }

    /// Buffers head bytes from `input`; returns how many it took (all of them unless the head
    /// ended inside `input`).
    fn read_head(&mut self, input: &[u8], mut scanned: usize, outputs: &mut Vec<Output>) -> usize {
        let room = self.limits.maximum_head_bytes - self.head.len();
        if room == 0 {
            self.refuse(
                RefusalReason::Invalid(RequestError::HeadTooLarge {
                    limit: self.limits.maximum_head_bytes,
                }),
                outputs,
            );
            return input.len();
        }
        let taken = input.len().min(room);
        let before = self.head.len();
        self.head.extend_from_slice(&input[..taken]);
        loop {
            let Some(end) = find_empty_line(&self.head, &mut scanned) else {
                self.state = State::Head { scanned };
                return taken;
            };
            if self.head.starts_with(HTTP2_PREFACE_START) {
                if self.forwarded_requests == 0 && self.leading_empty_lines == 0 {
                    // Prior knowledge: the HTTP/2 reader takes the connection from its start.
                    let mut received = std::mem::take(&mut self.head);
                    received.extend_from_slice(&input[taken..]);
                    self.state = State::Finished;
                    outputs.push(Output::Http2(received));
                    return input.len();
                }
                self.refuse(RefusalReason::Invalid(RequestError::Http2PriorKnowledge), outputs);
                return taken;
            }
            match parse_head(&self.head[..end], self.limits.maximum_headers) {
                // Only empty lines so far, which servers skip before a request line.
                HeadParse::Partial => {
                    self.leading_empty_lines += 1;
                    if self.leading_empty_lines > MAXIMUM_LEADING_EMPTY_LINES {
                        self.refuse(
                            RefusalReason::Invalid(RequestError::Malformed {
                                detail: "too many empty lines before the request line".to_string(),
                            }),
                            outputs,
                        );
                        return taken;
                    }
                }
                HeadParse::Failed(error) => {
                    self.refuse(RefusalReason::Invalid(error), outputs);
                    return taken;
                }
                HeadParse::Complete { length, request } => {
                    // The bytes after the head are the body or the next request, read from
                    // `input` itself.
                    self.head.truncate(length);
                    let used = length - before;
                    let head = std::mem::take(&mut self.head);
                    self.leading_empty_lines = 0;
                    self.decide(request, head, outputs);
                    return used;
                }
            }
        }
    }

    fn decide(&mut self, request: Request, head: Vec<u8>, outputs: &mut Vec<Output>) {
        let allowed_by = match self.judge.judge(&request) {
            Judgement::Allow(rule) => rule,
            Judgement::Deny(alternatives) => {
                self.refuse(
                    RefusalReason::Denied {
                        request,
                        alternatives,
                    },
                    outputs,
                );
                return;
            }
        };
        self.state = match request.body {
            BodyFraming::Empty => State::Head { scanned: 0 },
            BodyFraming::Length(remaining) => State::Body { remaining },
            BodyFraming::Chunked => State::Chunked(ChunkedBody::new(
                self.limits.maximum_chunk_line_bytes,
                self.limits.maximum_trailer_bytes,
            )),
        };
        self.forwarded_requests += 1;
        outputs.push(Output::ForwardHead(Box::new(AllowedRequest {
            request,
            allowed_by,
            head,
        })));
    }

    fn refuse(&mut self, reason: RefusalReason, outputs: &mut Vec<Output>) {
        self.state = State::Finished;
        self.head = Vec::new();
        let response = response::for_refusal(&reason);
        outputs.push(Output::Refuse(Box::new(Refusal {
            reason,
            response,
            after_forwarded_requests: self.forwarded_requests,
        })));
    }
}

/// The core's own judge: the first alternative that matches allows.
#[derive(Debug)]
pub(crate) struct Alternatives(pub(crate) Arc<[HttpAlternative]>);

impl RequestJudge for Alternatives {
    fn judge(&self, request: &Request) -> Judgement {
        match match_request(&self.0, &request.method, &request.path, request.host.as_deref()) {
            Some(alternative) => Judgement::Allow(alternative.rule.clone()),
            None => Judgement::Deny(
                self.0
                    .iter()
                    .map(|alternative| alternative.rule.clone())
                    .collect(),
            ),
        }
    }
}

/// Appends a range to forward, joining it to the previous one when they touch.
fn forward(outputs: &mut Vec<Output>, range: Range<usize>) {
    if range.is_empty() {
        return;
    }
    if let Some(Output::ForwardInput(previous)) = outputs.last_mut()
        && previous.end == range.start
    {
        previous.end = range.end;
        return;
    }
    outputs.push(Output::ForwardInput(range));
}

/// The end (exclusive) of the first empty line at or after `scanned`, which is moved past what
/// was searched. A line ends in LF or CRLF, as httparse reads them.
fn find_empty_line(buffer: &[u8], scanned: &mut usize) -> Option<usize> {
    let mut index = *scanned;
    while index < buffer.len() {
        if buffer[index] == b'\n' {
            match buffer.get(index + 1..) {
                Some([b'\n', ..]) => {
                    *scanned = index + 1;
                    return Some(index + 2);
                }
                Some([b'\r', b'\n', ..]) => {
                    *scanned = index + 1;
                    return Some(index + 3);
                }
                // Not enough bytes yet to say; search again from this line end.
                Some([]) | Some([b'\r']) => {
                    *scanned = index;
                    return None;
                }
                _ => {}
            }
        }
        index += 1;
    }
    // An empty line at the very start (leading CRLF) ends nothing: httparse skips it.
    *scanned = index;
    None
}
