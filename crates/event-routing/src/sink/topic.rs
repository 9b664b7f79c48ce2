use super::EventSink;
use crate::metadata;
use async_trait::async_trait;
use event_core::{Event, EventProvider, Result, new_event_id, subject};
use std::sync::Arc;

/// Where a [`TopicSink`] publishes.
#[derive(Clone)]
enum Target {
    Provider(Arc<dyn EventProvider>),
}

impl Target {
    fn prefix(&self) -> &str {
        match self {
            Self::Provider(p) => p.subject_prefix(),
        }
    }

    async fn publish(&self, event: &Event) -> Result<u64> {
        match self {
            Self::Provider(p) => p.publish(event).await,
        }
    }
}

/// Publishes routed events to a subject of a provider.
///
/// The forwarded event is a copy with a **new id**, its subject set to the
/// sink's subject (and category to that subject's second token), and the
/// original id and subject in metadata ([`metadata::ORIGINAL_ID`],
/// [`metadata::ORIGINAL_SUBJECT`]). The new id matters: providers deduplicate
/// per stream by event id, so re-publishing the original id would be
/// swallowed as a duplicate. A retried delivery publishes another copy
/// (at-least-once).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
/// use event_core::{Event, EventProvider};
/// use event_memory::MemoryProvider;
/// use event_routing::{EventSink, TopicSink};
/// use std::sync::Arc;
///
/// let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
/// let sink = TopicSink::new("audit", provider.clone(), "events.audit.orders")?;
/// let event = Event::new("events.orders.created", "orders", "new", "shop", serde_json::json!({}));
/// sink.deliver(&event).await?;
///
/// let stored = provider.history(Some("events.audit.>"), 1).await?;
/// assert_eq!(stored[0].metadata["originalid"], event.id);
/// assert_ne!(stored[0].id, event.id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TopicSink {
    name: String,
    target: Target,
    /// `None`: the event's own subject.
    subject: Option<String>,
}

impl std::fmt::Debug for TopicSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSink")
            .field("name", &self.name)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl TopicSink {
    /// A sink publishing to `subject` on `provider`. The subject must be a
    /// valid publish subject under the provider's prefix
    /// ([`Error::InvalidSubject`](event_core::Error::InvalidSubject) otherwise).
    pub fn new(
        name: impl Into<String>,
        provider: Arc<dyn EventProvider>,
        subject: impl Into<String>,
    ) -> Result<Self> {
        Self::with_target(
            name.into(),
            Target::Provider(provider),
            Some(subject.into()),
        )
    }

    /// A sink publishing each event on its own subject (with a new id), for
    /// example after a [`SinkDlqHandler`](crate::SinkDlqHandler) moved it under
    /// its dead-letter prefix.
    pub fn same_subject(name: impl Into<String>, provider: Arc<dyn EventProvider>) -> Self {
        Self {
            name: name.into(),
            target: Target::Provider(provider),
            subject: None,
        }
    }

    fn with_target(name: String, target: Target, subject: Option<String>) -> Result<Self> {
        if let Some(s) = &subject {
            subject::validate_publish_subject(s, target.prefix())?;
        }
        Ok(Self {
            name,
            target,
            subject,
        })
    }

    /// The subject published to (`None`: each event's own subject).
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The copy of `event` this sink publishes.
    pub fn forwarded(&self, event: &Event) -> Event {
        let mut out = event.clone();
        out.id = new_event_id();
        if let Some(s) = &self.subject {
            out.subject.clone_from(s);
            if let Some(category) = s.split('.').nth(1) {
                out.category = category.to_owned();
            }
        }
        out.metadata
            .insert(metadata::ORIGINAL_ID.to_owned(), event.id.clone());
        out.metadata
            .insert(metadata::ORIGINAL_SUBJECT.to_owned(), event.subject.clone());
        out
    }
}

#[async_trait]
impl EventSink for TopicSink {
    async fn deliver(&self, event: &Event) -> Result<()> {
        let forwarded = self.forwarded(event);
        if self.subject.is_none() {
            subject::validate_publish_subject(&forwarded.subject, self.target.prefix())?;
        }
        self.target.publish(&forwarded).await.map(|_| ())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
