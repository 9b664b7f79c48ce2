//! What an operator reads: the logs and spans the bus emits (captured by a
//! small recording subscriber) and the metrics it counts. Kept in its own
//! test binary, as `span.rs` is: tracing caches callsite interest
//! process-wide, and each test here installs its own subscriber.

#![allow(clippy::unwrap_used)]

mod common;

use capture::Capture;
use event_bus::dlq::{DEAD_LETTER_EVENT_TYPE, ProviderDlqHandler};
use event_bus::{ConsumerConfig, EventBus, MemoryDlqHandler, PlaintextPolicy};
use event_core::{
    Acker, BoxError, DlqHandler, Error, Event, EventEncryptor, EventProvider, PendingEvent,
    ReceivedEvent, SubscribeOptions, Subscription, SubscriptionFilter,
};
use event_crypto::Aes256GcmEncryptor;
use event_memory::MemoryProvider;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Level;

mod capture {
    //! A recording `tracing` subscriber: every enabled event, with its own
    //! fields and those of the spans it was emitted in.
    #![allow(clippy::unwrap_used)]
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::subscriber::Interest;
    use tracing::{Event, Level, Metadata, Subscriber};

    thread_local! {
        static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    /// One captured event.
    #[derive(Debug, Clone)]
    pub struct Line {
        pub level: Level,
        /// `message` and `key=value` of the event's own fields.
        pub fields: String,
        /// `name{key=value ...}` of every span it was emitted in.
        pub spans: String,
    }

    impl Line {
        /// The event's fields and its spans' fields.
        pub fn context(&self) -> String {
            format!("{} {}", self.fields, self.spans)
        }
    }

    struct Fields<'a>(&'a mut String);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
    }

    pub struct Capture {
        max: Level,
        next: AtomicU64,
        spans: Mutex<HashMap<u64, String>>,
        /// Each span's metadata, for `current_span` (which
        /// `Span::current` and `in_current_span` ask).
        metadata: Mutex<HashMap<u64, &'static Metadata<'static>>>,
        pub lines: Mutex<Vec<Line>>,
    }

    impl Capture {
        /// Records what a subscriber filtered at `max` would see.
        pub fn at(max: Level) -> Self {
            Self {
                max,
                next: AtomicU64::new(0),
                spans: Mutex::default(),
                metadata: Mutex::default(),
                lines: Mutex::default(),
            }
        }

        pub fn lines(&self) -> Vec<Line> {
            self.lines.lock().unwrap().clone()
        }

        /// Every captured string: events and every span ever created.
        pub fn all_text(&self) -> String {
            let mut all: String = self
                .lines()
                .iter()
                .map(|l| format!("{}\n", l.context()))
                .collect();
            for span in self.spans.lock().unwrap().values() {
                all.push_str(span);
                all.push('\n');
            }
            all
        }
    }

    impl Subscriber for Capture {
        fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
            Interest::sometimes()
        }
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() <= self.max
        }
        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
            let mut text = format!("{}{{", attrs.metadata().name());
            attrs.record(&mut Fields(&mut text));
            self.spans.lock().unwrap().insert(id, text);
            self.metadata.lock().unwrap().insert(id, attrs.metadata());
            Id::from_u64(id)
        }
        fn record(&self, id: &Id, values: &Record<'_>) {
            if let Some(text) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
                values.record(&mut Fields(text));
            }
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = String::new();
            event.record(&mut Fields(&mut fields));
            let names = self.spans.lock().unwrap();
            let spans = STACK.with(|s| {
                s.borrow()
                    .iter()
                    .filter_map(|id| names.get(id))
                    .map(|t| format!("{t}}} "))
                    .collect()
            });
            self.lines.lock().unwrap().push(Line {
                level: *event.metadata().level(),
                fields,
                spans,
            });
        }
        fn current_span(&self) -> tracing_core::span::Current {
            let top = STACK.with(|s| s.borrow().last().copied());
            top.and_then(|id| {
                let metadata = *self.metadata.lock().unwrap().get(&id)?;
                Some(tracing_core::span::Current::new(Id::from_u64(id), metadata))
            })
            .unwrap_or_else(tracing_core::span::Current::none)
        }
        fn enter(&self, id: &Id) {
            STACK.with(|s| s.borrow_mut().push(id.into_u64()));
        }
        fn exit(&self, id: &Id) {
            STACK.with(|s| {
                let mut s = s.borrow_mut();
                if let Some(pos) = s.iter().rposition(|x| *x == id.into_u64()) {
                    s.remove(pos);
                }
            });
        }
    }
}

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

const SECRET: &str = "TOP-SECRET-PLAINTEXT-4711";
const KEY: [u8; 32] = *b"an-aes-256-key-of-32-bytes-here!";
const OTHER_KEY: [u8; 32] = *b"another-32-byte-key-for-aes-256!";

