//! Building, inspecting and removing a lab.
//!
//! ```text
//!  outside host h0 ── h0 ┐                          ┌ eth0 ── node n0 ── slc… ── pod p0
//!  (203.0.113.10)        ├─ fabric (router, br0) ───┤
//!  outside host h1 ── h1 ┘   100.64.0.1/24          └ eth0 ── node n1 ── slc… ── pod p1
//! ```
//!
//! The fabric namespace routes between outside hosts (a /31 link each from 100.64.1.0/24) and
//! the node underlay (a bridge, 100.64.0.0/24, nodes from .10). Nodes forward; their default
//! route is the fabric. Pods are wired by the real `sluice-cni` run inside the node's namespace.
//! Each node's agent routes the other nodes' blocks (and borrowed addresses) through their
//! underlay addresses, the InternalIPs of the lab's Node objects. The fabric plays the
//! perimeter router that learns the routed pools (by BGP, in a real network): the lab gives it
//! a route to each block of a pool without natOutgoing, so routed pods get replies from outside.
//! Nothing here touches the root namespace.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use sluice_api::Resource;
use sluice_store::Store;

use crate::Environment;
use crate::config::{LabFile, PortProtocol};
use crate::datastore;
use crate::dns::netns_files;
use crate::dns::zone::Zone;
use crate::gateway;
use crate::servers::ServiceProtocol;
use crate::shell::{self, ip, ip_in, sysctl_in};
use crate::state::{self, DnsState, HostState, LabPaths, LabState, NodeState, PidRecord, PodState};

const FABRIC_ADDRESS: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const UNDERLAY_INTERFACE: &str = "eth0";
pub(crate) const POD_INTERFACE: &str = "eth0";
const CNI_TIMEOUT: Duration = Duration::from_secs(20);
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The DNS server's process name (its log, pid and `.served` files).
const DNS_PROCESS: &str = "dns";

/// Node `index`'s underlay address, also its Node's InternalIP.
pub(crate) fn node_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, 10 + index as u8)
}

/// The fabric's and the host's end of host `index`'s /31 link.
fn host_link(index: usize) -> (Ipv4Addr, Ipv4Addr) {
    let base = (index * 2) as u8;
    (
        Ipv4Addr::new(100, 64, 1, base),
        Ipv4Addr::new(100, 64, 1, base + 1),
    )
}

/// What `lab up` needs on this machine; the message names each missing piece.
pub fn check_prerequisites(environment: &Environment) -> Result<(), String> {
    let mut missing = Vec::new();
    if !shell::is_root() {
        missing.push(
            "root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN; run with sudo)".to_string(),
        );
    }
    if shell::which("ip").is_none() {
        missing.push("`ip` from iproute2 (apt-get install iproute2)".to_string());
    }
    if shell::which("nft").is_none() {
        missing.push("`nft` from nftables (apt-get install nftables)".to_string());
    }
    if shell::which("sysctl").is_none() {
        missing.push("`sysctl` from procps (apt-get install procps)".to_string());
    }
    for (what, path) in [
        ("the sluice binary", &environment.sluice_binary),
        ("the sluice-cni binary", &environment.cni_binary),
    ] {
        if !path.is_file() {
            missing.push(format!("{what} at {}", path.display()));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("the lab needs:\n  - {}", missing.join("\n  - ")))
    }
}

/// `lab up`: builds the lab described by `file`.
pub fn up(
    environment: &Environment,
    file: &Path,
    name: Option<&str>,
    datastore: Option<&str>,
) -> Result<(), String> {
    let mut lab = LabFile::load(file)?;
    if let Some(name) = name {
        crate::config::check_name(name)?;
        lab.name = name.to_string();
    }
    check_prerequisites(environment)?;
    let paths = LabPaths::new(&environment.state_root, &lab.name);
    if paths.state_file().exists() {
        return Err(format!(
            "lab `{}` already exists ({}); remove it with `sluice lab down --name {}`",
            lab.name,
            paths.directory.display(),
            lab.name
        ));
    }
    if let Some(leftover) = shell::list_netns()
        .into_iter()
        .find(|netns| paths.owns_netns(netns))
    {
        return Err(format!(
            "namespace {leftover} is left from an earlier lab `{}`; run `sluice lab down --name {}` first",
            lab.name, lab.name
        ));
    }
    std::fs::create_dir_all(&paths.directory)
        .map_err(|error| format!("cannot create {}: {error}", paths.directory.display()))?;
    let embedded = datastore.is_none();
    let mut state = LabState {
        name: lab.name.clone(),
        datastore: datastore
            .map(str::to_string)
            .unwrap_or_else(|| paths.store_address()),
        embedded,
        ..LabState::default()
    };
    paths.save(&state)?;
    let outcome = build(environment, &paths, &lab, &mut state);
    // Whatever was built is on record for `lab down`, also after a failure.
    paths.save(&state)?;
    outcome.map_err(|error| {
        format!(
            "{error}\nthe half-built lab is left for inspection (logs in {}); remove it with `sluice lab down --name {}`",
            paths.directory.join("logs").display(),
            lab.name
        )
    })
}

