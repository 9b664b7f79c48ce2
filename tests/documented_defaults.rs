//! Every default the documentation states, checked against the `Default`
//! impls (and the constructors documented as defaults). Each assertion names
//! where the value is documented; a change to a default fails here until the
//! docs that promise it are changed too.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

#[test]
fn event_core_options() {
    use event_core::{DeliverPolicy, Event, PublishOptions, SubscribeOptions};

    // `PublishOptions`: "Defaults: dedup by the event id, no concurrency
    // check, the provider's timeout."
    let publish = PublishOptions::default();
    assert_eq!(publish.msg_id, None);
    assert_eq!(publish.expected_sequence, None);
    assert_eq!(publish.timeout, None);
    let event = Event::new("events.a.b", "a", "s", "src", serde_json::json!({}));
    assert_eq!(publish.dedup_id(&event), event.id);

    // `SubscribeOptions` field docs; `EventProvider` contract: a durable
    // "on creation ... starts per deliver_policy (default `All`)"; the ack
    // wait of conforming providers is 30 s.
    let subscribe = SubscribeOptions::default();
    assert_eq!(subscribe.max_deliver, None, "unlimited");
    assert!(subscribe.backoff.is_empty(), "ack_wait each time");
    assert_eq!(subscribe.max_ack_pending, None, "the provider default");
    assert_eq!(subscribe.deliver_policy, DeliverPolicy::All);
    assert_eq!(subscribe.ack_wait, None, "the provider default");
    assert_eq!(SubscribeOptions::DEFAULT_ACK_WAIT, Duration::from_secs(30));
    assert_eq!(subscribe.redelivery_delay(1), Duration::from_secs(30));

    // The original JSON shape (DESIGN.md, README): `eventType` default "",
    // `version` default 1, `metadata` default empty.
    let old: Event = serde_json::from_value(serde_json::json!({
        "id": "evt-1", "subject": "events.a.b", "category": "a", "payload": {},
        "summary": "s", "source": "src", "timestamp": 1
    }))
    .unwrap();
    assert_eq!(old.event_type, "");
    assert_eq!(old.version, 1);
    assert!(old.metadata.is_empty());
}

#[test]
fn event_memory_config_and_limits() {
    use event_core::EventProvider;
    use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};

    // `MemoryConfig` (as in the original README) and the doc example of
    // `docs/deployment.md`.
    let config = MemoryConfig::default();
    assert_eq!(config.subject_prefix, "events");
    assert_eq!(config.max_events, 100_000);
    assert_eq!(config.channel_capacity, 10_000);

    // `MemoryLimits` field docs.
    let limits = MemoryLimits::default();
    assert_eq!(limits.max_payload, 1024 * 1024, "1 MiB, as NATS");
    assert_eq!(
        limits.duplicate_window,
        Duration::from_secs(120),
        "2 minutes, as JetStream"
    );
    assert_eq!(limits.max_dedup_entries, 100_000);
    assert_eq!(limits.default_ack_wait, Duration::from_secs(30));
    assert_eq!(limits.default_max_ack_pending, 1_000);
    assert_eq!(limits.stream_name, "memory");

    // `EventProvider::subject_prefix`: "`events` unless configured".
    assert_eq!(MemoryProvider::default().subject_prefix(), "events");
}

#[test]
fn event_nats_config_and_options() {
    use event_nats::{
        DiscardPolicy, ExistingStream, NatsConfig, NatsOptions, StorageType, TlsOptions,
    };

    // The configuration table of the `event-nats` crate docs.
    let config = NatsConfig::default();
    assert_eq!(config.url, "nats://127.0.0.1:4222");
    assert_eq!(config.token, None);
    assert_eq!(config.credentials_path, None);
    assert_eq!(config.stream_name, "A3S_EVENTS");
    assert_eq!(config.subject_prefix, "events");
    assert_eq!(config.storage, StorageType::File);
    assert_eq!(config.max_events, 100_000);
    assert_eq!(config.max_age_secs, 7 * 24 * 3600, "7 days");
    assert_eq!(config.max_bytes, 0, "unlimited");
    assert_eq!(config.connect_timeout_secs, 5);
    assert_eq!(config.request_timeout_secs, 10);
    assert_eq!(StorageType::default(), StorageType::File);

    let options = NatsOptions::default();
    assert_eq!(options.user, None);
    assert_eq!(options.password, None);
    assert_eq!(options.nkey_seed, None);
    assert_eq!(options.tls, TlsOptions::default());
    assert!(!options.tls.require);
    assert_eq!(options.tls.ca_file, None);
    assert_eq!(options.tls.client_cert, None);
    assert_eq!(options.client_name, None);
    assert_eq!(
        options.duplicate_window,
        Duration::from_secs(120),
        "2 min (also docs/deployment.md)"
    );
    assert_eq!(options.replicas, 1);
    assert_eq!(options.discard, DiscardPolicy::Old);
    assert_eq!(DiscardPolicy::default(), DiscardPolicy::Old);
    assert_eq!(options.max_inflight_acks, 256);
    assert_eq!(options.max_prefetch, 256);
    assert_eq!(
        options.ping_interval,
        Duration::from_secs(20),
        "20 s (also docs/deployment.md)"
    );
    // "what connecting does to an existing stream": adopt it as it is
    assert_eq!(options.existing_stream, ExistingStream::Adopt);
    assert_eq!(ExistingStream::default(), ExistingStream::Adopt);
}

