//! [`StateStore`](event_core::StateStore) implementations: subscriptions that
//! survive restarts.
//!
//! - [`MemoryStateStore`]: in-process, for tests.
//! - [`FileStateStore`]: a JSON file, replaced atomically (temp file, fsync,
//!   rename, fsync of the directory), with file I/O on a blocking thread,
//!   and locked to one store (and its clones) at a time.

mod file;
mod memory;

pub use file::FileStateStore;
pub use memory::MemoryStateStore;

use std::time::Duration;

/// How long the bus waits for its state store's `load` or `save` before it
/// refuses the change with [`Error::Timeout`](event_core::Error::Timeout)
/// (see [`EventBus::set_state_store`](crate::EventBus::set_state_store)).
///
/// A save holds the bus's subscriptions lock, so a store that never answers
/// (a hung network mount, an unreachable database) would otherwise freeze
/// every subscription change and read for good. A local file answers in
/// milliseconds; set another limit with
/// [`EventBus::set_state_store_with_timeout`](crate::EventBus::set_state_store_with_timeout).
pub const DEFAULT_STATE_STORE_TIMEOUT: Duration = Duration::from_secs(30);
