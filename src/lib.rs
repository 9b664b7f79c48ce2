//! # A3S Event
//!
//! Provider-agnostic events for Rust: publish, subscribe to and query events
//! through one trait, [`EventProvider`], and swap the
//! backend (in-memory, NATS JetStream, your own) without touching application
//! code. Above the providers, the [`EventBus`] adds what no broker does for
//! you: subject and schema validation, payload encryption, managed durable
//! subscriptions that survive restarts, a consumer runner with retries and
//! dead-lettering, and metrics.
//!
//! This crate only re-exports the workspace's crates, laid out as the
//! original `a3s-event` README imports them:
//!
//! | path | what |
//! |---|---|
//! | `a3s_event::{EventBus, Event, SubscriptionFilter, Result, Error, ...}` | the main API |
//! | [`a3s_event::provider`](provider) | `EventProvider`, `Subscription`, `PendingEvent`, `ProviderInfo` |
//! | `a3s_event::provider::memory` | `MemoryProvider`, `MemoryConfig` (feature `memory`) |
//! | [`a3s_event::types`](types) | `Event`, `ReceivedEvent`, options, filters |
//! | [`a3s_event::subject`](subject) | subject validation, `SubjectPattern` |
//! | [`a3s_event::consumer`](consumer) | the consumer runner |
//! | [`a3s_event::dlq`](dlq) | `DlqHandler`, `DeadLetterEvent`, `MemoryDlqHandler`, `ProviderDlqHandler` |
//! | [`a3s_event::state`](state) | `StateStore`, `FileStateStore`, `MemoryStateStore` |
//! | [`a3s_event::metrics`](metrics) | `EventMetrics`, `MetricsSnapshot`, `PrometheusLabels`, `merge_expositions` |
//! | [`a3s_event::hooks`](hooks) | the hook traits: encryptor, schema validator, router, DLQ, state |
//!
//! ## Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `memory` | yes | `provider::memory`: the in-process provider |
//! | `nats` | no | `provider::nats`: `NatsProvider` on NATS JetStream |
//! | `crypto` | no | `crypto` and `Aes256GcmEncryptor`: AES-256-GCM payload encryption with a key ring |
//! | `schema` | no | `schema`: schema registry, JSON Schema validation, compatibility rules |
//! | `cloudevents` | no | `cloudevents` and `CloudEvent`: CloudEvents v1.0 conversion and the provider binding |
//! | `cloudevents-http` | no | `cloudevents::http`: the HTTP binding (reqwest client, axum extractor) |
//! | `cloudevents-nats` | no | `cloudevents::nats`: the NATS protocol binding (async-nats) |
//! | `routing` | no | `routing` and `Broker`, `Trigger`, ...: Knative-style routing, sinks, sources |
//! | `routing-http` | no | `routing::http`: the HTTP sink and the webhook source |
//! | `conformance` | no | `conformance`: the provider test suite, for third-party providers |
//! | `full` | no | every feature |
//!
//! The bus itself is always present and light: the minimal build
//! (`--no-default-features`) links no NATS, AES or HTTP crates.
//!
//! ## Example
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # mod run {
//! use a3s_event::{EventBus, Event, SubscriptionFilter};
//! use a3s_event::provider::memory::MemoryProvider;
//!
//! # pub
//! async fn main() -> a3s_event::Result<()> {
//!     // Create an event bus with any provider
//!     let bus = EventBus::new(MemoryProvider::default());
//!
//!     // A durable subscriber, resumed across restarts
//!     bus.update_subscription(SubscriptionFilter {
//!         subscriber_id: "analyst".to_string(),
//!         subjects: vec!["events.market.>".to_string()],
//!         durable: true,
//!     }).await?;
//!
//!     // Publish an event
//!     let event: Event = bus.publish(
//!         "market",
//!         "forex.usd_cny",
//!         "USD/CNY broke through 7.35",
//!         "reuters",
//!         serde_json::json!({"rate": 7.3521}),
//!     ).await?;
//!
//!     // Receive it
//!     let mut subs = bus.create_subscriber("analyst").await?;
//!     let received = subs[0].next().await?.expect("an event");
//!     assert_eq!(received.event.id, event.id);
//!
//!     // Query history
//!     let events = bus.list_events(Some("market"), 50).await?;
//!     assert_eq!(events.len(), 1);
//!     assert_eq!(bus.metrics().snapshot().publish_total, 1);
//!     Ok(())
//! }
//! # }
//! # #[cfg(feature = "memory")]
//! # fn main() -> a3s_event::Result<()> {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run::main())
//! # }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use event_bus::{
    BusSubscription, ConsumerConfig, ConsumerHandle, ConsumerReport, EventBus, EventMetrics,
    FileStateStore, Handler, MemoryDlqHandler, MemoryStateStore, MetricsSnapshot, PlaintextPolicy,
    ProviderDlqHandler, STALL_THRESHOLD, Stored, durable_consumer_name,
};
pub use event_core::{
    BoxError, DeadLetterEvent, DeliverPolicy, DlqHandler, Error, Event, EventCounts,
    EventEncryptor, EventProvider, EventRouter, KeepAliveClock, PendingEvent, ProviderInfo,
    PublishOptions, PublishOutcome, ReceivedEvent, Result, SchemaValidator, StateStore,
    SubjectPattern, SubscribeOptions, Subscription, SubscriptionFilter, SubscriptionRecord,
};

