//! Sinks and the sink-based DLQ handler.

#![allow(clippy::unwrap_used)] // test helpers

use event_core::{DeadLetterEvent, DlqHandler, Error, Event, EventProvider};
use event_memory::MemoryProvider;
use event_routing::{
    CollectorSink, EventSink, FailingSink, InProcessSink, LogSink, SinkDlqHandler, TopicSink,
};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn event() -> Event {
    Event::typed(
        "events.orders.created",
        "orders",
        "order.created",
        2,
        "s",
        "shop",
        json!({"id": 7}),
    )
    .with_metadata("region", "eu")
}

/// Under a prefix of two tokens a topic sink's forward has the category of
/// its subject (the token after the prefix), not the prefix's second token.
#[tokio::test]
async fn topic_sink_under_a_two_token_prefix_sets_the_category_after_the_prefix() {
    let provider: Arc<dyn EventProvider> = Arc::new(
        MemoryProvider::new(event_memory::MemoryConfig {
            subject_prefix: "acme.events".into(),
            ..Default::default()
        })
        .unwrap(),
    );
    let sink = TopicSink::new("audit", provider.clone(), "acme.events.audit.orders").unwrap();
    let mut original = event();
    original.subject = "acme.events.orders.created".into();
    assert_eq!(sink.forwarded(&original).category, "audit");
    sink.deliver(&original).await.unwrap();
    let stored = provider.history(None, 1).await.unwrap().remove(0);
    assert_eq!(stored.subject, "acme.events.audit.orders");
    assert_eq!(stored.category, "audit");
}

