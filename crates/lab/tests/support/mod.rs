//! Shared by the lab's harness-less test and benchmark binaries (`tests/agent_faults.rs`,
//! `benches/control_plane.rs`): like `tests/lab.rs`, each binary is also every program the lab
//! runs (the CNI plugin through a `sluice-cni` symlink, `agent`, `gateway`, `lab serve|connect`) plus a few
//! helpers of its own under `support` (a long-lived echo connection, an HTTP GET for metrics, a
//! tight-loop prober), so no other package's binary is needed. [`Lab`] builds a lab under a
//! unique name and tears it down when dropped, also when a test fails or panics.
#![allow(dead_code)] // each binary uses a part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use sluice_lab::state::{LabPaths, LabState};
use sluice_lab::{ConnectOutcome, ConnectResult, Environment, LabCommand, ServiceProtocol};
use sluice_store::{Condition, Operation, Revision, Store};

/// The variable that makes this binary's `agent` serve `/metrics` and `/healthz` on an address
/// (inside the node's namespace), without changing the command line the lab gives it.
pub const METRICS_VARIABLE: &str = "SLUICE_LAB_TEST_METRICS";

#[derive(Debug, Parser)]
#[command(name = "sluice")]
enum Helper {
    /// The node agent, as `sluice agent` runs it.
    Agent {
        #[command(flatten)]
        agent: Box<sluice_agent::AgentArguments>,
        #[arg(long)]
        datastore: String,
    },
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// An egress gateway pod's program, as `sluice gateway` runs it.
    Gateway(sluice_gateway_pod::GatewayArguments),
    /// The tests' own helpers, run inside a namespace with `ip netns exec`.
    Support {
        #[command(subcommand)]
        command: SupportCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SupportCommand {
    /// Echoes every byte back, on every connection, until killed.
    HoldServer {
        #[arg(long)]
        port: u16,
    },
    /// One TCP connection that sends a byte every 100 ms and reads it back; prints `ok N` after
    /// each echo and `error …` (then exits) when the connection breaks.
    HoldClient {
        #[arg(long)]
        to: IpAddr,
        #[arg(long)]
        port: u16,
    },
    /// `GET path` on a loopback HTTP server; prints the status line and the body.
    HttpGet {
        #[arg(long)]
        address: SocketAddr,
        #[arg(long)]
        path: String,
    },
    /// One UDP datagram from the given source address (which must be on an interface of this
    /// namespace); prints `answered` or `silent` after `timeout_ms`.
    UdpFrom {
        #[arg(long)]
        from: IpAddr,
        #[arg(long)]
        to: IpAddr,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Opens a new TCP connection every `interval_ms` for `duration_ms` (each on its own
    /// thread, so a hanging attempt never delays the next), reads what the server says (the
    /// lab's TCP server answers with the peer's address) and prints one line per attempt,
    /// in start order: `<unix µs> ok <address seen>` or `<unix µs> fail <why>`.
    ConnectLoop {
        #[arg(long)]
        to: IpAddr,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        #[arg(long)]
        duration_ms: u64,
        #[arg(long, default_value_t = 300)]
        timeout_ms: u64,
    },
    /// Accepts connections and reads everything sent, until killed (a sink for throughput).
    Sink {
        #[arg(long)]
        port: u16,
    },
    /// Sends as fast as it can on one TCP connection for `seconds`; prints `<bytes> <seconds>`.
    Blast {
        #[arg(long)]
        to: IpAddr,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        seconds: f64,
    },
    /// Opens connections back to back on `concurrency` threads for `seconds`, each reading the
    /// server's answer to its end; prints `<completed> <failed> <seconds>`.
    ConnectRate {
        #[arg(long)]
        to: IpAddr,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Sends a UDP datagram from a fresh socket (a new flow each time) every `interval_us` and
    /// waits `timeout_ms` for the echo; prints `<allowed|denied> <unix µs>` whenever the
    /// outcome changes for `confirm` attempts in a row, with the start of the first of them.
    FlipProbe {
        #[arg(long)]
        to: IpAddr,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 2000)]
        interval_us: u64,
        #[arg(long, default_value_t = 10)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 2)]
        confirm: u32,
    },
}

/// Runs this process as a helper when it was started as one; `None` means run the tests.
pub fn dispatch() -> Option<ExitCode> {
    let arguments: Vec<String> = std::env::args().collect();
    let program = arguments
        .first()
        .map(|path| Path::new(path).file_name().unwrap_or_default().to_os_string());
    if program.as_deref() == Some("sluice-cni".as_ref()) {
        let mut stdin = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut stdin);
        let outcome = sluice_cni::run(|name| std::env::var(name).ok(), &stdin);
        if let Some(stdout) = outcome.stdout {
            println!("{stdout}");
        }
        return Some(ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1)));
    }
    if !matches!(
        arguments.get(1).map(String::as_str),
        Some("agent" | "lab" | "gateway" | "support")
    ) {
        return None;
    }
    let result = match Helper::parse() {
        Helper::Agent { agent, datastore } => sluice_store::open(&datastore)
            .map_err(|error| error.to_string())
            .and_then(|store| {
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .init();
                // The variable wins over the flag, so tests change no command line.
                let metrics = std::env::var(METRICS_VARIABLE)
                    .ok()
                    .or_else(|| agent.metrics_address.clone());
                sluice_agent::run(
                    agent.config(),
                    Arc::from(store),
                    metrics.as_deref(),
                    agent.dns(),
                    agent.flow_logs(),
                )
            }),
        Helper::Lab { command } => {
            let here = std::env::current_exe().unwrap_or_default();
            let called = PathBuf::from(std::env::args().next().unwrap_or_default());
            sluice_lab::run(command, &here, &called.with_file_name("sluice-cni")).map(drop)
        }
        Helper::Gateway(arguments) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            sluice_gateway_pod::run(&arguments)
        }
        Helper::Support { command } => support(command),
    };
    Some(result.map(|()| ExitCode::SUCCESS).unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::FAILURE
    }))
}

