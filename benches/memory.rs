//! MemoryProvider throughput against raw baselines measured in the same run.
//!
//! - `publish_1_sub`: publish N events to one live subscriber, vs a raw
//!   `tokio::sync::broadcast` of `Arc<Event>` (the same event type), in two
//!   pairs: *borrowed* (`publish(&Event)` against `send(Arc::new(e.clone()))`:
//!   both copy the caller's event once, as a borrowed API must) and *owned*
//!   (`publish_shared(Arc<Event>)` against `send(Arc::new(e))` with `e` moved
//!   in: neither copies; the events are built before the timed part in both);
//! - `fanout_4`: one publisher, four subscribers (deliveries/s), borrowed and
//!   owned, with the raw broadcast of the owned events alongside;
//! - `publish_only`: store not full vs store full (every publish evicts);
//! - `history`: newest 100 of a filter matching 10% of 100,000 events, as
//!   owned copies (`history`) and as shared `Arc`s (`history_shared`);
//! - `subject_match`: `SubjectPattern::matches`.

use a3s_event::provider::memory::{MemoryConfig, MemoryProvider};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use event_core::{Event, EventProvider, SubjectPattern, Subscription};
use std::hint::black_box;
use std::sync::Arc;
use tokio::runtime::Runtime;

const N: usize = 10_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn events(n: usize, categories: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let cat = format!("c{}", i % categories);
            Event::new(
                format!("events.{cat}.price.update"),
                cat,
                "price update",
                "bench",
                serde_json::json!({"symbol": "USD/CNY", "rate": 7.35, "seq": i}),
            )
        })
        .collect()
}

fn provider(max_events: usize) -> MemoryProvider {
    MemoryProvider::new(MemoryConfig {
        subject_prefix: "events".into(),
        max_events,
        channel_capacity: N * 2,
    })
    .expect("config")
}

async fn drain(mut sub: Box<dyn Subscription>, n: usize) {
    for _ in 0..n {
        black_box(sub.next().await.expect("next").expect("event"));
    }
}

/// A fresh provider with `k` live subscriptions on every subject.
fn with_subscribers(k: usize) -> (MemoryProvider, Vec<Box<dyn Subscription>>) {
    let p = provider(1_000_000);
    let subs = (0..k)
        .map(|_| {
            futures_util::FutureExt::now_or_never(p.subscribe("events.>"))
                .expect("ready")
                .expect("subscribe")
        })
        .collect();
    (p, subs)
}

/// Publishes `evs` while `subs` drain them: borrowed (`publish(&Event)`, one
/// copy per event) or moved in (`publish_shared`, none). Returns what is
/// dropped outside the measurement.
async fn publish_to(
    p: MemoryProvider,
    subs: Vec<Box<dyn Subscription>>,
    evs: Vec<Event>,
    shared: bool,
) -> (MemoryProvider, Vec<Event>) {
    let consumers: Vec<_> = subs
        .into_iter()
        .map(|s| tokio::spawn(drain(s, N)))
        .collect();
    let mut left = Vec::new();
    if shared {
        for e in evs {
            p.publish_shared(Arc::new(e)).await.expect("publish");
        }
    } else {
        for e in &evs {
            p.publish(e).await.expect("publish");
        }
        left = evs;
    }
    for c in consumers {
        c.await.expect("consumer");
    }
    (p, left)
}

