//! A deterministic synthetic cluster for benchmarks: namespaces, pods, network sets, tiers and
//! policies of every kind, written as manifests so that the benchmark measures the same path
//! users take (load, validate, compile).

use std::fmt::Write as _;

/// Shape of the synthetic cluster.
#[derive(Debug)]
pub struct Shape {
    pub namespaces: usize,
    pub pods_per_namespace: usize,
    pub policies: usize,
    pub global_network_sets: usize,
    pub nets_per_set: usize,
}

/// xorshift64*: deterministic, dependency-free.
#[derive(Debug)]
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Random(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

pub fn pod_address(namespace: usize, pod: usize) -> String {
    format!("10.{}.{}.{}", 64 + namespace / 256, namespace % 256, pod + 1)
}

/// Manifests: 10% Kubernetes NetworkPolicies, 5% GlobalNetworkPolicies across three tiers, the
/// rest namespaced Calico NetworkPolicies.
pub fn manifests(shape: &Shape) -> String {
    let mut random = Random::new(0x5eed);
    let mut text = String::new();
    for tier in ["security", "platform"] {
        let order = if tier == "security" { 100 } else { 200 };
        writeln!(text, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {tier}}}\nspec: {{order: {order}}}\n---").unwrap();
    }
    for namespace in 0..shape.namespaces {
        writeln!(
            text,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{namespace:03}\n  labels: {{team: team-{}, environment: {}}}\n---",
            namespace % 10,
            if namespace % 2 == 0 { "prod" } else { "staging" }
        )
        .unwrap();
        for pod in 0..shape.pods_per_namespace {
            writeln!(
                text,
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{pod:03}\n  namespace: ns-{namespace:03}\n  labels: {{app: app-{}, role: {}}}\nspec:\n  nodeName: node-{}\n  containers:\n    - name: main\n      ports: [{{name: http, containerPort: 8080}}]\nstatus: {{podIP: {}}}\n---",
                pod % 5,
                if pod % 2 == 0 { "frontend" } else { "backend" },
                pod % 2,
                pod_address(namespace, pod)
            )
            .unwrap();
        }
    }
    for set in 0..shape.global_network_sets {
        let nets: Vec<String> = (0..shape.nets_per_set)
            .map(|_| {
                format!(
                    "{}.{}.{}.0/24",
                    100 + random.below(100),
                    random.below(256),
                    random.below(256)
                )
            })
            .collect();
        writeln!(
            text,
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: set-{set:03}\n  labels: {{feed: feed-{}}}\nspec:\n  nets: [{}]\n---",
            set % 10,
            nets.join(", ")
        )
        .unwrap();
    }
    for index in 0..shape.policies {
        let namespace = index % shape.namespaces;
        let app = random.below(5);
        let peer_app = random.below(5);
        let port = 8000 + random.below(100);
        match index % 20 {
            0 | 1 => {
                writeln!(
                    text,
                    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: knp-{index:05}, namespace: ns-{namespace:03}}}\nspec:\n  podSelector: {{matchLabels: {{app: app-{app}}}}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n    - from: [{{namespaceSelector: {{matchLabels: {{team: team-{}}}}}, podSelector: {{matchLabels: {{app: app-{peer_app}}}}}}}]\n      ports: [{{port: http}}, {{port: {port}}}]\n  egress:\n    - to: [{{ipBlock: {{cidr: 172.16.0.0/12, except: [172.16.{}.0/24]}}}}]\n      ports: [{{port: 443}}]\n---",
                    random.below(10),
                    random.below(256)
                )
                .unwrap();
            }
            2 => {
                let tier = ["security", "platform", "default"][random.below(3)];
                writeln!(
                    text,
                    "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: gnp-{index:05}}}\nspec:\n  tier: {tier}\n  order: {}\n  selector: role == 'frontend' && app == 'app-{app}'\n  types: [Egress]\n  egress:\n    - action: Deny\n      destination: {{selector: feed == 'feed-{}'}}\n    - action: Pass\n---",
                    random.below(1000),
                    random.below(10)
                )
                .unwrap();
            }
            _ => {
                writeln!(
                    text,
                    "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: np-{index:05}, namespace: ns-{namespace:03}}}\nspec:\n  order: {}\n  selector: app == 'app-{app}'\n  ingress:\n    - action: Allow\n      protocol: TCP\n      source: {{selector: app == 'app-{peer_app}'}}\n      destination: {{ports: [{port}]}}\n  egress:\n    - action: Allow\n      protocol: TCP\n      destination: {{selector: app == 'app-{peer_app}', ports: ['{port}:{}']}}\n    - action: Allow\n      protocol: UDP\n      destination: {{namespaceSelector: team == 'team-{}', ports: [53]}}\n    - action: Deny\n      destination: {{nets: [{}.{}.0.0/16]}}\n---",
                    random.below(2000),
                    port + 10,
                    random.below(10),
                    20 + random.below(200),
                    random.below(256)
                )
                .unwrap();
            }
        }
    }
    text
}
