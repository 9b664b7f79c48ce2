//! The provider contract: [`EventProvider`], [`Subscription`], [`PendingEvent`].
//!
//! The module also re-exports the types those traits hand back
//! ([`ProviderInfo`], [`SubscriptionStream`]) and [`KeepAliveClock`] (when
//! a holder of a [`PendingEvent`] calls `in_progress`), so it holds
//! everything a provider implements or returns, as the umbrella crate's
//! `a3s_event::provider` does: code written against `a3s_event::provider::X`
//! compiles against `event_core::provider::X` for every such `X`.
//!
//! ```
//! // the imports of `examples/custom_provider.rs`, written against event-core
//! // alone, as docs/custom-providers.md tells a provider crate to write them
//! use event_core::provider::{
//!     Acker, EventProvider, PendingEvent, ProviderInfo, Subscription, SubscriptionStream,
//! };
//! // and the rest of what `a3s_event::provider` holds (not a module)
//! use event_core::provider::{KeepAliveClock, LONGEST_WAIT, LiveAckWait, closed_error};
//! use event_core::subject::{SubjectPattern, validate_publish_subject};
//! use event_core::types::{
//!     DeliverPolicy, Event, PublishOptions, ReceivedEvent, SubscribeOptions, check_payload_depth,
//! };
//! use event_core::{Error, Result};
//!
//! let info = ProviderInfo {
//!     provider: "mine".into(),
//!     messages: 0,
//!     bytes: 0,
//!     consumers: 0,
//!     first_sequence: 0,
//!     last_sequence: 0,
//! };
//! assert_eq!(info.provider, "mine");
//! ```

use crate::error::{Error, Result};
use crate::types::{Event, PublishOptions, PublishOutcome, ReceivedEvent, SubscribeOptions};

pub use crate::keepalive::KeepAliveClock;
pub use crate::stream::SubscriptionStream;
pub use crate::types::ProviderInfo;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// The longest ack wait, backoff step or nak delay the workspace's
/// providers hold: a century, which means "practically never".
///
/// The contract's **Option values** rule (see [`EventProvider`]) lets a
/// provider hold a duration beyond its range to the longest it can: the
/// memory and NATS providers hold every longer one (`Duration::MAX` for
/// "forever") to this, and the bus and router use it to saturate their own
/// deadlines. A third-party provider may use it too, or its backend's own
/// limit.
///
/// ```
/// use event_core::LONGEST_WAIT;
/// use std::time::Duration;
///
/// assert_eq!(Duration::MAX.min(LONGEST_WAIT), LONGEST_WAIT);
/// assert!(LONGEST_WAIT >= Duration::from_secs(100 * 365 * 24 * 3600));
/// ```
pub const LONGEST_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `at + wait`, or [`LONGEST_WAIT`] after `at` when that sum does not fit
/// an `Instant` (a `wait` of `Duration::MAX` means "forever"): a deadline
/// that never panics on overflow.
///
/// Takes and returns `std::time::Instant`, or any instant type convertible
/// both ways (Tokio's `tokio::time::Instant`, whose paused test clock it
/// keeps).
///
/// ```
/// use event_core::{LONGEST_WAIT, deadline_after};
/// use std::time::{Duration, Instant};
///
/// let now = Instant::now();
/// assert_eq!(deadline_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
/// assert_eq!(deadline_after(now, Duration::MAX), now + LONGEST_WAIT);
/// ```
pub fn deadline_after<I>(at: I, wait: Duration) -> I
where
    I: Into<std::time::Instant> + From<std::time::Instant>,
{
    let at: std::time::Instant = at.into();
    I::from(
        at.checked_add(wait)
            .or_else(|| at.checked_add(LONGEST_WAIT))
            .unwrap_or(at),
    )
}

