//! What users rely on when Sluice reads their manifests: every input form is read, every error
//! names file, line, column and field and says what would be valid, all errors are reported at
//! once, and Calico's and Kubernetes' defaults are applied.

use std::fs;
use std::path::{Path, PathBuf};

use sluice_api::calico::DEFAULT_TIER;
use sluice_api::values::{Action, PolicyType};
use sluice_api::{Diagnostic, Loader, ResourceSet, load_paths, load_str};

const FILE: &str = "policy.yaml";

const GLOBAL_POLICY: &str = "\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: policy
spec:
";

const KUBERNETES_POLICY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: policy
  namespace: prod
spec:
  podSelector: {}
";

fn load(text: &str) -> ResourceSet {
    load_str(FILE, text).unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
}

/// Loads text that has exactly one error and checks where it is, which field it names and
/// that the message contains `hint` (what is wrong or what would be valid).
#[track_caller]
fn assert_error(text: &str, line: usize, column: usize, field: &str, hint: &str) -> Diagnostic {
    let errors = load_str(FILE, text).expect_err("the input should be rejected");
    assert_eq!(errors.0.len(), 1, "expected one error, got:\n{errors}");
    let diagnostic = errors.0[0].clone();
    assert_eq!(diagnostic.file, FILE, "{diagnostic}");
    assert_eq!(
        (diagnostic.line, diagnostic.column, diagnostic.field.as_str()),
        (line, column, field),
        "{diagnostic}"
    );
    assert!(diagnostic.message.contains(hint), "`{hint}` not in: {diagnostic}");
    diagnostic
}

/// A global policy with one egress rule, given as the rule's indented YAML lines.
fn egress_rule(rule: &str) -> String {
    format!("{GLOBAL_POLICY}  egress:\n    - action: Allow\n{rule}")
}

/// A fresh directory under Cargo's scratch space for integration tests.
fn scratch_directory(name: &str) -> PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&directory);
    fs::create_dir_all(&directory).unwrap();
    directory
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

fn namespace_names(set: &ResourceSet) -> Vec<&str> {
    set.namespaces
        .iter()
        .map(|namespace| namespace.metadata.name.as_str())
        .collect()
}

// ---- Input forms -------------------------------------------------------------------------

#[test]
fn yaml_multi_document_and_empty_documents() {
    let text = format!(
        "---\n# only a comment\n---\n{}---\n{}---\n\n...\n",
        namespace("a"),
        namespace("b")
    );
    let set = load(&text);
    assert_eq!(namespace_names(&set), ["a", "b"]);
    assert_eq!(set.len(), 2);
    let origin = &set.namespaces[1].metadata.origin;
    assert_eq!((origin.file.as_str(), origin.line), (FILE, 9));
}

#[test]
fn empty_text_is_an_empty_set() {
    assert!(load("").is_empty());
    assert!(load("---\n---\n").is_empty());
}

#[test]
fn json_documents_are_read_with_positions() {
    let set = load(r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}"#);
    assert_eq!(namespace_names(&set), ["x"]);
    let text = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Namespace\",\n  \"metadata\": {\"name\": \"x\", \"bogus\": 1}\n}";
    assert_error(text, 4, 29, "metadata.bogus", "expected one of `name`");
}

#[test]
fn list_items_are_read_and_their_errors_are_positioned() {
    let text = "\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Namespace
    metadata:
      name: ok
  - apiVersion: projectcalico.org/v3
    kind: GlobalNetworkPolicy
    metadata:
      name: policy
    spec:
      egress:
        - action: Allow
          destination:
            nets: [10.0.0.0/33]
";
    assert_error(
        text,
        16,
        20,
        "spec.egress[0].destination.nets[0]",
        "expected an address with a prefix length",
    );
    let valid = text.replace("10.0.0.0/33", "10.0.0.0/8");
    let set = load(&valid);
    assert_eq!(namespace_names(&set), ["ok"]);
    assert_eq!(set.global_network_policies.len(), 1);
    assert_eq!(set.global_network_policies[0].metadata.origin.line, 8);
}

#[test]
fn typed_lists_from_calicoctl_are_read() {
    let text = "\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSetList
items:
  - apiVersion: projectcalico.org/v3
    kind: GlobalNetworkSet
    metadata:
      name: feed
    spec:
      nets: [192.0.2.0/24]
";
    assert_eq!(load(text).global_network_sets.len(), 1);
}

