//! The records the agent serves live: a bounded ring of JSON lines, each with a sequence number
//! (so a follower asks for what came after the last one it saw, never twice, never missed while
//! it is still in the ring) and the record's end time (so `?since=` selects by time).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// One served record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentRecord {
    pub sequence: u64,
    /// The record's end time, Unix seconds.
    pub end_time: u64,
    /// One JSON object, without the newline.
    pub line: String,
}

/// The ring: at most `capacity_records` records and `capacity_bytes` bytes of lines, the oldest
/// dropped first; memory stays bounded whatever the traffic.
#[derive(Debug)]
pub struct RecentFlows {
    state: Mutex<Ring>,
    changed: Condvar,
    capacity_records: usize,
    capacity_bytes: usize,
}

#[derive(Debug, Default)]
struct Ring {
    records: VecDeque<RecentRecord>,
    bytes: usize,
    next_sequence: u64,
    dropped: u64,
    closed: bool,
}

impl RecentFlows {
    pub fn new(capacity_records: usize, capacity_bytes: usize) -> RecentFlows {
        RecentFlows {
            state: Mutex::new(Ring {
                next_sequence: 1,
                ..Ring::default()
            }),
            changed: Condvar::new(),
            capacity_records: capacity_records.max(1),
            capacity_bytes: capacity_bytes.max(1),
        }
    }

    /// Adds records (end time, line) and wakes followers.
    pub fn push(&self, records: impl IntoIterator<Item = (u64, String)>) {
        let mut ring = self.state.lock().expect("not poisoned");
        for (end_time, line) in records {
            let sequence = ring.next_sequence;
            ring.next_sequence += 1;
            ring.bytes += line.len();
            ring.records.push_back(RecentRecord {
                sequence,
                end_time,
                line,
            });
            while ring.records.len() > self.capacity_records || ring.bytes > self.capacity_bytes {
                let Some(oldest) = ring.records.pop_front() else {
                    break;
                };
                ring.bytes -= oldest.line.len();
                ring.dropped += 1;
            }
        }
        drop(ring);
        self.changed.notify_all();
    }

    /// Records that ended at or after `since` (Unix seconds) and came after sequence `after`.
    pub fn select(&self, since: u64, after: u64) -> Vec<RecentRecord> {
        let ring = self.state.lock().expect("not poisoned");
        ring.records
            .iter()
            .filter(|record| record.sequence > after && record.end_time >= since)
            .cloned()
            .collect()
    }

    /// Waits up to `timeout` for a record after sequence `after`; returns the records after it
    /// (empty on timeout or when closed).
    pub fn wait_after(&self, after: u64, timeout: Duration) -> Vec<RecentRecord> {
        let ring = self.state.lock().expect("not poisoned");
        let (ring, _) = self
            .changed
            .wait_timeout_while(ring, timeout, |ring| {
                !ring.closed && ring.next_sequence.saturating_sub(1) <= after
            })
            .expect("not poisoned");
        ring.records
            .iter()
            .filter(|record| record.sequence > after)
            .cloned()
            .collect()
    }

    /// The sequence of the newest record so far (0 before any).
    pub fn last_sequence(&self) -> u64 {
        self.state.lock().expect("not poisoned").next_sequence - 1
    }

    /// How many records were dropped to keep the bounds.
    pub fn dropped(&self) -> u64 {
        self.state.lock().expect("not poisoned").dropped
    }

    /// Wakes every follower for good (the agent is stopping).
    pub fn close(&self) {
        self.state.lock().expect("not poisoned").closed = true;
        self.changed.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().expect("not poisoned").closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> String {
        format!("{{\"x\":\"{text}\"}}")
    }

    #[test]
    fn selects_by_time_and_sequence() {
        let recent = RecentFlows::new(100, 1 << 20);
        recent.push([(10, line("a")), (20, line("b")), (30, line("c"))]);
        let since_20: Vec<u64> = recent
            .select(20, 0)
            .iter()
            .map(|record| record.sequence)
            .collect();
        assert_eq!(since_20, vec![2, 3]);
        let after_2: Vec<u64> = recent.select(0, 2).iter().map(|record| record.sequence).collect();
        assert_eq!(after_2, vec![3]);
        assert_eq!(recent.last_sequence(), 3);
    }

    #[test]
    fn keeps_within_record_and_byte_bounds() {
        let recent = RecentFlows::new(3, 1 << 20);
        recent.push((0..10).map(|index| (index, line(&index.to_string()))));
        let kept: Vec<u64> = recent.select(0, 0).iter().map(|record| record.sequence).collect();
        assert_eq!(kept, vec![8, 9, 10]);
        assert_eq!(recent.dropped(), 7);

        let by_bytes = RecentFlows::new(1000, 30);
        by_bytes.push((0..10).map(|index| (index, line("0123456789"))));
        let lines = by_bytes.select(0, 0);
        assert!(lines.iter().map(|record| record.line.len()).sum::<usize>() <= 30);
        assert_eq!(lines.last().unwrap().sequence, 10);
    }

    #[test]
    fn a_follower_wakes_for_new_records_and_on_close() {
        let recent = std::sync::Arc::new(RecentFlows::new(10, 1 << 20));
        let writer = recent.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.push([(1, line("late"))]);
        });
        let woken = recent.wait_after(0, Duration::from_secs(10));
        assert_eq!(woken.len(), 1);
        thread.join().unwrap();
        assert!(recent.wait_after(1, Duration::from_millis(20)).is_empty());
        recent.close();
        assert!(recent.wait_after(1, Duration::from_secs(10)).is_empty());
    }
}
