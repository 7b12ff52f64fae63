//! What flow logs cost: new TCP connections per second and throughput from a pod to an outside
//! host through a node programmed with Sluice's ruleset (the traffic benchmark's 1,000 policies
//! and 100,000-network set, `crates/dataplane/benches/traffic`), with flow logs off and on,
//! interleaved in one run. "On" is the agent's: the ruleset logs every decision to NFLOG and the
//! agent's flow-log shell (`FlowShell`, the NFLOG reader, the conntrack dumps and the
//! aggregator, with its file and socket) runs in this process, reading the node's namespace;
//! "on, with events" adds conntrack's Destroy events (`--flow-log-conntrack-events`). This process does
//! nothing else while wrk runs, so its CPU time and memory are the shell's. Then the delay from
//! a connection to its record on `/flows/stream` (what `sluice flows --follow` reads), with the
//! default 15-second interval and the lab's 1 second.
//!
//! Run as root: `cargo bench -p sluice-agent --bench flow_logs` (needs `wrk`, `nginx` and
//! `iperf3`: `apt-get install -y wrk nginx-light iperf3`). Under `cargo test` it does nothing.
//! Environment: `SLUICE_TRAFFIC_ROUNDS` (default 5), `SLUICE_TRAFFIC_SECONDS` (default 5),
//! `SLUICE_FLOW_DELAY_TRIALS` (default 5).

#[path = "../../../dataplane/benches/traffic/lab.rs"]
mod lab;
#[path = "../../../dataplane/benches/traffic/manifests.rs"]
mod manifests;

use std::io::BufRead;
use std::time::{Duration, Instant};

use lab::{Lab, median};
use manifests::{NAMESPACE, OUTSIDE_ADDRESS, POD, Shape, manifests};
use sluice_agent::Metrics;
use sluice_agent::flows::{FlowLogFlags, FlowShell, client, open_kernel};
use sluice_dataplane::{DnsRender, FlowLogs, LocalEndpoint, Ruleset, Syncer, render_with_flow_logs};
use sluice_nft::CommandBackend;

const GROUP: u16 = 7100;
const LABELS: [&str; 4] = [
    "flow logs off",
    "log rules only",
    "flow logs on",
    "on, with events",
];

