//! Every compatibility level, with accepted and refused evolutions, including
//! the transitive levels; and the checker's rules one by one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use common::object;
use event_core::Error;
use event_schema::{Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry, can_read};
use serde_json::{Value, json};

fn js(event_type: &str, version: u32, schema: Value) -> EventSchema {
    EventSchema::new(event_type, version).with_json_schema(schema)
}

fn rf(event_type: &str, version: u32, fields: &[&str]) -> EventSchema {
    EventSchema::new(event_type, version).with_required_fields(fields.iter().copied())
}

/// Registers `versions` in order under `level`; all must be accepted.
fn registry_with(level: Compatibility, versions: &[EventSchema]) -> MemorySchemaRegistry {
    let registry = MemorySchemaRegistry::new().with_default_compatibility(level);
    for schema in versions {
        registry
            .register(schema.clone())
            .unwrap_or_else(|e| panic!("{level}: v{} refused: {e}", schema.version));
    }
    registry
}

fn accepted(level: Compatibility, old: EventSchema, new: EventSchema) {
    let registry = registry_with(level, &[old]);
    registry
        .register(new.clone())
        .unwrap_or_else(|e| panic!("{level}: expected {new:?} to be accepted: {e}"));
}

/// Registers `old` then `new` under `level`, expects `new` refused, returns
/// the reason.
fn refused(level: Compatibility, old: EventSchema, new: EventSchema) -> String {
    let registry = registry_with(level, &[old]);
    match registry.register(new.clone()) {
        Err(Error::Schema {
            event_type,
            version,
            reason,
        }) => {
            assert_eq!(event_type, new.event_type);
            assert_eq!(version, new.version);
            assert!(reason.starts_with(level.as_str()), "{reason}");
            assert_eq!(
                registry.latest_version(&new.event_type).unwrap(),
                Some(old_version(&registry, &new))
            );
            reason
        }
        other => panic!("{level}: expected {new:?} to be refused, got {other:?}"),
    }
}

fn old_version(registry: &MemorySchemaRegistry, new: &EventSchema) -> u32 {
    *registry.versions(&new.event_type).last().unwrap()
}

fn number_field(ty: &str) -> Value {
    object(json!({"n": {"type": ty}}), &["n"], None)
}

fn status(values: &[&str]) -> Value {
    object(json!({"status": {"enum": values}}), &["status"], None)
}

// ---------------------------------------------------------------- BACKWARD

#[test]
fn backward_accepts_removing_a_required_field() {
    accepted(
        Compatibility::Backward,
        rf("t", 1, &["a", "b"]),
        rf("t", 2, &["a"]),
    );
}

#[test]
fn backward_accepts_adding_an_optional_unconstrained_field() {
    accepted(
        Compatibility::Backward,
        rf("t", 1, &["a"]),
        js(
            "t",
            2,
            object(json!({"note": {"description": "free text"}}), &["a"], None),
        ),
    );
}

#[test]
fn backward_accepts_widening_integer_to_number() {
    accepted(
        Compatibility::Backward,
        js("t", 1, number_field("integer")),
        js("t", 2, number_field("number")),
    );
}

#[test]
fn backward_accepts_adding_an_enum_value() {
    accepted(
        Compatibility::Backward,
        js("t", 1, status(&["new", "paid"])),
        js("t", 2, status(&["new", "paid", "void"])),
    );
}

#[test]
fn backward_accepts_a_constrained_new_property_when_the_old_version_was_closed() {
    accepted(
        Compatibility::Backward,
        js(
            "t",
            1,
            object(json!({"a": {"type": "string"}}), &["a"], Some(false)),
        ),
        js(
            "t",
            2,
            object(
                json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
                &["a"],
                Some(false),
            ),
        ),
    );
}

#[test]
fn backward_accepts_removing_a_property_from_an_open_model() {
    accepted(
        Compatibility::Backward,
        js(
            "t",
            1,
            object(
                json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
                &["a"],
                None,
            ),
        ),
        js(
            "t",
            2,
            object(json!({"a": {"type": "string"}}), &["a"], None),
        ),
    );
}

#[test]
fn backward_refuses_adding_a_required_field() {
    let reason = refused(
        Compatibility::Backward,
        rf("t", 1, &["a"]),
        rf("t", 2, &["a", "b"]),
    );
    assert!(
        reason.contains("v2 cannot read data written with v1"),
        "{reason}"
    );
    assert!(reason.contains("`/b`"), "{reason}");
    assert!(reason.contains("required by the reader"), "{reason}");
}

#[test]
fn backward_refuses_narrowing_number_to_integer() {
    let reason = refused(
        Compatibility::Backward,
        js("t", 1, number_field("number")),
        js("t", 2, number_field("integer")),
    );
    assert!(
        reason.contains("`/n`") && reason.contains("type change"),
        "{reason}"
    );
}

#[test]
fn backward_refuses_changing_a_type() {
    let reason = refused(
        Compatibility::Backward,
        js("t", 1, number_field("string")),
        js("t", 2, number_field("integer")),
    );
    assert!(
        reason.contains("`/n`") && reason.contains("`string`"),
        "{reason}"
    );
}

#[test]
fn backward_refuses_removing_an_enum_value() {
    let reason = refused(
        Compatibility::Backward,
        js("t", 1, status(&["new", "paid"])),
        js("t", 2, status(&["new"])),
    );
    assert!(
        reason.contains("`/status`") && reason.contains("\"paid\""),
        "{reason}"
    );
}

#[test]
fn backward_refuses_a_constrained_new_property_on_an_open_model() {
    let reason = refused(
        Compatibility::Backward,
        js(
            "t",
            1,
            object(json!({"a": {"type": "string"}}), &["a"], None),
        ),
        js(
            "t",
            2,
            object(
                json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
                &["a"],
                None,
            ),
        ),
    );
    assert!(
        reason.contains("`/b`") && reason.contains("open content model"),
        "{reason}"
    );
}

