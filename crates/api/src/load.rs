//! Loading manifests: files, directories, multi-document YAML, JSON and `kind: List`, into a
//! validated [`ResourceSet`]. All errors of all inputs are collected; a set with any error is
//! never returned.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::Resource;
use serde_json::Value;

use crate::calico::{
    DEFAULT_TIER, GlobalNetworkPolicy, GlobalNetworkSet, IpPool, NetworkPolicy, NetworkSet, Tier,
    WorkloadEndpoint,
};
use crate::document::{
    Document, FileError, Position, SyntaxError, for_each_document, for_each_document_in_file,
};
use crate::egress::EgressGatewayPolicy;
use crate::kept::{FelixConfiguration, KeptResource};
use crate::kubernetes::{KubernetesNetworkPolicy, Namespace, Node, Pod, ServiceAccount};
use crate::meta::{ObjectMeta, Origin};
use crate::staged::{StagedGlobalNetworkPolicy, StagedKubernetesNetworkPolicy, StagedNetworkPolicy};
use crate::validate::{self, Report};

/// One error in the input: where it is, which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The field path, e.g. `spec.egress[0].destination.nets[1]`; empty for syntax errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(formatter, "{}: ", self.field)?;
        }
        formatter.write_str(&self.message)
    }
}

/// Every error found in a set of inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<Diagnostic>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
            }
            write!(formatter, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// The kinds Sluice reads, by `apiVersion` and `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    ServiceAccount,
    KubernetesNetworkPolicy,
    NetworkPolicy,
    GlobalNetworkPolicy,
    Tier,
    NetworkSet,
    GlobalNetworkSet,
    IpPool,
    Node,
    WorkloadEndpoint,
    FelixConfiguration,
    EgressGatewayPolicy,
    // Calico kinds stored and listed but not enforced (see `kept`), and the staged policies
    // (typed, see `staged`; after these for a stable order of the kinds).
    BgpConfiguration,
    BgpFilter,
    BgpPeer,
    BlockAffinity,
    CalicoNodeStatus,
    ClusterInformation,
    HostEndpoint,
    IpamConfiguration,
    IpReservation,
    KubeControllersConfiguration,
    Profile,
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    StagedNetworkPolicy,
}

impl Kind {
    pub const ALL: [(&'static str, &'static str, Kind); 28] = [
        ("v1", "Namespace", Kind::Namespace),
        ("v1", "Node", Kind::Node),
        ("v1", "Pod", Kind::Pod),
        ("v1", "ServiceAccount", Kind::ServiceAccount),
        (
            "networking.k8s.io/v1",
            "NetworkPolicy",
            Kind::KubernetesNetworkPolicy,
        ),
        ("projectcalico.org/v3", "NetworkPolicy", Kind::NetworkPolicy),
        (
            "projectcalico.org/v3",
            "GlobalNetworkPolicy",
            Kind::GlobalNetworkPolicy,
        ),
        ("projectcalico.org/v3", "Tier", Kind::Tier),
        ("projectcalico.org/v3", "NetworkSet", Kind::NetworkSet),
        ("projectcalico.org/v3", "GlobalNetworkSet", Kind::GlobalNetworkSet),
        ("projectcalico.org/v3", "IPPool", Kind::IpPool),
        ("projectcalico.org/v3", "WorkloadEndpoint", Kind::WorkloadEndpoint),
        (
            "projectcalico.org/v3",
            "FelixConfiguration",
            Kind::FelixConfiguration,
        ),
        (
            "projectcalico.org/v3",
            "EgressGatewayPolicy",
            Kind::EgressGatewayPolicy,
        ),
        ("projectcalico.org/v3", "BGPConfiguration", Kind::BgpConfiguration),
        ("projectcalico.org/v3", "BGPFilter", Kind::BgpFilter),
        ("projectcalico.org/v3", "BGPPeer", Kind::BgpPeer),
        ("projectcalico.org/v3", "BlockAffinity", Kind::BlockAffinity),
        ("projectcalico.org/v3", "CalicoNodeStatus", Kind::CalicoNodeStatus),
        (
            "projectcalico.org/v3",
            "ClusterInformation",
            Kind::ClusterInformation,
        ),
        ("projectcalico.org/v3", "HostEndpoint", Kind::HostEndpoint),
        (
            "projectcalico.org/v3",
            "IPAMConfiguration",
            Kind::IpamConfiguration,
        ),
        ("projectcalico.org/v3", "IPReservation", Kind::IpReservation),
        (
            "projectcalico.org/v3",
            "KubeControllersConfiguration",
            Kind::KubeControllersConfiguration,
        ),
        ("projectcalico.org/v3", "Profile", Kind::Profile),
        (
            "projectcalico.org/v3",
            "StagedGlobalNetworkPolicy",
            Kind::StagedGlobalNetworkPolicy,
        ),
        (
            "projectcalico.org/v3",
            "StagedKubernetesNetworkPolicy",
            Kind::StagedKubernetesNetworkPolicy,
        ),
        (
            "projectcalico.org/v3",
            "StagedNetworkPolicy",
            Kind::StagedNetworkPolicy,
        ),
    ];

