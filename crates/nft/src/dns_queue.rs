//! The DNS queue tables: packets carrying a mark bit (DNS responses to hold, marked by the
//! dataplane's `dns-queue` chain) are sent to an NFQUEUE, where the agent holds each until the
//! addresses it teaches are in the sets.
//!
//! Written over netlink because the `queue` statement needs the kernel's `nft_queue` expression,
//! which kernels built without CONFIG_NFT_QUEUE lack; the xtables `NFQUEUE` target, reached
//! through nft_compat (CONFIG_NFT_COMPAT), does the same, and only netlink can add it (the `nft`
//! tool cannot write xtables targets; nft built with libxtables lists it translated, as
//! `queue num N`, text that `nft -f` then refuses on such a kernel). The rule:
//! `meta mark & MARK == MARK` → NFQUEUE revision 3 (queue N, one queue, no bypass: with no
//! listener the kernel drops the packet and the client retries, fail closed).
//!
//! The tables are apart from the dataplane's `inet sluice`, so the dataplane's full rebuild
//! (which deletes and recreates its table) never leaves a moment without the queue.

use std::fmt;
use std::io;

use crate::chain_messages::{
    self, BaseChainSpec, HOOK_POSTROUTING, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE,
    NFT_MSG_NEWTABLE, POLICY_ACCEPT,
};
use crate::connection::{Connection, ConnectionError};
use crate::expressions::{Expression, META_MARK};
use crate::nfnetlink::{self, Answer, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END};
use crate::objects::{Family, Table};

/// The name of the queue table (one per family in [`DNS_QUEUE_FAMILIES`]).
pub const DNS_QUEUE_TABLE: &str = "sluice-dns";

/// The base chain of each queue table.
pub const DNS_QUEUE_HOLD_CHAIN: &str = "hold";

/// One `inet` table: nft_compat takes xtables targets in `inet` tables (tested on Linux 6.18
/// with IPv4 and IPv6 packets), so one rule serves both families. A kernel that refused that
/// (EAFNOSUPPORT on the rule) would need `[Family::Ip, Family::Ip6]` here.
pub const DNS_QUEUE_FAMILIES: [Family; 1] = [Family::Inet];

const NFQUEUE_TARGET: &str = "NFQUEUE";
/// `struct xt_NFQ_info_v3 { __u16 queuenum; __u16 queues_total; __u16 flags; }`.
const NFQUEUE_REVISION: u32 = 3;

/// What the queue tables send where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsQueue {
    /// The NFQUEUE number the agent listens on.
    pub queue: u16,
    /// The mark bit(s) that select a packet: `meta mark & mark == mark`. Not zero.
    pub mark: u32,
    /// The base chains' priority at the postrouting hook: after the chain that sets the mark.
    pub priority: i32,
}

impl DnsQueue {
    fn chain(&self) -> BaseChainSpec {
        BaseChainSpec {
            name: DNS_QUEUE_HOLD_CHAIN.into(),
            kind: "filter".into(),
            hook: HOOK_POSTROUTING,
            priority: self.priority,
            policy: POLICY_ACCEPT,
        }
    }

    fn expressions(&self) -> [Expression; 4] {
        let mut info = Vec::with_capacity(6);
        info.extend_from_slice(&self.queue.to_ne_bytes());
        info.extend_from_slice(&1u16.to_ne_bytes()); // queues_total: this one queue
        info.extend_from_slice(&0u16.to_ne_bytes()); // flags: no bypass
        [
            Expression::Meta { key: META_MARK },
            // The mark is a host-order u32 in the register.
            Expression::And {
                mask: self.mark.to_ne_bytes().to_vec(),
            },
            Expression::Equals {
                data: self.mark.to_ne_bytes().to_vec(),
            },
            Expression::Target {
                name: NFQUEUE_TARGET.into(),
                revision: NFQUEUE_REVISION,
                info,
            },
        ]
    }

    /// Whether a dumped rule is this rule (the kernel pads the target's info to 8 bytes).
    fn is_rule(&self, dumped: &[Expression]) -> bool {
        let expected = self.expressions();
        dumped.len() == expected.len()
            && dumped.iter().zip(&expected).all(|pair| match pair {
                (
                    Expression::Target { name, revision, info },
                    Expression::Target {
                        name: expected_name,
                        revision: expected_revision,
                        info: expected_info,
                    },
                ) => {
                    name == expected_name
                        && revision == expected_revision
                        && info.starts_with(expected_info)
                        && info[expected_info.len()..].iter().all(|byte| *byte == 0)
                }
                (dumped, expected) => dumped == expected,
            })
    }
}

/// Installs, checks and removes the DNS queue tables over one netlink socket.
#[derive(Debug)]
pub struct DnsQueueTables {
    connection: Connection,
}

