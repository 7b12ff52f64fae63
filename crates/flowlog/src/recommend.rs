//! Recommendations: staged policies that would allow exactly the egress a namespace's pods were
//! allowed in the flow log, plus a staged default deny (what `sluice recommend` prints), so a
//! user can stage them, watch `pending_policies` say nothing new would be denied, then enforce.
//!
//! Each allowed egress record of the namespace (reporter `src`) becomes part of a rule: pods of
//! the same namespace by their common labels, pods of another namespace by that namespace's name
//! and their common labels, network sets by their labels (or their nets when they have none),
//! resolved domains by name, and outside addresses as the smallest set of CIDRs covering exactly
//! the addresses seen. One rule per destination and protocol, with the ports seen. Denied flows
//! are not recommended: what enforced policy denies stays denied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};
use sluice_policy::{Entity, EntityKind};

use crate::naming::{EndpointType, NOT_INCLUDED};
use crate::record::{FlowAction, FlowRecord, Reporter};

type Labels = BTreeMap<String, String>;

/// The name of the staged policy that allows what was seen, and of the staged default deny.
pub const ALLOW_NAME: &str = "recommended-egress";
pub const DENY_NAME: &str = "recommended-default-deny";

/// Where a seen flow went, as a rule's destination selects it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    /// Pods of a namespace (the policy's own when `None`) with these common labels.
    Pods {
        namespace: Option<String>,
        labels: BTreeMap<String, String>,
    },
    /// A network set by its labels (namespaced, or global when `namespace` is `None`).
    NetworkSetLabels {
        namespace: Option<String>,
        labels: BTreeMap<String, String>,
    },
    /// A network set without labels, by its networks.
    Networks(Vec<IpNet>),
    /// A domain the pod resolved.
    Domain(String),
    /// Outside addresses (gathered per protocol and ports, then aggregated).
    Addresses,
}

/// The recommendation for `namespace` from flow records and the cluster's entities: the staged
/// allow policy (absent when nothing was seen) and the staged default deny.
pub fn recommend(namespace: &str, records: &[FlowRecord], entities: &[Entity]) -> Vec<Value> {
    // Per destination pod: its own labels (Calico's implicit and profile labels left out).
    let pod_labels = |pod_namespace: &str, name: &str| -> Option<BTreeMap<String, String>> {
        entities
            .iter()
            .find(|entity| {
                entity.kind == EntityKind::Endpoint
                    && entity.namespace.as_deref() == Some(pod_namespace)
                    && entity.name == name
            })
            .map(|entity| own_labels(&entity.labels))
    };
    // (peer without labels yet, protocol) → ports; pods are grouped first and their labels
    // intersected afterwards.
    let mut pods: BTreeMap<(String, String), (Vec<Labels>, BTreeSet<u16>)> = BTreeMap::new();
    let mut others: BTreeMap<(Peer, String), BTreeSet<u16>> = BTreeMap::new();
    let mut addresses: BTreeMap<(String, u16), BTreeSet<IpAddr>> = BTreeMap::new();
    for record in records {
        if record.source_namespace != namespace
            || record.reporter != Reporter::Src
            || record.action != FlowAction::Allow
            || record.source_type != EndpointType::Workload
        {
            continue;
        }
        let protocol = record.proto.to_ascii_uppercase();
        let with_ports = matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP");
        let port = record.dest_port.filter(|_| with_ports).unwrap_or(0);
        let destination_namespace = record.dest_namespace.clone();
        match record.dest_type {
            EndpointType::Workload => {
                let entry = pods
                    .entry((destination_namespace.clone(), protocol.clone()))
                    .or_default();
                if let Some(labels) = pod_labels(&destination_namespace, &record.dest_name) {
                    entry.0.push(labels);
                }
                entry.1.insert(port);
            }
            EndpointType::NetworkSet => {
                let set_namespace =
                    (destination_namespace != NOT_INCLUDED).then_some(destination_namespace.clone());
                let set = entities.iter().find(|entity| {
                    entity.kind != EntityKind::Endpoint
                        && entity.namespace == set_namespace
                        && entity.name == record.dest_name
                });
                let peer = match set {
                    Some(set) if !own_labels(&set.labels).is_empty() => Peer::NetworkSetLabels {
                        namespace: set_namespace,
                        labels: own_labels(&set.labels),
                    },
                    Some(set) => Peer::Networks(IpNet::aggregate(&set.networks)),
                    None => continue,
                };
                others.entry((peer, protocol)).or_default().insert(port);
            }
            EndpointType::Network if !record.dest_domains.is_empty() => {
                for domain in &record.dest_domains {
                    others
                        .entry((Peer::Domain(domain.clone()), protocol.clone()))
                        .or_default()
                        .insert(port);
                }
            }
            EndpointType::Network => {
                if let Some(address) = record.dest_ip {
                    addresses.entry((protocol, port)).or_default().insert(address);
                }
            }
        }
    }
    let mut rules: Vec<(Peer, String, BTreeSet<u16>, Vec<IpNet>)> = Vec::new();
    for ((destination_namespace, protocol), (label_sets, ports)) in pods {
        let labels = common_labels(&label_sets);
        let namespace = (destination_namespace != namespace).then_some(destination_namespace);
        rules.push((Peer::Pods { namespace, labels }, protocol, ports, Vec::new()));
    }
    for ((peer, protocol), ports) in others {
        rules.push((peer, protocol, ports, Vec::new()));
    }
    // Outside addresses: the same CIDRs for several ports become one rule with those ports.
    let mut by_networks: BTreeMap<(String, Vec<IpNet>), BTreeSet<u16>> = BTreeMap::new();
    for ((protocol, port), seen) in addresses {
        let networks = IpNet::aggregate(
            &seen
                .iter()
                .map(|address| IpNet::from(*address))
                .collect::<Vec<_>>(),
        );
        by_networks.entry((protocol, networks)).or_default().insert(port);
    }
    for ((protocol, networks), ports) in by_networks {
        rules.push((Peer::Addresses, protocol, ports, networks));
    }

    let mut documents = Vec::new();
    if !rules.is_empty() {
        let egress: Vec<Value> = rules
            .iter()
            .map(|(peer, protocol, ports, networks)| rule(namespace, peer, protocol, ports, networks))
            .collect();
        documents.push(json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "StagedNetworkPolicy",
            "metadata": {"name": ALLOW_NAME, "namespace": namespace},
            "spec": {
                "stagedAction": "Set",
                "tier": "default",
                "order": 100,
                "selector": "all()",
                "types": ["Egress"],
                "egress": egress,
            }
        }));
    }
    documents.push(json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "StagedNetworkPolicy",
        "metadata": {"name": DENY_NAME, "namespace": namespace},
        "spec": {
            "stagedAction": "Set",
            "tier": "default",
            "order": 2000,
            "selector": "all()",
            "types": ["Egress"],
        }
    }));
    documents
}

