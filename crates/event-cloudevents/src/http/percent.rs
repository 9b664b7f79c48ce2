//! Percent-encoding of attribute values in binary-mode HTTP headers.
//!
//! The CloudEvents HTTP binding (§3.1.3.2) requires header values to be
//! percent-encoded outside printable ASCII, plus space, `"` and `%`, and
//! receivers to decode them. The SDK writes and reads header values verbatim,
//! which loses leading/trailing spaces and fails on non-ASCII text, so this
//! crate encodes before the SDK serialises and decodes after it parses.

use event_core::{Error, Result};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use std::borrow::Cow;

use cloudevents::event::{AttributesReader, AttributesWriter, ExtensionValue};

/// Characters encoded in header values: C0 controls, DEL, non-ASCII (always),
/// space, double quote and percent.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(0x7f).add(b' ').add(b'"').add(b'%');

fn encode(value: &str) -> Option<String> {
    // A single encoded character comes back as a borrowed static "%XX", so
    // compare rather than trusting `Cow::Owned` to mean "changed".
    let encoded = Cow::from(utf8_percent_encode(value, HEADER_VALUE));
    (encoded != value).then(|| encoded.into_owned())
}

fn decode(attribute: &str, value: &str) -> Result<Option<String>> {
    if !value.contains('%') {
        return Ok(None);
    }
    let decoded = percent_decode_str(value).decode_utf8().map_err(|_| {
        Error::Serialization(format!(
            "header for CloudEvent attribute `{attribute}` is not percent-encoded UTF-8"
        ))
    })?;
    Ok(Some(decoded.into_owned()))
}

/// Percent-encodes the string attributes and extensions that go into headers.
pub(crate) fn encode_event(event: &mut cloudevents::Event) {
    if let Some(v) = encode(event.id()) {
        event.set_id(v);
    }
    if let Some(v) = encode(event.source()) {
        event.set_source(v);
    }
    if let Some(v) = encode(event.ty()) {
        event.set_type(v);
    }
    if let Some(v) = event.subject().and_then(encode) {
        event.set_subject(Some(v));
    }
    let changed: Vec<(String, String)> = event
        .iter_extensions()
        .filter_map(|(name, value)| match value {
            ExtensionValue::String(s) => encode(s).map(|v| (name.to_string(), v)),
            _ => None,
        })
        .collect();
    for (name, value) in changed {
        event.set_extension(&name, value);
    }
}

/// Decodes what [`encode_event`] encoded (on a binary-mode message).
pub(crate) fn decode_event(event: &mut cloudevents::Event) -> Result<()> {
    if let Some(v) = decode("id", event.id())? {
        event.set_id(v);
    }
    if let Some(v) = decode("source", event.source())? {
        event.set_source(v);
    }
    if let Some(v) = decode("type", event.ty())? {
        event.set_type(v);
    }
    if let Some(subject) = event.subject() {
        if let Some(v) = decode("subject", subject)? {
            event.set_subject(Some(v));
        }
    }
    let mut changed = Vec::new();
    for (name, value) in event.iter_extensions() {
        if let ExtensionValue::String(s) = value {
            if let Some(v) = decode(name, s)? {
                changed.push((name.to_string(), v));
            }
        }
    }
    for (name, value) in changed {
        event.set_extension(&name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_the_binding_requires_and_decodes_back() {
        for (raw, encoded) in [
            ("plain-ascii_1.2", None),
            (" lead", Some("%20lead")),
            ("a\"b%c", Some("a%22b%25c")),
            ("€", Some("%E2%82%AC")),
            ("line\nbreak", Some("line%0Abreak")),
            ("del\u{7f}", Some("del%7F")),
            ("\u{7f}", Some("%7F")),
            ("é", Some("%C3%A9")),
        ] {
            assert_eq!(encode(raw).as_deref(), encoded, "{raw:?}");
            let wire = encode(raw).unwrap_or_else(|| raw.to_string());
            let back = decode("x", &wire).unwrap().unwrap_or(wire);
            assert_eq!(back, raw);
        }
        assert!(decode("x", "%FF").is_err());
    }
}
