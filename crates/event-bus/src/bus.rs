//! [`EventBus`]: the publish pipeline and queries.

use crate::hooks::{HookSlot, Hooks, PlaintextPolicy};
use crate::metrics::EventMetrics;
use crate::subscriptions::SubState;
use event_core::subject::{validate_category, validate_publish_subject, validate_topic};
use event_core::{
    DlqHandler, Error, Event, EventCounts, EventEncryptor, EventProvider, EventRouter,
    ProviderInfo, PublishOptions, PublishOutcome, Result, SchemaValidator, check_payload_depth,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub(crate) struct Inner {
    pub(crate) provider: Arc<dyn EventProvider>,
    pub(crate) hooks: HookSlot,
    pub(crate) metrics: EventMetrics,
    /// Shared so a subscription change can take the lock in its caller
    /// and carry it into the task it runs detached in.
    pub(crate) subs: Arc<tokio::sync::Mutex<SubState>>,
    /// Bumped whenever a managed subscriber changes or is removed: the
    /// subscriptions opened for it check whether they still belong to it
    /// (see [`BusSubscription`](crate::BusSubscription)).
    pub(crate) sub_changes: tokio::sync::watch::Sender<crate::subscription::SubChange>,
    /// Sequences of stored events the router refused: a repeat of one is
    /// routed again.
    pub(crate) refused: crate::refused::Recent<u64>,
    /// Dedup ids of events whose publish call ended (dropped, or failed)
    /// between the provider and the router: a repeat of one is routed.
    pub(crate) unrouted: crate::refused::Recent<String>,
}

/// The high-level event API over any [`EventProvider`].
///
/// Publishing runs the pipeline, in this order:
///
/// 1. the subject is validated (`{prefix}.{category}.{topic}`, no wildcards);
/// 2. the plaintext is validated by the schema validator, if one is set
///    ([`with_schema_registry`](Self::with_schema_registry));
/// 3. the payload is encrypted, if an encryptor is set
///    ([`set_encryptor`](Self::set_encryptor)), with the event id as
///    associated data;
/// 4. the provider stores it, deduplicating by the event id (so a retried
///    publish of the same event is stored once);
/// 5. the plaintext event is handed to the router, if one is set
///    ([`set_router`](Self::set_router)); routers enqueue and return, so the
///    publisher never waits for deliveries, only, when the router's queue is
///    full, for room in it if the router's policy says so (a Broker's
///    default `Wait`: backpressure). If the router refuses (a full
///    queue under a reject policy, a router shut down), the provider **has
///    stored** the event all the same. [`publish`](Self::publish),
///    [`publish_event`](Self::publish_event) and
///    [`publish_batch`](Self::publish_batch) then return the router's
///    error, which looks like a publish that stored nothing;
///    [`publish_event_stored`](Self::publish_event_stored) and
///    [`publish_batch_stored`](Self::publish_batch_stored) return `Ok` with
///    the sequence and the refusal inside ([`Stored::not_routed`]), so a
///    caller that would retry with a new event (a new id: another stored
///    copy) can tell the two apart. To have the router get the event after
///    all, publish the same event again through the same bus: the provider
///    deduplicates it and the router gets it again. A repeat of an event the router took is not
///    handed over again where the provider reports duplicates
///    ([`Stored::duplicate`]): a sender's retry reaches the router once;
/// 6. metrics are updated: a publish the provider stored counts in
///    `publish_total` (and its latency), also when the router then refused
///    it, which counts in `router_errors` as well; one refused before the
///    store counts in `publish_errors`. A `tracing` span (`a3s_event.publish`,
///    debug level) covers the whole pipeline including the awaits.
///
/// Subscriptions the bus creates ([`create_subscriber`](Self::create_subscriber),
/// [`subscribe`](Self::subscribe), consumer runners) return decrypted events;
/// [`list_events`](Self::list_events) decrypts too.
///
/// The bus is cheap to clone (it is an `Arc`); every setter takes `&self`,
/// so hooks can be changed on a bus shared between tasks. The hooks are read
/// once per publish through an uncontended read lock.
///
/// ```
/// use event_bus::EventBus;
/// use event_memory::MemoryProvider;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> event_core::Result<()> {
/// let bus = EventBus::new(MemoryProvider::default());
/// let event = bus
///     .publish("market", "forex.usd_cny", "USD/CNY broke through 7.35", "reuters",
///              serde_json::json!({"rate": 7.3521}))
///     .await?;
/// assert_eq!(event.subject, "events.market.forex.usd_cny");
/// let events = bus.list_events(Some("market"), 50).await?;
/// assert_eq!(events[0].id, event.id);
/// assert_eq!(bus.metrics().snapshot().publish_total, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EventBus {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hooks = self.inner.hooks.load();
        f.debug_struct("EventBus")
            .field("provider", &self.inner.provider.name())
            .field("encryptor", &hooks.encryptor.is_some())
            .field("schema_validator", &hooks.validator.is_some())
            .field("router", &hooks.router.is_some())
            .field("dlq_handler", &hooks.dlq.is_some())
            .finish_non_exhaustive()
    }
}

