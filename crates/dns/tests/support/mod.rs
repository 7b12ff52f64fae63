//! Test support: DNS responses built with simple-dns and wrapped in real IP/UDP/TCP packets
//! with etherparse, a node with two endpoints, and helpers to read decisions.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use etherparse::PacketBuilder;
use simple_dns::rdata::{A, AAAA, CNAME, RData};
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE};
use sluice_dns::{Batch, Config, Decision, Endpoint, Interest, Learner, Timestamp};

pub const SERVER: &str = "10.96.0.10:53";
pub const SERVER_V6: &str = "[fd00:96::10]:53";
pub const POD_A: &str = "10.65.0.2";
pub const POD_A_V6: &str = "fd00:65::2";
pub const POD_B: &str = "10.65.0.3";

pub fn socket(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// `seconds` after a fixed wall-clock start.
pub fn at(seconds: u64) -> Timestamp {
    Timestamp::from_unix_seconds(1_800_000_000 + seconds)
}

pub fn at_milliseconds(milliseconds: u64) -> Timestamp {
    Timestamp::from_unix_milliseconds(1_800_000_000_000 + milliseconds)
}

/// A record of an answer: `("name", "192.0.2.1", ttl)` is an A or AAAA record by the
/// address's family; `("name", "cname:target", ttl)` a CNAME.
pub type Record<'a> = (&'a str, &'a str, u32);

pub fn record(name: &str, data: &str, ttl: u32) -> ResourceRecord<'static> {
    let name = Name::new_unchecked(leak(name));
    let rdata = if let Some(target) = data.strip_prefix("cname:") {
        RData::CNAME(CNAME(Name::new_unchecked(leak(target))))
    } else {
        match ip(data) {
            IpAddr::V4(address) => RData::A(A::from(address)),
            IpAddr::V6(address) => RData::AAAA(AAAA::from(address)),
        }
    };
    ResourceRecord::new(name, CLASS::IN, ttl, rdata)
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_string().into_boxed_str())
}

/// A NOERROR response to an A query for `question` with `answers`, compressed.
pub fn response(question: &str, answers: &[Record<'_>]) -> Vec<u8> {
    response_packet(question, answers)
        .build_bytes_vec_compressed()
        .unwrap()
}

pub fn response_packet(question: &str, answers: &[Record<'_>]) -> Packet<'static> {
    let mut packet = Packet::new_reply(0x1234);
    packet.questions.push(Question::new(
        Name::new_unchecked(leak(question)),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.answers = answers
        .iter()
        .map(|(name, data, ttl)| record(name, data, *ttl))
        .collect();
    packet
}

pub fn error_response(question: &str, rcode: RCODE) -> Vec<u8> {
    let mut packet = response_packet(question, &[]);
    *packet.rcode_mut() = rcode;
    packet.build_bytes_vec().unwrap()
}

fn builder(
    source: SocketAddr,
    destination: SocketAddr,
) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            PacketBuilder::ipv4(source.octets(), destination.octets(), 64)
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            PacketBuilder::ipv6(source.octets(), destination.octets(), 64)
        }
        _ => panic!("mixed address families"),
    }
}

/// An IP packet carrying `payload` over UDP.
pub fn udp(source: &str, destination: &str, payload: &[u8]) -> Vec<u8> {
    let (source, destination) = (socket(source), socket(destination));
    let mut packet = Vec::new();
    builder(source, destination)
        .udp(source.port(), destination.port())
        .write(&mut packet, payload)
        .unwrap();
    packet
}

/// An IP packet carrying a TCP segment (ACK set; SYN when `syn`).
pub fn tcp(source: &str, destination: &str, sequence: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let (source, destination) = (socket(source), socket(destination));
    let mut packet = Vec::new();
    let step = builder(source, destination)
        .tcp(source.port(), destination.port(), sequence, 65535)
        .ack(1);
    let step = if syn { step.syn() } else { step };
    step.write(&mut packet, payload).unwrap();
    packet
}

/// Messages with their two-byte length prefixes, as DNS over TCP carries them.
pub fn framed(messages: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for message in messages {
        bytes.extend_from_slice(&(message.len() as u16).to_be_bytes());
        bytes.extend_from_slice(message);
    }
    bytes
}

pub fn interest(set: &str, patterns: &[&str]) -> Interest {
    Interest {
        set: set.to_string(),
        patterns: patterns.iter().map(|pattern| pattern.parse().unwrap()).collect(),
    }
}

pub fn endpoint(key: &str, addresses: &[&str], interests: Vec<Interest>) -> Endpoint {
    Endpoint {
        key: key.to_string(),
        addresses: addresses.iter().map(|address| ip(address)).collect(),
        interests,
    }
}

pub fn config() -> Config {
    Config {
        trusted_servers: vec![SERVER.parse().unwrap(), SERVER_V6.parse().unwrap()],
        ..Config::default()
    }
}

/// A learner trusting `SERVER` with pod-a (IPv4 and IPv6) and pod-b, both interested in
/// `partner` (api.partner.example) and `buckets` (*.s3.example).
pub fn node(config: Config) -> Learner {
    let mut learner = Learner::new(config);
    let interests = || {
        vec![
            interest("partner", &["api.partner.example"]),
            interest("buckets", &["*.s3.example"]),
        ]
    };
    let batch = learner.set_endpoints(
        at(0),
        vec![
            endpoint("default/pod-a", &[POD_A, POD_A_V6], interests()),
            endpoint("default/pod-b", &[POD_B], interests()),
        ],
    );
    assert_eq!(batch, None, "nothing learned yet, nothing to program");
    learner
}

pub fn hold(decision: Decision) -> Batch {
    match decision {
        Decision::Hold(batch) => batch,
        other => panic!("expected a hold, got {other:?}"),
    }
}

/// The additions as (set, endpoint address, learned address, seconds to live).
pub fn additions(batch: &Batch) -> Vec<(String, String, String, u64)> {
    batch
        .additions
        .iter()
        .map(|addition| {
            (
                addition.element.set.clone(),
                addition.element.endpoint_address.to_string(),
                addition.element.address.to_string(),
                addition.timeout_milliseconds / 1000,
            )
        })
        .collect()
}

pub fn row(set: &str, endpoint: &str, address: &str, seconds: u64) -> (String, String, String, u64) {
    (
        set.to_string(),
        endpoint.to_string(),
        address.to_string(),
        seconds,
    )
}

pub fn to_pod_a(port: u16) -> String {
    format!("{POD_A}:{port}")
}
