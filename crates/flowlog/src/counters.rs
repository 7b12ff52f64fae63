//! Plain counters for the agent to render as Prometheus metrics. Every field only grows, except
//! the gauges in [`Gauges`].

use serde::Serialize;

/// Traffic one hit (or one action) decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Both directions of allowed connections (conntrack accounting, counted as each interval
    /// is drained or the connection ends); the logged packets of denied flows.
    pub packets: u64,
    pub bytes: u64,
    /// Connections opened (allowed) or distinct denied flows.
    pub connections: u64,
}

impl Usage {
    pub(crate) fn add(&mut self, packets: u64, bytes: u64, connections: u64) {
        self.packets = self.packets.saturating_add(packets);
        self.bytes = self.bytes.saturating_add(bytes);
        self.connections = self.connections.saturating_add(connections);
    }
}

/// Traffic by action, counted per reporter: a connection between two local endpoints counts
/// once for each, as it gives one record each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ActionCounters {
    pub allow: Usage,
    pub deny: Usage,
}

/// What the aggregator saw, dropped or evicted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Statistics {
    pub logged_packets: u64,
    /// Logged packets whose prefix was not a hit id (another log rule on the same group).
    pub foreign_log_packets: u64,
    /// Logged packets whose hit id neither the current nor the previous compile knows.
    pub unknown_hit_ids: u64,
    pub conntrack_events: u64,
    /// Connections first seen through conntrack (their first packet never logged or its hit
    /// unknown): recorded with no policy.
    pub unattributed_connections: u64,
    /// Conntrack entries with no local endpoint at either end: not this node's to report.
    pub foreign_connections: u64,
    /// Conntrack events and entries whose mark `skippedConnectionMark` names (the L7 proxy's
    /// upstream connections).
    pub skipped_by_mark: u64,
    /// Conntrack ends of connections that were not tracked.
    pub untracked_ends: u64,
    /// Tracked connections a dump found closed (TCP TIME_WAIT or CLOSE).
    pub closed_in_dumps: u64,
    /// Tracked connections missing from a dump: their entry went between two dumps.
    pub gone_from_dumps: u64,
    /// Connections evicted to stay within `maxConnections`.
    pub connections_evicted: u64,
    /// Confirmed connections with no conntrack event for `idleTimeoutMilliseconds`.
    pub connections_expired: u64,
    /// Allowed first packets that conntrack never confirmed.
    pub unconfirmed_expired: u64,
    /// Denied tuples forgotten to stay within `maxDeniedTuples`.
    pub denied_tuples_evicted: u64,
    /// Contributions lost because the interval already held `maxAllowedKeys` (or
    /// `maxDeniedKeys`) other keys.
    pub allowed_keys_refused: u64,
    pub denied_keys_refused: u64,
    pub records: u64,
}

/// Current sizes, for watching the caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Gauges {
    pub tracked_connections: usize,
    pub allowed_keys: usize,
    pub denied_keys: usize,
    pub denied_tuples: usize,
    pub known_hits: usize,
}
