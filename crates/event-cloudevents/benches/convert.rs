//! Conversion cost: Event ↔ CloudEvent and the structured / binary encodings,
//! against the baseline of encoding the A3S event itself as JSON.
#![allow(clippy::unwrap_used)] // a bench aborts on a broken fixture

use criterion::{Criterion, criterion_group, criterion_main};
use event_cloudevents::{CloudEvent, from_structured, to_structured};
use event_core::Event;
use std::hint::black_box;

fn sample() -> Event {
    Event::typed(
        "events.market.forex.usd_cny",
        "market",
        "forex.rate_change",
        2,
        "USD/CNY broke through 7.35",
        "reuters",
        serde_json::json!({"pair": "USD/CNY", "rate": 7.3521, "ticks": [1, 2, 3, 4]}),
    )
    .with_metadata("region", "asia")
    .with_metadata("X-Request-Id", "r-42")
    .with_metadata(
        "ce-traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
}

fn bench(c: &mut Criterion) {
    let event = sample();
    let ce = CloudEvent::from(&event);
    let a3s_json = serde_json::to_vec(&event).unwrap();
    let ce_json = to_structured(&event).unwrap();

    let mut g = c.benchmark_group("cloudevents");
    g.bench_function("baseline/a3s_json_encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&event)).unwrap())
    });
    g.bench_function("baseline/a3s_json_decode", |b| {
        b.iter(|| serde_json::from_slice::<Event>(black_box(&a3s_json)).unwrap())
    });
    g.bench_function("event_to_cloudevent", |b| {
        b.iter(|| CloudEvent::from(black_box(&event)))
    });
    g.bench_function("cloudevent_to_event", |b| {
        b.iter(|| Event::try_from(black_box(ce.clone())).unwrap())
    });
    g.bench_function("baseline/cloudevent_clone", |b| {
        b.iter(|| black_box(&ce).clone())
    });
    g.bench_function("structured_encode", |b| {
        b.iter(|| to_structured(black_box(&event)).unwrap())
    });
    g.bench_function("structured_decode", |b| {
        b.iter(|| from_structured(black_box(&ce_json)).unwrap())
    });
    #[cfg(feature = "http")]
    {
        use event_cloudevents::http::{Mode, from_http, to_http};
        let msg = to_http(&event, Mode::Binary).unwrap();
        g.bench_function("http_binary_encode", |b| {
            b.iter(|| to_http(black_box(&event), Mode::Binary).unwrap())
        });
        g.bench_function("http_binary_decode", |b| {
            b.iter(|| from_http(black_box(&msg.headers), msg.body.clone()).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
