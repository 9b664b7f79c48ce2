//! [`SinkDlqHandler`]: dead letters forwarded through any sink.

use crate::metadata;
use crate::sink::EventSink;
use async_trait::async_trait;
use event_core::{DeadLetterEvent, DlqHandler, Error, Event, Result, new_event_id, subject};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A [`DlqHandler`] that forwards each dead letter through an [`EventSink`]
/// (a topic, an HTTP endpoint, a handler) as an event under a configured
/// subject prefix.
///
/// The forwarded event is the dead-lettered event with:
///
/// - a **new id**, the original id in [`ORIGINAL_ID`](metadata::ORIGINAL_ID)
///   and its subject in [`ORIGINAL_SUBJECT`](metadata::ORIGINAL_SUBJECT)
///   (unless it was itself a forward, whose originals are kept): providers
///   deduplicate per stream by event id, so a dead letter with its
///   original's id, published where the original was, would be dropped as a
///   duplicate while `handle` reported success;
/// - subject `{prefix}.{original subject without its first token}`
///   (without the provider's prefix, when told one of several tokens with
///   [`with_provider_prefix`](SinkDlqHandler::with_provider_prefix))
///   (`events.orders.created` under `events.dlq` → `events.dlq.orders.created`;
///   a one-token subject is appended whole; when that would be over
///   [`MAX_SUBJECT_LEN`](event_core::subject::MAX_SUBJECT_LEN), as many of
///   those tokens as fit, else `{prefix}.unknown`: the whole original
///   subject is in the metadata), and category that subject's second token
///   (`dlq`; the token after the provider's prefix when told it);
/// - metadata [`DLQ_REASON`](metadata::DLQ_REASON),
///   [`DLQ_ORIGINAL_SUBJECT`](metadata::DLQ_ORIGINAL_SUBJECT),
///   [`DLQ_ATTEMPTS`](metadata::DLQ_ATTEMPTS),
///   [`DLQ_FIRST_FAILURE_AT`](metadata::DLQ_FIRST_FAILURE_AT) (when known),
///   [`DLQ_SUBSCRIBER`](metadata::DLQ_SUBSCRIBER) (when known) and
///   [`DLQ_DEAD_LETTERED_AT`](metadata::DLQ_DEAD_LETTERED_AT).
///
/// The forward carries the event as the handler saw it: a consumer of an
/// encrypting bus dead-letters the **decrypted** event. Through a sink that
/// publishes to the provider itself ([`TopicSink::same_subject`](crate::TopicSink::same_subject),
/// [`TopicSink::new`](crate::TopicSink::new)) or to an HTTP endpoint, the
/// payload leaves in clear; forward through the bus's pipeline
/// ([`TopicSink::unchanged_through_bus`](crate::TopicSink::unchanged_through_bus),
/// feature `bus`) to store dead letters encrypted (under the forward's id).
///
/// A bus subscription whose filter covers the prefix (`events.>`) receives
/// these forwards too; one it cannot read (the envelope of an event it
/// could not decrypt, still bound to the original id, or plaintext under
/// `PlaintextPolicy::Refuse`) is recognised as a dead letter by its
/// [`DLQ_REASON`](metadata::DLQ_REASON) and terminated for that
/// subscriber, not dead-lettered (forwarded) again.
///
/// A forwarded dead letter is larger than its event (the failure in its
/// metadata): the dead letter of an event near the sink's provider's
/// limit, or with a long reason, is refused ([`Error::PayloadTooLarge`];
/// through an `HttpSink`, feature `http`, a `413 Payload Too Large` answer,
/// or in binary mode, where the reason and the metadata are headers, a
/// `431 Request Header Fields Too Large`).
/// Refused, it would be offered again and again, then lost to the
/// consumer group, so `handle` forwards a smaller form instead, the first
/// that fits of (each logged as a warning):
///
/// 1. the reason ([`DLQ_REASON`](metadata::DLQ_REASON)) cut to its first
///    4,096 characters, then `…` and its length in bytes; the event whole;
/// 2. the event without its payload (`null`) and its own metadata (the
///    forward's is kept: original id and subject, the failure), its
///    summary, source and type cut to 256 characters, marked with
///    [`DLQ_PAYLOAD_DROPPED`](metadata::DLQ_PAYLOAD_DROPPED) (what was left
///    out, and the limit); the event itself is still in its stream.
///
/// `handle` returns the sink's error, so the caller keeps the original event
/// unacknowledged; an HTTP answer worth retrying (an `HttpSink`'s `503`,
/// `429` ..., feature `http`)
/// comes back as [`Error::Connection`]: the dead-letter endpoint is down,
/// which a consumer runner waits out instead of giving up on the dead
/// letter. `list` returns the most recent dead letters this handler
/// forwarded (at most [`with_history`](Self::with_history), default 1,000);
/// `count` is how many it forwarded in total.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
/// use event_core::{DeadLetterEvent, DlqHandler, Event};
/// use event_routing::{CollectorSink, SinkDlqHandler};
/// use std::sync::Arc;
///
/// let sink = Arc::new(CollectorSink::new("dlq"));
/// let dlq = SinkDlqHandler::new(sink.clone(), "events.dlq")?;
/// let event = Event::new("events.orders.created", "orders", "s", "shop", serde_json::json!({}));
/// dlq.handle(DeadLetterEvent::new(event, "handler failed").with_attempts(5)).await?;
///
/// let forwarded = &sink.events()[0];
/// assert_eq!(forwarded.subject, "events.dlq.orders.created");
/// assert_eq!(forwarded.metadata["dlqattempts"], "5");
/// assert_eq!(forwarded.metadata["dlqoriginalsubject"], "events.orders.created");
/// # Ok(()) }
/// ```
pub struct SinkDlqHandler {
    sink: Arc<dyn EventSink>,
    prefix: String,
    /// Tokens of the provider's prefix: stripped from the original
    /// subject, and the forward's category is the token after them.
    provider_prefix_tokens: usize,
    history: usize,
    recent: Mutex<VecDeque<DeadLetterEvent>>,
    forwarded: AtomicU64,
}

