//! The HTTP protocol binding (feature `http`; `http-client` and
//! `http-server` build on it).
//!
//! Messages are produced and parsed by the SDK's HTTP binding, in either
//! content mode:
//!
//! - [`Mode::Binary`] (the default, as in Knative): attributes in `ce-*`
//!   headers, `datacontenttype` in `Content-Type`, the data as the body
//!   (the JSON payload, or the bytes of text and binary data, see
//!   [Non-JSON data](crate::mapping#non-json-data)); an empty body is no
//!   data. Header values are percent-encoded as the binding requires (the
//!   SDK does not), so unicode and leading spaces survive.
//! - [`Mode::Structured`]: the whole event as one
//!   `application/cloudevents+json` document.
//!
//! Receiving detects the mode from the headers, as the binding specifies.
//! Binary-mode `ce-*` header values are unquoted (RFC 7230) and then
//! percent-decoded once; a `%` that starts no `%XX` triplet or octets that
//! are not UTF-8 are an [`Error::Serialization`] naming the attribute, as in
//! the NATS binding. `Content-Type` is read as is. A `ce-*` header that
//! names no valid attribute (`ce-a_b`) or the reserved `data` (`ce-data`),
//! and a `ce-*` or `Content-Type`
//! header given more than once, are errors, as in the NATS binding; so is a
//! `datacontenttype` (in either mode) that is no media type (RFC 2046:
//! printable ASCII), which a relay could not write back as `Content-Type`
//! (writing one is an error too, in either mode); so is a
//! `ce-datacontenttype` header that contradicts `Content-Type` (§3.1.1:
//! `Content-Type` carries the datacontenttype in binary mode). A batched-mode
//! message (`application/cloudevents-batch+json`) is refused naming the mode
//! (read its body with [`from_structured_batch`](crate::from_structured_batch)),
//! as is a structured message in an event format other than JSON, and a
//! message whose body has a `Content-Encoding` (gzip, ...) other than
//! `identity`: it is not decoded here, and its encoded bytes are not the
//! event's data. A CloudEvent with an empty `id`, `source`, `type` or
//! `subject` (which the spec forbids, and the SDK accepts) is an error in
//! either mode.

#[cfg(feature = "http-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
pub mod client;
mod redact;
#[cfg(feature = "http-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-server")))]
pub mod server;

pub use redact::redact_url;

use crate::CloudEvent;
use crate::percent;
use crate::structured::{STRUCTURED_CONTENT_TYPE, media_type};
use cloudevents::AttributesReader as _;
use cloudevents::binding::http::{Builder, SPEC_VERSION_HEADER, Serializer, to_event};
use cloudevents::message::{BinaryDeserializer, StructuredDeserializer};
use event_core::{Error, Event, Result};
use http::{HeaderMap, HeaderName, HeaderValue, header::CONTENT_TYPE};

/// How an event is laid out in an HTTP message (the crate-wide mode).
pub use crate::Mode;

/// The most attributes (extensions included) an event may have to travel
/// in HTTP binary mode, which sends each one as a header: 16,384. An HTTP
/// stack holds only so many headers in a message (the `http` crate's
/// `HeaderMap`, which reqwest, hyper and axum use, 24,576), and the client's
/// own headers (`Prefer`, its default headers) need room too. A larger event
/// is refused in binary mode, with an error naming structured mode, which
/// carries any number of attributes in the body. (Servers refuse far fewer
/// headers long before this: hyper and axum answer `431` past 100.)
pub const MAX_BINARY_ATTRIBUTES: usize = 16 * 1024;

/// The headers and body of an HTTP message carrying one CloudEvent; use it as
/// a request or a response with any HTTP stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpMessage {
    /// `ce-*` and `Content-Type` headers.
    pub headers: HeaderMap,
    /// The body: the data (binary mode) or the event document (structured).
    pub body: Vec<u8>,
}

/// The event as an HTTP message in `mode`.
///
/// ```
/// use event_cloudevents::http::{Mode, to_http, from_http};
/// use event_core::Event;
///
/// let event = Event::new("events.a.b", "a", "naïve café", "svc", serde_json::json!({"k": 1}));
/// let msg = to_http(&event, Mode::Binary)?;
/// assert_eq!(msg.headers["ce-subject"], "events.a.b");
/// assert_eq!(msg.headers["ce-a3ssummary"], "na%C3%AFve%20caf%C3%A9");
/// assert_eq!(from_http(&msg.headers, msg.body)?, event);
/// # Ok::<(), event_core::Error>(())
/// ```
pub fn to_http(event: &Event, mode: Mode) -> Result<HttpMessage> {
    cloudevent_to_http(CloudEvent::from(event), mode)
}

/// A CloudEvent as an HTTP message in `mode`. Fails with
/// [`Error::Serialization`] when an extension name is no CloudEvents
/// attribute name (lowercase ASCII letters and digits), in either mode,
/// and in binary mode when `datacontenttype` names a CloudEvents format
/// (`application/cloudevents+json`, ...): in `Content-Type` it would announce
/// structured mode and the receiver would read the data as the message, or
/// has whitespace at either end, which `Content-Type` loses on the way; or
/// when the event has more than [`MAX_BINARY_ATTRIBUTES`] attributes
/// (extensions included), one header each. Structured mode carries all these
/// events. An extension whose name is no attribute name or is
/// reserved (an attribute's, or `data`) is refused in either mode. A
/// `datacontenttype` that is no media type (RFC 2046:
/// printable ASCII; control characters or non-ASCII text) is refused in
/// either mode, naming the attribute: no binding reads it back.
pub fn cloudevent_to_http(event: CloudEvent, mode: Mode) -> Result<HttpMessage> {
    crate::mapping::check_writable(&event)?;
    let mut event = event.into_inner();
    let builder = MessageBuilder::default();
    let result = match mode {
        Mode::Binary => {
            prepare_binary(&mut event)?;
            BinaryDeserializer::deserialize_binary(event, Serializer::new(builder))
        }
        Mode::Structured => {
            StructuredDeserializer::deserialize_structured(event, Serializer::new(builder))
        }
    };
    result.map_err(|e| Error::Serialization(format!("cannot encode CloudEvent for HTTP: {e}")))
}

/// Readies an SDK event for the SDK's binary-mode serialiser: refuses a
/// `datacontenttype` that `Content-Type` cannot carry, then percent-encodes
/// the header values.
pub(crate) fn prepare_binary(event: &mut cloudevents::Event) -> Result<()> {
    if let Some(refusal) = binary_refusal(event) {
        return Err(refusal);
    }
    percent::encode_event(event)
}

