//! `apply`, `get`, `delete`, and `explain` reading the datastore, run as a user runs them
//! against an embedded store in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Datastore {
    directory: PathBuf,
}

impl Datastore {
    fn new(name: &str) -> Self {
        let directory =
            std::env::temp_dir().join(format!("sluice-datastore-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        Datastore { directory }
    }

    fn address(&self) -> String {
        format!("file://{}", self.directory.join("store.db").display())
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.directory.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn sluice(&self, arguments: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(arguments)
            .env("SLUICE_DATASTORE", self.address())
            .output()
            .expect("the sluice binary runs")
    }
}

impl Drop for Datastore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .display()
        .to_string()
}

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).into_owned()
}

#[test]
fn apply_then_get_then_explain_from_the_datastore() {
    let store = Datastore::new("apply");
    let output = store.sluice(&["apply", "-f", &examples()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    assert!(
        printed.contains("globalnetworkpolicy block-threat-feed created"),
        "{printed}"
    );
    assert!(
        printed.contains("networkpolicy prod/web-to-partners created"),
        "{printed}"
    );

    // Applying the same again changes nothing.
    let again = store.sluice(&["apply", "-f", &examples()]);
    assert!(text(&again.stdout).contains("globalnetworkpolicy block-threat-feed unchanged"));

    let pools = store.sluice(&["get", "ippool", "-o", "wide"]);
    let table = text(&pools.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("prod-pool") && table.contains("10.10.0.0/16"),
        "{table}"
    );

    let policy = store.sluice(&[
        "get",
        "networkpolicy",
        "web-to-partners",
        "-n",
        "prod",
        "-o",
        "yaml",
    ]);
    let yaml = text(&policy.stdout);
    assert!(
        yaml.contains("kind: NetworkPolicy") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );

    // explain and connectivity without -f read the datastore.
    let explain = store.sluice(&[
        "explain",
        "--from",
        "prod/web",
        "--to",
        "198.51.100.70",
        "--port",
        "443",
    ]);
    assert!(explain.status.success(), "{}", text(&explain.stderr));
    assert!(
        text(&explain.stdout)
            .contains("denied by GlobalNetworkPolicy block-threat-feed, egress rule 1, in tier security")
    );
}

#[test]
fn a_bad_document_writes_nothing() {
    let store = Datastore::new("all-or-nothing");
    let good = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: partners}\nspec: {nets: [203.0.113.0/24]}\n";
    let bad = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: bad}\nspec:\n  selector: app ==\n";
    let path = store.file("mixed.yaml", &format!("{good}---\n{bad}"));
    let output = store.sluice(&["apply", "-f", &path]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("spec.selector"),
        "{}",
        text(&output.stderr)
    );
    let listed = store.sluice(&["get", "globalnetworkset"]);
    assert!(
        !text(&listed.stdout).contains("partners"),
        "{}",
        text(&listed.stdout)
    );
}

#[test]
fn a_policy_may_name_a_tier_that_is_already_stored() {
    let store = Datastore::new("tiers");
    let tier = store.file(
        "tier.yaml",
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n",
    );
    assert!(store.sluice(&["apply", "-f", &tier]).status.success());
    let policy = store.file(
        "policy.yaml",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {tier: security, types: [Egress]}\n",
    );
    let output = store.sluice(&["apply", "-f", &policy]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let missing = store.file(
        "missing.yaml",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: q}\nspec: {tier: platform}\n",
    );
    let output = store.sluice(&["apply", "-f", &missing]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("tier `platform` does not exist"));
}

