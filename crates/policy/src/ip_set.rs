//! Sets of addresses and networks, and the membership test the evaluator runs per packet.

use std::net::IpAddr;

use ipnet::IpNet;
use rustc_hash::FxHashSet;

/// A set of networks with a lookup cost proportional to the number of distinct prefix lengths
/// (at most 33 for IPv4 and 129 for IPv6), not to the number of members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkLookup {
    /// One entry per distinct (family, prefix length): the masked network addresses.
    by_prefix: Vec<(bool, u8, FxHashSet<u128>)>,
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
                None => lookup
                    .by_prefix
                    .push((is_v6, prefix, FxHashSet::from_iter([key]))),
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

pub(crate) fn masked(address: IpAddr, prefix: u8) -> u128 {
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

/// Every endpoint address gets a slot number, so that the evaluator tests a pod's membership in
/// a set with one bit (see [`Membership`]) instead of a hash lookup. Addresses outside the
/// cluster use [`NetworkLookup`].
#[derive(Debug, Clone, Default)]
pub struct AddressSlots {
    /// (is IPv6, address bits) → slot, sorted for range queries by CIDR.
    sorted: Vec<((bool, u128), u32)>,
}

impl AddressSlots {
    pub fn new(addresses: impl IntoIterator<Item = (IpAddr, u32)>) -> Self {
        let mut sorted: Vec<((bool, u128), u32)> = addresses
            .into_iter()
            .map(|(address, slot)| ((address.is_ipv6(), masked(address, full_length(address))), slot))
            .collect();
        sorted.sort_unstable();
        AddressSlots { sorted }
    }

    /// The slots whose address lies in any of `networks`, sorted and without repeats.
    pub fn slots_in(&self, networks: &[IpNet]) -> Vec<u32> {
        let mut slots = Vec::new();
        for network in networks {
            let is_v6 = network.addr().is_ipv6();
            let low = (is_v6, masked(network.network(), full_length(network.addr())));
            let high = (is_v6, masked(network.broadcast(), full_length(network.addr())));
            let start = self.sorted.partition_point(|(key, _)| *key < low);
            slots.extend(
                self.sorted[start..]
                    .iter()
                    .take_while(|(key, _)| *key <= high)
                    .map(|(_, slot)| *slot),
            );
        }
        slots.sort_unstable();
        slots.dedup();
        slots
    }
}

fn full_length(address: IpAddr) -> u8 {
    if address.is_ipv4() { 32 } else { 128 }
}

/// Which IP sets each endpoint address belongs to: one row of bits per address slot. A verdict
/// reads two rows (source and destination), which stay in cache however many rules it checks;
/// one bitset per IP set would touch a new cache line for every rule instead.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    words_per_slot: usize,
    bits: Vec<u64>,
}

impl Membership {
    pub fn new(slot_count: usize, set_count: usize) -> Self {
        let words_per_slot = set_count.div_ceil(64);
        Membership {
            words_per_slot,
            bits: vec![0; words_per_slot * slot_count],
        }
    }

    pub fn insert(&mut self, slot: u32, set: usize) {
        self.bits[slot as usize * self.words_per_slot + set / 64] |= 1 << (set % 64);
    }

    #[inline]
    pub fn contains(&self, slot: u32, set: usize) -> bool {
        self.bits[slot as usize * self.words_per_slot + set / 64] & (1 << (set % 64)) != 0
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
        let slots = AddressSlots::new([
            ("10.1.1.1".parse().unwrap(), 0),
            ("192.168.1.7".parse().unwrap(), 1),
            ("2001:db8::5".parse().unwrap(), 2),
            ("11.0.0.1".parse().unwrap(), 3),
        ]);
        assert_eq!(slots.slots_in(&networks[..3]), vec![0, 1, 2]);
        assert!(slots.slots_in(&["172.16.0.0/12".parse().unwrap()]).is_empty());
        let mut membership = Membership::new(4, 130);
        membership.insert(3, 129);
        membership.insert(0, 0);
        assert!(membership.contains(3, 129) && membership.contains(0, 0));
        assert!(!membership.contains(3, 128) && !membership.contains(1, 0));
        let everything = NetworkLookup::new(&networks[3..]);
        assert!(everything.contains("8.8.8.8".parse().unwrap()));
        assert!(!everything.contains("::1".parse().unwrap()));
    }
}
