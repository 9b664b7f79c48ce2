//! Payload validation: required fields, JSON Schema, policies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use common::{event, object};
use event_core::{Error, Event, SchemaValidator};
use event_schema::{
    EventSchema, MemorySchemaRegistry, RegistryValidator, SchemaRegistry, UnknownTypePolicy,
    UntypedPolicy,
};
use serde_json::json;
use std::sync::Arc;

fn expect_invalid(result: event_core::Result<()>) -> (String, u32, String, String) {
    match result {
        Err(Error::SchemaValidation {
            event_type,
            version,
            path,
            reason,
        }) => (event_type, version, path, reason),
        other => panic!("expected Error::SchemaValidation, got {other:?}"),
    }
}

fn required_registry() -> MemorySchemaRegistry {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema::new("user.created", 1).with_required_fields(["id", "email"]))
        .unwrap();
    registry
}

#[test]
fn required_fields_accept_complete_payloads() {
    let registry = required_registry();
    registry
        .validate(&event(
            "user.created",
            1,
            json!({"id": 1, "email": "a@b", "extra": true}),
        ))
        .unwrap();
    // A present key whose value is null counts as present.
    registry
        .validate(&event(
            "user.created",
            1,
            json!({"id": null, "email": "a@b"}),
        ))
        .unwrap();
}

#[test]
fn required_fields_name_the_missing_field() {
    let registry = required_registry();
    let (event_type, version, path, reason) =
        expect_invalid(registry.validate(&event("user.created", 1, json!({"id": 1}))));
    assert_eq!(event_type, "user.created");
    assert_eq!(version, 1);
    assert_eq!(path, "/email");
    assert!(reason.contains("`email`"), "{reason}");
}

#[test]
fn required_fields_refuse_non_object_payloads() {
    let registry = required_registry();
    for payload in [json!([1, 2]), json!("id"), json!(null), json!(3)] {
        let (_, _, path, reason) =
            expect_invalid(registry.validate(&event("user.created", 1, payload.clone())));
        assert_eq!(path, "", "{payload}");
        assert!(reason.contains("JSON object"), "{reason}");
    }
}

#[test]
fn required_field_paths_are_escaped_json_pointers() {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema::new("t", 1).with_required_fields(["a/b", "c~d"]))
        .unwrap();
    let (_, _, path, _) = expect_invalid(registry.validate(&event("t", 1, json!({}))));
    assert_eq!(path, "/a~1b");
    let (_, _, path, _) = expect_invalid(registry.validate(&event("t", 1, json!({"a/b": 1}))));
    assert_eq!(path, "/c~0d");
}

fn order_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^o-[0-9]+$"},
            "customer": {
                "type": "object",
                "properties": {"email": {"type": "string", "format": "email"}},
                "required": ["email"]
            },
            "lines": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string"},
                        "qty": {"type": "integer", "minimum": 1}
                    },
                    "required": ["sku", "qty"]
                }
            },
            "status": {"enum": ["new", "paid"]}
        },
        "required": ["id", "customer", "lines"]
    })
}

fn order_registry() -> MemorySchemaRegistry {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema::new("order.created", 1).with_json_schema(order_schema()))
        .unwrap();
    registry
}

fn valid_order() -> serde_json::Value {
    json!({
        "id": "o-17",
        "customer": {"email": "ann@example.com"},
        "lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 3}],
        "status": "new"
    })
}

#[test]
fn json_schema_accepts_a_valid_payload() {
    order_registry()
        .validate(&event("order.created", 1, valid_order()))
        .unwrap();
}