impl EventBus {
    /// A bus over `provider`, without hooks. The bus owns it; to share one
    /// provider with other parts of the application (a broker feed, a
    /// second bus), keep it in an `Arc` and use
    /// [`from_arc`](Self::from_arc).
    pub fn new(provider: impl EventProvider + 'static) -> Self {
        Self::from_arc(Arc::new(provider))
    }

    /// A bus over a shared provider, which the caller may go on using
    /// directly (an `Arc<MemoryProvider>` coerces to the argument).
    pub fn from_arc(provider: Arc<dyn EventProvider>) -> Self {
        Self {
            inner: Arc::new(Inner {
                provider,
                hooks: HookSlot::default(),
                metrics: EventMetrics::new(),
                subs: Arc::new(tokio::sync::Mutex::new(SubState::default())),
                sub_changes: tokio::sync::watch::Sender::new(
                    crate::subscription::SubChange::default(),
                ),
                refused: crate::refused::Recent::default(),
                unrouted: crate::refused::Recent::default(),
            }),
        }
    }

    /// Builder form of [`set_schema_validator`](Self::set_schema_validator):
    /// publishes are validated by `validator` (a schema registry).
    #[must_use]
    pub fn with_schema_registry(self, validator: Arc<dyn SchemaValidator>) -> Self {
        self.set_schema_validator(validator);
        self
    }

    /// Validates every published event's plaintext with `validator`.
    pub fn set_schema_validator(&self, validator: Arc<dyn SchemaValidator>) {
        self.inner.hooks.update(|h| h.validator = Some(validator));
    }

    /// Encrypts published payloads and decrypts delivered and listed ones.
    pub fn set_encryptor(&self, encryptor: Arc<dyn EventEncryptor>) {
        self.inner.hooks.update(|h| h.encryptor = Some(encryptor));
    }

    /// Stops encrypting new payloads. Encrypted events already stored are
    /// then delivered and listed as they are stored (encrypted).
    pub fn clear_encryptor(&self) {
        self.inner.hooks.update(|h| h.encryptor = None);
    }

    /// Sets what the bus does with payloads that are not encrypted:
    /// [`PlaintextPolicy::Accept`] (the default) or
    /// [`PlaintextPolicy::Refuse`] to fail closed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use event_bus::{EventBus, PlaintextPolicy};
    /// use event_memory::MemoryProvider;
    ///
    /// let bus = EventBus::new(MemoryProvider::default());
    /// bus.set_plaintext_policy(PlaintextPolicy::Refuse);
    /// // no encryptor configured: nothing is published in clear
    /// let err = bus.publish("orders", "created", "s", "shop", serde_json::json!({})).await;
    /// assert!(matches!(err, Err(event_core::Error::Encryption(_))));
    /// # }
    /// ```
    pub fn set_plaintext_policy(&self, policy: PlaintextPolicy) {
        self.inner.hooks.update(|h| h.plaintext = policy);
    }

    /// Dead letters (exhausted, undecodable or undecryptable events) go to
    /// `handler`.
    pub fn set_dlq_handler(&self, handler: Arc<dyn DlqHandler>) {
        self.inner.hooks.update(|h| h.dlq = Some(handler));
    }

    /// The DLQ handler, if set.
    pub fn dlq_handler(&self) -> Option<Arc<dyn DlqHandler>> {
        self.inner.hooks.load().dlq.clone()
    }

