//! Test support: the examples with the workload endpoints the CNI plugin would record for
//! them, writing resources to a store, the agent's status record, and bounded waits.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_agent::{NodeStatus, status_key};
use sluice_api::{Resource, ResourceSet};
use sluice_store::{Condition, Operation, Store};

pub fn examples() -> ResourceSet {
    sluice_api::load_paths(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")]).unwrap()
}

pub fn load(text: &str) -> Vec<Resource> {
    sluice_api::load_str("test.yaml", text).unwrap().into_resources()
}

/// A WorkloadEndpoint per pod, on the pod's node, with a `slc…` host interface.
pub fn workload_endpoints(resources: &ResourceSet) -> Vec<Resource> {
    resources
        .pods
        .iter()
        .enumerate()
        .flat_map(|(index, pod)| {
            load(&format!(
                "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: wep-{index}, namespace: {}}}\nspec: {{node: {}, pod: {}, endpoint: eth0, containerID: c{index}, orchestrator: k8s, interfaceName: slc{index:012}, ipNetworks: [{}/32]}}\n",
                pod.metadata.namespace(),
                pod.spec.node_name.clone().unwrap(),
                pod.metadata.name,
                pod.addresses()[0]
            ))
        })
        .collect()
}

/// Writes resources in one transaction, as `sluice apply` does.
pub fn put_all(store: &dyn Store, resources: Vec<Resource>) {
    let operations: Vec<Operation> = resources
        .iter()
        .map(|resource| Operation::Put {
            key: resource.key(),
            value: resource.encode(),
            condition: Condition::Any,
        })
        .collect();
    store.commit(&operations).unwrap();
}

pub fn status(store: &dyn Store, node: &str) -> Option<NodeStatus> {
    store
        .get(&status_key(node))
        .unwrap()
        .map(|value| serde_json::from_slice(&value.value).unwrap())
}

/// Waits for `condition`, failing the test after 30 s.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
