//! What only the embedded store promises: a file that survives restarts, is shared by
//! processes, and keeps bounded history.

use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_store::{Condition, EmbeddedStore, Operation, Store, StoreError};

fn put(key: &str, value: &str, condition: Condition) -> Operation {
    Operation::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        condition,
    }
}

#[test]
fn a_reopened_store_sees_everything_committed_before() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("nested/deeper/store.db");
    let revision = {
        let store = EmbeddedStore::open(&path).expect("open creates parent directories");
        store
            .commit(&[put("/kept", "value", Condition::Absent)])
            .expect("put")
    };
    let store = sluice_store::open(&format!("file://{}", path.display())).expect("open by address");
    assert_eq!(store.revision().expect("revision"), revision);
    assert_eq!(store.get("/kept").expect("get").expect("present").value, b"value");
    let next = store
        .commit(&[put("/kept", "again", Condition::Revision(revision))])
        .expect("update");
    assert_eq!(next, revision + 1);
}

#[test]
fn history_is_bounded_and_old_watches_are_compacted() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open_with_history(directory.path().join("store.db"), 10).expect("open");
    for index in 0..50 {
        store
            .commit(&[put("/h", &index.to_string(), Condition::Any)])
            .expect("put");
    }
    match store.watch("/h", 0) {
        Err(StoreError::Compacted {
            requested: 1,
            compacted,
        }) => assert!(compacted > 30, "{compacted}"),
        other => panic!("expected Compacted, got {:?}", other.map(|_| ())),
    }
    // The last ten revisions are always kept.
    let mut watch = store.watch("/h", 40).expect("watch the kept history");
    for revision in 41..=50 {
        let change = watch
            .next(Duration::from_secs(5))
            .expect("next")
            .expect("a change");
        assert_eq!(change.revision(), revision);
    }
}

#[test]
fn a_watch_that_falls_behind_compaction_is_told() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(directory.path().join("store.db")).expect("open");
    let mut watch = store.watch("/", 0).expect("watch");
    for index in 0..5 {
        store
            .commit(&[put("/k", &index.to_string(), Condition::Any)])
            .expect("put");
    }
    store.compact(4).expect("compact");
    match watch.next(Duration::from_secs(5)) {
        Err(StoreError::Compacted {
            requested: 1,
            compacted: 4,
        }) => {}
        other => panic!("expected Compacted, got {other:?}"),
    }
}

/// Set in the child processes of `processes_share_the_file_without_losing_updates`.
const HELPER_PATH: &str = "SLUICE_STORE_TEST_HELPER_PATH";
const INCREMENTS: usize = 30;

fn increment(store: &dyn Store, times: usize) {
    for _ in 0..times {
        loop {
            let current = store.get("/counter").expect("get").expect("present");
            let count: usize = String::from_utf8(current.value)
                .expect("UTF-8")
                .parse()
                .expect("number");
            let operation = put(
                "/counter",
                &(count + 1).to_string(),
                Condition::Revision(current.modify_revision),
            );
            match store.commit(&[operation]) {
                Ok(_) => break,
                Err(StoreError::Conflict { .. }) => continue,
                Err(error) => panic!("increment failed: {error}"),
            }
        }
    }
}

/// Does nothing in a normal run; in a child process it is the other writer.
#[test]
fn increment_helper() {
    if let Some(path) = std::env::var_os(HELPER_PATH) {
        increment(&EmbeddedStore::open(path).expect("open"), INCREMENTS);
    }
}

