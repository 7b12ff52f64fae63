//! Routes to pod addresses in the node's main routing table, through netlink.
//!
//! Sluice marks the routes it creates with its own routing protocol number
//! ([`ROUTE_PROTOCOL`], shown by `ip route` as `proto 83`) and only ever changes or deletes
//! routes that carry it, so routes made by the CNI plugin, an administrator or a routing daemon
//! are left as they are. A desired route whose destination already has a route of someone
//! else's is reported as a conflict, never replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use ipnet::IpNet;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::route::{RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::netlink::{connect, route_fields};

/// The routing protocol number on Sluice's routes. Calico's Felix uses 80; 83 is unassigned in
/// iproute2's `rt_protos` and is "S".
pub const ROUTE_PROTOCOL: u8 = 83;

/// One route Sluice wants in the main table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub destination: IpNet,
    /// The next hop; `None` makes a blackhole route.
    pub via: Option<IpAddr>,
}

impl fmt::Display for Route {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            Some(via) => write!(formatter, "{} via {via}", self.destination),
            None => write!(formatter, "blackhole {}", self.destination),
        }
    }
}

/// A main-table route as the kernel holds it, with whoever made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub route: Route,
    pub protocol: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(pub String);

/// Where routes are read and written: the kernel, or a fake for tests.
pub trait RouteBackend: Send {
    /// Every main-table route with a destination (unicast and blackhole), of every protocol.
    fn list(&mut self) -> Result<Vec<KernelRoute>, RouteError>;
    /// Adds `route` with Sluice's protocol where the destination has no route; `Ok(false)` if
    /// one appeared since the last list (the kernel refuses rather than overwrites it).
    fn add(&mut self, route: &Route) -> Result<bool, RouteError>;
    /// Replaces Sluice's route to the same destination with `route`.
    fn replace(&mut self, route: &Route) -> Result<(), RouteError>;
    /// Deletes Sluice's route to `route.destination`.
    fn delete(&mut self, route: &Route) -> Result<(), RouteError>;
}

impl<R: RouteBackend + ?Sized> RouteBackend for Box<R> {
    fn list(&mut self) -> Result<Vec<KernelRoute>, RouteError> {
        (**self).list()
    }

    fn add(&mut self, route: &Route) -> Result<bool, RouteError> {
        (**self).add(route)
    }

    fn replace(&mut self, route: &Route) -> Result<(), RouteError> {
        (**self).replace(route)
    }

    fn delete(&mut self, route: &Route) -> Result<(), RouteError> {
        (**self).delete(route)
    }
}

/// What one route sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteReport {
    pub added: usize,
    pub removed: usize,
    /// Desired routes left out because someone else's route has the destination.
    pub conflicts: Vec<Route>,
}

/// Keeps Sluice's routes equal to the desired ones.
#[derive(Debug)]
pub struct RouteSyncer<R: RouteBackend> {
    backend: R,
    applied: Option<BTreeSet<Route>>,
}

impl<R: RouteBackend> RouteSyncer<R> {
    pub fn new(backend: R) -> Self {
        RouteSyncer {
            backend,
            applied: None,
        }
    }

    pub fn backend(&self) -> &R {
        &self.backend
    }

    /// The next sync reads the kernel again instead of trusting what was applied last.
    pub fn resync_next(&mut self) {
        self.applied = None;
    }

    /// Makes Sluice's routes exactly `desired`. Every route is attempted even when one fails;
    /// the errors are returned together and the next sync reads the kernel again, as it does
    /// while a conflict lasts. Routes are told apart by destination alone: Sluice's all have
    /// the default metric, and another route to the destination at any metric is a conflict.
    pub fn sync(&mut self, desired: &[Route]) -> Result<RouteReport, RouteError> {
        let desired: BTreeSet<Route> = desired.iter().cloned().collect();
        if self.applied.as_ref() == Some(&desired) {
            return Ok(RouteReport::default());
        }
        self.applied = None;
        let mut ours: BTreeMap<IpNet, Route> = BTreeMap::new();
        let mut theirs: BTreeSet<IpNet> = BTreeSet::new();
        for kernel in self.backend.list()? {
            if kernel.protocol == ROUTE_PROTOCOL {
                ours.insert(kernel.route.destination, kernel.route);
            } else {
                theirs.insert(kernel.route.destination);
            }
        }
        let wanted: BTreeSet<IpNet> = desired.iter().map(|route| route.destination).collect();
        let mut report = RouteReport::default();
        let mut errors = Vec::new();
        for route in ours.values() {
            if !wanted.contains(&route.destination) {
                match self.backend.delete(route) {
                    Ok(()) => report.removed += 1,
                    Err(error) => errors.push(error.0),
                }
            }
        }
        for route in &desired {
            let outcome = match ours.get(&route.destination) {
                Some(existing) if existing == route => continue,
                Some(_) => self.backend.replace(route).map(|()| true),
                None if theirs.contains(&route.destination) => Ok(false),
                None => self.backend.add(route),
            };
            match outcome {
                Ok(true) => report.added += 1,
                Ok(false) => report.conflicts.push(route.clone()),
                Err(error) => errors.push(error.0),
            }
        }
        if !errors.is_empty() {
            return Err(RouteError(errors.join("; ")));
        }
        if report.conflicts.is_empty() {
            self.applied = Some(desired);
        }
        Ok(report)
    }
}

