//! The [`Broker`]: triggers, routing, the delivery queue and durable feeds.

mod cutoff;
mod deliver;
mod feed;
mod metrics;
mod queue;

pub use feed::{BrokerFeed, FEED_CLOSE_GRACE, FeedStats};
pub use metrics::{BrokerMetrics, TriggerMetrics};
pub use queue::QueueFullError;

use crate::filter::CompiledFilter;
use crate::index::TriggerIndex;
use crate::sink::EventSink;
use crate::trigger::Trigger;
use crate::warn_limit::WarnLimit;
use async_trait::async_trait;
use cutoff::Cutoff;
use deliver::{DeadLetter, Failure, Outcome};
use event_core::{Error, Event, Result};
use metrics::{Counters, Padded, TriggerCounters};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// What to do with an event when the broker's queue is full.
///
/// Either way the event is never dropped silently: every full-queue
/// encounter counts in [`BrokerMetrics::queue_full`], every refusal in
/// [`BrokerMetrics::rejected`] and as an error to the caller (the event bus
/// counts it as a router error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "policy")]
pub enum QueueFullPolicy {
    /// Wait for room: publishers slow down to the rate the sinks sustain
    /// (backpressure). Nothing is refused.
    ///
    /// A routing's own sink publishing back into the broker (a topic sink
    /// through the bus it is attached to) does not wait: its event waits
    /// for room in a task of its own ([`BrokerMetrics::deferred`]), since
    /// only the routings it would block make room. Likewise across
    /// brokers: a routing's sink publishing into another broker's full
    /// queue waits for room (backpressure), unless that broker's routings
    /// already wait, directly or through other brokers, for room in this
    /// one's queue (with `Wait`, or `WaitFor` until its timeout). Brokers
    /// forwarding into each other in a ring never all wait for each other.
    #[default]
    Wait,
    /// Wait at most this long, then refuse with
    /// [`Error::Timeout`](event_core::Error::Timeout). A routing's sink
    /// waiting so counts as waiting for the brokers whose queues are `Wait`
    /// (see there): their routings forwarding back into its broker later do
    /// not wait for it. One whose wait would close a cycle of routings
    /// already waiting for each other's queues still waits, and is refused
    /// at its timeout unless the cycle clears first.
    WaitFor {
        /// How long to wait for room; in JSON `timeoutMs`, whole
        /// milliseconds rounded up.
        #[serde(rename = "timeoutMs", with = "duration_ms")]
        timeout: Duration,
    },
    /// Refuse at once with [`Error::Provider`](event_core::Error::Provider)
    /// whose source is a [`QueueFullError`]: the publisher never waits; the
    /// refused event is stored by the provider but not routed (feed the
    /// broker from a durable subscription where that is not acceptable).
    /// Through an `EventBus`, `publish_event_stored` tells such a refusal
    /// from a publish that stored nothing.
    Reject,
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Whole milliseconds rounded up (saturating): never a shorter wait,
    /// and a sub-millisecond one never 0.
    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    #[cfg(test)]
    mod tests {
        use super::super::QueueFullPolicy;
        use std::time::Duration;

        /// A `WaitFor` timeout in JSON is whole milliseconds rounded up, as
        /// event-core's durations are: a publisher waits at least as long
        /// as configured, and a sub-millisecond wait does not become 0
        /// (which refuses at once).
        #[test]
        fn wait_for_timeouts_are_written_rounded_up() {
            for (timeout, ms) in [
                (Duration::from_micros(500), 1),
                (Duration::from_micros(1_500), 2),
                (Duration::from_millis(7), 7),
                (Duration::ZERO, 0),
                (Duration::MAX, u64::MAX),
            ] {
                let policy = QueueFullPolicy::WaitFor { timeout };
                let json = serde_json::to_value(policy).unwrap();
                assert_eq!(json["timeoutMs"], ms, "{timeout:?}");
                let back: QueueFullPolicy = serde_json::from_value(json).unwrap();
                let QueueFullPolicy::WaitFor { timeout: read } = back else {
                    panic!("{back:?}");
                };
                assert!(read >= timeout.min(Duration::from_millis(u64::MAX)));
            }
        }
    }
}

/// Broker tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Events the queue holds before [`full_policy`](Self::full_policy)
    /// applies. Default 1024.
    pub queue_capacity: usize,
    /// Events routed concurrently from the queue (each routing delivers to
    /// all its triggers in parallel). Default 64. Concurrent routings keep
    /// no order: a trigger may get an event before one queued ahead of it
    /// (say while that one waits for a retry). 1 routes one event at a time,
    /// in queue order.
    pub workers: usize,
    /// What a full queue does to the publisher. Default [`QueueFullPolicy::Wait`].
    pub full_policy: QueueFullPolicy,
    /// Events a durable feed routes concurrently. Default 16; 1 keeps each
    /// trigger's deliveries in stream order, but for an event whose routing
    /// did not settle, which the subscription redelivers after the events
    /// behind it.
    pub feed_concurrency: usize,
    /// How long a feed waits before an unsettled event is redelivered, and
    /// between retries of a failing subscription. Default 1 s.
    pub feed_retry_delay: Duration,
    /// Events forwarded this many times by topic or HTTP sinks
    /// ([`metadata::HOPS`](crate::metadata::HOPS)) are not routed again,
    /// which ends routing loops; they are counted in
    /// [`BrokerMetrics::hop_limit`] and logged. A routing delivering into
    /// brokers (a broker used as a sink) nests at most this deep (and never
    /// deeper than [`MAX_BROKER_NESTING`]), for the same reason. Default 8.
    pub max_hops: u32,
    /// While events keep arriving, how long the queue's dispatcher sleeps
    /// between two drains instead of being woken by every publish (a
    /// cross-thread wake-up on the publisher's path). Adds at most this much
    /// latency to routing under load; an idle broker takes the next event at
    /// once. Zero: woken by every event. Default 1 ms.
    pub dispatch_linger: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            workers: 64,
            full_policy: QueueFullPolicy::Wait,
            feed_concurrency: 16,
            feed_retry_delay: Duration::from_secs(1),
            max_hops: 8,
            dispatch_linger: Duration::from_millis(1),
        }
    }
}

