//! Dual-stack pods with real packets (root only; skipped otherwise), issue 8: two dual-stack
//! pods, an IPv6-only and an IPv4-only pod on one node, wired by the real CNI plugin from an
//! IPv4 and an IPv6 pool chosen by namespace. `fam/dual` admits its port from IPv6 sources
//! only. Every pair is probed over each IP family both pods have, and explain agrees with each
//! probe: `fam/dual2 -> fam/dual` connects over IPv6 and is dropped over IPv4, the IPv6-only
//! pod connects over IPv6, the IPv4-only pod is dropped over IPv4, and between the IPv4-only
//! and the IPv6-only pod (no common IP family) the sender finds no route, as explain says.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::net::IpAddr;
use std::process::ExitCode;

use sluice_lab::{ConnectResult, ProbeOptions, ProbeReport};
use support::{Lab, Test};

const TESTS: [(&str, Test); 1] = [(
    "probes_and_explain_agree_per_ip_family_for_dual_stack_pods",
    families,
)];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: fam, labels: {stack: dual}}
---
apiVersion: v1
kind: Namespace
metadata: {name: six, labels: {stack: six}}
---
apiVersion: v1
kind: Namespace
metadata: {name: four, labels: {stack: four}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods-v4}
spec: {cidr: 10.63.0.0/16, namespaceSelector: "stack in {'dual', 'four'}"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods-v6}
spec: {cidr: "fd00:63::/64", blockSize: 122, namespaceSelector: "stack in {'dual', 'six'}"}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: dual-in, namespace: fam}
spec:
  selector: app == 'dual'
  types: [Ingress]
  ingress:
    - {action: Allow, protocol: TCP, source: {nets: ["fd00:63::/64"]}, destination: {ports: [8080]}}
"#;

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
manifests: [manifests/]
pods:
  - {namespace: fam, name: dual, node: node-1, labels: {app: dual}, ports: [{containerPort: 8080}]}
  - {namespace: fam, name: dual2, node: node-1, labels: {app: dual2}, ports: [{containerPort: 8080}]}
  - {namespace: six, name: only, node: node-1, ports: [{containerPort: 8080}]}
  - {namespace: four, name: only, node: node-1, ports: [{containerPort: 8080}]}
"#;

fn families() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("fams", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    let state = lab.state()?;
    let families_of = |pod: &str| -> Result<(bool, bool), String> {
        let pod = state
            .pods
            .iter()
            .find(|candidate| candidate.shown() == pod)
            .ok_or_else(|| format!("no pod {pod}"))?;
        Ok((
            pod.addresses.iter().any(IpAddr::is_ipv4),
            pod.addresses.iter().any(IpAddr::is_ipv6),
        ))
    };
    for (pod, expected) in [
        ("fam/dual", (true, true)),
        ("fam/dual2", (true, true)),
        ("six/only", (false, true)),
        ("four/only", (true, false)),
    ] {
        if families_of(pod)? != expected {
            return Err(format!(
                "{pod} has families (IPv4, IPv6) {:?}, expected {expected:?}",
                families_of(pod)?
            ));
        }
    }
    let report = sluice_lab::probe(
        &lab.environment,
        &lab.name,
        &ProbeOptions {
            against_explain: true,
            services: Vec::new(),
            ..Default::default()
        },
    )?;
    let disagreements = support::disagreements(&report);
    if !disagreements.is_empty() {
        return Err(format!(
            "probes disagree with explain:\n{}",
            disagreements.join("\n")
        ));
    }
    // (from, to, IPv6?, what the probe must find).
    let expected = [
        ("fam/dual2", "fam/dual", false, Some(ConnectResult::TimedOut)),
        ("fam/dual2", "fam/dual", true, Some(ConnectResult::Connected)),
        ("fam/dual", "fam/dual2", false, Some(ConnectResult::Connected)),
        ("fam/dual", "fam/dual2", true, Some(ConnectResult::Connected)),
        ("six/only", "fam/dual", true, Some(ConnectResult::Connected)),
        ("fam/dual", "six/only", true, Some(ConnectResult::Connected)),
        ("four/only", "fam/dual", false, Some(ConnectResult::TimedOut)),
        ("fam/dual", "four/only", false, Some(ConnectResult::Connected)),
        ("four/only", "six/only", true, Some(ConnectResult::Unreachable)),
        ("six/only", "four/only", false, Some(ConnectResult::Unreachable)),
        // No probe of a family one side lacks.
        ("six/only", "fam/dual", false, None),
        ("four/only", "fam/dual", true, None),
    ];
    for (from, to, ipv6, outcome) in expected {
        let found = rows(&report, from, to, ipv6);
        match (outcome, found.as_slice()) {
            (None, []) => {}
            (Some(wanted), [row]) if row.outcome.result == wanted => {
                let no_common =
                    (from, to) == ("four/only", "six/only") || (from, to) == ("six/only", "four/only");
                if row.no_common_family != no_common {
                    return Err(format!(
                        "{from} -> {to}: no_common_family is {}",
                        row.no_common_family
                    ));
                }
                if wanted == ConnectResult::Connected && row.outcome.seen != Some(row.from_address) {
                    return Err(format!(
                        "{from} -> {to}: the peer saw {:?}, not {}",
                        row.outcome.seen, row.from_address
                    ));
                }
            }
            (wanted, rows) => {
                let found: Vec<String> = rows
                    .iter()
                    .map(|row| format!("{} -> {}: {:?}", row.from_address, row.to_address, row.outcome))
                    .collect();
                return Err(format!(
                    "{from} -> {to} over {}: expected {wanted:?}, found {found:?}",
                    if ipv6 { "IPv6" } else { "IPv4" }
                ));
            }
        }
    }
    lab.finish()
}

/// The probes from one pod to another over one family (by the destination address).
fn rows<'a>(report: &'a ProbeReport, from: &str, to: &str, ipv6: bool) -> Vec<&'a sluice_lab::ProbeRow> {
    report
        .rows
        .iter()
        .filter(|row| row.from == from && row.to == to && row.to_address.is_ipv6() == ipv6)
        .collect()
}
