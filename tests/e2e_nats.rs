//! End-to-end scenarios against a real `nats-server` (JetStream), assembled
//! the way a production service uses the library through the umbrella
//! crate: an [`EventBus`] over a [`NatsProvider`] with AES-256-GCM
//! encryption, a schema registry, a provider-backed DLQ, the consumer
//! runner, file-persisted subscriptions and a routing broker.
//!
//! Each test starts its own server (random port, temp store dir; see
//! `crates/event-nats/tests/common`). Without a `nats-server` binary the
//! tests print a `SKIPPED` line; with `A3S_REQUIRE_NATS=1` they fail.
#![cfg(all(
    feature = "nats",
    feature = "crypto",
    feature = "schema",
    feature = "routing-http",
    feature = "cloudevents-http"
))]
#![allow(clippy::unwrap_used)]

#[path = "../crates/event-nats/tests/common/mod.rs"]
mod common;

use a3s_event::consumer::{ConsumerConfig, ConsumerHandle};
use a3s_event::crypto::{Aes256GcmEncryptor, EncryptedPayload};
use a3s_event::dlq::ProviderDlqHandler;
use a3s_event::provider::nats::{NatsConfig, NatsProvider};
use a3s_event::schema::{EventSchema, MemorySchemaRegistry, SchemaRegistry};
use a3s_event::{
    DeadLetterEvent, DlqHandler, Error, Event, EventBus, EventEncryptor, EventProvider,
    ReceivedEvent, SubscribeOptions, SubscriptionFilter,
};
use common::NatsServer;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ORDER_CREATED: &str = "order.created";

/// How a test order is meant to fare in the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Handled on the first delivery.
    Ok,
    /// Fails on its first delivery, handled on the second.
    FailsOnce,
    /// Fails on every delivery: dead-lettered after `max_deliver`.
    FailsAlways,
}

impl Fate {
    fn of(n: u64) -> Self {
        match n % 5 {
            0 => Self::FailsAlways,
            1 => Self::FailsOnce,
            _ => Self::Ok,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::FailsOnce => "fails-once",
            Self::FailsAlways => "fails-always",
        }
    }
}

fn key(byte: u8) -> [u8; 32] {
    [byte; 32]
}

/// The schema registry of the order service: `order.created` v1.
fn registry() -> Arc<MemorySchemaRegistry> {
    let registry = MemorySchemaRegistry::new();
    registry
        .register(EventSchema::new(ORDER_CREATED, 1).with_json_schema(json!({
            "type": "object",
            "properties": {
                "order": {"type": "integer", "minimum": 0},
                "fate": {"type": "string"},
                "card": {"type": "string"}
            },
            "required": ["order", "fate"]
        })))
        .unwrap();
    Arc::new(registry)
}

/// The production assembly: NATS provider, bus with schema registry and
/// encryptor, DLQ stored (encrypted) on the same stream.
struct Service {
    provider: Arc<dyn EventProvider>,
    nats: NatsProvider,
    bus: EventBus,
    encryptor: Arc<Aes256GcmEncryptor>,
    dlq: Arc<ProviderDlqHandler>,
}

impl Service {
    async fn connect(config: NatsConfig, encryptor: Arc<Aes256GcmEncryptor>) -> Self {
        let nats = NatsProvider::connect(config).await.unwrap();
        let provider: Arc<dyn EventProvider> = Arc::new(nats.clone());
        let bus = EventBus::from_arc(provider.clone()).with_schema_registry(registry());
        bus.set_encryptor(encryptor.clone());
        let dlq =
            Arc::new(ProviderDlqHandler::new(provider.clone()).with_encryptor(encryptor.clone()));
        bus.set_dlq_handler(dlq.clone());
        Self {
            provider,
            nats,
            bus,
            encryptor,
            dlq,
        }
    }

    fn orders_subject(&self) -> String {
        self.provider.category_subject("orders")
    }

    /// Registers the durable billing subscriber ([`billing_options`]).
    async fn register_billing(&self) {
        self.bus
            .update_subscription_with_options(
                billing_filter(self.orders_subject()),
                billing_options(),
            )
            .await
            .unwrap();
    }

    /// Runs the billing handler over the billing subscriber.
    async fn consume_billing(&self) -> (Billing, ConsumerHandle) {
        let billing = Billing::default();
        let consumer = self
            .bus
            .consume("billing", billing.handler(), ConsumerConfig::default())
            .await
            .unwrap();
        (billing, consumer)
    }

    /// A typed order event, built the way a publisher that retries does
    /// (the same event, so the same dedup id, on every attempt).
    fn order(&self, n: u64) -> Event {
        Event::typed(
            self.provider.build_subject("orders", "created"),
            "orders",
            ORDER_CREATED,
            1,
            format!("order {n}"),
            "shop",
            order_payload(n),
        )
    }
}

