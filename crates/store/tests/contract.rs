//! The datastore contract: every test runs against every backend.

mod support;

use std::time::Duration;

use sluice_store::{
    Change, Condition, EmbeddedStore, EtcdStore, Guard, KeyValue, Operation, Revision, Store, StoreError,
};
use support::{EtcdCluster, assert_quiet, take};

/// What a contract test needs of a backend.
trait Backend {
    fn store(&self) -> &dyn Store;
    /// Another handle on the same data, as another process would have.
    fn second(&self) -> Box<dyn Store>;
    fn compact(&self, revision: Revision);
}

struct Embedded {
    store: EmbeddedStore,
    _directory: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = EmbeddedStore::open(directory.path().join("store.db")).expect("open");
        Embedded {
            store,
            _directory: directory,
        }
    }
}

impl Backend for Embedded {
    fn store(&self) -> &dyn Store {
        &self.store
    }
    fn second(&self) -> Box<dyn Store> {
        Box::new(EmbeddedStore::open(self.store.path()).expect("open again"))
    }
    fn compact(&self, revision: Revision) {
        self.store.compact(revision).expect("compact");
    }
}

struct Etcd {
    store: EtcdStore,
    _cluster: EtcdCluster,
}

impl Etcd {
    fn new() -> Self {
        let cluster = EtcdCluster::start(1);
        let store = EtcdStore::connect(&cluster.endpoints()).expect("connect");
        Etcd {
            store,
            _cluster: cluster,
        }
    }
}

impl Backend for Etcd {
    fn store(&self) -> &dyn Store {
        &self.store
    }
    fn second(&self) -> Box<dyn Store> {
        Box::new(EtcdStore::connect(self.store.endpoints()).expect("connect again"))
    }
    fn compact(&self, revision: Revision) {
        self.store.compact(revision).expect("compact");
    }
}

fn put(key: &str, value: &str, condition: Condition) -> Operation {
    Operation::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        condition,
    }
}

fn delete(key: &str, condition: Condition) -> Operation {
    Operation::Delete {
        key: key.into(),
        condition,
    }
}

fn value(store: &dyn Store, key: &str) -> Option<String> {
    store
        .get(key)
        .expect("get")
        .map(|kv| String::from_utf8(kv.value).expect("UTF-8"))
}

