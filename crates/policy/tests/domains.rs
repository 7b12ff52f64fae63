//! Domain names in policy (Calico Enterprise's semantics, docs.tigera.io "DNS policy" and the
//! EntityRule and GlobalNetworkSet references): `destination.domains` allows a destination
//! only by a name that matches (exact, or one `*` for one or more labels), network-set
//! `allowedEgressDomains` widen an egress Allow rule's selector by name, and have no effect in
//! ingress or non-Allow rules. A flow without a name never matches by name.

use sluice_policy::{Dataplane, Flow, compile, explain_with_domain};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: main}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: prod, labels: {app: api}}
spec: {nodeName: node-1, containers: [{name: main}]}
status: {podIP: 10.0.1.3}
"#;

/// An address no rule names, which a name can resolve to.
const RESOLVED: &str = "203.0.113.10";

fn load(extra: &str) -> Dataplane {
    let text = format!("{CLUSTER}---\n{extra}");
    match sluice_api::load_str("test.yaml", &text) {
        Ok(resources) => compile(&resources),
        Err(errors) => panic!("manifests do not load:\n{errors}"),
    }
}

fn address(peer: &str) -> std::net::IpAddr {
    match peer {
        "prod/web" => "10.0.1.1",
        "prod/api" => "10.0.1.3",
        other => other,
    }
    .parse()
    .unwrap()
}

fn tcp(from: &str, to: &str, port: u16) -> Flow {
    Flow {
        source: address(from),
        destination: address(to),
        protocol: 6,
        source_port: None,
        destination_port: Some(port),
        icmp_type: None,
        icmp_code: None,
    }
}

fn allowed(dataplane: &Dataplane, flow: Flow, domain: Option<&str>) -> bool {
    dataplane.evaluate_with_domain(&flow, domain).allowed
}

/// The egress reason and steps, as one text.
fn egress_text(dataplane: &Dataplane, flow: Flow, domain: Option<&str>) -> String {
    let side = explain_with_domain(dataplane, &flow, domain)
        .egress
        .expect("the source is a pod");
    format!("{}\n{}", side.reason, side.steps.join("\n"))
}

const DOMAINS_RULE: &str = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: partner-egress}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination:
        domains: [api.partner.example, '*.s3.example', 'www.*.example']
        ports: [443]
"#;

#[test]
fn a_domains_rule_allows_exactly_the_names_it_lists() {
    let dataplane = load(DOMAINS_RULE);
    let flow = tcp("prod/web", RESOLVED, 443);
    for name in [
        "api.partner.example",
        "API.Partner.Example",
        "api.partner.example.",
    ] {
        assert!(allowed(&dataplane, flow, Some(name)), "{name}");
    }
    for name in [
        "partner.example",
        "v2.api.partner.example",
        "api.partner.example.org",
    ] {
        assert!(!allowed(&dataplane, flow, Some(name)), "{name}");
    }
    // Ports and protocol still apply.
    assert!(!allowed(
        &dataplane,
        tcp("prod/web", RESOLVED, 80),
        Some("api.partner.example")
    ));
}

#[test]
fn a_wildcard_stands_for_one_or_more_labels_at_its_place() {
    let dataplane = load(DOMAINS_RULE);
    let flow = tcp("prod/web", RESOLVED, 443);
    let table = [
        ("bucket.s3.example", true),
        ("a.b.s3.example", true),
        ("s3.example", false),
        ("bucket.s3.example.net", false),
        ("www.shop.example", true),
        ("www.a.b.example", true),
        ("www.example", false),
        ("ww.shop.example", false),
    ];
    for (name, expected) in table {
        assert_eq!(allowed(&dataplane, flow, Some(name)), expected, "{name}");
    }
}

#[test]
fn a_domains_rule_never_matches_a_flow_without_a_name_and_explain_says_how_to_give_one() {
    let dataplane = load(DOMAINS_RULE);
    let flow = tcp("prod/web", RESOLVED, 443);
    assert!(!dataplane.evaluate(&flow).allowed);
    assert!(!allowed(&dataplane, flow, None));
    let text = egress_text(&dataplane, flow, None);
    assert!(
        text.contains(
            "GlobalNetworkPolicy partner-egress, egress rule 0: allows this address only when reached by a name matching *.s3.example, api.partner.example, www.*.example, and this flow has no name"
        ) && text.contains("--resolve NAME=ADDRESS"),
        "{text}"
    );
}

