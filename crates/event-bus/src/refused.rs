//! The sequences of stored events the router refused, so that a repeat of
//! one of them (stored once by the provider's dedup) is handed to the
//! router again, and a repeat of any other event is not.

use std::collections::{HashSet, VecDeque};
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
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Refused {
    /// Remembers that the router refused the event at `sequence`.
    pub(crate) fn insert(&self, sequence: u64) {
        let mut inner = self.lock();
        if inner.set.insert(sequence) {
            inner.order.push_back(sequence);
            if inner.order.len() > MAX_REFUSED
                && let Some(oldest) = inner.order.pop_front()
            {
                inner.set.remove(&oldest);
            }
        }
    }

    /// Whether the router refused the event at `sequence` (and has not
    /// taken a repeat of it since).
    pub(crate) fn contains(&self, sequence: u64) -> bool {
        self.lock().set.contains(&sequence)
    }

    /// The router took a repeat of the event at `sequence`.
    pub(crate) fn remove(&self, sequence: u64) {
        let mut inner = self.lock();
        if inner.set.remove(&sequence) {
            inner.order.retain(|s| *s != sequence);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // a panic while holding it leaves the set consistent (every method
        // keeps `set` and `order` in step before it can panic)
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_newest_refusals() {
        let refused = Refused::default();
        for seq in 1..=(MAX_REFUSED as u64 + 10) {
            refused.insert(seq);
        }
        assert!(!refused.contains(10), "the oldest are forgotten");
        assert!(refused.contains(11));
        assert!(refused.contains(MAX_REFUSED as u64 + 10));
        refused.remove(11);
        assert!(!refused.contains(11));
        refused.insert(11);
        assert!(refused.contains(11));
        let inner = refused.lock();
        assert_eq!(inner.set.len(), inner.order.len());
    }
}
