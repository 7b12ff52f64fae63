//! The gateway core's cost: one node's plan in a cluster of 3,020 pods, of which 1,000 clients
//! are on the node (10 namespaces of 100, each namespace picking its own two of 20 gateways
//! with `maxNextHops: 1`), 2,000 clients on other nodes and 20 gateways on 4 nodes. Measured:
//! the first plan, and a recomputation given the previous plan (the agent's steady state, every
//! hop kept). `cargo bench -p sluice-gateway`; `SLUICE_GATEWAY_BENCH_RUNS` sets the runs
//! (default 7); best and median are printed.

use std::collections::BTreeMap;
use std::time::Instant;

use sluice_api::egress::EgressAnnotations;
use sluice_gateway::{GatewayHealth, Inputs, Namespace, Pod, PodId, RouteAction, compute};
use sluice_selector::Selector;

const NAMESPACES: usize = 10;
const CLIENTS_PER_NAMESPACE_PER_NODE: usize = 100;
const CLIENT_NODES: usize = 3;
const GATEWAYS: usize = 20;

fn labels(namespace: &str, extra: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("projectcalico.org/namespace".to_string(), namespace.to_string()),
        ("pcns.projectcalico.org/name".to_string(), namespace.to_string()),
    ]);
    for (key, value) in extra {
        labels.insert(key.to_string(), value.clone());
    }
    labels
}

fn inputs() -> Inputs {
    let mut inputs = Inputs {
        felix_configurations: sluice_api::load_str(
            "felix.yaml",
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {egressIPSupport: EnabledPerNamespace}\n",
        )
        .expect("valid")
        .felix_configurations,
        ..Inputs::default()
    };
    for gateway in 0..GATEWAYS {
        let id = PodId::new("egress", &format!("gateway-{gateway}"));
        inputs.pods.push(Pod {
            id: id.clone(),
            labels: labels("egress", &[("egress-code", format!("code-{}", gateway / 2))]),
            addresses: vec![format!("10.9.0.{}", gateway + 1).parse().expect("an address")],
            node: Some(format!("gateway-node-{}", gateway % 4)),
            annotations: EgressAnnotations::default(),
            health_port: Some(8080),
            deleting: false,
        });
        inputs.health.insert(id, GatewayHealth::Ready);
    }
    for namespace in 0..NAMESPACES {
        let name = format!("team-{namespace}");
        inputs.namespaces.insert(
            name.clone(),
            Namespace {
                name: name.clone(),
                annotations: EgressAnnotations {
                    selector: Some(
                        Selector::parse(&format!("egress-code == 'code-{namespace}'")).expect("a selector"),
                    ),
                    namespace_selector: Some(
                        Selector::parse("projectcalico.org/name == 'egress'").expect("a selector"),
                    ),
                    policy: None,
                    max_next_hops: Some(1),
                },
            },
        );
        for node in 0..CLIENT_NODES {
            for client in 0..CLIENTS_PER_NAMESPACE_PER_NODE {
                let index = (node * NAMESPACES + namespace) * CLIENTS_PER_NAMESPACE_PER_NODE + client;
                inputs.pods.push(Pod {
                    id: PodId::new(&name, &format!("client-{node}-{client}")),
                    labels: labels(&name, &[("app", "client".to_string())]),
                    addresses: vec![
                        format!("10.{}.{}.{}", 1 + index / 65536, (index / 256) % 256, index % 256)
                            .parse()
                            .expect("an address"),
                    ],
                    node: Some(format!("node-{node}")),
                    annotations: EgressAnnotations::default(),
                    health_port: Some(8080),
                    deleting: false,
                });
            }
        }
    }
    inputs
}

fn best_and_median(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[0], samples[samples.len() / 2])
}

fn main() {
    let runs: usize = std::env::var("SLUICE_GATEWAY_BENCH_RUNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(7);
    let inputs = inputs();
    let mut first = Vec::new();
    let mut again = Vec::new();
    let mut plan = None;
    for _ in 0..runs {
        let started = Instant::now();
        let fresh = compute(&inputs, "node-0", None).expect("tables enough");
        first.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let recomputed = compute(&inputs, "node-0", Some(&fresh)).expect("tables enough");
        again.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(recomputed, fresh);
        plan = Some(recomputed);
    }
    let plan = plan.expect("at least one run");
    let hops: usize = plan
        .clients
        .iter()
        .map(|client| match &client.routes[0].action {
            RouteAction::Gateways(hops) => hops.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(plan.clients.len(), NAMESPACES * CLIENTS_PER_NAMESPACE_PER_NODE);
    let (best, median) = best_and_median(&mut first);
    println!(
        "first plan: {} pods, {} clients on the node, {hops} hops: best {best:.1} ms, median {median:.1} ms",
        inputs.pods.len(),
        plan.clients.len()
    );
    let (best, median) = best_and_median(&mut again);
    println!("recomputed with the previous plan: best {best:.1} ms, median {median:.1} ms");
}
