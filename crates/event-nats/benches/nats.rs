//! NatsProvider vs raw async-nats against a local `nats-server` started for
//! the run (same server, same process, same run for provider and baseline).
//!
//! `cargo bench -p event-nats --bench nats -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/common/mod.rs"]
mod common;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use criterion::{BenchmarkId, Criterion, Throughput};
use event_core::{Event, EventProvider};
use event_nats::{NatsOptions, NatsProvider};
use futures_util::StreamExt;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WINDOW: usize = 256;
const BATCH: usize = 1000;

fn event(p: &NatsProvider, n: u64) -> Event {
    Event::new(
        p.build_subject("bench", "t"),
        "bench",
        "bench event",
        "bench",
        json!({ "n": n, "price": 7.35, "pair": "USD/CNY" }),
    )
}

async fn provider(server: &common::NatsServer, tag: &str) -> NatsProvider {
    let options = NatsOptions {
        max_inflight_acks: WINDOW,
        ..NatsOptions::default()
    };
    NatsProvider::connect_with(common::config(server, tag), options)
        .await
        .expect("connect")
}

async fn raw_publish(js: &jetstream::Context, e: &Event) -> jetstream::context::PublishAckFuture {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", e.id.as_str());
    let payload = serde_json::to_vec(e).expect("encode");
    js.publish_with_headers(e.subject.clone(), headers, payload.into())
        .await
        .expect("raw publish")
}

fn bench_publish(c: &mut Criterion, rt: &tokio::runtime::Runtime, server: &common::NatsServer) {
    let p = rt.block_on(provider(server, "pub"));
    let js = jetstream::new(p.client().clone());
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("publish_single_ack");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_async_nats", |b| {
        b.to_async(rt).iter(|| async {
            let e = event(&p, counter.fetch_add(1, Ordering::Relaxed));
            raw_publish(&js, &e).await.await.expect("ack");
        })
    });
    group.bench_function("nats_provider", |b| {
        b.to_async(rt).iter(|| async {
            let e = event(&p, counter.fetch_add(1, Ordering::Relaxed));
            p.publish(&e).await.expect("publish");
        })
    });
    group.finish();

    let mut group = c.benchmark_group("publish_batch_1000");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("raw_pipelined", WINDOW), |b| {
        b.to_async(rt).iter(|| async {
            let events: Vec<Event> = (0..BATCH as u64).map(|n| event(&p, n)).collect();
            let mut inflight: VecDeque<jetstream::context::PublishAckFuture> =
                VecDeque::with_capacity(WINDOW);
            for e in &events {
                if inflight.len() >= WINDOW
                    && let Some(ack) = inflight.pop_front()
                {
                    ack.await.expect("ack");
                }
                inflight.push_back(raw_publish(&js, e).await);
            }
            for ack in inflight {
                ack.await.expect("ack");
            }
        })
    });
    group.bench_function(BenchmarkId::new("nats_provider", WINDOW), |b| {
        b.to_async(rt).iter(|| async {
            let events: Vec<Event> = (0..BATCH as u64).map(|n| event(&p, n)).collect();
            for r in p.publish_batch(&events).await.expect("batch") {
                r.expect("published");
            }
        })
    });
    group.finish();
}

