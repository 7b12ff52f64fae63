//! What the L7 proxy costs, in a real lab (root; not run in CI):
//!
//! ```sh
//! apt-get install -y wrk nginx-light
//! cargo bench -p sluice-lab --bench l7                      # as root
//! SLUICE_BENCH_ROUNDS=5 SLUICE_BENCH_SECONDS=5 cargo bench -p sluice-lab --bench l7
//! ```
//!
//! Two pods on node-1 in a natOutgoing pool reach nginx on the outside host: `shop/l7`, whose
//! egress allows HTTP only as `GET /…` and TLS only to `api.partner.example` (so its connections
//! on ports 80 and 443 go through the node's proxy), and `shop/plain`, allowed the same ports
//! with no L7 match (its connections stay in the kernel). Per round, interleaved (the order
//! alternates), from each pod:
//!
//! - request latency: `wrk -t1 -c1 --latency`, one keep-alive connection, requests back to
//!   back, p50 and p99 of a 100-byte answer;
//! - requests/s: `wrk -t2 -c32` on keep-alive connections, and with a new connection for every
//!   request (`Connection: close`: the proxy accepts, judges and connects upstream each time);
//! - throughput: `wrk -t1 -c4` fetching an 8 MiB file, and the proxy's CPU time (from
//!   `/proc/PID/stat`) per GiB it moved meanwhile;
//! - TLS handshake: handshakes back to back (rustls, naming `api.partner.example`) with the lab's
//!   TLS server on 443, p50 and p99 of connect-to-answer.
//!
//! Then the l7 pod's policy is replaced by one without L7 matches (no rule on the node sends
//! anything to the proxy) and the plain pod is measured again the same way: connections that
//! reach no L7 rule should not change with L7 rules on the node.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use support::Lab;

const PARTNER: &str = "203.0.113.10";
const SERVER_NAME: &str = "api.partner.example";

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_bench("l7", run)
}

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
outside:
  - {name: partner, address: 203.0.113.10, https: [443], names: [api.partner.example]}
manifests: [manifests/]
pods:
  - {namespace: shop, name: l7, node: node-1, labels: {app: l7}}
  - {namespace: shop, name: plain, node: node-1, labels: {app: plain}}
"#;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: natted}
spec: {cidr: 10.66.0.0/16, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: plain-egress, namespace: shop}
spec:
  selector: app == 'plain'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {ports: [80, 443]}
"#;

const L7_POLICY: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: l7-egress, namespace: shop}
spec:
  selector: app == 'l7'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {ports: [80]}
      http: {methods: [GET], paths: [{prefix: /}]}
    - action: Allow
      protocol: TCP
      destination: {ports: [443]}
      tls: {serverNames: [api.partner.example]}
"#;

/// The same pod's policy with no L7 match: nothing on the node is redirected.
const NO_L7_POLICY: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: l7-egress, namespace: shop}
spec:
  selector: app == 'l7'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {ports: [80, 443]}
"#;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn run() -> Result<(), String> {
    for tool in ["wrk", "nginx"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |output| !output.status.success())
        {
            return Err(format!("{tool} is missing: apt-get install -y wrk nginx-light"));
        }
    }
    let rounds = setting("SLUICE_BENCH_ROUNDS", 5.0) as usize;
    let seconds = setting("SLUICE_BENCH_SECONDS", 5.0) as u64;
    let manifests = format!("{MANIFESTS}---{L7_POLICY}");
    let lab = Lab::up("l7b", LAB, &[("policy.yaml", manifests)])?;
    let outcome = measure(&lab, rounds, seconds);
    let cleaned = lab.finish();
    outcome?;
    cleaned
}

/// nginx on the outside host's port 80, stopped when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nginx(lab: &Lab, netns: &str) -> Result<Nginx, String> {
    let directory = lab.paths().directory.join("l7-bench-nginx");
    let site = directory.join("site");
    std::fs::create_dir_all(&site).map_err(|error| error.to_string())?;
    std::fs::write(site.join("small"), "x".repeat(100)).map_err(|error| error.to_string())?;
    // What the readiness probe (GET /) fetches.
    std::fs::write(site.join("index.html"), "ok\n").map_err(|error| error.to_string())?;
    std::fs::write(site.join("big"), vec![b'x'; 8 << 20]).map_err(|error| error.to_string())?;
    let configuration = directory.join("nginx.conf");
    std::fs::write(
        &configuration,
        format!(
            "daemon off;\nuser root;\nworker_processes 1;\npid {pid};\nerror_log {log};\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {temp};\n  server {{\n    listen {PARTNER}:80;\n    root {site};\n  }}\n}}\n",
            pid = directory.join("nginx.pid").display(),
            log = directory.join("error.log").display(),
            temp = directory.display(),
            site = site.display(),
        ),
    )
    .map_err(|error| error.to_string())?;
    let child = Command::new("ip")
        .args(["netns", "exec", netns, "nginx", "-c"])
        .arg(&configuration)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("nginx: {error}"))?;
    Ok(Nginx(child))
}