#[test]
fn backward_refuses_closing_the_content_model() {
    let reason = refused(
        Compatibility::Backward,
        js(
            "t",
            1,
            object(json!({"a": {"type": "string"}}), &["a"], None),
        ),
        js(
            "t",
            2,
            object(json!({"a": {"type": "string"}}), &["a"], Some(false)),
        ),
    );
    assert!(reason.contains("additionalProperties: false"), "{reason}");
}

#[test]
fn backward_refuses_removing_a_property_from_a_closed_model() {
    let reason = refused(
        Compatibility::Backward,
        js(
            "t",
            1,
            object(
                json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
                &["a"],
                Some(false),
            ),
        ),
        js(
            "t",
            2,
            object(json!({"a": {"type": "string"}}), &["a"], Some(false)),
        ),
    );
    assert!(
        reason.contains("`/b`") && reason.contains("does not allow it"),
        "{reason}"
    );
}

// ----------------------------------------------------------------- FORWARD

#[test]
fn forward_accepts_adding_a_required_field() {
    accepted(
        Compatibility::Forward,
        rf("t", 1, &["a"]),
        rf("t", 2, &["a", "b"]),
    );
}

#[test]
fn forward_accepts_narrowing_number_to_integer() {
    accepted(
        Compatibility::Forward,
        js("t", 1, number_field("number")),
        js("t", 2, number_field("integer")),
    );
}

#[test]
fn forward_accepts_removing_an_enum_value() {
    accepted(
        Compatibility::Forward,
        js("t", 1, status(&["new", "paid"])),
        js("t", 2, status(&["paid"])),
    );
}

#[test]
fn forward_accepts_adding_a_property_to_an_open_model() {
    accepted(
        Compatibility::Forward,
        js(
            "t",
            1,
            object(json!({"a": {"type": "string"}}), &["a"], None),
        ),
        js(
            "t",
            2,
            object(
                json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
                &["a", "b"],
                None,
            ),
        ),
    );
}

#[test]
fn forward_refuses_removing_a_required_field() {
    let reason = refused(
        Compatibility::Forward,
        rf("t", 1, &["a", "b"]),
        rf("t", 2, &["a"]),
    );
    assert!(
        reason.contains("v1 cannot read data written with v2"),
        "{reason}"
    );
    assert!(reason.contains("`/b`"), "{reason}");
}

#[test]
fn forward_refuses_widening_integer_to_number() {
    let reason = refused(
        Compatibility::Forward,
        js("t", 1, number_field("integer")),
        js("t", 2, number_field("number")),
    );
    assert!(
        reason.contains("`/n`") && reason.contains("`number`"),
        "{reason}"
    );
}

#[test]
fn forward_refuses_adding_an_enum_value() {
    let reason = refused(
        Compatibility::Forward,
        js("t", 1, status(&["new"])),
        js("t", 2, status(&["new", "void"])),
    );
    assert!(reason.contains("\"void\""), "{reason}");
}

#[test]
fn forward_refuses_adding_a_property_the_closed_old_version_forbids() {
    let reason = refused(
        Compatibility::Forward,
        js(
            "t",
            1,
            object(json!({"a": {"type": "string"}}), &["a"], Some(false)),
        ),
        js(
            "t",
            2,
            object(
                json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
                &["a"],
                Some(false),
            ),
        ),
    );
    assert!(reason.contains("`/b`"), "{reason}");
}

// -------------------------------------------------------------------- FULL

#[test]
fn full_accepts_annotation_changes() {
    let mut v2 = number_field("integer");
    v2["title"] = json!("renamed");
    v2["properties"]["n"]["description"] = json!("a count");
    accepted(
        Compatibility::Full,
        js("t", 1, number_field("integer")),
        js("t", 2, v2),
    );
}

/// Vendor extension keywords (`x-…`, as schema generators and Kafka tooling
/// add) do not change which payloads are valid, so they neither block an
/// evolution beside them nor count as a change themselves.
#[test]
fn vendor_extension_keywords_are_annotations() {
    let with_ext = |values: &[&str], topic: &str| {
        let mut schema = json!({
            "type": "object",
            "properties": {"status": {"enum": values, "x-generated-by": "gen 1.2"}},
            "required": ["status"],
        });
        schema["x-kafka-topic"] = json!(topic);
        schema
    };
    // an enum value added beside them: readable by the new reader
    accepted(
        Compatibility::Backward,
        js("t", 1, with_ext(&["new"], "orders")),
        js("t", 2, with_ext(&["new", "paid"], "orders")),
    );
    // the extensions alone changed
    accepted(
        Compatibility::Full,
        js("t", 1, with_ext(&["new"], "orders")),
        js("t", 2, with_ext(&["new"], "orders-v2")),
    );
    // and a real change beside them is still judged on its own
    refused(
        Compatibility::Forward,
        js("t", 1, with_ext(&["new"], "orders")),
        js("t", 2, with_ext(&["new", "paid"], "orders")),
    );
}

#[test]
fn full_accepts_adding_an_unconstrained_optional_field() {
    accepted(
        Compatibility::Full,
        js(
            "t",
            1,
            object(json!({"a": {"type": "string"}}), &["a"], None),
        ),
        js(
            "t",
            2,
            object(json!({"a": {"type": "string"}, "b": {}}), &["a"], None),
        ),
    );
}

#[test]
fn full_accepts_an_equivalent_required_fields_schema() {
    // Required fields expressed once as `required_fields`, once in the JSON Schema.
    accepted(
        Compatibility::Full,
        rf("t", 1, &["a"]),
        js("t", 2, json!({"type": "object", "required": ["a"]})),
    );
}

#[test]
fn full_refuses_adding_a_required_field() {
    let reason = refused(
        Compatibility::Full,
        rf("t", 1, &["a"]),
        rf("t", 2, &["a", "b"]),
    );
    assert!(
        reason.contains("v2 cannot read data written with v1"),
        "{reason}"
    );
}

