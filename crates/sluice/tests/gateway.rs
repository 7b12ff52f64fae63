//! `sluice gateway` on real packets (root only; skipped otherwise). Four network namespaces a
//! test creates, named `sluicegwp-<pid>-<test>-<role>`: a client and a gateway pod, an outside
//! host, and a node that routes them, sending the client's traffic to the gateway by a policy
//! rule as an agent would (plainly, or as the client's node does: through its own
//! `egress.sluice` VXLAN device, made here with `ip` and `bridge`). The outside host counts what arrives by source address (an nft table
//! in its namespace) and answers ICMP echo and TCP (a health endpoint: any TCP server will do,
//! and this one is in the binary under test). Nothing touches the root namespace; the
//! namespaces go when the test ends.

use std::io::Read as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CLIENT: &str = "10.77.1.2";
const GATEWAY: &str = "10.77.2.2";
const OUTSIDE: &str = "10.77.3.2";
// Assigned to the outside host only when a test wants the ICMP probe to succeed.
const PROBE_TARGET: &str = "10.77.3.9";
const OUTSIDE_PORT: &str = "7000";
// gateway_mac(10.77.2.2), written out: the node's entries must agree with what the gateway
// derives on its own.
const GATEWAY_MAC: &str = "02:53:0a:4d:02:02";
const TUNNEL: &str = "egress.sluice";

struct Topology {
    prefix: String,
    processes: Vec<Child>,
}

