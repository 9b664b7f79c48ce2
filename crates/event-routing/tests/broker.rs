//! Broker: parallel delivery, retries and backoff, timeouts, dead-lettering,
//! trigger changes during routing, the queue and its full policies, feeds.

#![allow(clippy::unwrap_used)] // test helpers

use event_core::{Error, Event, EventProvider, EventRouter, SubscribeOptions};
use event_memory::MemoryProvider;
use event_routing::{
    BackoffPolicy, Broker, BrokerConfig, CollectorSink, DeliverySpec, EventSink, FailingSink,
    InProcessSink, MAX_BROKER_NESTING, QueueFullError, QueueFullPolicy, Trigger, TriggerFilter,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

fn event(subject: &str, event_type: &str) -> Event {
    Event::typed(
        subject,
        "orders",
        event_type,
        1,
        "s",
        "shop",
        json!({"n": 1}),
    )
}

fn sleeping_sink(name: &str, delay: Duration) -> Arc<InProcessSink> {
    Arc::new(InProcessSink::new(name, move |_| async move {
        tokio::time::sleep(delay).await;
        Ok(())
    }))
}

/// A sink that blocks each delivery until a permit is added to the gate,
/// and signals `started` when a delivery begins.
fn gated_sink(
    gate: Arc<Semaphore>,
    started: Arc<Semaphore>,
    done: Arc<CollectorSink>,
) -> Arc<InProcessSink> {
    Arc::new(InProcessSink::new("gated", move |e| {
        let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
        async move {
            started.add_permits(1);
            gate.acquire().await.unwrap().forget();
            done.deliver(&e).await
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn deliveries_to_matching_triggers_run_in_parallel() {
    let broker = Broker::new();
    for i in 0..3 {
        broker
            .add_trigger(Trigger::new(
                format!("slow{i}"),
                TriggerFilter::by_subject("events.orders.>"),
                sleeping_sink("slow", Duration::from_millis(100)),
            ))
            .unwrap();
    }
    let start = Instant::now();
    let result = broker.route(&event("events.orders.created", "t")).await;
    assert_eq!((result.matched, result.delivered, result.failed), (3, 3, 0));
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "sequential would take 300 ms"
    );
}

#[tokio::test]
async fn events_matching_no_trigger_are_not_delivered() {
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    broker
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::by_type("paid"),
            sink.clone(),
        ))
        .unwrap();
    let result = broker
        .route(&event("events.orders.created", "created"))
        .await;
    assert_eq!(result, Default::default());
    assert!(result.is_settled());
    assert!(sink.is_empty());
}

#[tokio::test(start_paused = true)]
async fn retries_follow_exponential_backoff_then_succeed() {
    let broker = Broker::new();
    let sink = Arc::new(FailingSink::fail_first("flaky", "503", 3));
    broker
        .add_trigger(
            Trigger::new("t", TriggerFilter::all(), sink.clone()).with_delivery(
                DeliverySpec::new()
                    .with_retries(5)
                    .with_backoff(BackoffPolicy::Exponential, Duration::from_millis(100)),
            ),
        )
        .unwrap();
    let start = Instant::now();
    let result = broker.route(&event("events.orders.created", "t")).await;
    assert_eq!((result.delivered, result.failed), (1, 0));
    let offsets: Vec<_> = sink.attempt_times().iter().map(|t| *t - start).collect();
    assert_eq!(
        offsets,
        [0, 100, 300, 700].map(Duration::from_millis).to_vec()
    );
    assert_eq!(broker.metrics().retries, 3);
}

#[tokio::test(start_paused = true)]
async fn linear_backoff_is_capped_and_exhaustion_dead_letters_with_details() {
    let broker = Broker::new();
    let sink = Arc::new(FailingSink::new("down", "connection refused"));
    let dead = Arc::new(CollectorSink::new("dead"));
    broker
        .add_trigger(
            Trigger::new("to-down", TriggerFilter::all(), sink.clone()).with_delivery(
                DeliverySpec::new()
                    .with_retries(4)
                    .with_backoff(BackoffPolicy::Linear, Duration::from_millis(100))
                    .with_backoff_cap(Duration::from_millis(250))
                    .with_dead_letter_sink(dead.clone()),
            ),
        )
        .unwrap();
    let start = Instant::now();
    let original = event("events.orders.created", "t");
    let result = broker.route(&original).await;
    assert_eq!(
        (result.matched, result.failed, result.dead_lettered),
        (1, 1, 1)
    );
    assert!(result.is_settled());
    let offsets: Vec<_> = sink.attempt_times().iter().map(|t| *t - start).collect();
    assert_eq!(
        offsets,
        [0, 100, 300, 550, 800].map(Duration::from_millis).to_vec()
    );

    let letters = dead.events();
    assert_eq!(letters.len(), 1);
    let m = &letters[0].metadata;
    assert_eq!(letters[0].id, original.id);
    assert_eq!(letters[0].payload, original.payload);
    assert!(m["dlqreason"].contains("connection refused"), "{m:?}");
    assert_eq!(m["dlqattempts"], "5");
    assert_eq!(m["dlqtrigger"], "to-down");
    assert_eq!(m["dlqoriginalsubject"], "events.orders.created");
    assert!(m["dlqfirstfailureat"].parse::<u64>().unwrap() > 0);
    let metrics = broker.metrics();
    assert_eq!(
        (metrics.failed, metrics.dead_lettered, metrics.retries),
        (1, 1, 4)
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_time_out_and_count_as_failures() {
    let broker = Broker::new();
    let dead = Arc::new(CollectorSink::new("dead"));
    broker
        .add_trigger(
            Trigger::new(
                "slow",
                TriggerFilter::all(),
                sleeping_sink("slow", Duration::from_secs(10)),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_retries(1)
                    .with_backoff(BackoffPolicy::Linear, Duration::from_millis(500))
                    .with_timeout(Some(Duration::from_secs(1)))
                    .with_dead_letter_sink(dead.clone()),
            ),
        )
        .unwrap();
    let start = Instant::now();
    let result = broker.route(&event("events.orders.created", "t")).await;
    assert_eq!(start.elapsed(), Duration::from_millis(2500));
    assert_eq!((result.failed, result.dead_lettered), (1, 1));
    assert_eq!(broker.metrics().timeouts, 2);
    assert!(dead.events()[0].metadata["dlqreason"].contains("timed out"));
}

#[tokio::test]
async fn failed_dead_letter_sink_leaves_the_delivery_failed_and_counted() {
    let broker = Broker::new();
    broker
        .add_trigger(
            Trigger::new(
                "t",
                TriggerFilter::all(),
                Arc::new(FailingSink::new("a", "x")),
            )
            .with_delivery(
                DeliverySpec::new().with_dead_letter_sink(Arc::new(FailingSink::new("dls", "y"))),
            ),
        )
        .unwrap();
    broker
        .add_trigger(Trigger::new(
            "no-dls",
            TriggerFilter::all(),
            Arc::new(FailingSink::new("b", "x")),
        ))
        .unwrap();
    let result = broker.route(&event("events.orders.created", "t")).await;
    assert_eq!(
        (result.matched, result.failed, result.dead_lettered),
        (2, 2, 0)
    );
    assert!(!result.is_settled());
    assert_eq!(broker.metrics().dead_letter_failures, 2);
}

#[tokio::test]
async fn a_panicking_sink_is_a_failed_delivery() {
    let broker = Broker::new();
    let dead = Arc::new(CollectorSink::new("dead"));
    let panicking = Arc::new(InProcessSink::new("boom", |_| async { panic!("sink bug") }));
    broker
        .add_trigger(
            Trigger::new("t", TriggerFilter::all(), panicking)
                .with_delivery(DeliverySpec::new().with_dead_letter_sink(dead.clone())),
        )
        .unwrap();
    let result = broker.route(&event("events.orders.created", "t")).await;
    assert_eq!(result.dead_lettered, 1);
    assert!(dead.events()[0].metadata["dlqreason"].contains("sink bug"));
}

#[tokio::test]
async fn trigger_names_are_unique_and_removal_reports() {
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    broker
        .add_trigger(Trigger::new("a", TriggerFilter::all(), sink.clone()))
        .unwrap();
    let err = broker
        .add_trigger(Trigger::new("a", TriggerFilter::all(), sink.clone()))
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }));
    assert!(matches!(
        broker.add_trigger(Trigger::new("", TriggerFilter::all(), sink.clone())),
        Err(Error::InvalidConfig { .. })
    ));
    broker
        .add_trigger(Trigger::new("b", TriggerFilter::all(), sink))
        .unwrap();
    assert_eq!(broker.trigger_count(), 2);
    assert_eq!(broker.trigger_names(), ["a", "b"]);
    assert!(broker.remove_trigger("a"));
    assert!(!broker.remove_trigger("a"));
    assert_eq!(broker.trigger_names(), ["b"]);
}

#[tokio::test]
async fn trigger_changes_do_not_wait_for_deliveries_in_progress() {
    let broker = Broker::new();
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(Semaphore::new(0));
    let done = Arc::new(CollectorSink::new("done"));
    broker
        .add_trigger(Trigger::new(
            "blocked",
            TriggerFilter::all(),
            gated_sink(gate.clone(), started.clone(), done.clone()),
        ))
        .unwrap();
    let routing = tokio::spawn({
        let broker = broker.clone();
        async move { broker.route(&event("events.orders.created", "t")).await }
    });
    started.acquire().await.unwrap().forget();

    // The delivery is blocked; changes complete anyway.
    let other = Arc::new(CollectorSink::new("other"));
    broker
        .add_trigger(Trigger::new("new", TriggerFilter::all(), other.clone()))
        .unwrap();
    assert!(broker.remove_trigger("blocked"));
    assert_eq!(broker.trigger_names(), ["new"]);

    // A routing in progress finishes with the set it started with.
    gate.add_permits(1);
    let result = routing.await.unwrap();
    assert_eq!((result.matched, result.delivered), (1, 1));
    assert_eq!(done.len(), 1);
    assert!(other.is_empty());

    // New routings see the new set.
    let result = broker.route(&event("events.orders.created", "t")).await;
    assert_eq!((result.matched, result.delivered), (1, 1));
    assert_eq!(other.len(), 1);
    assert_eq!(done.len(), 1);
}

#[tokio::test]
async fn concurrent_trigger_changes_and_routing_stay_consistent() {
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    broker
        .add_trigger(Trigger::new("stable", TriggerFilter::all(), sink.clone()))
        .unwrap();
    let churn = tokio::spawn({
        let broker = broker.clone();
        let sink = sink.clone();
        async move {
            for i in 0..200 {
                broker
                    .add_trigger(Trigger::new(
                        format!("t{i}"),
                        TriggerFilter::by_type("never"),
                        sink.clone(),
                    ))
                    .unwrap();
                tokio::task::yield_now().await;
                assert!(broker.remove_trigger(&format!("t{i}")));
            }
        }
    });
    for _ in 0..200 {
        let result = broker.route(&event("events.orders.created", "t")).await;
        assert_eq!((result.matched, result.delivered), (1, 1));
        tokio::task::yield_now().await;
    }
    churn.await.unwrap();
    assert_eq!(broker.trigger_names(), ["stable"]);
    assert_eq!(sink.len(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_router_hook_enqueues_without_waiting_for_slow_sinks() {
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    let slow = Arc::new(InProcessSink::new("slow", {
        let sink = sink.clone();
        move |e| {
            let sink = sink.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                sink.deliver(&e).await
            }
        }
    }));
    broker
        .add_trigger(Trigger::new("slow", TriggerFilter::all(), slow))
        .unwrap();
    let router: Arc<dyn EventRouter> = Arc::new(broker.clone());
    let start = Instant::now();
    for i in 0..10 {
        router
            .route_published(Arc::new(event("events.orders.created", "t")), i)
            .await
            .unwrap();
    }
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "publishing waited for a sink"
    );
    broker.wait_idle().await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "deliveries ran in parallel"
    );
    assert_eq!(sink.len(), 10);
    let m = broker.metrics();
    assert_eq!(
        (
            m.enqueued,
            m.routed,
            m.delivered,
            m.in_flight,
            m.queue_depth
        ),
        (10, 10, 10, 0, 0)
    );
}

struct Blocked {
    broker: Broker,
    gate: Arc<Semaphore>,
    done: Arc<CollectorSink>,
}

/// A broker with one worker and a one-slot queue whose worker is busy: the
/// next event fills the queue, the one after finds it full.
async fn blocked_broker(policy: QueueFullPolicy) -> Blocked {
    let broker = Broker::with_config(BrokerConfig {
        queue_capacity: 1,
        workers: 1,
        full_policy: policy,
        ..BrokerConfig::default()
    })
    .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(Semaphore::new(0));
    let done = Arc::new(CollectorSink::new("done"));
    broker
        .add_trigger(Trigger::new(
            "gated",
            TriggerFilter::all(),
            gated_sink(gate.clone(), started.clone(), done.clone()),
        ))
        .unwrap();
    broker
        .enqueue(Arc::new(event("events.a.one", "t")))
        .await
        .unwrap();
    started.acquire().await.unwrap().forget(); // the worker holds event one
    broker
        .enqueue(Arc::new(event("events.a.two", "t")))
        .await
        .unwrap(); // queued
    assert_eq!(broker.metrics().queue_depth, 1);
    Blocked { broker, gate, done }
}

#[tokio::test]
async fn full_queue_with_reject_refuses_visibly() {
    let Blocked { broker, gate, done } = blocked_broker(QueueFullPolicy::Reject).await;
    let err = broker
        .enqueue(Arc::new(event("events.a.three", "t")))
        .await
        .unwrap_err();
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(
        source.downcast_ref::<QueueFullError>(),
        Some(&QueueFullError { capacity: 1 })
    );
    let m = broker.metrics();
    assert_eq!((m.queue_full, m.rejected, m.enqueued), (1, 1, 2));
    gate.add_permits(10);
    broker.wait_idle().await;
    let subjects: Vec<_> = done.events().into_iter().map(|e| e.subject).collect();
    assert_eq!(subjects, ["events.a.one", "events.a.two"]);
}

#[tokio::test]
async fn full_queue_with_wait_applies_backpressure_and_loses_nothing() {
    let Blocked { broker, gate, done } = blocked_broker(QueueFullPolicy::Wait).await;
    let third = tokio::spawn({
        let broker = broker.clone();
        async move { broker.enqueue(Arc::new(event("events.a.three", "t"))).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!third.is_finished(), "the publisher should wait for room");
    assert_eq!(broker.metrics().queue_full, 1);
    gate.add_permits(10);
    third.await.unwrap().unwrap();
    broker.wait_idle().await;
    assert_eq!(done.len(), 3);
    let m = broker.metrics();
    assert_eq!((m.queue_full, m.rejected, m.enqueued), (1, 0, 3));
}

#[tokio::test]
async fn full_queue_with_wait_for_times_out() {
    let Blocked { broker, gate, done } = blocked_broker(QueueFullPolicy::WaitFor {
        timeout: Duration::from_millis(30),
    })
    .await;
    let err = broker
        .enqueue(Arc::new(event("events.a.three", "t")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(broker.metrics().rejected, 1);
    gate.add_permits(10);
    broker.wait_idle().await;
    assert_eq!(done.len(), 2);
}

/// Brokers in a ring, one per entry of `policies` (one worker, a one-slot
/// queue): broker `i`'s trigger `ping` forwards each ping, once `gates[i]`
/// gives a permit, as a `pong` into the next broker, whose trigger `pong`
/// collects it (the returned sinks, one per broker). Returns once every
/// worker holds a ping at its gate and every queue holds another: full.
async fn full_forwarding_ring(
    policies: &[QueueFullPolicy],
    gates: &[Arc<Semaphore>],
) -> (Vec<Broker>, Vec<Arc<CollectorSink>>) {
    let ring: Vec<Broker> = policies
        .iter()
        .map(|&full_policy| {
            Broker::with_config(BrokerConfig {
                queue_capacity: 1,
                workers: 1,
                full_policy,
                ..BrokerConfig::default()
            })
            .unwrap()
        })
        .collect();
    let started = Arc::new(Semaphore::new(0));
    let pongs: Vec<Arc<CollectorSink>> = (0..ring.len())
        .map(|i| Arc::new(CollectorSink::new(format!("pongs {i}"))))
        .collect();
    for (i, broker) in ring.iter().enumerate() {
        let next = ring[(i + 1) % ring.len()].clone();
        let (gate, started) = (gates[i].clone(), started.clone());
        let forward = Arc::new(InProcessSink::new("forward", move |e: Event| {
            let (next, gate, started) = (next.clone(), gate.clone(), started.clone());
            async move {
                started.add_permits(1);
                gate.acquire().await.unwrap().forget();
                let mut pong = e.clone();
                pong.event_type = "pong".to_owned();
                next.enqueue(Arc::new(pong)).await
            }
        }));
        broker
            .add_trigger(
                Trigger::new("ping", TriggerFilter::by_type("ping"), forward)
                    .with_delivery(DeliverySpec::new().with_timeout(None)),
            )
            .unwrap();
        broker
            .add_trigger(Trigger::new(
                "pong",
                TriggerFilter::by_type("pong"),
                pongs[i].clone(),
            ))
            .unwrap();
    }
    for broker in &ring {
        broker
            .enqueue(Arc::new(event("events.a.one", "ping")))
            .await
            .unwrap();
    }
    started
        .acquire_many(ring.len() as u32)
        .await
        .unwrap()
        .forget();
    for broker in &ring {
        broker
            .enqueue(Arc::new(event("events.a.two", "ping")))
            .await
            .unwrap();
        assert_eq!(broker.metrics().queue_depth, 1);
    }
    (ring, pongs)
}

/// Brokers in a ring, each routing's sink forwarding into the next broker's
/// full queue (policy `Wait`, one worker, a one-slot queue): the last
/// worker to find its target full would close a cycle of workers waiting
/// for each other's queues, so its forward waits for room in a task of its
/// own instead. Before, every worker waited for ever (here: until the
/// per-attempt timeout, 30 s by default, then the forwards failed).
async fn forwarding_ring_makes_progress(brokers: usize) {
    let gate = Arc::new(Semaphore::new(0));
    let (ring, pongs) = full_forwarding_ring(
        &vec![QueueFullPolicy::Wait; brokers],
        &vec![gate.clone(); brokers],
    )
    .await;
    gate.add_permits(2 * brokers);
    tokio::time::timeout(Duration::from_secs(10), async {
        for broker in &ring {
            broker.wait_idle().await;
        }
    })
    .await
    .expect("the ring's workers wait for each other's full queues");
    for (i, pongs) in pongs.iter().enumerate() {
        assert_eq!(pongs.len(), 2, "broker {i}");
    }
    let metrics: Vec<_> = ring.iter().map(Broker::metrics).collect();
    let deferred: u64 = metrics.iter().map(|m| m.deferred).sum();
    assert!(deferred >= 1, "{metrics:?}");
    for m in &metrics {
        assert_eq!((m.failed, m.rejected, m.in_flight), (0, 0, 0), "{m:?}");
    }
}

/// A routing forwarding into another broker's full queue with no cycle
/// (the other broker's workers wait for nothing of the first's) waits for
/// room: backpressure, not a task per forward.
#[tokio::test]
async fn a_routing_forwarding_into_another_full_broker_waits_for_room() {
    let Blocked {
        broker: target,
        gate,
        done,
    } = blocked_broker(QueueFullPolicy::Wait).await;
    let source = Broker::new();
    let forwarded = Arc::new(Semaphore::new(0));
    source
        .add_trigger(Trigger::new(
            "forward",
            TriggerFilter::all(),
            Arc::new(InProcessSink::new("forward", {
                let (target, forwarded) = (target.clone(), forwarded.clone());
                move |e: Event| {
                    let (target, forwarded) = (target.clone(), forwarded.clone());
                    async move {
                        target.enqueue(Arc::new(e)).await?;
                        forwarded.add_permits(1);
                        Ok(())
                    }
                }
            })),
        ))
        .unwrap();
    source
        .enqueue(Arc::new(event("events.a.three", "t")))
        .await
        .unwrap();
    while target.metrics().queue_full == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(forwarded.available_permits(), 0, "the forward should wait");
    assert_eq!(target.metrics().deferred, 0);
    gate.add_permits(10);
    forwarded.acquire().await.unwrap().forget();
    source.wait_idle().await;
    target.wait_idle().await;
    assert_eq!(done.len(), 3);
    let m = target.metrics();
    assert_eq!((m.queue_full, m.deferred, m.enqueued), (1, 0, 3), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_forwarding_into_each_others_full_queues_make_progress() {
    forwarding_ring_makes_progress(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_forwarding_in_a_ring_of_full_queues_make_progress() {
    forwarding_ring_makes_progress(3).await;
}

#[tokio::test]
async fn shutdown_routes_what_was_queued_then_refuses() {
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    broker
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::all(),
            sleeping_sink_into(sink.clone()),
        ))
        .unwrap();
    for _ in 0..20 {
        broker
            .enqueue(Arc::new(event("events.a.b", "t")))
            .await
            .unwrap();
    }
    broker.shutdown().await;
    assert_eq!(sink.len(), 20);
    let err = broker
        .enqueue(Arc::new(event("events.a.b", "t")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed(_)));
    broker.shutdown().await; // idempotent
    // Direct routing still works.
    assert_eq!(broker.route(&event("events.a.b", "t")).await.delivered, 1);
}

#[tokio::test(start_paused = true)]
async fn every_shutdown_call_waits_for_the_queued_events() {
    // A second (concurrent, or retried after a timed-out) shutdown returned
    // at once while the first was still routing: a caller exiting then lost
    // the deliveries in flight.
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    broker
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::all(),
            sleeping_sink_into(sink.clone()),
        ))
        .unwrap();
    for _ in 0..3 {
        broker
            .enqueue(Arc::new(event("events.a.b", "t")))
            .await
            .unwrap();
    }
    let first = tokio::spawn({
        let broker = broker.clone();
        async move { broker.shutdown().await }
    });
    tokio::task::yield_now().await; // the first shutdown has begun
    broker.shutdown().await;
    assert_eq!(
        sink.len(),
        3,
        "the second shutdown returned before the routings ended"
    );
    first.await.unwrap();

    // A shutdown given up on (a timeout), then called again.
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    broker
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::all(),
            sleeping_sink("slow", Duration::from_secs(10)),
        ))
        .unwrap();
    broker
        .add_trigger(Trigger::new("c", TriggerFilter::all(), sink.clone()))
        .unwrap();
    broker
        .enqueue(Arc::new(event("events.a.b", "t")))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), broker.shutdown())
            .await
            .is_err()
    );
    let start = Instant::now();
    broker.shutdown().await;
    assert_eq!(start.elapsed(), Duration::from_secs(9));
    assert_eq!(broker.metrics().in_flight, 0);
}

fn sleeping_sink_into(sink: Arc<CollectorSink>) -> Arc<InProcessSink> {
    Arc::new(InProcessSink::new("sleepy", move |e| {
        let sink = sink.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            sink.deliver(&e).await
        }
    }))
}

