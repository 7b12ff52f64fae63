//! Identity a pod cannot forge: every label Calico derives from a namespace, a service account
//! or the orchestrator is set by Sluice, never taken from the pod's (or a WorkloadEndpoint's, or
//! a namespaced NetworkSet's) own labels. One row a reserved key: a policy in `prod` admits only
//! what carries the genuine identity, and an intruder in `dev` claims it with a label.
//!
//! Calico's rules: libcalico-go `lib/backend/syncersv1/updateprocessors/
//! workloadendpointprocessor.go` drops `pcns.` and `pcsa.` labels from workload endpoints and sets
//! `projectcalico.org/serviceaccount` from the spec; `lib/backend/k8s/conversion/
//! workload_endpoint_default.go` sets `projectcalico.org/namespace` and `.../orchestrator` over
//! the pod's labels.

use sluice_policy::{Dataplane, Flow, compile};

/// Namespaces `prod` (env=prod, trust=high) and `dev`; the `prod` pod `db` runs as the
/// `payments` service account (team=payments).
const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod, trust: high}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: payments, namespace: prod, labels: {team: payments}}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {nodeName: node-1, serviceAccountName: payments, containers: [{name: main}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: friend, namespace: prod, labels: {app: friend}}
spec: {nodeName: node-1, serviceAccountName: payments, containers: [{name: main}]}
status: {podIP: 10.0.1.3}
"#;

const DATABASE: &str = "10.0.1.2";
const FRIEND: &str = "10.0.1.3";
const INTRUDER: &str = "10.0.2.9";

/// The `prod/db` ingress policy admitting only `source` (a rule's source block).
fn policy(source: &str) -> String {
    format!(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: db, namespace: prod}}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress: [{{action: Allow, protocol: TCP, source: {source}}}]
"#
    )
}

fn flow(source: &str) -> Flow {
    Flow {
        source: source.parse().unwrap(),
        destination: DATABASE.parse().unwrap(),
        protocol: 6,
        source_port: None,
        destination_port: Some(5432),
        icmp_type: None,
        icmp_code: None,
    }
}

fn compile_with(documents: &[&str]) -> Dataplane {
    let text = std::iter::once(CLUSTER)
        .chain(documents.iter().copied())
        .collect::<Vec<_>>()
        .join("\n---\n");
    match sluice_api::load_str("identity.yaml", &text) {
        Ok(resources) => compile(&resources),
        Err(errors) => panic!("manifests do not load: {errors:?}"),
    }
}

/// (the forged label, its value, the rule source it tries to pass).
const FORGERIES: &[(&str, &str, &str)] = &[
    // namespaceSelector is matched on `pcns.`-prefixed namespace labels.
    ("pcns.trust", "high", "{namespaceSelector: trust == 'high'}"),
    (
        "pcns.env",
        "prod",
        "{namespaceSelector: env == 'prod', selector: all()}",
    ),
    (
        "pcns.kubernetes.io/metadata.name",
        "prod",
        "{namespaceSelector: kubernetes.io/metadata.name == 'prod'}",
    ),
    (
        "pcns.projectcalico.org/name",
        "prod",
        "{namespaceSelector: projectcalico.org/name == 'prod'}",
    ),
    // serviceAccounts.selector is matched on `pcsa.`-prefixed service account labels.
    (
        "pcsa.team",
        "payments",
        "{serviceAccounts: {selector: team == 'payments'}}",
    ),
    (
        "pcsa.projectcalico.org/name",
        "payments",
        "{serviceAccounts: {names: [payments]}, namespaceSelector: all()}",
    ),
    // serviceAccounts.names is matched on `projectcalico.org/serviceaccount`.
    (
        "projectcalico.org/serviceaccount",
        "payments",
        "{serviceAccounts: {names: [payments]}, namespaceSelector: all()}",
    ),
    // A plain selector over Calico's implicit labels.
    (
        "projectcalico.org/namespace",
        "prod",
        "{selector: projectcalico.org/namespace == 'prod', namespaceSelector: all()}",
    ),
    (
        "projectcalico.org/orchestrator",
        "k8s-trusted",
        "{selector: projectcalico.org/orchestrator == 'k8s-trusted', namespaceSelector: all()}",
    ),
];