impl BrokerConfig {
    /// The largest [`queue_capacity`](Self::queue_capacity) the queue can
    /// hold (Tokio's channel limit, `usize::MAX >> 3`).
    pub const MAX_QUEUE_CAPACITY: usize = tokio::sync::Semaphore::MAX_PERMITS;

    /// Checks the values: zero capacity, workers, feed concurrency or
    /// `max_hops` (which would route nothing), a capacity over
    /// [`MAX_QUEUE_CAPACITY`](Self::MAX_QUEUE_CAPACITY) or workers or feed
    /// concurrency over `u32::MAX` is [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        if self.queue_capacity > Self::MAX_QUEUE_CAPACITY {
            return Err(Error::invalid_config(
                "queue_capacity",
                format!("must be at most {}", Self::MAX_QUEUE_CAPACITY),
            ));
        }
        for (field, value) in [
            ("queue_capacity", self.queue_capacity),
            ("workers", self.workers),
            ("feed_concurrency", self.feed_concurrency),
            ("max_hops", self.max_hops as usize),
        ] {
            if value == 0 {
                return Err(Error::invalid_config(field, "must be at least 1"));
            }
        }
        for (field, value) in [
            ("workers", self.workers),
            ("feed_concurrency", self.feed_concurrency),
        ] {
            if u32::try_from(value).is_err() {
                return Err(Error::invalid_config(field, "must fit in a u32"));
            }
        }
        Ok(())
    }
}

/// What [`Broker::shutdown_within`] left undone, as the consumer runner's
/// `ConsumerReport` says what its shutdown aborted (`aborted` there too).
///
/// Unlike a consumer's, nothing here comes back by itself: the broker's
/// queue is in memory, so an event it did not route is lost to its
/// triggers (the provider still stores it). The same counts are in
/// [`BrokerMetrics`] (`shutdown_unrouted`, `shutdown_aborted`,
/// `shutdown_retries_cut`), which also count the losses of a dispatcher
/// whose Tokio runtime was dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerShutdownReport {
    /// Queued events no routing had started at the deadline (and forwards
    /// still waiting for room in a full queue): discarded, never routed.
    pub unrouted: u64,
    /// Routings in progress at the deadline, cancelled: an attempt, a
    /// retry's wait that ended before the deadline, or a dead-letter
    /// delivery. Some of an event's triggers may have had it, others not.
    pub aborted: u64,
    /// Deliveries not retried because the wait before the retry (backoff,
    /// or `Retry-After`) would have ended after the deadline: failed then
    /// and handed to the trigger's dead-letter sink, if it has one (see
    /// [`BrokerMetrics::dead_lettered`]). Not a loss by itself.
    pub retries_cut: u64,
}

impl BrokerShutdownReport {
    /// Whether everything queued was routed to its end (`unrouted` and
    /// `aborted` are zero).
    pub fn is_complete(&self) -> bool {
        self.unrouted == 0 && self.aborted == 0
    }
}

/// What routing one event did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteResult {
    /// Triggers whose filter matched.
    pub matched: usize,
    /// Deliveries that succeeded.
    pub delivered: usize,
    /// Deliveries that failed (including dead-lettered ones): every attempt
    /// failed, or an answer a retry cannot change (an HTTP `400`, say)
    /// ended the delivery before its retries were spent.
    pub failed: usize,
    /// Failed deliveries the dead-letter sink accepted.
    pub dead_lettered: usize,
}

impl RouteResult {
    /// Whether every matched trigger delivered or dead-lettered the event
    /// (nothing would be lost by acknowledging it).
    pub fn is_settled(&self) -> bool {
        self.delivered + self.dead_lettered == self.matched
    }
}

struct Entry {
    trigger: Trigger,
    filter: CompiledFilter,
    /// Rate limit of this trigger's "lost delivery" warnings (kept by a
    /// replacement of the trigger, as are the two below).
    losses: Arc<WarnLimit>,
    /// Rate limit of this trigger's "dead-lettered" warnings.
    dead_letters: Arc<WarnLimit>,
    /// This trigger's counters (on cache lines of their own: deliveries
    /// write them while routings read the filter next to them).
    counters: Arc<Padded<TriggerCounters>>,
}

impl Entry {
    /// `trigger` validated and compiled: its name, filter
    /// ([`Error::InvalidSubject`]) and delivery spec
    /// ([`Error::InvalidConfig`]).
    fn new(trigger: Trigger) -> Result<Self> {
        if trigger.name.is_empty() {
            return Err(Error::invalid_config("trigger.name", "must not be empty"));
        }
        let filter = trigger.filter.compile()?;
        trigger.delivery.validate()?;
        Ok(Self {
            trigger,
            filter,
            losses: Arc::default(),
            dead_letters: Arc::default(),
            counters: Arc::default(),
        })
    }