#[test]
fn invalid_configs_are_refused() {
    for config in [
        BrokerConfig {
            queue_capacity: 0,
            ..Default::default()
        },
        BrokerConfig {
            workers: 0,
            ..Default::default()
        },
        BrokerConfig {
            feed_concurrency: 0,
            ..Default::default()
        },
        // Routed nothing, ever (every event counted as a routing loop).
        BrokerConfig {
            max_hops: 0,
            ..Default::default()
        },
    ] {
        assert!(
            matches!(
                Broker::with_config(config.clone()),
                Err(Error::InvalidConfig { .. })
            ),
            "{config:?}"
        );
    }
    let err = Broker::new()
        .add_trigger(
            Trigger::new("t", TriggerFilter::all(), Arc::new(CollectorSink::new("c")))
                .with_delivery(DeliverySpec::new().with_timeout(Some(Duration::ZERO))),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }));
}

#[tokio::test]
async fn enqueue_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let broker = Broker::new();
    let result = std::thread::spawn(move || {
        futures_executor_block_on(broker.enqueue(Arc::new(event("events.a.b", "t"))))
    })
    .join()
    .unwrap();
    assert!(matches!(result, Err(Error::InvalidConfig { .. })));
}

/// A minimal executor for one future (no Tokio runtime on this thread).
fn futures_executor_block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