/// A storage and delivery backend for events.
///
/// Applications publish, subscribe and query through this trait and swap the
/// backend (in-memory, NATS JetStream, a third party's) without code changes.
///
/// # Contract
///
/// Every implementation MUST hold these rules; the conformance suite
/// (`event_core::conformance`, feature `conformance`) checks them, and a
/// provider passes it before it is called conforming. (The suite sees a
/// provider from outside, on a fresh store per test: what happens across a
/// restart, undecodable stored messages, the dedup window's bound and
/// "without scanning" are for the provider's own tests.)
///
/// **Subjects.** Events are published to `{prefix}.{category}.{topic}[...]`
/// where `prefix` is [`subject_prefix`](Self::subject_prefix). Tokens are
/// non-empty, without whitespace or `.`; published subjects have no
/// wildcards; filters may use `*` as a whole token and `>` as the whole last
/// token, matching one or more tokens (see [`crate::subject`]). A bad subject,
/// filter or consumer name (a name
/// [`validate_consumer_name`](crate::subject::validate_consumer_name)
/// refuses) is [`Error::InvalidSubject`], returned before any I/O.
///
/// **Publish.** [`publish_with_options`](Self::publish_with_options) returns
/// the stream sequence: starting at 1, strictly increasing in publish order,
/// unique per provider instance/stream. The dedup id
/// ([`PublishOptions::msg_id`], defaulting to the event id) deduplicates within
/// a bounded window: a repeat returns the first publish's sequence and stores
/// nothing. Dedup is per stream, not per subject. A dedup id that is empty
/// or contains control characters is [`Error::InvalidConfig`], before
/// sending. `expected_sequence` makes
/// the publish conditional on the stream's last sequence
/// ([`Error::WrongLastSequence`]). An event whose encoded size exceeds the
/// provider's maximum is [`Error::PayloadTooLarge`], before sending; one
/// whose payload nests arrays and objects more than
/// [`MAX_PAYLOAD_DEPTH`](crate::MAX_PAYLOAD_DEPTH) levels deep is
/// [`Error::Serialization`], before sending, on every provider (JSON readers
/// could not read it back; [`check_payload_depth`](crate::check_payload_depth)).
/// [`publish_batch`](Self::publish_batch) reports one result per event, in
/// order, each under the rules of a single publish; the default (one
/// publish after another) conforms, and a provider whose backend can
/// pipeline the writes overrides it as an optimisation.
/// [`publish_batch_with_outcome`](Self::publish_batch_with_outcome) is the
/// same batch with each event's [`PublishOutcome`]: a provider that says
/// whether an event was a duplicate says it truly (a repeat inside the
/// batch too), or says nothing (`None`, the default).
///
/// **Subscribe.** [`subscribe_with_options`](Self::subscribe_with_options)
/// creates an ephemeral consumer that lives as long as the returned
/// [`Subscription`] and starts per [`SubscribeOptions::deliver_policy`];
/// [`subscribe`](Self::subscribe) is live: it uses
/// [`DeliverPolicy::New`](crate::DeliverPolicy::New) and sees only events
/// published after it was created.
/// [`subscribe_durable_with_options`](Self::subscribe_durable_with_options)
/// creates or resumes a named consumer: on creation it starts per
/// [`SubscribeOptions::deliver_policy`] (default `All`); later subscriptions
/// resume after the last acknowledged event. Two live subscriptions on one
/// durable share the work (each event goes to one of them). Every
/// [`DeliverPolicy`](crate::DeliverPolicy) works. Changed options on an
/// existing durable are applied or refused with [`Error::Conflict`], never
/// silently ignored. [`unsubscribe`](Self::unsubscribe) deletes a durable and
/// its position ([`Error::NotFound`] if there is none).
///
/// **Acknowledgement.** Delivery is at-least-once. In manual mode
/// ([`Subscription::next_manual_ack`]) the caller settles every
/// [`PendingEvent`]: `ack`, `nak` (redeliver now), `nak_with_delay`, `term`
/// (never again), `in_progress` (restart the ack timer). A redelivery does
/// not hold back the events after it: an event naked again and again (with
/// no `max_deliver` to stop it) still lets the new events through, instead
/// of being the only event delivered (unless `max_ack_pending` is reached:
/// a naked event still counts as awaiting settlement). An event not settled
/// within `ack_wait` is redelivered; with a `backoff`, the n-th delivery
/// waits `backoff[n-1]` instead (the last entry repeats, see
/// [`SubscribeOptions::redelivery_delay`]). At most `max_ack_pending`
/// deliveries await settlement at once: delivery of further events pauses
/// at the limit and resumes when one is settled.
/// [`ReceivedEvent::num_delivered`] counts deliveries. After `max_deliver`
/// deliveries the event stops, with one exception (the spare, below): its
/// last delivery reports [`PendingEvent::is_final_delivery`], so the caller
/// (the bus's consumer runner) dead-letters it, and a `nak` of it (with or
/// without a delay) ends the event like a `term`. A final delivery left
/// unsettled (its holder crashed, dropped it, or stalled past the ack wait)
/// was never reported: it is delivered once more, numbered
/// `max_deliver + 1` and still final (the spare delivery), so the event is
/// dead-lettered rather than lost; when the spare is not settled either,
/// the event ends. In auto-ack mode ([`Subscription::next`]) an event is
/// acknowledged when the caller asks for the next one or calls
/// [`Subscription::close`]; an event whose caller dropped the subscription
/// without finishing is redelivered (to durables), never lost. A stored
/// message that is not a valid event is terminated and returned once as
/// [`Error::Undecodable`]; the subscription stays usable.
///
/// **Option values.** Options no provider can honour (a zero
/// `max_deliver`, `max_ack_pending`, `ack_wait` or backoff step, fewer
/// deliveries than backoff steps) are [`Error::InvalidConfig`] before
/// anything is created. A valid value the backend cannot represent exactly
/// is not refused; it is held to the nearest value that keeps its promise:
/// a duration beyond the backend's range (an ack wait, backoff step or nak
/// delay of years, `Duration::MAX`) becomes the longest it can hold, which
/// means "practically never" (the memory and NATS providers: a century,
/// [`LONGEST_WAIT`]; JetStream carries i64 nanoseconds), a count beyond its range
/// (`max_deliver`, `max_ack_pending`) the largest it can hold (NATS:
/// `i64::MAX`), and a `ByStartTime` later than its clock can express the
/// latest time it can (NATS: the end of i64 nanoseconds, in 2262, after
/// every stored event). A duration finer than the backend's timers is
/// rounded up to the next one it can express, never down: an ack wait,
/// backoff step or nak delay promises "not before", and the suite checks
/// that. A provider reports the wait it applies in
/// [`PendingEvent::ack_wait`]. Where that wait can change while a delivery
/// is held (a durable's options changed by another subscription on it, in
/// this process or another, take effect for every subscription on the
/// durable), the report SHOULD follow the change: the provider gives a
/// live view ([`PendingEvent::with_live_ack_wait`]) that returns the wait
/// applied now, within a short bounded delay of the change (memory: at
/// once; NATS: about a second, the time to read the consumer again), so
/// that a holder restarting the timer with `in_progress` at half the
/// reported wait (as the bus's consumer runner does, reading it again
/// several times a second) keeps the delivery against a shortened wait
/// too. A provider whose waits never change once a delivery is handed out
/// reports them with [`PendingEvent::with_ack_wait`]. (The suite does not
/// check the live view: it needs two subscriptions and a wait changed
/// between them, which the provider's own tests exercise.)
///
/// **Slow consumers.** A provider never drops an event a consumer has not
/// read while the event is still stored: durables (and, on conforming
/// providers, ephemerals) read from the stored log. When an event is lost to
/// the consumer anyway (retention removed it first, or an ephemeral
/// subscription fell further behind than the provider buffers), the next
/// call returns [`Error::Lagged`] with the number skipped, wherever the
/// backend can tell, and the subscription continues with the oldest
/// available event. (The memory provider always reports it, a consumer
/// created with a `ByStartSequence` start retention already passed included
/// (not a `ByStartTime` one: see [`DeliverPolicy`](crate::DeliverPolicy)); JetStream skips
/// messages removed by retention without telling the consumer, so the NATS
/// provider cannot; size retention accordingly.)
///
/// **History.** [`history`](Self::history) returns the newest `limit` events
/// matching the filter, newest first, without scanning or copying the whole
/// store.
///
/// **Info and health.** [`info`](Self::info) is O(1), and its
/// [`ProviderInfo::provider`] is this provider's [`name`](Self::name): a
/// wrapper that overrides `name` reports that name in `info` too, not the
/// inner provider's. [`health`](Self::health)
/// says whether the backend is reachable (`Ok(false)` when it is not, errors
/// only for failures of the check itself).
///
/// **Errors.** Implementations map their own errors into [`Error`], never
/// panic on input a caller or the network supplies.
///
/// **Cancellation.** Callers drop calls part-way (a `select!` branch that
/// lost, a `timeout`, a task aborted at shutdown). A dropped publish may or
/// may not have stored its event: publishing it again with the same dedup
/// id stores it once (a batch: event by event). A dropped ephemeral
/// subscribe leaves no consumer behind. Fetches are cancel-safe (see
/// [`Subscription`]); a dropped [`Subscription::close`] is finished by the
/// next `close`, or by dropping the subscription. A dropped settlement
/// ([`PendingEvent::ack`], `nak`, `term`) may or may not have settled the
/// delivery; one it did not settle is redelivered after the ack wait, as
/// for a dropped [`PendingEvent`].
///
/// # Default methods
///
/// The convenience methods ([`publish`](Self::publish),
/// [`subscribe`](Self::subscribe), [`subscribe_durable`](Self::subscribe_durable))
/// call their `_with_options` forms with default options; implement the
/// `_with_options` forms. (A provider written against the original 0.3 API
/// may implement only the convenience forms: it compiles, its `_with_options`
/// forms return [`Error::Unsupported`], and the event bus calls the
/// convenience forms whenever no options are given. The defaults never call
/// each other in a cycle.) Providers that pipeline override
/// [`publish_batch`](Self::publish_batch) (the default publishes one at a
/// time). [`publish_shared`](Self::publish_shared) and
/// [`publish_shared_with_options`](Self::publish_shared_with_options) default
/// to [`publish`](Self::publish) and
/// [`publish_with_options`](Self::publish_with_options) on the borrowed
/// event, and [`history_shared`](Self::history_shared) wraps
/// [`history`](Self::history); in-process providers override them to keep
/// the `Arc` without a copy. A wrapper around another provider must forward
/// every method, or it silently loses the inner provider's behaviour; a
/// wrapper with a name of its own sets it in what it forwards from
/// [`info`](Self::info) (see "Info and health").
///
/// # Concurrency
///
/// All methods take `&self` and may be called concurrently from many tasks.
#[async_trait]
pub trait EventProvider: Send + Sync {
    /// Publishes `event` with `options`; returns the stream sequence.
    ///
    /// Conforming providers implement this. The default exists only so that
    /// providers written against the original 0.3 API (which implement
    /// [`publish`](Self::publish) alone) still compile: it returns
    /// [`Error::Unsupported`] and never calls `publish`.
    async fn publish_with_options(&self, event: &Event, options: &PublishOptions) -> Result<u64> {
        let _ = (event, options);
        Err(Error::unsupported(self.name(), "publish_with_options"))
    }

