//! The provider binding: publish and receive CloudEvents through any
//! [`EventProvider`] (NATS JetStream, memory, a third party's).
//!
//! A CloudEvent is converted to an A3S [`Event`] and published to the subject
//! in its `subject` attribute (or one given explicitly); subscriptions yield
//! the events back as CloudEvents. On the wire the provider stores A3S events
//! in its own format; the conversion is lossless, so what comes out equals
//! what went in for every CloudEvent made from an A3S event.

use crate::CloudEvent;
use crate::mapping::CATEGORY;
use cloudevents::AttributesReader;
use event_core::{Error, Event, EventProvider, PendingEvent, PublishOptions, Result, Subscription};
use std::future::Future;
use std::sync::Arc;

/// CloudEvents conveniences on every [`EventProvider`] (blanket-implemented).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> event_core::Result<()> {
/// use event_cloudevents::{CloudEvent, CloudEventProviderExt};
/// use event_core::Event;
/// use event_memory::MemoryProvider;
///
/// let provider = MemoryProvider::default();
/// let mut sub = provider.subscribe_cloudevents("events.market.>").await?;
/// let ce = CloudEvent::from(Event::new(
///     "events.market.forex", "market", "rate", "reuters", serde_json::json!({"rate": 7.35}),
/// ));
/// provider.publish_cloudevent(&ce).await?;
/// let received = sub.next().await?.expect("delivered");
/// assert_eq!(received.event, ce);
/// # Ok(()) }
/// ```
pub trait CloudEventProviderExt: EventProvider {
    /// Converts `event` and publishes it to the subject in its `subject`
    /// attribute; returns the stream sequence. A CloudEvent without a
    /// `subject` is [`Error::InvalidSubject`]; one that cannot become an A3S
    /// event is [`Error::Serialization`]. The dedup id
    /// ([`PublishOptions::msg_id`]) is the CloudEvent's source and id
    /// together ([`cloudevent_dedup_id`]): the same source and id again
    /// within the provider's window returns the first publish's sequence and
    /// stores nothing; the same id from another source is another event.
    /// Without an `a3scategory` extension the category is the subject's
    /// token after the provider's prefix. (An A3S event published directly is deduplicated by its id alone, so
    /// it and its CloudEvent are not repeats of each other.) The CloudEvent
    /// of an event without an id (its id derived, marked in `a3sdefaulted`)
    /// is published as that event.
    fn publish_cloudevent<'a>(
        &'a self,
        event: &'a CloudEvent,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        async move {
            let mut converted = Event::try_from(event.clone())?;
            if event.extension(CATEGORY).is_none() {
                // the token after the provider's prefix (of one or more tokens)
                converted.category =
                    event_core::subject::category_of(&converted.subject, self.subject_prefix())
                        .unwrap_or_default()
                        .to_string();
            }
            if converted.subject.is_empty() {
                return Err(Error::invalid_subject(
                    "",
                    format!(
                        "CloudEvent {:?} has no `subject` attribute; publish it with \
                         `publish_cloudevent_to` and an explicit subject",
                        event.id()
                    ),
                ));
            }
            publish_converted(self, &converted, event).await
        }
    }

    /// Converts `event` and publishes it to `subject`, replacing its
    /// `subject` attribute (for CloudEvents from other producers, whose
    /// subject is rarely an A3S subject). Without an `a3scategory` extension
    /// the category is the subject's token after the provider's prefix
    /// (`partner` in `acme.events.partner.ping` under `acme.events`).
    /// Deduplicated as
    /// [`publish_cloudevent`](Self::publish_cloudevent) is, whatever the
    /// subject.
    fn publish_cloudevent_to<'a>(
        &'a self,
        subject: &'a str,
        event: &'a CloudEvent,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        async move {
            let has_category = event.extension(CATEGORY).is_some();
            let mut converted = Event::try_from(event.clone())?;
            converted.subject = subject.to_string();
            if !has_category {
                converted.category =
                    event_core::subject::category_of(subject, self.subject_prefix())
                        .unwrap_or_default()
                        .to_string();
            }
            publish_converted(self, &converted, event).await
        }
    }

    /// Ephemeral live subscription yielding CloudEvents.
    fn subscribe_cloudevents<'a>(
        &'a self,
        filter_subject: &'a str,
    ) -> impl Future<Output = Result<CloudEventSubscription>> + Send + 'a {
        async move {
            Ok(CloudEventSubscription::new(
                self.subscribe(filter_subject).await?,
            ))
        }
    }

    /// Durable subscription (created or resumed) yielding CloudEvents.
    fn subscribe_durable_cloudevents<'a>(
        &'a self,
        consumer_name: &'a str,
        filter_subject: &'a str,
    ) -> impl Future<Output = Result<CloudEventSubscription>> + Send + 'a {
        async move {
            Ok(CloudEventSubscription::new(
                self.subscribe_durable(consumer_name, filter_subject)
                    .await?,
            ))
        }
    }
}

