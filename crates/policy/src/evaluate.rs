//! Verdicts on the IR: is a flow allowed, and which rule (or default) decided.
//!
//! One function walks tiers, policies and rules; it is generic over a [`Tracer`] so batch
//! evaluation records nothing and pays nothing, while `explain` records every step.

use std::net::IpAddr;

use serde::Serialize;
use sluice_api::values::{Action, PolicyType};

use crate::ir::*;
use crate::l7::{FlowL7, L7Finding};
use crate::prefilter::{NO_SET, RuleSummary};

/// One packet's worth of a connection: who sends, who receives, protocol and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// IANA protocol number.
    pub protocol: u8,
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

/// What decided one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Decision {
    /// An Allow or Deny rule matched.
    Rule {
        policy: PolicyId,
        rule_index: usize,
        action: Action,
        tier: usize,
    },
    /// A tier had policies for the endpoint but none decided: the tier's default (Deny).
    TierDefault { tier: usize },
    /// Every applicable tier passed: the namespace profile allows.
    ProfileAfterPass,
    /// No policy applies to the endpoint in this direction: the namespace profile allows.
    NoPolicy,
    /// Ingress from the destination pod's own node (an address its Node lists): not policed,
    /// as in Felix (`felix/rules/static.go`, the filter OUTPUT chain), which is also why kubelet
    /// probes work under default deny. The kernel agrees: the node's own packets leave through
    /// the output hook, which the `inet sluice` table does not hook.
    FromOwnNode,
}

impl Decision {
    pub fn allows(self) -> bool {
        match self {
            Decision::Rule { action, .. } => action == Action::Allow,
            Decision::TierDefault { .. } => false,
            Decision::ProfileAfterPass | Decision::NoPolicy | Decision::FromOwnNode => true,
        }
    }
}

/// The verdict for a flow: egress of the source endpoint and ingress of the destination
/// endpoint, each present when that side is a local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    pub egress: Option<(EndpointId, Decision)>,
    pub ingress: Option<(EndpointId, Decision)>,
}

/// Steps recorded while evaluating, for explanations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum TraceStep {
    Tier {
        tier: String,
    },
    NoRuleMatched {
        policy: PolicyId,
    },
    Logged {
        policy: PolicyId,
        rule_index: usize,
    },
    Passed {
        policy: PolicyId,
        rule_index: usize,
    },
    /// Everything else matched and the rule's HTTP or TLS match held on the flow's L7 view:
    /// `finding` names the method, path, host or server name that allowed it.
    L7Matched {
        policy: PolicyId,
        rule_index: usize,
        finding: L7Finding,
    },
    /// Everything else matched but the rule's HTTP or TLS match did not hold (or the flow has
    /// no L7 view): the rule does not match, and evaluation goes on with the next rule.
    L7NotMatched {
        policy: PolicyId,
        rule_index: usize,
        finding: L7Finding,
    },
    TierPassed {
        tier: String,
    },
    /// The rule matched by the destination's name (not its address): `pattern` allowed `domain`.
    DomainMatched {
        policy: PolicyId,
        rule_index: usize,
        domain: String,
        pattern: String,
    },
    /// Everything but the destination's name matched: the flow had no name, or one the rule's
    /// domains do not match.
    DomainNotMatched {
        policy: PolicyId,
        rule_index: usize,
        domain: Option<String>,
    },
    /// The rule's selectors pick network sets with `allowedEgressDomains`, which have no effect
    /// in an ingress or a non-Allow rule.
    DomainsIgnored {
        policy: PolicyId,
        rule_index: usize,
    },
}

pub trait Tracer {
    /// Whether steps are recorded at all: when not, the evaluator skips the work of finding
    /// them.
    const RECORDS: bool = true;

    fn step(&mut self, step: impl FnOnce() -> TraceStep);
}

/// How a rule's domain condition is checked.
#[derive(Debug, Clone, Copy)]
enum NameTest<'a> {
    /// Against the flow's destination name, if it has one.
    Name(Option<&'a str>),
    /// As if the name matched: does everything else?
    AssumeMatches,
}

