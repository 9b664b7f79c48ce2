//! Memory-specific behaviour beyond the conformance suite: retention,
//! lag reports, configuration errors, backpressure.

#![allow(clippy::unwrap_used)]
mod common;

use common::Rng;
use event_core::{DeliverPolicy, Error, Event, EventProvider, PublishOptions, SubscribeOptions};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use std::time::Duration;

/// The next manual-ack delivery of `sub`, after any `Lagged` reports:
/// (its sequence, the events they said were missed).
async fn next_after_lag(sub: &mut Box<dyn event_core::Subscription>) -> (u64, u64) {
    let mut missed = 0;
    loop {
        match sub.next_manual_ack().await {
            Err(Error::Lagged { missed: m }) => missed += m,
            Ok(Some(pending)) => return (pending.received.sequence, missed),
            other => panic!("{other:?}"),
        }
    }
}

fn provider(max_events: usize, channel_capacity: usize) -> MemoryProvider {
    MemoryProvider::new(MemoryConfig {
        subject_prefix: "events".into(),
        max_events,
        channel_capacity,
    })
    .unwrap()
}

fn ev(n: u64) -> Event {
    Event::new(
        "events.t.x",
        "t",
        "s",
        "test",
        serde_json::json!({ "n": n }),
    )
}

async fn publish(p: &MemoryProvider, range: std::ops::Range<u64>) {
    for n in range {
        p.publish(&ev(n)).await.unwrap();
    }
}