impl Topology {
    fn new(test: &str) -> Topology {
        let topology = Topology {
            prefix: format!("sluicegwp-{}-{test}", std::process::id()),
            processes: Vec::new(),
        };
        for role in ["node", "client", "gateway", "outside"] {
            run("ip", &["netns", "add", &topology.name(role)]);
            run("ip", &["-n", &topology.name(role), "link", "set", "lo", "up"]);
        }
        let node = topology.name("node");
        for (role, device, subnet) in [
            ("client", "vc", "10.77.1"),
            ("gateway", "vg", "10.77.2"),
            ("outside", "vo", "10.77.3"),
        ] {
            let namespace = topology.name(role);
            run(
                "ip",
                &[
                    "-n", &node, "link", "add", device, "type", "veth", "peer", "name", "eth0", "netns",
                    &namespace,
                ],
            );
            run(
                "ip",
                &[
                    "-n",
                    &node,
                    "address",
                    "add",
                    &format!("{subnet}.1/24"),
                    "dev",
                    device,
                ],
            );
            run("ip", &["-n", &node, "link", "set", device, "up"]);
            run(
                "ip",
                &[
                    "-n",
                    &namespace,
                    "address",
                    "add",
                    &format!("{subnet}.2/24"),
                    "dev",
                    "eth0",
                ],
            );
            run("ip", &["-n", &namespace, "link", "set", "eth0", "up"]);
            run(
                "ip",
                &[
                    "-n",
                    &namespace,
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("{subnet}.1"),
                ],
            );
        }
        run(
            "ip",
            &["netns", "exec", &node, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        );
        // The agent's part, by hand: the client's traffic goes to its gateway.
        run(
            "ip",
            &[
                "-n", &node, "rule", "add", "from", CLIENT, "iif", "vc", "lookup", "100", "priority", "100",
            ],
        );
        run(
            "ip",
            &[
                "-n", &node, "route", "add", "default", "via", GATEWAY, "table", "100",
            ],
        );
        topology
    }

    /// The client's node as it routes a client through a gateway: its own VXLAN device (VNI
    /// 4097, port 4790, no learning), a permanent neighbour entry and an FDB entry for the
    /// gateway, and the client's table pointing into the device.
    fn tunnel_from_node(&self) {
        let node = self.name("node");
        run(
            "ip",
            &[
                "-n",
                &node,
                "link",
                "add",
                TUNNEL,
                "mtu",
                "1450",
                "type",
                "vxlan",
                "id",
                "4097",
                "dstport",
                "4790",
                "nolearning",
            ],
        );
        run("ip", &["-n", &node, "link", "set", TUNNEL, "up"]);
        run(
            "ip",
            &[
                "-n",
                &node,
                "neighbour",
                "add",
                GATEWAY,
                "lladdr",
                GATEWAY_MAC,
                "dev",
                TUNNEL,
                "nud",
                "permanent",
            ],
        );
        run(
            "bridge",
            &[
                "-netns",
                &node,
                "fdb",
                "append",
                GATEWAY_MAC,
                "dev",
                TUNNEL,
                "dst",
                GATEWAY,
            ],
        );
        run(
            "ip",
            &[
                "-n", &node, "route", "replace", "default", "via", GATEWAY, "dev", TUNNEL, "onlink", "table",
                "100",
            ],
        );
    }

    /// The gateway's tunnel device as `ip -j -d -s link show` describes it, if it exists.
    fn gateway_tunnel(&self) -> Option<serde_json::Value> {
        let output = Command::new("ip")
            .args([
                "-n",
                &self.name("gateway"),
                "-j",
                "-d",
                "-s",
                "link",
                "show",
                "dev",
                TUNNEL,
            ])
            .output()
            .unwrap();
        if !output.status.success() {
            return None;
        }
        let links: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        links.get(0).cloned()
    }

    fn gateway_sysctl(&self, name: &str) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name("gateway"), "sysctl", "-n", name])
            .output()
            .unwrap();
        text(&output.stdout).trim().to_string()
    }

    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn spawn_in(&mut self, role: &str, arguments: &[&str]) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name(role), env!("CARGO_BIN_EXE_sluice")])
            .args(arguments)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.processes.push(child);
        self.processes.len() - 1
    }

    /// A TCP server on the outside host, and counters of what reaches it from the gateway's and
    /// the client's addresses.
    fn start_outside(&mut self) {
        self.spawn_in(
            "outside",
            &["gateway", "--no-snat", "--health-port", OUTSIDE_PORT],
        );
        let outside = self.name("outside");
        let nft = |command: &str| run("ip", &["netns", "exec", &outside, "nft", command]);
        nft("add table inet sluicegwp-watch");
        nft("add chain inet sluicegwp-watch input { type filter hook input priority 0 ; }");
        nft(&format!(
            "add rule inet sluicegwp-watch input ip saddr {GATEWAY} counter comment \"from-gateway\""
        ));
        nft(&format!(
            "add rule inet sluicegwp-watch input ip saddr {CLIENT} counter comment \"from-client\""
        ));
    }

    /// Packets the outside host received from `address`.
    fn outside_received_from(&self, address: &str) -> u64 {
        let comment = match address {
            GATEWAY => "from-gateway",
            CLIENT => "from-client",
            other => panic!("no counter for {other}"),
        };
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name("outside"),
                "nft",
                "list",
                "table",
                "inet",
                "sluicegwp-watch",
            ])
            .output()
            .unwrap();
        let listing = text(&output.stdout);
        let line = listing
            .lines()
            .find(|line| line.contains(comment))
            .expect("the counter rule");
        let words: Vec<&str> = line.split_whitespace().collect();
        let position = words
            .iter()
            .position(|word| *word == "packets")
            .expect("a packet count");
        words[position + 1].parse().unwrap()
    }

    fn start_gateway(&mut self, arguments: &[&str]) -> usize {
        let mut all = vec!["gateway", "--health-port", "8080"];
        all.extend_from_slice(arguments);
        self.spawn_in("gateway", &all)
    }

    /// Whether one ping from the client to the outside host is answered.
    fn client_pings_outside(&self) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name("client"),
                "ping",
                "-n",
                "-q",
                "-c",
                "1",
                "-W",
                "1",
                OUTSIDE,
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// The status code of GET `path` on `address:port`, asked from `role`'s namespace over TCP.
    fn get(&self, role: &str, address: &str, port: &str, path: &str) -> Option<u16> {
        let script = format!(
            "exec 3<>/dev/tcp/{address}/{port} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3"
        );
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name(role),
                "timeout",
                "2",
                "bash",
                "-c",
                &script,
            ])
            .output()
            .unwrap();
        text(&output.stdout).split_whitespace().nth(1)?.parse().ok()
    }

    /// The status code of GET `path` on the gateway's health port, asked from the node.
    fn health(&self, path: &str) -> Option<u16> {
        self.get("node", GATEWAY, "8080", path)
    }

    fn gateway_table(&self) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name("gateway"),
                "nft",
                "list",
                "table",
                "inet",
                "sluice-gateway",
            ])
            .output()
            .unwrap()
    }

    /// Sends SIGTERM and waits (at most 10 s) for the exit; returns its stderr.
    fn terminate(&mut self, index: usize) -> (std::process::ExitStatus, String) {
        let child = &mut self.processes[index];
        run("kill", &["-s", "TERM", &child.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        (status, log)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for role in ["node", "client", "gateway", "outside"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name(role)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run(program: &str, arguments: &[&str]) {
    let output = Command::new(program).args(arguments).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {arguments:?}: {}",
        text(&output.stderr)
    );
}

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).into_owned()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    })
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_outside_sees_the_gateway_address_and_sigterm_removes_the_table() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut topology = Topology::new("snat");
    topology.start_outside();
    let gateway = topology.start_gateway(&[]);
    // No probes: ready once forwarding and SNAT are in place.
    wait_for("the gateway to be ready", || {
        topology.health("/readiness") == Some(200)
    });
    assert_eq!(topology.health("/liveness"), Some(200));
    assert_eq!(topology.health("/metrics"), Some(404));
    let table = topology.gateway_table();
    assert!(table.status.success(), "{}", text(&table.stderr));
    assert!(
        text(&table.stdout).contains(&format!("snat ip to {GATEWAY}")),
        "{}",
        text(&table.stdout)
    );
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let in_gateway = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topology.name("gateway"),
            "sysctl",
            "-n",
            "net.ipv4.ip_forward",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&in_gateway.stdout).trim(), "1");

    // Replies come back through the gateway (conntrack undoes the SNAT): ICMP and TCP work.
    wait_for("the outside host to answer through the gateway", || {
        topology.client_pings_outside()
    });
    assert_eq!(
        topology.get("client", OUTSIDE, OUTSIDE_PORT, "/liveness"),
        Some(200)
    );
    assert!(topology.outside_received_from(GATEWAY) > 0);
    assert_eq!(
        topology.outside_received_from(CLIENT),
        0,
        "the outside must never see the client's address"
    );

    let (status, log) = topology.terminate(gateway);
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("removed the source NAT table"), "{log}");
    assert!(
        !topology.gateway_table().status.success(),
        "the table must be gone after SIGTERM"
    );
    // The root namespace's forwarding setting was not touched by the gateway.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forwarding
    );
}

