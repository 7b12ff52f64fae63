//! The DNS shell: owns the NFQUEUE socket (on its own thread) and the netlink set-element
//! writer, and drives the learning core. The queue thread decides each queued DNS answer and
//! releases it only after the batch it implies is in the kernel (dropping it when programming
//! fails or exceeds [`HOLD_LIMIT`]); the agent's loop tells the learner the node's endpoints
//! after each policy program, expires mappings, saves the cache file and publishes what was
//! learned. Both sides share the learner and the writer behind one mutex, so batches reach the
//! kernel in the order the learner gave them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use sluice_dataplane::domains::{DNS_QUEUE_PRIORITY, MARK_DNS_QUEUE};
use sluice_dataplane::{DnsRender, IpFamily, LearnedElement, LocalEndpoint, domain_set_name};
use sluice_dns::{Batch, CacheEntry, Decision, Endpoint, HOLD_LIMIT, Interest, Learner, Timestamp};
use sluice_nft::{DnsQueue, DnsQueueTables, SetElementWriter};
use sluice_policy::Dataplane;
use sluice_store::{Condition, Operation, Store};

use super::configuration::DnsSettings;
use super::kernel;
use super::queue_socket::{QueueSocket, QueuedPacket, Verdict};
use super::record::{DnsCacheRecord, dns_cache_key};
use crate::metrics::Metrics;

/// The table (families `ip` and `ip6`) whose chain sends marked DNS answers to the queue.
/// How often mappings are expired.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);
/// The learned snapshot is published at most this often (and only when it changed).
/// How often the queue table is checked for removal behind the agent's back.
const QUEUE_TABLE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// How long the queue thread waits for a packet before it checks whether to stop: bounds
/// how long stopping takes.
const QUEUE_READ_TIMEOUT: Duration = Duration::from_millis(200);

/// What the queue thread and the agent's loop share.
struct Shared {
    learner: Learner,
    writer: SetElementWriter,
    /// Something was learned, expired or forgotten since the last publication.
    changed: bool,
    /// What each local endpoint resolved, for the flow log's `dest_domains`, when a flow log
    /// asked for it: refreshed before a held answer is released (so the connection it leads
    /// to is named) and when mappings expire.
    names: Option<LearnedNames>,
    /// The local endpoints' addresses by learner key, to index `names`.
    endpoint_addresses: HashMap<String, Vec<IpAddr>>,
}

impl Shared {
    /// Indexes every endpoint's learned names again (endpoints changed, mappings expired).
    fn refresh_names(&self) {
        if let Some(names) = &self.names {
            names.replace_all(&self.learner, &self.endpoint_addresses);
        }
    }

    /// Indexes again only the endpoints that have one of `addresses`: what a held answer
    /// taught, without the cost of every other endpoint's mappings on the answer's way.
    fn refresh_names_of(&self, addresses: impl Iterator<Item = IpAddr>) {
        let Some(names) = &self.names else {
            return;
        };
        let addresses: Vec<IpAddr> = addresses.collect();
        for (key, own) in &self.endpoint_addresses {
            if own.iter().any(|address| addresses.contains(address)) {
                names.replace_endpoint(own, self.learner.learned_pairs(key));
            }
        }
    }

    /// Programs a batch and tells the learner how it went.
    fn program(&mut self, batch: Batch) -> Result<(), String> {
        let result = kernel::program(&mut self.writer, &batch);
        match &result {
            Ok(()) => self.learner.programmed(batch.token),
            Err(error) => {
                tracing::warn!(%error, "could not program learned DNS mappings");
                self.learner.failed(batch.token);
            }
        }
        self.changed = true;
        result
    }
}

