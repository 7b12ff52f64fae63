//! IR → nftables objects.
//!
//! Layout of the table (names are stable across recompiles so that updates are incremental):
//! - base chains `forward` and `input` send packets from a pod's interface through its egress
//!   chain and packets to a pod's interface through its ingress chain, via the verdict maps
//!   `from-endpoint` and `to-endpoint`; established and related traffic is accepted first,
//!   invalid traffic dropped, a pod's IPv6 neighbour discovery with its node accepted (input
//!   only), and a pod interface with no program yet is dropped (fail closed);
//! - `endpoint-<hash>-egress|ingress`: anti-spoofing, then a jump to each tier's chain; a tier
//!   that sets the ACCEPT mark ends the direction with "allowed"; after the last tier the
//!   namespace profile allows;
//! - `tier-<hash>-egress|ingress`: the rules of the tier's policies for that endpoint, inlined
//!   in order (one nft rule per Calico rule, address family and port alternative): Allow sets
//!   ACCEPT and returns, Pass returns, Deny drops, Log logs and goes on; the chain ends with the
//!   tier's default action. Named by content, so endpoints with the same policies share them;
//! - sets `ip-<hash>-v4|v6` (interval sets of disjoint networks) and `port-<hash>-v4|v6`
//!   (address . protocol . port, for named ports);
//! - `nat-postrouting`: masquerade traffic from pools with natOutgoing to outside every pool
//!   (absent while no pool has natOutgoing); never a packet leaving through the egress gateway
//!   device, whose source must stay the pod's (it is encapsulated to a gateway, which NATs it).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;
use sluice_api::values::{Action, PolicyType};
use sluice_nft::{BaseChain, Set};
use sluice_policy::ir::{CompiledRule, DomainUse, EndpointProgram, IpSetSource, PeerMatch, PortMatch};
use sluice_policy::{Dataplane, PolicyHit};

use crate::domains::{DeclaredDomainSets, DnsRender, domain_set_name, render_domains};
use crate::flow_logs::{FlowLogs, allow_verdict};
use crate::l7_redirect::{L7Redirect, accept_redirected, render_redirect};

pub const TABLE_NAME: &str = "sluice";
/// Host-side interfaces of pods start with this (the CNI plugin names them so); a packet on
/// such an interface that no endpoint program claims is dropped.
pub const INTERFACE_PREFIX: &str = "slc";

pub(crate) const MARK_ACCEPT: u32 = 0x0001_0000;

/// A pod on this node and its host-side interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalEndpoint {
    pub namespace: String,
    pub name: String,
    pub interface: String,
    /// An egress gateway (some client's selector picks it): it sends its clients the replies
    /// it un-NATs, whose source is the outside peer's, not its own.
    pub egress_gateway: bool,
}

/// Splits local endpoints into those that can be programmed and those that cannot, with why.
/// Only pod interfaces (`slc…`) are dispatched: an endpoint naming a host interface would pull
/// that interface's traffic through a pod's chains. Two endpoints on one interface would give
/// its map key two values, which nft refuses for the whole ruleset; the first by namespace and
/// name keeps it. [`render`] applies this itself; the agent calls it to report what it left out.
pub fn programmable_endpoints(local: &[LocalEndpoint]) -> (Vec<LocalEndpoint>, Vec<(LocalEndpoint, String)>) {
    let mut sorted: Vec<&LocalEndpoint> = local.iter().collect();
    sorted.sort_by(|first, second| {
        (&first.namespace, &first.name, &first.interface).cmp(&(
            &second.namespace,
            &second.name,
            &second.interface,
        ))
    });
    let mut taken: BTreeMap<&str, &LocalEndpoint> = BTreeMap::new();
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for endpoint in sorted {
        if !endpoint.interface.starts_with(INTERFACE_PREFIX) {
            skipped.push((
                endpoint.clone(),
                format!(
                    "interface {} is not a pod interface ({INTERFACE_PREFIX}…)",
                    endpoint.interface
                ),
            ));
        } else if let Some(holder) = taken.get(endpoint.interface.as_str()) {
            skipped.push((
                endpoint.clone(),
                format!(
                    "interface {} is already {}/{}'s",
                    endpoint.interface, holder.namespace, holder.name
                ),
            ));
        } else {
            taken.insert(&endpoint.interface, endpoint);
            kept.push(endpoint.clone());
        }
    }
    (kept, skipped)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub base: Option<BaseChain>,
    /// Rule text and comment, in order.
    pub rules: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    pub declaration: Set,
    /// Rendered keys; for maps, `key : value`.
    pub elements: BTreeSet<(String, Option<String>)>,
}

/// Everything the table should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, ChainState>,
    pub sets: BTreeMap<String, SetState>,
    /// Sets (declared in `sets`, with no rendered elements) whose elements someone else adds
    /// and expires: the domain sets the agent fills over netlink. An incremental sync never
    /// touches their elements; a full rebuild, which replaces the table, writes these back with
    /// their remaining timeouts, so what was learned stays allowed across it.
    pub dynamic_sets: BTreeMap<String, BTreeSet<DynamicElement>>,
}

/// An element of a dynamic set with the time it has left.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DynamicElement {
    /// The key in nft syntax, e.g. `10.0.0.1 . 192.0.2.7`.
    pub key: String,
    pub timeout: std::time::Duration,
}

impl DynamicElement {
    /// The element as an nft set element with its timeout, e.g. `10.0.0.1 . 192.0.2.7 timeout
    /// 1500ms`.
    pub fn text(&self) -> String {
        format!("{} timeout {}ms", self.key, self.timeout.as_millis().max(1))
    }
}

impl Ruleset {
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|chain| chain.rules.len()).sum()
    }

    pub fn element_count(&self) -> usize {
        self.sets.values().map(|set| set.elements.len()).sum()
    }
}

