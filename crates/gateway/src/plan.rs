//! A node's desired state: for each client pod on the node, the routing rule priority, its
//! table, and per destination CIDR its next hops, or unreachable (its gateways are all gone or
//! unhealthy: fail closed, never the node's default route), or drop (a missing policy), or the
//! normal way (a policy rule without a gateway: the shell writes a `throw` route so the lookup
//! falls back to the main table).
//!
//! Gateways are the pods some client's selector picks; they are never clients themselves, so
//! gateway traffic cannot loop through gateways.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use sluice_api::egress::EgressConfiguration;
use sluice_selector::Selector;

use crate::choice::{Choice, EffectiveRule, RuleAction, choose};
use crate::hops::{Candidate, Request};
use crate::model::{GatewayHealth, Inputs, Pod, PodId};
use crate::tables::{TABLE_RANGE, allocate};

/// A node's egress gateway routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub node: String,
    pub configuration: EgressConfiguration,
    /// In client order.
    pub clients: Vec<ClientPlan>,
    /// Every gateway some local client's rule may pick, whatever its health, in name order:
    /// what the node's health prober checks.
    pub gateways: Vec<GatewayTarget>,
    /// What was ignored and why, one line each, naming the pod.
    pub warnings: Vec<String>,
}

/// One client's rule and table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPlan {
    pub client: PodId,
    /// One rule `from <address> lookup <table>` per address, at `rule_priority`.
    pub addresses: Vec<IpAddr>,
    pub rule_priority: u32,
    pub table: u32,
    pub choice: Choice,
    /// Longest prefix first.
    pub routes: Vec<Route>,
}

/// One destination of a client's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpNet,
    /// The EgressGatewayPolicy rule it comes from, by index, if a policy chose.
    pub policy_rule: Option<usize>,
    pub action: RouteAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// The node's normal routing (`throw`).
    Normal,
    /// Spread over these gateways (ECMP), in name order.
    Gateways(Vec<Hop>),
    /// The gateways are all gone or unhealthy: unreachable, never the normal way.
    Unreachable,
    /// A policy named but missing: dropped (blackhole), as in Calico.
    Drop,
}

/// A next hop: a gateway pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub gateway: PodId,
    pub address: IpAddr,
    pub node: String,
    pub health: GatewayHealth,
}

/// A gateway the node's prober checks: `/readiness` on `health_port` at `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayTarget {
    pub gateway: PodId,
    pub address: IpAddr,
    pub node: String,
    /// The pod's named port `health`; `None` when it has none (it can never be probed ready).
    pub health_port: Option<u16>,
    pub deleting: bool,
    pub health: GatewayHealth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// More clients than tables: nothing is planned, so the shell keeps what it has.
    TablesExhausted { clients: usize, tables: usize },
}

impl fmt::Display for PlanError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::TablesExhausted { clients, tables } => write!(
                formatter,
                "{clients} egress gateway clients on one node, but only {tables} routing tables to give them"
            ),
        }
    }
}

impl std::error::Error for PlanError {}

impl ClientPlan {
    /// The route a destination takes: the longest prefix that holds it; `None` is the normal
    /// way.
    pub fn route_for(&self, destination: IpAddr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|route| route.destination.contains(&destination))
            .max_by_key(|route| route.destination.prefix_len())
    }
}

impl NodePlan {
    /// The clients routed through a gateway, in client order.
    pub fn clients_of(&self, gateway: &PodId) -> Vec<&PodId> {
        self.clients
            .iter()
            .filter(|client| {
                client.routes.iter().any(|route| match &route.action {
                    RouteAction::Gateways(hops) => hops.iter().any(|hop| &hop.gateway == gateway),
                    _ => false,
                })
            })
            .map(|client| &client.client)
            .collect()
    }

    pub fn client(&self, client: &PodId) -> Option<&ClientPlan> {
        self.clients.iter().find(|plan| &plan.client == client)
    }
}

