//! Per-event validation cost: `MemorySchemaRegistry::validate` against the
//! `jsonschema` crate used directly on the same payload, in the same run.
//!
//! `cargo bench -p event-schema --bench validation -- --warm-up-time 1 --measurement-time 3`
//!
//! For load-independent instruction counts, run one case in criterion's
//! profile mode under callgrind and divide a function's inclusive count by
//! its calls (`callgrind_annotate --inclusive=yes`):
//! `valgrind --tool=callgrind target/release/deps/validation-<hash> --bench
//! --profile-time 3 required_fields/registry_validate`.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group};
use event_core::Event;
use event_schema::{EventSchema, MemorySchemaRegistry, SchemaRegistry};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::Instant;

const FIELDS: [&str; 5] = ["order_id", "customer", "amount", "currency", "lines"];

fn payload() -> Value {
    json!({
        "order_id": "o-123456",
        "customer": {"id": "c-42", "email": "ann@example.com", "name": "Ann"},
        "amount": 129.5,
        "currency": "EUR",
        "status": "paid",
        "lines": [
            {"sku": "SKU-1", "qty": 1, "price": 99.5},
            {"sku": "SKU-2", "qty": 3, "price": 10.0}
        ],
        "tags": ["gift", "express"]
    })
}

fn order_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "pattern": "^o-[0-9]+$"},
            "customer": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "email": {"type": "string", "format": "email"},
                    "name": {"type": "string", "maxLength": 200}
                },
                "required": ["id", "email"]
            },
            "amount": {"type": "number", "minimum": 0},
            "currency": {"enum": ["EUR", "USD", "GBP"]},
            "status": {"enum": ["new", "paid", "shipped"]},
            "lines": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string"},
                        "qty": {"type": "integer", "minimum": 1},
                        "price": {"type": "number", "minimum": 0}
                    },
                    "required": ["sku", "qty", "price"],
                    "additionalProperties": false
                }
            },
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}
        },
        "required": ["order_id", "customer", "amount", "currency", "lines"]
    })
}

fn event(event_type: &str) -> Event {
    Event::typed(
        "events.shop.order",
        "shop",
        event_type,
        1,
        "order",
        "bench",
        payload(),
    )
}

fn required_fields(c: &mut Criterion) {
    let registry = MemorySchemaRegistry::new();
    // Other types registered too, so the lookup is not trivially the only entry.
    for i in 0..50 {
        registry
            .register(EventSchema::new(format!("other.{i}"), 1).with_required_fields(["x"]))
            .expect("register");
    }
    registry
        .register(EventSchema::new("order.created", 1).with_required_fields(FIELDS))
        .expect("register");
    let baseline =
        jsonschema::validator_for(&json!({"type": "object", "required": FIELDS})).expect("compile");
    let ev = event("order.created");
    assert!(registry.validate(&ev).is_ok() && baseline.is_valid(&ev.payload));

    let mut group = c.benchmark_group("required_fields");
    group.bench_function("registry_validate", |b| {
        b.iter(|| registry.validate(black_box(&ev)))
    });
    group.bench_function("jsonschema_is_valid", |b| {
        b.iter(|| baseline.is_valid(black_box(&ev.payload)))
    });
    group.bench_function("jsonschema_validate", |b| {
        b.iter(|| baseline.validate(black_box(&ev.payload)).is_ok())
    });
    group.finish();
}

fn json_schema(c: &mut Criterion) {
    let registry = MemorySchemaRegistry::new();
    for i in 0..50 {
        registry
            .register(EventSchema::new(format!("other.{i}"), 1).with_required_fields(["x"]))
            .expect("register");
    }
    registry
        .register(EventSchema::new("order.created", 1).with_json_schema(order_schema()))
        .expect("register");
    let baseline = jsonschema::validator_for(&order_schema()).expect("compile");
    let ev = event("order.created");
    assert!(registry.validate(&ev).is_ok() && baseline.is_valid(&ev.payload));

    let mut group = c.benchmark_group("json_schema");
    group.bench_function("registry_validate", |b| {
        b.iter(|| registry.validate(black_box(&ev)))
    });
    group.bench_function("jsonschema_is_valid", |b| {
        b.iter(|| baseline.is_valid(black_box(&ev.payload)))
    });
    group.bench_function("jsonschema_validate", |b| {
        b.iter(|| baseline.validate(black_box(&ev.payload)).is_ok())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = required_fields, json_schema
}

/// Median over rounds of (time per call) for `ours` and `baseline`, measured
/// alternately in small batches so that load changes on a shared machine hit
/// both equally. Returns (ours ns, baseline ns, median of baseline/ours).
fn paired(mut ours: impl FnMut() -> bool, mut baseline: impl FnMut() -> bool) -> (f64, f64, f64) {
    const ROUNDS: usize = 301;
    const CALLS: u32 = 2_000;
    let mut ours_ns = Vec::with_capacity(ROUNDS);
    let mut base_ns = Vec::with_capacity(ROUNDS);
    let mut ratios = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let time = |f: &mut dyn FnMut() -> bool| {
            let start = Instant::now();
            for _ in 0..CALLS {
                black_box(f());
            }
            start.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS)
        };
        let (o, b) = if round % 2 == 0 {
            let o = time(&mut ours);
            (o, time(&mut baseline))
        } else {
            let b = time(&mut baseline);
            (time(&mut ours), b)
        };
        ours_ns.push(o);
        base_ns.push(b);
        ratios.push(b / o);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        median(&mut ours_ns),
        median(&mut base_ns),
        median(&mut ratios),
    )
}

/// Prints the paired comparison for both schemas.
fn paired_report() {
    for (name, schema, baseline_schema) in [
        (
            "required_fields",
            EventSchema::new("order.created", 1).with_required_fields(FIELDS),
            json!({"type": "object", "required": FIELDS}),
        ),
        (
            "json_schema",
            EventSchema::new("order.created", 1).with_json_schema(order_schema()),
            order_schema(),
        ),
    ] {
        let registry = MemorySchemaRegistry::new();
        for i in 0..50 {
            registry
                .register(EventSchema::new(format!("other.{i}"), 1).with_required_fields(["x"]))
                .expect("register");
        }
        registry.register(schema).expect("register");
        let baseline = jsonschema::validator_for(&baseline_schema).expect("compile");
        let ev = event("order.created");
        let (ours, base, ratio) = paired(
            || registry.validate(black_box(&ev)).is_ok(),
            || baseline.is_valid(black_box(&ev.payload)),
        );
        let unknown = event("not.registered");
        let (lookup, _, _) = paired(
            || registry.validate(black_box(&unknown)).is_ok(),
            || baseline.is_valid(black_box(&ev.payload)),
        );
        println!(
            "paired/{name}: registry lookup alone (unknown type, allowed) {lookup:.1} ns/event"
        );
        println!(
            "paired/{name}: registry {ours:.1} ns/event, jsonschema is_valid {base:.1} ns/event, \
             speed ratio (registry vs jsonschema, median of rounds) {ratio:.2}x"
        );
    }
}

fn main() {
    benches();
    // only under `cargo bench` (which passes `--bench`): `cargo test --benches`
    // (CI's smoke run) and `cargo bench -- --test` run each case once instead
    if is_measuring() {
        paired_report();
    }
    Criterion::default().configure_from_args().final_summary();
}

/// Whether this is a measuring run (`cargo bench`), as criterion decides:
/// `--bench` given and neither `--test` nor `--list`.
fn is_measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}
