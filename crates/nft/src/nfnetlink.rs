//! The nf_tables netlink wire format, as bytes in and bytes out (no socket): the message and
//! attribute primitives, the kernel's answers read back, and for set elements a batch of
//! NEWSETELEM/DELSETELEM messages between BATCH_BEGIN and BATCH_END and a GETSETELEM dump
//! request (tables, chains and rules: `chain_messages`). Numbers are the kernel's uapi
//! (`linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`, `linux/netlink.h`).

use std::time::Duration;

use netlink_packet_core::{NLA_F_NESTED, NLA_TYPE_MASK, NetlinkBuffer, NlasIterator};

use crate::elements::{ElementChange, ElementKey, ListedElement};
use crate::objects::Family;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
pub(crate) const NFTA_DATA_VALUE: u16 = 1;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;

const HEADER_LENGTH: usize = 16;
const NFGENMSG_LENGTH: usize = 4;

/// At most this many elements go in one message: a nested attribute's length is 16 bits, and
/// an IPv6 pair with a timeout takes 56 bytes.
const ELEMENTS_PER_MESSAGE: usize = 512;

/// nf_tables' protocol family numbers (NFPROTO_*).
pub(crate) fn protocol_family(family: Family) -> u8 {
    match family {
        Family::Inet => 1,
        Family::Ip => 2,
        Family::Ip6 => 10,
    }
}

/// Where in a message the kernel may point when it refuses it (offsets from the message's
/// first byte, as the extended ACK's NLMSGERR_ATTR_OFFS counts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageLayout {
    pub sequence: u32,
    /// The index in the caller's changes of this message's first element.
    pub first_change: usize,
    pub table: std::ops::Range<usize>,
    pub set: std::ops::Range<usize>,
    /// One range per element, in order.
    pub elements: Vec<std::ops::Range<usize>>,
}

/// What the kernel's extended ACK pointed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    Table,
    Set,
    /// The index of the change in the slice given to `apply`.
    Change(usize),
    Unknown,
}

impl MessageLayout {
    pub fn culprit(&self, offset: Option<u32>) -> Culprit {
        let Some(offset) = offset.map(|offset| offset as usize) else {
            return Culprit::Unknown;
        };
        if self.table.contains(&offset) {
            return Culprit::Table;
        }
        if self.set.contains(&offset) {
            return Culprit::Set;
        }
        self.elements
            .iter()
            .position(|range| range.contains(&offset))
            .map_or(Culprit::Unknown, |index| {
                Culprit::Change(self.first_change + index)
            })
    }
}

/// A batch ready to send, and the layout of each of its messages.
#[derive(Debug)]
pub(crate) struct EncodedBatch {
    pub bytes: Vec<u8>,
    pub begin_sequence: u32,
    pub messages: Vec<MessageLayout>,
}

/// Why a change cannot be encoded at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodeError {
    pub change: usize,
    pub reason: String,
}

/// Encodes the changes as one transaction. Runs of changes with the same operation, table and
/// set share a message; order is kept, so a delete followed by an add of one key stays so.
pub(crate) fn encode_batch(
    changes: &[ElementChange],
    first_sequence: u32,
) -> Result<EncodedBatch, EncodeError> {
    let mut bytes = Vec::with_capacity(64 + changes.len() * 64);
    let mut sequence = first_sequence;
    let begin_sequence = sequence;
    control_message(&mut bytes, NFNL_MSG_BATCH_BEGIN, sequence);
    let mut messages = Vec::new();
    let mut start = 0;
    while start < changes.len() {
        let first = &changes[start];
        let run = changes[start..]
            .iter()
            .take(ELEMENTS_PER_MESSAGE)
            .take_while(|change| {
                change.is_add() == first.is_add()
                    && change.table() == first.table()
                    && change.set() == first.set()
            })
            .count();
        sequence = sequence.wrapping_add(1);
        messages.push(element_message(
            &mut bytes,
            &changes[start..start + run],
            start,
            sequence,
        )?);
        start += run;
    }
    control_message(&mut bytes, NFNL_MSG_BATCH_END, sequence.wrapping_add(1));
    Ok(EncodedBatch {
        bytes,
        begin_sequence,
        messages,
    })
}

