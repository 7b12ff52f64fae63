//! Brings the kernel from what it holds to a [`DesiredRouting`], touching only Sluice's own
//! entries: rules and table routes carrying [`ROUTING_PROTOCOL`] (routes only in
//! [`TABLE_RANGE`](crate::tables::TABLE_RANGE)), the `egress.sluice` device and the neighbour
//! and FDB entries on it.
//!
//! Order, so no packet of a client leaves the wrong way in between: the device and tunnels
//! before the routes through them, a client's table routes before its rule; its rule deleted
//! before its routes, the tunnels and device last.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{
    DesiredRouting, Device, MULTIPATH_HASH_POLICY, ROUTING_PROTOCOL, Rule, TableRoute, TableRouteKind, Tunnel,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RoutingError(pub String);

/// A rule `from <address>/32 lookup <table>` as the kernel holds it, with whoever made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRule {
    pub rule: Rule,
    pub protocol: u8,
}

/// A route in a table of Sluice's range, with whoever made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTableRoute {
    pub route: TableRoute,
    pub protocol: u8,
}

/// A gateway's entries on the device: the tunnel works only with both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelTunnel {
    pub tunnel: Tunnel,
    /// The permanent neighbour entry `<gateway> lladdr <mac>`.
    pub neighbour: bool,
    /// The FDB entry `<mac> dst <gateway>`.
    pub forwarding: bool,
}

/// The device as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelDevice {
    pub device: Device,
    pub up: bool,
}

/// Sluice's rules and table routes in the kernel (protocol 83 only), for
/// [`previous_from_kernel`](super::previous_from_kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelRouting {
    pub rules: Vec<Rule>,
    pub routes: Vec<TableRoute>,
}

/// Where rules, table routes, the device and tunnels are read and written: the kernel
/// (`sluice_dataplane::gateway_routes`) or [`FakeRouting`](super::FakeRouting).
pub trait RoutingBackend: Send {
    /// Every IPv4 rule `from <address>/32 lookup <table>`, of every protocol.
    fn list_rules(&mut self) -> Result<Vec<KernelRule>, RoutingError>;
    /// Adds `rule` with Sluice's protocol.
    fn add_rule(&mut self, rule: &Rule) -> Result<(), RoutingError>;
    /// Deletes Sluice's rule equal to `rule` (an identical rule of another protocol stays).
    fn delete_rule(&mut self, rule: &Rule) -> Result<(), RoutingError>;
    /// Every route in the tables of `TABLE_RANGE`, of every protocol.
    fn list_routes(&mut self) -> Result<Vec<KernelTableRoute>, RoutingError>;
    /// Writes `route` with Sluice's protocol, replacing Sluice's route to the same destination
    /// in the same table.
    fn replace_route(&mut self, route: &TableRoute) -> Result<(), RoutingError>;
    /// Deletes Sluice's route to `route.destination` in `route.table`.
    fn delete_route(&mut self, route: &TableRoute) -> Result<(), RoutingError>;
    /// The device's settings, if it exists.
    fn device(&mut self) -> Result<Option<KernelDevice>, RoutingError>;
    /// Creates the device, or brings an existing one to `device` (recreating it if its VNI or
    /// port differ: its tunnels and routes go with it) and up.
    fn ensure_device(&mut self, device: &Device) -> Result<(), RoutingError>;
    /// Deletes the device (and with it every neighbour, FDB entry and route through it).
    fn delete_device(&mut self) -> Result<(), RoutingError>;
    /// Every permanent neighbour and every FDB entry with a destination on the device.
    fn list_tunnels(&mut self) -> Result<Vec<KernelTunnel>, RoutingError>;
    /// Writes both entries of `tunnel`, replacing what the device has for its gateway.
    fn add_tunnel(&mut self, tunnel: &Tunnel) -> Result<(), RoutingError>;
    /// Deletes both entries of `tunnel`; a missing one is no error.
    fn delete_tunnel(&mut self, tunnel: &Tunnel) -> Result<(), RoutingError>;
    /// `net.ipv4.fib_multipath_hash_policy`.
    fn multipath_hash_policy(&mut self) -> Result<u32, RoutingError>;
    fn set_multipath_hash_policy(&mut self, policy: u32) -> Result<(), RoutingError>;
}

