//! Long-running use of the bus must not grow memory or tasks: each loop
//! here repeats an operation that adds state (bus subscriptions and their
//! registry, managed subscribers, consumer runners, remembered failures)
//! with what normally removes it, many times, and checks that the bytes the
//! process holds and the tasks it runs stay flat.
//!
//! A dedicated test binary: its global allocator counts live bytes, and the
//! tests take turns (a lock) so that each measures only itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use event_bus::{ConsumerConfig, EventBus};
use event_core::{
    BoxError, DeliverPolicy, EventProvider, ReceivedEvent, SubscribeOptions, SubscriptionFilter,
};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[path = "../../event-core/tests/growth_support/mod.rs"]
#[macro_use]
mod growth_support;
use growth_support::{measured, wait_until};

#[global_allocator]
static ALLOCATOR: growth_support::Counting = growth_support::Counting;

/// Growth allowed over a whole measured run: far below what one byte kept
/// per operation adds up to over the runs below.
const SLACK: isize = 48 * 1024;

/// A bus on a memory provider whose bounded stores (the ring, the dedup
/// window) fill during the warm-up.
fn bus() -> (EventBus, MemoryProvider) {
    let provider = MemoryProvider::with_limits(
        MemoryConfig {
            max_events: 64,
            ..MemoryConfig::default()
        },
        MemoryLimits {
            max_dedup_entries: 64,
            ..MemoryLimits::default()
        },
    )
    .unwrap();
    (EventBus::new(provider.clone()), provider)
}

async fn publish(bus: &EventBus, n: usize) {
    bus.publish("growth", "x", "s", "test", json!({ "n": n }))
        .await
        .unwrap();
}

/// Bus subscriptions opened, read and dropped or closed; provider
/// subscriptions wrapped by the bus, too. (The registry of the bus
/// subscriptions handed out, which recognises one given back to a bus, is
/// keyed by address; freed addresses are reused, so a missed removal would
/// show here only as a small, not a growing, set: its removal on drop is
/// checked by reading.)
#[test]
fn bus_subscriptions_opened_and_dropped_leave_nothing_behind() {
    measured(async {
        let (bus, provider) = bus();
        stays_flat!("bus subscribe, receive, drop", SLACK, 2_000, 100_000, |n| {
            let mut sub = if n % 2 == 0 {
                bus.subscribe("events.growth.>").await.unwrap()
            } else {
                bus.wrap_subscription(provider.subscribe("events.growth.>").await.unwrap())
            };
            publish(&bus, n).await;
            assert!(sub.next().await.unwrap().is_some());
            if n % 3 == 0 {
                sub.close().await.unwrap();
            }
        });
        assert_eq!(provider.info().await.unwrap().consumers, 0);
    });
}

/// Managed durable subscribers under new ids (one per session or job):
/// added, opened, read, removed.
#[test]
fn managed_subscribers_added_and_removed_leave_nothing_behind() {
    measured(async {
        let (bus, provider) = bus();
        stays_flat!(
            "subscriber per id, then remove",
            SLACK,
            1_000,
            10_000,
            |n| {
                let id = format!("session-{n:08}");
                bus.update_subscription_with_options(
                    SubscriptionFilter {
                        subscriber_id: id.clone(),
                        subjects: vec!["events.growth.>".into()],
                        durable: true,
                    },
                    SubscribeOptions {
                        deliver_policy: DeliverPolicy::New,
                        ..SubscribeOptions::default()
                    },
                )
                .await
                .unwrap();
                let mut subs = bus.create_subscriber(&id).await.unwrap();
                publish(&bus, n).await;
                let pending = subs[0].next_manual_ack().await.unwrap().unwrap();
                pending.ack().await.unwrap();
                bus.remove_subscription(&id).await.unwrap();
                // ended by the removal
                assert!(subs[0].next().await.unwrap().is_none());
            }
        );
        assert_eq!(provider.info().await.unwrap().consumers, 0);
        assert!(bus.list_subscriptions().await.is_empty());
    });
}

/// Consumer runners started over a subscription, run on an event and shut
/// down: their loops, delivery tasks and spans end with them.
#[test]
fn consumer_runners_started_and_shut_down_leave_nothing_behind() {
    measured(async {
        let (bus, provider) = bus();
        let handled = Arc::new(AtomicUsize::new(0));
        stays_flat!(
            "consume_subscription, one event, shutdown",
            SLACK,
            300,
            3_000,
            |n| {
                let sub = bus.subscribe("events.growth.>").await.unwrap();
                let count = handled.clone();
                let handle = bus
                    .consume_subscription(
                        sub,
                        SubscribeOptions::default(),
                        move |_: ReceivedEvent| {
                            let count = count.clone();
                            async move {
                                count.fetch_add(1, Ordering::SeqCst);
                                Ok::<(), BoxError>(())
                            }
                        },
                        ConsumerConfig::default(),
                    )
                    .unwrap();
                publish(&bus, n).await;
                wait_until("the event handled", || handled.load(Ordering::SeqCst) > n).await;
                let report = handle.shutdown(Duration::from_secs(5)).await;
                assert_eq!(report.acked, 1);
            }
        );
        assert_eq!(provider.info().await.unwrap().consumers, 0);
    });
}

