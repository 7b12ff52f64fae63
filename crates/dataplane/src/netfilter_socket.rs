//! The NETLINK_NETFILTER socket the flow-log readers share ([`crate::nflog`],
//! [`crate::conntrack_events`]): opened in a named network namespace if asked, reads bounded by
//! a timeout (so the thread reading can stop), a receive buffer sized for bursts, requests
//! acknowledged, and the kernel's datagrams walked into messages. Messages are written with
//! `sluice_nft::wire`; the numbers are the kernel's uapi (`linux/netlink.h`).

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::NetlinkBuffer;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::netlink::{NamespaceError, in_network_namespace};

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
const HEADER_LENGTH: usize = 16;
/// nfgenmsg: family, version, resource id.
pub(crate) const NFGENMSG_LENGTH: usize = 4;
/// One read holds at most this much; the kernel's netlink datagrams are far smaller.
const READ_BUFFER: usize = 256 * 1024;

/// Why a flow-log reader could not open, configure or read its socket.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("{doing}{}: {source}", where_(.namespace))]
    Io {
        doing: &'static str,
        namespace: Option<String>,
        source: io::Error,
    },
    #[error("the kernel refused {doing}{}: {}", where_(.namespace), io::Error::from_raw_os_error(*.errno))]
    Refused {
        doing: &'static str,
        namespace: Option<String>,
        errno: i32,
    },
    #[error("the kernel did not answer {doing}{} within {timeout:?}", where_(.namespace))]
    NoAnswer {
        doing: &'static str,
        namespace: Option<String>,
        timeout: Duration,
    },
    #[error("NFLOG group {group}{} is bound by another socket (is another agent or ulogd running?)", where_(.namespace))]
    GroupTaken { group: u16, namespace: Option<String> },
    #[error("a malformed netlink message: {0}")]
    Malformed(String),
}

fn where_(namespace: &Option<String>) -> String {
    namespace
        .as_ref()
        .map(|name| format!(" in network namespace {name}"))
        .unwrap_or_default()
}

/// What one read brought.
#[derive(Debug)]
pub(crate) enum Received {
    /// A datagram of one or more messages.
    Datagram(Vec<u8>),
    /// Nothing within the read timeout.
    Nothing,
    /// The socket's buffer overflowed (ENOBUFS): the kernel dropped messages for it.
    Overflow,
}

#[derive(Debug)]
pub(crate) struct NetfilterSocket {
    socket: Socket,
    namespace: Option<String>,
    sequence: u32,
    buffer: Vec<u8>,
    /// Datagrams read while waiting for an acknowledgement, handed out first.
    pending: VecDeque<Vec<u8>>,
    read_timeout: Duration,
    /// Reads that found the buffer had overflowed.
    overflows: u64,
}

