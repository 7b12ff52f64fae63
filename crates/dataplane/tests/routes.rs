//! Sluice's routes in a real kernel (root; a private network namespace per test).

use std::process::Command;

use sluice_dataplane::routes::{NetlinkRoutes, ROUTE_PROTOCOL, Route, RouteBackend, RouteSyncer};

struct Namespace(String);

impl Namespace {
    /// A namespace with a link (a veth pair inside it) on 100.64.0.0/24 and fd64::/64, so those are on-link next hops.
    fn new(purpose: &str) -> Namespace {
        let name = format!("sluicert-{purpose}-{}", std::process::id());
        let namespace = Namespace(name);
        namespace.ip(&["netns", "add", &namespace.0]);
        for command in [
            "link add underlay type veth peer name underlay-peer",
            "link set underlay-peer up",
            "link set underlay up",
            "address add 100.64.0.10/24 dev underlay",
            "address add fd64::10/64 dev underlay nodad",
            // Someone else's routes: a static one and a default route.
            "route add 10.9.0.0/24 via 100.64.0.1 proto static",
            "route add default via 100.64.0.1",
        ] {
            let mut arguments = vec!["-n", namespace.0.as_str()];
            arguments.extend(command.split(' '));
            namespace.ip(&arguments);
        }
        namespace
    }

    fn ip(&self, arguments: &[&str]) -> String {
        let output = Command::new("ip").args(arguments).output().expect("ip runs");
        assert!(
            output.status.success(),
            "ip {arguments:?}: {} (needs root)",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `ip route show` lines for one family, whitespace-normalised.
    fn routes(&self, family: &str) -> Vec<String> {
        self.ip(&["-n", &self.0, family, "route", "show"])
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn route(destination: &str, via: Option<&str>) -> Route {
    Route {
        destination: destination.parse().unwrap(),
        via: via.map(|address| address.parse().unwrap()),
    }
}

#[test]
fn routes_are_added_changed_and_removed_and_nobody_elses_are_touched() {
    let namespace = Namespace::new("sync");
    let mut syncer = RouteSyncer::new(NetlinkRoutes::in_namespace(&namespace.0).unwrap());
    let report = syncer
        .sync(&[
            route("10.0.0.0/26", None),
            route("10.0.0.64/26", Some("100.64.0.11")),
            route("10.0.0.5/32", Some("100.64.0.12")),
            route("fd00::40/122", Some("fd64::11")),
            route("fd00::80/122", None),
            // Someone else already routes this destination: left alone, reported.
            route("10.9.0.0/24", Some("100.64.0.11")),
        ])
        .unwrap();
    assert_eq!((report.added, report.removed), (5, 0));
    assert_eq!(report.conflicts, vec![route("10.9.0.0/24", Some("100.64.0.11"))]);
    let protocol = ROUTE_PROTOCOL.to_string();
    let v4 = namespace.routes("-4");
    for expected in [
        format!("blackhole 10.0.0.0/26 proto {protocol}"),
        format!("10.0.0.5 via 100.64.0.12 dev underlay proto {protocol}"),
        format!("10.0.0.64/26 via 100.64.0.11 dev underlay proto {protocol}"),
        "10.9.0.0/24 via 100.64.0.1 dev underlay proto static".to_string(),
        "default via 100.64.0.1 dev underlay".to_string(),
    ] {
        assert!(v4.contains(&expected), "missing `{expected}` in {v4:#?}");
    }
    let v6 = namespace.routes("-6");
    for expected in [
        format!("fd00::40/122 via fd64::11 dev underlay proto {protocol} metric 1024 pref medium"),
        format!("blackhole fd00::80/122 dev lo proto {protocol} metric 1024 pref medium"),
    ] {
        assert!(v6.contains(&expected), "missing `{expected}` in {v6:#?}");
    }

    // A route someone adds after the list is never overwritten: the kernel refuses the add.
    let mut backend = NetlinkRoutes::in_namespace(&namespace.0).unwrap();
    namespace.ip(&[
        "-n",
        &namespace.0,
        "route",
        "add",
        "10.0.5.0/26",
        "via",
        "100.64.0.1",
    ]);
    assert!(!backend.add(&route("10.0.5.0/26", Some("100.64.0.11"))).unwrap());
    assert!(
        namespace
            .routes("-4")
            .contains(&"10.0.5.0/26 via 100.64.0.1 dev underlay".to_string())
    );
    namespace.ip(&["-n", &namespace.0, "route", "delete", "10.0.5.0/26"]);

    // A block moves to another node, a borrowed address is released, the IPv6 block goes away.
    let report = syncer
        .sync(&[
            route("10.0.0.0/26", None),
            route("10.0.0.64/26", Some("100.64.0.12")),
        ])
        .unwrap();
    assert_eq!((report.added, report.removed), (1, 3));
    let v4 = namespace.routes("-4");
    assert!(v4.contains(&format!(
        "10.0.0.64/26 via 100.64.0.12 dev underlay proto {protocol}"
    )));
    assert!(!v4.iter().any(|line| line.starts_with("10.0.0.5 ")), "{v4:#?}");
    assert!(v4.contains(&"10.9.0.0/24 via 100.64.0.1 dev underlay proto static".to_string()));
    assert!(
        !namespace
            .routes("-6")
            .iter()
            .any(|line| line.starts_with("fd00::40"))
    );

    // Nothing desired: only Sluice's routes go.
    syncer.sync(&[]).unwrap();
    let v4 = namespace.routes("-4");
    assert_eq!(
        v4,
        vec![
            "default via 100.64.0.1 dev underlay".to_string(),
            "10.9.0.0/24 via 100.64.0.1 dev underlay proto static".to_string(),
            "100.64.0.0/24 dev underlay proto kernel scope link src 100.64.0.10".to_string(),
        ]
    );
}

#[test]
fn an_unreachable_next_hop_fails_alone_and_a_route_removed_behind_our_back_comes_back() {
    let namespace = Namespace::new("repair");
    let mut syncer = RouteSyncer::new(NetlinkRoutes::in_namespace(&namespace.0).unwrap());
    let desired = [
        route("10.0.0.64/26", Some("100.64.0.11")),
        // Not on any link of the node: the kernel refuses it.
        route("10.0.1.0/26", Some("192.0.2.1")),
    ];
    let error = syncer.sync(&desired).unwrap_err();
    assert!(error.0.contains("10.0.1.0/26 via 192.0.2.1"), "{error}");
    let v4 = namespace.routes("-4");
    assert!(
        v4.iter()
            .any(|line| line.starts_with("10.0.0.64/26 via 100.64.0.11")),
        "{v4:#?}"
    );

    let desired = [route("10.0.0.64/26", Some("100.64.0.11"))];
    syncer.sync(&desired).unwrap();
    namespace.ip(&["-n", &namespace.0, "route", "delete", "10.0.0.64/26"]);
    syncer.resync_next();
    let report = syncer.sync(&desired).unwrap();
    assert_eq!(report.added, 1);
    assert!(
        namespace
            .routes("-4")
            .iter()
            .any(|line| line.starts_with("10.0.0.64/26 via 100.64.0.11"))
    );
}
