//! End to end over the memory provider: encrypted payloads are what the
//! provider stores and delivers; readers with the key ring get the plaintext
//! back; a payload moved into another event does not decrypt.

use std::sync::Arc;
use std::time::Duration;

use event_core::{Error, Event, EventEncryptor, EventProvider};
use event_crypto::{Aes256GcmEncryptor, EncryptedPayload, EncryptionKey};
use event_memory::MemoryProvider;
use serde_json::{Value, json};

const SECRET_CARD: &str = "4111-1111-1111-1111";

fn secret_payload(n: u64) -> Value {
    json!({"card": SECRET_CARD, "holder": "Ada Lovelace", "amount": 4200 + n})
}

/// Encrypts an event's payload in place under the event's own id, as the
/// bus does before publishing.
fn seal(encryptor: &dyn EventEncryptor, mut event: Event) -> Event {
    event.payload = encryptor
        .encrypt(&event.id, &event.payload)
        .expect("encrypt");
    event
}

fn assert_only_ciphertext(event: &Event) {
    assert!(
        EncryptedPayload::is_encrypted(&event.payload),
        "{}",
        event.payload
    );
    let stored = serde_json::to_string(event).expect("serialize");
    // Strings that cannot occur in base64 by chance (`-`, space) or are long.
    for plaintext in [SECRET_CARD, "Ada Lovelace", "\"holder\"", "\"amount\""] {
        assert!(
            !stored.contains(plaintext),
            "{plaintext:?} stored in clear: {stored}"
        );
    }
}

async fn next_event(sub: &mut Box<dyn event_core::Subscription>) -> Event {
    let received = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("delivery within 5 s")
        .expect("next")
        .expect("subscription open");
    Arc::unwrap_or_clone(received.event)
}

#[tokio::test]
async fn subscribers_and_history_see_only_ciphertext_that_decrypts() {
    let provider = MemoryProvider::default();
    let encryptor: Arc<dyn EventEncryptor> = Arc::new(Aes256GcmEncryptor::with_key(
        "k1",
        EncryptionKey::generate().unwrap(),
    ));
    let mut sub = provider.subscribe("events.payment.>").await.unwrap();

    let mut published = Vec::new();
    for n in 0..3 {
        let subject = provider.build_subject("payment", "captured");
        let event = Event::new(
            subject,
            "payment",
            "Payment captured",
            "billing",
            secret_payload(n),
        );
        let plaintext = event.payload.clone();
        let sealed = seal(encryptor.as_ref(), event);
        provider.publish(&sealed).await.unwrap();
        published.push((sealed.id.clone(), plaintext));
    }

    // The live subscription delivers the envelopes, which decrypt.
    for (id, plaintext) in &published {
        let delivered = next_event(&mut sub).await;
        assert_eq!(&delivered.id, id);
        assert_only_ciphertext(&delivered);
        assert_eq!(
            &encryptor
                .decrypt(&delivered.id, &delivered.payload)
                .unwrap(),
            plaintext
        );
    }

    // So does the stored history (newest first).
    let history = provider
        .history(Some("events.payment.>"), 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 3);
    for (stored, (id, plaintext)) in history.iter().zip(published.iter().rev()) {
        assert_eq!(&stored.id, id);
        assert_only_ciphertext(stored);
        assert_eq!(
            &encryptor.decrypt(&stored.id, &stored.payload).unwrap(),
            plaintext
        );
    }
    sub.close().await.unwrap();
}

#[tokio::test]
async fn a_payload_moved_into_another_event_does_not_decrypt() {
    let provider = MemoryProvider::default();
    let encryptor = Aes256GcmEncryptor::new("k1", &[9u8; 32]);
    let subject = provider.build_subject("payment", "captured");

    let original = seal(
        &encryptor,
        Event::new(
            subject.clone(),
            "payment",
            "Payment captured",
            "billing",
            secret_payload(0),
        ),
    );
    provider.publish(&original).await.unwrap();

    // An attacker with write access to the broker copies the stored
    // ciphertext into an event of their own.
    let stolen = provider.history(Some(&subject), 1).await.unwrap().remove(0);
    let forged = Event::new(
        subject.clone(),
        "payment",
        "Refund",
        "attacker",
        stolen.payload.clone(),
    );
    provider.publish(&forged).await.unwrap();

    let history = provider.history(Some(&subject), 10).await.unwrap();
    let forged_read = history.iter().find(|e| e.id == forged.id).unwrap();
    let original_read = history.iter().find(|e| e.id == original.id).unwrap();
    assert_eq!(
        forged_read.payload, original_read.payload,
        "same bytes stored"
    );

    let err = encryptor
        .decrypt(&forged_read.id, &forged_read.payload)
        .unwrap_err();
    match err {
        Error::Decryption(msg) => {
            assert!(msg.contains(&forged.id), "{msg}");
            assert!(msg.contains("authentication failed"), "{msg}");
        }
        other => panic!("expected a decryption error, got {other:?}"),
    }
    assert_eq!(
        encryptor
            .decrypt(&original_read.id, &original_read.payload)
            .unwrap(),
        secret_payload(0)
    );
}

#[tokio::test]
async fn durable_reader_decrypts_across_a_key_rotation() {
    let provider = MemoryProvider::default();
    let writer = Aes256GcmEncryptor::new("2025-01", &[1u8; 32]);
    let subject = provider.build_subject("payment", "captured");

    let before = seal(
        &writer,
        Event::new(
            subject.clone(),
            "payment",
            "before",
            "billing",
            secret_payload(1),
        ),
    );
    provider.publish(&before).await.unwrap();
    writer.add_key("2025-02", &[2u8; 32]).unwrap();
    writer.rotate_to("2025-02").unwrap();
    let after = seal(
        &writer,
        Event::new(
            subject.clone(),
            "payment",
            "after",
            "billing",
            secret_payload(2),
        ),
    );
    provider.publish(&after).await.unwrap();

    // Plaintext events from a publisher without an encryptor pass through.
    let plain = Event::new(
        subject.clone(),
        "payment",
        "plain",
        "legacy",
        json!({"n": 3}),
    );
    provider.publish(&plain).await.unwrap();

    // A separate reader process holding both keys.
    let reader = Aes256GcmEncryptor::new("2025-01", &[1u8; 32]);
    reader.add_key("2025-02", &[2u8; 32]).unwrap();

    let mut sub = provider
        .subscribe_durable("audit", "events.payment.>")
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut sub).await;
        let payload = if reader.is_encrypted(&event.payload) {
            seen.push(event.payload["keyId"].as_str().unwrap().to_owned());
            reader.decrypt(&event.id, &event.payload).unwrap()
        } else {
            seen.push("plaintext".to_owned());
            event.payload.clone()
        };
        let expected = match event.summary.as_str() {
            "before" => secret_payload(1),
            "after" => secret_payload(2),
            _ => json!({"n": 3}),
        };
        assert_eq!(payload, expected, "{}", event.summary);
    }
    assert_eq!(seen, ["2025-01", "2025-02", "plaintext"]);
    sub.close().await.unwrap();
}