#[test]
fn explain_names_the_rule_and_the_pattern_that_allowed_the_name() {
    let dataplane = load(DOMAINS_RULE);
    let explanation = explain_with_domain(
        &dataplane,
        &tcp("prod/web", RESOLVED, 443),
        Some("logs.s3.example"),
    );
    let egress = explanation.egress.unwrap();
    assert_eq!(
        egress.reason,
        "allowed by GlobalNetworkPolicy partner-egress, egress rule 0, in tier default, for the name logs.s3.example (domain pattern *.s3.example)"
    );
    assert_eq!(
        egress.rule.unwrap().domain_pattern.as_deref(),
        Some("*.s3.example")
    );
    let text = egress_text(&dataplane, tcp("prod/web", RESOLVED, 443), Some("evil.example"));
    assert!(
        text.contains("allows only names matching *.s3.example, api.partner.example, www.*.example, and evil.example matches none of them"),
        "{text}"
    );
}

/// The name counts as the pod asked for it: the DNS learner files every address of an answer
/// (through CNAME chains) under the queried name, so a CNAME target's name is not what a rule
/// sees, and a rule for the target does not allow the alias.
#[test]
fn the_name_looked_up_is_what_matches_not_a_cname_target() {
    let dataplane = load(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: cdn}\nspec:\n  selector: app == 'web'\n  egress:\n    - action: Allow\n      destination: {domains: [edge.cdn.example]}\n",
    );
    let flow = tcp("prod/web", RESOLVED, 443);
    assert!(allowed(&dataplane, flow, Some("edge.cdn.example")));
    assert!(!allowed(&dataplane, flow, Some("www.shop.example")));
}

const PARTNER_SET: &str = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {role: partner}}
spec:
  nets: [198.51.100.0/28]
  allowedEgressDomains: ['*.partner.example']
"#;

#[test]
fn network_set_domains_widen_an_egress_allow_selector_by_name() {
    let dataplane = load(&format!(
        "{PARTNER_SET}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: partners}}\nspec:\n  selector: app == 'web'\n  egress:\n    - action: Allow\n      destination: {{selector: role == 'partner'}}\n"
    ));
    // By address, as always; by name, for an address outside the set's nets.
    assert!(allowed(&dataplane, tcp("prod/web", "198.51.100.3", 443), None));
    assert!(allowed(
        &dataplane,
        tcp("prod/web", RESOLVED, 443),
        Some("api.partner.example")
    ));
    assert!(!allowed(&dataplane, tcp("prod/web", RESOLVED, 443), None));
    assert!(!allowed(
        &dataplane,
        tcp("prod/web", RESOLVED, 443),
        Some("partner.example")
    ));
    let reason = egress_text(
        &dataplane,
        tcp("prod/web", RESOLVED, 443),
        Some("api.partner.example"),
    );
    assert!(
        reason.starts_with("allowed by GlobalNetworkPolicy partners, egress rule 0, in tier default, for the name api.partner.example (domain pattern *.partner.example)"),
        "{reason}"
    );
    // Allowed by address: no name is claimed.
    let by_address = egress_text(
        &dataplane,
        tcp("prod/web", "198.51.100.3", 443),
        Some("api.partner.example"),
    );
    assert!(
        by_address.starts_with("allowed by GlobalNetworkPolicy partners, egress rule 0, in tier default\n"),
        "{by_address}"
    );
    let without_name = egress_text(&dataplane, tcp("prod/web", RESOLVED, 443), None);
    assert!(
        without_name.contains("allows this address only when reached by a name matching *.partner.example"),
        "{without_name}"
    );
}

