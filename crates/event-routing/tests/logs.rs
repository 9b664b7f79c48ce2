//! What an operator reads in the logs when deliveries fail: a broker
//! without a dead-letter sink does not warn once per failed event, and a
//! durable feed warns once per unsettled routing, not twice. Captured by a
//! small recording subscriber; kept in its own test binary, since tracing
//! caches callsite interest process-wide.

#![allow(clippy::unwrap_used)]

use capture::Capture;
use event_core::{Event, EventProvider, SubscribeOptions};
use event_memory::MemoryProvider;
use event_routing::{
    Broker, BrokerConfig, CollectorSink, DeliverySpec, FailingSink, LOSS_WARN_INTERVAL, Trigger,
    TriggerFilter,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::Level;

mod capture {
    //! A recording `tracing` subscriber: level and fields of every event.
    #![allow(clippy::unwrap_used)]
    use std::fmt::Write as _;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::subscriber::Interest;
    use tracing::{Event, Level, Metadata, Subscriber};

    #[derive(Debug, Clone)]
    pub struct Line {
        pub level: Level,
        /// `message` and ` key=value` of the event's fields.
        pub text: String,
    }

    struct Fields<'a>(&'a mut String);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            } else {
                let _ = write!(self.0, " {}={:?}", field.name(), value);
            }
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
    }

    #[derive(Default)]
    pub struct Capture {
        next: AtomicU64,
        lines: Mutex<Vec<Line>>,
    }

    impl Capture {
        /// Lines at `level` or more severe.
        pub fn at_least(&self, level: Level) -> Vec<Line> {
            let lines = self.lines.lock().unwrap();
            lines.iter().filter(|l| l.level <= level).cloned().collect()
        }

        /// Lines at exactly `level` whose text contains `needle`.
        pub fn find(&self, level: Level, needle: &str) -> Vec<Line> {
            let lines = self.lines.lock().unwrap();
            lines
                .iter()
                .filter(|l| l.level == level && l.text.contains(needle))
                .cloned()
                .collect()
        }
    }

    impl Subscriber for Capture {
        fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
            Interest::sometimes()
        }
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(self.next.fetch_add(1, Ordering::SeqCst) + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut text = String::new();
            event.record(&mut Fields(&mut text));
            self.lines.lock().unwrap().push(Line {
                level: *event.metadata().level(),
                text,
            });
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

fn event(n: u64) -> Arc<Event> {
    Arc::new(Event::new(
        "events.orders.created",
        "orders",
        "s",
        "src",
        json!({ "n": n }),
    ))
}

/// A trigger without retries whose sink always fails.
fn failing_trigger(name: &str) -> Trigger {
    Trigger::new(
        name,
        TriggerFilter::all(),
        Arc::new(FailingSink::new(name, "sink down")),
    )
    .with_delivery(DeliverySpec::new().with_retries(0))
}

const LOST: &str = "the trigger has no dead-letter sink";

/// A hundred events lost to a trigger without a dead-letter sink: one
/// warning (the rest at DEBUG), every loss counted; the first loss after
/// the interval warns again and says how many were quiet. Each trigger has
/// its own first warning.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn losses_without_a_dead_letter_sink_warn_once_per_interval_and_are_counted() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let broker = Broker::new();
    broker.add_trigger(failing_trigger("audit")).unwrap();
    for n in 0..100 {
        broker.enqueue(event(n)).await.unwrap();
    }
    broker.wait_idle().await;
    let warned = capture.find(Level::WARN, LOST);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(warned[0].text.contains("trigger=audit"), "{warned:?}");
    assert!(warned[0].text.contains("quiet_losses=0"), "{warned:?}");
    assert_eq!(capture.find(Level::DEBUG, LOST).len(), 99);
    let m = broker.metrics();
    assert_eq!((m.no_dead_letter_sink, m.dead_letter_failures), (100, 100));

    // a second trigger's first loss warns at once, whatever the first's
    broker.add_trigger(failing_trigger("billing")).unwrap();
    broker.route(&event(100)).await;
    let warned = capture.find(Level::WARN, LOST);
    assert_eq!(warned.len(), 2, "{warned:#?}");
    assert!(warned[1].text.contains("trigger=billing"), "{warned:?}");

    // after the interval: one warning per trigger, with the quiet count
    tokio::time::advance(LOSS_WARN_INTERVAL).await;
    broker.route(&event(101)).await;
    let warned = capture.find(Level::WARN, LOST);
    assert_eq!(warned.len(), 4, "{warned:#?}");
    let audit = warned.iter().filter(|l| l.text.contains("trigger=audit"));
    // 99 quiet after its first warning, then event 100
    assert!(
        audit.clone().any(|l| l.text.contains("quiet_losses=100")),
        "{warned:#?}"
    );
    assert_eq!(broker.metrics().no_dead_letter_sink, 104);
    assert!(capture.at_least(Level::ERROR).is_empty());
}

