//! What egress gateway routing makes of a probe, from the record the source pod's node agent
//! published (`/sluice-status/egress/<node>`): the gateways its traffic to the destination is
//! spread over (the outside must see one of their addresses), or that it has none to take
//! (unreachable, or dropped for a policy that does not exist: the probe must not connect).
//! In-cluster destinations (pools, nodes) always take the normal way, as the agent's client
//! tables `throw` them.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use sluice_agent::gateway::record::{EGRESS_PREFIX, EgressRecord};

/// A probe's egress gateway route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressExpectation {
    /// `gateways`, `unreachable` or `drop`.
    pub route: String,
    /// The gateways (`namespace/name`) the flow may leave through.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Their addresses: the only sources the outside may see.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<IpAddr>,
}

impl EgressExpectation {
    /// Whether the flow may connect at all.
    pub fn routed(&self) -> bool {
        self.route == "gateways"
    }
}

/// Every node's published record.
pub fn read_records(store: &dyn sluice_store::Store) -> Vec<EgressRecord> {
    store
        .list(EGRESS_PREFIX)
        .map(|(values, _)| values)
        .unwrap_or_default()
        .iter()
        .filter_map(|value| serde_json::from_slice(&value.value).ok())
        .collect()
}

/// Waits (at most `limit`) until every node's record is of the revision its agent last
/// programmed (the gateway shell publishes on its own thread, a moment after the ruleset) and
/// every gateway some node probes is ready there, so a lab just built is probed with its
/// gateways in use rather than still fail-closed; returns whether both came true.
pub fn wait_for_ready_gateways(store: &dyn sluice_store::Store, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let records = read_records(store);
        let current = records.iter().all(|record| {
            store
                .get(&sluice_agent::status_key(&record.node))
                .ok()
                .flatten()
                .and_then(|value| serde_json::from_slice::<sluice_agent::NodeStatus>(&value.value).ok())
                .is_none_or(|status| record.revision >= status.programmed_revision)
        });
        let ready = current
            && records
                .iter()
                .flat_map(|record| &record.gateways)
                .all(|gateway| gateway.health == "ready");
        if ready || std::time::Instant::now() >= deadline {
            return ready;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The expectation for a flow from `client` (`namespace/name`) to `destination`; `None` when
/// the flow takes the normal way (no gateway client, an in-cluster destination, or a policy
/// rule without a gateway).
pub fn expectation(
    records: &[EgressRecord],
    client: &str,
    destination: IpAddr,
    in_cluster: &[IpNet],
) -> Option<EgressExpectation> {
    if in_cluster.iter().any(|network| network.contains(&destination)) {
        return None;
    }
    let (record, client) = records.iter().find_map(|record| {
        record
            .clients
            .iter()
            .find(|candidate| candidate.client == client)
            .map(|candidate| (record, candidate))
    })?;
    let route = client
        .routes
        .iter()
        .filter_map(|route| Some((route.destination.parse::<IpNet>().ok()?, route)))
        .filter(|(network, _)| network.contains(&destination))
        .max_by_key(|(network, _)| network.prefix_len())
        .map(|(_, route)| route)?;
    if route.action == "normal" {
        return None;
    }
    let sources = route
        .gateways
        .iter()
        .filter_map(|gateway| {
            record
                .gateways
                .iter()
                .find(|known| &known.gateway == gateway)
                .map(|known| known.address)
        })
        .collect();
    Some(EgressExpectation {
        route: route.action.clone(),
        gateways: route.gateways.clone(),
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_agent::gateway::record::{ClientRecord, GatewayRecord, RouteRecord};

    fn record() -> EgressRecord {
        let route = |destination: &str, action: &str, gateways: &[&str]| RouteRecord {
            destination: destination.to_string(),
            policy: Some("split".to_string()),
            policy_rule: Some(0),
            action: action.to_string(),
            gateways: gateways.iter().map(|gateway| gateway.to_string()).collect(),
        };
        let gateway = |name: &str, address: &str| GatewayRecord {
            gateway: name.to_string(),
            address: address.parse().unwrap(),
            node: "node-2".to_string(),
            health: "ready".to_string(),
            since: None,
            probe_milliseconds: None,
            last_error: None,
        };
        EgressRecord {
            node: "node-1".to_string(),
            updated: std::time::SystemTime::now(),
            revision: 0,
            clients: vec![ClientRecord {
                client: "apps/client".to_string(),
                addresses: vec!["10.0.1.5".parse().unwrap()],
                table: 1_000_000,
                chosen_by: "policy split (namespace annotation)".to_string(),
                routes: vec![
                    route("203.0.113.0/24", "normal", &[]),
                    route("198.51.100.0/24", "unreachable", &[]),
                    route("0.0.0.0/0", "gateways", &["egress/a", "egress/b"]),
                ],
            }],
            gateways: vec![
                gateway("egress/a", "10.250.0.1"),
                gateway("egress/b", "10.250.0.2"),
            ],
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_longest_prefix_decides_and_gateways_give_their_addresses() {
        let records = [record()];
        let in_cluster: Vec<IpNet> = vec!["10.0.0.0/16".parse().unwrap()];
        let expect = |destination: &str| {
            expectation(&records, "apps/client", destination.parse().unwrap(), &in_cluster)
        };
        let through = expect("192.0.2.9").unwrap();
        assert!(through.routed());
        assert_eq!(
            through.sources,
            vec![
                "10.250.0.1".parse::<IpAddr>().unwrap(),
                "10.250.0.2".parse().unwrap()
            ]
        );
        assert_eq!(
            expect("203.0.113.7"),
            None,
            "a rule without gateway: the normal way"
        );
        assert_eq!(expect("198.51.100.7").unwrap().route, "unreachable");
        assert_eq!(
            expect("10.0.3.3"),
            None,
            "in-cluster destinations never take a gateway"
        );
        assert_eq!(
            expectation(&records, "apps/other", "192.0.2.9".parse().unwrap(), &in_cluster),
            None,
            "not a client"
        );
    }
}
