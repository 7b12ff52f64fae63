//! Small value types shared by the Calico and Kubernetes resources: protocols, ports, CIDRs and
//! actions. Each parses and validates itself on deserialization so that a bad value is reported
//! at its own field.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An IP protocol as Calico names it (`numorstring.Protocol`): a name or a number 1–255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    IcmpV6,
    Sctp,
    UdpLite,
    Number(u8),
}

impl Protocol {
    /// The IANA protocol number, the value the kernel compares.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Icmp => 1,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::IcmpV6 => 58,
            Protocol::Sctp => 132,
            Protocol::UdpLite => 136,
            Protocol::Number(number) => number,
        }
    }

    /// The named protocol for a number, so that `6` and `TCP` are one protocol.
    pub fn from_number(number: u8) -> Protocol {
        match number {
            1 => Protocol::Icmp,
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            58 => Protocol::IcmpV6,
            132 => Protocol::Sctp,
            136 => Protocol::UdpLite,
            other => Protocol::Number(other),
        }
    }

    /// Protocols whose packets carry ports (Calico's `SupportsPorts`).
    pub fn supports_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 132 | 136)
    }

    pub fn is_icmp(self) -> bool {
        matches!(self.number(), 1 | 58)
    }

    /// Parses a protocol name case-insensitively, or a number. Kubernetes and Calico spell
    /// names in capitals; flows typed by people may not.
    pub fn parse_lenient(text: &str) -> Result<Protocol, String> {
        if let Ok(number) = text.parse::<u16>() {
            return Protocol::try_from_number(number.into());
        }
        match text.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "ICMP" => Ok(Protocol::Icmp),
            "ICMPV6" => Ok(Protocol::IcmpV6),
            "SCTP" => Ok(Protocol::Sctp),
            "UDPLITE" => Ok(Protocol::UdpLite),
            _ => Err(Self::expected(text)),
        }
    }

    fn try_from_number(number: i64) -> Result<Protocol, String> {
        match u8::try_from(number) {
            Ok(value) if value >= 1 => Ok(Protocol::from_number(value)),
            _ => Err(format!(
                "protocol number {number} is out of range; expected 1 to 255"
            )),
        }
    }

    fn expected(text: &str) -> String {
        format!(
            "unknown protocol `{text}`; expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number from 1 to 255"
        )
    }
}

impl FromStr for Protocol {
    type Err = String;
    /// Strict parse, as Calico's validator: exact names or a number.
    fn from_str(text: &str) -> Result<Protocol, String> {
        if let Ok(number) = text.parse::<i64>() {
            return Protocol::try_from_number(number);
        }
        match text {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "ICMP" => Ok(Protocol::Icmp),
            "ICMPv6" => Ok(Protocol::IcmpV6),
            "SCTP" => Ok(Protocol::Sctp),
            "UDPLite" => Ok(Protocol::UdpLite),
            _ => Err(Protocol::expected(text)),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => formatter.write_str("TCP"),
            Protocol::Udp => formatter.write_str("UDP"),
            Protocol::Icmp => formatter.write_str("ICMP"),
            Protocol::IcmpV6 => formatter.write_str("ICMPv6"),
            Protocol::Sctp => formatter.write_str("SCTP"),
            Protocol::UdpLite => formatter.write_str("UDPLite"),
            Protocol::Number(number) => write!(formatter, "{number}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(number) => serializer.serialize_u8(*number),
            named => serializer.collect_str(named),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(NumberOrStringVisitor::new("a protocol name or number"))
            .and_then(|value| {
                match value {
                    NumberOrString::Number(number) => Protocol::try_from_number(number),
                    NumberOrString::String(text) => text.parse(),
                }
                .map_err(de::Error::custom)
            })
    }
}

/// A port as Calico writes it: a number, a range `low:high`, or the name of a container port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    Range { low: u16, high: u16 },
    Named(String),
}

impl Port {
    pub fn single(port: u16) -> Port {
        Port::Range {
            low: port,
            high: port,
        }
    }

    pub fn is_named(&self) -> bool {
        matches!(self, Port::Named(_))
    }

