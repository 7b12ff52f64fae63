//! What the agent hands the proxy child on every compile: the stored resources it compiled,
//! one JSON line, which the child decodes with the same checks and compiles with the same
//! compiler, so that the proxy's IR is the one the kernel was programmed from.

use serde::{Deserialize, Serialize};
use sluice_api::{Resource, ResourceSet};

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    revision: i64,
    resources: Vec<StoredResource>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredResource {
    /// The resource version, as the datastore gave it.
    version: i64,
    /// [`Resource::to_manifest`]: what the datastore holds.
    value: serde_json::Value,
}

/// One line: the snapshot of `resources` at `revision`.
pub fn encode<'a>(revision: i64, resources: impl Iterator<Item = &'a Resource>) -> Vec<u8> {
    let snapshot = Snapshot {
        revision,
        resources: resources
            .map(|resource| StoredResource {
                version: resource
                    .metadata()
                    .resource_version
                    .as_deref()
                    .and_then(|version| version.parse().ok())
                    .unwrap_or(0),
                value: resource.to_manifest(),
            })
            .collect(),
    };
    let mut line = serde_json::to_vec(&snapshot).expect("a snapshot serializes");
    line.push(b'\n');
    line
}

/// The revision and resources of one line. A resource that does not decode makes the whole
/// snapshot an error (the child then keeps the previous one): the agent sends only what it
/// decoded itself.
pub fn decode(line: &[u8]) -> Result<(i64, ResourceSet), String> {
    let snapshot: Snapshot =
        serde_json::from_slice(line).map_err(|error| format!("a snapshot line: {error}"))?;
    let mut resources = Vec::with_capacity(snapshot.resources.len());
    for stored in snapshot.resources {
        let bytes = serde_json::to_vec(&stored.value).map_err(|error| error.to_string())?;
        resources.push(Resource::decode(&bytes, stored.version)?);
    }
    Ok((snapshot.revision, resources.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_compiles_to_the_same_ir() {
        let manifests = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {ports: [80]}
      http: {methods: [GET], paths: [{prefix: /v1/}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: shop, labels: {app: web}}
spec: {node: node-1, pod: web, endpoint: eth0, interfaceName: slcweb, ipNetworks: [10.0.0.5/32]}
"#;
        let set = sluice_api::load_str("snapshot.yaml", manifests).unwrap();
        let resources: Vec<Resource> = set.clone().into_resources();
        let line = encode(42, resources.iter());
        assert_eq!(line.iter().filter(|byte| **byte == b'\n').count(), 1);
        let (revision, decoded) = decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(revision, 42);
        let original = sluice_policy::compile(&set);
        let copy = sluice_policy::compile(&decoded);
        assert_eq!(original.l7_matches, copy.l7_matches);
        assert_eq!(
            format!("{:?}", original.endpoints),
            format!("{:?}", copy.endpoints)
        );
        assert!(
            decode(b"{\"revision\": 1, \"resources\": [{\"version\": 1, \"value\": {\"kind\": \"Nope\"}}]}")
                .is_err()
        );
    }
}