    /// Creates an ephemeral subscription on `filter_subject`.
    ///
    /// Conforming providers implement this; the default returns
    /// [`Error::Unsupported`] (see [`publish_with_options`](Self::publish_with_options)).
    async fn subscribe_with_options(
        &self,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let _ = (filter_subject, options);
        Err(Error::unsupported(self.name(), "subscribe_with_options"))
    }

    /// Creates or resumes the durable consumer `consumer_name`.
    ///
    /// Conforming providers implement this; the default returns
    /// [`Error::Unsupported`] (see [`publish_with_options`](Self::publish_with_options)).
    async fn subscribe_durable_with_options(
        &self,
        consumer_name: &str,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let _ = (consumer_name, filter_subject, options);
        Err(Error::unsupported(
            self.name(),
            "subscribe_durable_with_options",
        ))
    }

    /// The newest `limit` events matching `filter_subject` (all events when
    /// `None`), newest first.
    async fn history(&self, filter_subject: Option<&str>, limit: usize) -> Result<Vec<Event>>;

    /// Deletes the durable consumer `consumer_name` and its position.
    async fn unsubscribe(&self, consumer_name: &str) -> Result<()>;

    /// Store status, in O(1).
    async fn info(&self) -> Result<ProviderInfo>;

    /// Provider name (`"memory"`, `"nats"`, ...).
    fn name(&self) -> &str;

