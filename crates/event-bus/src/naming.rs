//! Durable consumer names derived from a subscriber id and a subject filter.

/// Longest readable part taken from each input, in bytes.
const READABLE_MAX: usize = 48;

/// 64-bit FNV-1a: stable across processes, platforms and releases (unlike
/// std's `DefaultHasher`).
pub(crate) fn fnv1a64(chunks: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for chunk in chunks {
        for &b in *chunk {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// Keeps ASCII alphanumerics, `-` and `_`; everything else becomes `_`;
/// truncated to [`READABLE_MAX`] bytes.
fn sanitize(input: &str) -> String {
    input
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(READABLE_MAX)
        .collect()
}

/// The durable consumer name the bus uses for `subscriber_id` on
/// `subject`.
///
/// `{subscriber}-{subject}-{hash}`: readable parts keep ASCII alphanumerics,
/// `-` and `_` (anything else becomes `_`, each part at most 48 bytes), and
/// `hash` is 16 hex digits of a 64-bit FNV-1a over the exact inputs (with
/// the subscriber id's length, so `("a", "b.c")` and `("a.b", "c")` differ).
/// The result is valid on every provider
/// ([`validate_consumer_name`](event_core::subject::validate_consumer_name)),
/// stable across restarts and releases, and distinct for distinct inputs
/// unless their 64-bit hashes collide.
///
/// ```
/// let name = event_bus::durable_consumer_name("analyst", "events.market.>");
/// assert_eq!(name, event_bus::durable_consumer_name("analyst", "events.market.>"));
/// assert!(name.starts_with("analyst-events_market__-"));
/// event_core::subject::validate_consumer_name(&name)?;
/// # Ok::<(), event_core::Error>(())
/// ```
pub fn durable_consumer_name(subscriber_id: &str, subject: &str) -> String {
    let len = (subscriber_id.len() as u64).to_le_bytes();
    let hash = fnv1a64(&[&len, subscriber_id.as_bytes(), subject.as_bytes()]);
    format!(
        "{}-{}-{hash:016x}",
        sanitize(subscriber_id),
        sanitize(subject)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::subject::validate_consumer_name;
    use std::collections::HashSet;

    #[test]
    fn fnv_matches_reference_vectors() {
        // published FNV-1a 64 test vectors
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a64(&[b"foo", b"bar"]), fnv1a64(&[b"foobar"]));
    }

    #[test]
    fn names_are_valid_for_hostile_inputs() {
        let long = "x".repeat(1000);
        for (id, subject) in [
            ("analyst", "events.market.>"),
            ("a b/c\\d*e>f", "events.*.x"),
            ("ünïcødé", "events.ü.>"),
            ("", ""),
            (long.as_str(), long.as_str()),
            ("tab\there", "new\nline"),
        ] {
            let name = durable_consumer_name(id, subject);
            validate_consumer_name(&name).unwrap_or_else(|e| panic!("{id:?}/{subject:?}: {e}"));
        }
    }

    #[test]
    fn names_are_stable_and_distinct() {
        // pinned value: changing the derivation orphans existing durables
        assert_eq!(
            durable_consumer_name("analyst", "events.market.>"),
            "analyst-events_market__-02a64a7923280285"
        );
        let pairs = [
            ("a", "b.c"),
            ("a.b", "c"),
            ("a", "events.x.>"),
            ("a", "events.x.*"),
            ("a", "events_x_>"),
            ("a_b", "c"),
        ];
        let names: HashSet<_> = pairs
            .iter()
            .map(|(a, b)| durable_consumer_name(a, b))
            .collect();
        assert_eq!(names.len(), pairs.len());
    }

    #[test]
    fn names_stay_distinct_on_case_insensitive_stores() {
        // JetStream's file store keeps a consumer in a directory named after
        // it: on a case-insensitive file system, names that differ only in
        // case would share it. Ids that differ in case or in characters the
        // readable part replaces, and long ids that share the readable
        // prefix, must still differ when folded.
        let long_a = format!("{}a", "x".repeat(100));
        let long_b = format!("{}b", "x".repeat(100));
        let pairs = [
            ("Analyst", "events.market.>"),
            ("analyst", "events.market.>"),
            ("ANALYST", "events.market.>"),
            ("analyst", "events.Market.>"),
            ("ünï", "events.x"),
            ("ÜNÏ", "events.x"),
            ("a b", "events.x"),
            ("a/b", "events.x"),
            (long_a.as_str(), "events.x"),
            (long_b.as_str(), "events.x"),
        ];
        let folded: HashSet<_> = pairs
            .iter()
            .map(|(a, b)| durable_consumer_name(a, b).to_ascii_lowercase())
            .collect();
        assert_eq!(folded.len(), pairs.len());
    }
}
