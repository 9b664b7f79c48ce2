use async_trait::async_trait;
use event_core::{DeadLetterEvent, DlqHandler, Error, Result};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// An in-process dead-letter queue holding the newest `capacity` dead
/// letters; when full, the oldest is evicted (and counted in
/// [`evicted`](Self::evicted)).
///
/// A dead letter for an event (and subscriber, see
/// [`DeadLetterEvent::subscriber`]) it already holds is not stored again:
/// the same letter handed over twice, or an event's spare delivery failing
/// after its final delivery was dead-lettered but not settled, leaves the
/// first letter, with its attempt count (as
/// [`ProviderDlqHandler`](super::ProviderDlqHandler) does).
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
    letters: Mutex<Letters>,
    evicted: AtomicU64,
}

/// The letters held, and the (event id, subscriber) of each.
#[derive(Debug, Default)]
struct Letters {
    /// Newest at the front.
    queue: VecDeque<DeadLetterEvent>,
    held: HashSet<(String, Option<String>)>,
}

/// What makes two dead letters the same one.
fn key(letter: &DeadLetterEvent) -> (String, Option<String>) {
    (letter.event.id.clone(), letter.subscriber.clone())
}

impl Default for MemoryDlqHandler {
    /// Capacity 10,000.
    fn default() -> Self {
        Self {
            capacity: 10_000,
            letters: Mutex::new(Letters::default()),
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
            .queue
            .len()
    }

    /// Whether no dead letter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns every dead letter, newest first.
    pub fn drain(&self) -> Vec<DeadLetterEvent> {
        let mut letters = self.letters.lock().unwrap_or_else(PoisonError::into_inner);
        letters.held.clear();
        letters.queue.drain(..).collect()
    }
}

#[async_trait]
impl DlqHandler for MemoryDlqHandler {
    async fn handle(&self, dead_letter: DeadLetterEvent) -> Result<()> {
        let mut letters = self.letters.lock().unwrap_or_else(PoisonError::into_inner);
        if !letters.held.insert(key(&dead_letter)) {
            return Ok(());
        }
        letters.queue.push_front(dead_letter);
        while letters.queue.len() > self.capacity {
            if let Some(evicted) = letters.queue.pop_back() {
                letters.held.remove(&key(&evicted));
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetterEvent>> {
        let letters = self.letters.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(letters.queue.iter().take(limit).cloned().collect())
    }

    async fn count(&self) -> Result<usize> {
        Ok(self
            .letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queue
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

    #[tokio::test]
    async fn a_letter_held_already_is_not_stored_again() {
        let dlq = MemoryDlqHandler::new(2).unwrap();
        let first = letter(1).with_attempts(3).with_subscriber("w1");
        dlq.handle(first.clone()).await.unwrap();
        // the same event and subscriber again (a retry, or the spare
        // delivery failing): the first letter stays
        dlq.handle(first.clone().with_attempts(4)).await.unwrap();
        assert_eq!(dlq.list(10).await.unwrap(), vec![first.clone()]);
        // another subscriber's failure of the same event is its own letter
        let other = first.clone().with_subscriber("w2");
        dlq.handle(other.clone()).await.unwrap();
        assert_eq!(dlq.count().await.unwrap(), 2);
        // once evicted (or drained), a letter can be stored again
        dlq.handle(letter(2)).await.unwrap();
        assert_eq!(dlq.evicted(), 1);
        dlq.handle(first.clone()).await.unwrap();
        assert_eq!(dlq.list(1).await.unwrap(), vec![first.clone()]);
        dlq.drain();
        dlq.handle(first.clone()).await.unwrap();
        assert_eq!(dlq.count().await.unwrap(), 1);
    }

    #[test]
    fn zero_capacity_is_a_config_error() {
        assert!(matches!(
            MemoryDlqHandler::new(0),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