/// A short stable name part from any hashable description.
pub(crate) fn short_hash(value: impl Hash) -> String {
    // FNV-1a over the std hasher's input would be stable too; DefaultHasher's algorithm is
    // not guaranteed across Rust releases, which only matters across agent upgrades, and a
    // changed name merely causes one full rewrite.
    let mut hasher = Fnv64::default();
    value.hash(&mut hasher);
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

#[derive(Default)]
struct Fnv64(u64);

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// An address family: IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(address: IpAddr) -> IpFamily {
        if address.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            IpFamily::V4 => 0,
            IpFamily::V6 => 1,
        }
    }

    pub(crate) fn suffix(self) -> &'static str {
        match self {
            IpFamily::V4 => "v4",
            IpFamily::V6 => "v6",
        }
    }

    pub(crate) fn address_keyword(self) -> &'static str {
        match self {
            IpFamily::V4 => "ip",
            IpFamily::V6 => "ip6",
        }
    }

    fn contains(self, network: &IpNet) -> bool {
        matches!(
            (self, network),
            (IpFamily::V4, IpNet::V4(_)) | (IpFamily::V6, IpNet::V6(_))
        )
    }
}

/// The kernel finds a named set by walking the table's list of sets, and gives every
/// anonymous set (`{ a, b }` in a rule) an entry in that list too, so loading a ruleset costs
/// rules × sets. A set of one element is therefore written as a plain comparison, and larger
/// ones as named sets shared by every rule that uses the same content.
const INLINE_LIMIT: usize = 1;

/// How a rule refers to one family's part of an IP set or named-port set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference {
    /// No element: a positive match never holds; a negative one always does.
    Empty,
    /// One address or network written into the rule, e.g. `10.0.0.1`.
    Inline(String),
    /// A named set, e.g. `@ip-0123456789ab-v4`.
    Named(String),
}

fn reference(elements: Vec<String>, declaration: Set, ruleset: &mut Ruleset) -> Reference {
    if elements.is_empty() {
        return Reference::Empty;
    }
    if elements.len() <= INLINE_LIMIT {
        return Reference::Inline(elements.join(", "));
    }
    let name = format!("@{}", declaration.name);
    let elements = elements.into_iter().map(|element| (element, None)).collect();
    ruleset.sets.insert(
        declaration.name.clone(),
        SetState {
            declaration,
            elements,
        },
    );
    Reference::Named(name)
}

/// Renders the IR for the endpoints local to this node, with no DNS learning input: domain
/// sets are declared empty and no server is trusted.
pub fn render(ir: &Dataplane, local: &[LocalEndpoint]) -> Ruleset {
    render_with_dns(ir, local, &DnsRender::default())
}

/// Renders the IR for the endpoints local to this node, with the DNS learner's trusted servers,
/// queue and learned elements (see [`crate::domains`]).
pub fn render_with_dns(ir: &Dataplane, local: &[LocalEndpoint], dns: &DnsRender) -> Ruleset {
    render_with_flow_logs(ir, local, dns, None)
}

/// Renders the IR for the endpoints local to this node with DNS learning's input and, when
/// `flow_logs` is given, every final decision logged to its NFLOG group (see
/// [`crate::flow_logs`]); without it, the ruleset is exactly [`render_with_dns`]'s.
pub fn render_with_flow_logs(
    ir: &Dataplane,
    local: &[LocalEndpoint],
    dns: &DnsRender,
    flow_logs: Option<FlowLogs>,
) -> Ruleset {
    render_with_l7(ir, local, dns, flow_logs, None)
}

