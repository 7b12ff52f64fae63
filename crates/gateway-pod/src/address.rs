//! The gateway's own addresses: the global IPv4 and IPv6 addresses of its interface, read
//! with `ip -j address show`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

/// The addresses the gateway source-NATs to and serves health on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddresses {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl InterfaceAddresses {
    /// The address health is served on: IPv4 when there is one.
    pub fn primary(&self) -> Option<IpAddr> {
        self.ipv4.map(IpAddr::V4).or(self.ipv6.map(IpAddr::V6))
    }
}

/// Reads the interface's first global address of each family.
pub fn read(interface: &str) -> Result<InterfaceAddresses, String> {
    let output = Command::new("ip")
        .args(["-j", "address", "show", "dev", interface])
        .output()
        .map_err(|error| format!("cannot run `ip address show dev {interface}`: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "`ip address show dev {interface}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let addresses = parse(&String::from_utf8_lossy(&output.stdout))
        .map_err(|error| format!("reading the addresses of {interface}: {error}"))?;
    if addresses.primary().is_none() {
        return Err(format!(
            "interface {interface} has no global IPv4 or IPv6 address"
        ));
    }
    Ok(addresses)
}

/// Reads `ip -j address show` output: a list of links, each with `addr_info`.
pub fn parse(json: &str) -> Result<InterfaceAddresses, String> {
    let links: serde_json::Value =
        serde_json::from_str(json).map_err(|error| format!("unreadable `ip -j` output: {error}"))?;
    let mut addresses = InterfaceAddresses {
        ipv4: None,
        ipv6: None,
    };
    let entries = links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| link.get("addr_info")?.as_array())
        .flatten();
    for entry in entries {
        // Link-local and host addresses cannot be a gateway's source outside the pod.
        if entry.get("scope").and_then(|scope| scope.as_str()) != Some("global") {
            continue;
        }
        let Some(local) = entry.get("local").and_then(|local| local.as_str()) else {
            continue;
        };
        match local.parse::<IpAddr>() {
            Ok(IpAddr::V4(address)) if addresses.ipv4.is_none() => addresses.ipv4 = Some(address),
            Ok(IpAddr::V6(address)) if addresses.ipv6.is_none() => addresses.ipv6 = Some(address),
            Ok(_) => {}
            Err(error) => return Err(format!("address {local:?}: {error}")),
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_first_global_address_of_each_family() {
        let json = r#"[{"ifname":"eth0","addr_info":[
            {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"},
            {"family":"inet","local":"10.10.0.5","prefixlen":32,"scope":"global"},
            {"family":"inet","local":"10.10.0.6","prefixlen":32,"scope":"global"},
            {"family":"inet6","local":"fd00::5","prefixlen":128,"scope":"global"}]}]"#;
        let addresses = parse(json).unwrap();
        assert_eq!(addresses.ipv4, Some("10.10.0.5".parse().unwrap()));
        assert_eq!(addresses.ipv6, Some("fd00::5".parse().unwrap()));
        assert_eq!(addresses.primary(), Some("10.10.0.5".parse().unwrap()));
    }

    #[test]
    fn link_local_only_is_no_address() {
        let json = r#"[{"addr_info":[{"family":"inet6","local":"fe80::1","scope":"link"}]}]"#;
        assert_eq!(parse(json).unwrap().primary(), None);
    }
}
