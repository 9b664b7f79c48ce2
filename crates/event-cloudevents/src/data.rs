//! Non-JSON event data (text, XML, binary) in an A3S [`Event`], whose payload
//! is a JSON value: how it is held, and helpers to set and read it without
//! knowing the encoding.
//!
//! A CloudEvent whose `datacontenttype` is not JSON (`text/plain`,
//! `application/xml`, `image/png`, ...) becomes an event whose payload is a
//! JSON string and whose metadata names the type
//! ([`DATA_CONTENT_TYPE_KEY`]):
//!
//! - text — under a [text type](crate::mapping::is_text_content_type) when the bytes
//!   are UTF-8 — is the string itself;
//! - any other data is the standard padded base64 of its bytes, marked by
//!   [`DATA_BASE64_KEY`]` = "true"` (as the JSON event format's
//!   `data_base64` member marks it).
//!
//! Writing the event back gives the same `datacontenttype` and the same data
//! bytes, in every content mode (see [`crate::mapping`] for the exact rules).
//!
//! ```
//! use event_cloudevents::data::{data_bytes, data_content_type, with_data};
//! use event_core::Event;
//!
//! let png = vec![0x89, b'P', b'N', b'G', 0x00, 0xff];
//! let event = with_data(Event::new("events.img.new", "img", "avatar", "cdn", serde_json::Value::Null), "image/png", png.clone())?;
//! assert_eq!(event.payload, "iVBORwD/"); // base64, marked in metadata
//! assert_eq!(data_content_type(&event), Some("image/png"));
//! assert_eq!(data_bytes(&event), Some(png));
//!
//! // through structured mode and back
//! let json = event_cloudevents::to_structured(&event)?;
//! let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
//! assert_eq!(doc["data_base64"], "iVBORwD/");
//! assert_eq!(event_cloudevents::from_structured(&json)?, event);
//! # Ok::<(), event_core::Error>(())
//! ```

use crate::mapping::{
    DATA_BASE64_KEY, DATA_CONTENT_TYPE_KEY, JSON_CONTENT_TYPE, is_cloudevents_content_type,
    is_json_content_type, is_text_content_type,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cloudevents::Data;
use event_core::{Error, Event, Result};
use serde_json::Value;

/// How an event's payload travels as CloudEvent data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DataForm {
    /// JSON data (`Data::Json`), or no data for a `null` payload.
    Json,
    /// The payload string as text (`Data::String`) under the non-JSON type.
    Text,
    /// The decoded payload string as bytes (`Data::Binary`) under the
    /// non-JSON type; the base64 marker is implied and not written.
    Binary(Vec<u8>),
}

/// Whether `value` survives as an HTTP header value (binary mode carries
/// `datacontenttype` in `Content-Type`, unencoded): printable ASCII and
/// inner spaces and tabs (a media type's `OWS` around a parameter's `;`),
/// no whitespace at either end (HTTP trims it).
pub(crate) fn is_stable_header_value(value: &str) -> bool {
    let blank = |c: char| c == ' ' || c == '\t';
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        && !value.starts_with(blank)
        && !value.ends_with(blank)
}

/// Whether a content type can be a CloudEvent's `datacontenttype` attribute
/// in every binding: an HTTP `Content-Type` value that announces no
/// CloudEvents format.
pub(crate) fn is_attribute_content_type(content_type: &str) -> bool {
    is_stable_header_value(content_type) && !is_cloudevents_content_type(content_type)
}

/// The standard padded base64 text decoded, if it is the one canonical
/// encoding of its bytes (so that encoding the bytes gives it back).
fn decode_canonical(text: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(text).ok()?;
    (STANDARD.encode(&bytes) == text).then_some(bytes)
}

