//! `sluice explain` with destination names: `--to NAME --resolve NAME=ADDR[,ADDR]`, and flow
//! lines with `"domain"` beside the address in `"to"`.

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::{manifest_file, sluice, text};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: main}]}
status: {podIP: 10.0.1.1}
---
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
        domains: [api.partner.example, '*.s3.example']
        ports: [443]
"#;

fn manifests(test: &str) -> PathBuf {
    manifest_file("domains", test, MANIFESTS)
}

fn explain(test: &str, extra: &[&str]) -> Output {
    let path = manifests(test);
    let mut arguments = vec![
        "explain",
        "-f",
        path.to_str().unwrap(),
        "--from",
        "prod/web",
        "--port",
        "443",
    ];
    arguments.extend_from_slice(extra);
    sluice(&arguments)
}

#[test]
fn explain_a_name_by_the_address_given_with_resolve() {
    let output = explain(
        "one",
        &[
            "--to",
            "api.partner.example",
            "--resolve",
            "api.partner.example=203.0.113.10",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with("ALLOW prod/web -> api.partner.example (203.0.113.10) TCP port 443\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("egress of prod/web: allowed by GlobalNetworkPolicy partner-egress, egress rule 0, in tier default, for the name api.partner.example (domain pattern api.partner.example)"),
        "{stdout}"
    );
}

#[test]
fn every_address_of_a_name_is_explained_and_agreement_said() {
    let output = explain(
        "several",
        &[
            "--to",
            "logs.s3.example",
            "--resolve",
            "logs.s3.example=203.0.113.20,203.0.113.21",
            "--resolve",
            "logs.s3.example=203.0.113.22",
            "--resolve",
            "other.example=192.0.2.1",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with("ALLOW for all 3 addresses of logs.s3.example; each is explained below\n"),
        "{stdout}"
    );
    for address in ["203.0.113.20", "203.0.113.21", "203.0.113.22"] {
        assert!(
            stdout.contains(&format!(
                "ALLOW prod/web -> logs.s3.example ({address}) TCP port 443"
            )),
            "{stdout}"
        );
    }
    assert!(!stdout.contains("192.0.2.1"), "{stdout}");
    // As JSON: an array, one object per address, each naming the pattern.
    let json = explain(
        "several-json",
        &[
            "--to",
            "logs.s3.example",
            "--resolve",
            "logs.s3.example=203.0.113.20,203.0.113.21",
            "-o",
            "json",
        ],
    );
    assert!(json.status.success(), "{}", text(&json.stderr));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let entries = value.as_array().expect("an array for several addresses");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["to"], "203.0.113.21");
    assert_eq!(entries[1]["domain"], "logs.s3.example");
    assert_eq!(entries[1]["egress"]["rule"]["domain_pattern"], "*.s3.example");
}

#[test]
fn a_name_without_resolve_is_an_error_that_says_what_to_give() {
    let output = explain("unresolved", &["--to", "api.partner.example"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("`api.partner.example` is a name, and these manifests say nothing of what it resolved to (reading the datastore, a node's learned DNS cache does); give --resolve api.partner.example=ADDRESS[,ADDRESS]"),
        "{stderr}"
    );
    let wildcard = explain("wildcard", &["--to", "a.b", "--resolve", "*.b=192.0.2.1"]);
    assert_eq!(wildcard.status.code(), Some(2), "{}", text(&wildcard.stderr));
    assert!(
        text(&wildcard.stderr).contains("wildcard pattern"),
        "{}",
        text(&wildcard.stderr)
    );
}

#[test]
fn an_address_alone_is_denied_by_a_domains_rule_and_explain_says_why() {
    let output = explain("address", &["--to", "203.0.113.10"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with("DENY prod/web -> 203.0.113.10 TCP port 443"),
        "{stdout}"
    );
    assert!(
        stdout.contains("allows this address only when reached by a name matching *.s3.example, api.partner.example, and this flow has no name"),
        "{stdout}"
    );
}

#[test]
fn flow_lines_carry_a_domain_beside_the_address() {
    let path = manifests("flows");
    let flows = path.with_file_name("flows.jsonl");
    std::fs::write(
        &flows,
        concat!(
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 443, "domain": "API.partner.example"}"#,
            "\n",
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 443}"#,
            "\n",
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 443, "domain": "evil.example"}"#,
            "\n"
        ),
    )
    .unwrap();
    let output = sluice(&[
        "explain",
        "-f",
        path.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "-o",
        "jsonl",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let verdicts: Vec<&str> = lines
        .iter()
        .map(|line| line["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["allow", "deny", "deny"]);
    assert_eq!(lines[0]["domain"], "api.partner.example");
    assert_eq!(lines[0]["rule"]["domain_pattern"], "api.partner.example");
    assert!(lines[1].get("domain").is_none());

    // A name in "to", or a pattern in "domain", is refused by line; nothing is evaluated.
    std::fs::write(
        &flows,
        concat!(
            r#"{"from": "prod/web", "to": "api.partner.example", "port": 443}"#,
            "\n",
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 443, "domain": "*.s3.example"}"#,
            "\n"
        ),
    )
    .unwrap();
    let output = sluice(&[
        "explain",
        "-f",
        path.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("flows.jsonl:1: `api.partner.example` is a name: give the address it resolved to (\"to\" in a flow line, with the name in \"domain\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("flows.jsonl:2: `*.s3.example` is a wildcard pattern"),
        "{stderr}"
    );
}

/// Until the node learns names, the kernel must allow nothing by a `domains` rule: its
/// destination addresses are an empty set in the IR, so its port appears only in rules that
/// ask the learned-pair set (empty until the agent fills it). The same rule with `nets`
/// instead shows the check can see one.
#[test]
fn a_domains_rule_programs_nothing_into_the_kernel_before_names_are_learned() {
    let port_443_programmed = |manifest: &str| {
        let resources = sluice_api::load_str("policy.yaml", manifest).unwrap();
        let ruleset = sluice_dataplane::render(
            &sluice_policy::compile(&resources),
            &[sluice_dataplane::LocalEndpoint {
                namespace: "prod".into(),
                name: "web".into(),
                interface: "slc0123456789ab".into(),
                egress_gateway: false,
            }],
        );
        let in_rules = ruleset
            .chains
            .values()
            .flat_map(|chain| &chain.rules)
            // A rule for port 443 that does not ask the learned-pair set (`@<domain set>_v4`).
            .any(|(text, _)| text.contains("443") && !text.contains(" @d"));
        let in_sets = ruleset
            .sets
            .values()
            .flat_map(|set| &set.elements)
            .any(|(element, _)| element.contains("443"));
        in_rules || in_sets
    };
    assert!(!port_443_programmed(MANIFESTS));
    let by_address = MANIFESTS.replace(
        "domains: [api.partner.example, '*.s3.example']",
        "nets: [203.0.113.0/24]",
    );
    assert!(port_443_programmed(&by_address));
}
