//! The consumer runner: runs a [`Handler`] over subscriptions with bounded
//! concurrency, acknowledgement, backoff, dead-lettering and graceful
//! shutdown (as Watermill's Router does for Go).
//!
//! Start one with [`EventBus::consume`](crate::EventBus::consume) (a managed
//! subscriber: its subjects, durable consumers and options) or
//! [`EventBus::consume_subscription`](crate::EventBus::consume_subscription).
//!
//! For every delivery:
//!
//! - the handler gets the decrypted [`ReceivedEvent`]; nothing is
//!   acknowledged before it finishes;
//! - `Ok` → `ack`;
//! - `Err`, a panic (caught) or a timeout ([`ConsumerConfig::handler_timeout`])
//!   → `nak` with the subscription's backoff
//!   ([`SubscribeOptions::redelivery_delay`]) of the delivery number
//!   (without `backoff` that is `ack_wait`, or the provider's reported
//!   default, else 30 s: set `backoff` for quicker retries);
//! - on the last allowed delivery (`max_deliver` of the subscription
//!   options) a failure goes to the bus's DLQ handler with the original
//!   subject, the delivery attempts, the time of the first failure this
//!   runner saw and the reason, and the event is terminated only after the
//!   DLQ accepted it. A DLQ that is down (a transient error: timeout, lost
//!   connection) is offered the dead letter again, backing off to every
//!   5 s, for as long as the runner runs (the event's deliveries are
//!   exhausted, so giving up would lose it). Its handler slot is given back
//!   after the first refusal, so other events go on being handled during
//!   a DLQ outage, until the subscription's `max_ack_pending` deliveries
//!   are all dead letters waiting (the provider hands out no more: set it
//!   to bound what an outage holds). If the DLQ refuses it for good
//!   (any other error, or a panic) [`ConsumerConfig::dlq_attempts`] times,
//!   the event is left unsettled (logged, counted in
//!   [`ConsumerReport::dlq_failed`] and the bus's `dlq_unsettled` metric),
//!   so the provider delivers it once more (the spare delivery, see the
//!   `EventProvider` contract) unless this was already the spare; without a
//!   DLQ handler it is logged and terminated (counted in
//!   [`ConsumerReport::terminated`] and `dlq_dropped`);
//! - while a handler runs, the runner extends the ack wait (`in_progress`)
//!   every half of the wait the provider applies to the delivery, so slow
//!   handlers are not redelivered concurrently (the handler runs on while
//!   an `in_progress` is sent: one that never returns delays the next one,
//!   not the handler). While a fetched delivery
//!   waits for a free handler slot, the runner extends its ack wait the
//!   same way (and once more as its handler starts, if it waited), and
//!   keeps what the subscription fetched ahead alive
//!   ([`Subscription::keep_alive`](event_core::Subscription::keep_alive)),
//!   so the events behind it are not redelivered while they wait either
//!   (neither keep-alive holds up the wait: one that never returns delays
//!   the next of its kind, not the start of the delivery nor a shutdown). Providers that report it
//!   ([`PendingEvent::ack_wait`](event_core::PendingEvent::ack_wait); the
//!   memory and NATS providers do) are taken at their word, and read again
//!   several times a second: a wait the provider reports live
//!   ([`LiveAckWait`](event_core::LiveAckWait)) and another process shortened
//!   (a shared durable takes the options of whichever process subscribed
//!   last) is followed, with an `in_progress` at once when the time since
//!   the last one is already past half the new wait; otherwise it is
//!   `ack_wait` or the backoff entry of the options, and when the options
//!   set neither (the provider's unreported default applies) the runner
//!   extends every second (covering provider defaults of 2 s and more).
//! - a handler run (or a DLQ handler's call) that may go on without a time
//!   limit (a [`ConsumerConfig::handler_timeout`] or
//!   [`dlq_timeout`](ConsumerConfig::dlq_timeout) of `None`, or above
//!   60 s) and has run [`STALL_THRESHOLD`] is logged at `WARN` (the
//!   subscriber, event id, subject, sequence, delivery count and how long
//!   it has run), again at each doubling of that time, and once when it
//!   ends (after how long, with what outcome); it counts once in the bus's
//!   `handler_stalls` metric. It is not cancelled. Runs under a limit at
//!   or below the threshold are not watched (no timer, no clock read).
//!
//! Undecryptable and undecodable deliveries are dead-lettered by the bus
//! subscription itself (see [`BusSubscription`](crate::BusSubscription));
//! the handler never sees them, and the runner's [`ConsumerReport`] counts
//! their outcome as it counts its own dead letters (`dead_lettered`,
//! `terminated`, `dlq_failed`). An undecryptable delivery is offered to the
//! DLQ once per delivery; one the DLQ refuses for good after
//! [`ConsumerConfig::dlq_attempts`] deliveries is terminated (`terminated`).
//!
//! The first-failure time a dead letter carries is remembered per event
//! from its first failure in this runner until it is settled here. An
//! event may fail here and then be settled elsewhere (another instance
//! sharing the durable handles or dead-letters it), which the runner never
//! learns; so it remembers at most `max_ack_pending` events per
//! subscription (from the subscription options: 1,000, the providers'
//! default, when they leave it open; at most 100,000 in all), since no
//! provider holds more unsettled events per consumer, and forgets the least
//! recently failed first. Set `max_ack_pending` in the options when the
//! provider's is higher, or a dead letter may give a later first failure
//! than the real one.
//!
//! Tracing: each subscription's loop runs in an `INFO` span
//! `a3s_event.consumer` (`subscriber`, `subject`; no fields for
//! [`consume_subscription`](crate::EventBus::consume_subscription)), each
//! delivery in a `DEBUG` span `a3s_event.consume` (`event_id`, `sequence`,
//! `attempt`) inside it. Warnings and errors about one delivery name its
//! event id, subject and sequence themselves, so they read the same with
//! the `DEBUG` span filtered out.
//!
//! [`ConsumerHandle::shutdown`] stops fetching, waits for in-flight handlers
//! up to a deadline and aborts the rest; an aborted delivery is unsettled,
//! so the provider redelivers it after its ack wait (a final delivery under
//! `max_deliver` comes once more, as its spare delivery, to whichever
//! instance is running then; an aborted spare delivery does not). A
//! delivery fetched but not started when shutdown is requested is naked,
//! so it comes back at once ([`ConsumerReport::released`]); if it is the
//! event's final delivery (where a nak ends the event) it is run within the
//! deadline instead. Then the subscriptions are closed; `shutdown` returns
//! within its deadline plus [`SHUTDOWN_CLOSE_GRACE`] (500 ms) even when the
//! provider is down and its `close` would wait a request timeout: a close
//! still running then finishes in the background
//! ([`ConsumerReport::unclosed`]).

