//! What a stored message is: an event, or a message that is not one (see
//! [`decode`]).

use event_core::{Error, Event};

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
pub(crate) fn undecodable(subject: String, sequence: u64, reason: String, payload: &[u8]) -> Error {
    Error::Undecodable {
        subject,
        sequence,
        reason,
        raw: String::from_utf8_lossy(payload).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::decode;
    use event_core::Event;

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
