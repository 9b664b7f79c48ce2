use super::fit;
use crate::bus::EventBus;
use crate::hooks::PlaintextPolicy;
use crate::naming::durable_consumer_name;
use async_trait::async_trait;
use event_core::subject::validate_category;
use event_core::{
    DeadLetterEvent, DlqHandler, Error, Event, EventEncryptor, EventProvider, MAX_PAYLOAD_DEPTH,
    PublishOptions, Result, SubscribeOptions, Subscription, check_payload_depth,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// `event_type` of the events a [`ProviderDlqHandler`] publishes.
pub const DEAD_LETTER_EVENT_TYPE: &str = "a3s.dead_letter";

/// Metadata key: id of the dead-lettered event.
const META_ORIGINAL_ID: &str = "a3s.original_id";
/// Metadata key: subject of the dead-lettered event.
const META_ORIGINAL_SUBJECT: &str = "a3s.original_subject";
/// Metadata key set on re-driven events: the id they were re-driven from.
pub(crate) const META_REDRIVEN_FROM: &str = "a3s.redriven_from";

/// A dead-letter queue stored on a provider: every dead letter is published
/// as a new event, so it survives restarts (on a persistent provider) and can
/// be re-driven.
///
/// A dead letter for an event of category `market` is published to
/// `{prefix}.dlq.market` (the DLQ category is configurable) with a **new
/// event id** (dedup is per stream: reusing the original id would make the
/// provider swallow it as a duplicate), `event_type`
/// [`DEAD_LETTER_EVENT_TYPE`], the whole [`DeadLetterEvent`] as payload and
/// the original id and subject in metadata (`a3s.original_id`,
/// `a3s.original_subject`). Note that `{prefix}.>` subscribers see dead
/// letters too. A bus subscription that cannot read one of them (a bus with
/// [`PlaintextPolicy::Refuse`](crate::PlaintextPolicy::Refuse) and a
/// handler without [`with_encryptor`](Self::with_encryptor), or a handler
/// encrypting under a key the bus does not hold) does not dead-letter it
/// again (it is in the DLQ already, and a new letter would only nest it):
/// it terminates it for that subscriber, logs a `WARN` and counts it in
/// `dlq_dropped`. Give the handler the bus's encryptor, or keep such
/// subscribers off the DLQ subjects. Only events of that type are dead letters: other events
/// published under the DLQ subjects (an event-routing `SinkDlqHandler`
/// forwarding under `{prefix}.dlq`, say) are not listed, counted or
/// re-driven.
///
/// An event is stored once per subscriber (see
/// [`DeadLetterEvent::subscriber`]) inside the provider's dedup window,
/// however often its dead letter is handed over: a retry after a lost
/// reply, or its spare
/// delivery (see [`PendingEvent::is_final_delivery`](event_core::PendingEvent::is_final_delivery))
/// failing again after the final delivery was dead-lettered but not settled
/// (the first dead letter, with its attempt count, is kept).
///
/// Dead letters carry the event's plaintext (the bus decrypts before it
/// dead-letters). Give the handler an encryptor
/// ([`with_encryptor`](Self::with_encryptor), normally the bus's) so they are
/// stored encrypted, bound to the dead letter's own id. A handler with an
/// encryptor still reads letters stored in plaintext (written before it had
/// one), and so would read one planted by anyone who can write to the
/// stream: a bus with [`PlaintextPolicy::Refuse`](crate::PlaintextPolicy::Refuse)
/// therefore re-drives only letters stored encrypted (see
/// [`redrive`](Self::redrive)); [`list`](DlqHandler::list) and
/// [`count`](DlqHandler::count), which know no bus, show them all.
///
/// The dead letter nests the event's payload two levels deeper, so the
/// dead letter of an event whose payload nests more than
/// [`MAX_PAYLOAD_DEPTH`]` - 2` levels deep is refused
/// ([`Error::Serialization`], encrypted or not, as a provider refuses a
/// payload it could not read back; a consumer runner then leaves the event
/// unsettled and counts it).
///
/// # Dead letters over the provider's limit
///
/// A dead letter is larger than its event (the record around it, the
/// reason, the envelope when the handler encrypts), so the dead letter of
/// an event close to the provider's maximum size, or with a long reason,
/// is refused by the provider ([`Error::PayloadTooLarge`]). Refused, it
/// would be offered again and again, so `handle` stores a smaller form
/// instead, the first that fits of:
///
/// 1. the dead letter with its reason cut to its first 4,096 characters,
///    then `…` and its length in bytes; the event whole, so it is
///    re-driven as any other;
/// 2. the dead letter without the event's payload and metadata, every
///    string of the record cut to 256 characters (the reason to 4,096),
///    and the event's metadata holding only [`META_PAYLOAD_DROPPED`](crate::dlq::META_PAYLOAD_DROPPED)
///    (`a3s.dlq_payload_dropped`: what was left out, and the limit). It
///    still names the event (id, subject, category, type, source,
///    timestamp), who failed it and why; the event itself is still in its
///    stream. [`redrive`](Self::redrive) and
///    [`redrive_matching`](Self::redrive_matching) skip such a letter
///    (counted in [`RedriveReport::skipped`]).
///
/// Each is logged as a warning. Only when the smallest form is refused too
/// (a provider limit of a few KiB) does `handle` return the error. The
/// cut keeps the start of the reason, which names the failure, and drops
/// its tail before anything of the event: the event is what re-drive needs.
/// The summary of every dead letter (in clear, even when the handler
/// encrypts) quotes only the first 200 characters of the reason.
///
/// [`redrive`](Self::redrive) republishes dead-lettered events to their
/// original subjects through a bus. It does not remove them from the
/// stream: [`list`](DlqHandler::list) and [`count`](DlqHandler::count) go
/// on showing re-driven dead letters (until the stream's retention drops
/// them), and re-drive keeps its own position, so none is re-driven twice.
/// [`redrive_matching`](Self::redrive_matching) re-drives the letters a
/// predicate selects (one subscriber's, one event's, or those `redrive`
/// skipped once their cause is fixed), without that position.
///
/// ```
/// use event_bus::{EventBus, dlq::ProviderDlqHandler};
/// use event_core::{DeadLetterEvent, DlqHandler, Event, EventProvider};
/// use event_memory::MemoryProvider;
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> event_core::Result<()> {
/// let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
/// let bus = EventBus::from_arc(provider.clone());
/// let dlq = Arc::new(ProviderDlqHandler::new(provider));
/// bus.set_dlq_handler(dlq.clone());
///
/// let event = Event::new("events.orders.created", "orders", "Order 7", "shop", serde_json::json!({"id": 7}));
/// dlq.handle(DeadLetterEvent::new(event.clone(), "handler failed").with_attempts(5)).await?;
/// assert_eq!(dlq.list(10).await?[0].event.id, event.id);
///
/// let report = dlq.redrive(&bus, 100).await?;
/// assert_eq!(report.redriven, 1);
/// let orders = bus.list_events(Some("orders"), 10).await?;
/// assert_eq!(orders[0].metadata["a3s.redriven_from"], event.id);
/// # Ok(()) }
/// ```
pub struct ProviderDlqHandler {
    provider: Arc<dyn EventProvider>,
    category: String,
    encryptor: Option<Arc<dyn EventEncryptor>>,
    redrive_idle: Duration,
}

impl std::fmt::Debug for ProviderDlqHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderDlqHandler")
            .field("provider", &self.provider.name())
            .field("category", &self.category)
            .field("encrypted", &self.encryptor.is_some())
            .finish_non_exhaustive()
    }
}

