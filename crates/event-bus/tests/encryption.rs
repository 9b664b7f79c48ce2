//! The bus with the real AES-256-GCM encryptor (event-crypto): key rotation
//! racing publishes and a consumer, and every kind of bad envelope met by a
//! consumer, by history reads and by a re-drive.
#![allow(clippy::unwrap_used)]

mod common;

use common::{filter, wait_until};
use event_bus::{ConsumerConfig, ConsumerHandle, EventBus, ProviderDlqHandler};
use event_core::{
    BoxError, DlqHandler, Error, Event, EventEncryptor, EventProvider, ReceivedEvent,
};
use event_crypto::Aes256GcmEncryptor;
use event_memory::MemoryProvider;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A bus over a fresh memory provider with `encryptor`, a provider-backed
/// DLQ (storing letters in clear) and the durable subscriber `w` on
/// `events.pay.>`.
async fn encrypting_bus(
    encryptor: &Arc<Aes256GcmEncryptor>,
) -> (Arc<MemoryProvider>, EventBus, Arc<ProviderDlqHandler>) {
    let provider = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    bus.set_encryptor(encryptor.clone());
    let dlq = Arc::new(ProviderDlqHandler::new(provider.clone()));
    bus.set_dlq_handler(dlq.clone());
    bus.update_subscription(filter("w", &["events.pay.>"], true))
        .await
        .unwrap();
    (provider, bus, dlq)
}

/// A consumer on subscriber `w` whose handler records each event's id and
/// payload and succeeds.
async fn recording_consumer(
    bus: &EventBus,
) -> (ConsumerHandle, Arc<Mutex<HashMap<String, Value>>>) {
    let seen: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let s = seen.clone();
    let consumer = bus
        .consume(
            "w",
            move |r: ReceivedEvent| {
                let s = s.clone();
                async move {
                    let previous = s
                        .lock()
                        .unwrap()
                        .insert(r.event.id.clone(), r.event.payload.clone());
                    assert!(previous.is_none(), "{} handled twice", r.event.id);
                    Ok::<(), BoxError>(())
                }
            },
            ConsumerConfig::default().concurrency(4),
        )
        .await
        .unwrap();
    (consumer, seen)
}

/// Publishers on several tasks while another thread adds keys and rotates
/// through them on the shared encryptor: every event reaches the consumer
/// decrypted, once, nothing is dead-lettered, history reads them all, and
/// the metrics count one encryption and one decryption per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_racing_publishes_and_a_consumer_loses_nothing() {
    const TASKS: u64 = 4;
    const EACH: u64 = 150;
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k0", &[0; 32]));
    let (provider, bus, dlq) = encrypting_bus(&encryptor).await;
    let (consumer, seen) = recording_consumer(&bus).await;

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rotator = {
        let (encryptor, done) = (encryptor.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0u8;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                n = n.wrapping_add(1);
                let id = format!("k{n}");
                encryptor.add_key(id.clone(), &[n; 32]).unwrap();
                encryptor.rotate_to(&id).unwrap();
                std::thread::yield_now();
            }
            n
        })
    };
    let mut publishers = Vec::new();
    for task in 0..TASKS {
        let bus = bus.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..EACH {
                bus.publish("pay", "x", "s", "src", json!({"task": task, "i": i}))
                    .await
                    .unwrap();
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let rotations = rotator.join().unwrap();
    assert!(rotations > 1, "the key rotated while publishing");

    let total = TASKS * EACH;
    wait_until("every event handled", || consumer.report().acked == total).await;
    let report = consumer.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        (report.acked, report.dead_lettered, report.terminated),
        (total, 0, 0)
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len() as u64, total);
    let mut payloads: Vec<(u64, u64)> = seen
        .values()
        .map(|p| (p["task"].as_u64().unwrap(), p["i"].as_u64().unwrap()))
        .collect();
    payloads.sort_unstable();
    let expected: Vec<(u64, u64)> = (0..TASKS)
        .flat_map(|t| (0..EACH).map(move |i| (t, i)))
        .collect();
    assert_eq!(payloads, expected);
    // stored under several keys, each envelope naming its own
    let stored = provider.history(None, total as usize).await.unwrap();
    let keys: std::collections::HashSet<&str> = stored
        .iter()
        .map(|e| e.payload["keyId"].as_str().unwrap())
        .collect();
    assert!(keys.len() > 1, "{keys:?}");
    assert_eq!(dlq.count().await.unwrap(), 0);
    let listed = bus.list_events(Some("pay"), total as usize).await.unwrap();
    assert_eq!(listed.len() as u64, total);
    for event in &listed {
        assert_eq!(&seen[&event.id], &event.payload);
    }
    let m = bus.metrics().snapshot();
    assert_eq!(
        (
            m.encrypt_total,
            m.decrypt_total,
            m.decrypt_errors,
            m.dlq_total
        ),
        (total, 2 * total, 0, 0)
    );
}

