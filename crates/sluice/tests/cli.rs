//! The `sluice` binary run as a user runs it: arguments in, text and exit status out.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn sluice(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(arguments)
        .output()
        .expect("the sluice binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temporary_file(name: &str, text: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("sluice-cli-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn validate_accepts_the_examples() {
    let output = sluice(&["validate", "-f", examples().to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("resources valid"));
}

#[test]
fn validate_reports_every_error_with_place_and_field_and_fails() {
    let path = temporary_file(
        "bad.yaml",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: bad\n  namespace: prod\nspec:\n  egress:\n    - action: Allow\n      destination:\n        nets: [10.0.0.0/33]\n---\napiVersion: projectcalico.org/v3\nkind: Gadget\nmetadata: {name: x}\n",
    );
    let output = sluice(&["validate", "-f", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let errors = stderr(&output);
    let file = path.display().to_string();
    assert!(errors.contains(&format!("{file}:10:")), "{errors}");
    assert!(errors.contains("spec.egress[0].destination.nets[0]"), "{errors}");
    assert!(errors.contains("10.0.0.0/33"), "{errors}");
    assert!(errors.contains(&format!("{file}:13:")), "{errors}");
    assert!(errors.contains("unknown kind `Gadget`"), "{errors}");
    assert!(errors.contains("2 errors found"), "{errors}");
}

#[test]
fn explain_names_the_deciding_rule_and_tier() {
    let output = sluice(&[
        "explain",
        "-f",
        examples().to_str().unwrap(),
        "--from",
        "prod/web",
        "--to",
        "198.51.100.70",
        "--protocol",
        "TCP",
        "--port",
        "443",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("DENY prod/web -> 198.51.100.70"), "{text}");
    assert!(
        text.contains("denied by GlobalNetworkPolicy block-threat-feed, egress rule 1, in tier security"),
        "{text}"
    );
    assert!(text.contains("Log (evaluation continues)"), "{text}");
}

#[test]
fn explain_json_carries_both_directions() {
    let output = sluice(&[
        "explain",
        "-f",
        examples().to_str().unwrap(),
        "--from",
        "prod/web",
        "--to",
        "prod/payments",
        "--port",
        "9090",
        "-o",
        "json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(value["verdict"], "allow");
    assert_eq!(value["egress"]["rule"]["name"], "web-to-partners");
    assert_eq!(value["egress"]["rule"]["rule_index"], 1);
    assert_eq!(value["ingress"]["rule"]["kind"], "KubernetesNetworkPolicy");
    assert_eq!(value["ingress"]["rule"]["name"], "payments-ingress");
}

fn staged_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/staged-default-deny.yaml")
}

/// The examples with the staged default deny for `monitoring` and the staged removal of
/// `payments-ingress`: each verdict is shown with, beside it, the verdict they would give.
#[test]
fn explain_shows_the_staged_verdict_beside_the_enforced_one() {
    let arguments = |output: &'static str| {
        sluice(&[
            "explain",
            "-f",
            examples().to_str().unwrap(),
            staged_example().to_str().unwrap(),
            "--from",
            "monitoring/prometheus",
            "--to",
            "prod/payments",
            "--port",
            "9090",
            "-o",
            output,
        ])
    };
    let output = arguments("text");
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "ALLOW monitoring/prometheus -> prod/payments TCP port 9090"
    );
    assert_eq!(
        lines[1],
        "STAGED DENY with every staged policy applied (enforced: ALLOW)"
    );
    // The enforced trace, then the staged one, each with what decided.
    let (enforced, staged) = text
        .split_once("\nwith every staged policy applied: DENY\n")
        .unwrap_or_else(|| panic!("no staged trace in:\n{text}"));
    assert!(
        enforced.contains(
            "ingress of prod/payments: allowed by Kubernetes NetworkPolicy prod/payments-ingress, ingress rule 1, in tier default"
        ),
        "{text}"
    );
    assert!(
        staged.contains("egress of monitoring/prometheus: denied by the end of tier default"),
        "{text}"
    );
    assert!(
        staged.contains("StagedNetworkPolicy monitoring/default-deny-egress: no rule matched"),
        "{text}"
    );
    assert!(
        staged.contains("ingress of prod/payments: allowed: no policy selects prod/payments for ingress"),
        "{text}"
    );

    let output = arguments("json");
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    // The enforced answer is where it always was.
    assert_eq!(value["verdict"], "allow");
    assert_eq!(value["ingress"]["rule"]["name"], "payments-ingress");
    assert_eq!(value["staged"]["verdict"], "deny");
    assert_eq!(value["staged"]["egress"]["allowed"], false);
    assert_eq!(value["staged"]["ingress"]["rule"], serde_json::Value::Null);
    assert_eq!(
        value["staged"]["pending_policies"][0],
        "default|StagedNetworkPolicy|monitoring/default-deny-egress|-1|deny"
    );
    assert_eq!(value["families"][0]["staged"]["verdict"], "deny");

    // DNS is allowed before the default tier, in tier platform: with the staged policies
    // applied, an untouched policy decides and keeps its own kind.
    let output = sluice(&[
        "explain",
        "-f",
        examples().to_str().unwrap(),
        staged_example().to_str().unwrap(),
        "--from",
        "monitoring/prometheus",
        "--to",
        "kube-system/coredns",
        "--protocol",
        "UDP",
        "--port",
        "53",
        "-o",
        "json",
    ]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(value["staged"]["verdict"], "allow", "{value:#}");
    let rule = &value["staged"]["egress"]["rule"];
    assert_eq!(rule["kind"], "GlobalNetworkPolicy", "{value:#}");
    assert_eq!(rule["name"], "allow-cluster-dns");
    assert_eq!(rule["tier"], "platform");
}

#[test]
fn batch_explain_adds_the_staged_verdict_to_each_line() {
    let flows = temporary_file(
        "staged-flows.jsonl",
        "{\"from\": \"monitoring/prometheus\", \"to\": \"prod/payments\", \"protocol\": \"TCP\", \"port\": 9090}\n{\"from\": \"prod/web\", \"to\": \"prod/payments\", \"protocol\": \"TCP\", \"port\": 9090}\n",
    );
    let run = |output: &str| {
        sluice(&[
            "explain",
            "-f",
            examples().to_str().unwrap(),
            staged_example().to_str().unwrap(),
            "--flows",
            flows.to_str().unwrap(),
            "-o",
            output,
        ])
    };
    let output = run("text");
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("ALLOW monitoring/prometheus"), "{text}");
    assert!(
        lines[0].contains(" | staged DENY: denied by the end of tier default"),
        "{text}"
    );
    assert!(lines[1].contains(" | staged ALLOW: "), "{text}");
    let output = run("jsonl");
    let values: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|value| {
            (
                value["verdict"].as_str().unwrap(),
                value["staged"]["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(pairs, [("allow", "deny"), ("allow", "allow")]);
    // Without staged policies the same flows carry no staged verdict.
    let output = sluice(&[
        "explain",
        "-f",
        examples().to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "-o",
        "jsonl",
    ]);
    assert!(!stdout(&output).contains("staged"), "{}", stdout(&output));
}

#[test]
fn validate_accepts_the_staged_kinds() {
    let output = sluice(&[
        "validate",
        "-f",
        examples().to_str().unwrap(),
        staged_example().to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    let bad = temporary_file(
        "staged-bad.yaml",
        "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  stagedAction: Delete\n  egress: [{action: Allow}]\n",
    );
    let output = sluice(&["validate", "-f", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let errors = stderr(&output);
    assert!(errors.contains(&format!("{}:6:3", bad.display())), "{errors}");
    assert!(errors.contains("spec.egress"), "{errors}");
    assert!(errors.contains("a staged Delete"), "{errors}");
}

#[test]
fn batch_explain_keeps_order_and_adds_verdicts() {
    let flows = examples().join("flows.jsonl");
    let output = sluice(&[
        "explain",
        "-f",
        examples().to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "-o",
        "jsonl",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let inputs: Vec<serde_json::Value> = std::fs::read_to_string(&flows)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let outputs: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(inputs.len(), outputs.len());
    for (input, output) in inputs.iter().zip(&outputs) {
        assert_eq!(input["from"], output["from"]);
        assert_eq!(input["to"], output["to"]);
        assert!(
            output["verdict"] == "allow" || output["verdict"] == "deny",
            "{output}"
        );
    }
    let verdicts: Vec<&str> = outputs
        .iter()
        .map(|output| output["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        [
            "allow", "deny", "allow", "deny", "allow", "allow", "deny", "allow", "deny", "allow", "allow"
        ]
    );
}

#[test]
fn batch_explain_rejects_a_bad_line_by_number_and_prints_nothing() {
    let flows = temporary_file(
        "flows.jsonl",
        "{\"from\": \"prod/web\", \"to\": \"10.0.0.1\", \"protocol\": \"TCP\", \"port\": 80}\n{\"from\": \"prod/nope\", \"to\": \"10.0.0.1\", \"port\": 80}\n",
    );
    let output = sluice(&[
        "explain",
        "-f",
        examples().to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "-o",
        "jsonl",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    let errors = stderr(&output);
    assert!(errors.contains("flows.jsonl:2: no pod prod/nope"), "{errors}");
}

#[test]
fn connectivity_csv_covers_every_pair_and_port() {
    let output = sluice(&[
        "connectivity",
        "-f",
        examples().to_str().unwrap(),
        "--ports",
        "tcp/443,udp/53",
        "-o",
        "csv",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "port,from,to,to_address,verdict");
    // 5 pods × (5 pods + 5 external ranges) × 2 ports.
    assert_eq!(lines.len() - 1, 5 * 10 * 2);
    assert!(
        lines.contains(&"tcp/443,prod/web,203.0.113.0/24,203.0.113.1,allow"),
        "{text}"
    );
    assert!(
        lines.contains(&"tcp/443,prod/web,198.51.100.64/26,198.51.100.65,deny"),
        "{text}"
    );
    assert!(
        lines.contains(&"udp/53,staging/web,kube-system/coredns,10.30.0.2,allow"),
        "{text}"
    );
}

#[test]
fn connectivity_text_is_a_readable_matrix() {
    let output = sluice(&[
        "connectivity",
        "-f",
        examples().to_str().unwrap(),
        "--ports",
        "tcp/9090",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("tcp/9090: rows send, columns receive"), "{text}");
    assert!(text.contains("columns:"), "{text}");
    assert!(text.contains("203.0.113.0/24 (probed at 203.0.113.1)"), "{text}");
}

#[test]
fn a_tcp_flow_without_a_port_is_refused() {
    let output = sluice(&[
        "explain",
        "-f",
        examples().to_str().unwrap(),
        "--from",
        "prod/web",
        "--to",
        "10.0.0.1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("needs a port"));
}

fn sluice_with_input(arguments: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sluice binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A writer thread, so a command that fails early cannot block the test on a full pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

/// Every manifest of the examples directory, as one stream of YAML documents.
fn examples_as_one_stream() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

#[test]
fn validate_explain_and_connectivity_read_standard_input_for_dash() {
    let manifests = examples_as_one_stream();
    let from_files = sluice(&["validate", "-f", examples().to_str().unwrap()]);
    let output = sluice_with_input(&["validate", "-f", "-"], manifests.as_bytes());
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), stdout(&from_files));

    let flow = ["--from", "prod/web", "--to", "198.51.100.70", "--port", "443"];
    let mut arguments = vec!["explain", "-f", "-"];
    arguments.extend(flow);
    let output = sluice_with_input(&arguments, manifests.as_bytes());
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("DENY prod/web -> 198.51.100.70"),
        "{}",
        stdout(&output)
    );

    let output = sluice_with_input(
        &["connectivity", "-f", "-", "--ports", "tcp/443", "-o", "csv"],
        manifests.as_bytes(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("tcp/443,prod/web,198.51.100.64/26,198.51.100.65,deny"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn an_error_in_a_huge_one_line_document_shows_a_short_snippet_at_the_right_column() {
    let nets = vec!["10.0.0.0/8"; 320_000];
    let document = format!(
        "{{\"apiVersion\": \"projectcalico.org/v3\", \"kind\": \"GlobalNetworkSet\", \"metadata\": {{\"name\": \"big\"}}, \"spec\": {{\"nets\": {}}}}}",
        serde_json::to_string(&nets)
            .unwrap()
            .replace("]", ", \"10.0.0.0/33\"]")
    );
    assert!(document.len() > 4_000_000 && !document.contains('\n'));
    let column = document.find("\"10.0.0.0/33\"").unwrap() + 1;
    let path = temporary_file("big.json", &document);
    let output = sluice(&["validate", "-f", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let errors = stderr(&output);
    assert!(errors.len() < 2_000, "{} bytes of stderr", errors.len());
    assert!(
        errors.contains(&format!("{}:1:{column}", path.display())),
        "{errors}"
    );
    let lines: Vec<&str> = errors.lines().collect();
    let snippet = lines
        .iter()
        .position(|line| line.starts_with("1 | "))
        .unwrap_or_else(|| panic!("no snippet: {errors}"));
    let shown: Vec<char> = lines[snippet]["1 | ".len()..].chars().collect();
    let caret = lines[snippet + 1]
        .strip_prefix("  | ")
        .and_then(|padding| padding.strip_suffix('^'))
        .unwrap_or_else(|| panic!("no caret: {errors}"))
        .chars()
        .count();
    assert!(shown[0] == '…', "{errors}");
    let pointed: String = shown[caret..].iter().collect();
    assert!(pointed.starts_with("\"10.0.0.0/33\"]}}"), "{errors}");
}
