//! The perimeter-firewall view behind `sluice ipam show --by namespace`: per namespace, the
//! source addresses its pods' traffic can have outside the cluster, per destination.
//!
//! Per pod address: if the pod is an egress gateway client (the plan `sluice-gateway` computes
//! for its node), each destination of its table leaves from its gateways' addresses (every
//! gateway its selector or policy rule picks: health is not in the datastore, so any of them
//! may carry it), is dropped (a policy that does not exist), or goes the normal way. The normal
//! way is the pool's: its NAT address or the node's with `natOutgoing`, else the pod's own
//! address in the pool's CIDR. Pure: resources and IPAM's records in, the view out; `table`
//! is its text.

mod table;

pub use table::{address_table, table};

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use sluice_api::ResourceSet;
use sluice_api::calico::IpPool;
use sluice_api::egress::EgressAnnotations;
use sluice_gateway::choice::RuleAction;
use sluice_gateway::{ClientPlan, Inputs, NodePlan, PlanError, Pod, PodId, RouteAction};
use sluice_ipam::report::AllocationRecord;
use sluice_selector::Selector;

/// One namespace's pods and where their traffic can come from outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceEgress {
    pub namespace: String,
    /// Pods with an address.
    pub pods: usize,
    pub pools: Vec<PoolUse>,
    /// By destination (longest prefix first), then source.
    pub egress: Vec<EgressSource>,
    pub pod_addresses: Vec<PodAddress>,
}

/// A pool the namespace's pods have addresses in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUse {
    /// `None`: addresses in no pool.
    pub pool: Option<String>,
    pub cidr: Option<IpNet>,
    pub nat_outgoing: bool,
    pub pods: usize,
}

/// What traffic to `destination` from some of the namespace's pods looks like outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressSource {
    pub destination: IpNet,
    #[serde(flatten)]
    pub source: Source,
    /// The source addresses seen outside, merged into the fewest CIDRs; empty when nothing
    /// leaves.
    pub addresses: Vec<IpNet>,
    /// NAT to a node's address where the node's InternalIP is not known: the nodes' names.
    pub unknown_node_addresses: Vec<String>,
    /// The pools of the pods' addresses, each with how many of these pods have one (`""`:
    /// addresses in no pool).
    pub pools: BTreeMap<String, usize>,
    /// `namespace/name`, in order.
    pub pods: Vec<String>,
}

/// How the traffic leaves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "via", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Source {
    /// A pool without `natOutgoing`: the pods' own addresses, from the pool's CIDR.
    Pool { pool: String, cidr: IpNet },
    /// An address in no pool leaves as itself.
    NoPool,
    /// The pool's `natOutgoing`: its NAT address (`sluice.io/nat-outgoing-address`), else the
    /// address of the node the pod runs on.
    NatOutgoing {
        pool: String,
        pool_nat_address: Option<IpAddr>,
    },
    /// Through egress gateways: any of these may carry it.
    Gateways {
        chosen_by: String,
        policy: Option<String>,
        policy_rule: Option<usize>,
        gateways: Vec<GatewayCandidate>,
    },
    /// Gateways chosen, but the selector picks none: unreachable, nothing leaves.
    NoGateway {
        chosen_by: String,
        policy: Option<String>,
        policy_rule: Option<usize>,
    },
    /// A policy named but missing: all egress dropped.
    Dropped { chosen_by: String, policy: String },
}

/// A gateway a client's selector or policy rule picks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayCandidate {
    /// `namespace/name`.
    pub gateway: String,
    /// Its address in the destination's family.
    pub address: IpAddr,
    pub node: String,
    /// Its pool has `natOutgoing`, so the gateway's node NATs what it forwards (the gateway
    /// runs with `--no-snat`) and the traffic leaves from that NAT address instead.
    pub nat_outgoing_pool: Option<String>,
}

/// One pod address and its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAddress {
    pub pod: String,
    pub address: IpAddr,
    pub pool: Option<String>,
    pub node: Option<String>,
    /// Only IPAM holds it: no Pod or WorkloadEndpoint records the address (a pod being set up,
    /// or a leak that `sluice ipam check` reports).
    pub only_in_ipam: bool,
}

