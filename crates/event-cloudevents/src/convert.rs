//! `Event` ↔ `CloudEvent` conversion (see [`crate::mapping`] for the mapping).

use crate::CloudEvent;
use crate::data::{self, DataForm};
use crate::mapping::{
    self, CATEGORY, DATA_BASE64_KEY, DATA_CONTENT_TYPE_KEY, DEFAULT_SOURCE, DEFAULT_TYPE,
    DEFAULTED, FOREIGN_PREFIX, JSON_CONTENT_TYPE, METADATA_HEX_PREFIX, METADATA_PREFIX,
    MetadataSlot, SUMMARY, TIMESTAMP, VERSION, derived_id,
};
use chrono::{DateTime, Utc};
use cloudevents::event::{AttributesReader, AttributesWriter, ExtensionValue};
use cloudevents::{Data, EventBuilder, EventBuilderV10};
use event_core::{Error, Event, Result};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use url::Url;

/// The largest timestamp (ms) whose RFC 3339 form has a four-digit year:
/// 9999-12-31T23:59:59.999Z.
const MAX_RFC3339_MILLIS: u64 = 253_402_300_799_999;

fn invalid(reason: impl std::fmt::Display) -> Error {
    Error::Serialization(format!("CloudEvent cannot become an A3S event: {reason}"))
}

/// Converts without consuming the event (clones it).
impl From<&Event> for CloudEvent {
    fn from(event: &Event) -> Self {
        CloudEvent::from(event.clone())
    }
}

/// Lossless: `Event::try_from(CloudEvent::from(e)) == Ok(e)` for every event,
/// and the same event always gives the same CloudEvent.
///
/// An event with an empty `id` (hand-built, or stored with `"id": ""`;
/// [`Event::new`] always generates one) gets the id
/// [`derived_id`](crate::mapping::derived_id) computes from its content,
/// marked in [`DEFAULTED`]: the CloudEvent `id` is required and identifies
/// the event (consumers deduplicate by `source` and `id`), so it must not
/// change from one conversion to the next. Reading restores the empty id.
/// An empty `source` or `event_type` takes a fixed, recorded default the
/// same way (see [`crate::mapping`]).
impl From<Event> for CloudEvent {
    fn from(event: Event) -> Self {
        let derived = event.id.is_empty().then(|| derived_id(&event));
        let Event {
            id,
            subject,
            category,
            event_type,
            version,
            payload,
            summary,
            source,
            timestamp,
            metadata,
        } = event;

        let mut defaulted: Vec<&str> = Vec::new();
        let id = match derived {
            Some(derived) => {
                defaulted.push("id");
                derived
            }
            None => id,
        };
        let source = if source.is_empty() {
            defaulted.push("source");
            DEFAULT_SOURCE.to_string()
        } else {
            source
        };
        let ty = if event_type.is_empty() {
            defaulted.push("type");
            DEFAULT_TYPE.to_string()
        } else {
            event_type
        };

        let mut ce = base_event(id, source, ty);
        if !subject.is_empty() {
            ce.set_subject(Some(subject));
        }
        match millis_to_time(timestamp) {
            Some(time) => {
                ce.set_time(Some(time));
            }
            None => ce.set_extension(TIMESTAMP, timestamp.to_string()),
        }
        ce.set_extension(CATEGORY, category);
        ce.set_extension(SUMMARY, summary);
        match i32::try_from(version) {
            Ok(v) => ce.set_extension(VERSION, i64::from(v)),
            Err(_) => ce.set_extension(VERSION, version.to_string()),
        }
        if !defaulted.is_empty() {
            ce.set_extension(DEFAULTED, defaulted.join(","));
        }

        let form = data::form(
            metadata
                .get(DATA_CONTENT_TYPE_KEY)
                .map(String::as_str)
                .filter(|ct| data::is_attribute_content_type(ct)),
            metadata.get(DATA_BASE64_KEY).map(String::as_str),
            &payload,
        );
        let mut content_type: Option<String> = None;
        for (key, value) in metadata {
            if key == DATA_BASE64_KEY && matches!(form, DataForm::Binary(_)) {
                // implied by binary data (`data_base64`, raw bytes)
                continue;
            }
            match mapping::metadata_slot(&key) {
                MetadataSlot::Foreign(name) => ce.set_extension(name, value),
                MetadataSlot::DataSchema => match Url::parse(&value) {
                    Ok(url) if url.as_str() == value => {
                        ce.set_dataschema(Some(url));
                    }
                    _ => ce.set_extension(&mapping::encode_metadata_key(&key), value),
                },
                // With JSON data, the attribute must describe JSON and differ
                // from the default (which reading cannot tell from no
                // metadata); text and binary data carry their type; without
                // data, any content type is held verbatim.
                MetadataSlot::DataContentType
                    if data::is_attribute_content_type(&value)
                        && (payload.is_null()
                            || form != DataForm::Json
                            || (mapping::is_json_content_type(&value)
                                && value != JSON_CONTENT_TYPE)) =>
                {
                    content_type = Some(value);
                }
                MetadataSlot::DataContentType | MetadataSlot::Encoded => {
                    ce.set_extension(&mapping::encode_metadata_key(&key), value)
                }
            }
        }

        match (form, content_type) {
            (_, content_type) if payload.is_null() => {
                if content_type.is_some() {
                    ce.set_datacontenttype(content_type);
                }
            }
            (DataForm::Binary(bytes), Some(ct)) => {
                ce.set_data(ct, Data::Binary(bytes));
            }
            (DataForm::Text, Some(ct)) => {
                let data = match payload {
                    serde_json::Value::String(text) => Data::String(text),
                    // `Text` is only chosen for a string payload
                    other => Data::Json(other),
                };
                ce.set_data(ct, data);
            }
            (_, content_type) => {
                ce.set_data(
                    content_type.unwrap_or_else(|| JSON_CONTENT_TYPE.to_string()),
                    Data::Json(payload),
                );
            }
        }
        CloudEvent::new(ce)
    }
}

