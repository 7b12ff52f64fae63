//! Where pod addresses live, as routes one node needs: the blocks other nodes hold go to those
//! nodes, addresses borrowed from a block go to the node that borrowed them, and the node's own
//! blocks end in a blackhole so that an unused address in them is dropped here instead of
//! following the default route out. Pure: no I/O.
//!
//! This is what Calico's Felix programs without encapsulation (`noencap_mgr.go` and
//! `route_mgr.go`: remote blocks via the node's address, borrowed /32s, blackholes for local
//! affine blocks). Routes to the node's own pods are the CNI plugin's (`<pod> dev slc…`), and
//! they are more specific than any block, so the blackhole never hides a pod that exists. A
//! block of one address (/32, /128) gets no blackhole: it would have the pod route's own
//! destination and could replace it (Felix skips those too).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::block::Block;

/// What routing needs of a block: its range, its node, and the addresses that other nodes
/// borrowed from it. Far smaller than the block itself, which an agent keeps for every block
/// of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPlacement {
    pub cidr: IpNet,
    pub affinity: Option<String>,
    /// Addresses allocated to a node other than the block's own, with that node.
    pub borrowed: Vec<(IpAddr, String)>,
}

impl BlockPlacement {
    pub fn of(block: &Block) -> BlockPlacement {
        let borrowed = block
            .allocated()
            .filter(|(_, attributes)| {
                !attributes.node.is_empty() && block.affinity.as_deref() != Some(attributes.node.as_str())
            })
            .map(|(address, attributes)| (address, attributes.node.clone()))
            .collect();
        BlockPlacement {
            cidr: block.cidr,
            affinity: block.affinity.clone(),
            borrowed,
        }
    }
}

/// Where a route sends its destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NextHop {
    /// Through another node, at its address.
    Node(IpAddr),
    /// Nowhere: the node's own block, whose used addresses have more specific routes.
    Blackhole,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub destination: IpNet,
    pub next_hop: NextHop,
}

/// The routes `node` needs, sorted by destination, and the nodes that hold addresses but have
/// no address of the right family to route them through (sorted, once each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRoutes {
    pub routes: Vec<Route>,
    pub unroutable_nodes: Vec<String>,
}

