//! nf_tables rule expressions on the wire (`NFTA_RULE_EXPRESSIONS`): the few a rule written over
//! netlink needs, encoded and read back from a rule dump. All of them work on register 1 (the
//! kernel's 16-byte NFT_REG_1); numbers are the kernel's uapi (`linux/netfilter/nf_tables.h`,
//! `nf_tables_compat.h`).

use netlink_packet_core::{NLA_TYPE_MASK, NlasIterator};

use crate::nfnetlink::{NFTA_DATA_VALUE, NFTA_LIST_ELEM, begin_nested, end_nested, put, put_string};

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
const NFT_CMP_EQ: u32 = 0;

const NFTA_TARGET_NAME: u16 = 1;
const NFTA_TARGET_REV: u16 = 2;
const NFTA_TARGET_INFO: u16 = 3;

/// NFT_REG_1: the first 16-byte register.
const REGISTER: u32 = 1;

/// `meta mark`: NFT_META_MARK.
pub(crate) const META_MARK: u32 = 3;

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expression {
    /// Loads a packet's meta value (e.g. [`META_MARK`]) into the register.
    Meta { key: u32 },
    /// register = register & mask (xor 0), over the mask's length.
    And { mask: Vec<u8> },
    /// Ends the rule for this packet unless the register equals `data`.
    Equals { data: Vec<u8> },
    /// An xtables target through nft_compat (`xt target "NAME"` in `nft list`).
    Target {
        name: String,
        revision: u32,
        /// The target's info struct in host byte order. The kernel dumps it padded to 8 bytes.
        info: Vec<u8>,
    },
    /// An expression this module does not read, by its name.
    Other(String),
}

impl Expression {
    /// Appends the expression as one element of an `NFTA_RULE_EXPRESSIONS` list.
    pub fn encode(&self, bytes: &mut Vec<u8>) {
        let element = begin_nested(bytes, NFTA_LIST_ELEM);
        let name = match self {
            Expression::Meta { .. } => "meta",
            Expression::And { .. } => "bitwise",
            Expression::Equals { .. } => "cmp",
            Expression::Target { .. } => "target",
            Expression::Other(name) => name,
        };
        put_string(bytes, NFTA_EXPR_NAME, name);
        let data = begin_nested(bytes, NFTA_EXPR_DATA);
        match self {
            Expression::Meta { key } => {
                put(bytes, NFTA_META_DREG, &REGISTER.to_be_bytes());
                put(bytes, NFTA_META_KEY, &key.to_be_bytes());
            }
            Expression::And { mask } => {
                put(bytes, NFTA_BITWISE_SREG, &REGISTER.to_be_bytes());
                put(bytes, NFTA_BITWISE_DREG, &REGISTER.to_be_bytes());
                let length = u32::try_from(mask.len()).expect("a mask of a few bytes");
                put(bytes, NFTA_BITWISE_LEN, &length.to_be_bytes());
                put_value(bytes, NFTA_BITWISE_MASK, mask);
                put_value(bytes, NFTA_BITWISE_XOR, &vec![0; mask.len()]);
            }
            Expression::Equals { data } => {
                put(bytes, NFTA_CMP_SREG, &REGISTER.to_be_bytes());
                put(bytes, NFTA_CMP_OP, &NFT_CMP_EQ.to_be_bytes());
                put_value(bytes, NFTA_CMP_DATA, data);
            }
            Expression::Target { name, revision, info } => {
                put_string(bytes, NFTA_TARGET_NAME, name);
                put(bytes, NFTA_TARGET_REV, &revision.to_be_bytes());
                put(bytes, NFTA_TARGET_INFO, info);
            }
            Expression::Other(_) => {}
        }
        end_nested(bytes, data);
        end_nested(bytes, element);
    }

    /// Reads the expressions of an `NFTA_RULE_EXPRESSIONS` list (its value).
    pub fn parse_list(list: &[u8]) -> Result<Vec<Expression>, String> {
        let mut expressions = Vec::new();
        for element in NlasIterator::new(list) {
            let element = element.map_err(|error| format!("rule expression: {error}"))?;
            let mut name = None;
            let mut data = Vec::new();
            for attribute in NlasIterator::new(element.value()) {
                let attribute = attribute.map_err(|error| format!("rule expression: {error}"))?;
                match attribute.kind() & NLA_TYPE_MASK {
                    NFTA_EXPR_NAME => name = Some(string(attribute.value())),
                    NFTA_EXPR_DATA => data = attribute.value().to_vec(),
                    _ => {}
                }
            }
            let name = name.ok_or("a rule expression without a name")?;
            expressions.push(parse_one(&name, &data)?);
        }
        Ok(expressions)
    }
}

