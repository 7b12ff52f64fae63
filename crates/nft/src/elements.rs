//! Set elements as the fast path writes them: a key made of addresses, an optional per-element
//! timeout, and the change (add or delete) to make.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::objects::Table;

/// The key of a set element: one address (`type ipv4_addr`) or a concatenation of two
/// (`type ipv4_addr . ipv4_addr`, e.g. pod address . learned address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementKey {
    Address(IpAddr),
    Pair(IpAddr, IpAddr),
}

impl ElementKey {
    /// The key as the kernel stores it: each part in network byte order, padded to the
    /// kernel's 4-byte register size (addresses already are), parts back to back.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(32);
        let mut push = |address: &IpAddr| match address {
            IpAddr::V4(address) => bytes.extend_from_slice(&address.octets()),
            IpAddr::V6(address) => bytes.extend_from_slice(&address.octets()),
        };
        match self {
            ElementKey::Address(address) => push(address),
            ElementKey::Pair(first, second) => {
                push(first);
                push(second);
            }
        }
        bytes
    }

    /// Reads a key back by its length: 4 and 16 bytes are one address, 8 and 32 a pair of the
    /// same family. Other lengths (a mixed-family pair, other key types) are not Sluice's.
    pub fn from_bytes(bytes: &[u8]) -> Option<ElementKey> {
        let v4 = |part: &[u8]| IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(part).expect("4 bytes")));
        let v6 = |part: &[u8]| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(part).expect("16 bytes")));
        match bytes.len() {
            4 => Some(ElementKey::Address(v4(bytes))),
            16 => Some(ElementKey::Address(v6(bytes))),
            8 => Some(ElementKey::Pair(v4(&bytes[..4]), v4(&bytes[4..]))),
            32 => Some(ElementKey::Pair(v6(&bytes[..16]), v6(&bytes[16..]))),
            _ => None,
        }
    }
}

/// nft's syntax: `10.0.0.1 . 192.0.2.7`.
impl fmt::Display for ElementKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElementKey::Address(address) => write!(formatter, "{address}"),
            ElementKey::Pair(first, second) => write!(formatter, "{first} . {second}"),
        }
    }
}

/// One change to one set. The set must exist (the `nft -f` ruleset declares it); a timeout
/// needs a set declared with `flags timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementChange {
    /// Adds the element, or, when it is already there, sets its timeout anew (the kernel
    /// refreshes the expiry of an element added again; see ARCHITECTURE.md).
    Add {
        table: Table,
        set: String,
        key: ElementKey,
        /// `None`: the set's default timeout, or never expires when it has none.
        timeout: Option<Duration>,
    },
    /// Deletes the element; one that is not in the set is an error (ENOENT).
    Delete {
        table: Table,
        set: String,
        key: ElementKey,
    },
}

impl ElementChange {
    pub fn table(&self) -> &Table {
        match self {
            ElementChange::Add { table, .. } | ElementChange::Delete { table, .. } => table,
        }
    }

    pub fn set(&self) -> &str {
        match self {
            ElementChange::Add { set, .. } | ElementChange::Delete { set, .. } => set,
        }
    }

    pub fn key(&self) -> &ElementKey {
        match self {
            ElementChange::Add { key, .. } | ElementChange::Delete { key, .. } => key,
        }
    }

    pub fn is_add(&self) -> bool {
        matches!(self, ElementChange::Add { .. })
    }
}

/// An element as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedElement {
    pub key: ElementKey,
    /// The timeout it was added with, when the kernel reports one.
    pub timeout: Option<Duration>,
    /// The time left before it expires (millisecond resolution, rounded to jiffies).
    pub expires: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_kernel_layout() {
        let keys = [
            ElementKey::Address("10.0.0.1".parse().unwrap()),
            ElementKey::Address("2001:db8::1".parse().unwrap()),
            ElementKey::Pair("10.0.0.1".parse().unwrap(), "192.0.2.7".parse().unwrap()),
            ElementKey::Pair("fd00::1".parse().unwrap(), "2001:db8::7".parse().unwrap()),
        ];
        for key in keys {
            assert_eq!(ElementKey::from_bytes(&key.to_bytes()), Some(key), "{key}");
        }
        let pair = ElementKey::Pair("10.0.0.1".parse().unwrap(), "192.0.2.7".parse().unwrap());
        assert_eq!(pair.to_bytes(), [10, 0, 0, 1, 192, 0, 2, 7]);
        assert_eq!(pair.to_string(), "10.0.0.1 . 192.0.2.7");
        assert_eq!(ElementKey::from_bytes(&[0; 20]), None);
    }
}