fn build(
    environment: &Environment,
    paths: &LabPaths,
    lab: &LabFile,
    state: &mut LabState,
) -> Result<(), String> {
    let store = datastore::open_or_create(&state.datastore)
        .map_err(|error| failed(&format!("opening the datastore {}", state.datastore), error))?;
    let written = datastore::apply_lab(store.as_ref(), lab)
        .map_err(|error| failed("writing the lab's resources", error))?;
    println!(
        "datastore {}: {} resources written",
        state.datastore,
        written.len()
    );

    state.trusted_dns = Some(lab.dns_address());
    let fabric = paths.fabric_netns();
    (|| -> Result<(), String> {
        add_netns(&fabric)?;
        state.fabric = Some(fabric.clone());
        paths.save(state)?;
        ip_in(&fabric, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(
            &fabric,
            &["address", "add", &format!("{FABRIC_ADDRESS}/24"), "dev", "br0"],
        )?;
        ip_in(&fabric, &["link", "set", "br0", "up"])?;
        sysctl_in(&fabric, "net.ipv4.ip_forward=1")
    })()
    .map_err(|error| failed("the fabric", error))?;

    for (index, node) in lab.nodes.iter().enumerate() {
        (|| -> Result<(), String> {
            let netns = paths.node_netns(index);
            let address = node_address(index);
            add_netns(&netns)?;
            state.nodes.push(NodeState {
                name: node.name.clone(),
                netns: netns.clone(),
                address,
            });
            paths.save(state)?;
            let fabric_side = format!("n{index}");
            fabric_link(&fabric, &fabric_side, UNDERLAY_INTERFACE, &netns)?;
            ip_in(&fabric, &["link", "set", &fabric_side, "master", "br0", "up"])?;
            ip_in(
                &netns,
                &[
                    "address",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    UNDERLAY_INTERFACE,
                ],
            )?;
            ip_in(&netns, &["link", "set", UNDERLAY_INTERFACE, "up"])?;
            ip_in(
                &netns,
                &["route", "add", "default", "via", &FABRIC_ADDRESS.to_string()],
            )?;
            sysctl_in(&netns, "net.ipv4.ip_forward=1")?;
            // A node routes its pods' IPv6 too (the kernel forwards IPv6 only when `all` says so).
            if ipv6_available() {
                sysctl_in(&netns, "net.ipv6.conf.all.forwarding=1")?;
            }
            start_agent(environment, paths, state, index, &[])?;
            Ok(())
        })()
        .map_err(|error| failed(&format!("node `{}`", node.name), error))?;
    }
    println!("{} nodes up, each with its agent", lab.nodes.len());

    for (index, host) in lab.outside.iter().enumerate() {
        (|| -> Result<(), String> {
            let netns = paths.host_netns(index);
            add_netns(&netns)?;
            state.hosts.push(HostState {
                netns: netns.clone(),
                spec: host.clone(),
            });
            paths.save(state)?;
            wire_outside_host(&fabric, index, &netns, host.address)?;
            // A host with no service only sends: it runs no server and no probe goes to it.
            if host_serves(host) {
                let services = [
                    (ServiceProtocol::Tcp, host.tcp.clone()),
                    (ServiceProtocol::Udp, host.udp.clone()),
                    (ServiceProtocol::Http, host.http.clone()),
                    (ServiceProtocol::Https, host.https.clone()),
                ];
                start_server(
                    environment,
                    paths,
                    &netns,
                    &format!("host-{}", host.name),
                    IpAddr::V4(host.address),
                    &services,
                )?;
            }
            Ok(())
        })()
        .map_err(|error| failed(&format!("outside host `{}`", host.name), error))?;
    }
    if !lab.outside.is_empty() {
        let serving = lab.outside.iter().filter(|host| host_serves(host)).count();
        println!("{} outside hosts, {serving} of them serving", lab.outside.len());
    }
    start_dns(environment, paths, lab, state).map_err(|error| failed("the lab's DNS server", error))?;

    for (index, pod) in lab.pods.iter().enumerate() {
        (|| -> Result<(), String> {
            let netns = paths.pod_netns(index);
            let node = state
                .node(&pod.node)
                .cloned()
                .ok_or_else(|| format!("pod {}/{} names an unknown node", pod.namespace, pod.name))?;
            add_netns(&netns)?;
            let nameserver = state.dns.as_ref().map(|dns| dns.address);
            if let Some(nameserver) = nameserver {
                netns_files::write_resolv_conf(&netns, IpAddr::V4(nameserver))?;
            }
            let mut record = PodState {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                node: pod.node.clone(),
                netns: netns.clone(),
                container_id: format!("sluice-lab-{}-p{index}", lab.name),
                addresses: Vec::new(),
                ports: pod.ports.clone(),
                egress_gateway: pod.egress_gateway.clone(),
            };
            state.pods.push(record.clone());
            paths.save(state)?;
            record.addresses = cni_add(environment, state, &node, &record)?;
            *state.pods.last_mut().expect("just pushed") = record.clone();
            paths.save(state)?;
            let services = pod_services(&record);
            if services.iter().any(|(_, ports)| !ports.is_empty()) {
                start_server(
                    environment,
                    paths,
                    &netns,
                    &format!("pod-{}-{}", pod.namespace, pod.name),
                    server_address(&record.addresses),
                    &services,
                )?;
            }
            if let Some(spec) = &pod.egress_gateway {
                gateway::start(environment, paths, &record, spec)?;
            }
            Ok(())
        })()
        .map_err(|error| failed(&format!("pod {}/{}", pod.namespace, pod.name), error))?;
    }
    if !lab.pods.is_empty() {
        println!(
            "{} pods wired through {}",
            lab.pods.len(),
            environment.cni_binary.display()
        );
    }
    let gateways = lab.pods.iter().filter(|pod| pod.egress_gateway.is_some()).count();
    if gateways > 0 {
        println!("{gateways} egress gateway pods running sluice gateway");
    }

    let routes = sync_fabric_routes(state, store.clone())
        .map_err(|error| failed("routing the pools in the fabric", error))?;
    println!("{routes} routes to routed pools installed in the fabric");
    wait_for_agents(paths, state, store.as_ref()).map_err(|error| failed("waiting for the agents", error))?;
    println!("agents have programmed every pod");
    Ok(())
}

/// `what: error`, never without a reason: every failure of `lab up` names what failed.
fn failed(what: &str, error: String) -> String {
    if error.trim().is_empty() {
        format!("{what}: failed without saying why")
    } else {
        format!("{what}: {error}")
    }
}

/// Links outside host `index` (its namespace made) to the fabric: a /31, its outside address,
/// a route to it in the fabric and its default route back.
fn wire_outside_host(fabric: &str, index: usize, netns: &str, address: Ipv4Addr) -> Result<(), String> {
    let (fabric_end, host_end) = host_link(index);
    let fabric_side = format!("h{index}");
    fabric_link(fabric, &fabric_side, "eth0", netns)?;
    ip_in(
        fabric,
        &["address", "add", &format!("{fabric_end}/31"), "dev", &fabric_side],
    )?;
    ip_in(fabric, &["link", "set", &fabric_side, "up"])?;
    ip_in(
        fabric,
        &[
            "route",
            "add",
            &format!("{address}/32"),
            "via",
            &host_end.to_string(),
        ],
    )?;
    ip_in(
        netns,
        &["address", "add", &format!("{host_end}/31"), "dev", "eth0"],
    )?;
    ip_in(
        netns,
        &["address", "add", &format!("{address}/32"), "dev", "eth0"],
    )?;
    ip_in(netns, &["link", "set", "eth0", "up"])?;
    // Answers leave from the outside address, whichever socket sends them.
    ip_in(
        netns,
        &[
            "route",
            "add",
            "default",
            "via",
            &fabric_end.to_string(),
            "src",
            &address.to_string(),
        ],
    )
    .map(drop)
}

/// Starts the lab's DNS server: on the outside host with its address, else on a host of its
/// own (the next host index, so `lab down` finds its namespace like any host's).
fn start_dns(
    environment: &Environment,
    paths: &LabPaths,
    lab: &LabFile,
    state: &mut LabState,
) -> Result<(), String> {
    let address = lab.dns_address();
    let shared = lab.outside.iter().position(|host| host.address == address);
    let netns = match shared {
        Some(index) => paths.host_netns(index),
        None => {
            let index = lab.outside.len();
            let netns = paths.host_netns(index);
            add_netns(&netns)?;
            state.dns = Some(DnsState {
                address,
                netns: netns.clone(),
                host: None,
            });
            paths.save(state)?;
            let fabric = state.fabric.clone().ok_or("the fabric is not built")?;
            wire_outside_host(&fabric, index, &netns, address)?;
            netns
        }
    };
    state.dns = Some(DnsState {
        address,
        netns: netns.clone(),
        host: shared.map(|index| lab.outside[index].name.clone()),
    });
    paths.save(state)?;
    let zone = Zone::from_lab(lab);
    let zone_file = paths.directory.join("dns-zone.json");
    let text = serde_json::to_string_pretty(&zone).map_err(|error| error.to_string())?;
    std::fs::write(&zone_file, text)
        .map_err(|error| format!("cannot write {}: {error}", zone_file.display()))?;
    let mut command = shell::in_netns(&netns, &environment.sluice_binary);
    command
        .args(["lab", "dns-serve", "--address", &address.to_string(), "--zone"])
        .arg(&zone_file);
    wait_serving(command, paths, &netns, DNS_PROCESS)?;
    println!("DNS server at {address} answering {} names", zone.names.len());
    Ok(())
}

/// Where a pod's servers listen: every address of both families (a dual-stack socket) when the
/// pod has an IPv6 address, else every IPv4 address.
fn server_address(addresses: &[IpAddr]) -> IpAddr {
    if addresses.iter().any(IpAddr::is_ipv6) {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// Whether the kernel has IPv6 (it can be built or booted without it).
fn ipv6_available() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6").exists()
}

/// Whether an outside host offers any service (one without only sends).
pub(crate) fn host_serves(host: &crate::config::OutsideHostSpec) -> bool {
    !(host.tcp.is_empty() && host.udp.is_empty() && host.http.is_empty() && host.https.is_empty())
}

fn add_netns(netns: &str) -> Result<(), String> {
    ip(&["netns", "add", netns])?;
    ip_in(netns, &["link", "set", "lo", "up"]).map(drop)
}

pub fn pod_services(pod: &PodState) -> [(ServiceProtocol, Vec<u16>); 2] {
    let ports = |wanted: PortProtocol| -> Vec<u16> {
        let ports: BTreeSet<u16> = pod
            .ports
            .iter()
            .filter(|port| port.protocol == wanted)
            .map(|port| port.container_port)
            .collect();
        ports.into_iter().collect()
    };
    [
        (ServiceProtocol::Tcp, ports(PortProtocol::Tcp)),
        (ServiceProtocol::Udp, ports(PortProtocol::Udp)),
    ]
}

fn agent_marker(node: &str, datastore: &str) -> String {
    format!("agent --node {node} --datastore {datastore}")
}

/// Starts node `index`'s agent; `variables` are added to its environment (tests use them, e.g.
/// to put a wrapper `nft` first on its PATH). Returns its process id.
fn start_agent(
    environment: &Environment,
    paths: &LabPaths,
    state: &LabState,
    index: usize,
    variables: &[(&str, &str)],
) -> Result<u32, String> {
    let node = &state.nodes[index];
    let mut command = shell::in_netns(&node.netns, &environment.sluice_binary);
    command.args(["agent", "--node", &node.name, "--datastore", &state.datastore]);
    // The agents learn names from the lab's DNS server, each keeping its cache file in the
    // lab's state directory (so a restarted agent finds what it learned).
    if let Some(address) = state.trusted_dns {
        let cache_file = paths.directory.join(format!("dns-cache-{}.json", node.name));
        command.arg("--dns-trusted-server").arg(format!("{address}:53"));
        command.arg("--dns-cache-file").arg(cache_file);
    }
    // Flow logs: a socket and a file per node in the lab's state directory, written every
    // second so a probe shows up at once.
    command
        .arg("--flows-socket")
        .arg(crate::flows::socket_path(paths, &node.name))
        .arg("--flow-log-file")
        .arg(crate::flows::file_path(paths, &node.name))
        .args([
            "--flow-log-interval",
            &crate::flows::LAB_INTERVAL_SECONDS.to_string(),
        ]);
    command.envs(variables.iter().copied());
    let process = format!("agent-{}", node.name);
    shell::spawn_background(
        command,
        &paths.log_file(&process),
        &paths.pid_file(&process),
        &agent_marker(&node.name, &state.datastore),
        None,
    )
    .map(|child| child.id())
}

/// The process id of a node's agent, if it runs.
pub fn agent_pid(environment: &Environment, name: &str, node: &str) -> Option<u32> {
    let paths = LabPaths::new(&environment.state_root, name);
    state::live_pid(&paths.pid_file(&format!("agent-{node}")))
}

/// Starts a node's agent again with the command line `lab up` gave it, after stopping it if it
/// still runs. Its log is appended to.
pub fn restart_agent(
    environment: &Environment,
    name: &str,
    node: &str,
    variables: &[(&str, &str)],
) -> Result<u32, String> {
    let paths = LabPaths::new(&environment.state_root, name);
    let state = paths.load()?;
    let index = state
        .nodes
        .iter()
        .position(|candidate| candidate.name == node)
        .ok_or_else(|| format!("lab `{name}` has no node `{node}`"))?;
    if let Some(pid) = agent_pid(environment, name, node) {
        state::stop_process(pid, &agent_marker(node, &state.datastore));
    }
    start_agent(environment, &paths, &state, index, variables)
}

fn start_server(
    environment: &Environment,
    paths: &LabPaths,
    netns: &str,
    process: &str,
    address: IpAddr,
    services: &[(ServiceProtocol, Vec<u16>)],
) -> Result<(), String> {
    let mut command = shell::in_netns(netns, &environment.sluice_binary);
    command.args(["lab", "serve", "--address", &address.to_string()]);
    for (protocol, ports) in services {
        for port in ports {
            command
                .arg(format!("--{}", protocol.name()))
                .arg(port.to_string());
        }
    }
    wait_serving(command, paths, netns, process)
}

/// Starts a server with `--log <its .served file>` added and waits until it says it serves.
fn wait_serving(
    mut command: std::process::Command,
    paths: &LabPaths,
    netns: &str,
    process: &str,
) -> Result<(), String> {
    let log = paths.log_file(process);
    let served = log.with_extension("served");
    command.arg("--log").arg(&served);
    // The served-connections log path is unique to this lab and process.
    let marker = served.display().to_string();
    let mut child = shell::spawn_background(command, &log, &paths.pid_file(process), &marker, None)?;
    // The server binds before it logs `serving`; a bind error ends it.
    let mut exit = None;
    let serving = shell::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        exit = child.try_wait().ok().flatten();
        exit.is_some() || std::fs::read_to_string(&served).is_ok_and(|text| text.contains("serving"))
    });
    if serving && exit.is_none() {
        return Ok(());
    }
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let why = match (exit, output.trim()) {
        (Some(status), "") => format!("it exited ({status}) and printed nothing"),
        (Some(status), output) => format!("it exited ({status}): {output}"),
        (None, "") => "it did not report serving within 5 s and printed nothing".to_string(),
        (None, output) => format!("it did not report serving within 5 s: {output}"),
    };
    Err(format!("the server {process} in {netns} did not start: {why}"))
}