/// What [`ProviderDlqHandler::redrive`] or
/// [`ProviderDlqHandler::redrive_matching`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Dead letters republished to their original subject (and, by
    /// `redrive`, removed from its re-drive queue).
    pub redriven: usize,
    /// Dead letters that could not be decoded or decrypted, that were
    /// stored without their event's payload (see "Dead letters over the
    /// provider's limit" on [`ProviderDlqHandler`]), that are stored in
    /// plaintext while the re-driving bus refuses plaintext (see
    /// [`redrive`](ProviderDlqHandler::redrive)), or whose event
    /// the bus refused for good (invalid subject, schema validation, too
    /// large, not serializable: a schema registered since the event was
    /// published, say), logged with the reason. `redrive` terminated them
    /// in its re-drive queue, so later calls go on with the letters behind
    /// them and never offer them again. They stay in the stream:
    /// [`list`](DlqHandler::list) still shows them, and once the cause is
    /// fixed [`redrive_matching`](ProviderDlqHandler::redrive_matching)
    /// re-drives them (not those without their event's payload: neither
    /// call can republish an event it does not hold).
    pub skipped: usize,
}

impl ProviderDlqHandler {
    /// A DLQ on `provider` under `{prefix}.dlq.>`.
    pub fn new(provider: Arc<dyn EventProvider>) -> Self {
        Self {
            provider,
            category: "dlq".to_string(),
            encryptor: None,
            redrive_idle: Duration::from_millis(200),
        }
    }

    /// Uses `{prefix}.{category}.>` instead of `{prefix}.dlq.>`; `category`
    /// must be one subject token.
    pub fn with_category(mut self, category: impl Into<String>) -> Result<Self> {
        let category = category.into();
        validate_category(&category)?;
        self.category = category;
        Ok(self)
    }

    /// Encrypts stored dead letters (and decrypts them in `list`,
    /// `redrive` and `redrive_matching`). Letters stored in plaintext
    /// (before the handler had an encryptor) are still read as they are,
    /// except that a bus with
    /// [`PlaintextPolicy::Refuse`](crate::PlaintextPolicy::Refuse) does
    /// not re-drive them (see [`redrive`](Self::redrive)).
    #[must_use]
    pub fn with_encryptor(mut self, encryptor: Arc<dyn EventEncryptor>) -> Self {
        self.encryptor = Some(encryptor);
        self
    }