/// The view, by namespace name.
pub fn by_namespace(
    resources: &ResourceSet,
    allocations: &[AllocationRecord],
) -> Result<Vec<NamespaceEgress>, PlanError> {
    let mut inputs = Inputs::from_resources(resources);
    let only_in_ipam = add_ipam_only_pods(&mut inputs, resources, allocations);
    let nodes: BTreeSet<&str> = inputs.pods.iter().filter_map(|pod| pod.node.as_deref()).collect();
    let plans: BTreeMap<&str, NodePlan> = nodes
        .into_iter()
        .map(|node| sluice_gateway::compute(&inputs, node, None).map(|plan| (node, plan)))
        .collect::<Result<_, _>>()?;
    let ipam_pools: BTreeMap<IpAddr, &str> = allocations
        .iter()
        .filter_map(|allocation| Some((allocation.address, allocation.pool.as_deref()?)))
        .collect();
    let context = Context {
        inputs: &inputs,
        pools: &resources.ip_pools,
        ipam_pools,
        node_addresses: resources
            .nodes
            .iter()
            .map(|node| (node.metadata.name.as_str(), internal_addresses(node)))
            .collect(),
        candidates: RefCell::default(),
    };

    let mut namespaces: BTreeMap<&str, Accumulator> = BTreeMap::new();
    let mut pods: Vec<&Pod> = inputs
        .pods
        .iter()
        .filter(|pod| !pod.addresses.is_empty())
        .collect();
    pods.sort_by(|left, right| left.id.cmp(&right.id));
    for pod in pods {
        let accumulator = namespaces.entry(pod.id.namespace.as_str()).or_default();
        let client = pod
            .node
            .as_deref()
            .and_then(|node| plans.get(node))
            .and_then(|plan| plan.client(&pod.id));
        let mut pod_pools = BTreeSet::new();
        for &address in &pod.addresses {
            let pool = context.pool_of(address);
            pod_pools.insert(pool.map(|pool| pool.metadata.name.clone()));
            if let Some(pool) = pool {
                accumulator
                    .pool_definitions
                    .insert(pool.metadata.name.clone(), pool);
            }
            accumulator.addresses.push(PodAddress {
                pod: pod.id.to_string(),
                address,
                pool: pool.map(|pool| pool.metadata.name.clone()),
                node: pod.node.clone(),
                only_in_ipam: only_in_ipam.contains(&pod.id),
            });
            for (destination, source) in context.ways_out(pod, client, address, pool) {
                let entry = accumulator
                    .sources
                    .entry((destination, source.clone()))
                    .or_default();
                entry.pods.insert(pod.id.to_string());
                entry
                    .pools
                    .entry(pool.map(|pool| pool.metadata.name.clone()).unwrap_or_default())
                    .or_default()
                    .insert(pod.id.to_string());
                context.outside_addresses(&source, pod, address, entry);
            }
        }
        for pool in pod_pools {
            *accumulator.pool_pods.entry(pool).or_default() += 1;
        }
        accumulator.pods += 1;
    }
    Ok(namespaces
        .into_iter()
        .map(|(namespace, accumulator)| accumulator.finish(namespace))
        .collect())
}

/// Pods IPAM holds addresses for that no Pod or WorkloadEndpoint records: added as pods with
/// only their namespace's label (so namespace annotations apply to them as to any pod, and
/// no gateway selector that needs a label picks them). Returns their ids.
fn add_ipam_only_pods(
    inputs: &mut Inputs,
    resources: &ResourceSet,
    allocations: &[AllocationRecord],
) -> BTreeSet<PodId> {
    let known: BTreeSet<IpAddr> = inputs
        .pods
        .iter()
        .flat_map(|pod| pod.addresses.iter().copied())
        .collect();
    let mut added: BTreeMap<PodId, Pod> = BTreeMap::new();
    for allocation in allocations
        .iter()
        .filter(|allocation| !known.contains(&allocation.address))
    {
        let id = PodId::new(&allocation.namespace, &allocation.pod);
        if let Some(pod) = inputs.pods.iter_mut().find(|pod| pod.id == id) {
            pod.addresses.push(allocation.address);
            continue;
        }
        let annotations = resources
            .pods
            .iter()
            .find(|pod| pod.metadata.namespace() == id.namespace && pod.metadata.name == id.name)
            .and_then(|pod| EgressAnnotations::read(&pod.metadata).ok())
            .unwrap_or_default();
        added
            .entry(id.clone())
            .or_insert_with(|| Pod {
                labels: BTreeMap::from([("projectcalico.org/namespace".to_string(), id.namespace.clone())]),
                id,
                addresses: Vec::new(),
                node: Some(allocation.node.clone()).filter(|node| !node.is_empty()),
                annotations,
                health_port: None,
                deleting: false,
            })
            .addresses
            .push(allocation.address);
    }
    let ids = added.keys().cloned().collect();
    inputs.pods.extend(added.into_values());
    ids
}

