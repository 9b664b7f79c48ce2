//! # event-memory: the in-process A3S Event provider
//!
//! [`MemoryProvider`] is the reference implementation of the
//! [`EventProvider`](event_core::EventProvider) contract and the test double
//! for applications: same semantics as the NATS JetStream provider (durable
//! consumers with acknowledgement, redelivery timers, `max_deliver`, every
//! deliver policy, dedup window, `Lagged` reports), without a server.
//! It passes the whole conformance suite.
//!
//! Events are kept in a bounded ring (`max_events`, and
//! [`MemoryLimits::max_bytes`] of encoded events if set); once full,
//! publishing evicts the oldest (one event, or as many as a large one needs
//! under `max_bytes`). An eviction is not O(1): to count each consumer's
//! `Lagged` report it visits every consumer the store tracks (every live
//! subscription, and every durable until it is
//! [`unsubscribe`](event_core::EventProvider::unsubscribe)d, read or not),
//! and matches the evicted event against the filter of each one it
//! overtakes, under the store lock: O(consumers) per evicting publish, tens
//! of nanoseconds per consumer (measured in an `opt-level = 1` build: 3 µs
//! per publish with no consumer, 20 µs with 1,000 idle durables left behind,
//! 550 µs with 10,000). Unsubscribe durables you no longer use. `info()` is
//! O(1) and `history()` walks back
//! from the newest event only as far as it needs to, skipping blocks of 64
//! events whose one-word category summary rules out the filter's category
//! (so a rare category is found without visiting every event; consumers
//! catching up skip the same way). A consumer that retention overtakes gets
//! [`Error::Lagged`](event_core::Error::Lagged) with the number of evicted
//! events its filter matched, and no report when none did. A consumer
//! created with `DeliverPolicy::ByStartSequence` before the oldest stored
//! event gets `Lagged` too, counting every evicted position from its start
//! (their subjects are gone: an upper bound), then the oldest stored event;
//! a `ByStartTime` start before it is not reported (the evicted events'
//! times are gone).
//! An event nak'd with a delay and evicted before its redelivery is
//! dropped from the consumer's unacknowledged deliveries (counted in
//! `Lagged`), so a long delay does not hold a `max_ack_pending` slot for an
//! event that can no longer be delivered. The consumer looks for such
//! events at a fetch once retention has evicted, since it last looked, as
//! many events as it has unacknowledged deliveries (the look walks them
//! all: amortised), so the slot is freed at once with one delivery
//! unacknowledged, and otherwise within that many further evictions; a
//! fetch waiting for the slot is woken by the eviction that makes the look
//! due, whatever the subject of the event whose publish caused it. A
//! delivery still in flight keeps its slot until it is settled or its ack
//! wait ends.
//!
//! A publish wakes the waiting subscriptions its event could match, not
//! all of them: waiters are grouped by their filter's category (hashed into
//! 64 groups, plus one for filters with a wildcard category, which every
//! publish wakes), so thousands of subscriptions waiting on other
//! categories cost a publish nothing (measured with 8,000 waiting on 8,000
//! other categories: about 140 subscription polls per publish instead of
//! 8,000). Subscribing is O(1) amortized, whatever the number of
//! subscriptions. Fetching needs a Tokio runtime with the time driver
//! (`enable_time`, as `#[tokio::main]` has) once a delivery is in flight:
//! its ack wait is a Tokio timer.
//!
//! Events are stored as `Arc<Event>` and delivered as the same `Arc`.
//! [`publish`](event_core::EventProvider::publish) copies the borrowed event
//! once; [`publish_shared`](event_core::EventProvider::publish_shared) stores
//! the caller's `Arc` itself, and
//! [`history_shared`](event_core::EventProvider::history_shared) returns the
//! stored `Arc`s, so neither copies an event. A publish, and a fetch
//! (`next`, `next_manual_ack`), spends a unit of tokio's cooperative
//! budget, so a long publish loop lets the subscriptions on its worker run
//! and a fetch loop that always finds work lets the other tasks run; either
//! may therefore return `Pending` once in a while, always before it takes
//! effect, so dropping it there stores or takes nothing (wrap it in
//! `tokio::task::unconstrained` to opt out).
//!
//! Ack timers, redelivery delays and the dedup window run on tokio's clock
//! (`tokio::time::Instant`), which is the system's monotonic clock unless
//! tokio's `test-util` feature pauses it: a test that pauses or advances time
//! (`start_paused = true`, `tokio::time::advance`) sees redeliveries and
//! dedup expiry at the runtime's virtual time, without waiting for real time.
//!
//! ```
//! use event_core::{Event, EventProvider};
//! use event_memory::{MemoryConfig, MemoryProvider};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> event_core::Result<()> {
//! let provider = MemoryProvider::new(MemoryConfig {
//!     subject_prefix: "events".to_string(),
//!     max_events: 10_000,
//!     channel_capacity: 1_000,
//! })?;
//! let subject = provider.build_subject("task", "completed");
//! provider.publish(&Event::new(subject, "task", "Task done", "worker", serde_json::json!({"id": 7}))).await?;
//! let recent = provider.history(Some("events.task.>"), 10).await?;
//! assert_eq!(recent.len(), 1);
//! # Ok(()) }
//! ```

mod config;
mod consumer;
mod provider;
mod signal;
mod store;
mod subscription;

pub use config::{MemoryConfig, MemoryLimits};
pub use provider::MemoryProvider;
