#![allow(missing_docs, clippy::unwrap_used)]
use event_core::{Event, EventProvider, Subscription};
use event_memory::{MemoryConfig, MemoryProvider};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let yield_every: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let n: usize = 200_000;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for round in 0..5 {
        rt.block_on(async {
            let p = MemoryProvider::new(MemoryConfig {
                subject_prefix: "events".into(),
                max_events: 1_000_000,
                channel_capacity: 10,
            })
            .unwrap();
            let evs: Vec<Arc<Event>> = (0..n)
                .map(|i| {
                    Arc::new(Event::new(
                        "events.c0.price.update",
                        "c0",
                        "price update",
                        "bench",
                        serde_json::json!({"symbol": "USD/CNY", "rate": 7.35, "seq": i}),
                    ))
                })
                .collect();
            let mut sub: Box<dyn Subscription> = p.subscribe("events.>").await.unwrap();
            let handle = tokio::spawn(async move {
                let start = Instant::now();
                let consumer = tokio::spawn(async move {
                    for _ in 0..n {
                        std::hint::black_box(sub.next().await.unwrap());
                    }
                });
                let mut pub_time = std::time::Duration::ZERO;
                for (i, e) in evs.into_iter().enumerate() {
                    p.publish_shared(e).await.unwrap();
                    if yield_every > 0 && i % yield_every == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                pub_time += start.elapsed();
                consumer.await.unwrap();
                (pub_time, start.elapsed(), p)
            });
            let (pt, total, _p) = handle.await.unwrap();
            println!("round {round}: publish loop {:?}, total {:?} => {:.0} k/s", pt, total, n as f64 / total.as_secs_f64() / 1e3);
        });
    }
}
