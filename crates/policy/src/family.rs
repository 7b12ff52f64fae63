//! The IP families of a connection between two peers. A packet is IPv4 or IPv6, never both, so
//! a question about two pods is one question per family they share: both families when both
//! pods are dual-stack, the one they share otherwise, and none (no connection can be made)
//! when one has only IPv4 and the other only IPv6.

use std::net::IpAddr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl IpFamily {
    pub const BOTH: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    pub fn of(address: &IpAddr) -> IpFamily {
        match address {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One family's source and destination address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FamilyPair {
    pub family: IpFamily,
    pub source: IpAddr,
    pub destination: IpAddr,
}

/// The address pairs a connection from `sources` to `destinations` can use: for each family
/// both sides have (IPv4 first), the first address of that family on each side. Empty when the
/// two share no family.
pub fn family_pairs(sources: &[IpAddr], destinations: &[IpAddr]) -> Vec<FamilyPair> {
    let first = |addresses: &[IpAddr], family: IpFamily| {
        addresses
            .iter()
            .copied()
            .find(|address| IpFamily::of(address) == family)
    };
    IpFamily::BOTH
        .into_iter()
        .filter_map(|family| {
            Some(FamilyPair {
                family,
                source: first(sources, family)?,
                destination: first(destinations, family)?,
            })
        })
        .collect()
}

/// `IPv4`, `IPv6`, `IPv4 and IPv6`, or `no address`: the families a peer has, for messages.
pub fn families_text(addresses: &[IpAddr]) -> &'static str {
    let has = |family: IpFamily| addresses.iter().any(|address| IpFamily::of(address) == family);
    match (has(IpFamily::V4), has(IpFamily::V6)) {
        (true, true) => "IPv4 and IPv6",
        (true, false) => "IPv4 only",
        (false, true) => "IPv6 only",
        (false, false) => "no address",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(texts: &[&str]) -> Vec<IpAddr> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn dual_stack_peers_share_both_families_ipv4_first() {
        let dual = addresses(&["fd00::1", "10.0.0.1", "10.0.0.9"]);
        let other = addresses(&["10.0.0.2", "fd00::2"]);
        let pairs = family_pairs(&dual, &other);
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].family, IpFamily::V4);
        assert_eq!(pairs[0].source, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(pairs[1].family, IpFamily::V6);
        assert_eq!(pairs[1].destination, "fd00::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn one_shared_family_is_the_only_one_in_either_direction() {
        let dual = addresses(&["10.0.0.1", "fd00::1"]);
        let six = addresses(&["fd00::2"]);
        for pairs in [family_pairs(&dual, &six), family_pairs(&six, &dual)] {
            assert_eq!(pairs.len(), 1);
            assert_eq!(pairs[0].family, IpFamily::V6);
        }
    }

    #[test]
    fn ipv4_only_and_ipv6_only_share_nothing_in_either_direction() {
        let four = addresses(&["10.0.0.1"]);
        let six = addresses(&["fd00::2"]);
        assert!(family_pairs(&four, &six).is_empty());
        assert!(family_pairs(&six, &four).is_empty());
        assert_eq!(families_text(&four), "IPv4 only");
        assert_eq!(families_text(&six), "IPv6 only");
    }
}