    /// How long [`redrive`](Self::redrive) waits for another dead letter
    /// before it stops (default 200 ms).
    #[must_use]
    pub fn with_redrive_idle(mut self, idle: Duration) -> Self {
        self.redrive_idle = idle;
        self
    }

    /// The filter covering every dead letter: `{prefix}.{dlq}.>`.
    pub fn filter_subject(&self) -> String {
        self.provider.category_subject(&self.category)
    }

    /// The subject dead letters of `original_category` are published to.
    pub fn subject_for(&self, original_category: &str) -> String {
        let topic = if validate_category(original_category).is_ok() {
            original_category
        } else {
            "unknown"
        };
        self.provider.build_subject(&self.category, topic)
    }

    fn encode_event(&self, dead: &DeadLetterEvent) -> Result<Event> {
        let payload = serde_json::to_value(dead)?;
        // the event's payload is two levels deeper here: the provider's
        // rule, checked before an encryptor hides it in an envelope that
        // no decryption could parse back
        check_payload_depth(&payload).map_err(|_| {
            Error::Serialization(format!(
                "dead letter of event {}: its payload, two levels deeper in a dead letter, \
                 nests more than {MAX_PAYLOAD_DEPTH} levels deep there, which could not be \
                 read back",
                crate::text::quoted(&dead.event.id, 64)
            ))
        })?;
        let mut event = Event::typed(
            self.subject_for(&dead.event.category),
            self.category.clone(),
            DEAD_LETTER_EVENT_TYPE,
            1,
            format!(
                "dead letter: {}",
                fit::cut(&dead.reason, fit::SUMMARY_REASON_CHARS)
            ),
            "a3s-event-dlq",
            serde_json::Value::Null,
        )
        .with_metadata(META_ORIGINAL_ID, dead.event.id.clone())
        .with_metadata(META_ORIGINAL_SUBJECT, dead.original_subject.clone());
        event.payload = match &self.encryptor {
            Some(encryptor) => encryptor.encrypt(&event.id, &payload)?,
            None => payload,
        };
        Ok(event)
    }

    /// Whether the stored dead letter `event` is one of this handler's
    /// envelopes (never, without an encryptor).
    fn stored_encrypted(&self, event: &Event) -> bool {
        self.encryptor
            .as_ref()
            .is_some_and(|encryptor| encryptor.is_encrypted(&event.payload))
    }

    fn decode_event(&self, event: &Event) -> Result<DeadLetterEvent> {
        let payload = match &self.encryptor {
            Some(encryptor) if encryptor.is_encrypted(&event.payload) => {
                encryptor.decrypt(&event.id, &event.payload)?
            }
            _ => event.payload.clone(),
        };
        serde_json::from_value(payload).map_err(|e| {
            Error::Serialization(format!(
                "event {} on {} is not a dead letter: {e}",
                crate::text::quoted(&event.id, 64),
                fit::cut(&event.subject, 64)
            ))
        })
    }

