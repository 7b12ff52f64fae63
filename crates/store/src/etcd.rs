//! The etcd v3 backend, for clusters of many nodes.
//!
//! The [`Store`] trait is synchronous, so each handle owns a small tokio runtime (one worker
//! thread, which keeps gRPC connections and keep-alives moving between calls) and blocks on it.
//! Do not call it from inside an async runtime. etcd-client balances over every endpoint given;
//! operations retry a bounded number of times when the cluster is unavailable (a member died,
//! an election is running), and watches resume from the last revision they delivered.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};
use tokio::runtime::Runtime;

use crate::{
    Change, Condition, KeyValue, Operation, Result, Revision, Store, StoreError, Watch, check_condition,
    condition_of, prefix_end, validate_operations,
};

/// Attempts of one operation while the cluster is unavailable, with doubling pauses from
/// `FIRST_PAUSE` up to `LONGEST_PAUSE` (about 7 s in all, longer than an election).
const ATTEMPTS: u32 = 10;
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// How long `watch` waits for the stream to open before leaving it to `next`.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per page when listing, so that a large prefix stays under gRPC's message size limit.
const LIST_PAGE: i64 = 500;

/// A handle to an etcd v3 cluster.
pub struct EtcdStore {
    runtime: Arc<Runtime>,
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// A client of the cluster at `endpoints` (`http://host:port` or `host:port`). It connects
    /// lazily: an unreachable cluster shows up as `Unavailable` from the first operation.
    pub fn connect<E: AsRef<str>>(endpoints: &[E]) -> Result<Self> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|endpoint| endpoint.as_ref().to_string())
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-etcd")
            .enable_all()
            .build()
            .map_err(|error| StoreError::Backend(format!("cannot start a runtime: {error}")))?;
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            // Notices a dead member whose connection stays open (a partition, not a crash).
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            // A member cut off from the leader refuses requests rather than serving stale data;
            // the refusal is retried on another member.
            .with_require_leader(true);
        let client = runtime
            .block_on(Client::connect(&endpoints, Some(options)))
            .map_err(store_error)?;
        Ok(EtcdStore {
            runtime: Arc::new(runtime),
            client,
            endpoints,
        })
    }

    /// The endpoints this handle was given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Compacts etcd's history up to `revision`: watches from before it get `Compacted`.
    /// Compacting to a revision already compacted does nothing.
    pub fn compact(&self, revision: Revision) -> Result<()> {
        let outcome = self.with_retries(|client| async move {
            let mut kv = client.kv_client();
            kv.compact(revision, Some(CompactionOptions::new().with_physical()))
                .await
        });
        match outcome {
            Err(StoreError::Backend(message)) if message.contains("has been compacted") => Ok(()),
            outcome => outcome.map(drop),
        }
    }

    /// Runs `attempt` until it succeeds, fails for a reason other than unavailability, or the
    /// attempts run out. Only for operations that are safe to repeat.
    fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.runtime.block_on(async {
            let mut pause = FIRST_PAUSE;
            let mut tries = 1;
            loop {
                match attempt(self.client.clone()).await.map_err(store_error) {
                    Err(StoreError::Unavailable(_)) if tries < ATTEMPTS => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(LONGEST_PAUSE);
                        tries += 1;
                    }
                    outcome => return outcome,
                }
            }
        })
    }

    /// After a commit attempt whose outcome is unknown (the connection broke after sending),
    /// a retry that conflicts may be conflicting with our own first attempt. It was ours if the
    /// store holds exactly what the transaction wrote: every put key with our value at one
    /// common revision, every deleted key gone. Returns that revision.
    fn applied_revision(&self, operations: &[Operation]) -> Result<Option<Revision>> {
        let mut put_revision = None;
        for operation in operations {
            let current = self.get(operation.key())?;
            match (operation, current) {
                (Operation::Put { value, .. }, Some(current)) if current.value == *value => {
                    if put_revision.is_some_and(|revision| revision != current.modify_revision) {
                        return Ok(None);
                    }
                    put_revision = Some(current.modify_revision);
                }
                (Operation::Delete { .. }, None) => {}
                _ => return Ok(None),
            }
        }
        match put_revision {
            Some(revision) => Ok(Some(revision)),
            None => self.revision().map(Some),
        }
    }
}

/// Maps etcd-client's errors: connection trouble and elections become `Unavailable`.
fn store_error(error: etcd_client::Error) -> StoreError {
    use etcd_client::Error;
    use tonic::Code;
    match error {
        Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                StoreError::Unavailable(status.message().to_string())
            }
            _ => StoreError::Backend(status.message().to_string()),
        },
        Error::TransportError(error) => StoreError::Unavailable(error.to_string()),
        Error::IoError(error) => StoreError::Unavailable(error.to_string()),
        other => StoreError::Backend(other.to_string()),
    }
}

fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: key_string(kv.key())?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        modify_revision: kv.mod_revision(),
    })
}

fn key_string(key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec())
        .map_err(|_| StoreError::Backend("etcd holds a key that is not UTF-8".into()))
}

/// etcd's range for a prefix; an empty prefix is every key ("\0" to the end).
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    (
        prefix.as_bytes().to_vec(),
        prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]),
    )
}

fn compare(operation: &Operation) -> Option<Compare> {
    let key = operation.key();
    match condition_of(operation) {
        Condition::Any => None,
        // A key's version counts its writes since creation: 0 exactly when it does not exist.
        Condition::Absent => Some(Compare::version(key, CompareOp::Equal, 0)),
        Condition::Present => Some(Compare::version(key, CompareOp::Greater, 0)),
        Condition::Revision(revision) => Some(Compare::mod_revision(key, CompareOp::Equal, revision)),
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = self.with_retries(|client| async move {
            let mut kv = client.kv_client();
            kv.get(key, None).await
        })?;
        response.kvs().first().map(key_value).transpose()
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let (start, end) = prefix_range(prefix);
        let mut keys = Vec::new();
        let mut from = start;
        // Later pages are read at the first page's revision: one consistent snapshot.
        let mut revision = 0;
        loop {
            let options = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE);
            let options = if revision > 0 {
                options.with_revision(revision)
            } else {
                options
            };
            let page_start = from.clone();
            let response = self.with_retries(|client| {
                let (key, options) = (page_start.clone(), options.clone());
                async move {
                    let mut kv = client.kv_client();
                    kv.get(key, Some(options)).await
                }
            })?;
            if revision == 0 {
                revision = response.header().map_or(0, |header| header.revision());
            }
            for kv in response.kvs() {
                keys.push(key_value(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((keys, revision)),
            }
        }
    }

    fn commit(&self, operations: &[Operation]) -> Result<Revision> {
        validate_operations(operations)?;
        let conditioned: Vec<&Operation> = operations
            .iter()
            .filter(|operation| condition_of(operation) != Condition::Any)
            .collect();
        let compares: Vec<Compare> = operations.iter().filter_map(compare).collect();
        let writes: Vec<TxnOp> = operations
            .iter()
            .map(|operation| match operation {
                Operation::Put { key, value, .. } => TxnOp::put(key.as_str(), value.clone(), None),
                Operation::Delete { key, .. } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        // On failure the same transaction reads the conditioned keys, to say which failed.
        let reads: Vec<TxnOp> = conditioned
            .iter()
            .map(|operation| TxnOp::get(operation.key(), None))
            .collect();
        let transaction = Txn::new().when(compares).and_then(writes).or_else(reads);

        let mut pause = FIRST_PAUSE;
        let mut uncertain = false;
        for attempt in 1..=ATTEMPTS {
            let outcome = self.runtime.block_on(async {
                let mut kv = self.client.kv_client();
                kv.txn(transaction.clone()).await
            });
            let response = match outcome.map_err(store_error) {
                Ok(response) => response,
                Err(StoreError::Unavailable(message)) => {
                    if attempt == ATTEMPTS {
                        return Err(StoreError::Unavailable(message));
                    }
                    // The request may have been applied before the connection broke.
                    uncertain = true;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(LONGEST_PAUSE);
                    continue;
                }
                Err(error) => return Err(error),
            };
            if response.succeeded() {
                return Ok(response.header().map_or(0, |header| header.revision()));
            }
            for (operation, read) in conditioned.iter().zip(response.op_responses()) {
                let TxnOpResponse::Get(read) = read else {
                    return Err(StoreError::Backend("etcd answered a read with a write".into()));
                };
                let current = read.kvs().first().map(|kv| kv.mod_revision());
                if let Err(conflict) = check_condition(operation.key(), condition_of(operation), current) {
                    if uncertain {
                        if let Some(revision) = self.applied_revision(operations)? {
                            return Ok(revision);
                        }
                    }
                    return Err(conflict);
                }
            }
            return Err(StoreError::Backend(
                "etcd rejected the transaction although every condition holds".into(),
            ));
        }
        Err(StoreError::Unavailable("etcd did not answer".into()))
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        let (key, range_end) = prefix_range(prefix);
        let mut watch = EtcdWatch {
            runtime: Arc::clone(&self.runtime),
            client: self.client.clone(),
            key,
            range_end,
            delivered: after,
            stream: None,
            buffer: VecDeque::new(),
        };
        // Opened now so that the first `next` need not wait for it; if etcd cannot be reached
        // now, `next` keeps trying.
        match watch.open(OPEN_TIMEOUT) {
            Ok(()) | Err(StoreError::Unavailable(_)) => Ok(Box::new(watch)),
            Err(error) => Err(error),
        }
    }

    fn revision(&self) -> Result<Revision> {
        let response = self.with_retries(|client| async move {
            let mut kv = client.kv_client();
            kv.get(vec![0], Some(GetOptions::new().with_count_only())).await
        })?;
        Ok(response.header().map_or(0, |header| header.revision()))
    }
}

/// An etcd watch that re-creates itself from the last revision it received whenever its
/// stream breaks (member down, election), so no change is lost or repeated.
struct EtcdWatch {
    runtime: Arc<Runtime>,
    client: Client,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// Every change up to this revision is in the buffer or already returned.
    delivered: Revision,
    stream: Option<WatchStream>,
    buffer: VecDeque<Change>,
}

impl std::fmt::Debug for EtcdWatch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EtcdWatch")
            .field("key", &self.key)
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl EtcdWatch {
    /// Buffers the events of one response. etcd never splits a revision across responses, so
    /// after it every change up to the last event's revision has been seen.
    fn accept(&mut self, events: &[etcd_client::Event]) -> Result<()> {
        let floor = self.delivered;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            if revision <= floor {
                continue;
            }
            let change = match event.event_type() {
                EventType::Put => Change::Put(key_value(kv)?),
                EventType::Delete => Change::Delete {
                    key: key_string(kv.key())?,
                    revision,
                },
            };
            self.buffer.push_back(change);
            self.delivered = self.delivered.max(revision);
        }
        Ok(())
    }
}

impl Watch for EtcdWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Change>> {
        let deadline = Instant::now() + timeout;
        let mut pause = FIRST_PAUSE;
        let mut trouble: Option<String> = None;
        loop {
            if let Some(change) = self.buffer.pop_front() {
                return Ok(Some(change));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() && (self.stream.is_none() || trouble.is_some()) {
                return match trouble {
                    Some(message) => Err(StoreError::Unavailable(message)),
                    None => Ok(None),
                };
            }
            let Some(stream) = self.stream.as_mut() else {
                match self.open(remaining) {
                    Ok(()) => {}
                    Err(StoreError::Unavailable(message)) => {
                        trouble = Some(message);
                        self.pause(&mut pause, deadline);
                    }
                    Err(error) => return Err(error),
                }
                continue;
            };
            let message = self
                .runtime
                .block_on(async { tokio::time::timeout(remaining, stream.message()).await });
            match message {
                // Nothing within the timeout; the stream stays open for the next call.
                Err(_) => return Ok(None),
                Ok(Ok(Some(response))) => {
                    if response.canceled() {
                        self.stream = None;
                        if response.compact_revision() > 0 {
                            return Err(StoreError::Compacted {
                                requested: self.delivered + 1,
                                compacted: response.compact_revision(),
                            });
                        }
                        // Canceled for another reason (e.g. the member lost its leader):
                        // watch again from where we are.
                        trouble = Some(format!("watch canceled: {}", response.cancel_reason()));
                        self.pause(&mut pause, deadline);
                        continue;
                    }
                    self.accept(response.events())?;
                    trouble = None;
                }
                Ok(Ok(None)) => {
                    self.stream = None;
                    trouble = Some("watch stream closed".into());
                }
                Ok(Err(error)) => {
                    self.stream = None;
                    match store_error(error) {
                        StoreError::Unavailable(message) => {
                            trouble = Some(message);
                            self.pause(&mut pause, deadline);
                        }
                        error => return Err(error),
                    }
                }
            }
        }
    }
}

impl EtcdWatch {
    /// Opens the stream from the revision after the last one delivered.
    fn open(&mut self, timeout: Duration) -> Result<()> {
        let options = WatchOptions::new()
            .with_range(self.range_end.clone())
            .with_start_revision(self.delivered + 1);
        let mut watch_client = self.client.watch_client();
        let key = self.key.clone();
        let opened = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, watch_client.watch(key, Some(options))).await });
        match opened {
            Ok(Ok(stream)) => {
                self.stream = Some(stream);
                Ok(())
            }
            Ok(Err(error)) => Err(store_error(error)),
            Err(_) => Err(StoreError::Unavailable("etcd did not answer in time".into())),
        }
    }

    /// Waits before the next reconnection attempt, never past `deadline`.
    fn pause(&self, pause: &mut Duration, deadline: Instant) {
        let wait = (*pause).min(deadline.saturating_duration_since(Instant::now()));
        std::thread::sleep(wait);
        *pause = (*pause * 2).min(LONGEST_PAUSE);
    }
}
