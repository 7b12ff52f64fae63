//! Cross-object rules under concurrent writers: eight `sluice apply` processes each add an
//! IPPool over the same range, and exactly one pool may remain (the overlap check's read and
//! the write are one guarded transaction); a tier with policies cannot be deleted.

use std::process::{Command, Output, Stdio};

use sluice_store::testing::EtcdCluster;

const WRITERS: usize = 8;
const ROUNDS: usize = 10;

fn sluice(address: &str, arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(arguments)
        .env("SLUICE_DATASTORE", address)
        .stdin(Stdio::null())
        .output()
        .expect("the sluice binary runs")
}

fn pool_manifest(directory: &std::path::Path, round: usize, writer: usize) -> String {
    let path = directory.join(format!("pool-{round}-{writer}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool-{round}-{writer}}}\n\
             spec: {{cidr: 10.{round}.0.0/16}}\n"
        ),
    )
    .expect("write manifest");
    path.display().to_string()
}

fn pools(address: &str, round: usize) -> Vec<String> {
    let output = sluice(address, &["get", "ippool"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&format!("pool-{round}-")))
        .map(str::to_string)
        .collect()
}

/// Each round: eight processes started together, each adding an overlapping pool.
fn one_pool_per_range(address: &str) {
    let directory = tempfile::tempdir().expect("temporary directory");
    for round in 0..ROUNDS {
        let manifests: Vec<String> = (0..WRITERS)
            .map(|writer| pool_manifest(directory.path(), round, writer))
            .collect();
        let children: Vec<_> = manifests
            .iter()
            .map(|manifest| {
                Command::new(env!("CARGO_BIN_EXE_sluice"))
                    .args(["apply", "-f", manifest])
                    .env("SLUICE_DATASTORE", address)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start sluice apply")
            })
            .collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .map(|child| child.wait_with_output().expect("sluice apply ends"))
            .collect();
        let succeeded = outputs.iter().filter(|output| output.status.success()).count();
        for output in outputs.iter().filter(|output| !output.status.success()) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("overlaps"), "a refused apply says why: {stderr}");
        }
        let stored = pools(address, round);
        assert_eq!(stored.len(), 1, "round {round}: pools {stored:?} over one range");
        assert_eq!(succeeded, 1, "round {round}: {succeeded} applies succeeded");
    }
}

#[test]
fn concurrent_applies_leave_one_pool_per_range_embedded() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let address = format!("file://{}", directory.path().join("store.db").display());
    one_pool_per_range(&address);
}

#[test]
fn concurrent_applies_leave_one_pool_per_range_etcd() {
    let cluster = EtcdCluster::start(1);
    let endpoints: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|endpoint| endpoint.trim_start_matches("http://").to_string())
        .collect();
    one_pool_per_range(&format!("etcd://{}", endpoints.join(",")));
}

#[test]
fn a_tier_with_policies_cannot_be_deleted() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let address = format!("file://{}", directory.path().join("store.db").display());
    let manifest = directory.path().join("tier.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: security.block}\n\
         spec: {tier: security, selector: all(), types: [Egress]}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: security.local, namespace: prod}\n\
         spec: {tier: security, selector: all(), types: [Egress]}\n",
    )
    .expect("write manifest");
    let applied = sluice(&address, &["apply", "-f", &manifest.display().to_string()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let refused = sluice(&address, &["delete", "tier", "security"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "deleting a tier with policies succeeded"
    );
    assert!(
        stderr.contains("tier security still has 2 policies")
            && stderr.contains("globalnetworkpolicy security.block")
            && stderr.contains("networkpolicy prod/security.local"),
        "{stderr}"
    );
    let tiers = sluice(&address, &["get", "tier"]);
    assert!(String::from_utf8_lossy(&tiers.stdout).contains("security"));

    for (kind, name, namespace) in [
        ("globalnetworkpolicy", "security.block", None),
        ("networkpolicy", "security.local", Some("prod")),
    ] {
        let mut arguments = vec!["delete", kind, name];
        if let Some(namespace) = namespace {
            arguments.extend(["-n", namespace]);
        }
        let deleted = sluice(&address, &arguments);
        assert!(
            deleted.status.success(),
            "{}",
            String::from_utf8_lossy(&deleted.stderr)
        );
    }
    let deleted = sluice(&address, &["delete", "tier", "security"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
}
