//! Connections and denied flows in, one record per flow key and interval out.
//!
//! How a connection becomes a flow:
//! - An allowed [`LoggedPacket`] opens a tracked connection, keyed by the packet's tuple (the
//!   forward hook sees it after destination NAT and before source NAT). Its side is the logged
//!   hit's reporter (`src` for egress, `dst` for ingress); when the other end is a local
//!   endpoint too, its own logged decision adds its side (an allow) or a denied flow (a deny:
//!   the kernel then drops the packet, and the first side's connection is never confirmed). A
//!   repeated first packet of a tracked tuple (a retransmitted SYN is still `ct state new`)
//!   opens nothing.
//! - [`ConntrackEvent`]s bring cumulative counters; the core keeps the last seen and adds the
//!   difference. They are matched by the same tuple: the original direction's source and the
//!   reply direction's source as destination (where DNAT sent it). `Destroy` completes the
//!   connection; a new conntrack id on a tracked tuple ends the old connection first.
//! - Read by dumps alone (the agent's default, as Calico's collector polls conntrack), ends are
//!   seen in [`Aggregator::dumped`]: a TCP entry in TIME_WAIT or CLOSE completes its connection
//!   with its final counters (conntrack keeps such entries 120 s and 10 s), and a connection
//!   missing from a dump that started after it was opened has ended, with what the previous dump
//!   counted (its entry went between two dumps: reset and reaped, its tuple taken again, or a
//!   UDP or ICMP flow that timed out).
//! - A conntrack entry whose first packet was never logged (logged before the agent started,
//!   logged with an unknown id, or the log packet lost) is tracked with empty `policies` and
//!   action `allow` (conntrack confirmed it, so every hook accepted it), one side per local end;
//!   an entry with no local end is not this node's and only counted. It is left out of the
//!   records for `unlogged_grace_milliseconds` after it was first seen (the log is read apart
//!   from the dumps, so a dump can list a connection whose logged first packet is still queued). Seen first as `New`, its
//!   counters count from the start; seen first as `Update` (a dump), only what it carries from
//!   then on, so an agent restart or an evicted connection does not count old bytes twice.
//! - A denied [`LoggedPacket`] is a denied flow: the first of its (tuple, reporter) in an
//!   interval starts and completes a flow; every denied packet adds its packet and length.
//! - At each interval's end [`Aggregator::drain`] folds each live connection into its keys
//!   (one flow, live) and returns the records; live connections carry over.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use sluice_api::values::Action;
use sluice_policy::{Dataplane, Flow, HitId, PolicyHit};

use crate::attribution::Attribution;
use crate::config::{Config, ConfigError};
use crate::counters::{ActionCounters, Gauges, Statistics, Usage};
use crate::events::{ConntrackEvent, ConntrackEventKind, Counters, LoggedPacket, Timestamp, Tuple};
use crate::naming::{DomainNames, EndpointType, Naming, NetworkSetName, PeerName};
use crate::record::{FlowAction, FlowRecord, Reporter, has_ports, protocol_name};
use crate::{FastMap, FastSet};

/// What the staged policies would decide for a flow: the "what if" verdict, computed by the
/// caller with the one evaluator over the staged IR.
pub trait PendingPolicies {
    /// The hits that would decide `query.flow` on the reporter's side.
    fn pending(&self, query: &PendingQuery<'_>) -> Vec<PolicyHit>;
}

impl<F: Fn(&PendingQuery<'_>) -> Vec<PolicyHit>> PendingPolicies for F {
    fn pending(&self, query: &PendingQuery<'_>) -> Vec<PolicyHit> {
        self(query)
    }
}

/// One flow key, asked about once per interval with the first connection that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingQuery<'a> {
    pub flow: Flow,
    pub destination_domain: Option<&'a str>,
    pub reporter: Reporter,
}

