//! Quoting strings that may be of any length (ids from the stream, keys
//! from a state file) in errors, logs and records.

use std::borrow::Cow;

/// `text`, or its first `chars` characters, `…` and its length in bytes.
pub(crate) fn cut(text: &str, chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(chars) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len())),
    }
}

/// `text` quoted and escaped as `Debug` shows it, cut to its first `chars`
/// characters (then `…` and its length in bytes): the form in which
/// errors name an id, as event-crypto's do, so that a line break in it
/// stays `\n`.
pub(crate) fn quoted(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_marks_long_text() {
        assert!(matches!(cut("abc", 3), Cow::Borrowed("abc")));
        assert_eq!(cut("abcd", 3), "abc… (4 bytes)");
        // characters, never split inside one
        assert_eq!(cut(&"é".repeat(10), 2), "éé… (20 bytes)");
    }

    #[test]
    fn quoted_escapes_and_marks_long_text() {
        assert_eq!(quoted("a\nb", 3), "\"a\\nb\"");
        assert_eq!(quoted("abcd", 3), "\"abc\"… (4 bytes)");
    }
}
