//! The gateway core on clusters written as manifests: which annotations or policy a client
//! follows, which gateways it gets per destination, and what happens when gateways fail,
//! drain or come and go.

use std::net::IpAddr;

use sluice_gateway::{Choice, GatewayHealth, Inputs, NodePlan, PodId, RouteAction, Scope, compute};

/// A cluster: FelixConfiguration (with `support`), namespaces `apps` and `egress`, and the
/// given extra documents.
fn cluster(support: &str, documents: &str) -> Inputs {
    let text = format!(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: default}}\nspec: {{egressIPSupport: {support}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: egress}}\n{documents}"
    );
    let resources = sluice_api::load_str("cluster.yaml", &text)
        .unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"));
    Inputs::from_resources(&resources)
}

fn namespace(name: &str, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\n"
    )
}

fn pod(namespace: &str, name: &str, node: &str, address: &str, labels: &str, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{{labels}}}\n  annotations: {{{annotations}}}\nspec: {{nodeName: {node}}}\nstatus: {{podIP: {address}}}\n"
    )
}

/// Gateways `egress/<name>` with label `egress-code: <code>`.
fn gateway(name: &str, node: &str, address: &str, code: &str) -> String {
    pod("egress", name, node, address, &format!("egress-code: {code}"), "")
}

fn all_ready(inputs: &mut Inputs) {
    for pod in &inputs.pods {
        inputs.health.insert(pod.id.clone(), GatewayHealth::Ready);
    }
}

fn id(text: &str) -> PodId {
    let (namespace, name) = text.split_once('/').unwrap();
    PodId::new(namespace, name)
}

/// The gateways (`namespace/name`) a client's traffic to `destination` goes through, or the
/// action's name.
fn via(plan: &NodePlan, client: &str, destination: &str) -> Vec<String> {
    let client = plan
        .client(&id(client))
        .unwrap_or_else(|| panic!("{client} is not a client: {plan:#?}"));
    let destination: IpAddr = destination.parse().unwrap();
    match client.route_for(destination).map(|route| &route.action) {
        None => vec!["normal (no route)".to_string()],
        Some(RouteAction::Normal) => vec!["normal".to_string()],
        Some(RouteAction::Unreachable) => vec!["unreachable".to_string()],
        Some(RouteAction::Drop) => vec!["drop".to_string()],
        Some(RouteAction::Gateways(hops)) => hops.iter().map(|hop| hop.gateway.to_string()).collect(),
    }
}

const RED: &str = "egress.projectcalico.org/selector: \"egress-code == 'red'\", egress.projectcalico.org/namespaceSelector: \"projectcalico.org/name == 'egress'\"";
const BLUE: &str = "egress.projectcalico.org/selector: \"egress-code == 'blue'\", egress.projectcalico.org/namespaceSelector: \"projectcalico.org/name == 'egress'\"";

fn red_and_blue_gateways() -> String {
    gateway("red-1", "node-2", "10.0.2.10", "red") + &gateway("blue-1", "node-2", "10.0.2.11", "blue")
}

