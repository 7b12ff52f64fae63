//! IP packets as the kernel queues them, read down to the transport payload with `etherparse`.
//! Only what learning needs survives: the two socket addresses and, for TCP, the sequence
//! number and the flags that open and close a stream.

use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// A UDP datagram or TCP segment with its payload borrowed from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport<'a> {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: &'a [u8],
    pub kind: TransportKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Udp,
    Tcp(TcpFlags),
}

/// What of a TCP header reassembly needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlags {
    pub sequence: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

/// Why a packet carries nothing to learn from at the transport level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Not a well-formed IPv4 or IPv6 packet (bad lengths, unknown version, cut short).
    Malformed,
    /// A fragment: the queue sits after conntrack's defragmentation, so a fragment here is
    /// someone else's business and teaches nothing.
    Fragment,
    /// Neither UDP nor TCP.
    OtherProtocol,
}

/// Reads an IP packet (no link-layer header) down to its UDP or TCP payload.
pub fn read(packet: &[u8]) -> Result<Transport<'_>, Unreadable> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|_| Unreadable::Malformed)?;
    let (source, destination) = match &sliced.net {
        Some(NetSlice::Ipv4(ipv4)) => {
            if ipv4.is_payload_fragmented() {
                return Err(Unreadable::Fragment);
            }
            let header = ipv4.header();
            (
                IpAddr::V4(header.source_addr()),
                IpAddr::V4(header.destination_addr()),
            )
        }
        Some(NetSlice::Ipv6(ipv6)) => {
            if ipv6.is_payload_fragmented() {
                return Err(Unreadable::Fragment);
            }
            let header = ipv6.header();
            (
                IpAddr::V6(header.source_addr()),
                IpAddr::V6(header.destination_addr()),
            )
        }
        _ => return Err(Unreadable::Malformed),
    };
    match sliced.transport {
        Some(TransportSlice::Udp(udp)) => Ok(Transport {
            source: SocketAddr::new(source, udp.source_port()),
            destination: SocketAddr::new(destination, udp.destination_port()),
            payload: udp.payload(),
            kind: TransportKind::Udp,
        }),
        Some(TransportSlice::Tcp(tcp)) => Ok(Transport {
            source: SocketAddr::new(source, tcp.source_port()),
            destination: SocketAddr::new(destination, tcp.destination_port()),
            payload: tcp.payload(),
            kind: TransportKind::Tcp(TcpFlags {
                sequence: tcp.sequence_number(),
                syn: tcp.syn(),
                fin: tcp.fin(),
                rst: tcp.rst(),
            }),
        }),
        _ => Err(Unreadable::OtherProtocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn udp_over_ipv4_gives_addresses_ports_and_payload() {
        let mut packet = Vec::new();
        PacketBuilder::ipv4([10, 96, 0, 10], [10, 65, 0, 2], 64)
            .udp(53, 40000)
            .write(&mut packet, b"hello")
            .unwrap();
        let transport = read(&packet).unwrap();
        assert_eq!(transport.source, "10.96.0.10:53".parse().unwrap());
        assert_eq!(transport.destination, "10.65.0.2:40000".parse().unwrap());
        assert_eq!(transport.payload, b"hello");
        assert_eq!(transport.kind, TransportKind::Udp);
    }

    #[test]
    fn tcp_over_ipv6_gives_sequence_and_flags() {
        let source: std::net::Ipv6Addr = "fd00::53".parse().unwrap();
        let destination: std::net::Ipv6Addr = "fd00:1::2".parse().unwrap();
        let mut packet = Vec::new();
        PacketBuilder::ipv6(source.octets(), destination.octets(), 64)
            .tcp(53, 40000, 1234, 1000)
            .fin()
            .write(&mut packet, b"xy")
            .unwrap();
        let transport = read(&packet).unwrap();
        assert_eq!(transport.source, "[fd00::53]:53".parse().unwrap());
        assert_eq!(
            transport.kind,
            TransportKind::Tcp(TcpFlags {
                sequence: 1234,
                syn: false,
                fin: true,
                rst: false
            })
        );
        assert_eq!(transport.payload, b"xy");
    }

    #[test]
    fn fragments_other_protocols_and_garbage_are_unreadable() {
        let mut packet = Vec::new();
        PacketBuilder::ipv4([10, 96, 0, 10], [10, 65, 0, 2], 64)
            .udp(53, 40000)
            .write(&mut packet, b"hello")
            .unwrap();
        let mut fragment = packet.clone();
        fragment[6] |= 0x20; // more fragments
        assert_eq!(read(&fragment), Err(Unreadable::Fragment));

        let mut ping = Vec::new();
        PacketBuilder::ipv4([10, 96, 0, 10], [10, 65, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut ping, b"")
            .unwrap();
        assert_eq!(read(&ping), Err(Unreadable::OtherProtocol));

        assert_eq!(read(&[]), Err(Unreadable::Malformed));
        assert_eq!(read(&packet[..packet.len() - 10]), Err(Unreadable::Malformed));
    }
}