#[test]
fn json_schema_errors_point_into_the_payload() {
    let registry = order_registry();
    let cases = [
        (
            "/lines/1/qty",
            json!({"lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 0}]}),
        ),
        (
            "/lines/0/qty",
            json!({"lines": [{"sku": "A", "qty": "one"}]}),
        ),
        ("/customer", json!({"customer": {}})),
        ("/id", json!({"id": "x-1"})),
        ("/status", json!({"status": "shipped"})),
        ("/lines", json!({"lines": []})),
    ];
    for (expected_path, patch) in cases {
        let mut payload = valid_order();
        for (k, v) in patch.as_object().unwrap() {
            payload[k] = v.clone();
        }
        let (event_type, version, path, reason) =
            expect_invalid(registry.validate(&event("order.created", 1, payload)));
        assert_eq!(event_type, "order.created");
        assert_eq!(version, 1);
        assert_eq!(path, expected_path, "reason: {reason}");
        assert!(!reason.is_empty());
    }
}

#[test]
fn json_schema_error_reasons_mask_payload_values() {
    let registry = order_registry();
    let mut payload = valid_order();
    payload["id"] = json!("secret-card-4111111111111111");
    let (_, _, path, reason) =
        expect_invalid(registry.validate(&event("order.created", 1, payload)));
    assert_eq!(path, "/id");
    assert!(!reason.contains("4111111111111111"), "{reason}");
}

#[test]
fn required_fields_and_json_schema_combine() {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(
            EventSchema::new("t", 1)
                .with_required_fields(["a"])
                .with_json_schema(object(json!({"b": {"type": "integer"}}), &[], None)),
        )
        .unwrap();
    registry
        .validate(&event("t", 1, json!({"a": 1, "b": 2})))
        .unwrap();
    registry.validate(&event("t", 1, json!({"a": 1}))).unwrap();
    let (_, _, path, _) = expect_invalid(registry.validate(&event("t", 1, json!({"b": 2}))));
    assert_eq!(path, "/a");
    let (_, _, path, _) =
        expect_invalid(registry.validate(&event("t", 1, json!({"a": 1, "b": "x"}))));
    assert_eq!(path, "/b");
}

#[test]
fn format_and_content_keywords_are_asserted_as_their_draft_says() {
    let draft_7 = "http://json-schema.org/draft-07/schema#";
    let cases = [
        (json!({"format": "email"}), json!("not an email")),
        (json!({"format": "no-such-format"}), json!("x")),
        (json!({"contentEncoding": "base64"}), json!("!!!")),
        (json!({"contentMediaType": "application/json"}), json!("{")),
    ];
    for (schema, payload) in cases {
        let asserted = schema.get("format") != Some(&json!("no-such-format"));
        let registry = MemorySchemaRegistry::new();
        // 2020-12 (no `$schema`): annotations only.
        registry
            .register(EventSchema::new("annotated", 1).with_json_schema(schema.clone()))
            .unwrap();
        registry
            .validate(&event("annotated", 1, payload.clone()))
            .unwrap();
        // Draft 7: asserted (unknown formats still ignored).
        let mut declared = schema;
        declared["$schema"] = json!(draft_7);
        registry
            .register(EventSchema::new("declared", 1).with_json_schema(declared.clone()))
            .unwrap();
        let result = registry.validate(&event("declared", 1, payload));
        assert_eq!(result.is_err(), asserted, "{declared}: {result:?}");
    }
}

#[test]
fn each_version_validates_with_its_own_schema() {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema::new("t", 1).with_required_fields(["a", "b"]))
        .unwrap();
    registry
        .register(EventSchema::new("t", 2).with_required_fields(["a"]))
        .unwrap();
    let payload = json!({"a": 1});
    assert!(registry.validate(&event("t", 1, payload.clone())).is_err());
    registry.validate(&event("t", 2, payload)).unwrap();
}

#[test]
fn schema_without_rules_accepts_anything() {
    let registry = MemorySchemaRegistry::new();
    registry.register(EventSchema::new("free", 1)).unwrap();
    for payload in [json!(null), json!([1]), json!({"x": 1}), json!("s")] {
        registry.validate(&event("free", 1, payload)).unwrap();
    }
}

#[test]
fn unknown_types_are_allowed_by_default() {
    let registry = required_registry();
    assert_eq!(registry.unknown_type_policy(), UnknownTypePolicy::Allow);
    registry
        .validate(&event("never.registered", 1, json!(null)))
        .unwrap();
    // A known type with an unregistered version follows the same policy.
    registry
        .validate(&event("user.created", 9, json!({})))
        .unwrap();
}

#[test]
fn unknown_types_are_refused_under_reject() {
    let registry = MemorySchemaRegistry::new().with_unknown_type_policy(UnknownTypePolicy::Reject);
    registry
        .register(EventSchema::new("user.created", 1).with_required_fields(["id"]))
        .unwrap();
    let (event_type, version, path, reason) =
        expect_invalid(registry.validate(&event("never.registered", 1, json!({}))));
    assert_eq!(
        (event_type.as_str(), version, path.as_str()),
        ("never.registered", 1, "")
    );
    assert!(reason.contains("no schema is registered"), "{reason}");

    let (_, version, _, reason) =
        expect_invalid(registry.validate(&event("user.created", 2, json!({"id": 1}))));
    assert_eq!(version, 2);
    assert!(reason.contains("no schema version 2"), "{reason}");
    assert!(reason.contains("[1]"), "{reason}");

    registry
        .validate(&event("user.created", 1, json!({"id": 1})))
        .unwrap();
}

#[test]
fn a_type_with_only_a_level_set_is_still_unknown() {
    let registry = MemorySchemaRegistry::new().with_unknown_type_policy(UnknownTypePolicy::Reject);
    registry
        .set_compatibility("later", event_schema::Compatibility::Full)
        .unwrap();
    let (_, _, _, reason) = expect_invalid(registry.validate(&event("later", 1, json!({}))));
    assert!(reason.contains("no schema is registered"), "{reason}");
    assert!(registry.list_types().unwrap().is_empty());
}

#[test]
fn untyped_events_pass_by_default_even_when_unknown_types_are_rejected() {
    let registry = MemorySchemaRegistry::new().with_unknown_type_policy(UnknownTypePolicy::Reject);
    assert_eq!(registry.untyped_policy(), UntypedPolicy::Allow);
    let untyped = Event::new("events.a.b", "a", "s", "src", json!([1, 2, 3]));
    registry.validate(&untyped).unwrap();
}

#[test]
fn untyped_events_are_refused_under_untyped_reject() {
    let registry = MemorySchemaRegistry::new().with_untyped_policy(UntypedPolicy::Reject);
    let untyped = Event::new("events.a.b", "a", "s", "src", json!({}));
    let (event_type, _, path, reason) = expect_invalid(registry.validate(&untyped));
    assert_eq!((event_type.as_str(), path.as_str()), ("", ""));
    assert!(reason.contains("untyped"), "{reason}");
    // Typed events of unknown types are still allowed (separate policy),
    // and so is a known type at an unregistered version.
    registry.validate(&event("x", 1, json!({}))).unwrap();
    registry
        .register(EventSchema::new("x", 1).with_required_fields(["id"]))
        .unwrap();
    registry.validate(&event("x", 2, json!({}))).unwrap();
}

/// A blank type (spaces, a tab) can never be registered, as an empty one
/// cannot: it is untyped too, so `UntypedPolicy::Reject` refuses it rather
/// than `UnknownTypePolicy::Allow` letting it through unvalidated.
#[test]
fn blank_typed_events_are_untyped() {
    let registry = MemorySchemaRegistry::new().with_untyped_policy(UntypedPolicy::Reject);
    for blank in [" ", "\t", "  \n "] {
        assert!(
            registry
                .register(EventSchema::new(blank, 1).with_required_fields(["id"]))
                .is_err(),
            "{blank:?} registered"
        );
        let (event_type, _, path, reason) =
            expect_invalid(registry.validate(&event(blank, 1, json!({}))));
        assert_eq!((event_type.as_str(), path.as_str()), (blank, ""));
        assert!(reason.contains("untyped"), "{blank:?}: {reason}");
    }
    let allowing = MemorySchemaRegistry::new().with_unknown_type_policy(UnknownTypePolicy::Reject);
    allowing.validate(&event(" ", 1, json!({}))).unwrap();
}

#[test]
fn works_through_the_schema_validator_hook() {
    let registry = required_registry();
    let validator: Arc<dyn SchemaValidator> = Arc::new(registry);
    validator
        .validate(&event("user.created", 1, json!({"id": 1, "email": "e"})))
        .unwrap();
    let (_, _, path, _) = expect_invalid(validator.validate(&event("user.created", 1, json!({}))));
    assert_eq!(path, "/id");
}

#[test]
fn registry_validator_adapts_a_dyn_registry() {
    let registry: Arc<dyn SchemaRegistry> = Arc::new(required_registry());
    let validator: Arc<dyn SchemaValidator> = Arc::new(RegistryValidator(registry.clone()));
    assert!(
        validator
            .validate(&event("user.created", 1, json!({})))
            .is_err()
    );
    validator
        .validate(&event("user.created", 1, json!({"id": 1, "email": "e"})))
        .unwrap();
}

#[test]
fn concurrent_validation_while_registering() {
    let registry = Arc::new(order_registry());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let registry = registry.clone();
            scope.spawn(move || {
                for i in 0..500 {
                    registry
                        .validate(&event("order.created", 1, valid_order()))
                        .unwrap();
                    assert!(
                        registry
                            .validate(&event("order.created", 1, json!({"id": i})))
                            .is_err()
                    );
                }
            });
        }
        let writer = registry.clone();
        scope.spawn(move || {
            for v in 1..=50u32 {
                writer
                    .register(EventSchema::new(format!("other.{v}"), 1).with_required_fields(["x"]))
                    .unwrap();
            }
        });
    });
    assert_eq!(registry.list_types().unwrap().len(), 51);
}

