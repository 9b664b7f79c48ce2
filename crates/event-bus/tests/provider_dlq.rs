//! The provider-backed DLQ and re-drive.
#![allow(clippy::unwrap_used)]

mod common;

use common::{CollectRouter, RequireField, TestEncryptor};
use event_bus::dlq::{DEAD_LETTER_EVENT_TYPE, ProviderDlqHandler};
use event_bus::{ConsumerConfig, ConsumerHandle, EventBus, PlaintextPolicy};
use event_core::{
    BoxError, DeadLetterEvent, DlqHandler, Error, Event, EventEncryptor, EventProvider,
    ReceivedEvent, SubscribeOptions, SubscriptionFilter,
};
use event_crypto::Aes256GcmEncryptor;
use event_memory::MemoryProvider;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn setup() -> (
    EventBus,
    Arc<dyn EventProvider>,
    Arc<ProviderDlqHandler>,
    Arc<TestEncryptor>,
) {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let enc = Arc::new(TestEncryptor { key: 11 });
    bus.set_encryptor(enc.clone());
    let dlq = Arc::new(ProviderDlqHandler::new(provider.clone()).with_encryptor(enc.clone()));
    bus.set_dlq_handler(dlq.clone());
    (bus, provider, dlq, enc)
}

#[tokio::test]
async fn dead_letters_are_new_encrypted_events_with_the_original_in_metadata() {
    let (_bus, provider, dlq, enc) = setup();
    let original = Event::new(
        "events.orders.new",
        "orders",
        "s",
        "src",
        json!({"card": "4111"}),
    );
    let dead = DeadLetterEvent::new(original.clone(), "boom")
        .with_attempts(3)
        .with_first_failure_at(5);
    dlq.handle(dead.clone()).await.unwrap();
    // the same dead letter handed over again (a retry) is stored once
    dlq.handle(dead.clone()).await.unwrap();
    // and so is the dead letter of the event's spare delivery (its final
    // delivery was dead-lettered, then its holder died before settling it)
    dlq.handle(dead.clone().with_attempts(4)).await.unwrap();
    let stored = provider.history(Some("events.dlq.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let e = &stored[0];
    assert_eq!(e.subject, "events.dlq.orders");
    assert_ne!(e.id, original.id, "dead letters get a new id");
    assert_eq!(e.event_type, DEAD_LETTER_EVENT_TYPE);
    assert_eq!(e.metadata["a3s.original_id"], original.id);
    assert_eq!(e.metadata["a3s.original_subject"], "events.orders.new");
    assert!(
        enc.is_encrypted(&e.payload),
        "stored plaintext: {}",
        e.payload
    );
    assert!(!e.payload.to_string().contains("4111"));
    let listed = dlq.list(10).await.unwrap();
    assert_eq!(listed, vec![dead]);
    assert_eq!(dlq.count().await.unwrap(), 1);
}

/// A durable subscriber `w` on `events.orders.>` whose events are
/// dead-lettered after `max_deliver` deliveries (5 ms apart).
async fn subscribe_w_to_orders(bus: &EventBus, max_deliver: u64) {
    bus.update_subscription_with_options(
        SubscriptionFilter {
            subscriber_id: "w".into(),
            subjects: vec!["events.orders.>".into()],
            durable: true,
        },
        SubscribeOptions {
            max_deliver: Some(max_deliver),
            backoff: vec![Duration::from_millis(5)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

/// A consumer runner on `w` whose handler fails every event but a
/// re-driven copy.
async fn fails_unless_redriven(bus: &EventBus) -> ConsumerHandle {
    bus.consume(
        "w",
        |r: ReceivedEvent| async move {
            if r.event.metadata.contains_key("a3s.redriven_from") {
                Ok::<(), BoxError>(())
            } else {
                Err("downstream unavailable".into())
            }
        },
        ConsumerConfig::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn runner_dead_letters_to_the_provider_and_redrive_republishes_once() {
    let (bus, provider, dlq, _) = setup();
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    subscribe_w_to_orders(&bus, 2).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            bus.publish("orders", "new", "s", "src", json!({"i": i}))
                .await
                .unwrap()
                .id,
        );
    }
    let consumer = fails_unless_redriven(&bus).await;
    let start = Instant::now();
    while consumer.report().dead_lettered < 3 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dead = dlq.list(10).await.unwrap();
    assert_eq!(dead.len(), 3);
    assert!(
        dead.iter()
            .all(|d| d.delivery_attempts == 2 && d.reason == "downstream unavailable")
    );

    let report = dlq.redrive(&bus, 100).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (3, 0));
    // a second re-drive finds nothing new
    assert_eq!(dlq.redrive(&bus, 100).await.unwrap().redriven, 0);
    while consumer.report().acked < 3 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    consumer.shutdown(Duration::from_secs(1)).await;
    // the re-driven copies: fresh ids, original subject, routed and encrypted
    let redriven: Vec<Event> = bus
        .list_events(Some("orders"), 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.metadata.contains_key("a3s.redriven_from"))
        .collect();
    assert_eq!(redriven.len(), 3);
    let mut from: Vec<String> = redriven
        .iter()
        .map(|e| e.metadata["a3s.redriven_from"].clone())
        .collect();
    from.sort();
    ids.sort();
    assert_eq!(from, ids);
    assert!(
        redriven
            .iter()
            .all(|e| !ids.contains(&e.id) && e.subject == "events.orders.new")
    );
    assert_eq!(router.routed.lock().unwrap().len(), 6);
    assert_eq!(
        provider
            .history(Some("events.dlq.>"), 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn redrive_limits_and_failed_republish_keeps_the_letter() {
    let (bus, _provider, dlq, _) = setup();
    for i in 0..3 {
        let e = Event::new("events.jobs.run", "jobs", "s", "src", json!(i));
        dlq.handle(DeadLetterEvent::new(e, "x")).await.unwrap();
    }
    assert_eq!(dlq.redrive(&bus, 1).await.unwrap().redriven, 1);
    let router = Arc::new(CollectRouter::default());
    router.refuse.store(true, Ordering::SeqCst);
    bus.set_router(router.clone());
    assert!(dlq.redrive(&bus, 10).await.is_err());
    router.refuse.store(false, Ordering::SeqCst);
    assert_eq!(dlq.redrive(&bus, 10).await.unwrap().redriven, 2);
    assert_eq!(dlq.redrive(&bus, 0).await.unwrap().redriven, 0);
    // the refused attempt was stored, and its retry deduplicated: 3 copies
    assert_eq!(bus.list_events(Some("jobs"), 10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn configuration_and_subjects() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    assert!(
        ProviderDlqHandler::new(provider.clone())
            .with_category("a.b")
            .is_err()
    );
    let dlq = ProviderDlqHandler::new(provider)
        .with_category("deadletters")
        .unwrap();
    assert_eq!(dlq.filter_subject(), "events.deadletters.>");
    assert_eq!(dlq.subject_for("market"), "events.deadletters.market");
    assert_eq!(
        dlq.subject_for("bad category"),
        "events.deadletters.unknown"
    );
    // an undecodable-looking category still stores fine
    let e = Event::new("events.x.y", "", "s", "src", json!(null));
    dlq.handle(DeadLetterEvent::new(e, "r")).await.unwrap();
    assert_eq!(dlq.count().await.unwrap(), 1);
}

/// [`TestEncryptor`] with a key ring: encrypts under `active`, decrypts
/// under any key in `keys` (which can grow, as a recovered key is added).
struct RingEncryptor {
    active: u8,
    keys: std::sync::Mutex<Vec<u8>>,
}

impl EventEncryptor for RingEncryptor {
    fn encrypt(
        &self,
        event_id: &str,
        payload: &serde_json::Value,
    ) -> event_core::Result<serde_json::Value> {
        TestEncryptor { key: self.active }.encrypt(event_id, payload)
    }

    fn decrypt(
        &self,
        event_id: &str,
        payload: &serde_json::Value,
    ) -> event_core::Result<serde_json::Value> {
        let key = payload["key"].as_u64().unwrap_or(0) as u8;
        if !self.keys.lock().unwrap().contains(&key) {
            return Err(event_core::Error::Decryption(format!("unknown key {key}")));
        }
        TestEncryptor { key }.decrypt(event_id, payload)
    }

    fn is_encrypted(&self, payload: &serde_json::Value) -> bool {
        TestEncryptor::default().is_encrypted(payload)
    }
}

#[tokio::test]
async fn redrive_of_an_undecryptable_event_republishes_its_plaintext_once_the_key_is_back() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    // A writer with a key the reader does not have (yet).
    let writer = EventBus::from_arc(provider.clone());
    writer.set_encryptor(Arc::new(TestEncryptor { key: 7 }));
    let ring = Arc::new(RingEncryptor {
        active: 11,
        keys: std::sync::Mutex::new(vec![11]),
    });
    let reader = EventBus::from_arc(provider.clone());
    reader.set_encryptor(ring.clone());
    let dlq = Arc::new(ProviderDlqHandler::new(provider.clone()).with_encryptor(ring.clone()));
    reader.set_dlq_handler(dlq.clone());

    let mut sub = reader.subscribe("events.orders.>").await.unwrap();
    let original = writer
        .publish("orders", "new", "s", "src", json!({"card": "4111"}))
        .await
        .unwrap();
    let lost = TestEncryptor { key: 9 };
    let mut never = Event::new("events.orders.new", "orders", "s", "src", json!(1));
    never.payload = lost.encrypt(&never.id, &never.payload).unwrap();
    provider.publish(&never).await.unwrap();
    for _ in 0..2 {
        let err = sub.next().await.unwrap_err();
        assert!(matches!(err, event_core::Error::Decryption(_)), "{err:?}");
    }
    assert_eq!(dlq.count().await.unwrap(), 2);

    // The missing key 7 is recovered; key 9 is not.
    ring.keys.lock().unwrap().push(7);
    let report = dlq.redrive(&reader, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 1));

    // (`list_events` would fail: the event under key 9 is still stored.)
    let redriven: Vec<Event> = provider
        .history(Some("events.orders.>"), 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.metadata.contains_key("a3s.redriven_from"))
        .collect();
    assert_eq!(redriven.len(), 1);
    let stored = &redriven[0];
    assert_eq!(stored.metadata["a3s.redriven_from"], original.id);
    // Stored encrypted once, under the ring's active key and the new id.
    assert_eq!(stored.payload["key"], json!(11));
    assert_eq!(
        TestEncryptor { key: 11 }
            .decrypt(&stored.id, &stored.payload)
            .unwrap(),
        json!({"card": "4111"})
    );
    // The subscriber gets the plaintext, not the envelope bound to the old id.
    let next = sub.next().await.unwrap().unwrap();
    assert_eq!(next.event.id, stored.id);
    assert_eq!(next.event.payload, json!({"card": "4111"}));
}

/// A provider written against the 0.3 API: only the convenience methods.
struct LegacyProvider(MemoryProvider);

#[async_trait::async_trait]
impl EventProvider for LegacyProvider {
    async fn publish(&self, event: &Event) -> event_core::Result<u64> {
        self.0.publish(event).await
    }
    async fn subscribe_durable(
        &self,
        name: &str,
        filter: &str,
    ) -> event_core::Result<Box<dyn event_core::Subscription>> {
        self.0.subscribe_durable(name, filter).await
    }
    async fn history(&self, filter: Option<&str>, limit: usize) -> event_core::Result<Vec<Event>> {
        self.0.history(filter, limit).await
    }
    async fn unsubscribe(&self, name: &str) -> event_core::Result<()> {
        self.0.unsubscribe(name).await
    }
    async fn info(&self) -> event_core::Result<event_core::ProviderInfo> {
        self.0.info().await
    }
    fn name(&self) -> &str {
        "legacy"
    }
}

#[tokio::test]
async fn redrive_works_on_a_provider_without_subscribe_options() {
    let provider: Arc<dyn EventProvider> = Arc::new(LegacyProvider(MemoryProvider::default()));
    let bus = EventBus::from_arc(provider.clone());
    let dlq = ProviderDlqHandler::new(provider.clone());
    for i in 0..3 {
        let event = Event::new("events.orders.new", "orders", "s", "src", json!({"i": i}));
        dlq.handle(DeadLetterEvent::new(event, "boom"))
            .await
            .unwrap();
    }
    let report = dlq.redrive(&bus, 2).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 0));
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0));
    let orders = bus.list_events(Some("orders"), 10).await.unwrap();
    let is: Vec<i64> = orders
        .iter()
        .rev()
        .map(|e| e.payload["i"].as_i64().unwrap())
        .collect();
    assert_eq!(is, vec![0, 1, 2]);
}

/// A dead letter nests its event's payload two levels deeper: one whose
/// payload, so nested, passes `MAX_PAYLOAD_DEPTH` is refused by `handle`
/// (`Serialization`, as a provider refuses it in plaintext) and nothing is
/// stored, whatever the encryptor: the dead letter of an event at the
/// publish limit, stored in an envelope, failed every decryption (`list`
/// failed on it, `redrive` skipped it). One within the limit is stored and
/// listed.
#[tokio::test]
async fn a_dead_letter_too_deep_to_read_back_is_refused_even_encrypted() {
    let (_bus, provider, dlq, _enc) = setup();
    let nested = |levels: usize| {
        let mut payload = json!({ "leaf": true });
        for _ in 1..levels {
            payload = json!([payload]);
        }
        payload
    };
    let event = |levels| Event::new("events.orders.new", "orders", "s", "src", nested(levels));
    let fits = event(event_core::MAX_PAYLOAD_DEPTH - 2);
    dlq.handle(DeadLetterEvent::new(fits.clone(), "r"))
        .await
        .unwrap();
    let err = dlq
        .handle(DeadLetterEvent::new(
            event(event_core::MAX_PAYLOAD_DEPTH),
            "r",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, event_core::Error::Serialization(_)),
        "{err:?}"
    );
    assert_eq!(provider.info().await.unwrap().messages, 1);
    let listed = dlq.list(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event, fits);
}

/// Two subscribers that both fail the same event each get a dead letter
/// naming them (one subscriber's failure does not hide the other's); a
/// letter handed over twice is still stored once; and re-driving both
/// letters republishes the event once, so each subscriber handles it once.
#[tokio::test]
async fn each_subscriber_that_fails_an_event_gets_its_own_dead_letter_and_redrive_copies_once() {
    let (bus, provider, dlq, _) = setup();
    let options = SubscribeOptions {
        max_deliver: Some(1),
        ..Default::default()
    };
    for id in ["w1", "w2"] {
        bus.update_subscription_with_options(
            SubscriptionFilter {
                subscriber_id: id.into(),
                subjects: vec!["events.orders.>".into()],
                durable: true,
            },
            options.clone(),
        )
        .await
        .unwrap();
    }
    let original = bus
        .publish("orders", "new", "s", "src", json!({"n": 1}))
        .await
        .unwrap();
    let handler = |r: ReceivedEvent| async move {
        if r.event.metadata.contains_key("a3s.redriven_from") {
            Ok::<(), BoxError>(())
        } else {
            Err("downstream unavailable".into())
        }
    };
    let mut consumers = Vec::new();
    for id in ["w1", "w2"] {
        consumers.push(
            bus.consume(id, handler, ConsumerConfig::default())
                .await
                .unwrap(),
        );
    }
    let start = Instant::now();
    while consumers.iter().any(|c| c.report().dead_lettered < 1) {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dead = dlq.list(10).await.unwrap();
    let mut subscribers: Vec<Option<String>> = dead.iter().map(|d| d.subscriber.clone()).collect();
    subscribers.sort();
    assert_eq!(
        subscribers,
        vec![Some("w1".to_owned()), Some("w2".to_owned())]
    );
    assert!(dead.iter().all(|d| d.event.id == original.id));

    // the same letter handed over again (a retry after a lost reply)
    dlq.handle(dead[0].clone()).await.unwrap();
    assert_eq!(
        provider
            .history(Some("events.dlq.>"), 10)
            .await
            .unwrap()
            .len(),
        2
    );

    let report = dlq.redrive(&bus, 100).await.unwrap();
    assert_eq!(report.redriven, 2);
    while consumers.iter().any(|c| c.report().acked < 1) {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // give a second copy, if one had been stored, time to arrive
    tokio::time::sleep(Duration::from_millis(200)).await;
    for consumer in consumers {
        let report = consumer.report();
        assert_eq!(report.acked, 1, "{report:?}");
        consumer.shutdown(Duration::from_secs(1)).await;
    }
    let copies: Vec<Event> = bus
        .list_events(Some("orders"), 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.metadata.contains_key("a3s.redriven_from"))
        .collect();
    assert_eq!(copies.len(), 1);
}

/// Other events published under the DLQ subjects are not dead letters: an
/// event-routing `SinkDlqHandler` forwarding through a topic sink under
/// `events.dlq` (its documented example) puts plain events on
/// `events.dlq.orders.created`, in the same stream. `list` failed on the
/// first of them (`Serialization`: "not a dead letter"), so no dead letter
/// could be listed at all, `count` counted them, and `redrive` reported
/// them as skipped dead letters.
#[tokio::test]
async fn events_under_the_dlq_subjects_that_are_not_dead_letters_are_left_out() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let dlq = ProviderDlqHandler::new(provider.clone());
    let foreign = |n: i64| {
        Event::new(
            "events.dlq.orders.created",
            "dlq",
            "forwarded",
            "router",
            json!({"n": n}),
        )
    };
    let mut dead = Vec::new();
    for i in 0..3 {
        let event = Event::new("events.orders.new", "orders", "s", "src", json!({"i": i}));
        let letter = DeadLetterEvent::new(event, "boom");
        dlq.handle(letter.clone()).await.unwrap();
        dead.insert(0, letter);
        // foreign events between the dead letters and after the newest
        for n in 0..2 {
            provider.publish(&foreign(i * 10 + n)).await.unwrap();
        }
    }
    assert_eq!(dlq.list(10).await.unwrap(), dead);
    // the newest `limit` dead letters, however many foreign events are newer
    assert_eq!(dlq.list(1).await.unwrap(), dead[..1]);
    assert_eq!(dlq.list(2).await.unwrap(), dead[..2]);
    assert!(dlq.list(0).await.unwrap().is_empty());
    assert_eq!(dlq.count().await.unwrap(), 3);

    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (3, 0));
    let orders = bus.list_events(Some("orders"), 10).await.unwrap();
    assert_eq!(orders.len(), 3);
    assert!(
        orders
            .iter()
            .all(|e| e.metadata.contains_key("a3s.redriven_from"))
    );
}

/// A memory provider that counts the durable subscriptions it opens and
/// those closed (not merely dropped).
#[derive(Default)]
struct CloseCounting {
    inner: MemoryProvider,
    opened: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

struct CountedSubscription {
    inner: Box<dyn event_core::Subscription>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl event_core::Subscription for CountedSubscription {
    async fn next(&mut self) -> event_core::Result<Option<ReceivedEvent>> {
        self.inner.next().await
    }
    async fn next_manual_ack(&mut self) -> event_core::Result<Option<event_core::PendingEvent>> {
        self.inner.next_manual_ack().await
    }
    async fn close(&mut self) -> event_core::Result<()> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        self.inner.close().await
    }
}

#[async_trait::async_trait]
impl EventProvider for CloseCounting {
    async fn publish_with_options(
        &self,
        event: &Event,
        options: &event_core::PublishOptions,
    ) -> event_core::Result<u64> {
        self.inner.publish_with_options(event, options).await
    }
    async fn subscribe_durable_with_options(
        &self,
        name: &str,
        filter: &str,
        options: &SubscribeOptions,
    ) -> event_core::Result<Box<dyn event_core::Subscription>> {
        let inner = self
            .inner
            .subscribe_durable_with_options(name, filter, options)
            .await?;
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(CountedSubscription {
            inner,
            closed: self.closed.clone(),
        }))
    }
    async fn history(&self, filter: Option<&str>, limit: usize) -> event_core::Result<Vec<Event>> {
        self.inner.history(filter, limit).await
    }
    async fn unsubscribe(&self, name: &str) -> event_core::Result<()> {
        self.inner.unsubscribe(name).await
    }
    async fn info(&self) -> event_core::Result<event_core::ProviderInfo> {
        self.inner.info().await
    }
    fn name(&self) -> &str {
        "close-counting"
    }
}

/// A re-drive that stops on an error closes its subscription, as one that
/// finishes does: the contract asks for `close`, not a drop, so that a
/// durable hands back what it fetched ahead (a provider that fetches ahead
/// of the re-drive's one letter in flight would otherwise hold it from the
/// next call until its ack wait ran out).
#[tokio::test]
async fn a_redrive_stopped_by_an_error_closes_its_subscription() {
    let probe = CloseCounting::default();
    let (opened, closed) = (probe.opened.clone(), probe.closed.clone());
    let provider: Arc<dyn EventProvider> = Arc::new(probe);
    let bus = EventBus::from_arc(provider.clone());
    let dlq = ProviderDlqHandler::new(provider.clone());
    for i in 0..2 {
        let e = Event::new("events.jobs.run", "jobs", "s", "src", json!(i));
        dlq.handle(DeadLetterEvent::new(e, "x")).await.unwrap();
    }
    let router = Arc::new(CollectRouter::default());
    router.refuse.store(true, Ordering::SeqCst);
    bus.set_router(router.clone());
    assert!(dlq.redrive(&bus, 10).await.is_err());
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    assert_eq!(
        closed.load(Ordering::SeqCst),
        1,
        "the failed re-drive dropped its subscription without closing it"
    );
    router.refuse.store(false, Ordering::SeqCst);
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 0));
    assert_eq!(closed.load(Ordering::SeqCst), 2);
}

/// A dead letter whose event the bus now refuses for good (a schema that
/// came after it, here) is skipped, not retried: it used to stop every
/// re-drive with the same error, so the letters behind it were never
/// re-driven. It stays in the stream for `list`.
#[tokio::test]
async fn a_letter_the_bus_refuses_for_good_is_skipped_and_does_not_block_the_rest() {
    let (bus, _provider, dlq, _) = setup();
    let typed = |n: Option<i64>| {
        let payload = match n {
            Some(n) => json!({"n": n}),
            None => json!({"other": true}),
        };
        Event::typed("events.jobs.run", "jobs", "job.run", 1, "s", "src", payload)
    };
    // oldest first: the bad one heads the queue
    for n in [None, Some(1), Some(2)] {
        dlq.handle(DeadLetterEvent::new(typed(n), "x"))
            .await
            .unwrap();
    }
    bus.set_schema_validator(Arc::new(RequireField("n")));
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 1));
    // nothing left for a later call, and the skipped letter is still listed
    assert_eq!(dlq.redrive(&bus, 10).await.unwrap(), Default::default());
    assert_eq!(dlq.list(10).await.unwrap().len(), 3);
    let redriven: Vec<Event> = bus
        .list_events(Some("jobs"), 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.metadata.contains_key("a3s.redriven_from"))
        .collect();
    assert_eq!(redriven.len(), 2);
}