fn publish_one_subscriber(c: &mut Criterion) {
    let rt = runtime();
    let template = events(N, 1);
    let mut group = c.benchmark_group("publish_1_sub");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("raw_broadcast_arc", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let (tx, rx) = tokio::sync::broadcast::channel::<Arc<Event>>(N * 2);
                (template.clone(), tx, rx)
            },
            |(evs, tx, mut rx)| async move {
                let consumer = tokio::spawn(async move {
                    for _ in 0..N {
                        black_box(rx.recv().await.expect("recv"));
                    }
                });
                for e in &evs {
                    tx.send(Arc::new(e.clone())).expect("send");
                }
                consumer.await.expect("consumer");
                evs // dropped outside the measurement
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("memory_provider", |b| {
        b.to_async(&rt).iter_batched(
            || (with_subscribers(1), template.clone()),
            |((p, subs), evs)| publish_to(p, subs, evs, false),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("raw_broadcast_arc_owned", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let (tx, rx) = tokio::sync::broadcast::channel::<Arc<Event>>(N * 2);
                (template.clone(), tx, rx)
            },
            |(evs, tx, mut rx)| async move {
                let consumer = tokio::spawn(async move {
                    let mut kept = Vec::with_capacity(N);
                    for _ in 0..N {
                        kept.push(rx.recv().await.expect("recv"));
                    }
                    kept
                });
                for e in evs {
                    tx.send(Arc::new(e)).expect("send");
                }
                // the provider keeps its events in the store: keep them here
                // too, so that neither side frees events inside the measurement
                consumer.await.expect("consumer")
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("memory_provider_shared", |b| {
        b.to_async(&rt).iter_batched(
            || (with_subscribers(1), template.clone()),
            |((p, subs), evs)| publish_to(p, subs, evs, true),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn fanout_four(c: &mut Criterion) {
    let rt = runtime();
    let template = events(N, 1);
    let mut group = c.benchmark_group("fanout_4");
    group.throughput(Throughput::Elements((N * 4) as u64));
    group.bench_function("memory_provider", |b| {
        b.to_async(&rt).iter_batched(
            || (with_subscribers(4), template.clone()),
            |((p, subs), evs)| publish_to(p, subs, evs, false),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("memory_provider_shared", |b| {
        b.to_async(&rt).iter_batched(
            || (with_subscribers(4), template.clone()),
            |((p, subs), evs)| publish_to(p, subs, evs, true),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("raw_broadcast_arc_owned", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let (tx, _) = tokio::sync::broadcast::channel::<Arc<Event>>(N * 2);
                let rxs: Vec<_> = (0..4).map(|_| tx.subscribe()).collect();
                (template.clone(), tx, rxs)
            },
            |(evs, tx, rxs)| async move {
                let consumers: Vec<_> = rxs
                    .into_iter()
                    .map(|mut rx| {
                        // kept until after the measurement, as the
                        // provider's store keeps its events
                        tokio::spawn(async move {
                            let mut kept = Vec::with_capacity(N);
                            for _ in 0..N {
                                kept.push(rx.recv().await.expect("recv"));
                            }
                            kept
                        })
                    })
                    .collect();
                for e in evs {
                    tx.send(Arc::new(e)).expect("send");
                }
                let mut kept = Vec::new();
                for c in consumers {
                    kept.push(c.await.expect("consumer"));
                }
                kept
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn publish_only(c: &mut Criterion) {
    let rt = runtime();
    let template = events(N, 1);
    let mut group = c.benchmark_group("publish_only");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("not_full", |b| {
        b.to_async(&rt).iter_batched(
            || (template.clone(), provider(1_000_000)),
            |(evs, p)| async move {
                for e in &evs {
                    p.publish(e).await.expect("publish");
                }
                (evs, p)
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("full_evicting", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let p = provider(1_000);
                for e in events(1_000, 1) {
                    // setup runs inside the runtime: opt out of the
                    // cooperative budget, or a publish may yield here
                    futures_util::FutureExt::now_or_never(tokio::task::unconstrained(
                        p.publish(&e),
                    ))
                    .expect("ready")
                    .expect("publish");
                }
                (template.clone(), p)
            },
            |(evs, p)| async move {
                for e in &evs {
                    p.publish(e).await.expect("publish");
                }
                (evs, p)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn history(c: &mut Criterion) {
    let rt = runtime();
    let p = provider(100_000);
    rt.block_on(async {
        for e in events(100_000, 10) {
            p.publish(&e).await.expect("publish");
        }
    });
    let mut group = c.benchmark_group("history");
    group.bench_function("filter_10pct_limit_100_of_100k", |b| {
        b.to_async(&rt).iter(|| async {
            let got = p.history(Some("events.c3.>"), 100).await.expect("history");
            assert_eq!(got.len(), 100);
            black_box(got);
        });
    });
    group.bench_function("shared_filter_10pct_limit_100_of_100k", |b| {
        b.to_async(&rt).iter(|| async {
            let got = p
                .history_shared(Some("events.c3.>"), 100)
                .await
                .expect("history");
            assert_eq!(got.len(), 100);
            black_box(got);
        });
    });
    group.finish();
}

fn subject_match(c: &mut Criterion) {
    let pattern = SubjectPattern::parse("events.*.forex.>").expect("pattern");
    let subjects = [
        "events.market.forex.usd_cny",
        "events.market.stocks.aapl",
        "events.system.forex.rates.eur",
        "events.market",
    ];
    let mut group = c.benchmark_group("subject_match");
    group.throughput(Throughput::Elements(subjects.len() as u64));
    group.bench_function("pattern_matches", |b| {
        b.iter(|| {
            for s in &subjects {
                black_box(pattern.matches(black_box(s)));
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = publish_one_subscriber, fanout_four, publish_only, history, subject_match
}
criterion_main!(benches);
