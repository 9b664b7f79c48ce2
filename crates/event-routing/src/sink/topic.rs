use super::EventSink;
use crate::metadata;
use async_trait::async_trait;
use event_core::{Event, EventProvider, PublishOptions, Result, new_event_id, subject};
use std::sync::Arc;

/// Where a [`TopicSink`] publishes.
#[derive(Clone)]
enum Target {
    Provider(Arc<dyn EventProvider>),
    #[cfg(feature = "bus")]
    Bus(event_bus::EventBus),
}

impl Target {
    fn prefix(&self) -> &str {
        match self {
            Self::Provider(p) => p.subject_prefix(),
            #[cfg(feature = "bus")]
            Self::Bus(bus) => bus.provider().subject_prefix(),
        }
    }

    /// Publishes `event`. Through a bus, a router's refusal comes after the
    /// provider stored the event (whatever router is attached: a
    /// [`Broker`](crate::Broker) or another): the publish happened, and is
    /// `Ok` (publishing again would store another copy).
    ///
    /// Default `options` take the convenience call (`publish`), which a
    /// provider written against the 0.3 API implements; one that refuses
    /// options ([`Error::Unsupported`](event_core::Error::Unsupported)) gets
    /// the event without them (deduplicated by its id alone).
    async fn publish(&self, event: &Event, options: &PublishOptions) -> Result<()> {
        let plain = *options == PublishOptions::default();
        match self {
            Self::Provider(p) if plain => p.publish(event).await.map(|_| ()),
            Self::Provider(p) => match p.publish_with_options(event, options).await {
                Err(event_core::Error::Unsupported { .. }) => p.publish(event).await.map(|_| ()),
                other => other.map(|_| ()),
            },
            #[cfg(feature = "bus")]
            Self::Bus(bus) => {
                let stored = if plain {
                    bus.publish_event_stored(event).await?
                } else {
                    match bus.publish_event_stored_with_options(event, options).await {
                        Err(event_core::Error::Unsupported { .. }) => {
                            bus.publish_event_stored(event).await?
                        }
                        other => other?,
                    }
                };
                if let Some(err) = &stored.not_routed {
                    tracing::debug!(
                        event_id = ?event.id, subject = ?event.subject,
                        sequence = stored.sequence, error = %err,
                        "forward stored; the router attached to the bus did not route it"
                    );
                }
                Ok(())
            }
        }
    }
}

/// Publishes routed events to a subject of a provider.
///
/// The forwarded event is a copy with a **new id**, its subject set to the
/// sink's subject (and category to that subject's token after the
/// provider's prefix: `audit` in `acme.events.audit.orders` under
/// `acme.events`), and the
/// original id and subject in metadata ([`metadata::ORIGINAL_ID`],
/// [`metadata::ORIGINAL_SUBJECT`]; a forward of a forward keeps the first
/// event's). The new id matters: providers deduplicate
/// per stream by event id, so re-publishing the original id would be
/// swallowed as a duplicate. The forward count goes up by one in
/// [`metadata::HOPS`], so a broker stops routing loops. A retried delivery publishes another copy
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
    /// Publish the event as it is (its own id and subject).
    unchanged: bool,
}

