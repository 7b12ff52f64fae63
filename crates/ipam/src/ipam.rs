//! The store-facing layer: reads records, asks the pure modules what to change, and writes the
//! change as one compare-and-swap transaction, retrying (bounded, with jitter) when another
//! writer got there first.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_api::calico::IpPool;
use sluice_api::resource::{key as resource_key, kind_prefix};
use sluice_api::{Kind, Resource};
use sluice_store::{Condition, KeyValue, Operation, Revision, Store, StoreError};

use crate::block::{AllocationAttributes, AssignError, Block, choose_new_block};
use crate::layout::{
    Affinity, BLOCK_PREFIX, HANDLE_PREFIX, HandleRecord, affinity_key, affinity_prefix, block_key,
    cidr_from_key, handle_key,
};
use crate::pools::{
    Family, Placement, allows_workloads, eligible_pools, pool_for_address, pool_of_block,
    requested_addresses, requested_pools, unusable_pool,
};
use crate::report::{CheckReport, EndpointAddresses, Report, check};
use crate::{Allocation, AssignRequest, IpamError, workload_handle};

/// Attempts per operation before giving up (Calico's `datastoreRetries` is 100 too).
const MOST_ATTEMPTS: u32 = 100;
/// The longest pause between two attempts.
const LONGEST_BACKOFF: Duration = Duration::from_millis(50);

/// IP address management over a datastore. Cheap to clone the `Arc` into; holds no state of its
/// own, so any number of `Ipam`s in any number of processes may share one store.
#[derive(Clone)]
pub struct Ipam {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Ipam").finish_non_exhaustive()
    }
}

/// An address an administrator released, and the handle that held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleasedAddress {
    pub address: IpAddr,
    pub handle: String,
}

/// The writes of one attempt and the allocations they make.
#[derive(Default)]
struct Plan {
    operations: Vec<Operation>,
    allocations: Vec<Allocation>,
}

impl Plan {
    fn put<T: Serialize>(&mut self, key: String, value: &T, condition: Condition) {
        let value = serde_json::to_vec(value).expect("IPAM records always serialize");
        self.operations.push(Operation::Put {
            key,
            value,
            condition,
        });
    }
}

/// What a pod's placement depends on, read once per attempt.
struct Context {
    pools: Vec<IpPool>,
    /// Why stored pools that cannot be used were left out.
    skipped_pools: Vec<String>,
    node_labels: BTreeMap<String, String>,
    namespace_labels: BTreeMap<String, String>,
    namespace_annotations: BTreeMap<String, String>,
}

impl Ipam {
    pub fn new(store: Arc<dyn Store>) -> Ipam {
        Ipam { store }
    }

    /// Gives the pod one address per IP family for which an eligible pool exists (IPv4 first),
    /// or the addresses its `cni.projectcalico.org/ipAddrs` annotation asks for. Assigning
    /// again with a handle that holds addresses returns those (an idempotent CNI ADD).
    pub fn assign(&self, request: &AssignRequest) -> Result<Vec<Allocation>, IpamError> {
        validate_name("handle", &request.handle)?;
        validate_name("node", &request.node)?;
        self.with_retries(|| self.try_assign(request))
    }

    /// Releases every address of `handle` and returns them. Releasing an unknown handle (or
    /// one already released) frees nothing and is not an error.
    pub fn release(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        validate_name("handle", handle)?;
        self.with_retries(|| self.try_release(handle))
    }

    /// The addresses `handle` holds, IPv4 first.
    pub fn allocations_of(&self, handle: &str) -> Result<Vec<Allocation>, IpamError> {
        validate_name("handle", handle)?;
        let Some((record, _)) = self.read::<HandleRecord>(&handle_key(handle))? else {
            return Ok(Vec::new());
        };
        let pools = self.pools()?;
        self.allocations_in(handle, &record, &pools)
    }

    /// Frees one address whoever holds it (for `sluice ipam release`). `None` if it was free.
    pub fn release_address(&self, address: IpAddr) -> Result<Option<ReleasedAddress>, IpamError> {
        self.with_retries(|| self.try_release_address(address))
    }