/// Publishing, consuming, failing, dead-lettering and failing to decrypt
/// encrypted events, with every level recorded: neither the plaintext of a
/// payload nor the key appears in any log line, span field or error string.
#[tokio::test(flavor = "current_thread")]
async fn no_plaintext_or_key_in_logs_spans_or_errors() {
    let capture = Arc::new(Capture::at(Level::TRACE));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let provider = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    bus.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &KEY)));
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());
    // a second bus over the same store with another key: it cannot decrypt
    let stranger = EventBus::from_arc(provider.clone());
    stranger.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &OTHER_KEY)));
    let stranger_dlq = Arc::new(MemoryDlqHandler::default());
    stranger.set_dlq_handler(stranger_dlq.clone());

    let options = SubscribeOptions {
        max_deliver: Some(2),
        backoff: vec![Duration::from_millis(5)],
        ack_wait: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    for (b, id) in [(&bus, "owner"), (&stranger, "stranger")] {
        b.update_subscription_with_options(
            SubscriptionFilter {
                subscriber_id: id.into(),
                subjects: vec!["events.vault.>".into()],
                durable: true,
            },
            options.clone(),
        )
        .await
        .unwrap();
    }
    let mut errors = Vec::new();
    let owner = bus
        .consume(
            "owner",
            |_r: ReceivedEvent| async { Err::<(), BoxError>("handler refused".into()) },
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
    let other = common::succeeding_consumer(&stranger, "stranger").await;
    for i in 0..3 {
        bus.publish(
            "vault",
            "open",
            "s",
            "src",
            json!({"secret": SECRET, "i": i}),
        )
        .await
        .unwrap();
    }
    wait_for_dead_letters(&*dlq, 3).await;
    wait_for_dead_letters(&*stranger_dlq, 3).await;
    owner.shutdown(Duration::from_secs(1)).await;
    other.shutdown(Duration::from_secs(1)).await;
    let metrics = stranger.metrics().snapshot();
    assert_eq!(metrics.decrypt_errors, 3, "{metrics:?}");
    errors.push(stranger.list_events(Some("vault"), 10).await.unwrap_err());
    // a payload nested too deep to encrypt
    let mut deep = json!(SECRET);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    errors.push(
        bus.publish("vault", "open", "s", "src", deep)
            .await
            .unwrap_err(),
    );

    let mut text = capture.all_text();
    for err in &errors {
        text.push_str(&format!("{err} {err:?}\n"));
    }
    text.push_str(&format!("{bus:?} {stranger:?}"));
    assert!(text.contains("a3s_event.publish"), "nothing captured");
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    for (what, needle) in [
        ("plaintext", SECRET.to_string()),
        ("key", String::from_utf8_lossy(&KEY).into_owned()),
        (
            "other key",
            String::from_utf8_lossy(&OTHER_KEY).into_owned(),
        ),
        ("key (hex)", hex),
        ("key (bytes)", format!("{:?}", &KEY[..8])),
    ] {
        assert!(!text.contains(&needle), "the {what} leaked:\n{text}");
    }
}

/// Every acknowledgement call fails.
struct RefusingAcker;

#[async_trait::async_trait]
impl Acker for RefusingAcker {
    async fn ack(&self) -> event_core::Result<()> {
        Err(Error::Connection("ack refused".into()))
    }
    async fn nak(&self, _delay: Option<Duration>) -> event_core::Result<()> {
        Err(Error::Connection("nak refused".into()))
    }
    async fn term(&self) -> event_core::Result<()> {
        Err(Error::Connection("term refused".into()))
    }
    async fn in_progress(&self) -> event_core::Result<()> {
        Err(Error::Connection("in_progress refused".into()))
    }
}

/// Hands out the given events (sequence 100, 101, ...; delivery `attempt`)
/// whose acknowledgements fail, then ends.
struct UnsettleableSubscription {
    events: Vec<(Event, u64)>,
    sequence: u64,
}

#[async_trait::async_trait]
impl Subscription for UnsettleableSubscription {
    async fn next(&mut self) -> event_core::Result<Option<ReceivedEvent>> {
        Ok(self.next_manual_ack().await?.map(|p| p.received))
    }
    async fn next_manual_ack(&mut self) -> event_core::Result<Option<PendingEvent>> {
        if self.events.is_empty() {
            return Ok(None);
        }
        let (event, attempt) = self.events.remove(0);
        self.sequence += 1;
        let received = ReceivedEvent {
            event: Arc::new(event),
            sequence: self.sequence,
            num_delivered: attempt,
            stream: Arc::from("test"),
        };
        Ok(Some(PendingEvent::new(
            received,
            Some(2),
            Box::new(RefusingAcker),
        )))
    }
    async fn close(&mut self) -> event_core::Result<()> {
        Ok(())
    }
}

/// An operator running at `INFO` (the per-delivery span is at `DEBUG`, so
/// it is not there) can tell which event a warning or error about one
/// delivery is about: it names the event id and its stream sequence.
#[tokio::test(flavor = "current_thread")]
async fn warnings_about_a_delivery_name_the_event_at_info_level() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bus = EventBus::new(MemoryProvider::default());
    let ok = Event::new("events.a.ok", "a", "s", "src", json!({"ok": true}));
    let retry = Event::new("events.a.retry", "a", "s", "src", json!({"ok": false}));
    let last = Event::new("events.a.last", "a", "s", "src", json!({"ok": false}));
    let sub = UnsettleableSubscription {
        // ok: ack fails; retry: nak fails; last (final delivery, no DLQ
        // handler): logged as exhausted, term fails
        events: vec![(ok.clone(), 1), (retry.clone(), 1), (last.clone(), 2)],
        sequence: 100,
    };
    let consumer = bus
        .consume_subscription(
            Box::new(sub),
            SubscribeOptions::default(),
            |r: ReceivedEvent| async move {
                if r.event.payload["ok"] == true {
                    Ok(())
                } else {
                    Err::<(), BoxError>("handler refused".into())
                }
            },
            ConsumerConfig::default(),
        )
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(5), consumer.join())
        .await
        .unwrap();
    assert_eq!(report.settle_errors, 3, "{report:?}");
    let lines = capture.lines();
    let faults: Vec<_> = lines.iter().filter(|l| l.level <= Level::WARN).collect();
    for (event, sequence, what) in [
        (&ok, 101, "ack"),
        (&retry, 102, "nak"),
        (&last, 103, "term"),
    ] {
        let about: Vec<_> = faults
            .iter()
            .filter(|l| l.fields.contains(&format!("{what} refused")))
            .collect();
        assert_eq!(about.len(), 1, "the failed {what}, once: {lines:#?}");
        let context = about[0].context();
        assert!(
            context.contains(&event.id) && context.contains(&format!("sequence={sequence}")),
            "the failed {what} does not name event {} at sequence {sequence}: {context}",
            event.id
        );
    }
    let exhausted: Vec<_> = faults
        .iter()
        .filter(|l| l.fields.contains("exhausted"))
        .collect();
    assert_eq!(exhausted.len(), 1, "{lines:#?}");
    let context = exhausted[0].context();
    assert!(
        context.contains(&last.id) && context.contains("sequence=103"),
        "{context}"
    );
}

