//! Egress gateways as Calico Enterprise writes them: the `EgressGatewayPolicy` kind, the
//! `egress.projectcalico.org/*` annotations on Namespaces and Pods that pick gateways, and the
//! FelixConfiguration fields that switch the feature on and tune it (`egress_configuration`:
//! `node.<name>` over `default` over Sluice's defaults).
//!
//! What the annotations and policies mean (precedence, defaults, which gateways a client gets)
//! is `sluice-gateway`'s job; this module only types and checks them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dns_configuration::GoDuration;
use crate::kept::{FelixConfiguration, FelixConfigurationSpec};
use crate::meta::ObjectMeta;
use crate::values::{Cidr, SelectorText};

/// A Calico selector over gateway pods' labels.
pub const SELECTOR_ANNOTATION: &str = "egress.projectcalico.org/selector";
/// A Calico selector over namespaces' labels; without it, the client's own namespace.
pub const NAMESPACE_SELECTOR_ANNOTATION: &str = "egress.projectcalico.org/namespaceSelector";
/// The name of an EgressGatewayPolicy; it wins over the selector annotations.
pub const POLICY_ANNOTATION: &str = "egress.projectcalico.org/egressGatewayPolicy";
/// At most this many gateways per client (0 or absent: all of them).
pub const MAX_NEXT_HOPS_ANNOTATION: &str = "egress.projectcalico.org/maxNextHops";

/// A cluster-scoped EgressGatewayPolicy: per destination CIDR, which gateways (or none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressGatewayPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: EgressGatewayPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressGatewayPolicySpec {
    #[serde(default)]
    pub rules: Vec<EgressGatewayRule>,
}

/// One destination and how to reach it: through gateways, or the normal way when `gateway` is
/// absent. Rules are matched by longest prefix, not in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressGatewayRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<EgressDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<EgressGatewaySelection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_preference: Option<GatewayPreference>,
}

impl EgressGatewayRule {
    /// The destination, `0.0.0.0/0` when absent (Calico's default).
    pub fn destination_cidr(&self) -> Cidr {
        self.destination
            .as_ref()
            .and_then(|destination| destination.cidr)
            .unwrap_or_else(default_destination)
    }

    pub fn preference(&self) -> GatewayPreference {
        self.gateway_preference.unwrap_or_default()
    }
}

/// The destination of a rule that names none.
pub fn default_destination() -> Cidr {
    Cidr("0.0.0.0/0".parse().expect("a network"))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
}

/// Which gateways: pods that `selector` picks in namespaces that `namespaceSelector` picks
/// (the client's own namespace when it is empty), at most `maxNextHops` of them (0: all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressGatewaySelection {
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub namespace_selector: SelectorText,
    #[serde(default, skip_serializing_if = "SelectorText::is_unset")]
    pub selector: SelectorText,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_next_hops: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Calico Enterprise's `gatewayPreference`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GatewayPreference {
    /// Every selected gateway.
    #[default]
    None,
    /// The selected gateways on the client's node if any is usable, else every selected one.
    PreferNodeLocal,
}

/// A Namespace's or Pod's egress annotations, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressAnnotations {
    pub selector: Option<sluice_selector::Selector>,
    pub namespace_selector: Option<sluice_selector::Selector>,
    pub policy: Option<String>,
    pub max_next_hops: Option<u32>,
}

impl EgressAnnotations {
    /// Reads the annotations of an object; each bad value is an error naming its annotation's
    /// field path. Empty values count as absent, as Calico reads them.
    pub fn read(metadata: &ObjectMeta) -> Result<EgressAnnotations, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut annotations = EgressAnnotations::default();
        let value = |key: &str| {
            metadata
                .annotations
                .get(key)
                .map(|value| value.trim())
                .filter(|value| !value.is_empty())
        };
        let field = |key: &str| format!("metadata.annotations.{key}");
        for (key, target) in [
            (SELECTOR_ANNOTATION, &mut annotations.selector),
            (NAMESPACE_SELECTOR_ANNOTATION, &mut annotations.namespace_selector),
        ] {
            if let Some(text) = value(key) {
                match sluice_selector::Selector::parse(text) {
                    Ok(selector) if selector.uses_global() => errors.push((
                        field(key),
                        "global() can only be used in a rule's namespaceSelector".to_string(),
                    )),
                    Ok(selector) => *target = Some(selector),
                    Err(error) => errors.push((
                        field(key),
                        format!("invalid selector: {error}\n{}", error.render(text)),
                    )),
                }
            }
        }
        if let Some(name) = value(POLICY_ANNOTATION) {
            match crate::meta::validate_subdomain_name(name) {
                Ok(()) => annotations.policy = Some(name.to_string()),
                Err(message) => errors.push((
                    field(POLICY_ANNOTATION),
                    format!("`{name}` cannot name an EgressGatewayPolicy: {message}"),
                )),
            }
        }
        if let Some(text) = value(MAX_NEXT_HOPS_ANNOTATION) {
            match text.parse::<u32>() {
                Ok(number) => annotations.max_next_hops = Some(number),
                Err(_) => errors.push((
                    field(MAX_NEXT_HOPS_ANNOTATION),
                    format!(
                        "`{text}` is not a number of gateways; write a whole number such as \"2\" (0 means every selected gateway)"
                    ),
                )),
            }
        }
        if errors.is_empty() {
            Ok(annotations)
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == EgressAnnotations::default()
    }

