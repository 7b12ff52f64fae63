//! HTTP and TLS matches in policy: a rule with one matches only a flow whose L7 view (the HTTP
//! request, or the TLS server name) satisfies it, and never a flow without a view. A rule whose
//! L7 match fails is a rule that did not match: evaluation continues with the next rule of the
//! policy, the next policy of the tier, the tier's end (default Deny, or Pass), and later tiers
//! (Calico's meaning of a non-matching rule).

use sluice_policy::{Dataplane, Flow, FlowL7, HttpRequest, compile, explain_with_l7};

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

/// An outside address, shared by many sites (a CDN).
const OUTSIDE: &str = "203.0.113.10";

fn load(extra: &str) -> Dataplane {
    let text = format!("{CLUSTER}---\n{extra}");
    match sluice_api::load_str("test.yaml", &text) {
        Ok(resources) => compile(&resources),
        Err(errors) => panic!("manifests do not load:\n{errors}"),
    }
}

fn tcp(destination: &str, port: u16) -> Flow {
    Flow {
        source: "10.0.1.1".parse().unwrap(),
        destination: destination.parse().unwrap(),
        protocol: 6,
        source_port: None,
        destination_port: Some(port),
        icmp_type: None,
        icmp_code: None,
    }
}

fn request(method: &str, path: &str, host: &str) -> FlowL7 {
    FlowL7 {
        http: Some(HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            host: Some(host.to_string()),
        }),
        server_name: None,
    }
}

fn server_name(name: &str) -> FlowL7 {
    FlowL7 {
        http: None,
        server_name: Some(name.to_string()),
    }
}

fn allowed(dataplane: &Dataplane, flow: Flow, domain: Option<&str>, l7: Option<&FlowL7>) -> bool {
    dataplane.evaluate_with_l7(&flow, domain, l7).allowed
}

/// The egress reason and steps, as one text.
fn egress_text(dataplane: &Dataplane, flow: Flow, domain: Option<&str>, l7: Option<&FlowL7>) -> String {
    let side = explain_with_l7(dataplane, &flow, domain, l7)
        .egress
        .expect("the source is a pod");
    format!("{}\n{}", side.reason, side.steps.join("\n"))
}

/// web's egress: the given rules (indented as list items) in one policy of the default tier.
fn egress_policy(rules: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: partner-egress}}\nspec:\n  selector: app == 'web'\n  types: [Egress]\n  egress:\n{rules}"
    )
}

const GET_ONLY: &str = "    - action: Allow\n      protocol: TCP\n      destination: {nets: [203.0.113.0/24], ports: [80]}\n      http: {methods: [GET], paths: [{prefix: /v1/}], hosts: [api.partner.example]}\n";

#[test]
fn an_http_rule_allows_only_requests_it_matches() {
    let dataplane = load(&egress_policy(GET_ONLY));
    let flow = tcp(OUTSIDE, 80);
    let get = request("GET", "/v1/x", "api.partner.example");
    assert!(allowed(&dataplane, flow, None, Some(&get)));
    for denied in [
        request("POST", "/v1/x", "api.partner.example"),
        request("GET", "/v2/x", "api.partner.example"),
        request("GET", "/v1/x", "other.example"),
    ] {
        assert!(!allowed(&dataplane, flow, None, Some(&denied)), "{denied:?}");
    }
    // The TLS server name is not an HTTP request; no view at all is today's fail closed.
    assert!(!allowed(
        &dataplane,
        flow,
        None,
        Some(&server_name("api.partner.example"))
    ));
    assert!(!allowed(&dataplane, flow, None, None));
    assert!(!dataplane.evaluate(&flow).allowed);
    // The rest of the rule still applies: another port is not this rule's.
    assert!(!allowed(&dataplane, tcp(OUTSIDE, 8080), None, Some(&get)));
}

