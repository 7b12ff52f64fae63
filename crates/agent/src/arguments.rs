//! `sluice agent`'s flags, here so that the `sluice` binary and the lab's test binaries (which
//! run as the agent too) parse the same command line; the datastore flag stays with each.

use std::path::PathBuf;
use std::time::Duration;

use crate::AgentConfig;
use crate::dns::{DEFAULT_QUEUE, DnsFlags};
use crate::flows::FlowLogFlags;
use crate::gateway::DEFAULT_TUNNEL_MTU;

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArguments {
    /// The node this agent programs (its pods' workload endpoints name it).
    #[arg(long)]
    pub node: String,
    /// Serve /metrics and /healthz here, e.g. 127.0.0.1:9091.
    #[arg(long)]
    pub metrics_address: Option<String>,
    /// Rebuild the whole table this often, in seconds (1 to 86,400).
    // At most a day: the agent adds it to clock readings; 0 would rebuild without pause.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub resync_seconds: u64,
    /// Do not route other nodes' pod addresses (leave it to a routing daemon such as BGP).
    /// By default the agent routes each remote block through its node's InternalIP, which
    /// needs the nodes on one link, and blackholes the node's own blocks.
    #[arg(long)]
    pub no_routes: bool,
    /// A DNS server whose answers teach the agent domain names (`ADDR` for port 53, or
    /// `ADDR:PORT`, `[IPV6]:PORT`); repeatable. Used when no FelixConfiguration sets
    /// `dnsTrustedServers`, whose default (Calico's, the kube-dns Service) Sluice cannot
    /// resolve yet, so without either no server is trusted.
    #[arg(long = "dns-trusted-server", value_name = "ADDR[:PORT]", value_parser = parse_trusted_server)]
    pub dns_trusted_servers: Vec<std::net::SocketAddr>,
    /// Where to keep learned DNS mappings across restarts, when no FelixConfiguration sets
    /// `dnsCacheFile` (default /run/sluice/dns-cache.json).
    #[arg(long, value_name = "PATH")]
    pub dns_cache_file: Option<PathBuf>,
    /// The NFQUEUE number DNS answers wait in until their addresses are programmed.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_QUEUE)]
    pub dns_queue: u16,
    /// Learn nothing from DNS: domain rules then allow no address.
    #[arg(long)]
    pub no_dns: bool,
    /// Route no egress gateway clients: leave policy-routing rules, client tables and the
    /// `egress.sluice` tunnel device alone (a node where another system does it).
    #[arg(long)]
    pub no_egress_gateways: bool,
    /// The MTU of the `egress.sluice` tunnel device: the node's path MTU less VXLAN's 50
    /// bytes (default 1450, for a 1500-byte network).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_TUNNEL_MTU, value_parser = clap::value_parser!(u32).range(576..=65_485))]
    pub egress_tunnel_mtu: u32,
    #[command(flatten)]
    pub flow_logs: FlowLogArguments,
    #[command(flatten)]
    pub l7_proxy: L7ProxyArguments,
}

/// The L7 proxy's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct L7ProxyArguments {
    /// Run no L7 proxy: egress rules with an HTTP or TLS match then never match (fail closed).
    #[arg(long)]
    pub no_l7_proxy: bool,
    /// The port the L7 proxy listens on, on 127.0.0.1 and [::1] in the node's namespace.
    #[arg(long, value_name = "PORT", default_value_t = crate::proxy::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub l7_proxy_port: u16,
    /// At most this many connections of one pod address through the L7 proxy at once; more
    /// are reset as they come (fail closed), so one pod cannot take the proxy from the others.
    #[arg(long, value_name = "N", default_value_t = crate::proxy::DEFAULT_CONNECTIONS_PER_POD, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub l7_proxy_max_connections_per_pod: u32,
    /// At most this many connections through the L7 proxy at once, in all (and at most what
    /// its open-file limit allows: two files a connection).
    #[arg(long, value_name = "N", default_value_t = crate::proxy::DEFAULT_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub l7_proxy_max_connections: u32,
    /// Run as the agent's L7 proxy child (the agent starts it so).
    #[arg(long, hide = true)]
    pub l7_proxy_child: bool,
}

