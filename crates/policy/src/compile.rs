//! Compiles a resource set into the Dataplane IR.
//!
//! Steps, after felix's calculation graph: build the selectable entities; normalise every
//! policy (Calico, Global, Kubernetes) into one form with fully rewritten selectors; compile
//! each policy's rules once, interning IP sets and named-port sets so rules share them; find
//! the policies that apply to each endpoint; order them into tiers.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use sluice_api::ResourceSet;
use sluice_api::calico::{
    DEFAULT_TIER, DEFAULT_TIER_ORDER, EntityRule, KUBERNETES_POLICY_ORDER, PolicySpec, Rule,
};
use sluice_api::domain::DomainPattern;
use sluice_api::values::{Action, PolicyType, Port};
use sluice_selector::Selector;

use crate::entities::{
    Entity, EntityKind, LABEL_NAMESPACE, LABEL_SERVICE_ACCOUNT, NAMESPACE_LABEL_PREFIX,
    SERVICE_ACCOUNT_LABEL_PREFIX, build_entities,
};
use crate::ip_set::{AddressSlots, Membership, NetworkLookup};
use crate::ir::*;
use crate::kubernetes;
use crate::l7::{HttpMatch, PathMatch, TlsMatch};
use crate::prefilter::RuleIndex;

/// Compiles resources into the IR. Pods without an address are left out (nothing can address
/// them) and listed in [`Dataplane::unaddressed_pods`]. Staged policies are never compiled
/// here (see [`crate::compile_staged`] for what they would do).
pub fn compile(resources: &ResourceSet) -> Dataplane {
    compile_with_origins(resources, &StagedOrigins::default())
}

/// The policies of a resource set that stand for staged ones (the "what if" set of
/// [`crate::staged`]): they are named by their staged kind in the IR, as Calico's flow logs
/// name them in `pending_policies`.
#[derive(Debug, Default)]
pub(crate) struct StagedOrigins {
    /// (namespace, name) of NetworkPolicies that a StagedNetworkPolicy set.
    pub network_policies: std::collections::BTreeSet<(String, String)>,
    /// Names of GlobalNetworkPolicies that a StagedGlobalNetworkPolicy set.
    pub global_network_policies: std::collections::BTreeSet<String>,
    /// (namespace, name) of Kubernetes NetworkPolicies that a StagedKubernetesNetworkPolicy set.
    pub kubernetes_network_policies: std::collections::BTreeSet<(String, String)>,
}

