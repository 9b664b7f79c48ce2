//! The CloudEvent id of an event whose own id is empty: derived from the
//! event's content, so that the same event always gets the same id.

use event_core::Event;

/// Prefix of a derived CloudEvent id: `evt-derived-<32 hex digits>`.
pub const DERIVED_ID_PREFIX: &str = "evt-derived-";

/// FNV-1a, 128-bit: small, dependency-free and stable. The id needs to be a
/// deterministic function of the content, not a secret: whoever controls an
/// event's content can choose its id anyway.
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u128::from(*b)).wrapping_mul(Self::PRIME);
        }
    }

    fn len(&mut self, len: usize) {
        // usize is at most 64 bits on every supported target.
        self.bytes(&(len as u64).to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.bytes(s.as_bytes());
    }

    fn json(&mut self, value: &serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Null => self.bytes(b"n"),
            Value::Bool(true) => self.bytes(b"t"),
            Value::Bool(false) => self.bytes(b"f"),
            Value::Number(n) => {
                self.bytes(b"d");
                self.str(&n.to_string());
            }
            Value::String(s) => {
                self.bytes(b"s");
                self.str(s);
            }
            Value::Array(items) => {
                self.bytes(b"a");
                self.len(items.len());
                for item in items {
                    self.json(item);
                }
            }
            Value::Object(map) => {
                self.bytes(b"o");
                self.len(map.len());
                // Sorted explicitly: with serde_json's `preserve_order` the map
                // iterates in insertion order, which equality ignores.
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (key, value) in entries {
                    self.str(key);
                    self.json(value);
                }
            }
        }
    }
}

/// The CloudEvent id for `event` when its own id is empty:
/// [`DERIVED_ID_PREFIX`] followed by the 128-bit FNV-1a hash, in lowercase
/// hex, of every other field in a fixed, unambiguous encoding (lengths before
/// strings; object keys and metadata sorted). Equal events get equal ids,
/// whatever process converts them; events that differ in any field get
/// different ids (barring a hash collision). The `id` field itself is not
/// part of the hash.
pub fn derived_id(event: &Event) -> String {
    let mut h = Fnv128::new();
    h.str("a3s-event/1");
    h.str(&event.subject);
    h.str(&event.category);
    h.str(&event.event_type);
    h.bytes(&event.version.to_le_bytes());
    h.json(&event.payload);
    h.str(&event.summary);
    h.str(&event.source);
    h.bytes(&event.timestamp.to_le_bytes());
    let mut metadata: Vec<_> = event.metadata.iter().collect();
    metadata.sort_unstable();
    h.len(metadata.len());
    for (key, value) in metadata {
        h.str(key);
        h.str(value);
    }
    format!("{DERIVED_ID_PREFIX}{:032x}", h.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Event {
        let mut e = Event::typed(
            "events.a.b",
            "a",
            "t",
            2,
            "s",
            "src",
            json!({"b": 1, "a": [1.5, null, "x"]}),
        )
        .with_metadata("k1", "v1")
        .with_metadata("k2", "v2");
        e.id = String::new();
        e.timestamp = 1_700_000_000_000;
        e
    }

    #[test]
    fn the_hash_is_fnv1a_128() {
        // Reference values of the FNV-1a 128-bit hash.
        for (input, expected) in [
            (&b""[..], 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d_u128),
            (&b"a"[..], 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964),
        ] {
            let mut h = Fnv128::new();
            h.bytes(input);
            assert_eq!(h.0, expected, "{input:?}");
        }
    }

    #[test]
    fn equal_events_get_equal_ids_and_any_change_another() {
        let id = derived_id(&event());
        assert!(id.starts_with(DERIVED_ID_PREFIX));
        assert_eq!(id.len(), DERIVED_ID_PREFIX.len() + 32);
        assert_eq!(derived_id(&event()), id);
        // The value is part of the mapping: it must not change between
        // releases (consumers deduplicate across producers' versions).
        assert_eq!(id, "evt-derived-16d7b4738d0bb7ad87119acc9689b3d3");

        let changes: [fn(&mut Event); 11] = [
            |e| e.subject.push('x'),
            |e| e.category.push('x'),
            |e| e.event_type.push('x'),
            |e| e.version += 1,
            |e| e.payload = json!({"b": 1, "a": [1.5, null, "y"]}),
            |e| e.summary.push('x'),
            |e| e.source.push('x'),
            |e| e.timestamp += 1,
            |e| {
                e.metadata.insert("k3".into(), String::new());
            },
            |e| {
                e.metadata.insert("k1".into(), "v2".into());
            },
            // moving a character between adjacent fields
            |e| {
                e.subject = "events.a.".into();
                e.category = "ba".into();
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut e = event();
            change(&mut e);
            assert_ne!(derived_id(&e), id, "change {i}");
        }
        // the id field itself is not hashed
        let mut e = event();
        e.id = "anything".into();
        assert_eq!(derived_id(&e), id);
    }
}
