//! The flow-log core (issue 11): what the kernel reports about connections in, flow records out.
//!
//! The dataplane writes a log statement with a [`sluice_policy::HitId`] as its prefix into every
//! rule that makes a final decision for an endpoint; the agent's shell reads those log packets
//! and the kernel's connection-tracking events (with accounting) and hands them here as
//! [`events::LoggedPacket`] and [`events::ConntrackEvent`]. This crate attributes each
//! connection to the hit the kernel logged (looked up in [`sluice_policy::Dataplane::hits`]),
//! aggregates per interval by Calico's flow-log key and produces one record per key.
//!
//! # The shell's contract
//!
//! 1. [`Aggregator::new`] with the [`Config`] and the time; after every compile,
//!    [`Aggregator::update_policy`] with the IR the dataplane was rendered from and the network
//!    sets ([`network_sets_from_entities`]). Optionally [`Aggregator::set_domain_names`] (the DNS
//!    learner's names) and [`Aggregator::set_pending_policies`] (the staged IR's verdicts).
//! 2. Every logged packet to [`Aggregator::logged_packet`], every conntrack event (and the
//!    entries of a periodic dump, more often than `idleTimeoutMilliseconds`) to
//!    [`Aggregator::conntrack`], in the order read.
//! 3. At [`Aggregator::next_drain`], [`Aggregator::drain`]: write each record's
//!    [`FlowRecord::to_json_line`]. Render [`Aggregator::hit_counters`],
//!    [`Aggregator::action_counters`], [`Aggregator::statistics`] and [`Aggregator::gauges`] as
//!    metrics.
//!
//! Architecture invariant: pure and deterministic, after `sluice-dns`: no sockets, no clock (time
//! comes in as [`events::Timestamp`]), no threads, no files. Memory is bounded: tracked
//! connections, keys per interval (allowed and denied apart) and remembered denied tuples each
//! have a cap, and per-hit counters exist only for hits of the current and previous compile.
#![forbid(unsafe_code)]

mod aggregator;
mod attribution;
mod config;
mod counters;
pub mod events;

/// Hash maps keyed by what the kernel reports (tuples an outside peer chooses): foldhash, seeded
/// per process, a fraction of SipHash's cost (which was 40% of the core's time per connection,
/// docs/benchmarks.md) and still not predictable from outside.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
mod naming;
mod recommend;
mod record;

pub use aggregator::{Aggregator, PendingPolicies, PendingQuery, decided_tuple, flow_of};
pub use attribution::Attribution;
pub use config::{Config, ConfigError};
pub use counters::{ActionCounters, Gauges, Statistics, Usage};
pub use naming::{
    DomainNames, EndpointType, NOT_INCLUDED, Naming, NetworkSetName, PeerName, is_private,
    network_sets_from_entities,
};
pub use recommend::{ALLOW_NAME, DENY_NAME, recommend};
pub use record::{FlowAction, FlowRecord, Reporter, protocol_name};