impl NetfilterSocket {
    /// A socket in this network namespace or the named one, whose reads wait at most
    /// `read_timeout`, with a kernel receive buffer of `receive_buffer` bytes (forced past
    /// `rmem_max` when the process may, as the agent, root, may).
    pub fn open(
        namespace: Option<&str>,
        read_timeout: Duration,
        receive_buffer: usize,
    ) -> Result<NetfilterSocket, ReaderError> {
        let socket = in_network_namespace(namespace, || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_NETFILTER)?;
            socket.bind_auto()?;
            socket.connect(&SocketAddr::new(0, 0))?;
            Ok(socket)
        })?
        .map_err(|source| ReaderError::Io {
            doing: "opening a NETLINK_NETFILTER socket",
            namespace: namespace.map(str::to_string),
            source,
        })?;
        let opened = NetfilterSocket {
            socket,
            namespace: namespace.map(str::to_string),
            // Answers are matched to this socket's own sequence numbers; any start works.
            sequence: std::process::id().wrapping_mul(1 << 12),
            buffer: Vec::with_capacity(READ_BUFFER),
            pending: VecDeque::new(),
            read_timeout,
            overflows: 0,
        };
        let timeout = TimeVal::new(
            read_timeout.as_secs() as i64,
            i64::from(read_timeout.subsec_micros()),
        );
        setsockopt(&opened.socket.as_fd(), sockopt::ReceiveTimeout, &timeout)
            .map_err(|errno| opened.io("setting the read timeout", errno.into()))?;
        let size = receive_buffer.min(i32::MAX as usize);
        if setsockopt(&opened.socket.as_fd(), sockopt::RcvBufForce, &size).is_err() {
            setsockopt(&opened.socket.as_fd(), sockopt::RcvBuf, &size)
                .map_err(|errno| opened.io("setting the receive buffer", errno.into()))?;
        }
        Ok(opened)
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Joins a multicast group (e.g. conntrack's NFNLGRP_CONNTRACK_NEW).
    pub fn add_membership(&mut self, group: u32) -> Result<(), ReaderError> {
        self.socket
            .add_membership(group)
            .map_err(|source| self.io("joining a netfilter multicast group", source))
    }

    pub fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    pub fn send(&mut self, bytes: &[u8], doing: &'static str) -> Result<(), ReaderError> {
        self.socket
            .send(bytes, 0)
            .map(|_| ())
            .map_err(|source| self.io(doing, source))
    }

    /// Sends a request that asked for an acknowledgement (NLM_F_ACK, sequence `sequence`) and
    /// waits for it; other datagrams read meanwhile are kept for [`NetfilterSocket::receive`].
    pub fn request(&mut self, bytes: &[u8], sequence: u32, doing: &'static str) -> Result<(), ReaderError> {
        self.send(bytes, doing)?;
        // A few reads: the answer comes within the send call, events may come before it.
        for _ in 0..64 {
            let datagram = match self.read(doing)? {
                Received::Datagram(datagram) => datagram,
                Received::Nothing => break,
                Received::Overflow => continue,
            };
            let mut answer = None;
            for message in messages(&datagram)? {
                if message.kind == NLMSG_ERROR && message.sequence == sequence {
                    answer = Some(error_code(message.body)?);
                }
            }
            match answer {
                Some(0) => return Ok(()),
                Some(errno) => {
                    return Err(ReaderError::Refused {
                        doing,
                        namespace: self.namespace.clone(),
                        errno,
                    });
                }
                None => self.pending.push_back(datagram),
            }
        }
        Err(ReaderError::NoAnswer {
            doing,
            namespace: self.namespace.clone(),
            timeout: self.read_timeout,
        })
    }

    /// The next datagram; `None` when none came within the read timeout or the buffer had
    /// overflowed (counted in [`NetfilterSocket::overflows`]).
    pub fn next_datagram(&mut self) -> Result<Option<Vec<u8>>, ReaderError> {
        match self.receive()? {
            Received::Datagram(datagram) => Ok(Some(datagram)),
            Received::Nothing => Ok(None),
            Received::Overflow => {
                self.overflows += 1;
                Ok(None)
            }
        }
    }

    /// A datagram already waiting, without blocking; `None` when there is none (or the buffer
    /// had overflowed, counted). For draining a burst after one blocking read.
    pub fn next_waiting_datagram(&mut self) -> Result<Option<Vec<u8>>, ReaderError> {
        if let Some(datagram) = self.pending.pop_front() {
            return Ok(Some(datagram));
        }
        self.buffer.clear();
        match self.socket.recv(&mut self.buffer, nix::libc::MSG_DONTWAIT) {
            Ok(length) if length > self.buffer.capacity() => Err(ReaderError::Malformed(format!(
                "a datagram of {length} bytes did not fit the {READ_BUFFER}-byte buffer"
            ))),
            Ok(_) => Ok(Some(self.buffer.clone())),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Ok(None)
            }
            Err(error) if error.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                self.overflows += 1;
                Ok(None)
            }
            Err(error) => Err(self.io("reading from a NETLINK_NETFILTER socket", error)),
        }
    }

    /// How many times the kernel dropped messages because this socket's buffer was full.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// The next datagram, nothing within the read timeout, or an overflow.
    pub fn receive(&mut self) -> Result<Received, ReaderError> {
        if let Some(datagram) = self.pending.pop_front() {
            return Ok(Received::Datagram(datagram));
        }
        self.read("reading from a NETLINK_NETFILTER socket")
    }

    fn read(&mut self, doing: &'static str) -> Result<Received, ReaderError> {
        self.buffer.clear();
        match self.socket.recv(&mut self.buffer, 0) {
            Ok(length) if length > self.buffer.capacity() => Err(ReaderError::Malformed(format!(
                "a datagram of {length} bytes did not fit the {READ_BUFFER}-byte buffer"
            ))),
            Ok(_) => Ok(Received::Datagram(self.buffer.clone())),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Ok(Received::Nothing)
            }
            Err(error) if error.raw_os_error() == Some(nix::libc::ENOBUFS) => Ok(Received::Overflow),
            Err(error) => Err(self.io(doing, error)),
        }
    }

    fn io(&self, doing: &'static str, source: io::Error) -> ReaderError {
        ReaderError::Io {
            doing,
            namespace: self.namespace.clone(),
            source,
        }
    }
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub sequence: u32,
    /// What follows the netlink header.
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    /// The netfilter subsystem (high byte of the type) and its message (low byte).
    pub fn subsystem(&self) -> (u8, u8) {
        ((self.kind >> 8) as u8, (self.kind & 0xff) as u8)
    }

    /// nfgenmsg's family, and the attributes after it.
    pub fn netfilter(&self) -> Result<(u8, &'a [u8]), ReaderError> {
        if self.body.len() < NFGENMSG_LENGTH {
            return Err(ReaderError::Malformed(format!(
                "a netfilter message of {} bytes has no nfgenmsg",
                self.body.len()
            )));
        }
        Ok((self.body[0], &self.body[NFGENMSG_LENGTH..]))
    }
}

