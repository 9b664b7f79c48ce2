//! [`Pull`]: one pull request to a JetStream consumer, read by the provider
//! itself (subscriptions and `history`).

use crate::denial::Rule;
use crate::error;
use crate::provider::NatsProvider;
use async_nats::StatusCode;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use event_core::Result;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;

/// How long after its expiry a pull request that has had no answer (the
/// server answers an expired one with a 408, a `no_wait` one with nothing
/// pending with a 404; a consumer it no longer has, or a request it denied,
/// never answers) is given up, once nothing it received is left.
pub(crate) const PULL_GRACE: Duration = Duration::from_secs(2);

/// One pull request: the deliveries it brings, in order.
///
/// Unlike async-nats's `Batch`, which ends 5 s after the request's expiry
/// and drops whatever it received and has not handed out yet (the server
/// counted those deliveries: they came back only after the ack wait), a
/// pull hands out everything it received, however slowly it is read; it
/// gives up waiting only when nothing is left and the server has not
/// answered [`PULL_GRACE`] after the expiry. It also knows the subjects it
/// needs (the pull request, its inbox), so that a permission violation on
/// either is recognised as the reason it was never answered.
pub(crate) struct Pull {
    subscriber: async_nats::Subscriber,
    context: async_nats::jetstream::Context,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    request_subject: Arc<str>,
    /// Where the deliveries arrive.
    inbox: Arc<str>,
    /// Deliveries the request may still bring.
    pending: usize,
    deadline: tokio::time::Instant,
    /// The server sent something for this request (a delivery or a status).
    answered: bool,
    done: bool,
}

impl Pull {
    /// Subscribes to a new inbox and asks `consumer` (named `name`) for
    /// `request.batch` deliveries there.
    pub(crate) async fn start(
        provider: &NatsProvider,
        consumer: &PullConsumer,
        name: &str,
        request: BatchConfig,
    ) -> Result<Self> {
        let timeout = provider.consumer_timeout();
        let client = &provider.inner.client;
        let inbox = async_nats::Subject::from(client.new_inbox());
        let subscriber = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| error::map("pull request", e, timeout))?;
        let pending = request.batch;
        let expires = request.expires.unwrap_or(Duration::ZERO);
        consumer
            .request_batch(request, inbox.clone())
            .await
            .map_err(|e| error::map("pull request", e, timeout))?;
        Ok(Self {
            subscriber,
            context: provider.inner.js.clone(),
            request_subject: Arc::from(format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{name}",
                provider.inner.stream_name
            )),
            inbox: Arc::from(inbox.as_str()),
            pending,
            deadline: tokio::time::Instant::now() + expires + PULL_GRACE,
            answered: false,
            done: false,
        })
    }

    /// The subjects this request needs: publishing the request, subscribing
    /// to its inbox. Owned, so that the rules can be held while the pull is
    /// read.
    pub(crate) fn subjects(&self) -> PullSubjects {
        PullSubjects {
            request: self.request_subject.clone(),
            inbox: self.inbox.clone(),
        }
    }

    /// The subject the deliveries arrive on.
    pub(crate) fn inbox(&self) -> Arc<str> {
        self.inbox.clone()
    }

    /// Whether the server sent anything for this request.
    pub(crate) fn answered(&self) -> bool {
        self.answered
    }

    /// The next delivery; `None` when the request is over (all delivered,
    /// expired, or never answered); an error for a status the server ended
    /// it with. Cancel-safe: a call cancelled while it waits loses nothing.
    pub(crate) async fn next(
        &mut self,
    ) -> Option<std::result::Result<async_nats::jetstream::Message, String>> {
        loop {
            if self.done || self.pending == 0 {
                return None;
            }
            // what was received is handed out whatever the time
            let received = match self.subscriber.next().now_or_never() {
                Some(received) => received,
                // nothing after the deadline: the request is over
                None => tokio::time::timeout_at(self.deadline, self.subscriber.next())
                    .await
                    .ok()
                    .flatten(),
            };
            let Some(message) = received else {
                self.done = true;
                return None;
            };
            self.answered = true;
            match message.status {
                None | Some(StatusCode::OK) => {
                    self.pending -= 1;
                    return Some(Ok(async_nats::jetstream::Message {
                        message,
                        context: self.context.clone(),
                    }));
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // expired, or nothing to deliver
                Some(StatusCode::TIMEOUT | StatusCode::NOT_FOUND) => {
                    self.done = true;
                    return None;
                }
                Some(status) => {
                    self.done = true;
                    return Some(Err(format!(
                        "{status}: {}",
                        message.description.as_deref().unwrap_or("")
                    )));
                }
            }
        }
    }
}

/// The subjects a [`Pull`] needs.
pub(crate) struct PullSubjects {
    request: Arc<str>,
    inbox: Arc<str>,
}

impl PullSubjects {
    /// The rules matching a violation of either subject.
    pub(crate) fn rules(&self) -> [Rule<'_>; 2] {
        [Rule::Publish(&self.request), Rule::Subscribe(&self.inbox)]
    }
}
