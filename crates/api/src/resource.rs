//! One enum for every kind, and how resources are laid out in the datastore: one key per
//! object, JSON values, the key's modify revision as the resource version.

use serde_json::Value;

use crate::calico::{
    GlobalNetworkPolicy, GlobalNetworkSet, IpPool, NetworkPolicy, NetworkSet, Tier, WorkloadEndpoint,
};
use crate::egress::EgressGatewayPolicy;
use crate::kept::{FelixConfiguration, KeptBody, KeptResource};
use crate::kubernetes::{KubernetesNetworkPolicy, Namespace, Node, Pod, ServiceAccount};
use crate::load::{HasMetadata, Kind, ResourceSet};
use crate::meta::ObjectMeta;
use crate::staged::{StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy, StagedNetworkPolicy};

/// Every key Sluice writes for resources starts with this.
pub const RESOURCE_PREFIX: &str = "/sluice/resources/";

/// A resource of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Namespace(Namespace),
    Pod(Pod),
    ServiceAccount(ServiceAccount),
    Node(Node),
    KubernetesNetworkPolicy(KubernetesNetworkPolicy),
    NetworkPolicy(NetworkPolicy),
    GlobalNetworkPolicy(GlobalNetworkPolicy),
    Tier(Tier),
    NetworkSet(NetworkSet),
    GlobalNetworkSet(GlobalNetworkSet),
    IpPool(IpPool),
    WorkloadEndpoint(WorkloadEndpoint),
    FelixConfiguration(FelixConfiguration),
    EgressGatewayPolicy(EgressGatewayPolicy),
    StagedNetworkPolicy(StagedNetworkPolicy),
    StagedGlobalNetworkPolicy(StagedGlobalNetworkPolicy),
    StagedKubernetesNetworkPolicy(StagedKubernetesNetworkPolicy),
    /// A Calico kind stored and listed but not enforced.
    Kept(KeptResource),
}

