//! A fixed loop for instruction counting (`valgrind --tool=callgrind`):
//! validates the bench's order payload `N` times with the registry or with
//! `jsonschema` used directly, so that the per-call instruction count is
//! `(count(2N) - count(N)) / N`, independent of machine load.
//!
//! ```text
//! cargo build --release -p event-schema --example validate_loop
//! valgrind --tool=callgrind target/release/examples/validate_loop required registry 100000
//! ```
//!
//! Arguments: `required|json`, `registry|baseline`, `N`.
#![allow(missing_docs)]

use event_core::Event;
use event_schema::{EventSchema, MemorySchemaRegistry, SchemaRegistry};
use serde_json::{Value, json};
use std::hint::black_box;

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

#[inline(never)]
fn run_registry(registry: &MemorySchemaRegistry, event: &Event, n: u64) -> u64 {
    let mut ok = 0;
    for _ in 0..n {
        ok += u64::from(registry.validate(black_box(event)).is_ok());
    }
    ok
}

#[inline(never)]
fn run_baseline(validator: &jsonschema::Validator, payload: &Value, n: u64) -> u64 {
    let mut ok = 0;
    for _ in 0..n {
        ok += u64::from(validator.is_valid(black_box(payload)));
    }
    ok
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map_or("required", String::as_str);
    let who = args.get(2).map_or("registry", String::as_str);
    let n: u64 = args.get(3).map_or(Ok(100_000), |s| s.parse())?;
    let (schema, baseline_schema) = match case {
        "required" => (
            EventSchema::new("order.created", 1).with_required_fields(FIELDS),
            json!({"type": "object", "required": FIELDS}),
        ),
        "json" => (
            EventSchema::new("order.created", 1).with_json_schema(order_schema()),
            order_schema(),
        ),
        other => return Err(format!("unknown case {other}").into()),
    };
    let registry = MemorySchemaRegistry::new();
    for i in 0..50 {
        registry.register(EventSchema::new(format!("other.{i}"), 1).with_required_fields(["x"]))?;
    }
    registry.register(schema)?;
    let baseline = jsonschema::validator_for(&baseline_schema)?;
    let event = Event::typed(
        "events.shop.order",
        "shop",
        "order.created",
        1,
        "order",
        "bench",
        payload(),
    );
    let ok = match who {
        "registry" => run_registry(&registry, &event, n),
        "baseline" => run_baseline(&baseline, &event.payload, n),
        other => return Err(format!("unknown side {other}").into()),
    };
    if ok != n {
        return Err(format!("{ok} of {n} valid").into());
    }
    Ok(())
}