/// A warning from a consumer runner's fetch loop (here: its subscription
/// lagged) names the managed subscriber and the subject it consumes, so an
/// operator running several consumers can tell which one it is about.
#[tokio::test(flavor = "current_thread")]
async fn consumer_loop_warnings_name_the_subscriber_and_subject() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let provider = MemoryProvider::new(event_memory::MemoryConfig {
        subject_prefix: "events".into(),
        max_events: 5,
        channel_capacity: 4,
    })
    .unwrap();
    let bus = EventBus::new(provider);
    bus.update_subscription(SubscriptionFilter {
        subscriber_id: "slow-reader".into(),
        subjects: vec!["events.ticks.>".into()],
        durable: false,
    })
    .await
    .unwrap();
    let consumer = common::succeeding_consumer(&bus, "slow-reader").await;
    // the runner's loop does not run before the test task yields: it lags
    for i in 0..20 {
        bus.publish("ticks", "t", "s", "src", json!(i))
            .await
            .unwrap();
    }
    let start = Instant::now();
    while bus.metrics().snapshot().lagged == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no lag");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    consumer.shutdown(Duration::from_secs(1)).await;
    let lines = capture.lines();
    let lagged: Vec<_> = lines
        .iter()
        .filter(|l| l.level == Level::WARN && l.fields.contains("lagged"))
        .collect();
    assert_eq!(lagged.len(), 1, "{lines:#?}");
    let context = lagged[0].context();
    assert!(
        context.contains("slow-reader") && context.contains("events.ticks.>"),
        "the lag warning does not say which consumer lagged: {context}"
    );
}

/// Refuses every dead letter, for good (not a transient error).
struct RefusingDlq;

#[async_trait::async_trait]
impl DlqHandler for RefusingDlq {
    async fn handle(&self, _dead: event_core::DeadLetterEvent) -> event_core::Result<()> {
        Err(Error::provider("dlq", "dead letters refused"))
    }
    async fn list(&self, _limit: usize) -> event_core::Result<Vec<event_core::DeadLetterEvent>> {
        Ok(Vec::new())
    }
    async fn count(&self) -> event_core::Result<usize> {
        Ok(0)
    }
}

/// At `INFO`, the warning that the DLQ handler refused a dead letter, and
/// the error once it kept refusing, name the event id, its subject and its
/// sequence, as the other warnings about one delivery do.
#[tokio::test(flavor = "current_thread")]
async fn dlq_refusals_name_the_event_subject_and_sequence_at_info_level() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_dlq_handler(Arc::new(RefusingDlq));
    let last = Event::new("events.a.refused", "a", "s", "src", json!({"ok": false}));
    let sub = UnsettleableSubscription {
        // the final delivery (of 2): dead-lettered, and refused
        events: vec![(last.clone(), 2)],
        sequence: 100,
    };
    let consumer = bus
        .consume_subscription(
            Box::new(sub),
            SubscribeOptions::default(),
            |_r: ReceivedEvent| async { Err::<(), BoxError>("handler refused".into()) },
            ConsumerConfig {
                dlq_attempts: 1,
                ..ConsumerConfig::default()
            },
        )
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(5), consumer.join())
        .await
        .unwrap();
    assert_eq!(report.dlq_failed, 1, "{report:?}");
    let lines = capture.lines();
    for what in ["refused a dead letter", "kept refusing"] {
        let about: Vec<_> = lines
            .iter()
            .filter(|l| l.level <= Level::WARN && l.fields.contains(what))
            .collect();
        assert_eq!(about.len(), 1, "{what}, once: {lines:#?}");
        let context = about[0].context();
        assert!(
            context.contains(&last.id)
                && context.contains("events.a.refused")
                && context.contains("sequence=101"),
            "'{what}' does not name event {} on events.a.refused at sequence 101: {context}",
            last.id
        );
    }
}

