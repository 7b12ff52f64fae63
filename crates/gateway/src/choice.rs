//! Which egress configuration a client follows, as Calico's ActiveEgressCalculator decides
//! it: a policy named by the pod, else one named by its namespace; a policy named but absent
//! drops the client's egress; else the pod's selector, else its namespace's. A pod's
//! annotations count only with `egressIPSupport: EnabledPerNamespaceOrPerPod`, a namespace's
//! only when support is enabled at all.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use sluice_api::egress::{EgressAnnotations, EgressGatewayPolicy, EgressIpSupport, GatewayPreference};
use sluice_selector::Selector;

/// Calico's label for a pod's namespace, and the prefix its namespace's labels get.
const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
const NAMESPACE_LABEL_PREFIX: &str = "pcns.";

/// Whose annotation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Pod,
    Namespace,
}

/// What a client's egress follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// No egress gateway: the normal way.
    None,
    /// Annotations: every destination through the gateways the selector picks.
    Selector {
        scope: Scope,
        selector: Selector,
        max_next_hops: u32,
    },
    /// An EgressGatewayPolicy that exists.
    Policy { scope: Scope, name: String },
    /// A policy named but not defined: all egress dropped, as in Calico.
    MissingPolicy { scope: Scope, name: String },
}

impl Choice {
    /// The EgressGatewayPolicy it names, existing or not.
    pub fn policy(&self) -> Option<&str> {
        match self {
            Choice::Policy { name, .. } | Choice::MissingPolicy { name, .. } => Some(name),
            Choice::None | Choice::Selector { .. } => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Scope::Pod => "pod",
            Scope::Namespace => "namespace",
        })
    }
}

/// What `sluice get egress` says chose a client's gateways.
impl fmt::Display for Choice {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::None => formatter.write_str("none"),
            Choice::Selector { scope, .. } => write!(formatter, "{scope} annotations"),
            Choice::Policy { scope, name } => write!(formatter, "policy {name} ({scope} annotation)"),
            Choice::MissingPolicy { scope, name } => {
                write!(
                    formatter,
                    "policy {name} ({scope} annotation; no such policy: all egress dropped)"
                )
            }
        }
    }
}

/// The client's choice and why annotations were ignored, if they were.
pub fn choose(
    client_namespace: &str,
    pod: &EgressAnnotations,
    namespace: &EgressAnnotations,
    support: EgressIpSupport,
    policies: &BTreeMap<String, EgressGatewayPolicy>,
) -> (Choice, Vec<String>) {
    let mut warnings = Vec::new();
    let empty = EgressAnnotations::default();
    let (pod, namespace) = match support {
        EgressIpSupport::Disabled => {
            if !pod.is_empty() || !namespace.is_empty() {
                warnings
                    .push("egress annotations ignored: egressIPSupport is Disabled on its node".to_string());
            }
            return (Choice::None, warnings);
        }
        EgressIpSupport::EnabledPerNamespace => {
            if !pod.is_empty() {
                warnings.push(
                    "the pod's egress annotations ignored: egressIPSupport is EnabledPerNamespace on its node (EnabledPerNamespaceOrPerPod honours them)".to_string(),
                );
            }
            (&empty, namespace)
        }
        EgressIpSupport::EnabledPerNamespaceOrPerPod => (pod, namespace),
    };
    let layers = [(Scope::Pod, pod), (Scope::Namespace, namespace)];
    for (scope, annotations) in layers {
        if let Some(name) = &annotations.policy
            && policies.contains_key(name)
        {
            return (
                Choice::Policy {
                    scope,
                    name: name.clone(),
                },
                warnings,
            );
        }
    }
    for (scope, annotations) in layers {
        if let Some(name) = &annotations.policy {
            return (
                Choice::MissingPolicy {
                    scope,
                    name: name.clone(),
                },
                warnings,
            );
        }
    }
    for (scope, annotations) in layers {
        if let Some(selector) = &annotations.selector {
            return (
                Choice::Selector {
                    scope,
                    selector: gateway_selector(
                        selector,
                        annotations.namespace_selector.as_ref(),
                        client_namespace,
                    ),
                    max_next_hops: annotations.max_next_hops.unwrap_or(0),
                },
                warnings,
            );
        }
    }
    (Choice::None, warnings)
}

/// Gateway pods' selector and namespace selector as one selector over pod labels, as Calico
/// combines them: the namespace selector over `pcns.`-prefixed labels; none means the
/// client's own namespace.
pub fn gateway_selector(
    selector: &Selector,
    namespace_selector: Option<&Selector>,
    client_namespace: &str,
) -> Selector {
    let namespaces = match namespace_selector {
        Some(namespace_selector) => namespace_selector.with_label_prefix(NAMESPACE_LABEL_PREFIX),
        None => Selector::equal(NAMESPACE_LABEL, client_namespace),
    };
    selector.and(&namespaces)
}

/// How one destination is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// The node's normal routing.
    Normal,
    Gateways {
        selector: Selector,
        max_next_hops: u32,
        prefer_node_local: bool,
    },
    /// Dropped (a missing policy).
    Drop,
}

/// One destination of a client's choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveRule {
    pub destination: IpNet,
    /// The index of the policy rule it comes from, if a policy chose.
    pub policy_rule: Option<usize>,
    pub action: RuleAction,
}

impl Choice {
    /// The client's destinations. Annotations route IPv4's default route through gateways
    /// (Calico's egress gateways are IPv4); a missing policy drops the default route of every
    /// family the client has.
    pub fn rules(
        &self,
        client_namespace: &str,
        client_addresses: &[IpAddr],
        policies: &BTreeMap<String, EgressGatewayPolicy>,
    ) -> Vec<EffectiveRule> {
        let ipv4_default: IpNet = "0.0.0.0/0".parse().expect("a network");
        match self {
            Choice::None => Vec::new(),
            Choice::Selector {
                selector,
                max_next_hops,
                ..
            } => vec![EffectiveRule {
                destination: ipv4_default,
                policy_rule: None,
                action: RuleAction::Gateways {
                    selector: selector.clone(),
                    max_next_hops: *max_next_hops,
                    prefer_node_local: false,
                },
            }],
            Choice::MissingPolicy { .. } => {
                let mut families: Vec<IpNet> = Vec::new();
                if client_addresses.iter().any(IpAddr::is_ipv4) {
                    families.push(ipv4_default);
                }
                if client_addresses.iter().any(IpAddr::is_ipv6) {
                    families.push("::/0".parse().expect("a network"));
                }
                families
                    .into_iter()
                    .map(|destination| EffectiveRule {
                        destination,
                        policy_rule: None,
                        action: RuleAction::Drop,
                    })
                    .collect()
            }
            Choice::Policy { name, .. } => {
                let Some(policy) = policies.get(name) else {
                    return Vec::new();
                };
                policy
                    .spec
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(index, rule)| EffectiveRule {
                        destination: rule.destination_cidr().0,
                        policy_rule: Some(index),
                        action: match &rule.gateway {
                            None => RuleAction::Normal,
                            Some(gateway) => RuleAction::Gateways {
                                selector: gateway_selector(
                                    &gateway.selector.selector(),
                                    gateway.namespace_selector.0.as_ref(),
                                    client_namespace,
                                ),
                                max_next_hops: gateway.max_next_hops,
                                prefer_node_local: rule.preference() == GatewayPreference::PreferNodeLocal,
                            },
                        },
                    })
                    .collect()
            }
        }
    }
}
