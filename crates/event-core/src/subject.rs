//! Subjects, filters and their validation.
//!
//! A subject is a `.`-separated list of tokens:
//! `{prefix}.{category}.{topic}[.{more}]`. Rules (NATS semantics):
//!
//! - tokens are non-empty and contain no whitespace, control characters or `.`;
//! - a published subject contains no wildcards;
//! - a filter may use `*` as a whole token (exactly one token) and `>` as
//!   the whole last token (one or more tokens: `events.market.>` matches
//!   `events.market.forex` but not `events.market`).
//!
//! Filters are parsed once into a [`SubjectPattern`]; [`SubjectPattern::matches`]
//! does not allocate.
//!
//! ```
//! use event_core::subject::SubjectPattern;
//!
//! let p = SubjectPattern::parse("events.*.forex.>").unwrap();
//! assert!(p.matches("events.market.forex.usd"));
//! assert!(!p.matches("events.market.forex"));
//! assert!(SubjectPattern::parse("events.mark*").is_err());
//! ```

use crate::error::{Error, Result};

/// Longest subject or filter accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 1024;
/// Longest consumer (durable) name accepted, in bytes.
pub const MAX_CONSUMER_NAME_LEN: usize = 255;

fn check_token(input: &str, token: &str, what: &str) -> Result<()> {
    if token.is_empty() {
        return Err(Error::invalid_subject(
            input,
            format!("{what} has an empty token"),
        ));
    }
    if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid_subject(
            input,
            format!("{what} contains whitespace or a control character ({c:?})"),
        ));
    }
    Ok(())
}

fn check_literal_token(input: &str, token: &str, what: &str) -> Result<()> {
    check_token(input, token, what)?;
    if token.contains(['*', '>']) {
        return Err(Error::invalid_subject(
            input,
            format!("{what} must not contain wildcards (`*`, `>`)"),
        ));
    }
    Ok(())
}

fn check_len(input: &str, what: &str) -> Result<()> {
    if input.is_empty() {
        return Err(Error::invalid_subject(input, format!("{what} is empty")));
    }
    if input.len() > MAX_SUBJECT_LEN {
        return Err(Error::invalid_subject(
            truncate_for_error(input),
            format!("{what} is longer than {MAX_SUBJECT_LEN} bytes"),
        ));
    }
    Ok(())
}

fn truncate_for_error(input: &str) -> String {
    let mut end = 64.min(input.len());
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &input[..end])
}

/// Validates a category: exactly one token, no wildcards.
pub fn validate_category(category: &str) -> Result<()> {
    check_len(category, "category")?;
    if category.contains('.') {
        return Err(Error::invalid_subject(
            category,
            "category must be a single token (no `.`)",
        ));
    }
    check_literal_token(category, category, "category")
}

/// Validates a topic: one or more tokens, no wildcards.
pub fn validate_topic(topic: &str) -> Result<()> {
    check_len(topic, "topic")?;
    topic
        .split('.')
        .try_for_each(|t| check_literal_token(topic, t, "topic"))
}

/// Validates a subject to publish to: one or more tokens, no wildcards.
pub fn validate_subject(subject: &str) -> Result<()> {
    check_len(subject, "subject")?;
    // fast path: printable ASCII without wildcards and without empty tokens
    if is_plain_subject(subject.as_bytes()) {
        return Ok(());
    }
    subject
        .split('.')
        .try_for_each(|t| check_literal_token(subject, t, "subject"))
}