#[test]
fn with_no_snat_the_gateway_forwards_with_the_client_address_and_has_no_table() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut topology = Topology::new("nosnat");
    topology.start_outside();
    let gateway = topology.start_gateway(&["--no-snat"]);
    wait_for("the gateway to be ready", || {
        topology.health("/readiness") == Some(200)
    });
    assert!(
        !topology.gateway_table().status.success(),
        "--no-snat installs no table"
    );
    wait_for("the outside host to answer through the gateway", || {
        topology.client_pings_outside()
    });
    assert_eq!(
        topology.get("client", OUTSIDE, OUTSIDE_PORT, "/liveness"),
        Some(200)
    );
    assert!(topology.outside_received_from(CLIENT) > 0);
    assert_eq!(topology.outside_received_from(GATEWAY), 0);
    let (status, log) = topology.terminate(gateway);
    assert!(status.success(), "exit {status}: {log}");
}

#[test]
fn readiness_follows_the_icmp_probe() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut topology = Topology::new("probe");
    let gateway = topology.start_gateway(&[
        "--icmp-probe",
        PROBE_TARGET,
        "--probe-interval",
        "0.2",
        "--probe-timeout",
        "1",
    ]);
    wait_for("the health endpoint", || {
        topology.health("/liveness") == Some(200)
    });
    // The target does not exist yet: never a success, so never ready.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(topology.health("/readiness"), Some(503));

    let outside = topology.name("outside");
    run(
        "ip",
        &[
            "-n",
            &outside,
            "address",
            "add",
            &format!("{PROBE_TARGET}/24"),
            "dev",
            "eth0",
        ],
    );
    wait_for("ready once the target answers", || {
        topology.health("/readiness") == Some(200)
    });

    run(
        "ip",
        &[
            "-n",
            &outside,
            "address",
            "del",
            &format!("{PROBE_TARGET}/24"),
            "dev",
            "eth0",
        ],
    );
    wait_for("not ready once the target has been silent for the window", || {
        topology.health("/readiness") == Some(503)
    });
    assert_eq!(topology.health("/liveness"), Some(200));
    let (status, log) = topology.terminate(gateway);
    assert!(status.success(), "exit {status}: {log}");
    assert!(
        log.contains("probe fails") && log.contains("probe succeeds"),
        "{log}"
    );
}

