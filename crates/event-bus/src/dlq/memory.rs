use async_trait::async_trait;
use event_core::{DeadLetterEvent, DlqHandler, Error, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// An in-process dead-letter queue holding the newest `capacity` dead
/// letters; when full, the oldest is evicted (and counted in
/// [`evicted`](Self::evicted)).
///
/// ```
/// use event_bus::dlq::MemoryDlqHandler;
/// use event_core::{DeadLetterEvent, DlqHandler, Event};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> event_core::Result<()> {
/// let dlq = MemoryDlqHandler::new(100)?;
/// let event = Event::new("events.a.b", "a", "s", "src", serde_json::json!({}));
/// dlq.handle(DeadLetterEvent::new(event, "handler failed").with_attempts(3)).await?;
/// assert_eq!(dlq.list(10).await?[0].delivery_attempts, 3);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MemoryDlqHandler {
    capacity: usize,
    /// Newest at the front.
    letters: Mutex<VecDeque<DeadLetterEvent>>,
    evicted: AtomicU64,
}

impl Default for MemoryDlqHandler {
    /// Capacity 10,000.
    fn default() -> Self {
        Self {
            capacity: 10_000,
            letters: Mutex::new(VecDeque::new()),
            evicted: AtomicU64::new(0),
        }
    }
}

impl MemoryDlqHandler {
    /// A queue holding at most `capacity` dead letters; 0 is
    /// [`Error::InvalidConfig`].
    pub fn new(capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::invalid_config(
                "capacity",
                "must be greater than zero",
            ));
        }
        Ok(Self {
            capacity,
            ..Self::default()
        })
    }

    /// Dead letters evicted because the queue was full.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Dead letters held (the synchronous form of `count`).
    pub fn len(&self) -> usize {
        self.letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no dead letter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns every dead letter, newest first.
    pub fn drain(&self) -> Vec<DeadLetterEvent> {
        self.letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }
}

#[async_trait]
impl DlqHandler for MemoryDlqHandler {
    async fn handle(&self, dead_letter: DeadLetterEvent) -> Result<()> {
        let mut letters = self.letters.lock().unwrap_or_else(PoisonError::into_inner);
        letters.push_front(dead_letter);
        while letters.len() > self.capacity {
            letters.pop_back();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetterEvent>> {
        let letters = self.letters.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(letters.iter().take(limit).cloned().collect())
    }

    async fn count(&self) -> Result<usize> {
        Ok(self
            .letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::Event;

    fn letter(n: u32) -> DeadLetterEvent {
        DeadLetterEvent::new(
            Event::new("events.a.b", "a", format!("{n}"), "t", serde_json::json!(n)),
            format!("reason {n}"),
        )
    }

    #[tokio::test]
    async fn bounded_newest_first() {
        let dlq = MemoryDlqHandler::new(3).unwrap();
        for n in 0..5 {
            dlq.handle(letter(n)).await.unwrap();
        }
        assert_eq!(dlq.count().await.unwrap(), 3);
        assert_eq!(dlq.evicted(), 2);
        let reasons: Vec<_> = dlq
            .list(10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.reason)
            .collect();
        assert_eq!(reasons, ["reason 4", "reason 3", "reason 2"]);
        assert_eq!(dlq.list(1).await.unwrap().len(), 1);
        assert_eq!(dlq.drain().len(), 3);
        assert_eq!(dlq.count().await.unwrap(), 0);
    }

    #[test]
    fn zero_capacity_is_a_config_error() {
        assert!(matches!(
            MemoryDlqHandler::new(0),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
