//! The egress gateway shell: a thread of its own that owns the node's policy-routing rules,
//! client tables and tunnel device (through `RoutingSyncer`) and the health prober. It
//! replans on every datastore update the agent sends and on every health change a probe
//! reports, so a failover waits neither for the agent's loop nor for a policy compile.
//! Rules, tables and the device stay in the kernel when it stops (fail closed: clients keep
//! their gateways, never the node's default route).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use sluice_api::ResourceSet;
use sluice_gateway::routing::{
    Pin, RoutingBackend, RoutingSyncer, desired, pins_from_kernel, previous_from_kernel,
};
use sluice_gateway::{GatewayHealth, HealthTracker, Inputs, NodePlan, PodId, ProbeOutcome, compute};
use sluice_store::{Condition, Operation, Store};

use super::prober::{ProbeReport, ProbeTarget, ProbeTiming, Prober};
use super::record::{EgressRecord, GatewayRecord, egress_key, health_text};
use crate::metrics::Metrics;
use crate::status::HEARTBEAT_INTERVAL;

/// Read the kernel's rules and tables again this often, to repair what was removed behind the
/// agent's back.
const REPAIR_INTERVAL: Duration = Duration::from_secs(10);
/// How soon a sync the kernel refused in part is tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// The record is rewritten at most this often while health flaps.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// The tunnel device's MTU: a 1500-byte path less VXLAN's overhead.
pub const DEFAULT_TUNNEL_MTU: u32 = 1500 - sluice_gateway::tunnel::OVERHEAD;

/// What the agent sends after each datastore change: the core's inputs (health is the
/// shell's) and the destinations that never go through a gateway.
#[derive(Debug, Clone)]
pub struct GatewayUpdate {
    pub inputs: Inputs,
    /// IP pools and node addresses: in-cluster traffic takes the normal way.
    pub local_destinations: Vec<IpNet>,
    /// The datastore revision these inputs are from.
    pub revision: i64,
}

impl GatewayUpdate {
    /// `inputs` are `Inputs::from_resources(resources)`, which the caller has already built.
    pub fn new(inputs: Inputs, resources: &ResourceSet, revision: i64) -> GatewayUpdate {
        let mut local_destinations: Vec<IpNet> =
            resources.ip_pools.iter().map(|pool| pool.spec.cidr.0).collect();
        for node in &resources.nodes {
            for address in &node.status.addresses {
                if let Ok(address) = address.address.parse::<IpAddr>() {
                    local_destinations.push(IpNet::from(address));
                }
            }
        }
        local_destinations.sort();
        local_destinations.dedup();
        GatewayUpdate {
            inputs,
            local_destinations,
            revision,
        }
    }
}

/// Where the pins' connection marks are written: the nft table `inet sluice-egress`
/// ([`NftPins`]), or a fake in tests.
pub trait PinWriter: Send {
    /// Makes the table hold exactly `pins` (none: no table).
    fn write(&mut self, pins: &[Pin]) -> Result<(), String>;
}

/// The pins through `nft` in the agent's network namespace.
#[derive(Debug)]
pub struct NftPins(pub sluice_nft::CommandBackend);

impl PinWriter for NftPins {
    fn write(&mut self, pins: &[Pin]) -> Result<(), String> {
        use sluice_nft::Backend;
        self.0
            .apply(&sluice_dataplane::gateway_pins::transaction(pins))
            .map_err(|error| error.to_string())
    }
}

enum Event {
    Update(Box<GatewayUpdate>),
    Probe(ProbeReport),
    Stop,
}

impl From<ProbeReport> for Event {
    fn from(report: ProbeReport) -> Event {
        Event::Probe(report)
    }
}

/// The handle the agent keeps.
#[derive(Debug)]
pub struct GatewayShell {
    events: Sender<Event>,
    thread: Option<JoinHandle<()>>,
}

