//! What the bus remembers so that a repeat of a stored event (stored once
//! by the provider's dedup) is handed to the router again when the first
//! copy never reached it, and a repeat of any other event is not:
//!
//! - the sequences of stored events the router refused;
//! - the dedup ids of events whose publish call ended between the provider
//!   and the router: dropped (a caller's timeout, a cancelled task) or
//!   failed with an error of unknown outcome, the event perhaps stored.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many keys each set remembers: the oldest are forgotten beyond this
/// (a repeat of one of those is then not routed).
pub(crate) const MAX_REMEMBERED: usize = 65_536;

/// A bounded set of keys, oldest forgotten first. Filled only on the rare
/// paths (a refusal, an abandoned call); while it is empty a lookup is an
/// atomic load, and once it holds keys (they leave when their event is
/// repeated, or are forgotten beyond [`MAX_REMEMBERED`]) a routed publish
/// takes its lock and hashes its id.
#[derive(Debug)]
pub(crate) struct Recent<K> {
    inner: Mutex<Inner<K>>,
    /// `inner.stamps.len()`, readable without the lock.
    len: AtomicUsize,
}

#[derive(Debug)]
struct Inner<K> {
    /// Remembered key → the stamp of its entry in `order`.
    stamps: HashMap<K, u64>,
    /// `(key, stamp)`, oldest first; an entry whose stamp no longer
    /// matches `stamps` was taken since, and is skipped when it comes out.
    order: VecDeque<(K, u64)>,
    next_stamp: u64,
}

impl<K> Default for Recent<K> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                stamps: HashMap::new(),
                order: VecDeque::new(),
                next_stamp: 0,
            }),
            len: AtomicUsize::new(0),
        }
    }
}

impl<K: Hash + Eq + Clone> Recent<K> {
    /// Remembers `key`.
    pub(crate) fn insert(&self, key: K) {
        let mut inner = self.lock();
        let stamp = inner.next_stamp;
        inner.next_stamp += 1;
        inner.stamps.insert(key.clone(), stamp);
        inner.order.push_back((key, stamp));
        // at most MAX_REMEMBERED remembered, and `order` (stale entries
        // included) at most twice that
        while inner.stamps.len() > MAX_REMEMBERED || inner.order.len() > 2 * MAX_REMEMBERED {
            let Some((oldest, stamp)) = inner.order.pop_front() else {
                break;
            };
            if inner.stamps.get(&oldest) == Some(&stamp) {
                inner.stamps.remove(&oldest);
            }
        }
        self.len.store(inner.stamps.len(), Ordering::Relaxed);
    }

    /// Takes `key` out, if remembered: the caller then hands a repeat of
    /// its event to the router (and remembers it again if the router
    /// refuses again). Concurrent repeats: only one takes it.
    pub(crate) fn take<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.is_empty() {
            return false;
        }
        let mut inner = self.lock();
        let taken = inner.stamps.remove(key).is_some();
        self.len.store(inner.stamps.len(), Ordering::Relaxed);
        taken
    }

    /// Whether nothing is remembered (no lock taken).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        // every method keeps the maps consistent before it could panic
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Remembers its event's dedup id in [`Recent`] when dropped still armed:
/// held by a publish call from just before the provider call until the
/// router has the event, so that a call dropped or failed in between
/// leaves the id for a repeat to find.
pub(crate) struct UnroutedGuard<'a> {
    unrouted: &'a Recent<String>,
    key: &'a str,
    armed: bool,
}

impl<'a> UnroutedGuard<'a> {
    /// Armed: dropped as is, it remembers `key`.
    pub(crate) fn new(unrouted: &'a Recent<String>, key: &'a str) -> Self {
        Self {
            unrouted,
            key,
            armed: true,
        }
    }

    /// The router has had the event (or it is not to be routed): nothing
    /// to remember.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }

    /// Whether it would remember its key if dropped now.
    pub(crate) fn is_armed(&self) -> bool {
        self.armed
    }
}

impl Drop for UnroutedGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.unrouted.insert(self.key.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_newest_keys_and_each_is_taken_once() {
        let refused = Recent::<u64>::default();
        assert!(refused.is_empty());
        for seq in 1..=(MAX_REMEMBERED as u64 + 10) {
            refused.insert(seq);
        }
        assert!(!refused.take(&10), "the oldest are forgotten");
        assert!(refused.take(&11));
        assert!(!refused.take(&11), "taken once");
        refused.insert(11);
        assert!(refused.take(&11));
        // taken and inserted again many times: `order` stays bounded
        for _ in 0..(3 * MAX_REMEMBERED) {
            refused.insert(7);
            assert!(refused.take(&7));
        }
        let inner = refused.lock();
        assert!(inner.order.len() <= 2 * MAX_REMEMBERED);
        assert!(inner.stamps.len() <= MAX_REMEMBERED);
        assert_eq!(refused.len.load(Ordering::Relaxed), inner.stamps.len());
    }

    #[test]
    fn an_armed_guard_remembers_its_key_and_a_disarmed_one_does_not() {
        let unrouted = Recent::<String>::default();
        drop(UnroutedGuard::new(&unrouted, "evt-1"));
        let mut done = UnroutedGuard::new(&unrouted, "evt-2");
        done.disarm();
        drop(done);
        assert!(!unrouted.take("evt-2"));
        assert!(unrouted.take("evt-1"));
        assert!(unrouted.is_empty());
    }
}
