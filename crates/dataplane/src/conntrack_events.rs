//! Connection tracking for flow logs: events as connections start and end, a dump of the live
//! entries with their counters, and the switch that makes the kernel count (accounting).
//!
//! - [`ConntrackEvents::subscribe`] joins ctnetlink's multicast groups (NFNLGRP_CONNTRACK_NEW,
//!   optionally _UPDATE, and _DESTROY): a New event when a connection's first packet is
//!   confirmed, a Destroy event with the final counters when the entry goes (closed and past
//!   its last timeout, or deleted). The kernel sends no counters with New and Update events.
//! - [`ConntrackDump::dump`] lists every live entry (IPCTNL_MSG_CT_GET with NLM_F_DUMP), read
//!   as Update events with the counters so far: how long-lived connections are counted, and,
//!   for the agent's default reading by dumps alone, how ends are seen (a TCP entry in TIME_WAIT
//!   or CLOSE is `closed`; an entry that is gone from the next dump has ended). A dump
//!   also evicts the entries whose last timeout ran out (6.18, `ctnetlink_dump_table`), which
//!   the kernel's garbage collector, when it has few entries, reaps up to a minute late: a
//!   periodic dump makes their Destroy events arrive on time.
//! - [`enable_accounting`] sets `net.netfilter.nf_conntrack_acct` in the namespace; only
//!   connections that start after it carry counters.
//!
//! Parsing is pure ([`parse_datagram`]), on bytes. Numbers are the kernel's uapi
//! (`linux/netfilter/nfnetlink_conntrack.h`, `linux/netfilter/nfnetlink.h`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use netlink_packet_core::{NLA_TYPE_MASK, NlasIterator};
use sluice_flowlog::events::{ConntrackEvent, ConntrackEventKind, Counters, Timestamp, Tuple};
use sluice_nft::wire;

use crate::netfilter_socket::{
    NLMSG_DONE, NLMSG_ERROR, NetfilterSocket, ReaderError, Received, be_u16, be_u32, be_u64, error_code,
    messages, now,
};

const NFNL_SUBSYS_CTNETLINK: u8 = 1;
const IPCTNL_MSG_CT_NEW: u8 = 0;
const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_DELETE: u8 = 2;
const NLM_F_CREATE: u16 = 0x400;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_PROTOINFO: u16 = 4;
const CTA_MARK: u16 = 8;
const CTA_ID: u16 = 12;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
/// `enum tcp_conntrack`: TIME_WAIT and CLOSE are the states of a connection that ended.
const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
const TCP_CONNTRACK_CLOSE: u8 = 8;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_COUNTERS32_PACKETS: u16 = 3;
const CTA_COUNTERS32_BYTES: u16 = 4;

/// The accounting switch, per network namespace.
const ACCOUNTING: &str = "/proc/sys/net/netfilter/nf_conntrack_acct";
/// Events come in bursts (every connection of a busy node); a large buffer rides them out.
const EVENT_BUFFER: usize = 16 << 20;
/// A dump is read as it is asked for.
const DUMP_BUFFER: usize = 1 << 20;
const DUMP_TIMEOUT: Duration = Duration::from_secs(2);

/// ctnetlink's multicast groups (NFNLGRP_CONNTRACK_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConntrackGroup {
    New = 1,
    /// Every state change: many per connection, without counters. Flow logs do without.
    Update = 2,
    Destroy = 3,
}

/// What one read held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConntrackBatch {
    pub events: Vec<ConntrackEvent>,
    /// Messages that named no IPv4 or IPv6 tuple (skipped).
    pub unreadable: usize,
}

/// A socket subscribed to conntrack events.
#[derive(Debug)]
pub struct ConntrackEvents {
    socket: NetfilterSocket,
}

impl ConntrackEvents {
    /// Subscribes to `groups` in this network namespace or the named one; reads wait at most
    /// `read_timeout`.
    pub fn subscribe(
        namespace: Option<&str>,
        groups: &[ConntrackGroup],
        read_timeout: Duration,
    ) -> Result<ConntrackEvents, ReaderError> {
        let mut socket = NetfilterSocket::open(namespace, read_timeout, EVENT_BUFFER)?;
        for group in groups {
            socket.add_membership(*group as u32)?;
        }
        Ok(ConntrackEvents { socket })
    }

