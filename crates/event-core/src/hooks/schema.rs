use crate::error::Result;
use crate::types::Event;

/// Validates events before they are published.
///
/// # Contract
///
/// - Called with the plaintext event, before encryption.
/// - Returns [`Error::SchemaValidation`](crate::Error::SchemaValidation) naming
///   the event type, version and failing path for an invalid payload.
/// - Decides itself what to do with untyped events (`event_type` empty) and
///   unknown types (its policy); returning `Ok(())` lets them through.
/// - CPU-bound, called concurrently.
pub trait SchemaValidator: Send + Sync {
    /// Validates `event`.
    fn validate(&self, event: &Event) -> Result<()>;
}