/// Why binary mode cannot carry an event that structured mode can, if it
/// cannot: more attributes than [`MAX_BINARY_ATTRIBUTES`] (one header
/// each), a `datacontenttype` naming a CloudEvents format (as
/// `Content-Type` it would announce a structured-mode message), or one with
/// whitespace at either end (which `Content-Type` loses: HTTP trims header
/// values).
pub(crate) fn binary_refusal(event: &cloudevents::Event) -> Option<Error> {
    let attributes = event.iter().count();
    if attributes > MAX_BINARY_ATTRIBUTES {
        return Some(Error::Serialization(format!(
            "CloudEvent {:?} has too many attributes for HTTP binary mode: {attributes} \
             (extensions included), and binary mode sends each as a header (at most \
             {MAX_BINARY_ATTRIBUTES}); send it in structured mode, which carries them in the body",
            event.id()
        )));
    }
    if let Some(ct) = event
        .datacontenttype()
        .filter(|ct| crate::mapping::is_cloudevents_content_type(ct))
    {
        return Some(Error::Serialization(format!(
            "CloudEvent {:?} has datacontenttype {ct:?}, which HTTP binary mode cannot carry: \
             as Content-Type it announces a structured-mode message; send it in structured mode",
            event.id()
        )));
    }
    if let Some(ct) = event
        .datacontenttype()
        .filter(|ct| !crate::data::is_stable_header_value(ct))
    {
        return Some(Error::Serialization(format!(
            "CloudEvent {:?} has datacontenttype {ct:?}, which HTTP binary mode cannot carry: \
             Content-Type loses whitespace at either end on the way (HTTP trims header \
             values); send it in structured mode",
            event.id()
        )));
    }
    None
}

/// Parses a CloudEvent from an HTTP message (either mode) and converts it to
/// an event. A message that is not a valid CloudEvent, or one that cannot
/// become an A3S event, is [`Error::Serialization`].
pub fn from_http(headers: &HeaderMap, body: Vec<u8>) -> Result<Event> {
    Event::try_from(cloudevent_from_http(headers, body)?)
}

/// The refusal of a message [`cloudevent_from_http`] does not read, if it is
/// one: a body in a content coding (`Content-Encoding` other than
/// `identity`), or a CloudEvents message in a format not read here
/// (batched mode, or structured mode in an event format other than JSON).
/// A server answers it `415` (RFC 9110 §8.4.1).
pub(crate) fn unread_format(headers: &HeaderMap) -> Option<Error> {
    if let Some(coding) = content_coding(headers) {
        return Some(Error::Serialization(format!(
            "HTTP message has Content-Encoding {coding:?}: its body is an encoded form of the \
             event, which is not decoded here; send it unencoded"
        )));
    }
    if is_structured(headers) {
        return None;
    }
    let ct = cloudevents_format(headers)?;
    let hint = if crate::mapping::is_batch_content_type(ct) {
        "a batch of events (batched content mode); read the body with \
             `from_structured_batch`"
            .to_string()
    } else {
        format!("an event format this crate does not read (only {STRUCTURED_CONTENT_TYPE})")
    };
    Some(Error::Serialization(format!(
        "HTTP message has Content-Type {ct:?}: {hint}"
    )))
}

/// Parses a CloudEvent from an HTTP message (either mode).
pub fn cloudevent_from_http(headers: &HeaderMap, body: Vec<u8>) -> Result<CloudEvent> {
    // Batched mode, or structured mode in an event format other than JSON:
    // a CloudEvents message, but not one event in JSON.
    if let Some(err) = unread_format(headers) {
        return Err(err);
    }
    // A singleton header (RFC 9110 §8.3): with two, even the mode is
    // ambiguous, in structured mode as in binary mode.
    if headers.get_all(CONTENT_TYPE).iter().nth(1).is_some() {
        return Err(Error::Serialization(
            "HTTP message has more than one Content-Type header".to_string(),
        ));
    }
    let structured = is_structured(headers);
    if !structured && !headers.contains_key(SPEC_VERSION_HEADER) {
        return Err(Error::Serialization(format!(
            "HTTP message is not a CloudEvent: no `{SPEC_VERSION_HEADER}` header and \
             Content-Type is not {STRUCTURED_CONTENT_TYPE}"
        )));
    }
    if structured {
        // Parsed here rather than by the SDK, which matches the content type
        // case-sensitively and misreads JSON data under some JSON types (see
        // `CloudEvent`'s `Deserialize`).
        let event: CloudEvent = serde_json::from_slice(&body).map_err(|e| {
            Error::Serialization(format!("invalid CloudEvent in HTTP message: {e}"))
        })?;
        check_non_empty(&event)?;
        return Ok(event);
    }
    check_binary_headers(headers)?;
    let headers = decode_typed_headers(headers)?;
    check_content_type_header(&headers)?;
    let mut event = to_event(headers.as_ref(), body)
        .map_err(|e| Error::Serialization(format!("invalid CloudEvent in HTTP message: {e}")))?;
    percent::decode_event(&mut event)?;
    crate::mapping::check_datacontenttype(&event)
        .map_err(|reason| Error::Serialization(format!("HTTP message: {reason}")))?;
    check_non_empty(&event)?;
    Ok(CloudEvent::new(event))
}

/// [`crate::mapping::check_required`], worded for an HTTP message.
fn check_non_empty(event: &cloudevents::Event) -> Result<()> {
    crate::mapping::check_required(event).map_err(|reason| {
        Error::Serialization(format!("invalid CloudEvent in HTTP message: {reason}"))
    })
}

/// Refuses, as the NATS binding does, a binary-mode message with a `ce-*`
/// header that names no valid attribute (the SDK would take `ce-a_b` as an
/// extension no CloudEvent may have) or the reserved `data` (an extension
/// that a structured-mode relay would write as the data), or with a `ce-*` or `Content-Type`
/// header given more than once (the SDK would keep one value, the last
/// `ce-*` or the first `Content-Type`, and drop the other silently).
fn check_binary_headers(headers: &HeaderMap) -> Result<()> {
    for name in headers.keys() {
        let name = name.as_str();
        let what = if let Some(attribute) = name.strip_prefix("ce-") {
            if !crate::mapping::is_valid_attribute_name(attribute) {
                return Err(Error::Serialization(format!(
                    "HTTP header {name:?} does not name a CloudEvents attribute \
                     (lowercase letters and digits after `ce-`)"
                )));
            }
            if crate::mapping::is_reserved_data_name(attribute) {
                return Err(Error::Serialization(format!(
                    "HTTP header {name:?} names `{attribute}`, which is reserved: the data \
                     is the body, not an attribute"
                )));
            }
            format!("CloudEvent attribute `{attribute}`")
        } else if name == CONTENT_TYPE.as_str() {
            "Content-Type".to_string()
        } else {
            continue;
        };
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(Error::Serialization(format!(
                "HTTP message has more than one {what} header"
            )));
        }
        if headers.get_all(name).iter().any(|v| v.to_str().is_err()) {
            return Err(Error::Serialization(format!(
                "HTTP header {name:?} ({what}) holds bytes that are not visible ASCII: \
                 CloudEvents attribute values travel percent-encoded in headers"
            )));
        }
    }
    Ok(())
}

