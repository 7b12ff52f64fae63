//! IPAM against etcd: a server started on free loopback ports for each test and killed after.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::{Etcd, apply, pool, request};
use sluice_ipam::Ipam;
use sluice_ipam::layout::HANDLE_PREFIX;

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
    const NODES: usize = 8;
    const PER_NODE: usize = 500;
    let etcd = Etcd::start();
    let store = etcd.store();
    apply(&*store, &pool("pool-a", "cidr: 10.0.0.0/16"));
    let run = |release: bool| {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..NODES)
                .map(|node| {
                    let etcd = &etcd;
                    scope.spawn(move || {
                        let ipam = Ipam::new(etcd.store());
                        let mut addresses = Vec::new();
                        for index in 0..PER_NODE {
                            let handle = format!("n{node}-c{index}.eth0");
                            if release {
                                addresses.extend(ipam.release(&handle).expect("release"));
                            } else {
                                let request = request(&handle, &format!("node-{node}"), "prod");
                                addresses.push(ipam.assign(&request).expect("assign")[0].address);
                            }
                        }
                        addresses
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("worker"))
                .collect::<Vec<IpAddr>>()
        })
    };
    let assigned = run(false);
    let distinct: BTreeSet<IpAddr> = assigned.iter().copied().collect();
    assert_eq!(distinct.len(), NODES * PER_NODE, "an address was given twice");
    let ipam = Ipam::new(store.clone());
    assert!(ipam.check().unwrap().doubly_owned.is_empty());
    let released: BTreeSet<IpAddr> = run(true).into_iter().collect();
    assert_eq!(released, distinct);
    assert!(ipam.report().unwrap().allocations.is_empty());
    assert!(store.list(HANDLE_PREFIX).unwrap().0.is_empty());
}
