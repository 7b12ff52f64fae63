//! Explanations: a verdict with a readable account of every tier, policy and rule that was
//! considered, for people (`sluice explain`) and machines (`-o json`).

use serde::Serialize;
use sluice_api::values::{Action, PolicyType};

use crate::evaluate::{Decision, Flow, TraceStep};
use crate::ir::{Dataplane, EndpointId, PolicyId};
use crate::l7::{FlowL7, L7Finding};

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// `allow` or `deny`.
    pub verdict: &'static str,
    pub egress: Option<DirectionExplanation>,
    pub ingress: Option<DirectionExplanation>,
}

/// Which policy rule decided, in terms of the resource a person wrote.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReference {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub tier: String,
    pub direction: &'static str,
    /// Index into the resource's `spec.ingress` or `spec.egress` list.
    pub rule_index: usize,
    pub action: Action,
    /// When the rule allowed the destination by its name: the domain pattern that matched it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_pattern: Option<String>,
    /// When the rule has an HTTP or TLS match: what of the request or server name it allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirectionExplanation {
    /// `namespace/pod`.
    pub endpoint: String,
    pub direction: &'static str,
    pub allowed: bool,
    /// One sentence: what decided.
    pub reason: String,
    /// The deciding rule, when a rule decided.
    pub rule: Option<RuleReference>,
    /// Every step considered, in order, as sentences.
    pub steps: Vec<String>,
}

/// Evaluates a flow and explains the verdict.
pub fn explain(dataplane: &Dataplane, flow: &Flow) -> Explanation {
    explain_with_domain(dataplane, flow, None)
}

/// Evaluates a flow whose destination address was resolved from `destination_domain` and
/// explains the verdict, naming the domain pattern that allowed it.
pub fn explain_with_domain(
    dataplane: &Dataplane,
    flow: &Flow,
    destination_domain: Option<&str>,
) -> Explanation {
    explain_with_l7(dataplane, flow, destination_domain, None)
}

/// Evaluates a flow with its HTTP request or TLS server name (`l7`) and explains the verdict,
/// naming the L7 match that decided or why one did not match.
pub fn explain_with_l7(
    dataplane: &Dataplane,
    flow: &Flow,
    destination_domain: Option<&str>,
    l7: Option<&FlowL7>,
) -> Explanation {
    let mut egress_steps = Vec::new();
    let mut ingress_steps = Vec::new();
    let verdict = dataplane.evaluate_traced(
        flow,
        destination_domain,
        l7,
        &mut egress_steps,
        &mut ingress_steps,
    );
    Explanation {
        verdict: if verdict.allowed { "allow" } else { "deny" },
        egress: verdict
            .egress
            .map(|(id, decision)| describe(dataplane, id, PolicyType::Egress, decision, &egress_steps)),
        ingress: verdict
            .ingress
            .map(|(id, decision)| describe(dataplane, id, PolicyType::Ingress, decision, &ingress_steps)),
    }
}

fn direction_name(direction: PolicyType) -> &'static str {
    match direction {
        PolicyType::Ingress => "ingress",
        PolicyType::Egress => "egress",
    }
}

/// A reference to a rule of a compiled policy.
pub fn rule_reference(
    dataplane: &Dataplane,
    policy: PolicyId,
    direction: PolicyType,
    rule_index: usize,
) -> RuleReference {
    let compiled = &dataplane.policies[policy];
    let rule = &compiled.rules(direction)[rule_index];
    RuleReference {
        kind: compiled.reference.kind,
        namespace: compiled.reference.namespace.clone(),
        name: compiled.reference.name.clone(),
        tier: compiled.reference.tier.clone(),
        direction: direction_name(direction),
        rule_index: rule.origin_index,
        action: rule.action,
        domain_pattern: None,
        l7: None,
    }
}

impl std::fmt::Display for RuleReference {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.kind == "KubernetesNetworkPolicy" {
            "Kubernetes NetworkPolicy"
        } else {
            self.kind
        };
        match &self.namespace {
            Some(namespace) => write!(formatter, "{kind} {namespace}/{}", self.name)?,
            None => write!(formatter, "{kind} {}", self.name)?,
        }
        write!(
            formatter,
            ", {} rule {}, in tier {}",
            self.direction, self.rule_index, self.tier
        )
    }
}

