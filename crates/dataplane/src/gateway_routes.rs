//! The egress gateway policy routing of a node, through netlink: the kernel behind
//! [`sluice_gateway::routing::RoutingSyncer`]. Rules `from <client>/32 lookup <table>` and the
//! routes of the client tables carry protocol 83 (as Sluice's main-table routes do); the VXLAN
//! device `egress.sluice` is created without learning, and each gateway gets a permanent
//! neighbour entry and an FDB entry (`AF_BRIDGE`, `NTF_SELF`, `NDA_DST`) on it.
//! `net.ipv4.fib_multipath_hash_policy` is read and written under `/proc/sys`, from a thread in
//! the node's namespace.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, LinkUnspec, LinkVxlan, RouteMessageBuilder, RouteNextHopBuilder};
use sluice_gateway::routing::{
    Device, KernelDevice, KernelRule, KernelTableRoute, KernelTunnel, PIN_MASK, ROUTING_PROTOCOL,
    RoutingBackend, RoutingError, Rule, RuleSelector, TableRoute, TableRouteKind, Tunnel, is_owned_table,
};
use sluice_gateway::tunnel::DEVICE;

use crate::netlink::{connect, route_fields};

const HASH_POLICY: &str = "/proc/sys/net/ipv4/fib_multipath_hash_policy";

/// Rules, client tables, the device and its tunnels in the kernel of one network namespace.
pub struct NetlinkGatewayRoutes {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
    /// The namespace the socket was opened in, when not the caller's: sysctls are written from
    /// a thread that enters it.
    namespace: Option<(String, File)>,
}

impl fmt::Debug for NetlinkGatewayRoutes {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NetlinkGatewayRoutes")
            .field("namespace", &self.namespace.as_ref().map(|(name, _)| name))
            .finish_non_exhaustive()
    }
}

fn failure(what: impl fmt::Display, error: impl fmt::Display) -> RoutingError {
    RoutingError(format!("{what}: {error}"))
}

fn errno_of(error: &rtnetlink::Error) -> Option<Errno> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io().raw_os_error().map(Errno::from_raw),
        _ => None,
    }
}

/// A delete of something already gone is done.
fn gone(error: &rtnetlink::Error) -> bool {
    matches!(
        errno_of(error),
        Some(Errno::ENOENT | Errno::ESRCH | Errno::ENODEV | Errno::EADDRNOTAVAIL)
    )
}

impl NetlinkGatewayRoutes {
    /// A netlink socket in the calling thread's network namespace.
    pub fn open() -> Result<NetlinkGatewayRoutes, RoutingError> {
        let (runtime, handle) = connect().map_err(|error| failure("opening a netlink socket", error))?;
        Ok(NetlinkGatewayRoutes {
            runtime,
            handle,
            namespace: None,
        })
    }

    /// A netlink socket in the named namespace (`/run/netns/<name>`), opened on a short-lived
    /// thread that entered it; the socket stays in that namespace whichever thread uses it.
    pub fn in_namespace(name: &str) -> Result<NetlinkGatewayRoutes, RoutingError> {
        let path = format!("/run/netns/{name}");
        let namespace = File::open(&path).map_err(|error| failure(format!("opening {path}"), error))?;
        let mut routes = in_namespace(&namespace, &path, NetlinkGatewayRoutes::open)??;
        routes.namespace = Some((name.to_string(), namespace));
        Ok(routes)
    }

    fn device_message(&self) -> Result<Option<LinkMessage>, RoutingError> {
        let request = self.handle.link().get().match_name(DEVICE.to_string()).execute();
        match self.runtime.block_on(request.try_collect::<Vec<_>>()) {
            Ok(mut messages) => Ok(messages.pop()),
            Err(error) if matches!(errno_of(&error), Some(Errno::ENODEV)) => Ok(None),
            Err(error) => Err(failure(format!("reading link {DEVICE}"), error)),
        }
    }