    /// The events of the next datagram; empty when none came within the read timeout, or
    /// when the socket overflowed (the kernel dropped events: see
    /// [`ConntrackEvents::overflows`]; a [`ConntrackDump`] recovers the live entries).
    pub fn receive(&mut self) -> Result<ConntrackBatch, ReaderError> {
        match self.socket.next_datagram()? {
            Some(datagram) => parse_datagram(&datagram, now()),
            None => Ok(ConntrackBatch::default()),
        }
    }

    /// The events of the next datagram (waiting as [`ConntrackEvents::receive`] does) and of
    /// every datagram already waiting after it, at most `most` datagrams: each event is a
    /// datagram of its own, so a reader draining bursts wakes once per burst, not per event.
    pub fn receive_waiting(&mut self, most: usize) -> Result<ConntrackBatch, ReaderError> {
        let mut batch = self.receive()?;
        if batch.events.is_empty() && batch.unreadable == 0 {
            return Ok(batch);
        }
        for _ in 1..most {
            let Some(datagram) = self.socket.next_waiting_datagram()? else {
                break;
            };
            let more = parse_datagram(&datagram, now())?;
            batch.events.extend(more.events);
            batch.unreadable += more.unreadable;
        }
        Ok(batch)
    }

    /// How many times the kernel dropped events because this socket's buffer was full.
    pub fn overflows(&self) -> u64 {
        self.socket.overflows()
    }
}

/// A socket that dumps the conntrack table.
#[derive(Debug)]
pub struct ConntrackDump {
    socket: NetfilterSocket,
}

impl ConntrackDump {
    pub fn open(namespace: Option<&str>) -> Result<ConntrackDump, ReaderError> {
        Ok(ConntrackDump {
            socket: NetfilterSocket::open(namespace, DUMP_TIMEOUT, DUMP_BUFFER)?,
        })
    }

    /// Every live entry of both families, as Update events with their counters so far.
    pub fn dump(&mut self) -> Result<ConntrackBatch, ReaderError> {
        let sequence = self.socket.next_sequence();
        // Before asking: a connection opened before this time and not in the answer has ended.
        let at = now();
        self.socket
            .send(&dump_request(sequence), "asking for the conntrack table")?;
        let mut batch = ConntrackBatch::default();
        loop {
            let datagram = match self.socket.receive()? {
                Received::Datagram(datagram) => datagram,
                Received::Nothing => {
                    return Err(ReaderError::NoAnswer {
                        doing: "dumping the conntrack table",
                        namespace: self.socket.namespace().map(str::to_string),
                        timeout: DUMP_TIMEOUT,
                    });
                }
                // The dump's own answers are not dropped (the kernel waits for room).
                Received::Overflow => continue,
            };
            let mut done = false;
            for message in messages(&datagram)? {
                if message.sequence != sequence {
                    continue;
                }
                match message.kind {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        let errno = error_code(message.body)?;
                        if errno != 0 {
                            return Err(ReaderError::Refused {
                                doing: "dumping the conntrack table",
                                namespace: self.socket.namespace().map(str::to_string),
                                errno,
                            });
                        }
                    }
                    _ => match event(&message, at)? {
                        Some(event) => batch.events.push(event),
                        None => batch.unreadable += 1,
                    },
                }
            }
            if done {
                return Ok(batch);
            }
        }
    }
}

/// Turns on connection accounting (packet and byte counters) in this network namespace or the
/// named one; returns whether it was on already. Connections that started before keep no
/// counters.
pub fn enable_accounting(namespace: Option<&str>) -> Result<bool, ReaderError> {
    let io = |doing: &'static str| {
        move |source| ReaderError::Io {
            doing,
            namespace: namespace.map(str::to_string),
            source,
        }
    };
    crate::netlink::in_network_namespace(namespace, || -> Result<bool, ReaderError> {
        let before = std::fs::read_to_string(ACCOUNTING)
            .map_err(io("reading /proc/sys/net/netfilter/nf_conntrack_acct"))?;
        if before.trim() == "1" {
            return Ok(true);
        }
        std::fs::write(ACCOUNTING, "1").map_err(io("writing /proc/sys/net/netfilter/nf_conntrack_acct"))?;
        Ok(false)
    })?
}

