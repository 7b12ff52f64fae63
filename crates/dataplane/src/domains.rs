//! Domain-name rules in the kernel: the per-endpoint domain sets the DNS learner fills, the
//! learned elements a full rebuild writes back, and the classification of DNS responses that
//! must be held in the DNS queue.
//!
//! - `<domain set>_v4|v6` (`type ipv4_addr . ipv4_addr; flags timeout`): (endpoint address .
//!   learned address) pairs, added by the agent over netlink with the remaining TTL as timeout.
//!   A rule with `destination.domains` matches `ip saddr . ip daddr @<set>_v4`; the key carries
//!   the endpoint's own address, so one endpoint's lookups never open the door for another and
//!   the tier chains stay shared between endpoints.
//! - `dns_clients_v4|v6`: addresses of local endpoints with domain interests; `dns_servers_v4|v6`
//!   (`address . inet_service`): the trusted servers. The base chain `dns-queue` marks DNS
//!   responses (UDP and TCP) from a trusted server to a client with [`MARK_DNS_QUEUE`]; the
//!   queue tables ([`crate::dns_queue`]) send marked packets to the NFQUEUE the agent listens on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sluice_nft::{BaseChain, Set};
use sluice_policy::Dataplane;
use sluice_policy::ir::{DomainSetId, EndpointProgram};

use crate::render::{ChainState, DynamicElement, IpFamily, Ruleset, SetState, truncate};

/// The NFQUEUE number DNS responses are held in when the configuration names none.
pub const DEFAULT_DNS_QUEUE: u16 = 4000;

/// The packet mark bit that says "DNS response to hold": set by the `dns-queue` chain of the
/// `inet sluice` table, read by the queue tables. Apart from the ACCEPT bit of the filter chains.
pub const MARK_DNS_QUEUE: u32 = 0x0002_0000;

/// The base chain that marks DNS responses to hold.
pub const DNS_QUEUE_CHAIN: &str = "dns-queue";

/// Its priority: postrouting after source NAT (100), where conntrack has undone a service's
/// DNAT on the reply (the source is the server as the client addressed it), after every filter
/// chain (so every policy rule applies as before), and after defragmentation.
pub const DNS_QUEUE_PRIORITY: i32 = 110;

/// The kernel set of a domain set for one family: `<name>_v4` or `<name>_v6`, where `<name>` is
/// [`sluice_policy::ir::DomainSet::name`] (the name the DNS learner's elements carry).
pub fn domain_set_name(set: &str, family: IpFamily) -> String {
    format!("{set}_{}", family.suffix())
}

/// The set of local endpoint addresses whose DNS responses are held.
pub fn dns_clients_set_name(family: IpFamily) -> String {
    format!("dns_clients_{}", family.suffix())
}

/// The set of trusted DNS servers (address . port).
pub fn dns_servers_set_name(family: IpFamily) -> String {
    format!("dns_servers_{}", family.suffix())
}

/// What the renderer needs to know of DNS learning on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRender {
    /// `dnsTrustedServers` as addresses and ports (a `k8s-service:` entry already resolved).
    pub trusted_servers: Vec<SocketAddr>,
    /// The NFQUEUE number the agent listens on.
    pub queue: u16,
    /// What the learner holds now; a full rebuild of the table writes these back.
    pub learned: Vec<LearnedElement>,
}

impl Default for DnsRender {
    fn default() -> DnsRender {
        DnsRender {
            trusted_servers: Vec::new(),
            queue: DEFAULT_DNS_QUEUE,
            learned: Vec::new(),
        }
    }
}

/// One learned element: the endpoint at `endpoint` may reach `destination` through domain
/// set `set` (its [`sluice_policy::ir::DomainSet::name`]) for `remaining` more.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LearnedElement {
    pub set: String,
    pub endpoint: IpAddr,
    pub destination: IpAddr,
    pub remaining: Duration,
}

/// The domain sets declared for this node, by id (only those local endpoints' egress rules use).
pub(crate) type DeclaredDomainSets = BTreeMap<DomainSetId, String>;

