//! The zone's answers, read back by the lab's own resolver over real loopback sockets (UDP
//! and TCP), and the replies to queries a resolver should not make.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use simple_dns::{CLASS, Name, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};

use super::resolver::{Lookup, QueryType, query};
use super::server::spawn_for_test;
use super::zone::{Transport, Zone, ZoneEntry};
use crate::config::LabFile;

const LAB: &str = "name: t\nnodes: [{name: n}]\noutside:\n  - {name: partner, address: 203.0.113.10, tcp: [443], names: [api.partner.example, API2.partner.example], cname: [www.partner.example], ttl: 7}\n  - {name: other, address: 198.51.100.9, names: [b.example]}\n";

fn zone() -> Zone {
    let mut zone = Zone::from_lab(&LabFile::parse("lab.yaml", LAB).unwrap());
    zone.names.insert(
        "dual.example".into(),
        ZoneEntry::Addresses {
            ttl: 5,
            addresses: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        },
    );
    zone
}

/// A server on loopback: (UDP address, TCP address).
fn server(zone: Zone) -> (SocketAddr, SocketAddr) {
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addresses = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    spawn_for_test(zone, udp, tcp);
    addresses
}

fn ask(server: SocketAddr, name: &str, kind: QueryType, transport: Transport) -> Lookup {
    query(server, name, kind, transport, Duration::from_secs(2)).unwrap()
}

fn shown(lookup: &Lookup) -> Vec<String> {
    lookup
        .records
        .iter()
        .map(|record| format!("{} {} {} {}", record.name, record.kind, record.ttl, record.data))
        .collect()
}

#[test]
fn names_aliases_and_unknown_names_over_udp_and_tcp() {
    let (udp, tcp) = server(zone());
    let partner: IpAddr = "203.0.113.10".parse().unwrap();
    for (server, transport) in [(udp, Transport::Udp), (tcp, Transport::Tcp)] {
        let lookup = ask(server, "api.partner.example", QueryType::A, transport);
        assert_eq!(lookup.rcode, "NOERROR");
        assert!(lookup.authoritative);
        assert_eq!(shown(&lookup), ["api.partner.example A 7 203.0.113.10"]);
        assert_eq!(lookup.addresses, [partner]);

        // Names were lowercased; the question's spelling comes back.
        let lookup = ask(server, "Api2.Partner.Example", QueryType::A, transport);
        assert_eq!(shown(&lookup), ["Api2.Partner.Example A 7 203.0.113.10"]);

        let lookup = ask(server, "www.partner.example", QueryType::A, transport);
        assert_eq!(
            shown(&lookup),
            [
                "www.partner.example CNAME 7 api.partner.example",
                "api.partner.example A 7 203.0.113.10"
            ]
        );
        assert_eq!(lookup.addresses, [partner]);

        let lookup = ask(server, "www.partner.example", QueryType::Cname, transport);
        assert_eq!(
            shown(&lookup),
            ["www.partner.example CNAME 7 api.partner.example"]
        );
        assert!(lookup.addresses.is_empty());

        // The hosts are IPv4: a name without AAAA data is NODATA, not NXDOMAIN.
        let lookup = ask(server, "api.partner.example", QueryType::Aaaa, transport);
        assert_eq!((lookup.rcode.as_str(), lookup.records.len()), ("NOERROR", 0));
        let lookup = ask(server, "dual.example", QueryType::Aaaa, transport);
        assert_eq!(shown(&lookup), ["dual.example AAAA 5 2001:db8::1"]);
        let lookup = ask(server, "www.partner.example", QueryType::Aaaa, transport);
        assert_eq!(
            shown(&lookup),
            ["www.partner.example CNAME 7 api.partner.example"]
        );

        let lookup = ask(server, "nope.partner.example", QueryType::A, transport);
        assert_eq!((lookup.rcode.as_str(), lookup.records.len()), ("NXDOMAIN", 0));
        // A parent of a name exists without records (RFC 8020).
        let lookup = ask(server, "partner.example", QueryType::A, transport);
        assert_eq!((lookup.rcode.as_str(), lookup.records.len()), ("NOERROR", 0));
        // Another host's default TTL.
        let lookup = ask(server, "b.example", QueryType::A, transport);
        assert_eq!(shown(&lookup), ["b.example A 30 198.51.100.9"]);
    }
}

