//! The flow-log shell: the kernel's decision log and the connection-tracking table in, through
//! `sluice-flowlog`'s aggregator, records out to the node's file, the served ring and the
//! metrics. Threads: one reads logged packets (each connection's first packet, and denied
//! ones); one dumps the conntrack table every few seconds (counters, and ends: closed TCP
//! entries and entries gone since the last dump) and ends each interval; with
//! `conntrack_events`, one more reads conntrack's Destroy events. Reading by dumps alone is
//! Calico's way and costs nothing per connection; events cost a message per connection, which
//! took 5% of new connections/s on this machine (docs/benchmarks.md, "Flow logs").
//! The agent tells it each compile's IR, so ids in log prefixes name their policies, and the
//! staged IR, so records carry `pending_policies`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_api::ResourceSet;
use sluice_flowlog::events::{ConntrackEvent, LoggedPacket, Timestamp};
use sluice_flowlog::{Aggregator, Config, FlowRecord, PendingQuery, Reporter, network_sets_from_entities};
use sluice_policy::{Dataplane, PolicyHit};

use super::{FlowListen, FlowLogFlags, FlowServer, RecentFlows, RotatingFile};
use crate::metrics::{ActionLabels, HitLabels, Metrics};

/// Rotate the file at this size, keeping this many old ones.
const FILE_MAX_BYTES: u64 = 100 << 20;
const FILE_KEEP: usize = 5;
/// The served ring: at most this many records and bytes.
const RING_RECORDS: usize = 50_000;
const RING_BYTES: usize = 64 << 20;
/// How long a kernel read may block, so threads notice a stop.
pub const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// After a burst of conntrack events or logged packets, a reader waits this long for the next
/// to gather: every conntrack event is a datagram of its own, and waking for each cost 10% of
/// this machine at 20,000 connections a second (docs/benchmarks.md, "Flow logs"). The sockets'
/// buffers hold far more than this pause gathers.
const EVENT_PAUSE: Duration = Duration::from_millis(20);
/// The most datagrams one read drains.
const EVENT_BURST: usize = 4096;

/// Logged packets, as the dataplane's NFLOG reader gives them.
pub trait LogSource: Send + 'static {
    /// What arrived, waiting at most a fraction of a second (empty when nothing did), so the
    /// reading thread notices a stop.
    fn read(&mut self) -> Result<Vec<LoggedPacket>, String>;
}

/// Connection-tracking events, as the dataplane's conntrack reader gives them.
pub trait ConntrackSource: Send + 'static {
    /// Events that arrived, waiting at most a fraction of a second.
    fn read(&mut self) -> Result<Vec<ConntrackEvent>, String>;
}

/// Every live connection-tracking entry with its counters, as `Update` events.
pub trait ConntrackDump: Send + 'static {
    fn dump(&mut self) -> Result<Vec<ConntrackEvent>, String>;
}

/// The wall clock as the flow-log core takes it.
pub fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64),
    )
}

struct Shared {
    aggregator: Mutex<Aggregator>,
    file: Mutex<Option<RotatingFile>>,
    recent: Arc<RecentFlows>,
    metrics: Arc<Metrics>,
    /// Per hit and per action, the totals already added to the Prometheus counters.
    reported: Mutex<Reported>,
    stop: AtomicBool,
}

#[derive(Default)]
struct Reported {
    hits: HashMap<HitLabels, (u64, u64, u64)>,
    actions: HashMap<&'static str, (u64, u64, u64)>,
    dropped: u64,
}

/// The running shell; [`FlowShell::stop`] writes what the current interval holds and ends it.
pub struct FlowShell {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
    servers: Vec<FlowServer>,
}

