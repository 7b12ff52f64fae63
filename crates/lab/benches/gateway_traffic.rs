//! Traffic through an egress gateway on another node against the same traffic leaving by its
//! own node's NAT, in a real lab (root; not run in CI):
//!
//! ```sh
//! cargo bench -p sluice-lab --bench gateway_traffic          # as root
//! SLUICE_BENCH_ROUNDS=5 SLUICE_BENCH_SECONDS=3 cargo bench -p sluice-lab --bench gateway_traffic
//! ```
//!
//! Two clients on node-1 in a natOutgoing pool: `direct/client` leaves the normal way (masqueraded
//! to node-1's address), `via/client` through the gateway `egress/gw` on node-2 (VXLAN from
//! node-1 to the gateway pod, SNAT there, out through node-2). Per round, interleaved (the
//! order alternates), each client sends as fast as it can on one TCP connection to a sink on
//! the outside host (throughput), then opens connections back to back on 8 threads to the
//! host's TCP server, which answers with the source it saw and closes (new connections per
//! second). Prints each round and the median ratio gateway / direct for both.
//!
//! Like the lab tests, this binary is also every program the lab runs (see
//! `tests/support/mod.rs`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::Duration;

use support::Lab;

const PARTNER: &str = "203.0.113.10";
const SINK_PORT: u16 = 5001;

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_bench("gateway_traffic", run)
}

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
  - name: node-2
outside:
  - {name: partner, address: 203.0.113.10, tcp: [443]}
manifests: [manifests/]
pods:
  - {namespace: egress, name: gw, node: node-2, labels: {role: gateway}, annotations: {cni.projectcalico.org/ipv4pools: '["gateways"]'}, egressGateway: {}}
  - {namespace: direct, name: client, node: node-1}
  - {namespace: via, name: client, node: node-1}
"#;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn run() -> Result<(), String> {
    let rounds = setting("SLUICE_BENCH_ROUNDS", 5.0) as usize;
    let seconds = setting("SLUICE_BENCH_SECONDS", 3.0);
    let lab = Lab::up(
        "t",
        LAB,
        &[(
            "00.yaml",
            support::egress_manifests("10.75.0.0/16", "10.76.0.0/24", &["via"], &["direct"]),
        )],
    )?;
    let outcome = measure(&lab, rounds, seconds);
    let cleaned = lab.finish();
    outcome?;
    cleaned
}

fn measure(lab: &Lab, rounds: usize, seconds: f64) -> Result<(), String> {
    let _sink = lab.spawn_in(
        &lab.netns("partner")?,
        &["support", "sink", "--port", &SINK_PORT.to_string()],
    )?;
    let gateway = lab.pod_address("egress/gw")?;
    // The gateway client must leave through the gateway before anything is measured.
    let through = support::wait_until(Duration::from_secs(15), || {
        let outcome = lab.connect(
            &lab.netns("via/client").unwrap_or_default(),
            sluice_lab::ServiceProtocol::Tcp,
            PARTNER.parse().expect("an address"),
            443,
            Duration::from_secs(1),
        );
        outcome.seen == Some(gateway)
    });
    if !through {
        return Err("via/client never left through the gateway".into());
    }
    let direct = lab.netns("direct/client")?;
    let via = lab.netns("via/client")?;
    let seconds_text = seconds.to_string();
    let mut ratios_throughput = Vec::new();
    let mut ratios_connections = Vec::new();
    println!("{rounds} rounds of {seconds} s per measurement; node-1 NAT vs gateway on node-2");
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [&direct, &via]
        } else {
            [&via, &direct]
        };
        let mut throughput = [0.0; 2];
        let mut connections = [0.0; 2];
        for netns in order {
            let slot = usize::from(netns == &via);
            let blast = support::run_checked(
                "ip",
                &[
                    "netns",
                    "exec",
                    netns,
                    lab.environment.sluice_binary.to_str().unwrap_or_default(),
                    "support",
                    "blast",
                    "--to",
                    PARTNER,
                    "--port",
                    &SINK_PORT.to_string(),
                    "--seconds",
                    &seconds_text,
                ],
            )?;
            let fields: Vec<f64> = blast
                .split_whitespace()
                .filter_map(|field| field.parse().ok())
                .collect();
            throughput[slot] = fields.first().copied().unwrap_or_default() * 8.0
                / fields.get(1).copied().unwrap_or(1.0)
                / 1e9;
            let rate = support::run_checked(
                "ip",
                &[
                    "netns",
                    "exec",
                    netns,
                    lab.environment.sluice_binary.to_str().unwrap_or_default(),
                    "support",
                    "connect-rate",
                    "--to",
                    PARTNER,
                    "--port",
                    "443",
                    "--seconds",
                    &seconds_text,
                ],
            )?;
            let fields: Vec<f64> = rate
                .split_whitespace()
                .filter_map(|field| field.parse().ok())
                .collect();
            connections[slot] =
                fields.first().copied().unwrap_or_default() / fields.get(2).copied().unwrap_or(1.0);
            if fields.get(1).copied().unwrap_or_default() > 0.0 {
                println!("  ({} failed connections in {netns})", fields[1]);
            }
        }
        println!(
            "round {round}: throughput direct {:.2} Gbit/s, via gateway {:.2} Gbit/s ({:.2}); new connections/s direct {:.0}, via gateway {:.0} ({:.2})",
            throughput[0],
            throughput[1],
            throughput[1] / throughput[0],
            connections[0],
            connections[1],
            connections[1] / connections[0]
        );
        ratios_throughput.push(throughput[1] / throughput[0]);
        ratios_connections.push(connections[1] / connections[0]);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "median ratio gateway / direct: throughput {:.2}, new connections/s {:.2}",
        median(&mut ratios_throughput),
        median(&mut ratios_connections)
    );
    Ok(())
}
