//! Naming each side of a flow as Calico's flow logs do (felix `collector/types/endpoint`):
//! `wep` (a workload endpoint: its namespace and pod name), `ns` (a network set holding the
//! address: its namespace, `-` for a global one, and name), `net` (anything else: `pub`, or
//! `pvt` inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16; Calico counts every IPv6 address as
//! `pub`, and so does Sluice).
//!
//! The IR keeps endpoints with their names and addresses but network sets only as members of
//! selector IP sets, so network sets come in beside it as [`NetworkSetName`]s
//! ([`network_sets_from_entities`] builds them from `sluice_policy::build_entities`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sluice_policy::{Dataplane, Entity, EntityKind};

use crate::FastMap;

/// What Calico writes for a field that does not apply (a global object's namespace).
pub const NOT_INCLUDED: &str = "-";

/// The kind of thing on one side of a flow, with Calico's short names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EndpointType {
    #[serde(rename = "wep")]
    Workload,
    #[serde(rename = "ns")]
    NetworkSet,
    #[serde(rename = "net")]
    Network,
}

/// One side of a flow, named. Names are shared (`Arc`) since every tracked connection holds two.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName {
    pub kind: EndpointType,
    /// `-` when not namespaced.
    pub namespace: Arc<str>,
    /// The pod or network set name; `-` for a network.
    pub name: Arc<str>,
    /// Calico's `*_name_aggr`: the pod or network set name, or `pub` / `pvt`.
    pub aggregated_name: Arc<str>,
}

/// A network set by name, with its networks: the naming input the IR does not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSetName {
    /// `None` for a GlobalNetworkSet.
    pub namespace: Option<String>,
    pub name: String,
    pub networks: Vec<IpNet>,
}

/// The network sets among the entities `sluice_policy::build_entities` returns.
pub fn network_sets_from_entities(entities: &[Entity]) -> Vec<NetworkSetName> {
    entities
        .iter()
        .filter(|entity| entity.kind != EntityKind::Endpoint)
        .map(|entity| NetworkSetName {
            namespace: entity.namespace.clone(),
            name: entity.name.clone(),
            networks: entity.networks.clone(),
        })
        .collect()
}

/// Where a destination's name comes from: the DNS learner knows which name each local endpoint
/// resolved to each address. Asked once per new connection or denied flow, for destinations
/// that are not workload endpoints.
pub trait DomainNames {
    /// The name `endpoint` looked up that gave it `destination`, if any.
    fn domain_of(&self, endpoint: IpAddr, destination: IpAddr) -> Option<String>;
}

impl DomainNames for HashMap<(IpAddr, IpAddr), String> {
    fn domain_of(&self, endpoint: IpAddr, destination: IpAddr) -> Option<String> {
        self.get(&(endpoint, destination)).cloned()
    }
}

impl<F: Fn(IpAddr, IpAddr) -> Option<String>> DomainNames for F {
    fn domain_of(&self, endpoint: IpAddr, destination: IpAddr) -> Option<String> {
        self(endpoint, destination)
    }
}

#[derive(Debug, Clone)]
struct NamedEndpoint {
    name: PeerName,
    local: bool,
}

/// Address → name for one compile: endpoints by exact address, network sets by longest prefix.
#[derive(Debug, Clone)]
pub struct Naming {
    endpoints: FastMap<IpAddr, NamedEndpoint>,
    network_sets: PrefixTable,
    public: PeerName,
    private: PeerName,
}

impl Default for Naming {
    /// Before the first compile: every address is a network.
    fn default() -> Naming {
        Naming::new(&Dataplane::default(), &[], "")
    }
}

impl Naming {
    /// Names from a compiled IR and the network sets beside it; `host` is this node's name, whose
    /// endpoints are local.
    pub fn new(dataplane: &Dataplane, network_sets: &[NetworkSetName], host: &str) -> Naming {
        let not_included: Arc<str> = Arc::from(NOT_INCLUDED);
        let mut endpoints = FastMap::default();
        for endpoint in &dataplane.endpoints {
            let name: Arc<str> = Arc::from(endpoint.name.as_str());
            let named = NamedEndpoint {
                name: PeerName {
                    kind: EndpointType::Workload,
                    namespace: Arc::from(endpoint.namespace.as_str()),
                    name: name.clone(),
                    aggregated_name: name,
                },
                local: endpoint.node.as_deref() == Some(host),
            };
            for address in &endpoint.addresses {
                endpoints.insert(*address, named.clone());
            }
        }
        // Where two sets hold the same network, the namespaced one before the global one, then
        // by namespace and name, so the choice does not depend on input order.
        let mut sorted: Vec<&NetworkSetName> = network_sets.iter().collect();
        sorted.sort_by(|left, right| {
            (left.namespace.is_none(), &left.namespace, &left.name).cmp(&(
                right.namespace.is_none(),
                &right.namespace,
                &right.name,
            ))
        });
        let mut table = PrefixTable::default();
        for set in sorted {
            let name: Arc<str> = Arc::from(set.name.as_str());
            let peer = PeerName {
                kind: EndpointType::NetworkSet,
                namespace: set
                    .namespace
                    .as_deref()
                    .map_or_else(|| not_included.clone(), Arc::from),
                name: name.clone(),
                aggregated_name: name,
            };
            for network in &set.networks {
                table.insert(*network, &peer);
            }
        }
        let network = |aggregated: &str| PeerName {
            kind: EndpointType::Network,
            namespace: not_included.clone(),
            name: not_included.clone(),
            aggregated_name: Arc::from(aggregated),
        };
        Naming {
            endpoints,
            network_sets: table,
            public: network("pub"),
            private: network("pvt"),
        }
    }