    /// Every published event (plaintext) is handed to `router` after the
    /// provider stored it. A refusal by the router is returned to the
    /// publisher (the event stays stored; see the pipeline notes on the
    /// type): as the error of [`publish_event`](Self::publish_event) and
    /// the other publish calls, inside the `Ok` of
    /// [`publish_event_stored`](Self::publish_event_stored) and
    /// [`publish_batch_stored`](Self::publish_batch_stored). It counts in
    /// `router_errors`; the publish itself counts in `publish_total`, not
    /// `publish_errors`, since the event was stored.
    pub fn set_router(&self, router: Arc<dyn EventRouter>) {
        self.inner.hooks.update(|h| h.router = Some(router));
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn EventProvider> {
        &self.inner.provider
    }

    /// The bus's metrics.
    pub fn metrics(&self) -> &EventMetrics {
        &self.inner.metrics
    }

    /// Publishes an untyped event to `{prefix}.{category}.{topic}` and
    /// returns it (plaintext).
    ///
    /// Each call makes a new event (a new id). After a transient error
    /// ([`Error::is_transient`]: a timeout, a lost connection), or a call
    /// dropped before it returned (a `timeout` around it, a `select!`), the
    /// provider may have stored the event all the same, and a second
    /// `publish` would store a second copy. To retry safely, build the event once
    /// ([`Event::new`], [`Event::typed`]) and retry
    /// [`publish_event`](Self::publish_event) with it: the provider
    /// deduplicates the repeated id.
    ///
    /// An `Err` can also be a router's refusal of an event the provider
    /// stored (see [`set_router`](Self::set_router)): build the event and
    /// publish it with [`publish_event_stored`](Self::publish_event_stored)
    /// to tell the two apart.
    pub async fn publish(
        &self,
        category: &str,
        topic: &str,
        summary: &str,
        source: &str,
        payload: serde_json::Value,
    ) -> Result<Event> {
        self.check_category_topic(category, topic)?;
        let subject = self.inner.provider.build_subject(category, topic);
        let checked = self.is_checked_subject(&subject, category, topic);
        let event = Event::new(subject, category, summary, source, payload);
        self.run_pipeline(&event, None, checked)
            .await?
            .into_result()?;
        Ok(event)
    }

    /// Publishes a typed, versioned event (validated against its schema when
    /// a schema validator is set) and returns it (plaintext). Retrying it
    /// after a transient error: see [`publish`](Self::publish).
    #[allow(clippy::too_many_arguments)]
    pub async fn publish_typed(
        &self,
        category: &str,
        topic: &str,
        event_type: &str,
        version: u32,
        summary: &str,
        source: &str,
        payload: serde_json::Value,
    ) -> Result<Event> {
        self.check_category_topic(category, topic)?;
        let subject = self.inner.provider.build_subject(category, topic);
        let checked = self.is_checked_subject(&subject, category, topic);
        let event = Event::typed(
            subject, category, event_type, version, summary, source, payload,
        );
        self.run_pipeline(&event, None, checked)
            .await?
            .into_result()?;
        Ok(event)
    }

    /// Publishes a pre-built event; returns its stream sequence. Publishing
    /// the same event (same id) again is deduplicated by the provider, so an
    /// event whose publish failed with a transient error
    /// ([`Error::is_transient`]), or whose call was dropped before it
    /// returned, can be published again safely (within the provider's dedup
    /// window); the router, which a dropped or failed call may not have
    /// reached, gets it then. Routing is at least once: a repeat is routed a
    /// second time when the call before it was dropped while the router was
    /// taking the event, or when that call was itself a repeat of a routed
    /// event whose answer never came (the bus cannot tell it from the call
    /// that stored the event). This bus remembers the last 65,536 such
    /// calls (in memory: a repeat through another bus instance, or after a
    /// restart, is not routed).
    ///
    /// A router's refusal after the store is returned as the `Err` too;
    /// [`publish_event_stored`](Self::publish_event_stored) tells it apart.
    pub async fn publish_event(&self, event: &Event) -> Result<u64> {
        self.publish_event_stored(event).await?.into_result()
    }

    /// Publishes a pre-built event as [`publish_event`](Self::publish_event)
    /// does (the same pipeline, metrics and span), but `Ok` whenever the
    /// provider stored it: the [`Stored`] value carries the sequence and,
    /// if the router then refused the event, that refusal
    /// ([`Stored::not_routed`]). An `Err` is a publish that was refused
    /// before the store (validation, schema, encryption, the provider), or
    /// whose outcome is unknown (a transient provider error, which a retry
    /// of the same event settles).
    ///
    /// For a caller that reacts to an error by publishing again, in
    /// particular with a new event (a new id, which the provider does not
    /// deduplicate): a router's refusal is not a reason to store the event
    /// again.
    ///
    /// ```
    /// use event_bus::EventBus;
    /// use event_core::Event;
    /// use event_memory::MemoryProvider;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> event_core::Result<()> {
    /// let bus = EventBus::new(MemoryProvider::default());
    /// let event = Event::new("events.orders.created", "orders", "new", "shop",
    ///                        serde_json::json!({"id": 1}));
    /// let stored = bus.publish_event_stored(&event).await?;
    /// assert_eq!(stored.sequence, 1);
    /// if let Some(refusal) = &stored.not_routed {
    ///     // stored, but the router did not take it: do not publish a copy
    ///     eprintln!("not routed: {refusal}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn publish_event_stored(&self, event: &Event) -> Result<Stored> {
        self.run_pipeline(event, None, false).await
    }

    /// Publishes with explicit options (dedup id, expected sequence,
    /// timeout); returns the stream sequence. A router's refusal after the
    /// store is the `Err` too;
    /// [`publish_event_stored_with_options`](Self::publish_event_stored_with_options)
    /// tells it apart.
    pub async fn publish_event_with_options(
        &self,
        event: &Event,
        options: &PublishOptions,
    ) -> Result<u64> {
        self.publish_event_stored_with_options(event, options)
            .await?
            .into_result()
    }

    /// [`publish_event_stored`](Self::publish_event_stored) with explicit
    /// options: `Ok` whenever the provider stored the event, a router's
    /// refusal inside it. (With an expected sequence, a refusal taken for a
    /// failed publish matters: the event is stored, so a **new** event
    /// published next with the same expected sequence fails with
    /// [`Error::WrongLastSequence`]. The same event published again with
    /// the same options is deduplicated before the sequence is checked:
    /// `Ok` with the first sequence, and routed.)
    pub async fn publish_event_stored_with_options(
        &self,
        event: &Event,
        options: &PublishOptions,
    ) -> Result<Stored> {
        self.run_pipeline(event, Some(options), false).await
    }

    fn check_category_topic(&self, category: &str, topic: &str) -> Result<()> {
        let checked = validate_category(category).and_then(|()| validate_topic(topic));
        if checked.is_err() {
            self.inner.metrics.add_validation_error(1);
            self.inner.metrics.add_publish_error(1);
        }
        checked
    }