/// An SDK event with the three required attributes (all non-empty).
fn base_event(id: String, source: String, ty: String) -> cloudevents::Event {
    let built = EventBuilderV10::new()
        .id(id.as_str())
        .source(source.as_str())
        .ty(ty.as_str())
        .build();
    match built {
        Ok(event) => event,
        // The builder fails only on a missing or empty required attribute,
        // which the caller rules out; set the attributes directly regardless.
        Err(_) => {
            let mut event = cloudevents::Event::default();
            event.set_id(id);
            event.set_source(source);
            event.set_type(ty);
            event.set_time(None::<DateTime<Utc>>);
            event
        }
    }
}

/// `time` for a millisecond timestamp, if it has an RFC 3339 form.
fn millis_to_time(millis: u64) -> Option<DateTime<Utc>> {
    if millis > MAX_RFC3339_MILLIS {
        return None;
    }
    DateTime::from_timestamp_millis(i64::try_from(millis).ok()?)
}

/// Fails with [`Error::Serialization`] when the CloudEvent cannot be held by
/// an A3S event:
///
/// - an empty `id`, `source` or `type`, or an empty `subject` (the spec
///   requires them non-empty, `subject` when present; the SDK accepts them
///   empty);
/// - data under a JSON (or no) `datacontenttype` that does not parse as
///   JSON, and a JSON value other than a string as data under a non-JSON
///   type (only a hand-built SDK event holds one: the JSON format and the
///   bindings carry such data as text or bytes); JSON data given as text or
///   bytes (binary mode's body) nested deeper than
///   [`MAX_PAYLOAD_DEPTH`](event_core::MAX_PAYLOAD_DEPTH), which no
///   structured document could hold readably;
/// - `time` before 1970 (A3S timestamps are unsigned milliseconds);
/// - a bad A3S extension: a non-string `a3scategory`/`a3ssummary`, an
///   `a3sversion` that is not an integer in `u32` range, an `a3stimestamp`
///   that is not decimal milliseconds or comes with a `time`, an
///   `a3sdefaulted` entry other than `id`, `source` and `type` or one on a
///   value that is not the default (for `id`: not the id derived from the
///   event), an `a3sx…` name that is not hex of UTF-8, two extensions for
///   the same metadata key.
///
/// Missing optional parts take the defaults listed in [`crate::mapping`].
///
/// Data under a non-JSON type (`text/plain`, `application/xml`, `image/png`,
/// ...) is held as a string payload with the type in metadata: text as
/// itself, bytes as base64 marked with [`DATA_BASE64_KEY`] (see
/// [Non-JSON data](crate::mapping#non-json-data)); it is written back as the
/// same type and bytes.
///
/// ```
/// use cloudevents::{EventBuilder, EventBuilderV10};
/// use event_cloudevents::CloudEvent;
/// use event_core::Event;
///
/// let ce = EventBuilderV10::new()
///     .id("1")
///     .source("urn:example")
///     .ty("com.example.note")
///     .data("text/plain", "hello")
///     .build()
///     .unwrap();
/// let event = Event::try_from(CloudEvent::new(ce.clone()))?;
/// assert_eq!(event.payload, "hello");
/// assert_eq!(event.metadata["ce-datacontenttype"], "text/plain");
/// # Ok::<(), event_core::Error>(())
/// ```
///
/// String data ([`Data::String`]) under a JSON content type is read as JSON
/// text, as the SDK converts it to a JSON value and as binary mode sends it
/// (the string's bytes as the body). The SDK's structured serialisation
/// writes the same data as a JSON string instead, so such a hand-built
/// CloudEvent reads differently after structured mode: build JSON data as
/// [`Data::Json`]. Likewise a JSON string ([`Data::Json`]) under a non-JSON
/// type is read as the text, as structured mode carries it, while binary
/// mode would send it quoted: build text data as [`Data::String`].
impl TryFrom<CloudEvent> for Event {
    type Error = Error;