/// §3.1.1: `Content-Type` is the datacontenttype and `ce-datacontenttype`
/// MUST NOT be present too; the SDK would keep the first and drop the second
/// silently. The same value twice (the `ce-` one decoded; the type and
/// subtype compared case-insensitively, as media types are) contradicts
/// nothing.
fn check_content_type_header(headers: &HeaderMap) -> Result<()> {
    if let (Some(ct), Some(ce_ct)) = (
        headers.get(CONTENT_TYPE),
        headers.get(DATACONTENTTYPE_HEADER),
    ) && !same_media_type(ct, ce_ct)
    {
        return Err(Error::Serialization(format!(
            "HTTP message has a `{DATACONTENTTYPE_HEADER}` header ({ce_ct:?}) that \
                 contradicts its Content-Type ({ct:?}); in binary mode Content-Type is the \
                 datacontenttype and `{DATACONTENTTYPE_HEADER}` must not be sent"
        )));
    }
    Ok(())
}

/// Whether two header values name the same media type: the type and
/// subtype equal but for ASCII case, the parameters byte for byte.
fn same_media_type(a: &HeaderValue, b: &HeaderValue) -> bool {
    fn split(v: &HeaderValue) -> (&[u8], &[u8]) {
        let v = v.as_bytes();
        match v.iter().position(|&c| c == b';') {
            Some(at) => (v[..at].trim_ascii(), v[at..].trim_ascii()),
            None => (v.trim_ascii(), &[]),
        }
    }
    let ((type_a, params_a), (type_b, params_b)) = (split(a), split(b));
    type_a.eq_ignore_ascii_case(type_b) && params_a == params_b
}

/// Unquotes and percent-decodes (§3.1.3.2) the headers of the attributes
/// the SDK reads without [`percent::decode_event`] (`specversion`, `time`,
/// a `ce-datacontenttype` sent instead of `Content-Type`; for
/// `dataschema` only the quoting, its `%XX` triplets being read after the
/// SDK has parsed the URL, see [`percent::decode_event`]), so that a sender
/// quoting them or encoding them needlessly is understood, as in the NATS
/// binding. The string attributes are decoded after the SDK has read them.
fn decode_typed_headers(headers: &HeaderMap) -> Result<std::borrow::Cow<'_, HeaderMap>> {
    let mut decoded = std::borrow::Cow::Borrowed(headers);
    let mut spec_version: Option<String> = None;
    for (attribute, decode) in [
        ("specversion", true),
        ("time", true),
        ("datacontenttype", true),
        ("dataschema", false),
    ] {
        let name = format!("ce-{attribute}");
        let Some(text) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let unquoted = percent::unquote(attribute, text)?;
        let value = match decode {
            true => percent::decode(attribute, &unquoted)?.unwrap_or_else(|| unquoted.into_owned()),
            false => unquoted.into_owned(),
        };
        if attribute == "specversion" {
            spec_version = Some(value.clone());
        }
        // The SDK's own errors for these name no attribute. (In 0.3,
        // `dataschema` is no attribute: `schemaurl` is.)
        let refused = match attribute {
            "time" => chrono::DateTime::parse_from_rfc3339(&value)
                .err()
                .map(|e| format!("not an RFC 3339 timestamp ({e})")),
            "dataschema" if spec_version.as_deref() != Some("0.3") => url::Url::parse(&value)
                .err()
                .map(|e| format!("not an absolute URI ({e})")),
            _ => None,
        };
        if let Some(why) = refused {
            return Err(Error::Serialization(format!(
                "header for CloudEvent attribute `{attribute}` holds {value:?}, which is {why}"
            )));
        }
        if value == text {
            continue;
        }
        if attribute == "datacontenttype" {
            crate::mapping::check_media_type_text(&value)
                .map_err(|reason| Error::Serialization(format!("HTTP message: {reason}")))?;
        }
        // (`from_str` takes octets beyond ASCII, which the SDK then cannot read)
        let value = Some(value.as_str())
            .filter(|v| v.is_ascii())
            .and_then(|v| HeaderValue::from_str(v).ok())
            .ok_or_else(|| {
                Error::Serialization(format!(
                    "header for CloudEvent attribute `{attribute}` decodes to {value:?}, \
                 which is no {attribute}"
                ))
            })?;
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::Serialization(format!("{name:?} is not a valid HTTP header name"))
        })?;
        decoded.to_mut().insert(name, value);
    }
    Ok(decoded)
}

/// The message's `Content-Encoding`, unless it is absent or `identity` only:
/// the body is then an encoded form of the content (gzip ...), not the data
/// or the event document.
fn content_coding(headers: &HeaderMap) -> Option<String> {
    let codings: Vec<String> = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .filter(|text| {
            text.split(',').any(|coding| {
                let coding = coding.trim();
                !coding.is_empty() && !coding.eq_ignore_ascii_case("identity")
            })
        })
        .collect();
    (!codings.is_empty()).then(|| codings.join(", "))
}

/// The binary-mode header a sender must not send next to `Content-Type`.
const DATACONTENTTYPE_HEADER: &str = "ce-datacontenttype";

/// The `Content-Type`, if it names a CloudEvents format
/// (`application/cloudevents…`, batches included).
fn cloudevents_format(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| crate::mapping::is_cloudevents_content_type(v))
}

/// Whether the headers announce a CloudEvent (binary or structured mode).
pub fn is_cloudevent(headers: &HeaderMap) -> bool {
    is_structured(headers) || headers.contains_key(SPEC_VERSION_HEADER)
}

/// Whether `Content-Type` is `application/cloudevents+json`, in any case,
/// with or without parameters.
fn is_structured(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| media_type(v).eq_ignore_ascii_case(STRUCTURED_CONTENT_TYPE))
}

