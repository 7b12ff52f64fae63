//! Test support: assertions on watches; etcd servers come from `sluice_store::testing`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

pub use sluice_store::testing::*;
use sluice_store::{Change, StoreError, Watch};

/// The next `count` changes of a watch, failing the test if they do not come within 20 s.
pub fn take(watch: &mut dyn Watch, count: usize) -> Vec<Change> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut changes = Vec::new();
    while changes.len() < count {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "only {} of {count} changes came: {changes:?}",
            changes.len()
        );
        match watch.next(remaining) {
            Ok(Some(change)) => changes.push(change),
            Ok(None) | Err(StoreError::Unavailable(_)) => {}
            Err(error) => panic!("watch failed: {error}"),
        }
    }
    changes
}

/// Asserts that a watch has nothing more for a while.
pub fn assert_quiet(watch: &mut dyn Watch) {
    match watch.next(Duration::from_millis(300)) {
        Ok(None) => {}
        other => panic!("expected no more changes, got {other:?}"),
    }
}