    /// How many addresses of the pool named `pool_name` are allocated; a pool in use is not
    /// deleted without `--force`.
    pub fn pool_in_use(&self, pool_name: &str) -> Result<usize, IpamError> {
        let pools = self.pools()?;
        let pool = pools
            .iter()
            .find(|pool| pool.metadata.name == pool_name)
            .ok_or_else(|| IpamError::PoolNotFound(pool_name.to_string()))?;
        Ok(self
            .blocks()?
            .iter()
            .filter(|(block, _)| pool.spec.cidr.0.contains(&block.cidr))
            .map(|(block, _)| block.allocated_count())
            .sum())
    }

    /// Every pool, block and allocation, for `sluice ipam show`.
    pub fn report(&self) -> Result<Report, IpamError> {
        let pools = self.pools()?;
        let blocks: Vec<Block> = self.blocks()?.into_iter().map(|(block, _)| block).collect();
        Ok(Report::build(&pools, &blocks))
    }

    /// Leaked and doubly-owned addresses, for `sluice ipam check`.
    pub fn check(&self) -> Result<CheckReport, IpamError> {
        let pools = self.pools()?;
        let blocks: Vec<Block> = self.blocks()?.into_iter().map(|(block, _)| block).collect();
        let mut handles = BTreeMap::new();
        for value in self.store.list(HANDLE_PREFIX)?.0 {
            let record: HandleRecord = decode(&value)?;
            handles.insert(value.key[HANDLE_PREFIX.len()..].to_string(), record);
        }
        let mut endpoints = Vec::new();
        for value in self.store.list(&kind_prefix(Kind::WorkloadEndpoint))?.0 {
            if let Resource::WorkloadEndpoint(endpoint) = decode_resource(&value)? {
                endpoints.push(EndpointAddresses {
                    endpoint: format!("{}/{}", endpoint.metadata.namespace(), endpoint.metadata.name),
                    handle: workload_handle(&endpoint.spec.container_id, &endpoint.spec.endpoint),
                    addresses: endpoint
                        .spec
                        .ip_networks
                        .iter()
                        .map(|network| network.0.addr())
                        .collect(),
                });
            }
        }
        Ok(check(&pools, &blocks, &handles, &endpoints))
    }

    fn try_assign(&self, request: &AssignRequest) -> Result<Vec<Allocation>, IpamError> {
        let handle_key = handle_key(&request.handle);
        // The handle is not read first: a repeated ADD is rare, and the commit's condition that
        // the handle is absent catches it for one round trip less.
        let error = match self.try_new_assignment(request, &handle_key) {
            Ok(allocations) => return Ok(allocations),
            Err(error) => error,
        };
        let conflict_elsewhere = matches!(
            &error,
            IpamError::Store(StoreError::Conflict { key, .. }) if *key != handle_key
        );
        if conflict_elsewhere {
            return Err(error);
        }
        match self.read::<HandleRecord>(&handle_key)? {
            Some((record, _)) => {
                let pools = self.pools()?;
                self.allocations_in(&request.handle, &record, &pools)
            }
            None => Err(error),
        }
    }