    /// What is allowed but has no effect, for a warning: gateway-choosing annotations beside a
    /// policy (the policy wins, as in Calico) and a namespace selector or maximum without a
    /// selector.
    pub fn unused(&self) -> Vec<(String, String)> {
        let field = |key: &str| format!("metadata.annotations.{key}");
        let mut unused = Vec::new();
        if let Some(policy) = &self.policy {
            for (set, key) in [
                (self.selector.is_some(), SELECTOR_ANNOTATION),
                (self.namespace_selector.is_some(), NAMESPACE_SELECTOR_ANNOTATION),
                (self.max_next_hops.is_some(), MAX_NEXT_HOPS_ANNOTATION),
            ] {
                if set {
                    unused.push((
                        field(key),
                        format!(
                            "`{key}` has no effect: `{POLICY_ANNOTATION}: {policy}` chooses the gateways (the policy wins, as in Calico)"
                        ),
                    ));
                }
            }
        } else if self.selector.is_none() {
            for (set, key) in [
                (self.namespace_selector.is_some(), NAMESPACE_SELECTOR_ANNOTATION),
                (self.max_next_hops.is_some(), MAX_NEXT_HOPS_ANNOTATION),
            ] {
                if set {
                    unused.push((
                        field(key),
                        format!("`{key}` has no effect without `{SELECTOR_ANNOTATION}`"),
                    ));
                }
            }
        }
        unused
    }
}

/// Felix's `egressIPSupport`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EgressIpSupport {
    /// Egress annotations are ignored.
    #[default]
    Disabled,
    /// Namespace annotations are honoured; pod annotations are ignored.
    EnabledPerNamespace,
    /// Namespace and pod annotations; a pod's win.
    EnabledPerNamespaceOrPerPod,
}

/// Calico's default routing rule priority for egress clients.
pub const DEFAULT_RULE_PRIORITY: u32 = 100;
/// Calico's VXLAN port and VNI for traffic to gateways on other nodes.
pub const DEFAULT_VXLAN_PORT: u16 = 4790;
pub const DEFAULT_VXLAN_VNI: u32 = 4097;
/// Sluice's defaults for gateway health polling: a gateway that stops answering is dropped
/// after 3 failed polls 100 ms apart, so in about 300 ms plus the time to reprogram, inside the
/// one-second failover target. (Calico polls every 10 s with 3 failures: 30 s.)
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_POLL_FAILURE_COUNT: u32 = 3;
/// Rule priorities the kernel's own rules hold: 0 (local), 32766 (main), 32767 (default).
pub const RULE_PRIORITY_RANGE: std::ops::RangeInclusive<u32> = 1..=32765;
/// A VXLAN network identifier is 24 bits; 0 is reserved by convention.
pub const VXLAN_VNI_RANGE: std::ops::RangeInclusive<u32> = 1..=16_777_215;

/// Range errors in a FelixConfiguration's egress fields, by field path.
pub fn felix_errors(spec: &FelixConfigurationSpec) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if let Some(priority) = spec.egress_ip_routing_rule_priority
        && !RULE_PRIORITY_RANGE.contains(&priority)
    {
        errors.push((
            "spec.egressIPRoutingRulePriority".to_string(),
            format!(
                "{priority} is not a usable rule priority; use 1 to 32765 (0, 32766 and 32767 hold the kernel's local, main and default rules)"
            ),
        ));
    }
    if spec.egress_ip_vxlan_port == Some(0) {
        errors.push((
            "spec.egressIPVXLANPort".to_string(),
            "port 0 is not a UDP port; use 1 to 65535".to_string(),
        ));
    }
    if let Some(vni) = spec.egress_ip_vxlan_vni
        && !VXLAN_VNI_RANGE.contains(&vni)
    {
        errors.push((
            "spec.egressIPVXLANVNI".to_string(),
            format!("{vni} is not a VXLAN network identifier; use 1 to 16777215"),
        ));
    }
    if let Some(interval) = &spec.egress_gateway_poll_interval
        && interval.duration().is_zero()
    {
        errors.push((
            "spec.egressGatewayPollInterval".to_string(),
            "gateways must be polled: the interval must be more than 0".to_string(),
        ));
    }
    if spec.egress_gateway_poll_failure_count == Some(0) {
        errors.push((
            "spec.egressGatewayPollFailureCount".to_string(),
            "at least 1 failed poll must mark a gateway failed".to_string(),
        ));
    }
    errors
}

