//! The NATS protocol binding (feature `nats`): CloudEvents as core NATS
//! messages ([`async_nats::HeaderMap`] + payload), and publishing/receiving
//! them with an [`async_nats::Client`].
//!
//! It follows the [NATS Protocol Binding for CloudEvents][binding]
//! (version 1.0.3-wip, the first with binary mode; 1.0.2 defines structured
//! mode only), in either content mode:
//!
//! - [`Mode::Binary`] (the default; needs NATS 2.2 or later, which introduced
//!   headers): every attribute, extensions included, in its own header named
//!   `ce-<attribute>` (§3.1.3.1) — `datacontenttype` too, as
//!   `ce-datacontenttype`: unlike HTTP, the binding maps it like any other
//!   attribute. The event data is the message payload (§3.1.1): the A3S
//!   payload as JSON, or the bytes of text and binary data (see
//!   [Non-JSON data](crate::mapping#non-json-data)); an event without data
//!   has an empty payload, and an empty payload is no data. Every
//!   header value is the attribute's canonical string, percent-encoded as
//!   §3.1.3.2 requires (space, `"`, `%`, controls and everything outside
//!   printable ASCII, as UTF-8 bytes with upper-case hex), so any string —
//!   newlines, leading spaces, unicode — survives a NATS header, which
//!   cannot carry CR/LF and loses surrounding whitespace.
//! - [`Mode::Structured`]: the whole event as one document in the
//!   [JSON event format][json] (§3.2), the same bytes as
//!   [`to_structured`](crate::to_structured), with a
//!   `Content-Type: application/cloudevents+json` header so that receivers
//!   can tell the mode (§3).
//!
//! Receiving tells the modes apart as §3 specifies: a `Content-Type` header
//! (name and value matched case-insensitively, parameters ignored) of
//! `application/cloudevents` or `application/cloudevents+json` means
//! structured mode. Otherwise a `ce-specversion` header means binary mode.
//! A message with neither is read as structured mode, as the binding requires
//! for servers before 2.2 (which carry no headers) and as other SDKs send it
//! (the Go SDK's NATS protocols publish structured events without headers);
//! a binary-mode message needs `ce-specversion` anyway. Batches
//! (`application/cloudevents-batch+json`, not defined for NATS) and event
//! formats other than JSON are rejected.
//!
//! Binary-mode headers are read as §3.1.3.2 says: header names are
//! case-insensitive; each value is first unquoted (RFC 7230 quoted strings,
//! for older senders) and then percent-decoded once, rejecting a `%` that
//! does not start a `%XX` triplet and sequences that are not UTF-8
//! (overlong forms included), exactly as the HTTP binding does. For
//! compatibility with the Go SDK, whose JetStream protocol reads the
//! datacontenttype from a `content-type` header, that header is used when
//! `ce-datacontenttype` is absent. A `ce-` header that does not name a
//! valid attribute (lowercase letters and digits) or names the reserved
//! `data` (`ce-data`, which a structured-mode relay would otherwise write as
//! the event's data), a repeated attribute header and a missing required
//! attribute are errors.
//!
//! Every failure is an [`Error`] (mostly [`Error::Serialization`]), never a
//! panic. The A3S ⇄ CloudEvents mapping is the crate's ([`crate::mapping`]):
//! every [`Event`] survives both modes unchanged.
//!
//! ```
//! use event_cloudevents::nats::{Mode, from_nats, to_nats};
//! use event_core::Event;
//!
//! let event = Event::new("events.a.b", "a", "naïve café", "svc", serde_json::json!({"k": 1}));
//! let msg = to_nats(&event, Mode::Binary)?;
//! assert_eq!(msg.headers.get("ce-specversion").map(|v| v.as_str()), Some("1.0"));
//! assert_eq!(msg.headers.get("ce-a3ssummary").map(|v| v.as_str()), Some("na%C3%AFve%20caf%C3%A9"));
//! assert_eq!(&msg.payload[..], br#"{"k":1}"#);
//! assert_eq!(from_nats(Some(&msg.headers), &msg.payload)?, event);
//! # Ok::<(), event_core::Error>(())
//! ```
//!
//! Over a connection (core NATS publish/subscribe):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use event_cloudevents::nats::{Mode, from_message, publish};
//! use event_core::Event;
//! use futures_util::StreamExt;
//!
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let mut subscriber = client.subscribe("events.market.>").await?;
//!
//! let event = Event::new("events.market.forex", "market", "rate", "reuters", serde_json::json!({"rate": 7.35}));
//! publish(&client, "events.market.forex", &event, Mode::Binary).await?;
//!
//! if let Some(message) = subscriber.next().await {
//!     assert_eq!(from_message(&message)?, event);
//! }
//! # Ok(()) }
//! ```
//!
//! [binding]: https://github.com/cloudevents/spec/blob/main/cloudevents/bindings/nats-protocol-binding.md
//! [json]: https://github.com/cloudevents/spec/blob/main/cloudevents/formats/json-format.md

use crate::CloudEvent;
use crate::mapping::is_valid_attribute_name;
use crate::percent;
use crate::structured::{
    BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE, cloudevent_from_structured,
    cloudevent_to_structured, media_type,
};
use async_nats::client::PublishErrorKind;
use async_nats::{Client, HeaderMap, HeaderName, HeaderValue, Message, ToSubject};
use bytes::Bytes;
use chrono::SecondsFormat;
use cloudevents::event::SpecVersion;
use cloudevents::message::{BinaryDeserializer, BinarySerializer, MessageAttributeValue};
use event_core::{Error, Event, Result};
use std::collections::HashSet;
use std::str::FromStr;

/// Prefix of the header of every attribute in binary mode (§3.1.3.1).
pub const HEADER_PREFIX: &str = "ce-";
/// The header whose presence marks a binary-mode message.
pub const SPEC_VERSION_HEADER: &str = "ce-specversion";
/// The header announcing a structured-mode message (matched
/// case-insensitively when receiving).
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";
/// The media type the binding names for structured mode; with `+json` (what
/// this crate sends) it names the JSON event format.
const CLOUDEVENTS_MEDIA_TYPE: &str = "application/cloudevents";

