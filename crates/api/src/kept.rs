//! `projectcalico.org/v3` kinds Sluice stores and lists but does not act on, so that real Calico
//! manifests (which carry BGP peers, host endpoints, controller settings, …) apply as they are.
//! Each is kept whole and given a warning that says what is not enforced.
//!
//! FelixConfiguration is typed here too: the DNS fields domain-name policy reads are typed and
//! validated (`dns_configuration`), and so are the egress gateway fields (`egress`); every other
//! field is kept as written and named in a warning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dns_configuration::{CacheFile, GoDuration, TrustedServer};
use crate::egress::EgressIpSupport;
use crate::load::Kind;
use crate::meta::ObjectMeta;

/// A Calico object of a kind Sluice does not enforce: its metadata and every other field as
/// written (`spec`, `status`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeptResource {
    #[serde(skip)]
    pub kind: Kind,
    pub metadata: ObjectMeta,
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
}

/// The body of a kept object as read, before it knows its kind.
#[derive(Debug, Deserialize)]
pub(crate) struct KeptBody {
    pub metadata: ObjectMeta,
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
}

/// Felix's configuration: `default` for every node, `node.<name>` for one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FelixConfiguration {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: FelixConfigurationSpec,
}

/// The fields Sluice reads, typed; every other field kept as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FelixConfigurationSpec {
    #[serde(
        default,
        rename = "dnsTrustedServers",
        skip_serializing_if = "Option::is_none"
    )]
    pub dns_trusted_servers: Option<Vec<TrustedServer>>,
    #[serde(default, rename = "dnsCacheFile", skip_serializing_if = "Option::is_none")]
    pub dns_cache_file: Option<CacheFile>,
    #[serde(
        default,
        rename = "dnsCacheSaveInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub dns_cache_save_interval: Option<GoDuration>,
    #[serde(default, rename = "dnsCacheEpoch", skip_serializing_if = "Option::is_none")]
    pub dns_cache_epoch: Option<i64>,
    #[serde(default, rename = "dnsExtraTTL", skip_serializing_if = "Option::is_none")]
    pub dns_extra_ttl: Option<GoDuration>,
    #[serde(default, rename = "egressIPSupport", skip_serializing_if = "Option::is_none")]
    pub egress_ip_support: Option<EgressIpSupport>,
    #[serde(
        default,
        rename = "egressIPRoutingRulePriority",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_ip_routing_rule_priority: Option<u32>,
    #[serde(
        default,
        rename = "egressIPVXLANPort",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_ip_vxlan_port: Option<u16>,
    #[serde(default, rename = "egressIPVXLANVNI", skip_serializing_if = "Option::is_none")]
    pub egress_ip_vxlan_vni: Option<u32>,
    #[serde(
        default,
        rename = "egressGatewayPollInterval",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_gateway_poll_interval: Option<GoDuration>,
    #[serde(
        default,
        rename = "egressGatewayPollFailureCount",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_gateway_poll_failure_count: Option<u32>,
    /// Every other field, kept as written and not used.
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
}

impl FelixConfiguration {
    /// The node this configuration is for, or `None` for the cluster-wide `default`.
    pub fn node(&self) -> Option<&str> {
        self.metadata.name.strip_prefix("node.")
    }

    /// Warnings about this object: a name Felix would never read, and fields Sluice keeps but
    /// does not use.
    pub fn warnings(&self) -> Vec<(String, String)> {
        let mut warnings = Vec::new();
        let name = &self.metadata.name;
        if name != "default" && self.node().is_none_or(str::is_empty) {
            warnings.push((
                "metadata.name".to_string(),
                format!(
                    "FelixConfiguration `{name}` applies to nothing: Calico and Sluice read `default` (every node) and `node.<node name>` (one node)"
                ),
            ));
        }
        if let Some(servers) = &self.spec.dns_trusted_servers
            && let Some(index) = servers.iter().position(|server| server.address().is_none())
        {
            warnings.push((
                format!("spec.dnsTrustedServers[{index}]"),
                format!(
                    "`{}` names a Kubernetes Service, which Sluice resolves only with a Kubernetes API backend (not built yet): it trusts no server; list the DNS server's address instead",
                    servers[index]
                ),
            ));
        }
        if !self.spec.fields.is_empty() {
            let fields: Vec<&str> = self.spec.fields.keys().map(String::as_str).collect();
            warnings.push((
                format!("spec.{}#key", fields[0]),
                format!(
                    "FelixConfiguration `{name}`: Sluice keeps but does not use {}",
                    fields
                        .iter()
                        .map(|field| format!("`{field}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        warnings
    }
}

/// Why Sluice does not act on a kept kind, for the warning `apply` and `validate` print.
pub fn not_enforced_reason(kind: Kind) -> &'static str {
    match kind {
        Kind::BgpConfiguration | Kind::BgpFilter | Kind::BgpPeer | Kind::CalicoNodeStatus => {
            "Sluice speaks no BGP: the agent routes pod blocks itself, or leaves routing to your BGP daemon with --no-routes"
        }
        Kind::BlockAffinity => "Sluice keeps IPAM block affinities in its own records",
        Kind::ClusterInformation => "it is Calico's cluster metadata",
        Kind::HostEndpoint => "host endpoint policy is not built: a HostEndpoint protects nothing",
        Kind::IpamConfiguration => {
            "strictAffinity and maxBlocksPerHost are not built: IPAM behaves as with the defaults"
        }
        Kind::IpReservation => {
            "IPAM does not skip reserved addresses yet: pods may be given addresses in this reservation"
        }
        Kind::KubeControllersConfiguration => "Sluice runs no kube-controllers",
        Kind::Profile => {
            "namespace and service account profiles come from Namespaces and ServiceAccounts; stored Profiles are not applied"
        }
        _ => "",
    }
}