/// An event id is the publisher's choice: one with a line break must not
/// forge a log line. The runner's lines name ids escaped (`Debug`).
#[tokio::test(flavor = "current_thread")]
async fn an_event_id_with_a_line_break_is_logged_escaped() {
    let capture = Arc::new(Capture::at(Level::TRACE));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription_with_options(
        SubscriptionFilter {
            subscriber_id: "w".into(),
            subjects: vec!["events.ids.>".into()],
            durable: true,
        },
        SubscribeOptions {
            max_deliver: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut event = event_core::Event::new("events.ids.x", "ids", "s", "src", json!({}));
    event.id = "x\nERROR forged line".into();
    // (a dedup id may not hold control characters; the event id may)
    let options = event_core::PublishOptions {
        msg_id: Some("forged-1".into()),
        ..Default::default()
    };
    bus.publish_event_with_options(&event, &options)
        .await
        .unwrap();
    let consumer = bus
        .consume(
            "w",
            |_r: ReceivedEvent| async { Err::<(), BoxError>("refused".into()) },
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
    let start = Instant::now();
    while consumer.report().terminated + consumer.report().dead_lettered < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            consumer.report()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    consumer.shutdown(Duration::from_secs(1)).await;
    let text = capture.all_text();
    assert!(
        text.contains(r"x\nERROR forged line"),
        "the id is logged:\n{text}"
    );
    assert!(
        !text.contains("x\nERROR forged line"),
        "a raw line break from an event id reached the log:\n{text}"
    );
}

/// A delivery the bus cannot decrypt (here: encrypted under a key id the
/// reading bus lacks, as in a key rotation rolled out too early) is logged
/// once, saying what became of the event and naming its subject (escaped):
/// dead-lettered (a `WARN`: nothing is lost) when a DLQ handler is set,
/// terminated (an `ERROR`: the consumer group loses it) when none is.
#[tokio::test(flavor = "current_thread")]
async fn an_undecryptable_delivery_is_logged_with_its_fate_and_subject() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let provider = Arc::new(MemoryProvider::default());
    // the writer encrypts under "k2"; both readers hold only "k1"
    let writer = EventBus::from_arc(provider.clone());
    writer.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k2", &OTHER_KEY)));
    let kept = EventBus::from_arc(provider.clone());
    kept.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &KEY)));
    let dlq = Arc::new(MemoryDlqHandler::default());
    kept.set_dlq_handler(dlq.clone());
    let lost = EventBus::from_arc(provider.clone());
    lost.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &KEY)));
    let mut consumers = Vec::new();
    for (bus, id) in [(&kept, "with-dlq"), (&lost, "without-dlq")] {
        bus.update_subscription(SubscriptionFilter {
            subscriber_id: id.into(),
            subjects: vec!["events.vault.>".into()],
            durable: true,
        })
        .await
        .unwrap();
        let consumer = common::succeeding_consumer(bus, id).await;
        consumers.push(consumer);
    }
    let event_id = writer
        .publish("vault", "open", "s", "src", json!({"secret": SECRET}))
        .await
        .unwrap()
        .id;
    let start = Instant::now();
    while consumers[0].report().dead_lettered + consumers[1].report().terminated < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?} {:?}",
            consumers[0].report(),
            consumers[1].report()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for consumer in consumers {
        consumer.shutdown(Duration::from_secs(1)).await;
    }
    let lines = capture.lines();
    for (subscriber, level, fate) in [
        ("with-dlq", Level::WARN, "dead-lettered"),
        ("without-dlq", Level::ERROR, "terminated"),
    ] {
        let about: Vec<_> = lines
            .iter()
            .filter(|l| {
                l.level <= Level::WARN
                    && l.context().contains(&event_id)
                    && l.spans.contains(&format!("subscriber={subscriber}"))
            })
            .collect();
        assert_eq!(about.len(), 1, "{subscriber}: one line: {lines:#?}");
        let line = about[0];
        assert_eq!(line.level, level, "{subscriber}: {line:?}");
        assert!(
            line.fields.contains(fate),
            "{subscriber}: the line does not say the event was {fate}: {line:?}"
        );
        assert!(
            line.fields.contains(r#"subject="events.vault.open""#),
            "{subscriber}: the line does not name the subject (escaped): {line:?}"
        );
    }
}

/// Yields one undecodable message, then ends.
struct UndecodableOnce(bool);

#[async_trait::async_trait]
impl Subscription for UndecodableOnce {
    async fn next(&mut self) -> event_core::Result<Option<ReceivedEvent>> {
        Ok(self.next_manual_ack().await?.map(|p| p.received))
    }
    async fn next_manual_ack(&mut self) -> event_core::Result<Option<PendingEvent>> {
        if std::mem::replace(&mut self.0, true) {
            return Ok(None);
        }
        Err(Error::Undecodable {
            subject: "events.raw.in".into(),
            sequence: 7,
            reason: "not an event".into(),
            raw: "BODY-NOT-LOGGED".into(),
        })
    }
    async fn close(&mut self) -> event_core::Result<()> {
        Ok(())
    }
}

