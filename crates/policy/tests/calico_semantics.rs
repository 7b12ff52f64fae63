//! Golden tests: one per semantic rule of Calico's policy model. Each loads a small manifest set,
//! compiles it and checks verdicts (and, where it shows the rule, which policy decided). Every
//! test names the Calico source the rule comes from; paths are relative to the
//! projectcalico/calico repository. `docs/semantics.md` states the same rules for users.

use sluice_policy::{Dataplane, Decision, Flow, compile, explain};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const SCTP: u8 = 132;

/// Two namespaces with three pods each. `db` pods have named ports; `web` pods run as the
/// `frontend` service account, which in `prod` carries the label `team: shop`.
const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: frontend, namespace: prod, labels: {team: shop}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1, serviceAccountName: frontend, containers: [{name: main}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec:
  nodeName: node-1
  containers:
    - name: main
      ports:
        - {name: postgres, containerPort: 5432}
        - {name: dns, containerPort: 53, protocol: UDP}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: prod, labels: {app: api}}
spec: {nodeName: node-1, containers: [{name: main}]}
status: {podIP: 10.0.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: dev, labels: {app: web}}
spec: {nodeName: node-2, serviceAccountName: frontend, containers: [{name: main}]}
status: {podIP: 10.0.2.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: dev, labels: {app: db}}
spec:
  nodeName: node-2
  containers:
    - name: main
      ports: [{name: postgres, containerPort: 6432, protocol: TCP}]
status: {podIP: 10.0.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: dev, labels: {app: api}}
spec: {nodeName: node-2, containers: [{name: main}]}
status: {podIP: 10.0.2.3}
"#;

const EXTERNAL: &str = "198.51.100.7";

fn load(extra: &str) -> Dataplane {
    let text = format!("{CLUSTER}---\n{extra}");
    match sluice_api::load_str("test.yaml", &text) {
        Ok(resources) => compile(&resources),
        Err(errors) => panic!("manifests do not load: {errors:?}"),
    }
}

/// `namespace/pod` of the cluster above, or a literal address.
fn address(peer: &str) -> std::net::IpAddr {
    let text = match peer {
        "prod/web" => "10.0.1.1",
        "prod/db" => "10.0.1.2",
        "prod/api" => "10.0.1.3",
        "dev/web" => "10.0.2.1",
        "dev/db" => "10.0.2.2",
        "dev/api" => "10.0.2.3",
        other => other,
    };
    text.parse()
        .unwrap_or_else(|_| panic!("`{peer}` is not a pod or an address"))
}

fn flow(from: &str, to: &str, protocol: u8, port: Option<u16>) -> Flow {
    Flow {
        source: address(from),
        destination: address(to),
        protocol,
        source_port: None,
        destination_port: port,
        icmp_type: None,
        icmp_code: None,
    }
}

fn tcp(from: &str, to: &str, port: u16) -> Flow {
    flow(from, to, TCP, Some(port))
}

fn icmp(from: &str, to: &str, icmp_type: u8, code: u8) -> Flow {
    Flow {
        icmp_type: Some(icmp_type),
        icmp_code: Some(code),
        ..flow(from, to, ICMP, None)
    }
}

fn allowed(dataplane: &Dataplane, flow: Flow) -> bool {
    dataplane.evaluate(&flow).allowed
}

/// The one-sentence reason for the sender's egress decision.
fn egress_reason(dataplane: &Dataplane, flow: Flow) -> String {
    explain(dataplane, &flow)
        .egress
        .expect("the source is a pod")
        .reason
}

/// The one-sentence reason for the receiver's ingress decision.
fn ingress_reason(dataplane: &Dataplane, flow: Flow) -> String {
    explain(dataplane, &flow)
        .ingress
        .expect("the destination is a pod")
        .reason
}

fn tier(name: &str, order: Option<f64>, default_action: Option<&str>) -> String {
    let order = order.map(|order| format!("order: {order}")).unwrap_or_default();
    let action = default_action
        .map(|action| format!("defaultAction: {action}"))
        .unwrap_or_default();
    format!(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {name}}}\nspec: {{{order}{}{action}}}\n---\n",
        if order.is_empty() || action.is_empty() {
            ""
        } else {
            ", "
        }
    )
}

/// A GlobalNetworkPolicy on `prod/web` egress with one rule towards [`EXTERNAL`].
fn web_egress(name: &str, tier: &str, order: Option<f64>, action: &str) -> String {
    let order = order
        .map(|order| format!("\n  order: {order}"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: {name}}}
spec:
  tier: {tier}{order}
  selector: app == 'web' && projectcalico.org/namespace == 'prod'
  types: [Egress]
  egress:
    - action: {action}
      destination: {{nets: [{EXTERNAL}/32]}}
---
"#
    )
}

