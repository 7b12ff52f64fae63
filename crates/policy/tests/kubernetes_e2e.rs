//! The Kubernetes upstream NetworkPolicy e2e scenarios (namespaces x, y, z; pods a, b, c;
//! ports 80 and 81 on TCP, UDP and SCTP), transcribed as data in `tests/kubernetes_e2e/`
//! (see its README). Each scenario's policies are compiled and every (from, to) pair of the
//! 9×9 matrix is evaluated on the IR and compared with upstream's expected truth table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;
use sluice_api::document::parse_documents;
use sluice_policy::{Dataplane, Flow};

const PODS: [&str; 9] = ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"];

fn pod_address(pod: &str) -> String {
    let (namespace, name) = pod.split_once('/').unwrap();
    let network = match namespace {
        "x" => 1,
        "y" => 2,
        _ => 3,
    };
    let host = match name {
        "a" => 1,
        "b" => 2,
        _ => 3,
    };
    format!("10.0.{network}.{host}")
}

/// The model's namespaces and pods as manifests, with the scenario's extra labels.
fn model(namespace_labels: &Value, pod_labels: &Value) -> String {
    let mut text = String::new();
    for namespace in ["x", "y", "z"] {
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        if let Some(extra) = namespace_labels.get(namespace).and_then(Value::as_object) {
            for (key, value) in extra {
                labels.insert(key.clone(), value.as_str().unwrap().to_string());
            }
        }
        writeln!(
            text,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels: {}\n---",
            serde_json::to_string(&labels).unwrap()
        )
        .unwrap();
    }
    for pod in PODS {
        let (namespace, name) = pod.split_once('/').unwrap();
        let mut labels: BTreeMap<String, String> = BTreeMap::from([("pod".to_string(), name.to_string())]);
        if let Some(extra) = pod_labels.get(pod).and_then(Value::as_object) {
            for (key, value) in extra {
                labels.insert(key.clone(), value.as_str().unwrap().to_string());
            }
        }
        let mut ports = Vec::new();
        for port in [80, 81] {
            for protocol in ["TCP", "UDP", "SCTP"] {
                ports.push(format!(
                    "{{name: serve-{port}-{}, containerPort: {port}, protocol: {protocol}}}",
                    protocol.to_lowercase()
                ));
            }
        }
        writeln!(
            text,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {}\nspec:\n  nodeName: node-1\n  containers:\n    - name: server\n      ports: [{}]\nstatus:\n  podIP: {}\n---",
            serde_json::to_string(&labels).unwrap(),
            ports.join(", "),
            pod_address(pod)
        )
        .unwrap();
    }
    text
}

fn matrix(dataplane: &Dataplane, protocol: u8, port: u16) -> Vec<Vec<bool>> {
    PODS.iter()
        .map(|from| {
            PODS.iter()
                .map(|to| {
                    dataplane
                        .evaluate(&Flow {
                            source: pod_address(from).parse().unwrap(),
                            destination: pod_address(to).parse().unwrap(),
                            protocol,
                            source_port: None,
                            destination_port: Some(port),
                            icmp_type: None,
                            icmp_code: None,
                        })
                        .allowed
                })
                .collect()
        })
        .collect()
}

fn render(matrix: &[Vec<bool>]) -> String {
    let mut text = format!("{:5}{}\n", "", PODS.join(" "));
    for (from, row) in PODS.iter().zip(matrix) {
        let cells: Vec<&str> = row
            .iter()
            .map(|allowed| if *allowed { " . " } else { " X " })
            .collect();
        writeln!(text, "{from:5}{}", cells.join(" ")).unwrap();
    }
    text
}

fn run_scenario(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let scenario = &parse_documents(&text).unwrap()[0].value;
    let policies = scenario["policies"].as_str().unwrap_or_default();
    let manifests = format!(
        "{}\n{}",
        model(&scenario["namespaceLabels"], &scenario["podLabels"]),
        policies
    );
    let resources = sluice_api::load_str(&path.display().to_string(), &manifests)
        .map_err(|errors| format!("{}: does not load:\n{errors}", path.display()))?;
    let dataplane = sluice_policy::compile(&resources);
    let mut checked = 0;
    for probe in scenario["probes"].as_array().unwrap() {
        let protocol = match probe["protocol"].as_str().unwrap() {
            "TCP" => 6,
            "UDP" => 17,
            "SCTP" => 132,
            other => panic!("unknown protocol {other}"),
        };
        let port = u16::try_from(probe["port"].as_u64().unwrap()).unwrap();
        let expected: Vec<Vec<bool>> = probe["expect"]
            .as_str()
            .unwrap()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.split_whitespace().map(|cell| cell == ".").collect())
            .collect();
        assert_eq!(
            expected.len(),
            9,
            "{}: the expected matrix needs 9 rows",
            path.display()
        );
        let actual = matrix(&dataplane, protocol, port);
        if actual != expected {
            return Err(format!(
                "{} ({} port {port}):\nexpected\n{}actual\n{}",
                path.display(),
                probe["protocol"],
                render(&expected),
                render(&actual)
            ));
        }
        checked += 81;
    }
    Ok(checked)
}

#[test]
fn kubernetes_upstream_network_policy_scenarios() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubernetes_e2e");
    let mut paths: Vec<_> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 50,
        "expected the transcribed scenarios, found {}",
        paths.len()
    );
    let mut failures = Vec::new();
    let mut cells = 0;
    for path in &paths {
        match run_scenario(path) {
            Ok(checked) => cells += checked,
            Err(failure) => failures.push(failure),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios disagree with upstream:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
    assert!(cells >= 50 * 81);
}