/// [`render_with_flow_logs`] and, when `l7` is given, the redirect of connections that reach
/// an egress rule with an HTTP or TLS match to the node's proxy (see [`crate::l7_redirect`]);
/// without it, such rules never match and nothing is redirected.
pub fn render_with_l7(
    ir: &Dataplane,
    local: &[LocalEndpoint],
    dns: &DnsRender,
    flow_logs: Option<FlowLogs>,
    l7: Option<&L7Redirect>,
) -> Ruleset {
    let flow_logs = flow_logs.as_ref();
    let (local, _) = programmable_endpoints(local);
    let local = local.as_slice();
    let mut ruleset = Ruleset::default();
    let set_names: Vec<String> = ir
        .ip_sets
        .iter()
        .map(|set| match &set.source {
            IpSetSource::Selector(selector) => format!("ip-{}", short_hash(("selector", selector))),
            IpSetSource::Nets => format!("ip-{}", short_hash(("nets", &set.members))),
        })
        .collect();
    let port_set_names: Vec<String> = ir
        .named_port_sets
        .iter()
        .map(|set| format!("port-{}", short_hash((&set.selector, &set.port_name))))
        .collect();
    let local_programs: Vec<(&LocalEndpoint, &EndpointProgram)> = local
        .iter()
        .filter_map(|endpoint| {
            Some((
                endpoint,
                ir.endpoint_by_name(&endpoint.namespace, &endpoint.name)?,
            ))
        })
        .collect();

    // Only what local endpoints use is programmed.
    let mut used_policies = BTreeSet::new();
    for (_, program) in &local_programs {
        for direction in [&program.egress, &program.ingress] {
            for tier in &direction.tiers {
                used_policies.extend(tier.policies.iter().copied());
            }
        }
    }
    let mut used_sets = BTreeSet::new();
    let mut used_port_sets = BTreeSet::new();
    for &policy_id in &used_policies {
        for direction in [PolicyType::Egress, PolicyType::Ingress] {
            for rule in ir.policies[policy_id].rules(direction) {
                collect_sets(rule, &mut used_sets, &mut used_port_sets);
            }
        }
    }
    // Families that local endpoints have addresses in: a pod without an IPv6 address neither
    // sends IPv6 (anti-spoofing drops it) nor receives routed IPv6, so IPv6 rules for it
    // would be dead weight.
    let families: Vec<IpFamily> = [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .filter(|family| {
            local_programs.iter().any(|(_, program)| {
                program
                    .addresses
                    .iter()
                    .any(|address| address.is_ipv4() == (*family == IpFamily::V4))
            })
        })
        .collect();
    let mut address_references = vec![[Reference::Empty, Reference::Empty]; ir.ip_sets.len()];
    for &set_id in &used_sets {
        let set = &ir.ip_sets[set_id];
        let aggregated = IpNet::aggregate(&set.members);
        for &family in &families {
            let elements: Vec<String> = aggregated
                .iter()
                .filter(|network| family.contains(network))
                .map(network_text)
                .collect();
            let key_type = if family == IpFamily::V4 {
                "ipv4_addr"
            } else {
                "ipv6_addr"
            };
            let mut declaration =
                Set::new(format!("{}-{}", set_names[set_id], family.suffix()), key_type).interval();
            declaration.comment = Some(truncate(&set_description(&set.source), 120));
            address_references[set_id][family.index()] = reference(elements, declaration, &mut ruleset);
        }
    }
    let mut port_references = vec![[Reference::Empty, Reference::Empty]; ir.named_port_sets.len()];
    for &set_id in &used_port_sets {
        let set = &ir.named_port_sets[set_id];
        for &family in &families {
            let key_type = if family == IpFamily::V4 {
                "ipv4_addr . inet_proto . inet_service"
            } else {
                "ipv6_addr . inet_proto . inet_service"
            };
            let mut declaration = Set::new(
                format!("{}-{}", port_set_names[set_id], family.suffix()),
                key_type,
            );
            declaration.comment = Some(truncate(
                &format!("port {} of {}", set.port_name, set.selector),
                120,
            ));
            let elements = set
                .members
                .iter()
                .filter(|(address, _, _)| address.is_ipv4() == (family == IpFamily::V4))
                .map(|(address, protocol, port)| format!("{address} . {protocol} . {port}"))
                .collect();
            port_references[set_id][family.index()] = reference(elements, declaration, &mut ruleset);
        }
    }
    let programs: Vec<&EndpointProgram> = local_programs.iter().map(|(_, program)| *program).collect();
    let domain_sets = render_domains(ir, &programs, dns, &mut ruleset);
    let renderer = RuleRenderer {
        addresses: &address_references,
        ports: &port_references,
        families: &families,
        domain_sets: &domain_sets,
    };
    // Each policy's rules rendered once per direction; tier chains below inline them.
    let mut rendered = RenderedPolicies::new();
    for &policy_id in &used_policies {
        let policy = &ir.policies[policy_id];
        for direction in [PolicyType::Egress, PolicyType::Ingress] {
            let mut policy_rules = Vec::new();
            for rule in policy.rules(direction) {
                let mut texts = Vec::new();
                let comment = format!(
                    "{} {} rule {}",
                    policy.reference,
                    direction_name(direction),
                    rule.origin_index
                );
                let hit = matches!(rule.action, Action::Allow | Action::Deny)
                    .then(|| PolicyHit::rule(&policy.reference, direction, rule.origin_index, rule.action));
                let action = match (&hit, flow_logs) {
                    (Some(hit), Some(flow_logs)) => flow_logs.verdict(hit),
                    _ => plain_verdict(
                        rule.action,
                        &format!("{} {}", policy.reference.name, rule.origin_index),
                    ),
                };
                for text in renderer.rule(rule, &action) {
                    texts.push((text, Some(truncate(&comment, 120))));
                }
                if let (Some(hit), Some(flow_logs)) = (&hit, flow_logs)
                    && hit.action == Action::Deny
                    && !texts.is_empty()
                {
                    flow_logs.declare_chain(hit, &mut ruleset);
                }
                // Merging needs one family: nodes with IPv6 pods keep rule-by-rule chains.
                let lookup = (families == [IpFamily::V4])
                    .then(|| hit.and_then(|hit| lookup_of(ir, rule, direction, hit)))
                    .flatten();
                policy_rules.push(RenderedRule { texts, lookup });
            }
            rendered.insert((policy_id, direction_key(direction)), policy_rules);
        }
    }

    let mut from_endpoint = BTreeSet::new();
    let mut to_endpoint = BTreeSet::new();
    for (endpoint, program) in &local_programs {
        let base_name = format!("endpoint-{}", short_hash((&program.namespace, &program.name)));
        for direction in [PolicyType::Egress, PolicyType::Ingress] {
            let chain = format!("{base_name}-{}", direction_name(direction));
            let mut rules = endpoint_rules(ir, program, direction, &rendered, flow_logs, &mut ruleset);
            if endpoint.egress_gateway && direction == PolicyType::Egress {
                gateway_return_rules(ir, program, &mut rules);
            }
            ruleset
                .chains
                .insert(chain.clone(), ChainState { base: None, rules });
            let element = (
                format!("\"{}\"", endpoint.interface),
                Some(format!("jump {chain}")),
            );
            match direction {
                PolicyType::Egress => from_endpoint.insert(element),
                PolicyType::Ingress => to_endpoint.insert(element),
            };
        }
    }
    for (name, elements) in [("from-endpoint", from_endpoint), ("to-endpoint", to_endpoint)] {
        let declaration = Set::map(name, "ifname", "verdict");
        ruleset.sets.insert(
            name.to_string(),
            SetState {
                declaration,
                elements,
            },
        );
    }
    // Every local endpoint's interface: a pod interface not in it has no program yet, and its
    // traffic is dropped (fail closed). The check comes before the jump, because a packet the
    // endpoint chains allow returns to this chain and must go on.
    let interfaces = local_programs
        .iter()
        .map(|(endpoint, _)| (format!("\"{}\"", endpoint.interface), None))
        .collect();
    let declaration = Set::new("endpoint-interfaces", "ifname");
    ruleset.sets.insert(
        "endpoint-interfaces".into(),
        SetState {
            declaration,
            elements: interfaces,
        },
    );
    let prefix = format!("\"{INTERFACE_PREFIX}*\"");
    let unprogrammed = Some("pod interface without a program yet".to_string());
    let dispatch = |hook: &str, priority: i32, ingress_too: bool| {
        let mut rules = vec![
            ("ct state established,related accept".to_string(), None),
            ("ct state invalid drop".to_string(), None),
        ];
        if hook == "input" {
            // A pod's IPv6 needs neighbour discovery (and MLD) with its node, whose link-local
            // address is its gateway: accepted before policy and before the fail-closed drop,
            // as Calico does (`ICMPv6Filter` in felix/rules/static.go). It never leaves the link.
            rules.push((
                format!(
                    "iifname {prefix} icmpv6 type {{ mld-listener-query, mld-listener-report, mld-listener-done, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} accept"
                ),
                Some("IPv6 neighbour discovery between a pod and its node".to_string()),
            ));
        }
        rules.extend([
            (
                format!("iifname {prefix} iifname != @endpoint-interfaces drop"),
                unprogrammed.clone(),
            ),
            ("iifname vmap @from-endpoint".to_string(), None),
        ]);
        if ingress_too {
            rules.push((
                format!("oifname {prefix} oifname != @endpoint-interfaces drop"),
                unprogrammed.clone(),
            ));
            rules.push(("oifname vmap @to-endpoint".to_string(), None));
        }
        ChainState {
            base: Some(BaseChain {
                chain_type: "filter".into(),
                hook: hook.into(),
                priority,
                policy: Some("accept".into()),
            }),
            rules,
        }
    };
    ruleset
        .chains
        .insert("forward".into(), dispatch("forward", 0, true));
    let mut input = dispatch("input", 0, false);
    if let Some(l7) = l7
        && render_redirect(ir, &local_programs, &renderer, l7, flow_logs, &mut ruleset)
    {
        // A connection the prerouting copy of its endpoint's egress sent to the proxy is
        // delivered locally: its first packet meets the input hook, where the endpoint's chain
        // would drop it (its L7 rule never matches in the kernel). The proxy judges it.
        let position = 2;
        input.rules.insert(position, accept_redirected());
    }
    ruleset.chains.insert("input".into(), input);
    render_gateway_replies(ir, &local_programs, &mut ruleset);
    render_nat(ir, &mut ruleset);
    ruleset
}

/// Only when some pool NATs: a nat chain registers netfilter's NAT hooks, which every new
/// connection through the node then pays for (a conntrack-only node forwarded 0.98 as many new
/// connections per second with an empty nat chain as without, median of 8 interleaved rounds).
fn render_nat(ir: &Dataplane, ruleset: &mut Ruleset) {
    if !ir.pools.iter().any(|pool| pool.nat_outgoing) {
        return;
    }
    let nat_pools: Vec<IpNet> = ir
        .pools
        .iter()
        .filter(|pool| pool.nat_outgoing)
        .map(|pool| pool.cidr)
        .collect();
    let all_pools: Vec<IpNet> = ir.pools.iter().map(|pool| pool.cidr).collect();
    let mut rules = vec![(
        format!("oifname \"{}\" return", sluice_gateway::tunnel::DEVICE),
        Some("egress gateway traffic keeps the pod's source: the gateway NATs it".to_string()),
    )];
    for family in [IpFamily::V4, IpFamily::V6] {
        let key_type = if family == IpFamily::V4 {
            "ipv4_addr"
        } else {
            "ipv6_addr"
        };
        for (name, networks) in [("nat-pools", &nat_pools), ("all-pools", &all_pools)] {
            let declaration = Set::new(format!("{name}-{}", family.suffix()), key_type).interval();
            let elements = IpNet::aggregate(networks)
                .iter()
                .filter(|network| family.contains(network))
                .map(|network| (network_text(network), None))
                .collect();
            ruleset.sets.insert(
                declaration.name.clone(),
                SetState {
                    declaration,
                    elements,
                },
            );
        }
        let keyword = family.address_keyword();
        let suffix = family.suffix();
        // Pools with their own NAT address first: a NAT statement ends the chain.
        for pool in ir
            .pools
            .iter()
            .filter(|pool| pool.nat_outgoing && family.contains(&pool.cidr))
        {
            if let Some(address) = pool.nat_address {
                rules.push((
                    format!("{keyword} saddr {} {keyword} daddr != @all-pools-{suffix} snat {keyword} to {address}", network_text(&pool.cidr)),
                    Some(truncate(&format!("natOutgoing of pool {} to {address}", pool.name), 120)),
                ));
            }
        }
        rules.push((
            format!("{keyword} saddr @nat-pools-{suffix} {keyword} daddr != @all-pools-{suffix} masquerade"),
            Some("natOutgoing: from a NAT pool to outside every pool".to_string()),
        ));
    }
    ruleset.chains.insert(
        "nat-postrouting".into(),
        ChainState {
            base: Some(BaseChain {
                chain_type: "nat".into(),
                hook: "postrouting".into(),
                priority: 100,
                policy: None,
            }),
            rules,
        },
    );
}

pub(crate) fn direction_name(direction: PolicyType) -> &'static str {
    match direction {
        PolicyType::Egress => "egress",
        PolicyType::Ingress => "ingress",
    }
}

