//! `sluice get`: stored resources as a table, YAML or JSON, the way kubectl and calicoctl show
//! them.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::Value;
use sluice_api::{Kind, Resource};

use crate::datastore::{DatastoreArguments, read_all};
use crate::label_selector::LabelSelector;
use crate::output::{Failure, Output, write_table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    /// Aligned columns.
    Table,
    /// Aligned columns, more of them.
    Wide,
    /// The manifests (a `List` unless one object is named).
    Yaml,
    /// The manifests as one JSON document.
    Json,
    /// `kind.group/name` a line, as kubectl prints it.
    Name,
}

#[derive(Debug, Args)]
pub struct GetArguments {
    /// The kind: namespace, pod, node, serviceaccount, networkpolicy or netpol (Calico's, as in
    /// calicoctl), globalnetworkpolicy, tier, networkset, globalnetworkset, ippool,
    /// workloadendpoint, or networkpolicy.networking.k8s.io (also networkpolicies.networking.k8s.io
    /// and knp) for Kubernetes NetworkPolicy; stagednetworkpolicy (snp, spol),
    /// stagedglobalnetworkpolicy (sgnp), stagedkubernetesnetworkpolicy (sknp, skpol), as
    /// calicoctl names them; and nodestatus for what each node's agent last
    /// programmed; dnscache for what each node's agent learned from DNS (`--node`); egress (also
    /// egressgateway, egw) for each node's egress gateway clients and gateways (`--node`, `-n`;
    /// every namespace unless `-n`).
    kind: String,
    /// One object by name.
    name: Option<String>,
    /// The namespace (default: `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only objects whose labels match this Kubernetes label selector, e.g.
    /// `app=web,tier!=db,env in (prod,staging),!legacy`.
    #[arg(short = 'l', long = "selector")]
    selector: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: GetFormat,
    /// dnscache, egress: only this node's (also given as the NAME).
    #[arg(long)]
    node: Option<String>,
    #[command(flatten)]
    datastore: DatastoreArguments,
}

/// `get egress`: the egress gateway routing the agents publish (not a stored kind).
fn is_egress(kind: &str) -> bool {
    matches!(
        kind.to_lowercase().as_str(),
        "egress" | "egresses" | "egressgateway" | "egressgateways" | "egw"
    )
}

/// Kind names as kubectl and calicoctl accept them: singular, plural, short.
pub fn parse_kind(text: &str) -> Result<Kind, String> {
    let lowered = text.to_lowercase();
    let kind = match lowered.as_str() {
        "namespace" | "namespaces" | "ns" => Kind::Namespace,
        "pod" | "pods" | "po" => Kind::Pod,
        "node" | "nodes" | "no" => Kind::Node,
        "serviceaccount" | "serviceaccounts" | "sa" => Kind::ServiceAccount,
        "networkpolicy"
        | "networkpolicies"
        | "netpol"
        | "np"
        | "networkpolicy.projectcalico.org"
        | "networkpolicies.projectcalico.org" => Kind::NetworkPolicy,
        "knp"
        | "networkpolicy.networking.k8s.io"
        | "networkpolicies.networking.k8s.io"
        | "kubernetesnetworkpolicy" => Kind::KubernetesNetworkPolicy,
        "globalnetworkpolicy" | "globalnetworkpolicies" | "gnp" => Kind::GlobalNetworkPolicy,
        "tier" | "tiers" => Kind::Tier,
        "networkset" | "networksets" | "netset" => Kind::NetworkSet,
        "globalnetworkset" | "globalnetworksets" | "gns" => Kind::GlobalNetworkSet,
        "ippool" | "ippools" | "pool" | "pools" => Kind::IpPool,
        "workloadendpoint" | "workloadendpoints" | "wep" | "weps" => Kind::WorkloadEndpoint,
        "felixconfig" | "felixconfigs" => Kind::FelixConfiguration,
        // calicoctl's names and short names for the staged kinds.
        "stagednetworkpolicy"
        | "stagednetworkpolicies"
        | "stagedpolicy"
        | "stagedpolicies"
        | "snp"
        | "spol"
        | "spols" => Kind::StagedNetworkPolicy,
        "stagedglobalnetworkpolicy" | "stagedglobalnetworkpolicies" | "sgnp" | "sgnps" => {
            Kind::StagedGlobalNetworkPolicy
        }
        "stagedkubernetesnetworkpolicy"
        | "stagedkubernetesnetworkpolicies"
        | "stagedkubernetespolicy"
        | "stagedkubernetespolicies"
        | "sknp"
        | "skpol"
        | "skpols" => Kind::StagedKubernetesNetworkPolicy,
        // Calico's other kinds (stored, not enforced) by their name, singular or plural.
        other => {
            let singular = other.strip_suffix(".projectcalico.org").unwrap_or(other);
            let found = Kind::ALL.iter().find(|(api_version, name, _)| {
                let name = name.to_lowercase();
                *api_version == "projectcalico.org/v3"
                    && (singular == name
                        || singular.strip_suffix('s') == Some(name.as_str())
                        || singular.strip_suffix("es") == Some(name.as_str())
                        || singular
                            .strip_suffix("ies")
                            .is_some_and(|stem| format!("{stem}y") == name))
            });
            match found {
                Some((_, _, kind)) => *kind,
                None => {
                    return Err(format!(
                        "unknown kind `{text}`; use one of: namespace, pod, node, serviceaccount, networkpolicy, knp (Kubernetes NetworkPolicy), globalnetworkpolicy, tier, networkset, globalnetworkset, ippool, workloadendpoint, snp, sgnp, sknp (staged policies), or another projectcalico.org/v3 kind such as felixconfiguration or bgppeer"
                    ));
                }
            }
        }
    };
    Ok(kind)
}

