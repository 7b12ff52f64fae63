//! The DNS learning core: a deterministic state machine with no I/O, after quinn-proto.
//!
//! The shell (in the agent) queues DNS responses on their way to local pods and hands each
//! packet to [`Learner::decide`] with the time. The learner learns only from responses whose
//! source is a trusted server (address and port) and whose destination is a local endpoint:
//! A, AAAA and CNAME records of class IN from the answer and additional sections, CNAME chains
//! followed with a loop guard, over UDP and TCP (reassembled per connection). It answers
//! [`Decision::Pass`] when the response changes nothing in the kernel, or
//! [`Decision::Hold`] with a [`Batch`] of domain-set elements (domain set, endpoint address,
//! learned address, expiry) to program before the packet may go on. The shell answers every
//! batch with [`Learner::programmed`] or [`Learner::failed`]; only a confirmed batch counts
//! as in the kernel.
//!
//! Learning is per endpoint: a response teaches only the endpoint it is addressed to, and
//! fills only that endpoint's domain sets (elements carry the endpoint's own address).
//!
//! Owns: DNS and packet parsing, name → address mappings with expiry, their bounds and the
//! cache file's format. Never: opens sockets, reads the clock (time is passed in), or touches
//! the kernel; only [`cache_file`] touches the disk, when the shell calls it.

#![forbid(unsafe_code)]

pub mod cache;
pub mod cache_file;
pub mod config;
pub mod endpoint;
mod learner;
pub mod message;
pub mod packet;
pub mod tcp;
pub mod time;

pub use cache::{CacheEntry, CacheError};
pub use config::{Config, TrustedServer};
pub use endpoint::{Addition, Batch, BatchToken, Element, Endpoint, Interest};
pub use learner::{Counters, Decision, EndpointSnapshot, LearnedAddress, Learner, MINIMUM_LIFETIME_SECONDS};
pub use time::Timestamp;