    fn try_from(ce: CloudEvent) -> Result<Event> {
        let mut ce = ce.into_inner();
        crate::mapping::check_required(&ce).map_err(invalid)?;
        let (content_type, dataschema, data) = ce.take_data();

        let mut category: Option<String> = None;
        let mut summary = String::new();
        let mut version = 1_u32;
        let mut defaulted_id = false;
        let mut defaulted_source = false;
        let mut defaulted_type = false;
        let mut a3s_timestamp: Option<u64> = None;
        let mut metadata: HashMap<String, String> = HashMap::new();

        for (name, value) in ce.iter_extensions() {
            match name {
                CATEGORY => category = Some(string_extension(name, value)?),
                SUMMARY => summary = string_extension(name, value)?,
                VERSION => version = version_extension(value)?,
                TIMESTAMP => {
                    let raw = string_extension(name, value)?;
                    a3s_timestamp = Some(raw.parse().map_err(|_| {
                        invalid(format!(
                            "extension `{TIMESTAMP}` must be decimal Unix milliseconds, got {raw:?}"
                        ))
                    })?);
                }
                DEFAULTED => {
                    for attr in string_extension(name, value)?.split(',') {
                        match attr {
                            "id" => defaulted_id = true,
                            "source" => defaulted_source = true,
                            "type" => defaulted_type = true,
                            other => {
                                return Err(invalid(format!(
                                    "extension `{DEFAULTED}` names unknown attribute {other:?} \
                                     (expected id, source or type)"
                                )));
                            }
                        }
                    }
                }
                _ => {
                    let key = if let Some(hex) = name.strip_prefix(METADATA_HEX_PREFIX) {
                        mapping::decode_hex_key(hex).map_err(|reason| {
                            invalid(format!("metadata extension `{name}`: {reason}"))
                        })?
                    } else if let Some(key) = name.strip_prefix(METADATA_PREFIX) {
                        key.to_string()
                    } else {
                        format!("{FOREIGN_PREFIX}{name}")
                    };
                    insert_metadata(&mut metadata, key, value.to_string(), name)?;
                }
            }
        }

        if let Some(url) = dataschema {
            insert_metadata(
                &mut metadata,
                format!("{FOREIGN_PREFIX}dataschema"),
                url.into(),
                "dataschema",
            )?;
        }
        let (payload, base64) = match data {
            None => (serde_json::Value::Null, false),
            Some(data) => data::read(content_type.as_deref(), data, invalid)?,
        };
        if base64 {
            insert_metadata(
                &mut metadata,
                DATA_BASE64_KEY.to_string(),
                "true".to_string(),
                "data_base64",
            )?;
        }
        // `application/json` is the default only for data: a CloudEvent
        // without data that still names it keeps it.
        if let Some(ct) = content_type.filter(|ct| ct != JSON_CONTENT_TYPE || payload.is_null()) {
            insert_metadata(
                &mut metadata,
                format!("{FOREIGN_PREFIX}datacontenttype"),
                ct,
                "datacontenttype",
            )?;
        }

        let timestamp = match (ce.time(), a3s_timestamp) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "extension `{TIMESTAMP}` stands in for a `time` after year 9999, \
                     but the CloudEvent has a `time` too"
                )));
            }
            (Some(time), None) => u64::try_from(time.timestamp_millis()).map_err(|_| {
                invalid(format!(
                    "time {} is before 1970; A3S timestamps are unsigned",
                    time.to_rfc3339()
                ))
            })?,
            (None, Some(ms)) => ms,
            (None, None) => event_core::now_millis(),
        };

        for (defaulted, attribute, value, default) in [
            (
                defaulted_source,
                "source",
                ce.source().as_str(),
                DEFAULT_SOURCE,
            ),
            (defaulted_type, "type", ce.ty(), DEFAULT_TYPE),
        ] {
            if defaulted && value != default {
                return Err(invalid(format!(
                    "extension `{DEFAULTED}` marks `{attribute}` as the default {default:?}, \
                     but it is {value:?}; the mark does not belong to this {attribute}"
                )));
            }
        }

        let subject = ce.subject().unwrap_or_default().to_string();
        let category = category.unwrap_or_else(|| subject_category(&subject));
        let keep = |defaulted: bool, value: &str| {
            if defaulted {
                String::new()
            } else {
                value.to_string()
            }
        };
        let event = Event {
            id: keep(defaulted_id, ce.id()),
            source: keep(defaulted_source, ce.source()),
            event_type: keep(defaulted_type, ce.ty()),
            subject,
            category,
            version,
            payload,
            summary,
            timestamp,
            metadata,
        };
        if defaulted_id {
            let derived = derived_id(&event);
            if ce.id() != derived {
                return Err(invalid(format!(
                    "extension `{DEFAULTED}` marks `id` as derived from the event, but {:?} \
                     is not the id derived from it ({derived:?}); the mark does not belong \
                     to this event",
                    ce.id()
                )));
            }
        }
        Ok(event)
    }
}

