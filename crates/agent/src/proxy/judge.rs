//! Decisions from the one evaluator: a connection's flow with a request (or a ClientHello's
//! server name) as its L7 view, evaluated on the IR the agent handed the proxy. A failed L7
//! match is a rule that did not match, so evaluation goes on as `explain` says it does.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use sluice_api::values::PolicyType;
use sluice_dataplane::{IpFamily, domain_set_name};
use sluice_nft::{ElementKey, Family, SetElementWriter, Table};
use sluice_policy::ir::{DomainSet, DomainSetId};
use sluice_policy::{Dataplane, Decision, Flow, FlowL7, HttpRequest, TraceStep};
use sluice_proxy::RuleIdentity;
use sluice_proxy::http::{Judgement, Request, RequestJudge};

/// What the DNS learner taught the kernel: whether a domain set's kernel set holds the pair
/// (endpoint address, destination address).
pub(crate) trait LearnedPairs: std::fmt::Debug + Send + Sync {
    fn holds(&self, set: &DomainSet, source: IpAddr, destination: IpAddr) -> bool;
}

/// The kernel's domain sets in this namespace (`inet sluice`, `<set>_v4|_v6`), read over
/// netlink through the nft crate when asked: only for connections that name a server some
/// domain set of the endpoint matches.
#[derive(Debug)]
pub(crate) struct KernelPairs;

impl LearnedPairs for KernelPairs {
    fn holds(&self, set: &DomainSet, source: IpAddr, destination: IpAddr) -> bool {
        let name = domain_set_name(&set.name, IpFamily::of(destination));
        let table = Table::new(Family::Inet, sluice_dataplane::TABLE_NAME);
        let wanted = ElementKey::Pair(source, destination);
        match SetElementWriter::open(None).and_then(|mut reader| reader.list(&table, &name)) {
            Ok(elements) => elements.iter().any(|element| element.key == wanted),
            Err(error) => {
                tracing::warn!(set = %name, %error, "reading a domain set: the name is not vouched for");
                false
            }
        }
    }
}

/// A connection's flow and the IR it is judged on.
#[derive(Debug)]
pub(crate) struct FlowJudge {
    dataplane: Arc<Dataplane>,
    flow: Flow,
    pairs: Arc<dyn LearnedPairs>,
    /// The domain sets of the flow's source endpoint, by id: the IR is fixed for the
    /// connection, so they are found once, not per request.
    domain_sets: Vec<DomainSetId>,
    /// The last name the kernel vouched for on this connection. A learned pair is checked
    /// when a connection first names a server, as the kernel checks it on a connection's first
    /// packet; later requests naming the same server are not read from the kernel again.
    vouched_name: Mutex<Option<String>>,
}

/// The evaluator's answer for one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed(RuleIdentity),
    /// Denied; the L7 rules that were tried and did not match.
    Denied(Vec<RuleIdentity>),
}

impl FlowJudge {
    pub fn new(dataplane: Arc<Dataplane>, flow: Flow, pairs: Arc<dyn LearnedPairs>) -> FlowJudge {
        let domain_sets = dataplane
            .endpoint_by_address(flow.source)
            .map(|endpoint| {
                dataplane
                    .domain_sets_for(endpoint.id)
                    .into_iter()
                    .map(|set| set.id)
                    .collect()
            })
            .unwrap_or_default();
        FlowJudge {
            dataplane,
            flow,
            pairs,
            domain_sets,
            vouched_name: Mutex::new(None),
        }
    }

    /// The name the connection addresses (a TLS server name, an HTTP host) as the flow's
    /// destination name, when the kernel vouches for it: every domain set of the endpoint that
    /// matches the name holds the pair (endpoint, destination), that is, the endpoint itself
    /// resolved the destination address from a name those sets cover. A name no set matches,
    /// or one whose address was learned for none of them, is no name: domain rules then do not
    /// match (as in the kernel, which matches them only by the learned pair).
    fn vouched<'a>(&self, name: Option<&'a str>) -> Option<&'a str> {
        let name = name?;
        let mut matching = self
            .domain_sets
            .iter()
            .map(|id| &self.dataplane.domain_sets[*id as usize])
            .filter(|set| set.matching(name).is_some())
            .peekable();
        matching.peek()?;
        let mut remembered = self
            .vouched_name
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if remembered.as_deref() == Some(name) {
            return Some(name);
        }
        if !matching.all(|set| self.pairs.holds(set, self.flow.source, self.flow.destination)) {
            return None;
        }
        *remembered = Some(name.to_string());
        Some(name)
    }

    /// The verdict on the flow with `view`; `name` is the name the connection addresses.
    ///
    /// Every request is evaluated untraced (no step is recorded or allocated); only a denial
    /// is evaluated again with its trace, to name the L7 rules that were tried. The evaluator is
    /// deterministic on the same IR, so both evaluations reach the same verdict.
    pub fn decide(&self, view: &FlowL7, name: Option<&str>) -> Outcome {
        let domain = self.vouched(name);
        let verdict = self.dataplane.evaluate_with_l7(&self.flow, domain, Some(view));
        if verdict.allowed {
            let decision = verdict.egress.map(|(_, decision)| decision);
            return Outcome::Allowed(self.identity_of(decision));
        }
        let mut egress = Vec::new();
        let mut ingress = Vec::new();
        self.dataplane
            .evaluate_traced(&self.flow, domain, Some(view), &mut egress, &mut ingress);
        let tried = egress
            .iter()
            .filter_map(|step| match step {
                TraceStep::L7NotMatched {
                    policy, rule_index, ..
                } => Some(self.rule_identity(*policy, *rule_index)),
                _ => None,
            })
            .collect();
        Outcome::Denied(tried)
    }

    fn rule_identity(&self, policy: usize, rule_index: usize) -> RuleIdentity {
        let compiled = &self.dataplane.policies[policy];
        RuleIdentity {
            policy: compiled.reference.to_string(),
            rule_index: compiled.rules(PolicyType::Egress)[rule_index].origin_index,
        }
    }

    /// What allowed the flow: a rule, or (no rule decided) the namespace profile.
    fn identity_of(&self, decision: Option<Decision>) -> RuleIdentity {
        match decision {
            Some(Decision::Rule {
                policy, rule_index, ..
            }) => self.rule_identity(policy, rule_index),
            _ => RuleIdentity {
                policy: "the namespace profile".to_string(),
                rule_index: 0,
            },
        }
    }
}

