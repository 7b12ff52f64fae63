//! The learning state machine: DNS responses in, decisions and set elements out.
//!
//! It keeps, per local endpoint, what that endpoint resolved (name → addresses, each with an
//! absolute expiry) and, per domain set element the endpoint's interests imply, the latest
//! expiry wanted and the latest the shell confirmed as programmed. A packet passes when
//! everything it teaches is already programmed at least as long; otherwise it is held until
//! the shell programs the batch. Nothing is shared between endpoints.
//!
//! The learner trusts only [`Learner::programmed`]: an element that is only asked for (its
//! batch in flight, or failed) is not believed to be in the kernel, so a second response
//! teaching it is held too, and a failed batch leaves the element to be asked for again by
//! the next response that teaches it (the client's retry, or a retransmitted TCP segment).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use crate::cache::CacheEntry;
use crate::config::Config;
use crate::endpoint::{Addition, Batch, BatchToken, Element, Endpoint};
use crate::message::{self, Resolution};
use crate::packet::{self, TransportKind};
use crate::tcp::{Connection, Streams};
use crate::time::Timestamp;

/// How long the shell may hold a packet for its batch before dropping it (the client retries).
pub const HOLD_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
/// The shortest life of a learned mapping, whatever the TTL says.
pub const MINIMUM_LIFETIME_SECONDS: u64 = 2;
/// Batches the shell has neither confirmed nor failed that are remembered; older ones are
/// forgotten (their elements stay unconfirmed, so they are asked for again).
const PENDING_BATCHES: usize = 4096;

/// What the shell does with a queued packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Release it now; nothing to program.
    Pass,
    /// Program the batch, then release the packet; drop the packet if the batch fails or
    /// takes longer than [`HOLD_LIMIT`]. Either way answer with `programmed`/`failed`.
    Hold(Batch),
    /// Release it now and program the batch, which holds only removals (mappings evicted to
    /// make room for this response's).
    PassAndProgram(Batch),
}

/// Counts for metrics, monotonic since the learner was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packets decided.
    pub packets: u64,
    /// Not a readable IPv4/IPv6 UDP or TCP packet, or a fragment.
    pub unreadable: u64,
    /// From an address and port that is not a trusted server.
    pub untrusted: u64,
    /// From a trusted server to an address that is no local endpoint's.
    pub not_to_endpoint: u64,
    /// DNS messages that teach nothing: unparsable, a query, truncated or an error rcode.
    pub refused_messages: u64,
    /// DNS messages learned from.
    pub messages: u64,
    /// Packets held for a batch.
    pub holds: u64,
    pub batches_programmed: u64,
    pub batches_failed: u64,
    /// Mappings evicted because their name had too many addresses.
    pub evicted_per_name: u64,
    /// Mappings evicted because their endpoint had too many.
    pub evicted_per_endpoint: u64,
    /// Mappings evicted because the node had too many.
    pub evicted_per_node: u64,
    /// Mappings that reached their expiry.
    pub expired: u64,
    /// TCP connections forgotten to make room for another.
    pub tcp_streams_evicted: u64,
    /// TCP segments beyond a gap not kept (the connection's allowance was full).
    pub tcp_segments_dropped: u64,
}

/// What an endpoint learned, for `sluice get dnscache`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSnapshot {
    pub endpoint: String,
    pub names: BTreeMap<String, Vec<LearnedAddress>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LearnedAddress {
    pub address: IpAddr,
    /// Unix seconds.
    pub expires: u64,
}

/// The facts one DNS message taught, with absolute expiries, kept per TCP message so that a
/// retransmission of its last segment is decided again without extending anything.
type Memo = Arc<Vec<(Arc<str>, IpAddr, Timestamp)>>;

#[derive(Debug)]
pub struct Learner {
    config: Config,
    endpoints: HashMap<Arc<str>, EndpointState>,
    by_address: HashMap<IpAddr, Arc<str>>,
    /// Every mapping by the order it was last learned, for oldest-first eviction.
    order: BTreeMap<u64, MappingKey>,
    next_sequence: u64,
    streams: Streams<Memo>,
    pending: BTreeMap<BatchToken, Vec<(Arc<str>, Element, Timestamp)>>,
    next_token: u64,
    counters: Counters,
}

