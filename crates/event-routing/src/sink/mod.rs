//! Sinks: where triggers deliver events.
//!
//! | sink | delivers by |
//! |---|---|
//! | [`TopicSink`] | publishing to a provider subject (a new event id, the original in metadata) |
//! | [`InProcessSink`] | calling an async closure |
//! | [`LogSink`] | logging through `tracing` |
//! | [`CollectorSink`] | keeping the events in memory (tests) |
//! | [`FailingSink`] | failing, always or a given number of times (tests) |

mod collector;
mod failing;
mod in_process;
mod log;
mod topic;

pub use collector::CollectorSink;
pub use failing::FailingSink;
pub use in_process::InProcessSink;
pub use log::LogSink;
pub use topic::TopicSink;
#[cfg(feature = "http")]
pub(crate) use topic::count_hop;

use async_trait::async_trait;
use event_core::{Event, Result};

/// A delivery target for routed events.
///
/// # Contract
///
/// - [`deliver`](Self::deliver) returns `Ok` only once the event is handed
///   over (published, handled, sent and answered with success). An error
///   makes the broker retry per the trigger's delivery spec, then
///   dead-letter.
/// - It may be called concurrently from many tasks, and again for the same
///   event (retries, redelivery of a durable feed): delivery is
///   at-least-once.
/// - The broker may cancel a delivery that exceeds its timeout by dropping
///   the future; a sink must tolerate being dropped at any `.await`.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Delivers one event.
    async fn deliver(&self, event: &Event) -> Result<()>;

    /// A name for logs and metrics.
    fn name(&self) -> &str;
}
