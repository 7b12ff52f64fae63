//! Requests through the node's L7 proxy against the same requests with no L7 rule, in a real
//! lab (root; not run in CI):
//!
//! ```sh
//! cargo bench -p sluice-lab --bench l7          # as root
//! SLUICE_BENCH_ROUNDS=5 SLUICE_BENCH_SECONDS=3 SLUICE_BENCH_CONCURRENCY=4 cargo bench -p sluice-lab --bench l7
//! ```
//!
//! Two pods on node-1 in a natOutgoing pool: `shop/direct` allowed to the outside host's
//! ports 80 and 443 by plain rules (its connections stay in the kernel), `shop/proxied` by an
//! HTTP rule (GET) on port 80 and a TLS rule (the server name) on 443 (its connections go
//! through the proxy). First, with no L7 rule in the cluster, `direct` alone is measured (the
//! baseline with no proxy on the node); then the L7 policy is applied and both are measured in
//! interleaved rounds. A request is a new connection, `GET /v1/x` and the answer (the lab's
//! HTTP server closes after it), or a full TLS handshake and the server's answer. Prints per
//! round and kind the requests per second and the latency p50/p99, and the medians: proxied /
//! direct requests per second, latency added by the proxy, and direct after / direct before
//! (what the proxy's presence costs connections that reach no L7 rule).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;

use support::Lab;

const PARTNER: &str = "203.0.113.10";

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
  - {name: partner, address: 203.0.113.10, http: [80], https: [443], names: [api.partner.example]}
manifests: [manifests/]
pods:
  - {namespace: shop, name: direct, node: node-1, labels: {app: direct}}
  - {namespace: shop, name: proxied, node: node-1, labels: {app: proxied}}
"#;

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.77.0.0/16, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: direct, namespace: shop}
spec:
  selector: app == 'direct'
  types: [Egress]
  egress:
    - {action: Allow, protocol: TCP, destination: {ports: [80, 443]}}
"#;

const L7: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: proxied, namespace: shop}
spec:
  selector: app == 'proxied'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {ports: [80]}
      http: {methods: [GET]}
    - action: Allow
      protocol: TCP
      destination: {ports: [443]}
      tls: {serverNames: [api.partner.example]}
"#;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn run() -> Result<(), String> {
    let lab = Lab::up("b", LAB, &[("00.yaml", BASE.to_string())])?;
    let outcome = measure(&lab);
    let cleaned = lab.finish();
    outcome?;
    cleaned
}

/// One load run's numbers.
#[derive(Debug, Clone, Copy)]
struct Load {
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

fn load(lab: &Lab, pod: &str, protocol: &str, seconds: f64, concurrency: usize) -> Result<Load, String> {
    let port = if protocol == "http" { "80" } else { "443" };
    let output = support::run_checked(
        "ip",
        &[
            "netns",
            "exec",
            &lab.netns(pod)?,
            &lab.environment.sluice_binary.display().to_string(),
            "support",
            "request-load",
            "--protocol",
            protocol,
            "--to",
            PARTNER,
            "--port",
            port,
            "--seconds",
            &seconds.to_string(),
            "--concurrency",
            &concurrency.to_string(),
            "--path",
            "/v1/x",
            "--server-name",
            "api.partner.example",
        ],
    )?;
    let fields: Vec<f64> = output
        .split_whitespace()
        .map(|field| {
            field
                .parse()
                .map_err(|_| format!("request-load printed {output:?}"))
        })
        .collect::<Result<_, _>>()?;
    let [completed, failed, elapsed, p50_us, p99_us] = fields[..] else {
        return Err(format!("request-load printed {output:?}"));
    };
    if failed > 0.0 || completed == 0.0 {
        return Err(format!(
            "{pod} {protocol}: {completed} completed, {failed} failed"
        ));
    }
    Ok(Load {
        per_second: completed / elapsed,
        p50_us,
        p99_us,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn measure(lab: &Lab) -> Result<(), String> {
    let rounds = setting("SLUICE_BENCH_ROUNDS", 5.0) as usize;
    let seconds = setting("SLUICE_BENCH_SECONDS", 3.0);
    let concurrency = setting("SLUICE_BENCH_CONCURRENCY", 1.0) as usize;
    let direct = "shop/direct";
    let proxied = "shop/proxied";
    println!("{rounds} rounds of {seconds} s, {concurrency} client thread(s)");
    let mut before = std::collections::BTreeMap::<&str, Vec<Load>>::new();
    for round in 0..rounds {
        for protocol in ["http", "https"] {
            let measured = load(lab, direct, protocol, seconds, concurrency)?;
            println!(
                "round {round} no L7 rule on the node  {protocol:<5} direct  {:>8.0}/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
                measured.per_second, measured.p50_us, measured.p99_us
            );
            before.entry(protocol).or_default().push(measured);
        }
    }
    lab.apply(L7, &[])?;
    // The proxy starts with the first ruleset that redirects; wait until a request gets through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while load(lab, proxied, "http", 0.2, 1).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the proxy never answered; agent log:\n{}",
                lab.agent_log("node-1")
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut after = std::collections::BTreeMap::<(&str, &str), Vec<Load>>::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [direct, proxied]
        } else {
            [proxied, direct]
        };
        for protocol in ["http", "https"] {
            for pod in order {
                let measured = load(lab, pod, protocol, seconds, concurrency)?;
                println!(
                    "round {round} L7 rules on the node     {protocol:<5} {:<7} {:>8.0}/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
                    pod.trim_start_matches("shop/"),
                    measured.per_second,
                    measured.p50_us,
                    measured.p99_us
                );
                after.entry((pod, protocol)).or_default().push(measured);
            }
        }
    }
    println!();
    for protocol in ["http", "https"] {
        let of = |loads: &[Load], pick: fn(&Load) -> f64| median(loads.iter().map(pick).collect());
        let through = &after[&(proxied, protocol)];
        let kernel = &after[&(direct, protocol)];
        let baseline = &before[protocol];
        println!(
            "{protocol}: proxied/direct requests/s {:.3}; added p50 {:.0} µs, p99 {:.0} µs; direct with L7 rules on the node / without: requests/s {:.3}, p50 {:.0} → {:.0} µs",
            of(through, |load| load.per_second) / of(kernel, |load| load.per_second),
            of(through, |load| load.p50_us) - of(kernel, |load| load.p50_us),
            of(through, |load| load.p99_us) - of(kernel, |load| load.p99_us),
            of(kernel, |load| load.per_second) / of(baseline, |load| load.per_second),
            of(baseline, |load| load.p50_us),
            of(kernel, |load| load.p50_us),
        );
    }
    Ok(())
}
