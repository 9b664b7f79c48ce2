#![allow(missing_docs, clippy::unwrap_used)]
use event_core::{Event, EventProvider};
use event_memory::{MemoryConfig, MemoryProvider};
use std::sync::Arc;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n: usize = 100_000;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let p = MemoryProvider::new(MemoryConfig {
            subject_prefix: "events".into(),
            max_events: 1_000_000,
            channel_capacity: 10,
        })
        .unwrap();
        let evs: Vec<Event> = (0..n)
            .map(|i| {
                Event::new(
                    "events.c0.price.update",
                    "c0",
                    "price update",
                    "bench",
                    serde_json::json!({"symbol": "USD/CNY", "rate": 7.35, "seq": i}),
                )
            })
            .collect();
        let evs: Vec<Arc<Event>> = evs.into_iter().map(Arc::new).collect();
        let mut sub = p.subscribe("events.>").await.unwrap();
        if mode == "fan" {
            let mut subs = vec![sub];
            for _ in 0..3 {
                subs.push(p.subscribe("events.>").await.unwrap());
            }
            for chunk in evs.chunks(100) {
                for e in chunk {
                    p.publish_shared(e.clone()).await.unwrap();
                }
                for s in subs.iter_mut() {
                    for _ in 0..chunk.len() {
                        std::hint::black_box(s.next().await.unwrap());
                    }
                }
            }
        } else if mode == "sub" {
            for e in evs {
                p.publish_shared(e).await.unwrap();
                std::hint::black_box(sub.next().await.unwrap());
            }
        } else {
            for e in evs {
                p.publish_shared(e).await.unwrap();
            }
        }
    });
}