/// Whether `bytes` is a non-empty run of printable ASCII tokens (no space,
/// control byte, DEL, non-ASCII byte, `*` or `>`) separated by single dots,
/// without a leading or trailing dot. Exact, eight bytes at a time (SWAR):
/// `false` sends the caller to the per-token checks that explain the error
/// (or accept non-ASCII tokens).
fn is_plain_subject(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const LOWS: u64 = !HIGHS;
    // high bit set exactly in the lanes of `x` (7-bit lanes) equal to `b`
    let eq = |x: u64, b: u8| {
        let d = x ^ (ONES * u64::from(b));
        !(((d & LOWS) + LOWS) | d) & HIGHS
    };
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if first == b'.' || last == b'.' {
        return false;
    }
    // `live` marks the lanes holding subject bytes; `carry` is the high bit
    // of a dot in the last lane of the previous word. Returns the carry for
    // the next word, or `None` for a byte or dot pair the fast path refuses.
    let word = |v: u64, live: u64, carry: u64| -> Option<u64> {
        let a = v & LOWS;
        // lanes below 0x21 (space and controls): no carry leaves a lane
        let low = !(a + ONES * 0x5F) & HIGHS;
        let bad = (v & HIGHS) | low | eq(a, 0x7F) | eq(a, b'*') | eq(a, b'>');
        if bad & live != 0 {
            return None;
        }
        let dots = eq(a, b'.') & live;
        // a dot right after a dot (this word, or the last lane of the previous one)
        if dots & ((dots << 8) | carry) != 0 {
            return None;
        }
        Some((dots >> 56) & 0x80)
    };
    let Some(last) = bytes.last_chunk::<8>() else {
        // shorter than a word: one padded word
        let mut padded = [0u8; 8];
        padded[..bytes.len()].copy_from_slice(bytes);
        let live = (1u64 << (8 * bytes.len())) - 1;
        return word(u64::from_le_bytes(padded), live, 0).is_some();
    };
    let mut carry = 0;
    let mut rest = bytes;
    while let Some((chunk, tail)) = rest.split_first_chunk::<8>() {
        match word(u64::from_le_bytes(*chunk), u64::MAX, carry) {
            Some(next) => carry = next,
            None => return false,
        }
        rest = tail;
    }
    // the last (overlapping) eight bytes cover the remainder, and the dot
    // pair across its start lies inside them
    rest.is_empty() || word(u64::from_le_bytes(*last), u64::MAX, 0).is_some()
}

/// The category token of `subject` under a provider whose prefix is
/// `prefix`: the token right after as many tokens as the prefix has
/// (`{prefix}.{category}.{topic}`), or `None` when the subject has no such
/// token. The prefix's tokens are counted, not compared: under a one-token
/// prefix it is the subject's second token, whatever its first. Use it
/// where an event's category is derived from its subject, so a prefix of
/// several tokens (`acme.events`) gives the category, not the prefix's
/// second token.
///
/// ```
/// use event_core::subject::category_of;
///
/// assert_eq!(category_of("events.orders.created", "events"), Some("orders"));
/// assert_eq!(category_of("acme.events.orders.created", "acme.events"), Some("orders"));
/// assert_eq!(category_of("acme.events", "acme.events"), None);
/// ```
pub fn category_of<'a>(subject: &'a str, prefix: &str) -> Option<&'a str> {
    subject.split('.').nth(prefix.split('.').count())
}

/// Validates a publish subject and checks that it lies under `prefix` with at
/// least a category and a topic token: `{prefix}.{category}.{topic}...`.
pub fn validate_publish_subject(subject: &str, prefix: &str) -> Result<()> {
    validate_subject(subject)?;
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| {
            Error::invalid_subject(
                subject,
                format!("subject must start with the prefix `{prefix}.`"),
            )
        })?;
    if !rest.contains('.') {
        return Err(Error::invalid_subject(
            subject,
            format!("subject must be `{prefix}.<category>.<topic>`"),
        ));
    }
    Ok(())
}

/// Validates a subscription filter (wildcards allowed, see the module docs).
pub fn validate_filter(filter: &str) -> Result<()> {
    SubjectPattern::parse(filter).map(|_| ())
}

