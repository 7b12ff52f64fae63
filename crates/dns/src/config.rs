//! What the learner is told by its configuration: the trusted servers (`dnsTrustedServers`),
//! the extra TTL (`dnsExtraTTL`) and the memory bounds.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::tcp;

/// The DNS port, used when a trusted server is written without one.
pub const DNS_PORT: u16 = 53;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Responses are learned from only when they come from one of these (address and port).
    pub trusted_servers: Vec<TrustedServer>,
    /// Added to every record's TTL (`dnsExtraTTL`, whole seconds).
    pub extra_ttl_seconds: u32,
    /// Addresses kept per name per endpoint; the oldest learned goes first.
    pub addresses_per_name: usize,
    /// Mappings (name, address) kept per endpoint; the endpoint's oldest learned goes first.
    /// So one pod resolving endless names evicts its own mappings, not its neighbours'.
    pub mappings_per_endpoint: usize,
    /// Mappings (endpoint, name, address) kept on the node; the oldest learned goes first.
    pub mappings_per_node: usize,
    /// Bounds on DNS-over-TCP reassembly.
    pub tcp: tcp::Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            trusted_servers: Vec::new(),
            extra_ttl_seconds: 0,
            addresses_per_name: 64,
            mappings_per_endpoint: 10_000,
            mappings_per_node: 250_000,
            tcp: tcp::Limits::default(),
        }
    }
}

/// One entry of `dnsTrustedServers` in its address form: `<ip>`, `<ipv4>:<port>` or
/// `[<ipv6>]:<port>` (Calico's `k8s-service:<name>` form names a Service, which the agent
/// resolves to addresses before building this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustedServer(pub SocketAddr);

impl FromStr for TrustedServer {
    type Err = String;

    fn from_str(text: &str) -> Result<TrustedServer, String> {
        if let Ok(address) = text.parse::<IpAddr>() {
            return Ok(TrustedServer(SocketAddr::new(address, DNS_PORT)));
        }
        match text.parse::<SocketAddr>() {
            Ok(address) if address.port() != 0 => Ok(TrustedServer(address)),
            Ok(_) => Err(format!(
                "`{text}` has port 0; a DNS server listens on a real port"
            )),
            Err(_) => Err(format!(
                "`{text}` is not a DNS server address; write `<ip>`, `<ipv4>:<port>` or `[<ipv6>]:<port>`"
            )),
        }
    }
}

impl fmt::Display for TrustedServer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_servers_take_calicos_address_forms() {
        let table: &[(&str, &str)] = &[
            ("10.96.0.10", "10.96.0.10:53"),
            ("10.96.0.10:5353", "10.96.0.10:5353"),
            ("fd00::10", "[fd00::10]:53"),
            ("[fd00::10]:5353", "[fd00::10]:5353"),
        ];
        for (text, expected) in table {
            let server: TrustedServer = text.parse().unwrap();
            assert_eq!(server.0, expected.parse::<SocketAddr>().unwrap(), "{text}");
        }
        for bad in [
            "",
            "k8s-service:kube-dns",
            "10.96.0.10:0",
            "fd00::10:53:x",
            "host:53",
        ] {
            assert!(bad.parse::<TrustedServer>().is_err(), "{bad}");
        }
    }
}
