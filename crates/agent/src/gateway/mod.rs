//! The egress gateway shell: the node's health prober, the policy-routing syncer it drives
//! and the record `sluice get egress` reads.

pub mod prober;
pub mod record;
pub mod shell;

pub use shell::{DEFAULT_TUNNEL_MTU, GatewayShell, GatewayUpdate, NftPins, PinWriter};