impl std::fmt::Debug for FlowShell {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FlowShell")
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

impl FlowShell {
    /// Opens the file, starts the flow endpoints and the three threads.
    pub fn start(
        node: &str,
        flags: &FlowLogFlags,
        log: impl LogSource,
        events: Option<Box<dyn ConntrackSource>>,
        dump: impl ConntrackDump,
        metrics: Arc<Metrics>,
    ) -> Result<FlowShell, String> {
        let config = Config {
            host: node.to_string(),
            interval_milliseconds: flags.interval.as_millis() as u64,
            // Connections idle this long with no conntrack event are dumped again at each
            // interval, so only ended ones that conntrack failed to report go this way.
            idle_timeout_milliseconds: (flags.interval.as_millis() as u64 * 4).max(60_000),
            // The L7 proxy's upstream connections: the pod's connection to the proxy is the
            // one recorded, with the L7 rule that sent it there.
            skipped_connection_mark: sluice_dataplane::l7_redirect::MARK_PROXY_UPSTREAM,
            ..Config::default()
        };
        let aggregator = Aggregator::new(config, now()).map_err(|error| error.to_string())?;
        let file = RotatingFile::open(&flags.file, FILE_MAX_BYTES, FILE_KEEP)
            .map_err(|error| format!("cannot open the flow log {}: {error}", flags.file.display()))?;
        let recent = Arc::new(RecentFlows::new(RING_RECORDS, RING_BYTES));
        let mut servers = Vec::new();
        let listens = flags
            .socket
            .iter()
            .map(|path| FlowListen::Unix(path.clone()))
            .chain(
                flags
                    .address
                    .iter()
                    .map(|address| FlowListen::Tcp(address.clone())),
            );
        for listen in listens {
            servers.push(FlowServer::start(&listen, recent.clone())?);
        }
        let shared = Arc::new(Shared {
            aggregator: Mutex::new(aggregator),
            file: Mutex::new(Some(file)),
            recent,
            metrics,
            reported: Mutex::new(Reported::default()),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(body)
                .map_err(|error| error.to_string())
        };
        {
            let shared = shared.clone();
            let mut log = log;
            threads.push(spawn(
                "flow-log",
                Box::new(move || {
                    while !shared.stop.load(Ordering::Relaxed) {
                        match log.read() {
                            Ok(packets) if !packets.is_empty() => {
                                shared.metrics.flows.log_packets.inc_by(packets.len() as u64);
                                let mut aggregator = shared.aggregator.lock().expect("not poisoned");
                                for packet in &packets {
                                    aggregator.logged_packet(packet);
                                }
                                drop(aggregator);
                                std::thread::sleep(EVENT_PAUSE);
                            }
                            Ok(_) => {}
                            Err(error) => read_failed(&shared, "the decision log", &error),
                        }
                    }
                }),
            )?);
        }
        if let Some(mut events) = events {
            let shared = shared.clone();
            threads.push(spawn(
                "flow-conntrack",
                Box::new(move || {
                    while !shared.stop.load(Ordering::Relaxed) {
                        match events.read() {
                            Ok(events) if !events.is_empty() => {
                                feed_conntrack(&shared, &events);
                                std::thread::sleep(EVENT_PAUSE);
                            }
                            Ok(_) => {}
                            Err(error) => read_failed(&shared, "conntrack events", &error),
                        }
                    }
                }),
            )?);
        }
        {
            let shared = shared.clone();
            let mut dump = dump;
            let dump_every = flags.dump_interval.min(flags.interval).as_millis().max(1) as u64;
            threads.push(spawn(
                "flow-dump",
                Box::new(move || {
                    let mut next_dump = now().0.saturating_add(dump_every);
                    loop {
                        let next_drain = shared.aggregator.lock().expect("not poisoned").next_drain();
                        let due = next_dump.min(next_drain.0);
                        while !shared.stop.load(Ordering::Relaxed) && now().0 < due {
                            let left = due.saturating_sub(now().0).min(100);
                            std::thread::sleep(Duration::from_millis(left.max(1)));
                        }
                        let started = now();
                        match dump.dump() {
                            Ok(entries) => {
                                shared.metrics.flows.conntrack_events.inc_by(entries.len() as u64);
                                shared
                                    .aggregator
                                    .lock()
                                    .expect("not poisoned")
                                    .dumped(&entries, started);
                            }
                            Err(error) => read_failed(&shared, "a conntrack dump", &error),
                        }
                        next_dump = started.0.saturating_add(dump_every);
                        let stopping = shared.stop.load(Ordering::Relaxed);
                        if stopping || now() >= next_drain {
                            drain(&shared);
                        }
                        if stopping {
                            break;
                        }
                    }
                }),
            )?);
        }
        Ok(FlowShell {
            shared,
            threads,
            servers,
        })
    }

    /// Where the flow log is served (what the status record names): the Unix socket first.
    pub fn endpoints(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| server.endpoint.clone())
            .collect()
    }

