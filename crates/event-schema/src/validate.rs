//! Compiled schemas and payload validation.

use crate::required::RequiredFields;
use crate::schema::EventSchema;
use event_core::{Error, Event, Result};
use serde_json::Value;

/// Compiles a JSON Schema with the options the registry uses everywhere.
///
/// Remote `$ref`s are not fetched: the crate is built without `jsonschema`'s
/// HTTP and file resolvers, so a schema that needs one fails to compile.
/// The error names where in the schema the problem is (a JSON pointer into
/// the schema document), when it is not the root.
///
/// A schema nested deeper than [`MAX_DEPTH`] levels (deeper than any JSON
/// document `serde_json` reads, so only ever built in memory) is refused
/// before the compiler sees it: the compiler recurses once per level and
/// would exhaust the thread's stack (aborting the process) a few hundred
/// levels down.
pub(crate) fn compile(schema: &Value) -> std::result::Result<jsonschema::Validator, String> {
    if too_deep(schema) {
        return Err(format!(
            "the schema nests arrays and objects more than {MAX_DEPTH} levels deep, \
             deeper than any JSON document can carry; it is not compiled"
        ));
    }
    jsonschema::options().build(schema).map_err(|e| {
        let location = e.instance_path().as_str();
        if location.is_empty() {
            e.to_string()
        } else {
            format!("at `{location}` in the schema: {e}")
        }
    })
}

/// How deep a payload may be nested for a schema whose validation follows
/// the payload all the way down (see [`walks_whole_payload`]), how deep a
/// payload may be for a failure to be located (see
/// [`CompiledSchema::error`]), and how deep a schema may be nested at all
/// (see [`compile`]): the depth at which `serde_json` itself stops decoding,
/// far below what exhausts a thread's stack in the validator or the compiler.
pub(crate) const MAX_DEPTH: usize = 128;

/// A registered schema with its JSON Schema compiled once.
pub(crate) struct CompiledSchema {
    pub(crate) schema: EventSchema,
    check: Check,
    /// Whether payloads must be checked against [`MAX_DEPTH`] before the
    /// validator sees them.
    depth_limited: bool,
}

/// The keywords that refer to another schema (which may be the root).
const REFERENCES: &[&str] = &["$ref", "$dynamicRef", "$recursiveRef"];

/// Whether `schema` uses any of `keywords`, at any depth.
fn uses(schema: &Value, keywords: &[&str]) -> bool {
    match schema {
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| keywords.contains(&key.as_str()) || uses(value, keywords)),
        Value::Array(items) => items.iter().any(|item| uses(item, keywords)),
        _ => false,
    }
}

/// Whether validating against `schema` may recurse as deep as the payload
/// is nested, rather than only as deep as the schema: a reference (which can
/// recurse) or `uniqueItems` (which compares whole items).
///
/// Without these, `jsonschema`'s pass/fail check (`is_valid`, the hot path)
/// descends into the payload only where a subschema does, so it recurses at
/// most as deep as the schema, itself at most [`MAX_DEPTH`] levels (tried
/// with payloads 200,000 levels deep on a 2 MiB thread, matching and not,
/// for `anyOf`, `oneOf`, `allOf`, `not`, `if`/`then`/`else`, `contains`,
/// `prefixItems`, `unevaluatedItems`, `unevaluatedProperties` and
/// `dependentSchemas`; `enum` and `const` compare only as deep as their own
/// value). Building the
/// detailed error is another matter (`anyOf` and `oneOf` copy the payload
/// for their failed branches, `unevaluatedItems` prints the items it
/// refuses): [`CompiledSchema::error`] checks the depth first whatever the
/// schema.
fn walks_whole_payload(schema: &Value) -> bool {
    uses(
        schema,
        &["$ref", "$dynamicRef", "$recursiveRef", "uniqueItems"],
    )
}

/// Whether `payload` is nested deeper than [`MAX_DEPTH`] (counted without
/// recursion; a scalar or an empty container at the top is depth 0).
pub(crate) fn too_deep(payload: &Value) -> bool {
    /// The members of one open container.
    enum Members<'a> {
        Array(std::slice::Iter<'a, Value>),
        Object(serde_json::map::Values<'a>),
    }
    impl<'a> Members<'a> {
        fn of(value: &'a Value) -> Option<Self> {
            match value {
                Value::Array(items) if !items.is_empty() => Some(Self::Array(items.iter())),
                Value::Object(map) if !map.is_empty() => Some(Self::Object(map.values())),
                _ => None,
            }
        }
        fn next(&mut self) -> Option<&'a Value> {
            match self {
                Self::Array(items) => items.next(),
                Self::Object(values) => values.next(),
            }
        }
    }
    let Some(top) = Members::of(payload) else {
        return false;
    };
    // One entry per open container: the stack's length is the depth.
    let mut open = vec![top];
    while let Some(members) = open.last_mut() {
        match members.next() {
            Some(child) => {
                if let Some(inner) = Members::of(child) {
                    if open.len() >= MAX_DEPTH {
                        return true;
                    }
                    open.push(inner);
                }
            }
            None => {
                open.pop();
            }
        }
    }
    false
}

