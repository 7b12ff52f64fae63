//! The tunnel between a client's node and a gateway pod: one VXLAN device at each end, both
//! named [`DEVICE`], on FelixConfiguration's `egressIPVXLANPort` and `egressIPVXLANVNI`.
//!
//! The client's node encapsulates to the gateway pod's own address (the outer packet is
//! ordinary node-to-pod traffic, routed as any other), so a gateway on another node needs no
//! per-client state on that node. Both ends derive the gateway's inner MAC address from its
//! IPv4 address, so the node's static neighbour and FDB entries and the device `sluice gateway`
//! creates agree without anything being exchanged.

use std::net::Ipv4Addr;

/// The VXLAN device's name on nodes and in gateway pods.
pub const DEVICE: &str = "egress.sluice";

/// VXLAN's overhead (outer IPv4, UDP, VXLAN and inner Ethernet headers): the device's MTU is
/// the path's less this.
pub const OVERHEAD: u32 = 50;

/// The inner MAC address of the gateway at `address`: locally administered, unicast
/// (`0x02` first), then `0x53` ("S"), then the four bytes of the address, so it is unique
/// per gateway address and never a vendor's.
pub fn gateway_mac(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0x53, a, b, c, d]
}

/// The MAC address as `ip` prints it.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_local_unicast_and_carries_the_address() {
        let mac = gateway_mac(Ipv4Addr::new(10, 250, 0, 7));
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_eq!(mac_text(mac), "02:53:0a:fa:00:07");
        assert_ne!(mac, gateway_mac(Ipv4Addr::new(10, 250, 0, 8)));
    }
}
