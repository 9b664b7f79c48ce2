//! The bus's metrics as an operator reads them: each outcome of the
//! publish pipeline and of a consumer runner is counted once, in its counter.

#![allow(clippy::unwrap_used)]

mod common;

use common::{CollectRouter, FlakyDlq, RequireField, TestEncryptor, wait_until};
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

    // the router's refusal came after the provider stored the event: a
    // stored publish (and a router error), not a publish error
    let expected_publish = MetricsSnapshot {
        publish_total: 3,
        publish_errors: 5,
        validation_errors: 5,
        router_errors: 1,
        encrypt_total: 3,
        decrypt_total: 3,
        ..Default::default()
    };
    let m = bus.metrics().snapshot();
    assert_eq!(m.publish_latency.count, 3);
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
            // a backoff step is also the ack wait of its delivery: the final
            // delivery gets 5 s, so the DLQ's retry after its refusal never
            // races the delivery's expiry (which would give the event its
            // spare delivery and a second dead letter on a loaded machine)
            backoff: vec![Duration::from_millis(5), Duration::from_secs(5)],
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
            publish_total: 5,
            encrypt_total: 5,
            // 3 listed, then 4 deliveries
            decrypt_total: 7,
            subscribe_total: 1,
            handled_total: 1,
            handler_errors: 3,
            redeliveries: 2,
            // the failing event's second and third deliveries
            redelivered: 2,
            dlq_total: 1,
            dlq_errors: 1,
            ..expected_publish
        }
    );
}

/// Quantiles at the extremes, against the exact nearest-rank value (rank
/// `ceil(q * n)`, computed in integers): a single sample, zeros, the largest
/// duration, and no sample at all.
#[test]
fn latency_quantiles_at_the_extremes() {
    use event_bus::metrics::LatencyHistogram;
    let exact = |sorted: &[u64], num: u64, den: u64| -> u64 {
        let n = sorted.len() as u64;
        let rank = (num * n).div_ceil(den).max(1);
        sorted[usize::try_from(rank - 1).unwrap()]
    };
    let within = |got: u64, want: u64| got >= want && got - want <= want / 16;
    let cases: Vec<Vec<u64>> = vec![
        vec![0],
        vec![u64::MAX],
        vec![1_234_567],
        vec![0; 100],
        vec![u64::MAX; 3],
        [vec![0; 99], vec![u64::MAX]].concat(),
        [vec![1_000; 63], vec![1_000_000_000; 7]].concat(),
        (0..=1000).collect(),
    ];
    for mut values in cases {
        let h = LatencyHistogram::new();
        for v in &values {
            h.record_nanos(*v);
        }
        values.sort_unstable();
        let s = h.summary();
        assert_eq!(s.count, values.len() as u64);
        assert_eq!(s.max_ns, *values.last().unwrap());
        for (got, num, den) in [(s.p50_ns, 1, 2), (s.p90_ns, 9, 10), (s.p99_ns, 99, 100)] {
            let want = exact(&values, num, den);
            assert!(within(got, want), "q {num}/{den}: {got} vs {want}");
        }
        if values.len() == 1 {
            // one sample: every quantile is that sample, exactly
            assert_eq!((s.p50_ns, s.p99_ns), (values[0], values[0]));
        }
    }
    let empty = LatencyHistogram::new().summary();
    assert_eq!(
        (empty.count, empty.p50_ns, empty.p99_ns, empty.mean_ns()),
        (0, 0, 0, 0)
    );
}

/// The exposition at extreme values still parses as Prometheus does:
/// plain decimal numbers (no exponent), NaN only for quantiles without
/// observations, one sample per series.
#[test]
fn prometheus_text_at_extreme_values() {
    use event_bus::metrics::EventMetrics;
    let m = EventMetrics::new();
    m.add_lagged(u64::MAX);
    m.record_publish(Duration::MAX);
    m.record_publish(Duration::ZERO);
    let text = m.snapshot().to_prometheus();
    let mut series = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(series.insert(name.to_string()), "repeated: {line}");
        assert!(
            !value.contains(['e', 'E']) || value == "NaN",
            "exponent in {line}"
        );
        let parsed: f64 = value.parse().unwrap();
        assert!(parsed.is_finite() && parsed >= 0.0, "{line}");
    }
    assert!(text.contains("a3s_event_lagged_total 18446744073709551615\n"));
    assert!(text.contains("a3s_event_publish_latency_seconds_count 2\n"));
}

// ---------------------------------------------------------------------------
// Consumer outcomes that only the ConsumerReport and the logs used to show
// ---------------------------------------------------------------------------

fn one_delivery(subscriber_id: &str) -> (SubscriptionFilter, SubscribeOptions) {
    (
        SubscriptionFilter {
            subscriber_id: subscriber_id.into(),
            subjects: vec!["events.jobs.>".into()],
            durable: true,
        },
        SubscribeOptions {
            max_deliver: Some(1),
            ack_wait: Some(Duration::from_secs(5)),
            ..Default::default()
        },
    )
}

