//! A DNS response read into name → address facts with `simple-dns` (which follows compression
//! pointers and refuses pointer loops).
//!
//! Every A and AAAA record of class IN in the answer and additional sections maps its owner
//! name to its address; every CNAME record maps its owner to whatever its target maps to. So
//! each name in a chain from the question (`www.example` → `edge.cdn.example` → 192.0.2.7)
//! maps to the chain's final addresses. A fact's TTL is the smallest along its chain, since
//! the alias holds no longer than its own record. Chains are followed at most
//! [`MAXIMUM_CHAIN`] links deep and a name is never visited twice, so a CNAME loop ends.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, OPCODE, Packet, PacketFlag, RCODE, ResourceRecord};

/// The longest CNAME chain followed (resolvers give up at about this depth too).
pub const MAXIMUM_CHAIN: usize = 16;

/// One learned fact: `name` (lowercased, without the root's trailing dot) resolves to `address`
/// for `ttl` seconds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resolution {
    pub name: String,
    pub address: IpAddr,
    pub ttl: u32,
}

/// Why a DNS message teaches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a DNS message `simple-dns` can read (cut short, bad pointers, bad record data).
    Unparsable,
    /// A query, or an opcode other than QUERY.
    NotAnAnswer,
    /// The TC bit: the client will ask again over TCP and learn from that answer.
    Truncated,
    /// An rcode other than NOERROR.
    ErrorCode,
}

/// Reads a DNS response (the bytes of a UDP payload, or one TCP message without its length
/// prefix) into resolutions, sorted and without repeats (the longest TTL kept).
pub fn resolve(message: &[u8]) -> Result<Vec<Resolution>, Refusal> {
    let packet = Packet::parse(message).map_err(|_| Refusal::Unparsable)?;
    if !packet.has_flags(PacketFlag::RESPONSE) || packet.opcode() != OPCODE::StandardQuery {
        return Err(Refusal::NotAnAnswer);
    }
    if packet.has_flags(PacketFlag::TRUNCATION) {
        return Err(Refusal::Truncated);
    }
    if packet.rcode() != RCODE::NoError {
        return Err(Refusal::ErrorCode);
    }
    let mut records = Records::default();
    for record in packet.answers.iter().chain(&packet.additional_records) {
        records.add(record);
    }
    Ok(records.resolutions())
}

#[derive(Default)]
struct Records {
    addresses: BTreeMap<String, Vec<(IpAddr, u32)>>,
    aliases: BTreeMap<String, Vec<(String, u32)>>,
}

impl Records {
    fn add(&mut self, record: &ResourceRecord<'_>) {
        // simple-dns reads the class's top bit as mDNS's cache-flush flag; in unicast DNS a
        // class with that bit set is not IN.
        if record.class != CLASS::IN || record.cache_flush {
            return;
        }
        let Some(owner) = name_text(&record.name) else {
            return;
        };
        match &record.rdata {
            RData::A(a) => self
                .addresses
                .entry(owner)
                .or_default()
                .push((IpAddr::V4(Ipv4Addr::from(a.address)), record.ttl)),
            RData::AAAA(aaaa) => self
                .addresses
                .entry(owner)
                .or_default()
                .push((IpAddr::V6(Ipv6Addr::from(aaaa.address)), record.ttl)),
            RData::CNAME(target) => {
                if let Some(target) = name_text(&target.0) {
                    self.aliases.entry(owner).or_default().push((target, record.ttl));
                }
            }
            _ => {}
        }
    }

    fn resolutions(&self) -> Vec<Resolution> {
        let mut found: BTreeMap<(String, IpAddr), u32> = BTreeMap::new();
        let owners = self.addresses.keys().chain(self.aliases.keys());
        for owner in owners {
            let mut visited = HashSet::new();
            let mut stack = vec![(owner.as_str(), u32::MAX, 0usize)];
            while let Some((name, ttl, depth)) = stack.pop() {
                if !visited.insert(name) {
                    continue;
                }
                for (address, record_ttl) in self.addresses.get(name).into_iter().flatten() {
                    let ttl = ttl.min(*record_ttl);
                    let best = found.entry((owner.clone(), *address)).or_insert(ttl);
                    *best = (*best).max(ttl);
                }
                if depth == MAXIMUM_CHAIN {
                    continue;
                }
                for (target, record_ttl) in self.aliases.get(name).into_iter().flatten() {
                    stack.push((target.as_str(), ttl.min(*record_ttl), depth + 1));
                }
            }
        }
        found
            .into_iter()
            .map(|((name, address), ttl)| Resolution { name, address, ttl })
            .collect()
    }
}

