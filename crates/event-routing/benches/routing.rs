//! Per-event routing cost against 10, 100 and 1,000 triggers, with the
//! brute-force baseline (evaluating every filter, as an unindexed broker
//! does) measured in the same run.

#![allow(missing_docs, clippy::unwrap_used)]

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

criterion_group!(benches, bench_route);
criterion_main!(benches);
