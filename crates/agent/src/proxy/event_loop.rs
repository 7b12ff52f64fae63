//! The proxy's event loop: its listeners and every connection on one thread, driven by epoll
//! (mio, edge-triggered). A thread per connection cost two thread wakeups per keep-alive
//! request and a thread start per connection (profiled under `cargo bench -p sluice-lab
//! --bench l7`: a third of the proxy's time went to task switches, and with a new connection
//! per request most of it to starting threads); here one wakeup serves every socket that
//! became ready, and a connection costs a slab entry.
//!
//! Each connection is the client's socket (what the pod sent, to the original destination),
//! the core reading it (`sluice_proxy`), the judge deciding, and, once something is allowed,
//! the upstream socket. Bytes are read into one shared buffer and written straight on; only
//! what the other side cannot take yet is kept, and a side with more than
//! [`PENDING_LIMIT`] waiting is not read until it drains (backpressure). Nothing reaches the
//! destination before the judge allowed it.
//!
//! Bytes that pass untouched (answers to HTTP/1.1 requests, both ways of an admitted TLS
//! connection) move by `splice` through a kernel pipe once a read shows they come in bulk (it
//! filled the buffer): the kernel hands the pages from one socket to the other and the proxy
//! never copies them. Small answers keep the plain read and write, which costs fewer calls.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags};
use slab::Slab;
use sluice_policy::FlowL7;
use sluice_proxy::http::{HttpConnection, Limits, Output};
use sluice_proxy::http2::{Http2Connection, Http2Decision, Http2Limits, Http2Output, ToClient};
use sluice_proxy::tls::{ClientHelloReader, HelloProgress};
use socket2::SockRef;

use super::judge::{FlowJudge, Outcome};
use super::stats::ProxyStats;

/// The shared read buffer: one read of it is at most this much.
const READ_BYTES: usize = 64 * 1024;
/// Bytes waiting for one side beyond which the other side is not read.
const PENDING_LIMIT: usize = 64 * 1024;
/// A pipe's size, and what one splice moves at most. Larger than the default 64 KiB: 13–27 %
/// less of the proxy's CPU time per GiB in `cargo bench -p sluice-lab --bench l7`
/// (docs/benchmarks.md). A pipe holds page references of the sockets' buffers, not copies.
const SPLICE_BYTES: usize = 512 * 1024;
/// How often deadlines are checked (they are seconds long; a refusal's drain is 200 ms).
const TICK: Duration = Duration::from_millis(100);
/// Listener tokens sit at the top of the token space, far from connections' (2 per slab key).
const FIRST_LISTENER: usize = usize::MAX / 2;

/// How long the proxy waits on each side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// A request head or a ClientHello, counted from the last read.
    pub head: Duration,
    /// A keep-alive connection between requests.
    pub idle: Duration,
    /// Opening the upstream connection.
    pub connect: Duration,
    /// A spliced TLS connection or an answer staying silent.
    pub stream: Duration,
    /// Reading what the client still sends after a refusal, so that closing does not reset
    /// the answer away.
    pub drain: Duration,
    /// How long a side's empty pipe stays after its sender went silent (idle connections
    /// give theirs back to the bulk transfers that need them).
    pub pipe_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            head: Duration::from_secs(10),
            idle: Duration::from_secs(120),
            connect: Duration::from_secs(5),
            stream: Duration::from_secs(600),
            drain: Duration::from_millis(200),
            pipe_idle: Duration::from_secs(1),
        }
    }
}

/// How many connections the proxy holds open at once, per pod and in all. A connection over
/// either bound is reset as it is accepted (fail closed: nothing of it is forwarded), so one pod
/// opening connections without end cannot take the proxy from the node's other pods.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Per pod address (a dual-stack pod has one bound per family).
    pub per_pod: usize,
    pub total: usize,
    /// Kernel pipes held at once to splice bulk bytes (two open files each, kept out of the
    /// connections' share of the open-file limit); connections past it copy instead.
    pub pipes: usize,
}

/// The default bound per pod: far above what an application keeps open to a few APIs, far
/// below what the proxy holds in all.
pub const DEFAULT_CONNECTIONS_PER_POD: u32 = 1_024;
/// The default bound in all (the open-file limit may lower it).
pub const DEFAULT_CONNECTIONS: u32 = 32_768;
/// The default number of pipes: bulk transfers are a few of the connections.
pub const DEFAULT_PIPES: usize = 1_024;

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            per_pod: DEFAULT_CONNECTIONS_PER_POD as usize,
            total: DEFAULT_CONNECTIONS as usize,
            pipes: DEFAULT_PIPES,
        }
    }
}

/// The connections open per pod, against the limits.
#[derive(Debug)]
struct Occupancy {
    limits: ConnectionLimits,
    per_pod: HashMap<IpAddr, usize>,
    open: usize,
    /// When a refusal was last logged (refusals come in floods: at most one line in 10 s).
    last_logged: Option<Instant>,
}

impl Occupancy {
    fn new(limits: ConnectionLimits) -> Occupancy {
        Occupancy {
            limits,
            per_pod: HashMap::new(),
            open: 0,
            last_logged: None,
        }
    }

    /// Takes a place for a connection from `pod`, or counts and logs why there is none.
    fn take(&mut self, pod: IpAddr, stats: &ProxyStats) -> bool {
        let pod_open = self.per_pod.get(&pod).copied().unwrap_or(0);
        let refusal = if self.open >= self.limits.total {
            ProxyStats::count(&stats.refused_proxy_limit);
            Some("the proxy has as many connections open as it may")
        } else if pod_open >= self.limits.per_pod {
            ProxyStats::count(&stats.refused_pod_limit);
            Some("the pod has as many connections through the proxy open as it may")
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let now = Instant::now();
            if self
                .last_logged
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
            {
                self.last_logged = Some(now);
                tracing::warn!(%pod, pod_open, open = self.open, limits = ?self.limits, "{refusal}: connection reset (logged once in 10 s)");
            }
            return false;
        }
        *self.per_pod.entry(pod).or_default() += 1;
        self.open += 1;
        stats.open.store(self.open as u64, Ordering::Relaxed);
        true
    }

    fn release(&mut self, pod: IpAddr, stats: &ProxyStats) {
        if let Some(open) = self.per_pod.get_mut(&pod) {
            *open -= 1;
            if *open == 0 {
                self.per_pod.remove(&pod);
            }
        }
        self.open = self.open.saturating_sub(1);
        stats.open.store(self.open as u64, Ordering::Relaxed);
    }
}

/// What the loop asks of the node: whether to judge a connection, and how to reach its
/// destination.
pub(crate) trait Admission {
    /// The judge of a connection from `peer` to `original`, or `None` to reset it.
    fn admit(&self, peer: SocketAddr, original: SocketAddr) -> Option<Arc<FlowJudge>>;
    /// A non-blocking connection, being opened, to `original` on the client's behalf.
    fn connect(&self, peer: SocketAddr, original: SocketAddr) -> io::Result<std::net::TcpStream>;
}