#[tokio::test]
async fn event_bus_consumer_and_dlq() {
    use a3s_event::consumer::ConsumerConfig;
    use a3s_event::dlq::{MemoryDlqHandler, ProviderDlqHandler};
    use event_core::{DeadLetterEvent, DlqHandler, Event};

    // `ConsumerConfig` field docs.
    let consumer = ConsumerConfig::default();
    assert_eq!(consumer.concurrency, 16);
    assert_eq!(consumer.handler_timeout, Some(Duration::from_secs(30)));
    assert_eq!(consumer.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(consumer.dlq_attempts, 5);
    assert_eq!(consumer.dlq_timeout, Some(Duration::from_secs(30)));
    // `STALL_THRESHOLD` docs, `handler_timeout` docs and deployment.md
    // ("Consumers", "Operations"): a run with no limit is reported at 60 s.
    assert_eq!(
        a3s_event::consumer::STALL_THRESHOLD,
        Duration::from_secs(60)
    );
    // `DEFAULT_STATE_STORE_TIMEOUT` docs and deployment.md "Subscription
    // state": 30 s per load and save.
    assert_eq!(
        a3s_event::state::DEFAULT_STATE_STORE_TIMEOUT,
        Duration::from_secs(30)
    );

    // `MemoryDlqHandler::default`: "Capacity 10,000" (the oldest is evicted
    // beyond it).
    let dlq = MemoryDlqHandler::default();
    for n in 0..10_001 {
        let event = Event::new(
            "events.a.b",
            "a",
            format!("{n}"),
            "src",
            serde_json::json!({}),
        );
        dlq.handle(DeadLetterEvent::new(event, "failed"))
            .await
            .unwrap();
    }
    assert_eq!((dlq.len(), dlq.evicted()), (10_000, 1));

    // `ProviderDlqHandler::new`: "A DLQ on `provider` under `{prefix}.dlq.>`".
    let provider = Arc::new(event_memory::MemoryProvider::default());
    assert_eq!(
        ProviderDlqHandler::new(provider).filter_subject(),
        "events.dlq.>"
    );
}

#[test]
fn event_routing_broker_and_delivery() {
    use event_routing::{BackoffPolicy, BrokerConfig, DeliverySpec, QueueFullPolicy};

    // `BrokerConfig` field docs.
    let broker = BrokerConfig::default();
    assert_eq!(broker.queue_capacity, 1024);
    assert_eq!(broker.workers, 64);
    assert_eq!(broker.full_policy, QueueFullPolicy::Wait);
    assert_eq!(QueueFullPolicy::default(), QueueFullPolicy::Wait);
    assert_eq!(broker.feed_concurrency, 16);
    assert_eq!(broker.feed_retry_delay, Duration::from_secs(1));
    assert_eq!(broker.max_hops, 8);
    assert_eq!(broker.dispatch_linger, Duration::from_millis(1));
    // `LOSS_WARN_INTERVAL` docs and docs/deployment.md ("later ones `DEBUG`
    // for 60 s").
    assert_eq!(event_routing::LOSS_WARN_INTERVAL, Duration::from_secs(60));

    // `DeliverySpec`: "Defaults: no retries, exponential backoff from 100 ms
    // capped at 30 s, `Retry-After` honoured up to 30 s, a 30 s timeout, no
    // dead-letter sink." (the 30 s timeout is also the one docs/deployment.md
    // names for HTTP sinks)
    for spec in [DeliverySpec::default(), DeliverySpec::new()] {
        assert_eq!(spec.retries, 0);
        assert_eq!(spec.backoff_policy, BackoffPolicy::Exponential);
        assert_eq!(spec.backoff_delay, Duration::from_millis(100));
        assert_eq!(spec.backoff_cap, Duration::from_secs(30));
        assert_eq!(spec.retry_after_max, Duration::from_secs(30));
        assert_eq!(spec.timeout, Some(Duration::from_secs(30)));
        assert!(spec.dead_letter_sink.is_none());
    }
    assert_eq!(BackoffPolicy::default(), BackoffPolicy::Exponential);
}

#[test]
fn event_schema_registry() {
    use event_core::{Event, SchemaValidator};
    use event_schema::{
        Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry, UnknownTypePolicy,
        UntypedPolicy,
    };

    // `MemorySchemaRegistry::new`: "unknown types and untyped events
    // allowed, default compatibility `BACKWARD`" (also the crate docs and
    // the `SchemaRegistry` contract).
    assert_eq!(UnknownTypePolicy::default(), UnknownTypePolicy::Allow);
    assert_eq!(UntypedPolicy::default(), UntypedPolicy::Allow);
    assert_eq!(Compatibility::default(), Compatibility::Backward);
    for registry in [MemorySchemaRegistry::new(), MemorySchemaRegistry::default()] {
        assert_eq!(
            registry.compatibility("order.created").unwrap(),
            Compatibility::Backward
        );
        let unknown = Event::typed(
            "events.shop.order",
            "shop",
            "order.created",
            1,
            "s",
            "shop",
            serde_json::json!({}),
        );
        SchemaValidator::validate(&registry, &unknown).unwrap();
        let untyped = Event::new(
            "events.shop.order",
            "shop",
            "s",
            "shop",
            serde_json::json!({}),
        );
        SchemaValidator::validate(&registry, &untyped).unwrap();
        // and the default level is enforced: v2 may not require a new field
        registry
            .register(EventSchema::new("order.created", 1).with_required_fields(["id"]))
            .unwrap();
        assert!(
            registry
                .register(EventSchema::new("order.created", 2).with_required_fields(["id", "new"]))
                .is_err()
        );
    }
}

#[test]
fn event_crypto_envelope() {
    use event_core::EventEncryptor;
    use event_crypto::{
        Aes256GcmEncryptor, EncryptedPayload, EncryptionKey, FORMAT_VERSION, KEY_LEN, NONCE_LEN,
        TAG_LEN,
    };

    // The crate docs' envelope: format version 1, a 12-byte nonce, a 16-byte
    // tag, 32-byte (AES-256) keys.
    assert_eq!(
        (FORMAT_VERSION, NONCE_LEN, TAG_LEN, KEY_LEN),
        (1, 12, 16, 32)
    );
    let encryptor = Aes256GcmEncryptor::with_key("k1", EncryptionKey::generate().unwrap());
    let payload = serde_json::json!({"a": 1});
    let envelope = encryptor.encrypt("evt-1", &payload).unwrap();
    let parsed = EncryptedPayload::from_value(&envelope).unwrap();
    assert_eq!(parsed.key_id, "k1");
    assert_eq!(envelope["version"], 1);
    assert_eq!(envelope["encrypted"], true);

    // docs/deployment.md ("Sizing"): encryption makes a payload's JSON a
    // third larger plus about 110 bytes of envelope: 1 KB becomes 1.45 KB,
    // 10 KB 13.45 KB (a key id of 7 characters, as "2025-01").
    let encryptor = Aes256GcmEncryptor::with_key("2025-01", EncryptionKey::generate().unwrap());
    for (plain_len, documented) in [(1_000usize, 1_450usize), (10_000, 13_450)] {
        // a JSON string whose compact encoding is `plain_len` bytes
        let payload = serde_json::Value::String("x".repeat(plain_len - 2));
        assert_eq!(serde_json::to_vec(&payload).unwrap().len(), plain_len);
        let envelope = encryptor.encrypt("evt-1", &payload).unwrap();
        let size = serde_json::to_vec(&envelope).unwrap().len();
        let overhead = size - plain_len * 4 / 3;
        assert!((100..=120).contains(&overhead), "{plain_len}: {size} bytes");
        assert!(size.abs_diff(documented) <= 10, "{plain_len}: {size} bytes");
    }
}

#[test]
fn event_cloudevents_mode() {
    // Binary mode is the default of every binding.
    assert_eq!(
        event_cloudevents::Mode::default(),
        event_cloudevents::Mode::Binary
    );
}

#[test]
fn event_routing_webhook_timeouts() {
    use event_routing::http::{
        DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
        DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_TIMEOUT,
    };

    // docs/deployment.md ("Process memory" table, "Webhook source" and
    // "Shutdown"): `with_idle_timeout` (30 s), `with_body_timeout` (30 s),
    // `with_write_timeout` (30 s), `with_max_connections` (512),
    // `with_body_limit` (2 MiB), `with_shutdown_grace` (10 s).
    assert_eq!(DEFAULT_BODY_LIMIT, 2 * 1024 * 1024);
    assert_eq!(DEFAULT_IDLE_TIMEOUT, Duration::from_secs(30));
    assert_eq!(DEFAULT_BODY_TIMEOUT, Duration::from_secs(30));
    assert_eq!(DEFAULT_WRITE_TIMEOUT, Duration::from_secs(30));
    assert_eq!(DEFAULT_MAX_CONNECTIONS, 512);
    assert_eq!(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs(10));
}

#[test]
fn event_core_payload_depth() {
    // `MAX_PAYLOAD_DEPTH`: "126 levels" (docs/custom-providers.md names it).
    assert_eq!(event_core::MAX_PAYLOAD_DEPTH, 126);
}

#[test]
fn event_bus_prometheus_names_and_buckets() {
    use a3s_event::metrics::{EventMetrics, LATENCY_BUCKETS, LatencyBuckets};

    // Every metric the table of docs/deployment.md ("Operations") names is
    // exported under that name.
    let metrics = EventMetrics::new();
    metrics.record_publish(Duration::from_micros(5));
    let text = metrics.snapshot().to_prometheus();
    for name in [
        "a3s_event_publish_total",
        "a3s_event_publish_errors_total",
        "a3s_event_router_errors_total",
        "a3s_event_handled_total",
        "a3s_event_settle_errors_total",
        "a3s_event_dlq_total",
        "a3s_event_dlq_errors_total",
        "a3s_event_dlq_dropped_total",
        "a3s_event_dlq_unsettled_total",
        "a3s_event_consumer_aborted_total",
        "a3s_event_handler_stalls_total",
        "a3s_event_state_save_errors_total",
        "a3s_event_publish_duration_seconds",
        "a3s_event_publish_latency_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is not exported:\n{text}"
        );
    }

    // The histogram's `le` bounds: "2^k - 1 ns (about 1 µs to 34 s,
    // doubling)" (docs/deployment.md, `to_prometheus` docs).
    let first = LatencyBuckets::bound_ns(0);
    let last = LatencyBuckets::bound_ns(LATENCY_BUCKETS - 1);
    assert_eq!(first, (1 << 10) - 1, "about 1 µs");
    assert_eq!(last, (1 << 35) - 1, "about 34 s");
    for k in 1..LATENCY_BUCKETS {
        assert_eq!(
            LatencyBuckets::bound_ns(k) + 1,
            2 * (LatencyBuckets::bound_ns(k - 1) + 1)
        );
    }
    assert!(text.contains("a3s_event_publish_duration_seconds_bucket{le=\"0.000001023\"} "));
    assert!(text.contains("a3s_event_publish_duration_seconds_bucket{le=\"34.359738367\"} "));
}