#[tokio::test]
async fn a_broker_is_a_sink() {
    let inner = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    inner
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::by_type("ok"),
            sink.clone(),
        ))
        .unwrap();
    inner
        .add_trigger(Trigger::new(
            "f",
            TriggerFilter::by_type("bad"),
            Arc::new(FailingSink::new("f", "x")),
        ))
        .unwrap();
    let as_sink: Arc<dyn EventSink> = Arc::new(inner);
    as_sink.deliver(&event("events.a.b", "ok")).await.unwrap();
    assert_eq!(sink.len(), 1);
    assert!(as_sink.deliver(&event("events.a.b", "bad")).await.is_err());
}

#[tokio::test]
async fn brokers_delivering_to_each_other_in_a_cycle_stop_at_max_hops() {
    // A broker whose trigger delivers to itself (or to a broker delivering
    // back) recursed until the stack overflowed: the process aborted.
    let broker = Broker::new();
    let seen = Arc::new(CollectorSink::new("seen"));
    broker
        .add_trigger(Trigger::new("seen", TriggerFilter::all(), seen.clone()))
        .unwrap();
    broker
        .add_trigger(Trigger::new(
            "again",
            TriggerFilter::all(),
            Arc::new(broker.clone()),
        ))
        .unwrap();
    let result = broker.route(&event("events.a.b", "t")).await;
    assert_eq!(result.delivered, 2);
    // Routed max_hops times in all, as a topic sink loop is.
    let max_hops = broker.config().max_hops as usize;
    assert_eq!(seen.len(), max_hops);
    assert_eq!(broker.metrics().hop_limit, 1);

    // Two brokers.
    let a = Broker::new();
    let b = Broker::new();
    a.add_trigger(Trigger::new(
        "to-b",
        TriggerFilter::all(),
        Arc::new(b.clone()),
    ))
    .unwrap();
    b.add_trigger(Trigger::new(
        "to-a",
        TriggerFilter::all(),
        Arc::new(a.clone()),
    ))
    .unwrap();
    a.route(&event("events.a.b", "t")).await;
    assert_eq!(a.metrics().hop_limit + b.metrics().hop_limit, 1);
    assert_eq!(a.metrics().routed + b.metrics().routed, max_hops as u64);
}

#[tokio::test]
async fn a_broker_cycle_under_a_huge_max_hops_stops_at_the_nesting_limit() {
    // Each broker-in-a-broker level is a nested poll on the task's stack: a
    // cycle allowed 100,000 hops overflowed it and aborted the process.
    let broker = Broker::with_config(BrokerConfig {
        max_hops: 100_000,
        ..BrokerConfig::default()
    })
    .unwrap();
    let seen = Arc::new(CollectorSink::new("seen"));
    broker
        .add_trigger(Trigger::new("seen", TriggerFilter::all(), seen.clone()))
        .unwrap();
    broker
        .add_trigger(Trigger::new(
            "again",
            TriggerFilter::all(),
            Arc::new(broker.clone()),
        ))
        .unwrap();
    broker.route(&event("events.a.b", "t")).await;
    assert_eq!(seen.len(), MAX_BROKER_NESTING as usize);
    assert_eq!(broker.metrics().hop_limit, 1);
}