/// A rule's domain patterns as `a, *.b` for sentences.
fn domain_patterns(
    dataplane: &Dataplane,
    policy: PolicyId,
    direction: PolicyType,
    rule_index: usize,
) -> String {
    let rule = &dataplane.policies[policy].rules(direction)[rule_index];
    rule.domains
        .map(|domains| {
            dataplane.domain_sets[domains.set as usize]
                .patterns
                .iter()
                .map(|pattern| pattern.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn describe(
    dataplane: &Dataplane,
    endpoint: EndpointId,
    direction: PolicyType,
    decision: Decision,
    steps: &[TraceStep],
) -> DirectionExplanation {
    let program = &dataplane.endpoints[endpoint];
    let endpoint_name = program.display_name();
    let policy_name = |policy: PolicyId| dataplane.policies[policy].reference.to_string();
    let rule_text = |policy: PolicyId, rule_index: usize| {
        let rule = &dataplane.policies[policy].rules(direction)[rule_index];
        format!(
            "{}, {} rule {}",
            policy_name(policy),
            direction_name(direction),
            rule.origin_index
        )
    };
    let step_texts = steps
        .iter()
        .map(|step| match step {
            TraceStep::Tier { tier } => format!("tier {tier}"),
            TraceStep::NoRuleMatched { policy } => format!("  {}: no rule matched", policy_name(*policy)),
            TraceStep::Logged { policy, rule_index } => format!(
                "  {}: Log (evaluation continues)",
                rule_text(*policy, *rule_index)
            ),
            TraceStep::Passed { policy, rule_index } => {
                format!("  {}: Pass to the next tier", rule_text(*policy, *rule_index))
            }
            TraceStep::L7Matched {
                policy,
                rule_index,
                finding,
            } => format!("  {}: {}", rule_text(*policy, *rule_index), l7_sentence(finding)),
            TraceStep::L7NotMatched {
                policy,
                rule_index,
                finding,
            } => format!(
                "  {}: {}; the rule does not match, evaluation continues",
                rule_text(*policy, *rule_index),
                l7_sentence(finding)
            ),
            TraceStep::TierPassed { tier } => format!("  end of tier {tier}: its default action is Pass"),
            TraceStep::DomainMatched {
                policy,
                rule_index,
                domain,
                pattern,
            } => format!(
                "  {}: the destination name {domain} matches the domain pattern {pattern}",
                rule_text(*policy, *rule_index)
            ),
            TraceStep::DomainNotMatched {
                policy,
                rule_index,
                domain,
            } => {
                let patterns = domain_patterns(dataplane, *policy, direction, *rule_index);
                match domain {
                    None => format!(
                        "  {}: allows this address only when reached by a name matching {patterns}, and this flow has no name; give the name the address was resolved from (`--to NAME --resolve NAME=ADDRESS`, or \"domain\" in a flow line)",
                        rule_text(*policy, *rule_index)
                    ),
                    Some(domain) => format!(
                        "  {}: allows only names matching {patterns}, and {domain} matches none of them",
                        rule_text(*policy, *rule_index)
                    ),
                }
            }
            TraceStep::DomainsIgnored { policy, rule_index } => {
                let action = dataplane.policies[*policy].rules(direction)[*rule_index].action;
                let place = match (direction, action) {
                    (PolicyType::Ingress, _) => "an ingress rule",
                    (_, Action::Deny) => "a Deny rule",
                    (_, Action::Pass) => "a Pass rule",
                    (_, Action::Log) => "a Log rule",
                    // Egress Allow rules use them; they are never marked ignored.
                    (_, Action::Allow) => "this rule",
                };
                format!(
                    "  {}: its selector picks network sets with allowedEgressDomains ({}), which have no effect in {place} (as in Calico); only their nets count",
                    rule_text(*policy, *rule_index),
                    domain_patterns(dataplane, *policy, direction, *rule_index),
                )
            }
        })
        .collect();
    let verb = if decision.allows() { "allowed" } else { "denied" };
    let (reason, rule) = match decision {
        Decision::Rule {
            policy, rule_index, ..
        } => {
            let mut reference = rule_reference(dataplane, policy, direction, rule_index);
            let by_name = steps.iter().rev().find_map(|step| match step {
                TraceStep::DomainMatched {
                    policy: matched_policy,
                    rule_index: matched_rule,
                    domain,
                    pattern,
                } if *matched_policy == policy && *matched_rule == rule_index => Some((domain, pattern)),
                _ => None,
            });
            let by_l7 = steps.iter().rev().find_map(|step| match step {
                TraceStep::L7Matched {
                    policy: matched_policy,
                    rule_index: matched_rule,
                    finding,
                } if *matched_policy == policy && *matched_rule == rule_index => Some(finding),
                _ => None,
            });
            let mut reason = match by_name {
                Some((domain, pattern)) => {
                    reference.domain_pattern = Some(pattern.clone());
                    format!("{verb} by {reference}, for the name {domain} (domain pattern {pattern})")
                }
                None => format!("{verb} by {reference}"),
            };
            if let Some(finding) = by_l7 {
                reason = format!("{reason}; {}", l7_sentence(finding));
                reference.l7 = Some(finding.clone());
            }
            (reason, Some(reference))
        }
        Decision::TierDefault { tier } => {
            let tier = &program.direction(direction).tiers[tier].name;
            (
                format!(
                    "denied by the end of tier {tier}: policies in it select {endpoint_name} for {} but none matched",
                    direction_name(direction)
                ),
                None,
            )
        }
        Decision::ProfileAfterPass => (
            format!(
                "allowed by the namespace profile: every tier passed {endpoint_name}'s {} traffic on",
                direction_name(direction)
            ),
            None,
        ),
        Decision::FromOwnNode => (
            format!(
                "allowed: the source is {endpoint_name}'s own node, whose traffic to its pods ingress policy does not police (as in Calico)"
            ),
            None,
        ),
        Decision::NoPolicy => (
            format!(
                "allowed: no policy selects {endpoint_name} for {}",
                direction_name(direction)
            ),
            None,
        ),
    };
    DirectionExplanation {
        endpoint: endpoint_name,
        direction: direction_name(direction),
        allowed: decision.allows(),
        reason,
        rule,
        steps: step_texts,
    }
}

/// One L7 finding as a phrase: what matched, or what did not and why.
pub fn l7_sentence(finding: &L7Finding) -> String {
    let list = |items: &[String]| items.join(", ");
    match finding {
        L7Finding::HttpMatched {
            method,
            path,
            host,
            by_method,
            by_path,
            by_host,
        } => {
            let mut by = Vec::new();
            by.push(match by_method {
                Some(method) => format!("method {method}"),
                None => "any method".to_string(),
            });
            by.push(match by_path {
                Some(path) => format!("path {path}"),
                None => "any path".to_string(),
            });
            if let Some(host) = by_host {
                by.push(format!("host {host}"));
            }
            let host = host.as_deref().map(|host| format!(" to {host}")).unwrap_or_default();
            format!("the HTTP request {method} {path}{host} matches its HTTP match ({})", by.join(", "))
        }
        L7Finding::TlsMatched {
            server_name,
            by_server_name,
            by_domain,
        } => {
            let mut by = Vec::new();
            if let Some(pattern) = by_server_name {
                by.push(format!("server name {pattern}"));
            }
            if let Some(domain) = by_domain {
                by.push(format!("the rule's domain {domain}"));
            }
            format!("the TLS server name {server_name} matches its TLS match ({})", by.join(", "))
        }
        L7Finding::NoHttpRequest => "has an HTTP match and this flow carries no HTTP request (give one: `--http-method`, `--http-path`, `--http-host`, or \"http\" in a flow line)".to_string(),
        L7Finding::NoServerName => "has a TLS match and this flow carries no TLS server name (give one: `--server-name`, or \"serverName\" in a flow line)".to_string(),
        L7Finding::MethodNotListed { method, methods } => {
            format!("its HTTP match allows the methods {}, not {method}", list(methods))
        }
        L7Finding::PathNotListed { path, paths } => {
            format!("its HTTP match allows the paths {}, not {path}", list(paths))
        }
        L7Finding::HostNotListed { host: Some(host), hosts } => {
            format!("its HTTP match allows the hosts {}, not {host}", list(hosts))
        }
        L7Finding::HostNotListed { host: None, hosts } => {
            format!("its HTTP match allows the hosts {}, and the request names no host", list(hosts))
        }
        L7Finding::ServerNameNotListed { server_name, server_names } => format!(
            "its TLS match allows the server names {}, not {server_name}",
            list(server_names)
        ),
        L7Finding::ServerNameNotInDomains { server_name, domains } => format!(
            "its TLS match allows only server names among its domains ({}), not {server_name}",
            list(domains)
        ),
    }
}
