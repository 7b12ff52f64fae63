//! The `sluice` command line: kubectl and calicoctl habits over Sluice's crates. It owns
//! argument parsing, reading inputs and printing; every decision is made by the library crates.
#![forbid(unsafe_code)]

mod apply;
mod connectivity;
mod datastore;
mod diagnostics;
mod dnscache;
mod egress;
mod explain;
mod flow_log;
mod flows;
mod get;
mod ipam;
mod label_selector;
mod output;
mod perimeter;
mod recommend;
mod resolve;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use output::{Failure, Output};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kubernetes egress control: Calico and Kubernetes policy, explained and enforced"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests and report every error with file, line, column and field.
    Validate {
        /// Files or directories of YAML/JSON manifests; `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
    /// Say whether a flow is allowed, and which rule decided.
    Explain(explain::ExplainArguments),
    /// The matrix of who can reach whom.
    Connectivity(connectivity::ConnectivityArguments),
    /// Validate manifests and write them to the datastore in one transaction, or nothing.
    Apply(apply::ApplyArguments),
    /// Show stored resources.
    Get(get::GetArguments),
    /// The flow log: what pods' connections did and which policy decided, from the agents.
    Flows(flow_log::FlowsArguments),
    /// Staged policies that would allow exactly what a namespace's pods did, from the flow log.
    Recommend(recommend::RecommendArguments),
    /// Serve a web page of live flows, who talks to whom, and each flow's explain trace.
    Ui(ui::UiArguments),
    /// Delete stored resources by KIND NAME or by manifest.
    Delete(apply::DeleteArguments),
    /// IP address management: show, check, release.
    #[command(subcommand)]
    Ipam(ipam::IpamCommand),
    /// A cluster of network namespaces on this machine: up, status, probe, down.
    #[command(subcommand)]
    Lab(sluice_lab::LabCommand),
    /// Bring up a 2-node lab, probe it, explain a denied flow, and tear it down (needs root).
    Demo,
    /// Run the node agent: watch the datastore and program this node's kernel. SIGTERM or
    /// SIGINT stops it (exit 0) and leaves the ruleset and routes in place, which fails closed.
    Agent(AgentArguments),
    /// Run an egress gateway inside its pod's network namespace: forward, source-NAT what it
    /// forwards to the pod's address (table inet sluice-gateway), probe upstream targets and
    /// serve /readiness and /liveness. SIGTERM or SIGINT removes the table and exits 0.
    Gateway(sluice_gateway_pod::GatewayArguments),
}

/// `-o` of `explain` and `connectivity`: each honours all four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people: a trace, a matrix, or one line a flow.
    Text,
    /// One JSON document.
    Json,
    /// One JSON object a line.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

fn main() -> ExitCode {
    output::catch_print_panics();
    let cli = Cli::parse();
    let mut out = output::Output::stdout();
    let result = match cli.command {
        Command::Validate { paths } => validate(&paths, &mut out),
        Command::Explain(arguments) => explain::run(&arguments, &mut out),
        Command::Connectivity(arguments) => connectivity::run(&arguments, &mut out),
        Command::Apply(arguments) => apply::apply(&arguments).map_err(Failure::from),
        Command::Get(arguments) => get::run(&arguments, &mut out),
        Command::Flows(arguments) => flow_log::run(&arguments, &mut out),
        Command::Ui(arguments) => ui::run(&arguments, &mut out),
        Command::Recommend(arguments) => recommend::run(&arguments, &mut out),
        Command::Delete(arguments) => apply::delete(&arguments).map_err(Failure::from),
        Command::Agent(arguments) => run_agent(&arguments).map_err(Failure::from),
        Command::Gateway(arguments) => run_gateway(&arguments).map_err(Failure::from),
        Command::Ipam(command) => ipam::run(&command, &mut out),
        Command::Lab(command) => binaries()
            .and_then(|(sluice, cni)| sluice_lab::run(command, &sluice, &cni))
            .map_err(Failure::from),
        Command::Demo => binaries()
            .and_then(|(sluice, cni)| sluice_lab::demo(&sluice, &cni))
            .map_err(Failure::from),
    };
    // What a command printed before it failed is still shown, then its error.
    let flushed = out.flush();
    match result.and_then(|code| flushed.map(|()| code)) {
        Ok(code) => code,
        Err(failure) => failure.exit_code(),
    }
}