    /// The newest `limit` dead letters, newest first, as
    /// [`list`](DlqHandler::list), with one result per letter: a letter
    /// that cannot be read (encrypted under a key the ring no longer holds,
    /// or an event of the dead-letter type that is no dead letter) is its
    /// error, naming it, in its place, and the others are read all the
    /// same ([`count`](DlqHandler::count) counts it too). The outer `Err`
    /// is the provider's.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
    /// use event_bus::dlq::ProviderDlqHandler;
    /// use event_core::{DeadLetterEvent, DlqHandler, Event};
    /// use event_memory::MemoryProvider;
    /// use std::sync::Arc;
    ///
    /// let dlq = ProviderDlqHandler::new(Arc::new(MemoryProvider::default()));
    /// let event = Event::new("events.jobs.run", "jobs", "s", "src", serde_json::json!({}));
    /// dlq.handle(DeadLetterEvent::new(event, "handler failed")).await?;
    /// for letter in dlq.list_each(50).await? {
    ///     match letter {
    ///         Ok(letter) => println!("{}: {}", letter.event.id, letter.reason),
    ///         Err(err) => eprintln!("unreadable dead letter: {err}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_each(&self, limit: usize) -> Result<Vec<Result<DeadLetterEvent>>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // other events under the DLQ subjects are passed over: read further
        // back until `limit` dead letters are found or the stream is done
        let events = self
            .read_back(limit, |events| {
                events.iter().filter(|e| is_dead_letter(e)).count() >= limit
            })
            .await?;
        Ok(events
            .iter()
            .filter(|e| is_dead_letter(e))
            .take(limit)
            .map(|e| self.decode_event(e))
            .collect())
    }

    /// Republishes up to `max` dead letters, oldest first, to their original
    /// subjects through `bus` (so they are validated, encrypted and routed
    /// like any publish), each with a **fresh event id** and the original
    /// event id in metadata `a3s.redriven_from`. The fresh id is derived
    /// from the original one, so within the provider's dedup window a
    /// retried re-drive stores nothing twice, and an event dead-lettered by
    /// several subscribers (one dead letter each) is republished once: every
    /// subscriber of its subject, those that handled it included, receives
    /// the copy once, and so does the bus's router when the letters are
    /// re-driven by one call (by later calls, within the dedup window, the
    /// router gets the copy again, as for any publish the provider
    /// deduplicates).
    ///
    /// An event dead-lettered because it did not decrypt still carries its
    /// envelope, bound to its original id: it is decrypted with the bus's
    /// encryptor (which may have got the missing key since) and republished
    /// as plaintext, so the bus encrypts it under the fresh id. One that
    /// still does not decrypt, or that `bus` has no encryptor to decrypt,
    /// is skipped (see [`RedriveReport::skipped`]).
    ///
    /// When `bus` refuses plaintext
    /// ([`PlaintextPolicy::Refuse`](crate::PlaintextPolicy::Refuse)), a dead
    /// letter stored in plaintext (not one of this handler's envelopes:
    /// every letter, for a handler without
    /// [`with_encryptor`](Self::with_encryptor)) is skipped too, with a
    /// `WARN` naming it, and counted in `decrypt_errors`: it was written
    /// before encryption was enabled, or forged by someone who can write to
    /// the stream, and republished the bus would encrypt its payload and
    /// hand it to subscribers as a genuine event. Re-drive such a letter,
    /// once you know it is genuine, from a bus with
    /// [`PlaintextPolicy::Accept`](crate::PlaintextPolicy::Accept), with
    /// [`redrive_matching`](Self::redrive_matching): `redrive` does not
    /// offer a skipped letter again. Under `Accept` such letters are
    /// re-driven as any other.
    ///
    /// Progress is kept by a durable consumer on the DLQ subjects that holds
    /// one dead letter at a time (`max_ack_pending` 1, so a call that stops
    /// at `max` leaves every later letter to the next call, in order): a dead
    /// letter is acknowledged only after its republish succeeded, so each is
    /// re-driven once, and a failed republish (the provider down, a router
    /// refusing) stops the re-drive with the error, leaving that dead
    /// letter for the next call. A letter whose event the bus refuses for
    /// good (see [`RedriveReport::skipped`]) is skipped instead, so one
    /// such letter does not block those behind it; `redrive` does not offer
    /// it again, [`redrive_matching`](Self::redrive_matching) re-drives it
    /// once its cause is fixed. Stops when `max`
    /// are done, when it reaches the newest dead letter that existed when it
    /// started, or after the idle time (see
    /// [`with_redrive_idle`](Self::with_redrive_idle)) without one.
    pub async fn redrive(&self, bus: &EventBus, max: usize) -> Result<RedriveReport> {
        let mut report = RedriveReport::default();
        if max == 0 {
            return Ok(report);
        }
        let filter = self.filter_subject();
        let last = self.provider.info().await?.last_sequence;
        let name = durable_consumer_name("a3s-dlq-redrive", &filter);
        // At most one dead letter in flight: a provider that fetches ahead
        // (NATS) would otherwise hold letters this call never hands out
        // when it stops at `max`, and the next call would pass over them
        // until their ack wait ran out (30 s), out of order.
        let options = SubscribeOptions {
            max_ack_pending: Some(1),
            ..SubscribeOptions::default()
        };
        let mut sub = match self
            .provider
            .subscribe_durable_with_options(&name, &filter, &options)
            .await
        {
            Err(Error::Unsupported { .. }) => {
                self.provider.subscribe_durable(&name, &filter).await?
            }
            other => other?,
        };
        // closed on every way out, as the contract asks: a durable hands
        // back on close (not on drop) what it fetched ahead
        let result = self
            .redrive_with(&mut *sub, bus, max, last, &mut report)
            .await;
        let closed = sub.close().await;
        result?;
        closed?;
        Ok(report)
    }

    /// The loop of [`redrive`](Self::redrive) over its subscription `sub`.
    async fn redrive_with(
        &self,
        sub: &mut dyn Subscription,
        bus: &EventBus,
        max: usize,
        last: u64,
        report: &mut RedriveReport,
    ) -> Result<()> {
        // the copies this call published (stored and routed): another
        // subscriber's dead letter of the same event is done by them
        let mut published_copies: HashSet<String> = HashSet::new();
        while report.redriven < max {
            let next = match tokio::time::timeout(self.redrive_idle, sub.next_manual_ack()).await {
                Err(_) => break,
                Ok(next) => next,
            };
            let pending = match next {
                Ok(Some(pending)) => pending,
                Ok(None) => break,
                Err(Error::Lagged { .. }) => continue,
                Err(err @ Error::Undecodable { sequence, .. }) => {
                    tracing::error!(error = %err, "undecodable message in the DLQ stream");
                    report.skipped += 1;
                    if sequence >= last {
                        break;
                    }
                    continue;
                }
                Err(err) => return Err(err),
            };
            let sequence = pending.received.sequence;
            if !is_dead_letter(&pending.received.event) {
                // another publisher's event under the DLQ subjects: not a
                // dead letter, passed over (not counted as skipped)
                tracing::debug!(
                    sequence,
                    event_id = ?pending.received.event.id,
                    "passing over an event under the DLQ subjects that is not a dead letter"
                );
                pending.term().await?;
                if sequence >= last {
                    break;
                }
                continue;
            }
            let outcome = match self.decode_event(&pending.received.event) {
                Ok(dead) => {
                    self.republish(bus, &pending.received.event, dead, &mut published_copies)
                        .await
                }
                Err(err) => {
                    tracing::error!(sequence, error = %err, "skipping an unreadable dead letter");
                    Ok(Republished::Skipped)
                }
            };
            match outcome {
                Ok(Republished::Done) => {
                    pending.ack().await?;
                    report.redriven += 1;
                }
                Ok(Republished::Skipped) => {
                    pending.term().await?;
                    report.skipped += 1;
                }
                Err(err) => {
                    // keep the dead letter for the next re-drive (a failed
                    // nak leaves it to its ack wait); the caller gets the
                    // republish's error
                    if let Err(nak) = pending.nak().await {
                        tracing::warn!(sequence, error = %nak, "could not hand a dead letter back after a failed re-drive");
                    }
                    return Err(err);
                }
            }
            if sequence >= last {
                break;
            }
        }
        Ok(())
    }

    /// Re-drives the dead letters still in the stream that `select` picks,
    /// oldest first, at most `max` of them: one subscriber's letters, one
    /// event's, those with a given reason, or letters [`redrive`](Self::redrive)
    /// skipped for good once their cause is fixed (the missing key added to
    /// the bus's encryptor, the schema fixed).
    ///
    /// Each selected letter is republished exactly as by
    /// [`redrive`](Self::redrive) (one shared path): to its original subject
    /// through `bus`, its event decrypted first if it is still an envelope,
    /// with the id derived from the original id and the original id in
    /// metadata `a3s.redriven_from`; the letters of one event selected in one
    /// call are republished once (each counts in
    /// [`RedriveReport::redriven`]). A selected letter whose event still
    /// does not decrypt, that is stored in plaintext while the bus refuses
    /// plaintext (see [`redrive`](Self::redrive)), or that the bus refuses
    /// for good (invalid subject,
    /// schema validation, too large, not serializable), is logged and counted
    /// in [`RedriveReport::skipped`], and the call goes on; any other
    /// failure to republish (the provider down, a router refusing) stops the
    /// call with that error, after the letters before it were republished.
    /// Letters that cannot be decoded (their DLQ encryptor lacks the key)
    /// cannot be shown to `select`: they are logged and counted in
    /// `skipped` too. Other events under the DLQ subjects are passed over.
    ///
    /// The letters are read with the provider's
    /// [`history`](EventProvider::history) over
    /// [`filter_subject`](Self::filter_subject): nothing is acknowledged or
    /// removed, and the position of [`redrive`](Self::redrive) is neither
    /// used nor moved. So the two do not know of each other:
    ///
    /// - a letter `redrive` already republished **is republished again** by
    ///   `redrive_matching` when selected, and a letter `redrive_matching`
    ///   republished is republished again by `redrive` when its position
    ///   reaches that letter. The copy has the same id both times, so inside
    ///   the provider's dedup window the provider stores nothing new, and
    ///   neither subscribers nor (where the provider reports duplicates, see
    ///   [`Stored::duplicate`](crate::Stored::duplicate)) the bus's router
    ///   get it again; **after the window a second copy is stored and
    ///   delivered**. When that matters, select only
    ///   letters not re-driven yet (by the event id `redrive` logged as
    ///   skipped, say);
    /// - every call reads the whole DLQ stream and decodes its letters up to
    ///   the `max`-th selected one: meant for an operator's occasional
    ///   repair, not a loop.
    ///
    /// ```
    /// use event_bus::{EventBus, dlq::ProviderDlqHandler};
    /// use event_core::{DeadLetterEvent, DlqHandler, Event, EventProvider};
    /// use event_memory::MemoryProvider;
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> event_core::Result<()> {
    /// let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    /// let bus = EventBus::from_arc(provider.clone());
    /// let dlq = ProviderDlqHandler::new(provider);
    /// for (n, subscriber) in [(1, "billing"), (2, "mailer"), (3, "billing")] {
    ///     let event = Event::new("events.orders.created", "orders", "Order", "shop", serde_json::json!({"n": n}));
    ///     dlq.handle(DeadLetterEvent::new(event, "handler failed").with_subscriber(subscriber)).await?;
    /// }
    ///
    /// // only the billing subscriber's letters
    /// let report = dlq
    ///     .redrive_matching(&bus, 100, |dead| dead.subscriber.as_deref() == Some("billing"))
    ///     .await?;
    /// assert_eq!((report.redriven, report.skipped), (2, 0));
    /// let orders = bus.list_events(Some("orders"), 10).await?;
    /// let ns: Vec<_> = orders.iter().map(|e| e.payload["n"].clone()).collect();
    /// assert_eq!(ns, [3, 1]); // newest first
    ///
    /// // `redrive` has its own position: it still goes over all three
    /// assert_eq!(dlq.redrive(&bus, 100).await?.redriven, 3);
    /// # Ok(()) }
    /// ```
    pub async fn redrive_matching<F>(
        &self,
        bus: &EventBus,
        max: usize,
        select: F,
    ) -> Result<RedriveReport>
    where
        F: Fn(&DeadLetterEvent) -> bool,
    {
        let mut report = RedriveReport::default();
        if max == 0 {
            return Ok(report);
        }
        let stored = self.stored_events().await?;
        let mut published_copies: HashSet<String> = HashSet::new();
        // `history` is newest first
        for letter in stored.iter().rev() {
            if report.redriven >= max {
                break;
            }
            if !is_dead_letter(letter) {
                continue;
            }
            let dead = match self.decode_event(letter) {
                Ok(dead) => dead,
                Err(err) => {
                    tracing::error!(
                        letter_id = %letter.id,
                        error = %err,
                        "skipping an unreadable dead letter (it cannot be matched)"
                    );
                    report.skipped += 1;
                    continue;
                }
            };
            if !select(&dead) {
                continue;
            }
            match self
                .republish(bus, letter, dead, &mut published_copies)
                .await?
            {
                Republished::Done => report.redriven += 1,
                Republished::Skipped => report.skipped += 1,
            }
        }
        Ok(report)
    }

    /// Every event stored under [`filter_subject`](Self::filter_subject),
    /// newest first (dead letters and any other event there).
    async fn stored_events(&self) -> Result<Vec<Event>> {
        let messages = usize::try_from(self.provider.info().await?.messages).unwrap_or(usize::MAX);
        // one more than the stream holds: a full answer means events came
        // in since `info` (the oldest would be cut off), so read again
        self.read_back(messages.saturating_add(1), |_| false).await
    }

    /// The newest events under [`filter_subject`](Self::filter_subject),
    /// newest first: `fetch` of them, doubled until `enough` says so or the
    /// stream has no more.
    async fn read_back(
        &self,
        mut fetch: usize,
        enough: impl Fn(&[Event]) -> bool,
    ) -> Result<Vec<Event>> {
        let filter = self.filter_subject();
        loop {
            let events = self.provider.history(Some(&filter), fetch).await?;
            if events.len() < fetch || fetch == usize::MAX || enough(&events) {
                return Ok(events);
            }
            fetch = fetch.saturating_mul(2);
        }
    }

    /// Republishes one dead letter, `dead` (decoded from the stored event
    /// `letter`), through `bus`: the one path of [`redrive`](Self::redrive)
    /// and [`redrive_matching`](Self::redrive_matching).
    ///
    /// A letter stored in plaintext (not one of this handler's envelopes)
    /// is skipped when `bus` refuses plaintext: it was written before
    /// encryption was enabled, or forged by someone who can write to the
    /// stream, and nothing tells the two apart; republished, the bus would
    /// encrypt its payload as if it were genuine.
    ///
    /// Its event is decrypted if it is still an envelope, gets the id
    /// derived from its original id and the original id in
    /// `a3s.redriven_from`, and is published, unless `published_copies` (the
    /// copies this call published) already holds that copy. `Skipped` (and
    /// logged) when the event does not decrypt or the bus refuses it for
    /// good; an error when the publish failed otherwise (the letter should
    /// be re-driven again later).
    async fn republish(
        &self,
        bus: &EventBus,
        letter: &Event,
        dead: DeadLetterEvent,
        published_copies: &mut HashSet<String>,
    ) -> Result<Republished> {
        let letter_id = letter.id.as_str();
        if !self.stored_encrypted(letter)
            && bus.inner.hooks.load().plaintext == PlaintextPolicy::Refuse
        {
            bus.inner.metrics.add_decrypt_error(1);
            tracing::warn!(
                letter_id = ?letter_id,
                original_id = ?dead.event.id,
                original_subject = ?dead.original_subject,
                "skipping a dead letter stored in plaintext, refused under \
                 PlaintextPolicy::Refuse: written before encryption was enabled, or forged; \
                 re-drive it from a bus with PlaintextPolicy::Accept if it is genuine"
            );
            return Ok(Republished::Skipped);
        }
        if fit::payload_dropped(&dead) {
            // stored without its event's payload: there is nothing to
            // republish (the event is still in its stream)
            tracing::error!(
                %letter_id,
                original_id = ?dead.event.id,
                "skipping a dead letter stored without its event's payload (it was over the DLQ provider's limit)"
            );
            return Ok(Republished::Skipped);
        }
        let refused_plaintext = dead.reason.contains(crate::bus::PLAINTEXT_REFUSED);
        // a bus subscription's reason for an event it could not decrypt
        // (see `Inner::decrypt_payload_as`), not a handler's own error
        let undecryptable = dead.reason.starts_with(
            &Error::Decryption(format!(
                "event {} (sequence ",
                crate::text::quoted(&dead.event.id, 64)
            ))
            .to_string(),
        );
        let mut event = match opened_for_redrive(bus, dead.event, refused_plaintext, undecryptable)
        {
            Ok(event) => event,
            Err(err) => {
                tracing::error!(%letter_id, error = %err, "skipping an unreadable dead letter");
                return Ok(Republished::Skipped);
            }
        };
        // Derived from the original event's id: a re-drive retried after a
        // failure that happened after the store (a router refusal, a lost
        // reply), and the dead letters several subscribers made of one
        // event, are deduplicated by the provider instead of stored twice.
        let fresh = redriven_id(&event.id);
        if published_copies.contains(&fresh) {
            // Republished, the copy would be deduplicated in the stream and,
            // with a provider that does not report duplicates, routed again:
            // a broker attached to the bus would deliver it once more.
            return Ok(Republished::Done);
        }
        let from = std::mem::replace(&mut event.id, fresh);
        event.metadata.insert(META_REDRIVEN_FROM.to_string(), from);
        match bus.publish_event(&event).await {
            Ok(_) => {
                published_copies.insert(event.id);
                Ok(Republished::Done)
            }
            Err(err) if refuses_for_good(&err) => {
                // the event itself is refused (its schema, subject or
                // size): it would be refused again on every attempt, and in
                // `redrive` the letters behind it never re-driven
                tracing::error!(
                    %letter_id,
                    original_id = ?from_id(&event),
                    error = %err,
                    "skipping a dead letter whose event the bus refuses"
                );
                Ok(Republished::Skipped)
            }
            Err(err) => Err(err),
        }
    }
}

