//! IP address management after Calico's (`libcalico-go/lib/ipam`): pools are carved into
//! blocks, a node claims blocks (affinity) with compare-and-swap, and pods on the node get
//! addresses from its blocks; a new block is claimed when they are full, and when no block can
//! be claimed an address is borrowed from another node's block, as Calico does without strict
//! affinity. Every allocation belongs to a *handle*; releasing a handle frees its addresses.
//!
//! **Handles.** A pod interface's handle is `<containerID>.<interface>` (see
//! [`workload_handle`]), e.g. `3f2a…9c.eth0`: the CNI plugin assigns with it, and
//! `check` matches it against each WorkloadEndpoint's `containerID` and `endpoint`. (Calico
//! writes `<network>.<containerID>`; Sluice has one network and needs the interface instead.)
//!
//! **Records** live under `/sluice/ipam/` as JSON (see [`layout`]); every change is one
//! transaction whose conditions are the revisions it read, retried on conflict.
//!
//! Architecture invariant: [`block`], [`pools`], [`report`], [`routes`] and [`layout`] are pure (no I/O,
//! no clock); [`Ipam`] is the thin layer that reads and writes the store, and only through the
//! `sluice_store::Store` trait.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

pub mod block;
mod error;
mod ipam;
pub mod layout;
pub mod pools;
pub mod report;
pub mod routes;

pub use error::IpamError;
pub use ipam::{Ipam, ReleasedAddress};
pub use pools::{IP_ADDRESSES_ANNOTATION, IPV4_POOLS_ANNOTATION, IPV6_POOLS_ANNOTATION, check_pool_change};
pub use report::{CheckReport, DoubleOwnership, EndpointAddresses, EndpointProblem, Group, Grouping, Report};

/// What the CNI plugin asks for on ADD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignRequest {
    /// The allocation's owner: [`workload_handle`] of the container and interface.
    pub handle: String,
    pub node: String,
    pub namespace: String,
    pub pod: String,
    /// The pod's annotations: `cni.projectcalico.org/ipv4pools`, `ipv6pools` and `ipAddrs`
    /// are read from them.
    pub pod_annotations: BTreeMap<String, String>,
}

/// One address given to a handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub address: IpAddr,
    /// The pool's name; empty if the pool has been deleted since.
    pub pool: String,
    /// The block the address came from: the CNI plugin may route the whole block to the node.
    pub block: IpNet,
    /// Whether traffic from this address to outside every pool is masqueraded.
    pub nat_outgoing: bool,
}

/// The handle of a pod's interface: `<containerID>.<interface>`.
pub fn workload_handle(container_id: &str, interface: &str) -> String {
    format!("{container_id}.{interface}")
}
