//! The code blocks of the original `a3s-event` 0.3 README, compiled (and run
//! where they can be) against this crate. Each block is copied verbatim
//! between `// --- README` markers; the lines around it only supply what the
//! README leaves implicit (a runtime, a `payload`, an `event`, a `process`
//! function, a `RedisConfig`).
//!
//! The "Custom Providers" block implements `EventProvider` with `todo!()`
//! bodies, as the README does: it is compiled, and its use with the bus is
//! compiled, but not run.
#![allow(unused_variables, clippy::todo)]

use std::time::Duration;

// --- README: Overview / Basic Usage -----------------------------------------
mod basic_usage {
    use a3s_event::provider::memory::MemoryProvider;
    use a3s_event::{Event, EventBus};

    pub async fn main() -> a3s_event::Result<()> {
        // Create an event bus with any provider
        let bus = EventBus::new(MemoryProvider::default());

        // Publish an event
        let event = bus
            .publish(
                "market",
                "forex.usd_cny",
                "USD/CNY broke through 7.35",
                "reuters",
                serde_json::json!({"rate": 7.3521}),
            )
            .await?;

        println!("Published: {}", event.id);

        // Query history
        let events = bus.list_events(Some("market"), 50).await?;
        println!("Market events: {}", events.len());

        assert_eq!(events.len(), 1);
        let _: &Event = &events[0];
        Ok(())
    }
}

#[tokio::test]
async fn readme_basic_usage() {
    basic_usage::main().await.unwrap();
}

#[test]
fn readme_memory_provider() {
    // --- README: Memory Provider ---------------------------------------------
    use a3s_event::provider::memory::{MemoryConfig, MemoryProvider};

    let provider = MemoryProvider::new(MemoryConfig {
        subject_prefix: "events".to_string(),
        max_events: 100_000,
        channel_capacity: 10_000,
    });

    // Or use defaults
    let provider = MemoryProvider::default();
    // --- end -------------------------------------------------------------------
    assert_eq!(provider.config().max_events, 100_000);
}

/// The one place where the README's shape and ours differ: in 0.3
/// `MemoryProvider::new` returned the provider; ours validates the config
/// (zero capacities, a bad prefix) and returns `Result<MemoryProvider>`. The
/// README block above compiles as written (it only binds the value), but
/// code that goes on to use that binding needs a `?`.
#[test]
fn readme_memory_provider_new_is_fallible() -> a3s_event::Result<()> {
    use a3s_event::provider::memory::{MemoryConfig, MemoryProvider};

    let provider = MemoryProvider::new(MemoryConfig {
        subject_prefix: "events".to_string(),
        max_events: 100_000,
        channel_capacity: 10_000,
    })?;
    let _bus = a3s_event::EventBus::new(provider);
    let zero = MemoryProvider::new(MemoryConfig {
        max_events: 0,
        ..MemoryConfig::default()
    });
    assert!(matches!(zero, Err(a3s_event::Error::InvalidConfig { .. })));
    Ok(())
}

#[tokio::test]
async fn readme_event_bus() -> a3s_event::Result<()> {
    let payload = serde_json::json!({"rate": 7.35});
    // --- README: API Reference / EventBus --------------------------------------
    use a3s_event::provider::memory::MemoryProvider;
    use a3s_event::{EventBus, SubscriptionFilter};

    // Create bus with any provider
    let bus = EventBus::new(MemoryProvider::default());

    // Publish with convenience parameters
    let event = bus
        .publish("market", "forex", "Rate change", "reuters", payload)
        .await?;

    // Publish a pre-built event
    let seq = bus.publish_event(&event).await?;

    // List events (optionally filtered by category)
    let events = bus.list_events(Some("market"), 50).await?;

    // Get event counts by category
    let counts = bus.counts(1000).await?;

    // Manage subscriptions
    bus.update_subscription(SubscriptionFilter {
        subscriber_id: "analyst".to_string(),
        subjects: vec!["events.market.>".to_string()],
        durable: true,
    })
    .await?;

    let subs = bus.create_subscriber("analyst").await?;
    bus.remove_subscription("analyst").await?;

    // Provider info
    let info = bus.info().await?;
    println!("{}: {} messages", info.provider, info.messages);
    // --- end -------------------------------------------------------------------

    // and it behaves as described
    assert_eq!(seq, 1, "republishing the same event is deduplicated");
    assert_eq!(events.len(), 1);
    assert_eq!(counts.total, 1);
    assert_eq!(counts.categories["market"], 1);
    assert_eq!(subs.len(), 1);
    assert!(bus.get_subscription("analyst").await.is_none());
    assert_eq!((info.provider.as_str(), info.messages), ("memory", 1));
    Ok(())
}

