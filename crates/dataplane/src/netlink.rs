//! What every rtnetlink user in Sluice needs: a connection driven by a runtime of its own, so
//! that synchronous code can call it, and a route message read into plain values.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::Handle;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};

/// Opens a netlink socket in the calling thread's network namespace, with a single-threaded
/// runtime that drives it whenever the caller blocks on a request.
pub fn connect() -> std::io::Result<(tokio::runtime::Runtime, Handle)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let handle = runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok::<_, std::io::Error>(handle)
    })?;
    Ok((runtime, handle))
}

/// A route message's destination (the default route when it has none), next hop and output
/// interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFields {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub output: Option<u32>,
}

pub fn route_fields(message: &RouteMessage) -> Option<RouteFields> {
    let address = |value: &RouteAddress| match value {
        RouteAddress::Inet(address) => Some(IpAddr::V4(*address)),
        RouteAddress::Inet6(address) => Some(IpAddr::V6(*address)),
        _ => None,
    };
    let mut destination = None;
    let mut gateway = None;
    let mut output = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(value) => destination = address(value),
            RouteAttribute::Gateway(value) => gateway = address(value),
            RouteAttribute::Oif(index) => output = Some(*index),
            _ => {}
        }
    }
    let destination = match destination {
        Some(address) => IpNet::new(address, message.header.destination_prefix_length).ok()?,
        None => match message.header.address_family {
            AddressFamily::Inet6 => IpNet::V6(Default::default()),
            _ => IpNet::V4(Default::default()),
        },
    };
    Some(RouteFields {
        destination,
        gateway,
        output,
    })
}

pub use sluice_nft::namespace::{NamespaceError, in_network_namespace};