/// How the payload travels, given the event's metadata content type (when
/// it can be the attribute, [`is_attribute_content_type`]) and base64
/// marker. The rule is the reverse of [`read`]: whatever it writes reads
/// back to the same payload and metadata, in every binding (binary mode
/// carries only bytes, and an empty body is no data).
pub(crate) fn form(content_type: Option<&str>, marker: Option<&str>, payload: &Value) -> DataForm {
    let (Some(ct), Value::String(text)) = (content_type, payload) else {
        return DataForm::Json;
    };
    if is_json_content_type(ct) || text.is_empty() {
        return DataForm::Json;
    }
    let text_type = is_text_content_type(ct);
    if marker == Some("true")
        && let Some(bytes) = decode_canonical(text)
    {
        // (not empty: the text is not) bytes that read back as text
        // would lose the marker
        let reads_as_text = text_type && std::str::from_utf8(&bytes).is_ok();
        if !reads_as_text {
            return DataForm::Binary(bytes);
        }
    }
    if text_type {
        DataForm::Text
    } else {
        // a string under a binary type reads back as base64: keep it JSON
        DataForm::Json
    }
}

/// The payload for non-JSON data `bytes` under `content_type`, and whether it
/// is base64 (to be marked with [`DATA_BASE64_KEY`]). Empty data is no data
/// (`null`), as binary mode cannot tell them apart.
fn payload_of_bytes(content_type: &str, bytes: Vec<u8>) -> (Value, bool) {
    if bytes.is_empty() {
        return (Value::Null, false);
    }
    let bytes = if is_text_content_type(content_type) {
        match String::from_utf8(bytes) {
            Ok(text) => return (Value::String(text), false),
            Err(not_utf8) => not_utf8.into_bytes(),
        }
    } else {
        bytes
    };
    (Value::String(STANDARD.encode(bytes)), true)
}

/// The payload for CloudEvent data under `content_type` (absent: JSON), and
/// whether it is base64 (see the [module docs](self)). `invalid` makes the
/// error for data that cannot be held.
pub(crate) fn read(
    content_type: Option<&str>,
    data: Data,
    invalid: impl Fn(String) -> Error,
) -> Result<(Value, bool)> {
    let Some(ct) = content_type.filter(|ct| !is_json_content_type(ct)) else {
        let parsed = !matches!(data, Data::Json(_));
        let value = match data {
            Data::Json(value) => value,
            Data::String(text) => serde_json::from_str(&text)
                .map_err(|e| invalid(format!("data is not valid JSON: {e}")))?,
            Data::Binary(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                let hint = if content_type.is_none() {
                    " (binary data, such as `data_base64`, with no datacontenttype is read as \
                     JSON: give the event a datacontenttype, `application/octet-stream` for raw \
                     bytes)"
                } else {
                    ""
                };
                invalid(format!("data is not valid JSON: {e}{hint}"))
            })?,
        };
        if parsed {
            // Text and bytes come from a message (binary mode's body) that
            // holds the data one level shallower than a structured document
            // does: past the limit, the event could not be read back from one.
            event_core::check_payload_depth(&value).map_err(|e| invalid(format!("data: {e}")))?;
        }
        return Ok((value, false));
    };
    let bytes = match data {
        Data::Binary(bytes) => bytes,
        Data::String(text) | Data::Json(Value::String(text)) => text.into_bytes(),
        Data::Json(other) => {
            return Err(invalid(format!(
                "data is a JSON {} but datacontenttype {ct:?} is not JSON; data of a \
                 non-JSON type is text or bytes",
                kind(&other)
            )));
        }
    };
    Ok(payload_of_bytes(ct, bytes))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The metadata content type of `event` if it can be the attribute.
fn attribute_content_type(event: &Event) -> Option<&str> {
    event
        .metadata
        .get(DATA_CONTENT_TYPE_KEY)
        .map(String::as_str)
        .filter(|ct| is_attribute_content_type(ct))
}

fn form_of(event: &Event) -> DataForm {
    form(
        attribute_content_type(event),
        event.metadata.get(DATA_BASE64_KEY).map(String::as_str),
        &event.payload,
    )
}

