//! Cancellation: every provider call dropped part-way (a `select!` branch
//! that lost, a `timeout`, a task aborted at shutdown) leaves the provider
//! consistent: no event lost or stored twice, no consumer or in-flight slot
//! leaked, later calls work and do not hang.
//!
//! The harness polls a call's future exactly `k` times, then drops it, for
//! `k = 0, 1, 2, ...` until the call completes on its own, and checks the
//! invariants after every drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::poll_then_drop;
use event_core::{
    Event, EventProvider, PendingEvent, PublishOptions, ReceivedEvent, SubscribeOptions,
};
use event_memory::MemoryProvider;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Runs `$call` (an expression making a fresh future) under the harness
/// for `k = 0, 1, ...` until it completes; evaluates to its output.
macro_rules! sweep {
    ($call:expr) => {{
        let mut k = 0;
        loop {
            if let Some(out) = poll_then_drop($call, k).await {
                break out;
            }
            k += 1;
            assert!(k < 1_000, "{} did not complete", stringify!($call));
        }
    }};
}

/// Bounds every wait in this file: a hang is a failure, not a stuck run.
async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

fn event(p: &MemoryProvider, n: u64) -> Event {
    Event::new(
        p.build_subject("cancel", "x"),
        "cancel",
        format!("e{n}"),
        "test",
        json!({ "n": n }),
    )
}

fn n_of(event: &Event) -> u64 {
    event.payload["n"].as_u64().unwrap()
}

/// Budget-exhausted publishes return `Pending` before they take effect; a
/// publish of any form dropped at any poll stores the event at most once,
/// and a retry (same event, so same dedup id) stores nothing more.
#[tokio::test]
async fn dropped_publishes_store_each_event_at_most_once() {
    let p = MemoryProvider::default();
    let mut n = 0;
    let mut expected = 0;
    for form in ["publish", "publish_with_options", "publish_shared", "batch"] {
        // use up the task's budget so the first poll can return Pending
        for _ in 0..200 {
            n += 1;
            p.publish(&event(&p, n)).await.unwrap();
            expected += 1;
        }
        for k in 0..50 {
            n += 1;
            let e = event(&p, n);
            let batch = vec![e.clone(), event(&p, n + 100_000)];
            let options = PublishOptions {
                msg_id: Some(format!("m{n}")),
                ..PublishOptions::default()
            };
            let done = match form {
                "publish" => poll_then_drop(p.publish(&e), k).await.map(|r| vec![r]),
                "publish_with_options" => poll_then_drop(p.publish_with_options(&e, &options), k)
                    .await
                    .map(|r| vec![r]),
                "publish_shared" => poll_then_drop(p.publish_shared(Arc::new(e.clone())), k)
                    .await
                    .map(|r| vec![r]),
                _ => poll_then_drop(p.publish_batch(&batch), k)
                    .await
                    .map(|r| r.unwrap()),
            };
            let before = p.info().await.unwrap().messages;
            // the caller retries what it could not see finish
            let retried = match form {
                "publish_with_options" => vec![p.publish_with_options(&e, &options).await],
                "batch" => p.publish_batch(&batch).await.unwrap(),
                _ => vec![p.publish(&e).await],
            };
            expected += retried.len() as u64;
            let info = p.info().await.unwrap();
            assert_eq!(
                info.messages, expected,
                "{form} dropped after {k} polls, then retried: stored twice or lost"
            );
            if let Some(done) = done {
                // a completed call and its retry agree on the sequences
                let done: Vec<u64> = done.into_iter().map(|r| r.unwrap()).collect();
                let retried: Vec<u64> = retried.into_iter().map(|r| r.unwrap()).collect();
                assert_eq!(done, retried, "{form}");
                assert_eq!(before, expected, "{form}: the retry stored something");
            }
        }
    }
    // every sequence once: history holds each event once
    let history = p.history(None, 100_000).await.unwrap();
    let mut ids: Vec<&str> = history.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, expected);
}

/// Subscribing, closing and unsubscribing dropped at any poll: the
/// consumer counts in `info()` only while a subscription holds it, a
/// dropped `close` still lets the subscription go, and the calls after it
/// work.
#[tokio::test]
async fn dropped_subscribe_close_and_unsubscribe_leak_no_consumer() {
    let p = MemoryProvider::default();
    let filter = p.category_subject("cancel");
    let consumers = |p: &MemoryProvider| {
        let p = p.clone();
        async move { p.info().await.unwrap().consumers }
    };
    let mut sub = sweep!(p.subscribe(&filter)).unwrap();
    assert_eq!(
        consumers(&p).await,
        1,
        "a dropped subscribe left a consumer"
    );
    sweep!(sub.close()).unwrap();
    assert_eq!(consumers(&p).await, 0, "a closed ephemeral still counted");
    assert!(
        bounded("next after close", sub.next())
            .await
            .unwrap()
            .is_none()
    );
    drop(sub);
    assert_eq!(consumers(&p).await, 0);

    // ephemeral subscriptions dropped at every poll: none stays counted
    for k in 0..5 {
        let made = poll_then_drop(p.subscribe(&filter), k).await;
        assert_eq!(consumers(&p).await, usize::from(made.is_some()));
        drop(made);
        assert_eq!(consumers(&p).await, 0, "subscribe dropped after {k} polls");
    }

    let durable = sweep!(p.subscribe_durable("d", &filter)).unwrap();
    drop(durable);
    assert_eq!(consumers(&p).await, 1, "the durable stays");
    sweep!(p.unsubscribe("d")).unwrap();
    assert_eq!(consumers(&p).await, 0);
    assert!(p.unsubscribe("d").await.is_err());
}