/// A version is visible to every thread as soon as its `register` has
/// returned (each thread validates from its own cached snapshot, refreshed
/// by the registry's generation): readers that learn of the newest version
/// from the registering thread find it, never a stale snapshot without it.
#[test]
fn a_registered_version_is_seen_by_every_thread_once_register_returned() {
    use std::sync::atomic::{AtomicU32, Ordering};
    const VERSIONS: u32 = 300;
    let registry = MemorySchemaRegistry::new()
        .with_unknown_type_policy(UnknownTypePolicy::Reject)
        .with_default_compatibility(event_schema::Compatibility::None);
    let published = AtomicU32::new(0);
    std::thread::scope(|scope| {
        for reader in 0..3u32 {
            let (registry, published) = (&registry, &published);
            scope.spawn(move || {
                loop {
                    let seen = published.load(Ordering::Acquire);
                    if seen > 0 {
                        // Version `v` requires field `f{v}`: found and checked.
                        let field = format!("f{seen}");
                        registry
                            .validate(&event("t", seen, json!({ field: 1 })))
                            .unwrap_or_else(|e| panic!("reader {reader}: v{seen}: {e}"));
                        assert!(
                            registry.validate(&event("t", seen, json!({}))).is_err(),
                            "reader {reader}: v{seen} let a payload without `f{seen}` through"
                        );
                    }
                    if seen == VERSIONS {
                        return;
                    }
                }
            });
        }
        for v in 1..=VERSIONS {
            registry
                .register(EventSchema::new("t", v).with_required_fields([format!("f{v}")]))
                .unwrap();
            published.store(v, Ordering::Release);
        }
    });
    assert_eq!(registry.latest_version("t").unwrap(), Some(VERSIONS));
}

