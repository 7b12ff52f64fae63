//! The lab: a real multi-node Sluice cluster made of network namespaces on one Linux machine.
//! Nodes run the real agent, pods are wired by the real `sluice-cni`, outside hosts run small
//! servers that report the source address they saw, a DNS server answers the outside hosts'
//! names for the pods, and `lab probe --against-explain` checks that what `sluice explain`
//! predicts is what real packets do.
//!
//! Architecture invariants: the lab changes nothing in the root network namespace (every
//! interface, address, route and sysctl it sets is inside a namespace named `sl-<lab>-…`), and
//! it cleans up after itself, also after a crash (`lab down` needs only the lab's name). The only
//! files it writes outside its state directory are the pods' `/etc/netns/<pod>/resolv.conf`. It runs
//! `ip` and its own helpers as processes and never speaks netlink (the CNI plugin owns that) or
//! runs `nft` itself (the agent owns the node's table, a gateway pod's `sluice gateway` its
//! own); it judges verdicts only through `sluice-policy`.
//!
//! API boundary: [`LabCommand`] and [`run`] for `sluice lab …`, [`demo`] for `sluice demo`;
//! [`Environment`] and [`run_in`] let tests put state elsewhere and use other binaries;
//! [`gateway_pid`] and [`pod_link_down`] let failover tests break a gateway.
#![forbid(unsafe_code)]

mod cluster;
pub mod config;
mod datastore;
mod demo;
pub mod dns;
pub mod egress;
pub mod flows;
mod gateway;
pub mod probe;
pub mod servers;
mod shell;
pub mod state;
pub mod tls;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};

pub use demo::demo;
pub use probe::{ProbeOptions, ProbeReport, ProbeRow};
pub use servers::{ConnectOutcome, ConnectResult, ServiceProtocol};