/// The agent's DNS shell for one node.
pub struct DnsShell {
    node: String,
    settings: DnsSettings,
    queue: u16,
    shared: Arc<Mutex<Shared>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Read from the cache file at start, restored once the first endpoints are known.
    restore: Option<Vec<CacheEntry>>,
    /// The learner's batches for the ruleset being synced, programmed after it.
    waiting: Vec<Batch>,
    /// Pairs found in the kernel's domain sets at start (a previous agent's, perhaps newer
    /// than the cache file it last saved, e.g. after kill -9), with their expiry: written back
    /// by every full rebuild until they expire, so a restart never loses what was allowed.
    carried: Option<Vec<(LearnedElement, Timestamp)>>,
    last_expire: Instant,
    last_save: Instant,
    last_publish: Instant,
    /// The learner's eviction count at the last tick, for the metric's increments.
    evictions_seen: u64,
    /// The table sending marked answers to the queue (`inet sluice-dns`), over netlink.
    queue_tables: DnsQueueTables,
    /// When the queue table was last found in the kernel, or installed.
    queue_table_checked: Option<Instant>,
}

/// The name each local endpoint resolved to reach each address it learned, by endpoint address
/// then learned address, kept by the DNS shell (an endpoint's entries are replaced when it learns,
/// before the answer is released; all of them when endpoints change or mappings expire) and
/// read by the flow log. When several names gave one address (a CNAME chain teaches every name
/// of it), the shortest, then the first in order.
#[derive(Debug, Clone, Default)]
pub struct LearnedNames(Arc<RwLock<HashMap<IpAddr, HashMap<IpAddr, String>>>>);

impl LearnedNames {
    fn replace_all(&self, learner: &Learner, endpoints: &HashMap<String, Vec<IpAddr>>) {
        let mut all = HashMap::new();
        for (key, own) in endpoints {
            let names = choose_names(learner.learned_pairs(key));
            for address in own {
                all.insert(*address, names.clone());
            }
        }
        *self.0.write().expect("not poisoned") = all;
    }

    fn replace_endpoint<'a>(&self, own: &[IpAddr], pairs: impl Iterator<Item = (&'a str, IpAddr)>) {
        let names = choose_names(pairs);
        let mut all = self.0.write().expect("not poisoned");
        for address in own {
            all.insert(*address, names.clone());
        }
    }
}

/// Learned address → the name to report for it.
fn choose_names<'a>(pairs: impl Iterator<Item = (&'a str, IpAddr)>) -> HashMap<IpAddr, String> {
    let mut names: HashMap<IpAddr, String> = HashMap::new();
    for (name, address) in pairs {
        let entry = names.entry(address).or_insert_with(|| name.to_string());
        if (name.len(), name) < (entry.len(), entry.as_str()) {
            *entry = name.to_string();
        }
    }
    names
}

impl sluice_flowlog::DomainNames for LearnedNames {
    fn domain_of(&self, endpoint: IpAddr, destination: IpAddr) -> Option<String> {
        self.0
            .read()
            .expect("not poisoned")
            .get(&endpoint)?
            .get(&destination)
            .cloned()
    }
}

impl std::fmt::Debug for DnsShell {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DnsShell")
            .field("node", &self.node)
            .field("queue", &self.queue)
            .finish()
    }
}

