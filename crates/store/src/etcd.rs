//! The etcd v3 backend, for clusters of many nodes.
//!
//! The [`Store`] trait is synchronous, so each handle owns a small tokio runtime (one worker
//! thread, which keeps gRPC connections and keep-alives moving between calls) and blocks on it.
//! Do not call it from inside an async runtime. It speaks etcd's gRPC API through tonic, with the
//! generated code committed; the channel balances over every endpoint given; operations retry a bounded number of times when the cluster is unavailable (a member died,
//! an election is running), and watches resume from the last revision they delivered.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::{
    Change, Condition, Guard, KeyValue, Operation, Result, Revision, Store, StoreError, Watch,
    check_condition, condition_of, prefix_end, validate_operations,
};

/// etcd's gRPC API, generated from the trimmed protos in `proto/` and committed, so that building
/// needs no `protoc` (tests/generated.rs checks it is current and says how to regenerate it).
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub(crate) mod proto {
    pub mod mvccpb {
        include!("generated/mvccpb.rs");
    }
    pub mod etcdserverpb {
        include!("generated/etcdserverpb.rs");
    }
}

use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::watch_client::WatchClient;
use proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader,
    StatusRequest, TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse, request_op, response_op,
    watch_request,
};
use proto::mvccpb::event::EventType;

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
    channel: Channel,
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

/// A request that a member cut off from the leader refuses rather than answering with stale
/// data (etcd's `hasleader` metadata); the refusal is `Unavailable` and retried elsewhere.
fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
    request
}