/// The bytes of the event's CloudEvent data: what binary mode sends as the
/// message body. `None` when the event has no data (a `null` payload).
///
/// Text data gives its UTF-8 bytes, base64 data (marked with
/// [`DATA_BASE64_KEY`]) its decoded bytes, JSON data its compact JSON text.
///
/// ```
/// use event_cloudevents::data::{data_bytes, with_data};
/// use event_core::Event;
///
/// let event = Event::new("events.a.b", "a", "s", "src", serde_json::json!({"k": 1}));
/// assert_eq!(data_bytes(&event), Some(br#"{"k":1}"#.to_vec()));
/// let event = with_data(event, "text/plain", "hello")?;
/// assert_eq!(event.payload, "hello");
/// assert_eq!(data_bytes(&event), Some(b"hello".to_vec()));
/// # Ok::<(), event_core::Error>(())
/// ```
pub fn data_bytes(event: &Event) -> Option<Vec<u8>> {
    if event.payload.is_null() {
        return None;
    }
    Some(match (form_of(event), &event.payload) {
        (DataForm::Binary(bytes), _) => bytes,
        (DataForm::Text, Value::String(text)) => text.as_bytes().to_vec(),
        (_, payload) => payload.to_string().into_bytes(),
    })
}

/// The event's CloudEvent `datacontenttype`: [`JSON_CONTENT_TYPE`] for JSON
/// data unless metadata names another JSON type, the metadata type for text
/// and binary data and for an event without data, `None` for an event with
/// neither data nor a type.
///
/// ```
/// use event_cloudevents::data::{data_content_type, with_data};
/// use event_core::Event;
///
/// let event = Event::new("events.a.b", "a", "s", "src", serde_json::json!(1));
/// assert_eq!(data_content_type(&event), Some("application/json"));
/// let event = with_data(event, "application/xml", "<a/>")?;
/// assert_eq!(data_content_type(&event), Some("application/xml"));
/// # Ok::<(), event_core::Error>(())
/// ```
pub fn data_content_type(event: &Event) -> Option<&str> {
    let ct = attribute_content_type(event);
    if event.payload.is_null() {
        return ct;
    }
    match form_of(event) {
        DataForm::Text | DataForm::Binary(_) => ct,
        DataForm::Json => Some(
            ct.filter(|ct| is_json_content_type(ct))
                .unwrap_or(JSON_CONTENT_TYPE),
        ),
    }
}

