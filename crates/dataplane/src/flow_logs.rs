//! Flow logs in the ruleset: with [`FlowLogs`] given to [`crate::render_with_flow_logs`], every
//! final decision of an endpoint chain logs the packet to an NFLOG group with the decision's
//! [`HitId`] (16 hexadecimal digits) as the log prefix, so the agent reads the deciding rule
//! back from the kernel ([`crate::nflog`]) instead of recomputing it.
//!
//! - An Allow rule logs inline before its verdict (`… log group G prefix "<id>" meta mark set
//!   … return`). Tier chains see only a connection's first packet (established traffic is
//!   accepted in the dispatch chains), so this is once per connection and is not limited.
//! - A Deny rule and a tier's end `goto deny-<id>`, a chain per hit holding `limit rate N/second
//!   log group G prefix "<id>"` then `drop`. The limit is the chain's, so it is one budget per
//!   hit whichever endpoints, tiers and address families reach it; a packet over the limit is
//!   dropped unlogged. A flood of denied packets therefore costs the agent at most N messages
//!   a second per hit, and never touches allowed traffic (other hits, other chains). A chain
//!   rather than an inline `limit … log` because `limit` is a match: inline, it would need a
//!   second rule with the same matches to drop what is over the limit, matching twice.
//! - The namespace profile (the endpoint chain's last `return`) logs inline, once per
//!   connection as an Allow rule does.
//! - A merged run of rules (one lookup for several rules) becomes a verdict map whose elements
//!   `goto` the hit's chain: `allow-<id>` logs, sets the ACCEPT mark and returns (a `return`
//!   from a chain entered by `goto` leaves the tier chain, as the Allow rule's own `return`
//!   does), `deny-<id>` is the one above. Still one lookup, and each packet is attributed to
//!   the exact rule whose element it matched.
//!
//! Ids name policies, rules and tiers, never endpoints (the profile's id names the namespace,
//! and is written only in endpoint chains), so tier chains stay shared between endpoints.

use sluice_api::values::Action;
use sluice_policy::{HitId, PolicyHit};

use crate::render::{ChainState, MARK_ACCEPT, Ruleset, truncate};

/// The NFLOG group flow logs use when the configuration names none.
pub const DEFAULT_FLOW_LOG_GROUP: u16 = 7100;

/// Denied packets logged per second per hit when the configuration names no rate. A denied
/// connection retries seconds apart, so this logs every distinct denied flow of an ordinary
/// workload while a flood costs the agent at most this many messages a second per hit.
pub const DEFAULT_DENY_RATE_PER_SECOND: u32 = 100;

/// The chain of a hit that allows (used from merged runs): `allow-<id>`.
pub const ALLOW_CHAIN_PREFIX: &str = "allow-";
/// The chain of a hit that denies: `deny-<id>`.
pub const DENY_CHAIN_PREFIX: &str = "deny-";

/// Flow logs on: the NFLOG group decisions are logged to and the rate denied packets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowLogs {
    pub group: u16,
    /// Per hit; at least 1.
    pub deny_rate_per_second: u32,
}

impl Default for FlowLogs {
    fn default() -> FlowLogs {
        FlowLogs {
            group: DEFAULT_FLOW_LOG_GROUP,
            deny_rate_per_second: DEFAULT_DENY_RATE_PER_SECOND,
        }
    }
}

impl FlowLogs {
    /// `log group G prefix "<id>"`.
    pub(crate) fn log(&self, hit: HitId) -> String {
        format!("log group {} prefix \"{hit}\"", self.group)
    }

    /// An allowing verdict that logs first: sets the ACCEPT mark and returns.
    pub(crate) fn allow(&self, hit: HitId) -> String {
        format!("{} {}", self.log(hit), allow_verdict())
    }

    /// The verdict of a rule for a hit: log and allow inline, or `goto deny-<id>` (a chain
    /// [`FlowLogs::declare_chain`] adds).
    pub(crate) fn verdict(&self, hit: &PolicyHit) -> String {
        match hit.action {
            Action::Allow => self.allow(hit.id()),
            _ => format!("goto {DENY_CHAIN_PREFIX}{}", hit.id()),
        }
    }

    /// What a verdict map element of a hit holds: `goto allow-<id>` or `goto deny-<id>` (chains
    /// [`FlowLogs::declare_chain`] adds).
    pub(crate) fn target(&self, hit: &PolicyHit) -> String {
        match hit.action {
            Action::Allow => format!("goto {ALLOW_CHAIN_PREFIX}{}", hit.id()),
            _ => format!("goto {DENY_CHAIN_PREFIX}{}", hit.id()),
        }
    }

    /// Adds the hit's chain (once; endpoints and tiers share it): for a Deny hit the rate
    /// limited log and the drop, for an Allow hit the log, the ACCEPT mark and the return.
    pub(crate) fn declare_chain(&self, hit: &PolicyHit, ruleset: &mut Ruleset) {
        let id = hit.id();
        let comment = Some(truncate(&hit.text(), 120));
        let (name, rules) = match hit.action {
            Action::Allow => (
                format!("{ALLOW_CHAIN_PREFIX}{id}"),
                vec![(self.allow(id), comment)],
            ),
            _ => (
                format!("{DENY_CHAIN_PREFIX}{id}"),
                vec![
                    (
                        format!(
                            "limit rate {}/second {}",
                            self.deny_rate_per_second.max(1),
                            self.log(id)
                        ),
                        comment,
                    ),
                    ("drop".to_string(), None),
                ],
            ),
        };
        ruleset
            .chains
            .entry(name)
            .or_insert(ChainState { base: None, rules });
    }
}

/// What an Allow rule does without logging.
pub(crate) fn allow_verdict() -> String {
    format!("meta mark set meta mark | {MARK_ACCEPT:#010x} return")
}
