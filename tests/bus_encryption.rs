//! EventBus + Aes256GcmEncryptor over the memory provider, end to end
//! (issue 5's bus integration).
#![cfg(all(feature = "memory", feature = "crypto"))]
#![allow(clippy::unwrap_used)]

use a3s_event::consumer::ConsumerConfig;
use a3s_event::crypto::{Aes256GcmEncryptor, EncryptedPayload};
use a3s_event::dlq::MemoryDlqHandler;
use a3s_event::provider::memory::MemoryProvider;
use a3s_event::{DlqHandler, EventBus, EventProvider, ReceivedEvent, SubscriptionFilter};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const KEY_A: [u8; 32] = [7; 32];
const KEY_B: [u8; 32] = [9; 32];

fn filter(id: &str) -> SubscriptionFilter {
    SubscriptionFilter {
        subscriber_id: id.to_string(),
        subjects: vec!["events.pay.>".to_string()],
        durable: true,
    }
}

#[tokio::test]
async fn subscribers_see_plaintext_while_the_store_holds_only_ciphertext() {
    let provider = MemoryProvider::default();
    let bus = EventBus::new(provider.clone());
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &KEY_A));
    bus.set_encryptor(encryptor.clone());
    bus.update_subscription(filter("ledger")).await.unwrap();
    let mut subs = bus.create_subscriber("ledger").await.unwrap();

    let secret = json!({"card": "4111-1111-1111-1111", "amount": 42});
    let event = bus
        .publish("pay", "card.charged", "charged", "psp", secret.clone())
        .await
        .unwrap();

    // the subscriber gets plaintext
    let got = tokio::time::timeout(Duration::from_secs(5), subs[0].next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.event.payload, secret);
    assert_eq!(got.event.id, event.id);

    // the provider stores only the envelope, bound to the event id
    let stored = provider.history(Some("events.pay.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(EncryptedPayload::is_encrypted(&stored[0].payload));
    let raw = serde_json::to_string(&stored[0]).unwrap();
    assert!(
        !raw.contains("4111"),
        "plaintext leaked into the store: {raw}"
    );
    assert_eq!(stored[0].payload["keyId"], "k1");

    // list_events decrypts
    let listed = bus.list_events(Some("pay"), 10).await.unwrap();
    assert_eq!(listed[0].payload, secret);

    let m = bus.metrics().snapshot();
    assert!(m.encrypt_total >= 1);
    assert!(m.decrypt_total >= 2);
}

#[tokio::test]
async fn rotation_keeps_old_events_readable_and_plaintext_passes_through() {
    let provider = MemoryProvider::default();
    // a bus without an encryptor published this one
    let plain_bus = EventBus::new(provider.clone());
    plain_bus
        .publish("pay", "legacy", "old", "psp", json!({"n": 0}))
        .await
        .unwrap();

    let bus = EventBus::new(provider.clone());
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &KEY_A));
    bus.set_encryptor(encryptor.clone());
    bus.publish("pay", "a", "under k1", "psp", json!({"n": 1}))
        .await
        .unwrap();
    encryptor.add_key("k2", &KEY_B).unwrap();
    encryptor.rotate_to("k2").unwrap();
    bus.publish("pay", "a", "under k2", "psp", json!({"n": 2}))
        .await
        .unwrap();

    let stored = provider.history(Some("events.pay.>"), 10).await.unwrap();
    assert_eq!(
        stored[0].payload["keyId"], "k2",
        "new events use the new key"
    );
    assert_eq!(stored[1].payload["keyId"], "k1");
    assert_eq!(
        stored[2].payload,
        json!({"n": 0}),
        "plaintext stays plaintext"
    );

    let listed = bus.list_events(Some("pay"), 10).await.unwrap();
    let ns: Vec<_> = listed
        .iter()
        .map(|e| e.payload["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ns,
        vec![2, 1, 0],
        "every event reads, old key, new key and plaintext"
    );
}

#[tokio::test]
async fn undecryptable_payloads_go_to_the_dlq_and_the_consumer_keeps_going() {
    let provider = MemoryProvider::default();
    // written under a key the reading bus does not have
    let writer = EventBus::new(provider.clone());
    writer.set_encryptor(Arc::new(Aes256GcmEncryptor::new("lost", &KEY_B)));
    writer
        .publish("pay", "a", "unreadable", "psp", json!({"n": 1}))
        .await
        .unwrap();

    let bus = EventBus::new(provider.clone());
    bus.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &KEY_A)));
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());
    bus.publish("pay", "a", "readable", "psp", json!({"n": 2}))
        .await
        .unwrap();
    bus.update_subscription(filter("reader")).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = bus
        .consume(
            "reader",
            move |r: ReceivedEvent| {
                let tx = tx.clone();
                async move {
                    tx.send(r.event.payload["n"].as_u64().unwrap()).unwrap();
                    Ok::<(), std::io::Error>(())
                }
            },
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
    let handled = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handled, 2, "the readable event is handled");
    // the unreadable one is dead-lettered with the reason
    let mut dead = Vec::new();
    for _ in 0..50 {
        dead = dlq.list(10).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.to_lowercase().contains("decrypt"),
        "reason: {}",
        dead[0].reason
    );
    assert_eq!(dead[0].original_subject, "events.pay.a");
    consumer.shutdown(Duration::from_secs(2)).await;
    assert!(bus.metrics().snapshot().decrypt_errors >= 1);
}
