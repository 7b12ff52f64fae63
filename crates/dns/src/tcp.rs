//! DNS over TCP: each message is preceded by its length in two bytes (RFC 1035 §4.2.2), and a
//! message may span segments or share one with others. `Streams` rebuilds the server → client
//! byte stream of each connection from the segments it is shown, in any order, and hands out
//! each message once, with the stream offset just past its last byte.
//!
//! A segment carrying bytes already seen (a retransmission, a duplicate) adds nothing, but is
//! reported as *repeating* every remembered message that ends after its first byte: if the
//! first copy was held and then dropped, the client may complete those messages with this
//! copy (it may already hold the bytes after it), so the caller must decide again, from what
//! it remembered of each message (see [`Streams::remember`]). Deciding again costs nothing
//! when the first decision was programmed: it passes.
//!
//! Memory is bounded: a message is at most 65,535 bytes, bytes ahead of a gap are kept up to
//! [`Limits::ahead_bytes`], a stream remembers its last [`REMEMBERED_MESSAGES`] messages, and
//! at most [`Limits::streams`] connections are followed (the least recently active dropped).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use crate::packet::TcpFlags;

/// How many completed messages a stream remembers for retransmissions of their last segment.
pub const REMEMBERED_MESSAGES: usize = 8;
/// Streams further along than this stop being followed (DNS connections carry kilobytes).
const MAXIMUM_OFFSET: u32 = 1 << 30;

/// A TCP connection seen from the DNS server's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Connection {
    pub server: SocketAddr,
    pub client: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections followed at once.
    pub streams: usize,
    /// Bytes kept per connection beyond a gap.
    pub ahead_bytes: usize,
    /// A connection silent this long (milliseconds) is forgotten.
    pub idle_milliseconds: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            streams: 256,
            ahead_bytes: 16 * 1024,
            idle_milliseconds: 60_000,
        }
    }
}

/// What one segment did to its stream.
#[derive(Debug)]
pub struct Progress<M> {
    /// Messages this segment completed, each with the stream offset just past it.
    pub completed: Vec<(u32, Vec<u8>)>,
    /// What was remembered of earlier messages whose last byte this segment carries again.
    pub repeated: Vec<M>,
}

/// Counters of what the streams dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Connections forgotten to make room for a new one.
    pub streams_evicted: u64,
    /// Segments ahead of a gap not kept because the connection's allowance was full.
    pub segments_dropped: u64,
}

#[derive(Debug)]
struct Stream<M> {
    /// The sequence number of stream offset 0.
    start: u32,
    /// Stream offset of the next byte expected in order.
    next: u32,
    /// Bytes from the start of the first incomplete message up to `next`.
    buffer: Vec<u8>,
    /// Segments beyond a gap, by stream offset.
    ahead: BTreeMap<u32, Vec<u8>>,
    ahead_bytes: usize,
    /// Recent completed messages: the offset just past each and what the caller remembered.
    remembered: VecDeque<(u32, M)>,
    last_active: u64,
}

#[derive(Debug)]
pub struct Streams<M> {
    limits: Limits,
    streams: HashMap<Connection, Stream<M>>,
    counters: StreamCounters,
}

impl<M: Clone> Streams<M> {
    pub fn new(limits: Limits) -> Streams<M> {
        Streams {
            limits,
            streams: HashMap::new(),
            counters: StreamCounters::default(),
        }
    }

