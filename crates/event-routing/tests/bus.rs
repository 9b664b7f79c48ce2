//! A broker attached to an EventBus; topic sinks publishing through the bus
//! pipeline (validation, encryption under the new id); routing loops.

#![allow(clippy::unwrap_used)] // test helpers

use event_bus::EventBus;
use event_core::{Error, Event, EventEncryptor, EventProvider, Result, SchemaValidator};
use event_memory::MemoryProvider;
use event_routing::{
    Broker, BrokerConfig, CollectorSink, DeliverySpec, EventSink, InProcessSink, TopicSink,
    Trigger, TriggerFilter,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Binds the payload to the event id, reversibly (a stand-in for AES-GCM).
struct TestEncryptor;

impl EventEncryptor for TestEncryptor {
    fn encrypt(&self, event_id: &str, payload: &Value) -> Result<Value> {
        Ok(json!({"enc": payload.to_string(), "aad": event_id}))
    }
    fn decrypt(&self, event_id: &str, payload: &Value) -> Result<Value> {
        if payload["aad"] != event_id {
            return Err(Error::Decryption(format!(
                "bound to {}, not {event_id}",
                payload["aad"]
            )));
        }
        serde_json::from_str(payload["enc"].as_str().unwrap_or_default()).map_err(Into::into)
    }
    fn is_encrypted(&self, payload: &Value) -> bool {
        payload.get("enc").is_some()
    }
}

/// Refuses payloads without an `id`.
struct NeedsId;

impl SchemaValidator for NeedsId {
    fn validate(&self, event: &Event) -> Result<()> {
        if event.payload.get("id").is_none() {
            return Err(Error::SchemaValidation {
                event_type: event.event_type.clone(),
                version: event.version,
                path: "/id".into(),
                reason: "required".into(),
            });
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_attached_broker_routes_published_events_without_slowing_publishers() {
    let bus = EventBus::new(MemoryProvider::default());
    let broker = Broker::new();
    broker.attach(&bus);
    let seen = Arc::new(CollectorSink::new("seen"));
    let slow = Arc::new(InProcessSink::new("slow", {
        let seen = seen.clone();
        move |e| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                seen.deliver(&e).await
            }
        }
    }));
    broker
        .add_trigger(Trigger::new(
            "forex",
            TriggerFilter::by_subject("events.market.forex.>"),
            slow,
        ))
        .unwrap();

    let start = Instant::now();
    for i in 0..5 {
        bus.publish(
            "market",
            &format!("forex.pair{i}"),
            "rate",
            "reuters",
            json!({"i": i}),
        )
        .await
        .unwrap();
    }
    bus.publish("market", "stocks.aapl", "price", "nasdaq", json!({}))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "publish waited for a sink");
    broker.wait_idle().await;
    assert_eq!(seen.len(), 5);
    let m = broker.metrics();
    assert_eq!((m.enqueued, m.routed, m.matched, m.delivered), (6, 6, 5, 5));
    assert_eq!(bus.metrics().snapshot().publish_total, 6);
}

#[tokio::test]
async fn a_topic_sink_through_the_bus_encrypts_the_forward_under_its_own_id() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    bus.set_encryptor(Arc::new(TestEncryptor));
    let broker = Broker::new();
    broker.attach(&bus);
    // The broker sees plaintext.
    broker
        .add_trigger(Trigger::new(
            "big-orders",
            TriggerFilter::by_subject("events.orders.>")
                .with_filter(event_routing::FilterExpr::exact("type", "order.created")),
            Arc::new(TopicSink::through_bus("audit", bus.clone(), "events.audit.orders").unwrap()),
        ))
        .unwrap();
    let original = bus
        .publish_typed(
            "orders",
            "created",
            "order.created",
            1,
            "order",
            "shop",
            json!({"id": 1, "total": 99}),
        )
        .await
        .unwrap();
    broker.wait_idle().await;
    assert_eq!(broker.metrics().delivered, 1);

    // Stored encrypted, bound to the forwarded event's own id.
    let stored = provider.history(Some("events.audit.>"), 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let forwarded = &stored[0];
    assert_ne!(forwarded.id, original.id);
    assert_eq!(forwarded.payload["aad"], forwarded.id.as_str());
    assert_eq!(forwarded.metadata["originalid"], original.id);
    assert_eq!(
        TestEncryptor
            .decrypt(&forwarded.id, &forwarded.payload)
            .unwrap(),
        original.payload
    );
    // And the bus reads it back decrypted.
    let listed = bus.list_events(Some("audit"), 10).await.unwrap();
    assert_eq!(listed[0].payload, json!({"id": 1, "total": 99}));
}

#[tokio::test]
async fn a_forward_the_bus_refuses_is_retried_then_dead_lettered() {
    let bus = EventBus::new(MemoryProvider::default());
    let broker = Broker::new();
    // Direct routing (no attach): the validator applies to the forward only.
    let dead = Arc::new(CollectorSink::new("dead"));
    let sink = TopicSink::through_bus("audit", bus.clone(), "events.audit.all").unwrap();
    broker
        .add_trigger(
            Trigger::new("audit", TriggerFilter::all(), Arc::new(sink)).with_delivery(
                DeliverySpec::new()
                    .with_retries(2)
                    .with_backoff(
                        event_routing::BackoffPolicy::Linear,
                        Duration::from_millis(1),
                    )
                    .with_dead_letter_sink(dead.clone()),
            ),
        )
        .unwrap();
    bus.set_schema_validator(Arc::new(NeedsId));
    let event = Event::new(
        "events.orders.created",
        "orders",
        "s",
        "shop",
        json!({"no": "id"}),
    );
    let result = broker.route(&event).await;
    assert_eq!((result.failed, result.dead_lettered), (1, 1));
    let letter = &dead.events()[0];
    assert_eq!(letter.metadata["dlqattempts"], "3");
    assert!(
        letter.metadata["dlqreason"].contains("schema validation failed"),
        "{:?}",
        letter.metadata
    );
    assert_eq!(bus.metrics().snapshot().validation_errors, 3);
}

/// A memory provider, a bus over it, and a broker with `max_hops`
/// attached to the bus.
fn bus_with_broker(max_hops: u32) -> (Arc<dyn EventProvider>, EventBus, Broker) {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let broker = Broker::with_config(BrokerConfig {
        max_hops,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker.attach(&bus);
    (provider, bus, broker)
}

#[tokio::test]
async fn a_routing_loop_through_the_bus_stops_at_max_hops() {
    let (provider, bus, broker) = bus_with_broker(3);
    // Matches its own output.
    broker
        .add_trigger(Trigger::new(
            "echo",
            TriggerFilter::by_subject("events.>"),
            Arc::new(TopicSink::through_bus("echo", bus.clone(), "events.loop.echo").unwrap()),
        ))
        .unwrap();
    bus.publish("start", "here", "s", "x", json!({}))
        .await
        .unwrap();
    // Wait for the chain to settle (each hop enqueues the next).
    for _ in 0..100 {
        broker.wait_idle().await;
        if broker.metrics().hop_limit == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let m = broker.metrics();
    assert_eq!(m.hop_limit, 1);
    // The original plus three forwards; the third is not routed again.
    assert_eq!(provider.info().await.unwrap().messages, 4);
    let hops: Vec<_> = provider
        .history(Some("events.loop.>"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.metadata["routinghops"].clone())
        .collect();
    assert_eq!(hops, ["3", "2", "1"]);
}

/// Topic sinks forwarding through the bus the broker is attached to, while
/// the queue is full: a routing worker's forward must not wait for room in
/// the queue that only the (busy) workers can drain, or every worker and
/// every publisher waits forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_from_busy_workers_into_a_full_queue_do_not_deadlock() {
    let bus = EventBus::new(MemoryProvider::default());
    let broker = Broker::with_config(BrokerConfig {
        workers: 2,
        queue_capacity: 2,
        dispatch_linger: Duration::ZERO,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker.attach(&bus);
    // Let the publisher fill the queue before the workers forward.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let forward =
        Arc::new(TopicSink::through_bus("audit", bus.clone(), "events.audit.all").unwrap());
    let gated_forward = Arc::new(InProcessSink::new("gated forward", {
        let gate = gate.clone();
        move |e| {
            let (gate, forward) = (gate.clone(), forward.clone());
            async move {
                gate.acquire().await.unwrap().forget();
                forward.deliver(&e).await
            }
        }
    }));
    let audited = Arc::new(CollectorSink::new("audited"));
    broker
        .add_trigger(
            Trigger::new(
                "forward",
                TriggerFilter::by_subject("events.orders.>"),
                gated_forward,
            )
            .with_delivery(DeliverySpec::new().with_timeout(None)),
        )
        .unwrap();
    broker
        .add_trigger(Trigger::new(
            "audit",
            TriggerFilter::by_subject("events.audit.>"),
            audited.clone(),
        ))
        .unwrap();

    let publishes = 6;
    let publisher = tokio::spawn({
        let bus = bus.clone();
        async move {
            for i in 0..publishes {
                bus.publish(
                    "orders",
                    "created",
                    &format!("order {i}"),
                    "shop",
                    json!({"id": i}),
                )
                .await
                .unwrap();
            }
        }
    });
    // Two events routing (blocked at the gate), two queued: the queue is full.
    for _ in 0..200 {
        if broker.metrics().queue_depth == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(broker.metrics().queue_depth, 2);
    gate.add_permits(publishes);

    tokio::time::timeout(Duration::from_secs(10), async {
        publisher.await.unwrap();
        broker.wait_idle().await;
    })
    .await
    .expect("publishers and workers deadlocked on the full queue");
    assert_eq!(audited.len(), publishes);
    let m = broker.metrics();
    assert_eq!(m.failed, 0);
    assert!(m.deferred > 0, "{m:?}");
}

/// A dead letter forwarded by a `SinkDlqHandler` into the stream its event
/// came from carries a new id (the original in metadata): with the
/// original's id the provider would deduplicate it away while `handle`
/// reported success, and the event would be lost.
#[tokio::test]
async fn a_sink_dlq_handler_forwards_under_a_new_id_so_dedup_keeps_it() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let dlq = event_routing::SinkDlqHandler::new(
        Arc::new(TopicSink::unchanged_through_bus("dlq", bus.clone())),
        "events.dlq",
    )
    .unwrap();
    let event = Event::new(
        "events.orders.created",
        "orders",
        "s",
        "shop",
        json!({"id": 1}),
    );
    bus.publish_event(&event).await.unwrap();
    use event_core::DlqHandler;
    dlq.handle(event_core::DeadLetterEvent::new(
        event.clone(),
        "handler failed",
    ))
    .await
    .unwrap();
    let letters = provider.history(Some("events.dlq.>"), 10).await.unwrap();
    assert_eq!(letters.len(), 1, "the dead letter was deduplicated away");
    assert_ne!(letters[0].id, event.id);
    assert_eq!(letters[0].metadata["originalid"], event.id);
    assert_eq!(letters[0].subject, "events.dlq.orders.created");
}

/// An `unchanged` topic sink through the bus its broker is attached to, on
/// a trigger that matches its own output: the first forward stores the
/// event and is routed; the next is a repeat the provider stores once and
/// the bus does not route again, so the loop ends there. (With a provider
/// that does not report duplicates, the hop count ends it: see
/// `a_routing_loop_through_the_bus_stops_at_max_hops`.)
#[tokio::test]
async fn an_unchanged_forward_into_its_own_broker_ends_at_the_repeat() {
    let (provider, bus, broker) = bus_with_broker(3);
    broker
        .add_trigger(Trigger::new(
            "ingest",
            TriggerFilter::by_subject("events.orders.>"),
            Arc::new(TopicSink::unchanged_through_bus("ingest", bus.clone())),
        ))
        .unwrap();
    let event = Event::new("events.orders.created", "orders", "s", "webhook", json!({}));
    broker.route(&event).await;
    tokio::time::timeout(Duration::from_secs(5), broker.wait_idle())
        .await
        .expect("the unchanged forward loops without end");
    let m = broker.metrics();
    // The direct routing and the first forward's; the repeat is not routed.
    assert_eq!((m.routed, m.hop_limit), (2, 0), "{m:?}");
    let stored = provider.history(None, 10).await.unwrap();
    assert_eq!(stored.len(), 1, "stored once, under its own id");
    assert_eq!(stored[0].id, event.id);
}

/// Queued events forwarding through the bus of a broker shutting down: each
/// forward is stored, then the closed broker refuses to route it. The
/// publish did happen, so the delivery is done; taking the refusal for a
/// failed publish retried it (another copy stored per attempt) and
/// dead-lettered an event that was in the stream.
#[tokio::test(start_paused = true)]
async fn a_forward_stored_but_not_routed_by_a_shut_down_broker_is_delivered_once() {
    let (provider, bus, broker) = bus_with_broker(8);
    let dead = forward_orders_through(&broker, &bus);
    for i in 0..3 {
        bus.publish("orders", "created", "s", "shop", json!({"id": i}))
            .await
            .unwrap();
    }
    // The three are queued; the forwards happen while shutting down.
    broker.shutdown().await;
    let forwards = provider.history(Some("events.audit.>"), 100).await.unwrap();
    assert_eq!(forwards.len(), 3, "one stored forward per event");
    assert!(dead.is_empty(), "dead-lettered: {:?}", dead.events());
    let m = broker.metrics();
    assert_eq!((m.delivered, m.failed, m.retries), (3, 0, 0), "{m:?}");
}

/// The same with a full queue under policy `Reject`: a worker's forward is
/// stored, then refused routing; retrying it stored it again.
#[tokio::test(start_paused = true)]
async fn a_forward_stored_but_rejected_by_a_full_queue_is_not_published_again() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let broker = Broker::with_config(BrokerConfig {
        workers: 1,
        queue_capacity: 1,
        full_policy: event_routing::QueueFullPolicy::Reject,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker.attach(&bus);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let forward =
        Arc::new(TopicSink::through_bus("audit", bus.clone(), "events.audit.all").unwrap());
    let gated_forward = Arc::new(InProcessSink::new("gated forward", {
        let gate = gate.clone();
        move |e| {
            let (gate, forward) = (gate.clone(), forward.clone());
            async move {
                gate.acquire().await.unwrap().forget();
                forward.deliver(&e).await
            }
        }
    }));
    broker
        .add_trigger(
            Trigger::new(
                "forward",
                TriggerFilter::by_subject("events.orders.>"),
                gated_forward,
            )
            .with_delivery(DeliverySpec::new().with_retries(2).with_backoff(
                event_routing::BackoffPolicy::Linear,
                Duration::from_millis(1),
            )),
        )
        .unwrap();
    bus.publish("orders", "created", "one", "shop", json!({"id": 1}))
        .await
        .unwrap();
    // The worker takes the first; the second fills the queue.
    for _ in 0..100 {
        if broker.metrics().queue_depth == 0 && broker.metrics().in_flight == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bus.publish("orders", "created", "two", "shop", json!({"id": 2}))
        .await
        .unwrap();
    assert_eq!(broker.metrics().queue_depth, 1);
    // The first forward finds the queue full (the second event waits there).
    gate.add_permits(1);
    for _ in 0..100 {
        if broker.metrics().rejected > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gate.add_permits(100);
    broker.wait_idle().await;
    let forwards = provider.history(Some("events.audit.>"), 100).await.unwrap();
    let originals: Vec<_> = forwards
        .iter()
        .map(|e| e.metadata["originalid"].clone())
        .collect();
    let mut unique = originals.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(originals.len(), unique.len(), "a forward stored twice");
    let m = broker.metrics();
    assert!(m.rejected > 0, "{m:?}");
    assert_eq!((m.failed, m.retries), (0, 0), "{m:?}");
}

/// A third party's router that refuses every event the bus hands it (after
/// the provider stored it), as one with a full queue under a reject policy
/// would.
struct RefusingRouter {
    refused: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl event_core::EventRouter for RefusingRouter {
    async fn route_published(&self, _event: Arc<Event>, _sequence: u64) -> Result<()> {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(Error::Closed("the router's queue is full".into()))
    }
}

/// A forward through a bus whose router (not a `Broker`) refuses it after
/// the provider stored it: the delivery is done, once. Taking the refusal
/// for a failed publish retried it, storing another copy (a new id) per
/// attempt, and then dead-lettered an event that was in the stream.
#[tokio::test(start_paused = true)]
async fn a_forward_stored_but_refused_by_any_router_is_delivered_once() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let router = Arc::new(RefusingRouter {
        refused: std::sync::atomic::AtomicUsize::new(0),
    });
    bus.set_router(router.clone());
    // The broker is fed directly, not from `bus`.
    let broker = Broker::new();
    let dead = forward_orders_through(&broker, &bus);
    let mut results = Vec::new();
    for i in 0..3 {
        let event = Event::new(
            "events.orders.created",
            "orders",
            "s",
            "shop",
            json!({"id": i}),
        );
        let routed = broker.route(&event).await;
        results.push((routed.delivered, routed.failed));
    }
    let forwards = provider.history(Some("events.audit.>"), 100).await.unwrap();
    assert_eq!(forwards.len(), 3, "one stored forward per event");
    assert!(dead.is_empty(), "dead-lettered: {:?}", dead.events());
    assert_eq!(results, [(1, 0); 3], "delivered, not failed");
    assert_eq!(
        router.refused.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "the router was offered each forward once"
    );
    let m = broker.metrics();
    assert_eq!((m.delivered, m.failed, m.retries), (3, 0, 0), "{m:?}");
    let bus_metrics = bus.metrics().snapshot();
    assert_eq!(
        (
            bus_metrics.publish_total,
            bus_metrics.publish_errors,
            bus_metrics.router_errors
        ),
        (3, 0, 3),
        "{bus_metrics:?}"
    );
}

/// The same for a sink delivering an event as it is (same id) through such
/// a bus: stored once, and the delivery succeeds.
#[tokio::test]
async fn an_unchanged_event_stored_but_refused_by_any_router_is_delivered() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    bus.set_router(Arc::new(RefusingRouter {
        refused: std::sync::atomic::AtomicUsize::new(0),
    }));
    let sink = TopicSink::unchanged_through_bus("ingest", bus.clone());
    let event = Event::new("events.orders.created", "orders", "s", "shop", json!({}));
    sink.deliver(&event).await.unwrap();
    let stored = provider
        .history(Some("events.orders.>"), 100)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, event.id);
}

/// Through a bus too, an unchanged sink dedups by source and id: the same
/// id from two sources is two events, each source's repeat is stored once.
#[tokio::test]
async fn an_unchanged_sink_through_a_bus_dedups_by_source_and_id() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let sink = TopicSink::unchanged_through_bus("ingest", bus.clone());
    let mut a = Event::new("events.orders.created", "orders", "s", "a", json!({}));
    a.id = "1".into();
    let mut b = a.clone();
    b.source = "b".into();
    for event in [&a, &b, &a, &b] {
        sink.deliver(event).await.unwrap();
    }
    let stored = provider.history(None, 10).await.unwrap();
    let sources: Vec<&str> = stored.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["b", "a"]);
}

/// A sender retrying the same event into a bus whose broker is attached:
/// stored once, and routed to the triggers once, not once per retry.
#[tokio::test]
async fn a_retried_ingest_is_routed_to_the_triggers_once() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let broker = Broker::new();
    let seen = Arc::new(CollectorSink::new("seen"));
    broker
        .add_trigger(Trigger::new("all", TriggerFilter::all(), seen.clone()))
        .unwrap();
    broker.attach(&bus);
    let ingest = TopicSink::unchanged_through_bus("ingest", bus.clone());
    let event = Event::new("events.orders.created", "orders", "s", "shop", json!({}));
    for _ in 0..3 {
        ingest.deliver(&event).await.unwrap();
    }
    broker.shutdown().await;
    assert_eq!(provider.info().await.unwrap().messages, 1);
    assert_eq!(seen.len(), 1, "each retry was routed again");
}

/// Adds to `broker` a trigger forwarding `events.orders.>` through `bus` to
/// `events.audit.all` (two retries, 1 ms apart); returns its dead-letter
/// sink.
fn forward_orders_through(broker: &Broker, bus: &EventBus) -> Arc<CollectorSink> {
    let dead = Arc::new(CollectorSink::new("dead"));
    let forward = TopicSink::through_bus("audit", bus.clone(), "events.audit.all").unwrap();
    broker
        .add_trigger(
            Trigger::new(
                "forward",
                TriggerFilter::by_subject("events.orders.>"),
                Arc::new(forward),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_retries(2)
                    .with_backoff(
                        event_routing::BackoffPolicy::Linear,
                        Duration::from_millis(1),
                    )
                    .with_dead_letter_sink(dead.clone()),
            ),
        )
        .unwrap();
    dead
}

/// A `SinkDlqHandler` whose sink writes into the stream the bus reads (a
/// topic sink under `events.dlq`), with a subscriber on `events.>`: the
/// forwarded dead letter of an event the bus cannot read (an envelope it
/// cannot decrypt, or plaintext under `PlaintextPolicy::Refuse`) is
/// delivered to that subscriber, unreadable for the same reason (an
/// envelope stays bound to the original id, the forward has a new one).
/// It is in the DLQ already: terminated for the subscriber, not
/// dead-lettered again. It was forwarded once more on every delivery, each
/// forward delivered in turn, without end (20 letters in 20 reads, under
/// `events.dlq.dlq.dlq...`).
#[tokio::test]
async fn an_unreadable_dead_letter_forwarded_by_a_sink_dlq_is_not_dead_lettered_again() {
    use event_bus::PlaintextPolicy;
    use event_core::DlqHandler as _;
    for refuse_plaintext in [false, true] {
        let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
        let bus = EventBus::from_arc(provider.clone());
        bus.set_encryptor(Arc::new(TestEncryptor));
        if refuse_plaintext {
            bus.set_plaintext_policy(PlaintextPolicy::Refuse);
        }
        let dlq = Arc::new(
            event_routing::SinkDlqHandler::new(
                Arc::new(TopicSink::same_subject("dlq", provider.clone())),
                "events.dlq",
            )
            .unwrap(),
        );
        bus.set_dlq_handler(dlq.clone());
        let mut sub = bus.subscribe("events.>").await.unwrap();
        let mut event = Event::new(
            "events.orders.created",
            "orders",
            "s",
            "shop",
            json!({"x": 1}),
        );
        if !refuse_plaintext {
            // an envelope this bus cannot open (bound to another id)
            event.payload = TestEncryptor
                .encrypt("another-id", &json!({"x": 1}))
                .unwrap();
        }
        provider.publish(&event).await.unwrap();
        let mut refused = 0;
        for _ in 0..10 {
            match tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
                Err(_) => break,
                Ok(Ok(received)) => panic!("handed over: {received:?}"),
                Ok(Err(err)) => {
                    assert!(matches!(err, Error::Decryption(_)), "{err}");
                    refused += 1;
                }
            }
        }
        let letters = provider.history(Some("events.dlq.>"), 100).await.unwrap();
        let subjects: Vec<_> = letters.iter().map(|l| l.subject.as_str()).collect();
        assert_eq!(
            subjects,
            ["events.dlq.orders.created"],
            "refuse plaintext: {refuse_plaintext}"
        );
        assert_eq!(letters[0].metadata["originalid"], event.id);
        assert_eq!(dlq.count().await.unwrap(), 1);
        // the event, then its forwarded dead letter, each refused once
        assert_eq!(refused, 2, "refuse plaintext: {refuse_plaintext}");
        let m = bus.metrics().snapshot();
        assert_eq!((m.dlq_total, m.dlq_dropped), (1, 1), "{m:?}");
    }
}

/// What the `SinkDlqHandler` docs say of encryption: the dead letter of a
/// consumer of an encrypting bus holds the decrypted event; a topic sink
/// publishing to the provider itself stores it in clear, one through the
/// bus's pipeline stores it encrypted under the forward's id.
#[tokio::test]
async fn a_sink_dlq_handler_stores_encrypted_only_through_the_bus() {
    use event_core::{DeadLetterEvent, DlqHandler as _};
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    bus.set_encryptor(Arc::new(TestEncryptor));
    // the event as a consumer of the bus saw it: decrypted
    let event = Event::new(
        "events.orders.created",
        "orders",
        "s",
        "shop",
        json!({"card": "4111"}),
    );
    let raw = event_routing::SinkDlqHandler::new(
        Arc::new(TopicSink::same_subject("dlq", provider.clone())),
        "events.rawdlq",
    )
    .unwrap();
    let piped = event_routing::SinkDlqHandler::new(
        Arc::new(TopicSink::unchanged_through_bus("dlq", bus.clone())),
        "events.dlq",
    )
    .unwrap();
    for dlq in [&raw, &piped] {
        dlq.handle(DeadLetterEvent::new(event.clone(), "failed"))
            .await
            .unwrap();
    }
    let stored = |filter: &'static str| {
        let provider = provider.clone();
        async move { provider.history(Some(filter), 1).await.unwrap().remove(0) }
    };
    assert_eq!(stored("events.rawdlq.>").await.payload, event.payload);
    let encrypted = stored("events.dlq.>").await;
    assert!(TestEncryptor.is_encrypted(&encrypted.payload));
    assert_eq!(
        TestEncryptor
            .decrypt(&encrypted.id, &encrypted.payload)
            .unwrap(),
        event.payload
    );
}