impl DnsShell {
    /// Opens the set-element writer and reads the cache file; the queue is bound after the
    /// first policy program (until then queued answers wait or are dropped, never passed
    /// untaught).
    pub fn new(
        node: &str,
        settings: DnsSettings,
        queue: u16,
        metrics: Arc<Metrics>,
    ) -> Result<DnsShell, String> {
        let writer = SetElementWriter::open(None).map_err(|error| error.to_string())?;
        let queue_tables = DnsQueueTables::open(None).map_err(|error| error.to_string())?;
        for server in &settings.unresolved {
            tracing::warn!(
                %server,
                "this trusted DNS server names a Kubernetes Service, which Sluice cannot resolve yet: it trusts no server; pass --dns-trusted-server or set dnsTrustedServers to addresses"
            );
        }
        let restore = read_cache(&settings);
        let shared = Shared {
            learner: Learner::new(settings.learner_config()),
            writer,
            changed: true,
            names: None,
            endpoint_addresses: HashMap::new(),
        };
        Ok(DnsShell {
            node: node.to_string(),
            settings,
            queue,
            shared: Arc::new(Mutex::new(shared)),
            metrics,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            restore: Some(restore),
            waiting: Vec::new(),
            carried: None,
            last_expire: Instant::now(),
            last_save: Instant::now(),
            last_publish: Instant::now() - PUBLISH_INTERVAL,
            evictions_seen: 0,
            queue_tables,
            queue_table_checked: None,
        })
    }

    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// Before a ruleset is rendered: tells the learner the node's endpoints and their
    /// interests (and, the first time, what the cache file holds), and returns what the
    /// renderer needs: the trusted servers, the queue, and every learned pair with the time it
    /// has left, so that a full rebuild (the first sync of a restarted agent included) holds
    /// them in the same transaction. The learner's batches wait for [`DnsShell::after_sync`]
    /// (the sets they fill may be new in this ruleset). When what the learner reads of the
    /// configuration changed, it is rebuilt from its own mappings.
    pub fn before_render(
        &mut self,
        dataplane: &Dataplane,
        local: &[LocalEndpoint],
        settings: DnsSettings,
    ) -> DnsRender {
        let endpoints = endpoints(dataplane, local);
        let now = Timestamp::from_system_time(SystemTime::now());
        let reconfigure = settings.learner_config() != self.settings.learner_config();
        self.settings = settings;
        let mut shared = lock(&self.shared);
        shared.endpoint_addresses = endpoints
            .iter()
            .map(|endpoint| (endpoint.key.clone(), endpoint.addresses.clone()))
            .collect();
        if reconfigure {
            tracing::info!("the DNS configuration changed; keeping what was learned");
            let entries = shared.learner.cache_entries();
            shared.learner = Learner::new(self.settings.learner_config());
            self.restore.get_or_insert_with(Vec::new).extend(entries);
        }
        self.waiting.extend(shared.learner.set_endpoints(now, endpoints));
        if let Some(entries) = self.restore.take() {
            self.waiting.extend(shared.learner.restore(now, entries));
        }
        // Endpoints and what was restored may have changed what names the flow log can give.
        shared.refresh_names();
        let carried = self
            .carried
            .get_or_insert_with(|| kernel_elements(&mut shared.writer, dataplane, now));
        carried.retain(|(_, expires)| *expires > now);
        let mut learned: Vec<LearnedElement> = carried
            .iter()
            .map(|(element, expires)| LearnedElement {
                remaining: expires.since(now),
                ..element.clone()
            })
            .collect();
        learned.extend(
            shared
                .learner
                .wanted_elements(now)
                .into_iter()
                .map(|(element, expires)| LearnedElement {
                    set: element.set,
                    endpoint: element.endpoint_address,
                    destination: element.address,
                    remaining: expires.since(now),
                }),
        );
        DnsRender {
            trusted_servers: self.settings.trusted_servers.clone(),
            queue: self.queue,
            learned,
        }
    }

    /// After the sync of the ruleset [`DnsShell::before_render`] prepared: programs the
    /// learner's waiting batches (or, when the kernel refused the ruleset, reports them
    /// failed), confirms everything after a full rebuild, and starts the queue (once).
    pub fn after_sync(&mut self, synced: bool, full_rebuild: bool) {
        let now = Timestamp::from_system_time(SystemTime::now());
        {
            let mut shared = lock(&self.shared);
            for batch in std::mem::take(&mut self.waiting) {
                if synced {
                    let _ = shared.program(batch);
                } else {
                    shared.learner.failed(batch.token);
                }
            }
            if synced
                && full_rebuild
                && let Some(batch) = shared.learner.resync(now)
            {
                let _ = shared.program(batch);
            }
            self.metrics.dns.mappings.set(shared.learner.mappings() as i64);
        }
        if !synced {
            return;
        }
        if self.thread.is_none() {
            self.start_queue();
        }
        self.keep_queue_table();
    }