#[derive(Debug)]
struct EndpointState {
    endpoint: Endpoint,
    names: HashMap<Arc<str>, Vec<Learned>>,
    /// Mappings in `names`.
    mappings: usize,
    elements: HashMap<Element, ElementState>,
}

#[derive(Debug, Clone, Copy)]
struct Learned {
    address: IpAddr,
    expires: Timestamp,
    sequence: u64,
}

#[derive(Debug, Clone, Copy)]
struct ElementState {
    /// Mappings of the endpoint that imply the element.
    supporters: u32,
    /// The latest expiry any of them asked for.
    wanted: Timestamp,
    /// The latest expiry the shell confirmed programmed.
    programmed: Option<Timestamp>,
}

#[derive(Debug, Clone)]
struct MappingKey {
    endpoint: Arc<str>,
    name: Arc<str>,
    address: IpAddr,
}

/// Additions and removals gathered while handling one event.
#[derive(Debug, Default)]
struct Work {
    additions: BTreeMap<(Arc<str>, Element), Timestamp>,
    removals: Vec<Element>,
}

impl Learner {
    pub fn new(config: Config) -> Learner {
        let streams = Streams::new(config.tcp);
        Learner {
            config,
            endpoints: HashMap::new(),
            by_address: HashMap::new(),
            order: BTreeMap::new(),
            next_sequence: 0,
            streams,
            pending: BTreeMap::new(),
            next_token: 0,
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counters(&self) -> Counters {
        let streams = self.streams.counters();
        Counters {
            tcp_streams_evicted: streams.streams_evicted,
            tcp_segments_dropped: streams.segments_dropped,
            ..self.counters
        }
    }

    /// Mappings (endpoint, name, address) held now.
    pub fn mappings(&self) -> usize {
        self.order.len()
    }

    /// Domain set elements the endpoints' interests imply now.
    pub fn elements(&self) -> usize {
        self.endpoints.values().map(|state| state.elements.len()).sum()
    }

    /// Decides what to do with one queued packet (an IP packet, no link header) at `now`.
    pub fn decide(&mut self, now: Timestamp, packet: &[u8]) -> Decision {
        self.counters.packets += 1;
        let Ok(transport) = packet::read(packet) else {
            self.counters.unreadable += 1;
            return Decision::Pass;
        };
        if !self.is_trusted(transport.source) {
            self.counters.untrusted += 1;
            return Decision::Pass;
        }
        let Some(endpoint) = self.by_address.get(&transport.destination.ip()).cloned() else {
            self.counters.not_to_endpoint += 1;
            return Decision::Pass;
        };
        let mut work = Work::default();
        match transport.kind {
            TransportKind::Udp => {
                if let Some(memo) = self.read_message(now, transport.payload) {
                    self.learn(now, &endpoint, &memo, &mut work);
                }
            }
            TransportKind::Tcp(flags) => {
                let connection = Connection {
                    server: transport.source,
                    client: transport.destination,
                };
                let progress =
                    self.streams
                        .segment(now.unix_milliseconds(), connection, flags, transport.payload);
                for memo in progress.repeated {
                    self.learn(now, &endpoint, &memo, &mut work);
                }
                for (end, message) in progress.completed {
                    let memo = self
                        .read_message(now, &message)
                        .unwrap_or_else(|| Arc::new(Vec::new()));
                    self.streams.remember(&connection, end, memo.clone());
                    self.learn(now, &endpoint, &memo, &mut work);
                }
            }
        }
        match self.batch(now, work) {
            None => Decision::Pass,
            Some(batch) if batch.additions.is_empty() => Decision::PassAndProgram(batch),
            Some(batch) => {
                self.counters.holds += 1;
                Decision::Hold(batch)
            }
        }
    }

    /// The shell programmed the batch: its additions are in the kernel until their expiry.
    pub fn programmed(&mut self, token: BatchToken) {
        let Some(additions) = self.pending.remove(&token) else {
            return;
        };
        self.counters.batches_programmed += 1;
        for (endpoint, element, expires) in additions {
            let state = self
                .endpoints
                .get_mut(&endpoint)
                .and_then(|state| state.elements.get_mut(&element));
            if let Some(state) = state {
                state.programmed = Some(state.programmed.map_or(expires, |old| old.max(expires)));
            }
        }
    }

    /// The shell could not program the batch (or gave up on it): nothing in it is believed
    /// to be in the kernel beyond what was confirmed before, so the next response teaching
    /// those elements is held again.
    pub fn failed(&mut self, token: BatchToken) {
        if self.pending.remove(&token).is_some() {
            self.counters.batches_failed += 1;
        }
    }

    /// Replaces the node's local endpoints. Mappings an endpoint already learned that now
    /// fall in a new set are added (so a policy applied after the lookup works until the
    /// answer expires); elements no longer implied (an interest, an address or the endpoint
    /// went away) are removed, and a removed endpoint's mappings are forgotten.
    pub fn set_endpoints(&mut self, now: Timestamp, endpoints: Vec<Endpoint>) -> Option<Batch> {
        let mut work = Work::default();
        self.expire_into(now, &mut work);
        let mut incoming: BTreeMap<Arc<str>, Endpoint> = BTreeMap::new();
        for endpoint in endpoints {
            incoming.insert(Arc::from(endpoint.key.as_str()), endpoint);
        }
        let gone: Vec<Arc<str>> = self
            .endpoints
            .keys()
            .filter(|key| !incoming.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(state) = self.endpoints.remove(&key) {
                work.removals.extend(
                    state
                        .elements
                        .into_iter()
                        .filter(|(_, element_state)| element_state.in_kernel_after(now))
                        .map(|(element, _)| element),
                );
                for learned in state.names.values().flatten() {
                    self.order.remove(&learned.sequence);
                }
            }
        }
        for (key, endpoint) in incoming {
            match self.endpoints.get_mut(&key) {
                Some(state) if state.endpoint == endpoint => {}
                Some(state) => {
                    state.endpoint = endpoint;
                    state.recompute(now, &key, &mut work);
                }
                None => {
                    let state = EndpointState {
                        endpoint,
                        names: HashMap::new(),
                        mappings: 0,
                        elements: HashMap::new(),
                    };
                    self.endpoints.insert(key, state);
                }
            }
        }
        self.by_address.clear();
        let mut keys: Vec<&Arc<str>> = self.endpoints.keys().collect();
        keys.sort();
        for key in keys {
            for address in &self.endpoints[key].endpoint.addresses {
                // Two endpoints claiming one address: the first by key keeps it.
                self.by_address.entry(*address).or_insert_with(|| key.clone());
            }
        }
        self.batch(now, work)
    }

    /// Forgets mappings that expired by `now`, and TCP connections long silent. The kernel
    /// drops the elements by their own timeouts; the batch removes only elements the kernel
    /// would keep longer than the mappings behind them (one whose longer-lived mapping was
    /// evicted).
    pub fn expire(&mut self, now: Timestamp) -> Option<Batch> {
        let mut work = Work::default();
        self.expire_into(now, &mut work);
        self.streams.expire(now.unix_milliseconds());
        self.batch(now, work)
    }

    /// Everything wanted, to program again after the kernel's sets were rebuilt (a full
    /// resync of the table): nothing is believed programmed until this batch is confirmed.
    pub fn resync(&mut self, now: Timestamp) -> Option<Batch> {
        let mut work = Work::default();
        self.expire_into(now, &mut work);
        for (key, state) in &mut self.endpoints {
            for (element, element_state) in &mut state.elements {
                element_state.programmed = None;
                work.additions
                    .insert((key.clone(), element.clone()), element_state.wanted);
            }
        }
        self.batch(now, work)
    }

    /// Takes in mappings read from the cache file. Entries of endpoints the learner does not
    /// know (call [`Learner::set_endpoints`] first) and entries already expired are dropped.
    pub fn restore(&mut self, now: Timestamp, entries: Vec<CacheEntry>) -> Option<Batch> {
        let mut work = Work::default();
        let mut by_endpoint: BTreeMap<String, Vec<(Arc<str>, IpAddr, Timestamp)>> = BTreeMap::new();
        for entry in entries {
            by_endpoint.entry(entry.endpoint).or_default().push((
                Arc::from(entry.name.as_str()),
                entry.address,
                Timestamp::from_unix_seconds(entry.expires),
            ));
        }
        for (endpoint, facts) in by_endpoint {
            let Some((key, _)) = self.endpoints.get_key_value(endpoint.as_str()) else {
                continue;
            };
            let key = key.clone();
            self.learn(now, &key, &facts, &mut work);
        }
        self.batch(now, work)
    }

    /// Every element the endpoints' mappings imply that lives past `now`, with its expiry:
    /// what a full rebuild of the table writes back so that it loses nothing learned. Call
    /// [`Learner::resync`] after that rebuild, so the learner believes them programmed.
    pub fn wanted_elements(&self, now: Timestamp) -> Vec<(Element, Timestamp)> {
        let mut elements: Vec<(Element, Timestamp)> = self
            .endpoints
            .values()
            .flat_map(|state| &state.elements)
            .filter(|(_, state)| state.wanted > now)
            .map(|(element, state)| (element.clone(), state.wanted))
            .collect();
        elements.sort();
        elements
    }

    /// Every mapping held, for the cache file.
    pub fn cache_entries(&self) -> Vec<CacheEntry> {
        let mut entries: Vec<CacheEntry> = self
            .endpoints
            .iter()
            .flat_map(|(key, state)| {
                state.names.iter().flat_map(move |(name, learned)| {
                    learned.iter().map(move |learned| CacheEntry {
                        endpoint: key.to_string(),
                        name: name.to_string(),
                        address: learned.address,
                        expires: learned.expires.unix_seconds(),
                    })
                })
            })
            .collect();
        entries.sort();
        entries
    }

    /// The (name, address) pairs one endpoint (by its key) learned, in no order: for a reader
    /// that indexes them, without a snapshot's copies.
    pub fn learned_pairs(&self, endpoint: &str) -> impl Iterator<Item = (&str, IpAddr)> + '_ {
        self.endpoints.get(endpoint).into_iter().flat_map(|state| {
            state
                .names
                .iter()
                .flat_map(|(name, learned)| learned.iter().map(move |learned| (&**name, learned.address)))
        })
    }

    /// What each endpoint learned, sorted by endpoint, name and address.
    pub fn snapshot(&self) -> Vec<EndpointSnapshot> {
        let mut snapshot: Vec<EndpointSnapshot> = self
            .endpoints
            .iter()
            .map(|(key, state)| EndpointSnapshot {
                endpoint: key.to_string(),
                names: state
                    .names
                    .iter()
                    .map(|(name, learned)| {
                        let mut addresses: Vec<LearnedAddress> = learned
                            .iter()
                            .map(|learned| LearnedAddress {
                                address: learned.address,
                                expires: learned.expires.unix_seconds(),
                            })
                            .collect();
                        addresses.sort();
                        (name.to_string(), addresses)
                    })
                    .collect(),
            })
            .collect();
        snapshot.sort_by(|left, right| left.endpoint.cmp(&right.endpoint));
        snapshot
    }

    fn is_trusted(&self, source: SocketAddr) -> bool {
        self.config
            .trusted_servers
            .iter()
            .any(|server| server.0 == source)
    }

    /// The facts of one DNS message with their expiries, or `None` if it teaches nothing.
    fn read_message(&mut self, now: Timestamp, message: &[u8]) -> Option<Memo> {
        match message::resolve(message) {
            Ok(resolutions) => {
                self.counters.messages += 1;
                let extra = u64::from(self.config.extra_ttl_seconds);
                let facts = resolutions
                    .into_iter()
                    .map(|Resolution { name, address, ttl }| {
                        let lifetime = (u64::from(ttl) + extra).max(MINIMUM_LIFETIME_SECONDS);
                        let expires = now.plus_seconds(lifetime).whole_second_up();
                        (Arc::from(name.as_str()), address, expires)
                    })
                    .collect();
                Some(Arc::new(facts))
            }
            Err(_) => {
                self.counters.refused_messages += 1;
                None
            }
        }
    }

    /// Records facts for one endpoint and gathers the elements to add.
    fn learn(
        &mut self,
        now: Timestamp,
        endpoint: &Arc<str>,
        facts: &[(Arc<str>, IpAddr, Timestamp)],
        work: &mut Work,
    ) {
        for (name, address, expires) in facts {
            if *expires <= now {
                continue;
            }
            self.learn_one(now, endpoint, name, *address, *expires, work);
        }
    }

    fn learn_one(
        &mut self,
        now: Timestamp,
        key: &Arc<str>,
        name: &Arc<str>,
        address: IpAddr,
        expires: Timestamp,
        work: &mut Work,
    ) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let Some(state) = self.endpoints.get_mut(key) else {
            return;
        };
        // Share the name's text with the entry already held for it.
        let name = match state.names.get_key_value(name) {
            Some((held, _)) => held.clone(),
            None => name.clone(),
        };
        let existing = state
            .names
            .get_mut(&name)
            .and_then(|learned| learned.iter_mut().find(|learned| learned.address == address));
        if let Some(learned) = existing {
            if expires > learned.expires {
                // A repeated answer extends (never shortens) and counts as fresh for eviction.
                learned.expires = expires;
                let old = std::mem::replace(&mut learned.sequence, sequence);
                if let Some(mapping) = self.order.remove(&old) {
                    self.order.insert(sequence, mapping);
                }
            }
            state.want(key, &name, address, expires, false, work);
            return;
        }
        let oldest_of_name = state.names.get(&name).and_then(|addresses| {
            (addresses.len() >= self.config.addresses_per_name)
                .then(|| addresses.iter().min_by_key(|learned| learned.sequence))
                .flatten()
                .map(|learned| learned.address)
        });
        if let Some(oldest) = oldest_of_name {
            self.counters.evicted_per_name += 1;
            self.forget(now, key, &name, oldest, work);
        } else if state.mappings >= self.config.mappings_per_endpoint.max(1) {
            // A scan of this endpoint's mappings: paid only by an endpoint at its cap.
            let oldest = state
                .names
                .iter()
                .flat_map(|(name, learned)| learned.iter().map(move |learned| (learned.sequence, name)))
                .min_by_key(|(sequence, _)| *sequence)
                .and_then(|(sequence, _)| self.order.get(&sequence))
                .cloned();
            if let Some(oldest) = oldest {
                self.counters.evicted_per_endpoint += 1;
                self.forget(now, key, &oldest.name, oldest.address, work);
            }
        }
        let Some(state) = self.endpoints.get_mut(key) else {
            return;
        };
        state.mappings += 1;
        // Most names have one address: start at one slot, not Vec's usual four.
        let addresses = state
            .names
            .entry(name.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        addresses.push(Learned {
            address,
            expires,
            sequence,
        });
        state.want(key, &name, address, expires, true, work);
        self.order.insert(
            sequence,
            MappingKey {
                endpoint: key.clone(),
                name,
                address,
            },
        );
        while self.order.len() > self.config.mappings_per_node.max(1) {
            let Some((_, oldest)) = self.order.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.counters.evicted_per_node += 1;
            self.forget(now, &oldest.endpoint, &oldest.name, oldest.address, work);
        }
    }

    /// Drops one mapping and the support it gave its elements. An element left without
    /// support leaves the kernel now if the kernel would keep it past `now`.
    fn forget(&mut self, now: Timestamp, key: &Arc<str>, name: &Arc<str>, address: IpAddr, work: &mut Work) {
        let Some(state) = self.endpoints.get_mut(key) else {
            return;
        };
        let Some(addresses) = state.names.get_mut(name) else {
            return;
        };
        let Some(position) = addresses.iter().position(|learned| learned.address == address) else {
            return;
        };
        let learned = addresses.swap_remove(position);
        state.mappings -= 1;
        if addresses.is_empty() {
            state.names.remove(name);
        }
        self.order.remove(&learned.sequence);
        for element in state.implied(name, address) {
            let Some(element_state) = state.elements.get_mut(&element) else {
                continue;
            };
            element_state.supporters = element_state.supporters.saturating_sub(1);
            if element_state.supporters > 0 {
                continue;
            }
            let in_kernel = element_state.in_kernel_after(now);
            state.elements.remove(&element);
            work.additions.remove(&(key.clone(), element.clone()));
            if in_kernel {
                work.removals.push(element);
            }
        }
    }

    fn expire_into(&mut self, now: Timestamp, work: &mut Work) {
        let mut expired = Vec::new();
        for (key, state) in &self.endpoints {
            for (name, learned) in &state.names {
                for learned in learned {
                    if learned.expires <= now {
                        expired.push((key.clone(), name.clone(), learned.address));
                    }
                }
            }
        }
        self.counters.expired += expired.len() as u64;
        for (key, name, address) in expired {
            self.forget(now, &key, &name, address, work);
        }
    }

    /// Turns gathered work into a batch to program, remembering its additions.
    fn batch(&mut self, now: Timestamp, work: Work) -> Option<Batch> {
        if work.additions.is_empty() && work.removals.is_empty() {
            return None;
        }
        let token = BatchToken(self.next_token);
        self.next_token += 1;
        let mut additions = Vec::with_capacity(work.additions.len());
        let mut pending = Vec::with_capacity(work.additions.len());
        for ((endpoint, element), expires) in work.additions {
            additions.push(Addition {
                element: element.clone(),
                expires,
                timeout_milliseconds: expires.since(now).as_millis() as u64,
            });
            pending.push((endpoint, element, expires));
        }
        if !pending.is_empty() {
            if self.pending.len() == PENDING_BATCHES {
                self.pending.pop_first();
            }
            self.pending.insert(token, pending);
        }
        let mut removals = work.removals;
        removals.sort();
        removals.dedup();
        Some(Batch {
            token,
            additions,
            removals,
        })
    }
}

impl ElementState {
    /// Whether the kernel holds the element past `now`, as far as the shell confirmed.
    fn in_kernel_after(&self, now: Timestamp) -> bool {
        self.programmed.is_some_and(|programmed| programmed > now)
    }
}

impl EndpointState {
    /// The elements a mapping of this endpoint implies: one per interest matching the name
    /// and endpoint address of the learned address's family.
    fn implied(&self, name: &str, address: IpAddr) -> Vec<Element> {
        let mut elements = Vec::new();
        for interest in &self.endpoint.interests {
            if !interest.matches(name) {
                continue;
            }
            for endpoint_address in &self.endpoint.addresses {
                if endpoint_address.is_ipv4() != address.is_ipv4() {
                    continue;
                }
                let element = Element {
                    set: interest.set.clone(),
                    endpoint_address: *endpoint_address,
                    address,
                };
                if !elements.contains(&element) {
                    elements.push(element);
                }
            }
        }
        elements
    }