    /// Whether Sluice acts on objects of this kind (staged policies: `explain` shows what they
    /// would do); the others are stored, listed and warned about (see `kept`).
    pub fn is_enforced(self) -> bool {
        crate::kept::not_enforced_reason(self).is_empty()
    }

    pub fn api_version(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|entry| entry.2 == self)
            .map(|entry| entry.0)
            .unwrap_or("")
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|entry| entry.2 == self)
            .map(|entry| entry.1)
            .unwrap_or("")
    }

    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            Kind::Pod
                | Kind::ServiceAccount
                | Kind::KubernetesNetworkPolicy
                | Kind::NetworkPolicy
                | Kind::NetworkSet
                | Kind::WorkloadEndpoint
                | Kind::StagedNetworkPolicy
                | Kind::StagedKubernetesNetworkPolicy
        )
    }

    fn lookup(api_version: &str, kind: &str) -> Option<Kind> {
        Self::ALL
            .iter()
            .find(|entry| entry.0 == api_version && entry.1 == kind)
            .map(|entry| entry.2)
    }

    /// The known kind of `api_version` (or of any apiVersion) nearest to a misspelled one:
    /// the same letters in another case, or a few edits away.
    fn closest(api_version: &str, kind: &str) -> Option<&'static str> {
        let lowered = kind.to_lowercase();
        let candidates = || {
            Self::ALL
                .iter()
                .filter(|entry| entry.0 == api_version)
                .map(|entry| entry.1)
        };
        if let Some(same) = candidates().find(|known| known.to_lowercase() == lowered) {
            return Some(same);
        }
        // A shortened name (`FelixConfig`) is nearer than its length in edits suggests.
        if lowered.len() >= 5
            && let Some(longer) = candidates().find(|known| known.to_lowercase().starts_with(&lowered))
        {
            return Some(longer);
        }
        candidates()
            .map(|known| {
                (
                    strsim::damerau_levenshtein(&known.to_lowercase(), &lowered),
                    known,
                )
            })
            .filter(|(distance, known)| *distance <= 2.max(known.len() / 5))
            .min()
            .map(|(_, known)| known)
    }

    fn known_list() -> String {
        Self::ALL
            .iter()
            .map(|(api_version, kind, _)| format!("{api_version} {kind}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Every resource read from the inputs, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSet {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub service_accounts: Vec<ServiceAccount>,
    pub kubernetes_network_policies: Vec<KubernetesNetworkPolicy>,
    pub network_policies: Vec<NetworkPolicy>,
    pub global_network_policies: Vec<GlobalNetworkPolicy>,
    pub tiers: Vec<Tier>,
    pub network_sets: Vec<NetworkSet>,
    pub global_network_sets: Vec<GlobalNetworkSet>,
    pub ip_pools: Vec<IpPool>,
    pub nodes: Vec<Node>,
    pub workload_endpoints: Vec<WorkloadEndpoint>,
    pub felix_configurations: Vec<FelixConfiguration>,
    pub egress_gateway_policies: Vec<EgressGatewayPolicy>,
    /// Staged policies: never enforced; `sluice-policy` builds the "what if" from them.
    pub staged_network_policies: Vec<StagedNetworkPolicy>,
    pub staged_global_network_policies: Vec<StagedGlobalNetworkPolicy>,
    pub staged_kubernetes_network_policies: Vec<StagedKubernetesNetworkPolicy>,
    /// Calico objects stored and listed but not enforced.
    pub kept: Vec<KeptResource>,
    /// What the inputs do that is allowed but worth saying (kinds and fields not enforced).
    pub warnings: Vec<Diagnostic>,
}

impl ResourceSet {
    pub fn len(&self) -> usize {
        self.namespaces.len()
            + self.pods.len()
            + self.service_accounts.len()
            + self.kubernetes_network_policies.len()
            + self.network_policies.len()
            + self.global_network_policies.len()
            + self.tiers.len()
            + self.network_sets.len()
            + self.global_network_sets.len()
            + self.ip_pools.len()
            + self.nodes.len()
            + self.workload_endpoints.len()
            + self.felix_configurations.len()
            + self.egress_gateway_policies.len()
            + self.staged_network_policies.len()
            + self.staged_global_network_policies.len()
            + self.staged_kubernetes_network_policies.len()
            + self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads inputs one by one, then checks what spans them (duplicates, references).
#[derive(Debug, Default)]
pub struct Loader {
    set: ResourceSet,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    seen: BTreeMap<(Kind, String, String), Origin>,
    tier_references: Vec<(String, Diagnostic)>,
    /// Positions of the fields that checks across objects report (pool CIDRs, pod addresses),
    /// by kind, namespace and name.
    located_fields: BTreeMap<(Kind, String, String), BTreeMap<String, Position>>,
    known_tiers: Vec<String>,
}

/// Loads files and directories (recursively, `.yaml`, `.yml` and `.json` files in name order).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<ResourceSet, LoadErrors> {
    let mut loader = Loader::default();
    for path in paths {
        loader.add_path(path.as_ref());
    }
    loader.finish()
}

/// Loads one text; `name` is used in error messages.
pub fn load_str(name: &str, text: &str) -> Result<ResourceSet, LoadErrors> {
    let mut loader = Loader::default();
    loader.add_str(name, text);
    loader.finish()
}

impl Loader {
    /// Tiers that exist outside the inputs (for example in the datastore), so that policies
    /// may name them.
    pub fn known_tiers(&mut self, names: impl IntoIterator<Item = String>) {
        self.known_tiers.extend(names);
    }

    pub fn add_path(&mut self, path: &Path) {
        let display = path.display().to_string();
        if path.is_dir() {
            match collect_manifest_files(path) {
                Ok(files) => {
                    for file in files {
                        self.add_path(&file);
                    }
                }
                Err(error) => self.file_error(&display, format!("cannot read directory: {error}")),
            }
            return;
        }
        // Read from disk, a document at a time: neither the text nor the documents are held.
        match for_each_document_in_file(path, |document| self.add_document(&display, &document)) {
            Ok(()) => {}
            Err(FileError::Read(error)) => self.file_error(&display, format!("cannot read file: {error}")),
            Err(FileError::Syntax(error)) => self.syntax_error(&display, error),
        }
    }

    pub fn add_str(&mut self, file: &str, text: &str) {
        // One document at a time: memory holds the resources, not every document's tree.
        match for_each_document(text, |document| self.add_document(file, &document)) {
            Ok(()) => {}
            Err(error) => self.syntax_error(file, error),
        }
    }

    fn syntax_error(&mut self, file: &str, error: SyntaxError) {
        self.errors.push(Diagnostic {
            file: file.to_string(),
            line: error.position.line,
            column: error.position.column,
            field: String::new(),
            message: format!("YAML syntax error: {}", error.message),
        });
    }

    fn file_error(&mut self, file: &str, message: String) {
        self.errors.push(Diagnostic {
            file: file.to_string(),
            line: 0,
            column: 0,
            field: String::new(),
            message,
        });
    }

    fn add_document(&mut self, file: &str, document: &Document) {
        let mut report = Report::default();
        let Some(object) = document.value.as_object() else {
            report.error("", "expected an object with apiVersion, kind and metadata");
            self.record(file, document, report);
            return;
        };
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        // kubectl writes `v1 List`; calicoctl writes typed lists such as
        // `projectcalico.org/v3 NetworkPolicyList`.
        let is_list = kind_name == "List"
            || kind_name
                .strip_suffix("List")
                .is_some_and(|base| api_version == "v1" || Kind::lookup(api_version, base).is_some());
        if is_list {
            match object.get("items").and_then(Value::as_array) {
                Some(items) => {
                    for (index, item) in items.iter().enumerate() {
                        let prefix = format!("items[{index}]");
                        let sub = document.sub_document(&prefix, item.clone());
                        self.add_document(file, &sub);
                    }
                }
                None => report.error("items", "a List needs an `items` array"),
            }
            self.record(file, document, report);
            return;
        }
        if api_version.is_empty() {
            report.error(
                "apiVersion",
                format!(
                    "missing apiVersion (a string); Sluice reads: {}",
                    Kind::known_list()
                ),
            );
        }
        if kind_name.is_empty() {
            report.error(
                "kind",
                format!("missing kind (a string); Sluice reads: {}", Kind::known_list()),
            );
        }
        let Some(kind) = Kind::lookup(api_version, kind_name) else {
            let versions_of_kind: Vec<&str> = Kind::ALL
                .iter()
                .filter(|entry| entry.1 == kind_name)
                .map(|entry| entry.0)
                .collect();
            if api_version.is_empty() || kind_name.is_empty() {
                // Already reported as missing.
            } else if !versions_of_kind.is_empty() {
                // The kind is right, so the apiVersion is what is wrong.
                report.error(
                    "apiVersion",
                    format!(
                        "unknown apiVersion `{api_version}` for kind {kind_name}; expected {}",
                        versions_of_kind.join(" or ")
                    ),
                );
            } else if let Some(suggestion) = Kind::closest(api_version, kind_name) {
                report.error(
                    "kind",
                    format!(
                        "unknown kind `{kind_name}` in apiVersion `{api_version}`; did you mean `{suggestion}`?"
                    ),
                );
            } else if api_version == "crd.projectcalico.org/v1" {
                report.error(
                    "apiVersion",
                    "`crd.projectcalico.org/v1` is how Calico stores its resources inside Kubernetes; write them as `projectcalico.org/v3` (calicoctl and kubectl with the Calico API server print that form)",
                );
            } else {
                report.error(
                    "kind",
                    format!(
                        "unknown kind `{kind_name}` in apiVersion `{api_version}`; Sluice reads: {}",
                        Kind::known_list()
                    ),
                );
            }
            self.record(file, document, report);
            return;
        };
        let mut body = document.value.clone();
        if let Some(map) = body.as_object_mut() {
            map.remove("apiVersion");
            map.remove("kind");
        }
        let origin = Origin {
            file: file.to_string(),
            line: document.start.line,
            column: document.start.column,
        };
        match crate::resource::deserialize(kind, body) {
            Ok(resource) => self.add_resource(resource, origin, document, &mut report),
            Err(error) => {
                let path = error.path().to_string();
                let message = error.inner().to_string();
                // serde names the unknown field in the message; point at its key.
                let path = match unknown_field_name(&message) {
                    Some(field) if path == "." || path.is_empty() => format!("{field}#key"),
                    Some(field) if path == field || path.ends_with(&format!(".{field}")) => {
                        format!("{path}#key")
                    }
                    Some(field) => format!("{path}.{field}#key"),
                    None => path,
                };
                report.error(path.trim_start_matches('.'), message);
            }
        }
        self.record(file, document, report);
    }

    /// Checks a resource's metadata, that it is not defined twice and the kind's own rules,
    /// notes what spans objects (tier references, located fields), and adds it to the set.
    fn add_resource(
        &mut self,
        mut value: Resource,
        origin: Origin,
        document: &Document,
        report: &mut Report,
    ) {
        let kind = value.kind();
        let metadata = value.metadata_mut();
        metadata.origin = origin.clone();
        validate::metadata(kind, metadata, report);
        let namespace = if kind.is_namespaced() {
            metadata.namespace().to_string()
        } else {
            String::new()
        };
        let key = (kind, namespace.clone(), metadata.name.clone());
        if let Some(first) = self.seen.get(&key) {
            report.error(
                "metadata.name",
                format!(
                    "{kind} {}{} is defined twice; first at {first}",
                    if namespace.is_empty() {
                        String::new()
                    } else {
                        format!("{namespace}/")
                    },
                    key.2
                ),
            );
            return;
        }
        let mut fields = vec!["spec.cidr".to_string(), "status.podIP".to_string()];
        let pod_ip_count = document.value["status"]["podIPs"].as_array().map_or(0, Vec::len);
        fields.extend((0..pod_ip_count).map(|index| format!("status.podIPs[{index}].ip")));
        if matches!(kind, Kind::IpPool | Kind::Pod) {
            let positions = fields
                .into_iter()
                .map(|field| {
                    let position = document.position_of(&field);
                    (field, position)
                })
                .collect();
            self.located_fields.insert(key.clone(), positions);
        }
        // Calico refuses a pool CIDR with host bits (`validateIPPoolSpec`); the parsed value is
        // masked, so look at the text.
        if kind == Kind::IpPool
            && let Some(text) = document.value["spec"]["cidr"].as_str()
            && let Ok(network) = text.parse::<ipnet::IpNet>()
            && network != network.trunc()
        {
            report.error(
                "spec.cidr",
                format!(
                    "IP pool CIDR is not strictly masked: `{text}` has address bits set past the prefix; write {}",
                    network.trunc()
                ),
            );
        }
        // Calico's `net` validation refuses host bits; the parsed value is masked, so look at
        // the text.
        if kind == Kind::EgressGatewayPolicy
            && let Some(rules) = document.value["spec"]["rules"].as_array()
        {
            for (index, rule) in rules.iter().enumerate() {
                if let Some(text) = rule["destination"]["cidr"].as_str()
                    && let Ok(network) = text.parse::<ipnet::IpNet>()
                    && network != network.trunc()
                {
                    report.error(
                        format!("spec.rules[{index}].destination.cidr"),
                        format!(
                            "destination CIDR is not strictly masked: `{text}` has address bits set past the prefix; write {}",
                            network.trunc()
                        ),
                    );
                }
            }
        }
        self.seen.insert(key, origin.clone());
        if let Some(tier) = value.tier_reference().filter(|tier| !tier.is_empty()) {
            let position = document.position_of("spec.tier");
            self.tier_references.push((
                tier.to_string(),
                Diagnostic {
                    file: origin.file.clone(),
                    line: position.line,
                    column: position.column,
                    field: "spec.tier".to_string(),
                    message: format!(
                        "tier `{tier}` does not exist; define a projectcalico.org/v3 Tier named `{tier}` or use the `default` tier"
                    ),
                },
            ));
        }
        validate::resource(&value, report);
        let warnings = match &value {
            Resource::FelixConfiguration(configuration) => configuration.warnings(),
            Resource::Namespace(namespace) => egress_annotation_warnings(&namespace.metadata),
            Resource::Pod(pod) => egress_annotation_warnings(&pod.metadata),
            Resource::NetworkPolicy(policy) => validate::l7_warnings(&policy.spec),
            Resource::GlobalNetworkPolicy(policy) => validate::l7_warnings(&policy.spec),
            Resource::StagedNetworkPolicy(policy) => validate::l7_warnings(&policy.spec.policy_spec()),
            Resource::StagedGlobalNetworkPolicy(policy) => validate::l7_warnings(&policy.spec.policy_spec()),
            Resource::Kept(kept) => vec![(
                String::new(),
                format!(
                    "{} {}{} is stored but not enforced: {}",
                    kept.kind,
                    if kept.kind.is_namespaced() {
                        format!("{}/", kept.metadata.namespace())
                    } else {
                        String::new()
                    },
                    kept.metadata.name,
                    crate::kept::not_enforced_reason(kept.kind)
                ),
            )],
            _ => Vec::new(),
        };
        let warnings = locate(&origin.file, document, warnings);
        self.warnings.extend(warnings);
        self.set.push(value);
    }

    fn record(&mut self, file: &str, document: &Document, report: Report) {
        let errors = locate(file, document, report.errors);
        self.errors.extend(errors);
    }

    /// Checks references between objects and returns the set, or every error found.
    pub fn finish(mut self) -> Result<ResourceSet, LoadErrors> {
        let tiers: std::collections::BTreeSet<&str> = self
            .set
            .tiers
            .iter()
            .map(|tier| tier.metadata.name.as_str())
            .chain(self.known_tiers.iter().map(String::as_str))
            .chain([DEFAULT_TIER])
            .collect();
        for (tier, diagnostic) in &self.tier_references {
            if !tiers.contains(tier.as_str()) {
                self.errors.push(diagnostic.clone());
            }
        }
        let located_fields = &self.located_fields;
        let locate = |kind: Kind, metadata: &ObjectMeta, field: &str| {
            let namespace = if kind.is_namespaced() {
                metadata.namespace().to_string()
            } else {
                String::new()
            };
            located_fields
                .get(&(kind, namespace, metadata.name.clone()))
                .and_then(|fields| fields.get(field).copied())
        };
        self.errors.extend(validate::cross_object(&self.set, &locate));
        if self.errors.is_empty() {
            self.set.warnings = self.warnings;
            Ok(self.set)
        } else {
            self.errors.sort_by(|left, right| {
                (&left.file, left.line, left.column).cmp(&(&right.file, right.line, right.column))
            });
            Err(LoadErrors(self.errors))
        }
    }
}

/// Egress annotations that are allowed but have no effect.
fn egress_annotation_warnings(metadata: &ObjectMeta) -> Vec<(String, String)> {
    crate::egress::EgressAnnotations::read(metadata)
        .map(|annotations| annotations.unused())
        .unwrap_or_default()
}

/// Diagnostics at the positions of their field paths (the document's start for an empty path).
fn locate(file: &str, document: &Document, messages: Vec<(String, String)>) -> Vec<Diagnostic> {
    messages
        .into_iter()
        .map(|(path, message)| {
            let position: Position = if path.is_empty() {
                document.start
            } else {
                document.position_of(&path)
            };
            Diagnostic {
                file: file.to_string(),
                line: position.line,
                column: position.column,
                field: path.trim_end_matches("#key").to_string(),
                message,
            }
        })
        .collect()
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn collect_manifest_files(directory: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(directory)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            files.extend(collect_manifest_files(&entry)?);
        } else if matches!(
            entry.extension().and_then(|extension| extension.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Access to the metadata every kind has.
pub trait HasMetadata {
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! has_metadata {
    ($($kind:ty),*) => {$(
        impl HasMetadata for $kind {
            fn metadata(&self) -> &ObjectMeta { &self.metadata }
            fn metadata_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata }
        }
    )*};
}
has_metadata!(
    Namespace,
    Pod,
    ServiceAccount,
    KubernetesNetworkPolicy,
    Tier,
    NetworkSet,
    GlobalNetworkSet,
    IpPool,
    Node,
    WorkloadEndpoint,
    NetworkPolicy,
    GlobalNetworkPolicy,
    FelixConfiguration,
    EgressGatewayPolicy,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    KeptResource
);