impl StagedOrigins {
    fn kind(&self, kind: &'static str, namespace: Option<&str>, name: &str) -> &'static str {
        let key = || (namespace.unwrap_or_default().to_string(), name.to_string());
        match kind {
            "NetworkPolicy" if self.network_policies.contains(&key()) => "StagedNetworkPolicy",
            "GlobalNetworkPolicy" if self.global_network_policies.contains(name) => {
                "StagedGlobalNetworkPolicy"
            }
            "KubernetesNetworkPolicy" if self.kubernetes_network_policies.contains(&key()) => {
                "StagedKubernetesNetworkPolicy"
            }
            other => other,
        }
    }
}

/// [`compile`], naming the policies in `origins` by their staged kind.
pub(crate) fn compile_with_origins(resources: &ResourceSet, origins: &StagedOrigins) -> Dataplane {
    let (entities, unaddressed_pods) = build_entities(resources);
    let definitions = normalise_policies(resources, origins);
    // Slots in endpoint order: endpoint i's addresses come before endpoint i+1's.
    let slots = AddressSlots::new(
        entities
            .iter()
            .filter(|entity| entity.kind == EntityKind::Endpoint)
            .flat_map(|entity| entity.networks.iter().map(IpNet::addr))
            .zip(0u32..),
    );
    let mut interner = Interner::new(&entities, &slots);

    let policies: Vec<CompiledPolicy> = definitions
        .iter()
        .enumerate()
        .map(|(id, definition)| CompiledPolicy {
            id,
            reference: Box::new(definition.reference.clone()),
            ingress: compile_rules(
                &definition.ingress,
                PolicyType::Ingress,
                definition.namespace.as_deref(),
                &mut interner,
            ),
            egress: compile_rules(
                &definition.egress,
                PolicyType::Egress,
                definition.namespace.as_deref(),
                &mut interner,
            ),
        })
        .collect();

    let tiers = tier_table(resources);
    let endpoint_entities: Vec<&Entity> = entities
        .iter()
        .filter(|entity| entity.kind == EntityKind::Endpoint)
        .collect();
    let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, entity) in endpoint_entities.iter().enumerate() {
        by_namespace
            .entry(entity.namespace.as_deref().unwrap_or_default())
            .or_default()
            .push(index);
    }
    // (endpoint, direction) -> policies that apply.
    let mut applicable: Vec<[Vec<PolicyId>; 2]> = vec![[Vec::new(), Vec::new()]; endpoint_entities.len()];
    let all_indices: Vec<usize> = (0..endpoint_entities.len()).collect();
    for (id, definition) in definitions.iter().enumerate() {
        // A namespaced policy's selector already requires its namespace; looking only there
        // is an index, not a change of meaning.
        let candidates = match &definition.namespace {
            Some(namespace) => by_namespace
                .get(namespace.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            None => &all_indices,
        };
        for &index in candidates {
            if definition.applies_to.matches(&endpoint_entities[index].labels) {
                for direction in &definition.types {
                    applicable[index][direction_index(*direction)].push(id);
                }
            }
        }
    }

    let node_addresses = resources
        .nodes
        .iter()
        .map(|node| {
            let addresses = node
                .status
                .addresses
                .iter()
                .filter_map(|entry| entry.address.parse().ok())
                .collect();
            (node.metadata.name.clone(), addresses)
        })
        .collect();
    let mut dataplane = Dataplane {
        policies,
        unaddressed_pods,
        node_addresses,
        ..Dataplane::default()
    };
    for (index, entity) in endpoint_entities.iter().enumerate() {
        let [ingress, egress] = &applicable[index];
        let program = EndpointProgram {
            id: index,
            namespace: entity.namespace.clone().unwrap_or_default(),
            name: entity.name.clone(),
            node: entity.node.clone(),
            addresses: entity.networks.iter().map(IpNet::addr).collect(),
            ingress: order_into_tiers(ingress, &definitions, &tiers),
            egress: order_into_tiers(egress, &definitions, &tiers),
        };
        for address in &program.addresses {
            let slot =
                u32::try_from(dataplane.address_slots.len()).expect("fewer than 2^32 endpoint addresses");
            dataplane.address_slots.insert(*address, (slot, index));
        }
        dataplane
            .endpoint_by_name
            .insert((program.namespace.clone(), program.name.clone()), index);
        dataplane.endpoints.push(program);
    }
    let mut external: Vec<IpNet> = interner
        .ip_sets
        .iter()
        .filter(|set| set.source == IpSetSource::Nets)
        .flat_map(|set| set.members.iter().copied())
        .chain(
            entities
                .iter()
                .filter(|entity| entity.kind != EntityKind::Endpoint)
                .flat_map(|entity| entity.networks.iter().copied()),
        )
        .collect();
    external.sort();
    external.dedup();
    dataplane.external_networks = external;
    dataplane.pools = resources
        .ip_pools
        .iter()
        .map(|pool| PoolProgram {
            name: pool.metadata.name.clone(),
            cidr: pool.spec.cidr.0,
            nat_outgoing: pool.spec.nat_outgoing,
            nat_address: pool.nat_outgoing_address(),
        })
        .collect();
    let mut membership = Membership::new(dataplane.address_slots.len(), interner.ip_sets.len());
    for set in &interner.ip_sets {
        for &slot in &set.endpoint_slots {
            membership.insert(slot, set.id as usize);
        }
    }
    dataplane.membership = membership;
    dataplane.rule_index = RuleIndex::new(&dataplane.policies);
    dataplane.ip_sets = interner.ip_sets;
    dataplane.named_port_sets = interner.named_port_sets;
    dataplane.domain_sets = interner.domain_sets;
    dataplane.l7_matches = interner.l7_matches;
    dataplane
}

fn direction_index(direction: PolicyType) -> usize {
    match direction {
        PolicyType::Ingress => 0,
        PolicyType::Egress => 1,
    }
}

/// A policy of any kind in one form.
struct PolicyDefinition {
    reference: PolicyReference,
    order: Option<f64>,
    /// What Calico sorts by when orders tie: `name/namespace/kind` (felix `PolKVLess` in
    /// `felix/calc/policy_sorter.go`, Calico 3.32 and later).
    sort_name: String,
    /// The endpoints it applies to, with namespace and service-account rewriting done.
    applies_to: Selector,
    /// For namespaced policies: the namespace (rules default to it).
    namespace: Option<String>,
    types: Vec<PolicyType>,
    /// Rules with the index of the rule they come from in the resource.
    ingress: Vec<(usize, Rule)>,
    egress: Vec<(usize, Rule)>,
}

fn normalise_policies(resources: &ResourceSet, origins: &StagedOrigins) -> Vec<PolicyDefinition> {
    let mut definitions = Vec::new();
    for policy in &resources.network_policies {
        let namespace = policy.metadata.namespace().to_string();
        // networkpolicyprocessor.go: (selector) && projectcalico.org/namespace == '<ns>', then
        // the service account selector with the pcsa. prefix.
        let applies_to = policy
            .spec
            .selector
            .selector()
            .and(&equals(LABEL_NAMESPACE, &namespace));
        let kind = origins.kind("NetworkPolicy", Some(&namespace), &policy.metadata.name);
        definitions.push(PolicyDefinition {
            reference: PolicyReference {
                kind,
                namespace: Some(namespace.clone()),
                name: policy.metadata.name.clone(),
                tier: policy.spec.tier().to_string(),
            },
            order: policy.spec.order,
            sort_name: format!("{}/{namespace}/{kind}", policy.metadata.name),
            applies_to: with_service_account_selector(applies_to, &policy.spec),
            namespace: Some(namespace),
            types: policy.spec.effective_types(),
            ingress: policy.spec.ingress.iter().cloned().enumerate().collect(),
            egress: policy.spec.egress.iter().cloned().enumerate().collect(),
        });
    }
    for policy in &resources.global_network_policies {
        // globalnetworkpolicyprocessor.go: the namespace selector with the pcns. prefix, its
        // all() meaning "any namespaced endpoint".
        let mut applies_to = policy.spec.selector.selector();
        if let Some(namespace_selector) = &policy.spec.namespace_selector.0 {
            applies_to = applies_to
                .and(&namespace_selector.with_label_prefix(NAMESPACE_LABEL_PREFIX))
                .replace_all_and_global(&has(LABEL_NAMESPACE), &has(LABEL_NAMESPACE).not());
        }
        let kind = origins.kind("GlobalNetworkPolicy", None, &policy.metadata.name);
        definitions.push(PolicyDefinition {
            reference: PolicyReference {
                kind,
                namespace: None,
                name: policy.metadata.name.clone(),
                tier: policy.spec.tier().to_string(),
            },
            order: policy.spec.order,
            sort_name: format!("{}//{kind}", policy.metadata.name),
            applies_to: with_service_account_selector(applies_to, &policy.spec),
            namespace: None,
            types: policy.spec.effective_types(),
            ingress: policy.spec.ingress.iter().cloned().enumerate().collect(),
            egress: policy.spec.egress.iter().cloned().enumerate().collect(),
        });
    }
    for policy in &resources.kubernetes_network_policies {
        let namespace = policy.metadata.namespace().to_string();
        let spec = &policy.spec;
        let ingress = spec
            .ingress
            .iter()
            .enumerate()
            .flat_map(|(index, rule)| {
                kubernetes::convert_rule(&rule.from, &rule.ports, true)
                    .into_iter()
                    .map(move |converted| (index, converted))
            })
            .collect();
        let egress = spec
            .egress
            .iter()
            .enumerate()
            .flat_map(|(index, rule)| {
                kubernetes::convert_rule(&rule.to, &rule.ports, false)
                    .into_iter()
                    .map(move |converted| (index, converted))
            })
            .collect();
        let kind = origins.kind("KubernetesNetworkPolicy", Some(&namespace), &policy.metadata.name);
        definitions.push(PolicyDefinition {
            reference: PolicyReference {
                kind,
                namespace: Some(namespace.clone()),
                name: policy.metadata.name.clone(),
                tier: DEFAULT_TIER.to_string(),
            },
            order: Some(KUBERNETES_POLICY_ORDER),
            sort_name: format!("{}/{namespace}/{kind}", policy.metadata.name),
            applies_to: kubernetes::pod_selector(&spec.pod_selector)
                .and(&equals(LABEL_NAMESPACE, &namespace)),
            namespace: Some(namespace),
            types: spec.effective_policy_types(),
            ingress,
            egress,
        });
    }
    definitions
}

fn with_service_account_selector(selector: Selector, spec: &PolicySpec) -> Selector {
    match &spec.service_account_selector.0 {
        Some(accounts) => selector
            .and(&accounts.with_label_prefix(SERVICE_ACCOUNT_LABEL_PREFIX))
            .replace_all_and_global(&has(LABEL_SERVICE_ACCOUNT), &has(LABEL_SERVICE_ACCOUNT).not()),
        None => selector,
    }
}

// Built as trees, not parsed from text: a stored name may hold both quote kinds, which no
// selector text can quote.
fn equals(key: &str, value: &str) -> Selector {
    Selector::equal(key, value)
}

fn has(key: &str) -> Selector {
    Selector::has(key)
}

trait Negate {
    fn not(&self) -> Selector;
}

impl Negate for Selector {
    fn not(&self) -> Selector {
        self.negated()
    }
}

/// An ICMP match only with a type, as Felix reads it (`proto.Rule_IcmpType`/`IcmpTypeCode`):
/// fields without a type match nothing more than the rule's protocol. `apply` refuses a code
/// without a type, but a stored value may have bypassed it; the evaluator and the renderer both
/// read this one form.
fn icmp_match(fields: sluice_api::calico::IcmpFields) -> Option<IcmpMatch> {
    fields.icmp_type.map(|icmp_type| IcmpMatch {
        icmp_type: Some(icmp_type),
        code: fields.code,
    })
}

/// The selector for one side of a rule, as `getEndpointSelector` in Calico's
/// `updateprocessors/rules.go` builds it. `None` means the rule does not restrict by selector.
fn entity_selector(entity: &EntityRule, policy_namespace: Option<&str>) -> Option<Selector> {
    let namespace_selector = match (&entity.namespace_selector.0, policy_namespace) {
        (Some(selector), _) => Some(
            selector
                .with_label_prefix(NAMESPACE_LABEL_PREFIX)
                .replace_all_and_global(&has(LABEL_NAMESPACE), &has(LABEL_NAMESPACE).not()),
        ),
        (None, Some(namespace)) => Some(equals(LABEL_NAMESPACE, namespace)),
        (None, None) => None,
    };
    let service_accounts = entity.service_accounts.as_ref().and_then(|accounts| {
        let by_selector = accounts
            .selector
            .0
            .as_ref()
            .map(|selector| selector.with_label_prefix(SERVICE_ACCOUNT_LABEL_PREFIX));
        let by_name = (!accounts.names.is_empty())
            .then(|| Selector::in_set(LABEL_SERVICE_ACCOUNT, accounts.names.iter().map(String::as_str)));
        match (by_selector, by_name) {
            (Some(left), Some(right)) => Some(left.and(&right)),
            (left, right) => left.or(right),
        }
    });
    let selector = match (service_accounts, &entity.selector.0) {
        (Some(accounts), Some(selector)) => Some(accounts.and(selector)),
        (accounts, selector) => accounts.or_else(|| selector.clone()),
    };
    let namespaced = selector.is_some() || entity.not_selector.is_set() || entity.namespace_selector.is_set();
    match (namespace_selector, selector) {
        (Some(namespace), Some(selector)) if namespaced => Some(namespace.and(&selector)),
        (Some(namespace), None) if namespaced => Some(namespace),
        (_, selector) => selector,
    }
}

fn compile_rules(
    rules: &[(usize, Rule)],
    direction: PolicyType,
    namespace: Option<&str>,
    interner: &mut Interner<'_>,
) -> Vec<CompiledRule> {
    rules
        .iter()
        .map(|(origin_index, rule)| {
            let (source, source_domains) = compile_peer(&rule.source, namespace, interner);
            let (mut destination, destination_domains) = compile_peer(&rule.destination, namespace, interner);
            let domains = rule_domains(rule, direction, source_domains, destination_domains, interner);
            if domains.is_some_and(|domains| domains.usage == DomainUse::Only) {
                // No address is known when compiling: the addresses a `domains` rule reaches
                // are an empty set here (filled per endpoint from DNS by the node), so any
                // reader of the IR that does not know names matches nothing, never everything.
                destination.nets = Some(interner.add_set(IpSetSource::Nets, Vec::new()));
            }
            CompiledRule {
                origin_index: *origin_index,
                action: rule.action,
                ip_version: rule.ip_version.or_else(|| implied_ip_version(rule)),
                protocol: rule.protocol.map(|protocol| protocol.number()),
                not_protocol: rule.not_protocol.map(|protocol| protocol.number()),
                icmp: rule.icmp.and_then(icmp_match),
                not_icmp: rule.not_icmp.and_then(icmp_match),
                source,
                destination,
                l7: l7_match(rule).map(|l7| interner.l7_match(l7)),
                domains,
            }
        })
        .collect()
}

/// The rule's HTTP or TLS match in the IR's form. Validation refuses a rule with both; a stored
/// value that slipped past it keeps the HTTP match, and the rule still matches only requests
/// it allows.
fn l7_match(rule: &Rule) -> Option<L7Match> {
    if let Some(http) = &rule.http {
        let paths = http
            .paths
            .iter()
            .filter_map(|path| match (&path.exact, &path.prefix) {
                (Some(exact), _) => Some(PathMatch::Exact(exact.clone())),
                (None, Some(prefix)) => Some(PathMatch::Prefix(prefix.clone())),
                (None, None) => None,
            })
            .collect();
        return Some(L7Match::Http(HttpMatch {
            methods: http.methods.clone(),
            paths,
            hosts: http.hosts.clone(),
        }));
    }
    rule.tls.as_ref().map(|tls| {
        L7Match::Tls(TlsMatch {
            server_names: tls.server_names.clone(),
            rule_domains: tls.match_domains,
        })
    })
}

/// The domains a rule allows, as Calico Enterprise reads them: `destination.domains` in an
/// egress Allow rule; else, in an egress Allow rule, the `allowedEgressDomains` of the network
/// sets its destination selector picks; anywhere else network-set domains have no effect.
fn rule_domains(
    rule: &Rule,
    direction: PolicyType,
    source_domains: Vec<DomainPattern>,
    destination_domains: Vec<DomainPattern>,
    interner: &mut Interner<'_>,
) -> Option<DomainMatch> {
    let allowing = direction == PolicyType::Egress && rule.action == Action::Allow;
    let (patterns, usage) = if allowing && !rule.destination.domains.is_empty() {
        (rule.destination.domains.clone(), DomainUse::Only)
    } else if allowing {
        (destination_domains, DomainUse::OrSelector)
    } else {
        // Validation keeps `domains` out of these rules; a stored value that slipped past it
        // still only ever widens an Allow, never this rule.
        let mut all = source_domains;
        all.extend(destination_domains);
        all.extend(rule.destination.domains.iter().cloned());
        all.extend(rule.source.domains.iter().cloned());
        (all, DomainUse::Ignored)
    };
    if patterns.is_empty() {
        return None;
    }
    Some(DomainMatch {
        set: interner.domain_set(patterns),
        usage,
    })
}

/// The IP version a rule's CIDRs confine it to. Felix renders a rule only for the IP versions
/// its `nets` and `notNets` have CIDRs of (`FilterRuleToIPVersion` in `felix/rules/policy.go`),
/// so `notNets: [10.0.0.0/8]` never matches IPv6 traffic. Validation rejects rules that mix
/// IPv4 and IPv6 CIDRs, so the first CIDR decides.
fn implied_ip_version(rule: &Rule) -> Option<u8> {
    [&rule.source, &rule.destination]
        .into_iter()
        .flat_map(|entity| entity.nets.iter().chain(&entity.not_nets))
        .map(|net| if net.0.addr().is_ipv4() { 4 } else { 6 })
        .next()
}

/// The side's matches, and the `allowedEgressDomains` of the network sets its selector picks.
fn compile_peer(
    entity: &EntityRule,
    namespace: Option<&str>,
    interner: &mut Interner<'_>,
) -> (PeerMatch, Vec<DomainPattern>) {
    let selector = entity_selector(entity, namespace);
    let domains = selector
        .as_ref()
        .map(|selector| interner.selector_domains(selector))
        .unwrap_or_default();
    // felix rule_scanner.go: named ports are IP sets filtered by the positive selector (all()
    // when there is none); notSelector is used as written, not namespaced (rules.go).
    let port_selector = selector.clone().unwrap_or_else(Selector::all);
    let peer = PeerMatch {
        nets: (!entity.nets.is_empty()).then(|| interner.nets(&entity.nets)),
        not_nets: (!entity.not_nets.is_empty()).then(|| interner.nets(&entity.not_nets)),
        selector: selector.map(|selector| interner.selector(&selector)),
        not_selector: entity
            .not_selector
            .0
            .as_ref()
            .map(|selector| interner.selector(selector)),
        ports: (!entity.ports.is_empty()).then(|| Box::new(interner.ports(&entity.ports, &port_selector))),
        not_ports: (!entity.not_ports.is_empty())
            .then(|| Box::new(interner.ports(&entity.not_ports, &port_selector))),
    };
    (peer, domains)
}

/// Shares IP sets and named-port sets between rules that mean the same thing.
struct Interner<'a> {
    entities: &'a [Entity],
    slots: &'a AddressSlots,
    ip_sets: Vec<IpSet>,
    ip_set_by_key: HashMap<(IpSetSource, Vec<IpNet>), IpSetId>,
    selector_sets: HashMap<String, IpSetId>,
    named_port_sets: Vec<NamedPortSet>,
    named_port_by_key: HashMap<(String, String), NamedPortSetId>,
    domain_sets: Vec<DomainSet>,
    domain_set_by_patterns: HashMap<Vec<DomainPattern>, DomainSetId>,
    l7_matches: Vec<L7Match>,
    l7_match_ids: HashMap<L7Match, L7MatchId>,
    /// Canonical selector → the `allowedEgressDomains` of the network sets it picks.
    selector_domains: HashMap<String, Vec<DomainPattern>>,
    /// Whether any network set has `allowedEgressDomains` (most inputs have none).
    any_domains: bool,
}