fn parse_one(name: &str, data: &[u8]) -> Result<Expression, String> {
    let mut attributes = Vec::new();
    for attribute in NlasIterator::new(data) {
        let attribute = attribute.map_err(|error| format!("{name} expression: {error}"))?;
        attributes.push((attribute.kind() & NLA_TYPE_MASK, attribute.value().to_vec()));
    }
    let find = |kind: u16| {
        attributes
            .iter()
            .find(|(found, _)| *found == kind)
            .map(|(_, value)| value.as_slice())
    };
    let number = |kind: u16| {
        find(kind)
            .and_then(|value| value.get(..4))
            .map(|bytes| u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
    };
    let other = || Expression::Other(name.to_string());
    Ok(match name {
        "meta" => match number(NFTA_META_KEY) {
            Some(key) if number(NFTA_META_DREG) == Some(REGISTER) => Expression::Meta { key },
            _ => other(),
        },
        "bitwise" => {
            let xor_is_zero = find(NFTA_BITWISE_XOR)
                .and_then(data_value)
                .is_some_and(|xor| xor.iter().all(|byte| *byte == 0));
            match find(NFTA_BITWISE_MASK).and_then(data_value) {
                Some(mask)
                    if xor_is_zero
                        && number(NFTA_BITWISE_SREG) == Some(REGISTER)
                        && number(NFTA_BITWISE_DREG) == Some(REGISTER) =>
                {
                    Expression::And { mask }
                }
                _ => other(),
            }
        }
        "cmp" => match find(NFTA_CMP_DATA).and_then(data_value) {
            Some(data)
                if number(NFTA_CMP_OP) == Some(NFT_CMP_EQ) && number(NFTA_CMP_SREG) == Some(REGISTER) =>
            {
                Expression::Equals { data }
            }
            _ => other(),
        },
        "target" => match (find(NFTA_TARGET_NAME), number(NFTA_TARGET_REV)) {
            (Some(target), Some(revision)) => Expression::Target {
                name: string(target),
                revision,
                info: find(NFTA_TARGET_INFO).unwrap_or_default().to_vec(),
            },
            _ => other(),
        },
        _ => other(),
    })
}

/// A nested NFTA_DATA_VALUE, as `nft_data` is put on the wire.
fn put_value(bytes: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let nested = begin_nested(bytes, kind);
    put(bytes, NFTA_DATA_VALUE, value);
    end_nested(bytes, nested);
}

fn data_value(nested: &[u8]) -> Option<Vec<u8>> {
    NlasIterator::new(nested)
        .flatten()
        .find(|attribute| attribute.kind() & NLA_TYPE_MASK == NFTA_DATA_VALUE)
        .map(|attribute| attribute.value().to_vec())
}

/// A NUL-terminated netlink string.
pub(crate) fn string(value: &[u8]) -> String {
    let end = value.iter().position(|byte| *byte == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_read_back_as_written() {
        let expressions = [
            Expression::Meta { key: META_MARK },
            Expression::And {
                mask: 0x20000u32.to_ne_bytes().to_vec(),
            },
            Expression::Equals {
                data: 0x20000u32.to_ne_bytes().to_vec(),
            },
            Expression::Target {
                name: "NFQUEUE".into(),
                revision: 3,
                info: vec![0xa0, 0x0f, 1, 0, 0, 0],
            },
        ];
        let mut bytes = Vec::new();
        for expression in &expressions {
            expression.encode(&mut bytes);
        }
        // The 6-byte info is padded to 8 on the wire; its attribute length says 6.
        let read = Expression::parse_list(&bytes).unwrap();
        assert_eq!(read, expressions);
        // A comparison other than equality is not read as `Equals`.
        let mut bytes = Vec::new();
        let element = begin_nested(&mut bytes, NFTA_LIST_ELEM);
        put_string(&mut bytes, NFTA_EXPR_NAME, "cmp");
        let data = begin_nested(&mut bytes, NFTA_EXPR_DATA);
        put(&mut bytes, NFTA_CMP_SREG, &REGISTER.to_be_bytes());
        put(&mut bytes, NFTA_CMP_OP, &1u32.to_be_bytes());
        put_value(&mut bytes, NFTA_CMP_DATA, &[0, 0, 2, 0]);
        end_nested(&mut bytes, data);
        end_nested(&mut bytes, element);
        assert_eq!(
            Expression::parse_list(&bytes).unwrap(),
            [Expression::Other("cmp".into())]
        );
    }
}