/// The dead letters several subscribers made of one event are re-driven as
/// one copy: the provider stores it once (its id is derived from the
/// event's), and the bus's router gets it once too. Republished for each
/// letter, the copy was deduplicated in the stream but handed to the
/// router again each time, so a broker attached to the bus delivered it to
/// its triggers once per letter.
#[tokio::test]
async fn letters_of_one_event_from_several_subscribers_are_routed_once_on_redrive() {
    let (bus, _provider, dlq, _) = setup();
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    let event = Event::new("events.jobs.run", "jobs", "s", "src", json!({"n": 1}));
    for subscriber in ["w1", "w2", "w3"] {
        dlq.handle(DeadLetterEvent::new(event.clone(), "x").with_subscriber(subscriber))
            .await
            .unwrap();
    }
    let other = Event::new("events.jobs.run", "jobs", "s", "src", json!({"n": 2}));
    dlq.handle(DeadLetterEvent::new(other.clone(), "x").with_subscriber("w1"))
        .await
        .unwrap();
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (4, 0));
    let routed: Vec<String> = router
        .routed
        .lock()
        .unwrap()
        .iter()
        .map(|(e, _)| e.metadata["a3s.redriven_from"].clone())
        .collect();
    assert_eq!(routed, [event.id, other.id]);
}