impl<'a> Interner<'a> {
    fn new(entities: &'a [Entity], slots: &'a AddressSlots) -> Self {
        Interner {
            entities,
            slots,
            ip_sets: Vec::new(),
            ip_set_by_key: HashMap::new(),
            selector_sets: HashMap::new(),
            named_port_sets: Vec::new(),
            named_port_by_key: HashMap::new(),
            domain_sets: Vec::new(),
            domain_set_by_patterns: HashMap::new(),
            l7_matches: Vec::new(),
            l7_match_ids: HashMap::new(),
            selector_domains: HashMap::new(),
            any_domains: entities
                .iter()
                .any(|entity| !entity.allowed_egress_domains.is_empty()),
        }
    }

    /// The domain set of these patterns (sorted and deduplicated first), shared by every rule
    /// with the same patterns.
    fn domain_set(&mut self, mut patterns: Vec<DomainPattern>) -> DomainSetId {
        patterns.sort();
        patterns.dedup();
        if let Some(id) = self.domain_set_by_patterns.get(&patterns) {
            return *id;
        }
        let id = DomainSetId::try_from(self.domain_sets.len()).expect("fewer than 2^32 domain sets");
        let name = (0..)
            .map(|attempt| domain_set_name(&patterns, attempt))
            .find(|name| self.domain_sets.iter().all(|set| &set.name != name))
            .expect("some attempt gives an unused name");
        self.domain_sets.push(DomainSet {
            id,
            name,
            patterns: patterns.clone(),
        });
        self.domain_set_by_patterns.insert(patterns, id);
        id
    }

