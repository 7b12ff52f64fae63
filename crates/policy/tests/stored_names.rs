//! Names that `apply` refuses can still reach `compile` (a value that bypassed validation):
//! compiling never panics on a namespace holding both quote kinds, which no selector text can
//! quote, and the namespace's policy still applies to its pods.

use sluice_policy::Flow;

const MANIFESTS: &str = r#"
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: prod, labels: {app: web}}
spec: {orchestrator: k8s, node: node-1, containerID: abc, pod: web, endpoint: eth0, ipNetworks: [10.10.0.5/32], interfaceName: slc000000000001}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-web, namespace: prod}
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {serviceAccounts: {names: [builder]}}
"#;

#[test]
fn a_namespace_with_both_quote_kinds_compiles_and_is_enforced() {
    let mut resources = sluice_api::load_str("names.yaml", MANIFESTS).unwrap();
    let odd = "it's \"odd\"";
    resources.workload_endpoints[0].metadata.namespace = Some(odd.into());
    resources.network_policies[0].metadata.namespace = Some(odd.into());
    let dataplane = sluice_policy::compile(&resources);
    assert!(dataplane.endpoint_by_name(odd, "web").is_some());
    let verdict = dataplane.evaluate(&Flow {
        source: "192.0.2.9".parse().unwrap(),
        destination: "10.10.0.5".parse().unwrap(),
        protocol: 6,
        source_port: None,
        destination_port: Some(80),
        icmp_type: None,
        icmp_code: None,
    });
    // The policy selects the pod (same namespace), and an outside source is no service account.
    assert!(!verdict.allowed);
}
