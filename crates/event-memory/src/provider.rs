//! [`MemoryProvider`].

use crate::config::{MemoryConfig, MemoryLimits, validate};
use crate::consumer::{Consumer, Settings};
use crate::signal::PublishSignal;
use crate::store::{Appended, DedupKey, Store, Summary, encoded_len};
use crate::subscription::MemorySubscription;
use async_trait::async_trait;
use event_core::subject::{
    SubjectPattern, validate_consumer_name, validate_filter_for_prefix, validate_publish_subject,
};
use event_core::{
    Error, Event, EventProvider, ProviderInfo, PublishOptions, PublishOutcome, Result,
    SubscribeOptions, Subscription, now_millis,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;

pub(crate) struct Shared {
    pub(crate) config: MemoryConfig,
    /// Tokens of `config.subject_prefix`: a subject's category is the
    /// token after them.
    pub(crate) prefix_tokens: usize,
    pub(crate) limits: MemoryLimits,
    pub(crate) stream: Arc<str>,
    pub(crate) store: Mutex<Store>,
    /// Wakes subscriptions waiting for new events.
    pub(crate) published: PublishSignal,
    pub(crate) durables: Mutex<HashMap<String, Arc<Consumer>>>,
    pub(crate) ephemeral: AtomicUsize,
    pub(crate) lagged: AtomicU64,
}

/// The in-process provider: the reference implementation of the
/// [`EventProvider`] contract.
///
/// Events live in a bounded ring (`max_events`; an eviction visits every
/// consumer, durables until they are unsubscribed: see the crate docs); consumers,
/// durable or ephemeral, read that log with their own position, in-flight
/// set and timers, so acknowledgement, redelivery, `max_deliver`, every
/// deliver policy and dedup behave as on JetStream. Nothing survives the
/// process. Cloning is cheap and shares the store. Subscriptions share it
/// too: they keep working (and keep waiting) after every provider handle is
/// dropped, until they are closed or dropped themselves.
///
/// Subscriptions on one durable share its work. A redelivery (after a nak or
/// an ack wait that ran out) goes to another subscription of the durable
/// when one is waiting for work, not back to the one that failed it: an
/// instance that fails every event does not keep an event to itself while a
/// healthy one waits. It gets the event back when nobody else is waiting,
/// or when the waiting ones do not take it within 100 ms. So, as on
/// JetStream, an event nak'd without a delay while the other instances are
/// all busy comes straight back to the one that failed it, and a low
/// `max_deliver` can be used up there within microseconds: give retries a
/// delay ([`nak_with_delay`](event_core::PendingEvent::nak_with_delay), a
/// `backoff`) to let the other instances take their share.
///
/// ```
/// use event_core::{Event, EventProvider};
/// use event_memory::MemoryProvider;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> event_core::Result<()> {
/// let provider = MemoryProvider::default();
/// let mut sub = provider.subscribe("events.market.>").await?;
/// let event = Event::new("events.market.forex", "market", "Rate", "reuters", serde_json::json!({"rate": 7.35}));
/// let seq = provider.publish(&event).await?;
/// let received = sub.next().await?.expect("an event");
/// assert_eq!((received.sequence, received.event.id.as_str()), (seq, event.id.as_str()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryProvider {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProvider")
            .field("config", &self.shared.config)
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryProvider {
    /// Prefix `events`, 100,000 events, default limits.
    fn default() -> Self {
        let config = MemoryConfig::default();
        let limits = MemoryLimits::default();
        Self::build(config, limits)
    }
}

impl MemoryProvider {
    /// A provider with `config` and default limits; an unusable config
    /// (zero capacity, bad prefix) is [`Error::InvalidConfig`].
    pub fn new(config: MemoryConfig) -> Result<Self> {
        Self::with_limits(config, MemoryLimits::default())
    }

    /// A provider with `config` and explicit `limits`.
    pub fn with_limits(config: MemoryConfig, limits: MemoryLimits) -> Result<Self> {
        validate(&config, &limits)?;
        Ok(Self::build(config, limits))
    }

    fn build(config: MemoryConfig, limits: MemoryLimits) -> Self {
        let prefix_tokens = config.subject_prefix.split('.').count();
        let store = Store::new(
            config.max_events,
            limits.max_bytes,
            limits.duplicate_window,
            limits.max_dedup_entries,
        )
        .with_prefix_tokens(prefix_tokens);
        Self {
            shared: Arc::new(Shared {
                prefix_tokens,
                stream: Arc::from(limits.stream_name.as_str()),
                config,
                limits,
                store: Mutex::new(store),
                published: PublishSignal::default(),
                durables: Mutex::new(HashMap::new()),
                ephemeral: AtomicUsize::new(0),
                lagged: AtomicU64::new(0),
            }),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &MemoryConfig {
        &self.shared.config
    }

    /// The limits in use.
    pub fn limits(&self) -> &MemoryLimits {
        &self.shared.limits
    }

    /// Events skipped by lagging subscriptions so far, each counted once per
    /// subscription whose filter it matched (see [`Error::Lagged`]).
    pub fn lagged_total(&self) -> u64 {
        self.shared.lagged.load(Ordering::Relaxed)
    }

    /// The newest `limit` stored events matching `filter_subject`, newest
    /// first, each taken out with `take` (a copy or a shared handle).
    fn newest<T>(
        &self,
        filter_subject: Option<&str>,
        limit: usize,
        take: impl Fn(&Arc<Event>) -> T,
    ) -> Result<Vec<T>> {
        let pattern = filter_subject.map(SubjectPattern::parse).transpose()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let required = pattern
            .as_ref()
            .map(|pattern| Summary::required_by(pattern, self.shared.prefix_tokens))
            .unwrap_or_default();
        let store = self.shared.store.lock();
        let mut out = Vec::with_capacity(limit.min(store.len()));
        for (lo, hi) in store.candidate_runs(required) {
            for (_, entry) in store.range_rev(lo, hi) {
                if pattern
                    .as_ref()
                    .is_none_or(|p| p.matches(&entry.event.subject))
                {
                    out.push(take(&entry.event));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Validates the subject, the dedup id, the payload's depth and the
    /// encoded size (with an explicit dedup id's length); returns the
    /// event's encoded size.
    fn admit(&self, event: &Event, options: &PublishOptions) -> Result<usize> {
        validate_publish_subject(&event.subject, &self.shared.config.subject_prefix)?;
        // as on JetStream (a message id is a header value): an empty id
        // would otherwise be one dedup key shared by every publish using it
        options.checked_dedup_id(event)?;
        // also refuses, as every provider does, a payload nested deeper
        // than JSON readers (NATS, a dead letter's reader) could read back
        let size = encoded_len(event)?;
        // an explicit dedup id is kept beside the event for the whole dedup
        // window, so it counts towards the limit (as the `Nats-Msg-Id`
        // header does on NATS); the default one is the event's own id
        let admitted = size.saturating_add(options.msg_id.as_deref().map_or(0, str::len));
        if admitted > self.shared.limits.max_payload {
            return Err(Error::PayloadTooLarge {
                size: admitted,
                max: self.shared.limits.max_payload,
            });
        }
        Ok(size)
    }

    /// Appends an admitted event and wakes the subscriptions.
    fn append(
        &self,
        event: Arc<Event>,
        size: usize,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        let dedup_key = DedupKey::new(options.dedup_id(&event));
        let summary = Summary::of_subject(&event.subject, self.shared.prefix_tokens);
        let appended = self.shared.store.lock().append_event(
            dedup_key,
            options.expected_sequence,
            event,
            size,
            now_millis(),
            summary,
        )?;
        match appended {
            Appended::New(seq) => {
                self.shared.published.published(summary.category());
                Ok(PublishOutcome::stored(seq))
            }
            Appended::Duplicate(seq) => Ok(PublishOutcome::duplicate(seq)),
        }
    }

    fn settings(&self, filter: &str, options: &SubscribeOptions) -> Result<Settings> {
        let filter = validate_filter_for_prefix(filter, &self.shared.config.subject_prefix)?;
        if options.max_deliver == Some(0) {
            return Err(Error::invalid_config("max_deliver", "must be at least 1"));
        }
        if options.max_ack_pending == Some(0) {
            return Err(Error::invalid_config(
                "max_ack_pending",
                "must be at least 1",
            ));
        }
        if options.ack_wait.is_some_and(|d| d.is_zero())
            || options.backoff.iter().any(|d| d.is_zero())
        {
            return Err(Error::invalid_config(
                "ack_wait",
                "ack wait and backoff must be greater than zero",
            ));
        }
        // later steps could never apply; JetStream refuses it too, so code
        // that runs here runs on NATS
        if let Some(n) = options.max_deliver
            && n < u64::try_from(options.backoff.len()).unwrap_or(u64::MAX)
        {
            return Err(Error::invalid_config(
                "backoff",
                format!(
                    "{} backoff steps with max_deliver {n}: fewer deliveries than backoff steps \
                     (each step is the wait after one delivery)",
                    options.backoff.len()
                ),
            ));
        }
        Ok(Settings {
            required: Summary::required_by(&filter, self.shared.prefix_tokens),
            // what is stored passed `validate_publish_subject` (see `admit`)
            matches_all: filter.matches_all_under(&self.shared.config.subject_prefix),
            filter,
            ack_wait: options
                .ack_wait
                .unwrap_or(self.shared.limits.default_ack_wait),
            max_ack_pending: options
                .max_ack_pending
                .unwrap_or(self.shared.limits.default_max_ack_pending),
            options: options.clone(),
        })
    }
}

/// Publishing never waits, so a loop of publishes would otherwise hold its
/// runtime worker until it ends, starving the subscriptions it just woke
/// (tokio runs a woken task on the waker's worker when it can); a loop of
/// fetches that always find work (a backlog, an event nak'd and fetched
/// again) would starve every other task of its worker the same way. Like
/// tokio's own channels, a publish or fetch spends a unit of the task's
/// cooperative budget; once the budget is used up it yields once, *before*
/// the publish or fetch takes effect, so a future dropped at that point
/// (`select!`, `now_or_never`) has stored or taken nothing. It wakes itself as it yields, so an
/// executor other than tokio polls it again instead of waiting on tokio's
/// deferred wake-up, and the second poll completes whatever the budget says.
/// Outside a tokio runtime, or inside `tokio::task::unconstrained`, it never
/// yields.
pub(crate) async fn cooperate() {
    let mut budget = std::pin::pin!(tokio::task::consume_budget());
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        match budget.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    })
    .await;
}

impl MemoryProvider {
    /// Every borrowed publish: a copy of `event` is stored. Not a trait
    /// method, so `publish` awaits it inside its own boxed future instead of
    /// boxing a second one for `publish_with_options`.
    async fn publish_copy(
        &self,
        event: &Event,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        cooperate().await;
        // Checked before the copy, so a refused event is never cloned.
        let size = self.admit(event, options)?;
        self.append(Arc::new(event.clone()), size, options)
    }

    /// Every shared publish: `event` itself is stored (see
    /// [`publish_copy`](Self::publish_copy) for why it is not a trait method).
    async fn publish_arc(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        cooperate().await;
        let size = self.admit(&event, options)?;
        self.append(event, size, options)
    }
}

#[async_trait]
impl EventProvider for MemoryProvider {
    async fn publish(&self, event: &Event) -> Result<u64> {
        self.publish_copy(event, &PublishOptions::default())
            .await
            .map(|outcome| outcome.sequence)
    }

    async fn publish_with_options(&self, event: &Event, options: &PublishOptions) -> Result<u64> {
        self.publish_copy(event, options)
            .await
            .map(|outcome| outcome.sequence)
    }

    /// Says, per event, whether it was stored or a duplicate inside the
    /// dedup window (a repeat inside the batch too).
    async fn publish_batch_with_outcome(
        &self,
        events: &[Event],
    ) -> Result<Vec<Result<PublishOutcome>>> {
        let options = PublishOptions::default();
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            results.push(self.publish_copy(event, &options).await);
        }
        Ok(results)
    }

    async fn publish_shared(&self, event: Arc<Event>) -> Result<u64> {
        self.publish_arc(event, &PublishOptions::default())
            .await
            .map(|outcome| outcome.sequence)
    }

    /// Stores `event` itself: subscribers receive this `Arc`, no copy is made.
    async fn publish_shared_with_options(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<u64> {
        self.publish_arc(event, options)
            .await
            .map(|outcome| outcome.sequence)
    }

    /// Says whether the event was stored or a duplicate inside the dedup
    /// window.
    async fn publish_shared_with_outcome(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        self.publish_arc(event, options).await
    }

    async fn subscribe_with_options(
        &self,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let settings = self.settings(filter_subject, options)?;
        let consumer = Consumer::new(settings, &mut self.shared.store.lock());
        self.shared.ephemeral.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(MemorySubscription::new(
            self.shared.clone(),
            consumer,
            true,
        )))
    }

    async fn subscribe_durable_with_options(
        &self,
        consumer_name: &str,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        validate_consumer_name(consumer_name)?;
        let settings = self.settings(filter_subject, options)?;
        let consumer = {
            let mut durables = self.shared.durables.lock();
            match durables.get(consumer_name) {
                Some(existing) => {
                    existing.reconfigure(consumer_name, settings, &self.shared.store)?;
                    existing.clone()
                }
                None => {
                    let consumer = Consumer::new(settings, &mut self.shared.store.lock());
                    durables.insert(consumer_name.to_string(), consumer.clone());
                    consumer
                }
            }
        };
        Ok(Box::new(MemorySubscription::new(
            self.shared.clone(),
            consumer,
            false,
        )))
    }

    async fn history(&self, filter_subject: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        self.newest(filter_subject, limit, |event| Event::clone(event))
    }

    /// The stored events themselves: no copy is made.
    async fn history_shared(
        &self,
        filter_subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        self.newest(filter_subject, limit, Arc::clone)
    }

    async fn unsubscribe(&self, consumer_name: &str) -> Result<()> {
        validate_consumer_name(consumer_name)?;
        let removed = self.shared.durables.lock().remove(consumer_name);
        match removed {
            Some(consumer) => {
                consumer.mark_deleted();
                Ok(())
            }
            None => Err(Error::NotFound {
                kind: "consumer",
                name: consumer_name.to_string(),
            }),
        }
    }

    async fn info(&self) -> Result<ProviderInfo> {
        let (messages, bytes, first, last) = {
            let store = self.shared.store.lock();
            let first = if store.len() == 0 {
                0
            } else {
                store.first_seq()
            };
            (store.len() as u64, store.bytes(), first, store.last_seq())
        };
        Ok(ProviderInfo {
            provider: self.name().to_string(),
            messages,
            bytes,
            consumers: self.shared.durables.lock().len()
                + self.shared.ephemeral.load(Ordering::Relaxed),
            first_sequence: first,
            last_sequence: last,
        })
    }

    fn name(&self) -> &str {
        "memory"
    }

    fn subject_prefix(&self) -> &str {
        &self.shared.config.subject_prefix
    }

    async fn health(&self) -> Result<bool> {
        Ok(true)
    }
}
