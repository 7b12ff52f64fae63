//! The small servers outside hosts and pods run (`lab serve`) and the client probes use
//! (`lab connect`). Every server answers with the source address it saw, so a probe shows
//! whether the packet was masqueraded on the way.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dns::resolver::{LookupError, QueryType, nameserver_from, query};
use crate::dns::zone::Transport;

/// How a service is spoken to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    Tcp,
    Udp,
    Http,
    /// A TLS handshake; the server answers the peer's address and the server name asked for.
    Https,
}

impl ServiceProtocol {
    /// The IP protocol number policy sees.
    pub fn ip_protocol(self) -> u8 {
        match self {
            ServiceProtocol::Tcp | ServiceProtocol::Http | ServiceProtocol::Https => 6,
            ServiceProtocol::Udp => 17,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServiceProtocol::Tcp => "tcp",
            ServiceProtocol::Udp => "udp",
            ServiceProtocol::Http => "http",
            ServiceProtocol::Https => "https",
        }
    }
}

/// What one connection attempt came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectOutcome {
    pub result: ConnectResult,
    /// The source address the server saw, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For a connection by name: the lookup that came first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<LookupOutcome>,
}

/// What resolving a name came to, before a connection by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LookupOutcome {
    pub result: LookupResult,
    /// The server asked (the first nameserver of the namespace's resolv.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LookupResult {
    /// NOERROR with at least one address.
    Answered,
    /// No reply in time: what a policy drop of the query looks like.
    TimedOut,
    /// A reply without an address (NXDOMAIN, NODATA, REFUSED, …).
    NoAddress,
    /// No query could be made, or it was refused on the way.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectResult {
    Connected,
    /// No answer in time: what a policy drop looks like.
    TimedOut,
    /// Refused (TCP reset or ICMP port unreachable): the packet got there but nothing listened.
    Refused,
    /// No route, or an ICMP unreachable from a router.
    Unreachable,
    /// An HTTP 403 (the node's L7 proxy denied the request).
    Forbidden,
    Error,
}

impl ConnectOutcome {
    fn failed(result: ConnectResult, detail: impl ToString) -> ConnectOutcome {
        ConnectOutcome {
            result,
            seen: None,
            detail: Some(detail.to_string()),
            lookup: None,
        }
    }

    fn from_error(error: &std::io::Error) -> ConnectOutcome {
        let result = match error.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => ConnectResult::TimedOut,
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => ConnectResult::Refused,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => ConnectResult::Unreachable,
            _ => ConnectResult::Error,
        };
        if error.kind() == ErrorKind::WouldBlock {
            // A receive timeout on a UDP socket reads as "try again"; it means no answer.
            return ConnectOutcome::failed(result, "no answer");
        }
        ConnectOutcome::failed(result, error)
    }

    fn answered(text: &str) -> ConnectOutcome {
        match text.trim().parse::<IpAddr>() {
            Ok(seen) => ConnectOutcome {
                result: ConnectResult::Connected,
                seen: Some(seen),
                detail: None,
                lookup: None,
            },
            Err(_) => ConnectOutcome::failed(ConnectResult::Error, format!("unexpected answer {text:?}")),
        }
    }
}

/// What an HTTP probe asks for and which server name a TLS probe names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The name asked for: for HTTPS the ClientHello's server name (none: no server-name
    /// extension), for HTTP the `Host` (none: the address connected to).
    pub server_name: Option<String>,
}

impl Default for Request {
    fn default() -> Request {
        Request {
            method: "GET".to_string(),
            path: "/".to_string(),
            server_name: None,
        }
    }
}

/// One connection attempt, bounded by `timeout` for connecting and again for the answer.
pub fn connect(protocol: ServiceProtocol, to: IpAddr, port: u16, timeout: Duration) -> ConnectOutcome {
    connect_with(protocol, to, port, timeout, &Request::default())
}

