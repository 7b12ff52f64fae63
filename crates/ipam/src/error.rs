use std::net::IpAddr;

use sluice_store::StoreError;

/// Everything IPAM reports to its callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored IPAM value or resource could not be read.
    #[error("the value at {key} is not valid: {reason}")]
    Corrupt { key: String, reason: String },
    /// The request itself is malformed (empty handle, node name with a `/`, …).
    #[error("invalid IPAM request: {0}")]
    InvalidRequest(String),
    /// A `cni.projectcalico.org/…` annotation could not be used.
    #[error("annotation {annotation}: {reason}")]
    Annotation { annotation: String, reason: String },
    /// A requested pool (by name or CIDR) does not exist or is disabled.
    #[error("the given pool ({0}) does not exist, or is not enabled")]
    UnknownPool(String),
    /// No enabled pool may be used for this pod.
    #[error("no IP pool can be used for pod {namespace}/{pod} on node {node}: {reason}")]
    NoEligiblePool {
        namespace: String,
        pod: String,
        node: String,
        reason: String,
    },
    /// Every address of every eligible pool is taken.
    #[error("every eligible pool is exhausted: {}", pools.join(", "))]
    Exhausted {
        /// `name (cidr)` of each pool tried.
        pools: Vec<String>,
    },
    /// A specific address lies in no enabled pool.
    #[error("address {0} is in no enabled IP pool")]
    AddressNotInPool(IpAddr),
    /// A specific address is in a pool that does not allow workloads.
    #[error("address {address} is in IP pool {pool}, which does not allow Workload use")]
    AddressPoolNotForWorkloads { address: IpAddr, pool: String },
    /// A specific address is already allocated.
    #[error("address {address} is already allocated (handle {handle})")]
    AddressInUse { address: IpAddr, handle: String },
    /// A pool name `pool_in_use` was asked about.
    #[error("IP pool {0} does not exist")]
    PoolNotFound(String),
    /// Other writers kept changing the same keys.
    #[error("gave up after {attempts} attempts that conflicted with concurrent IPAM changes")]
    TooManyConflicts { attempts: u32 },
}

impl IpamError {
    pub(crate) fn corrupt(key: &str, reason: impl std::fmt::Display) -> IpamError {
        IpamError::Corrupt {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, IpamError::Store(StoreError::Conflict { .. }))
    }
}