    /// Subject prefix, `"events"` unless configured.
    fn subject_prefix(&self) -> &str {
        "events"
    }

    /// `{prefix}.{category}.{topic}`.
    fn build_subject(&self, category: &str, topic: &str) -> String {
        format!("{}.{}.{}", self.subject_prefix(), category, topic)
    }

    /// `{prefix}.{category}.>`: every event of a category.
    fn category_subject(&self, category: &str) -> String {
        format!("{}.{}.>", self.subject_prefix(), category)
    }

    /// Publishes with default options (dedup by event id).
    async fn publish(&self, event: &Event) -> Result<u64> {
        self.publish_with_options(event, &PublishOptions::default())
            .await
    }

    /// Publishes several events, one result per event in order.
    ///
    /// The default publishes sequentially; pipelining providers override it.
    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<Result<u64>>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            results.push(self.publish(event).await);
        }
        Ok(results)
    }

    /// [`publish_batch`](Self::publish_batch) that also says, per event,
    /// whether the provider stored it or found its dedup id (the event id)
    /// inside its window and stored nothing ([`PublishOutcome::duplicate`]),
    /// as [`publish_shared_with_outcome`](Self::publish_shared_with_outcome)
    /// does for one event. An event repeated inside the batch is a
    /// duplicate of its first copy. The event bus uses it to route each
    /// event of a batch once, not again for each repeat a retrying sender
    /// makes.
    ///
    /// The default does not say ([`PublishOutcome::unknown`]): it calls
    /// [`publish_batch`](Self::publish_batch), so a provider that pipelines
    /// there keeps doing so. Providers that know (the memory store,
    /// JetStream's publish acknowledgements) override it.
    async fn publish_batch_with_outcome(
        &self,
        events: &[Event],
    ) -> Result<Vec<Result<PublishOutcome>>> {
        Ok(self
            .publish_batch(events)
            .await?
            .into_iter()
            .map(|result| result.map(PublishOutcome::unknown))
            .collect())
    }

    /// Publishes an event the caller already holds in an [`Arc`], with
    /// default options; returns the stream sequence.
    ///
    /// Same contract as [`publish`](Self::publish). It exists so that an
    /// event shared with other parts of the application (the event bus hands
    /// the same `Arc` to its router) is not copied again: an in-process
    /// provider may store and deliver this very `Arc`, so subscribers receive
    /// it without a copy. The default calls [`publish`](Self::publish), which
    /// is right for providers that serialize the event anyway.
    ///
    /// ```
    /// # use event_core::{Event, EventProvider};
    /// # use std::sync::Arc;
    /// # async fn demo(provider: &dyn EventProvider) -> event_core::Result<()> {
    /// let event = Arc::new(Event::new("events.orders.created", "orders", "new order", "shop",
    ///     serde_json::json!({"id": 7})));
    /// let seq = provider.publish_shared(Arc::clone(&event)).await?;
    /// # let _ = seq; Ok(()) }
    /// ```
    async fn publish_shared(&self, event: Arc<Event>) -> Result<u64> {
        self.publish(&event).await
    }

    /// [`publish_shared`](Self::publish_shared) with `options` (same contract
    /// as [`publish_with_options`](Self::publish_with_options)).
    ///
    /// The default calls [`publish_with_options`](Self::publish_with_options);
    /// providers that keep events in memory override it to store the `Arc`
    /// itself.
    async fn publish_shared_with_options(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<u64> {
        self.publish_with_options(&event, options).await
    }

    /// [`publish_shared_with_options`](Self::publish_shared_with_options)
    /// that also says whether the provider stored the event or found its
    /// dedup id inside its window and stored nothing
    /// ([`PublishOutcome::duplicate`]). The event bus uses it to route an
    /// event once, not again for each repeat a retrying sender makes.
    ///
    /// The default does not say ([`PublishOutcome::unknown`]): it calls
    /// [`publish_shared`](Self::publish_shared) when `options` are the
    /// defaults (so a provider written against the 0.3 API, which
    /// implements [`publish`](Self::publish) alone, still works under a bus
    /// with a router or an encryptor), `publish_shared_with_options`
    /// otherwise. Providers that know (the memory store, JetStream's publish
    /// acknowledgement) override it.
    async fn publish_shared_with_outcome(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        let sequence = if *options == PublishOptions::default() {
            self.publish_shared(event).await?
        } else {
            self.publish_shared_with_options(event, options).await?
        };
        Ok(PublishOutcome::unknown(sequence))
    }

    /// [`history`](Self::history) as shared events: the same events in the
    /// same order, each in an [`Arc`].
    ///
    /// For read-only use (dashboards, replays), this lets an in-process
    /// provider hand out the events it stores without copying them. The
    /// default wraps the result of [`history`](Self::history), which is right
    /// for providers that decode events anyway.
    async fn history_shared(
        &self,
        filter_subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        Ok(self
            .history(filter_subject, limit)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    /// Ephemeral subscription with default options (new events only).
    async fn subscribe(&self, filter_subject: &str) -> Result<Box<dyn Subscription>> {
        let options = SubscribeOptions {
            deliver_policy: crate::DeliverPolicy::New,
            ..SubscribeOptions::default()
        };
        self.subscribe_with_options(filter_subject, &options).await
    }

    /// Durable subscription with default options (all stored events on
    /// creation).
    async fn subscribe_durable(
        &self,
        consumer_name: &str,
        filter_subject: &str,
    ) -> Result<Box<dyn Subscription>> {
        self.subscribe_durable_with_options(
            consumer_name,
            filter_subject,
            &SubscribeOptions::default(),
        )
        .await
    }

    /// Whether the backend is reachable. The default calls [`info`](Self::info).
    async fn health(&self) -> Result<bool> {
        Ok(self.info().await.is_ok())
    }
}

/// A stream of deliveries from one consumer.
///
/// # Contract
///
/// - [`next`](Self::next) (auto-ack) acknowledges the event it returned last
///   time before fetching the next one; [`close`](Self::close) acknowledges it
///   too. Dropping the subscription without `close` leaves that event
///   unacknowledged, so a durable redelivers it.
/// - [`next_manual_ack`](Self::next_manual_ack) hands settlement to the
///   caller. Mixing the two modes on one subscription is allowed; each event
///   follows the mode it was fetched with. A `next_manual_ack` call asks for
///   the next event too, so it acknowledges the event the previous `next`
///   returned, as `next` would.
/// - Both wait until an event is available. `Ok(None)` means the subscription
///   is closed (by `close` or because the provider shut down) and will yield
///   nothing more.
/// - Both are cancel-safe: a call dropped before it returns (a `select!`
///   branch that lost, a `timeout`), even right after its first poll, takes
///   no event with it; the event goes to a later call, as a first delivery,
///   not after an ack wait. Take an event off the backend's queue only in
///   the poll that returns it, or keep it in the subscription for the next
///   call.
/// - A durable removed by [`EventProvider::unsubscribe`] (or lost by the
///   backend) ends its live subscriptions: a waiting call returns `Ok(None)`
///   or `Err(Error::NotFound)`; it does not wait forever.
/// - `Err(Error::Lagged)` and `Err(Error::Undecodable)` are reports; the
///   subscription stays usable. Other errors (connection loss) may be
///   transient; callers may keep calling.
///
/// Use `into_stream()` (see [`SubscriptionStream`]) for a
/// `futures::Stream`.
#[async_trait]
pub trait Subscription: Send + Sync {
    /// Next event, auto-acknowledged (see the type docs).
    async fn next(&mut self) -> Result<Option<ReceivedEvent>>;

    /// Next event, to be settled by the caller.
    async fn next_manual_ack(&mut self) -> Result<Option<PendingEvent>>;

    /// Acknowledges the last auto-ack event and stops the subscription.
    /// Ephemeral consumers are deleted; durables keep their position.
    async fn close(&mut self) -> Result<()>;

    /// Keeps the deliveries this subscription fetched ahead, and has not
    /// handed out yet, from reaching their ack wait while the caller is busy
    /// (a provider that fetches ahead restarts their ack timers, as
    /// `in_progress` does for a delivery handed out). A caller that may go
    /// longer than half the shortest ack wait (with a `backoff`, its
    /// shortest step) between calls of [`next`](Self::next) or
    /// [`next_manual_ack`](Self::next_manual_ack) (all its handler slots
    /// busy with slow work, say) calls it meanwhile, at least that often,
    /// as the bus's consumer runner and the broker's feed do (every
    /// 100 ms); otherwise an event fetched ahead may be redelivered while it
    /// still waits for its first turn. Cheap where nothing is due.
    ///
    /// The default does nothing, which is right for a provider that hands
    /// out only what the caller asks for (the memory provider).
    async fn keep_alive(&mut self) -> Result<()> {
        Ok(())
    }
}

/// How a provider settles one delivery. Implemented by providers; callers use
/// [`PendingEvent`].
///
/// Each method is called at most once per delivery except
/// [`in_progress`](Self::in_progress), which may be called many times before
/// a final settlement.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Processing succeeded: never deliver again.
    async fn ack(&self) -> Result<()>;
    /// Processing failed: redeliver after `delay` (`None`: now).
    async fn nak(&self, delay: Option<Duration>) -> Result<()>;
    /// Never deliver again, without success.
    async fn term(&self) -> Result<()>;
    /// Still working: restart the ack-wait timer.
    async fn in_progress(&self) -> Result<()>;
}

/// An event awaiting settlement by the caller.
///
/// Dropping it unsettled is allowed: it is redelivered after the ack wait.
///
/// ```no_run
/// # async fn demo(mut sub: Box<dyn event_core::Subscription>) -> event_core::Result<()> {
/// while let Some(pending) = sub.next_manual_ack().await? {
///     if pending.received.event.payload.is_object() {
///         pending.ack().await?;
///     } else {
///         pending.nak().await?; // request redelivery
///     }
/// }
/// # Ok(()) }
/// ```
#[must_use = "a delivery left unsettled is redelivered after its ack wait"]
pub struct PendingEvent {
    /// The delivered event and its context.
    pub received: ReceivedEvent,
    max_deliver: Option<u64>,
    ack_wait: Option<AckWait>,
    acker: Box<dyn Acker>,
}

/// The ack wait a provider reported for a delivery: fixed, or live.
#[derive(Clone, Debug)]
enum AckWait {
    Fixed(Duration),
    Live(LiveAckWait),
}

impl AckWait {
    fn get(&self) -> Duration {
        match self {
            Self::Fixed(wait) => *wait,
            Self::Live(live) => live.get(),
        }
    }
}

/// A live view of the ack wait a provider applies to one delivery, for a
/// provider whose wait can change while the delivery is held: a durable
/// shared by several processes takes the options of whichever subscribed
/// last, so the wait another process set applies to the deliveries this
/// one holds (see the [`EventProvider`] contract, "Acknowledgement").
///
/// The provider gives it to [`PendingEvent::with_live_ack_wait`] and keeps
/// what `read` reads up to date; [`PendingEvent::ack_wait`] then returns the
/// wait in effect now. `read` is called from the holder's task, often (the
/// bus's consumer runner reads it several times a second while a handler
/// runs): it must be cheap and must not block (a lock held briefly, an
/// atomic load). It may prompt the provider to look the current value up
/// in the background.
///
/// ```
/// use event_core::provider::LiveAckWait;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
///
/// // the provider's shared cell, updated when the consumer's wait changes
/// let millis = Arc::new(AtomicU64::new(6_000));
/// let cell = millis.clone();
/// let live = LiveAckWait::new(move || Duration::from_millis(cell.load(Ordering::Relaxed)));
/// assert_eq!(live.get(), Duration::from_secs(6));
/// millis.store(2_000, Ordering::Relaxed);
/// assert_eq!(live.get(), Duration::from_secs(2));
/// ```
#[derive(Clone)]
pub struct LiveAckWait(Arc<dyn Fn() -> Duration + Send + Sync>);

impl LiveAckWait {
    /// A view that reads the current wait with `read`.
    pub fn new(read: impl Fn() -> Duration + Send + Sync + 'static) -> Self {
        Self(Arc::new(read))
    }

    /// The wait in effect now.
    pub fn get(&self) -> Duration {
        (self.0)()
    }
}

/// Does not read the view: a provider's view may look the wait up (NATS
/// starts a request when what it read is old), which formatting must not do.
impl std::fmt::Debug for LiveAckWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveAckWait(..)")
    }
}

