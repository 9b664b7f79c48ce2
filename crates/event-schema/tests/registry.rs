//! Registration, lookup, immutability and configuration of the registry.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use common::object;
use event_core::Error;
use event_schema::{Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry};
use serde_json::json;

fn schema_reason(result: event_core::Result<()>) -> (String, u32, String) {
    match result {
        Err(Error::Schema {
            event_type,
            version,
            reason,
        }) => (event_type, version, reason),
        other => panic!("expected Error::Schema, got {other:?}"),
    }
}

#[test]
fn register_get_latest_and_list() {
    let registry = MemorySchemaRegistry::new();
    assert_eq!(registry.latest_version("b").unwrap(), None);
    let v1 = EventSchema::new("b", 1)
        .with_required_fields(["x"])
        .with_description("first");
    registry.register(v1.clone()).unwrap();
    registry.register(EventSchema::new("b", 3)).unwrap();
    registry.register(EventSchema::new("a", 1)).unwrap();

    assert_eq!(registry.get("b", 1).unwrap(), Some(v1));
    assert_eq!(registry.get("b", 2).unwrap(), None);
    assert_eq!(registry.get("zzz", 1).unwrap(), None);
    assert_eq!(registry.latest_version("b").unwrap(), Some(3));
    assert_eq!(registry.versions("b"), vec![1, 3]);
    assert_eq!(registry.list_types().unwrap(), vec!["a", "b"]);
}

#[test]
fn original_struct_literal_still_works() {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema {
            event_type: "forex.rate_change".to_string(),
            version: 1,
            required_fields: vec!["rate".to_string()],
            description: "Forex rate change".to_string(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        registry.latest_version("forex.rate_change").unwrap(),
        Some(1)
    );
}

#[test]
fn registering_the_same_definition_twice_is_a_no_op() {
    let registry = MemorySchemaRegistry::new();
    let v1 = EventSchema::new("t", 1).with_required_fields(["a"]);
    registry.register(v1.clone()).unwrap();
    registry.register(v1).unwrap();
    assert_eq!(registry.versions("t"), vec![1]);
}

#[test]
fn registered_versions_are_immutable() {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema::new("t", 1).with_required_fields(["a"]))
        .unwrap();
    let (event_type, version, reason) =
        schema_reason(registry.register(EventSchema::new("t", 1).with_required_fields(["b"])));
    assert_eq!((event_type.as_str(), version), ("t", 1));
    assert!(reason.contains("immutable"), "{reason}");
    assert_eq!(
        registry.get("t", 1).unwrap().unwrap().required_fields,
        vec!["a"]
    );
}

#[test]
fn versions_must_increase() {
    let registry = MemorySchemaRegistry::new();
    registry.register(EventSchema::new("t", 5)).unwrap();
    let (_, version, reason) = schema_reason(registry.register(EventSchema::new("t", 4)));
    assert_eq!(version, 4);
    assert!(
        reason.contains("older than the latest registered version 5"),
        "{reason}"
    );
}

#[test]
fn bad_definitions_are_refused() {
    let registry = MemorySchemaRegistry::new();
    let cases = [
        (EventSchema::new("", 1), "event type is empty"),
        (EventSchema::new("t", 0), "version 0"),
        (
            EventSchema::new("t", 1).with_required_fields(["a", ""]),
            "must not be empty",
        ),
        (
            EventSchema::new("t", 1).with_required_fields(["a", "a"]),
            "listed twice",
        ),
        (
            EventSchema::new("t", 1).with_json_schema(json!({"type": "strin"})),
            "invalid JSON Schema",
        ),
        (
            EventSchema::new("t", 1).with_json_schema(json!({"minimum": "zero"})),
            "invalid JSON Schema",
        ),
        (
            EventSchema::new("t", 1).with_json_schema(json!(5)),
            "expected an object or a boolean",
        ),
        (
            EventSchema::new("t", 1).with_json_schema(json!({"pattern": "(unclosed"})),
            "invalid JSON Schema",
        ),
    ];
    for (schema, expected) in cases {
        let (_, _, reason) = schema_reason(registry.register(schema.clone()));
        assert!(reason.contains(expected), "{schema:?}: {reason}");
    }
    assert!(registry.list_types().unwrap().is_empty());
}