fn set_description(source: &IpSetSource) -> String {
    match source {
        IpSetSource::Nets => "rule nets".to_string(),
        IpSetSource::Selector(selector) => format!("selector {selector}"),
    }
}

/// A comment or log prefix of at most `limit` bytes (nft counts bytes: comments are limited to
/// 128), cut at a character boundary, with double quotes made single.
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    let mut text = text.replace('"', "'");
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn network_text(network: &IpNet) -> String {
    if network.prefix_len() == network.max_prefix_len() {
        network.addr().to_string()
    } else {
        network.to_string()
    }
}

fn collect_sets(rule: &CompiledRule, sets: &mut BTreeSet<usize>, port_sets: &mut BTreeSet<usize>) {
    for peer in [&rule.source, &rule.destination] {
        for id in [peer.nets, peer.not_nets, peer.selector, peer.not_selector]
            .into_iter()
            .flatten()
        {
            sets.insert(id as usize);
        }
        for ports in [&peer.ports, &peer.not_ports].into_iter().flatten() {
            port_sets.extend(ports.named.iter().map(|id| *id as usize));
        }
    }
}

/// Each used policy's rules, rendered, by (policy, direction).
type RenderedPolicies = BTreeMap<(usize, u8), Vec<RenderedRule>>;

/// One Calico rule as nft rules, and, when it is simple enough, as set elements that a run of
/// rules with the same action can share one lookup for.
#[derive(Debug, Clone)]
struct RenderedRule {
    texts: Vec<(String, Option<String>)>,
    lookup: Option<Lookup>,
}

/// A rule that matches exactly the packets whose (peer address, protocol, destination port) is
/// in `elements`: IPv4 only, TCP/UDP/SCTP/UDPLite, Allow or Deny, no negations.
#[derive(Debug, Clone)]
struct Lookup {
    action: Action,
    elements: Vec<(IpNet, u8, (u16, u16))>,
    /// The rule's hit, which a run's verdict map sends its elements' packets to when flow
    /// logs are on.
    hit: PolicyHit,
}

/// The most elements one merged lookup holds (and the overlap check stays cheap).
const RUN_ELEMENT_LIMIT: usize = 2048;

/// Only rules of at most this many elements are merged. A rule over a large set already costs
/// one lookup in a named set shared by every endpoint; copying its elements into each
/// endpoint's run would multiply them by the number of endpoints.
const RULE_MERGE_LIMIT: usize = 8;