#[test]
fn a_stale_resource_version_is_a_conflict() {
    let store = Datastore::new("conflict");
    let first = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: partners}\nspec: {nets: [203.0.113.0/24]}\n";
    let path = store.file("set.yaml", first);
    assert!(store.sluice(&["apply", "-f", &path]).status.success());
    let stored = text(
        &store
            .sluice(&["get", "globalnetworkset", "partners", "-o", "json"])
            .stdout,
    );
    let value: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let version = value["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    // Someone else changes it.
    let second = store.file("set2.yaml", &first.replace("203.0.113.0/24", "198.51.100.0/24"));
    assert!(store.sluice(&["apply", "-f", &second]).status.success());
    // An update based on the old version is refused.
    let stale = store.file(
        "stale.yaml",
        &first.replace(
            "{name: partners}",
            &format!("{{name: partners, resourceVersion: '{version}'}}"),
        ),
    );
    let output = store.sluice(&["apply", "-f", &stale]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("conflict"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn delete_by_name_and_by_file() {
    let store = Datastore::new("delete");
    assert!(store.sluice(&["apply", "-f", &examples()]).status.success());
    let output = store.sluice(&["delete", "globalnetworkpolicy", "allow-cluster-dns"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = store.sluice(&["delete", "globalnetworkpolicy", "allow-cluster-dns"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("not found"),
        "{}",
        text(&output.stderr)
    );
    let prod = Path::new(&examples()).join("08-prod.yaml").display().to_string();
    let output = store.sluice(&["delete", "-f", &prod]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed = text(&store.sluice(&["get", "networkpolicy", "-A"]).stdout);
    assert!(!listed.contains("web-to-partners"), "{listed}");
}

#[test]
fn ipam_show_check_and_release() {
    let store = Datastore::new("ipam");
    let manifests = store.file(
        "pools.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {environment: production}}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: prod-pool}\nspec: {cidr: 10.10.0.0/16, natOutgoing: true, namespaceSelector: environment == 'production'}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: other-pool}\nspec: {cidr: 10.20.0.0/16, namespaceSelector: environment == 'staging'}\n",
    );
    assert!(store.sluice(&["apply", "-f", &manifests]).status.success());
    // An allocation as the CNI plugin makes it, with no workload endpoint recorded: a leak.
    let handle = sluice_ipam::workload_handle("abc123", "eth0");
    let ipam = sluice_ipam::Ipam::new(std::sync::Arc::from(
        sluice_store::open(&store.address()).unwrap(),
    ));
    let request = sluice_ipam::AssignRequest {
        handle: handle.clone(),
        node: "node-1".into(),
        namespace: "prod".into(),
        pod: "web".into(),
        pod_annotations: Default::default(),
    };
    let address = ipam.assign(&request).unwrap()[0].address;
    assert!(address.to_string().starts_with("10.10."), "{address}");

    let shown = text(
        &store
            .sluice(&["ipam", "show", "--by", "namespace", "--addresses"])
            .stdout,
    );
    assert!(
        shown.contains("prod") && shown.contains(&address.to_string()),
        "{shown}"
    );
    let by_pool = text(&store.sluice(&["ipam", "show"]).stdout);
    assert!(
        by_pool.contains("prod-pool") && by_pool.contains("10.10."),
        "{by_pool}"
    );

    let check = store.sluice(&["ipam", "check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        text(&check.stdout).contains(&format!("leaked: {address}")),
        "{}",
        text(&check.stdout)
    );

    // The pool is in use: deleting it needs --force.
    let refused = store.sluice(&["delete", "ippool", "prod-pool"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("allocated"),
        "{}",
        text(&refused.stderr)
    );

    let released = store.sluice(&["ipam", "release", &address.to_string()]);
    assert!(released.status.success(), "{}", text(&released.stderr));
    let check = store.sluice(&["ipam", "check"]);
    assert!(check.status.success(), "{}", text(&check.stdout));

    // An endpoint still recording the released address: IPAM may give it to another pod.
    let endpoint = store.file(
        "endpoint.yaml",
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {{name: node--1-k8s-web-eth0, namespace: prod}}\nspec: {{node: node-1, pod: web, endpoint: eth0, containerID: abc123, orchestrator: k8s, interfaceName: slc0123456789ab, ipNetworks: [{address}/32]}}\n"
        ),
    );
    let applied = store.sluice(&["apply", "-f", &endpoint]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let check = store.sluice(&["ipam", "check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stdout));
    assert!(
        text(&check.stdout).contains(&format!(
            "endpoint: endpoint prod/node--1-k8s-web-eth0 has {address}, which IPAM has not allocated"
        )),
        "{}",
        text(&check.stdout)
    );
    assert!(store.sluice(&["delete", "ippool", "prod-pool"]).status.success());
}

#[test]
fn ip_pools_keep_their_cidr_and_do_not_overlap() {
    let store = Datastore::new("pools");
    let pool = |name: &str, cidr: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}}}\n"
        )
    };
    let first = store.file("first.yaml", &pool("a", "10.10.0.0/16"));
    assert!(store.sluice(&["apply", "-f", &first]).status.success());
    let moved = store.file("moved.yaml", &pool("a", "10.11.0.0/16"));
    let output = store.sluice(&["apply", "-f", &moved]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("cidr"), "{}", text(&output.stderr));
    let overlapping = store.file("overlap.yaml", &pool("b", "10.10.128.0/17"));
    let output = store.sluice(&["apply", "-f", &overlapping]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("overlap"),
        "{}",
        text(&output.stderr)
    );
}

impl Datastore {
    fn sluice_with_input(&self, arguments: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(arguments)
            .env("SLUICE_DATASTORE", self.address())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the sluice binary runs");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
}

const PARTNERS: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: partners, labels: {role: partner}}\nspec: {nets: [203.0.113.0/24]}\n";

#[test]
fn apply_and_delete_read_standard_input_for_dash() {
    let store = Datastore::new("stdin");
    let output = store.sluice_with_input(&["apply", "-f", "-"], PARTNERS);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("globalnetworkset partners created"),
        "{}",
        text(&output.stdout)
    );
    let listed = store.sluice(&["get", "globalnetworkset", "-o", "name"]);
    assert_eq!(
        text(&listed.stdout),
        "globalnetworkset.projectcalico.org/partners\n"
    );
    let output = store.sluice_with_input(&["delete", "-f", "-"], PARTNERS);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed = store.sluice(&["get", "globalnetworkset"]);
    assert!(listed.stdout.is_empty(), "{}", text(&listed.stdout));

    // An error in standard input is named and shown like one in a file; nothing is written.
    let bad = PARTNERS.replace("203.0.113.0/24", "203.0.113.0/33");
    let output = store.sluice_with_input(&["apply", "-f", "-"], &bad);
    assert_eq!(output.status.code(), Some(1));
    let errors = text(&output.stderr);
    assert!(errors.contains("--> <stdin>:4:"), "{errors}");
    assert!(errors.contains("4 | spec: {nets: [203.0.113.0/33]}"), "{errors}");
    assert!(store.sluice(&["get", "globalnetworkset"]).stdout.is_empty());

    let twice = store.sluice_with_input(&["apply", "-f", "-", "-f", "-"], PARTNERS);
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        text(&twice.stderr).contains("more than once"),
        "{}",
        text(&twice.stderr)
    );
}

#[test]
fn get_selects_by_kubernetes_label_selector() {
    let store = Datastore::new("selector");
    assert!(store.sluice(&["apply", "-f", &examples()]).status.success());
    let names = |selector: &str| -> Vec<String> {
        let output = store.sluice(&["get", "pods", "-A", "-l", selector, "-o", "name"]);
        assert!(output.status.success(), "{selector}: {}", text(&output.stderr));
        let mut names: Vec<String> = text(&output.stdout).lines().map(str::to_string).collect();
        names.sort();
        names
    };
    // prod/web and staging/web are app=web,tier=frontend; prod/payments app=payments,
    // tier=backend; kube-system/coredns k8s-app=kube-dns; monitoring/prometheus app=prometheus.
    assert_eq!(names("app=web"), ["pod/web", "pod/web"]);
    assert_eq!(names("app==payments,tier=backend"), ["pod/payments"]);
    assert_eq!(
        names("app in (payments, prometheus)"),
        ["pod/payments", "pod/prometheus"]
    );
    assert_eq!(names("app,app notin (web,payments)"), ["pod/prometheus"]);
    assert_eq!(
        names("tier!=frontend,!k8s-app"),
        ["pod/payments", "pod/prometheus"]
    );
    assert_eq!(names("k8s-app"), ["pod/coredns"]);
    let selected = store.sluice(&["get", "pods", "-n", "prod", "--selector", "tier=frontend"]);
    let table = text(&selected.stdout);
    assert!(table.contains("web") && !table.contains("payments"), "{table}");

    let bad = store.sluice(&["get", "pods", "-l", "app in (web"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("label selector `app in (web`: `(` without `)`"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn get_names_kinds_as_kubectl_and_calicoctl_do() {
    let store = Datastore::new("kinds");
    assert!(store.sluice(&["apply", "-f", &examples()]).status.success());
    let get = |arguments: &[&str]| text(&store.sluice(arguments).stdout);
    // networkpolicy and netpol are Calico's, as in calicoctl.
    for kind in ["networkpolicy", "netpol", "networkpolicies.projectcalico.org"] {
        assert_eq!(
            get(&["get", kind, "-n", "prod", "-o", "name"]),
            "networkpolicy.projectcalico.org/payments-to-card-processor\nnetworkpolicy.projectcalico.org/web-to-partners\n",
            "{kind}"
        );
    }
    // The group names Kubernetes' NetworkPolicy.
    for kind in [
        "networkpolicy.networking.k8s.io",
        "networkpolicies.networking.k8s.io",
        "knp",
    ] {
        assert_eq!(
            get(&["get", kind, "-n", "prod", "-o", "name"]),
            "networkpolicy.networking.k8s.io/payments-ingress\n",
            "{kind}"
        );
    }
    assert_eq!(
        get(&["get", "namespace", "prod", "-o", "name"]),
        "namespace/prod\n"
    );
}

#[test]
fn an_empty_get_says_so_on_stderr_and_succeeds() {
    let store = Datastore::new("empty");
    assert!(store.sluice(&["apply", "-f", &examples()]).status.success());
    for (arguments, message) in [
        (&["get", "pods"][..], "No resources found in default namespace.\n"),
        (
            &["get", "pods", "-n", "empty"][..],
            "No resources found in empty namespace.\n",
        ),
        (
            &["get", "pods", "-A", "-l", "app=none"][..],
            "No resources found\n",
        ),
        (
            &["get", "ippools", "-l", "app=none", "-o", "name"][..],
            "No resources found\n",
        ),
        (&["get", "nodestatus"][..], "No resources found\n"),
    ] {
        let output = store.sluice(arguments);
        assert!(output.status.success(), "{arguments:?}: {}", text(&output.stderr));
        assert!(
            output.stdout.is_empty(),
            "{arguments:?}: {}",
            text(&output.stdout)
        );
        assert_eq!(text(&output.stderr), message, "{arguments:?}");
    }
    // JSON and YAML answer with the empty List.
    let output = store.sluice(&["get", "pods", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(list["items"], serde_json::json!([]));
}

#[test]
fn delete_ignore_not_found_succeeds_quietly_for_what_is_missing() {
    let store = Datastore::new("ignore-not-found");
    assert!(store.sluice(&["apply", "-f", &examples()]).status.success());
    let output = store.sluice(&["delete", "globalnetworkpolicy", "nothing", "--ignore-not-found"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
    // What exists is still deleted, and said.
    let output = store.sluice(&[
        "delete",
        "globalnetworkpolicy",
        "allow-cluster-dns",
        "--ignore-not-found",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "globalnetworkpolicy allow-cluster-dns deleted\n"
    );
    // By manifest, the missing ones are skipped and the rest deleted.
    let partners = store.file("partners.yaml", PARTNERS);
    let output = store.sluice(&["delete", "-f", &partners, "--ignore-not-found"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = store.sluice(&["delete", "globalnetworkpolicy", "nothing"]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn calico_kinds_that_are_not_enforced_apply_with_a_warning_and_are_listed() {
    let store = Datastore::new("kept");
    let manifests = store.file(
        "calico.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rack1-tor}\nspec: {peerIP: 192.0.2.1, asNumber: 64513}\n---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {logSeverityScreen: Info}\n---\napiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: deny, namespace: prod}\nspec: {stagedAction: Set, selector: all()}\n",
    );
    let output = store.sluice(&["apply", "-f", &manifests]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let warnings = text(&output.stderr);
    // The staged policy is not warned about: never enforcing it is what staging means.
    assert_eq!(warnings.matches("warning").count(), 2, "{warnings}");
    assert!(
        warnings.contains("BGPPeer rack1-tor is stored but not enforced"),
        "{warnings}"
    );
    assert!(
        warnings.contains("does not use `logSeverityScreen`"),
        "{warnings}"
    );
    for (kind, name) in [
        ("bgppeers", "rack1-tor"),
        ("felixconfiguration", "default"),
        ("stagednetworkpolicies", "deny"),
    ] {
        let output = store.sluice(&["get", kind, "-A", "-o", "yaml"]);
        assert!(output.status.success(), "{kind}: {}", text(&output.stderr));
        assert!(
            text(&output.stdout).contains(name),
            "{kind}: {}",
            text(&output.stdout)
        );
    }
    // What `get` prints applies again as it is.
    let exported = store.sluice(&["get", "bgppeer", "-o", "yaml"]);
    let again = store.file("exported.yaml", &text(&exported.stdout));
    let output = store.sluice(&["apply", "-f", &again]);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn egress_gateway_policies_apply_list_and_delete() {
    let store = Datastore::new("egress-gateway-policy");
    let policy = store.file(
        "egress.yaml",
        "apiVersion: projectcalico.org/v3\nkind: EgressGatewayPolicy\nmetadata: {name: internet}\nspec:\n  rules:\n  - destination: {cidr: 10.0.0.0/8}\n    description: cluster-adjacent, no gateway\n  - gateway: {selector: egress-code == 'red', maxNextHops: 2}\n    gatewayPreference: PreferNodeLocal\n",
    );
    let output = store.sluice(&["apply", "-f", &policy]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // Enforced by the agents, so applied without a warning.
    assert!(
        !text(&output.stderr).contains("not enforced"),
        "{}",
        text(&output.stderr)
    );
    let listed = text(&store.sluice(&["get", "egressgatewaypolicies"]).stdout);
    assert!(listed.contains("internet"), "{listed}");
    assert!(
        listed.contains("10.0.0.0/8->normal, 0.0.0.0/0->egress-code == \"red\""),
        "{listed}"
    );
    let exported = text(
        &store
            .sluice(&["get", "egressgatewaypolicy", "internet", "-o", "yaml"])
            .stdout,
    );
    assert!(
        exported.contains("gatewayPreference: PreferNodeLocal"),
        "{exported}"
    );
    assert!(exported.contains("maxNextHops: 2"), "{exported}");
    let output = store.sluice(&["delete", "egressgatewaypolicy", "internet"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed = text(&store.sluice(&["get", "egressgatewaypolicies"]).stdout);
    assert!(!listed.contains("internet"), "{listed}");
    // A bad policy writes nothing and names its field.
    let bad = store.file(
        "bad.yaml",
        "apiVersion: projectcalico.org/v3\nkind: EgressGatewayPolicy\nmetadata: {name: bad}\nspec:\n  rules:\n  - gateway: {namespaceSelector: all()}\n",
    );
    let output = store.sluice(&["apply", "-f", &bad]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("spec.rules[0].gateway.selector"),
        "{}",
        text(&output.stderr)
    );
}

const STAGED: &str = "\
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: trial}
spec: {order: 50}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: default-deny-egress, namespace: monitoring}
spec:
  tier: trial
  selector: all()
  types: [Egress]
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: default-deny-egress}
spec: {stagedAction: Delete}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: payments-ingress, namespace: prod}
spec: {stagedAction: Delete}
";

#[test]
fn staged_policies_apply_list_explain_and_delete() {
    let store = Datastore::new("staged");
    let output = store.sluice(&["apply", "-f", &examples()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let staged = store.file("staged.yaml", STAGED);
    let output = store.sluice(&["apply", "-f", &staged]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    for line in [
        "stagednetworkpolicy monitoring/default-deny-egress created",
        "stagedglobalnetworkpolicy default-deny-egress created",
        "stagedkubernetesnetworkpolicy prod/payments-ingress created",
    ] {
        assert!(printed.contains(line), "{line} not in:\n{printed}");
    }
    assert!(
        !text(&output.stderr).contains("warning"),
        "{}",
        text(&output.stderr)
    );

    // Listed by every name calicoctl knows them by, with their action.
    for kind in ["stagednetworkpolicies", "snp", "spol", "stagedpolicy"] {
        let output = store.sluice(&["get", kind, "-n", "monitoring"]);
        let table = text(&output.stdout);
        assert!(output.status.success(), "{kind}: {}", text(&output.stderr));
        assert!(table.starts_with("NAME"), "{kind}: {table}");
        assert!(
            table.contains("default-deny-egress") && table.contains("Set") && table.contains("trial"),
            "{kind}: {table}"
        );
    }
    for kind in ["stagedglobalnetworkpolicies", "sgnp"] {
        let table = text(&store.sluice(&["get", kind]).stdout);
        assert!(
            table.contains("default-deny-egress") && table.contains("Delete"),
            "{kind}: {table}"
        );
    }
    for kind in ["stagedkubernetesnetworkpolicy", "sknp", "skpol"] {
        let table = text(&store.sluice(&["get", kind, "-A"]).stdout);
        assert!(
            table.contains("prod") && table.contains("payments-ingress") && table.contains("Delete"),
            "{kind}: {table}"
        );
    }
    // What `get` prints applies again unchanged.
    let exported = store.sluice(&["get", "snp", "-A", "-o", "yaml"]);
    let again = store.file("exported.yaml", &text(&exported.stdout));
    let output = store.sluice(&["apply", "-f", &again]);
    assert!(
        text(&output.stdout).contains("stagednetworkpolicy monitoring/default-deny-egress unchanged"),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );

    // Explained from the datastore: the enforced verdict and, beside it, the staged one.
    let output = store.sluice(&[
        "explain",
        "--from",
        "monitoring/prometheus",
        "--to",
        "prod/payments",
        "--port",
        "9090",
        "-o",
        "json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let explained: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(explained["verdict"], "allow", "{explained:#}");
    assert_eq!(explained["staged"]["verdict"], "deny", "{explained:#}");
    assert_eq!(
        explained["staged"]["pending_policies"],
        serde_json::json!([
            "trial|StagedNetworkPolicy|monitoring/default-deny-egress|-1|deny",
            "__PROFILE__|Profile|kns.prod|0|allow"
        ]),
        "{explained:#}"
    );

    // A tier that holds a staged policy cannot go, as with enforced policies.
    let output = store.sluice(&["delete", "tier", "trial"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("stagednetworkpolicy monitoring/default-deny-egress"),
        "{}",
        text(&output.stderr)
    );
    let output = store.sluice(&["delete", "snp", "default-deny-egress", "-n", "monitoring"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "stagednetworkpolicy monitoring/default-deny-egress deleted\n"
    );
    let output = store.sluice(&["delete", "-f", &staged]);
    assert_eq!(output.status.code(), Some(1), "already deleted: not found");
    let output = store.sluice(&["delete", "-f", &staged, "--ignore-not-found"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for kind in ["snp", "sgnp", "sknp"] {
        let output = store.sluice(&["get", kind, "-A", "-o", "name"]);
        assert!(
            text(&output.stdout).is_empty(),
            "{kind}: {}",
            text(&output.stdout)
        );
    }
    // With nothing staged, explain says nothing of staging.
    let output = store.sluice(&[
        "explain",
        "--from",
        "monitoring/prometheus",
        "--to",
        "prod/payments",
        "--port",
        "9090",
    ]);
    assert!(
        !text(&output.stdout).contains("STAGED"),
        "{}",
        text(&output.stdout)
    );
}
