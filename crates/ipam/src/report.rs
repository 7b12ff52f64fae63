//! What `sluice ipam show` and `sluice ipam check` print, computed from the records alone.
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use sluice_api::calico::IpPool;

use crate::block::{Block, address_count};
use crate::layout::HandleRecord;
use crate::pools::pool_of_block;

/// Every pool, block and allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub pools: Vec<PoolReport>,
    pub blocks: Vec<BlockReport>,
    pub allocations: Vec<AllocationRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolReport {
    pub name: String,
    pub cidr: IpNet,
    pub block_size: u8,
    pub disabled: bool,
    pub nat_outgoing: bool,
    /// Addresses in the pool (saturating for the largest IPv6 pools).
    pub capacity: u128,
    pub allocated: usize,
    pub blocks: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockReport {
    pub cidr: IpNet,
    /// `None` for a block left behind by a deleted pool.
    pub pool: Option<String>,
    /// The node the block is affine to.
    pub node: Option<String>,
    pub capacity: u32,
    pub allocated: usize,
}

/// One allocated address and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationRecord {
    pub address: IpAddr,
    pub block: IpNet,
    pub pool: Option<String>,
    /// The node the pod runs on (which may differ from the block's node when it borrowed).
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub handle: String,
}

/// How `ipam show --by` groups the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Grouping {
    Pool,
    Namespace,
    Node,
}

/// The addresses of one pool, namespace or node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub name: String,
    /// The group's addresses merged into the fewest CIDRs: what a perimeter firewall needs.
    pub ranges: Vec<IpNet>,
    /// Blocks in the pool, or affine to the node; none for a namespace.
    pub blocks: Vec<IpNet>,
    pub allocated: usize,
    pub allocations: Vec<AllocationRecord>,
}

impl Report {
    pub fn build(pools: &[IpPool], blocks: &[Block]) -> Report {
        let mut blocks: Vec<&Block> = blocks.iter().collect();
        blocks.sort_by_key(|block| block.cidr);
        let mut pool_reports: Vec<PoolReport> = pools
            .iter()
            .map(|pool| PoolReport {
                name: pool.metadata.name.clone(),
                cidr: pool.spec.cidr.0.trunc(),
                block_size: pool.spec.effective_block_size(),
                disabled: pool.spec.disabled,
                nat_outgoing: pool.spec.nat_outgoing,
                capacity: address_count(pool.spec.cidr.0),
                allocated: 0,
                blocks: Vec::new(),
            })
            .collect();
        pool_reports.sort_by(|left, right| left.name.cmp(&right.name));
        let mut block_reports = Vec::new();
        let mut allocations = Vec::new();
        for block in blocks {
            let pool = pool_of_block(pools, block.cidr).map(|pool| pool.metadata.name.clone());
            if let Some(report) = pool_reports
                .iter_mut()
                .find(|report| Some(&report.name) == pool.as_ref())
            {
                report.allocated += block.allocated_count();
                report.blocks.push(block.cidr);
            }
            block_reports.push(BlockReport {
                cidr: block.cidr,
                pool: pool.clone(),
                node: block.affinity.clone(),
                capacity: block.capacity(),
                allocated: block.allocated_count(),
            });
            allocations.extend(block.allocated().map(|(address, attributes)| AllocationRecord {
                address,
                block: block.cidr,
                pool: pool.clone(),
                node: attributes.node.clone(),
                namespace: attributes.namespace.clone(),
                pod: attributes.pod.clone(),
                handle: attributes.handle.clone(),
            }));
        }
        allocations.sort();
        Report {
            pools: pool_reports,
            blocks: block_reports,
            allocations,
        }
    }