    /// After each compile: the ids the new ruleset logs, the names of endpoints and network
    /// sets, and the staged IR for `pending_policies` (none when nothing is staged).
    pub fn update(&self, dataplane: &Dataplane, resources: &ResourceSet) {
        let (entities, _) = sluice_policy::build_entities(resources);
        let network_sets = network_sets_from_entities(&entities);
        let staged = sluice_policy::has_staged_policies(resources)
            .then(|| Arc::new(sluice_policy::compile_staged(resources)));
        let mut aggregator = self.shared.aggregator.lock().expect("not poisoned");
        aggregator.update_policy(dataplane, &network_sets, now());
        aggregator.set_pending_policies(staged.map(|staged| {
            Box::new(move |query: &PendingQuery<'_>| -> Vec<PolicyHit> {
                let hits = sluice_policy::pending_policies(&staged, &query.flow, query.destination_domain);
                match query.reporter {
                    Reporter::Src => hits.egress.into_iter().collect(),
                    Reporter::Dst => hits.ingress.into_iter().collect(),
                }
            }) as Box<dyn sluice_flowlog::PendingPolicies + Send>
        }));
    }

    /// Where destinations' domain names come from (the DNS shell's learned names).
    pub fn set_domain_names(&self, names: Box<dyn sluice_flowlog::DomainNames + Send>) {
        self.shared
            .aggregator
            .lock()
            .expect("not poisoned")
            .set_domain_names(Some(names));
    }

    /// Ends the threads, writes the interval in hand, and stops serving.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.shared.recent.close();
        for server in self.servers {
            server.stop();
        }
    }
}

fn read_failed(shared: &Shared, what: &str, error: &str) {
    shared.metrics.flows.read_errors.inc();
    tracing::warn!(error = %error, "reading {what} failed");
    // A broken socket would fail at once again: do not spin.
    std::thread::sleep(Duration::from_millis(500));
}

fn feed_conntrack(shared: &Shared, events: &[ConntrackEvent]) {
    shared.metrics.flows.conntrack_events.inc_by(events.len() as u64);
    let mut aggregator = shared.aggregator.lock().expect("not poisoned");
    for event in events {
        aggregator.conntrack(event);
    }
}

/// Ends the interval: records to the file and the ring, counters to the metrics.
fn drain(shared: &Shared) {
    let started = Instant::now();
    let (records, hits, actions, statistics, gauges) = {
        let mut aggregator = shared.aggregator.lock().expect("not poisoned");
        let records: Vec<FlowRecord> = aggregator.drain(now());
        let hits: Vec<(HitLabels, (u64, u64, u64))> = aggregator
            .hit_counters()
            .into_iter()
            .map(|(hit, usage)| (hit_labels(hit), (usage.packets, usage.bytes, usage.connections)))
            .collect();
        (
            records,
            hits,
            aggregator.action_counters(),
            aggregator.statistics(),
            aggregator.gauges(),
        )
    };
    let lines: Vec<(u64, String)> = records
        .iter()
        .map(|record| (record.end_time, record.to_json_line()))
        .collect();
    if !lines.is_empty() {
        if let Some(file) = shared.file.lock().expect("not poisoned").as_mut()
            && let Err(error) = file.append(lines.iter().map(|(_, line)| line.as_str()))
        {
            shared.metrics.flows.write_errors.inc();
            tracing::warn!(error = %error, file = %file.path().display(), "writing the flow log failed");
        }
        shared.metrics.flows.records.inc_by(lines.len() as u64);
        shared.recent.push(lines);
    }
    let flows = &shared.metrics.flows;
    let mut reported = shared.reported.lock().expect("not poisoned");
    for (labels, totals) in hits {
        let before = reported.hits.entry(labels.clone()).or_default();
        flows
            .policy_packets
            .get_or_create(&labels)
            .inc_by(totals.0.saturating_sub(before.0));
        flows
            .policy_bytes
            .get_or_create(&labels)
            .inc_by(totals.1.saturating_sub(before.1));
        flows
            .policy_connections
            .get_or_create(&labels)
            .inc_by(totals.2.saturating_sub(before.2));
        *before = totals;
    }
    for (action, usage) in [("allow", actions.allow), ("deny", actions.deny)] {
        let labels = ActionLabels {
            action: action.to_string(),
        };
        let before = reported.actions.entry(action).or_default();
        flows
            .action_packets
            .get_or_create(&labels)
            .inc_by(usage.packets.saturating_sub(before.0));
        flows
            .action_bytes
            .get_or_create(&labels)
            .inc_by(usage.bytes.saturating_sub(before.1));
        flows
            .action_connections
            .get_or_create(&labels)
            .inc_by(usage.connections.saturating_sub(before.2));
        *before = (usage.packets, usage.bytes, usage.connections);
    }
    let dropped = statistics.connections_evicted
        + statistics.denied_tuples_evicted
        + statistics.allowed_keys_refused
        + statistics.denied_keys_refused
        + shared.recent.dropped();
    flows.dropped.inc_by(dropped.saturating_sub(reported.dropped));
    reported.dropped = reported.dropped.max(dropped);
    flows.tracked_connections.set(gauges.tracked_connections as i64);
    tracing::debug!(
        records = records.len(),
        took_ms = started.elapsed().as_millis(),
        "flow log interval written"
    );
}

