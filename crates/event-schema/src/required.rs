//! The required-fields check on its own (a schema without a JSON Schema).
//!
//! `jsonschema` checks `{"type": "object", "required": [...]}` by walking
//! the payload's members and testing each against every required name. With
//! `serde_json`'s default `Map` (a `BTreeMap`, keys iterated in byte order)
//! one merge of the sorted keys with the sorted required names does the same
//! work with one comparison per key, and that comparison is nearly always
//! decided by the names' first eight bytes, without `memcmp`.
//!
//! Correctness does not depend on the iteration order: the merge only ever
//! claims a name is present after finding an equal key, and whenever it
//! cannot conclude that every name is present (a name is missing, or the map
//! iterates in insertion order because some crate in the build enabled
//! `serde_json/preserve_order`), the result comes from one exact lookup per
//! name.

use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Required top-level field names, prepared for [`RequiredFields::all_present`].
#[derive(Debug)]
pub(crate) struct RequiredFields {
    /// The distinct names in byte order, each with its [`head`].
    sorted: Box<[(u64, Box<str>)]>,
}

/// Above this many payload members per required name, look the names up
/// instead of walking the members.
const MEMBERS_PER_NAME: usize = 8;

impl RequiredFields {
    /// Prepares `names` (duplicates are ignored).
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a String>) -> Self {
        let mut sorted: Vec<(u64, Box<str>)> = names
            .into_iter()
            .map(|name| (head(name.as_bytes()), Box::from(name.as_str())))
            .collect();
        sorted.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        sorted.dedup_by(|a, b| a.1 == b.1);
        Self {
            sorted: sorted.into_boxed_slice(),
        }
    }

    /// Whether every name is a key of `object`.
    #[inline]
    pub(crate) fn all_present(&self, object: &Map<String, Value>) -> bool {
        let mut wanted = self.sorted.iter();
        let Some(mut want) = wanted.next() else {
            return true;
        };
        if object.len() < self.sorted.len() {
            return false;
        }
        if object.len() <= MEMBERS_PER_NAME * self.sorted.len() {
            for key in object.keys() {
                match compare(key, want) {
                    Ordering::Less => {}
                    Ordering::Equal => match wanted.next() {
                        Some(next) => want = next,
                        None => return true,
                    },
                    // In byte order `want` would have come by now: it is
                    // missing, or the map does not iterate in byte order.
                    Ordering::Greater => break,
                }
            }
        }
        self.looked_up(object)
    }

    /// The exact answer by one lookup per name, whatever the map's order.
    #[cold]
    #[inline(never)]
    fn looked_up(&self, object: &Map<String, Value>) -> bool {
        self.sorted
            .iter()
            .all(|(_, name)| object.contains_key(&**name))
    }
}

/// `key` compared with the prepared name `want`, as `str` orders them.
#[inline]
fn compare(key: &str, (want_head, want): &(u64, Box<str>)) -> Ordering {
    // Heads order names the way `str` does whenever they differ (a shorter
    // name reads as if padded with zero bytes, and a prefix sorts first).
    match head(key.as_bytes()).cmp(want_head) {
        Ordering::Equal if key.len() <= 8 && want.len() <= 8 => {
            // Equal heads of names of at most eight bytes: one name is the
            // other followed by zero bytes, so the shorter sorts first.
            key.len().cmp(&want.len())
        }
        Ordering::Equal => key.cmp(want),
        unequal => unequal,
    }
}

/// The first eight bytes of `bytes` as a big-endian word, zero-padded.
#[inline]
fn head(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    if let Some(word) = bytes.first_chunk::<8>() {
        return u64::from_be_bytes(*word);
    }
    if let (Some(first), Some(last)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        // 4..=7 bytes: two overlapping reads; the overlap ORs equal bytes.
        let first = u64::from(u32::from_be_bytes(*first));
        let last = u64::from(u32::from_be_bytes(*last));
        return (first << 32) | (last << (8 * (8 - len)));
    }
    match bytes {
        [] => 0,
        // 1..=3 bytes: the first, middle and last (overlapping for 1 and 2).
        [first, ..] => {
            let middle = bytes.get(len / 2).copied().unwrap_or(0);
            let last = bytes.get(len - 1).copied().unwrap_or(0);
            (u64::from(*first) << 56)
                | (u64::from(middle) << (56 - 8 * (len / 2)))
                | (u64::from(last) << (56 - 8 * (len - 1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn padded(bytes: &[u8]) -> u64 {
        let mut word = [0u8; 8];
        for (slot, byte) in word.iter_mut().zip(bytes) {
            *slot = *byte;
        }
        u64::from_be_bytes(word)
    }

    #[test]
    fn head_is_the_zero_padded_prefix() {
        let samples: [&[u8]; 12] = [
            b"",
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            b"abcde",
            b"abcdef",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefghi",
            b"a\0",
            "é€".as_bytes(),
        ];
        for bytes in samples {
            assert_eq!(head(bytes), padded(bytes), "{bytes:?}");
        }
    }

    #[test]
    fn compare_agrees_with_str_order() {
        let names = [
            "",
            "a",
            "a\0",
            "a\0\0",
            "ab",
            "abc",
            "abcdefgh",
            "abcdefgh\0",
            "abcdefghi",
            "abcdefgj",
            "b",
            "order_id",
            "order_ids",
            "é",
            "\u{7f}",
            "zzzzzzzzzzzz",
        ];
        for key in names {
            for want in names {
                let prepared = (head(want.as_bytes()), Box::from(want));
                assert_eq!(
                    compare(key, &prepared),
                    key.cmp(want),
                    "{key:?} vs {want:?}"
                );
            }
        }
    }

    fn fields(names: &[&str]) -> RequiredFields {
        let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        RequiredFields::new(&owned)
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn all_present_is_exact() {
        let required = fields(&["order_id", "amount", "a\0", "customer_email_address"]);
        let full = object(json!({
            "a\u{0}": 1, "amount": 2, "customer_email_address": 3, "order_id": 4, "z": 5, "a": 6
        }));
        assert!(required.all_present(&full));
        for missing in ["a\0", "amount", "customer_email_address", "order_id"] {
            let mut partial = full.clone();
            partial.remove(missing);
            assert!(!required.all_present(&partial), "{missing}");
            // Same number of members, one of them a near miss.
            partial.insert(format!("{missing}x"), Value::Null);
            assert!(!required.all_present(&partial), "{missing}");
        }
        assert!(fields(&[]).all_present(&Map::new()));
        assert!(!fields(&["a"]).all_present(&Map::new()));
        assert!(fields(&["a", "a"]).all_present(&object(json!({"a": null}))));
    }

    #[test]
    fn all_present_with_many_members_looks_names_up() {
        let required = fields(&["k7", "k42"]);
        let mut map = Map::new();
        for i in 0..100 {
            map.insert(format!("k{i}"), Value::from(i));
        }
        assert!(required.all_present(&map));
        map.remove("k42");
        assert!(!required.all_present(&map));
    }
}