/// A Node's InternalIPs, as the agent routes to them.
fn internal_addresses(node: &sluice_api::kubernetes::Node) -> Vec<IpAddr> {
    node.status
        .addresses
        .iter()
        .filter(|address| address.address_type == "InternalIP")
        .filter_map(|address| address.address.parse().ok())
        .collect()
}

/// The pods a selector picks, each with its address of one family.
type Candidates = Vec<(PodId, GatewayCandidate)>;

struct Context<'a> {
    inputs: &'a Inputs,
    pools: &'a [IpPool],
    ipam_pools: BTreeMap<IpAddr, &'a str>,
    node_addresses: BTreeMap<&'a str, Vec<IpAddr>>,
    /// By selector and family (`true`: IPv4).
    candidates: RefCell<BTreeMap<(Selector, bool), Candidates>>,
}

impl<'a> Context<'a> {
    /// The pool IPAM allocated the address from, else the pool whose CIDR holds it.
    fn pool_of(&self, address: IpAddr) -> Option<&'a IpPool> {
        self.ipam_pools
            .get(&address)
            .and_then(|name| self.pools.iter().find(|pool| pool.metadata.name == *name))
            .or_else(|| self.pools.iter().find(|pool| pool.spec.cidr.0.contains(&address)))
    }

    /// The normal way out for an address: its pool's.
    fn normal(pool: Option<&IpPool>) -> Source {
        match pool {
            None => Source::NoPool,
            Some(pool) if pool.spec.nat_outgoing => Source::NatOutgoing {
                pool: pool.metadata.name.clone(),
                pool_nat_address: pool.nat_outgoing_address(),
            },
            Some(pool) => Source::Pool {
                pool: pool.metadata.name.clone(),
                cidr: pool.spec.cidr.0.trunc(),
            },
        }
    }

    /// Each destination of the address's family and how it leaves.
    fn ways_out(
        &self,
        pod: &Pod,
        client: Option<&ClientPlan>,
        address: IpAddr,
        pool: Option<&IpPool>,
    ) -> Vec<(IpNet, Source)> {
        let default_route: IpNet = match address {
            IpAddr::V4(_) => "0.0.0.0/0".parse().expect("a network"),
            IpAddr::V6(_) => "::/0".parse().expect("a network"),
        };
        let Some(client) = client else {
            return vec![(default_route, Self::normal(pool))];
        };
        let chosen_by = client.choice.to_string();
        let policy = client.choice.policy().map(str::to_string);
        let rules = client
            .choice
            .rules(&pod.id.namespace, &pod.addresses, &self.inputs.policies);
        let mut ways: Vec<(IpNet, Source)> = client
            .routes
            .iter()
            .filter(|route| route.destination.addr().is_ipv4() == address.is_ipv4())
            .map(|route| {
                let source = match &route.action {
                    RouteAction::Normal => Self::normal(pool),
                    RouteAction::Drop => Source::Dropped {
                        chosen_by: chosen_by.clone(),
                        policy: policy.clone().unwrap_or_default(),
                    },
                    RouteAction::Gateways(_) | RouteAction::Unreachable => {
                        let selector = rules.iter().find_map(|rule| match &rule.action {
                            RuleAction::Gateways { selector, .. }
                                if rule.destination == route.destination =>
                            {
                                Some(selector)
                            }
                            _ => None,
                        });
                        let gateways = selector
                            .map(|selector| self.candidates(selector, &pod.id, route.destination))
                            .unwrap_or_default();
                        if gateways.is_empty() {
                            Source::NoGateway {
                                chosen_by: chosen_by.clone(),
                                policy: policy.clone(),
                                policy_rule: route.policy_rule,
                            }
                        } else {
                            Source::Gateways {
                                chosen_by: chosen_by.clone(),
                                policy: policy.clone(),
                                policy_rule: route.policy_rule,
                                gateways,
                            }
                        }
                    }
                };
                (route.destination, source)
            })
            .collect();
        // Destinations no route covers take the main table: the normal way.
        if !ways.iter().any(|(destination, _)| destination.prefix_len() == 0) {
            ways.push((default_route, Self::normal(pool)));
        }
        ways
    }

    /// The scheduled pods the selector picks, but the client, with an address of the
    /// destination's family: what the plan chooses hops among. Remembered per selector and
    /// family, since a namespace's clients share them.
    fn candidates(&self, selector: &Selector, client: &PodId, destination: IpNet) -> Vec<GatewayCandidate> {
        let key = (selector.clone(), destination.addr().is_ipv4());
        let mut remembered = self.candidates.borrow_mut();
        let all = remembered.entry(key).or_insert_with(|| {
            self.inputs
                .pods
                .iter()
                .filter(|gateway| selector.matches(&gateway.labels))
                .filter_map(|gateway| {
                    let address = gateway
                        .addresses
                        .iter()
                        .copied()
                        .find(|address| address.is_ipv4() == destination.addr().is_ipv4())?;
                    let pool = self.pool_of(address).filter(|pool| pool.spec.nat_outgoing);
                    let candidate = GatewayCandidate {
                        gateway: gateway.id.to_string(),
                        address,
                        node: gateway.node.clone()?,
                        nat_outgoing_pool: pool.map(|pool| pool.metadata.name.clone()),
                    };
                    Some((gateway.id.clone(), candidate))
                })
                .collect()
        });
        all.iter()
            .filter(|(gateway, _)| gateway != client)
            .map(|(_, candidate)| candidate.clone())
            .collect()
    }

    /// Adds what the firewall sees for `source` from this pod's `address`.
    fn outside_addresses(&self, source: &Source, pod: &Pod, address: IpAddr, entry: &mut Entry) {
        match source {
            Source::Pool { cidr, .. } => {
                entry.addresses.insert(*cidr);
            }
            Source::NoPool => {
                entry.addresses.insert(IpNet::from(address));
            }
            Source::NatOutgoing { pool_nat_address, .. } => {
                self.nat_address(*pool_nat_address, pod.node.as_deref(), address, entry)
            }
            Source::Gateways { gateways, .. } => {
                for gateway in gateways {
                    match &gateway.nat_outgoing_pool {
                        None => {
                            entry.addresses.insert(IpNet::from(gateway.address));
                        }
                        Some(pool) => {
                            let nat_address = self
                                .pools
                                .iter()
                                .find(|candidate| &candidate.metadata.name == pool)
                                .and_then(IpPool::nat_outgoing_address);
                            self.nat_address(nat_address, Some(&gateway.node), gateway.address, entry);
                        }
                    }
                }
            }
            Source::NoGateway { .. } | Source::Dropped { .. } => {}
        }
    }

    /// NAT to the pool's address, else to the node's InternalIP of the address's family.
    fn nat_address(
        &self,
        pool_address: Option<IpAddr>,
        node: Option<&str>,
        address: IpAddr,
        entry: &mut Entry,
    ) {
        if let Some(pool_address) = pool_address {
            entry.addresses.insert(IpNet::from(pool_address));
            return;
        }
        let Some(node) = node else {
            return;
        };
        let known: Vec<IpAddr> = self
            .node_addresses
            .get(node)
            .into_iter()
            .flatten()
            .copied()
            .filter(|node_address| node_address.is_ipv4() == address.is_ipv4())
            .collect();
        if known.is_empty() {
            entry.unknown_node_addresses.insert(node.to_string());
        }
        entry.addresses.extend(known.into_iter().map(IpNet::from));
    }
}

