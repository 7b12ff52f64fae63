//! IPAM against the embedded store (a temporary SQLite file).

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::{TempStore, apply, pool, request, with_annotation};
use sluice_ipam::layout::{AFFINITY_PREFIX, BLOCK_PREFIX, HANDLE_PREFIX};
use sluice_ipam::{
    DoubleOwnership, Grouping, IP_ADDRESSES_ANNOTATION, IPV4_POOLS_ANNOTATION, IpamError, workload_handle,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn keys(store: &TempStore, prefix: &str) -> usize {
    store.store.list(prefix).unwrap().0.len()
}

#[test]
fn assign_then_release_by_handle() {
    let store = TempStore::new();
    apply(
        &*store.store,
        &pool("pool-a", "cidr: 10.0.0.0/24\nnatOutgoing: true"),
    );
    let ipam = store.ipam();
    let allocations = ipam.assign(&request("c1.eth0", "node-a", "prod")).unwrap();
    assert_eq!(allocations.len(), 1);
    let allocation = &allocations[0];
    assert!(allocation.block.contains(&allocation.address));
    assert_eq!(allocation.block.prefix_len(), 26);
    assert_eq!(allocation.pool, "pool-a");
    assert!(allocation.nat_outgoing);
    assert_eq!(ipam.allocations_of("c1.eth0").unwrap(), allocations);
    assert_eq!(
        (keys(&store, BLOCK_PREFIX), keys(&store, AFFINITY_PREFIX)),
        (1, 1)
    );

    assert_eq!(ipam.release("c1.eth0").unwrap(), vec![allocation.address]);
    // Release is idempotent.
    assert_eq!(ipam.release("c1.eth0").unwrap(), Vec::<IpAddr>::new());
    assert_eq!(ipam.release("never-assigned.eth0").unwrap(), Vec::<IpAddr>::new());
    assert!(ipam.allocations_of("c1.eth0").unwrap().is_empty());
    assert_eq!(keys(&store, HANDLE_PREFIX), 0);
    // The block stays with its node for the next pod.
    let next = ipam.assign(&request("c2.eth0", "node-a", "prod")).unwrap();
    assert_eq!(next[0].block, allocation.block);
}

#[test]
fn assign_is_idempotent_per_handle() {
    let store = TempStore::new();
    apply(&*store.store, &pool("pool-a", "cidr: 10.0.0.0/24"));
    let ipam = store.ipam();
    let first = ipam.assign(&request("c1.eth0", "node-a", "prod")).unwrap();
    let again = ipam.assign(&request("c1.eth0", "node-a", "prod")).unwrap();
    assert_eq!(first, again);
    assert_eq!(ipam.report().unwrap().allocations.len(), 1);
}

#[test]
fn full_blocks_lead_to_new_blocks_then_exhaustion() {
    let store = TempStore::new();
    apply(&*store.store, &pool("pool-a", "cidr: 10.0.0.0/29\nblockSize: 30"));
    let ipam = store.ipam();
    let mut addresses = BTreeSet::new();
    for index in 0..8 {
        let allocations = ipam
            .assign(&request(&format!("c{index}.eth0"), "node-a", "prod"))
            .unwrap();
        addresses.insert(allocations[0].address);
    }
    assert_eq!(addresses.len(), 8);
    let report = ipam.report().unwrap();
    assert_eq!(report.blocks.len(), 2);
    assert!(
        report
            .blocks
            .iter()
            .all(|block| block.node.as_deref() == Some("node-a"))
    );
    let error = ipam.assign(&request("c8.eth0", "node-a", "prod")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "every eligible pool is exhausted: pool-a (10.0.0.0/29)"
    );
    // A failed assignment leaves no handle behind.
    assert!(ipam.allocations_of("c8.eth0").unwrap().is_empty());
    // Freed addresses are handed out again.
    let freed = ipam.release("c3.eth0").unwrap();
    assert_eq!(
        ipam.assign(&request("c8.eth0", "node-a", "prod")).unwrap()[0].address,
        freed[0]
    );
}

/// With every block claimed, a node borrows from another node's block (Calico's default,
/// non-strict affinity: `findUsableBlock` in libcalico-go/lib/ipam/ipam.go).
#[test]
fn a_node_without_a_free_block_borrows() {
    let store = TempStore::new();
    apply(&*store.store, &pool("pool-a", "cidr: 10.0.0.0/30\nblockSize: 30"));
    let ipam = store.ipam();
    let owner = ipam.assign(&request("c1.eth0", "node-a", "prod")).unwrap();
    let borrower = ipam.assign(&request("c2.eth0", "node-b", "prod")).unwrap();
    assert_eq!(owner[0].block, borrower[0].block);
    let report = ipam.report().unwrap();
    assert_eq!(report.blocks[0].node.as_deref(), Some("node-a"));
    let nodes: Vec<&str> = report
        .allocations
        .iter()
        .map(|record| record.node.as_str())
        .collect();
    assert_eq!(nodes, ["node-a", "node-b"]);
}

#[test]
fn dual_stack_gives_one_address_per_family_v4_first() {
    let store = TempStore::new();
    apply(
        &*store.store,
        &(pool("v6", "cidr: fd00:10::/64") + &pool("v4", "cidr: 10.0.0.0/24")),
    );
    let ipam = store.ipam();
    let allocations = ipam.assign(&request("c1.eth0", "node-a", "prod")).unwrap();
    assert_eq!(allocations.len(), 2);
    assert!(allocations[0].address.is_ipv4());
    assert!(allocations[1].address.is_ipv6());
    assert_eq!(allocations[1].block.prefix_len(), 122);
    assert_eq!(ipam.release("c1.eth0").unwrap().len(), 2);
}

/// `determinePools` (libcalico-go/lib/ipam/ipam.go): selectors pick among Automatic pools.
#[test]
fn pool_selectors_match_node_and_namespace_labels() {
    let store = TempStore::new();
    let manifest = pool("edge", "cidr: 10.1.0.0/24\nnodeSelector: zone == 'edge'")
        + &pool("prod", "cidr: 10.2.0.0/24\nnamespaceSelector: env == 'prod'")
        + "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: edge-1\n  labels:\n    zone: edge\n"
        + "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    env: prod\n";
    apply(&*store.store, &manifest);
    let ipam = store.ipam();
    let edge = ipam.assign(&request("c1.eth0", "edge-1", "dev")).unwrap();
    assert_eq!(edge[0].pool, "edge");
    let shop = ipam.assign(&request("c2.eth0", "core-1", "shop")).unwrap();
    assert_eq!(shop[0].pool, "prod");
    let error = ipam.assign(&request("c3.eth0", "core-1", "dev")).unwrap_err();
    assert!(matches!(error, IpamError::NoEligiblePool { .. }), "{error}");
    assert!(
        error.to_string().contains("pod dev/pod-c3.eth0 on node core-1"),
        "{error}"
    );
}

/// The pool annotations (cni-plugin/pkg/k8s/k8s.go): the pod's wins over the namespace's, and
/// requested pools are used even when Manual or unselected, but never when disabled.
#[test]
fn pool_annotations_on_pod_and_namespace() {
    let store = TempStore::new();
    let manifest = pool("default", "cidr: 10.0.0.0/24")
        + &pool("manual", "cidr: 10.5.0.0/24\nassignmentMode: Manual")
        + &pool("elsewhere", "cidr: 10.6.0.0/24\nnodeSelector: zone == 'nowhere'")
        + &pool("off", "cidr: 10.7.0.0/24\ndisabled: true")
        + "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  annotations:\n    \
           cni.projectcalico.org/ipv4pools: '[\"elsewhere\"]'\n";
    apply(&*store.store, &manifest);
    let ipam = store.ipam();
    assert_eq!(
        ipam.assign(&request("c1.eth0", "node-a", "other")).unwrap()[0].pool,
        "default"
    );
    let manual = with_annotation(
        request("c2.eth0", "node-a", "other"),
        IPV4_POOLS_ANNOTATION,
        "[\"manual\"]",
    );
    assert_eq!(ipam.assign(&manual).unwrap()[0].pool, "manual");
    let by_cidr = with_annotation(
        request("c3.eth0", "node-a", "other"),
        IPV4_POOLS_ANNOTATION,
        "[\"10.5.0.0/24\"]",
    );
    assert_eq!(ipam.assign(&by_cidr).unwrap()[0].pool, "manual");
    assert_eq!(
        ipam.assign(&request("c4.eth0", "node-a", "team")).unwrap()[0].pool,
        "elsewhere"
    );
    let overridden = with_annotation(
        request("c5.eth0", "node-a", "team"),
        IPV4_POOLS_ANNOTATION,
        "[\"manual\"]",
    );
    assert_eq!(ipam.assign(&overridden).unwrap()[0].pool, "manual");
    let disabled = with_annotation(
        request("c6.eth0", "node-a", "other"),
        IPV4_POOLS_ANNOTATION,
        "[\"off\"]",
    );
    assert_eq!(
        ipam.assign(&disabled).unwrap_err().to_string(),
        "the given pool (off) does not exist, or is not enabled"
    );
    let malformed = with_annotation(
        request("c7.eth0", "node-a", "other"),
        IPV4_POOLS_ANNOTATION,
        "manual",
    );
    assert!(matches!(
        ipam.assign(&malformed),
        Err(IpamError::Annotation { .. })
    ));
}

#[test]
fn specific_addresses() {
    let store = TempStore::new();
    apply(
        &*store.store,
        &(pool("pool-a", "cidr: 10.0.0.0/24") + &pool("off", "cidr: 10.7.0.0/24\ndisabled: true")),
    );
    let ipam = store.ipam();
    let wanted = |handle: &str, address: &str| {
        with_annotation(
            request(handle, "node-a", "prod"),
            IP_ADDRESSES_ANNOTATION,
            &format!("[\"{address}\"]"),
        )
    };
    let allocations = ipam.assign(&wanted("c1.eth0", "10.0.0.77")).unwrap();
    assert_eq!(allocations[0].address, ip("10.0.0.77"));
    assert_eq!(allocations[0].block, "10.0.0.64/26".parse().unwrap());
    assert_eq!(
        ipam.assign(&wanted("c2.eth0", "10.0.0.77")).unwrap_err(),
        IpamError::AddressInUse {
            address: ip("10.0.0.77"),
            handle: "c1.eth0".into()
        }
    );
    assert_eq!(
        ipam.assign(&wanted("c3.eth0", "192.0.2.1"))
            .unwrap_err()
            .to_string(),
        "address 192.0.2.1 is in no enabled IP pool"
    );
    assert_eq!(
        ipam.assign(&wanted("c4.eth0", "10.7.0.1")).unwrap_err(),
        IpamError::AddressNotInPool(ip("10.7.0.1"))
    );
    // Automatic assignment on the same node skips the taken address.
    for index in 0..64 {
        let allocations = ipam
            .assign(&request(&format!("auto{index}.eth0"), "node-a", "prod"))
            .unwrap();
        assert_ne!(allocations[0].address, ip("10.0.0.77"));
    }
    assert_eq!(ipam.release("c1.eth0").unwrap(), vec![ip("10.0.0.77")]);
}

#[test]
fn pool_in_use_counts_allocated_addresses() {
    let store = TempStore::new();
    apply(
        &*store.store,
        &(pool("pool-a", "cidr: 10.0.0.0/24") + &pool("pool-b", "cidr: 10.1.0.0/24")),
    );
    let ipam = store.ipam();
    let in_b = with_annotation(
        request("c2.eth0", "node-a", "prod"),
        IPV4_POOLS_ANNOTATION,
        "[\"pool-b\"]",
    );
    ipam.assign(&request("c1.eth0", "node-a", "prod")).unwrap();
    ipam.assign(&in_b).unwrap();
    ipam.assign(&request("c3.eth0", "node-b", "prod")).unwrap();
    assert_eq!(ipam.pool_in_use("pool-a").unwrap(), 2);
    assert_eq!(ipam.pool_in_use("pool-b").unwrap(), 1);
    assert_eq!(
        ipam.pool_in_use("nope"),
        Err(IpamError::PoolNotFound("nope".into()))
    );
    ipam.release("c2.eth0").unwrap();
    assert_eq!(ipam.pool_in_use("pool-b").unwrap(), 0);
}

#[test]
fn report_groups_by_namespace_node_and_pool() {
    let store = TempStore::new();
    apply(&*store.store, &pool("pool-a", "cidr: 10.0.0.0/24\nblockSize: 28"));
    let ipam = store.ipam();
    for (handle, node, namespace) in [
        ("a", "node-1", "prod"),
        ("b", "node-1", "prod"),
        ("c", "node-2", "dev"),
    ] {
        ipam.assign(&request(handle, node, namespace)).unwrap();
    }
    let report = ipam.report().unwrap();
    let by_namespace = report.group_by(Grouping::Namespace);
    assert_eq!(by_namespace.len(), 2);
    assert_eq!(
        (by_namespace[1].name.as_str(), by_namespace[1].allocated),
        ("prod", 2)
    );
    assert_eq!(by_namespace[1].ranges.len(), 1, "{:?}", by_namespace[1].ranges);
    let by_node = report.group_by(Grouping::Node);
    assert_eq!(by_node.len(), 2);
    assert_eq!(by_node[0].blocks.len(), 1);
    let by_pool = report.group_by(Grouping::Pool);
    assert_eq!((by_pool[0].allocated, by_pool[0].blocks.len()), (3, 2));
    let json = serde_json::to_string(&by_pool).unwrap();
    assert!(json.contains("\"namespace\":\"dev\""), "{json}");
}

#[test]
fn check_finds_leaks_and_admin_release_frees_one_address() {
    let store = TempStore::new();
    let handle = workload_handle("abc123", "eth0");
    let endpoint = "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: node--a-k8s-web-eth0\n  \
         namespace: prod\nspec:\n  node: node-a\n  containerID: abc123\n  pod: web\n  endpoint: eth0\n  \
         interfaceName: cali0\n";
    apply(&*store.store, &(pool("pool-a", "cidr: 10.0.0.0/24") + endpoint));
    let ipam = store.ipam();
    ipam.assign(&request(&handle, "node-a", "prod")).unwrap();
    let leaked = ipam.assign(&request("gone.eth0", "node-a", "prod")).unwrap();
    let result = ipam.check().unwrap();
    assert_eq!(result.allocations, 2);
    assert_eq!(result.leaked.len(), 1);
    assert_eq!(result.leaked[0].handle, "gone.eth0");
    assert_eq!(result.leaked[0].address, leaked[0].address);
    assert!(result.doubly_owned.is_empty());

    let released = ipam.release_address(leaked[0].address).unwrap().unwrap();
    assert_eq!(released.handle, "gone.eth0");
    assert_eq!(ipam.release_address(leaked[0].address).unwrap(), None);
    assert!(ipam.allocations_of("gone.eth0").unwrap().is_empty());
    assert!(ipam.check().unwrap().is_clean());
}

#[test]
fn check_finds_a_handle_record_that_disagrees_with_its_block() {
    let store = TempStore::new();
    apply(&*store.store, &pool("pool-a", "cidr: 10.0.0.0/24"));
    let ipam = store.ipam();
    let allocation = ipam.assign(&request("c1.eth0", "node-a", "prod")).unwrap();
    // Damage: the handle record disappears while its address stays allocated.
    store
        .store
        .commit(&[sluice_store::Operation::Delete {
            key: format!("{HANDLE_PREFIX}c1.eth0"),
            condition: sluice_store::Condition::Present,
        }])
        .unwrap();
    let result = ipam.check().unwrap();
    assert_eq!(
        result.doubly_owned,
        vec![DoubleOwnership::HandleMismatch {
            handle: "c1.eth0".into(),
            block: allocation[0].block,
            recorded: 0,
            found: 1
        }]
    );
}

#[test]
fn requests_are_validated() {
    let store = TempStore::new();
    let ipam = store.ipam();
    assert!(matches!(
        ipam.assign(&request("", "node-a", "prod")),
        Err(IpamError::InvalidRequest(_))
    ));
    assert!(matches!(
        ipam.assign(&request("c.eth0", "a/b", "prod")),
        Err(IpamError::InvalidRequest(_))
    ));
    // No pools at all.
    assert!(matches!(
        ipam.assign(&request("c.eth0", "node-a", "prod")),
        Err(IpamError::NoEligiblePool { .. })
    ));
}

/// Eight allocators on eight nodes, each with its own connection to the store file as separate
/// processes would have.
#[test]
fn concurrent_allocators_on_one_file() {
    let store = TempStore::new();
    let path = store.path();
    common::concurrent_allocators(&|| {
        std::sync::Arc::new(sluice_store::EmbeddedStore::open(&path).expect("open the store"))
            as std::sync::Arc<dyn sluice_store::Store>
    });
}
