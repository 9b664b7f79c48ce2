//! # A3S Event
//!
//! Provider-agnostic events for Rust. Placeholder umbrella; see the README.
pub use event_core::*;