/// Serves `listeners` until `stop` is set (the proxy child never sets it; tests do).
pub(crate) fn run(
    listeners: Vec<TcpListener>,
    admission: &dyn Admission,
    timeouts: Timeouts,
    limits: ConnectionLimits,
    stats: &ProxyStats,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listeners = listeners;
    for (index, listener) in listeners.iter_mut().enumerate() {
        poll.registry()
            .register(listener, Token(FIRST_LISTENER + index), Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut connections: Slab<Connection> = Slab::new();
    let mut occupancy = Occupancy::new(limits);
    let mut buffer = vec![0_u8; READ_BYTES];
    let mut outputs = Vec::new();
    let mut pipes = PipeBudget {
        open: 0,
        most: limits.pipes,
    };
    let mut next_tick = Instant::now() + TICK;
    // A listener whose accept failed for want of resources is tried again each tick: with
    // edge-triggered readiness no new event would come for the connections already queued.
    let mut accept_again = vec![false; listeners.len()];
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(TICK)) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        for event in &events {
            let token = event.token().0;
            if token >= FIRST_LISTENER {
                let index = token - FIRST_LISTENER;
                let mut accepting = Accepting {
                    registry: poll.registry(),
                    connections: &mut connections,
                    occupancy: &mut occupancy,
                    admission,
                    stats,
                };
                accept_again[index] = accepting.accept(&listeners[index]);
                continue;
            }
            let key = token / 2;
            let Some(connection) = connections.get_mut(key) else {
                continue;
            };
            connection.mark_ready(token % 2 == 1, event);
            let mut work = Work {
                registry: poll.registry(),
                key,
                buffer: &mut buffer,
                outputs: &mut outputs,
                pipes: &mut pipes,
                admission,
                timeouts: &timeouts,
                stats,
            };
            let step = connection.progress(&mut work);
            finish(
                &mut connections,
                &mut occupancy,
                &mut pipes,
                key,
                poll.registry(),
                step,
                stats,
            );
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + TICK;
            for (index, again) in accept_again.iter_mut().enumerate() {
                if *again {
                    let mut accepting = Accepting {
                        registry: poll.registry(),
                        connections: &mut connections,
                        occupancy: &mut occupancy,
                        admission,
                        stats,
                    };
                    *again = accepting.accept(&listeners[index]);
                }
            }
            let mut released = 0;
            let expired: Vec<(usize, Step)> = connections
                .iter_mut()
                .filter_map(|(key, connection)| {
                    released += connection.release_idle_pipes(now, timeouts.pipe_idle);
                    let step = connection.check_deadlines(now, &timeouts, stats);
                    (step != Step::Continue).then_some((key, step))
                })
                .collect();
            pipes.closed(released, stats);
            for (key, step) in expired {
                finish(
                    &mut connections,
                    &mut occupancy,
                    &mut pipes,
                    key,
                    poll.registry(),
                    step,
                    stats,
                );
            }
        }
    }
    Ok(())
}

/// What accepting borrows from the loop.
struct Accepting<'a> {
    registry: &'a Registry,
    connections: &'a mut Slab<Connection>,
    occupancy: &'a mut Occupancy,
    admission: &'a dyn Admission,
    stats: &'a ProxyStats,
}

impl Accepting<'_> {
    /// Accepts what `listener` has queued; returns whether it must be tried again later.
    fn accept(&mut self, listener: &TcpListener) -> bool {
        loop {
            let (client, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return false,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    return true;
                }
            };
            ProxyStats::count(&self.stats.accepted);
            let Ok(original) = client.local_addr() else {
                ProxyStats::count(&self.stats.refused_not_judged);
                reset(&client);
                continue;
            };
            // Bounds first: a flood of connections costs no judge each.
            if !self.occupancy.take(peer.ip(), self.stats) {
                reset(&client);
                continue;
            }
            let Some(judge) = self.admission.admit(peer, original) else {
                self.occupancy.release(peer.ip(), self.stats);
                ProxyStats::count(&self.stats.refused_not_judged);
                reset(&client);
                continue;
            };
            let _ = client.set_nodelay(true);
            let entry = self.connections.vacant_entry();
            let mut connection = Connection::new(client, peer, original, judge);
            if self
                .registry
                .register(
                    &mut connection.client.stream,
                    Token(entry.key() * 2),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.occupancy.release(peer.ip(), self.stats);
                reset(&connection.client.stream);
                continue;
            }
            entry.insert(connection);
        }
    }
}

/// Ends a connection that is done.
fn finish(
    connections: &mut Slab<Connection>,
    occupancy: &mut Occupancy,
    pipes: &mut PipeBudget,
    key: usize,
    registry: &Registry,
    step: Step,
    stats: &ProxyStats,
) {
    if step == Step::Continue {
        return;
    }
    let Some(mut connection) = connections.try_remove(key) else {
        return;
    };
    occupancy.release(connection.peer.ip(), stats);
    pipes.closed(connection.pipes(), stats);
    let _ = registry.deregister(&mut connection.client.stream);
    if let Some(upstream) = connection.upstream.as_mut() {
        let _ = registry.deregister(&mut upstream.stream);
    }
    if step == Step::Reset {
        reset(&connection.client.stream);
    }
}

/// Makes the client's connection end in a reset when it is closed (the caller drops it right
/// after): a shutdown first would send a FIN, which reads as an orderly end.
fn reset(client: &TcpStream) {
    let _ = SockRef::from(client).set_linger(Some(Duration::ZERO));
}

/// What the loop does with a connection after it progressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    /// Close both sides.
    Close,
    /// Reset the client, close the destination.
    Reset,
}

/// What one connection's progress borrows from the loop.
struct Work<'a> {
    registry: &'a Registry,
    key: usize,
    buffer: &'a mut [u8],
    outputs: &'a mut Vec<Output>,
    pipes: &'a mut PipeBudget,
    admission: &'a dyn Admission,
    timeouts: &'a Timeouts,
    stats: &'a ProxyStats,
}

/// Bytes on their way to a socket through a kernel pipe: spliced in from the other socket and
/// out to this one, never copied into the proxy.
#[derive(Debug)]
struct Pipe {
    reader: OwnedFd,
    writer: OwnedFd,
    /// Bytes in the pipe, not yet spliced out.
    held: usize,
}

const SPLICE_FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

/// The pipes the loop holds, against its bound.
#[derive(Debug)]
struct PipeBudget {
    open: usize,
    most: usize,
}

impl PipeBudget {
    /// A new pipe, or `None` when the budget or the system has none.
    fn open(&mut self, stats: &ProxyStats) -> Option<Pipe> {
        if self.open >= self.most {
            return None;
        }
        let (reader, writer) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
        // Refused past the system's pipe limits: the default size works as well, in more calls.
        let _ = nix::fcntl::fcntl(&writer, FcntlArg::F_SETPIPE_SZ(SPLICE_BYTES as i32));
        self.open += 1;
        stats.open_pipes.store(self.open as u64, Ordering::Relaxed);
        Some(Pipe {
            reader,
            writer,
            held: 0,
        })
    }

    /// Counts `count` pipes closed.
    fn closed(&mut self, count: usize, stats: &ProxyStats) {
        self.open = self.open.saturating_sub(count);
        stats.open_pipes.store(self.open as u64, Ordering::Relaxed);
    }
}

/// One socket of a connection, with the readiness mio reported and not yet used up.
#[derive(Debug)]
struct Side {
    stream: TcpStream,
    readable: bool,
    /// The peer's end (or an error) was reported: the socket is read until it says so, since
    /// no further readiness will come for it.
    read_closed: bool,
    writable: bool,
    /// Bytes for this socket it could not take yet.
    pending: Vec<u8>,
    /// Bytes for this socket in a kernel pipe; they go before `pending`.
    piped: Option<Pipe>,
    /// A read from this socket filled the buffer: it sends in bulk, which moves by splice
    /// where the bytes pass untouched.
    bulk: bool,
    /// It sent its end (or failed, or stayed silent too long).
    ended: bool,
    /// Its sending side was shut.
    shut: bool,
    /// Shut its sending side once `pending` is written.
    shut_when_written: bool,
    last_read: Instant,
}

impl Side {
    fn new(stream: TcpStream) -> Side {
        Side {
            stream,
            readable: false,
            read_closed: false,
            writable: false,
            pending: Vec::new(),
            piped: None,
            bulk: false,
            ended: false,
            shut: false,
            shut_when_written: false,
            last_read: Instant::now(),
        }
    }

    /// Whether bytes wait for this socket (in the pipe or in `pending`).
    fn has_waiting(&self) -> bool {
        !self.pending.is_empty() || self.piped.as_ref().is_some_and(|pipe| pipe.held > 0)
    }