/// Declares the domain sets, their learned elements, and the DNS queue classification. Nothing
/// when no local endpoint has a domain interest.
pub(crate) fn render_domains(
    ir: &Dataplane,
    programs: &[&EndpointProgram],
    dns: &DnsRender,
    ruleset: &mut Ruleset,
) -> DeclaredDomainSets {
    let mut declared = DeclaredDomainSets::new();
    // Endpoint address → the domain sets it may fill.
    let mut interests: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for program in programs {
        let sets = ir.domain_sets_for(program.id);
        if sets.is_empty() {
            continue;
        }
        for set in sets {
            declared.insert(set.id, set.name.clone());
            for address in &program.addresses {
                interests.entry(*address).or_default().insert(&set.name);
            }
        }
    }
    if declared.is_empty() {
        return declared;
    }
    for set in declared.keys().map(|id| &ir.domain_sets[*id as usize]) {
        let patterns: Vec<&str> = set.patterns.iter().map(|pattern| pattern.as_str()).collect();
        for family in [IpFamily::V4, IpFamily::V6] {
            let key_type = match family {
                IpFamily::V4 => "ipv4_addr . ipv4_addr",
                IpFamily::V6 => "ipv6_addr . ipv6_addr",
            };
            let mut declaration = Set::new(domain_set_name(&set.name, family), key_type);
            declaration.flags.push("timeout".to_string());
            declaration.comment = Some(truncate(&format!("domains {}", patterns.join(", ")), 120));
            ruleset.dynamic_sets.entry(declaration.name.clone()).or_default();
            ruleset.sets.insert(
                declaration.name.clone(),
                SetState {
                    declaration,
                    elements: BTreeSet::new(),
                },
            );
        }
    }
    // Learned elements of declared sets and local endpoints that still have the interest; a
    // key the kernel would refuse (mixed families) would fail the whole rebuild, so it is left.
    for learned in &dns.learned {
        let wanted = interests
            .get(&learned.endpoint)
            .is_some_and(|sets| sets.contains(learned.set.as_str()));
        let milliseconds = learned.remaining.as_millis();
        if !wanted || learned.endpoint.is_ipv4() != learned.destination.is_ipv4() || milliseconds == 0 {
            continue;
        }
        let name = domain_set_name(&learned.set, IpFamily::of(learned.endpoint));
        if let Some(elements) = ruleset.dynamic_sets.get_mut(&name) {
            elements.insert(DynamicElement {
                key: format!("{} . {}", learned.endpoint, learned.destination),
                timeout: Duration::from_millis(milliseconds.min(u128::from(u64::MAX)) as u64),
            });
        }
    }
    render_queue_classification(&interests, dns, ruleset);
    declared
}

/// The clients and servers sets and the chain that marks DNS responses to hold.
fn render_queue_classification(
    interests: &BTreeMap<IpAddr, BTreeSet<&str>>,
    dns: &DnsRender,
    ruleset: &mut Ruleset,
) {
    let mut rules = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let (address_type, nfproto) = match family {
            IpFamily::V4 => ("ipv4_addr", "ipv4"),
            IpFamily::V6 => ("ipv6_addr", "ipv6"),
        };
        let clients = dns_clients_set_name(family);
        let servers = dns_servers_set_name(family);
        let client_elements = interests
            .keys()
            .filter(|address| IpFamily::of(**address) == family)
            .map(|address| (address.to_string(), None))
            .collect();
        let server_elements = dns
            .trusted_servers
            .iter()
            .filter(|server| IpFamily::of(server.ip()) == family)
            .map(|server| (format!("{} . {}", server.ip(), server.port()), None))
            .collect();
        for (declaration, elements) in [
            (Set::new(clients.clone(), address_type), client_elements),
            (
                Set::new(servers.clone(), format!("{address_type} . inet_service")),
                server_elements,
            ),
        ] {
            ruleset.sets.insert(
                declaration.name.clone(),
                SetState {
                    declaration,
                    elements,
                },
            );
        }
        let keyword = family.address_keyword();
        for protocol in ["udp", "tcp"] {
            rules.push((
                format!(
                    "meta nfproto {nfproto} {keyword} daddr @{clients} {keyword} saddr . {protocol} sport @{servers} meta mark set meta mark | {MARK_DNS_QUEUE:#010x}"
                ),
                Some(format!("DNS response over {protocol} to hold")),
            ));
        }
    }
    ruleset.chains.insert(
        DNS_QUEUE_CHAIN.to_string(),
        ChainState {
            base: Some(BaseChain {
                chain_type: "filter".into(),
                hook: "postrouting".into(),
                priority: DNS_QUEUE_PRIORITY,
                policy: Some("accept".into()),
            }),
            rules,
        },
    );
}
