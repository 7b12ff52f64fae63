//! Calico's staged policies (`projectcalico.org/v3`): StagedNetworkPolicy,
//! StagedGlobalNetworkPolicy and StagedKubernetesNetworkPolicy. Each carries the spec of the
//! policy it stages plus `stagedAction`: `Set` (the default) proposes that policy as written,
//! `Delete` proposes removing the policy of the same name. They are never enforced; what they
//! would do is `sluice-policy`'s to say.
//!
//! As in Calico (`api/pkg/apis/projectcalico/v3/staged*.go`, `ConvertStaged*ToEnforced`), the
//! conversion to the enforced kind copies metadata and spec and drops the resource version.

use serde::{Deserialize, Serialize};

use crate::calico::{GlobalNetworkPolicy, NetworkPolicy, PolicySpec, Rule};
use crate::kubernetes::{
    KubernetesEgressRule, KubernetesIngressRule, KubernetesNetworkPolicy, KubernetesNetworkPolicySpec,
    LabelSelector,
};
use crate::meta::ObjectMeta;
use crate::values::{PolicyType, SelectorText};

/// What a staged policy proposes. Calico's enum also has `Learn` and `Ignore`, the states of
/// Calico Enterprise's policy recommendations; they are read so that validation can name them,
/// and refused there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StagedAction {
    /// Add the policy, or replace the one of the same name.
    #[default]
    Set,
    /// Remove the policy of the same name.
    Delete,
    Learn,
    Ignore,
}

impl std::fmt::Display for StagedAction {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, formatter)
    }
}

/// A staged (Calico) NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedNetworkPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: StagedPolicySpec,
}

/// A staged GlobalNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedGlobalNetworkPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: StagedPolicySpec,
}

/// [`PolicySpec`]'s fields and `stagedAction`. Spelled out rather than flattened: serde cannot
/// refuse unknown fields through `flatten`, nor say which nested field failed. The test
/// `staged_spec_has_every_policy_field` keeps the two in step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
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

impl StagedPolicySpec {
    /// `stagedAction` with Calico's default, `Set`.
    pub fn action(&self) -> StagedAction {
        self.staged_action.unwrap_or_default()
    }

    /// The spec of the policy this stages.
    pub fn policy_spec(&self) -> PolicySpec {
        PolicySpec {
            tier: self.tier.clone(),
            order: self.order,
            selector: self.selector.clone(),
            types: self.types.clone(),
            ingress: self.ingress.clone(),
            egress: self.egress.clone(),
            service_account_selector: self.service_account_selector.clone(),
            namespace_selector: self.namespace_selector.clone(),
            do_not_track: self.do_not_track,
            pre_dnat: self.pre_dnat,
            apply_on_forward: self.apply_on_forward,
            performance_hints: self.performance_hints.clone(),
        }
    }

    /// The tier the staged policy is in (`default` when unset), as for enforced policies.
    pub fn tier(&self) -> &str {
        self.tier
            .as_deref()
            .filter(|tier| !tier.is_empty())
            .unwrap_or(crate::calico::DEFAULT_TIER)
    }

    /// The fields set besides `stagedAction` and `tier`, by their manifest names: what a
    /// `Delete` must not carry (Calico: "Spec fields, except Tier, should all be zero-value if
    /// stagedAction is Delete").
    pub fn fields_besides_tier(&self) -> Vec<String> {
        set_fields(self, &["stagedAction", "tier"])
    }
}

/// A staged Kubernetes NetworkPolicy: a `networking.k8s.io/v1` NetworkPolicy spec and
/// `stagedAction`. Calico's converter reads it as it reads the Kubernetes kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedKubernetesNetworkPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: StagedKubernetesNetworkPolicySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// [`KubernetesNetworkPolicySpec`]'s fields and `stagedAction`; `podSelector` is optional here,
/// as in Calico's type (an empty selector picks every pod of the namespace).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedKubernetesNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<KubernetesIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<KubernetesEgressRule>,
}

impl StagedKubernetesNetworkPolicySpec {
    /// `stagedAction` with Calico's default, `Set`.
    pub fn action(&self) -> StagedAction {
        self.staged_action.unwrap_or_default()
    }

    /// The spec of the Kubernetes NetworkPolicy this stages.
    pub fn kubernetes_spec(&self) -> KubernetesNetworkPolicySpec {
        KubernetesNetworkPolicySpec {
            pod_selector: self.pod_selector.clone(),
            policy_types: self.policy_types.clone(),
            ingress: self.ingress.clone(),
            egress: self.egress.clone(),
        }
    }

