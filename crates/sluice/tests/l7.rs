//! `sluice validate` and `sluice explain` with HTTP and TLS rules: the warning for Calico's
//! `http` in egress rules (Sluice's extension), `--http-method`, `--http-path`, `--http-host`
//! and `--server-name`, and flow lines with `"http"` and `"serverName"`.

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::{manifest_file, sluice, text};

const MANIFESTS: &str = r#"apiVersion: v1
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
      destination: {nets: [203.0.113.0/24], ports: [80]}
      http:
        methods: [GET]
        paths: [{prefix: /v1/}]
    - action: Allow
      protocol: TCP
      destination: {domains: [api.partner.example], ports: [443]}
      tls: {matchDomains: true}
"#;

fn manifests(test: &str) -> PathBuf {
    manifest_file("l7", test, MANIFESTS)
}

fn explain(test: &str, extra: &[&str]) -> Output {
    let path = manifests(test);
    let mut arguments = vec!["explain", "-f", path.to_str().unwrap(), "--from", "prod/web"];
    arguments.extend_from_slice(extra);
    sluice(&arguments)
}

#[test]
fn validate_warns_that_an_egress_http_match_relies_on_the_extension() {
    let path = manifests("validate");
    let output = sluice(&["validate", "-f", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    let file = path.display();
    assert!(
        stderr.contains(&format!(
            "warning (spec.egress[0].http): an HTTP match in an egress rule is a Sluice extension: Calico would reject it (\"not allowed in egress rules\"); Sluice enforces it\n  --> {file}:18:9"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "warning (spec.egress[1].tls): `tls` is a Sluice extension: Calico would reject the field; Sluice enforces it\n  --> {file}:23:12"
        )),
        "{stderr}"
    );
}

#[test]
fn explain_names_the_http_match_that_allowed_or_did_not() {
    let output = explain(
        "http",
        &[
            "--to",
            "203.0.113.10",
            "--port",
            "80",
            "--http-method",
            "GET",
            "--http-path",
            "/v1/orders?page=2",
            "--http-host",
            "api.partner.example",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with(
            "ALLOW prod/web -> 203.0.113.10 TCP port 80, HTTP GET /v1/orders?page=2 to api.partner.example\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("egress of prod/web: allowed by GlobalNetworkPolicy partner-egress, egress rule 0, in tier default; the HTTP request GET /v1/orders to api.partner.example matches its HTTP match (method GET, path prefix /v1/)"),
        "{stdout}"
    );

    let output = explain(
        "post",
        &[
            "--to",
            "203.0.113.10",
            "--port",
            "80",
            "--http-method",
            "POST",
            "-o",
            "json",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["verdict"], "deny");
    assert_eq!(json["http"]["method"], "POST");
    assert_eq!(json["http"]["path"], "/");
    let steps: Vec<&str> = json["egress"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step.as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"  GlobalNetworkPolicy partner-egress, egress rule 0: its HTTP match allows the methods GET, not POST; the rule does not match, evaluation continues"),
        "{steps:?}"
    );

    // Without a request, the rule cannot match, and explain says what to give.
    let output = explain("none", &["--to", "203.0.113.10", "--port", "80"]);
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("DENY"), "{stdout}");
    assert!(
        stdout.contains("has an HTTP match and this flow carries no HTTP request (give one: `--http-method`"),
        "{stdout}"
    );
}

#[test]
fn explain_checks_the_server_name_against_the_rules_domains() {
    let allowed = explain(
        "tls",
        &[
            "--to",
            "api.partner.example",
            "--resolve",
            "api.partner.example=203.0.113.10",
            "--port",
            "443",
            "--server-name",
            "api.partner.example",
            "-o",
            "json",
        ],
    );
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let json: serde_json::Value = serde_json::from_slice(&allowed.stdout).unwrap();
    assert_eq!(json["verdict"], "allow");
    assert_eq!(json["serverName"], "api.partner.example");
    assert_eq!(json["egress"]["rule"]["l7"]["l7"], "tls_matched");
    assert_eq!(json["egress"]["rule"]["l7"]["by_domain"], "api.partner.example");

    // Another site on the same address: the name resolved is allowed, the hello names another.
    let denied = explain(
        "tls-other",
        &[
            "--to",
            "api.partner.example",
            "--resolve",
            "api.partner.example=203.0.113.10",
            "--port",
            "443",
            "--server-name",
            "video.cdn.example",
        ],
    );
    let stdout = text(&denied.stdout);
    assert!(
        stdout.starts_with("DENY prod/web -> api.partner.example (203.0.113.10) TCP port 443, TLS server name video.cdn.example\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("egress rule 1: its TLS match allows only server names among its domains (api.partner.example), not video.cdn.example; the rule does not match"),
        "{stdout}"
    );
}

#[test]
fn flow_lines_carry_an_http_request_or_a_server_name() {
    let path = manifests("flows");
    let flows = path.with_file_name("flows.jsonl");
    std::fs::write(
        &flows,
        concat!(
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 80, "http": {"method": "GET", "path": "/v1/x", "host": "api.partner.example"}}"#,
            "\n",
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 80, "http": {"method": "DELETE", "path": "/v1/x"}}"#,
            "\n",
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 443, "domain": "api.partner.example", "serverName": "api.partner.example"}"#,
            "\n",
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 443, "domain": "api.partner.example", "serverName": "other.example"}"#,
            "\n"
        ),
    )
    .unwrap();
    let arguments = [
        "explain",
        "-f",
        path.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
    ];
    let output = sluice(&[&arguments[..], &["-o", "jsonl"]].concat());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let verdicts: Vec<&str> = lines
        .iter()
        .map(|line| line["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["allow", "deny", "allow", "deny"]);
    assert_eq!(lines[0]["rule"]["l7"]["by_method"], "GET");
    assert_eq!(lines[2]["rule"]["l7"]["server_name"], "api.partner.example");

    let output = sluice(&arguments);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("ALLOW prod/web -> 203.0.113.10 TCP port 80, HTTP GET /v1/x to api.partner.example: allowed by GlobalNetworkPolicy partner-egress, egress rule 0, in tier default; the HTTP request GET /v1/x to api.partner.example matches its HTTP match (method GET, path prefix /v1/)"),
        "{stdout}"
    );

    // Bad requests are refused by line; nothing is evaluated.
    std::fs::write(
        &flows,
        concat!(
            r#"{"from": "prod/web", "to": "203.0.113.10", "protocol": "UDP", "port": 80, "serverName": "a.example"}"#,
            "\n",
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 80, "http": {"method": "GET", "path": "v1"}}"#,
            "\n",
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 80, "http": {"method": "GET", "path": "/"}, "serverName": "a.example"}"#,
            "\n",
            r#"{"from": "prod/web", "to": "203.0.113.10", "port": 80, "http": {"verb": "GET"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let output = sluice(&arguments);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    for expected in [
        "flows.jsonl:1: an HTTP request or a TLS server name travels over TCP, and this flow is UDP",
        "flows.jsonl:2: the HTTP path `v1` does not start with `/`",
        "flows.jsonl:3: give \"http\" or \"serverName\", not both",
        "flows.jsonl:4: unknown field `verb`",
    ] {
        assert!(stderr.contains(expected), "`{expected}` not in:\n{stderr}");
    }
}

#[test]
fn server_name_and_http_flags_are_one_or_the_other() {
    let output = explain(
        "conflict",
        &[
            "--to",
            "203.0.113.10",
            "--port",
            "443",
            "--server-name",
            "a.example",
            "--http-method",
            "GET",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("cannot be used with"),
        "{}",
        text(&output.stderr)
    );
}