#[tokio::test]
async fn event_routing_sink_dlq_history() {
    use event_core::{DeadLetterEvent, DlqHandler, Event};
    use event_routing::{CollectorSink, SinkDlqHandler};

    // `SinkDlqHandler`: "`list` returns the most recent dead letters this
    // handler forwarded (at most `with_history`, default 1,000); `count` is
    // how many it forwarded in total."
    let sink = Arc::new(CollectorSink::new("dlq"));
    let dlq = SinkDlqHandler::new(sink.clone(), "events.dlq").unwrap();
    for n in 0..1_001 {
        let event = Event::new(
            "events.a.b",
            "a",
            format!("{n}"),
            "src",
            serde_json::json!({}),
        );
        dlq.handle(DeadLetterEvent::new(event, "failed"))
            .await
            .unwrap();
    }
    assert_eq!(sink.len(), 1_001);
    assert_eq!(dlq.count().await.unwrap(), 1_001);
    let listed = dlq.list(usize::MAX).await.unwrap();
    assert_eq!(listed.len(), 1_000);
    assert_eq!(listed[0].event.summary, "1000", "newest first");
}

#[test]
fn event_bus_durable_consumer_name() {
    use event_bus::durable_consumer_name;

    // `durable_consumer_name`: "`{subscriber}-{subject}-{hash}` ... each
    // part at most 48 bytes ... `hash` is 16 hex digits ... stable across
    // restarts and releases" (a changed name orphans every stored durable).
    let name = durable_consumer_name("analyst", "events.market.>");
    assert_eq!(name, "analyst-events_market__-02a64a7923280285");
    let long = durable_consumer_name(&"s".repeat(100), &"t".repeat(100));
    let parts: Vec<&str> = long.split('-').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(
        (parts[0].len(), parts[1].len(), parts[2].len()),
        (48, 48, 16)
    );
    assert!(parts[2].chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn event_cloudevents_reply_limit() {
    // `MAX_REPLY_SIZE`: "2 MiB".
    assert_eq!(
        event_cloudevents::http::client::MAX_REPLY_SIZE,
        2 * 1024 * 1024
    );
}

/// Every metric name the documentation spells out in full (`a3s_event_...`,
/// `a3s_broker_...`, `a3s_feed_...`, `a3s_webhook_...` in README.md,
/// docs/deployment.md and the crate docs) is one the exporters write: a
/// dashboard or alert built from the docs finds its series. Templated names
/// (`a3s_broker_trigger_<counter>_total`, `a3s_feed_{received,...}_total`)
/// are expanded by hand below.
#[test]
fn every_metric_name_the_docs_spell_is_exported() {
    use a3s_event::metrics::EventMetrics;
    use a3s_event::routing::http::WebhookStats;
    use a3s_event::routing::{Broker, FeedStats};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md"), root.join("docs/deployment.md")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        docs.push(entry.unwrap().path().join("src/lib.rs"));
    }
    docs.push(root.join("src/lib.rs"));

    let metrics = EventMetrics::new();
    metrics.record_publish(Duration::from_micros(5));
    let exposition = [
        metrics.snapshot().to_prometheus(),
        Broker::new().metrics().to_prometheus(),
        FeedStats::default().to_prometheus(),
        WebhookStats::default().to_prometheus(),
    ]
    .join("\n");
    // a family declared by `# TYPE`, or one of its samples (`_bucket`, ...)
    let exported = |name: &str| {
        exposition.lines().any(|line| {
            line.starts_with(&format!("# TYPE {name} "))
                || line.starts_with(&format!("{name} "))
                || line.starts_with(&format!("{name}{{"))
        })
    };

    let mut named = std::collections::BTreeSet::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for prefix in ["a3s_event_", "a3s_broker_", "a3s_feed_", "a3s_webhook_"] {
            for (at, _) in text.match_indices(prefix) {
                // a whole identifier, not the crate name `a3s_event`
                if text[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
                {
                    continue;
                }
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                // a template (`a3s_broker_*`, `a3s_feed_{...}`): expanded below
                if !name.ends_with('_') {
                    named.insert((name, doc.display().to_string()));
                }
            }
        }
    }
    // the templates, expanded as the docs list them
    for counter in [
        "received", "acked", "naked", "dropped", "errors", "aborted", "lagged",
    ] {
        named.insert((format!("a3s_feed_{counter}_total"), "feed template".into()));
    }
    for counter in ["accepted", "refused", "bad_requests", "unauthorized"] {
        named.insert((
            format!("a3s_webhook_{counter}_total"),
            "webhook template".into(),
        ));
    }
    assert!(named.len() > 30, "names found: {named:?}");
    let missing: Vec<String> = named
        .iter()
        .filter(|(name, _)| !exported(name))
        .map(|(name, doc)| format!("{name} ({doc})"))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exported:\n{}\nexported:\n{exposition}",
        missing.join("\n")
    );
}

