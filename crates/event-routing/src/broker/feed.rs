//! Feeding a broker from a (durable) subscription.

use super::{Broker, Core, PendingGuard};
use event_core::{
    Error, EventProvider, KeepAliveClock, PendingEvent, Result, SubscribeOptions, Subscription,
};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    acked: AtomicU64,
    naked: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    aborted: AtomicU64,
    lagged: AtomicU64,
}

/// What a [`BrokerFeed`] did so far.
///
/// A counter missing from the JSON reads as zero, so stats written by a
/// version with fewer counters still read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct FeedStats {
    /// Events received from the subscription. Once the feed has stopped,
    /// each is counted once in `acked`, `naked`, `dropped` or `aborted`
    /// (while it runs, the events being routed are in none yet; a routing
    /// that panicked, a bug, is in none either).
    pub received: u64,
    /// Events acknowledged: every matching trigger delivered or
    /// dead-lettered them (events matching no trigger are acknowledged too).
    /// These are acks sent (counted once the ack call returned, also when
    /// it failed: [`errors`](Self::errors) counts those too): on NATS an
    /// ack is not confirmed, and one lost
    /// with the connection (a server restart) brings its event back, routed
    /// again.
    pub acked: u64,
    /// Events not settled and left for redelivery (`nak` with the broker's
    /// `feed_retry_delay`).
    pub naked: u64,
    /// Events not settled on their final delivery (the subscription's
    /// `max_deliver` reached, see
    /// [`PendingEvent::is_final_delivery`](event_core::PendingEvent::is_final_delivery)):
    /// terminated, so the triggers that failed them (and had no dead-letter
    /// sink that took them) never get them. Each is an `ERROR` in the log.
    pub dropped: u64,
    /// Errors reported by the subscription (lag, undecodable messages,
    /// events a bus subscription could not decrypt, connection failures,
    /// failed acks). A lag report is one error however
    /// many events it skipped: [`lagged`](Self::lagged) counts those.
    pub errors: u64,
    /// Routings cut off at the deadline of
    /// [`stop_within`](BrokerFeed::stop_within): their events were neither
    /// acknowledged nor nak'ed, so the provider redelivers them after their
    /// ack wait (to this consumer's next subscription). A routing cut off
    /// while its ack, nak or term was still running (a stalled connection)
    /// counts here only.
    pub aborted: u64,
    /// Events the subscription skipped and reported so
    /// ([`Error::Lagged`]'s `missed`, summed): events an ephemeral
    /// subscription fell too far behind to get, or that the provider's
    /// retention dropped before the consumer read them (a durable too: the
    /// memory provider reports them). These never reach the triggers.
    pub lagged: u64,
}

#[cfg(feature = "bus")]
#[cfg_attr(docsrs, doc(cfg(feature = "bus")))]
impl FeedStats {
    /// The counters with their Prometheus names and HELP texts.
    fn families(&self) -> [(&'static str, &'static str, u64); 7] {
        [
            (
                "a3s_feed_received_total",
                "Events the broker feed received from its subscription.",
                self.received,
            ),
            (
                "a3s_feed_acked_total",
                "Events the broker feed acknowledged: every matching trigger delivered or dead-lettered them (events matching no trigger too).",
                self.acked,
            ),
            (
                "a3s_feed_naked_total",
                "Events the broker feed did not settle and left for redelivery (nak with the broker's feed_retry_delay).",
                self.naked,
            ),
            (
                "a3s_feed_dropped_total",
                "Events the broker feed did not settle on their final delivery (max_deliver): terminated, lost to the triggers that failed them.",
                self.dropped,
            ),
            (
                "a3s_feed_errors_total",
                "Errors the broker feed's subscription reported (lag, undecodable messages, undecryptable events, connection failures, failed acks).",
                self.errors,
            ),
            (
                "a3s_feed_aborted_total",
                "Routings the broker feed cut off at the deadline of stop_within; their events come back after their ack wait.",
                self.aborted,
            ),
            (
                "a3s_feed_lagged_total",
                "Events the broker feed's subscription reported it skipped (lag): never routed.",
                self.lagged,
            ),
        ]
    }