#[tokio::test]
async fn bad_config_is_an_error_not_a_panic() {
    for config in [
        MemoryConfig {
            max_events: 0,
            ..MemoryConfig::default()
        },
        MemoryConfig {
            channel_capacity: 0,
            ..MemoryConfig::default()
        },
        MemoryConfig {
            subject_prefix: "bad prefix".into(),
            ..MemoryConfig::default()
        },
    ] {
        assert!(matches!(
            MemoryProvider::new(config),
            Err(Error::InvalidConfig { .. })
        ));
    }
    let p = MemoryProvider::default();
    let zero = SubscribeOptions {
        max_deliver: Some(0),
        ..SubscribeOptions::default()
    };
    assert!(matches!(
        p.subscribe_with_options("events.>", &zero).await,
        Err(Error::InvalidConfig { .. })
    ));
    let zero_wait = SubscribeOptions {
        ack_wait: Some(Duration::ZERO),
        ..SubscribeOptions::default()
    };
    assert!(
        p.subscribe_durable_with_options("d", "events.>", &zero_wait)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn eviction_keeps_the_newest_and_counts_stay_exact() {
    let p = provider(100, 1000);
    publish(&p, 0..250).await;
    let info = p.info().await.unwrap();
    assert_eq!(
        (info.messages, info.first_sequence, info.last_sequence),
        (100, 151, 250)
    );
    let newest = p.history(None, 3).await.unwrap();
    assert_eq!(
        newest
            .iter()
            .map(|e| e.payload["n"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![249, 248, 247]
    );
    let all = p.history(None, 1000).await.unwrap();
    assert_eq!(all.len(), 100);
    let one_size = serde_json::to_vec(&all[0]).unwrap().len() as u64;
    assert!(info.bytes >= 100 * (one_size - 2) && info.bytes <= 100 * (one_size + 2));
}

/// `max_bytes` bounds the encoded bytes stored: the oldest events go, as
/// many as a new one needs (one large event evicts several small ones),
/// and a subscriber they overtake is told how many it missed.
#[tokio::test]
async fn a_byte_limit_evicts_the_oldest_and_reports_the_lag() {
    let sized = |n: u64, pad: usize| {
        let mut e = ev(n);
        e.payload["pad"] = serde_json::Value::String("x".repeat(pad));
        e
    };
    // two-digit numbers: every small event has the same size
    let one = serde_json::to_vec(&sized(10, 100)).unwrap().len() as u64;
    let p = MemoryProvider::with_limits(
        MemoryConfig::default(),
        MemoryLimits {
            max_payload: 4096,
            max_bytes: 4096.max(10 * one),
            ..MemoryLimits::default()
        },
    )
    .unwrap();
    let limit = 4096.max(10 * one);
    let mut sub = p.subscribe("events.>").await.unwrap();
    for n in 10..35 {
        p.publish(&sized(n, 100)).await.unwrap();
    }
    let info = p.info().await.unwrap();
    let kept = limit / one;
    assert_eq!(info.messages, kept, "{info:?}");
    assert!(info.bytes <= limit, "{info:?}");
    assert_eq!(info.first_sequence, 25 - kept + 1);
    // a large event makes room for itself by evicting several small ones
    let big = sized(99, 2500);
    let big_size = serde_json::to_vec(&big).unwrap().len() as u64;
    p.publish(&big).await.unwrap();
    let info = p.info().await.unwrap();
    assert!(info.bytes <= limit, "{info:?}");
    let after = (limit - big_size) / one;
    assert_eq!(info.messages, after + 1, "{info:?}");
    assert_eq!(info.bytes, after * one + big_size, "{info:?}");
    // the subscriber read nothing: it missed everything evicted
    match sub.next().await {
        Err(Error::Lagged { missed }) => assert_eq!(missed, 26 - (after + 1)),
        other => panic!("expected Lagged, got {other:?}"),
    }
    let next = sub.next().await.unwrap().unwrap();
    assert_eq!(next.sequence, 26 - after);
}

#[tokio::test]
async fn a_byte_limit_below_the_largest_event_is_a_config_error() {
    let err = MemoryProvider::with_limits(
        MemoryConfig::default(),
        MemoryLimits {
            max_payload: 1024 * 1024,
            max_bytes: 1000,
            ..MemoryLimits::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("max_bytes"), "{err}");
}

#[tokio::test]
async fn slow_ephemeral_subscriber_sees_lagged_not_silent_loss() {
    // retention (10 events) overtakes a subscriber that has read nothing
    let p = provider(10, 1000);
    let mut sub = p.subscribe("events.>").await.unwrap();
    publish(&p, 0..25).await;
    match sub.next().await {
        Err(Error::Lagged { missed }) => assert_eq!(missed, 15),
        other => panic!("expected Lagged, got {other:?}"),
    }
    // continues with the oldest event still stored
    let next = sub.next().await.unwrap().unwrap();
    assert_eq!(next.event.payload["n"], 15);
    assert_eq!(p.lagged_total(), 15);
}

#[tokio::test]
async fn ephemeral_replay_of_a_large_store_is_complete_and_not_lagged() {
    // far more stored events than channel_capacity, and a rare subject
    let p = provider(100_000, 10);
    publish(&p, 0..5_000).await;
    let rare = Event::new(
        "events.rare.x",
        "rare",
        "s",
        "test",
        serde_json::json!({ "n": 9_999 }),
    );
    p.publish(&rare).await.unwrap();
    let opts = SubscribeOptions {
        deliver_policy: DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let mut all = p.subscribe_with_options("events.>", &opts).await.unwrap();
    for n in 0..5_000u64 {
        assert_eq!(all.next().await.unwrap().unwrap().event.payload["n"], n);
    }
    let mut only_rare = p
        .subscribe_with_options("events.rare.>", &opts)
        .await
        .unwrap();
    assert_eq!(
        only_rare.next().await.unwrap().unwrap().event.payload["n"],
        9_999
    );
    assert_eq!(p.lagged_total(), 0);
}

#[tokio::test]
async fn huge_durations_mean_forever_and_never_panic() {
    let p = MemoryProvider::default();
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::MAX),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("forever", "events.>", &opts)
        .await
        .unwrap();
    publish(&p, 0..2).await;
    let first = sub.next_manual_ack().await.unwrap().unwrap();
    first.in_progress().await.unwrap();
    first.nak_with_delay(Duration::MAX).await.unwrap();
    let second = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(second.received.event.payload["n"], 1);
    second.ack().await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(100), sub.next_manual_ack()).await;
    assert!(nothing.is_err(), "a nak delayed 'forever' came back");
}

/// An ack wait of `Duration::MAX` (set, a backoff step, or the provider's
/// default) is held at a century, and `PendingEvent::ack_wait` reports that
/// held value, the wait applied (as the contract asks), not `Duration::MAX`.
#[tokio::test]
async fn a_held_ack_wait_is_reported_as_held() {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let by_default = MemoryProvider::with_limits(
        MemoryConfig::default(),
        MemoryLimits {
            default_ack_wait: Duration::MAX,
            ..MemoryLimits::default()
        },
    )
    .unwrap();
    let set = SubscribeOptions {
        ack_wait: Some(Duration::MAX),
        ..SubscribeOptions::default()
    };
    let backoff = SubscribeOptions {
        backoff: vec![Duration::MAX],
        ..SubscribeOptions::default()
    };
    let p = MemoryProvider::default();
    for (label, p, opts) in [
        ("default_ack_wait", &by_default, SubscribeOptions::default()),
        ("ack_wait", &p, set),
        ("backoff", &p, backoff),
    ] {
        let mut durable = p
            .subscribe_durable_with_options(label, "events.>", &opts)
            .await
            .unwrap();
        let mut ephemeral = p.subscribe_with_options("events.>", &opts).await.unwrap();
        publish(p, 0..1).await;
        for sub in [&mut durable, &mut ephemeral] {
            let pending = sub.next_manual_ack().await.unwrap().unwrap();
            assert_eq!(pending.ack_wait(), Some(CENTURY), "{label}");
            pending.ack().await.unwrap();
        }
    }
}

#[tokio::test]
async fn durable_behind_retention_reports_lag_then_continues() {
    let p = provider(5, 10);
    let opts = SubscribeOptions {
        deliver_policy: DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("d", "events.>", &opts)
        .await
        .unwrap();
    publish(&p, 0..12).await;
    match sub.next().await {
        Err(Error::Lagged { missed }) => assert_eq!(missed, 7),
        other => panic!("expected Lagged, got {other:?}"),
    }
    let ns: Vec<u64> = futures_collect(&mut sub, 5).await;
    assert_eq!(ns, vec![7, 8, 9, 10, 11]);
}

async fn futures_collect(sub: &mut Box<dyn event_core::Subscription>, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            sub.next().await.unwrap().unwrap().event.payload["n"]
                .as_u64()
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn max_ack_pending_pauses_delivery_until_acks() {
    let p = MemoryProvider::default();
    publish(&p, 0..5).await;
    let opts = SubscribeOptions {
        max_ack_pending: Some(2),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("bp", "events.>", &opts)
        .await
        .unwrap();
    let a = sub.next_manual_ack().await.unwrap().unwrap();
    let _b = sub.next_manual_ack().await.unwrap().unwrap();
    let blocked = tokio::time::timeout(Duration::from_millis(150), sub.next_manual_ack()).await;
    assert!(
        blocked.is_err(),
        "a third delivery exceeded max_ack_pending"
    );
    a.ack().await.unwrap();
    let c = tokio::time::timeout(Duration::from_secs(2), sub.next_manual_ack())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(c.received.event.payload["n"], 2);
}

#[tokio::test]
async fn unsubscribe_closes_live_subscriptions() {
    let p = MemoryProvider::default();
    let mut sub = p.subscribe_durable("gone", "events.>").await.unwrap();
    let waiter = tokio::spawn(async move { sub.next().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    p.unsubscribe("gone").await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Ok(None)), "{result:?}");
}

#[tokio::test]
async fn changing_the_deliver_policy_of_a_durable_is_a_conflict() {
    let p = MemoryProvider::default();
    drop(p.subscribe_durable("c", "events.>").await.unwrap());
    let opts = SubscribeOptions {
        deliver_policy: DeliverPolicy::New,
        ..SubscribeOptions::default()
    };
    match p
        .subscribe_durable_with_options("c", "events.>", &opts)
        .await
    {
        Err(Error::Conflict { reason, .. }) => assert!(reason.contains("deliver policy")),
        other => panic!("expected Conflict, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn dedup_window_forgets_after_its_duration() {
    let limits = MemoryLimits {
        duplicate_window: Duration::from_millis(50),
        ..MemoryLimits::default()
    };
    let p = MemoryProvider::with_limits(MemoryConfig::default(), limits).unwrap();
    let e = ev(1);
    let a = p.publish(&e).await.unwrap();
    assert_eq!(p.publish(&e).await.unwrap(), a);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        p.publish(&e).await.unwrap() > a,
        "outside the window the id is new again"
    );
}

#[tokio::test]
async fn custom_prefix_is_enforced() {
    let p = MemoryProvider::new(MemoryConfig {
        subject_prefix: "acme".into(),
        ..MemoryConfig::default()
    })
    .unwrap();
    assert_eq!(p.build_subject("a", "b"), "acme.a.b");
    assert!(matches!(
        p.publish(&ev(1)).await,
        Err(Error::InvalidSubject { .. })
    ));
    let ok = Event::new(
        p.build_subject("a", "b"),
        "a",
        "s",
        "x",
        serde_json::json!(1),
    );
    p.publish(&ok).await.unwrap();
}

#[tokio::test]
async fn publish_shared_delivers_the_same_arc_without_a_copy() {
    let p = provider(100, 100);
    let mut live = p.subscribe("events.t.>").await.unwrap();
    let mut durable = p
        .subscribe_durable("shared-reader", "events.t.>")
        .await
        .unwrap();
    let event = std::sync::Arc::new(ev(1));
    let seq = p
        .publish_shared(std::sync::Arc::clone(&event))
        .await
        .unwrap();
    for sub in [&mut live, &mut durable] {
        let got = sub.next().await.unwrap().unwrap();
        assert_eq!(got.sequence, seq);
        assert!(
            std::sync::Arc::ptr_eq(&got.event, &event),
            "the subscriber got a copy, not the published Arc"
        );
    }
    // `publish(&Event)` must copy: the caller keeps its event.
    let borrowed = ev(2);
    p.publish(&borrowed).await.unwrap();
    let got = live.next().await.unwrap().unwrap();
    assert_eq!(*got.event, borrowed);
}

/// Subscriptions that keep catching up (and so keep going back to waiting)
/// are woken for every publish: a lost wake-up shows as a timeout here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_subscriptions_miss_no_wake_up() {
    const PER_PUBLISHER: u64 = 3_000;
    let p = provider(100_000, 100);
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut sub = p.subscribe("events.t.>").await.unwrap();
        readers.push(tokio::spawn(async move {
            let mut seen = 0u64;
            while seen < 2 * PER_PUBLISHER {
                tokio::time::timeout(Duration::from_secs(10), sub.next())
                    .await
                    .expect("a published event was not delivered: lost wake-up")
                    .unwrap()
                    .unwrap();
                seen += 1;
            }
            seen
        }));
    }
    let publishers: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                for n in 0..PER_PUBLISHER {
                    p.publish(&ev(n)).await.unwrap();
                    if n % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap(), 2 * PER_PUBLISHER);
    }
}

/// A long publish loop yields to the runtime now and then (tokio's
/// cooperative budget), so subscriptions on the same thread keep up instead
/// of waiting for the loop to end.
#[tokio::test(flavor = "current_thread")]
async fn a_publish_loop_lets_subscribers_run() {
    let p = provider(100_000, 100);
    let mut sub = p.subscribe("events.t.>").await.unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(_)) = sub.next().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    for n in 0..10_000 {
        p.publish(&ev(n)).await.unwrap();
    }
    let during_loop = received.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        during_loop > 5_000,
        "the subscriber ran only {during_loop} times during a 10,000-event publish loop"
    );
    reader.abort();
}

/// On an ephemeral subscription, auto-ack deliveries need no tracking, but a
/// manual delivery left unsettled is still redelivered after `ack_wait`,
/// also when the subscription reads on with `next`.
#[tokio::test]
async fn ephemeral_mixing_manual_and_auto_ack_keeps_manual_redelivery() {
    let p = provider(100, 100);
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_millis(200)),
        deliver_policy: DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_with_options("events.t.>", &options)
        .await
        .unwrap();
    publish(&p, 0..2).await;
    let manual = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(manual.received.event.payload["n"], 0);
    let auto = sub.next().await.unwrap().unwrap();
    assert_eq!(auto.event.payload["n"], 1);
    let again = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the unsettled manual delivery was not redelivered")
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.event.payload["n"].as_u64(), again.num_delivered),
        (Some(0), 2)
    );
    drop(manual);
}

