//! Netlink through `rtnetlink`, one connection per network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that opens it. The node side is the
//! plugin's own namespace (the main thread never changes namespace); the pod side is reached by
//! [`in_namespace`], which enters the pod's namespace on a new OS thread that ends with the work,
//! so no other code ever runs in a namespace it was not given.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteMessage, RouteScope, RouteType};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// The pod's IPv4 next hop: a link-local address nobody owns, answered by the host side's proxy
/// ARP, as Calico does, so pods need no per-node gateway address.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The host side's MAC, as Calico sets it; its EUI-64 link-local address is the IPv6 next hop.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// `fe80::ecee:eeff:feee:eeee`: the link-local address the kernel derives from [`HOST_MAC`].
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// A failed netlink or namespace operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}: {message}")]
pub struct NetlinkError {
    pub context: String,
    pub message: String,
    pub errno: Option<Errno>,
}

impl NetlinkError {
    fn new(context: impl Into<String>, message: impl ToString, errno: Option<Errno>) -> NetlinkError {
        NetlinkError {
            context: context.into(),
            message: message.to_string(),
            errno,
        }
    }
}

/// Attaches context to rtnetlink and I/O errors, keeping the errno.
trait Context<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, NetlinkError>;
}

impl<T> Context<T> for Result<T, rtnetlink::Error> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, NetlinkError> {
        self.map_err(|error| {
            let errno = match &error {
                rtnetlink::Error::NetlinkError(message) => {
                    message.to_io().raw_os_error().map(Errno::from_raw)
                }
                _ => None,
            };
            NetlinkError::new(context(), error, errno)
        })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, NetlinkError> {
        self.map_err(|error| {
            let errno = error.raw_os_error().map(Errno::from_raw);
            NetlinkError::new(context(), error, errno)
        })
    }
}

/// A link as CHECK and DEL need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub up: bool,
    pub mac: Option<Vec<u8>>,
    pub mtu: Option<u32>,
    /// Whether the link is one end of a veth pair.
    pub veth: bool,
    /// A veth's peer, by its index in the peer's own namespace.
    pub peer: Option<u32>,
}

impl Link {
    /// Whether this is the host end of a veth Sluice made: a veth with Calico's host MAC.
    pub fn made_by_sluice(&self) -> bool {
        self.veth && self.mac.as_deref() == Some(&HOST_MAC[..])
    }
}

/// A route as CHECK compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub output: Option<u32>,
    pub scope: RouteScope,
}

/// A netlink connection in the calling thread's namespace, driven by a single-threaded runtime
/// owned by that thread.
pub struct Netlink {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Netlink").finish_non_exhaustive()
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let (runtime, handle) =
            sluice_dataplane::netlink::connect().context(|| "opening a netlink socket".into())?;
        Ok(Netlink { runtime, handle })
    }

    fn run<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The link named `name`, or `None` when there is none.
    pub fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut request = self.handle.link().get().match_name(name.to_string()).execute();
        match self
            .run(request.try_next())
            .context(|| format!("looking up link {name}"))
        {
            Ok(Some(message)) => Ok(Some(link_of(&message))),
            Ok(None) => Ok(None),
            Err(error) if error.errno == Some(Errno::ENODEV) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Deletes a link; a link already gone is not an error.
    pub fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        match self
            .run(self.handle.link().del(index).execute())
            .context(|| format!("deleting link {index}"))
        {
            Err(error) if error.errno == Some(Errno::ENODEV) => Ok(()),
            other => other,
        }
    }

    /// Creates a veth pair: `host` here, up, with Calico's MAC; `peer` created directly in the
    /// namespace open as `peer_namespace`, so it never appears under that name on the node.
    pub fn create_veth(
        &self,
        host: &str,
        peer: &str,
        peer_namespace: &File,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let peer_message = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_namespace.as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host)
            .mtu(mtu)
            .address(HOST_MAC.to_vec())
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
            .build();
        self.run(self.handle.link().add(message).execute())
            .context(|| format!("creating veth pair {host} / {peer}"))
    }

    pub fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).up().build();
        self.run(self.handle.link().set(message).execute())
            .context(|| format!("setting link {index} up"))
    }

    /// Adds `address` with its full-length prefix (/32 or /128), without duplicate address
    /// detection for IPv6 since the address is the pod's alone.
    pub fn add_host_address(&self, index: u32, address: IpAddr) -> Result<(), NetlinkError> {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        let mut request = self.handle.address().add(index, address, prefix).replace();
        if address.is_ipv6() {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.run(request.execute())
            .context(|| format!("adding address {address}/{prefix}"))
    }

    /// The addresses on a link, with their prefix lengths.
    pub fn addresses(&self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        let request = self.handle.address().get().set_link_index_filter(index).execute();
        let messages: Vec<_> = self
            .run(request.try_collect())
            .context(|| format!("listing addresses of link {index}"))?;
        Ok(messages
            .iter()
            .filter(|message| message.header.index == index)
            .filter_map(|message| {
                let address = message.attributes.iter().find_map(|attribute| match attribute {
                    AddressAttribute::Address(address) => Some(*address),
                    _ => None,
                })?;
                IpNet::new(address, message.header.prefix_len).ok()
            })
            .collect())
    }

    /// Adds (or replaces) a route to `destination` out of `index`, through `gateway` if given,
    /// else directly on the link.
    pub fn add_route(
        &self,
        destination: IpNet,
        gateway: Option<IpAddr>,
        index: u32,
    ) -> Result<(), NetlinkError> {
        let message = route_message(destination, gateway, index);
        self.run(self.handle.route().add(message).replace().execute())
            .context(|| match gateway {
                Some(gateway) => format!("adding route {destination} via {gateway} dev {index}"),
                None => format!("adding route {destination} dev {index}"),
            })
    }

    /// The main table's unicast routes of one family.
    pub fn routes(&self, ipv6: bool) -> Result<Vec<Route>, NetlinkError> {
        let filter = if ipv6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        let request = self.handle.route().get(filter).execute();
        let messages: Vec<RouteMessage> = self
            .run(request.try_collect())
            .context(|| "listing routes".into())?;
        Ok(messages.iter().filter_map(route_of).collect())
    }
}

