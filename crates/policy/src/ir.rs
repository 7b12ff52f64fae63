//! The Dataplane IR: a plain value that says, per endpoint and direction, which tiers,
//! policies and rules apply, with every address match expressed as a named IP set. The
//! evaluator runs on this value only, and the nftables renderer programs the kernel from the
//! same value, so `explain` and the kernel cannot disagree about what the policy means.

use std::collections::HashMap;
use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};

use ipnet::IpNet;
use serde::Serialize;
use sluice_api::domain::DomainPattern;
use sluice_api::values::{Action, PolicyType};

use crate::ip_set::NetworkLookup;
pub use crate::l7::{L7Match, L7MatchId};

/// Set ids are 32-bit to keep compiled rules small: the evaluator walks many rules per verdict
/// and is bound by how many cache lines they span.
pub type IpSetId = u32;
pub type NamedPortSetId = u32;
pub type DomainSetId = u32;
pub type PolicyId = usize;
pub type EndpointId = usize;

/// Everything the dataplane needs for one set of resources.
#[derive(Debug, Clone, Default)]
pub struct Dataplane {
    pub endpoints: Vec<EndpointProgram>,
    pub policies: Vec<CompiledPolicy>,
    pub ip_sets: Vec<IpSet>,
    pub named_port_sets: Vec<NamedPortSet>,
    /// Distinct lists of domain patterns that egress Allow rules allow (see [`DomainSet`]).
    pub domain_sets: Vec<DomainSet>,
    /// Distinct L7 matches (HTTP or TLS) of rules, by [`L7MatchId`].
    pub l7_matches: Vec<L7Match>,
    /// Every network named by a rule or a network set, for the connectivity matrix.
    pub external_networks: Vec<IpNet>,
    /// Workload pods left out because they have no address yet.
    pub unaddressed_pods: Vec<String>,
    /// IP pools, for source NAT of traffic leaving them.
    pub pools: Vec<PoolProgram>,
    /// Every address each Node lists (InternalIP and the others), by node name: a flow from
    /// one of them to a pod on that node is the node's own, which ingress policy does not police.
    pub node_addresses: std::collections::BTreeMap<String, Vec<IpAddr>>,
    /// Endpoint address → (address slot, endpoint).
    pub(crate) address_slots: FxHashMap<IpAddr, (u32, EndpointId)>,
    /// IP set membership of every endpoint address slot.
    pub(crate) membership: crate::ip_set::Membership,
    /// Compact summaries of `policies`' rules, scanned first by the evaluator.
    pub(crate) rule_index: crate::prefilter::RuleIndex,
    pub(crate) endpoint_by_name: HashMap<(String, String), EndpointId>,
}

impl Dataplane {
    pub fn endpoint_by_address(&self, address: IpAddr) -> Option<&EndpointProgram> {
        self.address_slots
            .get(&address)
            .map(|(_, id)| &self.endpoints[*id])
    }

    pub fn endpoint_by_name(&self, namespace: &str, name: &str) -> Option<&EndpointProgram> {
        self.endpoint_by_name
            .get(&(namespace.to_string(), name.to_string()))
            .map(|id| &self.endpoints[*id])
    }

    /// The L7 match of a rule, if it has one.
    pub fn l7_match(&self, rule: &CompiledRule) -> Option<&L7Match> {
        rule.l7.map(|id| &self.l7_matches[id as usize])
    }

    /// The domain sets an endpoint's egress rules allow, by id: what the DNS learner must
    /// learn for this endpoint (names matching a set's patterns, from the endpoint's own
    /// lookups). Sets reached only from rules where they have no effect are left out.
    pub fn domain_sets_for(&self, endpoint: EndpointId) -> Vec<&DomainSet> {
        let mut ids: Vec<DomainSetId> = self.endpoints[endpoint]
            .egress
            .tiers
            .iter()
            .flat_map(|tier| &tier.policies)
            .flat_map(|policy| &self.policies[*policy].egress)
            .filter_map(|rule| rule.domains)
            .filter(|domains| domains.usage != DomainUse::Ignored)
            .map(|domains| domains.set)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|id| &self.domain_sets[id as usize]).collect()
    }
}