/// The dataplane's readers as the shell's sources.
impl LogSource for sluice_dataplane::nflog::NflogReader {
    fn read(&mut self) -> Result<Vec<LoggedPacket>, String> {
        self.receive_waiting(EVENT_BURST)
            .map(|batch| batch.packets)
            .map_err(|error| error.to_string())
    }
}

impl ConntrackSource for sluice_dataplane::conntrack_events::ConntrackEvents {
    fn read(&mut self) -> Result<Vec<ConntrackEvent>, String> {
        self.receive_waiting(EVENT_BURST)
            .map(|batch| batch.events)
            .map_err(|error| error.to_string())
    }
}

impl ConntrackDump for sluice_dataplane::conntrack_events::ConntrackDump {
    fn dump(&mut self) -> Result<Vec<ConntrackEvent>, String> {
        sluice_dataplane::conntrack_events::ConntrackDump::dump(self)
            .map(|batch| batch.events)
            .map_err(|error| error.to_string())
    }
}

/// The kernel's side of the flow log, opened by [`open_kernel`].
pub struct KernelSources {
    pub log: sluice_dataplane::nflog::NflogReader,
    /// Conntrack's Destroy events, when asked for.
    pub events: Option<Box<dyn ConntrackSource>>,
    pub dump: sluice_dataplane::conntrack_events::ConntrackDump,
}

impl std::fmt::Debug for KernelSources {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KernelSources")
            .field("events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

/// Opens the kernel's side in this network namespace (or the named one): accounting on, the
/// NFLOG group bound, a dump socket, and with `conntrack_events` a subscription to conntrack's
/// Destroy events. Never New events: a logged first packet already opens the connection, and
/// the next dump confirms it and finds any that started unlogged, so New would cost a message
/// per connection for nothing (measured: docs/benchmarks.md, "Flow logs").
pub fn open_kernel(
    group: u16,
    namespace: Option<&str>,
    conntrack_events: bool,
) -> Result<KernelSources, String> {
    use sluice_dataplane::conntrack_events::{self, ConntrackGroup};
    conntrack_events::enable_accounting(namespace).map_err(|error| error.to_string())?;
    let log = sluice_dataplane::nflog::NflogReader::open(group, namespace, READ_TIMEOUT)
        .map_err(|error| error.to_string())?;
    let events = if conntrack_events {
        let events =
            conntrack_events::ConntrackEvents::subscribe(namespace, &[ConntrackGroup::Destroy], READ_TIMEOUT)
                .map_err(|error| error.to_string())?;
        Some(Box::new(events) as Box<dyn ConntrackSource>)
    } else {
        None
    };
    let dump = conntrack_events::ConntrackDump::open(namespace).map_err(|error| error.to_string())?;
    Ok(KernelSources { log, events, dump })
}

fn hit_labels(hit: &PolicyHit) -> HitLabels {
    HitLabels {
        tier: hit.tier.clone(),
        kind: hit.kind.clone(),
        policy: match &hit.namespace {
            Some(namespace) => format!("{namespace}/{}", hit.name),
            None => hit.name.clone(),
        },
        rule: hit.rule_index.to_string(),
        action: hit.action.to_string().to_ascii_lowercase(),
        direction: hit.direction.to_string().to_ascii_lowercase(),
    }
}