#[test]
fn full_refuses_removing_a_required_field() {
    let reason = refused(
        Compatibility::Full,
        rf("t", 1, &["a", "b"]),
        rf("t", 2, &["a"]),
    );
    assert!(
        reason.contains("v1 cannot read data written with v2"),
        "{reason}"
    );
}

#[test]
fn full_refuses_widening_a_type() {
    let reason = refused(
        Compatibility::Full,
        js("t", 1, number_field("integer")),
        js("t", 2, number_field("number")),
    );
    assert!(
        reason.contains("v1 cannot read data written with v2"),
        "{reason}"
    );
}

// -------------------------------------------------------------------- NONE

#[test]
fn none_accepts_any_evolution() {
    accepted(
        Compatibility::None,
        js("t", 1, number_field("string")),
        js("t", 2, json!({"type": "array"})),
    );
    accepted(
        Compatibility::None,
        rf("t", 1, &["a"]),
        rf("t", 2, &["b", "c"]),
    );
    accepted(
        Compatibility::None,
        js("t", 1, json!({"anyOf": [{"type": "string"}]})),
        js("t", 2, json!({"not": {}})),
    );
}

// -------------------------------------------------------------- TRANSITIVE
//
// Each step of a chain accepted by an exact checker is transitive by itself
// (set inclusion is transitive), so a non-transitive violation arises when an
// earlier version was registered under a weaker level. The transitive level
// catches it; the plain one does not.

fn chain_with_a_break(
    level_for_v3: Compatibility,
    v1: EventSchema,
    v2: EventSchema,
    v3: EventSchema,
) -> event_core::Result<()> {
    let registry = MemorySchemaRegistry::new().with_default_compatibility(Compatibility::None);
    registry.register(v1).unwrap();
    registry.register(v2).unwrap();
    registry.set_compatibility("t", level_for_v3).unwrap();
    registry.register(v3)
}

fn transitive_reason(result: event_core::Result<()>) -> String {
    match result {
        Err(Error::Schema { reason, .. }) => reason,
        other => panic!("expected Error::Schema, got {other:?}"),
    }
}

#[test]
fn backward_transitive_checks_every_earlier_version() {
    let v1 = js("t", 1, number_field("integer"));
    let v2 = js("t", 2, number_field("string"));
    let v3 = js("t", 3, number_field("string"));
    chain_with_a_break(Compatibility::Backward, v1.clone(), v2.clone(), v3.clone()).unwrap();
    let reason = transitive_reason(chain_with_a_break(
        Compatibility::BackwardTransitive,
        v1,
        v2,
        v3,
    ));
    assert!(
        reason.starts_with("BACKWARD_TRANSITIVE: v3 cannot read data written with v1"),
        "{reason}"
    );
    assert!(reason.contains("`/n`"), "{reason}");
}

#[test]
fn backward_transitive_accepts_an_evolution_compatible_with_all() {
    let registry = registry_with(
        Compatibility::BackwardTransitive,
        &[
            rf("t", 1, &["a", "b", "c"]),
            rf("t", 2, &["a", "b"]),
            rf("t", 3, &["a"]),
        ],
    );
    assert_eq!(registry.versions("t"), vec![1, 2, 3]);
}

#[test]
fn forward_transitive_checks_every_earlier_version() {
    let v1 = rf("t", 1, &["a", "b"]);
    let v2 = rf("t", 2, &["a"]);
    let v3 = rf("t", 3, &["a"]);
    chain_with_a_break(Compatibility::Forward, v1.clone(), v2.clone(), v3.clone()).unwrap();
    let reason = transitive_reason(chain_with_a_break(
        Compatibility::ForwardTransitive,
        v1,
        v2,
        v3,
    ));
    assert!(
        reason.starts_with("FORWARD_TRANSITIVE: v1 cannot read data written with v3"),
        "{reason}"
    );
    assert!(reason.contains("`/b`"), "{reason}");
}

#[test]
fn forward_transitive_accepts_an_evolution_compatible_with_all() {
    registry_with(
        Compatibility::ForwardTransitive,
        &[
            rf("t", 1, &["a"]),
            rf("t", 2, &["a", "b"]),
            rf("t", 3, &["a", "b", "c"]),
        ],
    );
}

#[test]
fn full_transitive_checks_every_earlier_version() {
    let v1 = js("t", 1, number_field("integer"));
    let v2 = js("t", 2, number_field("number"));
    let v3 = js("t", 3, number_field("number"));
    chain_with_a_break(Compatibility::Full, v1.clone(), v2.clone(), v3.clone()).unwrap();
    let reason = transitive_reason(chain_with_a_break(
        Compatibility::FullTransitive,
        v1,
        v2,
        v3,
    ));
    assert!(
        reason.starts_with("FULL_TRANSITIVE: v1 cannot read data written with v3"),
        "{reason}"
    );
}

#[test]
fn full_transitive_accepts_an_evolution_compatible_with_all() {
    let mut v2 = number_field("integer");
    v2["description"] = json!("v2");
    let mut v3 = number_field("integer");
    v3["properties"]["extra"] = json!({});
    registry_with(
        Compatibility::FullTransitive,
        &[
            js("t", 1, number_field("integer")),
            js("t", 2, v2),
            js("t", 3, v3),
        ],
    );
}

#[test]
fn check_compatibility_on_registered_versions() {
    let registry = registry_with(
        Compatibility::None,
        &[
            js("t", 1, number_field("integer")),
            js("t", 2, number_field("string")),
            js("t", 3, number_field("string")),
        ],
    );
    registry
        .check_compatibility("t", 3, Compatibility::Backward)
        .unwrap();
    registry
        .check_compatibility("t", 3, Compatibility::Full)
        .unwrap();
    registry
        .check_compatibility("t", 3, Compatibility::None)
        .unwrap();
    for level in [
        Compatibility::BackwardTransitive,
        Compatibility::ForwardTransitive,
        Compatibility::FullTransitive,
    ] {
        let reason = transitive_reason(registry.check_compatibility("t", 3, level));
        assert!(reason.contains("v1"), "{level}: {reason}");
    }
    let reason = transitive_reason(registry.check_compatibility("t", 2, Compatibility::Backward));
    assert!(
        reason.contains("v2 cannot read data written with v1"),
        "{reason}"
    );
}

