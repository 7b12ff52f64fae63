//! The agent's loop: list, watch, compile, render, sync.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_api::resource::RESOURCE_PREFIX;
use sluice_api::{Resource, ResourceSet};
use sluice_dataplane::routes::{NetlinkRoutes, Route, RouteBackend, RouteSyncer};
use sluice_dataplane::{LocalEndpoint, Syncer, render};
use sluice_ipam::block::Block;
use sluice_ipam::layout::BLOCK_PREFIX;
use sluice_ipam::routes::{BlockPlacement, NextHop, node_routes};
use sluice_nft::Backend;
use sluice_store::{Change, Condition, Operation, Revision, Store, StoreError, Watch};

use crate::metrics::Metrics;
use crate::status::{NodeStatus, status_key};

/// One watch covers both things the agent reads: resources and IPAM blocks. Other keys under
/// it (handles, affinities, the agents' own status records) are skipped without waking it.
const WATCHED_PREFIX: &str = "/sluice/";

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node whose endpoints this agent programs.
    pub node: String,
    /// A full rebuild of the table this often, to repair anything changed behind our back.
    pub resync_interval: Duration,
    /// Whether the agent routes other nodes' pod addresses through those nodes (off when a
    /// routing daemon announces them instead).
    pub program_routes: bool,
    /// After a change, wait this long for more before programming, so a burst is one sync.
    pub batch_window: Duration,
}

impl AgentConfig {
    pub fn new(node: impl Into<String>) -> Self {
        AgentConfig {
            node: node.into(),
            resync_interval: Duration::from_secs(300),
            program_routes: true,
            batch_window: Duration::from_millis(5),
        }
    }
}

/// One node's agent.
pub struct Agent<B: Backend> {
    config: AgentConfig,
    store: Arc<dyn Store>,
    syncer: Syncer<B>,
    routes: Option<RouteSyncer<Box<dyn RouteBackend>>>,
    metrics: Arc<Metrics>,
    /// The datastore's resources by key, kept current by the watch.
    resources: BTreeMap<String, Resource>,
    /// What routing needs of every IPAM block, by key.
    blocks: BTreeMap<String, BlockPlacement>,
    /// Nodes whose pod addresses could not be routed (no address), to log each change once.
    unroutable_nodes: Vec<String>,
    /// A resource changed since the last ruleset the kernel took (block changes only move
    /// routes, and do not recompile policy).
    policy_dirty: bool,
    counts: Counts,
    revision: Revision,
    programmed_revision: Revision,
    last_error: Option<String>,
    last_full_sync: Instant,
}

impl<B: Backend> std::fmt::Debug for Agent<B> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Agent")
            .field("node", &self.config.node)
            .field("revision", &self.revision)
            .field("programmed_revision", &self.programmed_revision)
            .finish()
    }
}

impl<B: Backend> Agent<B> {
    pub fn new(config: AgentConfig, store: Arc<dyn Store>, backend: B, metrics: Arc<Metrics>) -> Self {
        Agent {
            config,
            store,
            syncer: Syncer::new(backend),
            routes: None,
            metrics,
            resources: BTreeMap::new(),
            blocks: BTreeMap::new(),
            unroutable_nodes: Vec::new(),
            policy_dirty: true,
            counts: Counts::default(),
            revision: 0,
            programmed_revision: 0,
            last_error: None,
            last_full_sync: Instant::now(),
        }
    }

    pub fn backend(&self) -> &B {
        self.syncer.backend()
    }

    /// Keeps the node's routes to other nodes' pods through `backend` (without it, the agent
    /// programs no routes).
    pub fn with_routes(mut self, backend: Box<dyn RouteBackend>) -> Self {
        self.routes = Some(RouteSyncer::new(backend));
        self
    }

    /// Reads every resource and block again (at start, and when the watch fell too far behind).
    pub fn relist(&mut self) -> Result<(), StoreError> {
        let (values, revision) = self.store.list(WATCHED_PREFIX)?;
        self.resources.clear();
        self.blocks.clear();
        self.policy_dirty = true;
        for value in values {
            self.store_value(value.key, &value.value, value.modify_revision);
        }
        self.revision = revision;
        Ok(())
    }

    /// Records a value if the agent reads its kind; says whether it did.
    fn store_value(&mut self, key: String, bytes: &[u8], revision: Revision) -> bool {
        if key.starts_with(BLOCK_PREFIX) {
            // Most block writes only allocate an address on the block's own node, which
            // changes no route: those do not wake the agent.
            return match serde_json::from_slice::<Block>(bytes) {
                Ok(block) => {
                    let placement = BlockPlacement::of(&block);
                    self.blocks.insert(key, placement.clone()) != Some(placement)
                }
                Err(error) => {
                    tracing::error!(%key, %error, "skipping an unreadable IPAM block");
                    false
                }
            };
        }
        if !key.starts_with(RESOURCE_PREFIX) {
            return false;
        }
        match Resource::decode(bytes, revision) {
            Ok(resource) => {
                self.resources.insert(key, resource);
                self.policy_dirty = true;
            }
            // Only Sluice writes these keys, after validation; an unreadable value is skipped
            // and reported rather than stopping the node's enforcement.
            Err(error) => tracing::error!(%key, %error, "skipping an unreadable datastore value"),
        }
        true
    }

