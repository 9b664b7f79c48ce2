//! Long-running routing must not grow memory or tasks: each loop here
//! repeats an operation that adds state (triggers and their per-trigger
//! state, queued routings, feeds and their tasks) with what normally
//! removes it, many times, and checks that the bytes the process holds and
//! the tasks it runs stay flat.
//!
//! A dedicated test binary: its global allocator counts live bytes, and the
//! tests take turns (a lock) so that each measures only itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use event_core::{Event, EventProvider, SubscribeOptions};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use event_routing::{Broker, BrokerConfig, DeliverySpec, InProcessSink, Trigger, TriggerFilter};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "../../event-core/tests/growth_support/mod.rs"]
#[macro_use]
mod growth_support;
use growth_support::{measured, wait_until};

#[global_allocator]
static ALLOCATOR: growth_support::Counting = growth_support::Counting;

/// Growth allowed over a whole measured run: far below what one byte kept
/// per operation adds up to over the runs below.
const SLACK: isize = 48 * 1024;

fn event(n: usize) -> Event {
    event_on("events.growth.x", n)
}

fn event_on(subject: &str, n: usize) -> Event {
    Event::new(
        subject,
        "growth",
        "s",
        "test",
        serde_json::json!({ "n": n }),
    )
}

fn counting_sink(count: &Arc<AtomicUsize>) -> Arc<InProcessSink> {
    let count = count.clone();
    Arc::new(InProcessSink::new("count", move |_| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }))
}

/// Triggers added, losing a delivery (their loss-warning state and their
/// per-trigger counters record it), and removed, under new names: nothing
/// of them stays.
#[test]
fn triggers_added_and_removed_leave_nothing_behind() {
    measured(async {
        let broker = Broker::new();
        // (not a `FailingSink`: a test sink that records every attempt)
        let failing = Arc::new(InProcessSink::new("down", |_| async {
            Err(event_core::Error::Connection("unreachable".into()))
        }));
        let spec = DeliverySpec::new().with_retries(0);
        stays_flat!(
            "trigger per name, a lost delivery, remove",
            SLACK,
            2_000,
            50_000,
            |n| {
                let name = format!("trigger-{n:08}");
                broker
                    .add_trigger(
                        Trigger::new(
                            name.clone(),
                            TriggerFilter::by_subject("events.growth.>"),
                            failing.clone(),
                        )
                        .with_delivery(spec.clone()),
                    )
                    .unwrap();
                let result = broker.route(&event(n)).await;
                assert_eq!((result.matched, result.failed), (1, 1));
                let counted = broker
                    .metrics()
                    .trigger(&name)
                    .map(|t| t.no_dead_letter_sink);
                assert_eq!(counted, Some(1));
                assert!(broker.remove_trigger(&name));
            }
        );
        assert_eq!(broker.trigger_count(), 0);
        assert!(broker.metrics().by_trigger.is_empty());
    });
}

/// Events queued for routing (the bounded queue, its dispatcher, the
/// routing tasks): nothing is kept once they are routed.
#[test]
fn queued_routings_leave_nothing_behind() {
    measured(async {
        let broker = Broker::with_config(BrokerConfig {
            queue_capacity: 256,
            ..BrokerConfig::default()
        })
        .unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        broker
            .add_trigger(Trigger::new(
                "all",
                TriggerFilter::by_subject("events.growth.>"),
                counting_sink(&count),
            ))
            .unwrap();
        const BATCH: usize = 100;
        stays_flat!(
            "enqueue a batch, wait until routed",
            SLACK,
            100,
            1_000,
            |n| {
                for i in 0..BATCH {
                    broker
                        .enqueue(Arc::new(event(n * BATCH + i)))
                        .await
                        .unwrap();
                }
                broker.wait_idle().await;
                assert_eq!(count.load(Ordering::SeqCst), (n + 1) * BATCH);
            }
        );
        let metrics = broker.metrics();
        assert_eq!((metrics.queue_depth, metrics.in_flight), (0, 0));
    });
}

/// Feeds started on a subscription, fed an event, and stopped: their
/// tasks end with them.
#[test]
fn feeds_started_and_stopped_leave_nothing_behind() {
    measured(async {
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
        let broker = Broker::new();
        let count = Arc::new(AtomicUsize::new(0));
        broker
            .add_trigger(Trigger::new(
                "all",
                TriggerFilter::by_subject("events.growth.>"),
                counting_sink(&count),
            ))
            .unwrap();
        stays_flat!("feed, one event, stop", SLACK, 500, 5_000, |n| {
            // the durable reads a subject of its own: it resumes after
            // the event of its previous round
            let (feed, subject) = if n % 2 == 0 {
                let sub = provider.subscribe("events.growth.eph").await.unwrap();
                (broker.feed(sub), "events.growth.eph")
            } else {
                let options = SubscribeOptions::default();
                let feed = broker
                    .feed_durable(&provider, "feed", "events.growth.durable", &options)
                    .await
                    .unwrap();
                (feed, "events.growth.durable")
            };
            provider.publish(&event_on(subject, n)).await.unwrap();
            wait_until("the event routed", || count.load(Ordering::SeqCst) > n).await;
            let stats = feed.stop().await.unwrap();
            assert_eq!(stats.acked, 1);
        });
        provider.unsubscribe("feed").await.unwrap();
        assert_eq!(provider.info().await.unwrap().consumers, 0);
    });
}
