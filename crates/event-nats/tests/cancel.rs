//! Cancellation against a real `nats-server`: provider calls dropped
//! part-way (a `select!` branch that lost, a `timeout`, a task aborted at
//! shutdown) leave nothing behind: no event lost or stored twice, no
//! consumer leaked, later calls work and do not hang.
//!
//! The harness polls a call's future exactly `k` times, a millisecond
//! apart (so the round trips it started make progress), then drops it, for
//! `k = 0, 1, 2, ...` until the call completes on its own, and checks the
//! invariants after every drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::NatsServer;
use event_core::{Event, EventProvider, SubscribeOptions, Subscription};
use event_nats::NatsProvider;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

macro_rules! server {
    ($name:expr) => {
        match NatsServer::start($name) {
            Some(s) => s,
            None => return,
        }
    };
}

/// Polls `fut` `polls` times, a millisecond apart, then drops it;
/// `Some(output)` when it completed within those polls.
async fn poll_then_drop<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for poll in 0..polls {
        if poll > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(out) = polled {
            return Some(out);
        }
    }
    None
}

/// Runs `$call` (an expression making a fresh future) under the harness
/// for `k = 0, 1, ...` until it completes, running `$check` (with `k`)
/// after each drop; evaluates to the output.
macro_rules! sweep {
    ($call:expr) => {
        sweep!($call, |_k| {})
    };
    ($call:expr, |$k:ident| $check:expr) => {{
        let mut $k = 0;
        loop {
            if let Some(out) = poll_then_drop($call, $k).await {
                break out;
            }
            $check;
            $k += 1;
            assert!($k < 2_000, "{} did not complete", stringify!($call));
        }
    }};
}

fn event(p: &NatsProvider, n: u64) -> Event {
    common::numbered_event(p, "cancel", n)
}

