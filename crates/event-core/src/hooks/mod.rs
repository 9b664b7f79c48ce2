//! Hook traits the event bus calls.
//!
//! They live in the core so that `event-bus` depends on `event-core` alone:
//! encryptors, schema registries, DLQ handlers, state stores and routers
//! arrive as `Arc<dyn Trait>` from their own crates (or the application).

mod dlq;
mod encrypt;
mod router;
mod schema;
mod state;

pub use dlq::{DeadLetterEvent, DlqHandler};
pub use encrypt::EventEncryptor;
pub use router::EventRouter;
pub use schema::SchemaValidator;
pub use state::StateStore;
