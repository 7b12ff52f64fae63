//! Allocation blocks: the ordinal arithmetic and the allocation table of one block, and where
//! new blocks go in a pool. Pure: no I/O.
//!
//! As in Calico (`libcalico-go/lib/ipam/ipam_block.go`), every address of a block is usable
//! (there is no network or broadcast address inside a block), and freed ordinals go to the back
//! of the free queue so that a just-released address is the last to be handed out again.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The largest block this crate stores: 2^16 addresses (Calico's smallest block size, /20 for
/// IPv4 and /116 for IPv6, gives 4,096).
const MOST_ADDRESSES_IN_A_BLOCK: u32 = 1 << 16;

/// Who an address was given to. Recorded with every allocation for `ipam show` and `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttributes {
    pub handle: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    #[serde(default)]
    pub node: String,
}

/// One block of a pool as stored under `/sluice/ipam/blocks/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub cidr: IpNet,
    /// The node the block is affine to; `None` for a block nobody claims.
    #[serde(default)]
    pub affinity: Option<String>,
    /// Allocated ordinals and who holds them.
    #[serde(default)]
    pub allocations: BTreeMap<u32, AllocationAttributes>,
    /// Free ordinals in the order they will be handed out.
    #[serde(default)]
    pub unallocated: VecDeque<u32>,
}

/// Why a specific address could not be taken from a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignError {
    OutsideBlock,
    Taken { handle: String },
}

impl Block {
    /// An empty block over `cidr` (host bits are cleared).
    pub fn new(cidr: IpNet, affinity: Option<String>) -> Block {
        let cidr = cidr.trunc();
        let size = address_count(cidr).min(u128::from(MOST_ADDRESSES_IN_A_BLOCK)) as u32;
        Block {
            cidr,
            affinity,
            allocations: BTreeMap::new(),
            unallocated: (0..size).collect(),
        }
    }

    /// Checks what a stored block must satisfy: every ordinal either free or allocated, once.
    pub fn validate(&self) -> Result<(), String> {
        if self.cidr != self.cidr.trunc() {
            return Err(format!("block cidr {} has host bits set", self.cidr));
        }
        let size = address_count(self.cidr);
        if size > u128::from(MOST_ADDRESSES_IN_A_BLOCK) {
            return Err(format!("block {} is larger than 65,536 addresses", self.cidr));
        }
        let size = size as u32;
        let mut seen = vec![false; size as usize];
        for &ordinal in self.allocations.keys().chain(self.unallocated.iter()) {
            match seen.get_mut(ordinal as usize) {
                None => return Err(format!("ordinal {ordinal} is outside block {}", self.cidr)),
                Some(true) => {
                    return Err(format!(
                        "ordinal {ordinal} of block {} is listed twice",
                        self.cidr
                    ));
                }
                Some(flag) => *flag = true,
            }
        }
        if let Some(missing) = seen.iter().position(|flag| !flag) {
            return Err(format!(
                "ordinal {missing} of block {} is neither free nor allocated",
                self.cidr
            ));
        }
        Ok(())
    }

    pub fn capacity(&self) -> u32 {
        (self.allocations.len() + self.unallocated.len()) as u32
    }

    pub fn free_count(&self) -> usize {
        self.unallocated.len()
    }