fn cni_environment(command: &str, environment: &Environment, pod: &PodState) -> Vec<(String, String)> {
    let directory = environment.cni_binary.parent().unwrap_or(Path::new("/"));
    vec![
        ("CNI_COMMAND".into(), command.into()),
        ("CNI_CONTAINERID".into(), pod.container_id.clone()),
        ("CNI_NETNS".into(), format!("/run/netns/{}", pod.netns)),
        ("CNI_IFNAME".into(), POD_INTERFACE.into()),
        (
            "CNI_ARGS".into(),
            format!("K8S_POD_NAMESPACE={};K8S_POD_NAME={}", pod.namespace, pod.name),
        ),
        ("CNI_PATH".into(), directory.display().to_string()),
    ]
}

fn cni_config(state: &LabState, node: &str) -> Vec<u8> {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "sluice",
        "type": "sluice-cni",
        "datastore": state.datastore,
        "nodename": node,
    })
    .to_string()
    .into_bytes()
}

/// CNI ADD run inside the node's namespace, as a container runtime would; returns the pod's
/// addresses from the result.
fn cni_add(
    environment: &Environment,
    state: &LabState,
    node: &NodeState,
    pod: &PodState,
) -> Result<Vec<IpAddr>, String> {
    let mut command = shell::in_netns(&node.netns, &environment.cni_binary);
    command.envs(cni_environment("ADD", environment, pod));
    let output = shell::run_bounded(command, &cni_config(state, &node.name), CNI_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "CNI ADD for pod {} failed: {} {}",
            pod.shown(),
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let result: serde_json::Value = serde_json::from_str(&stdout)
        .map_err(|error| format!("CNI ADD for pod {} printed {stdout:?}: {error}", pod.shown()))?;
    let addresses: Vec<IpAddr> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["address"].as_str()?.parse::<IpNet>().ok())
        .map(|network| network.addr())
        .collect();
    if addresses.is_empty() {
        return Err(format!(
            "CNI ADD for pod {} gave no address: {stdout}",
            pod.shown()
        ));
    }
    Ok(addresses)
}

