//! Waiting fetches woken by evictions of other categories, under real
//! concurrency: a lost wake-up stalls a subscription until its nak delay.
#![allow(clippy::unwrap_used)]

mod common;

use common::Rng;
use event_core::{Error, Event, EventProvider, SubscribeOptions};
use event_memory::{MemoryConfig, MemoryProvider};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Two subscriptions share a durable on `events.orders.>` holding one
/// unacknowledged delivery, and nak each delivery for an hour, so the next
/// orders event waits for retention to evict the nak'd one. Only
/// `events.users.*` publishes evict (they wake no orders waiter), one at a
/// time, while the fetches are cut short at random (dropped part-way, or
/// not yet waiting when the eviction comes). Each eviction of the nak'd
/// event must bring the next orders event out promptly, never a stall
/// until the nak delay. (Without the store cursor's wake-up, bf9ad63, it
/// stalls at the second eviction.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_of_another_category_keep_a_shared_durable_going() {
    for seed in 1..=30u64 {
        run(seed).await;
    }
}

async fn run(seed: u64) {
    const ORDERS: u64 = 20;
    let p = Arc::new(
        MemoryProvider::new(MemoryConfig {
            subject_prefix: "events".into(),
            max_events: usize::try_from(ORDERS).unwrap(),
            channel_capacity: 1000,
        })
        .unwrap(),
    );
    for n in 1..=ORDERS {
        p.publish(&Event::new("events.orders.x", "orders", "s", "t", n.into()))
            .await
            .unwrap();
    }
    let opts = SubscribeOptions {
        max_ack_pending: Some(1),
        ..SubscribeOptions::default()
    };
    // the highest sequence delivered so far
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for s in 0..2u64 {
        let mut sub = p
            .subscribe_durable_with_options("k", "events.orders.>", &opts)
            .await
            .unwrap();
        let delivered = delivered.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed * 7 + s + 1);
            loop {
                // mostly a fetch that waits as long as it takes (a lost
                // wake-up would stall it), sometimes one cut short
                let cut = if rng.below(3) == 0 {
                    Duration::from_micros(rng.below(2000))
                } else {
                    Duration::from_secs(60)
                };
                match tokio::time::timeout(cut, sub.next_manual_ack()).await {
                    Err(_) => {}
                    Ok(Ok(Some(pending))) => {
                        let seq = pending.received.sequence;
                        let before = delivered.swap(seq, Ordering::SeqCst);
                        assert_eq!(before + 1, seq, "seed {seed}: out of order or twice");
                        pending
                            .nak_with_delay(Duration::from_secs(3600))
                            .await
                            .unwrap();
                    }
                    // the evicted nak'd delivery
                    Ok(Err(Error::Lagged { missed })) => assert_eq!(missed, 1),
                    other => panic!("seed {seed}: {other:?}"),
                }
                if rng.below(4) == 0 {
                    tokio::time::sleep(Duration::from_micros(rng.below(500))).await;
                }
            }
        }));
    }
    let wait_for = |seq: u64| {
        let delivered = delivered.clone();
        async move {
            let start = std::time::Instant::now();
            while delivered.load(Ordering::SeqCst) < seq {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "seed {seed}: stalled before sequence {seq}"
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };
    wait_for(1).await;
    for n in 1..ORDERS {
        // evicts sequence n, the nak'd one: n + 1 comes out
        p.publish(&Event::new("events.users.x", "users", "s", "t", n.into()))
            .await
            .unwrap();
        wait_for(n + 1).await;
    }
    for t in tasks {
        t.abort();
    }
}