/// One pod's numbers for one round.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    /// Request latency, microseconds.
    p50: f64,
    p99: f64,
    requests_per_second: f64,
    /// A new connection for every request.
    connections_per_second: f64,
    /// Bytes a second.
    throughput: f64,
    /// The proxy's CPU time while it moved a GiB of the throughput run, milliseconds (through
    /// the proxy only).
    proxy_cpu_per_gibibyte: f64,
    /// TLS handshake, microseconds.
    handshake_p50: f64,
    handshake_p99: f64,
}

fn measure(lab: &Lab, rounds: usize, seconds: u64) -> Result<(), String> {
    let partner = lab.netns("partner")?;
    let _nginx = start_nginx(lab, &partner)?;
    let l7 = lab.netns("shop/l7")?;
    let plain = lab.netns("shop/plain")?;
    // The proxy must be answering for the l7 pod (and nginx up) before anything is measured.
    let mut last = String::new();
    let ready = support::wait_until(Duration::from_secs(20), || {
        [&l7, &plain].iter().all(|netns| match fetch_small(netns) {
            Ok(()) => true,
            Err(error) => {
                last = error;
                false
            }
        })
    });
    if !ready {
        let log = std::fs::read_to_string(lab.paths().directory.join("l7-bench-nginx/error.log"))
            .unwrap_or_default();
        return Err(format!(
            "the pods never fetched /small from nginx on the outside host: {last}; nginx's log: {log}"
        ));
    }
    println!(
        "{rounds} rounds, {seconds} s per wrk measurement; shop/plain (kernel only) vs shop/l7 (through the node's proxy)"
    );
    let mut samples: Vec<[Sample; 2]> = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut row = [Sample::default(); 2];
        for slot in order {
            let netns = [&plain, &l7][slot];
            let proxy = if slot == 1 {
                Some(lab.proxy_pid("node-1").ok_or("no L7 proxy process on node-1")?)
            } else {
                None
            };
            row[slot] = sample(netns, seconds, proxy)?;
        }
        print_round(&format!("round {round}"), &row);
        samples.push(row);
    }
    let median = |values: Vec<f64>| -> f64 {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let column = |slot: usize, field: fn(&Sample) -> f64| -> f64 {
        median(samples.iter().map(|row| field(&row[slot])).collect())
    };
    let added = |field: fn(&Sample) -> f64| -> f64 {
        median(
            samples
                .iter()
                .map(|row| field(&row[1]) - field(&row[0]))
                .collect(),
        )
    };
    let ratio = |field: fn(&Sample) -> f64| -> f64 {
        median(
            samples
                .iter()
                .map(|row| field(&row[1]) / field(&row[0]))
                .collect(),
        )
    };
    println!("\nmedians of {rounds} rounds (plain → l7)");
    println!(
        "  request latency p50 {:.0} → {:.0} µs (added {:.0} µs, target ≤ 200), p99 {:.0} → {:.0} µs (added {:.0} µs, target ≤ 2,000)",
        column(0, |sample| sample.p50),
        column(1, |sample| sample.p50),
        added(|sample| sample.p50),
        column(0, |sample| sample.p99),
        column(1, |sample| sample.p99),
        added(|sample| sample.p99),
    );
    println!(
        "  requests/s {:.0} → {:.0} (ratio {:.3}, target ≥ 0.8); throughput {:.2} → {:.2} Gbit/s (ratio {:.3}, target ≥ 0.8)",
        column(0, |sample| sample.requests_per_second),
        column(1, |sample| sample.requests_per_second),
        ratio(|sample| sample.requests_per_second),
        column(0, |sample| sample.throughput) * 8.0 / 1e9,
        column(1, |sample| sample.throughput) * 8.0 / 1e9,
        ratio(|sample| sample.throughput),
    );
    println!(
        "  the proxy's CPU time per GiB it moved in the throughput run: {:.0} ms",
        column(1, |sample| sample.proxy_cpu_per_gibibyte),
    );
    println!(
        "  requests/s with a new connection each {:.0} → {:.0} (ratio {:.3})",
        column(0, |sample| sample.connections_per_second),
        column(1, |sample| sample.connections_per_second),
        ratio(|sample| sample.connections_per_second),
    );
    println!(
        "  TLS handshake p50 {:.0} → {:.0} µs (added {:.0} µs), p99 {:.0} → {:.0} µs",
        column(0, |sample| sample.handshake_p50),
        column(1, |sample| sample.handshake_p50),
        added(|sample| sample.handshake_p50),
        column(0, |sample| sample.handshake_p99),
        column(1, |sample| sample.handshake_p99),
    );

    // The plain pod again with no L7 rule on the node.
    lab.apply(NO_L7_POLICY, &[])?;
    let redirected_gone = support::wait_until(Duration::from_secs(15), || {
        let node = lab.netns("node-1").unwrap_or_default();
        let ruleset = Command::new("ip")
            .args(["netns", "exec", &node, "nft", "list", "ruleset"])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default();
        !ruleset.contains("tproxy")
    });
    if !redirected_gone {
        return Err("the node still redirects to the proxy after the L7 rules went".into());
    }
    let mut without = Vec::new();
    for round in 0..rounds {
        let sample = sample(&plain, seconds, None)?;
        println!(
            "round {round} (no L7 rule on the node): plain p50 {:.0} µs, p99 {:.0} µs, {:.0} requests/s, {:.2} Gbit/s",
            sample.p50,
            sample.p99,
            sample.requests_per_second,
            sample.throughput * 8.0 / 1e9
        );
        without.push(sample);
    }
    let without_median = |field: fn(&Sample) -> f64| median(without.iter().map(field).collect());
    println!(
        "plain with L7 rules on the node / without: requests/s {:.3}, throughput {:.3}, p50 {:.0} / {:.0} µs",
        column(0, |sample| sample.requests_per_second) / without_median(|sample| sample.requests_per_second),
        column(0, |sample| sample.throughput) / without_median(|sample| sample.throughput),
        column(0, |sample| sample.p50),
        without_median(|sample| sample.p50),
    );
    Ok(())
}