fn rule(namespace: &str, peer: &Peer, protocol: &str, ports: &BTreeSet<u16>, networks: &[IpNet]) -> Value {
    let mut destination = serde_json::Map::new();
    match peer {
        Peer::Pods {
            namespace: other,
            labels,
        } => {
            if let Some(other) = other {
                destination.insert(
                    "namespaceSelector".into(),
                    json!(format!("projectcalico.org/name == '{other}'")),
                );
            }
            destination.insert("selector".into(), json!(selector(labels)));
        }
        Peer::NetworkSetLabels {
            namespace: set_namespace,
            labels,
        } => {
            match set_namespace.as_deref() {
                None => {
                    destination.insert("namespaceSelector".into(), json!("global()"));
                }
                Some(other) if other != namespace => {
                    destination.insert(
                        "namespaceSelector".into(),
                        json!(format!("projectcalico.org/name == '{other}'")),
                    );
                }
                Some(_) => {}
            }
            destination.insert("selector".into(), json!(selector(labels)));
        }
        Peer::Networks(networks) => {
            destination.insert(
                "nets".into(),
                json!(networks.iter().map(ToString::to_string).collect::<Vec<_>>()),
            );
        }
        Peer::Domain(domain) => {
            destination.insert("domains".into(), json!([domain]));
        }
        Peer::Addresses => {
            destination.insert(
                "nets".into(),
                json!(networks.iter().map(ToString::to_string).collect::<Vec<_>>()),
            );
        }
    }
    let ports: Vec<u16> = ports.iter().copied().filter(|port| *port != 0).collect();
    if !ports.is_empty() {
        destination.insert("ports".into(), json!(ports));
    }
    let mut rule = serde_json::Map::new();
    rule.insert("action".into(), json!("Allow"));
    if !protocol.is_empty() {
        let protocol = match protocol {
            "ICMPV6" => "ICMPv6",
            other => other,
        };
        rule.insert("protocol".into(), json!(protocol));
    }
    rule.insert("destination".into(), Value::Object(destination));
    Value::Object(rule)
}