/// How a payload is checked.
enum Check {
    /// No required fields and no JSON Schema: everything is valid.
    Nothing,
    /// Required fields and no JSON Schema: the payload must be an object
    /// with those keys, checked without `jsonschema` (see
    /// [`RequiredFields`]; faster than the equivalent compiled
    /// `{"type": "object", "required": [...]}`).
    Required(RequiredFields),
    /// One compiled validator covers the required fields and the JSON Schema
    /// (its effective schema); the hand-written required-field check runs
    /// only on failure, to report the field by name.
    Merged(Box<jsonschema::Validator>),
    /// The JSON Schema holds a reference, which may lead back to the root
    /// (where merged required fields would then apply at every level the
    /// reference reaches; and drafts up to 7 ignore a root `$ref`'s
    /// siblings), so the required fields are checked separately first.
    Split(RequiredFields, Box<jsonschema::Validator>),
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let check = match self.check {
            Check::Nothing => "nothing",
            Check::Required(_) => "required",
            Check::Merged(_) => "merged",
            Check::Split(..) => "split",
        };
        f.debug_struct("CompiledSchema")
            .field("schema", &self.schema)
            .field("check", &check)
            .finish()
    }
}

fn schema_error(schema: &EventSchema, reason: impl Into<String>) -> Error {
    Error::Schema {
        event_type: schema.event_type.clone(),
        version: schema.version,
        reason: reason.into(),
    }
}

impl CompiledSchema {
    /// Checks the definition and compiles its JSON Schema.
    pub(crate) fn new(schema: EventSchema) -> Result<Self> {
        if schema.event_type.trim().is_empty() {
            return Err(schema_error(&schema, "the event type is empty"));
        }
        if schema.version == 0 {
            return Err(schema_error(&schema, "versions start at 1; got version 0"));
        }
        for (i, field) in schema.required_fields.iter().enumerate() {
            if field.is_empty() {
                return Err(schema_error(
                    &schema,
                    "required field names must not be empty",
                ));
            }
            if schema.required_fields[..i].contains(field) {
                return Err(schema_error(
                    &schema,
                    format!("required field `{field}` is listed twice"),
                ));
            }
        }
        let compile_or_refuse = |json: &Value| {
            compile(json)
                .map(Box::new)
                .map_err(|e| schema_error(&schema, format!("invalid JSON Schema: {e}")))
        };
        let depth_limited = schema.json_schema.as_ref().is_some_and(walks_whole_payload);
        let check = match &schema.json_schema {
            Some(json @ (Value::Object(_) | Value::Bool(false))) => {
                // Compile the schema as given first, so that its errors are
                // reported against what the user wrote.
                let own = compile_or_refuse(json)?;
                if schema.required_fields.is_empty() {
                    Check::Merged(own)
                } else if uses(json, REFERENCES) {
                    Check::Split(RequiredFields::new(&schema.required_fields), own)
                } else {
                    Check::Merged(compile_or_refuse(&schema.effective_schema())?)
                }
            }
            None | Some(Value::Bool(true)) => {
                if schema.required_fields.is_empty() {
                    Check::Nothing
                } else {
                    Check::Required(RequiredFields::new(&schema.required_fields))
                }
            }
            Some(other) => {
                return Err(schema_error(
                    &schema,
                    format!("invalid JSON Schema: expected an object or a boolean, got {other}"),
                ));
            }
        };
        Ok(Self {
            schema,
            check,
            depth_limited,
        })
    }

    /// Whether `payload` is valid: required fields, then the JSON Schema (the
    /// fast pass; no error is built, see [`error`](Self::error)).
    #[inline]
    pub(crate) fn is_valid(&self, payload: &Value) -> bool {
        match &self.check {
            Check::Nothing => true,
            Check::Required(fields) => payload
                .as_object()
                .is_some_and(|object| fields.all_present(object)),
            Check::Merged(validator) => {
                !(self.depth_limited && too_deep(payload)) && validator.is_valid(payload)
            }
            Check::Split(fields, validator) => {
                payload
                    .as_object()
                    .is_some_and(|object| fields.all_present(object))
                    && !(self.depth_limited && too_deep(payload))
                    && validator.is_valid(payload)
            }
        }
    }

