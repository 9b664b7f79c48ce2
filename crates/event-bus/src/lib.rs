//! # event-bus: the A3S EventBus
//!
//! [`EventBus`] is the high-level API of A3S Event over any
//! [`EventProvider`](event_core::EventProvider): it adds what no broker does
//! for you, and depends on `event-core` alone. Everything pluggable arrives
//! as an `Arc<dyn Trait>` from `event-core`'s hooks.
//!
//! - **Publish pipeline** ([`EventBus::publish`], and
//!   [`EventBus::publish_batch`] for many events in one provider call):
//!   subject validation → schema validation of the plaintext → payload
//!   encryption (event id as associated data) → provider publish
//!   (deduplicated by event id) → the router hook (a Broker; it enqueues,
//!   so the publisher does not wait for deliveries) → metrics, all inside
//!   one `tracing` span. [`EventBus::publish_event_stored`] (and
//!   [`EventBus::publish_batch_stored`]) tell a router's refusal of a
//!   stored event ([`Stored::not_routed`]) from a publish that stored
//!   nothing.
//! - **Managed subscriptions** ([`EventBus::update_subscription`],
//!   [`EventBus::update_subscriptions`] for many in one save,
//!   [`EventBus::create_subscriber`]): filters and options per subscriber,
//!   persisted through a [`StateStore`](event_core::StateStore)
//!   ([`state::FileStateStore`], [`state::MemoryStateStore`]), durable
//!   consumer names derived by [`durable_consumer_name`]. Subscriptions
//!   decrypt for the caller ([`BusSubscription`]).
//! - **Consumer runner** ([`EventBus::consume`], module [`consumer`]):
//!   bounded concurrency, ack on success, nak with backoff on failure, dead
//!   letters with metadata when exhausted, caught panics, timeouts, graceful
//!   shutdown.
//! - **Dead-letter queues** ([`dlq`]): bounded in-memory, or stored on a
//!   provider with re-drive.
//! - **Metrics** ([`metrics::EventMetrics`]): lock-free counters and a
//!   publish-latency histogram; JSON (camelCase) and Prometheus text.
//!
//! ## Example
//!
//! ```
//! use event_bus::{EventBus, consumer::ConsumerConfig, dlq::MemoryDlqHandler};
//! use event_core::{SubscribeOptions, SubscriptionFilter};
//! use event_memory::MemoryProvider;
//! use std::{sync::Arc, time::Duration};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> event_core::Result<()> {
//! let bus = EventBus::new(MemoryProvider::default());
//! let dlq = Arc::new(MemoryDlqHandler::default());
//! bus.set_dlq_handler(dlq.clone());
//!
//! bus.update_subscription_with_options(
//!     SubscriptionFilter {
//!         subscriber_id: "billing".to_string(),
//!         subjects: vec!["events.orders.>".to_string()],
//!         durable: true,
//!     },
//!     SubscribeOptions {
//!         max_deliver: Some(3),
//!         backoff: vec![Duration::from_millis(10)],
//!         ..SubscribeOptions::default()
//!     },
//! )
//! .await?;
//!
//! bus.publish("orders", "created", "Order 1", "shop", serde_json::json!({"total": 10})).await?;
//! bus.publish("orders", "created", "Order 2", "shop", serde_json::json!({"total": -1})).await?;
//!
//! let consumer = bus
//!     .consume(
//!         "billing",
//!         |received: event_core::ReceivedEvent| async move {
//!             if received.event.payload["total"].as_i64() < Some(0) {
//!                 return Err("negative total");
//!             }
//!             Ok(())
//!         },
//!         ConsumerConfig::default(),
//!     )
//!     .await?;
//!
//! // order 2 fails three times and is dead-lettered
//! while event_core::DlqHandler::count(&*dlq).await? == 0 {
//!     tokio::time::sleep(Duration::from_millis(5)).await;
//! }
//! let report = consumer.shutdown(Duration::from_secs(1)).await;
//! assert_eq!((report.acked, report.retried, report.dead_lettered), (1, 2, 1));
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bus;
pub mod consumer;
pub mod dlq;
mod hooks;
pub mod metrics;
mod naming;
mod refused;
pub mod state;
mod subscription;
mod subscriptions;
mod text;

pub use bus::{EventBus, Stored};
pub use consumer::{
    ConsumerConfig, ConsumerHandle, ConsumerReport, Handler, SHUTDOWN_CLOSE_GRACE, STALL_THRESHOLD,
};
pub use dlq::{MemoryDlqHandler, ProviderDlqHandler};
pub use hooks::PlaintextPolicy;
pub use metrics::{EventMetrics, MetricsSnapshot};
pub use naming::durable_consumer_name;
pub use state::{DEFAULT_STATE_STORE_TIMEOUT, FileStateStore, MemoryStateStore};
pub use subscription::BusSubscription;
