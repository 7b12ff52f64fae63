//! HTTP and TLS matches: Calico's `http` (also in egress rules, Sluice's extension, with a
//! warning), Sluice's `http.hosts` and `tls`. Every refusal is checked with its file, line,
//! column and field, and every warning with where it points.

use sluice_api::{Diagnostic, ResourceSet, load_str};

const FILE: &str = "l7.yaml";

fn load(text: &str) -> ResourceSet {
    load_str(FILE, text).unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
}

/// A GlobalNetworkPolicy whose `direction` list holds one rule, given as its indented lines
/// after `- action: <action>` (the rule starts on line 7).
fn policy(direction: &str, action: &str, rule: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: partner\nspec:\n  {direction}:\n    - action: {action}\n{rule}"
    )
}

#[track_caller]
fn only_error(text: &str) -> Diagnostic {
    let errors = load_str(FILE, text).expect_err("the input should be rejected");
    assert_eq!(errors.0.len(), 1, "expected one error, got:\n{errors}");
    errors.0[0].clone()
}

fn located(diagnostic: &Diagnostic) -> (usize, usize, &str) {
    (diagnostic.line, diagnostic.column, diagnostic.field.as_str())
}

#[test]
fn an_egress_http_match_loads_with_a_warning_naming_the_extension() {
    let set = load(&policy(
        "egress",
        "Allow",
        "      protocol: TCP\n      destination:\n        ports: [80]\n      http:\n        methods: [GET, HEAD]\n        paths: [{prefix: /v1/}, {exact: /health}]\n        hosts: [api.partner.example, '*.Cdn.example']\n",
    ));
    let http = set.global_network_policies[0].spec.egress[0]
        .http
        .as_ref()
        .unwrap();
    assert_eq!(http.methods, ["GET", "HEAD"]);
    let hosts: Vec<&str> = http.hosts.iter().map(|host| host.as_str()).collect();
    assert_eq!(hosts, ["api.partner.example", "*.cdn.example"]);
    let warnings: Vec<(usize, usize, &str, &str)> = set
        .warnings
        .iter()
        .map(|warning| {
            (
                warning.line,
                warning.column,
                warning.field.as_str(),
                warning.message.as_str(),
            )
        })
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        (warnings[0].0, warnings[0].1, warnings[0].2),
        (12, 9, "spec.egress[0].http")
    );
    assert!(
        warnings[0].3.contains("Calico would reject it"),
        "{}",
        warnings[0].3
    );
    assert!(warnings[0].3.contains("Sluice enforces it"), "{}", warnings[0].3);
    assert_eq!(
        (warnings[1].0, warnings[1].1, warnings[1].2),
        (14, 16, "spec.egress[0].http.hosts")
    );
    assert_eq!(set.warnings[0].file, FILE);
}

#[test]
fn an_ingress_http_match_is_calicos_and_gets_no_warning() {
    let set = load(&policy(
        "ingress",
        "Allow",
        "      http:\n        methods: [GET]\n        paths: [{exact: /}]\n",
    ));
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
}

#[test]
fn a_tls_match_loads_with_a_warning() {
    let set = load(&policy(
        "egress",
        "Allow",
        "      protocol: TCP\n      destination:\n        domains: [api.partner.example]\n        ports: [443]\n      tls:\n        serverNames: ['*.partner.example']\n        matchDomains: true\n",
    ));
    let tls = set.global_network_policies[0].spec.egress[0]
        .tls
        .as_ref()
        .unwrap();
    assert!(tls.match_domains);
    assert_eq!(tls.server_names[0].as_str(), "*.partner.example");
    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    assert_eq!(located(&set.warnings[0]), (13, 9, "spec.egress[0].tls"));
    assert!(set.warnings[0].message.contains("Sluice extension"));
}

