//! The things selectors pick: workload endpoints (pods) and network sets, with the labels
//! Calico gives them.
//!
//! Calico matches a rule's `namespaceSelector` by copying each namespace's labels onto its
//! endpoints with a `pcns.` prefix, and service account labels with `pcsa.`
//! (`libcalico-go/lib/backend/k8s/conversion/conversion.go`, `NamespaceToProfile`). Endpoints
//! also carry `projectcalico.org/namespace`, `projectcalico.org/orchestrator` and
//! `projectcalico.org/serviceaccount`. Sluice builds the same label maps so that one selector
//! evaluator serves every case.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use sluice_api::ResourceSet;

pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
pub const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";
pub const LABEL_NAME: &str = "projectcalico.org/name";
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";

/// Whether a label key is one Calico derives from a namespace or a service account. Such keys
/// carry identity: a pod (or anyone who can label it) must not be able to claim them.
pub fn is_reserved_label(key: &str) -> bool {
    key.starts_with(NAMESPACE_LABEL_PREFIX) || key.starts_with(SERVICE_ACCOUNT_LABEL_PREFIX)
}

/// An object's own labels without the reserved `pcns.` / `pcsa.` keys. Calico drops them from
/// workload endpoints before Felix sees them "so a wep cannot pretend it is in another namespace"
/// (libcalico-go `updateprocessors/workloadendpointprocessor.go`). Sluice drops them from
/// namespaced NetworkSets too, where Calico keeps them: a namespace's own network set must not
/// claim another namespace's labels and so enter its peers' `namespaceSelector` rules.
fn own_labels(labels: &BTreeMap<String, String>) -> impl Iterator<Item = (String, String)> + '_ {
    labels
        .iter()
        .filter(|(key, _)| !is_reserved_label(key))
        .map(|(key, value)| (key.clone(), value.clone()))
}

/// Something a selector can pick: a pod or a network set.
#[derive(Debug, Clone)]
pub struct Entity {
    pub kind: EntityKind,
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub networks: Vec<IpNet>,
    /// (name, protocol number, port) of the pod's named container ports.
    pub named_ports: Vec<(String, u8, u16)>,
    pub node: Option<String>,
    /// A network set's `allowedEgressDomains`.
    pub allowed_egress_domains: Vec<sluice_api::domain::DomainPattern>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Endpoint,
    NetworkSet,
    GlobalNetworkSet,
}

