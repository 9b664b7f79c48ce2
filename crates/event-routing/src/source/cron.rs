use super::EventSource;
use super::lifecycle::Lifecycle;
use super::schedule::Schedule;
use crate::sink::EventSink;
use async_trait::async_trait;
use event_core::{Event, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

type Factory = Arc<dyn Fn(u64) -> Event + Send + Sync>;

/// Emits an event on a [`Schedule`]: a cron expression or a fixed interval.
///
/// Each fire calls the factory with the tick number (1, 2, ...) and delivers
/// the event it returns. A failed delivery, or a panic in the factory or the
/// sink, is logged and counted ([`failures`](Self::failures)); the schedule
/// goes on. [`stop`](EventSource::stop)
/// waits for a delivery in progress, then ends the task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> event_core::Result<()> {
/// use event_core::Event;
/// use event_routing::{CollectorSink, CronSource, EventSource};
/// use std::{sync::Arc, time::Duration};
///
/// let heartbeat = CronSource::every("heartbeat", Duration::from_secs(10), |tick| {
///     Event::new("events.system.heartbeat", "system", format!("beat {tick}"), "cron",
///         serde_json::json!({"tick": tick}))
/// })?;
/// let sink = Arc::new(CollectorSink::new("beats"));
/// heartbeat.start(sink.clone()).await?;
/// tokio::time::sleep(Duration::from_secs(35)).await; // paused clock: instant
/// heartbeat.stop().await?;
/// assert_eq!(sink.len(), 3);
/// # Ok(()) }
/// ```
pub struct CronSource {
    name: String,
    schedule: Schedule,
    factory: Factory,
    lifecycle: Lifecycle,
    emitted: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for CronSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronSource")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("running", &self.lifecycle.is_running())
            .finish_non_exhaustive()
    }
}

impl CronSource {
    /// A source firing on `schedule`, emitting `factory(tick)`.
    pub fn new<F>(name: impl Into<String>, schedule: Schedule, factory: F) -> Self
    where
        F: Fn(u64) -> Event + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            schedule,
            factory: Arc::new(factory),
            lifecycle: Lifecycle::default(),
            emitted: Arc::new(AtomicU64::new(0)),
            failures: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A source firing every `period` ([`Error::InvalidConfig`](event_core::Error::InvalidConfig)
    /// for zero).
    pub fn every<F>(name: impl Into<String>, period: Duration, factory: F) -> Result<Self>
    where
        F: Fn(u64) -> Event + Send + Sync + 'static,
    {
        Ok(Self::new(name, Schedule::every(period)?, factory))
    }

    /// A source firing on the cron expression `expression` (see
    /// [`Schedule::cron`]).
    pub fn cron<F>(name: impl Into<String>, expression: &str, factory: F) -> Result<Self>
    where
        F: Fn(u64) -> Event + Send + Sync + 'static,
    {
        Ok(Self::new(name, Schedule::cron(expression)?, factory))
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Events delivered successfully so far.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }

    /// Emissions that failed so far (the delivery failed, or the factory or
    /// the sink panicked).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl EventSource for CronSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self, sink: Arc<dyn EventSink>) -> Result<()> {
        let schedule = self.schedule.clone();
        let factory = self.factory.clone();
        let emitted = self.emitted.clone();
        let failures = self.failures.clone();
        let name = self.name.clone();
        self.lifecycle.start(&self.name, move |stop| async move {
            schedule
                .run(stop, |tick| {
                    let (factory, sink) = (factory.clone(), sink.clone());
                    let (emitted, failures, name) = (emitted.clone(), failures.clone(), &name);
                    async move {
                        // A panicking factory or sink fails this emission
                        // only; the schedule goes on.
                        let emitted_now = crate::panic::caught(|| async move {
                            let event = factory(tick);
                            sink.deliver(&event).await
                        })
                        .await;
                        match emitted_now {
                            Ok(Ok(())) => {
                                emitted.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(err)) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(source = %name, tick, error = %err, "cron source: delivery failed");
                            }
                            Err(panic) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(source = %name, tick, panic = %panic, "cron source: the factory or the sink panicked");
                            }
                        }
                    }
                })
                .await;
        })
    }

    async fn stop(&self) -> Result<()> {
        self.lifecycle.stop(&self.name).await
    }

    fn is_running(&self) -> bool {
        self.lifecycle.is_running()
    }
}