/// Parses a subscription filter for a provider whose subjects start with
/// `prefix` (see [`validate_publish_subject`]): a filter that can match
/// none of them (`orders.>` under the prefix `events`, or `events.orders`,
/// which lacks the topic) is [`Error::InvalidSubject`] naming the prefix,
/// so a subscription cannot wait silently for events that can never come.
/// Providers call it in `subscribe` and `subscribe_durable`, so the mistake
/// shows the same way on every backend.
///
/// ```
/// use event_core::subject::validate_filter_for_prefix;
///
/// assert!(validate_filter_for_prefix("events.orders.>", "events").is_ok());
/// assert!(validate_filter_for_prefix("*.orders.*", "events").is_ok());
/// assert!(validate_filter_for_prefix(">", "events").is_ok());
/// assert!(validate_filter_for_prefix("orders.>", "events").is_err());
/// assert!(validate_filter_for_prefix("events.orders", "events").is_err());
/// ```
pub fn validate_filter_for_prefix(filter: &str, prefix: &str) -> Result<SubjectPattern> {
    let pattern = SubjectPattern::parse(filter)?;
    if pattern.can_match_under(prefix) {
        Ok(pattern)
    } else {
        Err(Error::invalid_subject(
            filter,
            format!(
                "the filter matches no subject this provider publishes: they are \
                 `{prefix}.<category>.<topic>`"
            ),
        ))
    }
}