/// What happened to the device in one sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange {
    Created,
    /// Existing, but with other settings or down.
    Changed,
    Removed,
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingReport {
    pub rules_added: usize,
    pub rules_removed: usize,
    /// Routes added or replaced.
    pub routes_written: usize,
    pub routes_removed: usize,
    pub tunnels_added: usize,
    pub tunnels_removed: usize,
    pub device: Option<DeviceChange>,
    /// `fib_multipath_hash_policy` was set.
    pub hash_policy_set: bool,
    /// Desired routes left out because another protocol's route holds the destination in that
    /// table.
    pub conflicts: Vec<TableRoute>,
}

impl RoutingReport {
    pub fn changed(&self) -> bool {
        *self
            != RoutingReport {
                conflicts: self.conflicts.clone(),
                ..RoutingReport::default()
            }
    }
}

/// What a successful sync left, so an unchanged desired state does not read the kernel again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    rules: Vec<Rule>,
    routes: Vec<TableRoute>,
    tunnels: Vec<Tunnel>,
    device: Option<Device>,
}

impl Applied {
    fn of(desired: &DesiredRouting) -> Applied {
        Applied {
            rules: desired.rules.clone(),
            routes: desired.routes.clone(),
            tunnels: desired.tunnels.clone(),
            device: desired.device,
        }
    }
}

/// Keeps Sluice's egress gateway routing equal to the desired one.
#[derive(Debug)]
pub struct RoutingSyncer<B: RoutingBackend> {
    backend: B,
    applied: Option<Applied>,
}

