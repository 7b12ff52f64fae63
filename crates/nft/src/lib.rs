//! nftables for Sluice, after Kubernetes' knftables: typed objects (tables, chains, rules, sets,
//! maps, elements) are collected into a [`Transaction`], rendered to `nft` text, and applied in
//! one atomic `nft -f -` call: the kernel takes all of it or none of it.
//!
//! Backends: [`CommandBackend`] runs the `nft` binary (optionally inside a named network
//! namespace via `ip netns exec`); [`FakeBackend`] keeps a model of the ruleset in memory and
//! applies transactions to it with nft's rules for add/create/flush/delete, for unit tests of
//! what is rendered.
//!
//! [`SetElementWriter`] is the fast path for the elements of sets the ruleset declares (e.g.
//! addresses learned from DNS, with a timeout each): one long-lived NETLINK_NETFILTER socket that
//! sends each update as one nf_tables batch, with no process per update.
//!
//! [`DnsQueueTables`] writes, over netlink too, the table `inet sluice-dns` that sends packets
//! carrying a mark bit (DNS answers to hold) to an NFQUEUE through the xtables `NFQUEUE` target,
//! for kernels without nftables' own `queue` expression.
//!
//! [`tool`] finds and runs netfilter's command-line tools for the crates that need them.
//!
//! Architecture invariant: only this crate runs `nft`. It renders what it is given and knows
//! nothing about policy. It is the only writer of nftables: through `nft` for the ruleset, through
//! netlink for set elements and the DNS queue table.
#![forbid(unsafe_code)]

mod backend;
mod chain_messages;
mod connection;
mod dns_queue;
mod elements;
mod expressions;
mod fake;
pub mod namespace;
mod nfnetlink;
mod objects;
pub mod tool;
mod writer;

pub use backend::{Backend, CommandBackend, NftError, NftVersion};
pub use dns_queue::{
    DNS_QUEUE_FAMILIES, DNS_QUEUE_HOLD_CHAIN, DNS_QUEUE_TABLE, DnsQueue, DnsQueueError, DnsQueueTables,
    QueueRefusal, QueueStep,
};
pub use elements::{ElementChange, ElementKey, ListedElement};
pub use fake::FakeBackend;
pub use nfnetlink::Culprit;
pub use objects::*;
pub use writer::{Operation, Refusal, SetElementError, SetElementWriter};

/// The netfilter netlink message primitives this crate writes its messages with, for the
/// dataplane's readers of other netfilter subsystems (NFLOG, conntrack): bytes in, bytes out.
pub mod wire {
    pub use crate::nfnetlink::{
        NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, begin_message, end_message, put, put_string,
    };
}