/// A publish that yields to the runtime (cooperative budget used up) does
/// so before it takes effect: a publish future dropped there stored nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_dropped_while_yielding_stored_nothing() {
    let p = provider(10_000, 100);
    let task = tokio::spawn({
        let p = p.clone();
        async move {
            let (mut done, mut dropped) = (0u64, 0u64);
            for n in 0..1_000 {
                // `now_or_never` drops the future if it is not ready at once
                let event = ev(n);
                let polled = {
                    let fut = std::pin::pin!(p.publish(&event));
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    std::future::Future::poll(fut, &mut cx)
                };
                match polled {
                    std::task::Poll::Ready(result) => {
                        result.unwrap();
                        done += 1;
                    }
                    std::task::Poll::Pending => dropped += 1,
                }
            }
            (done, dropped)
        }
    });
    let (done, dropped) = task.await.unwrap();
    assert!(dropped > 0, "the budget never ran out: nothing was tested");
    assert_eq!(
        p.info().await.unwrap().messages,
        done,
        "a dropped publish stored its event"
    );
}

/// Polled by an executor other than tokio's from inside a tokio task (whose
/// budget is used up), a publish still completes: it wakes itself when it
/// yields instead of waiting for tokio's deferred wake-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_completes_under_a_foreign_executor_inside_a_tokio_task() {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    /// A minimal `block_on`: polls, parks until woken, polls again; gives
    /// up (fails the test instead of hanging it) after 10 s.
    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        let start = std::time::Instant::now();
        loop {
            if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "a publish under a foreign executor never completed"
            );
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
    let p = provider(10_000, 100);
    let task = tokio::spawn({
        let p = p.clone();
        async move {
            for n in 0..1_000 {
                block_on(p.publish(&ev(n))).unwrap();
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("a publish under a foreign executor never completed")
        .unwrap();
    assert_eq!(p.info().await.unwrap().messages, 1_000);
}

/// A durable resubscribed with a shorter ack wait applies it to the
/// deliveries other subscriptions hold (from their next `in_progress` on):
/// what those deliveries report follows at once, so a holder keeping one
/// alive at half the reported wait keeps it. They reported the wait their
/// subscription opened with, and a holder that went by it was redelivered.
#[tokio::test]
async fn a_delivery_held_reports_the_wait_a_later_subscription_set() {
    let p = provider(100, 16);
    let long = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(6)),
        ..SubscribeOptions::default()
    };
    let mut old = p
        .subscribe_durable_with_options("roll", "events.t.>", &long)
        .await
        .unwrap();
    publish(&p, 0..1).await;
    let held = old.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(held.ack_wait(), Some(Duration::from_secs(6)));
    let short = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(2)),
        ..SubscribeOptions::default()
    };
    let _new = p
        .subscribe_durable_with_options("roll", "events.t.>", &short)
        .await
        .unwrap();
    assert_eq!(held.ack_wait(), Some(Duration::from_secs(2)));
    held.ack().await.unwrap();
}

/// Manual deliveries report the ack wait applied to them: the subscription's
/// `ack_wait`, the backoff entry of the delivery, or the provider's default.
#[tokio::test]
async fn manual_deliveries_report_their_ack_wait() {
    let p = MemoryProvider::with_limits(
        MemoryConfig::default(),
        MemoryLimits {
            default_ack_wait: Duration::from_millis(700),
            ..MemoryLimits::default()
        },
    )
    .unwrap();
    let mut plain = p.subscribe_durable("plain", "events.t.>").await.unwrap();
    let waited = SubscribeOptions {
        ack_wait: Some(Duration::from_millis(300)),
        ..SubscribeOptions::default()
    };
    let mut waiting = p
        .subscribe_durable_with_options("waiting", "events.t.>", &waited)
        .await
        .unwrap();
    let backed = SubscribeOptions {
        backoff: vec![Duration::from_millis(20), Duration::from_millis(40)],
        ..SubscribeOptions::default()
    };
    let mut backing = p
        .subscribe_durable_with_options("backing", "events.t.>", &backed)
        .await
        .unwrap();
    publish(&p, 0..1).await;
    let first = plain.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(first.ack_wait(), Some(Duration::from_millis(700)));
    first.ack().await.unwrap();
    let first = waiting.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(first.ack_wait(), Some(Duration::from_millis(300)));
    first.ack().await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let pending = backing.next_manual_ack().await.unwrap().unwrap();
        seen.push((pending.received.num_delivered, pending.ack_wait()));
        pending.nak().await.unwrap();
    }
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(seen, vec![(1, ms(20)), (2, ms(40)), (3, ms(40))]);
}

