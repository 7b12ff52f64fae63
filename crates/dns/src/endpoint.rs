//! What the shell tells the learner about the node's local endpoints, and the kernel set
//! elements the learner asks it to program.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sluice_api::domain::DomainPattern;

use crate::time::Timestamp;

/// A local endpoint (a pod's interface) and the domain sets its policy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable identity across restarts (the cache file is keyed by it), e.g. the
    /// WorkloadEndpoint's `namespace/name`.
    pub key: String,
    pub addresses: Vec<IpAddr>,
    pub interests: Vec<Interest>,
}

/// One domain set an endpoint's policy reaches, and the patterns that fill it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    /// The kernel set's name, as the renderer names it.
    pub set: String,
    pub patterns: Vec<DomainPattern>,
}

impl Interest {
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(name))
    }
}

/// One element of a domain set: the endpoint at `endpoint_address` may reach `address`.
/// Both addresses are of one family: an endpoint reaches an IPv6 answer from its IPv6 address,
/// whichever family carried the DNS response.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Element {
    pub set: String,
    pub endpoint_address: IpAddr,
    pub address: IpAddr,
}

/// An element to add (or whose timeout to raise) in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Addition {
    pub element: Element,
    /// When the element must leave the set.
    pub expires: Timestamp,
    /// `expires` as a timeout from the decision's `now`, for the kernel's element timeout.
    pub timeout_milliseconds: u64,
}

/// Work for the shell to program in one kernel transaction, in the order batches were given.
/// The shell answers each batch with [`crate::Learner::programmed`] or
/// [`crate::Learner::failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub token: BatchToken,
    pub additions: Vec<Addition>,
    /// Elements the learner no longer wants (the mapping was evicted or the endpoint or its
    /// interest went away). A removal the kernel refuses (the set is already gone) changes
    /// nothing the learner relies on.
    pub removals: Vec<Element>,
}

/// Names a batch in the shell's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchToken(pub u64);