/// A durable feed whose routing fails is redelivered; each redelivery is
/// one warning naming the trigger and the error (not a second one from the
/// delivery), with or without a dead-letter sink that refuses. The final
/// delivery (`max_deliver`) is not redelivered: it is one error saying the
/// failed triggers never get the event, and the event is terminated.
#[tokio::test(flavor = "current_thread")]
async fn a_durable_feed_warns_once_per_unsettled_routing() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let broker = Broker::with_config(BrokerConfig {
        feed_retry_delay: Duration::from_millis(5),
        ..BrokerConfig::default()
    })
    .unwrap();
    broker
        .add_trigger(
            Trigger::new(
                "no-dls",
                TriggerFilter::by_type("a"),
                Arc::new(FailingSink::new("no-dls", "sink down")),
            )
            .with_delivery(DeliverySpec::new().with_retries(0)),
        )
        .unwrap();
    broker
        .add_trigger(
            Trigger::new(
                "bad-dls",
                TriggerFilter::by_type("b"),
                Arc::new(FailingSink::new("bad-dls", "sink down")),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_retries(0)
                    .with_dead_letter_sink(Arc::new(FailingSink::new("dls", "dls down"))),
            ),
        )
        .unwrap();
    for t in ["a", "b"] {
        provider
            .publish(&Event::typed(
                "events.orders.x",
                "orders",
                t,
                1,
                "s",
                "src",
                json!({}),
            ))
            .await
            .unwrap();
    }
    let options = SubscribeOptions {
        max_deliver: Some(3),
        ..SubscribeOptions::default()
    };
    let feed = broker
        .feed_durable(&*provider, "router", "events.>", &options)
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    while feed.stats().naked + feed.stats().dropped < 6 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            feed.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // nothing more comes: the final deliveries were terminated
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = feed.stop().await.unwrap();
    assert_eq!(
        (stats.received, stats.naked, stats.dropped),
        (6, 4, 2),
        "{stats:?}"
    );
    let faults = capture.at_least(Level::WARN);
    assert_eq!(
        faults.len(),
        6,
        "one line per unsettled routing: {faults:#?}"
    );
    for line in &faults {
        assert!(line.text.contains("sink down"), "{line:?}");
        if line.text.contains("attempt=3") {
            assert_eq!(line.level, Level::ERROR, "{line:?}");
            assert!(line.text.contains("never get it"), "{line:?}");
        } else {
            assert_eq!(line.level, Level::WARN, "{line:?}");
            assert!(line.text.contains("will be redelivered"), "{line:?}");
        }
    }
    assert_eq!(capture.at_least(Level::ERROR).len(), 2, "{faults:#?}");
    let named = |needle: &str| faults.iter().filter(|l| l.text.contains(needle)).count();
    assert_eq!(
        named("no-dls: connection error: sink down (attempts: 1); no dead-letter sink"),
        3
    );
    assert_eq!(
        named("bad-dls: connection error: sink down (attempts: 1); dead-letter sink: "),
        3
    );
    assert_eq!(named("dls down"), 3);
}