/// [`connect`] with the HTTP request's method and path, or the TLS server name.
pub fn connect_with(
    protocol: ServiceProtocol,
    to: IpAddr,
    port: u16,
    timeout: Duration,
    request: &Request,
) -> ConnectOutcome {
    let address = SocketAddr::new(to, port);
    match protocol {
        ServiceProtocol::Https => {
            match crate::tls::handshake(address, request.server_name.as_deref(), timeout) {
                Ok(answer) => {
                    let mut words = answer.split_whitespace();
                    let mut outcome = ConnectOutcome::answered(words.next().unwrap_or_default());
                    if let Some(name) = words.next() {
                        outcome.detail = Some(format!("server name {name}"));
                    }
                    outcome
                }
                Err(error) => ConnectOutcome::from_error(&error),
            }
        }
        ServiceProtocol::Tcp | ServiceProtocol::Http => {
            let mut stream = match TcpStream::connect_timeout(&address, timeout) {
                Ok(stream) => stream,
                Err(error) => return ConnectOutcome::from_error(&error),
            };
            let _ = stream.set_read_timeout(Some(timeout));
            let _ = stream.set_write_timeout(Some(timeout));
            if protocol == ServiceProtocol::Http {
                let host = request.server_name.clone().unwrap_or_else(|| match to {
                    IpAddr::V6(address) => format!("[{address}]"),
                    IpAddr::V4(address) => address.to_string(),
                });
                let head = format!(
                    "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-lab\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    request.method, request.path
                );
                if let Err(error) = stream.write_all(head.as_bytes()) {
                    return ConnectOutcome::from_error(&error);
                }
            }
            let mut answer = String::new();
            if let Err(error) = stream.take(64 * 1024).read_to_string(&mut answer) {
                return ConnectOutcome::failed(ConnectResult::Error, format!("connected, then {error}"));
            }
            if protocol == ServiceProtocol::Http {
                let Some((head, body)) = answer.split_once("\r\n\r\n") else {
                    return ConnectOutcome::failed(ConnectResult::Error, "connected, but no HTTP answer");
                };
                let status = head.lines().next().unwrap_or_default();
                if head.starts_with("HTTP/1.") && status.contains(" 403 ") {
                    return ConnectOutcome::failed(ConnectResult::Forbidden, body.trim());
                }
                if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
                    return ConnectOutcome::failed(ConnectResult::Error, format!("HTTP answer {status:?}"));
                }
                return ConnectOutcome::answered(body);
            }
            ConnectOutcome::answered(&answer)
        }
        ServiceProtocol::Udp => {
            let local: SocketAddr = match to {
                IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = match UdpSocket::bind(local).and_then(|socket| {
                socket.connect(address)?;
                socket.set_read_timeout(Some(timeout))?;
                Ok(socket)
            }) {
                Ok(socket) => socket,
                Err(error) => return ConnectOutcome::from_error(&error),
            };
            if let Err(error) = socket.send(b"sluice-lab probe") {
                return ConnectOutcome::from_error(&error);
            }
            let mut buffer = [0_u8; 512];
            match socket.recv(&mut buffer) {
                Ok(length) => ConnectOutcome::answered(&String::from_utf8_lossy(&buffer[..length])),
                Err(error) => ConnectOutcome::from_error(&error),
            }
        }
    }
}

/// Resolves `name` (A, over UDP) through the first nameserver of `/etc/resolv.conf` — inside a
/// lab pod, the lab's DNS server — and connects to the first address at once: nothing sleeps
/// between the answer and the first packet, as an application would behave.
pub fn connect_by_name(
    protocol: ServiceProtocol,
    name: &str,
    port: u16,
    timeout: Duration,
) -> ConnectOutcome {
    connect_by_name_with(protocol, name, port, timeout, &Request::default())
}