    /// The id of an L7 match, shared by every rule with the same match.
    fn l7_match(&mut self, l7: L7Match) -> L7MatchId {
        if let Some(id) = self.l7_match_ids.get(&l7) {
            return *id;
        }
        let id = L7MatchId::try_from(self.l7_matches.len()).expect("fewer than 2^32 L7 matches");
        self.l7_matches.push(l7.clone());
        self.l7_match_ids.insert(l7, id);
        id
    }

    /// The `allowedEgressDomains` of the network sets a selector picks.
    fn selector_domains(&mut self, selector: &Selector) -> Vec<DomainPattern> {
        if !self.any_domains {
            return Vec::new();
        }
        let canonical = selector.canonical();
        if let Some(domains) = self.selector_domains.get(&canonical) {
            return domains.clone();
        }
        let domains: Vec<DomainPattern> = self
            .entities
            .iter()
            .filter(|entity| !entity.allowed_egress_domains.is_empty() && selector.matches(&entity.labels))
            .flat_map(|entity| entity.allowed_egress_domains.iter().cloned())
            .collect();
        self.selector_domains.insert(canonical, domains.clone());
        domains
    }

    fn add_set(&mut self, source: IpSetSource, mut members: Vec<IpNet>) -> IpSetId {
        members.sort();
        members.dedup();
        let key = (source, members);
        if let Some(id) = self.ip_set_by_key.get(&key) {
            return *id;
        }
        let id = IpSetId::try_from(self.ip_sets.len()).expect("fewer than 2^32 IP sets");
        let lookup = NetworkLookup::new(&key.1);
        self.ip_sets.push(IpSet {
            id,
            source: key.0.clone(),
            members: key.1.clone(),
            lookup,
            endpoint_slots: self.slots.slots_in(&key.1),
        });
        self.ip_set_by_key.insert(key, id);
        id
    }