/// How an event is laid out in a NATS message (the crate-wide mode; binary
/// mode needs NATS 2.2+ headers).
pub use crate::Mode;

/// The headers and payload of a NATS message carrying one CloudEvent; publish
/// it with [`Client::publish_with_headers`] (or use [`publish`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsMessage {
    /// `ce-*` headers (binary mode) or `Content-Type` (structured mode).
    pub headers: HeaderMap,
    /// The payload: the data (binary mode) or the event document
    /// (structured mode).
    pub payload: Bytes,
}

/// The event as a NATS message in `mode`.
pub fn to_nats(event: &Event, mode: Mode) -> Result<NatsMessage> {
    cloudevent_to_nats(CloudEvent::from(event), mode)
}

/// A CloudEvent as a NATS message in `mode`. Fails with
/// [`Error::Serialization`] when an extension name is not a valid
/// CloudEvents attribute name or is reserved (an attribute of the event's
/// spec version, whose header it would replace, or `data`), when
/// `datacontenttype` is no media type (RFC 2046: printable ASCII, which the
/// reader requires), or when the event cannot be serialised.
pub fn cloudevent_to_nats(event: CloudEvent, mode: Mode) -> Result<NatsMessage> {
    crate::mapping::check_writable(&event)?;
    match mode {
        Mode::Binary => {
            BinaryDeserializer::deserialize_binary(event.into_inner(), HeaderWriter::default())
                .map_err(|e| {
                    Error::Serialization(format!("cannot encode CloudEvent for NATS: {e}"))
                })
        }
        Mode::Structured => {
            let payload = cloudevent_to_structured(&event)?;
            let mut headers = HeaderMap::new();
            headers.insert(
                header_name(CONTENT_TYPE_HEADER)?,
                header_value(STRUCTURED_CONTENT_TYPE)?,
            );
            Ok(NatsMessage {
                headers,
                payload: Bytes::from(payload),
            })
        }
    }
}

/// Parses a CloudEvent from a NATS message (either mode; `headers` is
/// `None` for a message without headers) and converts it to an event. A
/// message that is not a valid CloudEvent, or one that cannot become an A3S
/// event, is [`Error::Serialization`].
pub fn from_nats(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<Event> {
    Event::try_from(cloudevent_from_nats(headers, payload)?)
}

/// Parses a CloudEvent from a NATS message (either mode). In binary mode the
/// data is the payload's bytes ([`cloudevents::Data::Binary`]); an empty
/// payload is no data. An empty `id`, `source` or `type`, or an empty
/// `subject` (which the spec forbids, and the SDK accepts) is
/// [`Error::Serialization`], as in the HTTP binding.
pub fn cloudevent_from_nats(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<CloudEvent> {
    let event = read_cloudevent(headers, payload)?;
    crate::mapping::check_required(&event)
        .map_err(|reason| Error::Serialization(format!("NATS message: {reason}")))?;
    Ok(event)
}

/// [`cloudevent_from_nats`] before the check of the required attributes.
fn read_cloudevent(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<CloudEvent> {
    let headers = headers.filter(|h| !h.is_empty());
    if let Some(headers) = headers {
        if let Some(content_type) = structured_content_type(headers) {
            let essence = media_type(content_type).to_ascii_lowercase();
            if essence == CLOUDEVENTS_MEDIA_TYPE || essence == STRUCTURED_CONTENT_TYPE {
                return cloudevent_from_structured(payload);
            }
            if essence == BATCH_CONTENT_TYPE {
                return Err(Error::Serialization(format!(
                    "NATS message has Content-Type {BATCH_CONTENT_TYPE}: the NATS binding \
                     defines no batch content mode"
                )));
            }
            return Err(Error::Serialization(format!(
                "NATS message has Content-Type {content_type:?}: only the JSON event format \
                 ({STRUCTURED_CONTENT_TYPE}) is supported"
            )));
        }
        if has_header(headers, SPEC_VERSION_HEADER) {
            return read_binary(headers, payload);
        }
    }
    cloudevent_from_structured(payload).map_err(|e| {
        let reason = match e {
            Error::Serialization(reason) => reason,
            other => other.to_string(),
        };
        Error::Serialization(format!(
            "NATS message is not a CloudEvent: no `{SPEC_VERSION_HEADER}` header (binary mode) \
             and the payload is no structured CloudEvent ({reason})"
        ))
    })
}

/// The event in a received message (see [`from_nats`]).
pub fn from_message(message: &Message) -> Result<Event> {
    from_nats(message.headers.as_ref(), &message.payload)
}

/// The CloudEvent in a received message (see [`cloudevent_from_nats`]).
pub fn cloudevent_from_message(message: &Message) -> Result<CloudEvent> {
    cloudevent_from_nats(message.headers.as_ref(), &message.payload)
}

/// The content mode of a message with these headers, by the binding's rule
/// (see the [module docs](self)): [`Mode::Binary`] when there is a
/// `ce-specversion` header and no `Content-Type: application/cloudevents…`,
/// else [`Mode::Structured`]. It says nothing about whether the message is
/// a valid CloudEvent.
pub fn content_mode(headers: Option<&HeaderMap>) -> Mode {
    match headers {
        Some(h) if structured_content_type(h).is_none() && has_header(h, SPEC_VERSION_HEADER) => {
            Mode::Binary
        }
        _ => Mode::Structured,
    }
}

/// Whether the message announces a CloudEvent: a
/// `Content-Type: application/cloudevents…` or `ce-specversion` header, or,
/// without either, a payload that is a JSON object with a string
/// `specversion` member (a structured event sent without headers).
pub fn is_cloudevent(headers: Option<&HeaderMap>, payload: &[u8]) -> bool {
    if let Some(h) = headers
        && (structured_content_type(h).is_some() || has_header(h, SPEC_VERSION_HEADER))
    {
        return true;
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[allow(dead_code)]
        specversion: String,
    }
    serde_json::from_slice::<Probe>(payload).is_ok()
}

/// Publishes the event to `subject` in `mode` (core NATS: fire and forget;
/// [`Client::flush`] waits until the server has it).
///
/// Errors: [`Error::Serialization`] (see [`cloudevent_to_nats`]),
/// [`Error::InvalidSubject`] (empty, an empty token, a wildcard token `*` or
/// `>`, whitespace), [`Error::PayloadTooLarge`] (headers and
/// payload over the server's `max_payload`), [`Error::Unsupported`] for
/// binary mode on a server without headers (before NATS 2.2; structured
/// mode is then sent without the `Content-Type` header),
/// [`Error::Connection`] when the client is closed.
pub async fn publish<S: ToSubject>(
    client: &Client,
    subject: S,
    event: &Event,
    mode: Mode,
) -> Result<()> {
    publish_cloudevent(client, subject, CloudEvent::from(event), mode).await
}

/// Publishes a CloudEvent to `subject` in `mode` (see [`publish`]).
pub async fn publish_cloudevent<S: ToSubject>(
    client: &Client,
    subject: S,
    event: CloudEvent,
    mode: Mode,
) -> Result<()> {
    let subject = subject.to_subject();
    check_publish_subject(subject.as_str())?;
    let NatsMessage { headers, payload } = cloudevent_to_nats(event, mode)?;
    // Before the first INFO the client cannot know: assume a modern server.
    let server_has_headers = client.try_server_info().is_none_or(|info| info.headers);
    let size = payload.len()
        + if server_has_headers {
            wire_len(&headers)
        } else {
            0
        };
    let sent = if server_has_headers {
        client
            .publish_with_headers(subject.clone(), headers, payload)
            .await
    } else if mode == Mode::Structured {
        client.publish(subject.clone(), payload).await
    } else {
        return Err(Error::unsupported(
            "NATS server",
            "message headers (CloudEvents binary mode needs NATS 2.2 or later; \
             use structured mode)",
        ));
    };
    sent.map_err(|e| match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => Error::PayloadTooLarge {
            size,
            max: client.max_payload(),
        },
        PublishErrorKind::InvalidSubject => {
            Error::invalid_subject(subject.as_str(), format!("not a valid NATS subject: {e}"))
        }
        _ => Error::Connection(format!("cannot publish CloudEvent to {subject}: {e}")),
    })
}

/// Refuses, before any I/O, a subject NATS takes for publishing but does not
/// deliver as one: an empty token (`a..b`, `.a`, `a.`), which the server
/// drops without telling the publisher, or a wildcard token (`*`, `>`),
/// which would reach subscribers as a pattern. Whitespace is left to the
/// client, which refuses it.
fn check_publish_subject(subject: &str) -> Result<()> {
    for token in subject.split('.') {
        let rule = match token {
            "" if subject.is_empty() => "subject is empty",
            "" => "subject has an empty token (the server would drop the message)",
            "*" | ">" => "subject must not contain wildcard tokens (`*`, `>`)",
            _ => continue,
        };
        return Err(Error::invalid_subject(subject, rule));
    }
    Ok(())
}

/// Bytes the headers take on the wire (`NATS/1.0` line, `name: value` lines,
/// blank line), as counted against `max_payload`.
fn wire_len(headers: &HeaderMap) -> usize {
    if headers.is_empty() {
        return 0;
    }
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(|v| name.len() + 2 + v.as_str().len() + 2)
                .sum::<usize>()
        })
        .sum();
    "NATS/1.0\r\n".len() + lines + 2
}