    /// Renders the stats in the Prometheus text exposition format
    /// (0.0.4), with the conventions of
    /// [`BrokerMetrics::to_prometheus`](crate::BrokerMetrics::to_prometheus):
    /// each counter as `a3s_feed_<counter>_total` (`received`, `acked`,
    /// `naked`, `dropped`, `errors`, `aborted`, `lagged`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
    /// use event_bus::metrics::PrometheusLabels;
    /// use event_core::SubscribeOptions;
    /// use event_memory::MemoryProvider;
    /// use event_routing::Broker;
    ///
    /// let provider = MemoryProvider::default();
    /// let broker = Broker::new();
    /// let feed = broker
    ///     .feed_durable(&provider, "router", "events.>", &SubscribeOptions::default())
    ///     .await?;
    /// // one feed per durable consumer: label each with its name
    /// let labels = PrometheusLabels::new([("feed", "router")])?;
    /// let text = feed.stats().to_prometheus_with_labels(&labels);
    /// assert!(text.contains("a3s_feed_received_total{feed=\"router\"} 0"));
    /// feed.stop().await?;
    /// # Ok(()) }
    /// ```
    pub fn to_prometheus(&self) -> String {
        self.to_prometheus_with_labels(&event_bus::metrics::PrometheusLabels::default())
    }

    /// [`to_prometheus`](Self::to_prometheus) with `labels` on every
    /// sample (say `feed="router"`: the series of several feeds in one
    /// process would otherwise clash).
    pub fn to_prometheus_with_labels(
        &self,
        labels: &event_bus::metrics::PrometheusLabels,
    ) -> String {
        use crate::prometheus::{Kind, write_family};
        let mut out = String::with_capacity(1024);
        for (metric, help, value) in self.families() {
            write_family(&mut out, labels, metric, help, Kind::Counter, value);
        }
        out
    }
}