    /// Takes one change from the watch; says whether it matters to the node's program.
    fn apply_change(&mut self, change: Change) -> bool {
        let revision = change.revision();
        let relevant = match change {
            Change::Put(value) => self.store_value(value.key, &value.value, value.modify_revision),
            Change::Delete { key, .. } => {
                let resource = self.resources.remove(&key).is_some();
                self.policy_dirty |= resource;
                resource || self.blocks.remove(&key).is_some()
            }
        };
        if relevant {
            self.revision = self.revision.max(revision);
        }
        relevant
    }

    /// The routes this node needs, from the blocks and the Nodes' addresses.
    fn desired_routes(&mut self) -> Vec<Route> {
        let addresses: BTreeMap<String, Vec<IpAddr>> = self
            .resources
            .values()
            .filter_map(|resource| match resource {
                Resource::Node(node) => Some((node.metadata.name.clone(), node_addresses(node))),
                _ => None,
            })
            .collect();
        let computed = node_routes(&self.config.node, self.blocks.values(), &addresses);
        if computed.unreachable_nodes != self.unroutable_nodes {
            if !computed.unreachable_nodes.is_empty() {
                tracing::warn!(
                    nodes = ?computed.unreachable_nodes,
                    "these nodes hold pod addresses but their Node has no InternalIP of that family; their pods are not routed"
                );
            }
            self.unroutable_nodes = computed.unreachable_nodes;
        }
        computed
            .routes
            .into_iter()
            .map(|route| Route {
                destination: route.destination,
                via: match route.next_hop {
                    NextHop::Node { address, .. } => Some(address),
                    NextHop::Blackhole => None,
                },
            })
            .collect()
    }

