//! Seeded random-input hunt over what event-schema takes from callers:
//! schema documents (generated from the keywords, then mutated), their
//! registration and compatibility checks under every level, payload
//! validation, and deep nesting of schemas and payloads. See event-core's
//! `tests/fuzz_support` for the knobs (`A3S_FUZZ_ITERS`, ...).
#![allow(clippy::unwrap_used)]

#[path = "../../event-core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use event_core::{Error, Event};
use event_schema::{Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry, can_read};
use fuzz_support::{Rng, hostile_value, mutate_bytes, mutate_json, nested, random_json, run};
use serde_json::{Map, Value, json};

const LEVELS: [Compatibility; 7] = [
    Compatibility::Backward,
    Compatibility::BackwardTransitive,
    Compatibility::Forward,
    Compatibility::ForwardTransitive,
    Compatibility::Full,
    Compatibility::FullTransitive,
    Compatibility::None,
];

const DRAFTS: &[&str] = &[
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "http://json-schema.org/draft-07/schema#",
    "http://json-schema.org/draft-06/schema#",
    "http://json-schema.org/draft-04/schema#",
    "http://example.com/unknown",
];

/// A number at a boundary the checker and the validator must agree on.
fn number(rng: &mut Rng) -> Value {
    rng.pick(&[
        json!(0),
        json!(1),
        json!(-1),
        json!(0.5),
        json!(0.1),
        json!(1e-300),
        json!(1e300),
        json!(f64::MAX),
        json!(9_007_199_254_740_993_u64),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(3),
        json!(10),
        json!(2.5),
    ])
    .clone()
}

/// A random JSON Schema built from the keywords, `depth` levels deep.
fn schema(rng: &mut Rng, depth: usize) -> Value {
    if depth == 0 || rng.one_in(6) {
        return match rng.below(5) {
            0 => json!(true),
            1 => json!(false),
            2 => json!({}),
            _ => json!({"type": rng.pick(&["string", "integer", "number", "boolean", "null"])}),
        };
    }
    let mut map = Map::new();
    for _ in 0..1 + rng.below(4) {
        let (key, value) = match rng.below(24) {
            0 => (
                "type",
                if rng.one_in(3) {
                    json!(["object", "null", "integer"])
                } else {
                    json!(rng.pick(&["object", "array", "string", "number", "integer"]))
                },
            ),
            1..=3 => {
                let mut props = Map::new();
                for _ in 0..1 + rng.below(3) {
                    props.insert(
                        rng.pick(&["a", "b", "id", "~/x", "é", ""]).to_string(),
                        schema(rng, depth - 1),
                    );
                }
                ("properties", Value::Object(props))
            }
            4 => ("required", json!(["a", "id"][..1 + rng.below(2)])),
            5 => (
                "additionalProperties",
                if rng.one_in(2) {
                    json!(rng.one_in(2))
                } else {
                    schema(rng, depth - 1)
                },
            ),
            6 => ("items", schema(rng, depth - 1)),
            7 => ("enum", json!([1, "a", null, [1], {"k": 1}])),
            8 => ("const", random_json(rng, 2)),
            9 => ("minimum", number(rng)),
            10 => ("maximum", number(rng)),
            11 => ("exclusiveMinimum", number(rng)),
            12 => ("exclusiveMaximum", number(rng)),
            13 => ("multipleOf", number(rng)),
            14 => ("minLength", number(rng)),
            15 => ("maxItems", number(rng)),
            16 => ("uniqueItems", json!(rng.one_in(2))),
            17 => (
                "pattern",
                json!(rng.pick(&["^a", "(", "a{99999}", "[", "\\p{L}", "(?=a)", "a*?b", ""])),
            ),
            18 => (
                "format",
                json!(rng.pick(&["email", "date-time", "uri", "regex", "ipv4", "bogus"])),
            ),
            19 => (
                "$ref",
                json!(rng.pick(&[
                    "#",
                    "#/properties/a",
                    "#/$defs/x",
                    "http://x/y",
                    "#/nope",
                    "%"
                ])),
            ),
            20 => ("$defs", json!({"x": schema(rng, depth - 1)})),
            21 => (
                *rng.pick(&["allOf", "anyOf", "oneOf"]),
                json!([schema(rng, depth - 1), schema(rng, depth - 1)]),
            ),
            22 => ("not", schema(rng, depth - 1)),
            _ => ("$schema", json!(rng.pick(DRAFTS))),
        };
        map.insert(key.to_owned(), value);
    }
    Value::Object(map)
}

fn event_schema(rng: &mut Rng, version: u32) -> EventSchema {
    let mut s = EventSchema::new("t", version);
    if rng.one_in(3) {
        s.required_fields = ["a", "id", "", "a"][..rng.below(4)]
            .iter()
            .map(|f| (*f).to_owned())
            .collect();
    }
    if !rng.one_in(5) {
        let mut doc = schema(rng, 4);
        if rng.one_in(3) {
            mutate_json(rng, &mut doc);
        }
        s.json_schema = Some(doc);
    }
    s
}

