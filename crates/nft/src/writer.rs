//! The fast path for set elements: one NETLINK_NETFILTER socket, kept open, that sends each
//! update as one nf_tables batch (all of it or none of it) and waits for the kernel's answer.
//! No process is spawned per update, which is what a DNS answer held until its addresses are
//! in a set needs (docs/benchmarks.md has the numbers against `nft`).

use std::fmt;
use std::fs::File;
use std::io;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sched::CloneFlags;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::elements::{ElementChange, ListedElement};
use crate::nfnetlink::{self, Answer, Culprit};
use crate::objects::Table;
use crate::queue_table::QueueTable;

/// How long to wait for the kernel's answer. The kernel handles a batch inside the send
/// call, so this bounds only a kernel that never answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Big enough for one datagram of a dump (the kernel fills up to 32 KiB per read).
const RECEIVE_BUFFER: usize = 64 * 1024;

/// Writes set elements of nf_tables sets over netlink.
#[derive(Debug)]
pub struct SetElementWriter {
    socket: Socket,
    namespace: Option<String>,
    sequence: u32,
    buffer: Vec<u8>,
}

impl SetElementWriter {
    /// A socket in this network namespace, or in the named one (`/run/netns/<name>`, entered
    /// on a short-lived thread: the socket stays in that namespace whichever thread uses it,
    /// and the caller's thread never changes namespace).
    pub fn open(namespace: Option<&str>) -> Result<SetElementWriter, SetElementError> {
        let socket = match namespace {
            None => open_socket(),
            Some(name) => {
                let path = format!("/run/netns/{name}");
                let file = File::open(&path).map_err(|error| SetElementError::Namespace {
                    namespace: name.to_string(),
                    reason: format!("opening {path}: {error}"),
                })?;
                std::thread::scope(|scope| {
                    scope
                        .spawn(move || {
                            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                                SetElementError::Namespace {
                                    namespace: name.to_string(),
                                    reason: format!("setns: {errno}"),
                                }
                            })?;
                            open_socket()
                        })
                        .join()
                        .unwrap_or_else(|_| {
                            Err(SetElementError::Namespace {
                                namespace: name.to_string(),
                                reason: "the thread entering it panicked".into(),
                            })
                        })
                })
            }
        }?;
        Ok(SetElementWriter {
            socket,
            namespace: namespace.map(str::to_string),
            // Any start works: answers are matched to this writer's own sequence numbers.
            sequence: std::process::id().wrapping_mul(1 << 12),
            buffer: Vec::with_capacity(RECEIVE_BUFFER),
        })
    }

    /// Applies the changes as one transaction: the kernel takes all of them or, on any error,
    /// none. An empty slice sends nothing.
    pub fn apply(&mut self, changes: &[ElementChange]) -> Result<(), SetElementError> {
        if changes.is_empty() {
            return Ok(());
        }
        let batch =
            nfnetlink::encode_batch(changes, self.sequence).map_err(|error| SetElementError::Invalid {
                change: error.change,
                reason: error.reason,
            })?;
        self.sequence = self.sequence.wrapping_add(batch.messages.len() as u32 + 2);
        self.socket
            .send(&batch.bytes, 0)
            .map_err(|error| self.io("sending a batch", error))?;

        let mut unanswered: Vec<u32> = batch.messages.iter().map(|message| message.sequence).collect();
        let mut refusal = None;
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
                if sequence == batch.begin_sequence && errno != 0 {
                    // The batch as a whole was refused (no permission, or the commit failed).
                    return Err(SetElementError::Refused(Box::new(Refusal::whole_batch(
                        errno, message,
                    ))));
                }
                let Some(position) = unanswered.iter().position(|pending| *pending == sequence) else {
                    continue;
                };
                unanswered.swap_remove(position);
                if errno != 0 && refusal.is_none() {
                    let layout = batch
                        .messages
                        .iter()
                        .find(|layout| layout.sequence == sequence)
                        .expect("an answered sequence belongs to the batch");
                    let change = &changes[layout.first_change];
                    let culprit = layout.culprit(offset);
                    let key = match culprit {
                        Culprit::Change(index) => Some(changes[index].key().to_string()),
                        _ => None,
                    };
                    refusal = Some(Refusal {
                        errno,
                        operation: if change.is_add() {
                            Operation::Adding
                        } else {
                            Operation::Deleting
                        },
                        table: Some(change.table().clone()),
                        set: Some(change.set().to_string()),
                        culprit,
                        key,
                        message,
                    });
                }
            }
        }
        // Acks arrive for every message even when the batch is aborted, so success is "no
        // message refused", never "some message acknowledged".
        match refusal {
            Some(refusal) => Err(SetElementError::Refused(Box::new(refusal))),
            None => Ok(()),
        }
    }

    /// Creates (or replaces) the table that sends marked packets to an NFQUEUE (see
    /// [`QueueTable`]), in one transaction.
    pub fn install_queue_table(&mut self, table: &QueueTable) -> Result<(), SetElementError> {
        let begin = self.sequence;
        let (bytes, mut unanswered) = crate::queue_table::encode(table, begin);
        self.sequence = self.sequence.wrapping_add(unanswered.len() as u32 + 2);
        self.socket
            .send(&bytes, 0)
            .map_err(|error| self.io("sending the queue table", error))?;
        let mut refusal = None;
        while !unanswered.is_empty() {
            for answer in self.receive()? {
                let (sequence, errno, message) = match answer {
                    Answer::Acknowledged { sequence } => (sequence, 0, None),
                    Answer::Refused {
                        sequence,
                        errno,
                        message,
                        ..
                    } => (sequence, errno, message),
                    Answer::Done { .. } | Answer::Data { .. } => continue,
                };
                if sequence == begin && errno != 0 {
                    return Err(SetElementError::Refused(Box::new(Refusal::whole_batch(
                        errno, message,
                    ))));
                }
                unanswered.retain(|pending| *pending != sequence);
                if errno != 0 && refusal.is_none() {
                    refusal = Some(Refusal {
                        errno,
                        operation: Operation::Committing,
                        table: None,
                        set: None,
                        culprit: Culprit::Unknown,
                        key: None,
                        message,
                    });
                }
            }
        }
        match refusal {
            Some(refusal) => Err(SetElementError::Refused(Box::new(refusal))),
            None => Ok(()),
        }
    }

    /// Every element of a set with its timeout and the time it has left.
    pub fn list(&mut self, table: &Table, set: &str) -> Result<Vec<ListedElement>, SetElementError> {
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        let request = nfnetlink::encode_list(table.family, &table.name, set, sequence);
        self.socket
            .send(&request, 0)
            .map_err(|error| self.io("asking for a set's elements", error))?;
        let mut elements = Vec::new();
        loop {
            for answer in self.receive()? {
                match answer {
                    Answer::Data {
                        sequence: answered,
                        interrupted: true,
                        ..
                    } if answered == sequence => {
                        return Err(SetElementError::Protocol(format!(
                            "set {set} of table {table} changed while it was listed; list it again"
                        )));
                    }
                    Answer::Data {
                        sequence: answered,
                        attributes,
                        ..
                    } if answered == sequence => {
                        elements.extend(
                            nfnetlink::parse_elements(&attributes).map_err(SetElementError::Protocol)?,
                        );
                    }
                    Answer::Done { sequence: answered } if answered == sequence => return Ok(elements),
                    Answer::Refused {
                        sequence: answered,
                        errno,
                        message,
                        ..
                    } if answered == sequence => {
                        // A dump names no attribute; ENOENT is the table or the set.
                        return Err(SetElementError::Refused(Box::new(Refusal {
                            errno,
                            operation: Operation::Listing,
                            table: Some(table.clone()),
                            set: Some(set.to_string()),
                            culprit: Culprit::Unknown,
                            key: None,
                            message,
                        })));
                    }
                    _ => {}
                }
            }
        }
    }

    fn receive(&mut self) -> Result<Vec<Answer>, SetElementError> {
        self.buffer.clear();
        match self.socket.recv(&mut self.buffer, 0) {
            Ok(length) if length > self.buffer.len() => Err(SetElementError::Protocol(format!(
                "an answer of {length} bytes did not fit the {RECEIVE_BUFFER}-byte buffer"
            ))),
            Ok(_) => nfnetlink::parse_answers(&self.buffer).map_err(SetElementError::Protocol),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                Err(SetElementError::Timeout(ANSWER_TIMEOUT))
            }
            Err(error) => Err(self.io("reading the kernel's answer", error)),
        }
    }

    fn io(&self, doing: &'static str, source: io::Error) -> SetElementError {
        SetElementError::Io {
            doing,
            namespace: self.namespace.clone(),
            source,
        }
    }
}