/// What the dataplane needs to know of an IP pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolProgram {
    pub name: String,
    pub cidr: IpNet,
    /// Traffic from the pool to anywhere outside every pool is masqueraded.
    pub nat_outgoing: bool,
    /// Sluice's addition: source-NAT to this address instead of the node's.
    pub nat_address: Option<IpAddr>,
}

/// A workload endpoint (a pod) and the program for each of its directions.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointProgram {
    pub id: EndpointId,
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub addresses: Vec<IpAddr>,
    /// Traffic the endpoint sends.
    pub egress: DirectionProgram,
    /// Traffic the endpoint receives.
    pub ingress: DirectionProgram,
}

impl EndpointProgram {
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn direction(&self, direction: PolicyType) -> &DirectionProgram {
        match direction {
            PolicyType::Ingress => &self.ingress,
            PolicyType::Egress => &self.egress,
        }
    }
}

/// Tiers in order. No tiers means no policy applies in this direction: the namespace profile
/// allows the traffic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirectionProgram {
    pub tiers: Vec<TierProgram>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TierProgram {
    pub name: String,
    /// What happens when a policy of this tier applies but none decides: Deny or Pass.
    pub default_action: Action,
    /// Policies of this tier that apply in this direction, in order.
    pub policies: Vec<PolicyId>,
}

/// Which resource a compiled policy came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyReference {
    /// `NetworkPolicy`, `GlobalNetworkPolicy` or `KubernetesNetworkPolicy`; in a staged IR
    /// ([`crate::compile_staged`]), `StagedNetworkPolicy`, `StagedGlobalNetworkPolicy` or
    /// `StagedKubernetesNetworkPolicy` for the policies a staged Set put there.
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub tier: String,
}

impl std::fmt::Display for PolicyReference {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            "KubernetesNetworkPolicy" => "Kubernetes NetworkPolicy",
            other => other,
        };
        match &self.namespace {
            Some(namespace) => write!(formatter, "{kind} {namespace}/{}", self.name),
            None => write!(formatter, "{kind} {}", self.name),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CompiledPolicy {
    pub id: PolicyId,
    /// Boxed so that a compiled policy is one cache line: the evaluator reads only its rules.
    pub reference: Box<PolicyReference>,
    pub ingress: Vec<CompiledRule>,
    pub egress: Vec<CompiledRule>,
}

impl CompiledPolicy {
    pub fn rules(&self, direction: PolicyType) -> &[CompiledRule] {
        match direction {
            PolicyType::Ingress => &self.ingress,
            PolicyType::Egress => &self.egress,
        }
    }
}

/// One Calico rule with every match compiled. All present matchers must hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompiledRule {
    /// The index of the rule in the resource as written (for a Kubernetes policy, the index of
    /// the Kubernetes rule this Calico rule was converted from).
    pub origin_index: usize,
    pub action: Action,
    /// `ipVersion` as written, else the version the rule's CIDRs imply.
    pub ip_version: Option<u8>,
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    pub source: PeerMatch,
    pub destination: PeerMatch,
    /// The rule's HTTP or TLS match (an index into [`Dataplane::l7_matches`]): the rule
    /// matches only a flow whose L7 view satisfies it, and never one without a view (such rules
    /// are Allow-only, so a reader that sees no requests fails closed).
    pub l7: Option<L7MatchId>,
    /// Domain names the rule's destination allows, and how (see [`DomainUse`]).
    pub domains: Option<DomainMatch>,
}

/// A rule's domain set and what it means there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DomainMatch {
    pub set: DomainSetId,
    pub usage: DomainUse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainUse {
    /// `destination.domains`: the destination must be reached by a name matching the set (and
    /// the address be what that name resolved to); an address alone never matches. The rule's
    /// `destination.nets` is an empty set standing for the addresses learned for those names
    /// (none at compile time), with the name as its alternative.
    Only,
    /// `allowedEgressDomains` of the network sets the destination selector picks, in an egress
    /// Allow rule: the address is in the selector's set, or the name matches the domain set.
    OrSelector,
    /// `allowedEgressDomains` reached from an ingress or a non-Allow rule: no effect, as in
    /// Calico; kept so that `explain` can say so.
    Ignored,
}

