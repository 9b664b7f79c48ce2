//! Shared test helpers (included with `mod common;`).
#![allow(dead_code)]

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