    /// Takes over `old`'s counters and warning rate limits (the trigger it
    /// replaces).
    fn carrying_over(mut self, old: &Self) -> Self {
        self.losses = old.losses.clone();
        self.dead_letters = old.dead_letters.clone();
        self.counters = old.counters.clone();
        self
    }
}

/// An immutable trigger set; routing holds one while delivering, so changes
/// (which build a new one) never wait for deliveries.
#[derive(Default)]
struct Snapshot {
    entries: Vec<Arc<Entry>>,
    index: TriggerIndex,
    /// Each trigger's position in `entries`, by name: a change checks a
    /// name without scanning the triggers.
    positions: HashMap<String, usize>,
}

impl Snapshot {
    fn build(entries: Vec<Arc<Entry>>) -> Self {
        let index = TriggerIndex::build(entries.iter().map(|e| &e.filter));
        let positions = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.trigger.name.clone(), i))
            .collect();
        Self {
            entries,
            index,
            positions,
        }
    }

    fn matching(&self, event: &Event) -> Vec<&Arc<Entry>> {
        let mut ids = Vec::new();
        self.matching_ids(event, &mut ids);
        ids.into_iter()
            .filter_map(|id| self.entries.get(id))
            .collect()
    }

    /// Positions in `entries` of the triggers `event` matches, ascending
    /// (one allocation: the candidates are filtered in place).
    fn matching_ids(&self, event: &Event, ids: &mut Vec<usize>) {
        self.index.candidates(event, ids);
        ids.retain(|&id| {
            self.entries
                .get(id)
                .is_some_and(|e| e.filter.matches(event))
        });
    }
}

/// Shared by the broker handles, the queue dispatcher and feeds.
struct Core {
    config: BrokerConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serialises trigger changes (readers never take it).
    writer: Mutex<()>,
    /// Trigger sets built, ever (tests check a batch builds one).
    #[cfg(test)]
    builds: AtomicUsize,
    counters: Counters,
    /// Events accepted (queue or feed), ever. Pending events are
    /// `accepted - settled`: two counters on their own cache lines, so that
    /// publishers (who bump `accepted`) and routing tasks on other threads
    /// (who bump `settled`) do not pull one shared line back and forth.
    accepted: Padded<AtomicUsize>,
    /// Accepted events fully routed (or never queued after all).
    settled: Padded<AtomicUsize>,
    /// Events the dispatcher took off the queue, ever: the queue holds
    /// `counters.enqueued - dequeued` (also while a shutdown drains it).
    dequeued: Padded<std::sync::atomic::AtomicU64>,
    /// [`Broker::wait_idle`] callers waiting now; `end` notifies only then.
    idle_waiters: Padded<AtomicUsize>,
    idle: Notify,
    /// Forwards waiting for room in tasks of their own (see
    /// `QueueFullPolicy::Wait`), and the signal that the last one ended: a
    /// shutdown at its deadline waits for them to count themselves.
    deferring: AtomicUsize,
    deferring_done: Notify,
    /// The deadline of [`Broker::shutdown_within`], for queued routings.
    cutoff: Cutoff,
    /// Rate limit of the "not routed: hop limit" warnings: a sender can set
    /// the hop count (it crosses HTTP with the event), so one line each
    /// would let it flood the log.
    hop_limits: WarnLimit,
}

