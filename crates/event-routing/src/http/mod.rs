//! CloudEvents over HTTP (feature `http`): [`HttpSink`] POSTs routed events
//! to an endpoint, [`WebhookSource`] receives them.
//!
//! Both use `event-cloudevents`' HTTP binding, in binary mode (attributes in
//! `ce-*` headers, the default, as in Knative) or structured mode (one
//! `application/cloudevents+json` document).

mod sink;
mod webhook;

pub use event_cloudevents::http::Mode;
pub use sink::HttpSink;
pub use webhook::{
    DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_TIMEOUT, WebhookSource, WebhookStats,
};
