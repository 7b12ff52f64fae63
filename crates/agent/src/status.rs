//! The agent's status record in the datastore.

use serde::{Deserialize, Serialize};

/// Outside `/sluice/`, which every agent watches: no agent is woken by another's status.
pub const STATUS_PREFIX: &str = "/sluice-status/nodes/";

pub fn status_key(node: &str) -> String {
    format!("{STATUS_PREFIX}{node}")
}

/// What the agent of one node last did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    /// The datastore revision whose resources are programmed.
    pub programmed_revision: i64,
    /// The newest revision the agent has seen.
    pub seen_revision: i64,
    /// Whether the newest revision's policy is programmed (routes are reported apart).
    pub in_sync: bool,
    /// Why the newest revision could not be programmed, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub local_endpoints: usize,
    pub rules: usize,
    pub set_elements: usize,
    /// Routes to other nodes' pod addresses (and blackholes for the node's own blocks).
    #[serde(default)]
    pub routes: usize,
    /// Why some routes could not be programmed, if they could not (they are retried; policy
    /// is unaffected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_error: Option<String>,
    /// The node's workload endpoints left out of its ruleset, each with why (a host
    /// interface, or one another endpoint has).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unprogrammed_endpoints: Vec<String>,
    /// Stored objects left out because they do not decode or validate (a value that bypassed
    /// `sluice apply`), each as `key: why`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out_objects: Vec<String>,
    /// Seconds since the Unix epoch.
    pub updated: u64,
}