/// Validates a consumer (durable) name: non-empty, at most
/// [`MAX_CONSUMER_NAME_LEN`] bytes, and none of whitespace, control
/// characters, `.`, `*`, `>`, `/`, `\` or `%` (valid on every provider:
/// nats-server builds a consumer's ack subjects with its name inside a
/// format string, so a `%` garbles every one of them).
pub fn validate_consumer_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_subject(name, "consumer name is empty"));
    }
    if name.len() > MAX_CONSUMER_NAME_LEN {
        return Err(Error::invalid_subject(
            truncate_for_error(name),
            format!("consumer name is longer than {MAX_CONSUMER_NAME_LEN} bytes"),
        ));
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\' | '%')
    }) {
        return Err(Error::invalid_subject(
            name,
            format!("consumer name must not contain {c:?}"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Literal(Box<str>),
    /// `*`: exactly one token.
    Single,
    /// `>`: one or more tokens (last token only).
    Tail,
}

/// A parsed subject filter.
///
/// Parse once with [`SubjectPattern::parse`], then match many subjects;
/// matching walks the subject's bytes once and never allocates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectPattern {
    raw: Box<str>,
    tokens: Box<[Token]>,
}

impl SubjectPattern {
    /// Parses and validates a filter.
    pub fn parse(filter: &str) -> Result<Self> {
        check_len(filter, "filter")?;
        let count = filter.split('.').count();
        let mut tokens = Vec::with_capacity(count);
        for (i, t) in filter.split('.').enumerate() {
            check_token(filter, t, "filter")?;
            let token = match t {
                "*" => Token::Single,
                ">" if i + 1 == count => Token::Tail,
                ">" => {
                    return Err(Error::invalid_subject(
                        filter,
                        "`>` is only allowed as the last token",
                    ));
                }
                _ if t.contains(['*', '>']) => {
                    return Err(Error::invalid_subject(
                        filter,
                        "wildcards `*` and `>` must be whole tokens",
                    ));
                }
                _ => Token::Literal(t.into()),
            };
            tokens.push(token);
        }
        Ok(Self {
            raw: filter.into(),
            tokens: tokens.into_boxed_slice(),
        })
    }

    /// The filter as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the filter has no wildcards (matches exactly one subject).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// The literal token at `index`, or `None` for a wildcard or past the end.
    /// Useful for indexing (for example by category, token 1).
    pub fn literal_token(&self, index: usize) -> Option<&str> {
        match self.tokens.get(index)? {
            Token::Literal(s) => Some(s),
            _ => None,
        }
    }

    /// Whether some subject `<prefix>.<category>.<topic>` (what
    /// [`validate_publish_subject`] accepts under `prefix`) matches.
    pub fn can_match_under(&self, prefix: &str) -> bool {
        match self.after_prefix(prefix) {
            // a category and a topic (of one or more tokens) must follow
            Ok(rest) => !matches!(rest, [] | [Token::Literal(_) | Token::Single]),
            Err(all) => all,
        }
    }

    /// The tokens after those that match `prefix`'s; `Err(true)` when a
    /// `>` takes the prefix and all that follows, `Err(false)` when the
    /// pattern does not match the prefix.
    fn after_prefix(&self, prefix: &str) -> std::result::Result<&[Token], bool> {
        let mut tokens = self.tokens.iter();
        for expected in prefix.split('.') {
            match tokens.next() {
                Some(Token::Tail) => return Err(true),
                Some(Token::Single) => {}
                Some(Token::Literal(t)) if **t == *expected => {}
                _ => return Err(false),
            }
        }
        Ok(tokens.as_slice())
    }

    /// Whether every subject `<prefix>.<category>.<topic>` (what
    /// [`validate_publish_subject`] accepts under `prefix`) matches: `>`,
    /// `<prefix>.>`, `<prefix>.*.>` and the like. A provider that validates
    /// what it stores can then skip [`matches`](Self::matches) for such a
    /// filter.
    ///
    /// ```
    /// use event_core::SubjectPattern;
    ///
    /// let all = |f: &str| SubjectPattern::parse(f).unwrap().matches_all_under("events");
    /// assert!(all("events.>") && all(">") && all("*.*.>"));
    /// assert!(!all("events.orders.>") && !all("events.*.*") && !all("events.*.*.>"));
    /// ```
    pub fn matches_all_under(&self, prefix: &str) -> bool {
        match self.after_prefix(prefix) {
            // a category and a topic of one or more tokens follow
            Ok(rest) => matches!(rest, [Token::Tail] | [Token::Single, Token::Tail]),
            Err(all) => all,
        }
    }

    /// Whether `subject` matches. Never allocates; walks the subject's bytes
    /// once.
    pub fn matches(&self, subject: &str) -> bool {
        let s = subject.as_bytes();
        // start of the current subject token; `len + 1` once every token
        // has been consumed
        let mut pos = 0;
        for token in self.tokens.iter() {
            if pos > s.len() {
                return false; // the subject has fewer tokens than the pattern
            }
            match token {
                // one or more tokens, each non-empty
                Token::Tail => return is_token_run(&s[pos..]),
                Token::Single => {
                    let end = s[pos..]
                        .iter()
                        .position(|&b| b == b'.')
                        .map_or(s.len(), |i| pos + i);
                    if end == pos {
                        return false; // empty token
                    }
                    pos = end + 1;
                }
                Token::Literal(lit) => {
                    let lit = lit.as_bytes();
                    if !s[pos..].starts_with(lit) {
                        return false;
                    }
                    let end = pos + lit.len();
                    if end < s.len() && s[end] != b'.' {
                        return false;
                    }
                    pos = end + 1;
                }
            }
        }
        pos == s.len() + 1
    }
}

/// Whether `bytes` is one or more non-empty `.`-separated tokens (no
/// leading, trailing or doubled dot).
fn is_token_run(bytes: &[u8]) -> bool {
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            first != b'.' && last != b'.' && !bytes.windows(2).any(|w| w == b"..")
        }
        _ => false,
    }
}

