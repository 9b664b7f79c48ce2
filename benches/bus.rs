//! `EventBus::publish` with one subscriber consuming through the bus, against
//! the memory provider alone doing the same, in one run.
//!
//! ```text
//! cargo bench --bench bus -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Each sample publishes `iters` events while one live subscriber reads them
//! all; the time is until the subscriber has received the last one. The
//! target is bus ≥ 0.8 × provider throughput.

use a3s_event::provider::EventProvider;
use a3s_event::provider::memory::{MemoryConfig, MemoryProvider};
use a3s_event::{Event, EventBus, Subscription};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn provider() -> Arc<MemoryProvider> {
    Arc::new(
        MemoryProvider::new(MemoryConfig {
            subject_prefix: "events".to_string(),
            max_events: 1 << 20,
            channel_capacity: 1 << 20,
        })
        .expect("config"),
    )
}

/// Reads `n` events (counting skipped ones reported as lag).
fn reader(mut sub: Box<dyn Subscription>, n: u64) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut got = 0;
        let mut lagged = 0;
        while got + lagged < n {
            match sub.next().await {
                Ok(Some(_)) => got += 1,
                Ok(None) => break,
                Err(a3s_event::Error::Lagged { missed }) => lagged += missed,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            lagged, 0,
            "the subscriber lagged (events were evicted before it read them); raise max_events"
        );
        got
    })
}

fn payload(i: u64) -> serde_json::Value {
    serde_json::json!({"rate": 7.35, "i": i})
}

async fn provider_only(iters: u64) -> Duration {
    let p = provider();
    let sub = p.subscribe("events.bench.>").await.expect("subscribe");
    let start = Instant::now();
    let read = reader(sub, iters);
    for i in 0..iters {
        let subject = p.build_subject("bench", "tick");
        let event = Event::new(subject, "bench", "tick", "bench", payload(i));
        p.publish(&event).await.expect("publish");
    }
    assert_eq!(read.await.expect("reader"), iters);
    start.elapsed()
}

async fn through_bus(iters: u64) -> Duration {
    let bus = EventBus::from_arc(provider());
    let sub = bus.subscribe("events.bench.>").await.expect("subscribe");
    let start = Instant::now();
    let read = reader(sub, iters);
    for i in 0..iters {
        bus.publish("bench", "tick", "tick", "bench", payload(i))
            .await
            .expect("publish");
    }
    assert_eq!(read.await.expect("reader"), iters);
    start.elapsed()
}

/// The bus with an AES-256-GCM encryptor: encrypt on publish, decrypt for
/// the subscriber (issue 5's "bus publish with an encryptor vs without").
#[cfg(feature = "crypto")]
async fn through_bus_encrypted(iters: u64) -> Duration {
    let bus = EventBus::from_arc(provider());
    bus.set_encryptor(Arc::new(a3s_event::crypto::Aes256GcmEncryptor::new(
        "bench", &[5; 32],
    )));
    let sub = bus.subscribe("events.bench.>").await.expect("subscribe");
    let start = Instant::now();
    let read = reader(sub, iters);
    for i in 0..iters {
        bus.publish("bench", "tick", "tick", "bench", payload(i))
            .await
            .expect("publish");
    }
    assert_eq!(read.await.expect("reader"), iters);
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    // Two set-ups: one thread (the publisher runs, then the subscriber
    // drains: pure CPU cost per event) and two worker threads (publisher and
    // subscriber in parallel, with cross-thread wake-ups).
    let runtimes = [
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        ),
        (
            "multi_thread",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        ),
    ];
    for (name, rt) in &runtimes {
        let mut group = c.benchmark_group(format!("publish_with_one_subscriber/{name}"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(20);
        group.bench_function("provider_only", |b| {
            b.to_async(rt).iter_custom(provider_only);
        });
        group.bench_function("event_bus", |b| {
            b.to_async(rt).iter_custom(through_bus);
        });
        #[cfg(feature = "crypto")]
        group.bench_function("event_bus_encrypted", |b| {
            b.to_async(rt).iter_custom(through_bus_encrypted);
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
