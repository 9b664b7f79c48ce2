//! The deadline of a bounded shutdown ([`Broker::shutdown_within`]).
//!
//! [`Broker::shutdown_within`]: super::Broker::shutdown_within

pub(super) use event_core::deadline_after as after;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// When queued routings must end: unset until
/// [`Broker::shutdown_within`](super::Broker::shutdown_within) sets it.
pub(super) struct Cutoff(watch::Sender<Option<Instant>>);

impl Default for Cutoff {
    fn default() -> Self {
        Self(watch::Sender::new(None))
    }
}

impl Cutoff {
    /// Sets the deadline to `at`, unless an earlier one is set.
    pub(super) fn set(&self, at: Instant) {
        self.0.send_if_modified(|current| match current {
            Some(earlier) if *earlier <= at => false,
            _ => {
                *current = Some(at);
                true
            }
        });
    }

    /// Completes once the deadline has passed; never while none is set.
    pub(super) async fn passed(&self) {
        let mut rx = self.0.subscribe();
        loop {
            let at = *rx.borrow_and_update();
            match at {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    // an earlier deadline; the sender (in the broker's
                    // core, which outlives this call) is never dropped
                    changed = rx.changed() => if changed.is_err() {
                        tokio::time::sleep_until(at).await;
                        return;
                    },
                },
                None => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Waits `wait` before a retry, unless it would end after the deadline
    /// (set now, or while it waits): then `false`, at once.
    pub(super) async fn wait_for_retry(&self, wait: Duration) -> bool {
        let until = after(Instant::now(), wait);
        let mut rx = self.0.subscribe();
        loop {
            if rx.borrow_and_update().is_some_and(|at| until > at) {
                return false;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                changed = rx.changed() => if changed.is_err() {
                    tokio::time::sleep_until(until).await;
                    return true;
                },
            }
        }
    }
}