    /// The error for a payload [`is_valid`](Self::is_valid) refused: the
    /// first missing required field, else the first JSON Schema error. It
    /// names the type, version and failing JSON pointer; payload values, and
    /// object keys the schema does not name, are masked (payloads may be
    /// sensitive).
    ///
    /// A payload nested deeper than [`MAX_DEPTH`] levels gets an error
    /// naming that depth, at the root, whatever the schema: `jsonschema`
    /// builds its detailed error by copying the payload (the failed branches
    /// of `anyOf` and `oneOf`) or printing it (`unevaluatedItems`), which
    /// recurses once per level and, a few thousand levels down, exhausts the
    /// thread's stack (aborting the process).
    #[cold]
    #[inline(never)]
    pub(crate) fn error(&self, event: &Event) -> Error {
        if let Err(error) = self.check_required(event) {
            return error;
        }
        if too_deep(&event.payload) {
            let reason = if self.depth_limited {
                format!(
                    "the payload is nested deeper than {MAX_DEPTH} levels, which this schema \
                     (recursive, or with uniqueItems) does not validate"
                )
            } else {
                format!(
                    "the payload is nested deeper than {MAX_DEPTH} levels and does not match \
                     the schema; where it fails is not located at that depth"
                )
            };
            return validation_error(event, String::new(), reason);
        }
        match &self.check {
            Check::Merged(validator) | Check::Split(_, validator) => {
                first_error(event, validator, &self.schema)
            }
            // `is_valid` said no; keep refusing even though no check names a reason.
            Check::Nothing | Check::Required(_) => validation_error(
                event,
                String::new(),
                "the payload does not match the schema".to_owned(),
            ),
        }
    }

    /// The required-field check, naming the first missing field.
    fn check_required(&self, event: &Event) -> Result<()> {
        let fields = &self.schema.required_fields;
        if fields.is_empty() {
            return Ok(());
        }
        let payload = &event.payload;
        let Some(object) = payload.as_object() else {
            return Err(validation_error(
                event,
                String::new(),
                format!(
                    "the payload must be a JSON object with fields {fields:?}, got {}",
                    kind(payload)
                ),
            ));
        };
        for field in fields {
            if !object.contains_key(field) {
                return Err(validation_error(
                    event,
                    pointer(field),
                    format!("required field `{field}` is missing"),
                ));
            }
        }
        Ok(())
    }
}

/// The first error `validator` reports for an invalid payload, with the
/// payload's content masked: values (the validator's own masking), and the
/// object keys the schema does not name (in the path and in the reason:
/// a key can be data too, say a card number used as a map key).
fn first_error(event: &Event, validator: &jsonschema::Validator, schema: &EventSchema) -> Error {
    use jsonschema::error::ValidationErrorKind;
    match validator.validate(&event.payload) {
        Err(error) => {
            let declared = declared_names(schema);
            let path = masked_path(&event.payload, error.instance_path().as_str(), &declared);
            let reason = match error.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => format!(
                    "additional properties are not allowed ({} unexpected)",
                    unexpected.len()
                ),
                ValidationErrorKind::UnevaluatedProperties { unexpected } => format!(
                    "unevaluated properties are not allowed ({} unexpected)",
                    unexpected.len()
                ),
                ValidationErrorKind::PropertyNames { .. } => {
                    "a property name is not valid under the schema's `propertyNames`".to_owned()
                }
                _ => error.masked().to_string(),
            };
            validation_error(event, path, reason)
        }
        // `is_valid` said no; keep refusing even if the detailed pass disagrees.
        Ok(()) => validation_error(
            event,
            String::new(),
            "the payload does not match the schema".to_owned(),
        ),
    }
}

/// Property names the schema itself names (so not payload data): the
/// required fields, the keys of every `properties`, `dependentRequired`,
/// `dependentSchemas` and `dependencies` object and the names listed in
/// every `required` and `dependentRequired` array, at any depth.
fn declared_names(schema: &EventSchema) -> std::collections::HashSet<&str> {
    fn walk<'a>(value: &'a Value, out: &mut std::collections::HashSet<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        (
                            "properties" | "dependentRequired" | "dependentSchemas"
                            | "dependencies",
                            Value::Object(named),
                        ) => out.extend(named.keys().map(String::as_str)),
                        ("required", Value::Array(names)) => {
                            out.extend(names.iter().filter_map(Value::as_str));
                        }
                        _ => {}
                    }
                    walk(value, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out: std::collections::HashSet<&str> =
        schema.required_fields.iter().map(String::as_str).collect();
    if let Some(json) = &schema.json_schema {
        walk(json, &mut out);
    }
    out
}

/// `pointer` (a JSON pointer into `payload`) with every object key the
/// schema does not name replaced by `*`; array indices are kept.
fn masked_path(
    payload: &Value,
    pointer: &str,
    declared: &std::collections::HashSet<&str>,
) -> String {
    let mut out = String::with_capacity(pointer.len());
    let mut at = Some(payload);
    for raw in pointer.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        let (shown, next) = match at {
            Some(Value::Array(items)) => {
                (raw, key.parse::<usize>().ok().and_then(|i| items.get(i)))
            }
            Some(Value::Object(map)) if declared.contains(key.as_str()) => (raw, map.get(&key)),
            Some(Value::Object(map)) => ("*", map.get(&key)),
            _ => ("*", None),
        };
        out.push('/');
        out.push_str(shown);
        at = next;
    }
    out
}

pub(crate) fn validation_error(event: &Event, path: String, reason: String) -> Error {
    Error::SchemaValidation {
        event_type: event.event_type.clone(),
        version: event.version,
        path,
        reason,
    }
}

fn pointer(field: &str) -> String {
    let mut out = String::with_capacity(field.len() + 1);
    out.push('/');
    for c in field.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