#[test]
fn a_failed_l7_match_goes_on_to_the_next_rule() {
    // A later plain Allow for the same port allows what the HTTP rule did not.
    let later_allow = load(&egress_policy(&format!(
        "{GET_ONLY}    - action: Allow\n      protocol: TCP\n      destination: {{nets: [203.0.113.0/24], ports: [80]}}\n"
    )));
    let post = request("POST", "/v1/x", "api.partner.example");
    let flow = tcp(OUTSIDE, 80);
    assert!(allowed(&later_allow, flow, None, Some(&post)));
    let text = egress_text(&later_allow, flow, None, Some(&post));
    assert!(
        text.contains("allowed by GlobalNetworkPolicy partner-egress, egress rule 1"),
        "{text}"
    );
    assert!(
        text.contains("egress rule 0: its HTTP match allows the methods GET, not POST; the rule does not match, evaluation continues"),
        "{text}"
    );
    // A later Deny denies it.
    let later_deny = load(&egress_policy(&format!(
        "{GET_ONLY}    - action: Deny\n      protocol: TCP\n      destination: {{ports: [80]}}\n    - action: Allow\n"
    )));
    assert!(!allowed(&later_deny, flow, None, Some(&post)));
    assert!(
        egress_text(&later_deny, flow, None, Some(&post))
            .contains("denied by GlobalNetworkPolicy partner-egress, egress rule 1"),
    );
    assert!(allowed(
        &later_deny,
        flow,
        None,
        Some(&request("GET", "/v1/", "api.partner.example"))
    ));
    // Nothing after it: the tier's end denies.
    let alone = load(&egress_policy(GET_ONLY));
    let text = egress_text(&alone, flow, None, Some(&post));
    assert!(text.starts_with("denied by the end of tier default"), "{text}");
}

#[test]
fn a_failed_l7_match_reaches_later_policies_and_tiers() {
    // The HTTP rule sits in tier `security`, whose end passes; the default tier's policy allows.
    let manifests = format!(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: security}}\nspec: {{order: 10, defaultAction: Pass}}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: security.http}}\nspec:\n  tier: security\n  selector: app == 'web'\n  types: [Egress]\n  egress:\n{GET_ONLY}---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: later}}\nspec:\n  selector: app == 'web'\n  types: [Egress]\n  egress:\n    - action: Allow\n      protocol: TCP\n      destination: {{ports: [80]}}\n"
    );
    let dataplane = load(&manifests);
    let flow = tcp(OUTSIDE, 80);
    let post = request("POST", "/v1/x", "api.partner.example");
    assert!(allowed(&dataplane, flow, None, Some(&post)));
    let text = egress_text(&dataplane, flow, None, Some(&post));
    assert!(text.contains("allowed by GlobalNetworkPolicy later"), "{text}");
    assert!(
        text.contains("end of tier security: its default action is Pass"),
        "{text}"
    );
    // The request the HTTP rule matches is allowed by it, in the first tier.
    let get = request("GET", "/v1/x", "api.partner.example:80");
    let explanation = explain_with_l7(&dataplane, &flow, None, Some(&get));
    let egress = explanation.egress.unwrap();
    assert!(
        egress
            .reason
            .contains("allowed by GlobalNetworkPolicy security.http, egress rule 0")
    );
    assert!(
        egress.reason.contains(
            "the HTTP request GET /v1/x to api.partner.example matches its HTTP match (method GET, path prefix /v1/, host api.partner.example)"
        ),
        "{}",
        egress.reason
    );
    let json = serde_json::to_value(egress.rule.unwrap()).unwrap();
    assert_eq!(json["l7"]["l7"], "http_matched");
    assert_eq!(json["l7"]["by_path"], "prefix /v1/");
    assert_eq!(json["l7"]["by_host"], "api.partner.example");
}