    /// The name of whatever holds `address`.
    pub fn name(&self, address: IpAddr) -> PeerName {
        if let Some(endpoint) = self.endpoints.get(&address) {
            return endpoint.name.clone();
        }
        if let Some(set) = self.network_sets.longest_match(address) {
            return set.clone();
        }
        if is_private(address) {
            self.private.clone()
        } else {
            self.public.clone()
        }
    }

    /// Whether `address` is a workload endpoint on this node.
    pub fn is_local(&self, address: IpAddr) -> bool {
        self.endpoints
            .get(&address)
            .is_some_and(|endpoint| endpoint.local)
    }
}

/// Calico's private networks (felix `getSubnetType`): the IPv4 ranges of RFC 1918.
pub fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(address) => address.is_private(),
        IpAddr::V6(_) => false,
    }
}

/// Networks by (family, prefix length), longest first: a lookup costs one hash per distinct
/// prefix length, not one comparison per network.
#[derive(Debug, Clone, Default)]
struct PrefixTable {
    by_length: Vec<(bool, u8, FastMap<u128, PeerName>)>,
}

impl PrefixTable {
    fn insert(&mut self, network: IpNet, peer: &PeerName) {
        let network = network.trunc();
        let (is_v6, length) = (network.addr().is_ipv6(), network.prefix_len());
        let key = masked(network.addr(), length);
        let position = self
            .by_length
            .iter()
            .position(|(family, prefix, _)| *family == is_v6 && *prefix == length);
        let entries = match position {
            Some(position) => &mut self.by_length[position].2,
            None => {
                self.by_length.push((is_v6, length, FastMap::default()));
                self.by_length
                    .sort_by_key(|(family, prefix, _)| (*family, std::cmp::Reverse(*prefix)));
                let position = self
                    .by_length
                    .iter()
                    .position(|(family, prefix, _)| *family == is_v6 && *prefix == length)
                    .expect("just inserted");
                &mut self.by_length[position].2
            }
        };
        entries.entry(key).or_insert_with(|| peer.clone());
    }

    fn longest_match(&self, address: IpAddr) -> Option<&PeerName> {
        let is_v6 = address.is_ipv6();
        self.by_length
            .iter()
            .filter(|(family, _, _)| *family == is_v6)
            .find_map(|(_, length, entries)| entries.get(&masked(address, *length)))
    }
}

fn masked(address: IpAddr, length: u8) -> u128 {
    match address {
        // A shift by the full width (prefix length 0) is no mask at all.
        IpAddr::V4(address) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
            u128::from(u32::from(address) & mask)
        }
        IpAddr::V6(address) => {
            let bits = u128::from(address);
            bits & u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(namespace: Option<&str>, name: &str, networks: &[&str]) -> NetworkSetName {
        NetworkSetName {
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            networks: networks.iter().map(|text| text.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn network_sets_by_longest_prefix_then_pub_and_pvt() {
        let naming = Naming::new(
            &Dataplane::default(),
            &[
                set(None, "internet", &["0.0.0.0/0"]),
                set(Some("billing"), "partners", &["203.0.113.0/24", "2001:db8::/32"]),
                set(None, "partner-gateway", &["203.0.113.7/32"]),
            ],
            "node-1",
        );
        let name = |text: &str| naming.name(text.parse().unwrap());
        let partners = name("203.0.113.9");
        assert_eq!(
            (partners.kind, &*partners.namespace, &*partners.name),
            (EndpointType::NetworkSet, "billing", "partners")
        );
        let gateway = name("203.0.113.7");
        assert_eq!((&*gateway.namespace, &*gateway.name), ("-", "partner-gateway"));
        assert_eq!(&*name("8.8.8.8").name, "internet");
        assert_eq!(&*name("2001:db8::1").name, "partners");
        let outside = name("2001:db9::1");
        assert_eq!(
            (outside.kind, &*outside.name, &*outside.aggregated_name),
            (EndpointType::Network, "-", "pub")
        );
        let empty = Naming::new(&Dataplane::default(), &[], "node-1");
        assert_eq!(&*empty.name("10.1.2.3".parse().unwrap()).aggregated_name, "pvt");
        assert_eq!(&*empty.name("172.32.0.1".parse().unwrap()).aggregated_name, "pub");
        assert_eq!(
            &*empty.name("192.168.9.9".parse().unwrap()).aggregated_name,
            "pvt"
        );
        assert_eq!(
            &*Naming::default().name("1.1.1.1".parse().unwrap()).aggregated_name,
            "pub"
        );
    }

    #[test]
    fn masks_keep_the_prefix_only() {
        let address: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(masked(address, 0), 0);
        assert_eq!(
            masked(address, 32),
            u128::from(u32::from_be_bytes([203, 0, 113, 77]))
        );
        assert_eq!(
            masked(address, 24),
            u128::from(u32::from_be_bytes([203, 0, 113, 0]))
        );
        let address: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(masked(address, 0), 0);
        assert_eq!(
            masked(address, 128),
            u128::from_be_bytes([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
    }
}
