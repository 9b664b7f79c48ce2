//! The event log: a bounded ring with O(1) append and eviction, and the
//! dedup window.

use event_core::{Error, Event, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Entry {
    pub(crate) event: Arc<Event>,
    pub(crate) size: usize,
    /// Store time, Unix ms, never decreasing along the log.
    pub(crate) stored_at: u64,
}

pub(crate) struct Store {
    log: VecDeque<Entry>,
    /// Sequence of `log[0]`; `last_seq + 1` when the log is empty.
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
    max_events: usize,
    dedup: HashMap<Arc<str>, u64>,
    dedup_order: VecDeque<(Instant, Arc<str>)>,
    duplicate_window: Duration,
    max_dedup_entries: usize,
}

pub(crate) enum Appended {
    New(u64),
    Duplicate(u64),
}

impl Store {
    pub(crate) fn new(
        max_events: usize,
        duplicate_window: Duration,
        max_dedup_entries: usize,
    ) -> Self {
        Self {
            log: VecDeque::with_capacity(max_events.min(1 << 16)),
            first_seq: 1,
            last_seq: 0,
            bytes: 0,
            max_events,
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            duplicate_window,
            max_dedup_entries,
        }
    }

    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub(crate) fn len(&self) -> usize {
        self.log.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry with sequence `seq`, if still stored.
    pub(crate) fn get(&self, seq: u64) -> Option<&Entry> {
        let idx = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.log.get(idx)
    }

    /// Entries newest first.
    pub(crate) fn iter_rev(&self) -> impl Iterator<Item = (u64, &Entry)> {
        let last = self.last_seq;
        self.log
            .iter()
            .rev()
            .enumerate()
            .map(move |(i, e)| (last - i as u64, e))
    }

    /// First sequence stored at or after `ms`.
    pub(crate) fn seq_at_time(&self, ms: u64) -> u64 {
        self.first_seq + self.log.partition_point(|e| e.stored_at < ms) as u64
    }

    fn expire_dedup(&mut self, now: Instant) {
        while let Some((at, _)) = self.dedup_order.front() {
            let expired = now.duration_since(*at) >= self.duplicate_window;
            if !expired && self.dedup_order.len() <= self.max_dedup_entries {
                break;
            }
            if let Some((_, key)) = self.dedup_order.pop_front() {
                self.dedup.remove(&key);
            }
        }
    }

    pub(crate) fn append(
        &mut self,
        dedup_id: &str,
        expected: Option<u64>,
        event: Arc<Event>,
        size: usize,
        now_ms: u64,
    ) -> Result<Appended> {
        let now = Instant::now();
        self.expire_dedup(now);
        if let Some(&seq) = self.dedup.get(dedup_id) {
            return Ok(Appended::Duplicate(seq));
        }
        if let Some(expected) = expected {
            if expected != self.last_seq {
                return Err(Error::WrongLastSequence {
                    expected,
                    actual: self.last_seq,
                });
            }
        }
        let stored_at = self.log.back().map_or(now_ms, |e| e.stored_at.max(now_ms));
        self.last_seq += 1;
        let seq = self.last_seq;
        if self.log.len() == self.max_events {
            if let Some(old) = self.log.pop_front() {
                self.bytes -= old.size as u64;
                self.first_seq += 1;
            }
        }
        self.bytes += size as u64;
        self.log.push_back(Entry {
            event,
            size,
            stored_at,
        });
        let key: Arc<str> = Arc::from(dedup_id);
        self.dedup.insert(key.clone(), seq);
        self.dedup_order.push_back((now, key));
        if self.dedup_order.len() > self.max_dedup_entries {
            self.expire_dedup(now);
        }
        Ok(Appended::New(seq))
    }

    #[cfg(test)]
    pub(crate) fn dedup_len(&self) -> usize {
        self.dedup.len()
    }
}

/// Size of `event` encoded as JSON, without allocating the encoding.
pub(crate) fn encoded_len(event: &Event) -> Result<usize> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, event)?;
    Ok(counter.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Arc<Event> {
        Arc::new(Event::new(
            "events.a.b",
            "a",
            "s",
            "x",
            serde_json::json!({ "n": n }),
        ))
    }

    #[test]
    fn ring_evicts_oldest_in_constant_time() {
        let mut store = Store::new(3, Duration::from_secs(60), 100);
        for n in 0..5 {
            let e = ev(n);
            let id = e.id.clone();
            store.append(&id, None, e, 10, n).unwrap();
        }
        assert_eq!(store.len(), 3);
        assert_eq!((store.first_seq(), store.last_seq()), (3, 5));
        assert_eq!(store.bytes(), 30);
        assert!(store.get(2).is_none());
        assert_eq!(store.get(3).unwrap().event.payload["n"], 2);
        let seqs: Vec<u64> = store.iter_rev().map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![5, 4, 3]);
    }

    #[test]
    fn dedup_is_bounded_in_entries_and_time() {
        let mut store = Store::new(100, Duration::from_millis(30), 4);
        for n in 0..10 {
            store.append(&format!("id{n}"), None, ev(n), 1, 0).unwrap();
        }
        assert_eq!(store.dedup_len(), 4, "entry bound");
        assert!(matches!(
            store.append("id9", None, ev(9), 1, 0).unwrap(),
            Appended::Duplicate(10)
        ));
        assert!(
            matches!(
                store.append("id0", None, ev(0), 1, 0).unwrap(),
                Appended::New(11)
            ),
            "forgotten"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            matches!(
                store.append("id9", None, ev(9), 1, 0).unwrap(),
                Appended::New(12)
            ),
            "time bound"
        );
    }

    #[test]
    fn store_time_never_decreases() {
        let mut store = Store::new(10, Duration::from_secs(60), 100);
        store.append("a", None, ev(0), 1, 100).unwrap();
        store.append("b", None, ev(1), 1, 50).unwrap();
        store.append("c", None, ev(2), 1, 200).unwrap();
        assert_eq!(store.seq_at_time(100), 1);
        assert_eq!(store.seq_at_time(101), 3);
        assert_eq!(store.seq_at_time(201), 4);
    }

    #[test]
    fn encoded_len_matches_serialization() {
        let e = Event::new("events.a.b", "a", "s", "x", serde_json::json!({"k": "ü"}));
        assert_eq!(
            encoded_len(&e).unwrap(),
            serde_json::to_vec(&e).unwrap().len()
        );
    }
}
