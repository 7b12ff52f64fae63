//! Decisions from the one evaluator: a connection's flow with a request (or a ClientHello's
//! server name) as its L7 view, evaluated on the IR the agent handed the proxy. A failed L7
//! match is a rule that did not match, so evaluation goes on as `explain` says it does.

use std::sync::Arc;

use sluice_api::values::PolicyType;
use sluice_policy::{Dataplane, Flow, FlowL7, HttpRequest};
use sluice_policy::{Decision, TraceStep};
use sluice_proxy::RuleIdentity;
use sluice_proxy::http::{Judgement, Request, RequestJudge};

/// A connection's flow and the IR it is judged on.
#[derive(Debug, Clone)]
pub(crate) struct FlowJudge {
    pub dataplane: Arc<Dataplane>,
    pub flow: Flow,
}

/// The evaluator's answer for one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed(RuleIdentity),
    /// Denied; the L7 rules that were tried and did not match.
    Denied(Vec<RuleIdentity>),
}

impl FlowJudge {
    pub fn decide(&self, view: &FlowL7) -> Outcome {
        let mut egress = Vec::new();
        let mut ingress = Vec::new();
        let verdict = self
            .dataplane
            .evaluate_traced(&self.flow, None, Some(view), &mut egress, &mut ingress);
        if verdict.allowed {
            let decision = verdict.egress.map(|(_, decision)| decision);
            return Outcome::Allowed(self.identity_of(decision));
        }
        let tried = egress
            .iter()
            .filter_map(|step| match step {
                TraceStep::L7NotMatched {
                    policy, rule_index, ..
                } => Some(self.rule_identity(*policy, *rule_index)),
                _ => None,
            })
            .collect();
        Outcome::Denied(tried)
    }

    fn rule_identity(&self, policy: usize, rule_index: usize) -> RuleIdentity {
        let compiled = &self.dataplane.policies[policy];
        RuleIdentity {
            policy: compiled.reference.to_string(),
            rule_index: compiled.rules(PolicyType::Egress)[rule_index].origin_index,
        }
    }

    /// What allowed the flow: a rule, or (no rule decided) the namespace profile.
    fn identity_of(&self, decision: Option<Decision>) -> RuleIdentity {
        match decision {
            Some(Decision::Rule {
                policy, rule_index, ..
            }) => self.rule_identity(policy, rule_index),
            _ => RuleIdentity {
                policy: "the namespace profile".to_string(),
                rule_index: 0,
            },
        }
    }
}

impl RequestJudge for FlowJudge {
    fn judge(&self, request: &Request) -> Judgement {
        let view = FlowL7 {
            http: Some(HttpRequest {
                method: request.method.clone(),
                path: request.path.clone(),
                host: request.host.clone(),
            }),
            server_name: None,
        };
        match self.decide(&view) {
            Outcome::Allowed(rule) => {
                tracing::debug!(
                    source = %self.flow.source, destination = %self.flow.destination,
                    method = %request.method, path = %request.path, host = ?request.host,
                    allowed_by = %rule, "L7 request allowed"
                );
                Judgement::Allow(rule)
            }
            Outcome::Denied(tried) => {
                tracing::info!(
                    source = %self.flow.source, destination = %self.flow.destination,
                    method = %request.method, path = %request.path, host = ?request.host,
                    tried = ?tried.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "L7 request denied"
                );
                Judgement::Deny(tried)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {ports: [80]}
      http: {methods: [GET]}
    - action: Allow
      protocol: TCP
      destination: {ports: [443]}
      tls: {serverNames: [api.partner.example]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: shop, labels: {app: web}}
spec: {node: node-1, pod: web, endpoint: eth0, interfaceName: slcweb, ipNetworks: [10.0.0.5/32]}
"#;

    fn judge(port: u16) -> FlowJudge {
        let set = sluice_api::load_str("judge.yaml", MANIFESTS).unwrap();
        FlowJudge {
            dataplane: Arc::new(sluice_policy::compile(&set)),
            flow: Flow {
                source: "10.0.0.5".parse().unwrap(),
                destination: "203.0.113.10".parse().unwrap(),
                protocol: 6,
                source_port: Some(40_000),
                destination_port: Some(port),
                icmp_type: None,
                icmp_code: None,
            },
        }
    }

    fn request(method: &str) -> FlowL7 {
        FlowL7 {
            http: Some(HttpRequest {
                method: method.into(),
                path: "/".into(),
                host: Some("api.partner.example".into()),
            }),
            server_name: None,
        }
    }

    #[test]
    fn the_evaluator_decides_and_names_the_rules() {
        let rule0 = RuleIdentity {
            policy: "NetworkPolicy shop/web".into(),
            rule_index: 0,
        };
        assert_eq!(judge(80).decide(&request("GET")), Outcome::Allowed(rule0.clone()));
        assert_eq!(judge(80).decide(&request("POST")), Outcome::Denied(vec![rule0]));
        let name = |name: &str| FlowL7 {
            http: None,
            server_name: Some(name.into()),
        };
        assert!(matches!(
            judge(443).decide(&name("api.partner.example")),
            Outcome::Allowed(RuleIdentity { rule_index: 1, .. })
        ));
        assert!(matches!(
            judge(443).decide(&name("other.example")),
            Outcome::Denied(_)
        ));
        // A request on the TLS rule's port, or a name on the HTTP rule's: no L7 rule holds.
        assert!(matches!(judge(443).decide(&request("GET")), Outcome::Denied(_)));
        assert!(matches!(
            judge(80).decide(&name("api.partner.example")),
            Outcome::Denied(_)
        ));
    }
}
