//! Turning forwarding on in the pod's namespace. `/proc/sys/net` is per network namespace, so
//! this changes only the gateway pod (it needs the pod to be allowed these sysctls, e.g.
//! privileged or an init container, as Calico's egress gateway does).

use crate::address::InterfaceAddresses;

const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Sets `net.ipv4.ip_forward=1` when the gateway has an IPv4 address, and
/// `net.ipv6.conf.all.forwarding=1` when it has an IPv6 one.
pub fn enable(addresses: &InterfaceAddresses) -> Result<(), String> {
    if addresses.ipv4.is_some() {
        write_one(IPV4_FORWARD)?;
    }
    if addresses.ipv6.is_some() {
        write_one(IPV6_FORWARD)?;
    }
    Ok(())
}

fn write_one(path: &str) -> Result<(), String> {
    std::fs::write(path, "1").map_err(|error| format!("cannot turn forwarding on ({path}): {error}"))?;
    tracing::info!(sysctl = path, "forwarding on");
    Ok(())
}
