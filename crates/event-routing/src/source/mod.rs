//! Sources: components that produce events and hand them to a sink.
//!
//! - [`CronSource`]: on a cron expression or a fixed interval.
//! - [`MetricsSource`]: the trait applications implement to expose metrics;
//!   [`MetricsPoller`] turns one into events on a schedule.
//!
//! A source delivers to any [`EventSink`](crate::EventSink): a
//! [`TopicSink`](crate::TopicSink) to publish, a [`Broker`](crate::Broker) to
//! route, an [`InProcessSink`](crate::InProcessSink) to handle.

mod cron;
pub(crate) mod lifecycle;
mod metrics;
mod schedule;

pub use cron::CronSource;
pub use metrics::{MetricSample, MetricsPoller, MetricsSource};
pub use schedule::Schedule;

use crate::sink::EventSink;
use async_trait::async_trait;
use event_core::Result;
use std::sync::Arc;

/// Something that emits events into a sink until stopped.
///
/// # Contract
///
/// - [`start`](Self::start) begins emitting into `sink` in a background task
///   and returns at once; starting a running source is
///   [`Error::Conflict`](event_core::Error::Conflict).
/// - [`stop`](Self::stop) is graceful: no new emission starts, one in
///   progress completes, and it returns when the task has ended; every
///   call does (also one made while another is waiting, or after one was
///   given up on), and until then the source is running (starting it is a
///   conflict). Stopping a stopped source is a no-op. A stopped source may
///   be started again.
/// - The task runs on the Tokio runtime `start` is called on, and belongs
///   to it: when that runtime shuts down (a `#[tokio::main]` returning, a
///   setup or test runtime dropped) the source stops with it, logged at
///   `WARN`, though nobody called `stop`. [`is_running`](Self::is_running)
///   is then `false`, and `stop` returns
///   [`Error::Provider`](event_core::Error::Provider) ("ended abnormally",
///   as for a task that panicked); the source may be started again on a
///   live runtime. Start long-lived sources on the runtime that outlives
///   them.
/// - A failing delivery (an error or a panic in the sink) is logged, and
///   the source keeps going. Sources that count their emissions count it
///   too ([`CronSource::failures`]; [`MetricsPoller`] only logs).
#[async_trait]
pub trait EventSource: Send + Sync {
    /// A name for logs.
    fn name(&self) -> &str;

    /// Starts emitting into `sink`.
    async fn start(&self, sink: Arc<dyn EventSink>) -> Result<()>;

    /// Stops emitting (gracefully).
    async fn stop(&self) -> Result<()>;

    /// Whether the source is emitting.
    fn is_running(&self) -> bool;
}
