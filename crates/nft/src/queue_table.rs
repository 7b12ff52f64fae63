//! A table of its own that sends packets carrying a mark to an NFQUEUE, written over netlink.
//!
//! Why not a `queue` statement in the `nft -f` ruleset: kernels built without
//! `CONFIG_NFT_QUEUE` (this project's test machine among them) have no nftables queue
//! expression, while xtables' `NFQUEUE` target is commonly built in and nftables reaches it
//! through `nft_compat`. `nft` cannot write a compat target, so this writes the rule itself:
//! `meta mark & MARK == MARK` then target `NFQUEUE` (revision 1: queue number, one queue), in a
//! base chain of table `<name>` (families `ip` and `ip6`, as iptables-nft does for compat
//! targets). No `bypass`: when no process listens, queued packets are dropped (fail closed).

use crate::nfnetlink::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, begin_message, begin_nested, control_message, end_message,
    end_nested, nftables_type, put, put_string,
};

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLM_F_APPEND: u16 = 0x800;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_TARGET_NAME: u16 = 1;
const NFTA_TARGET_REV: u16 = 2;
const NFTA_TARGET_INFO: u16 = 3;

const NFT_REG_1: u32 = 1;
const NFT_META_MARK: u32 = 3;
const NFT_CMP_EQ: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NF_INET_POST_ROUTING: u32 = 4;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const CHAIN: &str = "queue";

/// What the queue table does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTable {
    /// The table's name (one in family `ip`, one in `ip6`).
    pub name: String,
    /// The postrouting priority of its base chain: after the chain that sets the mark.
    pub priority: i32,
    /// Packets with all of these mark bits go to the queue.
    pub mark: u32,
    pub queue: u16,
}

/// One transaction that replaces both tables (created first so that deleting cannot fail).
/// Returns the bytes and the sequence numbers of the messages the kernel answers.
pub(crate) fn encode(table: &QueueTable, first_sequence: u32) -> (Vec<u8>, Vec<u32>) {
    let mut bytes = Vec::with_capacity(1024);
    let mut sequence = first_sequence;
    let mut answered = Vec::new();
    control_message(&mut bytes, NFNL_MSG_BATCH_BEGIN, sequence);
    for family in [NFPROTO_IPV4, NFPROTO_IPV6] {
        for (message, flags) in [
            (NFT_MSG_NEWTABLE, NLM_F_CREATE),
            (NFT_MSG_DELTABLE, 0),
            (NFT_MSG_NEWTABLE, NLM_F_CREATE),
        ] {
            sequence = sequence.wrapping_add(1);
            answered.push(sequence);
            let start = begin_message(
                &mut bytes,
                nftables_type(message),
                NLM_F_REQUEST | NLM_F_ACK | flags,
                sequence,
                family,
                0,
            );
            put_string(&mut bytes, NFTA_TABLE_NAME, &table.name);
            end_message(&mut bytes, start);
        }
        sequence = sequence.wrapping_add(1);
        answered.push(sequence);
        chain(&mut bytes, table, family, sequence);
        sequence = sequence.wrapping_add(1);
        answered.push(sequence);
        rule(&mut bytes, table, family, sequence);
    }
    control_message(&mut bytes, NFNL_MSG_BATCH_END, sequence.wrapping_add(1));
    (bytes, answered)
}

fn chain(bytes: &mut Vec<u8>, table: &QueueTable, family: u8, sequence: u32) {
    let start = begin_message(
        bytes,
        nftables_type(NFT_MSG_NEWCHAIN),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        sequence,
        family,
        0,
    );
    put_string(bytes, NFTA_CHAIN_TABLE, &table.name);
    put_string(bytes, NFTA_CHAIN_NAME, CHAIN);
    let hook = begin_nested(bytes, NFTA_CHAIN_HOOK);
    put(bytes, NFTA_HOOK_HOOKNUM, &NF_INET_POST_ROUTING.to_be_bytes());
    put(bytes, NFTA_HOOK_PRIORITY, &table.priority.to_be_bytes());
    end_nested(bytes, hook);
    put(bytes, NFTA_CHAIN_POLICY, &NF_ACCEPT.to_be_bytes());
    put_string(bytes, NFTA_CHAIN_TYPE, "filter");
    end_message(bytes, start);
}

fn rule(bytes: &mut Vec<u8>, table: &QueueTable, family: u8, sequence: u32) {
    let start = begin_message(
        bytes,
        nftables_type(NFT_MSG_NEWRULE),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
        sequence,
        family,
        0,
    );
    put_string(bytes, NFTA_RULE_TABLE, &table.name);
    put_string(bytes, NFTA_RULE_CHAIN, CHAIN);
    let expressions = begin_nested(bytes, NFTA_RULE_EXPRESSIONS);
    // The mark is a host-order 32-bit register value.
    let mark = table.mark.to_ne_bytes();
    expression(bytes, "meta", |bytes| {
        put(bytes, NFTA_META_DREG, &NFT_REG_1.to_be_bytes());
        put(bytes, NFTA_META_KEY, &NFT_META_MARK.to_be_bytes());
    });
    expression(bytes, "bitwise", |bytes| {
        put(bytes, NFTA_BITWISE_SREG, &NFT_REG_1.to_be_bytes());
        put(bytes, NFTA_BITWISE_DREG, &NFT_REG_1.to_be_bytes());
        put(bytes, NFTA_BITWISE_LEN, &4u32.to_be_bytes());
        data(bytes, NFTA_BITWISE_MASK, &mark);
        data(bytes, NFTA_BITWISE_XOR, &[0; 4]);
    });
    expression(bytes, "cmp", |bytes| {
        put(bytes, NFTA_CMP_SREG, &NFT_REG_1.to_be_bytes());
        put(bytes, NFTA_CMP_OP, &NFT_CMP_EQ.to_be_bytes());
        data(bytes, NFTA_CMP_DATA, &mark);
    });
    expression(bytes, "target", |bytes| {
        put_string(bytes, NFTA_TARGET_NAME, "NFQUEUE");
        put(bytes, NFTA_TARGET_REV, &1u32.to_be_bytes());
        // xt_NFQ_info_v1 { queuenum, queues_total }, padded to XT_ALIGN (8 bytes).
        let mut info = Vec::with_capacity(8);
        info.extend_from_slice(&table.queue.to_ne_bytes());
        info.extend_from_slice(&1u16.to_ne_bytes());
        info.resize(8, 0);
        put(bytes, NFTA_TARGET_INFO, &info);
    });
    end_nested(bytes, expressions);
    end_message(bytes, start);
}

fn expression(bytes: &mut Vec<u8>, name: &str, body: impl FnOnce(&mut Vec<u8>)) {
    let element = begin_nested(bytes, NFTA_LIST_ELEM);
    put_string(bytes, NFTA_EXPR_NAME, name);
    let data = begin_nested(bytes, NFTA_EXPR_DATA);
    body(bytes);
    end_nested(bytes, data);
    end_nested(bytes, element);
}

fn data(bytes: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let nested = begin_nested(bytes, kind);
    put(bytes, NFTA_DATA_VALUE, value);
    end_nested(bytes, nested);
}
