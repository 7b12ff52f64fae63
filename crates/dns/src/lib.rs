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
//! Learning is per endpoint rather than per node (Calico keeps one cache per node; Cilium one
//! per endpoint): a pod may reach the addresses that *it* resolved for an allowed name, so one
//! pod's lookups never open the door for another pod on the node.
//!
//! # The shell's contract
//!
//! 1. At start: [`Learner::set_endpoints`] with the node's endpoints, then read the cache file
//!    ([`cache_file::read`], [`cache::from_bytes`] with `dnsCacheEpoch`) and
//!    [`Learner::restore`]; program the batch it returns before releasing anything. Call
//!    `set_endpoints` again whenever endpoints or their interests change, and program its batch.
//! 2. For every queued packet, [`Learner::decide`] with the wall-clock time:
//!    - [`Decision::Pass`]: release it.
//!    - [`Decision::Hold`]: program the batch (additions with their `timeout_milliseconds` as
//!      the element timeout, and removals), then release the packet and call
//!      [`Learner::programmed`]; if programming fails or takes longer than [`HOLD_LIMIT`]
//!      (2 s), drop the packet and call [`Learner::failed`] (even if the batch lands later:
//!      believing less than the kernel holds only costs a repeated update). Never release
//!      the packet before the batch is in the kernel.
//!    - [`Decision::PassAndProgram`]: release it, program the batch (removals only), answer.
//!
//!    Every batch gets exactly one answer, and batches are programmed in the order given (a
//!    later batch may remove what an earlier one added). Removals may name elements the
//!    kernel already timed out: program them so that a missing element is not an error
//!    (`destroy element`, or a transaction apart from the additions).
//! 3. Every second or so, [`Learner::expire`]; every `dnsCacheSaveInterval` and at shutdown,
//!    [`cache::to_bytes`] of [`Learner::cache_entries`] written with [`cache_file::write`].
//! 4. After the domain sets were rebuilt (a full resync of the table flushes them),
//!    [`Learner::resync`] and program its batch.
//!
//! Why failure is reported rather than assumed: the learner believes an element is in the
//! kernel only once the shell says so. A failed batch leaves nothing believed, so the client's
//! retry (a new UDP answer) or the server's retransmission (a TCP segment whose message the
//! learner remembers) is held again with the same elements, and no answer is ever passed on
//! the strength of a batch that did not land. Two known gaps, both failing closed or
//! self-healing: an element evicted while the batch adding it is still in flight stays in the
//! kernel until its timeout (the learner issues no removal for what it never saw confirmed);
//! and a TCP stream whose bytes beyond a gap overflow [`tcp::Limits::ahead_bytes`] teaches
//! nothing more, so its later answers pass unlearned (connections to them are denied).
//!
//! The packets are what the queue sees: the source must be the trusted server as it appears
//! there (after conntrack undid any service NAT), and fragments are passed untaught (the
//! queue belongs after conntrack's defragmentation). Checksums are not verified: locally
//! generated packets carry partial ones, and only a trusted source is learned from.
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
pub use learner::{
    Counters, Decision, EndpointSnapshot, HOLD_LIMIT, LearnedAddress, Learner, MINIMUM_LIFETIME_SECONDS,
};
pub use time::Timestamp;