/// A dump request for every element of one set.
pub(crate) fn encode_list(family: Family, table: &str, set: &str, sequence: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    let start = begin_message(
        &mut bytes,
        nftables_type(NFT_MSG_GETSETELEM),
        NLM_F_REQUEST | NLM_F_DUMP,
        sequence,
        protocol_family(family),
        0,
    );
    put_string(&mut bytes, NFTA_SET_ELEM_LIST_TABLE, table);
    put_string(&mut bytes, NFTA_SET_ELEM_LIST_SET, set);
    end_message(&mut bytes, start);
    bytes
}

pub(crate) fn nftables_type(message: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | message
}

pub(crate) fn control_message(bytes: &mut Vec<u8>, message_type: u16, sequence: u32) {
    // The batch messages name the subsystem in nfgenmsg.res_id, in network byte order.
    let start = begin_message(
        bytes,
        message_type,
        NLM_F_REQUEST,
        sequence,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    end_message(bytes, start);
}

fn element_message(
    bytes: &mut Vec<u8>,
    changes: &[ElementChange],
    first_change: usize,
    sequence: u32,
) -> Result<MessageLayout, EncodeError> {
    let first = &changes[0];
    let (message, flags) = if first.is_add() {
        (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
    } else {
        (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
    };
    let family = protocol_family(first.table().family);
    let start = begin_message(bytes, nftables_type(message), flags, sequence, family, 0);
    let table = put_string(bytes, NFTA_SET_ELEM_LIST_TABLE, &first.table().name);
    let set = put_string(bytes, NFTA_SET_ELEM_LIST_SET, first.set());
    let list = begin_nested(bytes, NFTA_SET_ELEM_LIST_ELEMENTS);
    let mut elements = Vec::with_capacity(changes.len());
    for (index, change) in changes.iter().enumerate() {
        let element = begin_nested(bytes, NFTA_LIST_ELEM);
        let key = begin_nested(bytes, NFTA_SET_ELEM_KEY);
        put(bytes, NFTA_DATA_VALUE, &change.key().to_bytes());
        end_nested(bytes, key);
        if let ElementChange::Add {
            timeout: Some(timeout),
            ..
        } = change
        {
            // The kernel counts in milliseconds; zero would mean "the set's default".
            let milliseconds = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            if milliseconds == 0 {
                return Err(EncodeError {
                    change: first_change + index,
                    reason: format!("timeout {timeout:?} is under the kernel's 1 ms resolution"),
                });
            }
            put(bytes, NFTA_SET_ELEM_TIMEOUT, &milliseconds.to_be_bytes());
            // The expiration too: for an element already in the set, the kernel (6.10+)
            // restarts the expiry only when the timeout differs or an expiration is given.
            put(bytes, NFTA_SET_ELEM_EXPIRATION, &milliseconds.to_be_bytes());
        }
        end_nested(bytes, element);
        elements.push(element - start..bytes.len() - start);
    }
    if bytes.len() - list > usize::from(u16::MAX) {
        return Err(EncodeError {
            change: first_change,
            reason: "too many elements for one netlink attribute".into(),
        });
    }
    end_nested(bytes, list);
    end_message(bytes, start);
    Ok(MessageLayout {
        sequence,
        first_change,
        table: table - start..set - start,
        set: set - start..list - start,
        elements,
    })
}

/// Starts a netfilter netlink message: the netlink header (length filled in by
/// [`end_message`]) and `nfgenmsg` (family, version 0, `resource` big-endian). Returns where it
/// starts.
pub fn begin_message(
    bytes: &mut Vec<u8>,
    message_type: u16,
    flags: u16,
    sequence: u32,
    family: u8,
    resource: u16,
) -> usize {
    let start = bytes.len();
    bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set by end_message
    bytes.extend_from_slice(&message_type.to_ne_bytes());
    bytes.extend_from_slice(&flags.to_ne_bytes());
    bytes.extend_from_slice(&sequence.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    bytes.push(family);
    bytes.push(0); // NFNETLINK_V0
    bytes.extend_from_slice(&resource.to_be_bytes());
    start
}

/// Writes the length of the message that starts at `start`.
pub fn end_message(bytes: &mut [u8], start: usize) {
    let length = u32::try_from(bytes.len() - start).expect("a netlink message under 4 GiB");
    bytes[start..start + 4].copy_from_slice(&length.to_ne_bytes());
}

/// Appends one attribute, padded to 4 bytes; returns where it starts.
pub fn put(bytes: &mut Vec<u8>, kind: u16, value: &[u8]) -> usize {
    let start = bytes.len();
    let length = u16::try_from(4 + value.len()).expect("an attribute under 64 KiB");
    bytes.extend_from_slice(&length.to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(value);
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    start
}

/// Appends a NUL-terminated string attribute.
pub fn put_string(bytes: &mut Vec<u8>, kind: u16, value: &str) -> usize {
    let mut terminated = Vec::with_capacity(value.len() + 1);
    terminated.extend_from_slice(value.as_bytes());
    terminated.push(0);
    put(bytes, kind, &terminated)
}

pub(crate) fn begin_nested(bytes: &mut Vec<u8>, kind: u16) -> usize {
    let start = bytes.len();
    bytes.extend_from_slice(&0u16.to_ne_bytes());
    bytes.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    start
}

pub(crate) fn end_nested(bytes: &mut [u8], start: usize) {
    // Callers check the size of the one attribute that can grow large (the element list).
    let length = u16::try_from(bytes.len() - start).unwrap_or(u16::MAX);
    bytes[start..start + 2].copy_from_slice(&length.to_ne_bytes());
}

/// One message the kernel sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// NLMSG_ERROR with code 0.
    Acknowledged { sequence: u32 },
    /// NLMSG_ERROR with a negative errno, and what the extended ACK said.
    Refused {
        sequence: u32,
        errno: i32,
        offset: Option<u32>,
        message: Option<String>,
    },
    /// The end of a dump.
    Done { sequence: u32 },
    /// A data message: its nf_tables message type and the attributes after nfgenmsg.
    Data {
        sequence: u32,
        message: u16,
        /// NLM_F_DUMP_INTR: the ruleset changed while the dump ran, so it may be inconsistent.
        interrupted: bool,
        attributes: Vec<u8>,
    },
}

/// Reads every netlink message in one datagram.
pub(crate) fn parse_answers(mut bytes: &[u8]) -> Result<Vec<Answer>, String> {
    let mut answers = Vec::new();
    while bytes.len() >= HEADER_LENGTH {
        let buffer = NetlinkBuffer::new_checked(bytes).map_err(|error| format!("netlink header: {error}"))?;
        let length = buffer.length() as usize;
        let sequence = buffer.sequence_number();
        let payload = buffer.payload();
        answers.push(match buffer.message_type() {
            NLMSG_ERROR => parse_error(sequence, buffer.flags(), payload)?,
            NLMSG_DONE => Answer::Done { sequence },
            message_type if message_type >> 8 == NFNL_SUBSYS_NFTABLES => Answer::Data {
                sequence,
                message: message_type & 0xff,
                interrupted: buffer.flags() & NLM_F_DUMP_INTR != 0,
                attributes: payload.get(NFGENMSG_LENGTH..).unwrap_or_default().to_vec(),
            },
            other => return Err(format!("unexpected netlink message type {other:#x}")),
        });
        bytes = bytes.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(answers)
}

fn parse_error(sequence: u32, flags: u16, payload: &[u8]) -> Result<Answer, String> {
    let code = payload
        .get(..4)
        .map(|bytes| i32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
        .ok_or("a netlink error message without its code")?;
    if code == 0 {
        return Ok(Answer::Acknowledged { sequence });
    }
    // After the code: the request's header (whole request unless capped), then TLVs.
    let request = &payload[4..];
    let echoed = if flags & NLM_F_CAPPED != 0 {
        HEADER_LENGTH
    } else {
        request.get(..4).map_or(HEADER_LENGTH, |bytes| {
            u32::from_ne_bytes(bytes.try_into().expect("4 bytes")) as usize
        })
    };
    let mut offset = None;
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0
        && let Some(tlvs) = request.get(echoed.next_multiple_of(4)..)
    {
        for attribute in NlasIterator::new(tlvs).flatten() {
            match attribute.kind() & NLA_TYPE_MASK {
                NLMSGERR_ATTR_MSG => {
                    let text = attribute
                        .value()
                        .split(|byte| *byte == 0)
                        .next()
                        .unwrap_or_default();
                    message = Some(String::from_utf8_lossy(text).into_owned());
                }
                NLMSGERR_ATTR_OFFS => {
                    offset = attribute
                        .value()
                        .get(..4)
                        .map(|bytes| u32::from_ne_bytes(bytes.try_into().expect("4 bytes")));
                }
                _ => {}
            }
        }
    }
    Ok(Answer::Refused {
        sequence,
        errno: -code,
        offset,
        message,
    })
}

/// The elements in one NEWSETELEM message of a dump.
pub(crate) fn parse_elements(attributes: &[u8]) -> Result<Vec<ListedElement>, String> {
    let mut listed = Vec::new();
    for attribute in NlasIterator::new(attributes) {
        let attribute = attribute.map_err(|error| format!("set element list: {error}"))?;
        if attribute.kind() & NLA_TYPE_MASK != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for element in NlasIterator::new(attribute.value()) {
            let element = element.map_err(|error| format!("set element: {error}"))?;
            listed.push(parse_element(element.value())?);
        }
    }
    Ok(listed)
}

fn parse_element(attributes: &[u8]) -> Result<ListedElement, String> {
    let mut key = None;
    let mut timeout = None;
    let mut expires = None;
    let milliseconds = |value: &[u8]| {
        value
            .get(..8)
            .map(|bytes| Duration::from_millis(u64::from_be_bytes(bytes.try_into().expect("8 bytes"))))
    };
    for attribute in NlasIterator::new(attributes) {
        let attribute = attribute.map_err(|error| format!("set element attribute: {error}"))?;
        match attribute.kind() & NLA_TYPE_MASK {
            NFTA_SET_ELEM_KEY => {
                for data in NlasIterator::new(attribute.value()).flatten() {
                    if data.kind() & NLA_TYPE_MASK == NFTA_DATA_VALUE {
                        key = Some(ElementKey::from_bytes(data.value()).ok_or_else(|| {
                            format!("a key of {} bytes is not an address key", data.value().len())
                        })?);
                    }
                }
            }
            NFTA_SET_ELEM_TIMEOUT => timeout = milliseconds(attribute.value()),
            NFTA_SET_ELEM_EXPIRATION => expires = milliseconds(attribute.value()),
            _ => {}
        }
    }
    Ok(ListedElement {
        key: key.ok_or("a set element without a key")?,
        timeout,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Table;

    fn add(set: &str, second: &str, timeout: Option<Duration>) -> ElementChange {
        ElementChange::Add {
            table: Table::new(Family::Inet, "sluice"),
            set: set.into(),
            key: ElementKey::Pair("10.0.0.1".parse().unwrap(), second.parse().unwrap()),
            timeout,
        }
    }

    fn headers(bytes: &[u8]) -> Vec<(u16, u16, u32)> {
        let mut found = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let buffer = NetlinkBuffer::new_checked(rest).unwrap();
            found.push((buffer.message_type(), buffer.flags(), buffer.sequence_number()));
            rest = &rest[buffer.length() as usize..];
        }
        found
    }

    #[test]
    fn a_batch_groups_runs_of_one_set_and_keeps_order() {
        let changes = [
            add("a", "192.0.2.1", Some(Duration::from_secs(30))),
            add("a", "192.0.2.2", None),
            add("b", "192.0.2.3", None),
            ElementChange::Delete {
                table: Table::new(Family::Inet, "sluice"),
                set: "a".into(),
                key: ElementKey::Pair("10.0.0.1".parse().unwrap(), "192.0.2.1".parse().unwrap()),
            },
        ];
        let batch = encode_batch(&changes, 100).unwrap();
        let new = (10 << 8) | 12;
        let delete = (10 << 8) | 14;
        assert_eq!(
            headers(&batch.bytes),
            [
                (0x10, 0x1, 100),
                (new, 0x405, 101),
                (new, 0x405, 102),
                (delete, 0x5, 103),
                (0x11, 0x1, 104)
            ]
        );
        let layout: Vec<(u32, usize, usize)> = batch
            .messages
            .iter()
            .map(|message| (message.sequence, message.first_change, message.elements.len()))
            .collect();
        assert_eq!(layout, [(101, 0, 2), (102, 2, 1), (103, 3, 1)]);
        // The begin message names the nf_tables subsystem, big-endian, in res_id.
        assert_eq!(&batch.bytes[16..20], &[0, 0, 0, 10]);
    }

    #[test]
    fn an_element_carries_its_key_and_timeout_in_network_order() {
        let batch = encode_batch(&[add("d1_v4", "192.0.2.7", Some(Duration::from_millis(1500)))], 1).unwrap();
        let message = &batch.bytes[20..];
        let length = u32::from_ne_bytes(message[..4].try_into().unwrap()) as usize;
        let attributes = &message[20..length];
        let listed = parse_elements(attributes).unwrap();
        assert_eq!(
            listed,
            [ListedElement {
                key: ElementKey::Pair("10.0.0.1".parse().unwrap(), "192.0.2.7".parse().unwrap()),
                timeout: Some(Duration::from_millis(1500)),
                expires: Some(Duration::from_millis(1500)),
            }]
        );
        assert!(
            attributes
                .windows(8)
                .any(|window| window == 1500u64.to_be_bytes())
        );
        // The extended ACK's offset of an element maps back to its change.
        let layout = &batch.messages[0];
        assert_eq!(
            layout.culprit(Some(layout.elements[0].start as u32 + 8)),
            Culprit::Change(0)
        );
        assert_eq!(layout.culprit(Some(layout.set.start as u32)), Culprit::Set);
        assert_eq!(layout.culprit(Some(layout.table.start as u32)), Culprit::Table);
        assert_eq!(layout.culprit(None), Culprit::Unknown);
    }

    #[test]
    fn a_zero_timeout_is_refused_before_sending() {
        let error = encode_batch(
            &[
                add("a", "192.0.2.1", None),
                add("a", "192.0.2.2", Some(Duration::ZERO)),
            ],
            1,
        )
        .unwrap_err();
        assert_eq!(error.change, 1);
    }

    #[test]
    fn long_runs_split_into_messages_the_kernel_can_hold() {
        let changes: Vec<ElementChange> = (0..1200u32)
            .map(|index| ElementChange::Add {
                table: Table::new(Family::Inet, "sluice"),
                set: "d_v6".into(),
                key: ElementKey::Pair(
                    "fd00::1".parse().unwrap(),
                    std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(index))),
                ),
                timeout: Some(Duration::from_secs(60)),
            })
            .collect();
        let batch = encode_batch(&changes, 1).unwrap();
        let firsts: Vec<usize> = batch
            .messages
            .iter()
            .map(|message| message.first_change)
            .collect();
        assert_eq!(firsts, [0, 512, 1024]);
    }

    #[test]
    fn answers_read_acks_refusals_with_their_offset_and_dump_ends() {
        let mut bytes = Vec::new();
        // An ACK for sequence 7.
        let start = begin_raw(&mut bytes, NLMSG_ERROR, 0, 7);
        bytes.extend_from_slice(&0i32.to_ne_bytes());
        bytes.extend_from_slice(&[0; HEADER_LENGTH]);
        end_message(&mut bytes, start);
        // ENOENT for sequence 8, capped, with an offset TLV.
        let start = begin_raw(&mut bytes, NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 8);
        bytes.extend_from_slice(&(-2i32).to_ne_bytes());
        bytes.extend_from_slice(&[0; HEADER_LENGTH]);
        put(&mut bytes, NLMSGERR_ATTR_OFFS, &44u32.to_ne_bytes());
        end_message(&mut bytes, start);
        let start = begin_raw(&mut bytes, NLMSG_DONE, 0, 9);
        bytes.extend_from_slice(&0i32.to_ne_bytes());
        end_message(&mut bytes, start);
        assert_eq!(
            parse_answers(&bytes).unwrap(),
            [
                Answer::Acknowledged { sequence: 7 },
                Answer::Refused {
                    sequence: 8,
                    errno: 2,
                    offset: Some(44),
                    message: None
                },
                Answer::Done { sequence: 9 },
            ]
        );
    }

    fn begin_raw(bytes: &mut Vec<u8>, message_type: u16, flags: u16, sequence: u32) -> usize {
        let start = bytes.len();
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&message_type.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        start
    }
}