#[test]
fn list_without_items_is_an_error() {
    assert_error("apiVersion: v1\nkind: List\n", 1, 1, "items", "`items` array");
}

#[test]
fn directories_are_read_recursively_in_name_order() {
    let directory = scratch_directory("directories_are_read_recursively_in_name_order");
    fs::create_dir_all(directory.join("b-nested/deeper")).unwrap();
    fs::write(directory.join("c.yaml"), namespace("from-c")).unwrap();
    fs::write(directory.join("a.yml"), namespace("from-a")).unwrap();
    fs::write(
        directory.join("b-nested/deeper/d.json"),
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "from-d"}}"#,
    )
    .unwrap();
    fs::write(directory.join("b-nested/notes.txt"), "not: [yaml").unwrap();
    fs::write(directory.join("README.md"), "# not a manifest").unwrap();
    fs::write(directory.join("z.yaml.bak"), namespace("ignored")).unwrap();
    let set = load_paths(&[&directory]).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(namespace_names(&set), ["from-a", "from-d", "from-c"]);
    let origin = &set.namespaces[1].metadata.origin;
    assert!(origin.file.ends_with("d.json"), "{origin}");
}

#[test]
fn unreadable_path_is_an_error_naming_it() {
    let errors = load_paths(&["/nonexistent/sluice/policy.yaml"]).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].file, "/nonexistent/sluice/policy.yaml");
    assert!(errors.0[0].message.contains("cannot read file"), "{errors}");
}

// ---- Errors: position, field and what would be valid -------------------------------------

#[test]
fn unknown_kind() {
    let diagnostic = assert_error(
        "apiVersion: v1\nkind: Pood\nmetadata:\n  name: x\n",
        2,
        7,
        "kind",
        "unknown kind `Pood`",
    );
    assert!(diagnostic.message.contains("did you mean `Pod`?"), "{diagnostic}");
}

#[test]
fn misspelled_kinds_get_a_suggestion() {
    for (kind, suggestion) in [
        ("GlobalNetworkPolcy", "GlobalNetworkPolicy"),
        ("networkpolicy", "NetworkPolicy"),
        ("IpPool", "IPPool"),
        ("FelixConfig", "FelixConfiguration"),
        ("BGPPeers", "BGPPeer"),
    ] {
        assert_error(
            &format!("apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: x\n"),
            2,
            7,
            "kind",
            &format!("did you mean `{suggestion}`?"),
        );
    }
    // Nothing near: the list of what Sluice reads.
    assert_error(
        "apiVersion: projectcalico.org/v3\nkind: Deployment\nmetadata:\n  name: x\n",
        2,
        7,
        "kind",
        "Sluice reads:",
    );
    // Unknown apiVersions stay refused, with the storage form explained.
    assert_error(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
        2,
        7,
        "kind",
        "unknown kind `Deployment` in apiVersion `apps/v1`",
    );
    assert_error(
        "apiVersion: crd.projectcalico.org/v1\nkind: BGPPeers\nmetadata:\n  name: x\n",
        1,
        13,
        "apiVersion",
        "write them as `projectcalico.org/v3`",
    );
}

/// A cluster's Calico configuration as `calicoctl get -o yaml` prints it: kinds Sluice does not
/// enforce are kept (stored, listed, round-tripped) with a warning each, never refused.
const CALICO_CONFIGURATION: &str = r#"
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  bpfEnabled: false
  logSeverityScreen: Info
  reportingInterval: 0s
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.node-1}
spec: {}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {logSeverityScreen: Info, nodeToNodeMeshEnabled: true, asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack1-tor}
spec: {peerIP: 192.0.2.1, asNumber: 64513, nodeSelector: rack == 'rack-1'}
---
apiVersion: projectcalico.org/v3
kind: KubeControllersConfiguration
metadata: {name: default}
spec: {controllers: {node: {reconcilerPeriod: 5m}}}
status: {runningConfig: {}}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: reserved}
spec: {reservedCIDRs: [10.0.0.0/28]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-1-eth0, labels: {role: node}}
spec: {node: node-1, interfaceName: eth0, expectedIPs: [192.0.2.10]}
---
apiVersion: projectcalico.org/v3
kind: ClusterInformation
metadata: {name: default}
spec: {calicoVersion: v3.30.0, clusterType: k8s,bgp,kubeadm,kdd, datastoreReady: true}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: default-deny, namespace: prod}
spec: {stagedAction: Set, selector: all(), types: [Ingress, Egress]}
"#;