/// [`connect_by_name`] with an HTTP request's method and path, or a TLS server name (by
/// default the name connected by).
pub fn connect_by_name_with(
    protocol: ServiceProtocol,
    name: &str,
    port: u16,
    timeout: Duration,
    request: &Request,
) -> ConnectOutcome {
    let server = match nameserver_from(Path::new("/etc/resolv.conf")) {
        Ok(server) => server,
        Err(error) => {
            return without_address(LookupOutcome {
                result: LookupResult::Failed,
                server: None,
                addresses: Vec::new(),
                detail: Some(error),
            });
        }
    };
    let lookup = match query(
        SocketAddr::new(server, 53),
        name,
        QueryType::A,
        Transport::Udp,
        timeout,
    ) {
        Ok(lookup) => {
            let result = if lookup.rcode == "NOERROR" && !lookup.addresses.is_empty() {
                LookupResult::Answered
            } else {
                LookupResult::NoAddress
            };
            LookupOutcome {
                result,
                server: Some(server),
                detail: (result != LookupResult::Answered)
                    .then(|| format!("{} without an address", lookup.rcode)),
                addresses: lookup.addresses,
            }
        }
        Err(LookupError::TimedOut(detail)) => LookupOutcome {
            result: LookupResult::TimedOut,
            server: Some(server),
            addresses: Vec::new(),
            detail: Some(detail),
        },
        Err(LookupError::Failed(detail)) => LookupOutcome {
            result: LookupResult::Failed,
            server: Some(server),
            addresses: Vec::new(),
            detail: Some(detail),
        },
    };
    let Some(first) = lookup.addresses.first().copied() else {
        return without_address(lookup);
    };
    let mut request = request.clone();
    request.server_name = request.server_name.or_else(|| Some(name.to_string()));
    let mut outcome = connect_with(protocol, first, port, timeout, &request);
    outcome.lookup = Some(lookup);
    outcome
}

/// A connection by name that never started: a lookup with no reply reads as a drop (silence),
/// anything else as an error.
fn without_address(lookup: LookupOutcome) -> ConnectOutcome {
    let result = match lookup.result {
        LookupResult::TimedOut => ConnectResult::TimedOut,
        _ => ConnectResult::Error,
    };
    let detail = format!("lookup: {}", lookup.detail.as_deref().unwrap_or("no address"));
    ConnectOutcome {
        result,
        seen: None,
        detail: Some(detail),
        lookup: Some(lookup),
    }
}

