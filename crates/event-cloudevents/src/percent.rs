//! Percent-encoding of attribute values in binary-mode headers, shared by the
//! HTTP and NATS bindings.
//!
//! Both bindings (HTTP §3.1.3.2, NATS §3.1.3.2, same text) require header
//! values to be percent-encoded outside printable ASCII, plus space, `"` and
//! `%`, and receivers to decode them (rejecting invalid UTF-8). Decoding is
//! strict and identical in both bindings: a `%` that starts no `%XX` triplet
//! is an error too (see [`decode`]). The SDK writes
//! and reads HTTP header values verbatim, which loses leading/trailing spaces
//! and fails on non-ASCII text, so the HTTP binding encodes before the SDK
//! serialises and decodes after it parses; the NATS binding encodes and
//! decodes every header value it writes and reads.

use event_core::{Error, Result};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use std::borrow::Cow;

#[cfg(feature = "http")]
use cloudevents::event::{AttributesReader, AttributesWriter, ExtensionValue};

/// Characters encoded in header values: C0 controls, DEL, non-ASCII (always),
/// space, double quote and percent.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(0x7f).add(b' ').add(b'"').add(b'%');

/// The percent-encoded form of `value`, or `None` when it needs no encoding.
pub(crate) fn encode(value: &str) -> Option<String> {
    // A single encoded character comes back as a borrowed static "%XX", so
    // compare rather than trusting `Cow::Owned` to mean "changed".
    let encoded = Cow::from(utf8_percent_encode(value, HEADER_VALUE));
    (encoded != value).then(|| encoded.into_owned())
}

/// One round of percent-decoding of the header value of `attribute`, or `None`
/// when it contains no `%`.
///
/// Strict, in both bindings alike: a `%` must start a `%XX` triplet (two hex
/// digits, either case), and the decoded octets must be UTF-8 (overlong
/// forms included). §3.1.3.2 requires senders to encode a literal `%` as
/// `%25` and receivers to reject invalid UTF-8; RFC 3986 §2.1 gives a `%`
/// no other meaning. Keeping a stray `%` literally would be a guess that
/// breaks the encoding's one-to-one mapping (`a%zz` and `a%25zz` would both
/// read as `a%zz`), so it is an [`Error::Serialization`] naming the
/// attribute, as invalid UTF-8 is.
pub(crate) fn decode(attribute: &str, value: &str) -> Result<Option<String>> {
    if !value.contains('%') {
        return Ok(None);
    }
    let malformed = |what: &str| {
        Error::Serialization(format!(
            "header for CloudEvent attribute `{attribute}` is not percent-encoded UTF-8: {what}"
        ))
    };
    let bytes = value.as_bytes();
    for (i, _) in value.match_indices('%') {
        let triplet = bytes
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        if !triplet {
            return Err(malformed(&format!(
                "the `%` at byte {i} is not followed by two hex digits \
                 (a literal `%` is sent as `%25`)"
            )));
        }
    }
    let decoded = percent_decode_str(value)
        .decode_utf8()
        .map_err(|_| malformed("the decoded octets are not UTF-8"))?;
    Ok(Some(decoded.into_owned()))
}

/// Removes RFC 7230 §3.2.6 quoting from the header value of `attribute`:
/// inside a double-quoted string a backslash escapes the next character and
/// the quotes themselves are dropped; text outside quotes is kept as is. The
/// HTTP and NATS bindings require this before percent-decoding, for senders
/// that quote instead of percent-encoding. An unterminated quoted string or a
/// trailing backslash is an error.
#[cfg(any(feature = "http", feature = "nats"))]
pub(crate) fn unquote<'a>(attribute: &str, value: &'a str) -> Result<Cow<'a, str>> {
    if !value.contains('"') {
        return Ok(Cow::Borrowed(value));
    }
    let malformed = |what: &str| {
        Error::Serialization(format!(
            "header for CloudEvent attribute `{attribute}` has {what}"
        ))
    };
    let mut out = String::with_capacity(value.len());
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (_, '"') => quoted = !quoted,
            (true, '\\') => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => return Err(malformed("a backslash at the end of a quoted string")),
            },
            (_, c) => out.push(c),
        }
    }
    if quoted {
        return Err(malformed("an unterminated quoted string"));
    }
    Ok(Cow::Owned(out))
}