fn support(command: SupportCommand) -> Result<(), String> {
    match command {
        SupportCommand::HoldServer { port } => {
            let listener =
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|error| error.to_string())?;
            println!("serving");
            let _ = std::io::stdout().flush();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buffer = [0_u8; 64];
                    while let Ok(read) = stream.read(&mut buffer) {
                        if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                });
            }
            Ok(())
        }
        SupportCommand::HoldClient { to, port } => {
            let mut stream = TcpStream::connect_timeout(&SocketAddr::new(to, port), Duration::from_secs(2))
                .map_err(|error| {
                println!("error connecting: {error}");
                error.to_string()
            })?;
            let timeout = Some(Duration::from_secs(2));
            stream
                .set_read_timeout(timeout)
                .map_err(|error| error.to_string())?;
            stream
                .set_write_timeout(timeout)
                .map_err(|error| error.to_string())?;
            let mut stdout = std::io::stdout();
            for count in 1_u64.. {
                let mut echo = [0_u8; 1];
                if let Err(error) = stream
                    .write_all(&[count as u8])
                    .and_then(|()| stream.read_exact(&mut echo))
                {
                    let _ = writeln!(stdout, "error after {} echoes: {error}", count - 1);
                    return Err(error.to_string());
                }
                let _ = writeln!(stdout, "ok {count}");
                let _ = stdout.flush();
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
        SupportCommand::HttpGet { address, path } => {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
                .map_err(|error| error.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|error| error.to_string())?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")
                .map_err(|error| error.to_string())?;
            let mut answer = String::new();
            stream
                .read_to_string(&mut answer)
                .map_err(|error| error.to_string())?;
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
            println!("{}\n{body}", head.lines().next().unwrap_or_default());
            Ok(())
        }
        SupportCommand::UdpFrom {
            from,
            to,
            port,
            timeout_ms,
        } => {
            let socket = UdpSocket::bind((from, 0)).map_err(|error| format!("bind {from}: {error}"))?;
            socket.connect((to, port)).map_err(|error| error.to_string())?;
            socket
                .set_read_timeout(Some(Duration::from_millis(timeout_ms)))
                .map_err(|error| error.to_string())?;
            socket.send(b"spoof?").map_err(|error| error.to_string())?;
            let mut buffer = [0_u8; 256];
            println!(
                "{}",
                if socket.recv(&mut buffer).is_ok() {
                    "answered"
                } else {
                    "silent"
                }
            );
            Ok(())
        }
        SupportCommand::ConnectLoop {
            to,
            port,
            interval_ms,
            duration_ms,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let started = Instant::now();
            let mut attempts = Vec::new();
            let mut next = started;
            while started.elapsed() < Duration::from_millis(duration_ms) {
                let at = unix_micros();
                attempts.push(std::thread::spawn(move || {
                    let outcome = sluice_lab::servers::connect(ServiceProtocol::Tcp, to, port, timeout);
                    (at, outcome)
                }));
                next += Duration::from_millis(interval_ms);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            for attempt in attempts {
                let (at, outcome) = attempt.join().map_err(|_| "an attempt panicked".to_string())?;
                match (outcome.result, outcome.seen) {
                    (ConnectResult::Connected, Some(seen)) => println!("{at} ok {seen}"),
                    (result, _) => println!("{at} fail {result:?}"),
                }
            }
            Ok(())
        }
        SupportCommand::Sink { port } => {
            let listener =
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|error| error.to_string())?;
            println!("serving");
            let _ = std::io::stdout().flush();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buffer = vec![0_u8; 256 * 1024];
                    while matches!(stream.read(&mut buffer), Ok(read) if read > 0) {}
                });
            }
            Ok(())
        }
        SupportCommand::Blast { to, port, seconds } => {
            let mut stream = TcpStream::connect_timeout(&SocketAddr::new(to, port), Duration::from_secs(2))
                .map_err(|error| error.to_string())?;
            let buffer = vec![0x5a_u8; 256 * 1024];
            let started = Instant::now();
            let mut sent: u64 = 0;
            while started.elapsed().as_secs_f64() < seconds {
                stream.write_all(&buffer).map_err(|error| error.to_string())?;
                sent += buffer.len() as u64;
            }
            println!("{sent} {}", started.elapsed().as_secs_f64());
            Ok(())
        }
        SupportCommand::ConnectRate {
            to,
            port,
            seconds,
            concurrency,
        } => {
            let started = Instant::now();
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    std::thread::spawn(move || {
                        let (mut completed, mut failed) = (0_u64, 0_u64);
                        while started.elapsed().as_secs_f64() < seconds {
                            let outcome = sluice_lab::servers::connect(
                                ServiceProtocol::Tcp,
                                to,
                                port,
                                Duration::from_secs(1),
                            );
                            if outcome.result == ConnectResult::Connected {
                                completed += 1;
                            } else {
                                failed += 1;
                            }
                        }
                        (completed, failed)
                    })
                })
                .collect();
            let (mut completed, mut failed) = (0, 0);
            for worker in workers {
                let (done, missed) = worker.join().map_err(|_| "a worker panicked".to_string())?;
                completed += done;
                failed += missed;
            }
            println!("{completed} {failed} {}", started.elapsed().as_secs_f64());
            Ok(())
        }
        SupportCommand::FlipProbe {
            to,
            port,
            interval_us,
            timeout_ms,
            confirm,
        } => {
            let interval = Duration::from_micros(interval_us);
            let timeout = Duration::from_millis(timeout_ms.max(1));
            let mut stdout = std::io::stdout();
            let mut reported: Option<bool> = None;
            // The current run of equal outcomes: its outcome, length and first start.
            let mut run: Option<(bool, u32, u128)> = None;
            loop {
                let started = Instant::now();
                let wall = unix_micros();
                let allowed = udp_echo(to, port, timeout);
                run = match run {
                    Some((outcome, length, first)) if outcome == allowed => {
                        Some((outcome, length + 1, first))
                    }
                    _ => Some((allowed, 1, wall)),
                };
                if let Some((outcome, length, first)) = run
                    && length >= confirm
                    && reported != Some(outcome)
                {
                    reported = Some(outcome);
                    let word = if outcome { "allowed" } else { "denied" };
                    if writeln!(stdout, "{word} {first}")
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return Ok(()); // the reader is gone
                    }
                }
                if let Some(rest) = interval.checked_sub(started.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        }
    }
}

