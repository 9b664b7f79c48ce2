//! The publish pipeline, queries and decrypting subscriptions.

mod common;

use async_trait::async_trait;
use common::{CollectRouter, FlakyDlq, RequireField, TestEncryptor};
use event_bus::EventBus;
use event_bus::dlq::MemoryDlqHandler;
use event_core::{
    DlqHandler, Error, Event, EventEncryptor, EventProvider, ProviderInfo, PublishOptions, Result,
    Subscription,
};
use event_memory::MemoryProvider;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn bus() -> (EventBus, Arc<MemoryProvider>) {
    let provider = Arc::new(MemoryProvider::default());
    (EventBus::from_arc(provider.clone()), provider)
}

async fn next(sub: &mut Box<dyn Subscription>) -> event_core::ReceivedEvent {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("an event in time")
        .expect("no error")
        .expect("open")
}

#[tokio::test]
async fn publish_builds_subject_and_returns_plaintext_event() {
    let (bus, provider) = bus();
    let event = bus
        .publish(
            "market",
            "forex.usd_cny",
            "USD/CNY",
            "reuters",
            json!({"rate": 7.35}),
        )
        .await
        .unwrap();
    assert_eq!(event.subject, "events.market.forex.usd_cny");
    assert_eq!(event.category, "market");
    let stored = provider.history(None, 10).await.unwrap();
    assert_eq!(stored, vec![event.clone()]);
    // publishing the same event again is deduplicated
    let seq1 = bus.publish_event(&event).await.unwrap();
    let seq2 = bus.publish_event(&event).await.unwrap();
    assert_eq!(seq1, seq2);
    assert_eq!(provider.info().await.unwrap().messages, 1);
}

#[tokio::test]
async fn invalid_subjects_are_refused_before_io() {
    let (bus, provider) = bus();
    for (category, topic) in [
        ("a.b", "t"),
        ("", "t"),
        ("m", "x.*"),
        ("m", ""),
        ("m k", "t"),
    ] {
        let err = bus
            .publish(category, topic, "s", "src", json!(null))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidSubject { .. }),
            "{category}/{topic}: {err}"
        );
    }
    let bad = Event::new("other.market.x", "market", "s", "src", json!(null));
    assert!(matches!(
        bus.publish_event(&bad).await,
        Err(Error::InvalidSubject { .. })
    ));
    let wildcard = Event::new("events.market.>", "market", "s", "src", json!(null));
    assert!(bus.publish_event(&wildcard).await.is_err());
    assert_eq!(provider.info().await.unwrap().messages, 0);
    let m = bus.metrics().snapshot();
    assert_eq!(m.validation_errors, 7);
    assert_eq!(m.publish_errors, 7);
    assert_eq!(m.publish_total, 0);
}