#[test]
fn remote_refs_are_not_fetched() {
    let registry = MemorySchemaRegistry::new();
    let schema = EventSchema::new("t", 1)
        .with_json_schema(json!({"$ref": "https://example.com/schemas/order.json"}));
    let (_, _, reason) = schema_reason(registry.register(schema));
    assert!(reason.contains("invalid JSON Schema"), "{reason}");
}

#[test]
fn local_refs_compile_and_validate() {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema::new("t", 1).with_json_schema(json!({
            "$defs": {"money": {"type": "number", "minimum": 0}},
            "type": "object",
            "properties": {"amount": {"$ref": "#/$defs/money"}}
        })))
        .unwrap();
    let ok = common::event("t", 1, json!({"amount": 3.5}));
    registry.validate(&ok).unwrap();
    let bad = common::event("t", 1, json!({"amount": -1}));
    match registry.validate(&bad) {
        Err(Error::SchemaValidation { path, .. }) => assert_eq!(path, "/amount"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn compatibility_levels_per_type_and_registry_wide() {
    let registry = MemorySchemaRegistry::new();
    assert_eq!(
        registry.compatibility("a").unwrap(),
        Compatibility::Backward
    );
    registry
        .set_default_compatibility(Compatibility::Full)
        .unwrap();
    assert_eq!(registry.compatibility("a").unwrap(), Compatibility::Full);
    registry
        .set_compatibility("a", Compatibility::None)
        .unwrap();
    assert_eq!(registry.compatibility("a").unwrap(), Compatibility::None);
    assert_eq!(registry.compatibility("b").unwrap(), Compatibility::Full);
    assert!(matches!(
        registry.set_compatibility("", Compatibility::None),
        Err(Error::InvalidConfig { .. })
    ));

    let built = MemorySchemaRegistry::new().with_default_compatibility(Compatibility::Forward);
    assert_eq!(built.compatibility("x").unwrap(), Compatibility::Forward);
}

#[test]
fn the_type_level_is_enforced_on_register() {
    let registry = MemorySchemaRegistry::new().with_default_compatibility(Compatibility::None);
    registry
        .set_compatibility("strict", Compatibility::Backward)
        .unwrap();
    for t in ["loose", "strict"] {
        registry
            .register(EventSchema::new(t, 1).with_required_fields(["a"]))
            .unwrap();
    }
    // Adding a required field: refused for the BACKWARD type only.
    registry
        .register(EventSchema::new("loose", 2).with_required_fields(["a", "b"]))
        .unwrap();
    let (_, _, reason) = schema_reason(
        registry.register(EventSchema::new("strict", 2).with_required_fields(["a", "b"])),
    );
    assert!(
        reason.starts_with("BACKWARD: v2 cannot read data written with v1"),
        "{reason}"
    );
    assert!(reason.contains("`/b`"), "{reason}");
    assert_eq!(registry.latest_version("strict").unwrap(), Some(1));
}

#[test]
fn changing_the_level_does_not_recheck_existing_versions() {
    let registry = MemorySchemaRegistry::new().with_default_compatibility(Compatibility::None);
    registry
        .register(EventSchema::new("t", 1).with_required_fields(["a"]))
        .unwrap();
    registry
        .register(EventSchema::new("t", 2).with_required_fields(["a", "b"]))
        .unwrap();
    registry
        .set_compatibility("t", Compatibility::Full)
        .unwrap();
    assert_eq!(registry.versions("t"), vec![1, 2]);
    // But the next registration is checked under FULL.
    assert!(
        registry
            .register(EventSchema::new("t", 3).with_required_fields(["a"]))
            .is_err()
    );
    registry
        .register(EventSchema::new("t", 3).with_required_fields(["a", "b"]))
        .unwrap();
}

#[test]
fn test_compatibility_checks_without_registering() {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema::new("t", 1).with_json_schema(object(
            json!({"n": {"type": "integer"}}),
            &["n"],
            None,
        )))
        .unwrap();
    let widened = EventSchema::new("t", 2).with_json_schema(object(
        json!({"n": {"type": "number"}}),
        &["n"],
        None,
    ));
    registry.test_compatibility(&widened).unwrap();
    let narrowed = EventSchema::new("t", 2).with_json_schema(object(
        json!({"n": {"type": "string"}}),
        &["n"],
        None,
    ));
    let (_, _, reason) = schema_reason(registry.test_compatibility(&narrowed));
    assert!(reason.contains("`/n`"), "{reason}");
    assert_eq!(registry.versions("t"), vec![1]);
    // A candidate that could never be registered is refused too.
    assert!(
        registry
            .test_compatibility(&EventSchema::new("t", 2).with_json_schema(json!(7)))
            .is_err()
    );
}

#[test]
fn check_compatibility_of_an_unregistered_version_is_not_found() {
    let registry = MemorySchemaRegistry::new();
    registry.register(EventSchema::new("t", 1)).unwrap();
    assert!(matches!(
        registry.check_compatibility("t", 2, Compatibility::Backward),
        Err(Error::NotFound { kind: "schema", .. })
    ));
    assert!(matches!(
        registry.check_compatibility("nope", 1, Compatibility::Backward),
        Err(Error::NotFound { .. })
    ));
    // The first version has nothing to be incompatible with.
    registry
        .check_compatibility("t", 1, Compatibility::FullTransitive)
        .unwrap();
}

#[test]
fn concurrent_registrations_of_conflicting_versions_keep_one() {
    use std::sync::Arc;
    let registry = Arc::new(MemorySchemaRegistry::new());
    registry
        .register(EventSchema::new("t", 1).with_required_fields(["a"]))
        .unwrap();
    let results: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let registry = registry.clone();
                scope.spawn(move || {
                    registry
                        .register(EventSchema::new("t", 2).with_description(format!("writer {i}")))
                        .is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1);
    assert_eq!(registry.versions("t"), vec![1, 2]);
}

#[test]
fn an_invalid_json_schema_is_refused_naming_where_in_the_schema() {
    let registry = MemorySchemaRegistry::new();
    let nested = json!({"type": "object", "properties": {
        "customer": {"type": "object", "properties": {"e/mail": {"type": "strin"}}}
    }});
    let (_, _, reason) =
        schema_reason(registry.register(EventSchema::new("t", 1).with_json_schema(nested)));
    assert!(
        reason.contains("/properties/customer/properties/e~1mail/type"),
        "{reason}"
    );
    let (_, _, reason) = schema_reason(registry.register(
        EventSchema::new("t", 1).with_json_schema(json!({"items": {"pattern": "(unclosed"}})),
    ));
    assert!(reason.contains("/items/pattern"), "{reason}");
}

#[test]
fn test_compatibility_refuses_what_register_would_refuse() {
    let registry = MemorySchemaRegistry::new().with_default_compatibility(Compatibility::None);
    registry.register(EventSchema::new("t", 1)).unwrap();
    registry
        .register(EventSchema::new("t", 3).with_required_fields(["a"]))
        .unwrap();
    // Older than the latest version: register refuses it, so must the test.
    let older = EventSchema::new("t", 2);
    let (_, _, register_reason) = schema_reason(registry.register(older.clone()));
    let (_, version, reason) = schema_reason(registry.test_compatibility(&older));
    assert_eq!(version, 2);
    assert_eq!(reason, register_reason);
    // A registered version with another definition: immutable.
    let changed = EventSchema::new("t", 3).with_description("changed");
    let (_, _, register_reason) = schema_reason(registry.register(changed.clone()));
    assert_eq!(
        schema_reason(registry.test_compatibility(&changed)).2,
        register_reason
    );
    // The registered definition itself, and the next version, pass.
    registry
        .test_compatibility(&EventSchema::new("t", 3).with_required_fields(["a"]))
        .unwrap();
    registry
        .test_compatibility(&EventSchema::new("t", 4))
        .unwrap();
    assert_eq!(registry.versions("t"), vec![1, 3]);
}