    fn device_index(&self) -> Result<Option<u32>, RoutingError> {
        Ok(self.device_message()?.map(|message| message.header.index))
    }

    fn required_device_index(&self, what: impl fmt::Display) -> Result<u32, RoutingError> {
        self.device_index()?
            .ok_or_else(|| failure(what, format!("no device {DEVICE}")))
    }

    fn create_device(&self, device: &Device) -> Result<(), RoutingError> {
        let message = LinkVxlan::new(DEVICE, device.vni)
            .port(device.port)
            .learning(false)
            .mtu(device.mtu)
            .up()
            .build();
        self.runtime
            .block_on(self.handle.link().add(message).execute())
            .map_err(|error| failure(format!("creating {device}"), error))
    }

    fn delete_index(&self, index: u32) -> Result<(), RoutingError> {
        match self.runtime.block_on(self.handle.link().del(index).execute()) {
            Ok(()) => Ok(()),
            Err(error) if gone(&error) => Ok(()),
            Err(error) => Err(failure(format!("deleting {DEVICE}"), error)),
        }
    }

    /// Runs `work` in the backend's namespace (on a thread that entered it), or here.
    fn in_own_namespace<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, RoutingError> {
        match &self.namespace {
            None => Ok(work()),
            Some((name, file)) => in_namespace(file, name, work),
        }
    }
}

fn in_namespace<T: Send>(
    file: &File,
    name: &str,
    work: impl FnOnce() -> T + Send,
) -> Result<T, RoutingError> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(file, CloneFlags::CLONE_NEWNET)
                    .map_err(|errno| failure(format!("entering network namespace {name}"), errno))?;
                Ok(work())
            })
            .join()
            .unwrap_or_else(|_| Err(RoutingError("the namespace thread panicked".into())))
    })
}

fn rule_message(rule: &Rule) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.action = RuleAction::ToTable;
    message.attributes = match rule.selector {
        RuleSelector::Source(source) => {
            message.header.src_len = 32;
            vec![RuleAttribute::Source(IpAddr::V4(source))]
        }
        RuleSelector::Mark(mark) => vec![RuleAttribute::FwMark(mark), RuleAttribute::FwMask(PIN_MASK)],
    };
    message.attributes.extend([
        RuleAttribute::Table(rule.table),
        RuleAttribute::Priority(rule.priority),
        RuleAttribute::Protocol(RouteProtocol::Other(ROUTING_PROTOCOL)),
    ]);
    message
}

/// A rule of the forms Sluice writes (`from <address>/32 lookup <table>` or `fwmark
/// <mark>/PIN_MASK lookup <table>`, no other selector).
fn kernel_rule(message: &RuleMessage) -> Option<KernelRule> {
    if message.header.action != RuleAction::ToTable || message.header.dst_len != 0 {
        return None;
    }
    let mut mark = None;
    let mut mask = None;
    let mut source = None;
    let mut table = u32::from(message.header.table);
    let mut priority = 0;
    let mut protocol = 0;
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Source(IpAddr::V4(address)) => source = Some(*address),
            RuleAttribute::Table(id) => table = *id,
            RuleAttribute::Priority(value) => priority = *value,
            RuleAttribute::Protocol(value) => protocol = protocol_number(*value),
            RuleAttribute::FwMark(value) => mark = Some(*value),
            RuleAttribute::FwMask(value) => mask = Some(*value),
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::Destination(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_)
            | RuleAttribute::UidRange(_) => return None,
            _ => {}
        }
    }
    let selector = match (source, message.header.src_len, mark, mask) {
        (Some(source), 32, None, None) => RuleSelector::Source(source),
        (None, 0, Some(mark), Some(PIN_MASK)) => RuleSelector::Mark(mark),
        _ => return None,
    };
    Some(KernelRule {
        rule: Rule {
            selector,
            table,
            priority,
        },
        protocol,
    })
}

