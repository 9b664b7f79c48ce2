use crate::error::Result;
use async_trait::async_trait;
use std::sync::Arc;

/// Receives every event the bus published, for routing (a Broker).
///
/// # Contract
///
/// - Called after the provider accepted the event, with the plaintext event
///   and its sequence.
/// - Must not wait for deliveries: enqueue and return. If the queue is full it
///   either waits for room or returns an error, per its documented policy;
///   it never drops the event silently.
#[async_trait]
pub trait EventRouter: Send + Sync {
    /// Hands a published event over for routing.
    async fn route_published(&self, event: Arc<crate::Event>, sequence: u64) -> Result<()>;
}