fn dump_request(sequence: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(32);
    // Family AF_UNSPEC: both IPv4 and IPv6 entries.
    let start = wire::begin_message(
        &mut bytes,
        (u16::from(NFNL_SUBSYS_CTNETLINK) << 8) | u16::from(IPCTNL_MSG_CT_GET),
        wire::NLM_F_REQUEST | wire::NLM_F_DUMP,
        sequence,
        0,
        0,
    );
    wire::end_message(&mut bytes, start);
    bytes
}

/// Reads every conntrack event of one datagram; other messages are skipped.
pub fn parse_datagram(bytes: &[u8], at: Timestamp) -> Result<ConntrackBatch, ReaderError> {
    let mut batch = ConntrackBatch::default();
    for message in messages(bytes)? {
        if message.subsystem().0 != NFNL_SUBSYS_CTNETLINK {
            continue;
        }
        match event(&message, at)? {
            Some(event) => batch.events.push(event),
            None => batch.unreadable += 1,
        }
    }
    Ok(batch)
}

/// One ctnetlink message as an event: New (NLM_F_CREATE) or Update for IPCTNL_MSG_CT_NEW,
/// Destroy for IPCTNL_MSG_CT_DELETE. `None` for a message without both tuples.
fn event(
    message: &crate::netfilter_socket::Message<'_>,
    at: Timestamp,
) -> Result<Option<ConntrackEvent>, ReaderError> {
    let kind = match message.subsystem().1 {
        IPCTNL_MSG_CT_NEW if message.flags & NLM_F_CREATE != 0 => ConntrackEventKind::New,
        IPCTNL_MSG_CT_NEW => ConntrackEventKind::Update,
        IPCTNL_MSG_CT_DELETE => ConntrackEventKind::Destroy,
        _ => return Ok(None),
    };
    let (_, attributes) = message.netfilter()?;
    let mut original = None;
    let mut reply = None;
    let mut id = None;
    let mut original_counters = None;
    let mut reply_counters = None;
    let mut closed = false;
    let mut mark = 0;
    for attribute in NlasIterator::new(attributes) {
        let attribute = malformed(attribute, "conntrack attribute")?;
        let value = attribute.value();
        match attribute.kind() & NLA_TYPE_MASK {
            CTA_TUPLE_ORIG => original = tuple(value)?,
            CTA_TUPLE_REPLY => reply = tuple(value)?,
            CTA_ID => id = Some(be_u32(value, "CTA_ID")?),
            CTA_COUNTERS_ORIG => original_counters = Some(counters(value)?),
            CTA_COUNTERS_REPLY => reply_counters = Some(counters(value)?),
            CTA_PROTOINFO => closed = tcp_closed(value)?,
            CTA_MARK => mark = be_u32(value, "CTA_MARK")?,
            _ => {}
        }
    }
    let (Some(original), Some(reply)) = (original, reply) else {
        return Ok(None);
    };
    Ok(Some(ConntrackEvent {
        at,
        kind,
        id: id.unwrap_or_default(),
        original,
        reply,
        original_counters,
        reply_counters,
        closed,
        mark,
    }))
}

/// CTA_PROTOINFO: whether a TCP entry's state is TIME_WAIT or CLOSE (false for other protocols).
fn tcp_closed(attributes: &[u8]) -> Result<bool, ReaderError> {
    for attribute in NlasIterator::new(attributes) {
        let attribute = malformed(attribute, "CTA_PROTOINFO")?;
        if attribute.kind() & NLA_TYPE_MASK != CTA_PROTOINFO_TCP {
            continue;
        }
        for inner in NlasIterator::new(attribute.value()) {
            let inner = malformed(inner, "CTA_PROTOINFO_TCP")?;
            if inner.kind() & NLA_TYPE_MASK == CTA_PROTOINFO_TCP_STATE {
                let state = inner.value().first().copied();
                return Ok(matches!(
                    state,
                    Some(TCP_CONNTRACK_TIME_WAIT | TCP_CONNTRACK_CLOSE)
                ));
            }
        }
    }
    Ok(false)
}

