//! Egress gateway failover in a real lab (root; not run in CI):
//!
//! ```sh
//! cargo bench -p sluice-lab --bench failover             # as root
//! SLUICE_BENCH_TRIALS=20 cargo bench -p sluice-lab --bench failover
//! ```
//!
//! Two nodes; gateway `gw-a` on node-1 and `gw-b` on node-2; a client on node-1 whose
//! namespace routes through both (ECMP), opening a new TCP connection to an outside host every
//! 10 ms (each on its own thread, 300 ms timeout; the host answers with the source it saw).
//! Each trial first opens a long-lived connection from the client (one byte echoed every
//! 100 ms) and finds which gateway carries it, then breaks the *other* gateway 800 ms into a
//! 2.5 s run of new connections, alternately `gw-a` and `gw-b`:
//!
//! - `kill`: its `sluice gateway` process gets SIGKILL (the pod's namespace, its tunnel device
//!   and SNAT table stay, so it still forwards: only its health port goes);
//! - `link`: its pod interface goes down (nothing reaches it).
//!
//! Per trial it reports the time from the break to the start of the last new connection that
//! failed (0 when none did), the time to the last new connection that still went through the
//! broken gateway (when the agents had taken it out of the client's table), connections the
//! outside saw with a source other than a gateway's (must be 0), and whether the long-lived
//! connection through the surviving gateway lived on. Then the gateway is restored (restarted,
//! or its link brought back with its routes) and both are ready again before the next trial.
//!
//! Like the lab tests, this binary is also every program the lab runs (see
//! `tests/support/mod.rs`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use sluice_agent::gateway::record::EgressRecord;
use support::{HeldConnection, Lab};

const PARTNER: &str = "203.0.113.10";
const HOLD_PORT: u16 = 7000;
const RUN_MS: u64 = 2500;
const BREAK_AFTER: Duration = Duration::from_millis(800);

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_bench("failover", run)
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
  - {namespace: egress, name: gw-a, node: node-1, labels: {role: gateway}, annotations: {cni.projectcalico.org/ipv4pools: '["gateways"]'}, egressGateway: {}}
  - {namespace: egress, name: gw-b, node: node-2, labels: {role: gateway}, annotations: {cni.projectcalico.org/ipv4pools: '["gateways"]'}, egressGateway: {}}
  - {namespace: apps, name: client, node: node-1}
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    Kill,
    Link,
}

struct Trial {
    last_failure_ms: f64,
    last_through_broken_ms: f64,
    failures: usize,
    attempts: usize,
    leaks: usize,
    held_survived: bool,
}

