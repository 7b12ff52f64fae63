//! The benchmark's cluster as manifests: one client pod that 1,000 policies select with egress
//! rules the benchmark flow never matches, then one policy that allows it through a
//! GlobalNetworkSet of 100,000 networks.

use std::collections::BTreeSet;
use std::fmt::Write as _;

pub const NAMESPACE: &str = "bench";
pub const POD: &str = "client";
pub const POD_ADDRESS: &str = "10.200.0.2";
pub const NODE_ADDRESS: &str = "10.200.0.1";
pub const POOL: &str = "10.200.0.0/16";
/// The outside host; its /24 is the one network of the set the flow needs.
pub const OUTSIDE_ADDRESS: &str = "198.51.100.2";
pub const OUTSIDE_GATEWAY: &str = "198.51.100.1";
pub const OUTSIDE_NETWORK: &str = "198.51.100.0/24";

/// Shape of the policy load.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Policies that select the pod, each with one egress rule the flow does not match.
    pub policies: usize,
    /// Random /24s in the allowed network set, besides the outside host's network.
    pub networks: usize,
}

/// xorshift64*: deterministic, dependency-free.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `count` distinct random /24s outside the lab's ranges (10/8, 198/8 and the 192.0/16 of
/// the non-matching rules) and outside special ranges (0/8, 127/8, 169.254/16, multicast).
pub fn random_networks(count: usize) -> Vec<String> {
    let mut random = Random(7);
    let mut networks = BTreeSet::new();
    while networks.len() < count {
        let prefix = (random.next_u64() >> 40) as u32 & 0x00ff_ffff;
        let [_, first, second, third] = prefix.to_be_bytes();
        if matches!(first, 0 | 10 | 127 | 169 | 192 | 198) || first >= 224 {
            continue;
        }
        networks.insert((first, second, third));
    }
    networks
        .into_iter()
        .map(|(first, second, third)| format!("{first}.{second}.{third}.0/24"))
        .collect()
}

/// The manifests, as a user would write them.
pub fn manifests(shape: &Shape) -> String {
    let mut text = String::new();
    writeln!(
        text,
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: {POD}\n  namespace: {NAMESPACE}\n  labels: {{app: bench-client}}\n\
         spec:\n  nodeName: bench-node\n  containers: [{{name: main}}]\nstatus: {{podIP: {POD_ADDRESS}}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: bench-pool}}\n\
         spec: {{cidr: {POOL}, natOutgoing: false}}\n---"
    )
    .unwrap();
    let mut networks = random_networks(shape.networks);
    networks.push(OUTSIDE_NETWORK.to_string());
    writeln!(
        text,
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: partners\n  labels: {{role: bench-partner}}\n\
         spec:\n  nets: [{}]\n---",
        networks.join(", ")
    )
    .unwrap();
    // Every policy applies to the pod and none allows the flow: the packet of a new
    // connection meets all of them, in order, before the one that allows it. Half are
    // namespaced, half global, like a cluster's mix of team and platform policy.
    for index in 0..shape.policies {
        let (kind, namespace) = if index % 2 == 0 {
            ("NetworkPolicy", format!(", namespace: {NAMESPACE}"))
        } else {
            ("GlobalNetworkPolicy", String::new())
        };
        writeln!(
            text,
            "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{name: rule-{index:04}{namespace}}}\n\
             spec:\n  order: {}\n  selector: app == 'bench-client'\n  types: [Egress]\n  egress:\n\
             \x20   - action: Allow\n      protocol: TCP\n      destination: {{nets: [192.0.{}.{}/32], ports: [{}]}}\n---",
            index + 1,
            index / 256,
            index % 256,
            1000 + index
        )
        .unwrap();
    }
    writeln!(
        text,
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: allow-partners}}\n\
         spec:\n  order: {}\n  selector: app == 'bench-client'\n  types: [Egress]\n  egress:\n\
         \x20   - action: Allow\n      protocol: TCP\n      destination: {{selector: role == 'bench-partner'}}",
        shape.policies + 1000
    )
    .unwrap();
    text
}