/// An undecodable message (already dropped by the provider) is logged once
/// with what became of it: dead-lettered (`WARN`) or, without a DLQ
/// handler, lost (`ERROR`), naming its subject and sequence, not its body.
#[tokio::test(flavor = "current_thread")]
async fn an_undecodable_message_is_logged_with_its_fate() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    for (dlq, level, fate) in [
        (true, Level::WARN, "dead-lettered"),
        (false, Level::ERROR, "lost"),
    ] {
        capture.lines.lock().unwrap().clear();
        let bus = EventBus::new(MemoryProvider::default());
        if dlq {
            bus.set_dlq_handler(Arc::new(MemoryDlqHandler::default()));
        }
        let report = common::run_to_end(&bus, Box::new(UndecodableOnce(false))).await;
        assert_eq!(report.dead_lettered + report.terminated, 1, "{report:?}");
        let lines = capture.lines();
        let about: Vec<_> = lines.iter().filter(|l| l.level <= Level::WARN).collect();
        assert_eq!(about.len(), 1, "one line: {lines:#?}");
        let line = about[0];
        assert_eq!(line.level, level, "{line:?}");
        assert!(
            line.fields.contains(fate)
                && line.fields.contains(r#"subject="events.raw.in""#)
                && line.fields.contains("sequence=7")
                && !line.fields.contains("BODY-NOT-LOGGED"),
            "{line:?}"
        );
    }
}

/// A DLQ handler that takes its time before storing.
struct SlowDlq(MemoryDlqHandler);

#[async_trait::async_trait]
impl event_core::DlqHandler for SlowDlq {
    async fn handle(&self, dead_letter: event_core::DeadLetterEvent) -> event_core::Result<()> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0.handle(dead_letter).await
    }
    async fn list(&self, limit: usize) -> event_core::Result<Vec<event_core::DeadLetterEvent>> {
        self.0.list(limit).await
    }
    async fn count(&self) -> event_core::Result<usize> {
        self.0.count().await
    }
}

