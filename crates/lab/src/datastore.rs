//! What the lab reads and writes in the datastore: manifests (validated, one transaction, as
//! `sluice apply` does), the lab's Node and Pod objects, and the agents' status records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluice_api::kubernetes::{
    Container, ContainerPort, Namespace, Node, NodeAddress, NodeStatus, Pod, PodSpec as KubernetesPodSpec,
};
use sluice_api::meta::ObjectMeta;
use sluice_api::resource::RESOURCE_PREFIX;
use sluice_api::values::Protocol;
use sluice_api::{Loader, Resource, ResourceSet};
use sluice_store::{Condition, Operation, Store};

use crate::config::{GATEWAY_HEALTH_PORT, GATEWAY_HEALTH_PORT_NAME, LabFile, PortProtocol};

pub fn open(address: &str) -> Result<Arc<dyn Store>, String> {
    sluice_store::open(address)
        .map(Arc::from)
        .map_err(|error| format!("cannot open the datastore {address}: {error}"))
}

/// The datastore, created if missing: for `lab up`, which sets the lab's store up.
pub fn open_or_create(address: &str) -> Result<Arc<dyn Store>, String> {
    sluice_store::open_or_create(address)
        .map(Arc::from)
        .map_err(|error| format!("cannot open the datastore {address}: {error}"))
}

/// Every stored resource and the newest revision at which a resource changed. A stored value
/// that does not decode or validate is left out with a warning, as the agents and `sluice
/// explain` leave it out.
pub fn read_resources(store: &dyn Store) -> Result<(Vec<Resource>, i64), String> {
    let (values, _) = store.list(RESOURCE_PREFIX).map_err(|error| error.to_string())?;
    let newest = values
        .iter()
        .map(|value| value.modify_revision)
        .max()
        .unwrap_or(0);
    let stored = sluice_api::stored::decode_values(
        values
            .iter()
            .map(|value| (value.key.as_str(), value.value.as_slice(), value.modify_revision)),
    );
    for left_out in &stored.left_out {
        eprintln!("warning: left out the invalid stored value {left_out}");
    }
    Ok((stored.resources.into_values().collect(), newest))
}

/// The stored resources as a set: exactly what `sluice explain` compiles without `-f`.
pub fn read_set(store: &dyn Store) -> Result<ResourceSet, String> {
    Ok(read_resources(store)?.0.into_iter().collect())
}

