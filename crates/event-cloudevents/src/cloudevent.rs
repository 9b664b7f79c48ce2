//! [`CloudEvent`]: the SDK's event under the name the A3S API uses.

use crate::mapping;
use cloudevents::Data;
use serde::de::Error as _;
use serde_json::{Map, Value};
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
/// SDK event does: the CloudEvents JSON event format. It deserialises as the
/// SDK does, except that `data` under any JSON `datacontenttype` (media types
/// are case-insensitive and may carry parameters:
/// `application/vnd.x+json; charset=utf-8`) is read as JSON, as the JSON
/// format requires; the SDK only recognises a case-sensitive
/// `application/json` / `text/json` prefix or a bare `+json` suffix and would
/// read such data as a string. Conversely, data under a type that is not
/// JSON but that the SDK takes for JSON by its prefix
/// (`application/json-seq`, `text/json5`) is read as for any non-JSON type:
/// a `data` string as text, `data_base64` as bytes (the SDK would parse
/// either as JSON). `data_base64` is read as bytes under every type, JSON
/// types and none included (JSON format §3.1.2; the SDK parses it as JSON
/// there, which loses the bytes a relay passes on): such data becomes a
/// JSON payload only when converted to an A3S event, as a binary-mode body
/// does. A `datacontenttype` that is no media type (RFC 2046:
/// printable ASCII; control characters or non-ASCII text) is refused, as
/// every binding refuses it: HTTP binary mode could not carry it in
/// `Content-Type`. So is an empty `id`, `source` or `type`, or an empty
/// `subject`, which CloudEvents forbids (the SDK accepts them), as every
/// binding refuses them.
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
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
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

/// Whether the SDK's JSON event format reads `data` under this content type
/// as JSON (its own, case-sensitive test).
fn sdk_reads_as_json(content_type: &str) -> bool {
    content_type.starts_with("application/json")
        || content_type.starts_with("text/json")
        || content_type.ends_with("+json")
}

impl<'de> serde::Deserialize<'de> for CloudEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Members(mut doc) = Members::deserialize(deserializer)?;
        // A `null` member is unset (JSON format §2.2); the SDK refuses a
        // `null` `data_base64` instead of reading it as no data.
        if doc.get("data_base64").is_some_and(Value::is_null) {
            doc.remove("data_base64");
        }
        // Attribute names are lowercase letters and digits (§3.1.1); the
        // SDK would keep any other name as an extension, which binary mode
        // (and every other binding) refuses. `data` and `data_base64` are
        // members of the JSON format, not attributes.
        if let Some(name) = doc.keys().find(|name| {
            !matches!(name.as_str(), "data" | "data_base64")
                && !mapping::is_valid_attribute_name(name)
        }) {
            return Err(D::Error::custom(format!(
                "invalid CloudEvents attribute name {}: attribute names are lowercase ASCII \
                 letters and digits",
                mapping::quoted_name(name)
            )));
        }
        // The SDK's error for a bad `time` ("premature end of input") does
        // not name the attribute: kept to say so if the SDK refuses.
        let time = match doc.get("time") {
            Some(Value::String(time)) => Some(time.clone()),
            _ => None,
        };
        // Nor does its error for a bad `dataschema` (0.3: `schemaurl`).
        let schema_attribute = match doc.get("specversion").and_then(Value::as_str) {
            Some("0.3") => "schemaurl",
            _ => "dataschema",
        };
        let schema = match doc.get(schema_attribute) {
            Some(Value::String(schema)) => Some(schema.clone()),
            _ => None,
        };
        // JSON data the SDK would misread as a string: take it out, let the
        // SDK parse the rest, put it back as JSON (`null` too: an explicit
        // null payload, JSON format §3.1.1, as the SDK keeps it under
        // `application/json`). Base64 data (`data_base64`, or 0.3's
        // `datacontentencoding`) is read below as bytes. In a 1.0 document
        // `datacontentencoding` is no attribute but an extension like any
        // other, which says nothing about `data`.
        let base64_data = doc.contains_key("data_base64")
            || (doc.get("specversion").and_then(Value::as_str) == Some("0.3")
                && doc.contains_key("datacontentencoding"));
        let json_data = match doc.get("datacontenttype") {
            Some(Value::String(ct))
                if mapping::is_json_content_type(ct) && !sdk_reads_as_json(ct) && !base64_data =>
            {
                doc.remove("data")
            }
            _ => None,
        };
        // Non-JSON data under a type the SDK takes for JSON by its prefix
        // (`application/json-seq`, `text/json5`): the SDK would parse it as
        // JSON (a `data` string as a JSON value, `data_base64` that decodes
        // to JSON text as JSON); read it as for any other non-JSON type.
        //
        // Base64 data under a JSON type the SDK recognises, or under none
        // (which it reads as `application/json`): the SDK parses the decoded
        // bytes as JSON, but `data_base64` is binary data whatever the type
        // (JSON format §3.1.2: the deserializer MUST decode it into binary),
        // and its bytes are what a relay must pass on (a signed body); read
        // it as bytes. Reading the CloudEvent into an A3S event parses JSON
        // bytes as JSON, as for a binary-mode body.
        let other_data = match doc.get("datacontenttype") {
            Some(Value::String(ct))
                if !mapping::is_json_content_type(ct) && sdk_reads_as_json(ct) =>
            {
                take_non_json_data(&mut doc).map_err(D::Error::custom)?
            }
            Some(Value::String(ct)) if sdk_reads_as_json(ct) => {
                take_base64_data(&mut doc).map_err(D::Error::custom)?
            }
            None | Some(Value::Null) => take_base64_data(&mut doc).map_err(D::Error::custom)?,
            _ => None,
        };
        let mut event: cloudevents::Event =
            serde_json::from_value(Value::Object(doc)).map_err(|err| {
                let bad_time = time.and_then(|time| {
                    chrono::DateTime::parse_from_rfc3339(&time)
                        .err()
                        .map(|why| (time, why))
                });
                let bad_schema = schema
                    .and_then(|schema| url::Url::parse(&schema).err().map(|why| (schema, why)));
                match (bad_time, bad_schema) {
                    (Some((time, why)), _) => D::Error::custom(format!(
                        "invalid CloudEvents attribute time {time:?}: not an RFC 3339 timestamp \
                         ({why}); the CloudEvents SDK said: {err}"
                    )),
                    (None, Some((schema, why))) => D::Error::custom(format!(
                        "invalid CloudEvents attribute {schema_attribute} {schema:?}: not an \
                         absolute URI ({why}); the CloudEvents SDK said: {err}"
                    )),
                    (None, None) => D::Error::custom(err),
                }
            })?;
        mapping::check_datacontenttype(&event).map_err(D::Error::custom)?;
        mapping::check_required(&event).map_err(D::Error::custom)?;
        if let Some(data) = json_data {
            event.set_data_unchecked(Data::Json(data));
        }
        if let Some(data) = other_data {
            event.set_data_unchecked(data);
        }
        Ok(Self(event))
    }
}

