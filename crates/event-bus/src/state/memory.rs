use async_trait::async_trait;
use event_core::{Result, StateStore, SubscriptionRecord};
use std::sync::{Mutex, PoisonError};

/// Keeps the subscriptions in memory: survives a bus being dropped and
/// re-created in one process (share the store), not a process restart.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    records: Mutex<Vec<SubscriptionRecord>>,
    saves: std::sync::atomic::AtomicU64,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times the store was saved (for tests).
    pub fn saves(&self) -> u64 {
        self.saves.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn load(&self) -> Result<Vec<SubscriptionRecord>> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    async fn save(&self, subscriptions: &[SubscriptionRecord]) -> Result<()> {
        *self.records.lock().unwrap_or_else(PoisonError::into_inner) = subscriptions.to_vec();
        self.saves
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
