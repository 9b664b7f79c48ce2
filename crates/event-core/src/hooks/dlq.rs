use crate::error::Result;
use crate::types::{Event, now_millis};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// An event that could not be processed, with why and how often it was tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterEvent {
    /// The event (plaintext when the bus could decrypt it).
    pub event: Event,
    /// Why it was dead-lettered (the last handler error, "undecodable: ...").
    pub reason: String,
    /// When it was dead-lettered, Unix milliseconds.
    pub dead_lettered_at: u64,
    /// The subject it was originally delivered on.
    #[serde(default)]
    pub original_subject: String,
    /// Deliveries made before it was dead-lettered.
    #[serde(default)]
    pub delivery_attempts: u64,
    /// When the first delivery failed, Unix milliseconds, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure_at: Option<u64>,
    /// Who failed to process it, when known: the bus sets the managed
    /// subscriber's id (the same event can fail independently for each
    /// subscriber that receives it, and each failure is its own dead
    /// letter). `None` for dead letters made outside a managed subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<String>,
}

impl DeadLetterEvent {
    /// A dead letter for `event` with `reason`, timestamped now; the original
    /// subject is the event's subject.
    pub fn new(event: Event, reason: impl Into<String>) -> Self {
        Self {
            original_subject: event.subject.clone(),
            event,
            reason: reason.into(),
            dead_lettered_at: now_millis(),
            delivery_attempts: 0,
            first_failure_at: None,
            subscriber: None,
        }
    }

    /// Sets the number of delivery attempts.
    #[must_use]
    pub fn with_attempts(mut self, attempts: u64) -> Self {
        self.delivery_attempts = attempts;
        self
    }

    /// Sets the time of the first failure (Unix milliseconds).
    #[must_use]
    pub fn with_first_failure_at(mut self, at: u64) -> Self {
        self.first_failure_at = Some(at);
        self
    }

    /// Sets the subscriber that failed to process the event.
    #[must_use]
    pub fn with_subscriber(mut self, subscriber: impl Into<String>) -> Self {
        self.subscriber = Some(subscriber.into());
        self
    }
}

/// Receives events that exhausted their deliveries or could not be decoded.
///
/// # Contract
///
/// - `handle` stores or forwards the dead letter; it returns only when that is
///   done (a durable handler has persisted it). On error the caller leaves
///   the original event unacknowledged: if deliveries remain it comes back
///   and dead-lettering is tried again; a final delivery left unsettled
///   comes once more (the spare delivery, see
///   [`PendingEvent::is_final_delivery`](crate::PendingEvent::is_final_delivery)),
///   and after that the provider does not deliver it again, so it then
///   remains only in the stream (readable through `history` while retention
///   keeps it), and the failure is counted and logged. Keep DLQ handlers highly available (or
///   `max_deliver` unset) where that matters.
/// - `list` returns the newest first, at most `limit`.
#[async_trait]
pub trait DlqHandler: Send + Sync {
    /// Takes a dead letter.
    async fn handle(&self, dead_letter: DeadLetterEvent) -> Result<()>;

    /// The newest `limit` dead letters, newest first.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetterEvent>>;

    /// How many dead letters are held.
    async fn count(&self) -> Result<usize>;
}
