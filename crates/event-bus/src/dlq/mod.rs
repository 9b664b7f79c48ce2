//! Dead-letter queues: [`MemoryDlqHandler`] (bounded, in process) and
//! [`ProviderDlqHandler`] (dead letters stored as events on the provider, so
//! they survive restarts, with re-drive).
//!
//! The trait, [`DlqHandler`](event_core::DlqHandler), and the record,
//! [`DeadLetterEvent`](event_core::DeadLetterEvent), live in `event-core`.

mod memory;
mod provider;

pub use memory::MemoryDlqHandler;
pub use provider::{DEAD_LETTER_EVENT_TYPE, ProviderDlqHandler, RedriveReport};
