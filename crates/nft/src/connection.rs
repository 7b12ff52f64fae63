//! One NETLINK_NETFILTER socket, optionally in a named network namespace, that sends nf_tables
//! batches and dump requests and reads the kernel's answers. Shared by the set element writer
//! and the DNS queue tables; each maps [`ConnectionError`] into its own error.

use std::io;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::nfnetlink::{self, Answer};

/// How long to wait for the kernel's answer. The kernel handles a batch inside the send
/// call, so this bounds only a kernel that never answers.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Big enough for one datagram of a dump (the kernel fills up to 32 KiB per read).
const RECEIVE_BUFFER: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Connection {
    socket: Socket,
    namespace: Option<String>,
    sequence: u32,
    buffer: Vec<u8>,
}

/// Why the socket could not be opened, written or read.
#[derive(Debug)]
pub(crate) enum ConnectionError {
    Namespace {
        namespace: String,
        reason: String,
    },
    Io {
        doing: &'static str,
        namespace: Option<String>,
        source: io::Error,
    },
    Timeout(Duration),
    Protocol(String),
}

/// The first message of a batch the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub sequence: u32,
    pub errno: i32,
    pub offset: Option<u32>,
    pub message: Option<String>,
}

impl Connection {
    /// A socket in this network namespace, or in the named one (`/run/netns/<name>`, entered
    /// on a short-lived thread: the socket stays in that namespace whichever thread uses it,
    /// and the caller's thread never changes namespace).
    pub fn open(namespace: Option<&str>) -> Result<Connection, ConnectionError> {
        let socket = crate::namespace::in_network_namespace(namespace, open_socket).map_err(|error| {
            ConnectionError::Namespace {
                namespace: error.namespace,
                reason: error.reason,
            }
        })??;
        Ok(Connection {
            socket,
            namespace: namespace.map(str::to_string),
            // Any start works: answers are matched to this connection's own sequence numbers.
            sequence: std::process::id().wrapping_mul(1 << 12),
            buffer: Vec::with_capacity(RECEIVE_BUFFER),
        })
    }

    /// The sequence number the next reservation starts at (to encode a batch whose message
    /// count is known only once encoded; reserve them before sending).
    pub fn next_sequence(&self) -> u32 {
        self.sequence
    }

    /// Reserves `count` consecutive sequence numbers; returns the first.
    pub fn reserve_sequences(&mut self, count: u32) -> u32 {
        let first = self.sequence;
        self.sequence = self.sequence.wrapping_add(count);
        first
    }

    pub fn send(&mut self, bytes: &[u8], doing: &'static str) -> Result<(), ConnectionError> {
        self.socket
            .send(bytes, 0)
            .map(|_| ())
            .map_err(|error| self.io(doing, error))
    }

    /// Sends a batch and waits for the answer to each of its messages (`messages`: their
    /// sequence numbers; each asked for an ACK). Returns the first refusal, if any: a refusal
    /// of the begin message (sequence `begin`) means the batch as a whole was refused.
    pub fn commit(
        &mut self,
        bytes: &[u8],
        begin: u32,
        messages: &[u32],
    ) -> Result<Option<Rejection>, ConnectionError> {
        self.send(bytes, "sending a batch")?;
        let mut unanswered = messages.to_vec();
        let mut rejection = None;
        while !unanswered.is_empty() {
            for answer in self.receive()? {
                let (sequence, errno, offset, message) = match answer {
                    Answer::Acknowledged { sequence } => (sequence, 0, None, None),
                    Answer::Refused {
                        sequence,
                        errno,
                        offset,
                        message,
                    } => (sequence, errno, offset, message),
                    // Left over from an earlier call that gave up; not ours.
                    Answer::Done { .. } | Answer::Data { .. } => continue,
                };
                let refused = errno != 0;
                if sequence == begin && refused {
                    return Ok(Some(Rejection {
                        sequence,
                        errno,
                        offset,
                        message,
                    }));
                }
                let Some(position) = unanswered.iter().position(|pending| *pending == sequence) else {
                    continue;
                };
                unanswered.swap_remove(position);
                if refused && rejection.is_none() {
                    rejection = Some(Rejection {
                        sequence,
                        errno,
                        offset,
                        message,
                    });
                }
            }
        }
        // Acks arrive for every message even when the batch is aborted, so success is "no
        // message refused", never "some message acknowledged".
        Ok(rejection)
    }

    pub fn receive(&mut self) -> Result<Vec<Answer>, ConnectionError> {
        self.buffer.clear();
        match self.socket.recv(&mut self.buffer, 0) {
            Ok(length) if length > self.buffer.len() => Err(ConnectionError::Protocol(format!(
                "an answer of {length} bytes did not fit the {RECEIVE_BUFFER}-byte buffer"
            ))),
            Ok(_) => nfnetlink::parse_answers(&self.buffer).map_err(ConnectionError::Protocol),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                Err(ConnectionError::Timeout(ANSWER_TIMEOUT))
            }
            Err(error) => Err(self.io("reading the kernel's answer", error)),
        }
    }

    fn io(&self, doing: &'static str, source: io::Error) -> ConnectionError {
        ConnectionError::Io {
            doing,
            namespace: self.namespace.clone(),
            source,
        }
    }
}

fn open_socket() -> Result<Socket, ConnectionError> {
    let opening = |source| ConnectionError::Io {
        doing: "opening a NETLINK_NETFILTER socket",
        namespace: None,
        source,
    };
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(opening)?;
    socket.bind_auto().map_err(opening)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(opening)?;
    // Extended ACKs say which attribute the kernel refused.
    socket.set_ext_ack(true).map_err(opening)?;
    let timeout = TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0);
    setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)
        .map_err(|errno| opening(io::Error::from(errno)))?;
    Ok(socket)
}
