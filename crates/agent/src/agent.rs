//! The agent's loop: list, watch, compile, render, sync.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sluice_api::resource::RESOURCE_PREFIX;
use sluice_api::{Resource, ResourceSet};
use sluice_dataplane::routes::{NetlinkRoutes, RouteBackend};
use sluice_dataplane::{DnsRender, FlowLogs, LocalEndpoint, Syncer, programmable_endpoints, render_with_l7};
use sluice_ipam::layout::BLOCK_PREFIX;
use sluice_nft::Backend;
use sluice_store::{Change, Condition, Operation, Revision, Store, StoreError, Watch};

use crate::dns::{DnsFlags, DnsShell};
use crate::flows::{FlowLogFlags, FlowShell};
use crate::gateway::{DEFAULT_TUNNEL_MTU, GatewayShell, GatewayUpdate};
use crate::metrics::Metrics;
use crate::proxy::supervisor::ProxySupervisor;
use crate::routing::Routing;
use crate::status::{HEARTBEAT_INTERVAL, NodeStatus, status_key};

/// One watch covers both things the agent reads, so it sees them in the store's order:
/// resources and IPAM blocks. The other keys under it (handles, affinities) are skipped without
/// waking it; the agents' status records live outside it.
const WATCHED_PREFIX: &str = "/sluice/";
/// How soon a sync the kernel refused is tried again.
const POLICY_RETRY: Duration = Duration::from_millis(500);

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
    /// Read the kernel's routes again this often, to restore any it dropped.
    pub route_refresh_interval: Duration,
    /// After a change, wait this long for more before programming, so a burst is one sync.
    pub batch_window: Duration,
    /// Rewrite the status record at least this often, so its age tells a live agent from a
    /// dead one.
    pub heartbeat_interval: Duration,
    /// Whether the agent routes egress gateway clients (`sluice agent --no-egress-gateways`
    /// turns it off; FelixConfiguration's `egressIPSupport` decides who is a client).
    pub egress_gateways: bool,
    /// The MTU of the tunnel device to gateways: the path's less VXLAN's 50 bytes.
    pub tunnel_mtu: u32,
    /// Where the agent serves its flow log, as its status record names it for `sluice flows`.
    pub flow_endpoints: Vec<String>,
    /// The L7 proxy's port (`None`: no proxy; L7 rules never match).
    pub l7_proxy_port: Option<u16>,
    /// This process is the agent's L7 proxy child, not the agent.
    pub l7_proxy_child: bool,
    /// The L7 proxy's bounds on open connections.
    pub l7_proxy_limits: crate::proxy::ConnectionLimits,
}

impl AgentConfig {
    pub fn new(node: impl Into<String>) -> Self {
        AgentConfig {
            node: node.into(),
            resync_interval: Duration::from_secs(300),
            program_routes: true,
            route_refresh_interval: Duration::from_secs(90),
            batch_window: Duration::from_millis(5),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            egress_gateways: true,
            tunnel_mtu: DEFAULT_TUNNEL_MTU,
            flow_endpoints: Vec::new(),
            l7_proxy_port: None,
            l7_proxy_child: false,
            l7_proxy_limits: crate::proxy::ConnectionLimits::default(),
        }
    }
}