/// The schema, fixed: accepts every event.
struct AcceptAll;

impl event_core::SchemaValidator for AcceptAll {
    fn validate(&self, _event: &Event) -> event_core::Result<()> {
        Ok(())
    }
}

/// The re-driven copies stored under `category`, by the id they were
/// re-driven from, oldest first.
async fn redriven_from(bus: &EventBus, category: &str) -> Vec<String> {
    bus.list_events(Some(category), 100)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .filter_map(|e| e.metadata.get("a3s.redriven_from").cloned())
        .collect()
}

fn job(n: i64) -> Event {
    Event::new("events.jobs.run", "jobs", "s", "src", json!({"n": n}))
}

/// A letter `redrive` skipped for good (the schema refused its event) is
/// re-driven by `redrive_matching` once the schema is fixed: `redrive`
/// never offers it again, so it could only be republished by hand. While
/// the schema still refuses it, `redrive_matching` skips it the same way.
#[tokio::test]
async fn a_letter_redrive_skipped_for_its_schema_is_redriven_by_redrive_matching_once_fixed() {
    let (bus, _provider, dlq, _) = setup();
    let typed =
        |payload| Event::typed("events.jobs.run", "jobs", "job.run", 1, "s", "src", payload);
    let bad = typed(json!({"other": true}));
    let good = typed(json!({"n": 1}));
    for event in [&bad, &good] {
        dlq.handle(DeadLetterEvent::new(event.clone(), "x"))
            .await
            .unwrap();
    }
    bus.set_schema_validator(Arc::new(RequireField("n")));
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 1));
    let is_bad = |d: &DeadLetterEvent| d.event.id == bad.id;
    let report = dlq.redrive_matching(&bus, 10, is_bad).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (0, 1));

    bus.set_schema_validator(Arc::new(AcceptAll));
    // `redrive` terminated the letter: it has nothing left
    assert_eq!(dlq.redrive(&bus, 10).await.unwrap(), Default::default());
    let report = dlq.redrive_matching(&bus, 10, is_bad).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0));

    let copies: Vec<Event> = bus
        .list_events(Some("jobs"), 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.metadata.contains_key("a3s.redriven_from"))
        .collect();
    assert_eq!(copies.len(), 2);
    let copy = &copies[0];
    // the same republish as `redrive`'s: derived id, original id in metadata
    assert_eq!(copy.id, format!("evt-redrive-{}", bad.id));
    assert_eq!(copy.metadata["a3s.redriven_from"], bad.id);
    assert_eq!(copy.subject, "events.jobs.run");
    assert_eq!(copy.event_type, "job.run");
    assert_eq!(copy.payload, json!({"other": true}));
    assert_eq!(copies[1].metadata["a3s.redriven_from"], good.id);
}

