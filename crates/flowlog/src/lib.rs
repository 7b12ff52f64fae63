//! The flow-log core (issue 11): what the kernel reports about connections in, flow records out.
//!
//! The dataplane writes a log statement with a [`sluice_policy::HitId`] as its prefix into every
//! rule that makes a final decision for an endpoint; the agent's shell reads those log packets
//! and the kernel's connection-tracking events (with accounting) and hands them here as
//! [`events::LoggedPacket`] and [`events::ConntrackEvent`]. This crate attributes each
//! connection to the hit the kernel logged (looked up in [`sluice_policy::Dataplane::hits`]),
//! aggregates per interval by Calico's flow-log key and produces one record per key.
//!
//! Architecture invariant: pure and deterministic, after `sluice-dns`: no sockets, no clock (time
//! comes in as [`events::Timestamp`]), no threads, no files. Memory is bounded.
#![forbid(unsafe_code)]

pub mod events;
