//! [`EventSchema`]: the definition of one event type at one version.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The schema of one event type at one version.
///
/// A payload is valid when
///
/// 1. every name in [`required_fields`](Self::required_fields) is a key of the
///    payload object (a present key whose value is `null` counts as present;
///    with at least one required field, a payload that is not a JSON object is
///    invalid), and
/// 2. it validates against [`json_schema`](Self::json_schema), when one is
///    given (any JSON Schema draft the `jsonschema` crate supports: 4, 6, 7,
///    2019-09, 2020-12; 2020-12 when `$schema` is absent).
///
/// `format` is checked as its draft says: asserted under drafts 4, 6 and 7,
/// an annotation only under 2019-09 and 2020-12, so `{"format": "email"}`
/// without `$schema` accepts any string (declare draft 7, or use `pattern`,
/// to refuse malformed values). Unknown format names are ignored.
/// `contentEncoding` and `contentMediaType` likewise: asserted under drafts 6
/// and 7, annotations under 2019-09 and 2020-12.
///
/// The fields are public, as in the original `a3s-event`, so a struct literal
/// works (`..Default::default()` fills the rest); the builder methods read
/// better:
///
/// ```
/// use event_schema::EventSchema;
/// use serde_json::json;
///
/// let v1 = EventSchema::new("order.created", 1)
///     .with_required_fields(["order_id", "amount"])
///     .with_description("an order was placed");
///
/// let v2 = EventSchema::new("order.created", 2)
///     .with_required_fields(["order_id", "amount"])
///     .with_json_schema(json!({
///         "type": "object",
///         "properties": {
///             "order_id": {"type": "string"},
///             "amount": {"type": "number", "minimum": 0}
///         }
///     }));
/// assert_eq!(v2.version, 2);
/// # let _ = v1;
/// ```
///
/// Registered schemas are immutable: registering the same type and version
/// again with a different definition is refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSchema {
    /// Event type identifier (for example `"forex.rate_change"`), matched
    /// against [`Event::event_type`](event_core::Event::event_type).
    pub event_type: String,

    /// Schema version (1, 2, ...), matched against
    /// [`Event::version`](event_core::Event::version).
    pub version: u32,

    /// Top-level payload fields that must be present.
    #[serde(default)]
    pub required_fields: Vec<String>,

    /// A full JSON Schema the payload must satisfy, beyond the required
    /// fields. Compiled once, when the schema is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Value>,

    /// Human-readable description of this version.
    #[serde(default)]
    pub description: String,
}

impl EventSchema {
    /// A schema for `event_type` at `version` with no required fields and no
    /// JSON Schema (every payload is valid until you add some).
    pub fn new(event_type: impl Into<String>, version: u32) -> Self {
        Self {
            event_type: event_type.into(),
            version,
            ..Self::default()
        }
    }

    /// Sets the required top-level fields (builder style).
    #[must_use]
    pub fn with_required_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the JSON Schema (builder style).
    #[must_use]
    pub fn with_json_schema(mut self, schema: Value) -> Self {
        self.json_schema = Some(schema);
        self
    }

    /// Sets the description (builder style).
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The single JSON Schema equivalent to this schema's required fields
    /// combined with its JSON Schema, which the compatibility checker reasons
    /// about.
    ///
    /// No JSON Schema and no required fields is `true` (everything is valid);
    /// required fields add `"type": "object"` and the names to `required` at
    /// the root. That is exact unless the JSON Schema holds a reference
    /// (`$ref`, `$dynamicRef`, `$recursiveRef`): one that leads back to the
    /// root would then demand the fields at every level it reaches, too. The
    /// registry validates such schemas with the required fields checked
    /// separately, and the compatibility checker resolves only references
    /// that do not lead back to the root (see the crate documentation).
    pub fn effective_schema(&self) -> Value {
        let required: Vec<&String> = dedup(&self.required_fields);
        let base = match &self.json_schema {
            None | Some(Value::Bool(true)) => {
                if required.is_empty() {
                    return Value::Bool(true);
                }
                Map::new()
            }
            Some(Value::Object(map)) => {
                if required.is_empty() {
                    return Value::Object(map.clone());
                }
                map.clone()
            }
            // `false`, or a value that is not a schema at all (refused at
            // registration): nothing is valid.
            Some(_) => return Value::Bool(false),
        };
        let mut map = base;
        // Required fields demand an object.
        match map.get("type") {
            None => {
                map.insert("type".into(), Value::String("object".into()));
            }
            Some(Value::String(t)) if t == "object" => {}
            Some(Value::Array(types)) if types.iter().any(|t| t == "object") => {
                map.insert("type".into(), Value::String("object".into()));
            }
            // The schema admits no object, the required fields admit nothing
            // else: no payload is valid.
            Some(_) => return Value::Bool(false),
        }
        let mut names: Vec<Value> = match map.get("required") {
            Some(Value::Array(existing)) => existing.clone(),
            _ => Vec::new(),
        };
        for field in required {
            if !names.iter().any(|n| n.as_str() == Some(field.as_str())) {
                names.push(Value::String(field.clone()));
            }
        }
        map.insert("required".into(), Value::Array(names));
        Value::Object(map)
    }
}

fn dedup(fields: &[String]) -> Vec<&String> {
    let mut out: Vec<&String> = Vec::with_capacity(fields.len());
    for field in fields {
        if !out.contains(&field) {
            out.push(field);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn effective_schema_of_required_fields_only() {
        let s = EventSchema::new("t", 1).with_required_fields(["a", "b", "a"]);
        assert_eq!(
            s.effective_schema(),
            json!({"type": "object", "required": ["a", "b"]})
        );
        assert_eq!(EventSchema::new("t", 1).effective_schema(), json!(true));
    }

    #[test]
    fn effective_schema_merges_required_into_json_schema() {
        let s = EventSchema::new("t", 1)
            .with_required_fields(["a"])
            .with_json_schema(json!({"type": ["object", "null"], "required": ["b"]}));
        assert_eq!(
            s.effective_schema(),
            json!({"type": "object", "required": ["b", "a"]})
        );
        let impossible = EventSchema::new("t", 1)
            .with_required_fields(["a"])
            .with_json_schema(json!({"type": "string"}));
        assert_eq!(impossible.effective_schema(), json!(false));
    }

    #[test]
    fn serde_shape_is_camel_case() {
        let s = EventSchema::new("t", 2).with_required_fields(["a"]);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            json!({"eventType": "t", "version": 2, "requiredFields": ["a"], "description": ""})
        );
        let back: EventSchema = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }
}
