use super::EventSink;
use async_trait::async_trait;
use event_core::{Error, Event, Result};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// Fails deliveries, always or the first `n` times, and records when each
/// attempt was made (for tests of retries and dead-lettering).
///
/// Failures are [`Error::Connection`] with the configured message. Every
/// attempt's time is kept for the sink's lifetime (16 bytes each): a test
/// sink, not one for a long-running process (an [`InProcessSink`] that
/// returns an error fails deliveries without keeping anything).
///
/// [`InProcessSink`]: crate::InProcessSink
#[derive(Debug)]
pub struct FailingSink {
    name: String,
    message: String,
    /// Attempts that fail before deliveries succeed; `u64::MAX`: all.
    fail_first: u64,
    attempts: AtomicU64,
    times: Mutex<Vec<Instant>>,
}

impl FailingSink {
    /// A sink whose every delivery fails with `message`.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self::fail_first(name, message, u64::MAX)
    }

    /// A sink whose first `failures` deliveries fail, then succeed.
    pub fn fail_first(name: impl Into<String>, message: impl Into<String>, failures: u64) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
            fail_first: failures,
            attempts: AtomicU64::new(0),
            times: Mutex::new(Vec::new()),
        }
    }

    /// Delivery attempts so far (failed and successful).
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// When each attempt was made (tokio's clock, so a paused test clock
    /// gives exact values).
    pub fn attempt_times(&self) -> Vec<Instant> {
        self.times.lock().clone()
    }
}

#[async_trait]
impl EventSink for FailingSink {
    async fn deliver(&self, _event: &Event) -> Result<()> {
        self.times.lock().push(Instant::now());
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            Err(Error::Connection(self.message.clone()))
        } else {
            Ok(())
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
