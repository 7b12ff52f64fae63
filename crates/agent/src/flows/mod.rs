//! The flow-log shell's outside things that do not depend on the kernel: the node's rotated
//! flow log file, the bounded ring of records the agent serves, and the HTTP endpoints that
//! serve it.

pub mod client;
pub mod file;
pub mod recent;
pub mod server;
pub mod shell;

pub use shell::now;

pub use file::RotatingFile;
pub use recent::{RecentFlows, RecentRecord};
pub use server::{FlowListen, FlowServer, parse_since};
pub use shell::{ConntrackDump, ConntrackSource, FlowShell, KernelSources, LogSource, open_kernel};

/// The NFLOG group decisions are logged to by default: clear of Calico's 1 and 2.
pub const DEFAULT_LOG_GROUP: u16 = sluice_dataplane::flow_logs::DEFAULT_FLOW_LOG_GROUP;

/// Denied packets logged per second and deciding rule, by default.
pub const DEFAULT_DENY_LOG_RATE: u32 = sluice_dataplane::flow_logs::DEFAULT_DENY_RATE_PER_SECOND;

/// What the flow-log shell is told by the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLogFlags {
    /// The rotated JSON-lines file.
    pub file: std::path::PathBuf,
    /// The aggregation interval.
    pub interval: std::time::Duration,
    /// The Unix socket the flow endpoints listen on.
    pub socket: Option<std::path::PathBuf>,
    /// A TCP address they listen on too.
    pub address: Option<String>,
    /// The NFLOG group.
    pub group: u16,
    /// Denied packets logged per second and deciding rule.
    pub deny_rate: u32,
    /// How often the conntrack table is dumped (at most the interval): how ends and counters
    /// are read.
    pub dump_interval: std::time::Duration,
    /// Subscribe to conntrack's Destroy events too: ends exact to the event instead of the next
    /// dump, at a cost per connection (docs/flow-logs.md).
    pub conntrack_events: bool,
}

/// How often the conntrack table is dumped by default.
pub const DEFAULT_DUMP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