macro_rules! each_kind {
    ($value:expr, $binding:ident => $body:expr) => {
        match $value {
            Resource::Namespace($binding) => $body,
            Resource::Pod($binding) => $body,
            Resource::ServiceAccount($binding) => $body,
            Resource::Node($binding) => $body,
            Resource::KubernetesNetworkPolicy($binding) => $body,
            Resource::NetworkPolicy($binding) => $body,
            Resource::GlobalNetworkPolicy($binding) => $body,
            Resource::Tier($binding) => $body,
            Resource::NetworkSet($binding) => $body,
            Resource::GlobalNetworkSet($binding) => $body,
            Resource::IpPool($binding) => $body,
            Resource::WorkloadEndpoint($binding) => $body,
            Resource::FelixConfiguration($binding) => $body,
            Resource::EgressGatewayPolicy($binding) => $body,
            Resource::StagedNetworkPolicy($binding) => $body,
            Resource::StagedGlobalNetworkPolicy($binding) => $body,
            Resource::StagedKubernetesNetworkPolicy($binding) => $body,
            Resource::Kept($binding) => $body,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Pod(_) => Kind::Pod,
            Resource::ServiceAccount(_) => Kind::ServiceAccount,
            Resource::Node(_) => Kind::Node,
            Resource::KubernetesNetworkPolicy(_) => Kind::KubernetesNetworkPolicy,
            Resource::NetworkPolicy(_) => Kind::NetworkPolicy,
            Resource::GlobalNetworkPolicy(_) => Kind::GlobalNetworkPolicy,
            Resource::Tier(_) => Kind::Tier,
            Resource::NetworkSet(_) => Kind::NetworkSet,
            Resource::GlobalNetworkSet(_) => Kind::GlobalNetworkSet,
            Resource::IpPool(_) => Kind::IpPool,
            Resource::WorkloadEndpoint(_) => Kind::WorkloadEndpoint,
            Resource::FelixConfiguration(_) => Kind::FelixConfiguration,
            Resource::EgressGatewayPolicy(_) => Kind::EgressGatewayPolicy,
            Resource::StagedNetworkPolicy(_) => Kind::StagedNetworkPolicy,
            Resource::StagedGlobalNetworkPolicy(_) => Kind::StagedGlobalNetworkPolicy,
            Resource::StagedKubernetesNetworkPolicy(_) => Kind::StagedKubernetesNetworkPolicy,
            Resource::Kept(kept) => kept.kind,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each_kind!(self, resource => resource.metadata())
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each_kind!(self, resource => resource.metadata_mut())
    }

    /// The tier a policy (enforced or staged) names explicitly, if any.
    pub fn tier_reference(&self) -> Option<&str> {
        match self {
            Resource::NetworkPolicy(policy) => policy.spec.tier.as_deref(),
            Resource::GlobalNetworkPolicy(policy) => policy.spec.tier.as_deref(),
            Resource::StagedNetworkPolicy(policy) => policy.spec.tier.as_deref(),
            Resource::StagedGlobalNetworkPolicy(policy) => policy.spec.tier.as_deref(),
            _ => None,
        }
    }

    /// The tier a Calico policy, enforced or staged, is in (`default` when it names none);
    /// `None` for other kinds. Kubernetes policies are in no Tier object's keeping.
    pub fn policy_tier(&self) -> Option<&str> {
        match self {
            Resource::NetworkPolicy(policy) => Some(policy.spec.tier()),
            Resource::GlobalNetworkPolicy(policy) => Some(policy.spec.tier()),
            Resource::StagedNetworkPolicy(policy) => Some(policy.spec.tier()),
            Resource::StagedGlobalNetworkPolicy(policy) => Some(policy.spec.tier()),
            _ => None,
        }
    }

    /// The namespace for namespaced kinds (`default` when unset), `None` otherwise.
    pub fn namespace(&self) -> Option<&str> {
        self.kind().is_namespaced().then(|| self.metadata().namespace())
    }

    /// The datastore key: `/sluice/resources/<kind>/<namespace>/<name>` or
    /// `/sluice/resources/<kind>/<name>`.
    pub fn key(&self) -> String {
        key(self.kind(), self.namespace(), &self.metadata().name)
    }

    /// The resource as a manifest: apiVersion and kind, then the fields. The resource version
    /// is left out; the datastore keeps it.
    pub fn to_manifest(&self) -> Value {
        let mut body =
            each_kind!(self, resource => serde_json::to_value(resource)).expect("resources always serialize");
        let mut manifest = serde_json::Map::new();
        manifest.insert("apiVersion".into(), Value::from(self.kind().api_version()));
        manifest.insert("kind".into(), Value::from(self.kind().name()));
        if let Some(map) = body.as_object_mut() {
            if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("resourceVersion");
            }
            manifest.extend(std::mem::take(map));
        }
        Value::Object(manifest)
    }

    /// Encodes for the datastore.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_manifest()).expect("resources always serialize")
    }

    /// Decodes what [`Resource::encode`] wrote, setting `metadata.resourceVersion` to the
    /// key's modify revision, and checks it with the same per-object rules as `apply` (a value
    /// may have bypassed `apply`: another writer, an older version, a hand edit); the error
    /// names every failing field. It does not check references between objects (a stored
    /// policy may name a tier stored under another key).
    pub fn decode(bytes: &[u8], resource_version: i64) -> Result<Resource, String> {
        let resource = Resource::decode_unchecked(bytes, resource_version)?;
        let mut report = crate::validate::Report::default();
        crate::validate::metadata(resource.kind(), resource.metadata(), &mut report);
        crate::validate::resource(&resource, &mut report);
        if report.errors.is_empty() {
            return Ok(resource);
        }
        let errors: Vec<String> = report
            .errors
            .iter()
            .map(|(field, message)| format!("{}: {message}", field.trim_end_matches("#key")))
            .collect();
        Err(format!("invalid stored value: {}", errors.join("; ")))
    }

    fn decode_unchecked(bytes: &[u8], resource_version: i64) -> Result<Resource, String> {
        let mut value: Value = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        let map = value.as_object_mut().ok_or("a stored value is not an object")?;
        let api_version = map
            .remove("apiVersion")
            .and_then(|value| value.as_str().map(str::to_string));
        let kind_name = map
            .remove("kind")
            .and_then(|value| value.as_str().map(str::to_string));
        let kind = Kind::ALL
            .iter()
            .find(|entry| Some(entry.0) == api_version.as_deref() && Some(entry.1) == kind_name.as_deref())
            .map(|entry| entry.2)
            .ok_or_else(|| format!("a stored value has an unknown kind {kind_name:?} {api_version:?}"))?;
        let mut resource =
            deserialize(kind, value).map_err(|error| format!("{}: {}", error.path(), error.inner()))?;
        resource.metadata_mut().resource_version = Some(resource_version.to_string());
        resource.metadata_mut().origin = crate::meta::Origin {
            file: "datastore".to_string(),
            line: 0,
            column: 0,
        };
        Ok(resource)
    }
}