fn bench_consume(c: &mut Criterion, rt: &tokio::runtime::Runtime, server: &common::NatsServer) {
    let p = rt.block_on(provider(server, "con"));
    let js = jetstream::new(p.client().clone());
    let fill = |iters: u64| {
        let p = p.clone();
        async move {
            let events: Vec<Event> = (0..iters).map(|n| event(&p, n)).collect();
            for chunk in events.chunks(10_000) {
                for r in p.publish_batch(chunk).await.expect("batch") {
                    r.expect("published");
                }
            }
        }
    };
    let filter = p.category_subject("bench");
    let mut group = c.benchmark_group("consume_ack_durable");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    let raw_consumer: jetstream::consumer::PullConsumer = rt.block_on(async {
        let stream = js.get_stream(p.stream_name()).await.expect("stream");
        stream
            .create_consumer(pull::Config {
                durable_name: Some("raw".into()),
                filter_subject: filter.clone(),
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ..pull::Config::default()
            })
            .await
            .expect("raw consumer")
    });
    group.bench_function("raw_pull_consumer", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let fill = fill(iters);
            let consumer = raw_consumer.clone();
            async move {
                let mut messages = consumer
                    .stream()
                    .max_messages_per_batch(WINDOW)
                    .messages()
                    .await
                    .expect("messages");
                fill.await;
                let started = Instant::now();
                for _ in 0..iters {
                    let m = messages.next().await.expect("message").expect("ok");
                    let _event: Event = serde_json::from_slice(&m.payload).expect("decode");
                    m.ack().await.expect("ack");
                }
                started.elapsed()
            }
        })
    });
    // delete the raw consumer so it does not slow the stream down
    rt.block_on(async {
        let stream = js.get_stream(p.stream_name()).await.expect("stream");
        stream.delete_consumer("raw").await.expect("delete");
    });
    // with `max_deliver` (as bus consumers with dead-lettering set it) the
    // subscription fetches one event at a time: a fetched event it never
    // handed out could be on its last delivery (see the crate docs)
    for (name, max_deliver) in [
        ("nats_provider", None),
        ("nats_provider_max_deliver", Some(5)),
    ] {
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let fill = fill(iters);
                let p = p.clone();
                let filter = filter.clone();
                async move {
                    let opts = event_core::SubscribeOptions {
                        deliver_policy: event_core::DeliverPolicy::New,
                        max_deliver,
                        ..Default::default()
                    };
                    let mut sub = p
                        .subscribe_durable_with_options("prov", &filter, &opts)
                        .await
                        .expect("durable");
                    fill.await;
                    let started = Instant::now();
                    for _ in 0..iters {
                        sub.next().await.expect("next").expect("event");
                    }
                    sub.close().await.expect("close");
                    let elapsed = started.elapsed();
                    p.unsubscribe("prov").await.expect("unsubscribe");
                    elapsed
                }
            })
        });
    }
    group.finish();
}

/// Subject of event `n` in the history stream: three tokens marking
/// `n % 10 == 0`, `n % 100 == 0`, `n % 1000 == 0`, so wildcard filters match
/// 10%, 1% and 0.1% of the events, evenly spread.
fn history_subject(p: &NatsProvider, n: u64) -> String {
    let mark = |m| if n.is_multiple_of(m) { "x" } else { "y" };
    format!(
        "{}.{}.{}.{}.t",
        p.subject_prefix(),
        mark(10),
        mark(100),
        mark(1000)
    )
}

fn bench_history(c: &mut Criterion, rt: &tokio::runtime::Runtime, server: &common::NatsServer) {
    let p = rt.block_on(provider(server, "his"));
    rt.block_on(async {
        let events: Vec<Event> = (0..100_000u64)
            .map(|n| Event::new(history_subject(&p, n), "h", "h", "bench", json!({ "n": n })))
            .collect();
        for chunk in events.chunks(10_000) {
            for r in p.publish_batch(chunk).await.expect("batch") {
                r.expect("published");
            }
        }
    });
    let prefix = p.subject_prefix().to_string();
    let cases: [(&str, Option<String>); 7] = [
        ("no_filter", None),
        ("wildcard_100pct", Some(format!("{prefix}.*.*.*.*"))),
        ("wildcard_10pct", Some(format!("{prefix}.x.>"))),
        ("wildcard_1pct", Some(format!("{prefix}.x.x.*.*"))),
        ("wildcard_0.1pct", Some(format!("{prefix}.x.x.x.*"))),
        ("literal_90pct", Some(format!("{prefix}.y.y.y.t"))),
        ("literal_0.1pct", Some(format!("{prefix}.x.x.x.t"))),
    ];
    let mut group = c.benchmark_group("history_100k_stream_limit_100");
    group.sample_size(20);
    for (name, filter) in &cases {
        group.bench_function(*name, |b| {
            b.to_async(rt).iter(|| async {
                let h = p.history(filter.as_deref(), 100).await.expect("history");
                assert_eq!(h.len(), 100);
            })
        });
    }
    group.finish();
}

fn main() {
    let Some(server) = common::NatsServer::start("benches") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_publish(&mut c, &rt, &server);
    bench_consume(&mut c, &rt, &server);
    bench_history(&mut c, &rt, &server);
    c.final_summary();
    drop(server);
}
