//! IPAM against etcd: a server started on free loopback ports for each test and killed after.

mod common;

use std::collections::BTreeSet;

use common::{Etcd, apply, pool, request};
use sluice_ipam::Ipam;

#[test]
fn assign_release_and_exhaustion_on_etcd() {
    let etcd = Etcd::start();
    let store = etcd.store();
    apply(&*store, &pool("pool-a", "cidr: 10.0.0.0/30\nblockSize: 30"));
    let ipam = Ipam::new(store.clone());
    let mut addresses = BTreeSet::new();
    for index in 0..4 {
        addresses.insert(
            ipam.assign(&request(&format!("c{index}.eth0"), "node-a", "prod"))
                .unwrap()[0]
                .address,
        );
    }
    assert_eq!(addresses.len(), 4);
    assert_eq!(
        ipam.assign(&request("c0.eth0", "node-a", "prod")).unwrap(),
        ipam.allocations_of("c0.eth0").unwrap()
    );
    let error = ipam.assign(&request("c4.eth0", "node-a", "prod")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "every eligible pool is exhausted: pool-a (10.0.0.0/30)"
    );
    for index in 0..4 {
        assert_eq!(ipam.release(&format!("c{index}.eth0")).unwrap().len(), 1);
    }
    assert!(ipam.report().unwrap().allocations.is_empty());
}

/// The embedded store's concurrency test against etcd: eight allocators on eight nodes, each
/// with its own client.
#[test]
fn concurrent_allocators_on_etcd() {
    let etcd = Etcd::start();
    common::concurrent_allocators(&|| etcd.store());
}