#[tokio::test]
async fn a_durable_feed_acks_after_delivery_or_dead_letter_and_resumes() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let broker = Broker::with_config(BrokerConfig {
        feed_retry_delay: Duration::from_millis(20),
        ..BrokerConfig::default()
    })
    .unwrap();
    let all = Arc::new(CollectorSink::new("all"));
    let dead = Arc::new(CollectorSink::new("dead"));
    broker
        .add_trigger(Trigger::new("all", TriggerFilter::all(), all.clone()))
        .unwrap();
    // Fails its first delivery with no retries and no dead-letter sink: the
    // event is nak'ed and must come back.
    broker
        .add_trigger(Trigger::new(
            "flaky",
            TriggerFilter::by_type("flaky"),
            Arc::new(FailingSink::fail_first("flaky", "x", 1)),
        ))
        .unwrap();
    // Always fails, but dead-letters: settled, acked.
    broker
        .add_trigger(
            Trigger::new(
                "broken",
                TriggerFilter::by_type("broken"),
                Arc::new(FailingSink::new("b", "x")),
            )
            .with_delivery(DeliverySpec::new().with_dead_letter_sink(dead.clone())),
        )
        .unwrap();

    // Published before the feed exists (by "another process").
    for t in ["plain", "flaky", "broken"] {
        provider
            .publish(&event("events.orders.x", t))
            .await
            .unwrap();
    }
    let feed = broker
        .feed_durable(
            &*provider,
            "router",
            "events.>",
            &SubscribeOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        all.wait_for(4, Duration::from_secs(5)).await,
        "flaky should come back"
    );
    // Let the acks land before stopping.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = feed.stop().await.unwrap();
    assert_eq!(
        (stats.received, stats.acked, stats.naked),
        (4, 3, 1),
        "{stats:?}"
    );
    assert_eq!(dead.len(), 1);
    // the same counts for Prometheus
    #[cfg(feature = "bus")]
    {
        let labels = event_bus::metrics::PrometheusLabels::new([("feed", "router")]).unwrap();
        let text = stats.to_prometheus_with_labels(&labels);
        for sample in [
            "a3s_feed_received_total{feed=\"router\"} 4\n",
            "a3s_feed_acked_total{feed=\"router\"} 3\n",
            "a3s_feed_naked_total{feed=\"router\"} 1\n",
            "a3s_feed_errors_total{feed=\"router\"} 0\n",
            "a3s_feed_aborted_total{feed=\"router\"} 0\n",
        ] {
            assert!(text.contains(sample), "{sample}: {text}");
        }
    }

    // Restart: the durable resumes after the acked events only.
    provider
        .publish(&event("events.orders.x", "later"))
        .await
        .unwrap();
    let feed = broker
        .feed_durable(
            &*provider,
            "router",
            "events.>",
            &SubscribeOptions::default(),
        )
        .await
        .unwrap();
    assert!(all.wait_for(5, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = feed.stop().await.unwrap();
    assert_eq!((stats.received, stats.acked), (1, 1), "{stats:?}");
    assert_eq!(all.events().last().unwrap().event_type, "later");
}

#[tokio::test(start_paused = true)]
async fn the_dispatcher_takes_an_idle_brokers_first_event_at_once_and_lingers_only_under_load() {
    for linger in [Duration::ZERO, Duration::from_millis(1)] {
        let broker = Broker::with_config(BrokerConfig {
            dispatch_linger: linger,
            ..BrokerConfig::default()
        })
        .unwrap();
        let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
        broker
            .add_trigger(Trigger::new(
                "t",
                TriggerFilter::all(),
                Arc::new(InProcessSink::new("clock", {
                    let times = times.clone();
                    move |_| {
                        let times = times.clone();
                        async move {
                            times.lock().push(Instant::now());
                            Ok(())
                        }
                    }
                })),
            ))
            .unwrap();
        let start = Instant::now();
        broker
            .enqueue(Arc::new(event("events.a.b", "t")))
            .await
            .unwrap();
        broker.wait_idle().await;
        assert_eq!(
            times.lock()[0],
            start,
            "linger {linger:?}: first event delayed"
        );
        // A burst, then a pause, then one more: everything is routed, none
        // later than one linger (plus the timer's 1 ms granularity) after it
        // was queued.
        let mut queued = vec![start];
        for _ in 0..50 {
            queued.push(Instant::now());
            broker
                .enqueue(Arc::new(event("events.a.b", "t")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let late = Instant::now();
        broker
            .enqueue(Arc::new(event("events.a.b", "t")))
            .await
            .unwrap();
        broker.wait_idle().await;
        let times = times.lock().clone();
        assert_eq!(times.len(), 52);
        assert_eq!(
            *times.last().unwrap(),
            late,
            "linger {linger:?}: idle broker delayed"
        );
        for (routed, queued) in times.iter().zip(&queued) {
            assert!(
                *routed - *queued <= linger + Duration::from_millis(1),
                "{:?}",
                *routed - *queued
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn queued_bursts_route_at_most_workers_at_a_time_and_all_settle() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let broker = Broker::with_config(BrokerConfig {
        workers: 3,
        ..BrokerConfig::default()
    })
    .unwrap();
    let (now, max, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    broker
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::all(),
            Arc::new(InProcessSink::new("counting", {
                let (now, max, done) = (now.clone(), max.clone(), done.clone());
                move |_| {
                    let (now, max, done) = (now.clone(), max.clone(), done.clone());
                    async move {
                        let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(running, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                }
            })),
        ))
        .unwrap();
    for _ in 0..50 {
        broker
            .enqueue(Arc::new(event("events.a.b", "t")))
            .await
            .unwrap();
    }
    // Two waiters at once: both return when the last event settles.
    let other = tokio::spawn({
        let broker = broker.clone();
        async move { broker.wait_idle().await }
    });
    broker.wait_idle().await;
    other.await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 50);
    assert_eq!(max.load(Ordering::SeqCst), 3);
    let m = broker.metrics();
    assert_eq!(
        (m.enqueued, m.delivered, m.in_flight, m.queue_depth),
        (50, 50, 0, 0)
    );
}

/// A subscription whose durable was deleted behind its back: every call
/// reports `NotFound` (as NATS does) or `Closed`.
struct Gone {
    error: fn() -> Error,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl event_core::Subscription for Gone {
    async fn next(&mut self) -> event_core::Result<Option<event_core::ReceivedEvent>> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err((self.error)())
    }
    async fn next_manual_ack(&mut self) -> event_core::Result<Option<event_core::PendingEvent>> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err((self.error)())
    }
    async fn close(&mut self) -> event_core::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_feed_whose_consumer_is_gone_ends_instead_of_retrying_forever() {
    let broker = Broker::new();
    let cases: [fn() -> Error; 2] = [
        || Error::NotFound {
            kind: "consumer",
            name: "router".into(),
        },
        || Error::Closed("subscription closed".into()),
    ];
    for error in cases {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let feed = broker.feed(Box::new(Gone {
            error,
            calls: calls.clone(),
        }));
        // Ten retry delays: a feed that retries would still be running.
        tokio::time::sleep(broker.config().feed_retry_delay * 10).await;
        assert!(feed.is_finished(), "{:?}: the feed kept retrying", error());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let stats = feed.stop().await.unwrap();
        assert_eq!(stats.errors, 1, "{stats:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_count_each_event_and_each_delivery_once() {
    // Queued events matching four triggers: one delivering, one retried then
    // dead-lettered, one timing out into its dead-letter sink, one failing
    // with nowhere to go. Every counter is per event or per delivery.
    let broker = Broker::new();
    let ok = Arc::new(CollectorSink::new("ok"));
    let dead = Arc::new(CollectorSink::new("dead"));
    broker
        .add_trigger(Trigger::new("ok", TriggerFilter::all(), ok.clone()))
        .unwrap();
    broker
        .add_trigger(
            Trigger::new(
                "retried",
                TriggerFilter::all(),
                Arc::new(FailingSink::new("down", "503")),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_retries(2)
                    .with_dead_letter_sink(dead.clone()),
            ),
        )
        .unwrap();
    broker
        .add_trigger(
            Trigger::new(
                "slow",
                TriggerFilter::all(),
                sleeping_sink("slow", Duration::from_secs(10)),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_timeout(Some(Duration::from_secs(1)))
                    .with_dead_letter_sink(dead.clone()),
            ),
        )
        .unwrap();
    broker
        .add_trigger(Trigger::new(
            "lost",
            TriggerFilter::all(),
            Arc::new(FailingSink::new("gone", "x")),
        ))
        .unwrap();
    const EVENTS: u64 = 40;
    for _ in 0..EVENTS {
        broker
            .enqueue(Arc::new(event("events.a.b", "t")))
            .await
            .unwrap();
    }
    broker.wait_idle().await;
    let m = broker.metrics();
    assert_eq!(
        (m.enqueued, m.routed, m.matched),
        (EVENTS, EVENTS, 4 * EVENTS)
    );
    assert_eq!(m.delivered, EVENTS);
    assert_eq!(m.failed, 3 * EVENTS);
    assert_eq!(m.dead_lettered, 2 * EVENTS);
    assert_eq!(m.dead_letter_failures, EVENTS);
    assert_eq!((m.retries, m.timeouts), (2 * EVENTS, EVENTS));
    assert_eq!(
        (m.queue_full, m.rejected, m.deferred, m.hop_limit),
        (0, 0, 0, 0)
    );
    assert_eq!((m.queue_depth, m.in_flight, m.triggers), (0, 0, 4));
    assert_eq!(m.matched, m.delivered + m.failed);
    assert_eq!(m.failed, m.dead_lettered + m.dead_letter_failures);
    assert_eq!(ok.len() as u64, EVENTS);
    assert_eq!(dead.len() as u64, 2 * EVENTS);
}

#[tokio::test(start_paused = true)]
async fn queue_depth_counts_the_events_a_shutdown_is_still_routing() {
    // Once shutdown began, `queue_depth` read 0 while the dispatcher still
    // had the queued events to route: an operator watching the drain saw
    // an empty queue.
    let Blocked { broker, gate, done } = blocked_broker(QueueFullPolicy::Wait).await;
    let shutdown = tokio::spawn({
        let broker = broker.clone();
        async move { broker.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!shutdown.is_finished());
    let m = broker.metrics();
    assert_eq!((m.queue_depth, m.in_flight), (1, 2), "{m:?}");
    gate.add_permits(10);
    shutdown.await.unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!(broker.metrics().queue_depth, 0);
}

#[test]
fn a_broker_keeps_routing_after_the_runtime_that_first_used_it_is_gone() {
    // The queue's dispatcher runs on the runtime of the first `enqueue`.
    // Once that runtime was dropped (a setup runtime, one `#[tokio::test]`
    // of several sharing a broker), every later enqueue was refused as
    // "the broker is shut down", though nobody shut it down, and the events
    // lost with the runtime stayed pending: `wait_idle` never returned.
    let broker = Broker::with_config(BrokerConfig {
        workers: 1,
        ..BrokerConfig::default()
    })
    .unwrap();
    let sink = Arc::new(CollectorSink::new("c"));
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(Semaphore::new(0));
    broker
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::by_type("gated"),
            gated_sink(gate, started.clone(), sink.clone()),
        ))
        .unwrap();
    broker
        .add_trigger(Trigger::new(
            "c",
            TriggerFilter::by_type("plain"),
            sink.clone(),
        ))
        .unwrap();
    {
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        first.block_on(async {
            // One routing that never ends, one event queued behind it.
            broker
                .enqueue(Arc::new(event("events.a.b", "gated")))
                .await
                .unwrap();
            started.acquire().await.unwrap().forget();
            broker
                .enqueue(Arc::new(event("events.a.b", "gated")))
                .await
                .unwrap();
        });
    } // the runtime, its dispatcher and the routing are gone
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        broker
            .enqueue(Arc::new(event("events.a.b", "plain")))
            .await
            .expect("the broker was never shut down");
        tokio::time::timeout(Duration::from_secs(10), broker.wait_idle())
            .await
            .expect("events lost with the first runtime are still pending");
        assert_eq!(sink.len(), 1);
        let m = broker.metrics();
        assert_eq!((m.in_flight, m.queue_depth), (0, 0), "{m:?}");
    });
}

#[tokio::test]
async fn a_queue_capacity_too_large_for_the_queue_is_refused_not_a_panic() {
    // Validation passed it; the first enqueue then panicked creating the
    // channel (Tokio's limit is `usize::MAX >> 3` slots).
    let config = BrokerConfig {
        queue_capacity: usize::MAX,
        ..BrokerConfig::default()
    };
    assert!(
        matches!(
            Broker::with_config(config),
            Err(Error::InvalidConfig { ref field, .. }) if field == "queue_capacity"
        ),
        "accepted"
    );
    // The largest accepted one works.
    let broker = Broker::with_config(BrokerConfig {
        queue_capacity: Semaphore::MAX_PERMITS,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker
        .enqueue(Arc::new(event("events.a.b", "t")))
        .await
        .unwrap();
    broker.wait_idle().await;
}

#[test]
fn a_publisher_waiting_for_room_when_the_dispatchers_runtime_goes_is_queued_not_refused() {
    // A publisher waiting for room in a full queue (policy `Wait`) on one
    // runtime while the dispatcher's runtime was dropped got "the broker is
    // shut down", though nobody shut it down and the next enqueue starts a
    // dispatcher again: its event was refused for nothing.
    let broker = Broker::with_config(BrokerConfig {
        queue_capacity: 1,
        workers: 1,
        ..BrokerConfig::default()
    })
    .unwrap();
    let sink = Arc::new(CollectorSink::new("c"));
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(Semaphore::new(0));
    broker
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::by_type("gated"),
            gated_sink(gate, started.clone(), sink.clone()),
        ))
        .unwrap();
    broker
        .add_trigger(Trigger::new(
            "c",
            TriggerFilter::by_type("plain"),
            sink.clone(),
        ))
        .unwrap();
    let (full_tx, full_rx) = std::sync::mpsc::channel();
    let (drop_tx, drop_rx) = tokio::sync::oneshot::channel::<()>();
    let first = std::thread::spawn({
        let broker = broker.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                // a routing that never ends, an event filling the queue
                broker
                    .enqueue(Arc::new(event("events.a.b", "gated")))
                    .await
                    .unwrap();
                started.acquire().await.unwrap().forget();
                broker
                    .enqueue(Arc::new(event("events.a.b", "gated")))
                    .await
                    .unwrap();
                full_tx.send(()).unwrap();
                let _ = drop_rx.await;
            });
        } // the runtime, its dispatcher and the routing are gone
    });
    full_rx.recv().unwrap();
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let waiting = tokio::spawn({
            let broker = broker.clone();
            async move { broker.enqueue(Arc::new(event("events.a.b", "plain"))).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the queue should be full");
        drop_tx.send(()).unwrap();
        tokio::task::spawn_blocking(move || first.join().unwrap())
            .await
            .unwrap();
        let queued = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting publisher was not answered")
            .unwrap();
        assert!(queued.is_ok(), "refused: {queued:?}");
        tokio::time::timeout(Duration::from_secs(10), broker.wait_idle())
            .await
            .expect("still pending");
        assert_eq!(sink.len(), 1);
    });
}

/// Four events `e0`..`e3` stored, and a broker with `concurrency` feed
/// slots and one trigger on every event delivering to `sink`, fed from the
/// durable `router` with `ack_wait`.
async fn feeding_four_events(
    concurrency: usize,
    sink: Arc<dyn EventSink>,
    ack_wait: Duration,
) -> (Arc<dyn EventProvider>, Broker, event_routing::BrokerFeed) {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let broker = Broker::with_config(BrokerConfig {
        feed_concurrency: concurrency,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker
        .add_trigger(Trigger::new("all", TriggerFilter::all(), sink))
        .unwrap();
    for i in 0..4 {
        provider
            .publish(&event("events.orders.x", &format!("e{i}")))
            .await
            .unwrap();
    }
    let options = SubscribeOptions {
        ack_wait: Some(ack_wait),
        ..SubscribeOptions::default()
    };
    let feed = broker
        .feed_durable(&*provider, "router", "events.>", &options)
        .await
        .unwrap();
    (provider, broker, feed)
}

/// A feed takes an event from its subscription only once a routing slot
/// is free: an event that waited for a slot with its ack wait running
/// would be redelivered (and routed twice) although every routing is
/// shorter than the ack wait.
#[tokio::test(start_paused = true)]
async fn a_feed_takes_an_event_only_when_a_slot_is_free() {
    let all = Arc::new(CollectorSink::new("all"));
    let slow = Arc::new(InProcessSink::new("slow", {
        let all = all.clone();
        move |e| {
            let all = all.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                all.deliver(&e).await
            }
        }
    }));
    // Each routing takes 2 s, under the 3 s ack wait.
    let (_provider, _broker, feed) = feeding_four_events(1, slow, Duration::from_secs(3)).await;
    // Four routings one after another, and time for any redelivery.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let stats = feed.stop().await.unwrap();
    let types: Vec<String> = all.events().iter().map(|e| e.event_type.clone()).collect();
    assert_eq!(types, ["e0", "e1", "e2", "e3"], "{stats:?}");
    assert_eq!((stats.received, stats.acked), (4, 4), "{stats:?}");
}

/// A routing longer than the ack wait (a slow sink, retries) is kept
/// alive (`in_progress`) while it runs: each event is routed once, not
/// once more every ack wait, through `feed_durable` and through `feed` of
/// a subscription made elsewhere.
#[tokio::test(start_paused = true)]
async fn a_routing_longer_than_the_ack_wait_is_kept_alive_not_routed_again() {
    let slow = |all: &Arc<CollectorSink>| {
        let all = all.clone();
        Arc::new(InProcessSink::new("slow", move |e| {
            let all = all.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(4)).await;
                all.deliver(&e).await
            }
        }))
    };
    // four routings at once, each eight times the 500 ms ack wait
    let all = Arc::new(CollectorSink::new("all"));
    let (provider, _broker, feed) =
        feeding_four_events(4, slow(&all), Duration::from_millis(500)).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let stats = feed.stop().await.unwrap();
    let mut types: Vec<String> = all.events().iter().map(|e| e.event_type.clone()).collect();
    types.sort();
    assert_eq!(types, ["e0", "e1", "e2", "e3"], "{stats:?}");
    assert_eq!((stats.received, stats.acked), (4, 4), "{stats:?}");

    // `feed` of a subscription made by the caller: the provider reports
    // the wait
    let again = Arc::new(CollectorSink::new("again"));
    let broker = Broker::new();
    broker
        .add_trigger(Trigger::new("all", TriggerFilter::all(), slow(&again)))
        .unwrap();
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_millis(500)),
        ..SubscribeOptions::default()
    };
    let subscription = provider
        .subscribe_durable_with_options("other", "events.>", &options)
        .await
        .unwrap();
    let feed = broker.feed(subscription);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let stats = feed.stop().await.unwrap();
    assert_eq!(again.len(), 4, "{stats:?}");
    assert_eq!((stats.received, stats.acked), (4, 4), "{stats:?}");
}

/// `stop_within` returns at its deadline with routings still running: it
/// cuts them off, counts them, and their events come back to the
/// consumer's next subscription (after their ack wait).
#[tokio::test(start_paused = true)]
async fn a_feed_stopped_within_a_deadline_cuts_off_its_routings_and_counts_them() {
    let hangs = sleeping_sink("hangs", Duration::from_secs(3600));
    let (provider, broker, feed) = feeding_four_events(4, hangs, Duration::from_secs(5)).await;
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(5)),
        ..SubscribeOptions::default()
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    let stats = feed.stop_within(Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "returns at the deadline"
    );
    assert_eq!(
        (stats.received, stats.aborted, stats.acked),
        (4, 4, 0),
        "{stats:?}"
    );
    assert_eq!(
        broker.metrics().in_flight,
        0,
        "cut-off routings are not left in flight"
    );

    // The cut-off events come back to the next subscription of the consumer.
    let mut next = provider
        .subscribe_durable_with_options("router", "events.>", &options)
        .await
        .unwrap();
    let mut back = Vec::new();
    for _ in 0..4 {
        let pending = next.next_manual_ack().await.unwrap().unwrap();
        back.push(pending.event().event_type.clone());
        pending.ack().await.unwrap();
    }
    back.sort();
    assert_eq!(back, ["e0", "e1", "e2", "e3"]);
}

/// Without routings left, `stop_within` returns at once.
#[tokio::test(start_paused = true)]
async fn a_feed_with_nothing_in_progress_stops_within_at_once() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let broker = Broker::new();
    let feed = broker
        .feed_durable(
            &*provider,
            "router",
            "events.>",
            &SubscribeOptions::default(),
        )
        .await
        .unwrap();
    let start = Instant::now();
    let stats = feed.stop_within(Duration::from_secs(30)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(stats.aborted, 0);
}

/// Per-trigger counters tell which trigger's sink fails: each trigger
/// counts its own matches, deliveries, retries, failures, dead letters and
/// losses; the totals are their sums; a removed trigger's counters go with
/// it.
#[tokio::test(start_paused = true)]
async fn per_trigger_counters_tell_which_sink_fails() {
    let broker = Broker::new();
    let ok = Arc::new(CollectorSink::new("ok"));
    let dead = Arc::new(CollectorSink::new("dead"));
    broker
        .add_trigger(Trigger::new("healthy", TriggerFilter::all(), ok.clone()))
        .unwrap();
    broker
        .add_trigger(
            Trigger::new(
                "flaky",
                TriggerFilter::by_type("a"),
                Arc::new(FailingSink::new("flaky", "down")),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_retries(2)
                    .with_dead_letter_sink(dead.clone()),
            ),
        )
        .unwrap();
    broker
        .add_trigger(
            Trigger::new(
                "lossy",
                TriggerFilter::by_type("b"),
                Arc::new(FailingSink::new("lossy", "down")),
            )
            .with_delivery(DeliverySpec::new().with_retries(0)),
        )
        .unwrap();
    for t in ["a", "a", "b", "c"] {
        broker.route(&event("events.orders.x", t)).await;
    }
    let m = broker.metrics();
    let names: Vec<_> = m.by_trigger.iter().map(|t| t.trigger.as_str()).collect();
    assert_eq!(names, ["healthy", "flaky", "lossy"]);
    let healthy = m.trigger("healthy").unwrap();
    assert_eq!(
        (healthy.matched, healthy.delivered, healthy.failed),
        (4, 4, 0)
    );
    let flaky = m.trigger("flaky").unwrap();
    assert_eq!(
        (
            flaky.matched,
            flaky.delivered,
            flaky.retries,
            flaky.failed,
            flaky.dead_lettered,
            flaky.dead_letter_failures,
            flaky.no_dead_letter_sink
        ),
        (2, 0, 4, 2, 2, 0, 0)
    );
    let lossy = m.trigger("lossy").unwrap();
    assert_eq!(
        (
            lossy.matched,
            lossy.failed,
            lossy.dead_lettered,
            lossy.dead_letter_failures,
            lossy.no_dead_letter_sink
        ),
        (1, 1, 0, 1, 1)
    );
    let sum =
        |f: fn(&event_routing::TriggerMetrics) -> u64| m.by_trigger.iter().map(f).sum::<u64>();
    assert_eq!(sum(|t| t.matched), m.matched);
    assert_eq!(sum(|t| t.delivered), m.delivered);
    assert_eq!(sum(|t| t.retries), m.retries);
    assert_eq!(sum(|t| t.failed), m.failed);
    assert_eq!(sum(|t| t.dead_lettered), m.dead_lettered);
    assert_eq!(sum(|t| t.no_dead_letter_sink), m.no_dead_letter_sink);

    // removed: its counters are gone, the totals keep its counts
    assert!(broker.remove_trigger("flaky"));
    let m = broker.metrics();
    assert!(m.trigger("flaky").is_none());
    assert_eq!(m.by_trigger.len(), 2);
    assert_eq!(m.dead_lettered, 2);
    // re-added under the same name: a new trigger, counting from zero
    broker
        .add_trigger(Trigger::new("flaky", TriggerFilter::all(), ok.clone()))
        .unwrap();
    broker.route(&event("events.orders.x", "z")).await;
    let flaky = broker.metrics().trigger("flaky").cloned().unwrap();
    assert_eq!(
        (flaky.matched, flaky.delivered, flaky.dead_lettered),
        (1, 1, 0)
    );
}

/// A per-trigger timeout and a retry cut at a shutdown deadline are
/// counted on the trigger too.
#[tokio::test(start_paused = true)]
async fn per_trigger_counters_count_timeouts_and_retries_cut_at_shutdown() {
    let broker = Broker::new();
    broker
        .add_trigger(
            Trigger::new(
                "slow",
                TriggerFilter::all(),
                sleeping_sink("slow", Duration::from_secs(10)),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_retries(1)
                    .with_timeout(Some(Duration::from_millis(100)))
                    .with_backoff(BackoffPolicy::Linear, Duration::from_secs(60)),
            ),
        )
        .unwrap();
    broker
        .enqueue(Arc::new(event("events.orders.x", "a")))
        .await
        .unwrap();
    let report = broker.shutdown_within(Duration::from_secs(5)).await;
    assert_eq!(report.retries_cut, 1);
    let m = broker.metrics();
    let slow = m.trigger("slow").unwrap();
    assert_eq!(
        (
            slow.timeouts,
            slow.shutdown_retries_cut,
            slow.failed,
            slow.retries
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(m.timeouts, 1);
}

/// `replace_trigger` while events are routed from other threads: every
/// event reaches the old trigger or the new one, exactly once, none
/// neither (a remove + add leaves a gap); the trigger keeps its counters
/// and its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_trigger_under_load_misses_no_event_and_keeps_its_counters() {
    use std::collections::HashMap;
    use std::sync::Mutex;

    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let counting = |name: &'static str| {
        let seen = seen.clone();
        Arc::new(InProcessSink::new(name, move |e: Event| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap().entry(e.id.clone()).or_default() += 1;
                Ok(())
            }
        }))
    };
    let broker = Broker::new();
    broker
        .add_trigger(Trigger::new("first", TriggerFilter::all(), counting("a")))
        .unwrap();
    broker
        .add_trigger(Trigger::new("audit", TriggerFilter::all(), counting("a")))
        .unwrap();
    broker
        .add_trigger(Trigger::new(
            "last",
            TriggerFilter::by_subject("never.>"),
            counting("a"),
        ))
        .unwrap();
    const EVENTS: usize = 20_000;
    let routing = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EVENTS);
            for n in 0..EVENTS {
                let e = event("events.orders.x", &format!("e{n}"));
                ids.push(e.id.clone());
                broker.enqueue(Arc::new(e)).await.unwrap();
            }
            broker.wait_idle().await;
            ids
        })
    };
    let mut replacements = 0;
    while !routing.is_finished() {
        let sink = counting(if replacements % 2 == 0 { "b" } else { "a" });
        let replaced = broker
            .replace_trigger(Trigger::new("audit", TriggerFilter::all(), sink))
            .unwrap();
        assert!(replaced);
        replacements += 1;
        tokio::task::yield_now().await;
    }
    let ids = routing.await.unwrap();
    assert!(replacements > 10, "only {replacements} replacements");
    let seen = seen.lock().unwrap();
    // every event delivered twice: once by `first`, once by `audit` (old
    // or new), never neither and never both
    let wrong: Vec<_> = ids
        .iter()
        .filter(|id| seen.get(*id) != Some(&2))
        .take(5)
        .map(|id| (id.clone(), seen.get(id).copied()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{wrong:?} after {replacements} replacements"
    );
    assert_eq!(broker.trigger_names(), ["first", "audit", "last"]);
    let m = broker.metrics();
    let audit = m.by_trigger.iter().find(|t| t.trigger == "audit").unwrap();
    assert_eq!(audit.delivered, EVENTS as u64, "{audit:?}");
}