/// How a rule's L7 match is checked.
#[derive(Debug, Clone, Copy)]
enum L7Test<'a> {
    /// Against the flow's L7 view, if it has one.
    View(Option<&'a FlowL7>),
    /// As if it held: does everything else?
    AssumeMatches,
}

/// Records nothing.
#[derive(Debug, Default)]
pub struct NoTrace;

impl Tracer for NoTrace {
    const RECORDS: bool = false;

    #[inline]
    fn step(&mut self, _step: impl FnOnce() -> TraceStep) {}
}

impl Tracer for Vec<TraceStep> {
    fn step(&mut self, step: impl FnOnce() -> TraceStep) {
        self.push(step());
    }
}

impl Dataplane {
    /// The verdict for a flow, recording nothing: the fast path for batches. The flow has no
    /// destination name, so rules that allow only domain names do not match it.
    pub fn evaluate(&self, flow: &Flow) -> Verdict {
        self.evaluate_traced(flow, None, None, &mut NoTrace, &mut NoTrace)
    }

    /// The verdict for a flow whose destination address was resolved from `destination_domain`
    /// (the caller vouches for that pairing, as the DNS learner does in the kernel).
    pub fn evaluate_with_domain(&self, flow: &Flow, destination_domain: Option<&str>) -> Verdict {
        self.evaluate_traced(flow, destination_domain, None, &mut NoTrace, &mut NoTrace)
    }

    /// The verdict for a flow whose request (HTTP) or ClientHello (TLS) is `l7`: rules with an
    /// L7 match match only when it holds on `l7` (without one, they never match).
    pub fn evaluate_with_l7(
        &self,
        flow: &Flow,
        destination_domain: Option<&str>,
        l7: Option<&FlowL7>,
    ) -> Verdict {
        self.evaluate_traced(flow, destination_domain, l7, &mut NoTrace, &mut NoTrace)
    }

    /// The verdict with the egress and ingress steps recorded.
    pub fn evaluate_traced<T: Tracer>(
        &self,
        flow: &Flow,
        destination_domain: Option<&str>,
        l7: Option<&FlowL7>,
        egress_trace: &mut T,
        ingress_trace: &mut T,
    ) -> Verdict {
        let source = self.address_slots.get(&flow.source).copied();
        let destination = self.address_slots.get(&flow.destination).copied();
        let slots = (source.map(|(slot, _)| slot), destination.map(|(slot, _)| slot));
        let egress = source.map(|(_, id)| {
            let endpoint = &self.endpoints[id];
            (
                id,
                self.evaluate_direction(
                    endpoint,
                    PolicyType::Egress,
                    flow,
                    (destination_domain, l7),
                    slots,
                    egress_trace,
                ),
            )
        });
        // Return traffic of an allowed flow is allowed by conntrack; a flow is judged in the
        // direction it was opened.
        let ingress = destination.map(|(_, id)| {
            let endpoint = &self.endpoints[id];
            if self.is_own_node(endpoint, flow.source) {
                return (id, Decision::FromOwnNode);
            }
            (
                id,
                self.evaluate_direction(
                    endpoint,
                    PolicyType::Ingress,
                    flow,
                    (destination_domain, l7),
                    slots,
                    ingress_trace,
                ),
            )
        });
        let allowed = egress.is_none_or(|(_, decision)| decision.allows())
            && ingress.is_none_or(|(_, decision)| decision.allows());
        Verdict {
            allowed,
            egress,
            ingress,
        }
    }

    /// Whether `source` is an address of the node `endpoint` runs on.
    fn is_own_node(&self, endpoint: &EndpointProgram, source: IpAddr) -> bool {
        endpoint
            .node
            .as_ref()
            .and_then(|node| self.node_addresses.get(node))
            .is_some_and(|addresses| addresses.contains(&source))
    }