fn print_round(label: &str, row: &[Sample; 2]) {
    for (slot, name) in ["plain", "l7"].into_iter().enumerate() {
        let sample = row[slot];
        println!(
            "{label} {name:<5}: p50 {:>6.0} µs  p99 {:>6.0} µs  {:>8.0} requests/s  {:>7.0} new connections/s  {:>5.2} Gbit/s  TLS handshake p50 {:>6.0} µs  p99 {:>6.0} µs",
            sample.p50,
            sample.p99,
            sample.requests_per_second,
            sample.connections_per_second,
            sample.throughput * 8.0 / 1e9,
            sample.handshake_p50,
            sample.handshake_p99,
        );
    }
}

/// `proxy` is the proxy's process when the pod's connections go through it.
fn sample(netns: &str, seconds: u64, proxy: Option<u32>) -> Result<Sample, String> {
    let duration = format!("{seconds}s");
    let small = format!("http://{PARTNER}/small");
    let big = format!("http://{PARTNER}/big");
    let latency = wrk(netns, &["-t1", "-c1", "-d", &duration, "--latency", &small])?;
    let requests = wrk(netns, &["-t2", "-c32", "-d", &duration, &small])?;
    let closing = wrk(
        netns,
        &["-t2", "-c32", "-d", &duration, "-H", "Connection: close", &small],
    )?;
    let cpu_before = proxy.map(cpu_milliseconds).transpose()?;
    let transfer = wrk(netns, &["-t1", "-c4", "-d", &duration, &big])?;
    let cpu_after = proxy.map(cpu_milliseconds).transpose()?;
    let throughput = bytes(&transfer, "Transfer/sec:")?;
    let moved_gibibytes = throughput * seconds as f64 / f64::from(1u32 << 30);
    let proxy_cpu_per_gibibyte = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => (after - before) / moved_gibibytes,
        _ => 0.0,
    };
    let (handshake_p50, handshake_p99) = handshakes(netns, seconds)?;
    Ok(Sample {
        p50: percentile(&latency, "50%")?,
        p99: percentile(&latency, "99%")?,
        requests_per_second: field(&requests, "Requests/sec:")?,
        connections_per_second: field(&closing, "Requests/sec:")?,
        throughput,
        proxy_cpu_per_gibibyte,
        handshake_p50,
        handshake_p99,
    })
}