/// A replacement that is not valid leaves the old trigger in place; one
/// with a new name is added.
#[tokio::test]
async fn an_invalid_replacement_keeps_the_old_trigger_and_a_new_name_is_added() {
    let old = Arc::new(CollectorSink::new("old"));
    let broker = Broker::new();
    broker
        .add_trigger(Trigger::new("audit", TriggerFilter::all(), old.clone()))
        .unwrap();
    let bad = Trigger::new(
        "audit",
        TriggerFilter::by_subject("events..x"),
        Arc::new(CollectorSink::new("new")),
    );
    assert!(matches!(
        broker.replace_trigger(bad),
        Err(Error::InvalidSubject { .. })
    ));
    broker.route(&event("events.orders.x", "t")).await;
    assert_eq!(old.len(), 1);
    let other = Arc::new(CollectorSink::new("other"));
    let added = broker
        .replace_trigger(Trigger::new("other", TriggerFilter::all(), other.clone()))
        .unwrap();
    assert!(!added);
    assert_eq!(broker.trigger_names(), ["audit", "other"]);
    // adding under a taken name says what to use instead
    let err = broker
        .add_trigger(Trigger::new("audit", TriggerFilter::all(), other))
        .unwrap_err();
    assert!(err.to_string().contains("replace_trigger"), "{err}");
}