#[tokio::test]
async fn readme_event_provider_trait() -> a3s_event::Result<()> {
    let provider = a3s_event::provider::memory::MemoryProvider::default();
    let event = a3s_event::Event::new(
        "events.market.forex",
        "market",
        "s",
        "src",
        serde_json::json!({}),
    );
    // --- README: EventProvider Trait -------------------------------------------
    use a3s_event::provider::EventProvider;

    // All providers implement:
    provider.publish(&event).await?;
    provider.subscribe("events.market.>").await?;
    provider
        .subscribe_durable("consumer-1", "events.market.>")
        .await?;
    provider.history(Some("events.market.>"), 100).await?;
    provider.unsubscribe("consumer-1").await?;
    provider.info().await?;
    provider.build_subject("market", "forex.usd"); // → "events.market.forex.usd"
    provider.category_subject("market"); // → "events.market.>"
    provider.name(); // → "memory" | "nats"
    // --- end -------------------------------------------------------------------

    assert_eq!(
        provider.build_subject("market", "forex.usd"),
        "events.market.forex.usd"
    );
    assert_eq!(provider.category_subject("market"), "events.market.>");
    assert_eq!(provider.name(), "memory");
    Ok(())
}

fn process(event: &a3s_event::Event) -> Result<(), String> {
    if event.payload["fail"] == serde_json::json!(true) {
        Err("cannot process".into())
    } else {
        Ok(())
    }
}

#[tokio::test]
async fn readme_subscription() -> a3s_event::Result<()> {
    use a3s_event::provider::EventProvider;
    use a3s_event::provider::memory::MemoryProvider;
    use std::sync::Arc;

    let provider = Arc::new(MemoryProvider::default());
    let publish = |n: u32, fail: bool| {
        let provider = provider.clone();
        async move {
            let e = a3s_event::Event::new(
                "events.t.x",
                "t",
                format!("event {n}"),
                "src",
                serde_json::json!({"n": n, "fail": fail}),
            );
            provider.publish(&e).await.unwrap();
        }
    };
    // The README loops until the subscription closes; deleting the durable
    // closes it, so run each loop in a task and delete it once it is done.
    let mut sub = provider.subscribe_durable("auto", "events.>").await?;
    publish(1, false).await;
    publish(2, false).await;
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        // --- README: Subscription (auto-ack) -----------------------------------
        // Auto-ack mode
        while let Some(received) = sub.next().await? {
            println!("{}: {}", received.event.id, received.event.summary);
            // --- end -----------------------------------------------------------
            seen += 1;
        }
        Ok::<_, a3s_event::Error>(seen)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    provider.unsubscribe("auto").await?;
    assert_eq!(reader.await.unwrap()?, 2);

    let options = a3s_event::SubscribeOptions {
        max_deliver: Some(2),
        ..Default::default()
    };
    let mut sub = provider
        .subscribe_durable_with_options("manual", "events.>", &options)
        .await?;
    publish(3, true).await;
    publish(4, false).await;
    let reader = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut naked = 0;
        // --- README: Subscription (manual ack) ---------------------------------
        // Manual ack mode
        while let Some(pending) = sub.next_manual_ack().await? {
            match process(&pending.received.event) {
                Ok(_) => {
                    acked.push(pending.received.event.payload["n"].clone());
                    pending.ack().await?
                }
                Err(_) => {
                    naked += 1;
                    pending.nak().await? // request redelivery
                }
            }
        }
        // --- end ---------------------------------------------------------------
        Ok::<_, a3s_event::Error>((acked, naked))
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    provider.unsubscribe("manual").await?;
    let (acked, naked) = reader.await.unwrap()?;
    // a new durable starts with every stored event (deliver policy All)
    assert_eq!(acked, [1, 2, 4].map(|n| serde_json::json!(n)));
    assert_eq!(naked, 2, "naked events are redelivered up to max_deliver");
    Ok(())
}