fn cni_delete(environment: &Environment, state: &LabState, pod: &PodState) {
    let Some(node) = state.node(&pod.node) else { return };
    let mut command = shell::in_netns(&node.netns, &environment.cni_binary);
    command.envs(cni_environment("DEL", environment, pod));
    if let Err(error) = shell::run_bounded(command, &cni_config(state, &node.name), CNI_TIMEOUT) {
        eprintln!("warning: CNI DEL for pod {}: {error}", pod.shown());
    }
}

/// Wires a pod again through the CNI plugin: DEL, then ADD, in its namespace (tests use it on
/// a node without an agent, to see what CNI ADD alone leaves). Returns the pod's addresses.
pub fn rewire_pod(environment: &Environment, name: &str, pod: &str) -> Result<Vec<IpAddr>, String> {
    let paths = LabPaths::new(&environment.state_root, name);
    let mut state = paths.load()?;
    let index = state
        .pods
        .iter()
        .position(|candidate| candidate.shown() == pod)
        .ok_or_else(|| format!("the lab has no pod {pod}"))?;
    let record = state.pods[index].clone();
    let node = state
        .node(&record.node)
        .cloned()
        .ok_or_else(|| format!("pod {pod} names an unknown node"))?;
    cni_delete(environment, &state, &record);
    let addresses = cni_add(environment, &state, &node, &record)?;
    state.pods[index].addresses = addresses.clone();
    paths.save(&state)?;
    Ok(addresses)
}

