//! Sluice's datastore: a revisioned key-value store with list, watch from a revision, and
//! compare-and-swap transactions over several keys, behind one [`Store`] trait with two
//! backends: an embedded single file (the default; no server, safe for several processes on one
//! machine) and etcd v3 (for clusters of many nodes).
//!
//! The model is etcd's: one store-wide revision that every committed transaction increments;
//! each key remembers the revision that created it and the one that last modified it; a watch
//! delivers every change after a given revision, in order, or says that history has been
//! compacted away and the watcher must list again.
//!
//! Architecture invariant: this crate is the only one that speaks to etcd or opens the store
//! file. It stores bytes under string keys and knows nothing of resources or policy.
#![forbid(unsafe_code)]

use std::time::Duration;

mod address;
mod embedded;
mod etcd;

#[cfg(feature = "testing")]
pub mod testing;

pub use address::{Address, default_address, open, open_or_create};
pub use embedded::{DEFAULT_HISTORY_REVISIONS, EmbeddedStore};
pub use etcd::{EtcdStore, MemberStatus};

/// A store-wide revision. Revisions start at 1 and only grow; 0 means "before everything".
pub type Revision = i64;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the transaction that created the key.
    pub create_revision: Revision,
    /// The revision of the transaction that last wrote it: the key's resource version.
    pub modify_revision: Revision,
}

/// What a transaction requires of a key before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// No requirement.
    Any,
    /// The key must not exist (create).
    Absent,
    /// The key must exist (update or delete of whatever is there).
    Present,
    /// The key must exist with this modify revision (compare-and-swap).
    Revision(Revision),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Put {
        key: String,
        value: Vec<u8>,
        condition: Condition,
    },
    Delete {
        key: String,
        condition: Condition,
    },
}

impl Operation {
    pub fn key(&self) -> &str {
        match self {
            Operation::Put { key, .. } | Operation::Delete { key, .. } => key,
        }
    }
}

/// What a transaction requires of keys it does not write: that what a check read beforehand is
/// still so. With these a read-check-write (no two pools overlap, a policy's tier exists) holds
/// under concurrent writers: a writer that changed what the check read makes the commit fail
/// with `Conflict`, and the caller reads and checks again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The key meets the condition (`Revision(r)`: unchanged since it was read at `r`).
    Key { key: String, condition: Condition },
    /// No key under `prefix` was created or modified after revision `after` (the revision a
    /// list of the prefix returned). Deletions are not seen (etcd cannot compare them): guard a
    /// key that must still exist with a `Key` guard instead.
    NoWriteUnder { prefix: String, after: Revision },
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key was created or updated; the value is the new one.
    Put(KeyValue),
    /// The key was deleted at `revision`.
    Delete { key: String, revision: Revision },
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Put(value) => &value.key,
            Change::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            Change::Put(value) => value.modify_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A transaction's condition did not hold; nothing was written.
    #[error("conflict on {key}: expected {expected}, found {found}")]
    Conflict {
        key: String,
        expected: String,
        found: String,
    },
    /// A watch asked for history the store no longer has; list again and watch from there.
    #[error("revision {requested} has been compacted (oldest kept: {compacted}); list again")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The store could not be reached; the caller may retry.
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reports.
    #[error("datastore error: {0}")]
    Backend(String),
    /// A reader named a store file that does not exist (only writers create one).
    #[error("no datastore at {path}; `sluice apply` creates one")]
    Missing { path: String },
    /// The datastore address could not be understood.
    #[error("invalid datastore address `{address}`: {reason}")]
    InvalidAddress { address: String, reason: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A stream of changes under a prefix, in revision order.
pub trait Watch: Send {
    /// The next change, waiting at most `timeout`; `Ok(None)` when nothing came in time.
    /// `Err(StoreError::Compacted)` means changes were lost: list and start a new watch.
    /// `Err(StoreError::Unavailable)` means the store could not be reached within `timeout`;
    /// the watch stays usable and resumes where it stopped on the next call.
    fn next(&mut self, timeout: Duration) -> Result<Option<Change>>;
}

/// The datastore contract. Every backend passes the same contract test suite.
pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key under `prefix`, in key order, and the store revision they were read at.
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)>;

    /// Applies all operations atomically if every condition holds, else writes nothing and
    /// returns `Conflict` for the first condition that failed. Returns the new revision (the
    /// current one if the operations changed nothing, e.g. deleting an absent key). Keys must be
    /// non-empty and each written at most once per transaction (etcd's rule), else `Backend`.
    fn commit(&self, operations: &[Operation]) -> Result<Revision> {
        self.commit_if(&[], operations)
    }

    /// Like [`Store::commit`], and only if every guard holds too; else `Conflict` for the first
    /// guard that failed (guards are checked before the operations' conditions).
    fn commit_if(&self, guards: &[Guard], operations: &[Operation]) -> Result<Revision>;

    /// Changes under `prefix` with a revision greater than `after`. If that history has been
    /// compacted away, `Compacted` comes from this call or from the watch's first `next`.
    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>>;

    /// The store's current revision.
    fn revision(&self) -> Result<Revision>;
}

