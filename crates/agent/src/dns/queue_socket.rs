//! A minimal NFQUEUE client: one NETLINK_NETFILTER socket bound to one queue, that reads
//! queued packets (with a timeout, so its thread can stop) and sends verdicts. Numbers are the
//! kernel's uapi (`linux/netfilter/nfnetlink_queue.h`, `linux/netlink.h`).
//!
//! Why not the `nfq` crate: it keeps its socket private, so a blocked read cannot be bounded
//! and the agent could not stop its queue thread within a known time; polling it in
//! non-blocking mode would add a sleep to every held DNS answer.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkBuffer, NlasIterator};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const HEADER_LENGTH: usize = 16;
/// A DNS answer over UDP is at most 64 KiB; TCP segments are smaller than that too.
const COPY_RANGE: u32 = 0xffff;
const RECEIVE_BUFFER: usize = 128 * 1024;

/// One packet the kernel holds until its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPacket {
    pub id: u32,
    /// The IP packet, from its IP header on.
    pub payload: Vec<u8>,
}

/// What happens to a held packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

/// A socket bound to one NFQUEUE queue.
#[derive(Debug)]
pub struct QueueSocket {
    socket: Socket,
    queue: u16,
    sequence: u32,
    buffer: Vec<u8>,
    /// Packets read but not yet handed out (one read may carry several).
    ready: std::collections::VecDeque<QueuedPacket>,
}

impl QueueSocket {
    /// Binds queue `queue` in this network namespace; reads wait at most `read_timeout`.
    /// Fails when another process already holds the queue (EBUSY).
    pub fn bind(queue: u16, read_timeout: Duration) -> io::Result<QueueSocket> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let timeout = TimeVal::new(read_timeout.as_secs() as i64, read_timeout.subsec_micros() as i64);
        setsockopt(&socket.as_fd(), sockopt::ReceiveTimeout, &timeout).map_err(io::Error::from)?;
        // A burst of answers must not be lost to a full socket buffer (they would be dropped
        // and retried by the clients, slowly).
        setsockopt(&socket.as_fd(), sockopt::RcvBuf, &(4 << 20)).map_err(io::Error::from)?;
        let mut queue_socket = QueueSocket {
            socket,
            queue,
            sequence: 1,
            buffer: Vec::with_capacity(RECEIVE_BUFFER),
            ready: Default::default(),
        };
        queue_socket.configure(&command(NFQNL_CFG_CMD_BIND))?;
        let mut parameters = COPY_RANGE.to_be_bytes().to_vec();
        parameters.push(NFQNL_COPY_PACKET);
        queue_socket.configure(&attribute(NFQA_CFG_PARAMS, &parameters))?;
        Ok(queue_socket)
    }

    /// The next queued packet, or `None` when none came within the read timeout.
    pub fn receive(&mut self) -> io::Result<Option<QueuedPacket>> {
        if let Some(packet) = self.ready.pop_front() {
            return Ok(Some(packet));
        }
        self.buffer.clear();
        match self.socket.recv(&mut self.buffer, 0) {
            Ok(_) => {}
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(None);
            }
            Err(error) => return Err(error),
        }
        self.ready.extend(parse_packets(&self.buffer)?);
        Ok(self.ready.pop_front())
    }

    pub fn verdict(&mut self, id: u32, verdict: Verdict) -> io::Result<()> {
        let code = match verdict {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
        };
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(&id.to_be_bytes());
        let message = self.message(
            NFQNL_MSG_VERDICT,
            NLM_F_REQUEST,
            &attribute(NFQA_VERDICT_HDR, &body),
        );
        self.socket.send(&message, 0)?;
        Ok(())
    }

    /// Sends a configuration message and waits for its acknowledgement.
    fn configure(&mut self, attributes: &[u8]) -> io::Result<()> {
        let sequence = self.sequence;
        let message = self.message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, attributes);
        self.socket.send(&message, 0)?;
        for _ in 0..16 {
            self.buffer.clear();
            self.socket.recv(&mut self.buffer, 0)?;
            if let Some(errno) = acknowledgement(&self.buffer, sequence)? {
                return match errno {
                    0 => Ok(()),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                };
            }
        }
        Err(io::Error::other(
            "the kernel did not acknowledge the queue configuration",
        ))
    }

    fn message(&mut self, kind: u16, flags: u16, attributes: &[u8]) -> Vec<u8> {
        let length = HEADER_LENGTH + 4 + attributes.len();
        let mut bytes = Vec::with_capacity(length);
        bytes.extend_from_slice(&(length as u32).to_ne_bytes());
        bytes.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&self.sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family AF_UNSPEC, version 0, the queue number (big-endian).
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&self.queue.to_be_bytes());
        bytes.extend_from_slice(attributes);
        self.sequence = self.sequence.wrapping_add(1);
        bytes
    }
}

