//! Staged policies' "what if": the resource set as it would be with every staged policy
//! applied, compiled by the one [`compile`](crate::compile) and judged by the one evaluator.
//!
//! A staged `Set` adds its policy, or replaces the policy of the same kind-equivalent and
//! name (StagedNetworkPolicy ↔ NetworkPolicy in the same namespace, StagedGlobalNetworkPolicy
//! ↔ GlobalNetworkPolicy, StagedKubernetesNetworkPolicy ↔ Kubernetes NetworkPolicy in the same
//! namespace); a staged `Delete` removes it (nothing, if there is none). The enforced IR never
//! sees staged policies.
//!
//! This lives here rather than in `sluice-api`: the per-object conversion (`to_enforced`, as
//! Calico's API package has it) is the API's, but what the cluster would enforce with the
//! staged policies in place is a policy decision, and the policies a Set put in are named by
//! their staged kind in the IR ([`crate::ir::PolicyReference::kind`]), which only the compiler
//! can do.

use sluice_api::ResourceSet;
use sluice_api::staged::StagedAction;

use crate::attribution::FlowHits;
use crate::compile::{StagedOrigins, compile_with_origins};
use crate::evaluate::Flow;
use crate::ir::Dataplane;

/// Whether the set holds any staged policy, of any kind or action.
pub fn has_staged_policies(resources: &ResourceSet) -> bool {
    !(resources.staged_network_policies.is_empty()
        && resources.staged_global_network_policies.is_empty()
        && resources.staged_kubernetes_network_policies.is_empty())
}

/// The resource set with every staged policy applied, and no staged policies left in it.
pub fn with_staged_applied(resources: &ResourceSet) -> ResourceSet {
    with_staged_applied_and_origins(resources).0
}

fn with_staged_applied_and_origins(resources: &ResourceSet) -> (ResourceSet, StagedOrigins) {
    let mut applied = resources.clone();
    let mut origins = StagedOrigins::default();
    let staged_network = std::mem::take(&mut applied.staged_network_policies);
    let staged_global = std::mem::take(&mut applied.staged_global_network_policies);
    let staged_kubernetes = std::mem::take(&mut applied.staged_kubernetes_network_policies);
    for staged in staged_network {
        let key = (
            staged.metadata.namespace().to_string(),
            staged.metadata.name.clone(),
        );
        applied.network_policies.retain(|policy| {
            (policy.metadata.namespace(), policy.metadata.name.as_str()) != (&key.0, &key.1)
        });
        if staged.spec.action() == StagedAction::Set {
            applied.network_policies.push(staged.to_enforced());
            origins.network_policies.insert(key);
        }
    }
    for staged in staged_global {
        let name = staged.metadata.name.clone();
        applied
            .global_network_policies
            .retain(|policy| policy.metadata.name != name);
        if staged.spec.action() == StagedAction::Set {
            applied.global_network_policies.push(staged.to_enforced());
            origins.global_network_policies.insert(name);
        }
    }
    for staged in staged_kubernetes {
        let key = (
            staged.metadata.namespace().to_string(),
            staged.metadata.name.clone(),
        );
        applied.kubernetes_network_policies.retain(|policy| {
            (policy.metadata.namespace(), policy.metadata.name.as_str()) != (&key.0, &key.1)
        });
        if staged.spec.action() == StagedAction::Set {
            applied.kubernetes_network_policies.push(staged.to_enforced());
            origins.kubernetes_network_policies.insert(key);
        }
    }
    (applied, origins)
}

/// The IR with every staged policy applied: what the cluster would enforce. Policies a staged
/// Set put there are named by their staged kind. With no staged policy, the enforced IR.
pub fn compile_staged(resources: &ResourceSet) -> Dataplane {
    let (applied, origins) = with_staged_applied_and_origins(resources);
    compile_with_origins(&applied, &origins)
}

/// A flow log's `pending_policies`: what would decide each direction of `flow` with every
/// staged policy applied. `staged` is [`compile_staged`]'s IR; the verdict is the one
/// evaluator's on it ([`Dataplane::deciding_hits`]).
pub fn pending_policies(staged: &Dataplane, flow: &Flow, destination_domain: Option<&str>) -> FlowHits {
    staged.deciding_hits(flow, destination_domain)
}

#[cfg(test)]
mod tests {
    use sluice_api::load_str;
    use sluice_api::values::{Action, PolicyType};

    use super::*;
    use crate::{Decision, PolicyHit};

    const TCP: u8 = 6;

