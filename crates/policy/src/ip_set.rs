//! Sets of addresses and networks, and the membership test the evaluator runs per packet.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

/// A set of networks with a lookup cost proportional to the number of distinct prefix lengths
/// (at most 33 for IPv4 and 129 for IPv6), not to the number of members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkLookup {
    /// One entry per distinct (family, prefix length): the masked network addresses.
    by_prefix: Vec<(bool, u8, HashSet<u128>)>,
}

impl NetworkLookup {
    pub fn new<'a>(networks: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut lookup = NetworkLookup::default();
        for network in networks {
            let (is_v6, prefix) = (network.addr().is_ipv6(), network.prefix_len());
            let key = masked(network.network(), prefix);
            match lookup
                .by_prefix
                .iter_mut()
                .find(|(family, length, _)| *family == is_v6 && *length == prefix)
            {
                Some((_, _, members)) => {
                    members.insert(key);
                }
                None => lookup.by_prefix.push((is_v6, prefix, HashSet::from([key]))),
            }
        }
        // Longest prefixes first: host entries are the common case for endpoint sets.
        lookup.by_prefix.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        lookup
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let is_v6 = address.is_ipv6();
        self.by_prefix
            .iter()
            .filter(|(family, _, _)| *family == is_v6)
            .any(|(_, prefix, members)| members.contains(&masked(address, *prefix)))
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

fn masked(address: IpAddr, prefix: u8) -> u128 {
    match address {
        IpAddr::V4(address) => {
            let bits = u32::from(address);
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            u128::from(bits & mask)
        }
        IpAddr::V6(address) => {
            let bits = u128::from(address);
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            bits & mask
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_and_shortest_prefixes_match() {
        let networks: Vec<IpNet> = ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32", "0.0.0.0/0"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        let lookup = NetworkLookup::new(&networks[..3]);
        assert!(lookup.contains("10.200.1.1".parse().unwrap()));
        assert!(lookup.contains("192.168.1.7".parse().unwrap()));
        assert!(!lookup.contains("192.168.1.8".parse().unwrap()));
        assert!(lookup.contains("2001:db8::5".parse().unwrap()));
        assert!(!lookup.contains("2001:db9::5".parse().unwrap()));
        let everything = NetworkLookup::new(&networks[3..]);
        assert!(everything.contains("8.8.8.8".parse().unwrap()));
        assert!(!everything.contains("::1".parse().unwrap()));
    }
}