/// The members of a JSON event format document, each name at most once.
///
/// The JSON format leaves a repeated member undefined, and JSON readers
/// differ (the first wins, the last wins, or an error), so a relay and the
/// final receiver could each read a different event out of one document:
/// it is refused as ambiguous, as binary mode refuses a repeated `ce-*`
/// header. Repeated keys inside `data` belong to the data's own JSON, not
/// to the event, and are read as `serde_json` reads them (the last wins).
struct Members(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> serde::de::Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvent as a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Members, A::Error> {
        let mut doc = Map::new();
        while let Some(name) = access.next_key::<String>()? {
            if doc.contains_key(&name) {
                return Err(A::Error::custom(format!(
                    "the document has the member {} more than once, which is ambiguous (JSON \
                     readers differ on which one counts)",
                    mapping::quoted_name(&name)
                )));
            }
            let value = access.next_value::<Value>()?;
            doc.insert(name, value);
        }
        Ok(Members(doc))
    }
}

/// Takes the data of a document whose type is not JSON out of it, as the
/// JSON format reads non-JSON data: a `data` string is text, `data_base64`
/// (in 0.3: `data` with `datacontentencoding: base64`) is bytes. Both members
/// at once, and their other errors, are left to the SDK.
fn take_non_json_data(doc: &mut Map<String, Value>) -> Result<Option<Data>, String> {
    let v03 = doc.get("specversion").and_then(Value::as_str) == Some("0.3");
    let (member, base64) = if v03 {
        let encoded = doc
            .get("datacontentencoding")
            .and_then(Value::as_str)
            .is_some_and(|encoding| encoding.eq_ignore_ascii_case("base64"));
        ("data", encoded)
    } else if doc.contains_key("data") && doc.contains_key("data_base64") {
        return Ok(None);
    } else if doc.contains_key("data_base64") {
        ("data_base64", true)
    } else {
        ("data", false)
    };
    match doc.remove(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if base64 => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(&text)
                .map(|bytes| Some(Data::Binary(bytes)))
                .map_err(|e| format!("`{member}` is not base64: {e}"))
        }
        Some(Value::String(text)) => Ok(Some(Data::String(text))),
        Some(other) => Err(format!(
            "`{member}` under the non-JSON datacontenttype {:?} must be a string, got {other}",
            doc.get("datacontenttype")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )),
    }
}

/// Takes base64 data out of a document as bytes: `data_base64` (in 0.3:
/// `data` with `datacontentencoding: base64`), if it is there. Both `data`
/// and `data_base64` at once are left to the SDK, which refuses them.
fn take_base64_data(doc: &mut Map<String, Value>) -> Result<Option<Data>, String> {
    let member = if doc.get("specversion").and_then(Value::as_str) == Some("0.3") {
        let encoded = doc
            .get("datacontentencoding")
            .and_then(Value::as_str)
            .is_some_and(|encoding| encoding.eq_ignore_ascii_case("base64"));
        if !encoded {
            return Ok(None);
        }
        "data"
    } else if doc.contains_key("data") {
        return Ok(None);
    } else {
        "data_base64"
    };
    match doc.remove(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(&text)
                .map(|bytes| Some(Data::Binary(bytes)))
                .map_err(|e| format!("`{member}` is not base64: {e}"))
        }
        Some(other) => Err(format!("`{member}` must be a base64 string, got {other}")),
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