    fn nets(&mut self, nets: &[sluice_api::values::Cidr]) -> IpSetId {
        self.add_set(IpSetSource::Nets, nets.iter().map(|net| net.0).collect())
    }

    fn selector(&mut self, selector: &Selector) -> IpSetId {
        let canonical = selector.canonical();
        if let Some(id) = self.selector_sets.get(&canonical) {
            return *id;
        }
        let members: Vec<IpNet> = self
            .entities
            .iter()
            .filter(|entity| selector.matches(&entity.labels))
            .flat_map(|entity| entity.networks.iter().copied())
            .collect();
        let id = self.add_set(IpSetSource::Selector(canonical.clone()), members);
        self.selector_sets.insert(canonical, id);
        id
    }

    fn ports(&mut self, ports: &[Port], selector: &Selector) -> PortMatch {
        let mut port_match = PortMatch::default();
        for port in ports {
            match port {
                Port::Range { low, high } => port_match.ranges.push((*low, *high)),
                Port::Named(name) => port_match.named.push(self.named_port(name, selector)),
            }
        }
        port_match.ranges = merge_port_ranges(std::mem::take(&mut port_match.ranges));
        port_match
    }

    fn named_port(&mut self, port_name: &str, selector: &Selector) -> NamedPortSetId {
        let key = (selector.canonical(), port_name.to_string());
        if let Some(id) = self.named_port_by_key.get(&key) {
            return *id;
        }
        let mut members: Vec<(std::net::IpAddr, u8, u16)> = self
            .entities
            .iter()
            .filter(|entity| entity.kind == EntityKind::Endpoint && selector.matches(&entity.labels))
            .flat_map(|entity| {
                entity
                    .named_ports
                    .iter()
                    .filter(|(name, _, _)| name == port_name)
                    .flat_map(|(_, protocol, port)| {
                        entity
                            .networks
                            .iter()
                            .map(move |network| (network.addr(), *protocol, *port))
                    })
            })
            .collect();
        members.sort();
        members.dedup();
        let id =
            NamedPortSetId::try_from(self.named_port_sets.len()).expect("fewer than 2^32 named-port sets");
        self.named_port_sets.push(NamedPortSet {
            id,
            selector: key.0.clone(),
            port_name: port_name.to_string(),
            lookup: members.iter().copied().collect(),
            members,
        });
        self.named_port_by_key.insert(key, id);
        id
    }
}

