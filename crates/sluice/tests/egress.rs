//! The operator's view of egress on a datastore file: `sluice get egress` reading the record an
//! agent publishes under `/sluice-status/egress/<node>` (written here as an agent writes it),
//! and `sluice ipam show --by namespace`, the perimeter firewall's view computed from the
//! stored resources.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use sluice_agent::gateway::record::{ClientRecord, EgressRecord, GatewayRecord, RouteRecord, egress_key};
use sluice_store::{Condition, Operation};

const GATEWAYS: &str = "egress.projectcalico.org/selector: \"egress-code == 'red'\", egress.projectcalico.org/namespaceSelector: \"projectcalico.org/name == 'egress'\"";

/// Namespaces `routable` (a routable pool), `natted` (natOutgoing), `through` (two gateways by
/// annotation), `split` (a policy sending 10.0.0.0/8 the normal way and the rest through one
/// gateway) and `broken` (a policy that does not exist); gateways in `egress`.
fn manifests() -> String {
    let pod = |namespace: &str, name: &str, node: &str, address: &str, labels: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}\nspec: {{nodeName: {node}}}\nstatus: {{podIP: {address}}}\n"
        )
    };
    let namespace = |name: &str, annotations: &str| {
        format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\n"
        )
    };
    let pool = |name: &str, cidr: &str, nat_outgoing: bool| {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}, natOutgoing: {nat_outgoing}}}\n"
        )
    };
    let node = |name: &str, address: &str| {
        format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus: {{addresses: [{{type: InternalIP, address: {address}}}]}}\n"
        )
    };
    [
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {egressIPSupport: EnabledPerNamespace}\n".to_string(),
        node("node-1", "192.168.0.1"),
        node("node-2", "192.168.0.2"),
        pool("routable-pool", "10.1.0.0/16", false),
        pool("nat-pool", "10.2.0.0/16", true),
        pool("gateway-pool", "10.9.0.0/16", false),
        "---\napiVersion: projectcalico.org/v3\nkind: EgressGatewayPolicy\nmetadata: {name: split}\nspec:\n  rules:\n  - destination: {cidr: 10.0.0.0/8}\n  - gateway: {selector: \"egress-code == 'red'\", namespaceSelector: \"projectcalico.org/name == 'egress'\", maxNextHops: 1}\n".to_string(),
        namespace("routable", ""),
        namespace("natted", ""),
        namespace("through", GATEWAYS),
        namespace("split", "egress.projectcalico.org/egressGatewayPolicy: split"),
        namespace("broken", "egress.projectcalico.org/egressGatewayPolicy: missing"),
        namespace("egress", ""),
        pod("routable", "r1", "node-1", "10.1.0.1", ""),
        pod("natted", "n1", "node-2", "10.2.0.1", ""),
        pod("through", "t1", "node-1", "10.2.0.10", ""),
        pod("split", "s1", "node-1", "10.2.0.20", ""),
        pod("broken", "b1", "node-1", "10.2.0.30", ""),
        pod("egress", "gw-a", "node-1", "10.9.0.1", "egress-code: red"),
        pod("egress", "gw-b", "node-2", "10.9.0.2", "egress-code: red"),
    ]
    .concat()
}

struct Datastore {
    directory: PathBuf,
}