fn malformed<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> Result<T, ReaderError> {
    result.map_err(|error| ReaderError::Malformed(format!("{what}: {error}")))
}

/// CTA_TUPLE_ORIG or _REPLY: addresses and the protocol part; `None` for a family other than
/// IPv4 and IPv6.
fn tuple(attributes: &[u8]) -> Result<Option<Tuple>, ReaderError> {
    let mut source = None;
    let mut destination = None;
    let mut protocol = None;
    let mut ports = (0u16, 0u16);
    let mut icmp = (None, 0u8, 0u8);
    for attribute in NlasIterator::new(attributes) {
        let attribute = malformed(attribute, "conntrack tuple")?;
        match attribute.kind() & NLA_TYPE_MASK {
            CTA_TUPLE_IP => {
                for address in NlasIterator::new(attribute.value()) {
                    let address = malformed(address, "conntrack tuple address")?;
                    let value = address.value();
                    let read = match address.kind() & NLA_TYPE_MASK {
                        CTA_IP_V4_SRC | CTA_IP_V4_DST => <[u8; 4]>::try_from(value)
                            .ok()
                            .map(|octets| IpAddr::V4(Ipv4Addr::from(octets))),
                        CTA_IP_V6_SRC | CTA_IP_V6_DST => <[u8; 16]>::try_from(value)
                            .ok()
                            .map(|octets| IpAddr::V6(Ipv6Addr::from(octets))),
                        _ => continue,
                    };
                    let read = read.ok_or_else(|| {
                        ReaderError::Malformed(format!("a conntrack address of {} bytes", value.len()))
                    })?;
                    match address.kind() & NLA_TYPE_MASK {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => source = Some(read),
                        _ => destination = Some(read),
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for part in NlasIterator::new(attribute.value()) {
                    let part = malformed(part, "conntrack tuple protocol")?;
                    let value = part.value();
                    match part.kind() & NLA_TYPE_MASK {
                        CTA_PROTO_NUM => protocol = value.first().copied(),
                        CTA_PROTO_SRC_PORT => ports.0 = be_u16(value, "CTA_PROTO_SRC_PORT")?,
                        CTA_PROTO_DST_PORT => ports.1 = be_u16(value, "CTA_PROTO_DST_PORT")?,
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                            icmp.0 = Some(be_u16(value, "CTA_PROTO_ICMP_ID")?)
                        }
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                            icmp.1 = value.first().copied().unwrap_or(0)
                        }
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                            icmp.2 = value.first().copied().unwrap_or(0)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(source), Some(destination), Some(protocol)) = (source, destination, protocol) else {
        return Ok(None);
    };
    // ICMP as conntrack keys it: the echo id as the source port, type and code as the
    // destination port.
    let (source_port, destination_port) = match icmp.0 {
        Some(identifier) => (identifier, u16::from_be_bytes([icmp.1, icmp.2])),
        None => ports,
    };
    Ok(Some(Tuple {
        source,
        destination,
        protocol,
        source_port,
        destination_port,
    }))
}

/// CTA_COUNTERS_ORIG or _REPLY (64-bit counters; 32-bit ones from old kernels too).
fn counters(attributes: &[u8]) -> Result<Counters, ReaderError> {
    let mut counted = Counters::default();
    for attribute in NlasIterator::new(attributes) {
        let attribute = malformed(attribute, "conntrack counters")?;
        let value = attribute.value();
        match attribute.kind() & NLA_TYPE_MASK {
            CTA_COUNTERS_PACKETS => counted.packets = be_u64(value, "CTA_COUNTERS_PACKETS")?,
            CTA_COUNTERS_BYTES => counted.bytes = be_u64(value, "CTA_COUNTERS_BYTES")?,
            CTA_COUNTERS32_PACKETS => counted.packets = u64::from(be_u32(value, "CTA_COUNTERS32_PACKETS")?),
            CTA_COUNTERS32_BYTES => counted.bytes = u64::from(be_u32(value, "CTA_COUNTERS32_BYTES")?),
            _ => {}
        }
    }
    Ok(counted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter_socket::tests::{AT, attribute, message};

    fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attribute(kind | netlink_packet_core::NLA_F_NESTED, &parts.concat())
    }

    fn ipv4_tuple(kind: u16, source: [u8; 4], destination: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
        nested(
            kind,
            &[
                nested(
                    CTA_TUPLE_IP,
                    &[
                        attribute(CTA_IP_V4_SRC, &source),
                        attribute(CTA_IP_V4_DST, &destination),
                    ],
                ),
                nested(
                    CTA_TUPLE_PROTO,
                    &[
                        attribute(CTA_PROTO_NUM, &[6]),
                        attribute(CTA_PROTO_SRC_PORT, &ports.0.to_be_bytes()),
                        attribute(CTA_PROTO_DST_PORT, &ports.1.to_be_bytes()),
                    ],
                ),
            ],
        )
    }

    fn counters_attribute(kind: u16, packets: u64, bytes: u64) -> Vec<u8> {
        nested(
            kind,
            &[
                attribute(CTA_COUNTERS_PACKETS, &packets.to_be_bytes()),
                attribute(CTA_COUNTERS_BYTES, &bytes.to_be_bytes()),
            ],
        )
    }

    fn ct_message(message_type: u8, flags: u16, attributes: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 0];
        body.extend(attributes.concat());
        message((1 << 8) | u16::from(message_type), flags, 0, &body)
    }

    fn tcp(source: &str, destination: &str, ports: (u16, u16)) -> Tuple {
        Tuple {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            protocol: 6,
            source_port: ports.0,
            destination_port: ports.1,
        }
    }

    #[test]
    fn new_and_destroy_events_read_with_tuples_id_and_final_counters() {
        let original = ipv4_tuple(CTA_TUPLE_ORIG, [10, 61, 0, 5], [192, 0, 2, 2], (40000, 8080));
        let reply = ipv4_tuple(CTA_TUPLE_REPLY, [192, 0, 2, 2], [10, 61, 0, 5], (8080, 40000));
        let id = attribute(CTA_ID, &77u32.to_be_bytes());
        let mut datagram = ct_message(
            IPCTNL_MSG_CT_NEW,
            NLM_F_CREATE | 0x200,
            &[original.clone(), reply.clone(), id.clone()],
        );
        datagram.extend(ct_message(
            IPCTNL_MSG_CT_DELETE,
            0,
            &[
                original,
                reply,
                counters_attribute(CTA_COUNTERS_ORIG, 12, 10_624),
                counters_attribute(CTA_COUNTERS_REPLY, 8, 432),
                id,
            ],
        ));
        let batch = parse_datagram(&datagram, AT).unwrap();
        assert_eq!(batch.unreadable, 0);
        let expected_original = tcp("10.61.0.5", "192.0.2.2", (40000, 8080));
        let expected_reply = tcp("192.0.2.2", "10.61.0.5", (8080, 40000));
        assert_eq!(
            batch.events,
            [
                ConntrackEvent {
                    at: AT,
                    kind: ConntrackEventKind::New,
                    id: 77,
                    original: expected_original,
                    reply: expected_reply,
                    original_counters: None,
                    reply_counters: None,
                    closed: false,
                    mark: 0,
                },
                ConntrackEvent {
                    at: AT,
                    kind: ConntrackEventKind::Destroy,
                    id: 77,
                    original: expected_original,
                    reply: expected_reply,
                    original_counters: Some(Counters {
                        packets: 12,
                        bytes: 10_624
                    }),
                    reply_counters: Some(Counters {
                        packets: 8,
                        bytes: 432
                    }),
                    closed: false,
                    mark: 0,
                },
            ]
        );
    }

    #[test]
    fn a_dumped_tcp_entry_in_time_wait_or_close_is_closed_and_one_established_is_not() {
        let protocol_information = |state: u8| {
            nested(
                CTA_PROTOINFO,
                &[nested(
                    CTA_PROTOINFO_TCP,
                    &[attribute(CTA_PROTOINFO_TCP_STATE, &[state])],
                )],
            )
        };
        for (state, closed) in [(3, false), (4, false), (7, true), (8, true)] {
            let datagram = ct_message(
                IPCTNL_MSG_CT_NEW,
                0,
                &[
                    ipv4_tuple(CTA_TUPLE_ORIG, [10, 61, 0, 5], [192, 0, 2, 2], (40000, 8080)),
                    ipv4_tuple(CTA_TUPLE_REPLY, [192, 0, 2, 2], [10, 61, 0, 5], (8080, 40000)),
                    protocol_information(state),
                ],
            );
            let batch = parse_datagram(&datagram, AT).unwrap();
            assert_eq!(batch.events[0].closed, closed, "TCP state {state}");
        }
    }

    #[test]
    fn an_update_without_create_is_an_update_and_icmp_is_keyed_by_id_type_and_code() {
        let icmp_tuple = |kind: u16, icmp_type: u8| {
            nested(
                kind,
                &[
                    nested(
                        CTA_TUPLE_IP,
                        &[
                            attribute(CTA_IP_V6_SRC, &"fd00::5".parse::<Ipv6Addr>().unwrap().octets()),
                            attribute(
                                CTA_IP_V6_DST,
                                &"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets(),
                            ),
                        ],
                    ),
                    nested(
                        CTA_TUPLE_PROTO,
                        &[
                            attribute(CTA_PROTO_NUM, &[58]),
                            attribute(CTA_PROTO_ICMPV6_ID, &7u16.to_be_bytes()),
                            attribute(CTA_PROTO_ICMPV6_TYPE, &[icmp_type]),
                            attribute(CTA_PROTO_ICMPV6_CODE, &[0]),
                        ],
                    ),
                ],
            )
        };
        let datagram = ct_message(
            IPCTNL_MSG_CT_NEW,
            0,
            &[icmp_tuple(CTA_TUPLE_ORIG, 128), icmp_tuple(CTA_TUPLE_REPLY, 129)],
        );
        let batch = parse_datagram(&datagram, AT).unwrap();
        let event = &batch.events[0];
        assert_eq!(event.kind, ConntrackEventKind::Update);
        assert_eq!(event.original.protocol, 58);
        assert_eq!(event.original.source, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(
            (event.original.source_port, event.original.destination_port),
            (7, 128 << 8)
        );
        assert_eq!(event.reply.destination_port, 129 << 8);
    }

    #[test]
    fn messages_without_tuples_are_counted_and_bad_sizes_are_errors() {
        let batch = parse_datagram(&ct_message(IPCTNL_MSG_CT_DELETE, 0, &[]), AT).unwrap();
        assert_eq!((batch.events.len(), batch.unreadable), (0, 1));
        let short_id = ct_message(
            IPCTNL_MSG_CT_NEW,
            0,
            &[
                ipv4_tuple(CTA_TUPLE_ORIG, [10, 0, 0, 1], [10, 0, 0, 2], (1, 2)),
                attribute(CTA_ID, &[1, 2]),
            ],
        );
        let error = parse_datagram(&short_id, AT).unwrap_err().to_string();
        assert!(error.contains("CTA_ID"), "{error}");
        let bad_address = ct_message(
            IPCTNL_MSG_CT_NEW,
            0,
            &[nested(
                CTA_TUPLE_ORIG,
                &[nested(CTA_TUPLE_IP, &[attribute(CTA_IP_V4_SRC, &[10, 0, 0])])],
            )],
        );
        assert!(parse_datagram(&bad_address, AT).is_err());
    }

    #[test]
    fn the_dump_request_asks_for_both_families() {
        let bytes = dump_request(5);
        let walked = messages(&bytes).unwrap();
        assert_eq!(walked[0].kind, (1 << 8) | 1);
        assert_eq!(walked[0].flags, wire::NLM_F_REQUEST | wire::NLM_F_DUMP);
        assert_eq!(walked[0].body, &[0, 0, 0, 0]);
    }
}
