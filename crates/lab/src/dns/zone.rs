//! What the lab's DNS server knows and how it answers: a table of names (each either a host's
//! addresses or an alias of another name) and a pure function from a query message to a reply
//! message. No sockets here, so every answer is tested without a network.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use simple_dns::rdata::{A, AAAA, CNAME, RData};
use simple_dns::{
    CLASS, Name, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE,
};

use crate::config::LabFile;

/// Longest CNAME chain followed while answering (the lab's are one step; the guard stops loops).
const MAX_CHAIN: usize = 8;

/// The names the lab's DNS server answers, lowercased, without the trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    pub names: BTreeMap<String, ZoneEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ZoneEntry {
    /// A and AAAA records.
    Addresses { ttl: u32, addresses: Vec<IpAddr> },
    /// A CNAME record pointing at `target`.
    Alias { ttl: u32, target: String },
}

/// Where a reply goes: UDP replies are cut to 512 bytes (RFC 1035 §4.2.1) with TC set, TCP
/// replies may fill a 16-bit length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn limit(self) -> usize {
        match self {
            Transport::Udp => 512,
            Transport::Tcp => usize::from(u16::MAX),
        }
    }
}

impl Zone {
    /// Every outside host's names (its address, its TTL) and aliases (a CNAME to its first name).
    pub fn from_lab(lab: &LabFile) -> Zone {
        let mut names = BTreeMap::new();
        for host in &lab.outside {
            let ttl = host.dns_ttl();
            for name in &host.names {
                let addresses = vec![IpAddr::V4(host.address)];
                names.insert(name.to_ascii_lowercase(), ZoneEntry::Addresses { ttl, addresses });
            }
            if let Some(target) = host.names.first() {
                for alias in &host.cname {
                    let target = target.to_ascii_lowercase();
                    names.insert(alias.to_ascii_lowercase(), ZoneEntry::Alias { ttl, target });
                }
            }
        }
        Zone { names }
    }

    /// The reply to one query message, or `None` when the message gets no reply (a response,
    /// or bytes too short to carry an id to answer to).
    pub fn answer(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let packet = match Packet::parse(query) {
            Ok(packet) => packet,
            Err(_) => return format_error(query),
        };
        if packet.has_flags(PacketFlag::RESPONSE) {
            return None;
        }
        let mut reply = Packet::new_reply(packet.id());
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
            reply.set_flags(PacketFlag::RECURSION_DESIRED);
        }
        reply.questions = packet.questions.clone();
        if packet.opcode() != OPCODE::StandardQuery {
            *reply.opcode_mut() = packet.opcode();
            return finish(reply, RCODE::NotImplemented, transport);
        }
        let [question] = packet.questions.as_slice() else {
            return finish(reply, RCODE::FormatError, transport);
        };
        if !matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY) {
            return finish(reply, RCODE::Refused, transport);
        }
        if matches!(question.qtype, QTYPE::AXFR | QTYPE::IXFR) {
            return finish(reply, RCODE::Refused, transport);
        }
        let owned = self.records_for(question);
        let records: Vec<ResourceRecord<'_>> = owned.iter().filter_map(OwnedRecord::to_record).collect();
        let code = if records.is_empty() && !self.has_name(&question.qname) {
            RCODE::NameError
        } else {
            RCODE::NoError
        };
        reply.answers = records;
        finish(reply, code, transport)
    }

    /// Whether the name exists, with records or as an empty non-terminal (a parent of a name:
    /// NOERROR without records, not NXDOMAIN, as RFC 8020 asks).
    fn has_name(&self, name: &Name<'_>) -> bool {
        let name = normalize(name);
        let suffix = format!(".{name}");
        self.names.contains_key(&name) || self.names.keys().any(|known| known.ends_with(&suffix))
    }

    /// The answer section: CNAMEs from the asked name along the chain, then the addresses of
    /// the chain's end that the question asks for.
    fn records_for(&self, question: &Question<'_>) -> Vec<OwnedRecord> {
        let mut records = Vec::new();
        // The first owner keeps the question's spelling (resolvers may randomise case).
        let mut owner = question.qname.to_string();
        for _ in 0..MAX_CHAIN {
            match self.names.get(&owner.to_ascii_lowercase()) {
                Some(ZoneEntry::Alias { ttl, target }) => {
                    records.push(OwnedRecord {
                        owner: owner.clone(),
                        ttl: *ttl,
                        data: OwnedData::Alias(target.clone()),
                    });
                    if matches!(question.qtype, QTYPE::TYPE(TYPE::CNAME)) {
                        break;
                    }
                    owner = target.clone();
                }
                Some(ZoneEntry::Addresses { ttl, addresses }) => {
                    for address in addresses {
                        let wanted = matches!(
                            (question.qtype, address),
                            (QTYPE::ANY, _)
                                | (QTYPE::TYPE(TYPE::A), IpAddr::V4(_))
                                | (QTYPE::TYPE(TYPE::AAAA), IpAddr::V6(_))
                        );
                        if wanted {
                            records.push(OwnedRecord {
                                owner: owner.clone(),
                                ttl: *ttl,
                                data: OwnedData::Address(*address),
                            });
                        }
                    }
                    break;
                }
                None => break,
            }
        }
        records
    }
}

/// A record whose names are owned strings; simple-dns records borrow theirs.
struct OwnedRecord {
    owner: String,
    ttl: u32,
    data: OwnedData,
}

enum OwnedData {
    Address(IpAddr),
    Alias(String),
}

impl OwnedRecord {
    fn to_record(&self) -> Option<ResourceRecord<'_>> {
        let data = match &self.data {
            OwnedData::Address(IpAddr::V4(address)) => RData::A(A::from(*address)),
            OwnedData::Address(IpAddr::V6(address)) => RData::AAAA(AAAA::from(*address)),
            OwnedData::Alias(target) => RData::CNAME(CNAME(Name::new(target).ok()?)),
        };
        Some(ResourceRecord::new(
            Name::new(&self.owner).ok()?,
            CLASS::IN,
            self.ttl,
            data,
        ))
    }
}

fn normalize(name: &Name<'_>) -> String {
    name.to_string().trim_end_matches('.').to_ascii_lowercase()
}

fn finish(mut reply: Packet<'_>, code: RCODE, transport: Transport) -> Option<Vec<u8>> {
    *reply.rcode_mut() = code;
    let bytes = reply.build_bytes_vec_compressed().ok()?;
    if bytes.len() <= transport.limit() {
        return Some(bytes);
    }
    // Too long for UDP: say so (TC) and let the client ask again over TCP.
    reply.answers.clear();
    reply.set_flags(PacketFlag::TRUNCATION);
    reply.build_bytes_vec_compressed().ok()
}

/// FORMERR for a message that does not parse, if it is long enough to carry a query's header.
fn format_error(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut reply = Packet::new_reply(u16::from_be_bytes([query[0], query[1]]));
    *reply.rcode_mut() = RCODE::FormatError;
    reply.build_bytes_vec().ok()
}