/// Selecting by subscriber re-drives only that subscriber's letters, oldest
/// first (the letters of one event from two subscribers are re-driven for
/// the one selected), passes over other events under the DLQ subjects, and
/// leaves the position of `redrive`, which then goes over every letter. A
/// letter re-driven before is republished again when selected: same copy
/// id, so the provider stores it once inside its dedup window.
#[tokio::test]
async fn redrive_matching_by_subscriber_redrives_only_its_letters_and_keeps_the_redrive_position() {
    let (bus, provider, dlq, _) = setup();
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    let (e1, e2, e3) = (job(1), job(2), job(3));
    for (event, subscriber) in [(&e1, "w1"), (&e2, "w2"), (&e1, "w2"), (&e3, "w1")] {
        dlq.handle(DeadLetterEvent::new(event.clone(), "x").with_subscriber(subscriber))
            .await
            .unwrap();
    }
    // not a dead letter: an event forwarded under the DLQ subjects
    let foreign = Event::new("events.dlq.jobs", "dlq", "s", "router", json!(0));
    provider.publish(&foreign).await.unwrap();

    let w1 = |d: &DeadLetterEvent| d.subscriber.as_deref() == Some("w1");
    let report = dlq.redrive_matching(&bus, 10, w1).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 0));
    assert_eq!(
        redriven_from(&bus, "jobs").await,
        [e1.id.as_str(), e3.id.as_str()]
    );
    let routed = |router: &CollectRouter| -> Vec<String> {
        router
            .routed
            .lock()
            .unwrap()
            .iter()
            .map(|(e, _)| e.metadata["a3s.redriven_from"].clone())
            .collect()
    };
    assert_eq!(routed(&router), [e1.id.as_str(), e3.id.as_str()]);

    // `redrive` starts from the oldest letter all the same
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (4, 0));
    assert_eq!(
        redriven_from(&bus, "jobs").await,
        [e1.id.as_str(), e3.id.as_str(), e2.id.as_str()],
        "one copy per event in the stream"
    );

    // selected again after `redrive`: republished, deduplicated by the
    // provider, and (the memory provider reports duplicates) not routed
    // again
    let before = routed(&router);
    assert_eq!(before, [e1.id.as_str(), e3.id.as_str(), e2.id.as_str()]);
    let w2 = |d: &DeadLetterEvent| d.subscriber.as_deref() == Some("w2");
    let report = dlq.redrive_matching(&bus, 10, w2).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 0));
    assert_eq!(redriven_from(&bus, "jobs").await.len(), 3);
    assert_eq!(routed(&router), before);
    assert_eq!(dlq.count().await.unwrap(), 4);

    // one event's letters (w1's and w2's): one copy, not routed again
    let one_event = |d: &DeadLetterEvent| d.event.id == e1.id;
    let report = dlq.redrive_matching(&bus, 10, one_event).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 0));
    assert_eq!(routed(&router), before);
}