/// Waits (bounded) until the stream has `expected` consumers.
async fn await_consumers(p: &NatsProvider, expected: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let consumers = p.info().await.unwrap().consumers;
        if consumers == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: {consumers} consumers on the stream, expected {expected} (a consumer leaked)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An ephemeral `subscribe` dropped after it sent the creation request and
/// before the answer came: the server created the consumer, and nobody
/// deleted it; it stayed on the stream (counted by `info()`, holding its
/// share of the server's consumer limit) until the inactivity threshold,
/// two minutes later. It is deleted now, as the subscription's own drop
/// does.
#[tokio::test]
async fn a_dropped_ephemeral_subscribe_leaves_no_consumer() {
    let server = server!("a_dropped_ephemeral_subscribe_leaves_no_consumer");
    let p = NatsProvider::connect(common::config(&server, "cancelsub"))
        .await
        .unwrap();
    let filter = p.category_subject("cancel");
    let sub = sweep!(p.subscribe(&filter), |k| {
        await_consumers(&p, 0, &format!("subscribe dropped after {k} polls")).await
    })
    .unwrap();
    await_consumers(&p, 1, "subscribed").await;
    drop(sub);
    await_consumers(&p, 0, "subscription dropped").await;
}

/// A `history` dropped while it creates its short-lived consumer (filtered
/// or not) deletes it: it used to stay on the stream until its inactivity
/// threshold, ten seconds later. A completed history is right.
#[tokio::test]
async fn a_dropped_history_leaves_no_consumer() {
    let server = server!("a_dropped_history_leaves_no_consumer");
    let p = NatsProvider::connect(common::config(&server, "cancelhist"))
        .await
        .unwrap();
    for n in 0..30 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    let filter = p.build_subject("cancel", "x");
    for filter in [None, Some(filter.as_str())] {
        let newest = sweep!(p.history(filter, 5), |k| {
            await_consumers(
                &p,
                0,
                &format!("history({filter:?}) dropped after {k} polls"),
            )
            .await
        })
        .unwrap();
        let ns: Vec<u64> = newest
            .iter()
            .map(|e| e.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, [29, 28, 27, 26, 25]);
        await_consumers(&p, 0, "history done").await;
    }
}

/// `close` dropped part-way still lets the ephemeral consumer go (closed or
/// dropped, the subscription deletes it), a second `close` returns, and the
/// subscription yields nothing more.
#[tokio::test]
async fn a_dropped_close_leaves_no_consumer() {
    let server = server!("a_dropped_close_leaves_no_consumer");
    let p = NatsProvider::connect(common::config(&server, "cancelclose"))
        .await
        .unwrap();
    let filter = p.category_subject("cancel");
    for k in 0..4 {
        let mut sub = p.subscribe(&filter).await.unwrap();
        p.publish(&event(&p, k as u64)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert!(got.is_some());
        let closed = poll_then_drop(sub.close(), k).await;
        let again = tokio::time::timeout(Duration::from_secs(10), sub.close())
            .await
            .expect("a second close hung");
        if let Some(closed) = closed {
            closed.unwrap();
        }
        again.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .expect("next after close hung")
                .unwrap()
                .is_none()
        );
        drop(sub);
        await_consumers(&p, 0, &format!("close dropped after {k} polls")).await;
    }
}

/// A `close` dropped before its delete request could go out (the client's
/// outgoing queue full: a busy publisher, a stalled server) marked the
/// subscription closed, so neither a second `close` (which returned `Ok` at
/// once) nor the subscription's drop deleted the ephemeral consumer: it
/// stayed on the stream for two minutes. Now the second `close` finishes
/// the job, and a drop without one deletes it as for any unclosed
/// ephemeral.
#[tokio::test(flavor = "current_thread")]
async fn a_close_dropped_before_its_delete_went_out_still_deletes_the_consumer() {
    let server = server!("a_close_dropped_before_its_delete_went_out_still_deletes_the_consumer");
    let p = NatsProvider::connect(common::config(&server, "cancelfull"))
        .await
        .unwrap();
    let filter = p.category_subject("cancel");
    for second_close in [true, false] {
        let mut sub = p.subscribe(&filter).await.unwrap();
        await_consumers(&p, 1, "subscribed").await;
        // fill the client's outgoing queue: on this single-threaded runtime
        // the connection task cannot drain it until this task yields
        let client = p.client().clone();
        let mut full = false;
        for _ in 0..100_000 {
            // unconstrained: a Pending from tokio's cooperative budget is
            // not a full queue
            let publish = client.publish("flood.x", bytes::Bytes::from_static(b"x"));
            if tokio::task::unconstrained(poll_then_drop(publish, 1))
                .await
                .is_none()
            {
                full = true;
                break;
            }
        }
        assert!(full, "the client's queue never filled");
        assert!(
            tokio::task::unconstrained(poll_then_drop(sub.close(), 1))
                .await
                .is_none(),
            "close went through a full queue"
        );
        if second_close {
            tokio::time::timeout(Duration::from_secs(10), sub.close())
                .await
                .expect("the second close hung")
                .unwrap();
        }
        drop(sub);
        await_consumers(
            &p,
            0,
            &format!("close dropped (second close: {second_close})"),
        )
        .await;
    }
}

/// A durable's `close` dropped while it waits for its round trip (before
/// handing back the events it fetched ahead) used to drop those events
/// unseen: they came back only after the ack wait (a minute here). Now
/// they stay with the subscription, and the next `close` hands them back:
/// the durable's next subscription gets them at once.
#[tokio::test]
async fn a_dropped_durable_close_still_hands_back_what_it_fetched_ahead() {
    let server = server!("a_dropped_durable_close_still_hands_back_what_it_fetched_ahead");
    let p = NatsProvider::connect(common::config(&server, "cancelhand"))
        .await
        .unwrap();
    let filter = p.category_subject("cancel");
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    };
    for n in 0..40 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &options)
        .await
        .unwrap();
    // past the warm-up, pulls fetch ahead
    for n in 0..12 {
        let pending = sub.next_manual_ack().await.unwrap().unwrap();
        assert_eq!(pending.event().payload["n"], n);
        pending.ack().await.unwrap();
    }
    assert!(
        poll_then_drop(sub.close(), 1).await.is_none(),
        "close finished without a round trip"
    );
    tokio::time::timeout(Duration::from_secs(10), sub.close())
        .await
        .expect("the second close hung")
        .unwrap();
    drop(sub);
    let mut again = p
        .subscribe_durable_with_options("d", &filter, &options)
        .await
        .unwrap();
    let mut rest = Vec::new();
    while rest.len() < 28 {
        let pending = tokio::time::timeout(Duration::from_secs(3), again.next_manual_ack())
            .await
            .unwrap_or_else(|_| {
                panic!("events fetched ahead are held back until the ack wait; got {rest:?}")
            })
            .unwrap()
            .unwrap();
        rest.push(pending.event().payload["n"].as_u64().unwrap());
        pending.ack().await.unwrap();
    }
    rest.sort_unstable();
    assert_eq!(rest, (12..40).collect::<Vec<u64>>());
}