    pub fn allocated_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty()
    }

    /// The ordinal of `address` in this block, if it is in it.
    pub fn ordinal(&self, address: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&address) {
            return None;
        }
        Some((address_number(address) - address_number(self.cidr.network())) as u32)
    }

    /// The address at `ordinal`.
    pub fn address(&self, ordinal: u32) -> IpAddr {
        address_at(self.cidr.network(), u128::from(ordinal))
    }

    /// Takes the next free address, or `None` when the block is full.
    pub fn assign_next(&mut self, attributes: AllocationAttributes) -> Option<IpAddr> {
        let ordinal = self.unallocated.pop_front()?;
        self.allocations.insert(ordinal, attributes);
        Some(self.address(ordinal))
    }

    /// Takes `address` itself.
    pub fn assign(&mut self, address: IpAddr, attributes: AllocationAttributes) -> Result<(), AssignError> {
        let ordinal = self.ordinal(address).ok_or(AssignError::OutsideBlock)?;
        if let Some(holder) = self.allocations.get(&ordinal) {
            return Err(AssignError::Taken {
                handle: holder.handle.clone(),
            });
        }
        self.unallocated.retain(|&free| free != ordinal);
        self.allocations.insert(ordinal, attributes);
        Ok(())
    }

    /// Frees `address`; returns who held it, or `None` if it was free or outside the block.
    pub fn release(&mut self, address: IpAddr) -> Option<AllocationAttributes> {
        let ordinal = self.ordinal(address)?;
        let attributes = self.allocations.remove(&ordinal)?;
        self.unallocated.push_back(ordinal);
        Some(attributes)
    }

    /// Frees every address held by `handle`; returns them in address order.
    pub fn release_handle(&mut self, handle: &str) -> Vec<IpAddr> {
        let ordinals: Vec<u32> = self
            .allocations
            .iter()
            .filter(|(_, attributes)| attributes.handle == handle)
            .map(|(&ordinal, _)| ordinal)
            .collect();
        for &ordinal in &ordinals {
            self.allocations.remove(&ordinal);
            self.unallocated.push_back(ordinal);
        }
        ordinals
            .into_iter()
            .map(|ordinal| self.address(ordinal))
            .collect()
    }

    /// The addresses `handle` holds here, in address order.
    pub fn addresses_of(&self, handle: &str) -> Vec<IpAddr> {
        self.allocations
            .iter()
            .filter(|(_, attributes)| attributes.handle == handle)
            .map(|(&ordinal, _)| self.address(ordinal))
            .collect()
    }

    /// Every allocation, in address order.
    pub fn allocated(&self) -> impl Iterator<Item = (IpAddr, &AllocationAttributes)> + '_ {
        self.allocations
            .iter()
            .map(|(&ordinal, attributes)| (self.address(ordinal), attributes))
    }
}

