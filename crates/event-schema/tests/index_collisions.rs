//! Incremental index updates (`register_all` / `register`) with
//! names whose heads collide (same length, same first and last eight
//! bytes: one probe chain, told apart by the full name), across table
//! growth and version replacement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::event;
use event_schema::{
    Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry, UnknownTypePolicy,
};
use serde_json::json;

fn name(i: usize) -> String {
    // 8 + 4 + 8 bytes: every name has the same head
    format!("aaaaaaaa{i:04}bbbbbbbb")
}

fn field(i: usize, v: u32) -> String {
    format!("f{i}_{v}")
}

fn schema(i: usize, v: u32) -> EventSchema {
    EventSchema::new(name(i), v).with_required_fields([field(i, v)])
}

/// `registry` finds, for each of types `0..n` at versions `1..=versions(i)`,
/// exactly the schema registered for it (its own required field passes, a
/// neighbour's fails), and nothing beyond.
fn check(registry: &MemorySchemaRegistry, n: usize, versions: impl Fn(usize) -> u32, ctx: &str) {
    for i in 0..n {
        let top = versions(i);
        for v in 1..=top {
            let own = event(&name(i), v, json!({ field(i, v): 1 }));
            assert!(registry.validate(&own).is_ok(), "{ctx}: {} v{v}", name(i));
            let other = event(&name(i), v, json!({ field(i + 1, v): 1 }));
            assert!(
                registry.validate(&other).is_err(),
                "{ctx}: {} v{v} other",
                name(i)
            );
        }
        let beyond = event(&name(i), top + 1, json!({ field(i, top + 1): 1 }));
        assert!(
            registry.validate(&beyond).is_err(),
            "{ctx}: {} beyond",
            name(i)
        );
    }
    let absent = event(&name(9999), 1, json!({ field(9999, 1): 1 }));
    assert!(registry.validate(&absent).is_err(), "{ctx}: absent");
}

#[test]
fn colliding_heads_across_growth_and_new_versions() {
    let registry = MemorySchemaRegistry::new()
        .with_unknown_type_policy(UnknownTypePolicy::Reject)
        .with_default_compatibility(Compatibility::None);
    let mut n = 0;
    // grow one by one, then in batches of increasing size
    for chunk in [1, 1, 1, 2, 3, 5, 8, 13, 21, 34] {
        if chunk == 1 {
            registry.register(schema(n, 1)).unwrap();
        } else {
            registry
                .register_all((n..n + chunk).map(|i| schema(i, 1)))
                .unwrap();
        }
        n += chunk;
        check(&registry, n, |_| 1, &format!("after {n}"));
    }
    // every other type gets v2 in one batch, every third v3 one by one
    registry
        .register_all((0..n).step_by(2).map(|i| schema(i, 2)))
        .unwrap();
    for i in (0..n).step_by(6) {
        registry.register(schema(i, 3)).unwrap();
    }
    let top = |i: usize| {
        if i.is_multiple_of(6) {
            3
        } else if i.is_multiple_of(2) {
            2
        } else {
            1
        }
    };
    check(&registry, n, top, "after new versions");
    // a type that had only a compatibility level gets versions later
    registry
        .set_compatibility(&name(n), Compatibility::Backward)
        .unwrap();
    registry
        .register_all([
            schema(n, 1),
            EventSchema::new(name(n), 2).with_required_fields([field(n, 1)]),
        ])
        .unwrap();
    let own = event(&name(n), 2, json!({ field(n, 1): 1 }));
    assert!(registry.validate(&own).is_ok());
    check(&registry, n, top, "after level-only type");
}