/// The plan for `node`. `previous` is the plan last programmed, whose tables and hops are kept
/// where still valid (`tables`, `hops`).
pub fn compute(inputs: &Inputs, node: &str, previous: Option<&NodePlan>) -> Result<NodePlan, PlanError> {
    let configuration = inputs.configuration(node);
    let mut configurations: BTreeMap<&str, EgressConfiguration> = BTreeMap::new();
    let mut warnings = Vec::new();

    // Every scheduled pod's choice: a client on any node names the gateways, which must not
    // be clients anywhere.
    let mut choices: Vec<(&Pod, Choice, Vec<EffectiveRule>)> = Vec::new();
    for pod in &inputs.pods {
        let Some(pod_node) = pod.node.as_deref() else {
            continue;
        };
        let support = configurations
            .entry(pod_node)
            .or_insert_with(|| inputs.configuration(pod_node))
            .support;
        let (choice, ignored) = choose(
            &pod.id.namespace,
            &pod.annotations,
            &inputs.namespace_annotations(&pod.id.namespace),
            support,
            &inputs.policies,
        );
        if pod_node == node {
            warnings.extend(
                ignored
                    .into_iter()
                    .map(|warning| format!("pod {}: {warning}", pod.id)),
            );
        }
        let rules = choice.rules(&pod.id.namespace, &pod.addresses, &inputs.policies);
        choices.push((pod, choice, rules));
    }
    let picked = picked_by(inputs, choices.iter().flat_map(|(_, _, rules)| rules.iter()));
    let gateways: BTreeSet<PodId> = picked
        .values()
        .flatten()
        .map(|&index| inputs.pods[index].id.clone())
        .collect();

    let mut clients: Vec<(&Pod, Choice, Vec<EffectiveRule>)> = Vec::new();
    for (pod, choice, rules) in choices {
        if pod.node.as_deref() != Some(node) || choice == Choice::None {
            continue;
        }
        if gateways.contains(&pod.id) {
            warnings.push(format!(
                "pod {}: it is an egress gateway (a client's selector picks it), so its own egress choice is ignored; gateways never route through gateways",
                pod.id
            ));
            continue;
        }
        clients.push((pod, choice, rules));
    }
    clients.sort_by(|left, right| left.0.id.cmp(&right.0.id));

    let client_ids: Vec<PodId> = clients.iter().map(|(pod, _, _)| pod.id.clone()).collect();
    let previous_tables: BTreeMap<PodId, u32> = previous
        .map(|plan| {
            plan.clients
                .iter()
                .map(|client| (client.client.clone(), client.table))
                .collect()
        })
        .unwrap_or_default();
    let tables = allocate(&client_ids, &previous_tables, TABLE_RANGE)?;
    let previous_clients: BTreeMap<&PodId, &ClientPlan> = previous
        .map(|plan| {
            plan.clients
                .iter()
                .map(|client| (&client.client, client))
                .collect()
        })
        .unwrap_or_default();

    // The candidates and previous hops of every (client, gateway rule), then the two passes:
    // what each client keeps counts as usage before anyone takes a new gateway.
    let mut needs = Vec::new();
    for (client_index, (pod, _, rules)) in clients.iter().enumerate() {
        for (rule_index, rule) in rules.iter().enumerate() {
            let RuleAction::Gateways {
                selector,
                max_next_hops,
                prefer_node_local,
            } = &rule.action
            else {
                continue;
            };
            let candidates = picked[selector]
                .iter()
                .map(|&index| &inputs.pods[index])
                .filter(|gateway| gateway.id != pod.id)
                .filter_map(|gateway| {
                    let address = gateway
                        .addresses
                        .iter()
                        .copied()
                        .find(|address| address.is_ipv4() == rule.destination.addr().is_ipv4())?;
                    Some(Candidate {
                        id: gateway.id.clone(),
                        address,
                        node: gateway.node.clone()?,
                        health: inputs.health_of(&gateway.id),
                    })
                })
                .collect();
            needs.push(Need {
                client: client_index,
                rule: rule_index,
                candidates,
                previous: previous_hops(previous_clients.get(&pod.id).copied(), rule.destination),
                max_next_hops: *max_next_hops,
                prefer_node_local: *prefer_node_local,
            });
        }
    }
    let mut targets: BTreeMap<PodId, GatewayTarget> = BTreeMap::new();
    for candidate in needs.iter().flat_map(|need| need.candidates.iter()) {
        targets.entry(candidate.id.clone()).or_insert_with(|| {
            let pod = inputs.pods.iter().find(|pod| pod.id == candidate.id);
            GatewayTarget {
                gateway: candidate.id.clone(),
                address: candidate.address,
                node: candidate.node.clone(),
                health_port: pod.and_then(|pod| pod.health_port),
                deleting: pod.is_some_and(|pod| pod.deleting),
                health: candidate.health,
            }
        });
    }
    let mut usage: BTreeMap<PodId, usize> = BTreeMap::new();
    let kept: Vec<Vec<usize>> = needs
        .iter()
        .map(|need| {
            let kept = need.request(&client_ids[need.client], node).kept();
            for &index in &kept {
                *usage.entry(need.candidates[index].id.clone()).or_default() += 1;
            }
            kept
        })
        .collect();
    let mut chosen: BTreeMap<(usize, usize), Vec<Hop>> = BTreeMap::new();
    for (need, kept) in needs.iter().zip(&kept) {
        let hops = need.request(&client_ids[need.client], node).fill(kept, &usage);
        for &index in &hops {
            if !kept.contains(&index) {
                *usage.entry(need.candidates[index].id.clone()).or_default() += 1;
            }
        }
        let hops = hops
            .into_iter()
            .map(|index| {
                let candidate = &need.candidates[index];
                Hop {
                    gateway: candidate.id.clone(),
                    address: candidate.address,
                    node: candidate.node.clone(),
                    health: candidate.health,
                }
            })
            .collect();
        chosen.insert((need.client, need.rule), hops);
    }

    let plans = clients
        .into_iter()
        .enumerate()
        .map(|(client_index, (pod, choice, rules))| {
            let mut routes: Vec<Route> = rules
                .into_iter()
                .enumerate()
                .map(|(rule_index, rule)| Route {
                    destination: rule.destination,
                    policy_rule: rule.policy_rule,
                    action: match rule.action {
                        RuleAction::Normal => RouteAction::Normal,
                        RuleAction::Drop => RouteAction::Drop,
                        RuleAction::Gateways { .. } => match chosen.remove(&(client_index, rule_index)) {
                            Some(hops) if !hops.is_empty() => RouteAction::Gateways(hops),
                            _ => RouteAction::Unreachable,
                        },
                    },
                })
                .collect();
            routes.sort_by(|left, right| {
                (right.destination.prefix_len(), left.destination)
                    .cmp(&(left.destination.prefix_len(), right.destination))
            });
            ClientPlan {
                table: tables[&pod.id],
                client: pod.id.clone(),
                addresses: pod.addresses.clone(),
                rule_priority: configuration.routing_rule_priority,
                choice,
                routes,
            }
        })
        .collect();
    Ok(NodePlan {
        node: node.to_string(),
        configuration,
        clients: plans,
        gateways: targets.into_values().collect(),
        warnings,
    })
}

