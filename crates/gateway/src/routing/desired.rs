//! A node plan → the rules, table routes, tunnels and device its kernel should hold.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use std::net::Ipv4Addr;

use super::{
    DesiredRouting, Device, PIN_TABLES, Pin, Rule, RuleSelector, TableRoute, TableRouteKind, Tunnel,
    pin_mark, pin_table,
};
use crate::model::GatewayHealth;
use crate::plan::{NodePlan, RouteAction};
use crate::tunnel::gateway_mac;

/// What the node's kernel should hold for `plan`. `local_destinations` (the IP pools' CIDRs and
/// the nodes' addresses; IPv6 ones are ignored) get a `throw` route in every client's table, so
/// in-cluster traffic never goes through a gateway; a plan route inside one is left out (with a
/// warning when it would not have gone the normal way anyway). `mtu` is the VXLAN device's.
///
/// New connections spread over a route's ready gateways; a draining one (its pod being
/// deleted) is left out of the spread unless no ready one is left, but keeps its pin, so the
/// connections that took it stay on it. `previous_pins` (gateway → pin index, from the last
/// sync or the kernel) keeps each gateway's index, since live connections carry it; a new
/// gateway takes the lowest free index.
pub fn desired(
    plan: &NodePlan,
    local_destinations: &[IpNet],
    mtu: u32,
    previous_pins: &BTreeMap<Ipv4Addr, u8>,
) -> DesiredRouting {
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
    // Every gateway some route holds, draining ones too: each gets a tunnel and a pin.
    let mut in_use: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for client in &plan.clients {
        for address in &client.addresses {
            if let IpAddr::V4(source) = address {
                rules.insert(Rule::from_source(*source, client.table, client.rule_priority));
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
                    let ipv4 = |health: Option<GatewayHealth>| -> BTreeSet<Ipv4Addr> {
                        hops.iter()
                            .filter(|hop| health.is_none_or(|health| hop.health == health))
                            .filter_map(|hop| match hop.address {
                                IpAddr::V4(address) => Some(address),
                                IpAddr::V6(_) => None,
                            })
                            .collect()
                    };
                    in_use.extend(ipv4(None));
                    let ready = ipv4(Some(GatewayHealth::Ready));
                    let gateways = if ready.is_empty() { ipv4(None) } else { ready };
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
    let gateways = in_use;
    let pins = allocate_pins(&gateways, previous_pins, &mut warnings);
    // Pinned connections are looked up before any client's rule.
    let pin_priority = plan.configuration.routing_rule_priority.saturating_sub(1).max(1);
    for pin in &pins {
        rules.insert(Rule {
            selector: RuleSelector::Mark(pin_mark(pin.index)),
            table: pin_table(pin.index),
            priority: pin_priority,
        });
        routes.insert(
            (pin_table(pin.index), Ipv4Net::default()),
            TableRouteKind::Gateways(vec![pin.gateway]),
        );
    }
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
        pins,
        warnings,
    }
}

/// Each gateway's pin: its previous index, else the lowest free one; past 255 gateways in use
/// on one node the rest go unpinned (their connections follow the spread), with a warning.
fn allocate_pins(
    gateways: &BTreeSet<Ipv4Addr>,
    previous: &BTreeMap<Ipv4Addr, u8>,
    warnings: &mut Vec<String>,
) -> Vec<Pin> {
    let mut taken: BTreeSet<u8> = BTreeSet::new();
    let mut pins: BTreeMap<Ipv4Addr, u8> = BTreeMap::new();
    for gateway in gateways {
        if let Some(&index) = previous.get(gateway)
            && index > 0
            && taken.insert(index)
        {
            pins.insert(*gateway, index);
        }
    }
    let mut free = (1..=u8::MAX).filter(|index| !taken.contains(index));
    for gateway in gateways {
        if pins.contains_key(gateway) {
            continue;
        }
        match free.next() {
            Some(index) => {
                pins.insert(*gateway, index);
            }
            None => warnings.push(format!(
                "gateway {gateway} is not pinned: 255 gateways already are on this node, so its connections may move when the gateways change"
            )),
        }
    }
    pins.into_iter()
        .map(|(gateway, index)| Pin { gateway, index })
        .collect()
}

/// The pins the kernel holds: each of Sluice's mark rules into a pin table whose default route
/// goes to one gateway.
pub fn pins_from_kernel(rules: &[Rule], routes: &[TableRoute]) -> BTreeMap<Ipv4Addr, u8> {
    rules
        .iter()
        .filter_map(|rule| {
            let RuleSelector::Mark(mark) = rule.selector else {
                return None;
            };
            let index = u8::try_from(mark >> 24).ok().filter(|index| *index > 0)?;
            if !PIN_TABLES.contains(&rule.table) || rule.table != pin_table(index) {
                return None;
            }
            let gateway = routes.iter().find_map(|route| match &route.kind {
                TableRouteKind::Gateways(gateways) if route.table == rule.table && gateways.len() == 1 => {
                    Some(gateways[0])
                }
                _ => None,
            })?;
            Some((gateway, index))
        })
        .collect()
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
        let desired = desired(&plan, &local, 1400, &BTreeMap::new());
        let pin_rule = |index: u8| Rule {
            selector: RuleSelector::Mark(pin_mark(index)),
            table: pin_table(index),
            priority: 99,
        };
        assert_eq!(
            desired.rules,
            vec![
                Rule::from_source(address("10.0.1.1"), 1_000_000, 100),
                Rule::from_source(address("10.0.1.2"), 1_000_001, 100),
                Rule::from_source(address("10.0.1.3"), 1_000_002, 100),
                pin_rule(1),
                pin_rule(2),
            ],
            "one rule per IPv4 address, none for IPv6; one per pinned gateway, before them"
        );
        assert_eq!(
            desired.pins,
            vec![
                Pin {
                    gateway: address("10.0.2.10"),
                    index: 1
                },
                Pin {
                    gateway: address("10.0.2.11"),
                    index: 2
                },
            ]
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
        expected.push(route(
            pin_table(1),
            "0.0.0.0/0",
            TableRouteKind::Gateways(vec![address("10.0.2.10")]),
        ));
        expected.push(route(
            pin_table(2),
            "0.0.0.0/0",
            TableRouteKind::Gateways(vec![address("10.0.2.11")]),
        ));
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
        let desired = desired(&plan, &[], 1450, &BTreeMap::new());
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
        let desired = desired(&plan, &["10.0.0.0/16".parse().unwrap()], 1450, &BTreeMap::new());
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

    #[test]
    fn a_draining_gateway_leaves_the_spread_but_keeps_its_pin_and_tunnel() {
        let mut draining = hop("g1", "10.0.2.10");
        draining.health = GatewayHealth::Draining;
        let plan = plan(vec![
            client(
                "a",
                &["10.0.1.1"],
                1_000_000,
                vec![(
                    "0.0.0.0/0",
                    RouteAction::Gateways(vec![draining.clone(), hop("g2", "10.0.2.11")]),
                )],
            ),
            // Its only gateway draining: new connections still take it (nothing else to take).
            client(
                "b",
                &["10.0.1.2"],
                1_000_001,
                vec![("0.0.0.0/0", RouteAction::Gateways(vec![draining]))],
            ),
        ]);
        let desired = desired(&plan, &[], 1450, &BTreeMap::new());
        let default_of = |table: u32| {
            desired
                .routes
                .iter()
                .find(|route| route.table == table && route.destination == Ipv4Net::default())
                .map(|route| route.kind.clone())
        };
        assert_eq!(
            default_of(1_000_000),
            Some(TableRouteKind::Gateways(vec![address("10.0.2.11")]))
        );
        assert_eq!(
            default_of(1_000_001),
            Some(TableRouteKind::Gateways(vec![address("10.0.2.10")]))
        );
        assert_eq!(desired.pins.len(), 2, "the draining gateway keeps its pin");
        assert_eq!(desired.tunnels.len(), 2);
    }

    #[test]
    fn pins_keep_their_index_and_new_gateways_take_the_lowest_free_one() {
        let plan = plan(vec![client(
            "a",
            &["10.0.1.1"],
            1_000_000,
            vec![(
                "0.0.0.0/0",
                RouteAction::Gateways(vec![hop("g1", "10.0.2.10"), hop("g3", "10.0.2.12")]),
            )],
        )]);
        let previous = BTreeMap::from([(address("10.0.2.12"), 1), (address("10.0.2.99"), 2)]);
        let desired = desired(&plan, &[], 1450, &previous);
        assert_eq!(
            desired.pins,
            vec![
                Pin {
                    gateway: address("10.0.2.10"),
                    index: 2
                },
                Pin {
                    gateway: address("10.0.2.12"),
                    index: 1
                },
            ]
        );
        // Read back from the kernel's rules and tables, the same pins.
        let read = pins_from_kernel(&desired.rules, &desired.routes);
        assert_eq!(
            read,
            BTreeMap::from([(address("10.0.2.10"), 2), (address("10.0.2.12"), 1)])
        );
    }
}