    /// Whether `subject` is exactly `{prefix}.{category}.{topic}` for an
    /// already validated category and topic, so validating it again can be
    /// skipped (a provider with its own `build_subject` is checked in full).
    fn is_checked_subject(&self, subject: &str, category: &str, topic: &str) -> bool {
        let prefix = self.inner.provider.subject_prefix();
        validate_category(prefix).is_ok()
            && subject
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|r| r.strip_prefix(category))
                .and_then(|r| r.strip_prefix('.'))
                == Some(topic)
    }

    /// The publish pipeline with its metrics and span, for every
    /// single-event publish call. `Err`: refused before the store.
    async fn run_pipeline(
        &self,
        event: &Event,
        options: Option<&PublishOptions>,
        subject_checked: bool,
    ) -> Result<Stored> {
        let start = Instant::now();
        let span = tracing::debug_span!(
            "a3s_event.publish",
            subject = %event.subject,
            event_id = ?event.id,
            sequence = tracing::field::Empty,
        );
        let result = self
            .pipeline(event, options, subject_checked)
            .instrument(span.clone())
            .await;
        match result {
            Ok(stored) => {
                // stored: a publish as far as the provider is concerned,
                // also when the router then refused it (counted in
                // `router_errors` by `pipeline`, not as a publish error)
                span.record("sequence", stored.sequence);
                self.inner.metrics.record_publish(start.elapsed());
                if let Some(error) = &stored.not_routed {
                    tracing::debug!(
                        parent: &span,
                        error = %error,
                        "the router refused a stored event"
                    );
                }
                Ok(stored)
            }
            Err(err) => {
                self.inner.metrics.add_publish_error(1);
                tracing::debug!(parent: &span, error = %err, "publish failed");
                Err(err)
            }
        }
    }

    async fn pipeline(
        &self,
        event: &Event,
        options: Option<&PublishOptions>,
        subject_checked: bool,
    ) -> Result<Stored> {
        let inner = &*self.inner;
        let hooks = inner.hooks.load();
        // 1.-3. The stored event is built once, owned, and handed to the
        //    provider as an `Arc` (no copy).
        let stored: Option<Arc<Event>> = self
            .check_and_encrypt(&hooks, event, subject_checked)?
            .map(Arc::new);
        // With a router, the plaintext is copied once into an `Arc` that the
        // router and (unencrypted) the provider share.
        let plain: Option<Arc<Event>> = hooks.router.as_ref().map(|_| Arc::new(event.clone()));
        // 4. provider (dedup id = event id unless the options say otherwise).
        //    With a router, a call that ends from here until the router has
        //    the event (dropped by the caller, or an error after which the
        //    event may be stored) leaves its dedup id behind, so that the
        //    caller's repeat, deduplicated by the provider, is routed.
        let dedup_id = options
            .and_then(|options| options.msg_id.as_deref())
            .unwrap_or(&event.id);
        let mut guard = hooks
            .router
            .as_ref()
            .map(|_| crate::refused::UnroutedGuard::new(&inner.unrouted, dedup_id));
        let provider = &inner.provider;
        let published = match (stored.or_else(|| plain.clone()), options) {
            (Some(shared), options) => {
                let default = PublishOptions::default();
                provider
                    .publish_shared_with_outcome(shared, options.unwrap_or(&default))
                    .await
            }
            (None, Some(options)) => provider
                .publish_with_options(event, options)
                .await
                .map(PublishOutcome::unknown),
            (None, None) => provider.publish(event).await.map(PublishOutcome::unknown),
        };
        let outcome = match published {
            Ok(outcome) => outcome,
            Err(err) => {
                // a refusal (not transient) stored nothing: no repeat needs
                // routing on its account
                if !err.is_transient()
                    && let Some(guard) = &mut guard
                {
                    guard.disarm();
                }
                return Err(err);
            }
        };
        let sequence = outcome.sequence;
        // 5. router, with the plaintext: a repeat the provider stored once
        //    was routed when it was first stored, unless the router refused
        //    it then or the call that stored it ended before routing it
        let not_routed = match (&hooks.router, plain) {
            (Some(router), Some(plain)) => {
                let route = if outcome.is_duplicate() {
                    // both taken: neither is left for a later repeat
                    inner.refused.take(&sequence) | inner.unrouted.take(dedup_id)
                } else {
                    // newly stored: an earlier call's id is settled
                    inner.unrouted.take(dedup_id);
                    true
                };
                let refusal = if route {
                    router.route_published(plain, sequence).await.err()
                } else {
                    None
                };
                if let Some(guard) = &mut guard {
                    guard.disarm();
                }
                if refusal.is_some() {
                    inner.refused.insert(sequence);
                }
                refusal
            }
            _ => None,
        };
        if not_routed.is_some() {
            inner.metrics.add_router_error(1);
        }
        Ok(Stored {
            sequence,
            not_routed,
            duplicate: outcome.duplicate,
        })
    }

    /// Steps 1 to 3 of the pipeline: the subject (unless `subject_checked`:
    /// built from a validated category and topic), the schema, on the
    /// plaintext, and encryption, bound to the event id. Returns the event to
    /// store when it differs from `event` (encrypted), `None` when `event`
    /// itself is stored.
    fn check_and_encrypt(
        &self,
        hooks: &Hooks,
        event: &Event,
        subject_checked: bool,
    ) -> Result<Option<Event>> {
        let inner = &*self.inner;
        if !subject_checked
            && let Err(err) =
                validate_publish_subject(&event.subject, inner.provider.subject_prefix())
        {
            inner.metrics.add_validation_error(1);
            return Err(err);
        }
        if let Some(validator) = &hooks.validator
            && let Err(err) = validator.validate(event)
        {
            inner.metrics.add_validation_error(1);
            return Err(err);
        }
        match &hooks.encryptor {
            None if hooks.plaintext == PlaintextPolicy::Refuse => Err(Error::Encryption(format!(
                "event {}: the bus refuses plaintext (PlaintextPolicy::Refuse) and has no \
                     encryptor: set one with set_encryptor",
                crate::text::quoted(&event.id, 64)
            ))),
            Some(encryptor) => {
                // the provider's rule, checked on the plaintext it will not
                // see: once hidden in an envelope, a payload no JSON reader
                // can parse back would be stored and fail every decryption
                // (whatever the encryptor; the provider's error)
                check_payload_depth(&event.payload)?;
                let payload = encryptor.encrypt(&event.id, &event.payload)?;
                inner.metrics.add_encrypt(1);
                Ok(Some(with_payload(event, payload)))
            }
            None => Ok(None),
        }
    }

    /// Publishes pre-built events through the pipeline as one batch; returns
    /// one result per event, in order. As with
    /// [`publish_event`](Self::publish_event), an event's `Err` can be a
    /// router's refusal after the store;
    /// [`publish_batch_stored`](Self::publish_batch_stored) tells it apart.
    ///
    /// Each event is validated (subject, schema) and encrypted as
    /// [`publish_event`](Self::publish_event) does; those that pass go to the
    /// provider in one
    /// [`publish_batch_with_outcome`](EventProvider::publish_batch_with_outcome)
    /// call (whose default calls the provider's
    /// [`publish_batch`](EventProvider::publish_batch): pipelined where the
    /// provider supports it, deduplicated by event id), then, in order, to
    /// the router. An event refused at any step gets its
    /// error at its position and does not hold up the others; as with
    /// `publish_event`, an event the router refuses is stored all the same
    /// and a retry of it is deduplicated. Each event counts once in the
    /// metrics: `publish_total` when the provider stored it (a router
    /// refusal also counts in `router_errors`), `publish_errors` otherwise;
    /// the latency recorded for each stored event is the whole batch's.
    ///
    /// The outer `Err` is the provider failing the whole batch call (no
    /// per-event results): which events it stored is then unknown, and a
    /// retry of the same events is deduplicated.
    ///
    /// Routing: as for `publish_event`, a repeat the provider deduplicates
    /// (of an event stored before, or of one earlier in the same batch) is
    /// not handed to the router again, where the provider says which events
    /// are repeats ([`EventProvider::publish_batch_with_outcome`]: the
    /// memory and NATS providers do; with one that does not, every stored
    /// event is routed, a repeat too). A repeat is routed when the router
    /// refused its first copy, or when the call that stored it ended before
    /// the router had it (the call dropped, or a transient error for the
    /// event or the whole call), whether it comes again in a batch or alone
    /// with [`publish_event`](Self::publish_event).
    ///
    /// Calling the provider's `publish_batch` (or
    /// `publish_batch_with_outcome`) directly ([`provider`](Self::provider))
    /// skips all of this: no validation, no encryption, no routing.
    pub async fn publish_batch(&self, events: &[Event]) -> Result<Vec<Result<u64>>> {
        let results = self.publish_batch_stored(events).await?;
        Ok(results
            .into_iter()
            .map(|result| result.and_then(Stored::into_result))
            .collect())
    }

    /// [`publish_batch`](Self::publish_batch) (the same pipeline, metrics
    /// and span), with an event's result `Ok` whenever the provider stored
    /// it: a router's refusal of it is inside ([`Stored::not_routed`]), as
    /// with [`publish_event_stored`](Self::publish_event_stored). An
    /// event's `Err` is a refusal before the store; the outer `Err` is the
    /// provider failing the whole batch call. The span's `failed` field
    /// counts both the events refused before the store and those the
    /// router refused, as for `publish_batch`.
    pub async fn publish_batch_stored(&self, events: &[Event]) -> Result<Vec<Result<Stored>>> {
        let start = Instant::now();
        let span = tracing::debug_span!(
            "a3s_event.publish_batch",
            events = events.len(),
            failed = tracing::field::Empty,
        );
        let result = self.batch_pipeline(events).instrument(span.clone()).await;
        let metrics = &self.inner.metrics;
        match result {
            Ok(outcomes) => {
                let latency = start.elapsed();
                let mut failed = 0u64;
                for outcome in &outcomes {
                    match outcome {
                        Ok(stored) => {
                            metrics.record_publish(latency);
                            // stored, refused by the router (counted there)
                            if stored.not_routed.is_some() {
                                failed += 1;
                            }
                        }
                        Err(_) => {
                            metrics.add_publish_error(1);
                            failed += 1;
                        }
                    }
                }
                span.record("failed", failed);
                Ok(outcomes)
            }
            Err(err) => {
                metrics.add_publish_error(u64::try_from(events.len()).unwrap_or(u64::MAX));
                tracing::debug!(parent: &span, error = %err, "batch publish failed");
                Err(err)
            }
        }
    }

    async fn batch_pipeline(&self, events: &[Event]) -> Result<Vec<Result<Stored>>> {
        let inner = &*self.inner;
        let hooks = inner.hooks.load();
        // steps 1-3 per event: `Err` refused, `Ok(stored form if not the event)`
        let mut checked: Vec<Result<Option<Event>>> = events
            .iter()
            .map(|event| self.check_and_encrypt(&hooks, event, false))
            .collect();
        let passed = checked.iter().filter(|c| c.is_ok()).count();
        // With a router, as in `pipeline`: an event whose call ends from
        // here until the router has it (dropped, or an error after which it
        // may be stored) leaves its dedup id (the event id) behind, so that
        // a repeat, deduplicated by the provider, is routed.
        let mut guards: Vec<Option<crate::refused::UnroutedGuard<'_>>> = match &hooks.router {
            Some(_) => events
                .iter()
                .zip(&checked)
                .map(|(event, checked)| {
                    checked
                        .is_ok()
                        .then(|| crate::refused::UnroutedGuard::new(&inner.unrouted, &event.id))
                })
                .collect(),
            None => Vec::new(),
        };
        // a refusal (not transient) stored nothing
        let settle = |guard: Option<&mut crate::refused::UnroutedGuard<'_>>, err: &Error| {
            if let Some(guard) = guard
                && !err.is_transient()
            {
                guard.disarm();
            }
        };
        // 4. provider: the caller's slice as it is when nothing changed
        let published = if passed == 0 {
            Ok(Vec::new())
        } else if passed == events.len() && hooks.encryptor.is_none() {
            inner.provider.publish_batch_with_outcome(events).await
        } else {
            // the encrypted events are moved out (only Ok/Err is read below)
            let batch: Vec<Event> = events
                .iter()
                .zip(&mut checked)
                .filter_map(|(event, checked)| match checked {
                    Ok(stored) => Some(stored.take().unwrap_or_else(|| event.clone())),
                    Err(_) => None,
                })
                .collect();
            inner.provider.publish_batch_with_outcome(&batch).await
        };
        let outcomes = match published {
            Ok(outcomes) => outcomes,
            Err(err) => {
                for guard in &mut guards {
                    settle(guard.as_mut(), &err);
                }
                return Err(err);
            }
        };
        let mut outcomes = outcomes.into_iter();
        let mut results: Vec<Result<Stored>> = Vec::with_capacity(events.len());
        // per event id, the first copy whose error leaves it perhaps stored
        // (transient), its guard still armed
        let mut failed: HashMap<&str, usize> = HashMap::new();
        for (i, (event, checked)) in events.iter().zip(checked).enumerate() {
            let result = match checked {
                Err(err) => Err(err),
                Ok(_) => outcomes.next().unwrap_or_else(|| {
                    Err(Error::provider(
                        inner.provider.name(),
                        format!(
                            "publish_batch returned fewer results than events (none for {})",
                            event.id
                        ),
                    ))
                }),
            };
            if let Err(err) = &result {
                settle(guards.get_mut(i).and_then(Option::as_mut), err);
                if guards.get(i).is_some_and(|g| {
                    g.as_ref()
                        .is_some_and(crate::refused::UnroutedGuard::is_armed)
                }) {
                    failed.entry(event.id.as_str()).or_insert(i);
                }
            }
            results.push(result.map(|outcome| Stored {
                sequence: outcome.sequence,
                not_routed: None,
                duplicate: outcome.duplicate,
            }));
        }
        // 5. router, with the plaintext, in order: as in `pipeline`, a
        //    repeat the provider stored once (before, or earlier in this
        //    batch) was routed then, unless the router refused it or the
        //    call that stored it ended before routing it; where the
        //    provider does not say, every stored event is routed
        if let Some(router) = &hooks.router {
            // ids the router has: taken from this batch, or before it
            let mut settled: HashSet<&str> = HashSet::new();
            for (i, (event, result)) in events.iter().zip(results.iter_mut()).enumerate() {
                let Ok(stored) = result else {
                    continue;
                };
                let id = event.id.as_str();
                // an earlier copy in this batch failed after it may have
                // been stored: this call may have stored it, not routed yet
                let failed_before = failed.get(id).is_some_and(|&j| j < i) && !settled.contains(id);
                let route = if stored.duplicate == Some(true) {
                    // both taken: neither is left for a later repeat
                    (inner.refused.take(&stored.sequence) | inner.unrouted.take(id))
                        || failed_before
                } else {
                    // routed now: what an earlier call left is settled
                    inner.refused.take(&stored.sequence);
                    inner.unrouted.take(id);
                    true
                };
                let routed = if route {
                    router
                        .route_published(Arc::new(event.clone()), stored.sequence)
                        .await
                } else {
                    Ok(())
                };
                if let Some(guard) = guards.get_mut(i).and_then(Option::as_mut) {
                    guard.disarm();
                }
                match routed {
                    // routed now, or a repeat of one routed before (kept
                    // only for the failed copies, rare)
                    Ok(()) => {
                        if failed.contains_key(id) {
                            settled.insert(id);
                        }
                    }
                    Err(error) => {
                        inner.metrics.add_router_error(1);
                        // so that publishing it again alone routes it
                        inner.refused.insert(stored.sequence);
                        stored.not_routed = Some(error);
                    }
                }
            }
            // a copy that failed after it may have been stored, of an event
            // the router has, leaves nothing behind: a retry of it is a
            // repeat of a routed event
            for (event, guard) in events.iter().zip(guards.iter_mut()) {
                if let Some(guard) = guard
                    && settled.contains(event.id.as_str())
                {
                    guard.disarm();
                }
            }
        }
        Ok(results)
    }

    /// The newest `limit` events, optionally of one category, newest first,
    /// decrypted.
    ///
    /// An event that fails to decrypt (encrypted under a key the ring no
    /// longer holds, say) fails the whole call with an
    /// [`Error::Decryption`] naming it; to list the others anyway, use
    /// [`list_events_each`](Self::list_events_each).
    pub async fn list_events(&self, category: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        self.list_events_each(category, limit)
            .await?
            .into_iter()
            .collect()
    }

    /// The newest `limit` events, as [`list_events`](Self::list_events),
    /// with one result per event: an event that fails to decrypt is an
    /// [`Error::Decryption`] naming it, in its place, and the others are
    /// listed (decrypted) all the same. A dashboard or an audit over a
    /// stream that holds a few undecryptable events reads everything it
    /// can; the raw, still encrypted events are in the provider's
    /// [`history`](EventProvider::history).
    ///
    /// The outer `Err` is the listing itself failing: an invalid
    /// `category` ([`Error::InvalidSubject`]) or the provider's error.
    ///
    /// ```
    /// use event_bus::EventBus;
    /// use event_memory::MemoryProvider;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> event_core::Result<()> {
    /// let bus = EventBus::new(MemoryProvider::default());
    /// bus.publish("orders", "created", "new order", "shop", serde_json::json!({"id": 1}))
    ///     .await?;
    /// for listed in bus.list_events_each(Some("orders"), 50).await? {
    ///     match listed {
    ///         Ok(event) => println!("{} {}", event.id, event.payload),
    ///         Err(err) => eprintln!("unreadable: {err}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_events_each(
        &self,
        category: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Result<Event>>> {
        let filter = match category {
            Some(category) => {
                validate_category(category)?;
                Some(self.inner.provider.category_subject(category))
            }
            None => None,
        };
        let events = self
            .inner
            .provider
            .history(filter.as_deref(), limit)
            .await?;
        let hooks = self.inner.hooks.load();
        if hooks.encryptor.is_none() && hooks.plaintext == PlaintextPolicy::Accept {
            return Ok(events.into_iter().map(Ok).collect());
        }
        Ok(events
            .into_iter()
            .map(|mut event| {
                if let Some(plain) = self.inner.decrypt_payload(&hooks, &event, None)? {
                    event.payload = plain;
                }
                Ok(event)
            })
            .collect())
    }

    /// Event counts per category over the newest `limit` events.
    pub async fn counts(&self, limit: usize) -> Result<EventCounts> {
        let events = self.inner.provider.history(None, limit).await?;
        let mut counts = EventCounts::default();
        for event in events {
            *counts.categories.entry(event.category).or_insert(0) += 1;
            counts.total += 1;
        }
        Ok(counts)
    }

    /// The provider's store status.
    pub async fn info(&self) -> Result<ProviderInfo> {
        self.inner.provider.info().await
    }

    /// Whether the provider's backend is reachable.
    pub async fn health(&self) -> Result<bool> {
        self.inner.provider.health().await
    }
}