    /// Writes `bytes` now, as far as the socket takes them; keeps the rest.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.has_waiting() || !self.writable {
            self.pending.extend_from_slice(bytes);
            return Ok(());
        }
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.write(&bytes[written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(count) => written += count,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.pending.extend_from_slice(&bytes[written..]);
        Ok(())
    }

    /// Writes what is pending; shuts the sending side when asked and all is written. Returns
    /// whether anything moved.
    fn flush(&mut self) -> io::Result<bool> {
        let mut moved = false;
        if let Some(pipe) = self.piped.as_mut() {
            while pipe.held > 0 && self.writable {
                match nix::fcntl::splice(&pipe.reader, None, &self.stream, None, pipe.held, SPLICE_FLAGS) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(count) => {
                        pipe.held -= count;
                        moved = true;
                    }
                    Err(Errno::EAGAIN) => self.writable = false,
                    Err(Errno::EINTR) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            if pipe.held > 0 {
                // What is pending comes after what is in the pipe.
                return Ok(moved);
            }
        }
        let mut written = 0;
        while written < self.pending.len() && self.writable {
            match self.stream.write(&self.pending[written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(count) => written += count,
                Err(error) if error.kind() == ErrorKind::WouldBlock => self.writable = false,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        if written > 0 {
            self.pending.drain(..written);
            moved = true;
        }
        if self.pending.is_empty() && self.shut_when_written && !self.shut {
            self.shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
            moved = true;
        }
        Ok(moved)
    }

    /// One read into `buffer`: `Some(0)` at the end, `None` when nothing is there now.
    ///
    /// A read that did not fill the buffer took all the socket had, so the socket counts as
    /// drained without the further read that would say "would block" (a syscall saved per
    /// keep-alive request and side): on Linux every segment arriving later wakes epoll again.
    /// Not when the peer's end was reported: that wakeup came already. (A read also stops short
    /// before TCP urgent data, which HTTP and TLS never send; a peer that did would wait for
    /// its next segment.)
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.stream.read(buffer) {
                Ok(count) => {
                    if count > 0 && count < buffer.len() && !self.read_closed {
                        self.readable = false;
                    }
                    if count == buffer.len() {
                        self.bulk = true;
                    }
                    return Ok(Some(count));
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(None);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// One splice from this socket into `pipe`, which must be empty (so that "would block"
    /// can only mean the socket has nothing now): as [`Side::read`].
    fn splice_into(&mut self, pipe: &mut Pipe) -> io::Result<Option<usize>> {
        debug_assert_eq!(pipe.held, 0);
        loop {
            match nix::fcntl::splice(&self.stream, None, &pipe.writer, None, SPLICE_BYTES, SPLICE_FLAGS) {
                Ok(count) => {
                    pipe.held += count;
                    return Ok(Some(count));
                }
                Err(Errno::EAGAIN) => {
                    self.readable = false;
                    return Ok(None);
                }
                Err(Errno::EINTR) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// Moves what `from` has into `to`'s pipe (opened on first use) when `from` sends in bulk:
/// `Some(Ok(Some(count)))` with `count` > 0 when bytes moved (counted in `stats`),
/// `Some(Ok(None))` when nothing did; `None` when the caller must read and copy instead (not in
/// bulk, no pipe, or perhaps the end). Nothing moves while bytes still wait for `to`
/// (backpressure, and the order of the bytes).
fn splice_across(
    from: &mut Side,
    to: &mut Side,
    pipes: &mut PipeBudget,
    stats: &ProxyStats,
) -> Option<io::Result<Option<usize>>> {
    if !from.bulk {
        return None;
    }
    if to.has_waiting() {
        return Some(Ok(None));
    }
    if to.piped.is_none() {
        match pipes.open(stats) {
            Some(pipe) => to.piped = Some(pipe),
            None => {
                // No pipe to be had: this side copies until its next full read tries again.
                from.bulk = false;
                return None;
            }
        }
    }
    let pipe = to.piped.as_mut().expect("opened above");
    match from.splice_into(pipe) {
        // Splice also says 0 when it stops at TCP urgent data with more queued: a plain read
        // tells that from the end.
        Ok(Some(0)) => None,
        Ok(Some(count)) => {
            stats.spliced_bytes.fetch_add(count as u64, Ordering::Relaxed);
            Some(Ok(Some(count)))
        }
        spliced => Some(spliced),
    }
}

/// Where a connection is.
#[derive(Debug)]
enum Phase {
    /// Nothing read yet: the first byte tells TLS from HTTP.
    Start,
    Http(Box<HttpConnection>),
    /// HTTP/2 with prior knowledge: frames both ways through the core, which judges each
    /// request stream and puts its own answers between the destination's frames.
    Http2(Box<Http2Connection>),
    /// Reading the ClientHello.
    Hello(Box<ClientHelloReader>),
    /// An admitted TLS connection: bytes pass both ways untouched.
    Spliced,
    /// A request was refused: the destination's answers to the requests forwarded before come
    /// first (until it ends), then `response`.
    Refusing {
        response: Option<Vec<u8>>,
    },
    /// The refusal is written; what the client still sends is read and dropped until then.
    Draining {
        until: Instant,
    },
}

#[derive(Debug)]
struct Connection {
    peer: SocketAddr,
    original: SocketAddr,
    judge: Arc<FlowJudge>,
    client: Side,
    upstream: Option<Side>,
    /// When the upstream connection started opening, while it is opening.
    connecting: Option<Instant>,
    phase: Phase,
}

impl Connection {
    fn new(client: TcpStream, peer: SocketAddr, original: SocketAddr, judge: Arc<FlowJudge>) -> Connection {
        Connection {
            peer,
            original,
            judge,
            client: Side::new(client),
            upstream: None,
            connecting: None,
            phase: Phase::Start,
        }
    }

    fn mark_ready(&mut self, upstream: bool, event: &Event) {
        let side = if upstream {
            match self.upstream.as_mut() {
                Some(side) => side,
                None => return,
            }
        } else {
            &mut self.client
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            side.readable = true;
        }
        if event.is_read_closed() || event.is_error() {
            side.read_closed = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            side.writable = true;
        }
    }

    /// Moves bytes until nothing more can move without new readiness.
    fn progress(&mut self, work: &mut Work<'_>) -> Step {
        loop {
            let mut moved = false;
            if self.connecting.is_some() {
                match self.check_connected() {
                    Ok(true) => moved = true,
                    Ok(false) => {}
                    Err(error) => {
                        // As the destination would have: the pod's connection is reset.
                        ProxyStats::count(&work.stats.upstream_failures);
                        tracing::info!(peer = %self.peer, original = %self.original, %error, "upstream connection failed");
                        return Step::Reset;
                    }
                }
            }
            match self.read_client(work) {
                Ok(Some(true)) => moved = true,
                Ok(Some(false)) => {}
                Ok(None) => {}
                Err(step) => return step,
            }
            if self.connecting.is_none()
                && let Some(upstream) = self.upstream.as_mut()
            {
                match upstream.flush() {
                    Ok(flushed) => moved |= flushed,
                    Err(_) => return Step::Reset,
                }
            }
            match self.read_upstream(work) {
                Ok(read) => moved |= read,
                Err(step) => return step,
            }
            match self.client.flush() {
                Ok(flushed) => moved |= flushed,
                Err(_) => return self.abort(),
            }
            if let Phase::Refusing { response: None } = self.phase
                && self.client.shut
            {
                self.phase = Phase::Draining {
                    until: Instant::now() + work.timeouts.drain,
                };
                moved = true;
            }
            if self.is_done() {
                return Step::Close;
            }
            if !moved {
                return Step::Continue;
            }
        }
    }

    /// How many pipes its sides hold.
    fn pipes(&self) -> usize {
        let upstream = self.upstream.as_ref().is_some_and(|side| side.piped.is_some());
        usize::from(self.client.piped.is_some()) + usize::from(upstream)
    }

    /// Whether both sides ended and everything was written.
    fn is_done(&self) -> bool {
        match self.phase {
            Phase::Http(_) | Phase::Http2(_) | Phase::Spliced => {
                self.client.ended
                    && self
                        .upstream
                        .as_ref()
                        .is_none_or(|upstream| upstream.ended && !upstream.has_waiting())
                    && !self.client.has_waiting()
            }
            _ => false,
        }
    }

    /// Closes both sides at once (a side failed).
    fn abort(&mut self) -> Step {
        if let Some(upstream) = &self.upstream {
            let _ = upstream.stream.shutdown(Shutdown::Both);
        }
        Step::Close
    }

    /// Whether the upstream connection just opened; an error if it failed.
    fn check_connected(&mut self) -> io::Result<bool> {
        let upstream = self.upstream.as_mut().expect("connecting has an upstream");
        if !upstream.writable {
            return Ok(false);
        }
        if let Some(error) = upstream.stream.take_error()? {
            return Err(error);
        }
        match upstream.stream.peer_addr() {
            Ok(_) => {
                self.connecting = None;
                upstream.last_read = Instant::now();
                Ok(true)
            }
            Err(error) if matches!(error.kind(), ErrorKind::NotConnected | ErrorKind::WouldBlock) => {
                upstream.writable = false;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Reads one buffer from the client and carries out what the core says; `Some(moved)`.
    fn read_client(&mut self, work: &mut Work<'_>) -> Result<Option<bool>, Step> {
        let reading = matches!(
            self.phase,
            Phase::Start
                | Phase::Http(_)
                | Phase::Http2(_)
                | Phase::Hello(_)
                | Phase::Spliced
                | Phase::Draining { .. }
        );
        let backed_up = self
            .upstream
            .as_ref()
            .is_some_and(|upstream| upstream.pending.len() >= PENDING_LIMIT);
        if !reading || backed_up || !self.client.readable || self.client.ended {
            return Ok(None);
        }
        if let Phase::Spliced = self.phase
            && let Some(upstream) = self.upstream.as_mut()
        {
            match splice_across(&mut self.client, upstream, work.pipes, work.stats) {
                Some(Ok(Some(_))) => {
                    self.client.last_read = Instant::now();
                    return Ok(Some(true));
                }
                Some(Ok(None)) => return Ok(Some(false)),
                Some(Err(_)) => return Err(self.abort()),
                None => {}
            }
        }
        let read = match self.client.read(work.buffer) {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(Some(false)),
            Err(_) => {
                if matches!(self.phase, Phase::Hello(_)) {
                    return Err(Step::Reset);
                }
                return Err(self.abort());
            }
        };
        if read == 0 {
            self.client_ended()?;
            return Ok(Some(true));
        }
        self.client.last_read = Instant::now();
        if let Phase::Start = self.phase {
            // A TLS connection starts with a handshake record (22), or an SSLv2 hello's high
            // bit, which the TLS reader refuses; everything else is read as HTTP/1.1.
            let first = work.buffer[0];
            self.phase = if first == 22 || first & 0x80 != 0 {
                Phase::Hello(Box::new(ClientHelloReader::new(
                    sluice_proxy::tls::Limits::default(),
                )))
            } else {
                let judge: Arc<FlowJudge> = self.judge.clone();
                Phase::Http(Box::new(HttpConnection::with_judge(judge, Limits::default())))
            };
        }
        if matches!(self.phase, Phase::Http(_)) {
            self.http_input(work, read)?;
        } else if matches!(self.phase, Phase::Http2(_)) {
            // The input is the shared buffer, which the work's other parts are borrowed with.
            let buffer = std::mem::take(&mut work.buffer);
            let carried = self.http2_input(work, &buffer[..read]);
            work.buffer = buffer;
            carried?;
        } else if matches!(self.phase, Phase::Hello(_)) {
            self.hello_input(work, read)?;
        } else if matches!(self.phase, Phase::Spliced) {
            let upstream = self
                .upstream
                .as_mut()
                .expect("a spliced connection has an upstream");
            if upstream.send(&work.buffer[..read]).is_err() {
                return Err(self.abort());
            }
        }
        Ok(Some(true))
    }

    /// The client sent its end.
    fn client_ended(&mut self) -> Result<(), Step> {
        self.client.ended = true;
        match self.phase {
            // A connection that never sent anything: closed, nothing was forwarded.
            Phase::Start => Err(Step::Close),
            Phase::Hello(_) => Err(Step::Reset),
            Phase::Draining { .. } => Err(Step::Close),
            Phase::Http2(_) if self.upstream.is_none() => Err(Step::Close),
            Phase::Http(_) | Phase::Http2(_) | Phase::Spliced => {
                // The destination gets its end, and answers still come.
                if let Some(upstream) = self.upstream.as_mut() {
                    upstream.shut_when_written = true;
                }
                Ok(())
            }
            Phase::Refusing { .. } => Ok(()),
        }
    }

    fn http_input(&mut self, work: &mut Work<'_>, read: usize) -> Result<(), Step> {
        let Phase::Http(core) = &mut self.phase else {
            return Ok(());
        };
        let mut outputs = std::mem::take(work.outputs);
        outputs.clear();
        core.receive(&work.buffer[..read], &mut outputs);
        let carried = self.carry_out(work, &mut outputs);
        outputs.clear();
        *work.outputs = outputs;
        carried
    }

    /// Carries out the core's outputs in order.
    fn carry_out(&mut self, work: &mut Work<'_>, outputs: &mut Vec<Output>) -> Result<(), Step> {
        for output in outputs.drain(..) {
            match output {
                Output::ForwardHead(allowed) => {
                    ProxyStats::count(&work.stats.http_allowed);
                    self.send_upstream(work, &allowed.head)?;
                }
                Output::ForwardInput(range) => {
                    let Some(upstream) = self.upstream.as_mut() else {
                        return Err(Step::Reset);
                    };
                    if upstream.send(&work.buffer[range]).is_err() {
                        return Err(Step::Reset);
                    }
                }
                Output::Refuse(refusal) => {
                    ProxyStats::count(work.stats.of_refusal(&refusal.reason));
                    let answers_first = refusal.after_forwarded_requests > 0;
                    match self.upstream.as_mut() {
                        Some(upstream) if answers_first => {
                            // The answers to the requests forwarded before come first.
                            upstream.shut_when_written = true;
                            self.phase = Phase::Refusing {
                                response: Some(refusal.response),
                            };
                        }
                        _ => {
                            if let Some(upstream) = self.upstream.take() {
                                work.pipes
                                    .closed(usize::from(upstream.piped.is_some()), work.stats);
                                let _ = upstream.stream.shutdown(Shutdown::Both);
                                let mut stream = upstream.stream;
                                let _ = work.registry.deregister(&mut stream);
                                self.connecting = None;
                            }
                            self.refuse_now(refusal.response)?;
                        }
                    }
                    return Ok(());
                }
                Output::Http2(received) => {
                    let judge: Arc<FlowJudge> = self.judge.clone();
                    let core = Http2Connection::new(judge, Http2Limits::default());
                    self.phase = Phase::Http2(Box::new(core));
                    return self.http2_input(work, &received);
                }
                Output::Close(error) => {
                    return Err(self.reset_unreadable(
                        work,
                        &error,
                        "malformed request body: connection closed",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Gives the client's bytes to the HTTP/2 core and carries out what it says, in order.
    fn http2_input(&mut self, work: &mut Work<'_>, input: &[u8]) -> Result<(), Step> {
        let Phase::Http2(core) = &mut self.phase else {
            return Ok(());
        };
        let mut outputs = Vec::new();
        core.receive(input, &mut outputs);
        for output in outputs {
            match output {
                Http2Output::ForwardInput(range) => self.send_upstream(work, &input[range])?,
                Http2Output::Forward(bytes) => self.send_upstream(work, &bytes)?,
                Http2Output::Decided(decision) => match *decision {
                    Http2Decision::Allowed {
                        stream, allowed_by, ..
                    } => {
                        ProxyStats::count(&work.stats.http_allowed);
                        tracing::debug!(peer = %self.peer, original = %self.original, stream, %allowed_by, "HTTP/2 request allowed");
                    }
                    Http2Decision::Refused { stream, reason } => {
                        ProxyStats::count(work.stats.of_refusal(&reason));
                        tracing::info!(peer = %self.peer, original = %self.original, stream, ?reason, "HTTP/2 request refused; the connection ends");
                    }
                },
                Http2Output::ToClient(bytes) => {
                    if self.client.send(&bytes).is_err() {
                        return Err(self.abort());
                    }
                }
                Http2Output::Finish(answer) => {
                    // No destination was opened: the proxy answered as the server.
                    return self.refuse_now(answer);
                }
                Http2Output::Close(error) => {
                    return Err(self.reset_unreadable(work, &error, "HTTP/2 connection closed"));
                }
            }
        }
        Ok(())
    }

    /// Ends a connection whose bytes cannot be read safely: the client is reset, the
    /// destination (which may have part of a request) closed.
    fn reset_unreadable(&self, work: &Work<'_>, error: &dyn std::fmt::Display, what: &str) -> Step {
        ProxyStats::count(&work.stats.refused_unreadable);
        tracing::info!(peer = %self.peer, original = %self.original, %error, "{what}");
        if let Some(upstream) = &self.upstream {
            let _ = upstream.stream.shutdown(Shutdown::Both);
        }
        Step::Reset
    }

    /// Sends `bytes` to the destination, opening the connection first if it is not.
    fn send_upstream(&mut self, work: &mut Work<'_>, bytes: &[u8]) -> Result<(), Step> {
        if self.upstream.is_none() {
            self.open_upstream(work)?;
        }
        let upstream = self.upstream.as_mut().expect("opened above");
        upstream.send(bytes).map_err(|_| Step::Reset)
    }

    /// Writes the refusal to the client and closes its sending side.
    fn refuse_now(&mut self, response: Vec<u8>) -> Result<(), Step> {
        if self.client.send(&response).is_err() {
            return Err(Step::Close);
        }
        self.client.shut_when_written = true;
        self.phase = Phase::Refusing { response: None };
        Ok(())
    }

    fn hello_input(&mut self, work: &mut Work<'_>, read: usize) -> Result<(), Step> {
        let Phase::Hello(reader) = &mut self.phase else {
            return Ok(());
        };
        let hello = match reader.receive(&work.buffer[..read]) {
            HelloProgress::NeedMore => return Ok(()),
            HelloProgress::Complete(hello) => hello,
            HelloProgress::Failed(error) => {
                ProxyStats::count(&work.stats.refused_unreadable);
                tracing::info!(peer = %self.peer, original = %self.original, %error, "not a readable ClientHello: reset");
                return Err(Step::Reset);
            }
        };
        // An Encrypted ClientHello's visible name is the provider's, not the site's: judged as a
        // hello without a name, which no server-name rule admits.
        let view = FlowL7 {
            http: None,
            server_name: (!hello.encrypted_client_hello)
                .then(|| hello.server_name.clone())
                .flatten(),
        };
        match self.judge.decide(&view, view.server_name.as_deref()) {
            Outcome::Allowed(rule) => {
                ProxyStats::count(&work.stats.tls_allowed);
                tracing::debug!(peer = %self.peer, original = %self.original, server_name = ?hello.server_name, allowed_by = %rule, "TLS connection allowed");
            }
            Outcome::Denied(tried) => {
                ProxyStats::count(&work.stats.tls_denied);
                tracing::info!(
                    peer = %self.peer, original = %self.original, server_name = ?hello.server_name,
                    tried = ?tried.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "TLS connection denied: reset"
                );
                return Err(Step::Reset);
            }
        }
        let received = reader.received().to_vec();
        self.phase = Phase::Spliced;
        self.send_upstream(work, &received)
    }

    /// Starts the connection to the original destination.
    fn open_upstream(&mut self, work: &mut Work<'_>) -> Result<(), Step> {
        let stream = match work.admission.connect(self.peer, self.original) {
            Ok(stream) => TcpStream::from_std(stream),
            Err(error) => {
                ProxyStats::count(&work.stats.upstream_failures);
                tracing::info!(peer = %self.peer, original = %self.original, %error, "upstream connection failed");
                return Err(Step::Reset);
            }
        };
        let mut side = Side::new(stream);
        if work
            .registry
            .register(
                &mut side.stream,
                Token(work.key * 2 + 1),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return Err(Step::Reset);
        }
        self.upstream = Some(side);
        self.connecting = Some(Instant::now());
        Ok(())
    }

    /// Reads one buffer from the destination and writes it to the client; whether anything
    /// moved.
    fn read_upstream(&mut self, work: &mut Work<'_>) -> Result<bool, Step> {
        if self.connecting.is_some() || matches!(self.phase, Phase::Draining { .. }) {
            return Ok(false);
        }
        let Some(upstream) = self.upstream.as_mut() else {
            return Ok(false);
        };
        if !upstream.readable || upstream.ended || self.client.pending.len() >= PENDING_LIMIT {
            return Ok(false);
        }
        // HTTP/1.1 answers pass untouched (an HTTP/2 destination's frames go through the core).
        let untouched = matches!(
            self.phase,
            Phase::Http(_) | Phase::Spliced | Phase::Refusing { .. }
        );
        let spliced = if untouched {
            splice_across(upstream, &mut self.client, work.pipes, work.stats)
        } else {
            None
        };
        match spliced {
            // As at its end, as below.
            Some(Err(_)) => {
                self.upstream_ended()?;
                return Ok(true);
            }
            Some(Ok(Some(_))) => {
                upstream.last_read = Instant::now();
                return Ok(true);
            }
            Some(Ok(None)) => return Ok(false),
            None => {}
        }
        let read = match upstream.read(work.buffer) {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(false),
            // As at its end: what came before was copied.
            Err(_) => 0,
        };
        if read == 0 {
            self.upstream_ended()?;
            return Ok(true);
        }
        upstream.last_read = Instant::now();
        let input = &work.buffer[..read];
        let sent = match &mut self.phase {
            Phase::Http2(core) => {
                let mut outputs = Vec::new();
                core.from_destination(input, &mut outputs);
                outputs.into_iter().try_for_each(|output| match output {
                    ToClient::Pass(range) => self.client.send(&input[range]),
                    ToClient::Inject(frames) => self.client.send(&frames),
                })
            }
            _ => self.client.send(input),
        };
        if sent.is_err() {
            return Err(self.abort());
        }
        Ok(true)
    }

    /// The destination sent its end: the client gets it, or the refusal waiting for it.
    fn upstream_ended(&mut self) -> Result<(), Step> {
        if let Some(upstream) = self.upstream.as_mut() {
            upstream.ended = true;
        }
        if let Phase::Refusing { response } = &mut self.phase {
            if let Some(response) = response.take() {
                self.refuse_now(response)?;
            }
            return Ok(());
        }
        if let Phase::Http2(core) = &mut self.phase {
            // The proxy's answers still waiting for a frame boundary go before the end.
            let queued = core.take_queued();
            if !queued.is_empty() && self.client.send(&queued).is_err() {
                return Err(self.abort());
            }
        }
        self.client.shut_when_written = true;
        Ok(())
    }

    /// Ends what waited too long.
    fn check_deadlines(&mut self, now: Instant, timeouts: &Timeouts, stats: &ProxyStats) -> Step {
        if let Some(since) = self.connecting
            && now.duration_since(since) > timeouts.connect
        {
            ProxyStats::count(&stats.upstream_failures);
            tracing::info!(peer = %self.peer, original = %self.original, "upstream connection timed out");
            return Step::Reset;
        }
        let client_silent = now.duration_since(self.client.last_read);
        let head_or_idle = match &self.phase {
            Phase::Http(core) if core.is_between_requests() => timeouts.idle,
            _ => timeouts.head,
        };
        match self.phase {
            Phase::Start if client_silent > timeouts.head => return Step::Close,
            Phase::Hello(_) if client_silent > timeouts.head => return Step::Reset,
            Phase::Http(_) if !self.client.ended && client_silent > head_or_idle => {
                // A head that stalls, or a connection idle too long: nothing more of it goes
                // on.
                let _ = self.client.stream.shutdown(Shutdown::Both);
                return self.abort();
            }
            Phase::Http2(_) if !self.client.ended && client_silent > timeouts.idle => {
                // Streams idle too long (HTTP/2 clients ping a connection they keep).
                let _ = self.client.stream.shutdown(Shutdown::Both);
                return self.abort();
            }
            Phase::Spliced if !self.client.ended && client_silent > timeouts.stream => {
                self.client.ended = true;
                if let Some(upstream) = self.upstream.as_mut() {
                    upstream.shut_when_written = true;
                    let _ = upstream.flush();
                }
            }
            Phase::Draining { until } if now >= until => return Step::Close,
            _ => {}
        }
        if self.connecting.is_none()
            && let Some(upstream) = self.upstream.as_ref()
            && !upstream.ended
            && now.duration_since(upstream.last_read) > timeouts.stream
            && self.upstream_ended().is_err()
        {
            return Step::Close;
        }
        if self.client.ended
            && let Some(upstream) = self.upstream.as_ref()
            && upstream.ended
            && upstream.has_waiting()
            && now.duration_since(upstream.last_read) > timeouts.stream
        {
            // Both ended, and the destination has not taken the client's last bytes for as
            // long as a stream may stay silent.
            return Step::Close;
        }
        let _ = self.client.flush();
        if self.is_done() {
            Step::Close
        } else {
            Step::Continue
        }
    }

    /// Closes the empty pipes of sides whose sender has been silent for `after`, so that idle
    /// connections do not hold the pipes bulk transfers need; returns how many.
    fn release_idle_pipes(&mut self, now: Instant, after: Duration) -> usize {
        let mut released = 0;
        let idle = |sender: &Side, receiver: &Side| {
            receiver.piped.as_ref().is_some_and(|pipe| pipe.held == 0)
                && now.duration_since(sender.last_read) > after
        };
        if let Some(upstream) = self.upstream.as_mut() {
            if idle(upstream, &self.client) {
                self.client.piped = None;
                released += 1;
            }
            if idle(&self.client, upstream) {
                upstream.piped = None;
                released += 1;
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    //! The loop over loopback sockets: a test server stands for the original destination, and
    //! the judge judges every connection as the pod `10.0.0.5` reaching `203.0.113.10:80`.

    use std::io::{BufRead, BufReader};
    use std::net::{Ipv4Addr, TcpListener as StdListener, TcpStream as StdStream};
    use std::sync::Mutex;
    use std::sync::mpsc;
    use std::thread;

    use socket2::{Domain, Protocol, Socket, Type};

    use super::super::connection::{flow_of, start_connect};
    use super::super::judge::KernelPairs;
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {ports: [80]}
      http: {methods: [GET]}
    - action: Allow
      protocol: TCP
      destination: {ports: [80]}
      tls: {serverNames: [api.partner.example]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node--1-k8s-web-eth0, namespace: shop, labels: {app: web}}
spec: {node: node-1, pod: web, endpoint: eth0, interfaceName: slcweb, ipNetworks: [10.0.0.5/32]}
"#;

    struct TestAdmission {
        dataplane: Arc<sluice_policy::Dataplane>,
        destination: SocketAddr,
    }

    impl Admission for TestAdmission {
        fn admit(&self, _peer: SocketAddr, _original: SocketAddr) -> Option<Arc<FlowJudge>> {
            let flow = flow_of(
                "10.0.0.5:40000".parse().unwrap(),
                "203.0.113.10:80".parse().unwrap(),
            );
            Some(Arc::new(FlowJudge::new(
                self.dataplane.clone(),
                flow,
                Arc::new(KernelPairs),
            )))
        }

        fn connect(&self, _peer: SocketAddr, _original: SocketAddr) -> io::Result<std::net::TcpStream> {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            start_connect(socket, self.destination)
        }
    }

    /// `count` bytes that show where they were taken from, should a part of them be lost or
    /// swapped.
    fn patterned(count: usize) -> Vec<u8> {
        (0..count).map(|index| (index % 251) as u8).collect()
    }

    /// A destination that answers each request with `<method> <path> <body bytes>`, or with
    /// `big` [`patterned`] bytes for `GET /big`; it records the request lines it saw.
    fn destination(big: usize) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let record = record.clone();
                thread::spawn(move || serve_requests(stream, &record, big));
            }
        });
        (address, seen)
    }

    fn serve_requests(stream: StdStream, seen: &Mutex<Vec<String>>, big: usize) {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                if header == "\r\n" {
                    break;
                }
                if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0_u8; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let request = line.trim_end().trim_end_matches(" HTTP/1.1").to_string();
            seen.lock().unwrap().push(request.clone());
            let answer = if request == "GET /big" {
                patterned(big)
            } else {
                format!("{request} {length}").into_bytes()
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", answer.len());
            if writer
                .write_all(head.as_bytes())
                .and_then(|()| writer.write_all(&answer))
                .is_err()
            {
                return;
            }
        }
    }

    /// Runs the loop on a loopback listener for `test`, then stops it.
    fn with_proxy(destination: SocketAddr, timeouts: Timeouts, test: impl FnOnce(SocketAddr)) {
        with_counted_proxy(destination, timeouts, ConnectionLimits::default(), |proxy, _| {
            test(proxy)
        });
    }

    /// [`with_proxy`] with `limits`, showing `test` the loop's counters.
    fn with_counted_proxy(
        destination: SocketAddr,
        timeouts: Timeouts,
        limits: ConnectionLimits,
        test: impl FnOnce(SocketAddr, &ProxyStats),
    ) {
        let set = sluice_api::load_str("loop.yaml", MANIFESTS).unwrap();
        let admission = TestAdmission {
            dataplane: Arc::new(sluice_policy::compile(&set)),
            destination,
        };
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        let stats = ProxyStats::default();
        thread::scope(|scope| {
            let looping = scope.spawn(|| {
                let listeners = vec![TcpListener::from_std(listener)];
                run(listeners, &admission, timeouts, limits, &stats, &stop).unwrap();
            });
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(address, &stats)));
            stop.store(true, Ordering::Relaxed);
            looping.join().unwrap();
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic);
            }
        });
    }

    fn client(proxy: SocketAddr) -> StdStream {
        let stream = StdStream::connect(proxy).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    }

    /// Reads one answer with a `Content-Length`; its body.
    fn answer(reader: &mut BufReader<StdStream>) -> (String, Vec<u8>) {
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header == "\r\n" || header.is_empty() {
                break;
            }
            if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0_u8; length];
        reader.read_exact(&mut body).unwrap();
        (status.trim_end().to_string(), body)
    }

    #[test]
    fn every_request_of_keep_alive_connections_is_judged_and_answered_in_order() {
        let (destination, seen) = destination(0);
        with_proxy(destination, Timeouts::default(), |proxy| {
            // Many connections at once, each with requests one by one and pipelined.
            let (done, finished) = mpsc::channel();
            for connection in 0..20 {
                let done = done.clone();
                thread::spawn(move || {
                    let stream = client(proxy);
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    for request in 0..10 {
                        let path = format!("/{connection}/{request}");
                        write!(writer, "GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
                        let (status, body) = answer(&mut reader);
                        assert_eq!(status, "HTTP/1.1 200 OK");
                        assert_eq!(String::from_utf8(body).unwrap(), format!("GET {path} 0"));
                    }
                    writer
                        .write_all(
                            b"GET /p/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p/2 HTTP/1.1\r\nHost: a\r\n\r\n",
                        )
                        .unwrap();
                    assert_eq!(answer(&mut reader).1, b"GET /p/1 0");
                    assert_eq!(answer(&mut reader).1, b"GET /p/2 0");
                    done.send(()).unwrap();
                });
            }
            for _ in 0..20 {
                finished
                    .recv_timeout(Duration::from_secs(20))
                    .expect("a client finished");
            }
            // A GET then a POST pipelined: the GET's answer, then the refusal, then the end.
            let stream = client(proxy);
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writer
                .write_all(b"GET /before HTTP/1.1\r\nHost: a\r\n\r\nPOST /denied HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
                .unwrap();
            assert_eq!(answer(&mut reader).1, b"GET /before 0");
            let (status, body) = answer(&mut reader);
            assert_eq!(status, "HTTP/1.1 403 Forbidden");
            assert!(String::from_utf8_lossy(&body).contains("Denied by Sluice: POST /denied"));
            let mut rest = Vec::new();
            assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0);
        });
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 20 * 12 + 1);
        assert!(!seen.iter().any(|request| request.starts_with("POST")));
    }

    #[test]
    fn large_bodies_pass_both_ways_whole_and_in_order() {
        // The answers are spliced once they come in bulk; the refusal after them is copied,
        // and comes after the last of them.
        let big = 8 << 20;
        let (destination, seen) = destination(big);
        let limits = ConnectionLimits::default();
        with_counted_proxy(destination, Timeouts::default(), limits, |proxy, stats| {
            let stream = client(proxy);
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let upload = vec![b'u'; 3 << 20];
            let sending = thread::spawn(move || {
                write!(
                    writer,
                    "GET /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                    upload.len()
                )
                .unwrap();
                writer.write_all(&upload).unwrap();
                writer.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
                writer.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
                writer
                    .write_all(b"GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
                    .unwrap();
                writer.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
                writer
                    .write_all(b"POST /denied HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
            });
            assert_eq!(
                answer(&mut reader).1,
                format!("GET /upload {}", 3 << 20).into_bytes()
            );
            let expected = patterned(big);
            assert!(answer(&mut reader).1 == expected, "the first big answer");
            assert!(answer(&mut reader).1 == expected, "the second big answer");
            assert_eq!(answer(&mut reader).1, b"GET /small 0");
            assert!(answer(&mut reader).1 == expected, "the third big answer");
            let (status, _) = answer(&mut reader);
            assert_eq!(status, "HTTP/1.1 403 Forbidden");
            let mut rest = Vec::new();
            assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0);
            sending.join().unwrap();
            // Most of the answers went by splice (each big answer's first reads are copied).
            let spliced = stats.spliced_bytes.load(Ordering::Relaxed);
            assert!(spliced >= 2 * big as u64, "{spliced} bytes spliced");
            eventually("the pipe is closed with its connection", || {
                stats.open_pipes.load(Ordering::Relaxed) == 0
            });
        });
        assert_eq!(seen.lock().unwrap().len(), 5);
    }

    /// A keep-alive connection to `proxy` that fetches `GET /big` answers.
    struct Fetcher {
        writer: StdStream,
        reader: BufReader<StdStream>,
    }

    impl Fetcher {
        fn new(proxy: SocketAddr) -> Fetcher {
            let stream = client(proxy);
            Fetcher {
                writer: stream.try_clone().unwrap(),
                reader: BufReader::new(stream),
            }
        }

        fn fetch(&mut self) -> Vec<u8> {
            self.writer
                .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            answer(&mut self.reader).1
        }
    }

    #[test]
    fn bulk_answers_past_the_pipe_bound_are_copied_whole_and_idle_pipes_are_given_back() {
        let big = 4 << 20;
        let (destination, _) = destination(big);
        let expected = patterned(big);
        let spliced = |stats: &ProxyStats| stats.spliced_bytes.load(Ordering::Relaxed);
        let open_pipes = |stats: &ProxyStats| stats.open_pipes.load(Ordering::Relaxed);
        // No pipe at all: every answer copied, whole.
        let limits = ConnectionLimits {
            pipes: 0,
            ..ConnectionLimits::default()
        };
        with_counted_proxy(destination, Timeouts::default(), limits, |proxy, stats| {
            let mut fetcher = Fetcher::new(proxy);
            for _ in 0..2 {
                assert!(fetcher.fetch() == expected, "a copied answer differs");
            }
            assert_eq!((spliced(stats), open_pipes(stats)), (0, 0));
        });
        // One pipe: the first connection holds it while it is busy, the second copies.
        let limits = ConnectionLimits {
            pipes: 1,
            ..ConnectionLimits::default()
        };
        let timeouts = Timeouts {
            pipe_idle: Duration::from_millis(300),
            ..Timeouts::default()
        };
        with_counted_proxy(destination, timeouts, limits, |proxy, stats| {
            let mut first = Fetcher::new(proxy);
            let mut second = Fetcher::new(proxy);
            assert!(first.fetch() == expected, "the first connection's answer differs");
            let by_first = spliced(stats);
            assert!(by_first > 0);
            assert_eq!(open_pipes(stats), 1);
            let started = Instant::now();
            assert!(
                second.fetch() == expected,
                "the second connection's answer differs"
            );
            if started.elapsed() < Duration::from_millis(250) {
                // The first connection's pipe was not idle yet: the second had none.
                assert_eq!(spliced(stats), by_first, "the second connection spliced");
            }
            // Idle, the first connection gives its pipe back, and the second then takes one.
            eventually("the idle pipe is given back", || open_pipes(stats) == 0);
            let before = spliced(stats);
            assert!(
                second.fetch() == expected,
                "the second connection's answer differs"
            );
            assert!(
                spliced(stats) > before,
                "the second connection copied with a pipe free"
            );
            assert!(first.fetch() == expected, "the first connection's answer differs");
        });
    }

    /// A one-record ClientHello naming `server_name` (the fields the reader needs, no more).
    fn client_hello(server_name: &str) -> Vec<u8> {
        let mut names = vec![0];
        names.extend_from_slice(&(server_name.len() as u16).to_be_bytes());
        names.extend_from_slice(server_name.as_bytes());
        let mut server_name_data = (names.len() as u16).to_be_bytes().to_vec();
        server_name_data.extend_from_slice(&names);
        let mut extensions = vec![0, 0];
        extensions.extend_from_slice(&(server_name_data.len() as u16).to_be_bytes());
        extensions.extend_from_slice(&server_name_data);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut message = vec![1];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(message.len() as u16).to_be_bytes());
        record.extend_from_slice(&message);
        record
    }

    #[test]
    fn an_admitted_tls_connection_passes_bulk_bytes_both_ways_whole() {
        // The destination echoes all it gets: the hello, then bulk bytes the client sends while
        // it reads the echo, both ways spliced once they come in bulk.
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let destination = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = stream;
            let _ = io::copy(&mut reader, &mut writer);
            let _ = writer.shutdown(Shutdown::Write);
        });
        let hello = client_hello("api.partner.example");
        let bulk = patterned(24 << 20);
        let mut expected = hello.clone();
        expected.extend_from_slice(&bulk);
        let limits = ConnectionLimits::default();
        with_counted_proxy(destination, Timeouts::default(), limits, |proxy, stats| {
            let mut stream = client(proxy);
            let mut writer = stream.try_clone().unwrap();
            let sending = thread::spawn(move || {
                writer.write_all(&hello).unwrap();
                for piece in bulk.chunks(100_000) {
                    writer.write_all(piece).unwrap();
                }
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).unwrap();
            sending.join().unwrap();
            assert_eq!(echoed.len(), expected.len());
            assert!(echoed == expected, "the echo differs from what was sent");
            // Both ways, one pipe each.
            let spliced = stats.spliced_bytes.load(Ordering::Relaxed);
            assert!(spliced >= 2 * (20 << 20), "{spliced} bytes spliced");
            eventually("both pipes are closed with their connection", || {
                stats.open_pipes.load(Ordering::Relaxed) == 0
            });
        });
    }

    #[test]
    fn a_destination_that_ended_first_still_gets_all_the_client_sends() {
        // The destination sends its end at once and reads slowly; the client sends a large
        // request and ends: the connection lasts until the destination took the last byte
        // (`is_done` waits for what the destination has not taken yet).
        // A small receive buffer keeps the destination's bytes waiting in the proxy.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_recv_buffer_size(8 << 10).unwrap();
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .unwrap();
        socket.listen(8).unwrap();
        let listener: StdListener = socket.into();
        let destination = listener.local_addr().unwrap();
        let (received, got) = mpsc::channel();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let mut all = Vec::new();
            let mut piece = [0_u8; 4096];
            loop {
                match stream.read(&mut piece) {
                    Ok(0) | Err(_) => break,
                    Ok(count) => all.extend_from_slice(&piece[..count]),
                }
                if all.len() % (256 << 10) < 4096 {
                    thread::sleep(Duration::from_millis(10));
                }
            }
            received.send(all).unwrap();
        });
        // An HTTP request body: the core reads it, so it is copied, not spliced.
        let body = patterned(8 << 20);
        let mut sent = format!(
            "GET /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        sent.extend_from_slice(&body);
        with_proxy(destination, Timeouts::default(), |proxy| {
            let mut stream = client(proxy);
            let mut writer = stream.try_clone().unwrap();
            let sending = thread::spawn(move || {
                writer.write_all(&sent).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
                sent
            });
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            let sent = sending.join().unwrap();
            let all = got.recv_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(all.len(), sent.len());
            assert!(all == sent, "the destination got other bytes");
        });
    }

    #[test]
    fn an_unreachable_destination_resets_the_client() {
        let closed = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        with_proxy(closed, Timeouts::default(), |proxy| {
            let mut stream = client(proxy);
            stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
            let mut rest = Vec::new();
            let error = stream.read_to_end(&mut rest).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ConnectionReset);
            assert!(rest.is_empty());
        });
    }

    #[test]
    fn a_stalled_head_is_closed_and_never_forwarded() {
        let (destination, seen) = destination(0);
        let timeouts = Timeouts {
            head: Duration::from_millis(300),
            ..Timeouts::default()
        };
        with_proxy(destination, timeouts, |proxy| {
            let mut stream = client(proxy);
            stream.write_all(b"GET /stalled HTTP/1.1\r\nHost: a\r\n").unwrap();
            let started = Instant::now();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            assert!(rest.is_empty());
            assert!(started.elapsed() < Duration::from_secs(5));
        });
        assert!(seen.lock().unwrap().is_empty());
    }

    /// Waits (bounded) until `done` holds.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the proxy ended `stream` without answering (a reset, or an end with nothing).
    fn refused(stream: &mut StdStream) -> bool {
        let _ = stream.write_all(b"GET /over HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) => answer.is_empty(),
            Err(error) => error.kind() == ErrorKind::ConnectionReset,
        }
    }

    #[test]
    fn a_pod_over_its_bound_is_reset_unjudged_and_gets_its_places_back_as_connections_end() {
        let (destination, seen) = destination(0);
        let limits = ConnectionLimits {
            per_pod: 2,
            total: 100,
            ..ConnectionLimits::default()
        };
        with_counted_proxy(destination, Timeouts::default(), limits, |proxy, stats| {
            let open: Vec<_> = (0..2).map(|_| client(proxy)).collect();
            eventually("two connections open", || stats.report().open == 2);
            let mut over = client(proxy);
            assert!(refused(&mut over), "a third connection of the pod is refused");
            let report = stats.report();
            assert_eq!((report.refused_pod_limit, report.open), (1, 2));
            assert!(!seen.lock().unwrap().contains(&"GET /over".to_string()));
            // The two open ones still work, and once one ends the pod may open another.
            let mut reader = BufReader::new(open[0].try_clone().unwrap());
            (&open[0])
                .write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            assert_eq!(answer(&mut reader).1, b"GET /a 0");
            drop(reader);
            drop(open);
            eventually("both connections ended", || stats.report().open == 0);
            let stream = client(proxy);
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writer
                .write_all(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            assert_eq!(answer(&mut reader).1, b"GET /again 0");
            let report = stats.report();
            assert_eq!((report.http_allowed, report.refused_pod_limit), (2, 1));
        });
    }

    #[test]
    fn the_proxy_over_its_total_bound_resets_new_connections() {
        let (destination, _) = destination(0);
        let limits = ConnectionLimits {
            per_pod: 100,
            total: 1,
            ..ConnectionLimits::default()
        };
        with_counted_proxy(destination, Timeouts::default(), limits, |proxy, stats| {
            let _open = client(proxy);
            eventually("one connection open", || stats.report().open == 1);
            let mut over = client(proxy);
            assert!(refused(&mut over));
            assert_eq!(stats.report().refused_proxy_limit, 1);
        });
    }

    #[test]
    fn decisions_are_counted_by_protocol_and_verdict() {
        let (destination, _) = destination(0);
        with_counted_proxy(
            destination,
            Timeouts::default(),
            ConnectionLimits::default(),
            |proxy, stats| {
                let stream = client(proxy);
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                writer.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
                answer(&mut reader);
                writer
                    .write_all(b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
                assert_eq!(answer(&mut reader).0, "HTTP/1.1 403 Forbidden");
                // Not HTTP/1.1 and not TLS: nothing to judge.
                let mut garbage = client(proxy);
                garbage.write_all(b"\x01\x02 not a request\r\n\r\n").unwrap();
                let mut rest = Vec::new();
                let _ = garbage.read_to_end(&mut rest);
                eventually("connections ended", || stats.report().open == 0);
                let report = stats.report();
                assert_eq!(
                    (
                        report.accepted,
                        report.http_allowed,
                        report.http_denied,
                        report.refused_unreadable
                    ),
                    (2, 1, 1, 1)
                );
            },
        );
    }

    /// An HTTP/2 destination answering each request with `<method> <path>`; it records them.
    fn h2_destination() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((socket, _)) = listener.accept().await {
                    let record = record.clone();
                    tokio::spawn(async move {
                        let Ok(mut connection) = h2::server::handshake(socket).await else {
                            return;
                        };
                        while let Some(Ok((request, mut respond))) = connection.accept().await {
                            let text = format!("{} {}", request.method(), request.uri().path());
                            record.lock().unwrap().push(text.clone());
                            let response = http::Response::builder().status(200).body(()).unwrap();
                            if let Ok(mut send) = respond.send_response(response, false) {
                                let _ = send.send_data(bytes::Bytes::from(text), true);
                            }
                        }
                    });
                }
            });
        });
        (address, seen)
    }

    /// Sends `requests` one after another on one HTTP/2 connection to `proxy`: each answer's
    /// status and body, or why there was none (and nothing more is sent).
    fn h2_requests(proxy: SocketAddr, requests: &[(&str, &str)]) -> Vec<Result<(u16, String), String>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut results = Vec::new();
            let socket = tokio::net::TcpStream::connect(proxy).await.unwrap();
            let (client, connection) = h2::client::handshake(socket).await.unwrap();
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut client = client;
            for (method, path) in requests {
                let answer = async {
                    client = client.clone().ready().await.map_err(|error| error.to_string())?;
                    let request = http::Request::builder()
                        .method(*method)
                        .uri(format!("http://api.partner.example{path}"))
                        .body(())
                        .unwrap();
                    let (response, _) = client
                        .send_request(request, true)
                        .map_err(|error| error.to_string())?;
                    let response = response.await.map_err(|error| error.to_string())?;
                    let status = response.status().as_u16();
                    let mut body = response.into_body();
                    let mut text = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk.map_err(|error| error.to_string())?;
                        let _ = body.flow_control().release_capacity(chunk.len());
                        text.extend_from_slice(&chunk);
                    }
                    Ok::<_, String>((status, String::from_utf8_lossy(&text).into_owned()))
                }
                .await;
                let failed = answer.is_err();
                results.push(answer);
                if failed {
                    break;
                }
            }
            results
        })
    }

    #[test]
    fn http2_requests_are_judged_each_and_a_denial_is_answered_on_its_stream_then_the_connection_ends() {
        let (destination, seen) = h2_destination();
        with_counted_proxy(
            destination,
            Timeouts::default(),
            ConnectionLimits::default(),
            |proxy, stats| {
                let results = h2_requests(
                    proxy,
                    &[("GET", "/a"), ("GET", "/b"), ("POST", "/c"), ("GET", "/d")],
                );
                assert_eq!(results[0], Ok((200, "GET /a".to_string())));
                assert_eq!(results[1], Ok((200, "GET /b".to_string())));
                let (status, body) = results[2].clone().expect("the denial is an answer");
                assert_eq!(status, 403);
                assert!(
                body.starts_with("Denied by Sluice: POST /c to api.partner.example is not allowed by the HTTP matches of NetworkPolicy shop/web, egress rule 0, NetworkPolicy shop/web, egress rule 1"),
                "{body}"
            );
                // After the refusal's GOAWAY the connection takes no new stream.
                assert!(results.get(3).is_none_or(Result::is_err), "{results:?}");
                // A connection whose first request is denied never reaches the destination.
                let first = h2_requests(proxy, &[("DELETE", "/e")]);
                assert_eq!(first[0].as_ref().map(|(status, _)| *status), Ok(403));
                assert_eq!(*seen.lock().unwrap(), vec!["GET /a", "GET /b"]);
                eventually("connections ended", || stats.report().open == 0);
                let report = stats.report();
                assert_eq!((report.http_allowed, report.http_denied), (2, 2));
            },
        );
    }
}
