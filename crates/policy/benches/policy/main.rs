//! Policy engine benchmark: load + validate, compile, and batch verdict throughput on a
//! synthetic cluster (1,000 pods in 100 namespaces, 10,000 policies).
//!
//! Run: `cargo bench -p sluice-policy --bench policy` (prints a table; record it in
//! docs/benchmarks.md). A plain harness: it times with `Instant` and reports the minimum and
//! median of several runs, because this machine is noisy.

mod synthetic;

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sluice_policy::Flow;
use synthetic::{Random, Shape, manifests, pod_address};

fn summary(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[0], samples[samples.len() / 2])
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and then one quick run
    // checks that the benchmark still works.
    let quick = !std::env::args().any(|argument| argument == "--bench");
    let shape = Shape {
        namespaces: 100,
        pods_per_namespace: 10,
        policies: 10_000,
        global_network_sets: 50,
        nets_per_set: 20,
    };
    let text = manifests(&shape);
    let runs = if quick { 1 } else { 7 };

    let mut load_times = Vec::new();
    let mut resources = None;
    for _ in 0..runs {
        let start = Instant::now();
        resources =
            Some(sluice_api::load_str("synthetic.yaml", &text).expect("synthetic manifests are valid"));
        load_times.push(start.elapsed());
    }
    let resources = resources.expect("at least one run");

    let mut compile_times = Vec::new();
    let mut dataplane = None;
    for _ in 0..runs {
        let start = Instant::now();
        dataplane = Some(black_box(sluice_policy::compile(&resources)));
        compile_times.push(start.elapsed());
    }
    let dataplane = dataplane.expect("at least one run");

    // Flows: 3/4 pod to pod, 1/4 pod to outside, on a mix of ports.
    let mut random = Random::new(42);
    let flows: Vec<Flow> = (0..200_000)
        .map(|index| {
            let source: IpAddr = pod_address(
                random.below(shape.namespaces),
                random.below(shape.pods_per_namespace),
            )
            .parse()
            .expect("valid address");
            let destination: IpAddr = if index % 4 == 3 {
                format!(
                    "{}.{}.{}.7",
                    20 + random.below(200),
                    random.below(256),
                    random.below(256)
                )
                .parse()
                .expect("valid address")
            } else {
                pod_address(
                    random.below(shape.namespaces),
                    random.below(shape.pods_per_namespace),
                )
                .parse()
                .expect("valid address")
            };
            let (protocol, port) = match random.below(4) {
                0 => (17, 53),
                1 => (6, 443),
                2 => (6, 8080),
                _ => (6, 8000 + random.below(110) as u16),
            };
            Flow {
                source,
                destination,
                protocol,
                source_port: None,
                destination_port: Some(port),
                icmp_type: None,
                icmp_code: None,
            }
        })
        .collect();
    let mut verdict_times = Vec::new();
    let mut allowed = 0usize;
    for _ in 0..runs {
        let start = Instant::now();
        allowed = flows
            .iter()
            .filter(|flow| dataplane.evaluate(black_box(flow)).allowed)
            .count();
        verdict_times.push(start.elapsed());
    }

    let (load_min, load_median) = summary(load_times);
    let (compile_min, compile_median) = summary(compile_times);
    let (verdict_min, verdict_median) = summary(verdict_times);
    let per_second = |elapsed: Duration| flows.len() as f64 / elapsed.as_secs_f64();
    let rules: usize = dataplane
        .policies
        .iter()
        .map(|policy| policy.ingress.len() + policy.egress.len())
        .sum();
    println!(
        "synthetic cluster: {} pods, {} namespaces, {} policies ({} compiled rules), {} IP sets, {} named-port sets",
        dataplane.endpoints.len(),
        shape.namespaces,
        dataplane.policies.len(),
        rules,
        dataplane.ip_sets.len(),
        dataplane.named_port_sets.len()
    );
    let directions = dataplane.endpoints.len() * 2;
    let applicable: usize = dataplane
        .endpoints
        .iter()
        .flat_map(|endpoint| [&endpoint.ingress, &endpoint.egress])
        .flat_map(|program| &program.tiers)
        .map(|tier| tier.policies.len())
        .sum();
    println!(
        "policies that apply per endpoint and direction: {:.1} on average",
        applicable as f64 / directions as f64
    );
    println!(
        "{:<34} {:>12} {:>12}",
        format!("measure ({runs} runs)"),
        "best",
        "median"
    );
    println!(
        "{:<34} {:>10.1}ms {:>10.1}ms",
        "load + validate manifests",
        ms(load_min),
        ms(load_median)
    );
    println!(
        "{:<34} {:>10.1}ms {:>10.1}ms",
        "compile to IR",
        ms(compile_min),
        ms(compile_median)
    );
    println!(
        "{:<34} {:>10.2}M/s {:>10.2}M/s",
        "verdicts, one core (batch)",
        per_second(verdict_min) / 1e6,
        per_second(verdict_median) / 1e6
    );
    println!("({} of {} sample flows allowed)", allowed, flows.len());
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