#[test]
fn calico_kinds_sluice_does_not_enforce_are_kept_with_a_warning() {
    use sluice_api::{Kind, Resource};
    let set = load(CALICO_CONFIGURATION);
    assert_eq!(set.felix_configurations.len(), 2);
    assert_eq!(set.felix_configurations[1].node(), Some("node-1"));
    let kept: Vec<Kind> = set.kept.iter().map(|kept| kept.kind).collect();
    assert_eq!(
        kept,
        [
            Kind::BgpConfiguration,
            Kind::BgpPeer,
            Kind::KubeControllersConfiguration,
            Kind::IpReservation,
            Kind::HostEndpoint,
            Kind::ClusterInformation,
        ]
    );
    // Staged policies are typed (never enforced by design, so no warning).
    assert_eq!(set.staged_network_policies.len(), 1);
    assert!(kept.iter().all(|kind| !kind.is_enforced()));
    assert!(Kind::FelixConfiguration.is_enforced());
    // One warning per kept object, at its document, saying what is not enforced.
    let warnings: Vec<String> = set.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 7, "{warnings:#?}");
    assert!(
        warnings
            .iter()
            .any(|warning| warning.starts_with("policy.yaml:15:1: ")
                && warning
                    .contains("BGPConfiguration default is stored but not enforced: Sluice speaks no BGP")),
        "{warnings:#?}"
    );
    assert!(
        warnings.iter().any(|warning| warning.contains(
            "IPReservation reserved is stored but not enforced: IPAM does not skip reserved addresses"
        )),
        "{warnings:#?}"
    );
    // FelixConfiguration's unused fields are named, at the first of them.
    assert!(
        warnings.iter().any(
            |warning| warning.starts_with("policy.yaml:6:3: spec.bpfEnabled: ")
                && warning.contains("does not use `bpfEnabled`, `logSeverityScreen`, `reportingInterval`")
        ),
        "{warnings:#?}"
    );
    // Stored and read back whole.
    for resource in set.clone().into_resources() {
        let decoded = Resource::decode(&resource.encode(), 3).unwrap();
        assert_eq!(decoded.kind(), resource.kind());
        assert_eq!(decoded.to_manifest(), resource.to_manifest());
    }
    let staged = set.staged_network_policies[0].clone();
    assert_eq!(
        Resource::StagedNetworkPolicy(staged.clone()).key(),
        "/sluice/resources/projectcalico.org/stagednetworkpolicy/prod/default-deny"
    );
    assert_eq!(staged.spec.action(), sluice_api::staged::StagedAction::Set);
}

#[test]
fn a_felix_configuration_with_a_name_felix_never_reads_is_warned_about() {
    let set = load("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node-1}\n");
    assert_eq!(set.warnings.len(), 1);
    assert!(
        set.warnings[0].message.contains("applies to nothing"),
        "{}",
        set.warnings[0]
    );
}

#[test]
fn kept_kinds_still_have_their_metadata_checked() {
    assert_error(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: Rack_1\n",
        4,
        9,
        "metadata.name",
        "",
    );
    assert_error(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: x\n  namespace: prod\n",
        5,
        14,
        "metadata.namespace",
        "",
    );
}

#[test]
fn unknown_api_version() {
    assert_error(
        "apiVersion: projectcalico.org/v2\nkind: GlobalNetworkPolicy\nmetadata:\n  name: x\n",
        1,
        13,
        "apiVersion",
        "expected projectcalico.org/v3",
    );
}

#[test]
fn missing_kind() {
    assert_error(
        "apiVersion: v1\nmetadata:\n  name: x\n",
        1,
        1,
        "kind",
        "missing kind",
    );
}

#[test]
fn unknown_field_points_at_the_key() {
    assert_error(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  lables: {}\n",
        5,
        3,
        "metadata.lables",
        "expected one of `name`, `namespace`, `labels`",
    );
    assert_error(
        &egress_rule("      destination:\n        nett: [10.0.0.0/8]\n"),
        9,
        9,
        "spec.egress[0].destination.nett",
        "expected one of `nets`",
    );
    // An unknown key spelled like its parent still points at itself.
    assert_error(
        &egress_rule("      destination:\n        destination: {}\n"),
        9,
        9,
        "spec.egress[0].destination.destination",
        "unknown field `destination`",
    );
    assert_error(
        &format!("{GLOBAL_POLICY}  selector: all()\nstatus: {{}}\n"),
        7,
        1,
        "status",
        "expected `metadata` or `spec`",
    );
}