/// The evaluator's flow for a tuple (ICMP's type and code from its destination port).
pub fn flow_of(tuple: &Tuple) -> Flow {
    let ports = has_ports(tuple.protocol);
    let icmp = matches!(tuple.protocol, 1 | 58);
    Flow {
        source: tuple.source,
        destination: tuple.destination,
        protocol: tuple.protocol,
        source_port: ports.then_some(tuple.source_port),
        destination_port: ports.then_some(tuple.destination_port),
        icmp_type: icmp.then_some((tuple.destination_port >> 8) as u8),
        icmp_code: icmp.then_some((tuple.destination_port & 0xff) as u8),
    }
}

/// The flow-log state machine. Feed it events with their times, call [`Aggregator::drain`] at
/// [`Aggregator::next_drain`].
pub struct Aggregator {
    config: Config,
    attribution: Attribution,
    naming: Naming,
    domains: Option<Box<dyn DomainNames + Send>>,
    pending: Option<Box<dyn PendingPolicies + Send>>,
    interval_start: Timestamp,
    connections: FastMap<Tuple, Connection>,
    /// Least recently active first: what eviction takes.
    by_recency: BTreeMap<u64, Tuple>,
    next_recency: u64,
    denied_seen: FastSet<(Tuple, Reporter)>,
    denied_order: VecDeque<(Tuple, Reporter)>,
    /// Counts the dumps; each connection remembers the last one that listed it.
    dump_generation: u64,
    tally: Tally,
}

impl fmt::Debug for Aggregator {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Aggregator")
            .field("config", &self.config)
            .field("interval_start", &self.interval_start)
            .field("gauges", &self.gauges())
            .field("statistics", &self.tally.statistics)
            .finish_non_exhaustive()
    }
}

/// One reporter's view of a connection.
#[derive(Debug, Clone)]
enum Side {
    /// The id as logged (hashing the hit again would cost a string per packet).
    Attributed(HitId, Arc<PolicyHit>),
    /// A local end whose deciding hit was never logged.
    Unattributed,
}

#[derive(Debug, Clone)]
struct Connection {
    conntrack_id: Option<u32>,
    confirmed: bool,
    source: PeerName,
    destination: PeerName,
    domain: Option<Arc<str>>,
    /// By [`Reporter::index`].
    sides: [Option<Side>; 2],
    /// Cumulative counters last seen, original then reply direction.
    seen: [Counters; 2],
    /// Counted since the connection was last folded into a record.
    unreported: [Counters; 2],
    started_in_interval: bool,
    last_event: Timestamp,
    /// When it was first tracked.
    opened_at: Timestamp,
    recency: u64,
    /// The last dump that listed it.
    dump_generation: u64,
    /// The logged first packet's TCP sequence number.
    tcp_sequence: Option<u32>,
    /// Opened from a dump with no logged first packet: what conntrack had counted then, left
    /// uncounted in case it was counted before (an agent restart). A first packet logged later
    /// shows the connection is new, and this is its own.
    uncounted: Option<[Counters; 2]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Live,
    Completed,
    /// Evicted: what it carried so far is kept, it is neither live nor completed.
    Evicted,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlowKey {
    source: PeerName,
    source_address: Option<IpAddr>,
    destination: PeerName,
    destination_address: Option<IpAddr>,
    domain: Option<Arc<str>>,
    destination_port: Option<u16>,
    protocol: u8,
    reporter: Reporter,
    action: FlowAction,
    policy: Option<Arc<PolicyHit>>,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// The first connection of the key, for the pending query.
    sample: Option<Tuple>,
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    num_flows: u64,
    started: u64,
    completed: u64,
    live: u64,
}

/// The interval's buckets and the running counters: apart from the connections, so that a
/// connection can be folded while the map holding it is borrowed.
#[derive(Debug, Default)]
struct Tally {
    buckets: FastMap<FlowKey, Bucket>,
    allowed_keys: usize,
    denied_keys: usize,
    hit_usage: FastMap<HitId, (Arc<PolicyHit>, Usage)>,
    actions: ActionCounters,
    statistics: Statistics,
}

impl Tally {
    /// The key's bucket, made if the interval has room for another key of its action.
    fn bucket(&mut self, key: FlowKey, sample: Tuple, config: &Config) -> Option<&mut Bucket> {
        if !self.buckets.contains_key(&key) {
            let (count, cap, refused) = match key.action {
                FlowAction::Allow => (
                    &mut self.allowed_keys,
                    config.max_allowed_keys,
                    &mut self.statistics.allowed_keys_refused,
                ),
                FlowAction::Deny => (
                    &mut self.denied_keys,
                    config.max_denied_keys,
                    &mut self.statistics.denied_keys_refused,
                ),
            };
            if *count >= cap {
                *refused += 1;
                return None;
            }
            *count += 1;
        }
        let bucket = self.buckets.entry(key).or_default();
        bucket.sample.get_or_insert(sample);
        Some(bucket)
    }

