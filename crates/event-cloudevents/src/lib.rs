//! # event-cloudevents: A3S events as CloudEvents v1.0
//!
//! Conversion between the A3S [`Event`](event_core::Event) and
//! [CloudEvents v1.0](https://github.com/cloudevents/spec), built on the
//! official [`cloudevents-sdk`](cloudevents) (event model, builder,
//! validation and serialisation are the SDK's), plus protocol bindings:
//!
//! - [`From<Event> for CloudEvent`](CloudEvent) and
//!   [`TryFrom<CloudEvent> for Event`](CloudEvent): every event comes back
//!   equal, including empty fields, odd metadata keys and far-future
//!   timestamps, and the same event always gives the same CloudEvent (an
//!   empty id is replaced by one derived from the content, not a random
//!   one). The A3S fields travel as spec-valid extensions (`a3scategory`,
//!   `a3ssummary`, `a3sversion`, one per metadata entry);
//!   [`mapping`] documents every attribute, default and error. A CloudEvent
//!   from another system, read in and written back out, keeps its
//!   attributes and data bytes, with what an A3S event cannot hold made
//!   explicit there: integer and boolean extensions become strings, `time`
//!   whole milliseconds, JSON data a `serde_json::Value` (numbers as exact
//!   as `u64`, `i64` or `f64` hold them).
//! - Data of any content type: JSON data is the payload; text, XML and
//!   binary data (`text/plain`, `application/xml`, `image/png`, ...) is held
//!   as a string payload (binary as base64) with its type in metadata, and
//!   goes back out as the same type and bytes in every mode; [`data`] reads
//!   and sets it without knowing the encoding.
//! - Structured mode ([`to_structured`] / [`from_structured`],
//!   `application/cloudevents+json`, and batches).
//! - The provider binding ([`CloudEventProviderExt`]): publish CloudEvents to
//!   and receive them from any `EventProvider` (NATS JetStream, memory, ...).
//! - The HTTP binding (module `http`, behind features): binary and
//!   structured mode messages, `http::client::send_http` with reqwest and the
//!   `http::server::HttpEvent` axum extractor.
//! - The NATS binding (module `nats`, feature `nats`): binary mode (`ce-*`
//!   message headers, NATS 2.2+) and structured mode messages as the
//!   CloudEvents NATS protocol binding specifies, interoperable with other
//!   SDKs' NATS protocols; `nats::publish` on an `async_nats::Client` and
//!   `nats::from_message` for received messages.
//!
//! [`CloudEvent`] is the SDK's event (it dereferences to
//! [`cloudevents::Event`]) under the name the A3S API uses.
//!
//! ## Interoperability
//!
//! Checked against the Rust `cloudevents-sdk` 0.9 over HTTP and NATS:
//!
//! - That SDK neither percent-encodes the `ce-*` headers it sends in HTTP
//!   binary mode nor decodes the ones it receives, as the HTTP binding
//!   requires (section 3.1.3.2), so values with `%`, spaces or non-ASCII
//!   characters differ between the two sides. Use structured mode with it.
//! - It refuses object data under a `+json` content type with parameters
//!   (`application/vnd.x+json; charset=utf-8`).
//! - To forward data bytes unchanged (a signed body), relay the
//!   [`CloudEvent`] (`http::cloudevent_from_http` then
//!   `http::cloudevent_to_http`, or the `nats` pair), not an `Event`: an
//!   `Event` holds JSON data as a [`serde_json::Value`], written back with
//!   keys sorted and whitespace and escapes normalised.
//! - Data without a `datacontenttype` must be JSON in every mode (as the
//!   JSON event format implies); a binary-mode body of text or bytes with no
//!   `Content-Type` is refused, not guessed at.
//! - Metadata keys other than lowercase letters and digits become
//!   `a3sx<hex>` extensions, often longer than the 20 characters the spec
//!   advises ([`mapping`]).
//!
//! ## Example
//!
//! ```
//! use cloudevents::AttributesReader;
//! use event_cloudevents::{CloudEvent, from_structured, to_structured};
//! use event_core::Event;
//!
//! let event = Event::typed(
//!     "events.market.forex",
//!     "market",
//!     "forex.rate_change",
//!     2,
//!     "USD/CNY broke 7.35",
//!     "reuters",
//!     serde_json::json!({"rate": 7.3521}),
//! )
//! .with_metadata("X-Request-Id", "r-42");
//!
//! let ce = CloudEvent::from(event.clone());
//! assert_eq!(ce.ty(), "forex.rate_change");
//! assert_eq!(ce.subject(), Some("events.market.forex"));
//! assert!(ce.extension("a3ssummary").is_some());
//! assert_eq!(Event::try_from(ce)?, event);
//!
//! let json = to_structured(&event)?; // application/cloudevents+json
//! assert_eq!(from_structured(&json)?, event);
//! # Ok::<(), event_core::Error>(())
//! ```
//!
//! ## Features
//!
//! No feature is on by default: the default build links no HTTP or NATS
//! crate.
//!
//! | feature | what it adds |
//! |---|---|
//! | `http` | module `http`: binary/structured HTTP messages on `http` crate types; `http::redact_url`, endpoint URLs as errors and logs show them |
//! | `http-client` | `http::client::send_http` (and `post_http`, which ignores replies): POST events with reqwest (the SDK's `reqwest` binding) |
//! | `http-server` | `http::server::HttpEvent`: the axum extractor and responses (the SDK's HTTP binding) |
//! | `nats` | module `nats`: binary/structured NATS messages (`async_nats::HeaderMap` + payload), `publish` and `from_message` with `async-nats` |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cloudevent;
mod convert;
pub mod data;
mod derived_id;
pub mod mapping;
#[cfg(any(feature = "http", feature = "nats"))]
mod percent;
pub mod provider;
pub mod structured;

#[cfg(all(test, any(feature = "http", feature = "nats")))]
mod testing;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;

#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;

/// The official CloudEvents SDK (`cloudevents-sdk`), re-exported for its
/// traits and types (`AttributesReader`, `Data`, `EventBuilderV10`, ...).
pub use cloudevents;

pub use cloudevent::CloudEvent;

/// How a protocol binding (HTTP, NATS) lays out an event in a message; the
/// same type in every binding, so a bridge passes it through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Attributes in `ce-*` headers, data in the message body (the payload
    /// on NATS). The default.
    #[default]
    Binary,
    /// One `application/cloudevents+json` document in the body, announced
    /// by its `Content-Type` header.
    Structured,
}
pub use provider::{
    CloudEventProviderExt, CloudEventSubscription, ReceivedCloudEvent, cloudevent_dedup_id,
};
pub use structured::{
    BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE, cloudevent_from_structured,
    cloudevent_to_structured, from_structured, from_structured_batch, to_structured,
    to_structured_batch,
};
