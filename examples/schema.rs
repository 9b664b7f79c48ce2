//! Schema registry walkthrough: register a schema, validate payloads, evolve
//! it under BACKWARD compatibility, see an incompatible evolution refused, and
//! validate before publishing to a `MemoryProvider`.
//!
//! Run with `cargo run --example schema`.

use event_core::{Error, Event, EventProvider, SchemaValidator};
use event_memory::MemoryProvider;
use event_schema::{
    Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry, UnknownTypePolicy,
};
use serde_json::json;
use std::sync::Arc;

/// Validates `event` with `validator`, and publishes it only if it is valid.
async fn publish_validated(
    provider: &MemoryProvider,
    validator: &dyn SchemaValidator,
    event: &Event,
) -> event_core::Result<u64> {
    validator.validate(event)?;
    provider.publish(event).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> event_core::Result<()> {
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

    // Validate before publishing. (The event bus does this itself with
    // `EventBus::with_schema_registry`; here we call the hook directly.)
    let provider = MemoryProvider::default();
    let validator: Arc<dyn SchemaValidator> = registry.clone();
    let good = order(2, json!({"amount": 19.99, "currency": "GBP"}));
    let seq = publish_validated(&provider, validator.as_ref(), &good).await?;
    println!("published v2 order at sequence {seq}");

    let bad = order(2, json!({"amount": "nineteen"}));
    let err = publish_validated(&provider, validator.as_ref(), &bad)
        .await
        .expect_err("invalid v2 payload");
    println!("not published: {err}");

    let unknown = Event::typed(
        "events.shop.refund",
        "shop",
        "refund.created",
        1,
        "refund",
        "shop",
        json!({}),
    );
    let err = publish_validated(&provider, validator.as_ref(), &unknown)
        .await
        .expect_err("unknown type under Reject");
    println!("not published: {err}");

    let stored = provider.history(None, 10).await?;
    assert_eq!(stored.len(), 1);
    println!("events stored: {}", stored.len());
    Ok(())
}