/// Every way an envelope can be bad, written straight into the stream
/// between good events: a consumer dead-letters each with a reason naming
/// the event and goes on; its handler sees only the good events,
/// decrypted; history reads report each bad one in its place; a re-drive
/// skips them while they still do not decrypt, and republishes the one
/// under an unknown key, decrypted, once the key is in the ring. Metrics:
/// decryptions counted on success only, errors once per attempt.
#[tokio::test]
async fn every_kind_of_bad_envelope_is_dead_lettered_and_the_consumer_goes_on() {
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &[1; 32]));
    encryptor.add_key("k2", &[2; 32]).unwrap();
    let (provider, bus, dlq) = encrypting_bus(&encryptor).await;

    let sealed = |id: &str| encryptor.encrypt(id, &json!({"secret": id})).unwrap();
    let stranger = Aes256GcmEncryptor::new("k9", &[9; 32]);
    let mut bad: Vec<(Event, &str)> = Vec::new();
    let mut make = |what: &'static str, edit: &dyn Fn(&str, Value) -> Value| {
        let mut event = Event::new("events.pay.bad", "pay", "s", "src", json!(null));
        event.payload = edit(&event.id, sealed(&event.id));
        assert!(encryptor.is_encrypted(&event.payload), "{what}");
        bad.push((event, what));
    };
    make("unknown key", &|id, _| {
        stranger.encrypt(id, &json!({"secret": "k9"})).unwrap()
    });
    make("tampered", &|_, mut v| {
        let mut text = v["ciphertext"].as_str().unwrap().to_owned();
        let first = if text.starts_with('A') { "B" } else { "A" };
        text.replace_range(..1, first);
        v["ciphertext"] = json!(text);
        v
    });
    make("truncated", &|_, mut v| {
        v["ciphertext"] = json!("AAAA");
        v
    });
    make("empty ciphertext", &|_, mut v| {
        v["ciphertext"] = json!("");
        v
    });
    make("another event's", &|_, _| sealed("evt-other"));
    make("relabelled key", &|_, mut v| {
        v["keyId"] = json!("k2");
        v
    });
    make("short nonce", &|_, mut v| {
        v["nonce"] = json!("AAAA");
        v
    });
    make("nonce not base64", &|_, mut v| {
        v["nonce"] = json!("!!!!!!!!!!!!!!!!");
        v
    });
    make("ciphertext a number", &|_, mut v| {
        v["ciphertext"] = json!(5);
        v
    });
    make("ciphertext with a newline", &|_, mut v| {
        let text = v["ciphertext"].as_str().unwrap().to_owned();
        v["ciphertext"] = json!(format!("{}\n{}", &text[..4], &text[4..]));
        v
    });
    make("ciphertext with bytes over 0x7f", &|_, mut v| {
        let text = v["ciphertext"].as_str().unwrap().to_owned();
        v["ciphertext"] = json!(format!("é{}", &text[2..]));
        v
    });
    make("version 2", &|_, mut v| {
        v["version"] = json!(2);
        v
    });
    make("version huge", &|_, mut v| {
        v["version"] = json!(u64::MAX);
        v
    });
    make("version negative", &|_, mut v| {
        v["version"] = json!(-1);
        v
    });
    make("key id null", &|_, mut v| {
        v["keyId"] = Value::Null;
        v
    });
    make("no nonce", &|_, mut v| {
        v.as_object_mut().unwrap().remove("nonce");
        v
    });
    let unknown_key_id = bad[0].0.id.clone();

    let mut good_ids = Vec::new();
    for (event, _) in &bad {
        good_ids.push(
            bus.publish("pay", "ok", "s", "src", json!({"n": good_ids.len()}))
                .await
                .unwrap()
                .id,
        );
        provider.publish(event).await.unwrap();
    }
    let n_bad = bad.len() as u64;
    let n_good = good_ids.len() as u64;

    let (consumer, seen) = recording_consumer(&bus).await;
    wait_until("every event settled", || {
        let r = consumer.report();
        r.acked == n_good && r.dead_lettered == n_bad
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len() as u64, n_good, "{seen:?}");
        for (i, id) in good_ids.iter().enumerate() {
            assert_eq!(seen[id], json!({"n": i}));
        }
    }
    let letters = dlq.list(100).await.unwrap();
    assert_eq!(letters.len() as u64, n_bad, "{letters:?}");
    for (event, what) in &bad {
        let letter = letters
            .iter()
            .find(|l| l.event.id == event.id)
            .unwrap_or_else(|| panic!("{what}: no dead letter"));
        assert_eq!(
            letter.event.payload, event.payload,
            "{what}: the envelope as it was"
        );
        assert!(
            letter.reason.contains(&event.id),
            "{what}: {}",
            letter.reason
        );
    }
    let m = bus.metrics().snapshot();
    assert_eq!(
        (m.decrypt_total, m.decrypt_errors, m.dlq_total),
        (n_good, n_bad, n_bad),
        "{m:?}"
    );

    // history: each bad one an error in its place, the good ones decrypted
    let listed = bus.list_events_each(Some("pay"), 100).await.unwrap();
    assert_eq!(listed.len() as u64, n_good + n_bad);
    for (event, what) in &bad {
        let at = listed
            .iter()
            .position(|l| match l {
                Err(Error::Decryption(msg)) => msg.contains(&event.id),
                _ => false,
            })
            .unwrap_or_else(|| panic!("{what}: no error in the listing: {listed:?}"));
        let _ = at;
    }
    // every event of each read is decrypted (or fails), the good ones too
    assert!(bus.list_events(Some("pay"), 100).await.is_err());
    let m = bus.metrics().snapshot();
    assert_eq!((m.decrypt_total, m.decrypt_errors), (3 * n_good, 3 * n_bad));

    // a re-drive skips what still does not decrypt, republishes nothing
    let report = dlq.redrive(&bus, 100).await.unwrap();
    assert_eq!((report.redriven, report.skipped as u64), (0, n_bad));
    assert_eq!(
        provider
            .history(Some("events.pay.>"), 100)
            .await
            .unwrap()
            .len() as u64,
        n_good + n_bad
    );
    // the missing key arrives: that one is re-driven, decrypted, and read
    encryptor.add_key("k9", &[9; 32]).unwrap();
    let report = dlq
        .redrive_matching(&bus, 100, |l| l.event.id == unknown_key_id)
        .await
        .unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0));
    let copy = format!("evt-redrive-{unknown_key_id}");
    wait_until("the re-driven copy", || {
        seen.lock().unwrap().contains_key(&copy)
    })
    .await;
    assert_eq!(seen.lock().unwrap()[&copy], json!({"secret": "k9"}));
    let report = consumer.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        (report.acked, report.dead_lettered, report.terminated),
        (n_good + 1, n_bad, 0)
    );
}