// Tiers apply in ascending `order`, ties broken by name.
// felix/calc/policy_sorter.go (TierLess); api/pkg/apis/projectcalico/v3/tier.go.
#[test]
fn tiers_are_ordered_by_order_then_name() {
    let order_wins = load(&format!(
        "{}{}{}{}",
        tier("alpha", Some(20.0), None),
        tier("beta", Some(10.0), None),
        web_egress("alpha-allow", "alpha", None, "Allow"),
        web_egress("beta-deny", "beta", None, "Deny"),
    ));
    assert_eq!(
        egress_reason(&order_wins, tcp("prod/web", EXTERNAL, 443)),
        "denied by GlobalNetworkPolicy beta-deny, egress rule 0, in tier beta"
    );

    let name_breaks_tie = load(&format!(
        "{}{}{}{}",
        tier("alpha", Some(10.0), None),
        tier("beta", Some(10.0), None),
        web_egress("alpha-allow", "alpha", None, "Allow"),
        web_egress("beta-deny", "beta", None, "Deny"),
    ));
    assert_eq!(
        egress_reason(&name_breaks_tie, tcp("prod/web", EXTERNAL, 443)),
        "allowed by GlobalNetworkPolicy alpha-allow, egress rule 0, in tier alpha"
    );
}

// A tier without `order` applies after every tier with one, whatever its name.
// felix/calc/policy_sorter.go (TierLess: nil order sorts last).
#[test]
fn tier_without_order_comes_after_ordered_tiers() {
    let dataplane = load(&format!(
        "{}{}{}{}",
        tier("aaa-unordered", None, None),
        tier("zzz-ordered", Some(5_000_000.0), None),
        web_egress("unordered-deny", "aaa-unordered", None, "Deny"),
        web_egress("ordered-allow", "zzz-ordered", None, "Allow"),
    ));
    assert_eq!(
        egress_reason(&dataplane, tcp("prod/web", EXTERNAL, 443)),
        "allowed by GlobalNetworkPolicy ordered-allow, egress rule 0, in tier zzz-ordered"
    );
}

// The default tier has order 1,000,000: a tier at 2,000,000 applies after it, one at 999,999
// before it. api/pkg/apis/projectcalico/v3/tier.go (DefaultTierOrder).
#[test]
fn default_tier_sits_at_order_one_million() {
    let later = load(&format!(
        "{}{}{}",
        tier("late", Some(2_000_000.0), None),
        web_egress("late-deny", "late", None, "Deny"),
        web_egress("default-allow", "default", None, "Allow"),
    ));
    assert_eq!(
        egress_reason(&later, tcp("prod/web", EXTERNAL, 443)),
        "allowed by GlobalNetworkPolicy default-allow, egress rule 0, in tier default"
    );

    let earlier = load(&format!(
        "{}{}{}",
        tier("early", Some(999_999.0), None),
        web_egress("early-deny", "early", None, "Deny"),
        web_egress("default-allow", "default", None, "Allow"),
    ));
    assert_eq!(
        egress_reason(&earlier, tcp("prod/web", EXTERNAL, 443)),
        "denied by GlobalNetworkPolicy early-deny, egress rule 0, in tier early"
    );
}

// Within a tier, policies apply in ascending `order`, ties broken by name; a policy without
// `order` comes last. felix/calc/policy_sorter.go (PolKVLess, polMetaDefaultOrder = +Inf).
#[test]
fn policies_in_a_tier_are_ordered_by_order_then_name() {
    let order_wins = load(&format!(
        "{}{}",
        web_egress("a-deny", "default", Some(20.0), "Deny"),
        web_egress("b-allow", "default", Some(10.0), "Allow"),
    ));
    assert!(allowed(&order_wins, tcp("prod/web", EXTERNAL, 443)));

    let name_breaks_tie = load(&format!(
        "{}{}",
        web_egress("a-deny", "default", Some(10.0), "Deny"),
        web_egress("b-allow", "default", Some(10.0), "Allow"),
    ));
    assert!(!allowed(&name_breaks_tie, tcp("prod/web", EXTERNAL, 443)));

    let absent_order_last = load(&format!(
        "{}{}",
        web_egress("a-deny", "default", None, "Deny"),
        web_egress("b-allow", "default", Some(1e9), "Allow"),
    ));
    assert_eq!(
        egress_reason(&absent_order_last, tcp("prod/web", EXTERNAL, 443)),
        "allowed by GlobalNetworkPolicy b-allow, egress rule 0, in tier default"
    );
}

// On equal order the tie-break key is `name/namespace/kind` (Calico 3.32 and later), so a
// NetworkPolicy `prod/a` comes before a GlobalNetworkPolicy `b`, and a Kubernetes
// NetworkPolicy before a Calico NetworkPolicy of the same name and namespace.
// felix/calc/policy_sorter.go (PolKVLess); model.PolicyKey kinds from
// libcalico-go/lib/backend/syncersv1/felixsyncer/felixsyncerv1.go.
#[test]
fn equal_order_ties_break_on_name_then_namespace_then_kind() {
    let dataplane = load(&format!(
        "{}{}",
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a, namespace: prod}
spec:
  order: 10
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Deny}]
---
"#,
        web_egress("b", "default", Some(10.0), "Allow"),
    ));
    assert_eq!(
        egress_reason(&dataplane, tcp("prod/web", EXTERNAL, 443)),
        "denied by NetworkPolicy prod/a, egress rule 0, in tier default"
    );

    let same_name = load(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: x, namespace: prod}
