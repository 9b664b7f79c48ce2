//! [`Subscription`] as a `futures::Stream`.

use crate::error::Result;
use crate::provider::{PendingEvent, Subscription};
use crate::types::ReceivedEvent;
use futures_core::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

type Step<T> = Pin<Box<dyn Future<Output = (Box<dyn Subscription>, Result<Option<T>>)> + Send>>;
type Fetch<T> = fn(Box<dyn Subscription>) -> Step<T>;

/// A [`Subscription`] adapted to [`futures_core::Stream`].
///
/// Items are `Result<ReceivedEvent>` (auto-ack, from
/// `Box<dyn Subscription>::into_stream()`) or `Result<PendingEvent>`
/// (manual ack, from `into_manual_stream()`).
/// The stream ends when the subscription is closed.
///
/// ```no_run
/// # async fn demo(sub: Box<dyn event_core::Subscription>) {
/// use futures_util::StreamExt;
/// let mut stream = sub.into_stream();
/// while let Some(item) = stream.next().await {
///     let received = item.expect("delivery");
///     println!("{}", received.event.id);
/// }
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct SubscriptionStream<T> {
    idle: Option<Box<dyn Subscription>>,
    step: Option<Step<T>>,
    fetch: Fetch<T>,
    done: bool,
}

impl<T> std::fmt::Debug for SubscriptionStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> SubscriptionStream<T> {
    fn new(sub: Box<dyn Subscription>, fetch: Fetch<T>) -> Self {
        Self {
            idle: Some(sub),
            step: None,
            fetch,
            done: false,
        }
    }

    /// Gives the subscription back, if no fetch is in progress.
    pub fn into_inner(self) -> Option<Box<dyn Subscription>> {
        self.idle
    }
}

impl<T> Unpin for SubscriptionStream<T> {}

impl<T> Stream for SubscriptionStream<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.step.is_none() {
            let Some(sub) = self.idle.take() else {
                return Poll::Ready(None);
            };
            let fetch = self.fetch;
            self.step = Some(fetch(sub));
        }
        let Some(step) = self.step.as_mut() else {
            return Poll::Ready(None);
        };
        match step.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready((sub, result)) => {
                self.step = None;
                self.idle = Some(sub);
                match result {
                    Ok(Some(item)) => Poll::Ready(Some(Ok(item))),
                    Ok(None) => {
                        self.done = true;
                        Poll::Ready(None)
                    }
                    Err(err) => Poll::Ready(Some(Err(err))),
                }
            }
        }
    }
}

impl dyn Subscription {
    /// Auto-ack stream of deliveries.
    pub fn into_stream(self: Box<Self>) -> SubscriptionStream<ReceivedEvent> {
        SubscriptionStream::new(self, |mut sub| {
            Box::pin(async move {
                let r = sub.next().await;
                (sub, r)
            })
        })
    }

    /// Manual-ack stream of deliveries.
    pub fn into_manual_stream(self: Box<Self>) -> SubscriptionStream<PendingEvent> {
        SubscriptionStream::new(self, |mut sub| {
            Box::pin(async move {
                let r = sub.next_manual_ack().await;
                (sub, r)
            })
        })
    }
}