impl Drop for QueueSocket {
    /// Unbinds, so the kernel stops queueing to a socket no one reads (the rule's packets are
    /// then dropped until another listener binds: the queue has no bypass).
    fn drop(&mut self) {
        let message = self.message(NFQNL_MSG_CONFIG, NLM_F_REQUEST, &command(NFQNL_CFG_CMD_UNBIND));
        let _ = self.socket.send(&message, 0);
    }
}

fn command(command: u8) -> Vec<u8> {
    // nfqnl_msg_config_cmd: command, padding, protocol family (unused since Linux 3.8).
    attribute(NFQA_CFG_CMD, &[command, 0, 0, 0])
}

fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let length = 4 + value.len();
    let mut bytes = Vec::with_capacity(length.next_multiple_of(4));
    bytes.extend_from_slice(&(length as u16).to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(value);
    bytes.resize(length.next_multiple_of(4), 0);
    bytes
}

/// Walks the netlink messages of one read.
fn messages(bytes: &[u8]) -> io::Result<Vec<(u16, u32, &[u8])>> {
    let mut found = Vec::new();
    let mut rest = bytes;
    while rest.len() >= HEADER_LENGTH {
        let buffer = NetlinkBuffer::new_checked(rest)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
        let length = buffer.length() as usize;
        found.push((
            buffer.message_type(),
            buffer.sequence_number(),
            &rest[HEADER_LENGTH..length],
        ));
        rest = &rest[length.next_multiple_of(4).min(rest.len())..];
    }
    Ok(found)
}

/// The errno of the acknowledgement of `sequence` (0 for success), if this read carries it.
fn acknowledgement(bytes: &[u8], sequence: u32) -> io::Result<Option<i32>> {
    for (kind, answered, body) in messages(bytes)? {
        if kind == NLMSG_ERROR && answered == sequence && body.len() >= 4 {
            let errno = i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
            return Ok(Some(-errno));
        }
    }
    Ok(None)
}

fn parse_packets(bytes: &[u8]) -> io::Result<Vec<QueuedPacket>> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut packets = Vec::new();
    for (kind, _, body) in messages(bytes)? {
        if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET || body.len() < 4 {
            continue;
        }
        let mut id = None;
        let mut payload = Vec::new();
        for attribute in NlasIterator::new(&body[4..]) {
            let attribute = attribute.map_err(|error| invalid(error.to_string()))?;
            match attribute.kind() {
                NFQA_PACKET_HDR if attribute.value().len() >= 4 => {
                    id = Some(u32::from_be_bytes(
                        attribute.value()[..4].try_into().expect("4 bytes"),
                    ));
                }
                NFQA_PAYLOAD => payload = attribute.value().to_vec(),
                _ => {}
            }
        }
        let id = id.ok_or_else(|| invalid("a queued packet without its header".into()))?;
        packets.push(QueuedPacket { id, payload });
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        assert_eq!(attribute(7, &[1, 2, 3]), [7, 0, 7, 0, 1, 2, 3, 0]);
        assert_eq!(attribute(7, &[1, 2, 3, 4]).len(), 8);
    }

    #[test]
    fn a_queued_packet_is_read_with_its_id_and_payload() {
        let mut body = vec![2, 0, 0, 9];
        body.extend(attribute(NFQA_PACKET_HDR, &[0, 0, 0, 42, 8, 0, 3]));
        body.extend(attribute(NFQA_PAYLOAD, &[0x45, 1, 2]));
        let length = HEADER_LENGTH + body.len();
        let mut bytes = (length as u32).to_ne_bytes().to_vec();
        bytes.extend(((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET).to_ne_bytes());
        bytes.extend([0u8; 10]);
        bytes.extend(body);
        let packets = parse_packets(&bytes).unwrap();
        assert_eq!(
            packets,
            [QueuedPacket {
                id: 42,
                payload: vec![0x45, 1, 2]
            }]
        );
    }
}
