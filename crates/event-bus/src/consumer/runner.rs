//! The runner loop and per-delivery processing.

use super::guard::{CatchUnwind, offer_dead_letter, panic_message};
use super::stall::{About, StallWatch, Work};
use super::{ConsumerConfig, Handler};
use crate::EventBus;
use crate::bus::Inner;
use crate::subscription::{BusSubscription, DlqLimits, OwnDeadLetterCounts, OwnDeadLetters};
use event_core::deadline_after as after;
use event_core::{
    DeadLetterEvent, Error, Event, KeepAliveClock, PendingEvent, Result, SubscribeOptions,
    Subscription, now_millis,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

/// First-failure times remembered at most per runner, whatever the
/// options say (see [`Failures`]).
const MAX_TRACKED_FAILURES: usize = 100_000;

/// `max_ack_pending` assumed when the options leave it to the provider
/// (the memory and NATS providers' default).
const DEFAULT_MAX_ACK_PENDING: u64 = 1_000;

/// How long past its deadline [`ConsumerHandle::shutdown`] may take: the
/// time it gives the subscriptions' `close` when in-flight work used the
/// whole deadline. 500 ms.
pub const SHUTDOWN_CLOSE_GRACE: Duration = Duration::from_millis(500);

/// What a consumer runner did, returned by [`ConsumerHandle::shutdown`].
///
/// The dead-letter fields (`dead_lettered`, `terminated`, `dlq_failed`)
/// count the events the runner exhausted and also the undecryptable and
/// undecodable deliveries its subscriptions dead-lettered themselves (see
/// [`BusSubscription`]), which never reach the handler: each outcome once.
/// Such a hand-off that shutdown interrupts runs to completion in the
/// background and may end after the report is made: it is then missing
/// from it (the metrics count it).
///
/// The bus's [`EventMetrics`](crate::EventMetrics) count the same outcomes
/// across all its runners (for Prometheus), each once: `terminated` in
/// `dlq_dropped`, `dlq_failed` in `dlq_unsettled`, `aborted` in
/// `consumer_aborted`, `settle_errors` in `settle_errors`, `retried` in
/// `redeliveries`, `dead_lettered` in `dlq_total` (which also counts the
/// dead letters of bus subscriptions no runner reads). `acked` has no
/// counter of its own: `handled_total` counts the handler's `Ok` before
/// the ack, so it is `acked` plus the acks among `settle_errors`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerReport {
    /// Deliveries handled successfully and acknowledged: the ack was sent
    /// without an error. Where the provider's ack is not confirmed (NATS
    /// sends it without waiting for a reply, and the client queues it while
    /// the connection is down), an ack lost with the connection still
    /// counts here, and the provider redelivers its event after the ack
    /// wait: handlers must be idempotent.
    pub acked: u64,
    /// Failed deliveries naked for redelivery.
    pub retried: u64,
    /// Dead letters the DLQ handler accepted (the event then terminated):
    /// exhausted deliveries, and undecryptable or undecodable deliveries
    /// the runner's subscriptions dead-lettered themselves. Counted per
    /// hand-over: an event whose termination after its dead letter was lost
    /// (the connection dropped) is delivered and dead-lettered again, and
    /// counts twice, so a DLQ should deduplicate on the event id.
    pub dead_lettered: u64,
    /// Deliveries terminated without reaching a DLQ: exhausted or
    /// undecryptable ones without a DLQ handler, undecryptable ones whose
    /// dead letter the DLQ handler refused for good once they had been
    /// delivered [`ConsumerConfig::dlq_attempts`] times (see
    /// [`BusSubscription`]), undecodable messages (the provider
    /// already terminated them) no DLQ handler took, and unreadable dead
    /// letters (refused as plaintext or undecryptable: a subscriber covering
    /// the DLQ subjects), which are never dead-lettered again (see
    /// [`PlaintextPolicy::Refuse`](crate::PlaintextPolicy::Refuse)).
    pub terminated: u64,
    /// Final deliveries left unsettled because the DLQ handler refused
    /// them: exhausted ones it refused for good (see
    /// [`ConsumerConfig::dlq_attempts`]), and undecryptable ones it refused
    /// once. Each comes once more (its spare delivery) unless it was the
    /// spare, and counts again if refused again.
    pub dlq_failed: u64,
    /// In-flight deliveries aborted at the shutdown deadline (unsettled, so
    /// redelivered by the provider after their ack wait; a final delivery
    /// once more, as its spare, a spare delivery not at all). Deliveries
    /// dropped because the runtime running the consumer was shut down
    /// first are not counted here (they end unsettled all the same; a
    /// `WARN` says so when the handle is shut down or joined).
    pub aborted: u64,
    /// Deliveries fetched but not yet started when shutdown was requested,
    /// handed back unprocessed (naked for immediate redelivery). A nak is a
    /// delivery to the provider: the next one counts as a redelivery
    /// (`num_delivered` 2) and uses one of the event's `max_deliver`
    /// attempts, although no handler ran. A nak that fails, or has not
    /// returned by the shutdown deadline, is also a settle error: that
    /// delivery comes back after its ack wait.
    pub released: u64,
    /// Acknowledgement calls (ack, nak, term) that failed.
    pub settle_errors: u64,
    /// Subscriptions whose loop had not ended when
    /// [`ConsumerHandle::shutdown`] returned (the deadline plus
    /// [`SHUTDOWN_CLOSE_GRACE`] had passed), almost always because the
    /// provider's `close` was still running (a NATS close waits up to its
    /// request timeout for a server that is down). Each is left to finish
    /// in the background; see [`ConsumerHandle::shutdown`]. Always 0 in
    /// [`ConsumerHandle::report`].
    pub unclosed: u64,
}

