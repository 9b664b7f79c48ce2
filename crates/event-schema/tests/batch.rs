//! `MemorySchemaRegistry::register_all`: a batch is checked as registering
//! its schemas one by one would be, and applied all or nothing, at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use common::{Rng, event, object};
use event_core::Error;
use event_schema::{
    Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry, UnknownTypePolicy,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn strict() -> MemorySchemaRegistry {
    MemorySchemaRegistry::new().with_unknown_type_policy(UnknownTypePolicy::Reject)
}

/// The error of registering `schemas` one by one on `registry`: the first
/// refusal (the ones before it stay registered).
fn one_by_one(registry: &MemorySchemaRegistry, schemas: &[EventSchema]) -> event_core::Result<()> {
    schemas
        .iter()
        .try_for_each(|s| registry.register(s.clone()))
}

#[test]
fn a_batch_of_many_types_registers_and_validates_each() {
    let registry = strict();
    let schemas: Vec<EventSchema> = (0..300)
        .flat_map(|i| {
            let name = format!("service{i}.entity.changed");
            [
                EventSchema::new(name.clone(), 1).with_required_fields([format!("f{i}")]),
                EventSchema::new(name, 2).with_required_fields([format!("f{i}")]),
            ]
        })
        .collect();
    registry.register_all(schemas).unwrap();
    assert_eq!(registry.list_types().unwrap().len(), 300);
    for i in 0..300 {
        let name = format!("service{i}.entity.changed");
        assert_eq!(registry.versions(&name), vec![1, 2]);
        for version in [1, 2] {
            registry
                .validate(&event(&name, version, json!({format!("f{i}"): 1})))
                .unwrap();
            assert!(
                registry
                    .validate(&event(&name, version, json!({"other": 1})))
                    .is_err()
            );
        }
        assert!(registry.validate(&event(&name, 3, json!({}))).is_err());
    }
}

/// v1 `{a: string}`, v2 adds an optional integer `b`, v3 makes `b` a
/// string (no other properties allowed): v3 reads v1's data but not
/// v2's.
fn three_versions() -> Vec<EventSchema> {
    [
        json!({"a": {"type": "string"}}),
        json!({"a": {"type": "string"}, "b": {"type": "integer"}}),
        json!({"a": {"type": "string"}, "b": {"type": "string"}}),
    ]
    .into_iter()
    .zip(1..)
    .map(|(properties, version)| {
        EventSchema::new("t", version).with_json_schema(object(properties, &["a"], Some(false)))
    })
    .collect()
}

#[test]
fn a_batch_is_checked_against_its_own_earlier_versions() {
    let batch = three_versions();
    let expected = one_by_one(&strict(), &batch).unwrap_err();
    let Error::Schema {
        version, reason, ..
    } = &expected
    else {
        panic!("expected Error::Schema, got {expected:?}");
    };
    assert_eq!(*version, 3);
    assert!(reason.contains("BACKWARD"), "{reason}");

    let registry = strict();
    let refused = registry
        .register_all([EventSchema::new("other", 1)].into_iter().chain(batch))
        .unwrap_err();
    assert_eq!(format!("{refused:?}"), format!("{expected:?}"));
    assert!(registry.versions("t").is_empty());
    assert!(registry.list_types().unwrap().is_empty());
    assert!(
        registry
            .validate(&event("t", 1, json!({"a": "x"})))
            .is_err()
    );

    // v1 and v2 alone pass, and v3 after them still does not.
    registry
        .register_all(three_versions().into_iter().take(2))
        .unwrap();
    assert_eq!(registry.versions("t"), vec![1, 2]);
    let again = registry.register_all(three_versions()).unwrap_err();
    assert_eq!(format!("{again:?}"), format!("{expected:?}"));
}

#[test]
fn a_batch_conflicting_with_a_registered_definition_changes_nothing() {
    let registry = strict();
    registry
        .register(EventSchema::new("t", 1).with_required_fields(["a"]))
        .unwrap();
    let conflicting = EventSchema::new("t", 1).with_required_fields(["b"]);
    let expected = registry.register(conflicting.clone()).unwrap_err();
    let refused = registry
        .register_all([
            EventSchema::new("u", 1),
            EventSchema::new("t", 2).with_required_fields(["a"]),
            conflicting,
        ])
        .unwrap_err();
    assert_eq!(format!("{refused:?}"), format!("{expected:?}"));
    assert!(format!("{refused}").contains("immutable"), "{refused}");
    assert_eq!(registry.list_types().unwrap(), vec!["t"]);
    assert_eq!(registry.versions("t"), vec![1]);
    assert!(registry.validate(&event("u", 1, json!({}))).is_err());
}

#[test]
fn a_definition_that_does_not_compile_refuses_the_batch_after_earlier_refusals() {
    let registry = strict();
    let bad = EventSchema::new("t", 0);
    let expected = registry.register(bad.clone()).unwrap_err();
    let refused = registry
        .register_all([EventSchema::new("u", 1), bad.clone()])
        .unwrap_err();
    assert_eq!(format!("{refused:?}"), format!("{expected:?}"));
    assert!(registry.list_types().unwrap().is_empty());
    // A refusal earlier in the batch is the one reported.
    registry.register(EventSchema::new("u", 5)).unwrap();
    let older = EventSchema::new("u", 4);
    let expected = registry.register(older.clone()).unwrap_err();
    let refused = registry.register_all([older, bad]).unwrap_err();
    assert_eq!(format!("{refused:?}"), format!("{expected:?}"));
}

#[test]
fn duplicates_in_a_batch_and_of_registered_definitions_are_no_ops() {
    let registry = strict();
    let v1 = EventSchema::new("t", 1).with_required_fields(["a"]);
    registry.register_all([v1.clone(), v1.clone()]).unwrap();
    assert_eq!(registry.versions("t"), vec![1]);
    registry
        .register_all([v1.clone(), EventSchema::new("u", 1), v1])
        .unwrap();
    assert_eq!(registry.list_types().unwrap(), vec!["t", "u"]);
    registry.register_all([]).unwrap();
    assert_eq!(registry.list_types().unwrap(), vec!["t", "u"]);
}

#[test]
fn a_concurrent_validation_sees_all_of_a_batch_or_none_of_it() {
    const ROUNDS: usize = 20;
    let registry = Arc::new(strict());
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let reader = Arc::clone(&registry);
        let finished = Arc::clone(&done);
        let checker = scope.spawn(move || {
            let mut seen = 0;
            loop {
                let last_pass = finished.load(Ordering::Acquire);
                for round in 0..ROUNDS {
                    if reader
                        .validate(&event(&format!("b{round}"), 1, json!({})))
                        .is_ok()
                    {
                        seen += 1;
                        assert!(
                            reader
                                .validate(&event(&format!("a{round}"), 1, json!({})))
                                .is_ok(),
                            "round {round}: b registered without a"
                        );
                    }
                }
                if last_pass {
                    return seen;
                }
            }
        });
        for round in 0..ROUNDS {
            // `b` first, then many types, then `a`: registered one by one,
            // `b` would be visible long before `a`.
            let batch = std::iter::once(EventSchema::new(format!("b{round}"), 1))
                .chain((0..100).map(|i| EventSchema::new(format!("filler{round}.{i}"), 1)))
                .chain(std::iter::once(EventSchema::new(format!("a{round}"), 1)));
            registry.register_all(batch).unwrap();
        }
        done.store(true, Ordering::Release);
        assert!(checker.join().unwrap() >= ROUNDS);
    });
}