/// A process's CPU time so far (user and system, all threads), milliseconds: `/proc/PID/stat`
/// counts it in clock ticks of 10 ms (USER_HZ is 100 on Linux).
fn cpu_milliseconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| format!("the proxy's stat: {error}"))?;
    // The fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let after_command = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_command.split_whitespace().collect();
    let ticks = |index: usize| -> Result<f64, String> {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .ok_or_else(|| format!("unreadable /proc/{pid}/stat: {stat}"))
    };
    Ok((ticks(11)? + ticks(12)?) * 10.0)
}

fn wrk(netns: &str, arguments: &[&str]) -> Result<String, String> {
    let output = Command::new("ip")
        .args(["netns", "exec", netns, "wrk"])
        .args(arguments)
        .output()
        .map_err(|error| format!("wrk: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!(
            "wrk {arguments:?} in {netns} failed or had errors:\n{text}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(text)
}

/// A wrk latency line (`50%  105.00us`) in microseconds.
fn percentile(text: &str, label: &str) -> Result<f64, String> {
    let value = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(str::trim)
        .ok_or_else(|| format!("no {label} in wrk's output:\n{text}"))?;
    duration_microseconds(value).ok_or_else(|| format!("unreadable latency {value:?}"))
}

fn duration_microseconds(value: &str) -> Option<f64> {
    for (unit, scale) in [("us", 1.0), ("ms", 1e3), ("m", 60e6), ("s", 1e6)] {
        if let Some(number) = value.strip_suffix(unit) {
            return number.parse::<f64>().ok().map(|number| number * scale);
        }
    }
    None
}

fn field(text: &str, label: &str) -> Result<f64, String> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| format!("no {label} in wrk's output:\n{text}"))
}

/// wrk's `Transfer/sec: 1.23GB` in bytes (wrk's units are powers of 1024).
fn bytes(text: &str, label: &str) -> Result<f64, String> {
    let value = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(str::trim)
        .ok_or_else(|| format!("no {label} in wrk's output:\n{text}"))?;
    for (unit, scale) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)] {
        if let Some(number) = value.strip_suffix(unit) {
            return number
                .parse::<f64>()
                .map(|number| number * scale as f64)
                .map_err(|error| format!("{value:?}: {error}"));
        }
    }
    Err(format!("unreadable transfer rate {value:?}"))
}

/// Runs `work` on a thread inside a network namespace (its sockets stay there).
fn in_namespace<T: Send>(netns: &str, work: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    let file = File::open(format!("/run/netns/{netns}")).map_err(|error| error.to_string())?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|error| error.to_string())?;
                work()
            })
            .join()
            .map_err(|_| "the namespace thread panicked".to_string())?
    })
}

/// One GET of /small from inside the pod: a 200 with the 100 bytes.
fn fetch_small(netns: &str) -> Result<(), String> {
    in_namespace(netns, || {
        let address: SocketAddr = format!("{PARTNER}:80").parse().expect("an address");
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))
            .map_err(|error| format!("{netns}: {error}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|error| error.to_string())?;
        stream
            .write_all(
                format!("GET /small HTTP/1.1\r\nHost: {PARTNER}\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .map_err(|error| format!("{netns}: {error}"))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|error| format!("{netns}: {error}"))?;
        if answer.starts_with("HTTP/1.1 200") && answer.ends_with(&"x".repeat(100)) {
            Ok(())
        } else {
            Err(format!("{netns}: the answer was {answer:?}"))
        }
    })
}

/// TLS handshakes back to back from inside the pod for about `seconds`, each from connect to
/// the server's answer; (p50, p99) in microseconds.
fn handshakes(netns: &str, seconds: u64) -> Result<(f64, f64), String> {
    let address: SocketAddr = format!("{PARTNER}:443").parse().expect("an address");
    let mut times = in_namespace(netns, || {
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut times = Vec::new();
        while Instant::now() < until {
            let started = Instant::now();
            let answer = sluice_lab::tls::handshake(address, Some(SERVER_NAME), Duration::from_secs(2))
                .map_err(|error| format!("TLS handshake from {netns}: {error}"))?;
            times.push(started.elapsed().as_secs_f64() * 1e6);
            if !answer.contains(SERVER_NAME) {
                return Err(format!("the TLS server answered {answer:?}"));
            }
        }
        Ok(times)
    })?;
    if times.is_empty() {
        return Err("no TLS handshake completed".into());
    }
    times.sort_by(f64::total_cmp);
    let at = |fraction: f64| times[((times.len() - 1) as f64 * fraction).round() as usize];
    Ok((at(0.5), at(0.99)))
}