/// The category a foreign CloudEvent gets: the subject's second token (the
/// conversion knows no provider prefix; see the mapping docs).
fn subject_category(subject: &str) -> String {
    let mut tokens = subject.split('.');
    match (tokens.next(), tokens.next()) {
        (Some(_), Some(category)) => category.to_string(),
        _ => String::new(),
    }
}

fn insert_metadata(
    metadata: &mut HashMap<String, String>,
    key: String,
    value: String,
    attribute: &str,
) -> Result<()> {
    match metadata.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(value);
            Ok(())
        }
        Entry::Occupied(slot) => Err(invalid(format!(
            "attribute `{attribute}` maps to metadata key {:?}, which another attribute already holds",
            slot.key()
        ))),
    }
}

fn string_extension(name: &str, value: &ExtensionValue) -> Result<String> {
    match value {
        ExtensionValue::String(s) => Ok(s.clone()),
        other => Err(invalid(format!(
            "extension `{name}` must be a string, got {other}"
        ))),
    }
}

fn version_extension(value: &ExtensionValue) -> Result<u32> {
    let parsed = match value {
        ExtensionValue::Integer(i) => u32::try_from(*i).ok(),
        ExtensionValue::String(s) => s.parse::<u32>().ok(),
        ExtensionValue::Boolean(_) => None,
    };
    parsed.ok_or_else(|| {
        invalid(format!(
            "extension `{VERSION}` must be an integer from 0 to {}, got {value}",
            u32::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        Event::typed(
            "events.market.forex",
            "market",
            "forex.rate_change",
            3,
            "USD/CNY",
            "reuters",
            json!({"rate": 7.35}),
        )
        .with_metadata("region", "asia")
        .with_metadata("X-Trace.Id", "abc")
        .with_metadata("ce-traceparent", "00-abc-01")
    }

    #[test]
    fn attributes_map_as_documented() {
        let event = sample();
        let ce = CloudEvent::from(&event);
        assert_eq!(ce.id(), event.id);
        assert_eq!(ce.ty(), "forex.rate_change");
        assert_eq!(ce.source(), "reuters");
        assert_eq!(ce.subject(), Some("events.market.forex"));
        assert_eq!(ce.datacontenttype(), Some("application/json"));
        assert_eq!(
            ce.time().map(|t| t.timestamp_millis()),
            Some(i64::try_from(event.timestamp).unwrap())
        );
        assert_eq!(
            ce.extension("a3scategory"),
            Some(&ExtensionValue::from("market"))
        );
        assert_eq!(
            ce.extension("a3sversion"),
            Some(&ExtensionValue::Integer(3))
        );
        assert_eq!(
            ce.extension("a3smregion"),
            Some(&ExtensionValue::from("asia"))
        );
        assert_eq!(
            ce.extension("traceparent"),
            Some(&ExtensionValue::from("00-abc-01"))
        );
        assert!(ce.extension("a3sdefaulted").is_none());
        assert_eq!(ce.data(), Some(&Data::Json(json!({"rate": 7.35}))));
        assert_eq!(Event::try_from(ce).unwrap(), event);
    }

    #[test]
    fn empty_required_fields_get_recorded_defaults() {
        let mut event = Event::new("", "", "", "", json!(null));
        event.id = String::new();
        let ce = CloudEvent::from(&event);
        assert_eq!(ce.ty(), DEFAULT_TYPE);
        assert_eq!(ce.source(), DEFAULT_SOURCE);
        assert_eq!(ce.id(), derived_id(&event));
        assert_eq!(
            ce.extension(DEFAULTED),
            Some(&ExtensionValue::from("id,source,type"))
        );
        assert!(ce.subject().is_none());
        assert!(ce.data().is_none());
        assert!(ce.datacontenttype().is_none());
        assert_eq!(Event::try_from(ce).unwrap(), event);
    }

    #[test]
    fn an_empty_id_gives_the_same_cloudevent_every_time() {
        // A consumer deduplicating by CloudEvent id must see one event, not
        // one per conversion.
        let mut event = sample();
        event.id = String::new();
        let first = CloudEvent::from(&event);
        assert!(
            first.id().starts_with(mapping::DERIVED_ID_PREFIX),
            "{}",
            first.id()
        );
        assert_eq!(CloudEvent::from(&event), first);
        assert_eq!(CloudEvent::from(event.clone()), first);
        // Another event, another id.
        let mut later = event.clone();
        later.timestamp += 1;
        assert_ne!(CloudEvent::from(&later).id(), first.id());
        assert_eq!(Event::try_from(first).unwrap(), event);

        // A whitespace id is non-empty, as CloudEvents counts it: kept.
        event.id = " ".into();
        let ce = CloudEvent::from(&event);
        assert_eq!(ce.id(), " ");
        assert_eq!(Event::try_from(ce).unwrap(), event);
    }

    #[test]
    fn a_derived_id_mark_that_does_not_fit_is_rejected() {
        // The mark says "this id was derived from this content"; on another id,
        // or after the content changed on the way, restoring an empty id would
        // give the event another CloudEvent id.
        let mut event = sample();
        event.id = String::new();
        let mut other_id = CloudEvent::from(&event);
        other_id.set_id("evt-1");
        let mut changed = CloudEvent::from(&event);
        changed.set_extension(SUMMARY, "changed on the way");
        for ce in [other_id, changed] {
            let err = Event::try_from(ce).unwrap_err().to_string();
            assert!(err.contains("a3sdefaulted"), "{err}");
            assert!(err.contains("derived"), "{err}");
        }
    }

    #[test]
    fn far_future_and_zero_timestamps_round_trip() {
        for ts in [0, 1, MAX_RFC3339_MILLIS, MAX_RFC3339_MILLIS + 1, u64::MAX] {
            let mut event = sample();
            event.timestamp = ts;
            let ce = CloudEvent::from(&event);
            assert_eq!(ce.time().is_some(), ts <= MAX_RFC3339_MILLIS, "{ts}");
            assert_eq!(Event::try_from(ce).unwrap(), event, "{ts}");
        }
    }

    #[test]
    fn large_versions_travel_as_strings() {
        let mut event = sample();
        event.version = u32::MAX;
        let ce = CloudEvent::from(&event);
        assert_eq!(
            ce.extension(VERSION),
            Some(&ExtensionValue::from(u32::MAX.to_string()))
        );
        assert_eq!(Event::try_from(ce).unwrap(), event);
    }

    #[test]
    fn dataschema_and_content_type_metadata_become_attributes() {
        let event = sample()
            .with_metadata("ce-dataschema", "https://schemas.example.com/rate.json")
            .with_metadata("ce-datacontenttype", "application/vnd.rate+json");
        let ce = CloudEvent::from(&event);
        assert_eq!(
            ce.dataschema().map(Url::as_str),
            Some("https://schemas.example.com/rate.json")
        );
        assert_eq!(ce.datacontenttype(), Some("application/vnd.rate+json"));
        assert_eq!(Event::try_from(ce).unwrap(), event);

        // Values the attributes cannot hold verbatim stay encoded metadata.
        let event = sample()
            .with_metadata("ce-dataschema", "HTTPS://Example.com")
            .with_metadata("ce-datacontenttype", "text/plain");
        let ce = CloudEvent::from(&event);
        assert!(ce.dataschema().is_none());
        assert_eq!(ce.datacontenttype(), Some("application/json"));
        assert_eq!(Event::try_from(ce).unwrap(), event);
    }

    #[test]
    fn category_defaults_to_the_subject_token() {
        assert_eq!(subject_category("events.market.forex"), "market");
        assert_eq!(subject_category("events"), "");
        assert_eq!(subject_category(""), "");
    }
}
