//! nf_tables messages for tables, base chains and rules, as bytes (no socket): what a batch
//! that writes a small table of its own needs, and the chain and rule dumps read back.

use netlink_packet_core::{NLA_TYPE_MASK, NlasIterator};

use crate::expressions::{Expression, string};
use crate::nfnetlink::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, begin_message, begin_nested, end_message, end_nested,
    nftables_type, protocol_family, put, put_string,
};
use crate::objects::Family;

pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;

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

const NLM_F_APPEND: u16 = 0x800;

/// NF_INET_POST_ROUTING.
pub(crate) const HOOK_POSTROUTING: u32 = 4;
/// NF_ACCEPT as a chain policy.
pub(crate) const POLICY_ACCEPT: u32 = 1;

/// A base chain as written and as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseChainSpec {
    pub name: String,
    /// `filter`, `nat` or `route`.
    pub kind: String,
    pub hook: u32,
    pub priority: i32,
    pub policy: u32,
}

/// NEWTABLE with NLM_F_CREATE (no EXCL: an existing table is no error) or DELTABLE.
pub(crate) fn table_message(bytes: &mut Vec<u8>, message: u16, family: Family, table: &str, sequence: u32) {
    let flags = match message {
        NFT_MSG_NEWTABLE => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        _ => NLM_F_REQUEST | NLM_F_ACK,
    };
    let start = begin_message(
        bytes,
        nftables_type(message),
        flags,
        sequence,
        protocol_family(family),
        0,
    );
    put_string(bytes, NFTA_TABLE_NAME, table);
    end_message(bytes, start);
}

pub(crate) fn base_chain_message(
    bytes: &mut Vec<u8>,
    family: Family,
    table: &str,
    chain: &BaseChainSpec,
    sequence: u32,
) {
    let start = begin_message(
        bytes,
        nftables_type(NFT_MSG_NEWCHAIN),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        sequence,
        protocol_family(family),
        0,
    );
    put_string(bytes, NFTA_CHAIN_TABLE, table);
    put_string(bytes, NFTA_CHAIN_NAME, &chain.name);
    let hook = begin_nested(bytes, NFTA_CHAIN_HOOK);
    put(bytes, NFTA_HOOK_HOOKNUM, &chain.hook.to_be_bytes());
    // The kernel reads the priority as a big-endian u32 holding an s32.
    put(bytes, NFTA_HOOK_PRIORITY, &chain.priority.to_be_bytes());
    end_nested(bytes, hook);
    put(bytes, NFTA_CHAIN_POLICY, &chain.policy.to_be_bytes());
    put_string(bytes, NFTA_CHAIN_TYPE, &chain.kind);
    end_message(bytes, start);
}

/// A rule appended to the end of the chain.
pub(crate) fn rule_message(
    bytes: &mut Vec<u8>,
    family: Family,
    table: &str,
    chain: &str,
    expressions: &[Expression],
    sequence: u32,
) {
    let start = begin_message(
        bytes,
        nftables_type(NFT_MSG_NEWRULE),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
        sequence,
        protocol_family(family),
        0,
    );
    put_string(bytes, NFTA_RULE_TABLE, table);
    put_string(bytes, NFTA_RULE_CHAIN, chain);
    let list = begin_nested(bytes, NFTA_RULE_EXPRESSIONS);
    for expression in expressions {
        expression.encode(bytes);
    }
    end_nested(bytes, list);
    end_message(bytes, start);
}

/// GETCHAIN for one chain (not a dump: the answer is the chain or ENOENT).
pub(crate) fn get_chain(family: Family, table: &str, chain: &str, sequence: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    let start = begin_message(
        &mut bytes,
        nftables_type(NFT_MSG_GETCHAIN),
        NLM_F_REQUEST,
        sequence,
        protocol_family(family),
        0,
    );
    put_string(&mut bytes, NFTA_CHAIN_TABLE, table);
    put_string(&mut bytes, NFTA_CHAIN_NAME, chain);
    end_message(&mut bytes, start);
    bytes
}

/// A dump of the rules of one chain.
pub(crate) fn dump_rules(family: Family, table: &str, chain: &str, sequence: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    let start = begin_message(
        &mut bytes,
        nftables_type(NFT_MSG_GETRULE),
        NLM_F_REQUEST | NLM_F_DUMP,
        sequence,
        protocol_family(family),
        0,
    );
    put_string(&mut bytes, NFTA_RULE_TABLE, table);
    put_string(&mut bytes, NFTA_RULE_CHAIN, chain);
    end_message(&mut bytes, start);
    bytes
}

/// Reads a NEWCHAIN message's attributes; `None` for a chain without a hook (not a base chain).
pub(crate) fn parse_base_chain(attributes: &[u8]) -> Result<Option<BaseChainSpec>, String> {
    let mut name = None;
    let mut kind = None;
    let mut hook = None;
    let mut priority = None;
    let mut policy = None;
    let number = |value: &[u8]| {
        value
            .get(..4)
            .map(|bytes| <[u8; 4]>::try_from(bytes).expect("4 bytes"))
    };
    for attribute in NlasIterator::new(attributes) {
        let attribute = attribute.map_err(|error| format!("chain attribute: {error}"))?;
        match attribute.kind() & NLA_TYPE_MASK {
            NFTA_CHAIN_NAME => name = Some(string(attribute.value())),
            NFTA_CHAIN_TYPE => kind = Some(string(attribute.value())),
            NFTA_CHAIN_POLICY => policy = number(attribute.value()).map(u32::from_be_bytes),
            NFTA_CHAIN_HOOK => {
                for inner in NlasIterator::new(attribute.value()).flatten() {
                    match inner.kind() & NLA_TYPE_MASK {
                        NFTA_HOOK_HOOKNUM => hook = number(inner.value()).map(u32::from_be_bytes),
                        NFTA_HOOK_PRIORITY => priority = number(inner.value()).map(i32::from_be_bytes),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(match (name, kind, hook, priority, policy) {
        (Some(name), Some(kind), Some(hook), Some(priority), Some(policy)) => Some(BaseChainSpec {
            name,
            kind,
            hook,
            priority,
            policy,
        }),
        _ => None,
    })
}

/// Reads a NEWRULE message's expressions.
pub(crate) fn parse_rule(attributes: &[u8]) -> Result<Vec<Expression>, String> {
    for attribute in NlasIterator::new(attributes) {
        let attribute = attribute.map_err(|error| format!("rule attribute: {error}"))?;
        if attribute.kind() & NLA_TYPE_MASK == NFTA_RULE_EXPRESSIONS {
            return Expression::parse_list(attribute.value());
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_chain_reads_back_with_a_negative_priority() {
        let chain = BaseChainSpec {
            name: "hold".into(),
            kind: "filter".into(),
            hook: HOOK_POSTROUTING,
            priority: -150,
            policy: POLICY_ACCEPT,
        };
        let mut bytes = Vec::new();
        base_chain_message(&mut bytes, Family::Ip, "sluice-dns", &chain, 9);
        // Header (16) and nfgenmsg (4), then the attributes.
        assert_eq!(bytes[20], b"sluice-dns\0".len() as u8 + 4);
        assert_eq!(parse_base_chain(&bytes[20..]).unwrap(), Some(chain));
    }
}
