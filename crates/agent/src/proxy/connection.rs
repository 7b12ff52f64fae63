//! What a redirected connection needs from the node: whether it is one to judge (from one of
//! this node's endpoints, with policy to judge it by), its judge (its flow, with the original
//! destination that `tproxy` keeps as the accepted socket's local address), and the upstream
//! connection made from the pod's own address. The event loop (`super::event_loop`) does the
//! rest.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use sluice_dataplane::l7_redirect::MARK_PROXY_UPSTREAM;
use sluice_policy::{Dataplane, Flow};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::event_loop::Admission;
use super::judge::{FlowJudge, KernelPairs};

/// This node's proxy: `policy` gives the newest IR (none before the agent sent one).
pub(crate) struct NodeAdmission<F: Fn() -> Option<Arc<Dataplane>>> {
    pub node: String,
    pub policy: F,
}

impl<F: Fn() -> Option<Arc<Dataplane>>> Admission for NodeAdmission<F> {
    /// Only the node's own endpoints' connections are judged (anything else reaching the
    /// listener is reset), and only once there is policy.
    fn admit(&self, peer: SocketAddr, original: SocketAddr) -> Option<Arc<FlowJudge>> {
        let Some(dataplane) = (self.policy)() else {
            tracing::warn!(%peer, %original, "no policy yet: connection reset");
            return None;
        };
        let local = dataplane
            .endpoint_by_address(peer.ip())
            .is_some_and(|endpoint| endpoint.node.as_deref() == Some(self.node.as_str()));
        if !local || original.ip().is_loopback() {
            tracing::warn!(%peer, %original, "not a local endpoint's redirected connection: reset");
            return None;
        }
        Some(Arc::new(FlowJudge::new(
            dataplane,
            flow_of(peer, original),
            Arc::new(KernelPairs),
        )))
    }

    /// A connection to the original destination from the pod's own address, marked so that
    /// its replies come back to the proxy (see `sluice_dataplane::l7_redirect`).
    fn connect(&self, peer: SocketAddr, original: SocketAddr) -> io::Result<std::net::TcpStream> {
        let socket = Socket::new(Domain::for_address(original), Type::STREAM, Some(Protocol::TCP))?;
        if original.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
        socket.set_mark(MARK_PROXY_UPSTREAM)?;
        socket.bind(&SockAddr::from(SocketAddr::new(peer.ip(), 0)))?;
        start_connect(socket, original)
    }
}

/// Starts a non-blocking connection of `socket` to `destination`.
pub(crate) fn start_connect(socket: Socket, destination: SocketAddr) -> io::Result<std::net::TcpStream> {
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&SockAddr::from(destination)) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    Ok(socket.into())
}

/// The flow of a connection from `peer` to its original destination.
pub(crate) fn flow_of(peer: SocketAddr, original: SocketAddr) -> Flow {
    Flow {
        source: peer.ip(),
        destination: original.ip(),
        protocol: 6,
        source_port: Some(peer.port()),
        destination_port: Some(original.port()),
        icmp_type: None,
        icmp_code: None,
    }
}
