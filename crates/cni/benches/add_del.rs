//! One ADD followed by one DEL through the real binary, as a runtime would run it, in
//! namespaces made for the purpose. Prints the median of 30 and the launch overhead of
//! `ip netns exec` alone, which a runtime calling the plugin directly does not pay.
//! Needs root. Target: ADD+DEL median ≤ 20 ms.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Attachment, Lab};

const RUNS: usize = 30;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let mut lab = Lab::new("bench");
    let netns = lab.pod_namespace("pod");
    let config = lab.config("1.1.0");
    let mut add_delete = Vec::with_capacity(RUNS);
    let mut add_only = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        let attachment = Attachment::new(&format!("bench{run:04}"), &netns, "default", "bench");
        let start = Instant::now();
        let added = lab.invoke("ADD", &attachment, &config);
        let after_add = start.elapsed();
        let deleted = lab.invoke("DEL", &attachment, &config);
        let total = start.elapsed();
        assert_eq!((added.code, deleted.code), (0, 0), "{added:?} {deleted:?}");
        add_only.push(after_add);
        add_delete.push(total);
    }
    let mut launch = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let status = Command::new("ip")
            .args(["netns", "exec", &lab.node, "true"])
            .status()
            .expect("spawn");
        assert!(status.success());
        launch.push(start.elapsed());
    }
    let (total, add, launch) = (median(add_delete), median(add_only), median(launch));
    let milliseconds = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!(
        "sluice-cni ADD+DEL through the binary, median of {RUNS}: {:.2} ms (ADD alone {:.2} ms)",
        milliseconds(total),
        milliseconds(add)
    );
    println!(
        "  of which `ip netns exec` launching, twice: {:.2} ms; plugin work ≈ {:.2} ms (target ≤ 20 ms)",
        milliseconds(launch) * 2.0,
        milliseconds(total.saturating_sub(launch * 2))
    );
}