// ----------------------------------------------------------- checker rules

fn reads(reader: Value, writer: Value) -> Result<(), event_schema::Incompatibility> {
    can_read(&js("t", 2, reader), &js("t", 1, writer))
}

#[test]
fn nested_objects_and_array_items_are_checked_with_paths() {
    let writer = json!({"type": "object", "properties": {
        "lines": {"type": "array", "items": {"type": "object", "properties": {"qty": {"type": "number"}}}}
    }});
    let reader = json!({"type": "object", "properties": {
        "lines": {"type": "array", "items": {"type": "object", "properties": {"qty": {"type": "integer"}}}}
    }});
    let err = reads(reader.clone(), writer.clone()).unwrap_err();
    assert_eq!(err.path, "/lines/*/qty");
    reads(writer, reader).unwrap();
}

#[test]
fn numeric_and_length_bounds() {
    let w = json!({"type": "integer", "minimum": 1, "maximum": 10});
    reads(
        json!({"type": "integer", "minimum": 0, "maximum": 10}),
        w.clone(),
    )
    .unwrap();
    reads(json!({"type": "number", "exclusiveMinimum": 0}), w.clone()).unwrap();
    assert!(
        reads(json!({"type": "integer", "minimum": 2}), w.clone())
            .unwrap_err()
            .rule
            .contains("minimum 2")
    );
    assert!(
        reads(
            json!({"type": "integer", "exclusiveMaximum": 10}),
            w.clone()
        )
        .is_err()
    );
    assert!(reads(json!({"type": "integer", "maximum": 5}), w).is_err());

    reads(
        json!({"type": "integer", "multipleOf": 2}),
        json!({"type": "integer", "multipleOf": 4}),
    )
    .unwrap();
    assert!(
        reads(
            json!({"type": "integer", "multipleOf": 4}),
            json!({"type": "integer", "multipleOf": 2})
        )
        .is_err()
    );

    let s = json!({"type": "string", "minLength": 2, "maxLength": 8});
    reads(json!({"type": "string", "maxLength": 10}), s.clone()).unwrap();
    assert!(
        reads(json!({"type": "string", "maxLength": 5}), s.clone())
            .unwrap_err()
            .rule
            .contains("maxLength")
    );
    assert!(reads(json!({"type": "string", "minLength": 3}), s).is_err());
    assert!(
        reads(
            json!({"type": "array", "maxItems": 3}),
            json!({"type": "array"})
        )
        .is_err()
    );
    assert!(
        reads(
            json!({"type": "array", "uniqueItems": true}),
            json!({"type": "array"})
        )
        .is_err()
    );
    // Numeric bounds do not matter when the writer only writes strings.
    reads(json!({"minimum": 5}), json!({"type": "string"})).unwrap();
}

#[test]
fn pattern_and_format_must_stay_identical() {
    let w = json!({"type": "string", "pattern": "^a"});
    reads(w.clone(), w.clone()).unwrap();
    reads(json!({"type": "string"}), w.clone()).unwrap();
    assert!(
        reads(json!({"type": "string", "pattern": "^b"}), w)
            .unwrap_err()
            .rule
            .contains("pattern")
    );
    assert!(
        reads(
            json!({"type": "string", "format": "email"}),
            json!({"type": "string"})
        )
        .is_err()
    );
    // Different drafts disagree on whether `format` is asserted.
    let err = reads(
        json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
               "properties": {"e": {"type": "string", "format": "email"}}}),
        json!({"type": "object", "properties": {"e": {"type": "string", "format": "email"}},
               "required": []}),
    )
    .unwrap_err();
    assert!(err.rule.contains("format"), "{err}");
}

#[test]
fn content_keywords_under_different_drafts_are_refused() {
    // Drafts 6 and 7 assert `contentEncoding` and `contentMediaType`; 2019-09
    // and 2020-12 only annotate with them. Identical keywords under another
    // `$schema` are another rule.
    let draft_7 = "http://json-schema.org/draft-07/schema#";
    for (keyword, value, payload) in [
        (
            "contentEncoding",
            "base64",
            json!({"blob": "!!! not base64"}),
        ),
        (
            "contentMediaType",
            "application/json",
            json!({"blob": "{not json"}),
        ),
    ] {
        let writer = json!({"type": "object",
                            "properties": {"blob": {"type": "string", keyword: value}}});
        let mut reader = writer.clone();
        reader["$schema"] = json!(draft_7);
        // The writer (2020-12) lets the payload through, the reader (draft 7)
        // does not: the reader cannot read what the writer wrote.
        assert!(valid(&writer, payload.clone()), "{keyword}");
        assert!(!valid(&reader, payload), "{keyword}");
        let err = reads(reader, writer).unwrap_err();
        assert_eq!(err.path, "/blob");
        assert!(err.rule.contains(keyword), "{err}");
    }
    // Under one draft, an unchanged keyword is still fine.
    let w = json!({"type": "string", "contentEncoding": "base64"});
    reads(
        json!({"type": "string", "contentEncoding": "base64", "title": "t"}),
        w,
    )
    .unwrap();
}