fn route_message(destination: IpNet, gateway: Option<IpAddr>, index: u32) -> RouteMessage {
    let scope = if gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    match (destination, gateway) {
        (IpNet::V4(network), gateway) => {
            let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(network.addr(), network.prefix_len())
                .output_interface(index)
                .scope(scope);
            if let Some(IpAddr::V4(gateway)) = gateway {
                builder = builder.gateway(gateway);
            }
            builder.build()
        }
        (IpNet::V6(network), gateway) => {
            let mut builder = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(network.addr(), network.prefix_len())
                .output_interface(index)
                .scope(scope);
            if let Some(IpAddr::V6(gateway)) = gateway {
                builder = builder.gateway(gateway);
            }
            builder.build()
        }
    }
}

fn link_of(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        up: message.header.flags.contains(LinkFlags::Up),
        mac: None,
        mtu: None,
        veth: false,
        peer: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::Address(mac) => link.mac = Some(mac.clone()),
            LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
            LinkAttribute::Link(peer) => link.peer = Some(*peer),
            LinkAttribute::LinkInfo(infos) => {
                link.veth = infos
                    .iter()
                    .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    link
}

fn route_of(message: &RouteMessage) -> Option<Route> {
    if message.header.table != rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN
        || message.header.kind != RouteType::Unicast
    {
        return None;
    }
    let fields = sluice_dataplane::netlink::route_fields(message)?;
    Some(Route {
        destination: fields.destination,
        gateway: fields.gateway,
        output: fields.output,
        scope: message.header.scope,
    })
}

/// Why [`in_namespace`] could not run its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceProblem {
    /// The namespace file does not exist (the sandbox is gone).
    Missing,
    /// Anything else: not a namespace, no permission, setns failed.
    Other(String),
}

/// Runs `work` with a netlink connection inside the network namespace at `path`, on a new OS
/// thread that enters it with `setns`; the calling thread's namespace never changes.
pub fn in_namespace<T: Send>(
    path: &Path,
    work: impl FnOnce(&Netlink) -> Result<T, NetlinkError> + Send,
) -> Result<Result<T, NetlinkError>, NamespaceProblem> {
    let namespace = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(NamespaceProblem::Missing),
        Err(error) => {
            return Err(NamespaceProblem::Other(format!(
                "opening {}: {error}",
                path.display()
            )));
        }
    };
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    NamespaceProblem::Other(format!("entering network namespace {}: {errno}", path.display()))
                })?;
                Ok(Netlink::open().and_then(|netlink| work(&netlink)))
            })
            .join()
            .unwrap_or_else(|_| Err(NamespaceProblem::Other("the namespace thread panicked".into())))
    })
}

/// Writes a per-interface sysctl under /proc/sys/net of the calling thread's namespace.
pub fn write_sysctl(path: &str, value: &str) -> Result<(), NetlinkError> {
    std::fs::write(format!("/proc/sys/net/{path}"), value).context(|| format!("setting {path} = {value}"))
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