fn order_payload(n: u64) -> Value {
    json!({"order": n, "fate": Fate::of(n).as_str(), "card": format!("4111-{n:04}")})
}

/// The consumer options of the billing subscriber: three deliveries, short
/// backoff between them.
fn billing_options() -> SubscribeOptions {
    SubscribeOptions {
        max_deliver: Some(3),
        backoff: vec![Duration::from_millis(200), Duration::from_millis(400)],
        ..SubscribeOptions::default()
    }
}

fn billing_filter(subject: String) -> SubscriptionFilter {
    SubscriptionFilter {
        subscriber_id: "billing".to_string(),
        subjects: vec![subject],
        durable: true,
    }
}

/// One handler invocation: (order number, event id, delivery number).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    order: u64,
    id: String,
    delivery: u64,
    outcome: Result<(), String>,
}

/// The billing handler: records every call, fails per the order's fate.
#[derive(Clone, Default)]
struct Billing {
    calls: Arc<Mutex<Vec<Call>>>,
    /// The card problem is fixed: every order succeeds from now on.
    fixed: Arc<AtomicBool>,
}

impl Billing {
    fn handler(
        &self,
    ) -> impl Fn(ReceivedEvent) -> std::future::Ready<Result<(), String>> + Send + Sync + 'static
    {
        let calls = self.calls.clone();
        let fixed = self.fixed.clone();
        move |received: ReceivedEvent| {
            let order = received.event.payload["order"].as_u64().unwrap_or(u64::MAX);
            let outcome = match Fate::of(order) {
                Fate::Ok => Ok(()),
                _ if fixed.load(Ordering::SeqCst) => Ok(()),
                Fate::FailsOnce if received.num_delivered > 1 => Ok(()),
                Fate::FailsOnce => Err(format!("order {order}: payment gateway timeout")),
                Fate::FailsAlways => Err(format!("order {order}: card declined")),
            };
            calls.lock().unwrap().push(Call {
                order,
                id: received.event.id.clone(),
                delivery: received.num_delivered,
                outcome: outcome.clone(),
            });
            std::future::ready(outcome)
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Orders handled successfully, with how many times.
    fn handled(&self) -> BTreeMap<u64, usize> {
        let mut handled = BTreeMap::new();
        for call in self.calls() {
            if call.outcome.is_ok() {
                *handled.entry(call.order).or_insert(0) += 1;
            }
        }
        handled
    }
}

/// Polls `done` every 20 ms until it holds or `limit` passes; whether it held.
async fn eventually<F, Fut>(limit: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if done().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn dead_letters(dlq: &ProviderDlqHandler) -> Vec<DeadLetterEvent> {
    dlq.list(1_000).await.unwrap()
}

/// The key id named by a stored (encrypted) payload.
fn key_id(payload: &Value) -> String {
    EncryptedPayload::from_value(payload)
        .unwrap()
        .key_id
        .clone()
}

// ---------------------------------------------------------------------------
// Scenario 1: the order service
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_service_handles_retries_and_dead_letters_each_order_exactly_once() {
    let Some(server) = NatsServer::start("order_service") else {
        return;
    };
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &key(1)));
    let svc = Service::connect(common::config(&server, "e2e"), encryptor).await;
    let bus = &svc.bus;
    svc.register_billing().await;

    // A payload the schema refuses is refused before anything is stored.
    let err = bus
        .publish_typed(
            "orders",
            "created",
            ORDER_CREATED,
            1,
            "bad order",
            "shop",
            json!({"order": "seven", "fate": "ok"}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::SchemaValidation { path, .. } if path == "/order"),
        "{err}"
    );

    const N: u64 = 30;
    let started = a3s_event::types::now_millis();
    let mut published = BTreeMap::new();
    for n in 0..N {
        let event = bus
            .publish_typed(
                "orders",
                "created",
                ORDER_CREATED,
                1,
                &format!("order {n}"),
                "shop",
                order_payload(n),
            )
            .await
            .unwrap();
        published.insert(n, event);
    }
    assert_eq!(svc.provider.info().await.unwrap().messages, N);

    let (billing, consumer) = svc.consume_billing().await;

    let always: BTreeSet<u64> = (0..N)
        .filter(|n| Fate::of(*n) == Fate::FailsAlways)
        .collect();
    let once: BTreeSet<u64> = (0..N).filter(|n| Fate::of(*n) == Fate::FailsOnce).collect();
    let ok: BTreeSet<u64> = (0..N).filter(|n| Fate::of(*n) == Fate::Ok).collect();
    let settled = eventually(Duration::from_secs(15), || async {
        billing.handled().len() == ok.len() + once.len()
            && svc.dlq.count().await.unwrap() == always.len()
    })
    .await;
    // a little longer: anything delivered again would show up now
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = consumer.shutdown(Duration::from_secs(5)).await;
    assert!(
        settled,
        "not settled: handled {:?}, report {report:?}",
        billing.handled()
    );

    // Every order handled exactly once, or dead-lettered exactly once.
    let handled = billing.handled();
    let expected: BTreeMap<u64, usize> = ok.iter().chain(&once).map(|n| (*n, 1)).collect();
    assert_eq!(handled, expected, "handled orders (order -> times)");
    let calls = billing.calls();
    for n in 0..N {
        let deliveries: Vec<u64> = calls
            .iter()
            .filter(|c| c.order == n)
            .map(|c| c.delivery)
            .collect();
        let want: &[u64] = match Fate::of(n) {
            Fate::Ok => &[1],
            Fate::FailsOnce => &[1, 2],
            Fate::FailsAlways => &[1, 2, 3],
        };
        assert_eq!(deliveries, want, "deliveries of order {n}");
        for call in calls.iter().filter(|c| c.order == n) {
            assert_eq!(call.id, published[&n].id, "order {n} came with another id");
        }
    }

    // The DLQ holds each always-failing order once, in plaintext, with its
    // original subject, attempts, first-failure time and reason.
    let letters = dead_letters(&svc.dlq).await;
    let mut lettered: Vec<u64> = letters
        .iter()
        .map(|l| l.event.payload["order"].as_u64().unwrap())
        .collect();
    lettered.sort_unstable();
    assert_eq!(lettered, always.iter().copied().collect::<Vec<_>>());
    for letter in &letters {
        let n = letter.event.payload["order"].as_u64().unwrap();
        let original = &published[&n];
        assert_eq!(letter.event.id, original.id);
        assert_eq!(letter.event.payload, original.payload, "plaintext payload");
        assert_eq!(letter.original_subject, original.subject);
        assert_eq!(letter.delivery_attempts, 3);
        assert_eq!(letter.reason, format!("order {n}: card declined"));
        let first = letter.first_failure_at.expect("first failure time");
        assert!(
            first >= started,
            "first failure {first} before the run {started}"
        );
        // two naks (200 ms, 400 ms) lie between the first failure and the last
        assert!(
            letter.dead_lettered_at >= first + 550,
            "dead-lettered {} ms after the first failure",
            letter.dead_lettered_at - first
        );
    }

    // On the stream, orders and dead letters are ciphertext; a dead letter
    // decrypts under its own id and names the original in metadata.
    let stored_orders = svc
        .provider
        .history(Some(&svc.orders_subject()), 100)
        .await
        .unwrap();
    assert_eq!(stored_orders.len() as u64, N);
    for stored in &stored_orders {
        assert!(EncryptedPayload::is_encrypted(&stored.payload));
        assert!(!stored.payload.to_string().contains("4111-"));
    }
    let stored_letters = svc
        .provider
        .history(Some(&svc.dlq.filter_subject()), 100)
        .await
        .unwrap();
    assert_eq!(stored_letters.len(), always.len());
    for stored in &stored_letters {
        assert!(EncryptedPayload::is_encrypted(&stored.payload));
        assert!(!stored.payload.to_string().contains("4111-"));
        let original_id = &stored.metadata["a3s.original_id"];
        assert!(published.values().any(|e| &e.id == original_id));
        let plain = svc.encryptor.decrypt(&stored.id, &stored.payload).unwrap();
        let letter: DeadLetterEvent = serde_json::from_value(plain).unwrap();
        assert_eq!(&letter.event.id, original_id);
    }

    // What the runner and the metrics say.
    let (ok, once, always) = (ok.len() as u64, once.len() as u64, always.len() as u64);
    assert_eq!(
        (
            report.acked,
            report.retried,
            report.dead_lettered,
            report.terminated,
            report.dlq_failed,
            report.aborted,
            report.settle_errors
        ),
        (ok + once, once + 2 * always, always, 0, 0, 0, 0),
        "{report:?}"
    );
    let m = bus.metrics().snapshot();
    assert_eq!(m.publish_total, N);
    assert_eq!(m.publish_errors, 1);
    assert_eq!(m.validation_errors, 1);
    assert_eq!(m.encrypt_total, N);
    assert_eq!(m.decrypt_total, ok + 2 * once + 3 * always);
    assert_eq!(m.decrypt_errors, 0);
    assert_eq!(m.handled_total, ok + once);
    assert_eq!(m.handler_errors, once + 3 * always);
    assert_eq!(m.redeliveries, once + 2 * always);
    assert_eq!((m.dlq_total, m.dlq_errors), (always, 0));
    assert_eq!(m.subscribe_total, 1);
    let prometheus = m.to_prometheus();
    assert!(
        prometheus.contains(&format!("\na3s_event_dlq_total {always}\n")),
        "{prometheus}"
    );
}

// ---------------------------------------------------------------------------
// Scenario 2: key rotation while the consumer runs
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_mid_stream_consumer_reads_events_of_both_keys() {
    let Some(server) = NatsServer::start("key_rotation") else {
        return;
    };
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &key(1)));
    let svc = Service::connect(common::config(&server, "e2e"), encryptor.clone()).await;
    let bus = &svc.bus;
    svc.register_billing().await;
    let (billing, consumer) = svc.consume_billing().await;

    const N: u64 = 20;
    const ROTATE_AT: u64 = 10;
    let mut published = BTreeMap::new();
    for n in 0..ROTATE_AT {
        let event = svc.order(n);
        bus.publish_event(&event).await.unwrap();
        published.insert(n, event);
    }
    // rotate while k1 events are still being handled and retried
    assert!(
        eventually(Duration::from_secs(5), || async {
            billing
                .calls()
                .iter()
                .any(|c| c.delivery == 1 && c.outcome.is_err())
        })
        .await
    );
    encryptor.add_key("k2", &key(2)).unwrap();
    encryptor.rotate_to("k2").unwrap();
    for n in ROTATE_AT..N {
        let event = svc.order(n);
        bus.publish_event(&event).await.unwrap();
        published.insert(n, event);
    }

    let always: BTreeSet<u64> = (0..N)
        .filter(|n| Fate::of(*n) == Fate::FailsAlways)
        .collect();
    let expected: BTreeMap<u64, usize> = (0..N)
        .filter(|n| !always.contains(n))
        .map(|n| (n, 1))
        .collect();
    let settled = eventually(Duration::from_secs(15), || async {
        billing.handled() == expected && svc.dlq.count().await.unwrap() == always.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = consumer.shutdown(Duration::from_secs(5)).await;
    assert!(
        settled,
        "handled {:?}, report {report:?}",
        billing.handled()
    );
    assert_eq!(billing.handled(), expected);

    // the handler saw plaintext of both keys
    for call in billing.calls() {
        assert_eq!(call.id, published[&call.order].id);
    }
    // stored under the key active when each was published
    let stored = svc
        .provider
        .history(Some(&svc.orders_subject()), 100)
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, N);
    for event in &stored {
        let n = published
            .iter()
            .find(|(_, p)| p.id == event.id)
            .map(|(n, _)| *n)
            .unwrap();
        let want = if n < ROTATE_AT { "k1" } else { "k2" };
        assert_eq!(key_id(&event.payload), want, "order {n}");
    }
    // dead letters: plaintext through the DLQ, stored under the active key
    let letters = dead_letters(&svc.dlq).await;
    let mut lettered: Vec<u64> = letters
        .iter()
        .map(|l| l.event.payload["order"].as_u64().unwrap())
        .collect();
    lettered.sort_unstable();
    assert_eq!(lettered, always.iter().copied().collect::<Vec<_>>());
    for letter in &letters {
        let n = letter.event.payload["order"].as_u64().unwrap();
        assert_eq!(letter.event.payload, published[&n].payload);
    }
    // and every stored order still lists decrypted, whichever key it used
    let listed = bus.list_events(Some("orders"), 100).await.unwrap();
    assert_eq!(listed.len() as u64, N);
    for event in &listed {
        let n = event.payload["order"].as_u64().unwrap();
        assert_eq!(event.payload, published[&n].payload);
    }
    let m = bus.metrics().snapshot();
    assert_eq!((m.decrypt_errors, m.dlq_errors), (0, 0));
    assert_eq!(report.settle_errors, 0, "{report:?}");
}