/// The error type and [`Result`] alias.
pub mod error {
    pub use event_core::error::*;
}

/// Core data types: [`Event`], [`ReceivedEvent`],
/// options and filters.
pub mod types {
    pub use event_core::types::*;
}

/// Subjects, filters and their validation.
pub mod subject {
    pub use event_core::subject::*;
}

/// The provider contract and the providers.
pub mod provider {
    pub use event_core::keepalive::KeepAliveClock;
    pub use event_core::provider::*;
    pub use event_core::stream::SubscriptionStream;
    pub use event_core::types::ProviderInfo;

    /// The in-process provider (feature `memory`). The full guide (limits,
    /// eviction, `Lagged` reports) is the [`event_memory`] crate's
    /// documentation.
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    pub mod memory {
        pub use event_memory::*;
    }

    /// The NATS JetStream provider (feature `nats`). The full guide
    /// (authentication, TLS, stream settings, recovery, what is fetched
    /// ahead) is the [`event_nats`] crate's documentation; deployment and
    /// sizing: `docs/deployment.md`.
    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    pub mod nats {
        pub use event_nats::*;
    }
}

/// The hook traits the bus calls; implementations plug in as `Arc<dyn Trait>`.
pub mod hooks {
    pub use event_core::hooks::*;
}

/// The consumer runner.
pub mod consumer {
    pub use event_bus::consumer::*;
}

/// Dead-letter queues.
pub mod dlq {
    pub use event_bus::dlq::*;
    pub use event_core::hooks::{DeadLetterEvent, DlqHandler};
}

/// Subscription state persistence.
pub mod state {
    pub use event_bus::state::*;
    pub use event_core::hooks::StateStore;
    pub use event_core::types::SubscriptionRecord;
}

/// Metrics.
pub mod metrics {
    pub use event_bus::metrics::*;
}

/// The provider conformance suite (feature `conformance`).
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub use event_core::conformance;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub use event_core::conformance_tests;

/// AES-256-GCM payload encryption with a key ring (feature `crypto`): give
/// an [`Aes256GcmEncryptor`] to [`EventBus::set_encryptor`]. The full guide
/// (envelope format, key rotation, what is *not* encrypted: subject,
/// summary, metadata) is the [`event_crypto`] crate's documentation.
#[cfg(feature = "crypto")]
#[cfg_attr(docsrs, doc(cfg(feature = "crypto")))]
pub mod crypto {
    pub use event_crypto::*;
}
#[cfg(feature = "crypto")]
#[cfg_attr(docsrs, doc(cfg(feature = "crypto")))]
pub use event_crypto::{Aes256GcmEncryptor, EncryptedPayload};

/// Schema registry with JSON Schema validation and compatibility rules
/// (feature `schema`): give a `MemorySchemaRegistry` to
/// [`EventBus::with_schema_registry`]. The full guide (policies, what the
/// compatibility checker understands) is the [`event_schema`] crate's
/// documentation.
#[cfg(feature = "schema")]
#[cfg_attr(docsrs, doc(cfg(feature = "schema")))]
pub mod schema {
    pub use event_schema::*;
}

/// CloudEvents v1.0: lossless conversion and bindings (feature `cloudevents`;
/// the HTTP binding with `cloudevents-http`, the NATS binding with
/// `cloudevents-nats`).
///
/// The items' own docs come from the [`event_cloudevents`] crate and name
/// its features: its `http`, `http-client` and `http-server` are this
/// crate's `cloudevents-http`, its `nats` is this crate's
/// `cloudevents-nats` (not `nats`, which is the provider).
#[cfg(feature = "cloudevents")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudevents")))]
pub mod cloudevents {
    pub use event_cloudevents::*;
}
#[cfg(feature = "cloudevents")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudevents")))]
pub use event_cloudevents::CloudEvent;