/// Events the subscription reports it skipped (retention dropped them
/// before the durable read them) are counted one by one in
/// `FeedStats::lagged`, not only as one error per report.
#[tokio::test]
async fn a_feed_counts_the_events_its_subscription_skipped() {
    let provider = MemoryProvider::new(event_memory::MemoryConfig {
        subject_prefix: "events".into(),
        max_events: 5,
        channel_capacity: 10,
    })
    .unwrap();
    let broker = Broker::new();
    let got = Arc::new(CollectorSink::new("got"));
    broker
        .add_trigger(Trigger::new("all", TriggerFilter::all(), got.clone()))
        .unwrap();
    let options = SubscribeOptions::default();
    // the durable exists, then 20 events arrive while nobody reads it:
    // retention keeps the newest 5
    let feed = broker
        .feed_durable(&provider, "router", "events.>", &options)
        .await
        .unwrap();
    feed.stop().await.unwrap();
    for n in 0..20 {
        provider
            .publish(&event("events.orders.x", &format!("e{n}")))
            .await
            .unwrap();
    }
    let feed = broker
        .feed_durable(&provider, "router", "events.>", &options)
        .await
        .unwrap();
    assert!(got.wait_for(5, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = feed.stop().await.unwrap();
    assert_eq!((stats.received, stats.lagged), (5, 15), "{stats:?}");
    assert_eq!(stats.errors, 1, "one lag report: {stats:?}");
    #[cfg(feature = "bus")]
    assert!(
        stats.to_prometheus().contains("a3s_feed_lagged_total 15\n"),
        "{}",
        stats.to_prometheus()
    );
}

#[tokio::test]
async fn add_triggers_adds_all_or_nothing_and_remove_triggers_counts() {
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    let trigger = |name: &str, event_type: &str| {
        Trigger::new(name, TriggerFilter::by_type(event_type), sink.clone())
    };
    broker.add_trigger(trigger("a", "ta")).unwrap();

    // A name given twice, a name already registered, an invalid trigger:
    // each refuses the whole batch.
    for (batch, conflict) in [
        (
            vec![trigger("b", "tb"), trigger("c", "tc"), trigger("b", "tx")],
            true,
        ),
        (vec![trigger("b", "tb"), trigger("a", "tx")], true),
        (vec![trigger("b", "tb"), trigger("", "tx")], false),
    ] {
        let err = broker.add_triggers(batch).unwrap_err();
        assert_eq!(matches!(err, Error::Conflict { .. }), conflict, "{err}");
        assert!(matches!(
            err,
            Error::Conflict { .. } | Error::InvalidConfig { .. }
        ));
        assert_eq!(broker.trigger_names(), ["a"]);
    }
    broker.add_triggers(Vec::new()).unwrap();

    broker
        .add_triggers((0..100).map(|i| trigger(&format!("t{i}"), "shared")))
        .unwrap();
    assert_eq!(broker.trigger_count(), 101);
    assert_eq!(broker.trigger_names()[..3], ["a", "t0", "t1"]);
    let result = broker
        .route(&event("events.orders.created", "shared"))
        .await;
    assert_eq!((result.matched, result.delivered), (100, 100));
    assert_eq!(sink.len(), 100);

    // Unknown and repeated names are skipped; the added names are free again.
    let gone = ["t0", "t1", "t1", "nope"];
    assert_eq!(broker.remove_triggers(gone), 2);
    assert_eq!(broker.trigger_count(), 99);
    broker.add_triggers([trigger("t0", "ta")]).unwrap();
    assert!(broker.replace_trigger(trigger("t0", "tb")).unwrap());
    assert!(!broker.replace_trigger(trigger("t1", "tb")).unwrap());
    assert!(broker.add_trigger(trigger("t1", "tb")).is_err());
    assert!(broker.remove_trigger("t1"));
    assert_eq!(broker.trigger_count(), 100);
}

/// Two brokers forwarding into each other's full queues, the first's
/// queue `Wait`, the second's `WaitFor`: the first's worker waits (for at
/// most the timeout) for room in the second's queue; then the second's
/// worker, forwarding into the first's full queue, finds the first's
/// routings waiting for room in its own. The docs of `Wait` say it then
/// does not wait: it waited, both workers waited for each other, and the
/// first's forward was refused when its wait timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_wait_of_a_routing_counts_in_the_cycle_check() {
    let timeout = Duration::from_secs(5);
    let gates: Vec<Arc<Semaphore>> = (0..2).map(|_| Arc::new(Semaphore::new(0))).collect();
    let (ring, pongs) = full_forwarding_ring(
        &[QueueFullPolicy::Wait, QueueFullPolicy::WaitFor { timeout }],
        &gates,
    )
    .await;
    // The first's worker forwards first and finds the second's queue full
    // (counted before it waits), then the second's worker forwards.
    gates[0].add_permits(1);
    while ring[1].metrics().queue_full == 0 {
        tokio::task::yield_now().await;
    }
    gates[1].add_permits(1);
    gates[0].add_permits(1);
    gates[1].add_permits(1);
    tokio::time::timeout(Duration::from_secs(20), async {
        for broker in &ring {
            broker.wait_idle().await;
        }
    })
    .await
    .expect("the brokers' workers wait for each other's full queues");
    let metrics: Vec<_> = ring.iter().map(Broker::metrics).collect();
    for (i, pongs) in pongs.iter().enumerate() {
        assert_eq!(pongs.len(), 2, "broker {i}: {metrics:?}");
    }
    assert!(metrics[0].deferred >= 1, "{metrics:?}");
    for m in &metrics {
        assert_eq!((m.failed, m.rejected, m.in_flight), (0, 0, 0), "{m:?}");
    }
}

/// A routing worker's wait for room in another broker's full queue that
/// is cut off (its attempt timed out) leaves no trace in the cycle check:
/// a later forward the other way, into this broker's full queue, waits for
/// room (backpressure) rather than being deferred as if this broker's
/// routings still waited for the other's queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_for_room_leaves_no_edge_behind() {
    let config = || BrokerConfig {
        queue_capacity: 1,
        workers: 1,
        ..BrokerConfig::default()
    };
    let (a, b) = (
        Broker::with_config(config()).unwrap(),
        Broker::with_config(config()).unwrap(),
    );
    let (gate_a, started_a) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let (gate_b, started_b) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let arrived = Arc::new(CollectorSink::new("arrived"));
    // a: "fwd" forwards into b, each attempt cut off after 100 ms; "hold"
    // holds a's worker at its gate; "back" (from b) is collected
    let into_b = {
        let b = b.clone();
        Arc::new(InProcessSink::new("into b", move |e: Event| {
            let b = b.clone();
            async move { b.enqueue(Arc::new(e)).await }
        }))
    };
    a.add_trigger(
        Trigger::new("fwd", TriggerFilter::by_type("fwd"), into_b).with_delivery(
            DeliverySpec::new()
                .with_retries(0)
                .with_timeout(Some(Duration::from_millis(100))),
        ),
    )
    .unwrap();
    a.add_trigger(Trigger::new(
        "hold",
        TriggerFilter::by_type("hold"),
        gated_sink(
            gate_a.clone(),
            started_a.clone(),
            Arc::new(CollectorSink::new("h")),
        ),
    ))
    .unwrap();
    a.add_trigger(Trigger::new(
        "arrived",
        TriggerFilter::by_type("back"),
        arrived.clone(),
    ))
    .unwrap();
    // b: "ping" waits at its gate, then forwards a "back" into a
    let into_a = {
        let (a, gate, started) = (a.clone(), gate_b.clone(), started_b.clone());
        Arc::new(InProcessSink::new("into a", move |e: Event| {
            let (a, gate, started) = (a.clone(), gate.clone(), started.clone());
            async move {
                started.add_permits(1);
                gate.acquire().await.unwrap().forget();
                let mut back = e.clone();
                back.event_type = "back".to_owned();
                a.enqueue(Arc::new(back)).await
            }
        }))
    };
    b.add_trigger(
        Trigger::new("ping", TriggerFilter::by_type("ping"), into_a)
            .with_delivery(DeliverySpec::new().with_timeout(None)),
    )
    .unwrap();

    // b full: its worker at the gate, one ping queued
    b.enqueue(Arc::new(event("events.a.one", "ping")))
        .await
        .unwrap();
    started_b.acquire().await.unwrap().forget();
    b.enqueue(Arc::new(event("events.a.two", "ping")))
        .await
        .unwrap();
    // a's worker waits for room in b until its attempt is cut off
    a.enqueue(Arc::new(event("events.a.fwd", "fwd")))
        .await
        .unwrap();
    a.wait_idle().await;
    let m = a.metrics();
    assert_eq!(
        (m.timeouts, m.failed, b.metrics().queue_full),
        (1, 1, 1),
        "{m:?}"
    );

    // a full: its worker held, one event queued; then b's worker forwards
    // into a: it must wait for room, not defer
    a.enqueue(Arc::new(event("events.a.h1", "hold")))
        .await
        .unwrap();
    started_a.acquire().await.unwrap().forget();
    a.enqueue(Arc::new(event("events.a.h2", "hold")))
        .await
        .unwrap();
    gate_b.add_permits(1);
    while a.metrics().queue_full == 0 {
        tokio::task::yield_now().await;
    }
    gate_a.add_permits(2);
    gate_b.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), async {
        b.wait_idle().await;
        a.wait_idle().await;
    })
    .await
    .expect("the brokers did not settle");
    assert_eq!(arrived.len(), 2);
    let m = a.metrics();
    assert_eq!(
        (m.deferred, m.rejected),
        (0, 0),
        "a forward was deferred: {m:?}"
    );
}