    /// The table that sends answers the ruleset marked to the queue; installed after the
    /// queue is bound, so that no marked answer waits for a listener that is not there yet,
    /// and put back (checked at most once a second) if someone removed or changed it.
    fn keep_queue_table(&mut self) {
        if self
            .queue_table_checked
            .is_some_and(|checked| checked.elapsed() < QUEUE_TABLE_CHECK_INTERVAL)
        {
            return;
        }
        let queue = DnsQueue {
            queue: self.queue,
            mark: MARK_DNS_QUEUE,
            priority: DNS_QUEUE_PRIORITY + 10,
        };
        let result = match self.queue_tables.is_installed(&queue) {
            Ok(true) => Ok(()),
            Ok(false) => {
                if self.queue_table_checked.is_some() {
                    tracing::warn!(
                        "the table that holds DNS answers was removed or changed; putting it back"
                    );
                }
                self.queue_tables.install(&queue)
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => self.queue_table_checked = Some(Instant::now()),
            Err(error) => tracing::error!(
                %error,
                "cannot install the table that holds DNS answers in the queue; answers pass unheld and teach nothing, so domain rules allow nothing new"
            ),
        }
    }

    /// Binds the queue here (so answers queued from now on are decided; when binding fails,
    /// the thread keeps trying) and starts the thread that reads it.
    fn start_queue(&mut self) {
        let socket = match QueueSocket::bind(self.queue, QUEUE_READ_TIMEOUT) {
            Ok(socket) => {
                tracing::info!(
                    queue = self.queue,
                    "holding DNS answers in the queue until their addresses are programmed"
                );
                Some(socket)
            }
            Err(error) => {
                tracing::error!(queue = self.queue, %error, "cannot bind the DNS queue; answers to pods with domain rules are dropped until it binds");
                None
            }
        };
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        let metrics = self.metrics.clone();
        let queue = self.queue;
        let spawned = std::thread::Builder::new()
            .name("dns-queue".into())
            .spawn(move || run_queue(queue, socket, &shared, &stop, &metrics));
        match spawned {
            Ok(thread) => self.thread = Some(thread),
            Err(error) => tracing::error!(%error, "cannot start the DNS queue thread"),
        }
    }

    /// What local endpoints resolved, for the flow log (kept current by this shell from now on).
    pub fn learned_names(&self) -> LearnedNames {
        let mut shared = lock(&self.shared);
        let names = shared.names.get_or_insert_with(LearnedNames::default).clone();
        shared.refresh_names();
        names
    }

    /// When [`DnsShell::tick`] next has work.
    pub fn next_due(&self) -> Instant {
        (self.last_expire + EXPIRE_INTERVAL).min(self.last_save + self.settings.cache_save_interval)
    }

    /// Expires mappings each second, saves the cache file every `dnsCacheSaveInterval` and
    /// publishes the learned snapshot when it changed (at most once a second).
    pub fn tick(&mut self, store: &dyn Store) {
        let now = Instant::now();
        // Once the queue is bound, the table that feeds it is kept in place.
        if self.thread.is_some() {
            self.keep_queue_table();
        }
        if now >= self.last_expire + EXPIRE_INTERVAL {
            self.last_expire = now;
            let mut shared = lock(&self.shared);
            let before = shared.learner.mappings();
            if let Some(batch) = shared
                .learner
                .expire(Timestamp::from_system_time(SystemTime::now()))
            {
                let _ = shared.program(batch);
            }
            let counters = shared.learner.counters();
            let evictions =
                counters.evicted_per_name + counters.evicted_per_endpoint + counters.evicted_per_node;
            self.metrics
                .dns
                .evictions
                .inc_by(evictions.saturating_sub(self.evictions_seen));
            self.evictions_seen = evictions;
            self.metrics.dns.mappings.set(shared.learner.mappings() as i64);
            if shared.learner.mappings() != before {
                shared.changed = true;
                shared.refresh_names();
            }
        }
        if now >= self.last_save + self.settings.cache_save_interval {
            self.last_save = now;
            self.save();
        }
        if now >= self.last_publish + PUBLISH_INTERVAL {
            self.publish(store);
        }
    }

    fn publish(&mut self, store: &dyn Store) {
        let snapshot = {
            let mut shared = lock(&self.shared);
            if !shared.changed {
                return;
            }
            shared.changed = false;
            shared.learner.snapshot()
        };
        self.last_publish = Instant::now();
        let record = DnsCacheRecord::from_snapshot(&self.node, snapshot);
        let write = [Operation::Put {
            key: dns_cache_key(&self.node),
            value: serde_json::to_vec(&record).expect("the record serializes"),
            condition: Condition::Any,
        }];
        if let Err(error) = store.commit(&write) {
            self.metrics.datastore_errors.inc();
            tracing::warn!(%error, "could not publish the learned DNS mappings");
            lock(&self.shared).changed = true;
        }
    }

    /// Writes the cache file (atomically: a whole old file or a whole new one).
    pub fn save(&self) {
        let entries = lock(&self.shared).learner.cache_entries();
        let bytes = sluice_dns::cache::to_bytes(self.settings.cache_epoch, &entries);
        if let Err(error) = sluice_dns::cache_file::write(&self.settings.cache_file, &bytes) {
            tracing::warn!(file = %self.settings.cache_file.display(), %error, "could not save the DNS cache file");
        }
    }

    /// Stops the queue thread (within the queue's read timeout and one batch) and saves the
    /// cache file. Answers queued after this are dropped until an agent binds the queue
    /// again; the learned elements stay in the kernel until their timeouts.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.save();
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves the learner consistent enough to go on: every
    // operation on it is a whole step.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_cache(settings: &DnsSettings) -> Vec<CacheEntry> {
    let path: &Path = &settings.cache_file;
    let now = Timestamp::from_system_time(SystemTime::now());
    match sluice_dns::cache_file::read(path) {
        Ok(None) => Vec::new(),
        Ok(Some(bytes)) => match sluice_dns::cache::from_bytes(&bytes, settings.cache_epoch, now) {
            Ok(entries) => {
                tracing::info!(file = %path.display(), entries = entries.len(), "read the DNS cache file");
                entries
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "ignoring the DNS cache file");
                Vec::new()
            }
        },
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read the DNS cache file");
            Vec::new()
        }
    }
}