fn header_name(name: &str) -> Result<HeaderName> {
    HeaderName::from_str(name)
        .map_err(|_| Error::Serialization(format!("{name:?} is not a valid NATS header name")))
}

fn header_value(value: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value)
        .map_err(|_| Error::Serialization(format!("{value:?} is not a valid NATS header value")))
}

/// All values of the header `name`, matched case-insensitively.
fn header_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| AsRef::<str>::as_ref(*n).eq_ignore_ascii_case(name))
        .flat_map(|(_, values)| values.iter().map(HeaderValue::as_str))
}

fn has_header(headers: &HeaderMap, name: &str) -> bool {
    header_values(headers, name).next().is_some()
}

/// The first `Content-Type` value naming a CloudEvents media type
/// (`application/cloudevents`, `application/cloudevents+<format>`,
/// `application/cloudevents-batch+<format>`, any case).
fn structured_content_type(headers: &HeaderMap) -> Option<&str> {
    header_values(headers, CONTENT_TYPE_HEADER).find(|value| {
        let essence = media_type(value).to_ascii_lowercase();
        essence
            .strip_prefix(CLOUDEVENTS_MEDIA_TYPE)
            .is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('+') || rest.starts_with("-batch+")
            })
    })
}

/// Reads a binary-mode message: decoded `ce-*` headers, then the SDK's
/// binary deserialiser builds (and validates) the event.
fn read_binary(headers: &HeaderMap, payload: &[u8]) -> Result<CloudEvent> {
    let mut spec_version: Option<String> = None;
    let mut attributes: Vec<(String, String)> = Vec::new();
    // Names seen so far: a message may carry tens of thousands of headers
    // (up to the server's max_payload), so no scan of `attributes` per header.
    let mut seen: HashSet<String> = HashSet::new();
    let mut content_type: Option<String> = None;
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        let lower = name.to_ascii_lowercase();
        if let Some(attribute) = lower.strip_prefix(HEADER_PREFIX) {
            if !is_valid_attribute_name(attribute) {
                return Err(Error::Serialization(format!(
                    "NATS header {name:?} does not name a CloudEvents attribute \
                     (lowercase letters and digits after `{HEADER_PREFIX}`)"
                )));
            }
            if crate::mapping::is_reserved_data_name(attribute) {
                return Err(Error::Serialization(format!(
                    "NATS header {name:?} names `{attribute}`, which is reserved: the data \
                     is the payload, not an attribute"
                )));
            }
            let raw = single_value(name, values)?;
            let unquoted = percent::unquote(attribute, raw)?;
            let value = match percent::decode(attribute, &unquoted)? {
                Some(decoded) => decoded,
                None => unquoted.into_owned(),
            };
            let duplicate = if attribute == "specversion" {
                spec_version.replace(value).is_some()
            } else if !seen.insert(attribute.to_string()) {
                true
            } else {
                attributes.push((attribute.to_string(), value));
                false
            };
            if duplicate {
                return Err(Error::Serialization(format!(
                    "CloudEvent attribute `{attribute}` appears in more than one NATS header"
                )));
            }
        } else if lower == "content-type" {
            if content_type.is_some() {
                return Err(Error::Serialization(
                    "NATS message has more than one Content-Type header".to_string(),
                ));
            }
            content_type = Some(single_value(name, values)?.to_string());
        }
    }
    if let Some(ct) = content_type
        && !seen.contains("datacontenttype")
    {
        attributes.push(("datacontenttype".to_string(), ct));
    }
    let spec_version = spec_version.ok_or_else(|| {
        Error::Serialization(format!(
            "binary-mode NATS message has no `{SPEC_VERSION_HEADER}` header"
        ))
    })?;
    let message = BinaryMessage {
        spec_version,
        attributes,
        data: payload.to_vec(),
    };
    let event = BinaryDeserializer::into_event(message)
        .map_err(|e| Error::Serialization(format!("invalid CloudEvent in NATS message: {e}")))?;
    crate::mapping::check_datacontenttype(&event)
        .map_err(|reason| Error::Serialization(format!("NATS message: {reason}")))?;
    Ok(CloudEvent::new(event))
}

