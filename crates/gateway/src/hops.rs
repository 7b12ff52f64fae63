//! Which gateways one client gets for one destination.
//!
//! The pool is the `Ready` gateways the selector picks (with `PreferNodeLocal`, those on the
//! client's node if there is any, else all). A client keeps the gateways it had last time that
//! are still in the pool, and a `Draining` gateway it had (drain: existing flows finish, no new
//! client comes); with `maxNextHops` it keeps the first of them by name. The rest is filled
//! from the pool, least used first — usage counts the hops of this node's clients, as Felix
//! counts them — and equally used gateways are ordered by a hash of (client, gateway), so
//! clients with the same candidates spread over them instead of all taking the first name,
//! and by name last. The hash is FNV-1a, written out here, so the order is the same on every
//! node, build and run (std's hasher promises none of that).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{GatewayHealth, PodId};

/// A gateway the selector picks, with its address in the destination's family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: PodId,
    pub address: IpAddr,
    pub node: String,
    pub health: GatewayHealth,
}

/// One client's need for one destination.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub client: &'a PodId,
    pub client_node: &'a str,
    pub candidates: &'a [Candidate],
    /// 0: every gateway in the pool.
    pub max_next_hops: u32,
    pub prefer_node_local: bool,
    /// The gateways this client had for this destination in the previous plan.
    pub previous: &'a [PodId],
}

impl Request<'_> {
    /// Indices of the gateways that may take new clients.
    fn pool(&self) -> Vec<usize> {
        let ready: Vec<usize> = (0..self.candidates.len())
            .filter(|&index| self.candidates[index].health == GatewayHealth::Ready)
            .collect();
        if self.prefer_node_local {
            let local: Vec<usize> = ready
                .iter()
                .copied()
                .filter(|&index| self.candidates[index].node == self.client_node)
                .collect();
            if !local.is_empty() {
                return local;
            }
        }
        ready
    }

    fn limit(&self) -> usize {
        match self.max_next_hops {
            0 => usize::MAX,
            maximum => maximum as usize,
        }
    }

    /// The previous gateways this client keeps, in name order, at most the limit.
    pub fn kept(&self) -> Vec<usize> {
        let pool = self.pool();
        let mut kept: Vec<usize> = (0..self.candidates.len())
            .filter(|&index| {
                let candidate = &self.candidates[index];
                self.previous.contains(&candidate.id)
                    && (pool.contains(&index) || candidate.health == GatewayHealth::Draining)
            })
            .collect();
        kept.sort_by(|&left, &right| self.candidates[left].id.cmp(&self.candidates[right].id));
        kept.truncate(self.limit());
        kept
    }

    /// `kept` filled up from the pool, least used first; the result in name order.
    pub fn fill(&self, kept: &[usize], usage: &BTreeMap<PodId, usize>) -> Vec<usize> {
        let mut chosen = kept.to_vec();
        let mut fresh: Vec<usize> = self
            .pool()
            .into_iter()
            .filter(|index| !kept.contains(index))
            .collect();
        fresh.sort_by_key(|&index| {
            let id = &self.candidates[index].id;
            (
                usage.get(id).copied().unwrap_or(0),
                rank(self.client, id),
                id.clone(),
            )
        });
        let room = self.limit().saturating_sub(chosen.len());
        chosen.extend(fresh.into_iter().take(room));
        chosen.sort_by(|&left, &right| self.candidates[left].id.cmp(&self.candidates[right].id));
        chosen
    }
}

/// The tie-break between equally used gateways: FNV-1a over both names.
pub fn rank(client: &PodId, gateway: &PodId) -> u64 {
    fnv1a(&[
        client.namespace.as_bytes(),
        b"/",
        client.name.as_bytes(),
        b"\0",
        gateway.namespace.as_bytes(),
        b"/",
        gateway.name.as_bytes(),
    ])
}

/// 64-bit FNV-1a of the parts, one after another.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tie_break_hash_is_fnv_1a() {
        // Published FNV-1a 64 test vectors (Fowler, Noll, Vo).
        assert_eq!(fnv1a(&[]), 0xcbf29ce484222325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(&[b"foo", b"bar"]), 0x85944171f73967e8);
        assert_eq!(
            rank(&PodId::new("a", "b"), &PodId::new("c", "d")),
            fnv1a(&[b"a/b\0c/d"])
        );
    }
}
