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

/// The dead letter of an undecryptable event keeps its ciphertext and its
/// id, so it decrypts once the key is restored; it is dead-lettered once,
/// and the consumer goes on with the events after it.
#[tokio::test]
async fn an_undecryptable_event_is_dead_lettered_once_with_its_ciphertext() {
    let provider = MemoryProvider::default();
    let writer = EventBus::new(provider.clone());
    let lost = Arc::new(Aes256GcmEncryptor::new("lost", &KEY_B));
    writer.set_encryptor(lost.clone());
    let secret = json!({"card": "4111-1111-1111-1111"});
    let unreadable = writer
        .publish("pay", "card.charged", "unreadable", "psp", secret.clone())
        .await
        .unwrap();

    let bus = EventBus::new(provider.clone());
    let ring = Arc::new(Aes256GcmEncryptor::new("k1", &KEY_A));
    bus.set_encryptor(ring.clone());
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());
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
            ConsumerConfig::default().concurrency(1), // handled in order
        )
        .await
        .unwrap();
    for n in 1..=3 {
        bus.publish("pay", "a", "readable", "psp", json!({"n": n}))
            .await
            .unwrap();
    }
    for n in 1..=3 {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, n, "the consumer goes on after the unreadable event");
    }
    consumer.shutdown(Duration::from_secs(2)).await;

    let dead = dlq.list(10).await.unwrap();
    assert_eq!(dead.len(), 1, "dead-lettered once: {dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.event.id, unreadable.id);
    assert_eq!(letter.original_subject, "events.pay.card.charged");
    assert!(letter.reason.contains(&unreadable.id), "{}", letter.reason);
    assert!(letter.reason.contains("lost"), "{}", letter.reason);
    assert_eq!(
        letter.reason.matches(&unreadable.id).count(),
        1,
        "the event is named once: {}",
        letter.reason
    );
    // the ciphertext, not a placeholder, and never the plaintext
    assert!(EncryptedPayload::is_encrypted(&letter.event.payload));
    assert!(!letter.event.payload.to_string().contains("4111"));
    // the key comes back: the dead letter decrypts
    ring.add_key("lost", &KEY_B).unwrap();
    assert_eq!(
        a3s_event::EventEncryptor::decrypt(&*ring, &letter.event.id, &letter.event.payload)
            .unwrap(),
        secret
    );
    let m = bus.metrics().snapshot();
    assert_eq!((m.decrypt_errors, m.decrypt_total, m.dlq_total), (1, 3, 1));
}

/// Under `publish_batch`, every event that passes validation is encrypted
/// once and counted once; a refused one is neither stored nor counted as
/// encrypted.
#[tokio::test]
async fn publish_batch_encrypts_and_counts_each_event_once() {
    let provider = MemoryProvider::default();
    let bus = EventBus::new(provider.clone());
    bus.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &KEY_A)));
    let events: Vec<_> = ["events.pay.a", "events.pay.*", "events.pay.b"]
        .into_iter()
        .enumerate()
        .map(|(n, subject)| a3s_event::Event::new(subject, "pay", "s", "psp", json!({"n": n})))
        .collect();
    let results = bus.publish_batch(&events).await.unwrap();
    assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());

    let stored = provider.history(Some("events.pay.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|e| EncryptedPayload::is_encrypted(&e.payload))
    );
    let listed = bus.list_events(Some("pay"), 10).await.unwrap();
    let ns: Vec<_> = listed.iter().map(|e| e.payload["n"].clone()).collect();
    assert_eq!(ns, [json!(2), json!(0)]);
    let m = bus.metrics().snapshot();
    assert_eq!(
        (
            m.encrypt_total,
            m.publish_total,
            m.publish_errors,
            m.decrypt_total
        ),
        (2, 2, 1, 2)
    );
}

/// A payload is taken for an envelope when it claims to be one (the
/// `encrypted` and `version` markers and a `ciphertext` field):
/// plaintext that merely mentions encryption passes through, and anything
/// claiming to be an envelope that cannot be read (malformed, a future
/// version, a key this bus lacks) is dead-lettered intact, never handed to
/// the handler as data.
#[tokio::test]
async fn plaintext_that_looks_encrypted_is_passed_through_or_dead_lettered_intact() {
    let provider = MemoryProvider::default();
    let legacy = EventBus::new(provider.clone());
    let mentions = [
        json!({"encrypted": true, "disk": "sda"}),
        json!({"encrypted": true, "version": 3, "release": "2026.11"}),
        // no ciphertext: user data, also once dead-lettered and re-driven
        json!({"volume": "sda", "encrypted": true, "version": 2, "keyId": "kms-1"}),
    ];
    for payload in &mentions {
        legacy
            .publish("pay", "legacy", "old", "psp", payload.clone())
            .await
            .unwrap();
    }
    // (payload, what the dead letter's reason names)
    let claims = [
        (
            json!({"encrypted": true, "version": 1, "keyId": 7, "nonce": "n", "ciphertext": "c"}),
            "`keyId` must be a string",
        ),
        (
            json!({"encrypted": true, "version": "1", "keyId": "k", "nonce": "n", "ciphertext": "c"}),
            "`version` must be a non-negative integer",
        ),
        (
            json!({"encrypted": true, "version": 2, "keyId": "k2", "ciphertext": "AAAA"}),
            "unsupported envelope version 2",
        ),
        (
            json!({"encrypted": true, "version": 1, "keyId": "vault", "nonce": "n", "ciphertext": "c"}),
            "vault",
        ),
    ];
    let mut claimed = Vec::new();
    for (payload, _) in &claims {
        let event = legacy
            .publish("pay", "legacy", "odd", "psp", payload.clone())
            .await
            .unwrap();
        claimed.push(event.id);
    }

    let bus = EventBus::new(provider.clone());
    bus.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &KEY_A)));
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());
    bus.update_subscription(filter("reader")).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = bus
        .consume(
            "reader",
            move |r: ReceivedEvent| {
                let tx = tx.clone();
                async move {
                    tx.send(r.event.payload.clone()).unwrap();
                    Ok::<(), std::io::Error>(())
                }
            },
            ConsumerConfig::default().concurrency(1), // handled in order
        )
        .await
        .unwrap();
    for payload in &mentions {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, payload);
    }
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = dlq.list(10).await.unwrap();
        if dead.len() >= claims.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.shutdown(Duration::from_secs(2)).await;
    assert!(
        rx.try_recv().is_err(),
        "nothing claiming to be an envelope was handed over"
    );
    assert_eq!(dead.len(), claims.len(), "{dead:?}");
    for ((payload, reason), id) in claims.iter().zip(&claimed) {
        let letter = dead
            .iter()
            .find(|d| &d.event.id == id)
            .unwrap_or_else(|| panic!("{payload} was dead-lettered"));
        assert_eq!(&letter.event.payload, payload, "kept intact");
        assert!(letter.reason.contains(reason), "{}", letter.reason);
    }
}