#[test]
fn bad_cidr_in_nets() {
    assert_error(
        &egress_rule("      destination:\n        nets:\n          - 10.0.0.0/8\n          - 10.0.0.0/33\n"),
        11,
        13,
        "spec.egress[0].destination.nets[1]",
        "`10.0.0.0/33` is not a CIDR; expected an address with a prefix length such as 10.0.0.0/8",
    );
}

#[test]
fn bad_selector_carries_the_selector_error() {
    let diagnostic = assert_error(
        &format!("{GLOBAL_POLICY}  selector: app == \n"),
        6,
        13,
        "spec.selector",
        "invalid selector: expected a quoted string after `==`",
    );
    // The rendering shows where in the selector the problem is.
    assert!(diagnostic.message.contains("app =="), "{diagnostic}");
    assert!(diagnostic.message.contains('^'), "{diagnostic}");
}

#[test]
fn bad_label_selector_in_kubernetes_policy() {
    let text = KUBERNETES_POLICY.replace(
        "  podSelector: {}\n",
        "  podSelector:\n    matchExpressions:\n      - key: app\n        operator: In\n",
    );
    let diagnostic = assert_error(&text, 8, 5, "spec.podSelector", "");
    assert!(!diagnostic.message.is_empty());
}

#[test]
fn bad_port() {
    assert_error(
        &egress_rule("      protocol: TCP\n      destination:\n        ports: [80, 70000]\n"),
        10,
        21,
        "spec.egress[0].destination.ports[1]",
        "port 70000 is out of range; expected 0 to 65535",
    );
    assert_error(
        &egress_rule("      protocol: TCP\n      destination:\n        ports: [\"90:80\"]\n"),
        10,
        17,
        "spec.egress[0].destination.ports[0]",
        "minimum above its maximum",
    );
}

#[test]
fn bad_protocol() {
    assert_error(
        &egress_rule("      protocol: tcpp\n"),
        8,
        17,
        "spec.egress[0].protocol",
        "expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number from 1 to 255",
    );
    assert_error(
        &KUBERNETES_POLICY.replace(
            "  podSelector: {}\n",
            "  podSelector: {}\n  egress:\n    - ports:\n        - protocol: ICMP\n",
        ),
        10,
        21,
        "spec.egress[0].ports[0].protocol",
        "protocol must be TCP, UDP or SCTP",
    );
}

#[test]
fn ports_without_protocol() {
    assert_error(
        &egress_rule("      destination:\n        ports: [80]\n"),
        9,
        16,
        "spec.egress[0].destination.ports",
        "need `protocol` set to TCP, UDP, SCTP or UDPLite",
    );
    // Named ports carry their protocol, so they need none.
    load(&egress_rule("      destination:\n        ports: [http]\n"));
}

#[test]
fn icmp_without_icmp_protocol() {
    assert_error(
        &egress_rule("      protocol: TCP\n      icmp:\n        type: 8\n"),
        10,
        9,
        "spec.egress[0].icmp",
        "require protocol ICMP or ICMPv6",
    );
    load(&egress_rule(
        "      protocol: ICMP\n      icmp:\n        type: 8\n",
    ));
}

#[test]
fn http_match_on_a_deny_rule() {
    let text = format!("{GLOBAL_POLICY}  egress:\n    - action: Deny\n      http:\n        methods: [GET]\n");
    assert_error(&text, 9, 9, "spec.egress[0].http", "only valid on Allow rules");
}

#[test]
fn mixed_ipv4_and_ipv6_nets_point_at_the_odd_one() {
    assert_error(
        &egress_rule(
            "      source:\n        nets: [10.0.0.0/8]\n      destination:\n        nets: [\"2001:db8::/32\"]\n",
        ),
        11,
        16,
        "spec.egress[0].destination.nets[0]",
        "split it into one rule per IP version",
    );
    // The clash is in the source here; the error must not point at the destination.
    assert_error(
        &egress_rule("      source:\n        nets: [10.0.0.0/8]\n        notNets: [\"2001:db8::/32\"]\n"),
        10,
        19,
        "spec.egress[0].source.notNets[0]",
        "both IPv4 and IPv6",
    );
}

