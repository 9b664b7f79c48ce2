//! [`Quoted`]: a string from an envelope or an event, quoted in an error
//! message with a bounded length.

use std::fmt;

/// Characters of a quoted string shown before it is cut.
pub(crate) const QUOTE_CHARS: usize = 64;

/// Shows `text` in an error message: `"text"` (escaped as `{:?}` does) when
/// it has at most [`QUOTE_CHARS`] characters, else its first
/// [`QUOTE_CHARS`] characters and its length, `"kkk…kkk"… (600000 bytes)`.
///
/// Key ids, event ids and the other strings an envelope's author or an
/// event's publisher chooses can be as long as the payload limit allows; an
/// error quoting one whole would be as large, and whatever carries the
/// error (a dead letter's reason, a log line) larger still.
#[derive(Clone, Copy)]
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTE_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_quoted_whole_and_escaped() {
        assert_eq!(Quoted("k1").to_string(), "\"k1\"");
        assert_eq!(Quoted("").to_string(), "\"\"");
        assert_eq!(Quoted("a\n\u{1b}\0").to_string(), r#""a\n\u{1b}\0""#);
        let exact = "x".repeat(QUOTE_CHARS);
        assert_eq!(Quoted(&exact).to_string(), format!("\"{exact}\""));
    }

    #[test]
    fn long_strings_show_their_start_and_length() {
        let long = "x".repeat(QUOTE_CHARS + 1);
        assert_eq!(
            Quoted(&long).to_string(),
            format!("\"{}\"… (65 bytes)", &long[..QUOTE_CHARS])
        );
        // characters, not bytes: never cut inside one
        let wide = "✓".repeat(1000);
        assert_eq!(
            Quoted(&wide).to_string(),
            format!("\"{}\"… (3000 bytes)", "✓".repeat(QUOTE_CHARS))
        );
        // control characters are escaped in the part shown
        let control = "\u{1b}".repeat(10_000);
        let shown = Quoted(&control).to_string();
        assert!(shown.starts_with("\"\\u{1b}"), "{shown}");
        assert!(shown.ends_with("… (10000 bytes)"), "{shown}");
        assert!(shown.len() < 600, "{}", shown.len());
    }
}