fn run() -> Result<(), String> {
    let trials = std::env::var("SLUICE_BENCH_TRIALS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20_usize);
    let lab = Lab::up(
        "f",
        LAB,
        &[(
            "00.yaml",
            support::egress_manifests("10.73.0.0/16", "10.74.0.0/24", &["apps"], &[]),
        )],
    )?;
    let outcome = measure(&lab, trials);
    let cleaned = lab.finish();
    outcome?;
    cleaned
}

fn measure(lab: &Lab, trials: usize) -> Result<(), String> {
    let partner: IpAddr = PARTNER.parse().expect("an address");
    let gateways = [
        ("egress/gw-a", lab.pod_address("egress/gw-a")?),
        ("egress/gw-b", lab.pod_address("egress/gw-b")?),
    ];
    let gateway_addresses: BTreeSet<IpAddr> = gateways.iter().map(|(_, address)| *address).collect();
    let partner_netns = lab.netns("partner")?;
    let client_netns = lab.netns("apps/client")?;
    let mut hold_server = lab.spawn_in(
        &partner_netns,
        &["support", "hold-server", "--port", &HOLD_PORT.to_string()],
    )?;
    hold_server.first_line()?;
    println!(
        "lab up: gw-a {} on node-1, gw-b {} on node-2; {trials} trials per kind",
        gateways[0].1, gateways[1].1
    );
    for kind in [Break::Kill, Break::Link] {
        let mut results = Vec::new();
        for trial in 0..trials {
            wait_for_both(lab)?;
            let holder = lab.spawn_in(
                &client_netns,
                &[
                    "support",
                    "hold-client",
                    "--to",
                    PARTNER,
                    "--port",
                    &HOLD_PORT.to_string(),
                ],
            )?;
            let holder_pid = holder.pid;
            let held = HeldConnection::follow(holder);
            held.wait_beyond(2, Duration::from_secs(5))?;
            let carrier = held_peer(&partner_netns)?;
            // Break the gateway the long-lived connection does not use; alternate otherwise.
            let (victim, victim_address) = *gateways
                .iter()
                .find(|(_, address)| *address != carrier)
                .unwrap_or(&gateways[trial % 2]);
            let looping = lab.spawn_in(
                &client_netns,
                &[
                    "support",
                    "connect-loop",
                    "--to",
                    PARTNER,
                    "--port",
                    "443",
                    "--duration-ms",
                    &RUN_MS.to_string(),
                ],
            )?;
            std::thread::sleep(BREAK_AFTER);
            let broken_at = support::unix_micros();
            break_gateway(lab, victim, kind)?;
            let lines: Vec<String> = std::io::BufReader::new(looping.stdout)
                .lines()
                .map_while(Result::ok)
                .collect();
            let echoes_before = held.echoes();
            let held_survived =
                held.wait_beyond(echoes_before, Duration::from_secs(2)).is_ok() && held.error().is_none();
            let _ = support::run_checked("kill", &["-TERM", &looping.pid.to_string()]);
            // Close it, so the next trial's long-lived connection is the only one at the partner.
            let _ = support::run_checked("kill", &["-TERM", &holder_pid.to_string()]);
            let closed = support::wait_until(Duration::from_secs(5), || {
                held_peers(&partner_netns).is_ok_and(|peers| peers.is_empty())
            });
            if !closed {
                return Err("the long-lived connection did not close".into());
            }
            let result = judge(
                &lines,
                broken_at,
                victim_address,
                &gateway_addresses,
                partner,
                held_survived,
            )?;
            println!(
                "{kind:?} {victim}: last failed new connection {:.0} ms after the break, last one through it {:.0} ms, {} of {} failed, {} leaked, long-lived connection {}",
                result.last_failure_ms,
                result.last_through_broken_ms,
                result.failures,
                result.attempts,
                result.leaks,
                if result.held_survived {
                    "unaffected".to_string()
                } else {
                    format!("BROKEN ({:?}, through {carrier})", held.error())
                }
            );
            results.push(result);
            restore(lab, victim, kind)?;
        }
        summarize(kind, &results);
    }
    Ok(())
}

/// The peer the outside host sees on the long-lived connection: the gateway carrying it.
fn held_peer(partner_netns: &str) -> Result<IpAddr, String> {
    match held_peers(partner_netns)?.as_slice() {
        [peer] => Ok(*peer),
        peers => Err(format!(
            "expected one long-lived connection at the partner, found {peers:?}"
        )),
    }
}

/// The peers of every established connection to the hold port at the partner.
fn held_peers(partner_netns: &str) -> Result<Vec<IpAddr>, String> {
    let output = support::run_checked(
        "ip",
        &[
            "netns",
            "exec",
            partner_netns,
            "ss",
            "-Htn",
            "state",
            "established",
            &format!("( sport = :{HOLD_PORT} )"),
        ],
    )?;
    Ok(output
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .filter_map(|field| {
                    field
                        .rsplit_once(':')
                        .and_then(|(address, _)| address.parse::<IpAddr>().ok())
                })
                .find(|address| address.to_string() != PARTNER)
        })
        .collect())
}

fn break_gateway(lab: &Lab, gateway: &str, kind: Break) -> Result<(), String> {
    match kind {
        Break::Kill => {
            let pid = gateway_pid(lab, gateway)?;
            support::run_checked("kill", &["-KILL", &pid.to_string()]).map(|_| ())
        }
        Break::Link => sluice_lab::pod_link_down(&lab.environment, &lab.name, gateway),
    }
}

/// The gateway's process: the lab's, or the one a previous trial restarted.
fn gateway_pid(lab: &Lab, gateway: &str) -> Result<u32, String> {
    if let Some(pid) = sluice_lab::gateway_pid(&lab.environment, &lab.name, gateway)? {
        return Ok(pid);
    }
    let netns = lab.netns(gateway)?;
    let pids = support::run_checked("ip", &["netns", "pids", &netns])?;
    for pid in pids.split_whitespace() {
        let command = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if command.split('\0').any(|argument| argument == "gateway") {
            return pid.parse().map_err(|_| format!("pid {pid}"));
        }
    }
    Err(format!("no sluice gateway runs in {gateway}"))
}