    fn try_new_assignment(
        &self,
        request: &AssignRequest,
        handle_key: &str,
    ) -> Result<Vec<Allocation>, IpamError> {
        let context = self.read_context(request)?;
        let placement = Placement {
            node: &request.node,
            node_labels: &context.node_labels,
            namespace: &request.namespace,
            namespace_labels: &context.namespace_labels,
            pod: &request.pod,
        };
        let attributes = AllocationAttributes {
            handle: request.handle.clone(),
            namespace: request.namespace.clone(),
            pod: request.pod.clone(),
            node: request.node.clone(),
        };
        let mut plan = Plan::default();
        if let Some(addresses) = requested_addresses(&request.pod_annotations)? {
            for address in addresses {
                self.plan_specific(address, &context.pools, request, &attributes, &mut plan)?;
            }
        } else {
            for family in Family::BOTH {
                let requested =
                    requested_pools(&request.pod_annotations, &context.namespace_annotations, family)?;
                let pools = eligible_pools(&context.pools, family, requested.as_deref(), &placement)?;
                if !pools.is_empty() {
                    self.plan_automatic(family, &pools, request, &attributes, &mut plan)?;
                }
            }
            if plan.allocations.is_empty() {
                let mut reason =
                    "no enabled Automatic IP pool that allows Workload use selects this node and namespace"
                        .to_string();
                for skipped in &context.skipped_pools {
                    reason.push_str(&format!("; {skipped}, so it was skipped"));
                }
                return Err(IpamError::NoEligiblePool {
                    namespace: request.namespace.clone(),
                    pod: request.pod.clone(),
                    node: request.node.clone(),
                    reason,
                });
            }
        }
        let mut record = HandleRecord::default();
        for allocation in &plan.allocations {
            *record.blocks.entry(allocation.block).or_default() += 1;
        }
        plan.put(handle_key.to_string(), &record, Condition::Absent);
        self.store.commit(&plan.operations)?;
        plan.allocations.sort_by_key(|allocation| allocation.address);
        Ok(plan.allocations)
    }

    /// An address from the node's blocks, else from a newly claimed block, else borrowed from
    /// another node's block (Calico's default, non-strict affinity).
    fn plan_automatic(
        &self,
        family: Family,
        pools: &[&IpPool],
        request: &AssignRequest,
        attributes: &AllocationAttributes,
        plan: &mut Plan,
    ) -> Result<(), IpamError> {
        let pool_index = |cidr: &IpNet| pools.iter().position(|pool| pool.spec.cidr.0.contains(cidr));
        let (affinities, _) = self.store.list(&affinity_prefix(&request.node))?;
        // Blocks fill in the order they were claimed, so the newest is the likeliest to have room:
        // trying it first keeps a node with many blocks from reading every full one.
        let mut affine: Vec<(usize, std::cmp::Reverse<Revision>, IpNet)> = affinities
            .iter()
            .filter_map(|value| cidr_from_key(&value.key).map(|cidr| (cidr, value.create_revision)))
            .filter_map(|(cidr, claimed)| {
                pool_index(&cidr).map(|index| (index, std::cmp::Reverse(claimed), cidr))
            })
            .collect();
        affine.sort();
        for (index, _, cidr) in affine {
            let key = block_key(cidr);
            // An affinity without its block is left for `check`; it cannot be written so.
            let Some((mut block, revision)) = self.read_block(&key)? else {
                continue;
            };
            if let Some(address) = block.assign_next(attributes.clone()) {
                plan.put(key, &block, Condition::Revision(revision));
                plan.allocations.push(allocation(address, pools[index], cidr));
                return Ok(());
            }
        }

        let (existing, _) = self.store.list(BLOCK_PREFIX)?;
        let existing_cidrs: Vec<IpNet> = existing
            .iter()
            .filter_map(|value| cidr_from_key(&value.key))
            .filter(|cidr| Family::of_network(cidr) == family)
            .collect();
        for pool in pools {
            let (cidr, block_size) = (pool.spec.cidr.0, pool.spec.effective_block_size());
            if let Some(cidr) = choose_new_block(cidr, block_size, &request.node, &existing_cidrs) {
                let mut block = Block::new(cidr, Some(request.node.clone()));
                let address = block
                    .assign_next(attributes.clone())
                    .expect("a new block has a free address");
                plan.put(block_key(cidr), &block, Condition::Absent);
                let affinity = Affinity {
                    node: request.node.clone(),
                    block: cidr,
                };
                plan.put(affinity_key(&request.node, cidr), &affinity, Condition::Absent);
                plan.allocations.push(allocation(address, pool, cidr));
                return Ok(());
            }
        }

        let mut candidates: Vec<(usize, &KeyValue, IpNet)> = existing
            .iter()
            .filter_map(|value| cidr_from_key(&value.key).map(|cidr| (value, cidr)))
            .filter_map(|(value, cidr)| pool_index(&cidr).map(|index| (index, value, cidr)))
            .collect();
        candidates.sort_by_key(|(index, _, cidr)| (*index, *cidr));
        for (index, value, cidr) in candidates {
            let mut block = decode_block(value)?;
            if let Some(address) = block.assign_next(attributes.clone()) {
                plan.put(
                    value.key.clone(),
                    &block,
                    Condition::Revision(value.modify_revision),
                );
                plan.allocations.push(allocation(address, pools[index], cidr));
                return Ok(());
            }
        }
        Err(IpamError::Exhausted {
            pools: pools
                .iter()
                .map(|pool| format!("{} ({})", pool.metadata.name, pool.spec.cidr))
                .collect(),
        })
    }

