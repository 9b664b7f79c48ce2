//! Wake-ups for subscriptions waiting on new events.
//!
//! Publishing must stay cheap when nobody waits, so the publisher only
//! touches the [`Notify`] when a subscription has announced itself; the
//! announcement (a counter) is made before the waiter looks at the store one
//! last time, which closes the race with a concurrent publish:
//!
//! - waiter: register the `Notified`, increment `waiting`, then check the
//!   store (under its lock);
//! - publisher: append (under the store lock), then read `waiting`.
//!
//! If the waiter's check saw the store before the append, its increment
//! happened before the publisher's read (both are ordered by the store lock),
//! so the publisher notifies; otherwise the check saw the new event.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

#[derive(Default)]
pub(crate) struct PublishSignal {
    waiting: AtomicUsize,
    notify: Notify,
}

/// Keeps the waiter counted until dropped (also when the waiting future is
/// cancelled).
pub(crate) struct Waiting<'a> {
    signal: &'a PublishSignal,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.signal.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PublishSignal {
    /// Called after an event was appended (and the store unlocked).
    pub(crate) fn published(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Registers interest in the next publish: the returned future completes
    /// on any publish after this call. Check the store after this call and
    /// before awaiting.
    pub(crate) fn register(&self) -> (Notified<'_>, Waiting<'_>) {
        let notified = self.notify.notified();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        (notified, Waiting { signal: self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::Context;

    #[test]
    fn a_registered_waiter_is_woken_by_the_next_publish_only() {
        let signal = PublishSignal::default();
        signal.published(); // nobody waits: nothing to wake, nothing kept
        let (notified, guard) = signal.register();
        let mut notified = pin!(notified);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(notified.as_mut().poll(&mut cx).is_pending());
        signal.published();
        assert!(notified.as_mut().poll(&mut cx).is_ready());
        drop(guard);
        assert_eq!(signal.waiting.load(Ordering::SeqCst), 0);
    }
}
