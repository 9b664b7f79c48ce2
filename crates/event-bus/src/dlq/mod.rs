//! Dead-letter queues: [`MemoryDlqHandler`] (bounded, in process) and
//! [`ProviderDlqHandler`] (dead letters stored as events on the provider, so
//! they survive restarts, with re-drive).
//!
//! The trait, [`DlqHandler`](event_core::DlqHandler), and the record,
//! [`DeadLetterEvent`](event_core::DeadLetterEvent), live in `event-core`.

mod fit;
mod memory;
mod provider;

pub use fit::META_PAYLOAD_DROPPED;
pub use memory::MemoryDlqHandler;
pub use provider::{DEAD_LETTER_EVENT_TYPE, ProviderDlqHandler, RedriveReport};

use event_core::{Event, ReceivedEvent};

/// Metadata key of the reason on a dead letter forwarded as an event by
/// `event-routing` (its `SinkDlqHandler`, and a broker trigger's
/// dead-letter sink): `event_routing::metadata::DLQ_REASON`.
const FORWARDED_DLQ_REASON: &str = "dlqreason";

/// Whether `event` is a dead letter stored as an event: one a
/// [`ProviderDlqHandler`] stored (`event_type` [`DEAD_LETTER_EVENT_TYPE`]),
/// or one `event-routing` forwarded (its `SinkDlqHandler`, a broker's
/// dead-letter sink), which carries the failure's reason in its metadata
/// (`dlqreason`).
pub(crate) fn is_stored_dead_letter(event: &Event) -> bool {
    event.event_type == DEAD_LETTER_EVENT_TYPE || event.metadata.contains_key(FORWARDED_DLQ_REASON)
}

/// Whether `received` has used up `max_deliver` deliveries, so that a
/// handler that fails on it should dead-letter it rather than ask for a
/// redelivery. `max_deliver == 0` means unlimited (never).
///
/// This is the helper of the original `a3s-event` API, for code that runs
/// its own loop over [`next_manual_ack`](event_core::Subscription::next_manual_ack).
/// With [`SubscribeOptions::max_deliver`](event_core::SubscribeOptions::max_deliver)
/// pass `max_deliver.unwrap_or(0)`; a provider also marks the last delivery
/// itself ([`PendingEvent::is_final_delivery`](event_core::PendingEvent::is_final_delivery)),
/// and the consumer runner ([`EventBus::consume`](crate::EventBus::consume))
/// dead-letters for you.
///
/// ```
/// use event_bus::dlq::should_dead_letter;
/// use event_core::{Event, ReceivedEvent};
/// use std::sync::Arc;
///
/// let received = ReceivedEvent {
///     event: Arc::new(Event::new("events.a.b", "a", "s", "src", serde_json::json!({}))),
///     sequence: 1,
///     num_delivered: 3,
///     stream: Arc::from("memory"),
/// };
/// assert!(should_dead_letter(&received, 3));
/// assert!(!should_dead_letter(&received, 4));
/// assert!(!should_dead_letter(&received, 0)); // unlimited
/// ```
pub fn should_dead_letter(received: &ReceivedEvent, max_deliver: u64) -> bool {
    max_deliver > 0 && received.num_delivered >= max_deliver
}