#[test]
fn spellings_of_one_draft_are_one_draft() {
    // No `$schema` is 2020-12; the trailing `#` and http/https do not change
    // the draft. Declaring it explicitly is not an evolution.
    let body = json!({"type": "object", "properties": {
        "e": {"type": "string", "format": "email", "contentEncoding": "base64"}
    }});
    let with = |draft: Option<&str>| {
        let mut schema = body.clone();
        if let Some(draft) = draft {
            schema["$schema"] = json!(draft);
        }
        schema
    };
    for (a, b) in [
        (None, Some("https://json-schema.org/draft/2020-12/schema")),
        (None, Some("https://json-schema.org/draft/2020-12/schema#")),
        (None, Some("http://json-schema.org/schema#")),
        (
            Some("http://json-schema.org/draft-07/schema#"),
            Some("http://json-schema.org/draft-07/schema"),
        ),
        (
            Some("http://json-schema.org/draft-07/schema#"),
            Some("https://json-schema.org/draft-07/schema#"),
        ),
    ] {
        reads(with(a), with(b)).unwrap_or_else(|e| panic!("{a:?} reading {b:?}: {e}"));
        reads(with(b), with(a)).unwrap_or_else(|e| panic!("{b:?} reading {a:?}: {e}"));
    }
    // Different drafts still are.
    let err = reads(
        with(Some("http://json-schema.org/draft-07/schema#")),
        with(None),
    )
    .unwrap_err();
    assert!(err.rule.contains("format"), "{err}");
}

#[test]
fn content_keywords_are_checked_as_a_pair() {
    // Under drafts 6 and 7 the validator reads `contentMediaType` on the
    // decoded string when `contentEncoding` is present, and skips
    // `contentEncoding` altogether next to a media type it does not know.
    // Dropping one keyword of the pair changes what the other one means.
    let draft_7 = "http://json-schema.org/draft-07/schema#";
    let cases = [
        // Base64 of `[1]`: JSON once decoded, not JSON as it stands.
        (
            json!({"contentEncoding": "base64", "contentMediaType": "application/json"}),
            json!({"contentMediaType": "application/json"}),
            json!("WzFd"),
        ),
        // An unknown media type switches the encoding check off.
        (
            json!({"contentEncoding": "base64", "contentMediaType": "text/plain"}),
            json!({"contentEncoding": "base64"}),
            json!("!! not base64"),
        ),
    ];
    for (writer_content, reader_content, payload) in cases {
        let string = |content: &Value| {
            let mut schema = json!({"$schema": draft_7, "type": "object",
                                    "properties": {"blob": {"type": "string"}}});
            for (key, value) in content.as_object().unwrap() {
                schema["properties"]["blob"][key] = value.clone();
            }
            schema
        };
        let (writer, reader) = (string(&writer_content), string(&reader_content));
        let payload = json!({ "blob": payload });
        // The writer lets the payload through, the reader does not.
        assert!(valid(&writer, payload.clone()), "{writer}");
        assert!(!valid(&reader, payload), "{reader}");
        let err = reads(reader.clone(), writer.clone()).unwrap_err();
        assert_eq!(err.path, "/blob", "{err}");
        assert!(err.rule.contains("content"), "{err}");
        // Unchanged, the pair is still fine.
        reads(writer.clone(), writer).unwrap();
    }
    // A reader without either keyword reads any string.
    reads(
        json!({"$schema": draft_7, "type": "string"}),
        json!({"$schema": draft_7, "type": "string", "contentEncoding": "base64",
               "contentMediaType": "application/json"}),
    )
    .unwrap();
}

#[test]
fn const_and_enum() {
    reads(json!({"enum": ["a", "b"]}), json!({"const": "a"})).unwrap();
    reads(json!({"type": "string"}), json!({"enum": ["a", "b"]})).unwrap();
    assert!(reads(json!({"type": "integer"}), json!({"enum": ["a", 1]})).is_err());
    assert!(
        reads(json!({"const": "a"}), json!({"type": "string"}))
            .unwrap_err()
            .rule
            .contains("fixed set")
    );
}

#[test]
fn additional_properties_schemas() {
    let w = json!({"type": "object", "additionalProperties": {"type": "integer"}});
    reads(
        json!({"type": "object", "additionalProperties": {"type": "number"}}),
        w.clone(),
    )
    .unwrap();
    assert!(
        reads(
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            w.clone()
        )
        .is_err()
    );
    // A property declared only by the reader is governed by the writer's additionalProperties.
    reads(
        json!({"type": "object", "properties": {"x": {"type": "number"}}}),
        w.clone(),
    )
    .unwrap();
    let err = reads(
        json!({"type": "object", "properties": {"x": {"type": "string"}}}),
        w,
    )
    .unwrap_err();
    assert_eq!(err.path, "/x");
}

#[test]
fn unknown_keywords_are_refused_unless_unchanged() {
    // `not` (`anyOf` used to be the example here; alone in a subschema it is
    // now understood, see `any_of_one_of_and_all_of_alone_in_a_subschema`).
    let not =
        json!({"type": "object", "properties": {"v": {"not": {"type": "string", "minLength": 1}}}});
    // Unchanged subtree: fine.
    let mut with_extra = not.clone();
    with_extra["properties"]["note"] = json!({});
    reads(with_extra, not.clone()).unwrap();
    // Changed subtree with a keyword the checker does not understand: refused.
    let changed = json!({"type": "object", "properties": {"v": {"not": {"type": "string"}}}});
    let err = reads(changed.clone(), not.clone()).unwrap_err();
    assert_eq!(err.path, "/v");
    assert!(
        err.rule.contains("`not`") && err.rule.contains("NONE"),
        "{err}"
    );
    // Even a change that is in fact safe (widening) is refused: conservative.
    assert!(reads(not.clone(), changed.clone()).is_err());

    // Through the registry: refused under BACKWARD, accepted under NONE.
    let reason = refused(
        Compatibility::Backward,
        js("t", 1, not.clone()),
        js("t", 2, changed.clone()),
    );
    assert!(reason.contains("`not`"), "{reason}");
    accepted(Compatibility::None, js("t", 1, not), js("t", 2, changed));
}