/// Publishes `event` on `provider` with the payload `{"secret": 9}` sealed
/// under key `k9` (which the bus's encryptor lacks) and waits until a
/// recording consumer of `bus` has dead-lettered it.
async fn dead_lettered_sealed_elsewhere(
    provider: &MemoryProvider,
    bus: &EventBus,
    mut event: Event,
) -> (Event, ConsumerHandle, Arc<Mutex<HashMap<String, Value>>>) {
    event.payload = Aes256GcmEncryptor::new("k9", &[9; 32])
        .encrypt(&event.id, &json!({"secret": 9}))
        .unwrap();
    provider.publish(&event).await.unwrap();
    let (consumer, seen) = recording_consumer(bus).await;
    wait_until("dead-lettered", || consumer.report().dead_lettered == 1).await;
    (event, consumer, seen)
}

/// A dead letter made because its event did not decrypt still holds the
/// envelope, bound to the event's original id. Re-driven through a bus
/// without an encryptor (a maintenance process that was not given the
/// keys), it was republished as it was under the copy's new id, where no
/// key can ever open it, and `redrive` counted it re-driven and never
/// offered it again: it must be skipped, as one that still does not
/// decrypt is, and re-driven once a bus with the key does it.
#[tokio::test]
async fn a_bus_without_an_encryptor_skips_an_undecryptable_dead_letter() {
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &[1; 32]));
    let (provider, bus, dlq) = encrypting_bus(&encryptor).await;
    let event = Event::new("events.pay.x", "pay", "s", "src", json!(null));
    let (event, consumer, seen) = dead_lettered_sealed_elsewhere(&provider, &bus, event).await;

    let keyless = EventBus::from_arc(provider.clone());
    let report = dlq.redrive(&keyless, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (0, 1));
    let copy = format!("evt-redrive-{}", event.id);
    let stored = provider.history(Some("events.pay.>"), 10).await.unwrap();
    assert!(stored.iter().all(|e| e.id != copy), "{stored:?}");

    // a handler's own decryption error is not the bus's: its letter holds
    // the plaintext, and a bus without an encryptor re-drives it
    let plain = Event::new("events.pay.y", "pay", "s", "src", json!({"n": 1}));
    let reason = Error::Decryption(format!("event {:?}: wrong key for a field", plain.id));
    dlq.handle(event_core::DeadLetterEvent::new(
        plain.clone(),
        reason.to_string(),
    ))
    .await
    .unwrap();
    let report = dlq.redrive(&keyless, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0));

    // the key arrives: a bus that has it re-drives the letter
    encryptor.add_key("k9", &[9; 32]).unwrap();
    let report = dlq
        .redrive_matching(&bus, 10, |l| l.event.id == event.id)
        .await
        .unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0));
    wait_until("the copy", || seen.lock().unwrap().contains_key(&copy)).await;
    assert_eq!(seen.lock().unwrap()[&copy], json!({"secret": 9}));
    consumer.shutdown(Duration::from_secs(2)).await;
}