impl Core {
    fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }

    /// Counts an event not routed for the hop limit
    /// ([`BrokerMetrics::hop_limit`]) and logs it, at `WARN` once per
    /// [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) (with the number
    /// logged at `DEBUG` since), at `DEBUG` otherwise. `why` says which
    /// limit, `count` the hops or the nesting depth reached.
    fn count_hop_limit(&self, event: &Event, why: &str, count: u32) {
        Counters::add(&self.counters.hop_limit, 1);
        match self.hop_limits.record(tokio::time::Instant::now()) {
            Some(quiet) => tracing::warn!(
                event_id = ?event.id, subject = ?event.subject, count, quiet,
                "event {why} (a routing loop, or a sender that set the hop count); not \
                 routed (further ones are logged at DEBUG for a while, counted in hop_limit)"
            ),
            None => tracing::debug!(
                event_id = ?event.id, subject = ?event.subject, count,
                "event {why}; not routed"
            ),
        }
    }

    /// Routes `event` for a caller that does not deliver it again: a
    /// failed delivery is lost to its trigger, and logged so (see
    /// [`log_loss`]).
    async fn route(&self, event: &Event) -> RouteResult {
        self.route_logging(event, None).await
    }

    /// [`route`](Self::route) for a queued event: no retry is made past the
    /// deadline of [`Broker::shutdown_within`].
    async fn route_queued(&self, event: &Event) -> RouteResult {
        self.route_logging(event, Some(&self.cutoff)).await
    }

    async fn route_logging(&self, event: &Event, cutoff: Option<&Cutoff>) -> RouteResult {
        let (result, failures) = self.route_reporting(event, cutoff).await;
        for (entry, failure) in &failures {
            log_loss(entry, event, failure);
        }
        result
    }

    /// Routes `event`; returns what happened and, per trigger whose
    /// delivery failed without a dead-letter sink taking it, why. Logs
    /// nothing about those failures above `DEBUG`: the caller does, once.
    /// With a `cutoff`, retries stop at its deadline (see
    /// [`deliver::deliver`]).
    async fn route_reporting(
        &self,
        event: &Event,
        cutoff: Option<&Cutoff>,
    ) -> (RouteResult, Vec<(Arc<Entry>, Failure)>) {
        let hops = event
            .metadata
            .get(crate::metadata::HOPS)
            .and_then(|h| h.parse::<u32>().ok())
            .unwrap_or(0);
        if hops >= self.config.max_hops {
            self.count_hop_limit(event, "forwarded too many times", hops);
            return (RouteResult::default(), Vec::new());
        }
        let snapshot = self.current();
        let mut matched = Vec::new();
        snapshot.matching_ids(event, &mut matched);
        Counters::add(&self.counters.routed, 1);
        Counters::add(&self.counters.matched, matched.len() as u64);
        let mut result = RouteResult {
            matched: matched.len(),
            ..RouteResult::default()
        };
        let mut failures = Vec::new();
        let mut tally = |entry: &Arc<Entry>, outcome| match outcome {
            Outcome::Delivered => result.delivered += 1,
            Outcome::DeadLettered(dead_letter) => {
                result.failed += 1;
                result.dead_lettered += 1;
                log_dead_letter(entry, event, &dead_letter);
            }
            Outcome::Failed(failure) => {
                result.failed += 1;
                failures.push((Arc::clone(entry), failure));
            }
        };
        let mut entries = matched.iter().filter_map(|&id| snapshot.entries.get(id));
        if let [_] = matched.as_slice()
            && let Some(entry) = entries.next()
        {
            // One trigger (the common case): no `join_all` and its allocations.
            let outcome = deliver::deliver(
                &entry.trigger,
                event,
                deliver::Tally::new(&self.counters, &entry.counters),
                cutoff,
            )
            .await;
            tally(entry, outcome);
        } else {
            let outcomes = futures_util::future::join_all(entries.map(|e| async move {
                let tally = deliver::Tally::new(&self.counters, &e.counters);
                (e, deliver::deliver(&e.trigger, event, tally, cutoff).await)
            }))
            .await;
            for (entry, outcome) in outcomes {
                tally(entry, outcome);
            }
        }
        (result, failures)
    }

    fn begin(&self) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        self.settled.fetch_add(1, Ordering::SeqCst);
        // SeqCst pairs with `wait_idle`: either it sees this event settled,
        // or this sees it waiting.
        if self.idle_waiters.load(Ordering::SeqCst) > 0 && self.pending() == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Events in the queue now: accepted into it and not yet taken by the
    /// dispatcher.
    fn queue_depth(&self) -> usize {
        // `enqueued` is bumped just after the send, so it may trail
        // `dequeued` for a moment.
        let dequeued = self.dequeued.load(Ordering::Relaxed);
        let enqueued = self.counters.enqueued.load(Ordering::Relaxed);
        usize::try_from(enqueued.saturating_sub(dequeued)).unwrap_or(usize::MAX)
    }

    /// Events accepted and not yet settled. Zero means that at the moment
    /// `accepted` was read, every accepted event was settled (`settled` is
    /// read first and never exceeds `accepted`).
    fn pending(&self) -> usize {
        let settled = self.settled.load(Ordering::SeqCst);
        let accepted = self.accepted.load(Ordering::SeqCst);
        accepted.saturating_sub(settled)
    }
}

/// Logs a delivery lost to `entry`'s trigger (every attempt failed and no
/// dead-letter sink took it). A dead-letter sink's refusal is an `ERROR`
/// each time. Without a dead-letter sink, the trigger's first loss is a
/// `WARN`, later ones `DEBUG` until [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) has passed since
/// that warning; the next `WARN` then counts them (`quiet_losses`). Every
/// loss counts in [`BrokerMetrics::no_dead_letter_sink`].
fn log_loss(entry: &Entry, event: &Event, failure: &Failure) {
    let trigger = &entry.trigger.name;
    let Failure {
        attempts,
        error,
        dead_letter_error,
    } = failure;
    if let Some(dls_error) = dead_letter_error {
        tracing::error!(
            trigger = %trigger, event_id = ?event.id, subject = ?event.subject,
            error = %dls_error, delivery_error = %error,
            "dead-letter sink refused a failed delivery"
        );
        return;
    }
    match entry.losses.record(tokio::time::Instant::now()) {
        Some(quiet_losses) => tracing::warn!(
            trigger = %trigger, event_id = ?event.id, subject = ?event.subject,
            attempts, error = %error, quiet_losses,
            "delivery failed and the trigger has no dead-letter sink; the event is lost to \
             it (further losses of this trigger are logged at DEBUG for a while, counted in \
             no_dead_letter_sink)"
        ),
        None => tracing::debug!(
            trigger = %trigger, event_id = ?event.id, subject = ?event.subject,
            attempts, error = %error,
            "delivery failed and the trigger has no dead-letter sink"
        ),
    }
}

/// Logs a delivery to `entry`'s trigger that failed for good and went to
/// its dead-letter sink: the event is safe there (no `ERROR`), but the
/// trigger's sink failed it, which an operator has to act on (a `WARN`).
/// The trigger's first dead letter is a `WARN`, later ones `DEBUG` until
/// [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) has passed since that warning; the next `WARN`
/// then counts them (`quiet_dead_letters`). Every one counts in
/// [`BrokerMetrics::dead_lettered`]. Logged wherever the event came from
/// (a feed acknowledges it: its dead letter is final there too).
fn log_dead_letter(entry: &Entry, event: &Event, dead_letter: &DeadLetter) {
    let trigger = &entry.trigger.name;
    let DeadLetter { attempts, error } = dead_letter;
    match entry.dead_letters.record(tokio::time::Instant::now()) {
        Some(quiet_dead_letters) => tracing::warn!(
            trigger = %trigger, event_id = ?event.id, subject = ?event.subject,
            attempts, error = %error, quiet_dead_letters,
            "delivery failed; the event was dead-lettered to the trigger's dead-letter sink \
             (further dead letters of this trigger are logged at DEBUG for a while, counted in \
             dead_lettered)"
        ),
        None => tracing::debug!(
            trigger = %trigger, event_id = ?event.id, subject = ?event.subject,
            attempts, error = %error,
            "delivery failed; the event was dead-lettered to the trigger's dead-letter sink"
        ),
    }
}

