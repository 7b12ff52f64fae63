//! Sending the connections that reach an egress rule with an HTTP or TLS match to the node's
//! proxy, and only those.
//!
//! nft's `tproxy` works only in prerouting, before the forward hook's policy runs, so the
//! question "does this connection reach an L7 rule?" is answered there by a copy of the
//! endpoint's egress evaluation, rendered from the same IR by the same rule renderer:
//!
//! - base chain `l7-prerouting` (filter, prerouting, priority -150: after conntrack, before
//!   NAT's destination hook): packets of a connection carrying the proxy's connection mark
//!   ([`MARK_PROXY`]) get it as packet mark too and are accepted; the policy-routing rule
//!   (`fwmark MARK_PROXY lookup PROXY_ROUTE_TABLE`, whose table holds `local` default routes)
//!   then delivers them to the node's own sockets. That covers the pod's later packets to the
//!   proxy and the replies to the proxy's upstream connections (whose connection mark the
//!   `l7-output` chain set). With no proxy socket the kernel answers them with a reset: a
//!   connection the proxy was judging is never forwarded unchecked.
//! - new TCP connections from an endpoint with an L7 egress rule go through `l7-endpoint-…`
//!   (anti-spoofing, then a jump per tier up to the last tier holding an L7 rule) and
//!   `l7-tier-…` chains: a rule with an L7 match becomes `goto l7-redirect` (with flow logs,
//!   after logging the rule's allow, so the flow log records the connection); an Allow or Deny
//!   rule without one ends the evaluation (the forward hook decides, exactly as without a
//!   proxy); Pass leaves the tier; Log rules are left to the forward hook. So a connection that
//!   an earlier rule decides never leaves the kernel's fast path.
//! - `l7-redirect`: `tproxy` to the proxy's loopback listener, marking packet and connection;
//!   `tproxy` falls through when no socket listens, so an explicit `drop` follows (fail
//!   closed: the client's retransmission finds the proxy once it is back). Both count, so
//!   `nft list chain inet sluice l7-redirect` shows how many connections went to the proxy
//!   and how many first packets found none.
//! - base chain `l7-output` (filter, output, priority -150): the proxy's upstream sockets carry
//!   [`MARK_PROXY_UPSTREAM`] (`SO_MARK`); their connections get [`MARK_PROXY`], so replies,
//!   addressed to the pod (the proxy connects from the pod's own address), reach the proxy,
//!   and [`MARK_PROXY_UPSTREAM`] too, by which the flow log tells them from the pod's own
//!   connections (the pod's connection to the proxy is the one it records).
//! - the `input` chain accepts packets marked [`MARK_PROXY`] before its endpoint dispatch
//!   (the endpoint's own chain would drop them: its L7 rule never matches in the kernel).
//!
//! The proxy judges every request with the one evaluator, on the whole flow; what it allows
//! leaves the node from the pod's address through the output path, where NAT applies as it
//! would have to the pod's own packets.

use std::collections::BTreeSet;
use std::net::IpAddr;

use sluice_api::values::{Action, PolicyType};
use sluice_nft::{BaseChain, Set};
use sluice_policy::ir::EndpointProgram;
use sluice_policy::{Dataplane, PolicyHit};

use crate::flow_logs::FlowLogs;
use crate::render::{
    ChainState, IpFamily, LocalEndpoint, MARK_ACCEPT, RuleRenderer, Ruleset, SetState, short_hash, truncate,
};

/// Packet and connection mark of proxied connections: routed to the node's own sockets.
pub const MARK_PROXY: u32 = 0x0004_0000;
/// The mark the proxy puts on its upstream sockets (`SO_MARK`), so that their connections get
/// [`MARK_PROXY`] in the output hook. A bit of its own: [`MARK_PROXY`] on an outgoing packet
/// would route it to the node itself.
pub const MARK_PROXY_UPSTREAM: u32 = 0x0008_0000;
/// The routing table holding the `local` default routes that deliver marked packets locally.
/// Outside the egress gateways' client and pin tables.
pub const PROXY_ROUTE_TABLE: u32 = 1_066_000;
/// The priority of the `fwmark` rule: ahead of the egress gateway rules (pins at 99, clients
/// at 100 by default), whose `from <client>` would otherwise send a pod's packets to its
/// gateway rather than to the proxy.
pub const PROXY_RULE_PRIORITY: u32 = 10;

