//! The kernel's rules and tables read back into a plan, so an agent that restarts passes it to
//! [`compute`](crate::compute) as `previous`: no client's table moves and clients keep their
//! gateways.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{Rule, TableRoute, TableRouteKind};
use crate::choice::Choice;
use crate::model::{Inputs, PodId};
use crate::plan::{ClientPlan, Hop, NodePlan, Route, RouteAction};

/// The plan the kernel's `rules` and `routes` (Sluice's, from
/// [`RoutingSyncer::kernel_state`](super::RoutingSyncer::kernel_state)) stand for: each rule
/// whose source is an address of a pod on `node` makes that pod a client with the rule's table,
/// and the table's routes are its routes (gateways named by the pods holding their addresses;
/// an address no pod holds any more is left out). `None` when no rule names a pod on the node.
/// The choice is not in the kernel: every client's is `Choice::None`, which `compute` does not
/// read from a previous plan.
pub fn previous_from_kernel(
    inputs: &Inputs,
    node: &str,
    rules: &[Rule],
    routes: &[TableRoute],
) -> Option<NodePlan> {
    let mut tables: BTreeMap<PodId, u32> = BTreeMap::new();
    let mut sorted_rules = rules.to_vec();
    sorted_rules.sort();
    for rule in &sorted_rules {
        let Some(source) = rule.source() else {
            continue;
        };
        let source = IpAddr::V4(source);
        if let Some(pod) = inputs
            .pods
            .iter()
            .find(|pod| pod.node.as_deref() == Some(node) && pod.addresses.contains(&source))
        {
            tables.entry(pod.id.clone()).or_insert(rule.table);
        }
    }
    if tables.is_empty() {
        return None;
    }
    let configuration = inputs.configuration(node);
    let clients = tables
        .into_iter()
        .filter_map(|(client, table)| {
            let pod = inputs.pods.iter().find(|pod| pod.id == client)?;
            let mut client_routes: Vec<Route> = routes
                .iter()
                .filter(|route| route.table == table)
                .map(|route| Route {
                    destination: IpNet::V4(route.destination),
                    policy_rule: None,
                    action: action(inputs, &route.kind),
                })
                .collect();
            client_routes.sort_by(|left, right| {
                (right.destination.prefix_len(), left.destination)
                    .cmp(&(left.destination.prefix_len(), right.destination))
            });
            Some(ClientPlan {
                client,
                addresses: pod.addresses.clone(),
                rule_priority: configuration.routing_rule_priority,
                table,
                choice: Choice::None,
                routes: client_routes,
            })
        })
        .collect();
    Some(NodePlan {
        node: node.to_string(),
        configuration,
        clients,
        gateways: Vec::new(),
        warnings: Vec::new(),
    })
}

fn action(inputs: &Inputs, kind: &TableRouteKind) -> RouteAction {
    match kind {
        TableRouteKind::Throw => RouteAction::Normal,
        TableRouteKind::Unreachable => RouteAction::Unreachable,
        TableRouteKind::Blackhole => RouteAction::Drop,
        TableRouteKind::Gateways(gateways) => RouteAction::Gateways(
            gateways
                .iter()
                .filter_map(|&address| {
                    let address = IpAddr::V4(address);
                    let pod = inputs.pods.iter().find(|pod| pod.addresses.contains(&address))?;
                    Some(Hop {
                        gateway: pod.id.clone(),
                        address,
                        node: pod.node.clone().unwrap_or_default(),
                        health: inputs.health_of(&pod.id),
                    })
                })
                .collect(),
        ),
    }
}