/// A distinct, sorted list of domain patterns. The dataplane programs one kernel set per domain
/// set (per endpoint), named after [`DomainSet::name`], filled with what each endpoint learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainSet {
    pub id: DomainSetId,
    /// `d` and 15 hex digits of a hash of the patterns: the same patterns give the same name
    /// in every compile, on every node.
    pub name: String,
    pub patterns: Vec<DomainPattern>,
}

impl DomainSet {
    /// The first pattern that `name` matches.
    pub fn matching(&self, name: &str) -> Option<&DomainPattern> {
        self.patterns.iter().find(|pattern| pattern.matches(name))
    }
}

/// The stable name of a domain set: FNV-1a (64-bit) of the patterns, one a line, in 60 bits.
/// `attempt` > 0 rehashes on the (never yet seen) collision of two different lists.
pub fn domain_set_name(patterns: &[DomainPattern], attempt: u32) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let attempt_text = attempt.to_string();
    let bytes = patterns
        .iter()
        .flat_map(|pattern| pattern.as_str().bytes().chain([b'\n']))
        .chain(attempt_text.bytes().filter(|_| attempt > 0));
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("d{:015x}", hash >> 4)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IcmpMatch {
    pub icmp_type: Option<u8>,
    pub code: Option<u8>,
}

/// Matches on one side (source or destination) of a packet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeerMatch {
    /// The address is in this set (the rule's `nets`).
    pub nets: Option<IpSetId>,
    /// The address is not in this set (`notNets`).
    pub not_nets: Option<IpSetId>,
    /// The address belongs to an endpoint or network set the selector picks.
    pub selector: Option<IpSetId>,
    /// The address does not belong to anything `notSelector` picks.
    pub not_selector: Option<IpSetId>,
    pub ports: Option<Box<PortMatch>>,
    pub not_ports: Option<Box<PortMatch>>,
}

/// Numeric port ranges, or-ed with a named-port set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PortMatch {
    /// Sorted, disjoint and not adjacent (see [`merge_port_ranges`]), as nft sets need them.
    pub ranges: Vec<(u16, u16)>,
    pub named: Vec<NamedPortSetId>,
}

/// Why an IP set exists: what a person reading `explain` or the nft ruleset should see.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum IpSetSource {
    /// The literal networks of a rule.
    Nets,
    /// Endpoints and network sets matching a (rewritten, canonical) selector.
    Selector(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct IpSet {
    pub id: IpSetId,
    pub source: IpSetSource,
    pub members: Vec<IpNet>,
    #[serde(skip)]
    pub lookup: NetworkLookup,
    /// The endpoint address slots that are members (see `AddressSlots`).
    #[serde(skip)]
    pub endpoint_slots: Vec<u32>,
}

impl IpSet {
    /// A stable name, usable as an nft set name.
    pub fn name(&self) -> String {
        format!("set-{}", self.id)
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        self.lookup.contains(address)
    }
}

/// (address, protocol, port) of every endpoint a selector picks that has a named port.
#[derive(Debug, Clone, Serialize)]
pub struct NamedPortSet {
    pub id: NamedPortSetId,
    pub selector: String,
    pub port_name: String,
    pub members: Vec<(IpAddr, u8, u16)>,
    #[serde(skip)]
    pub lookup: FxHashSet<(IpAddr, u8, u16)>,
}

/// Port ranges sorted and merged where they overlap or touch: the fewest ranges that cover the
/// same ports (Calico's `SimplifyPorts` does the same for converted Kubernetes rules).
pub fn merge_port_ranges(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (low, high) in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(low) <= u32::from(last.1) + 1 => last.1 = last.1.max(high),
            _ => merged.push((low, high)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The evaluator walks many rules per verdict and reads a full rule only when its summary
    /// passes; an L7 match is an interned id, so it costs a rule an `Option<u32>`, never the
    /// match itself.
    #[test]
    fn a_compiled_rule_stays_small() {
        let size = std::mem::size_of::<CompiledRule>();
        assert!(size <= 136, "CompiledRule is {size} bytes");
        assert_eq!(std::mem::size_of::<Option<L7MatchId>>(), 8);
    }
}