fn open_socket() -> Result<Socket, SetElementError> {
    let opening = |source| SetElementError::Io {
        doing: "opening a NETLINK_NETFILTER socket",
        namespace: None,
        source,
    };
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(opening)?;
    socket.bind_auto().map_err(opening)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(opening)?;
    // Extended ACKs say which attribute (table, set, element) the kernel refused.
    socket.set_ext_ack(true).map_err(opening)?;
    let timeout = TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0);
    setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)
        .map_err(|errno| opening(io::Error::from(errno)))?;
    Ok(socket)
}

/// Why set elements could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SetElementError {
    #[error("entering network namespace {namespace}: {reason}")]
    Namespace { namespace: String, reason: String },
    #[error("{doing}{}: {source}", namespace.as_ref().map(|name| format!(" in network namespace {name}")).unwrap_or_default())]
    Io {
        doing: &'static str,
        namespace: Option<String>,
        source: io::Error,
    },
    #[error("change {change} cannot be sent: {reason}; nothing was applied")]
    Invalid { change: usize, reason: String },
    #[error("{0}")]
    Refused(Box<Refusal>),
    #[error("the kernel did not answer within {0:?}; the batch may or may not have been applied")]
    Timeout(Duration),
    #[error("unreadable netlink answer: {0}")]
    Protocol(String),
}

