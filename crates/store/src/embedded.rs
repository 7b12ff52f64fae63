//! The embedded backend: one SQLite file.
//!
//! Why SQLite (through `rusqlite`, with SQLite itself bundled so the system's version does not
//! matter): the CLI, the node agent and the CNI plugin are separate processes on one machine that
//! open the same file. SQLite serialises their writers with file locks, and in WAL mode readers
//! go on while one writes. Single-process embedded stores (sled, redb, …) lock the file for one
//! process and would need a server in front of them.
//!
//! Layout: `kv` holds the live keys, `history` every change so that watches can replay from a
//! revision, and the single `meta` row the store revision and the compacted revision (history
//! below it is gone). Watches poll `history`, so they see writes of other processes too; between
//! polls they wait on inotify for a write to the file or its WAL, so a change is seen at once
//! instead of at the next poll (polling alone stays as the fallback where inotify is missing).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::{
    Change, Guard, KeyValue, Operation, Result, Revision, Store, StoreError, Watch, check_condition,
    condition_of, prefix_end, validate_operations,
};

/// The schema this code writes; a file with a higher one comes from a newer Sluice.
const SCHEMA_VERSION: i64 = 1;
/// How many revisions of history are kept by default for watches to replay.
pub const DEFAULT_HISTORY_REVISIONS: i64 = 10_000;
/// How long SQLite waits for another process's lock before reporting busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Busy reports that outlast the busy timeout are retried this many times.
const BUSY_RETRIES: u32 = 5;
/// A watch reads at most this many history rows per poll.
const WATCH_BATCH: i64 = 1_000;
/// A watch polls often at first and then backs off to this interval.
const LONGEST_POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The default backend: a revisioned key-value store in one SQLite file.
#[derive(Debug)]
pub struct EmbeddedStore {
    path: PathBuf,
    // rusqlite connections are not `Sync`; one connection per handle, used under a lock.
    connection: Mutex<Connection>,
    history_revisions: i64,
    access: Access,
}

/// How a handle opened its file; watches open their own connections the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadWrite,
    /// The file cannot be written (permissions, a read-only mount): reads only.
    ReadOnly,
    /// Read-only, and SQLite cannot create the WAL index beside the file (a directory that
    /// cannot be written) while no WAL exists: the file alone is the whole store, and SQLite
    /// reads it without the index.
    Immutable,
}