fn main() {
    if !std::env::args().any(|argument| argument == "--bench") {
        println!(
            "flow log benchmark skipped: it takes minutes and needs root; run `cargo bench -p sluice-agent --bench flow_logs`"
        );
        return;
    }
    let rounds = number("SLUICE_TRAFFIC_ROUNDS", 5);
    let seconds = number("SLUICE_TRAFFIC_SECONDS", 5);
    let trials = number("SLUICE_FLOW_DELAY_TRIALS", 5);
    let shape = Shape {
        policies: 1000,
        networks: 100_000,
    };
    let resources = sluice_api::load_str("traffic.yaml", &manifests(&shape)).expect("valid manifests");
    let ir = sluice_policy::compile(&resources);
    let lab = Lab::up();
    let local = [LocalEndpoint {
        namespace: NAMESPACE.into(),
        name: POD.into(),
        interface: lab.interface.clone(),
        egress_gateway: false,
    }];
    let flow_logs = FlowLogs {
        group: GROUP,
        deny_rate_per_second: 100,
    };
    let off = render_with_flow_logs(&ir, &local, &DnsRender::default(), None);
    let on = render_with_flow_logs(&ir, &local, &DnsRender::default(), Some(flow_logs));
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&lab.node).expect("nft is installed"));
    println!(
        "{} rules with flow logs off, {} with them on",
        off.rule_count(),
        on.rule_count()
    );

    // Enforced either way: ICMP, which no policy allows, passes without a ruleset only.
    assert!(lab.ping(), "the pod cannot reach the outside host with no rules");
    for ruleset in [&off, &on] {
        lab.nft("flush ruleset\n");
        syncer.resync_next();
        syncer.sync(ruleset).expect("the kernel accepts the ruleset");
        assert!(!lab.ping(), "the ruleset lets ICMP through");
    }
    println!(
        "\n{rounds} rounds of: flow logs off, the ruleset's log rules with no reader, flow logs on (conntrack dumps every {} s), on with conntrack events; each wrk -t1 -c32 -d{seconds}s (Connection: close), then iperf3 -t {seconds}",
        sluice_agent::flows::DEFAULT_DUMP_INTERVAL.as_secs()
    );
    // Off; the ruleset's logging with no reader bound (what the kernel alone pays: with no
    // socket on the group, a log statement does almost nothing); on (the ruleset and the shell,
    // reading conntrack by dumps alone); on with conntrack's Destroy events too.
    let mut samples: Vec<[(f64, f64); 4]> = Vec::new();
    let mut cpu_per_10k = [Vec::new(), Vec::new()];
    let mut peak_rss = 0;
    let mut records = 0;
    for round in 1..=rounds {
        let mut row = [(0.0, 0.0); 4];
        for (index, (ruleset, logging)) in [(&off, None), (&on, None), (&on, Some(false)), (&on, Some(true))]
            .into_iter()
            .enumerate()
        {
            let shell = apply(&lab, &mut syncer, ruleset, logging, &ir, &resources, 15);
            let cpu_before = process_cpu_seconds();
            let started = Instant::now();
            let (rate, _) = lab.connections_per_second(seconds);
            let cpu = process_cpu_seconds() - cpu_before;
            let wall = started.elapsed().as_secs_f64();
            let throughput = lab.gigabits_per_second(seconds);
            let label = LABELS[index];
            let entries = lab.conntrack_count();
            if let Some((shell, directory)) = shell {
                let cores = cpu / wall;
                cpu_per_10k[index - 2].push(cores * 10_000.0 / rate);
                println!(
                    "round {round}  {label:<22} {rate:>8.0} conn/s  {throughput:>6.2} Gb/s  shell CPU {:.1}% of a core while wrk ran  (conntrack entries {entries})",
                    cores * 100.0
                );
                shell.stop();
                records += lines(&directory.join("flows.log"));
            } else {
                println!(
                    "round {round}  {label:<22} {rate:>8.0} conn/s  {throughput:>6.2} Gb/s  (conntrack entries {entries})"
                );
            }
            peak_rss = peak_rss.max(peak_resident_kib());
            row[index] = (rate, throughput);
        }
        samples.push(row);
    }
    let ratios = |index: usize, throughput: bool| -> Vec<f64> {
        samples
            .iter()
            .map(|row| {
                if throughput {
                    row[index].1 / row[0].1
                } else {
                    row[index].0 / row[0].0
                }
            })
            .collect()
    };
    let summary = |values: Vec<f64>| {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);
        format!("{:.3} [{low:.3}–{high:.3}]", median(values))
    };
    println!("\nmedians of {rounds} rounds");
    for (index, label) in LABELS.into_iter().enumerate() {
        println!(
            "  {label:<22} {:>8.0} conn/s  {:>6.2} Gb/s",
            median(samples.iter().map(|row| row[index].0).collect()),
            median(samples.iter().map(|row| row[index].1).collect())
        );
    }
    println!(
        "log rules only / off: conn/s {}, throughput {}",
        summary(ratios(1, false)),
        summary(ratios(1, true))
    );
    let verdict = |values: &[f64]| {
        if median(values.to_vec()) >= 0.95 {
            "met"
        } else {
            "MISSED"
        }
    };
    for (index, label) in [(2, "on / off"), (3, "on with events / off")] {
        let connections = ratios(index, false);
        let throughput = ratios(index, true);
        println!(
            "{label}: conn/s {} ({}), throughput {} ({})  [target ≥ 0.95]; the shell's CPU: median {:.1}% of a core per 10,000 new connections/s",
            summary(connections.clone()),
            verdict(&connections),
            summary(throughput.clone()),
            verdict(&throughput),
            median(cpu_per_10k[index - 2].clone()) * 100.0,
        );
    }
    println!(
        "peak resident memory of this process {} MiB; {records} records written",
        peak_rss / 1024
    );

    for interval in [15, 1] {
        let (shell, _directory) =
            apply(&lab, &mut syncer, &on, Some(false), &ir, &resources, interval).expect("flow logs on");
        let mut delays = Vec::new();
        for _ in 0..trials {
            delays.push(delay(&lab, &shell, interval));
        }
        shell.stop();
        let mut sorted = delays.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "connection to record on /flows/stream, {interval} s interval: median {:.2} s, min {:.2} s, max {:.2} s ({trials} trials)",
            median(delays),
            sorted[0],
            sorted[sorted.len() - 1]
        );
    }
    lab.nft("flush ruleset\n");
}

