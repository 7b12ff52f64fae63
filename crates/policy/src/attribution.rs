//! Policy hits: what decided one direction of a flow, named as flow logs name it, with a compact
//! stable id the kernel can carry.
//!
//! The renderer writes each final decision's [`HitId`] into the kernel (the log prefix of the
//! rule that decides), and the flow-log core reads it back and looks it up in [`hits`] of the
//! same IR: the attribution comes from the kernel, and both sides name it through this one
//! module. Ids are a hash of the hit's text, so they stay the same across compiles, nodes and
//! agent restarts while the policy, rule and tier do.

use std::fmt;

use serde::{Deserialize, Serialize};
use sluice_api::values::{Action, PolicyType};

use crate::evaluate::{Decision, Flow};
use crate::ir::{Dataplane, EndpointProgram, PolicyReference};

/// Calico's name for the profile "tier" in flow logs.
pub const PROFILE_TIER: &str = "__PROFILE__";

/// One final decision for one direction of an endpoint: a rule that allowed or denied, the end
/// of a tier (deny), or the namespace profile (allow).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PolicyHit {
    pub tier: String,
    /// `NetworkPolicy`, `GlobalNetworkPolicy`, `KubernetesNetworkPolicy` or `Profile`; in a
    /// staged IR also `StagedNetworkPolicy`, `StagedGlobalNetworkPolicy` and
    /// `StagedKubernetesNetworkPolicy`.
    pub kind: String,
    pub namespace: Option<String>,
    /// The policy's name; for a profile, `kns.<namespace>` as Calico names it.
    pub name: String,
    pub direction: PolicyType,
    /// The rule's index in its policy as written; -1 for the end of a tier (Calico's
    /// implicit drop), 0 for a profile.
    pub rule_index: i64,
    /// Allow or Deny.
    pub action: Action,
}

impl PolicyHit {
    /// An Allow or Deny rule of a policy.
    pub fn rule(
        reference: &PolicyReference,
        direction: PolicyType,
        rule_index: usize,
        action: Action,
    ) -> PolicyHit {
        PolicyHit {
            tier: reference.tier.clone(),
            kind: reference.kind.to_string(),
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            direction,
            rule_index: rule_index as i64,
            action,
        }
    }

    /// The end of a tier in which some policy applied but none decided: attributed, as Calico
    /// does, to the last policy of the tier with rule index -1.
    pub fn tier_end(last_policy: &PolicyReference, direction: PolicyType) -> PolicyHit {
        PolicyHit {
            rule_index: -1,
            action: Action::Deny,
            ..PolicyHit::rule(last_policy, direction, 0, Action::Deny)
        }
    }

    /// The namespace profile, which allows when no tier decided.
    pub fn profile(namespace: &str, direction: PolicyType) -> PolicyHit {
        PolicyHit {
            tier: PROFILE_TIER.to_string(),
            kind: "Profile".to_string(),
            namespace: None,
            name: format!("kns.{namespace}"),
            direction,
            rule_index: 0,
            action: Action::Allow,
        }
    }

    /// The compact id the kernel carries for this hit.
    pub fn id(&self) -> HitId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in format!("{}|{}", self.direction, self).bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        HitId(hash)
    }

    /// `tier|kind|namespace/name|rule index|action`, the form of a flow log's `policies`.
    pub fn text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for PolicyHit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match &self.namespace {
            Some(namespace) => format!("{namespace}/{}", self.name),
            None => self.name.clone(),
        };
        let action = match self.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Pass => "pass",
            Action::Log => "log",
        };
        write!(
            formatter,
            "{}|{}|{name}|{}|{action}",
            self.tier, self.kind, self.rule_index
        )
    }
}

/// What decided each direction of one flow, named as flow logs name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowHits {
    pub allowed: bool,
    /// The sender's egress, when the sender is an endpoint.
    pub egress: Option<PolicyHit>,
    /// The receiver's ingress, when the receiver is an endpoint (none for its own node's
    /// traffic, which no rule polices).
    pub ingress: Option<PolicyHit>,
}

/// A hit's compact id: 64 bits of FNV-1a over the direction and the hit's text, written as 16
/// hexadecimal digits (what fits a log prefix with room to spare).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HitId(pub u64);

impl fmt::Display for HitId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:016x}", self.0)
    }
}

impl std::str::FromStr for HitId {
    type Err = std::num::ParseIntError;

    fn from_str(text: &str) -> Result<HitId, Self::Err> {
        u64::from_str_radix(text, 16).map(HitId)
    }
}