/// Where the proxy listens: `127.0.0.1:port` and `[::1]:port` in the node's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L7Redirect {
    pub port: u16,
}

impl Ruleset {
    /// Whether the ruleset sends connections to the proxy (some local endpoint has an egress
    /// rule with an L7 match).
    pub fn redirects_to_proxy(&self) -> bool {
        self.chains.contains_key(PREROUTING)
    }
}

const PREROUTING: &str = "l7-prerouting";
const REDIRECT: &str = "l7-redirect";
const FROM_ENDPOINT: &str = "l7-from-endpoint";

/// The input hook's rule for redirected packets.
pub(crate) fn accept_redirected() -> (String, Option<String>) {
    (
        format!("meta mark & {MARK_PROXY:#010x} == {MARK_PROXY:#010x} accept"),
        Some("to the L7 proxy: it judges each request".to_string()),
    )
}

/// Renders the redirect for the local endpoints with L7 egress rules; returns whether any has
/// one (nothing is rendered otherwise).
pub(crate) fn render_redirect(
    ir: &Dataplane,
    local_programs: &[(&LocalEndpoint, &EndpointProgram)],
    renderer: &RuleRenderer<'_>,
    redirect: &L7Redirect,
    flow_logs: Option<&FlowLogs>,
    ruleset: &mut Ruleset,
) -> bool {
    let mut from_endpoint = BTreeSet::new();
    for (endpoint, program) in local_programs {
        let Some(last_tier) = last_tier_with_l7(ir, program) else {
            continue;
        };
        let mut rules = vec![(format!("meta mark set meta mark & {:#010x}", !MARK_ACCEPT), None)];
        rules.extend(anti_spoofing(program));
        for tier in &program.egress.tiers[..=last_tier] {
            let mut tier_rules: Vec<(String, Option<String>)> = Vec::new();
            for &policy_id in &tier.policies {
                let policy = &ir.policies[policy_id];
                for rule in &policy.egress {
                    let action = match (rule.l7, rule.action) {
                        // Logged as the rule's allow: the flow log records the connection the
                        // proxy then judges request by request.
                        (Some(_), _) => match flow_logs {
                            Some(flow_logs) => format!(
                                "{} goto {REDIRECT}",
                                flow_logs.log(
                                    PolicyHit::rule(
                                        &policy.reference,
                                        PolicyType::Egress,
                                        rule.origin_index,
                                        Action::Allow
                                    )
                                    .id()
                                )
                            ),
                            None => format!("goto {REDIRECT}"),
                        },
                        (None, Action::Allow | Action::Deny) => {
                            format!("meta mark set meta mark | {MARK_ACCEPT:#010x} return")
                        }
                        (None, Action::Pass) => "return".to_string(),
                        (None, Action::Log) => continue,
                    };
                    let comment = truncate(
                        &format!(
                            "{} egress rule {} (L7 redirect)",
                            policy.reference, rule.origin_index
                        ),
                        120,
                    );
                    for text in renderer.rule_below_l7(rule, &action) {
                        tier_rules.push((text, Some(comment.clone())));
                    }
                }
            }
            if tier.default_action != Action::Pass {
                tier_rules.push((
                    format!("meta mark set meta mark | {MARK_ACCEPT:#010x} return"),
                    Some(truncate(&format!("end of tier {}", tier.name), 120)),
                ));
            }
            let name = format!("l7-tier-{}", short_hash(&tier_rules));
            ruleset.chains.entry(name.clone()).or_insert(ChainState {
                base: None,
                rules: tier_rules,
            });
            rules.push((
                format!("jump {name}"),
                Some(truncate(&format!("tier {}", tier.name), 120)),
            ));
            rules.push((
                format!(
                    "meta mark & {MARK_ACCEPT:#010x} != 0 meta mark set meta mark & {:#010x} return",
                    !MARK_ACCEPT
                ),
                Some("decided without L7: the forward hook judges it".to_string()),
            ));
        }
        let chain = format!("l7-endpoint-{}", short_hash((&program.namespace, &program.name)));
        ruleset
            .chains
            .insert(chain.clone(), ChainState { base: None, rules });
        from_endpoint.insert((
            format!("\"{}\"", endpoint.interface),
            Some(format!("jump {chain}")),
        ));
    }
    if from_endpoint.is_empty() {
        return false;
    }
    ruleset.sets.insert(
        FROM_ENDPOINT.to_string(),
        SetState {
            declaration: Set::map(FROM_ENDPOINT, "ifname", "verdict"),
            elements: from_endpoint,
        },
    );
    let marks =
        format!("meta mark set meta mark | {MARK_PROXY:#010x} ct mark set ct mark | {MARK_PROXY:#010x}");
    ruleset.chains.insert(
        REDIRECT.to_string(),
        ChainState {
            base: None,
            rules: vec![
                (
                    format!(
                        "meta nfproto ipv4 meta l4proto tcp counter tproxy ip to 127.0.0.1:{} {marks} accept",
                        redirect.port
                    ),
                    None,
                ),
                (
                    format!(
                        "meta nfproto ipv6 meta l4proto tcp counter tproxy ip6 to [::1]:{} {marks} accept",
                        redirect.port
                    ),
                    None,
                ),
                // `tproxy` finds no listener: the proxy is down. Dropped, never forwarded.
                (
                    "counter drop".to_string(),
                    Some("no L7 proxy listening: fail closed".to_string()),
                ),
            ],
        },
    );
    ruleset.chains.insert(
        PREROUTING.to_string(),
        ChainState {
            base: Some(BaseChain {
                chain_type: "filter".into(),
                hook: "prerouting".into(),
                priority: -150,
                policy: Some("accept".into()),
            }),
            rules: vec![
                (
                    format!(
                        "ct mark & {MARK_PROXY:#010x} == {MARK_PROXY:#010x} meta mark set meta mark | {MARK_PROXY:#010x} accept"
                    ),
                    Some("a proxied connection: to the proxy's sockets, never forwarded".to_string()),
                ),
                (
                    format!("meta l4proto tcp ct state new iifname vmap @{FROM_ENDPOINT}"),
                    None,
                ),
            ],
        },
    );
    ruleset.chains.insert(
        "l7-output".to_string(),
        ChainState {
            base: Some(BaseChain {
                chain_type: "filter".into(),
                hook: "output".into(),
                priority: -150,
                policy: Some("accept".into()),
            }),
            rules: vec![(
                format!(
                    "meta mark & {MARK_PROXY_UPSTREAM:#010x} == {MARK_PROXY_UPSTREAM:#010x} ct mark set ct mark | {:#010x}",
                    MARK_PROXY | MARK_PROXY_UPSTREAM
                ),
                Some(
                    "the proxy's upstream connections: replies go to the proxy; the flow log skips them"
                        .to_string(),
                ),
            )],
        },
    );
    true
}