#[derive(Default)]
struct Stats {
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    terminated: AtomicU64,
    dlq_failed: AtomicU64,
    aborted: AtomicU64,
    released: AtomicU64,
    settle_errors: AtomicU64,
}

impl Stats {
    fn report(&self) -> ConsumerReport {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConsumerReport {
            acked: l(&self.acked),
            retried: l(&self.retried),
            dead_lettered: l(&self.dead_lettered),
            terminated: l(&self.terminated),
            dlq_failed: l(&self.dlq_failed),
            aborted: l(&self.aborted),
            released: l(&self.released),
            settle_errors: l(&self.settle_errors),
            unclosed: 0,
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    bus: Arc<Inner>,
    /// The managed subscriber run by [`EventBus::consume`], named in its
    /// dead letters.
    subscriber: Option<String>,
    handler: Arc<dyn Handler>,
    config: ConsumerConfig,
    options: SubscribeOptions,
    permits: Arc<Semaphore>,
    failures: Mutex<Failures>,
    stats: Stats,
    /// The counters of the dead letters the runner's bus subscriptions make
    /// themselves, each with its reading when the runner took the
    /// subscription (what it made before is not this runner's).
    own_dead_letters: Vec<(Arc<OwnDeadLetters>, OwnDeadLetterCounts)>,
}

impl Shared {
    /// The runner's counters and those of the dead letters its bus
    /// subscriptions made since it took them.
    fn report(&self) -> ConsumerReport {
        let mut report = self.stats.report();
        for (counters, taken_at) in &self.own_dead_letters {
            let own = counters.counts().since(*taken_at);
            report.dead_lettered += own.dead_lettered;
            report.terminated += own.dropped;
            report.dlq_failed += own.unsettled;
        }
        report
    }
}

/// A delivery's place in a stream: a runner's subscriptions may read more
/// than one stream, whose sequences overlap.
type Position = (Arc<str>, u64);

/// The first failure this runner saw of each event that failed here and
/// was not settled here since, for its dead letter.
///
/// An event that failed here may be settled by another instance sharing
/// the durable (or dead-lettered there), which this runner never learns.
/// No provider holds more unsettled events per consumer than its
/// `max_ack_pending`, so beyond `capacity` (that many per subscription)
/// some remembered events were settled elsewhere: the least recently failed
/// is forgotten first. (One of them failing here again is remembered anew,
/// its dead letter then giving the first failure seen after that.)
struct Failures {
    /// Position → (first failure, Unix ms; when it last failed here, in
    /// `clock` ticks).
    first: BTreeMap<Position, (u64, u64)>,
    /// `clock` tick of the last failure → position: least recently failed
    /// first.
    by_recency: BTreeMap<u64, Position>,
    clock: u64,
    capacity: usize,
}

impl Failures {
    /// Room for `max_ack_pending` (the options', or the providers'
    /// default) per subscription, at most [`MAX_TRACKED_FAILURES`].
    fn new(options: &SubscribeOptions, subscriptions: usize) -> Self {
        let per_subscription = options
            .max_ack_pending
            .unwrap_or(DEFAULT_MAX_ACK_PENDING)
            .max(1);
        let capacity = usize::try_from(per_subscription)
            .unwrap_or(usize::MAX)
            .saturating_mul(subscriptions.max(1))
            .min(MAX_TRACKED_FAILURES);
        Self {
            first: BTreeMap::new(),
            by_recency: BTreeMap::new(),
            clock: 0,
            capacity,
        }
    }

    /// Records a failure of the event at `position` now; returns its first
    /// failure.
    fn remember(&mut self, position: Position, now: u64) -> u64 {
        self.clock += 1;
        let tick = self.clock;
        let first = match self.first.get_mut(&position) {
            Some((first, touched)) => {
                self.by_recency.remove(touched);
                *touched = tick;
                *first
            }
            None => {
                self.first.insert(position.clone(), (now, tick));
                now
            }
        };
        self.by_recency.insert(tick, position);
        while self.first.len() > self.capacity {
            let Some((_, oldest)) = self.by_recency.pop_first() else {
                break;
            };
            self.first.remove(&oldest);
        }
        first
    }

    /// Forgets the event at `position` (settled here).
    fn forget(&mut self, position: &Position) {
        if let Some((_, touched)) = self.first.remove(position) {
            self.by_recency.remove(&touched);
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

/// A running consumer. Stop it with [`shutdown`](Self::shutdown); dropping
/// the handle shuts it down in the background with
/// [`ConsumerConfig::shutdown_timeout`] (nothing waits for it: the
/// subscriptions' `close` runs to its end, however long the provider takes,
/// in the background).
#[must_use = "dropping the handle shuts the consumer down"]
pub struct ConsumerHandle {
    /// `Some(deadline)` once shutdown was requested.
    stop: watch::Sender<Option<Instant>>,
    loops: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("subscriptions", &self.loops.len())
            .field("report", &self.shared.report())
            .finish_non_exhaustive()
    }
}

impl ConsumerHandle {
    /// Counters so far.
    pub fn report(&self) -> ConsumerReport {
        self.shared.report()
    }

    /// Whether every subscription loop has ended (subscriptions closed, their
    /// consumers deleted (`NotFound`), or shutdown finished).
    pub fn is_finished(&self) -> bool {
        self.loops.iter().all(JoinHandle::is_finished)
    }

    /// Stops fetching, waits up to `deadline` for in-flight handlers to
    /// finish and settle their events, aborts the rest (left unsettled, so
    /// redelivered), closes the subscriptions and returns the counters.
    ///
    /// Returns within `deadline` plus [`SHUTDOWN_CLOSE_GRACE`] (500 ms),
    /// whatever the provider does: the subscriptions' `close` (which starts
    /// once their in-flight work is settled or aborted) has until then, so
    /// it gets at least the grace when in-flight work used the whole
    /// deadline. A close still running then (a NATS close waits up to its
    /// request timeout, 10 s by default, for a server that is down) is left
    /// to finish in the background, logged and counted in
    /// [`ConsumerReport::unclosed`]. Nothing is lost by that: the runner
    /// settles (or has aborted, unsettled) every delivery it started before
    /// it closes, so all a close still has to do is hand back what the
    /// subscription fetched ahead and never handed out (a durable's, at
    /// once) and delete an ephemeral consumer. If it never completes (the
    /// process exits first), that is the same as dropping the subscription,
    /// which the `Subscription` contract allows: the fetched-ahead events
    /// are redelivered after their ack wait, and the server removes an
    /// ephemeral after its inactivity threshold. Letting it finish, rather
    /// than abandoning it, hands them back at once if the provider recovers
    /// in time. Its counts made after this returns (none but an abort the
    /// loop was slow to record) reach the bus's metrics, not this report.
    pub async fn shutdown(mut self, deadline: Duration) -> ConsumerReport {
        let deadline = after(Instant::now(), deadline);
        self.stop.send_replace(Some(deadline));
        let cutoff = after(deadline, SHUTDOWN_CLOSE_GRACE);
        let mut unclosed = 0;
        for mut handle in std::mem::take(&mut self.loops) {
            match tokio::time::timeout_at(cutoff, &mut handle).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => log_loop_end(&err),
                // dropping the handle detaches the loop: it goes on
                Err(_) => unclosed += 1,
            }
        }
        if unclosed > 0 {
            tracing::warn!(
                subscriptions = unclosed,
                "consumer shutdown: subscriptions still closing at the deadline (provider down?); \
                 leaving them to finish in the background (events they fetched ahead are \
                 redelivered after their ack wait if the close never completes)"
            );
        }
        ConsumerReport {
            unclosed,
            ..self.shared.report()
        }
    }

    /// Waits until every subscription has closed (the provider or
    /// `remove_subscription` closed it) and in-flight work is done.
    pub async fn join(mut self) -> ConsumerReport {
        for handle in std::mem::take(&mut self.loops) {
            if let Err(err) = handle.await {
                log_loop_end(&err);
            }
        }
        self.shared.report()
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        if !self.loops.is_empty() {
            let deadline = after(Instant::now(), self.shared.config.shutdown_timeout);
            self.stop.send_if_modified(|stop| {
                if stop.is_none() {
                    *stop = Some(deadline);
                    true
                } else {
                    false
                }
            });
        }
    }
}

impl EventBus {
    /// Runs `handler` over the managed subscriber `subscriber_id`: one
    /// subscription per subject (durable consumers for durable subscribers),
    /// with the subscriber's options (`max_deliver` enables dead-lettering,
    /// `backoff` sets the nak delays). See [`consumer`](crate::consumer).
    ///
    /// [`Error::NotFound`] if there is no such subscriber; an unusable
    /// config is [`Error::InvalidConfig`]. Must be called inside a tokio
    /// runtime.
    pub async fn consume(
        &self,
        subscriber_id: &str,
        handler: impl Handler,
        config: ConsumerConfig,
    ) -> Result<ConsumerHandle> {
        config.validate()?;
        let (record, subs) = self
            .open_subscriber(subscriber_id, DlqLimits::of(&config))
            .await?;
        let options = record.options.clone().unwrap_or_default();
        // one subscription per subject, in the record's order
        let subs = subs
            .into_iter()
            .zip(&record.filter.subjects)
            .map(|(sub, subject)| {
                let span = tracing::info_span!(
                    "a3s_event.consumer",
                    subscriber = %record.filter.subscriber_id,
                    subject = %subject,
                );
                (sub, span)
            })
            .collect();
        let subscriber = Some(record.filter.subscriber_id.clone());
        Ok(self.start(subs, subscriber, options, Arc::new(handler), config))
    }

    /// Runs `handler` over one subscription (a provider's is wrapped so it
    /// decrypts, see [`wrap_subscription`](Self::wrap_subscription); one
    /// from [`subscribe`](Self::subscribe) is used as it is); `options` are the
    /// subscription's options (for the backoff, `max_deliver` and
    /// `ack_wait`). Dead letters name the managed subscriber of a
    /// subscription from [`create_subscriber`](Self::create_subscriber)
    /// ([`DeadLetterEvent::subscriber`]), as [`consume`](Self::consume)'s
    /// do; others name none. Must be called inside a tokio runtime.
    pub fn consume_subscription(
        &self,
        subscription: Box<dyn Subscription>,
        options: SubscribeOptions,
        handler: impl Handler,
        config: ConsumerConfig,
    ) -> Result<ConsumerHandle> {
        config.validate()?;
        // a managed subscriber's subscription (from `create_subscriber`):
        // its dead letters name it, as `consume`'s do
        let subscriber = BusSubscription::subscriber_of(&*subscription);
        let sub = if BusSubscription::is_bus_subscription(&*subscription) {
            subscription
        } else {
            BusSubscription::new(subscription, self.inner.clone())
                .with_dlq_limits(DlqLimits::of(&config))
                .boxed()
        };
        let span = tracing::info_span!("a3s_event.consumer");
        Ok(self.start(
            vec![(sub, span)],
            subscriber,
            options,
            Arc::new(handler),
            config,
        ))
    }

    /// Runs one loop per subscription, each in its span (the logs of the
    /// loop and of the deliveries it starts carry the span's fields).
    fn start(
        &self,
        subs: Vec<(Box<dyn Subscription>, tracing::Span)>,
        subscriber: Option<String>,
        options: SubscribeOptions,
        handler: Arc<dyn Handler>,
        config: ConsumerConfig,
    ) -> ConsumerHandle {
        let (stop, _) = watch::channel(None);
        let failures = Failures::new(&options, subs.len());
        // every subscription here is a bus subscription (`consume` opens
        // them, `consume_subscription` wraps what it is given)
        let own_dead_letters = subs
            .iter()
            .filter_map(|(sub, _)| BusSubscription::dead_letters_of(&**sub))
            .map(|counters| {
                let now = counters.counts();
                (counters, now)
            })
            .collect();
        let shared = Arc::new(Shared {
            bus: self.inner.clone(),
            subscriber,
            handler,
            permits: Arc::new(Semaphore::new(config.concurrency)),
            config,
            options,
            failures: Mutex::new(failures),
            stats: Stats::default(),
            own_dead_letters,
        });
        let loops = subs
            .into_iter()
            .map(|(sub, span)| {
                tokio::spawn(run_loop(shared.clone(), sub, stop.subscribe()).instrument(span))
            })
            .collect();
        ConsumerHandle {
            stop,
            loops,
            shared,
        }
    }
}

async fn stop_requested(stop: &mut watch::Receiver<Option<Instant>>) {
    // an error means the handle is gone: treat as a stop request
    let _ = stop.wait_for(Option::is_some).await;
}

async fn run_loop(
    shared: Arc<Shared>,
    mut sub: Box<dyn Subscription>,
    mut stop: watch::Receiver<Option<Instant>>,
) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut error_backoff = Duration::from_millis(50);
    loop {
        while let Some(done) = tasks.try_join_next() {
            log_task_end(done);
        }
        // Fetch first, then wait for a permit: a loop waiting on a quiet
        // subject must not hold a permit other subjects' loops need.
        let next = tokio::select! {
            biased;
            () = stop_requested(&mut stop) => break,
            next = sub.next_manual_ack() => next,
        };
        match next {
            Ok(Some(pending)) => {
                error_backoff = Duration::from_millis(50);
                match acquire_permit(&shared, &pending, Some(&mut sub), stop_requested(&mut stop))
                    .await
                {
                    Some((permit, refresh)) => {
                        spawn_process(&mut tasks, &shared, pending, permit, refresh);
                    }
                    None => {
                        // stop requested before this delivery could start
                        if let Some((pending, permit, refresh)) =
                            unstarted_at_stop(&shared, pending, &stop).await
                        {
                            spawn_process(&mut tasks, &shared, pending, permit, refresh);
                        }
                        break;
                    }
                }
            }
            Ok(None) => break,
            // the provider closed: by the application (a shutdown), or for
            // good (a NATS client whose runtime is gone says so in `err`)
            Err(err @ Error::Closed(_)) => {
                tracing::info!(error = %err, "consumer's subscription is closed; stopping it");
                break;
            }
            // the consumer was deleted (another process, an administrator):
            // the subscription yields nothing more, as with `Ok(None)`
            Err(err @ Error::NotFound { .. }) => {
                tracing::warn!(error = %err, "consumer's subscription is gone; stopping it");
                break;
            }
            // Counted by the bus subscription; it stays usable.
            Err(err @ Error::Lagged { .. }) => {
                tracing::warn!(error = %err, "consumer skipped a delivery");
            }
            // Dead-lettered where a DLQ handler is set, and logged with
            // what became of it, by the bus subscription; it stays usable.
            Err(err @ (Error::Undecodable { .. } | Error::Decryption(_))) => {
                tracing::debug!(error = %err, "consumer skipped a delivery");
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?error_backoff, "consumer fetch failed");
                tokio::select! {
                    () = stop_requested(&mut stop) => break,
                    () = tokio::time::sleep(error_backoff) => {}
                }
                error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    // Drain in-flight work until the deadline, then abort what is left.
    let deadline = stop
        .borrow()
        .unwrap_or_else(|| after(Instant::now(), shared.config.shutdown_timeout));
    let drained = tokio::time::timeout_at(deadline, async {
        while let Some(done) = tasks.join_next().await {
            log_task_end(done);
        }
    })
    .await;
    if drained.is_err() {
        // Only the tasks the abort cancelled count: tasks that ended in
        // the deadline's instant (their settlement counted) may still be
        // in the set, unjoined (the join loop ran out of its cooperative
        // budget), and aborting them does nothing.
        tasks.abort_all();
        let mut left = 0u64;
        while let Some(done) = tasks.join_next().await {
            match done {
                Err(err) if err.is_cancelled() => left += 1,
                done => log_task_end(done),
            }
        }
        if left > 0 {
            shared.stats.aborted.fetch_add(left, Ordering::Relaxed);
            shared.bus.metrics.add_consumer_aborted(left);
            tracing::warn!(
                in_flight = left,
                "shutdown deadline reached; aborted handlers and dead letters in progress \
                 (their events are redelivered after their ack wait; a final delivery comes \
                 once more, as its spare, and an aborted spare delivery is lost)"
            );
        }
    }
    let closed = sub.close().await;
    // past the cutoff, `shutdown` has returned without this subscription
    let late = Instant::now() > after(deadline, SHUTDOWN_CLOSE_GRACE);
    match closed {
        Err(err) => tracing::warn!(
            error = %err,
            after_shutdown_returned = late,
            "closing a consumer subscription failed"
        ),
        Ok(()) if late => {
            tracing::info!("a consumer subscription closed after its shutdown had returned");
        }
        Ok(()) => {}
    }
}

fn spawn_process(
    tasks: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    pending: PendingEvent,
    permit: OwnedSemaphorePermit,
    refresh: bool,
) {
    let span = tracing::debug_span!(
        "a3s_event.consume",
        event_id = ?pending.received.event.id,
        sequence = pending.received.sequence,
        attempt = pending.received.num_delivered,
    );
    // the delivery's span (debug) is a child of the loop's; the loop's is
    // kept when the delivery's is disabled
    tasks.spawn(
        process(shared.clone(), pending, permit, refresh)
            .instrument(span)
            .in_current_span(),
    );
}

/// A delivery fetched before a stop request that has not started. It is
/// handed back (naked, so redelivered at once) unless this is its last
/// allowed delivery: a nak would end the event, so it is drained like
/// in-flight work instead (it waits for a permit until the shutdown
/// deadline; `Some` means run it). At the deadline it is left unsettled and
/// counted as aborted: the provider delivers a final delivery once more
/// after its ack wait (the spare), but not a spare delivery.
async fn unstarted_at_stop(
    shared: &Arc<Shared>,
    pending: PendingEvent,
    stop: &watch::Receiver<Option<Instant>>,
) -> Option<(PendingEvent, OwnedSemaphorePermit, bool)> {
    let deadline = stop
        .borrow()
        .unwrap_or_else(|| after(Instant::now(), shared.config.shutdown_timeout));
    if !is_last_attempt(&shared.options, &pending) {
        tracing::debug!(
            event_id = ?pending.received.event.id,
            "shutdown: handing back a delivery that had not started"
        );
        let (event, sequence) = delivery(&pending);
        // bounded by the deadline: a nak that never returns (a stalled
        // connection) must not hold up the shutdown; the delivery comes
        // back after its ack wait then
        let started = Instant::now();
        let naked = tokio::time::timeout_at(deadline, pending.nak())
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    operation: "nak (handing back a delivery at shutdown)".into(),
                    elapsed: started.elapsed(),
                })
            });
        settle(shared, &event, sequence, naked, "nak");
        bump(&shared.stats.released);
        return None;
    }
    let permit = acquire_permit(shared, &pending, None, tokio::time::sleep_until(deadline)).await;
    if permit.is_none() {
        bump(&shared.stats.aborted);
        shared.bus.metrics.add_consumer_aborted(1);
        tracing::warn!(
            event_id = ?pending.received.event.id,
            subject = %pending.received.event.subject,
            sequence = pending.received.sequence,
            attempt = pending.received.num_delivered,
            "shutdown deadline reached before the final delivery of an event could start; it comes once more after its ack wait unless this was already its spare delivery"
        );
    }
    permit.map(|(permit, refresh)| (pending, permit, refresh))
}