fn overlaps(left: &(IpNet, u8, (u16, u16)), right: &(IpNet, u8, (u16, u16))) -> bool {
    left.1 == right.1
        && left.2.0 <= right.2.1
        && right.2.0 <= left.2.1
        && (left.0.contains(&right.0.network()) || right.0.contains(&left.0.network()))
}

/// The lookup form of a rule, if it has one. The peer is the destination for egress and the
/// source for ingress; the own side may only restrict destination ports (ingress).
fn lookup_of(ir: &Dataplane, rule: &CompiledRule, direction: PolicyType, hit: PolicyHit) -> Option<Lookup> {
    if !matches!(rule.action, Action::Allow | Action::Deny)
        || rule
            .domains
            .is_some_and(|domains| domains.usage != DomainUse::Ignored)
        || rule.l7.is_some()
        || rule.icmp.is_some()
        || rule.not_icmp.is_some()
        || rule.not_protocol.is_some()
        || rule.ip_version.is_some_and(|version| version != 4)
    {
        return None;
    }
    let protocol = rule
        .protocol
        .filter(|protocol| matches!(protocol, 6 | 17 | 132 | 136))?;
    let (peer, own) = match direction {
        PolicyType::Egress => (&rule.destination, &rule.source),
        PolicyType::Ingress => (&rule.source, &rule.destination),
    };
    let negated =
        |side: &PeerMatch| side.not_nets.is_some() || side.not_selector.is_some() || side.not_ports.is_some();
    if negated(peer)
        || negated(own)
        || own.nets.is_some()
        || own.selector.is_some()
        || rule.source.ports.is_some()
    {
        return None;
    }
    let ports = match &rule.destination.ports {
        None => vec![(0, u16::MAX)],
        Some(ports) if ports.named.is_empty() => ports.ranges.clone(),
        Some(_) => return None,
    };
    let addresses: Vec<IpNet> = match (peer.nets, peer.selector) {
        (None, None) => vec!["0.0.0.0/0".parse().expect("a valid network")],
        (Some(id), None) | (None, Some(id)) => IpNet::aggregate(&ir.ip_sets[id as usize].members)
            .into_iter()
            .filter(|network| network.addr().is_ipv4())
            .collect(),
        (Some(_), Some(_)) => return None,
    };
    if addresses.len() * ports.len() > RULE_MERGE_LIMIT {
        return None;
    }
    let elements = addresses
        .iter()
        .flat_map(|address| ports.iter().map(move |range| (*address, protocol, *range)))
        .collect();
    Some(Lookup {
        action: rule.action,
        elements,
        hit,
    })
}

fn direction_key(direction: PolicyType) -> u8 {
    match direction {
        PolicyType::Ingress => 0,
        PolicyType::Egress => 1,
    }
}

/// Replies a local egress gateway sends to clients on other nodes are not tracked here: this
/// node saw those flows start only inside the tunnel (UDP to the gateway), so to its conntrack
/// a TCP reply is invalid and would be dropped. Untracked, they reach the gateway's endpoint
/// chain, which accepts them toward pool addresses (`gateway_return_rules`), and the client's
/// node, which tracked the flow when the client sent it, takes them as established. Replies to
/// clients on this node stay tracked: this node saw their flows start.
fn render_gateway_replies(
    ir: &Dataplane,
    local_programs: &[(&LocalEndpoint, &EndpointProgram)],
    ruleset: &mut Ruleset,
) {
    let local_addresses: Vec<IpAddr> = local_programs
        .iter()
        .flat_map(|(_, program)| program.addresses.iter().copied())
        .collect();
    let mut rules = Vec::new();
    for (endpoint, program) in local_programs
        .iter()
        .filter(|(endpoint, _)| endpoint.egress_gateway)
    {
        for family in [IpFamily::V4, IpFamily::V6] {
            let in_family = |address: &&IpAddr| address.is_ipv4() == (family == IpFamily::V4);
            let own: Vec<String> = program
                .addresses
                .iter()
                .filter(in_family)
                .map(IpAddr::to_string)
                .collect();
            let local: Vec<String> = local_addresses
                .iter()
                .filter(in_family)
                .map(IpAddr::to_string)
                .collect();
            let pools: Vec<String> =
                IpNet::aggregate(&ir.pools.iter().map(|pool| pool.cidr).collect::<Vec<_>>())
                    .iter()
                    .filter(|network| family.contains(network))
                    .map(network_text)
                    .collect();
            if own.is_empty() || pools.is_empty() {
                continue;
            }
            let keyword = family.address_keyword();
            rules.push((
                format!(
                    "iifname \"{}\" {keyword} saddr != {{ {} }} {keyword} daddr {{ {} }} {keyword} daddr != {{ {} }} notrack",
                    endpoint.interface,
                    own.join(", "),
                    pools.join(", "),
                    local.join(", ")
                ),
                Some(truncate(
                    &format!("egress gateway {}/{}: replies to other nodes' clients", endpoint.namespace, endpoint.name),
                    120,
                )),
            ));
        }
    }
    if rules.is_empty() {
        return;
    }
    ruleset.chains.insert(
        "gateway-replies".into(),
        ChainState {
            base: Some(BaseChain {
                chain_type: "filter".into(),
                hook: "prerouting".into(),
                // Before conntrack (-200), as `notrack` must be.
                priority: -300,
                policy: Some("accept".into()),
            }),
            rules,
        },
    );
}

/// An egress gateway's replies to its clients: after the gateway un-NATs a reply, it carries
/// the outside peer's source to a client's pod address. That flow was policed at the client
/// (its egress) and at the gateway (the gateway's egress, on the way out), and the node holding
/// the gateway never saw it start (it came through the tunnel), so to this node's conntrack it
/// is new. Accepted before anti-spoofing, and only toward pool addresses: a gateway can forge
/// a source only to pods, never to the outside.
fn gateway_return_rules(
    ir: &Dataplane,
    program: &EndpointProgram,
    rules: &mut Vec<(String, Option<String>)>,
) {
    let mut accepted = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let own: Vec<String> = program
            .addresses
            .iter()
            .filter(|address| address.is_ipv4() == (family == IpFamily::V4))
            .map(IpAddr::to_string)
            .collect();
        let pools: Vec<String> = IpNet::aggregate(&ir.pools.iter().map(|pool| pool.cidr).collect::<Vec<_>>())
            .iter()
            .filter(|network| family.contains(network))
            .map(network_text)
            .collect();
        if own.is_empty() || pools.is_empty() {
            continue;
        }
        let keyword = family.address_keyword();
        accepted.push((
            format!(
                "{keyword} saddr != {{ {} }} {keyword} daddr {{ {} }} accept",
                own.join(", "),
                pools.join(", ")
            ),
            Some("egress gateway: replies to its clients".to_string()),
        ));
    }
    // After the mark reset, before anti-spoofing.
    let position = 1.min(rules.len());
    rules.splice(position..position, accepted);
}