impl Datastore {
    fn new(test: &str) -> Datastore {
        let directory = std::env::temp_dir().join(format!("sluice-egress-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join("cluster.yaml"), manifests()).unwrap();
        let datastore = Datastore { directory };
        let applied = datastore.sluice(&[
            "apply",
            "-f",
            datastore.directory.join("cluster.yaml").to_str().unwrap(),
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

    /// Writes a record as an agent does: JSON under the node's key.
    fn publish(&self, record: &EgressRecord) {
        let store = sluice_store::open(&self.address()).unwrap();
        store
            .commit(&[Operation::Put {
                key: egress_key(&record.node),
                value: serde_json::to_vec(record).unwrap(),
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

/// Standard output's lines with runs of spaces made one, so columns compare as words.
/// The output's lines with runs of spaces as one. Ages are read back to the whole seconds the
/// records were written with (`40s`, `5s`): the command may run a few seconds later on a busy
/// machine.
fn words(output: &Output) -> Vec<String> {
    assert!(output.status.success(), "{}", text(&output.stderr));
    let settle = |word: &str| match word
        .strip_suffix('s')
        .and_then(|number| number.parse::<u64>().ok())
    {
        Some(40..=44) => "40s".to_string(),
        Some(5..=9) => "5s".to_string(),
        _ => word.to_string(),
    };
    text(&output.stdout)
        .lines()
        .map(|line| line.split_whitespace().map(settle).collect::<Vec<_>>().join(" "))
        .collect()
}

fn gateway(name: &str, address: &str, node: &str, health: &str) -> GatewayRecord {
    GatewayRecord {
        gateway: name.into(),
        address: address.parse().unwrap(),
        node: node.into(),
        health: health.into(),
        since: Some(SystemTime::now() - Duration::from_secs(40)),
        probe_milliseconds: Some(1.3),
        last_error: None,
    }
}

/// node-1's agent: `through/t1` over both gateways, `split/s1` by the policy (gw-b failing, so
/// its default route is unreachable), `broken/b1` dropped.
fn node_1(age: Duration) -> EgressRecord {
    let route =
        |destination: &str, policy: Option<&str>, rule: Option<usize>, action: &str, gateways: &[&str]| {
            RouteRecord {
                destination: destination.into(),
                policy: policy.map(str::to_string),
                policy_rule: rule,
                action: action.into(),
                gateways: gateways.iter().map(|gateway| gateway.to_string()).collect(),
            }
        };
    let client =
        |client: &str, address: &str, table: u32, chosen_by: &str, routes: Vec<RouteRecord>| ClientRecord {
            client: client.into(),
            addresses: vec![address.parse().unwrap()],
            table,
            chosen_by: chosen_by.into(),
            routes,
        };
    let mut failing = gateway("egress/gw-b", "10.9.0.2", "node-2", "not-ready");
    failing.probe_milliseconds = None;
    failing.last_error = Some("GET /readiness: 503".into());
    EgressRecord {
        node: "node-1".into(),
        updated: SystemTime::now() - age,
        revision: 0,
        clients: vec![
            client(
                "broken/b1",
                "10.2.0.30",
                1_000_000,
                "policy missing (namespace annotation; no such policy: all egress dropped)",
                vec![route("0.0.0.0/0", Some("missing"), None, "drop", &[])],
            ),
            client(
                "split/s1",
                "10.2.0.20",
                1_000_001,
                "policy split (namespace annotation)",
                vec![
                    route("10.0.0.0/8", Some("split"), Some(0), "normal", &[]),
                    route("0.0.0.0/0", Some("split"), Some(1), "gateways", &["egress/gw-a"]),
                ],
            ),
            client(
                "through/t1",
                "10.2.0.10",
                1_000_002,
                "namespace annotations",
                vec![route("0.0.0.0/0", None, None, "gateways", &["egress/gw-a"])],
            ),
        ],
        gateways: vec![gateway("egress/gw-a", "10.9.0.1", "node-1", "ready"), failing],
        warnings: Vec::new(),
    }
}

#[test]
fn get_egress_shows_clients_and_gateways_as_table_wide_and_json() {
    let datastore = Datastore::new("get");
    let empty = datastore.sluice(&["get", "egress"]);
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert!(text(&empty.stdout).is_empty());
    assert!(
        text(&empty.stderr).contains("no agent has published egress state"),
        "{}",
        text(&empty.stderr)
    );
    let missing = datastore.sluice(&["get", "egress", "--node", "node-1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("no egress state published for node node-1"),
        "{}",
        text(&missing.stderr)
    );

    datastore.publish(&node_1(Duration::from_secs(5)));
    let table = words(&datastore.sluice(&["get", "egress"]));
    assert_eq!(
        table,
        [
            "NODE CLIENT DESTINATION ROUTE GATEWAY ADDRESS GATEWAY NODE HEALTH CHOSEN BY",
            "node-1 broken/b1 0.0.0.0/0 drop - - - - policy missing (namespace annotation; no such policy: all egress dropped)",
            "node-1 split/s1 10.0.0.0/8 normal - - - - policy split (namespace annotation)",
            "node-1 split/s1 0.0.0.0/0 gateways egress/gw-a 10.9.0.1 node-1 ready policy split (namespace annotation)",
            "node-1 through/t1 0.0.0.0/0 gateways egress/gw-a 10.9.0.1 node-1 ready namespace annotations",
            "",
            "GATEWAY ADDRESS NODE SEEN FROM HEALTH SINCE CLIENTS",
            "egress/gw-a 10.9.0.1 node-1 node-1 ready 40s split/s1,through/t1",
            "egress/gw-b 10.9.0.2 node-2 node-1 not-ready 40s -",
        ]
    );

    let wide = words(&datastore.sluice(&["get", "egress", "-o", "wide", "-n", "split"]));
    assert_eq!(
        wide[0],
        "NODE CLIENT DESTINATION ROUTE GATEWAY ADDRESS GATEWAY NODE HEALTH CHOSEN BY TABLE RULE PROBE LAST ERROR AGE"
    );
    assert_eq!(
        wide[1..3],
        [
            "node-1 split/s1 10.0.0.0/8 normal - - - - policy split (namespace annotation) 1000001 0 - - 5s",
            "node-1 split/s1 0.0.0.0/0 gateways egress/gw-a 10.9.0.1 node-1 ready policy split (namespace annotation) 1000001 1 1.3ms - 5s",
        ]
    );
    // -n split: only its client, and only the gateway serving it.
    assert_eq!(wide.len(), 6, "{wide:#?}");
    assert!(wide[5].starts_with("egress/gw-a "), "{wide:#?}");
    let aliased = words(&datastore.sluice(&["get", "egw", "node-1", "-o", "wide"]));
    assert!(
        aliased
            .iter()
            .any(|line| line.ends_with("not-ready 40s - - GET /readiness: 503 5s")),
        "{aliased:#?}"
    );

    let json = datastore.sluice(&["get", "egress", "-o", "json"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value[0]["node"], "node-1");
    assert_eq!(value[0]["stale"], false);
    assert_eq!(value[0]["clients"][1]["routes"][1]["policyRule"], 1);
    assert_eq!(value[0]["gateways"][1]["lastError"], "GET /readiness: 503");

    // Two minutes without a write: more than three heartbeats, so the health is unknown.
    datastore.publish(&node_1(Duration::from_secs(120)));
    let stale = datastore.sluice(&["get", "egress"]);
    assert!(
        text(&stale.stderr).contains("the egress record of node node-1 is 2m old"),
        "{}",
        text(&stale.stderr)
    );
    let stale_words = words(&stale);
    assert!(
        stale_words.contains(
            &"egress/gw-a 10.9.0.1 node-1 node-1 unknown (stale) 40s split/s1,through/t1".to_string()
        ),
        "{stale_words:#?}"
    );
    let json = datastore.sluice(&["get", "egress", "-o", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value[0]["stale"], true);

    let refused = datastore.sluice(&["get", "egress", "-l", "app=web"]);
    assert_eq!(refused.status.code(), Some(1));
}

#[test]
fn ipam_show_by_namespace_gives_each_namespaces_source_addresses() {
    let datastore = Datastore::new("perimeter");
    let table = words(&datastore.sluice(&["ipam", "show", "--by", "namespace"]));
    assert_eq!(
        table,
        [
            "NAMESPACE DESTINATION SOURCE ADDRESSES VIA POOLS PODS",
            "broken 0.0.0.0/0 none egress dropped: policy missing (namespace annotation; no such policy: all egress dropped) nat-pool (1) 1",
            "egress 0.0.0.0/0 10.9.0.0/16 pool gateway-pool (routable) gateway-pool (2) 2",
            "natted 0.0.0.0/0 192.168.0.2 natOutgoing of pool nat-pool (the node's address) nat-pool (1) 1",
            "routable 0.0.0.0/0 10.1.0.0/16 pool routable-pool (routable) routable-pool (1) 1",
            "split 10.0.0.0/8 192.168.0.1 natOutgoing of pool nat-pool (the node's address) nat-pool (1) 1",
            // Both gateways: either may be chosen (maxNextHops 1) once health is known.
            "split 0.0.0.0/0 10.9.0.1, 10.9.0.2 gateways egress/gw-a on node-1, egress/gw-b on node-2; policy split (namespace annotation), rule 1 nat-pool (1) 1",
            "through 0.0.0.0/0 10.9.0.1, 10.9.0.2 gateways egress/gw-a on node-1, egress/gw-b on node-2; namespace annotations nat-pool (1) 1",
        ]
    );

    let json = datastore.sluice(&["ipam", "show", "--by", "namespace", "-o", "json"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let namespaces: Vec<&str> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(
        namespaces,
        ["broken", "egress", "natted", "routable", "split", "through"]
    );
    let split = &value[4];
    assert_eq!(split["pods"], 1);
    assert_eq!(split["egress"][0]["destination"], "10.0.0.0/8");
    assert_eq!(split["egress"][0]["via"], "natOutgoing");
    assert_eq!(
        split["egress"][0]["addresses"],
        serde_json::json!(["192.168.0.1/32"])
    );
    assert_eq!(split["egress"][1]["via"], "gateways");
    assert_eq!(split["egress"][1]["policy"], "split");
    assert_eq!(split["egress"][1]["policyRule"], 1);
    assert_eq!(split["egress"][1]["gateways"][1]["gateway"], "egress/gw-b");
    assert_eq!(split["egress"][1]["gateways"][1]["node"], "node-2");
    assert_eq!(
        split["egress"][1]["addresses"],
        serde_json::json!(["10.9.0.1/32", "10.9.0.2/32"])
    );
    assert_eq!(value[0]["egress"][0]["via"], "dropped");
    assert_eq!(value[0]["egress"][0]["addresses"], serde_json::json!([]));
    assert_eq!(value[3]["pools"][0]["cidr"], "10.1.0.0/16");

    let addresses = words(&datastore.sluice(&["ipam", "show", "--by", "namespace", "--addresses"]));
    assert!(
        addresses.contains(&"through/t1 10.2.0.10 nat-pool node-1".to_string()),
        "{addresses:#?}"
    );
}