impl std::fmt::Debug for SinkDlqHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkDlqHandler")
            .field("sink", &self.sink.name())
            .field("prefix", &self.prefix)
            .field("forwarded", &self.forwarded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SinkDlqHandler {
    /// A handler forwarding through `sink` under `subject_prefix` (one or more
    /// literal tokens, [`Error::InvalidSubject`] otherwise). A prefix that
    /// leaves no room for the fallback subject `{prefix}.unknown` within
    /// [`MAX_SUBJECT_LEN`](subject::MAX_SUBJECT_LEN) (over 1,016 bytes) is
    /// [`Error::InvalidConfig`]: the dead letter of a long subject could not
    /// be forwarded.
    pub fn new(sink: Arc<dyn EventSink>, subject_prefix: impl Into<String>) -> Result<Self> {
        let prefix = subject_prefix.into();
        subject::validate_subject(&prefix)?;
        if prefix.len() + ".unknown".len() > subject::MAX_SUBJECT_LEN {
            return Err(Error::invalid_config(
                "subject_prefix",
                format!(
                    "the dead-letter prefix is {} bytes: at most {} leave room for the \
                     fallback subject `<prefix>.unknown` within {} bytes",
                    prefix.len(),
                    subject::MAX_SUBJECT_LEN - ".unknown".len(),
                    subject::MAX_SUBJECT_LEN
                ),
            ));
        }
        Ok(Self {
            sink,
            prefix,
            provider_prefix_tokens: 1,
            history: 1000,
            recent: Mutex::new(VecDeque::new()),
            forwarded: AtomicU64::new(0),
        })
    }

    /// Keeps the newest `entries` dead letters for [`list`](DlqHandler::list)
    /// (0 keeps none).
    #[must_use]
    pub fn with_history(mut self, entries: usize) -> Self {
        self.history = entries;
        self
    }

    /// Tells the handler the subject prefix of the provider whose events
    /// it dead-letters and that its forwards go to (one or more literal
    /// tokens, [`Error::InvalidSubject`] otherwise), for a prefix of more
    /// than one token: the handler cannot know it from its sink, and
    /// otherwise takes it to be one token. Under `acme.events`, with the
    /// handler's prefix `acme.events.dlq`, the forward of
    /// `acme.events.orders.created` is then `acme.events.dlq.orders.created`,
    /// category `dlq` (without it: `acme.events.dlq.events.orders.created`,
    /// category `events`).
    ///
    /// ```
    /// # fn main() -> event_core::Result<()> {
    /// use event_core::{DeadLetterEvent, Event};
    /// use event_routing::{CollectorSink, SinkDlqHandler};
    /// use std::sync::Arc;
    ///
    /// let dlq = SinkDlqHandler::new(Arc::new(CollectorSink::new("dlq")), "acme.events.dlq")?
    ///     .with_provider_prefix("acme.events")?;
    /// let event = Event::new("acme.events.orders.created", "orders", "s", "shop", serde_json::json!({}));
    /// let forward = dlq.forwarded_event(&DeadLetterEvent::new(event, "failed"))?;
    /// assert_eq!(forward.subject, "acme.events.dlq.orders.created");
    /// assert_eq!(forward.category, "dlq");
    /// # Ok(()) }
    /// ```
    pub fn with_provider_prefix(mut self, prefix: &str) -> Result<Self> {
        subject::validate_subject(prefix)?;
        self.provider_prefix_tokens = prefix.split('.').count();
        Ok(self)
    }

    /// The subject prefix.
    pub fn subject_prefix(&self) -> &str {
        &self.prefix
    }

    /// The sink's error as `handle` returns it: an HTTP answer worth
    /// retrying (`is_retryable`: `503`, `429` ...) says the dead-letter
    /// endpoint is down, which is [`Error::Connection`] (transient) for the
    /// caller, who judges a DLQ's refusal by [`Error::is_transient`] (a
    /// consumer runner keeps offering the dead letter, where it gives up on
    /// a refusal for good).
    fn judged(&self, err: Error) -> Error {
        #[cfg(feature = "http")]
        if let Some(answer) = event_cloudevents::http::client::status_error(&err)
            && answer.is_retryable()
        {
            return Error::Connection(format!(
                "dead-letter sink `{}` is unavailable: {answer}",
                self.sink.name()
            ));
        }
        err
    }

    /// `{prefix}.{rest}`; when that is over [`subject::MAX_SUBJECT_LEN`]
    /// (an original subject near the limit), the prefix and as many of
    /// `rest`'s leading tokens as fit, else `{prefix}.unknown`.
    fn subject_within_limit(&self, rest: &str) -> String {
        let full = format!("{}.{rest}", self.prefix);
        if full.len() <= subject::MAX_SUBJECT_LEN {
            return full;
        }
        let room = subject::MAX_SUBJECT_LEN.saturating_sub(self.prefix.len() + 1);
        // the longest run of whole leading tokens within `room`
        let kept = rest
            .match_indices('.')
            .map(|(at, _)| at)
            .take_while(|&at| at <= room)
            .last()
            .map_or("unknown", |at| &rest[..at]);
        format!("{}.{kept}", self.prefix)
    }

    /// The event forwarded for `dead_letter`.
    pub fn forwarded_event(&self, dead_letter: &DeadLetterEvent) -> Result<Event> {
        let original = if dead_letter.original_subject.is_empty() {
            &dead_letter.event.subject
        } else {
            &dead_letter.original_subject
        };
        // the original subject without the provider's prefix (one token
        // unless told otherwise), or whole when it has no more tokens
        let rest = original
            .splitn(self.provider_prefix_tokens + 1, '.')
            .nth(self.provider_prefix_tokens)
            .unwrap_or(original.as_str());
        let mut event = dead_letter.event.clone();
        event.id = new_event_id();
        event.subject = self.subject_within_limit(rest);
        // The category is the subject's, as for a topic sink's forward.
        if let Some(category) = event.subject.split('.').nth(self.provider_prefix_tokens) {
            event.category = category.to_owned();
        }
        subject::validate_subject(&event.subject).map_err(|e| {
            Error::invalid_subject(
                event.subject.clone(),
                format!("dead-letter subject for {original:?} is invalid: {e}"),
            )
        })?;
        let m = &mut event.metadata;
        m.entry(metadata::ORIGINAL_ID.to_owned())
            .or_insert_with(|| dead_letter.event.id.clone());
        m.entry(metadata::ORIGINAL_SUBJECT.to_owned())
            .or_insert_with(|| original.clone());
        m.insert(metadata::DLQ_REASON.to_owned(), dead_letter.reason.clone());
        m.insert(metadata::DLQ_ORIGINAL_SUBJECT.to_owned(), original.clone());
        m.insert(
            metadata::DLQ_ATTEMPTS.to_owned(),
            dead_letter.delivery_attempts.to_string(),
        );
        // Unknown ones are removed, not left over from an earlier letter
        // (the event may be a forwarded dead letter itself).
        match dead_letter.first_failure_at {
            Some(at) => m.insert(metadata::DLQ_FIRST_FAILURE_AT.to_owned(), at.to_string()),
            None => m.remove(metadata::DLQ_FIRST_FAILURE_AT),
        };
        match &dead_letter.subscriber {
            Some(subscriber) => m.insert(metadata::DLQ_SUBSCRIBER.to_owned(), subscriber.clone()),
            None => m.remove(metadata::DLQ_SUBSCRIBER),
        };
        m.insert(
            metadata::DLQ_DEAD_LETTERED_AT.to_owned(),
            dead_letter.dead_lettered_at.to_string(),
        );
        Ok(event)
    }
}

/// Characters of a reason kept when it is cut to make a forward fit.
const REASON_CHARS: usize = 4096;

/// Characters of the event's strings kept in a forward without its payload.
const STUB_CHARS: usize = 256;

/// `text`, or its first `chars` characters, `…` and its length in bytes;
/// `None` when it is no longer than that.
fn cut(text: &str, chars: usize) -> Option<String> {
    let (end, _) = text.char_indices().nth(chars)?;
    Some(format!("{}… ({} bytes)", &text[..end], text.len()))
}

/// The limit `err` says a dead letter is over, for the note of its
/// smaller form: a provider's [`Error::PayloadTooLarge`], or an HTTP
/// endpoint's `413 Payload Too Large` or `431 Request Header Fields Too
/// Large` (feature `http`: in binary mode the reason and the metadata are
/// headers); `None` for any other error.
fn over_limit(err: &Error) -> Option<String> {
    if let Error::PayloadTooLarge { max, .. } = err {
        return Some(format!("the DLQ provider's limit ({max} bytes)"));
    }
    #[cfg(feature = "http")]
    if let Some(answer) = event_cloudevents::http::client::status_error(err) {
        match answer.status {
            413 => return Some("the dead-letter endpoint's limit (HTTP 413)".to_owned()),
            431 => {
                return Some("the dead-letter endpoint's header limit (HTTP 431)".to_owned());
            }
            _ => {}
        }
    }
    None
}

/// `forward` without its payload and the event's own metadata (see
/// [`SinkDlqHandler`], "a smaller form"); `limit` names the limit it was
/// over.
fn without_payload(mut forward: Event, limit: &str) -> Event {
    let payload_len = serde_json::to_vec(&forward.payload).map_or(0, |json| json.len());
    let kept = [
        metadata::ORIGINAL_ID,
        metadata::ORIGINAL_SUBJECT,
        metadata::HOPS,
        metadata::DLQ_REASON,
        metadata::DLQ_ORIGINAL_SUBJECT,
        metadata::DLQ_ATTEMPTS,
        metadata::DLQ_TRIGGER,
        metadata::DLQ_FIRST_FAILURE_AT,
        metadata::DLQ_DEAD_LETTERED_AT,
        metadata::DLQ_SUBSCRIBER,
    ];
    let left_out = forward
        .metadata
        .keys()
        .filter(|key| !kept.contains(&key.as_str()))
        .count();
    forward
        .metadata
        .retain(|key, _| kept.contains(&key.as_str()));
    for value in forward.metadata.values_mut() {
        if let Some(short) = cut(value, REASON_CHARS) {
            *value = short;
        }
    }
    for text in [
        &mut forward.summary,
        &mut forward.source,
        &mut forward.event_type,
    ] {
        if let Some(short) = cut(text, STUB_CHARS) {
            *text = short;
        }
    }
    forward.payload = serde_json::Value::Null;
    forward.metadata.insert(
        metadata::DLQ_PAYLOAD_DROPPED.to_owned(),
        format!(
            "the dead letter was over {limit}: the event's \
             payload ({payload_len} bytes as JSON) and its {left_out} metadata entries were \
             left out; the event is still in its stream"
        ),
    );
    forward
}

/// Delivers `letter`, a dead letter whose failure's reason is `reason`,
/// through `sink`, or a smaller form of it when the sink's provider refuses
/// it as too large (see [`SinkDlqHandler`], "a smaller form"); the sink's
/// error as it is. Used by [`SinkDlqHandler`] and a broker trigger's
/// dead-letter sink.
pub(crate) async fn deliver_fitting(
    sink: &dyn EventSink,
    mut letter: Event,
    reason: &str,
) -> Result<()> {
    let limit = match sink.deliver(&letter).await {
        Err(err) => match over_limit(&err) {
            Some(limit) => limit,
            None => return Err(err),
        },
        Ok(()) => return Ok(()),
    };
    let named = letter
        .metadata
        .get(metadata::ORIGINAL_ID)
        .unwrap_or(&letter.id);
    let id = cut(named, 64).unwrap_or_else(|| named.clone());
    if let Some(reason_cut) = cut(reason, REASON_CHARS) {
        letter
            .metadata
            .insert(metadata::DLQ_REASON.to_owned(), reason_cut);
        match sink.deliver(&letter).await {
            Err(err) if over_limit(&err).is_some() => {}
            Ok(()) => {
                tracing::warn!(
                    sink = %sink.name(),
                    event_id = ?id,
                    reason_bytes = reason.len(),
                    %limit,
                    "dead letter over the dead-letter sink's limit: sent with its \
                     reason cut"
                );
                return Ok(());
            }
            Err(err) => return Err(err),
        }
    }
    sink.deliver(&without_payload(letter, &limit)).await?;
    tracing::warn!(
        sink = %sink.name(),
        event_id = ?id,
        %limit,
        "dead letter over the dead-letter sink's limit: sent without the event's \
         payload (the event is still in its stream)"
    );
    Ok(())
}

#[async_trait]
impl DlqHandler for SinkDlqHandler {
    async fn handle(&self, dead_letter: DeadLetterEvent) -> Result<()> {
        let event = self.forwarded_event(&dead_letter)?;
        deliver_fitting(&*self.sink, event, &dead_letter.reason)
            .await
            .map_err(|err| self.judged(err))?;
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        if self.history > 0 {
            let mut recent = self.recent.lock();
            if recent.len() == self.history {
                recent.pop_front();
            }
            recent.push_back(dead_letter);
        }
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetterEvent>> {
        Ok(self
            .recent
            .lock()
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn count(&self) -> Result<usize> {
        Ok(usize::try_from(self.forwarded.load(Ordering::Relaxed)).unwrap_or(usize::MAX))
    }
}