/// Lowering `max_deliver` on a durable while a delivery is in flight: that
/// delivery was not reported as the final one, so the event comes back once
/// more, flagged final, instead of being dropped without any report (the bus
/// dead-letters on the final flag). Raising it needs nothing special.
#[tokio::test]
async fn lowered_max_deliver_still_reports_the_final_delivery() {
    let p = MemoryProvider::default();
    let wait = Duration::from_millis(100);
    let opts = |max| SubscribeOptions {
        max_deliver: Some(max),
        ack_wait: Some(wait),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("lower", "events.>", &opts(5))
        .await
        .unwrap();
    publish(&p, 0..1).await;
    for attempt in 1..=3 {
        let d = sub.next_manual_ack().await.unwrap().unwrap();
        assert_eq!(d.received.num_delivered, attempt);
        assert!(!d.is_final_delivery());
        if attempt < 3 {
            d.nak().await.unwrap();
        } // the third stays in flight
    }
    let mut sub = p
        .subscribe_durable_with_options("lower", "events.>", &opts(2))
        .await
        .unwrap();
    let last = tokio::time::timeout(Duration::from_secs(2), sub.next_manual_ack())
        .await
        .expect("the exhausted event is reported, not dropped silently")
        .unwrap()
        .unwrap();
    assert_eq!(last.received.event.payload["n"], 0);
    assert!(last.is_final_delivery(), "{last:?}");
    last.nak().await.unwrap();
    let nothing = tokio::time::timeout(wait * 3, sub.next_manual_ack()).await;
    assert!(nothing.is_err(), "delivered again after its final delivery");
}

/// An ephemeral subscription counts in `info().consumers` until it is
/// closed or dropped, whichever comes first, and only once.
#[tokio::test]
async fn a_closed_ephemeral_subscription_no_longer_counts_as_a_consumer() {
    let p = provider(100, 100);
    let mut closed = p.subscribe("events.t.>").await.unwrap();
    let dropped = p.subscribe("events.t.>").await.unwrap();
    let _durable = p.subscribe_durable("d", "events.t.>").await.unwrap();
    assert_eq!(p.info().await.unwrap().consumers, 3);
    closed.close().await.unwrap();
    assert_eq!(p.info().await.unwrap().consumers, 2);
    closed.close().await.unwrap();
    drop(closed);
    assert_eq!(p.info().await.unwrap().consumers, 2);
    drop(dropped);
    assert_eq!(p.info().await.unwrap().consumers, 1);
}

async fn publish_on(p: &MemoryProvider, subject: &str, n: u64) {
    let category = subject.split('.').nth(1).unwrap();
    let event = Event::new(
        subject,
        category,
        "s",
        "test",
        serde_json::json!({ "n": n }),
    );
    p.publish(&event).await.unwrap();
}

#[tokio::test]
async fn lag_counts_only_the_events_the_filter_matches() {
    // retention (8 events) overtakes an ephemeral and a durable on a rare
    // subject: of 25 events (rare ones at 0, 6, 12, 18, 24), 0..=16 are
    // evicted, 3 of them rare
    let p = provider(8, 10);
    let mut ephemeral = p.subscribe("events.rare.>").await.unwrap();
    let opts = SubscribeOptions {
        deliver_policy: DeliverPolicy::New,
        ..SubscribeOptions::default()
    };
    let mut durable = p
        .subscribe_durable_with_options("rare", "events.rare.>", &opts)
        .await
        .unwrap();
    for n in 0..24 {
        let subject = if n % 6 == 0 {
            "events.rare.x"
        } else {
            "events.busy.x"
        };
        publish_on(&p, subject, n).await;
    }
    publish_on(&p, "events.rare.x", 24).await;
    for sub in [&mut ephemeral, &mut durable] {
        match sub.next().await {
            Err(Error::Lagged { missed }) => assert_eq!(missed, 3),
            other => panic!("expected Lagged {{ missed: 3 }}, got {other:?}"),
        }
        // the rare events still stored
        for n in [18, 24] {
            let got = sub.next().await.unwrap().unwrap();
            assert_eq!(got.event.payload["n"], n);
        }
    }
    assert_eq!(p.lagged_total(), 6);
}

#[tokio::test]
async fn rare_subject_consumers_that_lost_nothing_get_no_lag_report() {
    let p = provider(5, 10);
    let mut ephemeral = p.subscribe("events.rare.>").await.unwrap();
    let mut durable = p.subscribe_durable("rare", "events.rare.>").await.unwrap();
    publish_on(&p, "events.rare.x", 0).await;
    for sub in [&mut ephemeral, &mut durable] {
        assert_eq!(sub.next().await.unwrap().unwrap().event.payload["n"], 0);
    }
    // the durable goes away (its position stays); both fall far behind
    durable.close().await.unwrap();
    drop(durable);
    for n in 1..=50 {
        publish_on(&p, "events.busy.x", n).await;
    }
    publish_on(&p, "events.rare.x", 51).await;
    let mut durable = p.subscribe_durable("rare", "events.rare.>").await.unwrap();
    for sub in [&mut ephemeral, &mut durable] {
        let got = sub.next().await.unwrap().unwrap();
        assert_eq!(got.event.payload["n"], 51);
    }
    assert_eq!(p.lagged_total(), 0);
}

#[tokio::test]
async fn a_start_sequence_beyond_the_last_event_is_kept() {
    let p = provider(100, 10);
    for n in 0..3 {
        publish_on(&p, "events.a.x", n).await;
    }
    let opts = SubscribeOptions {
        deliver_policy: DeliverPolicy::ByStartSequence { sequence: 10 },
        ..SubscribeOptions::default()
    };
    // a literal category (block summaries consulted) and a wildcard one
    for (name, filter) in [("lit", "events.a.>"), ("wild", "events.*.x")] {
        let mut sub = p
            .subscribe_durable_with_options(name, filter, &opts)
            .await
            .unwrap();
        // looks (and finds nothing) while the start is beyond the last event
        let nothing = tokio::time::timeout(Duration::from_millis(20), sub.next()).await;
        assert!(nothing.is_err(), "{name}: {nothing:?}");
    }
    for n in 3..13 {
        publish_on(&p, "events.a.x", n).await;
    }
    for name in ["lit", "wild"] {
        let filter = if name == "lit" {
            "events.a.>"
        } else {
            "events.*.x"
        };
        let mut sub = p
            .subscribe_durable_with_options(name, filter, &opts)
            .await
            .unwrap();
        let got = sub.next().await.unwrap().unwrap();
        assert_eq!(got.sequence, 10, "{name}");
    }
}

#[tokio::test]
async fn a_durable_whose_filter_changed_after_retention_overtook_it_is_told_it_lagged() {
    // "d" sits at sequence 1 filtering category a; retention (4 events)
    // evicts six category-b events, which its filter then did not match
    let p = provider(4, 10);
    drop(p.subscribe_durable("d", "events.a.>").await.unwrap());
    for n in 0..10 {
        publish_on(&p, "events.b.x", n).await;
    }
    // now filtering category b from the same position: the six evicted
    // events are ones it would have delivered, and were skipped
    let mut sub = p.subscribe_durable("d", "events.b.>").await.unwrap();
    match sub.next().await {
        Err(Error::Lagged { missed }) => assert_eq!(missed, 6),
        other => panic!("expected Lagged {{ missed: 6 }}, got {other:?}"),
    }
    for n in 6..10 {
        assert_eq!(sub.next().await.unwrap().unwrap().event.payload["n"], n);
    }
}

/// Random publishes and reads under retention: every subscription gets
/// exactly what a model keeping the whole log says: `Lagged` with the
/// number of evicted events its filter matched, then the next stored match.
#[tokio::test]
async fn deliveries_and_lag_counts_agree_with_a_model_of_the_whole_log() {
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut next = move |n: u64| rng.below(n);
    let subjects = ["events.a.x", "events.a.y", "events.b.x", "events.rare.z"];
    let filters = [
        "events.>",
        "events.a.>",
        "events.*.x",
        "events.rare.>",
        "events.b.x",
        ">",
    ];
    for max_events in [1, 5, 63, 64, 65, 130] {
        let p = provider(max_events, 10);
        // (subscription, filter, next sequence in the model)
        let mut subs = Vec::new();
        for (i, filter) in filters.iter().enumerate() {
            let sub = if i % 2 == 0 {
                p.subscribe(filter).await.unwrap()
            } else {
                p.subscribe_durable(&format!("d{i}"), filter).await.unwrap()
            };
            let pattern = event_core::SubjectPattern::parse(filter).unwrap();
            subs.push((sub, pattern, 1_u64));
        }
        let mut log: Vec<&str> = Vec::new();
        for step in 0..6_000 {
            if next(3) > 0 {
                // mostly one busy subject, so whole blocks lack the others
                // and the block summaries skip them
                let subject = if next(50) < 47 {
                    subjects[0]
                } else {
                    subjects[next(subjects.len() as u64) as usize]
                };
                publish_on(&p, subject, step).await;
                log.push(subject);
                continue;
            }
            let last = log.len() as u64;
            let first = last.saturating_sub(max_events as u64) + 1;
            let (sub, pattern, at) = &mut subs[next(filters.len() as u64) as usize];
            let matching = |seq: &u64| pattern.matches(log[(*seq - 1) as usize]);
            let missed = (*at..first.max(*at)).filter(matching).count() as u64;
            let expected_seq = (first.max(*at)..=last).find(matching);
            if missed == 0 && expected_seq.is_none() {
                continue; // the subscription would wait
            }
            let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .unwrap_or_else(|_| panic!("{pattern:?}: nothing delivered"));
            if missed > 0 {
                match got {
                    Err(Error::Lagged { missed: m }) => assert_eq!(m, missed, "{pattern:?}"),
                    other => panic!("{pattern:?}: expected Lagged({missed}), got {other:?}"),
                }
                *at = first;
            } else {
                let seq = expected_seq.unwrap();
                assert_eq!(got.unwrap().unwrap().sequence, seq, "{pattern:?}");
                *at = seq + 1;
            }
        }
    }
}

/// Under tokio's paused clock (`#[tokio::test(start_paused = true)]`, as
/// application tests using the memory provider as a test double do), an
/// unsettled delivery comes back after `ack_wait` of the runtime's time:
/// the ack timers follow tokio's clock, so the wait takes no real time (it
/// used to take the whole ack wait of real time, spinning at full CPU).
#[tokio::test(start_paused = true)]
async fn redelivery_follows_the_paused_tokio_clock() {
    let p = MemoryProvider::default();
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(10)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("paused", "events.>", &opts)
        .await
        .unwrap();
    publish(&p, 0..1).await;
    let first = sub.next_manual_ack().await.unwrap().unwrap();
    first.in_progress().await.unwrap();
    drop(first);
    let (virtual_start, real_start) = (tokio::time::Instant::now(), std::time::Instant::now());
    let again = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(again.received.num_delivered, 2);
    assert!(
        virtual_start.elapsed() >= Duration::from_secs(10),
        "redelivered before the ack wait"
    );
    assert!(
        real_start.elapsed() < Duration::from_secs(5),
        "a 10 s ack wait under a paused clock took {:?} of real time",
        real_start.elapsed()
    );
}

/// The dedup window follows tokio's clock too: under a paused clock,
/// advancing past the window forgets the id.
#[tokio::test(start_paused = true)]
async fn dedup_window_follows_the_paused_tokio_clock() {
    let p = MemoryProvider::default();
    let e = ev(1);
    let first = p.publish(&e).await.unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(p.publish(&e).await.unwrap(), first, "inside the window");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        p.publish(&e).await.unwrap() > first,
        "past the 2 min window the id is new again"
    );
}