/// A publish the provider stored: what
/// [`EventBus::publish_event_stored`] (and the other `_stored` calls)
/// return, with the router's refusal, if any, inside.
///
/// The event is in the stream at [`sequence`](Self::sequence) whether or not
/// the router took it; publishing a copy of it (a new id) would store it
/// twice. `#[non_exhaustive]`: read its fields, it is built by the bus.
#[derive(Debug)]
#[non_exhaustive]
#[must_use = "a router's refusal is inside: check `not_routed` (or use `into_result`)"]
pub struct Stored {
    /// The stream sequence the provider returned (for a repeat it
    /// deduplicated, the sequence of the copy already stored).
    pub sequence: u64,
    /// The router's refusal of the stored event ([`set_router`](EventBus::set_router)):
    /// `None` when the router took it or no router is set. A refused event
    /// is counted in `publish_total` and `router_errors`. To have it routed
    /// after all, publish the **same** event again through the same bus
    /// (deduplicated by the provider, handed to the router again; see
    /// [`duplicate`](Self::duplicate) for the limits).
    pub not_routed: Option<Error>,
    /// `Some(true)`: the provider found the event's dedup id inside its
    /// window and stored nothing ([`sequence`](Self::sequence) is the first
    /// copy's). Such a repeat is **not** handed to the router again (it
    /// was routed when first stored), unless the router refused it then, or
    /// a call for it ended before the router had it (dropped by its caller,
    /// or failed with a transient error: the event may have been stored;
    /// when that call was itself a repeat, the event is routed a second
    /// time, see [`EventBus::publish_event`]): this bus
    /// remembers its last 65,536 refusals and as many such calls (in
    /// memory; another bus
    /// instance, or this one after a restart, does not know them, and does
    /// not route the repeat: route it yourself then, say with
    /// `Broker::enqueue`). `Some(false)`: newly
    /// stored. `None`: not known, because the provider does not say
    /// ([`EventProvider::publish_shared_with_outcome`],
    /// [`EventProvider::publish_batch_with_outcome`]), or, for a single
    /// publish, the bus had neither a router nor an encryptor (it then
    /// publishes the caller's event as it is, and does not ask).
    pub duplicate: Option<bool>,
}

