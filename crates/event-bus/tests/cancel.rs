//! Cancellation: bus calls dropped part-way (a `select!` branch that lost, a
//! `timeout`, a task aborted at shutdown) leave the bus consistent.
//!
//! The harness polls a call's future exactly `k` times, then drops it, for
//! `k = 0, 1, 2, ...` until the call completes on its own, and checks the
//! invariants after every drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use event_bus::{ConsumerConfig, EventBus, FileStateStore};
use event_core::{
    Event, EventProvider, ReceivedEvent, StateStore, SubscribeOptions, Subscription,
    SubscriptionFilter,
};
use event_memory::MemoryProvider;
use serde_json::json;
use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

/// Polls `fut` `polls` times, a millisecond apart (so spawned and blocking
/// work it started makes progress), then drops it; `Some(output)` when it
/// completed within those polls.
async fn poll_then_drop<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(out) = polled {
            return Some(out);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// The most polls any call below needs (it completes within them).
const MAX_POLLS: usize = 1_000;

static DIRS: AtomicU64 = AtomicU64::new(0);

fn temp_state(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "a3s-event-bus-cancel-{tag}-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("state.json")
}

fn filter(id: &str, subjects: &[&str]) -> SubscriptionFilter {
    SubscriptionFilter {
        subscriber_id: id.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        durable: true,
    }
}

/// Waits (bounded) until the bus and the state file hold the same
/// subscribers; panics with both when they keep disagreeing.
async fn assert_bus_and_file_agree(bus: &EventBus, store: &FileStateStore, when: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let in_memory = bus.list_subscription_records().await;
        let on_disk = store.load().await.unwrap();
        if in_memory == on_disk {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let ids = |r: &[event_core::SubscriptionRecord]| {
                r.iter()
                    .map(|r| r.filter.subscriber_id.clone())
                    .collect::<Vec<_>>()
            };
            panic!(
                "{when}: the bus and its state file disagree: bus has {:?}, file has {:?}",
                ids(&in_memory),
                ids(&on_disk)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An update or removal dropped while its state is being saved must not
/// leave the state file with the change and the bus without it (or the
/// reverse): a restart would bring back a subscriber the bus had forgotten,
/// or lose one it has. Whatever the point of the drop, once the dust
/// settles the two agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_update_or_removal_leaves_bus_and_state_file_agreeing() {
    let path = temp_state("persist");
    let store = FileStateStore::new(&path);
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(Arc::new(store.clone())).await.unwrap();
    for k in 0..MAX_POLLS {
        let id = format!("s{k}");
        let update = bus.update_subscription(filter(&id, &["events.market.>"]));
        let done = poll_then_drop(update, k).await;
        assert_bus_and_file_agree(&bus, &store, &format!("update dropped after {k} polls")).await;
        if let Some(result) = done {
            result.unwrap();
            break;
        }
    }
    for k in 0..MAX_POLLS {
        let Some(first) = bus.list_subscriptions().await.into_iter().next() else {
            break;
        };
        let remove = bus.remove_subscription(&first.subscriber_id);
        let done = poll_then_drop(remove, k).await;
        assert_bus_and_file_agree(&bus, &store, &format!("removal dropped after {k} polls")).await;
        if let Some(result) = done {
            result.unwrap();
            break;
        }
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn event(n: u64) -> Event {
    Event::new(
        "events.cancel.x",
        "cancel",
        format!("e{n}"),
        "test",
        json!({ "n": n }),
    )
}

/// A bus publish (schema-checked, encrypted) dropped at any point stores the event at most once, and a
/// retry of the same event (the caller did not learn the outcome) is
/// deduplicated: one stored copy, whatever happened.
#[tokio::test]
async fn a_dropped_publish_then_retried_is_stored_once() {
    let provider = MemoryProvider::default();
    let bus = EventBus::new(provider.clone());
    bus.set_encryptor(Arc::new(common::TestEncryptor { key: 7 }));
    bus.set_schema_validator(Arc::new(common::RequireField("n")));
    let mut stored = 0;
    for k in 0..MAX_POLLS {
        let e = event(k as u64);
        let done = poll_then_drop(bus.publish_event(&e), k).await;
        let seq = bus.publish_event(&e).await.unwrap();
        stored += 1;
        assert_eq!(provider.info().await.unwrap().messages, stored);
        assert_eq!(provider.info().await.unwrap().last_sequence, seq);
        if let Some(result) = done {
            assert_eq!(result.unwrap(), seq);
            break;
        }
    }
}

/// A decrypting bus subscription's `next` dropped part-way loses nothing:
/// every event arrives, decrypted, on its first delivery.
#[tokio::test]
async fn a_dropped_bus_next_loses_nothing() {
    let provider = MemoryProvider::default();
    let bus = EventBus::new(provider.clone());
    bus.set_encryptor(Arc::new(common::TestEncryptor { key: 7 }));
    let mut sub: Box<dyn Subscription> = bus.subscribe("events.cancel.>").await.unwrap();
    let mut seen: Vec<ReceivedEvent> = Vec::new();
    for n in 0..20u64 {
        bus.publish_event(&event(n)).await.unwrap();
        for k in 0..MAX_POLLS {
            if let Some(received) = poll_then_drop(sub.next(), k).await {
                seen.push(received.unwrap().unwrap());
                break;
            }
        }
    }
    let got: Vec<(u64, u64)> = seen
        .iter()
        .map(|r| (r.event.payload["n"].as_u64().unwrap(), r.num_delivered))
        .collect();
    // decrypted for the caller
    assert_eq!(got, (0..20).map(|n| (n, 1)).collect::<Vec<_>>());
}

/// A consumer runner's `shutdown` dropped part-way (a timeout around it)
/// still stops the runner: its loops end and its durable subscription is
/// closed (the last delivery settled, nothing left in flight).
#[tokio::test]
async fn a_dropped_shutdown_still_stops_the_runner() {
    let provider = MemoryProvider::default();
    let bus = EventBus::new(provider.clone());
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    };
    bus.update_subscription_with_options(filter("runner", &["events.cancel.>"]), options)
        .await
        .unwrap();
    for n in 0..5 {
        bus.publish_event(&event(n)).await.unwrap();
    }
    let handled = Arc::new(AtomicU64::new(0));
    let count = handled.clone();
    let handle = bus
        .consume(
            "runner",
            move |_received: ReceivedEvent| {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), std::convert::Infallible>(())
                }
            },
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while handled.load(Ordering::Relaxed) < 5 {
        assert!(tokio::time::Instant::now() < deadline, "runner stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        poll_then_drop(handle.shutdown(Duration::from_secs(5)), 1)
            .await
            .is_none()
    );
    // the runner stopped in the background: new events are not handled, and
    // the durable resumes after the five acked events
    bus.publish_event(&event(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handled.load(Ordering::Relaxed), 5);
    let mut subs = bus.create_subscriber("runner").await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), subs[0].next())
        .await
        .expect("the durable delivers")
        .unwrap()
        .unwrap();
    assert_eq!(next.event.payload["n"], 5);
}

/// Dropping the bus, its subscriptions and a running consumer inside a
/// runtime, outside one, and while the runtime shuts down never panics.
#[test]
fn drops_inside_outside_and_during_runtime_shutdown_do_not_panic() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (bus, sub, handle) = runtime.block_on(async {
        let bus = EventBus::new(MemoryProvider::default());
        bus.update_subscription(filter("d", &["events.cancel.>"]))
            .await
            .unwrap();
        let sub = bus.subscribe("events.cancel.>").await.unwrap();
        let handle = bus
            .consume(
                "d",
                |_r: ReceivedEvent| async { Ok::<(), std::convert::Infallible>(()) },
                ConsumerConfig::default(),
            )
            .await
            .unwrap();
        // a task that holds a subscription when the runtime goes away
        let held = bus.subscribe("events.cancel.>").await.unwrap();
        tokio::spawn(async move {
            let mut held = held;
            let _ = held.next().await;
        });
        (bus, sub, handle)
    });
    // the handle is dropped outside the runtime, the runtime with tasks in it
    drop(handle);
    drop(runtime);
    drop(sub);
    drop(bus);
}

/// A change given up on before it started (still waiting for the changes
/// made before it) is not applied after a change the caller made next:
/// `timeout(update(a))` that timed out, then `update(b)`, must not end with
/// `a` in effect. Each change is polled once, and dropped, before the next
/// is made; whatever was applied, the last change wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_given_up_on_is_not_applied_after_a_later_one() {
    let path = temp_state("order");
    let store = FileStateStore::new(&path);
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(Arc::new(store.clone())).await.unwrap();
    for round in 0..50 {
        let given_up = filter("ordered", &[&format!("events.given-up.{round}")]);
        {
            // polled once and dropped at once (a `timeout` that expired)
            let mut update = pin!(bus.update_subscription(given_up));
            let _ = std::future::poll_fn(|cx| Poll::Ready(update.as_mut().poll(cx))).await;
        }
        let last = filter("ordered", &[&format!("events.last.{round}")]);
        bus.update_subscription(last.clone()).await.unwrap();
        // let a change still running in the background finish
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_bus_and_file_agree(&bus, &store, &format!("round {round}")).await;
        assert_eq!(
            bus.get_subscription("ordered").await,
            Some(last),
            "round {round}: a change given up on was applied after the next one"
        );
    }
}
