//! The redirect of connections that reach an L7 rule (root; private network namespaces): only
//! they are sent to a transparent listener on the node's loopback, which learns the original
//! destination and can connect onward from the pod's own address (the replies reach it through
//! the connection mark); a connection an earlier rule decides stays in the kernel; with no
//! listener the redirected connection is dropped (fail closed), never forwarded. The
//! listener here is the test's own (a few lines of socket2), so the kernel's part is checked
//! apart from the agent's proxy.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_dataplane::l7_redirect::{MARK_PROXY_UPSTREAM, PROXY_ROUTE_TABLE};
use sluice_dataplane::proxy_routes::ProxyRoutes;
use sluice_dataplane::{DnsRender, L7Redirect, LocalEndpoint, Syncer, render_with_l7};
use sluice_nft::CommandBackend;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use support::{OUTSIDE, POD, Topology, in_namespace};

mod support;

const INTERFACE: &str = "slcl7redirect";
const PROXY_PORT: u16 = 15_901;

fn manifests(interface: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: client-egress}}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - {{action: Allow, protocol: TCP, destination: {{ports: [22]}}}}
    - action: Allow
      protocol: TCP
      destination: {{ports: [80]}}
      http: {{methods: [GET]}}
{}
{}"#,
        support::workload_endpoint("shop", "client", "client", POD, interface),
        support::workload_endpoint("shop", "other", "other", "10.61.0.9", "slcl7other"),
    )
}

fn local(interface: &str) -> Vec<LocalEndpoint> {
    [("client", interface), ("other", "slcl7other")]
        .into_iter()
        .map(|(name, interface)| LocalEndpoint {
            namespace: "shop".into(),
            name: name.into(),
            interface: interface.into(),
            egress_gateway: false,
        })
        .collect()
}

fn ruleset(interface: &str, redirect: Option<&L7Redirect>) -> sluice_dataplane::Ruleset {
    let ir = sluice_policy::compile(&sluice_api::load_str("l7.yaml", &manifests(interface)).unwrap());
    render_with_l7(&ir, &local(interface), &DnsRender::default(), None, redirect)
}

#[test]
fn only_endpoints_with_l7_rules_are_redirected_and_only_from_prerouting() {
    let redirect = L7Redirect { port: PROXY_PORT };
    let with = ruleset(INTERFACE, Some(&redirect));
    assert!(with.redirects_to_proxy());
    let map = &with.sets["l7-from-endpoint"].elements;
    assert_eq!(map.len(), 1, "{map:?}");
    assert!(map.iter().any(|(key, _)| key.contains(INTERFACE)));
    let tier = with
        .chains
        .iter()
        .find(|(name, _)| name.starts_with("l7-tier-"))
        .map(|(_, chain)| {
            chain
                .rules
                .iter()
                .map(|(rule, _)| rule.clone())
                .collect::<Vec<_>>()
        })
        .expect("a tier chain for the prerouting copy");
    // The port-22 rule decides in the kernel; the L7 rule goes to the proxy; the tier's end
    // leaves the decision (a drop) to the forward hook.
    assert!(
        tier[0].contains("th dport 22") && tier[0].ends_with("return"),
        "{tier:?}"
    );
    assert!(
        tier[1].contains("th dport 80") && tier[1].ends_with("goto l7-redirect"),
        "{tier:?}"
    );
    let redirect_rules: Vec<&str> = with.chains["l7-redirect"]
        .rules
        .iter()
        .map(|(rule, _)| rule.as_str())
        .collect();
    assert!(
        redirect_rules[0].contains("tproxy ip to 127.0.0.1:15901"),
        "{redirect_rules:?}"
    );
    assert_eq!(redirect_rules.last(), Some(&"counter drop"));
    // The forward hook's own chains still never match the L7 rule.
    assert!(
        !with
            .chains
            .iter()
            .filter(|(name, _)| name.starts_with("tier-"))
            .any(|(_, chain)| chain.rules.iter().any(|(rule, _)| rule.contains("dport 80"))),
    );
    // Without the redirect, nothing of it is rendered: L7 rules just never match.
    let without = ruleset(INTERFACE, None);
    assert!(!without.redirects_to_proxy());
    assert!(without.chains.keys().all(|name| !name.starts_with("l7-")));
}

