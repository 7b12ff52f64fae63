//! The proxy child's main: IRs from the agent on standard input, listeners on the node's
//! loopback, a thread per connection.

use std::io::BufRead;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};

use sluice_policy::Dataplane;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

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

/// Runs the proxy for `node` on `port` until the agent closes its standard input.
pub fn run(node: &str, port: u16) -> Result<(), String> {
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
    tracing::info!(port, "L7 proxy listening");
    if let Some(v6) = v6 {
        let (current, node) = (current.clone(), node.to_string());
        std::thread::spawn(move || accept(&v6, &current, &node));
    }
    accept(&v4, &current, node);
    Ok(())
}

fn listen(address: SocketAddr) -> std::io::Result<Socket> {
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
    Ok(socket)
}

fn accept(listener: &Socket, current: &Arc<Current>, node: &str) {
    loop {
        match listener.accept() {
            Ok((socket, peer)) => {
                let Some(peer) = peer.as_socket() else { continue };
                let client: TcpStream = socket.into();
                let dataplane = current.get();
                let node = node.to_string();
                let spawned = std::thread::Builder::new()
                    .name("l7-connection".into())
                    .spawn(move || super::connection::serve(client, peer, dataplane, &node));
                if let Err(error) = spawned {
                    // The connection (moved into the closure) is dropped: the client sees it
                    // closed, nothing was forwarded.
                    tracing::warn!(%error, "no thread for a connection");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
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
