//! Schema registry walkthrough: register a schema, validate payloads, evolve
//! it under BACKWARD compatibility, see an incompatible evolution refused, and
//! publish through an `EventBus` that validates with the registry.
//!
//! Run with `cargo run --example schema` (in an application: `a3s-event`
//! with the feature `schema`).

use a3s_event::provider::memory::MemoryProvider;
use a3s_event::schema::{
    Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry, UnknownTypePolicy,
};
use a3s_event::{Error, Event, EventBus};
use serde_json::json;
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> a3s_event::Result<()> {
    // Unknown event types are refused; evolutions are checked under BACKWARD
    // (new consumers must read data written with the previous version).
    let registry = Arc::new(
        MemorySchemaRegistry::new()
            .with_unknown_type_policy(UnknownTypePolicy::Reject)
            .with_default_compatibility(Compatibility::Backward),
    );

    // v1: the original API (required top-level fields) plus a JSON Schema.
    registry.register(
        EventSchema::new("order.created", 1)
            .with_required_fields(["order_id", "amount"])
            .with_json_schema(json!({
                "type": "object",
                "properties": {
                    "order_id": {"type": "string"},
                    "amount": {"type": "integer", "minimum": 0},
                    "currency": {"enum": ["EUR", "USD"]}
                }
            }))
            .with_description("an order was placed"),
    )?;
    println!("registered order.created v1");

    let order = |version, payload| {
        Event::typed(
            "events.shop.order_created",
            "shop",
            "order.created",
            version,
            "order placed",
            "shop",
            payload,
        )
    };

    // Validate payloads against v1.
    registry.validate(&order(1, json!({"order_id": "o-1", "amount": 1200})))?;
    println!("valid:   {{order_id: o-1, amount: 1200}}");
    for bad in [
        json!({"order_id": "o-2"}),
        json!({"order_id": "o-3", "amount": -5}),
        json!({"order_id": "o-4", "amount": 10, "currency": "GBP"}),
    ] {
        let err = registry
            .validate(&order(1, bad.clone()))
            .expect_err("invalid payload");
        println!("invalid: {bad} -> {err}");
    }

    // v2 under BACKWARD: `amount` widens from integer to number, `currency`
    // gains a value, `order_id` is no longer required. v2 consumers can read
    // everything v1 producers wrote.
    registry.register(
        EventSchema::new("order.created", 2)
            .with_required_fields(["amount"])
            .with_json_schema(json!({
                "type": "object",
                "properties": {
                    "order_id": {"type": "string"},
                    "amount": {"type": "number", "minimum": 0},
                    "currency": {"enum": ["EUR", "USD", "GBP"]}
                }
            })),
    )?;
    println!(
        "registered order.created v2 (latest: {:?})",
        registry.latest_version("order.created")?
    );

    // v3 would make `customer_id` required: v3 consumers could not read v2
    // data, which never had it. Refused, with the field and the rule.
    let refused = registry.register(
        EventSchema::new("order.created", 3)
            .with_required_fields(["amount", "customer_id"])
            .with_json_schema(json!({
                "type": "object",
                "properties": {
                    "amount": {"type": "number", "minimum": 0},
                    "currency": {"enum": ["EUR", "USD", "GBP"]}
                }
            })),
    );
    match refused {
        Err(Error::Schema { reason, .. }) => println!("v3 refused: {reason}"),
        other => panic!("v3 should have been refused, got {other:?}"),
    }

    // Publish through a bus that validates with the registry: an invalid
    // event is `Error::SchemaValidation`, counted in the metrics, and never
    // reaches the provider.
    let bus = EventBus::new(MemoryProvider::default()).with_schema_registry(registry.clone());
    let published = bus
        .publish_typed(
            "shop",
            "order_created",
            "order.created",
            2,
            "order placed",
            "shop",
            json!({"amount": 19.99, "currency": "GBP"}),
        )
        .await?;
    println!("published v2 order {}", published.id);

    let err = bus
        .publish_typed(
            "shop",
            "order_created",
            "order.created",
            2,
            "order placed",
            "shop",
            json!({"amount": "nineteen"}),
        )
        .await
        .expect_err("invalid v2 payload");
    println!("not published: {err}");

    let err = bus
        .publish_typed(
            "shop",
            "refund",
            "refund.created",
            1,
            "refund",
            "shop",
            json!({}),
        )
        .await
        .expect_err("unknown type under Reject");
    println!("not published: {err}");

    let stored = bus.list_events(None, 10).await?;
    let metrics = bus.metrics().snapshot();
    println!(
        "events stored: {}, refused by validation: {}",
        stored.len(),
        metrics.validation_errors
    );
    assert_eq!((stored.len(), metrics.validation_errors), (1, 2));
    Ok(())
}