// --- README: Custom Providers ---------------------------------------------------
mod custom_provider {
    use a3s_event::Result;
    use a3s_event::provider::{EventProvider, PendingEvent, ProviderInfo, Subscription};
    use a3s_event::types::{Event, ReceivedEvent};
    use async_trait::async_trait;

    pub struct RedisProvider {/* ... */}

    #[async_trait]
    impl EventProvider for RedisProvider {
        async fn publish(&self, event: &Event) -> Result<u64> {
            // Publish to Redis Streams
            todo!()
        }

        async fn subscribe_durable(
            &self,
            consumer_name: &str,
            filter_subject: &str,
        ) -> Result<Box<dyn Subscription>> {
            // Create Redis consumer group
            todo!()
        }

        async fn subscribe(&self, filter_subject: &str) -> Result<Box<dyn Subscription>> {
            todo!()
        }

        async fn history(&self, filter_subject: Option<&str>, limit: usize) -> Result<Vec<Event>> {
            todo!()
        }

        async fn unsubscribe(&self, consumer_name: &str) -> Result<()> {
            todo!()
        }

        async fn info(&self) -> Result<ProviderInfo> {
            todo!()
        }

        fn build_subject(&self, category: &str, topic: &str) -> String {
            format!("events.{}.{}", category, topic)
        }

        fn category_subject(&self, category: &str) -> String {
            format!("events.{}.>", category)
        }

        fn name(&self) -> &str {
            "redis"
        }
    }
    // --- end ---------------------------------------------------------------------

    // Not in the README: the constructor and config its next block uses.
    pub struct RedisConfig;
    impl RedisProvider {
        pub fn new(config: RedisConfig) -> Self {
            RedisProvider {}
        }
    }
    // The README imports these too; keep them used.
    #[allow(dead_code)]
    fn _types(_: Option<PendingEvent>, _: Option<ReceivedEvent>) {}

    /// Compiled, not run (the provider's bodies are `todo!()`).
    #[allow(dead_code)]
    pub async fn use_it(config: RedisConfig) -> Result<()> {
        use a3s_event::EventBus;
        let payload = serde_json::json!({});
        // --- README: "Then use it like any other provider" ----------------------
        let bus = EventBus::new(RedisProvider::new(config));
        bus.publish("market", "forex", "Rate change", "source", payload)
            .await?;
        // --- end -----------------------------------------------------------------
        Ok(())
    }
}

#[test]
fn readme_custom_provider_compiles_and_its_plain_methods_work() {
    use a3s_event::provider::EventProvider;
    let p = custom_provider::RedisProvider::new(custom_provider::RedisConfig);
    assert_eq!(p.name(), "redis");
    assert_eq!(p.build_subject("market", "forex"), "events.market.forex");
    assert_eq!(p.category_subject("market"), "events.market.>");
}

#[tokio::test]
async fn readme_subscription_on_an_ephemeral_subscription() -> a3s_event::Result<()> {
    use a3s_event::provider::EventProvider;
    use a3s_event::provider::memory::MemoryProvider;
    use std::sync::Arc;

    let provider = Arc::new(MemoryProvider::default());
    let publisher = provider.clone();
    // The README's auto-ack loop runs on `provider.subscribe`; it ends when
    // the subscription is closed, so it runs in a task with a deadline.
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        // --- README: Subscription (auto-ack, first line verbatim) --------------
        // Auto-ack mode
        let mut sub = provider.subscribe("events.>").await?;
        while let Some(received) = sub.next().await? {
            println!("{}: {}", received.event.id, received.event.summary);
            // --- end -----------------------------------------------------------
            seen += 1;
            if seen == 2 {
                break;
            }
        }
        Ok::<_, a3s_event::Error>(seen)
    });
    // the subscription is live: publish once it exists
    let mut published = 0;
    while !reader.is_finished() && published < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let e = a3s_event::Event::new("events.t.x", "t", "s", "src", serde_json::json!(published));
        publisher.publish(&e).await?;
        published += 1;
    }
    assert_eq!(reader.await.unwrap()?, 2);
    Ok(())
}