/// The event with `bytes` as its data under `content_type`, held as reading
/// such a CloudEvent holds it: JSON types parse the bytes as the JSON payload
/// (a type other than [`JSON_CONTENT_TYPE`] is kept in metadata); text types
/// with UTF-8 bytes give the text; anything else gives base64 marked with
/// [`DATA_BASE64_KEY`]. Empty bytes are no data (a `null` payload; binary
/// mode cannot tell them apart), with the type kept. The payload, the
/// metadata type and the marker are replaced.
///
/// Fails with [`Error::Serialization`] when the bytes are not valid JSON
/// under a JSON type, or when the type cannot be a `datacontenttype`
/// attribute (it must be printable ASCII and inner tabs without surrounding whitespace, and no
/// CloudEvents format such as `application/cloudevents+json`).
///
/// ```
/// use event_cloudevents::data::with_data;
/// use event_cloudevents::mapping::{DATA_BASE64_KEY, DATA_CONTENT_TYPE_KEY};
/// use event_core::Event;
///
/// let event = Event::new("events.a.b", "a", "s", "src", serde_json::Value::Null);
/// let xml = with_data(event.clone(), "application/xml", "<a>1</a>")?;
/// assert_eq!(xml.payload, "<a>1</a>");
/// assert_eq!(xml.metadata[DATA_CONTENT_TYPE_KEY], "application/xml");
///
/// let bin = with_data(event.clone(), "application/octet-stream", [0u8, 255])?;
/// assert_eq!(bin.payload, "AP8=");
/// assert_eq!(bin.metadata[DATA_BASE64_KEY], "true");
///
/// assert!(with_data(event, "application/json", "{oops").is_err());
/// # Ok::<(), event_core::Error>(())
/// ```
pub fn with_data(mut event: Event, content_type: &str, bytes: impl Into<Vec<u8>>) -> Result<Event> {
    if !is_attribute_content_type(content_type) {
        return Err(Error::Serialization(format!(
            "content type {content_type:?} cannot be a CloudEvent datacontenttype: it must be \
             printable ASCII (tabs allowed) without surrounding whitespace and name no \
             CloudEvents format"
        )));
    }
    let bytes = bytes.into();
    event.metadata.remove(DATA_BASE64_KEY);
    event.metadata.remove(DATA_CONTENT_TYPE_KEY);
    if is_json_content_type(content_type) {
        event.payload = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                Error::Serialization(format!(
                    "data under {content_type:?} is not valid JSON: {e}"
                ))
            })?
        };
        // `application/json` is the default for data, not kept in metadata
        if content_type != JSON_CONTENT_TYPE || event.payload.is_null() {
            event
                .metadata
                .insert(DATA_CONTENT_TYPE_KEY.to_string(), content_type.to_string());
        }
        return Ok(event);
    }
    let (payload, base64) = payload_of_bytes(content_type, bytes);
    event.payload = payload;
    event
        .metadata
        .insert(DATA_CONTENT_TYPE_KEY.to_string(), content_type.to_string());
    if base64 {
        event
            .metadata
            .insert(DATA_BASE64_KEY.to_string(), "true".to_string());
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_follow_the_reading_rule() {
        let text = json!("hello");
        assert_eq!(form(Some("text/plain"), None, &text), DataForm::Text);
        assert_eq!(
            form(Some("application/octet-stream"), None, &text),
            DataForm::Json
        );
        assert_eq!(form(Some("application/json"), None, &text), DataForm::Json);
        assert_eq!(form(None, Some("true"), &text), DataForm::Json);
        assert_eq!(form(Some("text/plain"), None, &json!("")), DataForm::Json);
        assert_eq!(form(Some("text/plain"), None, &json!(1)), DataForm::Json);
        let b64 = json!("AP8=");
        assert_eq!(
            form(Some("image/png"), Some("true"), &b64),
            DataForm::Binary(vec![0, 255])
        );
        assert_eq!(
            form(Some("text/plain"), Some("true"), &b64),
            DataForm::Binary(vec![0, 255])
        );
        // UTF-8 bytes under a text type read back as text: not binary
        assert_eq!(
            form(Some("text/plain"), Some("true"), &json!("aGk=")),
            DataForm::Text
        );
        // not canonical, not padded, not base64, not "true"
        for (marker, payload) in [
            ("true", "AP9="),
            ("true", "AP8"),
            ("true", "AP8=\n"),
            ("true", "not base64!"),
            ("TRUE", "AP8="),
            ("1", "AP8="),
        ] {
            assert_eq!(
                form(Some("image/png"), Some(marker), &json!(payload)),
                DataForm::Json,
                "{marker} {payload}"
            );
        }
    }

    #[test]
    fn reading_non_json_data() {
        let bad = |reason: String| Error::Serialization(reason);
        let read_ok = |ct: &str, data: Data| read(Some(ct), data, bad).unwrap();
        assert_eq!(
            read_ok("text/plain", Data::String("hi".into())),
            (json!("hi"), false)
        );
        assert_eq!(
            read_ok("text/plain", Data::Binary(b"hi".to_vec())),
            (json!("hi"), false)
        );
        assert_eq!(
            read_ok("text/plain", Data::Json(json!("hi"))),
            (json!("hi"), false)
        );
        assert_eq!(
            read_ok("text/plain", Data::Binary(vec![0xff])),
            (json!("/w=="), true)
        );
        assert_eq!(
            read_ok("text/plain; charset=latin1", Data::String("hi".into())),
            (json!("aGk="), true)
        );
        assert_eq!(
            read_ok("image/png", Data::Binary(vec![0, 255])),
            (json!("AP8="), true)
        );
        assert_eq!(
            read_ok("image/png", Data::Binary(Vec::new())),
            (Value::Null, false)
        );
        let err = read(Some("text/plain"), Data::Json(json!({"a": 1})), bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("object") && err.contains("text/plain"),
            "{err}"
        );
        let err = read(Some("application/json"), Data::String("{".into()), bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }
}