impl Dataplane {
    /// The hit a decision of `evaluate` stands for, for one direction of `endpoint`; `None` for
    /// a decision no rule of the kernel makes (ingress from the pod's own node is not policed).
    pub fn hit_of(
        &self,
        endpoint: &EndpointProgram,
        direction: PolicyType,
        decision: Decision,
    ) -> Option<PolicyHit> {
        match decision {
            Decision::Rule {
                policy,
                rule_index,
                action,
                ..
            } => {
                let policy = &self.policies[policy];
                let origin = policy.rules(direction)[rule_index].origin_index;
                Some(PolicyHit::rule(&policy.reference, direction, origin, action))
            }
            Decision::TierDefault { tier } => {
                let tier = &endpoint.direction(direction).tiers[tier];
                let last = *tier.policies.last()?;
                Some(PolicyHit::tier_end(&self.policies[last].reference, direction))
            }
            Decision::ProfileAfterPass | Decision::NoPolicy => {
                Some(PolicyHit::profile(&endpoint.namespace, direction))
            }
            Decision::FromOwnNode => None,
        }
    }

    /// The deciding hit of each direction of `flow` (with the name its destination was resolved
    /// from, if any): one [`Dataplane::evaluate_with_domain`], each decision named by
    /// [`Dataplane::hit_of`]. A side that is no endpoint of this IR has none.
    pub fn deciding_hits(&self, flow: &Flow, destination_domain: Option<&str>) -> FlowHits {
        self.deciding_hits_with_l7(flow, destination_domain, None)
    }

    /// [`Dataplane::deciding_hits`] for a flow with an HTTP request or TLS server name.
    pub fn deciding_hits_with_l7(
        &self,
        flow: &Flow,
        destination_domain: Option<&str>,
        l7: Option<&crate::l7::FlowL7>,
    ) -> FlowHits {
        let verdict = self.evaluate_with_l7(flow, destination_domain, l7);
        let hit = |side: Option<(usize, Decision)>, direction| {
            side.and_then(|(endpoint, decision)| self.hit_of(&self.endpoints[endpoint], direction, decision))
        };
        FlowHits {
            allowed: verdict.allowed,
            egress: hit(verdict.egress, PolicyType::Egress),
            ingress: hit(verdict.ingress, PolicyType::Ingress),
        }
    }

    /// Every hit the kernel can report for this IR: each Allow and Deny rule of each policy in
    /// both directions, each tier's end for each endpoint that has the tier, each namespace's
    /// profile in both directions. What a flow-log reader looks a logged id up in.
    pub fn hits(&self) -> Vec<PolicyHit> {
        let mut hits = std::collections::BTreeSet::new();
        for policy in &self.policies {
            for direction in [PolicyType::Ingress, PolicyType::Egress] {
                for rule in policy.rules(direction) {
                    if matches!(rule.action, Action::Allow | Action::Deny) {
                        hits.insert(PolicyHit::rule(
                            &policy.reference,
                            direction,
                            rule.origin_index,
                            rule.action,
                        ));
                    }
                }
            }
        }
        for endpoint in &self.endpoints {
            for direction in [PolicyType::Ingress, PolicyType::Egress] {
                for tier in &endpoint.direction(direction).tiers {
                    if let Some(&last) = tier.policies.last() {
                        hits.insert(PolicyHit::tier_end(&self.policies[last].reference, direction));
                    }
                }
                hits.insert(PolicyHit::profile(&endpoint.namespace, direction));
            }
        }
        hits.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> PolicyReference {
        PolicyReference {
            kind: "NetworkPolicy",
            namespace: Some("billing".to_string()),
            name: "allow-dns".to_string(),
            tier: "default".to_string(),
        }
    }

    #[test]
    fn text_is_tier_kind_name_rule_and_action() {
        let hit = PolicyHit::rule(&reference(), PolicyType::Egress, 2, Action::Allow);
        assert_eq!(hit.text(), "default|NetworkPolicy|billing/allow-dns|2|allow");
        let end = PolicyHit::tier_end(&reference(), PolicyType::Egress);
        assert_eq!(end.text(), "default|NetworkPolicy|billing/allow-dns|-1|deny");
        let profile = PolicyHit::profile("billing", PolicyType::Ingress);
        assert_eq!(profile.text(), "__PROFILE__|Profile|kns.billing|0|allow");
    }

    #[test]
    fn ids_differ_by_direction_and_read_back() {
        let egress = PolicyHit::rule(&reference(), PolicyType::Egress, 0, Action::Allow).id();
        let ingress = PolicyHit::rule(&reference(), PolicyType::Ingress, 0, Action::Allow).id();
        assert_ne!(egress, ingress);
        assert_eq!(egress.to_string().len(), 16);
        assert_eq!(egress.to_string().parse::<HitId>().unwrap(), egress);
        // Stable across releases: a fixed value for a fixed hit.
        assert_eq!(
            PolicyHit::profile("default", PolicyType::Egress).id(),
            PolicyHit::profile("default", PolicyType::Egress).id()
        );
    }
}