/// An endpoint's chain for one direction: anti-spoofing, then one jump per tier. A tier is a
/// chain of its policies' rules inlined in order (felix jumps to a chain per policy; inlining
/// spares a packet the jump and the "has an earlier policy decided?" check per policy, which
/// dominated the cost of new connections). Allow sets the ACCEPT mark and leaves the tier, Pass
/// leaves it without, Deny drops, and the tier ends with its default action. Tier chains are
/// named by their content, so endpoints with the same policies share them.
fn endpoint_rules(
    ir: &Dataplane,
    program: &EndpointProgram,
    direction: PolicyType,
    rendered: &RenderedPolicies,
    flow_logs: Option<&FlowLogs>,
    ruleset: &mut Ruleset,
) -> Vec<(String, Option<String>)> {
    let mut rules = vec![(format!("meta mark set meta mark & {:#010x}", !MARK_ACCEPT), None)];
    if direction == PolicyType::Egress {
        // Anti-spoofing: a pod sends only from its own addresses.
        for family in [IpFamily::V4, IpFamily::V6] {
            let own: Vec<String> = program
                .addresses
                .iter()
                .filter(|address| address.is_ipv4() == (family == IpFamily::V4))
                .map(IpAddr::to_string)
                .collect();
            let keyword = family.address_keyword();
            let nfproto = if family == IpFamily::V4 { "ipv4" } else { "ipv6" };
            let rule = match own.as_slice() {
                [] => format!("meta nfproto {nfproto} drop"),
                // One address as a plain comparison: an anonymous set per endpoint would add to
                // the kernel's list of sets (see `INLINE_LIMIT`).
                [single] => format!("{keyword} saddr != {single} drop"),
                _ => format!("{keyword} saddr != {{ {} }} drop", own.join(", ")),
            };
            rules.push((rule, Some("anti-spoofing".to_string())));
        }
    }
    for tier in &program.direction(direction).tiers {
        let mut tier_rules: Vec<(String, Option<String>)> = Vec::new();
        let mut run: Vec<&RenderedRule> = Vec::new();
        for rendered_rule in tier
            .policies
            .iter()
            .flat_map(|&policy| &rendered[&(policy, direction_key(direction))])
        {
            let fits = rendered_rule.lookup.as_ref().is_some_and(|lookup| {
                run.first().is_none_or(|first| {
                    let run_lookups = run.iter().filter_map(|member| member.lookup.as_ref());
                    first
                        .lookup
                        .as_ref()
                        .is_some_and(|first| first.action == lookup.action)
                        && run_lookups
                            .clone()
                            .map(|member| member.elements.len())
                            .sum::<usize>()
                            + lookup.elements.len()
                            <= RUN_ELEMENT_LIMIT
                        && !run_lookups.flat_map(|member| &member.elements).any(|element| {
                            lookup
                                .elements
                                .iter()
                                .any(|candidate| overlaps(element, candidate))
                        })
                })
            });
            if !fits {
                flush_run(&mut run, direction, flow_logs, &mut tier_rules, ruleset);
            }
            if rendered_rule.lookup.is_some() {
                run.push(rendered_rule);
            } else {
                tier_rules.extend(rendered_rule.texts.iter().cloned());
            }
        }
        flush_run(&mut run, direction, flow_logs, &mut tier_rules, ruleset);
        if tier.default_action != Action::Pass {
            // Calico attributes a tier's end to the tier's last policy (as `hit_of` does).
            let end = tier
                .policies
                .last()
                .map(|&last| PolicyHit::tier_end(&ir.policies[last].reference, direction));
            let verdict = match (flow_logs, &end) {
                (Some(flow_logs), Some(end)) => {
                    flow_logs.declare_chain(end, ruleset);
                    flow_logs.verdict(end)
                }
                _ => "drop".to_string(),
            };
            tier_rules.push((
                verdict,
                Some(truncate(&format!("end of tier {}", tier.name), 120)),
            ));
        }
        let name = format!("tier-{}-{}", short_hash(&tier_rules), direction_name(direction));
        ruleset.chains.entry(name.clone()).or_insert(ChainState {
            base: None,
            rules: tier_rules,
        });
        rules.push((
            format!("jump {name}"),
            Some(truncate(&format!("tier {}", tier.name), 120)),
        ));
        rules.push((format!("meta mark & {MARK_ACCEPT:#010x} != 0 return"), None));
    }
    // No tier decided: the namespace profile allows.
    match flow_logs {
        Some(flow_logs) => {
            let profile = PolicyHit::profile(&program.namespace, direction);
            rules.push((
                format!("{} return", flow_logs.log(profile.id())),
                Some(truncate(&profile.text(), 120)),
            ));
        }
        None => rules.push(("return".to_string(), None)),
    }
    rules
}

