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
    /// Bring up a 2-node lab, probe it, explain a denied flow, show the flow log, and tear it
    /// down (needs root).
    Demo {
        /// Leave the lab up afterwards (for `sluice ui`, `sluice flows`); `sluice lab down`
        /// removes it.
        #[arg(long)]
        keep: bool,
    },
    /// Run the node agent: watch the datastore and program this node's kernel. SIGTERM or
    /// SIGINT stops it (exit 0) and leaves the ruleset and routes in place, which fails closed.
    Agent(AgentCommand),
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
        Command::Demo { keep } => binaries()
            .and_then(|(sluice, cni)| sluice_lab::demo(&sluice, &cni, keep))
            .map_err(Failure::from),
    };
    // What a command printed before it failed is still shown, then its error.
    let flushed = out.flush();
    match result.and_then(|code| flushed.map(|()| code)) {
        Ok(code) => code,
        Err(failure) => failure.exit_code(),
    }
}

/// `sluice agent`: the agent's own flags and the datastore.
#[derive(Debug, clap::Args)]
struct AgentCommand {
    #[command(flatten)]
    agent: sluice_agent::AgentArguments,
    #[command(flatten)]
    datastore: datastore::DatastoreArguments,
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

fn run_agent(arguments: &AgentCommand) -> Result<ExitCode, String> {
    start_logging();
    let store = std::sync::Arc::from(arguments.datastore.open()?);
    let agent = &arguments.agent;
    sluice_agent::run(
        agent.config(),
        store,
        agent.metrics_address.as_deref(),
        agent.dns(),
        agent.flow_logs(),
    )?;
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
