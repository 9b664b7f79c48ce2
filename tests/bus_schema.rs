//! EventBus + MemorySchemaRegistry, end to end (issue 6's bus integration).
#![cfg(all(feature = "memory", feature = "schema", feature = "crypto"))]
#![allow(clippy::unwrap_used)]

use a3s_event::crypto::{Aes256GcmEncryptor, EncryptedPayload};
use a3s_event::provider::memory::MemoryProvider;
use a3s_event::schema::{EventSchema, MemorySchemaRegistry, SchemaRegistry, UnknownTypePolicy};
use a3s_event::{Error, Event, EventBus, EventProvider};
use serde_json::json;
use std::sync::Arc;

fn registry(policy: UnknownTypePolicy) -> Arc<MemorySchemaRegistry> {
    let registry = MemorySchemaRegistry::new().with_unknown_type_policy(policy);
    registry
        .register(
            EventSchema::new("order.created", 1)
                .with_required_fields(["order_id", "amount"])
                .with_json_schema(json!({
                    "type": "object",
                    "properties": {"amount": {"type": "integer", "minimum": 0}}
                })),
        )
        .unwrap();
    Arc::new(registry)
}

fn order(payload: serde_json::Value) -> Event {
    Event::typed(
        "events.shop.order",
        "shop",
        "order.created",
        1,
        "order",
        "shop",
        payload,
    )
}

#[tokio::test]
async fn an_invalid_typed_event_is_refused_and_nothing_is_stored() {
    let provider = MemoryProvider::default();
    let bus =
        EventBus::new(provider.clone()).with_schema_registry(registry(UnknownTypePolicy::Allow));
    match bus
        .publish_event(&order(json!({"order_id": "o-1", "amount": -3})))
        .await
    {
        Err(Error::SchemaValidation {
            event_type,
            version,
            path,
            ..
        }) => {
            assert_eq!((event_type.as_str(), version), ("order.created", 1));
            assert!(path.contains("amount"), "path names the field: {path}");
        }
        other => panic!("expected SchemaValidation, got {other:?}"),
    }
    assert!(
        bus.publish_event(&order(json!({"order_id": "o-2"})))
            .await
            .is_err(),
        "missing required field"
    );
    assert_eq!(
        provider.info().await.unwrap().messages,
        0,
        "nothing was published"
    );
    assert_eq!(bus.metrics().snapshot().validation_errors, 2);

    bus.publish_event(&order(json!({"order_id": "o-3", "amount": 5})))
        .await
        .unwrap();
    // untyped events pass under the default policies
    bus.publish("shop", "note", "untyped", "shop", json!({"free": "form"}))
        .await
        .unwrap();
    assert_eq!(provider.info().await.unwrap().messages, 2);
}

#[tokio::test]
async fn unknown_types_follow_the_policy() {
    let provider = MemoryProvider::default();
    let bus =
        EventBus::new(provider.clone()).with_schema_registry(registry(UnknownTypePolicy::Reject));
    let unknown = Event::typed(
        "events.shop.x",
        "shop",
        "never.registered",
        1,
        "x",
        "shop",
        json!({}),
    );
    assert!(bus.publish_event(&unknown).await.is_err());
    assert_eq!(provider.info().await.unwrap().messages, 0);
}

#[tokio::test]
async fn validation_sees_plaintext_before_encryption() {
    let provider = MemoryProvider::default();
    let bus =
        EventBus::new(provider.clone()).with_schema_registry(registry(UnknownTypePolicy::Allow));
    bus.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &[3; 32])));
    // valid plaintext passes even though the stored payload is an envelope
    bus.publish_event(&order(json!({"order_id": "o-1", "amount": 1})))
        .await
        .unwrap();
    let stored = provider.history(None, 1).await.unwrap();
    assert!(EncryptedPayload::is_encrypted(&stored[0].payload));
    // invalid plaintext is refused before anything is encrypted or stored
    assert!(
        bus.publish_event(&order(json!({"order_id": "o-2", "amount": -1})))
            .await
            .is_err()
    );
    assert_eq!(provider.info().await.unwrap().messages, 1);
}

#[tokio::test]
async fn publish_batch_refuses_only_the_invalid_event_before_encryption() {
    let provider = MemoryProvider::default();
    let bus =
        EventBus::new(provider.clone()).with_schema_registry(registry(UnknownTypePolicy::Allow));
    bus.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &[5; 32])));
    let batch = [
        order(json!({"order_id": "o-1", "amount": 1})),
        order(json!({"order_id": "o-2", "amount": 2.5})),
        order(json!({"order_id": "o-3", "amount": 3})),
    ];
    let results = bus.publish_batch(&batch).await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    match &results[1] {
        Err(Error::SchemaValidation { path, .. }) => assert_eq!(path, "/amount"),
        other => panic!("expected SchemaValidation, got {other:?}"),
    }
    // Only the valid events were encrypted and stored.
    let stored = provider.history(None, 10).await.unwrap();
    let ids: Vec<&str> = stored.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [batch[2].id.as_str(), batch[0].id.as_str()]);
    assert!(
        stored
            .iter()
            .all(|e| EncryptedPayload::is_encrypted(&e.payload))
    );
    let metrics = bus.metrics().snapshot();
    assert_eq!(
        (
            metrics.validation_errors,
            metrics.encrypt_total,
            metrics.publish_errors,
            metrics.publish_total
        ),
        (1, 2, 1, 2)
    );
}