impl<P: EventProvider + ?Sized> CloudEventProviderExt for P {}

/// Publishes the converted event with [`cloudevent_dedup_id`] as its dedup
/// id. An event without an id (its CloudEvent carries the id derived from
/// it, marked in `a3sdefaulted`) keeps its empty id, so that it comes out as
/// the same CloudEvent; its dedup id holds the derived one.
async fn publish_converted<P: EventProvider + ?Sized>(
    provider: &P,
    converted: &Event,
    event: &CloudEvent,
) -> Result<u64> {
    let options = PublishOptions {
        msg_id: Some(cloudevent_dedup_id(event)),
        ..Default::default()
    };
    provider.publish_with_options(converted, &options).await
}

/// The dedup id ([`PublishOptions::msg_id`]) that
/// [`publish_cloudevent`](CloudEventProviderExt::publish_cloudevent) and
/// [`publish_cloudevent_to`](CloudEventProviderExt::publish_cloudevent_to)
/// publish `event` with: its `source` and `id` together, as CloudEvents
/// defines an event's identity (two producers that both send id `1` send two
/// events), written `<length of the source>:<source><id>` (the length makes
/// it one-to-one). Control characters and `%` are percent-encoded (their
/// UTF-8 bytes as `%XX`), as no provider takes a dedup id with control
/// characters; it is the id event-routing's unchanged topic sink gives the
/// same event.
///
/// ```
/// use event_cloudevents::{CloudEvent, cloudevent_dedup_id};
///
/// let ce = event_cloudevents::cloudevent_from_structured(
///     br#"{"specversion":"1.0","id":"1","source":"https://billing.example","type":"t"}"#,
/// )?;
/// assert_eq!(cloudevent_dedup_id(&ce), "23:https://billing.example1");
/// # Ok::<(), event_core::Error>(())
/// ```
pub fn cloudevent_dedup_id(event: &CloudEvent) -> String {
    event_core::source_scoped_dedup_id(event.source(), event.id())
}

/// A CloudEvent delivered by a [`CloudEventSubscription`], with its delivery
/// context.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedCloudEvent {
    /// The event.
    pub event: CloudEvent,
    /// Stream sequence assigned at publish time.
    pub sequence: u64,
    /// Deliveries to this consumer so far, counting this one.
    pub num_delivered: u64,
    /// The stream the event came from.
    pub stream: Arc<str>,
}

/// A [`Subscription`] whose events come out as CloudEvents. Acknowledgement
/// follows the wrapped subscription's contract exactly.
pub struct CloudEventSubscription {
    inner: Box<dyn Subscription>,
}

impl std::fmt::Debug for CloudEventSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudEventSubscription")
            .finish_non_exhaustive()
    }
}

impl CloudEventSubscription {
    /// Wraps a provider subscription.
    pub fn new(inner: Box<dyn Subscription>) -> Self {
        Self { inner }
    }

    /// The wrapped subscription.
    pub fn into_inner(self) -> Box<dyn Subscription> {
        self.inner
    }

    /// Next event, auto-acknowledged as [`Subscription::next`] does.
    pub async fn next(&mut self) -> Result<Option<ReceivedCloudEvent>> {
        Ok(self.inner.next().await?.map(|received| ReceivedCloudEvent {
            event: CloudEvent::from(Arc::unwrap_or_clone(received.event)),
            sequence: received.sequence,
            num_delivered: received.num_delivered,
            stream: received.stream,
        }))
    }

    /// Next event with its [`PendingEvent`] for the caller to settle.
    pub async fn next_manual_ack(&mut self) -> Result<Option<(CloudEvent, PendingEvent)>> {
        Ok(self
            .inner
            .next_manual_ack()
            .await?
            .map(|pending| (CloudEvent::from(pending.event()), pending)))
    }

    /// Acknowledges the last auto-ack event and stops the subscription.
    pub async fn close(&mut self) -> Result<()> {
        self.inner.close().await
    }
}