spec:
  order: 1000
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Deny}]
"#,
    );
    assert_eq!(
        egress_reason(&same_name, tcp("prod/web", EXTERNAL, 443)),
        "allowed by Kubernetes NetworkPolicy prod/x, egress rule 0, in tier default"
    );
}

// Pass skips the rest of the tier's policies and continues with the next tier.
// felix/rules/endpoints.go (pass mark: later policies of the tier are skipped);
// libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go (Pass → "next-tier").
#[test]
fn pass_skips_the_rest_of_the_tier() {
    let dataplane = load(&format!(
        "{}{}{}{}",
        tier("security", Some(100.0), None),
        web_egress("a-pass", "security", Some(1.0), "Pass"),
        web_egress("b-deny", "security", Some(2.0), "Deny"),
        web_egress("default-allow", "default", None, "Allow"),
    ));
    let explanation = explain(&dataplane, &tcp("prod/web", EXTERNAL, 443));
    let egress = explanation.egress.unwrap();
    assert_eq!(
        egress.reason,
        "allowed by GlobalNetworkPolicy default-allow, egress rule 0, in tier default"
    );
    assert!(
        egress
            .steps
            .iter()
            .any(|step| step.ends_with("GlobalNetworkPolicy a-pass, egress rule 0: Pass to the next tier")),
        "{:?}",
        egress.steps
    );
    assert!(!egress.steps.iter().any(|step| step.contains("b-deny")));
}

// A tier whose defaultAction is Pass hands unmatched traffic to the next tier instead of
// denying it. libcalico-go/lib/backend/syncersv1/updateprocessors/tierprocessor.go;
// felix/rules/endpoints.go (no end-of-tier drop when DefaultAction is Pass).
#[test]
fn tier_default_action_pass_continues_to_the_next_tier() {
    let dataplane = load(&format!(
        "{}{}{}",
        tier("security", Some(100.0), Some("Pass")),
        // Matches nothing this flow is: the tier applies but decides nothing.
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: only-dns}
spec:
  tier: security
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Allow, protocol: UDP, destination: {ports: [53]}}]
---
"#,
        web_egress("default-deny", "default", None, "Deny"),
    ));
    assert_eq!(
        egress_reason(&dataplane, tcp("prod/web", EXTERNAL, 443)),
        "denied by GlobalNetworkPolicy default-deny, egress rule 0, in tier default"
    );
}

// When a policy of a tier applies to the endpoint but no rule decides, the tier ends in Deny.
// felix/rules/endpoints.go ("End of tier ... Drop if no policies passed packet").
#[test]
fn end_of_tier_denies_when_a_policy_applies_but_no_rule_decides() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: https-only, namespace: prod}
spec:
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Allow, protocol: TCP, destination: {ports: [443]}}]
"#,
    );
    assert!(allowed(&dataplane, tcp("prod/web", EXTERNAL, 443)));
    let flow = tcp("prod/web", EXTERNAL, 80);
    assert_eq!(
        dataplane.evaluate(&flow).egress.map(|(_, decision)| decision),
        Some(Decision::TierDefault { tier: 0 })
    );
    assert_eq!(
        egress_reason(&dataplane, flow),
        "denied by the end of tier default: policies in it select prod/web for egress but none matched"
    );
}

// Pass out of the last tier that applies leaves the namespace profile, which allows.
// libcalico-go/lib/backend/k8s/conversion/conversion.go (NamespaceToProfile: Allow rules);
// felix/rules/endpoints.go (profiles after the tiers).
#[test]
fn pass_out_of_the_last_tier_reaches_the_allowing_profile() {
    let dataplane = load(&web_egress("pass-all", "default", None, "Pass"));
    let verdict = dataplane.evaluate(&tcp("prod/web", EXTERNAL, 443));
    assert!(verdict.allowed);
    assert_eq!(
        verdict.egress.map(|(_, decision)| decision),
        Some(Decision::ProfileAfterPass)
    );
}

// An endpoint that no policy selects in a direction is allowed in that direction (profile).
// felix/rules/endpoints.go (no tiers → profile rules only).
#[test]
fn no_policy_in_a_direction_allows() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: prod}
spec:
  selector: app == 'db'
  types: [Ingress]
"#,
    );
    let verdict = dataplane.evaluate(&tcp("prod/db", EXTERNAL, 443));
    assert!(verdict.allowed);
    assert_eq!(
        verdict.egress.map(|(_, decision)| decision),
        Some(Decision::NoPolicy)
    );
    assert!(!allowed(&dataplane, tcp("prod/web", "prod/db", 5432)));
}

// `types` defaults from the rules present: egress rules only → [Egress]; no rules → [Ingress];
// both → both. api/pkg/apis/projectcalico/v3/networkpolicy.go (Types documentation).
#[test]
fn policy_types_default_from_the_rules_present() {
    let egress_only = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: egress-only, namespace: prod}
spec:
  selector: app == 'db'
  egress: [{action: Allow, protocol: UDP, destination: {ports: [53]}}]
