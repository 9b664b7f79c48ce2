//! # event-routing: Knative-style routing for A3S Event
//!
//! A [`Broker`] receives events and delivers each one to every [`Trigger`]
//! whose [`TriggerFilter`] matches, through the trigger's [`EventSink`], with
//! the trigger's [`DeliverySpec`] (retries, linear or exponential backoff,
//! per-attempt timeout, dead-letter sink) — the Knative Eventing model, in
//! process.
//!
//! - **Filters**: event type, source, subject pattern (`*`, `>`), metadata
//!   attributes, and Knative's `exact` / `prefix` / `suffix` with `all` /
//!   `any` / `not` ([`FilterExpr`]). Triggers are indexed, so routing an event
//!   evaluates only the filters that can match it, and can be added,
//!   removed or replaced ([`Broker::replace_trigger`], no event missed)
//!   while events are routed.
//! - **Off the publisher's path**: attached to an `EventBus` (as its
//!   [`EventRouter`](event_core::EventRouter)), the broker takes each
//!   published event into a bounded queue drained by parallel workers; a full
//!   queue waits or refuses per [`QueueFullPolicy`], visibly
//!   ([`BrokerMetrics`]).
//! - **Durable feeds**: [`Broker::feed`] routes a durable subscription and
//!   acknowledges each event once every matching trigger delivered or
//!   dead-lettered it.
//! - **Sinks**: [`TopicSink`], [`InProcessSink`], [`LogSink`],
//!   [`CollectorSink`], [`FailingSink`]; [`SinkDlqHandler`] turns any sink
//!   into the bus's dead-letter handler.
//! - **Sources**: [`CronSource`] (cron expressions and intervals),
//!   [`MetricsSource`] + [`MetricsPoller`].
//! - **Scaling**: typed Gateway ↔ Box payloads in [`scaling`].
//!
//! ## Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> event_core::Result<()> {
//! use event_core::Event;
//! use event_routing::{
//!     BackoffPolicy, Broker, CollectorSink, DeliverySpec, FailingSink, FilterExpr, Trigger,
//!     TriggerFilter,
//! };
//! use std::{sync::Arc, time::Duration};
//!
//! let broker = Broker::new();
//! let audit = Arc::new(CollectorSink::new("audit"));
//! let dead = Arc::new(CollectorSink::new("dead letters"));
//!
//! // Every order event, except test traffic, to the audit log.
//! broker.add_trigger(Trigger::new(
//!     "audit-orders",
//!     TriggerFilter::by_subject("events.orders.>")
//!         .with_filter(FilterExpr::not(FilterExpr::prefix("source", "test-"))),
//!     audit.clone(),
//! ))?;
//! // Created orders to a flaky webhook: 3 retries, then the dead-letter sink.
//! broker.add_trigger(
//!     Trigger::new(
//!         "notify",
//!         TriggerFilter::by_type("order.created"),
//!         Arc::new(FailingSink::new("webhook", "503 Service Unavailable")),
//!     )
//!     .with_delivery(
//!         DeliverySpec::new()
//!             .with_retries(3)
//!             .with_backoff(BackoffPolicy::Exponential, Duration::from_millis(100))
//!             .with_dead_letter_sink(dead.clone()),
//!     ),
//! )?;
//!
//! let event = Event::typed("events.orders.created", "orders", "order.created", 1,
//!     "order 42", "shop", serde_json::json!({"id": 42}));
//! let result = broker.route(&event).await;
//! assert_eq!((result.matched, result.delivered, result.dead_lettered), (2, 1, 1));
//! assert_eq!(dead.events()[0].metadata["dlqattempts"], "4");
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `bus` (default) | [`TopicSink::through_bus`] and [`Broker::attach`]: routing on an `EventBus` (`event-bus`, no HTTP) |
//! | `http` | [`http::HttpSink`] and [`http::WebhookSource`]: CloudEvents over HTTP (reqwest, axum) |
//!
//! Without `http` the crate pulls no HTTP crates.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod broker;
mod dlq;
pub mod filter;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod index;
pub mod metadata;
mod panic;
#[cfg(feature = "bus")]
mod prometheus;
pub mod scaling;
mod sink;
mod source;
mod trigger;
mod warn_limit;

pub use broker::{
    Broker, BrokerConfig, BrokerFeed, BrokerMetrics, BrokerShutdownReport, FEED_CLOSE_GRACE,
    FeedStats, MAX_BROKER_NESTING, QueueFullError, QueueFullPolicy, RouteResult, TriggerMetrics,
};
pub use dlq::SinkDlqHandler;
pub use filter::{CompiledFilter, FilterExpr, TriggerFilter};
pub use scaling::ScalingEvent;
pub use sink::{CollectorSink, EventSink, FailingSink, InProcessSink, LogSink, TopicSink};
pub use source::{CronSource, EventSource, MetricSample, MetricsPoller, MetricsSource, Schedule};
pub use trigger::{BackoffPolicy, DeliverySpec, Trigger};
pub use warn_limit::LOSS_WARN_INTERVAL;

/// `docs/custom-providers.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/custom-providers.md")]
pub struct CustomProvidersGuide;
