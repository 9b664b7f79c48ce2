//! Receiving deliveries: waiting for the next one (through lost
//! connections, permission violations and refused pulls), keeping those
//! fetched ahead alive, decoding them, and handing back the unseen ones
//! on close.

use super::limits::{Refusal, refusal_of};
use super::permissions::needs;
use super::{Kind, NatsSubscription};
use crate::denial::Denial;
use crate::error::PROVIDER;
use async_nats::jetstream::consumer;
use async_nats::jetstream::message::{AckKind, Acker as NatsMsgAcker};
use event_core::{Error, ReceivedEvent, Result};
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use crate::pull::Pull;

/// What a wait for the next delivery ended with.
// a short-lived value on the stack, matched at once: boxing the delivery
// would allocate for each one
#[allow(clippy::large_enum_variant)]
enum Woken {
    Delivery(Option<std::result::Result<async_nats::jetstream::Message, String>>),
    ConnectionLost,
    Denied(Denial),
}

impl NatsSubscription {
    pub(super) async fn receive(&mut self) -> Result<Option<(ReceivedEvent, NatsMsgAcker)>> {
        if self.closed {
            return Ok(None);
        }
        if self.deleted() {
            return Err(self.gone_error());
        }
        self.note_call();
        self.follow_settings();
        self.keep_buffer_alive().await;
        loop {
            if let Some(denial) = self.unreported_denial() {
                return Err(self.denied(&denial));
            }
            if self.held.is_some() {
                self.refresh_for_held().await;
                if let Some(message) = self.held.take() {
                    return self.decode(message).await.map(Some);
                }
            }
            if self.batch.is_none() {
                let link = &self.provider.inner.link;
                if !link.wait_connected(self.provider.consumer_timeout()).await {
                    return Err(self.connection_lost());
                }
                let losses = link.losses();
                self.batch = Some(self.start_batch().await?);
                self.batch_delivered = false;
                self.stale = false;
                self.batch_losses = losses;
            }
            // the connection was lost since the pull was sent, while no
            // call was waiting on it (the caller was busy with an event):
            // the server forgot the request, so waiting for it would stall
            // until its expiry
            if self.provider.inner.link.losses() != self.batch_losses {
                self.stale = true;
            }
            let Some(batch) = self.batch.as_mut() else {
                continue;
            };
            let next = if self.stale {
                // the pull request died with the connection: hand out what
                // was already received, then pull again
                match batch.next().now_or_never() {
                    Some(next) => next,
                    None => {
                        self.batch = None;
                        continue;
                    }
                }
            } else {
                let woken = {
                    let link = &self.provider.inner.link;
                    let lost = link.lost.notified();
                    tokio::pin!(lost);
                    // registered before the state is read: no loss is missed
                    lost.as_mut().enable();
                    if link.is_connected() {
                        let rules =
                            needs(&self.pull_subject, self.pull_inbox.as_deref(), &self.acks);
                        tokio::select! {
                            biased;
                            next = batch.next() => Woken::Delivery(next),
                            () = lost => Woken::ConnectionLost,
                            denial = link.denials.wait(self.since, &rules) => Woken::Denied(denial),
                        }
                    } else {
                        Woken::ConnectionLost
                    }
                };
                match woken {
                    Woken::Delivery(next) => next,
                    Woken::ConnectionLost => {
                        self.stale = true;
                        continue;
                    }
                    Woken::Denied(denial) => return Err(self.denied(&denial)),
                }
            };
            match next {
                None => {
                    self.batch = None;
                    // a pull request to a consumer the server no longer has
                    // is not answered at all: it ends like an idle one, by
                    // expiring, so an empty pull asks whether it still exists
                    if !std::mem::take(&mut self.batch_delivered) && !self.consumer_exists().await?
                    {
                        self.replace_lost_consumer().await?;
                    }
                }
                Some(Err(err)) => {
                    self.batch = None;
                    let text = err.to_string();
                    tracing::debug!(consumer = %self.name, error = %text, "pull request ended");
                    // the consumer this pull was sent to was deleted; one of
                    // the same name may exist already, which is not ours
                    if text.contains("Consumer Deleted") || !self.consumer_exists().await? {
                        self.replace_lost_consumer().await?;
                        continue;
                    }
                    match refusal_of(&text) {
                        Some(Refusal::Passing) => {
                            // max waiting, leadership change: ask again
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        Some(Refusal::Limits) => {
                            // pulls are sized within the limits read when
                            // the consumer was opened: someone changed
                            // them since, or the server reads them
                            // otherwise. Asked again if they changed (or
                            // could not be read); the same request again
                            // would be refused forever
                            let before = self.limits;
                            if !self.refresh_settings().await && matches!(self.kind, Kind::Durable)
                            {
                                // not read (a timeout, a lost connection):
                                // transient, and the caller's next call
                                // reads them again, rather than a loop
                                // here that may never end
                                return Err(Error::Connection(format!(
                                    "pull from consumer {}: {text}, and its settings could not \
                                     be read again to size the next pull",
                                    self.name
                                )));
                            }
                            if self.limits != before {
                                continue;
                            }
                            return Err(self.refused(&text));
                        }
                        Some(Refusal::Never) => {
                            return Err(Error::Conflict {
                                resource: format!("consumer {}", self.name),
                                reason: format!(
                                    "JetStream refuses every pull request to it ({text}): a \
                                     consumer of another kind has the name now; unsubscribe it \
                                     or use another name"
                                ),
                            });
                        }
                        None => {}
                    }
                    return Err(Error::Connection(format!(
                        "pull from consumer {}: {text}",
                        self.name
                    )));
                }
                Some(Ok(message)) => {
                    self.batch_delivered = true;
                    if self.before_start(&message) {
                        // settled so that it is not redelivered (and does
                        // not hold a place under max_ack_pending)
                        if let Err(e) = message.ack_with(AckKind::Ack).await {
                            tracing::debug!(consumer = %self.name, error = %e, "could not settle an event before the start sequence");
                        }
                        continue;
                    }
                    self.held = Some(message);
                }
            }
        }
    }

    /// Restarts the ack timers of the deliveries fetched ahead that have
    /// waited a quarter of the shortest ack wait (see [`Pull::keep_alive`]).
    pub(super) async fn keep_buffer_alive(&mut self) {
        // (a pull that died with the connection still holds what it
        // received: kept alive again once the connection is back)
        if !self.provider.inner.link.is_connected() {
            return;
        }
        if let Some(batch) = self.batch.as_mut() {
            let wait = self
                .backoff
                .iter()
                .copied()
                .fold(self.ack_wait, Duration::min);
            batch.keep_alive(wait).await;
        }
    }

    /// Whether `message` comes before the consumer's start sequence:
    /// JetStream starts a `ByStartSequence` consumer whose start is beyond
    /// the stream's end at the next event stored, whatever its sequence,
    /// while the contract delivers events from that sequence on.
    fn before_start(&self, message: &async_nats::jetstream::Message) -> bool {
        let consumer::DeliverPolicy::ByStartSequence { start_sequence } =
            self.consumer.cached_info().config.deliver_policy
        else {
            return false;
        };
        message
            .info()
            .is_ok_and(|info| info.stream_sequence < start_sequence)
    }

    /// The server refuses this consumer's pull requests for their size or
    /// expiry, with `status`, although they keep within the limits it
    /// reports (a `409` no retry gets past).
    fn refused(&self, status: &str) -> Error {
        Error::Conflict {
            resource: format!("consumer {}", self.name),
            reason: format!(
                "JetStream refuses its pull requests ({status}), although they keep within \
                 the limits it reports ({}); change the consumer (made elsewhere?) or \
                 unsubscribe it",
                self.limits
            ),
        }
    }

    fn connection_lost(&self) -> Error {
        if self.provider.inner.link.is_gone() {
            return crate::error::client_gone(&format!("consumer {}", self.name), None);
        }
        let url = crate::config::redact_url(&self.provider.inner.config.url);
        if let Some(refusal) = self.provider.inner.link.credentials.refused() {
            return refusal.error(&format!("consumer {}", self.name), &url);
        }
        Error::Connection(format!(
            "consumer {}: not connected to {} for {:?} (reconnecting; the subscription \
             resumes when called again after the reconnection)",
            self.name,
            url,
            self.provider.consumer_timeout()
        ))
    }

    async fn decode(
        &mut self,
        message: async_nats::jetstream::Message,
    ) -> Result<(ReceivedEvent, NatsMsgAcker)> {
        let (sequence, delivered, stream) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                u64::try_from(info.delivered).unwrap_or(1).max(1),
                info.stream.to_string(),
            ),
            Err(e) => {
                return Err(Error::provider(
                    PROVIDER,
                    format!("delivery without JetStream metadata: {e}"),
                ));
            }
        };
        self.last_sequence = self.last_sequence.max(sequence);
        self.received_sequence = self.received_sequence.max(sequence);
        let subject = message.subject.to_string();
        let (message, acker) = message.split();
        match crate::stored::decode(&subject, &message.payload) {
            Ok(event) => {
                self.handed_out += 1;
                let stream = if stream == *self.provider.inner.stream_name {
                    self.provider.inner.stream_name.clone()
                } else {
                    Arc::from(stream.as_str())
                };
                Ok((
                    ReceivedEvent {
                        event: Arc::new(event),
                        sequence,
                        num_delivered: delivered,
                        stream,
                    },
                    acker,
                ))
            }
            Err(reason) => {
                if let Err(term_err) = acker.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %term_err, sequence, "could not terminate an undecodable message");
                }
                tracing::warn!(sequence, subject = %subject, error = %reason, "terminated undecodable message");
                Err(crate::stored::undecodable(
                    subject,
                    sequence,
                    reason,
                    &message.payload,
                ))
            }
        }
    }

    /// On close: naks the deliveries received and never handed out (fetched
    /// ahead, or held by a cancelled call), so that the durable's next
    /// subscription, here or in another process, gets them at once instead
    /// of after the ack wait. An ephemeral is deleted instead; a delivery
    /// still in flight from the server is left to the ack wait. Bounded by
    /// `deadline` (close's: one request timeout for all its waits).
    ///
    /// A spare delivery among them (JetStream's last) is not delivered
    /// again, naked or not: its event ends neither handled nor
    /// dead-lettered. It can only be here when it arrived for the pull
    /// request of a call that was cancelled (a subscription with
    /// `max_deliver` never fetches ahead otherwise); each one is logged
    /// as a warning (the known gap of the crate docs).
    pub(super) async fn hand_back_unseen(&mut self, deadline: tokio::time::Instant) {
        if !matches!(self.kind, Kind::Durable) {
            self.held = None;
            self.batch = None;
            return;
        }
        if self.batch.is_some() {
            // A round trip first: what the server sent before it answers
            // is then received (and not discarded when the pull's
            // subscription ends below). The held delivery and the pull stay
            // in place meanwhile: a close dropped here leaves them to the
            // next close.
            let _ = tokio::time::timeout_at(deadline, self.provider.inner.client.flush()).await;
        }
        let mut unseen: Vec<async_nats::jetstream::Message> =
            self.held.take().into_iter().collect();
        if let Some(mut pull) = self.batch.take() {
            // only what was received: `next` is cancel-safe
            while let Some(Some(Ok(message))) = pull.next().now_or_never() {
                unseen.push(message);
            }
        }
        if unseen.is_empty() {
            return;
        }
        let count = unseen.len();
        for message in &unseen {
            if let Ok(info) = message.info()
                && self
                    .max_deliver
                    .is_some_and(|max| u64::try_from(info.delivered).is_ok_and(|d| d > max))
            {
                tracing::warn!(
                    consumer = %self.name,
                    sequence = info.stream_sequence,
                    delivered = info.delivered,
                    "a spare delivery received for a cancelled call was never handed out before \
                     the close: JetStream does not deliver it again, so the event is neither \
                     handled nor dead-lettered (it stays in the stream)"
                );
            }
        }
        let naks = async {
            for message in &unseen {
                if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                    tracing::debug!(consumer = %self.name, error = %e, "could not hand back a fetched event");
                }
            }
        };
        if tokio::time::timeout_at(deadline, naks).await.is_err() {
            tracing::debug!(consumer = %self.name, "handing back fetched events timed out");
        }
        tracing::debug!(consumer = %self.name, count, "handed back events fetched ahead and never handed out");
    }
}