impl Stored {
    /// Whether no router refused the event (also `true` without a router).
    pub fn is_routed(&self) -> bool {
        self.not_routed.is_none()
    }

    /// What [`EventBus::publish_event`] returns for this outcome: the
    /// sequence, or the router's refusal as the error.
    pub fn into_result(self) -> Result<u64> {
        match self.not_routed {
            None => Ok(self.sequence),
            Some(error) => Err(error),
        }
    }
}

/// A copy of `event` with another payload (the payload is not cloned).
pub(crate) fn with_payload(event: &Event, payload: serde_json::Value) -> Event {
    Event {
        id: event.id.clone(),
        subject: event.subject.clone(),
        category: event.category.clone(),
        event_type: event.event_type.clone(),
        version: event.version,
        payload,
        summary: event.summary.clone(),
        source: event.source.clone(),
        timestamp: event.timestamp,
        metadata: event.metadata.clone(),
    }
}

/// Part of the reason of every event a bus refused as plaintext
/// ([`PlaintextPolicy::Refuse`]): a re-drive tells its dead letters by it.
pub(crate) const PLAINTEXT_REFUSED: &str = "the bus refuses plaintext (PlaintextPolicy::Refuse)";

impl Inner {
    /// The plaintext payload of `event` if an encryptor is set and the
    /// payload is one of its envelopes; `None` when nothing is to decrypt;
    /// a decryption error for a payload the bus's [`PlaintextPolicy`]
    /// refuses.
    pub(crate) fn decrypt_payload(
        &self,
        hooks: &Hooks,
        event: &Event,
        sequence: Option<u64>,
    ) -> Result<Option<serde_json::Value>> {
        let refuse = hooks.plaintext == PlaintextPolicy::Refuse;
        self.decrypt_payload_as(hooks, event, sequence, refuse)
    }

