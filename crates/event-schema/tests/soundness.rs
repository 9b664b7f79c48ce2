//! Property test of the compatibility checker's one promise: when
//! `can_read(reader, writer)` accepts, every payload valid under the writer
//! is valid under the reader (as the registry validates it on publish).
//!
//! Schema pairs are generated from the keywords the checker understands
//! (the reader often a mutation of the writer, as in a real evolution), with
//! numbers chosen around `f64`'s precision limits and decimal divisors,
//! and each side sometimes declaring a `$schema` draft (drafts disagree on
//! whether `format` and the content keywords are asserted); payloads from
//! the same vocabulary. Deterministic: fixed seeds, or
//! `SOUNDNESS_SEED` to explore another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Rng;

use event_schema::{Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry, can_read};
use serde_json::{Map, Value, json};

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "integer", "string",
];
const NAMES: [&str; 3] = ["a", "b", "é/~"];
/// `$schema` values (none: 2020-12).
const DRAFTS: [Option<&str>; 6] = [
    None,
    Some("http://json-schema.org/draft-06/schema#"),
    Some("http://json-schema.org/draft-07/schema#"),
    Some("https://json-schema.org/draft-07/schema"),
    Some("https://json-schema.org/draft/2019-09/schema"),
    Some("https://json-schema.org/draft/2020-12/schema"),
];
/// Strings that some formats, encodings and media types accept and others not.
const STRINGS: [&str; 13] = [
    "",
    "a",
    "ab",
    "ba",
    "abb",
    "é",
    "a@b.co",
    "2020-01-01",
    "1.2.3.4",
    "YWI=",
    "WzFd",
    "[1]",
    "!!",
];

fn numbers() -> Vec<Value> {
    let two_53 = 9_007_199_254_740_992_u64;
    vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(2),
        json!(3),
        json!(0.5),
        json!(1.0),
        json!(0.1),
        json!(0.3),
        json!(0.7),
        json!(two_53),
        json!(two_53 + 1),
        json!(two_53 + 3),
        json!(-(two_53 as i64) - 1),
        json!(u64::MAX),
        json!(1e300),
    ]
}

fn divisors() -> Vec<Value> {
    vec![
        json!(0.1),
        json!(0.3),
        json!(0.5),
        json!(0.7),
        json!(2),
        json!(3),
        json!(4),
        json!(9_007_199_254_740_995_u64),
    ]
}

