//! The gateway's end of the tunnel from client nodes: a VXLAN device named
//! [`tunnel::DEVICE`](sluice_gateway::tunnel::DEVICE) that decapsulates what a client's node
//! sends to this pod's address on the VXLAN port. Its MAC address is
//! [`gateway_mac`](sluice_gateway::tunnel::gateway_mac) of the pod's IPv4 address, the address
//! client nodes put in their static neighbour entries, so the inner frames are addressed to it.
//! Made and removed with `ip`, like the addresses are read.
//!
//! Decapsulated packets come from client addresses the pod routes through its interface, so
//! reverse-path filtering is turned off on the device and on `all` (the kernel uses the larger
//! of the two).

use std::net::Ipv4Addr;
use std::process::Command;

use sluice_gateway::tunnel::{self, DEVICE, OVERHEAD};

/// The smallest MTU the kernel gives an IPv4 device.
const MINIMUM_MTU: u32 = 68;

/// What the device is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSettings {
    pub vni: u32,
    pub port: u16,
    pub mac: [u8; 6],
    pub mtu: u32,
}

impl TunnelSettings {
    /// The device of the gateway at `address` whose interface has `interface_mtu`.
    pub fn new(vni: u32, port: u16, address: Ipv4Addr, interface_mtu: u32) -> Result<TunnelSettings, String> {
        let mtu = interface_mtu.saturating_sub(OVERHEAD);
        if mtu < MINIMUM_MTU {
            return Err(format!(
                "the interface's MTU {interface_mtu} leaves {mtu} for {DEVICE} after VXLAN's {OVERHEAD} bytes; IPv4 needs {MINIMUM_MTU}"
            ));
        }
        Ok(TunnelSettings {
            vni,
            port,
            mac: tunnel::gateway_mac(address),
            mtu,
        })
    }

    /// `ip link add …`: no learning, since the gateway never sends through the tunnel (replies
    /// go back through the pod's interface) and must not learn client nodes from it.
    pub fn add_arguments(&self) -> Vec<String> {
        [
            "link",
            "add",
            DEVICE,
            "address",
            &tunnel::mac_text(self.mac),
            "mtu",
            &self.mtu.to_string(),
            "type",
            "vxlan",
            "id",
            &self.vni.to_string(),
            "dstport",
            &self.port.to_string(),
            "nolearning",
        ]
        .iter()
        .map(|argument| argument.to_string())
        .collect()
    }
}

/// A link as `ip -j -d link show` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub mtu: u32,
    /// `vxlan`, `veth`, …; none for a plain device.
    pub kind: Option<String>,
}

/// Reads the one link of `ip -j -d link show dev NAME`.
pub fn parse_link(json: &str) -> Result<Link, String> {
    let links: serde_json::Value =
        serde_json::from_str(json).map_err(|error| format!("unreadable `ip -j` output: {error}"))?;
    let link = links
        .as_array()
        .and_then(|links| links.first())
        .ok_or("`ip -j link show` listed no link")?;
    let mtu = link
        .get("mtu")
        .and_then(serde_json::Value::as_u64)
        .and_then(|mtu| u32::try_from(mtu).ok())
        .ok_or("`ip -j link show` gave no MTU")?;
    let kind = link
        .pointer("/linkinfo/info_kind")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    Ok(Link { mtu, kind })
}

/// The link named `name`, or none when there is no such link.
pub fn read_link(name: &str) -> Result<Option<Link>, String> {
    let output = Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", name])
        .output()
        .map_err(|error| format!("cannot run `ip link show dev {name}`: {error}"))?;
    if !output.status.success() {
        let error = String::from_utf8_lossy(&output.stderr);
        if error.contains("does not exist") {
            return Ok(None);
        }
        return Err(format!("`ip link show dev {name}` failed: {}", error.trim()));
    }
    parse_link(&String::from_utf8_lossy(&output.stdout))
        .map(Some)
        .map_err(|error| format!("reading link {name}: {error}"))
}

/// Makes the device, replacing one of that name an earlier run left (a gateway killed without
/// cleanup); refuses to delete a device of that name that is not VXLAN (not ours).
pub fn install(settings: &TunnelSettings) -> Result<(), String> {
    match read_link(DEVICE)? {
        Some(Link { kind: Some(kind), .. }) if kind == "vxlan" => {
            ip(&["link", "del", DEVICE])?;
            tracing::info!(device = DEVICE, "removed a tunnel device left by an earlier run");
        }
        Some(link) => {
            return Err(format!(
                "a {} device named {DEVICE} exists; the gateway's tunnel needs the name",
                link.kind.as_deref().unwrap_or("plain")
            ));
        }
        None => {}
    }
    let arguments = settings.add_arguments();
    ip(&arguments.iter().map(String::as_str).collect::<Vec<_>>())?;
    let configured = (|| {
        for path in [
            format!("/proc/sys/net/ipv4/conf/{DEVICE}/rp_filter"),
            "/proc/sys/net/ipv4/conf/all/rp_filter".to_string(),
        ] {
            std::fs::write(&path, "0").map_err(|error| format!("cannot write {path}: {error}"))?;
        }
        ip(&["link", "set", DEVICE, "up"])
    })();
    if let Err(error) = configured {
        // Half made is not left behind.
        let _ = remove();
        return Err(error);
    }
    Ok(())
}

/// Deletes the device, and nothing if it is already gone.
pub fn remove() -> Result<(), String> {
    if read_link(DEVICE)?.is_none() {
        return Ok(());
    }
    ip(&["link", "del", DEVICE])
}

/// The MTU of the pod's interface.
pub fn interface_mtu(interface: &str) -> Result<u32, String> {
    read_link(interface)?
        .map(|link| link.mtu)
        .ok_or_else(|| format!("interface {interface} does not exist"))
}

fn ip(arguments: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(arguments)
        .output()
        .map_err(|error| format!("cannot run `ip {}`: {error}", arguments.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_carries_the_gateway_mac_and_the_mtu_less_the_overhead() {
        let settings = TunnelSettings::new(4097, 4790, Ipv4Addr::new(10, 77, 2, 2), 1500).unwrap();
        assert_eq!(settings.mtu, 1450);
        assert_eq!(
            settings.add_arguments().join(" "),
            "link add egress.sluice address 02:53:0a:4d:02:02 mtu 1450 type vxlan id 4097 dstport 4790 nolearning"
        );
    }

    #[test]
    fn an_mtu_too_small_for_ipv4_after_the_overhead_is_refused() {
        let error = TunnelSettings::new(4097, 4790, Ipv4Addr::new(10, 0, 0, 1), 100).unwrap_err();
        assert!(error.contains("leaves 50"), "{error}");
        assert!(TunnelSettings::new(4097, 4790, Ipv4Addr::new(10, 0, 0, 1), 118).is_ok());
    }

    #[test]
    fn reads_mtu_and_kind() {
        let json = r#"[{"ifname":"egress.sluice","mtu":1450,"linkinfo":{"info_kind":"vxlan","info_data":{"id":4097}}}]"#;
        assert_eq!(
            parse_link(json).unwrap(),
            Link {
                mtu: 1450,
                kind: Some("vxlan".into())
            }
        );
        let plain = r#"[{"ifname":"eth0","mtu":1500}]"#;
        assert_eq!(parse_link(plain).unwrap().kind, None);
        assert!(parse_link("[]").is_err());
    }
}
