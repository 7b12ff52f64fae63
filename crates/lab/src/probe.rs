//! `lab probe`: real connections from every pod to every other pod and every outside host (by
//! address, and by each of its DNS names through the lab's DNS server), and, with
//! `--against-explain`, the verdict `sluice explain` gives for each on the same store.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use sluice_policy::{Dataplane, Flow, FlowL7, HttpRequest, family_pairs};

use crate::Environment;
use crate::cluster;
use crate::datastore;
use crate::egress::{EgressExpectation, expectation};
use crate::servers::{ConnectOutcome, ConnectResult, LookupResult, Request, ServiceProtocol};
use crate::shell;
use crate::state::{LabPaths, LabState};

/// How long one probe waits to connect and again for the answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Probes in flight at once; each is a short-lived process waiting on a socket.
const PARALLEL_PROBES: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    pub against_explain: bool,
    /// Only these services; empty means every service each destination offers.
    pub services: Vec<(ServiceProtocol, u16)>,
    /// What HTTP probes ask (method and path) and the server name HTTPS probes by address send
    /// (by name, they send the name); explain judges each probe with the same request.
    pub request: Request,
}

/// One probe's flow, outcome and what explain says of it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRow {
    pub from: String,
    pub from_address: IpAddr,
    pub to: String,
    /// For a probe by name: the name resolved in the pod (one of the host's `names` or `cname`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The destination's address; for a probe by name, the one the lab file gives the host,
    /// which the lookup must return.
    pub to_address: IpAddr,
    pub protocol: ServiceProtocol,
    pub port: u16,
    pub outcome: ConnectOutcome,
    /// What the destination should see as the source: the pod, or its node when the pod's pool
    /// masquerades traffic to outside every pool.
    pub expected_source: IpAddr,
    /// When the source pod's traffic to the destination is routed through egress gateways:
    /// the gateways and their addresses (the only sources the peer may see), or that it has
    /// none (`unreachable`, `drop`: the probe must not connect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressExpectation>,
    /// For a probe by name, whether explain lets the pod's DNS query (UDP 53 to the lab's DNS
    /// server) out; `explainAllows` is then that and the connection's verdict together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain_lookup_allows: Option<bool>,
    /// The two peers share no IP family (an IPv4-only and an IPv6-only pod): the probe is sent
    /// to the destination's address anyway, and can only find no route; explain has no
    /// verdict to give (`explain_allows` stays empty).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_common_family: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain_allows: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<String>,
}

impl ProbeRow {
    pub fn allowed(&self) -> bool {
        self.outcome.result == ConnectResult::Connected
    }

    /// The connection's flow, the one explain judges. For a probe by name it goes to the
    /// address the name resolves to; `domain` holds the name for a flow that can carry one.
    pub fn flow(&self) -> Flow {
        Flow {
            source: self.from_address,
            destination: self.to_address,
            protocol: self.protocol.ip_protocol(),
            source_port: None,
            destination_port: Some(self.port),
            icmp_type: None,
            icmp_code: None,
        }
    }

    /// What the probe carries above TCP, as the evaluator's L7 view: the HTTP request the
    /// probe sends (its `Host` is the name probed by, else the request's name, else the address
    /// connected to), or the TLS server name (the same names, or none).
    pub fn l7_view(&self, request: &Request) -> Option<FlowL7> {
        match self.protocol {
            ServiceProtocol::Http => Some(FlowL7 {
                http: Some(HttpRequest {
                    method: request.method.clone(),
                    path: request.path.clone(),
                    host: Some(
                        self.domain
                            .clone()
                            .or_else(|| request.server_name.clone())
                            .unwrap_or_else(|| match self.to_address {
                                IpAddr::V6(address) => format!("[{address}]"),
                                IpAddr::V4(address) => address.to_string(),
                            }),
                    ),
                }),
                server_name: None,
            }),
            ServiceProtocol::Https => Some(FlowL7 {
                http: None,
                server_name: self.domain.clone().or_else(|| request.server_name.clone()),
            }),
            ServiceProtocol::Tcp | ServiceProtocol::Udp => None,
        }
    }