    fn evaluate_direction<T: Tracer>(
        &self,
        endpoint: &EndpointProgram,
        direction: PolicyType,
        flow: &Flow,
        (domain, l7): (Option<&str>, Option<&FlowL7>),
        slots: (Option<u32>, Option<u32>),
        trace: &mut T,
    ) -> Decision {
        let program = endpoint.direction(direction);
        if program.tiers.is_empty() {
            return Decision::NoPolicy;
        }
        'tiers: for (tier_index, tier) in program.tiers.iter().enumerate() {
            trace.step(|| TraceStep::Tier {
                tier: tier.name.clone(),
            });
            for &policy in &tier.policies {
                let summaries = self.rule_index.rules(policy, direction);
                for (rule_index, summary) in summaries.iter().enumerate() {
                    if T::RECORDS {
                        let rule = &self.policies[policy].rules(direction)[rule_index];
                        if rule
                            .domains
                            .is_some_and(|domains| domains.usage == DomainUse::Ignored)
                        {
                            trace.step(|| TraceStep::DomainsIgnored { policy, rule_index });
                        }
                    }
                    if !self.summary_matches(summary, flow, slots) {
                        continue;
                    }
                    let rule = &self.policies[policy].rules(direction)[rule_index];
                    let name = NameTest::Name(domain);
                    if !summary.exact && !self.rule_matches(rule, flow, name, L7Test::View(l7), slots) {
                        if T::RECORDS {
                            self.trace_miss(rule, flow, (domain, l7), slots, (policy, rule_index), trace);
                        }
                        continue;
                    }
                    if T::RECORDS {
                        if let Some((domain, pattern)) = self.matched_by_name(rule, flow, domain, slots) {
                            trace.step(|| TraceStep::DomainMatched {
                                policy,
                                rule_index,
                                domain: domain.to_string(),
                                pattern: pattern.to_string(),
                            });
                        }
                        if let Some(l7_match) = self.l7_match(rule) {
                            trace.step(|| TraceStep::L7Matched {
                                policy,
                                rule_index,
                                finding: l7_match.check(self.rule_domain_set(rule), l7),
                            });
                        }
                    }
                    match rule.action {
                        Action::Allow | Action::Deny => {
                            return Decision::Rule {
                                policy,
                                rule_index,
                                action: rule.action,
                                tier: tier_index,
                            };
                        }
                        Action::Log => trace.step(|| TraceStep::Logged { policy, rule_index }),
                        Action::Pass => {
                            trace.step(|| TraceStep::Passed { policy, rule_index });
                            continue 'tiers;
                        }
                    }
                }
                trace.step(|| TraceStep::NoRuleMatched { policy });
            }
            if tier.default_action == Action::Pass {
                trace.step(|| TraceStep::TierPassed {
                    tier: tier.name.clone(),
                });
                continue;
            }
            return Decision::TierDefault { tier: tier_index };
        }
        Decision::ProfileAfterPass
    }

    /// Why a rule whose other matches hold did not match: its destination's name
    /// ([`TraceStep::DomainNotMatched`]) or its L7 match ([`TraceStep::L7NotMatched`]).
    fn trace_miss<T: Tracer>(
        &self,
        rule: &CompiledRule,
        flow: &Flow,
        (domain, l7): (Option<&str>, Option<&FlowL7>),
        slots: (Option<u32>, Option<u32>),
        (policy, rule_index): (PolicyId, usize),
        trace: &mut T,
    ) {
        let name = NameTest::Name(domain);
        if rule.domains.is_some()
            && self.rule_matches(rule, flow, NameTest::AssumeMatches, L7Test::AssumeMatches, slots)
            && !self.rule_matches(rule, flow, name, L7Test::AssumeMatches, slots)
        {
            trace.step(|| TraceStep::DomainNotMatched {
                policy,
                rule_index,
                domain: domain.map(str::to_string),
            });
        } else if let Some(l7_match) = self.l7_match(rule)
            && self.rule_matches(rule, flow, name, L7Test::AssumeMatches, slots)
        {
            trace.step(|| TraceStep::L7NotMatched {
                policy,
                rule_index,
                finding: l7_match.check(self.rule_domain_set(rule), l7),
            });
        }
    }

    /// The domain set a TLS match with `matchDomains` checks against: the rule's own
    /// `destination.domains`.
    fn rule_domain_set(&self, rule: &CompiledRule) -> Option<&DomainSet> {
        rule.domains
            .filter(|domains| domains.usage == DomainUse::Only)
            .map(|domains| &self.domain_sets[domains.set as usize])
    }

    /// Whether the rule's L7 match (if any) holds.
    fn l7_holds(&self, rule: &CompiledRule, l7: L7Test<'_>) -> bool {
        match (self.l7_match(rule), l7) {
            (None, _) | (Some(_), L7Test::AssumeMatches) => true,
            (Some(l7_match), L7Test::View(view)) => l7_match.holds(self.rule_domain_set(rule), view),
        }
    }

    /// The necessary condition of a rule from its summary (see `prefilter`).
    #[inline]
    fn summary_matches(&self, summary: &RuleSummary, flow: &Flow, slots: (Option<u32>, Option<u32>)) -> bool {
        let family = if flow.destination.is_ipv4() { 4 } else { 6 };
        if (summary.protocol != 0 && summary.protocol != flow.protocol)
            || (summary.ip_version != 0 && summary.ip_version != family)
        {
            return false;
        }
        if summary.destination_ports {
            match flow.destination_port {
                Some(port)
                    if (summary.destination_port_low..=summary.destination_port_high).contains(&port) => {}
                _ => return false,
            }
        }
        let in_set = |set: u32, address: IpAddr, slot: Option<u32>| {
            set == NO_SET
                || match slot {
                    Some(slot) => self.membership.contains(slot, set as usize),
                    None => self.ip_sets[set as usize].contains(address),
                }
        };
        in_set(summary.destination_selector, flow.destination, slots.1)
            && in_set(summary.destination_nets, flow.destination, slots.1)
            && in_set(summary.source_selector, flow.source, slots.0)
            && in_set(summary.source_nets, flow.source, slots.0)
    }

    /// When a rule that matched did so by the destination's name: the name and the pattern.
    fn matched_by_name<'a>(
        &'a self,
        rule: &CompiledRule,
        flow: &Flow,
        domain: Option<&'a str>,
        slots: (Option<u32>, Option<u32>),
    ) -> Option<(&'a str, &'a sluice_api::domain::DomainPattern)> {
        let domains = rule.domains?;
        let addresses = alternative_to_name(rule)?;
        if self.in_set(addresses, flow.destination, slots.1) != Some(false) {
            return None;
        }
        let domain = domain?;
        Some((domain, self.domain_sets[domains.set as usize].matching(domain)?))
    }

    /// Whether the address is in the set (`None` when there is no set).
    #[inline]
    fn in_set(&self, id: Option<IpSetId>, address: IpAddr, slot: Option<u32>) -> Option<bool> {
        id.map(|id| match slot {
            Some(slot) => self.membership.contains(slot, id as usize),
            None => self.ip_sets[id as usize].contains(address),
        })
    }

    /// The rule's domain condition on the destination, beside its other matches. A name that
    /// matches is what lets a `domains` rule match; a network-set domain rule matches by the
    /// selector's addresses or by the name.
    fn domains_match(&self, rule: &CompiledRule, flow: &Flow, name: NameTest<'_>, slot: Option<u32>) -> bool {
        let Some(domains) = rule.domains else {
            return true;
        };
        let Some(addresses) = alternative_to_name(rule) else {
            return true;
        };
        let name_matches = || match name {
            NameTest::AssumeMatches => true,
            NameTest::Name(name) => {
                name.is_some_and(|name| self.domain_sets[domains.set as usize].matching(name).is_some())
            }
        };
        self.in_set(addresses, flow.destination, slot) != Some(false) || name_matches()
    }

    /// `slots` are the endpoint address slots of source and destination, when they are pods.
    fn rule_matches(
        &self,
        rule: &CompiledRule,
        flow: &Flow,
        name: NameTest<'_>,
        l7: L7Test<'_>,
        slots: (Option<u32>, Option<u32>),
    ) -> bool {
        // The L7 match is the last condition: checked only when the rest holds.
        self.rule_matches_below_l7(rule, flow, name, slots) && self.l7_holds(rule, l7)
    }

    /// Every match of the rule but its L7 match.
    fn rule_matches_below_l7(
        &self,
        rule: &CompiledRule,
        flow: &Flow,
        name: NameTest<'_>,
        slots: (Option<u32>, Option<u32>),
    ) -> bool {
        let family = if flow.destination.is_ipv4() { 4 } else { 6 };
        if rule.ip_version.is_some_and(|version| version != family)
            || rule.protocol.is_some_and(|protocol| protocol != flow.protocol)
            || rule
                .not_protocol
                .is_some_and(|protocol| protocol == flow.protocol)
        {
            return false;
        }
        // As in the kernel, where `icmp type` and `icmp type != …` both carry an implicit
        // match on the family's ICMP protocol: an ICMP or notICMP match only matches ICMP.
        let is_icmp = flow.protocol == if family == 4 { 1 } else { 58 };
        if let Some(icmp) = &rule.icmp
            && !(is_icmp && icmp_matches(icmp, flow))
        {
            return false;
        }
        if let Some(icmp) = &rule.not_icmp
            && (!is_icmp || icmp_matches(icmp, flow))
        {
            return false;
        }
        let source = self.peer_matches(
            &rule.source,
            flow.source,
            slots.0,
            flow.protocol,
            flow.source_port,
            Skip::Nothing,
        );
        // Rules without domains (nearly all) take the path they took before domains existed.
        let Some(domains) = rule.domains else {
            return source
                && self.peer_matches(
                    &rule.destination,
                    flow.destination,
                    slots.1,
                    flow.protocol,
                    flow.destination_port,
                    Skip::Nothing,
                );
        };
        // In a domain rule, one destination address set is the alternative to the name:
        // `domains_match` checks it.
        let skip = match domains.usage {
            DomainUse::Only => Skip::Nets,
            DomainUse::OrSelector => Skip::Selector,
            DomainUse::Ignored => Skip::Nothing,
        };
        source
            && self.peer_matches(
                &rule.destination,
                flow.destination,
                slots.1,
                flow.protocol,
                flow.destination_port,
                skip,
            )
            && self.domains_match(rule, flow, name, slots.1)
    }

    fn peer_matches(
        &self,
        peer: &PeerMatch,
        address: IpAddr,
        slot: Option<u32>,
        protocol: u8,
        port: Option<u16>,
        skip: Skip,
    ) -> bool {
        let in_set = |id: Option<IpSetId>| self.in_set(id, address, slot);
        if (skip != Skip::Nets && in_set(peer.nets) == Some(false))
            || in_set(peer.not_nets) == Some(true)
            || (skip != Skip::Selector && in_set(peer.selector) == Some(false))
            || in_set(peer.not_selector) == Some(true)
        {
            return false;
        }
        if let Some(ports) = &peer.ports
            && !port_matches(self, ports, address, protocol, port)
        {
            return false;
        }
        if let Some(ports) = &peer.not_ports
            && port_matches(self, ports, address, protocol, port)
        {
            return false;
        }
        true
    }
}

