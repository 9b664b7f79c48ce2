//! The bus's metrics as an operator reads them: each outcome of the
//! publish pipeline and of a consumer runner is counted once, in its counter.

#![allow(clippy::unwrap_used)]

mod common;

use common::{CollectRouter, FlakyDlq, RequireField, TestEncryptor};
use event_bus::metrics::MetricsSnapshot;
use event_bus::{ConsumerConfig, EventBus};
use event_core::{
    BoxError, DlqHandler, Event, ReceivedEvent, SubscribeOptions, SubscriptionFilter,
};
use event_memory::MemoryProvider;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

async fn wait_for_dead_letters(dlq: &dyn DlqHandler, n: usize) {
    let start = Instant::now();
    while dlq.count().await.unwrap() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {n} dead letters"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Each outcome of the pipeline and of a consumer runner lands in its
/// counter exactly once, and in no other: the whole snapshot is compared.
#[tokio::test(flavor = "current_thread")]
async fn every_outcome_is_counted_once_in_its_counter() {
    let bus = EventBus::new(MemoryProvider::default())
        .with_schema_registry(Arc::new(RequireField("must")));
    bus.set_encryptor(Arc::new(TestEncryptor { key: 1 }));
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    let dlq = Arc::new(FlakyDlq::default());
    dlq.refusals.store(1, Ordering::SeqCst); // one transient refusal
    bus.set_dlq_handler(dlq.clone());

    // publish: ok, bad category, bad subject, schema, router refusal
    bus.publish("ok", "a", "s", "src", json!({"n": 1}))
        .await
        .unwrap();
    bus.publish("", "a", "s", "src", json!(1))
        .await
        .unwrap_err();
    let bad = Event::new("nope.x.y", "x", "s", "src", json!(1));
    bus.publish_event(&bad).await.unwrap_err();
    bus.publish_typed("ok", "a", "t", 1, "s", "src", json!({}))
        .await
        .unwrap_err();
    router.refuse.store(true, Ordering::SeqCst);
    bus.publish("ok", "a", "s", "src", json!(1))
        .await
        .unwrap_err();
    router.refuse.store(false, Ordering::SeqCst);
    // batch: ok, bad subject, schema failure
    let batch = [
        Event::new("events.ok.b", "ok", "s", "src", json!(2)),
        bad.clone(),
        Event::typed("events.ok.b", "ok", "t", 1, "s", "src", json!({})),
    ];
    let results = bus.publish_batch(&batch).await.unwrap();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    // reading decrypts the three stored events
    assert_eq!(bus.list_events(Some("ok"), 10).await.unwrap().len(), 3);

    let expected_publish = MetricsSnapshot {
        publish_total: 2,
        publish_errors: 6,
        validation_errors: 5,
        router_errors: 1,
        encrypt_total: 3,
        decrypt_total: 3,
        ..Default::default()
    };
    let m = bus.metrics().snapshot();
    assert_eq!(m.publish_latency.count, 2);
    assert_eq!(
        MetricsSnapshot {
            publish_latency: Default::default(),
            ..m
        },
        expected_publish
    );

    // a consumer: "retry" fails once then succeeds; "dead" fails twice and
    // goes to the DLQ, which refuses once (transient) then takes it
    bus.update_subscription_with_options(
        SubscriptionFilter {
            subscriber_id: "w".into(),
            subjects: vec!["events.jobs.>".into()],
            durable: true,
        },
        SubscribeOptions {
            max_deliver: Some(2),
            backoff: vec![Duration::from_millis(5)],
            ack_wait: Some(Duration::from_secs(5)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    bus.publish("jobs", "retry", "s", "src", json!({"fail": 1}))
        .await
        .unwrap();
    bus.publish("jobs", "dead", "s", "src", json!({"fail": 9}))
        .await
        .unwrap();
    let consumer = bus
        .consume(
            "w",
            |r: ReceivedEvent| async move {
                if r.num_delivered <= r.event.payload["fail"].as_u64().unwrap() {
                    Err::<(), BoxError>("failed".into())
                } else {
                    Ok(())
                }
            },
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
    wait_for_dead_letters(&*dlq, 1).await;
    let start = Instant::now();
    while consumer.report().acked < 1 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = consumer.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        (report.acked, report.retried, report.dead_lettered),
        (1, 2, 1)
    );
    let m = bus.metrics().snapshot();
    assert_eq!(
        MetricsSnapshot {
            publish_latency: Default::default(),
            ..m
        },
        MetricsSnapshot {
            publish_total: 4,
            encrypt_total: 5,
            // 3 listed, then 4 deliveries
            decrypt_total: 7,
            subscribe_total: 1,
            handled_total: 1,
            handler_errors: 3,
            redeliveries: 2,
            dlq_total: 1,
            dlq_errors: 1,
            ..expected_publish
        }
    );
}
