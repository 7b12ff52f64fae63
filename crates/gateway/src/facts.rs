//! The core's inputs from a validated `ResourceSet`: pods with the labels Calico's selectors
//! see (`sluice-policy`'s entities, so gateway selection and policy agree on labels), their
//! egress annotations, namespaces, EgressGatewayPolicies and FelixConfigurations. Health is
//! not in a `ResourceSet`: the caller adds it.

use sluice_api::ResourceSet;
use sluice_api::egress::EgressAnnotations;
use sluice_policy::{EntityKind, build_entities};

use crate::model::{Inputs, Namespace, Pod, PodId};

/// The named container port a gateway serves `/readiness` on, as in Calico Enterprise.
pub const HEALTH_PORT_NAME: &str = "health";
const TCP: u8 = 6;

impl Inputs {
    /// Everything but health (every gateway `NotReady` until the caller says otherwise).
    /// Annotations that do not parse (impossible for a validated set) count as absent.
    pub fn from_resources(resources: &ResourceSet) -> Inputs {
        let (entities, _) = build_entities(resources);
        let find_pod = |namespace: &str, name: &str| {
            resources
                .pods
                .iter()
                .find(|pod| pod.metadata.namespace() == namespace && pod.metadata.name == name)
        };
        let pods = entities
            .into_iter()
            .filter(|entity| entity.kind == EntityKind::Endpoint)
            .filter_map(|entity| {
                let namespace = entity.namespace?;
                let pod = find_pod(&namespace, &entity.name);
                let annotations = pod
                    .and_then(|pod| EgressAnnotations::read(&pod.metadata).ok())
                    .unwrap_or_default();
                let health_port = entity
                    .named_ports
                    .iter()
                    .find(|(name, protocol, _)| name == HEALTH_PORT_NAME && *protocol == TCP)
                    .map(|(_, _, port)| *port);
                Some(Pod {
                    id: PodId::new(&namespace, &entity.name),
                    labels: entity.labels,
                    addresses: entity.networks.iter().map(|network| network.addr()).collect(),
                    node: entity.node,
                    annotations,
                    health_port,
                    deleting: pod.is_some_and(|pod| pod.metadata.deletion_timestamp.is_some()),
                })
            })
            .collect();
        let namespaces = resources
            .namespaces
            .iter()
            .map(|namespace| {
                (
                    namespace.metadata.name.clone(),
                    Namespace {
                        name: namespace.metadata.name.clone(),
                        annotations: EgressAnnotations::read(&namespace.metadata).unwrap_or_default(),
                    },
                )
            })
            .collect();
        let policies = resources
            .egress_gateway_policies
            .iter()
            .map(|policy| (policy.metadata.name.clone(), policy.clone()))
            .collect();
        Inputs {
            pods,
            namespaces,
            policies,
            felix_configurations: resources.felix_configurations.clone(),
            health: Default::default(),
        }
    }
}