fn conflict_key(result: sluice_store::Result<Revision>) -> String {
    match result {
        Err(StoreError::Conflict { key, .. }) => key,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn put_change(key: &str, value: &str, create_revision: Revision, revision: Revision) -> Change {
    Change::Put(KeyValue {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        create_revision,
        modify_revision: revision,
    })
}

fn get_and_list_by_prefix_in_key_order(backend: &dyn Backend) {
    let store = backend.store();
    for key in ["/p/b", "/p/a", "/q/x", "/p/c", "/p", "/pa"] {
        store
            .commit(&[put(key, &format!("value of {key}"), Condition::Any)])
            .expect("put");
    }
    let last = store
        .commit(&[put("/p/a/nested", "n", Condition::Any)])
        .expect("put");
    assert_eq!(value(store, "/p/b").as_deref(), Some("value of /p/b"));
    assert_eq!(value(store, "/p/missing"), None);

    let (keys, revision) = store.list("/p/").expect("list");
    let names: Vec<&str> = keys.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(names, ["/p/a", "/p/a/nested", "/p/b", "/p/c"]);
    assert_eq!(revision, last);
    assert_eq!(keys[2].value, b"value of /p/b");

    let (everything, _) = store.list("").expect("list all");
    let names: Vec<&str> = everything.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        names,
        ["/p", "/p/a", "/p/a/nested", "/p/b", "/p/c", "/pa", "/q/x"]
    );
    assert!(store.list("/nothing/").expect("list").0.is_empty());
}

fn create_conflicts_when_present(backend: &dyn Backend) {
    let store = backend.store();
    let created = store
        .commit(&[put("/k", "one", Condition::Absent)])
        .expect("create");
    match store.commit(&[put("/k", "two", Condition::Absent)]) {
        Err(StoreError::Conflict { key, expected, found }) => {
            assert_eq!(key, "/k");
            assert_eq!(expected, "absent");
            assert_eq!(found, format!("revision {created}"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(value(store, "/k").as_deref(), Some("one"));
}

fn update_with_stale_revision_conflicts(backend: &dyn Backend) {
    let store = backend.store();
    let first = store
        .commit(&[put("/k", "one", Condition::Absent)])
        .expect("create");
    let second = store
        .commit(&[put("/k", "two", Condition::Revision(first))])
        .expect("update");
    assert!(second > first);
    match store.commit(&[put("/k", "stale", Condition::Revision(first))]) {
        Err(StoreError::Conflict { key, expected, found }) => {
            assert_eq!(key, "/k");
            assert_eq!(expected, format!("revision {first}"));
            assert_eq!(found, format!("revision {second}"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(value(store, "/k").as_deref(), Some("two"));
    store
        .commit(&[put("/k", "three", Condition::Present)])
        .expect("update present");
    assert_eq!(
        conflict_key(store.commit(&[put("/none", "x", Condition::Present)])),
        "/none"
    );
    match store.commit(&[put("/none", "x", Condition::Revision(second))]) {
        Err(StoreError::Conflict { found, .. }) => assert_eq!(found, "absent"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get("/none").expect("get"), None);
}

fn multi_key_transaction_is_atomic(backend: &dyn Backend) {
    let store = backend.store();
    let revision = store
        .commit(&[
            put("/a", "a", Condition::Absent),
            put("/b", "b", Condition::Absent),
        ])
        .expect("create both");
    for key in ["/a", "/b"] {
        assert_eq!(
            store.get(key).expect("get").expect("present").modify_revision,
            revision
        );
    }
    // The second condition fails: nothing of the transaction is written.
    let result = store.commit(&[
        put("/c", "c", Condition::Absent),
        put("/a", "changed", Condition::Absent),
        delete("/b", Condition::Any),
    ]);
    assert_eq!(conflict_key(result), "/a");
    assert_eq!(store.get("/c").expect("get"), None);
    assert_eq!(value(store, "/a").as_deref(), Some("a"));
    assert_eq!(value(store, "/b").as_deref(), Some("b"));
    assert_eq!(store.revision().expect("revision"), revision);
    // The first failed condition is the one reported.
    let result = store.commit(&[
        put("/x", "x", Condition::Revision(revision + 100)),
        put("/a", "a", Condition::Absent),
    ]);
    assert_eq!(conflict_key(result), "/x");
}

fn delete_removes_keys(backend: &dyn Backend) {
    let store = backend.store();
    let created = store
        .commit(&[
            put("/d/1", "1", Condition::Absent),
            put("/d/2", "2", Condition::Absent),
        ])
        .expect("create");
    let deleted = store
        .commit(&[delete("/d/1", Condition::Present)])
        .expect("delete");
    assert!(deleted > created);
    assert_eq!(store.get("/d/1").expect("get"), None);
    let (keys, _) = store.list("/d/").expect("list");
    assert_eq!(keys.len(), 1);
    assert_eq!(
        conflict_key(store.commit(&[delete("/d/1", Condition::Present)])),
        "/d/1"
    );
    assert_eq!(
        conflict_key(store.commit(&[delete("/d/2", Condition::Revision(deleted))])),
        "/d/2"
    );
    // Deleting what is not there changes nothing, so no new revision.
    assert_eq!(
        store
            .commit(&[delete("/d/1", Condition::Any)])
            .expect("delete absent"),
        deleted
    );
    assert_eq!(store.revision().expect("revision"), deleted);
    store
        .commit(&[delete("/d/2", Condition::Revision(created))])
        .expect("delete by revision");
    assert!(store.list("/d/").expect("list").0.is_empty());
    // A deleted key is created anew.
    let again = store
        .commit(&[put("/d/1", "again", Condition::Absent)])
        .expect("create again");
    assert_eq!(
        store.get("/d/1").expect("get").expect("present").create_revision,
        again
    );
}

fn revisions_are_monotonic_and_tracked(backend: &dyn Backend) {
    let store = backend.store();
    let start = store.revision().expect("revision");
    let created = store
        .commit(&[put("/r", "1", Condition::Absent)])
        .expect("create");
    assert!(created > start);
    assert_eq!(store.revision().expect("revision"), created);
    let kv = store.get("/r").expect("get").expect("present");
    assert_eq!((kv.create_revision, kv.modify_revision), (created, created));
    let mut previous = created;
    for round in 0..5 {
        let updated = store
            .commit(&[put("/r", &round.to_string(), Condition::Present)])
            .expect("update");
        assert!(updated > previous);
        previous = updated;
    }
    let other = store.commit(&[put("/other", "x", Condition::Any)]).expect("put");
    let kv = store.get("/r").expect("get").expect("present");
    assert_eq!((kv.create_revision, kv.modify_revision), (created, previous));
    assert!(other > previous);
    assert_eq!(store.commit(&[]).expect("empty commit"), other);
}

fn watch_delivers_every_later_change_once_in_order(backend: &dyn Backend) {
    let store = backend.store();
    let start = store.revision().expect("revision");
    let mut live = store.watch("/w/", start).expect("watch");
    let first = store.commit(&[put("/w/a", "1", Condition::Absent)]).expect("put");
    let second = store.commit(&[put("/w/b", "2", Condition::Absent)]).expect("put");
    store
        .commit(&[put("/elsewhere", "x", Condition::Any)])
        .expect("put");
    let third = store
        .commit(&[
            put("/w/c", "3", Condition::Absent),
            delete("/w/a", Condition::Present),
        ])
        .expect("transaction");
    let fourth = store
        .commit(&[put("/w/b", "2b", Condition::Revision(second))])
        .expect("update");
    let expected = vec![
        put_change("/w/a", "1", first, first),
        put_change("/w/b", "2", second, second),
        put_change("/w/c", "3", third, third),
        Change::Delete {
            key: "/w/a".into(),
            revision: third,
        },
        put_change("/w/b", "2b", second, fourth),
    ];
    assert_eq!(take(live.as_mut(), 5), expected);
    assert_quiet(live.as_mut());

    // Replay from the past: the same changes, from the one after the given revision.
    let mut replay = store.watch("/w/", start).expect("watch");
    assert_eq!(take(replay.as_mut(), 5), expected);
    assert_quiet(replay.as_mut());
    let mut later = store.watch("/w/", second).expect("watch");
    assert_eq!(take(later.as_mut(), 3), expected[2..]);
    assert_quiet(later.as_mut());
    let mut whole_store = store.watch("", fourth - 1).expect("watch");
    assert_eq!(take(whole_store.as_mut(), 1), expected[4..]);

    // And the live watch goes on.
    let fifth = store.commit(&[delete("/w/b", Condition::Any)]).expect("delete");
    assert_eq!(
        take(live.as_mut(), 1),
        [Change::Delete {
            key: "/w/b".into(),
            revision: fifth
        }]
    );
}

fn compacted_error(store: &dyn Store, prefix: &str, after: Revision) -> StoreError {
    match store.watch(prefix, after) {
        Err(error) => error,
        Ok(mut watch) => match watch.next(Duration::from_secs(10)) {
            Err(error) => error,
            Ok(change) => panic!("expected Compacted, got {change:?}"),
        },
    }
}

fn watch_from_before_compaction_is_compacted(backend: &dyn Backend) {
    let store = backend.store();
    let start = store.revision().expect("revision");
    let mut last = start;
    for index in 0..5 {
        last = store
            .commit(&[put("/c/key", &index.to_string(), Condition::Any)])
            .expect("put");
    }
    backend.compact(last);
    match compacted_error(store, "/c/", start) {
        StoreError::Compacted { requested, compacted } => {
            assert_eq!(requested, start + 1);
            assert_eq!(compacted, last);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // From the compacted revision on, history is still there.
    let mut watch = store.watch("/c/", last - 1).expect("watch");
    assert_eq!(
        take(watch.as_mut(), 1),
        [put_change("/c/key", "4", start + 1, last)]
    );
    let newer = store.commit(&[put("/c/key", "5", Condition::Any)]).expect("put");
    assert_eq!(take(watch.as_mut(), 1)[0].revision(), newer);
}

fn second_handle_sees_commits_and_watch_events(backend: &dyn Backend) {
    let store = backend.store();
    let second = backend.second();
    let start = store.revision().expect("revision");
    let mut watch_on_second = second.watch("/s/", start).expect("watch");
    let mut watch_on_first = store.watch("/s/", start).expect("watch");
    let written = store
        .commit(&[put("/s/one", "1", Condition::Absent)])
        .expect("put");
    assert_eq!(value(second.as_ref(), "/s/one").as_deref(), Some("1"));
    assert_eq!(second.revision().expect("revision"), written);
    assert_eq!(
        take(watch_on_second.as_mut(), 1),
        [put_change("/s/one", "1", written, written)]
    );
    let answered = second
        .commit(&[put("/s/one", "2", Condition::Revision(written))])
        .expect("update");
    assert_eq!(value(store, "/s/one").as_deref(), Some("2"));
    let seen = take(watch_on_first.as_mut(), 2);
    assert_eq!(
        seen,
        [
            put_change("/s/one", "1", written, written),
            put_change("/s/one", "2", written, answered)
        ]
    );
}

fn concurrent_increments_lose_no_update(backend: &dyn Backend) {
    const THREADS: usize = 4;
    const INCREMENTS: usize = 25;
    let first = backend.store();
    let second = backend.second();
    first
        .commit(&[put("/counter", "0", Condition::Absent)])
        .expect("create");
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            // Half the threads on each handle: across handles is across processes.
            let store: &dyn Store = if thread % 2 == 0 { first } else { second.as_ref() };
            scope.spawn(move || {
                for _ in 0..INCREMENTS {
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        assert!(attempts < 1_000, "an increment never got through");
                        let current = store.get("/counter").expect("get").expect("present");
                        let count: usize = String::from_utf8(current.value)
                            .expect("UTF-8")
                            .parse()
                            .expect("number");
                        let next = (count + 1).to_string();
                        match store.commit(&[put(
                            "/counter",
                            &next,
                            Condition::Revision(current.modify_revision),
                        )]) {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(error) => panic!("increment failed: {error}"),
                        }
                    }
                }
            });
        }
    });
    assert_eq!(value(first, "/counter"), Some((THREADS * INCREMENTS).to_string()));
}

fn malformed_transactions_are_rejected(backend: &dyn Backend) {
    let store = backend.store();
    let before = store.revision().expect("revision");
    let twice = store.commit(&[put("/t", "1", Condition::Any), delete("/t", Condition::Any)]);
    assert!(matches!(twice, Err(StoreError::Backend(_))), "{twice:?}");
    let empty = store.commit(&[put("", "1", Condition::Any)]);
    assert!(matches!(empty, Err(StoreError::Backend(_))), "{empty:?}");
    assert_eq!(store.revision().expect("revision"), before);
}

/// Guards condition a transaction on keys it does not write: a key's state, and "nothing under
/// a prefix created or modified since a revision" (deletions not seen, as documented).
fn guards_condition_a_transaction_on_what_was_read(backend: &dyn Backend) {
    let store = backend.store();
    store
        .commit(&[
            put("/pools/a", "10.0.0.0/16", Condition::Absent),
            put("/tiers/t", "", Condition::Absent),
        ])
        .expect("seed");
    let (_, read_at) = store.list("/pools/").expect("list");
    let unchanged = Guard::NoWriteUnder {
        prefix: "/pools/".into(),
        after: read_at,
    };
    // Nothing changed: the guarded write goes through; writes elsewhere do not break it.
    store
        .commit(&[put("/other/x", "1", Condition::Any)])
        .expect("unrelated write");
    store
        .commit_if(
            std::slice::from_ref(&unchanged),
            &[put("/pools/b", "10.1.0.0/16", Condition::Absent)],
        )
        .expect("unchanged prefix");
    // A pool created after the read breaks a guard from before it; nothing is written.
    let before = store.revision().expect("revision");
    let result = store.commit_if(
        std::slice::from_ref(&unchanged),
        &[put("/pools/c", "10.0.0.0/8", Condition::Absent)],
    );
    match result {
        Err(StoreError::Conflict { key, expected, .. }) => {
            assert_eq!(key, "/pools/b");
            assert!(expected.contains("nothing under /pools/"), "{expected}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(value(store, "/pools/c"), None);
    assert_eq!(store.revision().expect("revision"), before);
    // A modification breaks it too; a guard from after it holds.
    let (_, read_at) = store.list("/pools/").expect("list");
    store
        .commit(&[put("/pools/a", "10.0.0.0/17", Condition::Any)])
        .expect("modify");
    let stale = Guard::NoWriteUnder {
        prefix: "/pools/".into(),
        after: read_at,
    };
    assert_eq!(
        conflict_key(store.commit_if(&[stale], &[put("/x", "1", Condition::Any)])),
        "/pools/a"
    );
    // A key guard: the tier must still exist.
    let present = Guard::Key {
        key: "/tiers/t".into(),
        condition: Condition::Present,
    };
    store
        .commit_if(
            std::slice::from_ref(&present),
            &[put("/policies/p", "t", Condition::Absent)],
        )
        .expect("tier present");
    store
        .commit(&[delete("/tiers/t", Condition::Present)])
        .expect("delete tier");
    assert_eq!(
        conflict_key(store.commit_if(&[present], &[put("/policies/q", "t", Condition::Absent)])),
        "/tiers/t"
    );
    assert_eq!(value(store, "/policies/q"), None);
    // An empty prefix range holds.
    store
        .commit_if(
            &[Guard::NoWriteUnder {
                prefix: "/empty/".into(),
                after: 1,
            }],
            &[put("/y", "1", Condition::Any)],
        )
        .expect("empty range");
}

macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(#[test] fn $test() { super::$test(&super::Embedded::new()); })*
        }
        mod etcd {
            $(#[test] fn $test() { super::$test(&super::Etcd::new()); })*
        }
    };
}

contract!(
    get_and_list_by_prefix_in_key_order,
    create_conflicts_when_present,
    update_with_stale_revision_conflicts,
    multi_key_transaction_is_atomic,
    delete_removes_keys,
    revisions_are_monotonic_and_tracked,
    watch_delivers_every_later_change_once_in_order,
    watch_from_before_compaction_is_compacted,
    second_handle_sees_commits_and_watch_events,
    concurrent_increments_lose_no_update,
    malformed_transactions_are_rejected,
    guards_condition_a_transaction_on_what_was_read,
);
