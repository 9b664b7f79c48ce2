//! [`StateStore`](event_core::StateStore) implementations: subscriptions that
//! survive restarts.
//!
//! - [`MemoryStateStore`]: in-process, for tests.
//! - [`FileStateStore`]: a JSON file, replaced atomically (temp file, fsync,
//!   rename, fsync of the directory), with file I/O on a blocking thread.

mod file;
mod memory;

pub use file::FileStateStore;
pub use memory::MemoryStateStore;