fn udp_echo(to: IpAddr, port: u16, timeout: Duration) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
        return false;
    };
    if socket.connect((to, port)).is_err()
        || socket.set_read_timeout(Some(timeout)).is_err()
        || socket.send(b"flip").is_err()
    {
        return false;
    }
    let mut buffer = [0_u8; 256];
    socket.recv(&mut buffer).is_ok()
}

/// Microseconds since the Unix epoch: a clock every process of the machine shares.
pub fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros())
        .unwrap_or(0)
}

pub type Test = fn() -> Result<(), String>;

/// Just enough of libtest's command line (`--list`, a name filter, `--exact`) for cargo test
/// and nextest.
pub fn run_tests(tests: &[(&str, Test)]) -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| arguments.iter().any(|argument| argument == name);
    let filters: Vec<&String> = arguments
        .iter()
        .filter(|argument| !argument.starts_with('-'))
        .collect();
    if flag("--list") {
        if !flag("--ignored") {
            for (name, _) in tests {
                println!("{name}: test");
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut failed = 0;
    let mut count = 0;
    for (name, test) in tests.iter().filter(|(name, _)| {
        filters.is_empty()
            || filters.iter().any(|filter| {
                if flag("--exact") {
                    name == filter
                } else {
                    name.contains(filter.as_str())
                }
            })
    }) {
        count += 1;
        let started = Instant::now();
        match test() {
            Ok(()) => println!("test {name} ... ok ({:.1?})", started.elapsed()),
            Err(error) => {
                failed += 1;
                println!("test {name} ... FAILED ({:.1?})\n{error}", started.elapsed());
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        count - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs a program to completion; its stdout, or an error with its stderr.
pub fn run_checked(program: &str, arguments: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .map_err(|error| format!("{program}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A lab benchmark's `main` after `dispatch`: measures only under `cargo bench` (which passes
/// `--bench`) and as root, and says so otherwise.
pub fn run_bench(name: &str, run: fn() -> Result<(), String>) -> ExitCode {
    if !std::env::args().any(|argument| argument == "--bench") {
        println!("{name}: run with `cargo bench -p sluice-lab --bench {name}` (root)");
        return ExitCode::SUCCESS;
    }
    if !is_root() {
        println!("{name}: skipped, the lab needs root");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Manifests for an egress gateway lab: FelixConfiguration with egressIPSupport
/// EnabledPerNamespace, a natOutgoing pool `pods` and a Manual pool `gateways` (taken by
/// annotation: `cni.projectcalico.org/ipv4pools: '["gateways"]'`), the namespace `egress`, and `clients`
/// namespaces whose pods leave through the gateways labelled `role: gateway` there.
pub fn egress_manifests(pods: &str, gateways: &str, clients: &[&str], others: &[&str]) -> String {
    let mut text = format!(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: default}}\nspec: {{egressIPSupport: EnabledPerNamespace}}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pods}}\nspec: {{cidr: {pods}, natOutgoing: true}}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: gateways}}\nspec: {{cidr: {gateways}, blockSize: 28, assignmentMode: Manual}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: egress}}\n"
    );
    for namespace in others {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n"
        ));
    }
    for namespace in clients {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  annotations:\n    egress.projectcalico.org/selector: \"role == 'gateway'\"\n    egress.projectcalico.org/namespaceSelector: \"projectcalico.org/name == 'egress'\"\n"
        ));
    }
    text
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .and_then(|line| line.split_whitespace().nth(2).map(|uid| uid == "0"))
            .unwrap_or(false)
    })
}

