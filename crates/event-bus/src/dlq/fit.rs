//! Smaller forms of a dead letter, for a [`ProviderDlqHandler`](super::ProviderDlqHandler)
//! whose provider refuses the whole one as too large.
//!
//! A dead letter is larger than its event (the record around it, the
//! reason, the envelope when the handler encrypts): the dead letter of an
//! event close to the provider's limit, or with a long reason, is over it.
//! Refused, it would be offered again and again (for an undecryptable
//! event, every few seconds for as long as the consumer runs). The handler
//! tries, in order, what loses least:
//!
//! 1. the dead letter as it is;
//! 2. the reason cut to [`REASON_CHARS`] characters (its start and its
//!    length in bytes kept), the event whole: it can still be re-driven;
//! 3. the event without its payload and metadata, every string of the
//!    record cut to [`STUB_CHARS`] characters (the reason to
//!    [`REASON_CHARS`]), marked with [`META_PAYLOAD_DROPPED`] in the
//!    event's metadata: it names the event (id, subject, category, type,
//!    source, timestamp) and why it failed, and re-drive skips it; the
//!    event itself is still in its stream.

pub(crate) use crate::text::cut;
use event_core::{DeadLetterEvent, Event};
use std::borrow::Cow;
use std::collections::HashMap;

/// Characters of a reason kept when it is cut to make a dead letter fit.
pub(crate) const REASON_CHARS: usize = 4096;

/// Characters of each string of the event kept in a dead letter without
/// the event's payload.
pub(crate) const STUB_CHARS: usize = 256;

/// Characters of the reason kept in a dead letter's `summary` (which is in
/// clear even when the handler encrypts).
pub(crate) const SUMMARY_REASON_CHARS: usize = 200;

/// Metadata key, on the event of a dead letter stored without the event's
/// payload: what was left out and why.
pub const META_PAYLOAD_DROPPED: &str = "a3s.dlq_payload_dropped";

/// `dead` with its reason cut to [`REASON_CHARS`]; `None` when the reason
/// is no longer than that (cutting it would not make the letter smaller).
pub(crate) fn with_reason_cut(dead: &DeadLetterEvent) -> Option<DeadLetterEvent> {
    match cut(&dead.reason, REASON_CHARS) {
        Cow::Borrowed(_) => None,
        Cow::Owned(reason) => Some(DeadLetterEvent {
            reason,
            ..dead.clone()
        }),
    }
}

/// `dead` without its event's payload and metadata, its strings cut (see
/// the module docs); `max` is the provider's limit, named in the note.
pub(crate) fn without_payload(dead: &DeadLetterEvent, max: usize) -> DeadLetterEvent {
    let event = &dead.event;
    let short = |text: &str| cut(text, STUB_CHARS).into_owned();
    let payload_len = serde_json::to_vec(&event.payload).map_or(0, |json| json.len());
    let note = format!(
        "the dead letter was over the DLQ provider's limit ({max} bytes): the event's payload \
         ({payload_len} bytes as JSON) and its {} metadata entries were left out, and strings \
         over {STUB_CHARS} characters cut; the event is still in its stream",
        event.metadata.len()
    );
    DeadLetterEvent {
        event: Event {
            id: short(&event.id),
            subject: short(&event.subject),
            category: short(&event.category),
            event_type: short(&event.event_type),
            version: event.version,
            payload: serde_json::Value::Null,
            summary: short(&event.summary),
            source: short(&event.source),
            timestamp: event.timestamp,
            metadata: HashMap::from([(META_PAYLOAD_DROPPED.to_owned(), note)]),
        },
        reason: cut(&dead.reason, REASON_CHARS).into_owned(),
        dead_lettered_at: dead.dead_lettered_at,
        original_subject: short(&dead.original_subject),
        delivery_attempts: dead.delivery_attempts,
        first_failure_at: dead.first_failure_at,
        subscriber: dead.subscriber.as_deref().map(short),
    }
}

/// Whether `dead` was stored without its event's payload (see
/// [`without_payload`]): the marker is then the event's only metadata and
/// its payload is null, which an event published with the marker among
/// its own metadata (the publisher's choice) does not pass for.
pub(crate) fn payload_dropped(dead: &DeadLetterEvent) -> bool {
    dead.event.payload.is_null()
        && dead.event.metadata.len() == 1
        && dead.event.metadata.contains_key(META_PAYLOAD_DROPPED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaller_forms_keep_what_names_the_event() {
        let mut event = Event::new("events.a.b", "a", "s", "src", serde_json::json!({"x": 1}));
        event.metadata.insert("k".into(), "v".into());
        let dead = DeadLetterEvent::new(event.clone(), "short")
            .with_attempts(3)
            .with_first_failure_at(7)
            .with_subscriber("w");
        assert!(with_reason_cut(&dead).is_none());
        let long = DeadLetterEvent {
            reason: "r".repeat(REASON_CHARS + 1),
            ..dead.clone()
        };
        let cut_reason = with_reason_cut(&long).unwrap();
        assert_eq!(cut_reason.event, event);
        assert!(cut_reason.reason.ends_with("… (4097 bytes)"));

        let stub = without_payload(&dead, 1000);
        assert!(payload_dropped(&stub) && !payload_dropped(&dead));
        // an event that carries the marker among its own metadata is whole
        let mut marked = dead.clone();
        marked
            .event
            .metadata
            .insert(META_PAYLOAD_DROPPED.to_owned(), "mine".to_owned());
        assert!(!payload_dropped(&marked));
        assert_eq!(stub.event.id, event.id);
        assert_eq!(stub.event.payload, serde_json::Value::Null);
        assert_eq!(stub.event.metadata.len(), 1);
        assert!(stub.event.metadata[META_PAYLOAD_DROPPED].contains("(1000 bytes)"));
        assert_eq!(
            (
                stub.reason.as_str(),
                stub.delivery_attempts,
                stub.first_failure_at
            ),
            ("short", 3, Some(7))
        );
        assert_eq!(stub.subscriber.as_deref(), Some("w"));
    }
}