#[test]
fn refs_are_refused_unless_the_whole_schema_is_unchanged() {
    let with_ref = json!({"$defs": {"m": {"type": "number"}}, "type": "object",
                          "properties": {"a": {"$ref": "#/$defs/m"}}});
    reads(with_ref.clone(), with_ref.clone()).unwrap();
    let mut changed_defs = with_ref.clone();
    changed_defs["$defs"]["m"] = json!({"type": "string"});
    let err = reads(changed_defs, with_ref).unwrap_err();
    assert!(err.rule.contains("$ref"), "{err}");
}

#[test]
fn local_refs_are_resolved() {
    // The shape schema generators emit: named definitions in `$defs`,
    // referenced by JSON pointer.
    let v1 = json!({
        "$defs": {
            "money": {"type": "object", "properties": {"amount": {"type": "integer"}},
                      "required": ["amount"], "additionalProperties": false},
            "line": {"type": "object", "properties": {"price": {"$ref": "#/$defs/money"}},
                     "additionalProperties": false}
        },
        "type": "object",
        "properties": {
            "total": {"$ref": "#/$defs/money", "description": "order total"},
            "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}}
        }
    });
    // Annotations and an unconstrained optional field: safe both ways.
    let mut v2 = v1.clone();
    v2["description"] = json!("an order");
    v2["$defs"]["unused"] = json!({"type": "string"});
    v2["properties"]["note"] = json!({});
    let registry = registry_with(Compatibility::Full, &[js("order", 1, v1.clone())]);
    registry.register(js("order", 2, v2)).unwrap();
    // Widening a definition is backward-safe, not forward-safe; the reason
    // names the payload path reached through the references.
    let mut widened = v1.clone();
    widened["$defs"]["money"]["properties"]["amount"] = json!({"type": "number"});
    reads(widened.clone(), v1.clone()).unwrap();
    let err = reads(v1.clone(), widened).unwrap_err();
    assert_eq!(err.path, "/lines/*/price/amount", "{err}");
    assert!(err.rule.contains("$ref"), "{err}");
    // A root `$ref` with required fields beside it.
    let rooted = |def: Value| {
        json!({"$schema": "http://json-schema.org/draft-07/schema#",
               "$ref": "#/definitions/order", "definitions": {"order": def}})
    };
    let narrow = EventSchema::new("t", 1)
        .with_required_fields(["id"])
        .with_json_schema(rooted(
            json!({"type": "object", "properties": {"id": {"type": "integer"}}}),
        ));
    let wide = EventSchema::new("t", 2)
        .with_required_fields(["id"])
        .with_json_schema(rooted(
            json!({"type": "object", "properties": {"id": {"type": "number"}}}),
        ));
    can_read(&wide, &narrow).unwrap();
    assert_eq!(can_read(&narrow, &wide).unwrap_err().path, "/id");
}

#[test]
fn refs_that_cannot_be_resolved_exactly_are_still_refused() {
    let base = |defs: Value, property: Value| json!({"$defs": defs, "type": "object", "properties": {"a": property}});
    let cases = [
        // Recursive: a tree.
        base(
            json!({"node": {"type": "object", "properties": {"kids": {"type": "array",
                  "items": {"$ref": "#/$defs/node"}}}}}),
            json!({"$ref": "#/$defs/node"}),
        ),
        // By anchor, not by pointer.
        base(
            json!({"m": {"$anchor": "m", "type": "number"}}),
            json!({"$ref": "#m"}),
        ),
        // Constraints beside the reference (applied in 2020-12, ignored in draft 7).
        base(
            json!({"m": {"type": "number"}}),
            json!({"$ref": "#/$defs/m", "minimum": 0}),
        ),
        // Under another base URI.
        base(
            json!({"m": {"$id": "https://example.com/m", "type": "number"}}),
            json!({"$ref": "https://example.com/m"}),
        ),
        // Each definition uses the previous one twice: 2^40 copies inlined.
        base(
            Value::Object(
                (0..40)
                    .map(|i| {
                        let def = if i == 0 {
                            json!({"type": "integer"})
                        } else {
                            let previous = json!({ "$ref": format!("#/$defs/d{}", i - 1) });
                            json!({"properties": {"a": previous, "b": previous}})
                        };
                        (format!("d{i}"), def)
                    })
                    .collect(),
            ),
            json!({"$ref": "#/$defs/d39"}),
        ),
    ];
    for schema in cases {
        let registry = MemorySchemaRegistry::new();
        registry.register(js("t", 1, schema.clone())).unwrap();
        let mut changed = schema.clone();
        changed["description"] = json!("changed");
        let err = reads(changed, schema.clone()).unwrap_err();
        assert!(err.rule.contains("$ref"), "{schema}: {err}");
    }
}

#[test]
fn any_of_one_of_and_all_of_alone_in_a_subschema() {
    let field = |schema: Value| json!({"type": "object", "properties": {"f": schema}});
    let string = json!({"type": "string"});
    let optional = |t: &str| json!({"anyOf": [{"type": t}, {"type": "null"}], "default": null});
    // Making a field nullable is backward-safe, not forward-safe.
    reads(field(optional("string")), field(string.clone())).unwrap();
    let err = reads(field(string.clone()), field(optional("string"))).unwrap_err();
    assert_eq!(err.path, "/f", "{err}");
    // A type list read by a union of its types, and back.
    let listed = json!({"type": ["string", "null"]});
    reads(field(optional("string")), field(listed.clone())).unwrap();
    reads(field(listed), field(optional("string"))).unwrap();
    // Widening inside the union.
    reads(field(optional("number")), field(optional("integer"))).unwrap();
    assert_eq!(
        reads(field(optional("integer")), field(optional("number")))
            .unwrap_err()
            .path,
        "/f"
    );
    // oneOf: the writer's values must match exactly one branch.
    let one_of = |a: &str, b: &str| json!({"oneOf": [{"type": a}, {"type": b}]});
    reads(field(one_of("string", "null")), field(string.clone())).unwrap();
    reads(field(string.clone()), field(one_of("string", "string"))).unwrap();
    assert!(
        reads(
            field(one_of("number", "integer")),
            field(json!({"type": "integer"}))
        )
        .is_err()
    );
    assert!(reads(field(one_of("string", "string")), field(string)).is_err());
    // allOf in the reader: every branch reads the writer.
    let all_of = json!({"allOf": [{"type": "object"}, {"required": ["a"]}]});
    reads(
        all_of.clone(),
        json!({"type": "object", "required": ["a", "b"]}),
    )
    .unwrap();
    assert_eq!(
        reads(all_of, json!({"type": "object", "required": ["b"]}))
            .unwrap_err()
            .path,
        "/a"
    );
    // Beside other keywords, unchanged rules: refused.
    let mixed = json!({"type": "object", "anyOf": [{"required": ["a"]}, {"required": ["b"]}]});
    assert!(reads(mixed, json!({"type": "object", "required": ["a"]})).is_err());
    // The registry agrees with the checker.
    let registry = registry_with(
        Compatibility::Backward,
        &[js("t", 1, field(optional("integer")))],
    );
    registry
        .register(js("t", 2, field(optional("number"))))
        .unwrap();
    registry
        .validate(&common::event("t", 2, json!({"f": null})))
        .unwrap();
}