// ---------------------------------------------------------------------------
// Scenario 3: the server is SIGKILLed and restarted mid-stream
// ---------------------------------------------------------------------------

/// Publishes `event` through the bus, retrying transient errors (as the docs
/// say a publisher may: the same event id is deduplicated). Returns the
/// number of retries; panics on a non-transient error.
async fn publish_with_retries(bus: &EventBus, event: &Event, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let mut retries = 0;
    loop {
        match bus.publish_event(event).await {
            Ok(_) => return retries,
            Err(err) if err.is_transient() && Instant::now() < deadline => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!(
                "publishing {} failed with a non-transient error (transient: {}): {err:?}",
                event.summary,
                err.is_transient()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigkill_and_restart_mid_stream_loses_nothing_and_the_runner_keeps_running() {
    let Some(server) = NatsServer::start("server_restart") else {
        return;
    };
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "e2e")
    };
    let server = Arc::new(Mutex::new(server));
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &key(1)));
    let svc = Service::connect(config, encryptor).await;
    let bus = svc.bus.clone();
    bus.update_subscription_with_options(
        billing_filter(svc.orders_subject()),
        SubscribeOptions {
            max_deliver: Some(5),
            backoff: vec![Duration::from_millis(500)],
            ..SubscribeOptions::default()
        },
    )
    .await
    .unwrap();

    // every order succeeds: this scenario is about the outage
    let seen: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |received: ReceivedEvent| {
            let n = received.event.payload["order"].as_u64().unwrap_or(u64::MAX);
            seen.lock().unwrap().push((n, received.num_delivered));
            std::future::ready(Ok::<(), String>(()))
        }
    };
    let consumer = bus
        .consume("billing", handler, ConsumerConfig::default())
        .await
        .unwrap();

    const M: u64 = 150;
    const KILL_AT: u64 = 50;
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
    let publisher = {
        let bus = bus.clone();
        let events: Vec<Event> = (0..M).map(|n| svc.order(n)).collect();
        tokio::spawn(async move {
            let mut retries = 0;
            let mut killed_tx = Some(killed_tx);
            for (n, event) in events.iter().enumerate() {
                if n as u64 == KILL_AT
                    && let Some(tx) = killed_tx.take()
                {
                    let _ = tx.send(());
                }
                retries += publish_with_retries(&bus, event, Duration::from_secs(15)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            retries
        })
    };
    killed_rx.await.unwrap();
    {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = server.lock().unwrap();
            s.kill();
            std::thread::sleep(Duration::from_millis(700));
            s.restart();
        })
        .await
        .unwrap();
    }
    let retries = tokio::time::timeout(Duration::from_secs(20), publisher)
        .await
        .expect("publisher finished")
        .unwrap();

    let all_seen = eventually(Duration::from_secs(12), || async {
        let seen = seen.lock().unwrap();
        let orders: BTreeSet<u64> = seen.iter().map(|(n, _)| *n).collect();
        orders.len() as u64 == M
    })
    .await;
    let runner_alive = !consumer.is_finished();
    let report = consumer.report();
    let seen = seen.lock().unwrap().clone();
    let mut times: BTreeMap<u64, u64> = BTreeMap::new();
    for (n, _) in &seen {
        *times.entry(*n).or_insert(0) += 1;
    }
    let missing: Vec<u64> = (0..M).filter(|n| !times.contains_key(n)).collect();
    let duplicates: BTreeMap<u64, u64> = times
        .iter()
        .filter(|(_, t)| **t > 1)
        .map(|(n, t)| (*n, *t))
        .collect();
    eprintln!(
        "server restart: {} handler calls for {M} orders, {} orders handled more than once \
         ({duplicates:?}), {retries} publish retries, report {report:?}",
        seen.len(),
        duplicates.len()
    );
    assert!(
        all_seen && missing.is_empty(),
        "orders never handled: {missing:?}; report {report:?}"
    );
    assert!(runner_alive, "the consumer runner stopped by itself");
    assert!(svc.nats.is_connected() && svc.bus.health().await.unwrap());
    // the stream holds each order once: retried publishes were deduplicated
    let stored = svc
        .provider
        .history(Some(&svc.orders_subject()), 1_000)
        .await
        .unwrap();
    let stored_orders: BTreeSet<String> = stored.iter().map(|e| e.id.clone()).collect();
    assert_eq!((stored.len() as u64, stored_orders.len() as u64), (M, M));
    let report = consumer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        report.dead_lettered + report.dlq_failed + report.terminated,
        0,
        "{report:?}"
    );
}

