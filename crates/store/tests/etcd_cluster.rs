//! A three-member etcd cluster loses a member while a writer and a watcher are busy: nothing
//! is lost or repeated. One test kills the leader (found through etcd's Maintenance Status),
//! so every run exercises an election and watches resuming across it; the other a follower.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_store::{Change, Condition, EtcdStore, Operation, Revision, Store, StoreError};
use support::EtcdCluster;

const KEYS: usize = 300;
const KILL_AT: usize = 100;
const PREFIX: &str = "/cluster/";
const DEADLINE: Duration = Duration::from_secs(120);

fn key(index: usize) -> String {
    format!("{PREFIX}{index:04}")
}

/// Writes one key exactly once, retrying through unavailability. A conflict after an
/// unanswered attempt means that attempt went through: the key holds our value.
fn write_once(store: &EtcdStore, index: usize, deadline: Instant) -> Revision {
    let value = index.to_string().into_bytes();
    let operation = Operation::Put {
        key: key(index),
        value: value.clone(),
        condition: Condition::Absent,
    };
    let mut unanswered = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "writing {} did not finish in time",
            key(index)
        );
        match store.commit(std::slice::from_ref(&operation)) {
            Ok(revision) => return revision,
            Err(StoreError::Unavailable(_)) => {
                unanswered = true;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(StoreError::Conflict { .. }) if unanswered => {
                let current = store.get(&key(index)).expect("get").expect("present");
                assert_eq!(current.value, value);
                return current.modify_revision;
            }
            Err(error) => panic!("writing {} failed: {error}", key(index)),
        }
    }
}

/// Which member the test kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Leader,
    Follower,
}

#[test]
fn the_leader_dies_and_nothing_is_lost_or_repeated() {
    a_member_dies_and_nothing_is_lost_or_repeated(Victim::Leader);
}

#[test]
fn a_follower_dies_and_nothing_is_lost_or_repeated() {
    a_member_dies_and_nothing_is_lost_or_repeated(Victim::Follower);
}

fn a_member_dies_and_nothing_is_lost_or_repeated(victim: Victim) {
    let started = Instant::now();
    let deadline = started + DEADLINE;
    let mut cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    let writer = EtcdStore::connect(&endpoints).expect("connect writer");
    let start = writer.revision().expect("revision");

    let watcher = std::thread::spawn({
        let endpoints = endpoints.clone();
        move || {
            let store = EtcdStore::connect(&endpoints).expect("connect watcher");
            let mut watch = store.watch(PREFIX, start).expect("watch");
            let mut changes = Vec::new();
            // Until the last key, then a little longer to catch any repeat.
            let mut quiet_until: Option<Instant> = None;
            loop {
                let now = Instant::now();
                assert!(
                    now < deadline,
                    "watcher saw {} of {KEYS} keys in time",
                    changes.len()
                );
                if quiet_until.is_some_and(|until| now >= until) {
                    return changes;
                }
                match watch.next(Duration::from_millis(500)) {
                    Ok(Some(change)) => {
                        if change.key() == key(KEYS - 1) {
                            quiet_until = Some(Instant::now() + Duration::from_secs(1));
                        }
                        changes.push(change);
                    }
                    Ok(None) | Err(StoreError::Unavailable(_)) => {}
                    Err(error) => panic!("watch failed: {error}"),
                }
            }
        }
    });

    let mut written = HashMap::new();
    for index in 0..KEYS {
        if index == KILL_AT {
            let leader = cluster.leader();
            let killed = match victim {
                Victim::Leader => leader,
                Victim::Follower => (leader + 1) % 3,
            };
            cluster.kill(killed);
            let new_leader = cluster.leader();
            // A follower's death may still see a spurious election on a loaded machine; a
            // leader's must end with another member leading.
            if victim == Victim::Leader {
                assert_ne!(new_leader, leader, "killing the leader elected no other");
            }
            eprintln!("killed member {killed} ({victim:?}); leader {leader} -> {new_leader}");
        }
        let before = Instant::now();
        written.insert(key(index), write_once(&writer, index, deadline));
        if before.elapsed() > Duration::from_millis(200) {
            eprintln!("writing key {index} took {:?}", before.elapsed());
        }
    }
    let changes = watcher.join().expect("watcher thread");

    // Every key written exactly once: created and last modified by the same revision.
    let (keys, _) = writer.list(PREFIX).expect("list");
    assert_eq!(keys.len(), KEYS);
    for kv in &keys {
        assert_eq!(
            kv.create_revision, kv.modify_revision,
            "{} was written twice",
            kv.key
        );
        assert_eq!(written[&kv.key], kv.modify_revision);
    }
    // The watcher saw each key once, in revision order, at the revision it was written.
    assert_eq!(changes.len(), KEYS, "the watcher saw {} changes", changes.len());
    for (index, change) in changes.iter().enumerate() {
        match change {
            Change::Put(kv) => {
                assert_eq!(kv.key, key(index), "changes out of order or repeated");
                assert_eq!(kv.modify_revision, written[&kv.key]);
            }
            other => panic!("unexpected change {other:?}"),
        }
    }
    assert!(
        changes
            .windows(2)
            .all(|pair| pair[0].revision() < pair[1].revision())
    );
    eprintln!("cluster test took {:?}", started.elapsed());
}
