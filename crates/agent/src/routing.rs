//! The agent's routing half: which IPAM blocks exist and where, the routes they call for on
//! this node, and keeping the kernel's routes in step. Kept apart from policy on purpose: a
//! route the kernel refuses (a next hop not on any link, say) is reported and retried with
//! backoff, but never makes the node's policy count as out of sync or unhealthy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sluice_api::Resource;
use sluice_api::calico::EncapsulationMode;
use sluice_dataplane::routes::{Route, RouteBackend, RouteSyncer};
use sluice_ipam::block::Block;
use sluice_ipam::routes::{BlockPlacement, NextHop, node_routes};

use crate::metrics::Metrics;

const FIRST_RETRY: Duration = Duration::from_millis(500);
const LONGEST_RETRY: Duration = Duration::from_secs(30);

pub(crate) struct Routing {
    syncer: RouteSyncer<Box<dyn RouteBackend>>,
    /// What routing needs of every IPAM block, by key.
    blocks: BTreeMap<String, BlockPlacement>,
    /// Why the last sync failed, until one succeeds.
    pub error: Option<String>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Read the kernel's routes again this often: it drops routes itself (a link going down
    /// takes its routes with it), as Felix re-reads every 90 s.
    refresh_interval: Duration,
    refreshed: Instant,
    /// Routes in force after the last successful sync.
    pub count: usize,
    /// Nodes whose pod addresses could not be routed, to log each change once.
    unroutable_nodes: Vec<String>,
    /// Pools asking for encapsulation, to log each once.
    encapsulated_pools: BTreeSet<String>,
}

impl Routing {
    pub fn new(backend: Box<dyn RouteBackend>, refresh_interval: Duration) -> Routing {
        Routing {
            syncer: RouteSyncer::new(backend),
            blocks: BTreeMap::new(),
            error: None,
            retry_at: None,
            backoff: FIRST_RETRY,
            refresh_interval,
            refreshed: Instant::now(),
            count: 0,
            unroutable_nodes: Vec::new(),
            encapsulated_pools: BTreeSet::new(),
        }
    }

    pub fn clear_blocks(&mut self) {
        self.blocks.clear();
    }

    /// Records a block; says whether it moved a route. Most block writes only allocate an
    /// address on the block's own node, which moves none.
    pub fn store_block(&mut self, key: String, bytes: &[u8]) -> bool {
        match serde_json::from_slice::<Block>(bytes) {
            Ok(block) => {
                let placement = BlockPlacement::of(&block);
                self.blocks.insert(key, placement.clone()) != Some(placement)
            }
            Err(error) => {
                tracing::error!(%key, %error, "skipping an unreadable IPAM block");
                false
            }
        }
    }

    pub fn remove_block(&mut self, key: &str) -> bool {
        self.blocks.remove(key).is_some()
    }

    /// The next sync reads the kernel's routes again.
    pub fn resync_next(&mut self) {
        self.syncer.resync_next();
    }

    /// When a retry or a refresh is next due.
    pub fn next_due(&self) -> Instant {
        let refresh = self.refreshed + self.refresh_interval;
        self.retry_at.map_or(refresh, |retry| retry.min(refresh))
    }

    /// Brings the kernel's routes in step with the blocks and the Nodes in `resources`.
    pub fn sync<'a>(
        &mut self,
        node: &str,
        resources: impl Iterator<Item = &'a Resource> + Clone,
        metrics: &Metrics,
    ) {
        let now = Instant::now();
        if now >= self.refreshed + self.refresh_interval {
            self.syncer.resync_next();
            self.refreshed = now;
        }
        let desired = self.desired(node, resources);
        match self.syncer.sync(&desired) {
            Ok(report) => {
                if report.added + report.removed > 0 {
                    tracing::info!(
                        added = report.added,
                        removed = report.removed,
                        "routes programmed"
                    );
                }
                for conflict in &report.conflicts {
                    tracing::warn!(route = %conflict, "another route has this destination; left alone");
                }
                self.count = desired.len() - report.conflicts.len();
                metrics.routes.set(self.count as i64);
                self.error = None;
                self.retry_at = None;
                self.backoff = FIRST_RETRY;
            }
            Err(error) => {
                metrics.route_errors.inc();
                tracing::error!(%error, retry_in = ?self.backoff, "some routes could not be programmed");
                self.error = Some(error.to_string());
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(LONGEST_RETRY);
            }
        }
    }

    /// The routes this node needs, from the blocks and the Nodes' InternalIPs.
    fn desired<'a>(
        &mut self,
        node: &str,
        resources: impl Iterator<Item = &'a Resource> + Clone,
    ) -> Vec<Route> {
        let addresses: BTreeMap<String, Vec<IpAddr>> = resources
            .clone()
            .filter_map(|resource| match resource {
                Resource::Node(node) => Some((node.metadata.name.clone(), internal_addresses(node))),
                _ => None,
            })
            .collect();
        for resource in resources {
            let Resource::IpPool(pool) = resource else {
                continue;
            };
            let encapsulation = [
                ("ipipMode", pool.spec.ipip_mode),
                ("vxlanMode", pool.spec.vxlan_mode),
            ]
            .into_iter()
            .find(|(_, mode)| mode.is_some_and(|mode| mode != EncapsulationMode::Never));
            if let Some((field, mode)) = encapsulation
                && self.encapsulated_pools.insert(pool.metadata.name.clone())
            {
                tracing::warn!(
                    pool = %pool.metadata.name,
                    "{field} {mode:?} asks for encapsulation, which Sluice does not build: its blocks are routed directly, so nodes must share a link"
                );
            }
        }
        let computed = node_routes(node, self.blocks.values(), &addresses);
        if computed.unroutable_nodes != self.unroutable_nodes {
            if !computed.unroutable_nodes.is_empty() {
                tracing::warn!(
                    nodes = ?computed.unroutable_nodes,
                    "these nodes hold pod addresses but have no Node with an InternalIP of that family; their pods are not routed"
                );
            }
            self.unroutable_nodes = computed.unroutable_nodes;
        }
        computed
            .routes
            .into_iter()
            .map(|route| Route {
                destination: route.destination,
                via: match route.next_hop {
                    NextHop::Node(address) => Some(address),
                    NextHop::Blackhole => None,
                },
            })
            .collect()
    }
}

/// A Node's InternalIPs, as the kubelet reports them in `status.addresses`: on the link the
/// nodes share, unlike an ExternalIP.
fn internal_addresses(node: &sluice_api::kubernetes::Node) -> Vec<IpAddr> {
    node.status
        .addresses
        .iter()
        .filter(|address| address.address_type == "InternalIP")
        .filter_map(|address| address.address.parse::<IpAddr>().ok())
        .collect()
}