/// `next` and `next_manual_ack` dropped at every poll while a pull is
/// outstanding, and while the event arrives, lose nothing: each event comes
/// once, on its first delivery (the ack wait is a minute: a lost delivery
/// would not come back in time).
#[tokio::test]
async fn dropped_fetches_with_a_pull_outstanding_lose_nothing() {
    let server = server!("dropped_fetches_with_a_pull_outstanding_lose_nothing");
    let p = NatsProvider::connect(common::config(&server, "cancelnext"))
        .await
        .unwrap();
    let filter = p.category_subject("cancel");
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    };
    let mut manual = p
        .subscribe_durable_with_options("m", &filter, &options)
        .await
        .unwrap();
    let mut auto = p
        .subscribe_durable_with_options("a", &filter, &options)
        .await
        .unwrap();
    let (mut got_manual, mut got_auto) = (Vec::new(), Vec::new());
    for n in 0..6u64 {
        // waiting with nothing to deliver: a pull goes out and stays open
        assert!(poll_then_drop(manual.next_manual_ack(), 5).await.is_none());
        assert!(poll_then_drop(auto.next(), 5).await.is_none());
        p.publish(&event(&p, n)).await.unwrap();
        let pending = sweep!(manual.next_manual_ack()).unwrap().unwrap();
        got_manual.push((
            pending.event().payload["n"].as_u64().unwrap(),
            pending.received.num_delivered,
        ));
        pending.ack().await.unwrap();
        let received = sweep!(auto.next()).unwrap().unwrap();
        got_auto.push((
            received.event.payload["n"].as_u64().unwrap(),
            received.num_delivered,
        ));
    }
    let expected: Vec<(u64, u64)> = (0..6).map(|n| (n, 1)).collect();
    assert_eq!(got_manual, expected, "manual");
    assert_eq!(got_auto, expected, "auto-ack");
    manual.close().await.unwrap();
    auto.close().await.unwrap();
}

/// A `publish_batch` dropped mid-window (some publishes sent, their acks
/// pending), then retried with the same events, stores each event once:
/// the retry is deduplicated by event id and reports the same sequences.
#[tokio::test]
async fn a_dropped_batch_retried_stores_each_event_once() {
    let server = server!("a_dropped_batch_retried_stores_each_event_once");
    let p = NatsProvider::connect(common::config(&server, "cancelbatch"))
        .await
        .unwrap();
    let mut total = 0u64;
    for k in [0usize, 1, 2, 3, 5, 8, 13] {
        let batch: Vec<Event> = (0..20).map(|i| event(&p, k as u64 * 100 + i)).collect();
        let dropped = poll_then_drop(p.publish_batch(&batch), k).await;
        let retried: Vec<u64> = p
            .publish_batch(&batch)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        total += 20;
        let info = p.info().await.unwrap();
        assert_eq!(
            info.messages, total,
            "batch dropped after {k} polls and retried: an event stored twice or lost"
        );
        if let Some(done) = dropped {
            let done: Vec<u64> = done.unwrap().into_iter().map(|r| r.unwrap()).collect();
            assert_eq!(done, retried);
        }
        // in order, no gaps: each event once
        assert!(retried.windows(2).all(|w| w[0] < w[1]), "{retried:?}");
    }
}

/// Dropping subscriptions and the provider inside a runtime, outside one,
/// and while the runtime shuts down (a task holding a subscription waiting
/// on a pull) never panics.
#[test]
fn drops_inside_outside_and_during_runtime_shutdown_do_not_panic() {
    let Some(server) = NatsServer::start("nats_drops_during_runtime_shutdown") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (p, ephemeral, durable) = runtime.block_on(async {
        let p = NatsProvider::connect(common::config(&server, "canceldrop"))
            .await
            .unwrap();
        let filter = p.category_subject("cancel");
        let ephemeral = p.subscribe(&filter).await.unwrap();
        let durable = p.subscribe_durable("d", &filter).await.unwrap();
        for held in [
            p.subscribe(&filter).await.unwrap(),
            p.subscribe_durable("h", &filter).await.unwrap(),
        ] {
            tokio::spawn(async move {
                let mut held: Box<dyn Subscription> = held;
                let _ = held.next().await;
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        (p, ephemeral, durable)
    });
    // the runtime goes away with tasks holding waiting subscriptions
    drop(runtime);
    drop(ephemeral);
    drop(durable);
    drop(p);
}