impl EmbeddedStore {
    /// Opens (or creates, with its parent directories) the store file at `path`, keeping
    /// [`DEFAULT_HISTORY_REVISIONS`] revisions of history.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_history(path, DEFAULT_HISTORY_REVISIONS)
    }

    /// Like [`EmbeddedStore::open`], keeping at least `history_revisions` (≥ 1) revisions of
    /// history; older history is compacted from time to time.
    pub fn open_with_history(path: impl AsRef<Path>, history_revisions: i64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if history_revisions < 1 {
            return Err(StoreError::Backend(
                "history must keep at least one revision".into(),
            ));
        }
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| {
                StoreError::Backend(format!("cannot create {}: {error}", parent.display()))
            })?;
        }
        let in_context = |failure: Failure| match failure {
            Failure::Sqlite(error) if sqlite_cannot_write(&error) => StoreError::Backend(format!(
                "the datastore {} cannot be written (no write permission or a read-only file \
                 system): {error}",
                path.display()
            )),
            Failure::Sqlite(error) => StoreError::Backend(format!("cannot open {}: {error}", path.display())),
            Failure::Store(error) => error,
        };
        let mut connection = connect(&path, Access::ReadWrite, true).map_err(in_context)?;
        with_busy_retry(|| create_schema(&mut connection)).map_err(in_context)?;
        Ok(EmbeddedStore {
            path,
            connection: Mutex::new(connection),
            history_revisions,
            access: Access::ReadWrite,
        })
    }

    /// Opens the store file at `path` only if it exists (`Missing` otherwise), for readers that
    /// must not create a store by mistake. A file that cannot be written (permissions, a
    /// read-only mount or directory) is opened for reading: writes then fail with a clear
    /// error instead of the open failing.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => {}
            Ok(_) => {
                return Err(StoreError::Backend(format!(
                    "{} is not a file; name the store file, e.g. store.db",
                    path.display()
                )));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing {
                    path: path.display().to_string(),
                });
            }
            Err(error) => {
                return Err(StoreError::Backend(format!(
                    "cannot read {}: {error}",
                    path.display()
                )));
            }
        }
        let writable = connect(&path, Access::ReadWrite, false).and_then(|mut connection| {
            with_busy_retry(|| create_schema(&mut connection))?;
            Ok(connection)
        });
        let (connection, access) = match writable {
            Ok(connection) => (connection, Access::ReadWrite),
            Err(failure) if cannot_write(&failure) => open_read_only(&path)?,
            Err(failure) => return Err(failure.into()),
        };
        Ok(EmbeddedStore {
            path,
            connection: Mutex::new(connection),
            history_revisions: DEFAULT_HISTORY_REVISIONS,
            access,
        })
    }

    /// Whether this handle can only read (the file could not be opened for writing).
    pub fn is_read_only(&self) -> bool {
        self.access != Access::ReadWrite
    }

    /// The error for a write through a read-only handle.
    fn refuse_write(&self) -> Result<()> {
        if self.is_read_only() {
            return Err(StoreError::Backend(format!(
                "the datastore {} cannot be written (it was opened read-only: no write permission \
                 or a read-only file system); nothing was written",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops history older than `revision`: watches from before it get `Compacted`.
    /// Compacting to a revision already compacted does nothing.
    pub fn compact(&self, revision: Revision) -> Result<()> {
        self.refuse_write()?;
        let mut connection = self.lock();
        with_busy_retry(|| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (current, compacted) = read_meta(&transaction)?;
            if revision > current {
                return Err(StoreError::Backend(format!(
                    "cannot compact to revision {revision}: the store is at {current}"
                ))
                .into());
            }
            if revision > compacted {
                compact_history(&transaction, revision)?;
            }
            transaction.commit()?;
            Ok(())
        })
        .map_err(StoreError::from)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no transaction open (they roll back on drop).
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Internal failures: SQLite's errors stay inside this module (they are not part of the API).
#[derive(Debug)]
enum Failure {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

type Outcome<T> = std::result::Result<T, Failure>;

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Failure::Sqlite(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Store(error) => error,
            Failure::Sqlite(error) if is_busy(&error) => {
                StoreError::Unavailable(format!("store file is busy: {error}"))
            }
            Failure::Sqlite(error) => StoreError::Backend(error.to_string()),
        }
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Whether opening for writing failed because the file, its directory or its file system
/// refuses writes (so reading may still work).
fn cannot_write(failure: &Failure) -> bool {
    match failure {
        Failure::Sqlite(error) => sqlite_cannot_write(error),
        Failure::Store(_) => false,
    }
}

fn sqlite_cannot_write(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied)
    )
}

/// Opens a file that cannot be written for reading, checking that it is a Sluice store.
fn open_read_only(path: &Path) -> Result<(Connection, Access)> {
    let read_only = connect(path, Access::ReadOnly, false).and_then(|connection| {
        with_busy_retry(|| check_schema(&connection))?;
        Ok(connection)
    });
    match read_only {
        Ok(connection) => return Ok((connection, Access::ReadOnly)),
        // SQLite could not create the WAL index (-shm) beside the file. Without a WAL every
        // commit is in the file itself, so it can be read as immutable; with one, it cannot.
        Err(failure) if cannot_write(&failure) && !wal_path(path).exists() => {}
        Err(failure) => {
            return Err(StoreError::Backend(format!(
                "cannot read {} without writing beside it: {}",
                path.display(),
                StoreError::from(failure)
            )));
        }
    }
    let connection = connect(path, Access::Immutable, false)?;
    with_busy_retry(|| check_schema(&connection))?;
    Ok((connection, Access::Immutable))
}

/// A path for a `file:` URI: `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    let mut escaped = String::new();
    for character in path.to_string_lossy().chars() {
        match character {
            '%' => escaped.push_str("%25"),
            '?' => escaped.push_str("%3f"),
            '#' => escaped.push_str("%23"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The store file's write-ahead log.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// A read-only handle's check that the file holds a store this code can read.
fn check_schema(connection: &Connection) -> Outcome<()> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version == 0 {
        return Err(
            StoreError::Backend("the file is not a Sluice datastore (it has no schema)".into()).into(),
        );
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "store file has schema version {version}; this Sluice knows up to {SCHEMA_VERSION}"
        ))
        .into());
    }
    read_meta(connection)?;
    Ok(())
}

fn connect(path: &Path, access: Access, create: bool) -> Outcome<Connection> {
    let base = OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = match access {
        Access::ReadWrite => {
            let mut flags = base | OpenFlags::SQLITE_OPEN_READ_WRITE;
            if create {
                flags |= OpenFlags::SQLITE_OPEN_CREATE;
            }
            Connection::open_with_flags(path, flags)
        }
        Access::ReadOnly => Connection::open_with_flags(path, base | OpenFlags::SQLITE_OPEN_READ_ONLY),
        Access::Immutable => {
            let uri = format!("file:{}?immutable=1", uri_path(path));
            Connection::open_with_flags(
                uri,
                base | OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
            )
        }
    };
    let connection = connection.map_err(|error| {
        // SQLite's own error when it only means "not writable", so that the caller can fall
        // back to reading.
        let failure = Failure::Sqlite(error);
        if cannot_write(&failure) {
            return failure;
        }
        Failure::Store(StoreError::Backend(format!(
            "cannot open {}: {}",
            path.display(),
            StoreError::from(failure)
        )))
    })?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // In WAL mode, NORMAL is what SQLite recommends: a commit survives any crash of the
    // process that made it (all a restarted process needs), and the file is never corrupted;
    // only an operating-system crash or power loss can undo the last commits. FULL would add
    // an fsync to every commit (about 4 ms here), which dominates CNI ADD and IPAM. Clusters
    // that need durability against power loss use the etcd backend.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    if access != Access::ReadWrite {
        return Ok(connection);
    }
    // SQLite opens a file it may not write for reading without saying so: such a handle is
    // treated as one that cannot write.
    if connection.is_readonly(rusqlite::MAIN_DB)? {
        return Err(Failure::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            Some(format!("{} cannot be written", path.display())),
        )));
    }
    with_busy_retry(|| {
        // WAL: readers (watches of other processes) do not block the writer, nor it them.
        let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{} cannot use write-ahead logging (journal mode {mode})",
                path.display()
            ))
            .into());
        }
        Ok(())
    })?;
    Ok(connection)
}

