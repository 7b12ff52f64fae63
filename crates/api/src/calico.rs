//! `projectcalico.org/v3` kinds: NetworkPolicy, GlobalNetworkPolicy, Tier, NetworkSet,
//! GlobalNetworkSet and IPPool, with Calico's defaults.

use serde::{Deserialize, Serialize};

use crate::domain::DomainPattern;
use crate::meta::ObjectMeta;
use crate::values::{Action, Cidr, PolicyType, Port, Protocol, SelectorText};

/// The tier every policy without `spec.tier` belongs to, and Kubernetes policies too.
pub const DEFAULT_TIER: &str = "default";
/// The order Calico gives the default tier (`api/pkg/apis/projectcalico/v3/tier.go`).
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
/// The order Calico gives converted Kubernetes NetworkPolicies
/// (`libcalico-go/lib/backend/k8s/conversion/conversion.go`).
pub const KUBERNETES_POLICY_ORDER: f64 = 1000.0;

/// Calico's CRD limits (`api/pkg/apis/projectcalico/v3/policy_common.go`, `networkpolicy.go`).
pub const MAX_RULES: usize = 1024;
pub const MAX_NETS: usize = 256;
pub const MAX_PORTS: usize = 50;
pub const MAX_HTTP_ITEMS: usize = 20;
pub const MAX_SELECTOR_LENGTH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    pub metadata: ObjectMeta,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicy {
    pub metadata: ObjectMeta,
    pub spec: PolicySpec,
}

/// The spec shared by NetworkPolicy and GlobalNetworkPolicy. `namespaceSelector`,
/// `doNotTrack`, `preDNAT` and `applyOnForward` are GlobalNetworkPolicy-only; the loader
/// rejects them on a NetworkPolicy as Calico does.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub selector: SelectorText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub service_account_selector: SelectorText,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub namespace_selector: SelectorText,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_track: bool,
    #[serde(default, rename = "preDNAT", skip_serializing_if = "std::ops::Not::not")]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply_on_forward: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

impl PolicySpec {
    pub fn tier(&self) -> &str {
        self.tier
            .as_deref()
            .filter(|tier| !tier.is_empty())
            .unwrap_or(DEFAULT_TIER)
    }

    /// `types` with Calico's defaulting (libcalico-go `lib/apis/v3` defaults): Egress alone
    /// when only egress rules exist, both when both exist, Ingress otherwise.
    pub fn effective_types(&self) -> Vec<PolicyType> {
        if let Some(types) = self.types.as_ref().filter(|types| !types.is_empty()) {
            let mut types = types.clone();
            types.sort();
            types.dedup();
            return types;
        }
        match (self.ingress.is_empty(), self.egress.is_empty()) {
            (true, false) => vec![PolicyType::Egress],
            (false, false) => vec![PolicyType::Ingress, PolicyType::Egress],
            _ => vec![PolicyType::Ingress],
        }
    }
}

impl SelectorText {
    pub(crate) fn is_unset(&self) -> bool {
        !self.is_set()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, rename = "icmp", skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    #[serde(default)]
    pub source: EntityRule,
    #[serde(default)]
    pub destination: EntityRule,
    /// Boxed, as the rarely set matches below: a policy holds many rules, and an unset box is
    /// one pointer (loading a 50 MB manifest, issue 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Box<HttpMatch>>,
    /// Sluice's addition: the TLS server name (SNI) of an egress connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<TlsMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RuleMetadata>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpFields {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub selector: SelectorText,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub not_selector: SelectorText,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub namespace_selector: SelectorText,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<Box<ServiceAccountMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Box<ServiceMatch>>,
    /// Calico Enterprise's domain names: only in the destination of an egress Allow rule whose
    /// destination has no `nets` and no `selector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainPattern>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub selector: SelectorText,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<HttpPath>,
    /// Sluice's addition: the request's `Host` (exact names or `*.` wildcards), OR'd, AND'd
    /// with methods and paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<DomainPattern>,
}

/// Sluice's addition: what the TLS ClientHello of an egress connection must name. Both
/// conditions, when given, must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatch {
    /// Exact names or `*.` wildcards, OR'd.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<DomainPattern>,
    /// The server name must match one of the rule's `destination.domains`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_domains: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPath {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMetadata {
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tier {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TierSpec,
}

impl Tier {
    /// The order Calico uses: fixed for the default tier; `None` (after every ordered tier)
    /// when absent.
    pub fn effective_order(&self) -> Option<f64> {
        if self.metadata.name == DEFAULT_TIER {
            Some(DEFAULT_TIER_ORDER)
        } else {
            self.spec.order
        }
    }

    /// What happens when a policy in the tier selects an endpoint but none decides: Deny
    /// unless the tier says Pass.
    pub fn effective_default_action(&self) -> Action {
        self.spec.default_action.unwrap_or(Action::Deny)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
}

/// A namespaced set of networks, selectable by its labels from rules in its namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSet {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NetworkSetSpec,
}

/// A cluster-wide set of networks, selectable by GlobalNetworkPolicy rules and by
/// `namespaceSelector: global()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkSet {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NetworkSetSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSetSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<Cidr>,
    /// Calico Enterprise's domain names, allowed to egress Allow rules whose
    /// `destination.selector` picks the set; no effect in any other rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_egress_domains: Vec<DomainPattern>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPool {
    pub metadata: ObjectMeta,
    pub spec: IpPoolSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    pub cidr: Cidr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default, rename = "ipipMode", skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapsulationMode>,
    #[serde(default, rename = "vxlanMode", skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapsulationMode>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_outgoing: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(
        default,
        rename = "disableBGPExport",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_bgp_export: bool,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub node_selector: SelectorText,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub namespace_selector: SelectorText,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

/// Sluice's addition to IPPool, as an annotation so that the manifest stays valid for Calico:
/// the address that traffic from the pool is source-NATed to when it leaves the cluster,
/// instead of the node's own address (Calico has only masquerade; projectcalico/calico#5895).
pub const NAT_OUTGOING_ADDRESS_ANNOTATION: &str = "sluice.io/nat-outgoing-address";

impl IpPool {
    /// The source address for NAT outgoing, if the pool names one.
    pub fn nat_outgoing_address(&self) -> Option<std::net::IpAddr> {
        self.metadata
            .annotations
            .get(NAT_OUTGOING_ADDRESS_ANNOTATION)?
            .parse()
            .ok()
    }
}

impl IpPoolSpec {
    /// Calico's default block size: /26 for IPv4, /122 for IPv6.
    pub fn effective_block_size(&self) -> u8 {
        self.block_size.unwrap_or(match self.cidr.0 {
            ipnet::IpNet::V4(_) => 26,
            ipnet::IpNet::V6(_) => 122,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncapsulationMode {
    Never,
    Always,
    CrossSubnet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentMode {
    Automatic,
    Manual,
}

/// A pod's network attachment as the CNI plugin records it (Calico's WorkloadEndpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpoint {
    pub metadata: ObjectMeta,
    pub spec: WorkloadEndpointSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    #[serde(default)]
    pub orchestrator: String,
    #[serde(default)]
    pub node: String,
    #[serde(default, rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub pod: String,
    /// The interface inside the pod (CNI_IFNAME), e.g. `eth0`.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub ip_networks: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// The host side of the veth pair.
    #[serde(default)]
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<WorkloadEndpointPort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}