/// Reads the body of a manifest (without `apiVersion` and `kind`) as the typed resource of
/// `kind`; the error carries the path of the field that did not fit.
pub(crate) fn deserialize(
    kind: Kind,
    body: Value,
) -> Result<Resource, serde_path_to_error::Error<serde_json::Error>> {
    fn typed<T: serde::de::DeserializeOwned>(
        body: Value,
        wrap: fn(T) -> Resource,
    ) -> Result<Resource, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(body).map(wrap)
    }
    match kind {
        Kind::Namespace => typed(body, Resource::Namespace),
        Kind::Pod => typed(body, Resource::Pod),
        Kind::ServiceAccount => typed(body, Resource::ServiceAccount),
        Kind::Node => typed(body, Resource::Node),
        Kind::KubernetesNetworkPolicy => typed(body, Resource::KubernetesNetworkPolicy),
        Kind::NetworkPolicy => typed(body, Resource::NetworkPolicy),
        Kind::GlobalNetworkPolicy => typed(body, Resource::GlobalNetworkPolicy),
        Kind::Tier => typed(body, Resource::Tier),
        Kind::NetworkSet => typed(body, Resource::NetworkSet),
        Kind::GlobalNetworkSet => typed(body, Resource::GlobalNetworkSet),
        Kind::IpPool => typed(body, Resource::IpPool),
        Kind::WorkloadEndpoint => typed(body, Resource::WorkloadEndpoint),
        Kind::FelixConfiguration => typed(body, Resource::FelixConfiguration),
        Kind::EgressGatewayPolicy => typed(body, Resource::EgressGatewayPolicy),
        Kind::StagedNetworkPolicy => typed(body, Resource::StagedNetworkPolicy),
        Kind::StagedGlobalNetworkPolicy => typed(body, Resource::StagedGlobalNetworkPolicy),
        Kind::StagedKubernetesNetworkPolicy => typed(body, Resource::StagedKubernetesNetworkPolicy),
        kept => serde_path_to_error::deserialize(body).map(|body: KeptBody| {
            Resource::Kept(KeptResource {
                kind: kept,
                metadata: body.metadata,
                fields: body.fields,
            })
        }),
    }
}

/// The datastore key of an object.
pub fn key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) if kind.is_namespaced() => format!("{}{namespace}/{name}", kind_prefix(kind)),
        _ => format!("{}{name}", kind_prefix(kind)),
    }
}

/// The key prefix of every object of a kind.
pub fn kind_prefix(kind: Kind) -> String {
    let group = match kind.api_version() {
        "v1" => "core",
        "networking.k8s.io/v1" => "networking.k8s.io",
        _ => "projectcalico.org",
    };
    format!("{RESOURCE_PREFIX}{group}/{}/", kind.name().to_lowercase())
}

impl ResourceSet {
    /// Adds a resource to the list of its kind.
    pub fn push(&mut self, resource: Resource) {
        match resource {
            Resource::Namespace(value) => self.namespaces.push(value),
            Resource::Pod(value) => self.pods.push(value),
            Resource::ServiceAccount(value) => self.service_accounts.push(value),
            Resource::Node(value) => self.nodes.push(value),
            Resource::KubernetesNetworkPolicy(value) => self.kubernetes_network_policies.push(value),
            Resource::NetworkPolicy(value) => self.network_policies.push(value),
            Resource::GlobalNetworkPolicy(value) => self.global_network_policies.push(value),
            Resource::Tier(value) => self.tiers.push(value),
            Resource::NetworkSet(value) => self.network_sets.push(value),
            Resource::GlobalNetworkSet(value) => self.global_network_sets.push(value),
            Resource::IpPool(value) => self.ip_pools.push(value),
            Resource::WorkloadEndpoint(value) => self.workload_endpoints.push(value),
            Resource::FelixConfiguration(value) => self.felix_configurations.push(value),
            Resource::EgressGatewayPolicy(value) => self.egress_gateway_policies.push(value),
            Resource::StagedNetworkPolicy(value) => self.staged_network_policies.push(value),
            Resource::StagedGlobalNetworkPolicy(value) => self.staged_global_network_policies.push(value),
            Resource::StagedKubernetesNetworkPolicy(value) => {
                self.staged_kubernetes_network_policies.push(value)
            }
            Resource::Kept(value) => self.kept.push(value),
        }
    }