#[test]
fn network_set_domains_have_no_effect_in_ingress_or_deny_rules() {
    let dataplane = load(&format!(
        r#"{PARTNER_SET}---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: partners-in}}
spec:
  selector: app == 'api'
  ingress:
    - action: Allow
      source: {{selector: role == 'partner'}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: no-partners}}
spec:
  order: 10
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Deny
      destination: {{selector: role == 'partner'}}
    - action: Allow
"#
    ));
    // Ingress: only the set's nets count.
    assert!(dataplane.evaluate(&tcp("198.51.100.3", "prod/api", 80)).allowed);
    assert!(!allowed(
        &dataplane,
        tcp(RESOLVED, "prod/api", 80),
        Some("api.partner.example")
    ));
    let ingress = explain_with_domain(&dataplane, &tcp(RESOLVED, "prod/api", 80), None)
        .ingress
        .unwrap()
        .steps
        .join("\n");
    assert!(
        ingress.contains("GlobalNetworkPolicy partners-in, ingress rule 0: its selector picks network sets with allowedEgressDomains (*.partner.example), which have no effect in an ingress rule (as in Calico); only their nets count"),
        "{ingress}"
    );
    // Deny: the name does not bring the address into the rule.
    assert!(!allowed(&dataplane, tcp("prod/web", "198.51.100.3", 443), None));
    assert!(allowed(
        &dataplane,
        tcp("prod/web", RESOLVED, 443),
        Some("api.partner.example")
    ));
    let egress = egress_text(
        &dataplane,
        tcp("prod/web", RESOLVED, 443),
        Some("api.partner.example"),
    );
    assert!(
        egress.contains("egress rule 0: its selector picks network sets with allowedEgressDomains (*.partner.example), which have no effect in a Deny rule"),
        "{egress}"
    );
    // Nothing for the DNS learner to learn for these rules.
    let web = dataplane.endpoint_by_name("prod", "web").unwrap().id;
    assert!(dataplane.domain_sets_for(web).is_empty());
}

#[test]
fn domain_sets_are_shared_by_content_with_stable_short_names() {
    let text = format!(
        "{PARTNER_SET}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: a}}\nspec:\n  selector: app == 'web'\n  egress:\n    - action: Allow\n      destination: {{domains: [b.example, A.example]}}\n    - action: Allow\n      destination: {{domains: [a.example, b.example, a.example]}}\n    - action: Allow\n      destination: {{selector: role == 'partner'}}\n---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: b, namespace: prod}}\nspec:\n  selector: app == 'api'\n  egress:\n    - action: Allow\n      destination: {{domains: ['*.s3.example']}}\n"
    );
    let dataplane = load(&text);
    assert_eq!(dataplane.domain_sets.len(), 3, "{:#?}", dataplane.domain_sets);
    let patterns: Vec<Vec<&str>> = dataplane
        .domain_sets
        .iter()
        .map(|set| set.patterns.iter().map(|pattern| pattern.as_str()).collect())
        .collect();
    // NetworkPolicies compile first.
    assert_eq!(
        patterns,
        [
            vec!["*.s3.example"],
            vec!["a.example", "b.example"],
            vec!["*.partner.example"]
        ]
    );
    for set in &dataplane.domain_sets {
        assert!(set.name.starts_with('d') && set.name.len() == 16, "{}", set.name);
        assert!(
            set.name[1..]
                .chars()
                .all(|character| character.is_ascii_hexdigit())
        );
    }
    // Derived from the patterns alone: the same in another compile with other sets around.
    let alone = load(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: c}\nspec:\n  egress:\n    - action: Allow\n      destination: {domains: ['*.s3.example']}\n",
    );
    assert_eq!(alone.domain_sets[0].name, dataplane.domain_sets[0].name);
    // Pinned, so a change of hash (which renames every kernel set) is deliberate.
    // FNV-1a of "*.s3.example\n", top 60 bits (checked with an independent implementation).
    assert_eq!(alone.domain_sets[0].name, "db4f9c8b471c5ab1");
    assert_ne!(dataplane.domain_sets[1].name, dataplane.domain_sets[2].name);

    // What each endpoint's DNS learner must learn.
    let web = dataplane.endpoint_by_name("prod", "web").unwrap().id;
    let api = dataplane.endpoint_by_name("prod", "api").unwrap().id;
    let names = |endpoint| {
        dataplane
            .domain_sets_for(endpoint)
            .iter()
            .map(|set| set.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(web), [1, 2]);
    assert_eq!(names(api), [0]);
}