/// Builds the endpoints (workload pods with an address) and network sets of a resource set.
/// Returns them with the names of pods skipped because they have no address.
pub fn build_entities(resources: &ResourceSet) -> (Vec<Entity>, Vec<String>) {
    let namespace_labels: HashMap<&str, BTreeMap<String, String>> = resources
        .namespaces
        .iter()
        .map(|namespace| (namespace.metadata.name.as_str(), namespace.effective_labels()))
        .collect();
    let service_account_labels: HashMap<(&str, &str), &BTreeMap<String, String>> = resources
        .service_accounts
        .iter()
        .map(|account| {
            (
                (account.metadata.namespace(), account.metadata.name.as_str()),
                &account.metadata.labels,
            )
        })
        .collect();
    let profile_labels = |namespace: &str| {
        let mut labels = BTreeMap::new();
        match namespace_labels.get(namespace) {
            Some(namespace_labels) => {
                for (key, value) in namespace_labels {
                    labels.insert(format!("{NAMESPACE_LABEL_PREFIX}{key}"), value.clone());
                }
            }
            // A namespace that is not in the inputs still has the label the API server adds.
            None => {
                labels.insert(
                    format!("{NAMESPACE_LABEL_PREFIX}kubernetes.io/metadata.name"),
                    namespace.to_string(),
                );
            }
        }
        labels.insert(
            format!("{NAMESPACE_LABEL_PREFIX}{LABEL_NAME}"),
            namespace.to_string(),
        );
        labels
    };

    // Labels of an endpoint: profile labels first, so the endpoint's own labels win over
    // inherited ones, then Calico's implicit labels.
    let endpoint_labels = |namespace: &str, account: &str, own: &BTreeMap<String, String>| {
        let mut labels = profile_labels(namespace);
        if let Some(account_labels) = service_account_labels.get(&(namespace, account)) {
            for (key, value) in account_labels.iter() {
                labels.insert(format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{key}"), value.clone());
            }
        }
        labels.insert(
            format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{LABEL_NAME}"),
            account.to_string(),
        );
        labels.extend(own_labels(own));
        labels.insert(LABEL_NAMESPACE.to_string(), namespace.to_string());
        labels.insert(LABEL_ORCHESTRATOR.to_string(), "k8s".to_string());
        // Set from the service account whatever its length: the k8s conversion leaves the label
        // off names of 63 characters or more, but the syncer that feeds Felix then sets it from
        // the endpoint's `serviceAccountName` (libcalico-go `updateprocessors/
        // workloadendpointprocessor.go`, projectcalico/calico#4529), overriding any pod label.
        labels.insert(LABEL_SERVICE_ACCOUNT.to_string(), account.to_string());
        labels
    };
    // What the CNI plugin recorded for each pod: its addresses when the pod object has none
    // yet (no kubelet writes pod status here), and its node.
    let recorded: HashMap<(&str, &str), &sluice_api::calico::WorkloadEndpoint> = resources
        .workload_endpoints
        .iter()
        .map(|endpoint| {
            (
                (endpoint.metadata.namespace(), endpoint.spec.pod.as_str()),
                endpoint,
            )
        })
        .collect();

    let mut entities = Vec::new();
    let mut skipped = Vec::new();
    let mut pods_seen = std::collections::HashSet::new();
    for pod in &resources.pods {
        if !pod.is_workload() {
            continue;
        }
        let namespace = pod.metadata.namespace();
        pods_seen.insert((namespace, pod.metadata.name.as_str()));
        let record = recorded.get(&(namespace, pod.metadata.name.as_str()));
        let mut networks: Vec<IpNet> = pod.addresses().into_iter().map(IpNet::from).collect();
        if networks.is_empty()
            && let Some(record) = record
        {
            networks = record
                .spec
                .ip_networks
                .iter()
                .map(|network| IpNet::from(network.0.addr()))
                .collect();
        }
        if networks.is_empty() {
            skipped.push(format!("{namespace}/{}", pod.metadata.name));
            continue;
        }
        let account = pod.service_account();
        entities.push(Entity {
            kind: EntityKind::Endpoint,
            namespace: Some(namespace.to_string()),
            name: pod.metadata.name.clone(),
            labels: endpoint_labels(namespace, account, &pod.metadata.labels),
            networks,
            named_ports: pod
                .named_ports()
                .map(|(name, protocol, port)| (name.to_string(), protocol.number(), port))
                .collect(),
            node: pod
                .spec
                .node_name
                .clone()
                .or_else(|| record.map(|record| record.spec.node.clone())),
            allowed_egress_domains: Vec::new(),
        });
    }
    // A workload endpoint with no pod object is an endpoint in its own right, labelled by its
    // own metadata (Calico's etcd mode).
    for endpoint in &resources.workload_endpoints {
        let namespace = endpoint.metadata.namespace();
        if pods_seen.contains(&(namespace, endpoint.spec.pod.as_str()))
            || endpoint.spec.ip_networks.is_empty()
        {
            continue;
        }
        let account = endpoint.spec.service_account_name.as_deref().unwrap_or("default");
        let name = if endpoint.spec.pod.is_empty() {
            &endpoint.metadata.name
        } else {
            &endpoint.spec.pod
        };
        entities.push(Entity {
            kind: EntityKind::Endpoint,
            namespace: Some(namespace.to_string()),
            name: name.clone(),
            labels: endpoint_labels(namespace, account, &endpoint.metadata.labels),
            networks: endpoint
                .spec
                .ip_networks
                .iter()
                .map(|network| IpNet::from(network.0.addr()))
                .collect(),
            named_ports: endpoint
                .spec
                .ports
                .iter()
                .map(|port| (port.name.clone(), port.protocol.number(), port.port))
                .collect(),
            node: Some(endpoint.spec.node.clone()),
            allowed_egress_domains: Vec::new(),
        });
    }
    for set in &resources.network_sets {
        let namespace = set.metadata.namespace();
        let mut labels = profile_labels(namespace);
        // A network set is no pod: it has no service account or orchestrator to claim.
        labels.extend(
            own_labels(&set.metadata.labels)
                .filter(|(key, _)| key != LABEL_SERVICE_ACCOUNT && key != LABEL_ORCHESTRATOR),
        );
        labels.insert(LABEL_NAMESPACE.to_string(), namespace.to_string());
        entities.push(Entity {
            kind: EntityKind::NetworkSet,
            namespace: Some(namespace.to_string()),
            name: set.metadata.name.clone(),
            labels,
            networks: set.spec.nets.iter().map(|net| net.0).collect(),
            named_ports: Vec::new(),
            node: None,
            allowed_egress_domains: set.spec.allowed_egress_domains.clone(),
        });
    }
    for set in &resources.global_network_sets {
        entities.push(Entity {
            kind: EntityKind::GlobalNetworkSet,
            namespace: None,
            name: set.metadata.name.clone(),
            labels: set.metadata.labels.clone(),
            networks: set.spec.nets.iter().map(|net| net.0).collect(),
            named_ports: Vec::new(),
            node: None,
            allowed_egress_domains: set.spec.allowed_egress_domains.clone(),
        });
    }
    (entities, skipped)
}
