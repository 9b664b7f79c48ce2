//! Paired companion to `routing.rs`'s `bus_publish_slow_sinks`: the same
//! paced publish (bursts of 64, then a >= 1 ms Tokio sleep, only the
//! publishes timed; one trigger, 10 ms `InProcessSink`, memory provider,
//! 2-worker runtime), but alternating short rounds without and with the
//! broker and reporting the median of the per-round ratios. On a shared,
//! loaded machine criterion's separate runs drift by more than the effect;
//! alternating rounds see the same load. Every round starts with the broker
//! idle (untimed), so the baseline never shares the machine with routing.
//!
//! `cargo bench -p event-routing --bench bus_publish_paired [-- ROUNDS]`
//! (`cargo test --benches` and `cargo bench -- --test` run two unmeasured
//! rounds as a smoke test)

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use event_bus::EventBus;
use event_core::Event;
use event_memory::MemoryProvider;
use std::time::{Duration, Instant};

const BURST: u64 = 64;
const EVENTS_PER_ROUND: u64 = 10 * BURST;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` (CI's smoke run) passes no `--bench`, and
    // `cargo bench -- --test` asks for a test run as criterion reads it: two
    // rounds and no warm-up check that the bench still runs; `cargo bench`
    // measures; `--list` (criterion's listing) runs nothing
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        println!("bus_publish_paired: benchmark");
        return;
    }
    let measuring = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if measuring { 300 } else { 2 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let plain = rt.block_on(async { EventBus::new(MemoryProvider::default()) });
    let attached = rt.block_on(async { EventBus::new(MemoryProvider::default()) });
    let broker = common::slow_sink_broker();
    broker.attach(&attached);

    // Nanoseconds per publish over one round.
    let round = |bus: &EventBus| -> f64 {
        let bus = bus.clone();
        let timed = rt.block_on(async move {
            tokio::spawn(async move {
                let mut timed = Duration::ZERO;
                for i in 1..=EVENTS_PER_ROUND {
                    let event = Event::new(
                        "events.orders.created",
                        "orders",
                        "new order",
                        "shop",
                        serde_json::json!({"id": 42, "total": 99.5}),
                    );
                    let start = Instant::now();
                    bus.publish_event(&event).await.unwrap();
                    timed += start.elapsed();
                    if i % BURST == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                timed
            })
            .await
            .unwrap()
        });
        timed.as_nanos() as f64 / EVENTS_PER_ROUND as f64
    };
    // Warm up both.
    for _ in 0..if measuring { 10 } else { 0 } {
        round(&plain);
        round(&attached);
    }
    let (mut without, mut with, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    // Each round starts with the broker idle, so that the baseline round
    // does not share the machine with the previous round's routing.
    let idle = || rt.block_on(broker.wait_idle());
    for _ in 0..rounds {
        idle();
        let a = round(&plain);
        idle();
        let b = round(&attached);
        without.push(a);
        with.push(b);
        ratios.push(a / b);
    }
    rt.block_on(broker.shutdown());
    let m = broker.metrics();
    assert_eq!(m.delivered, m.enqueued);
    println!(
        "paced bus publish, {rounds} paired rounds of {EVENTS_PER_ROUND}: \
         no broker {:.0} ns, broker attached {:.0} ns (medians); \
         median ratio (no broker / broker) {:.3}",
        median(&mut without),
        median(&mut with),
        median(&mut ratios)
    );
}