#[test]
fn readiness_needs_every_configured_probe_kind_and_http_counts_2xx_only() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut topology = Topology::new("http");
    topology.start_outside();
    let fast = ["--probe-interval", "0.2", "--probe-timeout", "1"];
    // The outside's /liveness answers 200, its /nothing 404: only the first is a success.
    let good = format!("http://{OUTSIDE}:{OUTSIDE_PORT}/liveness");
    let bad = format!("http://{OUTSIDE}:{OUTSIDE_PORT}/nothing");
    let mut arguments = vec!["--http-probe", &bad, "--icmp-probe", OUTSIDE];
    arguments.extend_from_slice(&fast);
    let gateway = topology.start_gateway(&arguments);
    wait_for("the health endpoint", || {
        topology.health("/liveness") == Some(200)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        topology.health("/readiness"),
        Some(503),
        "ICMP succeeds but HTTP never does"
    );
    let (status, log) = topology.terminate(gateway);
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("answered 404"), "{log}");

    let mut arguments = vec![
        "--http-probe",
        &bad,
        "--http-probe",
        &good,
        "--icmp-probe",
        OUTSIDE,
    ];
    arguments.extend_from_slice(&fast);
    let gateway = topology.start_gateway(&arguments);
    wait_for("ready: one HTTP probe and the ICMP probe succeed", || {
        topology.health("/readiness") == Some(200)
    });
    let (status, log) = topology.terminate(gateway);
    assert!(status.success(), "exit {status}: {log}");
}

#[test]
fn a_gateway_killed_without_cleanup_is_replaced_by_the_next_one() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut topology = Topology::new("restart");
    topology.start_outside();
    let first = topology.start_gateway(&[]);
    wait_for("the first gateway to be ready", || {
        topology.health("/readiness") == Some(200)
    });
    // SIGKILL: no cleanup, the table stays behind.
    topology.processes[first].kill().unwrap();
    topology.processes[first].wait().unwrap();
    assert!(
        topology.gateway_table().status.success(),
        "a killed gateway leaves its table"
    );

    let second = topology.start_gateway(&[]);
    wait_for("the second gateway to be ready", || {
        topology.health("/readiness") == Some(200)
    });
    let listing = text(&topology.gateway_table().stdout);
    assert_eq!(
        listing.matches("snat ip to").count(),
        1,
        "the leftover is replaced, not added to:\n{listing}"
    );
    wait_for("the outside host to answer through the gateway", || {
        topology.client_pings_outside()
    });
    assert_eq!(topology.outside_received_from(CLIENT), 0);
    let (status, log) = topology.terminate(second);
    assert!(status.success(), "exit {status}: {log}");
    assert!(!topology.gateway_table().status.success());
}

#[test]
fn an_interface_without_an_address_is_a_clear_error() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let topology = Topology::new("noaddr");
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topology.name("gateway"),
            env!("CARGO_BIN_EXE_sluice"),
        ])
        .args(["gateway", "--interface", "lo"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = text(&output.stderr);
    assert!(
        error.contains("interface lo has no global IPv4 or IPv6 address"),
        "{error}"
    );
    assert!(!topology.gateway_table().status.success(), "nothing installed");
}

#[test]
fn client_traffic_tunnelled_from_its_node_leaves_with_the_gateway_address_until_sigterm() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut topology = Topology::new("tunnel");
    topology.start_outside();
    topology.tunnel_from_node();
    let gateway = topology.start_gateway(&[]);
    wait_for("the gateway to be ready", || {
        topology.health("/readiness") == Some(200)
    });
    let device = topology
        .gateway_tunnel()
        .expect("the gateway made its tunnel device");
    assert_eq!(device["address"], GATEWAY_MAC, "{device}");
    assert_eq!(device["mtu"], 1450, "eth0's 1500 less VXLAN's 50: {device}");
    let flags = device["flags"].as_array().unwrap();
    assert!(flags.iter().any(|flag| flag == "UP"), "{device}");
    let vxlan = &device["linkinfo"]["info_data"];
    assert_eq!(device["linkinfo"]["info_kind"], "vxlan", "{device}");
    assert_eq!(vxlan["id"], 4097, "{device}");
    assert_eq!(vxlan["port"], 4790, "{device}");
    assert_eq!(vxlan["learning"], false, "{device}");
    assert_eq!(topology.gateway_sysctl("net.ipv4.conf.all.rp_filter"), "0");
    assert_eq!(
        topology.gateway_sysctl(&format!("net/ipv4/conf/{TUNNEL}/rp_filter")),
        "0"
    );

    // Out through the tunnel, SNATed at the gateway; back through its conntrack.
    wait_for("the outside host to answer through the tunnel", || {
        topology.client_pings_outside()
    });
    assert_eq!(
        topology.get("client", OUTSIDE, OUTSIDE_PORT, "/liveness"),
        Some(200)
    );
    assert!(topology.outside_received_from(GATEWAY) > 0);
    assert_eq!(
        topology.outside_received_from(CLIENT),
        0,
        "the outside must never see the client's address"
    );
    let decapsulated = topology.gateway_tunnel().unwrap()["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap();
    assert!(
        decapsulated >= 2,
        "the ping and the TCP connection arrived through the device: {decapsulated} packets"
    );

    let (status, log) = topology.terminate(gateway);
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("removed the tunnel device"), "{log}");
    assert!(
        topology.gateway_tunnel().is_none(),
        "the device must be gone after SIGTERM"
    );
    assert!(
        !topology.gateway_table().status.success(),
        "the table must be gone after SIGTERM"
    );
    // Nothing gets through a stopped gateway, with either source address.
    let (from_gateway, from_client) = (
        topology.outside_received_from(GATEWAY),
        topology.outside_received_from(CLIENT),
    );
    assert!(!topology.client_pings_outside());
    assert_eq!(topology.get("client", OUTSIDE, OUTSIDE_PORT, "/liveness"), None);
    assert_eq!(topology.outside_received_from(GATEWAY), from_gateway);
    assert_eq!(topology.outside_received_from(CLIENT), from_client);
}

