//! The proxy child's main: IRs from the agent on standard input, listeners on the node's
//! loopback, every connection served by one event loop (`super::event_loop`).

use std::io::BufRead;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};

use sluice_policy::Dataplane;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::event_loop::ConnectionLimits;
use super::stats::ProxyStats;

/// The newest IR, shared by the connection threads.
#[derive(Debug, Default)]
struct Current {
    dataplane: Mutex<Option<Arc<Dataplane>>>,
    ready: Condvar,
}

impl Current {
    fn get(&self) -> Option<Arc<Dataplane>> {
        self.dataplane.lock().expect("not poisoned").clone()
    }
}

/// Files the proxy keeps for itself (listeners, epoll, standard streams, the log) beside its
/// connections' two each and its pipes' two each.
const RESERVED_FILES: u64 = 64;

/// Runs the proxy for `node` on `port` until the agent closes its standard input.
pub fn run(node: &str, port: u16, limits: ConnectionLimits) -> Result<(), String> {
    let limits = within_file_limit(limits);
    let stats = Arc::new(ProxyStats::default());
    let reporting = stats.clone();
    std::thread::spawn(move || super::stats::report_forever(&reporting));
    let current = Arc::new(Current::default());
    let reader = current.clone();
    std::thread::spawn(move || read_snapshots(&reader));
    // Listen only once there is policy to judge by: until then the kernel drops redirected
    // connections, and the client's retransmission finds the proxy ready.
    {
        let mut dataplane = current.dataplane.lock().expect("not poisoned");
        while dataplane.is_none() {
            dataplane = current.ready.wait(dataplane).expect("not poisoned");
        }
    }
    let v4 = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .map_err(|error| format!("listening on 127.0.0.1:{port}: {error}"))?;
    let v6 = match listen(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "no IPv6 listener: IPv6 connections to L7 rules are dropped");
            None
        }
    };
    tracing::info!(
        port,
        per_pod = limits.per_pod,
        total = limits.total,
        "L7 proxy listening"
    );
    let listeners = std::iter::once(v4)
        .chain(v6)
        .map(mio::net::TcpListener::from_std)
        .collect();
    let admission = super::connection::NodeAdmission {
        node: node.to_string(),
        policy: || current.get(),
    };
    super::event_loop::run(
        listeners,
        &admission,
        super::event_loop::Timeouts::default(),
        limits,
        &stats,
        &AtomicBool::new(false),
    )
    .map_err(|error| format!("the proxy's event loop: {error}"))
}

/// `limits` with a total and pipes the process can hold open: the open-file limit is raised to
/// its hard limit first (accepting or connecting past it would fail on the connections already
/// taken); pipes take at most a quarter of the files, connections the rest.
fn within_file_limit(limits: ConnectionLimits) -> ConnectionLimits {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return limits;
    };
    let files = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let available = files.saturating_sub(RESERVED_FILES);
    let pipes = limits
        .pipes
        .min(usize::try_from(available / 8).unwrap_or(usize::MAX));
    let fit = usize::try_from(available.saturating_sub(2 * pipes as u64) / 2).unwrap_or(usize::MAX);
    if fit < limits.total {
        tracing::warn!(
            files,
            fit,
            asked = limits.total,
            "the open-file limit lowers the proxy's bound on connections"
        );
    }
    ConnectionLimits {
        per_pod: limits.per_pod,
        total: limits.total.min(fit).max(1),
        pipes,
    }
}

fn listen(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_ip_transparent_v6(true)?;
    }
    socket.bind(&SockAddr::from(address))?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Compiles each snapshot the agent sends; exits the process when the agent closes the pipe
/// (the agent stopped or died: a new agent starts a new proxy).
fn read_snapshots(current: &Current) {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => {
                tracing::info!("the agent closed the proxy's input: stopping");
                std::process::exit(0);
            }
            Ok(_) => {}
        }
        match super::snapshot::decode(line.trim_ascii_end()) {
            Ok((revision, resources)) => {
                let dataplane = Arc::new(sluice_policy::compile(&resources));
                *current.dataplane.lock().expect("not poisoned") = Some(dataplane);
                current.ready.notify_all();
                tracing::debug!(revision, "L7 proxy policy updated");
            }
            Err(error) => {
                tracing::error!(%error, "a policy snapshot from the agent was refused; keeping the previous one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_in_all_fits_the_open_file_limit_and_the_bound_per_pod_stays() {
        let asked = ConnectionLimits {
            per_pod: 7,
            total: usize::MAX,
            pipes: usize::MAX,
        };
        let limits = within_file_limit(asked);
        let (files, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let available = files.saturating_sub(RESERVED_FILES);
        assert_eq!(limits.per_pod, 7);
        assert!(limits.total >= 1);
        assert!(2 * limits.pipes as u64 <= available / 4);
        assert!(2 * (limits.total as u64 - 1) + 2 * limits.pipes as u64 <= available);
        let small = ConnectionLimits {
            per_pod: 7,
            total: 3,
            pipes: 2,
        };
        let small = within_file_limit(small);
        assert_eq!((small.total, small.pipes), (3, 2));
    }
}
