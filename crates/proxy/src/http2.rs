//! HTTP/2 over cleartext TCP with prior knowledge (h2c, RFC 9113 §3.3): every request stream
//! judged, as on HTTP/1.1.
//!
//! The HTTP/1.1 core hands over a connection that starts with the HTTP/2 preface
//! ([`crate::http::Output::Http2`]); from then on the shell gives the client's bytes to
//! [`Http2Connection::receive`] and the destination's to [`Http2Connection::from_destination`],
//! and carries out the [`Http2Output`]s and [`ToClient`]s in order.
//!
//! - Frames pass unchanged, with one exception: a request's header block (`HEADERS` and its
//!   `CONTINUATION`s) is held until it is complete, decompressed (HPACK, with the connection's
//!   own dynamic table kept in step with the client's encoder) and judged. An allowed block
//!   goes on as received; so the destination's decoder sees every block the client's encoder
//!   made, up to the first denial.
//! - Nothing goes to the destination before the first request is allowed: the preface and the
//!   frames before it are held (bounded) and forwarded with that request's block.
//! - A denied (or unreadable) request is answered on its stream by the proxy: `403` (or the
//!   status of the error) with a short body naming the rules, a `RST_STREAM` (`NO_ERROR`) and a
//!   `GOAWAY` (`NO_ERROR`) naming the last stream the destination may have seen. Its block is
//!   not forwarded, so no later block could be decompressed by the destination: from then on
//!   no header block is forwarded (new streams are dropped; the client retries them on a new
//!   connection, as `GOAWAY` tells it), while frames of the streams already forwarded still
//!   pass, so their answers and uploads finish. As on HTTP/1.1, a refusal ends the connection,
//!   after the answers to what was forwarded before.
//! - The proxy's frames reach the client between two of the destination's frames, after its
//!   first (its `SETTINGS`); their header block uses only literal fields without indexing, so
//!   the client's decoder table stays the destination's. When no destination was opened (the
//!   first request was refused), the proxy answers as the server would: its own `SETTINGS`,
//!   acknowledgements of the client's, the answer, and the end.
//! - Fail closed: a frame sequence HTTP/2 forbids, an undecodable block or a frame over the
//!   limits closes the connection ([`Http2Output::Close`]).

use std::ops::Range;
use std::sync::Arc;

use loona_hpack::Decoder;
use thiserror::Error;

use crate::http::response::status_and_body;
use crate::http::{BodyFraming, RefusalReason, Request, RequestError, Version, normalise_host, read_target};
use crate::matcher::{Judgement, RequestJudge, RuleIdentity};

/// The client's connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER_BYTES: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

const NO_ERROR: u32 = 0x0;

/// HPACK static table indices of the names the proxy's answers use (RFC 7541 Appendix A).
const STATIC_STATUS: usize = 8;
const STATIC_CONTENT_LENGTH: usize = 28;
const STATIC_CONTENT_TYPE: usize = 31;

/// Bounds on what one HTTP/2 connection may make the core hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Limits {
    /// One frame's payload (HTTP/2's default maximum is 16 KiB; a server may allow more).
    pub maximum_frame_bytes: usize,
    /// One request's header block, compressed, across its frames.
    pub maximum_header_block_bytes: usize,
    /// Header fields per request.
    pub maximum_headers: usize,
    /// The HPACK dynamic table the client may ask the decoder to keep (the default is 4 KiB).
    pub maximum_table_bytes: usize,
    /// What the client may send before its first allowed request (preface, settings, pings).
    pub maximum_held_bytes: usize,
}

impl Default for Http2Limits {
    fn default() -> Http2Limits {
        Http2Limits {
            maximum_frame_bytes: 1 << 20,
            maximum_header_block_bytes: 32 * 1024,
            maximum_headers: 100,
            maximum_table_bytes: 64 * 1024,
            maximum_held_bytes: 64 * 1024,
        }
    }
}

/// Why an HTTP/2 connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Http2Error {
    #[error("the connection does not start with the HTTP/2 preface")]
    NotPreface,
    #[error("a frame of {length} bytes is larger than the proxy takes ({limit})")]
    FrameTooLarge { length: usize, limit: usize },
    #[error("a header block is longer than {limit} bytes")]
    HeaderBlockTooLarge { limit: usize },
    #[error("more than {limit} bytes came before the first request")]
    TooMuchBeforeRequest { limit: usize },
    #[error("the frames break HTTP/2's rules: {detail}")]
    Protocol { detail: &'static str },
    #[error("a header block could not be decompressed (HPACK)")]
    Compression,
    #[error(
        "a stream forwarded before a refusal sent another header block, which the destination could not decompress"
    )]
    HeadersAfterRefusal,
}