/// A positive address set of a peer that a domain rule checks itself, as the alternative to
/// the destination's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Nothing,
    Nets,
    Selector,
}

/// The destination address set a domain rule's name is the alternative to: the (empty, until
/// the node learns) `nets` of a `domains` rule, or the selector of a network-set domain rule.
/// `None` when the rule's name plays no part.
fn alternative_to_name(rule: &CompiledRule) -> Option<Option<IpSetId>> {
    match rule.domains?.usage {
        DomainUse::Only => Some(rule.destination.nets),
        DomainUse::OrSelector => Some(rule.destination.selector),
        DomainUse::Ignored => None,
    }
}

fn icmp_matches(icmp: &IcmpMatch, flow: &Flow) -> bool {
    icmp.icmp_type.is_none_or(|wanted| flow.icmp_type == Some(wanted))
        && icmp.code.is_none_or(|wanted| flow.icmp_code == Some(wanted))
}

fn port_matches(
    dataplane: &Dataplane,
    ports: &PortMatch,
    address: IpAddr,
    protocol: u8,
    port: Option<u16>,
) -> bool {
    let Some(port) = port else {
        return false;
    };
    ports
        .ranges
        .iter()
        .any(|&(low, high)| (low..=high).contains(&port))
        || ports.named.iter().any(|&id| {
            dataplane.named_port_sets[id as usize]
                .lookup
                .contains(&(address, protocol, port))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefilter::RuleIndex;

    /// Deterministic pseudo-random numbers for generating rules and flows.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }

        fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
            choices[self.below(choices.len() as u64) as usize]
        }
    }

    fn random_rule(random: &mut Random) -> String {
        let protocol = random.pick(&[
            "",
            "protocol: TCP",
            "protocol: UDP",
            "protocol: ICMP",
            "protocol: 132",
        ]);
        let ports = protocol == "protocol: TCP" || protocol == "protocol: UDP";
        let mut destination = Vec::new();
        let mut source = Vec::new();
        for side in [&mut destination, &mut source] {
            side.push(
                random
                    .pick(&[
                        "",
                        "selector: \"app == 'a'\"",
                        "selector: \"app in {'a', 'b'}\"",
                        "selector: \"has(app)\"",
                    ])
                    .to_string(),
            );
            side.push(
                random
                    .pick(&[
                        "",
                        "nets: [10.0.0.0/24]",
                        "nets: [10.0.0.2/32, 192.0.2.0/24]",
                        "nets: [0.0.0.0/0]",
                    ])
                    .to_string(),
            );
            side.push(
                random
                    .pick(&["", "", "notNets: [10.0.0.1/32]", "notSelector: \"app == 'b'\""])
                    .to_string(),
            );
        }
        if ports {
            destination.push(
                random
                    .pick(&[
                        "",
                        "ports: [80]",
                        "ports: [80, 443]",
                        "ports: ['1000:2000']",
                        "ports: [http]",
                        "notPorts: [81]",
                    ])
                    .to_string(),
            );
            source.push(random.pick(&["", "", "", "ports: [40000]"]).to_string());
        }
        let not_protocol = if protocol.is_empty() {
            random.pick(&["", "notProtocol: UDP"])
        } else {
            ""
        };
        let icmp = if protocol == "protocol: ICMP" {
            random.pick(&["", "icmp: {type: 8}", "notICMP: {type: 0}"])
        } else {
            ""
        };
        let side = |fields: &[String]| {
            let fields: Vec<&str> = fields
                .iter()
                .map(String::as_str)
                .filter(|field| !field.is_empty())
                .collect();
            format!("{{{}}}", fields.join(", "))
        };
        // Some rules allow by name only (validation keeps nets and selector out of them).
        if random.below(6) == 0 {
            destination.retain(|field| field.starts_with("ports") || field.starts_with("notPorts"));
            destination.push(
                random
                    .pick(&["domains: [a.example]", "domains: ['*.example', b.example]"])
                    .to_string(),
            );
        }
        // Some rules match requests or server names too; they never match by summary alone.
        let has_domains = destination.iter().any(|field| field.starts_with("domains"));
        let l7 = match (protocol, random.below(5)) {
            ("" | "protocol: TCP", 0) => random.pick(&[
                "http: {methods: [GET]}",
                "http: {paths: [{prefix: /v1/}], hosts: [a.example]}",
            ]),
            ("protocol: TCP", 1) if has_domains => "tls: {matchDomains: true}",
            ("protocol: TCP", 1) => "tls: {serverNames: ['*.example']}",
            _ => "",
        };
        let extras: Vec<&str> = [protocol, not_protocol, icmp, l7]
            .into_iter()
            .filter(|field| !field.is_empty())
            .collect();
        format!(
            "    - {{action: Allow{}{} source: {}, destination: {}}}",
            if extras.is_empty() { "" } else { ", " },
            if extras.is_empty() {
                ",".to_string()
            } else {
                format!("{},", extras.join(", "))
            },
            side(&source),
            side(&destination)
        )
    }

    /// The summaries are a necessary condition for every rule, and an exact one when they say so.
    #[test]
    fn rule_summaries_never_change_a_match() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let mut manifest = String::from(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: default, labels: {app: a}}\nspec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\nstatus: {podIP: 10.0.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: default, labels: {app: b}}\nstatus: {podIP: 10.0.0.2}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: partners, labels: {app: b}}\nspec: {nets: [198.51.100.0/25], allowedEgressDomains: ['*.example']}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: generated}\nspec:\n  types: [Egress]\n  egress:\n",
        );
        for _ in 0..400 {
            manifest.push_str(&random_rule(&mut random));
            manifest.push('\n');
        }
        let resources = sluice_api::load_str("generated.yaml", &manifest)
            .unwrap_or_else(|errors| panic!("{errors}\n{manifest}"));
        let dataplane = crate::compile(&resources);
        let index = RuleIndex::new(&dataplane.policies);
        let rules = dataplane.policies[0].rules(PolicyType::Egress);
        let summaries = index.rules(0, PolicyType::Egress);
        assert_eq!(rules.len(), 400);
        let addresses = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.0.2.9", "198.51.100.1"];
        let mut exact_checks = 0;
        let mut domain_matches = 0;
        let (mut l7_matches, mut l7_misses) = (0, 0);
        let request = |method: &str, path: &str, host: &str| crate::l7::FlowL7 {
            http: Some(crate::l7::HttpRequest {
                method: method.into(),
                path: path.into(),
                host: Some(host.into()),
            }),
            server_name: None,
        };
        let server_name = |name: &str| crate::l7::FlowL7 {
            http: None,
            server_name: Some(name.into()),
        };
        let views = [
            None,
            Some(request("GET", "/v1/x", "a.example")),
            Some(request("POST", "/v1/", "c.test")),
            Some(server_name("a.example")),
            Some(server_name("x.b.example")),
            Some(server_name("c.test")),
        ];
        for _ in 0..4000 {
            let protocol = [6, 17, 1, 132][random.below(4) as usize];
            let flow = Flow {
                source: addresses[random.below(5) as usize].parse().unwrap(),
                destination: addresses[random.below(5) as usize].parse().unwrap(),
                protocol,
                source_port: [None, Some(40000), Some(40001)][random.below(3) as usize],
                destination_port: if protocol == 1 {
                    None
                } else {
                    Some([80, 81, 443, 1500, 8080][random.below(5) as usize])
                },
                icmp_type: if protocol == 1 {
                    Some([0, 8][random.below(2) as usize])
                } else {
                    None
                },
                icmp_code: if protocol == 1 { Some(0) } else { None },
            };
            let slot = |address| dataplane.address_slots.get(&address).map(|(slot, _)| *slot);
            let slots = (slot(flow.source), slot(flow.destination));
            let name =
                [None, Some("a.example"), Some("x.b.example"), Some("c.test")][random.below(4) as usize];
            let l7 = views[random.below(views.len() as u64) as usize].as_ref();
            for (rule, summary) in rules.iter().zip(summaries) {
                let full = dataplane.rule_matches(rule, &flow, NameTest::Name(name), L7Test::View(l7), slots);
                let quick = dataplane.summary_matches(summary, &flow, slots);
                assert!(
                    quick || !full,
                    "summary rejects a matching rule: {rule:?} {flow:?} {name:?}"
                );
                if summary.exact {
                    exact_checks += 1;
                    assert_eq!(quick, full, "exact summary disagrees: {rule:?} {flow:?} {name:?}");
                }
                if full && rule.domains.is_some() {
                    domain_matches += 1;
                }
                if rule.l7.is_some() {
                    assert!(!summary.exact, "an L7 rule's summary is exact: {rule:?}");
                    if full {
                        l7_matches += 1;
                    } else if dataplane.rule_matches(
                        rule,
                        &flow,
                        NameTest::Name(name),
                        L7Test::AssumeMatches,
                        slots,
                    ) {
                        l7_misses += 1;
                    }
                }
            }
        }
        assert!(
            exact_checks > 50_000,
            "too few exact summaries exercised: {exact_checks}"
        );
        assert!(
            domain_matches > 1_000,
            "too few domain rule matches exercised: {domain_matches}"
        );
        assert!(
            l7_matches > 1_000 && l7_misses > 1_000,
            "too few L7 rules exercised: {l7_matches} matched, {l7_misses} failed only their L7 match"
        );
    }
}
