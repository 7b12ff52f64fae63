//! Where IPAM keeps its records in the datastore, and the records that are not blocks.
//!
//! ```text
//! /sluice/ipam/blocks/<network>-<prefix>              a Block (JSON)
//! /sluice/ipam/affinities/<node>/<network>-<prefix>   an Affinity: the node claims the block
//! /sluice/ipam/handles/<handle>                       a HandleRecord: which blocks hold its addresses
//! ```
//!
//! The block and its affinity are written in one transaction, so unlike Calico (whose
//! Kubernetes backend cannot write two objects atomically and so claims in two phases, pending
//! then confirmed) an affinity never exists without its block.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const IPAM_PREFIX: &str = "/sluice/ipam/";
pub const BLOCK_PREFIX: &str = "/sluice/ipam/blocks/";
pub const AFFINITY_PREFIX: &str = "/sluice/ipam/affinities/";
pub const HANDLE_PREFIX: &str = "/sluice/ipam/handles/";

/// `10.0.0.0/26` → `10.0.0.0-26`: a CIDR without the `/` that would read as a key level.
fn cidr_component(cidr: IpNet) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix_len())
}

/// Reads a CIDR back from the last component of a key.
pub fn cidr_from_key(key: &str) -> Option<IpNet> {
    let component = key.rsplit('/').next()?;
    let (network, prefix) = component.rsplit_once('-')?;
    format!("{network}/{prefix}").parse().ok()
}

pub fn block_key(cidr: IpNet) -> String {
    format!("{BLOCK_PREFIX}{}", cidr_component(cidr))
}

pub fn affinity_prefix(node: &str) -> String {
    format!("{AFFINITY_PREFIX}{node}/")
}

pub fn affinity_key(node: &str, cidr: IpNet) -> String {
    format!("{}{}", affinity_prefix(node), cidr_component(cidr))
}

pub fn handle_key(handle: &str) -> String {
    format!("{HANDLE_PREFIX}{handle}")
}

/// A node's claim on a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affinity {
    pub node: String,
    pub block: IpNet,
}

/// The blocks that hold a handle's addresses, and how many in each (Calico's `IPAMHandle`), so
/// that releasing a handle touches only those blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleRecord {
    pub blocks: BTreeMap<IpNet, u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_cidrs() {
        for text in ["10.0.0.0/26", "fd00::40/122"] {
            let cidr: IpNet = text.parse().unwrap();
            assert_eq!(cidr_from_key(&block_key(cidr)), Some(cidr));
            assert_eq!(cidr_from_key(&affinity_key("node-a", cidr)), Some(cidr));
        }
        assert_eq!(
            block_key("10.0.0.0/26".parse().unwrap()),
            "/sluice/ipam/blocks/10.0.0.0-26"
        );
        assert_eq!(
            affinity_key("node-a", "10.0.0.0/26".parse().unwrap()),
            "/sluice/ipam/affinities/node-a/10.0.0.0-26"
        );
        // One node's prefix is not a prefix of another's.
        assert!(
            !affinity_key("node-ab", "10.0.0.0/26".parse().unwrap()).starts_with(&affinity_prefix("node-a"))
        );
    }

    #[test]
    fn handle_record_is_json_with_cidr_keys() {
        let mut record = HandleRecord::default();
        record.blocks.insert("10.0.0.0/26".parse().unwrap(), 1);
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(text, r#"{"blocks":{"10.0.0.0/26":1}}"#);
        assert_eq!(serde_json::from_str::<HandleRecord>(&text).unwrap(), record);
    }
}