#[test]
fn too_many_nets() {
    let nets: Vec<String> = (0..257)
        .map(|index| format!("10.{}.{}.0/24", index / 256, index % 256))
        .collect();
    let text = egress_rule(&format!(
        "      destination:\n        nets: [{}]\n",
        nets.join(", ")
    ));
    assert_error(
        &text,
        9,
        15,
        "spec.egress[0].destination.nets",
        "257 nets; Calico allows at most 256",
    );
}

#[test]
fn too_many_ports() {
    let ports: String = (1..=51).map(|port| format!("          - {port}\n")).collect();
    let text = egress_rule(&format!(
        "      protocol: UDP\n      destination:\n        ports:\n{ports}"
    ));
    assert_error(
        &text,
        11,
        11,
        "spec.egress[0].destination.ports",
        "51 ports; Calico allows at most 50",
    );
}

#[test]
fn duplicate_object() {
    let text = format!("{}---\n{}", namespace("x"), namespace("x"));
    assert_error(
        &text,
        9,
        9,
        "metadata.name",
        "Namespace x is defined twice; first at policy.yaml:1:1",
    );
    // The same name in two namespaces is two objects.
    let pod = |namespace: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: {namespace}\n")
    };
    assert_eq!(load(&format!("{}---\n{}", pod("a"), pod("b"))).pods.len(), 2);
}

#[test]
fn missing_tier_reference() {
    assert_error(
        &format!("{GLOBAL_POLICY}  tier: security\n"),
        6,
        9,
        "spec.tier",
        "define a projectcalico.org/v3 Tier named `security` or use the `default` tier",
    );
    // The tier may be defined after the policy that uses it, in any input.
    let tier = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: security\n";
    let mut loader = Loader::default();
    loader.add_str("policy.yaml", &format!("{GLOBAL_POLICY}  tier: security\n"));
    loader.add_str("tiers.yaml", tier);
    let set = loader.finish().unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(set.global_network_policies[0].spec.tier(), "security");
}

#[test]
fn global_in_a_policy_selector() {
    assert_error(
        &format!("{GLOBAL_POLICY}  selector: global()\n"),
        6,
        13,
        "spec.selector",
        "global() can only be used in a rule's namespaceSelector",
    );
    load(&egress_rule(
        "      destination:\n        namespaceSelector: global()\n",
    ));
}

#[test]
fn namespace_on_a_cluster_scoped_kind() {
    assert_error(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: x\n  namespace: prod\n",
        5,
        14,
        "metadata.namespace",
        "remove metadata.namespace",
    );
}

#[test]
fn kubernetes_peer_with_ip_block_and_pod_selector() {
    let text = format!(
        "{KUBERNETES_POLICY}  ingress:\n    - from:\n        - ipBlock:\n            cidr: 10.0.0.0/8\n          podSelector: {{}}\n"
    );
    assert_error(
        &text,
        10,
        11,
        "spec.ingress[0].from[0]",
        "ipBlock cannot be combined with podSelector",
    );
}

#[test]
fn except_outside_cidr() {
    let text = format!(
        "{KUBERNETES_POLICY}  ingress:\n    - from:\n        - ipBlock:\n            cidr: 10.0.0.0/8\n            except: [11.0.0.0/16]\n"
    );
    assert_error(
        &text,
        12,
        22,
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "must be strictly inside cidr 10.0.0.0/8",
    );
}

#[test]
fn end_port_below_port() {
    let text =
        format!("{KUBERNETES_POLICY}  ingress:\n    - ports:\n        - port: 90\n          endPort: 80\n");
    assert_error(
        &text,
        11,
        20,
        "spec.ingress[0].ports[0].endPort",
        "endPort must be greater than or equal to port",
    );
}

#[test]
fn overlapping_ip_pools_point_at_the_later_cidr() {
    let pool = |name: &str, cidr: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n"
        )
    };
    let text = format!("{}---\n{}", pool("a", "10.0.0.0/16"), pool("b", "10.0.1.0/24"));
    assert_error(
        &text,
        13,
        9,
        "spec.cidr",
        "IPPool b (10.0.1.0/24) overlaps IPPool a (10.0.0.0/16) defined at policy.yaml:1:1",
    );
}