impl<B: RoutingBackend> RoutingSyncer<B> {
    pub fn new(backend: B) -> Self {
        RoutingSyncer {
            backend,
            applied: None,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The next sync reads the kernel again instead of trusting what was applied last, so
    /// something removed behind Sluice's back is put back.
    pub fn resync_next(&mut self) {
        self.applied = None;
    }

    /// Sluice's rules and table routes as the kernel holds them now.
    pub fn kernel_state(&mut self) -> Result<KernelRouting, RoutingError> {
        let rules = self
            .backend
            .list_rules()?
            .into_iter()
            .filter(|kernel| kernel.protocol == ROUTING_PROTOCOL)
            .map(|kernel| kernel.rule)
            .collect();
        let routes = self
            .backend
            .list_routes()?
            .into_iter()
            .filter(|kernel| kernel.protocol == ROUTING_PROTOCOL)
            .map(|kernel| kernel.route)
            .collect();
        Ok(KernelRouting { rules, routes })
    }

    /// Makes the kernel hold exactly `desired` of Sluice's entries. Every change is attempted
    /// even when one fails; the errors are returned together and the next sync reads the
    /// kernel again, as it does while a conflict lasts.
    pub fn sync(&mut self, desired: &DesiredRouting) -> Result<RoutingReport, RoutingError> {
        let wanted = Applied::of(desired);
        if self.applied.as_ref() == Some(&wanted) {
            return Ok(RoutingReport::default());
        }
        self.applied = None;
        let mut report = RoutingReport::default();
        let mut errors: Vec<String> = Vec::new();

        // The device and the hash policy first: routes through the device need it.
        let kernel_device = self.backend.device()?;
        if let Some(device) = &desired.device {
            match self.backend.multipath_hash_policy() {
                Ok(policy) if policy == MULTIPATH_HASH_POLICY => {}
                Ok(_) => match self.backend.set_multipath_hash_policy(MULTIPATH_HASH_POLICY) {
                    Ok(()) => report.hash_policy_set = true,
                    Err(error) => errors.push(error.0),
                },
                Err(error) => errors.push(error.0),
            }
            let in_place = kernel_device
                == Some(KernelDevice {
                    device: *device,
                    up: true,
                });
            if !in_place {
                match self.backend.ensure_device(device) {
                    Ok(()) => {
                        report.device = Some(match kernel_device {
                            None => DeviceChange::Created,
                            Some(_) => DeviceChange::Changed,
                        })
                    }
                    Err(error) => errors.push(error.0),
                }
            }
        }

        // Read after the device step: recreating the device took its tunnels and routes.
        let tunnels = self.backend.list_tunnels()?;
        let kernel_routes = self.backend.list_routes()?;
        let kernel_rules = self.backend.list_rules()?;

        let complete: BTreeSet<Tunnel> = tunnels
            .iter()
            .filter(|kernel| kernel.neighbour && kernel.forwarding)
            .map(|kernel| kernel.tunnel)
            .collect();
        for tunnel in &desired.tunnels {
            if !complete.contains(tunnel) {
                match self.backend.add_tunnel(tunnel) {
                    Ok(()) => report.tunnels_added += 1,
                    Err(error) => errors.push(error.0),
                }
            }
        }

        let mut ours: BTreeMap<(u32, Ipv4Net), TableRoute> = BTreeMap::new();
        let mut theirs: BTreeSet<(u32, Ipv4Net)> = BTreeSet::new();
        for kernel in kernel_routes {
            let key = (kernel.route.table, kernel.route.destination);
            if kernel.protocol == ROUTING_PROTOCOL {
                ours.insert(key, kernel.route);
            } else {
                theirs.insert(key);
            }
        }
        for route in &desired.routes {
            let key = (route.table, route.destination);
            match ours.get(&key) {
                Some(existing) if existing == route => continue,
                None if theirs.contains(&key) => {
                    report.conflicts.push(route.clone());
                    continue;
                }
                _ => {}
            }
            match self.backend.replace_route(route) {
                Ok(()) => report.routes_written += 1,
                Err(error) => errors.push(error.0),
            }
        }

        let ours_rules: BTreeSet<Rule> = kernel_rules
            .iter()
            .filter(|kernel| kernel.protocol == ROUTING_PROTOCOL)
            .map(|kernel| kernel.rule)
            .collect();
        let wanted_rules: BTreeSet<Rule> = desired.rules.iter().copied().collect();
        for rule in wanted_rules.difference(&ours_rules) {
            match self.backend.add_rule(rule) {
                Ok(()) => report.rules_added += 1,
                Err(error) => errors.push(error.0),
            }
        }
        // A rule that could not be deleted keeps its table's routes: a rule over an emptied
        // table would send its client the normal way.
        let mut kept_tables = BTreeSet::new();
        for rule in ours_rules.difference(&wanted_rules) {
            match self.backend.delete_rule(rule) {
                Ok(()) => report.rules_removed += 1,
                Err(error) => {
                    kept_tables.insert(rule.table);
                    errors.push(error.0);
                }
            }
        }

        let wanted_routes: BTreeSet<(u32, Ipv4Net)> = desired
            .routes
            .iter()
            .map(|route| (route.table, route.destination))
            .collect();
        for (key, route) in &ours {
            if wanted_routes.contains(key) || kept_tables.contains(&route.table) {
                continue;
            }
            match self.backend.delete_route(route) {
                Ok(()) => report.routes_removed += 1,
                Err(error) => errors.push(error.0),
            }
        }

        let wanted_gateways: BTreeSet<Ipv4Addr> =
            desired.tunnels.iter().map(|tunnel| tunnel.gateway).collect();
        let stale: BTreeSet<Tunnel> = tunnels
            .iter()
            .map(|kernel| kernel.tunnel)
            .filter(|tunnel| !wanted_gateways.contains(&tunnel.gateway))
            .collect();
        for tunnel in &stale {
            match self.backend.delete_tunnel(tunnel) {
                Ok(()) => report.tunnels_removed += 1,
                Err(error) => errors.push(error.0),
            }
        }

        if desired.device.is_none() && kernel_device.is_some() {
            match self.backend.delete_device() {
                Ok(()) => report.device = Some(DeviceChange::Removed),
                Err(error) => errors.push(error.0),
            }
        }

        if !errors.is_empty() {
            return Err(RoutingError(errors.join("; ")));
        }
        if report.conflicts.is_empty() {
            self.applied = Some(wanted);
        }
        Ok(report)
    }
}

impl TableRouteKind {
    /// The gateways it routes through.
    pub fn gateways(&self) -> &[Ipv4Addr] {
        match self {
            TableRouteKind::Gateways(gateways) => gateways,
            _ => &[],
        }
    }
}
