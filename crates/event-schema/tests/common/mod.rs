//! Shared test helpers (included with `mod common;`).
#![allow(dead_code, clippy::unwrap_used)]

use event_core::Event;
use serde_json::{Value, json};

/// A typed event of `event_type` v`version` with `payload`.
pub fn event(event_type: &str, version: u32, payload: Value) -> Event {
    Event::typed(
        "events.test.topic",
        "test",
        event_type,
        version,
        "summary",
        "tests",
        payload,
    )
}

/// An object schema with `properties`, `required` and, when given,
/// `additionalProperties`.
pub fn object(properties: Value, required: &[&str], additional: Option<bool>) -> Value {
    let mut schema = json!({"type": "object", "properties": properties, "required": required});
    if let Some(extra) = additional {
        schema["additionalProperties"] = Value::Bool(extra);
    }
    schema
}

/// xorshift64: enough randomness for a reproducible search, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
    pub fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}
