//! The consumer runner over NATS when the server goes away: shutdown with
//! handlers in flight and the server down.
#![allow(clippy::unwrap_used)]

#[path = "../crates/event-nats/tests/common/mod.rs"]
mod common;

use a3s_event::consumer::ConsumerConfig;
use a3s_event::{Event, EventBus, EventProvider, ReceivedEvent, SubscribeOptions};
use common::NatsServer;
use event_nats::{NatsConfig, NatsProvider};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_shutdown_with_the_server_down_is_bounded_and_acks_only_finished_handlers() {
    let Some(mut server) = NatsServer::start(
        "runner_shutdown_with_the_server_down_is_bounded_and_acks_only_finished_handlers",
    ) else {
        return;
    };
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "rsd")
    };
    let p = NatsProvider::connect(config).await.unwrap();
    let bus = EventBus::new(p.clone());
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(3)),
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject("t");
    let sub = p
        .subscribe_durable_with_options("runner", &filter, &options)
        .await
        .unwrap();
    // each handler waits for a permit of its own
    let started: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let finished: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handler = {
        let (started, finished, gate) = (started.clone(), finished.clone(), gate.clone());
        move |received: ReceivedEvent| {
            let (started, finished, gate) = (started.clone(), finished.clone(), gate.clone());
            async move {
                let n = received.event.payload["n"].as_u64().unwrap();
                started.lock().unwrap().insert(n);
                gate.acquire().await.unwrap().forget();
                finished.lock().unwrap().insert(n);
                Ok::<(), String>(())
            }
        }
    };
    let consumer = bus
        .consume_subscription(sub, options.clone(), handler, ConsumerConfig::default())
        .unwrap();
    for n in 0..3 {
        let event = Event::new(
            p.build_subject("t", "x"),
            "t",
            format!("e{n}"),
            "test",
            json!({ "n": n }),
        );
        p.publish(&event).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "handlers never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.kill();
    // one handler finishes while the server is down: its ack is queued
    gate.add_permits(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while finished.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the released handler never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let began = Instant::now();
    let report = consumer.shutdown(Duration::from_secs(2)).await;
    let took = began.elapsed();
    // the 2 s deadline for the handlers, then closing the subscription:
    // bounded by one 2 s request timeout although the server is gone (it
    // was two when the runner's pull was still open)
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(
        (report.acked, report.aborted, report.retried),
        (1, 2, 0),
        "{report:?}"
    );
    assert_eq!(
        report.dead_lettered + report.terminated + report.dlq_failed + report.released,
        0,
        "{report:?}"
    );

    // the unfinished handlers' events come back once the server does
    let unfinished: BTreeSet<u64> = started
        .lock()
        .unwrap()
        .difference(&finished.lock().unwrap())
        .copied()
        .collect();
    server.restart();
    let mut sub = p
        .subscribe_durable_with_options("runner", &filter, &options)
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while sub.is_err() {
        assert!(
            Instant::now() < deadline,
            "no reconnection: {:?}",
            sub.err()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        sub = p
            .subscribe_durable_with_options("runner", &filter, &options)
            .await;
    }
    let mut sub = sub.unwrap();
    let mut redelivered = BTreeSet::new();
    while !unfinished.is_subset(&redelivered) {
        assert!(
            Instant::now() < deadline,
            "never redelivered: {unfinished:?}, got {redelivered:?}"
        );
        match tokio::time::timeout(Duration::from_secs(2), sub.next_manual_ack()).await {
            Ok(Ok(Some(pending))) => {
                redelivered.insert(pending.received.event.payload["n"].as_u64().unwrap());
                pending.ack().await.unwrap();
            }
            Ok(Ok(None)) => panic!("the durable subscription ended"),
            Ok(Err(_)) | Err(_) => {}
        }
    }
}

/// Events of the slowing-down tests: the first `SLOWING_FAST` are handled
/// at once (the subscription then fetches ahead), the rest slowly.
const SLOWING_EVENTS: u64 = 36;
const SLOWING_FAST: u64 = 30;

/// Waits, up to 30 s, until `handled()` (the event numbers handled so far)
/// holds `count` distinct numbers; panics naming those it holds.
async fn wait_until_all_handled(count: u64, handled: impl Fn() -> BTreeSet<u64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let handled = handled();
        if handled.len() as u64 == count {
            return;
        }
        assert!(Instant::now() < deadline, "handled only {handled:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes events numbered `range` (payload `{"n": n}`) on `t.x`.
async fn publish_numbered(p: &NatsProvider, range: std::ops::Range<u64>) {
    for n in range {
        let event = Event::new(
            p.build_subject("t", "x"),
            "t",
            format!("e{n}"),
            "test",
            json!({ "n": n }),
        );
        p.publish(&event).await.unwrap();
    }
}

/// A runner whose handlers become slower than the ack wait, after a fast
/// start that made the subscription fetch events ahead: while every handler
/// slot is busy the runner does not ask for the next event, so what was
/// fetched ahead used to reach its ack wait in the buffer and came back as
/// a redelivery, handled a second time although nothing failed. The runner
/// now keeps the buffer alive while it waits for a slot, so each event is
/// handled once, on its first delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_slowing_down_handles_events_fetched_ahead_once() {
    let Some(server) = NatsServer::start("a_runner_slowing_down_handles_events_fetched_ahead_once")
    else {
        return;
    };
    let p = NatsProvider::connect(common::config(&server, "slow"))
        .await
        .unwrap();
    let bus = EventBus::new(p.clone());
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject("t");
    publish_numbered(&p, 0..SLOWING_EVENTS).await;
    let sub = p
        .subscribe_durable_with_options("slow", &filter, &options)
        .await
        .unwrap();
    // (n, num_delivered) of every handler call
    let calls: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let handler = {
        let calls = calls.clone();
        move |received: ReceivedEvent| {
            let calls = calls.clone();
            async move {
                let n = received.event.payload["n"].as_u64().unwrap();
                calls.lock().unwrap().push((n, received.num_delivered));
                if n >= SLOWING_FAST {
                    // longer than the ack wait: the runner extends it for
                    // this event, and the events fetched ahead wait
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                Ok::<(), String>(())
            }
        }
    };
    let consumer = bus
        .consume_subscription(
            sub,
            options.clone(),
            handler,
            ConsumerConfig::default().concurrency(1),
        )
        .unwrap();
    wait_until_all_handled(SLOWING_EVENTS, || {
        calls.lock().unwrap().iter().map(|c| c.0).collect()
    })
    .await;
    // anything redelivered would come within another ack wait or two
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let report = consumer.shutdown(Duration::from_secs(5)).await;
    let calls = calls.lock().unwrap().clone();
    let again: Vec<(u64, u64)> = calls.iter().copied().filter(|c| c.1 > 1).collect();
    assert!(again.is_empty(), "handled again: {again:?} ({report:?})");
    assert_eq!(calls.len() as u64, SLOWING_EVENTS, "{calls:?}");
    assert_eq!(report.acked, SLOWING_EVENTS, "{report:?}");
}

/// A broker feed whose routings become slow after a fast start (which made
/// the NATS subscription fetch events ahead): the feed takes an event only
/// once a routing slot is free, so while its one slot is busy the events
/// fetched ahead waited with their ack wait running, and were redelivered
/// and routed twice although every routing is shorter than the ack wait.
/// The subscription keeps them alive on each call (what this test needs),
/// and the feed also while it waits for a slot (for routings close to the
/// ack wait).
#[cfg(feature = "routing")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_slowing_down_routes_events_fetched_ahead_once() {
    use a3s_event::routing::{Broker, BrokerConfig, InProcessSink, Trigger, TriggerFilter};

    let Some(server) = NatsServer::start("a_feed_slowing_down_routes_events_fetched_ahead_once")
    else {
        return;
    };
    let p = NatsProvider::connect(common::config(&server, "feed"))
        .await
        .unwrap();
    publish_numbered(&p, 0..SLOWING_EVENTS).await;
    // every routing, by event number
    let routed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = Arc::new(InProcessSink::new("slow", {
        let routed = routed.clone();
        move |e: Event| {
            let routed = routed.clone();
            async move {
                let n = e.payload["n"].as_u64().unwrap();
                routed.lock().unwrap().push(n);
                if n >= SLOWING_FAST {
                    // under the 1 s ack wait, but the events fetched ahead
                    // wait for several of these
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                Ok::<(), a3s_event::Error>(())
            }
        }
    }));
    let broker = Broker::with_config(BrokerConfig {
        feed_concurrency: 1,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker
        .add_trigger(Trigger::new("all", TriggerFilter::all(), sink))
        .unwrap();
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    let feed = broker
        .feed_durable(&p, "router", &p.category_subject("t"), &options)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (routed.lock().unwrap().len() as u64) < SLOWING_EVENTS {
        assert!(
            Instant::now() < deadline,
            "routed only {:?}",
            routed.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // anything redelivered would come within another ack wait or two
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stats = feed.stop().await.unwrap();
    let routed = routed.lock().unwrap().clone();
    let mut twice: Vec<u64> = routed.clone();
    twice.sort_unstable();
    twice.dedup();
    assert_eq!(twice.len() as u64, SLOWING_EVENTS, "{routed:?}");
    assert_eq!(
        routed.len() as u64,
        SLOWING_EVENTS,
        "routed twice: {routed:?} ({stats:?})"
    );
}

/// A rolling deploy: two processes (two connections) share one durable
/// through their consumer runners. The old one opened it with a long ack
/// wait, the new one with a shorter wait, which (whichever subscribes last
/// sets the durable's options) JetStream then applies to every delivery,
/// those the old process holds included. The old process kept keeping its
/// deliveries alive at half the wait it had read when it subscribed, too
/// rarely for the new wait: handlers longer than the new wait saw their
/// events redelivered (and handled twice) although nothing failed. Its
/// subscription now reads the durable again while in use, and the waits
/// its deliveries report follow, so every event is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_shortened_by_another_process_keeps_the_old_processes_deliveries() {
    const EVENTS: u64 = 8;
    let Some(server) = NatsServer::start(
        "a_durable_shortened_by_another_process_keeps_the_old_processes_deliveries",
    ) else {
        return;
    };
    let config = common::config(&server, "roll");
    let old = NatsProvider::connect(config.clone()).await.unwrap();
    let new = NatsProvider::connect(config).await.unwrap();
    let filter = old.category_subject("t");
    let long = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(6)),
        ..SubscribeOptions::default()
    };
    let short = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(2)),
        ..SubscribeOptions::default()
    };
    // (process, n, num_delivered) of every handler call
    type Call = (&'static str, u64, u64);
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let handler = |process: &'static str| {
        let calls = calls.clone();
        move |received: ReceivedEvent| {
            let calls = calls.clone();
            async move {
                let n = received.event.payload["n"].as_u64().unwrap();
                calls
                    .lock()
                    .unwrap()
                    .push((process, n, received.num_delivered));
                // longer than the new ack wait: kept alive by the runner
                tokio::time::sleep(Duration::from_secs(4)).await;
                Ok::<(), String>(())
            }
        }
    };
    let old_sub = old
        .subscribe_durable_with_options("roll", &filter, &long)
        .await
        .unwrap();
    let old_consumer = EventBus::new(old.clone())
        .consume_subscription(
            old_sub,
            long.clone(),
            handler("old"),
            ConsumerConfig::default().concurrency(4),
        )
        .unwrap();
    // the old process has read its settings well before the change
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let new_sub = new
        .subscribe_durable_with_options("roll", &filter, &short)
        .await
        .unwrap();
    let new_consumer = EventBus::new(new.clone())
        .consume_subscription(
            new_sub,
            short.clone(),
            handler("new"),
            ConsumerConfig::default().concurrency(4),
        )
        .unwrap();
    publish_numbered(&old, 0..EVENTS).await;
    wait_until_all_handled(EVENTS, || {
        calls.lock().unwrap().iter().map(|c| c.1).collect()
    })
    .await;
    // every handler finishes; a redelivery would come within the new wait
    tokio::time::sleep(Duration::from_secs(7)).await;
    let old_report = old_consumer.shutdown(Duration::from_secs(5)).await;
    let new_report = new_consumer.shutdown(Duration::from_secs(5)).await;
    let calls = calls.lock().unwrap().clone();
    assert!(
        calls.iter().any(|c| c.0 == "old"),
        "the old process handled nothing, the scenario did not happen: {calls:?}"
    );
    let again: Vec<_> = calls.iter().copied().filter(|c| c.2 > 1).collect();
    assert!(
        again.is_empty(),
        "handled again: {again:?} (every call: {calls:?}; old {old_report:?}, new {new_report:?})"
    );
    assert_eq!(calls.len() as u64, EVENTS, "{calls:?}");
    assert_eq!(
        old_report.acked + new_report.acked,
        EVENTS,
        "old {old_report:?}, new {new_report:?}"
    );
}
