//! A compact index of the compiled rules that the evaluator scans first.
//!
//! A verdict checks tens of rules, and a full [`CompiledRule`] spans two cache lines; scanning
//! them is bound by memory, not arithmetic. Each rule therefore also gets a 24-byte
//! [`RuleSummary`] holding a *necessary condition* for it to match (protocol, IP version, the
//! address sets, the destination port span), stored contiguously per policy and direction.
//! Rules whose summary fails are skipped without touching the full rule; rules whose summary is
//! `exact` need no further check. The summary is derived from the IR and adds no meaning.

use sluice_api::values::PolicyType;

use crate::ir::{CompiledPolicy, CompiledRule, DomainUse, IpSetId, PeerMatch};

/// No set: the side is not restricted by this kind of match.
pub const NO_SET: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSummary {
    /// 0 means any protocol (0 is never a valid rule protocol).
    pub protocol: u8,
    /// 0 means any IP version.
    pub ip_version: u8,
    /// The summary alone decides: there is nothing else in the rule to check.
    pub exact: bool,
    pub source_selector: u32,
    pub source_nets: u32,
    pub destination_selector: u32,
    pub destination_nets: u32,
    /// The rule matches destination ports, so a packet without one cannot match.
    pub destination_ports: bool,
    /// Every port the rule's destination ports can match lies in this span.
    pub destination_port_low: u16,
    pub destination_port_high: u16,
}

/// Summaries of every rule, with the range each policy and direction occupies.
#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    pub summaries: Vec<RuleSummary>,
    /// Per policy: [ingress range start, ingress end, egress start, egress end].
    pub ranges: Vec<[u32; 4]>,
}

impl RuleIndex {
    pub fn new(policies: &[CompiledPolicy]) -> Self {
        let mut index = RuleIndex::default();
        for policy in policies {
            let mut range = [0u32; 4];
            for (slot, direction) in [(0, PolicyType::Ingress), (2, PolicyType::Egress)] {
                range[slot] = index.position();
                index
                    .summaries
                    .extend(policy.rules(direction).iter().map(summarise));
                range[slot + 1] = index.position();
            }
            index.ranges.push(range);
        }
        index
    }

    fn position(&self) -> u32 {
        u32::try_from(self.summaries.len()).expect("fewer than 2^32 rules")
    }

    /// The summaries of one policy's rules in one direction, in rule order.
    #[inline]
    pub fn rules(&self, policy: usize, direction: PolicyType) -> &[RuleSummary] {
        let range = &self.ranges[policy];
        let (start, end) = match direction {
            PolicyType::Ingress => (range[0], range[1]),
            PolicyType::Egress => (range[2], range[3]),
        };
        &self.summaries[start as usize..end as usize]
    }
}

fn set(id: Option<IpSetId>) -> u32 {
    id.unwrap_or(NO_SET)
}

fn summarise(rule: &CompiledRule) -> RuleSummary {
    let (destination_port_low, destination_port_high, simple_ports) = match &rule.destination.ports {
        None => (0, u16::MAX, true),
        // One range is summarised exactly; several by their span.
        Some(ports) if ports.named.is_empty() && !ports.ranges.is_empty() => {
            let low = ports.ranges.iter().map(|range| range.0).min().unwrap_or(0);
            let high = ports.ranges.iter().map(|range| range.1).max().unwrap_or(u16::MAX);
            (low, high, ports.ranges.len() == 1)
        }
        // Named ports can be any number.
        Some(_) => (0, u16::MAX, false),
    };
    let only_sets =
        |peer: &PeerMatch| peer.not_nets.is_none() && peer.not_selector.is_none() && peer.not_ports.is_none();
    // A domain rule needs the destination's name checked, and the address set the name is the
    // alternative to (a `domains` rule's nets, a network-set domain rule's selector) is no
    // longer necessary.
    let domains = rule.domains.map(|domains| domains.usage);
    let names_matter = matches!(domains, Some(DomainUse::Only | DomainUse::OrSelector));
    let destination_selector = if domains == Some(DomainUse::OrSelector) {
        None
    } else {
        rule.destination.selector
    };
    let destination_nets = if domains == Some(DomainUse::Only) {
        None
    } else {
        rule.destination.nets
    };
    let exact = simple_ports
        && !names_matter
        && rule.not_protocol.is_none()
        && rule.icmp.is_none()
        && rule.not_icmp.is_none()
        && rule.l7.is_none()
        && rule.source.ports.is_none()
        && only_sets(&rule.source)
        && only_sets(&rule.destination);
    RuleSummary {
        protocol: rule.protocol.unwrap_or(0),
        ip_version: rule.ip_version.unwrap_or(0),
        exact,
        source_selector: set(rule.source.selector),
        source_nets: set(rule.source.nets),
        destination_selector: set(destination_selector),
        destination_nets: set(destination_nets),
        destination_ports: rule.destination.ports.is_some(),
        destination_port_low,
        destination_port_high,
    }
}