impl RequestJudge for FlowJudge {
    fn judge(&self, request: &Request) -> Judgement {
        let view = FlowL7 {
            http: Some(HttpRequest {
                method: request.method.clone(),
                path: request.path.clone(),
                host: request.host.clone(),
            }),
            server_name: None,
        };
        match self.decide(&view, request.host.as_deref()) {
            Outcome::Allowed(rule) => {
                tracing::debug!(
                    source = %self.flow.source, destination = %self.flow.destination,
                    method = %request.method, path = %request.path, host = ?request.host,
                    allowed_by = %rule, "L7 request allowed"
                );
                Judgement::Allow(rule)
            }
            Outcome::Denied(tried) => {
                tracing::info!(
                    source = %self.flow.source, destination = %self.flow.destination,
                    method = %request.method, path = %request.path, host = ?request.host,
                    tried = ?tried.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "L7 request denied"
                );
                Judgement::Deny(tried)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {ports: [80]}
      http: {methods: [GET]}
    - action: Allow
      protocol: TCP
      destination: {ports: [443]}
      tls: {serverNames: [api.partner.example]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: shop, labels: {app: web}}
spec: {node: node-1, pod: web, endpoint: eth0, interfaceName: slcweb, ipNetworks: [10.0.0.5/32]}
"#;

    /// Pairs the test says the kernel holds, by domain set pattern list.
    #[derive(Debug, Default)]
    struct Pairs(Vec<(String, IpAddr, IpAddr)>);

    impl LearnedPairs for Pairs {
        fn holds(&self, set: &DomainSet, source: IpAddr, destination: IpAddr) -> bool {
            let patterns: Vec<String> = set.patterns.iter().map(ToString::to_string).collect();
            self.0.iter().any(|(pattern, from, to)| {
                patterns.contains(pattern) && *from == source && *to == destination
            })
        }
    }

    fn judge(port: u16) -> FlowJudge {
        judge_with(MANIFESTS, port, Pairs::default())
    }

    fn judge_with(manifests: &str, port: u16, pairs: Pairs) -> FlowJudge {
        let set = sluice_api::load_str("judge.yaml", manifests).unwrap();
        FlowJudge::new(
            Arc::new(sluice_policy::compile(&set)),
            Flow {
                source: "10.0.0.5".parse().unwrap(),
                destination: "203.0.113.10".parse().unwrap(),
                protocol: 6,
                source_port: Some(40_000),
                destination_port: Some(port),
                icmp_type: None,
                icmp_code: None,
            },
            Arc::new(pairs),
        )
    }

    fn request(method: &str) -> FlowL7 {
        FlowL7 {
            http: Some(HttpRequest {
                method: method.into(),
                path: "/".into(),
                host: Some("api.partner.example".into()),
            }),
            server_name: None,
        }
    }

    #[test]
    fn the_evaluator_decides_and_names_the_rules() {
        let rule0 = RuleIdentity {
            policy: "NetworkPolicy shop/web".into(),
            rule_index: 0,
        };
        assert_eq!(
            judge(80).decide(&request("GET"), None),
            Outcome::Allowed(rule0.clone())
        );
        assert_eq!(
            judge(80).decide(&request("POST"), None),
            Outcome::Denied(vec![rule0])
        );
        let name = |name: &str| FlowL7 {
            http: None,
            server_name: Some(name.into()),
        };
        assert!(matches!(
            judge(443).decide(&name("api.partner.example"), None),
            Outcome::Allowed(RuleIdentity { rule_index: 1, .. })
        ));
        assert!(matches!(
            judge(443).decide(&name("other.example"), None),
            Outcome::Denied(_)
        ));
        // A request on the TLS rule's port, or a name on the HTTP rule's: no L7 rule holds.
        assert!(matches!(
            judge(443).decide(&request("GET"), None),
            Outcome::Denied(_)
        ));
        assert!(matches!(
            judge(80).decide(&name("api.partner.example"), None),
            Outcome::Denied(_)
        ));
    }

    const BY_NAME: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {domains: [x.example]}
    - action: Allow
      protocol: TCP
      destination: {domains: ['*.example'], ports: [443]}
      tls: {matchDomains: true}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: shop, labels: {app: web}}
spec: {node: node-1, pod: web, endpoint: eth0, interfaceName: slcweb, ipNetworks: [10.0.0.5/32]}
"#;

    #[test]
    fn a_server_name_counts_as_the_destination_name_only_where_the_kernel_learned_the_address() {
        let (pod, address) = ("10.0.0.5".parse().unwrap(), "203.0.113.10".parse().unwrap());
        // The pod resolved api.example to the address: only the `*.example` set holds it.
        let name = |name: &str| FlowL7 {
            http: None,
            server_name: Some(name.into()),
        };
        let judge = judge_with(BY_NAME, 443, Pairs(vec![("*.example".to_string(), pod, address)]));
        assert!(matches!(
            judge.decide(&name("api.example"), Some("api.example")),
            Outcome::Allowed(RuleIdentity { rule_index: 1, .. })
        ));
        // x.example was never resolved to this address: its set lacks the pair, so the name
        // is no name, and neither rule admits it (the first would by name alone).
        assert!(matches!(
            judge.decide(&name("x.example"), Some("x.example")),
            Outcome::Denied(_)
        ));
        // A name outside every set, and no pair at all.
        assert!(matches!(
            judge.decide(&name("evil.test"), Some("evil.test")),
            Outcome::Denied(_)
        ));
        let unlearned = judge_with(BY_NAME, 443, Pairs::default());
        assert!(matches!(
            unlearned.decide(&name("api.example"), Some("api.example")),
            Outcome::Denied(_)
        ));
    }

    /// Counts the kernel reads, and holds the pair only once `learned` is set.
    #[derive(Debug, Default)]
    struct CountingPairs {
        reads: std::sync::atomic::AtomicUsize,
        learned: std::sync::atomic::AtomicBool,
    }

    impl LearnedPairs for CountingPairs {
        fn holds(&self, _set: &DomainSet, _source: IpAddr, _destination: IpAddr) -> bool {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.learned.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn a_vouched_name_is_read_from_the_kernel_once_per_connection_and_a_refused_one_every_time() {
        use std::sync::atomic::Ordering;
        let set = sluice_api::load_str("judge.yaml", BY_NAME).unwrap();
        let pairs = Arc::new(CountingPairs::default());
        let flow = judge_with(BY_NAME, 443, Pairs::default()).flow;
        let judge = FlowJudge::new(Arc::new(sluice_policy::compile(&set)), flow, pairs.clone());
        let name = |name: &str| FlowL7 {
            http: None,
            server_name: Some(name.into()),
        };
        // Not learned yet: denied, and asked again next time (the pod may resolve it later).
        for reads in 1..=2 {
            assert!(matches!(
                judge.decide(&name("api.example"), Some("api.example")),
                Outcome::Denied(_)
            ));
            assert_eq!(pairs.reads.load(Ordering::SeqCst), reads);
        }
        pairs.learned.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            assert!(matches!(
                judge.decide(&name("api.example"), Some("api.example")),
                Outcome::Allowed(RuleIdentity { rule_index: 1, .. })
            ));
        }
        assert_eq!(pairs.reads.load(Ordering::SeqCst), 3);
        // Another name is read for itself; a name no set matches is never read.
        assert!(matches!(
            judge.decide(&name("b.example"), Some("b.example")),
            Outcome::Allowed(_)
        ));
        assert_eq!(pairs.reads.load(Ordering::SeqCst), 4);
        assert!(matches!(
            judge.decide(&name("evil.test"), Some("evil.test")),
            Outcome::Denied(_)
        ));
        assert_eq!(pairs.reads.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn the_untraced_verdict_agrees_with_the_traced_one() {
        // Allowed and denied requests, each judged as the proxy does (untraced first) and by
        // the traced evaluation `explain` runs: the same verdict and the same deciding rule.
        for (method, port) in [("GET", 80), ("POST", 80), ("GET", 443), ("DELETE", 8080)] {
            let judge = judge(port);
            let view = request(method);
            let (mut egress, mut ingress) = (Vec::new(), Vec::new());
            let traced =
                judge
                    .dataplane
                    .evaluate_traced(&judge.flow, None, Some(&view), &mut egress, &mut ingress);
            let untraced = judge.dataplane.evaluate_with_l7(&judge.flow, None, Some(&view));
            assert_eq!(traced.allowed, untraced.allowed, "{method} on {port}");
            assert_eq!(
                format!("{:?}", traced.egress),
                format!("{:?}", untraced.egress),
                "{method} on {port}"
            );
            match judge.decide(&view, None) {
                Outcome::Allowed(_) => assert!(traced.allowed),
                Outcome::Denied(_) => assert!(!traced.allowed),
            }
        }
    }
}