/// Whether a failure of this delivery exhausts the event.
fn is_last_attempt(options: &SubscribeOptions, pending: &PendingEvent) -> bool {
    pending.is_final_delivery()
        || options
            .max_deliver
            .is_some_and(|max| pending.received.num_delivered >= max)
}

/// Logs a subscription loop that did not return: a panic is a bug (an
/// error); a cancellation means the runtime that ran it was shut down
/// before [`ConsumerHandle::shutdown`] or `join` was called (a warning:
/// the deliveries it held were neither settled nor counted in the report's
/// `aborted`, and the provider redelivers them after their ack wait).
fn log_loop_end(err: &tokio::task::JoinError) {
    if err.is_cancelled() {
        tracing::warn!(
            "consumer loop ended with its runtime (shut down before this consumer was): \
             deliveries it held were left unsettled, uncounted, and are redelivered after \
             their ack wait"
        );
    } else {
        tracing::error!(error = %err, "consumer loop failed");
    }
}

fn log_task_end(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(err) = done
        && !err.is_cancelled()
    {
        tracing::error!(error = %err, "consumer task failed");
    }
}

/// Outcome of one handler run: `Err(reason)` on error, panic or timeout.
/// `refresh`: the delivery's ack wait is extended (`in_progress`) as the
/// handler starts (it waited for its slot since its last refresh).
async fn run_handler(
    shared: &Shared,
    pending: &PendingEvent,
    refresh: bool,
) -> std::result::Result<(), String> {
    // `handle` itself runs inside the guard too: a handler that panics
    // before returning its future is caught like one panicking in it
    let handler = shared.handler.clone();
    let received = pending.received.clone();
    let fut = CatchUnwind(Box::pin(async move { handler.handle(received).await }));
    let guarded = async {
        let outcome = match shared.config.handler_timeout {
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(format!("handler timed out after {limit:?}")),
            },
            None => fut.await,
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(panic) => Err(format!("handler panicked: {}", panic_message(&*panic))),
        }
    };
    let received = &pending.received;
    let about = About {
        subscriber: shared.subscriber.as_deref(),
        event_id: &received.event.id,
        subject: &received.event.subject,
        sequence: received.sequence,
        deliveries: received.num_delivered,
    };
    // `None` (no clock read, no timer) under a limit that ends the run by
    // the threshold: the default's case
    let mut stall = StallWatch::start(Work::Handler, shared.config.handler_timeout, about);
    let outcome = keep_alive(shared, pending, guarded, stall.as_mut(), refresh).await;
    if let Some(stall) = &mut stall {
        stall.ended(Instant::now(), &outcome);
    }
    outcome
}