/// An object's own labels: Calico's implicit labels (`projectcalico.org/…`), the profile and
/// service-account copies (`pcns.`, `pcsa.`) and `pod-template-hash` (one per rollout) left out.
fn own_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(key, _)| {
            !key.starts_with("projectcalico.org/")
                && !key.starts_with("pcns.")
                && !key.starts_with("pcsa.")
                && key.as_str() != "pod-template-hash"
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// The labels every set has with the same value.
fn common_labels(sets: &[BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = sets.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(key, value)| rest.iter().all(|set| set.get(*key) == Some(*value)))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// `a == 'x' && b == 'y'`, or `all()` with no labels.
fn selector(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "all()".to_string();
    }
    labels
        .iter()
        .map(|(key, value)| format!("{key} == '{value}'"))
        .collect::<Vec<_>>()
        .join(" && ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(kind: EntityKind, namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> Entity {
        Entity {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            networks: vec!["203.0.113.0/28".parse().unwrap()],
            named_ports: Vec::new(),
            node: None,
            allowed_egress_domains: Vec::new(),
        }
    }

    fn flow(
        destination_type: &str,
        namespace: &str,
        name: &str,
        ip: Option<&str>,
        port: u16,
        protocol: &str,
    ) -> FlowRecord {
        let value = json!({
            "start_time": 90, "end_time": 100, "host": "node-1",
            "source_type": "wep", "source_namespace": "billing", "source_name": "api-1",
            "source_name_aggr": "api-1", "source_ip": null,
            "dest_type": destination_type, "dest_namespace": namespace, "dest_name": name,
            "dest_name_aggr": name, "dest_ip": ip, "dest_port": port, "dest_domains": [],
            "proto": protocol, "reporter": "src", "action": "allow",
            "policies": [], "pending_policies": [], "packets_in": 0, "packets_out": 0,
            "bytes_in": 0, "bytes_out": 0, "num_flows": 1, "num_flows_started": 1,
            "num_flows_completed": 1, "num_flows_live": 0
        });
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn recommends_rules_for_pods_sets_domains_and_addresses() {
        let entities = vec![
            entity(
                EntityKind::Endpoint,
                Some("db"),
                "postgres-0",
                &[
                    ("app", "postgres"),
                    ("statefulset.kubernetes.io/pod-name", "postgres-0"),
                    ("projectcalico.org/namespace", "db"),
                ],
            ),
            entity(
                EntityKind::Endpoint,
                Some("db"),
                "postgres-1",
                &[
                    ("app", "postgres"),
                    ("statefulset.kubernetes.io/pod-name", "postgres-1"),
                ],
            ),
            entity(
                EntityKind::Endpoint,
                Some("billing"),
                "worker",
                &[("app", "worker")],
            ),
            entity(
                EntityKind::GlobalNetworkSet,
                None,
                "partners",
                &[("role", "partner")],
            ),
        ];
        let mut records = vec![
            flow("wep", "db", "postgres-0", None, 5432, "tcp"),
            flow("wep", "db", "postgres-1", None, 5432, "tcp"),
            flow("wep", "billing", "worker", None, 8080, "tcp"),
            flow("ns", "-", "partners", None, 443, "tcp"),
            flow("net", "-", "-", Some("198.51.100.4"), 443, "tcp"),
            flow("net", "-", "-", Some("198.51.100.5"), 443, "tcp"),
            flow("net", "-", "-", Some("198.51.100.9"), 443, "tcp"),
            flow("net", "-", "-", Some("10.96.0.10"), 53, "udp"),
        ];
        let mut resolved = flow("net", "-", "-", Some("192.0.2.80"), 443, "tcp");
        resolved.dest_domains = vec!["pypi.example.org".to_string()];
        records.push(resolved);
        // Not recommended: another namespace's flow, a denied flow, an ingress report.
        let mut other = flow("net", "-", "-", Some("192.0.2.1"), 80, "tcp");
        other.source_namespace = "prod".to_string();
        let mut denied = flow("net", "-", "-", Some("192.0.2.2"), 80, "tcp");
        denied.action = FlowAction::Deny;
        let mut ingress = flow("net", "-", "-", Some("192.0.2.3"), 80, "tcp");
        ingress.reporter = Reporter::Dst;
        records.extend([other, denied, ingress]);

        let documents = recommend("billing", &records, &entities);
        assert_eq!(documents.len(), 2);
        let egress = documents[0]["spec"]["egress"].as_array().unwrap();
        let destinations: Vec<&Value> = egress.iter().map(|rule| &rule["destination"]).collect();
        assert!(egress.iter().all(|rule| rule["action"] == "Allow"));
        // Pods of another namespace by namespace name and their common labels only.
        assert!(destinations.contains(&&json!({"namespaceSelector": "projectcalico.org/name == 'db'", "selector": "app == 'postgres'", "ports": [5432]})));
        // Pods of its own namespace by labels.
        assert!(destinations.contains(&&json!({"selector": "app == 'worker'", "ports": [8080]})));
        assert!(destinations.contains(
            &&json!({"namespaceSelector": "global()", "selector": "role == 'partner'", "ports": [443]})
        ));
        assert!(destinations.contains(&&json!({"domains": ["pypi.example.org"], "ports": [443]})));
        // Addresses aggregated to exactly what was seen: .4 and .5 make a /31, .9 stays a /32.
        assert!(
            destinations.contains(&&json!({"nets": ["198.51.100.4/31", "198.51.100.9/32"], "ports": [443]}))
        );
        assert!(destinations.contains(&&json!({"nets": ["10.96.0.10/32"], "ports": [53]})));
        assert_eq!(egress.len(), 6);
        assert!(!documents[0].to_string().contains("192.0.2."));
        assert_eq!(documents[1]["metadata"]["name"], DENY_NAME);
        assert_eq!(documents[1]["spec"]["types"], json!(["Egress"]));
        assert!(documents[1]["spec"].get("egress").is_none());
    }

    #[test]
    fn nothing_seen_recommends_only_the_default_deny() {
        let documents = recommend("quiet", &[], &[]);
        assert_eq!(documents.len(), 1);
        assert_eq!(documents[0]["kind"], "StagedNetworkPolicy");
        assert_eq!(documents[0]["spec"]["stagedAction"], "Set");
    }
}