fn single_value<'a>(name: &str, values: &'a [HeaderValue]) -> Result<&'a str> {
    match values {
        [value] => Ok(value.as_str()),
        _ => Err(Error::Serialization(format!(
            "NATS header {name:?} has {} values; a CloudEvents header has one",
            values.len()
        ))),
    }
}

/// A decoded binary-mode message, fed to the SDK's event builder.
struct BinaryMessage {
    spec_version: String,
    attributes: Vec<(String, String)>,
    data: Vec<u8>,
}

impl BinaryDeserializer for BinaryMessage {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(
        self,
        mut visitor: V,
    ) -> cloudevents::message::Result<R> {
        let spec_version = SpecVersion::try_from(self.spec_version.as_str())?;
        let names = spec_version.attribute_names();
        visitor = visitor.set_spec_version(spec_version)?;
        for (name, value) in self.attributes {
            let value = MessageAttributeValue::String(value);
            visitor = if names.contains(&name.as_str()) {
                visitor.set_attribute(&name, value)?
            } else {
                visitor.set_extension(&name, value)?
            };
        }
        if self.data.is_empty() {
            visitor.end()
        } else {
            visitor.end_with_data(self.data)
        }
    }
}

/// Collects the headers the SDK's binary serialisation writes.
#[derive(Default)]
struct HeaderWriter {
    headers: HeaderMap,
}

impl HeaderWriter {
    fn put(
        mut self,
        name: &str,
        value: &MessageAttributeValue,
    ) -> cloudevents::message::Result<Self> {
        let other = |reason: String| cloudevents::message::Error::Other {
            source: reason.into(),
        };
        if !is_valid_attribute_name(name) {
            return Err(other(format!(
                "{name:?} is not a valid CloudEvents attribute name (lowercase letters and digits)"
            )));
        }
        let text = match value {
            // RFC 3339 in UTC with `Z`, as in the binding's examples.
            MessageAttributeValue::DateTime(time) => {
                time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            }
            other => other.to_string(),
        };
        let text = percent::encode(&text).unwrap_or(text);
        let header = format!("{HEADER_PREFIX}{name}");
        let name = HeaderName::from_str(&header)
            .map_err(|_| other(format!("{header:?} is not a valid NATS header name")))?;
        // Percent-encoding leaves printable ASCII only, so this cannot fail.
        let value = HeaderValue::from_str(&text)
            .map_err(|_| other(format!("{text:?} is not a valid NATS header value")))?;
        self.headers.insert(name, value);
        Ok(self)
    }
}

impl BinarySerializer<NatsMessage> for HeaderWriter {
    fn set_spec_version(self, spec_version: SpecVersion) -> cloudevents::message::Result<Self> {
        self.put(
            "specversion",
            &MessageAttributeValue::String(spec_version.to_string()),
        )
    }

    fn set_attribute(
        self,
        name: &str,
        value: MessageAttributeValue,
    ) -> cloudevents::message::Result<Self> {
        self.put(name, &value)
    }

    fn set_extension(
        self,
        name: &str,
        value: MessageAttributeValue,
    ) -> cloudevents::message::Result<Self> {
        self.put(name, &value)
    }

    fn end_with_data(self, bytes: Vec<u8>) -> cloudevents::message::Result<NatsMessage> {
        Ok(NatsMessage {
            headers: self.headers,
            payload: Bytes::from(bytes),
        })
    }