#[test]
fn bad_http_and_tls_matches_are_refused_where_they_are() {
    // (direction, action, rule lines, line, column, field, what the message says)
    let table: &[(&str, &str, &str, usize, usize, &str, &str)] = &[
        (
            "egress",
            "Deny",
            "      http:\n        methods: [GET]\n",
            9,
            9,
            "spec.egress[0].http",
            "HTTP match is only valid on Allow rules",
        ),
        (
            "egress",
            "Allow",
            "      protocol: UDP\n      http:\n        methods: [GET]\n",
            10,
            9,
            "spec.egress[0].http",
            "must have protocol TCP or unset",
        ),
        (
            "egress",
            "Allow",
            "      http:\n        methods: [GET, POST, GET]\n",
            9,
            30,
            "spec.egress[0].http.methods[2]",
            "`GET` is listed twice",
        ),
        (
            "egress",
            "Allow",
            "      http:\n        methods: ['GE T']\n",
            9,
            19,
            "spec.egress[0].http.methods[0]",
            "`GE T` is not an HTTP method",
        ),
        (
            "egress",
            "Allow",
            "      http:\n        paths: [{exact: /v1/x?a=b}]\n",
            9,
            17,
            "spec.egress[0].http.paths[0]",
            "contains `?`",
        ),
        (
            "egress",
            "Allow",
            "      http:\n        paths: [{prefix: '/v1#top'}]\n",
            9,
            17,
            "spec.egress[0].http.paths[0]",
            "contains `#`",
        ),
        (
            "egress",
            "Allow",
            "      http:\n        paths: [{prefix: '/a b'}]\n",
            9,
            17,
            "spec.egress[0].http.paths[0]",
            "contains ` `",
        ),
        (
            "egress",
            "Allow",
            "      http:\n        paths: [{prefix: v1}]\n",
            9,
            17,
            "spec.egress[0].http.paths[0]",
            "starts with `/`",
        ),
        (
            "egress",
            "Allow",
            "      http:\n        paths: [{prefix: /a, exact: /a}]\n",
            9,
            17,
            "spec.egress[0].http.paths[0]",
            "exactly one of `exact` or `prefix`",
        ),
        (
            "egress",
            "Allow",
            "      http:\n        hosts: [api.example, 'www.*.example']\n",
            9,
            30,
            "spec.egress[0].http.hosts[1]",
            "only a leading `*.`",
        ),
        (
            "egress",
            "Allow",
            "      tls:\n        serverNames: [api.example]\n",
            9,
            9,
            "spec.egress[0].tls",
            "must have protocol TCP",
        ),
        (
            "ingress",
            "Allow",
            "      protocol: TCP\n      tls:\n        serverNames: [api.example]\n",
            10,
            9,
            "spec.ingress[0].tls",
            "only valid in egress rules",
        ),
        (
            "egress",
            "Deny",
            "      protocol: TCP\n      tls:\n        serverNames: [api.example]\n",
            10,
            9,
            "spec.egress[0].tls",
            "only valid on Allow rules",
        ),
        (
            "egress",
            "Allow",
            "      protocol: TCP\n      http:\n        methods: [GET]\n      tls:\n        serverNames: [api.example]\n",
            12,
            9,
            "spec.egress[0].tls",
            "a connection is one or the other",
        ),
        (
            "egress",
            "Allow",
            "      protocol: TCP\n      tls: {}\n",
            9,
            12,
            "spec.egress[0].tls",
            "needs `serverNames` or `matchDomains: true`",
        ),
        (
            "egress",
            "Allow",
            "      protocol: TCP\n      tls:\n        matchDomains: true\n",
            10,
            23,
            "spec.egress[0].tls.matchDomains",
            "this rule has none",
        ),
        (
            "egress",
            "Allow",
            "      protocol: TCP\n      tls:\n        serverNames: ['api.*.example']\n",
            10,
            23,
            "spec.egress[0].tls.serverNames[0]",
            "only a leading `*.`",
        ),
        (
            "egress",
            "Allow",
            "      protocol: TCP\n      tls:\n        serverNames: ['bad_name.example']\n",
            10,
            23,
            "spec.egress[0].tls.serverNames[0]",
            "contains `_`",
        ),
        (
            "egress",
            "Allow",
            "      protocol: TCP\n      tls:\n        sni: [api.example]\n",
            10,
            9,
            "spec.egress[0].tls.sni",
            "unknown field",
        ),
    ];
    let mut wrong = Vec::new();
    for (direction, action, rule, line, column, field, hint) in table {
        let text = policy(direction, action, rule);
        let diagnostic = only_error(&text);
        assert_eq!(diagnostic.file, FILE);
        if located(&diagnostic) != (*line, *column, *field) || !diagnostic.message.contains(hint) {
            wrong.push(format!(
                "expected {line}:{column}: {field}: …{hint}…, got {diagnostic}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn more_than_twenty_items_are_refused() {
    let many: Vec<String> = (0..21).map(|index| format!("h{index}.example")).collect();
    let text = policy(
        "egress",
        "Allow",
        &format!("      http:\n        hosts: [{}]\n", many.join(", ")),
    );
    let diagnostic = only_error(&text);
    assert_eq!(
        located(&diagnostic),
        (9, 16, "spec.egress[0].http.hosts"),
        "{diagnostic}"
    );
    assert!(
        diagnostic.message.contains("21 hosts; at most 20"),
        "{diagnostic}"
    );
}

#[test]
fn a_staged_policy_with_an_egress_http_match_is_checked_and_warned_about() {
    let staged = "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata:\n  name: partner\nspec:\n  stagedAction: Set\n  egress:\n    - action: Allow\n      http:\n        methods: [GET]\n";
    let set = load(staged);
    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    assert_eq!(located(&set.warnings[0]), (10, 9, "spec.egress[0].http"));
    let refused = staged.replace("[GET]", "[GET, GET]");
    let diagnostic = only_error(&refused);
    assert_eq!(
        located(&diagnostic),
        (10, 24, "spec.egress[0].http.methods[1]"),
        "{diagnostic}"
    );
}