#[test]
fn with_flow_logs_the_l7_rule_logs_its_allow_before_the_redirect_and_upstream_connections_are_marked() {
    let ir = sluice_policy::compile(&sluice_api::load_str("l7.yaml", &manifests(INTERFACE)).unwrap());
    let flow_logs = sluice_dataplane::FlowLogs::default();
    let ruleset = render_with_l7(
        &ir,
        &local(INTERFACE),
        &DnsRender::default(),
        Some(flow_logs),
        Some(&L7Redirect { port: PROXY_PORT }),
    );
    let hit = sluice_policy::PolicyHit::rule(
        &ir.policies[0].reference,
        sluice_api::values::PolicyType::Egress,
        1,
        sluice_api::values::Action::Allow,
    );
    let logged = format!(
        "log group {} prefix \"{}\" goto l7-redirect",
        flow_logs.group,
        hit.id()
    );
    assert!(
        ruleset
            .chains
            .iter()
            .filter(|(name, _)| name.starts_with("l7-tier-"))
            .any(|(_, chain)| chain.rules.iter().any(|(rule, _)| rule.ends_with(&logged))),
        "no L7 rule ends with `{logged}`"
    );
    let output = &ruleset.chains["l7-output"].rules[0].0;
    assert!(
        output.ends_with(&format!(
            "ct mark set ct mark | {:#010x}",
            0x0004_0000 | MARK_PROXY_UPSTREAM
        )),
        "{output}"
    );
}

/// The outside host's server: answers `outside <peer>` and counts connections.
fn serve_outside(topology: &Topology, port: u16, accepted: Arc<AtomicUsize>) {
    // `[::]` takes IPv4 connections too, their peers as mapped addresses.
    let listener = in_namespace(&topology.outside, || {
        TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).unwrap()
    });
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            accepted.fetch_add(1, Ordering::SeqCst);
            let peer = stream.peer_addr().unwrap();
            let _ = stream.write_all(format!("outside {}", peer.ip().to_canonical()).as_bytes());
        }
    });
}

/// A transparent listener on the node's loopback, as the agent's proxy has: for each
/// connection it connects to the original destination from the client's own address (marked
/// as the proxy's upstream) and answers `proxied <original destination> <what upstream said>`.
fn transparent_listener(topology: &Topology, loopback: IpAddr) -> Socket {
    in_namespace(&topology.node, || {
        let socket = Socket::new(
            Domain::for_address(SocketAddr::new(loopback, 0)),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .unwrap();
        socket.set_reuse_address(true).unwrap();
        if loopback.is_ipv4() {
            socket.set_ip_transparent_v4(true).unwrap();
        } else {
            socket.set_only_v6(true).unwrap();
            socket.set_ip_transparent_v6(true).unwrap();
        }
        socket
            .bind(&SockAddr::from(SocketAddr::new(loopback, PROXY_PORT)))
            .unwrap();
        socket.listen(16).unwrap();
        socket
    })
}

/// Serves on a thread in the node's namespace, where its upstream sockets must be made.
fn serve_transparently(topology: &Topology, listener: Socket) {
    let namespace = std::fs::File::open(format!("/run/netns/{}", topology.node)).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        while let Ok((client, peer)) = listener.accept() {
            let mut client: TcpStream = client.into();
            let original = client.local_addr().unwrap();
            let peer = peer.as_socket().unwrap();
            let upstream = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP)).unwrap();
            if peer.is_ipv4() {
                upstream.set_ip_transparent_v4(true).unwrap();
            } else {
                upstream.set_ip_transparent_v6(true).unwrap();
            }
            upstream.set_mark(MARK_PROXY_UPSTREAM).unwrap();
            upstream
                .bind(&SockAddr::from(SocketAddr::new(peer.ip(), 0)))
                .unwrap();
            let answer = match upstream.connect_timeout(&SockAddr::from(original), Duration::from_secs(2)) {
                Ok(()) => {
                    let mut upstream: TcpStream = upstream.into();
                    upstream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut said = String::new();
                    let _ = upstream.read_to_string(&mut said);
                    said
                }
                Err(error) => format!("upstream failed: {error}"),
            };
            let _ = client.write_all(format!("proxied {original} {answer}").as_bytes());
        }
    });
}