#[test]
fn processes_share_the_file_without_losing_updates() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("store.db");
    let store = EmbeddedStore::open(&path).expect("open");
    store
        .commit(&[put("/counter", "0", Condition::Absent)])
        .expect("create");
    let mut watch = store.watch("/counter", 1).expect("watch");
    let executable = std::env::current_exe().expect("test executable");
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&executable)
                .args(["--exact", "increment_helper", "--test-threads", "1"])
                .env(HELPER_PATH, &path)
                // Kept out of the test output (a runner reads its summary lines); shown on failure.
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a writer process")
        })
        .collect();
    increment(&store, INCREMENTS);
    for child in children {
        let output = child.wait_with_output().expect("wait");
        assert!(
            output.status.success(),
            "a writer process failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let total = 3 * INCREMENTS;
    let value = store.get("/counter").expect("get").expect("present").value;
    assert_eq!(String::from_utf8(value).expect("UTF-8"), total.to_string());
    // The watch saw every increment, from every process, in order.
    let mut seen = Vec::new();
    while let Some(change) = watch.next(Duration::from_millis(500)).expect("next") {
        seen.push(change.revision());
    }
    assert_eq!(seen, (2..=1 + total as i64).collect::<Vec<_>>());
}

#[test]
fn opening_a_missing_store_is_an_error_and_creates_nothing() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("typo/store.db");
    let address = format!("file://{}", path.display());
    match sluice_store::open(&address) {
        Err(error @ StoreError::Missing { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&path.display().to_string()) && message.contains("sluice apply"),
                "{message}"
            );
        }
        Err(other) => panic!("expected Missing, got {other:?}"),
        Ok(_) => panic!("a missing store opened"),
    }
    assert!(
        !directory.path().join("typo").exists(),
        "opening created a directory"
    );
    let created = sluice_store::open_or_create(&address).expect("open_or_create creates");
    created
        .commit(&[put("/made", "yes", Condition::Absent)])
        .expect("write");
    assert!(sluice_store::open(&address).is_ok());
}

/// The environment variable that makes the helper below run (inside the namespace only).
const READ_ONLY_STORE: &str = "SLUICE_TEST_READ_ONLY_STORE";

/// Runs `read_only_helper` of this test binary in a private mount namespace where `mounted`
/// is bind-mounted read-only over itself: a refusal even root gets (root ignores permissions).
fn run_read_only(mounted: &std::path::Path, store: &std::path::Path) {
    let test_binary = std::env::current_exe().expect("test binary");
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -o bind,ro "$1" "$1" && exec "$2" read_only_helper --exact --ignored --nocapture"#)
        .arg("sh")
        .arg(mounted)
        .arg(&test_binary)
        .env(READ_ONLY_STORE, store)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && text.contains("1 passed"), "{text}");
}

fn a_store_with_one_key(path: &std::path::Path) {
    let store = EmbeddedStore::open(path).expect("create");
    store
        .commit(&[put("/sluice/kept", "value", Condition::Absent)])
        .expect("put");
}

#[test]
fn a_store_in_a_read_only_directory_can_be_read() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("store.db");
    a_store_with_one_key(&path);
    run_read_only(directory.path(), &path);
}

#[test]
fn a_read_only_store_file_in_a_writable_directory_can_be_read() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("store.db");
    a_store_with_one_key(&path);
    run_read_only(&path, &path);
}

/// Reads the store named by `READ_ONLY_STORE`, which cannot be written, and checks that writes
/// are refused clearly. Run only by the tests above, inside their mount namespace.
#[test]
#[ignore = "run by the read-only tests inside a mount namespace"]
fn read_only_helper() {
    let path = std::env::var_os(READ_ONLY_STORE).expect("run by the read-only tests");
    let path = std::path::PathBuf::from(path);
    assert!(
        std::fs::OpenOptions::new().write(true).open(&path).is_err(),
        "the store file can be written: the test proves nothing"
    );
    let store = EmbeddedStore::open_existing(&path).expect("a read-only store opens");
    assert!(store.is_read_only());
    assert_eq!(
        store.get("/sluice/kept").expect("get").expect("present").value,
        b"value"
    );
    let (keys, revision) = store.list("/sluice/").expect("list");
    assert_eq!((keys.len(), revision), (1, 1));
    let mut watch = store.watch("/sluice/", 0).expect("watch");
    assert!(matches!(watch.next(Duration::from_secs(1)), Ok(Some(_))));
    match store.commit(&[put("/sluice/new", "x", Condition::Absent)]) {
        Err(StoreError::Backend(message)) => assert!(message.contains("cannot be written"), "{message}"),
        other => panic!("a write to a read-only store: {other:?}"),
    }
}