/// A running feed from a subscription into a broker
/// ([`Broker::feed`](crate::Broker::feed)).
///
/// Events are routed up to `feed_concurrency` at a time; the feed takes the
/// next event from the subscription only once a routing slot is free, so an
/// event's ack wait runs only while it is routed (a provider that fetches
/// ahead, as NATS does, starts it when it fetches). Each is acknowledged
/// once every matching trigger has delivered or dead-lettered it; otherwise it
/// is nak'ed with `feed_retry_delay` and comes back (redelivering it to the
/// triggers that did succeed too: delivery is at-least-once). With a durable
/// subscription, routing survives restarts and covers events other processes
/// published.
///
/// While an event is routed, the feed keeps it (`in_progress` about every
/// half of its ack wait, as [`KeepAliveClock`] says), so a routing that
/// takes longer than the ack wait (a slow sink, retries with backoff) is
/// not redelivered meanwhile; it comes back only if the process stops
/// before settling it, or the feed is [cut off](Self::stop_within).
///
/// Without a `max_deliver` on the subscription, an event that a trigger
/// with no dead-letter sink keeps failing comes back forever. With one, the
/// event's final delivery does not come back when it is not settled: it is
/// terminated, counted in [`FeedStats::dropped`] and logged as an `ERROR`,
/// and the triggers that failed it never get it. Give every trigger a
/// dead-letter sink ([`DeliverySpec::with_dead_letter_sink`](crate::DeliverySpec::with_dead_letter_sink))
/// to keep such events.
///
/// Logging: each routing that did not settle is one `WARN` ("routing not
/// settled; the event will be redelivered") naming the event, and per
/// failed trigger its last error, attempts and the dead-letter sink's
/// refusal (or that it has none), or on the final delivery one `ERROR`
/// ("... the triggers that failed it never get it") with the same fields;
/// the deliveries themselves log their attempts at `DEBUG` only (the
/// routing's line says what became of the event). A dead-lettered
/// delivery is final (its event is acknowledged) and logged as the
/// broker's are (see [`Broker`]: a rate-limited `WARN` per trigger).
///
/// [`stop`](Self::stop) stops fetching, finishes the routings in progress,
/// settles their events and closes the subscription;
/// [`stop_within`](Self::stop_within) does the same until a deadline. Dropping the handle
/// without `stop` leaves the feed running until the subscription ends:
/// `Ok(None)`, [`Error::Closed`], or [`Error::NotFound`] (its durable
/// consumer was deleted). Other subscription errors (a lost connection) are
/// counted and retried after `feed_retry_delay`.
#[derive(Debug)]
#[must_use = "the handle is what stops the feed: dropped, the feed runs until its subscription ends"]
pub struct BrokerFeed {
    stop: watch::Sender<Option<Stop>>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl BrokerFeed {
    /// What the feed did so far.
    pub fn stats(&self) -> FeedStats {
        snapshot(&self.counters)
    }

    /// Whether the feed has ended (stopped, the subscription closed, or its
    /// consumer deleted: `Error::NotFound` ends the feed like `Ok(None)`).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the feed gracefully (see the type docs) and returns its final
    /// stats. There is no time limit: it waits for the routings in progress,
    /// with their retries; use [`stop_within`](Self::stop_within) under an
    /// orchestrator's grace period.
    pub async fn stop(self) -> Result<FeedStats> {
        self.stop_at(None).await
    }

    /// [`stop`](Self::stop) with a time limit: stops fetching, lets the
    /// routings in progress finish (and settles their events) until
    /// `deadline` has passed, then cuts off those still running and closes
    /// the subscription (the close itself is given at most
    /// [`FEED_CLOSE_GRACE`] more). Returns as soon as all is done. Once
    /// the returned future has been polled, dropping it before it completes
    /// (a second signal, an outer timeout) leaves the feed stopping in the
    /// background, still cut off at `deadline`.
    ///
    /// A cut-off routing may have delivered to some triggers and not to
    /// others; its event is neither acknowledged nor nak'ed, so the provider
    /// redelivers it after its ack wait to the consumer's next subscription
    /// (delivery stays at-least-once). [`FeedStats::aborted`] counts them,
    /// and a `WARN` says how many. Stop feeds before
    /// [`Broker::shutdown_within`], which does not wait for them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
    /// use event_core::{EventProvider, SubscribeOptions};
    /// use event_memory::MemoryProvider;
    /// use event_routing::Broker;
    /// use std::time::Duration;
    ///
    /// let provider = MemoryProvider::default();
    /// let broker = Broker::new();
    /// let feed = broker
    ///     .feed_durable(&provider, "router", "events.>", &SubscribeOptions::default())
    ///     .await?;
    /// // ... on SIGTERM: the feed first, then the broker's queue.
    /// let stats = feed.stop_within(Duration::from_secs(10)).await?;
    /// let report = broker.shutdown_within(Duration::from_secs(10)).await;
    /// assert_eq!(stats.aborted, 0);
    /// assert!(report.is_complete());
    /// # Ok(()) }
    /// ```
    pub async fn stop_within(self, deadline: Duration) -> Result<FeedStats> {
        self.stop_at(Some(super::cutoff::after(Instant::now(), deadline)))
            .await
    }

    async fn stop_at(self, deadline: Option<Instant>) -> Result<FeedStats> {
        let _ = self.stop.send(Some(Stop { deadline }));
        self.task
            .await
            .map_err(|e| Error::provider("broker feed", e.to_string()))?;
        Ok(snapshot(&self.counters))
    }
}

/// How long [`BrokerFeed::stop_within`] gives the subscription's close
/// after its deadline (a NATS subscription's close hands back the events it
/// fetched ahead, a request that waits out its timeout when the server is
/// down): 500 ms. A close still running then is dropped; the events it
/// would have handed back come back after their ack wait.
pub const FEED_CLOSE_GRACE: Duration = Duration::from_millis(500);

/// A stop request: with a deadline for the routings in progress, or none.
#[derive(Debug, Clone, Copy)]
struct Stop {
    deadline: Option<Instant>,
}

fn snapshot(c: &Counters) -> FeedStats {
    FeedStats {
        received: c.received.load(Ordering::Relaxed),
        acked: c.acked.load(Ordering::Relaxed),
        naked: c.naked.load(Ordering::Relaxed),
        dropped: c.dropped.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        aborted: c.aborted.load(Ordering::Relaxed),
        lagged: c.lagged.load(Ordering::Relaxed),
    }
}

impl Broker {
    /// Routes every event `subscription` delivers (manual acknowledgement:
    /// see [`BrokerFeed`]). Spawns a task on the current Tokio runtime.
    ///
    /// Events are kept alive while routed, every half of the ack wait the
    /// provider reports (memory and NATS do); from a provider that does not
    /// report it, every second (its default wait is unknown here):
    /// [`feed_durable`](Self::feed_durable) takes the wait from its options.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as [`tokio::spawn`] does (a subscription is
    /// made in async code, so a feed normally starts beside it; from sync
    /// code, enter the runtime first with [`tokio::runtime::Handle::enter`]).
    pub fn feed(&self, subscription: Box<dyn Subscription>) -> BrokerFeed {
        self.feed_under(subscription, SubscribeOptions::default())
    }

