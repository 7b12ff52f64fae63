//! The egress gateway shell: the node's health prober, the policy-routing syncer it drives
//! and the record `sluice get egress` reads.

pub mod prober;
pub mod record;
