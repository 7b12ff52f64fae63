//! A node plan → the rules, table routes, tunnels and device its kernel should hold.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::{DesiredRouting, Device, Rule, TableRoute, TableRouteKind, Tunnel};
use crate::plan::{NodePlan, RouteAction};
use crate::tunnel::gateway_mac;

/// What the node's kernel should hold for `plan`. `local_destinations` (the IP pools' CIDRs and
/// the nodes' addresses; IPv6 ones are ignored) get a `throw` route in every client's table, so
/// in-cluster traffic never goes through a gateway; a plan route inside one is left out (with a
/// warning when it would not have gone the normal way anyway). `mtu` is the VXLAN device's.
pub fn desired(plan: &NodePlan, local_destinations: &[IpNet], mtu: u32) -> DesiredRouting {
    let local: Vec<Ipv4Net> = local_destinations
        .iter()
        .filter_map(|destination| match destination {
            IpNet::V4(network) => Some(network.trunc()),
            IpNet::V6(_) => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rules = BTreeSet::new();
    let mut routes: BTreeMap<(u32, Ipv4Net), TableRouteKind> = BTreeMap::new();
    let mut warnings = Vec::new();
    for client in &plan.clients {
        for address in &client.addresses {
            if let IpAddr::V4(source) = address {
                rules.insert(Rule {
                    source: *source,
                    table: client.table,
                    priority: client.rule_priority,
                });
            }
        }
        for route in &client.routes {
            let IpNet::V4(destination) = route.destination else {
                if route.action != RouteAction::Normal {
                    warnings.push(format!(
                        "pod {}: the route to {} is not programmed: egress gateways route IPv4 only, so its IPv6 traffic there goes the normal way",
                        client.client, route.destination
                    ));
                }
                continue;
            };
            if let Some(network) = local.iter().find(|network| network.contains(&destination)) {
                if route.action != RouteAction::Normal {
                    warnings.push(format!(
                        "pod {}: the route to {destination} is not programmed: it is inside the cluster's {network}, which never goes through a gateway",
                        client.client
                    ));
                }
                continue;
            }
            let kind = match &route.action {
                RouteAction::Normal => TableRouteKind::Throw,
                RouteAction::Unreachable => TableRouteKind::Unreachable,
                RouteAction::Drop => TableRouteKind::Blackhole,
                RouteAction::Gateways(hops) => {
                    let gateways: BTreeSet<_> = hops
                        .iter()
                        .filter_map(|hop| match hop.address {
                            IpAddr::V4(address) => Some(address),
                            IpAddr::V6(_) => None,
                        })
                        .collect();
                    if gateways.is_empty() {
                        // Fail closed: hops without an IPv4 address are no way out.
                        TableRouteKind::Unreachable
                    } else {
                        TableRouteKind::Gateways(gateways.into_iter().collect())
                    }
                }
            };
            routes.insert((client.table, destination), kind);
        }
        for network in &local {
            routes.insert((client.table, *network), TableRouteKind::Throw);
        }
    }
    let gateways: BTreeSet<_> = routes
        .values()
        .filter_map(|kind| match kind {
            TableRouteKind::Gateways(gateways) => Some(gateways.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    let tunnels = gateways
        .iter()
        .map(|&gateway| Tunnel {
            gateway,
            mac: gateway_mac(gateway),
        })
        .collect();
    let device = (!gateways.is_empty()).then_some(Device {
        vni: plan.configuration.vxlan_vni,
        port: plan.configuration.vxlan_port,
        mtu,
    });
    DesiredRouting {
        rules: rules.into_iter().collect(),
        routes: routes
            .into_iter()
            .map(|((table, destination), kind)| TableRoute {
                table,
                destination,
                kind,
            })
            .collect(),
        tunnels,
        device,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use sluice_api::egress::EgressConfiguration;

    use super::*;
    use crate::choice::Choice;
    use crate::model::{GatewayHealth, PodId};
    use crate::plan::{ClientPlan, Hop, Route};

    fn hop(name: &str, address: &str) -> Hop {
        Hop {
            gateway: PodId::new("egress", name),
            address: address.parse().unwrap(),
            node: "node-2".into(),
            health: GatewayHealth::Ready,
        }
    }

    fn client(name: &str, addresses: &[&str], table: u32, routes: Vec<(&str, RouteAction)>) -> ClientPlan {
        ClientPlan {
            client: PodId::new("apps", name),
            addresses: addresses.iter().map(|address| address.parse().unwrap()).collect(),
            rule_priority: 100,
            table,
            choice: Choice::None,
            routes: routes
                .into_iter()
                .map(|(destination, action)| Route {
                    destination: destination.parse().unwrap(),
                    policy_rule: None,
                    action,
                })
                .collect(),
        }
    }

    fn plan(clients: Vec<ClientPlan>) -> NodePlan {
        NodePlan {
            node: "node-1".into(),
            configuration: EgressConfiguration::default(),
            clients,
            gateways: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn route(table: u32, destination: &str, kind: TableRouteKind) -> TableRoute {
        TableRoute {
            table,
            destination: destination.parse().unwrap(),
            kind,
        }
    }

    fn address(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn each_action_becomes_its_route_and_local_destinations_throw_in_every_table() {
        let plan = plan(vec![
            client(
                "a",
                &["10.0.1.1", "fd00::1"],
                1_000_000,
                vec![
                    ("198.51.100.0/24", RouteAction::Normal),
                    (
                        "0.0.0.0/0",
                        RouteAction::Gateways(vec![hop("g2", "10.0.2.11"), hop("g1", "10.0.2.10")]),
                    ),
                ],
            ),
            client(
                "b",
                &["10.0.1.2"],
                1_000_001,
                vec![("0.0.0.0/0", RouteAction::Unreachable)],
            ),
            client(
                "c",
                &["10.0.1.3"],
                1_000_002,
                vec![("0.0.0.0/0", RouteAction::Drop)],
            ),
        ]);
        let local: Vec<IpNet> = ["10.0.0.0/16", "100.64.0.1/32", "fd00::/48"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        let desired = desired(&plan, &local, 1400);
        assert_eq!(
            desired.rules,
            vec![
                Rule {
                    source: address("10.0.1.1"),
                    table: 1_000_000,
                    priority: 100
                },
                Rule {
                    source: address("10.0.1.2"),
                    table: 1_000_001,
                    priority: 100
                },
                Rule {
                    source: address("10.0.1.3"),
                    table: 1_000_002,
                    priority: 100
                },
            ],
            "one rule per IPv4 address, none for IPv6"
        );
        let gateways = TableRouteKind::Gateways(vec![address("10.0.2.10"), address("10.0.2.11")]);
        let mut expected = vec![
            route(1_000_000, "0.0.0.0/0", gateways),
            route(1_000_000, "198.51.100.0/24", TableRouteKind::Throw),
            route(1_000_001, "0.0.0.0/0", TableRouteKind::Unreachable),
            route(1_000_002, "0.0.0.0/0", TableRouteKind::Blackhole),
        ];
        for table in [1_000_000, 1_000_001, 1_000_002] {
            expected.push(route(table, "10.0.0.0/16", TableRouteKind::Throw));
            expected.push(route(table, "100.64.0.1/32", TableRouteKind::Throw));
        }
        expected.sort();
        assert_eq!(desired.routes, expected);
        assert_eq!(
            desired.tunnels,
            vec![
                Tunnel {
                    gateway: address("10.0.2.10"),
                    mac: [0x02, 0x53, 10, 0, 2, 10]
                },
                Tunnel {
                    gateway: address("10.0.2.11"),
                    mac: [0x02, 0x53, 10, 0, 2, 11]
                },
            ]
        );
        assert_eq!(
            desired.device,
            Some(Device {
                vni: 4097,
                port: 4790,
                mtu: 1400
            })
        );
        assert!(desired.warnings.is_empty(), "{:?}", desired.warnings);
    }

    #[test]
    fn no_gateway_in_use_means_no_device_and_no_tunnel() {
        let plan = plan(vec![client(
            "b",
            &["10.0.1.2"],
            1_000_001,
            vec![("0.0.0.0/0", RouteAction::Unreachable)],
        )]);
        let desired = desired(&plan, &[], 1450);
        assert_eq!(desired.device, None);
        assert!(desired.tunnels.is_empty());
        assert_eq!(desired.rules.len(), 1);
        assert_eq!(
            desired.routes,
            vec![route(1_000_001, "0.0.0.0/0", TableRouteKind::Unreachable)]
        );
    }

    #[test]
    fn routes_inside_the_cluster_and_ipv6_routes_are_left_out_with_a_warning() {
        let plan = plan(vec![client(
            "a",
            &["10.0.1.1"],
            1_000_000,
            vec![
                ("10.0.5.0/24", RouteAction::Gateways(vec![hop("g1", "10.0.2.10")])),
                ("10.0.0.0/16", RouteAction::Normal),
                (
                    "2001:db8::/32",
                    RouteAction::Gateways(vec![hop("g6", "fd00::10")]),
                ),
                ("2001:db9::/32", RouteAction::Normal),
            ],
        )]);
        let desired = desired(&plan, &["10.0.0.0/16".parse().unwrap()], 1450);
        assert_eq!(
            desired.routes,
            vec![route(1_000_000, "10.0.0.0/16", TableRouteKind::Throw)]
        );
        assert_eq!(desired.device, None);
        assert_eq!(desired.warnings.len(), 2, "{:?}", desired.warnings);
        assert!(
            desired.warnings[0].contains("10.0.5.0/24"),
            "{:?}",
            desired.warnings
        );
        assert!(
            desired.warnings[1].contains("2001:db8::/32"),
            "{:?}",
            desired.warnings
        );
    }
}
