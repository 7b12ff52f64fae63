//! What the kernel reports, as plain values: the shell reads them off its sockets, this crate
//! consumes them. Timestamps are wall-clock, set by the shell when it read the event.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sluice_policy::HitId;

/// Wall-clock time in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn unix_milliseconds(self) -> u64 {
        self.0
    }

    pub fn unix_seconds(self) -> u64 {
        self.0 / 1000
    }
}

/// A connection's identity as conntrack's original direction sees it (before NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tuple {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// IANA protocol number.
    pub protocol: u8,
    /// TCP, UDP and SCTP ports; for ICMP echo, conntrack's id sits in `source_port` and
    /// `destination_port` holds the type and code (`type << 8 | code`), as in conntrack.
    pub source_port: u16,
    pub destination_port: u16,
}

/// One packet the kernel logged at a deciding rule (NFLOG): which hit decided, and the packet's
/// headers. Only first packets of connections reach deciding rules (established traffic is
/// accepted earlier), and denied packets, whose logging is rate limited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedPacket {
    pub at: Timestamp,
    /// The hit the log prefix named; `None` when the prefix was not a hit id (another table's
    /// log rule on the same group), which the core counts and ignores.
    pub hit: Option<HitId>,
    pub tuple: Tuple,
    /// The IP packet's total length in bytes.
    pub length: u32,
    /// ICMP type and code, when the packet is ICMP or ICMPv6.
    pub icmp: Option<(u8, u8)>,
    /// A TCP packet's sequence number: a retransmitted SYN repeats it, and a new connection
    /// that takes the tuple of an ended one does not, though both are `ct state new`.
    #[serde(default)]
    pub tcp_sequence: Option<u32>,
}

/// What happened to a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConntrackEventKind {
    /// Confirmed: its first packet was accepted and left the node's hooks.
    New,
    /// Its state or counters changed (also what a periodic dump of live entries reports).
    Update,
    /// It ended (closed, timed out or was deleted); the counters are final.
    Destroy,
}

/// Packets and bytes one direction of a connection carried (conntrack accounting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// One connection-tracking event or dumped entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackEvent {
    pub at: Timestamp,
    pub kind: ConntrackEventKind,
    /// Conntrack's id of the entry (stable while it lives).
    pub id: u32,
    pub original: Tuple,
    pub reply: Tuple,
    /// Original direction (from the connection's opener); absent without accounting.
    pub original_counters: Option<Counters>,
    /// Reply direction.
    pub reply_counters: Option<Counters>,
    /// A TCP entry in TIME_WAIT or CLOSE: the connection is over though conntrack keeps the
    /// entry a while (120 s and 10 s by default) for late packets. How a dump tells an end.
    #[serde(default)]
    pub closed: bool,
    /// The entry's connection mark (CTA_MARK; 0 without one).
    #[serde(default)]
    pub mark: u32,
}