#[test]
fn one_of_branches_with_a_ref_are_not_disjoint_by_an_ignored_type() {
    // Drafts 6 and 7 ignore a `$ref`'s siblings: the second branch is
    // `{"minimum": 0}`, which every string matches too, so the writer's
    // strings match both branches and the reader's `oneOf` refuses them.
    let d7 = "http://json-schema.org/draft-07/schema#";
    let writer = json!({"$schema": d7, "type": "object",
        "properties": {"id": {"type": "string"}}, "required": ["id"]});
    let reader = json!({"$schema": d7, "type": "object",
        "definitions": {"counter": {"minimum": 0}},
        "properties": {"id": {"oneOf": [
            {"type": "string"},
            {"$ref": "#/definitions/counter", "type": "integer"}
        ]}},
        "required": ["id"]});
    assert!(valid(&writer, json!({"id": "o-1"})));
    assert!(!valid(&reader, json!({"id": "o-1"})));
    let err = reads(reader.clone(), writer.clone()).unwrap_err();
    assert_eq!(err.path, "/id", "{err}");
    let reason = refused(
        Compatibility::Backward,
        js("t", 1, writer.clone()),
        js("t", 2, reader),
    );
    assert!(reason.contains("/id"), "{reason}");
    // Under 2020-12 the sibling `type` applies, so the branches are disjoint.
    let d2020 = "https://json-schema.org/draft/2020-12/schema";
    let mut writer = writer;
    writer["$schema"] = json!(d2020);
    let reader = json!({"$schema": d2020, "type": "object",
        "$defs": {"counter": {"minimum": 0}},
        "properties": {"id": {"oneOf": [
            {"type": "string"},
            {"$ref": "#/$defs/counter", "type": "integer"}
        ]}},
        "required": ["id"]});
    assert!(valid(&reader, json!({"id": "o-1"})));
    reads(reader, writer).unwrap();
}

#[test]
fn a_writer_type_beside_a_ref_does_not_make_it_disjoint_from_one_of_branches() {
    // Drafts 6 and 7 ignore a `$ref`'s siblings: the writer's `id` is
    // `{"minimum": 0}`, any value, not only strings; an integer matches both
    // of the reader's branches, so the reader's `oneOf` refuses it.
    let d7 = "http://json-schema.org/draft-07/schema#";
    let writer = json!({"$schema": d7, "type": "object",
        "definitions": {"code": {"minimum": 0}},
        "properties": {"id": {"$ref": "#/definitions/code", "type": "string"}}});
    let reader = json!({"$schema": d7, "type": "object",
        "properties": {"id": {"oneOf": [{}, {"type": "integer"}]}}});
    assert!(valid(&writer, json!({"id": 5})));
    assert!(!valid(&reader, json!({"id": 5})));
    let err = reads(reader.clone(), writer.clone()).unwrap_err();
    assert_eq!(err.path, "/id", "{err}");
    let reason = refused(
        Compatibility::Backward,
        js("t", 1, writer.clone()),
        js("t", 2, reader.clone()),
    );
    assert!(reason.contains("/id"), "{reason}");
    // Under 2020-12 the writer's `type` applies: only strings, which match
    // the first branch alone.
    let d2020 = "https://json-schema.org/draft/2020-12/schema";
    let (mut writer, mut reader) = (writer, reader);
    writer["$schema"] = json!(d2020);
    reader["$schema"] = json!(d2020);
    assert!(!valid(&writer, json!({"id": 5})));
    reads(reader, writer).unwrap();
}

#[test]
fn draft_4_schemas_are_not_reasoned_about() {
    let d4 = json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
                    "properties": {"n": {"type": "integer"}}});
    let mut d4b = d4.clone();
    d4b["properties"]["n"] = json!({"type": "number"});
    assert!(reads(d4b, d4).unwrap_err().rule.contains("draft"));
}

#[test]
fn required_fields_only_schemas() {
    // The original API: only top-level required fields.
    can_read(&rf("t", 2, &["a"]), &rf("t", 1, &["a", "b"])).unwrap();
    let err = can_read(&rf("t", 2, &["a", "c"]), &rf("t", 1, &["a"])).unwrap_err();
    assert_eq!(err.path, "/c");
    // Reader with no rules reads anything.
    can_read(
        &EventSchema::new("t", 2),
        &js("t", 1, json!({"type": "string"})),
    )
    .unwrap();
    // Writer with no rules: a reader requiring fields cannot read it.
    let err = can_read(&rf("t", 2, &["a"]), &EventSchema::new("t", 1)).unwrap_err();
    assert_eq!(err.path, "");
    assert!(err.rule.contains("object"), "{err}");
}

/// Whether `payload` is valid under `schema` (through a registry, as on publish).
fn valid(schema: &Value, payload: Value) -> bool {
    let registry = MemorySchemaRegistry::new();
    registry.register(js("v", 1, schema.clone())).unwrap();
    registry.validate(&common::event("v", 1, payload)).is_ok()
}