/// Serves until killed: TCP answers the peer's address and closes, UDP echoes the peer's
/// address, HTTP returns it as the body. Each connection is logged with what was seen.
pub fn serve(
    address: IpAddr,
    tcp: &[u16],
    udp: &[u16],
    http: &[u16],
    https: &[u16],
    log: Option<&Path>,
) -> Result<(), String> {
    let log: Arc<Mutex<Box<dyn Write + Send>>> = Arc::new(Mutex::new(match log {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|error| format!("cannot open {}: {error}", path.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    }));
    let mut workers = Vec::new();
    // Bind everything first so a port in use fails the start, not a later probe.
    for (protocol, ports) in [(ServiceProtocol::Tcp, tcp), (ServiceProtocol::Http, http)] {
        for port in ports {
            let listener = TcpListener::bind((address, *port))
                .map_err(|error| format!("cannot listen on {protocol:?} {address}:{port}: {error}"))?;
            let log = log.clone();
            workers.push(std::thread::spawn(move || accept_loop(listener, protocol, log)));
        }
    }
    if !https.is_empty() {
        let config = crate::tls::server_config()?;
        for port in https {
            let listener = TcpListener::bind((address, *port))
                .map_err(|error| format!("cannot listen on HTTPS {address}:{port}: {error}"))?;
            let (log, config) = (log.clone(), config.clone());
            workers.push(std::thread::spawn(move || {
                crate::tls::serve(listener, config, move |line| record(&log, &line))
            }));
        }
    }
    for port in udp {
        let socket = UdpSocket::bind((address, *port))
            .map_err(|error| format!("cannot listen on UDP {address}:{port}: {error}"))?;
        let log = log.clone();
        workers.push(std::thread::spawn(move || echo_loop(socket, log)));
    }
    record(
        &log,
        &format!("serving on {address}: tcp {tcp:?} udp {udp:?} http {http:?} https {https:?}"),
    );
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

type Log = Arc<Mutex<Box<dyn Write + Send>>>;

fn record(log: &Log, line: &str) {
    if let Ok(mut log) = log.lock() {
        let _ = writeln!(log, "{line}");
        let _ = log.flush();
    }
}

fn accept_loop(listener: TcpListener, protocol: ServiceProtocol, log: Log) {
    let port = listener
        .local_addr()
        .map(|address| address.port())
        .unwrap_or_default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let log = log.clone();
        std::thread::spawn(move || {
            let peer = stream.peer_addr().ok();
            if let Some(peer) = peer {
                record(&log, &format!("{} {port} from {peer}", protocol.name()));
            }
            if let (Ok(Some(request_line)), Some(peer)) = (answer_stream(stream, protocol, peer), peer) {
                record(&log, &format!("http {port} request from {peer}: {request_line}"));
            }
        });
    }
}

/// Answers one connection; for HTTP, returns the request line it answered.
fn answer_stream(
    mut stream: TcpStream,
    protocol: ServiceProtocol,
    peer: Option<SocketAddr>,
) -> std::io::Result<Option<String>> {
    let timeout = Some(Duration::from_secs(2));
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let seen = peer
        .map(|peer| seen_address(&peer).to_string())
        .unwrap_or_default();
    if protocol == ServiceProtocol::Http {
        // Read the request head (bounded) before answering, as an HTTP server does.
        let mut request = Vec::new();
        let mut buffer = [0_u8; 1024];
        while !request.windows(4).any(|window| window == b"\r\n\r\n") && request.len() < 16 * 1024 {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..read]);
        }
        let body = format!("{seen}\n");
        let answer = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes())?;
        stream.shutdown(Shutdown::Write)?;
        let line = request.split(|byte| *byte == b'\n').next().unwrap_or_default();
        return Ok(Some(String::from_utf8_lossy(line).trim_end().to_string()));
    }
    stream.write_all(format!("{seen}\n").as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    Ok(None)
}

/// The peer's address as the sender owns it: a dual-stack socket (a pod server bound to `::`)
/// sees an IPv4 peer as `::ffff:a.b.c.d`.
fn seen_address(peer: &SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

fn echo_loop(socket: UdpSocket, log: Log) {
    let port = socket
        .local_addr()
        .map(|address| address.port())
        .unwrap_or_default();
    let mut buffer = [0_u8; 2048];
    loop {
        let Ok((_, peer)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        record(&log, &format!("udp {port} from {peer}"));
        let _ = socket.send_to(format!("{}\n", seen_address(&peer)).as_bytes(), peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_answer_with_the_peer_address_on_loopback() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let free = |_| {
            TcpListener::bind((loopback, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let [tcp, http] = [0, 1].map(free);
        let udp = UdpSocket::bind((loopback, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::thread::spawn(move || serve(loopback, &[tcp], &[udp], &[http], &[], None));
        let timeout = Duration::from_secs(1);
        for (protocol, port) in [
            (ServiceProtocol::Tcp, tcp),
            (ServiceProtocol::Http, http),
            (ServiceProtocol::Udp, udp),
        ] {
            let mut outcome = connect(protocol, loopback, port, timeout);
            for _ in 0..50 {
                if outcome.result == ConnectResult::Connected {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                outcome = connect(protocol, loopback, port, timeout);
            }
            assert_eq!(
                outcome.result,
                ConnectResult::Connected,
                "{protocol:?}: {outcome:?}"
            );
            assert_eq!(outcome.seen, Some(loopback));
        }
    }

    #[test]
    fn nothing_listening_is_refused_not_timed_out() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = TcpListener::bind((loopback, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let outcome = connect(ServiceProtocol::Tcp, loopback, port, Duration::from_secs(1));
        assert_eq!(outcome.result, ConnectResult::Refused);
    }
}
