//! Endpoints recorded by the CNI plugin: a pod object without an address takes the addresses
//! the plugin recorded, and a WorkloadEndpoint without a pod object is an endpoint labelled by
//! its own metadata (Calico's etcd mode).

use sluice_policy::Flow;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: prod}
spec: {orchestrator: k8s, node: node-1, containerID: abc, pod: web, endpoint: eth0, ipNetworks: [10.10.0.5/32], interfaceName: slc000000000001}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--2-k8s-db-eth0, namespace: prod, labels: {app: db}}
spec: {orchestrator: k8s, node: node-2, containerID: def, pod: db, endpoint: eth0, ipNetworks: [10.10.0.6/32], interfaceName: slc000000000002, ports: [{name: sql, protocol: TCP, port: 5432}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  selector: app == 'db'
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'web'}
      destination: {ports: [sql]}
"#;

fn flow(source: &str, destination: &str, port: u16) -> Flow {
    Flow {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
        protocol: 6,
        source_port: None,
        destination_port: Some(port),
        icmp_type: None,
        icmp_code: None,
    }
}

#[test]
fn recorded_endpoints_are_endpoints() {
    let resources = sluice_api::load_str("endpoints.yaml", MANIFESTS).unwrap();
    let dataplane = sluice_policy::compile(&resources);
    let web = dataplane
        .endpoint_by_name("prod", "web")
        .expect("the pod takes its recorded address");
    assert_eq!(
        web.addresses,
        vec!["10.10.0.5".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(web.node.as_deref(), Some("node-1"));
    let database = dataplane
        .endpoint_by_name("prod", "db")
        .expect("a pod-less endpoint is an endpoint");
    assert_eq!(database.node.as_deref(), Some("node-2"));
    assert!(dataplane.evaluate(&flow("10.10.0.5", "10.10.0.6", 5432)).allowed);
    assert!(!dataplane.evaluate(&flow("10.10.0.5", "10.10.0.6", 5433)).allowed);
    assert!(!dataplane.evaluate(&flow("10.99.0.1", "10.10.0.6", 5432)).allowed);
}