/// The name as text, lowercased, without the root's dot; `None` if a label holds anything but
/// letters, digits, `-` and `_`. A label may hold any byte, dots included: the one label
/// `api.partner.example` must never read as three, so such names are not learned at all
/// (no domain pattern could name them anyway).
fn name_text(name: &Name<'_>) -> Option<String> {
    let mut text = String::new();
    for label in name.as_bytes() {
        let plain = label
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-' || *byte == b'_');
        if label.is_empty() || !plain {
            return None;
        }
        if !text.is_empty() {
            text.push('.');
        }
        text.extend(label.iter().map(|byte| char::from(byte.to_ascii_lowercase())));
    }
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{Label, QCLASS, QTYPE, Question, TYPE};

    fn a(name: &'static str, address: [u8; 4], ttl: u32) -> ResourceRecord<'static> {
        ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            ttl,
            RData::A(A::from(Ipv4Addr::from(address))),
        )
    }

    fn cname(name: &'static str, target: &'static str, ttl: u32) -> ResourceRecord<'static> {
        ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            ttl,
            RData::CNAME(CNAME(Name::new_unchecked(target))),
        )
    }

    fn reply(question: &'static str, answers: Vec<ResourceRecord<'static>>) -> Packet<'static> {
        let mut packet = Packet::new_reply(7);
        packet.questions.push(Question::new(
            Name::new_unchecked(question),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        packet.answers = answers;
        packet
    }

    fn facts(packet: &Packet<'_>) -> Vec<(String, String, u32)> {
        resolve(&packet.build_bytes_vec_compressed().unwrap())
            .unwrap()
            .into_iter()
            .map(|fact| (fact.name, fact.address.to_string(), fact.ttl))
            .collect()
    }

    fn fact(name: &str, address: &str, ttl: u32) -> (String, String, u32) {
        (name.to_string(), address.to_string(), ttl)
    }

    #[test]
    fn a_and_aaaa_records_map_their_owner_lowercased() {
        let mut packet = reply("API.Example", vec![a("API.Example.", [192, 0, 2, 1], 30)]);
        packet.additional_records.push(ResourceRecord::new(
            Name::new_unchecked("api.example"),
            CLASS::IN,
            40,
            RData::AAAA(AAAA::from("2001:db8::1".parse::<Ipv6Addr>().unwrap())),
        ));
        assert_eq!(
            facts(&packet),
            vec![
                fact("api.example", "192.0.2.1", 30),
                fact("api.example", "2001:db8::1", 40)
            ]
        );
    }

    #[test]
    fn every_name_of_a_chain_maps_to_the_final_addresses_with_the_smallest_ttl() {
        let packet = reply(
            "www.example",
            vec![
                cname("www.example", "edge.cdn.example", 300),
                cname("edge.cdn.example", "node.cdn.example", 20),
                a("node.cdn.example", [192, 0, 2, 7], 60),
                a("node.cdn.example", [192, 0, 2, 8], 10),
            ],
        );
        assert_eq!(
            facts(&packet),
            vec![
                fact("edge.cdn.example", "192.0.2.7", 20),
                fact("edge.cdn.example", "192.0.2.8", 10),
                fact("node.cdn.example", "192.0.2.7", 60),
                fact("node.cdn.example", "192.0.2.8", 10),
                fact("www.example", "192.0.2.7", 20),
                fact("www.example", "192.0.2.8", 10),
            ]
        );
    }

    #[test]
    fn a_cname_loop_ends_and_teaches_only_real_addresses() {
        let packet = reply(
            "a.example",
            vec![
                cname("a.example", "b.example", 30),
                cname("b.example", "a.example", 30),
                cname("b.example", "c.example", 30),
                a("c.example", [192, 0, 2, 3], 30),
            ],
        );
        assert_eq!(
            facts(&packet),
            vec![
                fact("a.example", "192.0.2.3", 30),
                fact("b.example", "192.0.2.3", 30),
                fact("c.example", "192.0.2.3", 30),
            ]
        );
        let only_loop = reply(
            "a.example",
            vec![
                cname("a.example", "b.example", 30),
                cname("b.example", "a.example", 30),
            ],
        );
        assert_eq!(facts(&only_loop), vec![]);
    }

    #[test]
    fn chains_longer_than_the_limit_stop() {
        const NAMES: [&str; 19] = [
            "n0.example",
            "n1.example",
            "n2.example",
            "n3.example",
            "n4.example",
            "n5.example",
            "n6.example",
            "n7.example",
            "n8.example",
            "n9.example",
            "n10.example",
            "n11.example",
            "n12.example",
            "n13.example",
            "n14.example",
            "n15.example",
            "n16.example",
            "n17.example",
            "n18.example",
        ];
        let mut records: Vec<_> = NAMES.windows(2).map(|pair| cname(pair[0], pair[1], 30)).collect();
        records.push(a("n18.example", [192, 0, 2, 9], 30));
        let learned = facts(&reply("n0.example", records));
        let names: Vec<&str> = learned.iter().map(|(name, _, _)| name.as_str()).collect();
        // n18 is 18 links from n0 and 16 from n2: n0 and n1 learn nothing.
        assert!(!names.contains(&"n0.example") && !names.contains(&"n1.example"));
        assert!(names.contains(&"n2.example") && names.contains(&"n18.example"));
    }

    #[test]
    fn other_classes_types_and_the_authority_section_teach_nothing() {
        let mut chaos = a("x.example", [192, 0, 2, 1], 30);
        chaos.class = CLASS::CH;
        let mut flushed = a("y.example", [192, 0, 2, 2], 30);
        flushed.cache_flush = true;
        let mut packet = reply("x.example", vec![chaos, flushed]);
        packet.name_servers.push(a("ns.example", [192, 0, 2, 53], 30));
        assert_eq!(facts(&packet), vec![]);
    }

    #[test]
    fn queries_truncated_answers_error_codes_and_garbage_are_refused() {
        let answer = reply("x.example", vec![a("x.example", [192, 0, 2, 1], 30)]);

        let mut query = answer.clone();
        query.remove_flags(PacketFlag::RESPONSE);
        let bytes = query.build_bytes_vec().unwrap();
        assert_eq!(resolve(&bytes), Err(Refusal::NotAnAnswer));

        let mut truncated = answer.clone();
        truncated.set_flags(PacketFlag::TRUNCATION);
        let bytes = truncated.build_bytes_vec().unwrap();
        assert_eq!(resolve(&bytes), Err(Refusal::Truncated));

        let mut failed = answer.clone();
        *failed.rcode_mut() = RCODE::NameError;
        let bytes = failed.build_bytes_vec().unwrap();
        assert_eq!(resolve(&bytes), Err(Refusal::ErrorCode));

        let bytes = answer.build_bytes_vec().unwrap();
        assert_eq!(resolve(&bytes[..bytes.len() - 2]), Err(Refusal::Unparsable));
        assert_eq!(resolve(b""), Err(Refusal::Unparsable));
    }

    #[test]
    fn names_with_a_dot_or_other_bytes_inside_a_label_are_not_learned() {
        // A zone may hold the one-label name `api.partner.example` (dots inside the label);
        // as text it would pass for three labels, so neither it nor a chain through it counts.
        let dotted = || {
            Name::new_with_labels(&[
                Label::new_unchecked(b"api.partner.example".as_slice()),
                Label::new_unchecked(b"evil".as_slice()),
            ])
        };
        let spaced = Name::new_with_labels(&[
            Label::new_unchecked(b"a b".as_slice()),
            Label::new_unchecked(b"evil".as_slice()),
        ]);
        let address = || RData::A(A::from(Ipv4Addr::new(203, 0, 113, 66)));
        let records = vec![
            ResourceRecord::new(dotted(), CLASS::IN, 30, address()),
            ResourceRecord::new(spaced, CLASS::IN, 30, address()),
            ResourceRecord::new(
                Name::new_unchecked("x.evil"),
                CLASS::IN,
                30,
                RData::CNAME(CNAME(dotted())),
            ),
            ResourceRecord::new(Name::new_unchecked("_srv.evil"), CLASS::IN, 30, address()),
        ];
        assert_eq!(
            facts(&reply("x.evil", records)),
            vec![fact("_srv.evil", "203.0.113.66", 30)]
        );
    }

    #[test]
    fn compression_pointers_are_followed() {
        let packet = reply(
            "www.example",
            vec![
                cname("www.example", "edge.www.example", 30),
                a("edge.www.example", [192, 0, 2, 5], 30),
            ],
        );
        let compressed = packet.build_bytes_vec_compressed().unwrap();
        assert!(compressed.len() < packet.build_bytes_vec().unwrap().len());
        assert_eq!(resolve(&compressed).unwrap().len(), 2);
    }
}