fn create_schema(connection: &mut Connection) -> Outcome<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "store file has schema version {version}; this Sluice knows up to {SCHEMA_VERSION}"
        ))
        .into());
    }
    if version < SCHEMA_VERSION {
        transaction.execute_batch(
            "CREATE TABLE kv (
                 key BLOB PRIMARY KEY,
                 value BLOB NOT NULL,
                 create_revision INTEGER NOT NULL,
                 modify_revision INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE history (
                 revision INTEGER NOT NULL,
                 sequence INTEGER NOT NULL,
                 key BLOB NOT NULL,
                 kind TEXT NOT NULL CHECK (kind IN ('put', 'delete')),
                 value BLOB,
                 create_revision INTEGER,
                 PRIMARY KEY (revision, sequence)
             ) WITHOUT ROWID;
             CREATE TABLE meta (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 revision INTEGER NOT NULL,
                 compacted INTEGER NOT NULL
             );
             INSERT INTO meta (id, revision, compacted) VALUES (1, 0, 0);
             PRAGMA user_version = 1;",
        )?;
    }
    transaction.commit()?;
    Ok(())
}

/// Runs `attempt` again while SQLite reports busy beyond its busy timeout (which happens, for
/// instance, while another process recovers the WAL).
fn with_busy_retry<T>(mut attempt: impl FnMut() -> Outcome<T>) -> Outcome<T> {
    let mut tries = 0;
    loop {
        match attempt() {
            Err(Failure::Sqlite(error)) if is_busy(&error) && tries < BUSY_RETRIES => {
                tries += 1;
                thread::sleep(Duration::from_millis(20 * u64::from(tries)));
            }
            outcome => return outcome,
        }
    }
}