#[test]
fn two_pods_with_one_address() {
    let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: a
status:
  podIP: 10.0.0.1
---
apiVersion: v1
kind: Pod
metadata:
  name: b
status:
  podIP: 10.0.0.2
  podIPs:
    - ip: 10.0.0.2
    - ip: 10.0.0.1
";
    assert_error(
        text,
        16,
        11,
        "status.podIPs[1].ip",
        "pod default/b has address 10.0.0.1, which pod default/a (at policy.yaml:1:1) has too",
    );
    let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: a
status:
  podIP: 10.0.0.1
---
apiVersion: v1
kind: Pod
metadata:
  name: b
status:
  podIP: 10.0.0.1
";
    assert_error(text, 13, 10, "status.podIP", "has too");
}

#[test]
fn a_pod_listing_its_address_twice_does_not_clash_with_itself() {
    let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: a
status:
  podIP: 10.0.0.1
  podIPs:
    - ip: 10.0.0.1
    - ip: 10.0.0.1
";
    assert_eq!(load(text).pods.len(), 1);
}

#[test]
fn yaml_syntax_error() {
    let diagnostic = assert_error("a: b\n  c: d\n", 2, 4, "", "YAML syntax error");
    assert!(
        diagnostic.message.contains("mapping values are not allowed"),
        "{diagnostic}"
    );
    assert_error(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [x\n",
        5,
        1,
        "",
        "expected ',' or ']'",
    );
}

#[test]
fn diagnostics_print_file_line_column_and_field() {
    let errors = load_str(FILE, &format!("{GLOBAL_POLICY}  selector: global()\n")).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "policy.yaml:6:13: spec.selector: global() can only be used in a rule's namespaceSelector"
    );
}

// ---- All errors at once ------------------------------------------------------------------

#[test]
fn all_errors_of_all_inputs_are_reported_and_nothing_is_returned() {
    let directory = scratch_directory("all_errors_of_all_inputs_are_reported");
    let first = format!(
        "{}---\n{}",
        namespace("Bad_Name"),
        egress_rule("      protocol: tcpp\n")
    );
    fs::write(directory.join("first.yaml"), first).unwrap();
    fs::write(
        directory.join("second.yaml"),
        format!("{}---\n{GLOBAL_POLICY}  tier: missing\n", namespace("fine")),
    )
    .unwrap();
    let errors = load_paths(&[&directory]).expect_err("three errors");
    let found: Vec<(String, usize, usize, &str)> = errors
        .0
        .iter()
        .map(|diagnostic| {
            let file = Path::new(&diagnostic.file)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (
                file,
                diagnostic.line,
                diagnostic.column,
                diagnostic.field.as_str(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("first.yaml".to_string(), 4, 9, "metadata.name"),
            ("first.yaml".to_string(), 13, 17, "spec.egress[0].protocol"),
            ("second.yaml".to_string(), 11, 9, "spec.tier"),
        ],
        "{errors}"
    );
}

#[test]
fn a_syntax_error_in_one_file_does_not_hide_errors_in_another() {
    let mut loader = Loader::default();
    loader.add_str("broken.yaml", "a: [\n");
    loader.add_str("policy.yaml", &format!("{GLOBAL_POLICY}  selector: global()\n"));
    let errors = loader.finish().unwrap_err();
    let files: Vec<&str> = errors.0.iter().map(|error| error.file.as_str()).collect();
    assert_eq!(files, ["broken.yaml", "policy.yaml"], "{errors}");
}

// ---- Defaults ----------------------------------------------------------------------------

#[test]
fn calico_types_defaulting() {
    let types = |spec: &str| {
        let set = load(&format!("{GLOBAL_POLICY}{spec}"));
        set.global_network_policies[0].spec.effective_types()
    };
    let rule = "    - action: Allow\n";
    assert_eq!(types("  selector: all()\n"), [PolicyType::Ingress]);
    assert_eq!(types(&format!("  ingress:\n{rule}")), [PolicyType::Ingress]);
    assert_eq!(types(&format!("  egress:\n{rule}")), [PolicyType::Egress]);
    assert_eq!(
        types(&format!("  ingress:\n{rule}  egress:\n{rule}")),
        [PolicyType::Ingress, PolicyType::Egress]
    );
    assert_eq!(
        types(&format!("  types: [Egress, Ingress]\n  egress:\n{rule}")),
        [PolicyType::Ingress, PolicyType::Egress]
    );
    assert_error(
        &format!("{GLOBAL_POLICY}  types: [Egress, Egress]\n"),
        6,
        19,
        "spec.types[1]",
        "list Ingress and Egress at most once each",
    );
    assert_eq!(types("  types: [Egress]\n"), [PolicyType::Egress]);
}

#[test]
fn kubernetes_policy_types_defaulting() {
    let types = |rules: &str| {
        let set = load(&format!("{KUBERNETES_POLICY}{rules}"));
        set.kubernetes_network_policies[0].spec.effective_policy_types()
    };
    assert_eq!(types(""), [PolicyType::Ingress]);
    assert_eq!(types("  ingress:\n    - {}\n"), [PolicyType::Ingress]);
    assert_eq!(
        types("  egress:\n    - {}\n"),
        [PolicyType::Ingress, PolicyType::Egress]
    );
    assert_eq!(types("  policyTypes: [Egress]\n"), [PolicyType::Egress]);
}

#[test]
fn tier_defaults() {
    let set = load(&format!("{GLOBAL_POLICY}  selector: all()\n"));
    assert_eq!(set.global_network_policies[0].spec.tier(), DEFAULT_TIER);
    // An empty tier is the default tier, as in Calico, and is not an error.
    let set = load(&format!("{GLOBAL_POLICY}  tier: \"\"\n"));
    assert_eq!(set.global_network_policies[0].spec.tier(), DEFAULT_TIER);

    let tiers = "\
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: security
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata:
  name: default
";
    let set = load(tiers);
    let security = &set.tiers[0];
    assert_eq!(security.effective_order(), None);
    assert_eq!(security.effective_default_action(), Action::Deny);
    assert_eq!(set.tiers[1].effective_order(), Some(1_000_000.0));
    assert_error(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: default\nspec:\n  order: 5\n",
        6,
        10,
        "spec.order",
        "fixed at 1000000",
    );
}

#[test]
fn ip_pool_block_size_defaults() {
    let pool = |name: &str, cidr: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: \"{cidr}\"\n"
        )
    };
    let set = load(&format!(
        "{}---\n{}",
        pool("v4", "10.0.0.0/16"),
        pool("v6", "fd00::/48")
    ));
    assert_eq!(set.ip_pools[0].spec.effective_block_size(), 26);
    assert_eq!(set.ip_pools[1].spec.effective_block_size(), 122);
    assert_error(
        &format!("{}  blockSize: 24\n", pool("small", "10.0.0.0/25")),
        7,
        14,
        "spec.blockSize",
        "smaller than one /24 block",
    );
}