/// The index of the endpoint's last egress tier holding a rule with an L7 match.
fn last_tier_with_l7(ir: &Dataplane, program: &EndpointProgram) -> Option<usize> {
    program.egress.tiers.iter().rposition(|tier| {
        tier.policies.iter().any(|&policy| {
            ir.policies[policy]
                .rules(PolicyType::Egress)
                .iter()
                .any(|rule| rule.l7.is_some())
        })
    })
}

/// As the endpoint's egress chain: a pod sends only from its own addresses (a spoofed
/// connection must not reach the proxy, which would judge it as another pod's).
fn anti_spoofing(program: &EndpointProgram) -> Vec<(String, Option<String>)> {
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .map(|family| {
            let own: Vec<String> = program
                .addresses
                .iter()
                .filter(|address| IpFamily::of(**address) == family)
                .map(IpAddr::to_string)
                .collect();
            let keyword = family.address_keyword();
            let nfproto = if family == IpFamily::V4 { "ipv4" } else { "ipv6" };
            let rule = match own.as_slice() {
                [] => format!("meta nfproto {nfproto} drop"),
                [single] => format!("{keyword} saddr != {single} drop"),
                _ => format!("{keyword} saddr != {{ {} }} drop", own.join(", ")),
            };
            (rule, Some("anti-spoofing".to_string()))
        })
        .collect()
}
