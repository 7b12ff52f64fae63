//! The lab's own stub resolver: one question to one server over UDP or TCP (RFC 1035 §4.2.2's
//! two-byte length prefix), the answer's records, and the addresses at the end of its CNAME
//! chain. Probes run it inside a pod's namespace, where `/etc/resolv.conf` is the pod's.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};

use super::zone::Transport;

/// Longest CNAME chain followed in an answer.
const MAX_CHAIN: usize = 8;

/// The record types probes and tests ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "UPPERCASE")]
pub enum QueryType {
    A,
    Aaaa,
    Cname,
}

impl QueryType {
    fn qtype(self) -> QTYPE {
        QTYPE::TYPE(match self {
            QueryType::A => TYPE::A,
            QueryType::Aaaa => TYPE::AAAA,
            QueryType::Cname => TYPE::CNAME,
        })
    }
}

/// A reply, reduced to what probes and tests look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lookup {
    pub server: SocketAddr,
    /// `NOERROR`, `NXDOMAIN`, `REFUSED`, …
    pub rcode: String,
    pub authoritative: bool,
    pub truncated: bool,
    pub records: Vec<Record>,
    /// The A and AAAA data at the end of the CNAME chain from the asked name, in answer order.
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// `A`, `AAAA`, `CNAME` or the type's number.
    #[serde(rename = "type")]
    pub kind: String,
    pub ttl: u32,
    pub data: String,
}

/// Why no reply came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No reply in time: what a policy drop of the query looks like.
    TimedOut(String),
    /// Refused or unreachable on the way, or a reply that does not parse.
    Failed(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::TimedOut(detail) | LookupError::Failed(detail) => formatter.write_str(detail),
        }
    }
}

/// The first `nameserver` of a resolv.conf file.
pub fn nameserver_from(path: &Path) -> Result<IpAddr, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .next()
        .ok_or_else(|| format!("{} names no nameserver", path.display()))
}

/// Asks `server` for `name` once and waits at most `timeout` for the reply.
pub fn query(
    server: SocketAddr,
    name: &str,
    kind: QueryType,
    transport: Transport,
    timeout: Duration,
) -> Result<Lookup, LookupError> {
    let id = random_id();
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|error| LookupError::Failed(format!("`{name}`: {error}")))?;
    packet.questions.push(Question::new(
        qname,
        kind.qtype(),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let message = packet
        .build_bytes_vec()
        .map_err(|error| LookupError::Failed(error.to_string()))?;
    let reply = match transport {
        Transport::Udp => exchange_udp(server, &message, id, timeout)?,
        Transport::Tcp => exchange_tcp(server, &message, timeout)?,
    };
    read_reply(server, name, id, &reply)
}

fn random_id() -> u16 {
    // RandomState is seeded randomly per process: enough for a query id, without a crate.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish() as u16
}

fn io_error(error: &std::io::Error, what: &str) -> LookupError {
    match error.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            LookupError::TimedOut(format!("no DNS reply ({what})"))
        }
        _ => LookupError::Failed(format!("{what}: {error}")),
    }
}

fn exchange_udp(
    server: SocketAddr,
    message: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Vec<u8>, LookupError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|error| io_error(&error, "binding"))?;
    // Connected: only the server's datagrams arrive, and ICMP errors are reported.
    socket
        .connect(server)
        .map_err(|error| io_error(&error, "connecting"))?;
    socket
        .send(message)
        .map_err(|error| io_error(&error, "sending"))?;
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0_u8; 65_535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LookupError::TimedOut("no DNS reply".into()));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|error| io_error(&error, "waiting"))?;
        let length = socket
            .recv(&mut buffer)
            .map_err(|error| io_error(&error, "waiting"))?;
        // A datagram with another id is not our reply; keep waiting for ours.
        if length >= 2 && u16::from_be_bytes([buffer[0], buffer[1]]) == id {
            buffer.truncate(length);
            return Ok(buffer);
        }
    }
}

fn exchange_tcp(server: SocketAddr, message: &[u8], timeout: Duration) -> Result<Vec<u8>, LookupError> {
    let mut stream =
        TcpStream::connect_timeout(&server, timeout).map_err(|error| io_error(&error, "connecting"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|error| io_error(&error, "connecting"))?;
    let length = u16::try_from(message.len()).map_err(|_| LookupError::Failed("query too long".into()))?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream
        .write_all(&framed)
        .map_err(|error| io_error(&error, "sending"))?;
    let mut prefix = [0_u8; 2];
    stream
        .read_exact(&mut prefix)
        .map_err(|error| io_error(&error, "reading the length"))?;
    let mut reply = vec![0_u8; usize::from(u16::from_be_bytes(prefix))];
    stream
        .read_exact(&mut reply)
        .map_err(|error| io_error(&error, "reading the reply"))?;
    Ok(reply)
}

fn read_reply(server: SocketAddr, name: &str, id: u16, reply: &[u8]) -> Result<Lookup, LookupError> {
    let packet =
        Packet::parse(reply).map_err(|error| LookupError::Failed(format!("unreadable reply: {error}")))?;
    if packet.id() != id || !packet.has_flags(PacketFlag::RESPONSE) {
        return Err(LookupError::Failed(
            "the reply is not an answer to this query".into(),
        ));
    }
    let records: Vec<Record> = packet
        .answers
        .iter()
        .map(|record| {
            let (kind, data) = match &record.rdata {
                RData::A(address) => ("A".to_string(), Ipv4Addr::from(address.address).to_string()),
                RData::AAAA(address) => ("AAAA".to_string(), Ipv6Addr::from(address.address).to_string()),
                RData::CNAME(target) => ("CNAME".to_string(), target.0.to_string()),
                other => (u16::from(other.type_code()).to_string(), String::new()),
            };
            Record {
                name: record.name.to_string(),
                kind,
                ttl: record.ttl,
                data,
            }
        })
        .collect();
    Ok(Lookup {
        server,
        rcode: rcode_name(packet.rcode()),
        authoritative: packet.has_flags(PacketFlag::AUTHORITATIVE_ANSWER),
        truncated: packet.has_flags(PacketFlag::TRUNCATION),
        addresses: chain_addresses(name, &records),
        records,
    })
}

/// Follows CNAMEs from `name` (case-insensitively, with a loop guard) and returns the addresses
/// of the name the chain ends at.
fn chain_addresses(name: &str, records: &[Record]) -> Vec<IpAddr> {
    let same = |left: &str, right: &str| {
        left.trim_end_matches('.')
            .eq_ignore_ascii_case(right.trim_end_matches('.'))
    };
    let mut current = name.to_string();
    for _ in 0..MAX_CHAIN {
        match records
            .iter()
            .find(|record| record.kind == "CNAME" && same(&record.name, &current))
        {
            Some(alias) => current = alias.data.clone(),
            None => break,
        }
    }
    records
        .iter()
        .filter(|record| (record.kind == "A" || record.kind == "AAAA") && same(&record.name, &current))
        .filter_map(|record| record.data.parse().ok())
        .collect()
}

fn rcode_name(code: RCODE) -> String {
    match code {
        RCODE::NoError => "NOERROR",
        RCODE::FormatError => "FORMERR",
        RCODE::ServerFailure => "SERVFAIL",
        RCODE::NameError => "NXDOMAIN",
        RCODE::NotImplemented => "NOTIMP",
        RCODE::Refused => "REFUSED",
        _ => return format!("{code:?}"),
    }
    .to_string()
}
