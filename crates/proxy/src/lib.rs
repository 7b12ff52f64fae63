//! The L7 proxy core: a deterministic state machine with no I/O, after quinn-proto.
//!
//! Egress rules with an `http` match (methods, paths, and Sluice's `hosts`) or a `tls` match
//! (server names) are enforced by a transparent proxy on the node. This crate is its core: the
//! shell (the listener sockets) hands it the bytes a pod sends and carries out its decisions.
//!
//! - [`http::HttpConnection`]: an HTTP/1.1 connection's request heads read as they arrive,
//!   each request matched and then forwarded (its body passed through by count, never held),
//!   or answered with a 403 naming the rules that were tried, or refused when it cannot be read
//!   safely (request smuggling, ambiguous paths, upgrades, HTTP/2 prior knowledge).
//! - [`http2::Http2Connection`]: an HTTP/2 connection with prior knowledge, frames read both
//!   ways, each request stream's header block decompressed and judged, refusals answered on
//!   their stream between the destination's frames.
//! - [`tls::TlsConnection`]: a TLS connection's ClientHello reassembled across reads and
//!   records, its server name matched; forwarded (the shell then splices) or reset.
//! - [`matcher`]: the rule alternatives as plain data, each with the [`matcher::RuleIdentity`]
//!   a decision names, and the first-match decision.
//!
//! # The shell's contract
//!
//! 1. Per accepted connection, pick the alternatives of the rule(s) the connection reached (by
//!    endpoint, original destination and port) and make an [`http::HttpConnection`] or a
//!    [`tls::TlsConnection`]. Nothing goes to the original destination before the core says so;
//!    the shell may connect to it when the first request is allowed.
//! 2. Give every read from the client to `receive` and carry out the answers in order (see
//!    [`http`] and [`tls`] for each answer). Copy the destination's bytes back to the client
//!    untouched; the core never reads responses.
//! 3. Bound the time a head or a hello may take to arrive (the core reads no clock): a client
//!    that stalls is closed, with nothing forwarded of the request in progress.
//! 4. Log each decision with the [`matcher::RuleIdentity`] it carries.
//!
//! Fail closed: anything the core cannot read the way every server would is refused, never
//! passed on unchecked; limits bound what a connection can make the core hold.
//!
//! Owns: HTTP/1.1 request framing, HTTP/2 frames and header blocks, path canonicalisation, ClientHello parsing and L7 matching.
//! Never: opens sockets, reads the clock, spawns, or touches files.

#![forbid(unsafe_code)]

pub mod http;
pub mod http2;
pub mod matcher;
pub mod tls;

pub use matcher::{HttpAlternative, PathMatch, RuleIdentity, TlsAlternative};