/// Collects what the SDK's serializer writes.
#[derive(Default)]
struct MessageBuilder {
    headers: HeaderMap,
    /// Why a header could not be added (the first one).
    bad_header: Option<String>,
}

impl Builder<HttpMessage> for MessageBuilder {
    fn header(&mut self, key: &str, value: HeaderValue) {
        if self.bad_header.is_some() {
            return;
        }
        match HeaderName::from_bytes(key.as_bytes()) {
            // `try_insert`: `insert` panics past what a `HeaderMap` holds
            // (`binary_refusal` refuses such an event first)
            Ok(name) => {
                if self.headers.try_insert(name, value).is_err() {
                    self.bad_header = Some(format!(
                        "too many headers for one HTTP message ({} held); send the event in \
                         structured mode",
                        self.headers.len()
                    ));
                }
            }
            Err(_) => self.bad_header = Some(format!("{key:?} is not a valid HTTP header name")),
        }
    }

    fn body(&mut self, bytes: Vec<u8>) -> cloudevents::message::Result<HttpMessage> {
        if let Some(reason) = self.bad_header.take() {
            return Err(cloudevents::message::Error::Other {
                source: reason.into(),
            });
        }
        Ok(HttpMessage {
            headers: std::mem::take(&mut self.headers),
            body: bytes,
        })
    }

    fn finish(&mut self) -> cloudevents::message::Result<HttpMessage> {
        self.body(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        CLOUDEVENTS_CONTENT_TYPES, HEADER_UNSAFE_CONTENT_TYPES, MALFORMED_PERCENT,
        WELL_FORMED_PERCENT, odd_event,
    };
    use cloudevents::AttributesWriter as _;
    use serde_json::json;

    #[test]
    fn both_modes_round_trip() {
        let event = odd_event();
        for mode in [Mode::Binary, Mode::Structured] {
            let msg = to_http(&event, mode).unwrap();
            assert!(is_cloudevent(&msg.headers));
            assert_eq!(
                from_http(&msg.headers, msg.body).unwrap(),
                event,
                "{mode:?}"
            );
        }
    }

    #[test]
    fn binary_mode_layout() {
        let event = odd_event();
        let msg = to_http(&event, Mode::Binary).unwrap();
        assert_eq!(msg.headers["ce-specversion"], "1.0");
        assert_eq!(msg.headers["ce-type"], "forex.rate_change");
        assert_eq!(msg.headers[CONTENT_TYPE], "application/json");
        assert_eq!(msg.headers["ce-a3sversion"], "7");
        assert_eq!(
            msg.headers["ce-traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        for value in msg.headers.values() {
            assert!(
                value.to_str().is_ok(),
                "header value not visible ASCII: {value:?}"
            );
        }
        let body: serde_json::Value = serde_json::from_slice(&msg.body).unwrap();
        assert_eq!(body, event.payload);
    }

    #[test]
    fn quoted_header_values_are_unquoted_before_percent_decoding() {
        // HTTP binding §3.1.3.2: a receiver unescapes RFC 7230 quoted
        // strings, then percent-decodes once
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "\"id with \\\"quotes\\\" inside\""),
            ("ce-source", "s"),
            ("ce-type", "\"t%20x\""),
            ("ce-subject", "events.a.b"),
        ] {
            headers.insert(name, HeaderValue::from_str(value).unwrap());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let ce = cloudevent_from_http(&headers, b"{}".to_vec()).unwrap();
        assert_eq!(ce.id(), "id with \"quotes\" inside");
        assert_eq!(ce.ty(), "t x");

        headers.insert("ce-id", HeaderValue::from_static("\"unterminated"));
        let err = cloudevent_from_http(&headers, b"{}".to_vec()).unwrap_err();
        assert!(err.to_string().contains("unterminated"), "{err}");
    }

    #[test]
    fn structured_mode_layout() {
        let event = odd_event();
        let msg = to_http(&event, Mode::Structured).unwrap();
        assert_eq!(msg.headers[CONTENT_TYPE], STRUCTURED_CONTENT_TYPE);
        assert_eq!(msg.headers.len(), 1);
        let doc: serde_json::Value = serde_json::from_slice(&msg.body).unwrap();
        // verbatim in the JSON document: no header encoding
        assert_eq!(doc["a3ssummary"], event.summary.as_str());
        assert!(event.summary.contains("\r\n"));
    }

    #[test]
    fn non_cloudevent_messages_are_rejected() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let err = from_http(&headers, b"{}".to_vec()).unwrap_err();
        assert!(err.to_string().contains("not a CloudEvent"), "{err}");

        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
        headers.insert("ce-id", HeaderValue::from_static("1"));
        headers.insert("ce-source", HeaderValue::from_static("s"));
        // no ce-type
        let err = from_http(&headers, b"{}".to_vec()).unwrap_err();
        assert!(err.to_string().contains("type"), "{err}");
    }

    #[test]
    fn structured_mode_reads_json_data_under_any_json_content_type() {
        for ct in [
            "Application/JSON",
            "application/vnd.a3s+json; charset=utf-8",
        ] {
            for payload in [json!({"k": 1}), json!("{\"a\":1}")] {
                let mut event = odd_event().with_metadata("ce-datacontenttype", ct);
                event.payload = payload.clone();
                let msg = to_http(&event, Mode::Structured).unwrap();
                assert_eq!(
                    from_http(&msg.headers, msg.body).unwrap(),
                    event,
                    "{ct} {payload}"
                );
            }
        }
    }