/// What the shell does with the client's bytes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http2Output {
    /// Write this range of the bytes given to this `receive` call to the destination (open it
    /// first if it is not).
    ForwardInput(Range<usize>),
    /// Write these bytes to the destination (open it first if it is not).
    Forward(Vec<u8>),
    /// A request was judged (for the shell's log and counters).
    Decided(Box<Http2Decision>),
    /// Write these bytes to the client now: the proxy's frames, at a frame boundary of what the
    /// destination sent.
    ToClient(Vec<u8>),
    /// No destination was opened: write these bytes to the client and close.
    Finish(Vec<u8>),
    /// Close both sides at once.
    Close(Http2Error),
}

/// A judged request stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http2Decision {
    Allowed {
        stream: u32,
        request: Request,
        allowed_by: RuleIdentity,
    },
    Refused {
        stream: u32,
        reason: RefusalReason,
    },
}

/// What the shell writes to the client from the destination's bytes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    /// This range of the bytes given to this `from_destination` call.
    Pass(Range<usize>),
    /// The proxy's own frames.
    Inject(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    bytes: [u8; FRAME_HEADER_BYTES],
    length: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(bytes: [u8; FRAME_HEADER_BYTES]) -> FrameHeader {
        FrameHeader {
            bytes,
            length: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }
}

#[derive(Debug)]
enum Handling {
    Pass,
    Drop,
    Collect(Vec<u8>),
}

#[derive(Debug)]
enum Reading {
    Preface {
        matched: usize,
    },
    Header {
        bytes: [u8; FRAME_HEADER_BYTES],
        filled: usize,
    },
    Payload {
        frame: FrameHeader,
        remaining: usize,
        handling: Handling,
    },
}

/// A header block being received.
#[derive(Debug)]
struct Block {
    stream: u32,
    /// Its frames as received, to forward.
    raw: Vec<u8>,
    /// The HPACK bytes.
    fragment: Vec<u8>,
}

/// Where the destination's bytes are: the proxy's frames go in only between two frames.
#[derive(Debug)]
struct DestinationFrames {
    header: [u8; FRAME_HEADER_BYTES],
    filled: usize,
    remaining: usize,
    frames: u64,
}

impl DestinationFrames {
    fn at_boundary(&self) -> bool {
        self.filled == 0 && self.remaining == 0
    }

    /// Whether the proxy's frames may go in now: between two frames, after the first (the
    /// destination's SETTINGS).
    fn between_frames(&self) -> bool {
        self.at_boundary() && self.frames > 0
    }
}

/// One client connection speaking HTTP/2 with prior knowledge.
pub struct Http2Connection {
    judge: Arc<dyn RequestJudge>,
    limits: Http2Limits,
    decoder: Decoder<'static>,
    reading: Reading,
    block: Option<Block>,
    /// Until the first request is allowed: what the client sent, for the destination.
    held: Option<Vec<u8>>,
    /// SETTINGS frames of the client's (not acknowledgements) seen while held.
    client_settings: usize,
    highest_stream: u32,
    highest_forwarded: u32,
    refused: bool,
    finished: bool,
    destination: DestinationFrames,
    /// The proxy's frames waiting for a boundary of the destination's.
    queued: Vec<u8>,
}

impl std::fmt::Debug for Http2Connection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Http2Connection")
            .field("reading", &self.reading)
            .field("highest_stream", &self.highest_stream)
            .field("highest_forwarded", &self.highest_forwarded)
            .field("refused", &self.refused)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Http2Connection {
    /// A connection whose requests are matched against `alternatives` in order.
    pub fn with_alternatives(
        alternatives: Arc<[crate::HttpAlternative]>,
        limits: Http2Limits,
    ) -> Http2Connection {
        Http2Connection::new(Arc::new(crate::http::Alternatives(alternatives)), limits)
    }

    /// A connection whose requests `judge` decides (the shell's evaluator).
    pub fn new(judge: Arc<dyn RequestJudge>, limits: Http2Limits) -> Http2Connection {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(limits.maximum_table_bytes);
        Http2Connection {
            judge,
            limits,
            decoder,
            reading: Reading::Preface { matched: 0 },
            block: None,
            held: Some(Vec::new()),
            client_settings: 0,
            highest_stream: 0,
            highest_forwarded: 0,
            refused: false,
            finished: false,
            destination: DestinationFrames {
                header: [0; FRAME_HEADER_BYTES],
                filled: 0,
                remaining: 0,
                frames: 0,
            },
            queued: Vec::new(),
        }
    }

    /// Whether a request was refused (the connection is ending).
    pub fn is_refusing(&self) -> bool {
        self.refused
    }

    /// The proxy's frames still waiting for the destination, for when it ends.
    pub fn take_queued(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.queued)
    }

    /// Takes bytes the client sent and appends what to do with them to `outputs`.
    pub fn receive(&mut self, input: &[u8], outputs: &mut Vec<Http2Output>) {
        let mut index = 0;
        while index < input.len() && !self.finished {
            match &mut self.reading {
                Reading::Preface { matched } => {
                    let start = *matched;
                    let taken = (PREFACE.len() - start).min(input.len() - index);
                    if input[index..index + taken] != PREFACE[start..start + taken] {
                        self.close(Http2Error::NotPreface, outputs);
                        return;
                    }
                    *matched += taken;
                    if *matched == PREFACE.len() {
                        self.reading = Reading::Header {
                            bytes: [0; FRAME_HEADER_BYTES],
                            filled: 0,
                        };
                    }
                    self.forward_input(input, index..index + taken, outputs);
                    index += taken;
                }
                Reading::Header { bytes, filled } => {
                    let taken = (FRAME_HEADER_BYTES - *filled).min(input.len() - index);
                    bytes[*filled..*filled + taken].copy_from_slice(&input[index..index + taken]);
                    *filled += taken;
                    index += taken;
                    if *filled == FRAME_HEADER_BYTES {
                        let header = FrameHeader::parse(*bytes);
                        self.begin_frame(header, outputs);
                    }
                }
                Reading::Payload {
                    remaining, handling, ..
                } => {
                    let taken = (*remaining).min(input.len() - index);
                    *remaining -= taken;
                    let done = *remaining == 0;
                    match handling {
                        Handling::Pass => {
                            self.forward_input(input, index..index + taken, outputs);
                        }
                        Handling::Drop => {}
                        Handling::Collect(payload) => payload.extend_from_slice(&input[index..index + taken]),
                    }
                    index += taken;
                    if done {
                        self.end_frame(outputs);
                    }
                }
            }
        }
    }

    /// Takes bytes the destination sent and appends what to write to the client, in order.
    pub fn from_destination(&mut self, input: &[u8], outputs: &mut Vec<ToClient>) {
        let mut start = 0;
        let mut index = 0;
        while index < input.len() {
            if self.destination.between_frames() && !self.queued.is_empty() {
                if start < index {
                    outputs.push(ToClient::Pass(start..index));
                }
                outputs.push(ToClient::Inject(std::mem::take(&mut self.queued)));
                start = index;
            }
            let frames = &mut self.destination;
            if frames.remaining > 0 {
                let taken = frames.remaining.min(input.len() - index);
                frames.remaining -= taken;
                index += taken;
                if frames.remaining == 0 {
                    frames.frames += 1;
                }
                continue;
            }
            let taken = (FRAME_HEADER_BYTES - frames.filled).min(input.len() - index);
            frames.header[frames.filled..frames.filled + taken].copy_from_slice(&input[index..index + taken]);
            frames.filled += taken;
            index += taken;
            if frames.filled == FRAME_HEADER_BYTES {
                frames.filled = 0;
                frames.remaining = FrameHeader::parse(frames.header).length;
                if frames.remaining == 0 {
                    frames.frames += 1;
                }
            }
        }
        if start < input.len() {
            outputs.push(ToClient::Pass(start..input.len()));
        }
        if self.destination.between_frames() && !self.queued.is_empty() {
            outputs.push(ToClient::Inject(std::mem::take(&mut self.queued)));
        }
    }

    fn close(&mut self, error: Http2Error, outputs: &mut Vec<Http2Output>) {
        self.finished = true;
        outputs.push(Http2Output::Close(error));
    }

    /// Keeps `bytes` for the destination while no request was allowed yet; whether it did.
    fn hold(&mut self, bytes: &[u8], outputs: &mut Vec<Http2Output>) -> bool {
        let Some(held) = &mut self.held else {
            return false;
        };
        held.extend_from_slice(bytes);
        if held.len() > self.limits.maximum_held_bytes {
            let limit = self.limits.maximum_held_bytes;
            self.close(Http2Error::TooMuchBeforeRequest { limit }, outputs);
        }
        true
    }

    fn forward_input(&mut self, input: &[u8], range: Range<usize>, outputs: &mut Vec<Http2Output>) {
        if range.is_empty() || self.hold(&input[range.clone()], outputs) {
            return;
        }
        if let Some(Http2Output::ForwardInput(previous)) = outputs.last_mut()
            && previous.end == range.start
        {
            previous.end = range.end;
            return;
        }
        outputs.push(Http2Output::ForwardInput(range));
    }

    fn forward(&mut self, bytes: &[u8], outputs: &mut Vec<Http2Output>) {
        if !self.hold(bytes, outputs) {
            outputs.push(Http2Output::Forward(bytes.to_vec()));
        }
    }

    /// Whether frames of `stream` may still go to the destination: it was forwarded.
    fn forwarded(&self, stream: u32) -> bool {
        stream != 0 && stream <= self.highest_forwarded
    }

    fn begin_frame(&mut self, frame: FrameHeader, outputs: &mut Vec<Http2Output>) {
        let protocol = |detail| Http2Error::Protocol { detail };
        if frame.length > self.limits.maximum_frame_bytes {
            let limit = self.limits.maximum_frame_bytes;
            self.close(
                Http2Error::FrameTooLarge {
                    length: frame.length,
                    limit,
                },
                outputs,
            );
            return;
        }
        if let Some(block) = &self.block
            && (frame.kind != CONTINUATION || frame.stream != block.stream)
        {
            self.close(protocol("a header block was interrupted"), outputs);
            return;
        }
        let handling = match frame.kind {
            HEADERS | CONTINUATION => {
                if frame.stream == 0 || frame.stream % 2 == 0 {
                    self.close(
                        protocol("a header block on stream 0 or a server's stream"),
                        outputs,
                    );
                    return;
                }
                if frame.kind == CONTINUATION && self.block.is_none() {
                    self.close(protocol("CONTINUATION without a header block"), outputs);
                    return;
                }
                Handling::Collect(Vec::with_capacity(frame.length))
            }
            PUSH_PROMISE => {
                self.close(protocol("a client sent PUSH_PROMISE"), outputs);
                return;
            }
            DATA if frame.stream == 0 => {
                self.close(protocol("DATA on stream 0"), outputs);
                return;
            }
            // Frames of a stream the destination never saw (refused, or dropped after a
            // refusal) go nowhere.
            DATA | PRIORITY | RST_STREAM | WINDOW_UPDATE
                if frame.stream != 0 && !self.forwarded(frame.stream) =>
            {
                Handling::Drop
            }
            _ => {
                if frame.kind == SETTINGS && frame.flags & FLAG_ACK == 0 && self.held.is_some() {
                    self.client_settings += 1;
                }
                Handling::Pass
            }
        };
        if matches!(handling, Handling::Pass) {
            self.forward(&frame.bytes, outputs);
        }
        self.reading = Reading::Payload {
            frame,
            remaining: frame.length,
            handling,
        };
        if frame.length == 0 {
            self.end_frame(outputs);
        }
    }

    fn end_frame(&mut self, outputs: &mut Vec<Http2Output>) {
        let reading = std::mem::replace(
            &mut self.reading,
            Reading::Header {
                bytes: [0; FRAME_HEADER_BYTES],
                filled: 0,
            },
        );
        let Reading::Payload {
            frame,
            handling: Handling::Collect(payload),
            ..
        } = reading
        else {
            return;
        };
        let fragment = if frame.kind == HEADERS {
            match header_fragment(&frame, &payload) {
                Some(fragment) => fragment,
                None => {
                    self.close(
                        Http2Error::Protocol {
                            detail: "a HEADERS frame's padding or priority does not fit it",
                        },
                        outputs,
                    );
                    return;
                }
            }
        } else {
            &payload[..]
        };
        let block = self.block.get_or_insert_with(|| Block {
            stream: frame.stream,
            raw: Vec::new(),
            fragment: Vec::new(),
        });
        block.raw.extend_from_slice(&frame.bytes);
        block.raw.extend_from_slice(&payload);
        block.fragment.extend_from_slice(fragment);
        if block.raw.len() > self.limits.maximum_header_block_bytes {
            let limit = self.limits.maximum_header_block_bytes;
            self.close(Http2Error::HeaderBlockTooLarge { limit }, outputs);
            return;
        }
        if frame.flags & FLAG_END_HEADERS != 0 {
            let block = self.block.take().expect("inserted above");
            self.finish_block(block, outputs);
        }
    }

    fn finish_block(&mut self, block: Block, outputs: &mut Vec<Http2Output>) {
        // Every block is decompressed, forwarded or not, so the table stays the client's.
        let mut fields = Vec::new();
        let mut decoded_bytes = 0_usize;
        let decoded = self.decoder.decode_with_cb(&block.fragment, |name, value| {
            decoded_bytes += name.len() + value.len();
            if fields.len() <= self.limits.maximum_headers {
                fields.push((name.into_owned(), value.into_owned()));
            }
        });
        if decoded.is_err() {
            self.close(Http2Error::Compression, outputs);
            return;
        }
        if block.stream <= self.highest_stream {
            // Trailers, or a block of a stream already open.
            if !self.forwarded(block.stream) {
                return;
            }
            if self.refused {
                self.close(Http2Error::HeadersAfterRefusal, outputs);
                return;
            }
            self.forward(&block.raw, outputs);
            return;
        }
        self.highest_stream = block.stream;
        if self.refused {
            // A new stream after a refusal: the GOAWAY tells the client to retry it.
            return;
        }
        let request = if fields.len() > self.limits.maximum_headers {
            Err(RequestError::TooManyHeaders {
                limit: self.limits.maximum_headers,
            })
        } else {
            request_of(&fields)
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                self.refuse(block.stream, false, RefusalReason::Invalid(error), outputs);
                return;
            }
        };
        match self.judge.judge(&request) {
            Judgement::Allow(allowed_by) => {
                if let Some(held) = self.held.take() {
                    outputs.push(Http2Output::Forward(held));
                }
                self.highest_forwarded = block.stream;
                outputs.push(Http2Output::Decided(Box::new(Http2Decision::Allowed {
                    stream: block.stream,
                    request,
                    allowed_by,
                })));
                outputs.push(Http2Output::Forward(block.raw));
            }
            Judgement::Deny(alternatives) => {
                let head = request.method == "HEAD";
                let reason = RefusalReason::Denied {
                    request,
                    alternatives,
                };
                self.refuse(block.stream, head, reason, outputs);
            }
        }
    }

    fn refuse(&mut self, stream: u32, head: bool, reason: RefusalReason, outputs: &mut Vec<Http2Output>) {
        let (status, body) = status_and_body(&reason);
        let mut frames = Vec::new();
        let block = response_block(status, body.len());
        if head {
            push_frame(
                &mut frames,
                HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                stream,
                &block,
            );
        } else {
            push_frame(&mut frames, HEADERS, FLAG_END_HEADERS, stream, &block);
            push_frame(&mut frames, DATA, FLAG_END_STREAM, stream, body.as_bytes());
        }
        // The request's body is not wanted (RFC 9113 §8.1: after a complete answer).
        push_frame(&mut frames, RST_STREAM, 0, stream, &NO_ERROR.to_be_bytes());
        let mut goaway = self.highest_forwarded.max(stream).to_be_bytes().to_vec();
        goaway.extend_from_slice(&NO_ERROR.to_be_bytes());
        goaway.extend_from_slice(b"refused by Sluice");
        push_frame(&mut frames, GOAWAY, 0, 0, &goaway);
        self.refused = true;
        outputs.push(Http2Output::Decided(Box::new(Http2Decision::Refused {
            stream,
            reason,
        })));
        if self.held.take().is_some() {
            // No destination: the proxy is the server this connection talked to.
            let mut answer = Vec::new();
            push_frame(&mut answer, SETTINGS, 0, 0, &[]);
            for _ in 0..self.client_settings {
                push_frame(&mut answer, SETTINGS, FLAG_ACK, 0, &[]);
            }
            answer.extend_from_slice(&frames);
            self.finished = true;
            outputs.push(Http2Output::Finish(answer));
            return;
        }
        if self.destination.between_frames() && self.queued.is_empty() {
            outputs.push(Http2Output::ToClient(frames));
        } else {
            self.queued.extend_from_slice(&frames);
        }
    }
}

