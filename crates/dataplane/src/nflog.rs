//! The NFLOG reader: packets the ruleset logged at a deciding rule ([`crate::flow_logs`]),
//! read off NETLINK_NETFILTER as [`LoggedPacket`]s with the hit id their log prefix carries.
//!
//! [`NflogReader::open`] binds the socket to one NFLOG group (NFULNL_CFG_CMD_BIND) and asks for
//! the first [`COPY_RANGE`] bytes of each packet (NFULNL_COPY_PACKET): enough for the IP and
//! transport headers, so a large packet costs the kernel no more than a small one. The kernel
//! batches messages per group for up to [`FLUSH_TIMEOUT`] or [`QUEUE_THRESHOLD`] packets.
//! Parsing is pure ([`parse_datagram`], [`logged_packet`]), on bytes. Numbers are the kernel's
//! uapi (`linux/netfilter/nfnetlink_log.h`).
//!
//! Why not the `netlink-packet-netfilter` crate: it reads NFLOG well, but not conntrack's
//! counters or ids, so the conntrack reader would be written by hand anyway; both readers share
//! one socket and message walker here and the nft crate's message writer instead.

use std::time::Duration;

use etherparse::{LaxNetSlice, LaxSlicedPacket};
use netlink_packet_core::{NLA_TYPE_MASK, NlasIterator};
use sluice_flowlog::events::{LoggedPacket, Timestamp, Tuple};
use sluice_nft::wire;
use sluice_policy::HitId;

use crate::netfilter_socket::{NetfilterSocket, ReaderError, messages, now};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u8 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;

/// Bytes of each logged packet copied: an IPv6 header with a few extension headers and a TCP
/// header with options fit.
pub const COPY_RANGE: u32 = 128;
/// The longest a logged packet waits in the kernel before its batch is sent.
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(100);
/// Packets the kernel batches before sending, at most.
pub const QUEUE_THRESHOLD: u32 = 32;
/// The socket's receive buffer: a second of denied-packet logging at the default rate for
/// dozens of hits, with room.
const RECEIVE_BUFFER: usize = 4 << 20;

/// What one read of the socket held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBatch {
    pub packets: Vec<LoggedPacket>,
    /// Logged packets whose payload was not an IPv4 or IPv6 packet (skipped).
    pub unreadable: usize,
}

/// A socket bound to one NFLOG group. Dropping it frees the group: the kernel unbinds a
/// closed socket's groups.
#[derive(Debug)]
pub struct NflogReader {
    socket: NetfilterSocket,
    group: u16,
}

