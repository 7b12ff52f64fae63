//! Traffic from a node to its own pods (root; skipped otherwise). A pod under default-deny
//! ingress is reached by its own node (the `inet sluice` table hooks forward and input, so the
//! node's own connection meets no ingress rule, as in Felix) and not by a host process on
//! another node (forwarded, so policed); `explain` on the datastore says the same for both.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use sluice_api::resource::RESOURCE_PREFIX;
use sluice_lab::{ConnectResult, ServiceProtocol};
use sluice_policy::Flow;
use support::{Lab, Test};

const TESTS: [(&str, Test); 1] = [(
    "a_node_reaches_its_own_pods_past_ingress_policy_and_another_node_does_not",
    own_node,
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
metadata: {name: shop}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: routed}
spec: {cidr: 10.63.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec:
  selector: all()
  types: [Ingress]
"#;

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
  - name: node-2
manifests: [manifests/]
pods:
  - {namespace: shop, name: web, node: node-1, labels: {app: web}, ports: [{containerPort: 8080}]}
"#;

fn own_node() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("own", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    let outcome = run(&lab);
    let finished = lab.finish();
    outcome.and(finished)
}

fn run(lab: &Lab) -> Result<(), String> {
    let web = lab.pod_address("shop/web")?;
    let state = lab.state()?;
    // What `sluice explain` compiles without `-f`: the stored resources.
    let (values, _) = lab
        .store()?
        .list(RESOURCE_PREFIX)
        .map_err(|error| error.to_string())?;
    let stored = sluice_api::stored::decode_values(
        values
            .iter()
            .map(|value| (value.key.as_str(), value.value.as_slice(), value.modify_revision)),
    );
    let dataplane = sluice_policy::compile(&stored.resources.into_values().collect());
    let mut failures = Vec::new();
    for (node, expected) in [("node-1", true), ("node-2", false)] {
        let source = IpAddr::V4(state.node(node).ok_or("no such node")?.address);
        let netns = lab.netns(node)?;
        let outcome = lab.connect(
            &netns,
            ServiceProtocol::Tcp,
            web,
            8080,
            Duration::from_millis(1500),
        );
        let packets = outcome.result == ConnectResult::Connected;
        let explain = dataplane
            .evaluate(&Flow {
                source,
                destination: web,
                protocol: 6,
                source_port: None,
                destination_port: Some(8080),
                icmp_type: None,
                icmp_code: None,
            })
            .allowed;
        if packets != expected || explain != expected {
            failures.push(format!(
                "{node} ({source}) → shop/web {web}:8080: expected {expected}, packets {packets} ({outcome:?}), explain {explain}"
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
