//! The manifests the flow-log tests compile: the IR the kernel would be programmed from.

use sluice_flowlog::{NetworkSetName, network_sets_from_entities};
use sluice_policy::Dataplane;

pub const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1}
status: {podIP: 10.10.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: prod, labels: {app: api}}
spec: {nodeName: node-1}
status: {podIP: 10.10.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {nodeName: node-2}
status: {podIP: 10.10.0.20}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {role: partner}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-egress, namespace: prod}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {selector: app == 'api', ports: [8080]}
    - action: Allow
      protocol: TCP
      destination: {selector: role == 'partner', namespaceSelector: global(), ports: [443]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: prod}
spec:
  selector: app == 'api'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'web'}
      destination: {ports: [8080]}
"#;

/// A staged default deny for prod's egress, compiled as its own IR: what `pending_policies`
/// are computed from in these tests.
pub const STAGED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1}
status: {podIP: 10.10.0.10}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: default-deny, namespace: prod}
spec:
  selector: all()
  types: [Egress]
"#;

pub fn compiled(text: &str) -> (Dataplane, Vec<NetworkSetName>) {
    let resources = sluice_api::load_str("flows.yaml", text).expect("valid manifests");
    let (entities, _) = sluice_policy::build_entities(&resources);
    (
        sluice_policy::compile(&resources),
        network_sets_from_entities(&entities),
    )
}