/// What the refused message asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Adding,
    Deleting,
    Listing,
    /// The batch as a whole (its begin message or its commit).
    Committing,
}

/// The kernel refused a batch (so applied none of it) or a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The positive errno, e.g. 2 (ENOENT).
    pub errno: i32,
    pub operation: Operation,
    /// The table and set of the refused message; `None` when the batch as a whole was refused.
    pub table: Option<Table>,
    pub set: Option<String>,
    /// What the kernel pointed at.
    pub culprit: Culprit,
    /// The refused element's key, in nft syntax, when the kernel pointed at one.
    pub key: Option<String>,
    /// The kernel's own text, when it gave one.
    pub message: Option<String>,
}

impl Refusal {
    fn whole_batch(errno: i32, message: Option<String>) -> Refusal {
        Refusal {
            errno,
            operation: Operation::Committing,
            table: None,
            set: None,
            culprit: Culprit::Unknown,
            key: None,
            message,
        }
    }

    /// ENOENT on the table or set: the ruleset does not declare what the change names.
    pub fn is_missing_set(&self) -> bool {
        self.errno == ENOENT && matches!(self.culprit, Culprit::Table | Culprit::Set)
    }

    fn reason(&self) -> String {
        match (self.errno, self.culprit) {
            (ENOENT, Culprit::Table) => "no such table".into(),
            (ENOENT, Culprit::Set) => "no such set".into(),
            (ENOENT, Culprit::Change(_)) => "no such element in the set".into(),
            (EINVAL, _) => "invalid argument (a key that does not fit the set's type, or a timeout on a set \
                            declared without `flags timeout`)"
                .into(),
            // What the kernel returns when a set holds its declared `size`.
            (ENFILE, _) => "the set is full (its `size`)".into(),
            (EPERM, _) => "not permitted (writing nftables needs CAP_NET_ADMIN)".into(),
            (errno, _) => io::Error::from_raw_os_error(errno).to_string(),
        }
    }
}

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const ENFILE: i32 = 23;

impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = io::Error::from_raw_os_error(self.errno);
        match (&self.table, &self.set) {
            (Some(table), Some(set)) => {
                let doing = match self.operation {
                    Operation::Adding => "adding to",
                    Operation::Deleting => "deleting from",
                    Operation::Listing => "listing",
                    Operation::Committing => "committing to",
                };
                write!(formatter, "the kernel refused {doing} set {set} of table {table}")?;
                if let (Culprit::Change(index), Some(key)) = (self.culprit, &self.key) {
                    write!(formatter, " (change {index}, element {key})")?;
                }
            }
            _ => write!(formatter, "the kernel refused the batch")?,
        }
        write!(formatter, ": {} [{name}]", self.reason())?;
        if let Some(message) = &self.message {
            write!(formatter, ": {message}")?;
        }
        if self.operation != Operation::Listing {
            write!(formatter, "; nothing in the batch was applied")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Family;

    #[test]
    fn refusals_read_for_a_person() {
        let whole = SetElementError::Refused(Box::new(Refusal::whole_batch(EPERM, None)));
        assert_eq!(
            whole.to_string(),
            "the kernel refused the batch: not permitted (writing nftables needs CAP_NET_ADMIN) \
             [Operation not permitted (os error 1)]; nothing in the batch was applied"
        );
        let element = Refusal {
            errno: ENFILE,
            operation: Operation::Adding,
            table: Some(Table::new(Family::Inet, "sluice")),
            set: Some("d1_v4".into()),
            culprit: Culprit::Change(3),
            key: Some("10.0.0.1 . 192.0.2.7".into()),
            message: None,
        };
        assert!(!element.is_missing_set());
        assert_eq!(
            element.to_string(),
            "the kernel refused adding to set d1_v4 of table inet sluice (change 3, element \
             10.0.0.1 . 192.0.2.7): the set is full (its `size`) [Too many open files in system (os error 23)]; \
             nothing in the batch was applied"
        );
    }
}