/// Routes in the kernel of the namespace the connection was opened in.
pub struct NetlinkRoutes {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

impl fmt::Debug for NetlinkRoutes {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("NetlinkRoutes").finish_non_exhaustive()
    }
}

impl NetlinkRoutes {
    /// A netlink socket in the calling thread's network namespace.
    pub fn open() -> Result<NetlinkRoutes, RouteError> {
        let (runtime, handle) =
            connect().map_err(|error| RouteError(format!("opening a netlink socket: {error}")))?;
        Ok(NetlinkRoutes { runtime, handle })
    }

    /// A netlink socket in the named namespace (`/run/netns/<name>`), opened on a short-lived
    /// thread that entered it; the socket stays in that namespace whichever thread uses it.
    pub fn in_namespace(name: &str) -> Result<NetlinkRoutes, RouteError> {
        let path = format!("/run/netns/{name}");
        let namespace = File::open(&path).map_err(|error| RouteError(format!("opening {path}: {error}")))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| RouteError(format!("entering network namespace {path}: {errno}")))?;
                    NetlinkRoutes::open()
                })
                .join()
                .unwrap_or_else(|_| Err(RouteError("the namespace thread panicked".into())))
        })
    }
}

impl RouteBackend for NetlinkRoutes {
    fn list(&mut self) -> Result<Vec<KernelRoute>, RouteError> {
        let mut routes = Vec::new();
        for filter in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let messages: Vec<RouteMessage> = self
                .runtime
                .block_on(self.handle.route().get(filter).execute().try_collect())
                .map_err(|error| RouteError(format!("listing routes: {error}")))?;
            routes.extend(messages.iter().filter_map(kernel_route));
        }
        Ok(routes)
    }

    fn add(&mut self, route: &Route) -> Result<bool, RouteError> {
        // Without replace, rtnetlink asks for NLM_F_CREATE | NLM_F_EXCL.
        let request = self.handle.route().add(message(route)).execute();
        match self.runtime.block_on(request) {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(error))
                if error.to_io().raw_os_error() == Some(nix::errno::Errno::EEXIST as i32) =>
            {
                Ok(false)
            }
            Err(error) => Err(RouteError(format!("adding route {route}: {error}"))),
        }
    }

    fn replace(&mut self, route: &Route) -> Result<(), RouteError> {
        let request = self.handle.route().add(message(route)).replace().execute();
        self.runtime
            .block_on(request)
            .map_err(|error| RouteError(format!("adding route {route}: {error}")))
    }

    fn delete(&mut self, route: &Route) -> Result<(), RouteError> {
        let request = self.handle.route().del(message(route)).execute();
        self.runtime
            .block_on(request)
            .map_err(|error| RouteError(format!("deleting route {route}: {error}")))
    }
}

fn message(route: &Route) -> RouteMessage {
    let (kind, scope) = match route.via {
        Some(_) => (RouteType::Unicast, RouteScope::Universe),
        None => (RouteType::BlackHole, RouteScope::Universe),
    };
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.destination.addr(), route.destination.prefix_len())
        .expect("an IpNet's prefix length fits its family");
    if let Some(via) = route.via {
        builder = builder
            .gateway(via)
            .expect("the next hop has the destination's family");
    }
    builder
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .kind(kind)
        .scope(scope)
        .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
        .build()
}

fn kernel_route(message: &RouteMessage) -> Option<KernelRoute> {
    if message.header.table != RouteHeader::RT_TABLE_MAIN
        || !matches!(message.header.kind, RouteType::Unicast | RouteType::BlackHole)
    {
        return None;
    }
    let fields = route_fields(message)?;
    let protocol = match message.header.protocol {
        RouteProtocol::Other(number) => number,
        other => u8::from(other),
    };
    Some(KernelRoute {
        route: Route {
            destination: fields.destination,
            via: fields.gateway,
        },
        protocol,
    })
}

/// Routes kept in memory, for tests of what calls [`RouteSyncer`].
#[derive(Debug, Clone, Default)]
pub struct FakeRoutes {
    pub routes: Vec<KernelRoute>,
    /// Destinations whose add or replace fails, as the kernel's does for an unreachable next hop.
    pub unreachable: BTreeSet<IpNet>,
    pub calls: usize,
}

impl RouteBackend for FakeRoutes {
    fn list(&mut self) -> Result<Vec<KernelRoute>, RouteError> {
        self.calls += 1;
        Ok(self.routes.clone())
    }