/// A zero dedup window would silently turn deduplication off (every id
/// expires at once), which the contract does not allow and the NATS
/// provider refuses: it is a configuration error.
#[tokio::test]
async fn a_zero_duplicate_window_is_a_config_error() {
    let limits = MemoryLimits {
        duplicate_window: Duration::ZERO,
        ..MemoryLimits::default()
    };
    match MemoryProvider::with_limits(MemoryConfig::default(), limits) {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "duplicate_window"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

/// An explicit `msg_id` is kept in the dedup window for its whole duration,
/// so it counts towards `max_payload` (as the `Nats-Msg-Id` header does on
/// NATS): an id of any size cannot be remembered 100,000 times over.
#[tokio::test]
async fn an_explicit_msg_id_counts_towards_the_payload_limit() {
    let limits = MemoryLimits {
        max_payload: 4096,
        ..MemoryLimits::default()
    };
    let p = MemoryProvider::with_limits(MemoryConfig::default(), limits).unwrap();
    let e = ev(1);
    let size = serde_json::to_vec(&e).unwrap().len();
    let id_len = 4096 - size;
    let fits = PublishOptions {
        msg_id: Some("k".repeat(id_len)),
        ..PublishOptions::default()
    };
    p.publish_with_options(&e, &fits).await.unwrap();
    let too_long = PublishOptions {
        msg_id: Some("k".repeat(id_len + 1)),
        ..PublishOptions::default()
    };
    match p.publish_with_options(&ev(2), &too_long).await {
        Err(Error::PayloadTooLarge { size, max }) => assert_eq!((size, max), (4097, 4096)),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let huge = PublishOptions {
        msg_id: Some("k".repeat(10 << 20)),
        ..PublishOptions::default()
    };
    assert!(matches!(
        p.publish_with_options(&ev(3), &huge).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    assert_eq!(
        p.info().await.unwrap().messages,
        1,
        "refused ids stored nothing"
    );
}

/// Slow consumers: a delivery left unsettled (dropped, or nak'd with a
/// delay) whose event retention removes before it can be redelivered is
/// reported as `Lagged`, never dropped silently: a dropped one when its
/// redelivery falls due, a nak'd one at the next fetch after the eviction
/// (it gives up its `max_ack_pending` slot); the consumer goes on with the
/// events still stored.
#[tokio::test(start_paused = true)]
async fn an_unsettled_delivery_evicted_before_redelivery_is_reported() {
    let p = provider(1, 10);
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(10)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("evicted", "events.>", &opts)
        .await
        .unwrap();
    publish(&p, 0..1).await;
    drop(sub.next_manual_ack().await.unwrap().unwrap());
    publish(&p, 1..2).await; // evicts event 0, in flight
    let one = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(one.received.event.payload["n"], 1);
    one.nak_with_delay(Duration::from_secs(5)).await.unwrap();
    publish(&p, 2..3).await; // evicts event 1, awaiting its delayed redelivery
    // the nak'd one is reported at once
    match sub.next_manual_ack().await {
        Err(Error::Lagged { missed }) => assert_eq!(missed, 1),
        other => panic!("expected Lagged, got {other:?}"),
    }
    let two = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(two.received.event.payload["n"], 2);
    two.ack().await.unwrap();
    let mut missed = 1;
    while missed < 2 {
        // virtual time: a lost report fails at once instead of hanging
        match tokio::time::timeout(Duration::from_secs(60), sub.next_manual_ack()).await {
            Ok(Err(Error::Lagged { missed: n })) => missed += n,
            Ok(other) => panic!(
                "expected Lagged, got {:?}",
                other.map(|e| e.map(|e| e.received))
            ),
            Err(_) => panic!("the evicted deliveries were dropped silently ({missed} reported)"),
        }
    }
    assert_eq!(missed, 2);
    assert_eq!(p.lagged_total(), 2);
    let nothing = tokio::time::timeout(Duration::from_secs(60), sub.next_manual_ack()).await;
    assert!(nothing.is_err(), "nothing else is due");
}

/// The backlog a start policy selects (`Last`, `LastPerSubject`) is
/// reported as `Lagged` when retention removes it before it is read.
#[tokio::test]
async fn a_start_policy_backlog_evicted_before_it_is_read_is_reported() {
    let p = provider(1, 10);
    publish(&p, 0..1).await;
    let opts = SubscribeOptions {
        deliver_policy: DeliverPolicy::Last,
        ..SubscribeOptions::default()
    };
    let mut sub = p.subscribe_with_options("events.>", &opts).await.unwrap();
    publish(&p, 1..2).await; // evicts event 0, the `Last` backlog
    match sub.next().await {
        Err(Error::Lagged { missed }) => assert_eq!(missed, 1),
        other => panic!("expected Lagged, got {other:?}"),
    }
    assert_eq!(sub.next().await.unwrap().unwrap().event.payload["n"], 1);
}

/// Lowering `max_deliver` while a delivery that was not final under the old
/// limit is in flight: the event still gets one delivery past the new limit
/// (flagged final), never two. That delivery is already numbered
/// `max_deliver + 1`, the spare's number, so when it is left unsettled too
/// the event ends, as a spare delivery does.
#[tokio::test]
async fn lowered_max_deliver_gives_one_delivery_past_the_limit_not_two() {
    let p = MemoryProvider::default();
    let wait = Duration::from_millis(100);
    let opts = |max| SubscribeOptions {
        max_deliver: Some(max),
        ack_wait: Some(wait),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("lower2", "events.>", &opts(3))
        .await
        .unwrap();
    publish(&p, 0..1).await;
    let first = sub.next_manual_ack().await.unwrap().unwrap();
    first.nak().await.unwrap();
    // delivery 2 of max_deliver 3: not final when handed out
    let held = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(held.received.num_delivered, 2);
    assert!(!held.is_final_delivery());
    let mut sub = p
        .subscribe_durable_with_options("lower2", "events.>", &opts(2))
        .await
        .unwrap();
    drop(held); // left unsettled: its ack wait expires under max_deliver 2
    let next = tokio::time::timeout(Duration::from_secs(2), sub.next_manual_ack())
        .await
        .expect("the event is reported once more, flagged final")
        .unwrap()
        .unwrap();
    assert_eq!(next.received.num_delivered, 3);
    assert!(next.is_final_delivery(), "{next:?}");
    drop(next); // left unsettled as well
    let again = tokio::time::timeout(wait * 4, sub.next_manual_ack()).await;
    assert!(
        again.is_err(),
        "delivered again past max_deliver 2 + 1: {again:?}"
    );
}

/// Polls `fut` once with a waker that does nothing: true when it is pending
/// (a fetch then counts as waiting for work until it is dropped).
fn pending_after_one_poll<F: std::future::Future + ?Sized>(fut: std::pin::Pin<&mut F>) -> bool {
    fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        .is_pending()
}

/// A subscription that fails (naks) an event on a shared durable must not
/// keep its redeliveries to itself while another subscription on the same
/// durable is waiting for work: the event goes to the waiting one. On a
/// current-thread runtime the failing subscription never yields between a
/// nak and its next fetch, so without the hand-off it would take the same
/// event back forever and the healthy subscription would never run.
#[tokio::test(flavor = "current_thread")]
async fn a_failing_subscription_hands_redeliveries_to_a_waiting_one() {
    let p = provider(1_000, 1_000);
    let mut failing = p.subscribe_durable("work", "events.>").await.unwrap();
    let mut healthy = p.subscribe_durable("work", "events.>").await.unwrap();
    publish(&p, 0..1).await;
    let first = failing.next_manual_ack().await.unwrap().unwrap();
    let mut settled = tokio::spawn(async move {
        let pending = healthy.next_manual_ack().await.unwrap().unwrap();
        let delivered = pending.received.num_delivered;
        pending.ack().await.unwrap();
        delivered
    });
    // the healthy subscription starts waiting: the one event is in flight
    tokio::task::yield_now().await;
    assert!(!settled.is_finished());
    first.nak().await.unwrap();
    let mut naks = 1;
    let delivered = loop {
        tokio::select! {
            delivered = &mut settled => break delivered.unwrap(),
            again = failing.next_manual_ack() => {
                again.unwrap().unwrap().nak().await.unwrap();
                naks += 1;
                assert!(
                    naks < 1_000,
                    "the failing subscription took the event back {naks} times while another waited"
                );
            }
        }
    };
    assert_eq!(naks, 1, "the waiting subscription got the first redelivery");
    assert_eq!(delivered, 2);
}

/// The hand-off never strands an event: when the other subscription counts
/// as waiting but is never polled again (its fetch future kept alive and
/// forgotten), the subscription that failed the event gets it back after a
/// short grace period.
#[tokio::test]
async fn a_redelivery_is_not_stranded_on_a_waiter_that_never_runs() {
    let p = provider(1_000, 1_000);
    let mut failing = p.subscribe_durable("work", "events.>").await.unwrap();
    let mut stalled = p.subscribe_durable("work", "events.>").await.unwrap();
    publish(&p, 0..1).await;
    let first = failing.next_manual_ack().await.unwrap().unwrap();
    // polled once (it registers as waiting), then never again
    let mut forgotten = Box::pin(stalled.next_manual_ack());
    assert!(pending_after_one_poll(forgotten.as_mut()));
    first.nak().await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(5), failing.next_manual_ack())
        .await
        .expect("the redelivery comes back to the only subscription that runs")
        .unwrap()
        .unwrap();
    assert_eq!(again.received.num_delivered, 2);
    again.ack().await.unwrap();
    drop(forgotten);
}

/// A waiter whose fetch is cancelled while a redelivery is left to it wakes
/// the subscription that failed the event at once, rather than leaving it to
/// wait out the hand-off grace. The clock is paused: it only moves when every
/// task waits on a timer, so time that passed means the fetch slept.
#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_gives_the_redelivery_back_at_once() {
    let p = provider(1_000, 1_000);
    let mut failing = p.subscribe_durable("work", "events.>").await.unwrap();
    let mut other = p.subscribe_durable("work", "events.>").await.unwrap();
    publish(&p, 0..1).await;
    let first = failing.next_manual_ack().await.unwrap().unwrap();
    let mut waiter = Box::pin(other.next_manual_ack());
    assert!(pending_after_one_poll(waiter.as_mut()));
    first.nak().await.unwrap();
    let start = tokio::time::Instant::now();
    let fetch = tokio::spawn(async move {
        let again = failing.next_manual_ack().await.unwrap().unwrap();
        let delivered = again.received.num_delivered;
        again.ack().await.unwrap();
        delivered
    });
    // the fetch leaves the event to the waiter and waits
    tokio::task::yield_now().await;
    assert!(!fetch.is_finished());
    drop(waiter);
    assert_eq!(fetch.await.unwrap(), 2);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the fetch was woken by the cancelled waiter, not by the grace timer"
    );
}

/// Counts the wake-ups a future asks for.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A fetch with nothing to deliver sleeps: it does not spin on a hand-off
/// entry whose event was settled meanwhile. Here an ephemeral subscription's
/// redelivery was handed off (a fetch future of its own, polled once and
/// leaked, counts as a waiting subscription for good), then the late ack
/// settled it: nothing is pending, and `next` (untracked, no clock read)
/// must not keep returning the entry's grace deadline once it has passed,
/// which makes the fetch loop without ever waiting. The clock is paused: a
/// fetch that waits returns `Pending` without asking to be woken; one that
/// spins runs out of its cooperative budget and asks to be polled again
/// (a wake-up the runtime defers to its next turn).
#[tokio::test(start_paused = true)]
async fn a_fetch_does_not_spin_on_a_settled_hand_off_entry() {
    use std::future::Future;
    let p = provider(100, 100);
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_millis(50)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_with_options("events.t.>", &options)
        .await
        .unwrap();
    let mut leaked = Box::pin(sub.next_manual_ack());
    assert!(pending_after_one_poll(leaked.as_mut()));
    std::mem::forget(leaked);
    publish(&p, 0..1).await;
    let first = sub.next_manual_ack().await.unwrap().unwrap();
    tokio::time::advance(Duration::from_millis(60)).await;
    // the timed-out delivery is handed off to the "waiting" leaked fetch
    let mut fetch = Box::pin(sub.next_manual_ack());
    assert!(pending_after_one_poll(fetch.as_mut()));
    drop(fetch);
    first.ack().await.unwrap();
    tokio::time::advance(Duration::from_millis(300)).await;
    let wakes = std::sync::Arc::new(CountingWaker(Default::default()));
    let waker = std::task::Waker::from(wakes.clone());
    let mut next = Box::pin(sub.next());
    assert!(
        next.as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_pending()
    );
    // a yield lets the runtime call the wake-ups it deferred
    tokio::task::yield_now().await;
    assert_eq!(
        wakes.0.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the fetch spun until its cooperative budget ran out"
    );
}

/// A fetch that always finds work (a backlog, or an event nak'd and fetched
/// again and again) spends the task's cooperative budget as tokio's own
/// channels do: a loop of fetches on a current-thread runtime lets the other
/// tasks (here a 1 ms timer) run, instead of holding the runtime until it
/// ends.
#[tokio::test(flavor = "current_thread")]
async fn a_fetch_loop_lets_other_tasks_run() {
    const FETCHES: u64 = 200_000;
    let p = provider(1_000, 1_000);
    let mut sub = p.subscribe_durable("spin", "events.>").await.unwrap();
    publish(&p, 0..1).await;
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = fetched.clone();
    let spinner = tokio::spawn(async move {
        for _ in 0..FETCHES {
            let pending = sub.next_manual_ack().await.unwrap().unwrap();
            pending.nak().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let during = fetched.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        during < FETCHES,
        "the fetch loop held the runtime for all its {during} fetches"
    );
    spinner.abort();
}

/// A consumer that starts by sequence before the oldest stored event (a
/// checkpoint saved before retention evicted what followed it) is told
/// what it missed: `Lagged` with every evicted position from its start (the
/// evicted events' subjects are gone, so an upper bound), then the oldest
/// stored event. Durable and ephemeral; a start at or after the oldest
/// stored event, or before the first sequence ever assigned, loses nothing
/// and gets no report.
#[tokio::test]
async fn a_start_sequence_before_the_oldest_stored_event_is_reported_as_lagged() {
    let p = provider(10, 1000);
    // sequences 1..=25, of which 16..=25 are stored
    publish(&p, 0..25).await;
    let opts = |sequence| SubscribeOptions {
        deliver_policy: DeliverPolicy::ByStartSequence { sequence },
        ..SubscribeOptions::default()
    };
    for (i, (start, missed)) in [
        (3, Some(13)),
        (1, Some(15)),
        (0, Some(15)),
        (16, None),
        (20, None),
    ]
    .into_iter()
    .enumerate()
    {
        let durable = p
            .subscribe_durable_with_options(&format!("d{i}"), "events.>", &opts(start))
            .await
            .unwrap();
        let ephemeral = p
            .subscribe_with_options("events.>", &opts(start))
            .await
            .unwrap();
        for (kind, mut sub) in [("durable", durable), ("ephemeral", ephemeral)] {
            match (sub.next().await, missed) {
                (Err(Error::Lagged { missed: got }), Some(want)) => {
                    assert_eq!(got, want, "{kind} from {start}");
                    let next = sub.next().await.unwrap().unwrap();
                    assert_eq!(next.sequence, 16, "{kind} from {start}");
                }
                (Ok(Some(r)), None) => assert_eq!(r.sequence, start.max(16), "{kind} from {start}"),
                (other, _) => panic!("{kind} from {start}: {other:?}"),
            }
        }
    }
    // before anything was stored nothing can have been evicted
    let empty = provider(10, 1000);
    let mut sub = empty
        .subscribe_with_options("events.>", &opts(0))
        .await
        .unwrap();
    publish(&empty, 0..1).await;
    assert_eq!(sub.next().await.unwrap().unwrap().sequence, 1);
}

/// A nak'd delivery waiting out a long delay gives up its `max_ack_pending`
/// slot once retention evicts its event: the durable goes on at once
/// (reporting the event as lagged) instead of stalling until the delay
/// runs out.
#[tokio::test]
async fn a_nakd_event_evicted_during_its_delay_frees_its_slot() {
    let p = provider(100, 1000);
    let opts = SubscribeOptions {
        max_ack_pending: Some(1),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("k", "events.>", &opts)
        .await
        .unwrap();
    publish(&p, 0..1).await;
    let held = sub.next_manual_ack().await.unwrap().unwrap();
    held.nak_with_delay(Duration::from_secs(3600))
        .await
        .unwrap();
    // sequences 1..=300, of which 201..=300 are stored
    publish(&p, 1..300).await;
    let (delivered, missed) =
        tokio::time::timeout(Duration::from_secs(2), next_after_lag(&mut sub))
            .await
            .expect("the durable stalled behind the evicted nak'd event");
    assert_eq!((delivered, missed), (201, 200));
    assert_eq!(p.lagged_total(), 200);
}

/// A waiting subscription is woken only by publishes its filter's category
/// could match (waiters are spread over lanes by category); when its
/// durable's filter changes to another category while it waits, it must
/// wake for the new category, and a wildcard-category filter wakes for all.
#[tokio::test]
async fn a_waiting_subscription_follows_its_durable_filter_to_another_category() {
    let p = provider(1_000, 64);
    let manual = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(30)),
        ..SubscribeOptions::default()
    };
    let mut waiting = p
        .subscribe_durable_with_options("moving", "events.orders.>", &manual)
        .await
        .unwrap();
    let mut wildcard = p.subscribe("events.*.created").await.unwrap();
    let wildcard = tokio::spawn(async move { wildcard.next().await.unwrap().unwrap() });
    let waiter = tokio::spawn(async move {
        let got = waiting.next_manual_ack().await.unwrap().unwrap();
        let subject = got.received.event.subject.clone();
        got.ack().await.unwrap();
        subject
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // the same durable, now on another category, while the first waits
    let _other = p
        .subscribe_durable_with_options("moving", "events.users.>", &manual)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let user = Event::new("events.users.created", "users", "s", "test", 1.into());
    p.publish(&user).await.unwrap();
    let subject = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiting subscription was not woken for its new category")
        .unwrap();
    assert_eq!(subject, "events.users.created");
    let got = tokio::time::timeout(Duration::from_secs(5), wildcard)
        .await
        .expect("a waiting wildcard-category subscription was not woken")
        .unwrap();
    assert_eq!(got.event.subject, "events.users.created");
}

/// A waiting subscription on one category, paused at `max_ack_pending`
/// behind an event nak'd for an hour, is not woken by publishes on
/// another category (waiters are grouped by category), yet those publishes
/// can evict the nak'd event: the eviction must still free its slot, so
/// the waiting fetch goes on (reporting the lost event) instead of
/// stalling until the delay runs out.
#[tokio::test]
async fn a_nakd_event_evicted_by_another_category_frees_a_waiting_fetch() {
    let p = provider(3, 1000);
    let opts = SubscribeOptions {
        max_ack_pending: Some(1),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("k", "events.orders.>", &opts)
        .await
        .unwrap();
    let orders = |n: u64| Event::new("events.orders.x", "orders", "s", "t", n.into());
    let users = |n: u64| Event::new("events.users.x", "users", "s", "t", n.into());
    p.publish(&orders(1)).await.unwrap();
    let held = sub.next_manual_ack().await.unwrap().unwrap();
    held.nak_with_delay(Duration::from_secs(3600))
        .await
        .unwrap();
    // stored, but the nak'd event holds the only slot
    p.publish(&orders(2)).await.unwrap();
    let waiter = tokio::spawn(async move { next_after_lag(&mut sub).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // sequences 3 and 4: the store keeps 2..=4, the nak'd event 1 is gone
    p.publish(&users(3)).await.unwrap();
    p.publish(&users(4)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("the waiting fetch stalled behind an evicted nak'd event")
        .unwrap();
    assert_eq!(got, (2, 1));
}

/// How soon an evicted nak'd delivery frees its slot: the scan for them is
/// amortised (it waits for as many evictions since the last one as there
/// are unacknowledged deliveries), so with three unacknowledged, the
/// eviction of the first nak'd event does not free its slot yet; the next
/// eviction does, and wakes the waiting fetch (characterisation of what
/// the crate docs say).
#[tokio::test(start_paused = true)]
async fn an_evicted_nakd_event_frees_its_slot_within_as_many_evictions_as_deliveries_pending() {
    let p = provider(3, 1000);
    let opts = SubscribeOptions {
        max_ack_pending: Some(3),
        ack_wait: Some(Duration::from_secs(7200)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("k", "events.orders.>", &opts)
        .await
        .unwrap();
    let orders = |n: u64| Event::new("events.orders.x", "orders", "s", "t", n.into());
    let users = |n: u64| Event::new("events.users.x", "users", "s", "t", n.into());
    let mut held = Vec::new();
    for n in 1..=3 {
        p.publish(&orders(n)).await.unwrap();
        held.push(sub.next_manual_ack().await.unwrap().unwrap());
    }
    let in_flight = held.pop().unwrap();
    for h in held {
        h.nak_with_delay(Duration::from_secs(3600)).await.unwrap();
    }
    // sequence 4 evicts 1: nak'd, but not dropped yet (amortised scan)
    p.publish(&orders(4)).await.unwrap();
    let waiter = tokio::spawn(async move { next_after_lag(&mut sub).await });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !waiter.is_finished(),
        "a slot was freed at the first eviction"
    );
    // sequence 5 (another category) evicts 2: the scan is due, drops 1 and
    // 2, and the waiting fetch is woken
    p.publish(&users(5)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("the waiting fetch stalled")
        .unwrap();
    assert_eq!(got, (4, 2));
    drop(in_flight);
}

/// A prefix whose tokens look like categories (`events.orders`) keys on
/// the token after the whole prefix: live subscriptions, history and lag
/// reports each see exactly their category's events, whether the filter
/// names the prefix or matches it with wildcards.
#[tokio::test]
async fn a_prefix_whose_tokens_look_like_categories_keys_on_the_token_after_it() {
    let p = MemoryProvider::new(MemoryConfig {
        subject_prefix: "events.orders".into(),
        max_events: 4,
        channel_capacity: 16,
    })
    .unwrap();
    let subject = |category: &str| format!("events.orders.{category}.x");
    let publish = |category: &'static str| {
        let p = &p;
        async move {
            let e = Event::new(
                subject(category),
                category,
                "s",
                "test",
                serde_json::json!(1),
            );
            p.publish(&e).await.unwrap()
        }
    };
    let mut orders = p.subscribe("events.orders.orders.>").await.unwrap();
    let mut users = p.subscribe("*.*.users.>").await.unwrap();
    let mut events = p.subscribe("events.orders.events.*").await.unwrap();
    let users_seq = publish("users").await;
    let orders_seq = publish("orders").await;
    let events_seq = publish("events").await;
    assert_eq!(next_after_lag(&mut orders).await, (orders_seq, 0));
    assert_eq!(next_after_lag(&mut users).await, (users_seq, 0));
    assert_eq!(next_after_lag(&mut events).await, (events_seq, 0));
    // history: only the category's events
    let history = p.history(Some("events.orders.users.>"), 10).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|e| e.subject.clone())
            .collect::<Vec<_>>(),
        [subject("users")]
    );
    // a lagging durable of one category counts only its category's events
    let mut durable = p
        .subscribe_durable_with_options(
            "d",
            "events.orders.orders.>",
            &SubscribeOptions {
                deliver_policy: DeliverPolicy::All,
                ..SubscribeOptions::default()
            },
        )
        .await
        .unwrap();
    // max_events 4: these evict the three above and two more of orders
    for _ in 0..3 {
        publish("orders").await;
        publish("users").await;
    }
    let (_, missed) = next_after_lag(&mut durable).await;
    assert_eq!(missed, 2, "orders evicted before the durable read them");
}