#[test]
fn integer_bounds_beyond_2_pow_53_are_compared_exactly() {
    // 2^53 and 2^53 + 1 are the same `f64`, but not the same bound.
    let two_53 = 9_007_199_254_740_992_u64;
    let writer = json!({"type": "integer", "maximum": two_53 + 1});
    let reader = json!({"type": "integer", "maximum": two_53});
    // A real incompatibility: the writer allows 2^53 + 1, the reader refuses it.
    assert!(valid(&writer, json!(two_53 + 1)));
    assert!(!valid(&reader, json!(two_53 + 1)));
    let err = reads(reader.clone(), writer.clone()).unwrap_err();
    assert!(err.rule.contains("maximum"), "{err}");
    reads(writer, reader).unwrap();

    let low = -9_007_199_254_740_992_i64;
    let writer = json!({"minimum": low - 1});
    let reader = json!({"minimum": low});
    assert!(valid(&writer, json!(low - 1)) && !valid(&reader, json!(low - 1)));
    assert!(reads(reader.clone(), writer.clone()).is_err());
    reads(writer, reader).unwrap();

    // Exclusive bounds.
    assert!(
        reads(
            json!({"exclusiveMaximum": two_53}),
            json!({"maximum": two_53})
        )
        .is_err()
    );
    reads(
        json!({"exclusiveMaximum": two_53 + 1}),
        json!({"maximum": two_53}),
    )
    .unwrap();
    reads(
        json!({"maximum": two_53}),
        json!({"exclusiveMaximum": two_53}),
    )
    .unwrap();
    assert!(
        reads(
            json!({"maximum": two_53}),
            json!({"exclusiveMaximum": two_53 + 1})
        )
        .is_err()
    );
    assert!(reads(json!({"exclusiveMinimum": low}), json!({"minimum": low})).is_err());
    reads(
        json!({"exclusiveMinimum": low - 1}),
        json!({"minimum": low}),
    )
    .unwrap();
    // Integers against fractional bounds.
    reads(json!({"minimum": 2.5}), json!({"minimum": 3})).unwrap();
    assert!(reads(json!({"minimum": 3}), json!({"minimum": 2.5})).is_err());
    reads(json!({"maximum": -2}), json!({"maximum": -2.5})).unwrap();
    assert!(reads(json!({"maximum": -3}), json!({"maximum": -2.5})).is_err());
    reads(json!({"maximum": 1e19}), json!({"maximum": u64::MAX})).unwrap_err();
    reads(json!({"maximum": u64::MAX}), json!({"maximum": 1e19})).unwrap();
    reads(
        json!({"maximum": 18_446_744_073_709_551_616.0}),
        json!({"maximum": u64::MAX}),
    )
    .unwrap();
    reads(json!({"maximum": 1e20}), json!({"maximum": u64::MAX})).unwrap();
}

#[test]
fn multiple_of_is_checked_exactly() {
    // 9007199254740995 rounds to the `f64` 9007199254740996, a multiple of 3;
    // 9007199254740995 itself is not.
    let writer = json!({"type": "integer", "multipleOf": 9_007_199_254_740_995_u64});
    let reader = json!({"type": "integer", "multipleOf": 3});
    assert!(valid(&writer, json!(9_007_199_254_740_995_u64)));
    assert!(!valid(&reader, json!(9_007_199_254_740_995_u64)));
    let err = reads(reader, writer.clone()).unwrap_err();
    assert!(err.rule.contains("multiples of 3"), "{err}");
    reads(writer.clone(), writer).unwrap();

    // Decimal divisors are read as the decimals they are written as.
    reads(json!({"multipleOf": 0.3}), json!({"multipleOf": 0.6})).unwrap();
    reads(json!({"multipleOf": 0.1}), json!({"multipleOf": 0.7})).unwrap();
    reads(json!({"multipleOf": 0.5}), json!({"multipleOf": 3})).unwrap();
    // A fractional divisor is checked on the value as an `f64`: the exact
    // multiple of 3 that is -(2^53 + 1) reads as -2^53, no multiple of 0.3.
    let big = -9_007_199_254_740_993_i64;
    assert!(valid(&json!({"multipleOf": 3}), json!(big)));
    assert!(!valid(&json!({"multipleOf": 0.3}), json!(big)));
    assert!(reads(json!({"multipleOf": 0.3}), json!({"multipleOf": 3})).is_err());
    reads(json!({"multipleOf": 0.25}), json!({"multipleOf": 1.5})).unwrap();
    assert!(reads(json!({"multipleOf": 0.7}), json!({"multipleOf": 0.1})).is_err());
    assert!(reads(json!({"multipleOf": 2}), json!({"multipleOf": 0.5})).is_err());
    assert!(reads(json!({"multipleOf": 0.2}), json!({"multipleOf": 0.5})).is_err());
    assert!(reads(json!({"multipleOf": 1e-300}), json!({"multipleOf": 1e300})).is_err());
}

#[test]
fn integral_float_counts_are_counts() {
    // `2.0` is an integer in every draft the checker reads (JSON Schema
    // compares numbers by value), and the validator accepts it.
    assert!(valid(&json!({"minLength": 2.0}), json!("ab")));
    reads(
        json!({"minLength": 2.0}),
        json!({"type": "string", "minLength": 3}),
    )
    .unwrap();
    reads(
        json!({"type": "string", "minLength": 3}),
        json!({"minLength": 3.0, "type": "string"}),
    )
    .unwrap();
    reads(
        json!({"type": "array", "maxItems": 4}),
        json!({"type": "array", "maxItems": 4.0}),
    )
    .unwrap();
    let err = reads(
        json!({"type": "string", "maxLength": 2.0}),
        json!({"type": "string"}),
    )
    .unwrap_err();
    assert!(err.rule.contains("tightened"), "{err}");
}
