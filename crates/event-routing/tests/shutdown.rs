//! `Broker::shutdown_within`: a bounded shutdown that reports what it left
//! undone. On tokio's paused clock, so the times are exact and the waits
//! cost nothing.

#![allow(clippy::unwrap_used)] // test helpers

use event_core::{Error, Event};
use event_routing::{
    Broker, BrokerConfig, CollectorSink, DeliverySpec, InProcessSink, Trigger, TriggerFilter,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn event(n: u64) -> Event {
    Event::new(
        "events.orders.created",
        "orders",
        "new",
        "shop",
        json!({"n": n}),
    )
}

/// A sink that never answers (an HTTP endpoint that hangs).
fn hanging_sink() -> Arc<InProcessSink> {
    Arc::new(InProcessSink::new("hangs", |_| async {
        std::future::pending::<()>().await;
        Ok(())
    }))
}

/// The reported case: 20 queued events, 4 workers, a sink that hangs (2 s
/// timeout, 1 retry). `shutdown()` took 20.5 s; `shutdown_within(5 s)`
/// returns at the deadline and says what it left: the second round of 4
/// routings cancelled, 12 events never routed.
#[tokio::test(start_paused = true)]
async fn shutdown_within_returns_at_its_deadline_and_reports_what_it_abandoned() {
    let broker = Broker::with_config(BrokerConfig {
        workers: 4,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker
        .add_trigger(
            Trigger::new("hook", TriggerFilter::all(), hanging_sink()).with_delivery(
                DeliverySpec::new()
                    .with_retries(1)
                    .with_timeout(Some(Duration::from_secs(2))),
            ),
        )
        .unwrap();
    for n in 0..20 {
        broker.enqueue(Arc::new(event(n))).await.unwrap();
    }
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(3600),
        broker.shutdown_within(Duration::from_secs(5)),
    )
    .await
    .expect("shutdown_within never returned");
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    // the first 4 failed after 2 + 0.1 + 2 s; the next 4 were in their
    // first attempt at the deadline
    assert_eq!((report.aborted, report.unrouted), (4, 12), "{report:?}");
    assert_eq!(report.retries_cut, 0);
    let m = broker.metrics();
    assert_eq!((m.failed, m.in_flight, m.queue_depth), (4, 0, 0), "{m:?}");
    assert_eq!(
        (
            m.shutdown_aborted,
            m.shutdown_unrouted,
            m.shutdown_retries_cut
        ),
        (4, 12, 0)
    );
    assert!(matches!(
        broker.enqueue(Arc::new(event(99))).await,
        Err(Error::Closed(_))
    ));
    // a later call returns at once, with the same report
    assert_eq!(broker.shutdown_within(Duration::from_secs(5)).await, report);
    assert_eq!(started.elapsed(), took);
}

/// Everything routed before the deadline: nothing to report, and no wait
/// for the deadline.
#[tokio::test(start_paused = true)]
async fn shutdown_within_routes_what_was_queued_when_there_is_time() {
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    let slow = sink.clone();
    broker
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::all(),
            Arc::new(InProcessSink::new("slow", move |e| {
                let slow = slow.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    event_routing::EventSink::deliver(&*slow, &e).await
                }
            })),
        ))
        .unwrap();
    for n in 0..10 {
        broker.enqueue(Arc::new(event(n))).await.unwrap();
    }
    let started = Instant::now();
    let report = broker.shutdown_within(Duration::from_secs(30)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(report, event_routing::BrokerShutdownReport::default());
    assert_eq!(sink.len(), 10);
}

/// An endpoint answering `503` with `Retry-After: 3600` held a routing
/// 90 s (3 retries, each wait capped at `retry_after_max`, 30 s), and a
/// shutdown with it. A retry wait that would end past the deadline is cut
/// short: the delivery fails at once and goes to the dead-letter sink, and
/// the shutdown returns without waiting.
#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn a_retry_after_wait_does_not_hold_a_bounded_shutdown() {
    use event_cloudevents::http::client::HttpStatusError;
    let broker = Broker::new();
    let dead = Arc::new(CollectorSink::new("dead"));
    let overloaded = Arc::new(InProcessSink::new("overloaded", |_| async {
        Err(Error::provider(
            "http",
            HttpStatusError {
                url: "http://sink/events".into(),
                status: 503,
                body: String::new(),
                retry_after: Some(Duration::from_secs(3600)),
            },
        ))
    }));
    broker
        .add_trigger(
            Trigger::new("hook", TriggerFilter::all(), overloaded).with_delivery(
                DeliverySpec::new()
                    .with_retries(3)
                    .with_dead_letter_sink(dead.clone()),
            ),
        )
        .unwrap();
    broker.enqueue(Arc::new(event(1))).await.unwrap();
    // the routing is now in its first 30 s wait
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(3600),
        broker.shutdown_within(Duration::from_secs(10)),
    )
    .await
    .expect("shutdown_within never returned");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "held {:?}",
        started.elapsed()
    );
    assert_eq!(
        (report.retries_cut, report.aborted, report.unrouted),
        (1, 0, 0),
        "{report:?}"
    );
    let letters = dead.events();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].metadata["dlqattempts"], "1");
    assert!(
        letters[0].metadata["dlqreason"].contains("HTTP 503"),
        "{:?}",
        letters[0].metadata
    );
    let m = broker.metrics();
    assert_eq!(
        (m.retries, m.dead_lettered, m.in_flight),
        (0, 1, 0),
        "{m:?}"
    );
}

