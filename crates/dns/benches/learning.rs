//! The DNS learning core's costs. `cargo bench -p sluice-dns`.
//!
//! 1. Decisions per second for a mix of queued packets on a node of 100 endpoints: 40 % UDP
//!    answers already programmed (pass), 30 % fresh UDP answers (hold, then confirmed), 20 %
//!    packets that teach nothing (untrusted source, not to an endpoint), 10 % DNS over TCP
//!    (one message per segment, fresh).
//! 2. 100,000 learned mappings (1,000 endpoints × 100 names): the learner's resident memory,
//!    the cache file's size, the time of an expiry sweep, and the time to write the cache file
//!    and to reload it (read, parse, restore).
//!
//! `SLUICE_DNS_BENCH_RUNS` sets the runs (default 5); best and median are printed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use sluice_dns::{Config, Decision, Endpoint, Learner, Timestamp, cache, cache_file};
use support::*;

const ENDPOINTS_FOR_DECISIONS: usize = 100;
const PACKETS: usize = 20_000;
const CACHE_ENDPOINTS: usize = 1_000;
const NAMES_PER_ENDPOINT: usize = 100;

fn main() {
    let runs: usize = std::env::var("SLUICE_DNS_BENCH_RUNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let mut rates = Vec::new();
    for _ in 0..runs {
        rates.push(decisions_per_second());
    }
    let (best, median) = best_and_median(&mut rates, true);
    println!(
        "decisions: {PACKETS} packets, {ENDPOINTS_FOR_DECISIONS} endpoints: best {:.2} M/s, median {:.2} M/s",
        best / 1e6,
        median / 1e6
    );

    // Entries are made and restored a thousand at a time so that the resident memory
    // measured is the learner's, not the garbage of a 100,000-entry list.
    let resident_before = resident_kilobytes();
    let mut learner = cache_learner();
    let mut learn = std::time::Duration::ZERO;
    for endpoint in 0..CACHE_ENDPOINTS {
        let entries = learned_entries(endpoint);
        let started = Instant::now();
        let batch = learner.restore(at(0), entries).expect("a batch");
        learner.programmed(batch.token);
        learn += started.elapsed();
    }
    let resident_after = resident_kilobytes();
    println!(
        "100,000 mappings: learned (restored) in {:.0} ms; {} elements; resident memory +{:.1} MiB ({} bytes per mapping)",
        learn.as_secs_f64() * 1e3,
        learner.elements(),
        (resident_after - resident_before) as f64 / 1024.0,
        (resident_after - resident_before) * 1024 / learner.mappings() as i64,
    );

    // The periodic expiry sweep over all 100,000 when none is due (the common case).
    let mut sweeps = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        assert_eq!(learner.expire(at(1)), None);
        sweeps.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let (sweep_best, sweep_median) = best_and_median(&mut sweeps, false);
    println!(
        "expiry sweep over 100,000 mappings, none due: best {sweep_best:.1} ms, median {sweep_median:.1} ms"
    );

    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("dns-cache.json");
    let mut writes = Vec::new();
    let mut loads = Vec::new();
    let mut size = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let bytes = cache::to_bytes(0, &learner.cache_entries());
        cache_file::write(&path, &bytes).expect("write the cache file");
        writes.push(started.elapsed().as_secs_f64() * 1e3);
        size = bytes.len();

        let started = Instant::now();
        let mut restarted = cache_learner();
        let bytes = cache_file::read(&path).expect("read").expect("a file");
        let entries = cache::from_bytes(&bytes, 0, at(1)).expect("entries");
        let batch = restarted.restore(at(1), entries).expect("a batch");
        loads.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(restarted.mappings(), 100_000);
        assert_eq!(batch.additions.len(), 100_000);
    }
    let (write_best, write_median) = best_and_median(&mut writes, false);
    let (load_best, load_median) = best_and_median(&mut loads, false);
    println!(
        "cache file of 100,000 mappings: {:.1} MiB; save (entries, JSON, write, fsync, rename) best {write_best:.0} ms, median {write_median:.0} ms; \
         reload (read, parse, restore) best {load_best:.0} ms, median {load_median:.0} ms",
        size as f64 / (1024.0 * 1024.0)
    );
}

