//! Egress gateways in Calico Enterprise's resources: the EgressGatewayPolicy kind, the
//! `egress.projectcalico.org/*` annotations on Namespaces and Pods, and the FelixConfiguration
//! egress fields. Every rule is checked with its error text, file, line, column and field.

use std::time::Duration;

use sluice_api::egress::{
    EgressAnnotations, EgressConfiguration, EgressIpSupport, GatewayPreference, egress_configuration,
};
use sluice_api::{Diagnostic, Kind, Resource, ResourceSet, load_str};

const FILE: &str = "egress.yaml";

fn load(text: &str) -> ResourceSet {
    load_str(FILE, text).unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
}

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

/// Calico Enterprise's reference example (docs.tigera.io, EgressGatewayPolicy).
const REFERENCE_POLICY: &str = r#"apiVersion: projectcalico.org/v3
kind: EgressGatewayPolicy
metadata:
  name: my-egwpolicy
spec:
  rules:
  - destination:
      cidr: 10.0.0.0/8
    description: "Local: no gateway"
  - destination:
      cidr: 11.0.0.0/8
    description: "Gateway to on prem"
    gateway:
      namespaceSelector: "projectcalico.org/name == 'default'"
      selector: "egress-code == 'blue'"
      maxNextHops: 2
  - description: "Gateway to internet"
    gateway:
      namespaceSelector: "projectcalico.org/name == 'default'"
      selector: "egress-code == 'red'"
    gatewayPreference: PreferNodeLocal
"#;

#[test]
fn calicos_reference_policy_loads_with_its_defaults_and_round_trips() {
    let set = load(REFERENCE_POLICY);
    let policy = &set.egress_gateway_policies[0];
    let rules = &policy.spec.rules;
    assert_eq!(rules.len(), 3);
    assert!(rules[0].gateway.is_none());
    assert_eq!(rules[0].destination_cidr().to_string(), "10.0.0.0/8");
    assert_eq!(rules[1].gateway.as_ref().unwrap().max_next_hops, 2);
    assert_eq!(rules[1].preference(), GatewayPreference::None);
    // No destination: the default route.
    assert_eq!(rules[2].destination_cidr().to_string(), "0.0.0.0/0");
    assert_eq!(rules[2].preference(), GatewayPreference::PreferNodeLocal);
    // Stored, listed and read back under its own key.
    let resource = Resource::EgressGatewayPolicy(policy.clone());
    assert_eq!(resource.kind(), Kind::EgressGatewayPolicy);
    assert_eq!(
        resource.key(),
        "/sluice/resources/projectcalico.org/egressgatewaypolicy/my-egwpolicy"
    );
    let decoded = Resource::decode(&resource.encode(), 9).unwrap();
    assert_eq!(decoded.to_manifest(), resource.to_manifest());
    // Enforced (each node's agent routes its clients), so no warning.
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    assert!(Kind::EgressGatewayPolicy.is_enforced());
}

fn policy_with_rules(rules: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: EgressGatewayPolicy\nmetadata:\n  name: p\nspec:\n  rules:\n{rules}"
    )
}

#[test]
fn bad_policies_are_located() {
    let table: &[(&str, usize, usize, &str, &str)] = &[
        (
            "    []\n",
            7,
            5,
            "spec.rules",
            "an EgressGatewayPolicy needs at least one rule",
        ),
        (
            "  - destination: {cidr: 10.0.0.0/8}\n    gateway: {namespaceSelector: all()}\n",
            8,
            14,
            "spec.rules[0].gateway.selector",
            "a gateway needs a selector",
        ),
        (
            "  - destination: {cidr: 10.0.0.0/8}\n    gateway: {selector: ''}\n",
            8,
            25,
            "spec.rules[0].gateway.selector",
            "a gateway needs a selector",
        ),
        (
            "  - destination: {cidr: 10.0.0.0/8}\n  - destination: {cidr: 192.168.1.0/16}\n    gateway: {selector: a == 'b'}\n",
            8,
            25,
            "spec.rules[1].destination.cidr",
            "destination CIDR is not strictly masked: `192.168.1.0/16` has address bits set past the prefix; write 192.168.0.0/16",
        ),
        (
            "  - destination: {cidr: 10.0.0.0/8}\n  - destination: {cidr: 10.0.0.0/8}\n    gateway: {selector: a == 'b'}\n",
            8,
            25,
            "spec.rules[1].destination.cidr",
            "destination 10.0.0.0/8 is already the destination of spec.rules[0]",
        ),
        (
            "  - gateway: {selector: a == 'b'}\n  - destination: {cidr: 0.0.0.0/0}\n",
            8,
            25,
            "spec.rules[1].destination.cidr",
            "destination 0.0.0.0/0 is already the destination of spec.rules[0]",
        ),
        (
            "  - destination: {cidr: 10.0.0.0/8}\n    gateway: {selector: a == }\n",
            8,
            25,
            "spec.rules[0].gateway.selector",
            "invalid selector",
        ),
        (
            "  - gateway: {selector: a == 'b', maxNextHops: -1}\n",
            7,
            48,
            "spec.rules[0].gateway.maxNextHops",
            "invalid value",
        ),
        (
            "  - gateway: {selector: a == 'b'}\n    gatewayPreference: Local\n",
            8,
            24,
            "spec.rules[0].gatewayPreference",
            "unknown variant `Local`, expected `None` or `PreferNodeLocal`",
        ),
        (
            "  - destination: {cidr: 10.0.0.0/8}\n    gateway: {selector: a == 'b', namespaceSelector: global()}\n",
            8,
            54,
            "spec.rules[0].gateway.namespaceSelector",
            "global() can only be used",
        ),
        (
            "  - destination: {cidr: 10.0.0.0/8, port: 80}\n",
            7,
            37,
            "spec.rules[0].destination.port",
            "unknown field `port`",
        ),
    ];
    for (rules, line, column, field, hint) in table {
        assert_error(&policy_with_rules(rules), *line, *column, field, hint);
    }
}