fn protocol_number(protocol: RouteProtocol) -> u8 {
    match protocol {
        RouteProtocol::Other(number) => number,
        other => u8::from(other),
    }
}

fn route_type(kind: &TableRouteKind) -> RouteType {
    match kind {
        TableRouteKind::Gateways(_) => RouteType::Unicast,
        TableRouteKind::Throw => RouteType::Throw,
        TableRouteKind::Unreachable => RouteType::Unreachable,
        TableRouteKind::Blackhole => RouteType::BlackHole,
    }
}

fn route_builder(route: &TableRoute) -> RouteMessageBuilder<Ipv4Addr> {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.destination.addr(), route.destination.prefix_len())
        .table_id(route.table)
        .protocol(RouteProtocol::Other(ROUTING_PROTOCOL))
        .scope(RouteScope::Universe)
        .kind(route_type(&route.kind))
}

/// A route in one of Sluice's tables. A unicast route without gateways (not Sluice's shape)
/// reads as `Gateways([])`, so a sync replaces it.
fn kernel_table_route(message: &RouteMessage) -> Option<KernelTableRoute> {
    let table = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(id) => Some(*id),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table));
    if !is_owned_table(table) {
        return None;
    }
    let IpNet::V4(destination) = route_fields(message)?.destination else {
        return None;
    };
    let kind = match message.header.kind {
        RouteType::Throw => TableRouteKind::Throw,
        RouteType::Unreachable => TableRouteKind::Unreachable,
        RouteType::BlackHole => TableRouteKind::Blackhole,
        RouteType::Unicast => {
            let mut gateways = Vec::new();
            for attribute in &message.attributes {
                match attribute {
                    RouteAttribute::Gateway(RouteAddress::Inet(address)) => gateways.push(*address),
                    RouteAttribute::MultiPath(hops) => {
                        for hop in hops {
                            for attribute in &hop.attributes {
                                if let RouteAttribute::Gateway(RouteAddress::Inet(address)) = attribute {
                                    gateways.push(*address);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            gateways.sort();
            gateways.dedup();
            TableRouteKind::Gateways(gateways)
        }
        _ => return None,
    };
    Some(KernelTableRoute {
        route: TableRoute {
            table,
            destination: Ipv4Net::new(destination.addr(), destination.prefix_len()).ok()?,
            kind,
        },
        protocol: protocol_number(message.header.protocol),
    })
}

fn vxlan_settings(message: &LinkMessage) -> KernelDevice {
    let mut device = Device {
        vni: 0,
        port: 0,
        mtu: 0,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::Mtu(mtu) => device.mtu = *mtu,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Data(InfoData::Vxlan(settings)) = info {
                        for setting in settings {
                            match setting {
                                InfoVxlan::Id(vni) => device.vni = *vni,
                                InfoVxlan::Port(port) => device.port = *port,
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    KernelDevice {
        device,
        up: message.header.flags.contains(LinkFlags::Up),
    }
}

fn neighbour_gateway(message: &NeighbourMessage) -> Option<(Ipv4Addr, [u8; 6])> {
    let mut gateway = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(address)) => gateway = Some(*address),
            // An FDB entry's (AF_BRIDGE) destination is not read as an address by the parser.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                gateway = <[u8; 4]>::try_from(bytes.as_slice()).ok().map(Ipv4Addr::from)
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => {}
        }
    }
    Some((gateway?, mac?))
}

fn neighbour_message(index: u32, tunnel: &Tunnel) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    message.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(
        tunnel.gateway,
    ))];
    message
}

fn forwarding_message(index: u32, tunnel: &Tunnel) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    message.header.flags = NeighbourFlags::Own;
    message.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(tunnel.mac.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(tunnel.gateway)),
    ];
    message
}

impl RoutingBackend for NetlinkGatewayRoutes {
    fn list_rules(&mut self) -> Result<Vec<KernelRule>, RoutingError> {
        let messages: Vec<RuleMessage> = self
            .runtime
            .block_on(self.handle.rule().get(IpVersion::V4).execute().try_collect())
            .map_err(|error| failure("listing rules", error))?;
        Ok(messages.iter().filter_map(kernel_rule).collect())
    }

    fn add_rule(&mut self, rule: &Rule) -> Result<(), RoutingError> {
        let mut request = self
            .handle
            .rule()
            .add()
            .v4()
            .table_id(rule.table)
            .priority(rule.priority)
            .action(RuleAction::ToTable);
        match rule.selector {
            RuleSelector::Source(source) => request = request.source_prefix(source, 32),
            RuleSelector::Mark(mark) => request
                .message_mut()
                .attributes
                .extend([RuleAttribute::FwMark(mark), RuleAttribute::FwMask(PIN_MASK)]),
        }
        request
            .message_mut()
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Other(ROUTING_PROTOCOL)));
        self.runtime
            .block_on(request.execute())
            .map_err(|error| failure(format!("adding {rule}"), error))
    }

    fn delete_rule(&mut self, rule: &Rule) -> Result<(), RoutingError> {
        // The protocol is part of the match: an identical rule of someone else's stays.
        match self
            .runtime
            .block_on(self.handle.rule().del(rule_message(rule)).execute())
        {
            Ok(()) => Ok(()),
            Err(error) if gone(&error) => Ok(()),
            Err(error) => Err(failure(format!("deleting {rule}"), error)),
        }
    }

    fn list_routes(&mut self) -> Result<Vec<KernelTableRoute>, RoutingError> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let messages: Vec<RouteMessage> = self
            .runtime
            .block_on(self.handle.route().get(filter).execute().try_collect())
            .map_err(|error| failure("listing routes", error))?;
        Ok(messages.iter().filter_map(kernel_table_route).collect())
    }

    fn replace_route(&mut self, route: &TableRoute) -> Result<(), RoutingError> {
        let mut builder = route_builder(route);
        if let TableRouteKind::Gateways(gateways) = &route.kind {
            let index = self.required_device_index(format!("adding route {route}"))?;
            let mut hops = Vec::with_capacity(gateways.len());
            for gateway in gateways {
                let hop = RouteNextHopBuilder::new_ipv4()
                    .interface(index)
                    .via(IpAddr::V4(*gateway))
                    .map_err(|error| failure(format!("adding route {route}"), error))?
                    .onlink()
                    .build();
                hops.push(hop);
            }
            builder = builder.multipath(hops);
        }
        let request = self.handle.route().add(builder.build()).replace().execute();
        self.runtime
            .block_on(request)
            .map_err(|error| failure(format!("adding route {route}"), error))
    }

    fn delete_route(&mut self, route: &TableRoute) -> Result<(), RoutingError> {
        let request = self.handle.route().del(route_builder(route).build()).execute();
        match self.runtime.block_on(request) {
            Ok(()) => Ok(()),
            Err(error) if gone(&error) => Ok(()),
            Err(error) => Err(failure(format!("deleting route {route}"), error)),
        }
    }

    fn device(&mut self) -> Result<Option<KernelDevice>, RoutingError> {
        Ok(self.device_message()?.as_ref().map(vxlan_settings))
    }

    fn ensure_device(&mut self, device: &Device) -> Result<(), RoutingError> {
        match self.device_message()? {
            None => self.create_device(device),
            Some(message) => {
                let existing = vxlan_settings(&message).device;
                if (existing.vni, existing.port) != (device.vni, device.port) {
                    // VXLAN cannot change either in place; its tunnels and routes go with it.
                    self.delete_index(message.header.index)?;
                    return self.create_device(device);
                }
                let change = LinkUnspec::new_with_index(message.header.index)
                    .mtu(device.mtu)
                    .up()
                    .build();
                self.runtime
                    .block_on(self.handle.link().set(change).execute())
                    .map_err(|error| failure(format!("setting {device}"), error))
            }
        }
    }

    fn delete_device(&mut self) -> Result<(), RoutingError> {
        match self.device_index()? {
            None => Ok(()),
            Some(index) => self.delete_index(index),
        }
    }

    fn list_tunnels(&mut self) -> Result<Vec<KernelTunnel>, RoutingError> {
        let Some(index) = self.device_index()? else {
            return Ok(Vec::new());
        };
        let mut tunnels: BTreeMap<Tunnel, KernelTunnel> = BTreeMap::new();
        for family in [AddressFamily::Inet, AddressFamily::Bridge] {
            let request = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute();
            let messages: Vec<NeighbourMessage> = self
                .runtime
                .block_on(request.try_collect())
                .map_err(|error| failure(format!("listing neighbours on {DEVICE}"), error))?;
            for message in &messages {
                if message.header.ifindex != index || message.header.family != family {
                    continue;
                }
                let Some((gateway, mac)) = neighbour_gateway(message) else {
                    continue;
                };
                let tunnel = Tunnel { gateway, mac };
                let entry = tunnels.entry(tunnel).or_insert(KernelTunnel {
                    tunnel,
                    neighbour: false,
                    forwarding: false,
                });
                if family == AddressFamily::Inet {
                    // Only a permanent entry is Sluice's; the kernel's own (resolving) are not.
                    entry.neighbour |= message.header.state == NeighbourState::Permanent;
                } else {
                    entry.forwarding = true;
                }
            }
        }
        Ok(tunnels
            .into_values()
            .filter(|kernel| kernel.neighbour || kernel.forwarding)
            .collect())
    }

    fn add_tunnel(&mut self, tunnel: &Tunnel) -> Result<(), RoutingError> {
        let index = self.required_device_index(format!("adding {tunnel}"))?;
        let neighbour = self
            .handle
            .neighbours()
            .add(index, IpAddr::V4(tunnel.gateway))
            .link_layer_address(&tunnel.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        self.runtime
            .block_on(neighbour)
            .map_err(|error| failure(format!("adding the neighbour of {tunnel}"), error))?;
        let forwarding = self
            .handle
            .neighbours()
            .add_bridge(index, &tunnel.mac)
            .flags(NeighbourFlags::Own)
            .destination(IpAddr::V4(tunnel.gateway))
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        self.runtime
            .block_on(forwarding)
            .map_err(|error| failure(format!("adding the FDB entry of {tunnel}"), error))
    }

    fn delete_tunnel(&mut self, tunnel: &Tunnel) -> Result<(), RoutingError> {
        let Some(index) = self.device_index()? else {
            return Ok(());
        };
        let mut errors = Vec::new();
        for (what, message) in [
            ("neighbour", neighbour_message(index, tunnel)),
            ("FDB entry", forwarding_message(index, tunnel)),
        ] {
            match self
                .runtime
                .block_on(self.handle.neighbours().del(message).execute())
            {
                Ok(()) => {}
                Err(error) if gone(&error) => {}
                Err(error) => errors.push(format!("deleting the {what} of {tunnel}: {error}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RoutingError(errors.join("; ")))
        }
    }

    fn multipath_hash_policy(&mut self) -> Result<u32, RoutingError> {
        let text = self
            .in_own_namespace(|| std::fs::read_to_string(HASH_POLICY))?
            .map_err(|error| failure(format!("reading {HASH_POLICY}"), error))?;
        text.trim()
            .parse()
            .map_err(|error| failure(format!("reading {HASH_POLICY} ({text:?})"), error))
    }

    fn set_multipath_hash_policy(&mut self, policy: u32) -> Result<(), RoutingError> {
        self.in_own_namespace(|| std::fs::write(HASH_POLICY, policy.to_string()))?
            .map_err(|error| failure(format!("writing {policy} to {HASH_POLICY}"), error))
    }
}