/// A `stop_within` whose future is dropped before its deadline (a second
/// signal in a `select!`, an outer timeout) still cuts the routings off at
/// that deadline: the deadline was asked for, and dropping the caller's
/// future does not lift it.
#[tokio::test(start_paused = true)]
async fn a_dropped_stop_within_still_cuts_off_at_its_deadline() {
    let hangs = sleeping_sink("hangs", Duration::from_secs(3600));
    let (_provider, broker, feed) = feeding_four_events(4, hangs, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(broker.metrics().in_flight, 4);
    // the stop is asked for, then its future dropped long before the deadline
    let stopping = tokio::time::timeout(
        Duration::from_millis(10),
        feed.stop_within(Duration::from_secs(2)),
    )
    .await;
    assert!(
        stopping.is_err(),
        "the routings hang: it cannot have returned"
    );
    // well past the deadline and the close's grace
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        broker.metrics().in_flight,
        0,
        "the routings still run past the deadline of the dropped stop_within"
    );
}

/// An acker whose `ack` never completes (a connection stalled mid-ack).
struct StalledAck;

#[async_trait::async_trait]
impl event_core::Acker for StalledAck {
    async fn ack(&self) -> event_core::Result<()> {
        std::future::pending().await
    }
    async fn nak(&self, _delay: Option<Duration>) -> event_core::Result<()> {
        std::future::pending().await
    }
    async fn term(&self) -> event_core::Result<()> {
        std::future::pending().await
    }
    async fn in_progress(&self) -> event_core::Result<()> {
        Ok(())
    }
}

/// A routing cut off at the deadline of `stop_within` while its event's
/// settlement hangs is counted once, as cut off (its event neither
/// acknowledged nor nak'ed), not also as acknowledged: the stats add up to
/// what was received.
#[tokio::test(start_paused = true)]
async fn a_routing_cut_off_while_settling_counts_once() {
    let broker = Broker::new();
    let all = Arc::new(CollectorSink::new("all"));
    broker
        .add_trigger(Trigger::new("all", TriggerFilter::all(), all.clone()))
        .unwrap();
    let pending = pending_with(0, Box::new(StalledAck));
    let feed = broker.feed(Box::new(Flaky::handing_out(vec![pending])));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(all.len(), 1, "routed");
    let stats = feed.stop_within(Duration::from_secs(1)).await.unwrap();
    assert_eq!(stats.received, 1, "{stats:?}");
    assert_eq!(
        stats.acked + stats.naked + stats.dropped + stats.aborted,
        1,
        "one event, counted once: {stats:?}"
    );
    assert_eq!(stats.aborted, 1, "{stats:?}");
}

/// Fails with `error` `failures` times (recording when), then hands out
/// `events` (last first), then waits for ever; with `keep_alive_stalls`,
/// its `keep_alive` of what it fetched ahead never completes (a stalled
/// connection).
struct Flaky {
    failures: usize,
    error: fn() -> Error,
    calls: Arc<parking_lot::Mutex<Vec<Instant>>>,
    events: Vec<event_core::PendingEvent>,
    keep_alive_stalls: bool,
}

impl Flaky {
    /// Hands out `events` (last first) without failing, then waits.
    fn handing_out(events: Vec<event_core::PendingEvent>) -> Self {
        Self {
            failures: 0,
            error: || Error::Connection("unused".into()),
            calls: Arc::default(),
            events,
            keep_alive_stalls: false,
        }
    }

    /// Its `keep_alive` never completes.
    fn with_stalled_keep_alive(mut self) -> Self {
        self.keep_alive_stalls = true;
        self
    }
}

struct NoopAck;

#[async_trait::async_trait]
impl event_core::Acker for NoopAck {
    async fn ack(&self) -> event_core::Result<()> {
        Ok(())
    }
    async fn nak(&self, _delay: Option<Duration>) -> event_core::Result<()> {
        Ok(())
    }
    async fn term(&self) -> event_core::Result<()> {
        Ok(())
    }
    async fn in_progress(&self) -> event_core::Result<()> {
        Ok(())
    }
}

/// Delivery `n` (event type `e{n}`, sequence `n + 1`) settled by a
/// [`NoopAck`].
fn noop_pending(n: u64) -> event_core::PendingEvent {
    pending_with(n, Box::new(NoopAck))
}

/// Delivery `n` (event type `e{n}`, sequence `n + 1`) settled by `acker`.
fn pending_with(n: u64, acker: Box<dyn event_core::Acker>) -> event_core::PendingEvent {
    let received = event_core::ReceivedEvent {
        event: Arc::new(event("events.orders.x", &format!("e{n}"))),
        sequence: n + 1,
        num_delivered: 1,
        stream: "s".into(),
    };
    event_core::PendingEvent::new(received, None, acker)
}

#[async_trait::async_trait]
impl event_core::Subscription for Flaky {
    async fn next(&mut self) -> event_core::Result<Option<event_core::ReceivedEvent>> {
        std::future::pending().await
    }
    async fn next_manual_ack(&mut self) -> event_core::Result<Option<event_core::PendingEvent>> {
        self.calls.lock().push(Instant::now());
        if self.failures > 0 {
            self.failures -= 1;
            return Err((self.error)());
        }
        match self.events.pop() {
            Some(pending) => Ok(Some(pending)),
            None => std::future::pending().await,
        }
    }
    async fn close(&mut self) -> event_core::Result<()> {
        Ok(())
    }
    async fn keep_alive(&mut self) -> event_core::Result<()> {
        if self.keep_alive_stalls {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// A subscription failing with connection errors is retried after
/// `feed_retry_delay` each time (no spinning), each failure counted, and
/// the feed goes on to route what comes after.
#[tokio::test(start_paused = true)]
async fn a_feed_retries_connection_errors_after_its_delay_and_goes_on() {
    let broker = Broker::new();
    let all = Arc::new(CollectorSink::new("all"));
    broker
        .add_trigger(Trigger::new("all", TriggerFilter::all(), all.clone()))
        .unwrap();
    let calls = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let start = Instant::now();
    let feed = broker.feed(Box::new(Flaky {
        failures: 3,
        error: || Error::Connection("server down".into()),
        calls: calls.clone(),
        events: vec![noop_pending(0)],
        keep_alive_stalls: false,
    }));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let delay = broker.config().feed_retry_delay;
    let offsets: Vec<Duration> = calls.lock().iter().map(|t| *t - start).collect();
    assert_eq!(
        offsets,
        [Duration::ZERO, delay, 2 * delay, 3 * delay, 3 * delay]
    );
    assert_eq!(all.len(), 1);
    assert!(!feed.is_finished());
    let stats = feed.stop().await.unwrap();
    assert_eq!(
        (stats.errors, stats.received, stats.acked),
        (3, 1, 1),
        "{stats:?}"
    );
}

/// With `max_deliver`, an event a trigger keeps failing (no dead-letter
/// sink) is nak'ed until its final delivery, then terminated and counted
/// as dropped; it does not come back.
#[tokio::test(start_paused = true)]
async fn a_feed_terminates_an_unsettled_event_on_its_final_delivery() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let broker = Broker::new();
    let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    broker
        .add_trigger(Trigger::new(
            "down",
            TriggerFilter::all(),
            Arc::new(InProcessSink::new("down", {
                let tries = tries.clone();
                move |_| {
                    tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { Err(Error::Connection("down".into())) }
                }
            })),
        ))
        .unwrap();
    provider
        .publish(&event("events.orders.x", "e0"))
        .await
        .unwrap();
    let options = SubscribeOptions {
        max_deliver: Some(3),
        ack_wait: Some(Duration::from_secs(5)),
        ..SubscribeOptions::default()
    };
    let feed = broker
        .feed_durable(&*provider, "router", "events.>", &options)
        .await
        .unwrap();
    // three deliveries a retry delay apart, and time for more
    tokio::time::sleep(Duration::from_secs(120)).await;
    let stats = feed.stop().await.unwrap();
    assert_eq!(
        (stats.received, stats.naked, stats.dropped, stats.acked),
        (3, 2, 1, 0),
        "{stats:?}"
    );
    // every delivery tried the trigger the same number of times
    assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst) % 3, 0);
}