#[test]
fn an_egress_gateway_policy_has_no_namespace() {
    assert_error(
        "apiVersion: projectcalico.org/v3\nkind: EgressGatewayPolicy\nmetadata: {name: p, namespace: prod}\nspec: {rules: [{gateway: {selector: all()}}]}\n",
        3,
        32,
        "metadata.namespace",
        "EgressGatewayPolicy is cluster-scoped",
    );
}

fn namespace_with(annotations: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  annotations:\n{annotations}")
}

fn pod_with(annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: prod\n  annotations:\n{annotations}status: {{podIP: 10.0.0.5}}\n"
    )
}

#[test]
fn bad_annotations_are_located_on_namespaces_and_pods() {
    let table: &[(&str, &str, &str)] = &[
        (
            "    egress.projectcalico.org/selector: \"egress-code == \"\n",
            "metadata.annotations.egress.projectcalico.org/selector",
            "invalid selector",
        ),
        (
            "    egress.projectcalico.org/namespaceSelector: \"name in {\"\n",
            "metadata.annotations.egress.projectcalico.org/namespaceSelector",
            "invalid selector",
        ),
        (
            "    egress.projectcalico.org/namespaceSelector: global()\n",
            "metadata.annotations.egress.projectcalico.org/namespaceSelector",
            "global() can only be used",
        ),
        (
            "    egress.projectcalico.org/maxNextHops: two\n",
            "metadata.annotations.egress.projectcalico.org/maxNextHops",
            "`two` is not a number of gateways",
        ),
        (
            "    egress.projectcalico.org/maxNextHops: \"-1\"\n",
            "metadata.annotations.egress.projectcalico.org/maxNextHops",
            "`-1` is not a number of gateways",
        ),
        (
            "    egress.projectcalico.org/egressGatewayPolicy: My_Policy\n",
            "metadata.annotations.egress.projectcalico.org/egressGatewayPolicy",
            "`My_Policy` cannot name an EgressGatewayPolicy",
        ),
    ];
    for (annotation, field, hint) in table {
        // The annotation is on line 6 of a namespace and line 7 of a pod, its value after the key.
        let column = annotation.find(": ").unwrap() + 3;
        assert_error(&namespace_with(annotation), 6, column, field, hint);
        assert_error(&pod_with(annotation), 7, column, field, hint);
    }
}

#[test]
fn annotations_read_as_calico_reads_them_and_unused_ones_are_warned_about() {
    let set = load(&pod_with(
        "    egress.projectcalico.org/selector: egress-code == 'red'\n    egress.projectcalico.org/maxNextHops: \"2\"\n    egress.projectcalico.org/egressGatewayPolicy: internet\n",
    ));
    let annotations = EgressAnnotations::read(&set.pods[0].metadata).unwrap();
    assert_eq!(annotations.policy.as_deref(), Some("internet"));
    assert_eq!(annotations.max_next_hops, Some(2));
    assert_eq!(
        annotations.selector.unwrap().canonical(),
        "egress-code == \"red\""
    );
    // The policy wins (Calico's ActiveEgressCalculator): the selector and maximum do nothing.
    let warnings: Vec<String> = set.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("egress.yaml:7:40: metadata.annotations.egress.projectcalico.org/selector: `egress.projectcalico.org/selector` has no effect: `egress.projectcalico.org/egressGatewayPolicy: internet` chooses the gateways"),
        "{warnings:#?}"
    );
    // A namespace selector without a selector picks nothing.
    let set = load(&namespace_with(
        "    egress.projectcalico.org/namespaceSelector: all()\n",
    ));
    assert_eq!(set.warnings.len(), 1);
    assert!(
        set.warnings[0]
            .message
            .contains("has no effect without `egress.projectcalico.org/selector`")
    );
    // Empty values are absent.
    let set = load(&namespace_with("    egress.projectcalico.org/selector: ''\n"));
    assert!(
        EgressAnnotations::read(&set.namespaces[0].metadata)
            .unwrap()
            .is_empty()
    );
}

