//! `sluice gateway`: the program an egress gateway pod runs, inside the pod's own network
//! namespace. It turns forwarding on there, source-NATs everything it forwards out of its
//! interface to the pod's own address (an nft table `inet sluice-gateway` of its own),
//! decapsulates what client nodes tunnel to it (a VXLAN device `egress.sluice`), probes
//! upstream targets, and serves `/readiness` and `/liveness` on the pod address. SIGTERM or
//! SIGINT removes the device and the table and ends it.
//!
//! Modules, one job each: `arguments` (the command line), `address` (the interface's
//! addresses), `forwarding` (the sysctls), `snat` (the nft table), `tunnel` (the VXLAN
//! device), `probe` (one ICMP or HTTP
//! probe), `readiness` (the ready rule, pure), `health` (the HTTP endpoint), `run` (putting it
//! together until a signal).
#![forbid(unsafe_code)]

pub mod address;
pub mod arguments;
pub mod forwarding;
pub mod health;
pub mod probe;
pub mod readiness;
pub mod run;
pub mod snat;
pub mod tunnel;

pub use arguments::GatewayArguments;
pub use run::run;