"#,
    );
    // Ingress is untouched; egress is governed.
    assert!(allowed(&egress_only, tcp("prod/web", "prod/db", 5432)));
    assert!(!allowed(&egress_only, tcp("prod/db", EXTERNAL, 443)));

    let no_rules = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: no-rules, namespace: prod}
spec:
  selector: app == 'db'
"#,
    );
    assert!(!allowed(&no_rules, tcp("prod/web", "prod/db", 5432)));
    assert!(allowed(&no_rules, tcp("prod/db", EXTERNAL, 443)));
}

// A Log rule records the packet and evaluation continues with the next rule.
// felix/rules/policy.go (Log renders a log action without a verdict).
#[test]
fn log_rules_continue_evaluation() {
    let dataplane = load(&format!(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: log-then-deny}}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Log
    - action: Deny
      destination: {{nets: [{EXTERNAL}/32]}}
"#
    ));
    let egress = explain(&dataplane, &tcp("prod/web", EXTERNAL, 443))
        .egress
        .unwrap();
    assert_eq!(
        egress.reason,
        "denied by GlobalNetworkPolicy log-then-deny, egress rule 1, in tier default"
    );
    assert!(
        egress
            .steps
            .iter()
            .any(|step| step.contains("rule 0: Log (evaluation continues)"))
    );
}

// A Kubernetes NetworkPolicy is a policy in the default tier at order 1000: a Calico policy at
// order 500 applies before it, one at 1500 after it.
// libcalico-go/lib/backend/k8s/conversion/conversion.go (K8sNetworkPolicyToCalico).
#[test]
fn kubernetes_network_policy_is_in_the_default_tier_at_order_1000() {
    let kubernetes_allow = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-partner, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 198.51.100.0/24}}]}]
---
"#;
    let calico_deny = |order: u32| {
        format!(
            r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: deny-host, namespace: prod}}
spec:
  order: {order}
  selector: app == 'web'
  types: [Egress]
  egress: [{{action: Deny, destination: {{nets: [{EXTERNAL}/32]}}}}]
"#
        )
    };
    let before = load(&format!("{kubernetes_allow}{}", calico_deny(500)));
    assert_eq!(
        egress_reason(&before, tcp("prod/web", EXTERNAL, 443)),
        "denied by NetworkPolicy prod/deny-host, egress rule 0, in tier default"
    );
    let after = load(&format!("{kubernetes_allow}{}", calico_deny(1500)));
    assert_eq!(
        egress_reason(&after, tcp("prod/web", EXTERNAL, 443)),
        "allowed by Kubernetes NetworkPolicy prod/allow-partner, egress rule 0, in tier default"
    );
}

// A namespaced NetworkPolicy applies only to endpoints of its own namespace.
// libcalico-go/lib/backend/syncersv1/updateprocessors/networkpolicyprocessor.go
// (selector && projectcalico.org/namespace == '<namespace>').
#[test]
fn namespaced_policy_selects_only_its_namespace() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-db-ingress, namespace: prod}
spec:
  selector: app == 'db'
  types: [Ingress]
"#,
    );
    assert!(!allowed(&dataplane, tcp("prod/web", "prod/db", 5432)));
    assert!(allowed(&dataplane, tcp("prod/web", "dev/db", 6432)));
}

/// A NetworkPolicy in `prod` on `db` ingress with one Allow rule whose source is `source`.
fn prod_db_ingress_from(source: &str) -> Dataplane {
    load(&format!(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: db-ingress, namespace: prod}}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress: [{{action: Allow, source: {source}}}]
"#
    ))
}

// In a namespaced policy a rule's selector matches only endpoints of the policy's namespace.
// libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go (getEndpointSelector).
#[test]
fn rule_selector_in_namespaced_policy_matches_only_its_namespace() {
    let dataplane = prod_db_ingress_from("{selector: app == 'web'}");
    assert_eq!(
        ingress_reason(&dataplane, tcp("prod/web", "prod/db", 5432)),
        "allowed by NetworkPolicy prod/db-ingress, ingress rule 0, in tier default"
    );
    assert!(!allowed(&dataplane, tcp("dev/web", "prod/db", 5432)));
}

// A rule's namespaceSelector picks the namespaces (by their labels, or by
// `projectcalico.org/name`) instead of the policy's own.
// libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go (pcns. prefix);
// libcalico-go/lib/backend/k8s/conversion/conversion.go (NamespaceToProfile labels).
#[test]
fn rule_namespace_selector_picks_namespaces() {
    let by_label = prod_db_ingress_from("{namespaceSelector: env == 'dev', selector: app == 'web'}");
    assert!(allowed(&by_label, tcp("dev/web", "prod/db", 5432)));
    assert!(!allowed(&by_label, tcp("dev/api", "prod/db", 5432)));
    assert!(!allowed(&by_label, tcp("prod/web", "prod/db", 5432)));

    let by_name = prod_db_ingress_from("{namespaceSelector: projectcalico.org/name == 'dev'}");
    assert!(allowed(&by_name, tcp("dev/api", "prod/db", 5432)));
    assert!(!allowed(&by_name, tcp("prod/api", "prod/db", 5432)));
}