/// Ends one pending routing when dropped (also on panic or cancellation).
struct PendingGuard(Arc<Core>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Routes events to triggers, Knative style.
///
/// - [`add_trigger`](Self::add_trigger) / [`remove_trigger`](Self::remove_trigger)
///   swap in a new immutable trigger set: they never wait for deliveries in
///   progress, and a routing in progress finishes with the set it started
///   with. Each change builds the whole set: change many triggers with
///   [`add_triggers`](Self::add_triggers) /
///   [`remove_triggers`](Self::remove_triggers), which build it once.
/// - [`route`](Self::route) delivers one event to every matching trigger in
///   parallel, each per its [`DeliverySpec`](crate::DeliverySpec), and
///   reports what happened.
/// - As an [`EventRouter`](event_core::EventRouter) (attach it to an
///   `EventBus`) or through [`enqueue`](Self::enqueue), events go into a
///   bounded queue drained by up to [`BrokerConfig::workers`] concurrent
///   routings, off the publisher's path; a full queue follows
///   [`QueueFullPolicy`].
/// - [`feed`](Self::feed) routes a durable subscription, acknowledging each
///   event once every matching trigger delivered or dead-lettered it.
///
/// Triggers are indexed (by exact type, subject tokens, source and
/// attributes), so an event is checked only against triggers that can match.
///
/// Failed deliveries are logged so that a broken sink does not flood the
/// log: attempts at `DEBUG` (naming the event id, the trigger and the
/// attempt); a dead-lettered delivery (every attempt failed and the
/// dead-letter sink took it) as one `WARN` per trigger and
/// [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) (the others at `DEBUG`; the next `WARN` says how many
/// in `quiet_dead_letters`), every one counted in
/// [`BrokerMetrics::dead_lettered`], also for a [feed](Self::feed); a
/// delivery lost for good (queued or
/// [`route`](Self::route)d events: every attempt failed and no dead-letter
/// sink took it) as an `ERROR` when the dead-letter sink refused it, and,
/// for a trigger without a dead-letter sink, as one `WARN` per trigger and
/// [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) (the others at `DEBUG`; the next `WARN` says how
/// many in `quiet_losses`), every one counted in
/// [`BrokerMetrics::no_dead_letter_sink`]. A [feed](Self::feed) logs one
/// `WARN` per routing it redelivers instead (see [`BrokerFeed`]).
///
/// Routing needs a Tokio runtime with the time driver enabled (delivery
/// timeouts and backoff use Tokio's clock, so a paused test clock drives
/// them). `Broker` is a cheap handle (`Clone` shares the broker). The queue's
/// dispatcher stops when [`shutdown`](Self::shutdown) is called or every
/// handle is dropped, after routing what was queued. It runs on the runtime
/// of the first [`enqueue`](Self::enqueue); if that runtime is dropped, the
/// events it was routing or held queued are lost (one `ERROR` counts both,
/// as `shutdown_aborted` and `shutdown_unrouted` in the
/// [metrics](Self::metrics) do; no longer pending) and the next `enqueue` starts a dispatcher on its own
/// runtime (one waiting for room in the full queue then does too, and is
/// queued there).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
/// use event_core::Event;
/// use event_routing::{Broker, CollectorSink, Trigger, TriggerFilter};
/// use std::sync::Arc;
///
/// let broker = Broker::new();
/// let orders = Arc::new(CollectorSink::new("orders"));
/// broker.add_trigger(Trigger::new(
///     "orders",
///     TriggerFilter::by_subject("events.orders.>"),
///     orders.clone(),
/// ))?;
///
/// let event = Event::new("events.orders.created", "orders", "new", "shop", serde_json::json!({}));
/// let result = broker.route(&event).await;
/// assert_eq!((result.matched, result.delivered), (1, 1));
/// assert_eq!(orders.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    queue: queue::Queue,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.inner.core.config)
            .field("triggers", &self.trigger_names())
            .finish_non_exhaustive()
    }
}

impl Default for Broker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker {
    /// A broker with the default [`BrokerConfig`].
    pub fn new() -> Self {
        Self::build(BrokerConfig::default())
    }

    /// A broker with `config` ([`Error::InvalidConfig`] if it is unusable).
    pub fn with_config(config: BrokerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: BrokerConfig) -> Self {
        let core = Arc::new(Core {
            config,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            writer: Mutex::new(()),
            #[cfg(test)]
            builds: AtomicUsize::new(0),
            counters: Counters::default(),
            accepted: Padded(AtomicUsize::new(0)),
            settled: Padded(AtomicUsize::new(0)),
            dequeued: Padded(std::sync::atomic::AtomicU64::new(0)),
            idle_waiters: Padded(AtomicUsize::new(0)),
            idle: Notify::new(),
            deferring: AtomicUsize::new(0),
            deferring_done: Notify::new(),
            cutoff: Cutoff::default(),
            hop_limits: WarnLimit::default(),
        });
        Self {
            inner: Arc::new(Inner {
                core,
                queue: queue::Queue::default(),
            }),
        }
    }