#[test]
fn cidrs_are_masked() {
    let set = load(&egress_rule(
        "      destination:\n        nets: [10.1.2.3/8, 192.0.2.7]\n        notNets: [10.1.2.3/16]\n",
    ));
    let destination = &set.global_network_policies[0].spec.egress[0].destination;
    let nets: Vec<String> = destination.nets.iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32"]);
    assert_eq!(destination.not_nets[0].to_string(), "10.1.0.0/16");
    let set = load(&egress_rule(
        "      destination:\n        nets: [\"2001:db8::1/32\"]\n",
    ));
    let destination = &set.global_network_policies[0].spec.egress[0].destination;
    assert_eq!(destination.nets[0].to_string(), "2001:db8::/32");

    let set = load(&format!(
        "{KUBERNETES_POLICY}  egress:\n    - to:\n        - ipBlock:\n            cidr: 10.1.2.3/16\n            except: [10.1.2.3/24]\n"
    ));
    let block = set.kubernetes_network_policies[0].spec.egress[0].to[0]
        .ip_block
        .as_ref()
        .unwrap();
    assert_eq!(block.cidr.to_string(), "10.1.0.0/16");
    assert_eq!(block.except[0].to_string(), "10.1.2.0/24");
    // Pool CIDRs are the exception: Calico refuses host bits there (`ip_pools_follow_calicos_cidr_rules`).
}

// ---- Regressions found by fuzzing (fuzz/ manifest_loader) ----------------------------------

#[test]
fn tagged_scalar_in_place_of_an_object_is_positioned() {
    // saphyr gave the tagged scalar no position, so the error pointed at line 0.
    let text = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  !name web-";
    assert_error(text, 4, 3, "metadata", "expected struct ObjectMeta");
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    // saphyr built the tree recursively and overflowed the stack at a few thousand levels.
    for depth in [300, 3_000, 100_000] {
        for text in [
            format!("{}1", "- ".repeat(depth)),
            format!("{}1: 1", "? ".repeat(depth)),
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            // Indentation alone: quadratic in size, so not as deep.
            (0..depth.min(3_000))
                .map(|level| format!("{}a:\n", " ".repeat(level)))
                .collect(),
        ] {
            let errors = load_str(FILE, &text).expect_err("too deep to be a manifest");
            assert!(errors.0[0].line >= 1, "{errors}");
        }
    }
    let diagnostic = assert_error(&format!("{}1", "- ".repeat(300)), 1, 258, "", "");
    assert!(diagnostic.message.contains("nesting too deep"), "{diagnostic}");
}

