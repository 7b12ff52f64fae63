//! Traffic benchmark: new TCP connections per second and throughput from a pod to an outside
//! host through a node programmed by Sluice with 1,000 policies and a 100,000-network set,
//! against the same path with no nft table and with a conntrack-only table, measured
//! interleaved in one run (no rules, conntrack, Sluice; repeated).
//!
//! Run as root: `cargo bench -p sluice-dataplane --bench traffic`. Needs `wrk`, `nginx` and
//! `iperf3` (`apt-get install -y wrk nginx-light iperf3`); it works in three network
//! namespaces it creates and deletes. Under `cargo test` it does nothing.
//!
//! Environment: `SLUICE_TRAFFIC_ROUNDS` (default 5), `SLUICE_TRAFFIC_SECONDS` per measurement
//! (default 5), `SLUICE_TRAFFIC_PERF=<directory>` to record `perf record -a -g` profiles of
//! the conntrack-only and Sluice configurations while wrk runs, after the measurements.

mod lab;
mod manifests;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::{Lab, median};
use manifests::{NAMESPACE, POD, Shape, manifests};
use sluice_dataplane::{LocalEndpoint, Ruleset, Syncer, render};
use sluice_nft::CommandBackend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Configuration {
    NoRules,
    Conntrack,
    Sluice,
}

const CONFIGURATIONS: [Configuration; 3] = [
    Configuration::NoRules,
    Configuration::Conntrack,
    Configuration::Sluice,
];

impl Configuration {
    fn label(self) -> &'static str {
        match self {
            Configuration::NoRules => "no rules (no table)",
            Configuration::Conntrack => "conntrack only",
            Configuration::Sluice => "Sluice ruleset",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Configuration::NoRules => "no-rules",
            Configuration::Conntrack => "conntrack",
            Configuration::Sluice => "sluice",
        }
    }
}

/// The second baseline: what any stateful policy costs at least.
const CONNTRACK_ONLY: &str = "table inet traffic-baseline {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    ct state invalid drop
  }
}
";

/// Tools the benchmark runs, and the Debian package of each.
const TOOLS: [(&str, &str); 7] = [
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("wrk", "wrk"),
    ("nginx", "nginx-light"),
    ("iperf3", "iperf3"),
];

