//! Long-running use must not grow memory: every loop here repeats an
//! operation that adds state (subscriptions, durables, deliveries, timers,
//! dedup ids) together with what normally removes it, many times, and
//! checks that the bytes the process holds stay flat.
//!
//! A dedicated test binary: its global allocator counts live bytes, and the
//! tests take turns (a lock) so that each measures only itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use event_core::{Event, EventProvider, PublishOptions, SubscribeOptions};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use std::time::Duration;

#[path = "../../event-core/tests/growth_support/mod.rs"]
#[macro_use]
mod growth_support;
use growth_support::measured;

#[global_allocator]
static ALLOCATOR: growth_support::Counting = growth_support::Counting;

/// Growth allowed over a whole measured run: far below what one byte kept
/// per operation would add up to over [`ROUNDS`] operations.
const SLACK: isize = 48 * 1024;
const WARMUP: usize = 2_000;
const ROUNDS: usize = 100_000;

/// A provider whose bounded stores (the ring, the dedup window) fill during
/// the warm-up, so that what grows after it is what the loop leaks.
fn provider() -> MemoryProvider {
    MemoryProvider::with_limits(
        MemoryConfig {
            max_events: 64,
            ..MemoryConfig::default()
        },
        MemoryLimits {
            max_dedup_entries: 64,
            ..MemoryLimits::default()
        },
    )
    .unwrap()
}

fn event(p: &MemoryProvider, n: usize) -> Event {
    Event::new(
        p.build_subject("growth", "x"),
        "growth",
        "s",
        "test",
        serde_json::json!({ "n": n }),
    )
}

#[test]
fn ephemeral_subscriptions_opened_and_dropped_leave_nothing_behind() {
    measured(async {
        let p = provider();
        let filter = p.category_subject("growth");
        stays_flat!("subscribe, receive, drop", SLACK, WARMUP, ROUNDS, |n| {
            let mut sub = p.subscribe(&filter).await.unwrap();
            p.publish(&event(&p, n)).await.unwrap();
            assert!(sub.next().await.unwrap().is_some());
            if n % 2 == 0 {
                sub.close().await.unwrap();
            }
        });
        assert_eq!(p.info().await.unwrap().consumers, 0);
    });
}

#[test]
fn durables_created_and_unsubscribed_leave_nothing_behind() {
    measured(async {
        let p = provider();
        let filter = p.category_subject("growth");
        p.publish(&event(&p, 0)).await.unwrap();
        stays_flat!(
            "durable per name, then unsubscribe",
            SLACK,
            WARMUP,
            ROUNDS / 4,
            |n| {
                // a new name every time, as per-session durables have
                let name = format!("session-{n:08}-{}", "x".repeat(24));
                let mut sub = p.subscribe_durable(&name, &filter).await.unwrap();
                let pending = sub.next_manual_ack().await.unwrap().unwrap();
                if n % 3 == 0 {
                    // left unsettled: the deleted durable's in-flight state
                    drop(pending);
                } else {
                    pending.ack().await.unwrap();
                }
                if n % 2 == 0 {
                    // unsubscribed while its subscription is still open
                    p.unsubscribe(&name).await.unwrap();
                    drop(sub);
                } else {
                    drop(sub);
                    p.unsubscribe(&name).await.unwrap();
                }
            }
        );
        assert_eq!(p.info().await.unwrap().consumers, 0);
    });
}

#[test]
fn in_progress_and_nak_loops_on_one_delivery_keep_one_timer() {
    measured(async {
        let p = provider();
        let filter = p.category_subject("growth");
        let options = SubscribeOptions {
            ack_wait: Some(Duration::from_secs(3600)),
            ..SubscribeOptions::default()
        };
        let mut sub = p
            .subscribe_durable_with_options("worker", &filter, &options)
            .await
            .unwrap();
        p.publish(&event(&p, 0)).await.unwrap();
        let mut pending = sub.next_manual_ack().await.unwrap().unwrap();
        stays_flat!(
            "in_progress, nak, redelivery",
            SLACK,
            WARMUP,
            ROUNDS,
            |_n| {
                pending.in_progress().await.unwrap();
                pending.in_progress().await.unwrap();
                pending.nak().await.unwrap();
                // redelivered at once, to the same subscription
                pending = sub.next_manual_ack().await.unwrap().unwrap();
            }
        );
        assert_eq!(pending.received.num_delivered, (WARMUP + ROUNDS + 1) as u64);
    });
}

#[test]
fn publishing_unique_ids_keeps_the_dedup_window_bounded() {
    measured(async {
        let p = provider();
        stays_flat!("publish with a new dedup id", SLACK, WARMUP, ROUNDS, |n| {
            // long ids: kept out of line, so a kept one costs an allocation
            let options = PublishOptions {
                msg_id: Some(format!("{n:08}-{}", "d".repeat(64))),
                ..PublishOptions::default()
            };
            p.publish_with_options(&event(&p, n), &options)
                .await
                .unwrap();
        });
        assert_eq!(p.info().await.unwrap().messages, 64);
    });
}

/// What `MemoryLimits::max_dedup_entries` documents a remembered id to
/// cost: a window of 100,000 event ids (the default), filled by publishes
/// whose events are evicted at once, holds at most this many bytes per id
/// (the table and the order queue, both grown by doubling).
#[test]
fn a_full_dedup_window_costs_what_its_docs_say() {
    const IDS: usize = 100_000;
    const DOCUMENTED_MAX_BYTES_PER_ID: isize = 120;
    measured(async {
        let p = MemoryProvider::with_limits(
            MemoryConfig {
                max_events: 16,
                ..MemoryConfig::default()
            },
            MemoryLimits {
                max_dedup_entries: IDS,
                ..MemoryLimits::default()
            },
        )
        .unwrap();
        // the ring and every other structure at its steady size first
        for n in 0..64 {
            p.publish(&event(&p, n)).await.unwrap();
        }
        let before = growth_support::live();
        for n in 64..IDS {
            p.publish(&event(&p, n)).await.unwrap();
        }
        let per_id = (growth_support::live() - before) / (IDS - 64) as isize;
        assert!(
            per_id <= DOCUMENTED_MAX_BYTES_PER_ID,
            "a remembered event id costs {per_id} bytes, more than the {DOCUMENTED_MAX_BYTES_PER_ID} \
             documented"
        );
        assert_eq!(p.info().await.unwrap().messages, 16);
    });
}
