//! Traffic from a node to its own pods is not policed by the pods' ingress policy (Felix's
//! filter OUTPUT chain, `felix/rules/static.go`); a host process on another node reaching the
//! pod is forwarded, and is.

use sluice_policy::{Decision, Flow};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 100.64.0.10}, {type: ExternalIP, address: 198.51.100.10}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status: {addresses: [{type: InternalIP, address: 100.64.0.11}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: prod, labels: {app: web}}
spec: {orchestrator: k8s, node: node-1, containerID: abc, pod: web, endpoint: eth0, ipNetworks: [10.10.0.5/32], interfaceName: slc000000000001}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: default-deny, namespace: prod}
spec:
  selector: all()
  types: [Ingress]
"#;

fn from(source: &str) -> Flow {
    Flow {
        source: source.parse().unwrap(),
        destination: "10.10.0.5".parse().unwrap(),
        protocol: 6,
        source_port: None,
        destination_port: Some(8080),
        icmp_type: None,
        icmp_code: None,
    }
}

#[test]
fn the_pods_own_node_is_not_policed_by_ingress_and_another_node_is() {
    let dataplane = sluice_policy::compile(&sluice_api::load_str("own.yaml", MANIFESTS).unwrap());
    for own in ["100.64.0.10", "198.51.100.10"] {
        let verdict = dataplane.evaluate(&from(own));
        assert!(verdict.allowed, "{own}: {verdict:?}");
        assert_eq!(
            verdict.ingress.map(|(_, decision)| decision),
            Some(Decision::FromOwnNode)
        );
    }
    let other = dataplane.evaluate(&from("100.64.0.11"));
    assert!(!other.allowed, "{other:?}");
    assert!(matches!(other.ingress, Some((_, Decision::TierDefault { .. }))));
    let explanation = sluice_policy::explain(&dataplane, &from("100.64.0.10"));
    let text = format!("{explanation:?}");
    assert!(text.contains("own node"), "{text}");
}
