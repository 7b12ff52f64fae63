//! The policy routing that delivers proxied connections to the node's own sockets: a rule
//! `fwmark MARK_PROXY/MARK_PROXY lookup PROXY_ROUTE_TABLE` (IPv4 and IPv6) and, in that table,
//! `local` default routes on `lo`, all with protocol 83 like Sluice's other routes and rules.
//! nft's `tproxy` assigns a packet to the proxy's socket, but the routing decision after
//! prerouting still has to deliver it locally rather than forward it to its destination.

use std::fmt;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope, RouteType};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};
use sluice_gateway::routing::ROUTING_PROTOCOL;

use crate::l7_redirect::{MARK_PROXY, PROXY_ROUTE_TABLE, PROXY_RULE_PRIORITY};
use crate::netlink::connect;

/// Why the proxy's routing could not be put in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("L7 proxy routing: {0}")]
pub struct ProxyRoutingError(String);

fn failure(what: impl fmt::Display, error: impl fmt::Display) -> ProxyRoutingError {
    ProxyRoutingError(format!("{what}: {error}"))
}

/// The rule and routes in the kernel of one network namespace.
pub struct ProxyRoutes {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

impl fmt::Debug for ProxyRoutes {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("ProxyRoutes").finish_non_exhaustive()
    }
}

impl ProxyRoutes {
    /// A netlink socket in the calling thread's network namespace.
    pub fn open() -> Result<ProxyRoutes, ProxyRoutingError> {
        let (runtime, handle) = connect().map_err(|error| failure("opening a netlink socket", error))?;
        Ok(ProxyRoutes { runtime, handle })
    }

    /// A netlink socket in the named namespace (`/run/netns/<name>`), opened on a thread that
    /// entered it.
    pub fn in_namespace(name: &str) -> Result<ProxyRoutes, ProxyRoutingError> {
        let path = format!("/run/netns/{name}");
        let namespace = File::open(&path).map_err(|error| failure(format!("opening {path}"), error))?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET)
                        .map_err(|error| failure(format!("entering {path}"), error))?;
                    ProxyRoutes::open()
                })
                .join()
                .unwrap_or_else(|_| Err(ProxyRoutingError("the namespace thread panicked".into())))
        })
    }

    /// Puts the rules and routes in place when missing (the routes are replaced, so a changed
    /// one is repaired). Idempotent; touches nothing else.
    pub fn ensure(&mut self) -> Result<(), ProxyRoutingError> {
        let loopback = self.loopback_index()?;
        for version in [IpVersion::V4, IpVersion::V6] {
            if !self.has_rule(version.clone())? {
                self.add_rule(version.clone())?;
            }
        }
        let v4 = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(PROXY_ROUTE_TABLE)
            .protocol(RouteProtocol::Other(ROUTING_PROTOCOL))
            .scope(RouteScope::Host)
            .kind(RouteType::Local)
            .output_interface(loopback)
            .build();
        let v6 = RouteMessageBuilder::<Ipv6Addr>::new()
            .table_id(PROXY_ROUTE_TABLE)
            .protocol(RouteProtocol::Other(ROUTING_PROTOCOL))
            .scope(RouteScope::Host)
            .kind(RouteType::Local)
            .output_interface(loopback)
            .build();
        for (family, message) in [("IPv4", v4), ("IPv6", v6)] {
            self.runtime
                .block_on(self.handle.route().add(message).replace().execute())
                .map_err(|error| {
                    failure(
                        format!("adding the {family} local default route to table {PROXY_ROUTE_TABLE}"),
                        error,
                    )
                })?;
        }
        Ok(())
    }

    fn loopback_index(&self) -> Result<u32, ProxyRoutingError> {
        let request = self.handle.link().get().match_name("lo".to_string()).execute();
        let messages: Vec<_> = self
            .runtime
            .block_on(request.try_collect())
            .map_err(|error| failure("reading link lo", error))?;
        messages
            .first()
            .map(|message| message.header.index)
            .ok_or_else(|| ProxyRoutingError("no link lo".into()))
    }

    fn has_rule(&self, version: IpVersion) -> Result<bool, ProxyRoutingError> {
        let messages: Vec<RuleMessage> = self
            .runtime
            .block_on(self.handle.rule().get(version).execute().try_collect())
            .map_err(|error| failure("listing rules", error))?;
        Ok(messages.iter().any(is_proxy_rule))
    }

    fn add_rule(&self, version: IpVersion) -> Result<(), ProxyRoutingError> {
        let request = self
            .handle
            .rule()
            .add()
            .table_id(PROXY_ROUTE_TABLE)
            .priority(PROXY_RULE_PRIORITY)
            .action(RuleAction::ToTable);
        let extra = [
            RuleAttribute::FwMark(MARK_PROXY),
            RuleAttribute::FwMask(MARK_PROXY),
            RuleAttribute::Protocol(RouteProtocol::Other(ROUTING_PROTOCOL)),
        ];
        let result = match version {
            IpVersion::V4 => {
                let mut request = request.v4();
                request.message_mut().attributes.extend(extra);
                self.runtime.block_on(request.execute())
            }
            IpVersion::V6 => {
                let mut request = request.v6();
                request.message_mut().attributes.extend(extra);
                self.runtime.block_on(request.execute())
            }
        };
        match result {
            Ok(()) => Ok(()),
            // Added meanwhile (another sync): what was wanted is there.
            Err(rtnetlink::Error::NetlinkError(message))
                if message.to_io().raw_os_error() == Some(Errno::EEXIST as i32) =>
            {
                Ok(())
            }
            Err(error) => Err(failure(
                format!("adding rule fwmark {MARK_PROXY:#x}/{MARK_PROXY:#x} lookup {PROXY_ROUTE_TABLE}"),
                error,
            )),
        }
    }
}

/// Whether a rule is exactly Sluice's proxy rule.
fn is_proxy_rule(message: &RuleMessage) -> bool {
    if message.header.action != RuleAction::ToTable
        || !matches!(message.header.family, AddressFamily::Inet | AddressFamily::Inet6)
    {
        return false;
    }
    let mut mark = None;
    let mut mask = None;
    let mut table = u32::from(message.header.table);
    let mut priority = 0;
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::FwMark(value) => mark = Some(*value),
            RuleAttribute::FwMask(value) => mask = Some(*value),
            RuleAttribute::Table(value) => table = *value,
            RuleAttribute::Priority(value) => priority = *value,
            _ => {}
        }
    }
    mark == Some(MARK_PROXY)
        && mask == Some(MARK_PROXY)
        && table == PROXY_ROUTE_TABLE
        && priority == PROXY_RULE_PRIORITY
}
