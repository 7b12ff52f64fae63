//! One redirected connection: its original destination (the accepted socket's local address,
//! which `tproxy` keeps), the core reading what the pod sends, the judge deciding, and the
//! upstream connection made from the pod's own address.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_dataplane::l7_redirect::MARK_PROXY_UPSTREAM;
use sluice_policy::{Dataplane, Flow, FlowL7};
use sluice_proxy::http::{HttpConnection, Limits, Output};
use sluice_proxy::tls::{ClientHelloReader, HelloProgress};
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::judge::{FlowJudge, KernelPairs, Outcome};

/// How long a request head or a ClientHello may take to arrive, counted per read.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a keep-alive connection may sit between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an upstream connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a spliced TLS connection or an answer may stay silent.
const STREAM_TIMEOUT: Duration = Duration::from_secs(600);
const BUFFER_BYTES: usize = 16 * 1024;

/// Serves one accepted connection to its end. `node` is this proxy's node: only its own
/// endpoints' connections are judged (anything else reaching the listener is reset).
pub(crate) fn serve(client: TcpStream, peer: SocketAddr, dataplane: Option<Arc<Dataplane>>, node: &str) {
    let Ok(original) = client.local_addr() else {
        return reset(&client);
    };
    let Some(dataplane) = dataplane else {
        tracing::warn!(%peer, %original, "no policy yet: connection reset");
        return reset(&client);
    };
    let local = dataplane
        .endpoint_by_address(peer.ip())
        .is_some_and(|endpoint| endpoint.node.as_deref() == Some(node));
    if !local || original.ip().is_loopback() {
        tracing::warn!(%peer, %original, "not a local endpoint's redirected connection: reset");
        return reset(&client);
    }
    let judge = FlowJudge::new(
        dataplane,
        Flow {
            source: peer.ip(),
            destination: original.ip(),
            protocol: 6,
            source_port: Some(peer.port()),
            destination_port: Some(original.port()),
            icmp_type: None,
            icmp_code: None,
        },
        Arc::new(KernelPairs),
    );
    let _ = client.set_nodelay(true);
    if client.set_read_timeout(Some(HEAD_TIMEOUT)).is_err() {
        return reset(&client);
    }
    // A TLS connection starts with a handshake record (22), or an SSLv2 hello's high bit, which
    // the TLS reader refuses; everything else is read as HTTP/1.1.
    let mut first = [0_u8; 1];
    match client.peek(&mut first) {
        Ok(1) if first[0] == 22 || first[0] & 0x80 != 0 => tls(client, peer, original, judge),
        Ok(1) => http(client, peer, original, judge),
        _ => {}
    }
}

/// Makes the client's connection end in a reset when it is closed (the caller drops it right
/// after): a shutdown first would send a FIN, which reads as an orderly end.
fn reset(client: &TcpStream) {
    let _ = SockRef::from(client).set_linger(Some(Duration::ZERO));
}

/// A connection to the original destination from the pod's own address, marked so that its
/// replies come back to the proxy (see `sluice_dataplane::l7_redirect`).
fn connect_upstream(source: SocketAddr, destination: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(destination),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if destination.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else {
        socket.set_ip_transparent_v6(true)?;
    }
    socket.set_mark(MARK_PROXY_UPSTREAM)?;
    socket.bind(&SockAddr::from(SocketAddr::new(source.ip(), 0)))?;
    socket.connect_timeout(&SockAddr::from(destination), CONNECT_TIMEOUT)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// Copies the destination's bytes to the client until the destination closes; then closes the
/// client's sending side unless `holding` says the proxy still has something to say.
fn copy_back(mut upstream: TcpStream, mut client: TcpStream, holding: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = upstream.set_read_timeout(Some(STREAM_TIMEOUT));
        let mut buffer = vec![0_u8; BUFFER_BYTES];
        loop {
            match upstream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if client.write_all(&buffer[..read]).is_err() {
                        let _ = upstream.shutdown(Shutdown::Both);
                        return;
                    }
                }
            }
        }
        if !holding.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Write);
        }
    })
}

struct Upstream {
    stream: TcpStream,
    copier: JoinHandle<()>,
    holding: Arc<AtomicBool>,
}

