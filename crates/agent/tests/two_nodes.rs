//! Two agents of two nodes on one etcd, each programming its own node's kernel (a network
//! namespace made for the test): a policy applied once is enforced on both.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_agent::{Agent, AgentConfig, Metrics};
use sluice_nft::CommandBackend;
use sluice_store::testing::EtcdCluster;
use support::{examples, load, put_all, status, wait_for, workload_endpoints};

struct Namespace(String);

impl Namespace {
    fn new(node: &str) -> Namespace {
        let name = format!("sluiceag-{node}-{}", std::process::id());
        assert!(
            Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success(),
            "needs root"
        );
        Namespace(name)
    }

    fn ruleset(&self) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list", "ruleset"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

#[test]
fn a_policy_applied_once_is_enforced_on_both_nodes() {
    let etcd = EtcdCluster::start(1);
    let store = etcd.store();
    let examples = examples();
    let endpoints = workload_endpoints(&examples);
    put_all(store.as_ref(), examples.clone().into_resources());
    put_all(store.as_ref(), endpoints);

    let stop = Arc::new(AtomicBool::new(false));
    let mut namespaces = Vec::new();
    let mut runners = Vec::new();
    for node in ["node-1", "node-2"] {
        let namespace = Namespace::new(node);
        let backend = CommandBackend::in_namespace(&namespace.0).expect("nft is installed");
        let mut agent = Agent::new(AgentConfig::new(node), etcd.store(), backend, Metrics::new());
        let stop = stop.clone();
        runners.push(std::thread::spawn(move || agent.run_until(&stop)));
        namespaces.push(namespace);
    }
    let in_sync = |node: &str, revision: i64| {
        status(store.as_ref(), node)
            .is_some_and(|status| status.in_sync && status.programmed_revision >= revision)
    };
    let start = store.revision().unwrap();
    wait_for("both nodes programmed", || {
        in_sync("node-1", start) && in_sync("node-2", start)
    });
    for namespace in &namespaces {
        assert!(namespace.ruleset().contains("table inet sluice"));
        assert!(!namespace.ruleset().contains("192.0.2.99"));
    }

    put_all(
        store.as_ref(),
        load(
            "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: block-one-host}\nspec:\n  tier: security\n  order: 1\n  types: [Egress]\n  egress:\n    - {action: Deny, destination: {nets: [192.0.2.99/32]}}\n",
        ),
    );
    let applied = store.revision().unwrap();
    wait_for("the policy on both nodes", || {
        in_sync("node-1", applied) && in_sync("node-2", applied)
    });
    for namespace in &namespaces {
        let ruleset = namespace.ruleset();
        assert!(
            ruleset.contains("ip daddr 192.0.2.99 drop"),
            "{} lacks the policy:\n{ruleset}",
            namespace.0
        );
    }

    stop.store(true, Ordering::Relaxed);
    for runner in runners {
        runner.join().unwrap();
    }
}