fn read_meta(connection: &Connection) -> Outcome<(Revision, Revision)> {
    Ok(
        connection.query_row("SELECT revision, compacted FROM meta WHERE id = 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?,
    )
}

fn compact_history(connection: &Connection, revision: Revision) -> Outcome<()> {
    connection.execute("DELETE FROM history WHERE revision < ?1", [revision])?;
    connection.execute("UPDATE meta SET compacted = ?1 WHERE id = 1", [revision])?;
    Ok(())
}

fn key_from_bytes(bytes: Vec<u8>) -> Outcome<String> {
    String::from_utf8(bytes)
        .map_err(|_| Failure::Store(StoreError::Backend("a stored key is not UTF-8".into())))
}

/// Range condition for a prefix, with its parameters: `key >= ?` and, if there is an end,
/// `key < ?`.
fn prefix_range(prefix: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes()))
}

/// Checks the guards inside the write transaction, so nothing can change in between.
fn check_guards(transaction: &rusqlite::Transaction<'_>, guards: &[Guard]) -> Outcome<()> {
    for guard in guards {
        match guard {
            Guard::Key { key, condition } => {
                let current: Option<Revision> = transaction
                    .prepare_cached("SELECT modify_revision FROM kv WHERE key = ?1")?
                    .query_row([key.as_bytes()], |row| row.get(0))
                    .optional()?;
                check_condition(key, *condition, current)?;
            }
            Guard::NoWriteUnder { prefix, after } => {
                let (start, end) = prefix_range(prefix);
                let written: Option<(Vec<u8>, Revision)> = transaction
                    .prepare_cached(
                        "SELECT key, modify_revision FROM kv
                         WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) AND modify_revision > ?3
                         ORDER BY key LIMIT 1",
                    )?
                    .query_row(params![start, end, after], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                if let Some((key, revision)) = written {
                    return Err(
                        crate::prefix_conflict(prefix, *after, &key_from_bytes(key)?, revision).into(),
                    );
                }
            }
        }
    }
    Ok(())
}

fn commit_once(
    connection: &mut Connection,
    guards: &[Guard],
    operations: &[Operation],
    history_revisions: i64,
) -> Outcome<Revision> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (revision, compacted) = read_meta(&transaction)?;

    // All guards and conditions first: a failed one returns before anything is written (the
    // transaction rolls back when dropped).
    check_guards(&transaction, guards)?;
    let mut existing = Vec::with_capacity(operations.len());
    {
        let mut select =
            transaction.prepare_cached("SELECT create_revision, modify_revision FROM kv WHERE key = ?1")?;
        for operation in operations {
            let current: Option<(Revision, Revision)> = select
                .query_row([operation.key().as_bytes()], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            check_condition(
                operation.key(),
                condition_of(operation),
                current.map(|(_, modify)| modify),
            )?;
            existing.push(current);
        }
    }

    let new_revision = revision + 1;
    let mut sequence = 0_i64;
    for (operation, current) in operations.iter().zip(existing) {
        match operation {
            Operation::Put { key, value, .. } => {
                let create_revision = current.map_or(new_revision, |(create, _)| create);
                transaction
                    .prepare_cached(
                        "INSERT INTO kv (key, value, create_revision, modify_revision)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (key) DO UPDATE
                         SET value = excluded.value, modify_revision = excluded.modify_revision",
                    )?
                    .execute(params![key.as_bytes(), value, create_revision, new_revision])?;
                transaction
                    .prepare_cached(
                        "INSERT INTO history (revision, sequence, key, kind, value, create_revision)
                         VALUES (?1, ?2, ?3, 'put', ?4, ?5)",
                    )?
                    .execute(params![
                        new_revision,
                        sequence,
                        key.as_bytes(),
                        value,
                        create_revision
                    ])?;
                sequence += 1;
            }
            Operation::Delete { key, .. } => {
                if current.is_some() {
                    transaction
                        .prepare_cached("DELETE FROM kv WHERE key = ?1")?
                        .execute([key.as_bytes()])?;
                    transaction
                        .prepare_cached(
                            "INSERT INTO history (revision, sequence, key, kind)
                             VALUES (?1, ?2, ?3, 'delete')",
                        )?
                        .execute(params![new_revision, sequence, key.as_bytes()])?;
                    sequence += 1;
                }
            }
        }
    }
    if sequence == 0 {
        // Nothing changed (only deletes of absent keys): like etcd, no new revision.
        return Ok(revision);
    }
    transaction.execute("UPDATE meta SET revision = ?1 WHERE id = 1", [new_revision])?;

    // Compact in batches of a tenth of the kept history, not on every commit.
    let batch = (history_revisions / 10).max(1);
    if new_revision - compacted >= history_revisions + batch {
        compact_history(&transaction, new_revision - history_revisions + 1)?;
    }
    transaction.commit()?;
    Ok(new_revision)
}