// `namespaceSelector: all()` means every namespace: namespaced endpoints and network sets,
// but not GlobalNetworkSets. libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go
// (all() → has(projectcalico.org/namespace)).
#[test]
fn namespace_selector_all_means_every_namespace() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: dev, labels: {app: web}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: feed, labels: {app: web}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: prod}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress: [{action: Allow, source: {namespaceSelector: all(), selector: app == 'web'}}]
"#,
    );
    assert!(allowed(&dataplane, tcp("prod/web", "prod/db", 5432)));
    assert!(allowed(&dataplane, tcp("dev/web", "prod/db", 5432)));
    assert!(allowed(&dataplane, tcp("203.0.113.9", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("192.0.2.9", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("dev/api", "prod/db", 5432)));
}

// `namespaceSelector: global()` means only non-namespaced things: GlobalNetworkSets, never
// pods or namespaced NetworkSets. libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go
// (global() → !has(projectcalico.org/namespace)).
#[test]
fn namespace_selector_global_means_only_global_network_sets() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {role: partner}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: local-partners, namespace: prod, labels: {role: partner}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: v1
kind: Pod
metadata: {name: partner, namespace: dev, labels: {role: partner}}
spec: {nodeName: node-2, containers: [{name: main}]}
status: {podIP: 10.0.2.9}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-egress, namespace: prod}
spec:
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Allow, destination: {namespaceSelector: global(), selector: role == 'partner'}}]
"#,
    );
    assert!(allowed(&dataplane, tcp("prod/web", "203.0.113.5", 443)));
    assert!(!allowed(&dataplane, tcp("prod/web", "192.0.2.5", 443)));
    assert!(!allowed(&dataplane, tcp("prod/web", "10.0.2.9", 443)));
}

// A GlobalNetworkPolicy rule selector is not namespaced: it matches endpoints of every
// namespace, namespaced NetworkSets and GlobalNetworkSets.
// libcalico-go/lib/backend/syncersv1/updateprocessors/globalnetworkpolicyprocessor.go
// (RulesAPIV3ToBackend with no namespace); networksetprocessor.go, globalnetworksetprocessor.go.
#[test]
fn global_policy_rule_selector_matches_every_namespace_and_global_sets() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: feed, labels: {app: web}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: dev, labels: {app: web}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-ingress}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress: [{action: Allow, source: {selector: app == 'web'}}]
"#,
    );
    for source in ["prod/web", "dev/web", "192.0.2.9", "203.0.113.9"] {
        assert!(allowed(&dataplane, tcp(source, "prod/db", 5432)), "{source}");
    }
    assert!(!allowed(&dataplane, tcp("prod/api", "prod/db", 5432)));
}

// A namespaced NetworkSet is matched by the rule selectors of policies in its own namespace
// only. libcalico-go/lib/backend/syncersv1/updateprocessors/networksetprocessor.go (namespace
// label) with rules.go (namespaced rule selector).
#[test]
fn namespaced_network_set_matches_only_from_its_namespace() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: prod, labels: {role: partner}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: dev, labels: {role: partner}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-egress, namespace: prod}
spec:
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Allow, destination: {selector: role == 'partner'}}]
"#,
    );
    assert!(allowed(&dataplane, tcp("prod/web", "203.0.113.5", 443)));
    assert!(!allowed(&dataplane, tcp("prod/web", "192.0.2.5", 443)));
}

// `notSelector` is passed through unchanged, not restricted to the policy's namespace: with
// `namespaceSelector: all()` it excludes matching pods of other namespaces too. And a
// notSelector alone still confines the rule to the policy's namespace.
// libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go (NotSrcSelector: as written;
// getEndpointSelector namespaces the positive selector when notSelector is set).
#[test]
fn not_selector_is_not_namespaced() {
    let across = prod_db_ingress_from("{namespaceSelector: all(), notSelector: app == 'web'}");
    assert!(!allowed(&across, tcp("dev/web", "prod/db", 5432)));
    assert!(!allowed(&across, tcp("prod/web", "prod/db", 5432)));
    assert!(allowed(&across, tcp("dev/api", "prod/db", 5432)));
    assert!(!allowed(&across, tcp(EXTERNAL, "prod/db", 5432)));

    let alone = prod_db_ingress_from("{notSelector: app == 'web'}");
    assert!(allowed(&alone, tcp("prod/api", "prod/db", 5432)));
    assert!(!allowed(&alone, tcp("prod/web", "prod/db", 5432)));
    assert!(!allowed(&alone, tcp("dev/api", "prod/db", 5432)));
}