fn restore(lab: &Lab, gateway: &str, kind: Break) -> Result<(), String> {
    let netns = lab.netns(gateway)?;
    match kind {
        // A new process replaces the killed one's device and table.
        Break::Kill => lab
            .spawn_in(&netns, &["gateway", "--interface", "eth0"])
            .map(|_| ()),
        // The link comes back up without the routes the kernel dropped with it.
        Break::Link => {
            support::run_checked("ip", &["-n", &netns, "link", "set", "eth0", "up"])?;
            support::run_checked(
                "ip",
                &[
                    "-n",
                    &netns,
                    "route",
                    "replace",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                    "scope",
                    "link",
                ],
            )?;
            support::run_checked(
                "ip",
                &[
                    "-n",
                    &netns,
                    "route",
                    "replace",
                    "default",
                    "via",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                ],
            )
            .map(|_| ())
        }
    }
}

/// Waits until the client's table spreads over both gateways, both probed ready.
fn wait_for_both(lab: &Lab) -> Result<(), String> {
    let both = support::wait_until(Duration::from_secs(15), || {
        let store = match lab.store() {
            Ok(store) => store,
            Err(_) => return false,
        };
        let records: Vec<EgressRecord> = sluice_lab::egress::read_records(store.as_ref());
        records.iter().any(|record| {
            record.clients.iter().any(|client| {
                client.client == "apps/client" && client.routes.iter().any(|route| route.gateways.len() == 2)
            }) && record.gateways.iter().all(|gateway| gateway.health == "ready")
        })
    });
    if both {
        Ok(())
    } else {
        Err("the gateways did not both come back".into())
    }
}

fn judge(
    lines: &[String],
    broken_at: u128,
    victim: IpAddr,
    gateways: &BTreeSet<IpAddr>,
    partner: IpAddr,
    held_survived: bool,
) -> Result<Trial, String> {
    let mut trial = Trial {
        last_failure_ms: 0.0,
        last_through_broken_ms: 0.0,
        failures: 0,
        attempts: 0,
        leaks: 0,
        held_survived,
    };
    let since = |at: u128| at.saturating_sub(broken_at) as f64 / 1000.0;
    for line in lines {
        let mut fields = line.split_whitespace();
        let (Some(at), Some(outcome)) = (fields.next(), fields.next()) else {
            continue;
        };
        let at: u128 = at.parse().map_err(|_| format!("bad line {line:?}"))?;
        trial.attempts += 1;
        match outcome {
            "ok" => {
                let seen: IpAddr = fields
                    .next()
                    .and_then(|seen| seen.parse().ok())
                    .ok_or_else(|| format!("bad line {line:?}"))?;
                if !gateways.contains(&seen) || seen == partner {
                    trial.leaks += 1;
                }
                if seen == victim && at >= broken_at {
                    trial.last_through_broken_ms = trial.last_through_broken_ms.max(since(at));
                }
            }
            _ => {
                trial.failures += 1;
                if at >= broken_at {
                    trial.last_failure_ms = trial.last_failure_ms.max(since(at));
                }
            }
        }
    }
    Ok(trial)
}

fn summarize(kind: Break, results: &[Trial]) {
    let percentile = |values: &mut Vec<f64>, fraction: f64| {
        values.sort_by(f64::total_cmp);
        let index = ((values.len() as f64 * fraction).ceil() as usize).clamp(1, values.len()) - 1;
        values[index]
    };
    let mut failures: Vec<f64> = results.iter().map(|trial| trial.last_failure_ms).collect();
    let mut taken_out: Vec<f64> = results.iter().map(|trial| trial.last_through_broken_ms).collect();
    let leaks: usize = results.iter().map(|trial| trial.leaks).sum();
    let broken_held = results.iter().filter(|trial| !trial.held_survived).count();
    println!(
        "{kind:?}: {} trials; last failed new connection after the break p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; last through the broken gateway p50 {:.0} ms, p99 {:.0} ms; {leaks} connections with a non-gateway source; {broken_held} long-lived connections through the survivor broken",
        results.len(),
        percentile(&mut failures, 0.5),
        percentile(&mut failures, 0.99),
        failures.last().copied().unwrap_or_default(),
        percentile(&mut taken_out, 0.5),
        percentile(&mut taken_out, 0.99),
    );
}
