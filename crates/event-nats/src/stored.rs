//! What a stored message is: an event, or a message that is not one (see
//! [`decode`]), and the text an [`Error::Undecodable`] carries of it (see
//! [`raw_body`]).

use base64::Engine as _;
use event_core::{Error, Event};

/// Prefix of an [`Error::Undecodable`]'s `raw` that holds the body in
/// base64 (see [`raw_body`]).
pub(crate) const BASE64_PREFIX: &str = "base64:";

/// The event stored under `subject` with body `payload`, or why it is not
/// one: a body that is not an event's JSON, or an event whose `subject`
/// is not the one it is stored under (another publisher's message
/// claiming a subject it was not published to: filters, durables and
/// `history` go by the subject it is stored under, so the event would
/// reach readers of one subject saying it is another's).
pub(crate) fn decode(subject: &str, payload: &[u8]) -> Result<Event, String> {
    let event = serde_json::from_slice::<Event>(payload).map_err(|e| e.to_string())?;
    if event.subject == subject {
        Ok(event)
    } else {
        Err(format!(
            "the event claims subject {:?} but is stored under {subject:?}",
            event.subject
        ))
    }
}

/// The message stored under `subject` at `sequence` with body `payload`,
/// which is not an event (`reason`, from [`decode`]), as the error a
/// subscription reports.
///
/// Its `raw` keeps the body recoverable byte for byte (see [`raw_body`]).
pub(crate) fn undecodable(subject: String, sequence: u64, reason: String, payload: &[u8]) -> Error {
    let (raw, encoded) = raw_body(payload);
    let reason = if encoded {
        format!("{reason} (raw: {BASE64_PREFIX:?} and the body's bytes in base64)")
    } else {
        reason
    };
    Error::Undecodable {
        subject,
        sequence,
        reason,
        raw,
    }
}

/// The body `payload` as the text of an [`Error::Undecodable`]'s `raw`,
/// and whether it was encoded: the body itself when it is UTF-8 text that
/// does not start with [`BASE64_PREFIX`], else `base64:` followed by the
/// standard (padded) base64 of its bytes. Either way the bytes can be
/// recovered exactly: `raw` starting with `base64:` is the base64 of the
/// body, any other `raw` is its UTF-8.
pub(crate) fn raw_body(payload: &[u8]) -> (String, bool) {
    match std::str::from_utf8(payload) {
        Ok(text) if !text.starts_with(BASE64_PREFIX) => (text.to_owned(), false),
        _ => {
            let mut raw =
                String::with_capacity(BASE64_PREFIX.len() + payload.len().div_ceil(3) * 4);
            raw.push_str(BASE64_PREFIX);
            base64::engine::general_purpose::STANDARD.encode_string(payload, &mut raw);
            (raw, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BASE64_PREFIX, decode, raw_body};
    use base64::Engine as _;
    use event_core::Event;

    /// The inverse of [`raw_body`].
    fn body_of(raw: &str) -> Vec<u8> {
        match raw.strip_prefix(BASE64_PREFIX) {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_default(),
            None => raw.as_bytes().to_vec(),
        }
    }

    #[test]
    fn raw_bodies_are_text_or_marked_base64_and_recoverable() {
        let binary: Vec<u8> = (0u8..=255).collect();
        for (body, want) in [
            (&b"hello"[..], Some("hello")),
            (b"", Some("")),
            ("é\u{0}\u{10ffff}".as_bytes(), Some("é\u{0}\u{10ffff}")),
            (b"not json {", Some("not json {")),
            (b"base64", Some("base64")),
            (b"base64:aGk=", Some("base64:YmFzZTY0OmFHaz0=")),
            (b"\xff", Some("base64:/w==")),
            (b"ok\xc3", Some("base64:b2vD")),
            (&binary, None),
        ] {
            let (raw, encoded) = raw_body(body);
            if let Some(want) = want {
                assert_eq!(raw, want);
            }
            assert_eq!(encoded, raw.starts_with(BASE64_PREFIX), "{raw:?}");
            assert_eq!(body_of(&raw), body, "{raw:?}");
        }
    }

    #[test]
    fn an_event_is_decoded_only_under_its_own_subject() {
        let event = Event::new("p.public.note", "public", "s", "t", serde_json::json!(1));
        let json = serde_json::to_vec(&event).unwrap_or_default();
        assert_eq!(decode("p.public.note", &json), Ok(event));
        let reason = decode("p.admin.grant", &json).err().unwrap_or_default();
        assert!(
            reason.contains("\"p.public.note\"") && reason.contains("\"p.admin.grant\""),
            "{reason}"
        );
        assert!(decode("p.public.note", b"{}").is_err());
    }
}
