//! Structured mode: an event as one CloudEvents JSON document
//! (`application/cloudevents+json`), and batches of them
//! (`application/cloudevents-batch+json`). Serialisation is the SDK's.

use crate::CloudEvent;
use event_core::{Error, Event, Result};

/// Content type of a structured-mode CloudEvent in the JSON event format.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Content type of a batch of CloudEvents in the JSON event format.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// The media type of a content type: without parameters and surrounding
/// whitespace (`" application/cloudevents+json ; charset=utf-8"` →
/// `application/cloudevents+json`). Compare it case-insensitively.
#[cfg(any(feature = "http", feature = "nats"))]
pub(crate) fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// The event as a CloudEvents JSON document.
///
/// ```
/// use event_core::Event;
///
/// let event = Event::new("events.a.b", "a", "hi", "svc", serde_json::json!({"k": 1}));
/// let json = event_cloudevents::to_structured(&event)?;
/// assert_eq!(event_cloudevents::from_structured(&json)?, event);
/// # Ok::<(), event_core::Error>(())
/// ```
pub fn to_structured(event: &Event) -> Result<Vec<u8>> {
    cloudevent_to_structured(&CloudEvent::from(event))
}

/// A CloudEvent as a JSON document.
///
/// # Errors
/// [`Error::Serialization`] for an extension whose name is no attribute
/// name (see [`is_valid_attribute_name`](crate::mapping::is_valid_attribute_name))
/// or is reserved (an attribute of the event's spec version, which it would
/// repeat, or `data`, which it would replace), and for a `datacontenttype` that is no media type (RFC 2046: printable
/// ASCII), which no binding reads back.
pub fn cloudevent_to_structured(event: &CloudEvent) -> Result<Vec<u8>> {
    crate::mapping::check_writable(event)?;
    serde_json::to_vec(event)
        .map_err(|e| Error::Serialization(format!("cannot encode CloudEvent as JSON: {e}")))
}

/// Parses a CloudEvents JSON document (spec version 1.0 or 0.3) and converts
/// it to an event (see [`TryFrom<CloudEvent>`](crate::CloudEvent) for what
/// fails).
pub fn from_structured(json: &[u8]) -> Result<Event> {
    Event::try_from(cloudevent_from_structured(json)?)
}

/// Parses a CloudEvents JSON document. A document that is no valid
/// CloudEvent is [`Error::Serialization`] (see [`CloudEvent`] for what the
/// SDK accepts and this refuses: an empty `id`, ...).
pub fn cloudevent_from_structured(json: &[u8]) -> Result<CloudEvent> {
    serde_json::from_slice(json)
        .map_err(|e| Error::Serialization(format!("invalid structured CloudEvent: {e}")))
}

/// Events as a CloudEvents JSON batch (a JSON array of documents).
pub fn to_structured_batch(events: &[Event]) -> Result<Vec<u8>> {
    let batch: Vec<CloudEvent> = events.iter().map(CloudEvent::from).collect();
    serde_json::to_vec(&batch)
        .map_err(|e| Error::Serialization(format!("cannot encode CloudEvents batch: {e}")))
}

/// Parses a CloudEvents JSON batch; fails on the first invalid member,
/// naming its index.
///
/// Each member is read as a document of its own, so a member's data may
/// nest as deeply as in a single structured document (the batch's array
/// does not count against the JSON reader's 128 levels): whatever a
/// provider accepts ([`MAX_PAYLOAD_DEPTH`](event_core::MAX_PAYLOAD_DEPTH))
/// reads back from a batch too.
pub fn from_structured_batch(json: &[u8]) -> Result<Vec<Event>> {
    // raw members: skipping a value is not limited in depth, reading one is
    let batch: Vec<&serde_json::value::RawValue> = serde_json::from_slice(json)
        .map_err(|e| Error::Serialization(format!("invalid CloudEvents batch: {e}")))?;
    batch
        .into_iter()
        .enumerate()
        .map(|(i, member)| {
            let ce: CloudEvent = serde_json::from_str(member.get()).map_err(|e| {
                Error::Serialization(format!("invalid CloudEvent at batch index {i}: {e}"))
            })?;
            Event::try_from(ce).map_err(|e| match e {
                Error::Serialization(reason) => {
                    Error::Serialization(format!("batch index {i}: {reason}"))
                }
                other => other,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structured_json_is_the_cloudevents_format() {
        let event = Event::typed("events.a.b", "a", "t.x", 2, "s", "src", json!([1, 2]));
        let doc: serde_json::Value =
            serde_json::from_slice(&to_structured(&event).unwrap()).unwrap();
        assert_eq!(doc["specversion"], "1.0");
        assert_eq!(doc["id"], json!(event.id));
        assert_eq!(doc["type"], "t.x");
        assert_eq!(doc["subject"], "events.a.b");
        assert_eq!(doc["data"], json!([1, 2]));
        assert_eq!(doc["a3sversion"], 2);
        assert_eq!(doc["a3scategory"], "a");
    }

    #[test]
    fn batch_round_trips_and_names_the_bad_member() {
        let events = vec![
            Event::new("events.a.b", "a", "one", "x", json!(1)),
            Event::new("events.a.c", "a", "two", "y", json!({"z": null})),
        ];
        let json = to_structured_batch(&events).unwrap();
        assert_eq!(from_structured_batch(&json).unwrap(), events);

        let bad = br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},
                      {"specversion":"1.0","id":"2","source":"s"}]"#;
        let err = from_structured_batch(bad).unwrap_err().to_string();
        assert!(err.contains("batch index 1"), "{err}");
    }

    /// A payload nested as deep as a provider accepts
    /// ([`MAX_PAYLOAD_DEPTH`](event_core::MAX_PAYLOAD_DEPTH)) comes back from
    /// a batch as from a single document: the batch's array is not one
    /// more level against the JSON reader's limit.
    #[test]
    fn batch_reads_back_the_deepest_payload_a_provider_accepts() {
        let nested = |levels: usize| {
            let mut payload = json!({ "leaf": true });
            for _ in 1..levels {
                payload = json!([payload]);
            }
            payload
        };
        let deepest = Event::new(
            "events.a.b",
            "a",
            "deep",
            "x",
            nested(event_core::MAX_PAYLOAD_DEPTH),
        );
        assert_eq!(
            from_structured(&to_structured(&deepest).unwrap()).unwrap(),
            deepest
        );
        let events = vec![
            Event::new("events.a.c", "a", "flat", "y", json!(1)),
            deepest,
        ];
        let json = to_structured_batch(&events).unwrap();
        assert_eq!(from_structured_batch(&json).unwrap(), events);
        // a member nested past what any JSON reader reads is still an
        // error naming it, not a stack overflow
        let mut member =
            String::from(r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":"#);
        member.push_str(&"[".repeat(100_000));
        member.push_str(&"]".repeat(100_000));
        member.push('}');
        let bad = format!(
            "[{{\"specversion\":\"1.0\",\"id\":\"0\",\"source\":\"s\",\"type\":\"t\"}},{member}]"
        );
        let err = from_structured_batch(bad.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch index 1"), "{err}");
    }
}