// `nets` matches any address in the CIDRs, pod addresses included.
// felix/rules/rule_defs.go / felix/calc/rule_scanner.go (nets are plain CIDR matches).
#[test]
fn nets_match_pod_addresses() {
    let dataplane = prod_db_ingress_from("{nets: [10.0.2.0/24]}");
    assert!(allowed(&dataplane, tcp("dev/web", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("prod/web", "prod/db", 5432)));
}

// Every match in a rule must hold: `nets` and `selector` together pick pods in those nets.
// api/pkg/apis/projectcalico/v3/policy_common.go (EntityRule: all fields ANDed).
#[test]
fn nets_and_selector_in_one_rule_both_apply() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-ingress}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress: [{action: Allow, source: {nets: [10.0.2.0/24], selector: app == 'web'}}]
"#,
    );
    assert!(allowed(&dataplane, tcp("dev/web", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("prod/web", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("dev/api", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("10.0.2.99", "prod/db", 5432)));
}

// `notNets` excludes the CIDRs; a Kubernetes ipBlock `except` becomes notNets.
// api/pkg/apis/projectcalico/v3/policy_common.go (NotNets);
// libcalico-go/lib/backend/k8s/conversion/conversion.go (k8sPeerToCalicoFields).
#[test]
fn not_nets_and_ip_block_except_exclude() {
    let not_nets = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: only-outside}
spec:
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Allow, destination: {notNets: [10.0.0.0/8]}}]
"#,
    );
    assert!(allowed(&not_nets, tcp("prod/web", EXTERNAL, 443)));
    assert!(!allowed(&not_nets, tcp("prod/web", "prod/db", 5432)));

    let except = load(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: partner, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.128/25]}}]}]
"#,
    );
    assert!(allowed(&except, tcp("prod/web", "198.51.100.7", 443)));
    assert!(!allowed(&except, tcp("prod/web", "198.51.100.200", 443)));
}

/// A dual-stack `prod/dual` pod and a GlobalNetworkPolicy on its egress with `rules`.
fn dual_stack_egress(rules: &str) -> Dataplane {
    load(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: dual, namespace: prod, labels: {{app: dual}}}}
spec: {{nodeName: node-1, containers: [{{name: main}}]}}
status: {{podIP: 10.0.1.9, podIPs: [{{ip: 10.0.1.9}}, {{ip: "fd00::9"}}]}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: dual-egress}}
spec:
  selector: app == 'dual'
  types: [Egress]
  egress: {rules}
"#
    ))
}

// `ipVersion` confines a rule to IPv4 or IPv6; so do its CIDRs: felix renders a rule only for
// the IP versions its nets and notNets have, so IPv4 `notNets` never match IPv6 traffic.
// felix/rules/policy.go (FilterRuleToIPVersion, filterNets).
#[test]
fn ip_version_and_cidr_family_confine_a_rule() {
    let explicit = dual_stack_egress("[{action: Allow, ipVersion: 6}]");
    assert!(allowed(&explicit, tcp("fd00::9", "2001:db8::1", 443)));
    assert!(!allowed(&explicit, tcp("10.0.1.9", EXTERNAL, 443)));

    let implied = dual_stack_egress("[{action: Allow, destination: {notNets: [10.0.0.0/8]}}]");
    assert!(allowed(&implied, tcp("10.0.1.9", EXTERNAL, 443)));
    assert!(!allowed(&implied, tcp("fd00::9", "2001:db8::1", 443)));
}

// `protocol` and `notProtocol` take a name or a number.
// api/pkg/lib/numorstring (Protocol); felix/rules/rule_defs.go (protocol matches).
#[test]
fn protocol_and_not_protocol_by_name_and_number() {
    let by_name = dual_stack_egress("[{action: Allow, protocol: UDP, destination: {ports: [53]}}]");
    assert!(allowed(&by_name, flow("10.0.1.9", EXTERNAL, UDP, Some(53))));
    assert!(!allowed(&by_name, flow("10.0.1.9", EXTERNAL, TCP, Some(53))));

    let by_number = dual_stack_egress("[{action: Allow, protocol: 132}, {action: Allow, protocol: 47}]");
    assert!(allowed(&by_number, flow("10.0.1.9", EXTERNAL, SCTP, Some(9))));
    assert!(allowed(&by_number, flow("10.0.1.9", EXTERNAL, 47, None)));
    assert!(!allowed(&by_number, flow("10.0.1.9", EXTERNAL, TCP, Some(9))));

    let not_protocol = dual_stack_egress("[{action: Allow, notProtocol: TCP}]");
    assert!(allowed(&not_protocol, flow("10.0.1.9", EXTERNAL, UDP, Some(53))));
    assert!(!allowed(
        &not_protocol,
        flow("10.0.1.9", EXTERNAL, TCP, Some(443))
    ));

    let not_protocol_number = dual_stack_egress("[{action: Allow, notProtocol: 17}]");
    assert!(!allowed(
        &not_protocol_number,
        flow("10.0.1.9", EXTERNAL, UDP, Some(53))
    ));
    assert!(allowed(
        &not_protocol_number,
        flow("10.0.1.9", EXTERNAL, TCP, Some(443))
    ));
}

