//! Start-up registration cost: many types registered one by one, the same
//! types in one `register_all` batch, and one registration into a registry
//! that already holds them.
//!
//! `cargo bench -p event-schema --bench registration` (CI's smoke run,
//! `cargo test --benches`, registers 200 types instead of 8,000).
#![allow(missing_docs)]

use event_schema::{EventSchema, MemorySchemaRegistry, SchemaRegistry};
use serde_json::json;
use std::time::{Duration, Instant};

/// Types registered: 8,000 when measuring (`--bench` given, as `cargo
/// bench` does), 200 in a smoke run.
fn types() -> usize {
    let args: Vec<String> = std::env::args().collect();
    let measuring =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    if measuring { 8_000 } else { 200 }
}

fn schema(i: usize, version: u32) -> EventSchema {
    EventSchema::new(format!("service.entity{i}.changed"), version)
        .with_required_fields(["id"])
        .with_json_schema(json!({
            "type": "object",
            "properties": {"id": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["id"]
        }))
}

fn schemas(types: usize) -> Vec<EventSchema> {
    (0..types).map(|i| schema(i, 1)).collect()
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn main() {
    let types = types();
    let one_by_one = MemorySchemaRegistry::new();
    let all = schemas(types);
    let elapsed = timed(|| {
        for s in all {
            one_by_one.register(s).expect("registers");
        }
    });
    println!("{types} types one by one: {elapsed:?}");

    let all = schemas(types);
    let batch = MemorySchemaRegistry::new();
    let elapsed = timed(|| batch.register_all(all).expect("registers"));
    println!("{types} types in one register_all: {elapsed:?}");

    const MORE: usize = 200;
    let extra: Vec<EventSchema> = (types..types + MORE).map(|i| schema(i, 1)).collect();
    let elapsed = timed(|| {
        for s in extra {
            batch.register(s).expect("registers");
        }
    });
    println!(
        "1 new type into a registry of {types}: {:?} (mean of {MORE})",
        elapsed / MORE as u32
    );
    let next: Vec<EventSchema> = (0..MORE).map(|i| schema(i, 2)).collect();
    let elapsed = timed(|| {
        for s in next {
            batch.register(s).expect("registers");
        }
    });
    println!(
        "1 new version of a type in a registry of {types}: {:?} (mean of {MORE})",
        elapsed / MORE as u32
    );
}