#[test]
fn a_pod_label_cannot_claim_a_reserved_identity() {
    for (key, value, source) in FORGERIES {
        let intruder = format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: intruder, namespace: dev, labels: {{"{key}": "{value}"}}}}
spec: {{nodeName: node-2, containers: [{{name: main}}]}}
status: {{podIP: {INTRUDER}}}"#
        );
        let dataplane = compile_with(&[&intruder, &policy(source)]);
        assert!(
            !dataplane.evaluate(&flow(INTRUDER)).allowed,
            "a pod labelled `{key}: {value}` passed `{source}`"
        );
        // The rule is not dead: the genuine identity passes (orchestrator aside: no pod has
        // that value).
        if *key != "projectcalico.org/orchestrator" {
            assert!(
                dataplane.evaluate(&flow(FRIEND)).allowed,
                "the genuine `prod/friend` did not pass `{source}`"
            );
        }
    }
}

#[test]
fn a_workload_endpoint_label_cannot_claim_a_reserved_identity() {
    // A WorkloadEndpoint without a pod object is labelled by its own metadata (etcd mode).
    for (key, value, source) in FORGERIES {
        let intruder = format!(
            r#"apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: node--2-k8s-intruder-eth0, namespace: dev, labels: {{"{key}": "{value}"}}}}
spec: {{orchestrator: k8s, node: node-2, containerID: abc, pod: intruder, endpoint: eth0, ipNetworks: [{INTRUDER}/32], interfaceName: slc000000000009}}"#
        );
        let dataplane = compile_with(&[&intruder, &policy(source)]);
        assert!(
            !dataplane.evaluate(&flow(INTRUDER)).allowed,
            "a WorkloadEndpoint labelled `{key}: {value}` passed `{source}`"
        );
    }
}

#[test]
fn a_namespaced_network_set_cannot_claim_another_namespace() {
    for (key, value, source) in FORGERIES {
        let set = format!(
            r#"apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {{name: everywhere, namespace: dev, labels: {{"{key}": "{value}"}}}}
spec: {{nets: [0.0.0.0/0]}}"#
        );
        let dataplane = compile_with(&[&set, &policy(source)]);
        assert!(
            !dataplane.evaluate(&flow("203.0.113.9")).allowed,
            "a NetworkSet labelled `{key}: {value}` passed `{source}`"
        );
    }
}

#[test]
fn ordinary_labels_still_match() {
    // The filter removes only reserved keys: a pod's own labels work as before, including keys
    // in Calico's domain that carry no identity.
    let intruder = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: dev, labels: {{app: client, "projectcalico.org/name": x}}}}
spec: {{nodeName: node-2, containers: [{{name: main}}]}}
status: {{podIP: {INTRUDER}}}"#
    );
    let dataplane = compile_with(&[
        &intruder,
        &policy("{selector: app == 'client' && projectcalico.org/name == 'x', namespaceSelector: all()}"),
    ]);
    assert!(dataplane.evaluate(&flow(INTRUDER)).allowed);
}

#[test]
fn long_service_account_names_keep_their_identity() {
    // The syncer sets `projectcalico.org/serviceaccount` from the endpoint's spec whatever the
    // name's length, so `serviceAccounts.names` matches a 63-character name too, and a pod with
    // such an account cannot replace the label with its own.
    let long_name = "a".repeat(63);
    let pods = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: long, namespace: prod, labels: {{app: long}}}}
spec: {{nodeName: node-1, serviceAccountName: {long_name}, containers: [{{name: main}}]}}
status: {{podIP: 10.0.1.8}}
---
apiVersion: v1
kind: Pod
metadata: {{name: liar, namespace: prod, labels: {{"projectcalico.org/serviceaccount": payments}}}}
spec: {{nodeName: node-1, serviceAccountName: {long_name}, containers: [{{name: main}}]}}
status: {{podIP: 10.0.1.9}}"#
    );
    let dataplane = compile_with(&[
        &pods,
        &policy(&format!("{{serviceAccounts: {{names: [{long_name}]}}}}")),
    ]);
    assert!(dataplane.evaluate(&flow("10.0.1.8")).allowed);
    let dataplane = compile_with(&[&pods, &policy("{serviceAccounts: {names: [payments]}}")]);
    assert!(!dataplane.evaluate(&flow("10.0.1.9")).allowed);
}
