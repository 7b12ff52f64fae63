//! The lab's DNS server process (`lab dns-serve`): answers the [`Zone`] on port 53 over UDP and
//! TCP at one address, logging each query with its source and reply code.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use simple_dns::Packet;

use super::zone::{Transport, Zone};

/// How long a TCP connection may sit idle between queries (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

type Log = Arc<Mutex<Box<dyn Write + Send>>>;

/// Reads the zone from `zone_file` (JSON, written by `lab up`) and serves it until killed.
pub fn serve(address: IpAddr, port: u16, zone_file: &Path, log: Option<&Path>) -> Result<(), String> {
    let text = std::fs::read_to_string(zone_file)
        .map_err(|error| format!("cannot read {}: {error}", zone_file.display()))?;
    let zone: Zone = serde_json::from_str(&text)
        .map_err(|error| format!("{} is unreadable: {error}", zone_file.display()))?;
    let log: Log = Arc::new(Mutex::new(match log {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|error| format!("cannot open {}: {error}", path.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    }));
    let zone = Arc::new(zone);
    let (udp, tcp) = bind(address, port)?;
    record(
        &log,
        &format!("serving DNS on {address}:{port}: {} names", zone.names.len()),
    );
    let tcp_worker = {
        let (zone, log) = (zone.clone(), log.clone());
        std::thread::spawn(move || accept_loop(tcp, zone, log))
    };
    udp_loop(udp, &zone, &log);
    let _ = tcp_worker.join();
    Ok(())
}

/// Both sockets first, so a port in use fails the start rather than a later lookup.
pub fn bind(address: IpAddr, port: u16) -> Result<(UdpSocket, TcpListener), String> {
    let udp = UdpSocket::bind((address, port))
        .map_err(|error| format!("cannot listen on UDP {address}:{port}: {error}"))?;
    let tcp = TcpListener::bind((address, port))
        .map_err(|error| format!("cannot listen on TCP {address}:{port}: {error}"))?;
    Ok((udp, tcp))
}

fn record(log: &Log, line: &str) {
    if let Ok(mut log) = log.lock() {
        let _ = writeln!(log, "{line}");
        let _ = log.flush();
    }
}

/// `udp from 10.0.0.1:5353: api.example A -> NOERROR`.
fn describe(transport: Transport, peer: SocketAddr, query: &[u8], reply: Option<&[u8]>) -> String {
    let question = Packet::parse(query)
        .ok()
        .and_then(|packet| {
            let question = packet.questions.first()?;
            Some(format!("{} {:?}", question.qname, question.qtype))
        })
        .unwrap_or_else(|| "(unreadable query)".to_string());
    let code = reply
        .and_then(|reply| Packet::parse(reply).ok())
        .map(|reply| format!("{:?}", reply.rcode()))
        .unwrap_or_else(|| "no reply".to_string());
    let transport = match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    format!("{transport} from {peer}: {question} -> {code}")
}

/// Runs the UDP side on this thread: one datagram, one reply.
pub fn udp_loop(socket: UdpSocket, zone: &Zone, log: &Log) {
    let mut buffer = vec![0_u8; 65_535];
    loop {
        let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let query = &buffer[..length];
        let reply = zone.answer(query, Transport::Udp);
        record(log, &describe(Transport::Udp, peer, query, reply.as_deref()));
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

pub fn accept_loop(listener: TcpListener, zone: Arc<Zone>, log: Log) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (zone, log) = (zone.clone(), log.clone());
        std::thread::spawn(move || {
            let _ = answer_stream(stream, &zone, &log);
        });
    }
}

/// Queries on one TCP connection, each behind its two-byte length, until the client closes it
/// or stays idle for [`TCP_IDLE`].
fn answer_stream(mut stream: TcpStream, zone: &Zone, log: &Log) -> std::io::Result<()> {
    stream.set_read_timeout(Some(TCP_IDLE))?;
    stream.set_write_timeout(Some(TCP_IDLE))?;
    let peer = stream.peer_addr()?;
    loop {
        let mut prefix = [0_u8; 2];
        if stream.read_exact(&mut prefix).is_err() {
            return Ok(());
        }
        let mut query = vec![0_u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut query)?;
        let reply = zone.answer(&query, Transport::Tcp);
        record(log, &describe(Transport::Tcp, peer, &query, reply.as_deref()));
        let Some(reply) = reply else { continue };
        let length = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        let mut framed = length.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        stream.write_all(&framed)?;
    }
}

/// A server for tests: both loops on threads, logging nowhere.
#[cfg(test)]
pub fn spawn_for_test(zone: Zone, udp: UdpSocket, tcp: TcpListener) {
    let log: Log = Arc::new(Mutex::new(Box::new(std::io::sink())));
    let zone = Arc::new(zone);
    {
        let (zone, log) = (zone.clone(), log.clone());
        std::thread::spawn(move || accept_loop(tcp, zone, log));
    }
    std::thread::spawn(move || udp_loop(udp, &zone, &log));
}
