use super::EventSink;
use async_trait::async_trait;
use event_core::{Event, Result};
use parking_lot::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Keeps every delivered event in memory, in delivery order (for tests).
#[derive(Debug, Default)]
pub struct CollectorSink {
    name: String,
    events: Mutex<Vec<Event>>,
    changed: Notify,
}

impl CollectorSink {
    /// An empty collector.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// A copy of the events delivered so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().clone()
    }

    /// How many events were delivered.
    pub fn len(&self) -> usize {
        self.events.lock().len()
    }

    /// Whether nothing was delivered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the events delivered so far.
    pub fn clear(&self) {
        self.events.lock().clear();
    }

    /// Waits until at least `count` events were delivered or `timeout`
    /// passed; returns whether the count was reached.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> bool {
        let reached = async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.len() >= count {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, reached).await.is_ok()
    }
}

#[async_trait]
impl EventSink for CollectorSink {
    async fn deliver(&self, event: &Event) -> Result<()> {
        self.events.lock().push(event.clone());
        self.changed.notify_waiters();
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