    /// The fields set besides `stagedAction`: what a `Delete` must not carry (Calico: "Spec
    /// fields should all be zero-value if stagedAction is Delete").
    pub fn fields_besides_action(&self) -> Vec<String> {
        set_fields(self, &["stagedAction"])
    }
}

/// The names of the fields a spec sets, from its manifest form (every field is left out there
/// when unset), apart from `except`. An empty list counts as unset, as Go's zero value.
fn set_fields(spec: &impl Serialize, except: &[&str]) -> Vec<String> {
    let value = serde_json::to_value(spec).expect("specs always serialize");
    value
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(name, value)| {
                    !except.contains(&name.as_str()) && value.as_array().is_none_or(|list| !list.is_empty())
                })
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Metadata for the enforced policy a staged one proposes: the same object without the
/// resource version and uid (Calico clears both).
fn enforced_metadata(metadata: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        resource_version: None,
        uid: None,
        ..metadata.clone()
    }
}

impl StagedNetworkPolicy {
    /// The NetworkPolicy this stages (`ConvertStagedPolicyToEnforced`).
    pub fn to_enforced(&self) -> NetworkPolicy {
        NetworkPolicy {
            metadata: enforced_metadata(&self.metadata),
            spec: self.spec.policy_spec(),
        }
    }
}

impl StagedGlobalNetworkPolicy {
    /// The GlobalNetworkPolicy this stages (`ConvertStagedGlobalPolicyToEnforced`).
    pub fn to_enforced(&self) -> GlobalNetworkPolicy {
        GlobalNetworkPolicy {
            metadata: enforced_metadata(&self.metadata),
            spec: self.spec.policy_spec(),
        }
    }
}

impl StagedKubernetesNetworkPolicy {
    /// The Kubernetes NetworkPolicy this stages (`ConvertStagedKubernetesPolicyToK8SEnforced`).
    pub fn to_enforced(&self) -> KubernetesNetworkPolicy {
        KubernetesNetworkPolicy {
            metadata: enforced_metadata(&self.metadata),
            spec: self.spec.kubernetes_spec(),
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calico keeps StagedNetworkPolicySpec and NetworkPolicySpec in step by a test; so does
    /// Sluice: a policy spec with every field set reads as a staged spec and comes back whole.
    #[test]
    fn staged_spec_has_every_policy_field() {
        let text = r#"{
            "tier": "security", "order": 10, "selector": "app == 'web'", "types": ["Egress"],
            "ingress": [{"action": "Allow"}], "egress": [{"action": "Deny"}],
            "serviceAccountSelector": "all()", "namespaceSelector": "all()",
            "doNotTrack": true, "preDNAT": true, "applyOnForward": true,
            "performanceHints": ["AssumeNeededOnEveryNode"]
        }"#;
        let policy: PolicySpec = serde_json::from_str(text).unwrap();
        let every_field = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            every_field.as_object().unwrap().len(),
            12,
            "a field was added to PolicySpec: add it to StagedPolicySpec too"
        );
        let staged: StagedPolicySpec = serde_json::from_value(every_field.clone()).unwrap();
        assert_eq!(staged.policy_spec(), policy);
        assert_eq!(staged.action(), StagedAction::Set);
        assert_eq!(staged.fields_besides_tier().len(), 11);
    }

    #[test]
    fn the_enforced_form_drops_the_resource_version() {
        let staged: StagedNetworkPolicy = serde_json::from_str(
            r#"{"metadata": {"name": "deny", "namespace": "prod", "resourceVersion": "7", "uid": "u"},
                "spec": {"stagedAction": "Set", "selector": "all()", "types": ["Egress"]}}"#,
        )
        .unwrap();
        let enforced = staged.to_enforced();
        assert_eq!(enforced.metadata.name, "deny");
        assert_eq!(enforced.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(enforced.metadata.resource_version, None);
        assert_eq!(enforced.metadata.uid, None);
        assert_eq!(enforced.spec.types, Some(vec![PolicyType::Egress]));
    }

    #[test]
    fn a_delete_names_the_fields_it_must_not_carry() {
        let spec: StagedKubernetesNetworkPolicySpec = serde_json::from_str(
            r#"{"stagedAction": "Delete", "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": []}"#,
        )
        .unwrap();
        assert_eq!(spec.action(), StagedAction::Delete);
        assert_eq!(spec.fields_besides_action(), ["podSelector"]);
    }
}