/// What one node uses for egress gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressConfiguration {
    pub support: EgressIpSupport,
    pub routing_rule_priority: u32,
    pub vxlan_port: u16,
    pub vxlan_vni: u32,
    pub poll_interval: Duration,
    pub poll_failure_count: u32,
}

impl Default for EgressConfiguration {
    fn default() -> Self {
        EgressConfiguration {
            support: EgressIpSupport::Disabled,
            routing_rule_priority: DEFAULT_RULE_PRIORITY,
            vxlan_port: DEFAULT_VXLAN_PORT,
            vxlan_vni: DEFAULT_VXLAN_VNI,
            poll_interval: DEFAULT_POLL_INTERVAL,
            poll_failure_count: DEFAULT_POLL_FAILURE_COUNT,
        }
    }
}

/// The egress configuration for `node`: each field from `node.<node>` if it sets it, else
/// from `default`, else Sluice's default.
pub fn egress_configuration(configurations: &[FelixConfiguration], node: &str) -> EgressConfiguration {
    let own = configurations
        .iter()
        .find(|configuration| configuration.node() == Some(node));
    let cluster = configurations
        .iter()
        .find(|configuration| configuration.metadata.name == "default");
    let layers: Vec<&FelixConfigurationSpec> = [own, cluster]
        .into_iter()
        .flatten()
        .map(|configuration| &configuration.spec)
        .collect();
    fn first<T>(
        layers: &[&FelixConfigurationSpec],
        pick: impl Fn(&FelixConfigurationSpec) -> Option<T>,
    ) -> Option<T> {
        layers.iter().find_map(|fields| pick(fields))
    }
    let defaults = EgressConfiguration::default();
    EgressConfiguration {
        support: first(&layers, |fields| fields.egress_ip_support).unwrap_or(defaults.support),
        routing_rule_priority: first(&layers, |fields| fields.egress_ip_routing_rule_priority)
            .unwrap_or(defaults.routing_rule_priority),
        vxlan_port: first(&layers, |fields| fields.egress_ip_vxlan_port).unwrap_or(defaults.vxlan_port),
        vxlan_vni: first(&layers, |fields| fields.egress_ip_vxlan_vni).unwrap_or(defaults.vxlan_vni),
        poll_interval: first(&layers, |fields| {
            fields
                .egress_gateway_poll_interval
                .as_ref()
                .map(GoDuration::duration)
        })
        .unwrap_or(defaults.poll_interval),
        poll_failure_count: first(&layers, |fields| fields.egress_gateway_poll_failure_count)
            .unwrap_or(defaults.poll_failure_count),
    }
}

/// Checks an EgressGatewayPolicy: at least one rule, every gateway with a selector, no
/// destination twice (rules are matched by longest prefix, so two rules for one destination
/// would leave the choice to order). Host bits in a destination are checked on the text, in
/// `load`, since the parsed CIDR is masked.
pub fn policy_errors(policy: &EgressGatewayPolicy) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let rules = &policy.spec.rules;
    if rules.is_empty() {
        errors.push((
            "spec.rules".to_string(),
            "an EgressGatewayPolicy needs at least one rule".to_string(),
        ));
    }
    let mut seen: BTreeMap<Cidr, usize> = BTreeMap::new();
    for (index, rule) in rules.iter().enumerate() {
        let path = format!("spec.rules[{index}]");
        let destination = rule.destination_cidr();
        if let Some(first) = seen.insert(destination, index) {
            let field = if rule.destination.as_ref().and_then(|d| d.cidr).is_some() {
                format!("{path}.destination.cidr")
            } else {
                path.clone()
            };
            errors.push((
                field,
                format!(
                    "destination {destination} is already the destination of spec.rules[{first}]; each destination may appear in one rule only (rules are matched by longest prefix)"
                ),
            ));
            seen.insert(destination, first);
        }
        if let Some(gateway) = &rule.gateway
            && !gateway.selector.is_set()
        {
            errors.push((
                format!("{path}.gateway.selector"),
                "a gateway needs a selector naming the gateway pods' labels (for example `egress-code == 'red'`); leave `gateway` out to send this destination the normal way".to_string(),
            ));
        }
        if let Some(gateway) = &rule.gateway {
            for (selector, field) in [
                (&gateway.selector, "selector"),
                (&gateway.namespace_selector, "namespaceSelector"),
            ] {
                if selector.0.as_ref().is_some_and(|selector| selector.uses_global()) {
                    errors.push((
                        format!("{path}.gateway.{field}"),
                        "global() can only be used in a rule's namespaceSelector".to_string(),
                    ));
                }
            }
        }
    }
    errors
}