    /// [`feed`](Self::feed) of a subscription made with `options` (which
    /// say the ack wait where the provider does not report it).
    fn feed_under(
        &self,
        subscription: Box<dyn Subscription>,
        options: SubscribeOptions,
    ) -> BrokerFeed {
        let (stop, stop_rx) = watch::channel(None);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(
            self.inner.core.clone(),
            subscription,
            options,
            stop_rx,
            counters.clone(),
        ));
        BrokerFeed {
            stop,
            task,
            counters,
        }
    }

    /// Creates or resumes the durable consumer `consumer_name` on `provider`
    /// for `filter_subject` and [feeds](Self::feed) it into the broker.
    ///
    /// The provider delivers events as stored: when the event bus encrypts
    /// payloads, feed a subscription made through the bus instead, which
    /// decrypts.
    pub async fn feed_durable(
        &self,
        provider: &dyn EventProvider,
        consumer_name: &str,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<BrokerFeed> {
        let subscription = provider
            .subscribe_durable_with_options(consumer_name, filter_subject, options)
            .await?;
        Ok(self.feed_under(subscription, options.clone()))
    }
}

/// `trigger: error (attempts: N); no dead-letter sink` (or `; dead-letter
/// sink: error`), per failed trigger, for the feed's one warning about an
/// unsettled routing.
fn describe(failures: &[(Arc<super::Entry>, super::Failure)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (entry, failure) in failures {
        if !out.is_empty() {
            out.push_str(" | ");
        }
        // writing to a String cannot fail
        let _ = write!(
            out,
            "{}: {} (attempts: {})",
            entry.trigger.name, failure.error, failure.attempts
        );
        let _ = match &failure.dead_letter_error {
            Some(err) => write!(out, "; dead-letter sink: {err}"),
            None => write!(out, "; no dead-letter sink"),
        };
    }
    out
}

/// Resolves once stop was requested (with its deadline, if any); never if
/// the handle was dropped without stopping.
async fn stopped(stop: &mut watch::Receiver<Option<Stop>>) -> Stop {
    loop {
        if let Some(request) = *stop.borrow_and_update() {
            return request;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits for the routings in progress. Once a stop with a deadline is
/// requested (before or while it waits) and the deadline passes, cuts off
/// those still running and counts them; a deadline holds even if the
/// handle is dropped afterwards (the `stop_within` future dropped before it
/// returned). Returns the deadline, if any.
async fn finish(
    routings: &mut JoinSet<()>,
    stop: &mut watch::Receiver<Option<Stop>>,
    counters: &Counters,
) -> Option<Instant> {
    let mut handle_alive = true;
    loop {
        let deadline = stop
            .borrow_and_update()
            .and_then(|request| request.deadline);
        let passed = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            next = routings.join_next() => if next.is_none() {
                return deadline;
            },
            () = passed => break,
            changed = stop.changed(), if handle_alive => if changed.is_err() {
                // the handle was dropped: no (new) deadline can come any
                // more; one already asked for still holds
                handle_alive = false;
            },
        }
    }
    // Only the routings the abort cut off count: one that ended in the
    // same instant as the deadline (its settlement counted) is still in
    // the set until joined, and aborting it does nothing.
    routings.abort_all();
    let mut cut = 0u64;
    while let Some(done) = routings.join_next().await {
        if done.is_err_and(|err| err.is_cancelled()) {
            cut += 1;
        }
    }
    counters.aborted.fetch_add(cut, Ordering::Relaxed);
    if cut > 0 {
        tracing::warn!(
            aborted = cut,
            "broker feed stopped at its deadline: routings cut off; their events come back \
             after their ack wait"
        );
    }
    stop.borrow().and_then(|request| request.deadline)
}

/// How often a feed waiting for a routing slot has its subscription keep
/// what it fetched ahead alive ([`Subscription::keep_alive`]): well under
/// half of any ack wait in practice.
const FETCHED_AHEAD_CHECK: Duration = Duration::from_millis(100);

/// Runs `work` (a routing) while keeping `pending` ours: `in_progress`
/// when its [`KeepAliveClock`] says, about every half of the ack wait, so
/// that a routing longer than the wait (slow sinks, retries) is not routed
/// again meanwhile. `work` runs on while an `in_progress` is pending.
async fn keep_alive<T>(
    options: &SubscribeOptions,
    pending: &PendingEvent,
    work: impl Future<Output = T>,
) -> T {
    let now = || tokio::time::Instant::now().into_std();
    tokio::pin!(work);
    let mut clock = KeepAliveClock::start(options, pending, now());
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            () = tokio::time::sleep_until(clock.next_check().into()) => {
                if clock.due(options, pending, now()) {
                    // Best effort: the routing goes on while it is sent (a
                    // stalled connection must not stall the routing), and
                    // one still in flight when the routing ends is dropped.
                    tokio::select! {
                        outcome = &mut work => return outcome,
                        sent = pending.in_progress() => if let Err(err) = sent {
                            tracing::debug!(error = %err, "broker feed: in_progress failed");
                        },
                    }
                    clock.sent(options, pending, now());
                }
            }
        }
    }
}

async fn run(
    core: Arc<Core>,
    mut subscription: Box<dyn Subscription>,
    options: SubscribeOptions,
    mut stop: watch::Receiver<Option<Stop>>,
    counters: Arc<Counters>,
) {
    let concurrency = core.config.feed_concurrency;
    let retry_delay = core.config.feed_retry_delay;
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut routings = JoinSet::new();
    loop {
        // finished routings leave their (empty) results behind until joined
        while routings.try_join_next().is_some() {}
        // A slot first, then the event: an event taken before a slot is
        // free would wait with its ack wait running, and come back (routed
        // twice) although every routing is shorter than the ack wait.
        // Meanwhile, what the subscription fetched ahead is kept alive: the
        // feed does not ask for the next event while every slot is busy.
        let acquire = permits.clone().acquire_owned();
        tokio::pin!(acquire);
        let mut fetched_ahead = tokio::time::interval_at(
            tokio::time::Instant::now() + FETCHED_AHEAD_CHECK,
            FETCHED_AHEAD_CHECK,
        );
        fetched_ahead.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let permit = loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break None,
                permit = &mut acquire => break permit.ok(),
                _ = fetched_ahead.tick() => {
                    // a stalled keep-alive (a custom provider's, a stalled
                    // connection) must not hold up a stop nor the next
                    // event once a slot is free: it is dropped
                    tokio::select! {
                        biased;
                        _ = stopped(&mut stop) => break None,
                        permit = &mut acquire => break permit.ok(),
                        kept = subscription.keep_alive() => if let Err(err) = kept {
                            tracing::debug!(error = %err, "keeping the events fetched ahead alive failed");
                        },
                    }
                }
            }
        };
        let Some(permit) = permit else {
            break;
        };
        let next = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            next = subscription.next_manual_ack() => next,
        };
        match next {
            Ok(Some(pending)) => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                let core = core.clone();
                let counters = counters.clone();
                let options = options.clone();
                core.begin();
                // made before the spawn: a routing cut off (aborted) before
                // it first ran still ends what `begin` counted
                let done = PendingGuard(core.clone());
                routings.spawn(async move {
                    let _done = done;
                    let _permit = permit;
                    let routing = core.route_reporting(pending.event(), None);
                    let (result, failures) = keep_alive(&options, &pending, routing).await;
                    // Counted once the settlement returned: a routing cut
                    // off while settling (a stalled ack) is counted as cut
                    // off only, not also as settled.
                    let (settled, counter) = if result.is_settled() {
                        (pending.ack().await, &counters.acked)
                    } else if pending.is_final_delivery() {
                        // a nak would end it as well (see the contract):
                        // say so, and end it explicitly
                        let event = pending.event();
                        tracing::error!(
                            event_id = ?event.id,
                            subject = ?event.subject,
                            attempt = pending.received.num_delivered,
                            failed = %describe(&failures),
                            ?result,
                            "routing not settled on the event's final delivery (max_deliver); \
                             the triggers that failed it never get it"
                        );
                        (pending.term().await, &counters.dropped)
                    } else {
                        // the one line about this routing (the deliveries
                        // logged their attempts at DEBUG only)
                        let event = pending.event();
                        tracing::warn!(
                            event_id = ?event.id,
                            subject = ?event.subject,
                            failed = %describe(&failures),
                            ?result,
                            "routing not settled; the event will be redelivered"
                        );
                        (pending.nak_with_delay(retry_delay).await, &counters.naked)
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Err(err) = settled {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %err, "could not settle a fed event");
                    }
                });
            }
            Ok(None) => break,
            // The consumer was deleted (by another process, an
            // administrator) or the subscription closed: it yields nothing
            // more, as with `Ok(None)`; retrying would spin forever.
            Err(err @ (Error::NotFound { .. } | Error::Closed(_))) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "broker feed: the subscription is gone; the feed ends");
                break;
            }
            // Reports about events (skipped, undecodable, or undecryptable
            // by a bus subscription, which dead-lettered or terminated
            // them): the subscription stays usable, nothing to wait for.
            Err(
                err @ (Error::Lagged { .. } | Error::Undecodable { .. } | Error::Decryption(_)),
            ) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                if let Error::Lagged { missed } = err {
                    counters.lagged.fetch_add(missed, Ordering::Relaxed);
                }
                tracing::warn!(error = %err, "broker feed: subscription reported");
            }
            Err(err) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "broker feed: subscription failed; retrying");
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    _ = tokio::time::sleep(retry_delay) => {}
                }
            }
        }
    }
    let deadline = finish(&mut routings, &mut stop, &counters).await;
    let close = subscription.close();
    let closed = match deadline {
        None => Ok(close.await),
        Some(deadline) => {
            let until = Instant::now().max(deadline) + FEED_CLOSE_GRACE;
            tokio::time::timeout_at(until, close).await
        }
    };
    match closed {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "broker feed: closing the subscription failed");
        }
        Err(_) => tracing::warn!(
            "broker feed: closing the subscription did not finish within its grace after the \
             deadline; the events it fetched ahead come back after their ack wait"
        ),
    }
}

