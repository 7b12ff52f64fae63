//! What the core decides from: pods (any of which may be a gateway, if a client's selector
//! picks it), namespaces, policies, per-node configuration and gateway health.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use sluice_api::egress::{EgressAnnotations, EgressConfiguration, EgressGatewayPolicy};
use sluice_api::kept::FelixConfiguration;

/// A pod by namespace and name; ordered, so every choice that walks pods is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodId {
    pub namespace: String,
    pub name: String,
}

impl PodId {
    pub fn new(namespace: &str, name: &str) -> PodId {
        PodId {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for PodId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.namespace, self.name)
    }
}

/// A workload pod with an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub id: PodId,
    /// The labels a Calico selector sees: the pod's own, Calico's implicit ones
    /// (`projectcalico.org/namespace`, …) and its namespace's as `pcns.*`.
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
    /// `None` for a pod not scheduled yet: it is neither a client nor a usable gateway.
    pub node: Option<String>,
    pub annotations: EgressAnnotations,
    /// The pod's named TCP port `health`, where a gateway answers `/readiness`.
    pub health_port: Option<u16>,
    /// Its `deletionTimestamp` is set: a gateway being deleted drains.
    pub deleting: bool,
}

/// A namespace's egress annotations (its labels reach pods as `pcns.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub annotations: EgressAnnotations,
}

/// What the health prober last said about a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayHealth {
    /// Answering its health port; may take new clients.
    Ready,
    /// Failed its probes, or not probed yet: used by nobody.
    NotReady,
    /// Being deleted: keeps the clients it has (their flows finish), takes no new ones.
    Draining,
}

/// Everything the core reads.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub pods: Vec<Pod>,
    pub namespaces: BTreeMap<String, Namespace>,
    pub policies: BTreeMap<String, EgressGatewayPolicy>,
    pub felix_configurations: Vec<FelixConfiguration>,
    /// A gateway missing here has not been probed yet and counts as `NotReady` (fail closed).
    pub health: BTreeMap<PodId, GatewayHealth>,
}

impl Inputs {
    pub fn health_of(&self, gateway: &PodId) -> GatewayHealth {
        self.health
            .get(gateway)
            .copied()
            .unwrap_or(GatewayHealth::NotReady)
    }

    pub fn configuration(&self, node: &str) -> EgressConfiguration {
        sluice_api::egress::egress_configuration(&self.felix_configurations, node)
    }

    pub fn namespace_annotations(&self, namespace: &str) -> EgressAnnotations {
        self.namespaces
            .get(namespace)
            .map(|namespace| namespace.annotations.clone())
            .unwrap_or_default()
    }
}