/// Writes a run of rules with the same action: one lookup in a set of all their elements when
/// there are several (they are disjoint, so the order inside the run does not matter), else the
/// rule as it is. With flow logs, the lookup is in a verdict map whose elements send each
/// packet to its own rule's hit chain: still one lookup, and the exact rule is logged.
fn flush_run(
    run: &mut Vec<&RenderedRule>,
    direction: PolicyType,
    flow_logs: Option<&FlowLogs>,
    tier_rules: &mut Vec<(String, Option<String>)>,
    ruleset: &mut Ruleset,
) {
    if run.len() < 2 {
        for rule in run.drain(..) {
            tier_rules.extend(rule.texts.iter().cloned());
        }
        return;
    }
    let lookups: Vec<&Lookup> = run.iter().filter_map(|rule| rule.lookup.as_ref()).collect();
    let action = match lookups[0].action {
        Action::Allow => allow_verdict(),
        _ => "drop".to_string(),
    };
    let key = |(network, protocol, (low, high)): &(IpNet, u8, (u16, u16))| {
        let ports = if low == high {
            low.to_string()
        } else {
            format!("{low}-{high}")
        };
        format!("{} . {protocol} . {ports}", network_text(network))
    };
    let elements: BTreeSet<String> = lookups
        .iter()
        .flat_map(|lookup| &lookup.elements)
        .map(key)
        .collect();
    // Elements are disjoint across the run's rules, so each key has one rule.
    let targets: Option<BTreeMap<String, String>> = flow_logs.map(|flow_logs| {
        let mut targets = BTreeMap::new();
        for lookup in &lookups {
            if lookup.elements.is_empty() {
                continue;
            }
            flow_logs.declare_chain(&lookup.hit, ruleset);
            for element in &lookup.elements {
                targets
                    .entry(key(element))
                    .or_insert_with(|| flow_logs.target(&lookup.hit));
            }
        }
        targets
    });
    let first = run[0]
        .texts
        .first()
        .and_then(|(_, comment)| comment.clone())
        .unwrap_or_default();
    let last = run[run.len() - 1]
        .texts
        .last()
        .and_then(|(_, comment)| comment.clone())
        .unwrap_or_default();
    let comment = truncate(&format!("{} rules, {first} to {last}", run.len()), 120);
    run.clear();
    if elements.is_empty() {
        // None of the rules can match an IPv4 packet.
        return;
    }
    let peer = match direction {
        PolicyType::Egress => "daddr",
        PolicyType::Ingress => "saddr",
    };
    const KEY_TYPE: &str = "ipv4_addr . inet_proto . inet_service";
    let (name, declaration, elements, rule) = match targets {
        None => {
            let name = format!("run-{}-v4", short_hash((&elements, &action)));
            let rule = format!("meta nfproto ipv4 ip {peer} . meta l4proto . th dport @{name} {action}");
            let elements = elements.into_iter().map(|element| (element, None)).collect();
            (name.clone(), Set::new(name, KEY_TYPE), elements, rule)
        }
        Some(targets) => {
            let name = format!("run-{}-v4", short_hash((&targets, "vmap")));
            let rule = format!("meta nfproto ipv4 ip {peer} . meta l4proto . th dport vmap @{name}");
            let elements = targets
                .into_iter()
                .map(|(element, target)| (element, Some(target)))
                .collect();
            (name.clone(), Set::map(name, KEY_TYPE, "verdict"), elements, rule)
        }
    };
    let mut declaration = declaration.interval();
    declaration.comment = Some(comment.clone());
    ruleset.sets.entry(name).or_insert(SetState {
        declaration,
        elements,
    });
    tier_rules.push((rule, Some(comment)));
}

/// What a rule does when flow logs are off (and for Pass and Log rules when they are on).
fn plain_verdict(action: Action, log_label: &str) -> String {
    match action {
        Action::Allow => allow_verdict(),
        Action::Deny => "drop".to_string(),
        Action::Pass => "return".to_string(),
        Action::Log => format!("log prefix \"sluice {}: \"", truncate(log_label, 100)),
    }
}

pub(crate) struct RuleRenderer<'a> {
    /// Per IP set: how rules refer to its IPv4 and IPv6 parts.
    addresses: &'a [[Reference; 2]],
    /// Per named-port set, likewise.
    ports: &'a [[Reference; 2]],
    /// The families local endpoints use.
    families: &'a [IpFamily],
    /// The domain sets declared for this node.
    domain_sets: &'a DeclaredDomainSets,
}

/// Which destination address set of a domain rule the name is the alternative to (as the
/// evaluator's `alternative_to_name`), and the domain set that stands for the name.
#[derive(Clone, Copy)]
struct NameAlternative<'a> {
    replaces: DomainUse,
    set: &'a str,
}

/// A match on a set: `Some(None)` holds always (nothing to write), `None` never holds.
fn set_match(prefix: &str, reference: &Reference, negate: bool) -> Option<Option<String>> {
    let operator = if negate { "!= " } else { "" };
    match (reference, negate) {
        (Reference::Empty, false) => None,
        (Reference::Empty, true) => Some(None),
        (Reference::Inline(text) | Reference::Named(text), _) => {
            Some(Some(format!("{prefix} {operator}{text}")))
        }
    }
}