#[test]
fn a_reply_too_long_for_udp_is_truncated_and_whole_over_tcp() {
    let addresses: Vec<IpAddr> = (0..60_u8)
        .map(|last| IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
        .collect();
    let zone = Zone {
        names: BTreeMap::from([(
            "many.example".to_string(),
            ZoneEntry::Addresses { ttl: 1, addresses },
        )]),
    };
    let (udp, tcp) = server(zone);
    let lookup = ask(udp, "many.example", QueryType::A, Transport::Udp);
    assert!(lookup.truncated && lookup.records.is_empty(), "{lookup:?}");
    let lookup = ask(tcp, "many.example", QueryType::A, Transport::Tcp);
    assert!(!lookup.truncated);
    assert_eq!(lookup.addresses.len(), 60);
}

#[test]
fn a_silent_server_times_out() {
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let error = query(
        silent.local_addr().unwrap(),
        "a.example",
        QueryType::A,
        Transport::Udp,
        Duration::from_millis(100),
    )
    .unwrap_err();
    assert!(
        matches!(error, super::resolver::LookupError::TimedOut(_)),
        "{error:?}"
    );
}

fn message(opcode: OPCODE, qtype: QTYPE, qclass: QCLASS, questions: usize) -> Vec<u8> {
    let mut packet = Packet::new_query(7);
    *packet.opcode_mut() = opcode;
    for _ in 0..questions {
        packet.questions.push(Question::new(
            Name::new("api.partner.example").unwrap(),
            qtype,
            qclass,
            false,
        ));
    }
    packet.build_bytes_vec().unwrap()
}

fn code_of(zone: &Zone, query: &[u8]) -> Option<RCODE> {
    let reply = zone.answer(query, Transport::Udp)?;
    let packet = Packet::parse(&reply).unwrap();
    assert_eq!(packet.id(), 7);
    assert!(packet.has_flags(PacketFlag::RESPONSE));
    Some(packet.rcode())
}

#[test]
fn what_the_server_refuses_or_does_not_implement() {
    let zone = zone();
    let a = QTYPE::TYPE(TYPE::A);
    let internet = QCLASS::CLASS(CLASS::IN);
    assert_eq!(
        code_of(&zone, &message(OPCODE::StandardQuery, a, internet, 1)),
        Some(RCODE::NoError)
    );
    assert_eq!(
        code_of(&zone, &message(OPCODE::Update, a, internet, 1)),
        Some(RCODE::NotImplemented)
    );
    assert_eq!(
        code_of(&zone, &message(OPCODE::Notify, a, internet, 1)),
        Some(RCODE::NotImplemented)
    );
    assert_eq!(
        code_of(
            &zone,
            &message(OPCODE::StandardQuery, a, QCLASS::CLASS(CLASS::CH), 1)
        ),
        Some(RCODE::Refused)
    );
    assert_eq!(
        code_of(&zone, &message(OPCODE::StandardQuery, QTYPE::AXFR, internet, 1)),
        Some(RCODE::Refused)
    );
    assert_eq!(
        code_of(&zone, &message(OPCODE::StandardQuery, a, internet, 2)),
        Some(RCODE::FormatError)
    );
    assert_eq!(
        code_of(&zone, &message(OPCODE::StandardQuery, a, internet, 0)),
        Some(RCODE::FormatError)
    );
    // Twelve bytes of header with a question count but no question: FORMERR.
    let mut broken = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    assert_eq!(code_of(&zone, &broken), Some(RCODE::FormatError));
    // Responses and fragments get nothing, so two servers never answer each other forever.
    broken[2] |= 0x80;
    assert_eq!(zone.answer(&broken, Transport::Udp), None);
    assert_eq!(zone.answer(&[0, 7, 1], Transport::Udp), None);
    let query = message(OPCODE::StandardQuery, a, internet, 1);
    let mut response = Packet::parse(&query).unwrap();
    response.set_flags(PacketFlag::RESPONSE);
    assert_eq!(
        zone.answer(&response.build_bytes_vec().unwrap(), Transport::Udp),
        None
    );
}

#[test]
fn resolv_conf_points_at_the_lab_server() {
    let text = super::netns_files::resolv_conf_text("100.64.1.253".parse().unwrap());
    let file = std::env::temp_dir().join(format!("sluice-lab-resolv-{}", std::process::id()));
    std::fs::write(&file, text).unwrap();
    let server = super::resolver::nameserver_from(&file);
    let _ = std::fs::remove_file(&file);
    assert_eq!(server, Ok("100.64.1.253".parse().unwrap()));
}
