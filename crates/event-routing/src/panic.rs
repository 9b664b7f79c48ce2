//! Containing panics of user code (sinks, handlers, factories) so that one
//! bad call fails alone instead of ending a routing, a source or a request.

use futures_util::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// The message of a caught panic.
pub(crate) fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Runs `f` to completion; a panic while creating or polling its future is
/// `Err` with the panic's message.
pub(crate) async fn caught<F, Fut>(f: F) -> Result<Fut::Output, String>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    AssertUnwindSafe(async move { f().await })
        .catch_unwind()
        .await
        .map_err(|panic| message(&*panic))
}
