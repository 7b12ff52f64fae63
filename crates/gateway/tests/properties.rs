//! Properties over generated clusters: the hops a client gets are always gateways its selector
//! picks that are healthy (or draining ones it already had), never more than `maxNextHops`;
//! a client with a healthy matching gateway is never left unreachable; the plan is a function
//! of its inputs.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sluice_api::egress::EgressAnnotations;
use sluice_gateway::{Choice, GatewayHealth, Inputs, NodePlan, Pod, PodId, RouteAction, compute};
use sluice_selector::Selector;

const CODES: [&str; 2] = ["red", "blue"];
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

#[derive(Debug, Clone)]
struct GatewaySpec {
    code: usize,
    node: usize,
    /// None: not probed.
    health: Option<GatewayHealth>,
    earlier_health: Option<GatewayHealth>,
}

#[derive(Debug, Clone)]
struct ClientSpec {
    code: usize,
    max_next_hops: u32,
}

fn health() -> impl Strategy<Value = Option<GatewayHealth>> {
    prop_oneof![
        Just(None),
        Just(Some(GatewayHealth::Ready)),
        Just(Some(GatewayHealth::Ready)),
        Just(Some(GatewayHealth::NotReady)),
        Just(Some(GatewayHealth::Draining)),
    ]
}

fn gateway_spec() -> impl Strategy<Value = GatewaySpec> {
    (0..CODES.len(), 0..NODES.len(), health(), health()).prop_map(|(code, node, health, earlier_health)| {
        GatewaySpec {
            code,
            node,
            health,
            earlier_health,
        }
    })
}

fn client_spec() -> impl Strategy<Value = ClientSpec> {
    (0..CODES.len(), 0u32..4).prop_map(|(code, max_next_hops)| ClientSpec { code, max_next_hops })
}

fn felix() -> Vec<sluice_api::kept::FelixConfiguration> {
    sluice_api::load_str(
        "felix.yaml",
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {egressIPSupport: EnabledPerNamespaceOrPerPod}\n",
    )
    .unwrap()
    .felix_configurations
}

fn selector_for(code: usize) -> Selector {
    Selector::parse(&format!("egress-code == '{}'", CODES[code])).unwrap()
}

fn build(gateways: &[GatewaySpec], clients: &[ClientSpec], earlier: bool) -> Inputs {
    let mut inputs = Inputs {
        felix_configurations: felix(),
        ..Inputs::default()
    };
    for (index, spec) in gateways.iter().enumerate() {
        let id = PodId::new("egress", &format!("gateway-{index}"));
        inputs.pods.push(Pod {
            id: id.clone(),
            labels: BTreeMap::from([
                ("egress-code".to_string(), CODES[spec.code].to_string()),
                ("projectcalico.org/namespace".to_string(), "egress".to_string()),
                ("pcns.projectcalico.org/name".to_string(), "egress".to_string()),
            ]),
            addresses: vec![format!("10.0.2.{}", index + 1).parse().unwrap()],
            node: Some(NODES[spec.node].to_string()),
            annotations: EgressAnnotations::default(),
            health_port: Some(8080),
            deleting: false,
        });
        let health = if earlier { spec.earlier_health } else { spec.health };
        if let Some(health) = health {
            inputs.health.insert(id, health);
        }
    }
    for (index, spec) in clients.iter().enumerate() {
        inputs.pods.push(Pod {
            id: PodId::new("apps", &format!("client-{index}")),
            labels: BTreeMap::from([
                ("projectcalico.org/namespace".to_string(), "apps".to_string()),
                ("pcns.projectcalico.org/name".to_string(), "apps".to_string()),
            ]),
            addresses: vec![format!("10.0.1.{}", index + 1).parse().unwrap()],
            node: Some("node-1".to_string()),
            annotations: EgressAnnotations {
                selector: Some(selector_for(spec.code)),
                namespace_selector: Some(Selector::parse("projectcalico.org/name == 'egress'").unwrap()),
                policy: None,
                max_next_hops: Some(spec.max_next_hops),
            },
            health_port: None,
            deleting: false,
        });
    }
    inputs
}

fn previous_hops(plan: &NodePlan, client: &PodId) -> Vec<PodId> {
    match plan.client(client).map(|client| &client.routes[0].action) {
        Some(RouteAction::Gateways(hops)) => hops.iter().map(|hop| hop.gateway.clone()).collect(),
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn hops_are_selected_healthy_gateways_and_never_more_than_the_maximum(
        gateways in proptest::collection::vec(gateway_spec(), 0..7),
        clients in proptest::collection::vec(client_spec(), 1..7),
    ) {
        let earlier = compute(&build(&gateways, &clients, true), "node-1", None).unwrap();
        let inputs = build(&gateways, &clients, false);
        let plan = compute(&inputs, "node-1", Some(&earlier)).unwrap();
        prop_assert_eq!(&compute(&inputs, "node-1", Some(&earlier)).unwrap(), &plan);
        prop_assert_eq!(plan.clients.len(), clients.len());
        for (index, spec) in clients.iter().enumerate() {
            let id = PodId::new("apps", &format!("client-{index}"));
            let client = plan.client(&id).unwrap();
            let is_selector_choice = matches!(client.choice, Choice::Selector { .. });
            prop_assert!(is_selector_choice);
            prop_assert_eq!(client.routes.len(), 1);
            let had = previous_hops(&earlier, &id);
            let selector = selector_for(spec.code);
            let any_ready = inputs.pods.iter().any(|pod| {
                selector.matches(&pod.labels) && inputs.health.get(&pod.id) == Some(&GatewayHealth::Ready)
            });
            match &client.routes[0].action {
                RouteAction::Gateways(hops) => {
                    prop_assert!(!hops.is_empty());
                    if spec.max_next_hops > 0 {
                        prop_assert!(hops.len() <= spec.max_next_hops as usize, "{hops:?}");
                    }
                    for hop in hops {
                        let gateway = inputs.pods.iter().find(|pod| pod.id == hop.gateway).unwrap();
                        prop_assert!(selector.matches(&gateway.labels), "{hop:?} not selected");
                        prop_assert_ne!(&hop.gateway, &id);
                        let health = inputs.health.get(&hop.gateway).copied();
                        prop_assert_eq!(health, Some(hop.health));
                        match hop.health {
                            GatewayHealth::Ready => {}
                            GatewayHealth::Draining => prop_assert!(had.contains(&hop.gateway), "new client on draining {hop:?}"),
                            GatewayHealth::NotReady => prop_assert!(false, "unhealthy hop {hop:?}"),
                        }
                    }
                }
                RouteAction::Unreachable => prop_assert!(!any_ready, "unreachable with a ready gateway"),
                other => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