/// The flow log's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FlowLogArguments {
    /// Record no flows: the ruleset logs no decisions and the agent reads no kernel events.
    #[arg(long)]
    pub no_flow_logs: bool,
    /// The flow log file for log shippers (JSON lines, rotated at 100 MiB, 5 kept).
    #[arg(long, value_name = "PATH", default_value = "/var/log/sluice/flows.log")]
    pub flow_log_file: PathBuf,
    /// Aggregate flows over this many seconds before writing them (Calico's
    /// `flowLogsFlushInterval`; 1 to 3,600).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub flow_log_interval: u64,
    /// Serve the flow log on this Unix socket (what `sluice flows` finds through the node's
    /// status record).
    #[arg(long, value_name = "PATH", default_value = "/run/sluice/flows.sock")]
    pub flows_socket: PathBuf,
    /// Serve the flow log over TCP too, e.g. 0.0.0.0:9092.
    #[arg(long, value_name = "ADDR")]
    pub flows_address: Option<String>,
    /// The NFLOG group the ruleset logs decisions to (Calico uses 1 and 2; Sluice's default
    /// stays clear of them).
    #[arg(long, value_name = "N", default_value_t = crate::flows::DEFAULT_LOG_GROUP)]
    pub flow_log_group: u16,
    /// At most this many denied packets a second are logged per deciding rule, so a flood of
    /// denied packets costs neither allowed traffic nor the agent's memory.
    #[arg(long, value_name = "N", default_value_t = crate::flows::DEFAULT_DENY_LOG_RATE, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub flow_log_deny_rate: u32,
    /// Dump the conntrack table every this many seconds (1 to 3,600; at most the interval):
    /// how connections' packet and byte counts and ends are read, as Calico's collector polls
    /// conntrack.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::flows::DEFAULT_DUMP_INTERVAL.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub flow_log_dump_interval: u64,
    /// Also read conntrack's Destroy events: a connection's end is seen as it happens, not at
    /// the next dump, and none is missed when its tuple is taken again between two dumps; costs
    /// a kernel message per connection (about 5% of new connections/s, docs/benchmarks.md).
    #[arg(long)]
    pub flow_log_conntrack_events: bool,
}

fn parse_trusted_server(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse::<sluice_dns::TrustedServer>().map(|server| server.0)
}

impl AgentArguments {
    /// The agent's configuration from its flags.
    pub fn config(&self) -> AgentConfig {
        let mut config = AgentConfig::new(self.node.clone());
        config.resync_interval = Duration::from_secs(self.resync_seconds);
        config.program_routes = !self.no_routes;
        config.egress_gateways = !self.no_egress_gateways;
        config.tunnel_mtu = self.egress_tunnel_mtu;
        config.l7_proxy_port = (!self.l7_proxy.no_l7_proxy).then_some(self.l7_proxy.l7_proxy_port);
        config.l7_proxy_child = self.l7_proxy.l7_proxy_child;
        config.l7_proxy_limits = crate::proxy::ConnectionLimits {
            per_pod: self.l7_proxy.l7_proxy_max_connections_per_pod as usize,
            total: self.l7_proxy.l7_proxy_max_connections as usize,
            ..crate::proxy::ConnectionLimits::default()
        };
        config
    }

    /// What the DNS shell needs, unless DNS learning is off.
    pub fn dns(&self) -> Option<DnsFlags> {
        (!self.no_dns).then(|| DnsFlags {
            trusted_servers: self.dns_trusted_servers.clone(),
            cache_file: self.dns_cache_file.clone(),
            queue: self.dns_queue,
        })
    }

    /// What the flow-log shell needs, unless flow logs are off.
    pub fn flow_logs(&self) -> Option<FlowLogFlags> {
        let flags = &self.flow_logs;
        (!flags.no_flow_logs).then(|| FlowLogFlags {
            file: flags.flow_log_file.clone(),
            interval: Duration::from_secs(flags.flow_log_interval),
            socket: Some(flags.flows_socket.clone()),
            address: flags.flows_address.clone(),
            group: flags.flow_log_group,
            deny_rate: flags.flow_log_deny_rate,
            dump_interval: Duration::from_secs(flags.flow_log_dump_interval),
            conntrack_events: flags.flow_log_conntrack_events,
        })
    }
}