    /// [`decrypt_payload`](Self::decrypt_payload), refusing plaintext only
    /// if `refuse` (whatever the bus's policy): a dead letter's event,
    /// re-driven, is the bus's own plaintext copy.
    pub(crate) fn decrypt_payload_as(
        &self,
        hooks: &Hooks,
        event: &Event,
        sequence: Option<u64>,
        refuse: bool,
    ) -> Result<Option<serde_json::Value>> {
        let at = || {
            sequence
                .map(|s| format!(" (sequence {s})"))
                .unwrap_or_default()
        };
        let Some(encryptor) = &hooks.encryptor else {
            if refuse {
                self.metrics.add_decrypt_error(1);
                return Err(Error::Decryption(format!(
                    "event {}{}: {PLAINTEXT_REFUSED} and has no encryptor to read its payload \
                     with",
                    crate::text::quoted(&event.id, 64),
                    at()
                )));
            }
            return Ok(None);
        };
        if !encryptor.is_encrypted(&event.payload) {
            if refuse {
                self.metrics.add_decrypt_error(1);
                return Err(Error::Decryption(format!(
                    "event {}{}: the payload is not encrypted, and {PLAINTEXT_REFUSED}",
                    crate::text::quoted(&event.id, 64),
                    at()
                )));
            }
            return Ok(None);
        }
        match encryptor.decrypt(&event.id, &event.payload) {
            Ok(plain) => {
                self.metrics.add_decrypt(1);
                Ok(Some(plain))
            }
            Err(err) => {
                self.metrics.add_decrypt_error(1);
                let detail = match err {
                    Error::Decryption(msg) => msg,
                    other => other.to_string(),
                };
                // an encryptor that names the event itself as event-crypto
                // does (`event "<id>": ...`, the id quoted as `quoted`
                // quotes it) would have it named twice
                let id = crate::text::quoted(&event.id, 64);
                let own = format!("event {id}: ");
                let detail = detail.strip_prefix(&own).unwrap_or(&detail);
                let at = sequence
                    .map(|s| format!(" (sequence {s})"))
                    .unwrap_or_default();
                // the message becomes the dead letter's reason: an id (the
                // publisher's choice, as long as the provider allows) is
                // named by its start and length
                Err(Error::Decryption(format!("event {id}{at}: {detail}")))
            }
        }
    }
}