#[test]
fn required_fields_with_a_root_ref_schema() {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(
            EventSchema::new("t", 1)
                .with_required_fields(["a"])
                .with_json_schema(json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "$ref": "#/definitions/o",
                    "definitions": {"o": {"type": "object", "properties": {"b": {"type": "integer"}}}}
                })),
        )
        .unwrap();
    registry
        .validate(&event("t", 1, json!({"a": 1, "b": 2})))
        .unwrap();
    let (_, _, path, _) = expect_invalid(registry.validate(&event("t", 1, json!({"b": 2}))));
    assert_eq!(path, "/a");
    let (_, _, path, _) =
        expect_invalid(registry.validate(&event("t", 1, json!({"a": 1, "b": "x"}))));
    assert_eq!(path, "/b");
}

#[test]
fn required_fields_stay_top_level_when_the_schema_refers_back_to_its_root() {
    // Each schema lets a child through that has no `id` (or is no object),
    // reaching the root again by a reference; the required field (and the
    // object it implies) is for the payload's top level only.
    let children =
        |items: serde_json::Value| json!({"children": {"type": "array", "items": items}});
    let cases = [
        (
            json!({"type": "object", "properties": children(json!({"$ref": "#"}))}),
            json!({"id": 1, "children": [{}]}),
        ),
        (
            json!({"$dynamicAnchor": "node", "type": "object",
                   "properties": children(json!({"$dynamicRef": "#node"}))}),
            json!({"id": 1, "children": [{"children": []}]}),
        ),
        (
            json!({"$schema": "http://json-schema.org/draft-07/schema#",
                   "properties": children(json!({"$ref": "#"}))}),
            json!({"id": 1, "children": [{}]}),
        ),
        (
            json!({"type": ["object", "integer"], "properties": children(json!({"$ref": "#"}))}),
            json!({"id": 1, "children": [5, {}]}),
        ),
    ];
    for (i, (json_schema, payload)) in cases.into_iter().enumerate() {
        let registry = MemorySchemaRegistry::new();
        registry
            .register(
                EventSchema::new("tree", 1)
                    .with_required_fields(["id"])
                    .with_json_schema(json_schema.clone()),
            )
            .unwrap();
        let result = registry.validate(&event("tree", 1, payload));
        assert!(result.is_ok(), "case {i}: {json_schema}: {result:?}");
        // Still required at the top.
        let (_, _, path, _) =
            expect_invalid(registry.validate(&event("tree", 1, json!({"children": []}))));
        assert_eq!(path, "/id", "case {i}");
        // And the JSON Schema still applies at every level.
        let (_, _, path, _) = expect_invalid(registry.validate(&event(
            "tree",
            1,
            json!({"id": 1, "children": [{"children": 7}]}),
        )));
        assert_eq!(path, "/children/0/children", "case {i}");
    }
}