/// A forward waiting for room in a full queue (a sink of a routing that
/// publishes back into its broker under `QueueFullPolicy::Wait`) when the
/// deadline passes is counted in the report's `unrouted`, as its docs say,
/// not only later in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_within_reports_forwards_still_waiting_for_room() {
    for round in 0..50 {
        // one forward queued, one deferred
        let broker = broker_with_deferred_forwards(2).await;
        let report = broker.shutdown_within(Duration::from_millis(20)).await;
        assert_eq!(
            (report.unrouted, report.aborted),
            (2, 1),
            "round {round}: {report:?}, {:?}",
            broker.metrics()
        );
        // The deferred forward's publisher was answered `Ok` when it was
        // deferred: lost at shutdown, it is unrouted, not refused.
        let m = broker.metrics();
        assert_eq!(
            (m.deferred, m.shutdown_unrouted, m.rejected),
            (1, 2, 0),
            "round {round}: {m:?}"
        );
    }
}

/// A broker whose seed routing defers `forwards - 1` forwards (policy Wait,
/// capacity 1, one worker) and then hangs.
async fn broker_with_deferred_forwards(forwards: usize) -> Broker {
    let broker = Broker::with_config(BrokerConfig {
        workers: 1,
        queue_capacity: 1,
        ..BrokerConfig::default()
    })
    .unwrap();
    let handle = broker.clone();
    let forwarder = Arc::new(InProcessSink::new("forwards", move |e: Event| {
        let broker = handle.clone();
        async move {
            if e.event_type == "seed" {
                for _ in 0..forwards {
                    let mut fwd = e.clone();
                    fwd.event_type = "fwd".to_owned();
                    broker.enqueue(Arc::new(fwd)).await?;
                }
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }));
    broker
        .add_trigger(Trigger::new("fwd", TriggerFilter::all(), forwarder))
        .unwrap();
    let mut seed = event(0);
    seed.event_type = "seed".to_owned();
    broker.enqueue(Arc::new(seed)).await.unwrap();
    while broker.metrics().deferred < (forwards - 1) as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    broker
}

/// The deadline's wait for deferred forwards ends on a current-thread
/// runtime, with several of them, and with shutdown and shutdown_within
/// (twice) racing: every caller gets the same complete report.
#[test]
fn deferred_forwards_do_not_hold_a_bounded_shutdown() {
    for flavor in ["current_thread", "multi_thread"] {
        let rt = if flavor == "current_thread" {
            tokio::runtime::Builder::new_current_thread()
        } else {
            tokio::runtime::Builder::new_multi_thread()
        }
        .enable_all()
        .build()
        .unwrap();
        rt.block_on(async {
            for round in 0..20 {
                let broker = broker_with_deferred_forwards(5).await;
                let (a, b, ()) = tokio::time::timeout(Duration::from_secs(10), async {
                    tokio::join!(
                        broker.shutdown_within(Duration::from_millis(20)),
                        broker.shutdown_within(Duration::from_secs(3600)),
                        broker.shutdown(),
                    )
                })
                .await
                .unwrap_or_else(|_| panic!("{flavor} round {round}: hangs"));
                assert_eq!(a, b, "{flavor} round {round}");
                assert_eq!(
                    (a.unrouted, a.aborted),
                    (5, 1),
                    "{flavor} round {round}: {a:?}"
                );
                assert_eq!(broker.metrics().shutdown_unrouted, 5);
            }
        });
    }
}

/// Forwards waiting for room in tasks of their own are lost with the
/// runtime they (and the dispatcher) ran on, as the events still queued
/// are: they count in `shutdown_unrouted`, as the queued ones do, instead
/// of vanishing from every counter.
#[test]
fn forwards_waiting_for_room_lost_with_their_runtime_count_as_unrouted() {
    let first = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // the seed's routing hangs: one forward queued, two waiting for room
    let broker = first.block_on(broker_with_deferred_forwards(3));
    drop(first);
    let m = broker.metrics();
    assert_eq!((m.deferred, m.enqueued), (2, 2), "{m:?}");
    assert_eq!(
        (m.shutdown_unrouted, m.shutdown_aborted, m.in_flight),
        (3, 1, 0),
        "{m:?}"
    );
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = second.block_on(broker.shutdown_within(Duration::from_millis(20)));
    assert_eq!((report.unrouted, report.aborted), (3, 1), "{report:?}");
}