/// The pairs in the kernel's sets of the policy's domain sets now, with their expiry (sets
/// not in the kernel, as on a fresh node, have none).
fn kernel_elements(
    writer: &mut SetElementWriter,
    dataplane: &Dataplane,
    now: Timestamp,
) -> Vec<(LearnedElement, Timestamp)> {
    let table = sluice_nft::Table::new(sluice_nft::Family::Inet, sluice_dataplane::TABLE_NAME);
    let mut found = Vec::new();
    for set in &dataplane.domain_sets {
        for family in [IpFamily::V4, IpFamily::V6] {
            let Ok(elements) = writer.list(&table, &domain_set_name(&set.name, family)) else {
                continue;
            };
            for element in elements {
                let (sluice_nft::ElementKey::Pair(endpoint, destination), Some(left)) =
                    (element.key, element.expires)
                else {
                    continue;
                };
                let expires = Timestamp::from_unix_milliseconds(
                    now.unix_milliseconds()
                        .saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
                );
                let learned = LearnedElement {
                    set: set.name.clone(),
                    endpoint,
                    destination,
                    remaining: left,
                };
                found.push((learned, expires));
            }
        }
    }
    if !found.is_empty() {
        tracing::info!(
            pairs = found.len(),
            "keeping the learned pairs found in the kernel"
        );
    }
    found
}