/// Registration and validation results are the documented variants.
fn expect(what: &str, result: &event_core::Result<()>) {
    match result {
        Ok(()) | Err(Error::Schema { .. } | Error::SchemaValidation { .. }) => {}
        Err(other) => panic!("{what}: unexpected error variant: {other:?}"),
    }
}

#[test]
fn hostile_schemas_register_or_are_refused_and_validate_without_panicking() {
    let mut registered = 0;
    run("schema/register", 1500, |rng| {
        let registry = MemorySchemaRegistry::new();
        registry
            .set_default_compatibility(*rng.pick(&LEVELS))
            .unwrap();
        let mut accepted: Vec<EventSchema> = Vec::new();
        for version in 1..=1 + rng.below(3) as u32 {
            let candidate = event_schema(rng, version);
            let _ = registry.test_compatibility(&candidate);
            let result = registry.register(candidate.clone());
            expect("register", &result);
            if result.is_ok() {
                registered += 1;
                accepted.push(candidate);
            }
        }
        for _ in 0..4 {
            let payload = if rng.one_in(3) {
                hostile_value(rng)
            } else {
                random_json(rng, 4)
            };
            for schema in &accepted {
                let event = Event::typed(
                    "events.a.b",
                    "a",
                    "t",
                    schema.version,
                    "s",
                    "x",
                    payload.clone(),
                );
                let result = registry.validate(&event);
                expect("validate", &result);
                if let Err(Error::SchemaValidation { path, .. }) = &result {
                    assert!(path.is_empty() || path.starts_with('/'), "{path:?}");
                }
            }
        }
    });
    assert!(registered > 0);
}

#[test]
fn compatibility_checks_never_panic_and_are_reflexive() {
    run("schema/compat", 3000, |rng| {
        let a = event_schema(rng, 1);
        let b = event_schema(rng, 2);
        let _ = can_read(&a, &b);
        let _ = can_read(&b, &a);
        // every schema reads itself
        assert!(can_read(&a, &a).is_ok(), "{:?}", a.json_schema);
        let mut c = a.clone();
        if let Some(doc) = c.json_schema.as_mut() {
            mutate_json(rng, doc);
        }
        if let Err(e) = can_read(&c, &a) {
            assert!(e.path.is_empty() || e.path.starts_with('/'), "{e}");
            assert!(!e.rule.is_empty());
        }
    });
}

#[test]
fn mutated_schema_documents_decode_or_fail_cleanly() {
    run("schema/decode", 2000, |rng| {
        let version = 1 + rng.below(5) as u32;
        let s = event_schema(rng, version);
        let mut bytes = serde_json::to_vec(&s).unwrap();
        let back: EventSchema = match serde_json::from_slice(&bytes) {
            Ok(back) => back,
            // the generator nests values deeper than JSON text can carry
            Err(e) if e.to_string().contains("recursion limit") => return,
            Err(e) => panic!("{e}"),
        };
        if s.json_schema != Some(Value::Null) {
            // (`Some(null)`, which registration refuses, reads back as no
            // JSON Schema: `"jsonSchema": null` is how a document says none)
            assert_eq!(back, s);
        }
        mutate_bytes(rng, &mut bytes);
        if let Ok(decoded) = serde_json::from_slice::<EventSchema>(&bytes) {
            let registry = MemorySchemaRegistry::new();
            expect("register decoded", &registry.register(decoded));
        }
    });
}

/// A schema as deep as JSON text can carry (and deeper, built in memory),
/// with payloads as deep, must be refused or validated, never overflow the
/// stack.
#[test]
fn deep_schemas_and_payloads_do_not_overflow_the_stack() {
    run("schema/deep", 12, |rng| {
        let depth = *rng.pick(&[60usize, 126, 127, 300]);
        let wrap = *rng.pick(&[
            "items",
            "not",
            "additionalProperties",
            "properties",
            "allOf",
            "$ref",
        ]);
        let mut doc = json!({"type": "integer"});
        for _ in 0..depth {
            doc = match wrap {
                "properties" => json!({"properties": {"a": doc}}),
                "allOf" => json!({"allOf": [doc]}),
                "$ref" => json!({"$defs": {"x": doc}, "$ref": "#/$defs/x"}),
                key => json!({ key: doc }),
            };
        }
        let registry = MemorySchemaRegistry::new();
        let schema = EventSchema::new("deep", 1).with_json_schema(doc.clone());
        if std::env::var_os("A3S_FUZZ_VERBOSE").is_some() {
            eprintln!("{wrap} x {depth}");
        }
        let result = registry.register(schema.clone());
        expect("register deep", &result);
        let _ = can_read(&schema, &schema);
        let _ = can_read(
            &schema,
            &EventSchema::new("deep", 2).with_json_schema(json!({"type": "object"})),
        );
        if result.is_ok() {
            for levels in [1, 126, 127, 1000] {
                let payload = nested(levels, wrap == "properties", json!(1));
                let event = Event::typed("events.a.b", "a", "deep", 1, "s", "x", payload);
                expect("validate deep", &registry.validate(&event));
            }
        }
        // through JSON text, as a schema file would arrive
        if let Ok(text) = serde_json::to_string(&schema)
            && let Ok(decoded) = serde_json::from_str::<EventSchema>(&text)
        {
            let registry = MemorySchemaRegistry::new();
            expect("register decoded deep", &registry.register(decoded));
        }
    });
}