/// `sluice lab …`.
#[derive(Debug, Clone, Subcommand)]
pub enum LabCommand {
    /// Build a cluster of network namespaces from a lab file: nodes with agents, pods wired by
    /// sluice-cni, outside hosts with servers.
    Up {
        /// The lab file (see docs/lab.md).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The lab's name (default: `name` in the lab file).
        #[arg(long)]
        name: Option<String>,
        /// A datastore to use instead of an embedded one in the lab's state directory, e.g.
        /// etcd://127.0.0.1:2379.
        #[arg(long)]
        datastore: Option<String>,
    },
    /// Stop the lab's agents and servers and delete its namespaces and state; also cleans up a
    /// crashed lab.
    Down {
        /// The lab (default: the only one running).
        #[arg(long)]
        name: Option<String>,
    },
    /// Nodes and whether their agents run and are in sync, pods and their addresses, outside hosts.
    Status {
        #[arg(long)]
        name: Option<String>,
    },
    /// Connect from every pod to every other pod and outside host and show what got through.
    Probe {
        #[arg(long)]
        name: Option<String>,
        /// Compare every probe with `sluice explain`'s verdict on the same datastore; exit
        /// non-zero on any disagreement.
        #[arg(long)]
        against_explain: bool,
        /// Only these services, e.g. tcp/443,udp/53,http/80,https/443 (default: all each
        /// destination offers).
        #[arg(long, value_delimiter = ',')]
        ports: Vec<String>,
        /// The method of HTTP probes (explain judges the same request).
        #[arg(long, default_value = "GET")]
        http_method: String,
        /// The path of HTTP probes.
        #[arg(long, default_value = "/")]
        http_path: String,
        /// The name HTTPS probes by address send as the TLS server name and HTTP probes by
        /// address as `Host` (by name, the name is sent; without either, HTTP's `Host` is the
        /// address).
        #[arg(long)]
        server_name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: ProbeOutput,
    },
    /// Serve TCP, UDP and HTTP, answering with the peer's address (run inside a namespace).
    #[command(hide = true)]
    Serve {
        #[arg(long, default_value = "0.0.0.0")]
        address: IpAddr,
        #[arg(long)]
        tcp: Vec<u16>,
        #[arg(long)]
        udp: Vec<u16>,
        #[arg(long)]
        http: Vec<u16>,
        /// TLS: answers the peer's address and the server name it asked for.
        #[arg(long)]
        https: Vec<u16>,
        /// Append a line per connection here.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Connect once and print the outcome as JSON (run inside a pod's namespace). With
    /// `--name`, first resolve it through this namespace's resolv.conf server (UDP) and connect
    /// at once to the first address.
    #[command(hide = true)]
    Connect {
        #[arg(long, value_enum)]
        protocol: ServiceProtocol,
        #[arg(long, required_unless_present = "name", conflicts_with = "name")]
        to: Option<IpAddr>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// HTTP: the request's method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// HTTP: the request's path.
        #[arg(long, default_value = "/")]
        path: String,
        /// HTTPS: the server name the ClientHello carries; HTTP: the `Host` (default: the name
        /// connected to, else none for HTTPS and the address for HTTP).
        #[arg(long)]
        server_name: Option<String>,
    },
    /// Answer the lab's DNS names on port 53, UDP and TCP (run inside an outside host's namespace).
    #[command(hide = true)]
    DnsServe {
        #[arg(long)]
        address: IpAddr,
        /// The zone `lab up` wrote (JSON).
        #[arg(long)]
        zone: PathBuf,
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Ask one DNS question and print the reply as JSON (run inside a pod's namespace).
    #[command(hide = true)]
    Resolve {
        #[arg(long)]
        name: String,
        #[arg(long = "type", value_enum, default_value = "a")]
        kind: dns::resolver::QueryType,
        /// Over TCP instead of UDP.
        #[arg(long)]
        tcp: bool,
        /// The server (default: the first nameserver of /etc/resolv.conf).
        #[arg(long)]
        server: Option<IpAddr>,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeOutput {
    Text,
    Jsonl,
}

/// Where labs keep state and which binaries they run.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Parent of every lab's state directory.
    pub state_root: PathBuf,
    /// Runs `agent`, `lab serve` and `lab connect`.
    pub sluice_binary: PathBuf,
    /// The CNI plugin, run as a container runtime runs it.
    pub cni_binary: PathBuf,
}

impl Environment {
    pub fn new(sluice_binary: &Path, cni_binary: &Path) -> Environment {
        Environment {
            state_root: state::default_root(),
            sluice_binary: sluice_binary.to_path_buf(),
            cni_binary: cni_binary.to_path_buf(),
        }
    }
}

/// Runs a `sluice lab` command with the default state directory.
pub fn run(command: LabCommand, sluice_binary: &Path, cni_binary: &Path) -> Result<ExitCode, String> {
    run_in(command, &Environment::new(sluice_binary, cni_binary))
}

pub fn run_in(command: LabCommand, environment: &Environment) -> Result<ExitCode, String> {
    let root = &environment.state_root;
    match command {
        LabCommand::Up {
            file,
            name,
            datastore,
        } => {
            cluster::up(environment, &file, name.as_deref(), datastore.as_deref())?;
            let name = match name {
                Some(name) => name,
                None => config::LabFile::load(&file)?.name,
            };
            println!();
            cluster::status(environment, &name)?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down { name } => {
            let name = state::choose_lab(root, name.as_deref())?;
            cluster::down(environment, &name)?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { name } => {
            let name = state::choose_lab(root, name.as_deref())?;
            let healthy = cluster::status(environment, &name)?;
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LabCommand::Probe {
            name,
            against_explain,
            ports,
            http_method,
            http_path,
            server_name,
            output,
        } => {
            let name = state::choose_lab(root, name.as_deref())?;
            let services = ports
                .iter()
                .map(|text| probe::parse_service(text))
                .collect::<Result<Vec<_>, _>>()?;
            let options = ProbeOptions {
                against_explain,
                services,
                request: servers::Request {
                    method: http_method,
                    path: http_path,
                    server_name,
                },
            };
            let report = probe::probe(environment, &name, &options)?;
            match output {
                ProbeOutput::Text => probe::print_table(&report, against_explain),
                ProbeOutput::Jsonl => probe::print_json_lines(&report)?,
            }
            Ok(if report.disagreements() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LabCommand::Serve {
            address,
            tcp,
            udp,
            http,
            https,
            log,
        } => {
            servers::serve(address, &tcp, &udp, &http, &https, log.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Connect {
            protocol,
            to,
            name,
            port,
            timeout_ms,
            method,
            path,
            server_name,
        } => {
            let timeout = Duration::from_millis(timeout_ms.clamp(1, 30_000));
            let request = servers::Request {
                method,
                path,
                server_name,
            };
            let outcome = match (to, name) {
                (Some(to), _) => servers::connect_with(protocol, to, port, timeout, &request),
                (None, Some(name)) => servers::connect_by_name_with(protocol, &name, port, timeout, &request),
                (None, None) => return Err("connect needs --to or --name".into()),
            };
            println!(
                "{}",
                serde_json::to_string(&outcome).map_err(|error| error.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::DnsServe { address, zone, log } => {
            dns::server::serve(address, 53, &zone, log.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Resolve {
            name,
            kind,
            tcp,
            server,
            timeout_ms,
        } => {
            let server = match server {
                Some(server) => server,
                None => dns::resolver::nameserver_from(Path::new("/etc/resolv.conf"))?,
            };
            let transport = if tcp {
                dns::zone::Transport::Tcp
            } else {
                dns::zone::Transport::Udp
            };
            let timeout = Duration::from_millis(timeout_ms.clamp(1, 30_000));
            let lookup = dns::resolver::query((server, 53).into(), &name, kind, transport, timeout)
                .map_err(|error| format!("{name}: {error}"))?;
            println!(
                "{}",
                serde_json::to_string(&lookup).map_err(|error| error.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Builds a lab (for tests and the demo): `lab up` without the status table.
pub fn up(environment: &Environment, file: &Path, name: Option<&str>) -> Result<(), String> {
    cluster::up(environment, file, name, None)
}

/// Removes a lab by name (for tests and the demo).
pub fn down(environment: &Environment, name: &str) -> Result<(), String> {
    cluster::down(environment, name)
}

/// The probe matrix of a running lab (for tests and the demo).
pub fn probe(environment: &Environment, name: &str, options: &ProbeOptions) -> Result<ProbeReport, String> {
    probe::probe(environment, name, options)
}

/// The process id of a node's agent, if it runs (for tests that stop it).
pub fn agent_pid(environment: &Environment, name: &str, node: &str) -> Option<u32> {
    cluster::agent_pid(environment, name, node)
}

/// Starts a node's agent again with the command line `lab up` gave it (stopping it first if it
/// runs), with `variables` added to its environment; returns its process id. For tests of
/// restarts and of an agent whose `nft` is replaced.
pub fn restart_agent(
    environment: &Environment,
    name: &str,
    node: &str,
    variables: &[(&str, &str)],
) -> Result<u32, String> {
    cluster::restart_agent(environment, name, node, variables)
}

/// The resources in a lab's datastore, as the agents read them.
pub fn datastore_resources(environment: &Environment, name: &str) -> Result<sluice_api::ResourceSet, String> {
    let state = state::LabPaths::new(&environment.state_root, name).load()?;
    let store = datastore::open(&state.datastore)?;
    datastore::read_set(store.as_ref())
}

/// Wires a pod again through the CNI plugin (DEL, then ADD); returns its addresses.
pub fn rewire_pod(environment: &Environment, name: &str, pod: &str) -> Result<Vec<IpAddr>, String> {
    cluster::rewire_pod(environment, name, pod)
}

/// The process id of a gateway pod's (`namespace/name`) `sluice gateway`, if it runs (for tests
/// that kill it); an error when the lab has no such gateway pod.
pub fn gateway_pid(environment: &Environment, name: &str, pod: &str) -> Result<Option<u32>, String> {
    cluster::gateway_pid(environment, name, pod)
}

/// Takes a pod's (`namespace/name`) interface down inside its namespace, as a failed link would
/// (for failover tests); [`rewire_pod`] wires it again.
pub fn pod_link_down(environment: &Environment, name: &str, pod: &str) -> Result<(), String> {
    cluster::pod_link_down(environment, name, pod)
}

/// Every network namespace of this machine (tests check that `down` leaves none of a lab's).
pub fn network_namespaces() -> Vec<String> {
    shell::list_netns()
}