/// The README's NATS blocks, compiled (not run: they need a server on
/// 127.0.0.1:4222; the NATS crate's own tests start one).
#[cfg(feature = "nats")]
#[allow(dead_code)]
mod nats_blocks {
    // --- README: NATS JetStream Provider ---------------------------------------
    use a3s_event::provider::nats::{NatsConfig, NatsProvider, StorageType};

    async fn connect() -> a3s_event::Result<NatsProvider> {
        let provider = NatsProvider::connect(NatsConfig {
            url: "nats://127.0.0.1:4222".to_string(),
            stream_name: "A3S_EVENTS".to_string(),
            subject_prefix: "events".to_string(),
            storage: StorageType::File,
            max_events: 100_000,
            max_age_secs: 604_800, // 7 days
            ..Default::default()
        })
        .await?;
        // --- end -----------------------------------------------------------------
        Ok(provider)
    }

    fn config() -> NatsConfig {
        // --- README: NATS Configuration ------------------------------------------
        let config = NatsConfig {
            url: "nats://127.0.0.1:4222".to_string(),
            token: None,
            credentials_path: None,
            stream_name: "A3S_EVENTS".to_string(),
            subject_prefix: "events".to_string(),
            storage: StorageType::File,
            max_events: 100_000,
            max_age_secs: 604_800, // 7 days
            max_bytes: 0,          // unlimited
            connect_timeout_secs: 5,
            request_timeout_secs: 10,
        };
        // --- end -----------------------------------------------------------------
        config
    }

    #[test]
    fn readme_nats_configuration_compiles() {
        let config = config();
        assert_eq!(config.stream_name, "A3S_EVENTS");
        assert_eq!(config.storage, StorageType::File);
        assert_eq!(config.max_bytes, 0);
    }
}

/// README "Core Types": every type the table names is importable from the
/// crate root with all features on.
#[cfg(feature = "full")]
#[allow(unused_imports)]
mod core_types {
    use a3s_event::{
        Aes256GcmEncryptor, Broker, CloudEvent, CronSource, EncryptedPayload, Event, EventBus,
        EventEncryptor, EventMetrics, EventProvider, EventSink, EventSource, FileStateStore,
        InProcessSink, MetricsSnapshot, PendingEvent, ProviderInfo, ReceivedEvent, ScalingEvent,
        SinkDlqHandler, StateStore, Subscription, TopicSink, Trigger, TriggerFilter,
    };
}

/// README roadmap, "Phase 5: Payload Encryption": the encryptor API as it
/// names it, plugged into the bus.
#[cfg(feature = "crypto")]
#[tokio::test]
async fn readme_payload_encryption() -> a3s_event::Result<()> {
    use a3s_event::provider::memory::MemoryProvider;
    use a3s_event::{Aes256GcmEncryptor, EncryptedPayload, EventBus};
    use std::sync::Arc;

    // 0.3 code declared the encryptor `mut` to rotate; ours rotates through `&self`.
    #[allow(unused_mut)]
    let mut enc = Aes256GcmEncryptor::new("key-1", &[0x42; 32]);
    enc.add_key("key-2", &[0x7A; 32])?;
    enc.rotate_to("key-2")?;
    assert_eq!(enc.active_key_id(), "key-2");
    let mut ids = enc.key_ids();
    ids.sort();
    assert_eq!(ids, vec!["key-1", "key-2"]);

    let bus = EventBus::new(MemoryProvider::default());
    bus.set_encryptor(Arc::new(enc));
    let event = bus
        .publish(
            "market",
            "forex",
            "Rate change",
            "reuters",
            serde_json::json!({"rate": 7.35}),
        )
        .await?;
    let stored = bus.provider().history(None, 1).await?;
    assert!(EncryptedPayload::is_encrypted(&stored[0].payload));
    let listed = bus.list_events(Some("market"), 50).await?;
    assert_eq!(listed[0].payload, event.payload);
    assert_eq!(bus.metrics().snapshot().encrypt_total, 1);
    Ok(())
}

// --- README roadmap: the APIs it names, used as it describes them ------------
// The roadmap has no code blocks, but it names the API ("`SubscribeOptions`
// struct — `max_deliver`, `backoff`, ..."); code written against those names
// compiles, and behaves as the roadmap says.