/// The public limits and grace periods whose values the docs state
/// (each constant's own doc comment, and docs/deployment.md "Shutdown"
/// for the two close graces).
#[test]
fn documented_limits_and_graces() {
    // "500 ms" (runner docs; deployment.md: "`SHUTDOWN_CLOSE_GRACE` (500 ms)")
    assert_eq!(
        a3s_event::consumer::SHUTDOWN_CLOSE_GRACE,
        Duration::from_millis(500)
    );
    // "500 ms" (feed docs; deployment.md: "`FEED_CLOSE_GRACE` (500 ms)")
    assert_eq!(
        a3s_event::routing::FEED_CLOSE_GRACE,
        Duration::from_millis(500)
    );
    // "Default 8" for max_hops, "never deeper than MAX_BROKER_NESTING"
    assert_eq!(a3s_event::routing::MAX_BROKER_NESTING, 32);
    // "10 s"; "10 redirects"; binary-mode attributes, 16 Ki
    use a3s_event::cloudevents::http::{MAX_BINARY_ATTRIBUTES, client};
    assert_eq!(client::REPLY_WAIT, Duration::from_secs(10));
    assert_eq!(client::MAX_REDIRECTS, 10);
    assert_eq!(MAX_BINARY_ATTRIBUTES, 16 * 1024);
    // subjects and consumer names: "in bytes", 1024 and 255
    assert_eq!(a3s_event::subject::MAX_SUBJECT_LEN, 1024);
    assert_eq!(a3s_event::subject::MAX_CONSUMER_NAME_LEN, 255);
    // keep-alive clock: checks "several times a second" (deployment.md,
    // "Changing a shared durable's options"), 1 s with no known wait
    assert_eq!(
        a3s_event::KeepAliveClock::LIVE_WAIT_CHECK,
        Duration::from_millis(250)
    );
    assert_eq!(
        a3s_event::KeepAliveClock::UNKNOWN_WAIT_PERIOD,
        Duration::from_secs(1)
    );
    // "practically never": a century for waits, a year for pings
    assert!(a3s_event::provider::LONGEST_WAIT >= Duration::from_secs(100 * 365 * 24 * 3600));
    use a3s_event::provider::nats::{DEFAULT_PING_INTERVAL, MAX_PING_INTERVAL};
    assert_eq!(DEFAULT_PING_INTERVAL, Duration::from_secs(20));
    assert_eq!(MAX_PING_INTERVAL, Duration::from_secs(365 * 24 * 3600));
}