/// What the pod reads from a connection to the outside host's `port`, or why it got nothing.
fn pod_reads(topology: &Topology, port: u16) -> Result<String, String> {
    pod_reads_from(topology, OUTSIDE.parse().unwrap(), port)
}

fn pod_reads_from(topology: &Topology, outside: IpAddr, port: u16) -> Result<String, String> {
    let target = SocketAddr::new(outside, port);
    in_namespace(&topology.pod, || {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_millis(1500))
            .map_err(|error| error.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut said = String::new();
        stream
            .read_to_string(&mut said)
            .map_err(|error| error.to_string())?;
        Ok(said)
    })
}

#[test]
fn a_connection_reaching_an_l7_rule_goes_to_the_transparent_listener_and_out_from_the_pods_address() {
    let interface = "slcl7kernel";
    let topology = Topology::new("sluicel7", interface);
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&topology.node).expect("nft is installed"));
    syncer
        .sync(&ruleset(interface, Some(&L7Redirect { port: PROXY_PORT })))
        .expect("the kernel takes the redirect");
    ProxyRoutes::in_namespace(&topology.node)
        .expect("netlink")
        .ensure()
        .expect("the proxy's rule and routes");
    // Twice is fine (the agent ensures them on every sync).
    ProxyRoutes::in_namespace(&topology.node)
        .unwrap()
        .ensure()
        .unwrap();
    let rules = std::process::Command::new("ip")
        .args(["-n", &topology.node, "rule", "show"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert_eq!(
        rules
            .matches(&format!("lookup {PROXY_TABLE}", PROXY_TABLE = PROXY_ROUTE_TABLE))
            .count(),
        1,
        "{rules}"
    );

    let on_80 = Arc::new(AtomicUsize::new(0));
    let on_22 = Arc::new(AtomicUsize::new(0));
    serve_outside(&topology, 80, on_80.clone());
    serve_outside(&topology, 22, on_22.clone());

    // No listener yet: the redirected connection is dropped, and nothing reaches the outside.
    let refused = pod_reads(&topology, 80);
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(on_80.load(Ordering::SeqCst), 0);

    let listener = transparent_listener(&topology, Ipv4Addr::LOCALHOST.into());
    serve_transparently(&topology, listener.try_clone().unwrap());
    let said = pod_reads(&topology, 80).expect("the listener answers");
    assert_eq!(said, format!("proxied {OUTSIDE}:80 outside {POD}"));
    assert_eq!(on_80.load(Ordering::SeqCst), 1);

    // The port-22 rule decides in the kernel: straight to the outside host.
    assert_eq!(pod_reads(&topology, 22).unwrap(), format!("outside {POD}"));
    assert_eq!(on_22.load(Ordering::SeqCst), 1);

    // The listener gone, a redirected connection is dropped again.
    listener.shutdown(std::net::Shutdown::Both).unwrap();
    drop(listener);
    std::thread::sleep(Duration::from_millis(100));
    assert!(pod_reads(&topology, 80).is_err());
    assert_eq!(on_80.load(Ordering::SeqCst), 1);
}

#[test]
fn the_redirect_comes_and_goes_incrementally_in_the_real_nft() {
    let namespace = support::Namespace::new("l7sync");
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&namespace.0).expect("nft is installed"));
    let redirect = L7Redirect { port: PROXY_PORT };
    let with = ruleset("slcl7sync", Some(&redirect));
    let without = ruleset("slcl7sync", None);
    assert!(syncer.sync(&without).expect("the plain ruleset").full);
    assert!(!syncer.sync(&with).expect("the redirect added").full);
    let listed = namespace.nft_list(&["table", "inet", "sluice"]);
    assert!(listed.contains("tproxy ip to 127.0.0.1:15901"), "{listed}");
    assert!(!syncer.sync(&without).expect("the redirect removed").full);
    let listed = namespace.nft_list(&["table", "inet", "sluice"]);
    assert!(!listed.contains("tproxy") && !listed.contains("l7-"), "{listed}");
    assert!(!syncer.sync(&with).expect("and back").full);
}