/// How many addresses a network holds, saturating at `u128::MAX` for `::/0`.
pub fn address_count(network: IpNet) -> u128 {
    let host_bits = u32::from(network.max_prefix_len() - network.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// How many blocks of `block_size` a pool holds, saturating.
pub fn block_count(pool: IpNet, block_size: u8) -> u128 {
    let bits = u32::from(block_size.saturating_sub(pool.prefix_len()));
    1u128.checked_shl(bits).unwrap_or(u128::MAX)
}

/// The `index`th block of `block_size` in `pool`.
pub fn nth_block(pool: IpNet, block_size: u8, index: u128) -> IpNet {
    let host_bits = u32::from(pool.max_prefix_len() - block_size);
    let offset = index.checked_shl(host_bits).unwrap_or(0);
    let network = address_at(pool.network(), offset);
    IpNet::new(network, block_size).expect("block size fits the address family")
}

/// The block of `block_size` that holds `address`.
pub fn block_containing(address: IpAddr, block_size: u8) -> IpNet {
    IpNet::new(address, block_size)
        .expect("block size fits the address family")
        .trunc()
}

/// Where a node starts looking for a free block in a pool: a stable hash of its name, so that
/// nodes claiming at the same time try different blocks (Calico's `randomBlockGenerator` seeds
/// from the host name for the same reason) and each node's retries try the same blocks again.
pub fn first_block_to_try(node: &str, count: u128) -> u128 {
    // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if count == 0 { 0 } else { u128::from(hash) % count }
}

/// A block of `pool` that no existing block overlaps, searched from the node's starting point.
/// `existing` holds every block of the datastore in the pool's family (blocks of deleted pools
/// included, since their addresses may still be in use).
pub fn choose_new_block(pool: IpNet, block_size: u8, node: &str, existing: &[IpNet]) -> Option<IpNet> {
    let count = block_count(pool, block_size);
    let same_size: std::collections::HashSet<IpNet> = existing
        .iter()
        .filter(|block| block.prefix_len() == block_size && pool.contains(*block))
        .copied()
        .collect();
    let other_sizes: Vec<IpNet> = existing
        .iter()
        .filter(|block| block.prefix_len() != block_size && overlaps(**block, pool))
        .copied()
        .collect();
    if count <= same_size.len() as u128 {
        return None;
    }
    let start = first_block_to_try(node, count);
    // Terminates: fewer existing blocks than slots means a free slot exists, unless blocks of
    // other sizes cover the rest; the step bound covers that case for pools of sane size.
    let steps = count.min(1 << 24);
    (0..steps)
        .map(|step| nth_block(pool, block_size, (start + step) % count))
        .find(|candidate| {
            !same_size.contains(candidate) && !other_sizes.iter().any(|block| overlaps(*block, *candidate))
        })
}

/// Whether two networks share an address.
pub fn overlaps(first: IpNet, second: IpNet) -> bool {
    first.contains(&second.network()) || second.contains(&first.network())
}

fn address_number(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(address) => u128::from(u32::from(address)),
        IpAddr::V6(address) => u128::from(address),
    }
}

fn address_at(network: IpAddr, offset: u128) -> IpAddr {
    match network {
        IpAddr::V4(base) => IpAddr::V4(Ipv4Addr::from(u32::from(base).wrapping_add(offset as u32))),
        IpAddr::V6(base) => IpAddr::V6(Ipv6Addr::from(u128::from(base).wrapping_add(offset))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn holder(handle: &str) -> AllocationAttributes {
        AllocationAttributes {
            handle: handle.into(),
            namespace: "default".into(),
            pod: "pod".into(),
            node: "node-a".into(),
        }
    }

    #[test]
    fn ordinals_and_addresses() {
        let block = Block::new(net("10.1.2.64/26"), None);
        assert_eq!(block.capacity(), 64);
        assert_eq!(block.ordinal(ip("10.1.2.64")), Some(0));
        assert_eq!(block.ordinal(ip("10.1.2.127")), Some(63));
        assert_eq!(block.ordinal(ip("10.1.2.128")), None);
        assert_eq!(block.address(5), ip("10.1.2.69"));
        let block = Block::new(net("fd00::1:0/122"), None);
        assert_eq!(block.address(63), ip("fd00::1:3f"));
        assert_eq!(block.ordinal(ip("fd00::1:3f")), Some(63));
        assert!(block.validate().is_ok());
    }

    #[test]
    fn new_clears_host_bits() {
        assert_eq!(Block::new(net("10.0.0.5/30"), None).cidr, net("10.0.0.4/30"));
    }

    #[test]
    fn assigns_in_order_until_full() {
        let mut block = Block::new(net("10.0.0.0/30"), Some("node-a".into()));
        let addresses: Vec<IpAddr> = (0..4).filter_map(|_| block.assign_next(holder("h"))).collect();
        assert_eq!(
            addresses,
            vec![ip("10.0.0.0"), ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
        );
        assert_eq!(block.assign_next(holder("h")), None);
        assert_eq!(block.free_count(), 0);
        assert!(block.validate().is_ok());
    }

    /// Calico's `Unallocated` queue: a released ordinal is reused last (ipam_block.go, release).
    #[test]
    fn released_address_goes_to_the_back_of_the_queue() {
        let mut block = Block::new(net("10.0.0.0/30"), None);
        let first = block.assign_next(holder("a")).unwrap();
        assert_eq!(block.release(first).unwrap().handle, "a");
        assert_eq!(block.assign_next(holder("b")), Some(ip("10.0.0.1")));
        assert_eq!(block.assign_next(holder("c")), Some(ip("10.0.0.2")));
        assert_eq!(block.assign_next(holder("d")), Some(ip("10.0.0.3")));
        assert_eq!(block.assign_next(holder("e")), Some(first));
    }

    #[test]
    fn specific_address_and_conflicts() {
        let mut block = Block::new(net("10.0.0.0/29"), None);
        block.assign(ip("10.0.0.5"), holder("a")).unwrap();
        assert_eq!(
            block.assign(ip("10.0.0.5"), holder("b")),
            Err(AssignError::Taken { handle: "a".into() })
        );
        assert_eq!(
            block.assign(ip("10.0.0.9"), holder("b")),
            Err(AssignError::OutsideBlock)
        );
        // The taken ordinal is no longer handed out.
        let handed: Vec<IpAddr> = (0..7).filter_map(|_| block.assign_next(holder("c"))).collect();
        assert!(!handed.contains(&ip("10.0.0.5")));
        assert_eq!(handed.len(), 7);
        assert!(block.validate().is_ok());
    }

    #[test]
    fn release_by_handle_frees_only_that_handle() {
        let mut block = Block::new(net("10.0.0.0/29"), None);
        block.assign_next(holder("a"));
        block.assign_next(holder("b"));
        block.assign_next(holder("a"));
        assert_eq!(block.addresses_of("a"), vec![ip("10.0.0.0"), ip("10.0.0.2")]);
        assert_eq!(block.release_handle("a"), vec![ip("10.0.0.0"), ip("10.0.0.2")]);
        assert_eq!(block.release_handle("a"), Vec::<IpAddr>::new());
        assert_eq!(block.allocated_count(), 1);
        assert_eq!(block.release(ip("10.0.0.0")), None);
        assert!(block.validate().is_ok());
    }

    #[test]
    fn validate_rejects_inconsistent_tables() {
        let mut block = Block::new(net("10.0.0.0/30"), None);
        block.allocations.insert(0, holder("a"));
        assert!(block.validate().unwrap_err().contains("listed twice"));
        let mut block = Block::new(net("10.0.0.0/30"), None);
        block.unallocated.pop_back();
        assert!(
            block
                .validate()
                .unwrap_err()
                .contains("neither free nor allocated")
        );
        let mut block = Block::new(net("10.0.0.0/30"), None);
        block.unallocated.push_back(9);
        assert!(block.validate().unwrap_err().contains("outside"));
    }

    #[test]
    fn stored_form_round_trips() {
        let mut block = Block::new(net("10.0.0.0/30"), Some("node-a".into()));
        block.assign_next(holder("a"));
        let text = serde_json::to_string(&block).unwrap();
        assert!(text.contains("\"cidr\":\"10.0.0.0/30\""), "{text}");
        let back: Block = serde_json::from_str(&text).unwrap();
        assert_eq!(back, block);
    }

    #[test]
    fn block_arithmetic() {
        assert_eq!(block_count(net("10.0.0.0/24"), 26), 4);
        assert_eq!(block_count(net("::/0"), 128), u128::MAX);
        assert_eq!(nth_block(net("10.0.0.0/24"), 26, 3), net("10.0.0.192/26"));
        assert_eq!(nth_block(net("fd00::/120"), 122, 1), net("fd00::40/122"));
        assert_eq!(block_containing(ip("10.0.0.200"), 26), net("10.0.0.192/26"));
        assert_eq!(address_count(net("10.0.0.0/24")), 256);
        // FNV-1a 64 test vectors from its specification (draft-eastlake-fnv), reduced modulo
        // the block count: an independent expectation, and the starting block must not change
        // between versions (nodes would move to other blocks).
        assert_eq!(first_block_to_try("", u128::MAX), 0xcbf2_9ce4_8422_2325);
        assert_eq!(first_block_to_try("a", u128::MAX), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(first_block_to_try("foobar", u128::MAX), 0x8594_4171_f739_67e8);
        assert_eq!(first_block_to_try("foobar", 1000), 0x8594_4171_f739_67e8 % 1000);
        assert_eq!(first_block_to_try("foobar", 0), 0);
        assert!(overlaps(net("10.0.0.0/24"), net("10.0.0.64/26")));
        assert!(!overlaps(net("10.0.0.0/26"), net("10.0.0.64/26")));
    }

    #[test]
    fn new_block_skips_existing_and_overlapping_blocks() {
        let pool = net("10.0.0.0/24");
        let mut existing = Vec::new();
        for _ in 0..4 {
            let block = choose_new_block(pool, 26, "node-a", &existing).unwrap();
            assert!(pool.contains(&block));
            assert!(!existing.contains(&block));
            existing.push(block);
        }
        assert_eq!(choose_new_block(pool, 26, "node-a", &existing), None);
        // A /25 left by a deleted pool with another block size covers two /26 slots.
        let existing = vec![net("10.0.0.0/25"), net("10.0.0.128/26")];
        assert_eq!(
            choose_new_block(pool, 26, "node-b", &existing),
            Some(net("10.0.0.192/26"))
        );
        // Blocks outside the pool do not count against it.
        let existing = vec![net("10.9.0.0/26")];
        assert!(choose_new_block(pool, 26, "node-b", &existing).is_some());
    }

    #[test]
    fn different_nodes_start_at_different_blocks() {
        let starts: std::collections::HashSet<u128> = (0..8)
            .map(|index| first_block_to_try(&format!("node-{index}"), 1024))
            .collect();
        assert!(starts.len() > 4, "{starts:?}");
    }
}