#[test]
fn the_shipped_examples_load() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let set = load_paths(&[examples]).unwrap_or_else(|errors| panic!("{errors}"));
    assert!(!set.is_empty());
}

#[test]
fn the_default_tier_cannot_pass_and_tier_names_have_no_dots() {
    let text = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: default}\nspec: {defaultAction: Pass}\n---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: a.b}\nspec: {order: 5}\n";
    let errors = sluice_api::load_str("tiers.yaml", text).unwrap_err().0;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        (errors[0].line, errors[0].field.as_str()),
        (4, "spec.defaultAction")
    );
    assert!(errors[0].message.contains("must be Deny"));
    assert_eq!((errors[1].line, errors[1].field.as_str()), (8, "metadata.name"));
}

#[test]
fn the_nat_outgoing_address_annotation_is_checked() {
    let pool = |annotation: &str, nat: bool| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  annotations: {{sluice.io/nat-outgoing-address: '{annotation}'}}\nspec: {{cidr: 10.0.0.0/16, natOutgoing: {nat}}}\n"
        )
    };
    let loaded = sluice_api::load_str("pool.yaml", &pool("192.0.2.10", true)).unwrap();
    assert_eq!(
        loaded.ip_pools[0].nat_outgoing_address(),
        Some("192.0.2.10".parse().unwrap())
    );
    for (annotation, nat, message) in [
        ("nope", true, "not an IP address"),
        ("2001:db8::1", true, "address family"),
        ("192.0.2.10", false, "needs `spec.natOutgoing: true`"),
    ] {
        let errors = sluice_api::load_str("pool.yaml", &pool(annotation, nat))
            .unwrap_err()
            .0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains(message), "{errors:?}");
        assert_eq!(
            errors[0].field,
            "metadata.annotations.sluice.io/nat-outgoing-address"
        );
    }
}

#[test]
fn a_workload_endpoint_needs_an_interface_name_the_kernel_can_have() {
    let endpoint = |interface: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: node--1-k8s-web-eth0\n  namespace: prod\nspec:\n  node: node-1\n  pod: web\n  endpoint: eth0\n  interfaceName: {interface}\n  ipNetworks: [10.0.0.1/32]\n"
        )
    };
    assert_eq!(load(&endpoint("slc0123456789ab")).workload_endpoints.len(), 1);
    assert_error(
        &endpoint("slc0123456789abcdef"),
        10,
        18,
        "spec.interfaceName",
        "at most 15",
    );
    assert_error(
        &endpoint("'slc*'"),
        10,
        18,
        "spec.interfaceName",
        "not an interface name",
    );
}

#[test]
fn ip_pools_follow_calicos_cidr_rules() {
    let pool = |spec: &str| {
        format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  {spec}\n")
    };
    // validateIPPoolSpec (libcalico-go/lib/validator/v3/validator.go).
    assert_error(
        &pool("cidr: 10.1.2.3/16"),
        6,
        9,
        "spec.cidr",
        "not strictly masked",
    );
    assert_error(&pool("cidr: 10.1.2.3/16"), 6, 9, "spec.cidr", "write 10.1.0.0/16");
    assert_error(
        &pool("cidr: 169.254.0.0/20"),
        6,
        9,
        "spec.cidr",
        "link-local range 169.254.0.0/16",
    );
    assert_error(&pool("cidr: 160.0.0.0/4"), 6, 9, "spec.cidr", "link-local");
    assert_error(
        &pool("cidr: fe80::/64"),
        6,
        9,
        "spec.cidr",
        "link-local range fe80::/10",
    );
    // A disabled pool may be smaller than a block; an enabled one may not.
    assert_error(
        &pool("cidr: 10.0.0.0/28"),
        6,
        3,
        "spec.blockSize",
        "smaller than one /26 block",
    );
    load(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/28, disabled: true}\n",
    );
    load(&pool("cidr: 10.1.0.0/16"));
    load(&pool("cidr: 2001:db8::/64"));
}