#[cfg(all(test, feature = "bus"))]
mod tests {
    use super::FeedStats;
    use crate::prometheus::exposition_check::parse_exposition;
    use event_bus::metrics::PrometheusLabels;

    #[test]
    fn feed_stats_render_a_valid_exposition_with_and_without_labels() {
        let stats = FeedStats {
            received: 9,
            acked: 7,
            naked: 2,
            dropped: 4,
            errors: 1,
            aborted: 3,
            lagged: 15,
        };
        let samples = parse_exposition(&stats.to_prometheus());
        assert_eq!(samples.len(), 7);
        assert_eq!(samples["a3s_feed_received_total"], 9.0);
        assert_eq!(samples["a3s_feed_acked_total"], 7.0);
        assert_eq!(samples["a3s_feed_naked_total"], 2.0);
        assert_eq!(samples["a3s_feed_dropped_total"], 4.0);
        assert_eq!(samples["a3s_feed_errors_total"], 1.0);
        assert_eq!(samples["a3s_feed_aborted_total"], 3.0);
        assert_eq!(samples["a3s_feed_lagged_total"], 15.0);
        let labels = PrometheusLabels::new([("feed", "a\"b")]).unwrap();
        let labelled = parse_exposition(&stats.to_prometheus_with_labels(&labels));
        assert_eq!(labelled[r#"a3s_feed_aborted_total{feed="a\"b"}"#], 3.0);
        assert_eq!(labelled.len(), 7);
    }
}