/// `max` bounds the letters re-driven (skipped ones do not count, as in
/// `redrive`): the oldest selected ones; 0 re-drives nothing.
#[tokio::test]
async fn redrive_matching_honours_max() {
    let (bus, _provider, dlq, _) = setup();
    let typed =
        |payload| Event::typed("events.jobs.run", "jobs", "job.run", 1, "s", "src", payload);
    let bad = typed(json!({"other": true}));
    let events: Vec<Event> = (0..4).map(|n| typed(json!({"n": n}))).collect();
    for event in std::iter::once(&bad).chain(&events) {
        dlq.handle(DeadLetterEvent::new(event.clone(), "x"))
            .await
            .unwrap();
    }
    bus.set_schema_validator(Arc::new(RequireField("n")));
    assert_eq!(
        dlq.redrive_matching(&bus, 0, |_| true).await.unwrap(),
        Default::default()
    );
    assert!(redriven_from(&bus, "jobs").await.is_empty());
    let report = dlq.redrive_matching(&bus, 2, |_| true).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 1));
    assert_eq!(
        redriven_from(&bus, "jobs").await,
        [events[0].id.as_str(), events[1].id.as_str()]
    );
    let not_first = |d: &DeadLetterEvent| d.event.id != events[0].id;
    let report = dlq.redrive_matching(&bus, 1, not_first).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 1));
    // events[1] again: deduplicated by the provider
    assert_eq!(redriven_from(&bus, "jobs").await.len(), 2);
    let report = dlq.redrive_matching(&bus, 3, |_| true).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (3, 1));
    assert_eq!(
        redriven_from(&bus, "jobs").await,
        [
            events[0].id.as_str(),
            events[1].id.as_str(),
            events[2].id.as_str()
        ]
    );
}

/// A republish that fails otherwise than for good (a router refusing)
/// stops `redrive_matching` with the error: the letters behind it are not
/// republished. The letters are still there for the next call, and for
/// `redrive`.
#[tokio::test]
async fn an_error_stops_redrive_matching() {
    let (bus, _provider, dlq, _) = setup();
    let events: Vec<Event> = (0..3).map(job).collect();
    for event in &events {
        dlq.handle(DeadLetterEvent::new(event.clone(), "x"))
            .await
            .unwrap();
    }
    let router = Arc::new(CollectRouter::default());
    router.refuse.store(true, Ordering::SeqCst);
    bus.set_router(router.clone());
    let err = dlq.redrive_matching(&bus, 10, |_| true).await.unwrap_err();
    assert!(matches!(err, event_core::Error::Closed(_)), "{err:?}");
    // the refused copy was stored (the router runs after the store); none
    // after it was attempted
    assert_eq!(redriven_from(&bus, "jobs").await, [events[0].id.as_str()]);

    router.refuse.store(false, Ordering::SeqCst);
    let report = dlq.redrive_matching(&bus, 10, |_| true).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (3, 0));
    assert_eq!(router.routed.lock().unwrap().len(), 3);
    assert_eq!(redriven_from(&bus, "jobs").await.len(), 3);
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (3, 0));
}

/// An event dead-lettered because it did not decrypt is skipped by
/// `redrive` while its key is missing; once the key is added,
/// `redrive_matching` republishes its plaintext under the derived id,
/// encrypted by the bus. A letter the DLQ itself cannot decode cannot be
/// matched: it is counted as skipped and does not stop the call.
#[tokio::test]
async fn redrive_matching_redrives_an_undecryptable_event_once_its_key_is_added() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let ring = Arc::new(RingEncryptor {
        active: 11,
        keys: std::sync::Mutex::new(vec![11]),
    });
    let bus = EventBus::from_arc(provider.clone());
    bus.set_encryptor(ring.clone());
    let dlq = ProviderDlqHandler::new(provider.clone()).with_encryptor(ring.clone());
    let mut sealed = Event::new(
        "events.orders.new",
        "orders",
        "s",
        "src",
        json!({"card": "4111"}),
    );
    sealed.payload = TestEncryptor { key: 7 }
        .encrypt(&sealed.id, &sealed.payload)
        .unwrap();
    dlq.handle(DeadLetterEvent::new(sealed.clone(), "decryption failed"))
        .await
        .unwrap();
    // a letter stored by a DLQ under a key this one never gets
    ProviderDlqHandler::new(provider.clone())
        .with_encryptor(Arc::new(TestEncryptor { key: 9 }))
        .handle(DeadLetterEvent::new(job(1), "x"))
        .await
        .unwrap();

    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (0, 2));
    ring.keys.lock().unwrap().push(7);
    assert_eq!(dlq.redrive(&bus, 10).await.unwrap(), Default::default());
    let report = dlq.redrive_matching(&bus, 10, |_| true).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 1));

    let copies: Vec<Event> = provider.history(Some("events.orders.>"), 10).await.unwrap();
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    assert_eq!(copy.id, format!("evt-redrive-{}", sealed.id));
    assert_eq!(copy.metadata["a3s.redriven_from"], sealed.id);
    assert_eq!(copy.payload["key"], json!(11));
    assert_eq!(
        TestEncryptor { key: 11 }
            .decrypt(&copy.id, &copy.payload)
            .unwrap(),
        json!({"card": "4111"})
    );
}

/// Dead letters stored before the DLQ was given an encryptor are plaintext.
/// A handler given one since (the bus's, as the docs advise) reads them as
/// they are and decrypts only envelopes: it lists, counts and re-drives the
/// old letters next to the new, encrypted ones, and the bus encrypts the
/// re-driven copies.
#[tokio::test]
async fn letters_stored_before_the_dlq_had_an_encryptor_stay_readable_after() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    // before: no encryptor anywhere
    let old = job(1);
    ProviderDlqHandler::new(provider.clone())
        .handle(DeadLetterEvent::new(old.clone(), "x").with_subscriber("w1"))
        .await
        .unwrap();
    let stored = provider.history(Some("events.dlq.>"), 10).await.unwrap();
    let old_letter: DeadLetterEvent = serde_json::from_value(stored[0].payload.clone()).unwrap();
    assert_eq!(old_letter.event, old, "stored in plaintext");

    // after: the bus and its DLQ encrypt
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &[7; 32]));
    let bus = EventBus::from_arc(provider.clone());
    bus.set_encryptor(encryptor.clone());
    let dlq = ProviderDlqHandler::new(provider.clone()).with_encryptor(encryptor.clone());
    let new = job(2);
    let new_letter = DeadLetterEvent::new(new.clone(), "y").with_subscriber("w1");
    dlq.handle(new_letter.clone()).await.unwrap();
    let stored = provider.history(Some("events.dlq.>"), 1).await.unwrap();
    assert!(encryptor.is_encrypted(&stored[0].payload));

    assert_eq!(dlq.list(10).await.unwrap(), [new_letter, old_letter]);
    assert_eq!(dlq.count().await.unwrap(), 2);
    let old_only = |d: &DeadLetterEvent| d.event.id == old.id;
    let report = dlq.redrive_matching(&bus, 10, old_only).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0));
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 0));
    assert_eq!(
        redriven_from(&bus, "jobs").await,
        [old.id.as_str(), new.id.as_str()]
    );
    let copies = provider.history(Some("events.jobs.>"), 10).await.unwrap();
    assert_eq!(copies.len(), 2);
    assert!(copies.iter().all(|e| encryptor.is_encrypted(&e.payload)));
}