#[tokio::test]
async fn schema_validation_runs_on_plaintext_before_encryption() {
    let (bus, provider) = bus();
    let bus = bus.with_schema_registry(Arc::new(RequireField("rate")));
    bus.set_encryptor(Arc::new(TestEncryptor { key: 1 }));
    let err = bus
        .publish_typed(
            "market",
            "forex",
            "forex.rate",
            2,
            "s",
            "src",
            json!({"other": 1}),
        )
        .await
        .unwrap_err();
    match err {
        Error::SchemaValidation {
            event_type,
            version,
            path,
            ..
        } => {
            assert_eq!(
                (event_type.as_str(), version, path.as_str()),
                ("forex.rate", 2, "/rate")
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(provider.info().await.unwrap().messages, 0);
    // the valid one passes although the stored payload is an envelope
    let ok = bus
        .publish_typed(
            "market",
            "forex",
            "forex.rate",
            2,
            "s",
            "src",
            json!({"rate": 7}),
        )
        .await
        .unwrap();
    assert_eq!(ok.event_type, "forex.rate");
    let m = bus.metrics().snapshot();
    assert_eq!(
        (m.validation_errors, m.publish_total, m.encrypt_total),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn encrypted_at_rest_decrypted_for_readers() {
    let (bus, provider) = bus();
    let enc = Arc::new(TestEncryptor { key: 3 });
    bus.set_encryptor(enc.clone());
    let mut live = bus.subscribe("events.secret.>").await.unwrap();
    let event = bus
        .publish("secret", "x", "s", "src", json!({"pin": 1234}))
        .await
        .unwrap();
    // stored encrypted, bound to the event id
    let stored = &provider.history(None, 1).await.unwrap()[0];
    assert!(enc.is_encrypted(&stored.payload));
    assert_ne!(stored.payload, json!({"pin": 1234}));
    assert_eq!(
        enc.decrypt(&event.id, &stored.payload).unwrap(),
        json!({"pin": 1234})
    );
    // readers see plaintext
    assert_eq!(
        bus.list_events(Some("secret"), 10).await.unwrap()[0].payload,
        json!({"pin": 1234})
    );
    assert_eq!(next(&mut live).await.event.payload, json!({"pin": 1234}));
    let m = bus.metrics().snapshot();
    assert_eq!((m.encrypt_total, m.decrypt_total), (1, 2));
}

#[tokio::test]
async fn undecryptable_event_is_dead_lettered_terminated_and_reported() {
    let (bus, provider) = bus();
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_encryptor(Arc::new(TestEncryptor { key: 3 }));
    bus.set_dlq_handler(dlq.clone());
    let mut live = bus.subscribe("events.secret.>").await.unwrap();
    // a ciphertext moved to another event (AAD mismatch), published raw
    let real = bus
        .publish("secret", "x", "s", "src", json!({"pin": 1}))
        .await
        .unwrap();
    let stored = provider.history(None, 1).await.unwrap().remove(0);
    let mut moved = Event::new(
        "events.secret.y",
        "secret",
        "s",
        "src",
        stored.payload.clone(),
    );
    moved.metadata.insert("k".into(), "v".into());
    provider.publish(&moved).await.unwrap();
    bus.publish("secret", "z", "s", "src", json!({"pin": 2}))
        .await
        .unwrap();

    assert_eq!(next(&mut live).await.event.id, real.id);
    let err = live.next().await.unwrap_err();
    match &err {
        Error::Decryption(msg) => assert!(msg.contains(&moved.id), "{msg}"),
        other => panic!("unexpected {other}"),
    }
    // the subscription stays usable
    assert_eq!(next(&mut live).await.event.payload, json!({"pin": 2}));
    let dead = dlq.list(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.id, moved.id);
    assert_eq!(dead[0].original_subject, "events.secret.y");
    assert!(
        dead[0].reason.contains("associated data"),
        "{}",
        dead[0].reason
    );
    assert_eq!(bus.metrics().snapshot().decrypt_errors, 1);
    // listing history names the bad event
    let err = bus.list_events(Some("secret"), 10).await.unwrap_err();
    assert!(err.to_string().contains(&moved.id));
    // listing each event separately shows the others, decrypted, in order
    let listed = bus.list_events_each(Some("secret"), 10).await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let ids: Vec<String> = listed
        .iter()
        .map(|r| match r {
            Ok(event) => event.id.clone(),
            Err(err) => format!("err:{err}"),
        })
        .collect();
    // newest first: the second plaintext event, the moved one, the first
    assert_eq!(listed[0].as_ref().unwrap().payload, json!({"pin": 2}));
    assert!(
        ids[1].starts_with("err:") && ids[1].contains(&moved.id),
        "{ids:?}"
    );
    assert!(matches!(listed[1], Err(Error::Decryption(_))));
    assert_eq!(listed[2].as_ref().unwrap().id, real.id);
    assert_eq!(listed[2].as_ref().unwrap().payload, json!({"pin": 1}));
}

#[tokio::test]
async fn undecryptable_durable_event_is_not_redelivered_after_term() {
    let (bus, provider) = bus();
    bus.set_encryptor(Arc::new(TestEncryptor { key: 3 }));
    bus.publish("secret", "x", "s", "src", json!(1))
        .await
        .unwrap();
    bus.set_encryptor(Arc::new(TestEncryptor { key: 4 })); // key lost
    let opts = event_core::SubscribeOptions {
        ack_wait: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let mut sub = bus.wrap_subscription(
        provider
            .subscribe_durable_with_options("d1", "events.>", &opts)
            .await
            .unwrap(),
    );
    assert!(matches!(
        sub.next_manual_ack().await,
        Err(Error::Decryption(_))
    ));
    // terminated: not redelivered after the ack wait
    let again = tokio::time::timeout(Duration::from_millis(300), sub.next_manual_ack()).await;
    assert!(again.is_err(), "terminated event came back");
}

#[tokio::test]
async fn router_gets_plaintext_and_sequence_and_can_refuse() {
    let (bus, provider) = bus();
    let router = Arc::new(CollectRouter::default());
    bus.set_encryptor(Arc::new(TestEncryptor { key: 9 }));
    bus.set_router(router.clone());
    let e = bus
        .publish("orders", "new", "s", "src", json!({"n": 1}))
        .await
        .unwrap();
    {
        let routed = router.routed.lock().unwrap();
        assert_eq!(routed.len(), 1);
        assert_eq!(*routed[0].0, e);
        assert_eq!(routed[0].1, 1);
    }
    router.refuse.store(true, Ordering::SeqCst);
    let e2 = Event::new("events.orders.new", "orders", "s", "src", json!({"n": 2}));
    assert!(matches!(
        bus.publish_event(&e2).await,
        Err(Error::Closed(_))
    ));
    // stored anyway; a retry is deduplicated and routed
    assert_eq!(provider.info().await.unwrap().messages, 2);
    router.refuse.store(false, Ordering::SeqCst);
    assert_eq!(bus.publish_event(&e2).await.unwrap(), 2);
    assert_eq!(provider.info().await.unwrap().messages, 2);
    assert_eq!(router.routed.lock().unwrap()[1].0.id, e2.id);
    // the refused publish was stored: a publish and a router error, not a
    // publish error
    let m = bus.metrics().snapshot();
    assert_eq!(
        (m.router_errors, m.publish_errors, m.publish_total),
        (1, 0, 3)
    );
    assert_eq!(m.publish_latency.count, 3);
}

#[tokio::test]
async fn publish_options_are_passed_through() {
    let (bus, _) = bus();
    let e1 = Event::new("events.a.b", "a", "s", "src", json!(1));
    let seq = bus.publish_event(&e1).await.unwrap();
    let e2 = Event::new("events.a.b", "a", "s", "src", json!(2));
    let wrong = PublishOptions {
        expected_sequence: Some(seq + 5),
        ..Default::default()
    };
    assert!(matches!(
        bus.publish_event_with_options(&e2, &wrong).await,
        Err(Error::WrongLastSequence { .. })
    ));
    let same_msg = PublishOptions {
        msg_id: Some(e1.id.clone()),
        ..Default::default()
    };
    assert_eq!(
        bus.publish_event_with_options(&e2, &same_msg)
            .await
            .unwrap(),
        seq
    );
}

#[tokio::test]
async fn list_and_counts() {
    let (bus, _) = bus();
    for (cat, n) in [("market", 3), ("system", 2)] {
        for i in 0..n {
            bus.publish(cat, "t", "s", "src", json!(i)).await.unwrap();
        }
    }
    let market = bus.list_events(Some("market"), 50).await.unwrap();
    assert_eq!(market.len(), 3);
    assert_eq!(market[0].payload, json!(2), "newest first");
    assert_eq!(bus.list_events(None, 2).await.unwrap().len(), 2);
    assert!(bus.list_events(Some("a.b"), 2).await.is_err());
    let counts = bus.counts(1000).await.unwrap();
    assert_eq!(counts.total, 5);
    assert_eq!(counts.categories["market"], 3);
    assert_eq!(counts.categories["system"], 2);
    assert_eq!(bus.counts(4).await.unwrap().total, 4);
    let info = bus.info().await.unwrap();
    assert_eq!((info.provider.as_str(), info.messages), ("memory", 5));
    assert!(bus.health().await.unwrap());
    let snap = bus.metrics().snapshot();
    assert_eq!(snap.publish_latency.count, 5);
    assert!(snap.publish_latency.max_ns >= snap.publish_latency.p50_ns);
}

/// A provider written against the 0.3 API: only the convenience methods.
struct LegacyProvider(MemoryProvider);

#[async_trait]
impl EventProvider for LegacyProvider {
    async fn publish(&self, event: &Event) -> Result<u64> {
        self.0.publish(event).await
    }
    async fn subscribe(&self, filter: &str) -> Result<Box<dyn Subscription>> {
        self.0.subscribe(filter).await
    }
    async fn subscribe_durable(&self, name: &str, filter: &str) -> Result<Box<dyn Subscription>> {
        self.0.subscribe_durable(name, filter).await
    }
    async fn history(&self, filter: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        self.0.history(filter, limit).await
    }
    async fn unsubscribe(&self, name: &str) -> Result<()> {
        self.0.unsubscribe(name).await
    }
    async fn info(&self) -> Result<ProviderInfo> {
        self.0.info().await
    }
    fn name(&self) -> &str {
        "legacy"
    }
}

#[tokio::test]
async fn legacy_providers_work_without_options_and_refuse_options_clearly() {
    let bus = EventBus::new(LegacyProvider(MemoryProvider::default()));
    let mut sub = bus.subscribe("events.>").await.unwrap();
    let e = bus.publish("a", "b", "s", "src", json!(1)).await.unwrap();
    assert_eq!(next(&mut sub).await.event.id, e.id);
    bus.update_subscription(event_core::SubscriptionFilter {
        subscriber_id: "s".into(),
        subjects: vec!["events.>".into()],
        durable: true,
    })
    .await
    .unwrap();
    let mut subs = bus.create_subscriber("s").await.unwrap();
    assert_eq!(next(&mut subs[0]).await.event.id, e.id);
    let err = bus
        .publish_event_with_options(&e, &PublishOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");

    // with a router, and with an encryptor, the bus hands the provider a
    // shared event: it still reaches the provider's `publish`
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    let routed = bus.publish("a", "b", "s", "src", json!(2)).await.unwrap();
    assert_eq!(router.routed.lock().unwrap().len(), 1);
    bus.set_encryptor(Arc::new(TestEncryptor { key: 3 }));
    let encrypted = bus.publish("a", "b", "s", "src", json!(3)).await.unwrap();
    let stored = bus.provider().history(None, 10).await.unwrap();
    let ids: Vec<&str> = stored.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [encrypted.id.as_str(), routed.id.as_str(), e.id.as_str()]
    );
}

#[tokio::test]
async fn hooks_can_be_set_on_a_shared_bus_while_publishing() {
    let (bus, _) = bus();
    let publishers: Vec<_> = (0..4)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    bus.publish("load", "t", "s", "src", json!({"t": t, "i": i}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    bus.set_encryptor(Arc::new(TestEncryptor { key: 5 }));
    bus.set_router(Arc::new(CollectRouter::default()));
    for p in publishers {
        p.await.unwrap();
    }
    // every event reads back as plaintext, encrypted or not
    let all = bus.list_events(Some("load"), 1000).await.unwrap();
    assert_eq!(all.len(), 800);
    assert!(all.iter().all(|e| e.payload.get("t").is_some()));
}

#[tokio::test]
async fn lag_is_reported_and_counted() {
    let provider = MemoryProvider::new(event_memory::MemoryConfig {
        subject_prefix: "events".into(),
        // retention overtakes the idle subscriber
        max_events: 5,
        channel_capacity: 4,
    })
    .unwrap();
    let bus = EventBus::new(provider);
    let mut sub = bus.subscribe("events.>").await.unwrap();
    for i in 0..20 {
        bus.publish("a", "b", "s", "src", json!(i)).await.unwrap();
    }
    let missed = match sub.next().await {
        Err(Error::Lagged { missed }) => missed,
        other => panic!("expected lag, got {other:?}"),
    };
    assert_eq!(missed, 15);
    assert_eq!(bus.metrics().snapshot().lagged, missed);
    // the subscription continues
    assert!(next(&mut sub).await.event.payload.as_i64().unwrap() >= 15);
}

/// A subscription that reports one undecodable message, then closes.
struct UndecodableOnce(bool);

#[async_trait]
impl Subscription for UndecodableOnce {
    async fn next(&mut self) -> Result<Option<event_core::ReceivedEvent>> {
        Ok(None)
    }
    async fn next_manual_ack(&mut self) -> Result<Option<event_core::PendingEvent>> {
        if std::mem::replace(&mut self.0, false) {
            return Err(Error::Undecodable {
                subject: "events.orders.new".into(),
                sequence: 42,
                reason: "expected value at line 1".into(),
                raw: "{not json".into(),
            });
        }
        Ok(None)
    }
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn undecodable_messages_are_dead_lettered_and_reported() {
    let (bus, _) = bus();
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());
    let mut sub = bus.wrap_subscription(Box::new(UndecodableOnce(true)));
    assert!(matches!(
        sub.next_manual_ack().await,
        Err(Error::Undecodable { sequence: 42, .. })
    ));
    assert!(sub.next_manual_ack().await.unwrap().is_none());
    let dead = dlq.list(1).await.unwrap().remove(0);
    assert_eq!(dead.original_subject, "events.orders.new");
    assert_eq!(dead.event.category, "orders");
    assert_eq!(dead.event.payload, json!("{not json"));
    assert_eq!(dead.event.metadata["a3s.sequence"], "42");
    assert!(dead.reason.starts_with("undecodable: "), "{}", dead.reason);
    assert_eq!(bus.metrics().snapshot().dlq_total, 1);
}

/// Under a prefix of two tokens the dead letter of an undecodable message
/// has the category after the prefix, not the prefix's second token.
#[tokio::test]
async fn an_undecodable_message_under_a_two_token_prefix_is_dead_lettered_with_its_category() {
    struct Undecodable(bool);
    #[async_trait]
    impl Subscription for Undecodable {
        async fn next(&mut self) -> Result<Option<event_core::ReceivedEvent>> {
            Ok(None)
        }
        async fn next_manual_ack(&mut self) -> Result<Option<event_core::PendingEvent>> {
            if std::mem::replace(&mut self.0, false) {
                return Err(Error::Undecodable {
                    subject: "acme.events.orders.new".into(),
                    sequence: 7,
                    reason: "expected value".into(),
                    raw: "{".into(),
                });
            }
            Ok(None)
        }
        async fn close(&mut self) -> Result<()> {
            Ok(())
        }
    }
    let provider = MemoryProvider::new(event_memory::MemoryConfig {
        subject_prefix: "acme.events".into(),
        ..Default::default()
    })
    .unwrap();
    let bus = EventBus::new(provider);
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());
    let mut sub = bus.wrap_subscription(Box::new(Undecodable(true)));
    assert!(sub.next_manual_ack().await.is_err());
    let dead = dlq.list(1).await.unwrap().remove(0);
    assert_eq!(dead.original_subject, "acme.events.orders.new");
    assert_eq!(dead.event.category, "orders");
}

/// The provider terminated an undecodable message itself: a dead letter
/// that no DLQ takes (none set, or it refuses) is gone, and counted so.
#[tokio::test]
async fn undecodable_messages_no_dlq_takes_count_as_dropped() {
    let (no_dlq, _) = bus();
    let mut sub = no_dlq.wrap_subscription(Box::new(UndecodableOnce(true)));
    assert!(sub.next_manual_ack().await.is_err());
    let m = no_dlq.metrics().snapshot();
    assert_eq!((m.dlq_dropped, m.dlq_total, m.dlq_errors), (1, 0, 0));

    let (refusing, _) = bus();
    let dlq = Arc::new(FlakyDlq::default());
    dlq.then_permanent.store(1, Ordering::SeqCst);
    refusing.set_dlq_handler(dlq);
    let mut sub = refusing.wrap_subscription(Box::new(UndecodableOnce(true)));
    assert!(sub.next_manual_ack().await.is_err());
    let m = refusing.metrics().snapshot();
    assert_eq!((m.dlq_dropped, m.dlq_total, m.dlq_errors), (1, 0, 1));
}

#[tokio::test]
async fn publish_batch_runs_the_pipeline_per_event_and_reports_each_result() {
    let (bus, provider) = bus();
    let enc = Arc::new(TestEncryptor { key: 7 });
    let router = Arc::new(CollectRouter::default());
    bus.set_encryptor(enc.clone());
    bus.set_router(router.clone());
    let bus = bus.with_schema_registry(Arc::new(RequireField("rate")));

    let first = Event::new("events.fx.usd", "fx", "s", "src", json!({"n": 1}));
    let bad_subject = Event::new("events.fx.>", "fx", "s", "src", json!({"n": 2}));
    let bad_schema = Event::typed("events.fx.eur", "fx", "fx.rate", 1, "s", "src", json!({}));
    let typed = Event::typed(
        "events.fx.eur",
        "fx",
        "fx.rate",
        1,
        "s",
        "src",
        json!({"rate": 7}),
    );
    let batch = [
        first.clone(),
        bad_subject,
        bad_schema,
        typed.clone(),
        first.clone(), // a repeat: deduplicated by the event id
    ];
    let results = bus.publish_batch(&batch).await.unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().unwrap(), &1);
    assert!(matches!(results[1], Err(Error::InvalidSubject { .. })));
    assert!(matches!(results[2], Err(Error::SchemaValidation { .. })));
    assert_eq!(results[3].as_ref().unwrap(), &2);
    assert_eq!(results[4].as_ref().unwrap(), &1);

    // stored once each, encrypted under their own ids
    let stored = provider.history(None, 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    for event in &stored {
        assert!(enc.is_encrypted(&event.payload), "{event:?}");
    }
    let listed = bus.list_events(Some("fx"), 10).await.unwrap();
    assert_eq!(listed[0].payload, typed.payload);
    assert_eq!(listed[1].payload, first.payload);

    // the router saw the plaintext of every stored event, in order, once
    // (the repeat is a duplicate the memory provider reports)
    let routed: Vec<(String, u64)> = router
        .routed
        .lock()
        .unwrap()
        .iter()
        .map(|(e, s)| (e.id.clone(), *s))
        .collect();
    assert_eq!(routed, [(first.id.clone(), 1), (typed.id.clone(), 2)]);
    assert_eq!(router.routed.lock().unwrap()[1].0.payload, typed.payload);

    // each event counted once
    let m = bus.metrics().snapshot();
    assert_eq!((m.publish_total, m.publish_errors), (3, 2));
    assert_eq!(m.validation_errors, 2);
    assert_eq!(m.encrypt_total, 3);
    assert_eq!(m.publish_latency.count, 3);
}

#[tokio::test]
async fn publish_batch_reports_provider_and_router_refusals_per_event() {
    let (bus, provider) = bus();
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    let small = Event::new("events.a.b", "a", "s", "src", json!(1));
    let huge = Event::new(
        "events.a.b",
        "a",
        "s",
        "src",
        json!("x".repeat(2 * 1024 * 1024)),
    );
    let results = bus.publish_batch(&[huge, small.clone()]).await.unwrap();
    assert!(matches!(results[0], Err(Error::PayloadTooLarge { .. })));
    assert_eq!(results[1].as_ref().unwrap(), &1);
    assert_eq!(router.routed.lock().unwrap().len(), 1);

    router.refuse.store(true, Ordering::SeqCst);
    let other = Event::new("events.a.c", "a", "s", "src", json!(2));
    let results = bus.publish_batch(&[other]).await.unwrap();
    assert!(matches!(results[0], Err(Error::Closed(_))));
    // stored anyway (as with publish_event): counted as stored and as a
    // router error; only the oversized event is a publish error
    assert_eq!(provider.info().await.unwrap().messages, 2);
    let m = bus.metrics().snapshot();
    assert_eq!(
        (m.publish_total, m.publish_errors, m.router_errors),
        (2, 1, 1)
    );
    assert_eq!(m.publish_latency.count, 2);
    assert!(bus.publish_batch(&[]).await.unwrap().is_empty());
}

/// An encryptor whose key is gone: every encryption fails.
struct KeylessEncryptor;

impl EventEncryptor for KeylessEncryptor {
    fn encrypt(&self, _event_id: &str, _payload: &serde_json::Value) -> Result<serde_json::Value> {
        Err(Error::Encryption("no active key".into()))
    }
    fn decrypt(&self, _event_id: &str, _payload: &serde_json::Value) -> Result<serde_json::Value> {
        Err(Error::Decryption("no key".into()))
    }
    fn is_encrypted(&self, _payload: &serde_json::Value) -> bool {
        false
    }
}

#[tokio::test]
async fn an_encryption_failure_publishes_and_routes_nothing_and_counts_once() {
    let (bus, provider) = bus();
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    bus.set_encryptor(Arc::new(KeylessEncryptor));
    let err = bus
        .publish("secret", "x", "s", "src", json!({"pin": 1}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Encryption(_)), "{err}");
    let event = Event::new("events.secret.x", "secret", "s", "src", json!({"pin": 2}));
    let results = bus.publish_batch(&[event]).await.unwrap();
    assert!(matches!(results[0], Err(Error::Encryption(_))));
    assert_eq!(provider.info().await.unwrap().messages, 0);
    assert!(router.routed.lock().unwrap().is_empty());
    let m = bus.metrics().snapshot();
    assert_eq!(
        (
            m.publish_errors,
            m.validation_errors,
            m.encrypt_total,
            m.publish_total
        ),
        (2, 0, 0, 0)
    );
    assert_eq!(m.publish_latency.count, 0);
}

/// A payload nested deeper than `MAX_PAYLOAD_DEPTH` is refused at publish
/// whether or not the bus encrypts, with the provider's error
/// (`Serialization`), whatever the encryptor: the provider only sees the
/// shallow envelope, and an encryptor that does not check (any custom one)
/// would hide a payload that no JSON reader can parse back at decryption,
/// so every reader would dead-letter it. A payload at the limit still
/// passes and reads back.
#[tokio::test]
async fn a_payload_too_deep_is_refused_with_or_without_encryption() {
    let nested = |levels: usize| {
        let mut payload = json!({ "leaf": true });
        for _ in 1..levels {
            payload = json!([payload]);
        }
        payload
    };
    for encrypted in [false, true] {
        let (bus, provider) = bus();
        if encrypted {
            bus.set_encryptor(Arc::new(TestEncryptor { key: 2 }));
        }
        let mut live = bus.subscribe("events.deep.>").await.unwrap();
        let deepest = bus
            .publish(
                "deep",
                "x",
                "s",
                "src",
                nested(event_core::MAX_PAYLOAD_DEPTH),
            )
            .await
            .unwrap();
        assert_eq!(next(&mut live).await.event.payload, deepest.payload);
        let too_deep = nested(event_core::MAX_PAYLOAD_DEPTH + 1);
        let err = bus
            .publish("deep", "x", "s", "src", too_deep.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Serialization(_)),
            "encrypted: {encrypted}: {err:?}"
        );
        let event = Event::new("events.deep.x", "deep", "s", "src", too_deep);
        let results = bus.publish_batch(&[event]).await.unwrap();
        assert!(
            matches!(results[0], Err(Error::Serialization(_))),
            "encrypted: {encrypted}: {results:?}"
        );
        assert_eq!(
            provider.info().await.unwrap().messages,
            1,
            "encrypted: {encrypted}"
        );
        let m = bus.metrics().snapshot();
        assert_eq!(
            (m.publish_errors, m.encrypt_total),
            (2, u64::from(encrypted)),
            "encrypted: {encrypted}"
        );
    }
}

/// An undecryptable event on its final delivery whose dead letter the DLQ
/// refuses is left unsettled, not naked (a nak of a final delivery ends the
/// event): its spare delivery offers it to the DLQ again. It counts in
/// `dlq_unsettled`, not as handed to a DLQ.
#[tokio::test]
async fn an_undecryptable_final_delivery_the_dlq_refused_comes_once_more() {
    let (bus, provider) = bus();
    bus.set_encryptor(Arc::new(TestEncryptor { key: 3 }));
    bus.publish("secret", "x", "s", "src", json!(1))
        .await
        .unwrap();
    bus.set_encryptor(Arc::new(TestEncryptor { key: 4 })); // key lost
    let dlq = Arc::new(FlakyDlq::default());
    dlq.refusals.store(1, Ordering::SeqCst);
    bus.set_dlq_handler(dlq.clone());
    let opts = event_core::SubscribeOptions {
        ack_wait: Some(Duration::from_millis(100)),
        max_deliver: Some(1),
        ..Default::default()
    };
    let mut sub = bus.wrap_subscription(
        provider
            .subscribe_durable_with_options("d1", "events.>", &opts)
            .await
            .unwrap(),
    );
    assert!(matches!(
        sub.next_manual_ack().await,
        Err(Error::Decryption(_))
    ));
    assert!(dlq.stored.lock().unwrap().is_empty());
    assert_eq!(bus.metrics().snapshot().dlq_unsettled, 1);
    let spare = tokio::time::timeout(Duration::from_secs(2), sub.next_manual_ack())
        .await
        .expect("the spare delivery of the unsettled final delivery");
    assert!(matches!(spare, Err(Error::Decryption(_))), "{spare:?}");
    let stored = dlq.stored.lock().unwrap().clone();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].delivery_attempts, 2);
    let m = bus.metrics().snapshot();
    assert_eq!((m.dlq_total, m.dlq_errors, m.dlq_unsettled), (1, 1, 1));
}

/// `publish_event_stored`: a router's refusal after the store is inside the
/// `Ok` (with the sequence the event was stored at), so a caller can tell
/// it from a publish that stored nothing; metrics as for `publish_event`.
#[tokio::test]
async fn publish_event_stored_carries_a_router_refusal_inside_ok() {
    let (bus, provider) = bus();
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    let routed = Event::new("events.orders.new", "orders", "s", "src", json!({"n": 1}));
    let stored = bus.publish_event_stored(&routed).await.unwrap();
    assert_eq!(stored.sequence, 1);
    assert!(stored.not_routed.is_none());
    assert!(stored.is_routed());
    assert_eq!(router.routed.lock().unwrap().len(), 1);

    router.refuse.store(true, Ordering::SeqCst);
    let refused = Event::new("events.orders.new", "orders", "s", "src", json!({"n": 2}));
    let stored = bus.publish_event_stored(&refused).await.unwrap();
    assert_eq!(stored.sequence, 2);
    assert!(!stored.is_routed());
    assert!(
        matches!(stored.not_routed, Some(Error::Closed(_))),
        "{stored:?}"
    );
    assert_eq!(provider.info().await.unwrap().messages, 2);
    // what `publish_event` would have returned
    assert!(matches!(stored.into_result(), Err(Error::Closed(_))));

    // refused before the store: the `Err`, nothing stored or routed
    let bad = Event::new("nope.orders.new", "orders", "s", "src", json!({"n": 3}));
    let err = bus.publish_event_stored(&bad).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSubject { .. }), "{err}");
    let huge = Event::new(
        "events.orders.new",
        "orders",
        "s",
        "src",
        json!("x".repeat(2 * 1024 * 1024)),
    );
    let err = bus.publish_event_stored(&huge).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
    assert_eq!(provider.info().await.unwrap().messages, 2);
    assert_eq!(router.routed.lock().unwrap().len(), 1);

    // counted exactly as `publish_event` counts: two stored (one refused by
    // the router), two refused before the store
    let m = bus.metrics().snapshot();
    assert_eq!(
        (
            m.publish_total,
            m.router_errors,
            m.publish_errors,
            m.validation_errors
        ),
        (2, 1, 2, 1)
    );
    assert_eq!(m.publish_latency.count, 2);
}

/// The same with options: a refusal after the store is inside the `Ok`, the
/// provider's refusal (a wrong expected sequence) is the `Err`.
#[tokio::test]
async fn publish_event_stored_with_options_tells_the_two_apart() {
    let (bus, _) = bus();
    let router = Arc::new(CollectRouter::default());
    router.refuse.store(true, Ordering::SeqCst);
    bus.set_router(router.clone());
    let first = Event::new("events.a.b", "a", "s", "src", json!(1));
    let options = PublishOptions {
        expected_sequence: Some(0),
        ..PublishOptions::default()
    };
    let stored = bus
        .publish_event_stored_with_options(&first, &options)
        .await
        .unwrap();
    assert_eq!(stored.sequence, 1);
    assert!(matches!(stored.not_routed, Some(Error::Closed(_))));
    let second = Event::new("events.a.b", "a", "s", "src", json!(2));
    let err = bus
        .publish_event_stored_with_options(&second, &options)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongLastSequence { .. }), "{err}");
    let m = bus.metrics().snapshot();
    assert_eq!(
        (m.publish_total, m.router_errors, m.publish_errors),
        (1, 1, 1)
    );
    // the refused event itself, published again with the same options, is
    // deduplicated before the sequence is checked: stored once, and routed
    router.refuse.store(false, Ordering::SeqCst);
    let again = bus
        .publish_event_stored_with_options(&first, &options)
        .await
        .unwrap();
    assert_eq!((again.sequence, again.duplicate), (1, Some(true)));
    assert!(again.is_routed());
    assert_eq!(router.routed.lock().unwrap().len(), 1);
}