impl NflogReader {
    /// Binds NFLOG group `group` in this network namespace or the named one; reads wait at most
    /// `read_timeout`. Fails with [`ReaderError::GroupTaken`] when another socket holds the group.
    pub fn open(
        group: u16,
        namespace: Option<&str>,
        read_timeout: Duration,
    ) -> Result<NflogReader, ReaderError> {
        let mut socket = NetfilterSocket::open(namespace, read_timeout, RECEIVE_BUFFER)?;
        let sequence = socket.next_sequence();
        let request = bind_message(group, sequence);
        match socket.request(&request, sequence, "binding an NFLOG group") {
            // The kernel's answer when another socket holds the group.
            Err(ReaderError::Refused { errno, namespace, .. }) if errno == nix::libc::EPERM => {
                return Err(ReaderError::GroupTaken { group, namespace });
            }
            result => result?,
        }
        Ok(NflogReader { socket, group })
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// The packets of the next batch the kernel sent; empty when none came within the read
    /// timeout (or the socket overflowed: see [`NflogReader::overflows`]).
    pub fn receive(&mut self) -> Result<LogBatch, ReaderError> {
        match self.socket.next_datagram()? {
            Some(datagram) => parse_datagram(&datagram, now()),
            None => Ok(LogBatch::default()),
        }
    }

    /// The packets of the next batch (waiting as [`NflogReader::receive`] does) and of every
    /// batch already waiting after it, at most `most` batches, so a reader draining bursts
    /// wakes once per burst.
    pub fn receive_waiting(&mut self, most: usize) -> Result<LogBatch, ReaderError> {
        let mut batch = self.receive()?;
        if batch.packets.is_empty() && batch.unreadable == 0 {
            return Ok(batch);
        }
        for _ in 1..most {
            let Some(datagram) = self.socket.next_waiting_datagram()? else {
                break;
            };
            let more = parse_datagram(&datagram, now())?;
            batch.packets.extend(more.packets);
            batch.unreadable += more.unreadable;
        }
        Ok(batch)
    }

    /// How many times the kernel dropped log messages because this socket's buffer was full.
    pub fn overflows(&self) -> u64 {
        self.socket.overflows()
    }
}

/// The message that binds `group`, with the copy mode, the flush timeout and the queue
/// threshold (the kernel applies them in that order, in one message, with one acknowledgement).
fn bind_message(group: u16, sequence: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    let start = wire::begin_message(
        &mut bytes,
        (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
        wire::NLM_F_REQUEST | wire::NLM_F_ACK,
        sequence,
        0,
        group,
    );
    // nfulnl_msg_config_cmd: one byte.
    wire::put(&mut bytes, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    // nfulnl_msg_config_mode: copy_range (big-endian), copy_mode, padding.
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend([NFULNL_COPY_PACKET, 0]);
    wire::put(&mut bytes, NFULA_CFG_MODE, &mode);
    // In hundredths of a second.
    let hundredths = (FLUSH_TIMEOUT.as_millis() / 10) as u32;
    wire::put(&mut bytes, NFULA_CFG_TIMEOUT, &hundredths.to_be_bytes());
    wire::put(&mut bytes, NFULA_CFG_QTHRESH, &QUEUE_THRESHOLD.to_be_bytes());
    wire::end_message(&mut bytes, start);
    bytes
}

/// Reads every NFLOG packet message of one datagram; other messages are skipped.
pub fn parse_datagram(bytes: &[u8], at: Timestamp) -> Result<LogBatch, ReaderError> {
    let mut batch = LogBatch::default();
    for message in messages(bytes)? {
        if message.subsystem() != (NFNL_SUBSYS_ULOG as u8, NFULNL_MSG_PACKET) {
            continue;
        }
        let (_, attributes) = message.netfilter()?;
        let mut prefix = None;
        let mut payload = None;
        for attribute in NlasIterator::new(attributes) {
            let attribute =
                attribute.map_err(|error| ReaderError::Malformed(format!("NFLOG attribute: {error}")))?;
            let kind = attribute.kind() & NLA_TYPE_MASK;
            if matches!(kind, NFULA_PREFIX | NFULA_PAYLOAD) {
                // The value borrowed from the datagram rather than from the attribute's buffer.
                let end = 4 + attribute.value_length();
                let value = attribute.into_inner().get(4..end).unwrap_or_default();
                match kind {
                    NFULA_PREFIX => prefix = Some(value),
                    _ => payload = Some(value),
                }
            }
        }
        match payload.and_then(|payload| logged_packet(prefix, payload, at)) {
            Some(packet) => batch.packets.push(packet),
            None => batch.unreadable += 1,
        }
    }
    Ok(batch)
}

/// The hit a log prefix names: exactly 16 hexadecimal digits (NUL-terminated as the kernel
/// sends it), else `None` (another rule's log on the same group).
pub fn hit_of_prefix(prefix: &[u8]) -> Option<HitId> {
    let text = prefix.split(|byte| *byte == 0).next()?;
    if text.len() != 16 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A logged packet from its prefix and its payload (the IP packet, possibly cut at the copy
/// range); `None` when the payload is not an IPv4 or IPv6 packet.
pub fn logged_packet(prefix: Option<&[u8]>, payload: &[u8], at: Timestamp) -> Option<LoggedPacket> {
    let sliced = LaxSlicedPacket::from_ip(payload).ok()?;
    let (source, destination, length, protocol, transport, fragment) = match sliced.net? {
        LaxNetSlice::Ipv4(ipv4) => {
            let header = ipv4.header();
            (
                header.source_addr().into(),
                header.destination_addr().into(),
                u32::from(header.total_len()),
                ipv4.payload().ip_number.0,
                ipv4.payload().payload,
                // A later fragment carries no transport header.
                header.fragments_offset().value() != 0,
            )
        }
        LaxNetSlice::Ipv6(ipv6) => {
            let header = ipv6.header();
            (
                header.source_addr().into(),
                header.destination_addr().into(),
                u32::from(header.payload_length()) + 40,
                ipv6.payload().ip_number.0,
                ipv6.payload().payload,
                ipv6.is_payload_fragmented(),
            )
        }
        LaxNetSlice::Arp(_) => return None,
    };
    let mut tuple = Tuple {
        source,
        destination,
        protocol,
        source_port: 0,
        destination_port: 0,
    };
    let mut icmp = None;
    let mut tcp_sequence = None;
    let transport = if fragment { &[][..] } else { transport };
    match protocol {
        // TCP, UDP, SCTP and UDP-Lite start with the two ports.
        6 | 17 | 132 | 136 if transport.len() >= 4 => {
            tuple.source_port = u16::from_be_bytes([transport[0], transport[1]]);
            tuple.destination_port = u16::from_be_bytes([transport[2], transport[3]]);
            if protocol == 6 && transport.len() >= 8 {
                tcp_sequence = Some(u32::from_be_bytes([
                    transport[4],
                    transport[5],
                    transport[6],
                    transport[7],
                ]));
            }
        }
        // ICMP and ICMPv6: type and code, and for echo the identifier, as conntrack keys them.
        1 | 58 if transport.len() >= 2 => {
            let (kind, code) = (transport[0], transport[1]);
            icmp = Some((kind, code));
            tuple.destination_port = u16::from_be_bytes([kind, code]);
            let echo = matches!((protocol, kind), (1, 0 | 8) | (58, 128 | 129));
            if echo && transport.len() >= 6 {
                tuple.source_port = u16::from_be_bytes([transport[4], transport[5]]);
            }
        }
        _ => {}
    }
    Some(LoggedPacket {
        at,
        hit: prefix.and_then(hit_of_prefix),
        tuple,
        length,
        icmp,
        tcp_sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter_socket::tests::{AT, attribute, message};

    /// An IPv4 TCP SYN from 10.61.0.5:40000 to 192.0.2.2:8080, 60 bytes long, cut at 48.
    fn tcp_syn() -> Vec<u8> {
        let mut packet = vec![
            0x45, 0, 0, 60, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 61, 0, 5, 192, 0, 2, 2,
        ];
        packet.extend(40000u16.to_be_bytes());
        packet.extend(8080u16.to_be_bytes());
        packet.extend([0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        packet.extend([2, 4, 5, 0xb4, 4, 2, 8, 10]);
        packet
    }

    fn packet_message(prefix: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut body = vec![2, 0, 0x1b, 0xbc];
        body.extend(attribute(1, &[8, 0, 3, 0]));
        body.extend(attribute(NFULA_PAYLOAD, payload));
        body.extend(attribute(NFULA_PREFIX, prefix));
        message(NFNL_SUBSYS_ULOG << 8, 0, 0, &body)
    }

    #[test]
    fn a_logged_syn_reads_as_its_tuple_length_and_hit() {
        let datagram = packet_message(b"00000000deadbeef\0", &tcp_syn());
        let batch = parse_datagram(&datagram, AT).unwrap();
        assert_eq!(batch.unreadable, 0);
        assert_eq!(
            batch.packets,
            [LoggedPacket {
                at: AT,
                hit: Some(HitId(0xdead_beef)),
                tuple: Tuple {
                    source: "10.61.0.5".parse().unwrap(),
                    destination: "192.0.2.2".parse().unwrap(),
                    protocol: 6,
                    source_port: 40000,
                    destination_port: 8080,
                },
                length: 60,
                icmp: None,
                tcp_sequence: Some(1),
            }]
        );
    }

    #[test]
    fn prefixes_that_are_not_hit_ids_read_as_none() {
        assert_eq!(
            hit_of_prefix(b"0123456789abcdef\0"),
            Some(HitId(0x0123_4567_89ab_cdef))
        );
        assert_eq!(
            hit_of_prefix(b"0123456789abcdef"),
            Some(HitId(0x0123_4567_89ab_cdef))
        );
        assert_eq!(hit_of_prefix(b"sluice deny: \0"), None);
        assert_eq!(hit_of_prefix(b"+123456789abcdef\0"), None);
        assert_eq!(hit_of_prefix(b"0123456789abcdef0\0"), None);
        let batch = parse_datagram(&packet_message(b"sluice x\0", &tcp_syn()), AT).unwrap();
        assert_eq!(batch.packets[0].hit, None);
    }

    #[test]
    fn a_cut_packet_still_reads_its_headers_and_full_length() {
        let mut packet = tcp_syn();
        // A 1500-byte packet of which the copy range kept the headers only.
        packet[2..4].copy_from_slice(&1500u16.to_be_bytes());
        let read = logged_packet(None, &packet, AT).unwrap();
        assert_eq!(read.length, 1500);
        assert_eq!(
            (read.tuple.source_port, read.tuple.destination_port),
            (40000, 8080)
        );
    }

    #[test]
    fn icmp_echo_is_keyed_as_conntrack_keys_it() {
        // Echo request, id 0x1234, from 10.61.0.5 to 192.0.2.2.
        let mut packet = vec![
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 61, 0, 5, 192, 0, 2, 2,
        ];
        packet.extend([8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        let read = logged_packet(None, &packet, AT).unwrap();
        assert_eq!(read.icmp, Some((8, 0)));
        assert_eq!(read.tuple.source_port, 0x1234);
        assert_eq!(read.tuple.destination_port, 8 << 8);
        // ICMPv6 echo request over IPv6.
        let mut packet = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
        packet.extend("fd00::5".parse::<std::net::Ipv6Addr>().unwrap().octets());
        packet.extend("2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        packet.extend([128, 0, 0, 0, 0, 7, 0, 1]);
        let read = logged_packet(None, &packet, AT).unwrap();
        assert_eq!(read.length, 48);
        assert_eq!(read.tuple.protocol, 58);
        assert_eq!(
            (read.tuple.source_port, read.tuple.destination_port),
            (7, 128 << 8)
        );
    }

    #[test]
    fn non_ip_payloads_and_other_messages_are_skipped_and_counted() {
        let mut datagram = packet_message(b"00000000deadbeef\0", &[0x10, 1, 2, 3]);
        // An acknowledgement in the same datagram is not a packet.
        datagram.extend(message(2, 0, 9, &0i32.to_ne_bytes()));
        let batch = parse_datagram(&datagram, AT).unwrap();
        assert!(batch.packets.is_empty());
        assert_eq!(batch.unreadable, 1);
    }

    #[test]
    fn the_bind_message_asks_for_headers_a_short_flush_and_an_ack() {
        let bytes = bind_message(7100, 42);
        let walked = messages(&bytes).unwrap();
        assert_eq!(walked.len(), 1);
        assert_eq!(walked[0].kind, (4 << 8) | 1);
        assert_eq!(walked[0].flags, wire::NLM_F_REQUEST | wire::NLM_F_ACK);
        assert_eq!(walked[0].sequence, 42);
        // The group is nfgenmsg's resource id, big-endian.
        assert_eq!(&walked[0].body[2..4], &7100u16.to_be_bytes());
        let (_, attributes) = walked[0].netfilter().unwrap();
        let found: Vec<(u16, Vec<u8>)> = NlasIterator::new(attributes)
            .map(|attribute| {
                let attribute = attribute.unwrap();
                (attribute.kind(), attribute.value().to_vec())
            })
            .collect();
        assert_eq!(
            found,
            [
                (NFULA_CFG_CMD, vec![1]),
                (NFULA_CFG_MODE, vec![0, 0, 0, 128, 2, 0]),
                (NFULA_CFG_TIMEOUT, vec![0, 0, 0, 10]),
                (NFULA_CFG_QTHRESH, vec![0, 0, 0, 32]),
            ]
        );
    }
}
