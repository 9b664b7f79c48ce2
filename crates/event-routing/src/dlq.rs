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
///   (`events.orders.created` under `events.dlq` → `events.dlq.orders.created`;
///   a one-token subject is appended whole), and category that subject's
///   second token (`dlq`);
/// - metadata [`DLQ_REASON`](metadata::DLQ_REASON),
///   [`DLQ_ORIGINAL_SUBJECT`](metadata::DLQ_ORIGINAL_SUBJECT),
///   [`DLQ_ATTEMPTS`](metadata::DLQ_ATTEMPTS),
///   [`DLQ_FIRST_FAILURE_AT`](metadata::DLQ_FIRST_FAILURE_AT) (when known),
///   [`DLQ_SUBSCRIBER`](metadata::DLQ_SUBSCRIBER) (when known) and
///   [`DLQ_DEAD_LETTERED_AT`](metadata::DLQ_DEAD_LETTERED_AT).
///
/// A bus subscription whose filter covers the prefix (`events.>`) receives
/// these forwards too; one it cannot read (the envelope of an event it
/// could not decrypt, still bound to the original id, or plaintext under
/// `PlaintextPolicy::Refuse`) is recognised as a dead letter by its
/// [`DLQ_REASON`](metadata::DLQ_REASON) and terminated for that
/// subscriber, not dead-lettered (forwarded) again.
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
    /// literal tokens, [`Error::InvalidSubject`] otherwise).
    pub fn new(sink: Arc<dyn EventSink>, subject_prefix: impl Into<String>) -> Result<Self> {
        let prefix = subject_prefix.into();
        subject::validate_subject(&prefix)?;
        Ok(Self {
            sink,
            prefix,
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

    /// The event forwarded for `dead_letter`.
    pub fn forwarded_event(&self, dead_letter: &DeadLetterEvent) -> Result<Event> {
        let original = if dead_letter.original_subject.is_empty() {
            &dead_letter.event.subject
        } else {
            &dead_letter.original_subject
        };
        let rest = original
            .split_once('.')
            .map_or(original.as_str(), |(_, r)| r);
        let mut event = dead_letter.event.clone();
        event.id = new_event_id();
        event.subject = format!("{}.{rest}", self.prefix);
        // The category is the subject's, as for a topic sink's forward.
        if let Some(category) = event.subject.split('.').nth(1) {
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

#[async_trait]
impl DlqHandler for SinkDlqHandler {
    async fn handle(&self, dead_letter: DeadLetterEvent) -> Result<()> {
        let event = self.forwarded_event(&dead_letter)?;
        self.sink
            .deliver(&event)
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
