//! `sluice get dnscache` and `sluice explain --to NAME` reading what an agent learned: the
//! record the agent publishes under `/sluice-status/dnscache/<node>`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_agent::dns::{DnsCacheRecord, EndpointLearned, LearnedAddress, dns_cache_key};
use sluice_store::{Condition, Operation};

const MANIFESTS: &str = r#"
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
status: {podIP: 10.0.1.2}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: partner-egress}
spec:
  selector: has(app)
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination:
        domains: [api.partner.example]
        ports: [443]
"#;

struct Datastore {
    directory: PathBuf,
}

impl Datastore {
    fn new(test: &str) -> Datastore {
        let directory = std::env::temp_dir().join(format!("sluice-dnscache-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join("policy.yaml"), MANIFESTS).unwrap();
        let datastore = Datastore { directory };
        let applied = datastore.sluice(&[
            "apply",
            "-f",
            datastore.directory.join("policy.yaml").to_str().unwrap(),
        ]);
        assert!(applied.status.success(), "{}", text(&applied.stderr));
        datastore
    }

    fn address(&self) -> String {
        format!("file://{}", self.directory.join("store.db").display())
    }

    fn sluice(&self, arguments: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(arguments)
            .args(["--datastore", &self.address()])
            .output()
            .expect("the sluice binary runs")
    }

    /// Publishes what node-1's agent would: prod/web learned api.partner.example.
    fn publish(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let learned = |address: &str, expires: u64| LearnedAddress {
            address: address.parse().unwrap(),
            expires,
        };
        let record = DnsCacheRecord {
            node: "node-1".into(),
            updated: SystemTime::now(),
            endpoints: vec![EndpointLearned {
                endpoint: "prod/web".into(),
                names: BTreeMap::from([(
                    "api.partner.example".to_string(),
                    vec![
                        learned("203.0.113.10", now + 30),
                        learned("203.0.113.99", now - 5),
                    ],
                )]),
            }],
        };
        let store = sluice_store::open_or_create(&self.address()).unwrap();
        store
            .commit(&[Operation::Put {
                key: dns_cache_key("node-1"),
                value: serde_json::to_vec(&record).unwrap(),
                condition: Condition::Any,
            }])
            .unwrap();
    }
}

impl Drop for Datastore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn get_dnscache_shows_what_each_endpoint_learned_with_expiry() {
    let datastore = Datastore::new("get");
    let missing = datastore.sluice(&["get", "dnscache", "--node", "node-1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("no DNS cache published for node node-1"),
        "{}",
        text(&missing.stderr)
    );

    datastore.publish();
    let table = datastore.sluice(&["get", "dnscache", "--node", "node-1"]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let lines: Vec<String> = text(&table.stdout)
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines[0], "NODE ENDPOINT NAME ADDRESS EXPIRES IN");
    assert!(
        lines[1].starts_with("node-1 prod/web api.partner.example 203.0.113.10 "),
        "{lines:?}"
    );
    let json = datastore.sluice(&["get", "dnscache", "node-1", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value[0]["node"], "node-1");
    assert_eq!(
        value[0]["endpoints"][0]["names"]["api.partner.example"][0]["address"],
        "203.0.113.10"
    );
}

#[test]
fn explain_reads_the_sending_pod_s_learned_addresses_from_its_node() {
    let datastore = Datastore::new("explain");
    datastore.publish();
    let explain = |from: &str, name: &str| {
        datastore.sluice(&[
            "explain", "--from", from, "--to", name, "--port", "443", "-o", "json",
        ])
    };
    let allowed = explain("prod/web", "api.partner.example");
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let value: serde_json::Value = serde_json::from_slice(&allowed.stdout).unwrap();
    // Only the address still valid, and the rule's pattern named.
    assert_eq!(value["to"], "203.0.113.10", "{value}");
    assert_eq!(value["domain"], "api.partner.example");
    assert_eq!(value["egress"]["rule"]["domain_pattern"], "api.partner.example");
    // Another pod learned nothing: its lookups are its own.
    let other = explain("prod/api", "api.partner.example");
    assert_eq!(other.status.code(), Some(1));
    assert!(
        text(&other.stderr)
            .contains("node node-1's agent has no address of `api.partner.example` learned for prod/api"),
        "{}",
        text(&other.stderr)
    );
}
