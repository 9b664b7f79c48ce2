//! When to call [`PendingEvent::in_progress`] on a delivery held for long
//! work, so that the provider does not redeliver it meanwhile.
//!
//! A delivery taken with manual acknowledgement is redelivered (to this or
//! another subscriber) once its ack wait passes without a settlement. Work
//! that may take longer than that wait (a slow handler, a routing with
//! retries, a dead-letter queue that is down) must restart the wait with
//! `in_progress`, about every half of it. [`KeepAliveClock`] says when. It
//! keeps no timers itself (event-core has no runtime): the caller sleeps
//! until [`next_check`](KeepAliveClock::next_check), asks
//! [`due`](KeepAliveClock::due), and after sending `in_progress` records it
//! with [`sent`](KeepAliveClock::sent). Times are passed in, so a runtime
//! with a paused or mocked clock (Tokio's `start_paused` tests) drives it
//! with its own `now`: take them from the clock the loop sleeps on (with
//! Tokio, `tokio::time::Instant::now().into_std()`; std's `Instant::now()`
//! under a paused Tokio clock makes the loop spin).
//!
//! ```
//! # async fn example(
//! #     pending: event_core::PendingEvent,
//! #     options: event_core::SubscribeOptions,
//! # ) -> event_core::Result<()> {
//! use event_core::KeepAliveClock;
//!
//! // the runtime's clock (paused in Tokio's `start_paused` tests), as std's
//! let now = || tokio::time::Instant::now().into_std();
//! let work = async { /* the long work on pending.event() */ };
//! let mut work = std::pin::pin!(work);
//! let mut clock = KeepAliveClock::start(&options, &pending, now());
//! loop {
//!     tokio::select! {
//!         () = &mut work => break,
//!         () = tokio::time::sleep_until(clock.next_check().into()) => {
//!             if clock.due(&options, &pending, now()) {
//!                 pending.in_progress().await?;
//!                 clock.sent(&options, &pending, now());
//!             }
//!         }
//!     }
//! }
//! pending.ack().await
//! # }
//! ```

use crate::deadline_after as after;
use crate::{PendingEvent, SubscribeOptions};
use std::time::{Duration, Instant};

/// When a held delivery's next [`PendingEvent::in_progress`] is due: half
/// the wait the provider applies to it ([`period_for`](Self::period_for))
/// after the last one. Where the provider reports the wait
/// ([`PendingEvent::ack_wait`]), it is read again every
/// [`LIVE_WAIT_CHECK`](Self::LIVE_WAIT_CHECK) meanwhile: a provider may
/// report it live, and another process may shorten it (a durable takes the
/// options of whichever subscription came last), so that the next call is
/// due sooner than planned. Between two calls the shorter of the wait at
/// the last call and the current one counts: a provider may keep the
/// deadline the last call set with the earlier wait (the memory provider
/// does) or apply the current wait to it (JetStream does).
///
/// See the [module docs](self) for the loop that drives it.
#[derive(Debug, Clone)]
pub struct KeepAliveClock {
    /// The last `in_progress` (or the start).
    last: Instant,
    /// The period due after `last`.
    every: Duration,
    /// When to look again ([`next_check`](Self::next_check)).
    check_at: Instant,
    /// The provider reports the wait (maybe live): read again meanwhile.
    reported: bool,
}

impl KeepAliveClock {
    /// How often a wait the provider reports is read again while nothing is
    /// due: 250 ms (a clock read and the provider's cheap view where
    /// nothing changed).
    pub const LIVE_WAIT_CHECK: Duration = Duration::from_millis(250);

    /// The longest period when neither the provider reports the wait nor
    /// the options state it (no `ack_wait`, no `backoff`): the provider then
    /// applies a default of its own, which may be shorter than the 30 s
    /// [`SubscribeOptions::redelivery_delay`] assumes. 1 s.
    pub const UNKNOWN_WAIT_PERIOD: Duration = Duration::from_secs(1);