#[test]
fn an_ingress_http_rule_checks_the_request_as_calico_does() {
    let dataplane = load(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: api-ingress, namespace: prod}\nspec:\n  selector: app == 'api'\n  ingress:\n    - action: Allow\n      http: {methods: [GET]}\n",
    );
    let flow = tcp("10.0.1.3", 8080);
    let get = request("GET", "/", "api");
    assert!(allowed(&dataplane, flow, None, Some(&get)));
    assert!(!allowed(
        &dataplane,
        flow,
        None,
        Some(&request("DELETE", "/", "api"))
    ));
    assert!(!allowed(&dataplane, flow, None, None));
}

/// `destination.domains` with `tls: {matchDomains: true}`: an address shared with other sites
/// admits only the allowed names (cilium#31803).
const SHARED_ADDRESS: &str = "    - action: Allow\n      protocol: TCP\n      destination: {domains: [api.partner.example, '*.s3.example'], ports: [443]}\n      tls: {matchDomains: true}\n";

#[test]
fn a_tls_rule_checks_the_server_name_against_the_rules_domains() {
    let dataplane = load(&egress_policy(SHARED_ADDRESS));
    let flow = tcp(OUTSIDE, 443);
    let name = Some("api.partner.example");
    assert!(allowed(
        &dataplane,
        flow,
        name,
        Some(&server_name("api.partner.example"))
    ));
    assert!(allowed(
        &dataplane,
        flow,
        name,
        Some(&server_name("bucket.s3.example"))
    ));
    // The same address, reached for an allowed name, with another site's name in the hello.
    assert!(!allowed(
        &dataplane,
        flow,
        name,
        Some(&server_name("evil.example"))
    ));
    let text = egress_text(&dataplane, flow, name, Some(&server_name("evil.example")));
    assert!(
        text.contains("its TLS match allows only server names among its domains (*.s3.example, api.partner.example), not evil.example; the rule does not match"),
        "{text}"
    );
    // No server name in the hello (or no view): not matched.
    let text = egress_text(&dataplane, flow, name, Some(&FlowL7::default()));
    assert!(
        text.contains("has a TLS match and this flow carries no TLS server name"),
        "{text}"
    );
    assert!(!allowed(&dataplane, flow, name, None));
    // The name must still be how the address was reached: the domain condition comes first.
    let text = egress_text(&dataplane, flow, None, Some(&server_name("api.partner.example")));
    assert!(text.contains("this flow has no name"), "{text}");
    let allowed_text = egress_text(&dataplane, flow, name, Some(&server_name("bucket.s3.example")));
    assert!(
        allowed_text.contains(
            "the TLS server name bucket.s3.example matches its TLS match (the rule's domain *.s3.example)"
        ),
        "{allowed_text}"
    );
}

#[test]
fn tls_server_names_restrict_an_address_rule() {
    let dataplane = load(&egress_policy(
        "    - action: Allow\n      protocol: TCP\n      destination: {nets: [203.0.113.0/24], ports: [443]}\n      tls: {serverNames: ['*.partner.example']}\n",
    ));
    let flow = tcp(OUTSIDE, 443);
    assert!(allowed(
        &dataplane,
        flow,
        None,
        Some(&server_name("api.partner.example"))
    ));
    assert!(!allowed(
        &dataplane,
        flow,
        None,
        Some(&server_name("partner.example"))
    ));
    let text = egress_text(&dataplane, flow, None, Some(&server_name("other.example")));
    assert!(
        text.contains("its TLS match allows the server names *.partner.example, not other.example"),
        "{text}"
    );
    // An HTTP request is not a ClientHello.
    assert!(!allowed(
        &dataplane,
        flow,
        None,
        Some(&request("GET", "/", "api.partner.example"))
    ));
}

#[test]
fn rules_with_the_same_l7_match_share_it() {
    let dataplane = load(&egress_policy(&format!("{GET_ONLY}{GET_ONLY}{SHARED_ADDRESS}")));
    assert_eq!(dataplane.l7_matches.len(), 2);
    let rules = &dataplane.policies[0].egress;
    assert_eq!(rules[0].l7, rules[1].l7);
    assert_ne!(rules[0].l7, rules[2].l7);
}
