//! Per-event routing cost against 10, 100 and 1,000 triggers, with the
//! brute-force baseline (evaluating every filter, as an unindexed broker
//! does) measured in the same run.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use event_core::{Event, Result};
use event_routing::{Broker, CompiledFilter, EventSink, FilterExpr, Trigger, TriggerFilter};
use std::hint::black_box;
use std::sync::Arc;

struct Noop;

#[async_trait]
impl EventSink for Noop {
    async fn deliver(&self, _event: &Event) -> Result<()> {
        Ok(())
    }
    fn name(&self) -> &str {
        "noop"
    }
}

/// A mix of filter kinds: types, subject patterns, sources with attributes,
/// and one in ten unindexable (a Knative `prefix`).
fn filter(i: usize) -> TriggerFilter {
    match i % 10 {
        0..=2 => TriggerFilter::by_type(format!("type-{i}")),
        3..=5 => TriggerFilter::by_subject(format!("events.svc{i}.>")),
        6..=7 => TriggerFilter::by_source(format!("source-{i}")).with_attribute("region", "eu"),
        8 => TriggerFilter::by_subject(format!("events.*.topic{i}"))
            .with_filter(FilterExpr::not(FilterExpr::exact("type", "x"))),
        _ => TriggerFilter::all().with_filter(FilterExpr::prefix("type", format!("type-{i}."))),
    }
}

fn bench_route(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("route_one_event");
    for n in [10usize, 100, 1000] {
        let broker = Broker::new();
        let filters: Vec<CompiledFilter> = (0..n).map(|i| filter(i).compile().unwrap()).collect();
        for i in 0..n {
            broker
                .add_trigger(Trigger::new(format!("t{i}"), filter(i), Arc::new(Noop)))
                .unwrap();
        }
        // Matches exactly one trigger (t3: events.svc3.>).
        let event = Event::typed(
            "events.svc3.orders",
            "svc3",
            "type-none",
            1,
            "s",
            "source-none",
            serde_json::json!({"n": 1}),
        )
        .with_metadata("region", "eu");
        assert_eq!(broker.matching_triggers(&event), ["t3"]);

        group.bench_with_input(BenchmarkId::new("indexed_broker_route", n), &n, |b, _| {
            b.to_async(&rt)
                .iter(|| async { black_box(broker.route(black_box(&event)).await) });
        });
        group.bench_with_input(BenchmarkId::new("indexed_match_only", n), &n, |b, _| {
            b.iter(|| black_box(broker.matching_triggers(black_box(&event))));
        });
        group.bench_with_input(
            BenchmarkId::new("baseline_evaluate_all_filters", n),
            &n,
            |b, _| {
                b.iter(|| {
                    black_box(
                        filters
                            .iter()
                            .filter(|f| f.matches(black_box(&event)))
                            .count(),
                    )
                });
            },
        );
    }
    group.finish();
}

/// Bus publish on the memory provider, without a broker and with one whose
/// only trigger matches every event and delivers to a slow sink (10 ms per
/// delivery). Delivery runs off the publish path, so the attached broker
/// should cost the publisher little: the target is >= 0.9x the baseline.
///
/// Two loads, each measured with and without the broker in the same run:
///
/// - `paced_*` (the publish-path measure the target names): bursts of
///   [`BURST`] publishes, then the publishing task sleeps on a Tokio timer
///   (>= 1 ms, not timed), as an application that publishes in bursts and
///   leaves the machine room to route. Only the publishes are timed. (An
///   earlier version spun `yield_now` for 50 us between publishes: that
///   burned a whole core the routing needs, so it measured CPU contention
///   on a 2-core machine rather than the publish path.)
/// - `baseline_no_broker` / `broker_attached`: back-to-back publishes that
///   saturate a core. Routing is real CPU work (about as much per event as
///   the publish itself), so on 2 cores the router competes with the
///   publisher, and once the queue is full the publisher waits: this ratio
///   measures the broker's total CPU cost per event (its routing
///   throughput), not the publish path.
fn bench_bus_publish(c: &mut Criterion) {
    use event_bus::EventBus;
    use event_memory::MemoryProvider;
    use std::time::Duration;

    /// Publishes per burst in the paced variants.
    const BURST: u64 = 64;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let event = || {
        Event::new(
            "events.orders.created",
            "orders",
            "new order",
            "shop",
            serde_json::json!({"id": 42, "total": 99.5}),
        )
    };
    let mut group = c.benchmark_group("bus_publish_slow_sinks");
    // Publishes `iters` events from a task on the runtime (where
    // applications publish from), timing only the publishes. `paced`: sleep
    // (untimed) after every `BURST` publishes.
    let publish_loop = |bus: &EventBus, iters: u64, paced: bool| {
        let bus = bus.clone();
        rt.block_on(async move {
            tokio::spawn(async move {
                let mut timed = Duration::ZERO;
                for i in 1..=iters {
                    let start = std::time::Instant::now();
                    bus.publish_event(&event()).await.unwrap();
                    timed += start.elapsed();
                    if paced && i % BURST == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                timed
            })
            .await
            .unwrap()
        })
    };

    let plain = rt.block_on(async { EventBus::new(MemoryProvider::default()) });
    let broker = common::slow_sink_broker();
    let attached = rt.block_on(async { EventBus::new(MemoryProvider::default()) });
    broker.attach(&attached);

    // Paced first, so that the saturated run's routing backlog cannot spill
    // into them.
    group.bench_function("paced_baseline_no_broker", |b| {
        b.iter_custom(|iters| publish_loop(&plain, iters, true));
    });
    group.bench_function("paced_broker_attached", |b| {
        b.iter_custom(|iters| publish_loop(&attached, iters, true));
    });
    group.bench_function("baseline_no_broker", |b| {
        b.iter_custom(|iters| publish_loop(&plain, iters, false));
    });
    group.bench_function("broker_attached", |b| {
        b.iter_custom(|iters| publish_loop(&attached, iters, false));
    });
    group.finish();
    rt.block_on(broker.shutdown());
    let m = broker.metrics();
    assert_eq!(m.rejected, 0);
    assert_eq!(m.delivered, m.enqueued);
    eprintln!(
        "broker: {} events routed, {} times the queue was full",
        m.routed, m.queue_full
    );
}

criterion_group!(benches, bench_route, bench_bus_publish);
criterion_main!(benches);