/// The pod's and the outside host's IPv6 addresses, and the node's on its uplink.
const POD_V6: &str = "fd61::5";
const OUTSIDE_V6: &str = "2001:db8:2::2";

/// Gives the topology IPv6 as the CNI plugin wires it: the pod's /128 and a default route via
/// the node's link-local gateway on the pod's veth, the node forwarding to an outside network.
fn add_ipv6(topology: &Topology, interface: &str) {
    let (pod, node, outside) = (&topology.pod, &topology.node, &topology.outside);
    support::sysctl(node, "net.ipv6.conf.all.forwarding=1");
    for (namespace, address, device) in [
        (pod, "fd61::5/128", "eth0"),
        (node, "fe80::1/64", interface),
        (node, "2001:db8:2::1/64", "uplink"),
        (outside, "2001:db8:2::2/64", "eth0"),
    ] {
        support::ip(&[
            "-n", namespace, "-6", "address", "add", address, "dev", device, "nodad",
        ]);
    }
    support::ip(&[
        "-n", pod, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
    ]);
    support::ip(&["-n", node, "-6", "route", "add", "fd61::5/128", "dev", interface]);
    support::ip(&[
        "-n",
        outside,
        "-6",
        "route",
        "add",
        "fd61::/64",
        "via",
        "2001:db8:2::1",
    ]);
}

#[test]
fn an_ipv6_connection_reaching_an_l7_rule_goes_to_the_ipv6_listener_and_out_from_the_pods_address() {
    let interface = "slcl7six";
    let topology = Topology::new("sluicel76", interface);
    add_ipv6(&topology, interface);
    let dual_stack = manifests(interface).replace(
        &format!("ipNetworks: [\"{POD}/32\"]"),
        &format!("ipNetworks: [\"{POD}/32\", \"{POD_V6}/128\"]"),
    );
    assert!(dual_stack.contains(POD_V6), "the endpoint has its IPv6 address");
    let ir = sluice_policy::compile(&sluice_api::load_str("l7.yaml", &dual_stack).unwrap());
    let ruleset = render_with_l7(
        &ir,
        &local(interface),
        &DnsRender::default(),
        None,
        Some(&L7Redirect { port: PROXY_PORT }),
    );
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&topology.node).expect("nft is installed"));
    syncer.sync(&ruleset).expect("the kernel takes the redirect");
    ProxyRoutes::in_namespace(&topology.node)
        .expect("netlink")
        .ensure()
        .expect("the proxy's rule and routes");
    let on_80 = Arc::new(AtomicUsize::new(0));
    let on_22 = Arc::new(AtomicUsize::new(0));
    serve_outside(&topology, 80, on_80.clone());
    serve_outside(&topology, 22, on_22.clone());
    let outside: IpAddr = OUTSIDE_V6.parse().unwrap();

    // The port-22 rule decides in the kernel (which also shows the IPv6 path works, once the
    // veths' link-local addresses have passed duplicate address detection, a second or two).
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    let direct = loop {
        let read = pod_reads_from(&topology, outside, 22);
        if read.is_ok() || std::time::Instant::now() > deadline {
            break read;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(direct.unwrap(), format!("outside {POD_V6}"));
    // No IPv6 listener: dropped, nothing reaches the outside.
    assert!(pod_reads_from(&topology, outside, 80).is_err());
    assert_eq!(on_80.load(Ordering::SeqCst), 0);

    let listener = transparent_listener(&topology, Ipv6Addr::LOCALHOST.into());
    serve_transparently(&topology, listener.try_clone().unwrap());
    let said = pod_reads_from(&topology, outside, 80).expect("the IPv6 listener answers");
    assert_eq!(said, format!("proxied [{OUTSIDE_V6}]:80 outside {POD_V6}"));
    assert_eq!(on_80.load(Ordering::SeqCst), 1);
    assert_eq!(on_22.load(Ordering::SeqCst), 1);
}
