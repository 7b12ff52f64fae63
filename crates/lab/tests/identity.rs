//! Identity a pod cannot forge, with real packets (root only; skipped otherwise), issue 8: a
//! pod in `dev` labelled with the reserved keys of `prod`'s namespace and service account
//! (`pcns.trust: high`, `pcsa.team: payments`, `projectcalico.org/serviceaccount: payments`) is
//! refused by `prod/db`, whose ingress admits only the genuine identities, while the genuine
//! ones connect; every probe agrees with explain.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::process::ExitCode;

use sluice_lab::ProbeOptions;
use support::{Lab, Test};

const TESTS: [(&str, Test); 1] = [("a_pod_cannot_claim_another_namespace_or_account", forgery)];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {trust: high}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: payments, namespace: prod, labels: {team: payments}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: routed}
spec: {cidr: 10.62.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress:
    - {action: Allow, protocol: TCP, source: {namespaceSelector: trust == 'high'}, destination: {ports: [5432]}}
    - {action: Allow, protocol: TCP, source: {serviceAccounts: {selector: team == 'payments'}, namespaceSelector: all()}, destination: {ports: [6432]}}
    - {action: Allow, protocol: TCP, source: {serviceAccounts: {names: [payments]}, namespaceSelector: all()}, destination: {ports: [7432]}}
"#;

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
manifests: [manifests/]
pods:
  - namespace: prod
    name: db
    node: node-1
    labels: {app: db}
    ports: [{containerPort: 5432}, {containerPort: 6432}, {containerPort: 7432}]
  - namespace: prod
    name: friend
    node: node-1
    serviceAccount: payments
  - namespace: dev
    name: intruder
    node: node-1
    labels: {"pcns.trust": high, "pcsa.team": payments, "projectcalico.org/serviceaccount": payments}
"#;

fn forgery() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("ident", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
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
    for port in [5432, 6432, 7432] {
        let outcome = |from: &str| {
            report
                .rows
                .iter()
                .find(|row| row.from == from && row.to == "prod/db" && row.port == port)
                .map(|row| row.allowed())
                .ok_or_else(|| format!("no probe {from} -> prod/db port {port}"))
        };
        if !outcome("prod/friend")? {
            return Err(format!("the genuine prod/friend was refused on port {port}"));
        }
        if outcome("dev/intruder")? {
            return Err(format!("dev/intruder's forged labels opened port {port}"));
        }
    }
    lab.finish()
}