// `ports` takes numbers and `low:high` ranges; `notPorts` excludes.
// api/pkg/lib/numorstring/port.go; api/pkg/apis/projectcalico/v3/policy_common.go.
#[test]
fn ports_ranges_and_not_ports() {
    let dataplane = dual_stack_egress(
        "[{action: Allow, protocol: TCP, destination: {ports: [80, '8000:8080'], notPorts: [8008]}}]",
    );
    for (port, expected) in [
        (80, true),
        (8000, true),
        (8050, true),
        (8080, true),
        (8008, false),
        (81, false),
    ] {
        assert_eq!(
            allowed(&dataplane, tcp("10.0.1.9", EXTERNAL, port)),
            expected,
            "port {port}"
        );
    }
}

// A named port resolves per destination pod, and only for the protocol the pod declares it
// with. felix/calc/rule_scanner.go (named-port IP sets filtered by the rule's selector);
// felix/labelindex/named_port_index.go and ipsetmember/ipset_port_protocol.go (protocol);
// libcalico-go/lib/backend/k8s/conversion/workload_endpoint_default.go (container ports).
#[test]
fn named_ports_resolve_per_pod_and_protocol() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web-egress}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - {action: Allow, protocol: TCP, destination: {ports: [postgres]}}
    - {action: Allow, protocol: TCP, destination: {ports: [dns]}}
"#,
    );
    assert!(allowed(&dataplane, tcp("prod/web", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("prod/web", "prod/db", 6432)));
    assert!(allowed(&dataplane, tcp("prod/web", "dev/db", 6432)));
    assert!(!allowed(&dataplane, tcp("prod/web", "dev/db", 5432)));
    // `dns` is UDP on prod/db: a TCP rule naming it matches nothing.
    assert!(!allowed(&dataplane, tcp("prod/web", "prod/db", 53)));
    assert!(!allowed(&dataplane, flow("prod/web", "prod/db", UDP, Some(53))));

    let any_protocol = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web-egress}
spec:
  selector: app == 'web'
  types: [Egress]
  egress: [{action: Allow, destination: {ports: [dns]}}]
"#,
    );
    assert!(allowed(&any_protocol, flow("prod/web", "prod/db", UDP, Some(53))));
    assert!(!allowed(&any_protocol, tcp("prod/web", "prod/db", 53)));
}

// `icmp` matches type and, if given, code; `notICMP` excludes.
// api/pkg/apis/projectcalico/v3/policy_common.go (ICMPFields); felix/rules/rule_defs.go.
#[test]
fn icmp_type_and_code() {
    let by_type = dual_stack_egress("[{action: Allow, protocol: ICMP, icmp: {type: 8}}]");
    assert!(allowed(&by_type, icmp("10.0.1.9", EXTERNAL, 8, 0)));
    assert!(!allowed(&by_type, icmp("10.0.1.9", EXTERNAL, 13, 0)));

    let by_code = dual_stack_egress("[{action: Allow, protocol: ICMP, icmp: {type: 3, code: 4}}]");
    assert!(allowed(&by_code, icmp("10.0.1.9", EXTERNAL, 3, 4)));
    assert!(!allowed(&by_code, icmp("10.0.1.9", EXTERNAL, 3, 1)));

    let not_icmp = dual_stack_egress("[{action: Allow, protocol: ICMP, notICMP: {type: 8}}]");
    assert!(!allowed(&not_icmp, icmp("10.0.1.9", EXTERNAL, 8, 0)));
    assert!(allowed(&not_icmp, icmp("10.0.1.9", EXTERNAL, 0, 0)));
}

// `serviceAccounts.names` matches pods running as those accounts; in a namespaced policy, only
// in its namespace. libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go
// (parseServiceAccounts: projectcalico.org/serviceaccount in {...}).
#[test]
fn service_account_names() {
    let dataplane = prod_db_ingress_from("{serviceAccounts: {names: [frontend]}}");
    assert!(allowed(&dataplane, tcp("prod/web", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("prod/api", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("dev/web", "prod/db", 5432)));
}

// `serviceAccounts.selector` matches the labels of the ServiceAccount resource.
// libcalico-go/lib/backend/k8s/conversion/conversion.go (ServiceAccountToProfile, pcsa.);
// libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go (parseServiceAccounts).
#[test]
fn service_account_selector_matches_account_labels() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-ingress}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress: [{action: Allow, source: {serviceAccounts: {selector: team == 'shop'}}}]
"#,
    );
    assert!(allowed(&dataplane, tcp("prod/web", "prod/db", 5432)));
    // dev/frontend has no ServiceAccount resource here, so no `team` label.
    assert!(!allowed(&dataplane, tcp("dev/web", "prod/db", 5432)));
    assert!(!allowed(&dataplane, tcp("prod/api", "prod/db", 5432)));
}

// Service account names of 63 characters or more: see `tests/identity.rs`
// (`long_service_account_names_keep_their_identity`).

// A GlobalNetworkPolicy's `namespaceSelector` and `serviceAccountSelector` narrow the
// endpoints it applies to. libcalico-go/lib/backend/syncersv1/updateprocessors/
// globalnetworkpolicyprocessor.go (pcns. and pcsa. prefixes, all() → has(...)).
#[test]
fn global_policy_namespace_and_service_account_selectors() {
    let by_namespace = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prod-ingress}
spec:
  namespaceSelector: env == 'prod'
  types: [Ingress]
