//! An in-memory kernel for tests of what drives a [`RoutingSyncer`](super::RoutingSyncer):
//! it keeps what a kernel would (a device recreated with another VNI or port loses its tunnels
//! and the routes through it; a route through the device needs it), logs every change in
//! order and fails the operations it is told to.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::syncer::{KernelDevice, KernelRule, KernelTableRoute, KernelTunnel, RoutingBackend, RoutingError};
use super::{Device, ROUTING_PROTOCOL, Rule, TableRoute, TableRouteKind, Tunnel};

/// A change, as logged and as named in [`FakeRouting::failing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    AddRule(Rule),
    DeleteRule(Rule),
    ReplaceRoute { table: u32, destination: Ipv4Net },
    DeleteRoute { table: u32, destination: Ipv4Net },
    EnsureDevice,
    DeleteDevice,
    AddTunnel(Ipv4Addr),
    DeleteTunnel(Ipv4Addr),
    SetHashPolicy(u32),
}

#[derive(Debug, Clone, Default)]
pub struct FakeRouting {
    pub rules: Vec<KernelRule>,
    pub routes: Vec<KernelTableRoute>,
    pub device: Option<KernelDevice>,
    pub tunnels: Vec<KernelTunnel>,
    pub hash_policy: u32,
    /// Operations that fail (every time, until removed from here).
    pub failing: Vec<Operation>,
    /// The changes made, in order.
    pub log: Vec<Operation>,
    /// How many times the kernel was read (any list).
    pub reads: usize,
}

impl FakeRouting {
    fn change(&mut self, operation: Operation) -> Result<(), RoutingError> {
        if self.failing.contains(&operation) {
            return Err(RoutingError(format!("{operation:?}: refused (fake)")));
        }
        self.log.push(operation);
        Ok(())
    }

    /// Sluice's rules, sorted.
    pub fn our_rules(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self
            .rules
            .iter()
            .filter(|kernel| kernel.protocol == ROUTING_PROTOCOL)
            .map(|kernel| kernel.rule)
            .collect();
        rules.sort();
        rules
    }

    /// Sluice's routes, sorted.
    pub fn our_routes(&self) -> Vec<TableRoute> {
        let mut routes: Vec<TableRoute> = self
            .routes
            .iter()
            .filter(|kernel| kernel.protocol == ROUTING_PROTOCOL)
            .map(|kernel| kernel.route.clone())
            .collect();
        routes.sort();
        routes
    }

    /// The complete tunnels, sorted.
    pub fn our_tunnels(&self) -> Vec<Tunnel> {
        let mut tunnels: Vec<Tunnel> = self
            .tunnels
            .iter()
            .filter(|kernel| kernel.neighbour && kernel.forwarding)
            .map(|kernel| kernel.tunnel)
            .collect();
        tunnels.sort();
        tunnels
    }

    fn drop_device_state(&mut self) {
        self.tunnels.clear();
        self.routes
            .retain(|kernel| !matches!(kernel.route.kind, TableRouteKind::Gateways(_)));
    }
}

impl RoutingBackend for FakeRouting {
    fn list_rules(&mut self) -> Result<Vec<KernelRule>, RoutingError> {
        self.reads += 1;
        Ok(self.rules.clone())
    }

    fn add_rule(&mut self, rule: &Rule) -> Result<(), RoutingError> {
        self.change(Operation::AddRule(*rule))?;
        self.rules.push(KernelRule {
            rule: *rule,
            protocol: ROUTING_PROTOCOL,
        });
        Ok(())
    }

    fn delete_rule(&mut self, rule: &Rule) -> Result<(), RoutingError> {
        self.change(Operation::DeleteRule(*rule))?;
        if let Some(index) = self
            .rules
            .iter()
            .position(|kernel| kernel.protocol == ROUTING_PROTOCOL && kernel.rule == *rule)
        {
            self.rules.remove(index);
        }
        Ok(())
    }

    fn list_routes(&mut self) -> Result<Vec<KernelTableRoute>, RoutingError> {
        self.reads += 1;
        Ok(self.routes.clone())
    }

    fn replace_route(&mut self, route: &TableRoute) -> Result<(), RoutingError> {
        if matches!(route.kind, TableRouteKind::Gateways(_)) && self.device.is_none() {
            return Err(RoutingError(format!("adding {route}: no such device (fake)")));
        }
        self.change(Operation::ReplaceRoute {
            table: route.table,
            destination: route.destination,
        })?;
        self.routes.retain(|kernel| {
            !(kernel.protocol == ROUTING_PROTOCOL
                && kernel.route.table == route.table
                && kernel.route.destination == route.destination)
        });
        self.routes.push(KernelTableRoute {
            route: route.clone(),
            protocol: ROUTING_PROTOCOL,
        });
        Ok(())
    }

    fn delete_route(&mut self, route: &TableRoute) -> Result<(), RoutingError> {
        self.change(Operation::DeleteRoute {
            table: route.table,
            destination: route.destination,
        })?;
        self.routes.retain(|kernel| {
            !(kernel.protocol == ROUTING_PROTOCOL
                && kernel.route.table == route.table
                && kernel.route.destination == route.destination)
        });
        Ok(())
    }

    fn device(&mut self) -> Result<Option<KernelDevice>, RoutingError> {
        self.reads += 1;
        Ok(self.device)
    }

    fn ensure_device(&mut self, device: &Device) -> Result<(), RoutingError> {
        self.change(Operation::EnsureDevice)?;
        if let Some(existing) = self.device
            && (existing.device.vni, existing.device.port) != (device.vni, device.port)
        {
            self.drop_device_state();
        }
        self.device = Some(KernelDevice {
            device: *device,
            up: true,
        });
        Ok(())
    }

    fn delete_device(&mut self) -> Result<(), RoutingError> {
        self.change(Operation::DeleteDevice)?;
        self.device = None;
        self.drop_device_state();
        Ok(())
    }

    fn list_tunnels(&mut self) -> Result<Vec<KernelTunnel>, RoutingError> {
        self.reads += 1;
        Ok(self.tunnels.clone())
    }

    fn add_tunnel(&mut self, tunnel: &Tunnel) -> Result<(), RoutingError> {
        if self.device.is_none() {
            return Err(RoutingError(format!("adding {tunnel}: no such device (fake)")));
        }
        self.change(Operation::AddTunnel(tunnel.gateway))?;
        self.tunnels
            .retain(|kernel| kernel.tunnel.gateway != tunnel.gateway);
        self.tunnels.push(KernelTunnel {
            tunnel: *tunnel,
            neighbour: true,
            forwarding: true,
        });
        Ok(())
    }

    fn delete_tunnel(&mut self, tunnel: &Tunnel) -> Result<(), RoutingError> {
        self.change(Operation::DeleteTunnel(tunnel.gateway))?;
        self.tunnels
            .retain(|kernel| kernel.tunnel.gateway != tunnel.gateway);
        Ok(())
    }

    fn multipath_hash_policy(&mut self) -> Result<u32, RoutingError> {
        self.reads += 1;
        Ok(self.hash_policy)
    }

    fn set_multipath_hash_policy(&mut self, policy: u32) -> Result<(), RoutingError> {
        self.change(Operation::SetHashPolicy(policy))?;
        self.hash_policy = policy;
        Ok(())
    }
}
