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
//!   owned copies (`history`) and as shared `Arc`s (`history_shared`), and
//!   of a rare filter (0.1%, so the 100 span the whole store);
//! - `subject_match`: `SubjectPattern::matches`;
//! - then a paired report (`paired/...` lines): the publish cases run
//!   alternately round after round, with the median of per-round ratios,
//!   which is steadier than separate criterion runs on a shared machine.
//!
//! Each publish case times one run of N events from a provider (or raw
//! channel) with its subscribers already created, to the last delivery.

use a3s_event::provider::memory::{MemoryConfig, MemoryProvider};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use event_core::{Event, EventProvider, SubjectPattern, Subscription};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

type Raw = (
    tokio::sync::broadcast::Sender<Arc<Event>>,
    Vec<tokio::sync::broadcast::Receiver<Arc<Event>>>,
);

/// The raw baseline's channel: a `tokio::sync::broadcast` of `Arc<Event>`
/// with `k` receivers.
fn raw_channel(k: usize) -> Raw {
    let (tx, _) = tokio::sync::broadcast::channel::<Arc<Event>>(N * 2);
    let rxs = (0..k).map(|_| tx.subscribe()).collect();
    (tx, rxs)
}

/// The raw baseline of [`publish_to`]: sends `evs` to every receiver, copied
/// into a new `Arc` (`owned == false`, as `publish(&Event)` copies) or moved
/// in. The receivers keep what they get until after the measurement, as the
/// provider's store keeps its events: neither side frees events while timed.
async fn raw_to(
    (tx, rxs): Raw,
    evs: Vec<Event>,
    owned: bool,
) -> (Vec<Vec<Arc<Event>>>, Vec<Event>) {
    let consumers: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            tokio::spawn(async move {
                let mut kept = Vec::with_capacity(N);
                for _ in 0..N {
                    kept.push(rx.recv().await.expect("recv"));
                }
                kept
            })
        })
        .collect();
    let mut left = Vec::new();
    if owned {
        for e in evs {
            tx.send(Arc::new(e)).expect("send");
        }
    } else {
        for e in &evs {
            tx.send(Arc::new(e.clone())).expect("send");
        }
        left = evs;
    }
    let mut kept = Vec::new();
    for c in consumers {
        kept.push(c.await.expect("consumer"));
    }
    (kept, left)
}

/// The four cases of one subscriber count: (name, ours?, owned?).
const CASES: [(&str, bool, bool); 4] = [
    ("raw_broadcast_arc", false, false),
    ("memory_provider", true, false),
    ("raw_broadcast_arc_owned", false, true),
    ("memory_provider_shared", true, true),
];

/// One timed run of a case with `k` subscribers, set up outside the timing.
fn run_case(rt: &Runtime, template: &[Event], k: usize, ours: bool, owned: bool) -> Duration {
    let evs = template.to_vec();
    if ours {
        let (p, subs) = rt.block_on(async { with_subscribers(k) });
        let (elapsed, leftovers) = rt.block_on(async {
            let start = Instant::now();
            let out = publish_to(p, subs, evs, owned).await;
            (start.elapsed(), out)
        });
        drop(leftovers);
        elapsed
    } else {
        let raw = raw_channel(k);
        let (elapsed, leftovers) = rt.block_on(async {
            let start = Instant::now();
            let out = raw_to(raw, evs, owned).await;
            (start.elapsed(), out)
        });
        drop(leftovers);
        elapsed
    }
}

fn subscribers_group(c: &mut Criterion, name: &str, k: usize) {
    let rt = runtime();
    let template = events(N, 1);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements((N * k) as u64));
    for (case, ours, owned) in CASES {
        group.bench_function(case, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_case(&rt, &template, k, ours, owned))
                    .sum()
            });
        });
    }
    group.finish();
}

fn publish_one_subscriber(c: &mut Criterion) {
    subscribers_group(c, "publish_1_sub", 1);
}

fn fanout_four(c: &mut Criterion) {
    subscribers_group(c, "fanout_4", 4);
}

/// Paired report: the four cases run alternately, round after round (the
/// order rotating), so that load changes on a shared machine hit all of them
/// alike; prints the median rate of each and the median of the per-round
/// ratios ours/raw, borrowed and owned.
fn paired_report() {
    const ROUNDS: usize = 31;
    let rt = runtime();
    let template = events(N, 1);
    for (name, k) in [("publish_1_sub", 1usize), ("fanout_4", 4)] {
        let mut times: [Vec<f64>; 4] = Default::default();
        let mut borrowed = Vec::with_capacity(ROUNDS);
        let mut owned = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            let mut t = [0f64; 4];
            for i in 0..4 {
                let case = (i + round) % 4;
                let (_, ours, own) = CASES[case];
                t[case] = run_case(&rt, &template, k, ours, own).as_secs_f64();
            }
            for (all, now) in times.iter_mut().zip(t) {
                all.push(now);
            }
            borrowed.push(t[0] / t[1]);
            owned.push(t[2] / t[3]);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let per_sec = |secs: f64| (N * k) as f64 / secs;
        let mut rates = Vec::new();
        for ((case, _, _), mut t) in CASES.iter().zip(times) {
            rates.push(format!("{case} {:.0} k/s", per_sec(median(&mut t)) / 1e3));
        }
        println!(
            "paired/{name} ({ROUNDS} rounds, medians, deliveries/s): {}; \
             ours/raw borrowed {:.2}x, owned {:.2}x",
            rates.join(", "),
            median(&mut borrowed),
            median(&mut owned)
        );
    }
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
    // a rare subject: one event in 1,000, so the newest 100 span the whole
    // store
    let rare = provider(100_000);
    rt.block_on(async {
        for (i, mut e) in events(100_000, 10).into_iter().enumerate() {
            if i % 1_000 == 0 {
                e.subject = "events.rare.price.update".into();
                e.category = "rare".into();
            }
            rare.publish(&e).await.expect("publish");
        }
    });
    group.bench_function("shared_filter_0.1pct_limit_100_of_100k", |b| {
        b.to_async(&rt).iter(|| async {
            let got = rare
                .history_shared(Some("events.rare.>"), 100)
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

fn main() {
    benches();
    // only under `cargo bench` (which passes `--bench`): `cargo test --benches`
    // (CI's smoke run) and `cargo bench -- --test` run each case once instead
    if is_measuring() {
        paired_report();
    }
    Criterion::default().configure_from_args().final_summary();
}

/// Whether this is a measuring run (`cargo bench`), as criterion decides:
/// `--bench` given and neither `--test` nor `--list`.
fn is_measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}