    /// A specific address: from the block that holds it, claiming that block for the node if
    /// nobody has yet (Calico's `AssignIP`).
    fn plan_specific(
        &self,
        address: IpAddr,
        pools: &[IpPool],
        request: &AssignRequest,
        attributes: &AllocationAttributes,
        plan: &mut Plan,
    ) -> Result<(), IpamError> {
        let pool = pool_for_address(pools, address).ok_or(IpamError::AddressNotInPool(address))?;
        if !allows_workloads(pool) {
            return Err(IpamError::AddressPoolNotForWorkloads {
                address,
                pool: pool.metadata.name.clone(),
            });
        }
        // Any existing block holding the address wins, even one of another block size left by a
        // deleted pool: two blocks must never cover one address.
        let (existing, _) = self.store.list(BLOCK_PREFIX)?;
        let holder = existing
            .iter()
            .find(|value| cidr_from_key(&value.key).is_some_and(|cidr| cidr.contains(&address)));
        let taken = |handle: String| IpamError::AddressInUse { address, handle };
        match holder {
            Some(value) => {
                let mut block = decode_block(value)?;
                match block.assign(address, attributes.clone()) {
                    Ok(()) => {}
                    Err(AssignError::Taken { handle }) => return Err(taken(handle)),
                    Err(AssignError::OutsideBlock) => {
                        unreachable!("the block was chosen for holding the address")
                    }
                }
                plan.put(
                    value.key.clone(),
                    &block,
                    Condition::Revision(value.modify_revision),
                );
                plan.allocations.push(allocation(address, pool, block.cidr));
            }
            None => {
                let cidr = crate::block::block_containing(address, pool.spec.effective_block_size());
                let mut block = Block::new(cidr, Some(request.node.clone()));
                block
                    .assign(address, attributes.clone())
                    .expect("a new block holds the address free");
                plan.put(block_key(cidr), &block, Condition::Absent);
                let affinity = Affinity {
                    node: request.node.clone(),
                    block: cidr,
                };
                plan.put(affinity_key(&request.node, cidr), &affinity, Condition::Absent);
                plan.allocations.push(allocation(address, pool, cidr));
            }
        }
        Ok(())
    }

    fn try_release(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let key = handle_key(handle);
        let Some((record, handle_revision)) = self.read::<HandleRecord>(&key)? else {
            return Ok(Vec::new());
        };
        let mut plan = Plan::default();
        let mut released = Vec::new();
        for cidr in record.blocks.keys() {
            let block_key = block_key(*cidr);
            let Some((mut block, revision)) = self.read_block(&block_key)? else {
                continue;
            };
            let addresses = block.release_handle(handle);
            if !addresses.is_empty() {
                plan.put(block_key, &block, Condition::Revision(revision));
                released.extend(addresses);
            }
        }
        plan.operations.push(Operation::Delete {
            key,
            condition: Condition::Revision(handle_revision),
        });
        self.store.commit(&plan.operations)?;
        released.sort();
        Ok(released)
    }

