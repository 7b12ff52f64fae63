//! The record of what a node's agent learned from DNS, which it publishes under the status
//! prefix (outside the watched `/sluice/`, like the node status) for `sluice get dnscache` and
//! `sluice explain --to NAME`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Where the records live, one per node.
pub const DNS_CACHE_PREFIX: &str = "/sluice-status/dnscache/";

pub fn dns_cache_key(node: &str) -> String {
    format!("{DNS_CACHE_PREFIX}{node}")
}

/// One node's learned mappings at `updated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCacheRecord {
    pub node: String,
    pub updated: SystemTime,
    pub endpoints: Vec<EndpointLearned>,
}

/// What one endpoint (`namespace/name`) resolved: name → addresses with expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointLearned {
    pub endpoint: String,
    pub names: BTreeMap<String, Vec<LearnedAddress>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedAddress {
    pub address: IpAddr,
    /// Unix seconds.
    pub expires: u64,
}

impl DnsCacheRecord {
    pub fn from_snapshot(node: &str, snapshot: Vec<sluice_dns::EndpointSnapshot>) -> DnsCacheRecord {
        DnsCacheRecord {
            node: node.to_string(),
            updated: SystemTime::now(),
            endpoints: snapshot
                .into_iter()
                .map(|endpoint| EndpointLearned {
                    endpoint: endpoint.endpoint,
                    names: endpoint
                        .names
                        .into_iter()
                        .map(|(name, addresses)| {
                            let addresses = addresses
                                .into_iter()
                                .map(|learned| LearnedAddress {
                                    address: learned.address,
                                    expires: learned.expires,
                                })
                                .collect();
                            (name, addresses)
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The addresses `endpoint` learned for `name` that are still valid at `now_seconds`.
    pub fn addresses(&self, endpoint: &str, name: &str, now_seconds: u64) -> Vec<IpAddr> {
        self.endpoints
            .iter()
            .filter(|learned| learned.endpoint == endpoint)
            .flat_map(|learned| learned.names.get(name).into_iter().flatten())
            .filter(|address| address.expires > now_seconds)
            .map(|address| address.address)
            .collect()
    }
}