fn http(mut client: TcpStream, peer: SocketAddr, original: SocketAddr, judge: FlowJudge) {
    let mut core = HttpConnection::with_judge(Arc::new(judge), Limits::default());
    let mut upstream: Option<Upstream> = None;
    let mut buffer = vec![0_u8; BUFFER_BYTES];
    let mut outputs = Vec::new();
    let mut idle_since = Instant::now();
    loop {
        let read = match client.read(&mut buffer) {
            Ok(0) => {
                // The client is done: the destination gets its end, and answers still come.
                if let Some(upstream) = upstream.take() {
                    let _ = upstream.stream.shutdown(Shutdown::Write);
                    let _ = upstream.copier.join();
                }
                return;
            }
            Ok(read) => read,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if core.is_between_requests() && idle_since.elapsed() < IDLE_TIMEOUT {
                    continue;
                }
                // A head that stalls, or a connection idle too long: nothing more of it goes on.
                if let Some(upstream) = upstream.take() {
                    let _ = upstream.stream.shutdown(Shutdown::Both);
                }
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Err(_) => {
                if let Some(upstream) = upstream.take() {
                    let _ = upstream.stream.shutdown(Shutdown::Both);
                }
                return;
            }
        };
        idle_since = Instant::now();
        outputs.clear();
        core.receive(&buffer[..read], &mut outputs);
        for output in outputs.drain(..) {
            match output {
                Output::ForwardHead(allowed) => {
                    if upstream.is_none() {
                        match connect_upstream(peer, original) {
                            Ok(stream) => {
                                let holding = Arc::new(AtomicBool::new(false));
                                let (Ok(back), Ok(to_client)) = (stream.try_clone(), client.try_clone())
                                else {
                                    return reset(&client);
                                };
                                let copier = copy_back(back, to_client, holding.clone());
                                upstream = Some(Upstream {
                                    stream,
                                    copier,
                                    holding,
                                });
                            }
                            Err(error) => {
                                // As the destination would have: the pod's connection is reset.
                                tracing::info!(%peer, %original, %error, "upstream connection failed");
                                return reset(&client);
                            }
                        }
                    }
                    let stream = &mut upstream.as_mut().expect("connected above").stream;
                    if stream.write_all(&allowed.head).is_err() {
                        return reset(&client);
                    }
                }
                Output::ForwardInput(range) => {
                    let Some(upstream) = upstream.as_mut() else {
                        return reset(&client);
                    };
                    if upstream.stream.write_all(&buffer[range]).is_err() {
                        return reset(&client);
                    }
                }
                Output::Refuse(refusal) => {
                    if let Some(upstream) = upstream.take() {
                        upstream.holding.store(true, Ordering::SeqCst);
                        if refusal.after_forwarded_requests > 0 {
                            // The answers to the requests forwarded before come first.
                            let _ = upstream.stream.shutdown(Shutdown::Write);
                            let _ = upstream.copier.join();
                        } else {
                            let _ = upstream.stream.shutdown(Shutdown::Both);
                        }
                    }
                    let _ = client.write_all(&refusal.response);
                    let _ = client.shutdown(Shutdown::Write);
                    // Drain what the client still sends briefly, so closing does not reset
                    // the answer away.
                    let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
                    while matches!(client.read(&mut buffer), Ok(read) if read > 0) {}
                    return;
                }
                Output::Close(error) => {
                    tracing::info!(%peer, %original, %error, "malformed request body: connection closed");
                    if let Some(upstream) = upstream.take() {
                        let _ = upstream.stream.shutdown(Shutdown::Both);
                    }
                    return reset(&client);
                }
            }
        }
    }
}

fn tls(mut client: TcpStream, peer: SocketAddr, original: SocketAddr, judge: FlowJudge) {
    let mut reader = ClientHelloReader::new(sluice_proxy::tls::Limits::default());
    let mut buffer = vec![0_u8; BUFFER_BYTES];
    let hello = loop {
        let read = match client.read(&mut buffer) {
            Ok(0) | Err(_) => return reset(&client),
            Ok(read) => read,
        };
        match reader.receive(&buffer[..read]) {
            HelloProgress::NeedMore => {}
            HelloProgress::Complete(hello) => break hello,
            HelloProgress::Failed(error) => {
                tracing::info!(%peer, %original, %error, "not a readable ClientHello: reset");
                return reset(&client);
            }
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
    match judge.decide(&view, view.server_name.as_deref()) {
        Outcome::Allowed(rule) => {
            tracing::debug!(%peer, %original, server_name = ?hello.server_name, allowed_by = %rule, "TLS connection allowed");
        }
        Outcome::Denied(tried) => {
            tracing::info!(
                %peer, %original, server_name = ?hello.server_name,
                tried = ?tried.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "TLS connection denied: reset"
            );
            return reset(&client);
        }
    }
    let mut upstream = match connect_upstream(peer, original) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::info!(%peer, %original, %error, "upstream connection failed");
            return reset(&client);
        }
    };
    if upstream.write_all(reader.received()).is_err() {
        return reset(&client);
    }
    let (Ok(back), Ok(to_client)) = (upstream.try_clone(), client.try_clone()) else {
        return reset(&client);
    };
    let copier = copy_back(back, to_client, Arc::new(AtomicBool::new(false)));
    let _ = client.set_read_timeout(Some(STREAM_TIMEOUT));
    loop {
        match client.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if upstream.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = copier.join();
}