    pub fn counters(&self) -> StreamCounters {
        self.counters
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Feeds one server → client segment at time `now` (milliseconds).
    pub fn segment(
        &mut self,
        now: u64,
        connection: Connection,
        flags: TcpFlags,
        payload: &[u8],
    ) -> Progress<M> {
        let mut progress = Progress {
            completed: Vec::new(),
            repeated: Vec::new(),
        };
        if flags.rst {
            self.streams.remove(&connection);
            return progress;
        }
        // The SYN takes one sequence number; data starts after it.
        let start = if flags.syn {
            flags.sequence.wrapping_add(1)
        } else {
            flags.sequence
        };
        let restart = match self.streams.get(&connection) {
            Some(stream) => flags.syn && stream.start != start,
            None => true,
        };
        if restart {
            if payload.is_empty() && !flags.syn {
                return progress;
            }
            self.make_room(&connection);
            self.streams.insert(
                connection,
                Stream {
                    start,
                    next: 0,
                    buffer: Vec::new(),
                    ahead: BTreeMap::new(),
                    ahead_bytes: 0,
                    remembered: VecDeque::new(),
                    last_active: now,
                },
            );
        }
        let Some(stream) = self.streams.get_mut(&connection) else {
            return progress;
        };
        stream.last_active = now;
        if payload.is_empty() {
            return progress;
        }
        let offset = start.wrapping_sub(stream.start);
        // Offsets in the upper half are bytes from before the stream's start.
        let (offset, payload) = if offset >= 1 << 31 {
            let before = offset.wrapping_neg() as usize;
            if before >= payload.len() {
                return progress;
            }
            (0, &payload[before..])
        } else {
            (offset, payload)
        };
        let Ok(length) = u32::try_from(payload.len()) else {
            return progress;
        };
        let end = offset.saturating_add(length);
        if end > MAXIMUM_OFFSET {
            self.streams.remove(&connection);
            return progress;
        }
        // Bytes seen before, from `offset` on: the client may hold everything after them
        // (segments it got beyond a gap), so any remembered message ending past `offset` may
        // reach it with this copy.
        if offset < stream.next {
            for (message_end, memo) in &stream.remembered {
                if offset < *message_end {
                    progress.repeated.push(memo.clone());
                }
            }
        }
        if offset <= stream.next {
            if end > stream.next {
                stream
                    .buffer
                    .extend_from_slice(&payload[(stream.next - offset) as usize..]);
                stream.next = end;
                stream.take_ahead();
            }
        } else if stream.ahead_bytes + payload.len() <= self.limits.ahead_bytes {
            let kept = stream.ahead.entry(offset).or_default();
            if kept.len() < payload.len() {
                stream.ahead_bytes += payload.len() - kept.len();
                *kept = payload.to_vec();
            }
        } else {
            self.counters.segments_dropped += 1;
        }
        progress.completed = stream.messages();
        progress
    }

    /// Keeps `memo` for the message that ended at `end` on `connection`, for retransmissions.
    pub fn remember(&mut self, connection: &Connection, end: u32, memo: M) {
        if let Some(stream) = self.streams.get_mut(connection) {
            if stream.remembered.len() == REMEMBERED_MESSAGES {
                stream.remembered.pop_front();
            }
            stream.remembered.push_back((end, memo));
        }
    }

    /// Forgets connections silent since before `now - idle`.
    pub fn expire(&mut self, now: u64) {
        let idle = self.limits.idle_milliseconds;
        self.streams
            .retain(|_, stream| now.saturating_sub(stream.last_active) < idle);
    }

    fn make_room(&mut self, connection: &Connection) {
        if self.streams.contains_key(connection) || self.streams.len() < self.limits.streams {
            return;
        }
        let oldest = self
            .streams
            .iter()
            .min_by_key(|(key, stream)| (stream.last_active, **key))
            .map(|(key, _)| *key);
        if let Some(oldest) = oldest {
            self.streams.remove(&oldest);
            self.counters.streams_evicted += 1;
        }
    }
}

impl<M> Stream<M> {
    /// Moves kept segments that now join the in-order bytes into the buffer.
    fn take_ahead(&mut self) {
        while let Some(entry) = self.ahead.first_entry() {
            let offset = *entry.key();
            if offset > self.next {
                break;
            }
            let bytes = entry.remove();
            self.ahead_bytes -= bytes.len();
            let end = offset + bytes.len() as u32;
            if end > self.next {
                self.buffer
                    .extend_from_slice(&bytes[(self.next - offset) as usize..]);
                self.next = end;
            }
        }
    }

    /// Cuts every complete length-prefixed message off the front of the buffer.
    fn messages(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut messages = Vec::new();
        let mut consumed = 0;
        let buffer_start = self.next - self.buffer.len() as u32;
        while let Some(prefix) = self.buffer.get(consumed..consumed + 2) {
            let length = u16::from_be_bytes([prefix[0], prefix[1]]) as usize;
            let Some(message) = self.buffer.get(consumed + 2..consumed + 2 + length) else {
                break;
            };
            consumed += 2 + length;
            messages.push((buffer_start + consumed as u32, message.to_vec()));
        }
        self.buffer.drain(..consumed);
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Connection {
        Connection {
            server: "10.96.0.10:53".parse().unwrap(),
            client: "10.65.0.2:40000".parse().unwrap(),
        }
    }

    fn flags(sequence: u32) -> TcpFlags {
        TcpFlags {
            sequence,
            syn: false,
            fin: false,
            rst: false,
        }
    }

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for message in messages {
            bytes.extend_from_slice(&(message.len() as u16).to_be_bytes());
            bytes.extend_from_slice(message);
        }
        bytes
    }

    fn bodies(progress: &Progress<u32>) -> Vec<Vec<u8>> {
        progress.completed.iter().map(|(_, body)| body.clone()).collect()
    }