/// A pod's state by `namespace/name`.
fn find_pod(state: &LabState, pod: &str) -> Result<PodState, String> {
    state
        .pods
        .iter()
        .find(|candidate| candidate.shown() == pod)
        .cloned()
        .ok_or_else(|| format!("lab `{}` has no pod {pod}", state.name))
}

/// The process id of a gateway pod's `sluice gateway`, if it runs.
pub fn gateway_pid(environment: &Environment, name: &str, pod: &str) -> Result<Option<u32>, String> {
    let paths = LabPaths::new(&environment.state_root, name);
    let record = find_pod(&paths.load()?, pod)?;
    if record.egress_gateway.is_none() {
        return Err(format!("pod {pod} is not an egress gateway"));
    }
    Ok(gateway::pid(&paths, &record))
}

/// Takes a pod's interface down inside its namespace, as a failed link would: the kernel drops
/// the pod's routes through it and the node's end loses its carrier. Bringing it back needs the
/// pod wired again ([`rewire_pod`]).
pub fn pod_link_down(environment: &Environment, name: &str, pod: &str) -> Result<(), String> {
    let paths = LabPaths::new(&environment.state_root, name);
    let record = find_pod(&paths.load()?, pod)?;
    ip_in(&record.netns, &["link", "set", POD_INTERFACE, "down"]).map(drop)
}