/// A running lab under a unique name, removed (processes, namespaces, state) when dropped.
#[derive(Debug)]
pub struct Lab {
    pub environment: Environment,
    pub name: String,
    /// Files of this run: the CNI symlink, the lab file and manifests, lab state.
    pub root: PathBuf,
    children: Mutex<Vec<Child>>,
    removed: bool,
}

impl Lab {
    /// The L7 proxy child of `node`'s agent: the process whose parent is the agent and whose
    /// command line carries the child flag.
    pub fn proxy_pid(&self, node: &str) -> Option<u32> {
        let agent = sluice_lab::agent_pid(&self.environment, &self.name, node)?;
        let entries = std::fs::read_dir("/proc").ok()?;
        entries.filter_map(Result::ok).find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let parent: u32 = status
                .lines()
                .find_map(|line| line.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()?;
            let command = std::fs::read(entry.path().join("cmdline")).ok()?;
            let child = String::from_utf8_lossy(&command).contains(sluice_agent::proxy::CHILD_FLAG);
            (parent == agent && child).then_some(pid)
        })
    }

    /// Writes the lab file (its `name` is replaced) and manifests under a fresh directory and
    /// builds the lab. `tag` (a-z) keeps names of different tests apart; the process id keeps
    /// runs apart.
    pub fn up(tag: &str, lab_file: &str, manifests: &[(&str, String)]) -> Result<Lab, String> {
        let process = std::process::id();
        let name = format!("{tag}{}", process % 1_000_000);
        let root = std::env::temp_dir().join(format!("sluice-lab-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("files/manifests")).map_err(|error| error.to_string())?;
        let executable = std::env::current_exe().map_err(|error| error.to_string())?;
        let cni = root.join("sluice-cni");
        std::os::unix::fs::symlink(&executable, &cni).map_err(|error| error.to_string())?;
        let lab = Lab {
            environment: Environment {
                state_root: root.join("state"),
                sluice_binary: executable,
                cni_binary: cni,
            },
            name,
            root,
            children: Mutex::new(Vec::new()),
            removed: false,
        };
        let file = lab.root.join("files/lab.yaml");
        std::fs::write(&file, lab_file).map_err(|error| error.to_string())?;
        for (file_name, text) in manifests {
            std::fs::write(lab.root.join("files/manifests").join(file_name), text)
                .map_err(|error| error.to_string())?;
        }
        // On an error, dropping `lab` tears down what was built.
        sluice_lab::up(&lab.environment, &file, Some(&lab.name))?;
        Ok(lab)
    }

    pub fn paths(&self) -> LabPaths {
        LabPaths::new(&self.environment.state_root, &self.name)
    }

    pub fn state(&self) -> Result<LabState, String> {
        self.paths().load()
    }

    pub fn store(&self) -> Result<Arc<dyn Store>, String> {
        let state = self.state()?;
        sluice_store::open(&state.datastore)
            .map(Arc::from)
            .map_err(|error| error.to_string())
    }

    /// The namespace of a pod (`namespace/name`) or of a node or outside host (by name).
    pub fn netns(&self, who: &str) -> Result<String, String> {
        let state = self.state()?;
        state
            .pods
            .iter()
            .find(|pod| pod.shown() == who)
            .map(|pod| pod.netns.clone())
            .or_else(|| state.node(who).map(|node| node.netns.clone()))
            .or_else(|| {
                state
                    .hosts
                    .iter()
                    .find(|host| host.spec.name == who)
                    .map(|host| host.netns.clone())
            })
            .ok_or_else(|| format!("the lab has no pod, node or host `{who}`"))
    }

    /// The first address of a pod.
    pub fn pod_address(&self, pod: &str) -> Result<IpAddr, String> {
        let state = self.state()?;
        state
            .pods
            .iter()
            .find(|candidate| candidate.shown() == pod)
            .and_then(|candidate| candidate.addresses.first().copied())
            .ok_or_else(|| format!("no address for pod {pod}"))
    }

    /// This binary run inside a namespace through `ip netns exec`.
    pub fn command_in(&self, netns: &str, arguments: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns])
            .arg(&self.environment.sluice_binary)
            .args(arguments)
            .stdin(Stdio::null());
        command
    }

    /// Starts this binary inside a namespace, its stdout piped; killed when the lab is dropped.
    pub fn spawn_in(&self, netns: &str, arguments: &[&str]) -> Result<Spawned, String> {
        let mut child = self
            .command_in(netns, arguments)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| error.to_string())?;
        let stdout = child.stdout.take().expect("piped");
        let pid = child.id();
        self.children.lock().expect("children").push(child);
        Ok(Spawned { pid, stdout })
    }

    /// One connection attempt from a pod, as `lab probe` makes it.
    pub fn connect(
        &self,
        from_netns: &str,
        protocol: ServiceProtocol,
        to: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> ConnectOutcome {
        let output = self
            .command_in(
                from_netns,
                &[
                    "lab",
                    "connect",
                    "--protocol",
                    protocol.name(),
                    "--to",
                    &to.to_string(),
                    "--port",
                    &port.to_string(),
                    "--timeout-ms",
                    &timeout.as_millis().to_string(),
                ],
            )
            .output();
        let failed = |detail: String| ConnectOutcome {
            result: ConnectResult::Error,
            seen: None,
            detail: Some(detail),
            lookup: None,
        };
        match output {
            Ok(output) => serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
                failed(format!(
                    "the connect helper printed {:?} {:?}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ))
            }),
            Err(error) => failed(error.to_string()),
        }
    }

    /// Validates manifests and writes them in one transaction, as `sluice apply` does, together
    /// with deleting `deletions` (keys); returns the commit's revision.
    pub fn apply(&self, manifests: &str, deletions: &[String]) -> Result<Revision, String> {
        let store = self.store()?;
        let mut loader = sluice_api::Loader::default();
        let (existing, _) = store
            .list(sluice_api::resource::RESOURCE_PREFIX)
            .map_err(|error| error.to_string())?;
        // Tiers already stored may be named by the new policies.
        let tiers = sluice_api::resource::kind_prefix(sluice_api::Kind::Tier);
        loader.known_tiers(
            existing
                .iter()
                .filter_map(|value| value.key.strip_prefix(&tiers).map(str::to_string)),
        );
        loader.add_str("change.yaml", manifests);
        let resources = loader
            .finish()
            .map_err(|errors| format!("the change has errors:\n{errors}"))?
            .into_resources();
        let mut operations: Vec<Operation> = resources
            .iter()
            .map(|resource| Operation::Put {
                key: resource.key(),
                value: resource.encode(),
                condition: Condition::Any,
            })
            .collect();
        operations.extend(deletions.iter().map(|key| Operation::Delete {
            key: key.clone(),
            condition: Condition::Any,
        }));
        store.commit(&operations).map_err(|error| error.to_string())
    }

    /// Waits (bounded) until the agents of `nodes` have programmed `revision` (a change's
    /// revision from [`Lab::apply`]): a fixed sleep is too short on a busy machine.
    pub fn wait_programmed(&self, nodes: &[&str], revision: Revision) -> Result<(), String> {
        let programmed = |node: &str| {
            self.node_status(node)
                .and_then(|status| status.get("programmedRevision")?.as_i64())
                .is_some_and(|programmed| programmed >= revision)
        };
        if wait_until(Duration::from_secs(20), || {
            nodes.iter().all(|node| programmed(node))
        }) {
            return Ok(());
        }
        Err(format!(
            "the agents of {nodes:?} did not program revision {revision} in 20 s"
        ))
    }

    /// A node's status record (`/sluice-status/nodes/<node>`), what `sluice get nodestatus` shows.
    pub fn node_status(&self, node: &str) -> Option<serde_json::Value> {
        let store = self.store().ok()?;
        let value = store.get(&format!("/sluice-status/nodes/{node}")).ok()??;
        serde_json::from_slice(&value.value).ok()
    }

    /// The agent's log.
    pub fn agent_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.paths().log_file(&format!("agent-{node}"))).unwrap_or_default()
    }

    /// Removes the lab and checks that nothing of it is left.
    pub fn finish(mut self) -> Result<(), String> {
        self.removed = true;
        self.stop_children();
        let removed = sluice_lab::down(&self.environment, &self.name);
        let prefix = format!("sl-{}-", self.name);
        let left: Vec<String> = sluice_lab::network_namespaces()
            .into_iter()
            .filter(|netns| netns.starts_with(&prefix))
            .collect();
        let _ = std::fs::remove_dir_all(&self.root);
        removed?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("`lab down` left namespaces {left:?}"))
        }
    }

    fn stop_children(&self) {
        for mut child in self.children.lock().expect("children").drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.stop_children();
        if let Err(error) = sluice_lab::down(&self.environment, &self.name) {
            eprintln!("warning: removing lab {}: {error}", self.name);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A helper started with [`Lab::spawn_in`].
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub stdout: std::process::ChildStdout,
}

impl Spawned {
    /// Reads its first line (e.g. `serving`); an error if it ends first.
    pub fn first_line(&mut self) -> Result<String, String> {
        let mut line = Vec::new();
        let mut byte = [0_u8; 1];
        loop {
            match self.stdout.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
                Ok(1) => line.push(byte[0]),
                Ok(_) => return Err(format!("the helper {} exited before saying anything", self.pid)),
                Err(error) => return Err(error.to_string()),
            }
        }
    }
}