pub(crate) mod guard;
mod runner;
pub(crate) mod stall;

pub use runner::{ConsumerHandle, ConsumerReport, SHUTDOWN_CLOSE_GRACE};
pub use stall::STALL_THRESHOLD;

use async_trait::async_trait;
use event_core::{BoxError, ReceivedEvent};
use std::future::Future;
use std::time::Duration;

#[cfg(doc)]
use event_core::SubscribeOptions;

/// Processes one event for a consumer runner.
///
/// Return `Ok(())` when done (the event is acknowledged) or an error to have
/// it redelivered (and dead-lettered once exhausted). Panics are caught and
/// treated as errors. Closures `Fn(ReceivedEvent) -> impl Future<Output =
/// Result<(), E>>` implement it.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles `event`.
    async fn handle(&self, event: ReceivedEvent) -> Result<(), BoxError>;
}

#[async_trait]
impl<F, Fut, E> Handler for F
where
    F: Fn(ReceivedEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    async fn handle(&self, event: ReceivedEvent) -> Result<(), BoxError> {
        (self)(event).await.map_err(Into::into)
    }
}

/// How a consumer runner behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Handlers running at once, across the consumer's subscriptions.
    /// Default 16.
    ///
    /// Above 1, handlers finish out of delivery order (and a retried event
    /// comes back after later ones in any case): where order matters, use
    /// 1 on a durable with one subscription.
    pub concurrency: usize,
    /// A handler running longer is cancelled and counted as failed. Default
    /// 30 s.
    ///
    /// `None`: no limit. A handler that never returns then holds its event
    /// (kept alive with `in_progress`, so the provider never redelivers it)
    /// and its concurrency slot for as long as the runner runs; it is not
    /// cancelled, but once it has run [`STALL_THRESHOLD`] (60 s) the runner
    /// logs a `WARN` naming the event, again at each doubling (120 s,
    /// 240 s, ...), and once when it ends, and counts it in the
    /// `handler_stalls` metric. A limit above the threshold is watched the
    /// same way until it cancels the handler; one at or below it never is.
    pub handler_timeout: Option<Duration>,
    /// Shutdown deadline used when the [`ConsumerHandle`] is dropped without
    /// [`shutdown`](ConsumerHandle::shutdown), or when all subscriptions
    /// close. Default 30 s.
    pub shutdown_timeout: Duration,
    /// Attempts at handing an exhausted event to a DLQ handler that refuses
    /// it for good (an error that is not
    /// [transient](event_core::Error::is_transient), or a panic) before the
    /// event is left unsettled. Default 5 (with 100 ms, 200 ms, ... between).
    /// Transient refusals (the DLQ's backend down) are retried until the DLQ
    /// accepts or the runner shuts down, whatever this says.
    ///
    /// For an undecryptable delivery, which the runner's bus subscription
    /// dead-letters itself (one offer per delivery, 5 s apart), it is the
    /// number of deliveries after which a refusal for good terminates the
    /// event (counted in [`ConsumerReport::terminated`]) instead of handing
    /// it back: without `max_deliver` it would otherwise come back without
    /// end. See [`BusSubscription`](crate::BusSubscription).
    pub dlq_attempts: u32,
    /// A call of the DLQ handler running longer is abandoned and counted as
    /// a transient refusal ([`Error::Timeout`](event_core::Error::Timeout)),
    /// so it is offered again: the event is held (its delivery kept alive)
    /// meanwhile, so a handler that hangs would otherwise hold it and a
    /// concurrency permit until shutdown (the first offer holds the event's
    /// handler slot; later ones do not). The same limit applies to the
    /// dead letter of an undecryptable delivery, which the runner's bus
    /// subscription hands over before the runner sees it (a hang there
    /// would hold the subscription's fetch; the event is handed back and
    /// offered again); a subscription the bus had already wrapped, given to
    /// [`consume_subscription`](crate::EventBus::consume_subscription),
    /// keeps the 30 s default. Not to the dead letter of an undecodable
    /// message, which the provider already terminated: it is the message's
    /// only copy, so the subscription waits for the DLQ. `None`: no limit.
    /// Default 30 s.
    ///
    /// A call without a limit (or with one above [`STALL_THRESHOLD`]) that
    /// has run 60 s is reported as the handler's is (see
    /// [`handler_timeout`](Self::handler_timeout)): a `WARN` then, at each
    /// doubling and when it ends, and once in the `handler_stalls` metric;
    /// the dead letter of an undecodable message too.
    pub dlq_timeout: Option<Duration>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            handler_timeout: Some(Duration::from_secs(30)),
            shutdown_timeout: Duration::from_secs(30),
            dlq_attempts: 5,
            dlq_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl ConsumerConfig {
    /// Sets [`concurrency`](Self::concurrency).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Sets [`handler_timeout`](Self::handler_timeout).
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Sets [`shutdown_timeout`](Self::shutdown_timeout).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets [`dlq_timeout`](Self::dlq_timeout).
    #[must_use]
    pub fn dlq_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.dlq_timeout = timeout;
        self
    }

    pub(crate) fn validate(&self) -> event_core::Result<()> {
        if self.concurrency == 0 {
            return Err(event_core::Error::invalid_config(
                "concurrency",
                "must be at least 1",
            ));
        }
        if self.handler_timeout.is_some_and(|t| t.is_zero()) {
            return Err(event_core::Error::invalid_config(
                "handler_timeout",
                "must be greater than zero (use None for no limit)",
            ));
        }
        if self.dlq_attempts == 0 {
            return Err(event_core::Error::invalid_config(
                "dlq_attempts",
                "must be at least 1",
            ));
        }
        if self.dlq_timeout.is_some_and(|t| t.is_zero()) {
            return Err(event_core::Error::invalid_config(
                "dlq_timeout",
                "must be greater than zero (use None for no limit)",
            ));
        }
        Ok(())
    }
}