/// The line saying what became of an undecryptable delivery is written
/// also when the caller stopped waiting for the fetch (a runner shutting
/// down drops it) while the DLQ handler was taking the dead letter.
#[tokio::test(flavor = "current_thread")]
async fn an_undecryptable_delivery_is_logged_when_the_caller_stops_waiting() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let provider = Arc::new(MemoryProvider::default());
    let writer = EventBus::from_arc(provider.clone());
    writer.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k2", &OTHER_KEY)));
    let reader = EventBus::from_arc(provider.clone());
    reader.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &KEY)));
    let dlq = Arc::new(SlowDlq(MemoryDlqHandler::default()));
    reader.set_dlq_handler(dlq.clone());
    reader
        .update_subscription(SubscriptionFilter {
            subscriber_id: "impatient".into(),
            subjects: vec!["events.vault.>".into()],
            durable: true,
        })
        .await
        .unwrap();
    let event_id = writer
        .publish("vault", "open", "s", "src", json!({"secret": SECRET}))
        .await
        .unwrap()
        .id;
    let mut subs = reader.create_subscriber("impatient").await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(50), subs[0].next()).await;
    assert!(
        gave_up.is_err(),
        "the fetch was still handing off: {gave_up:?}"
    );
    let start = Instant::now();
    while dlq.count().await.unwrap() < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // the line follows the hand-off in the same task
    let start = Instant::now();
    loop {
        let lines = capture.lines();
        let logged = lines.iter().any(|l| {
            l.level == Level::WARN
                && l.context().contains(&event_id)
                && l.fields.contains("dead-lettered")
        });
        if logged {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no line for the dead-lettered event: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A consumer whose runtime was shut down before it was: shutting its
/// handle down from another runtime says so in one `WARN` (its in-flight
/// deliveries were left unsettled and are not in the report), not as a
/// consumer loop that failed (`ERROR`, kept for panics).
#[test]
fn a_consumer_outlived_by_its_handle_is_a_warning_not_a_failure() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bus = EventBus::new(MemoryProvider::default());
    let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let consumer = first.block_on(async {
        bus.update_subscription(SubscriptionFilter {
            subscriber_id: "stuck".into(),
            subjects: vec!["events.work.>".into()],
            durable: true,
        })
        .await
        .unwrap();
        let consumer = bus
            .consume(
                "stuck",
                move |_r: ReceivedEvent| {
                    let started = started.clone();
                    async move {
                        let _ = started.send(());
                        std::future::pending::<()>().await;
                        Ok::<(), BoxError>(())
                    }
                },
                ConsumerConfig::default(),
            )
            .await
            .unwrap();
        bus.publish("work", "t", "s", "src", json!(1))
            .await
            .unwrap();
        started_rx.recv().await.unwrap();
        consumer
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = second.block_on(consumer.shutdown(Duration::from_secs(1)));
    assert_eq!(report.acked, 0);
    let lines = capture.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.level == Level::ERROR && l.fields.contains("consumer loop failed")),
        "a runtime shutdown logged as a failed loop: {lines:#?}"
    );
    let warned = lines
        .iter()
        .filter(|l| l.level == Level::WARN && l.fields.contains("ended with its runtime"))
        .count();
    assert!(
        warned >= 1,
        "no warning that the loop ended with its runtime: {lines:#?}"
    );
}

/// The stall lines captured so far: the warnings that a run is still going
/// and the lines saying a stalled run ended.
fn stall_lines(capture: &Capture) -> (Vec<capture::Line>, Vec<capture::Line>) {
    let lines = capture.lines();
    let still = lines
        .iter()
        .filter(|l| l.level == Level::WARN && l.fields.contains("still running"))
        .cloned()
        .collect();
    let ended = lines
        .iter()
        .filter(|l| l.level == Level::WARN && l.fields.contains("ended after"))
        .cloned()
        .collect();
    (still, ended)
}

/// Sleeps (on the paused clock) until `secs` after `start`.
async fn until(start: tokio::time::Instant, secs: u64) {
    tokio::time::sleep_until(start + Duration::from_secs(secs)).await;
}

/// A handler with no time limit that hangs is not silent: a `WARN` at 60 s
/// naming the subscriber, event, subject, delivery count and how long it
/// has run, another at 120 s and 240 s (each doubling, not every tick), one
/// count in `handler_stalls`, and once it is let go, a line saying it
/// ended and how. It is not cancelled: it finishes and is acked.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_handler_with_no_time_limit_that_hangs_is_reported_at_each_doubling() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription(SubscriptionFilter {
        subscriber_id: "stuck-worker".into(),
        subjects: vec!["events.orders.>".into()],
        durable: true,
    })
    .await
    .unwrap();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let consumer = bus
        .consume(
            "stuck-worker",
            move |_r: ReceivedEvent| {
                let (started_tx, gate) = (started_tx.clone(), gate.clone());
                async move {
                    let _ = started_tx.send(());
                    gate.notified().await;
                    Ok::<(), BoxError>(())
                }
            },
            ConsumerConfig::default().handler_timeout(None),
        )
        .await
        .unwrap();
    let event = Event::new("events.orders.placed", "orders", "s", "src", json!(1));
    bus.publish_event(&event).await.unwrap();
    started.recv().await.unwrap();
    let start = tokio::time::Instant::now();
    let stalls = || bus.metrics().snapshot().handler_stalls;

    until(start, 59).await;
    assert_eq!(stall_lines(&capture).0.len(), 0, "warned before 60 s");
    assert_eq!(stalls(), 0);

    until(start, 61).await;
    let (still, _) = stall_lines(&capture);
    assert_eq!(still.len(), 1, "{:#?}", capture.lines());
    let first = still[0].context();
    for needle in [
        "subscriber=stuck-worker",
        &format!("event_id={:?}", event.id),
        "subject=\"events.orders.placed\"",
        "deliveries=1",
        "running_for=60",
        "handler",
    ] {
        assert!(first.contains(needle), "no {needle} in: {first}");
    }
    assert_eq!(stalls(), 1);

    until(start, 119).await;
    assert_eq!(stall_lines(&capture).0.len(), 1, "warned between doublings");
    until(start, 121).await;
    let (still, _) = stall_lines(&capture);
    assert_eq!(still.len(), 2, "no warning at 120 s");
    assert!(still[1].fields.contains("running_for=120"), "{still:#?}");
    until(start, 239).await;
    assert_eq!(stall_lines(&capture).0.len(), 2, "warned between doublings");
    until(start, 241).await;
    let (still, ended) = stall_lines(&capture);
    assert_eq!(still.len(), 3, "no warning at 240 s");
    assert!(still[2].fields.contains("running_for=240"), "{still:#?}");
    assert!(ended.is_empty());
    assert_eq!(stalls(), 1, "counted per run, not per warning");

    until(start, 300).await;
    release.notify_one();
    let deadline = start + Duration::from_secs(400);
    while consumer.report().acked == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never acked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (still, ended) = stall_lines(&capture);
    assert_eq!((still.len(), ended.len()), (3, 1), "{:#?}", capture.lines());
    let end = ended[0].context();
    for needle in [
        "subscriber=stuck-worker",
        &format!("event_id={:?}", event.id),
        "ran_for=300",
        "outcome=ok",
    ] {
        assert!(end.contains(needle), "no {needle} in: {end}");
    }
    assert_eq!(stalls(), 1);
    let report = consumer.shutdown(Duration::from_secs(1)).await;
    assert_eq!((report.acked, report.retried), (1, 0), "{report:?}");
}

/// A handler with no time limit that finishes at 59 s is never reported,
/// and counts no stall.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_handler_with_no_time_limit_finishing_before_the_threshold_is_not_reported() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bus = EventBus::new(MemoryProvider::default());
    let sub = bus.subscribe("events.slow.>").await.unwrap();
    let consumer = bus
        .consume_subscription(
            sub,
            SubscribeOptions::default(),
            |_r: ReceivedEvent| async {
                tokio::time::sleep(Duration::from_secs(59)).await;
                Ok::<(), BoxError>(())
            },
            ConsumerConfig::default().handler_timeout(None),
        )
        .unwrap();
    bus.publish("slow", "t", "s", "src", json!(1))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    while consumer.report().acked == 0 {
        assert!(start.elapsed() < Duration::from_secs(120), "never acked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // well past the threshold of a run that would still be going
    until(start, 200).await;
    let (still, ended) = stall_lines(&capture);
    assert!(
        still.is_empty() && ended.is_empty(),
        "{:#?}",
        capture.lines()
    );
    assert_eq!(bus.metrics().snapshot().handler_stalls, 0);
    consumer.shutdown(Duration::from_secs(1)).await;
}

/// A stalled handler abandoned at a shutdown deadline ends with a line
/// saying it was aborted, counted once as a stall.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stalled_handler_aborted_at_shutdown_says_so() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bus = EventBus::new(MemoryProvider::default());
    let sub = bus.subscribe("events.hang.>").await.unwrap();
    let consumer = bus
        .consume_subscription(
            sub,
            SubscribeOptions::default(),
            |_r: ReceivedEvent| async {
                std::future::pending::<()>().await;
                Ok::<(), BoxError>(())
            },
            ConsumerConfig::default().handler_timeout(None),
        )
        .unwrap();
    bus.publish("hang", "t", "s", "src", json!(1))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    until(start, 61).await;
    assert_eq!(stall_lines(&capture).0.len(), 1, "{:#?}", capture.lines());
    let report = consumer.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.aborted, 1, "{report:?}");
    let (still, ended) = stall_lines(&capture);
    assert_eq!((still.len(), ended.len()), (1, 1), "{:#?}", capture.lines());
    let end = ended[0].context();
    assert!(
        end.contains("outcome=aborted") && end.contains("ran_for=62"),
        "{end}"
    );
    assert_eq!(bus.metrics().snapshot().handler_stalls, 1);
}

