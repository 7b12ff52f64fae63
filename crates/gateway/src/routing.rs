//! The policy-routing shell's desired state and its syncer, still without I/O: what a node's
//! kernel must hold for a [`NodePlan`](crate::NodePlan) (rules, per-client tables, the VXLAN
//! device and one static neighbour and FDB entry per gateway), and a syncer that brings a
//! [`RoutingBackend`] there. The netlink backend is `sluice_dataplane::gateway_routes`.
//!
//! Calico Enterprise's design: one rule per client IPv4 address, `from <address> lookup
//! <table>` at `egressIPRoutingRulePriority`; in the table, per destination, an ECMP route over
//! the gateways (`nexthop via <gateway> dev egress.sluice onlink`), `throw` (the normal way),
//! `unreachable` (gateways all gone: fail closed) or `blackhole` (a missing policy), and a
//! `throw` for every local destination (pools, nodes) so in-cluster traffic never goes through
//! a gateway. IPv6 gets no rule: Calico's egress gateways are IPv4.
//!
//! Modules: `desired` (plan → [`DesiredRouting`]), `syncer` ([`RoutingSyncer`] over a
//! [`RoutingBackend`]), `fake` ([`FakeRouting`], in memory), `remembered` (the kernel's rules
//! and tables back into a previous plan, for an agent that restarts).

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

mod desired;
mod fake;
mod remembered;
mod syncer;

pub use desired::{desired, pins_from_kernel};
pub use fake::{FakeRouting, Operation};
pub use remembered::previous_from_kernel;
pub use syncer::{
    DeviceChange, KernelDevice, KernelRouting, KernelRule, KernelTableRoute, KernelTunnel, RoutingBackend,
    RoutingError, RoutingReport, RoutingSyncer,
};

/// The routing protocol number on everything Sluice puts in routing tables and rules (the same
/// number as its main-table routes, `ip` shows `proto 83`); only entries carrying it are ever
/// changed or deleted.
pub const ROUTING_PROTOCOL: u8 = 83;

/// `net.ipv4.fib_multipath_hash_policy` for ECMP over gateways: 1 hashes the L4 five-tuple, so
/// a flow sticks to one gateway (whose conntrack holds its NAT) while flows spread.
pub const MULTIPATH_HASH_POLICY: u32 = 1;

/// The VXLAN device's MTU when the caller knows no better: a 1500-byte path less
/// [`crate::tunnel::OVERHEAD`].
pub const DEFAULT_MTU: u32 = 1450;

/// `from <source>/32 lookup <table>` (a client) or `fwmark <mark>/PIN_MASK lookup <table>` (a
/// pinned gateway) at `priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub selector: RuleSelector,
    pub table: u32,
    pub priority: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleSelector {
    /// A client's address: its table.
    Source(Ipv4Addr),
    /// A connection mark under [`PIN_MASK`]: the table of the gateway the connection took.
    Mark(u32),
}

impl Rule {
    pub fn from_source(source: Ipv4Addr, table: u32, priority: u32) -> Rule {
        Rule {
            selector: RuleSelector::Source(source),
            table,
            priority,
        }
    }

    /// The client address of a client's rule.
    pub fn source(&self) -> Option<Ipv4Addr> {
        match self.selector {
            RuleSelector::Source(source) => Some(source),
            RuleSelector::Mark(_) => None,
        }
    }
}

/// The bits of the packet and connection marks that say which gateway a connection took
/// (`pin_mark`); Sluice's other marks (0x10000 accept, 0x20000 DNS) and kube-proxy's (0x4000,
/// 0x8000) lie outside it.
pub const PIN_MASK: u32 = 0xff00_0000;
/// The routing tables of pinned gateways, one per pin index (1 to 255), right after the
/// clients' `TABLE_RANGE`.
pub const PIN_TABLES: std::ops::RangeInclusive<u32> = 1_065_536..=1_065_791;

/// The connection mark of pin `index` (1 to 255).
pub fn pin_mark(index: u8) -> u32 {
    u32::from(index) << 24
}

/// The routing table of pin `index`.
pub fn pin_table(index: u8) -> u32 {
    PIN_TABLES.start() + u32::from(index)
}

/// Whether `table` is one Sluice owns: a client's or a pinned gateway's.
pub fn is_owned_table(table: u32) -> bool {
    crate::tables::TABLE_RANGE.contains(&table) || PIN_TABLES.contains(&table)
}

/// A gateway's pin: connections that left through it carry `pin_mark(index)` and are routed by
/// `pin_table(index)` to it alone, whatever the ECMP set becomes, until it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pin {
    pub gateway: Ipv4Addr,
    pub index: u8,
}

/// One route of a client's table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableRoute {
    pub table: u32,
    pub destination: Ipv4Net,
    pub kind: TableRouteKind,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableRouteKind {
    /// ECMP over these gateway pod addresses (sorted, no duplicates), each `via <address> dev
    /// egress.sluice onlink`, equal weight.
    Gateways(Vec<Ipv4Addr>),
    /// The normal way: the lookup goes on with the next rule (the main table).
    Throw,
    /// Gateways all gone: the sender gets an immediate error.
    Unreachable,
    /// A missing policy: dropped silently.
    Blackhole,
}

/// A gateway reached through the VXLAN device: a permanent neighbour entry `<gateway> lladdr
/// <mac>` and an FDB entry `<mac> dst <gateway>`, both on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tunnel {
    pub gateway: Ipv4Addr,
    pub mac: [u8; 6],
}

/// The VXLAN device's settings (no learning, up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device {
    pub vni: u32,
    pub port: u16,
    pub mtu: u32,
}

/// What the node's kernel should hold. Every list is sorted and holds no duplicate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredRouting {
    pub rules: Vec<Rule>,
    pub routes: Vec<TableRoute>,
    pub tunnels: Vec<Tunnel>,
    /// Present while any route goes through a gateway.
    pub device: Option<Device>,
    /// Every gateway in use (ready or draining), with its pin; its rule and table route are in
    /// `rules` and `routes`. The connection-mark side is `sluice_dataplane::gateway_pins`.
    pub pins: Vec<Pin>,
    /// What of the plan could not be programmed and why, one line each.
    pub warnings: Vec<String>,
}

impl fmt::Display for Rule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.selector {
            RuleSelector::Source(source) => write!(
                formatter,
                "rule {}: from {source} lookup {}",
                self.priority, self.table
            ),
            RuleSelector::Mark(mark) => write!(
                formatter,
                "rule {}: fwmark {mark:#x}/{PIN_MASK:#x} lookup {}",
                self.priority, self.table
            ),
        }
    }
}

impl fmt::Display for TableRoute {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TableRouteKind::Gateways(gateways) => {
                write!(formatter, "{} table {}", self.destination, self.table)?;
                for gateway in gateways {
                    write!(formatter, " nexthop via {gateway}")?;
                }
                Ok(())
            }
            TableRouteKind::Throw => write!(formatter, "throw {} table {}", self.destination, self.table),
            TableRouteKind::Unreachable => {
                write!(formatter, "unreachable {} table {}", self.destination, self.table)
            }
            TableRouteKind::Blackhole => {
                write!(formatter, "blackhole {} table {}", self.destination, self.table)
            }
        }
    }
}

impl fmt::Display for Tunnel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "tunnel to {} ({})",
            self.gateway,
            crate::tunnel::mac_text(self.mac)
        )
    }
}

impl fmt::Display for Device {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} (vxlan id {} dstport {} mtu {})",
            crate::tunnel::DEVICE,
            self.vni,
            self.port,
            self.mtu
        )
    }
}