fn schema(rng: &mut Rng, depth: u32) -> Value {
    if rng.percent(8) {
        return Value::Bool(rng.percent(70));
    }
    if depth > 0 && rng.percent(12) {
        // A combinator alone (as generators write `anyOf: [T, null]`).
        let keyword = rng.pick(&["anyOf", "oneOf", "allOf"]);
        let branches: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| {
                if rng.percent(30) {
                    json!({"type": rng.pick(&TYPES)})
                } else {
                    schema(rng, depth - 1)
                }
            })
            .collect();
        return json!({ keyword: branches });
    }
    let mut map = Map::new();
    if rng.percent(60) {
        let a = rng.pick(&TYPES);
        let b = rng.pick(&TYPES);
        map.insert(
            "type".into(),
            if rng.percent(50) || a == b {
                json!(a)
            } else {
                json!([a, b])
            },
        );
    }
    let nums = numbers();
    if rng.percent(8) {
        map.insert(
            "enum".into(),
            json!([rng.pick(&nums), rng.pick(&nums), "a", null, {"a": 1}]),
        );
    }
    if rng.percent(4) {
        map.insert("const".into(), rng.pick(&nums));
    }
    for key in ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"] {
        if rng.percent(15) {
            map.insert(key.into(), rng.pick(&nums));
        }
    }
    if rng.percent(15) {
        map.insert("multipleOf".into(), rng.pick(&divisors()));
    }
    for key in [
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
    ] {
        if rng.percent(6) {
            map.insert(key.into(), json!(rng.below(3)));
        }
    }
    if rng.percent(6) {
        map.insert("pattern".into(), json!(rng.pick(&["^a", "b$"])));
    }
    if rng.percent(6) {
        map.insert("uniqueItems".into(), json!(rng.percent(50)));
    }
    if rng.percent(6) {
        map.insert("format".into(), json!(rng.pick(&["email", "date", "ipv4"])));
    }
    if rng.percent(4) {
        map.insert("contentEncoding".into(), json!("base64"));
    }
    if rng.percent(4) {
        // `text/plain` is a media type the validator does not check.
        map.insert(
            "contentMediaType".into(),
            json!(rng.pick(&["application/json", "text/plain"])),
        );
    }
    if depth > 0 {
        if rng.percent(25) {
            map.insert("items".into(), schema(rng, depth - 1));
        }
        if rng.percent(45) {
            let mut properties = Map::new();
            for name in NAMES {
                if rng.percent(50) {
                    properties.insert(name.into(), schema(rng, depth - 1));
                }
            }
            map.insert("properties".into(), Value::Object(properties));
        }
        if rng.percent(25) {
            let required: Vec<&str> = NAMES.into_iter().filter(|_| rng.percent(40)).collect();
            map.insert("required".into(), json!(required));
        }
        if rng.percent(25) {
            let extra = if rng.percent(50) {
                Value::Bool(rng.percent(50))
            } else {
                schema(rng, depth - 1)
            };
            map.insert("additionalProperties".into(), extra);
        }
    }
    if rng.percent(4) {
        map.insert("description".into(), json!("annotation"));
    }
    Value::Object(map)
}

/// `schema` with some keywords dropped, some subschemas mutated and some
/// keywords added: a plausible next version.
fn mutate(rng: &mut Rng, schema_: &Value, depth: u32) -> Value {
    let Value::Object(map) = schema_ else {
        return schema(rng, depth);
    };
    if rng.percent(10) {
        return schema(rng, depth);
    }
    let mut next = Map::new();
    for (key, value) in map {
        if rng.percent(15) {
            continue;
        }
        let value = match (key.as_str(), value) {
            ("items" | "additionalProperties", sub) if depth > 0 => mutate(rng, sub, depth - 1),
            ("anyOf" | "oneOf" | "allOf", Value::Array(branches)) if depth > 0 => {
                let mut next = Vec::new();
                for branch in branches {
                    if rng.percent(85) {
                        next.push(mutate(rng, branch, depth - 1));
                    }
                }
                if next.is_empty() || rng.percent(20) {
                    next.push(schema(rng, depth - 1));
                }
                Value::Array(next)
            }
            ("properties", Value::Object(properties)) if depth > 0 => {
                let mut kept = Map::new();
                for (name, sub) in properties {
                    if rng.percent(85) {
                        kept.insert(name.clone(), mutate(rng, sub, depth - 1));
                    }
                }
                Value::Object(kept)
            }
            // A bound or divisor moved to another value (often its neighbour
            // in the list: 2^53 and 2^53 + 1 are one `f64`).
            (_, Value::Number(_)) if rng.percent(40) => {
                let nums = numbers();
                let at = nums.iter().position(|n| n == value).unwrap_or(0);
                let step = rng.below(3);
                nums.get((at + step).saturating_sub(1))
                    .cloned()
                    .unwrap_or_else(|| value.clone())
            }
            _ => value.clone(),
        };
        next.insert(key.clone(), value);
    }
    if let Value::Object(extra) = schema(rng, depth) {
        for (key, value) in extra {
            if rng.percent(20) {
                next.insert(key, value);
            }
        }
    }
    Value::Object(next)
}

fn payload(rng: &mut Rng, pool: &[Value], depth: u32) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.percent(50)),
        2 => rng.pick(&numbers()),
        3 if !pool.is_empty() => rng.pick(pool),
        3 => rng.pick(&numbers()),
        4 => json!(rng.pick(&STRINGS)),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| payload(rng, pool, depth - 1))
                .collect(),
        ),
        _ => {
            let mut object = Map::new();
            for name in NAMES.iter().chain(&["z"]) {
                if rng.percent(50) {
                    object.insert((*name).to_owned(), payload(rng, pool, depth - 1));
                }
            }
            Value::Object(object)
        }
    }
}