/// Event ids come from outside (a webhook sender): one with a line break
/// must not forge a log line. Ids are logged escaped (`Debug`), so the
/// line break shows as `\n`.
#[tokio::test(flavor = "current_thread")]
async fn an_event_id_with_a_line_break_is_logged_escaped() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let broker = Broker::new();
    broker.add_trigger(failing_trigger("t")).unwrap();
    let mut forged = Event::new("events.orders.x", "orders", "s", "src", json!({}));
    forged.id = "x\nINFO forged line".into();
    broker.route(&forged).await;
    let lines: Vec<_> = capture
        .at_least(Level::TRACE)
        .into_iter()
        .filter(|l| l.text.contains("forged line"))
        .collect();
    assert!(!lines.is_empty(), "the id is logged");
    for line in capture.at_least(Level::TRACE) {
        assert!(
            !line.text.contains("x\nINFO"),
            "a raw line break from an event id reached the log: {:?}",
            line.text
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.text.contains(r"x\nINFO forged line"))
    );
}

/// A failed attempt that will be retried is no loss: it stays at DEBUG,
/// but says which event, trigger and attempt it was (the id escaped).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failed_attempt_names_the_event_the_trigger_and_the_attempt_at_debug() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let broker = Broker::new();
    broker
        .add_trigger(
            Trigger::new(
                "audit",
                TriggerFilter::all(),
                Arc::new(FailingSink::fail_first("audit", "sink down", 2)),
            )
            .with_delivery(DeliverySpec::new().with_retries(2)),
        )
        .unwrap();
    let mut e = Event::new("events.orders.x", "orders", "s", "src", json!({}));
    e.id = "evt-7".into();
    let result = broker.route(&e).await;
    assert_eq!(result.delivered, 1);
    let attempts = capture.find(Level::DEBUG, "delivery attempt failed");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for (n, line) in attempts.iter().enumerate() {
        assert!(line.text.contains(r#"event_id="evt-7""#), "{line:?}");
        assert!(line.text.contains("trigger=audit"), "{line:?}");
        assert!(
            line.text.contains(&format!("attempt={}", n + 1)),
            "{line:?}"
        );
    }
    assert!(capture.at_least(Level::INFO).is_empty());
}

const DEAD_LETTERED: &str = "dead-lettered";

/// A trigger without retries whose sink always fails, with a dead-letter
/// sink that takes everything.
fn dead_lettering_trigger(name: &str, dead: &Arc<CollectorSink>) -> Trigger {
    Trigger::new(
        name,
        TriggerFilter::all(),
        Arc::new(FailingSink::new(name, "sink down")),
    )
    .with_delivery(
        DeliverySpec::new()
            .with_retries(0)
            .with_dead_letter_sink(dead.clone()),
    )
}

/// The final outcome of a delivery that exhausted its retries is visible
/// without DEBUG: a dead letter is one WARN per trigger and interval
/// (naming the event, the trigger, the attempts and the error), the others
/// at DEBUG, the next WARN saying how many were quiet; every one counted.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dead_letters_warn_once_per_interval_per_trigger_and_are_counted() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let dead = Arc::new(CollectorSink::new("dead"));
    let broker = Broker::new();
    broker
        .add_trigger(dead_lettering_trigger("audit", &dead))
        .unwrap();
    let mut first = Event::new("events.orders.x", "orders", "s", "src", json!({}));
    first.id = "evt-1".into();
    broker.route(&first).await;
    for n in 0..99 {
        broker.enqueue(event(n)).await.unwrap();
    }
    broker.wait_idle().await;
    assert_eq!(dead.len(), 100);
    let warned = capture.find(Level::WARN, DEAD_LETTERED);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    for needle in [
        "trigger=audit",
        r#"event_id="evt-1""#,
        "attempts=1",
        "sink down",
        "quiet_dead_letters=0",
    ] {
        assert!(warned[0].text.contains(needle), "{needle}: {warned:?}");
    }
    assert_eq!(capture.find(Level::DEBUG, DEAD_LETTERED).len(), 99);
    assert_eq!(broker.metrics().dead_lettered, 100);

    // another trigger's first dead letter warns at once
    broker
        .add_trigger(dead_lettering_trigger("billing", &dead))
        .unwrap();
    broker.route(&event(100)).await;
    let warned = capture.find(Level::WARN, DEAD_LETTERED);
    assert_eq!(warned.len(), 2, "{warned:#?}");
    assert!(warned[1].text.contains("trigger=billing"), "{warned:?}");

    // after the interval: one warning per trigger, with the quiet count
    tokio::time::advance(LOSS_WARN_INTERVAL).await;
    broker.route(&event(101)).await;
    let warned = capture.find(Level::WARN, DEAD_LETTERED);
    assert_eq!(warned.len(), 4, "{warned:#?}");
    assert!(
        warned
            .iter()
            .any(|l| l.text.contains("trigger=audit") && l.text.contains("quiet_dead_letters=100")),
        "{warned:#?}"
    );
    assert!(capture.at_least(Level::ERROR).is_empty());
    // a dead letter is not a loss: no loss warning
    assert!(capture.find(Level::WARN, LOST).is_empty());
}