fn main() {
    if !std::env::args().any(|argument| argument == "--bench") {
        println!(
            "traffic benchmark skipped: it takes minutes and needs root; run `cargo bench -p sluice-dataplane --bench traffic`"
        );
        return;
    }
    let perf_directory = std::env::var_os("SLUICE_TRAFFIC_PERF").map(std::path::PathBuf::from);
    check_requirements(perf_directory.is_some());
    let rounds = number_from_environment("SLUICE_TRAFFIC_ROUNDS", 5);
    let seconds = number_from_environment("SLUICE_TRAFFIC_SECONDS", 5);
    assert!(
        rounds >= 1 && seconds >= 1,
        "SLUICE_TRAFFIC_ROUNDS and SLUICE_TRAFFIC_SECONDS must be at least 1"
    );
    let shape = Shape {
        policies: 1000,
        networks: 100_000,
    };

    let start = Instant::now();
    let resources = sluice_api::load_str("traffic.yaml", &manifests(&shape)).expect("valid manifests");
    let load_time = start.elapsed();
    let start = Instant::now();
    let ir = sluice_policy::compile(&resources);
    let compile_time = start.elapsed();

    let lab = Lab::up();
    let local = [LocalEndpoint {
        namespace: NAMESPACE.into(),
        name: POD.into(),
        interface: lab.interface.clone(),
        egress_gateway: false,
    }];
    let start = Instant::now();
    let ruleset = render(&ir, &local);
    let render_time = start.elapsed();
    check_ruleset(&ruleset, &lab.interface, shape.policies);
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&lab.node).expect("nft is installed"));

    println!(
        "{} policies selecting the pod ({} rules in the table), {} networks in sets ({} set elements after merging)",
        ir.policies.len(),
        ruleset.rule_count(),
        shape.networks + 1,
        ruleset.element_count()
    );
    println!(
        "load + validate {:.0} ms, compile {:.0} ms, render {:.0} ms",
        milliseconds(load_time),
        milliseconds(compile_time),
        milliseconds(render_time)
    );

    // The ruleset is enforced: ICMP, which no policy allows, passes without it and not with it.
    assert!(lab.ping(), "the pod cannot reach the outside host with no rules");
    apply(&lab, &mut syncer, &ruleset, Configuration::Sluice);
    assert!(
        !lab.ping(),
        "Sluice's ruleset lets ICMP through although no policy allows it"
    );

    println!(
        "\n{rounds} rounds of: {}; each wrk -t1 -c32 -d{seconds}s (Connection: close), then iperf3 -t {seconds}",
        CONFIGURATIONS.map(Configuration::label).join(", ")
    );
    let mut samples: Vec<[(f64, f64); 3]> = Vec::new();
    let mut program_times = Vec::new();
    for round in 1..=rounds {
        let mut row = [(0.0, 0.0); 3];
        for (index, configuration) in CONFIGURATIONS.into_iter().enumerate() {
            if let Some(time) = apply(&lab, &mut syncer, &ruleset, configuration) {
                program_times.push(time);
            }
            let (rate, errors) = lab.connections_per_second(seconds);
            let throughput = lab.gigabits_per_second(seconds);
            println!(
                "round {round}  {:<20} {rate:>8.0} conn/s  {throughput:>6.2} Gb/s  (socket errors {errors}, conntrack entries {})",
                configuration.label(),
                lab.conntrack_count()
            );
            row[index] = (rate, throughput);
        }
        samples.push(row);
    }
    apply(&lab, &mut syncer, &ruleset, Configuration::NoRules);
    report(&samples, &program_times);

    if let Some(directory) = perf_directory {
        std::fs::create_dir_all(&directory).unwrap();
        for configuration in [Configuration::Conntrack, Configuration::Sluice] {
            apply(&lab, &mut syncer, &ruleset, configuration);
            let output = directory.join(format!("{}.data", configuration.file_name()));
            let mut perf = Command::new("perf")
                .args(["record", "-a", "-g", "-o"])
                .arg(&output)
                .args(["--", "sleep", &(seconds + 1).to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf runs");
            std::thread::sleep(Duration::from_millis(300));
            let (rate, _) = lab.connections_per_second(seconds);
            assert!(perf.wait().unwrap().success(), "perf record failed");
            println!(
                "profile of {} ({rate:.0} conn/s): {}",
                configuration.label(),
                output.display()
            );
        }
    }
}

fn number_from_environment(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Root and every tool, or one message naming exactly what is missing.
fn check_requirements(perf: bool) {
    let mut problems = Vec::new();
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("Uid:")
                    .map(|ids| ids.split_whitespace().nth(1) == Some("0"))
            })
        })
        .unwrap_or(false);
    if !root {
        problems.push("root (it creates network namespaces)".to_string());
    }
    let path: Vec<_> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut packages = Vec::new();
    let perf_tool = [("perf", "linux-perf")];
    let wanted = TOOLS.iter().chain(if perf { &perf_tool[..] } else { &[] });
    for (tool, package) in wanted {
        if !path.iter().any(|directory| directory.join(tool).is_file()) {
            problems.push(format!("`{tool}` in PATH (package {package})"));
            if !packages.contains(package) {
                packages.push(*package);
            }
        }
    }
    if !problems.is_empty() {
        eprintln!("traffic benchmark cannot run; it needs:");
        for problem in &problems {
            eprintln!("  - {problem}");
        }
        if !packages.is_empty() {
            eprintln!(
                "install with: apt-get update && apt-get install -y {}",
                packages.join(" ")
            );
        }
        std::process::exit(2);
    }
}

