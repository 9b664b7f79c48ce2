//! The attribute mapping between an A3S [`Event`](event_core::Event) and a
//! CloudEvent: extension names, defaults and the metadata key encoding.
//!
//! | A3S `Event` field | CloudEvent attribute | notes |
//! |---|---|---|
//! | `id` | `id` | empty → [`derived_id`] (from the content: the same event, the same id), recorded in [`DEFAULTED`] |
//! | `source` | `source` | empty → [`DEFAULT_SOURCE`], recorded in [`DEFAULTED`] |
//! | `event_type` | `type` | empty → [`DEFAULT_TYPE`], recorded in [`DEFAULTED`] |
//! | `subject` | `subject` | the NATS-style subject (`events.market.forex`); empty → absent |
//! | `timestamp` (ms) | `time` | RFC 3339 with millisecond precision; a timestamp past year 9999 goes to [`TIMESTAMP`] instead |
//! | `payload` | `data` | `datacontenttype: application/json`; a `null` payload → no `data` and no `datacontenttype` (unless metadata names one, below); a string payload under a non-JSON type in metadata → text or binary data ([Non-JSON data](#non-json-data)) |
//! | `category` | [`CATEGORY`] | string extension |
//! | `summary` | [`SUMMARY`] | string extension |
//! | `version` | [`VERSION`] | integer extension (string when above `i32::MAX`, the spec's integer range) |
//! | `metadata` | one extension per entry | see below |
//!
//! # Metadata
//!
//! CloudEvents attribute names are lowercase ASCII letters and digits only,
//! while metadata keys are arbitrary strings. Each entry becomes one string
//! extension, so routers can filter on it, named by the first rule that
//! applies:
//!
//! 1. A key `ce-<name>`, where `<name>` is a valid attribute name that is not
//!    reserved (not a core attribute, not one of the `a3s…` names above, not
//!    starting with [`METADATA_PREFIX`] or [`METADATA_HEX_PREFIX`]), is the
//!    *foreign* extension `<name>` itself (`ce-traceparent` ↔ `traceparent`).
//!    Two core attributes the `Event` has no field for travel the same way:
//!    `ce-dataschema` ↔ `dataschema` (when the value is a URL in normal
//!    form) and `ce-datacontenttype` ↔ `datacontenttype` when the value is
//!    written in printable ASCII (and inner tabs) without surrounding whitespace and names no
//!    CloudEvents format (so that HTTP binary mode can carry it in
//!    `Content-Type`, where `application/cloudevents…` would announce
//!    structured mode; see [`is_cloudevents_content_type`]) and either the
//!    payload is `null` (no data: any content type, `application/json`
//!    included), or it is a JSON type other than `application/json` (the
//!    default for data, which needs no metadata), or it is a non-JSON type
//!    that the payload is text or binary data of (see
//!    [Non-JSON data](#non-json-data)).
//! 2. A key of lowercase letters and digits only (including the empty key) is
//!    [`METADATA_PREFIX`]` + key`: `region` ↔ `a3smregion`.
//! 3. Any other key is [`METADATA_HEX_PREFIX`]` + lowercase hex of its UTF-8
//!    bytes`: `X-Trace.Id` ↔ `a3sx582d54726163652e4964`.
//!
//! Reading a CloudEvent applies the rules backwards, so a CloudEvent from
//! another producer keeps everything: its extensions (say `traceparent`), its
//! `dataschema` and its `datacontenttype` (unless it is `application/json`
//! with data) land in metadata under `ce-<name>` and are written back as the
//! same attributes. Non-string extension values (integers, booleans) become
//! their string form (as binary mode carries every extension anyway).
//!
//! # Reading a foreign CloudEvent
//!
//! Missing A3S extensions take documented defaults: `category` is the second
//! token of the subject (`events.market.forex` → `market`) or empty (the
//! conversion knows no provider, so it takes the prefix to be one token:
//! under `acme.events` it would be `events`;
//! [`publish_cloudevent`](crate::CloudEventProviderExt::publish_cloudevent)
//! and [`publish_cloudevent_to`](crate::CloudEventProviderExt::publish_cloudevent_to)
//! take the token after their provider's prefix instead; elsewhere (the NATS
//! binding's `from_nats`, say) set the event's `category` after converting), `summary`
//! is empty, `version` is 1, a missing `time` is the time of conversion, a
//! missing `subject` is empty. `time` is truncated to whole milliseconds.
//! A 0.3 event is read as its 1.0 form (`schemaurl` is `dataschema`) and
//! written back as 1.0; written back, it also carries the A3S extensions.
//! JSON data becomes a [`serde_json::Value`]: an integer beyond `u64` and
//! `i64`, or a decimal with more digits than `f64` holds, is rounded to the
//! nearest `f64`, a number beyond `f64`'s range is refused, and of an
//! object's repeated keys the last one is kept. A structured document that
//! repeats a member (an attribute, `data`) is refused as ambiguous, as
//! binary mode refuses a repeated `ce-*` header.
//! JSON `null` data is no data, and data without a `datacontenttype` comes
//! back typed `application/json` (which the JSON event format implies).
//! Everything else that cannot be held is an error, never guessed: see
//! [`TryFrom<CloudEvent>`](crate::CloudEvent).
//!
//! # Non-JSON data
//!
//! Data under a `datacontenttype` that is not JSON
//! ([`is_json_content_type`] false: `text/plain`, `application/xml`,
//! `image/png`, protobuf, ...) is held as a JSON string payload, the type in
//! metadata under [`DATA_CONTENT_TYPE_KEY`] exactly as given. Its bytes are
//! what binary mode carries in the body (text data as its UTF-8 bytes), so
//! every content mode reads to the same event:
//!
//! | CloudEvent data | A3S payload | metadata |
//! |---|---|---|
//! | bytes, under a [text type](is_text_content_type), valid UTF-8 | the text | the type |
//! | any other bytes | standard padded base64 of the bytes | the type, [`DATA_BASE64_KEY`]` = "true"` |
//! | empty | `null` (no data: binary mode cannot tell them apart) | the type |
//! | a JSON value that is not a string (only a hand-built SDK event) | error | |
//!
//! Writing applies the table backwards, when the metadata type can be the
//! attribute (as in rule 1 above) and the payload is a non-empty string:
//! with the marker `"true"` and a payload that is the canonical base64 of
//! bytes that would not read back as text, the data is those bytes
//! (`data_base64` in structured mode, the raw body in binary mode) and the
//! marker is not written (the data implies it); otherwise, under a text
//! type, the data is the string. In every other case (a marker that does
//! not fit, a non-text type without the marker, an empty string, a payload
//! that is not a string) the type and the marker stay encoded metadata and
//! the data is JSON, so an event always comes back equal. A foreign
//! CloudEvent comes back with the same `datacontenttype` and the same data
//! bytes (text whose type reads as bytes, such as
//! `text/plain; charset=iso-8859-1`, comes back as the same bytes in
//! `data_base64`). [`crate::data`] reads and sets such data without
//! knowing the encoding.