/// Percent-encodes the string attributes, `dataschema` and the extensions
/// that go into HTTP headers (not `datacontenttype`, which travels in
/// `Content-Type`; `time` and `specversion` never need it). Fails only if an
/// encoded `dataschema` stops being the same URL text, which a URL the
/// `url` crate serialised cannot do.
#[cfg(feature = "http")]
pub(crate) fn encode_event(event: &mut cloudevents::Event) -> Result<()> {
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
    // The SDK holds `dataschema` as a URL: its encoded text (a `%` becomes
    // `%25`, nothing else in a serialised URL needs encoding) must parse back
    // to exactly that text.
    if let Some(v) = event.dataschema().and_then(|url| encode(url.as_str())) {
        match url::Url::parse(&v) {
            Ok(url) if url.as_str() == v => {
                event.set_dataschema(Some(url));
            }
            _ => {
                return Err(Error::Serialization(format!(
                    "dataschema cannot be percent-encoded as a header: {v:?} is no URL"
                )));
            }
        }
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
    Ok(())
}

/// A header value as the binding reads it: unquoted (RFC 7230), then one
/// round of percent-decoding; `None` when that changes nothing.
#[cfg(feature = "http")]
fn header_text(attribute: &str, value: &str) -> Result<Option<String>> {
    let unquoted = unquote(attribute, value)?;
    Ok(match decode(attribute, &unquoted)? {
        Some(decoded) => Some(decoded),
        None => match unquoted {
            Cow::Owned(text) => Some(text),
            Cow::Borrowed(_) => None,
        },
    })
}

/// Reads the string attributes and extensions of a binary-mode HTTP message
/// as the binding requires (see [`header_text`]): undoes [`encode_event`]
/// and a sender's RFC 7230 quoting.
#[cfg(feature = "http")]
pub(crate) fn decode_event(event: &mut cloudevents::Event) -> Result<()> {
    if let Some(v) = header_text("id", event.id())? {
        event.set_id(v);
    }
    if let Some(v) = header_text("source", event.source())? {
        event.set_source(v);
    }
    if let Some(v) = header_text("type", event.ty())? {
        event.set_type(v);
    }
    if let Some(subject) = event.subject()
        && let Some(v) = header_text("subject", subject)?
    {
        event.set_subject(Some(v));
    }
    // The SDK has parsed the header into a URL already; the URL parser keeps
    // the `%XX` triplets of paths, queries and fragments as they are, so
    // decoding its text and parsing again reads the header as the NATS
    // binding does (decode, then parse).
    let schema = match event.dataschema() {
        Some(url) => header_text("dataschema", url.as_str())?,
        None => None,
    };
    if let Some(text) = schema {
        let url = url::Url::parse(&text).map_err(|e| {
            Error::Serialization(format!(
                "header for CloudEvent attribute `dataschema` decodes to {text:?}, \
                 which is no URL: {e}"
            ))
        })?;
        event.set_dataschema(Some(url));
    }
    let mut changed = Vec::new();
    for (name, value) in event.iter_extensions() {
        if let ExtensionValue::String(s) = value
            && let Some(v) = header_text(name, s)?
        {
            changed.push((name.to_string(), v));
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
        // overlong encoding of a space (the binding's own example)
        assert!(decode("x", "%C0%A0").is_err());
        // lower-case hex is accepted; a `%` that starts no triplet is refused
        assert_eq!(decode("x", "%c3%a9").unwrap().as_deref(), Some("é"));
        for bad in ["100%", "%", "%4", "a%zzb", "%%41", "%\u{e9}9"] {
            let err = decode("x", bad).unwrap_err().to_string();
            assert!(err.contains("two hex digits"), "{bad:?}: {err}");
        }
        assert_eq!(decode("x", "%2541").unwrap().as_deref(), Some("%41"));
    }

    #[cfg(feature = "nats")]
    #[test]
    fn quoted_strings_are_unescaped() {
        for (raw, plain) in [
            ("plain", "plain"),
            ("\"quoted value\"", "quoted value"),
            ("\"a \\\"b\\\" c\"", "a \"b\" c"),
            ("\"back\\\\slash\"", "back\\slash"),
            ("pre\"mid\"post", "premidpost"),
            ("\"\"", ""),
            ("outside\\kept", "outside\\kept"),
        ] {
            assert_eq!(unquote("x", raw).unwrap(), plain, "{raw:?}");
        }
        for bad in ["\"open", "a\"b", "\"trailing\\"] {
            assert!(unquote("x", bad).is_err(), "{bad:?}");
        }
    }
}