/// Two instances share a durable (two runners on one subscriber): events
/// that fail on one are redelivered to, and settled by, the other. The
/// first runner remembers each failure for the dead letter it might write;
/// what it remembers of events settled elsewhere must not pile up.
#[test]
fn failures_settled_by_another_instance_are_not_remembered_forever() {
    const BATCH: usize = 50;
    const WARMUP: usize = 40;
    const ROUNDS: usize = 600;
    measured(async {
        let (bus, _provider) = bus();
        // the runner remembers up to max_ack_pending failures per
        // subscription: reached during the warm-up
        let options = SubscribeOptions {
            backoff: vec![Duration::from_millis(5)],
            max_ack_pending: Some(100),
            ..SubscribeOptions::default()
        };
        bus.update_subscription_with_options(
            SubscriptionFilter {
                subscriber_id: "shared".into(),
                subjects: vec!["events.growth.>".into()],
                durable: true,
            },
            options,
        )
        .await
        .unwrap();
        // which events the working instance settled (allocated up front, so
        // the measurement does not count it)
        let settled: Arc<Vec<AtomicBool>> = Arc::new(
            (0..(WARMUP + ROUNDS) * BATCH)
                .map(|_| AtomicBool::new(false))
                .collect(),
        );
        // which events the failing instance saw (and failed) first
        let failed_here: Arc<Vec<AtomicBool>> = Arc::new(
            (0..(WARMUP + ROUNDS) * BATCH)
                .map(|_| AtomicBool::new(false))
                .collect(),
        );
        let seen = failed_here.clone();
        let failing = bus
            .consume(
                "shared",
                move |event: ReceivedEvent| {
                    let seen = seen.clone();
                    async move {
                        // every event fails here; its redelivery goes to
                        // the other instance when that one waits for work
                        // (the memory provider does not hand it back to the
                        // subscription that failed it first)
                        let n = event.event.payload["n"].as_u64().unwrap();
                        seen[usize::try_from(n).unwrap()].store(true, Ordering::SeqCst);
                        Err::<(), BoxError>("this instance fails".into())
                    }
                },
                ConsumerConfig::default().concurrency(1),
            )
            .await
            .unwrap();
        let marks = settled.clone();
        let settled_elsewhere = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let elsewhere = settled_elsewhere.clone();
        let failed_there = failed_here.clone();
        let working = bus
            .consume(
                "shared",
                move |event: ReceivedEvent| {
                    let marks = marks.clone();
                    let elsewhere = elsewhere.clone();
                    let failed_there = failed_there.clone();
                    async move {
                        let n = event.event.payload["n"].as_u64().unwrap();
                        let n = usize::try_from(n).unwrap();
                        if failed_there[n].load(Ordering::SeqCst) {
                            elsewhere.fetch_add(1, Ordering::SeqCst);
                        }
                        marks[n].store(true, Ordering::SeqCst);
                        Ok::<(), BoxError>(())
                    }
                },
                ConsumerConfig::default(),
            )
            .await
            .unwrap();
        // the ring (64 events) never evicts an unsettled one: each batch
        // is settled before the next is published
        stays_flat!("failed here, settled there", SLACK, WARMUP, ROUNDS, |n| {
            for i in 0..BATCH {
                publish(&bus, n * BATCH + i).await;
            }
            wait_until("the batch settled", || {
                settled[n * BATCH..(n + 1) * BATCH]
                    .iter()
                    .all(|s| s.load(Ordering::SeqCst))
            })
            .await;
        });
        let failed = failing.shutdown(Duration::from_secs(5)).await;
        // thousands of events failed there
        assert!(failed.retried > 1_000, "{failed:?}");
        // and many of them were settled by the other instance: the failures
        // this test measures, remembered there for events settled elsewhere
        let elsewhere = settled_elsewhere.load(Ordering::SeqCst);
        assert!(
            elsewhere > 500,
            "only {elsewhere} failed events settled elsewhere"
        );
        working.shutdown(Duration::from_secs(5)).await;
    });
}
