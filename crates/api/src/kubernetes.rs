//! Kubernetes kinds: v1 Namespace, Pod and ServiceAccount (the parts that policy needs) and
//! `networking.k8s.io/v1` NetworkPolicy (all of it).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sluice_selector::{LabelSelectorOperator, LabelSelectorRequirement, Selector};

use crate::meta::ObjectMeta;
use crate::values::{Cidr, PolicyType, Port, Protocol};

/// A v1 Namespace. Only metadata matters to policy; `spec` and `status` are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

impl Namespace {
    /// The namespace's labels as the API server presents them, including the immutable
    /// `kubernetes.io/metadata.name` label it adds to every namespace.
    pub fn effective_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.metadata.labels.clone();
        labels.insert(
            "kubernetes.io/metadata.name".to_string(),
            self.metadata.name.clone(),
        );
        labels
    }
}

/// A v1 ServiceAccount: its labels are matched by `serviceAccounts.selector`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    pub metadata: ObjectMeta,
}

/// A v1 Pod: the fields that make it a workload endpoint. Other pod fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<IpAddr>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodIp {
    pub ip: IpAddr,
}

impl Pod {
    /// The pod's addresses: `podIPs` when present, else `podIP` (as Calico's converter reads them).
    pub fn addresses(&self) -> Vec<IpAddr> {
        if !self.status.pod_ips.is_empty() {
            return self.status.pod_ips.iter().map(|entry| entry.ip).collect();
        }
        self.status.pod_ip.into_iter().collect()
    }

    pub fn service_account(&self) -> &str {
        self.spec.service_account_name.as_deref().unwrap_or("default")
    }

    /// Whether the pod is a workload endpoint at all: host-networked pods are the host's, and
    /// finished pods hold no address (Calico's `IsValidCalicoWorkloadEndpoint`, `IsFinished`).
    pub fn is_workload(&self) -> bool {
        !self.spec.host_network
            && !matches!(
                self.status.phase.as_deref(),
                Some("Succeeded" | "Failed" | "Completed")
            )
    }

    /// Named container ports: (name, protocol, number).
    pub fn named_ports(&self) -> impl Iterator<Item = (&str, Protocol, u16)> {
        self.spec
            .containers
            .iter()
            .chain(&self.spec.init_containers)
            .flat_map(|container| &container.ports)
            .filter_map(|port| {
                let name = port.name.as_deref()?;
                Some((name, port.protocol.unwrap_or(Protocol::Tcp), port.container_port))
            })
    }
}

/// `networking.k8s.io/v1` NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesNetworkPolicy {
    pub metadata: ObjectMeta,
    pub spec: KubernetesNetworkPolicySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesNetworkPolicySpec {
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<KubernetesIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<KubernetesEgressRule>,
}

impl KubernetesNetworkPolicySpec {
    /// `policyTypes` with the API server's defaulting: Ingress always, Egress when there are
    /// egress rules.
    pub fn effective_policy_types(&self) -> Vec<PolicyType> {
        match &self.policy_types {
            Some(types) if !types.is_empty() => {
                let mut types = types.clone();
                types.sort();
                types.dedup();
                types
            }
            _ if self.egress.is_empty() => vec![PolicyType::Ingress],
            _ => vec![PolicyType::Ingress, PolicyType::Egress],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesIngressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesEgressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<NetworkPolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    pub cidr: Cidr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

/// metav1.LabelSelector.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorExpression>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorExpression {
    pub key: String,
    pub operator: KubernetesOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KubernetesOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Lowers to a Calico selector (the same AST every other selector uses).
    pub fn to_selector(&self) -> Result<Selector, String> {
        let requirements: Vec<LabelSelectorRequirement> = self
            .match_expressions
            .iter()
            .map(|expression| LabelSelectorRequirement {
                key: expression.key.clone(),
                operator: match expression.operator {
                    KubernetesOperator::In => LabelSelectorOperator::In,
                    KubernetesOperator::NotIn => LabelSelectorOperator::NotIn,
                    KubernetesOperator::Exists => LabelSelectorOperator::Exists,
                    KubernetesOperator::DoesNotExist => LabelSelectorOperator::DoesNotExist,
                },
                values: expression.values.clone(),
            })
            .collect();
        Selector::from_label_selector(&self.match_labels, &requirements).map_err(|error| error.to_string())
    }
}

/// A v1 Node: its labels pick IP pools (`nodeSelector`); other fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default)]
    pub status: NodeStatus,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    #[serde(default, rename = "podCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub pod_cidrs: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub address_type: String,
    pub address: String,
}