#[tokio::test]
async fn topic_sink_publishes_a_new_id_with_the_original_in_metadata() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let sink = TopicSink::new("audit", provider.clone(), "events.audit.orders").unwrap();
    let original = event();
    // Twice: a retry must not be swallowed by the provider's dedup window,
    // and the original must be publishable on its own subject too.
    sink.deliver(&original).await.unwrap();
    sink.deliver(&original).await.unwrap();
    provider.publish(&original).await.unwrap();

    let forwarded = provider.history(Some("events.audit.>"), 10).await.unwrap();
    assert_eq!(forwarded.len(), 2);
    for f in &forwarded {
        assert_ne!(f.id, original.id);
        assert_eq!(f.subject, "events.audit.orders");
        assert_eq!(f.category, "audit");
        assert_eq!(f.metadata["originalid"], original.id);
        assert_eq!(f.metadata["originalsubject"], "events.orders.created");
        assert_eq!(f.metadata["region"], "eu");
        assert_eq!(
            (f.payload.clone(), f.event_type.as_str(), f.version),
            (original.payload.clone(), "order.created", 2)
        );
    }
    assert_ne!(forwarded[0].id, forwarded[1].id);
    assert_eq!(
        provider
            .history(Some("events.orders.>"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn topic_sink_rejects_bad_subjects_before_any_io() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    for subject in [
        "events.audit.>",
        "events.audit",
        "other.audit.x",
        "events..x",
        "",
    ] {
        let err = TopicSink::new("t", provider.clone(), subject).unwrap_err();
        assert!(
            matches!(err, Error::InvalidSubject { .. }),
            "{subject}: {err}"
        );
    }
}

#[tokio::test]
async fn same_subject_topic_sink_keeps_each_events_subject() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let sink = TopicSink::same_subject("replay", provider.clone());
    let original = event();
    sink.deliver(&original).await.unwrap();
    let stored = provider.history(None, 10).await.unwrap();
    assert_eq!(stored[0].subject, original.subject);
    assert_ne!(stored[0].id, original.id);
    let mut bad = event();
    bad.subject = "elsewhere.a.b".into();
    assert!(matches!(
        sink.deliver(&bad).await,
        Err(Error::InvalidSubject { .. })
    ));
}

#[tokio::test]
async fn in_process_sink_calls_the_handler_and_reports_its_errors() {
    let calls = Arc::new(AtomicUsize::new(0));
    let sink = InProcessSink::new("h", {
        let calls = calls.clone();
        move |e: Event| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if e.event_type == "bad" {
                    Err(Error::Connection("nope".into()))
                } else {
                    Ok(())
                }
            }
        }
    });
    sink.deliver(&event()).await.unwrap();
    let mut bad = event();
    bad.event_type = "bad".into();
    assert!(matches!(
        sink.deliver(&bad).await,
        Err(Error::Connection(_))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(sink.name(), "h");
}

#[tokio::test]
async fn log_collector_and_failing_sinks() {
    LogSink::new("log")
        .with_level(tracing::Level::DEBUG)
        .deliver(&event())
        .await
        .unwrap();

    let collector = CollectorSink::new("c");
    assert!(!collector.wait_for(1, Duration::from_millis(10)).await);
    collector.deliver(&event()).await.unwrap();
    assert!(collector.wait_for(1, Duration::from_millis(10)).await);
    assert_eq!(collector.events()[0].payload, json!({"id": 7}));
    collector.clear();
    assert!(collector.is_empty());

    let failing = FailingSink::fail_first("f", "boom", 2);
    assert!(failing.deliver(&event()).await.is_err());
    assert!(failing.deliver(&event()).await.is_err());
    assert!(failing.deliver(&event()).await.is_ok());
    assert_eq!(failing.attempts(), 3);
    assert_eq!(failing.attempt_times().len(), 3);
    let always = FailingSink::new("f", "boom");
    let err = always.deliver(&event()).await.unwrap_err();
    assert!(err.to_string().contains("boom"));
}

#[tokio::test]
async fn sink_dlq_handler_forwards_under_the_configured_prefix_with_metadata() {
    let sink = Arc::new(CollectorSink::new("dlq"));
    let dlq = SinkDlqHandler::new(sink.clone(), "events.deadletters")
        .unwrap()
        .with_history(2);
    let original = event();
    let letter = DeadLetterEvent::new(original.clone(), "handler failed: timeout")
        .with_attempts(5)
        .with_first_failure_at(1_700_000_000_000)
        .with_subscriber("billing");
    dlq.handle(letter.clone()).await.unwrap();

    let forwarded = &sink.events()[0];
    assert_eq!(forwarded.subject, "events.deadletters.orders.created");
    // The category follows the subject, as a topic sink's forward's does (it
    // stayed `orders`: a category filter took the dead letter for an order).
    assert_eq!(forwarded.category, "deadletters");
    assert_eq!(forwarded.payload, original.payload);
    let m = &forwarded.metadata;
    assert_eq!(m["dlqreason"], "handler failed: timeout");
    assert_eq!(m["dlqoriginalsubject"], "events.orders.created");
    assert_eq!(m["dlqattempts"], "5");
    assert_eq!(m["dlqfirstfailureat"], "1700000000000");
    assert_eq!(m["dlqdeadletteredat"], letter.dead_lettered_at.to_string());
    assert_eq!(m["dlqsubscriber"], "billing");

    for i in 0..3 {
        dlq.handle(DeadLetterEvent::new(event(), format!("r{i}")))
            .await
            .unwrap();
    }
    assert_eq!(dlq.count().await.unwrap(), 4);
    let listed: Vec<_> = dlq
        .list(10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    assert_eq!(listed, ["r2", "r1"], "newest first, bounded history");
    assert_eq!(dlq.list(1).await.unwrap().len(), 1);
}

/// The dead letter of an event that was itself a forwarded dead letter (a
/// consumer of `events.dlq.>` failed it) describes the new failure only:
/// `dlqsubscriber` and `dlqfirstfailureat` left over from the first letter
/// named a subscriber and a time that had nothing to do with this one
/// (the reason and attempts beside them were the new failure's).
#[tokio::test]
async fn sink_dlq_handler_leaves_no_stale_failure_metadata_on_a_dead_letter_of_a_dead_letter() {
    let sink = Arc::new(CollectorSink::new("dlq"));
    let dlq = SinkDlqHandler::new(sink.clone(), "events.dlq").unwrap();
    let first = DeadLetterEvent::new(event(), "handler failed")
        .with_attempts(3)
        .with_first_failure_at(1_700_000_000_000)
        .with_subscriber("billing");
    dlq.handle(first).await.unwrap();
    let forwarded = sink.events()[0].clone();
    // a consumer outside any managed subscriber fails the forwarded letter
    dlq.handle(DeadLetterEvent::new(forwarded, "audit failed").with_attempts(1))
        .await
        .unwrap();
    let m = &sink.events()[1].metadata;
    assert_eq!(m["dlqreason"], "audit failed");
    assert_eq!(m["dlqattempts"], "1");
    assert!(!m.contains_key("dlqsubscriber"), "{m:?}");
    assert!(!m.contains_key("dlqfirstfailureat"), "{m:?}");
}

/// Under a prefix of two tokens (`acme.events`), told the provider's prefix,
/// the handler strips the whole prefix from the original subject and takes
/// the category after it: the forward of `acme.events.orders.created`
/// under `acme.events.dlq` is `acme.events.dlq.orders.created`, category
/// `dlq` (it was `acme.events.dlq.events.orders.created`, category `events`).
#[tokio::test]
async fn sink_dlq_handler_under_a_two_token_prefix_strips_the_provider_prefix() {
    let provider: Arc<dyn EventProvider> = Arc::new(
        MemoryProvider::new(event_memory::MemoryConfig {
            subject_prefix: "acme.events".into(),
            ..Default::default()
        })
        .unwrap(),
    );
    let dlq = SinkDlqHandler::new(
        Arc::new(TopicSink::same_subject("dlq", provider.clone())),
        "acme.events.dlq",
    )
    .unwrap()
    .with_provider_prefix(provider.subject_prefix())
    .unwrap();
    let mut original = event();
    original.subject = "acme.events.orders.created".into();
    let forward = dlq
        .forwarded_event(&DeadLetterEvent::new(original.clone(), "bad"))
        .unwrap();
    assert_eq!(forward.subject, "acme.events.dlq.orders.created");
    assert_eq!(forward.category, "dlq");
    dlq.handle(DeadLetterEvent::new(original, "bad"))
        .await
        .unwrap();
    let stored = provider
        .history(Some("acme.events.dlq.>"), 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].subject, "acme.events.dlq.orders.created");
    assert_eq!(stored[0].category, "dlq");
    assert!(
        SinkDlqHandler::new(Arc::new(CollectorSink::new("c")), "events.dlq")
            .unwrap()
            .with_provider_prefix("events.*")
            .is_err()
    );
}

#[tokio::test]
async fn sink_dlq_handler_through_a_topic_sink_lands_in_the_provider() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let dlq = SinkDlqHandler::new(
        Arc::new(TopicSink::same_subject("dlq", provider.clone())),
        "events.dlq",
    )
    .unwrap();
    let original = event();
    provider.publish(&original).await.unwrap();
    dlq.handle(DeadLetterEvent::new(original.clone(), "bad"))
        .await
        .unwrap();
    let stored = provider.history(Some("events.dlq.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 1, "not deduplicated against the original");
    assert_eq!(stored[0].subject, "events.dlq.orders.created");
    assert_eq!(stored[0].metadata["originalid"], original.id);
}

/// A forwarded dead letter is larger than its event (the failure in its
/// metadata): the dead letter of an event near the provider's limit, or
/// with a long reason, was refused by a topic sink's provider
/// (`PayloadTooLarge`) on every attempt, so a consumer runner left the
/// event unsettled and, after its spare delivery, no dead letter existed.
/// As a `ProviderDlqHandler` does, the handler forwards a smaller form: the
/// reason cut, else the event without its payload and own metadata, marked
/// `dlqpayloaddropped`.
#[tokio::test]
async fn sink_dlq_handler_forwards_a_dead_letter_over_the_providers_limit_smaller() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let dlq = SinkDlqHandler::new(
        Arc::new(TopicSink::same_subject("dlq", provider.clone())),
        "events.dlq",
    )
    .unwrap();

    // a long reason: cut, the event whole
    let original = event();
    let reason = format!("handler failed: {}", "r".repeat(2_000_000));
    dlq.handle(DeadLetterEvent::new(original.clone(), reason.clone()).with_attempts(3))
        .await
        .unwrap();
    let stored = provider.history(Some("events.dlq.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let m = &stored[0].metadata;
    assert_eq!(stored[0].payload, original.payload, "the event is whole");
    assert_eq!(m["region"], "eu");
    assert!(m["dlqreason"].starts_with(&reason[..1000]));
    assert!(m["dlqreason"].len() < 5000, "{}", m["dlqreason"].len());
    assert!(m["dlqreason"].ends_with(&format!("({} bytes)", reason.len())));
    assert_eq!(m["dlqattempts"], "3");
    assert!(!m.contains_key("dlqpayloaddropped"));

    // an event near the limit: forwarded without its payload, still naming it
    let mut big = event();
    big.payload = json!("");
    let base = serde_json::to_vec(&big).unwrap().len();
    big.payload = json!("x".repeat(1024 * 1024 - 10 - base));
    provider.publish(&big).await.unwrap();
    dlq.handle(DeadLetterEvent::new(big.clone(), "handler failed").with_subscriber("billing"))
        .await
        .unwrap();
    let stored = provider.history(Some("events.dlq.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    let stub = &stored[0];
    assert_eq!(stub.payload, serde_json::Value::Null);
    assert_eq!(stub.subject, "events.dlq.orders.created");
    assert_eq!(
        (stub.event_type.as_str(), stub.source.as_str()),
        ("order.created", "shop")
    );
    let m = &stub.metadata;
    assert_eq!(m["originalid"], big.id);
    assert_eq!(m["dlqreason"], "handler failed");
    assert_eq!(m["dlqsubscriber"], "billing");
    assert_eq!(m["dlqoriginalsubject"], "events.orders.created");
    assert!(m["dlqpayloaddropped"].contains("(1048576 bytes)"), "{m:?}");
    assert!(
        !m.contains_key("region"),
        "the event's own metadata is left out"
    );
    assert_eq!(dlq.count().await.unwrap(), 2);
}

#[tokio::test]
async fn sink_dlq_handler_errors_are_returned_and_prefixes_validated() {
    let dlq = SinkDlqHandler::new(Arc::new(FailingSink::new("f", "down")), "events.dlq").unwrap();
    assert!(
        dlq.handle(DeadLetterEvent::new(event(), "x"))
            .await
            .is_err()
    );
    assert_eq!(dlq.count().await.unwrap(), 0);
    assert!(dlq.list(10).await.unwrap().is_empty());
    for prefix in ["", "events.>", "a..b", "has space"] {
        assert!(
            matches!(
                SinkDlqHandler::new(Arc::new(CollectorSink::new("c")), prefix),
                Err(Error::InvalidSubject { .. })
            ),
            "{prefix:?}"
        );
    }
}

/// A provider written against the 0.3 API: only the convenience methods
/// (no options).
struct LegacyProvider(MemoryProvider);

#[async_trait::async_trait]
impl EventProvider for LegacyProvider {
    async fn publish(&self, event: &Event) -> event_core::Result<u64> {
        self.0.publish(event).await
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

/// Topic sinks work over such a provider: a forward publishes with no
/// options, an unchanged sink's dedup id (source and id) falls back to the
/// event id when the provider takes no options.
#[tokio::test]
async fn topic_sinks_work_over_a_provider_without_options() {
    let provider: Arc<dyn EventProvider> = Arc::new(LegacyProvider(MemoryProvider::default()));
    let forward = TopicSink::new("audit", provider.clone(), "events.audit.all").unwrap();
    forward.deliver(&event()).await.unwrap();
    let unchanged = TopicSink::unchanged("ingest", provider.clone());
    let e = event();
    unchanged.deliver(&e).await.unwrap();
    unchanged.deliver(&e).await.unwrap();
    assert_eq!(provider.history(None, 10).await.unwrap().len(), 2);
}

/// An unchanged sink forwards an event whose source has a control
/// character (a provider takes such an event: its own dedup id is the id)
/// and still stores a repeat once; its dedup id is the one
/// `event_cloudevents::cloudevent_dedup_id` gives, `%` and control
/// characters percent-encoded (so no two sources and ids share one).
#[tokio::test]
async fn an_unchanged_sink_forwards_an_event_whose_source_has_a_control_character() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let mut e = event();
    e.source = "shop\nwest".into();
    provider.publish(&e).await.unwrap();
    let target: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let unchanged = TopicSink::unchanged("ingest", target.clone());
    unchanged.deliver(&e).await.unwrap();
    unchanged.deliver(&e).await.unwrap();
    assert_eq!(target.history(None, 10).await.unwrap().len(), 1);
    assert_eq!(
        TopicSink::unchanged_dedup_id(&e),
        format!("11:shop%0Awest{}", e.id)
    );
    // `%` is encoded too, so a source spelling the escape is another source
    let mut spelled = e.clone();
    spelled.source = "shop%0Awest".into();
    assert_eq!(
        TopicSink::unchanged_dedup_id(&spelled),
        format!("13:shop%250Awest{}", e.id)
    );
    unchanged.deliver(&spelled).await.unwrap();
    assert_eq!(target.history(None, 10).await.unwrap().len(), 2);
}

/// An original subject within the limit (1,024 bytes) but too long for the
/// prefix to be put before it: the dead letter was refused for good
/// (`InvalidSubject`, "longer than 1024 bytes"), so a consumer runner left
/// the event unsettled and after its spare delivery no dead letter
/// existed. The forward keeps as many of the subject's leading tokens as
/// fit (the whole subject is in its metadata), else `{prefix}.unknown`.
#[tokio::test]
async fn sink_dlq_handler_forwards_the_dead_letter_of_an_event_with_a_subject_near_the_limit() {
    let sink = Arc::new(CollectorSink::new("dlq"));
    let dlq = SinkDlqHandler::new(sink.clone(), "events.dlq").unwrap();
    let long = format!("events.orders.{}", "x".repeat(1024 - 14));
    let one_token = format!("events.{}", "y".repeat(1024 - 7));
    for (subject, expected) in [
        (long.clone(), "events.dlq.orders".to_owned()),
        (one_token.clone(), "events.dlq.unknown".to_owned()),
    ] {
        assert_eq!(subject.len(), 1024);
        let event = Event::new(subject.clone(), "orders", "s", "shop", json!({}));
        dlq.handle(DeadLetterEvent::new(event, "failed"))
            .await
            .unwrap();
        let forwarded = sink.events().pop().unwrap();
        assert_eq!(forwarded.subject, expected);
        assert_eq!(forwarded.metadata["dlqoriginalsubject"], subject);
    }
}

/// A prefix that leaves no room for the `{prefix}.unknown` fallback would
/// make every forward of a long subject an `InvalidSubject` refusal (the
/// dead letter lost): `new` refuses it up front, and takes the longest
/// prefix that leaves that room.
#[test]
fn sink_dlq_handler_refuses_a_prefix_with_no_room_for_the_fallback_subject() {
    let sink = Arc::new(CollectorSink::new("dlq"));
    let longest = format!("dlq.{}", "p".repeat(1024 - ".unknown".len() - 4));
    assert_eq!(longest.len() + ".unknown".len(), 1024);
    SinkDlqHandler::new(sink.clone(), longest.clone()).unwrap();
    let too_long = format!("{longest}p");
    match SinkDlqHandler::new(sink, too_long) {
        Err(event_core::Error::InvalidConfig { field, .. }) => {
            assert_eq!(field, "subject_prefix");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