/// What republishing one dead letter came to (see
/// [`ProviderDlqHandler::republish`]).
enum Republished {
    /// Republished, or its copy already was by this call.
    Done,
    /// Not republished, for good: its event does not decrypt, or the bus
    /// refuses it (logged).
    Skipped,
}

/// `event` with its payload decrypted by `bus`'s encryptor when it is still
/// one of its envelopes (an event dead-lettered because it did not decrypt).
///
/// The envelope is bound to the event's original id; the re-driven copy gets
/// a fresh id, so the envelope itself could never decrypt again. The
/// plaintext is republished instead, and the bus encrypts it under the new
/// id. An envelope that still does not decrypt (its key is still missing)
/// is an [`Error::Decryption`]: the dead letter is skipped rather than
/// republished as an event no subscriber can read.
///
/// A dead letter otherwise holds the bus's own plaintext copy of the event
/// (its handler saw it decrypted), re-driven whatever the bus's
/// [`PlaintextPolicy`](crate::PlaintextPolicy). Not so one the bus made
/// because it refused the payload as plaintext (`refused_plaintext`): that
/// payload came from outside, unencrypted, and republishing it would have
/// the bus encrypt it as if it were genuine, so it is re-driven only if it
/// is an envelope after all (dead-lettered while the bus had no
/// encryptor), and skipped otherwise.
///
/// A dead letter made because its event did not decrypt (`undecryptable`:
/// its reason is a decryption error) still holds the envelope: a bus
/// without an encryptor cannot open it, and republished as it is under the
/// copy's new id it could never be opened (and the copy, stored under the
/// id a later re-drive publishes, would have that one deduplicated), so it
/// is a decryption error too, counted in `decrypt_errors`.
fn opened_for_redrive(
    bus: &EventBus,
    mut event: Event,
    refused_plaintext: bool,
    undecryptable: bool,
) -> Result<Event> {
    let hooks = bus.inner.hooks.load();
    if undecryptable && hooks.encryptor.is_none() {
        bus.inner.metrics.add_decrypt_error(1);
        return Err(Error::Decryption(format!(
            "event {}: dead-lettered because it did not decrypt, it still holds its \
             envelope, and the bus re-driving it has no encryptor to read it with",
            crate::text::quoted(&event.id, 64)
        )));
    }
    if let Some(plain) = bus
        .inner
        .decrypt_payload_as(&hooks, &event, None, refused_plaintext)?
    {
        event.payload = plain;
    }
    Ok(event)
}