    #[test]
    fn messages_spanning_segments_and_sharing_one_come_out_once() {
        let mut streams = Streams::<u32>::new(Limits::default());
        let syn = TcpFlags {
            syn: true,
            ..flags(u32::MAX - 3)
        };
        assert!(streams.segment(0, connection(), syn, b"").completed.is_empty());
        // The stream starts at u32::MAX - 2, so it wraps the sequence space on the way.
        let bytes = framed(&[b"first", b"second", b"third"]);
        let base = u32::MAX - 2;
        let first = streams.segment(1, connection(), flags(base), &bytes[..4]);
        assert!(first.completed.is_empty());
        let second = streams.segment(2, connection(), flags(base.wrapping_add(4)), &bytes[4..16]);
        assert_eq!(bodies(&second), vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(second.completed[0].0, 7);
        assert_eq!(second.completed[1].0, 15);
        let third = streams.segment(3, connection(), flags(base.wrapping_add(16)), &bytes[16..]);
        assert_eq!(bodies(&third), vec![b"third".to_vec()]);
    }

    #[test]
    fn a_duplicate_adds_nothing_but_reports_the_messages_it_ends() {
        let mut streams = Streams::<u32>::new(Limits::default());
        let bytes = framed(&[b"one", b"two"]);
        let progress = streams.segment(0, connection(), flags(100), &bytes);
        assert_eq!(progress.completed.len(), 2);
        streams.remember(&connection(), progress.completed[0].0, 1);
        streams.remember(&connection(), progress.completed[1].0, 2);

        let again = streams.segment(1, connection(), flags(100), &bytes);
        assert!(again.completed.is_empty());
        assert_eq!(again.repeated, vec![1, 2]);
        // A retransmission of the first message's bytes repeats both: the client may hold the
        // second already. One of the second message's bytes repeats only the second.
        let part = streams.segment(2, connection(), flags(100), &bytes[..5]);
        assert_eq!(part.repeated, vec![1, 2]);
        let part = streams.segment(2, connection(), flags(105), &bytes[5..7]);
        assert_eq!(part.repeated, vec![2]);
        // A segment overlapping old and new bytes keeps only the new ones.
        let more = framed(&[b"three"]);
        let mut overlapping = bytes[5..].to_vec();
        overlapping.extend_from_slice(&more);
        let next = streams.segment(3, connection(), flags(105), &overlapping);
        assert_eq!(bodies(&next), vec![b"three".to_vec()]);
        assert_eq!(next.repeated, vec![2]);
    }

    #[test]
    fn a_segment_after_a_gap_waits_and_the_one_filling_the_gap_completes() {
        let mut streams = Streams::<u32>::new(Limits::default());
        let bytes = framed(&[b"hello world"]);
        let late = streams.segment(0, connection(), flags(1006), &bytes[6..]);
        // The first segment seen starts the stream, so send the real start first.
        assert!(late.completed.is_empty());
        let mut streams = Streams::<u32>::new(Limits::default());
        let syn = TcpFlags {
            syn: true,
            ..flags(999)
        };
        streams.segment(0, connection(), syn, b"");
        assert!(
            streams
                .segment(1, connection(), flags(1006), &bytes[6..])
                .completed
                .is_empty()
        );
        let filler = streams.segment(2, connection(), flags(1000), &bytes[..6]);
        assert_eq!(bodies(&filler), vec![b"hello world".to_vec()]);
    }

    #[test]
    fn bytes_beyond_a_gap_are_bounded() {
        let limits = Limits {
            ahead_bytes: 10,
            ..Limits::default()
        };
        let mut streams = Streams::<u32>::new(limits);
        let syn = TcpFlags {
            syn: true,
            ..flags(0)
        };
        streams.segment(0, connection(), syn, b"");
        streams.segment(1, connection(), flags(10), &[0; 8]);
        streams.segment(2, connection(), flags(30), &[0; 8]);
        assert_eq!(streams.counters().segments_dropped, 1);
    }

    #[test]
    fn reset_forgets_and_the_oldest_stream_makes_room() {
        let limits = Limits {
            streams: 2,
            ..Limits::default()
        };
        let mut streams = Streams::<u32>::new(limits);
        let other = |port| Connection {
            client: SocketAddr::new("10.65.0.2".parse().unwrap(), port),
            ..connection()
        };
        streams.segment(0, other(1), flags(0), b"\x00");
        streams.segment(1, other(2), flags(0), b"\x00");
        streams.segment(2, other(3), flags(0), b"\x00");
        assert_eq!(streams.len(), 2);
        assert_eq!(streams.counters().streams_evicted, 1);
        let reset = TcpFlags {
            rst: true,
            ..flags(1)
        };
        streams.segment(3, other(3), reset, b"");
        assert_eq!(streams.len(), 1);
        streams.expire(2 + Limits::default().idle_milliseconds);
        assert!(streams.is_empty());
    }
}