pub fn run(arguments: &GetArguments, out: &mut Output) -> Result<ExitCode, Failure> {
    let selector = LabelSelector::parse(arguments.selector.as_deref().unwrap_or_default())?;
    if matches!(
        arguments.kind.to_lowercase().as_str(),
        "nodestatus" | "nodestatuses"
    ) {
        if arguments.selector.is_some() {
            return Err("nodestatus has no labels, so -l cannot select among them"
                .to_string()
                .into());
        }
        return node_status(arguments, out);
    }
    if matches!(arguments.kind.to_lowercase().as_str(), "dnscache" | "dnscaches") {
        if arguments.selector.is_some() {
            return Err("dnscache has no labels, so -l cannot select among them"
                .to_string()
                .into());
        }
        let store = arguments.datastore.open()?;
        let node = arguments.node.as_deref().or(arguments.name.as_deref());
        return crate::dnscache::run(store.as_ref(), node, arguments.output, out);
    }
    if is_egress(&arguments.kind) {
        if arguments.selector.is_some() {
            return Err("egress records have no labels, so -l cannot select among them"
                .to_string()
                .into());
        }
        let store = arguments.datastore.open()?;
        let filter = crate::egress::Filter {
            node: arguments.node.clone().or_else(|| arguments.name.clone()),
            namespace: arguments.namespace.clone().filter(|_| !arguments.all_namespaces),
        };
        return crate::egress::run(store.as_ref(), &filter, arguments.output, out);
    }
    if arguments.node.is_some() {
        return Err("--node selects the node of `get dnscache` and `get egress`"
            .to_string()
            .into());
    }
    let kind = parse_kind(&arguments.kind)?;
    let store = arguments.datastore.open()?;
    let (stored, _) = read_all(store.as_ref())?;
    let namespace_filter = if arguments.all_namespaces || !kind.is_namespaced() {
        None
    } else {
        Some(
            arguments
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
        )
    };
    let selected: Vec<&Resource> = stored
        .values()
        .filter(|resource| resource.kind() == kind)
        .filter(|resource| {
            namespace_filter
                .as_deref()
                .is_none_or(|namespace| resource.namespace() == Some(namespace))
        })
        .filter(|resource| {
            arguments
                .name
                .as_ref()
                .is_none_or(|name| &resource.metadata().name == name)
        })
        .filter(|resource| selector.matches(&resource.metadata().labels))
        .collect();
    if let Some(name) = &arguments.name
        && selected.is_empty()
    {
        let place = namespace_filter
            .map(|namespace| format!(" in namespace {namespace}"))
            .unwrap_or_default();
        return Err(format!("{} {name} not found{place}", kind.name().to_lowercase()).into());
    }
    // kubectl: an empty list is not an error; the note goes to stderr so pipes see nothing.
    // JSON and YAML print the empty List instead, which is the answer in that format.
    if selected.is_empty() && !matches!(arguments.output, GetFormat::Json | GetFormat::Yaml) {
        match &namespace_filter {
            Some(namespace) => eprintln!("No resources found in {namespace} namespace."),
            None => eprintln!("No resources found"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    match arguments.output {
        GetFormat::Yaml | GetFormat::Json => {
            let manifests: Vec<Value> = selected.iter().map(|resource| with_version(resource)).collect();
            let value = match (arguments.name.is_some(), manifests.len()) {
                (true, 1) => manifests.into_iter().next().unwrap_or(Value::Null),
                _ => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": manifests}),
            };
            write_document(out, &value, arguments.output)?;
        }
        GetFormat::Name => {
            for resource in &selected {
                writeln!(out, "{}/{}", qualified_kind(kind), resource.metadata().name)?;
            }
        }
        GetFormat::Table | GetFormat::Wide => write_resource_table(
            out,
            kind,
            &selected,
            arguments.output == GetFormat::Wide,
            namespace_filter.is_none(),
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The kind as `-o name` prints it: `networkpolicy.projectcalico.org`,
/// `networkpolicy.networking.k8s.io`, and `pod` for the core group, as kubectl does.
pub fn qualified_kind(kind: Kind) -> String {
    let name = kind.name().to_lowercase();
    match kind.api_version().split_once('/') {
        Some((group, _)) => format!("{name}.{group}"),
        None => name,
    }
}

pub(crate) fn write_document(out: &mut Output, value: &Value, format: GetFormat) -> Result<(), Failure> {
    if format == GetFormat::Json {
        let text = serde_json::to_string_pretty(value).map_err(|error| error.to_string())?;
        writeln!(out, "{text}")
    } else {
        write!(out, "{}", sluice_api::document::to_yaml(value))
    }
}

fn with_version(resource: &Resource) -> Value {
    let mut manifest = resource.to_manifest();
    if let Some(version) = &resource.metadata().resource_version {
        manifest["metadata"]["resourceVersion"] = Value::from(version.clone());
    }
    manifest
}

fn write_resource_table(
    out: &mut Output,
    kind: Kind,
    resources: &[&Resource],
    wide: bool,
    show_namespace: bool,
) -> Result<(), Failure> {
    let show_namespace = show_namespace && kind.is_namespaced();
    let mut header = Vec::new();
    if show_namespace {
        header.push("NAMESPACE".to_string());
    }
    header.push("NAME".to_string());
    header.extend(columns(kind, None, wide).into_iter().map(|(title, _)| title));
    header.push("RESOURCE VERSION".to_string());
    let mut rows = vec![header];
    for resource in resources {
        let mut row = Vec::new();
        if show_namespace {
            row.push(resource.namespace().unwrap_or_default().to_string());
        }
        row.push(resource.metadata().name.clone());
        row.extend(
            columns(kind, Some(resource), wide)
                .into_iter()
                .map(|(_, value)| value),
        );
        row.push(resource.metadata().resource_version.clone().unwrap_or_default());
        rows.push(row);
    }
    write_table(out, &rows)
}

/// Kind-specific columns: (title, value); values empty when `resource` is `None`.
fn columns(kind: Kind, resource: Option<&Resource>, wide: bool) -> Vec<(String, String)> {
    let mut columns: Vec<(String, String)> = Vec::new();
    let mut push = |title: &str, value: String| columns.push((title.to_string(), value));
    match (kind, resource) {
        (Kind::IpPool, pool) => {
            let spec = pool.and_then(|resource| match resource {
                Resource::IpPool(pool) => Some(&pool.spec),
                _ => None,
            });
            push("CIDR", spec.map(|spec| spec.cidr.to_string()).unwrap_or_default());
            push(
                "NAT",
                spec.map(|spec| spec.nat_outgoing.to_string()).unwrap_or_default(),
            );
            push(
                "DISABLED",
                spec.map(|spec| spec.disabled.to_string()).unwrap_or_default(),
            );
            if wide {
                push(
                    "BLOCK SIZE",
                    spec.map(|spec| spec.effective_block_size().to_string())
                        .unwrap_or_default(),
                );
                push(
                    "NODE SELECTOR",
                    spec.map(|spec| spec.node_selector.selector().to_string())
                        .unwrap_or_default(),
                );
                push(
                    "NAMESPACE SELECTOR",
                    spec.map(|spec| spec.namespace_selector.selector().to_string())
                        .unwrap_or_default(),
                );
            }
        }
        (Kind::NetworkPolicy | Kind::GlobalNetworkPolicy, policy) => {
            let spec = policy.and_then(|resource| match resource {
                Resource::NetworkPolicy(policy) => Some(&policy.spec),
                Resource::GlobalNetworkPolicy(policy) => Some(&policy.spec),
                _ => None,
            });
            push(
                "TIER",
                spec.map(|spec| spec.tier().to_string()).unwrap_or_default(),
            );
            push(
                "ORDER",
                spec.map(|spec| {
                    spec.order
                        .map(|order| order.to_string())
                        .unwrap_or_else(|| "-".into())
                })
                .unwrap_or_default(),
            );
            if wide {
                push(
                    "SELECTOR",
                    spec.map(|spec| spec.selector.selector().to_string())
                        .unwrap_or_default(),
                );
                push(
                    "TYPES",
                    spec.map(|spec| {
                        spec.effective_types()
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
                );
            }
        }
        (Kind::StagedNetworkPolicy | Kind::StagedGlobalNetworkPolicy, policy) => {
            let spec = policy.and_then(|resource| match resource {
                Resource::StagedNetworkPolicy(policy) => Some(&policy.spec),
                Resource::StagedGlobalNetworkPolicy(policy) => Some(&policy.spec),
                _ => None,
            });
            push(
                "ACTION",
                spec.map(|spec| spec.action().to_string()).unwrap_or_default(),
            );
            push(
                "TIER",
                spec.map(|spec| spec.tier().to_string()).unwrap_or_default(),
            );
            push(
                "ORDER",
                spec.map(|spec| {
                    spec.order
                        .map(|order| order.to_string())
                        .unwrap_or_else(|| "-".into())
                })
                .unwrap_or_default(),
            );
            if wide {
                push(
                    "SELECTOR",
                    spec.map(|spec| spec.selector.selector().to_string())
                        .unwrap_or_default(),
                );
            }
        }
        (Kind::StagedKubernetesNetworkPolicy, policy) => {
            let spec = policy.and_then(|resource| match resource {
                Resource::StagedKubernetesNetworkPolicy(policy) => Some(&policy.spec),
                _ => None,
            });
            push(
                "ACTION",
                spec.map(|spec| spec.action().to_string()).unwrap_or_default(),
            );
            push(
                "POD SELECTOR",
                spec.map(|spec| {
                    spec.pod_selector
                        .to_selector()
                        .map(|selector| selector.to_string())
                        .unwrap_or_default()
                })
                .unwrap_or_default(),
            );
        }
        (Kind::EgressGatewayPolicy, policy) => {
            let rules = policy.and_then(|resource| match resource {
                Resource::EgressGatewayPolicy(policy) => Some(&policy.spec.rules),
                _ => None,
            });
            // Per rule: destination -> the gateway selector, or `normal` (no gateway).
            push(
                "RULES",
                rules
                    .map(|rules| {
                        rules
                            .iter()
                            .map(|rule| {
                                let via = rule.gateway.as_ref().map_or_else(
                                    || "normal".to_string(),
                                    |gateway| gateway.selector.selector().to_string(),
                                );
                                format!("{}->{via}", rule.destination_cidr())
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            );
        }
        (Kind::Pod, pod) => {
            let pod = pod.and_then(|resource| match resource {
                Resource::Pod(pod) => Some(pod),
                _ => None,
            });
            push(
                "IP",
                pod.map(|pod| {
                    pod.addresses()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            );
            if wide {
                push(
                    "NODE",
                    pod.and_then(|pod| pod.spec.node_name.clone()).unwrap_or_default(),
                );
            }
        }
        (Kind::WorkloadEndpoint, endpoint) => {
            let spec = endpoint.and_then(|resource| match resource {
                Resource::WorkloadEndpoint(endpoint) => Some(&endpoint.spec),
                _ => None,
            });
            push("POD", spec.map(|spec| spec.pod.clone()).unwrap_or_default());
            push("NODE", spec.map(|spec| spec.node.clone()).unwrap_or_default());
            push(
                "NETWORKS",
                spec.map(|spec| {
                    spec.ip_networks
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            );
            push(
                "INTERFACE",
                spec.map(|spec| spec.interface_name.clone()).unwrap_or_default(),
            );
        }
        _ => {}
    }
    columns
}

/// What each node's agent last programmed, and why it could not, if it could not.
fn node_status(arguments: &GetArguments, out: &mut Output) -> Result<ExitCode, Failure> {
    let store = arguments.datastore.open()?;
    let (values, _) = store
        .list(sluice_agent::STATUS_PREFIX)
        .map_err(|error| error.to_string())?;
    let statuses: Vec<sluice_agent::NodeStatus> = values
        .iter()
        .filter_map(|value| serde_json::from_slice(&value.value).ok())
        .filter(|status: &sluice_agent::NodeStatus| {
            arguments.name.as_ref().is_none_or(|name| &status.node == name)
        })
        .collect();
    if let Some(name) = &arguments.name
        && statuses.is_empty()
    {
        return Err(format!("nodestatus {name} not found").into());
    }
    match arguments.output {
        GetFormat::Json | GetFormat::Yaml => {
            let value = serde_json::to_value(&statuses).map_err(|error| error.to_string())?;
            write_document(out, &value, arguments.output)?;
        }
        _ if statuses.is_empty() => eprintln!("No resources found"),
        GetFormat::Name => {
            for status in &statuses {
                writeln!(out, "nodestatus/{}", status.node)?;
            }
        }
        GetFormat::Table | GetFormat::Wide => {
            // IN SYNC is `unknown (stale)` for a record older than STALE_HEARTBEATS heartbeats
            // (a dead agent), `unknown (stopped)` after its agent stopped.
            let now = std::time::SystemTime::now();
            let mut rows = vec![
                [
                    "NODE",
                    "IN SYNC",
                    "AGE",
                    "PROGRAMMED",
                    "SEEN",
                    "ENDPOINTS",
                    "RULES",
                    "ELEMENTS",
                    "ROUTES",
                    "ERROR",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for status in statuses {
                let state = status.sync_state(now);
                let age = sluice_agent::format_age(status.age(now));
                let error = [
                    status.error,
                    status.warning.map(|warning| format!("warning: {warning}")),
                    status.route_error.map(|error| format!("routes: {error}")),
                ]
                .into_iter()
                .flatten()
                .chain(
                    status
                        .unprogrammed_endpoints
                        .iter()
                        .map(|endpoint| format!("not programmed: {endpoint}")),
                )
                .chain(
                    status
                        .left_out_objects
                        .iter()
                        .map(|object| format!("left out: {object}")),
                )
                .collect::<Vec<_>>()
                .join("; ");
                rows.push(vec![
                    status.node,
                    state.to_string(),
                    age,
                    status.programmed_revision.to_string(),
                    status.seen_revision.to_string(),
                    status.local_endpoints.to_string(),
                    status.rules.to_string(),
                    status.set_elements.to_string(),
                    status.routes.to_string(),
                    error,
                ]);
            }
            write_table(out, &rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
