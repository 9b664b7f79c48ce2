//! # A3S Event
//!
//! Provider-agnostic events for Rust. Placeholder umbrella; see the README.
pub use event_core::*;

/// Event providers.
pub mod provider {
    pub use event_core::provider::*;
    /// The in-memory provider.
    #[cfg(feature = "memory")]
    pub mod memory {
        pub use event_memory::*;
    }
}
