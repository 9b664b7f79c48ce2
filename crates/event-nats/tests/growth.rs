//! Long-running use against a real `nats-server` must not grow the
//! client process: each loop here repeats an operation that adds state
//! (durables created and deleted, ephemeral subscriptions, pulls, history
//! consumers) with what normally removes it, and checks that the bytes the
//! process holds and the tasks it runs stay flat.
//!
//! A dedicated test binary: its global allocator counts live bytes, and the
//! tests take turns (a lock) so that each measures only itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::NatsServer;
use event_core::{Event, EventProvider};
use event_nats::NatsProvider;
use std::time::Duration;

#[path = "../../event-core/tests/growth_support/mod.rs"]
#[macro_use]
mod growth_support;
use growth_support::measured;

#[global_allocator]
static ALLOCATOR: growth_support::Counting = growth_support::Counting;

/// Growth allowed over a whole measured run: far below what 64 bytes kept
/// per operation add up to over [`ROUNDS`] operations.
const SLACK: isize = 32 * 1024;
const WARMUP: usize = 300;
const ROUNDS: usize = 1_500;
/// Before each measurement: time for background consumer deletions and
/// the client's unsubscribes.
const PAUSE: Duration = Duration::from_millis(200);

macro_rules! server {
    ($name:expr) => {
        match NatsServer::start($name) {
            Some(s) => s,
            None => return,
        }
    };
}

fn event(p: &NatsProvider, n: usize) -> Event {
    Event::new(
        p.build_subject("growth", "x"),
        "growth",
        "s",
        "test",
        serde_json::json!({ "n": n }),
    )
}

/// Waits (10 s at most) until the stream has no consumer left: those of
/// dropped subscriptions and of `history` are deleted from spawned tasks.
async fn no_consumers_left(p: &NatsProvider) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let consumers = p.info().await.unwrap().consumers;
        if consumers == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{consumers} consumers left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Durables with a new name each (per-session or per-job durables),
/// subscribed and deleted: the provider's record of deleted durables (which
/// ends subscriptions opened on a durable before it was deleted) must not
/// keep one entry per name ever deleted.
#[test]
fn durables_created_and_deleted_under_new_names_leave_nothing_behind() {
    measured(async {
        let server = server!("durables_created_and_deleted_under_new_names_leave_nothing_behind");
        let p = NatsProvider::connect(common::config(&server, "gdur"))
            .await
            .unwrap();
        let filter = p.category_subject("growth");
        let suffix = "s".repeat(96);
        stays_flat!(
            "durable per name, then unsubscribe",
            SLACK,
            WARMUP,
            ROUNDS,
            PAUSE,
            |n| {
                let name = format!("job-{n:06}-{suffix}");
                let sub = p.subscribe_durable(&name, &filter).await.unwrap();
                if n % 2 == 0 {
                    drop(sub);
                    p.unsubscribe(&name).await.unwrap();
                } else {
                    // deleted while a subscription on it is open
                    p.unsubscribe(&name).await.unwrap();
                    drop(sub);
                }
            }
        );
    });
}

/// Ephemeral subscriptions, each reading an event (a pull and its inbox),
/// then closed or dropped (the consumer deleted from a background task):
/// nothing stays, neither memory nor tasks.
#[test]
fn ephemeral_subscriptions_opened_and_dropped_leave_nothing_behind() {
    measured(async {
        let server = server!("ephemeral_subscriptions_opened_and_dropped_leave_nothing_behind");
        let p = NatsProvider::connect(common::config(&server, "geph"))
            .await
            .unwrap();
        let filter = p.category_subject("growth");
        stays_flat!(
            "subscribe, receive, close or drop",
            SLACK,
            WARMUP,
            ROUNDS / 2,
            PAUSE,
            |n| {
                let mut sub = p.subscribe(&filter).await.unwrap();
                p.publish(&event(&p, n)).await.unwrap();
                let got = sub.next_manual_ack().await.unwrap().unwrap();
                got.ack().await.unwrap();
                if n % 2 == 0 {
                    sub.close().await.unwrap();
                }
            }
        );
        // the dropped ones' consumers were deleted too
        no_consumers_left(&p).await;
    });
}

/// `history`, filtered and not (short-lived consumers, direct gets), again
/// and again.
#[test]
fn history_calls_leave_nothing_behind() {
    measured(async {
        let server = server!("history_calls_leave_nothing_behind");
        let p = NatsProvider::connect(common::config(&server, "ghist"))
            .await
            .unwrap();
        for n in 0..20 {
            p.publish(&event(&p, n)).await.unwrap();
        }
        let filter = p.category_subject("growth");
        stays_flat!("history", SLACK, WARMUP, ROUNDS / 2, PAUSE, |n| {
            let filter = (n % 2 == 0).then_some(filter.as_str());
            assert_eq!(p.history(filter, 5).await.unwrap().len(), 5);
        });
        no_consumers_left(&p).await;
    });
}