/// A memory provider whose durable subscriptions report one message they
/// could not decode (as NATS does for a message that is not an event), first
/// or after the newest stored one, and that records the `limit` of every
/// `history` call.
#[derive(Default)]
struct Probe {
    inner: MemoryProvider,
    undecodable: std::sync::atomic::AtomicBool,
    /// Durable subscriptions end with one undecodable message, the newest
    /// in the stream (`info` counts it).
    undecodable_last: std::sync::atomic::AtomicBool,
    history_limits: std::sync::Mutex<Vec<usize>>,
}

/// A subscription that reports one undecodable message, first or after
/// the message at `last`.
struct WithUndecodable {
    inner: Box<dyn event_core::Subscription>,
    pending: bool,
    /// After the message at this sequence is handed out, one undecodable
    /// message follows at the next sequence.
    last: Option<u64>,
    /// Sequence of the undecodable message reported next.
    at: u64,
}

impl WithUndecodable {
    fn undecodable(&mut self) -> Option<event_core::Error> {
        std::mem::take(&mut self.pending).then(|| event_core::Error::Undecodable {
            subject: "events.dlq.jobs".into(),
            sequence: self.at,
            reason: "not an event".into(),
            raw: "garbage".into(),
        })
    }

    /// Notes a message handed out: after the one at `last`, the undecodable
    /// message is next.
    fn handed_out(&mut self, sequence: u64) {
        if self.last == Some(sequence) {
            self.pending = true;
            self.at = sequence + 1;
        }
    }
}

#[async_trait::async_trait]
impl event_core::Subscription for WithUndecodable {
    async fn next(&mut self) -> event_core::Result<Option<ReceivedEvent>> {
        match self.undecodable() {
            Some(err) => Err(err),
            None => {
                let next = self.inner.next().await?;
                if let Some(received) = &next {
                    self.handed_out(received.sequence);
                }
                Ok(next)
            }
        }
    }
    async fn next_manual_ack(&mut self) -> event_core::Result<Option<event_core::PendingEvent>> {
        match self.undecodable() {
            Some(err) => Err(err),
            None => {
                let next = self.inner.next_manual_ack().await?;
                if let Some(pending) = &next {
                    self.handed_out(pending.received.sequence);
                }
                Ok(next)
            }
        }
    }
    async fn close(&mut self) -> event_core::Result<()> {
        self.inner.close().await
    }
}

#[async_trait::async_trait]
impl EventProvider for Probe {
    async fn publish_with_options(
        &self,
        event: &Event,
        options: &event_core::PublishOptions,
    ) -> event_core::Result<u64> {
        self.inner.publish_with_options(event, options).await
    }
    async fn subscribe_durable_with_options(
        &self,
        name: &str,
        filter: &str,
        options: &SubscribeOptions,
    ) -> event_core::Result<Box<dyn event_core::Subscription>> {
        let inner = self
            .inner
            .subscribe_durable_with_options(name, filter, options)
            .await?;
        let last = if self.undecodable_last.load(Ordering::SeqCst) {
            Some(self.inner.info().await?.last_sequence)
        } else {
            None
        };
        Ok(Box::new(WithUndecodable {
            inner,
            pending: self.undecodable.swap(false, Ordering::SeqCst),
            last,
            at: 0,
        }))
    }
    async fn history(&self, filter: Option<&str>, limit: usize) -> event_core::Result<Vec<Event>> {
        self.history_limits.lock().unwrap().push(limit);
        self.inner.history(filter, limit).await
    }
    async fn unsubscribe(&self, name: &str) -> event_core::Result<()> {
        self.inner.unsubscribe(name).await
    }
    async fn info(&self) -> event_core::Result<event_core::ProviderInfo> {
        let mut info = self.inner.info().await?;
        if self.undecodable_last.load(Ordering::SeqCst) {
            info.last_sequence += 1;
        }
        Ok(info)
    }
    fn name(&self) -> &str {
        "probe"
    }
}

/// A message in the DLQ stream the provider cannot decode is counted as
/// skipped by `redrive`, which goes on with the letters behind it.
#[tokio::test]
async fn redrive_counts_an_undecodable_message_as_skipped_and_goes_on() {
    let probe = Arc::new(Probe::default());
    let provider: Arc<dyn EventProvider> = probe.clone();
    let bus = EventBus::from_arc(provider.clone());
    let dlq = ProviderDlqHandler::new(provider.clone());
    let events: Vec<Event> = (0..2).map(job).collect();
    for event in &events {
        dlq.handle(DeadLetterEvent::new(event.clone(), "x"))
            .await
            .unwrap();
    }
    probe.undecodable.store(true, Ordering::SeqCst);
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 1));
    assert_eq!(
        redriven_from(&bus, "jobs").await,
        [events[0].id.as_str(), events[1].id.as_str()]
    );
}

/// An undecodable message that is the newest in the DLQ stream ends
/// `redrive` like any other newest message: it does not wait out its idle
/// time (set to an hour here) for letters that cannot come.
#[tokio::test]
async fn an_undecodable_newest_message_ends_redrive_at_once() {
    let probe = Arc::new(Probe::default());
    let provider: Arc<dyn EventProvider> = probe.clone();
    let bus = EventBus::from_arc(provider.clone());
    let dlq = ProviderDlqHandler::new(provider.clone())
        .with_redrive_idle(std::time::Duration::from_secs(3600));
    for event in (0..2).map(job) {
        dlq.handle(DeadLetterEvent::new(event, "x")).await.unwrap();
    }
    probe.undecodable_last.store(true, Ordering::SeqCst);
    let report = tokio::time::timeout(std::time::Duration::from_secs(10), dlq.redrive(&bus, 10))
        .await
        .expect("redrive stops at the newest message")
        .unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 1));
}

/// `count` reads the DLQ stream with one `history` call, and `list` reads
/// back only as far as it must: one call when the newest `limit` events are
/// dead letters, twice as far back while other events hide some.
#[tokio::test]
async fn list_and_count_read_the_stream_no_further_than_needed() {
    let probe = Arc::new(Probe::default());
    let provider: Arc<dyn EventProvider> = probe.clone();
    let dlq = ProviderDlqHandler::new(provider.clone());
    for n in 0..5 {
        dlq.handle(DeadLetterEvent::new(job(n), "x")).await.unwrap();
    }
    let limits = || std::mem::take(&mut *probe.history_limits.lock().unwrap());

    assert_eq!(dlq.count().await.unwrap(), 5);
    assert_eq!(limits(), [6]);
    assert_eq!(dlq.list(2).await.unwrap().len(), 2);
    assert_eq!(limits(), [2]);
    assert_eq!(dlq.list(10).await.unwrap().len(), 5);
    assert_eq!(limits(), [10]);

    // a newer event under the DLQ subjects that is not a dead letter
    let foreign = Event::new("events.dlq.jobs", "dlq", "s", "router", json!(0));
    provider.publish(&foreign).await.unwrap();
    assert_eq!(dlq.list(2).await.unwrap().len(), 2);
    assert_eq!(limits(), [2, 4]);
    assert_eq!(dlq.count().await.unwrap(), 5);
    assert_eq!(limits(), [7]);
}