struct TierInfo {
    order: Option<f64>,
    default_action: Action,
}

fn tier_table(resources: &ResourceSet) -> BTreeMap<String, TierInfo> {
    let mut tiers = BTreeMap::new();
    tiers.insert(
        DEFAULT_TIER.to_string(),
        TierInfo {
            order: Some(DEFAULT_TIER_ORDER),
            default_action: Action::Deny,
        },
    );
    for tier in &resources.tiers {
        let order = if tier.metadata.name == DEFAULT_TIER {
            Some(DEFAULT_TIER_ORDER)
        } else {
            tier.spec.order
        };
        tiers.insert(
            tier.metadata.name.clone(),
            TierInfo {
                order,
                default_action: tier.spec.default_action.unwrap_or(Action::Deny),
            },
        );
    }
    tiers
}

/// Order is a float; absent sorts after every number; ties by name.
fn order_key(order: Option<f64>) -> f64 {
    order.unwrap_or(f64::INFINITY)
}

fn order_into_tiers(
    policies: &[PolicyId],
    definitions: &[PolicyDefinition],
    tiers: &BTreeMap<String, TierInfo>,
) -> DirectionProgram {
    let mut by_tier: BTreeMap<&str, Vec<PolicyId>> = BTreeMap::new();
    for &id in policies {
        by_tier
            .entry(definitions[id].reference.tier.as_str())
            .or_default()
            .push(id);
    }
    let mut programs: Vec<(f64, TierProgram)> = by_tier
        .into_iter()
        .map(|(name, mut ids)| {
            ids.sort_by(|left, right| {
                let (left, right) = (&definitions[*left], &definitions[*right]);
                order_key(left.order)
                    .total_cmp(&order_key(right.order))
                    .then_with(|| left.sort_name.cmp(&right.sort_name))
            });
            let info = tiers.get(name);
            (
                order_key(info.and_then(|info| info.order)),
                TierProgram {
                    name: name.to_string(),
                    default_action: info.map(|info| info.default_action).unwrap_or(Action::Deny),
                    policies: ids,
                },
            )
        })
        .collect();
    programs.sort_by(|left, right| {
        left.0
            .total_cmp(&right.0)
            .then_with(|| left.1.name.cmp(&right.1.name))
    });
    DirectionProgram {
        tiers: programs.into_iter().map(|(_, program)| program).collect(),
    }
}