"#,
    );
    assert!(!allowed(&by_namespace, tcp("dev/web", "prod/api", 80)));
    assert!(allowed(&by_namespace, tcp("prod/web", "dev/api", 80)));

    let by_account = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: shop-ingress}
spec:
  serviceAccountSelector: team == 'shop'
  types: [Ingress]
"#,
    );
    assert!(!allowed(&by_account, tcp("prod/api", "prod/web", 80)));
    assert!(allowed(&by_account, tcp("prod/api", "dev/web", 80)));
}

// Pod to pod needs the sender's egress and the receiver's ingress to allow.
// felix/rules/endpoints.go (egress chain of the sending workload, ingress chain of the
// receiving one).
#[test]
fn pod_to_pod_needs_egress_and_ingress() {
    let egress_denied = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-no-egress, namespace: prod}
spec: {selector: app == 'web', types: [Egress]}
"#,
    );
    let verdict = egress_denied.evaluate(&tcp("prod/web", "prod/db", 5432));
    assert!(!verdict.allowed);
    assert!(verdict.egress.is_some_and(|(_, decision)| !decision.allows()));
    assert!(verdict.ingress.is_some_and(|(_, decision)| decision.allows()));

    let ingress_denied = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-no-ingress, namespace: prod}
spec: {selector: app == 'db', types: [Ingress]}
"#,
    );
    let verdict = ingress_denied.evaluate(&tcp("prod/web", "prod/db", 5432));
    assert!(!verdict.allowed);
    assert!(verdict.egress.is_some_and(|(_, decision)| decision.allows()));
}

// Traffic from outside the cluster meets only the receiver's ingress; traffic to outside only
// the sender's egress. felix/rules/endpoints.go (policy is per workload interface).
#[test]
fn outside_traffic_meets_only_one_side() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: all-ingress-denied}
spec: {selector: all(), types: [Ingress]}
"#,
    );
    let inbound = dataplane.evaluate(&tcp(EXTERNAL, "prod/web", 443));
    assert!(!inbound.allowed);
    assert!(inbound.egress.is_none());
    let outbound = dataplane.evaluate(&tcp("prod/web", EXTERNAL, 443));
    assert!(outbound.allowed);
    assert!(outbound.ingress.is_none());
}

// Host-networked pods and pods that have Succeeded or Failed are not workload endpoints: no
// policy applies to them and no selector picks their address.
// libcalico-go/lib/backend/k8s/conversion/conversion.go (IsValidCalicoWorkloadEndpoint,
// IsFinished).
#[test]
fn host_network_and_finished_pods_are_not_endpoints() {
    let dataplane = load(
        r#"apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1, hostNetwork: true, containers: [{name: main}]}
status: {podIP: 192.168.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: main}]}
status: {phase: Succeeded, podIP: 10.0.1.50}
---
apiVersion: v1
kind: Pod
metadata: {name: crashed, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: main}]}
status: {phase: Failed, podIP: 10.0.1.51}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web-policy}
spec:
  selector: app in {'web', 'db'}
  types: [Ingress, Egress]
  ingress: [{action: Allow, source: {selector: app == 'web'}}]
"#,
    );
    for address in ["192.168.0.10", "10.0.1.50", "10.0.1.51"] {
        let outbound = dataplane.evaluate(&tcp(address, EXTERNAL, 443));
        assert!(outbound.allowed && outbound.egress.is_none(), "{address}");
        assert!(!allowed(&dataplane, tcp(address, "prod/db", 5432)), "{address}");
    }
    assert!(dataplane.endpoint_by_name("prod", "agent").is_none());
    assert!(dataplane.endpoint_by_name("prod", "job").is_none());
}

// A rule with an HTTP match is parsed and validated but never matches: HTTP is not enforced
// yet, and such rules are Allow-only, so this fails closed. Calico enforces it only through
// its application layer (app-policy); api/pkg/apis/projectcalico/v3/policy_common.go (HTTPMatch).
#[test]
fn http_match_rule_never_matches() {
    let dataplane = load(
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-http, namespace: prod}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, http: {methods: [GET]}}]
"#,
    );
    let explanation = explain(&dataplane, &tcp("prod/web", "prod/db", 80));
    assert_eq!(explanation.verdict, "deny");
    let ingress = explanation.ingress.unwrap();
    assert!(ingress.reason.starts_with("denied by the end of tier default"));
    assert!(ingress.steps.iter().any(|step| step.contains("HTTP match")));
}

// Rules that name Kubernetes Services are rejected when loading rather than half-enforced.
// api/pkg/apis/projectcalico/v3/policy_common.go (ServiceMatch).
#[test]
fn service_match_is_rejected() {
    let text = format!(
        "{CLUSTER}---\n{}",
        r#"apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: to-service, namespace: prod}
spec:
  selector: app == 'web'
  egress: [{action: Allow, destination: {services: {name: db}}}]
"#
    );
    let errors = sluice_api::load_str("test.yaml", &text).expect_err("services are rejected");
    assert!(
        format!("{errors:?}").contains("spec.egress[0].destination.services"),
        "{errors:?}"
    );
}