impl Spawned {
    /// Its output lines, read on a thread, as they come.
    pub fn lines(self) -> std::sync::mpsc::Receiver<String> {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(self.stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        receiver
    }
}

/// Follows a `hold-client`'s output on a thread: the echoes so far and the error, if any.
#[derive(Debug, Clone, Default)]
pub struct HeldConnection {
    pub echoes: Arc<AtomicU64>,
    pub error: Arc<Mutex<Option<String>>>,
}

impl HeldConnection {
    pub fn follow(spawned: Spawned) -> HeldConnection {
        let held = HeldConnection::default();
        let follower = held.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(spawned.stdout).lines() {
                let Ok(line) = line else { break };
                match line
                    .strip_prefix("ok ")
                    .and_then(|count| count.parse::<u64>().ok())
                {
                    Some(count) => follower.echoes.store(count, Ordering::Relaxed),
                    None => *follower.error.lock().expect("error") = Some(line),
                }
            }
            let mut error = follower.error.lock().expect("error");
            if error.is_none() {
                *error = Some("the client exited".into());
            }
        });
        held
    }

    pub fn echoes(&self) -> u64 {
        self.echoes.load(Ordering::Relaxed)
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().expect("error").clone()
    }

    /// Waits until the echo count passes `count`; an error if the connection broke or stalled.
    pub fn wait_beyond(&self, count: u64, limit: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(error) = self.error() {
                return Err(format!("the long-lived connection broke: {error}"));
            }
            let now = self.echoes();
            if now > count {
                return Ok(now);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the long-lived connection stalled at {now} echoes for {limit:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Polls `ready` every 50 ms until it says yes or `limit` passes.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The disagreements of a probe report as lines.
pub fn disagreements(report: &sluice_lab::ProbeReport) -> Vec<String> {
    report
        .rows
        .iter()
        .filter_map(|row| {
            let problem = row.disagreement.as_ref()?;
            Some(format!(
                "{} -> {} {:?}/{}: {problem}",
                row.from, row.to, row.protocol, row.port
            ))
        })
        .collect()
}