/// What one message of a batch asked for, to name it when the kernel refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStep {
    /// The table, created if missing so that the delete after it cannot fail.
    EnsuringTable,
    DeletingTable,
    AddingTable,
    AddingChain,
    AddingRule,
}

impl DnsQueueTables {
    /// A socket in this network namespace or in the named one (`/run/netns/<name>`).
    pub fn open(namespace: Option<&str>) -> Result<DnsQueueTables, DnsQueueError> {
        Ok(DnsQueueTables {
            connection: Connection::open(namespace)?,
        })
    }

    /// Replaces the queue tables with fresh ones (table, base chain, the one rule), for every
    /// family, in one transaction: installing again, or over a table changed behind our back,
    /// is fine, and the old rule stays until the new one is in.
    pub fn install(&mut self, queue: &DnsQueue) -> Result<(), DnsQueueError> {
        if queue.mark == 0 {
            return Err(DnsQueueError::Invalid(
                "a mark of 0 would select every packet; give the bit the DNS chain sets".into(),
            ));
        }
        let mut steps = Vec::new();
        for family in DNS_QUEUE_FAMILIES {
            steps.push((QueueStep::EnsuringTable, family));
            steps.push((QueueStep::DeletingTable, family));
            steps.push((QueueStep::AddingTable, family));
            steps.push((QueueStep::AddingChain, family));
            steps.push((QueueStep::AddingRule, family));
        }
        self.run(&steps, Some(queue))
    }

    /// Deletes the queue tables; none there is fine. Marked packets then pass unqueued.
    pub fn remove(&mut self) -> Result<(), DnsQueueError> {
        let mut steps = Vec::new();
        for family in DNS_QUEUE_FAMILIES {
            steps.push((QueueStep::EnsuringTable, family));
            steps.push((QueueStep::DeletingTable, family));
        }
        self.run(&steps, None)
    }