#[test]
fn a_pods_annotations_win_over_its_namespaces() {
    let mut inputs = cluster(
        "EnabledPerNamespaceOrPerPod",
        &(namespace("apps", RED)
            + &pod("apps", "plain", "node-1", "10.0.1.1", "", "")
            + &pod("apps", "special", "node-1", "10.0.1.2", "", BLUE)
            + &red_and_blue_gateways()),
    );
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/plain", "192.0.2.1"), ["egress/red-1"]);
    assert_eq!(via(&plan, "apps/special", "192.0.2.1"), ["egress/blue-1"]);
    assert!(matches!(
        plan.client(&id("apps/special")).unwrap().choice,
        Choice::Selector {
            scope: Scope::Pod,
            ..
        }
    ));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn enabled_per_namespace_ignores_pod_annotations_and_disabled_ignores_all_with_warnings() {
    let documents = namespace("apps", RED)
        + &pod("apps", "special", "node-1", "10.0.1.2", "", BLUE)
        + &red_and_blue_gateways();
    let mut inputs = cluster("EnabledPerNamespace", &documents);
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/special", "192.0.2.1"), ["egress/red-1"]);
    assert_eq!(
        plan.warnings,
        [
            "pod apps/special: the pod's egress annotations ignored: egressIPSupport is EnabledPerNamespace on its node (EnabledPerNamespaceOrPerPod honours them)"
        ]
    );

    let mut inputs = cluster("Disabled", &documents);
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert!(plan.clients.is_empty(), "{plan:#?}");
    assert_eq!(
        plan.warnings,
        ["pod apps/special: egress annotations ignored: egressIPSupport is Disabled on its node"]
    );
}

#[test]
fn a_node_of_its_own_may_enable_what_the_default_disables() {
    let documents = namespace("apps", RED)
        + &pod("apps", "client", "node-1", "10.0.1.2", "", "")
        + &red_and_blue_gateways()
        + "---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node.node-1}\nspec: {egressIPSupport: EnabledPerNamespace, egressIPRoutingRulePriority: 150}\n";
    let mut inputs = cluster("Disabled", &documents);
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/client", "192.0.2.1"), ["egress/red-1"]);
    assert_eq!(plan.clients[0].rule_priority, 150);
}

#[test]
fn without_a_namespace_selector_only_gateways_in_the_clients_own_namespace_count() {
    let only_selector = "egress.projectcalico.org/selector: \"egress-code == 'red'\"";
    let mut inputs = cluster(
        "EnabledPerNamespace",
        &(namespace("apps", only_selector)
            + &pod("apps", "client", "node-1", "10.0.1.2", "", "")
            + &pod("apps", "local-red", "node-2", "10.0.2.20", "egress-code: red", "")
            + &gateway("red-1", "node-2", "10.0.2.10", "red")),
    );
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/client", "192.0.2.1"), ["apps/local-red"]);
}

const POLICY: &str = r#"---
apiVersion: projectcalico.org/v3
kind: EgressGatewayPolicy
metadata: {name: split}
spec:
  rules:
  - destination: {cidr: 10.0.0.0/8}
    description: inside, no gateway
  - destination: {cidr: 10.1.0.0/16}
    gateway: {selector: "egress-code == 'blue'", namespaceSelector: "projectcalico.org/name == 'egress'"}
  - gateway: {selector: "egress-code == 'red'", namespaceSelector: "projectcalico.org/name == 'egress'"}
"#;

#[test]
fn policy_rules_match_by_longest_prefix_and_a_rule_without_gateway_bypasses() {
    let mut inputs = cluster(
        "EnabledPerNamespaceOrPerPod",
        &(namespace("apps", "egress.projectcalico.org/egressGatewayPolicy: split")
            + &pod("apps", "client", "node-1", "10.0.1.2", "", "")
            + &red_and_blue_gateways()
            + POLICY),
    );
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/client", "10.1.2.3"), ["egress/blue-1"]);
    assert_eq!(via(&plan, "apps/client", "10.2.0.1"), ["normal"]);
    assert_eq!(via(&plan, "apps/client", "192.0.2.1"), ["egress/red-1"]);
    // The table lists the longest prefixes first, each naming its policy rule.
    let client = plan.client(&id("apps/client")).unwrap();
    let routes: Vec<(String, Option<usize>)> = client
        .routes
        .iter()
        .map(|route| (route.destination.to_string(), route.policy_rule))
        .collect();
    assert_eq!(
        routes,
        [
            ("10.1.0.0/16".to_string(), Some(1)),
            ("10.0.0.0/8".to_string(), Some(0)),
            ("0.0.0.0/0".to_string(), Some(2)),
        ]
    );
    assert_eq!(
        client.choice,
        Choice::Policy {
            scope: Scope::Namespace,
            name: "split".into()
        }
    );
}

#[test]
fn a_policy_wins_over_selectors_and_a_missing_policy_drops_everything() {
    let mut inputs = cluster(
        "EnabledPerNamespaceOrPerPod",
        &(namespace("apps", RED)
            + &pod(
                "apps",
                "with-policy",
                "node-1",
                "10.0.1.2",
                "",
                &format!("{BLUE}, egress.projectcalico.org/egressGatewayPolicy: split"),
            )
            + &pod(
                "apps",
                "typo",
                "node-1",
                "10.0.1.3",
                "",
                "egress.projectcalico.org/egressGatewayPolicy: splitt",
            )
            + &red_and_blue_gateways()
            + POLICY),
    );
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/with-policy", "10.2.0.1"), ["normal"]);
    assert_eq!(via(&plan, "apps/typo", "192.0.2.1"), ["drop"]);
    assert_eq!(via(&plan, "apps/typo", "10.2.0.1"), ["drop"]);
    assert_eq!(
        plan.client(&id("apps/typo")).unwrap().choice,
        Choice::MissingPolicy {
            scope: Scope::Pod,
            name: "splitt".into()
        }
    );
}

#[test]
fn a_pod_naming_a_missing_policy_follows_its_namespaces_policy_as_calico_does() {
    let mut inputs = cluster(
        "EnabledPerNamespaceOrPerPod",
        &(namespace("apps", "egress.projectcalico.org/egressGatewayPolicy: split")
            + &pod(
                "apps",
                "typo",
                "node-1",
                "10.0.1.3",
                "",
                "egress.projectcalico.org/egressGatewayPolicy: splitt",
            )
            + &red_and_blue_gateways()
            + POLICY),
    );
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/typo", "192.0.2.1"), ["egress/red-1"]);
}

fn prefer_local_cluster() -> Inputs {
    let policy = r#"---
apiVersion: projectcalico.org/v3
kind: EgressGatewayPolicy
metadata: {name: local}
spec:
  rules:
  - gateway: {selector: "egress-code == 'red'", namespaceSelector: "projectcalico.org/name == 'egress'"}
    gatewayPreference: PreferNodeLocal
"#;
    let mut inputs = cluster(
        "EnabledPerNamespace",
        &(namespace("apps", "egress.projectcalico.org/egressGatewayPolicy: local")
            + &pod("apps", "client", "node-1", "10.0.1.2", "", "")
            + &gateway("red-local", "node-1", "10.0.1.10", "red")
            + &gateway("red-remote-1", "node-2", "10.0.2.10", "red")
            + &gateway("red-remote-2", "node-3", "10.0.3.10", "red")
            + policy),
    );
    all_ready(&mut inputs);
    inputs
}

#[test]
fn prefer_node_local_uses_local_gateways_while_one_is_healthy_else_all() {
    let mut inputs = prefer_local_cluster();
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/client", "192.0.2.1"), ["egress/red-local"]);
    inputs
        .health
        .insert(id("egress/red-local"), GatewayHealth::NotReady);
    let plan = compute(&inputs, "node-1", Some(&plan)).unwrap();
    assert_eq!(
        via(&plan, "apps/client", "192.0.2.1"),
        ["egress/red-remote-1", "egress/red-remote-2"]
    );
    // Back up: local again.
    inputs.health.insert(id("egress/red-local"), GatewayHealth::Ready);
    let plan = compute(&inputs, "node-1", Some(&plan)).unwrap();
    assert_eq!(via(&plan, "apps/client", "192.0.2.1"), ["egress/red-local"]);
}

fn many_clients(clients: usize, gateways: usize, max: u32) -> Inputs {
    let annotations = format!("{RED}, egress.projectcalico.org/maxNextHops: \"{max}\"");
    let mut documents = namespace("apps", &annotations);
    for index in 0..clients {
        documents += &pod(
            "apps",
            &format!("client-{index}"),
            "node-1",
            &format!("10.0.1.{}", index + 1),
            "",
            "",
        );
    }
    for index in 0..gateways {
        documents += &gateway(
            &format!("red-{index}"),
            "node-2",
            &format!("10.0.2.{}", index + 1),
            "red",
        );
    }
    let mut inputs = cluster("EnabledPerNamespace", &documents);
    all_ready(&mut inputs);
    inputs
}

fn hop_counts(plan: &NodePlan) -> Vec<usize> {
    let mut gateways: Vec<PodId> = Vec::new();
    for client in &plan.clients {
        if let Some(RouteAction::Gateways(hops)) = client.routes.first().map(|route| &route.action) {
            gateways.extend(hops.iter().map(|hop| hop.gateway.clone()));
        }
    }
    let mut counts: std::collections::BTreeMap<PodId, usize> = Default::default();
    for gateway in gateways {
        *counts.entry(gateway).or_default() += 1;
    }
    counts.into_values().collect()
}

#[test]
fn max_next_hops_takes_the_least_used_gateways_deterministically() {
    let inputs = many_clients(6, 3, 1);
    let plan = compute(&inputs, "node-1", None).unwrap();
    // Six clients, three gateways, one hop each: two clients per gateway.
    assert_eq!(hop_counts(&plan), [2, 2, 2]);
    assert!(plan.clients.iter().all(|client| matches!(
        &client.routes[0].action,
        RouteAction::Gateways(hops) if hops.len() == 1
    )));
    // The same inputs give the same plan, with or without the previous one.
    assert_eq!(compute(&inputs, "node-1", None).unwrap(), plan);
    assert_eq!(compute(&inputs, "node-1", Some(&plan)).unwrap(), plan);
    // Two hops each: twelve hops over three gateways, four each.
    let plan = compute(&many_clients(6, 3, 2), "node-1", None).unwrap();
    assert_eq!(hop_counts(&plan), [4, 4, 4]);
}

#[test]
fn a_new_gateway_takes_new_clients_without_moving_existing_ones() {
    let before = compute(&many_clients(4, 2, 1), "node-1", None).unwrap();
    let after = compute(&many_clients(6, 3, 1), "node-1", Some(&before)).unwrap();
    for client in &before.clients {
        assert_eq!(
            after.client(&client.client).unwrap().routes,
            client.routes,
            "{} moved",
            client.client
        );
        assert_eq!(after.client(&client.client).unwrap().table, client.table);
    }
    // The two new clients both go to the new, unused gateway.
    assert_eq!(via(&after, "apps/client-4", "192.0.2.1"), ["egress/red-2"]);
    assert_eq!(via(&after, "apps/client-5", "192.0.2.1"), ["egress/red-2"]);
}

#[test]
fn clients_whose_gateways_are_all_down_or_unprobed_get_unreachable_never_the_normal_way() {
    let mut inputs = many_clients(1, 2, 0);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(
        via(&plan, "apps/client-0", "192.0.2.1"),
        ["egress/red-0", "egress/red-1"]
    );
    inputs.health.insert(id("egress/red-0"), GatewayHealth::NotReady);
    let plan = compute(&inputs, "node-1", Some(&plan)).unwrap();
    assert_eq!(via(&plan, "apps/client-0", "192.0.2.1"), ["egress/red-1"]);
    inputs.health.insert(id("egress/red-1"), GatewayHealth::NotReady);
    let plan = compute(&inputs, "node-1", Some(&plan)).unwrap();
    assert_eq!(via(&plan, "apps/client-0", "192.0.2.1"), ["unreachable"]);
    // Not probed yet counts as down.
    inputs.health.clear();
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/client-0", "192.0.2.1"), ["unreachable"]);
    // No gateway matches at all: the same.
    let mut inputs = many_clients(1, 0, 0);
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/client-0", "192.0.2.1"), ["unreachable"]);
}

#[test]
fn a_draining_gateway_keeps_its_clients_and_takes_no_new_ones() {
    let mut inputs = many_clients(2, 2, 1);
    let before = compute(&inputs, "node-1", None).unwrap();
    let drained = match &before.clients[0].routes[0].action {
        RouteAction::Gateways(hops) => hops[0].gateway.clone(),
        other => panic!("{other:?}"),
    };
    inputs.health.insert(drained.clone(), GatewayHealth::Draining);
    // A new client arrives while the gateway drains.
    inputs.pods.push({
        let mut pod = inputs.pods[0].clone();
        pod.id = id("apps/client-9");
        pod.addresses = vec!["10.0.1.99".parse().unwrap()];
        pod
    });
    let after = compute(&inputs, "node-1", Some(&before)).unwrap();
    let first = before.clients[0].client.to_string();
    assert_eq!(
        via(&after, &first, "192.0.2.1"),
        via(&before, &first, "192.0.2.1")
    );
    match &after.client(&before.clients[0].client).unwrap().routes[0].action {
        RouteAction::Gateways(hops) => assert_eq!(hops[0].health, GatewayHealth::Draining),
        other => panic!("{other:?}"),
    }
    assert_ne!(via(&after, "apps/client-9", "192.0.2.1"), [drained.to_string()]);
    assert_eq!(after.clients_of(&drained), [&before.clients[0].client]);
    // Without a previous plan (nothing established), nobody takes it.
    let fresh = compute(&inputs, "node-1", None).unwrap();
    assert!(fresh.clients_of(&drained).is_empty());
}

#[test]
fn gateways_are_never_clients_even_in_an_annotated_namespace() {
    let annotations = "egress.projectcalico.org/selector: \"egress-code == 'red'\"";
    let mut inputs = cluster(
        "EnabledPerNamespace",
        &(namespace("apps", annotations)
            + &pod("apps", "client", "node-1", "10.0.1.2", "", "")
            + &pod("apps", "red", "node-1", "10.0.1.10", "egress-code: red", "")),
    );
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/client", "192.0.2.1"), ["apps/red"]);
    assert!(plan.client(&id("apps/red")).is_none());
    assert_eq!(plan.warnings.len(), 1);
    assert!(plan.warnings[0].starts_with("pod apps/red: it is an egress gateway"));
}

#[test]
fn a_destination_of_a_family_no_gateway_has_is_unreachable() {
    let policy = r#"---
apiVersion: projectcalico.org/v3
kind: EgressGatewayPolicy
metadata: {name: six}
spec:
  rules:
  - destination: {cidr: "2001:db8::/32"}
    gateway: {selector: "egress-code == 'red'", namespaceSelector: "projectcalico.org/name == 'egress'"}
"#;
    let mut inputs = cluster(
        "EnabledPerNamespace",
        &(namespace("apps", "egress.projectcalico.org/egressGatewayPolicy: six")
            + &pod("apps", "client", "node-1", "10.0.1.2", "", "")
            + &gateway("red-1", "node-2", "10.0.2.10", "red")
            + policy),
    );
    all_ready(&mut inputs);
    let plan = compute(&inputs, "node-1", None).unwrap();
    assert_eq!(via(&plan, "apps/client", "2001:db8::1"), ["unreachable"]);
    assert_eq!(via(&plan, "apps/client", "192.0.2.1"), ["normal (no route)"]);
}

#[test]
fn only_clients_on_the_node_are_planned_and_tables_stay_put() {
    let mut documents = namespace("apps", RED) + &red_and_blue_gateways();
    for (name, node, address) in [
        ("b", "node-1", "10.0.1.2"),
        ("c", "node-1", "10.0.1.3"),
        ("elsewhere", "node-3", "10.0.3.2"),
    ] {
        documents += &pod("apps", name, node, address, "", "");
    }
    let mut inputs = cluster("EnabledPerNamespace", &documents);
    all_ready(&mut inputs);
    let before = compute(&inputs, "node-1", None).unwrap();
    let clients: Vec<String> = before
        .clients
        .iter()
        .map(|client| client.client.to_string())
        .collect();
    assert_eq!(clients, ["apps/b", "apps/c"]);
    assert_eq!(
        before.clients[0].table,
        *sluice_gateway::tables::TABLE_RANGE.start()
    );
    assert_eq!(before.clients[0].rule_priority, 100);
    // `a` arrives and sorts first: `b` and `c` keep their tables.
    inputs.pods.push({
        let mut pod = inputs
            .pods
            .iter()
            .find(|pod| pod.id == id("apps/b"))
            .unwrap()
            .clone();
        pod.id = id("apps/a");
        pod.addresses = vec!["10.0.1.1".parse().unwrap()];
        pod
    });
    let after = compute(&inputs, "node-1", Some(&before)).unwrap();
    for client in &before.clients {
        assert_eq!(after.client(&client.client).unwrap().table, client.table);
    }
    assert_eq!(
        after.client(&id("apps/a")).unwrap().table,
        sluice_gateway::tables::TABLE_RANGE.start() + 2
    );
}

#[test]
fn the_plan_lists_what_to_probe_and_gateway_pods_names_every_gateway_of_any_node() {
    let documents = namespace("apps", RED)
        + &pod("apps", "client", "node-1", "10.0.1.1", "", "")
        + &red_and_blue_gateways()
        + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: red-2\n  namespace: egress\n  labels: {egress-code: red}\n  deletionTimestamp: \"2026-12-05T10:00:00Z\"\nspec:\n  nodeName: node-3\n  containers:\n  - name: gateway\n    ports: [{name: health, containerPort: 8080}]\nstatus: {podIP: 10.0.3.10}\n";
    let inputs = cluster("EnabledPerNamespace", &documents);
    let plan = compute(&inputs, "node-1", None).unwrap();
    let probed: Vec<(String, Option<u16>, bool)> = plan
        .gateways
        .iter()
        .map(|target| (target.gateway.to_string(), target.health_port, target.deleting))
        .collect();
    // Not yet probed, so none is ready, and both red gateways are still to be probed; blue is
    // no client's.
    assert_eq!(
        probed,
        vec![
            ("egress/red-1".to_string(), None, false),
            ("egress/red-2".to_string(), Some(8080), true),
        ]
    );
    assert_eq!(via(&plan, "apps/client", "192.0.2.1"), vec!["unreachable"]);
    // The same set from any node's point of view, even one with no client.
    let everywhere: Vec<String> = sluice_gateway::gateway_pods(&inputs)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(everywhere, vec!["egress/red-1", "egress/red-2"]);
    assert!(compute(&inputs, "node-2", None).unwrap().gateways.is_empty());
}