/// The pod is programmed: its interface dispatches to its egress chain, whose tiers hold a rule
/// for every policy that selects it.
fn check_ruleset(ruleset: &Ruleset, interface: &str, policies: usize) {
    let dispatch = &ruleset.sets["from-endpoint"].elements;
    let (_, verdict) = dispatch
        .iter()
        .find(|(key, _)| key.trim_matches('"') == interface)
        .expect("the pod's interface is in the dispatch map");
    let chain = verdict
        .as_deref()
        .and_then(|verdict| verdict.strip_prefix("jump "))
        .expect("the dispatch map jumps to the endpoint's chain");
    // A rule that looks up a merged run counts as the rules whose elements it holds.
    let rules: usize = ruleset.chains[chain]
        .rules
        .iter()
        .filter_map(|(rule, _)| rule.strip_prefix("jump "))
        .flat_map(|tier| &ruleset.chains[tier].rules)
        .map(|(rule, _)| {
            match rule
                .split_whitespace()
                .find_map(|word| word.strip_prefix("@run-"))
            {
                Some(run) => ruleset.sets[&format!("run-{run}")].elements.len(),
                None => 1,
            }
        })
        .sum();
    assert!(
        rules > policies,
        "the pod's tiers hold {rules} rules, expected more than {policies} (one per policy and the end of each tier)"
    );
}

/// Empties the node's table space and installs one configuration; returns the time Sluice's
/// sync took to program its table from scratch.
fn apply(
    lab: &Lab,
    syncer: &mut Syncer<CommandBackend>,
    ruleset: &Ruleset,
    configuration: Configuration,
) -> Option<Duration> {
    // The node's namespace is private to the benchmark, so flushing everything is fine.
    lab.nft("flush ruleset\n");
    match configuration {
        Configuration::NoRules => None,
        Configuration::Conntrack => {
            lab.nft(CONNTRACK_ONLY);
            None
        }
        Configuration::Sluice => {
            syncer.resync_next();
            let start = Instant::now();
            let report = syncer.sync(ruleset).expect("the kernel accepts Sluice's ruleset");
            let elapsed = start.elapsed();
            assert!(report.full);
            Some(elapsed)
        }
    }
}

fn report(samples: &[[(f64, f64); 3]], program_times: &[Duration]) {
    let column = |index: usize, throughput: bool| -> Vec<f64> {
        samples
            .iter()
            .map(|row| if throughput { row[index].1 } else { row[index].0 })
            .collect()
    };
    // Ratios within a round (measured seconds apart) and their median and range.
    let ratio = |numerator: usize, denominator: usize, throughput: bool| -> (f64, f64, f64) {
        let ratios: Vec<f64> = column(numerator, throughput)
            .iter()
            .zip(column(denominator, throughput))
            .map(|(top, bottom)| top / bottom)
            .collect();
        let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = ratios.iter().copied().fold(0.0, f64::max);
        (median(ratios), low, high)
    };
    println!("\nmedians of {} rounds", samples.len());
    for (index, configuration) in CONFIGURATIONS.into_iter().enumerate() {
        println!(
            "  {:<20} {:>8.0} conn/s  {:>6.2} Gb/s",
            configuration.label(),
            median(column(index, false)),
            median(column(index, true))
        );
    }
    println!("ratios (median of per-round ratios, [min–max])");
    for (label, numerator, denominator) in [
        ("conntrack / no rules", 1, 0),
        ("Sluice / no rules", 2, 0),
        ("Sluice / conntrack", 2, 1),
    ] {
        let (connections, connections_low, connections_high) = ratio(numerator, denominator, false);
        let (throughput, throughput_low, throughput_high) = ratio(numerator, denominator, true);
        println!(
            "  {label:<22} conn/s {connections:.3} [{connections_low:.3}–{connections_high:.3}]   throughput {throughput:.3} [{throughput_low:.3}–{throughput_high:.3}]"
        );
    }
    let verdict = |value: f64| if value >= 0.95 { "met" } else { "MISSED" };
    let (connections, _, _) = ratio(2, 0, false);
    let (throughput, _, _) = ratio(2, 0, true);
    println!(
        "target ≥ 0.95 of no rules: connections/s {} ({connections:.3}), throughput {} ({throughput:.3})",
        verdict(connections),
        verdict(throughput)
    );
    let mut times: Vec<f64> = program_times.iter().copied().map(milliseconds).collect();
    let median_time = median(times.clone());
    times.sort_by(f64::total_cmp);
    println!(
        "program Sluice's ruleset from scratch (one nft transaction): median {median_time:.0} ms, best {:.0} ms, of {}",
        times[0],
        times.len()
    );
}
