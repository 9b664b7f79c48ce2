//! [`CloudEvent`]: the SDK's event under the name the A3S API uses.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// A CloudEvents v1.0 event: the official SDK's [`cloudevents::Event`] under
/// the name A3S uses.
///
/// It is a thin wrapper (so that this crate can provide
/// `From<Event> for CloudEvent` and `TryFrom<CloudEvent> for Event`, which the
/// orphan rule forbids on the SDK type itself). It dereferences to the SDK
/// event, so the SDK's readers and writers work on it directly (bring
/// [`AttributesReader`](cloudevents::AttributesReader) /
/// [`AttributesWriter`](cloudevents::AttributesWriter) into scope), and it
/// converts to and from the SDK type for free. It serialises exactly as the
/// SDK event does: the CloudEvents JSON event format.
///
/// ```
/// use cloudevents::AttributesReader;
/// use event_cloudevents::CloudEvent;
/// use event_core::Event;
///
/// let event = Event::typed(
///     "events.market.forex",
///     "market",
///     "forex.rate_change",
///     1,
///     "USD/CNY",
///     "reuters",
///     serde_json::json!({"rate": 7.35}),
/// );
/// let ce = CloudEvent::from(event.clone());
/// assert_eq!(ce.ty(), "forex.rate_change");
/// assert_eq!(ce.subject(), Some("events.market.forex"));
/// assert_eq!(Event::try_from(ce)?, event);
/// # Ok::<(), event_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CloudEvent(cloudevents::Event);

impl CloudEvent {
    /// Wraps an SDK event.
    pub fn new(event: cloudevents::Event) -> Self {
        Self(event)
    }

    /// The SDK event.
    pub fn into_inner(self) -> cloudevents::Event {
        self.0
    }

    /// The SDK event, borrowed.
    pub fn as_sdk(&self) -> &cloudevents::Event {
        &self.0
    }
}

impl Deref for CloudEvent {
    type Target = cloudevents::Event;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for CloudEvent {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<cloudevents::Event> for CloudEvent {
    fn from(event: cloudevents::Event) -> Self {
        Self(event)
    }
}

impl From<CloudEvent> for cloudevents::Event {
    fn from(event: CloudEvent) -> Self {
        event.0
    }
}

impl AsRef<cloudevents::Event> for CloudEvent {
    fn as_ref(&self) -> &cloudevents::Event {
        &self.0
    }
}

impl fmt::Display for CloudEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