    /// The broker's configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.core.config
    }

    /// Swaps in the trigger set `f` makes of the current one, unless `f`
    /// fails or returns `None` (nothing to change: no set is built).
    fn change(&self, f: impl FnOnce(&Snapshot) -> Result<Option<Vec<Arc<Entry>>>>) -> Result<()> {
        let core = &self.inner.core;
        let _writer = core.writer.lock();
        if let Some(next) = f(&core.current())? {
            #[cfg(test)]
            core.builds.fetch_add(1, Ordering::Relaxed);
            *core.snapshot.write() = Arc::new(Snapshot::build(next));
        }
        Ok(())
    }

    /// Adds `trigger`. Its filter and delivery spec are validated
    /// ([`Error::InvalidSubject`] / [`Error::InvalidConfig`]); a trigger with
    /// the same name already registered is [`Error::Conflict`].
    ///
    /// Each change builds a new trigger set and index (routings in progress
    /// keep theirs), which takes time in proportion to the triggers
    /// registered: adding triggers one by one takes time in proportion to
    /// the square of their number (seconds for thousands). Add many at once
    /// with [`add_triggers`](Self::add_triggers), which builds once.
    pub fn add_trigger(&self, trigger: Trigger) -> Result<()> {
        self.add_triggers([trigger])
    }

    /// Adds `triggers` in one step, all or none: each is validated as
    /// [`add_trigger`](Self::add_trigger) validates, and a name already
    /// registered or given twice in `triggers` is [`Error::Conflict`]; on
    /// the first error nothing is added. The trigger set is built once, so
    /// this takes time in proportion to the triggers registered in all,
    /// whatever their number (load a configuration's triggers this way).
    /// A routing sees all of them or none. They keep their order in
    /// `triggers`, after those registered before.
    ///
    /// ```
    /// # fn main() -> event_core::Result<()> {
    /// use event_routing::{Broker, CollectorSink, Trigger, TriggerFilter};
    /// use std::sync::Arc;
    ///
    /// let broker = Broker::new();
    /// let sink = Arc::new(CollectorSink::new("tenants"));
    /// broker.add_triggers((0..1_000).map(|i| {
    ///     Trigger::new(format!("tenant-{i}"), TriggerFilter::by_source(format!("tenant-{i}")), sink.clone())
    /// }))?;
    /// assert_eq!(broker.trigger_count(), 1_000);
    /// # Ok(()) }
    /// ```
    pub fn add_triggers(&self, triggers: impl IntoIterator<Item = Trigger>) -> Result<()> {
        let added = triggers
            .into_iter()
            .map(|t| Entry::new(t).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        if added.is_empty() {
            return Ok(());
        }
        let conflict = |name: &str, reason: &str| Error::Conflict {
            resource: format!("trigger `{name}`"),
            reason: reason.to_owned(),
        };
        let mut batch = HashSet::with_capacity(added.len());
        if let Some(twice) = added.iter().find(|e| !batch.insert(&e.trigger.name)) {
            return Err(conflict(
                &twice.trigger.name,
                "the triggers to add name it more than once",
            ));
        }
        drop(batch);
        self.change(|current| {
            let registered = |e: &&Arc<Entry>| current.positions.contains_key(&e.trigger.name);
            if let Some(there) = added.iter().find(registered) {
                return Err(conflict(
                    &there.trigger.name,
                    "a trigger with this name exists; replace it with replace_trigger",
                ));
            }
            let mut next = Vec::with_capacity(current.entries.len() + added.len());
            next.extend_from_slice(&current.entries);
            next.extend(added);
            Ok(Some(next))
        })
    }

    /// Replaces the trigger named as `trigger` in one step, or adds it if
    /// there is none; returns whether one was replaced. Validated as
    /// [`add_trigger`](Self::add_trigger) validates (an invalid trigger
    /// leaves the old one in place).
    ///
    /// Each event is routed to the old trigger or to the new one, never to
    /// neither: a routing that started before the call uses the old one
    /// (its deliveries finish with the old sink and spec), every routing
    /// after it the new one. A [`remove_trigger`](Self::remove_trigger)
    /// followed by an `add_trigger` leaves a gap in which events routed
    /// meanwhile miss the trigger. The trigger keeps its place in the order,
    /// its counters ([`BrokerMetrics::by_trigger`]) and its warnings' rate
    /// limits.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
    /// use event_routing::{Broker, CollectorSink, Trigger, TriggerFilter};
    /// use std::sync::Arc;
    ///
    /// let broker = Broker::new();
    /// let v1 = Arc::new(CollectorSink::new("v1"));
    /// broker.add_trigger(Trigger::new("audit", TriggerFilter::all(), v1))?;
    /// // a configuration reload: the new sink takes over, no event missed
    /// let v2 = Arc::new(CollectorSink::new("v2"));
    /// let replaced = broker.replace_trigger(Trigger::new("audit", TriggerFilter::all(), v2))?;
    /// assert!(replaced);
    /// assert_eq!(broker.trigger_names(), ["audit"]);
    /// # Ok(()) }
    /// ```
    pub fn replace_trigger(&self, trigger: Trigger) -> Result<bool> {
        let entry = Entry::new(trigger)?;
        let mut replaced = false;
        self.change(|current| {
            let mut next = current.entries.clone();
            match current
                .positions
                .get(&entry.trigger.name)
                .and_then(|&i| next.get_mut(i))
            {
                Some(slot) => {
                    *slot = Arc::new(entry.carrying_over(slot));
                    replaced = true;
                }
                None => next.push(Arc::new(entry)),
            }
            Ok(Some(next))
        })?;
        Ok(replaced)
    }

    /// Removes the trigger named `name`; returns whether there was one.
    /// Deliveries already started for it finish. To change a trigger, use
    /// [`replace_trigger`](Self::replace_trigger), which leaves no gap. To
    /// remove many, use [`remove_triggers`](Self::remove_triggers), which
    /// builds the trigger set once (see [`add_trigger`](Self::add_trigger)).
    pub fn remove_trigger(&self, name: &str) -> bool {
        self.remove_triggers([name]) == 1
    }

    /// Removes the triggers named in `names` in one step (a routing sees
    /// all of them or none); returns how many there were. Names not
    /// registered (or given twice) are skipped. Builds the trigger set once,
    /// and not at all when none of the names is registered.
    pub fn remove_triggers<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) -> usize {
        let mut removed = HashSet::new();
        let _ = self.change(|current| {
            removed.extend(
                names
                    .into_iter()
                    .filter_map(|n| current.positions.get_key_value(n.as_ref()))
                    .map(|(name, _)| name.clone()),
            );
            if removed.is_empty() {
                return Ok(None);
            }
            Ok(Some(
                current
                    .entries
                    .iter()
                    .filter(|e| !removed.contains(&e.trigger.name))
                    .cloned()
                    .collect(),
            ))
        });
        removed.len()
    }

    /// How many triggers are registered.
    pub fn trigger_count(&self) -> usize {
        self.inner.core.current().entries.len()
    }

    /// The registered triggers' names, in the order they were added.
    pub fn trigger_names(&self) -> Vec<String> {
        self.inner
            .core
            .current()
            .entries
            .iter()
            .map(|e| e.trigger.name.clone())
            .collect()
    }

    /// The names of the triggers `event` matches, in the order they were
    /// added (no delivery).
    pub fn matching_triggers(&self, event: &Event) -> Vec<String> {
        self.inner
            .core
            .current()
            .matching(event)
            .into_iter()
            .map(|e| e.trigger.name.clone())
            .collect()
    }

    /// Delivers `event` to every matching trigger, in parallel, each per its
    /// delivery spec, and waits for all of them.
    pub async fn route(&self, event: &Event) -> RouteResult {
        self.inner.core.route(event).await
    }

    /// Hands `event` to the queue for routing by the workers; returns once it
    /// is queued (see [`QueueFullPolicy`]). After [`shutdown`](Self::shutdown)
    /// it is [`Error::Closed`].
    pub async fn enqueue(&self, event: Arc<Event>) -> Result<()> {
        self.inner.queue.enqueue(&self.inner.core, event).await
    }

    /// Waits until every queued or fed event has been routed (deliveries,
    /// retries and dead-lettering included).
    pub async fn wait_idle(&self) {
        struct Waiting<'a>(&'a Core);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.idle_waiters.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let core = &*self.inner.core;
        core.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(core);
        loop {
            let notified = core.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if core.pending() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Stops accepting queued events, routes those already queued and waits
    /// for them. Idempotent: every call waits until they are routed, also one
    /// made while another is waiting or after one was given up on.
    /// [`route`](Self::route) keeps working.
    ///
    /// There is no time limit: routing takes what the deliveries take, with
    /// their retries, per-attempt timeouts and backoff (an endpoint
    /// answering `503` with a long `Retry-After` holds each retry for up to
    /// [`retry_after_max`](crate::DeliverySpec::retry_after_max), 30 s by
    /// default), one round of [`workers`](BrokerConfig::workers) after
    /// another. Under an orchestrator's grace period use
    /// [`shutdown_within`](Self::shutdown_within), which stops at a deadline
    /// and says what it left. Wrapping this in `tokio::time::timeout` also
    /// bounds the wait, but not the routing: it goes on in the background,
    /// and what it has not done when the process exits is lost without a
    /// count. If a `shutdown_within` deadline is set (by an earlier or
    /// concurrent call), this returns at that deadline too.
    pub async fn shutdown(&self) {
        self.inner.queue.shutdown().await;
    }

    /// [`shutdown`](Self::shutdown) with a time limit: stops accepting
    /// queued events, goes on routing those already queued (as many at a
    /// time as there are [`workers`](BrokerConfig::workers)) until
    /// `deadline` has passed, then cancels the routings in progress,
    /// discards what is still queued and returns what it left undone.
    /// Returns as soon as everything is routed, at the deadline otherwise.
    ///
    /// Until the deadline a queued event is routed as usual, but for its
    /// retries: a retry whose wait (the backoff, or an HTTP `Retry-After`
    /// up to [`retry_after_max`](crate::DeliverySpec::retry_after_max))
    /// would end after the deadline is not made. The delivery fails then,
    /// with the attempts made so far, and goes to the trigger's dead-letter
    /// sink if it has one (counted in
    /// [`BrokerShutdownReport::retries_cut`]), instead of holding the
    /// shutdown for a wait it would not see the end of.
    ///
    /// What is left undone is lost to the triggers (the provider still
    /// stores the events; a [feed](Self::feed) would redeliver its own):
    /// [`BrokerShutdownReport`] counts it, and so do the
    /// [`metrics`](Self::metrics) (`shutdown_unrouted`, `shutdown_aborted`,
    /// `shutdown_retries_cut`); a `WARN` says it too. A cancelled routing may
    /// have delivered to some triggers and not to others, and a delivery
    /// cancelled mid-request may have reached its sink.
    ///
    /// Feeds, [`route`](Self::route) and the broker used as a sink are not
    /// affected: stop feeds first, with their own deadline
    /// ([`BrokerFeed::stop_within`]). Idempotent, like
    /// `shutdown`: a later call (or one made while another waits) waits for
    /// the same end, the earlier of the deadlines given; every call returns
    /// the broker's totals, the same report. A routing that blocks its
    /// thread (no async sink should) delays the return until it yields.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use event_routing::Broker;
    /// use std::time::Duration;
    ///
    /// let broker = Broker::new();
    /// // ... on SIGTERM, inside the orchestrator's grace period:
    /// let report = broker.shutdown_within(Duration::from_secs(20)).await;
    /// if !report.is_complete() {
    ///     eprintln!("{} events not routed, {} routings cut off", report.unrouted, report.aborted);
    /// }
    /// # }
    /// ```
    pub async fn shutdown_within(&self, deadline: Duration) -> BrokerShutdownReport {
        let core = &self.inner.core;
        core.cutoff
            .set(cutoff::after(tokio::time::Instant::now(), deadline));
        self.inner.queue.shutdown().await;
        let counters = &core.counters;
        let read = |c: &metrics::Counter| c.load(Ordering::Relaxed);
        BrokerShutdownReport {
            unrouted: read(&counters.shutdown_unrouted),
            aborted: read(&counters.shutdown_aborted),
            retries_cut: read(&counters.shutdown_retries_cut),
        }
    }

    /// Attaches the broker to `bus`: every event the bus publishes (the
    /// plaintext, after the provider stored it) is [queued](Self::enqueue)
    /// for routing. Replaces a router the bus had.
    #[cfg(feature = "bus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bus")))]
    pub fn attach(&self, bus: &event_bus::EventBus) {
        bus.set_router(Arc::new(self.clone()));
    }

    /// The broker's counters now, with each registered trigger's
    /// ([`BrokerMetrics::by_trigger`]).
    pub fn metrics(&self) -> BrokerMetrics {
        let core = &self.inner.core;
        let by_trigger = core
            .current()
            .entries
            .iter()
            .map(|e| e.counters.snapshot(&e.trigger.name))
            .collect();
        core.counters
            .snapshot(core.queue_depth(), core.pending(), by_trigger)
    }
}