/// A durable feed acknowledges a dead-lettered event: its dead letter is
/// final there too, and logged the same way.
#[tokio::test(flavor = "current_thread")]
async fn a_durable_feed_logs_its_dead_letters() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let dead = Arc::new(CollectorSink::new("dead"));
    let broker = Broker::new();
    broker
        .add_trigger(dead_lettering_trigger("audit", &dead))
        .unwrap();
    let feed = broker
        .feed_durable(
            &*provider,
            "router",
            "events.>",
            &SubscribeOptions::default(),
        )
        .await
        .unwrap();
    for n in 0..3 {
        provider.publish(&event(n)).await.unwrap();
    }
    let start = tokio::time::Instant::now();
    while feed.stats().acked < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            feed.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    feed.stop().await.unwrap();
    assert_eq!(capture.find(Level::WARN, DEAD_LETTERED).len(), 1);
    assert_eq!(capture.find(Level::DEBUG, DEAD_LETTERED).len(), 2);
}

/// A webhook whose sink refuses every event (a misbehaving sender, a sink
/// down) does not log a line per request: one WARN per interval (naming
/// the event), the others at DEBUG, the next WARN saying how many were
/// quiet; every refusal counted in `refused()`.
#[cfg(feature = "http")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn webhook_refusals_warn_once_per_interval_and_are_counted() {
    use axum::body::Body;
    use event_cloudevents::http::{Mode, to_http};
    use event_routing::http::WebhookSource;
    use hyper::service::Service as _;
    use hyper_util::service::TowerToHyperService;

    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let source = WebhookSource::new("ingress", "127.0.0.1:0".parse().unwrap());
    // the router, called in process: no socket, so the paused clock is safe
    let app = TowerToHyperService::new(
        source.router(Arc::new(FailingSink::new("down", "broker unreachable"))),
    );
    let post = |id: String| {
        let mut e = Event::new("events.orders.x", "orders", "s", "src", json!({}));
        e.id = id;
        let msg = to_http(&e, Mode::Binary).unwrap();
        let mut request = axum::http::Request::post("/events")
            .body(Body::from(msg.body))
            .unwrap();
        *request.headers_mut() = msg.headers;
        app.call(request)
    };
    for n in 0..50 {
        let response = post(format!("evt-{n}")).await.unwrap();
        assert_eq!(response.status(), 503);
    }
    const REFUSED: &str = "webhook: delivery failed";
    let warned = capture.find(Level::WARN, REFUSED);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    for needle in [
        r#"event_id="evt-0""#,
        "broker unreachable",
        "quiet_refusals=0",
        "source=ingress",
    ] {
        assert!(warned[0].text.contains(needle), "{needle}: {warned:?}");
    }
    assert_eq!(capture.find(Level::DEBUG, REFUSED).len(), 49);
    assert_eq!(source.refused(), 50);

    tokio::time::advance(LOSS_WARN_INTERVAL).await;
    assert_eq!(post("late".into()).await.unwrap().status(), 503);
    let warned = capture.find(Level::WARN, REFUSED);
    assert_eq!(warned.len(), 2, "{warned:#?}");
    assert!(warned[1].text.contains("quiet_refusals=49"), "{warned:?}");
    assert_eq!(source.refused(), 51);
}