// ---------------------------------------------------------------------------
// Scenario 4: the process exits with work in flight and starts again
// ---------------------------------------------------------------------------

/// Handler calls of one process: (order, delivery number).
type Seen = Arc<Mutex<Vec<(u64, u64)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_restart_resumes_the_managed_subscriber_from_the_state_file() {
    let Some(server) = NatsServer::start("process_restart") else {
        return;
    };
    let config = common::config(&server, "e2e");
    let state_path = server.dir().join("app").join("subscriptions.json");
    let options = SubscribeOptions {
        max_deliver: Some(5),
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    const N: u64 = 20;
    const HANDLED_BEFORE_EXIT: u64 = 10;
    const CONCURRENCY: usize = 4;

    // Process one: its own runtime, torn down without a graceful shutdown
    // (as a process exit is) while CONCURRENCY handlers are stuck.
    let first: Seen = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Vec<Event>>();
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<()>();
    let process_one = {
        let (config, state_path, options, first) = (
            config.clone(),
            state_path.clone(),
            options.clone(),
            first.clone(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let kept = rt.block_on(async move {
                let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &key(1)));
                let svc = Service::connect(config, encryptor).await;
                let bus = svc.bus.clone();
                bus.set_state_store(Arc::new(a3s_event::FileStateStore::new(state_path)))
                    .await
                    .unwrap();
                bus.update_subscription_with_options(billing_filter(svc.orders_subject()), options)
                    .await
                    .unwrap();
                let mut published = Vec::new();
                for n in 0..N {
                    let event = svc.order(n);
                    bus.publish_event(&event).await.unwrap();
                    published.push(event);
                }
                let handler = {
                    let first = first.clone();
                    move |received: ReceivedEvent| {
                        let first = first.clone();
                        async move {
                            let n = received.event.payload["order"].as_u64().unwrap();
                            first.lock().unwrap().push((n, received.num_delivered));
                            if n >= HANDLED_BEFORE_EXIT {
                                // stuck: still running when the process exits
                                std::future::pending::<()>().await;
                            }
                            Ok::<(), String>(())
                        }
                    }
                };
                let consumer = bus
                    .consume(
                        "billing",
                        handler,
                        ConsumerConfig::default().concurrency(CONCURRENCY),
                    )
                    .await
                    .unwrap();
                let started = eventually(Duration::from_secs(10), || async {
                    first.lock().unwrap().len() == HANDLED_BEFORE_EXIT as usize + CONCURRENCY
                })
                .await;
                assert!(started, "process one: {:?}", first.lock().unwrap());
                // the acks of the handled events reach the server
                tokio::time::sleep(Duration::from_millis(300)).await;
                ready_tx.send(published).unwrap();
                let _ = exit_rx.await;
                (consumer, svc)
            });
            // the exit: every task stops where it is, nothing is drained
            rt.shutdown_background();
            drop(kept);
        })
    };
    let published = ready_rx.await.unwrap();
    exit_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || process_one.join().unwrap())
        .await
        .unwrap();

    let first = first.lock().unwrap().clone();
    let first_orders: BTreeSet<u64> = first.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        first_orders,
        (0..HANDLED_BEFORE_EXIT + CONCURRENCY as u64).collect(),
        "process one"
    );

    // Process two: a new bus on the same state file and stream.
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &key(1)));
    let svc = Service::connect(config, encryptor).await;
    let bus = &svc.bus;
    // A real exit releases the state file at once. Here process one's tasks,
    // which hold its bus and so the file, are dropped by its runtime's
    // threads after `shutdown_background` returned: until then the file is
    // still taken (`Error::Conflict`), as by a process still exiting.
    let store = Arc::new(a3s_event::FileStateStore::new(&state_path));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match bus.set_state_store(store.clone()).await {
            Err(Error::Conflict { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other.unwrap(),
        }
    }
    let record = bus.get_subscription_record("billing").await.unwrap();
    assert_eq!(record.filter, billing_filter(svc.orders_subject()));
    assert_eq!(record.options.as_ref(), Some(&options));

    let second: Seen = Arc::default();
    let handler = {
        let second = second.clone();
        move |received: ReceivedEvent| {
            let n = received.event.payload["order"].as_u64().unwrap();
            second.lock().unwrap().push((n, received.num_delivered));
            std::future::ready(Ok::<(), String>(()))
        }
    };
    let consumer = bus
        .consume("billing", handler, ConsumerConfig::default())
        .await
        .unwrap();
    // and it goes on with what is published now
    const MORE: u64 = 5;
    for n in N..N + MORE {
        bus.publish_event(&svc.order(n)).await.unwrap();
    }
    let done = eventually(Duration::from_secs(10), || async {
        second.lock().unwrap().len() as u64 >= N + MORE - HANDLED_BEFORE_EXIT
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = consumer.shutdown(Duration::from_secs(5)).await;
    let second = second.lock().unwrap().clone();
    assert!(done, "process two handled {second:?}; report {report:?}");

    // Nothing acked before the exit comes again; nothing is skipped; the
    // events in flight at the exit come again as their second delivery.
    let mut second_sorted = second.clone();
    second_sorted.sort_unstable();
    // In flight: the stuck handlers' events, and the one the runner had
    // fetched and was holding for a free handler (a delivery all the same).
    let in_flight = HANDLED_BEFORE_EXIT..=HANDLED_BEFORE_EXIT + CONCURRENCY as u64;
    let expected: Vec<(u64, u64)> = (HANDLED_BEFORE_EXIT..N + MORE)
        .map(|n| (n, if in_flight.contains(&n) { 2 } else { 1 }))
        .collect();
    assert_eq!(second_sorted, expected, "process two (order, delivery)");
    assert_eq!(published.len() as u64, N);
    assert_eq!(report.settle_errors, 0, "{report:?}");
}

// ---------------------------------------------------------------------------
// Scenario 5: routing to a topic (through the bus) and to an HTTP endpoint
// ---------------------------------------------------------------------------

/// A CloudEvents HTTP endpoint on 127.0.0.1; returns its URL and what it
/// received.
async fn webhook_server() -> (String, Arc<Mutex<Vec<Event>>>) {
    use a3s_event::cloudevents::http::server::HttpEvent;
    use axum::http::StatusCode;
    let received: Arc<Mutex<Vec<Event>>> = Arc::default();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post({
            let received = received.clone();
            move |HttpEvent(event): HttpEvent| {
                let received = received.clone();
                async move {
                    received.lock().unwrap().push(event);
                    StatusCode::ACCEPTED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_forwards_encrypted_through_the_bus_and_posts_plaintext_cloudevents() {
    use a3s_event::routing::http::HttpSink;
    use a3s_event::routing::{Broker, DeliverySpec, TopicSink, Trigger, TriggerFilter, metadata};
    let Some(server) = NatsServer::start("routing") else {
        return;
    };
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &key(1)));
    let svc = Service::connect(common::config(&server, "e2e"), encryptor.clone()).await;
    let bus = &svc.bus;
    let (url, webhook) = webhook_server().await;

    let audit_subject = svc.provider.build_subject("audit", "orders");
    let broker = Broker::new();
    broker
        .add_trigger(Trigger::new(
            "audit",
            TriggerFilter::by_subject(svc.orders_subject()).with_type(ORDER_CREATED),
            Arc::new(TopicSink::through_bus("audit", bus.clone(), &audit_subject).unwrap()),
        ))
        .unwrap();
    broker
        .add_trigger(
            Trigger::new(
                "billing-webhook",
                TriggerFilter::by_subject(svc.orders_subject()),
                Arc::new(HttpSink::new("billing-webhook", &url).unwrap()),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_retries(2)
                    .with_timeout(Some(Duration::from_secs(5))),
            ),
        )
        .unwrap();
    broker.attach(bus);

    // an auditor reads the audit category through the bus (decrypting)
    bus.update_subscription(SubscriptionFilter {
        subscriber_id: "auditor".to_string(),
        subjects: vec![svc.provider.category_subject("audit")],
        durable: true,
    })
    .await
    .unwrap();
    let mut auditor = bus.create_subscriber("auditor").await.unwrap();

    const N: u64 = 5;
    let mut published = BTreeMap::new();
    for n in 0..N {
        let event = svc.order(n);
        bus.publish_event(&event).await.unwrap();
        published.insert(event.id.clone(), event);
    }
    let mut audited = Vec::new();
    for _ in 0..N {
        let received = tokio::time::timeout(Duration::from_secs(10), auditor[0].next())
            .await
            .expect("an audit event")
            .unwrap()
            .expect("the subscription is open");
        audited.push(Event::clone(&received.event));
    }
    auditor[0].close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), broker.wait_idle())
        .await
        .unwrap();

    // the webhook got each order once, as a plaintext CloudEvent
    let posted = webhook.lock().unwrap().clone();
    assert_eq!(posted.len() as u64, N, "{posted:?}");
    for event in &posted {
        let original = &published[&event.id];
        assert_eq!(event.payload, original.payload);
        assert_eq!(event.subject, original.subject);
        assert_eq!(event.event_type, ORDER_CREATED);
    }
    // the auditor got each forward once, in plaintext, under a new id, with
    // the original id and subject in metadata
    for event in &audited {
        let original_id = &event.metadata[metadata::ORIGINAL_ID];
        let original = &published[original_id];
        assert_ne!(&event.id, original_id);
        assert_eq!(event.payload, original.payload);
        assert_eq!(event.subject, audit_subject);
        assert_eq!(event.category, "audit");
        assert_eq!(event.metadata[metadata::ORIGINAL_SUBJECT], original.subject);
        assert_eq!(event.metadata[metadata::HOPS], "1");
    }
    let forwarded_of: BTreeSet<&String> = audited
        .iter()
        .map(|e| &e.metadata[metadata::ORIGINAL_ID])
        .collect();
    assert_eq!(forwarded_of.len() as u64, N);

    // stored: the forward is ciphertext bound to its own id
    let stored = svc
        .provider
        .history(Some(&svc.provider.category_subject("audit")), 100)
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, N);
    for forward in &stored {
        assert!(EncryptedPayload::is_encrypted(&forward.payload));
        assert!(!forward.payload.to_string().contains("4111-"));
        let original_id = &forward.metadata[metadata::ORIGINAL_ID];
        let plain = encryptor.decrypt(&forward.id, &forward.payload).unwrap();
        assert_eq!(plain, published[original_id].payload);
        assert!(matches!(
            encryptor.decrypt(original_id, &forward.payload),
            Err(Error::Decryption(_))
        ));
    }

    let m = bus.metrics().snapshot();
    assert_eq!((m.publish_total, m.encrypt_total), (2 * N, 2 * N));
    assert_eq!(
        (m.publish_errors, m.router_errors, m.decrypt_errors),
        (0, 0, 0)
    );
    let b = broker.metrics();
    // the orders and their forwards are routed; only orders match
    assert_eq!((b.routed, b.matched, b.delivered), (2 * N, 2 * N, 2 * N));
    assert_eq!(
        (b.failed, b.dead_letter_failures, b.rejected, b.hop_limit),
        (0, 0, 0, 0)
    );
}

// ---------------------------------------------------------------------------
// Scenario 1, continued: the card problem is fixed, the DLQ is re-driven
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_redriven_in_two_calls_are_each_handled_once_oldest_first() {
    let Some(server) = NatsServer::start("redrive") else {
        return;
    };
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &key(1)));
    let svc = Service::connect(common::config(&server, "e2e"), encryptor).await;
    let bus = &svc.bus;
    svc.register_billing().await;
    let (billing, consumer) = svc.consume_billing().await;
    const N: u64 = 60;
    let mut published = BTreeMap::new();
    for n in 0..N {
        let event = svc.order(n);
        bus.publish_event(&event).await.unwrap();
        published.insert(n, event);
    }
    let always: BTreeSet<u64> = (0..N)
        .filter(|n| Fate::of(*n) == Fate::FailsAlways)
        .collect();
    assert!(
        eventually(Duration::from_secs(15), || async {
            billing.handled().len() + always.len() == N as usize
                && svc.dlq.count().await.unwrap() == always.len()
        })
        .await,
        "handled {:?}",
        billing.handled()
    );

    // The fix is deployed; the operator re-drives the DLQ in two steps.
    billing.fixed.store(true, Ordering::SeqCst);
    let first = svc.dlq.redrive(bus, 9).await.unwrap();
    let second = svc.dlq.redrive(bus, 100).await.unwrap();
    assert_eq!((first.redriven, first.skipped), (9, 0));
    assert_eq!(
        (second.redriven, second.skipped),
        (always.len() - 9, 0),
        "the second re-drive must take every dead letter the first left"
    );

    // each dead-lettered order is handled once more, as a re-driven copy
    let redriven_handled = || {
        let mut orders: Vec<u64> = billing
            .calls()
            .iter()
            .filter(|c| c.outcome.is_ok() && always.contains(&c.order))
            .map(|c| c.order)
            .collect();
        orders.sort_unstable();
        orders
    };
    let all = eventually(Duration::from_secs(5), || async {
        redriven_handled().len() >= always.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    consumer.shutdown(Duration::from_secs(5)).await;
    assert!(all, "re-driven orders handled: {:?}", redriven_handled());
    assert_eq!(
        redriven_handled(),
        always.iter().copied().collect::<Vec<_>>()
    );

    // oldest dead letter first: the re-driven copies are stored in DLQ order
    let mut dlq_order: Vec<String> = svc
        .provider
        .history(Some(&svc.dlq.filter_subject()), 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.metadata["a3s.original_id"].clone())
        .collect();
    dlq_order.reverse();
    let mut redriven_order: Vec<String> = bus
        .list_events(Some("orders"), 1_000)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| e.metadata.get("a3s.redriven_from").cloned())
        .collect();
    redriven_order.reverse();
    assert_eq!(redriven_order, dlq_order);
}

// ---------------------------------------------------------------------------
// Scenario 4, graceful form: a rolling deploy hands the durable over
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_runner_shutdown_hands_the_durable_over_without_waiting_out_the_ack_wait() {
    let Some(server) = NatsServer::start("handover") else {
        return;
    };
    let config = common::config(&server, "e2e");
    // the old and the new instance of the service, default consumer options
    // (the 30 s ack wait)
    let old = Service::connect(
        config.clone(),
        Arc::new(Aes256GcmEncryptor::new("k1", &key(1))),
    )
    .await;
    old.bus
        .update_subscription(billing_filter(old.orders_subject()))
        .await
        .unwrap();
    const N: u64 = 200;
    for n in 0..N {
        old.bus.publish_event(&old.order(n)).await.unwrap();
    }
    let seen: Seen = Arc::default();
    let handler = |seen: Seen| {
        move |received: ReceivedEvent| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let n = received.event.payload["order"].as_u64().unwrap();
                seen.lock().unwrap().push((n, received.num_delivered));
                Ok::<(), String>(())
            }
        }
    };
    let consumer = old
        .bus
        .consume(
            "billing",
            handler(seen.clone()),
            ConsumerConfig::default().concurrency(2),
        )
        .await
        .unwrap();
    // well past the provider's one-at-a-time warm-up: it fetches ahead now
    assert!(
        eventually(Duration::from_secs(10), || async {
            seen.lock().unwrap().len() >= 60
        })
        .await
    );
    let report = consumer.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.aborted, report.settle_errors), (0, 0), "{report:?}");
    let handled_by_old = seen.lock().unwrap().len();

    let new = Service::connect(config, Arc::new(Aes256GcmEncryptor::new("k1", &key(1)))).await;
    new.bus
        .update_subscription(billing_filter(new.orders_subject()))
        .await
        .unwrap();
    let started = Instant::now();
    let consumer = new
        .bus
        .consume("billing", handler(seen.clone()), ConsumerConfig::default())
        .await
        .unwrap();
    let all = eventually(Duration::from_secs(10), || async {
        let orders: BTreeSet<u64> = seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
        orders.len() as u64 == N
    })
    .await;
    let took = started.elapsed();
    consumer.shutdown(Duration::from_secs(5)).await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        all,
        "the new instance handled {} of the {} left in {took:?}",
        seen.len() - handled_by_old,
        N as usize - handled_by_old
    );
    // each handled once: the old instance acked what it handled and handed
    // back the rest
    let mut orders: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    orders.sort_unstable();
    assert_eq!(orders, (0..N).collect::<Vec<_>>());
}