    /// The report grouped by pool, namespace or node, by name. Pools and nodes with blocks but
    /// no allocations are listed too.
    pub fn group_by(&self, grouping: Grouping) -> Vec<Group> {
        let mut groups: BTreeMap<String, (BTreeSet<IpNet>, Vec<AllocationRecord>)> = BTreeMap::new();
        match grouping {
            Grouping::Pool => {
                for pool in &self.pools {
                    groups
                        .entry(pool.name.clone())
                        .or_default()
                        .0
                        .extend(&pool.blocks);
                }
            }
            Grouping::Node => {
                for block in &self.blocks {
                    if let Some(node) = &block.node {
                        groups.entry(node.clone()).or_default().0.insert(block.cidr);
                    }
                }
            }
            Grouping::Namespace => {}
        }
        for allocation in &self.allocations {
            let name = match grouping {
                // Addresses of blocks outside every pool are grouped under an empty name.
                Grouping::Pool => allocation.pool.clone().unwrap_or_default(),
                Grouping::Namespace => allocation.namespace.clone(),
                Grouping::Node => allocation.node.clone(),
            };
            groups.entry(name).or_default().1.push(allocation.clone());
        }
        groups
            .into_iter()
            .map(|(name, (blocks, allocations))| {
                let addresses: Vec<IpNet> = allocations
                    .iter()
                    .map(|allocation| IpNet::from(allocation.address))
                    .collect();
                Group {
                    name,
                    ranges: IpNet::aggregate(&addresses),
                    blocks: blocks.into_iter().collect(),
                    allocated: allocations.len(),
                    allocations,
                }
            })
            .collect()
    }
}

/// What `ipam check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// Allocated addresses counted.
    pub allocations: usize,
    /// Addresses whose handle belongs to no WorkloadEndpoint.
    pub leaked: Vec<AllocationRecord>,
    pub doubly_owned: Vec<DoubleOwnership>,
    /// WorkloadEndpoints whose addresses IPAM does not hold for them.
    pub endpoint_problems: Vec<EndpointProblem>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty() && self.doubly_owned.is_empty() && self.endpoint_problems.is_empty()
    }
}

/// A WorkloadEndpoint as `check` compares it with IPAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddresses {
    /// `<namespace>/<name>`.
    pub endpoint: String,
    /// `<containerID>.<interface>`.
    pub handle: String,
    pub addresses: Vec<IpAddr>,
}

/// An endpoint address IPAM does not back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum EndpointProblem {
    /// The endpoint's address is allocated to nobody: IPAM may give it to another pod.
    #[serde(rename_all = "camelCase")]
    AddressNotAllocated { endpoint: String, address: IpAddr },
    /// The endpoint's address is allocated, but to another handle.
    #[serde(rename_all = "camelCase")]
    AddressHeldByAnotherHandle {
        endpoint: String,
        address: IpAddr,
        endpoint_handle: String,
        holder: String,
    },
    /// Several endpoints record one address.
    #[serde(rename_all = "camelCase")]
    AddressOfSeveralEndpoints { address: IpAddr, endpoints: Vec<String> },
}

impl std::fmt::Display for EndpointProblem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointProblem::AddressNotAllocated { endpoint, address } => write!(
                formatter,
                "endpoint {endpoint} has {address}, which IPAM has not allocated"
            ),
            EndpointProblem::AddressHeldByAnotherHandle {
                endpoint,
                address,
                endpoint_handle,
                holder,
            } => write!(
                formatter,
                "endpoint {endpoint} (handle {endpoint_handle}) has {address}, which IPAM holds for handle {holder}"
            ),
            EndpointProblem::AddressOfSeveralEndpoints { address, endpoints } => write!(
                formatter,
                "{address} is the address of several endpoints: {}",
                endpoints.join(", ")
            ),
        }
    }
}

/// An address or range that more than one record claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum DoubleOwnership {
    /// Two blocks share addresses.
    #[serde(rename_all = "camelCase")]
    OverlappingBlocks { first: IpNet, second: IpNet },
    /// One address is allocated in more than one block.
    #[serde(rename_all = "camelCase")]
    AddressInSeveralBlocks {
        address: IpAddr,
        blocks: Vec<IpNet>,
        handles: Vec<String>,
    },
    /// A handle's record and the blocks disagree on how many addresses it holds in a block.
    #[serde(rename_all = "camelCase")]
    HandleMismatch {
        handle: String,
        block: IpNet,
        recorded: u32,
        found: u32,
    },
}