/// Whether `event`, found under the DLQ subjects, is a dead letter a
/// [`ProviderDlqHandler`] stored (other publishers may use those subjects).
fn is_dead_letter(event: &Event) -> bool {
    event.event_type == DEAD_LETTER_EVENT_TYPE
}

/// Whether a republish failed because the bus refuses the event itself
/// (invalid subject, schema validation, too large, not serializable):
/// every later attempt would be refused the same way.
fn refuses_for_good(err: &Error) -> bool {
    matches!(
        err,
        Error::InvalidSubject { .. }
            | Error::SchemaValidation { .. }
            | Error::PayloadTooLarge { .. }
            | Error::Serialization(_)
    )
}

/// The original id a re-driven event carries.
fn from_id(event: &Event) -> &str {
    event
        .metadata
        .get(META_REDRIVEN_FROM)
        .map_or("", String::as_str)
}

/// The id a re-driven event gets: one per original event, stable across
/// re-drive attempts and across the dead letters of different subscribers,
/// and distinct for distinct ids (the whole id is kept: an event's id is
/// its publisher's choice, so `evt-x` and `x` are two events).
fn redriven_id(original_id: &str) -> String {
    format!("evt-redrive-{original_id}")
}

/// The dead letter's dedup id, deterministic per event and subscriber:
/// handing the same dead letter over twice (a retry after a lost reply)
/// stores it once, and so does the event's spare delivery failing again
/// after its final delivery was dead-lettered but not settled (the holder
/// died in between, or the server lost the settlement): that one counts one
/// attempt more. Each subscriber that fails the same event gets a dead
/// letter of its own (its id is hashed in: an id may hold characters a
/// dedup id cannot). A re-driven event has an id of its own.
///
/// An event id longer than [`DEDUP_ID_CHARS`] bytes is hashed too (with
/// its length, under another prefix, so it is never taken for a short
/// id): an id can be as long as the provider's limit allows, and the dedup
/// id travels with the dead letter (a header on NATS), counting towards
/// that limit.
fn dedup_id(dead_letter: &DeadLetterEvent) -> String {
    let id = &dead_letter.event.id;
    let id = if id.len() <= DEDUP_ID_CHARS {
        format!("a3s-dlq:{id}")
    } else {
        let len = (id.len() as u64).to_le_bytes();
        let hash = crate::naming::fnv1a64(&[&len, id.as_bytes()]);
        format!("a3s-dlq#{hash:016x}-{}", id.len())
    };
    match &dead_letter.subscriber {
        None => id,
        Some(subscriber) => {
            let len = (subscriber.len() as u64).to_le_bytes();
            let hash = crate::naming::fnv1a64(&[&len, subscriber.as_bytes()]);
            format!("{id}:{hash:016x}")
        }
    }
}