    /// A clock for `pending`, taken (or last kept alive) at `now`, under
    /// the subscription's `options`.
    pub fn start(options: &SubscribeOptions, pending: &PendingEvent, now: Instant) -> Self {
        let mut clock = Self {
            last: now,
            every: Self::period_for(options, pending),
            check_at: now,
            reported: pending.ack_wait().is_some(),
        };
        clock.plan(now);
        clock
    }

    /// When to look again ([`due`](Self::due)): when the next
    /// `in_progress` is due, or sooner to read a reported wait again. Fixed
    /// until the next `due` or [`sent`](Self::sent), however often the
    /// caller's loop turns meanwhile.
    pub fn next_check(&self) -> Instant {
        self.check_at
    }

    /// When the last `in_progress` was recorded ([`sent`](Self::sent)), or
    /// the clock started.
    pub fn last_sent(&self) -> Instant {
        self.last
    }

    /// The period due after [`last_sent`](Self::last_sent), as of the last
    /// [`due`](Self::due) or [`sent`](Self::sent).
    pub fn period(&self) -> Duration {
        self.every
    }

    /// Whether the next `in_progress` is due at `now`, with the wait read
    /// again (one shortened below the time since the last call: at once).
    /// Plans the next check either way.
    pub fn due(
        &mut self,
        options: &SubscribeOptions,
        pending: &PendingEvent,
        now: Instant,
    ) -> bool {
        self.every = self.every.min(Self::period_for(options, pending));
        self.plan(now);
        now.saturating_duration_since(self.last) >= self.every
    }

    /// Records an `in_progress` sent at `now`.
    pub fn sent(&mut self, options: &SubscribeOptions, pending: &PendingEvent, now: Instant) {
        self.last = now;
        self.every = Self::period_for(options, pending);
        self.plan(now);
    }

    /// Half the wait the provider applies to `pending` before redelivering
    /// it (at least 1 ms). Providers that report it
    /// ([`PendingEvent::ack_wait`]; memory and NATS do) are taken at their
    /// word. Otherwise it is inferred from the options: with a `backoff`,
    /// providers (JetStream, memory) use the backoff entry of the delivery
    /// as its ack wait, otherwise `ack_wait`; that is
    /// [`SubscribeOptions::redelivery_delay`]. When the options set neither,
    /// the provider's default ack wait applies, which may be shorter than
    /// the 30 s `redelivery_delay` assumes, so the period is capped at
    /// [`UNKNOWN_WAIT_PERIOD`](Self::UNKNOWN_WAIT_PERIOD).
    pub fn period_for(options: &SubscribeOptions, pending: &PendingEvent) -> Duration {
        let half = |wait: Duration| (wait / 2).max(Duration::from_millis(1));
        if let Some(wait) = pending.ack_wait() {
            return half(wait);
        }
        let inferred = half(options.redelivery_delay(pending.received.num_delivered));
        if options.ack_wait.is_none() && options.backoff.is_empty() {
            inferred.min(Self::UNKNOWN_WAIT_PERIOD)
        } else {
            inferred
        }
    }