#[derive(Default)]
struct Entry {
    addresses: BTreeSet<IpNet>,
    unknown_node_addresses: BTreeSet<String>,
    pools: BTreeMap<String, BTreeSet<String>>,
    pods: BTreeSet<String>,
}

#[derive(Default)]
struct Accumulator<'a> {
    pods: usize,
    pool_pods: BTreeMap<Option<String>, usize>,
    pool_definitions: BTreeMap<String, &'a IpPool>,
    sources: BTreeMap<(IpNet, Source), Entry>,
    addresses: Vec<PodAddress>,
}

impl Accumulator<'_> {
    fn finish(self, namespace: &str) -> NamespaceEgress {
        let pools = self
            .pool_pods
            .into_iter()
            .map(|(pool, pods)| {
                let definition = pool.as_ref().and_then(|name| self.pool_definitions.get(name));
                PoolUse {
                    cidr: definition.map(|pool| pool.spec.cidr.0.trunc()),
                    nat_outgoing: definition.is_some_and(|pool| pool.spec.nat_outgoing),
                    pool,
                    pods,
                }
            })
            .collect();
        let mut egress: Vec<EgressSource> = self
            .sources
            .into_iter()
            .map(|((destination, source), entry)| EgressSource {
                destination,
                source,
                addresses: IpNet::aggregate(&entry.addresses.into_iter().collect::<Vec<_>>()),
                unknown_node_addresses: entry.unknown_node_addresses.into_iter().collect(),
                pools: entry
                    .pools
                    .into_iter()
                    .map(|(pool, pods)| (pool, pods.len()))
                    .collect(),
                pods: entry.pods.into_iter().collect(),
            })
            .collect();
        // IPv4 before IPv6, longest prefix first: the order a route lookup tries them.
        egress.sort_by(|left, right| {
            (
                left.destination.addr().is_ipv6(),
                std::cmp::Reverse(left.destination.prefix_len()),
                left.destination,
            )
                .cmp(&(
                    right.destination.addr().is_ipv6(),
                    std::cmp::Reverse(right.destination.prefix_len()),
                    right.destination,
                ))
        });
        NamespaceEgress {
            namespace: namespace.to_string(),
            pods: self.pods,
            pools,
            egress,
            pod_addresses: self.addresses,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::table::via;
    use super::*;

    const GATEWAYS: &str = "egress.projectcalico.org/selector: \"egress-code == 'red'\", egress.projectcalico.org/namespaceSelector: \"projectcalico.org/name == 'egress'\"";

    /// An IPPool; `metadata` adds to its metadata (`, annotations: {...}`).
    fn pool(name: &str, cidr: &str, nat_outgoing: bool, metadata: &str) -> String {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}{metadata}}}\nspec: {{cidr: {cidr}, natOutgoing: {nat_outgoing}}}\n"
        )
    }

    fn namespace(name: &str, annotations: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\n"
        )
    }

    fn pod(namespace: &str, name: &str, node: &str, address: &str, labels: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}\nspec: {{nodeName: {node}}}\nstatus: {{podIP: {address}}}\n"
        )
    }

    fn node(name: &str, address: Option<&str>) -> String {
        let status = address
            .map(|address| format!("\nstatus: {{addresses: [{{type: InternalIP, address: {address}}}]}}"))
            .unwrap_or_default();
        format!("---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}{status}\n")
    }

    /// A namespace in a routable pool, one with natOutgoing (nodes with and without an
    /// InternalIP), one with a pool NAT address, one through two gateways, one with a policy
    /// that splits CIDRs, one naming a missing policy.
    pub(crate) fn cluster(extra: &str) -> ResourceSet {
        let text = [
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {egressIPSupport: EnabledPerNamespaceOrPerPod}\n".to_string(),
            node("node-1", Some("192.168.0.1")),
            node("node-2", Some("192.168.0.2")),
            node("node-3", None),
            pool("routable-pool", "10.1.0.0/16", false, ""),
            pool("nat-pool", "10.2.0.0/16", true, ""),
            pool(
                "fixed-pool",
                "10.3.0.0/16",
                true,
                ", annotations: {sluice.io/nat-outgoing-address: 192.0.2.10}",
            ),
            pool("gateway-pool", "10.9.0.0/16", false, ""),
            "---\napiVersion: projectcalico.org/v3\nkind: EgressGatewayPolicy\nmetadata: {name: split}\nspec:\n  rules:\n  - destination: {cidr: 10.0.0.0/8}\n  - gateway: {selector: \"egress-code == 'red'\", namespaceSelector: \"projectcalico.org/name == 'egress'\"}\n  - destination: {cidr: 203.0.113.0/24}\n    gateway: {selector: \"tier == 'b'\", namespaceSelector: \"projectcalico.org/name == 'egress'\"}\n".to_string(),
            namespace("routable", ""),
            namespace("natted", ""),
            namespace("fixed", ""),
            namespace("through", GATEWAYS),
            namespace("split", "egress.projectcalico.org/egressGatewayPolicy: split"),
            namespace("broken", "egress.projectcalico.org/egressGatewayPolicy: missing"),
            namespace("egress", ""),
            pod("routable", "r1", "node-1", "10.1.0.1", ""),
            pod("natted", "n1", "node-1", "10.2.0.1", ""),
            pod("natted", "n2", "node-3", "10.2.0.2", ""),
            pod("fixed", "f1", "node-2", "10.3.0.1", ""),
            pod("through", "t1", "node-1", "10.2.0.10", ""),
            pod("through", "t2", "node-2", "10.2.0.11", ""),
            pod("split", "s1", "node-1", "10.2.0.20", ""),
            pod("broken", "b1", "node-2", "10.1.0.30", ""),
            pod("egress", "gw-a", "node-1", "10.9.0.1", "egress-code: red"),
            pod("egress", "gw-b", "node-2", "10.9.0.2", "egress-code: red, tier: b"),
            extra.to_string(),
        ]
        .concat();
        sluice_api::load_str("cluster.yaml", &text).unwrap_or_else(|errors| panic!("{errors}"))
    }

    fn find<'a>(view: &'a [NamespaceEgress], namespace: &str) -> &'a NamespaceEgress {
        view.iter()
            .find(|entry| entry.namespace == namespace)
            .unwrap_or_else(|| panic!("no namespace {namespace} in {view:#?}"))
    }

    fn networks(texts: &[&str]) -> Vec<IpNet> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    fn gateway_names(source: &Source) -> Vec<&str> {
        match source {
            Source::Gateways { gateways, .. } => {
                gateways.iter().map(|gateway| gateway.gateway.as_str()).collect()
            }
            other => panic!("not through gateways: {other:?}"),
        }
    }

    #[test]
    fn a_routable_pool_shows_its_cidr_and_natoutgoing_the_nat_address() {
        let view = by_namespace(&cluster(""), &[]).unwrap();

        let routable = find(&view, "routable");
        assert_eq!(routable.egress.len(), 1);
        assert_eq!(
            routable.egress[0].destination,
            "0.0.0.0/0".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            routable.egress[0].source,
            Source::Pool {
                pool: "routable-pool".into(),
                cidr: "10.1.0.0/16".parse().unwrap()
            }
        );
        assert_eq!(routable.egress[0].addresses, networks(&["10.1.0.0/16"]));
        assert_eq!(
            routable.pools,
            [PoolUse {
                pool: Some("routable-pool".into()),
                cidr: Some("10.1.0.0/16".parse().unwrap()),
                nat_outgoing: false,
                pods: 1
            }]
        );

        // The node's address: node-1's InternalIP; node-3 has none, so it is named instead.
        let natted = find(&view, "natted");
        assert_eq!(natted.pods, 2);
        assert_eq!(natted.egress.len(), 1);
        assert_eq!(
            natted.egress[0].source,
            Source::NatOutgoing {
                pool: "nat-pool".into(),
                pool_nat_address: None
            }
        );
        assert_eq!(natted.egress[0].addresses, networks(&["192.168.0.1/32"]));
        assert_eq!(natted.egress[0].unknown_node_addresses, ["node-3"]);
        assert_eq!(natted.egress[0].pods, ["natted/n1", "natted/n2"]);
        assert_eq!(
            natted.egress[0].pools,
            BTreeMap::from([("nat-pool".to_string(), 2)])
        );

        let fixed = find(&view, "fixed");
        assert_eq!(fixed.egress[0].addresses, networks(&["192.0.2.10/32"]));
        assert!(fixed.egress[0].unknown_node_addresses.is_empty());

        // Gateways' own egress is their pool's.
        let egress = find(&view, "egress");
        assert_eq!(egress.egress[0].addresses, networks(&["10.9.0.0/16"]));
    }

    #[test]
    fn a_namespace_through_two_gateways_shows_both_addresses_whatever_their_health() {
        let view = by_namespace(&cluster(""), &[]).unwrap();
        let through = find(&view, "through");
        assert_eq!(through.egress.len(), 1, "{:#?}", through.egress);
        let egress = &through.egress[0];
        assert_eq!(egress.destination, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert_eq!(gateway_names(&egress.source), ["egress/gw-a", "egress/gw-b"]);
        assert!(matches!(
            &egress.source,
            Source::Gateways { chosen_by, policy: None, policy_rule: None, .. } if chosen_by == "namespace annotations"
        ));
        assert_eq!(egress.addresses, networks(&["10.9.0.1/32", "10.9.0.2/32"]));
        // Both clients, on two nodes (two plans), have the same candidates.
        assert_eq!(egress.pods, ["through/t1", "through/t2"]);
    }

    #[test]
    fn a_policy_splits_destinations_longest_prefix_first() {
        let view = by_namespace(&cluster(""), &[]).unwrap();
        let split = find(&view, "split");
        let destinations: Vec<String> = split
            .egress
            .iter()
            .map(|egress| egress.destination.to_string())
            .collect();
        assert_eq!(destinations, ["203.0.113.0/24", "10.0.0.0/8", "0.0.0.0/0"]);
        assert_eq!(gateway_names(&split.egress[0].source), ["egress/gw-b"]);
        assert!(matches!(
            &split.egress[0].source,
            Source::Gateways { policy: Some(policy), policy_rule: Some(2), chosen_by, .. }
                if policy == "split" && chosen_by == "policy split (namespace annotation)"
        ));
        assert_eq!(split.egress[0].addresses, networks(&["10.9.0.2/32"]));
        // The rule without a gateway: the pool's way, NAT to the node's address.
        assert_eq!(
            split.egress[1].source,
            Source::NatOutgoing {
                pool: "nat-pool".into(),
                pool_nat_address: None
            }
        );
        assert_eq!(split.egress[1].addresses, networks(&["192.168.0.1/32"]));
        assert_eq!(
            gateway_names(&split.egress[2].source),
            ["egress/gw-a", "egress/gw-b"]
        );
        assert_eq!(
            split.egress[2].addresses,
            networks(&["10.9.0.1/32", "10.9.0.2/32"])
        );
    }

    #[test]
    fn a_missing_policy_drops_everything_and_says_so() {
        let view = by_namespace(&cluster(""), &[]).unwrap();
        let broken = find(&view, "broken");
        assert_eq!(broken.egress.len(), 1);
        assert_eq!(
            broken.egress[0].source,
            Source::Dropped {
                chosen_by: "policy missing (namespace annotation; no such policy: all egress dropped)".into(),
                policy: "missing".into()
            }
        );
        assert!(broken.egress[0].addresses.is_empty());
        let rows = table(&view);
        let row = rows.iter().find(|row| row[0] == "broken").unwrap();
        assert_eq!(row[2], "none");
        assert!(row[3].starts_with("egress dropped: policy missing"), "{row:?}");
    }

    #[test]
    fn a_selector_picking_no_gateway_is_unreachable_not_the_pool() {
        let extra = namespace(
            "lost",
            "egress.projectcalico.org/selector: \"egress-code == 'green'\"",
        ) + &pod("lost", "l1", "node-1", "10.2.0.40", "");
        let view = by_namespace(&cluster(&extra), &[]).unwrap();
        let lost = find(&view, "lost");
        assert_eq!(lost.egress.len(), 1);
        assert!(
            matches!(lost.egress[0].source, Source::NoGateway { .. }),
            "{:?}",
            lost.egress
        );
        assert!(lost.egress[0].addresses.is_empty());
    }

    #[test]
    fn annotations_route_only_ipv4_so_a_dual_stack_clients_ipv6_leaves_by_its_pool() {
        let extra = pool("v6-pool", "fd00:10::/64", false, "")
            + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: dual, namespace: through}\nspec: {nodeName: node-1}\nstatus: {podIPs: [{ip: 10.2.0.60}, {ip: 'fd00:10::60'}]}\n";
        let view = by_namespace(&cluster(&extra), &[]).unwrap();
        let through = find(&view, "through");
        let destinations: Vec<String> = through
            .egress
            .iter()
            .map(|egress| egress.destination.to_string())
            .collect();
        assert_eq!(destinations, ["0.0.0.0/0", "::/0"]);
        assert!(through.egress[0].pods.contains(&"through/dual".to_string()));
        assert_eq!(through.egress[1].pods, ["through/dual"]);
        assert_eq!(
            through.egress[1].source,
            Source::Pool {
                pool: "v6-pool".into(),
                cidr: "fd00:10::/64".parse().unwrap()
            }
        );
        assert_eq!(through.egress[1].addresses, networks(&["fd00:10::/64"]));
    }

    #[test]
    fn a_gateway_in_a_natoutgoing_pool_leaves_from_its_nodes_address() {
        let extra = pool("nat-gateway-pool", "10.8.0.0/16", true, "")
            + &namespace(
                "natgw",
                "egress.projectcalico.org/selector: \"egress-code == 'nat'\"",
            )
            + &pod("natgw", "gw", "node-2", "10.8.0.1", "egress-code: nat")
            + &pod("natgw", "client", "node-1", "10.1.0.50", "");
        let view = by_namespace(&cluster(&extra), &[]).unwrap();
        let natgw = find(&view, "natgw");
        let through = natgw
            .egress
            .iter()
            .find(|egress| matches!(egress.source, Source::Gateways { .. }))
            .unwrap();
        assert_eq!(through.pods, ["natgw/client"]);
        assert_eq!(through.addresses, networks(&["192.168.0.2/32"]));
        assert!(
            via(&through.source)
                .contains("natgw/gw on node-2 (NATed by its node: pool nat-gateway-pool has natOutgoing)"),
            "{}",
            via(&through.source)
        );
    }

    #[test]
    fn addresses_only_ipam_holds_are_shown_by_their_pool_and_namespace() {
        let allocation = AllocationRecord {
            address: "10.2.0.99".parse().unwrap(),
            block: "10.2.0.64/26".parse().unwrap(),
            pool: Some("nat-pool".into()),
            node: "node-2".into(),
            namespace: "natted".into(),
            pod: "starting".into(),
            handle: "abc.eth0".into(),
        };
        let view = by_namespace(&cluster(""), &[allocation]).unwrap();
        let natted = find(&view, "natted");
        assert_eq!(natted.pods, 3);
        let address = natted
            .pod_addresses
            .iter()
            .find(|address| address.pod == "natted/starting")
            .unwrap();
        assert!(address.only_in_ipam);
        assert_eq!(address.pool.as_deref(), Some("nat-pool"));
        assert_eq!(
            natted.egress[0].addresses,
            networks(&["192.168.0.1/32", "192.168.0.2/32"])
        );
    }

    #[test]
    fn the_json_names_the_way_out_and_its_fields() {
        let view = by_namespace(&cluster(""), &[]).unwrap();
        let value = serde_json::to_value(&view).unwrap();
        let split = value
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["namespace"] == "split")
            .unwrap();
        assert_eq!(split["egress"][0]["via"], "gateways");
        assert_eq!(split["egress"][0]["policyRule"], 2);
        assert_eq!(split["egress"][0]["gateways"][0]["gateway"], "egress/gw-b");
        assert_eq!(split["egress"][0]["addresses"][0], "10.9.0.2/32");
        assert_eq!(split["egress"][1]["via"], "natOutgoing");
        assert_eq!(split["pools"][0]["pool"], "nat-pool");
        assert_eq!(split["podAddresses"][0]["address"], "10.2.0.20");
    }
}