    fn try_release_address(&self, address: IpAddr) -> Result<Option<ReleasedAddress>, IpamError> {
        let mut plan = Plan::default();
        let mut released = None;
        for (mut block, revision) in self.blocks()? {
            let Some(attributes) = block.release(address) else {
                continue;
            };
            plan.put(block_key(block.cidr), &block, Condition::Revision(revision));
            let handle_key = handle_key(&attributes.handle);
            if let Some((mut record, handle_revision)) = self.read::<HandleRecord>(&handle_key)? {
                if let Some(count) = record.blocks.get_mut(&block.cidr) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        record.blocks.remove(&block.cidr);
                    }
                }
                if record.blocks.is_empty() {
                    plan.operations.push(Operation::Delete {
                        key: handle_key,
                        condition: Condition::Revision(handle_revision),
                    });
                } else {
                    plan.put(handle_key, &record, Condition::Revision(handle_revision));
                }
            }
            released = Some(ReleasedAddress {
                address,
                handle: attributes.handle,
            });
            // Overlapping blocks are a fault `check` reports; free the first holder only.
            break;
        }
        if !plan.operations.is_empty() {
            self.store.commit(&plan.operations)?;
        }
        Ok(released)
    }

    fn allocations_in(
        &self,
        handle: &str,
        record: &HandleRecord,
        pools: &[IpPool],
    ) -> Result<Vec<Allocation>, IpamError> {
        let mut allocations = Vec::new();
        for cidr in record.blocks.keys() {
            let Some((block, _)) = self.read_block(&block_key(*cidr))? else {
                continue;
            };
            for address in block.addresses_of(handle) {
                let pool = pool_of_block(pools, *cidr);
                allocations.push(Allocation {
                    address,
                    pool: pool.map(|pool| pool.metadata.name.clone()).unwrap_or_default(),
                    block: *cidr,
                    nat_outgoing: pool.is_some_and(|pool| pool.spec.nat_outgoing),
                });
            }
        }
        allocations.sort_by_key(|allocation| allocation.address);
        Ok(allocations)
    }

    fn read_context(&self, request: &AssignRequest) -> Result<Context, IpamError> {
        let (pools, skipped_pools) = self.usable_pools()?;
        let node_key = resource_key(Kind::Node, None, &request.node);
        // Only node selectors read node labels; skipping the read saves a round trip to etcd.
        // A node missing from the store has no labels: pools with a node selector skip it.
        let any_node_selector = pools.iter().any(|pool| pool.spec.node_selector.is_set());
        let node_labels = match any_node_selector
            .then(|| self.store.get(&node_key))
            .transpose()?
            .flatten()
        {
            Some(value) => match decode_resource(&value)? {
                Resource::Node(node) => node.metadata.labels,
                _ => BTreeMap::new(),
            },
            None => BTreeMap::new(),
        };
        let namespace_key = resource_key(Kind::Namespace, None, &request.namespace);
        let (namespace_labels, namespace_annotations) = match self.store.get(&namespace_key)? {
            Some(value) => match decode_resource(&value)? {
                Resource::Namespace(namespace) => {
                    (namespace.effective_labels(), namespace.metadata.annotations)
                }
                _ => (BTreeMap::new(), BTreeMap::new()),
            },
            // The API server gives every namespace this label, recorded in the store or not.
            None => (
                BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    request.namespace.clone(),
                )]),
                BTreeMap::new(),
            ),
        };
        Ok(Context {
            pools,
            skipped_pools,
            node_labels,
            namespace_labels,
            namespace_annotations,
        })
    }

    fn pools(&self) -> Result<Vec<IpPool>, IpamError> {
        self.usable_pools().map(|(pools, _)| pools)
    }

    /// The stored pools that can be used, by name, and why each of the others cannot (a pool
    /// written around `sluice apply` is not trusted).
    fn usable_pools(&self) -> Result<(Vec<IpPool>, Vec<String>), IpamError> {
        let (values, _) = self.store.list(&kind_prefix(Kind::IpPool))?;
        let mut pools = Vec::with_capacity(values.len());
        let mut skipped = Vec::new();
        for value in &values {
            match decode_resource(value) {
                Ok(Resource::IpPool(pool)) => match unusable_pool(&pool) {
                    Some(reason) => skipped.push(reason),
                    None => pools.push(pool),
                },
                Ok(_) => {}
                // Decoding checks the pool as `apply` would: one that fails is left out, never
                // the reason no pod on the node gets an address.
                Err(error) => {
                    let name = value.key.rsplit('/').next().unwrap_or(&value.key);
                    skipped.push(format!("IP pool {name}: {error}, so it was skipped"));
                }
            }
        }
        pools.sort_by(|left, right| left.metadata.name.cmp(&right.metadata.name));
        Ok((pools, skipped))
    }

    fn blocks(&self) -> Result<Vec<(Block, Revision)>, IpamError> {
        let (values, _) = self.store.list(BLOCK_PREFIX)?;
        values
            .iter()
            .map(|value| decode_block(value).map(|block| (block, value.modify_revision)))
            .collect()
    }

    fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, Revision)>, IpamError> {
        match self.store.get(key)? {
            Some(value) => Ok(Some((decode(&value)?, value.modify_revision))),
            None => Ok(None),
        }
    }

    fn read_block(&self, key: &str) -> Result<Option<(Block, Revision)>, IpamError> {
        match self.store.get(key)? {
            Some(value) => Ok(Some((decode_block(&value)?, value.modify_revision))),
            None => Ok(None),
        }
    }

    /// Runs `attempt` until it does not conflict, pausing a random, growing time in between so
    /// that writers that collided do not collide again in step.
    fn with_retries<T>(&self, mut attempt: impl FnMut() -> Result<T, IpamError>) -> Result<T, IpamError> {
        for attempt_number in 0..MOST_ATTEMPTS {
            match attempt() {
                Err(error) if error.is_conflict() => {
                    if attempt_number > 0 {
                        std::thread::sleep(backoff(attempt_number));
                    }
                }
                outcome => return outcome,
            }
        }
        Err(IpamError::TooManyConflicts {
            attempts: MOST_ATTEMPTS,
        })
    }
}