/// Phase 1: provider config passthrough.
#[tokio::test]
async fn readme_roadmap_options_passthrough() -> a3s_event::Result<()> {
    use a3s_event::provider::EventProvider;
    use a3s_event::provider::memory::MemoryProvider;
    use a3s_event::{
        DeliverPolicy, EventBus, PublishOptions, SubscribeOptions, SubscriptionFilter,
    };

    let options = SubscribeOptions {
        max_deliver: Some(3),
        backoff: vec![Duration::from_millis(10)],
        max_ack_pending: Some(100),
        deliver_policy: DeliverPolicy::All,
        ack_wait: Some(Duration::from_secs(5)),
    };
    // every policy the roadmap lists
    for policy in [
        DeliverPolicy::All,
        DeliverPolicy::Last,
        DeliverPolicy::New,
        DeliverPolicy::ByStartSequence { sequence: 1 },
        DeliverPolicy::ByStartTime { timestamp: 0 },
        DeliverPolicy::LastPerSubject,
    ] {
        let _ = SubscribeOptions {
            deliver_policy: policy,
            ..options.clone()
        };
    }

    let provider = MemoryProvider::default();
    let event = a3s_event::Event::new(
        "events.market.fx",
        "market",
        "s",
        "src",
        serde_json::json!(1),
    );
    let publish = PublishOptions {
        msg_id: Some("order-1".to_string()),
        expected_sequence: None,
        timeout: Some(Duration::from_secs(1)),
    };
    let seq = provider.publish_with_options(&event, &publish).await?;
    // same msg id: deduplicated
    let again = a3s_event::Event::new(
        "events.market.fx",
        "market",
        "s",
        "src",
        serde_json::json!(2),
    );
    assert_eq!(provider.publish_with_options(&again, &publish).await?, seq);
    let mut live = provider
        .subscribe_with_options("events.market.>", &SubscribeOptions::default())
        .await?;
    let mut durable = provider
        .subscribe_durable_with_options("fx", "events.market.>", &options)
        .await?;
    assert_eq!(durable.next().await?.unwrap().event.id, event.id);
    drop(live.close().await);

    // "EventBus threads options through create_subscriber()"
    let bus = EventBus::new(provider);
    bus.update_subscription_with_options(
        SubscriptionFilter {
            subscriber_id: "analyst".to_string(),
            subjects: vec!["events.market.>".to_string()],
            durable: true,
        },
        options.clone(),
    )
    .await?;
    let record = bus.get_subscription_record("analyst").await.unwrap();
    assert_eq!(record.options, Some(options));
    let mut subs = bus.create_subscriber("analyst").await?;
    let pending = subs[0].next_manual_ack().await?.unwrap();
    assert_eq!(pending.received.event.id, event.id);
    pending.ack().await?;
    Ok(())
}

/// Phase 2: event versioning and schema validation on publish.
#[cfg(feature = "schema")]
#[tokio::test]
async fn readme_roadmap_schema() -> a3s_event::Result<()> {
    use a3s_event::provider::memory::MemoryProvider;
    use a3s_event::schema::{Compatibility, EventSchema, MemorySchemaRegistry, SchemaRegistry};
    use a3s_event::{Error, Event, EventBus};
    use std::sync::Arc;

    let registry = Arc::new(MemorySchemaRegistry::new());
    registry.register(EventSchema::new("forex.rate_change", 1).with_required_fields(["rate"]))?;
    registry.register(
        EventSchema::new("forex.rate_change", 2)
            .with_required_fields(["rate"])
            .with_description("v2: same required fields"),
    )?;
    for level in [
        Compatibility::Backward,
        Compatibility::Forward,
        Compatibility::Full,
        Compatibility::None,
    ] {
        registry.check_compatibility("forex.rate_change", 2, level)?;
    }
    // a v3 that requires a field v2 data lacks is refused (BACKWARD default)
    assert!(
        registry
            .register(
                EventSchema::new("forex.rate_change", 3).with_required_fields(["rate", "currency"])
            )
            .is_err()
    );

    let bus = EventBus::new(MemoryProvider::default()).with_schema_registry(registry);
    let bad = Event::typed(
        "events.market.forex",
        "market",
        "forex.rate_change",
        2,
        "Rate change",
        "reuters",
        serde_json::json!({"currency": "CNY"}),
    );
    assert!(matches!(
        bus.publish_event(&bad).await,
        Err(Error::SchemaValidation { .. })
    ));
    let good = bus
        .publish_typed(
            "market",
            "forex",
            "forex.rate_change",
            2,
            "Rate change",
            "reuters",
            serde_json::json!({"rate": 7.35, "currency": "CNY"}),
        )
        .await?;
    assert_eq!(
        (good.event_type.as_str(), good.version),
        ("forex.rate_change", 2)
    );
    assert_eq!(bus.metrics().snapshot().validation_errors, 1);
    Ok(())
}