// --- regressions: minimal inputs the hunt found ------------------------------

/// `levels` nested `items` around `{"type": "integer"}`: a valid schema that
/// serde_json clones, serialises and drops without trouble.
fn deep_items(levels: usize) -> Value {
    let mut doc = json!({"type": "integer"});
    for _ in 0..levels {
        doc = json!({ "items": doc });
    }
    doc
}

/// Registering a schema nested 500 levels deep (built in memory: no JSON
/// text carries more than 128) used to abort the process with a stack
/// overflow in the JSON Schema compiler. It is now refused up front.
#[test]
fn regression_a_schema_nested_too_deep_to_compile_is_refused() {
    let registry = MemorySchemaRegistry::new();
    let schema = EventSchema::new("deep", 1).with_json_schema(deep_items(500));
    match registry.register(schema.clone()) {
        Err(Error::Schema { reason, .. }) => {
            assert!(reason.contains("deep"), "{reason}");
            // One sentence, not a source line's indentation.
            assert!(!reason.contains("  "), "{reason:?}");
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
    assert!(registry.test_compatibility(&schema).is_err());
    // as deep as a JSON document can be still compiles
    let ok = EventSchema::new("deep", 1).with_json_schema(deep_items(120));
    registry.register(ok).unwrap();
}

/// The compatibility checker compiles the reader's schema to test each
/// value of a writer's `enum`: a reader nested 500 levels deep used to
/// abort the process there too.
#[test]
fn regression_checking_an_enum_against_a_too_deep_reader_is_refused() {
    let writer = EventSchema::new("t", 1).with_json_schema(json!({"enum": [[1]]}));
    let reader = EventSchema::new("t", 2).with_json_schema(deep_items(500));
    let err = can_read(&reader, &writer).unwrap_err();
    assert!(err.rule.contains("deep"), "{err}");
}

/// The compatibility checker walks reader and writer together, one call per
/// level: a reader nested 300 levels deep under `additionalProperties`,
/// checked against an open object writer, used to abort the process with a
/// stack overflow.
#[test]
fn regression_a_too_deep_schema_is_refused_by_the_checker() {
    let mut deep = json!({"type": "integer"});
    for _ in 0..300 {
        deep = json!({ "additionalProperties": deep });
    }
    let reader = EventSchema::new("t", 2).with_json_schema(deep);
    let writer = EventSchema::new("t", 1).with_json_schema(json!({"type": "object"}));
    let err = can_read(&reader, &writer).unwrap_err();
    assert!(err.rule.contains("deep"), "{err}");
    let err = can_read(&writer, &reader).unwrap_err();
    assert!(err.rule.contains("deep"), "{err}");
}

/// The union rules try one branch after another (and a writer's types one
/// at a time): nested 30 levels deep, with every attempt failing only at
/// the bottom, that was 2^30 attempts under the registry's write lock. The
/// checker gives up after a fixed amount of work and says so.
#[test]
fn regression_backtracking_through_unions_is_bounded() {
    let mut writer = json!({"type": "string"});
    let mut reader = json!({"type": "integer"});
    for _ in 0..30 {
        writer = json!({"type": ["object", "array"], "properties": {"a": writer}});
        reader = json!({"anyOf": [{"type": ["object", "array"], "properties": {"a": reader}}]});
    }
    let writer = EventSchema::new("t", 1).with_json_schema(writer);
    let reader = EventSchema::new("t", 2).with_json_schema(reader);
    let err = can_read(&reader, &writer).unwrap_err();
    assert!(err.rule.contains("too complex"), "{err}");
}

/// Each value of a writer's `enum` is checked by the validator against the
/// reader's schema: the reader used to be compiled once per value, so adding
/// a code to a 20,000-value list took minutes (holding the registry's
/// write lock). It is compiled once.
#[test]
fn regression_a_large_enum_is_checked_with_one_compiled_reader() {
    let codes: Vec<Value> = (0..20_000).map(|i| json!(format!("code-{i}"))).collect();
    let mut more = codes.clone();
    more.push(json!("code-new"));
    let field =
        |values: Vec<Value>| json!({"type": "object", "properties": {"code": {"enum": values}}});
    let v1 = EventSchema::new("t", 1).with_json_schema(field(codes));
    let v2 = EventSchema::new("t", 2).with_json_schema(field(more));
    let started = std::time::Instant::now();
    can_read(&v2, &v1).unwrap();
    let err = can_read(&v1, &v2).unwrap_err();
    assert!(err.rule.contains("code-new"), "{err}");
    // Minutes before; a fraction of a second now (generous for a loaded debug build).
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
