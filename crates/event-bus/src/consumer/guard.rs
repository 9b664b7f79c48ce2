//! Running a handler future (or a DLQ handler) with panics caught.

use super::stall::{About, StallWatch, Work, watched};
use crate::metrics::EventMetrics;
use event_core::{DeadLetterEvent, DlqHandler, Error, Result};
use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Polls `F`, turning a panic inside `poll` into `Err(payload)`.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The handler's state is dropped right after a panic and never
        // polled again, so observing it after unwinding cannot happen.
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The panic message, when the payload is a string.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Hands `dead` (the delivery at stream `sequence`) to `dlq`, turning a
/// panic of the handler into an error (so a panicking DLQ handler is
/// treated like a refusing one: the event is kept, not lost with the task
/// that ran it). A call running longer than `limit` is abandoned as
/// [`Error::Timeout`] (a transient refusal). One that may run past
/// [`STALL_THRESHOLD`](super::STALL_THRESHOLD) (no limit, or a longer one)
/// is watched: logged and counted in `metrics` if it does.
pub(crate) async fn offer_dead_letter(
    dlq: &dyn DlqHandler,
    dead: DeadLetterEvent,
    limit: Option<Duration>,
    metrics: &EventMetrics,
    sequence: u64,
) -> Result<()> {
    // what the watch names, kept only where a watch may be needed
    let named = StallWatch::applies(limit).then(|| {
        (
            dead.subscriber.clone(),
            dead.event.id.clone(),
            dead.event.subject.clone(),
            dead.delivery_attempts,
        )
    });
    let offer = async {
        match CatchUnwind(dlq.handle(dead)).await {
            Ok(result) => result,
            Err(panic) => Err(Error::provider(
                "dlq handler",
                format!("DLQ handler panicked: {}", panic_message(&*panic)),
            )),
        }
    };
    let bounded = async {
        match limit {
            Some(limit) => tokio::time::timeout(limit, offer)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Timeout {
                        operation: "the DLQ handler taking a dead letter".to_string(),
                        elapsed: limit,
                    })
                }),
            None => offer.await,
        }
    };
    let watch = named
        .as_ref()
        .and_then(|(subscriber, id, subject, attempts)| {
            let about = About {
                subscriber: subscriber.as_deref(),
                event_id: id,
                subject,
                sequence,
                deliveries: *attempts,
            };
            StallWatch::start(Work::DeadLetter, limit, about)
        });
    match watch {
        Some(watch) => watched(watch, metrics, bounded).await,
        None => bounded.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_become_errors() {
        let ok: Pin<Box<dyn Future<Output = u8> + Send>> = Box::pin(async { 7 });
        assert_eq!(CatchUnwind(ok).await.unwrap(), 7);
        let boom: Pin<Box<dyn Future<Output = u8> + Send>> = Box::pin(async {
            tokio::task::yield_now().await;
            panic!("boom {}", 42)
        });
        let err = CatchUnwind(boom).await.unwrap_err();
        assert_eq!(panic_message(&*err), "boom 42");
    }
}