    fn from_text(text: &str) -> Result<Port, String> {
        if let Some((low, high)) = text.split_once(':') {
            let low = parse_port_number(low)?;
            let high = parse_port_number(high)?;
            if low > high {
                return Err(format!("port range `{text}` has its minimum above its maximum"));
            }
            return Ok(Port::Range { low, high });
        }
        if text.chars().all(|character| character.is_ascii_digit()) && !text.is_empty() {
            return parse_port_number(text).map(Port::single);
        }
        validate_port_name(text)?;
        Ok(Port::Named(text.to_string()))
    }
}

fn parse_port_number(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .map_err(|_| format!("`{text}` is not a port number; expected 0 to 65535"))
}

/// A named port is an IANA service name: at most 15 lowercase letters, digits and hyphens,
/// with at least one letter, not starting or ending with a hyphen.
pub fn validate_port_name(text: &str) -> Result<(), String> {
    let valid = !text.is_empty()
        && text.len() <= 15
        && text.chars().all(|character| {
            character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
        })
        && text.chars().any(|character| character.is_ascii_lowercase())
        && !text.starts_with('-')
        && !text.ends_with('-')
        && !text.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{text}` is not a port: expected a number (0–65535), a range `low:high`, or a port name (up to 15 lowercase letters, digits and single hyphens)"
        ))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Range { low, high } if low == high => write!(formatter, "{low}"),
            Port::Range { low, high } => write!(formatter, "{low}:{high}"),
            Port::Named(name) => formatter.write_str(name),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Range { low, high } if low == high => serializer.serialize_u16(*low),
            other => serializer.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(NumberOrStringVisitor::new("a port number, range or name"))
            .and_then(|value| {
                match value {
                    NumberOrString::Number(number) => u16::try_from(number)
                        .map(Port::single)
                        .map_err(|_| format!("port {number} is out of range; expected 0 to 65535")),
                    NumberOrString::String(text) => Port::from_text(&text),
                }
                .map_err(de::Error::custom)
            })
    }
}

/// A CIDR, masked to its network address as Calico normalises it. A bare address is a /32 or
/// /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Cidr, String> {
        if let Ok(network) = text.parse::<IpNet>() {
            return Ok(Cidr(network.trunc()));
        }
        if let Ok(address) = text.parse::<std::net::IpAddr>() {
            return Ok(Cidr(IpNet::from(address)));
        }
        Err(format!(
            "`{text}` is not a CIDR; expected an address with a prefix length such as 10.0.0.0/8 or 2001:db8::/32"
        ))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A Calico selector, parsed when read so that a bad selector is reported at its field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SelectorText(pub Option<sluice_selector::Selector>);

impl SelectorText {
    /// The parsed selector; an absent or empty field means `all()`.
    pub fn selector(&self) -> sluice_selector::Selector {
        self.0.clone().unwrap_or_else(sluice_selector::Selector::all)
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl Serialize for SelectorText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(selector) => serializer.collect_str(selector),
            None => serializer.serialize_str(""),
        }
    }
}

impl<'de> Deserialize<'de> for SelectorText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // YAML block scalars end in a newline, which Calico's tokenizer does not accept.
        let text = text.trim();
        if text.is_empty() {
            return Ok(SelectorText(None));
        }
        sluice_selector::Selector::parse(text)
            .map(|selector| SelectorText(Some(selector)))
            .map_err(|error| {
                de::Error::custom(format!("invalid selector: {}\n{}", error, error.render(text)))
            })
    }
}

/// The action of a Calico rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

impl fmt::Display for Action {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, formatter)
    }
}

/// The direction a policy or rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

impl fmt::Display for PolicyType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, formatter)
    }
}

enum NumberOrString {
    Number(i64),
    String(String),
}

struct NumberOrStringVisitor {
    expecting: &'static str,
}

impl NumberOrStringVisitor {
    fn new(expecting: &'static str) -> Self {
        NumberOrStringVisitor { expecting }
    }
}

impl Visitor<'_> for NumberOrStringVisitor {
    type Value = NumberOrString;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<NumberOrString, E> {
        Ok(NumberOrString::Number(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<NumberOrString, E> {
        i64::try_from(value)
            .map(NumberOrString::Number)
            .map_err(|_| E::custom(format!("{value} is out of range")))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<NumberOrString, E> {
        Ok(NumberOrString::String(value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_by_name_and_number_are_one() {
        assert_eq!("TCP".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!("6".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!(Protocol::parse_lenient("tcp").unwrap(), Protocol::Tcp);
        assert!("tcp".parse::<Protocol>().is_err());
        assert!("0".parse::<Protocol>().is_err());
        assert!("256".parse::<Protocol>().is_err());
        assert_eq!("99".parse::<Protocol>().unwrap(), Protocol::Number(99));
    }

    #[test]
    fn ports_numbers_ranges_and_names() {
        let port: Port = serde_json::from_str("80").unwrap();
        assert_eq!(port, Port::single(80));
        let port: Port = serde_json::from_str("\"8000:8080\"").unwrap();
        assert_eq!(
            port,
            Port::Range {
                low: 8000,
                high: 8080
            }
        );
        let port: Port = serde_json::from_str("\"http\"").unwrap();
        assert_eq!(port, Port::Named("http".into()));
        assert!(serde_json::from_str::<Port>("\"90:80\"").is_err());
        assert!(serde_json::from_str::<Port>("70000").is_err());
        assert!(serde_json::from_str::<Port>("\"Bad_Name\"").is_err());
    }

    #[test]
    fn cidrs_are_masked_and_addresses_become_hosts() {
        assert_eq!("10.1.2.3/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(
            "2001:db8::1".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }
}
