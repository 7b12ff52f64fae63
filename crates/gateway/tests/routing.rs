//! The routing shell's syncer against the in-memory kernel (`FakeRouting`), and the kernel's
//! state read back into a previous plan.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sluice_gateway::routing::{
    DesiredRouting, Device, DeviceChange, FakeRouting, KernelRule, KernelTableRoute, Operation,
    RoutingSyncer, Rule, TableRoute, TableRouteKind, Tunnel, desired, pins_from_kernel, previous_from_kernel,
};
use sluice_gateway::tunnel::gateway_mac;
use sluice_gateway::{GatewayHealth, Inputs, PodId, RouteAction, compute};

const TABLE_A: u32 = 1_000_000;
const TABLE_B: u32 = 1_000_001;

fn address(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn network(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}

fn rule(source: &str, table: u32) -> Rule {
    Rule::from_source(address(source), table, 100)
}

fn route(table: u32, destination: &str, kind: TableRouteKind) -> TableRoute {
    TableRoute {
        table,
        destination: network(destination),
        kind,
    }
}

fn through(gateways: &[&str]) -> TableRouteKind {
    TableRouteKind::Gateways(gateways.iter().map(|text| address(text)).collect())
}

fn tunnel(gateway: &str) -> Tunnel {
    Tunnel {
        gateway: address(gateway),
        mac: gateway_mac(address(gateway)),
    }
}

const DEVICE: Device = Device {
    vni: 4097,
    port: 4790,
    mtu: 1450,
};

/// Client A (10.0.1.1) through `gateways`, client B (10.0.1.2) unreachable; both throw the pool.
fn state(gateways: &[&str]) -> DesiredRouting {
    let mut routes = vec![
        route(TABLE_A, "0.0.0.0/0", through(gateways)),
        route(TABLE_A, "10.0.0.0/16", TableRouteKind::Throw),
        route(TABLE_B, "0.0.0.0/0", TableRouteKind::Unreachable),
        route(TABLE_B, "10.0.0.0/16", TableRouteKind::Throw),
    ];
    routes.sort();
    DesiredRouting {
        rules: vec![rule("10.0.1.1", TABLE_A), rule("10.0.1.2", TABLE_B)],
        routes,
        tunnels: gateways.iter().map(|gateway| tunnel(gateway)).collect(),
        device: Some(DEVICE),
        pins: Vec::new(),
        warnings: Vec::new(),
    }
}

fn position(log: &[Operation], operation: &Operation) -> usize {
    log.iter()
        .position(|logged| logged == operation)
        .unwrap_or_else(|| panic!("{operation:?} not in {log:#?}"))
}

fn replace(table: u32, destination: &str) -> Operation {
    Operation::ReplaceRoute {
        table,
        destination: network(destination),
    }
}

fn delete(table: u32, destination: &str) -> Operation {
    Operation::DeleteRoute {
        table,
        destination: network(destination),
    }
}

#[test]
fn the_first_sync_builds_device_tunnels_routes_then_rules() {
    let mut syncer = RoutingSyncer::new(FakeRouting::default());
    let desired = state(&["10.0.2.10", "10.0.2.11"]);
    let report = syncer.sync(&desired).unwrap();
    assert_eq!(report.device, Some(DeviceChange::Created));
    assert!(report.hash_policy_set);
    assert_eq!(
        (report.tunnels_added, report.routes_written, report.rules_added),
        (2, 4, 2)
    );
    let fake = syncer.backend();
    assert_eq!(fake.our_rules(), desired.rules);
    assert_eq!(fake.our_routes(), desired.routes);
    assert_eq!(fake.our_tunnels(), desired.tunnels);
    assert_eq!(fake.hash_policy, 1);
    let log = &fake.log;
    let device = position(log, &Operation::EnsureDevice);
    let tunnel = position(log, &Operation::AddTunnel(address("10.0.2.10")));
    let gateway_route = position(log, &replace(TABLE_A, "0.0.0.0/0"));
    let local_route = position(log, &replace(TABLE_A, "10.0.0.0/16"));
    let rule_a = position(log, &Operation::AddRule(rule("10.0.1.1", TABLE_A)));
    assert!(device < tunnel && tunnel < gateway_route, "{log:#?}");
    assert!(gateway_route < rule_a && local_route < rule_a, "{log:#?}");
}

#[test]
fn an_unchanged_state_does_not_read_the_kernel() {
    let mut syncer = RoutingSyncer::new(FakeRouting::default());
    let desired = state(&["10.0.2.10"]);
    syncer.sync(&desired).unwrap();
    let (reads, changes) = (syncer.backend().reads, syncer.backend().log.len());
    let report = syncer.sync(&desired).unwrap();
    assert!(!report.changed());
    assert_eq!(syncer.backend().reads, reads);
    // Read again (resync), nothing differs: nothing is written.
    syncer.resync_next();
    let report = syncer.sync(&desired).unwrap();
    assert!(!report.changed(), "{report:?}");
    assert!(syncer.backend().reads > reads);
    assert_eq!(syncer.backend().log.len(), changes);
}

#[test]
fn a_change_of_hops_replaces_the_route_and_the_old_tunnel_goes_after_it() {
    let mut syncer = RoutingSyncer::new(FakeRouting::default());
    syncer.sync(&state(&["10.0.2.10", "10.0.2.11"])).unwrap();
    syncer.backend_mut().log.clear();
    let desired = state(&["10.0.2.11", "10.0.2.12"]);
    let report = syncer.sync(&desired).unwrap();
    assert_eq!(
        (
            report.tunnels_added,
            report.tunnels_removed,
            report.routes_written
        ),
        (1, 1, 1)
    );
    assert_eq!((report.rules_added, report.rules_removed), (0, 0));
    let fake = syncer.backend();
    assert_eq!(fake.our_routes(), desired.routes);
    assert_eq!(fake.our_tunnels(), desired.tunnels);
    let log = &fake.log;
    assert!(
        position(log, &Operation::AddTunnel(address("10.0.2.12")))
            < position(log, &replace(TABLE_A, "0.0.0.0/0"))
    );
    assert!(
        position(log, &replace(TABLE_A, "0.0.0.0/0"))
            < position(log, &Operation::DeleteTunnel(address("10.0.2.10")))
    );
    assert_eq!(log.len(), 3, "only the route and the two tunnels: {log:#?}");
}

#[test]
fn a_removed_client_loses_its_rule_before_its_routes_and_the_device_goes_last() {
    let mut syncer = RoutingSyncer::new(FakeRouting::default());
    syncer.sync(&state(&["10.0.2.10"])).unwrap();
    syncer.backend_mut().log.clear();
    // Client A goes: only B (unreachable) is left, so no gateway is in use.
    let mut desired = state(&["10.0.2.10"]);
    desired.rules.retain(|rule| rule.table == TABLE_B);
    desired.routes.retain(|route| route.table == TABLE_B);
    desired.tunnels.clear();
    desired.device = None;
    let report = syncer.sync(&desired).unwrap();
    assert_eq!(
        (
            report.rules_removed,
            report.routes_removed,
            report.tunnels_removed
        ),
        (1, 2, 1)
    );
    assert_eq!(report.device, Some(DeviceChange::Removed));
    let fake = syncer.backend();
    assert_eq!(fake.our_rules(), desired.rules);
    assert_eq!(fake.our_routes(), desired.routes);
    assert!(fake.device.is_none() && fake.tunnels.is_empty());
    let log = &fake.log;
    let rule = position(log, &Operation::DeleteRule(rule("10.0.1.1", TABLE_A)));
    assert!(rule < position(log, &delete(TABLE_A, "0.0.0.0/0")), "{log:#?}");
    assert!(rule < position(log, &delete(TABLE_A, "10.0.0.0/16")), "{log:#?}");
    assert!(
        position(log, &delete(TABLE_A, "0.0.0.0/0"))
            < position(log, &Operation::DeleteTunnel(address("10.0.2.10")))
    );
    assert_eq!(log.last(), Some(&Operation::DeleteDevice));
}

#[test]
fn a_failing_operation_does_not_stop_the_others_and_the_next_sync_retries_it() {
    let failing = Operation::AddRule(rule("10.0.1.1", TABLE_A));
    let fake = FakeRouting {
        failing: vec![failing.clone()],
        ..FakeRouting::default()
    };
    let mut syncer = RoutingSyncer::new(fake);
    let desired = state(&["10.0.2.10"]);
    let error = syncer.sync(&desired).unwrap_err();
    assert!(error.0.contains("AddRule"), "{error}");
    assert_eq!(syncer.backend().our_rules(), vec![rule("10.0.1.2", TABLE_B)]);
    assert_eq!(syncer.backend().our_routes(), desired.routes);
    // Failed, so not remembered: the next sync reads the kernel and tries again.
    syncer.backend_mut().failing.clear();
    let reads = syncer.backend().reads;
    let report = syncer.sync(&desired).unwrap();
    assert!(syncer.backend().reads > reads);
    assert_eq!(report.rules_added, 1);
    assert_eq!(syncer.backend().our_rules(), desired.rules);
}

#[test]
fn a_rule_that_cannot_be_deleted_keeps_its_tables_routes() {
    let mut syncer = RoutingSyncer::new(FakeRouting::default());
    syncer.sync(&state(&["10.0.2.10"])).unwrap();
    syncer
        .backend_mut()
        .failing
        .push(Operation::DeleteRule(rule("10.0.1.1", TABLE_A)));
    let mut desired = state(&["10.0.2.10"]);
    desired.rules.retain(|rule| rule.table == TABLE_B);
    desired.routes.retain(|route| route.table == TABLE_B);
    assert!(syncer.sync(&desired).is_err());
    let routes = syncer.backend().our_routes();
    assert!(
        routes.iter().any(|route| route.table == TABLE_A),
        "a rule over an emptied table would send the client the normal way: {routes:#?}"
    );
}

#[test]
fn a_rule_deleted_behind_its_back_is_put_back_after_resync_next() {
    let mut syncer = RoutingSyncer::new(FakeRouting::default());
    let desired = state(&["10.0.2.10"]);
    syncer.sync(&desired).unwrap();
    syncer
        .backend_mut()
        .rules
        .retain(|kernel| kernel.rule.table != TABLE_A);
    syncer
        .backend_mut()
        .tunnels
        .iter_mut()
        .for_each(|kernel| kernel.forwarding = false);
    // Trusting what it applied, the syncer does not notice...
    syncer.sync(&desired).unwrap();
    assert_eq!(syncer.backend().our_rules().len(), 1);
    // ...until told to read again.
    syncer.resync_next();
    let report = syncer.sync(&desired).unwrap();
    assert_eq!((report.rules_added, report.tunnels_added), (1, 1));
    assert_eq!(syncer.backend().our_rules(), desired.rules);
    assert_eq!(syncer.backend().our_tunnels(), desired.tunnels);
}

#[test]
fn other_protocols_rules_and_routes_are_left_alone() {
    let foreign_rule = KernelRule {
        rule: rule("10.0.1.1", TABLE_A),
        protocol: 4,
    };
    let foreign_other = KernelRule {
        rule: rule("10.0.9.9", 1_000_500),
        protocol: 0,
    };
    let foreign_route = KernelTableRoute {
        route: route(TABLE_B, "0.0.0.0/0", TableRouteKind::Throw),
        protocol: 4,
    };
    let foreign_elsewhere = KernelTableRoute {
        route: route(1_000_500, "0.0.0.0/0", TableRouteKind::Blackhole),
        protocol: 3,
    };
    let fake = FakeRouting {
        rules: vec![foreign_rule, foreign_other],
        routes: vec![foreign_route.clone(), foreign_elsewhere.clone()],
        ..FakeRouting::default()
    };
    let mut syncer = RoutingSyncer::new(fake);
    let desired = state(&["10.0.2.10"]);
    let report = syncer.sync(&desired).unwrap();
    // Someone else's route holds B's default: a conflict, reported and left.
    assert_eq!(
        report.conflicts,
        vec![route(TABLE_B, "0.0.0.0/0", TableRouteKind::Unreachable)]
    );
    // An identical rule of another protocol does not count as ours: ours is added beside it.
    assert_eq!(syncer.backend().our_rules(), desired.rules);
    // Everything removed: only Sluice's entries go.
    syncer.sync(&DesiredRouting::default()).unwrap();
    let fake = syncer.backend();
    assert_eq!(fake.rules, vec![foreign_rule, foreign_other]);
    assert_eq!(fake.routes, vec![foreign_route, foreign_elsewhere]);
    assert!(fake.device.is_none());
}

#[test]
fn a_device_with_another_vni_is_recreated_with_its_tunnels_and_routes() {
    let mut syncer = RoutingSyncer::new(FakeRouting::default());
    syncer.sync(&state(&["10.0.2.10"])).unwrap();
    let mut desired = state(&["10.0.2.10"]);
    desired.device = Some(Device { vni: 7, ..DEVICE });
    let report = syncer.sync(&desired).unwrap();
    assert_eq!(report.device, Some(DeviceChange::Changed));
    assert_eq!((report.tunnels_added, report.routes_written), (1, 1));
    assert_eq!(syncer.backend().our_routes(), desired.routes);
    assert_eq!(syncer.backend().device.unwrap().device.vni, 7);
}

/// Clients `apps/a` and `apps/b` on node-1 (namespace annotation, at most one hop), gateways
/// `egress/g1` and `egress/g2` on node-2, all ready.
fn cluster(with_a: bool) -> Inputs {
    let pod = |namespace: &str, name: &str, node: &str, address: &str, labels: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{{labels}}}\nspec: {{nodeName: {node}}}\nstatus: {{podIP: {address}}}\n"
        )
    };
    let mut text = String::from(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {egressIPSupport: EnabledPerNamespace}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: egress}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n  annotations: {egress.projectcalico.org/selector: \"role == 'gateway'\", egress.projectcalico.org/namespaceSelector: \"projectcalico.org/name == 'egress'\", egress.projectcalico.org/maxNextHops: \"1\"}\n",
    );
    if with_a {
        text += &pod("apps", "a", "node-1", "10.0.1.1", "");
    }
    text += &pod("apps", "b", "node-1", "10.0.1.2", "");
    text += &pod("egress", "g1", "node-2", "10.0.2.10", "role: gateway");
    text += &pod("egress", "g2", "node-2", "10.0.2.11", "role: gateway");
    let resources = sluice_api::load_str("cluster.yaml", &text).unwrap_or_else(|errors| panic!("{errors}"));
    let mut inputs = Inputs::from_resources(&resources);
    for pod in &inputs.pods {
        inputs.health.insert(pod.id.clone(), GatewayHealth::Ready);
    }
    inputs
}

