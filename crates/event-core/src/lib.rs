//! # event-core: the A3S Event contract
//!
//! The small, stable crate every A3S Event component and third-party provider
//! depends on:
//!
//! - [`Event`], [`ReceivedEvent`], [`ProviderInfo`], publish and subscribe
//!   options, [`SubscriptionFilter`];
//! - [`subject`]: subject, filter, category, topic and consumer-name
//!   validation and the allocation-free [`SubjectPattern`];
//! - the provider contract: [`EventProvider`], [`Subscription`],
//!   [`PendingEvent`] (read the "Contract" section of [`EventProvider`]),
//!   and [`KeepAliveClock`] for those who hold a delivery through long work;
//! - the hook traits the bus calls: [`EventEncryptor`], [`SchemaValidator`],
//!   [`DlqHandler`], [`StateStore`], [`EventRouter`];
//! - the one [`Error`] enum and [`Result`];
//! - feature `conformance`: the provider test suite ([`conformance`]), which
//!   every provider runs.
//!
//! Dependencies are kept to serde, serde_json, thiserror, async-trait, uuid and
//! futures-core (plus tokio behind `conformance`).
//!
//! ## Example
//!
//! ```
//! use event_core::{Event, subject::SubjectPattern};
//!
//! let event = Event::new(
//!     "events.market.forex.usd_cny",
//!     "market",
//!     "USD/CNY broke through 7.35",
//!     "reuters",
//!     serde_json::json!({"rate": 7.3521}),
//! );
//! let market = SubjectPattern::parse("events.market.>")?;
//! assert!(market.matches(&event.subject));
//! # Ok::<(), event_core::Error>(())
//! ```
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `conformance` | [`conformance`]: the provider test suite and the [`conformance_tests!`] macro |
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
pub mod hooks;
pub mod keepalive;
pub mod provider;
pub mod stream;
pub mod subject;
pub mod types;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub use error::{BoxError, Error, Result};
pub use hooks::{
    DeadLetterEvent, DlqHandler, EventEncryptor, EventRouter, SchemaValidator, StateStore,
};
pub use keepalive::KeepAliveClock;
pub use provider::{
    Acker, EventProvider, LONGEST_WAIT, LiveAckWait, PendingEvent, Subscription, deadline_after,
};
pub use stream::SubscriptionStream;
pub use subject::SubjectPattern;
pub use types::{
    DeliverPolicy, Event, EventCounts, MAX_PAYLOAD_DEPTH, ProviderInfo, PublishOptions,
    PublishOutcome, ReceivedEvent, SubscribeOptions, SubscriptionFilter, SubscriptionRecord,
    check_payload_depth, new_event_id, now_millis, source_scoped_dedup_id,
};