/// Longest event id kept as it is in a dead letter's dedup id.
const DEDUP_ID_CHARS: usize = 256;

impl ProviderDlqHandler {
    /// Publishes `dead` as a dead-letter event with `options`.
    async fn store(&self, dead: &DeadLetterEvent, options: &PublishOptions) -> Result<()> {
        let event = self.encode_event(dead)?;
        match self.provider.publish_with_options(&event, options).await {
            Err(Error::Unsupported { .. }) => self.provider.publish(&event).await.map(|_| ()),
            other => other.map(|_| ()),
        }
    }
}

#[async_trait]
impl DlqHandler for ProviderDlqHandler {
    /// Stores `dead_letter`; one the provider refuses as too large
    /// ([`Error::PayloadTooLarge`]) is stored in a smaller form: with its
    /// reason cut, else without its event's payload (see the
    /// [type docs](ProviderDlqHandler), "Dead letters over the provider's
    /// limit"). Every form has the same dedup id.
    ///
    /// # Errors
    /// What the provider returns for the whole dead letter (or, when it
    /// was too large, for the last smaller form tried);
    /// [`Error::Serialization`] for an event whose payload nests too deep
    /// to be read back from a dead letter.
    async fn handle(&self, dead_letter: DeadLetterEvent) -> Result<()> {
        let options = PublishOptions {
            msg_id: Some(dedup_id(&dead_letter)),
            ..PublishOptions::default()
        };
        let max = match self.store(&dead_letter, &options).await {
            Err(Error::PayloadTooLarge { max, .. }) => max,
            other => return other,
        };
        let id = fit::cut(&dead_letter.event.id, 64);
        if let Some(cut) = fit::with_reason_cut(&dead_letter) {
            match self.store(&cut, &options).await {
                Err(Error::PayloadTooLarge { .. }) => {}
                Ok(()) => {
                    tracing::warn!(
                        event_id = ?id,
                        subject = %fit::cut(&dead_letter.event.subject, 64),
                        reason_bytes = dead_letter.reason.len(),
                        max,
                        "dead letter over the DLQ provider's limit: stored with its reason cut"
                    );
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
        }
        self.store(&fit::without_payload(&dead_letter, max), &options)
            .await?;
        tracing::warn!(
            event_id = ?id,
            subject = %fit::cut(&dead_letter.event.subject, 64),
            max,
            "dead letter over the DLQ provider's limit: stored without the event's payload \
             (re-drive skips it; the event is still in its stream)"
        );
        Ok(())
    }

    /// The newest `limit` dead letters, newest first. One letter that
    /// cannot be read (encrypted under a key the ring no longer holds, or
    /// an event of the dead-letter type that is no dead letter) fails the
    /// whole call, naming it; [`list_each`](ProviderDlqHandler::list_each)
    /// reads the others.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetterEvent>> {
        self.list_each(limit).await?.into_iter().collect()
    }

    async fn count(&self) -> Result<usize> {
        Ok(self
            .stored_events()
            .await?
            .iter()
            .filter(|e| is_dead_letter(e))
            .count())
    }
}