/// Phase 3: DLQ, `should_dead_letter()`, health checks.
#[tokio::test]
async fn readme_roadmap_dlq_and_health() -> a3s_event::Result<()> {
    use a3s_event::dlq::{DeadLetterEvent, DlqHandler, MemoryDlqHandler, should_dead_letter};
    use a3s_event::provider::memory::MemoryProvider;
    use a3s_event::{EventBus, SubscribeOptions};
    use std::sync::Arc;

    let bus = EventBus::new(MemoryProvider::default());
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());
    assert!(bus.health().await?);
    assert!(bus.provider().health().await?);

    bus.publish("orders", "new", "Order 1", "shop", serde_json::json!({}))
        .await?;
    let options = SubscribeOptions {
        max_deliver: Some(2),
        ..Default::default()
    };
    let mut sub = bus
        .provider()
        .subscribe_durable_with_options("billing", "events.orders.>", &options)
        .await?;
    // a hand-written loop that dead-letters with the 0.3 helper
    loop {
        let pending = sub.next_manual_ack().await?.unwrap();
        if should_dead_letter(&pending.received, options.max_deliver.unwrap_or(0)) {
            let dead = DeadLetterEvent::new(
                a3s_event::Event::clone(&pending.received.event),
                "always fails",
            )
            .with_attempts(pending.received.num_delivered);
            bus.dlq_handler().unwrap().handle(dead).await?;
            pending.term().await?;
            break;
        }
        pending.nak().await?;
    }
    let dead = dlq.list(10).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].delivery_attempts),
        ("always fails", 2)
    );
    assert!(dead[0].dead_lettered_at > 0);
    Ok(())
}

/// Phase 6: subscription state persistence.
#[tokio::test]
async fn readme_roadmap_state_persistence() -> a3s_event::Result<()> {
    use a3s_event::provider::memory::MemoryProvider;
    use a3s_event::state::{FileStateStore, MemoryStateStore, StateStore};
    use a3s_event::{EventBus, SubscriptionFilter};
    use std::sync::Arc;

    let path = std::env::temp_dir().join(format!(
        "a3s-readme-state-{}-{}.json",
        std::process::id(),
        a3s_event::types::new_event_id()
    ));
    let filter = SubscriptionFilter {
        subscriber_id: "analyst".to_string(),
        subjects: vec!["events.market.>".to_string()],
        durable: true,
    };
    {
        let bus = EventBus::new(MemoryProvider::default());
        bus.set_state_store(Arc::new(FileStateStore::new(&path)))
            .await?;
        bus.update_subscription(filter.clone()).await?; // auto-saved
        bus.update_subscription(SubscriptionFilter {
            subscriber_id: "gone".to_string(),
            ..filter.clone()
        })
        .await?;
        bus.remove_subscription("gone").await?; // auto-saved
    }
    // a restarted bus loads them on set_state_store
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(Arc::new(FileStateStore::new(&path)))
        .await?;
    assert_eq!(bus.list_subscriptions().await, vec![filter]);
    let _ = std::fs::remove_file(&path);
    // the store's lock file, kept next to the state file
    if let Some(name) = path.file_name() {
        let lock = path.with_file_name(format!(".{}.lock", name.to_string_lossy()));
        let _ = std::fs::remove_file(lock);
    }

    let memory: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    bus.set_state_store(memory.clone()).await?;
    assert_eq!(memory.load().await?.len(), 1);
    Ok(())
}