/// `next` and `next_manual_ack` dropped at any poll, while waiting and while
/// events arrive, lose nothing: every event arrives once, on its first
/// delivery, on both an ephemeral and a durable; and the auto-ack of the
/// previous event is not undone.
#[tokio::test]
async fn dropped_fetches_lose_and_duplicate_nothing() {
    let p = MemoryProvider::default();
    let filter = p.category_subject("cancel");
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(60)),
        max_ack_pending: Some(3),
        ..SubscribeOptions::default()
    };
    let mut live = p.subscribe(&filter).await.unwrap();
    let mut durable = p
        .subscribe_durable_with_options("d", &filter, &options)
        .await
        .unwrap();
    let mut auto_durable = p
        .subscribe_durable_with_options("a", &filter, &options)
        .await
        .unwrap();
    let (mut got_live, mut got_manual, mut got_auto) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..30 {
        // a fetch waiting for nothing yet, dropped
        assert!(poll_then_drop(live.next(), 3).await.is_none());
        assert!(poll_then_drop(durable.next_manual_ack(), 3).await.is_none());
        assert!(poll_then_drop(auto_durable.next(), 3).await.is_none());
        p.publish(&event(&p, n)).await.unwrap();
        let r: ReceivedEvent = sweep!(live.next()).unwrap().unwrap();
        got_live.push((n_of(&r.event), r.num_delivered));
        let pending: PendingEvent = sweep!(durable.next_manual_ack()).unwrap().unwrap();
        got_manual.push((n_of(pending.event()), pending.received.num_delivered));
        pending.ack().await.unwrap();
        let r = sweep!(auto_durable.next()).unwrap().unwrap();
        got_auto.push((n_of(&r.event), r.num_delivered));
    }
    let expected: Vec<(u64, u64)> = (0..30).map(|n| (n, 1)).collect();
    assert_eq!(got_live, expected, "ephemeral auto-ack");
    assert_eq!(got_manual, expected, "durable manual");
    assert_eq!(got_auto, expected, "durable auto-ack");
    // nothing left in flight: a new subscription of each durable has
    // nothing to redeliver (auto-ack: the last event, unacked, only)
    durable.close().await.unwrap();
    auto_durable.close().await.unwrap();
    let mut again = p
        .subscribe_durable_with_options("d", &filter, &options)
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), again.next_manual_ack())
            .await
            .is_err(),
        "a delivery left in flight"
    );
}

/// `nak`, `term` and `in_progress` dropped before their first poll leave
/// the delivery to its ack wait (a dropped `PendingEvent` is documented as
/// redelivered after the ack wait); polled once, they have taken effect
/// (the memory provider settles synchronously). Nothing hangs, and the
/// in-flight slot (`max_ack_pending` 1) is freed either way.
#[tokio::test(start_paused = true)]
async fn dropped_settlements_take_effect_or_leave_the_delivery_to_its_ack_wait() {
    let p = MemoryProvider::default();
    let filter = p.category_subject("cancel");
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(1)),
        max_ack_pending: Some(1),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &options)
        .await
        .unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    for (what, polls) in [
        ("nak", 0),
        ("nak", 1),
        ("in_progress", 0),
        ("in_progress", 1),
        ("term", 0),
    ] {
        let pending = bounded(what, sub.next_manual_ack()).await.unwrap().unwrap();
        let delivered = pending.received.num_delivered;
        let done = match what {
            "nak" => poll_then_drop(pending.nak(), polls).await,
            "in_progress" => {
                let done = poll_then_drop(pending.in_progress(), polls).await;
                drop(pending);
                done
            }
            _ => poll_then_drop(pending.term(), polls).await,
        };
        assert_eq!(done.is_some(), polls > 0, "{what}");
        let started = tokio::time::Instant::now();
        let again = bounded(what, sub.next_manual_ack()).await.unwrap().unwrap();
        let waited = started.elapsed();
        assert_eq!(again.received.num_delivered, delivered + 1, "{what}");
        if what == "nak" && polls > 0 {
            assert!(waited < Duration::from_millis(10), "a nak redelivers now");
        } else {
            assert!(waited >= Duration::from_millis(900), "{what}: {waited:?}");
        }
        // settle with term last (never again): hand it on
        if what == "term" {
            again.term().await.unwrap();
        } else {
            drop(again.nak().await);
        }
    }
    // the term freed the only in-flight slot: a new event is delivered
    p.publish(&event(&p, 1)).await.unwrap();
    let next = bounded("after term", sub.next_manual_ack())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n_of(next.event()), 1);
}

/// Dropping subscriptions and providers inside a runtime, outside one, and
/// while the runtime shuts down (a task holding a waiting subscription)
/// never panics.
#[test]
fn drops_inside_outside_and_during_runtime_shutdown_do_not_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (p, sub) = runtime.block_on(async {
        let p = MemoryProvider::default();
        let sub = p.subscribe_durable("d", "events.>").await.unwrap();
        let mut held = p.subscribe("events.>").await.unwrap();
        tokio::spawn(async move {
            let _ = held.next().await;
        });
        tokio::task::yield_now().await;
        (p, sub)
    });
    drop(runtime);
    drop(sub);
    drop(p);
}
