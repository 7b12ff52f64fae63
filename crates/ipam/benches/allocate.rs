//! Allocations per second against the embedded store and etcd: one allocator, then eight
//! allocators on eight nodes at once (each with its own store connection, as separate CNI
//! processes would have). Each backend runs twice: on the disk (every commit waits for an
//! fsync, which on the development VM takes about 4 ms) and on tmpfs (`/dev/shm`: what IPAM
//! and the store cost without the disk). `cargo bench -p sluice-ipam`;
//! `SLUICE_IPAM_BENCH_COUNT` sets the allocations per allocator on tmpfs (default 1,000; a
//! fifth of that on the disk).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sluice_ipam::Ipam;
use sluice_store::Store;

const ALLOCATORS: usize = 8;

fn main() {
    let count: usize = std::env::var("SLUICE_IPAM_BENCH_COUNT")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000);
    let tmpfs = Path::new("/dev/shm");
    let places: Vec<(&str, PathBuf, usize)> = [
        Some(("disk", std::env::temp_dir(), (count / 5).max(1))),
        tmpfs.is_dir().then(|| ("tmpfs", tmpfs.to_path_buf(), count)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (place, directory, count) in places {
        let embedded = common::TempStore::in_directory(&directory);
        let path = embedded.path();
        let open_embedded = move || -> Arc<dyn Store> {
            Arc::new(sluice_store::EmbeddedStore::open(&path).expect("open the store"))
        };
        measure(&format!("embedded, {place}"), count, &open_embedded);

        let etcd = common::Etcd::start_in(&directory);
        let open_etcd = || etcd.store();
        measure(&format!("etcd, {place}"), count, &open_etcd);
    }
}

fn measure(backend: &str, count: usize, open: &(dyn Fn() -> Arc<dyn Store> + Sync)) {
    let store = open();
    common::apply(&*store, &common::pool("bench", "cidr: 10.0.0.0/12"));

    let ipam = Ipam::new(store.clone());
    let started = Instant::now();
    for index in 0..count {
        ipam.assign(&common::request(
            &format!("solo-{index}.eth0"),
            "node-solo",
            "bench",
        ))
        .expect("assign");
    }
    let single = count as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for index in 0..count {
        ipam.release(&format!("solo-{index}.eth0")).expect("release");
    }
    let releases = count as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    std::thread::scope(|scope| {
        for node in 0..ALLOCATORS {
            scope.spawn(move || {
                let ipam = Ipam::new(open());
                for index in 0..count {
                    let request =
                        common::request(&format!("n{node}-{index}.eth0"), &format!("node-{node}"), "bench");
                    ipam.assign(&request).expect("assign");
                }
            });
        }
    });
    let parallel = (ALLOCATORS * count) as f64 / started.elapsed().as_secs_f64();
    println!(
        "{backend:>15}: one allocator {single:>6.0} allocations/s ({releases:>6.0} releases/s); \
         {ALLOCATORS} allocators on {ALLOCATORS} nodes {parallel:>6.0} allocations/s in total"
    );
}