/// A random pause in [0, min(0.1 ms × 2^attempt, 50 ms)).
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_micros(100)
        .saturating_mul(1 << attempt.min(16))
        .min(LONGEST_BACKOFF);
    // `RandomState` is seeded randomly per instance: enough randomness for jitter, no dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let ceiling_micros = ceiling.as_micros().max(1) as u64;
    Duration::from_micros(random % ceiling_micros)
}

fn allocation(address: IpAddr, pool: &IpPool, block: IpNet) -> Allocation {
    Allocation {
        address,
        pool: pool.metadata.name.clone(),
        block,
        nat_outgoing: pool.spec.nat_outgoing,
    }
}

fn validate_name(what: &str, name: &str) -> Result<(), IpamError> {
    if name.is_empty() {
        return Err(IpamError::InvalidRequest(format!("the {what} is empty")));
    }
    if name.contains('/') {
        return Err(IpamError::InvalidRequest(format!(
            "the {what} `{name}` contains `/`"
        )));
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(value: &KeyValue) -> Result<T, IpamError> {
    serde_json::from_slice(&value.value).map_err(|error| IpamError::corrupt(&value.key, error))
}

fn decode_block(value: &KeyValue) -> Result<Block, IpamError> {
    let block: Block = decode(value)?;
    block
        .validate()
        .map_err(|reason| IpamError::corrupt(&value.key, reason))?;
    if cidr_from_key(&value.key) != Some(block.cidr) {
        return Err(IpamError::corrupt(
            &value.key,
            format!("the block's cidr {} does not match its key", block.cidr),
        ));
    }
    Ok(block)
}

fn decode_resource(value: &KeyValue) -> Result<Resource, IpamError> {
    Resource::decode(&value.value, value.modify_revision)
        .map_err(|reason| IpamError::corrupt(&value.key, reason))
}