#[test]
fn the_vxlan_flags_set_the_device_and_a_killed_gateway_device_is_replaced() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut topology = Topology::new("vni");
    topology.start_outside();
    topology.tunnel_from_node();
    // Another VNI than the node's: the gateway's device ignores what the node sends.
    let first = topology.start_gateway(&["--vxlan-vni", "4098", "--vxlan-port", "4790"]);
    wait_for("the first gateway to be ready", || {
        topology.health("/readiness") == Some(200)
    });
    let device = topology.gateway_tunnel().unwrap();
    assert_eq!(device["linkinfo"]["info_data"]["id"], 4098, "{device}");
    assert!(!topology.client_pings_outside());
    assert_eq!(topology.outside_received_from(GATEWAY), 0);

    // SIGKILL leaves the device (and the table); the next gateway replaces both.
    topology.processes[first].kill().unwrap();
    topology.processes[first].wait().unwrap();
    assert!(
        topology.gateway_tunnel().is_some(),
        "a killed gateway leaves its device"
    );
    let second = topology.start_gateway(&[]);
    wait_for("the second gateway to be ready", || {
        topology.health("/readiness") == Some(200)
    });
    let device = topology.gateway_tunnel().unwrap();
    assert_eq!(device["linkinfo"]["info_data"]["id"], 4097, "{device}");
    wait_for("the outside host to answer through the tunnel", || {
        topology.client_pings_outside()
    });
    assert_eq!(topology.outside_received_from(CLIENT), 0);
    let (status, log) = topology.terminate(second);
    assert!(status.success(), "exit {status}: {log}");
    assert!(
        log.contains("removed a tunnel device left by an earlier run"),
        "{log}"
    );
    assert!(topology.gateway_tunnel().is_none());
}

#[test]
fn a_device_of_the_tunnel_name_that_is_not_vxlan_is_refused_and_nothing_is_left() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let topology = Topology::new("foreign");
    let gateway = topology.name("gateway");
    run(
        "ip",
        &[
            "-n", &gateway, "link", "add", TUNNEL, "type", "veth", "peer", "name", "other",
        ],
    );
    let output = Command::new("ip")
        .args(["netns", "exec", &gateway, env!("CARGO_BIN_EXE_sluice")])
        .args(["gateway", "--health-port", "8080"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = text(&output.stderr);
    assert!(
        error.contains("a veth device named egress.sluice exists"),
        "{error}"
    );
    let device = topology
        .gateway_tunnel()
        .expect("someone else's device is left alone");
    assert_eq!(device["linkinfo"]["info_kind"], "veth");
    assert!(
        !topology.gateway_table().status.success(),
        "the SNAT table made before the failure is removed"
    );
}

#[test]
fn after_sigterm_a_draining_gateway_forwards_until_the_drain_ends_or_a_second_signal() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut topology = Topology::new("drain");
    topology.start_outside();
    let gateway = topology.start_gateway(&["--drain-seconds", "60"]);
    wait_for("the gateway to be ready", || {
        topology.health("/readiness") == Some(200)
    });
    wait_for("the outside host to answer through the gateway", || {
        topology.client_pings_outside()
    });
    let pid = topology.processes[gateway].id().to_string();
    run("kill", &["-s", "TERM", &pid]);
    // Draining: still ready, still forwarding, the table in place.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        topology.processes[gateway].try_wait().unwrap().is_none(),
        "it must still run"
    );
    assert_eq!(topology.health("/readiness"), Some(200));
    assert!(topology.client_pings_outside(), "a draining gateway forwards");
    assert!(topology.gateway_table().status.success());
    // A second signal ends the drain: the table goes and it exits 0.
    let (status, log) = topology.terminate(gateway);
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("removed the source NAT table"), "{log}");
    assert!(!topology.gateway_table().status.success());
}