/// Knative-style Broker/Trigger routing, sinks, sources and scaling events
/// (feature `routing`; the HTTP sink and webhook source need `routing-http`).
///
/// The items' own docs come from the [`event_routing`] crate and name its
/// features: its `http` is this crate's `routing-http`, its `bus` (routing
/// on an [`EventBus`]) is always on here.
#[cfg(feature = "routing")]
#[cfg_attr(docsrs, doc(cfg(feature = "routing")))]
pub mod routing {
    pub use event_routing::*;
}
#[cfg(feature = "routing")]
#[cfg_attr(docsrs, doc(cfg(feature = "routing")))]
pub use event_routing::{
    Broker, CronSource, EventSink, EventSource, InProcessSink, ScalingEvent, SinkDlqHandler,
    TopicSink, Trigger, TriggerFilter,
};

/// The README's Rust code blocks, compiled and run as doctests (its NATS
/// block needs the `nats` feature, the others `memory`).
#[cfg(all(doctest, feature = "memory", feature = "nats"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// `docs/deployment.md`, compiled and run as doctests (it uses the
/// `memory`, `nats` and `routing` features).
#[cfg(all(doctest, feature = "memory", feature = "nats", feature = "routing"))]
#[doc = include_str!("../docs/deployment.md")]
pub struct DeploymentGuide;

/// The original README's API where this crate differs (README.md, "Code
/// written against the original `a3s-event` 0.3/0.4 README"): each block is
/// 0.3 code that does not compile here, failing with the error the README
/// describes. A change that makes one compile again fails here: then drop
/// that exception from the README.
///
/// `MemoryProvider::new` returns a `Result`:
///
/// ```compile_fail,E0277
/// use a3s_event::provider::memory::{MemoryConfig, MemoryProvider};
/// let _bus = a3s_event::EventBus::new(MemoryProvider::new(MemoryConfig::default()));
/// ```
///
/// `EventEncryptor::encrypt` takes the event id first:
///
/// ```compile_fail,E0061
/// fn seal(encryptor: &dyn a3s_event::EventEncryptor, payload: &serde_json::Value) {
///     let _ = encryptor.encrypt(payload);
/// }
/// ```
///
/// `SubscriptionFilter` has no `options` (a `SubscriptionRecord` has):
///
/// ```compile_fail,E0609
/// fn options(filter: a3s_event::SubscriptionFilter) {
///     let _ = filter.options;
/// }
/// ```
///
/// `WebhookSource` is a server, not a trait:
///
/// ```compile_fail,E0404
/// struct Hook;
/// impl a3s_event::routing::http::WebhookSource for Hook {}
/// ```
///
/// The 0.3 modules `store`, `broker`, `sink`, `source` and `scaling` are
/// not paths of this crate (their items are at the root and in `routing`):
///
/// ```compile_fail,E0432
/// use a3s_event::store::EventBus;
/// ```
///
/// ```compile_fail,E0432
/// use a3s_event::broker::Broker;
/// ```
///
/// ```compile_fail,E0432
/// use a3s_event::sink::LogSink;
/// ```
///
/// ```compile_fail,E0432
/// use a3s_event::source::CronSource;
/// ```
///
/// ```compile_fail,E0432
/// use a3s_event::scaling::ScaleUpPayload;
/// ```
///
/// and what the README says to write instead compiles:
///
/// ```
/// use a3s_event::provider::memory::{MemoryConfig, MemoryProvider};
/// use a3s_event::{EventBus, EventEncryptor, SubscriptionFilter, SubscriptionRecord};
///
/// fn seal(encryptor: &dyn EventEncryptor, event: &a3s_event::Event) -> a3s_event::Result<serde_json::Value> {
///     encryptor.encrypt(&event.id, &event.payload)
/// }
/// fn options(record: SubscriptionRecord) -> Option<a3s_event::SubscribeOptions> {
///     record.options
/// }
/// struct Samples;
/// #[async_trait::async_trait]
/// impl a3s_event::routing::MetricsSource for Samples {
///     fn name(&self) -> &str {
///         "samples"
///     }
///     async fn collect(&self) -> a3s_event::Result<Vec<a3s_event::routing::MetricSample>> {
///         Ok(Vec::new())
///     }
/// }
/// let _webhook: Option<a3s_event::routing::http::WebhookSource> = None;
/// use a3s_event::routing::scaling::ScaleUpPayload;
/// use a3s_event::routing::{CronSource, LogSink};
/// use a3s_event::{Broker, EventBus as _Bus};
/// # let _ = (None::<ScaleUpPayload>, None::<CronSource>, None::<LogSink>, None::<Broker>);
/// let _bus = EventBus::new(MemoryProvider::new(MemoryConfig::default())?);
/// # let _ = (seal, options);
/// # Ok::<(), a3s_event::Error>(())
/// ```
#[cfg(all(doctest, feature = "memory", feature = "routing-http"))]
pub struct ReadmeCompatExceptions;
