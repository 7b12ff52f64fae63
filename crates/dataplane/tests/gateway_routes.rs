//! Egress gateway policy routing on a client's node, in a real kernel (root; private network
//! namespaces named `sluicegwr-*`). A node with a client pod, two gateway namespaces reached
//! from the node (each with its own `egress.sluice` VXLAN device that decapsulates, forwarding
//! and masquerade out of its uplink, as a gateway pod), and an outside host that records the
//! source address of each TCP connection. `NetlinkGatewayRoutes` programs the node; real
//! connections from the pod show where they went.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_dataplane::gateway_routes::NetlinkGatewayRoutes;
use sluice_gateway::routing::{
    DesiredRouting, Device, RoutingBackend, RoutingSyncer, Rule, TableRoute, TableRouteKind, Tunnel,
};
use sluice_gateway::tunnel::{DEVICE, gateway_mac, mac_text};
use support::{OUTSIDE, POD, Topology, in_namespace, ip, sysctl};

mod support;

const INTERFACE: &str = "slcgwrtest";
const PORT: u16 = 8080;
const TABLE: u32 = 1_000_000;
const GATEWAYS: [&str; 2] = ["10.62.0.11", "10.62.0.12"];
/// Under a `throw` route: the normal way.
const NORMAL: &str = "203.0.113.1";
/// Under an `unreachable` route.
const UNREACHABLE: &str = "198.51.100.1";

/// The topology of `support` plus two gateway namespaces, deleted on drop.
struct Cluster {
    topology: Topology,
    gateways: Vec<String>,
}

impl Cluster {
    fn new() -> Cluster {
        let topology = Topology::new("sluicegwr-net", INTERFACE);
        let (node, outside) = (topology.node.clone(), topology.outside.clone());
        let mut cluster = Cluster {
            gateways: Vec::new(),
            topology,
        };
        // The outside host answers on more addresses, all routed to it by the node's default.
        for address in [NORMAL, UNREACHABLE] {
            ip(&[
                "-n",
                &outside,
                "address",
                "add",
                &format!("{address}/32"),
                "dev",
                "eth0",
            ]);
        }
        ip(&["-n", &outside, "route", "add", "10.62.0.0/16", "via", "192.0.2.1"]);
        // Replies from the gateways reach the node on their links, not through the tunnel.
        sysctl(&node, "net.ipv4.conf.all.rp_filter=0");
        for (index, address) in GATEWAYS.iter().enumerate() {
            let namespace = format!("sluicegwr-net-{}-gw{index}", std::process::id());
            ip(&["netns", "add", &namespace]);
            cluster.gateways.push(namespace.clone());
            let link = format!("gw{index}");
            ip(&["-n", &namespace, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &node, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns",
                &namespace,
            ]);
            ip(&["-n", &node, "link", "set", &link, "up"]);
            sysctl(&node, &format!("net.ipv4.conf.{link}.proxy_arp=1"));
            sysctl(&node, &format!("net.ipv4.conf.{link}.rp_filter=0"));
            ip(&[
                "-n",
                &node,
                "route",
                "add",
                &format!("{address}/32"),
                "dev",
                &link,
            ]);
            let mac = mac_text(gateway_mac(address.parse().unwrap()));
            for command in [
                "link set eth0 up".to_string(),
                format!("address add {address}/32 dev eth0"),
                "route add 169.254.1.1 dev eth0 scope link".to_string(),
                "route add default via 169.254.1.1 dev eth0".to_string(),
                format!("link add {DEVICE} type vxlan id 4097 dstport 4790 nolearning"),
                format!("link set {DEVICE} address {mac} up"),
            ] {
                let mut arguments = vec!["-n", namespace.as_str()];
                arguments.extend(command.split(' '));
                ip(&arguments);
            }
            sysctl(&namespace, "net.ipv4.ip_forward=1");
            sysctl(&namespace, "net.ipv4.conf.all.rp_filter=0");
            // The slash form: the device name holds a dot.
            sysctl(&namespace, &format!("net/ipv4/conf/{DEVICE}/rp_filter=0"));
            let ruleset = "table ip gateway {\n chain post {\n  type nat hook postrouting priority 100;\n  oifname \"eth0\" masquerade\n }\n}\n";
            let status = Command::new("ip")
                .args(["netns", "exec", &namespace, "nft", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(ruleset.as_bytes())?;
                    child.wait()
                })
                .expect("nft runs");
            assert!(status.success(), "nft -f in {namespace}");
        }
        cluster
    }