#[async_trait]
impl event_core::EventRouter for Broker {
    async fn route_published(&self, event: Arc<Event>, _sequence: u64) -> Result<()> {
        self.enqueue(event).await
    }
}

tokio::task_local! {
    /// How many brokers-as-sinks the current routing is nested in.
    static NESTING: u32;
}

/// Deepest nesting of brokers delivering into brokers, whatever
/// [`BrokerConfig::max_hops`] says: each level is a nested poll on the
/// task's stack, so a cycle under a very large `max_hops` would otherwise
/// overflow it and abort the process.
pub const MAX_BROKER_NESTING: u32 = 32;

/// A broker is also a sink: delivering to it routes the event (waiting for
/// the deliveries) and fails unless every matching trigger delivered or
/// dead-lettered it. Point a source or another broker's trigger at it.
///
/// Each broker a routing delivers into counts as a hop, as a topic sink's
/// forward does: brokers delivering to each other (or to themselves) in a
/// cycle route an event at most [`max_hops`](BrokerConfig::max_hops) times in
/// all, and never more than [`MAX_BROKER_NESTING`] brokers deep; the
/// delivery that would route it once more does not, is counted in
/// [`BrokerMetrics::hop_limit`], logged, and succeeds.
#[async_trait]
impl EventSink for Broker {
    async fn deliver(&self, event: &Event) -> Result<()> {
        let depth = NESTING.try_with(|d| *d).unwrap_or(0).saturating_add(1);
        let core = &self.inner.core;
        if depth >= core.config.max_hops.min(MAX_BROKER_NESTING) {
            core.count_hop_limit(event, "delivered through too many brokers", depth);
            return Ok(());
        }
        let result = NESTING.scope(depth, self.route(event)).await;
        if result.is_settled() {
            Ok(())
        } else {
            Err(Error::provider(
                "broker",
                format!(
                    "{} of {} matching triggers failed without dead-lettering",
                    result.matched - result.delivered - result.dead_lettered,
                    result.matched
                ),
            ))
        }
    }