/// What a sender controls cannot forge log lines: a subject with a line
/// break (refused only after the refusal is logged) is written escaped, on
/// the line of the record that carries it.
#[cfg(feature = "http")]
#[tokio::test(flavor = "current_thread")]
async fn a_webhook_sender_cannot_break_a_log_line() {
    use axum::body::Body;
    use event_cloudevents::http::{Mode, to_http};
    use event_routing::http::WebhookSource;
    use hyper::service::Service as _;
    use hyper_util::service::TowerToHyperService;

    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let source = WebhookSource::new("ingress", "127.0.0.1:0".parse().unwrap());
    let app = TowerToHyperService::new(
        source.router(Arc::new(FailingSink::new("down", "broker unreachable"))),
    );
    let forged = "events.a.b\n2026-11-30T00:00:00Z  WARN forged: admin logged in";
    let mut e = Event::new(forged, "a", "s", "src", json!({}));
    e.id = "evt\r\n-1".into();
    let msg = to_http(&e, Mode::Structured).unwrap();
    let mut request = axum::http::Request::post("/events")
        .body(Body::from(msg.body))
        .unwrap();
    *request.headers_mut() = msg.headers;
    assert_eq!(app.call(request).await.unwrap().status(), 503);
    let warned = capture.find(Level::WARN, "webhook: delivery failed");
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(!warned[0].text.contains(['\n', '\r']), "{warned:?}");
    assert!(
        warned[0]
            .text
            .contains(r#"subject="events.a.b\n2026-11-30T00:00:00Z  WARN forged"#),
        "{warned:?}"
    );
}

/// A log sink writes each field of the event escaped: a line break in a
/// summary or source stays on the record's line.
#[tokio::test(flavor = "current_thread")]
async fn a_log_sink_escapes_the_fields_it_writes() {
    use event_routing::{EventSink, LogSink};

    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let mut e = Event::new(
        "events.a.b",
        "a",
        "line one\nERROR forged",
        "src\r\nx",
        json!({}),
    );
    e.event_type = "t\n".into();
    e.id = "i\n".into();
    LogSink::new("log").deliver(&e).await.unwrap();
    let lines = capture.find(Level::INFO, "routed event");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(!lines[0].text.contains(['\n', '\r']), "{lines:?}");
    assert!(
        lines[0]
            .text
            .contains(r#"summary="line one\nERROR forged""#),
        "{lines:?}"
    );
}

const HOP_LIMIT: &str = "not routed";

/// Events that arrive at the hop limit (a sender can set the hop count: it
/// crosses HTTP with the event) do not log a line each: one WARN per
/// interval (naming the event), the others at DEBUG, the next WARN saying
/// how many were quiet; every one counted in `hop_limit`. The same limit
/// holds for a broker delivering into itself.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn events_at_the_hop_limit_warn_once_per_interval_and_are_counted() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let audit = Arc::new(CollectorSink::new("audit"));
    let broker = Broker::new();
    broker
        .add_trigger(Trigger::new("audit", TriggerFilter::all(), audit.clone()))
        .unwrap();
    let at_limit = |n: u64| {
        let mut e = Event::new("events.orders.x", "orders", "s", "src", json!({ "n": n }));
        e.id = format!("evt-{n}");
        let hops = broker.config().max_hops.to_string();
        Arc::new(e.with_metadata(event_routing::metadata::HOPS, hops))
    };
    for n in 0..100 {
        broker.enqueue(at_limit(n)).await.unwrap();
    }
    broker.wait_idle().await;
    assert!(audit.is_empty(), "routed although at the hop limit");
    let warned = capture.find(Level::WARN, HOP_LIMIT);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    for needle in [r#"event_id="evt-0""#, "forwarded too many times", "quiet=0"] {
        assert!(warned[0].text.contains(needle), "{needle}: {warned:?}");
    }
    assert_eq!(capture.find(Level::DEBUG, HOP_LIMIT).len(), 99);
    assert_eq!(broker.metrics().hop_limit, 100);

    // a broker that is its own trigger's sink: the nesting limit counts,
    // quietly within the interval
    let looping = Broker::new();
    looping
        .add_trigger(Trigger::new(
            "self",
            TriggerFilter::all(),
            Arc::new(looping.clone()),
        ))
        .unwrap();
    looping.route(&event(1)).await;
    assert_eq!(looping.metrics().hop_limit, 1);
    // its own broker's first warning, then quiet
    looping.route(&event(2)).await;
    let warned = capture.find(Level::WARN, HOP_LIMIT);
    assert_eq!(warned.len(), 2, "{warned:#?}");
    assert!(
        warned[1].text.contains("through too many brokers"),
        "{warned:?}"
    );

    // after the interval: one warning, with the quiet count
    tokio::time::advance(LOSS_WARN_INTERVAL).await;
    broker.route(&at_limit(100)).await;
    let warned = capture.find(Level::WARN, HOP_LIMIT);
    assert_eq!(warned.len(), 3, "{warned:#?}");
    assert!(warned[2].text.contains("quiet=99"), "{warned:?}");
    assert!(capture.at_least(Level::ERROR).is_empty());
}

/// Requests the authorization check refuses (a scanner, a sender with a
/// stale token) do not log a line each: one WARN per interval, the others
/// at DEBUG, the next WARN saying how many were quiet; every one counted.
#[cfg(feature = "http")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn webhook_authorization_refusals_warn_once_per_interval_and_are_counted() {
    use axum::body::Body;
    use event_routing::http::WebhookSource;
    use hyper::service::Service as _;
    use hyper_util::service::TowerToHyperService;

    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let source = WebhookSource::new("ingress", "127.0.0.1:0".parse().unwrap())
        .with_authorization(|headers| headers.contains_key("authorization"));
    let sink = Arc::new(CollectorSink::new("c"));
    let app = TowerToHyperService::new(source.router(sink.clone()));
    let post = || {
        let request = axum::http::Request::post("/events")
            .body(Body::from("{}"))
            .unwrap();
        app.call(request)
    };
    for _ in 0..50 {
        assert_eq!(post().await.unwrap().status(), 401);
    }
    const REFUSED: &str = "failed the authorization check";
    let warned = capture.find(Level::WARN, REFUSED);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(warned[0].text.contains("source=ingress"), "{warned:?}");
    assert!(warned[0].text.contains("quiet=0"), "{warned:?}");
    assert_eq!(capture.find(Level::DEBUG, REFUSED).len(), 49);
    tokio::time::advance(LOSS_WARN_INTERVAL).await;
    assert_eq!(post().await.unwrap().status(), 401);
    let warned = capture.find(Level::WARN, REFUSED);
    assert_eq!(warned.len(), 2, "{warned:#?}");
    assert!(warned[1].text.contains("quiet=49"), "{warned:?}");
    assert_eq!(source.stats().unauthorized, 51);
    assert!(sink.is_empty());
}

