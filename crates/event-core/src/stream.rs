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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Event};
    use futures_util::StreamExt;
    use std::sync::Arc;

    /// Hands out what its channel receives (`Ok(None)` once it is closed),
    /// and fails a test that asks it again after that.
    struct Channel(
        tokio::sync::mpsc::UnboundedReceiver<Result<ReceivedEvent>>,
        bool,
    );

    #[async_trait::async_trait]
    impl Subscription for Channel {
        async fn next(&mut self) -> Result<Option<ReceivedEvent>> {
            assert!(!self.1, "asked for more after it ended");
            let item = self.0.recv().await.transpose();
            self.1 = matches!(item, Ok(None));
            item
        }
        async fn next_manual_ack(&mut self) -> Result<Option<PendingEvent>> {
            Ok(None)
        }
        async fn close(&mut self) -> Result<()> {
            self.0.close();
            Ok(())
        }
    }

    fn received(sequence: u64) -> ReceivedEvent {
        ReceivedEvent {
            event: Arc::new(Event::new(
                "events.a.b",
                "a",
                "s",
                "src",
                serde_json::json!({}),
            )),
            sequence,
            num_delivered: 1,
            stream: "s".into(),
        }
    }

    /// Items come as the subscription hands them out, a report included and
    /// the stream going on after it; a fetch that waits is woken when its
    /// event comes; after `Ok(None)` the stream ends for good and gives the
    /// subscription back.
    #[tokio::test]
    async fn stream_follows_the_subscription_and_ends_once() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sub: Box<dyn Subscription> = Box::new(Channel(rx, false));
        let mut stream = sub.into_stream();
        tx.send(Ok(received(1))).unwrap();
        tx.send(Err(Error::Lagged { missed: 2 })).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().sequence, 1);
        assert!(matches!(
            stream.next().await,
            Some(Err(Error::Lagged { missed: 2 }))
        ));
        // nothing yet: the fetch waits, then is woken by the event
        let waiting = tokio::spawn(async move {
            let item = stream.next().await;
            (stream, item)
        });
        tokio::task::yield_now().await;
        tx.send(Ok(received(4))).unwrap();
        let (mut stream, item) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the waiting fetch was woken")
            .unwrap();
        assert_eq!(item.unwrap().unwrap().sequence, 4);
        drop(tx);
        assert!(stream.next().await.is_none());
        // ended: polled again, it stays ended without asking the subscription
        assert!(stream.next().await.is_none());
        assert!(
            stream.into_inner().is_some(),
            "the subscription is given back"
        );
    }
}