/// An acker whose `in_progress` never completes (a stalled connection);
/// the rest succeed.
struct StalledKeepAlive;

#[async_trait::async_trait]
impl event_core::Acker for StalledKeepAlive {
    async fn ack(&self) -> event_core::Result<()> {
        Ok(())
    }
    async fn nak(&self, _delay: Option<Duration>) -> event_core::Result<()> {
        Ok(())
    }
    async fn term(&self) -> event_core::Result<()> {
        Ok(())
    }
    async fn in_progress(&self) -> event_core::Result<()> {
        std::future::pending().await
    }
}

/// Keeping an event alive is best effort: a stalled `in_progress` does not
/// stall the routing it keeps alive (which then never settled its event).
#[tokio::test(start_paused = true)]
async fn a_stalled_keep_alive_does_not_stall_the_routing() {
    let broker = Broker::new();
    let all = Arc::new(CollectorSink::new("all"));
    let slow = Arc::new(InProcessSink::new("slow", {
        let all = all.clone();
        move |e| {
            let all = all.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                all.deliver(&e).await
            }
        }
    }));
    broker
        .add_trigger(Trigger::new("slow", TriggerFilter::all(), slow))
        .unwrap();
    // a 1 s ack wait: kept alive every half second while the 5 s routing runs
    let pending = pending_with(0, Box::new(StalledKeepAlive)).with_ack_wait(Duration::from_secs(1));
    let feed = broker.feed(Box::new(Flaky::handing_out(vec![pending])));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let stats = feed.stats();
    let _ = feed.stop_within(Duration::from_secs(1)).await.unwrap();
    assert_eq!(all.len(), 1, "{stats:?}");
    assert_eq!((stats.received, stats.acked), (1, 1), "{stats:?}");
}

/// A subscription's stalled `keep_alive` (called while every routing slot
/// is busy) does not keep the feed from stopping: `stop_within` returns.
#[tokio::test(start_paused = true)]
async fn a_stalled_keep_alive_of_the_fetched_ahead_does_not_stall_the_feed() {
    let broker = Broker::with_config(BrokerConfig {
        feed_concurrency: 1,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker
        .add_trigger(Trigger::new(
            "slow",
            TriggerFilter::all(),
            sleeping_sink("slow", Duration::from_secs(5)),
        ))
        .unwrap();
    let pending = noop_pending(0);
    let feed = broker.feed(Box::new(
        Flaky::handing_out(vec![pending]).with_stalled_keep_alive(),
    ));
    // the one slot is busy for 5 s: the feed keeps what was fetched ahead
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(feed.stats().acked, 1);
    let stopped = tokio::time::timeout(
        Duration::from_secs(60),
        feed.stop_within(Duration::from_secs(1)),
    )
    .await;
    assert!(stopped.is_ok(), "stop_within did not return");
}

/// `FeedStats` JSON written by a version with fewer counters (before
/// `lagged`) still reads, the missing counters as zero, as the broker's
/// and the bus's metrics snapshots do.
#[test]
fn feed_stats_with_fewer_counters_still_read() {
    let older = json!({
        "received": 3, "acked": 2, "naked": 1, "dropped": 0, "errors": 1, "aborted": 0
    });
    let stats: event_routing::FeedStats = serde_json::from_value(older).unwrap();
    assert_eq!(
        (stats.received, stats.acked, stats.errors, stats.lagged),
        (3, 2, 1, 0)
    );
}

/// An event the bus could not decrypt is a report about that one event
/// ([`Error::Decryption`]; the bus dead-lettered or terminated it, and its
/// subscription stays usable), as an undecodable message is: counted, and
/// the feed goes on at once, not after `feed_retry_delay` as for a lost
/// connection (a run of undecryptable events stalled it a second each).
#[tokio::test(start_paused = true)]
async fn undecryptable_events_are_counted_and_the_feed_goes_on_at_once() {
    let broker = Broker::new();
    let all = Arc::new(CollectorSink::new("all"));
    broker
        .add_trigger(Trigger::new("all", TriggerFilter::all(), all.clone()))
        .unwrap();
    let calls = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let start = Instant::now();
    let feed = broker.feed(Box::new(Flaky {
        failures: 5,
        error: || Error::Decryption("event e1 (sequence 1): wrong key".into()),
        calls: calls.clone(),
        events: vec![noop_pending(0)],
        keep_alive_stalls: false,
    }));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let offsets: Vec<Duration> = calls.lock().iter().map(|t| *t - start).collect();
    assert_eq!(offsets, [Duration::ZERO; 7]);
    let stats = feed.stop().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (stats.errors, stats.received, stats.acked),
        (5, 1, 1),
        "{stats:?}"
    );
}

/// Two feeds (two processes' brokers) on one durable share its events:
/// each is routed by one of them, once, and acknowledged.
#[tokio::test(start_paused = true)]
async fn two_feeds_on_one_durable_route_each_event_once() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let all = Arc::new(CollectorSink::new("all"));
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(5)),
        ..SubscribeOptions::default()
    };
    let mut feeds = Vec::new();
    for _ in 0..2 {
        let broker = Broker::new();
        broker
            .add_trigger(Trigger::new(
                "all",
                TriggerFilter::all(),
                all.clone() as Arc<dyn EventSink>,
            ))
            .unwrap();
        let feed = broker
            .feed_durable(&*provider, "router", "events.>", &options)
            .await
            .unwrap();
        feeds.push((broker, feed));
    }
    for i in 0..20 {
        provider
            .publish(&event("events.orders.x", &format!("e{i}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut received = 0;
    for (_broker, feed) in feeds {
        let stats = feed.stop().await.unwrap();
        assert_eq!(stats.received, stats.acked, "{stats:?}");
        received += stats.received;
    }
    assert_eq!(received, 20);
    let mut types: Vec<String> = all.events().iter().map(|e| e.event_type.clone()).collect();
    types.sort();
    types.dedup();
    assert_eq!((all.len(), types.len()), (20, 20));
}

/// Routings that end at the very instant of `stop_within`'s deadline
/// (settled: acked) are counted once, as acked, not also as cut off: the
/// stats add up to what was received. The feed counted as cut off every
/// routing not yet joined when the deadline's timer won, including those
/// that had finished (and counted their ack) in the same instant.
#[tokio::test(start_paused = true)]
async fn routings_ending_at_the_deadline_count_once() {
    for round in 0..8 {
        let broker = Broker::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let at_deadline = Arc::new(InProcessSink::new("at-deadline", move |_| async move {
            tokio::time::sleep_until(deadline).await;
            Ok(())
        }));
        broker
            .add_trigger(Trigger::new("all", TriggerFilter::all(), at_deadline))
            .unwrap();
        let events = (0..16u64).map(noop_pending).collect();
        let feed = broker.feed(Box::new(Flaky::handing_out(events)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = feed
            .stop_within(deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap();
        assert_eq!(stats.received, 16, "round {round}: {stats:?}");
        assert_eq!(
            stats.acked + stats.naked + stats.dropped + stats.aborted,
            16,
            "round {round}: each event counted once: {stats:?}"
        );
    }
}

/// A subscription's stalled `keep_alive` (called while every routing slot
/// is busy) does not keep the feed from taking the next event once a slot
/// is free: the feed awaited it without watching for the slot, so it
/// routed nothing more until stopped.
#[tokio::test(start_paused = true)]
async fn a_stalled_keep_alive_of_the_fetched_ahead_does_not_stall_the_next_event() {
    let broker = Broker::with_config(BrokerConfig {
        feed_concurrency: 1,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker
        .add_trigger(Trigger::new(
            "slow",
            TriggerFilter::all(),
            sleeping_sink("slow", Duration::from_secs(5)),
        ))
        .unwrap();
    let events = (0..2u64).map(noop_pending).collect();
    let feed = broker.feed(Box::new(
        Flaky::handing_out(events).with_stalled_keep_alive(),
    ));
    // each event holds the one slot for 5 s
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stats = feed.stats();
    let _ = feed.stop_within(Duration::from_secs(1)).await.unwrap();
    assert_eq!((stats.received, stats.acked), (2, 2), "{stats:?}");
}

/// A trigger's dead letter is its event plus the failure in metadata: for
/// an event near the limit of the dead-letter sink's provider (a topic
/// sink), or a sink whose error is long, it was refused as too large
/// (`PayloadTooLarge`), counted in `dead_letter_failures`, and the event
/// lost to that trigger. It is sent in a smaller form instead, as a
/// `SinkDlqHandler` forwards one: the reason cut, else without the event's
/// payload and own metadata (`dlqpayloaddropped`).
#[tokio::test]
async fn a_dead_letter_over_the_dead_letter_sinks_limit_is_sent_smaller() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let dead = Arc::new(
        event_routing::TopicSink::new("dead", provider.clone(), "events.dlq.orders").unwrap(),
    );
    let long_error = format!("refused: {}", "e".repeat(2_000_000));
    let broker = Broker::new();
    broker
        .add_trigger(
            Trigger::new(
                "to-down",
                TriggerFilter::all(),
                Arc::new(FailingSink::new("down", &long_error)),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_retries(0)
                    .with_dead_letter_sink(dead),
            ),
        )
        .unwrap();

    // a long error: the reason cut, the event whole
    let small = event("events.orders.created", "t").with_metadata("region", "eu");
    let result = broker.route(&small).await;
    assert_eq!((result.failed, result.dead_lettered), (1, 1), "{result:?}");
    let stored = provider.history(Some("events.dlq.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let m = &stored[0].metadata;
    assert_eq!(stored[0].payload, small.payload);
    assert_eq!(m["region"], "eu");
    assert!(m["dlqreason"].len() < 5000, "{}", m["dlqreason"].len());
    assert!(m["dlqreason"].contains("refused: eee"));
    assert_eq!(m["dlqtrigger"], "to-down");

    // an event near the limit: without its payload
    let mut big = event("events.orders.created", "t");
    big.payload = json!("");
    let base = serde_json::to_vec(&big).unwrap().len();
    big.payload = json!("x".repeat(1024 * 1024 - 10 - base));
    provider.publish(&big).await.unwrap();
    let result = broker.route(&big).await;
    assert_eq!((result.failed, result.dead_lettered), (1, 1), "{result:?}");
    let stored = provider.history(Some("events.dlq.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    let m = &stored[0].metadata;
    assert_eq!(stored[0].payload, serde_json::Value::Null);
    assert_eq!(m["originalid"], big.id);
    assert_eq!(m["dlqtrigger"], "to-down");
    assert!(m.contains_key("dlqpayloaddropped"), "{m:?}");
    assert_eq!(broker.metrics().dead_letter_failures, 0);
}