/// One client's gateway rule, with what the choice needs.
struct Need {
    client: usize,
    rule: usize,
    candidates: Vec<Candidate>,
    previous: Vec<PodId>,
    max_next_hops: u32,
    prefer_node_local: bool,
}

impl Need {
    fn request<'a>(&'a self, client: &'a PodId, node: &'a str) -> Request<'a> {
        Request {
            client,
            client_node: node,
            candidates: &self.candidates,
            max_next_hops: self.max_next_hops,
            prefer_node_local: self.prefer_node_local,
            previous: &self.previous,
        }
    }
}

/// The gateways a client had for a destination in the previous plan.
fn previous_hops(previous: Option<&ClientPlan>, destination: IpNet) -> Vec<PodId> {
    previous
        .and_then(|plan| plan.routes.iter().find(|route| route.destination == destination))
        .map(|route| match &route.action {
            RouteAction::Gateways(hops) => hops.iter().map(|hop| hop.gateway.clone()).collect(),
            _ => Vec::new(),
        })
        .unwrap_or_default()
}

/// Per gateway selector of `rules`, the scheduled pods it picks (indices into `inputs.pods`).
fn picked_by<'a>(
    inputs: &Inputs,
    rules: impl Iterator<Item = &'a EffectiveRule>,
) -> BTreeMap<Selector, Vec<usize>> {
    let selectors: BTreeSet<Selector> = rules
        .filter_map(|rule| match &rule.action {
            RuleAction::Gateways { selector, .. } => Some(selector.clone()),
            _ => None,
        })
        .collect();
    selectors
        .into_iter()
        .map(|selector| {
            let pods = (0..inputs.pods.len())
                .filter(|&index| {
                    let pod = &inputs.pods[index];
                    pod.node.is_some() && selector.matches(&pod.labels)
                })
                .collect();
            (selector, pods)
        })
        .collect()
}

/// Every pod some client (on any node) may route through: the pods whose endpoints are
/// egress gateways, which the dataplane lets return their clients' replies.
pub fn gateway_pods(inputs: &Inputs) -> BTreeSet<PodId> {
    let mut rules = Vec::new();
    for pod in &inputs.pods {
        let Some(node) = pod.node.as_deref() else {
            continue;
        };
        let (choice, _) = choose(
            &pod.id.namespace,
            &pod.annotations,
            &inputs.namespace_annotations(&pod.id.namespace),
            inputs.configuration(node).support,
            &inputs.policies,
        );
        rules.extend(choice.rules(&pod.id.namespace, &pod.addresses, &inputs.policies));
    }
    picked_by(inputs, rules.iter())
        .values()
        .flatten()
        .map(|&index| inputs.pods[index].id.clone())
        .collect()
}