/// The memory provider's default limit on an encoded event.
const LIMIT: usize = 1024 * 1024;

/// An event on `events.orders.new` whose encoded size is `size` bytes
/// (the padding is a string payload).
fn event_of_size(size: usize) -> Event {
    let mut event = Event::new("events.orders.new", "orders", "s", "src", json!(""));
    let base = serde_json::to_vec(&event).unwrap().len();
    event.payload = json!("x".repeat(size - base));
    assert_eq!(serde_json::to_vec(&event).unwrap().len(), size);
    event
}

/// A dead letter whose reason makes it too large for the provider is stored
/// with the reason cut (its start and its length kept), the event whole:
/// refused, it was offered again and again (an undecryptable event's dead
/// letter, every 5 s without end).
#[tokio::test]
async fn a_dead_letter_over_the_limit_is_stored_with_its_reason_cut() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let dlq = ProviderDlqHandler::new(provider.clone());
    let event = event_of_size(600_000);
    provider.publish(&event).await.unwrap();
    let reason = format!("handler failed: {}", "r".repeat(600_000));
    dlq.handle(DeadLetterEvent::new(event.clone(), reason.clone()).with_attempts(3))
        .await
        .unwrap();
    let listed = dlq.list(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let dead = &listed[0];
    assert_eq!(dead.event, event, "the event is kept whole");
    assert_eq!(dead.delivery_attempts, 3);
    assert!(
        dead.reason.starts_with(&reason[..1000]),
        "{:.100}",
        dead.reason
    );
    assert!(dead.reason.len() < 5000, "{} bytes", dead.reason.len());
    assert!(
        dead.reason.ends_with(&format!("({} bytes)", reason.len())),
        "{}",
        &dead.reason[dead.reason.len() - 100..]
    );
    // the summary (in clear, even when encrypted) holds the reason's start only
    let stored = provider.history(Some("events.dlq.>"), 1).await.unwrap();
    assert!(stored[0].summary.len() < 300, "{}", stored[0].summary.len());
    // the event is whole: it is re-driven
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0));
}

/// The dead letter of an event close to the provider's limit cannot hold
/// the event: it is stored without the event's payload (and metadata),
/// marked `a3s.dlq_payload_dropped` in the event's metadata, so that `list`
/// shows which event failed and why; re-drive skips it (the event is still
/// in the stream). Encrypted or not.
#[tokio::test]
async fn the_dead_letter_of_an_event_near_the_limit_keeps_all_but_its_payload() {
    for encrypted in [false, true] {
        let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
        let bus = EventBus::from_arc(provider.clone());
        let mut dlq = ProviderDlqHandler::new(provider.clone());
        if encrypted {
            dlq = dlq.with_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &[7; 32])));
        }
        let mut event = event_of_size(LIMIT - 200);
        event
            .metadata
            .insert("traceparent".into(), "00-abc-def-01".into());
        let event = event;
        provider.publish(&event).await.unwrap();
        dlq.handle(
            DeadLetterEvent::new(event.clone(), "handler failed")
                .with_attempts(5)
                .with_subscriber("billing"),
        )
        .await
        .unwrap_or_else(|err| panic!("encrypted {encrypted}: {err}"));
        let dead = dlq.list(10).await.unwrap().remove(0);
        assert_eq!(dead.reason, "handler failed");
        assert_eq!(dead.delivery_attempts, 5);
        assert_eq!(dead.subscriber.as_deref(), Some("billing"));
        assert_eq!(dead.original_subject, event.subject);
        let stub = &dead.event;
        assert_eq!(
            (&stub.id, &stub.subject, &stub.category, &stub.source),
            (&event.id, &event.subject, &event.category, &event.source)
        );
        assert_eq!(stub.timestamp, event.timestamp);
        assert_eq!(stub.payload, serde_json::Value::Null);
        let note = &stub.metadata["a3s.dlq_payload_dropped"];
        assert!(note.contains("bytes"), "{note}");
        assert!(!stub.metadata.contains_key("traceparent"));
        let report = dlq.redrive(&bus, 10).await.unwrap();
        assert_eq!((report.redriven, report.skipped), (0, 1), "{encrypted}");
        let report = dlq.redrive_matching(&bus, 10, |_| true).await.unwrap();
        assert_eq!((report.redriven, report.skipped), (0, 1), "{encrypted}");
    }
}

/// Event ids (and the other strings of an event) can be as long as the
/// provider's limit allows; a dead letter holds the id three times (in the
/// event, in metadata, in the dedup id). Such a dead letter is stored with
/// its strings cut, and two ids that share their start and length still
/// get a dead letter each (the dedup id is not cut to the same one).
#[tokio::test]
async fn the_dead_letter_of_an_event_with_a_huge_id_is_stored_cut() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let dlq = ProviderDlqHandler::new(provider.clone());
    for tail in ["a", "b"] {
        let mut event = Event::new("events.orders.new", "orders", "s", "src", json!({"n": 1}));
        event.id = format!("{}{tail}", "i".repeat(600_000));
        provider.publish(&event).await.unwrap();
        dlq.handle(DeadLetterEvent::new(event, "handler failed"))
            .await
            .unwrap();
    }
    let listed = dlq.list(10).await.unwrap();
    assert_eq!(listed.len(), 2, "one dead letter each");
    for dead in &listed {
        assert!(dead.event.id.len() < 1000, "{}", dead.event.id.len());
        assert!(dead.event.id.starts_with("iiii"), "{}", dead.event.id);
        assert!(
            dead.event.id.contains("(600001 bytes)"),
            "{}",
            dead.event.id
        );
    }
    let stored = provider.history(Some("events.dlq.>"), 10).await.unwrap();
    assert!(
        stored
            .iter()
            .all(|e| e.metadata["a3s.original_id"].len() < 1000)
    );
}

/// On an encrypting bus with this handler and default options, an event
/// the bus cannot decrypt whose dead letter is over the provider's limit
/// (an envelope near the limit) is dead-lettered once and terminated:
/// refused as too large, it was redelivered every 5 s without end, and the
/// consumer's report counted nothing.
#[tokio::test]
async fn an_undecryptable_event_near_the_limit_is_dead_lettered_once() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let enc = Aes256GcmEncryptor::new("k1", &[7; 32]);
    bus.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &[7; 32])));
    bus.set_dlq_handler(Arc::new(ProviderDlqHandler::new(provider.clone())));
    bus.update_subscription(SubscriptionFilter {
        subscriber_id: "reader".into(),
        subjects: vec!["events.pay.>".into()],
        durable: true,
    })
    .await
    .unwrap();
    // a genuine envelope whose ciphertext was swapped for a long one
    let mut evil = Event::new("events.pay.x", "pay", "s", "src", json!(null));
    evil.payload = enc.encrypt(&evil.id, &json!({"n": 1})).unwrap();
    evil.payload["ciphertext"] = json!("");
    let base = serde_json::to_vec(&evil).unwrap().len();
    evil.payload["ciphertext"] = json!("A".repeat((LIMIT - 100 - base) / 4 * 4));
    provider.publish(&evil).await.unwrap();
    let consumer = bus
        .consume(
            "reader",
            |_: ReceivedEvent| async move { Ok::<(), BoxError>(()) },
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
    let start = Instant::now();
    while consumer.report().dead_lettered == 0 && start.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = consumer.shutdown(Duration::from_secs(1)).await;
    let m = bus.metrics().snapshot();
    assert_eq!(report.dead_lettered, 1, "{report:?} {m:?}");
    assert_eq!((m.decrypt_errors, m.dlq_total, m.dlq_errors), (1, 1, 0));
}