/// A limit above the threshold is watched until it cancels the handler:
/// a `WARN` at 60 s, then the end line at 90 s saying it failed (timed
/// out).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_handler_limit_above_the_threshold_is_watched_until_it_cancels() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bus = EventBus::new(MemoryProvider::default());
    let sub = bus.subscribe("events.hang.>").await.unwrap();
    let consumer = bus
        .consume_subscription(
            sub,
            SubscribeOptions::default(),
            |_r: ReceivedEvent| async {
                std::future::pending::<()>().await;
                Ok::<(), BoxError>(())
            },
            ConsumerConfig::default().handler_timeout(Some(Duration::from_secs(90))),
        )
        .unwrap();
    bus.publish("hang", "t", "s", "src", json!(1))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    until(start, 61).await;
    assert_eq!(stall_lines(&capture).0.len(), 1, "{:#?}", capture.lines());
    until(start, 91).await;
    let (still, ended) = stall_lines(&capture);
    assert_eq!((still.len(), ended.len()), (1, 1), "{:#?}", capture.lines());
    let end = ended[0].context();
    assert!(
        end.contains("outcome=failed") && end.contains("timed out after 90s"),
        "{end}"
    );
    assert_eq!(bus.metrics().snapshot().handler_stalls, 1);
    consumer.shutdown(Duration::from_secs(1)).await;
}

/// A DLQ handler that waits to be released before it takes a dead letter.
struct HangingDlq {
    started: tokio::sync::mpsc::UnboundedSender<()>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl DlqHandler for HangingDlq {
    async fn handle(&self, _dead: event_core::DeadLetterEvent) -> event_core::Result<()> {
        let _ = self.started.send(());
        self.release.notified().await;
        Ok(())
    }
    async fn list(&self, _limit: usize) -> event_core::Result<Vec<event_core::DeadLetterEvent>> {
        Ok(Vec::new())
    }
    async fn count(&self) -> event_core::Result<usize> {
        Ok(0)
    }
}

/// A DLQ handler that hangs with no `dlq_timeout` is reported as a hung
/// handler is: a `WARN` at 60 s naming it as the DLQ handler and the event,
/// one count in `handler_stalls`, and the end line once it takes the dead
/// letter.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dlq_call_with_no_time_limit_that_hangs_is_reported() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let provider = MemoryProvider::default();
    let bus = EventBus::new(provider.clone());
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    bus.set_dlq_handler(Arc::new(HangingDlq {
        started: started_tx,
        release: release.clone(),
    }));
    let options = SubscribeOptions {
        max_deliver: Some(1),
        ..SubscribeOptions::default()
    };
    let sub = event_core::EventProvider::subscribe_durable_with_options(
        &provider,
        "dlq-stall",
        "events.bad.>",
        &options,
    )
    .await
    .unwrap();
    let consumer = bus
        .consume_subscription(
            sub,
            options,
            |_r: ReceivedEvent| async { Err::<(), BoxError>("refused".into()) },
            ConsumerConfig::default().dlq_timeout(None),
        )
        .unwrap();
    let event = Event::new("events.bad.one", "bad", "s", "src", json!(1));
    bus.publish_event(&event).await.unwrap();
    started.recv().await.unwrap();
    let start = tokio::time::Instant::now();
    until(start, 59).await;
    assert!(stall_lines(&capture).0.is_empty());
    until(start, 61).await;
    let (still, _) = stall_lines(&capture);
    assert_eq!(still.len(), 1, "{:#?}", capture.lines());
    let first = still[0].context();
    for needle in [
        "DLQ handler still running",
        &format!("event_id={:?}", event.id),
        "subject=\"events.bad.one\"",
        "deliveries=1",
        "running_for=60",
    ] {
        assert!(first.contains(needle), "no {needle} in: {first}");
    }
    assert_eq!(bus.metrics().snapshot().handler_stalls, 1);
    release.notify_one();
    while consumer.report().dead_lettered == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (still, ended) = stall_lines(&capture);
    assert_eq!((still.len(), ended.len()), (1, 1), "{:#?}", capture.lines());
    assert!(
        ended[0].fields.contains("stalled DLQ handler ended after")
            && ended[0].fields.contains("outcome=ok"),
        "{:?}",
        ended[0]
    );
    assert_eq!(bus.metrics().snapshot().handler_stalls, 1);
    consumer.shutdown(Duration::from_secs(1)).await;
}

