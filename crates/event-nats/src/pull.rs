//! [`Pull`]: one pull request to a JetStream consumer, read by the provider
//! itself (subscriptions and `history`).

use crate::denial::Rule;
use crate::error;
use crate::provider::NatsProvider;
use async_nats::StatusCode;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use event_core::Result;
use futures_util::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Deliveries received and not handed out yet (read ahead by
    /// [`keep_alive`](Self::keep_alive)), each with when it arrived (at the
    /// earliest, see `seen_empty`) or was last kept alive.
    received: VecDeque<(Instant, async_nats::jetstream::Message)>,
    /// No later than the oldest time in `received` (`None`: it is empty).
    oldest: Option<Instant>,
    /// When the inbox was last seen empty (or the request was sent): a
    /// delivery read without waiting arrived after it, at a time not known,
    /// so its age is counted from it (never less than its true age).
    seen_empty: Instant,
    /// How the request ended, reported once `received` is handed out.
    end: Option<End>,
}

/// How a pull request ended.
enum End {
    /// Everything delivered, expired, or nothing to deliver.
    Over,
    /// A status the server ended it with.
    Failed(String),
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
            received: VecDeque::new(),
            oldest: None,
            seen_empty: Instant::now(),
            end: None,
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
            if let Some((_, message)) = self.received.pop_front() {
                if self.received.is_empty() {
                    self.oldest = None;
                }
                return Some(Ok(message));
            }
            match self.end.take() {
                Some(End::Over) => return None,
                Some(End::Failed(status)) => return Some(Err(status)),
                None => {}
            }
            if self.done || self.pending == 0 {
                return None;
            }
            // what was received is handed out whatever the time
            let (received, arrived) = match self.subscriber.next().now_or_never() {
                Some(received) => (received, self.seen_empty),
                // nothing after the deadline: the request is over
                None => {
                    self.seen_empty = Instant::now();
                    let received = tokio::time::timeout_at(self.deadline, self.subscriber.next())
                        .await
                        .ok()
                        .flatten();
                    (received, Instant::now())
                }
            };
            match received {
                Some(message) => self.accept(message, arrived),
                None => self.done = true,
            }
        }
    }

    /// Keeps the deliveries waiting to be handed out from being redelivered:
    /// reads what has arrived (without waiting), then sends `in_progress`
    /// for every delivery received or kept alive `wait / 4` ago or earlier
    /// (`wait`: the shortest ack wait of the consumer). Called on each call
    /// of the subscription: events fetched ahead for a fast caller that then
    /// slows down would otherwise reach their ack wait in the buffer and be
    /// redelivered while their first delivery is still to be handed out.
    /// A progress that cannot be sent (the connection is down) is left for
    /// the next call. Cancel-safe.
    pub(crate) async fn keep_alive(&mut self, wait: Duration) {
        while self.end.is_none() && !self.done && self.pending > 0 {
            match self.subscriber.next().now_or_never() {
                Some(Some(message)) => self.accept(message, self.seen_empty),
                Some(None) => self.done = true,
                None => {
                    self.seen_empty = Instant::now();
                    break;
                }
            }
        }
        let now = Instant::now();
        let due = wait / 4;
        if self
            .oldest
            .is_none_or(|oldest| now.duration_since(oldest) < due)
        {
            return;
        }
        for (at, message) in &mut self.received {
            if now.duration_since(*at) < due {
                continue;
            }
            // into the client's buffer; a full one (connection lost) is not
            // waited for
            match message.ack_with(AckKind::Progress).now_or_never() {
                Some(Ok(())) => *at = now,
                _ => break,
            }
        }
        self.oldest = self.received.iter().map(|(at, _)| *at).min();
    }

    /// Keeps delivery `message`, which arrived at `arrived` or later, to be
    /// handed out.
    fn keep(&mut self, message: async_nats::Message, arrived: Instant) {
        self.pending -= 1;
        let oldest = self.oldest.get_or_insert(arrived);
        *oldest = (*oldest).min(arrived);
        self.received.push_back((
            arrived,
            async_nats::jetstream::Message {
                message,
                context: self.context.clone(),
            },
        ));
    }

    /// Takes in what the server sent for this request, which arrived at
    /// `arrived` or later.
    fn accept(&mut self, message: async_nats::Message, arrived: Instant) {
        self.answered = true;
        // a stored message comes with its acknowledgement subject, whatever
        // its header block says: one whose headers start with a status line
        // of its own (a relayed reply, `NATS/1.0 404 No Messages`) is a
        // delivery, not the server's answer to the request, which never
        // has that subject
        let delivery = message
            .reply
            .as_ref()
            .is_some_and(|reply| reply.starts_with("$JS.ACK."));
        match message.status {
            _ if delivery => self.keep(message, arrived),
            None | Some(StatusCode::OK) => self.keep(message, arrived),
            Some(StatusCode::IDLE_HEARTBEAT) => {}
            // expired, or nothing to deliver
            Some(StatusCode::TIMEOUT | StatusCode::NOT_FOUND) => {
                self.done = true;
                self.end = Some(End::Over);
            }
            Some(status) => {
                self.done = true;
                self.end = Some(End::Failed(format!(
                    "{status}: {}",
                    message.description.as_deref().unwrap_or("")
                )));
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