async fn failing(_r: ReceivedEvent) -> Result<(), BoxError> {
    Err("handler failed".into())
}

/// The Prometheus sample of `counter` (`a3s_event_<counter>_total`).
fn exported(m: &MetricsSnapshot, counter: &str) -> u64 {
    let prefix = format!("a3s_event_{counter}_total ");
    m.to_prometheus()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{counter} is not exported"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn an_exhausted_event_without_a_dlq_handler_counts_as_dropped() {
    let bus = EventBus::new(MemoryProvider::default());
    let (filter, options) = one_delivery("w");
    bus.update_subscription_with_options(filter, options)
        .await
        .unwrap();
    bus.publish("jobs", "x", "s", "src", json!(1))
        .await
        .unwrap();
    let consumer = bus
        .consume("w", failing, ConsumerConfig::default())
        .await
        .unwrap();
    wait_until("the event is terminated", || {
        consumer.report().terminated == 1
    })
    .await;
    consumer.shutdown(Duration::from_secs(1)).await;
    let m = bus.metrics().snapshot();
    assert_eq!(
        (m.dlq_dropped, m.dlq_total, m.dlq_errors, m.dlq_unsettled),
        (1, 0, 0, 0)
    );
    assert_eq!(exported(&m, "dlq_dropped"), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_dead_letter_refused_for_good_counts_as_unsettled_and_each_refusal_as_an_error() {
    let bus = EventBus::new(MemoryProvider::default());
    let dlq = Arc::new(FlakyDlq::default());
    dlq.then_permanent.store(usize::MAX, Ordering::SeqCst);
    bus.set_dlq_handler(dlq.clone());
    let (filter, options) = one_delivery("w");
    bus.update_subscription_with_options(filter, options)
        .await
        .unwrap();
    bus.publish("jobs", "x", "s", "src", json!(1))
        .await
        .unwrap();
    let config = ConsumerConfig {
        dlq_attempts: 2,
        ..ConsumerConfig::default()
    };
    let consumer = bus.consume("w", failing, config).await.unwrap();
    wait_until("the DLQ gives up", || consumer.report().dlq_failed == 1).await;
    consumer.shutdown(Duration::from_secs(1)).await;
    let m = bus.metrics().snapshot();
    // one event, two refusals, no dead letter
    assert_eq!(
        (m.dlq_unsettled, m.dlq_errors, m.dlq_total, m.dlq_dropped),
        (1, 2, 0, 0)
    );
    assert_eq!(exported(&m, "dlq_unsettled"), 1);
}

/// Every acknowledgement call fails.
struct RefusingAcker;

#[async_trait::async_trait]
impl event_core::Acker for RefusingAcker {
    async fn ack(&self) -> event_core::Result<()> {
        Err(event_core::Error::Connection("ack refused".into()))
    }
    async fn nak(&self, _delay: Option<Duration>) -> event_core::Result<()> {
        Err(event_core::Error::Connection("nak refused".into()))
    }
    async fn term(&self) -> event_core::Result<()> {
        Err(event_core::Error::Connection("term refused".into()))
    }
    async fn in_progress(&self) -> event_core::Result<()> {
        Err(event_core::Error::Connection("in_progress refused".into()))
    }
}

/// Hands out `left` first deliveries whose acknowledgements fail, then ends.
struct UnsettleableSubscription {
    left: u64,
}

#[async_trait::async_trait]
impl event_core::Subscription for UnsettleableSubscription {
    async fn next(&mut self) -> event_core::Result<Option<ReceivedEvent>> {
        Ok(self.next_manual_ack().await?.map(|p| p.received))
    }
    async fn next_manual_ack(&mut self) -> event_core::Result<Option<event_core::PendingEvent>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let received = ReceivedEvent {
            event: Arc::new(Event::new("events.a.b", "a", "s", "src", json!(self.left))),
            sequence: 10 - self.left,
            num_delivered: 1,
            stream: Arc::from("test"),
        };
        Ok(Some(event_core::PendingEvent::new(
            received,
            None,
            Box::new(RefusingAcker),
        )))
    }
    async fn close(&mut self) -> event_core::Result<()> {
        Ok(())
    }
}

/// `handled_total` counts the handler's `Ok`, as its help says; an ack that
/// then fails is a settle error, in the metrics as in the report.
#[tokio::test(flavor = "current_thread")]
async fn handled_counts_the_handlers_ok_and_a_failed_ack_is_a_settle_error() {
    let bus = EventBus::new(MemoryProvider::default());
    let report = common::run_to_end(&bus, Box::new(UnsettleableSubscription { left: 3 })).await;
    assert_eq!((report.acked, report.settle_errors), (0, 3));
    let m = bus.metrics().snapshot();
    assert_eq!((m.handled_total, m.settle_errors), (3, 3));
    assert_eq!(exported(&m, "settle_errors"), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn a_delivery_abandoned_at_the_shutdown_deadline_counts_as_aborted() {
    let bus = EventBus::new(MemoryProvider::default());
    let (filter, mut options) = one_delivery("w");
    options.max_deliver = Some(5);
    bus.update_subscription_with_options(filter, options)
        .await
        .unwrap();
    bus.publish("jobs", "x", "s", "src", json!(1))
        .await
        .unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let started = started.clone();
        move |_r: ReceivedEvent| {
            let started = started.clone();
            async move {
                started.notify_one();
                std::future::pending::<Result<(), BoxError>>().await
            }
        }
    };
    let consumer = bus
        .consume("w", handler, ConsumerConfig::default())
        .await
        .unwrap();
    started.notified().await;
    let report = consumer.shutdown(Duration::from_millis(20)).await;
    assert_eq!(report.aborted, 1);
    let m = bus.metrics().snapshot();
    assert_eq!(m.consumer_aborted, 1);
    assert_eq!(exported(&m, "consumer_aborted"), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn an_undecryptable_delivery_without_a_dlq_handler_counts_as_dropped() {
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_encryptor(Arc::new(TestEncryptor { key: 3 }));
    bus.publish("jobs", "x", "s", "src", json!(1))
        .await
        .unwrap();
    bus.set_encryptor(Arc::new(TestEncryptor { key: 4 })); // key lost
    let mut sub = bus.wrap_subscription(
        bus.provider()
            .subscribe_durable("d", "events.>")
            .await
            .unwrap(),
    );
    assert!(matches!(
        sub.next_manual_ack().await,
        Err(event_core::Error::Decryption(_))
    ));
    let m = bus.metrics().snapshot();
    assert_eq!((m.dlq_dropped, m.decrypt_errors, m.dlq_total), (1, 1, 0));
}

/// `decrypt_errors` counts every failed decryption, not only deliveries: a
/// history read (`list_events`, `list_events_each`) of an undecryptable
/// event counts on every call (the docs say so, as a dashboard polling
/// history during a key rotation raises it). A `ProviderDlqHandler`'s own
/// encryptor is not counted in the bus's metrics.
#[tokio::test(flavor = "current_thread")]
async fn decrypt_errors_count_history_reads_and_not_a_dlq_handlers_own_encryption() {
    let provider = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    bus.set_encryptor(Arc::new(TestEncryptor { key: 3 }));
    let event = bus
        .publish("jobs", "x", "s", "src", json!(1))
        .await
        .unwrap();
    bus.set_encryptor(Arc::new(TestEncryptor { key: 4 })); // key lost
    for _ in 0..2 {
        let listed = bus.list_events_each(None, 10).await.unwrap();
        assert!(matches!(
            listed[..],
            [Err(event_core::Error::Decryption(_))]
        ));
    }
    assert!(bus.list_events(None, 10).await.is_err());
    let m = bus.metrics().snapshot();
    assert_eq!((m.decrypt_errors, m.decrypt_total), (3, 0), "{m:?}");

    let dlq = event_bus::ProviderDlqHandler::new(provider)
        .with_encryptor(Arc::new(TestEncryptor { key: 4 }));
    dlq.handle(event_core::DeadLetterEvent::new(event, "test"))
        .await
        .unwrap();
    assert_eq!(dlq.list(10).await.unwrap().len(), 1);
    let after = bus.metrics().snapshot();
    assert_eq!(
        (
            after.encrypt_total,
            after.decrypt_total,
            after.decrypt_errors
        ),
        (1, 0, 3),
        "{after:?}"
    );
}

/// A delivery that is not its event's first counts in `redelivered`,
/// whatever brought it back: here an earlier consumer that took the event
/// and never settled it (its ack wait expired), with no nak, so
/// `redeliveries` (naks) stays 0.
#[tokio::test(flavor = "current_thread")]
async fn a_redelivery_after_an_expired_ack_wait_counts_as_redelivered() {
    let bus = EventBus::new(MemoryProvider::default());
    let (filter, mut options) = one_delivery("w");
    options.max_deliver = None;
    options.ack_wait = Some(Duration::from_millis(200));
    bus.update_subscription_with_options(filter, options)
        .await
        .unwrap();
    bus.publish("jobs", "x", "s", "src", json!(1))
        .await
        .unwrap();
    // an earlier consumer takes the event and dies before settling it
    let mut subs = bus.create_subscriber("w").await.unwrap();
    let taken = subs[0].next_manual_ack().await.unwrap().unwrap();
    assert_eq!(taken.received.num_delivered, 1);
    drop(taken);
    drop(subs);

    let consumer = common::succeeding_consumer(&bus, "w").await;
    wait_until("the redelivery handled", || {
        bus.metrics().snapshot().handled_total == 1
    })
    .await;
    consumer.shutdown(Duration::from_secs(1)).await;
    let m = bus.metrics().snapshot();
    assert_eq!((m.redelivered, m.redeliveries), (1, 0));
    assert_eq!(exported(&m, "redelivered"), 1);
}
