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
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[path = "../../event-core/tests/growth_support/mod.rs"]
mod growth_support;
use growth_support::LIVE;

#[global_allocator]
static ALLOCATOR: growth_support::Counting = growth_support::Counting;

/// One measurement at a time.
static TURN: Mutex<()> = Mutex::new(());

/// Growth allowed over a whole measured run: far below what 64 bytes kept
/// per operation add up to over [`ROUNDS`] operations.
const SLACK: isize = 32 * 1024;
const WARMUP: usize = 300;
const ROUNDS: usize = 1_500;

/// Runs `$body` (with `$n` counting) [`WARMUP`] times, to reach the steady
/// state (the client's buffers at their working size), then `$rounds` times
/// more, and asserts that live bytes did not grow by more than [`SLACK`]
/// and that no task was left running. Expanded in place, so the body may
/// borrow and `.await`.
macro_rules! stays_flat {
    ($what:expr, $rounds:expr, |$n:ident| $body:block) => {{
        for $n in 0..WARMUP {
            $body
        }
        settle(None).await;
        let tasks = alive_tasks();
        let before = LIVE.load(Ordering::Relaxed);
        for $n in WARMUP..WARMUP + $rounds {
            $body
        }
        let now = settle(Some(tasks)).await;
        assert!(now <= tasks, "{}: {tasks} tasks before, {now} after", $what);
        let grown = LIVE.load(Ordering::Relaxed) - before;
        assert!(
            grown <= SLACK,
            "{}: {grown} bytes more are held after {} more rounds ({} per round)",
            $what,
            $rounds,
            grown / isize::try_from($rounds).unwrap_or(1)
        );
    }};
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Lets background work started by the loop (consumer deletions, the
/// client's unsubscribes) finish: a moment, and then, given `tasks`, until
/// no more tasks than that are alive (10 s at most: a task that outlives
/// its work never ends); returns the tasks alive then.
async fn settle(tasks: Option<usize>) -> usize {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tasks.is_some_and(|tasks| alive_tasks() > tasks) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    alive_tasks()
}

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `test` on a runtime of its own, when no other test of this binary
/// runs.
fn measured(test: impl std::future::Future<Output = ()>) {
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    runtime().block_on(test);
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
        stays_flat!("durable per name, then unsubscribe", ROUNDS, |n| {
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
        });
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
        stays_flat!("subscribe, receive, close or drop", ROUNDS / 2, |n| {
            let mut sub = p.subscribe(&filter).await.unwrap();
            p.publish(&event(&p, n)).await.unwrap();
            let got = sub.next_manual_ack().await.unwrap().unwrap();
            got.ack().await.unwrap();
            if n % 2 == 0 {
                sub.close().await.unwrap();
            }
        });
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
        stays_flat!("history", ROUNDS / 2, |n| {
            let filter = (n % 2 == 0).then_some(filter.as_str());
            assert_eq!(p.history(filter, 5).await.unwrap().len(), 5);
        });
        no_consumers_left(&p).await;
    });
}