    fn name(&self) -> &str {
        "broker"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CollectorSink, TriggerFilter};

    #[test]
    fn batch_changes_build_the_trigger_set_once_and_no_ops_not_at_all() {
        let broker = Broker::new();
        let sink = Arc::new(CollectorSink::new("c"));
        let builds = || broker.inner.core.builds.load(Ordering::Relaxed);
        let trigger = |i: usize| {
            Trigger::new(
                format!("t{i}"),
                TriggerFilter::by_type(format!("type{i}")),
                sink.clone(),
            )
        };
        broker.add_triggers((0..500).map(trigger)).unwrap();
        assert_eq!((broker.trigger_count(), builds()), (500, 1));
        // Refused batches and removals of unknown names build nothing.
        assert!(broker.add_triggers([trigger(500), trigger(0)]).is_err());
        assert!(broker.add_trigger(trigger(7)).is_err());
        assert_eq!(broker.remove_triggers(["x", "y"]), 0);
        assert!(!broker.remove_trigger("x"));
        assert_eq!(builds(), 1);
        let names: Vec<_> = (0..250).map(|i| format!("t{i}")).collect();
        assert_eq!(broker.remove_triggers(&names), 250);
        assert_eq!((broker.trigger_count(), builds()), (250, 2));
    }
}