    fn add(&mut self, route: &Route) -> Result<bool, RouteError> {
        if self
            .routes
            .iter()
            .any(|kernel| kernel.route.destination == route.destination)
        {
            self.calls += 1;
            return Ok(false);
        }
        self.replace(route).map(|()| true)
    }

    fn replace(&mut self, route: &Route) -> Result<(), RouteError> {
        self.calls += 1;
        if self.unreachable.contains(&route.destination) {
            return Err(RouteError(format!(
                "adding route {route}: Network is unreachable"
            )));
        }
        self.routes.retain(|kernel| {
            !(kernel.protocol == ROUTE_PROTOCOL && kernel.route.destination == route.destination)
        });
        self.routes.push(KernelRoute {
            route: route.clone(),
            protocol: ROUTE_PROTOCOL,
        });
        Ok(())
    }

    fn delete(&mut self, route: &Route) -> Result<(), RouteError> {
        self.calls += 1;
        self.routes.retain(|kernel| {
            !(kernel.protocol == ROUTE_PROTOCOL && kernel.route.destination == route.destination)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(destination: &str, via: Option<&str>) -> Route {
        Route {
            destination: destination.parse().unwrap(),
            via: via.map(|address| address.parse().unwrap()),
        }
    }

    fn kernel(destination: &str, via: Option<&str>, protocol: u8) -> KernelRoute {
        KernelRoute {
            route: route(destination, via),
            protocol,
        }
    }

    #[test]
    fn adds_what_is_missing_fixes_what_differs_and_removes_only_its_own_extras() {
        let fake = FakeRoutes {
            routes: vec![
                kernel("10.0.0.64/26", Some("100.64.0.99"), ROUTE_PROTOCOL),
                kernel("10.0.9.0/26", Some("100.64.0.11"), ROUTE_PROTOCOL),
                kernel("10.0.0.5/32", None, 2),
                kernel("0.0.0.0/0", Some("100.64.0.1"), 3),
            ],
            ..FakeRoutes::default()
        };
        let mut syncer = RouteSyncer::new(fake);
        let desired = [
            route("10.0.0.0/26", None),
            route("10.0.0.64/26", Some("100.64.0.11")),
        ];
        let report = syncer.sync(&desired).unwrap();
        assert_eq!((report.added, report.removed), (2, 1));
        let mut now: Vec<_> = syncer.backend().routes.clone();
        now.sort_by(|a, b| a.route.cmp(&b.route));
        assert_eq!(
            now,
            vec![
                kernel("0.0.0.0/0", Some("100.64.0.1"), 3),
                kernel("10.0.0.0/26", None, ROUTE_PROTOCOL),
                kernel("10.0.0.5/32", None, 2),
                kernel("10.0.0.64/26", Some("100.64.0.11"), ROUTE_PROTOCOL),
            ]
        );
        // Nothing changed: the kernel is not even read.
        let calls = syncer.backend().calls;
        assert_eq!(syncer.sync(&desired).unwrap(), RouteReport::default());
        assert_eq!(syncer.backend().calls, calls);
    }

    #[test]
    fn someone_elses_route_to_the_destination_is_a_conflict_and_stays() {
        let fake = FakeRoutes {
            routes: vec![kernel("10.0.0.64/26", Some("100.64.0.50"), 4)],
            ..FakeRoutes::default()
        };
        let mut syncer = RouteSyncer::new(fake);
        let report = syncer
            .sync(&[route("10.0.0.64/26", Some("100.64.0.11"))])
            .unwrap();
        assert_eq!(report.added, 0);
        assert_eq!(report.conflicts, vec![route("10.0.0.64/26", Some("100.64.0.11"))]);
        assert_eq!(
            syncer.backend().routes,
            vec![kernel("10.0.0.64/26", Some("100.64.0.50"), 4)]
        );
        // A conflict is not remembered as applied: once the other route goes, ours comes.
        syncer.backend.routes.clear();
        let report = syncer
            .sync(&[route("10.0.0.64/26", Some("100.64.0.11"))])
            .unwrap();
        assert_eq!((report.added, report.conflicts.len()), (1, 0));
    }

    #[test]
    fn one_failing_route_does_not_stop_the_others_and_the_next_sync_retries() {
        let mut fake = FakeRoutes::default();
        fake.unreachable.insert("10.0.1.0/26".parse().unwrap());
        let mut syncer = RouteSyncer::new(fake);
        let desired = [
            route("10.0.0.64/26", Some("100.64.0.11")),
            route("10.0.1.0/26", Some("192.0.2.1")),
        ];
        let error = syncer.sync(&desired).unwrap_err();
        assert!(error.0.contains("10.0.1.0/26 via 192.0.2.1"), "{error}");
        assert_eq!(syncer.backend().routes.len(), 1);
        let calls = syncer.backend().calls;
        assert!(syncer.sync(&desired).is_err());
        assert!(
            syncer.backend().calls > calls,
            "a failed sync is retried against the kernel"
        );
    }
}