/// Computes the routes of `node` from every block of the cluster and each node's addresses.
/// A node's first address of the destination's family is its next hop.
pub fn node_routes<'a>(
    node: &str,
    blocks: impl IntoIterator<Item = &'a BlockPlacement>,
    node_addresses: &BTreeMap<String, Vec<IpAddr>>,
) -> NodeRoutes {
    let mut routes: BTreeMap<IpNet, NextHop> = BTreeMap::new();
    let mut unroutable: Vec<String> = Vec::new();
    let mut through = |destination: IpNet, holder: &str, routes: &mut BTreeMap<IpNet, NextHop>| {
        if holder == node {
            return;
        }
        let address = node_addresses.get(holder).and_then(|addresses| {
            addresses
                .iter()
                .find(|address| address.is_ipv4() == destination.addr().is_ipv4())
        });
        match address {
            Some(address) => {
                routes.insert(destination, NextHop::Node(*address));
            }
            None => unroutable.push(holder.to_string()),
        }
    };
    for block in blocks {
        match block.affinity.as_deref() {
            Some(owner) if owner == node && block.cidr.prefix_len() < block.cidr.max_prefix_len() => {
                routes.insert(block.cidr, NextHop::Blackhole);
            }
            // Another node's block; or this node's block of one address, which `through` skips.
            Some(owner) => through(block.cidr, owner, &mut routes),
            // A block nobody claims has no route; its addresses are all borrowed ones.
            None => {}
        }
        for (address, holder) in &block.borrowed {
            through(IpNet::from(*address), holder, &mut routes);
        }
    }
    unroutable.sort();
    unroutable.dedup();
    NodeRoutes {
        routes: routes
            .into_iter()
            .map(|(destination, next_hop)| Route {
                destination,
                next_hop,
            })
            .collect(),
        unroutable_nodes: unroutable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::AllocationAttributes;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn address(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn placement(cidr: &str, affinity: Option<&str>, borrowed: &[(&str, &str)]) -> BlockPlacement {
        BlockPlacement {
            cidr: net(cidr),
            affinity: affinity.map(str::to_string),
            borrowed: borrowed
                .iter()
                .map(|(ip, node)| (address(ip), node.to_string()))
                .collect(),
        }
    }

    fn addresses(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<IpAddr>> {
        entries
            .iter()
            .map(|(node, list)| (node.to_string(), list.iter().map(|text| address(text)).collect()))
            .collect()
    }

    fn via(destination: &str, next: &str) -> Route {
        Route {
            destination: net(destination),
            next_hop: NextHop::Node(address(next)),
        }
    }

    fn blackhole(destination: &str) -> Route {
        Route {
            destination: net(destination),
            next_hop: NextHop::Blackhole,
        }
    }

    #[test]
    fn remote_blocks_go_to_their_node_and_own_blocks_to_a_blackhole() {
        let blocks = [
            placement("10.0.0.0/26", Some("a"), &[]),
            placement("10.0.0.64/26", Some("b"), &[]),
            placement("10.0.1.0/26", Some("c"), &[]),
        ];
        let nodes = addresses(&[
            ("a", &["100.64.0.10"]),
            ("b", &["100.64.0.11"]),
            ("c", &["100.64.0.12"]),
        ]);
        let routes = node_routes("a", &blocks, &nodes);
        assert_eq!(
            routes.routes,
            vec![
                blackhole("10.0.0.0/26"),
                via("10.0.0.64/26", "100.64.0.11"),
                via("10.0.1.0/26", "100.64.0.12"),
            ]
        );
        assert!(routes.unroutable_nodes.is_empty());
    }

    #[test]
    fn a_borrowed_address_goes_to_the_borrower_even_out_of_our_own_block() {
        // b borrowed .5 from a's block and .70 from c's block; c borrowed .9 from a's block.
        let blocks = [
            placement("10.0.0.0/26", Some("a"), &[("10.0.0.5", "b"), ("10.0.0.9", "c")]),
            placement("10.0.0.64/26", Some("c"), &[("10.0.0.70", "b")]),
        ];
        let nodes = addresses(&[("b", &["100.64.0.11"]), ("c", &["100.64.0.12"])]);
        let routes = node_routes("a", &blocks, &nodes).routes;
        assert_eq!(
            routes,
            vec![
                blackhole("10.0.0.0/26"),
                via("10.0.0.5/32", "100.64.0.11"),
                via("10.0.0.9/32", "100.64.0.12"),
                via("10.0.0.64/26", "100.64.0.12"),
                via("10.0.0.70/32", "100.64.0.11"),
            ]
        );
        // The borrower itself needs no route to its own address: the CNI plugin made one.
        let on_b = node_routes(
            "b",
            &blocks,
            &addresses(&[("a", &["100.64.0.10"]), ("c", &["100.64.0.12"])]),
        );
        assert!(
            on_b.routes
                .iter()
                .all(|route| route.destination != net("10.0.0.5/32"))
        );
    }

    #[test]
    fn a_block_of_one_address_gets_no_blackhole_that_could_replace_its_pods_route() {
        let blocks = [
            placement("10.0.3.7/32", Some("a"), &[]),
            placement("fd00::7/128", Some("a"), &[]),
            placement("10.0.3.8/32", Some("b"), &[]),
        ];
        let nodes = addresses(&[("b", &["100.64.0.11"])]);
        assert_eq!(
            node_routes("a", &blocks, &nodes).routes,
            vec![via("10.0.3.8/32", "100.64.0.11")]
        );
    }

    #[test]
    fn an_unclaimed_block_has_no_route_but_its_borrowed_addresses_do() {
        let blocks = [placement("10.0.2.0/26", None, &[("10.0.2.1", "b")])];
        let nodes = addresses(&[("b", &["100.64.0.11"])]);
        assert_eq!(
            node_routes("a", &blocks, &nodes).routes,
            vec![via("10.0.2.1/32", "100.64.0.11")]
        );
    }

    #[test]
    fn the_next_hop_has_the_destinations_family_and_a_node_without_one_is_reported() {
        let blocks = [
            placement("10.0.0.64/26", Some("b"), &[]),
            placement("fd00::40/122", Some("b"), &[]),
            placement("10.0.1.0/26", Some("c"), &[]),
        ];
        let nodes = addresses(&[("b", &["fd01::11", "100.64.0.11"])]);
        let routes = node_routes("a", &blocks, &nodes);
        assert_eq!(
            routes.routes,
            vec![
                via("10.0.0.64/26", "100.64.0.11"),
                via("fd00::40/122", "fd01::11")
            ]
        );
        assert_eq!(routes.unroutable_nodes, vec!["c".to_string()]);
    }

    #[test]
    fn placement_of_a_block_lists_addresses_held_by_other_nodes() {
        let mut block = Block::new(net("10.0.0.0/30"), Some("a".into()));
        let attributes = |handle: &str, node: &str| AllocationAttributes {
            handle: handle.into(),
            namespace: String::new(),
            pod: String::new(),
            node: node.into(),
        };
        block.assign(address("10.0.0.0"), attributes("own", "a")).unwrap();
        block
            .assign(address("10.0.0.2"), attributes("guest", "b"))
            .unwrap();
        block
            .assign(address("10.0.0.3"), attributes("unknown", ""))
            .unwrap();
        let placement = BlockPlacement::of(&block);
        assert_eq!(placement.cidr, net("10.0.0.0/30"));
        assert_eq!(placement.affinity.as_deref(), Some("a"));
        assert_eq!(placement.borrowed, vec![(address("10.0.0.2"), "b".to_string())]);
    }
}