/// `publish_batch_stored`: per event, `Ok(Stored)` when the provider stored
/// it (a router refusal inside), `Err` when it was refused before the store.
#[tokio::test]
async fn publish_batch_stored_reports_router_refusals_inside_ok() {
    let (bus, provider) = bus();
    let router = Arc::new(CollectRouter::default());
    router.refuse.store(true, Ordering::SeqCst);
    bus.set_router(router.clone());
    let stored_event = Event::new("events.a.b", "a", "s", "src", json!(1));
    let bad = Event::new("nope.a.b", "a", "s", "src", json!(2));
    let results = bus
        .publish_batch_stored(&[stored_event, bad])
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    let stored = results[0].as_ref().unwrap();
    assert_eq!(stored.sequence, 1);
    assert!(matches!(stored.not_routed, Some(Error::Closed(_))));
    assert!(matches!(results[1], Err(Error::InvalidSubject { .. })));
    assert_eq!(provider.info().await.unwrap().messages, 1);
    let m = bus.metrics().snapshot();
    assert_eq!(
        (m.publish_total, m.router_errors, m.publish_errors),
        (1, 1, 1)
    );
    assert_eq!(m.publish_latency.count, 1);
}

/// A repeat the provider stores once (a sender's retry) is not handed to
/// the router again: it was routed when first stored. A repeat of an event
/// the router refused is, until the router takes it.
#[tokio::test]
async fn a_deduplicated_repeat_is_routed_only_if_the_router_refused_the_first() {
    let (bus, provider) = bus();
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    let routed = |router: &CollectRouter| router.routed.lock().unwrap().len();

    let event = Event::new("events.orders.new", "orders", "s", "src", json!({"n": 1}));
    let first = bus.publish_event_stored(&event).await.unwrap();
    assert_eq!(first.duplicate, Some(false));
    let again = bus.publish_event_stored(&event).await.unwrap();
    assert_eq!(
        (again.sequence, again.duplicate),
        (first.sequence, Some(true))
    );
    assert!(again.is_routed());
    assert_eq!(routed(&router), 1, "the repeat was routed again");

    // refused when first stored: the repeat goes to the router, once taken
    // no more
    router.refuse.store(true, Ordering::SeqCst);
    let refused = Event::new("events.orders.new", "orders", "s", "src", json!({"n": 2}));
    assert!(
        !bus.publish_event_stored(&refused)
            .await
            .unwrap()
            .is_routed()
    );
    assert!(
        !bus.publish_event_stored(&refused)
            .await
            .unwrap()
            .is_routed(),
        "still refused: refused again"
    );
    router.refuse.store(false, Ordering::SeqCst);
    let retried = bus.publish_event_stored(&refused).await.unwrap();
    assert_eq!(retried.duplicate, Some(true));
    assert!(retried.is_routed());
    assert_eq!(routed(&router), 2, "the retry of a refused event is routed");
    assert!(
        bus.publish_event_stored(&refused)
            .await
            .unwrap()
            .is_routed()
    );
    assert_eq!(routed(&router), 2, "and only once");

    // refused inside a batch: publishing it again alone routes it too
    router.refuse.store(true, Ordering::SeqCst);
    let batched = Event::new("events.orders.new", "orders", "s", "src", json!({"n": 3}));
    let results = bus
        .publish_batch_stored(std::slice::from_ref(&batched))
        .await
        .unwrap();
    assert!(!results[0].as_ref().unwrap().is_routed());
    router.refuse.store(false, Ordering::SeqCst);
    assert!(
        bus.publish_event_stored(&batched)
            .await
            .unwrap()
            .is_routed()
    );
    assert_eq!(
        routed(&router),
        3,
        "the retry of an event refused in a batch is routed"
    );

    assert_eq!(provider.info().await.unwrap().messages, 3);
    let m = bus.metrics().snapshot();
    assert_eq!((m.publish_total, m.router_errors), (8, 3));
}

