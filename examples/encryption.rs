//! Payload encryption with AES-256-GCM and key rotation.
//!
//! Publishes encrypted events to the in-memory provider, reads them back
//! through a subscription and the history, rotates the key and shows that
//! events encrypted before the rotation still decrypt.
//!
//! The key comes from the environment variable `A3S_EVENT_KEY` (32 bytes,
//! standard base64; create one with `openssl rand -base64 32`):
//!
//! ```sh
//! A3S_EVENT_KEY=$(openssl rand -base64 32) cargo run --example encryption
//! ```
//!
//! Without the variable the example generates a throwaway key and says so.
//! A real service should fail to start instead: a key it invents is lost on
//! restart, and with it every payload encrypted under it.
//!
//! Steps 1 to 5 encrypt and decrypt by hand, to show each step; step 6 does
//! what an application does: `EventBus::set_encryptor`, which encrypts on
//! publish and decrypts on read. In an application: `a3s-event` with the
//! feature `crypto`.

use std::sync::Arc;
use std::time::Duration;

use a3s_event::crypto::{Aes256GcmEncryptor, EncryptedPayload, EncryptionKey};
use a3s_event::provider::memory::MemoryProvider;
use a3s_event::{Event, EventBus, EventEncryptor, EventProvider};
use serde_json::json;

const KEY_VAR: &str = "A3S_EVENT_KEY";

fn load_key() -> a3s_event::Result<EncryptionKey> {
    match std::env::var_os(KEY_VAR) {
        // Set but invalid (bad base64, wrong length): a clear error, no fallback.
        Some(_) => EncryptionKey::from_env(KEY_VAR),
        None => {
            println!("{KEY_VAR} is not set: using a throwaway random key for this run");
            EncryptionKey::generate()
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let encryptor = Arc::new(Aes256GcmEncryptor::with_key("2025-01", load_key()?));
    println!("encryptor: {encryptor:?}"); // key ids only, never key bytes

    let provider = MemoryProvider::default();
    let mut sub = provider.subscribe("events.payment.>").await?;

    // 1. Encrypt the payload under the event's id and publish.
    let subject = provider.build_subject("payment", "captured");
    let mut event = Event::new(
        subject.clone(),
        "payment",
        "Payment captured",
        "billing",
        json!({"card": "4111 1111 1111 1111", "amount": 4200, "currency": "EUR"}),
    );
    event.payload = encryptor.encrypt(&event.id, &event.payload)?;
    provider.publish(&event).await?;
    println!(
        "\nstored payload (what the broker sees):\n  {}",
        event.payload
    );

    // 2. A subscriber receives the envelope and decrypts it.
    let received = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await??
        .ok_or("subscription closed")?;
    let plaintext = encryptor.decrypt(&received.event.id, &received.event.payload)?;
    println!("\nsubscriber decrypted:\n  {plaintext}");

    // 3. Rotate: add a new key and make it active. The ring keeps the old one.
    //    One process can do both at once. With several, add the key to every
    //    process first (a rollout whose ring holds both keys, the old one
    //    still active), make it active in a second step once all hold it,
    //    and remove the old key only when no event under it is left to read:
    //    see "Key rotation" in the event-crypto docs and docs/deployment.md.
    encryptor.add_key("2025-02", EncryptionKey::generate()?.as_bytes())?;
    encryptor.rotate_to("2025-02")?;
    println!(
        "\nrotated: active key {:?}, ring {:?}",
        encryptor.active_key_id(),
        encryptor.key_ids()
    );

    let mut refund = Event::new(
        provider.build_subject("payment", "refunded"),
        "payment",
        "Payment refunded",
        "billing",
        json!({"card": "4111 1111 1111 1111", "amount": -4200, "currency": "EUR"}),
    );
    refund.payload = encryptor.encrypt(&refund.id, &refund.payload)?;
    provider.publish(&refund).await?;

    // 4. History holds events under both keys; every one still decrypts.
    println!("\nhistory (newest first):");
    for stored in provider.history(Some("events.payment.>"), 10).await? {
        let envelope = EncryptedPayload::from_value(&stored.payload)?;
        let payload = encryptor.decrypt(&stored.id, &stored.payload)?;
        println!(
            "  {} [key {}] -> {payload}",
            stored.summary, envelope.key_id
        );
    }

    // 5. The ciphertext is bound to its event: copied elsewhere, it fails.
    match encryptor.decrypt("evt-forged", &event.payload) {
        Err(err) => println!("\npayload moved to another event: {err}"),
        Ok(_) => return Err("a moved payload must not decrypt".into()),
    }

    sub.close().await?;

    // 6. What an application does: give the encryptor to the bus. Payloads
    //    are encrypted on publish and decrypted for bus subscriptions,
    //    consumers and `list_events`; the provider only ever holds ciphertext.
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_encryptor(encryptor.clone());
    let published = bus
        .publish(
            "payment",
            "captured",
            "Payment captured",
            "billing",
            json!({"card": "4111 1111 1111 1111", "amount": 990, "currency": "EUR"}),
        )
        .await?;
    let stored = &bus.provider().history(None, 1).await?[0];
    let listed = &bus.list_events(Some("payment"), 1).await?[0];
    assert!(EncryptedPayload::is_encrypted(&stored.payload));
    assert_eq!(listed.payload, published.payload);
    println!(
        "\nthrough the bus: the provider stores {}\n  list_events returns {}",
        stored.payload, listed.payload
    );
    Ok(())
}