impl std::fmt::Display for SubjectPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for SubjectPattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// One-off match of `subject` against `filter`; returns `false` for an
/// invalid filter. Parse a [`SubjectPattern`] instead when matching often.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    SubjectPattern::parse(filter).is_ok_and(|p| p.matches(subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time definition that `is_plain_subject` must equal.
    fn plain_reference(bytes: &[u8]) -> bool {
        let mut prev_dot = true;
        for &b in bytes {
            match b {
                b'.' if prev_dot => return false,
                b'.' => prev_dot = true,
                b'*' | b'>' | 0..=0x20 | 0x7F.. => return false,
                _ => prev_dot = false,
            }
        }
        !prev_dot
    }

    #[test]
    fn filters_that_can_match_nothing_under_the_prefix() {
        for ok in [
            ">",
            "events.>",
            "*.>",
            "events.orders.>",
            "events.*.*",
            "*.orders.created",
            "events.orders.created.eu",
            "events.*.>",
        ] {
            assert!(validate_filter_for_prefix(ok, "events").is_ok(), "{ok}");
        }
        for never in [
            "orders.>",
            "events",
            "events.orders",
            "*.*",
            "*",
            "other.orders.created",
        ] {
            match validate_filter_for_prefix(never, "events") {
                Err(Error::InvalidSubject { reason, .. }) => {
                    assert!(reason.contains("`events.<category>.<topic>`"), "{reason}");
                }
                other => panic!("{never}: {other:?}"),
            }
        }
        // a prefix of several tokens
        assert!(validate_filter_for_prefix("acme.*.orders.x", "acme.events").is_ok());
        assert!(validate_filter_for_prefix("acme.>", "acme.events").is_ok());
        assert!(validate_filter_for_prefix("acme.events.orders", "acme.events").is_err());
        assert!(validate_filter_for_prefix("acme.other.orders.x", "acme.events").is_err());
        // bad syntax stays a syntax error
        assert!(validate_filter_for_prefix("events.>.x", "events").is_err());
    }

    /// `can_match_under` and `matches_all_under` equal their definitions,
    /// checked by brute force: every filter of up to four tokens over a
    /// small alphabet (wildcards included) against every subject of up to
    /// five tokens that `validate_publish_subject` accepts under the
    /// prefix.
    #[test]
    fn prefix_reachability_equals_brute_force() {
        fn all(tokens: &[&str], max: usize) -> Vec<String> {
            let mut out: Vec<Vec<&str>> = vec![vec![]];
            let mut level = vec![vec![]];
            for _ in 0..max {
                level = level
                    .iter()
                    .flat_map(|l: &Vec<&str>| {
                        tokens.iter().map(move |t| {
                            let mut l = l.clone();
                            l.push(t);
                            l
                        })
                    })
                    .collect();
                out.extend(level.iter().cloned());
            }
            out.into_iter()
                .filter(|l| !l.is_empty())
                .map(|l| l.join("."))
                .collect()
        }
        let filters = all(&["events", "a", "b", "*", ">"], 4);
        let subjects = all(&["events", "a", "b", "x"], 5);
        let mut checked = 0u32;
        for prefix in ["events", "a.b", "events.a"] {
            let publishable: Vec<&String> = subjects
                .iter()
                .filter(|s| validate_publish_subject(s, prefix).is_ok())
                .collect();
            for filter in &filters {
                let Ok(pattern) = SubjectPattern::parse(filter) else {
                    continue;
                };
                let some = publishable.iter().any(|s| pattern.matches(s));
                let every = publishable.iter().all(|s| pattern.matches(s));
                assert_eq!(
                    pattern.can_match_under(prefix),
                    some,
                    "can_match_under({prefix:?}) of {filter:?}"
                );
                assert_eq!(
                    validate_filter_for_prefix(filter, prefix).is_ok(),
                    some,
                    "validate_filter_for_prefix({filter:?}, {prefix:?})"
                );
                assert_eq!(
                    pattern.matches_all_under(prefix),
                    every,
                    "matches_all_under({prefix:?}) of {filter:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 1_000, "{checked}");
    }

    #[test]
    fn swar_plain_subject_check_equals_the_bytewise_definition() {
        // every string over a small alphabet that covers each class, at
        // lengths around the 8-byte word boundaries, plus random ones
        let alphabet: &[u8] = b"a.*> \x7f\x80Z\x1f~!";
        let alphabet: Vec<u8> = alphabet.to_vec();
        let mut checked = 0u32;
        for len in 0..=4usize {
            let mut idx = vec![0usize; len];
            loop {
                let s: Vec<u8> = idx.iter().map(|&i| alphabet[i]).collect();
                assert_eq!(is_plain_subject(&s), plain_reference(&s), "{s:?}");
                checked += 1;
                let mut k = 0;
                while k < len {
                    idx[k] += 1;
                    if idx[k] < alphabet.len() {
                        break;
                    }
                    idx[k] = 0;
                    k += 1;
                }
                if k == len {
                    break;
                }
            }
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let mut s = Vec::with_capacity(len);
            let mut y = x;
            for _ in 0..len {
                y = y.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                // mostly letters and dots, so that valid subjects are common
                let r = (y >> 33) % 16;
                s.push(match r {
                    0..=9 => b'a' + r as u8,
                    10 | 11 => b'.',
                    _ => alphabet[((y >> 40) as usize) % alphabet.len()],
                });
            }
            assert_eq!(is_plain_subject(&s), plain_reference(&s), "{s:?}");
            checked += 1;
        }
        assert!(checked > 200_000);
    }

    fn m(filter: &str, subject: &str) -> bool {
        SubjectPattern::parse(filter).unwrap().matches(subject)
    }

    #[test]
    fn literal_and_wildcards() {
        assert!(m("events.market.forex", "events.market.forex"));
        assert!(!m("events.market.forex", "events.market.forex.usd"));
        assert!(!m("events.market.forex", "events.market"));
        assert!(m("events.*.forex", "events.market.forex"));
        assert!(!m("events.*.forex", "events.market.x.forex"));
        assert!(m("events.market.>", "events.market.forex"));
        assert!(m("events.market.>", "events.market.forex.usd.cny"));
        assert!(!m("events.market.>", "events.market"));
        assert!(!m("events.market.>", "events.marketing.x"));
        assert!(m(">", "a"));
        assert!(m("*", "a"));
        assert!(!m("*", "a.b"));
        assert!(m("*.>", "a.b"));
        assert!(!m("*.>", "a"));
    }

    #[test]
    fn literal_prefixes_are_whole_tokens() {
        assert!(!m("events.mark", "events.market"));
        assert!(!m("events.market", "events.mark"));
        assert!(!m("events.market.>", "events.market"));
        assert!(!m("events.market.>", "events.market."));
        assert!(m("a.*.c", "a.bb.c"));
        assert!(!m("a.*.c", "a.bb.cc"));
        assert!(!m("a.*", ""));
        assert!(!m(">", ""));
        assert!(m("ünï.*", "ünï.cödé"));
    }

    #[test]
    fn unicode_subjects_use_the_slow_path() {
        validate_subject("events.ünï.cödé").unwrap();
        // an em space is whitespace, DEL and NEL are control characters
        assert!(validate_subject("events.a\u{2003}b.c").is_err());
        assert!(validate_subject("events.a\u{7f}.c").is_err());
        assert!(validate_subject("events.a\u{85}b.c").is_err());
        assert!(validate_subject("events.ü*.c").is_err());
    }

    #[test]
    fn malformed_subjects_never_match() {
        assert!(!m("events.*.x", "events..x"));
        assert!(!m("events.>", "events."));
        assert!(!m("a.b", "a.b."));
        // `>` stands for well-formed tokens only
        assert!(!m("events.>", "events.a."));
        assert!(!m("events.>", "events.a..b"));
        assert!(!m("events.>", "events..a"));
        assert!(!m("*.>", "a.b.c."));
        assert!(m("events.>", "events.a.b"));
    }

    /// The definition of matching, token lists compared one by one: a
    /// subject with an empty token matches nothing.
    fn match_reference(filter: &str, subject: &str) -> bool {
        let f: Vec<&str> = filter.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        if s.iter().any(|t| t.is_empty()) {
            return false;
        }
        for (i, ft) in f.iter().enumerate() {
            if *ft == ">" {
                return s.len() > i;
            }
            match s.get(i) {
                Some(st) if *ft == "*" || ft == st => {}
                _ => return false,
            }
        }
        f.len() == s.len()
    }

    /// A filter said to match every publishable subject under a prefix
    /// matches each of them, and any other filter misses one of a few.
    #[test]
    fn filters_matching_every_subject_under_the_prefix() {
        let tokens = ["events", "a", "b", "*", ">", "x"];
        let subjects = [
            "events.a.b",
            "events.b.a",
            "events.a.b.c",
            "events.x.y.z.w",
            "events.ab.b",
            "events.a.a.a.a.a",
            "events.é.ü",
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut all = 0;
        for _ in 0..50_000 {
            let len = 1 + (next() % 5) as usize;
            let filter: Vec<&str> = (0..len)
                .map(|_| tokens[(next() % tokens.len() as u64) as usize])
                .collect();
            let Ok(pattern) = SubjectPattern::parse(&filter.join(".")) else {
                continue;
            };
            let every = subjects.iter().all(|s| {
                validate_publish_subject(s, "events").unwrap();
                pattern.matches(s)
            });
            assert_eq!(pattern.matches_all_under("events"), every, "{pattern}");
            all += u32::from(every);
        }
        assert!(all > 100, "{all}");
        let two = SubjectPattern::parse("a.b.>").unwrap();
        assert!(two.matches_all_under("a.b"));
        assert!(!two.matches_all_under("a.c"));
        assert!(
            SubjectPattern::parse("*.*.*.>")
                .unwrap()
                .matches_all_under("a.b")
        );
        assert!(
            !SubjectPattern::parse("*.*.*.>")
                .unwrap()
                .matches_all_under("a")
        );
    }

    #[test]
    fn matching_equals_the_token_by_token_definition() {
        // tokens that share prefixes, wildcards, and the empty token (which
        // makes a filter invalid and a subject malformed)
        let tokens = ["a", "b", "ab", "*", ">", ""];
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut checked = 0u32;
        for _ in 0..200_000 {
            let filter_len = 1 + (next() % 4) as usize;
            let subject_len = 1 + (next() % 5) as usize;
            let filter: Vec<&str> = (0..filter_len)
                .map(|_| tokens[(next() % 6) as usize])
                .collect();
            let subject: Vec<&str> = (0..subject_len)
                .map(|_| tokens[[0, 1, 2, 5][(next() % 4) as usize]])
                .collect();
            let (filter, subject) = (filter.join("."), subject.join("."));
            let Ok(pattern) = SubjectPattern::parse(&filter) else {
                continue;
            };
            assert_eq!(
                pattern.matches(&subject),
                match_reference(&filter, &subject),
                "{filter:?} against {subject:?}"
            );
            checked += 1;
        }
        assert!(checked > 50_000);
    }

    #[test]
    fn bad_filters_are_rejected_with_the_rule() {
        for bad in [
            "",
            "events..x",
            "events.>.x",
            "events.mark*",
            "events.a>",
            "ev ents.x",
            ".a",
            "a.",
        ] {
            let err = SubjectPattern::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidSubject { .. }), "{bad}: {err}");
        }
        let long = "a.".repeat(MAX_SUBJECT_LEN);
        assert!(SubjectPattern::parse(&long).is_err());
    }

    #[test]
    fn publish_subjects() {
        validate_subject("events.market.forex").unwrap();
        for bad in ["events.*.x", "events.>", "events..x", "", "a b", "a\n"] {
            assert!(validate_subject(bad).is_err(), "{bad}");
        }
        validate_publish_subject("events.market.forex", "events").unwrap();
        validate_publish_subject("events.market.forex.usd", "events").unwrap();
        assert!(validate_publish_subject("events.market", "events").is_err());
        assert!(validate_publish_subject("eventsx.market.forex", "events").is_err());
        assert!(validate_publish_subject("other.market.forex", "events").is_err());
    }

    #[test]
    fn categories_topics_and_consumer_names() {
        validate_category("market").unwrap();
        assert!(validate_category("mar.ket").is_err());
        assert!(validate_category("*").is_err());
        assert!(validate_category("").is_err());
        validate_topic("forex.usd_cny").unwrap();
        assert!(validate_topic("forex..x").is_err());
        assert!(validate_topic("forex.>").is_err());
        validate_consumer_name("analyst-1_a").unwrap();
        for bad in ["", "a.b", "a*", "a>", "a b", "a/b", "a\\b", "a%b", "%d"] {
            assert!(validate_consumer_name(bad).is_err(), "{bad}");
        }
        assert!(validate_consumer_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn pattern_introspection() {
        let p = SubjectPattern::parse("events.market.>").unwrap();
        assert_eq!(p.literal_token(1), Some("market"));
        assert_eq!(p.literal_token(2), None);
        assert!(!p.is_literal());
        assert!(SubjectPattern::parse("a.b").unwrap().is_literal());
        assert_eq!(p.to_string(), "events.market.>");
        assert!(subject_matches("a.*", "a.b"));
        assert!(!subject_matches("a.b*", "a.bc"));
    }

    /// The length limits are inclusive: a subject or filter of exactly
    /// [`MAX_SUBJECT_LEN`] bytes is valid, one byte more is not; the same for
    /// consumer names and [`MAX_CONSUMER_NAME_LEN`].
    #[test]
    fn length_limits_are_inclusive() {
        let at_limit = format!("events.{}", "a".repeat(MAX_SUBJECT_LEN - 7));
        assert_eq!(at_limit.len(), MAX_SUBJECT_LEN);
        validate_subject(&at_limit).unwrap();
        assert!(SubjectPattern::parse(&at_limit).unwrap().matches(&at_limit));
        let over = format!("{at_limit}a");
        for err in [
            validate_subject(&over).unwrap_err(),
            SubjectPattern::parse(&over).unwrap_err(),
        ] {
            assert!(err.to_string().contains("longer than 1024 bytes"), "{err}");
        }
        validate_consumer_name(&"x".repeat(MAX_CONSUMER_NAME_LEN)).unwrap();
        let err = validate_consumer_name(&"x".repeat(MAX_CONSUMER_NAME_LEN + 1)).unwrap_err();
        assert!(err.to_string().contains("longer than 255 bytes"), "{err}");
    }

    /// `validate_filter` accepts what `SubjectPattern::parse` accepts and
    /// refuses the rest.
    #[test]
    fn validate_filter_refuses_bad_filters() {
        for ok in ["events.>", "events.*.x", ">", "*"] {
            validate_filter(ok).unwrap();
        }
        for bad in ["", "events..x", "events.>.x", "events.mark*", "a b"] {
            assert!(
                matches!(validate_filter(bad), Err(Error::InvalidSubject { .. })),
                "{bad}"
            );
        }
    }

    /// Each bad filter's error names the rule it broke.
    #[test]
    fn bad_filter_errors_name_the_rule() {
        for (bad, rule) in [
            ("events.>.x", "`>` is only allowed as the last token"),
            (">.x", "`>` is only allowed as the last token"),
            ("events.mark*", "must be whole tokens"),
            ("events.a>", "must be whole tokens"),
            ("events..x", "empty token"),
        ] {
            match SubjectPattern::parse(bad) {
                Err(Error::InvalidSubject { reason, .. }) => {
                    assert!(reason.contains(rule), "{bad}: {reason}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    /// An over-long input is echoed in the error by its first 64 bytes at
    /// most, cut back to a character boundary, then `…`.
    #[test]
    fn long_error_input_shows_its_start() {
        // `€` is three bytes: byte 64 falls inside the 22nd, so 21 are kept
        let subject = "€".repeat(500);
        match validate_subject(&subject) {
            Err(Error::InvalidSubject { subject: shown, .. }) => {
                assert_eq!(shown, format!("{}…", "€".repeat(21)));
            }
            other => panic!("{other:?}"),
        }
        let name = "n".repeat(300);
        match validate_consumer_name(&name) {
            Err(Error::InvalidSubject { subject: shown, .. }) => {
                assert_eq!(shown, format!("{}…", "n".repeat(64)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_error_input_is_truncated_on_a_char_boundary() {
        let s = "é".repeat(2000);
        let err = validate_subject(&s).unwrap_err();
        assert!(err.to_string().len() < 300);
    }
}
