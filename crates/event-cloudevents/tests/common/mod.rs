//! A small seeded generator of awkward events, shared by the integration
//! tests (no proptest: a failing seed is printed and reproduces exactly).
#![allow(dead_code)]

use event_core::Event;
use serde_json::{Map, Value, json};

/// SplitMix64: tiny, seeded, good enough to explore inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A string drawn from ASCII, whitespace, quotes, percent signs,
    /// controls, accented letters, CJK and emoji.
    pub fn text(&mut self, max_len: usize) -> String {
        const POOL: &[&str] = &[
            "a", "Z", "0", "9", ".", "-", "_", " ", "  ", "\"", "%", "%20", "%zz", "\t", "\n",
            "\r", "\u{0}", "\u{7f}", "é", "ß", "Ω", "路", "透", "😀", "🚀", "\u{200b}", ",", ":",
            "/", "\\", "{", "}", "ce-", "a3s",
        ];
        let len = self.below(max_len + 1);
        (0..len).map(|_| *self.pick(POOL)).collect()
    }

    /// A metadata key: plain, the odd cases named by the mapping, or random.
    pub fn key(&mut self) -> String {
        const KEYS: &[&str] = &[
            "",
            "region",
            "a.b.c",
            "X-Request-Id",
            "UPPER",
            "ключ",
            "😀",
            "with space",
            "ce-",
            "ce-traceparent",
            "ce-tracestate",
            "ce-dataschema",
            "ce-datacontenttype",
            "ce-id",
            "ce-type",
            "ce-a3scategory",
            "ce-a3smx",
            "ce-a3sxff",
            "ce-Bad",
            "a3smregion",
            "a3sx00",
            "a3scategory",
            "category",
            "0",
        ];
        if self.chance(60) {
            (*self.pick(KEYS)).to_string()
        } else {
            self.text(12)
        }
    }

    fn metadata_value(&mut self, key: &str) -> String {
        match key {
            "ce-dataschema" if self.chance(50) => (*self.pick(&[
                "https://schemas.example.com/a.json",
                "urn:x:y",
                "https://schemas.example.com/a%20b.json?q=%41#%zz",
                "HTTP://Ex.com",
                "not a url",
            ]))
            .to_string(),
            "ce-datacontenttype" if self.chance(50) => (*self.pick(&[
                "application/vnd.a3s+json",
                "application/json; charset=utf-8",
                "application/json",
                "text/plain",
                "Application/JSON",
                "application/vnd.a3s+json; charset=utf-8",
                "application/json\n",
                " text/json",
                "application/cloudevents+json",
                "text/xml",
                "",
            ]))
            .to_string(),
            _ => self.text(24),
        }
    }

    /// A JSON value of bounded depth; floats are exactly representable so that
    /// text round trips are exact whatever the parser.
    pub fn json(&mut self, depth: usize) -> Value {
        let kind = if depth == 0 {
            self.below(6)
        } else {
            self.below(8)
        };
        match kind {
            0 => Value::Null,
            1 => Value::Bool(self.chance(50)),
            2 => json!(self.next_u64()),
            3 => json!(-(self.below(1_000_000) as i64)),
            4 => json!((self.below(1 << 20) as f64) / 8.0),
            5 => Value::String(self.text(20)),
            6 => Value::Array((0..self.below(5)).map(|_| self.json(depth - 1)).collect()),
            _ => {
                let mut map = Map::new();
                for _ in 0..self.below(5) {
                    let k = self.text(8);
                    let v = self.json(depth - 1);
                    map.insert(k, v);
                }
                Value::Object(map)
            }
        }
    }

    fn maybe_empty(&mut self, s: String) -> String {
        if self.chance(10) { String::new() } else { s }
    }

    /// A random event: empty fields, extreme timestamps and versions, odd
    /// metadata, unicode everywhere, sometimes a large payload.
    pub fn event(&mut self) -> Event {
        let subject = format!("events.{}.{}", self.below(9), self.below(99));
        let subject = self.maybe_empty(subject);
        let category = self.text(10);
        let category = self.maybe_empty(category);
        let event_type = self.text(16);
        let event_type = self.maybe_empty(event_type);
        let source = self.text(16);
        let source = self.maybe_empty(source);
        // Sometimes empty (the CloudEvent id is then derived from the
        // content), sometimes awkward text instead of a generated id.
        let id = match self.below(20) {
            0 => String::new(),
            1..=4 => format!("{}x", self.text(16)),
            _ => event_core::new_event_id(),
        };
        let summary = self.text(40);
        let version = match self.below(4) {
            0 => 1,
            1 => u32::MAX,
            2 => (i32::MAX as u32) + 1,
            _ => self.next_u64() as u32,
        };
        let timestamp = match self.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => 253_402_300_799_999,
            3 => 253_402_300_800_000,
            _ => self.next_u64() % 4_000_000_000_000,
        };
        let large = self.chance(3);
        let payload = if large {
            json!({"blob": "x".repeat(300_000 + self.below(100_000)), "n": 1})
        } else {
            self.json(3)
        };
        let mut event = Event {
            id,
            subject,
            category,
            event_type,
            version,
            payload,
            summary,
            source,
            timestamp,
            metadata: Default::default(),
        };
        for _ in 0..self.below(8) {
            let key = self.key();
            let value = self.metadata_value(&key);
            event.metadata.insert(key, value);
        }
        // non-JSON data: text, or marked base64 (also under text types, for
        // bytes that are not UTF-8), and markers that do not fit
        match if large { 8 } else { self.below(8) } {
            0 => {
                let ct = *self.pick(TEXT_TYPES);
                event.payload = Value::String(self.text(30));
                event
                    .metadata
                    .insert("ce-datacontenttype".into(), ct.into());
                if self.chance(20) {
                    event
                        .metadata
                        .insert("ce-data_base64".into(), "true".into());
                }
            }
            1 => {
                let ct = if self.chance(70) {
                    *self.pick(BINARY_TYPES)
                } else {
                    *self.pick(TEXT_TYPES)
                };
                let bytes = self.bytes(40);
                let text = if self.chance(10) {
                    (*self.pick(&["AP9=", "AP8", "not base64!", "", "AP8=\n"])).to_string()
                } else {
                    base64(&bytes)
                };
                event.payload = Value::String(text);
                event
                    .metadata
                    .insert("ce-datacontenttype".into(), ct.into());
                let marker = if self.chance(80) {
                    "true"
                } else {
                    *self.pick(&["TRUE", "false", ""])
                };
                event
                    .metadata
                    .insert("ce-data_base64".into(), marker.into());
            }
            _ => {}
        }
        event
    }

    /// Random bytes, NUL and 0xFF included.
    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Non-JSON content types read as text (with UTF-8 data), some spelled