    fn node(&self) -> &str {
        &self.topology.node
    }

    /// `ip -n node <arguments>`, whitespace-normalised lines.
    fn on_node(&self, arguments: &[&str]) -> Vec<String> {
        let output = Command::new("ip")
            .args(["-n", self.node()])
            .args(arguments)
            .output()
            .expect("ip runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for namespace in &self.gateways {
            let _ = Command::new("ip").args(["netns", "delete", namespace]).status();
        }
    }
}

/// A TCP server on the outside host recording each connection's source, until dropped.
struct Listener {
    sources: Arc<Mutex<Vec<IpAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(namespace: &str) -> Listener {
        let listener = in_namespace(namespace, || {
            TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).expect("listen")
        });
        listener.set_nonblocking(true).unwrap();
        let sources = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sources, stop) = (sources.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        // Recorded before the stream closes, so a client that saw the close
                        // finds its source here.
                        Ok((stream, peer)) => {
                            sources.lock().unwrap().push(peer.ip());
                            drop(stream);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Listener {
            sources,
            stop,
            thread: Some(thread),
        }
    }

    fn take(&self) -> Vec<IpAddr> {
        std::mem::take(&mut self.sources.lock().unwrap())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `count` connections from the pod to `destination`, each waiting for the server's close;
/// the sources the outside host saw for them.
fn sources_of(cluster: &Cluster, listener: &Listener, destination: &str, count: usize) -> Vec<IpAddr> {
    listener.take();
    let target = SocketAddr::new(destination.parse().unwrap(), PORT);
    in_namespace(&cluster.topology.pod, || {
        for attempt in 0..count {
            let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                .unwrap_or_else(|error| panic!("connection {attempt} to {target}: {error}"));
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buffer = [0u8; 1];
            let _ = std::io::Read::read(&mut stream, &mut buffer);
        }
    });
    let sources = listener.take();
    assert_eq!(sources.len(), count, "{sources:?}");
    sources
}

fn address(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn pod_rule() -> Rule {
    Rule::from_source(address(POD), TABLE, 100)
}

/// The pod through `gateways`, `NORMAL` the normal way, `UNREACHABLE` unreachable.
fn through(gateways: &[&str]) -> DesiredRouting {
    let route = |destination: &str, kind: TableRouteKind| TableRoute {
        table: TABLE,
        destination: destination.parse().unwrap(),
        kind,
    };
    let mut routes = vec![
        route(
            "0.0.0.0/0",
            TableRouteKind::Gateways(gateways.iter().map(|text| address(text)).collect()),
        ),
        route(&format!("{NORMAL}/32"), TableRouteKind::Throw),
        route("198.51.100.0/24", TableRouteKind::Unreachable),
    ];
    routes.sort();
    DesiredRouting {
        rules: vec![pod_rule()],
        routes,
        tunnels: gateways
            .iter()
            .map(|text| Tunnel {
                gateway: address(text),
                mac: gateway_mac(address(text)),
            })
            .collect(),
        device: Some(Device {
            vni: 4097,
            port: 4790,
            mtu: 1450,
        }),
        pins: Vec::new(),
        warnings: Vec::new(),
    }
}

#[test]
fn client_traffic_leaves_through_the_gateways_and_everything_is_owned_and_repaired() {
    let cluster = Cluster::new();
    let listener = Listener::start(&cluster.topology.outside);
    let pod: IpAddr = POD.parse().unwrap();
    let gateway = |index: usize| -> IpAddr { GATEWAYS[index].parse().unwrap() };

    // Before: the pod reaches the outside with its own address.
    assert_eq!(sources_of(&cluster, &listener, OUTSIDE, 1), vec![pod]);

    // Someone else's rule and route in Sluice's table range: left alone throughout.
    ip(&[
        "-n",
        cluster.node(),
        "rule",
        "add",
        "from",
        "10.61.0.99",
        "lookup",
        "1000500",
        "priority",
        "100",
        "protocol",
        "static",
    ]);
    ip(&[
        "-n",
        cluster.node(),
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        OUTSIDE,
        "table",
        "1000500",
        "proto",
        "static",
    ]);

    let mut syncer = RoutingSyncer::new(NetlinkGatewayRoutes::in_namespace(cluster.node()).unwrap());
    let report = syncer.sync(&through(&GATEWAYS)).unwrap();
    assert_eq!(
        (report.rules_added, report.routes_written, report.tunnels_added),
        (1, 3, 2),
        "{report:?}"
    );
    assert!(report.hash_policy_set, "{report:?}");

    // What the kernel holds, as `ip` shows it.
    let rules = cluster.on_node(&["rule", "show"]);
    assert!(
        rules.contains(&format!("100: from {POD} lookup {TABLE} proto 83")),
        "{rules:#?}"
    );
    let table = cluster.on_node(&["route", "show", "table", &TABLE.to_string()]);
    assert!(table.contains(&format!("throw {NORMAL} proto 83")), "{table:#?}");
    assert!(
        table.contains(&"unreachable 198.51.100.0/24 proto 83".to_string()),
        "{table:#?}"
    );
    for gateway in GATEWAYS {
        assert!(
            table.contains(&format!("nexthop via {gateway} dev {DEVICE} weight 1 onlink")),
            "{table:#?}"
        );
    }
    let device = cluster.on_node(&["-d", "link", "show", DEVICE]).join(" ");
    for setting in [
        "mtu 1450",
        "vxlan id 4097",
        "dstport 4790",
        "nolearning",
        "state UNKNOWN",
    ] {
        assert!(device.contains(setting), "{setting}: {device}");
    }
    let neighbours = cluster.on_node(&["neighbour", "show", "dev", DEVICE]);
    let forwarding = Command::new("bridge")
        .args(["-n", cluster.node(), "fdb", "show", "dev", DEVICE])
        .output()
        .expect("bridge runs");
    let forwarding = String::from_utf8_lossy(&forwarding.stdout).into_owned();
    for gateway in GATEWAYS {
        let mac = mac_text(gateway_mac(address(gateway)));
        assert!(
            neighbours.contains(&format!("{gateway} lladdr {mac} PERMANENT")),
            "{neighbours:#?}"
        );
        assert!(
            forwarding.contains(&format!("{mac} dst {gateway} self permanent")),
            "{forwarding}"
        );
    }
    let hash = Command::new("ip")
        .args([
            "netns",
            "exec",
            cluster.node(),
            "sysctl",
            "-n",
            "net.ipv4.fib_multipath_hash_policy",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hash.stdout).trim(), "1");
    // The backend reads back exactly what it wrote.
    let kernel = syncer.kernel_state().unwrap();
    assert_eq!(kernel.rules, through(&GATEWAYS).rules);
    let mut routes = kernel.routes.clone();
    routes.sort();
    assert_eq!(routes, through(&GATEWAYS).routes);

    // Through the gateways: only their addresses, spread over both (L4 hash: 40 connections
    // all on one of two gateways would be a 1 in 2^39 chance).
    let sources = sources_of(&cluster, &listener, OUTSIDE, 40);
    assert!(
        sources
            .iter()
            .all(|source| *source == gateway(0) || *source == gateway(1)),
        "{sources:?}"
    );
    assert!(
        sources.contains(&gateway(0)) && sources.contains(&gateway(1)),
        "{sources:?}"
    );

    // A `throw` destination goes the normal way, with the pod's own address.
    assert_eq!(sources_of(&cluster, &listener, NORMAL, 3), vec![pod; 3]);

    // An `unreachable` destination fails at once and nothing arrives outside.
    listener.take();
    let started = Instant::now();
    let outcome = in_namespace(&cluster.topology.pod, || {
        TcpStream::connect_timeout(
            &SocketAddr::new(UNREACHABLE.parse().unwrap(), PORT),
            Duration::from_secs(3),
        )
    });
    let elapsed = started.elapsed();
    let error = outcome.expect_err("unreachable");
    assert_eq!(error.kind(), std::io::ErrorKind::HostUnreachable, "{error}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(listener.take().is_empty());

    // One gateway leaves the desired state: every new connection goes through the other.
    let report = syncer.sync(&through(&GATEWAYS[1..])).unwrap();
    assert_eq!(
        (report.routes_written, report.tunnels_removed),
        (1, 1),
        "{report:?}"
    );
    let sources = sources_of(&cluster, &listener, OUTSIDE, 20);
    assert_eq!(sources, vec![gateway(1); 20]);
    let neighbours = cluster.on_node(&["neighbour", "show", "dev", DEVICE]).join("\n");
    assert!(!neighbours.contains(GATEWAYS[0]), "{neighbours}");
    let forwarding = Command::new("bridge")
        .args(["-n", cluster.node(), "fdb", "show", "dev", DEVICE])
        .output()
        .expect("bridge runs");
    let forwarding = String::from_utf8_lossy(&forwarding.stdout).into_owned();
    assert!(
        !forwarding.contains(GATEWAYS[0]) && forwarding.contains(GATEWAYS[1]),
        "{forwarding}"
    );

    // Our rule deleted behind the syncer's back: the pod leaks the normal way until a resync.
    ip(&[
        "-n",
        cluster.node(),
        "rule",
        "del",
        "from",
        POD,
        "lookup",
        &TABLE.to_string(),
        "priority",
        "100",
    ]);
    assert_eq!(sources_of(&cluster, &listener, OUTSIDE, 1), vec![pod]);
    let report = syncer.sync(&through(&GATEWAYS[1..])).unwrap();
    assert_eq!(report.rules_added, 0, "trusts what it applied: {report:?}");
    syncer.resync_next();
    let report = syncer.sync(&through(&GATEWAYS[1..])).unwrap();
    assert_eq!(report.rules_added, 1, "{report:?}");
    // The one-hop route reads back as written (the kernel lists it without RTA_MULTIPATH).
    assert_eq!(
        (report.routes_written, report.tunnels_added),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(sources_of(&cluster, &listener, OUTSIDE, 5), vec![gateway(1); 5]);

    // Everything dropped: Sluice's rules, routes and device go; the others' stay.
    let report = syncer.sync(&DesiredRouting::default()).unwrap();
    assert_eq!(
        (report.rules_removed, report.routes_removed),
        (1, 3),
        "{report:?}"
    );
    let rules = cluster.on_node(&["rule", "show"]);
    assert!(!rules.iter().any(|rule| rule.contains("proto 83")), "{rules:#?}");
    assert!(
        rules.contains(&"100: from 10.61.0.99 lookup 1000500 proto static".to_string()),
        "{rules:#?}"
    );
    let everything = cluster.on_node(&["route", "show", "table", "all"]);
    assert!(
        !everything.iter().any(|route| route.contains("proto 83")),
        "{everything:#?}"
    );
    assert!(
        everything.contains(&format!(
            "10.99.0.0/24 via {OUTSIDE} dev uplink table 1000500 proto static"
        )),
        "{everything:#?}"
    );
    assert!(
        cluster.on_node(&["link", "show", DEVICE]).is_empty(),
        "the device is gone"
    );
    assert!(syncer.backend_mut().device().unwrap().is_none());
    // And the pod is back on the normal way.
    assert_eq!(sources_of(&cluster, &listener, OUTSIDE, 1), vec![pod]);
}

/// A bare namespace, deleted on drop.
struct Bare(String);

impl Bare {
    fn new(purpose: &str) -> Bare {
        let name = format!("sluicegwr-{purpose}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Bare(name)
    }

    fn show(&self, program: &str, arguments: &[&str]) -> String {
        let output = Command::new(program)
            .args(["-n", &self.0])
            .args(arguments)
            .output()
            .expect("runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

#[test]
fn the_device_is_changed_in_place_or_recreated_and_lost_entries_come_back() {
    let namespace = Bare::new("device");
    // An identical rule of someone else's: ours is added beside it and only ours is deleted.
    ip(&[
        "-n",
        &namespace.0,
        "rule",
        "add",
        "from",
        POD,
        "lookup",
        &TABLE.to_string(),
        "priority",
        "100",
        "protocol",
        "static",
    ]);
    let mut syncer = RoutingSyncer::new(NetlinkGatewayRoutes::in_namespace(&namespace.0).unwrap());
    let mut desired = through(&GATEWAYS[..1]);
    let report = syncer.sync(&desired).unwrap();
    assert_eq!((report.rules_added, report.tunnels_added), (1, 1), "{report:?}");
    let rules = namespace.show("ip", &["rule", "show"]);
    assert!(
        rules.contains(&format!("100: from {POD} lookup {TABLE} proto static")),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("100: from {POD} lookup {TABLE} proto 83")),
        "{rules}"
    );

    // Another MTU: changed in place, routes and tunnels stay.
    desired.device = Some(Device {
        mtu: 1400,
        ..desired.device.unwrap()
    });
    let report = syncer.sync(&desired).unwrap();
    assert_eq!(
        (report.device, report.routes_written, report.tunnels_added),
        (Some(sluice_gateway::routing::DeviceChange::Changed), 0, 0),
        "{report:?}"
    );
    assert!(
        namespace
            .show("ip", &["link", "show", DEVICE])
            .contains("mtu 1400")
    );

    // Another VNI: recreated, with its tunnel and the route through it written again.
    desired.device = Some(Device {
        vni: 7,
        ..desired.device.unwrap()
    });
    let report = syncer.sync(&desired).unwrap();
    assert_eq!(
        (report.routes_written, report.tunnels_added),
        (1, 1),
        "{report:?}"
    );
    let device = namespace.show("ip", &["-d", "link", "show", DEVICE]);
    assert!(
        device.contains("vxlan id 7 ") && device.contains("mtu 1400"),
        "{device}"
    );
    let table = namespace.show("ip", &["route", "show", "table", &TABLE.to_string()]);
    assert!(
        table.contains(&format!(
            "default via {} dev {DEVICE} proto 83 onlink",
            GATEWAYS[0]
        )),
        "{table}"
    );

    // The FDB entry removed behind its back: put back after a resync.
    let mac = mac_text(gateway_mac(address(GATEWAYS[0])));
    let status = Command::new("bridge")
        .args([
            "-n",
            &namespace.0,
            "fdb",
            "del",
            &mac,
            "dev",
            DEVICE,
            "dst",
            GATEWAYS[0],
            "self",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        !namespace
            .show("bridge", &["fdb", "show", "dev", DEVICE])
            .contains(&mac)
    );
    syncer.resync_next();
    let report = syncer.sync(&desired).unwrap();
    assert_eq!(report.tunnels_added, 1, "{report:?}");
    let forwarding = namespace.show("bridge", &["fdb", "show", "dev", DEVICE]);
    assert!(
        forwarding.contains(&format!("{mac} dst {} self permanent", GATEWAYS[0])),
        "{forwarding}"
    );

    syncer.sync(&DesiredRouting::default()).unwrap();
    let rules = namespace.show("ip", &["rule", "show"]);
    assert!(
        rules.contains(&format!("100: from {POD} lookup {TABLE} proto static")),
        "{rules}"
    );
    assert!(!rules.contains("proto 83"), "{rules}");
    assert!(namespace.show("ip", &["link", "show", DEVICE]).is_empty());
}

#[test]
fn a_thousand_clients_are_programmed_read_back_and_removed() {
    const CLIENTS: u32 = 1000;
    let namespace = Bare::new("scale");
    let mut syncer = RoutingSyncer::new(NetlinkGatewayRoutes::in_namespace(&namespace.0).unwrap());
    let gateways: Vec<Ipv4Addr> = GATEWAYS.iter().map(|text| address(text)).collect();
    let mut desired = DesiredRouting {
        tunnels: gateways
            .iter()
            .map(|&gateway| Tunnel {
                gateway,
                mac: gateway_mac(gateway),
            })
            .collect(),
        device: Some(Device {
            vni: 4097,
            port: 4790,
            mtu: 1450,
        }),
        ..DesiredRouting::default()
    };
    for index in 0..CLIENTS {
        let table = TABLE + index;
        desired.rules.push(Rule::from_source(
            Ipv4Addr::from(u32::from(address("10.61.0.0")) + index + 1),
            table,
            100,
        ));
        for (destination, kind) in [
            ("0.0.0.0/0", TableRouteKind::Gateways(gateways.clone())),
            ("10.0.0.0/8", TableRouteKind::Throw),
        ] {
            desired.routes.push(TableRoute {
                table,
                destination: destination.parse().unwrap(),
                kind,
            });
        }
    }
    desired.routes.sort();

    let started = Instant::now();
    let report = syncer.sync(&desired).unwrap();
    let programming = started.elapsed();
    assert_eq!(
        (report.rules_added, report.routes_written),
        (CLIENTS as usize, 2 * CLIENTS as usize)
    );
    let rules = namespace.show("ip", &["rule", "show"]);
    assert_eq!(
        rules.lines().filter(|line| line.contains("proto 83")).count(),
        CLIENTS as usize
    );

    syncer.resync_next();
    let started = Instant::now();
    let report = syncer.sync(&desired).unwrap();
    let resync = started.elapsed();
    assert!(!report.changed(), "read back equal: {report:?}");

    let started = Instant::now();
    let report = syncer.sync(&DesiredRouting::default()).unwrap();
    let removal = started.elapsed();
    assert_eq!(
        (report.rules_removed, report.routes_removed),
        (CLIENTS as usize, 2 * CLIENTS as usize)
    );
    assert!(!namespace.show("ip", &["rule", "show"]).contains("proto 83"));
    eprintln!(
        "{CLIENTS} clients: programmed in {programming:?}, resync with nothing to change {resync:?}, removed in {removal:?}"
    );
}