    #[test]
    fn a_relayed_cloudevent_keeps_base64_json_data_bytes() {
        // JSON format §3.1.2: `data_base64` is decoded into binary data.
        // The SDK parsed it as JSON under a JSON type (or none), so a relay
        // re-serialised a signed JSON body (`{"a":1}`): in binary mode the
        // body, in structured mode the `data` member, differed from the
        // bytes sent.
        let signed: &[u8] = b"{ \"b\": 2,  \"a\" : 1 }\n";
        let encoded = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(signed)
        };
        let structured = structured_headers();
        for ct in [
            Some("application/json"),
            Some("application/vnd.x+json"),
            Some("text/json"),
            None,
        ] {
            let mut doc = json!({
                "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
                "data_base64": encoded,
            });
            if let Some(ct) = ct {
                doc["datacontenttype"] = json!(ct);
            }
            let ce = cloudevent_from_http(&structured, serde_json::to_vec(&doc).unwrap()).unwrap();
            assert_eq!(
                ce.data(),
                Some(&cloudevents::Data::Binary(signed.to_vec())),
                "{ct:?}"
            );
            let binary = cloudevent_to_http(ce.clone(), Mode::Binary).unwrap();
            assert_eq!(binary.body, signed, "{ct:?}");
            let again = cloudevent_to_http(ce.clone(), Mode::Structured).unwrap();
            let again: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
            assert_eq!(again["data_base64"], json!(encoded), "{ct:?}");
            // binary → structured → binary: the same body
            let back = cloudevent_from_http(&binary.headers, binary.body.clone()).unwrap();
            let relayed = cloudevent_to_http(back, Mode::Structured).unwrap();
            let back = cloudevent_from_http(&relayed.headers, relayed.body).unwrap();
            assert_eq!(
                cloudevent_to_http(back, Mode::Binary).unwrap().body,
                signed,
                "{ct:?}"
            );
            // as an event, the data is the JSON it holds
            assert_eq!(
                Event::try_from(ce).unwrap().payload,
                json!({"a": 1, "b": 2}),
                "{ct:?}"
            );
        }
    }

    #[test]
    fn explicit_null_json_data_is_relayed_under_every_json_type() {
        // JSON format §3.1.1: `"data": null` under a JSON type is an explicit
        // null payload, distinct from no `data`. The SDK keeps it under
        // `application/json`; under the JSON types it misses (case, `+json`
        // with parameters) it was dropped, so a relay sent no body instead
        // of `null`.
        let structured = structured_headers();
        for ct in [
            "application/json",
            "Application/JSON",
            "application/vnd.x+json; charset=utf-8",
        ] {
            let doc = json!({
                "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
                "datacontenttype": ct, "data": null,
            });
            let ce = cloudevent_from_http(&structured, serde_json::to_vec(&doc).unwrap()).unwrap();
            assert_eq!(
                ce.data(),
                Some(&cloudevents::Data::Json(json!(null))),
                "{ct}"
            );
            let binary = cloudevent_to_http(ce.clone(), Mode::Binary).unwrap();
            assert_eq!(binary.body, b"null", "{ct}");
            let again = cloudevent_to_http(ce, Mode::Structured).unwrap();
            let again: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
            assert_eq!(again.get("data"), Some(&json!(null)), "{ct}");
        }
    }

    #[test]
    fn structured_content_type_is_matched_case_insensitively() {
        // Media types are case-insensitive (RFC 9110 §8.3.1).
        let event = odd_event();
        let msg = to_http(&event, Mode::Structured).unwrap();
        for ct in [
            "Application/CloudEvents+JSON",
            "application/cloudevents+json; charset=utf-8",
            " application/cloudevents+json ;charset=utf-8",
        ] {
            let mut headers = msg.headers.clone();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            assert!(is_cloudevent(&headers), "{ct}");
            assert_eq!(
                from_http(&headers, msg.body.clone()).unwrap(),
                event,
                "{ct}"
            );
        }
        // Not the structured type, merely starting like it.
        let mut headers = msg.headers.clone();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents+jsonx"),
        );
        assert!(!is_cloudevent(&headers));
    }

    #[test]
    fn content_types_that_cannot_be_header_values_survive_binary_mode() {
        // A JSON content type in metadata that is no valid (or no stable)
        // Content-Type header value travels as an encoded extension instead.
        for ct in HEADER_UNSAFE_CONTENT_TYPES {
            let event = odd_event().with_metadata("ce-datacontenttype", ct);
            for mode in [Mode::Binary, Mode::Structured] {
                let msg = to_http(&event, mode).unwrap_or_else(|e| panic!("{ct:?} {mode:?}: {e}"));
                assert_eq!(
                    from_http(&msg.headers, msg.body).unwrap(),
                    event,
                    "{ct:?} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn a_tab_between_media_type_parameters_travels_in_content_type() {
        // RFC 9110 allows a tab around a parameter's `;`; binary mode
        // carries such a type in Content-Type as it is.
        for (ct, payload) in [
            (
                "application/vnd.a3s+json;\tv=1",
                serde_json::json!({"k": 1}),
            ),
            ("text/plain;\tcharset=utf-8", serde_json::json!("text")),
        ] {
            let mut event = odd_event().with_metadata("ce-datacontenttype", ct);
            event.payload = payload;
            let msg = to_http(&event, Mode::Binary).unwrap();
            assert_eq!(msg.headers[CONTENT_TYPE], ct);
            assert_eq!(from_http(&msg.headers, msg.body).unwrap(), event, "{ct:?}");
        }
    }

    /// Binary-mode headers with only the required attributes.
    /// The headers of a structured-mode message: its `Content-Type` alone.
    fn structured_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(STRUCTURED_CONTENT_TYPE),
        );
        headers
    }

    fn required_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (n, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ] {
            headers.insert(n, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn malformed_percent_encoding_is_refused_naming_the_attribute() {
        // §3.1.3.2: a `%` always starts a `%XX` triplet (a sender MUST
        // encode a literal `%` as `%25`) and the octets MUST be UTF-8.
        let message = |name: &str, value: &str| {
            let mut headers = required_headers();
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
            headers
        };
        for value in MALFORMED_PERCENT {
            for (header, attribute) in [
                ("ce-source", "source"),
                ("ce-subject", "subject"),
                ("ce-comexample", "comexample"),
            ] {
                match cloudevent_from_http(&message(header, value), Vec::new()) {
                    Err(Error::Serialization(reason)) => {
                        assert!(reason.contains(attribute), "{value:?}: {reason}")
                    }
                    other => panic!("{header}: {value:?}: expected an error, got {other:?}"),
                }
            }
        }
        for (value, decoded) in WELL_FORMED_PERCENT {
            let ce = cloudevent_from_http(&message("ce-source", value), Vec::new()).unwrap();
            assert_eq!(ce.source(), decoded, "{value:?}");
        }
    }

    #[test]
    fn a_cloudevent_payload_typed_as_one_is_not_read_as_the_message() {
        // An event carrying a CloudEvent document, typed as such: in binary
        // mode a `Content-Type: application/cloudevents+json` would make the
        // receiver read the payload as the message itself (another event).
        let inner = json!({"specversion": "1.0", "id": "inner", "source": "s", "type": "t"});
        for ct in CLOUDEVENTS_CONTENT_TYPES {
            for payload in [inner.clone(), serde_json::Value::Null] {
                let mut event = odd_event().with_metadata("ce-datacontenttype", ct);
                event.payload = payload.clone();
                for mode in [Mode::Binary, Mode::Structured] {
                    let msg = to_http(&event, mode).unwrap();
                    assert_eq!(
                        from_http(&msg.headers, msg.body).unwrap(),
                        event,
                        "{ct:?} {payload} {mode:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_cloudevent_typed_as_a_cloudevents_format_is_refused_in_binary_mode() {
        let inner = json!({"specversion": "1.0", "id": "inner", "source": "s", "type": "t"});
        for ct in CLOUDEVENTS_CONTENT_TYPES {
            let mut ce = crate::CloudEvent::from(odd_event());
            ce.set_data(ct, inner.clone());
            match cloudevent_to_http(ce.clone(), Mode::Binary) {
                Err(Error::Serialization(reason)) => {
                    assert!(reason.contains("structured"), "{ct:?}: {reason}")
                }
                other => panic!("{ct:?}: expected a serialization error, got {other:?}"),
            }
            // Structured mode carries it (JSON data needs a JSON type).
            if crate::mapping::is_json_content_type(ct) {
                let msg = cloudevent_to_http(ce.clone(), Mode::Structured).unwrap();
                assert_eq!(cloudevent_from_http(&msg.headers, msg.body).unwrap(), ce);
            }
        }
    }

    #[test]
    fn dataschema_header_is_percent_encoded_like_every_attribute() {
        // §3.1.3.2 applies to every `ce-*` header: a `%` in a URL travels as
        // `%25`, as the NATS binding sends it too.
        let schema = "https://schemas.example.com/a%20b.json?v=%41";
        let event = odd_event().with_metadata("ce-dataschema", schema);
        let msg = to_http(&event, Mode::Binary).unwrap();
        assert_eq!(
            msg.headers["ce-dataschema"],
            "https://schemas.example.com/a%2520b.json?v=%2541"
        );
        assert_eq!(from_http(&msg.headers, msg.body.clone()).unwrap(), event);

        // What a conforming sender writes reads back as its URL ...
        let ce = cloudevent_from_http(&msg.headers, msg.body).unwrap();
        assert_eq!(ce.dataschema().map(url::Url::as_str), Some(schema));
        // ... and a malformed one is refused like any other attribute.
        let mut headers = to_http(&odd_event(), Mode::Binary).unwrap().headers;
        headers.insert(
            "ce-dataschema",
            HeaderValue::from_static("https://x.example/%zz"),
        );
        let err = cloudevent_from_http(&headers, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("dataschema"), "{err}");
    }

    #[test]
    fn a_repeated_attribute_header_is_refused_as_in_nats() {
        // Which of two `ce-id` values is the id? The NATS binding refuses the
        // message; so does HTTP, instead of keeping the last one.
        let base = required_headers;
        for (name, needle) in [
            ("ce-id", "`id`"),
            ("ce-traceparent", "`traceparent`"),
            ("content-type", "Content-Type"),
        ] {
            let mut headers = base();
            headers.append(name, HeaderValue::from_static("application/json"));
            headers.append(name, HeaderValue::from_static("application/json"));
            match cloudevent_from_http(&headers, b"{}".to_vec()) {
                Err(Error::Serialization(reason)) => {
                    assert!(reason.contains(needle), "{name}: {reason}");
                    assert!(reason.contains("more than one"), "{name}: {reason}");
                }
                other => panic!("{name}: expected a serialization error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_repeated_content_type_is_refused_in_structured_mode_too() {
        // Content-Type is a singleton header (RFC 9110 §8.3): with two, the
        // mode itself is ambiguous. Binary mode refused it; structured mode
        // read the first one and ignored the other.
        let event = odd_event();
        let msg = to_http(&event, Mode::Structured).unwrap();
        for second in ["text/plain", STRUCTURED_CONTENT_TYPE] {
            let mut headers = msg.headers.clone();
            headers.append(CONTENT_TYPE, HeaderValue::from_static(second));
            match cloudevent_from_http(&headers, msg.body.clone()) {
                Err(Error::Serialization(reason)) => {
                    assert!(reason.contains("Content-Type"), "{second}: {reason}");
                    assert!(reason.contains("more than one"), "{second}: {reason}");
                }
                other => panic!("{second}: expected a serialization error, got {other:?}"),
            }
        }
    }

    #[test]
    fn quoted_or_needlessly_encoded_typed_attribute_headers_are_read() {
        // §3.1.3.2: *any* header value is unquoted (RFC 7230) and then
        // percent-decoded once, and needless percent-encoding MUST be
        // accepted; not only the string attributes. The NATS binding reads
        // these already.
        let april_5 = chrono::DateTime::parse_from_rfc3339("2018-04-05T17:31:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        for (name, value) in [
            ("ce-specversion", "\"1.0\""),
            ("ce-specversion", "1%2E0"),
            ("ce-time", "\"2018-04-05T17:31:00Z\""),
            ("ce-time", "2018-04-05T19%3A31%3A00%2B02:00"),
            ("ce-dataschema", "\"https://x.example/s\""),
        ] {
            let mut headers = required_headers();
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            let ce = cloudevent_from_http(&headers, Vec::new())
                .unwrap_or_else(|e| panic!("{name}: {value:?}: {e}"));
            match name {
                "ce-time" => assert_eq!(ce.time(), Some(&april_5), "{value:?}"),
                "ce-dataschema" => assert_eq!(
                    ce.dataschema().map(url::Url::as_str),
                    Some("https://x.example/s")
                ),
                _ => assert_eq!(ce.specversion().as_str(), "1.0"),
            }
        }
        // Malformed encoding is refused naming the attribute, as elsewhere.
        let mut headers = required_headers();
        headers.insert("ce-time", HeaderValue::from_static("2018-04-05T17%3"));
        let err = cloudevent_from_http(&headers, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("`time`"), "{err}");
    }

    #[test]
    fn a_bad_time_or_dataschema_header_is_refused_naming_the_attribute() {
        // The SDK's own errors ("premature end of input", "relative URL
        // without a base") named no header; the NATS binding and structured
        // mode name the attribute.
        for (name, value, attribute) in [
            ("ce-time", "2018-04-05T17:31:00", "`time`"),
            ("ce-time", "yesterday", "`time`"),
            ("ce-time", "\"\"", "`time`"),
            ("ce-dataschema", "/relative/schema", "`dataschema`"),
            ("ce-dataschema", "not%20a%20url", "`dataschema`"),
        ] {
            let mut headers = required_headers();
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            match cloudevent_from_http(&headers, Vec::new()) {
                Err(Error::Serialization(reason)) => {
                    assert!(reason.contains(attribute), "{name}: {value}: {reason}");
                    let shown = value.trim_matches('"');
                    assert!(reason.contains(shown), "{name}: {value}: {reason}");
                }
                other => panic!("{name}: {value}: expected a serialization error, got {other:?}"),
            }
        }
        // In 0.3 `dataschema` is no attribute but an extension, of any text.
        let mut headers = required_headers();
        headers.insert("ce-specversion", HeaderValue::from_static("0.3"));
        headers.insert("ce-dataschema", HeaderValue::from_static("/relative"));
        let ce = cloudevent_from_http(&headers, Vec::new()).unwrap();
        assert_eq!(
            ce.extension("dataschema")
                .map(ToString::to_string)
                .as_deref(),
            Some("/relative")
        );
    }

    #[test]
    fn empty_required_attributes_are_refused_in_both_modes() {
        // CloudEvents: id, source and type are non-empty, subject too when
        // present. The SDK accepts them empty, so HttpCloudEvent handed such
        // an event to its handler (and a relay passed it on) where HttpEvent
        // answered 400.
        let structured = structured_headers();
        for attribute in ["id", "source", "type", "subject"] {
            let mut doc = json!({
                "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            });
            doc[attribute] = json!("");
            let mut headers = required_headers();
            headers.insert(
                HeaderName::from_bytes(format!("ce-{attribute}").as_bytes()).unwrap(),
                HeaderValue::from_static("\"\""),
            );
            for (mode, result) in [
                (
                    "structured",
                    cloudevent_from_http(&structured, serde_json::to_vec(&doc).unwrap()),
                ),
                ("binary", cloudevent_from_http(&headers, Vec::new())),
            ] {
                match result {
                    Err(Error::Serialization(reason)) => {
                        assert!(
                            reason.contains(&format!("`{attribute}`")),
                            "{attribute} {mode}: {reason}"
                        );
                        assert!(reason.contains("empty"), "{attribute} {mode}: {reason}");
                    }
                    other => panic!("{attribute} {mode}: expected an error, got {other:?}"),
                }
            }
        }
    }

    /// A media type's type and subtype are case-insensitive (RFC 9110
    /// §8.3.1): `Application/JSON` in one header and `application/json` in
    /// the other say the same, and were refused as a contradiction.
    #[test]
    fn a_ce_datacontenttype_differing_from_content_type_in_case_alone_is_no_contradiction() {
        let mut headers = required_headers();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        headers.insert(
            "ce-datacontenttype",
            HeaderValue::from_static("application/json;%20charset=utf-8"),
        );
        let ce = cloudevent_from_http(&headers, b"{}".to_vec()).unwrap();
        assert_eq!(
            ce.datacontenttype(),
            Some("Application/JSON; charset=utf-8")
        );
        // a parameter that differs is still a contradiction
        headers.insert(
            "ce-datacontenttype",
            HeaderValue::from_static("application/json;%20charset=latin1"),
        );
        assert!(matches!(
            cloudevent_from_http(&headers, b"{}".to_vec()),
            Err(Error::Serialization(_))
        ));
    }

    #[test]
    fn a_ce_datacontenttype_header_that_contradicts_content_type_is_refused() {
        // HTTP binding §3.1.1: in binary mode `Content-Type` is the
        // datacontenttype and a `ce-datacontenttype` header MUST NOT also be
        // present. One that says something else must not be dropped
        // silently (the SDK keeps `Content-Type` and forgets it).
        let mut headers = required_headers();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("ce-datacontenttype", HeaderValue::from_static("text/plain"));
        match cloudevent_from_http(&headers, b"{}".to_vec()) {
            Err(Error::Serialization(reason)) => {
                assert!(reason.contains("ce-datacontenttype"), "{reason}");
                assert!(reason.contains("Content-Type"), "{reason}");
            }
            other => panic!("expected a serialization error, got {other:?}"),
        }
        // The same value twice says nothing contradictory: accepted, as is
        // `ce-datacontenttype` alone from a sender that forgot Content-Type.
        headers.insert(
            "ce-datacontenttype",
            HeaderValue::from_static("application/json"),
        );
        let ce = cloudevent_from_http(&headers, b"{}".to_vec()).unwrap();
        assert_eq!(ce.datacontenttype(), Some("application/json"));
        headers.remove(CONTENT_TYPE);
        let ce = cloudevent_from_http(&headers, b"{}".to_vec()).unwrap();
        assert_eq!(ce.datacontenttype(), Some("application/json"));

        // A `ce-` header value is percent-encoded (§3.1.3.2): compared, and
        // read, decoded.
        headers.insert(
            "ce-datacontenttype",
            HeaderValue::from_static("application/json;%20charset=utf-8"),
        );
        let ce = cloudevent_from_http(&headers, b"{}".to_vec()).unwrap();
        assert_eq!(
            ce.datacontenttype(),
            Some("application/json; charset=utf-8")
        );
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let ce = cloudevent_from_http(&headers, b"{}".to_vec()).unwrap();
        assert_eq!(
            ce.datacontenttype(),
            Some("application/json; charset=utf-8")
        );
    }

    #[test]
    fn batched_and_non_json_structured_messages_are_refused_naming_the_mode() {
        // HTTP binding §3.3: a batch is a CloudEvents message too; it must
        // not be answered as "not a CloudEvent".
        for (ct, needles) in [
            (
                "application/cloudevents-batch+json; charset=utf-8",
                &["batch", "from_structured_batch"][..],
            ),
            (
                "application/cloudevents+xml",
                &["application/cloudevents+json"][..],
            ),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            match cloudevent_from_http(&headers, b"[]".to_vec()) {
                Err(Error::Serialization(reason)) => {
                    assert!(!reason.contains("not a CloudEvent"), "{ct}: {reason}");
                    for needle in needles {
                        assert!(reason.contains(needle), "{ct}: {reason}");
                    }
                }
                other => panic!("{ct}: expected a serialization error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_header_value_that_is_not_visible_ascii_is_named() {
        let event = Event::new("events.a.b", "a", "s", "src", serde_json::json!({}));
        let msg = to_http(&event, Mode::Binary).unwrap();
        let mut headers = msg.headers.clone();
        headers.insert("ce-id", HeaderValue::from_bytes(b"\xff\xfe\x80").unwrap());
        match from_http(&headers, msg.body.clone()) {
            Err(Error::Serialization(reason)) => {
                assert!(reason.contains("\"ce-id\""), "{reason}");
                assert!(reason.contains("percent-encoded"), "{reason}");
            }
            other => panic!("expected a serialization error, got {other:?}"),
        }
    }

    #[test]
    fn a_data_header_is_refused_as_in_nats() {
        // Read as an extension, it would become the data of the event
        // relayed in structured mode.
        let mut headers = required_headers();
        headers.insert("ce-data", HeaderValue::from_static("hello"));
        match cloudevent_from_http(&headers, Vec::new()) {
            Err(Error::Serialization(reason)) => {
                assert!(reason.contains("ce-data"), "{reason}");
                assert!(reason.contains("reserved"), "{reason}");
            }
            other => panic!("expected a serialization error, got {other:?}"),
        }
    }

    #[test]
    fn a_header_naming_no_attribute_is_refused_as_in_nats() {
        let mut headers = required_headers();
        headers.insert("ce-a_b", HeaderValue::from_static("x"));
        match cloudevent_from_http(&headers, Vec::new()) {
            Err(Error::Serialization(reason)) => assert!(reason.contains("ce-a_b"), "{reason}"),
            other => panic!("expected a serialization error, got {other:?}"),
        }
    }

    /// An event with `attributes` attributes, extensions included.
    fn event_with_attributes(attributes: usize) -> Event {
        let mut event = Event::new("events.a.b", "a", "s", "src", json!({}));
        let base = crate::CloudEvent::from(&event).iter().count();
        for i in 0..attributes - base {
            event.metadata.insert(format!("k{i}"), "v".into());
        }
        assert_eq!(crate::CloudEvent::from(&event).iter().count(), attributes);
        event
    }

    #[test]
    fn an_event_with_more_attributes_than_binary_mode_carries_is_refused_not_a_panic() {
        // One header per attribute: past what `HeaderMap` holds (24,576
        // names), binary mode panicked in the `http` crate.
        for attributes in [MAX_BINARY_ATTRIBUTES + 1, 40_000] {
            let event = event_with_attributes(attributes);
            match to_http(&event, Mode::Binary) {
                Err(Error::Serialization(reason)) => {
                    assert!(reason.contains("too many attributes"), "{reason}");
                    assert!(reason.contains("binary mode"), "{reason}");
                    assert!(reason.contains("structured mode"), "{reason}");
                }
                other => panic!(
                    "{attributes}: expected a serialization error, got {:?}",
                    other.map(|msg| msg.headers.len())
                ),
            }
            // structured mode carries it
            let msg = to_http(&event, Mode::Structured).unwrap();
            assert_eq!(from_http(&msg.headers, msg.body).unwrap(), event);
        }
        // up to the limit, binary mode carries it
        let event = event_with_attributes(MAX_BINARY_ATTRIBUTES);
        let msg = to_http(&event, Mode::Binary).unwrap();
        assert_eq!(msg.headers.len(), MAX_BINARY_ATTRIBUTES);
        assert_eq!(from_http(&msg.headers, msg.body).unwrap(), event);
    }

    #[test]
    fn the_message_builder_refuses_a_header_past_what_a_header_map_holds() {
        // Whatever reaches it, the builder fails instead of panicking.
        let mut builder = MessageBuilder::default();
        for i in 0..30_000 {
            builder.header(&format!("ce-k{i}"), HeaderValue::from_static("v"));
        }
        match builder.finish() {
            Err(err) => assert!(err.to_string().contains("too many headers"), "{err}"),
            Ok(msg) => panic!("{} headers built", msg.headers.len()),
        }
    }

    /// Content types no `datacontenttype` can be: not a media type (RFC
    /// 2046 is ASCII), and no header value a binary-mode relay could write.
    const NOT_MEDIA_TYPES: [&str; 6] = [
        "text/pl\u{e9}",
        "text/plain\r\nx: 1",
        "application/json\u{7f}",
        "text/plain\u{0}",
        "text/plain\n",
        "text/plain\u{85}",
    ];

    #[test]
    fn a_datacontenttype_that_is_no_media_type_is_refused_when_read_naming_it() {
        // Structured mode accepted it, and relaying the event in binary mode
        // then wrote a Content-Type its own reader refuses (non-ASCII), or
        // failed with "failed to parse header value" (CR/LF, DEL).
        let structured = {
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/cloudevents+json"),
            );
            headers
        };
        for ct in NOT_MEDIA_TYPES {
            let doc = json!({
                "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
                "datacontenttype": ct, "data": "x"
            });
            match cloudevent_from_http(&structured, serde_json::to_vec(&doc).unwrap()) {
                Err(Error::Serialization(reason)) => {
                    assert!(reason.contains("datacontenttype"), "{ct:?}: {reason}")
                }
                other => panic!("{ct:?}: expected a serialization error, got {other:?}"),
            }
            // sent percent-encoded in a `ce-datacontenttype` header
            let mut headers = required_headers();
            let encoded = crate::percent::encode(ct).unwrap_or_else(|| ct.to_string());
            headers.insert(
                DATACONTENTTYPE_HEADER,
                HeaderValue::from_str(&encoded).unwrap(),
            );
            match cloudevent_from_http(&headers, b"x".to_vec()) {
                Err(Error::Serialization(reason)) => {
                    assert!(reason.contains("datacontenttype"), "{ct:?}: {reason}")
                }
                other => panic!("{ct:?}: expected a serialization error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_datacontenttype_that_is_no_media_type_is_refused_when_written_naming_it() {
        for ct in NOT_MEDIA_TYPES {
            let mut ce = crate::CloudEvent::from(odd_event());
            ce.set_datacontenttype(Some(ct));
            for mode in [Mode::Binary, Mode::Structured] {
                match cloudevent_to_http(ce.clone(), mode) {
                    Err(Error::Serialization(reason)) => {
                        assert!(reason.contains("datacontenttype"), "{ct:?}: {reason}")
                    }
                    other => {
                        panic!("{ct:?} {mode:?}: expected a serialization error, got {other:?}")
                    }
                }
            }
        }
        // What binary mode writes, its reader reads: tabs and inner spaces.
        for ct in ["text/plain; charset=utf-8", "text/plain;\tcharset=utf-8"] {
            let mut ce = crate::CloudEvent::from(odd_event());
            ce.set_datacontenttype(Some(ct));
            let msg = cloudevent_to_http(ce, Mode::Binary).unwrap();
            let back = cloudevent_from_http(&msg.headers, msg.body).unwrap();
            assert_eq!(back.datacontenttype(), Some(ct));
        }
    }
}