/// Walks the netlink messages of one datagram.
pub(crate) fn messages(bytes: &[u8]) -> Result<Vec<Message<'_>>, ReaderError> {
    let mut found = Vec::new();
    let mut rest = bytes;
    while rest.len() >= HEADER_LENGTH {
        let buffer =
            NetlinkBuffer::new_checked(rest).map_err(|error| ReaderError::Malformed(error.to_string()))?;
        let length = buffer.length() as usize;
        found.push(Message {
            kind: buffer.message_type(),
            flags: buffer.flags(),
            sequence: buffer.sequence_number(),
            body: &rest[HEADER_LENGTH..length],
        });
        rest = &rest[length.next_multiple_of(4).min(rest.len())..];
    }
    Ok(found)
}

/// The errno of an NLMSG_ERROR message (0: an acknowledgement).
pub(crate) fn error_code(body: &[u8]) -> Result<i32, ReaderError> {
    body.get(..4)
        .map(|bytes| -i32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
        .ok_or_else(|| ReaderError::Malformed("an error message without its code".into()))
}

/// The value of a big-endian integer attribute, checked for its size.
pub(crate) fn be_u16(value: &[u8], what: &str) -> Result<u16, ReaderError> {
    value
        .get(..2)
        .map(|bytes| u16::from_be_bytes(bytes.try_into().expect("2 bytes")))
        .ok_or_else(|| ReaderError::Malformed(format!("{what}: {} bytes, not 2", value.len())))
}

pub(crate) fn be_u32(value: &[u8], what: &str) -> Result<u32, ReaderError> {
    value
        .get(..4)
        .map(|bytes| u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
        .ok_or_else(|| ReaderError::Malformed(format!("{what}: {} bytes, not 4", value.len())))
}

pub(crate) fn be_u64(value: &[u8], what: &str) -> Result<u64, ReaderError> {
    value
        .get(..8)
        .map(|bytes| u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
        .ok_or_else(|| ReaderError::Malformed(format!("{what}: {} bytes, not 8", value.len())))
}

/// Now, as flow-log events carry it (wall clock, milliseconds since the Unix epoch).
pub(crate) fn now() -> sluice_flowlog::events::Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    sluice_flowlog::events::Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const AT: sluice_flowlog::events::Timestamp =
        sluice_flowlog::events::Timestamp(1_700_000_000_000);

    /// One attribute as the kernel writes it.
    pub(crate) fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        sluice_nft::wire::put(&mut bytes, kind, value);
        bytes
    }

    /// A netlink message of `kind` with `body` after its header, as the kernel sends one.
    pub(crate) fn message(kind: u16, flags: u16, sequence: u32, body: &[u8]) -> Vec<u8> {
        let length = HEADER_LENGTH + body.len();
        let mut bytes = (length as u32).to_ne_bytes().to_vec();
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(flags.to_ne_bytes());
        bytes.extend(sequence.to_ne_bytes());
        bytes.extend(0u32.to_ne_bytes());
        bytes.extend(body);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    #[test]
    fn a_datagram_is_walked_message_by_message_with_padding() {
        let mut datagram = message(0x0400, 0, 7, &[2, 0, 0, 5, 1, 2, 3]);
        datagram.extend(message(NLMSG_ERROR, 0, 8, &(-16i32).to_ne_bytes()));
        let walked = messages(&datagram).unwrap();
        assert_eq!(walked.len(), 2);
        assert_eq!(walked[0].subsystem(), (4, 0));
        assert_eq!(walked[0].netfilter().unwrap(), (2, &[1u8, 2, 3][..]));
        assert_eq!(walked[1].sequence, 8);
        assert_eq!(error_code(walked[1].body).unwrap(), 16);
        assert!(matches!(
            Message {
                body: &[1, 2],
                ..walked[0]
            }
            .netfilter(),
            Err(ReaderError::Malformed(_))
        ));
    }

    #[test]
    fn integers_are_big_endian_and_checked_for_size() {
        assert_eq!(be_u16(&[1, 2], "port").unwrap(), 0x0102);
        assert_eq!(be_u32(&[0, 0, 1, 0], "id").unwrap(), 256);
        assert_eq!(be_u64(&[0, 0, 0, 0, 0, 0, 0, 9], "bytes").unwrap(), 9);
        let error = be_u32(&[1], "CTA_ID").unwrap_err().to_string();
        assert!(error.contains("CTA_ID: 1 bytes"), "{error}");
    }
}