impl GatewayShell {
    pub fn start<B: RoutingBackend + 'static, P: PinWriter + 'static>(
        node: &str,
        backend: B,
        pin_writer: P,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        tunnel_mtu: u32,
    ) -> GatewayShell {
        let (events, receiver) = mpsc::channel();
        let worker = Worker::<B, P> {
            node: node.to_string(),
            syncer: RoutingSyncer::new(backend),
            pin_writer,
            pins: None,
            written_pins: None,
            prober: Prober::new(events.clone()),
            tracker: HealthTracker::new(),
            update: None,
            previous: None,
            probes: BTreeMap::new(),
            store,
            metrics,
            tunnel_mtu,
            published: None,
            unpublished: false,
            last_published: Instant::now(),
            last_repair: Instant::now(),
            failed_at: None,
            kernel_read: false,
        };
        let thread = std::thread::Builder::new()
            .name("egress gateways".into())
            .spawn(move || worker.run(receiver))
            .expect("spawning the egress gateway thread");
        GatewayShell {
            events,
            thread: Some(thread),
        }
    }

    /// The datastore changed.
    pub fn update(&self, update: GatewayUpdate) {
        let _ = self.events.send(Event::Update(Box::new(update)));
    }

    /// Stops probing and returns; what is in the kernel stays.
    pub fn shutdown(&mut self) {
        let _ = self.events.send(Event::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GatewayShell {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the prober last saw of a gateway, for the record.
#[derive(Debug, Clone, Default)]
struct ProbeView {
    since: Option<SystemTime>,
    milliseconds: Option<f64>,
    error: Option<String>,
}

struct Worker<B: RoutingBackend, P: PinWriter> {
    node: String,
    syncer: RoutingSyncer<B>,
    pin_writer: P,
    /// Each gateway's pin index (from the kernel at start, then from the last plan).
    pins: Option<BTreeMap<Ipv4Addr, u8>>,
    /// The pins the nft table holds, as far as the last write knows.
    written_pins: Option<BTreeMap<Ipv4Addr, u8>>,
    prober: Prober<Event>,
    tracker: HealthTracker,
    update: Option<GatewayUpdate>,
    previous: Option<NodePlan>,
    probes: BTreeMap<PodId, ProbeView>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    tunnel_mtu: u32,
    /// The last record written, to write only changes.
    published: Option<EgressRecord>,
    /// The state changed since the record was written.
    unpublished: bool,
    last_published: Instant,
    last_repair: Instant,
    /// Set while the kernel refuses part of the routing.
    failed_at: Option<Instant>,
    /// Whether the kernel's rules and tables were read to seed the first plan.
    kernel_read: bool,
}

impl<B: RoutingBackend, P: PinWriter> Worker<B, P> {
    fn run(mut self, events: Receiver<Event>) {
        loop {
            let wait = self.next_due().saturating_duration_since(Instant::now());
            let mut replan = false;
            match events.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Event::Update(update)) => {
                    self.update = Some(*update);
                    replan = true;
                }
                Ok(Event::Probe(report)) => replan = self.observe(report),
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Take every report already waiting before reprogramming once.
            while let Ok(event) = events.try_recv() {
                match event {
                    Event::Update(update) => {
                        self.update = Some(*update);
                        replan = true;
                    }
                    Event::Probe(report) => replan |= self.observe(report),
                    Event::Stop => {
                        self.prober.shutdown();
                        return;
                    }
                }
            }
            let now = Instant::now();
            if now >= self.last_repair + REPAIR_INTERVAL {
                self.last_repair = now;
                self.syncer.resync_next();
                // The pin table too: `nft flush ruleset` or a restore may have dropped it.
                self.written_pins = None;
                replan = true;
            }
            if self.failed_at.is_some_and(|at| now >= at + RETRY_INTERVAL) {
                replan = true;
            }
            if replan {
                self.program();
            }
            self.publish();
        }
        self.prober.shutdown();
    }

    fn next_due(&self) -> Instant {
        let mut due = (self.last_repair + REPAIR_INTERVAL).min(self.last_published + HEARTBEAT_INTERVAL);
        if let Some(at) = self.failed_at {
            due = due.min(at + RETRY_INTERVAL);
        }
        if self.unpublished {
            due = due.min(self.last_published + PUBLISH_INTERVAL);
        }
        due
    }

    fn failure_count(&self) -> u32 {
        self.update
            .as_ref()
            .map_or(sluice_api::egress::DEFAULT_POLL_FAILURE_COUNT, |update| {
                update.inputs.configuration(&self.node).poll_failure_count
            })
    }

    /// Takes a probe's outcome; says whether the gateway's health changed.
    fn observe(&mut self, report: ProbeReport) -> bool {
        let outcome = match &report.result {
            Ok(round_trip) => {
                self.metrics
                    .gateway
                    .probe_seconds
                    .observe(round_trip.as_secs_f64());
                ProbeOutcome::Ready
            }
            Err(_) => {
                self.metrics.gateway.probe_failures.inc();
                ProbeOutcome::Failed
            }
        };
        let before = self.tracker.health_of(&report.gateway);
        let changed = self
            .tracker
            .observe(&report.gateway, outcome, self.failure_count());
        let view = self.probes.entry(report.gateway.clone()).or_default();
        match &report.result {
            Ok(round_trip) => {
                view.milliseconds = Some(round_trip.as_secs_f64() * 1000.0);
                view.error = None;
            }
            Err(error) => view.error = Some(error.clone()),
        }
        let Some(health) = changed else {
            return false;
        };
        view.since = Some(SystemTime::now());
        self.metrics.gateway.health_changes.inc();
        if before != GatewayHealth::NotReady && health == GatewayHealth::NotReady {
            self.metrics.gateway.failovers.inc();
        }
        tracing::info!(gateway = %report.gateway, health = health_text(health), error = report.result.err().unwrap_or_default(), "egress gateway health changed");
        true
    }

    /// Plans with the health known now and brings the kernel in step.
    fn program(&mut self) {
        let Some(update) = &mut self.update else {
            return;
        };
        let started = Instant::now();
        // After a restart, the tables and gateways already in the kernel are the previous
        // plan, so clients keep them (no table churn, no flow moved).
        if !self.kernel_read {
            self.kernel_read = true;
            match self.syncer.kernel_state() {
                Ok(kernel) => {
                    self.previous =
                        previous_from_kernel(&update.inputs, &self.node, &kernel.rules, &kernel.routes);
                    // Live connections carry their pin's index: keep every gateway's.
                    self.pins = Some(pins_from_kernel(&kernel.rules, &kernel.routes));
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read the egress gateway routing in the kernel")
                }
            }
        }
        update.inputs.health = self.tracker.health();
        let mut plan = match compute(&update.inputs, &self.node, self.previous.as_ref()) {
            Ok(plan) => plan,
            Err(error) => {
                tracing::error!(%error, "egress gateways not replanned; the kernel keeps the last plan");
                return;
            }
        };
        // The gateways to probe follow the plan; a new one is not ready until it answers.
        let targets: Vec<ProbeTarget> = plan
            .gateways
            .iter()
            .map(|gateway| ProbeTarget {
                gateway: gateway.gateway.clone(),
                address: gateway.address,
                port: gateway.health_port,
            })
            .collect();
        self.prober
            .set_targets(&targets, ProbeTiming::new(plan.configuration.poll_interval));
        self.probes
            .retain(|gateway, _| targets.iter().any(|target| &target.gateway == gateway));
        if self.tracker.set_targets(
            plan.gateways
                .iter()
                .map(|gateway| (gateway.gateway.clone(), gateway.deleting)),
        ) {
            update.inputs.health = self.tracker.health();
            match compute(&update.inputs, &self.node, self.previous.as_ref()) {
                Ok(again) => plan = again,
                Err(error) => {
                    tracing::error!(%error, "egress gateways not replanned; the kernel keeps the last plan");
                    return;
                }
            }
        }
        let previous_pins = self.pins.clone().unwrap_or_default();
        let routing = desired(&plan, &update.local_destinations, self.tunnel_mtu, &previous_pins);
        let pins: BTreeMap<Ipv4Addr, u8> = routing.pins.iter().map(|pin| (pin.gateway, pin.index)).collect();
        self.pins = Some(pins.clone());
        // Rules and pin tables first, then the marks that lead to them.
        let routed = self.syncer.sync(&routing);
        let marked = if self.written_pins.as_ref() == Some(&pins) {
            Ok(())
        } else {
            self.pin_writer.write(&routing.pins).map(|()| {
                self.written_pins = Some(pins);
            })
        };
        match (routed, marked) {
            (Ok(_), Ok(())) => {
                if self.failed_at.take().is_some() {
                    tracing::info!("egress gateway routing programmed again");
                }
            }
            (routed, marked) => {
                self.metrics.gateway.routing_errors.inc();
                let errors: Vec<String> = [routed.err().map(|error| error.to_string()), marked.err()]
                    .into_iter()
                    .flatten()
                    .collect();
                tracing::error!(
                    error = errors.join("; "),
                    "egress gateway routing refused in part; retrying"
                );
                self.failed_at = Some(Instant::now());
            }
        }
        self.metrics
            .gateway
            .program_seconds
            .observe(started.elapsed().as_secs_f64());
        let health = self.tracker.health();
        let ready = health
            .values()
            .filter(|health| **health != GatewayHealth::NotReady)
            .count();
        self.metrics.gateway.clients.set(plan.clients.len() as i64);
        self.metrics.gateway.gateways_ready.set(ready as i64);
        self.metrics
            .gateway
            .gateways_not_ready
            .set((health.len() - ready) as i64);
        self.previous = Some(plan);
    }

    /// Writes the record when it changed (at most every `PUBLISH_INTERVAL`, so a flapping
    /// gateway cannot flood the store) and as a heartbeat; a node that never had a client or
    /// a gateway writes none.
    fn publish(&mut self) {
        let Some(plan) = &self.previous else {
            return;
        };
        let now = Instant::now();
        let revision = self.update.as_ref().map_or(0, |update| update.revision);
        let record = EgressRecord::from_plan(plan, revision, |gateway| {
            let view = self.probes.get(&gateway.gateway).cloned().unwrap_or_default();
            GatewayRecord {
                gateway: gateway.gateway.to_string(),
                address: gateway.address,
                node: gateway.node.clone(),
                health: health_text(self.tracker.health_of(&gateway.gateway)).to_string(),
                since: view.since,
                probe_milliseconds: view.milliseconds,
                last_error: view.error,
            }
        });
        let Some(published) = &self.published else {
            if !record.clients.is_empty() || !record.gateways.is_empty() {
                self.write(record, now);
            }
            return;
        };
        self.unpublished |= !same_but_time(published, &record);
        let heartbeat = now >= self.last_published + HEARTBEAT_INTERVAL;
        if heartbeat || self.unpublished && now >= self.last_published + PUBLISH_INTERVAL {
            self.write(record, now);
        }
    }

    fn write(&mut self, record: EgressRecord, now: Instant) {
        let write = [Operation::Put {
            key: egress_key(&self.node),
            value: serde_json::to_vec(&record).expect("the record serializes"),
            condition: Condition::Any,
        }];
        match self.store.commit(&write) {
            Ok(_) => {
                self.published = Some(record);
                self.unpublished = false;
                self.last_published = now;
            }
            Err(error) => {
                self.metrics.datastore_errors.inc();
                tracing::warn!(%error, "could not record the egress gateway state");
            }
        }
    }
}

/// Equal but for the time written and the probes' round trips (which change every probe).
fn same_but_time(left: &EgressRecord, right: &EgressRecord) -> bool {
    let strip = |record: &EgressRecord| {
        let mut record = record.clone();
        record.updated = SystemTime::UNIX_EPOCH;
        for gateway in &mut record.gateways {
            gateway.probe_milliseconds = None;
        }
        record
    };
    strip(left) == strip(right)
}