fn number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// Installs the ruleset from scratch; with `logging` (whether to read conntrack events too),
/// starts a shell reading the node.
fn apply(
    lab: &Lab,
    syncer: &mut Syncer<CommandBackend>,
    ruleset: &Ruleset,
    logging: Option<bool>,
    ir: &sluice_policy::Dataplane,
    resources: &sluice_api::ResourceSet,
    interval: u64,
) -> Option<(FlowShell, std::path::PathBuf)> {
    lab.nft("flush ruleset\n");
    // Connections of the previous measurement would be dumped into this one's records.
    let _ = lab.exec(&lab.node, &["conntrack", "-F"]);
    syncer.resync_next();
    syncer.sync(ruleset).expect("the kernel accepts the ruleset");
    let conntrack_events = logging?;
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let directory = lab.work.join(format!("flows-{start}"));
    let _ = std::fs::remove_dir_all(&directory);
    let flags = FlowLogFlags {
        file: directory.join("flows.log"),
        interval: Duration::from_secs(interval),
        socket: Some(directory.join("flows.sock")),
        address: None,
        group: GROUP,
        deny_rate: 100,
        dump_interval: sluice_agent::flows::DEFAULT_DUMP_INTERVAL,
        conntrack_events,
    };
    let kernel = open_kernel(GROUP, Some(&lab.node), flags.conntrack_events)
        .expect("the kernel's flow-log sockets open");
    let shell = FlowShell::start(
        "node",
        &flags,
        kernel.log,
        kernel.events,
        kernel.dump,
        Metrics::new(),
    )
    .expect("the shell starts");
    shell.update(ir, resources);
    Some((shell, directory))
}

/// One connection from the pod, then the time until its record is on the stream.
fn delay(lab: &Lab, shell: &FlowShell, interval: u64) -> f64 {
    let endpoint = shell.endpoints()[0].clone();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Only what comes after the records already written.
    let after = client::get(&endpoint, "/flows", Duration::from_secs(5))
        .expect("the flows answer")
        .header("X-Sluice-Last-Sequence")
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    let mut stream = client::get(
        &endpoint,
        &format!("/flows/stream?since={since}&after={after}"),
        Duration::from_secs(interval + 10),
    )
    .expect("the stream answers");
    let started = Instant::now();
    let script = format!(
        "exec 3<>/dev/tcp/{OUTSIDE_ADDRESS}/80; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3 >/dev/null"
    );
    let output = lab.exec(&lab.pod, &["bash", "-c", &script]);
    assert!(output.status.success(), "the connection failed");
    let mut line = String::new();
    loop {
        line.clear();
        let read = stream
            .body
            .read_line(&mut line)
            .expect("the stream delivers the record");
        assert!(read > 0, "the stream ended");
        if line.contains("\"dest_port\":80") {
            return started.elapsed().as_secs_f64();
        }
    }
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// User and system CPU time of this process so far (every thread).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn peak_resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmHWM:")
                    .and_then(|value| value.split_whitespace().next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}