#[test]
fn a_restarted_agent_keeps_tables_and_gateways_from_the_kernel() {
    let before = compute(&cluster(true), "node-1", None).unwrap();
    let b = PodId::new("apps", "b");
    assert_eq!(before.client(&b).unwrap().table, TABLE_B);
    let mut syncer = RoutingSyncer::new(FakeRouting::default());
    syncer
        .sync(&desired(&before, &[], 1450, &Default::default()))
        .unwrap();
    // The kernel says b goes through the gateway it was not given (as if chosen long ago).
    let b_gateway = match &before.client(&b).unwrap().routes[0].action {
        RouteAction::Gateways(hops) => hops[0].address,
        other => panic!("{other:?}"),
    };
    let other = if b_gateway.to_string() == "10.0.2.10" {
        "10.0.2.11"
    } else {
        "10.0.2.10"
    };
    syncer
        .backend_mut()
        .routes
        .iter_mut()
        .filter(|kernel| kernel.route.table == TABLE_B)
        .for_each(|kernel| kernel.route.kind = through(&[other]));

    // Restart: `a` is gone meanwhile. Without memory, `b` would take the lowest table.
    let inputs = cluster(false);
    assert_eq!(
        compute(&inputs, "node-1", None)
            .unwrap()
            .client(&b)
            .unwrap()
            .table,
        TABLE_A
    );
    let kernel = syncer.kernel_state().unwrap();
    let client_rules: Vec<Rule> = kernel
        .rules
        .iter()
        .copied()
        .filter(|rule| rule.source().is_some())
        .collect();
    assert_eq!(
        client_rules,
        vec![rule("10.0.1.1", TABLE_A), rule("10.0.1.2", TABLE_B)]
    );
    // Each gateway in use has its pin, which the kernel gives back.
    assert_eq!(pins_from_kernel(&kernel.rules, &kernel.routes).len(), 2);
    let previous = previous_from_kernel(&inputs, "node-1", &kernel.rules, &kernel.routes).unwrap();
    assert_eq!(previous.clients.len(), 1, "a's rule names no pod any more");
    let after = compute(&inputs, "node-1", Some(&previous)).unwrap();
    let client = after.client(&b).unwrap();
    assert_eq!(client.table, TABLE_B);
    match &client.routes[0].action {
        RouteAction::Gateways(hops) => assert_eq!(hops[0].address.to_string(), other),
        action => panic!("{action:?}"),
    }
    assert!(previous_from_kernel(&inputs, "node-2", &kernel.rules, &kernel.routes).is_none());
}