impl Store for EmbeddedStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let connection = self.lock();
        let row = with_busy_retry(|| {
            Ok(connection
                .prepare_cached("SELECT value, create_revision, modify_revision FROM kv WHERE key = ?1")?
                .query_row([key.as_bytes()], |row| {
                    Ok((row.get::<_, Vec<u8>>(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?)
        })?;
        Ok(row.map(|(value, create_revision, modify_revision)| KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            modify_revision,
        }))
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let mut connection = self.lock();
        let (start, end) = prefix_range(prefix);
        with_busy_retry(|| {
            // One read transaction: the keys and the revision come from the same snapshot.
            let transaction = connection.transaction()?;
            let (revision, _) = read_meta(&transaction)?;
            let mut rows = Vec::new();
            {
                let mut select = transaction.prepare_cached(
                    "SELECT key, value, create_revision, modify_revision FROM kv
                     WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key",
                )?;
                let mut cursor = select.query(params![start, end])?;
                while let Some(row) = cursor.next()? {
                    rows.push(KeyValue {
                        key: key_from_bytes(row.get(0)?)?,
                        value: row.get(1)?,
                        create_revision: row.get(2)?,
                        modify_revision: row.get(3)?,
                    });
                }
            }
            transaction.commit()?;
            Ok((rows, revision))
        })
        .map_err(StoreError::from)
    }

    fn commit_if(&self, guards: &[Guard], operations: &[Operation]) -> Result<Revision> {
        validate_operations(operations)?;
        self.refuse_write()?;
        let mut connection = self.lock();
        with_busy_retry(|| commit_once(&mut connection, guards, operations, self.history_revisions))
            .map_err(StoreError::from)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        Ok(Box::new(self.open_watch(prefix, after)?))
    }

    fn revision(&self) -> Result<Revision> {
        let connection = self.lock();
        Ok(with_busy_retry(|| read_meta(&connection))?.0)
    }
}

/// Where a watch has read up to in `history`.
#[derive(Debug, Clone, Copy)]
struct Position {
    revision: Revision,
    /// `None`: every row of `revision` has been read; `Some(s)`: rows up to sequence `s`.
    sequence: Option<i64>,
}

impl Position {
    /// The oldest revision whose history the watch still needs.
    fn needed(self) -> Revision {
        match self.sequence {
            None => self.revision + 1,
            Some(_) => self.revision,
        }
    }
}

/// Polls `history` through its own connection: no thread, and it sees other processes' writes.
#[derive(Debug)]
struct EmbeddedWatch {
    connection: Connection,
    /// `None` where inotify is not available: the watch then only polls.
    writes: Option<WriteSignal>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    position: Position,
    buffer: VecDeque<Change>,
}

impl EmbeddedWatch {
    /// Reads the next batch of changes into the buffer.
    fn poll(&mut self) -> Outcome<()> {
        let transaction = self.connection.transaction()?;
        let (_, compacted) = read_meta(&transaction)?;
        // Checked in the same snapshot as the read below, so no compaction can slip between.
        if self.position.needed() < compacted {
            return Err(StoreError::Compacted {
                requested: self.position.needed(),
                compacted,
            }
            .into());
        }
        let mut select = transaction.prepare_cached(
            "SELECT revision, sequence, key, kind, value, create_revision FROM history
             WHERE (revision, sequence) > (?1, ?2)
               AND key >= ?3 AND (?4 IS NULL OR key < ?4)
             ORDER BY revision, sequence LIMIT ?5",
        )?;
        let mut cursor = select.query(params![
            self.position.revision,
            self.position.sequence.unwrap_or(i64::MAX),
            self.start,
            self.end,
            WATCH_BATCH
        ])?;
        let mut read = 0;
        while let Some(row) = cursor.next()? {
            let revision: Revision = row.get(0)?;
            let sequence: i64 = row.get(1)?;
            let key = key_from_bytes(row.get(2)?)?;
            let kind: String = row.get(3)?;
            let change = if kind == "put" {
                Change::Put(KeyValue {
                    key,
                    value: row.get(4)?,
                    create_revision: row.get(5)?,
                    modify_revision: revision,
                })
            } else {
                Change::Delete { key, revision }
            };
            self.buffer.push_back(change);
            self.position = Position {
                revision,
                sequence: Some(sequence),
            };
            read += 1;
        }
        if read < WATCH_BATCH {
            // Everything in this snapshot has been read, so the last revision is complete.
            self.position.sequence = None;
        }
        drop(cursor);
        drop(select);
        transaction.commit()?;
        Ok(())
    }
}

impl Watch for EmbeddedWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Change>> {
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(2);
        loop {
            if let Some(change) = self.buffer.pop_front() {
                return Ok(Some(change));
            }
            match self.poll() {
                Ok(()) => {}
                // Another process holds the file longer than the busy timeout: poll again.
                Err(Failure::Sqlite(error)) if is_busy(&error) => {}
                Err(failure) => return Err(failure.into()),
            }
            if !self.buffer.is_empty() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait = interval.min(deadline - now);
            match &self.writes {
                // The write can come a moment before SQLite makes the commit visible: poll
                // again soon rather than at the backed-off pace.
                Some(writes) if writes.wait(wait) => {
                    interval = Duration::from_millis(1);
                    continue;
                }
                Some(_) => {}
                None => thread::sleep(wait),
            }
            interval = (interval * 2).min(LONGEST_POLL_INTERVAL);
        }
    }
}

impl EmbeddedStore {
    /// What [`Store::watch`] returns, unboxed.
    fn open_watch(&self, prefix: &str, after: Revision) -> Result<EmbeddedWatch> {
        let connection = connect(&self.path, self.access, false)?;
        let (_, compacted) = with_busy_retry(|| read_meta(&connection))?;
        if after + 1 < compacted {
            return Err(StoreError::Compacted {
                requested: after + 1,
                compacted,
            });
        }
        let (start, end) = prefix_range(prefix);
        Ok(EmbeddedWatch {
            connection,
            writes: WriteSignal::new(&self.path),
            start,
            end,
            position: Position {
                revision: after,
                sequence: None,
            },
            buffer: VecDeque::new(),
        })
    }
}

/// Inotify on the store file's directory, for writes to the file and its WAL (a directory
/// watch, because SQLite deletes and recreates the WAL).
#[derive(Debug)]
struct WriteSignal {
    inotify: Inotify,
    names: [OsString; 2],
}

impl WriteSignal {
    fn new(path: &Path) -> Option<WriteSignal> {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let file = path.file_name()?.to_os_string();
        let mut wal = file.clone();
        wal.push("-wal");
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        inotify
            .add_watch(
                directory,
                AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
            )
            .ok()?;
        Some(WriteSignal {
            inotify,
            names: [file, wal],
        })
    }

    /// Waits up to `timeout` for a write to the store; says whether one came. Events for
    /// other files in the directory are read and ignored.
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut descriptors = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut descriptors, timeout) {
                Ok(ready) if ready > 0 => {}
                // Timed out, or interrupted: the caller polls the store either way.
                _ => return false,
            }
            let events = self.inotify.read_events().unwrap_or_default();
            // An overflowed queue may have lost a write of ours.
            let ours = events.iter().any(|event| {
                event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                    || event
                        .name
                        .as_ref()
                        .is_some_and(|name| self.names.iter().any(|wanted| wanted == name))
            });
            if ours {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod write_signal_tests {
    use super::*;

    #[test]
    fn a_write_from_another_handle_wakes_the_waiter_and_other_files_do_not() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("store.db");
        let writer = EmbeddedStore::open(&path).unwrap();
        let signal = WriteSignal::new(&path).expect("inotify works here");
        // Watches are woken by it, not only polled.
        assert!(writer.open_watch("/", 0).unwrap().writes.is_some());
        // Another file in the directory changing is not a write to the store.
        std::fs::write(directory.path().join("agent.log"), "noise").unwrap();
        assert!(!signal.wait(Duration::from_millis(200)));
        let waiter = thread::spawn(move || signal.wait(Duration::from_secs(10)));
        thread::sleep(Duration::from_millis(50));
        writer
            .commit(&[Operation::Put {
                key: "/k".into(),
                value: b"v".to_vec(),
                condition: crate::Condition::Any,
            }])
            .unwrap();
        assert!(waiter.join().unwrap(), "the write did not wake the waiter");
    }
}