/// Routes the blocks (and borrowed addresses) of pools without natOutgoing from the fabric to
/// their nodes, from IPAM's blocks and the WorkloadEndpoints: the perimeter router's part,
/// which the agents do not play. Idempotent (`ip route replace`). Returns how many routes it set.
pub fn sync_fabric_routes(state: &LabState, store: Arc<dyn Store>) -> Result<usize, String> {
    let Some(fabric) = &state.fabric else {
        return Ok(0);
    };
    let placement = datastore::placement(store.clone())?;
    let (resources, _) = datastore::read_resources(store.as_ref())?;
    let pools: Vec<(IpNet, bool)> = resources
        .iter()
        .filter_map(|resource| match resource {
            Resource::IpPool(pool) => Some((pool.spec.cidr.0, pool.spec.nat_outgoing)),
            _ => None,
        })
        .collect();
    // (destination, owning node)
    let mut destinations: Vec<(IpNet, &NodeState)> = Vec::new();
    for (block, owner, nat) in &placement.blocks {
        if let Some(owner) = state.node(owner)
            && !nat
        {
            destinations.push((*block, owner));
        }
    }
    for resource in &resources {
        let Resource::WorkloadEndpoint(endpoint) = resource else {
            continue;
        };
        let Some(owner) = state.node(&endpoint.spec.node) else {
            continue;
        };
        for network in &endpoint.spec.ip_networks {
            let address = network.0.addr();
            let covered = placement
                .blocks
                .iter()
                .any(|(block, node, _)| *node == owner.name && block.contains(&address));
            let nat = pools
                .iter()
                .find(|(cidr, _)| cidr.contains(&address))
                .is_some_and(|(_, nat)| *nat);
            if !covered && !nat {
                destinations.push((IpNet::from(address), owner));
            }
        }
    }
    let mut count = 0;
    for (destination, owner) in destinations {
        if destination.addr().is_ipv6() {
            continue;
        }
        ip_in(
            fabric,
            &[
                "route",
                "replace",
                &destination.to_string(),
                "via",
                &owner.address.to_string(),
                "dev",
                "br0",
            ],
        )?;
        count += 1;
    }
    Ok(count)
}