    /// Raises the elements a mapping implies to `expires` and asks for those not programmed
    /// that long. `new` says the mapping was just created and supports them from now on.
    fn want(
        &mut self,
        key: &Arc<str>,
        name: &str,
        address: IpAddr,
        expires: Timestamp,
        new: bool,
        work: &mut Work,
    ) {
        for element in self.implied(name, address) {
            let state = self.elements.entry(element.clone()).or_insert(ElementState {
                supporters: 0,
                wanted: expires,
                programmed: None,
            });
            if new {
                state.supporters += 1;
            }
            state.wanted = state.wanted.max(expires);
            if state
                .programmed
                .is_some_and(|programmed| programmed >= state.wanted)
            {
                continue;
            }
            let slot = work
                .additions
                .entry((key.clone(), element))
                .or_insert(state.wanted);
            *slot = (*slot).max(state.wanted);
        }
    }

    /// Rebuilds the elements from the mappings after the endpoint's addresses or interests
    /// changed, keeping what is programmed of elements that stay.
    fn recompute(&mut self, now: Timestamp, key: &Arc<str>, work: &mut Work) {
        let mut elements: HashMap<Element, ElementState> = HashMap::new();
        for (name, learned) in &self.names {
            for learned in learned {
                for element in self.implied(name, learned.address) {
                    let state = elements.entry(element).or_insert(ElementState {
                        supporters: 0,
                        wanted: learned.expires,
                        programmed: None,
                    });
                    state.supporters += 1;
                    state.wanted = state.wanted.max(learned.expires);
                }
            }
        }
        for (element, old) in self.elements.drain() {
            match elements.get_mut(&element) {
                Some(state) => state.programmed = old.programmed,
                None => work.removals.push(element),
            }
        }
        for (element, state) in &elements {
            if state.wanted > now && state.programmed.is_none_or(|at| at < state.wanted) {
                work.additions
                    .insert((key.clone(), element.clone()), state.wanted);
            }
        }
        self.elements = elements;
    }
}