pub use crate::derived_id::{DERIVED_ID_PREFIX, derived_id};

use cloudevents::AttributesReader as _;

/// Extension holding the event's category.
pub const CATEGORY: &str = "a3scategory";
/// Extension holding the event's human-readable summary.
pub const SUMMARY: &str = "a3ssummary";
/// Extension holding the schema version of the event type.
pub const VERSION: &str = "a3sversion";
/// Extension listing (comma-separated) the attributes among `id`, `source`
/// and `type` that were empty on the A3S event and carry a default on the
/// CloudEvent ([`derived_id`], [`DEFAULT_SOURCE`], [`DEFAULT_TYPE`]); reading
/// restores them as empty strings, and refuses a mark on a value that is not
/// that default.
pub const DEFAULTED: &str = "a3sdefaulted";
/// Extension holding the timestamp (decimal Unix milliseconds) when it is too
/// far in the future for an RFC 3339 `time` (after year 9999).
pub const TIMESTAMP: &str = "a3stimestamp";
/// Prefix of the extension for a metadata key made of lowercase letters and
/// digits: `a3sm<key>`.
pub const METADATA_PREFIX: &str = "a3sm";
/// Prefix of the extension for any other metadata key:
/// `a3sx<lowercase hex of the key's UTF-8 bytes>`.
pub const METADATA_HEX_PREFIX: &str = "a3sx";
/// Metadata key prefix for foreign CloudEvent attributes (`ce-traceparent`).
pub const FOREIGN_PREFIX: &str = "ce-";

/// `type` of a CloudEvent made from an untyped event (empty `event_type`).
pub const DEFAULT_TYPE: &str = "a3s.event";
/// `source` of a CloudEvent made from an event with an empty source.
pub const DEFAULT_SOURCE: &str = "a3s";