/// `schema` with some of its subschemas moved to `$defs` and referenced
/// (`{"$ref": "#/$defs/..."}`, sometimes with an annotation beside it, as
/// schema generators write them, and sometimes with a `type` beside it,
/// which drafts 6 and 7 ignore and 2019-09 and 2020-12 apply): the checker
/// resolves local references where that is exact. Subschemas of
/// properties, items, additional properties and union branches, at any
/// depth.
fn extract_defs(rng: &mut Rng, schema: &mut Value) {
    fn walk(rng: &mut Rng, sub: &mut Value, defs: &mut Map<String, Value>) {
        let Value::Object(map) = sub else { return };
        let mut children: Vec<&mut Value> = Vec::new();
        for (key, value) in map.iter_mut() {
            match (key.as_str(), value) {
                ("properties", Value::Object(properties)) => {
                    children.extend(properties.values_mut())
                }
                ("anyOf" | "oneOf" | "allOf", Value::Array(branches)) => {
                    children.extend(branches.iter_mut());
                }
                ("items" | "additionalProperties", value) => children.push(value),
                _ => {}
            }
        }
        for child in children {
            walk(rng, child, defs);
            if rng.percent(40) {
                let name = format!("d{}", defs.len());
                let mut reference = json!({ "$ref": format!("#/$defs/{name}") });
                if rng.percent(30) {
                    reference["description"] = json!("referenced");
                } else if rng.percent(30) {
                    reference["type"] = json!(rng.pick(&TYPES));
                }
                defs.insert(name, std::mem::replace(child, reference));
            }
        }
    }
    let mut defs = Map::new();
    walk(rng, schema, &mut defs);
    if let Value::Object(map) = schema
        && !defs.is_empty()
    {
        map.insert("$defs".into(), Value::Object(defs));
    }
}

/// Every number in `schema` (bounds, divisors, enum values).
fn collect_numbers(schema: &Value, into: &mut Vec<Value>) {
    match schema {
        Value::Number(_) => into.push(schema.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_numbers(item, into)),
        Value::Object(map) => map.values().for_each(|value| collect_numbers(value, into)),
        _ => {}
    }
}