/// The HPACK bytes of a HEADERS frame: without its padding and priority fields.
fn header_fragment<'a>(frame: &FrameHeader, payload: &'a [u8]) -> Option<&'a [u8]> {
    let mut fragment = payload;
    let mut padding = 0;
    if frame.flags & FLAG_PADDED != 0 {
        padding = usize::from(*fragment.first()?);
        fragment = &fragment[1..];
    }
    if frame.flags & FLAG_PRIORITY != 0 {
        fragment = fragment.get(5..)?;
    }
    fragment.get(..fragment.len().checked_sub(padding)?)
}

fn push_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let length = payload.len();
    out.extend_from_slice(&[
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The proxy's answer head: literal fields without indexing (RFC 7541 §6.2.2) naming static
/// table entries, so the client's dynamic table is left as the destination's encoder knows it.
fn response_block(status: u16, length: usize) -> Vec<u8> {
    let mut block = Vec::new();
    let mut field = |name_index: usize, value: &[u8]| {
        block.extend(loona_hpack::encoder::encode_integer(name_index, 4));
        block.extend(loona_hpack::encoder::encode_integer(value.len(), 7));
        block.extend_from_slice(value);
    };
    field(STATIC_STATUS, status.to_string().as_bytes());
    field(STATIC_CONTENT_TYPE, b"text/plain; charset=utf-8");
    field(STATIC_CONTENT_LENGTH, length.to_string().as_bytes());
    block
}

fn malformed(detail: &str) -> RequestError {
    RequestError::Malformed {
        detail: detail.to_string(),
    }
}

/// A request from a decompressed header block (RFC 9113 §8.3), with the checks the HTTP/1.1
/// reader makes: one of each pseudo-header, before the other fields; no connection-specific
/// fields; a path canonicalised the same way; the host from `:authority`, agreeing with `host`.
pub fn request_of(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Request, RequestError> {
    let mut method = None;
    let mut scheme = None;
    let mut authority = None;
    let mut path = None;
    let mut hosts = Vec::new();
    let mut regular_seen = false;
    for (name, value) in fields {
        if value.iter().any(|byte| matches!(byte, 0 | b'\r' | b'\n')) {
            return Err(malformed("a field value holds NUL, CR or LF"));
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular_seen {
                return Err(malformed("a pseudo-header after a regular field"));
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"authority" => &mut authority,
                b"path" => &mut path,
                // Extended CONNECT (RFC 8441): a tunnel whose bytes are no longer requests.
                b"protocol" => return Err(RequestError::UpgradeNotSupported),
                _ => return Err(malformed("an unknown pseudo-header")),
            };
            if slot.replace(value.as_slice()).is_some() {
                return Err(malformed("a pseudo-header given twice"));
            }
            continue;
        }
        regular_seen = true;
        if name.is_empty()
            || name
                .iter()
                .any(|byte| byte.is_ascii_uppercase() || !byte.is_ascii_graphic())
        {
            return Err(malformed("a field name that is not lowercase token characters"));
        }
        match name.as_slice() {
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade" => {
                return Err(malformed("a connection-specific field"));
            }
            b"te" if value.as_slice() != b"trailers" => {
                return Err(malformed("TE other than \"trailers\""));
            }
            b"host" => hosts.push(value.as_slice()),
            _ => {}
        }
    }
    let method = method.ok_or_else(|| malformed("no :method"))?;
    let method = std::str::from_utf8(method)
        .ok()
        .filter(|method| !method.is_empty() && method.bytes().all(|byte| byte.is_ascii_graphic()))
        .ok_or_else(|| malformed("a :method that is not a token"))?;
    if method == "CONNECT" {
        return Err(RequestError::MethodNotSupported {
            method: method.to_string(),
        });
    }
    if scheme.is_none() {
        return Err(malformed("no :scheme"));
    }
    let target = path.ok_or_else(|| malformed("no :path"))?;
    let target = std::str::from_utf8(target)
        .ok()
        .filter(|target| target.is_ascii())
        .ok_or(RequestError::InvalidTarget {
            detail: "the target holds bytes that are not ASCII",
        })?;
    if !(target.starts_with('/') || target == "*") {
        return Err(RequestError::InvalidTarget {
            detail: "an HTTP/2 :path is a path or `*`",
        });
    }
    let authority_host = authority.map(normalise_host).transpose()?;
    let header_host = match hosts.as_slice() {
        [] => None,
        [value] => Some(normalise_host(value)?),
        _ => return Err(RequestError::MultipleHosts),
    };
    if let (Some(authority), Some(header)) = (&authority_host, &header_host)
        && authority != header
    {
        return Err(RequestError::HostMismatch);
    }
    let host = authority_host
        .or(header_host)
        .filter(|host| !host.is_empty())
        .ok_or(RequestError::MissingHost)?;
    let (path, host) = read_target(method, target, Some(host))?;
    Ok(Request {
        version: Version::Http2,
        method: method.to_string(),
        target: target.to_string(),
        path,
        host,
        body: BodyFraming::Empty,
        expects_continue: false,
    })
}