/// `Capabilities` defaults as docs/custom-providers.md (section 4) and the
/// field docs state them: a 1 MiB payload limit, a 500 ms ack wait, a 10 s
/// receive timeout (failures read "no event within 10s"), `Lagged`
/// reported, a 50 ms clock tolerance, stamps with the test machine's clock.
#[test]
fn conformance_capabilities() {
    use event_core::conformance::Capabilities;
    let caps = Capabilities::default();
    assert_eq!(caps.max_payload, Some(1024 * 1024));
    assert_eq!(caps.ack_wait, Duration::from_millis(500));
    assert_eq!(caps.receive_timeout, Duration::from_secs(10));
    assert!(caps.reports_lagged);
    assert_eq!(caps.clock_tolerance, Duration::from_millis(50));
    assert!(caps.stamps_with_test_clock);
}

/// docs/deployment.md lists the answers `a3s_webhook_bad_requests_total`
/// counts: each status its HELP (and `WebhookStats::bad_requests`) names.
#[test]
fn the_guide_lists_every_status_the_webhook_counts_as_a_bad_request() {
    use a3s_event::routing::http::WebhookStats;

    let exposition = WebhookStats::default().to_prometheus();
    let help = exposition
        .lines()
        .find(|line| line.starts_with("# HELP a3s_webhook_bad_requests_total "))
        .unwrap();
    // the statuses, written `(400)`
    let statuses: Vec<&str> = help
        .match_indices('(')
        .filter_map(|(at, _)| help.get(at + 1..at + 5))
        .filter(|s| s.ends_with(')') && s[..3].chars().all(|c| c.is_ascii_digit()))
        .map(|s| &s[..3])
        .collect();
    assert!(statuses.len() >= 4, "statuses in {help:?}: {statuses:?}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/deployment.md")).unwrap();
    let start = guide
        .find("`bad_requests` counting requests answered")
        .unwrap();
    let end = start + guide[start..].find("before reaching").unwrap();
    let listed = &guide[start..end];
    let missing: Vec<&&str> = statuses
        .iter()
        .filter(|status| !listed.contains(&format!("`{status}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/deployment.md's bad_requests list {listed:?} misses {missing:?} (HELP: {help})"
    );
}