#[test]
fn an_accepted_evolution_never_refuses_a_payload_the_writer_allowed() {
    let seeds: Vec<u64> = match std::env::var("SOUNDNESS_SEED") {
        Ok(seed) => vec![seed.parse().expect("SOUNDNESS_SEED is a u64")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        search(seed);
    }
}

fn search(seed: u64) {
    let mut rng = Rng(seed);
    let mut proved = 0;
    for round in 0..2_500 {
        let writer = schema(&mut rng, 2);
        let mut reader = if rng.percent(75) {
            mutate(&mut rng, &writer, 2)
        } else {
            schema(&mut rng, 2)
        };
        let mut writer = writer;
        for side in [&mut writer, &mut reader] {
            if rng.percent(25) {
                extract_defs(&mut rng, side);
            }
            if let (Value::Object(map), Some(draft)) = (side, rng.pick(&DRAFTS))
                && rng.percent(30)
            {
                map.insert("$schema".into(), json!(draft));
            }
        }
        let writer = EventSchema::new("w", 1)
            .with_json_schema(writer)
            .with_required_fields(if rng.percent(20) { vec!["a"] } else { vec![] });
        let reader = EventSchema::new("r", 1)
            .with_json_schema(reader)
            .with_required_fields(if rng.percent(20) { vec!["a"] } else { vec![] });
        let registry = MemorySchemaRegistry::new().with_default_compatibility(Compatibility::None);
        if registry.register(writer.clone()).is_err() || registry.register(reader.clone()).is_err()
        {
            continue; // not a valid schema: nothing to check
        }
        if can_read(&reader, &writer).is_err() {
            continue;
        }
        proved += 1;
        // Payload numbers are often the schemas' own bounds and divisors.
        let mut pool = Vec::new();
        for side in [&writer, &reader] {
            collect_numbers(side.json_schema.as_ref().unwrap(), &mut pool);
        }
        for _ in 0..150 {
            let value = payload(&mut rng, &pool, 3);
            let written = registry.validate(&common::event("w", 1, value.clone()));
            let read = registry.validate(&common::event("r", 1, value.clone()));
            assert!(
                written.is_err() || read.is_ok(),
                "seed {seed} round {round}: can_read accepted\n  reader {reader:?}\n  writer {writer:?}\n\
                 but {value} is valid under the writer and refused by the reader: {read:?}"
            );
        }
    }
    // The search is only worth something if it proves many pairs.
    assert!(proved > 600, "only {proved} pairs were proved compatible");
}

/// Drafts 6 and 7 ignore every sibling of a `$ref`, 2019-09 and 2020-12
/// apply them: a `type` beside a `$ref` must not count as a type where it
/// is ignored, in the writer or in a branch of the reader's `oneOf` (the
/// checker proves `oneOf` by one branch reading the writer and the others
/// refusing the writer's types). Reader and writer are built around such
/// references, under each draft, and every proof is checked on payloads.
#[test]
fn a_type_beside_a_ref_counts_only_where_the_draft_applies_it() {
    let drafts = [
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema",
    ];
    let mut rng = Rng(7);
    let mut proved = 0;
    for round in 0..1_500 {
        let draft = rng.pick(&drafts);
        // Targets: anything, or a random schema.
        let target = |rng: &mut Rng| {
            if rng.percent(50) {
                json!({})
            } else {
                schema(rng, 1)
            }
        };
        let typed_ref = |rng: &mut Rng, name: &str| json!({"$ref": format!("#/definitions/{name}"), "type": rng.pick(&TYPES)});
        let plain = |rng: &mut Rng| {
            if rng.percent(40) {
                json!({})
            } else {
                json!({"type": rng.pick(&TYPES)})
            }
        };
        let writer_field = if rng.percent(50) {
            typed_ref(&mut rng, "w")
        } else {
            plain(&mut rng)
        };
        let mut branches = vec![plain(&mut rng)];
        for _ in 0..1 + rng.below(2) {
            branches.push(if rng.percent(60) {
                typed_ref(&mut rng, "r")
            } else {
                plain(&mut rng)
            });
        }
        let keyword = if rng.percent(75) { "oneOf" } else { "anyOf" };
        let writer = json!({"$schema": draft, "type": "object",
            "definitions": {"w": target(&mut rng)},
            "properties": {"f": writer_field}});
        let reader = json!({"$schema": draft, "type": "object",
            "definitions": {"r": target(&mut rng)},
            "properties": {"f": {keyword: branches}}});
        let writer = EventSchema::new("w", 1).with_json_schema(writer);
        let reader = EventSchema::new("r", 1).with_json_schema(reader);
        let registry = MemorySchemaRegistry::new().with_default_compatibility(Compatibility::None);
        if registry.register(writer.clone()).is_err() || registry.register(reader.clone()).is_err()
        {
            continue;
        }
        if can_read(&reader, &writer).is_err() {
            continue;
        }
        proved += 1;
        for _ in 0..40 {
            let value = json!({"f": payload(&mut rng, &[], 2)});
            let written = registry.validate(&common::event("w", 1, value.clone()));
            let read = registry.validate(&common::event("r", 1, value.clone()));
            assert!(
                written.is_err() || read.is_ok(),
                "round {round}: can_read accepted\n  reader {reader:?}\n  writer {writer:?}\n\
                 but {value} is valid under the writer and refused by the reader: {read:?}"
            );
        }
    }
    assert!(proved > 200, "only {proved} pairs were proved compatible");
}