fn decisions_per_second() -> f64 {
    let mut learner = Learner::new(Config {
        trusted_servers: vec![SERVER.parse().unwrap()],
        ..Config::default()
    });
    let endpoints: Vec<Endpoint> = (0..ENDPOINTS_FOR_DECISIONS)
        .map(|index| {
            endpoint(
                &format!("default/pod-{index}"),
                &[&pod_address(index)],
                vec![
                    interest("partner", &["api.partner.example"]),
                    interest("buckets", &["*.s3.example"]),
                ],
            )
        })
        .collect();
    let _ = learner.set_endpoints(at(0), endpoints);
    let known = response(
        "api.partner.example",
        &[("api.partner.example", "192.0.2.1", 3600)],
    );
    let mut packets = Vec::with_capacity(PACKETS);
    for index in 0..PACKETS {
        let pod = pod_address(index % ENDPOINTS_FOR_DECISIONS);
        let client = format!("{pod}:{}", 20_000 + index % 30_000);
        let packet = match index % 10 {
            0..=3 => udp(SERVER, &client, &known),
            4..=6 => {
                let name = format!("b{index}.s3.example");
                let address = format!("198.51.{}.{}", (index / 256) % 256, index % 256);
                udp(SERVER, &client, &response(&name, &[(&name, &address, 300)]))
            }
            7 => udp("10.96.0.11:53", &client, &known),
            8 => udp(SERVER, "10.64.9.9:40000", &known),
            _ => {
                let name = format!("t{index}.s3.example");
                let address = format!("203.0.{}.{}", (index / 256) % 256, index % 256);
                let message = response(&name, &[(&name, &address, 300)]);
                tcp(SERVER, &client, 1, false, &framed(&[&message]))
            }
        };
        packets.push(packet);
    }
    // Warm: every endpoint has the known answer programmed, as of the measured instant (a
    // later copy would extend it).
    let now = at(1);
    for index in 0..ENDPOINTS_FOR_DECISIONS {
        let packet = udp(SERVER, &format!("{}:1", pod_address(index)), &known);
        if let Decision::Hold(batch) = learner.decide(now, &packet) {
            learner.programmed(batch.token);
        }
    }
    let started = Instant::now();
    let mut holds = 0;
    for packet in &packets {
        if let Decision::Hold(batch) = learner.decide(now, packet) {
            holds += 1;
            learner.programmed(batch.token);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(holds, PACKETS * 4 / 10, "fresh answers hold, the rest pass");
    PACKETS as f64 / elapsed
}

fn pod_address(index: usize) -> String {
    format!("10.65.{}.{}", index / 250, index % 250 + 2)
}

fn cache_learner() -> Learner {
    let mut learner = Learner::new(Config::default());
    let endpoints = (0..CACHE_ENDPOINTS)
        .map(|index| {
            endpoint(
                &format!("namespace-{}/pod-{index}", index % 50),
                &[&pod_address(index)],
                vec![interest("egress-domains", &["*.example"])],
            )
        })
        .collect();
    let _ = learner.set_endpoints(at(0), endpoints);
    learner
}

/// One endpoint's hundred mappings.
fn learned_entries(endpoint: usize) -> Vec<sluice_dns::CacheEntry> {
    let expires = Timestamp::from_unix_seconds(at(0).unix_seconds() + 3_600).unix_seconds();
    (0..NAMES_PER_ENDPOINT)
        .map(|name| sluice_dns::CacheEntry {
            endpoint: format!("namespace-{}/pod-{endpoint}", endpoint % 50),
            name: format!("service-{name}.team-{}.example", name % 7),
            address: ip(&format!("198.18.{}.{}", endpoint % 250, name + 1)),
            expires,
        })
        .collect()
}

fn resident_kilobytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn best_and_median(values: &mut [f64], higher_is_better: bool) -> (f64, f64) {
    values.sort_by(|left, right| left.total_cmp(right));
    if higher_is_better {
        values.reverse();
    }
    (values[0], values[values.len() / 2])
}
