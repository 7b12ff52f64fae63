//! Dataplane programming benchmark: time to program the synthetic cluster of the policy
//! benchmark (10,000 policies, 1,000 pods, all on this node) into a real kernel from scratch,
//! and the time and size of an incremental update after one policy changes.
//!
//! Run as root: `cargo bench -p sluice-dataplane --bench program`. It works in a network
//! namespace it creates and deletes.

#[path = "../../../policy/benches/policy/synthetic.rs"]
mod synthetic;

use std::process::Command;
use std::time::{Duration, Instant};

use sluice_dataplane::{LocalEndpoint, Syncer, render};
use sluice_nft::CommandBackend;
use synthetic::{Shape, manifests};

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn main() {
    let quick = !std::env::args().any(|argument| argument == "--bench");
    let shape = Shape {
        namespaces: 100,
        pods_per_namespace: 10,
        policies: 10_000,
        global_network_sets: 50,
        nets_per_set: 20,
    };
    let resources = sluice_api::load_str("synthetic.yaml", &manifests(&shape)).expect("valid manifests");
    let all_local: Vec<LocalEndpoint> = resources
        .pods
        .iter()
        .enumerate()
        .map(|(index, pod)| LocalEndpoint {
            namespace: pod.metadata.namespace().to_string(),
            name: pod.metadata.name.clone(),
            interface: format!("slc{index:012}"),
            egress_gateway: false,
        })
        .collect();
    let runs = if quick { 1 } else { 5 };
    // A node runs at most 110 pods by Kubernetes' default; 1,000 on one node is the extreme.
    for local_pods in [100, 1000] {
        let local: Vec<LocalEndpoint> = all_local.iter().step_by(1000 / local_pods).cloned().collect();
        measure(&resources, &local, runs);
    }
}

fn measure(resources: &sluice_api::ResourceSet, local: &[LocalEndpoint], runs: usize) {
    let mut compile_render = Vec::new();
    let mut from_scratch = Vec::new();
    let mut incremental = Vec::new();
    let mut sizes = (0, 0, 0, 0);
    for run in 0..runs {
        let namespace = Namespace(format!("sluicebench-{}-{run}", std::process::id()));
        assert!(
            Command::new("ip")
                .args(["netns", "add", &namespace.0])
                .status()
                .unwrap()
                .success(),
            "needs root"
        );
        let mut syncer = Syncer::new(CommandBackend::in_namespace(&namespace.0).expect("nft is installed"));

        let start = Instant::now();
        let dataplane = sluice_policy::compile(resources);
        let ruleset = render(&dataplane, local);
        compile_render.push(start.elapsed());
        let start = Instant::now();
        let report = syncer
            .sync(&ruleset)
            .expect("the kernel accepts the synthetic ruleset");
        from_scratch.push(start.elapsed());

        let mut changed = resources.clone();
        let policy = &mut changed.network_policies[run % 100];
        policy.spec.order = Some(policy.spec.order.unwrap_or(0.0) + 0.5);
        policy.spec.egress.pop();
        let start = Instant::now();
        let update = syncer
            .sync(&render(&sluice_policy::compile(&changed), local))
            .expect("update applies");
        incremental.push(start.elapsed());
        sizes = (
            ruleset.rule_count(),
            ruleset.element_count(),
            report.operations,
            update.operations,
        );
    }
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2].as_secs_f64() * 1000.0
    };
    println!();
    println!("{} local pods", local.len());
    println!(
        "ruleset: {} rules, {} set elements; full transaction {} operations, one-policy update {} operations",
        sizes.0, sizes.1, sizes.2, sizes.3
    );
    println!("median of {runs} runs:");
    println!(
        "  compile + render 10,000 policies                       {:>8.1} ms",
        median(compile_render)
    );
    println!(
        "  program from scratch (one nft transaction)              {:>8.1} ms",
        median(from_scratch)
    );
    println!(
        "  recompile + incremental update after one policy change   {:>8.1} ms",
        median(incremental)
    );
}