/// Stores through a memory provider, then, as told: answers, never answers
/// (a caller's timeout drops the call after the store), or fails as a lost
/// answer would (a timeout after the store).
#[derive(Default)]
struct LateAnswerProvider {
    store: MemoryProvider,
    /// 0: answer; 1: hang after the store; 2: time out after the store;
    /// 3: hang before the store.
    mode: std::sync::atomic::AtomicU8,
}

#[async_trait]
impl EventProvider for LateAnswerProvider {
    async fn publish(&self, event: &Event) -> Result<u64> {
        self.store.publish(event).await
    }
    async fn publish_shared_with_outcome(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<event_core::PublishOutcome> {
        if self.mode.load(Ordering::SeqCst) == 3 {
            std::future::pending::<()>().await;
        }
        let outcome = self
            .store
            .publish_shared_with_outcome(event, options)
            .await?;
        match self.mode.load(Ordering::SeqCst) {
            0 => Ok(outcome),
            1 => std::future::pending().await,
            _ => Err(Error::Timeout {
                operation: "publish".into(),
                elapsed: Duration::from_secs(5),
            }),
        }
    }
    /// As a single publish, by mode; 4: the whole call times out after the
    /// store.
    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<Result<u64>>> {
        if self.mode.load(Ordering::SeqCst) == 3 {
            std::future::pending::<()>().await;
        }
        let results = self.store.publish_batch(events).await?;
        let timeout = || Error::Timeout {
            operation: "publish".into(),
            elapsed: Duration::from_secs(5),
        };
        match self.mode.load(Ordering::SeqCst) {
            0 => Ok(results),
            1 => std::future::pending().await,
            2 => Ok(results.into_iter().map(|_| Err(timeout())).collect()),
            _ => Err(timeout()),
        }
    }
    async fn subscribe(&self, filter: &str) -> Result<Box<dyn Subscription>> {
        self.store.subscribe(filter).await
    }
    async fn subscribe_durable(&self, name: &str, filter: &str) -> Result<Box<dyn Subscription>> {
        self.store.subscribe_durable(name, filter).await
    }
    async fn history(&self, filter: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        self.store.history(filter, limit).await
    }
    async fn unsubscribe(&self, name: &str) -> Result<()> {
        self.store.unsubscribe(name).await
    }
    async fn info(&self) -> Result<ProviderInfo> {
        self.store.info().await
    }
    fn name(&self) -> &str {
        "late-answer"
    }
}

/// A router that, while held, never takes an event (a full queue the
/// caller gives up waiting on).
#[derive(Default)]
struct HeldRouter {
    held: std::sync::atomic::AtomicBool,
    routed: std::sync::Mutex<Vec<String>>,
}

impl HeldRouter {
    /// How many times the router took the event `id`.
    fn times_routed(&self, id: &str) -> usize {
        let routed = self.routed.lock().expect("router lock");
        routed.iter().filter(|r| *r == id).count()
    }
}

#[async_trait]
impl event_core::EventRouter for HeldRouter {
    async fn route_published(&self, event: Arc<Event>, _sequence: u64) -> Result<()> {
        if self.held.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.routed
            .lock()
            .expect("router lock")
            .push(event.id.clone());
        Ok(())
    }
}

/// A publish call that ends after the provider stored the event but before
/// the router had it (dropped by the caller's timeout while waiting for the
/// provider's answer or for the router, or failed with a timeout after the
/// store) leaves the event to its repeat: the repeat, deduplicated by the
/// provider, is routed, once.
#[tokio::test]
async fn a_repeat_of_a_call_that_ended_before_routing_is_routed_once() {
    let provider = Arc::new(LateAnswerProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let router = Arc::new(HeldRouter::default());
    bus.set_router(router.clone());
    let routed = |id: &str| router.times_routed(id);
    let give_up = Duration::from_millis(100);

    // (how the first call ends, what holds it)
    for (case, mode, held) in [
        ("dropped waiting for the provider's answer", 1, false),
        ("dropped waiting for the router", 0, true),
        ("failed after the store", 2, false),
    ] {
        let event = Event::new("events.orders.new", "orders", case, "src", json!({}));
        provider.mode.store(mode, Ordering::SeqCst);
        router.held.store(held, Ordering::SeqCst);
        let first = tokio::time::timeout(give_up, bus.publish_event(&event)).await;
        assert!(
            !matches!(first, Ok(Ok(_))),
            "{case}: the first call did not succeed: {first:?}"
        );
        assert_eq!(routed(&event.id), 0, "{case}");

        provider.mode.store(0, Ordering::SeqCst);
        router.held.store(false, Ordering::SeqCst);
        let repeat = bus.publish_event_stored(&event).await.unwrap();
        assert_eq!(repeat.duplicate, Some(true), "{case}: stored by the first");
        assert!(repeat.is_routed(), "{case}");
        assert_eq!(routed(&event.id), 1, "{case}: the repeat was routed");
        let again = bus.publish_event_stored(&event).await.unwrap();
        assert_eq!(again.duplicate, Some(true), "{case}");
        assert_eq!(routed(&event.id), 1, "{case}: and only once");
    }

    // with the dedup id of the options
    let event = Event::new("events.orders.new", "orders", "msg id", "src", json!({}));
    let options = PublishOptions {
        msg_id: Some("order-17".into()),
        ..PublishOptions::default()
    };
    provider.mode.store(1, Ordering::SeqCst);
    let first = tokio::time::timeout(give_up, bus.publish_event_with_options(&event, &options));
    assert!(first.await.is_err(), "dropped");
    provider.mode.store(0, Ordering::SeqCst);
    let repeat = bus
        .publish_event_stored_with_options(&event, &options)
        .await
        .unwrap();
    assert_eq!(repeat.duplicate, Some(true));
    assert_eq!(routed(&event.id), 1, "routed by the dedup id");

    // a call dropped before anything was stored, then published anew: the
    // new copy is routed once and its repeat not at all
    let event = Event::new("events.orders.new", "orders", "late", "src", json!({}));
    provider.mode.store(3, Ordering::SeqCst);
    assert!(
        tokio::time::timeout(give_up, bus.publish_event(&event))
            .await
            .is_err()
    );
    provider.mode.store(0, Ordering::SeqCst);
    let stored = bus.publish_event_stored(&event).await.unwrap();
    assert_eq!(
        stored.duplicate,
        Some(false),
        "the dropped call stored nothing"
    );
    assert!(stored.is_routed());
    let repeat = bus.publish_event_stored(&event).await.unwrap();
    assert_eq!(repeat.duplicate, Some(true));
    assert_eq!(routed(&event.id), 1, "the new copy routed, its repeat not");
}

/// The same for a batch: an event whose batch call ended after the
/// provider stored it but before the router had it (the call dropped while
/// waiting for the provider or the router, or failed with a timeout, for
/// the event or for the whole call) is routed when published again on its
/// own, as `publish_event` documents for a retry, and once.
#[tokio::test]
async fn a_repeat_of_a_batch_that_ended_before_routing_is_routed_once() {
    let provider = Arc::new(LateAnswerProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let router = Arc::new(HeldRouter::default());
    bus.set_router(router.clone());
    let routed = |id: &str| router.times_routed(id);
    let give_up = Duration::from_millis(100);

    for (case, mode, held) in [
        ("dropped waiting for the provider's answer", 1, false),
        ("dropped waiting for the router", 0, true),
        ("each event timed out after the store", 2, false),
        ("the whole call timed out after the store", 4, false),
    ] {
        let events = [
            Event::new("events.orders.new", "orders", case, "src", json!({"n": 1})),
            Event::new("events.orders.new", "orders", case, "src", json!({"n": 2})),
        ];
        provider.mode.store(mode, Ordering::SeqCst);
        router.held.store(held, Ordering::SeqCst);
        let first = tokio::time::timeout(give_up, bus.publish_batch(&events)).await;
        let all_ok = matches!(&first, Ok(Ok(results)) if results.iter().all(Result::is_ok));
        assert!(!all_ok, "{case}: the batch did not succeed: {first:?}");
        for event in &events {
            assert_eq!(routed(&event.id), 0, "{case}");
        }

        provider.mode.store(0, Ordering::SeqCst);
        router.held.store(false, Ordering::SeqCst);
        for event in &events {
            let repeat = bus.publish_event_stored(event).await.unwrap();
            assert_eq!(repeat.duplicate, Some(true), "{case}: stored by the batch");
            assert!(repeat.is_routed(), "{case}");
            assert_eq!(routed(&event.id), 1, "{case}: the repeat was routed");
            let again = bus.publish_event_stored(event).await.unwrap();
            assert_eq!(again.duplicate, Some(true), "{case}");
            assert_eq!(routed(&event.id), 1, "{case}: and only once");
        }
    }

    // a batch that routed its events leaves nothing for a repeat
    let event = Event::new("events.orders.new", "orders", "ok", "src", json!({}));
    let results = bus
        .publish_batch(std::slice::from_ref(&event))
        .await
        .unwrap();
    assert!(results[0].is_ok());
    let repeat = bus.publish_event_stored(&event).await.unwrap();
    assert_eq!(repeat.duplicate, Some(true));
    assert_eq!(routed(&event.id), 1, "routed by the batch, not again");
}

/// A batch hands each event to the router once: a repeat inside the batch,
/// or of an event stored before (a retried batch), is a duplicate
/// ([`event_bus::Stored::duplicate`]) and is not routed again, unless the
/// router refused its first copy. (Before the provider's batch said which
/// events were repeats, every repeat was routed: a retried batch of one
/// event reached the router twice.)
#[tokio::test]
async fn a_batch_routes_each_event_once_and_not_its_repeats() {
    let bus = EventBus::new(MemoryProvider::default());
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    let routed = |id: &str| router.times_routed(id);
    let a = Event::new("events.orders.new", "orders", "a", "src", json!({"n": 1}));
    let b = Event::new("events.orders.new", "orders", "b", "src", json!({"n": 2}));

    // a repeat inside the batch
    let first = bus
        .publish_batch_stored(&[a.clone(), b.clone(), a.clone()])
        .await
        .unwrap();
    let flags: Vec<Option<bool>> = first
        .iter()
        .map(|r| r.as_ref().unwrap().duplicate)
        .collect();
    assert_eq!(flags, [Some(false), Some(false), Some(true)]);
    assert_eq!(
        first[2].as_ref().unwrap().sequence,
        first[0].as_ref().unwrap().sequence
    );
    assert!(first.iter().all(|r| r.as_ref().unwrap().is_routed()));
    assert_eq!((routed(&a.id), routed(&b.id)), (1, 1), "each routed once");

    // the batch retried: both repeats, neither routed again
    let again = bus.publish_batch(&[a.clone(), b.clone()]).await.unwrap();
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    assert_eq!((routed(&a.id), routed(&b.id)), (1, 1), "a retried batch");

    // a batch repeat of an event published alone
    let c = Event::new("events.orders.new", "orders", "c", "src", json!({"n": 3}));
    bus.publish_event(&c).await.unwrap();
    bus.publish_batch(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(routed(&c.id), 1, "published alone, then in a batch");

    // refused by the router when first stored: its repeat is routed, once
    let d = Event::new("events.orders.new", "orders", "d", "src", json!({"n": 4}));
    router.refuse.store(true, Ordering::SeqCst);
    let refused = bus
        .publish_batch_stored(std::slice::from_ref(&d))
        .await
        .unwrap();
    assert!(!refused[0].as_ref().unwrap().is_routed());
    router.refuse.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        let repeat = bus
            .publish_batch_stored(std::slice::from_ref(&d))
            .await
            .unwrap();
        let stored = repeat[0].as_ref().unwrap();
        assert_eq!(stored.duplicate, Some(true));
        assert!(stored.is_routed());
    }
    assert_eq!(routed(&d.id), 1, "the refused event's repeat, once");
    assert_eq!(bus.provider().info().await.unwrap().messages, 4);
}

/// Stores through a memory provider; the result at index `lost` of a batch
/// is replaced by a timeout (its answer lost after the store), the others
/// as the memory provider says them (a repeat of that event later in the
/// batch: a duplicate).
#[derive(Default)]
struct FirstAnswerLostProvider {
    store: MemoryProvider,
    lost: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl EventProvider for FirstAnswerLostProvider {
    async fn publish(&self, event: &Event) -> Result<u64> {
        self.store.publish(event).await
    }
    async fn publish_shared_with_outcome(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<event_core::PublishOutcome> {
        self.store.publish_shared_with_outcome(event, options).await
    }
    async fn publish_batch_with_outcome(
        &self,
        events: &[Event],
    ) -> Result<Vec<Result<event_core::PublishOutcome>>> {
        let mut results = self.store.publish_batch_with_outcome(events).await?;
        if let Some(lost) = results.get_mut(self.lost.load(Ordering::SeqCst)) {
            *lost = Err(Error::Timeout {
                operation: "publish".into(),
                elapsed: Duration::from_secs(5),
            });
        }
        Ok(results)
    }
    async fn subscribe(&self, filter: &str) -> Result<Box<dyn Subscription>> {
        self.store.subscribe(filter).await
    }
    async fn subscribe_durable(&self, name: &str, filter: &str) -> Result<Box<dyn Subscription>> {
        self.store.subscribe_durable(name, filter).await
    }
    async fn history(&self, filter: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        self.store.history(filter, limit).await
    }
    async fn unsubscribe(&self, name: &str) -> Result<()> {
        self.store.unsubscribe(name).await
    }
    async fn info(&self) -> Result<ProviderInfo> {
        self.store.info().await
    }
    fn name(&self) -> &str {
        "first-answer-lost"
    }
}

/// A batch whose first copy of an event failed with a transient error after
/// the store (its answer lost) and whose later copy the provider reports as
/// that copy's duplicate: the event was stored by this call and not routed
/// yet, so the repeat is routed (as `publish_batch` documents: a repeat is
/// routed when the call that stored it ended before the router had it), and
/// a retry of the failed copy is not routed again. (The repeat used to be
/// reported routed, `is_routed`, while the router never had the event.)
#[tokio::test]
async fn a_repeat_in_a_batch_of_a_copy_that_failed_after_the_store_is_routed_once() {
    let provider = Arc::new(FirstAnswerLostProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let router = Arc::new(CollectRouter::default());
    bus.set_router(router.clone());
    let routed = |id: &str| router.times_routed(id);
    let a = Event::new("events.orders.new", "orders", "a", "src", json!({"n": 1}));
    let results = bus
        .publish_batch_stored(&[a.clone(), a.clone(), a.clone()])
        .await
        .unwrap();
    assert!(
        matches!(results[0], Err(Error::Timeout { .. })),
        "{results:?}"
    );
    for repeat in &results[1..] {
        let repeat = repeat.as_ref().unwrap();
        assert_eq!(repeat.duplicate, Some(true));
        assert!(repeat.is_routed());
    }
    assert_eq!(
        routed(&a.id),
        1,
        "the first repeat is routed (the router has the event), the second not"
    );
    // the failed copy retried: stored once, routed once
    let retry = bus.publish_event_stored(&a).await.unwrap();
    assert_eq!(retry.duplicate, Some(true));
    assert_eq!(routed(&a.id), 1, "and only once");

    // the other way round: the first copy stored and routed, the repeat's
    // answer lost; a retry of the repeat is not routed again
    provider.lost.store(1, Ordering::SeqCst);
    let b = Event::new("events.orders.new", "orders", "b", "src", json!({"n": 2}));
    let results = bus
        .publish_batch_stored(&[b.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().duplicate, Some(false));
    assert!(
        matches!(results[1], Err(Error::Timeout { .. })),
        "{results:?}"
    );
    assert_eq!(routed(&b.id), 1);
    let retried = bus.publish_event_stored(&b).await.unwrap();
    assert_eq!(retried.duplicate, Some(true));
    assert_eq!(routed(&b.id), 1, "the retried repeat of a routed event");

    // a repeat of an event routed before, then a copy whose answer is lost:
    // nothing routed again, now or on a retry
    let results = bus
        .publish_batch_stored(&[a.clone(), a.clone()])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().duplicate, Some(true));
    assert!(results[1].is_err());
    let retried = bus.publish_event_stored(&a).await.unwrap();
    assert_eq!(retried.duplicate, Some(true));
    assert_eq!(
        routed(&a.id),
        1,
        "a repeat of a routed event, in a batch or alone"
    );
    assert_eq!(provider.info().await.unwrap().messages, 2);
}