/// An event the bus cannot decrypt whose id is long (the publisher's
/// choice, as long as the provider allows): the error, which becomes its
/// dead letter's reason, names it by its start and length, once; it named
/// the whole id (here 600 kB), which made the dead letter twice the event.
#[tokio::test]
async fn an_undecryptable_event_with_a_long_id_gets_a_short_reason() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    bus.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &[7; 32])));
    let dlq = Arc::new(event_bus::MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());
    let mut sub = bus.subscribe("events.pay.>").await.unwrap();
    for id in [
        "evt-short".to_owned(),
        format!("evt-{}", "x".repeat(600_000)),
    ] {
        let mut evil = Event::new("events.pay.x", "pay", "s", "src", json!(null));
        evil.id = id.clone();
        evil.payload = Aes256GcmEncryptor::new("k9", &[9; 32])
            .encrypt(&evil.id, &json!({"n": 1}))
            .unwrap();
        provider.publish(&evil).await.unwrap();
        let msg = match sub.next().await {
            Err(event_core::Error::Decryption(msg)) => msg,
            other => panic!("expected a decryption error, got {other:?}"),
        };
        assert!(msg.len() < 500, "{} bytes: {msg:.200}", msg.len());
        assert!(msg.contains("unknown key id \"k9\""), "{msg}");
        assert_eq!(msg.matches("evt-").count(), 1, "named once: {msg:.300}");
        let dead = dlq.list(1).await.unwrap().remove(0);
        assert_eq!(dead.event.id, id);
        assert!(dead.reason.len() < 500, "{} bytes", dead.reason.len());
    }
}

/// A bus refusing plaintext still re-drives its dead letters: a dead
/// letter holds the bus's own plaintext copy of the event (the handler saw
/// it decrypted), which the bus encrypts again under the copy's new id.
/// Not the dead letter of a payload it refused as plaintext (written into
/// the stream from outside): re-driving that would encrypt a forgery as if
/// it were genuine, so it is skipped.
#[tokio::test]
async fn a_bus_refusing_plaintext_redrives_its_dead_letters_but_not_forged_plaintext() {
    let (bus, provider, dlq, enc) = setup();
    bus.set_plaintext_policy(PlaintextPolicy::Refuse);
    subscribe_w_to_orders(&bus, 1).await;
    bus.publish("orders", "new", "s", "src", json!({"card": "4111"}))
        .await
        .unwrap();
    let forged = Event::new(
        "events.orders.refund",
        "orders",
        "s",
        "src",
        json!({"refund": 1000}),
    );
    provider.publish(&forged).await.unwrap();
    let consumer = fails_unless_redriven(&bus).await;
    let start = Instant::now();
    while consumer.report().dead_lettered < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            consumer.report()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 1));
    while consumer.report().acked < 1 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    consumer.shutdown(Duration::from_secs(1)).await;
    // the genuine event's copy is stored encrypted; the forgery has none
    let stored = provider.history(Some("events.orders.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 3);
    let copies: Vec<&Event> = stored
        .iter()
        .filter(|e| e.metadata.contains_key("a3s.redriven_from"))
        .collect();
    assert_eq!(copies.len(), 1);
    assert_ne!(copies[0].metadata["a3s.redriven_from"], forged.id);
    assert!(enc.is_encrypted(&copies[0].payload));
}

/// Anyone who can write to the DLQ stream can plant a dead letter stored in
/// plaintext (the handler reads those, for letters written before it had
/// an encryptor). A bus refusing plaintext does not re-drive it: it would
/// encrypt the forged payload and its subscribers would receive it as a
/// genuine, decrypted event. It is skipped by `redrive` and
/// `redrive_matching` alike, while the genuine (encrypted) letter is
/// re-driven. A bus accepting plaintext re-drives both, as before.
#[tokio::test]
async fn a_bus_refusing_plaintext_does_not_redrive_a_letter_stored_in_plaintext() {
    for policy in [PlaintextPolicy::Refuse, PlaintextPolicy::Accept] {
        let (bus, provider, dlq, enc) = setup();
        bus.set_plaintext_policy(policy);
        let genuine = Event::new(
            "events.orders.new",
            "orders",
            "s",
            "src",
            json!({"card": "4111"}),
        );
        dlq.handle(DeadLetterEvent::new(genuine.clone(), "handler failed"))
            .await
            .unwrap();
        let forged = Event::new(
            "events.orders.refund",
            "orders",
            "s",
            "src",
            json!({"refund": 1000}),
        );
        let carrier = common::planted_dead_letter(forged.clone());
        provider.publish(&carrier).await.unwrap();

        let (expected, copies) = match policy {
            PlaintextPolicy::Refuse => ((1, 1), vec![genuine.id.clone()]),
            _ => ((2, 0), vec![genuine.id.clone(), forged.id.clone()]),
        };
        let report = dlq.redrive_matching(&bus, 10, |_| true).await.unwrap();
        assert_eq!(
            (report.redriven, report.skipped),
            expected,
            "{policy:?}: redrive_matching"
        );
        let report = dlq.redrive(&bus, 10).await.unwrap();
        assert_eq!(
            (report.redriven, report.skipped),
            expected,
            "{policy:?}: redrive"
        );
        assert_eq!(redriven_from(&bus, "orders").await, copies, "{policy:?}");
        let stored = provider.history(Some("events.orders.>"), 10).await.unwrap();
        assert_eq!(stored.len(), copies.len(), "{policy:?}");
        assert!(stored.iter().all(|e| enc.is_encrypted(&e.payload)));
    }
}

/// One letter that cannot be read (its key removed from the ring, or an
/// event of the dead-letter type that is no dead letter) fails `list` as a
/// whole, while `count` counts it: `list_each` reads the rest, newest
/// first, with that letter's error in its place, so an operator can still
/// see the queue.
#[tokio::test]
async fn list_each_reads_the_letters_around_one_that_cannot_be_read() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let dlq = ProviderDlqHandler::new(provider.clone());
    let first = DeadLetterEvent::new(job(1), "x").with_subscriber("w1");
    dlq.handle(first.clone()).await.unwrap();
    // an event of the dead-letter type whose payload is no dead letter
    let mut planted = job(2);
    planted.subject = "events.dlq.jobs.run".into();
    planted.event_type = DEAD_LETTER_EVENT_TYPE.into();
    planted.payload = json!({"not": "a dead letter"});
    provider.publish(&planted).await.unwrap();
    let last = DeadLetterEvent::new(job(3), "y").with_subscriber("w1");
    dlq.handle(last.clone()).await.unwrap();

    assert_eq!(dlq.count().await.unwrap(), 3);
    assert!(matches!(dlq.list(10).await, Err(Error::Serialization(_))));
    let each = dlq.list_each(10).await.unwrap();
    assert_eq!(each.len(), 3);
    assert_eq!(each[0].as_ref().unwrap(), &last);
    match &each[1] {
        Err(Error::Serialization(reason)) => {
            assert!(reason.contains(&planted.id), "{reason}");
        }
        other => panic!("expected the planted letter's error, got {other:?}"),
    }
    assert_eq!(each[2].as_ref().unwrap(), &first);
    assert_eq!(dlq.list_each(1).await.unwrap().len(), 1);
    assert!(dlq.list_each(0).await.unwrap().is_empty());
}
