//! The perimeter view as text: a row per namespace, destination and way out, and with
//! `--addresses` a row per pod address.

use ipnet::IpNet;

use super::{EgressSource, NamespaceEgress, Source};

/// The table `ipam show --by namespace` prints: a row per namespace, destination and way out.
pub fn table(view: &[NamespaceEgress]) -> Vec<Vec<String>> {
    let mut rows = vec![
        [
            "NAMESPACE",
            "DESTINATION",
            "SOURCE ADDRESSES",
            "VIA",
            "POOLS",
            "PODS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for namespace in view {
        for egress in &namespace.egress {
            rows.push(vec![
                namespace.namespace.clone(),
                egress.destination.to_string(),
                source_addresses(egress),
                via(&egress.source),
                egress
                    .pools
                    .iter()
                    .map(|(pool, pods)| {
                        let pool = if pool.is_empty() { "no pool" } else { pool };
                        format!("{pool} ({pods})")
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                egress.pods.len().to_string(),
            ]);
        }
    }
    rows
}

/// `--addresses`: a row per pod address.
pub fn address_table(view: &[NamespaceEgress]) -> Vec<Vec<String>> {
    let mut rows = vec![["POD", "ADDRESS", "POOL", "NODE"].map(String::from).to_vec()];
    for address in view.iter().flat_map(|namespace| &namespace.pod_addresses) {
        let pod = if address.only_in_ipam {
            format!("{} (only in IPAM)", address.pod)
        } else {
            address.pod.clone()
        };
        rows.push(vec![
            pod,
            address.address.to_string(),
            address.pool.clone().unwrap_or_else(|| "-".to_string()),
            address.node.clone().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    rows
}

/// An address without its host prefix length; a network as a CIDR.
fn network_text(network: &IpNet) -> String {
    if network.prefix_len() == network.max_prefix_len() {
        network.addr().to_string()
    } else {
        network.to_string()
    }
}

fn source_addresses(egress: &EgressSource) -> String {
    let mut parts: Vec<String> = egress.addresses.iter().map(network_text).collect();
    parts.extend(
        egress
            .unknown_node_addresses
            .iter()
            .map(|node| format!("node {node}'s address (no InternalIP known)")),
    );
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

pub(super) fn via(source: &Source) -> String {
    match source {
        Source::Pool { pool, .. } => format!("pool {pool} (routable)"),
        Source::NoPool => "its own address (in no pool)".to_string(),
        Source::NatOutgoing {
            pool,
            pool_nat_address: Some(_),
        } => format!("natOutgoing of pool {pool} (the pool's NAT address)"),
        Source::NatOutgoing { pool, .. } => format!("natOutgoing of pool {pool} (the node's address)"),
        Source::Gateways {
            chosen_by,
            policy_rule,
            gateways,
            ..
        } => {
            let gateways = gateways
                .iter()
                .map(|gateway| match &gateway.nat_outgoing_pool {
                    None => format!("{} on {}", gateway.gateway, gateway.node),
                    Some(pool) => format!(
                        "{} on {} (NATed by its node: pool {pool} has natOutgoing)",
                        gateway.gateway, gateway.node
                    ),
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("gateways {gateways}; {}", chooser(chosen_by, *policy_rule))
        }
        Source::NoGateway {
            chosen_by,
            policy_rule,
            ..
        } => format!(
            "no gateway matches: unreachable, nothing leaves; {}",
            chooser(chosen_by, *policy_rule)
        ),
        Source::Dropped { chosen_by, .. } => format!("egress dropped: {chosen_by}"),
    }
}

fn chooser(chosen_by: &str, policy_rule: Option<usize>) -> String {
    match policy_rule {
        Some(rule) => format!("{chosen_by}, rule {rule}"),
        None => chosen_by.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perimeter::by_namespace;
    use crate::perimeter::tests::cluster;
    use sluice_ipam::report::AllocationRecord;

    #[test]
    fn the_table_has_a_row_per_namespace_destination_and_way_out() {
        let view = by_namespace(&cluster(""), &[]).unwrap();
        let rows = table(&view);
        assert_eq!(
            rows[0],
            [
                "NAMESPACE",
                "DESTINATION",
                "SOURCE ADDRESSES",
                "VIA",
                "POOLS",
                "PODS"
            ]
        );
        let find_row = |namespace: &str, destination: &str| {
            rows.iter()
                .find(|row| row[0] == namespace && row[1] == destination)
                .unwrap_or_else(|| panic!("no row {namespace} {destination} in {rows:#?}"))
                .clone()
        };
        assert_eq!(
            find_row("natted", "0.0.0.0/0"),
            [
                "natted",
                "0.0.0.0/0",
                "192.168.0.1, node node-3's address (no InternalIP known)",
                "natOutgoing of pool nat-pool (the node's address)",
                "nat-pool (2)",
                "2"
            ]
        );
        assert_eq!(
            find_row("routable", "0.0.0.0/0")[2..4],
            ["10.1.0.0/16", "pool routable-pool (routable)"]
        );
        assert_eq!(
            find_row("fixed", "0.0.0.0/0")[2..4],
            [
                "192.0.2.10",
                "natOutgoing of pool fixed-pool (the pool's NAT address)"
            ]
        );
        assert_eq!(
            find_row("split", "203.0.113.0/24")[2..4],
            [
                "10.9.0.2",
                "gateways egress/gw-b on node-2; policy split (namespace annotation), rule 2"
            ]
        );
        assert_eq!(
            find_row("through", "0.0.0.0/0")[2..],
            [
                "10.9.0.1, 10.9.0.2",
                "gateways egress/gw-a on node-1, egress/gw-b on node-2; namespace annotations",
                "nat-pool (2)",
                "2"
            ]
        );
        // Namespaces in name order, IPv4 before IPv6 and longest prefix first within one.
        let order: Vec<(&str, &str)> = rows[1..]
            .iter()
            .map(|row| (row[0].as_str(), row[1].as_str()))
            .collect();
        let mut sorted = order.clone();
        sorted.sort_by_key(|(namespace, _)| *namespace);
        assert_eq!(order, sorted);
    }

    #[test]
    fn the_address_table_lists_every_pod_address_and_marks_those_only_ipam_holds() {
        let allocation = AllocationRecord {
            address: "10.2.0.99".parse().unwrap(),
            block: "10.2.0.64/26".parse().unwrap(),
            pool: Some("nat-pool".into()),
            node: "node-2".into(),
            namespace: "natted".into(),
            pod: "starting".into(),
            handle: "abc.eth0".into(),
        };
        let view = by_namespace(&cluster(""), &[allocation]).unwrap();
        let rows = address_table(&view);
        assert_eq!(rows[0], ["POD", "ADDRESS", "POOL", "NODE"]);
        let natted: Vec<String> = rows
            .iter()
            .filter(|row| row[0].starts_with("natted/"))
            .map(|row| row.join("|"))
            .collect();
        assert_eq!(
            natted,
            [
                "natted/n1|10.2.0.1|nat-pool|node-1",
                "natted/n2|10.2.0.2|nat-pool|node-3",
                "natted/starting (only in IPAM)|10.2.0.99|nat-pool|node-2",
            ]
        );
        // Ten pods with one address each, and the one only IPAM knows.
        assert_eq!(rows.len(), 1 + 11);
    }
}