/// The `datacontenttype` of a CloudEvent made from an event with JSON data
/// (the default; see the table above for the others).
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Metadata key holding a foreign `datacontenttype` (see the table above and
/// [Non-JSON data](self#non-json-data)).
pub const DATA_CONTENT_TYPE_KEY: &str = "ce-datacontenttype";

/// Metadata key whose value `"true"` marks a string payload as the standard
/// (padded) base64 of the event's binary data, under the non-JSON type in
/// [`DATA_CONTENT_TYPE_KEY`]. It mirrors the JSON event format's
/// `data_base64` member; see [Non-JSON data](self#non-json-data).
pub const DATA_BASE64_KEY: &str = "ce-data_base64";

/// Core attribute names of CloudEvents v1.0 (and the reserved `data`).
const CORE_ATTRIBUTES: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
];

/// Whether `name` is `data` or `data_base64`: the event data's names, which
/// no attribute may have (binary mode carries the data in the body, the
/// JSON format in these members).
pub(crate) fn is_reserved_data_name(name: &str) -> bool {
    matches!(name, "data" | "data_base64")
}

/// Whether `name` is a valid CloudEvents attribute name: non-empty, lowercase
/// ASCII letters and digits only.
pub fn is_valid_attribute_name(name: &str) -> bool {
    !name.is_empty() && is_lower_alnum(name)
}

/// Refuses, before it is written in any mode, a CloudEvent that no binding
/// can read back (the SDK lets a hand-built event hold both): one carrying
/// an extension whose name is no attribute name (`set_extension` takes any
/// name) or is reserved (an attribute of its spec version, whose header or
/// member it would replace or repeat, or `data`, which in structured mode
/// would become the event's data), or a `datacontenttype` that is no media
/// type ([`check_datacontenttype`]).
pub(crate) fn check_writable(event: &cloudevents::Event) -> event_core::Result<()> {
    if let Some(name) = event
        .iter_extensions()
        .map(|(name, _)| name)
        .find(|name| !is_valid_attribute_name(name))
    {
        return Err(event_core::Error::Serialization(format!(
            "extension {} is no CloudEvents attribute name (lowercase ASCII letters and digits)",
            quoted_name(name)
        )));
    }
    let attributes = event.specversion().attribute_names();
    if let Some(name) = event
        .iter_extensions()
        .map(|(name, _)| name)
        .find(|name| attributes.contains(name) || is_reserved_data_name(name))
    {
        return Err(event_core::Error::Serialization(format!(
            "extension `{name}` has a reserved name (an attribute of CloudEvents {}, or `data`): \
             it would replace or repeat that attribute, or become the data",
            event.specversion()
        )));
    }
    check_datacontenttype(event).map_err(|reason| {
        event_core::Error::Serialization(format!(
            "cannot write CloudEvent {:?}: {reason}",
            event.id()
        ))
    })
}

/// Refuses an empty `id`, `source` or `type`, or an empty `subject`: the
/// spec requires them non-empty (`subject` when present), the SDK does not.
/// Every binding refuses such an event when reading it.
pub(crate) fn check_required(event: &cloudevents::Event) -> Result<(), String> {
    use cloudevents::AttributesReader as _;
    for (attribute, value) in [
        ("id", event.id()),
        ("source", event.source().as_str()),
        ("type", event.ty()),
        ("subject", event.subject().unwrap_or("-")),
    ] {
        if value.is_empty() {
            return Err(format!(
                "attribute `{attribute}` is empty; CloudEvents requires it non-empty"
            ));
        }
    }
    Ok(())
}

/// Refuses a `datacontenttype` that is no media type: RFC 2046 (which the
/// attribute MUST follow) spells one in printable ASCII, the form an HTTP
/// binary-mode message carries it in, as its `Content-Type` header.
/// Control characters (a CR/LF would end the header), DEL and anything
/// beyond ASCII are refused; spaces and tabs (around a parameter's `;`) are
/// not. Every binding refuses such an event when reading and when writing,
/// so that a relay never accepts an event it cannot pass on.
pub(crate) fn check_datacontenttype(event: &cloudevents::Event) -> Result<(), String> {
    event
        .datacontenttype()
        .map_or(Ok(()), check_media_type_text)
}

/// [`check_datacontenttype`] on the text of one.
pub(crate) fn check_media_type_text(content_type: &str) -> Result<(), String> {
    if content_type
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Ok(());
    }
    Err(format!(
        "invalid CloudEvents attribute datacontenttype {content_type:?}: a media type (RFC 2046) \
         is printable ASCII, as the HTTP Content-Type header that carries it in binary mode"
    ))
}