impl std::fmt::Debug for PendingEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingEvent")
            .field("received", &self.received)
            .field("max_deliver", &self.max_deliver)
            .field("ack_wait", &self.ack_wait)
            .finish_non_exhaustive()
    }
}

impl PendingEvent {
    /// Wraps a delivery with the provider's acker. `max_deliver` is the
    /// consumer's limit, so [`is_final_delivery`](Self::is_final_delivery) can
    /// tell the last attempt.
    pub fn new(received: ReceivedEvent, max_deliver: Option<u64>, acker: Box<dyn Acker>) -> Self {
        Self {
            received,
            max_deliver,
            ack_wait: None,
            acker,
        }
    }

    /// Records how long the provider waits for this delivery to be settled
    /// before redelivering it (the consumer's ack wait, or the backoff entry
    /// of this delivery). Providers that know it should say it: a consumer
    /// that keeps a long task alive with [`in_progress`](Self::in_progress)
    /// needs it when the subscription left the wait to the provider's
    /// default. The memory and NATS providers report it.
    pub fn with_ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = Some(AckWait::Fixed(wait));
        self
    }

    /// Records the ack wait of this delivery as a live view, for a provider
    /// whose wait can change while the delivery is held (another
    /// subscription changed the durable's options): [`ack_wait`](Self::ack_wait)
    /// then returns the wait in effect at each call. Replaces what
    /// [`with_ack_wait`](Self::with_ack_wait) recorded. The memory and NATS
    /// providers report their durables' waits this way.
    pub fn with_live_ack_wait(mut self, wait: LiveAckWait) -> Self {
        self.ack_wait = Some(AckWait::Live(wait));
        self
    }

    /// The ack wait the provider applies to this delivery, if it reported
    /// it (see [`with_ack_wait`](Self::with_ack_wait)): with a live view
    /// ([`with_live_ack_wait`](Self::with_live_ack_wait)), the wait in
    /// effect now, which may differ from one call to the next. A holder
    /// that keeps the delivery alive with [`in_progress`](Self::in_progress)
    /// reads it again between calls and calls in time for the shorter of
    /// the wait when it last restarted the timer and the current one (a
    /// provider may keep the deadline it set with the earlier wait until
    /// the next `in_progress`).
    pub fn ack_wait(&self) -> Option<Duration> {
        self.ack_wait.as_ref().map(AckWait::get)
    }

    /// Transforms the delivered event (the bus decrypts it), keeping the
    /// acker and what the provider reported (`max_deliver`, the ack wait).
    pub fn map_received(mut self, f: impl FnOnce(ReceivedEvent) -> ReceivedEvent) -> Self {
        self.received = f(self.received);
        self
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.received.event
    }

    /// The consumer's delivery limit, if any.
    pub fn max_deliver(&self) -> Option<u64> {
        self.max_deliver
    }

    /// Whether this is the last delivery the consumer will make: a `nak`
    /// (with or without a delay) or a `term` ends the event, and the caller
    /// dead-letters it on failure. If it is left unsettled past its ack wait
    /// (the holder crashed or dropped it), the event comes once more,
    /// numbered `max_deliver + 1` and still final (the spare delivery, see
    /// the [`EventProvider`] contract); after that, it ends whatever
    /// happens.
    pub fn is_final_delivery(&self) -> bool {
        self.max_deliver
            .is_some_and(|max| self.received.num_delivered >= max)
    }

    /// Acknowledges: never delivered again.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Requests redelivery now. The redelivery does not hold back the
    /// events behind it: an event naked on every delivery still lets the
    /// others through (set `max_deliver`, or use
    /// [`nak_with_delay`](Self::nak_with_delay), so that it ends or waits).
    pub async fn nak(self) -> Result<()> {
        self.acker.nak(None).await
    }

    /// Requests redelivery after `delay`.
    pub async fn nak_with_delay(self, delay: Duration) -> Result<()> {
        self.acker.nak(Some(delay)).await
    }

    /// Terminates: never delivered again, not counted as success.
    pub async fn term(self) -> Result<()> {
        self.acker.term().await
    }

    /// Restarts the ack-wait timer; call repeatedly during long work
    /// ([`KeepAliveClock`] says when).
    pub async fn in_progress(&self) -> Result<()> {
        self.acker.in_progress().await
    }

    /// Splits into the delivery and its acker, for wrappers that take the
    /// delivery apart (to transform the event and keep everything else, use
    /// [`map_received`](Self::map_received)). The ack wait is not part of
    /// the split; read it first with [`ack_wait`](Self::ack_wait) (which
    /// reads a live view once: to keep it live, transform the event with
    /// [`map_received`](Self::map_received) instead).
    pub fn into_parts(self) -> (ReceivedEvent, Option<u64>, Box<dyn Acker>) {
        (self.received, self.max_deliver, self.acker)
    }
}

/// Helper for providers: an error for a closed subscription.
pub fn closed_error(what: &str) -> Error {
    Error::Closed(what.to_string())
}