/// Validates the manifests and the lab's own objects (Nodes, Pods without status, and the
/// pods' Namespaces when no manifest defines them) and writes them in one transaction, or
/// nothing. Returns a line per object written.
pub fn apply_lab(store: &dyn Store, lab: &LabFile) -> Result<Vec<String>, String> {
    let (existing, _) = read_resources(store)?;
    let mut loader = Loader::default();
    loader.known_tiers(existing.iter().filter_map(|resource| match resource {
        Resource::Tier(tier) => Some(tier.metadata.name.clone()),
        _ => None,
    }));
    for path in &lab.manifests {
        loader.add_path(path);
    }
    let manifests = loader
        .finish()
        .map_err(|errors| format!("the lab's manifests have errors:\n{errors}"))?;
    let mut resources = manifests.into_resources();

    let mut namespaces: BTreeSet<String> = existing
        .iter()
        .chain(&resources)
        .filter_map(|resource| match resource {
            Resource::Namespace(namespace) => Some(namespace.metadata.name.clone()),
            _ => None,
        })
        .collect();
    for (index, node) in lab.nodes.iter().enumerate() {
        // As the kubelet reports it; the agents route each other's pods through it.
        let internal_address = NodeAddress {
            address_type: "InternalIP".into(),
            address: crate::cluster::node_address(index).to_string(),
        };
        resources.push(Resource::Node(Node {
            metadata: ObjectMeta {
                name: node.name.clone(),
                labels: node.labels.clone(),
                ..ObjectMeta::default()
            },
            spec: Default::default(),
            status: NodeStatus {
                addresses: vec![internal_address],
            },
        }));
    }
    for pod in &lab.pods {
        // Kubernetes has no pod without its namespace.
        if namespaces.insert(pod.namespace.clone()) {
            resources.push(Resource::Namespace(Namespace {
                metadata: ObjectMeta {
                    name: pod.namespace.clone(),
                    ..ObjectMeta::default()
                },
            }));
        }
        let mut ports: Vec<ContainerPort> = pod
            .ports
            .iter()
            .map(|port| ContainerPort {
                name: port.name.clone(),
                container_port: port.container_port,
                protocol: Some(match port.protocol {
                    PortProtocol::Tcp => Protocol::Tcp,
                    PortProtocol::Udp => Protocol::Udp,
                }),
                host_port: None,
                host_ip: None,
            })
            .collect();
        // Where agents probe a gateway's readiness, as on Calico's egress gateway pods.
        if pod.egress_gateway.is_some() {
            ports.push(ContainerPort {
                name: Some(GATEWAY_HEALTH_PORT_NAME.into()),
                container_port: GATEWAY_HEALTH_PORT,
                protocol: Some(Protocol::Tcp),
                host_port: None,
                host_ip: None,
            });
        }
        // No status: the address comes from IPAM through the CNI plugin's WorkloadEndpoint.
        resources.push(Resource::Pod(Pod {
            metadata: ObjectMeta {
                name: pod.name.clone(),
                namespace: Some(pod.namespace.clone()),
                labels: pod.labels.clone(),
                annotations: pod.annotations.clone(),
                ..ObjectMeta::default()
            },
            spec: KubernetesPodSpec {
                node_name: Some(pod.node.clone()),
                service_account_name: pod.service_account.clone(),
                containers: vec![Container {
                    name: "main".into(),
                    ports,
                }],
                ..KubernetesPodSpec::default()
            },
            status: Default::default(),
        }));
    }
    let mut lines = Vec::new();
    let operations: Vec<Operation> = resources
        .iter()
        .map(|resource| {
            let kind = resource.kind().name().to_lowercase();
            lines.push(match resource.namespace() {
                Some(namespace) => format!("{kind} {namespace}/{}", resource.metadata().name),
                None => format!("{kind} {}", resource.metadata().name),
            });
            Operation::Put {
                key: resource.key(),
                value: resource.encode(),
                condition: Condition::Any,
            }
        })
        .collect();
    store
        .commit(&operations)
        .map_err(|error| format!("cannot write the lab's resources: {error}"))?;
    Ok(lines)
}

/// Deletes the lab's Pod objects (for an outside datastore that outlives the lab).
pub fn delete_pods(store: &dyn Store, pods: &[(String, String)]) -> Result<(), String> {
    let operations: Vec<Operation> = pods
        .iter()
        .map(|(namespace, name)| Operation::Delete {
            key: sluice_api::resource::key(sluice_api::Kind::Pod, Some(namespace), name),
            condition: Condition::Any,
        })
        .collect();
    if operations.is_empty() {
        return Ok(());
    }
    store
        .commit(&operations)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// An agent's status record (`/sluice-status/nodes/<node>`), read as JSON so the lab does not
/// depend on the agent crate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub programmed_revision: i64,
    pub in_sync: bool,
    #[serde(default)]
    pub error: Option<String>,
    pub local_endpoints: usize,
    #[serde(default)]
    pub rules: usize,
    #[serde(default)]
    pub routes: usize,
    #[serde(default)]
    pub route_error: Option<String>,
}

pub fn agent_status(store: &dyn Store, node: &str) -> Option<AgentStatus> {
    let value = store.get(&format!("/sluice-status/nodes/{node}")).ok()??;
    serde_json::from_slice(&value.value).ok()
}

/// The blocks affine to each node, and which pools do not NAT, from the IPAM records.
#[derive(Debug, Default)]
pub struct Placement {
    /// (block, node, whether its pool masquerades outgoing traffic)
    pub blocks: Vec<(ipnet::IpNet, String, bool)>,
}

pub fn placement(store: Arc<dyn Store>) -> Result<Placement, String> {
    let report = sluice_ipam::Ipam::new(store)
        .report()
        .map_err(|error| format!("cannot read IPAM's records: {error}"))?;
    let nat: BTreeMap<&str, bool> = report
        .pools
        .iter()
        .map(|pool| (pool.name.as_str(), pool.nat_outgoing))
        .collect();
    let blocks = report
        .blocks
        .iter()
        .filter_map(|block| {
            let node = block.node.clone()?;
            let nat = block
                .pool
                .as_deref()
                .and_then(|pool| nat.get(pool))
                .copied()
                .unwrap_or(false);
            Some((block.cidr, node, nat))
        })
        .collect();
    Ok(Placement { blocks })
}