/// Waits until every node's agent has programmed the newest resources and all its pods.
pub fn wait_for_agents(paths: &LabPaths, state: &LabState, store: &dyn Store) -> Result<(), String> {
    let (_, newest) = datastore::read_resources(store)?;
    let ready = |node: &NodeState| {
        let expected = state.pods.iter().filter(|pod| pod.node == node.name).count();
        datastore::agent_status(store, &node.name).is_some_and(|status| {
            status.in_sync && status.programmed_revision >= newest && status.local_endpoints == expected
        })
    };
    let all_ready = shell::wait_until(AGENT_READY_TIMEOUT, Duration::from_millis(100), || {
        state.nodes.iter().all(ready)
    });
    if all_ready {
        return Ok(());
    }
    let mut problems = Vec::new();
    for node in state.nodes.iter().filter(|node| !ready(node)) {
        let status = datastore::agent_status(store, &node.name);
        let log =
            std::fs::read_to_string(paths.log_file(&format!("agent-{}", node.name))).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        problems.push(format!(
            "node {}: status {status:?}, newest resource revision {newest}; agent log ends:\n    {}",
            node.name,
            tail.join("\n    ")
        ));
    }
    Err(format!(
        "agents did not program the lab within {AGENT_READY_TIMEOUT:?}:\n  {}",
        problems.join("\n  ")
    ))
}

/// `lab down`: stops the lab's processes, deletes its namespaces and its state directory. Works
/// on a crashed or half-built lab: whatever pid files and namespaces exist are cleaned up.
pub fn down(environment: &Environment, name: &str) -> Result<(), String> {
    crate::config::check_name(name)?;
    let paths = LabPaths::new(&environment.state_root, name);
    let state = paths.load().ok();
    if let Some(state) = &state
        && !state.embedded
    {
        // An outside datastore outlives the lab: give the addresses back and drop our pods.
        for pod in state.pods.iter().filter(|pod| !pod.addresses.is_empty()) {
            cni_delete(environment, state, pod);
        }
        if let Ok(store) = datastore::open(&state.datastore) {
            let pods: Vec<(String, String)> = state
                .pods
                .iter()
                .map(|pod| (pod.namespace.clone(), pod.name.clone()))
                .collect();
            if let Err(error) = datastore::delete_pods(store.as_ref(), &pods) {
                eprintln!(
                    "warning: cannot delete the lab's pods from {}: {error}",
                    state.datastore
                );
            }
        }
    }
    let mut stopped = 0;
    if let Ok(entries) = std::fs::read_dir(paths.directory.join("pids")) {
        for entry in entries.flatten() {
            if let Some(record) = PidRecord::read(&entry.path())
                && !record.marker.is_empty()
                && record.is_running()
            {
                record.stop();
                stopped += 1;
            }
        }
    }
    let namespaces: Vec<String> = shell::list_netns()
        .into_iter()
        .filter(|netns| paths.owns_netns(netns))
        .collect();
    for netns in &namespaces {
        // Anything still running inside the lab's namespaces was started by the lab.
        let pids = shell::run("ip", &["netns", "pids", netns]).unwrap_or_default();
        for pid in pids.lines().filter_map(|line| line.trim().parse::<u32>().ok()) {
            state::stop_process(pid, "");
            stopped += 1;
        }
    }
    let mut failures = Vec::new();
    for netns in &namespaces {
        let deleted = shell::wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
            shell::quiet("ip", &["netns", "del", netns]) || !shell::list_netns().contains(netns)
        });
        if !deleted {
            failures.push(format!("namespace {netns}"));
        }
    }
    if let Err(error) = netns_files::remove_all(&paths) {
        failures.push(error);
    }
    if paths.directory.exists() {
        std::fs::remove_dir_all(&paths.directory)
            .map_err(|error| format!("cannot remove {}: {error}", paths.directory.display()))?;
    }
    if !failures.is_empty() {
        return Err(format!("could not delete {}", failures.join(", ")));
    }
    println!(
        "lab {name} removed: {stopped} processes stopped, {} namespaces deleted",
        namespaces.len()
    );
    Ok(())
}