    fn plan(&mut self, now: Instant) {
        let due = after(self.last, self.every);
        self.check_at = if self.reported {
            due.min(after(now, Self::LIVE_WAIT_CHECK))
        } else {
            due
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Acker, LiveAckWait};
    use crate::{Event, ReceivedEvent, Result};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct NoopAcker;

    #[async_trait::async_trait]
    impl Acker for NoopAcker {
        async fn ack(&self) -> Result<()> {
            Ok(())
        }
        async fn nak(&self, _delay: Option<Duration>) -> Result<()> {
            Ok(())
        }
        async fn term(&self) -> Result<()> {
            Ok(())
        }
        async fn in_progress(&self) -> Result<()> {
            Ok(())
        }
    }

    fn received(num_delivered: u64) -> ReceivedEvent {
        ReceivedEvent {
            event: Arc::new(Event::new(
                "events.a.b",
                "a",
                "s",
                "src",
                serde_json::json!({}),
            )),
            sequence: 1,
            num_delivered,
            stream: "s".into(),
        }
    }

    fn pending(num_delivered: u64) -> PendingEvent {
        PendingEvent::new(received(num_delivered), None, Box::new(NoopAcker))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_period_is_half_the_stated_wait_and_capped_when_unknown() {
        let options = SubscribeOptions {
            ack_wait: Some(Duration::from_secs(10)),
            ..SubscribeOptions::default()
        };
        assert_eq!(
            KeepAliveClock::period_for(&options, &pending(1)),
            Duration::from_secs(5)
        );
        // backoff: the entry of the delivery is its wait
        let options = SubscribeOptions {
            backoff: vec![ms(100), ms(4_000)],
            ..SubscribeOptions::default()
        };
        assert_eq!(KeepAliveClock::period_for(&options, &pending(1)), ms(50));
        assert_eq!(KeepAliveClock::period_for(&options, &pending(2)), ms(2_000));
        // neither: the provider's default, unknown, so capped
        let unknown = SubscribeOptions::default();
        assert_eq!(
            KeepAliveClock::period_for(&unknown, &pending(1)),
            KeepAliveClock::UNKNOWN_WAIT_PERIOD
        );
        // a reported wait wins over the options, and is never below 1 ms
        let reported = pending(1).with_ack_wait(Duration::from_secs(3));
        assert_eq!(KeepAliveClock::period_for(&unknown, &reported), ms(1_500));
        let tiny = pending(1).with_ack_wait(Duration::from_micros(1));
        assert_eq!(KeepAliveClock::period_for(&unknown, &tiny), ms(1));
    }

    #[test]
    fn due_at_half_the_wait_then_again_after_each_call() {
        let options = SubscribeOptions {
            ack_wait: Some(ms(1_000)),
            ..SubscribeOptions::default()
        };
        let p = pending(1);
        let t0 = Instant::now();
        let mut clock = KeepAliveClock::start(&options, &p, t0);
        assert_eq!(clock.next_check(), t0 + ms(500));
        assert!(!clock.due(&options, &p, t0 + ms(499)));
        assert!(clock.due(&options, &p, t0 + ms(500)));
        clock.sent(&options, &p, t0 + ms(510));
        assert_eq!(clock.last_sent(), t0 + ms(510));
        assert_eq!(clock.next_check(), t0 + ms(1_010));
        assert!(!clock.due(&options, &p, t0 + ms(1_000)));
        assert!(clock.due(&options, &p, t0 + ms(1_010)));
    }

    #[test]
    fn a_reported_wait_is_read_again_and_a_shortened_one_counts_at_once() {
        let wait = Arc::new(AtomicU64::new(10_000));
        let view = wait.clone();
        let p = pending(1).with_live_ack_wait(LiveAckWait::new(move || {
            Duration::from_millis(view.load(Ordering::Relaxed))
        }));
        let options = SubscribeOptions::default();
        let t0 = Instant::now();
        let mut clock = KeepAliveClock::start(&options, &p, t0);
        assert_eq!(clock.period(), ms(5_000));
        // checked again well before the 5 s period
        assert_eq!(clock.next_check(), t0 + KeepAliveClock::LIVE_WAIT_CHECK);
        assert!(!clock.due(&options, &p, t0 + ms(250)));
        // another process shortens the wait to 400 ms: half of it has
        // passed since the start, so it is due now
        wait.store(400, Ordering::Relaxed);
        assert!(clock.due(&options, &p, t0 + ms(500)));
        assert_eq!(clock.period(), ms(200));
        // lengthened again: the shorter period stands until the next call
        wait.store(10_000, Ordering::Relaxed);
        assert!(clock.due(&options, &p, t0 + ms(500)));
        clock.sent(&options, &p, t0 + ms(500));
        assert_eq!(clock.period(), ms(5_000));
    }

    #[test]
    fn an_enormous_wait_does_not_overflow() {
        let options = SubscribeOptions {
            ack_wait: Some(Duration::MAX),
            ..SubscribeOptions::default()
        };
        let p = pending(1);
        let t0 = Instant::now();
        let mut clock = KeepAliveClock::start(&options, &p, t0);
        assert!(clock.next_check() > t0 + Duration::from_secs(86_400 * 365));
        assert!(!clock.due(&options, &p, t0 + Duration::from_secs(3_600)));
    }
}
