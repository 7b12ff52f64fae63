//! Egress gateways, the pure core: given the pods, namespaces, EgressGatewayPolicies and
//! FelixConfiguration of a cluster and the health of each gateway, which gateways each client
//! pod on one node gets, per destination CIDR, as a desired state (`NodePlan`) that a shell
//! programs as policy-routing rules and tables.
//!
//! No I/O, no clock, no threads: health and the previous plan (for stable tables and hops) are
//! inputs. `sluice gateway` (the program a gateway pod runs) is `sluice-gateway-pod`.
//!
//! Modules, one job each: `model` (the inputs), `facts` (inputs from a `ResourceSet`),
//! `choice` (which annotations or policy a client follows), `health` (a gateway's health from
//! its probes), `hops` (which gateways, least used
//! first), `tables` (stable routing table ids), `plan` (the node's desired state), `tunnel`
//! (the VXLAN device's name and the gateways' MAC addresses, shared by both ends), `routing`
//! (the plan as rules, table routes, tunnels and device, and the syncer that programs them
//! through a backend: the netlink one is `sluice_dataplane::gateway_routes`).
#![forbid(unsafe_code)]

pub mod choice;
pub mod facts;
pub mod health;
pub mod hops;
pub mod model;
pub mod plan;
pub mod routing;
pub mod tables;
pub mod tunnel;

pub use choice::{Choice, Scope};
pub use health::{HealthTracker, ProbeOutcome};
pub use model::{GatewayHealth, Inputs, Namespace, Pod, PodId};
pub use plan::{
    ClientPlan, GatewayTarget, Hop, NodePlan, PlanError, Route, RouteAction, compute, gateway_pods,
};