/// Short names (compared by their heads in the index) and long ones.
const TYPES: [&str; 4] = [
    "t0",
    "order.created",
    "a.long.event.type.name.with.shared.prefix.1",
    "a.long.event.type.name.with.shared.prefix.2",
];

fn random_schema(rng: &mut Rng) -> EventSchema {
    let event_type = TYPES[rng.below(TYPES.len())];
    // Now and then a definition that does not compile.
    let version = if rng.below(25) == 0 {
        0
    } else {
        1 + rng.below(6) as u32
    };
    let required: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|_| rng.below(3) == 0)
        .collect();
    let schema = EventSchema::new(event_type, version).with_required_fields(required);
    if rng.below(2) == 0 {
        let a_type = ["string", "integer"][rng.below(2)];
        schema.with_json_schema(json!({"type": "object", "properties": {"a": {"type": a_type}}}))
    } else {
        schema
    }
}

const LEVELS: [Compatibility; 5] = [
    Compatibility::None,
    Compatibility::Backward,
    Compatibility::Forward,
    Compatibility::Full,
    Compatibility::BackwardTransitive,
];

fn registry_with(levels: &[Compatibility]) -> MemorySchemaRegistry {
    let registry = strict();
    for (event_type, level) in TYPES.iter().zip(levels) {
        registry.set_compatibility(event_type, *level).unwrap();
    }
    registry
}

/// Both registries hold the same types, versions and definitions, and
/// validate the same way.
fn assert_same(batched: &MemorySchemaRegistry, reference: &MemorySchemaRegistry, context: &str) {
    assert_eq!(
        batched.list_types().unwrap(),
        reference.list_types().unwrap(),
        "{context}"
    );
    let payloads: [Value; 5] = [
        json!({}),
        json!({"a": "x"}),
        json!({"a": 1, "b": 2}),
        json!({"a": "x", "b": 2, "c": 3}),
        json!(5),
    ];
    for event_type in TYPES {
        assert_eq!(
            batched.versions(event_type),
            reference.versions(event_type),
            "{context} {event_type}"
        );
        for version in 0..=7 {
            assert_eq!(
                batched.get(event_type, version).unwrap(),
                reference.get(event_type, version).unwrap(),
                "{context} {event_type} v{version}"
            );
            for payload in &payloads {
                let event = event(event_type, version, payload.clone());
                assert_eq!(
                    format!("{:?}", batched.validate(&event)),
                    format!("{:?}", reference.validate(&event)),
                    "{context} {event_type} v{version} {payload}"
                );
            }
        }
    }
}

#[test]
fn batches_register_what_one_by_one_registration_would() {
    let mut accepted_batches = 0;
    let mut refused_batches = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let levels: Vec<Compatibility> = TYPES
            .iter()
            .map(|_| LEVELS[rng.below(LEVELS.len())])
            .collect();
        let batched = registry_with(&levels);
        let mut accepted: Vec<EventSchema> = Vec::new();
        for step in 0..12 {
            let batch: Vec<EventSchema> =
                (0..rng.below(7)).map(|_| random_schema(&mut rng)).collect();
            let context = format!("seed {seed} step {step}");
            // What registering the batch one by one on the same state does.
            let reference = registry_with(&levels);
            one_by_one(&reference, &accepted).unwrap();
            let expected = one_by_one(&reference, &batch);
            let got = batched.register_all(batch.clone());
            assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{context}");
            if expected.is_ok() {
                accepted.extend(batch);
                accepted_batches += 1;
                assert_same(&batched, &reference, &context);
            } else {
                refused_batches += 1;
                // Nothing of the refused batch is registered.
                let before = registry_with(&levels);
                one_by_one(&before, &accepted).unwrap();
                assert_same(&batched, &before, &context);
            }
        }
    }
    // Both outcomes are exercised.
    assert!(accepted_batches > 50, "{accepted_batches}");
    assert!(refused_batches > 50, "{refused_batches}");
}