/// Finds leaked and doubly-owned addresses, and endpoints whose addresses IPAM does not hold
/// for them. `endpoints` holds every WorkloadEndpoint.
pub fn check(
    pools: &[IpPool],
    blocks: &[Block],
    handles: &BTreeMap<String, HandleRecord>,
    endpoints: &[EndpointAddresses],
) -> CheckReport {
    let endpoint_handles: BTreeSet<&str> = endpoints
        .iter()
        .map(|endpoint| endpoint.handle.as_str())
        .collect();
    let report = Report::build(pools, blocks);
    let mut result = CheckReport {
        allocations: report.allocations.len(),
        ..CheckReport::default()
    };
    result.leaked = report
        .allocations
        .iter()
        .filter(|allocation| !endpoint_handles.contains(allocation.handle.as_str()))
        .cloned()
        .collect();

    let mut cidrs: Vec<IpNet> = blocks.iter().map(|block| block.cidr).collect();
    cidrs.sort();
    for (index, first) in cidrs.iter().enumerate() {
        // Sorted by network then prefix, so an overlapping block starts before `first` ends.
        for second in cidrs[index + 1..]
            .iter()
            .take_while(|second| first.contains(&second.network()))
        {
            result.doubly_owned.push(DoubleOwnership::OverlappingBlocks {
                first: *first,
                second: *second,
            });
        }
    }
    let mut holders: BTreeMap<IpAddr, Vec<&AllocationRecord>> = BTreeMap::new();
    for allocation in &report.allocations {
        holders.entry(allocation.address).or_default().push(allocation);
    }
    let mut endpoints_of: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for endpoint in endpoints {
        for address in &endpoint.addresses {
            endpoints_of
                .entry(*address)
                .or_default()
                .push(endpoint.endpoint.clone());
            let problem = match holders.get(address).map(Vec::as_slice) {
                None | Some([]) => Some(EndpointProblem::AddressNotAllocated {
                    endpoint: endpoint.endpoint.clone(),
                    address: *address,
                }),
                Some(records) if !records.iter().any(|record| record.handle == endpoint.handle) => {
                    Some(EndpointProblem::AddressHeldByAnotherHandle {
                        endpoint: endpoint.endpoint.clone(),
                        address: *address,
                        endpoint_handle: endpoint.handle.clone(),
                        holder: records[0].handle.clone(),
                    })
                }
                Some(_) => None,
            };
            result.endpoint_problems.extend(problem);
        }
    }
    for (address, mut names) in endpoints_of.into_iter().filter(|(_, names)| names.len() > 1) {
        names.sort();
        result
            .endpoint_problems
            .push(EndpointProblem::AddressOfSeveralEndpoints {
                address,
                endpoints: names,
            });
    }
    for (address, records) in holders.into_iter().filter(|(_, records)| records.len() > 1) {
        result.doubly_owned.push(DoubleOwnership::AddressInSeveralBlocks {
            address,
            blocks: records.iter().map(|record| record.block).collect(),
            handles: records.iter().map(|record| record.handle.clone()).collect(),
        });
    }

    // Counts per (handle, block) as the blocks see them, against the handle records.
    let mut found: BTreeMap<(&str, IpNet), u32> = BTreeMap::new();
    for allocation in &report.allocations {
        *found
            .entry((allocation.handle.as_str(), allocation.block))
            .or_default() += 1;
    }
    let mut recorded: BTreeMap<(&str, IpNet), u32> = BTreeMap::new();
    for (handle, record) in handles {
        for (&block, &count) in &record.blocks {
            recorded.insert((handle.as_str(), block), count);
        }
    }
    let pairs: BTreeSet<(&str, IpNet)> = found.keys().chain(recorded.keys()).copied().collect();
    for pair in pairs {
        let (recorded, found) = (
            recorded.get(&pair).copied().unwrap_or(0),
            found.get(&pair).copied().unwrap_or(0),
        );
        if recorded != found {
            result.doubly_owned.push(DoubleOwnership::HandleMismatch {
                handle: pair.0.to_string(),
                block: pair.1,
                recorded,
                found,
            });
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::AllocationAttributes;
    use crate::pools::tests::pool;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn holder(handle: &str, namespace: &str, node: &str) -> AllocationAttributes {
        AllocationAttributes {
            handle: handle.into(),
            namespace: namespace.into(),
            pod: format!("pod-{handle}"),
            node: node.into(),
        }
    }

    fn sample() -> (Vec<IpPool>, Vec<Block>) {
        let pools = vec![
            pool("a", "cidr: 10.0.0.0/24\nblockSize: 30"),
            pool("b", "cidr: 10.1.0.0/24"),
        ];
        let mut first = Block::new(net("10.0.0.0/30"), Some("node-1".into()));
        first.assign_next(holder("h1", "prod", "node-1"));
        first.assign_next(holder("h2", "prod", "node-1"));
        let mut second = Block::new(net("10.0.0.4/30"), Some("node-2".into()));
        second.assign_next(holder("h3", "dev", "node-2"));
        let empty = Block::new(net("10.1.0.0/26"), Some("node-3".into()));
        (pools, vec![second, first, empty])
    }

    #[test]
    fn report_counts_pools_blocks_and_allocations() {
        let (pools, blocks) = sample();
        let report = Report::build(&pools, &blocks);
        assert_eq!(report.pools[0].allocated, 3);
        assert_eq!(
            report.pools[0].blocks,
            vec![net("10.0.0.0/30"), net("10.0.0.4/30")]
        );
        assert_eq!(report.pools[0].capacity, 256);
        assert_eq!(report.pools[1].allocated, 0);
        assert_eq!(report.blocks.len(), 3);
        assert_eq!(report.blocks[0].node.as_deref(), Some("node-1"));
        assert_eq!(
            report.allocations[0].address,
            "10.0.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(report.allocations[2].namespace, "dev");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["pools"][0]["blockSize"], 30);
    }

    #[test]
    fn grouping_merges_addresses_into_ranges() {
        let (pools, blocks) = sample();
        let report = Report::build(&pools, &blocks);
        let by_namespace = report.group_by(Grouping::Namespace);
        assert_eq!(by_namespace.len(), 2);
        assert_eq!(by_namespace[1].name, "prod");
        assert_eq!(by_namespace[1].ranges, vec![net("10.0.0.0/31")]);
        assert_eq!(by_namespace[0].ranges, vec![net("10.0.0.4/32")]);
        let by_node = report.group_by(Grouping::Node);
        assert_eq!(
            by_node
                .iter()
                .map(|group| group.name.as_str())
                .collect::<Vec<_>>(),
            ["node-1", "node-2", "node-3"]
        );
        assert_eq!(by_node[2].blocks, vec![net("10.1.0.0/26")]);
        assert_eq!(by_node[2].allocated, 0);
        let by_pool = report.group_by(Grouping::Pool);
        assert_eq!(by_pool[0].allocated, 3);
        assert_eq!(by_pool[0].ranges, vec![net("10.0.0.0/31"), net("10.0.0.4/32")]);
    }

    /// Endpoints holding exactly what the blocks give each handle.
    fn endpoints_for(blocks: &[Block], handles: &[&str]) -> Vec<EndpointAddresses> {
        handles
            .iter()
            .map(|handle| EndpointAddresses {
                endpoint: format!("ns/{handle}"),
                handle: handle.to_string(),
                addresses: blocks
                    .iter()
                    .flat_map(|block| block.allocated())
                    .filter(|(_, attributes)| attributes.handle == *handle)
                    .map(|(address, _)| address)
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn check_finds_endpoints_whose_addresses_ipam_does_not_hold_for_them() {
        let (pools, blocks) = sample();
        let handles = records_for(&blocks);
        let address = |text: &str| text.parse::<IpAddr>().unwrap();
        let endpoint = |name: &str, handle: &str, addresses: &[&str]| EndpointAddresses {
            endpoint: name.into(),
            handle: handle.into(),
            addresses: addresses.iter().map(|text| address(text)).collect(),
        };
        // 10.0.0.0 is h1's, 10.0.0.1 h2's, 10.0.0.4 h3's; 10.0.0.2 is free.
        let table: Vec<(Vec<EndpointAddresses>, Vec<EndpointProblem>)> = vec![
            (
                vec![
                    endpoint("a/one", "h1", &["10.0.0.0"]),
                    endpoint("a/two", "h2", &["10.0.0.1"]),
                    endpoint("b/three", "h3", &["10.0.0.4"]),
                ],
                vec![],
            ),
            (
                vec![
                    endpoint("a/one", "h1", &["10.0.0.0"]),
                    endpoint("a/two", "h2", &["10.0.0.1", "10.0.0.2"]),
                    endpoint("b/three", "h3", &["10.0.0.4"]),
                ],
                vec![EndpointProblem::AddressNotAllocated {
                    endpoint: "a/two".into(),
                    address: address("10.0.0.2"),
                }],
            ),
            (
                vec![
                    endpoint("a/one", "h1", &["10.0.0.0"]),
                    endpoint("a/two", "h2", &["10.0.0.4"]),
                    endpoint("b/three", "h3", &["10.0.0.4"]),
                ],
                vec![
                    EndpointProblem::AddressHeldByAnotherHandle {
                        endpoint: "a/two".into(),
                        address: address("10.0.0.4"),
                        endpoint_handle: "h2".into(),
                        holder: "h3".into(),
                    },
                    EndpointProblem::AddressOfSeveralEndpoints {
                        address: address("10.0.0.4"),
                        endpoints: vec!["a/two".into(), "b/three".into()],
                    },
                ],
            ),
        ];
        for (endpoints, expected) in table {
            let result = check(&pools, &blocks, &handles, &endpoints);
            assert_eq!(result.endpoint_problems, expected, "{endpoints:?}");
            assert_eq!(result.is_clean(), expected.is_empty() && result.leaked.is_empty());
        }
        let shown = EndpointProblem::AddressNotAllocated {
            endpoint: "a/two".into(),
            address: address("10.0.0.2"),
        };
        assert_eq!(
            shown.to_string(),
            "endpoint a/two has 10.0.0.2, which IPAM has not allocated"
        );
    }

    fn records_for(blocks: &[Block]) -> BTreeMap<String, HandleRecord> {
        let mut handles: BTreeMap<String, HandleRecord> = BTreeMap::new();
        for block in blocks {
            for (_, attributes) in block.allocated() {
                *handles
                    .entry(attributes.handle.clone())
                    .or_default()
                    .blocks
                    .entry(block.cidr)
                    .or_default() += 1;
            }
        }
        handles
    }

    #[test]
    fn check_finds_leaked_addresses() {
        let (pools, blocks) = sample();
        let handles = records_for(&blocks);
        let endpoints = endpoints_for(&blocks, &["h1", "h3"]);
        let result = check(&pools, &blocks, &handles, &endpoints);
        assert_eq!(result.allocations, 3);
        assert_eq!(result.leaked.len(), 1);
        assert_eq!(result.leaked[0].handle, "h2");
        assert!(result.doubly_owned.is_empty());
        let all = endpoints_for(&blocks, &["h1", "h2", "h3"]);
        assert!(check(&pools, &blocks, &handles, &all).is_clean());
    }

    #[test]
    fn check_finds_doubly_owned_addresses() {
        let (pools, mut blocks) = sample();
        // A /29 over both /30 blocks, with 10.0.0.0 allocated again.
        let mut overlapping = Block::new(net("10.0.0.0/29"), None);
        overlapping.assign_next(holder("h9", "prod", "node-9"));
        blocks.push(overlapping);
        let handles = records_for(&blocks);
        let endpoints = endpoints_for(&blocks, &["h1", "h2", "h3", "h9"]);
        let result = check(&pools, &blocks, &handles, &endpoints);
        let overlaps = result
            .doubly_owned
            .iter()
            .filter(|problem| matches!(problem, DoubleOwnership::OverlappingBlocks { .. }))
            .count();
        assert_eq!(overlaps, 2);
        assert!(
            result
                .doubly_owned
                .contains(&DoubleOwnership::AddressInSeveralBlocks {
                    address: "10.0.0.0".parse().unwrap(),
                    blocks: vec![net("10.0.0.0/29"), net("10.0.0.0/30")],
                    handles: vec!["h9".into(), "h1".into()],
                })
        );
    }

    #[test]
    fn check_finds_handle_records_that_disagree_with_blocks() {
        let (pools, blocks) = sample();
        let mut handles = records_for(&blocks);
        // h1's record claims an address in a second block that does not hold it.
        handles
            .get_mut("h1")
            .unwrap()
            .blocks
            .insert(net("10.0.0.4/30"), 1);
        handles.remove("h3");
        let endpoints = endpoints_for(&blocks, &["h1", "h2", "h3"]);
        let result = check(&pools, &blocks, &handles, &endpoints);
        assert_eq!(
            result.doubly_owned,
            vec![
                DoubleOwnership::HandleMismatch {
                    handle: "h1".into(),
                    block: net("10.0.0.4/30"),
                    recorded: 1,
                    found: 0
                },
                DoubleOwnership::HandleMismatch {
                    handle: "h3".into(),
                    block: net("10.0.0.4/30"),
                    recorded: 0,
                    found: 1
                },
            ]
        );
    }
}