    /// For a probe by name, the DNS query it makes first: UDP to port 53 of the lab's server.
    pub fn lookup_flow(&self, dns_server: IpAddr) -> Option<Flow> {
        self.domain.as_ref()?;
        Some(Flow {
            source: self.from_address,
            destination: dns_server,
            protocol: ServiceProtocol::Udp.ip_protocol(),
            source_port: None,
            destination_port: Some(53),
            icmp_type: None,
            icmp_code: None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub rows: Vec<ProbeRow>,
    /// The compiled policy of the store the probes ran against (for explanations).
    pub dataplane: Dataplane,
}

impl ProbeReport {
    pub fn disagreements(&self) -> usize {
        self.rows.iter().filter(|row| row.disagreement.is_some()).count()
    }
}

/// Parses `tcp/443`, `udp/53`, `http/80`.
pub fn parse_service(text: &str) -> Result<(ServiceProtocol, u16), String> {
    let (protocol, port) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}`: expected PROTOCOL/PORT such as tcp/443, udp/53 or http/80"))?;
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => ServiceProtocol::Tcp,
        "udp" => ServiceProtocol::Udp,
        "http" => ServiceProtocol::Http,
        "https" => ServiceProtocol::Https,
        other => {
            return Err(format!(
                "`{text}`: protocol `{other}` is not tcp, udp, http or https"
            ));
        }
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| format!("`{text}`: `{port}` is not a port from 1 to 65535"))?;
    Ok((protocol, port))
}

struct Planned<'a> {
    /// The pod (`namespace/name`) or node (`node <name>`) the probe comes from.
    from: String,
    netns: &'a str,
    /// The node the source runs on (a node is its own).
    source_node: &'a str,
    source_address: IpAddr,
    to: String,
    /// Connect by this name (resolved in the source's namespace) rather than by `to_address`.
    domain: Option<String>,
    to_address: IpAddr,
    protocol: ServiceProtocol,
    port: u16,
    no_common_family: bool,
}

/// The address pairs a probe from `sources` to `destinations` uses: one per IP family both
/// have, as explain and connectivity pair them; with none in common, one pair of their first
/// addresses, marked, to show that no packet gets through.
fn probe_pairs(sources: &[IpAddr], destinations: &[IpAddr]) -> Vec<(IpAddr, IpAddr, bool)> {
    let pairs = family_pairs(sources, destinations);
    if pairs.is_empty() {
        return match (sources.first(), destinations.first()) {
            (Some(source), Some(destination)) => vec![(*source, *destination, true)],
            _ => Vec::new(),
        };
    }
    pairs
        .into_iter()
        .map(|pair| (pair.source, pair.destination, false))
        .collect()
}

/// Runs the probe matrix of a lab.
pub fn probe(environment: &Environment, name: &str, options: &ProbeOptions) -> Result<ProbeReport, String> {
    let paths = LabPaths::new(&environment.state_root, name);
    let state = paths.load()?;
    let store = datastore::open(&state.datastore)?;
    // Pods or pools may have changed since `up`; routes and programming catch up first.
    cluster::sync_fabric_routes(&state, store.clone())?;
    cluster::wait_for_agents(&paths, &state, store.as_ref())?;
    // A gateway takes clients once its node's agent has probed it ready; one still down after
    // this is probed as it is (its clients unreachable, which the probe then checks).
    crate::egress::wait_for_ready_gateways(store.as_ref(), Duration::from_secs(5));
    let resources = datastore::read_set(store.as_ref())?;
    let dataplane = sluice_policy::compile(&resources);

    let planned = plan(&state, options);
    let dns_server = state.dns.as_ref().map(|dns| IpAddr::V4(dns.address));
    // What the pods learned before this run, for probes by address (read before any probe by
    // name teaches more): the kernel allows a pod an address it resolved for an allowed name.
    let learned = learned_names(store.as_ref());
    let egress_records = crate::egress::read_records(store.as_ref());
    let in_cluster: Vec<ipnet::IpNet> = dataplane
        .pools
        .iter()
        .map(|pool| pool.cidr)
        .chain(
            state
                .nodes
                .iter()
                .map(|node| ipnet::IpNet::from(IpAddr::V4(node.address))),
        )
        .collect();
    let outcomes: Mutex<Vec<Option<ConnectOutcome>>> = Mutex::new(vec![None; planned.len()]);
    // Probes by address first, then by name: a probe by name teaches its pod the address,
    // which would let a concurrent probe by address through.
    let (by_address, by_name): (Vec<usize>, Vec<usize>) =
        (0..planned.len()).partition(|index| planned[*index].domain.is_none());
    for phase in [by_address, by_name] {
        run_probes(environment, &planned, &phase, &outcomes, &options.request);
    }
    let outcomes = outcomes.into_inner().expect("probe outcomes");
    let rows = planned
        .iter()
        .zip(outcomes)
        .map(|(probe, outcome)| {
            let outcome = outcome.unwrap_or_else(|| ConnectOutcome {
                result: ConnectResult::Error,
                seen: None,
                detail: Some("not run".into()),
                lookup: None,
            });
            let node_address = state.node(probe.source_node).map(|node| IpAddr::V4(node.address));
            let egress = expectation(&egress_records, &probe.from, probe.to_address, &in_cluster);
            let expected_source = match egress.as_ref().and_then(|egress| egress.sources.first()) {
                Some(gateway) => *gateway,
                None => expected_source(&dataplane, probe.source_address, probe.to_address, node_address),
            };
            let mut row = ProbeRow {
                from: probe.from.clone(),
                from_address: probe.source_address,
                to: probe.to.clone(),
                domain: probe.domain.clone(),
                to_address: probe.to_address,
                protocol: probe.protocol,
                port: probe.port,
                outcome,
                expected_source,
                egress,
                explain_lookup_allows: None,
                no_common_family: probe.no_common_family,
                explain_allows: None,
                disagreement: None,
            };
            if options.against_explain && row.no_common_family {
                row.disagreement = unroutable_disagreement(&row);
            } else if options.against_explain {
                let view = row.l7_view(&options.request);
                let allows = dataplane
                    .evaluate_with_l7(&row.flow(), row.domain.as_deref(), view.as_ref())
                    .allowed
                    || (row.domain.is_none()
                        && learned
                            .get(&(row.from.clone(), row.to_address))
                            .into_iter()
                            .flatten()
                            .any(|name| {
                                dataplane
                                    .evaluate_with_l7(&row.flow(), Some(name), view.as_ref())
                                    .allowed
                            }));
                match dns_server.and_then(|server| row.lookup_flow(server)) {
                    Some(lookup_flow) => {
                        // A lookup leaves through the client's gateways too: with none to
                        // take, it cannot be answered whatever policy says.
                        let lookup_routed = dns_server
                            .and_then(|server| expectation(&egress_records, &row.from, server, &in_cluster))
                            .is_none_or(|egress| egress.routed());
                        let lookup_allows = dataplane.evaluate(&lookup_flow).allowed && lookup_routed;
                        row.explain_lookup_allows = Some(lookup_allows);
                        row.explain_allows = Some(lookup_allows && allows);
                        row.disagreement = if !lookup_routed {
                            unroutable_lookup_disagreement(&row)
                        } else {
                            named_disagreement(&row, dns_server, lookup_allows, allows)
                        };
                    }
                    None => {
                        row.explain_allows = Some(allows);
                        row.disagreement = disagreement(&row, allows);
                    }
                }
            }
            row
        })
        .collect();
    Ok(ProbeReport { rows, dataplane })
}

/// Runs the planned probes of `indices`, a few at a time.
fn run_probes(
    environment: &Environment,
    planned: &[Planned<'_>],
    indices: &[usize],
    outcomes: &Mutex<Vec<Option<ConnectOutcome>>>,
    request: &Request,
) {
    let next = Mutex::new(0_usize);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_PROBES.min(indices.len()) {
            scope.spawn(|| {
                loop {
                    let position = {
                        let mut next = next.lock().expect("probe queue");
                        let position = *next;
                        *next += 1;
                        position
                    };
                    let Some(index) = indices.get(position).copied() else {
                        break;
                    };
                    let outcome = connect_from(environment, &planned[index], request);
                    outcomes.lock().expect("probe outcomes")[index] = Some(outcome);
                }
            });
        }
    });
}

/// The names each pod (`namespace/name`) learned for each address, unexpired, from every
/// node's published DNS cache.
fn learned_names(store: &dyn sluice_store::Store) -> BTreeMap<(String, IpAddr), Vec<String>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut learned: BTreeMap<(String, IpAddr), Vec<String>> = BTreeMap::new();
    let values = store
        .list(sluice_agent::dns::DNS_CACHE_PREFIX)
        .map(|(values, _)| values)
        .unwrap_or_default();
    for value in values {
        let Ok(record) = serde_json::from_slice::<sluice_agent::dns::DnsCacheRecord>(&value.value) else {
            continue;
        };
        for endpoint in record.endpoints {
            for (name, addresses) in endpoint.names {
                for address in addresses.iter().filter(|address| address.expires > now) {
                    learned
                        .entry((endpoint.endpoint.clone(), address.address))
                        .or_default()
                        .push(name.clone());
                }
            }
        }
    }
    learned
}

fn plan<'a>(state: &'a LabState, options: &ProbeOptions) -> Vec<Planned<'a>> {
    let wanted = |protocol: ServiceProtocol, port: u16| {
        options.services.is_empty() || options.services.contains(&(protocol, port))
    };
    let mut planned = Vec::new();
    for source in &state.pods {
        for target in state.pods.iter().filter(|pod| pod.shown() != source.shown()) {
            for (source_address, to_address, no_common_family) in
                probe_pairs(&source.addresses, &target.addresses)
            {
                for (protocol, ports) in cluster::pod_services(target) {
                    for port in ports.into_iter().filter(|port| wanted(protocol, *port)) {
                        planned.push(Planned {
                            from: source.shown(),
                            netns: &source.netns,
                            source_node: &source.node,
                            source_address,
                            to: target.shown(),
                            domain: None,
                            to_address,
                            protocol,
                            port,
                            no_common_family,
                        });
                    }
                }
            }
        }
        for host in &state.hosts {
            let host_address = [IpAddr::V4(host.spec.address)];
            for (source_address, to_address, no_common_family) in
                probe_pairs(&source.addresses, &host_address)
            {
                for (protocol, ports) in [
                    (ServiceProtocol::Tcp, &host.spec.tcp),
                    (ServiceProtocol::Udp, &host.spec.udp),
                    (ServiceProtocol::Http, &host.spec.http),
                    (ServiceProtocol::Https, &host.spec.https),
                ] {
                    for port in ports.iter().copied().filter(|port| wanted(protocol, *port)) {
                        planned.push(Planned {
                            from: source.shown(),
                            netns: &source.netns,
                            source_node: &source.node,
                            source_address,
                            to: host.spec.name.clone(),
                            domain: None,
                            to_address,
                            protocol,
                            port,
                            no_common_family,
                        });
                        // Then by each name, which the pod resolves through the lab's DNS
                        // server (an A record: only over IPv4).
                        if no_common_family {
                            continue;
                        }
                        for name in host.spec.all_names() {
                            planned.push(Planned {
                                from: source.shown(),
                                netns: &source.netns,
                                source_node: &source.node,
                                source_address,
                                to: host.spec.name.clone(),
                                domain: Some(name.clone()),
                                to_address,
                                protocol,
                                port,
                                no_common_family: false,
                            });
                        }
                    }
                }
            }
        }
    }
    // Host processes: each node to every pod, its own (not policed by the pod's ingress, as in
    // Calico) and other nodes' (forwarded, so policed). Lab nodes have only an IPv4 address, so
    // they probe pods' IPv4 addresses.
    for node in &state.nodes {
        for target in &state.pods {
            let Some(to_address) = target.addresses.iter().copied().find(IpAddr::is_ipv4) else {
                continue;
            };
            for (protocol, ports) in cluster::pod_services(target) {
                for port in ports.into_iter().filter(|port| wanted(protocol, *port)) {
                    planned.push(Planned {
                        from: format!("node {}", node.name),
                        netns: &node.netns,
                        source_node: &node.name,
                        source_address: IpAddr::V4(node.address),
                        to: target.shown(),
                        domain: None,
                        to_address,
                        protocol,
                        port,
                        no_common_family: false,
                    });
                }
            }
        }
    }
    planned
}

/// The source the destination sees: the node's address when the pod's pool has natOutgoing
/// and the destination is outside every pool (the agent's masquerade rule), else the pod's.
fn expected_source(
    dataplane: &Dataplane,
    source: IpAddr,
    destination: IpAddr,
    node: Option<IpAddr>,
) -> IpAddr {
    let in_pool = |address: IpAddr| dataplane.pools.iter().find(|pool| pool.cidr.contains(&address));
    match (in_pool(source), in_pool(destination), node) {
        (Some(pool), None, Some(node)) if pool.nat_outgoing => node,
        _ => source,
    }
}

/// Peers with no common IP family: explain says no packet passes, and the only agreeing
/// outcome is that the sender has no route of the destination's family.
fn unroutable_disagreement(row: &ProbeRow) -> Option<String> {
    match row.outcome.result {
        ConnectResult::Unreachable => None,
        result => Some(format!(
            "explain says the two share no IP family, but the probe {} rather than finding no route",
            describe(result)
        )),
    }
}

fn disagreement(row: &ProbeRow, explain_allows: bool) -> Option<String> {
    let detail = row
        .outcome
        .detail
        .as_deref()
        .map(|detail| format!(" ({detail})"))
        .unwrap_or_default();
    if explain_allows && let Some(egress) = row.egress.as_ref().filter(|egress| !egress.routed()) {
        // Explain allows, but the client's gateways are gone (unreachable) or its policy does
        // not exist (dropped): nothing may leave, and never with another source.
        return match row.outcome.result {
            ConnectResult::Connected => Some(format!(
                "egress gateways say {} (no gateway to take), but the connection succeeded; the peer saw {}",
                egress.route,
                row.outcome
                    .seen
                    .map(|seen| seen.to_string())
                    .unwrap_or_else(|| "nothing".into())
            )),
            _ => None,
        };
    }
    match (explain_allows, row.outcome.result) {
        (true, ConnectResult::Connected) if row.egress.is_some() => {
            let egress = row.egress.as_ref().expect("checked");
            match row.outcome.seen {
                Some(seen) if !egress.sources.contains(&seen) => Some(format!(
                    "the peer saw {seen} as the source; expected one of the egress gateways {} ({})",
                    egress.gateways.join(", "),
                    egress
                        .sources
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                _ => None,
            }
        }
        (true, ConnectResult::Connected) => match row.outcome.seen {
            Some(seen) if seen != row.expected_source => Some(format!(
                "the peer saw {seen} as the source; expected {}",
                row.expected_source
            )),
            _ => None,
        },
        (true, result) => Some(format!(
            "explain allows, but the probe {}{detail}",
            describe(result)
        )),
        // A policy drop is silent: only a timeout agrees with a deny, or, where the node's L7
        // proxy judged the request, its 403 (HTTP) or reset (TLS).
        (false, ConnectResult::TimedOut) => None,
        (false, ConnectResult::Forbidden) if row.protocol == ServiceProtocol::Http => None,
        (false, ConnectResult::Refused) if row.protocol == ServiceProtocol::Https => None,
        (false, ConnectResult::Connected) => Some("explain denies, but the connection succeeded".to_string()),
        (false, result) => Some(format!(
            "explain denies, but the probe {} rather than timing out{detail}",
            describe(result)
        )),
    }
}

/// A lookup from a pod whose gateways are all gone (or whose policy does not exist): it must
/// get no answer, whether by timing out or by an unreachable error.
fn unroutable_lookup_disagreement(row: &ProbeRow) -> Option<String> {
    match &row.outcome.lookup {
        Some(lookup) if lookup.result == LookupResult::Answered => Some(format!(
            "the pod's egress gateways say nothing may leave, but its lookup of {} was answered",
            row.domain.as_deref().unwrap_or_default()
        )),
        _ => None,
    }
}

/// A probe by name is a lookup, then a connection. A lookup explain denies must go unanswered
/// (silence, as for any drop); one explain allows must be answered by the lab's server with the
/// host's address; then the connection is judged as any probe.
fn named_disagreement(
    row: &ProbeRow,
    dns_server: Option<IpAddr>,
    lookup_allows: bool,
    connect_allows: bool,
) -> Option<String> {
    let domain = row.domain.as_deref().unwrap_or_default();
    let server = dns_server.map(|server| server.to_string()).unwrap_or_default();
    let Some(lookup) = &row.outcome.lookup else {
        return Some(format!(
            "the probe of {domain} made no lookup ({:?})",
            row.outcome.detail
        ));
    };
    if lookup.server != dns_server {
        return Some(format!(
            "the pod asked {:?} for {domain}, not the lab's DNS server {server}",
            lookup.server
        ));
    }
    let detail = lookup
        .detail
        .as_deref()
        .map(|detail| format!(" ({detail})"))
        .unwrap_or_default();
    match (lookup_allows, lookup.result) {
        (false, LookupResult::TimedOut) => None,
        (false, _) => Some(format!(
            "explain denies the lookup of {domain} (udp/53 to {server}), but it was not silent: {:?}{detail}",
            lookup.result
        )),
        (true, LookupResult::Answered) => {
            if lookup.addresses.first() != Some(&row.to_address) {
                return Some(format!(
                    "{domain} resolved to {:?}; the lab file gives {}",
                    lookup.addresses, row.to_address
                ));
            }
            disagreement(row, connect_allows)
        }
        (true, result) => Some(format!(
            "explain allows the lookup of {domain} (udp/53 to {server}), but it came to {result:?}{detail}"
        )),
    }
}

fn describe(result: ConnectResult) -> &'static str {
    match result {
        ConnectResult::Connected => "connected",
        ConnectResult::TimedOut => "timed out",
        ConnectResult::Refused => "was refused",
        ConnectResult::Unreachable => "found no route",
        ConnectResult::Forbidden => "was answered 403",
        ConnectResult::Error => "failed",
    }
}

fn connect_from(environment: &Environment, probe: &Planned<'_>, request: &Request) -> ConnectOutcome {
    let destination = match &probe.domain {
        Some(name) => Destination::Name(name),
        None => Destination::Address(probe.to_address),
    };
    connect_in(
        environment,
        probe.netns,
        probe.protocol,
        destination,
        probe.port,
        request,
    )
}

/// Where a connection from a pod goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Destination<'a> {
    Address(IpAddr),
    /// Resolved in the pod first (and, for HTTPS, the server name sent).
    Name(&'a str),
}

/// One `lab connect` inside a namespace, as a probe makes it.
pub(crate) fn connect_in(
    environment: &Environment,
    netns: &str,
    protocol: ServiceProtocol,
    destination: Destination<'_>,
    port: u16,
    request: &Request,
) -> ConnectOutcome {
    let mut command = shell::in_netns(netns, &environment.sluice_binary);
    command.args(["lab", "connect", "--protocol", protocol.name()]);
    match destination {
        Destination::Name(name) => command.args(["--name", name]),
        Destination::Address(address) => command.args(["--to", &address.to_string()]),
    };
    command.args([
        "--port",
        &port.to_string(),
        "--timeout-ms",
        &PROBE_TIMEOUT.as_millis().to_string(),
    ]);
    if protocol == ServiceProtocol::Http {
        command.args(["--method", &request.method, "--path", &request.path]);
    }
    // The name asked for (TLS server name, HTTP Host); by name, the name itself.
    if matches!(protocol, ServiceProtocol::Http | ServiceProtocol::Https)
        && matches!(destination, Destination::Address(_))
        && let Some(name) = &request.server_name
    {
        command.args(["--server-name", name]);
    }
    let failed = |detail: String| ConnectOutcome {
        result: ConnectResult::Error,
        seen: None,
        detail: Some(detail),
        lookup: None,
    };
    match shell::run_bounded(command, &[], PROBE_TIMEOUT * 4 + Duration::from_secs(2)) {
        Ok(output) => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
                failed(format!(
                    "the connect helper printed {:?} {}",
                    stdout.trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            })
        }
        Err(error) => failed(error),
    }
}

/// The matrix as a table: who, to whom, what the probe found, the source the peer saw, and
/// (with explain) the predicted verdict and any disagreement.
pub fn print_table(report: &ProbeReport, against_explain: bool) {
    let width =
        |values: &mut dyn Iterator<Item = usize>, minimum: usize| values.max().unwrap_or(0).max(minimum);
    let from_width = width(&mut report.rows.iter().map(|row| row.from.len()), 4);
    let destinations: Vec<String> = report
        .rows
        .iter()
        .map(|row| match &row.domain {
            Some(domain) => format!("{} {domain} {}", row.to, row.to_address),
            None => format!("{} {}", row.to, row.to_address),
        })
        .collect();
    let to_width = width(&mut destinations.iter().map(String::len), 2);
    print!(
        "{:<from_width$}  {:<to_width$}  {:<10}  {:<11}  {:<15}",
        "FROM", "TO", "SERVICE", "PROBE", "PEER SAW"
    );
    println!("{}", if against_explain { "  EXPLAIN" } else { "" });
    for (row, destination) in report.rows.iter().zip(&destinations) {
        let service = format!("{}/{}", row.protocol.name(), row.port);
        let result = match row.outcome.result {
            ConnectResult::Connected => "allowed",
            ConnectResult::TimedOut => "denied",
            ConnectResult::Refused => "refused",
            ConnectResult::Unreachable => "unreachable",
            ConnectResult::Forbidden => "forbidden",
            ConnectResult::Error => "error",
        };
        let seen = row
            .outcome
            .seen
            .map(|seen| seen.to_string())
            .unwrap_or_else(|| "-".into());
        print!(
            "{:<from_width$}  {destination:<to_width$}  {service:<10}  {result:<11}  {seen:<15}",
            row.from
        );
        if let Some(allows) = row.explain_allows {
            print!("  {}", if allows { "allow" } else { "deny" });
        } else if against_explain && row.no_common_family {
            print!("  no common IP family");
        }
        if let Some(egress) = &row.egress {
            match egress.routed() {
                true => print!("  via egress gateways {}", egress.gateways.join(", ")),
                false => print!("  egress: {}", egress.route),
            }
        }
        if let Some(problem) = &row.disagreement {
            print!("  <- DISAGREES: {problem}");
        }
        println!();
    }
    let allowed = report.rows.iter().filter(|row| row.allowed()).count();
    print!(
        "\n{} probes: {allowed} allowed, {} not",
        report.rows.len(),
        report.rows.len() - allowed
    );
    if against_explain {
        print!("; {} disagreement(s) with explain", report.disagreements());
    }
    println!();
}

pub fn print_json_lines(report: &ProbeReport) -> Result<(), String> {
    for row in &report.rows {
        println!(
            "{}",
            serde_json::to_string(row).map_err(|error| error.to_string())?
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_go_once_per_shared_family_or_once_marked_when_none() {
        let parse = |texts: &[&str]| {
            texts
                .iter()
                .map(|text| text.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        let dual = parse(&["10.0.0.1", "fd00::1"]);
        let four = parse(&["10.0.0.2"]);
        let six = parse(&["fd00::2"]);
        assert_eq!(probe_pairs(&dual, &dual).len(), 2);
        assert_eq!(probe_pairs(&six, &dual), [(six[0], dual[1], false)]);
        assert_eq!(probe_pairs(&four, &six), [(four[0], six[0], true)]);
        assert_eq!(probe_pairs(&six, &four), [(six[0], four[0], true)]);
        let unroutable = ProbeRow {
            no_common_family: true,
            ..row(ConnectResult::Unreachable, None)
        };
        assert_eq!(unroutable_disagreement(&unroutable), None);
        let through = ProbeRow {
            no_common_family: true,
            ..row(ConnectResult::Connected, Some("10.0.0.2"))
        };
        assert!(
            unroutable_disagreement(&through)
                .unwrap()
                .contains("no IP family")
        );
    }
    #[test]
    fn services_parse_with_clear_errors() {
        assert_eq!(parse_service("TCP/443"), Ok((ServiceProtocol::Tcp, 443)));
        assert_eq!(parse_service("http/80"), Ok((ServiceProtocol::Http, 80)));
        assert!(parse_service("443").unwrap_err().contains("PROTOCOL/PORT"));
        assert!(parse_service("sctp/9").unwrap_err().contains("sctp"));
        assert!(parse_service("udp/0").is_err());
    }

    fn row(result: ConnectResult, seen: Option<&str>) -> ProbeRow {
        ProbeRow {
            from: "prod/web".into(),
            from_address: "10.10.0.1".parse().unwrap(),
            to: "partner".into(),
            domain: None,
            to_address: "203.0.113.10".parse().unwrap(),
            protocol: ServiceProtocol::Tcp,
            port: 443,
            outcome: ConnectOutcome {
                result,
                seen: seen.map(|seen| seen.parse().unwrap()),
                detail: None,
                lookup: None,
            },
            expected_source: "100.64.0.10".parse().unwrap(),
            egress: None,
            explain_lookup_allows: None,
            no_common_family: false,
            explain_allows: None,
            disagreement: None,
        }
    }

    #[test]
    fn only_silence_agrees_with_deny_and_only_the_expected_source_with_allow() {
        assert_eq!(disagreement(&row(ConnectResult::TimedOut, None), false), None);
        assert!(disagreement(&row(ConnectResult::Refused, None), false).is_some());
        assert!(disagreement(&row(ConnectResult::Connected, Some("100.64.0.10")), false).is_some());
        assert_eq!(
            disagreement(&row(ConnectResult::Connected, Some("100.64.0.10")), true),
            None
        );
        let wrong_source = disagreement(&row(ConnectResult::Connected, Some("10.10.0.1")), true).unwrap();
        assert!(wrong_source.contains("expected 100.64.0.10"), "{wrong_source}");
        assert!(
            disagreement(&row(ConnectResult::TimedOut, None), true)
                .unwrap()
                .contains("timed out")
        );
    }

    fn named(result: ConnectResult, lookup: LookupResult, addresses: &[&str]) -> ProbeRow {
        let mut row = row(
            result,
            (result == ConnectResult::Connected).then_some("100.64.0.10"),
        );
        row.domain = Some("api.partner.example".into());
        row.outcome.lookup = Some(crate::servers::LookupOutcome {
            result: lookup,
            server: Some(DNS.parse().unwrap()),
            addresses: addresses.iter().map(|address| address.parse().unwrap()).collect(),
            detail: None,
        });
        row
    }

    const DNS: &str = "100.64.1.253";

    #[test]
    fn a_probe_by_name_agrees_only_when_lookup_and_connection_both_do() {
        let server = Some(DNS.parse().unwrap());
        let answered = |result| named(result, LookupResult::Answered, &["203.0.113.10"]);
        // Lookup allowed and answered: the connection is judged as by address.
        assert_eq!(
            named_disagreement(&answered(ConnectResult::Connected), server, true, true),
            None
        );
        assert_eq!(
            named_disagreement(&answered(ConnectResult::TimedOut), server, true, false),
            None
        );
        assert!(named_disagreement(&answered(ConnectResult::TimedOut), server, true, true).is_some());
        // Lookup denied: only silence agrees.
        let silent = named(ConnectResult::TimedOut, LookupResult::TimedOut, &[]);
        assert_eq!(named_disagreement(&silent, server, false, true), None);
        let problem = named_disagreement(&answered(ConnectResult::Connected), server, false, true).unwrap();
        assert!(
            problem.contains("explain denies the lookup of api.partner.example"),
            "{problem}"
        );
        // Lookup allowed but unanswered, or answered wrongly, or asked of another server.
        let problem = named_disagreement(&silent, server, true, true).unwrap();
        assert!(problem.contains("explain allows the lookup"), "{problem}");
        let wrong = named(ConnectResult::Connected, LookupResult::Answered, &["192.0.2.1"]);
        let problem = named_disagreement(&wrong, server, true, true).unwrap();
        assert!(problem.contains("the lab file gives 203.0.113.10"), "{problem}");
        let problem = named_disagreement(&silent, Some("192.0.2.53".parse().unwrap()), false, true).unwrap();
        assert!(
            problem.contains("not the lab's DNS server 192.0.2.53"),
            "{problem}"
        );
    }

    fn through_gateways(route: &str) -> Option<EgressExpectation> {
        Some(EgressExpectation {
            route: route.to_string(),
            gateways: if route == "gateways" {
                vec!["egress/a".into(), "egress/b".into()]
            } else {
                Vec::new()
            },
            sources: if route == "gateways" {
                vec!["10.250.0.1".parse().unwrap(), "10.250.0.2".parse().unwrap()]
            } else {
                Vec::new()
            },
        })
    }

    #[test]
    fn a_gateway_client_must_be_seen_with_one_of_its_gateways_addresses() {
        let mut seen_from_gateway = row(ConnectResult::Connected, Some("10.250.0.2"));
        seen_from_gateway.egress = through_gateways("gateways");
        assert_eq!(disagreement(&seen_from_gateway, true), None);
        let mut leaked = row(ConnectResult::Connected, Some("100.64.0.10"));
        leaked.egress = through_gateways("gateways");
        let problem = disagreement(&leaked, true).unwrap();
        assert!(problem.contains("egress/a, egress/b"), "{problem}");
        let mut failed = row(ConnectResult::TimedOut, None);
        failed.egress = through_gateways("gateways");
        assert!(disagreement(&failed, true).is_some());
    }

    #[test]
    fn with_no_gateway_to_take_nothing_may_connect() {
        for route in ["unreachable", "drop"] {
            for result in [ConnectResult::Unreachable, ConnectResult::TimedOut] {
                let mut blocked = row(result, None);
                blocked.egress = through_gateways(route);
                assert_eq!(disagreement(&blocked, true), None, "{route} {result:?}");
            }
            let mut leaked = row(ConnectResult::Connected, Some("100.64.0.10"));
            leaked.egress = through_gateways(route);
            assert!(disagreement(&leaked, true).unwrap().contains(route));
        }
    }
}