/// `lab status`.
pub fn status(environment: &Environment, name: &str) -> Result<bool, String> {
    let paths = LabPaths::new(&environment.state_root, name);
    let state = paths.load()?;
    let store = datastore::open(&state.datastore).ok();
    let mut healthy = true;
    println!("lab {} (datastore {})", state.name, state.datastore);
    println!();
    println!(
        "{:<16} {:<18} {:<14} {:<8} PROGRAMMED",
        "NODE", "NAMESPACE", "ADDRESS", "AGENT"
    );
    for node in &state.nodes {
        let alive = state::live_pid(&paths.pid_file(&format!("agent-{}", node.name))).is_some();
        healthy &= alive;
        let programmed = match store
            .as_deref()
            .and_then(|store| datastore::agent_status(store, &node.name))
        {
            Some(status) if status.in_sync => {
                let mut line = format!(
                    "revision {}, {} pods, {} rules, {} routes",
                    status.programmed_revision, status.local_endpoints, status.rules, status.routes
                );
                if let Some(error) = status.route_error {
                    line.push_str(&format!(" (routes: {error})"));
                }
                line
            }
            Some(status) => format!("out of sync: {}", status.error.unwrap_or_default()),
            None => "no status yet".to_string(),
        };
        println!(
            "{:<16} {:<18} {:<14} {:<8} {programmed}",
            node.name,
            node.netns,
            node.address.to_string(),
            if alive { "running" } else { "DOWN" }
        );
    }
    println!();
    println!("{:<28} {:<16} {:<18} ADDRESSES", "POD", "NODE", "NAMESPACE");
    for pod in &state.pods {
        let addresses: Vec<String> = pod.addresses.iter().map(IpAddr::to_string).collect();
        println!(
            "{:<28} {:<16} {:<18} {}",
            pod.shown(),
            pod.node,
            pod.netns,
            if addresses.is_empty() {
                "none".to_string()
            } else {
                addresses.join(", ")
            }
        );
    }
    let gateways: Vec<&PodState> = state
        .pods
        .iter()
        .filter(|pod| pod.egress_gateway.is_some())
        .collect();
    if !gateways.is_empty() {
        println!();
        println!("{:<28} {:<10} HEALTH", "EGRESS GATEWAY", "PROCESS");
        for pod in gateways {
            let alive = gateway::pid(&paths, pod).is_some();
            healthy &= alive;
            let health = pod
                .addresses
                .iter()
                .find(|address| address.is_ipv4())
                .map(|address| {
                    format!(
                        "http://{address}:{}/readiness",
                        crate::config::GATEWAY_HEALTH_PORT
                    )
                })
                .unwrap_or_else(|| "no IPv4 address".to_string());
            println!(
                "{:<28} {:<10} {health}",
                pod.shown(),
                if alive { "running" } else { "DOWN" }
            );
        }
    }
    if !state.hosts.is_empty() {
        println!();
        println!(
            "{:<16} {:<18} {:<16} {:<8} SERVICES",
            "OUTSIDE HOST", "NAMESPACE", "ADDRESS", "SERVER"
        );
        for host in &state.hosts {
            let serves = host_serves(&host.spec);
            let alive = state::live_pid(&paths.pid_file(&format!("host-{}", host.spec.name))).is_some();
            healthy &= alive || !serves;
            let services: Vec<String> = [
                ("tcp", &host.spec.tcp),
                ("udp", &host.spec.udp),
                ("http", &host.spec.http),
                ("https", &host.spec.https),
            ]
            .iter()
            .flat_map(|(protocol, ports)| ports.iter().map(move |port| format!("{protocol}/{port}")))
            .collect();
            println!(
                "{:<16} {:<18} {:<16} {:<8} {}",
                host.spec.name,
                host.netns,
                host.spec.address.to_string(),
                match (serves, alive) {
                    (false, _) => "none",
                    (true, true) => "running",
                    (true, false) => "DOWN",
                },
                if serves {
                    services.join(" ")
                } else {
                    "none (only sends)".to_string()
                }
            );
        }
    }
    if let Some(dns) = &state.dns {
        let alive = state::live_pid(&paths.pid_file(DNS_PROCESS)).is_some();
        healthy &= alive;
        println!();
        println!(
            "DNS server {} in {} ({}): {}; pods resolve through it",
            dns.address,
            dns.netns,
            match &dns.host {
                Some(host) => format!("on outside host {host}"),
                None => "a host of its own".to_string(),
            },
            if alive { "running" } else { "DOWN" }
        );
    }
    let missing: Vec<&str> = state
        .nodes
        .iter()
        .map(|node| node.netns.as_str())
        .chain(state.pods.iter().map(|pod| pod.netns.as_str()))
        .chain(state.hosts.iter().map(|host| host.netns.as_str()))
        .chain(state.dns.iter().map(|dns| dns.netns.as_str()))
        .filter(|netns| !shell::list_netns().iter().any(|present| present == netns))
        .collect();
    if !missing.is_empty() {
        healthy = false;
        println!();
        println!("missing namespaces: {}", missing.join(", "));
    }
    Ok(healthy)
}

/// A veth created inside the fabric with its peer placed straight into `netns` as `peer_name`:
/// no interface ever exists in the root namespace.
fn fabric_link(fabric: &str, fabric_side: &str, peer_name: &str, netns: &str) -> Result<(), String> {
    ip_in(
        fabric,
        &[
            "link",
            "add",
            fabric_side,
            "type",
            "veth",
            "peer",
            "name",
            peer_name,
            "netns",
            netns,
        ],
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_always_names_what_failed_and_why() {
        assert_eq!(
            failed("outside host `client`", "  \n".into()),
            "outside host `client`: failed without saying why"
        );
        assert_eq!(
            failed("the fabric", "`ip` failed: x".into()),
            "the fabric: `ip` failed: x"
        );
    }
}