/// The re-drive tells a bus subscription's undecryptable dead letter by its
/// reason's prefix, which names the event id quoted and cut to 64
/// characters: an id past that length, with a quote, a backslash and
/// characters of several bytes, is still told apart (skipped by a bus
/// without an encryptor, re-driven by one with the key).
#[tokio::test]
async fn a_long_quoted_id_still_marks_an_undecryptable_dead_letter() {
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &[1; 32]));
    let (provider, bus, dlq) = encrypting_bus(&encryptor).await;
    let mut event = Event::new("events.pay.x", "pay", "s", "src", json!(null));
    event.id = format!("a\"b\\c (sequence 1): é{}", "x".repeat(100));
    let (event, consumer, seen) = dead_lettered_sealed_elsewhere(&provider, &bus, event).await;

    let keyless = EventBus::from_arc(provider.clone());
    let report = dlq
        .redrive_matching(&keyless, 10, |l| l.event.id == event.id)
        .await
        .unwrap();
    assert_eq!((report.redriven, report.skipped), (0, 1));
    let copy = format!("evt-redrive-{}", event.id);
    let stored = provider.history(Some("events.pay.>"), 10).await.unwrap();
    assert!(stored.iter().all(|e| e.id != copy), "{stored:?}");

    encryptor.add_key("k9", &[9; 32]).unwrap();
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0));
    wait_until("the copy", || seen.lock().unwrap().contains_key(&copy)).await;
    assert_eq!(seen.lock().unwrap()[&copy], json!({"secret": 9}));
    consumer.shutdown(Duration::from_secs(2)).await;
}