/// One node's agent.
pub struct Agent<B: Backend> {
    config: AgentConfig,
    store: Arc<dyn Store>,
    syncer: Syncer<B>,
    /// `None` when the agent programs no routes.
    routing: Option<Routing>,
    /// `None` when the agent learns nothing from DNS (tests with a fake kernel).
    dns: Option<DnsShell>,
    dns_flags: DnsFlags,
    /// `None` when the agent routes no egress gateway clients.
    gateways: Option<GatewayShell>,
    /// The flow log's shell and the logging the ruleset carries for it.
    flows: Option<(FlowShell, FlowLogs)>,
    /// The L7 proxy, when the agent runs one.
    proxy: Option<ProxySupervisor>,
    metrics: Arc<Metrics>,
    /// The datastore's resources by key, kept current by the watch.
    resources: BTreeMap<String, Resource>,
    /// A resource changed since the last ruleset the kernel took (block changes only move
    /// routes, and do not recompile policy).
    policy_dirty: bool,
    counts: Counts,
    /// Local endpoints left out of the ruleset and why, to log each change once.
    skipped_endpoints: Vec<String>,
    /// Stored objects that do not decode or validate, by key, with why; left out of policy.
    left_out_objects: BTreeMap<String, String>,
    revision: Revision,
    programmed_revision: Revision,
    /// Why the kernel refused the last ruleset, until it takes one.
    last_error: Option<String>,
    /// Set while nothing in the datastore names the node (likely a mistyped `--node`).
    warning: Option<String>,
    last_status_written: Instant,
    last_attempt: Instant,
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
            routing: None,
            dns: None,
            dns_flags: DnsFlags::default(),
            gateways: None,
            flows: None,
            proxy: None,
            metrics,
            resources: BTreeMap::new(),
            policy_dirty: true,
            counts: Counts::default(),
            skipped_endpoints: Vec::new(),
            left_out_objects: BTreeMap::new(),
            revision: 0,
            programmed_revision: 0,
            last_error: None,
            warning: None,
            last_status_written: Instant::now(),
            last_attempt: Instant::now(),
            last_full_sync: Instant::now(),
        }
    }

    pub fn backend(&self) -> &B {
        self.syncer.backend()
    }

    /// Keeps the node's routes to other nodes' pods through `backend` (without it, the agent
    /// programs no routes).
    pub fn with_routes(mut self, backend: Box<dyn RouteBackend>) -> Self {
        self.routing = Some(Routing::new(backend, self.config.route_refresh_interval));
        self
    }

    /// Learns domain names from DNS answers held in the kernel's queue and programs what was
    /// learned (see [`DnsShell`]); `flags` fill what FelixConfiguration leaves unset.
    pub fn with_dns(mut self, flags: DnsFlags) -> Result<Self, String> {
        let settings = crate::dns::configuration::settings(&[], &self.config.node, &flags);
        self.dns = Some(DnsShell::new(
            &self.config.node,
            settings,
            flags.queue,
            self.metrics.clone(),
        )?);
        self.dns_flags = flags;
        Ok(self)
    }

    /// Routes the node's egress gateway clients through their gateways with `backend`'s
    /// rules, tables and tunnel device, probing the gateways (see [`GatewayShell`]).
    pub fn with_gateways<
        R: sluice_gateway::routing::RoutingBackend + 'static,
        P: crate::gateway::PinWriter + 'static,
    >(
        mut self,
        backend: R,
        pin_writer: P,
    ) -> Self {
        self.gateways = Some(GatewayShell::start(
            &self.config.node,
            backend,
            pin_writer,
            self.store.clone(),
            self.metrics.clone(),
            self.config.tunnel_mtu,
        ));
        self
    }

    /// Runs the L7 proxy (a child process, see [`crate::proxy`]) on `port` once some local
    /// endpoint has an egress rule with an HTTP or TLS match, and redirects such connections
    /// to it.
    pub fn with_l7_proxy(mut self, port: u16) -> Self {
        self.proxy = Some(ProxySupervisor::new(port, self.metrics.clone()));
        self
    }

    /// The L7 proxy's process id, while it runs.
    pub fn l7_proxy_pid(&self) -> Option<u32> {
        self.proxy.as_ref().and_then(ProxySupervisor::pid)
    }

    /// Records every connection that starts at, or is denied at, a local endpoint (see
    /// [`FlowShell`]): the ruleset logs each decision to NFLOG group `flags.group`, which the
    /// shell reads with dumps of conntrack's table from this network namespace. On an error the agent
    /// is unchanged (it runs on without flow logs).
    fn start_flow_logs(&mut self, flags: &FlowLogFlags) -> Result<(), String> {
        let kernel = crate::flows::open_kernel(flags.group, None, flags.conntrack_events)?;
        let shell = FlowShell::start(
            &self.config.node,
            flags,
            kernel.log,
            kernel.events,
            kernel.dump,
            self.metrics.clone(),
        )?;
        // Destinations named by what the pod resolved, when it learns names.
        if let Some(dns) = &self.dns {
            shell.set_domain_names(Box::new(dns.learned_names()));
        }
        self.config.flow_endpoints = shell.endpoints();
        let logs = FlowLogs {
            group: flags.group,
            deny_rate_per_second: flags.deny_rate,
        };
        self.flows = Some((shell, logs));
        Ok(())
    }

    /// The FelixConfigurations in the datastore.
    fn felix_configurations(&self) -> Vec<sluice_api::kept::FelixConfiguration> {
        self.resources
            .values()
            .filter_map(|resource| match resource {
                Resource::FelixConfiguration(configuration) => Some(configuration.clone()),
                _ => None,
            })
            .collect()
    }

    /// Reads every resource and block again (at start, and when the watch fell too far behind).
    pub fn relist(&mut self) -> Result<(), StoreError> {
        let (values, revision) = self.store.list(WATCHED_PREFIX)?;
        self.resources.clear();
        self.left_out_objects.clear();
        if let Some(routing) = &mut self.routing {
            routing.clear_blocks();
        }
        self.policy_dirty = true;
        for value in values {
            self.store_value(value.key, &value.value, value.modify_revision);
        }
        self.revision = revision;
        Ok(())
    }

    /// Records a value if the agent reads its kind; says whether it changes what the agent
    /// programs (a block write that moves no route does not).
    fn store_value(&mut self, key: String, bytes: &[u8], revision: Revision) -> bool {
        if key.starts_with(BLOCK_PREFIX) {
            return self
                .routing
                .as_mut()
                .is_some_and(|routing| routing.store_block(key, bytes));
        }
        if !key.starts_with(RESOURCE_PREFIX) {
            return false;
        }
        match Resource::decode(bytes, revision) {
            Ok(resource) => {
                self.left_out_objects.remove(&key);
                self.resources.insert(key, resource);
            }
            // A value that bypassed `sluice apply` and does not decode or validate is left out
            // (the older version under its key too) and reported, rather than reaching code
            // that assumes valid objects or stopping the node's enforcement.
            Err(error) => {
                tracing::error!(%key, %error, "leaving out an invalid datastore value");
                self.resources.remove(&key);
                self.left_out_objects.insert(key, error);
            }
        }
        self.policy_dirty = true;
        true
    }

    /// Takes one change from the watch; says whether it matters to the node's program.
    fn apply_change(&mut self, change: Change) -> bool {
        let revision = change.revision();
        let relevant = match change {
            Change::Put(value) => self.store_value(value.key, &value.value, value.modify_revision),
            Change::Delete { key, .. } => {
                let resource =
                    self.resources.remove(&key).is_some() | self.left_out_objects.remove(&key).is_some();
                self.policy_dirty |= resource;
                resource
                    || self
                        .routing
                        .as_mut()
                        .is_some_and(|routing| routing.remove_block(&key))
            }
        };
        if relevant {
            self.revision = self.revision.max(revision);
        }
        relevant
    }

    /// The pods of this node that the CNI plugin wired, with their host interfaces; those in
    /// `gateways` are egress gateways.
    fn local_endpoints(&self, gateways: &BTreeSet<sluice_gateway::PodId>) -> Vec<LocalEndpoint> {
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
                        egress_gateway: gateways.contains(&sluice_gateway::PodId::new(
                            endpoint.metadata.namespace(),
                            &endpoint.spec.pod,
                        )),
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Compiles the current resources and programs the kernel (when a resource changed since
    /// the last ruleset the kernel took, or a rebuild is due), then brings the routes in step;
    /// records the outcome in the metrics and the node's status record. The result is the
    /// policy's: route trouble is reported on its own (see [`Routing`]).
    pub fn program(&mut self, change_seen: Instant) -> Result<(), String> {
        self.last_attempt = Instant::now();
        let resync = self.last_full_sync.elapsed() >= self.config.resync_interval;
        if resync {
            self.syncer.resync_next();
            if let Some(routing) = &mut self.routing {
                routing.resync_next();
            }
        }
        let outcome = if self.policy_dirty || resync {
            self.program_policy(change_seen)
        } else {
            Ok(())
        };
        match &outcome {
            Ok(()) => {
                self.programmed_revision = self.revision;
                self.last_error = None;
                self.metrics.set_healthy(true);
            }
            Err(message) => {
                self.last_error = Some(message.clone());
                self.metrics.set_healthy(false);
            }
        }
        self.sync_routes();
        outcome
    }

    /// Routes only, then the status record.
    fn sync_routes(&mut self) {
        if let Some(routing) = &mut self.routing {
            routing.sync(&self.config.node, self.resources.values(), &self.metrics);
        }
        self.write_status(false);
    }

    /// Does what is due without a change: retry a refused ruleset, rebuild the table, retry
    /// or refresh the routes. Returns when the next such thing is due.
    fn run_due_work(&mut self) -> Instant {
        let now = Instant::now();
        if now >= self.policy_due() {
            let _ = self.program(now);
        } else if self
            .routing
            .as_ref()
            .is_some_and(|routing| now >= routing.next_due())
        {
            self.sync_routes();
        } else if now >= self.heartbeat_due() {
            self.write_status(false);
        }
        if let Some(dns) = &mut self.dns
            && now >= dns.next_due()
        {
            dns.tick(self.store.as_ref());
        }
        if let Some(proxy) = &mut self.proxy {
            proxy.check();
        }
        let mut policy = self.policy_due().min(self.heartbeat_due());
        if let Some(dns) = &self.dns {
            policy = policy.min(dns.next_due());
        }
        self.routing
            .as_ref()
            .map_or(policy, |routing| policy.min(routing.next_due()))
    }

    fn heartbeat_due(&self) -> Instant {
        self.last_status_written + self.config.heartbeat_interval
    }

    /// When the ruleset is next due: a retry while the kernel refuses it (a failed rebuild
    /// included, at the same pace), else the periodic rebuild.
    fn policy_due(&self) -> Instant {
        if self.last_error.is_some() {
            self.last_attempt + POLICY_RETRY
        } else {
            self.last_full_sync + self.config.resync_interval
        }
    }

    /// The policy half of [`Agent::program`]: compile, render, one nft transaction.
    fn program_policy(&mut self, change_seen: Instant) -> Result<(), String> {
        let started = Instant::now();
        let set: ResourceSet = self.resources.values().cloned().collect();
        let dataplane = sluice_policy::compile(&set);
        let compiled = Instant::now();
        let gateway_inputs = sluice_gateway::Inputs::from_resources(&set);
        let gateway_pods = sluice_gateway::gateway_pods(&gateway_inputs);
        // Gateway routing does not wait on the ruleset: its shell plans on its own thread.
        if let Some(gateways) = &self.gateways {
            gateways.update(GatewayUpdate::new(gateway_inputs, &set, self.revision));
        }
        let (local, skipped) = programmable_endpoints(&self.local_endpoints(&gateway_pods));
        let skipped: Vec<String> = skipped
            .into_iter()
            .map(|(endpoint, why)| format!("{}/{}: {why}", endpoint.namespace, endpoint.name))
            .collect();
        if skipped != self.skipped_endpoints {
            for line in &skipped {
                tracing::warn!(endpoint = %line, "a workload endpoint of this node is not programmed");
            }
            self.skipped_endpoints = skipped;
        }
        self.check_node_is_known();
        let configurations = self.felix_configurations();
        // The flow log learns the new ids before the kernel logs them.
        if let Some((flows, _)) = &self.flows {
            flows.update(&dataplane, &set);
        }
        let flow_logs = self.flows.as_ref().map(|(_, logs)| *logs);
        let redirect = self.proxy.as_ref().map(|proxy| *proxy.redirect());
        let ruleset = match &mut self.dns {
            Some(dns) => {
                let settings =
                    crate::dns::configuration::settings(&configurations, &self.config.node, &self.dns_flags);
                render_with_l7(
                    &dataplane,
                    &local,
                    &dns.before_render(&dataplane, &local, settings),
                    flow_logs,
                    redirect.as_ref(),
                )
            }
            None => render_with_l7(
                &dataplane,
                &local,
                &DnsRender::default(),
                flow_logs,
                redirect.as_ref(),
            ),
        };
        let rendered = Instant::now();
        self.counts = Counts {
            local_endpoints: local.len(),
            rules: ruleset.rule_count(),
            set_elements: ruleset.element_count(),
        };
        let result = self.syncer.sync(&ruleset);
        let seconds = |from: Instant, to: Instant| (to - from).as_secs_f64();
        let finished = Instant::now();
        self.metrics.compile_seconds.observe(seconds(started, compiled));
        self.metrics.render_seconds.observe(seconds(compiled, rendered));
        // Only syncs that ran `nft` (or tried to): a sync with nothing to change runs none.
        if result.as_ref().map_or(true, |report| report.operations > 0) {
            self.metrics.kernel_seconds.observe(seconds(rendered, finished));
        }
        match result {
            Ok(report) => {
                self.policy_dirty = false;
                self.metrics
                    .sync_seconds
                    .observe(change_seen.elapsed().as_secs_f64());
                if report.operations > 0 {
                    self.metrics
                        .transaction_operations
                        .observe(report.operations as f64);
                    let milliseconds = |from: Instant, to: Instant| (to - from).as_millis();
                    tracing::info!(
                        revision = self.revision,
                        operations = report.operations,
                        full = report.full,
                        since_change_ms = milliseconds(change_seen, finished),
                        compile_ms = milliseconds(started, compiled),
                        render_ms = milliseconds(compiled, rendered),
                        kernel_ms = milliseconds(rendered, finished),
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
                if let Some(dns) = &mut self.dns {
                    dns.after_sync(true, report.full);
                }
                if let Some(proxy) = &mut self.proxy {
                    let (revision, resources) = (self.revision, &self.resources);
                    let redirects = ruleset.redirects_to_proxy();
                    if let Err(error) = proxy.after_sync(redirects, || {
                        crate::proxy::snapshot::encode(revision, resources.values())
                    }) {
                        tracing::error!(%error, "the L7 proxy's routing: redirected connections are dropped until it is in place");
                    }
                }
                Ok(())
            }
            Err(error) => {
                if let Some(dns) = &mut self.dns {
                    dns.after_sync(false, false);
                }
                self.metrics.sync_errors.inc();
                let message = error.to_string();
                tracing::error!(revision = self.revision, error = %message, "the kernel refused the ruleset; the previous one stays in force");
                Err(message)
            }
        }
    }

    /// Warns, once per change, while neither a Node resource nor a workload endpoint names
    /// this node: a mistyped `--node` would otherwise program an empty ruleset in silence.
    fn check_node_is_known(&mut self) {
        let node = self.config.node.as_str();
        let known = self.resources.values().any(|resource| match resource {
            Resource::Node(candidate) => candidate.metadata.name == node,
            Resource::WorkloadEndpoint(endpoint) => endpoint.spec.node == node,
            _ => false,
        });
        let warning = (!known).then(|| {
            format!(
                "no Node `{node}` and no workload endpoint on it in the datastore: check --node; no pod of this node is programmed"
            )
        });
        if warning != self.warning {
            match &warning {
                Some(message) => tracing::warn!("{message}"),
                None => tracing::info!(node, "the datastore now names this node"),
            }
            self.warning = warning;
        }
    }

    /// Writes the node's status record; `stopped` says the agent is stopping.
    fn write_status(&mut self, stopped: bool) {
        self.last_status_written = Instant::now();
        let counts = self.counts;
        let status = NodeStatus {
            node: self.config.node.clone(),
            programmed_revision: self.programmed_revision,
            seen_revision: self.revision,
            in_sync: self.last_error.is_none(),
            error: self.last_error.clone(),
            warning: self.warning.clone(),
            local_endpoints: counts.local_endpoints,
            rules: counts.rules,
            set_elements: counts.set_elements,
            routes: self.routing.as_ref().map_or(0, |routing| routing.count),
            route_error: self.routing.as_ref().and_then(|routing| routing.error.clone()),
            unprogrammed_endpoints: self.skipped_endpoints.clone(),
            left_out_objects: self
                .left_out_objects
                .iter()
                .map(|(key, error)| format!("{key}: {error}"))
                .collect(),
            updated: SystemTime::now(),
            heartbeat_seconds: self.config.heartbeat_interval.as_secs().max(1),
            stopped,
            flow_endpoints: self.config.flow_endpoints.clone(),
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

    /// Runs until `stop` is set: list, program, then follow the watch. A sync under way when
    /// it is set is finished; then the status record says the agent stopped. Nothing in the
    /// kernel is removed.
    pub fn run_until(&mut self, stop: &AtomicBool) {
        let mut backoff = Duration::from_millis(100);
        'relist: while !stop.load(Ordering::Relaxed) {
            if let Err(error) = self.relist() {
                self.datastore_trouble(&error, &mut backoff, stop);
                continue;
            }
            let _ = self.program(Instant::now());
            let mut watch: Box<dyn Watch> = match self.store.watch(WATCHED_PREFIX, self.revision) {
                Ok(watch) => watch,
                Err(error) => {
                    self.datastore_trouble(&error, &mut backoff, stop);
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let mut next_due = self.run_due_work();
            while !stop.load(Ordering::Relaxed) {
                let wait = next_due
                    .saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(1), Duration::from_millis(500));
                match watch.next(wait) {
                    Ok(Some(change)) => {
                        let seen = Instant::now();
                        if self.apply_change(change) {
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
                                        self.datastore_trouble(&error, &mut backoff, stop);
                                        continue 'relist;
                                    }
                                }
                            }
                            let _ = self.program(seen);
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        self.datastore_trouble(&error, &mut backoff, stop);
                        continue 'relist;
                    }
                }
                // Checked after every event, so a stream of skipped ones cannot starve it.
                next_due = self.run_due_work();
            }
        }
        if let Some(dns) = &mut self.dns {
            dns.shutdown();
        }
        if let Some((flows, _)) = self.flows.take() {
            flows.stop();
        }
        if let Some(gateways) = &mut self.gateways {
            gateways.shutdown();
        }
        if let Some(proxy) = &mut self.proxy {
            proxy.stop();
        }
        self.write_status(true);
    }

    /// Counts and logs the trouble, then waits out the backoff (cut short by `stop`).
    fn datastore_trouble(&self, error: &StoreError, backoff: &mut Duration, stop: &AtomicBool) {
        self.metrics.datastore_errors.inc();
        tracing::warn!(%error, "datastore trouble; listing again");
        let until = Instant::now() + *backoff;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }
}

/// What the status record counts of the last ruleset.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    local_endpoints: usize,
    rules: usize,
    set_elements: usize,
}

/// Runs an agent with the real `nft` (and, unless told not to, netlink routes) in the
/// process's own network namespace until SIGTERM or SIGINT, then returns `Ok` having stopped
/// the HTTP server and written a last status record; the ruleset and routes stay.
pub fn run(
    config: AgentConfig,
    store: Arc<dyn Store>,
    metrics_address: Option<&str>,
    dns: Option<DnsFlags>,
    flow_logs: Option<FlowLogFlags>,
) -> Result<(), String> {
    if config.l7_proxy_child {
        let port = config
            .l7_proxy_port
            .ok_or("the L7 proxy child needs a port (--l7-proxy-port)")?;
        return crate::proxy::child::run(&config.node, port, config.l7_proxy_limits);
    }
    // First, so a signal that comes during start-up stops the agent cleanly too.
    let stop = Arc::new(AtomicBool::new(false));
    crate::shutdown::stop_on_signals(stop.clone())?;
    let backend = sluice_nft::CommandBackend::new().map_err(|error| error.to_string())?;
    let metrics = Metrics::new();
    let server = match metrics_address {
        Some(address) => {
            let server = metrics.serve(address)?;
            tracing::info!(bound = %server.address(), "serving /metrics and /healthz");
            Some(server)
        }
        None => None,
    };
    if sluice_dataplane::conntrack::Conntrack::new().is_err() {
        tracing::warn!(
            "the conntrack tool is missing (Debian: apt-get install conntrack): the CNI plugin cannot forget a deleted pod's connections, which then stay tracked until they time out"
        );
    }
    let program_routes = config.program_routes;
    let egress_gateways = config.egress_gateways;
    let l7_proxy_port = config.l7_proxy_port;
    let mut agent = Agent::new(config, store, backend, metrics);
    if let Some(port) = l7_proxy_port {
        agent = agent.with_l7_proxy(port);
    }
    if program_routes {
        let routes = NetlinkRoutes::open().map_err(|error| error.to_string())?;
        agent = agent.with_routes(Box::new(routes));
    }
    if let Some(flags) = dns {
        agent = agent.with_dns(flags)?;
    }
    if egress_gateways {
        let routing = sluice_dataplane::gateway_routes::NetlinkGatewayRoutes::open()
            .map_err(|error| error.to_string())?;
        let pins =
            crate::gateway::NftPins(sluice_nft::CommandBackend::new().map_err(|error| error.to_string())?);
        agent = agent.with_gateways(routing, pins);
    }
    if let Some(flags) = &flow_logs {
        // Flow logs are for seeing; enforcement never waits on them. The ruleset then carries
        // no log statements, and the status record names no flow endpoint.
        if let Err(error) = agent.start_flow_logs(flags) {
            tracing::error!(%error, "flow logs are off: the agent enforces policy without them");
            agent.metrics.flows.read_errors.inc();
        }
    }
    agent.run_until(&stop);
    if let Some(server) = server {
        server.stop();
    }
    tracing::info!(node = %agent.config.node, "stopped; {}", crate::shutdown::LEFT_IN_PLACE);
    Ok(())
}