/// The learner's view of the node's programmed endpoints: addresses, and the domain sets
/// their egress rules allow.
pub fn endpoints(dataplane: &Dataplane, local: &[LocalEndpoint]) -> Vec<Endpoint> {
    local
        .iter()
        .filter_map(|endpoint| dataplane.endpoint_by_name(&endpoint.namespace, &endpoint.name))
        .map(|program| Endpoint {
            key: program.display_name(),
            addresses: program.addresses.clone(),
            interests: dataplane
                .domain_sets_for(program.id)
                .into_iter()
                .map(|set| Interest {
                    set: set.name.clone(),
                    patterns: set.patterns.clone(),
                })
                .collect(),
        })
        .collect()
}

/// The queue thread: binds the queue (retrying while another process holds it) and decides
/// every packet until `stop`.
fn run_queue(
    queue: u16,
    mut socket: Option<QueueSocket>,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
    metrics: &Metrics,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(bound) = socket.as_mut() else {
            match QueueSocket::bind(queue, QUEUE_READ_TIMEOUT) {
                Ok(bound) => {
                    tracing::info!(
                        queue,
                        "holding DNS answers in the queue until their addresses are programmed"
                    );
                    socket = Some(bound);
                }
                Err(error) => {
                    tracing::error!(queue, %error, "cannot bind the DNS queue; answers to pods with domain rules are dropped until it binds");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            continue;
        };
        match bound.receive() {
            Ok(Some(packet)) => handle(bound, packet, shared, metrics),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "reading the DNS queue");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Decides one packet and gives its verdict.
fn handle(socket: &mut QueueSocket, packet: QueuedPacket, shared: &Mutex<Shared>, metrics: &Metrics) {
    let started = Instant::now();
    let mut shared = lock(shared);
    let decision = shared
        .learner
        .decide(Timestamp::from_system_time(SystemTime::now()), &packet.payload);
    let verdict = match decision {
        Decision::Pass => {
            metrics.dns.answers_passed.inc();
            Verdict::Accept
        }
        Decision::PassAndProgram(batch) => {
            metrics.dns.answers_passed.inc();
            // Release first: the batch only removes (evicted mappings).
            send_verdict(socket, packet.id, Verdict::Accept);
            let _ = shared.program(batch);
            return;
        }
        Decision::Hold(batch) => {
            let token = batch.token;
            let programmed = kernel::program(&mut shared.writer, &batch);
            let waited = started.elapsed();
            shared.changed = true;
            match programmed {
                Ok(()) if waited <= HOLD_LIMIT => {
                    shared.learner.programmed(token);
                    // Before the answer goes: the connection it leads to is logged by name.
                    shared.refresh_names_of(
                        batch
                            .additions
                            .iter()
                            .map(|addition| addition.element.endpoint_address),
                    );
                    metrics.dns.answers_held.inc();
                    metrics.dns.hold_seconds.observe(waited.as_secs_f64());
                    Verdict::Accept
                }
                outcome => {
                    if let Err(error) = outcome {
                        tracing::warn!(%error, "dropping a DNS answer whose addresses could not be programmed");
                    } else {
                        tracing::warn!(
                            ?waited,
                            "dropping a DNS answer whose addresses took too long to program"
                        );
                    }
                    shared.learner.failed(token);
                    metrics.dns.answers_dropped.inc();
                    Verdict::Drop
                }
            }
        }
    };
    drop(shared);
    send_verdict(socket, packet.id, verdict);
}

fn send_verdict(socket: &mut QueueSocket, id: u32, verdict: Verdict) {
    if let Err(error) = socket.verdict(id, verdict) {
        tracing::warn!(%error, id, "could not give a queued DNS answer its verdict");
    }
}