    /// Brings the node's routes in step; `None` when the agent programs no routes.
    fn program_routes(&mut self) -> Option<Result<usize, String>> {
        self.routes.as_ref()?;
        let desired = self.desired_routes();
        let routes = self.routes.as_mut()?;
        let result = match routes.sync(&desired) {
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
                self.metrics.routes.set(desired.len() as i64);
                Ok(desired.len())
            }
            Err(error) => {
                self.metrics.route_errors.inc();
                tracing::error!(%error, "some routes could not be programmed");
                Err(format!("routes: {error}"))
            }
        };
        Some(result)
    }

    /// The pods of this node that the CNI plugin wired, with their host interfaces.
    fn local_endpoints(&self) -> Vec<LocalEndpoint> {
        self.resources
            .values()
            .filter_map(|resource| match resource {
                Resource::WorkloadEndpoint(endpoint)
                    if endpoint.spec.node == self.config.node && !endpoint.spec.interface_name.is_empty() =>
                {
                    Some(LocalEndpoint {
                        namespace: endpoint.metadata.namespace().to_string(),
                        name: endpoint.spec.pod.clone(),
                        interface: endpoint.spec.interface_name.clone(),
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Compiles the current resources and programs the kernel (when a resource changed since
    /// the last successful sync, or a resync is due), then brings the routes in step; records
    /// the outcome in the metrics and the node's status record.
    pub fn program(&mut self, change_seen: Instant) -> Result<(), String> {
        let resync = self.last_full_sync.elapsed() >= self.config.resync_interval;
        if resync {
            self.syncer.resync_next();
            if let Some(routes) = &mut self.routes {
                routes.resync_next();
            }
        }
        let policy = if self.policy_dirty || resync {
            self.program_policy(change_seen)
        } else {
            Ok(())
        };
        let routes = self.program_routes();
        let errors: Vec<String> = [policy.err(), routes.clone().and_then(Result::err)]
            .into_iter()
            .flatten()
            .collect();
        let outcome = if errors.is_empty() {
            self.programmed_revision = self.revision;
            self.last_error = None;
            self.metrics.set_healthy(true);
            Ok(())
        } else {
            let message = errors.join("; ");
            self.last_error = Some(message.clone());
            self.metrics.set_healthy(false);
            Err(message)
        };
        self.counts.routes = routes.and_then(Result::ok).unwrap_or(0);
        self.write_status(self.counts);
        outcome
    }

    /// The policy half of [`Agent::program`]: compile, render, one nft transaction.
    fn program_policy(&mut self, change_seen: Instant) -> Result<(), String> {
        let set: ResourceSet = self.resources.values().cloned().collect();
        let dataplane = sluice_policy::compile(&set);
        let local = self.local_endpoints();
        let ruleset = render(&dataplane, &local);
        self.counts = Counts {
            local_endpoints: local.len(),
            rules: ruleset.rule_count(),
            set_elements: ruleset.element_count(),
            routes: self.counts.routes,
        };
        match self.syncer.sync(&ruleset) {
            Ok(report) => {
                self.policy_dirty = false;
                self.metrics
                    .sync_seconds
                    .observe(change_seen.elapsed().as_secs_f64());
                if report.operations > 0 {
                    self.metrics
                        .transaction_operations
                        .observe(report.operations as f64);
                    tracing::info!(
                        revision = self.revision,
                        operations = report.operations,
                        full = report.full,
                        "programmed"
                    );
                }
                if report.full {
                    self.metrics.full_syncs.inc();
                    self.last_full_sync = Instant::now();
                }
                self.metrics.rules.set(ruleset.rule_count() as i64);
                self.metrics.set_elements.set(ruleset.element_count() as i64);
                self.metrics.local_endpoints.set(local.len() as i64);
                Ok(())
            }
            Err(error) => {
                self.metrics.sync_errors.inc();
                let message = error.to_string();
                tracing::error!(revision = self.revision, error = %message, "the kernel refused the ruleset; the previous one stays in force");
                Err(message)
            }
        }
    }

    fn write_status(&self, counts: Counts) {
        let status = NodeStatus {
            node: self.config.node.clone(),
            programmed_revision: self.programmed_revision,
            seen_revision: self.revision,
            in_sync: self.last_error.is_none(),
            error: self.last_error.clone(),
            local_endpoints: counts.local_endpoints,
            rules: counts.rules,
            set_elements: counts.set_elements,
            routes: counts.routes,
            updated: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0),
        };
        let value = serde_json::to_vec(&status).expect("status serializes");
        let write = [Operation::Put {
            key: status_key(&self.config.node),
            value,
            condition: Condition::Any,
        }];
        if let Err(error) = self.store.commit(&write) {
            self.metrics.datastore_errors.inc();
            tracing::warn!(%error, "could not record the node status");
        }
    }

    /// Runs until `stop` is set: list, program, then follow the watch.
    pub fn run_until(&mut self, stop: &AtomicBool) {
        let mut backoff = Duration::from_millis(100);
        'relist: while !stop.load(Ordering::Relaxed) {
            if let Err(error) = self.relist() {
                self.datastore_trouble(&error, &mut backoff);
                continue;
            }
            let _ = self.program(Instant::now());
            let mut watch: Box<dyn Watch> = match self.store.watch(WATCHED_PREFIX, self.revision) {
                Ok(watch) => watch,
                Err(error) => {
                    self.datastore_trouble(&error, &mut backoff);
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            while !stop.load(Ordering::Relaxed) {
                match watch.next(Duration::from_millis(500)) {
                    Ok(Some(change)) => {
                        let seen = Instant::now();
                        if !self.apply_change(change) {
                            continue;
                        }
                        // Take the rest of a burst before programming.
                        let deadline = seen + self.config.batch_window;
                        loop {
                            let left = deadline.saturating_duration_since(Instant::now());
                            match watch.next(left) {
                                Ok(Some(change)) => {
                                    self.apply_change(change);
                                }
                                Ok(None) => break,
                                Err(error) => {
                                    self.datastore_trouble(&error, &mut backoff);
                                    continue 'relist;
                                }
                            }
                        }
                        let _ = self.program(seen);
                    }
                    Ok(None) => {
                        // Idle: retry a failed sync, and rebuild the table when it is due.
                        if self.last_error.is_some()
                            || self.last_full_sync.elapsed() >= self.config.resync_interval
                        {
                            let _ = self.program(Instant::now());
                        }
                    }
                    Err(error) => {
                        self.datastore_trouble(&error, &mut backoff);
                        continue 'relist;
                    }
                }
            }
        }
    }

    fn datastore_trouble(&self, error: &StoreError, backoff: &mut Duration) {
        self.metrics.datastore_errors.inc();
        tracing::warn!(%error, "datastore trouble; listing again");
        std::thread::sleep(*backoff);
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }
}

/// What the status record counts.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    local_endpoints: usize,
    rules: usize,
    set_elements: usize,
    routes: usize,
}

/// A node's address for routing: its InternalIPs, then its ExternalIPs, as Kubernetes lists
/// them in `status.addresses`.
fn node_addresses(node: &sluice_api::kubernetes::Node) -> Vec<IpAddr> {
    let of_type = |wanted: &'static str| {
        node.status
            .addresses
            .iter()
            .filter(move |address| address.address_type == wanted)
            .filter_map(|address| address.address.parse::<IpAddr>().ok())
    };
    of_type("InternalIP").chain(of_type("ExternalIP")).collect()
}

/// Runs an agent with the real `nft` (and, unless told not to, netlink routes) in the
/// process's own network namespace until the process is stopped.
pub fn run(config: AgentConfig, store: Arc<dyn Store>, metrics_address: Option<&str>) -> Result<(), String> {
    let backend = sluice_nft::CommandBackend::new().map_err(|error| error.to_string())?;
    let metrics = Metrics::new();
    if let Some(address) = metrics_address {
        let bound = metrics.serve(address)?;
        tracing::info!(%bound, "serving /metrics and /healthz");
    }
    let program_routes = config.program_routes;
    let mut agent = Agent::new(config, store, backend, metrics);
    if program_routes {
        let routes = NetlinkRoutes::open().map_err(|error| error.to_string())?;
        agent = agent.with_routes(Box::new(routes));
    }
    agent.run_until(&AtomicBool::new(false));
    Ok(())
}
