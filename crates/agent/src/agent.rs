//! The agent's loop: list, watch, compile, render, sync.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_api::resource::RESOURCE_PREFIX;
use sluice_api::{Resource, ResourceSet};
use sluice_dataplane::{LocalEndpoint, Syncer, render};
use sluice_nft::Backend;
use sluice_store::{Change, Condition, Operation, Revision, Store, StoreError, Watch};

use crate::metrics::Metrics;
use crate::status::{NodeStatus, status_key};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node whose endpoints this agent programs.
    pub node: String,
    /// A full rebuild of the table this often, to repair anything changed behind our back.
    pub resync_interval: Duration,
    /// After a change, wait this long for more before programming, so a burst is one sync.
    pub batch_window: Duration,
}

impl AgentConfig {
    pub fn new(node: impl Into<String>) -> Self {
        AgentConfig {
            node: node.into(),
            resync_interval: Duration::from_secs(300),
            batch_window: Duration::from_millis(5),
        }
    }
}

/// One node's agent.
pub struct Agent<B: Backend> {
    config: AgentConfig,
    store: Arc<dyn Store>,
    syncer: Syncer<B>,
    metrics: Arc<Metrics>,
    /// The datastore's resources by key, kept current by the watch.
    resources: BTreeMap<String, Resource>,
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
            metrics,
            resources: BTreeMap::new(),
            revision: 0,
            programmed_revision: 0,
            last_error: None,
            last_full_sync: Instant::now(),
        }
    }

    pub fn backend(&self) -> &B {
        self.syncer.backend()
    }

    /// Reads every resource again (at start, and when the watch fell too far behind).
    pub fn relist(&mut self) -> Result<(), StoreError> {
        let (values, revision) = self.store.list(RESOURCE_PREFIX)?;
        self.resources.clear();
        for value in values {
            self.store_value(value.key, &value.value, value.modify_revision);
        }
        self.revision = revision;
        Ok(())
    }

    fn store_value(&mut self, key: String, bytes: &[u8], revision: Revision) {
        match Resource::decode(bytes, revision) {
            Ok(resource) => {
                self.resources.insert(key, resource);
            }
            // Only Sluice writes these keys, after validation; an unreadable value is skipped
            // and reported rather than stopping the node's enforcement.
            Err(error) => tracing::error!(%key, %error, "skipping an unreadable datastore value"),
        }
    }

    fn apply_change(&mut self, change: Change) {
        self.revision = self.revision.max(change.revision());
        match change {
            Change::Put(value) => self.store_value(value.key, &value.value, value.modify_revision),
            Change::Delete { key, .. } => {
                self.resources.remove(&key);
            }
        }
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

    /// Compiles the current resources and programs the kernel; records the outcome in the
    /// metrics and the node's status record.
    pub fn program(&mut self, change_seen: Instant) -> Result<(), String> {
        if self.last_full_sync.elapsed() >= self.config.resync_interval {
            self.syncer.resync_next();
        }
        let set: ResourceSet = self.resources.values().cloned().collect();
        let dataplane = sluice_policy::compile(&set);
        let local = self.local_endpoints();
        let ruleset = render(&dataplane, &local);
        let result = self.syncer.sync(&ruleset);
        let outcome = match result {
            Ok(report) => {
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
                self.programmed_revision = self.revision;
                self.last_error = None;
                self.metrics.set_healthy(true);
                Ok(())
            }
            Err(error) => {
                self.metrics.sync_errors.inc();
                self.metrics.set_healthy(false);
                let message = error.to_string();
                tracing::error!(revision = self.revision, error = %message, "the kernel refused the ruleset; the previous one stays in force");
                self.last_error = Some(message.clone());
                Err(message)
            }
        };
        self.write_status(local.len(), ruleset.rule_count(), ruleset.element_count());
        outcome
    }

    fn write_status(&self, local_endpoints: usize, rules: usize, set_elements: usize) {
        let status = NodeStatus {
            node: self.config.node.clone(),
            programmed_revision: self.programmed_revision,
            seen_revision: self.revision,
            in_sync: self.last_error.is_none(),
            error: self.last_error.clone(),
            local_endpoints,
            rules,
            set_elements,
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
            let mut watch: Box<dyn Watch> = match self.store.watch(RESOURCE_PREFIX, self.revision) {
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
                        self.apply_change(change);
                        // Take the rest of a burst before programming.
                        let deadline = seen + self.config.batch_window;
                        loop {
                            let left = deadline.saturating_duration_since(Instant::now());
                            match watch.next(left) {
                                Ok(Some(change)) => self.apply_change(change),
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

/// Runs an agent with the real `nft` until the process is stopped.
pub fn run(config: AgentConfig, store: Arc<dyn Store>, metrics_address: Option<&str>) -> Result<(), String> {
    let backend = sluice_nft::CommandBackend::new().map_err(|error| error.to_string())?;
    let metrics = Metrics::new();
    if let Some(address) = metrics_address {
        let bound = metrics.serve(address)?;
        tracing::info!(%bound, "serving /metrics and /healthz");
    }
    let mut agent = Agent::new(config, store, backend, metrics);
    agent.run_until(&AtomicBool::new(false));
    Ok(())
}
