//! Sluice's CNI plugin, called by the container runtime for each pod sandbox: ADD gives the pod
//! addresses from `sluice-ipam`, a veth pair with Calico's link-local gateway and the node's
//! route back, and records a WorkloadEndpoint in the store; DEL, CHECK, STATUS, GC and VERSION
//! follow the CNI 1.1 spec (also 1.0 and 0.4).
//!
//! Architecture invariant: it changes only the namespaces it is given — the pod's (`CNI_NETNS`)
//! and the one it runs in (the node's) — and in the node's only what it created: the host veth,
//! the route to the pod's addresses over it, and that veth's sysctls. It enters the pod's
//! namespace on a dedicated OS thread and never moves the calling thread.
//!
//! API boundary: [`plugin::run`] takes the environment and stdin and returns stdout and the exit
//! code; the binary is a thin wrapper around it.
#![forbid(unsafe_code)]

pub mod lock;
pub mod names;
pub mod netlink;
pub mod plugin;
pub mod protocol;

pub use plugin::{Outcome, run};