    fn hit_usage(&mut self, id: HitId, hit: &Arc<PolicyHit>) -> &mut Usage {
        &mut self
            .hit_usage
            .entry(id)
            .or_insert_with(|| (hit.clone(), Usage::default()))
            .1
    }

    /// Adds what a connection carried since it was last folded to its sides' keys.
    fn fold(&mut self, config: &Config, tuple: &Tuple, connection: &mut Connection, ending: Ending) {
        let [original, reply] = connection.unreported;
        let packets = original.packets.saturating_add(reply.packets);
        let bytes = original.bytes.saturating_add(reply.bytes);
        for reporter in [Reporter::Src, Reporter::Dst] {
            let Some(side) = connection.sides[reporter.index()].clone() else {
                continue;
            };
            let policy = match side {
                Side::Attributed(id, hit) => {
                    self.hit_usage(id, &hit).add(packets, bytes, 0);
                    Some(hit)
                }
                Side::Unattributed => None,
            };
            self.actions.allow.add(packets, bytes, 0);
            // Reporter-relative, as Calico: the source sends the original direction, the
            // destination receives it.
            let (received, sent) = match reporter {
                Reporter::Src => (reply, original),
                Reporter::Dst => (original, reply),
            };
            let key = flow_key(
                config,
                tuple,
                &connection.source,
                &connection.destination,
                connection.domain.clone(),
                reporter,
                FlowAction::Allow,
                policy,
            );
            if let Some(bucket) = self.bucket(key, *tuple, config) {
                bucket.num_flows += 1;
                bucket.started += u64::from(connection.started_in_interval);
                bucket.completed += u64::from(ending == Ending::Completed);
                bucket.live += u64::from(ending == Ending::Live);
                bucket.packets_in = bucket.packets_in.saturating_add(received.packets);
                bucket.bytes_in = bucket.bytes_in.saturating_add(received.bytes);
                bucket.packets_out = bucket.packets_out.saturating_add(sent.packets);
                bucket.bytes_out = bucket.bytes_out.saturating_add(sent.bytes);
            }
        }
        connection.unreported = [Counters::default(); 2];
        connection.started_in_interval = false;
    }
}

#[allow(clippy::too_many_arguments)]
fn flow_key(
    config: &Config,
    tuple: &Tuple,
    source: &PeerName,
    destination: &PeerName,
    domain: Option<Arc<str>>,
    reporter: Reporter,
    action: FlowAction,
    policy: Option<Arc<PolicyHit>>,
) -> FlowKey {
    let is_network = |peer: &PeerName| peer.kind == EndpointType::Network;
    FlowKey {
        source: source.clone(),
        source_address: (config.network_source_addresses && is_network(source)).then_some(tuple.source),
        destination: destination.clone(),
        destination_address: (config.network_destination_addresses && is_network(destination))
            .then_some(tuple.destination),
        domain,
        destination_port: has_ports(tuple.protocol).then_some(tuple.destination_port),
        protocol: tuple.protocol,
        reporter,
        action,
        policy,
    }
}

/// The tuple the dataplane's deciding rule saw, from a conntrack entry: the original source,
/// and the destination DNAT chose (the reply's source). ICMP keeps the original's type and code.
pub fn decided_tuple(event: &ConntrackEvent) -> Tuple {
    let original = event.original;
    Tuple {
        destination: event.reply.source,
        destination_port: if has_ports(original.protocol) {
            event.reply.source_port
        } else {
            original.destination_port
        },
        ..original
    }
}

fn difference(current: Counters, seen: Counters) -> Counters {
    // Conntrack's counters only grow while its id lives; smaller means another entry.
    if current.packets < seen.packets || current.bytes < seen.bytes {
        current
    } else {
        Counters {
            packets: current.packets - seen.packets,
            bytes: current.bytes - seen.bytes,
        }
    }
}

fn add_counters(total: &mut Counters, more: Counters) {
    total.packets = total.packets.saturating_add(more.packets);
    total.bytes = total.bytes.saturating_add(more.bytes);
}

impl Aggregator {
    /// An aggregator whose first interval starts at `now`, with no policy known yet.
    pub fn new(config: Config, now: Timestamp) -> Result<Aggregator, ConfigError> {
        config.validate()?;
        Ok(Aggregator {
            attribution: Attribution::new(config.attribution_grace_milliseconds),
            naming: Naming::default(),
            domains: None,
            pending: None,
            interval_start: now,
            connections: FastMap::default(),
            by_recency: BTreeMap::new(),
            next_recency: 0,
            denied_seen: FastSet::default(),
            denied_order: VecDeque::new(),
            dump_generation: 0,
            tally: Tally::default(),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// After each compile: the hits to attribute by (the previous compile's stay for the grace
    /// period) and the names of endpoints and network sets. Tracked connections keep the names
    /// they were opened with.
    pub fn update_policy(&mut self, dataplane: &Dataplane, network_sets: &[NetworkSetName], now: Timestamp) {
        self.attribution.replace(dataplane, now);
        self.naming = Naming::new(dataplane, network_sets, &self.config.host);
    }

    /// Where destinations' domain names come from (none by default).
    pub fn set_domain_names(&mut self, domains: Option<Box<dyn DomainNames + Send>>) {
        self.domains = domains;
    }

    /// Where `pending_policies` come from (none by default: the field stays empty).
    pub fn set_pending_policies(&mut self, pending: Option<Box<dyn PendingPolicies + Send>>) {
        self.pending = pending;
    }

    /// When the current interval ends.
    pub fn next_drain(&self) -> Timestamp {
        Timestamp(
            self.interval_start
                .0
                .saturating_add(self.config.interval_milliseconds),
        )
    }

    /// A packet the kernel logged at a deciding rule.
    pub fn logged_packet(&mut self, packet: &LoggedPacket) {
        self.tally.statistics.logged_packets += 1;
        let Some(id) = packet.hit else {
            self.tally.statistics.foreign_log_packets += 1;
            return;
        };
        let hit = match self.attribution.lookup(id, packet.at) {
            Some(hit) if matches!(hit.action, Action::Allow | Action::Deny) => hit,
            _ => {
                self.tally.statistics.unknown_hit_ids += 1;
                return;
            }
        };
        let reporter = Reporter::of_direction(hit.direction);
        if hit.action == Action::Allow {
            self.allowed_first_packet(packet, id, hit, reporter);
        } else {
            self.denied_packet(packet, id, hit, reporter);
        }
    }

    fn domain_for(&self, tuple: &Tuple, destination: &PeerName) -> Option<Arc<str>> {
        if destination.kind == EndpointType::Workload {
            return None;
        }
        let domains = self.domains.as_ref()?;
        domains
            .domain_of(tuple.source, tuple.destination)
            .map(|domain| Arc::from(domain.as_str()))
    }

    fn allowed_first_packet(
        &mut self,
        packet: &LoggedPacket,
        id: HitId,
        hit: Arc<PolicyHit>,
        reporter: Reporter,
    ) {
        let tuple = packet.tuple;
        let taken_again = self.connections.get(&tuple).is_some_and(|connection| {
            matches!((connection.tcp_sequence, packet.tcp_sequence), (Some(before), Some(now)) if before != now)
        });
        if taken_again {
            // Another SYN, not a retransmission: the tracked connection ended (unseen, between
            // two dumps) and a new one took its tuple.
            self.finish(&tuple, Ending::Completed);
        }
        if let Some(connection) = self.connections.get_mut(&tuple) {
            // Conntrack reported it first, or a repeated first packet: fill the side if empty.
            let side = &mut connection.sides[reporter.index()];
            if !matches!(side, Some(Side::Attributed(..))) {
                if side.is_none() {
                    self.tally.actions.allow.add(0, 0, 1);
                }
                *side = Some(Side::Attributed(id, hit.clone()));
                self.tally.hit_usage(id, &hit).add(0, 0, 1);
            }
            connection.tcp_sequence = connection.tcp_sequence.or(packet.tcp_sequence);
            if let Some(uncounted) = connection.uncounted.take() {
                // A dump listed it just before its first packet was read: it started now.
                for (direction, counted) in uncounted.into_iter().enumerate() {
                    add_counters(&mut connection.unreported[direction], counted);
                }
                connection.started_in_interval = true;
            }
            connection.last_event = connection.last_event.max(packet.at);
            self.touch(tuple);
            return;
        }
        // Only the logged side: the other end, when local, logs its own decision (which may
        // deny), so it is not assumed to allow.
        let mut sides = [None, None];
        sides[reporter.index()] = Some(Side::Attributed(id, hit.clone()));
        self.tally.hit_usage(id, &hit).add(0, 0, 1);
        let nothing = [Counters::default(); 2];
        self.open(tuple, sides, packet.at, true, None, (nothing, nothing));
        if let Some(connection) = self.connections.get_mut(&tuple) {
            connection.tcp_sequence = packet.tcp_sequence;
        }
    }

    /// An unattributed side for each end that is a local endpoint.
    fn local_sides(&self, tuple: &Tuple) -> [Option<Side>; 2] {
        [
            self.naming.is_local(tuple.source).then_some(Side::Unattributed),
            self.naming
                .is_local(tuple.destination)
                .then_some(Side::Unattributed),
        ]
    }

    fn open(
        &mut self,
        tuple: Tuple,
        sides: [Option<Side>; 2],
        at: Timestamp,
        started: bool,
        conntrack_id: Option<u32>,
        (seen, unreported): ([Counters; 2], [Counters; 2]),
    ) {
        while self.connections.len() >= self.config.max_connections && self.evict_least_recent() {}
        let sides_count = sides.iter().flatten().count() as u64;
        self.tally.actions.allow.add(0, 0, sides_count);
        let source = self.naming.name(tuple.source);
        let destination = self.naming.name(tuple.destination);
        let domain = self.domain_for(&tuple, &destination);
        let recency = self.next_recency;
        self.next_recency += 1;
        self.by_recency.insert(recency, tuple);
        self.connections.insert(
            tuple,
            Connection {
                conntrack_id,
                confirmed: conntrack_id.is_some(),
                source,
                destination,
                domain,
                sides,
                seen,
                unreported,
                started_in_interval: started,
                last_event: at,
                opened_at: at,
                recency,
                dump_generation: self.dump_generation,
                tcp_sequence: None,
                uncounted: None,
            },
        );
    }

    fn touch(&mut self, tuple: Tuple) {
        let Some(connection) = self.connections.get_mut(&tuple) else {
            return;
        };
        self.by_recency.remove(&connection.recency);
        connection.recency = self.next_recency;
        self.next_recency += 1;
        self.by_recency.insert(connection.recency, tuple);
    }

    /// Whether there was a connection to evict (the recency index lists every connection).
    fn evict_least_recent(&mut self) -> bool {
        let Some((_, tuple)) = self.by_recency.pop_first() else {
            return false;
        };
        if let Some(mut connection) = self.connections.remove(&tuple) {
            self.tally
                .fold(&self.config, &tuple, &mut connection, Ending::Evicted);
            self.tally.statistics.connections_evicted += 1;
        }
        true
    }

    fn finish(&mut self, tuple: &Tuple, ending: Ending) {
        if let Some(mut connection) = self.connections.remove(tuple) {
            self.by_recency.remove(&connection.recency);
            self.tally.fold(&self.config, tuple, &mut connection, ending);
        }
    }

    fn denied_packet(&mut self, packet: &LoggedPacket, id: HitId, hit: Arc<PolicyHit>, reporter: Reporter) {
        let tuple = packet.tuple;
        let first = self.remember_denied(tuple, reporter);
        let length = u64::from(packet.length);
        self.tally.hit_usage(id, &hit).add(1, length, u64::from(first));
        self.tally.actions.deny.add(1, length, u64::from(first));
        let source = self.naming.name(tuple.source);
        let destination = self.naming.name(tuple.destination);
        let domain = self.domain_for(&tuple, &destination);
        let key = flow_key(
            &self.config,
            &tuple,
            &source,
            &destination,
            domain,
            reporter,
            FlowAction::Deny,
            Some(hit),
        );
        let Some(bucket) = self.tally.bucket(key, tuple, &self.config) else {
            return;
        };
        if first {
            bucket.num_flows += 1;
            bucket.started += 1;
            bucket.completed += 1;
        }
        match reporter {
            Reporter::Src => {
                bucket.packets_out += 1;
                bucket.bytes_out = bucket.bytes_out.saturating_add(length);
            }
            Reporter::Dst => {
                bucket.packets_in += 1;
                bucket.bytes_in = bucket.bytes_in.saturating_add(length);
            }
        }
    }

    /// Whether this is the interval's first denied packet of the tuple for this reporter.
    fn remember_denied(&mut self, tuple: Tuple, reporter: Reporter) -> bool {
        if !self.denied_seen.insert((tuple, reporter)) {
            return false;
        }
        self.denied_order.push_back((tuple, reporter));
        while self.denied_order.len() > self.config.max_denied_tuples {
            if let Some(oldest) = self.denied_order.pop_front() {
                self.denied_seen.remove(&oldest);
                self.tally.statistics.denied_tuples_evicted += 1;
            }
        }
        true
    }

    /// A conntrack event, or an entry of a dump read without [`Aggregator::dumped`].
    pub fn conntrack(&mut self, event: &ConntrackEvent) {
        self.apply(event, None);
    }

    /// A whole dump of the conntrack table, asked for at `started`: each entry counted as
    /// [`Aggregator::conntrack`] counts it, closed TCP entries completing their connections,
    /// then every connection opened before `started` that the dump did not list ended.
    pub fn dumped(&mut self, entries: &[ConntrackEvent], started: Timestamp) {
        self.dump_generation += 1;
        let generation = self.dump_generation;
        for entry in entries {
            self.apply(entry, Some(generation));
        }
        // A connection opened (its first packet read) before the dump was asked for was in the
        // table when the dump began, unless it had ended.
        let gone: Vec<Tuple> = self
            .connections
            .iter()
            .filter(|(_, connection)| {
                connection.dump_generation != generation
                    && (connection.confirmed || connection.last_event < started)
            })
            .map(|(tuple, _)| *tuple)
            .collect();
        self.tally.statistics.gone_from_dumps += gone.len() as u64;
        for tuple in gone {
            self.finish(&tuple, Ending::Completed);
        }
    }

    fn apply(&mut self, event: &ConntrackEvent, dump: Option<u64>) {
        self.tally.statistics.conntrack_events += 1;
        if event.mark & self.config.skipped_connection_mark != 0 {
            self.tally.statistics.skipped_by_mark += 1;
            return;
        }
        let tuple = decided_tuple(event);
        let other_entry = self
            .connections
            .get(&tuple)
            .and_then(|connection| connection.conntrack_id)
            .is_some_and(|id| id != event.id);
        if other_entry {
            if event.kind == ConntrackEventKind::Destroy {
                // The end of an entry this tuple's connection is not: nothing of ours ended.
                self.tally.statistics.untracked_ends += 1;
                return;
            }
            // The entry we tracked ended unseen and the tuple was taken again.
            self.finish(&tuple, Ending::Completed);
        }
        let current = [
            event.original_counters.unwrap_or_default(),
            event.reply_counters.unwrap_or_default(),
        ];
        if let Some(connection) = self.connections.get_mut(&tuple) {
            for (direction, now_counted) in current.iter().enumerate() {
                let delta = difference(*now_counted, connection.seen[direction]);
                add_counters(&mut connection.unreported[direction], delta);
                connection.seen[direction] = *now_counted;
            }
            connection.conntrack_id = Some(event.id);
            connection.confirmed = true;
            connection.last_event = connection.last_event.max(event.at);
            if let Some(generation) = dump {
                connection.dump_generation = generation;
            }
            if event.kind == ConntrackEventKind::Destroy {
                self.finish(&tuple, Ending::Completed);
            } else if event.closed {
                self.tally.statistics.closed_in_dumps += 1;
                self.finish(&tuple, Ending::Completed);
            } else {
                self.touch(tuple);
            }
            return;
        }
        if event.kind == ConntrackEventKind::Destroy {
            self.tally.statistics.untracked_ends += 1;
            return;
        }
        if event.closed {
            // Over before it was tracked (or already completed: conntrack lists a closed entry
            // until its TIME_WAIT ends): nothing left to count.
            return;
        }
        let sides = self.local_sides(&tuple);
        if sides.iter().all(Option::is_none) {
            self.tally.statistics.foreign_connections += 1;
            return;
        }
        self.tally.statistics.unattributed_connections += 1;
        let is_new = event.kind == ConntrackEventKind::New;
        // A connection first seen in a dump may have been counted before (by an agent that
        // restarted, or before it was evicted): count only from now on.
        let unreported = if is_new { current } else { [Counters::default(); 2] };
        self.open(
            tuple,
            sides,
            event.at,
            is_new,
            Some(event.id),
            (current, unreported),
        );
        if !is_new && let Some(connection) = self.connections.get_mut(&tuple) {
            connection.uncounted = Some(current);
        }
    }

    /// Ends the interval at `now`: the records of every key it saw, live connections carried
    /// over. Connections idle past their timeout end here.
    pub fn drain(&mut self, now: Timestamp) -> Vec<FlowRecord> {
        self.attribution.expire(now);
        let expired: Vec<(Tuple, bool)> = self
            .connections
            .iter()
            .filter_map(|(tuple, connection)| {
                let timeout = if connection.confirmed {
                    self.config.idle_timeout_milliseconds
                } else {
                    self.config.unconfirmed_timeout_milliseconds
                };
                (connection.last_event.0.saturating_add(timeout) <= now.0)
                    .then_some((*tuple, connection.confirmed))
            })
            .collect();
        for (tuple, confirmed) in expired {
            if confirmed {
                self.tally.statistics.connections_expired += 1;
            } else {
                self.tally.statistics.unconfirmed_expired += 1;
            }
            self.finish(&tuple, Ending::Completed);
        }
        let mut in_use = HashSet::new();
        let grace = self.config.unlogged_grace_milliseconds;
        for (tuple, connection) in &mut self.connections {
            let awaiting_log = connection
                .sides
                .iter()
                .flatten()
                .any(|side| matches!(side, Side::Unattributed))
                && now.0.saturating_sub(connection.opened_at.0) < grace;
            if awaiting_log {
                // Its first packet is likely still in the log's queue: the next interval
                // records it, attributed.
                continue;
            }
            self.tally.fold(&self.config, tuple, connection, Ending::Live);
            for side in connection.sides.iter().flatten() {
                if let Side::Attributed(id, _) = side {
                    in_use.insert(*id);
                }
            }
        }
        // Counters of hits no compile knows any more go, unless a live connection still counts
        // on one (its counter would otherwise start again from zero).
        let attribution = &self.attribution;
        self.tally
            .hit_usage
            .retain(|id, _| attribution.knows(*id) || in_use.contains(id));
        let start_time = self.interval_start.unix_seconds();
        let end_time = now.unix_seconds().max(start_time);
        let buckets = std::mem::take(&mut self.tally.buckets);
        let mut records: Vec<FlowRecord> = buckets
            .into_iter()
            .map(|(key, bucket)| {
                let pending = match (&self.pending, bucket.sample) {
                    (Some(pending), Some(sample)) => {
                        let mut texts: Vec<String> = pending
                            .pending(&PendingQuery {
                                flow: flow_of(&sample),
                                destination_domain: key.domain.as_deref(),
                                reporter: key.reporter,
                            })
                            .iter()
                            .map(PolicyHit::text)
                            .collect();
                        texts.sort();
                        texts.dedup();
                        texts
                    }
                    _ => Vec::new(),
                };
                record(&self.config, key, bucket, pending, start_time, end_time)
            })
            .collect();
        records.sort();
        self.tally.statistics.records += records.len() as u64;
        self.tally.allowed_keys = 0;
        self.tally.denied_keys = 0;
        self.denied_seen.clear();
        self.denied_order.clear();
        self.interval_start = now.max(self.interval_start);
        records
    }

    /// What was seen, dropped and evicted so far.
    pub fn statistics(&self) -> Statistics {
        self.tally.statistics
    }

    /// Traffic by action.
    pub fn action_counters(&self) -> ActionCounters {
        self.tally.actions
    }

    /// Traffic by hit, for every hit that decided something and that the current or previous
    /// compile knows or a live connection still carries; sorted by hit.
    pub fn hit_counters(&self) -> Vec<(&PolicyHit, Usage)> {
        let mut counters: Vec<(&PolicyHit, Usage)> = self
            .tally
            .hit_usage
            .values()
            .map(|(hit, usage)| (&**hit, *usage))
            .collect();
        counters.sort_by(|left, right| left.0.cmp(right.0));
        counters
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            tracked_connections: self.connections.len(),
            allowed_keys: self.tally.allowed_keys,
            denied_keys: self.tally.denied_keys,
            denied_tuples: self.denied_seen.len(),
            known_hits: self.attribution.len(),
        }
    }
}

fn record(
    config: &Config,
    key: FlowKey,
    bucket: Bucket,
    pending_policies: Vec<String>,
    start_time: u64,
    end_time: u64,
) -> FlowRecord {
    FlowRecord {
        start_time,
        end_time,
        host: config.host.clone(),
        source_type: key.source.kind,
        source_namespace: key.source.namespace.to_string(),
        source_name: key.source.name.to_string(),
        source_name_aggr: key.source.aggregated_name.to_string(),
        source_ip: key.source_address,
        dest_type: key.destination.kind,
        dest_namespace: key.destination.namespace.to_string(),
        dest_name: key.destination.name.to_string(),
        dest_name_aggr: key.destination.aggregated_name.to_string(),
        dest_ip: key.destination_address,
        dest_port: key.destination_port,
        dest_domains: key.domain.iter().map(|domain| domain.to_string()).collect(),
        proto: protocol_name(key.protocol),
        reporter: key.reporter,
        action: key.action,
        policies: key.policy.iter().map(|hit| hit.text()).collect(),
        pending_policies,
        packets_in: bucket.packets_in,
        packets_out: bucket.packets_out,
        bytes_in: bucket.bytes_in,
        bytes_out: bucket.bytes_out,
        num_flows: bucket.num_flows,
        num_flows_started: bucket.started,
        num_flows_completed: bucket.completed,
        num_flows_live: bucket.live,
    }
}