/// The runtime running the broker's dispatcher is dropped with routings in
/// progress and events queued behind them: one `ERROR` counts both (not one
/// per event, and not only the queued ones), as the metrics do.
#[test]
fn a_dispatcher_dropped_with_its_runtime_logs_what_it_lost_once() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let broker = Broker::with_config(BrokerConfig {
        workers: 2,
        ..BrokerConfig::default()
    })
    .unwrap();
    let started = Arc::new(Semaphore::new(0));
    broker
        .add_trigger(Trigger::new(
            "stuck",
            TriggerFilter::all(),
            Arc::new(event_routing::InProcessSink::new("stuck", {
                let started = started.clone();
                move |_| {
                    let started = started.clone();
                    async move {
                        started.add_permits(1);
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                }
            })),
        ))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for n in 0..5 {
            broker.enqueue(event(n)).await.unwrap();
        }
        // both workers are routing; three events wait in the queue
        started.acquire_many(2).await.unwrap().forget();
    });
    drop(runtime);
    let errors = capture.at_least(Level::ERROR);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].text.contains("runtime shut down"), "{errors:?}");
    assert!(errors[0].text.contains("unrouted=3"), "{errors:?}");
    assert!(errors[0].text.contains("aborted=2"), "{errors:?}");
    let m = broker.metrics();
    assert_eq!(
        (m.shutdown_unrouted, m.shutdown_aborted, m.in_flight),
        (3, 2, 0),
        "{m:?}"
    );
}

