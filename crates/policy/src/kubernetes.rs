//! Kubernetes NetworkPolicy as Calico sees it: converted to Calico rules in the default tier at
//! order 1000, exactly as `libcalico-go/lib/backend/k8s/conversion/conversion.go`
//! (`K8sNetworkPolicyToCalico`, `k8sRuleToCalico`) does.

use std::collections::BTreeMap;

use sluice_api::calico::{EntityRule, Rule};
use sluice_api::kubernetes::{LabelSelector, NetworkPolicyPeer, NetworkPolicyPort};
use sluice_api::values::{Action, Port, Protocol, SelectorText};
use sluice_selector::Selector;

use crate::entities::LABEL_ORCHESTRATOR;

/// A Kubernetes pod selector in Calico terms: `projectcalico.org/orchestrator == 'k8s'` and the
/// label selector, so that it never picks network sets.
pub fn pod_selector(selector: &LabelSelector) -> Selector {
    let orchestrator = Selector::parse(&format!("{LABEL_ORCHESTRATOR} == 'k8s'"))
        .expect("the orchestrator selector is valid");
    // Validation has already rejected selectors that do not lower.
    let labels = selector.to_selector().unwrap_or_else(|_| Selector::all());
    orchestrator.and(&labels)
}

/// A Kubernetes namespace selector: empty means all namespaces (`all()`).
fn namespace_selector(selector: &LabelSelector) -> Selector {
    selector.to_selector().unwrap_or_else(|_| Selector::all())
}

/// One Kubernetes rule (peers × ports) as Calico rules: one rule per protocol and peer, each
/// carrying all the ports of that protocol.
pub fn convert_rule(peers: &[NetworkPolicyPeer], ports: &[NetworkPolicyPort], ingress: bool) -> Vec<Rule> {
    // Ports grouped by protocol (absent means TCP, as the API server defaults it); `None`
    // ports means all ports of that protocol. No port entries at all means any protocol.
    let mut by_protocol: BTreeMap<String, (Option<Protocol>, Option<Vec<Port>>)> = BTreeMap::new();
    let allow_all_ports = ports.is_empty();
    for port in ports {
        let protocol = port.protocol.unwrap_or(Protocol::Tcp);
        let calico_port = port.port.as_ref().map(|value| match (value, port.end_port) {
            (Port::Range { low, .. }, Some(end)) => Port::Range { low: *low, high: end },
            (other, _) => other.clone(),
        });
        let entry = by_protocol
            .entry(protocol.to_string())
            .or_insert((Some(protocol), Some(Vec::new())));
        match calico_port {
            None => entry.1 = None,
            Some(calico_port) => {
                if let Some(list) = &mut entry.1 {
                    list.push(calico_port);
                }
            }
        }
    }
    let protocol_ports: Vec<(Option<Protocol>, Option<Vec<Port>>)> = if allow_all_ports {
        vec![(None, None)]
    } else {
        by_protocol.into_values().collect()
    };
    let peer_list: Vec<Option<&NetworkPolicyPeer>> = if peers.is_empty() {
        vec![None]
    } else {
        peers.iter().map(Some).collect()
    };
    let mut rules = Vec::new();
    for (protocol, ports) in &protocol_ports {
        let ports = ports.clone().map(simplify_ports).unwrap_or_default();
        for peer in &peer_list {
            let peer_entity = peer.map(peer_entity).unwrap_or_default();
            let (source, destination) = if ingress {
                (
                    peer_entity,
                    EntityRule {
                        ports: ports.clone(),
                        ..EntityRule::default()
                    },
                )
            } else {
                (
                    EntityRule::default(),
                    EntityRule {
                        ports: ports.clone(),
                        ..peer_entity
                    },
                )
            };
            rules.push(Rule {
                action: Action::Allow,
                ip_version: None,
                protocol: *protocol,
                icmp: None,
                not_protocol: None,
                not_icmp: None,
                source,
                destination,
                http: None,
                tls: None,
                metadata: None,
            });
        }
    }
    rules
}

fn peer_entity(peer: &NetworkPolicyPeer) -> EntityRule {
    if let Some(block) = &peer.ip_block {
        return EntityRule {
            nets: vec![block.cidr],
            not_nets: block.except.clone(),
            ..EntityRule::default()
        };
    }
    let selector = peer
        .pod_selector
        .as_ref()
        .map(pod_selector)
        .unwrap_or_else(|| pod_selector(&LabelSelector::default()));
    EntityRule {
        selector: SelectorText(Some(selector)),
        namespace_selector: SelectorText(peer.namespace_selector.as_ref().map(namespace_selector)),
        ..EntityRule::default()
    }
}

/// Merges numeric ports into the fewest ranges; named ports pass through
/// (`SimplifyPorts` in Calico's converter).
fn simplify_ports(ports: Vec<Port>) -> Vec<Port> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    let mut named = Vec::new();
    for port in ports {
        match port {
            Port::Range { low, high } => ranges.push((low, high)),
            Port::Named(_) => named.push(port),
        }
    }
    crate::ir::merge_port_ranges(ranges)
        .into_iter()
        .map(|(low, high)| Port::Range { low, high })
        .chain(named)
        .collect()
}
