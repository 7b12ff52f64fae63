//! Verdicts on the IR: is a flow allowed, and which rule (or default) decided.
//!
//! One function walks tiers, policies and rules; it is generic over a [`Tracer`] so batch
//! evaluation records nothing and pays nothing, while `explain` records every step.

use std::net::IpAddr;

use serde::Serialize;
use sluice_api::values::{Action, PolicyType};

use crate::ir::*;

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
}

impl Decision {
    pub fn allows(self) -> bool {
        match self {
            Decision::Rule { action, .. } => action == Action::Allow,
            Decision::TierDefault { .. } => false,
            Decision::ProfileAfterPass | Decision::NoPolicy => true,
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
    Tier { tier: String },
    NoRuleMatched { policy: PolicyId },
    Logged { policy: PolicyId, rule_index: usize },
    Passed { policy: PolicyId, rule_index: usize },
    HttpRuleSkipped { policy: PolicyId, rule_index: usize },
    TierPassed { tier: String },
}

pub trait Tracer {
    fn step(&mut self, step: impl FnOnce() -> TraceStep);
}

/// Records nothing.
#[derive(Debug, Default)]
pub struct NoTrace;

impl Tracer for NoTrace {
    #[inline]
    fn step(&mut self, _step: impl FnOnce() -> TraceStep) {}
}

impl Tracer for Vec<TraceStep> {
    fn step(&mut self, step: impl FnOnce() -> TraceStep) {
        self.push(step());
    }
}

impl Dataplane {
    /// The verdict for a flow, recording nothing: the fast path for batches.
    pub fn evaluate(&self, flow: &Flow) -> Verdict {
        self.evaluate_traced(flow, &mut NoTrace, &mut NoTrace)
    }

    /// The verdict with the egress and ingress steps recorded.
    pub fn evaluate_traced<T: Tracer>(
        &self,
        flow: &Flow,
        egress_trace: &mut T,
        ingress_trace: &mut T,
    ) -> Verdict {
        let egress = self.endpoint_by_address.get(&flow.source).map(|&id| {
            (
                id,
                self.evaluate_direction(&self.endpoints[id], PolicyType::Egress, flow, egress_trace),
            )
        });
        // Return traffic of an allowed flow is allowed by conntrack; a flow is judged in the
        // direction it was opened.
        let ingress = self.endpoint_by_address.get(&flow.destination).map(|&id| {
            (
                id,
                self.evaluate_direction(&self.endpoints[id], PolicyType::Ingress, flow, ingress_trace),
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

    fn evaluate_direction<T: Tracer>(
        &self,
        endpoint: &EndpointProgram,
        direction: PolicyType,
        flow: &Flow,
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
                for (rule_index, rule) in self.policies[policy].rules(direction).iter().enumerate() {
                    if !self.rule_matches(rule, flow) {
                        continue;
                    }
                    if rule.http {
                        trace.step(|| TraceStep::HttpRuleSkipped { policy, rule_index });
                        continue;
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

    fn rule_matches(&self, rule: &CompiledRule, flow: &Flow) -> bool {
        let family = if flow.destination.is_ipv4() { 4 } else { 6 };
        if rule.ip_version.is_some_and(|version| version != family)
            || rule.protocol.is_some_and(|protocol| protocol != flow.protocol)
            || rule
                .not_protocol
                .is_some_and(|protocol| protocol == flow.protocol)
        {
            return false;
        }
        if let Some(icmp) = &rule.icmp
            && !icmp_matches(icmp, flow)
        {
            return false;
        }
        if let Some(icmp) = &rule.not_icmp
            && icmp_matches(icmp, flow)
        {
            return false;
        }
        self.peer_matches(&rule.source, flow.source, flow.protocol, flow.source_port)
            && self.peer_matches(
                &rule.destination,
                flow.destination,
                flow.protocol,
                flow.destination_port,
            )
    }

    fn peer_matches(&self, peer: &PeerMatch, address: IpAddr, protocol: u8, port: Option<u16>) -> bool {
        let in_set = |id: Option<IpSetId>| id.map(|id| self.ip_sets[id].contains(address));
        if in_set(peer.nets) == Some(false)
            || in_set(peer.not_nets) == Some(true)
            || in_set(peer.selector) == Some(false)
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
            dataplane.named_port_sets[id]
                .lookup
                .contains(&(address, protocol, port))
        })
}