const FELIX: &str =
    "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec:\n";

#[test]
fn bad_felix_egress_fields_are_located() {
    let table: &[(&str, usize, usize, &str, &str)] = &[
        (
            "  egressIPSupport: Enabled\n",
            5,
            20,
            "spec.egressIPSupport",
            "unknown variant `Enabled`, expected one of `Disabled`, `EnabledPerNamespace`, `EnabledPerNamespaceOrPerPod`",
        ),
        (
            "  egressIPRoutingRulePriority: 32766\n",
            5,
            32,
            "spec.egressIPRoutingRulePriority",
            "32766 is not a usable rule priority; use 1 to 32765",
        ),
        (
            "  egressIPRoutingRulePriority: 0\n",
            5,
            32,
            "spec.egressIPRoutingRulePriority",
            "0 is not a usable rule priority",
        ),
        (
            "  egressIPVXLANPort: 0\n",
            5,
            22,
            "spec.egressIPVXLANPort",
            "port 0",
        ),
        (
            "  egressIPVXLANPort: 70000\n",
            5,
            22,
            "spec.egressIPVXLANPort",
            "invalid value",
        ),
        (
            "  egressIPVXLANVNI: 16777216\n",
            5,
            21,
            "spec.egressIPVXLANVNI",
            "16777216 is not a VXLAN network identifier",
        ),
        (
            "  egressGatewayPollInterval: 0s\n",
            5,
            30,
            "spec.egressGatewayPollInterval",
            "the interval must be more than 0",
        ),
        (
            "  egressGatewayPollInterval: 1d\n",
            5,
            30,
            "spec.egressGatewayPollInterval",
            "unknown unit `d`",
        ),
        (
            "  egressGatewayPollFailureCount: 0\n",
            5,
            34,
            "spec.egressGatewayPollFailureCount",
            "at least 1 failed poll",
        ),
    ];
    for (field_text, line, column, field, hint) in table {
        assert_error(&format!("{FELIX}{field_text}"), *line, *column, field, hint);
    }
}

#[test]
fn a_nodes_egress_configuration_takes_its_own_fields_then_defaults_then_sluices() {
    let set = load(&format!(
        "{FELIX}  egressIPSupport: EnabledPerNamespace\n  egressIPRoutingRulePriority: 200\n  egressGatewayPollInterval: 250ms\n---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: node.node-1}}\nspec:\n  egressIPSupport: EnabledPerNamespaceOrPerPod\n  egressIPVXLANVNI: 5000\n"
    ));
    // Typed, so not in the "kept but not used" warning.
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    let node_1 = egress_configuration(&set.felix_configurations, "node-1");
    assert_eq!(
        node_1,
        EgressConfiguration {
            support: EgressIpSupport::EnabledPerNamespaceOrPerPod,
            routing_rule_priority: 200,
            vxlan_port: 4790,
            vxlan_vni: 5000,
            poll_interval: Duration::from_millis(250),
            poll_failure_count: 3,
        }
    );
    let node_2 = egress_configuration(&set.felix_configurations, "node-2");
    assert_eq!(node_2.support, EgressIpSupport::EnabledPerNamespace);
    assert_eq!(node_2.vxlan_vni, 4097);
    // Nothing configured: disabled, Calico's rule priority, port and VNI, and Sluice's polling
    // (100 ms × 3, so a dead gateway is dropped well inside a second).
    let nothing = egress_configuration(&[], "node-1");
    assert_eq!(nothing, EgressConfiguration::default());
    assert_eq!(nothing.support, EgressIpSupport::Disabled);
    assert_eq!(nothing.routing_rule_priority, 100);
    assert_eq!(
        nothing.poll_interval * nothing.poll_failure_count,
        Duration::from_millis(300)
    );
    // Read back from the datastore unchanged.
    for resource in set.into_resources() {
        let decoded = Resource::decode(&resource.encode(), 1).unwrap();
        assert_eq!(decoded.to_manifest(), resource.to_manifest());
    }
}
