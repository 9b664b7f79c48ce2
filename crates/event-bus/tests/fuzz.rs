//! Seeded random-input hunt over what event-bus reads back: state files
//! written by `FileStateStore` (then corrupted), the bus taking such a
//! store, metrics snapshots and dead-letter records. See event-core's
//! `tests/fuzz_support` for the knobs (`A3S_FUZZ_ITERS`, ...).
#![allow(clippy::unwrap_used)]

#[path = "../../event-core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use event_bus::{EventBus, EventMetrics, FileStateStore, MetricsSnapshot};
use event_core::{
    DeadLetterEvent, DeliverPolicy, Error, Event, StateStore, SubscribeOptions, SubscriptionFilter,
    SubscriptionRecord,
};
use event_memory::MemoryProvider;
use fuzz_support::{Rng, mutate_bytes, mutate_json, random_json, random_string, run};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn record(rng: &mut Rng, id: usize) -> SubscriptionRecord {
    let subjects = ["events.market.>", "events.*.forex", "events.a.b", "ünï.>"];
    SubscriptionRecord {
        filter: SubscriptionFilter {
            subscriber_id: format!("sub-{id}"),
            subjects: (0..1 + rng.below(3))
                .map(|i| subjects[(id + i) % subjects.len()].to_owned())
                .collect(),
            durable: rng.one_in(2),
        },
        options: rng.one_in(2).then(|| SubscribeOptions {
            max_deliver: rng.one_in(2).then(|| rng.next_u64() >> rng.below(64)),
            backoff: vec![Duration::from_millis(rng.next_u64() >> rng.below(64))],
            max_ack_pending: None,
            deliver_policy: DeliverPolicy::ByStartSequence {
                sequence: rng.next_u64(),
            },
            ack_wait: rng.one_in(2).then(|| Duration::from_millis(rng.next_u64())),
        }),
    }
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "a3s-event-bus-fuzz-{}-{}",
        std::process::id(),
        random_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn random_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[tokio::test]
async fn corrupted_state_files_are_typed_errors_and_left_untouched() {
    let dir = temp_dir();
    let path = dir.join("state.json");
    let store = FileStateStore::new(&path);
    let mut loaded_ok = 0;
    let cases: Vec<u64> = {
        let mut seeds = Vec::new();
        run("bus/state-seeds", 400, |rng| seeds.push(rng.next_u64()));
        seeds
    };
    for seed in cases {
        let mut rng = Rng::new(seed);
        let records: Vec<SubscriptionRecord> =
            (0..rng.below(4)).map(|i| record(&mut rng, i)).collect();
        store.save(&records).await.unwrap();
        assert_eq!(store.load().await.unwrap(), records, "seed {seed:#x}");
        let mut bytes = std::fs::read(&path).unwrap();
        if rng.one_in(2) {
            mutate_bytes(&mut rng, &mut bytes);
        } else {
            let mut value: Value = serde_json::from_slice(&bytes).unwrap();
            mutate_json(&mut rng, &mut value);
            bytes = serde_json::to_vec(&value).unwrap();
        }
        std::fs::write(&path, &bytes).unwrap();
        match store.load().await {
            Ok(loaded) => {
                loaded_ok += 1;
                // what loads is saved and loaded back unchanged
                // the bus gets a clone: one store (and its clones) at a
                // time owns the file
                let bus = EventBus::new(MemoryProvider::default());
                match bus.set_state_store(Arc::new(store.clone())).await {
                    Ok(()) => {
                        let again = store.load().await.unwrap();
                        for r in &loaded {
                            assert!(again.contains(r), "seed {seed:#x}: {r:?} lost");
                        }
                    }
                    Err(err) => {
                        assert!(
                            matches!(
                                err,
                                Error::InvalidConfig { .. } | Error::InvalidSubject { .. }
                            ),
                            "seed {seed:#x}: {err:?}"
                        );
                        // refused, and the file is left as it was
                        assert_eq!(std::fs::read(&path).unwrap(), bytes, "seed {seed:#x}");
                    }
                }
            }
            Err(err) => {
                assert!(
                    matches!(err, Error::Serialization(_)),
                    "seed {seed:#x}: {err:?}"
                );
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "seed {seed:#x}");
                let bus = EventBus::new(MemoryProvider::default());
                let err = bus
                    .set_state_store(Arc::new(store.clone()))
                    .await
                    .unwrap_err();
                assert!(
                    matches!(err, Error::Serialization(_)),
                    "seed {seed:#x}: {err:?}"
                );
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "seed {seed:#x}");
            }
        }
    }
    assert!(loaded_ok > 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn metrics_snapshots_round_trip_and_mutations_never_panic() {
    run("bus/metrics", 3000, |rng| {
        let metrics = EventMetrics::new();
        metrics.add_publish(rng.next_u64() >> rng.below(64));
        metrics.add_dlq(rng.next_u64());
        for _ in 0..rng.below(20) {
            metrics.record_publish(Duration::from_nanos(rng.next_u64() >> rng.below(64)));
        }
        let snapshot = metrics.snapshot();
        let text = serde_json::to_string(&snapshot).unwrap();
        let back: MetricsSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snapshot);
        let mut value: Value = serde_json::from_str(&text).unwrap();
        mutate_json(rng, &mut value);
        if let Ok(read) = serde_json::from_value::<MetricsSnapshot>(value) {
            let again: MetricsSnapshot =
                serde_json::from_str(&serde_json::to_string(&read).unwrap()).unwrap();
            assert_eq!(again, read);
        }
        let mut bytes = text.into_bytes();
        mutate_bytes(rng, &mut bytes);
        let _ = serde_json::from_slice::<MetricsSnapshot>(&bytes);
    });
}

#[test]
fn dead_letter_records_round_trip_and_mutations_never_panic() {
    run("bus/dlq", 3000, |rng| {
        let mut event = Event::new(
            "events.a.b",
            "a",
            random_string(rng),
            "x",
            random_json(rng, 3),
        );
        event.timestamp = rng.next_u64();
        let mut dead =
            DeadLetterEvent::new(event, random_string(rng)).with_attempts(rng.next_u64());
        if rng.one_in(2) {
            dead = dead.with_first_failure_at(rng.next_u64());
        }
        if rng.one_in(2) {
            dead = dead.with_subscriber(random_string(rng));
        }
        let value = serde_json::to_value(&dead).unwrap();
        let back: DeadLetterEvent = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(back, dead);
        let mut hostile = value;
        mutate_json(rng, &mut hostile);
        if rng.one_in(4) {
            hostile = json!({"event": hostile});
        }
        if let Ok(read) = serde_json::from_value::<DeadLetterEvent>(hostile) {
            let again: DeadLetterEvent =
                serde_json::from_value(serde_json::to_value(&read).unwrap()).unwrap();
            assert_eq!(again, read);
        }
    });
}