/// Phase 7: metrics, scraped with `metrics()`, serialized camelCase, reset.
#[tokio::test]
async fn readme_roadmap_metrics() -> a3s_event::Result<()> {
    use a3s_event::provider::memory::MemoryProvider;
    use a3s_event::{EventBus, EventMetrics, MetricsSnapshot};

    let bus = EventBus::new(MemoryProvider::default());
    bus.publish("market", "fx", "s", "src", serde_json::json!({}))
        .await?;
    let metrics: &EventMetrics = bus.metrics();
    let snapshot: MetricsSnapshot = metrics.snapshot();
    assert_eq!(snapshot.publish_total, 1);
    let json = serde_json::to_value(&snapshot)?;
    assert_eq!(json["publishTotal"], 1);
    assert!(json["publishLatency"]["maxNs"].as_u64().is_some());
    metrics.reset();
    assert_eq!(metrics.snapshot(), MetricsSnapshot::default());
    Ok(())
}

/// Phase 8: CloudEvents conversion and typed scaling payloads.
#[cfg(all(feature = "cloudevents", feature = "routing"))]
#[test]
fn readme_roadmap_cloudevents_and_scaling() -> a3s_event::Result<()> {
    use a3s_event::routing::scaling::{
        InstanceHealthPayload, InstanceReadyPayload, InstanceStoppedPayload, ScaleDownPayload,
        ScaleUpPayload,
    };
    use a3s_event::{CloudEvent, Event, ScalingEvent};

    let up = ScaleUpPayload {
        service: "api".to_string(),
        desired_replicas: 3,
        reason: "load".to_string(),
    };
    let event: Event = up.to_event("gateway")?;
    assert_eq!(event.event_type, "a3s.gateway.scale.up");
    let _ = ScaleDownPayload {
        service: "api".to_string(),
        target_replicas: 1,
        drain_timeout_secs: 30,
    }
    .into_event("gateway")?;
    let _ = InstanceReadyPayload {
        service: "api".to_string(),
        instance_id: "i-1".to_string(),
        endpoint: "http://10.0.0.1:8080".to_string(),
    };
    let _ = InstanceStoppedPayload {
        service: "api".to_string(),
        instance_id: "i-1".to_string(),
    };
    let _ = InstanceHealthPayload {
        instance_id: "i-1".to_string(),
        cpu_percent: 12.5,
        memory_bytes: 1 << 20,
        in_flight: 2,
    };

    // lossless `From<Event>` and `TryFrom<CloudEvent>`
    let cloud = CloudEvent::from(event.clone());
    assert_eq!(Event::try_from(cloud)?, event);
    Ok(())
}

/// README ("A custom provider written against 0.3 (the plain `publish`,
/// `subscribe` and `subscribe_durable` methods only) compiles and serves the
/// bus while no options are given; a subscriber given options ... fails with
/// `Error::Unsupported` naming the method"): the README's custom-provider
/// shape, with real bodies (over a `MemoryProvider`), under everything the
/// bus does without options: publishing (with a router and an encryptor
/// too), durable and ephemeral subscribers, a consumer runner, history,
/// counts, info, health and a provider-backed DLQ.
mod old_provider_serves_the_bus {
    use a3s_event::provider::memory::MemoryProvider;
    use a3s_event::provider::{EventProvider, ProviderInfo, Subscription};
    use a3s_event::{Error, Event, EventBus, Result, SubscriptionFilter};
    use async_trait::async_trait;
    use std::sync::Arc;
    use std::time::Duration;

    /// The README's `RedisProvider`, its methods filled in.
    struct OldProvider(MemoryProvider);

    #[async_trait]
    impl EventProvider for OldProvider {
        async fn publish(&self, event: &Event) -> Result<u64> {
            self.0.publish(event).await
        }
        async fn subscribe_durable(
            &self,
            consumer_name: &str,
            filter_subject: &str,
        ) -> Result<Box<dyn Subscription>> {
            self.0
                .subscribe_durable(consumer_name, filter_subject)
                .await
        }
        async fn subscribe(&self, filter_subject: &str) -> Result<Box<dyn Subscription>> {
            self.0.subscribe(filter_subject).await
        }
        async fn history(&self, filter_subject: Option<&str>, limit: usize) -> Result<Vec<Event>> {
            self.0.history(filter_subject, limit).await
        }
        async fn unsubscribe(&self, consumer_name: &str) -> Result<()> {
            self.0.unsubscribe(consumer_name).await
        }
        async fn info(&self) -> Result<ProviderInfo> {
            self.0.info().await
        }
        fn build_subject(&self, category: &str, topic: &str) -> String {
            format!("events.{}.{}", category, topic)
        }
        fn category_subject(&self, category: &str) -> String {
            format!("events.{}.>", category)
        }
        fn name(&self) -> &str {
            "old"
        }
    }

