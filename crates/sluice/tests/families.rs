//! Dual-stack pods (issue 8): the IP families of a pod-to-pod flow are the families both pods
//! have, and `explain` and `connectivity` agree on them in both directions: two dual-stack
//! pods get a verdict per family, a dual-stack and a single-family pod the family they share,
//! and an IPv4-only and an IPv6-only pod a "no common IP family" verdict (not an error, not
//! ALLOW, not a silent DENY).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// `fam/dual` admits port 80 from IPv6 sources only, so its IPv4 and IPv6 verdicts differ.
const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: fam}
---
apiVersion: v1
kind: Pod
metadata: {name: dual, namespace: fam, labels: {app: dual}}
status: {podIPs: [{ip: 10.1.0.1}, {ip: "fd00:1::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: dual2, namespace: fam, labels: {app: dual2}}
status: {podIPs: [{ip: "fd00:1::4"}, {ip: 10.1.0.4}]}
---
apiVersion: v1
kind: Pod
metadata: {name: six, namespace: fam, labels: {app: six}}
status: {podIPs: [{ip: "fd00:1::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: four, namespace: fam, labels: {app: four}}
status: {podIP: 10.1.0.3}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: dual-in, namespace: fam}
spec:
  selector: app == 'dual'
  types: [Ingress]
  ingress:
    - {action: Allow, protocol: TCP, source: {nets: ["fd00:1::/64"]}, destination: {ports: [80]}}
"#;

/// The manifest, written once per test process (tests run in parallel and read it).
fn manifest() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let directory = std::env::temp_dir().join(format!("sluice-families-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("families.yaml");
        std::fs::write(&path, MANIFEST).unwrap();
        path
    })
    .clone()
}

fn sluice(arguments: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(arguments)
        .output()
        .expect("the sluice binary runs");
    assert!(
        output.status.success(),
        "{arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn explain_text(from: &str, to: &str) -> String {
    let path = manifest();
    let output = sluice(&[
        "explain",
        "-f",
        path.to_str().unwrap(),
        "--from",
        from,
        "--to",
        to,
        "--port",
        "80",
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn explain_json(from: &str, to: &str) -> Value {
    let path = manifest();
    let output = sluice(&[
        "explain",
        "-f",
        path.to_str().unwrap(),
        "--from",
        from,
        "--to",
        to,
        "--port",
        "80",
        "-o",
        "json",
    ]);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Per family: (to_address, verdict) of one explain answer.
fn family_verdicts(value: &Value) -> Vec<(String, String)> {
    value["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|family| {
            (
                family["to_address"].as_str().unwrap().to_string(),
                family["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn two_dual_stack_pods_get_a_verdict_per_family_when_they_differ() {
    let text = explain_text("fam/dual2", "fam/dual");
    assert!(
        text.starts_with("MIXED fam/dual2 -> fam/dual TCP port 80: IPv4 DENY, IPv6 ALLOW"),
        "{text}"
    );
    assert!(text.contains("over IPv4 (10.1.0.4 -> 10.1.0.1): DENY"), "{text}");
    assert!(
        text.contains("over IPv6 (fd00:1::4 -> fd00:1::1): ALLOW"),
        "{text}"
    );
    let value = explain_json("fam/dual2", "fam/dual");
    assert_eq!(value["verdict"], "mixed");
    assert_eq!(
        family_verdicts(&value),
        [
            ("10.1.0.1".to_string(), "deny".to_string()),
            ("fd00:1::1".to_string(), "allow".to_string())
        ]
    );
}

#[test]
fn two_dual_stack_pods_say_when_their_families_agree() {
    let text = explain_text("fam/dual", "fam/dual2");
    assert!(
        text.starts_with("ALLOW fam/dual -> fam/dual2 TCP port 80 (IPv4 and IPv6 agree)"),
        "{text}"
    );
    let value = explain_json("fam/dual", "fam/dual2");
    assert_eq!(value["verdict"], "allow");
    assert_eq!(family_verdicts(&value).len(), 2);
}

#[test]
fn a_dual_stack_and_a_single_family_pod_use_the_family_they_share_both_ways() {
    // IPv6 only: allowed into fam/dual (the rule admits IPv6 sources), and out of it.
    for (from, to) in [("fam/six", "fam/dual"), ("fam/dual", "fam/six")] {
        let text = explain_text(from, to);
        assert!(
            text.starts_with(&format!(
                "ALLOW {from} -> {to} TCP port 80 (over IPv6, the only IP family both have)"
            )),
            "{text}"
        );
        let value = explain_json(from, to);
        assert_eq!(value["verdict"], "allow");
        assert_eq!(value["family"], "IPv6");
        assert_eq!(value["families"].as_array().unwrap().len(), 1);
    }
    // IPv4 only: denied into fam/dual, allowed out of it.
    let into = explain_json("fam/four", "fam/dual");
    assert_eq!(into["verdict"], "deny");
    assert_eq!(
        family_verdicts(&into),
        [("10.1.0.1".to_string(), "deny".to_string())]
    );
    let out_of = explain_json("fam/dual", "fam/four");
    assert_eq!(out_of["verdict"], "allow");
    assert_eq!(out_of["family"], "IPv4");
}

#[test]
fn an_ipv4_only_and_an_ipv6_only_pod_share_no_family_both_ways() {
    for (from, to) in [
        ("fam/four", "fam/six"),
        ("fam/six", "fam/four"),
        ("fam/four", "fd00:1::2"),
    ] {
        let text = explain_text(from, to);
        assert!(
            text.starts_with(&format!("NO COMMON IP FAMILY {from} -> {to} TCP port 80")),
            "{text}"
        );
        assert!(text.contains("they share no IP family"), "{text}");
        let value = explain_json(from, to);
        assert_eq!(value["verdict"], "no-common-family");
        assert!(value["families"].as_array().unwrap().is_empty());
    }
}

#[test]
fn batch_explain_gives_each_flow_its_families() {
    let path = manifest();
    let flows = path.with_file_name("flows.jsonl");
    std::fs::write(
        &flows,
        "{\"from\": \"fam/dual2\", \"to\": \"fam/dual\", \"port\": 80}\n{\"from\": \"fam/four\", \"to\": \"fam/six\", \"port\": 80}\n",
    )
    .unwrap();
    let output = sluice(&[
        "explain",
        "-f",
        path.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "-o",
        "csv",
    ]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with(",rule_index,family"), "{text}");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[1].starts_with("fam/dual2,fam/dual,,TCP,80,deny,") && lines[1].ends_with(",IPv4"));
    assert!(lines[2].starts_with("fam/dual2,fam/dual,,TCP,80,allow,") && lines[2].ends_with(",IPv6"));
    assert!(
        lines[3].starts_with("fam/four,fam/six,,TCP,80,no-common-family,"),
        "{text}"
    );
}

/// Every ordered pair of pods: connectivity's rows (one per shared family) are explain's.
#[test]
fn connectivity_agrees_with_explain_for_every_pair() {
    let path = manifest();
    let output = sluice(&[
        "connectivity",
        "-f",
        path.to_str().unwrap(),
        "--ports",
        "tcp/80",
        "-o",
        "jsonl",
    ]);
    let mut matrix: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        matrix
            .entry((
                row["from"].as_str().unwrap().to_string(),
                row["to"].as_str().unwrap().to_string(),
            ))
            .or_default()
            .push((
                row["to_address"].as_str().unwrap().to_string(),
                row["verdict"].as_str().unwrap().to_string(),
            ));
    }
    let pods = ["fam/dual", "fam/dual2", "fam/four", "fam/six"];
    assert_eq!(matrix.len(), pods.len() * pods.len());
    for from in pods {
        for to in pods.iter().filter(|to| **to != from) {
            let rows = &matrix[&(from.to_string(), to.to_string())];
            let explained = explain_json(from, to);
            if explained["verdict"] == "no-common-family" {
                assert_eq!(rows.len(), 1, "{from} -> {to}: {rows:?}");
                assert_eq!(rows[0].1, "no-common-family", "{from} -> {to}");
            } else {
                assert_eq!(rows, &family_verdicts(&explained), "{from} -> {to}");
            }
        }
    }

    let text = sluice(&["connectivity", "-f", path.to_str().unwrap(), "--ports", "tcp/80"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    // Columns in name order: dual, dual2, four, six.
    assert!(text.contains("fam/dual2  6 . . ."), "{text}");
    assert!(text.contains("fam/four   X . . -"), "{text}");
    assert!(text.contains("fam/six    . . - ."), "{text}");
    assert!(text.contains("4 or 6 allowed over IPv4 or IPv6 only"), "{text}");
    assert!(text.contains("- no common IP family"), "{text}");
}