/// Rejects what etcd rejects, so that both backends accept the same transactions.
pub(crate) fn validate_operations(operations: &[Operation]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for operation in operations {
        let key = operation.key();
        if key.is_empty() {
            return Err(StoreError::Backend("a key must not be empty".into()));
        }
        if !seen.insert(key) {
            return Err(StoreError::Backend(format!(
                "key {key} is written more than once in one transaction"
            )));
        }
    }
    Ok(())
}

/// Checks one condition against the key's current modify revision (`None`: absent).
pub(crate) fn check_condition(key: &str, condition: Condition, current: Option<Revision>) -> Result<()> {
    let holds = match condition {
        Condition::Any => true,
        Condition::Absent => current.is_none(),
        Condition::Present => current.is_some(),
        Condition::Revision(revision) => current == Some(revision),
    };
    if holds {
        return Ok(());
    }
    let expected = match condition {
        Condition::Any => "anything".to_string(),
        Condition::Absent => "absent".to_string(),
        Condition::Present => "present".to_string(),
        Condition::Revision(revision) => format!("revision {revision}"),
    };
    let found = match current {
        None => "absent".to_string(),
        Some(revision) => format!("revision {revision}"),
    };
    Err(StoreError::Conflict {
        key: key.to_string(),
        expected,
        found,
    })
}

/// The conflict of a `NoWriteUnder` guard broken by `key`, written at `revision`.
pub(crate) fn prefix_conflict(prefix: &str, after: Revision, key: &str, revision: Revision) -> StoreError {
    StoreError::Conflict {
        key: key.to_string(),
        expected: format!("{}{prefix} written after revision {after}", PREFIX_CONFLICT_TEXT),
        found: format!("revision {revision}"),
    }
}

/// How a broken `NoWriteUnder` guard's conflict begins its `expected` text.
const PREFIX_CONFLICT_TEXT: &str = "nothing under ";

impl StoreError {
    /// Whether this conflict came from one of `guards` (another writer changed what a check
    /// read, so the caller should read and check again) rather than from a condition of one of
    /// `operations` (a stale resource version, a key to delete that is gone).
    pub fn broke_a_guard(&self, guards: &[Guard], operations: &[Operation]) -> bool {
        let StoreError::Conflict { key, expected, .. } = self else {
            return false;
        };
        let guarded = guards.iter().any(|guard| match guard {
            Guard::Key { key: guarded, .. } => guarded == key,
            Guard::NoWriteUnder { prefix, .. } => expected
                .strip_prefix(PREFIX_CONFLICT_TEXT)
                .is_some_and(|rest| rest.starts_with(prefix.as_str())),
        });
        guarded || !operations.iter().any(|operation| operation.key() == key)
    }
}

fn condition_of(operation: &Operation) -> Condition {
    match operation {
        Operation::Put { condition, .. } | Operation::Delete { condition, .. } => *condition,
    }
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None`
/// when there is none (empty prefix or all 0xff bytes): etcd's range-end rule.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