impl RuleRenderer<'_> {
    /// The nft rules for one Calico rule: one per address family it can match and per
    /// alternative of its port match (numbers, or each named-port set). All carry the same
    /// action, so splitting keeps the rule's meaning.
    fn rule(&self, rule: &CompiledRule, action: &str) -> Vec<String> {
        if rule.l7.is_some() {
            // The kernel cannot see requests, and L7 rules are Allow-only: in the forward
            // hook they never match (fail closed). Connections that reach one are sent to the
            // proxy from prerouting instead (`l7_redirect`).
            return Vec::new();
        }
        self.rule_below_l7(rule, action)
    }

    /// The nft rules for every match of a rule but its L7 match.
    pub(crate) fn rule_below_l7(&self, rule: &CompiledRule, action: &str) -> Vec<String> {
        let mut rendered = Vec::new();
        for &family in self.families {
            if rule
                .ip_version
                .is_some_and(|version| version != if family == IpFamily::V4 { 4 } else { 6 })
            {
                continue;
            }
            // A domain rule matches by its address set or by the learned pair: two nft rules
            // with the same verdict, the address form first.
            let name = self.name_alternative(rule);
            for alternative in std::iter::once(None).chain(name.map(Some)) {
                let Some(common) = self.common_matches(rule, family, alternative) else {
                    continue;
                };
                let source_ports = self.port_alternatives(&rule.source, family, "saddr", "sport");
                let destination_ports = self.port_alternatives(&rule.destination, family, "daddr", "dport");
                for source in &source_ports {
                    for destination in &destination_ports {
                        let parts: Vec<&str> = common
                            .iter()
                            .chain(source)
                            .chain(destination)
                            .map(String::as_str)
                            .collect();
                        rendered.push(format!("{} {action}", parts.join(" ")));
                    }
                }
            }
        }
        rendered
    }

    /// The name form of a domain rule: `None` for other rules, for ignored domains, for a rule
    /// whose alternative set is absent (its addresses always match, as in the evaluator) and
    /// for a domain set this node does not declare (no local endpoint uses it in egress).
    fn name_alternative(&self, rule: &CompiledRule) -> Option<NameAlternative<'_>> {
        let domains = rule.domains?;
        let alternative = match domains.usage {
            DomainUse::Only => rule.destination.nets,
            DomainUse::OrSelector => rule.destination.selector,
            DomainUse::Ignored => return None,
        };
        alternative?;
        Some(NameAlternative {
            replaces: domains.usage,
            set: self.domain_sets.get(&domains.set)?,
        })
    }

    /// Matches that do not depend on port alternatives; `None` if the rule cannot match this
    /// family.
    fn common_matches(
        &self,
        rule: &CompiledRule,
        family: IpFamily,
        name: Option<NameAlternative<'_>>,
    ) -> Option<Vec<String>> {
        let mut parts = vec![format!(
            "meta nfproto {}",
            if family == IpFamily::V4 { "ipv4" } else { "ipv6" }
        )];
        let icmp_protocol = if family == IpFamily::V4 { 1 } else { 58 };
        if let Some(protocol) = rule.protocol {
            if matches!(protocol, 1 | 58) && protocol != icmp_protocol {
                return None;
            }
            parts.push(format!("meta l4proto {protocol}"));
        }
        if let Some(protocol) = rule.not_protocol {
            parts.push(format!("meta l4proto != {protocol}"));
        }
        let icmp_keyword = if family == IpFamily::V4 { "icmp" } else { "icmpv6" };
        if let Some(icmp) = &rule.icmp {
            if let Some(icmp_type) = icmp.icmp_type {
                parts.push(format!("{icmp_keyword} type {icmp_type}"));
            }
            if let Some(code) = icmp.code {
                parts.push(format!("{icmp_keyword} code {code}"));
            }
        }
        if let Some(icmp) = &rule.not_icmp {
            match (icmp.icmp_type, icmp.code) {
                // nft takes a concatenation only against a set: `!= 8 . 0` is refused.
                (Some(icmp_type), Some(code)) => parts.push(format!(
                    "{icmp_keyword} type . {icmp_keyword} code != {{ {icmp_type} . {code} }}"
                )),
                (Some(icmp_type), None) => parts.push(format!("{icmp_keyword} type != {icmp_type}")),
                _ => {}
            }
        }
        let keyword = family.address_keyword();
        for (peer, direction) in [(&rule.source, "saddr"), (&rule.destination, "daddr")] {
            let prefix = format!("{keyword} {direction}");
            let replaced =
                |usage: DomainUse| direction == "daddr" && name.is_some_and(|name| name.replaces == usage);
            let nets = if replaced(DomainUse::Only) {
                None
            } else {
                peer.nets
            };
            let selector = if replaced(DomainUse::OrSelector) {
                None
            } else {
                peer.selector
            };
            for (id, negate) in [
                (nets, false),
                (selector, false),
                (peer.not_nets, true),
                (peer.not_selector, true),
            ] {
                if let Some(id) = id {
                    parts.extend(set_match(
                        &prefix,
                        &self.addresses[id as usize][family.index()],
                        negate,
                    )?);
                }
            }
        }
        if let Some(name) = name {
            // The pair's first half is the endpoint's own address: egress rules only.
            parts.push(format!(
                "{keyword} saddr . {keyword} daddr @{}",
                domain_set_name(name.set, family)
            ));
        }
        Some(parts)
    }

    /// A match on a named-port set. nft compares a concatenation only with a set, so a set of
    /// one (address, protocol, port) becomes three comparisons, or when negated an anonymous
    /// set of one.
    fn named_port_match(
        &self,
        family: IpFamily,
        address: &str,
        port: &str,
        id: u32,
        negate: bool,
    ) -> Option<Option<String>> {
        let keyword = family.address_keyword();
        let tuple = format!("{keyword} {address} . meta l4proto . th {port}");
        match (&self.ports[id as usize][family.index()], negate) {
            (Reference::Inline(single), false) => {
                let parts: Vec<&str> = single.split(" . ").collect();
                Some(Some(format!(
                    "{keyword} {address} {} meta l4proto {} th {port} {}",
                    parts[0], parts[1], parts[2]
                )))
            }
            (Reference::Inline(single), true) => Some(Some(format!("{tuple} != {{ {single} }}"))),
            (reference, negate) => set_match(&tuple, reference, negate),
        }
    }

    /// Each alternative is a list of matches; the rule matches if any alternative does. No
    /// alternative at all means the ports can never match.
    fn port_alternatives(
        &self,
        peer: &PeerMatch,
        family: IpFamily,
        address: &str,
        port: &str,
    ) -> Vec<Vec<String>> {
        let mut negative = Vec::new();
        if let Some(not_ports) = &peer.not_ports {
            if !not_ports.ranges.is_empty() {
                negative.push(format!("th {port} != {}", ranges_text(not_ports)));
            }
            for id in &not_ports.named {
                negative.extend(self.named_port_match(family, address, port, *id, true).flatten());
            }
        }
        let Some(ports) = &peer.ports else {
            return vec![negative];
        };
        let mut alternatives = Vec::new();
        if !ports.ranges.is_empty() {
            let mut alternative = negative.clone();
            alternative.push(format!("th {port} {}", ranges_text(ports)));
            alternatives.push(alternative);
        }
        for id in &ports.named {
            if let Some(matched) = self.named_port_match(family, address, port, *id, false) {
                let mut alternative = negative.clone();
                alternative.extend(matched);
                alternatives.push(alternative);
            }
        }
        alternatives
    }
}

fn ranges_text(ports: &PortMatch) -> String {
    // The IR keeps ranges merged, as nft rejects overlapping intervals in one set. One range is
    // a plain comparison: an anonymous set would add to the kernel's list of sets.
    let items: Vec<String> = ports
        .ranges
        .iter()
        .map(|(low, high)| {
            if low == high {
                low.to_string()
            } else {
                format!("{low}-{high}")
            }
        })
        .collect();
    match items.as_slice() {
        [single] => single.clone(),
        _ => format!("{{ {} }}", items.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn comments_are_cut_by_bytes_at_character_boundaries() {
        let long = "ü".repeat(100);
        let cut = truncate(&long, 120);
        assert_eq!(cut.len(), 120);
        assert_eq!(truncate("é\"x", 2), "é");
        assert_eq!(truncate("say \"hi\"", 120), "say 'hi'");
    }
}