#[test]
fn validation_sees_registrations_made_after_earlier_validations() {
    let registry = MemorySchemaRegistry::new().with_unknown_type_policy(UnknownTypePolicy::Reject);
    assert!(registry.validate(&event("t", 1, json!({}))).is_err());
    registry
        .register(EventSchema::new("t", 1).with_required_fields(["a"]))
        .unwrap();
    registry.validate(&event("t", 1, json!({"a": 1}))).unwrap();
    assert!(registry.validate(&event("t", 2, json!({"a": 1}))).is_err());
    registry
        .register(EventSchema::new("t", 2).with_required_fields(["a"]))
        .unwrap();
    registry.validate(&event("t", 2, json!({"a": 1}))).unwrap();
}

#[test]
fn registries_used_alternately_on_one_thread_stay_separate() {
    let first = MemorySchemaRegistry::new();
    let second = MemorySchemaRegistry::new();
    first
        .register(EventSchema::new("t", 1).with_required_fields(["a"]))
        .unwrap();
    second
        .register(EventSchema::new("t", 1).with_required_fields(["b"]))
        .unwrap();
    for _ in 0..3 {
        first.validate(&event("t", 1, json!({"a": 1}))).unwrap();
        assert!(first.validate(&event("t", 1, json!({"b": 1}))).is_err());
        second.validate(&event("t", 1, json!({"b": 1}))).unwrap();
        assert!(second.validate(&event("t", 1, json!({"a": 1}))).is_err());
    }
}

/// Validates with its registry when the thread's locals are destroyed.
struct ValidatesOnDrop {
    registry: Arc<MemorySchemaRegistry>,
    results: std::sync::mpsc::Sender<Vec<std::thread::Result<event_core::Result<()>>>>,
}

impl Drop for ValidatesOnDrop {
    fn drop(&mut self) {
        let results = [json!({"a": 1}), json!({"b": 1})]
            .into_iter()
            .map(|payload| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.registry.validate(&event("t", 1, payload))
                }))
            })
            .collect();
        let _ = self.results.send(results);
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<ValidatesOnDrop>> =
        const { std::cell::RefCell::new(None) };
}