/// oddly, and types the SDK's JSON format takes for JSON by their prefix.
pub const TEXT_TYPES: &[&str] = &[
    "text/plain",
    "text/plain; charset=utf-8",
    "Text/XML",
    "application/xml",
    "application/atom+xml",
    "text/csv; header=present",
    "text/json5",
];

/// Non-JSON content types read as bytes.
pub const BINARY_TYPES: &[&str] = &[
    "application/octet-stream",
    "image/png",
    "application/x-protobuf",
    "text/plain; charset=iso-8859-1",
    "application/json-seq",
    "application/vnd.apache.thrift.binary",
];

/// Standard padded base64.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Rng {
    /// A random CloudEvent as another producer may send it: optional
    /// attributes present or not, string, integer and boolean extensions,
    /// `time` with nanoseconds, data as JSON or as JSON bytes under assorted
    /// JSON content types, text or bytes under non-JSON types, or a content
    /// type without data. `time` is always
    /// set (a missing one is the time of conversion, which differs between
    /// conversions). Not generated: data as `Data::String` under a JSON type
    /// (the SDK writes it as a JSON string in structured mode but as raw text
    /// in binary mode).
    pub fn cloudevent(&mut self) -> cloudevents::Event {
        use cloudevents::{AttributesWriter, Data, EventBuilder, EventBuilderV10};
        let non_empty = |rng: &mut Self, max: usize| format!("{}x", rng.text(max));
        let mut ce = EventBuilderV10::new()
            .id(non_empty(self, 12))
            .source(non_empty(self, 12))
            .ty(non_empty(self, 12))
            .build()
            .expect("required attributes set");
        let nanos = match self.below(3) {
            0 => 0,
            1 => self.below(1000) as u32 * 1_000_000,
            _ => self.below(1_000_000_000) as u32,
        };
        let secs = (self.next_u64() % 4_000_000_000) as i64;
        ce.set_time(chrono::DateTime::from_timestamp(secs, nanos));
        if self.chance(70) {
            ce.set_subject(Some(non_empty(self, 16)));
        }
        if self.chance(20) {
            let url = *self.pick(&[
                "https://schemas.example.com/a.json",
                "urn:x:y",
                "https://schemas.example.com/a%20b.json?q=%41",
                "http://example.com/",
            ]);
            ce.set_dataschema(Some(url::Url::parse(url).expect("valid URL")));
        }
        const JSON_TYPES: &[&str] = &[
            "application/json",
            "application/json; charset=utf-8",
            "text/json",
            "application/vnd.a3s+json",
            "Application/JSON",
        ];
        match self.below(7) {
            0 => {}
            1 => {
                let ct = (*self.pick(JSON_TYPES)).to_string();
                let data = self.json(3);
                ce.set_data(ct, Data::Json(data));
            }
            2 => {
                let ct = (*self.pick(JSON_TYPES)).to_string();
                let data = serde_json::to_vec(&self.json(3)).expect("JSON encodes");
                ce.set_data(ct, Data::Binary(data));
            }
            3 => {
                let ct = *self.pick(&["application/json", "text/xml", "application/vnd.a3s+json"]);
                ce.set_datacontenttype(Some(ct));
            }
            4 => {
                let data = self.json(3);
                ce.set_data_unchecked(Data::Json(data));
            }
            5 => {
                let ct = *self.pick(TEXT_TYPES);
                let text = format!("{}x", self.text(30));
                if self.chance(80) {
                    ce.set_data(ct, Data::String(text));
                } else {
                    ce.set_data(ct, Data::Binary(text.into_bytes()));
                }
            }
            _ => {
                let ct = if self.chance(70) {
                    *self.pick(BINARY_TYPES)
                } else {
                    *self.pick(TEXT_TYPES)
                };
                let bytes = self.bytes(40);
                ce.set_data(ct, Data::Binary(bytes));
            }
        }
        const NAMES: &[&str] = &[
            "traceparent",
            "comexampleextension1",
            "x",
            "n0",
            "a3sfuture",
            "a3smregion",
            "partitionkey",
        ];
        for _ in 0..self.below(5) {
            let name = *self.pick(NAMES);
            match self.below(3) {
                0 => ce.set_extension(name, self.text(16)),
                1 => ce.set_extension(name, self.next_u64() as i64 >> self.below(64)),
                _ => ce.set_extension(name, self.chance(50)),
            }
        }
        ce
    }
}