#[derive(Debug, clap::Args)]
struct AgentArguments {
    /// The node this agent programs (its pods' workload endpoints name it).
    #[arg(long)]
    node: String,
    /// Serve /metrics and /healthz here, e.g. 127.0.0.1:9091.
    #[arg(long)]
    metrics_address: Option<String>,
    /// Rebuild the whole table this often, in seconds (1 to 86,400).
    // At most a day: the agent adds it to clock readings; 0 would rebuild without pause.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    resync_seconds: u64,
    /// Do not route other nodes' pod addresses (leave it to a routing daemon such as BGP).
    /// By default the agent routes each remote block through its node's InternalIP, which
    /// needs the nodes on one link, and blackholes the node's own blocks.
    #[arg(long)]
    no_routes: bool,
    /// A DNS server whose answers teach the agent domain names (`ADDR` for port 53, or
    /// `ADDR:PORT`, `[IPV6]:PORT`); repeatable. Used when no FelixConfiguration sets
    /// `dnsTrustedServers`, whose default (Calico's, the kube-dns Service) Sluice cannot
    /// resolve yet, so without either no server is trusted.
    #[arg(long = "dns-trusted-server", value_name = "ADDR[:PORT]", value_parser = parse_trusted_server)]
    dns_trusted_servers: Vec<std::net::SocketAddr>,
    /// Where to keep learned DNS mappings across restarts, when no FelixConfiguration sets
    /// `dnsCacheFile` (default /run/sluice/dns-cache.json).
    #[arg(long, value_name = "PATH")]
    dns_cache_file: Option<std::path::PathBuf>,
    /// The NFQUEUE number DNS answers wait in until their addresses are programmed.
    #[arg(long, value_name = "N", default_value_t = sluice_agent::dns::DEFAULT_QUEUE)]
    dns_queue: u16,
    /// Learn nothing from DNS: domain rules then allow no address.
    #[arg(long)]
    no_dns: bool,
    /// Route no egress gateway clients: leave policy-routing rules, client tables and the
    /// `egress.sluice` tunnel device alone (a node where another system does it).
    #[arg(long)]
    no_egress_gateways: bool,
    /// The MTU of the `egress.sluice` tunnel device: the node's path MTU less VXLAN's 50
    /// bytes (default 1450, for a 1500-byte network).
    #[arg(long, value_name = "BYTES", default_value_t = sluice_agent::gateway::DEFAULT_TUNNEL_MTU, value_parser = clap::value_parser!(u32).range(576..=65_485))]
    egress_tunnel_mtu: u32,
    #[command(flatten)]
    datastore: datastore::DatastoreArguments,
}

fn parse_trusted_server(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse::<sluice_dns::TrustedServer>().map(|server| server.0)
}

/// Logs of the long-running commands (agent, gateway) go to standard error, `info` unless
/// RUST_LOG says otherwise.
fn start_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in log files and journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run_gateway(arguments: &sluice_gateway_pod::GatewayArguments) -> Result<ExitCode, String> {
    start_logging();
    sluice_gateway_pod::run(arguments)?;
    Ok(ExitCode::SUCCESS)
}

fn run_agent(arguments: &AgentArguments) -> Result<ExitCode, String> {
    start_logging();
    let store = std::sync::Arc::from(arguments.datastore.open()?);
    let mut config = sluice_agent::AgentConfig::new(arguments.node.clone());
    config.resync_interval = std::time::Duration::from_secs(arguments.resync_seconds);
    config.program_routes = !arguments.no_routes;
    config.egress_gateways = !arguments.no_egress_gateways;
    config.tunnel_mtu = arguments.egress_tunnel_mtu;
    let dns = (!arguments.no_dns).then(|| sluice_agent::dns::DnsFlags {
        trusted_servers: arguments.dns_trusted_servers.clone(),
        cache_file: arguments.dns_cache_file.clone(),
        queue: arguments.dns_queue,
    });
    sluice_agent::run(config, store, arguments.metrics_address.as_deref(), dns)?;
    Ok(ExitCode::SUCCESS)
}

/// This binary and the `sluice-cni` plugin installed beside it.
fn binaries() -> Result<(PathBuf, PathBuf), String> {
    let sluice =
        std::env::current_exe().map_err(|error| format!("cannot find the sluice binary: {error}"))?;
    let cni = sluice.with_file_name("sluice-cni");
    if !cni.is_file() {
        return Err(format!(
            "the CNI plugin is not at {}; build it with `cargo build --release -p sluice-cni` (or `-p sluice -p sluice-cni`)",
            cni.display()
        ));
    }
    Ok((sluice, cni))
}

fn validate(paths: &[PathBuf], out: &mut Output) -> Result<ExitCode, Failure> {
    let resources = diagnostics::load_or_report(paths)?;
    writeln!(out, "{} resources valid", resources.len())?;
    Ok(ExitCode::SUCCESS)
}