#[test]
fn validation_from_a_thread_local_destructor_still_answers() {
    // The guard is registered before the registry's per-thread snapshot, so
    // (destructors running in reverse order) the snapshot is gone when the
    // guard validates.
    for json_schema in [None, Some(json!({"type": "object", "required": ["a"]}))] {
        let registry = Arc::new(MemorySchemaRegistry::new());
        let mut schema = EventSchema::new("t", 1).with_required_fields(["a"]);
        schema.json_schema = json_schema;
        registry.register(schema).unwrap();
        let (results, received) = std::sync::mpsc::channel();
        let on_thread = Arc::clone(&registry);
        std::thread::spawn(move || {
            ON_EXIT.with(|slot| {
                *slot.borrow_mut() = Some(ValidatesOnDrop {
                    registry: Arc::clone(&on_thread),
                    results,
                });
            });
            on_thread.validate(&event("t", 1, json!({"a": 1}))).unwrap();
        })
        .join()
        .unwrap();
        let results = received.recv().unwrap();
        assert!(matches!(results[0], Ok(Ok(()))), "{results:?}");
        assert!(
            matches!(results[1], Ok(Err(Error::SchemaValidation { .. }))),
            "{results:?}"
        );
    }
}

/// `depth` arrays nested around `1`.
fn nested_arrays(depth: usize) -> serde_json::Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = serde_json::Value::Array(vec![value]);
    }
    value
}

/// `depth` objects nested around `1`, each with the one key `a`.
fn nested_objects(depth: usize) -> serde_json::Value {
    let mut value = json!(1);
    for _ in 0..depth {
        // Not `json!`: it would serialize (copy) `value`, recursively.
        let mut fields = serde_json::Map::new();
        fields.insert("a".to_owned(), value);
        value = serde_json::Value::Object(fields);
    }
    value
}

/// Drops a deeply nested payload without recursing (serde_json's drop
/// recurses once per level).
fn dismantle(value: serde_json::Value) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            serde_json::Value::Array(items) => pending.extend(items),
            serde_json::Value::Object(fields) => pending.extend(fields.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// Far deeper than a 2 MiB stack allows `jsonschema` to copy or print
/// recursively (it overflowed from a few thousand levels).
const VERY_DEEP: usize = 200_000;

/// Registers `schema` as `t` v1 and validates a payload built by `payload`
/// on a thread with a 2 MiB stack (the default for spawned threads), the
/// payload dropped without recursing.
fn validate_on_a_small_stack(
    schema: serde_json::Value,
    payload: fn() -> serde_json::Value,
) -> event_core::Result<()> {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let registry = MemorySchemaRegistry::new();
            registry
                .register(EventSchema::new("t", 1).with_json_schema(schema))
                .unwrap();
            let ev = event("t", 1, payload());
            let result = registry.validate(&ev);
            dismantle(ev.payload);
            result
        })
        .unwrap()
        .join()
        .unwrap()
}

/// The refusal of a payload too deep to locate the failure in: at the
/// root, naming the depth.
fn expect_too_deep(result: event_core::Result<()>) {
    let (event_type, version, path, reason) = expect_invalid(result);
    assert_eq!((event_type.as_str(), version, path.as_str()), ("t", 1, ""));
    assert!(reason.contains("nested deeper than 128 levels"), "{reason}");
}

#[test]
fn deeply_nested_payloads_are_refused_not_a_stack_overflow() {
    // Schemas whose validation walks the payload as deep as it goes: a
    // recursive `$ref`, and `uniqueItems` (which compares whole items).
    let schemas = [
        json!({"type": ["array", "integer"], "items": {"$ref": "#"}}),
        json!({"type": "array", "uniqueItems": true}),
    ];
    for (i, schema) in schemas.into_iter().enumerate() {
        let registry = MemorySchemaRegistry::new();
        let event_type = format!("tree.{i}");
        registry
            .register(EventSchema::new(&event_type, 1).with_json_schema(schema))
            .unwrap();
        // Shallow payloads validate as before.
        let shallow = nested_arrays(100);
        let shallow_pair = json!([shallow.clone(), [shallow.clone()]]);
        registry
            .validate(&event(&event_type, 1, shallow_pair))
            .unwrap();
        // The limit is serde_json's: 128 levels pass, 129 do not.
        registry
            .validate(&event(&event_type, 1, json!([nested_arrays(127), 2])))
            .unwrap();
        expect_invalid(registry.validate(&event(&event_type, 1, json!([nested_arrays(128), 2]))));
        // 20 000 levels would overflow a 2 MiB stack inside the validator.
        let deep = nested_arrays(20_000);
        let payload = serde_json::Value::Array(vec![deep, json!(2)]);
        let ev = event(&event_type, 1, payload);
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let result = registry.validate(&ev);
                dismantle(ev.payload);
                result
            })
            .unwrap()
            .join()
            .unwrap();
        let (_, _, path, reason) = expect_invalid(result);
        assert_eq!(path, "");
        assert!(reason.contains("nested deeper than"), "{reason}");
    }
}