    /// prod/web (10.0.0.1) and prod/db (10.0.0.2); web may reach db on 5432 by a
    /// NetworkPolicy, a GlobalNetworkPolicy in tier `security` passes everything on, and a
    /// Kubernetes NetworkPolicy selects db for ingress.
    const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
status: {podIP: 10.0.0.2}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: pass-all}
spec:
  tier: security
  selector: all()
  types: [Egress]
  egress: [{action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-egress, namespace: prod}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
  - {action: Allow, protocol: TCP, destination: {ports: [5432]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{}]
";

    fn resources(staged: &str) -> ResourceSet {
        load_str("cluster.yaml", &format!("{CLUSTER}---\n{staged}"))
            .unwrap_or_else(|errors| panic!("{errors}"))
    }

    fn web_to_db(port: u16) -> Flow {
        Flow {
            source: "10.0.0.1".parse().unwrap(),
            destination: "10.0.0.2".parse().unwrap(),
            protocol: TCP,
            source_port: Some(40000),
            destination_port: Some(port),
            icmp_type: None,
            icmp_code: None,
        }
    }

    fn egress_hit(dataplane: &Dataplane, flow: &Flow) -> PolicyHit {
        pending_policies(dataplane, flow, None).egress.unwrap()
    }

    #[test]
    fn a_set_replaces_the_policy_of_the_same_name_and_namespace() {
        let set = resources(
            "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: web-egress, namespace: prod}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
  - {action: Deny, protocol: TCP, destination: {ports: [5432]}}
  - {action: Allow}
",
        );
        let enforced = crate::compile(&set);
        let staged = compile_staged(&set);
        let flow = web_to_db(5432);
        assert!(enforced.evaluate(&flow).allowed);
        assert!(!staged.evaluate(&flow).allowed);
        // The enforced IR never sees staged policies.
        assert!(
            enforced
                .policies
                .iter()
                .all(|policy| !policy.reference.kind.starts_with("Staged"))
        );
        // Replaced, not added: one policy of that name, named by its staged kind.
        let named: Vec<&str> = staged
            .policies
            .iter()
            .filter(|policy| policy.reference.name == "web-egress")
            .map(|policy| policy.reference.kind)
            .collect();
        assert_eq!(named, ["StagedNetworkPolicy"]);
        assert_eq!(
            egress_hit(&staged, &flow).text(),
            "default|StagedNetworkPolicy|prod/web-egress|0|deny"
        );
        assert_eq!(
            egress_hit(&enforced, &flow).text(),
            "default|NetworkPolicy|prod/web-egress|0|allow"
        );
        // A port the replaced policy never named: the staged Allow-all rule decides.
        assert_eq!(
            egress_hit(&staged, &web_to_db(80)).text(),
            "default|StagedNetworkPolicy|prod/web-egress|1|allow"
        );
    }

    #[test]
    fn a_set_in_another_namespace_adds_rather_than_replaces() {
        let set = resources(
            "apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: web-egress, namespace: dev}
spec: {selector: all(), types: [Egress]}
",
        );
        let staged = compile_staged(&set);
        let kinds: Vec<(&str, Option<&str>)> = staged
            .policies
            .iter()
            .filter(|policy| policy.reference.name == "web-egress")
            .map(|policy| (policy.reference.kind, policy.reference.namespace.as_deref()))
            .collect();
        assert_eq!(
            kinds.len(),
            2,
            "the prod policy stays beside the dev one: {kinds:?}"
        );
        assert!(kinds.contains(&("NetworkPolicy", Some("prod"))));
        assert!(kinds.contains(&("StagedNetworkPolicy", Some("dev"))));
        // It selects nothing in prod, so prod's verdicts and deciding rules are unchanged.
        let enforced = crate::compile(&set);
        for port in [80, 5432] {
            assert_eq!(
                staged.deciding_hits(&web_to_db(port), None),
                enforced.deciding_hits(&web_to_db(port), None)
            );
        }
    }

    #[test]
    fn a_set_of_a_new_name_adds_a_staged_default_deny() {
        let set = resources(
            "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: default-deny, namespace: prod}
spec: {selector: all(), types: [Ingress, Egress]}
",
        );
        let staged = compile_staged(&set);
        let enforced = crate::compile(&set);
        // web -> db 5432 stays allowed: web-egress allows it, db-ingress (order 1000) admits it.
        assert!(staged.evaluate(&web_to_db(5432)).allowed);
        // db -> web: no policy selects db's egress or web's ingress today; staged, the default
        // deny is the only policy of the default tier for both, and its end decides.
        let db_to_web = Flow {
            source: "10.0.0.2".parse().unwrap(),
            destination: "10.0.0.1".parse().unwrap(),
            ..web_to_db(80)
        };
        assert!(enforced.evaluate(&db_to_web).allowed);
        let hits = pending_policies(&staged, &db_to_web, None);
        assert!(!hits.allowed);
        for hit in [hits.egress.unwrap(), hits.ingress.unwrap()] {
            assert_eq!(
                hit.text(),
                "default|StagedNetworkPolicy|prod/default-deny|-1|deny"
            );
        }
    }

    #[test]
    fn a_delete_removes_the_policy_and_a_delete_of_nothing_changes_nothing() {
        let set = resources(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-web-egress, namespace: prod}
spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: deny-web-egress, namespace: prod}
spec: {stagedAction: Delete}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: not-there}
spec: {stagedAction: Delete}
",
        );
        let flow = web_to_db(80);
        // Enforced: the Kubernetes default deny for web's egress denies port 80.
        let enforced = crate::compile(&set);
        assert!(!enforced.evaluate(&flow).allowed);
        let staged = compile_staged(&set);
        assert!(
            staged
                .policies
                .iter()
                .all(|policy| policy.reference.name != "deny-web-egress")
        );
        // Without it, web-egress alone selects web and does not allow port 80 either: the end
        // of the default tier, now attributed to web-egress.
        assert_eq!(
            egress_hit(&staged, &flow).text(),
            "default|NetworkPolicy|prod/web-egress|-1|deny"
        );
        // Deleting what is not there leaves the IR's verdicts as they were.
        let applied = with_staged_applied(&set);
        assert_eq!(applied.global_network_policies.len(), 1);
        assert!(!has_staged_policies(&applied));
        assert!(has_staged_policies(&set));
    }

    #[test]
    fn tiers_a_staged_set_moves_a_policy_and_a_delete_can_empty_a_tier() {
        // Replacing pass-all with a Deny in the same tier denies before the default tier.
        let set = resources(
            "apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: pass-all}
spec:
  tier: security
  selector: all()
  types: [Egress]
  egress: [{action: Deny, protocol: TCP, destination: {ports: [5432]}}, {action: Pass}]
",
        );
        let staged = compile_staged(&set);
        assert_eq!(
            egress_hit(&staged, &web_to_db(5432)).text(),
            "security|StagedGlobalNetworkPolicy|pass-all|0|deny"
        );
        // Staged into the default tier instead: the NetworkPolicy (order none, name
        // `web-egress`) and the staged one (name `pass-all`) order by name: pass-all first.
        let moved = resources(
            "apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: pass-all}
spec:
  selector: all()
  types: [Egress]
  egress: [{action: Deny, protocol: TCP, destination: {ports: [5432]}}]
",
        );
        let staged = compile_staged(&moved);
        let web = staged.endpoint_by_name("prod", "web").unwrap();
        let tiers: Vec<&str> = web.egress.tiers.iter().map(|tier| tier.name.as_str()).collect();
        assert_eq!(tiers, ["default"]);
        assert_eq!(
            egress_hit(&staged, &web_to_db(5432)).text(),
            "default|StagedGlobalNetworkPolicy|pass-all|0|deny"
        );
        // Deleting the only policy of tier security: the tier no longer applies to web.
        let emptied = resources(
            "apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: pass-all}
spec: {stagedAction: Delete, tier: security}
",
        );
        let staged = compile_staged(&emptied);
        let web = staged.endpoint_by_name("prod", "web").unwrap();
        assert!(web.egress.tiers.iter().all(|tier| tier.name != "security"));
        let verdict = staged.evaluate(&web_to_db(5432));
        assert!(matches!(
            verdict.egress,
            Some((
                _,
                Decision::Rule {
                    action: Action::Allow,
                    ..
                }
            ))
        ));
    }

    #[test]
    fn without_staged_policies_the_staged_ir_is_the_enforced_one() {
        let set = resources("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
        assert!(!has_staged_policies(&set));
        let staged = compile_staged(&set);
        let enforced = crate::compile(&set);
        for port in [80, 5432] {
            assert_eq!(
                pending_policies(&staged, &web_to_db(port), None),
                enforced.deciding_hits(&web_to_db(port), None)
            );
        }
        // The receiver's ingress is decided by the Kubernetes policy's rule 0.
        let hits = enforced.deciding_hits(&web_to_db(80), None);
        assert_eq!(
            hits.ingress.unwrap(),
            PolicyHit {
                tier: "default".into(),
                kind: "KubernetesNetworkPolicy".into(),
                namespace: Some("prod".into()),
                name: "db-ingress".into(),
                direction: PolicyType::Ingress,
                rule_index: 0,
                action: Action::Allow,
            }
        );
    }
}