/// One endpoint's settings. `endpoint` is `http://host:port` or `host:port`.
fn endpoint(endpoint: &str) -> Result<Endpoint> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    if url.starts_with("https://") {
        return Err(StoreError::Backend(format!(
            "etcd endpoint {endpoint}: TLS connections to etcd are not supported yet"
        )));
    }
    Ok(Endpoint::from_shared(url)
        .map_err(|error| StoreError::Backend(format!("etcd endpoint {endpoint}: {error}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        // Notices a dead member whose connection stays open (a partition, not a crash).
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
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
        let settings = endpoints
            .iter()
            .map(|address| endpoint(address))
            .collect::<Result<Vec<_>>>()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-etcd")
            .enable_all()
            .build()
            .map_err(|error| StoreError::Backend(format!("cannot start a runtime: {error}")))?;
        // The balancer spawns its worker on the current runtime, so it is built inside ours.
        let channel = {
            let _inside = runtime.enter();
            Channel::balance_list(settings.into_iter())
        };
        Ok(EtcdStore {
            runtime: Arc::new(runtime),
            channel,
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
        let outcome = self.with_retries(|channel| async move {
            KvClient::new(channel)
                .compact(request(CompactionRequest {
                    revision,
                    physical: true,
                }))
                .await
        });
        match outcome {
            Err(StoreError::Backend(message)) if message.contains("has been compacted") => Ok(()),
            outcome => outcome.map(drop),
        }
    }

    /// What the member at `endpoint` (one of this handle's, or any other) says of itself: its
    /// member id and the id of the leader it follows (0 while it knows none).
    pub fn member_status(&self, endpoint: &str) -> Result<MemberStatus> {
        let settings = self::endpoint(endpoint)?;
        let status = self.runtime.block_on(async {
            let channel = settings
                .connect()
                .await
                .map_err(|error| StoreError::Unavailable(error.to_string()))?;
            MaintenanceClient::new(channel)
                .status(tonic::Request::new(StatusRequest {}))
                .await
                .map_err(store_error)
        })?;
        let status = status.into_inner();
        Ok(MemberStatus {
            member: status.header.map_or(0, |header| header.member_id),
            leader: status.leader,
        })
    }

    /// Runs `attempt` until it succeeds, fails for a reason other than unavailability, or the
    /// attempts run out. Only for operations that are safe to repeat.
    fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.runtime.block_on(async {
            let mut pause = FIRST_PAUSE;
            let mut tries = 1;
            loop {
                match attempt(self.channel.clone()).await.map_err(store_error) {
                    Err(StoreError::Unavailable(_)) if tries < ATTEMPTS => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(LONGEST_PAUSE);
                        tries += 1;
                    }
                    outcome => return outcome.map(tonic::Response::into_inner),
                }
            }
        })
    }

    fn range(&self, range: RangeRequest) -> Result<proto::etcdserverpb::RangeResponse> {
        self.with_retries(|channel| {
            let range = range.clone();
            async move { KvClient::new(channel).range(request(range)).await }
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

/// One etcd member's view of the cluster, from its Maintenance Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member's id.
    pub member: u64,
    /// The id of the leader it follows; 0 when it knows none.
    pub leader: u64,
}

/// Maps gRPC errors: connection trouble and elections become `Unavailable`.
fn store_error(status: Status) -> StoreError {
    match status.code() {
        // tonic reports a channel that could not connect as Unknown ("Service was not ready").
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            StoreError::Unavailable(status.message().to_string())
        }
        _ => StoreError::Backend(status.message().to_string()),
    }
}

fn key_value(kv: &proto::mvccpb::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: key_string(&kv.key)?,
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        modify_revision: kv.mod_revision,
    })
}

fn key_string(key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec())
        .map_err(|_| StoreError::Backend("etcd holds a key that is not UTF-8".into()))
}

fn header_revision(header: Option<&ResponseHeader>) -> Revision {
    header.map_or(0, |header| header.revision)
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

fn compare_key(key: &str, condition: Condition) -> Option<Compare> {
    let compare = |result: CompareResult, target: CompareTarget, union: TargetUnion| Compare {
        result: result as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    };
    match condition {
        Condition::Any => None,
        // A key's version counts its writes since creation: 0 exactly when it does not exist.
        Condition::Absent => Some(compare(
            CompareResult::Equal,
            CompareTarget::Version,
            TargetUnion::Version(0),
        )),
        Condition::Present => Some(compare(
            CompareResult::Greater,
            CompareTarget::Version,
            TargetUnion::Version(0),
        )),
        Condition::Revision(revision) => Some(compare(
            CompareResult::Equal,
            CompareTarget::Mod,
            TargetUnion::ModRevision(revision),
        )),
    }
}

/// A guard as an etcd compare, and the read that shows what broke it.
fn guard_compare(guard: &Guard) -> Option<(Compare, RangeRequest)> {
    match guard {
        Guard::Key { key, condition } => compare_key(key, *condition).map(|compare| {
            let read = RangeRequest {
                key: key.as_bytes().to_vec(),
                ..RangeRequest::default()
            };
            (compare, read)
        }),
        Guard::NoWriteUnder { prefix, after } => {
            let (key, range_end) = prefix_range(prefix);
            // A range compare holds when every key in the range satisfies it (and when the
            // range is empty): every modify revision at most `after`.
            let compare = Compare {
                result: CompareResult::Less as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone(),
                range_end: range_end.clone(),
                target_union: Some(TargetUnion::ModRevision(after + 1)),
            };
            let read = RangeRequest {
                key,
                range_end,
                limit: 1,
                min_mod_revision: after + 1,
                ..RangeRequest::default()
            };
            Some((compare, read))
        }
    }
}

fn read_op(range: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(range)),
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = self.range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..RangeRequest::default()
        })?;
        response.kvs.first().map(key_value).transpose()
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let (start, end) = prefix_range(prefix);
        let mut keys = Vec::new();
        let mut from = start;
        // Later pages are read at the first page's revision: one consistent snapshot.
        let mut revision = 0;
        loop {
            let response = self.range(RangeRequest {
                key: from.clone(),
                range_end: end.clone(),
                limit: LIST_PAGE,
                revision,
                ..RangeRequest::default()
            })?;
            if revision == 0 {
                revision = header_revision(response.header.as_ref());
            }
            for kv in &response.kvs {
                keys.push(key_value(kv)?);
            }
            match response.kvs.last() {
                Some(last) if response.more => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => return Ok((keys, revision)),
            }
        }
    }

    fn commit_if(&self, guards: &[Guard], operations: &[Operation]) -> Result<Revision> {
        validate_operations(operations)?;
        let guarded: Vec<(&Guard, Compare, RangeRequest)> = guards
            .iter()
            .filter_map(|guard| guard_compare(guard).map(|(compare, read)| (guard, compare, read)))
            .collect();
        let conditioned: Vec<(&Operation, Compare)> = operations
            .iter()
            .filter_map(|operation| {
                compare_key(operation.key(), condition_of(operation)).map(|compare| (operation, compare))
            })
            .collect();
        let writes: Vec<RequestOp> = operations
            .iter()
            .map(|operation| RequestOp {
                request: Some(match operation {
                    Operation::Put { key, value, .. } => request_op::Request::RequestPut(PutRequest {
                        key: key.as_bytes().to_vec(),
                        value: value.clone(),
                        ..PutRequest::default()
                    }),
                    Operation::Delete { key, .. } => {
                        request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                            key: key.as_bytes().to_vec(),
                            ..DeleteRangeRequest::default()
                        })
                    }
                }),
            })
            .collect();
        // On failure the same transaction reads what the compares looked at, to say which
        // failed: the guards' reads first, then the conditioned keys.
        let reads: Vec<RequestOp> = guarded
            .iter()
            .map(|(_, _, read)| read_op(read.clone()))
            .chain(conditioned.iter().map(|(operation, _)| {
                read_op(RangeRequest {
                    key: operation.key().as_bytes().to_vec(),
                    ..RangeRequest::default()
                })
            }))
            .collect();
        let transaction = TxnRequest {
            compare: guarded
                .iter()
                .map(|(_, compare, _)| compare.clone())
                .chain(conditioned.iter().map(|(_, compare)| compare.clone()))
                .collect(),
            success: writes,
            failure: reads,
        };

        let mut pause = FIRST_PAUSE;
        let mut uncertain = false;
        for attempt in 1..=ATTEMPTS {
            let outcome = self.runtime.block_on(async {
                KvClient::new(self.channel.clone())
                    .txn(request(transaction.clone()))
                    .await
            });
            let response = match outcome.map_err(store_error) {
                Ok(response) => response.into_inner(),
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
            if response.succeeded {
                return Ok(header_revision(response.header.as_ref()));
            }
            let mut reads = Vec::with_capacity(response.responses.len());
            for read in response.responses {
                match read.response {
                    Some(response_op::Response::ResponseRange(range)) => reads.push(range.kvs),
                    _ => return Err(StoreError::Backend("etcd answered a read with a write".into())),
                }
            }
            let mut conflict = None;
            for ((guard, _, _), kvs) in guarded.iter().zip(&reads) {
                let current = kvs.first().map(|kv| (kv.key.as_slice(), kv.mod_revision));
                if let Err(error) = check_guard(guard, current) {
                    conflict = Some(error);
                    break;
                }
            }
            if conflict.is_none() {
                for ((operation, _), kvs) in conditioned.iter().zip(&reads[guarded.len().min(reads.len())..])
                {
                    let current = kvs.first().map(|kv| kv.mod_revision);
                    if let Err(error) = check_condition(operation.key(), condition_of(operation), current) {
                        conflict = Some(error);
                        break;
                    }
                }
            }
            let Some(conflict) = conflict else {
                return Err(StoreError::Backend(
                    "etcd rejected the transaction although every condition holds".into(),
                ));
            };
            if uncertain {
                if let Some(revision) = self.applied_revision(operations)? {
                    return Ok(revision);
                }
            }
            return Err(conflict);
        }
        Err(StoreError::Unavailable("etcd did not answer".into()))
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Box<dyn Watch>> {
        let (key, range_end) = prefix_range(prefix);
        let mut watch = EtcdWatch {
            runtime: Arc::clone(&self.runtime),
            channel: self.channel.clone(),
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
        let response = self.range(RangeRequest {
            key: vec![0],
            count_only: true,
            ..RangeRequest::default()
        })?;
        Ok(header_revision(response.header.as_ref()))
    }
}

/// Checks a guard against what etcd's failure branch read for it: for a key guard the key (if
/// present) and its modify revision, for a prefix guard the first key written after the
/// guard's revision (if any).
fn check_guard(guard: &Guard, current: Option<(&[u8], Revision)>) -> Result<()> {
    match guard {
        Guard::Key { key, condition } => {
            check_condition(key, *condition, current.map(|(_, revision)| revision))
        }
        Guard::NoWriteUnder { prefix, after } => match current {
            None => Ok(()),
            Some((key, revision)) => Err(crate::prefix_conflict(
                prefix,
                *after,
                &key_string(key)?,
                revision,
            )),
        },
    }
}

/// The open half of a watch: the sender keeps etcd's side of the stream open, the receiver
/// yields its responses.
struct WatchStream {
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

/// An etcd watch that re-creates itself from the last revision it received whenever its
/// stream breaks (member down, election), so no change is lost or repeated.
struct EtcdWatch {
    runtime: Arc<Runtime>,
    channel: Channel,
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
    fn accept(&mut self, events: &[proto::mvccpb::Event]) -> Result<()> {
        let floor = self.delivered;
        for event in events {
            let Some(kv) = event.kv.as_ref() else { continue };
            let revision = kv.mod_revision;
            if revision <= floor {
                continue;
            }
            let change = match EventType::try_from(event.r#type) {
                Ok(EventType::Put) => Change::Put(key_value(kv)?),
                Ok(EventType::Delete) => Change::Delete {
                    key: key_string(&kv.key)?,
                    revision,
                },
                Err(_) => {
                    return Err(StoreError::Backend(format!(
                        "etcd sent an event of unknown type {}",
                        event.r#type
                    )));
                }
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
                .block_on(async { tokio::time::timeout(remaining, stream.responses.message()).await });
            match message {
                // Nothing within the timeout; the stream stays open for the next call.
                Err(_) => return Ok(None),
                Ok(Ok(Some(response))) => {
                    if response.canceled {
                        self.stream = None;
                        if response.compact_revision > 0 {
                            return Err(StoreError::Compacted {
                                requested: self.delivered + 1,
                                compacted: response.compact_revision,
                            });
                        }
                        // Canceled for another reason (e.g. the member lost its leader):
                        // watch again from where we are.
                        trouble = Some(format!("watch canceled: {}", response.cancel_reason));
                        self.pause(&mut pause, deadline);
                        continue;
                    }
                    self.accept(&response.events)?;
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
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key: self.key.clone(),
                range_end: self.range_end.clone(),
                start_revision: self.delivered + 1,
                ..WatchCreateRequest::default()
            })),
        };
        let (requests, receiver) = mpsc::channel(1);
        requests
            .try_send(create)
            .map_err(|_| StoreError::Backend("cannot queue the watch request".into()))?;
        let mut client = WatchClient::new(self.channel.clone());
        let opened = self.runtime.block_on(async {
            tokio::time::timeout(timeout, client.watch(request(ReceiverStream::new(receiver)))).await
        });
        match opened {
            Ok(Ok(responses)) => {
                self.stream = Some(WatchStream {
                    _requests: requests,
                    responses: responses.into_inner(),
                });
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