/// Runs `work` while keeping `pending` ours: `in_progress` every half of
/// the wait the provider applies to it, so that it is not redelivered
/// (to this or another instance) while the handler or the DLQ works on it.
/// The wait is read again while `work` runs (see [`KeepAliveClock`]): a
/// durable's ack wait changed by another process meanwhile is followed.
///
/// `stall`, if any, watches `work` on the same timer: the loop wakes for
/// the next keep-alive check or the next stall warning, whichever is first
/// (no timer of its own per delivery). `refresh` sends an `in_progress`
/// as `work` starts (the delivery waited for a handler slot).
async fn keep_alive<T>(
    shared: &Shared,
    pending: &PendingEvent,
    work: impl Future<Output = T>,
    mut stall: Option<&mut StallWatch<'_>>,
    refresh: bool,
) -> T {
    tokio::pin!(work);
    let options = &shared.options;
    let mut clock = KeepAliveClock::start(options, pending, now());
    // the keep-alive being sent: `work` is polled meanwhile, so one that
    // stalls (a provider's request on a half-dead connection) holds up
    // neither the work nor the stall warnings; dropped when `work` ends
    let mut sending: Option<Sending<'_, Result<()>>> =
        refresh.then(|| Box::pin(pending.in_progress()) as Sending<'_, Result<()>>);
    loop {
        // no keep-alive check is due while one is being sent
        let check: Option<Instant> = sending.is_none().then(|| clock.next_check().into());
        let warning = stall.as_ref().map(|stall| stall.next_warning());
        let wake = match (check, warning) {
            (Some(check), Some(warning)) => Some(check.min(warning)),
            (check, warning) => check.or(warning),
        };
        tokio::select! {
            outcome = &mut work => return outcome,
            result = async {
                match sending.as_mut() {
                    Some(send) => send.await,
                    None => std::future::pending().await,
                }
            }, if sending.is_some() => {
                sending = None;
                if let Err(err) = result {
                    tracing::debug!(error = %err, "in_progress failed");
                }
                clock.sent(options, pending, now());
            }
            () = async {
                match wake {
                    Some(wake) => tokio::time::sleep_until(wake).await,
                    None => std::future::pending().await,
                }
            }, if wake.is_some() => {
                let at = Instant::now();
                if let Some(stall) = stall.as_deref_mut() {
                    stall.check(at, &shared.bus.metrics);
                }
                if check.is_some_and(|check| at >= check)
                    && clock.due(options, pending, at.into_std())
                {
                    sending = Some(Box::pin(pending.in_progress()));
                }
            }
        }
    }
}

/// Tokio's now (paused in tests), for [`KeepAliveClock`].
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The delay of the nak after failed delivery number `attempt`: the
/// subscription's backoff entry, or its `ack_wait`; when the options set
/// neither, the wait the provider reported for the delivery (its default),
/// or 30 s.
fn nak_delay(options: &SubscribeOptions, pending: &PendingEvent, attempt: u64) -> Duration {
    match pending.ack_wait() {
        Some(wait) if options.ack_wait.is_none() && options.backoff.is_empty() => wait,
        _ => options.redelivery_delay(attempt),
    }
}

/// How often a runner waiting for a handler slot has the subscription keep
/// what it fetched ahead alive ([`Subscription::keep_alive`]): well under
/// half of any ack wait in practice, whatever the delivery in hand waits.
const FETCHED_AHEAD_CHECK: Duration = Duration::from_millis(100);

/// A keep-alive call in flight (`in_progress`, or a subscription's
/// `keep_alive`), polled alongside what it keeps alive.
type Sending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A subscription's `keep_alive` in flight, which gives the subscription
/// back as it ends.
type KeepingAlive<'a> = Sending<'a, (Result<()>, &'a mut Box<dyn Subscription>)>;

/// Waits for a handler permit, keeping the fetched delivery alive
/// (`in_progress`) meanwhile, and what `sub` fetched ahead of it
/// ([`Subscription::keep_alive`]: the runner does not ask for the next
/// event while it waits); `None` if `until` completes first.
///
/// The keep-alives are sent while the permit and `until` are watched, so
/// one that never returns (a provider's request on a half-dead
/// connection) holds up neither the start of the delivery nor a stop; no
/// next one of the same kind is sent meanwhile, and one still pending
/// when this returns is dropped. The `bool` says the delivery's ack wait
/// is to be refreshed as its handler starts (see [`keep_alive`]).
async fn acquire_permit(
    shared: &Arc<Shared>,
    pending: &PendingEvent,
    sub: Option<&mut Box<dyn Subscription>>,
    until: impl Future<Output = ()>,
) -> Option<(OwnedSemaphorePermit, bool)> {
    // a free slot: no timers to set up (the common case below saturation)
    if let Ok(permit) = shared.permits.clone().try_acquire_owned() {
        return Some((permit, false));
    }
    let options = &shared.options;
    let mut clock = KeepAliveClock::start(options, pending, now());
    let acquire = shared.permits.clone().acquire_owned();
    tokio::pin!(acquire);
    tokio::pin!(until);
    // the buffer holds deliveries of any number, whose ack waits may be
    // shorter than this one's (a backoff): checked often, which costs a
    // clock read where nothing is due
    let mut fetched_ahead =
        tokio::time::interval_at(Instant::now() + FETCHED_AHEAD_CHECK, FETCHED_AHEAD_CHECK);
    fetched_ahead.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `sub` is lent to its keep-alive while one is sent, and given back
    let mut idle_sub = sub;
    let mut keeping: Option<KeepingAlive<'_>> = None;
    let mut sending: Option<Sending<'_, Result<()>>> = None;
    loop {
        let check: Option<Instant> = sending.is_none().then(|| clock.next_check().into());
        tokio::select! {
            biased;
            permit = &mut acquire => {
                // the handler's own keep-alive starts a whole interval from
                // now: a delivery that waited here since its last refresh
                // would otherwise go up to two intervals (the ack wait)
                // without one, and be redelivered as its handler starts;
                // the handler's keep-alive sends it, so that one that
                // stalls holds up neither the handler nor this loop
                let at = now();
                clock.due(options, pending, at);
                let refresh = sending.is_some()
                    || at.saturating_duration_since(clock.last_sent()) >= clock.period() / 4;
                return permit.ok().map(|permit| (permit, refresh));
            }
            () = &mut until => return None,
            result = async {
                match sending.as_mut() {
                    Some(send) => send.await,
                    None => std::future::pending().await,
                }
            }, if sending.is_some() => {
                sending = None;
                if let Err(err) = result {
                    tracing::debug!(error = %err, "in_progress failed");
                }
                clock.sent(options, pending, now());
            }
            (result, sub) = async {
                match keeping.as_mut() {
                    Some(keep) => keep.await,
                    None => std::future::pending().await,
                }
            }, if keeping.is_some() => {
                keeping = None;
                idle_sub = Some(sub);
                if let Err(err) = result {
                    tracing::debug!(error = %err, "keeping the events fetched ahead alive failed");
                }
            }
            () = async {
                match check {
                    Some(check) => tokio::time::sleep_until(check).await,
                    None => std::future::pending().await,
                }
            }, if check.is_some() => {
                if clock.due(options, pending, now()) {
                    sending = Some(Box::pin(pending.in_progress()));
                }
            }
            _ = fetched_ahead.tick(), if idle_sub.is_some() => {
                if let Some(sub) = idle_sub.take() {
                    keeping = Some(Box::pin(async move { (sub.keep_alive().await, sub) }));
                }
            }
        }
    }
}

async fn process(
    shared: Arc<Shared>,
    pending: PendingEvent,
    permit: OwnedSemaphorePermit,
    refresh: bool,
) {
    if pending.received.num_delivered > 1 {
        shared.bus.metrics.add_redelivered(1);
    }
    match run_handler(&shared, &pending, refresh).await {
        Ok(()) => {
            forget_failure(&shared, &pending.received.stream, pending.received.sequence);
            shared.bus.metrics.add_handled(1);
            // a failed ack is a settle error, not an ack: the provider
            // redelivers the event, and that delivery is counted then
            let (event, sequence) = delivery(&pending);
            if settle(&shared, &event, sequence, pending.ack().await, "ack") {
                bump(&shared.stats.acked);
            }
        }
        Err(reason) => {
            shared.bus.metrics.add_handler_error(1);
            let (stream, sequence) = (
                Arc::clone(&pending.received.stream),
                pending.received.sequence,
            );
            let first_failure = remember_failure(&shared, &stream, sequence);
            if is_last_attempt(&shared.options, &pending) {
                dead_letter(&shared, pending, reason, first_failure, permit).await;
                forget_failure(&shared, &stream, sequence);
            } else {
                let attempt = pending.received.num_delivered;
                tracing::debug!(
                    event_id = ?pending.received.event.id,
                    attempt,
                    reason = %reason,
                    "handler failed; retrying"
                );
                let delay = nak_delay(&shared.options, &pending, attempt);
                let (event, sequence) = delivery(&pending);
                settle(
                    &shared,
                    &event,
                    sequence,
                    pending.nak_with_delay(delay).await,
                    "nak",
                );
                bump(&shared.stats.retried);
                shared.bus.metrics.add_redelivery(1);
            }
        }
    }
}

/// Hands an exhausted event to the DLQ handler (terminating it once
/// stored), or terminates it when there is none.
///
/// `permit`, the handler slot the event was processed under, is given
/// back after the first refusal: a DLQ that is down is retried for as long
/// as it is down, and holding the slot meanwhile stalled every other event
/// once `concurrency` exhausted events waited on it. The deliveries waiting
/// are bounded by the subscription's `max_ack_pending`, as the provider
/// hands out no more unsettled.
async fn dead_letter(
    shared: &Shared,
    pending: PendingEvent,
    reason: String,
    first_failure: u64,
    permit: OwnedSemaphorePermit,
) {
    let received = &pending.received;
    let mut dead = DeadLetterEvent::new(Event::clone(&received.event), reason)
        .with_attempts(received.num_delivered)
        .with_first_failure_at(first_failure);
    if let Some(subscriber) = &shared.subscriber {
        dead = dead.with_subscriber(subscriber.clone());
    }
    let Some(dlq) = shared.bus.hooks.load().dlq.clone() else {
        tracing::error!(
            event_id = ?received.event.id,
            subject = %received.event.subject,
            sequence = received.sequence,
            attempts = received.num_delivered,
            reason = %dead.reason,
            "event exhausted its deliveries and no DLQ handler is set; terminating it"
        );
        let (event, sequence) = delivery(&pending);
        settle(shared, &event, sequence, pending.term().await, "term");
        bump(&shared.stats.terminated);
        shared.bus.metrics.add_dlq_dropped(1);
        return;
    };
    // a DLQ that is down (a transient error) is waited for as long as the
    // runner runs (until the shutdown deadline aborts this task): the
    // event's deliveries are exhausted, so giving up would lose it; a
    // permanent refusal (or a panic) is tried `dlq_attempts` times: only
    // those count towards it, not the attempts an outage took. The delivery
    // is kept ours meanwhile: once its ack wait passed, its spare delivery
    // would run the handler and dead-letter it a second time elsewhere.
    let mut permit = Some(permit);
    let offered = async {
        let mut pause = Duration::from_millis(100);
        let (mut attempt, mut refused_for_good) = (0u64, 0u32);
        loop {
            attempt += 1;
            let outcome = offer_dead_letter(
                &*dlq,
                dead.clone(),
                shared.config.dlq_timeout,
                &shared.bus.metrics,
                pending.received.sequence,
            )
            .await;
            let Err(err) = outcome else {
                return true;
            };
            shared.bus.metrics.add_dlq_error(1);
            tracing::warn!(
                event_id = ?dead.event.id,
                subject = %dead.event.subject,
                sequence = pending.received.sequence,
                attempt,
                error = %err,
                "DLQ handler refused a dead letter"
            );
            if !err.is_transient() {
                refused_for_good += 1;
                if refused_for_good >= shared.config.dlq_attempts {
                    return false;
                }
            }
            // the handler is done with the event: its slot serves others
            // while the dead letter waits for the DLQ
            drop(permit.take());
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    };
    if keep_alive(shared, &pending, offered, None, false).await {
        shared.bus.metrics.add_dlq(1);
        let (event, sequence) = delivery(&pending);
        settle(shared, &event, sequence, pending.term().await, "term");
        bump(&shared.stats.dead_lettered);
        return;
    }
    tracing::error!(
        event_id = ?dead.event.id,
        subject = %dead.event.subject,
        sequence = pending.received.sequence,
        "DLQ handler kept refusing a dead letter; leaving the event unsettled (a final delivery comes once more, as its spare; a spare delivery does not)"
    );
    bump(&shared.stats.dlq_failed);
    shared.bus.metrics.add_dlq_unsettled(1);
}

/// The event and sequence of a delivery, kept to name it in the log once
/// settling has consumed the delivery.
fn delivery(pending: &PendingEvent) -> (Arc<Event>, u64) {
    (
        Arc::clone(&pending.received.event),
        pending.received.sequence,
    )
}

/// Counts and logs a failed settlement of `event` (delivered at
/// `sequence`); true when it succeeded.
fn settle(shared: &Shared, event: &Event, sequence: u64, result: Result<()>, what: &str) -> bool {
    match result {
        Ok(()) => true,
        Err(err) => {
            bump(&shared.stats.settle_errors);
            shared.bus.metrics.add_settle_error(1);
            tracing::warn!(
                event_id = ?event.id,
                subject = %event.subject,
                sequence,
                error = %err,
                "{what} failed"
            );
            false
        }
    }
}

fn remember_failure(shared: &Shared, stream: &Arc<str>, sequence: u64) -> u64 {
    shared
        .failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remember((Arc::clone(stream), sequence), now_millis())
}

/// Forgets a settled event's first failure; builds the key only when
/// something is tracked (a handled event usually failed never).
fn forget_failure(shared: &Shared, stream: &Arc<str>, sequence: u64) {
    let mut failures = shared
        .failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if !failures.is_empty() {
        failures.forget(&(Arc::clone(stream), sequence));
    }
}

#[cfg(test)]
mod tests {
    use super::{Failures, MAX_TRACKED_FAILURES, Position};
    use event_core::SubscribeOptions;
    use std::sync::Arc;

    fn at(stream: &Arc<str>, sequence: u64) -> Position {
        (Arc::clone(stream), sequence)
    }

    /// Beyond `max_ack_pending` per subscription, the least recently
    /// failed event is forgotten; one that keeps failing keeps its first
    /// failure, and a settled one is forgotten at once.
    #[test]
    fn failures_are_kept_up_to_max_ack_pending_least_recently_failed_forgotten_first() {
        let options = SubscribeOptions {
            max_ack_pending: Some(3),
            ..SubscribeOptions::default()
        };
        let mut failures = Failures::new(&options, 2);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        // the same sequence on two streams: two events
        assert_eq!(failures.remember(at(&a, 1), 10), 10);
        assert_eq!(failures.remember(at(&b, 1), 11), 11);
        for seq in 2..=5 {
            failures.remember(at(&a, seq), 20 + seq);
        }
        assert_eq!(failures.first.len(), 6);
        // a/1 fails again: it keeps its first failure and is now the most
        // recent, so b/1 goes first
        assert_eq!(failures.remember(at(&a, 1), 99), 10);
        failures.remember(at(&a, 6), 30);
        assert_eq!(failures.first.len(), 6);
        assert!(!failures.first.contains_key(&at(&b, 1)));
        assert_eq!(failures.remember(at(&a, 1), 100), 10);
        failures.forget(&at(&a, 1));
        assert_eq!(failures.first.len(), 5);
        assert_eq!(failures.by_recency.len(), 5);
        assert_eq!(failures.remember(at(&a, 1), 101), 101);

        // 100,000 events failed here and settled elsewhere: the default
        // room (1,000 per subscription) is all that is kept
        let mut failures = Failures::new(&SubscribeOptions::default(), 1);
        for seq in 0..100_000 {
            failures.remember(at(&a, seq), seq);
        }
        assert_eq!(failures.first.len(), 1_000);
        assert_eq!(failures.by_recency.len(), 1_000);
        assert!(failures.first.contains_key(&at(&a, 99_999)));

        let unlimited = SubscribeOptions {
            max_ack_pending: Some(u64::MAX),
            ..SubscribeOptions::default()
        };
        assert_eq!(Failures::new(&unlimited, 4).capacity, MAX_TRACKED_FAILURES);
    }
}