    async fn next(sub: &mut Box<dyn Subscription>) -> Result<Option<a3s_event::ReceivedEvent>> {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no delivery in 5 s"))
    }

    fn filter(id: &str, durable: bool) -> SubscriptionFilter {
        SubscriptionFilter {
            subscriber_id: id.to_string(),
            subjects: vec!["events.market.>".to_string()],
            durable,
        }
    }

    #[tokio::test]
    async fn without_options_everything_works() -> Result<()> {
        let bus = EventBus::new(OldProvider(MemoryProvider::default()));
        bus.update_subscription(filter("durable", true)).await?;
        bus.update_subscription(filter("live", false)).await?;
        let mut durable = bus.create_subscriber("durable").await?;
        let mut live = bus.create_subscriber("live").await?;

        let first = bus
            .publish("market", "fx", "one", "src", serde_json::json!({}))
            .await?;
        let event = Event::new(
            "events.market.fx",
            "market",
            "two",
            "src",
            serde_json::json!({}),
        );
        assert_eq!(bus.publish_event(&event).await?, 2);
        let batch = [Event::new(
            "events.market.fx",
            "market",
            "three",
            "src",
            serde_json::json!({}),
        )];
        assert!(bus.publish_batch(&batch).await?.iter().all(|r| r.is_ok()));
        #[cfg(feature = "routing")]
        {
            let broker = a3s_event::routing::Broker::new();
            broker.attach(&bus);
            bus.publish("market", "fx", "routed", "src", serde_json::json!({}))
                .await?;
        }
        #[cfg(feature = "crypto")]
        {
            bus.set_encryptor(Arc::new(a3s_event::Aes256GcmEncryptor::new("k", &[7; 32])));
            bus.publish("market", "fx", "sealed", "src", serde_json::json!({"a": 1}))
                .await?;
        }

        assert_eq!(next(&mut durable[0]).await?.unwrap().event.id, first.id);
        assert_eq!(next(&mut live[0]).await?.unwrap().event.id, first.id);
        let stored = bus.list_events(Some("market"), 10).await?;
        assert_eq!(bus.counts(10).await?.total, stored.len() as u64);
        assert_eq!(bus.info().await?.messages, stored.len() as u64);
        assert!(bus.health().await?);

        // a consumer runner on its own durable handles every stored event
        bus.update_subscription(filter("runner", true)).await?;
        let consumer = bus
            .consume(
                "runner",
                |_: a3s_event::ReceivedEvent| async move { Ok::<(), String>(()) },
                a3s_event::ConsumerConfig::default(),
            )
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while consumer.report().acked < stored.len() as u64
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = consumer.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report.acked, stored.len() as u64, "{report:?}");

        // a DLQ stored on such a provider
        let dlq =
            a3s_event::ProviderDlqHandler::new(Arc::new(OldProvider(MemoryProvider::default())));
        a3s_event::DlqHandler::handle(&dlq, a3s_event::DeadLetterEvent::new(event, "failed"))
            .await?;
        assert_eq!(a3s_event::DlqHandler::count(&dlq).await?, 1);
        Ok(())
    }

    #[tokio::test]
    async fn with_options_the_subscriber_is_refused_naming_the_method() -> Result<()> {
        let bus = EventBus::new(OldProvider(MemoryProvider::default()));
        let options = a3s_event::SubscribeOptions {
            max_deliver: Some(3),
            ..Default::default()
        };
        bus.update_subscription_with_options(filter("durable", true), options.clone())
            .await?;
        bus.update_subscription_with_options(filter("live", false), options)
            .await?;
        for (id, method) in [
            ("durable", "subscribe_durable_with_options"),
            ("live", "subscribe_with_options"),
        ] {
            match bus.create_subscriber(id).await {
                Err(err @ Error::Unsupported { .. }) => {
                    assert!(err.to_string().contains(method), "{id}: {err}")
                }
                Err(err) => panic!("{id}: {err}"),
                Ok(_) => panic!("{id}: options accepted by a provider that ignores them"),
            }
        }
        Ok(())
    }
}