    /// Whether every family's table has the base chain (hook, priority, policy) and exactly
    /// the one rule for this queue and mark; `false` when anything is missing or differs.
    pub fn is_installed(&mut self, queue: &DnsQueue) -> Result<bool, DnsQueueError> {
        for family in DNS_QUEUE_FAMILIES {
            if self.chain(family)? != Some(queue.chain()) {
                return Ok(false);
            }
            let rules = self.rules(family)?;
            if rules.len() != 1 || !queue.is_rule(&rules[0]) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn run(&mut self, steps: &[(QueueStep, Family)], queue: Option<&DnsQueue>) -> Result<(), DnsQueueError> {
        let begin = self.connection.reserve_sequences(steps.len() as u32 + 2);
        let mut bytes = Vec::with_capacity(128 * steps.len());
        nfnetlink::control_message(&mut bytes, NFNL_MSG_BATCH_BEGIN, begin);
        let mut sequences = Vec::with_capacity(steps.len());
        for (index, (step, family)) in steps.iter().enumerate() {
            let sequence = begin.wrapping_add(1 + index as u32);
            sequences.push(sequence);
            match step {
                QueueStep::EnsuringTable | QueueStep::AddingTable => chain_messages::table_message(
                    &mut bytes,
                    NFT_MSG_NEWTABLE,
                    *family,
                    DNS_QUEUE_TABLE,
                    sequence,
                ),
                QueueStep::DeletingTable => chain_messages::table_message(
                    &mut bytes,
                    NFT_MSG_DELTABLE,
                    *family,
                    DNS_QUEUE_TABLE,
                    sequence,
                ),
                QueueStep::AddingChain => chain_messages::base_chain_message(
                    &mut bytes,
                    *family,
                    DNS_QUEUE_TABLE,
                    &queue.expect("adding needs the queue").chain(),
                    sequence,
                ),
                QueueStep::AddingRule => chain_messages::rule_message(
                    &mut bytes,
                    *family,
                    DNS_QUEUE_TABLE,
                    DNS_QUEUE_HOLD_CHAIN,
                    &queue.expect("adding needs the queue").expressions(),
                    sequence,
                ),
            }
        }
        let end = begin.wrapping_add(steps.len() as u32 + 1);
        nfnetlink::control_message(&mut bytes, NFNL_MSG_BATCH_END, end);
        let Some(rejection) = self.connection.commit(&bytes, begin, &sequences)? else {
            return Ok(());
        };
        let step = sequences
            .iter()
            .position(|sequence| *sequence == rejection.sequence)
            .map(|index| steps[index]);
        Err(DnsQueueError::Refused(Box::new(QueueRefusal {
            errno: rejection.errno,
            step,
            queue: queue.copied(),
            message: rejection.message,
        })))
    }

    fn chain(&mut self, family: Family) -> Result<Option<BaseChainSpec>, DnsQueueError> {
        let sequence = self.connection.reserve_sequences(1);
        let request = chain_messages::get_chain(family, DNS_QUEUE_TABLE, DNS_QUEUE_HOLD_CHAIN, sequence);
        self.connection.send(&request, "asking for the DNS queue chain")?;
        loop {
            for answer in self.connection.receive()? {
                match answer {
                    Answer::Data {
                        sequence: answered,
                        message: NFT_MSG_NEWCHAIN,
                        attributes,
                        ..
                    } if answered == sequence => {
                        return chain_messages::parse_base_chain(&attributes)
                            .map_err(DnsQueueError::Protocol);
                    }
                    Answer::Refused {
                        sequence: answered,
                        errno: ENOENT,
                        ..
                    } if answered == sequence => return Ok(None),
                    Answer::Refused {
                        sequence: answered,
                        errno,
                        message,
                        ..
                    } if answered == sequence => {
                        return Err(DnsQueueError::Listing {
                            table: Table::new(family, DNS_QUEUE_TABLE),
                            source: io::Error::from_raw_os_error(errno),
                            message,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    fn rules(&mut self, family: Family) -> Result<Vec<Vec<Expression>>, DnsQueueError> {
        let sequence = self.connection.reserve_sequences(1);
        let request = chain_messages::dump_rules(family, DNS_QUEUE_TABLE, DNS_QUEUE_HOLD_CHAIN, sequence);
        self.connection.send(&request, "asking for the DNS queue rules")?;
        let mut rules = Vec::new();
        loop {
            for answer in self.connection.receive()? {
                match answer {
                    Answer::Data {
                        sequence: answered,
                        interrupted: true,
                        ..
                    } if answered == sequence => {
                        // The ruleset changed meanwhile: report "not as expected", to be repaired.
                        return Ok(Vec::new());
                    }
                    Answer::Data {
                        sequence: answered,
                        message: NFT_MSG_NEWRULE,
                        attributes,
                        ..
                    } if answered == sequence => {
                        rules.push(chain_messages::parse_rule(&attributes).map_err(DnsQueueError::Protocol)?);
                    }
                    Answer::Done { sequence: answered } if answered == sequence => return Ok(rules),
                    Answer::Refused {
                        sequence: answered,
                        errno: ENOENT,
                        ..
                    } if answered == sequence => return Ok(Vec::new()),
                    Answer::Refused {
                        sequence: answered,
                        errno,
                        message,
                        ..
                    } if answered == sequence => {
                        return Err(DnsQueueError::Listing {
                            table: Table::new(family, DNS_QUEUE_TABLE),
                            source: io::Error::from_raw_os_error(errno),
                            message,
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;
const EAFNOSUPPORT: i32 = 97;

/// Why the queue tables could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DnsQueueError {
    #[error("entering network namespace {namespace}: {reason}")]
    Namespace { namespace: String, reason: String },
    #[error("{doing}{}: {source}", namespace.as_ref().map(|name| format!(" in network namespace {name}")).unwrap_or_default())]
    Io {
        doing: &'static str,
        namespace: Option<String>,
        source: io::Error,
    },
    #[error("the DNS queue cannot be installed: {0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(Box<QueueRefusal>),
    #[error("the kernel refused listing table {table}: {source}{}", message.as_ref().map(|text| format!(": {text}")).unwrap_or_default())]
    Listing {
        table: Table,
        source: io::Error,
        message: Option<String>,
    },
    #[error("the kernel did not answer within {0:?}; the batch may or may not have been applied")]
    Timeout(std::time::Duration),
    #[error("unreadable netlink answer: {0}")]
    Protocol(String),
}

impl From<ConnectionError> for DnsQueueError {
    fn from(error: ConnectionError) -> DnsQueueError {
        match error {
            ConnectionError::Namespace { namespace, reason } => {
                DnsQueueError::Namespace { namespace, reason }
            }
            ConnectionError::Io {
                doing,
                namespace,
                source,
            } => DnsQueueError::Io {
                doing,
                namespace,
                source,
            },
            ConnectionError::Timeout(limit) => DnsQueueError::Timeout(limit),
            ConnectionError::Protocol(reason) => DnsQueueError::Protocol(reason),
        }
    }
}

/// The kernel refused a queue batch, so applied none of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRefusal {
    /// The positive errno.
    pub errno: i32,
    /// The refused message and its family; `None` when the batch as a whole was refused.
    pub step: Option<(QueueStep, Family)>,
    /// The queue being installed; `None` when removing.
    pub queue: Option<DnsQueue>,
    /// The kernel's own text, when it gave one.
    pub message: Option<String>,
}

impl QueueRefusal {
    fn reason(&self) -> String {
        let step = self.step.map(|(step, _)| step);
        match (self.errno, step) {
            (EPERM, _) => "not permitted (writing nftables needs CAP_NET_ADMIN)".into(),
            (ENOENT | EOPNOTSUPP, Some(QueueStep::AddingRule)) => {
                "the kernel has no xtables NFQUEUE target revision 3 reachable from nf_tables \
                 (it needs CONFIG_NFT_COMPAT and CONFIG_NETFILTER_XT_TARGET_NFQUEUE, or their modules)"
                    .into()
            }
            (EAFNOSUPPORT, Some(QueueStep::AddingRule)) => {
                "the kernel refuses xtables targets in this table's family".into()
            }
            (EINVAL, Some(QueueStep::AddingRule)) => {
                "the NFQUEUE target refused its parameters (queue number, one queue, no flags)".into()
            }
            (ENOENT | EOPNOTSUPP, Some(QueueStep::AddingChain)) => {
                "the kernel has no filter chains at the postrouting hook for this family".into()
            }
            (errno, _) => io::Error::from_raw_os_error(errno).to_string(),
        }
    }
}

impl fmt::Display for QueueRefusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Some((step, family)) => {
                let table = Table::new(family, DNS_QUEUE_TABLE);
                match step {
                    QueueStep::EnsuringTable | QueueStep::AddingTable => {
                        write!(formatter, "the kernel refused adding table {table}")?
                    }
                    QueueStep::DeletingTable => {
                        write!(formatter, "the kernel refused deleting table {table}")?
                    }
                    QueueStep::AddingChain => write!(
                        formatter,
                        "the kernel refused adding base chain {DNS_QUEUE_HOLD_CHAIN} of table {table}"
                    )?,
                    QueueStep::AddingRule => {
                        write!(
                            formatter,
                            "the kernel refused adding the NFQUEUE rule to chain {DNS_QUEUE_HOLD_CHAIN} of table {table}"
                        )?;
                        if let Some(queue) = &self.queue {
                            write!(
                                formatter,
                                " (meta mark & {mark:#x} == {mark:#x} → queue {number})",
                                mark = queue.mark,
                                number = queue.queue
                            )?;
                        }
                    }
                }
            }
            None => write!(formatter, "the kernel refused the DNS queue batch")?,
        }
        let name = io::Error::from_raw_os_error(self.errno);
        write!(formatter, ": {} [{name}]", self.reason())?;
        if let Some(message) = &self.message {
            write!(formatter, ": {message}")?;
        }
        write!(formatter, "; nothing in the batch was applied")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> DnsQueue {
        DnsQueue {
            queue: 4000,
            mark: 0x20000,
            priority: 120,
        }
    }

    #[test]
    fn the_rule_matches_its_dump_with_the_info_padded() {
        let queue = queue();
        let mut dumped = queue.expressions().to_vec();
        let Expression::Target { info, .. } = &mut dumped[3] else {
            panic!("the fourth expression is the target");
        };
        assert_eq!(info.len(), 6, "xt_NFQ_info_v3 is three u16s, unpadded");
        assert_eq!(&info[..2], &4000u16.to_ne_bytes());
        info.extend_from_slice(&[0, 0]);
        assert!(queue.is_rule(&dumped));
        let other_queue = DnsQueue { queue: 4001, ..queue };
        assert!(!other_queue.is_rule(&dumped));
        let other_mark = DnsQueue {
            mark: 0x10000,
            ..queue
        };
        assert!(!other_mark.is_rule(&dumped));
        assert!(!queue.is_rule(&dumped[..3]));
    }

    #[test]
    fn refusals_name_the_step_and_the_missing_kernel_part() {
        let refusal = QueueRefusal {
            errno: ENOENT,
            step: Some((QueueStep::AddingRule, Family::Inet)),
            queue: Some(queue()),
            message: None,
        };
        assert_eq!(
            DnsQueueError::Refused(Box::new(refusal)).to_string(),
            "the kernel refused adding the NFQUEUE rule to chain hold of table inet sluice-dns \
             (meta mark & 0x20000 == 0x20000 → queue 4000): the kernel has no xtables NFQUEUE \
             target revision 3 reachable from nf_tables (it needs CONFIG_NFT_COMPAT and \
             CONFIG_NETFILTER_XT_TARGET_NFQUEUE, or their modules) [No such file or directory \
             (os error 2)]; nothing in the batch was applied"
        );
        let whole = QueueRefusal {
            errno: EPERM,
            step: None,
            queue: None,
            message: None,
        };
        assert_eq!(
            whole.to_string(),
            "the kernel refused the DNS queue batch: not permitted (writing nftables needs \
             CAP_NET_ADMIN) [Operation not permitted (os error 1)]; nothing in the batch was applied"
        );
    }
}