    /// Every resource, kind by kind.
    pub fn into_resources(self) -> Vec<Resource> {
        let mut resources = Vec::with_capacity(self.len());
        resources.extend(self.namespaces.into_iter().map(Resource::Namespace));
        resources.extend(self.service_accounts.into_iter().map(Resource::ServiceAccount));
        resources.extend(self.nodes.into_iter().map(Resource::Node));
        resources.extend(self.tiers.into_iter().map(Resource::Tier));
        resources.extend(self.ip_pools.into_iter().map(Resource::IpPool));
        resources.extend(
            self.global_network_sets
                .into_iter()
                .map(Resource::GlobalNetworkSet),
        );
        resources.extend(self.network_sets.into_iter().map(Resource::NetworkSet));
        resources.extend(
            self.global_network_policies
                .into_iter()
                .map(Resource::GlobalNetworkPolicy),
        );
        resources.extend(self.network_policies.into_iter().map(Resource::NetworkPolicy));
        resources.extend(
            self.kubernetes_network_policies
                .into_iter()
                .map(Resource::KubernetesNetworkPolicy),
        );
        resources.extend(
            self.staged_global_network_policies
                .into_iter()
                .map(Resource::StagedGlobalNetworkPolicy),
        );
        resources.extend(
            self.staged_network_policies
                .into_iter()
                .map(Resource::StagedNetworkPolicy),
        );
        resources.extend(
            self.staged_kubernetes_network_policies
                .into_iter()
                .map(Resource::StagedKubernetesNetworkPolicy),
        );
        resources.extend(self.pods.into_iter().map(Resource::Pod));
        resources.extend(
            self.workload_endpoints
                .into_iter()
                .map(Resource::WorkloadEndpoint),
        );
        resources.extend(
            self.felix_configurations
                .into_iter()
                .map(Resource::FelixConfiguration),
        );
        resources.extend(
            self.egress_gateway_policies
                .into_iter()
                .map(Resource::EgressGatewayPolicy),
        );
        resources.extend(self.kept.into_iter().map(Resource::Kept));
        resources
    }
}

impl FromIterator<Resource> for ResourceSet {
    fn from_iter<I: IntoIterator<Item = Resource>>(resources: I) -> Self {
        let mut set = ResourceSet::default();
        for resource in resources {
            set.push(resource);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_round_trip_through_the_datastore_encoding() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/08-prod.yaml"
        ))
        .unwrap();
        let set = crate::load_str("08-prod.yaml", &text).unwrap();
        for resource in set.into_resources() {
            let decoded = Resource::decode(&resource.encode(), 42).unwrap();
            assert_eq!(decoded.metadata().resource_version.as_deref(), Some("42"));
            let mut expected = resource.clone();
            expected.metadata_mut().resource_version = Some("42".into());
            expected.metadata_mut().origin = decoded.metadata().origin.clone();
            assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn a_stored_policy_may_name_a_tier_stored_elsewhere() {
        let text = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {tier: security}\n";
        let policy = crate::load_str("x.yaml", text)
            .unwrap()
            .into_resources()
            .pop()
            .unwrap();
        let decoded = Resource::decode(&policy.encode(), 7).unwrap();
        assert_eq!(decoded.kind(), Kind::GlobalNetworkPolicy);
    }

    /// A value that bypassed `apply` (another writer, a hand edit) is checked on the way out.
    #[test]
    fn an_invalid_stored_value_is_refused_naming_its_fields() {
        let text = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  egress: [{action: Allow, protocol: ICMP, notICMP: {type: 0}}]\n";
        let policy = crate::load_str("x.yaml", text)
            .unwrap()
            .into_resources()
            .pop()
            .unwrap();
        let stored = String::from_utf8(policy.encode())
            .unwrap()
            .replace("\"prod\"", "\"it's \\\"odd\\\"\"")
            .replace("{\"type\":0}", "{\"code\":0}");
        let error = Resource::decode(stored.as_bytes(), 3).unwrap_err();
        assert!(error.contains("metadata.namespace"), "{error}");
        assert!(error.contains("spec.egress[0].notICMP.code"), "{error}");
        let stored =
            crate::stored::decode_values([("/k", stored.as_bytes(), 3), ("/v", &policy.encode()[..], 4)]);
        assert_eq!(stored.resources.keys().collect::<Vec<_>>(), ["/v"]);
        assert_eq!(stored.left_out.len(), 1);
        assert_eq!(stored.left_out[0].key, "/k");
    }

    #[test]
    fn keys_separate_kinds_groups_and_namespaces() {
        assert_eq!(
            key(Kind::NetworkPolicy, Some("prod"), "web"),
            "/sluice/resources/projectcalico.org/networkpolicy/prod/web"
        );
        assert_eq!(
            key(Kind::KubernetesNetworkPolicy, Some("prod"), "web"),
            "/sluice/resources/networking.k8s.io/networkpolicy/prod/web"
        );
        assert_eq!(
            key(Kind::Tier, None, "security"),
            "/sluice/resources/projectcalico.org/tier/security"
        );
    }
}
