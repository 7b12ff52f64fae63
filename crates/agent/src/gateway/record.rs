//! The record of a node's egress gateway routing, published under the status prefix (outside
//! the watched `/sluice/`, like the node status) for `sluice get egress`: per client pod on the
//! node its table and, per destination, the gateways and the EgressGatewayPolicy rule that chose
//! them; per gateway the node's agent probes, its health as that agent last saw it.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sluice_gateway::{GatewayHealth, NodePlan, RouteAction};

/// Where the records live, one per node.
pub const EGRESS_PREFIX: &str = "/sluice-status/egress/";

pub fn egress_key(node: &str) -> String {
    format!("{EGRESS_PREFIX}{node}")
}

/// One node's egress gateway routing at `updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRecord {
    pub node: String,
    #[serde(with = "crate::status::timestamp")]
    pub updated: SystemTime,
    /// The datastore revision the plan was made from (the node status's `programmedRevision`
    /// once the agent's latest change reached the gateway shell).
    #[serde(default)]
    pub revision: i64,
    pub clients: Vec<ClientRecord>,
    pub gateways: Vec<GatewayRecord>,
    /// The plan's warnings (annotations ignored, and why).
    pub warnings: Vec<String>,
}

/// A client pod (`namespace/name`) on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientRecord {
    pub client: String,
    pub addresses: Vec<IpAddr>,
    pub table: u32,
    /// `"pod annotations"`, `"namespace annotations"`, `"policy NAME (pod annotation)"`, …
    pub chosen_by: String,
    /// Longest prefix first.
    pub routes: Vec<RouteRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRecord {
    /// A CIDR.
    pub destination: String,
    /// The EgressGatewayPolicy and the index of its rule that gave this destination.
    pub policy: Option<String>,
    pub policy_rule: Option<usize>,
    /// `gateways`, `normal`, `unreachable` (its gateways are all gone or unhealthy) or `drop`
    /// (a policy that does not exist).
    pub action: String,
    /// The gateways (`namespace/name`) the destination is spread over.
    pub gateways: Vec<String>,
}

/// A gateway the node's prober checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRecord {
    pub gateway: String,
    pub address: IpAddr,
    pub node: String,
    /// `ready`, `not-ready` or `draining`.
    pub health: String,
    /// When the health last changed, as this agent saw it.
    #[serde(default, with = "crate::status::timestamp::optional")]
    pub since: Option<SystemTime>,
    /// The last successful probe's round trip, in milliseconds.
    #[serde(default)]
    pub probe_milliseconds: Option<f64>,
    /// Why the last probe failed.
    #[serde(default)]
    pub last_error: Option<String>,
}

pub fn health_text(health: GatewayHealth) -> &'static str {
    match health {
        GatewayHealth::Ready => "ready",
        GatewayHealth::NotReady => "not-ready",
        GatewayHealth::Draining => "draining",
    }
}

impl EgressRecord {
    /// The record of `plan`, with the prober's view of each gateway from `gateway_record`.
    pub fn from_plan(
        plan: &NodePlan,
        revision: i64,
        gateway_record: impl Fn(&sluice_gateway::GatewayTarget) -> GatewayRecord,
    ) -> EgressRecord {
        let clients = plan
            .clients
            .iter()
            .map(|client| ClientRecord {
                client: client.client.to_string(),
                addresses: client.addresses.clone(),
                table: client.table,
                chosen_by: client.choice.to_string(),
                routes: client
                    .routes
                    .iter()
                    .map(|route| {
                        let (action, gateways) = match &route.action {
                            RouteAction::Gateways(hops) => (
                                "gateways",
                                hops.iter().map(|hop| hop.gateway.to_string()).collect(),
                            ),
                            RouteAction::Normal => ("normal", Vec::new()),
                            RouteAction::Unreachable => ("unreachable", Vec::new()),
                            RouteAction::Drop => ("drop", Vec::new()),
                        };
                        RouteRecord {
                            destination: route.destination.to_string(),
                            policy: client.choice.policy().map(str::to_string),
                            policy_rule: route.policy_rule,
                            action: action.to_string(),
                            gateways,
                        }
                    })
                    .collect(),
            })
            .collect();
        EgressRecord {
            node: plan.node.clone(),
            updated: SystemTime::now(),
            revision,
            clients,
            gateways: plan.gateways.iter().map(gateway_record).collect(),
            warnings: plan.warnings.clone(),
        }
    }
}