fn is_lower_alnum(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether an extension name belongs to the A3S mapping (and so cannot carry a
/// foreign attribute).
fn is_reserved(name: &str) -> bool {
    CORE_ATTRIBUTES.contains(&name)
        || [CATEGORY, SUMMARY, VERSION, DEFAULTED, TIMESTAMP].contains(&name)
        || name.starts_with(METADATA_PREFIX)
        || name.starts_with(METADATA_HEX_PREFIX)
}

/// Where a metadata entry goes on the CloudEvent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MetadataSlot<'a> {
    /// A foreign extension with this name (rule 1).
    Foreign(&'a str),
    /// The `dataschema` attribute, if the value is a normalised URL.
    DataSchema,
    /// The `datacontenttype` attribute, if the value is a JSON type other than
    /// `application/json`.
    DataContentType,
    /// An encoded A3S metadata extension (rules 2 and 3).
    Encoded,
}

/// Classifies a metadata key (rule 1 vs rules 2–3).
pub(crate) fn metadata_slot(key: &str) -> MetadataSlot<'_> {
    match key.strip_prefix(FOREIGN_PREFIX) {
        Some("dataschema") => MetadataSlot::DataSchema,
        Some("datacontenttype") => MetadataSlot::DataContentType,
        Some(name) if is_valid_attribute_name(name) && !is_reserved(name) => {
            MetadataSlot::Foreign(name)
        }
        _ => MetadataSlot::Encoded,
    }
}

/// The extension name for a metadata key under rules 2 and 3.
pub fn encode_metadata_key(key: &str) -> String {
    if is_lower_alnum(key) {
        let mut name = String::with_capacity(METADATA_PREFIX.len() + key.len());
        name.push_str(METADATA_PREFIX);
        name.push_str(key);
        name
    } else {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut name = String::with_capacity(METADATA_HEX_PREFIX.len() + 2 * key.len());
        name.push_str(METADATA_HEX_PREFIX);
        for b in key.bytes() {
            name.push(char::from(HEX[usize::from(b >> 4)]));
            name.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        name
    }
}

/// Decodes the hex part of an `a3sx…` extension name back to the metadata key.
pub(crate) fn decode_hex_key(hex: &str) -> Result<String, String> {
    if !hex.len().is_multiple_of(2) {
        return Err("odd number of hex digits".to_string());
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| "not lowercase hex".to_string())?;
    String::from_utf8(bytes).map_err(|_| "hex does not decode to UTF-8".to_string())
}

/// The media type of a content type, lowercased, without parameters.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether a content type denotes JSON data (`application/json`,
/// `text/json`, `*+json`, with or without parameters).
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// Whether non-JSON data under this content type is read as text: the media
/// type (lowercased, without parameters) is `text/*` (other than the JSON
/// `text/json`), `application/xml`, `*+xml`, `application/yaml`, `*+yaml` or
/// `application/x-www-form-urlencoded`, and a `charset` parameter, if any, is
/// `utf-8`, `utf8` or `us-ascii` (any case, quoted or not). Data under any
/// other charset is kept as bytes: it is not UTF-8 text.
///
/// ```
/// use event_cloudevents::mapping::is_text_content_type;
///
/// assert!(is_text_content_type("text/plain"));
/// assert!(is_text_content_type("Application/Atom+XML; charset=UTF-8"));
/// assert!(!is_text_content_type("text/plain; charset=iso-8859-1"));
/// assert!(!is_text_content_type("application/octet-stream"));
/// ```
pub fn is_text_content_type(content_type: &str) -> bool {
    let essence = essence(content_type);
    let textual = (essence.starts_with("text/") && essence != "text/json")
        || essence == "application/xml"
        || essence.ends_with("+xml")
        || essence == "application/yaml"
        || essence.ends_with("+yaml")
        || essence == "application/x-www-form-urlencoded";
    textual
        && content_type.split(';').skip(1).all(|parameter| {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            !name.trim().eq_ignore_ascii_case("charset") || {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                ["utf-8", "utf8", "us-ascii"]
                    .iter()
                    .any(|utf8| value.eq_ignore_ascii_case(utf8))
            }
        })
}

/// Whether a content type names a CloudEvents format itself
/// (`application/cloudevents`, `application/cloudevents+json`,
/// `application/cloudevents-batch+json`, any case, with or without
/// parameters). In an HTTP `Content-Type` such a type announces structured or
/// batched mode, so binary mode cannot carry it as an event's
/// `datacontenttype`.
pub fn is_cloudevents_content_type(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence
        .strip_prefix("application/cloudevents")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with("-batch"))
}

/// Whether a content type names the JSON batch format
/// (`application/cloudevents-batch+json`, any case, with or without
/// parameters).
#[cfg(feature = "http")]
pub(crate) fn is_batch_content_type(content_type: &str) -> bool {
    essence(content_type) == "application/cloudevents-batch+json"
}

/// An attribute or member name as an error quotes it: escaped, and cut to
/// 64 characters (then `…`), so a message stays small whatever the
/// document holds.
pub(crate) fn quoted_name(name: &str) -> String {
    let shown: String = name.chars().take(64).collect();
    let more = if shown.len() < name.len() { "…" } else { "" };
    format!("{shown:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_follow_the_spec() {
        assert!(is_valid_attribute_name("a3scategory"));
        assert!(is_valid_attribute_name("traceparent"));
        assert!(!is_valid_attribute_name(""));
        assert!(!is_valid_attribute_name("Trace"));
        assert!(!is_valid_attribute_name("a_b"));
        assert!(!is_valid_attribute_name("é"));
        for name in [CATEGORY, SUMMARY, VERSION, DEFAULTED, TIMESTAMP] {
            assert!(is_valid_attribute_name(name), "{name}");
        }
    }

    #[test]
    fn metadata_keys_encode_to_valid_names_and_back() {
        for key in [
            "region",
            "",
            "a.b",
            "X-Trace-Id",
            "ключ",
            "😀",
            "ce-",
            "a b",
        ] {
            let name = encode_metadata_key(key);
            assert!(
                name == METADATA_PREFIX || is_valid_attribute_name(&name),
                "{name}"
            );
            let back = if let Some(hex) = name.strip_prefix(METADATA_HEX_PREFIX) {
                decode_hex_key(hex).unwrap()
            } else {
                name.strip_prefix(METADATA_PREFIX).unwrap().to_string()
            };
            assert_eq!(back, key);
        }
        assert_eq!(encode_metadata_key("region"), "a3smregion");
        assert_eq!(encode_metadata_key("a.b"), "a3sx612e62");
    }

    #[test]
    fn bad_hex_is_rejected() {
        assert!(decode_hex_key("6").is_err());
        assert!(decode_hex_key("zz").is_err());
        assert!(decode_hex_key("6A").is_err());
        assert!(decode_hex_key("ff").is_err()); // not UTF-8
    }

    #[test]
    fn metadata_slots() {
        assert_eq!(
            metadata_slot("ce-traceparent"),
            MetadataSlot::Foreign("traceparent")
        );
        assert_eq!(metadata_slot("ce-dataschema"), MetadataSlot::DataSchema);
        assert_eq!(
            metadata_slot("ce-datacontenttype"),
            MetadataSlot::DataContentType
        );
        for key in [
            "ce-id",
            "ce-a3scategory",
            "ce-a3smx",
            "ce-Bad",
            "ce-",
            "region",
        ] {
            assert_eq!(metadata_slot(key), MetadataSlot::Encoded, "{key}");
        }
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("application/json; charset=utf-8"));
        assert!(is_json_content_type("application/vnd.a3s+json"));
        assert!(is_json_content_type("Text/JSON"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/xml"));
        assert!(!is_json_content_type("application/jsonx"));
    }

    #[test]
    fn text_content_types() {
        for ct in [
            "text/plain",
            "Text/Plain",
            "text/csv; header=present",
            "text/plain; charset=utf-8",
            "text/plain;charset=\"UTF-8\"",
            "text/html; charset=us-ascii",
            "application/xml",
            "application/atom+xml",
            "image/svg+xml; charset=utf8",
            "application/yaml",
            "application/vnd.k8s+yaml",
            "application/x-www-form-urlencoded",
        ] {
            assert!(is_text_content_type(ct), "{ct}");
        }
        for ct in [
            "application/octet-stream",
            "image/png",
            "application/protobuf",
            "text/plain; charset=iso-8859-1",
            "text/plain; charset=utf-16",
            "text/plain; charset=",
            "application/xmlx",
            "textplain",
            "",
        ] {
            assert!(!is_text_content_type(ct), "{ct}");
        }
    }

    #[test]
    fn cloudevents_content_types() {
        assert!(is_cloudevents_content_type("application/cloudevents"));
        assert!(is_cloudevents_content_type(
            "Application/CloudEvents+JSON; x=1"
        ));
        assert!(is_cloudevents_content_type(
            "application/cloudevents-batch+json"
        ));
        assert!(!is_cloudevents_content_type(
            "application/cloudeventsx+json"
        ));
        assert!(!is_cloudevents_content_type("application/json"));
    }
}
