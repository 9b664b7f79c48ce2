//! Wake-ups for subscriptions waiting on new events.
//!
//! A waiting subscription is woken by a publish that could match it, not by
//! every publish: waiters are spread over 64 lanes by their filter's
//! category (the one-bit hash of [`Summary`](crate::store::Summary)), plus
//! one lane for filters whose category is a wildcard. A publish wakes the
//! lane of its subject's category and the wildcard lane, so with thousands
//! of subscriptions waiting on other categories a publish does not wake
//! (and lock the store for) every one of them. Two categories may share a
//! lane (1 in 64): their waiters then wake for each other's events and find
//! nothing, as every waiter did before lanes.
//!
//! Publishing must stay cheap when nobody waits, so the publisher only
//! touches a lane's [`Notify`] when a subscription has announced itself
//! there; the announcement (a counter) is made before the waiter looks at
//! the store one last time, which closes the race with a concurrent
//! publish:
//!
//! - waiter: register the `Notified`, increment its lane's `waiting`, then
//!   check the store (under its lock);
//! - publisher: append (under the store lock), then read the `waiting` of
//!   the lanes it wakes.
//!
//! If the waiter's check saw the store before the append, its increment
//! happened before the publisher's read (both are ordered by the store lock),
//! so the publisher notifies; otherwise the check saw the new event. A
//! waiter's lane follows its filter as it was when it registered; a filter
//! change wakes the consumer's waiters (its own `Notify`), which register
//! again under the new filter.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// The lane of filters whose category is a wildcard (or of a subject with
/// no category).
const ANY: usize = 64;

#[derive(Default)]
struct Lane {
    waiting: AtomicUsize,
    notify: Notify,
}

impl Lane {
    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

pub(crate) struct PublishSignal {
    lanes: [Lane; ANY + 1],
}

impl Default for PublishSignal {
    fn default() -> Self {
        Self {
            lanes: std::array::from_fn(|_| Lane::default()),
        }
    }
}

/// The lane of a category summary (one bit, or none for a wildcard).
fn lane_of(category: u64) -> usize {
    if category == 0 {
        ANY
    } else {
        category.trailing_zeros() as usize
    }
}

/// Keeps the waiter counted until dropped (also when the waiting future is
/// cancelled).
pub(crate) struct Waiting<'a> {
    lane: &'a Lane,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.lane.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PublishSignal {
    /// Called after an event whose subject has the `category` summary bit
    /// was appended (and the store unlocked): wakes the waiters it could
    /// match.
    pub(crate) fn published(&self, category: u64) {
        if category == 0 {
            self.lanes.iter().for_each(Lane::wake);
        } else {
            self.lanes[lane_of(category)].wake();
            self.lanes[ANY].wake();
        }
    }

    /// Registers interest in the next publish that could match a filter
    /// whose category summary is `required` (0: any): the returned future
    /// completes on such a publish after this call. Check the store after
    /// this call and before awaiting.
    pub(crate) fn register(&self, required: u64) -> (Notified<'_>, Waiting<'_>) {
        let lane = &self.lanes[lane_of(required)];
        let notified = lane.notify.notified();
        lane.waiting.fetch_add(1, Ordering::SeqCst);
        (notified, Waiting { lane })
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
        signal.published(1 << 3); // nobody waits: nothing to wake, nothing kept
        let (notified, guard) = signal.register(1 << 3);
        let mut notified = pin!(notified);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(notified.as_mut().poll(&mut cx).is_pending());
        signal.published(1 << 3);
        assert!(notified.as_mut().poll(&mut cx).is_ready());
        drop(guard);
        assert!(
            signal
                .lanes
                .iter()
                .all(|lane| lane.waiting.load(Ordering::SeqCst) == 0)
        );
    }

    #[test]
    fn a_publish_wakes_its_category_and_wildcard_filters_only() {
        let signal = PublishSignal::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (orders, _o) = signal.register(1 << 3);
        let (users, _u) = signal.register(1 << 9);
        let (any, _a) = signal.register(0);
        let (mut orders, mut users, mut any) = (pin!(orders), pin!(users), pin!(any));
        for waiter in [orders.as_mut(), users.as_mut(), any.as_mut()] {
            assert!(waiter.poll(&mut cx).is_pending());
        }
        signal.published(1 << 3);
        assert!(orders.as_mut().poll(&mut cx).is_ready());
        assert!(any.as_mut().poll(&mut cx).is_ready());
        assert!(
            users.as_mut().poll(&mut cx).is_pending(),
            "another category"
        );
        // a subject without a category wakes every lane
        signal.published(0);
        assert!(users.as_mut().poll(&mut cx).is_ready());
    }
}
