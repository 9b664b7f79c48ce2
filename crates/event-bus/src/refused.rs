//! The sequences of stored events the router refused, so that a repeat of
//! one of them (stored once by the provider's dedup) is handed to the
//! router again, and a repeat of any other event is not.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How many refused sequences are remembered: the oldest are forgotten
/// beyond this (a repeat of one of those is then not routed).
pub(crate) const MAX_REFUSED: usize = 65_536;

/// Refused sequences, oldest first. Touched only when the router refuses an
/// event or a publish is a duplicate: never on an ordinary publish.
#[derive(Debug, Default)]
pub(crate) struct Refused(Mutex<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Remembered sequence → the stamp of its entry in `order`.
    stamps: HashMap<u64, u64>,
    /// `(sequence, stamp)`, oldest first; an entry whose stamp no longer
    /// matches `stamps` was taken since, and is skipped when it comes out.
    order: VecDeque<(u64, u64)>,
    next_stamp: u64,
}

impl Refused {
    /// Remembers that the router refused the event at `sequence`.
    pub(crate) fn insert(&self, sequence: u64) {
        let mut inner = self.lock();
        let stamp = inner.next_stamp;
        inner.next_stamp += 1;
        inner.stamps.insert(sequence, stamp);
        inner.order.push_back((sequence, stamp));
        // at most MAX_REFUSED remembered, and `order` (stale entries
        // included) at most twice that
        while inner.stamps.len() > MAX_REFUSED || inner.order.len() > 2 * MAX_REFUSED {
            let Some((oldest, stamp)) = inner.order.pop_front() else {
                break;
            };
            if inner.stamps.get(&oldest) == Some(&stamp) {
                inner.stamps.remove(&oldest);
            }
        }
    }

    /// Takes the refusal of the event at `sequence` out, if remembered: the
    /// caller then hands a repeat of it to the router (and remembers it
    /// again if the router refuses again). Concurrent repeats: only one
    /// takes it.
    pub(crate) fn take(&self, sequence: u64) -> bool {
        self.lock().stamps.remove(&sequence).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // every method keeps the maps consistent before it could panic
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_newest_refusals_and_each_is_taken_once() {
        let refused = Refused::default();
        for seq in 1..=(MAX_REFUSED as u64 + 10) {
            refused.insert(seq);
        }
        assert!(!refused.take(10), "the oldest are forgotten");
        assert!(refused.take(11));
        assert!(!refused.take(11), "taken once");
        refused.insert(11);
        assert!(refused.take(11));
        // taken and inserted again many times: `order` stays bounded
        for _ in 0..(3 * MAX_REFUSED) {
            refused.insert(7);
            assert!(refused.take(7));
        }
        let inner = refused.lock();
        assert!(inner.order.len() <= 2 * MAX_REFUSED);
        assert!(inner.stamps.len() <= MAX_REFUSED);
    }
}