/// Payload content stays out of schema errors, object keys included (a key
/// can be data: a card number used as a map key), while the names the
/// schema itself declares, and array indices, still locate the failure.
#[test]
fn schema_errors_quote_no_payload_content_keys_included() {
    const SECRET: &str = "4111111111111111";
    let check = |schema: serde_json::Value, payload: serde_json::Value| -> (String, String) {
        let registry = MemorySchemaRegistry::new();
        registry
            .register(EventSchema::new("t", 1).with_json_schema(schema))
            .unwrap();
        let event = Event::typed("events.a.b", "a", "t", 1, "s", "src", payload);
        match registry.validate(&event) {
            Err(Error::SchemaValidation { path, reason, .. }) => (path, reason),
            other => panic!("expected a schema validation error, got {other:?}"),
        }
    };
    let cases = [
        (
            json!({"type": "object", "additionalProperties": false}),
            json!({ SECRET: 1 }),
        ),
        (
            json!({"type": "object", "propertyNames": {"maxLength": 3}}),
            json!({ SECRET: 1 }),
        ),
        (
            json!({"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}),
            json!({ SECRET: 1 }),
        ),
        (
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            json!({ SECRET: 1 }),
        ),
        (
            json!({"properties": {"card": {"pattern": "^x$"}}}),
            json!({"card": SECRET}),
        ),
        (
            json!({"properties": {"card": {"maxLength": 3}}}),
            json!({"card": SECRET}),
        ),
        (
            json!({"type": "array", "uniqueItems": true}),
            json!([SECRET, SECRET]),
        ),
        (
            json!({"type": "object", "unevaluatedProperties": false}),
            json!({ SECRET: 1 }),
        ),
        (
            json!({"properties": {"cards": {"additionalProperties": {"type": "string"}}}}),
            json!({"cards": { SECRET: 1 }}),
        ),
    ];
    for (schema, payload) in cases {
        let (path, reason) = check(schema.clone(), payload);
        assert!(
            !path.contains(SECRET) && !reason.contains(SECRET),
            "{schema}: path {path:?}, reason {reason:?}"
        );
    }
    // what the schema names, and indices, still locate the failure
    let (path, _) = check(
        json!({"properties": {"cards": {"additionalProperties": {"type": "string"}}}}),
        json!({"cards": { SECRET: 1 }}),
    );
    assert_eq!(path, "/cards/*");
    let (path, _) = check(
        json!({"properties": {"items": {"items": {"properties": {"qty": {"minimum": 1}}}}}}),
        json!({"items": [{"qty": 1}, {"qty": 0}]}),
    );
    assert_eq!(path, "/items/1/qty");
}

/// A deep payload matching no `anyOf` branch: `jsonschema` copies the
/// payload into each failed branch's error, which overflowed the stack.
#[test]
fn a_deep_payload_failing_any_of_is_refused_not_a_stack_overflow() {
    expect_too_deep(validate_on_a_small_stack(
        json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        || nested_arrays(VERY_DEEP),
    ));
}

/// The common nullable property, `{"anyOf": [T, {"type": "null"}]}`, with a
/// deep value that is neither.
#[test]
fn a_deep_value_failing_a_nullable_property_is_refused_not_a_stack_overflow() {
    let nullable = json!({"type": "object", "properties": {
        "a": {"anyOf": [{"type": "string"}, {"type": "null"}]}
    }});
    expect_too_deep(validate_on_a_small_stack(nullable.clone(), || {
        nested_objects(VERY_DEEP + 1)
    }));
    // A shallow failure is still located.
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema::new("t", 1).with_json_schema(nullable))
        .unwrap();
    let (_, _, path, _) = expect_invalid(registry.validate(&event("t", 1, nested_objects(100))));
    assert_eq!(path, "/a");
}

/// A deep payload matching no `oneOf` branch (copied like `anyOf`'s).
#[test]
fn a_deep_payload_matching_no_one_of_branch_is_refused_not_a_stack_overflow() {
    expect_too_deep(validate_on_a_small_stack(
        json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
        || nested_arrays(VERY_DEEP),
    ));
}

/// A deep item refused by `unevaluatedItems`: `jsonschema` prints every
/// refused item into its error, recursively.
#[test]
fn a_deep_item_refused_by_unevaluated_items_is_refused_not_a_stack_overflow() {
    expect_too_deep(validate_on_a_small_stack(
        json!({"type": "array", "unevaluatedItems": false}),
        || nested_arrays(VERY_DEEP),
    ));
    expect_too_deep(validate_on_a_small_stack(
        json!({"type": "array", "unevaluatedItems": {"type": "string"}}),
        || nested_arrays(VERY_DEEP),
    ));
}

/// Whatever keyword refuses a deep payload, the error names the depth (the
/// failure is not located at that depth).
#[test]
fn deep_payloads_failing_any_keyword_are_refused_naming_the_depth() {
    let arrays = [
        json!({"type": "string"}),
        json!({"allOf": [{"type": "array"}, {"minItems": 2}]}),
        json!({"not": {"type": "array"}}),
        json!({"if": {"type": "array"}, "then": {"minItems": 2}}),
        json!({"contains": {"type": "string"}}),
        json!({"prefixItems": [{"type": "string"}]}),
        json!({"oneOf": [{"type": "array"}, {"minItems": 1}]}),
        json!({"enum": [[[1]], 2]}),
    ];
    for schema in arrays {
        expect_too_deep(validate_on_a_small_stack(schema, || {
            nested_arrays(VERY_DEEP)
        }));
    }
    let objects = [
        json!({"type": "object", "unevaluatedProperties": false}),
        json!({"dependentSchemas": {"a": false}}),
        json!({"additionalProperties": false}),
        json!({"properties": {"a": {"type": "string"}}}),
    ];
    for schema in objects {
        expect_too_deep(validate_on_a_small_stack(schema, || {
            nested_objects(VERY_DEEP)
        }));
    }
}

/// A deep payload that matches is accepted: without a reference or
/// `uniqueItems`, the validator's pass/fail check descends only as deep as
/// the schema, so the valid path needs no depth check.
#[test]
fn deep_payloads_matching_schemas_without_references_are_accepted() {
    let arrays = [
        json!({"anyOf": [{"type": "string"}, {"type": "array"}]}),
        json!({"oneOf": [{"type": "string"}, {"type": "array"}]}),
        json!({"allOf": [{"type": "array"}, {"minItems": 1}]}),
        json!({"not": {"type": "string"}}),
        json!({"if": {"type": "array"}, "then": {"minItems": 1}, "else": false}),
        json!({"contains": {"type": "array"}}),
        json!({"prefixItems": [{"type": "array"}], "unevaluatedItems": false}),
        json!({"not": {"enum": [[[1]], 2]}}),
        json!({"not": {"const": [[[1]]]}}),
    ];
    for schema in arrays {
        let shown = schema.to_string();
        let result = validate_on_a_small_stack(schema, || nested_arrays(VERY_DEEP));
        assert!(result.is_ok(), "{shown}: {result:?}");
    }
    let objects = [
        json!({"anyOf": [{"type": "object"}, {"type": "null"}]}),
        json!({"properties": {"a": true}, "unevaluatedProperties": false}),
        json!({"dependentSchemas": {"a": {"required": ["a"]}}}),
    ];
    for schema in objects {
        let shown = schema.to_string();
        let result = validate_on_a_small_stack(schema, || nested_objects(VERY_DEEP));
        assert!(result.is_ok(), "{shown}: {result:?}");
    }
}