/// Routings a shutdown deadline cuts off are one `WARN` from the shutdown,
/// not also the `ERROR` of a dispatcher lost with its runtime.
#[tokio::test(flavor = "current_thread")]
async fn routings_cut_off_at_a_shutdown_deadline_are_not_logged_as_a_runtime_loss() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let broker = Broker::new();
    broker
        .add_trigger(Trigger::new(
            "stuck",
            TriggerFilter::all(),
            Arc::new(event_routing::InProcessSink::new("stuck", |_| async {
                std::future::pending::<()>().await;
                Ok(())
            })),
        ))
        .unwrap();
    for n in 0..3 {
        broker.enqueue(event(n)).await.unwrap();
    }
    let report = broker.shutdown_within(Duration::from_millis(50)).await;
    assert_eq!(report.aborted, 3, "{report:?}");
    let warned = capture.find(Level::WARN, "shutdown deadline");
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(capture.at_least(Level::ERROR).is_empty());
}

/// A source whose task belongs to a runtime that shuts down stops with it:
/// one `WARN` names it, `is_running` is false, `stop` says the task ended
/// abnormally, and a webhook no longer reports the address it listened on.
#[test]
fn a_source_stopped_by_its_runtime_shutting_down_warns() {
    use event_routing::{CronSource, EventSource};
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let sink = Arc::new(CollectorSink::new("c"));
    let cron =
        CronSource::every("beat", Duration::from_secs(3600), |n| (*event(n)).clone()).unwrap();
    #[cfg(feature = "http")]
    let webhook = event_routing::http::WebhookSource::new(
        "hook",
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        cron.start(sink.clone()).await.unwrap();
        assert!(cron.is_running());
        #[cfg(feature = "http")]
        {
            webhook.start(sink.clone()).await.unwrap();
            assert!(webhook.local_addr().is_some());
        }
    });
    drop(runtime);
    assert!(!cron.is_running());
    let warned = capture.find(Level::WARN, "the Tokio runtime that started it shut down");
    assert!(
        warned.iter().any(|l| l.text.contains("source=beat")),
        "{warned:#?}"
    );
    #[cfg(feature = "http")]
    {
        assert!(!webhook.is_running());
        assert_eq!(webhook.local_addr(), None);
        assert!(
            warned.iter().any(|l| l.text.contains("source=hook")),
            "{warned:#?}"
        );
    }
    let again = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    again.block_on(async {
        assert!(matches!(
            cron.stop().await,
            Err(event_core::Error::Provider { .. })
        ));
        // started again on a live runtime, stopped cleanly: no warning
        cron.start(sink.clone()).await.unwrap();
        cron.stop().await.unwrap();
        #[cfg(feature = "http")]
        {
            webhook.start(sink.clone()).await.unwrap();
            assert!(webhook.local_addr().is_some());
            webhook.stop().await.unwrap();
            assert_eq!(webhook.local_addr(), None);
        }
    });
    let warned = capture.find(Level::WARN, "source task");
    assert_eq!(
        warned.len(),
        if cfg!(feature = "http") { 2 } else { 1 },
        "{warned:#?}"
    );
}