    fn end(self) -> cloudevents::message::Result<NatsMessage> {
        Ok(NatsMessage {
            headers: self.headers,
            payload: Bytes::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        HEADER_UNSAFE_CONTENT_TYPES, MALFORMED_PERCENT, WELL_FORMED_PERCENT, odd_event,
    };
    use cloudevents::{AttributesReader, AttributesWriter, Data, EventBuilder, EventBuilderV10};
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_str(name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn get<'a>(msg: &'a NatsMessage, name: &str) -> Option<&'a str> {
        msg.headers.get(name).map(HeaderValue::as_str)
    }

    /// Asserts a serialization error mentioning every needle.
    fn rejected(headers: Option<&HeaderMap>, payload: &[u8], needles: &[&str]) {
        match from_nats(headers, payload) {
            Err(Error::Serialization(reason)) => {
                for needle in needles {
                    assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
                }
            }
            other => panic!("expected rejection mentioning {needles:?}, got {other:?}"),
        }
    }

    /// CloudEvents requires `id`, `source` and `type` non-empty, and
    /// `subject` when present; the SDK accepts them empty. The HTTP binding
    /// refuses such an event in either mode; so does this one (it handed it
    /// on, so the two bindings disagreed about the same event).
    #[test]
    fn empty_required_attributes_are_refused_in_both_modes() {
        for attribute in ["id", "source", "type", "subject"] {
            let mut doc = json!({
                "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            });
            doc[attribute] = json!("");
            let structured = serde_json::to_vec(&doc).unwrap();
            let mut pairs = vec![
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ];
            let name = format!("ce-{attribute}");
            pairs.retain(|(n, _)| *n != name);
            pairs.push((&name, ""));
            let binary = headers(&pairs);
            for (mode, result) in [
                ("structured", cloudevent_from_nats(None, &structured)),
                ("binary", cloudevent_from_nats(Some(&binary), b"")),
            ] {
                match result {
                    Err(Error::Serialization(reason)) => {
                        assert!(
                            reason.contains(&format!("`{attribute}`")) && reason.contains("empty"),
                            "{attribute} {mode}: {reason}"
                        );
                    }
                    other => panic!("{attribute} {mode}: expected an error, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn both_modes_round_trip() {
        let event = odd_event();
        for mode in [Mode::Binary, Mode::Structured] {
            let msg = to_nats(&event, mode).unwrap();
            assert_eq!(content_mode(Some(&msg.headers)), mode);
            assert!(is_cloudevent(Some(&msg.headers), &msg.payload));
            assert_eq!(
                from_nats(Some(&msg.headers), &msg.payload).unwrap(),
                event,
                "{mode:?}"
            );
        }
    }

    #[test]
    fn binary_mode_layout_follows_the_binding() {
        let event = odd_event().with_metadata("ce-datacontenttype", "application/vnd.a3s+json");
        let msg = to_nats(&event, Mode::Binary).unwrap();
        assert_eq!(get(&msg, "ce-specversion"), Some("1.0"));
        assert_eq!(get(&msg, "ce-id"), Some(event.id.as_str()));
        assert_eq!(get(&msg, "ce-type"), Some("forex.rate_change"));
        assert_eq!(get(&msg, "ce-source"), Some("/sources/%E8%B7%AF%E9%80%8F"));
        assert_eq!(get(&msg, "ce-subject"), Some("events.market.forex"));
        // datacontenttype is mapped like any attribute (§3.1.3.1), not to Content-Type
        assert_eq!(
            get(&msg, "ce-datacontenttype"),
            Some("application/vnd.a3s+json")
        );
        assert_eq!(get(&msg, "Content-Type"), None);
        assert_eq!(get(&msg, "ce-a3sversion"), Some("7"));
        assert_eq!(get(&msg, "ce-a3scategory"), Some("m%C3%A4rket"));
        assert_eq!(
            get(&msg, "ce-a3ssummary"),
            Some(
                "%20leading%20space%20and%20%22quotes%22%20100%25%20%E2%9C%93%0D%0Asecond%20line%20"
            )
        );
        assert_eq!(
            get(&msg, "ce-traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let time = get(&msg, "ce-time").unwrap();
        assert!(time.ends_with('Z'), "{time}");
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(time)
                .unwrap()
                .timestamp_millis() as u64,
            event.timestamp
        );
        for (name, values) in msg.headers.iter() {
            let name: &str = name.as_ref();
            assert!(name.starts_with("ce-"), "{name}");
            for value in values {
                assert!(
                    value
                        .as_str()
                        .bytes()
                        .all(|b| (0x21..0x7f).contains(&b) && b != b'"'),
                    "{name}: not encoded: {value:?}"
                );
            }
        }
        let data: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(data, event.payload);
    }

    #[test]
    fn structured_mode_layout() {
        let event = odd_event();
        let msg = to_nats(&event, Mode::Structured).unwrap();
        assert_eq!(msg.headers.len(), 1);
        assert_eq!(get(&msg, "Content-Type"), Some(STRUCTURED_CONTENT_TYPE));
        let doc: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        let expected: serde_json::Value =
            serde_json::from_slice(&crate::to_structured(&event).unwrap()).unwrap();
        assert_eq!(doc, expected);
        assert_eq!(doc["a3ssummary"], event.summary);
    }

    #[test]
    fn events_without_payload_have_an_empty_binary_payload() {
        let mut event = odd_event();
        event.payload = serde_json::Value::Null;
        let msg = to_nats(&event, Mode::Binary).unwrap();
        assert!(msg.payload.is_empty());
        assert_eq!(from_nats(Some(&msg.headers), &msg.payload).unwrap(), event);
    }

    #[test]
    fn content_types_that_cannot_be_header_values_survive_binary_mode() {
        for ct in HEADER_UNSAFE_CONTENT_TYPES {
            let event = odd_event().with_metadata("ce-datacontenttype", ct);
            for mode in [Mode::Binary, Mode::Structured] {
                let msg = to_nats(&event, mode).unwrap_or_else(|e| panic!("{ct:?} {mode:?}: {e}"));
                assert_eq!(
                    from_nats(Some(&msg.headers), &msg.payload).unwrap(),
                    event,
                    "{ct:?} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn foreign_cloudevents_with_any_string_survive_binary_mode() {
        // A CloudEvent from elsewhere: every string attribute with characters
        // a NATS header cannot carry verbatim.
        let nasty = " a\r\nb\t\"c\" 100% é 😀 ";
        let mut ce = EventBuilderV10::new()
            .id(nasty)
            .source(nasty)
            .ty(nasty)
            .subject(nasty)
            .extension("note", nasty)
            .extension("count", 3_i64)
            .extension("flag", true)
            // (a datacontenttype is a media type, printable ASCII: see
            // `a_datacontenttype_that_is_no_media_type_is_refused_naming_it`)
            .data("text/plain; charset=\"utf-8\"", nasty)
            .build()
            .unwrap();
        ce.set_dataschema(Some(
            url::Url::parse("https://x.example/a%20b?q=%2F").unwrap(),
        ));
        let msg = cloudevent_to_nats(CloudEvent::new(ce.clone()), Mode::Binary).unwrap();
        let back = cloudevent_from_nats(Some(&msg.headers), &msg.payload).unwrap();
        assert_eq!(back.id(), nasty);
        assert_eq!(back.source(), nasty);
        assert_eq!(back.ty(), nasty);
        assert_eq!(back.subject(), Some(nasty));
        assert_eq!(back.datacontenttype(), ce.datacontenttype());
        assert_eq!(back.dataschema(), ce.dataschema());
        assert_eq!(back.time(), ce.time());
        assert_eq!(back.extension("note"), ce.extension("note"));
        // headers carry strings: integer and boolean extensions come back in
        // their canonical string form
        assert_eq!(
            back.extension("count").map(|v| v.to_string()).as_deref(),
            Some("3")
        );
        assert_eq!(
            back.extension("flag").map(|v| v.to_string()).as_deref(),
            Some("true")
        );
        assert_eq!(back.data(), Some(&Data::Binary(nasty.as_bytes().to_vec())));
    }

    #[test]
    fn extension_names_that_are_no_attribute_names_are_errors_not_panics() {
        for name in ["Upper", "with space", "colon:", "a_b", "é", "line\nbreak"] {
            let mut ce = CloudEvent::from(odd_event());
            ce.set_extension(name, "v");
            match cloudevent_to_nats(ce.clone(), Mode::Binary) {
                Err(Error::Serialization(reason)) => {
                    assert!(reason.contains("attribute name"), "{reason}")
                }
                other => panic!("{name:?}: {other:?}"),
            }
            // nor does structured mode: no binding could read it back
            match cloudevent_to_nats(ce, Mode::Structured) {
                Err(Error::Serialization(reason)) => {
                    assert!(reason.contains("attribute name"), "{reason}")
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn extensions_named_like_attributes_or_data_are_refused_when_writing() {
        // The SDK's `set_extension` takes any name. In binary mode such an
        // extension's header would replace the attribute's (`ce-id: v`); in
        // structured mode it would be a second `id` member, or, for `data`,
        // the document's data.
        for name in [
            "data",
            "id",
            "source",
            "type",
            "specversion",
            "time",
            "subject",
            "datacontenttype",
            "dataschema",
        ] {
            let mut ce = CloudEvent::from(odd_event());
            ce.set_extension(name, "v");
            for mode in [Mode::Binary, Mode::Structured] {
                match cloudevent_to_nats(ce.clone(), mode) {
                    Err(Error::Serialization(reason)) => {
                        assert!(reason.contains(&format!("`{name}`")), "{reason}");
                        assert!(reason.contains("reserved"), "{reason}");
                    }
                    other => panic!("{name:?} {mode:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_data_header_is_refused_not_read_as_an_extension() {
        // `data` is no attribute (binary mode carries the data in the
        // payload); read as an extension it would become the data of the
        // event relayed in structured mode.
        for (name, payload) in [("ce-data", &b""[..]), ("CE-Data", b"{\"k\":1}")] {
            let h = headers(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "s"),
                ("ce-type", "t"),
                (name, "hello"),
            ]);
            rejected(Some(&h), payload, &[name, "reserved"]);
        }
    }

    #[test]
    fn a_message_with_as_many_headers_as_a_payload_holds_is_read() {
        // 60 000 `ce-` headers fit in NATS's default 1 MiB max_payload. Each
        // header used to be checked against every attribute read before it
        // (20 s for these in a debug build, 72 s for 80 000); now a set does it.
        let mut h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ]);
        for i in 0..60_000 {
            h.insert(format!("ce-x{i}").as_str(), "v");
        }
        let ce = cloudevent_from_nats(Some(&h), b"").unwrap();
        assert_eq!(ce.iter_extensions().count(), 60_000);
        assert_eq!(
            ce.extension("x59999").map(|v| v.to_string()).as_deref(),
            Some("v")
        );
        // repeats are still found among them, in any case
        h.insert("CE-X30000", "w");
        rejected(Some(&h), b"", &["x30000", "more than one"]);
    }

    #[test]
    fn foreign_header_values_edge_cases() {
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "s"),
                ("ce-type", "t"),
            ];
            pairs.retain(|(n, _)| !extra.iter().any(|(e, _)| e == n));
            pairs.extend_from_slice(extra);
            headers(&pairs)
        };
        // empty values of required attributes: typed errors naming them
        for attribute in ["id", "source", "type"] {
            let name = format!("ce-{attribute}");
            rejected(
                Some(&with(&[(name.as_str(), "")])),
                b"",
                &[attribute, "empty"],
            );
        }
        rejected(
            Some(&with(&[("ce-specversion", "")])),
            b"",
            &["specversion"],
        );
        rejected(Some(&with(&[("ce-time", "")])), b"", &["time"]);
        // RFC 3339 in its other spellings: offsets, lowercase, nanoseconds
        for (time, millis) in [
            ("2018-04-05T03:56:24Z", 1_522_900_584_000),
            ("2018-04-05t03:56:24z", 1_522_900_584_000),
            ("2018-04-05T05:56:24.123456789+02:00", 1_522_900_584_123),
            ("2018-04-05T03:56:24%2B00:00", 1_522_900_584_000),
        ] {
            let event = from_nats(Some(&with(&[("ce-time", time)])), b"").unwrap();
            assert_eq!(event.timestamp, millis, "{time}");
        }
        // a 0.3 event in binary mode: `schemaurl` is its `dataschema`
        let event = from_nats(
            Some(&with(&[
                ("ce-specversion", "0.3"),
                ("ce-schemaurl", "https://x.example/s"),
            ])),
            b"",
        )
        .unwrap();
        assert_eq!(
            event.metadata.get("ce-dataschema").map(String::as_str),
            Some("https://x.example/s")
        );
        // structured mode whose body is JSON but no object
        let structured = headers(&[("Content-Type", STRUCTURED_CONTENT_TYPE)]);
        for body in [&b"[1]"[..], b"\"x\"", b"null", b"1"] {
            rejected(Some(&structured), body, &["JSON object"]);
            rejected(None, body, &["not a CloudEvent"]);
        }
    }

    #[test]
    fn the_binding_example_is_read() {
        // §3.1.4 of the binding, with a JSON payload.
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-type", "com.example.someevent"),
            ("ce-time", "2018-04-05T03:56:24Z"),
            ("ce-id", "1234-1234-1234"),
            ("ce-source", "/mycontext/subcontext"),
            ("ce-datacontenttype", "application/json"),
        ]);
        assert_eq!(content_mode(Some(&h)), Mode::Binary);
        let event = from_nats(Some(&h), br#"{"k":[1,2]}"#).unwrap();
        assert_eq!(event.id, "1234-1234-1234");
        assert_eq!(event.event_type, "com.example.someevent");
        assert_eq!(event.source, "/mycontext/subcontext");
        assert_eq!(event.timestamp, 1_522_900_584_000);
        assert_eq!(event.payload, json!({"k": [1, 2]}));
        assert!(event.metadata.is_empty(), "{:?}", event.metadata);
    }

    #[test]
    fn go_sdk_style_messages_are_read() {
        // The Go SDK's JetStream protocol: lowercase names, values not
        // percent-encoded, datacontenttype possibly in `content-type`,
        // integer extensions as strings; its structured mode sets no header.
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "abc"),
            ("ce-source", "urn:go"),
            ("ce-type", "go.event"),
            ("ce-subject", "events.go.x"),
            ("ce-a3sversion", "4"),
            ("ce-traceparent", "00-01-02-01"),
            ("content-type", "application/vnd.go+json"),
        ]);
        let event = from_nats(Some(&h), br#"{"go":true}"#).unwrap();
        assert_eq!(
            event.metadata.get("ce-datacontenttype").map(String::as_str),
            Some("application/vnd.go+json")
        );
        assert_eq!(event.version, 4);
        assert_eq!(event.category, "go");
        assert_eq!(
            event.metadata.get("ce-traceparent").map(String::as_str),
            Some("00-01-02-01")
        );
        assert_eq!(event.payload, json!({"go": true}));

        let event = odd_event();
        let structured = crate::to_structured(&event).unwrap();
        assert_eq!(content_mode(None), Mode::Structured);
        assert!(is_cloudevent(None, &structured));
        assert_eq!(from_nats(None, &structured).unwrap(), event);
        assert_eq!(
            from_nats(Some(&HeaderMap::new()), &structured).unwrap(),
            event
        );
        // headers unrelated to CloudEvents do not make it binary
        let h = headers(&[("Nats-Msg-Id", "1"), ("x-app", "y")]);
        assert_eq!(content_mode(Some(&h)), Mode::Structured);
        assert_eq!(from_nats(Some(&h), &structured).unwrap(), event);
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let h = headers(&[
            ("CE-SpecVersion", "1.0"),
            ("Ce-Id", "i"),
            ("CE-SOURCE", "s"),
            ("ce-Type", "t"),
            ("CE-A3SSUMMARY", "x%20y"),
        ]);
        assert_eq!(content_mode(Some(&h)), Mode::Binary);
        let event = from_nats(Some(&h), b"").unwrap();
        assert_eq!((event.id.as_str(), event.source.as_str()), ("i", "s"));
        assert_eq!(event.summary, "x y");

        let event = odd_event();
        let msg = to_nats(&event, Mode::Structured).unwrap();
        for name in ["content-type", "CONTENT-TYPE"] {
            for value in [
                "application/cloudevents+json",
                "Application/CloudEvents+JSON; charset=utf-8",
                "application/cloudevents",
            ] {
                let h = headers(&[(name, value)]);
                assert_eq!(content_mode(Some(&h)), Mode::Structured);
                assert_eq!(
                    from_nats(Some(&h), &msg.payload).unwrap(),
                    event,
                    "{name}: {value}"
                );
            }
        }
    }

    #[test]
    fn structured_content_type_wins_over_spec_version_header() {
        let event = odd_event();
        let msg = to_nats(&event, Mode::Structured).unwrap();
        let mut h = msg.headers.clone();
        h.insert("ce-specversion", "1.0");
        assert_eq!(content_mode(Some(&h)), Mode::Structured);
        assert_eq!(from_nats(Some(&h), &msg.payload).unwrap(), event);
    }

    #[test]
    fn quoted_header_values_are_unescaped_before_decoding() {
        let h = headers(&[
            ("ce-specversion", "\"1.0\""),
            ("ce-id", "\"an id\""),
            ("ce-source", "\"a \\\"quoted\\\" source\""),
            ("ce-type", "\"t%20x\""),
        ]);
        let ce = cloudevent_from_nats(Some(&h), b"").unwrap();
        assert_eq!(ce.id(), "an id");
        assert_eq!(ce.source(), "a \"quoted\" source");
        assert_eq!(ce.ty(), "t x");
    }

    #[test]
    fn non_cloudevents_are_rejected() {
        assert!(!is_cloudevent(None, b"{\"k\":1}"));
        assert!(!is_cloudevent(None, b"not json"));
        assert!(!is_cloudevent(Some(&headers(&[("x", "y")])), b""));
        rejected(None, b"{\"k\":1}", &["not a CloudEvent", "ce-specversion"]);
        rejected(None, b"", &["not a CloudEvent"]);
        rejected(
            Some(&headers(&[("content-type", "application/json")])),
            b"{}",
            &["not a CloudEvent"],
        );
    }

    #[test]
    fn bad_binary_messages_are_typed_errors() {
        let base = [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "s"),
            ("ce-type", "t"),
        ];
        let with = |extra: &[(&str, &str)], drop: &str| {
            let mut pairs: Vec<(&str, &str)> =
                base.iter().copied().filter(|(n, _)| *n != drop).collect();
            pairs.extend_from_slice(extra);
            headers(&pairs)
        };
        assert!(from_nats(Some(&with(&[], "")), b"").is_ok());
        for missing in ["ce-id", "ce-source", "ce-type"] {
            let attribute = &missing[3..];
            rejected(Some(&with(&[], missing)), b"", &[attribute]);
        }
        rejected(
            Some(&with(&[("ce-specversion", "2.0")], "ce-specversion")),
            b"",
            &["2.0"],
        );
        rejected(Some(&with(&[("ce-time", "yesterday")], "")), b"", &["time"]);
        rejected(
            Some(&with(&[("ce-dataschema", "not a url")], "")),
            b"",
            &["url"],
        );
        // percent-encoding of invalid UTF-8, overlong forms included
        rejected(
            Some(&with(&[("ce-subject", "%FF")], "")),
            b"",
            &["subject", "UTF-8"],
        );
        rejected(
            Some(&with(&[("ce-subject", "%C0%A0")], "")),
            b"",
            &["subject", "UTF-8"],
        );
        rejected(
            Some(&with(&[("ce-subject", "\"open")], "")),
            b"",
            &["subject", "quoted"],
        );
        // names that are not attribute names, repeated attributes
        rejected(Some(&with(&[("ce-a_b", "x")], "")), b"", &["ce-a_b"]);
        rejected(Some(&with(&[("ce-", "x")], "")), b"", &["\"ce-\""]);
        rejected(
            Some(&with(&[("CE-ID", "2")], "")),
            b"",
            &["id", "more than one"],
        );
        let mut repeated = with(&[], "");
        repeated.append("ce-subject", "a");
        repeated.append("ce-subject", "b");
        rejected(Some(&repeated), b"", &["ce-subject", "2 values"]);
        // data that cannot become an A3S payload
        rejected(Some(&with(&[], "")), b"not json", &["not valid JSON"]);
        rejected(
            Some(&with(&[], "")),
            &[0xff, 0xfe, b'{'],
            &["not valid JSON"],
        );
        rejected(
            Some(&with(
                &[("ce-datacontenttype", "application/vnd.x+json")],
                "",
            )),
            b"hello",
            &["not valid JSON"],
        );
        rejected(
            Some(&with(&[("ce-a3sversion", "-1")], "")),
            b"",
            &["a3sversion"],
        );
        // the SDK keeps non-JSON data as bytes; text becomes the payload
        let ce = cloudevent_from_nats(
            Some(&with(&[("ce-datacontenttype", "text/plain")], "")),
            b"hello",
        )
        .unwrap();
        assert_eq!(ce.data(), Some(&Data::Binary(b"hello".to_vec())));
        assert_eq!(Event::try_from(ce).unwrap().payload, json!("hello"));
    }

    #[test]
    fn bad_structured_messages_are_typed_errors() {
        let ct = |v: &str| headers(&[("Content-Type", v)]);
        let json = ct(STRUCTURED_CONTENT_TYPE);
        rejected(Some(&json), b"not json", &["invalid structured CloudEvent"]);
        rejected(
            Some(&json),
            &[0xff, 0xfe],
            &["invalid structured CloudEvent"],
        );
        rejected(Some(&json), b"", &["invalid structured CloudEvent"]);
        rejected(
            Some(&json),
            br#"{"specversion":"1.0","id":"1","source":"s"}"#,
            &["type"],
        );
        rejected(
            Some(&json),
            br#"{"specversion":"1.0","id":"","source":"s","type":"t"}"#,
            &["id", "empty"],
        );
        rejected(Some(&ct(BATCH_CONTENT_TYPE)), b"[]", &["batch"]);
        rejected(
            Some(&ct("application/cloudevents+avro")),
            b"",
            &["application/cloudevents+avro", "JSON"],
        );
        assert_eq!(
            content_mode(Some(&ct("application/cloudevents+avro"))),
            Mode::Structured
        );
        // merely starting like the structured type is no structured type
        let h = headers(&[
            ("Content-Type", "application/cloudeventsx"),
            ("ce-specversion", "1.0"),
        ]);
        assert_eq!(content_mode(Some(&h)), Mode::Binary);
    }

    #[test]
    fn malformed_percent_encoding_is_refused_naming_the_attribute() {
        // §3.1.3.2, as in the HTTP binding (same values, same outcome).
        let message = |name: &str, value: &str| {
            headers(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "s"),
                ("ce-type", "t"),
                (name, value),
            ])
        };
        for value in MALFORMED_PERCENT {
            for (header, attribute) in [
                ("ce-subject", "subject"),
                ("ce-comexample", "comexample"),
                ("ce-datacontenttype", "datacontenttype"),
            ] {
                rejected(Some(&message(header, value)), b"", &[attribute]);
            }
        }
        for (value, decoded) in WELL_FORMED_PERCENT {
            let ce = cloudevent_from_nats(Some(&message("ce-subject", value)), b"").unwrap();
            assert_eq!(ce.subject(), Some(decoded), "{value:?}");
        }
    }

    #[test]
    fn a_datacontenttype_that_is_no_media_type_is_refused_naming_it() {
        // Read (as a header, raw or percent-encoded, or in a document) and
        // written, as in the HTTP binding: such an event cannot be relayed
        // in HTTP binary mode, where it is the Content-Type.
        let base = [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ];
        for ct in [
            "text/pl\u{e9}",
            "text/plain\r\nx: 1",
            "application/json\u{7f}",
        ] {
            let encoded = crate::percent::encode(ct).unwrap_or_else(|| ct.to_string());
            for (name, value) in [("content-type", ct), ("ce-datacontenttype", &encoded)] {
                let mut map = headers(&base);
                // (async-nats takes no CR/LF in a header value)
                if let Ok(value) = HeaderValue::from_str(value) {
                    map.insert(name, value);
                    rejected(Some(&map), b"x", &["datacontenttype"]);
                }
            }
            let doc = json!({
                "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
                "datacontenttype": ct, "data": "x"
            });
            rejected(
                None,
                &serde_json::to_vec(&doc).unwrap(),
                &["datacontenttype"],
            );

            let mut ce = CloudEvent::from(odd_event());
            ce.set_datacontenttype(Some(ct));
            for mode in [Mode::Binary, Mode::Structured] {
                match cloudevent_to_nats(ce.clone(), mode) {
                    Err(Error::Serialization(reason)) => {
                        assert!(reason.contains("datacontenttype"), "{ct:?}: {reason}")
                    }
                    other => {
                        panic!("{ct:?} {mode:?}: expected a serialization error, got {other:?}")
                    }
                }
            }
        }
    }
}