/// A dead letter the bus cannot read (refused as plaintext: a DLQ handler
/// without an encryptor under `PlaintextPolicy::Refuse`; or encrypted under
/// a key the bus does not hold) reaching a subscriber whose filter covers
/// the DLQ subjects is not dead-lettered again: it is in the DLQ already,
/// and a new letter would only nest it (each one in turn unreadable, so
/// the DLQ filled with letters nesting all the earlier ones until the
/// payload depth limit). It is terminated, counted in `dlq_dropped` and
/// `ConsumerReport::terminated`, and logged as a `WARN` naming it.
#[tokio::test(flavor = "current_thread")]
async fn an_unreadable_dead_letter_is_terminated_not_dead_lettered_again() {
    for refuse in [true, false] {
        let capture = Arc::new(Capture::at(Level::INFO));
        let _guard = tracing::subscriber::set_default(capture.clone());
        let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
        let bus = EventBus::from_arc(provider.clone());
        bus.set_encryptor(Arc::new(Aes256GcmEncryptor::new("k1", &KEY)));
        let dlq = ProviderDlqHandler::new(provider.clone());
        let (dlq, event) = if refuse {
            bus.set_plaintext_policy(PlaintextPolicy::Refuse);
            let plain = Event::new("events.pay.x", "pay", "s", "src", json!({"refund": 1}));
            (dlq, plain)
        } else {
            // the DLQ encrypts under a key the bus does not hold, and so
            // does the writer of the event
            let other = Arc::new(Aes256GcmEncryptor::new("k2", &OTHER_KEY));
            let mut sealed = Event::new("events.pay.x", "pay", "s", "src", json!(null));
            sealed.payload = other.encrypt(&sealed.id, &json!({"refund": 1})).unwrap();
            (dlq.with_encryptor(other), sealed)
        };
        bus.set_dlq_handler(Arc::new(dlq));
        bus.update_subscription(SubscriptionFilter {
            subscriber_id: "w".into(),
            subjects: vec!["events.>".into()],
            durable: true,
        })
        .await
        .unwrap();
        provider.publish(&event).await.unwrap();
        let consumer = common::succeeding_consumer(&bus, "w").await;
        let start = Instant::now();
        loop {
            let report = consumer.report();
            if report.dead_lettered + report.terminated >= 2 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{report:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let report = consumer.shutdown(Duration::from_secs(1)).await;
        assert_eq!(
            (report.dead_lettered, report.terminated),
            (1, 1),
            "refuse {refuse}: {report:?}"
        );
        let stored = provider.history(None, 10).await.unwrap();
        assert_eq!(stored.len(), 2, "refuse {refuse}: one event, one letter");
        let letter = &stored[0];
        assert_eq!(letter.event_type, DEAD_LETTER_EVENT_TYPE);
        assert_eq!(letter.metadata["a3s.original_id"], event.id);
        let metrics = bus.metrics().snapshot();
        assert_eq!(
            (
                metrics.dlq_total,
                metrics.dlq_dropped,
                metrics.decrypt_errors
            ),
            (1, 1, 2),
            "refuse {refuse}: {metrics:?}"
        );
        let lines = capture.lines();
        let about: Vec<_> = lines
            .iter()
            .filter(|l| l.level <= Level::WARN && l.fields.contains(&letter.id))
            .collect();
        assert_eq!(about.len(), 1, "refuse {refuse}: {lines:#?}");
        assert_eq!(about[0].level, Level::WARN, "{:?}", about[0]);
        assert!(
            about[0].fields.contains("not dead-lettered again"),
            "{:?}",
            about[0]
        );
    }
}

/// A re-drive through a bus refusing plaintext skips a dead letter stored
/// in plaintext with a `WARN` naming the letter, saying why and what to do
/// if it is genuine.
#[tokio::test(flavor = "current_thread")]
async fn a_plaintext_letter_skipped_by_a_refusing_redrive_is_a_warning_naming_it() {
    let capture = Arc::new(Capture::at(Level::INFO));
    let _guard = tracing::subscriber::set_default(capture.clone());
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let encryptor = Arc::new(Aes256GcmEncryptor::new("k1", &KEY));
    bus.set_encryptor(encryptor.clone());
    bus.set_plaintext_policy(PlaintextPolicy::Refuse);
    let dlq = ProviderDlqHandler::new(provider.clone()).with_encryptor(encryptor);
    let forged = Event::new(
        "events.orders.refund",
        "orders",
        "s",
        "src",
        json!({"n": 1}),
    );
    let carrier = common::planted_dead_letter(forged);
    provider.publish(&carrier).await.unwrap();
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (0, 1));
    assert_eq!(bus.metrics().snapshot().decrypt_errors, 1);
    let lines = capture.lines();
    let about: Vec<_> = lines
        .iter()
        .filter(|l| l.level <= Level::WARN && l.fields.contains(&carrier.id))
        .collect();
    assert_eq!(about.len(), 1, "{lines:#?}");
    let line = about[0];
    assert_eq!(line.level, Level::WARN, "{line:?}");
    for what in [
        "stored in plaintext",
        "PlaintextPolicy::Refuse",
        "forged",
        "PlaintextPolicy::Accept",
    ] {
        assert!(line.fields.contains(what), "no '{what}': {line:?}");
    }
}
