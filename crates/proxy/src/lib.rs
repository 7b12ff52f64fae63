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
//! - [`tls::TlsConnection`]: a TLS connection's ClientHello reassembled across reads and
//!   records, its server name matched; forwarded (the shell then splices) or reset.
//! - [`matcher`]: the rule alternatives as plain data, each with the [`matcher::RuleIdentity`]
//!   a decision names, and the first-match decision.
//!
//! Fail closed: anything the core cannot read the way every server would is refused, never
//! passed on unchecked; limits bound what a connection can make the core hold.
//!
//! Owns: HTTP/1.1 request framing, path canonicalisation, ClientHello parsing and L7 matching.
//! Never: opens sockets, reads the clock, spawns, or touches files.

#![forbid(unsafe_code)]

pub mod http;
pub mod matcher;
pub mod tls;

pub use matcher::{HttpAlternative, PathMatch, RuleIdentity, TlsAlternative};