impl std::fmt::Debug for TopicSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSink")
            .field("name", &self.name)
            .field("subject", &self.subject)
            .field("unchanged", &self.unchanged)
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

    /// A sink publishing to `subject` through `bus`'s pipeline, so the
    /// forwarded event is validated, schema-checked and encrypted (under its
    /// own new id) like any other, and counted in the bus's metrics. A bus
    /// with this broker attached routes the forwarded event too; the
    /// [`metadata::HOPS`] count stops loops. The delivery is done once the
    /// provider stored the forward: a router attached to the bus that then
    /// refuses to route it (a [`Broker`](crate::Broker) shut down or with
    /// its queue full under
    /// [`QueueFullPolicy::Reject`](crate::QueueFullPolicy::Reject), or any
    /// other [`EventRouter`](event_core::EventRouter)) does not fail it,
    /// which would publish it again on retry (the bus tells the two apart
    /// with [`EventBus::publish_event_stored`](event_bus::EventBus::publish_event_stored)
    /// and counts the refusal in its router errors).
    #[cfg(feature = "bus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bus")))]
    pub fn through_bus(
        name: impl Into<String>,
        bus: event_bus::EventBus,
        subject: impl Into<String>,
    ) -> Result<Self> {
        Self::with_target(name.into(), Target::Bus(bus), Some(subject.into()))
    }

    /// [`unchanged`](Self::unchanged) through `bus`'s pipeline, but for one
    /// more [`metadata::HOPS`]. A repeat (a sender's retry) is stored once
    /// and, where the provider reports duplicates (memory, NATS; see
    /// [`Stored::duplicate`](event_bus::Stored::duplicate)), not handed to a
    /// broker attached to `bus` again, so its triggers see it once; with a
    /// provider that does not say, the bus hands every repeat over, and the
    /// hop count ends a loop through a trigger that matches its own output.
    /// As with [`through_bus`](Self::through_bus), a router's refusal of the
    /// stored event does not fail the delivery.
    #[cfg(feature = "bus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bus")))]
    pub fn unchanged_through_bus(name: impl Into<String>, bus: event_bus::EventBus) -> Self {
        Self {
            name: name.into(),
            target: Target::Bus(bus),
            subject: None,
            unchanged: true,
        }
    }

    /// A sink publishing each event on its own subject (with a new id), for
    /// example after a [`SinkDlqHandler`](crate::SinkDlqHandler) moved it under
    /// its dead-letter prefix.
    pub fn same_subject(name: impl Into<String>, provider: Arc<dyn EventProvider>) -> Self {
        Self {
            name: name.into(),
            target: Target::Provider(provider),
            subject: None,
            unchanged: false,
        }
    }

    /// A sink publishing each event exactly as it is: its own subject and
    /// **its own id**, so a retried delivery of the same event is
    /// deduplicated by the provider. For ingesting events from outside (a
    /// [`WebhookSource`](crate::http::WebhookSource) whose senders retry), not
    /// for forwarding events already in the stream (those would be dropped as
    /// duplicates).
    ///
    /// The dedup key is the event's **source and id** together
    /// ([`unchanged_dedup_id`](Self::unchanged_dedup_id)), as CloudEvents defines an event's identity:
    /// two producers that both send id `1` are two events, both stored; the
    /// same producer sending id `1` again within the provider's dedup window
    /// is stored once. Dedup only recognises repeats: it cannot tell a
    /// sender from someone posting the same source and id first, so a
    /// webhook open to untrusted senders needs authentication in front of
    /// it.
    pub fn unchanged(name: impl Into<String>, provider: Arc<dyn EventProvider>) -> Self {
        Self {
            unchanged: true,
            ..Self::same_subject(name, provider)
        }
    }

    /// The dedup id an [`unchanged`](Self::unchanged) sink publishes
    /// `event` with: its source and its id, as
    /// `<length of the source>:<source><id>` (the length makes it one-to-one:
    /// no other source and id give the same text). Control characters and
    /// `%` are percent-encoded (their UTF-8 bytes as `%XX`), as no provider
    /// takes a dedup id with control characters: an event whose source
    /// has one is forwarded, not refused. It is the text
    /// `event_cloudevents::cloudevent_dedup_id` gives the same event.
    ///
    /// ```
    /// use event_core::Event;
    /// use event_routing::TopicSink;
    ///
    /// let mut event = Event::new("events.web.x", "web", "s", "https://billing.example", serde_json::json!({}));
    /// event.id = "1".into();
    /// assert_eq!(TopicSink::unchanged_dedup_id(&event), "23:https://billing.example1");
    /// ```
    pub fn unchanged_dedup_id(event: &Event) -> String {
        event_core::source_scoped_dedup_id(&event.source, &event.id)
    }

    fn with_target(name: String, target: Target, subject: Option<String>) -> Result<Self> {
        if let Some(s) = &subject {
            subject::validate_publish_subject(s, target.prefix())?;
        }
        Ok(Self {
            name,
            target,
            subject,
            unchanged: false,
        })
    }

    /// The subject published to (`None`: each event's own subject).
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The copy of `event` a forwarding sink publishes (an [`unchanged`](Self::unchanged) sink publishes `event` itself).
    pub fn forwarded(&self, event: &Event) -> Event {
        let mut out = event.clone();
        out.id = new_event_id();
        if let Some(s) = &self.subject {
            out.subject.clone_from(s);
            if let Some(category) = subject::category_of(s, self.target.prefix()) {
                out.category = category.to_owned();
            }
        }
        count_hop(&mut out, event);
        // A forward of a forward (or of a dead letter) keeps the first
        // event's id and subject.
        out.metadata
            .entry(metadata::ORIGINAL_ID.to_owned())
            .or_insert_with(|| event.id.clone());
        out.metadata
            .entry(metadata::ORIGINAL_SUBJECT.to_owned())
            .or_insert_with(|| event.subject.clone());
        out
    }
}

/// Sets `out`'s [`metadata::HOPS`] to `event`'s plus one.
pub(crate) fn count_hop(out: &mut Event, event: &Event) {
    let hops = event
        .metadata
        .get(metadata::HOPS)
        .and_then(|h| h.parse::<u32>().ok())
        .unwrap_or(0);
    out.metadata.insert(
        metadata::HOPS.to_owned(),
        hops.saturating_add(1).to_string(),
    );
}

#[async_trait]
impl EventSink for TopicSink {
    async fn deliver(&self, event: &Event) -> Result<()> {
        if self.unchanged {
            subject::validate_publish_subject(&event.subject, self.target.prefix())?;
            let options = PublishOptions {
                msg_id: Some(Self::unchanged_dedup_id(event)),
                ..PublishOptions::default()
            };
            #[cfg(feature = "bus")]
            if let Target::Bus(_) = &self.target {
                // Same id and subject, but one more hop: through the bus of
                // a broker whose trigger matches it, a provider that does
                // not report duplicates has the bus route every repeat
                // again; the hop count ends that loop.
                let mut out = event.clone();
                count_hop(&mut out, event);
                return self.target.publish(&out, &options).await;
            }
            return self.target.publish(event, &options).await;
        }
        let forwarded = self.forwarded(event);
        if self.subject.is_none() {
            subject::validate_publish_subject(&forwarded.subject, self.target.prefix())?;
        }
        self.target
            .publish(&forwarded, &PublishOptions::default())
            .await
    }

    fn name(&self) -> &str {
        &self.name
    }
}
