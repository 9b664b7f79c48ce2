//! Settling deliveries: the acker of a manual delivery, an ephemeral's
//! unsettled deliveries, the ack wait of a delivery and the pending
//! auto-ack.

use super::NatsSubscription;
use super::options::jetstream_wait;
use super::permissions::AckScope;
use crate::provider::NatsProvider;
use async_nats::jetstream::message::{AckKind, Acker as NatsMsgAcker};
use async_trait::async_trait;
use event_core::{Acker, Error, Result};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[cfg(doc)]
use super::Kind;
#[cfg(doc)]
use super::options::server_max_deliver;

/// Sequences of an ephemeral's manual deliveries that are not settled yet.
#[derive(Clone, Default)]
pub(super) struct Unsettled(Arc<Mutex<BTreeSet<u64>>>);

impl Unsettled {
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut BTreeSet<u64>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records delivery `seq` as handed out and unsettled, keeping at most
    /// `max` (the consumer's `max_ack_pending`: see [`Kind::Ephemeral`]).
    pub(super) fn handed_out(&self, seq: u64, max: usize) {
        self.with(|set| {
            set.insert(seq);
            while set.len() > max.max(1) {
                set.pop_first();
            }
        });
    }
}

impl NatsSubscription {
    /// The ack wait JetStream applies to delivery number `delivery`: the
    /// consumer's backoff entry for it (the last one repeating), or its
    /// `ack_wait` without a backoff.
    pub(super) fn ack_wait_of(&self, delivery: u64) -> Duration {
        let index = usize::try_from(delivery.saturating_sub(1)).unwrap_or(usize::MAX);
        match self.backoff.get(index).or(self.backoff.last()) {
            Some(wait) => *wait,
            None => self.ack_wait,
        }
    }

    pub(super) async fn ack_auto_pending(&mut self) {
        let Some(acker) = self.auto_pending.take() else {
            return;
        };
        // bounded: with the connection down and the client's buffer full it
        // would wait for the reconnection (see `NatsAcker::send`)
        let timeout = self.provider.consumer_timeout();
        match tokio::time::timeout(timeout, acker.ack()).await {
            Ok(Ok(())) => {}
            // the event is redelivered: at-least-once still holds
            Ok(Err(e)) => tracing::warn!(consumer = %self.name, error = %e, "auto-ack failed"),
            Err(_) => {
                tracing::warn!(consumer = %self.name, "auto-ack timed out (connection lost?)");
            }
        }
    }
}

/// Settles one delivery with JetStream acknowledgements.
pub(super) struct NatsAcker {
    pub(super) acker: NatsMsgAcker,
    pub(super) timeout: Duration,
    /// An ephemeral's delivery: struck from its unsettled set once acked or
    /// terminated.
    pub(super) unsettled: Option<(Unsettled, u64)>,
    /// Where its acknowledgements go.
    pub(super) acks: Arc<AckScope>,
    /// The permission-violation mark when it was handed out.
    pub(super) since: u64,
    /// The final delivery: a nak ends the event (it is sent as a term,
    /// or JetStream would spend the spare delivery on it, see
    /// [`server_max_deliver`]).
    pub(super) last: bool,
    /// Keeps the provider's connection while the delivery is held, as its
    /// subscription does: once the provider's last handle (clones and
    /// subscriptions) was dropped, a settlement returned `Ok` without
    /// reaching the server, and the event came again after its ack wait.
    pub(super) _provider: NatsProvider,
}

impl NatsAcker {
    fn settled(&self) {
        if let Some((unsettled, seq)) = &self.unsettled {
            unsettled.with(|set| set.remove(seq));
        }
    }

    /// Sends `kind`. While the connection is down the client queues it
    /// (it goes out on reconnection); once the client's buffer is full it
    /// would wait for the reconnection, so the wait is bounded by the
    /// request timeout. Acknowledgements get no reply: a denied one is
    /// known only from the violation the server reports, so an
    /// acknowledgement of this consumer denied since this delivery was
    /// handed out (an earlier one, or this one if the report is already
    /// in) makes this one fail too.
    async fn send(&self, kind: AckKind, what: &str) -> Result<()> {
        self.publish(kind, what).await?;
        self.acks.denied(self.since, what)
    }

    async fn publish(&self, kind: AckKind, what: &str) -> Result<()> {
        let Ok(sent) = tokio::time::timeout(self.timeout, self.acker.ack_with(kind)).await else {
            return Err(Error::Timeout {
                operation: format!(
                    "{what}: the client's outgoing buffer stayed full (connection lost?)"
                ),
                elapsed: self.timeout,
            });
        };
        sent.map_err(|e| {
            let text = e.to_string();
            if text.contains("timed out") {
                Error::Timeout {
                    operation: format!("{what}: {text}"),
                    elapsed: self.timeout,
                }
            } else if crate::error::says_client_gone(&text) {
                crate::error::client_gone(what, Some(&text))
            } else {
                Error::Connection(format!("{what}: {text}"))
            }
        })
    }
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(&self) -> Result<()> {
        self.send(AckKind::Ack, "ack").await?;
        self.settled();
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<()> {
        if self.last {
            self.send(AckKind::Term, "nak (of a final delivery: term)")
                .await?;
            self.settled();
            return Ok(());
        }
        self.send(AckKind::Nak(delay.map(jetstream_wait)), "nak")
            .await
    }

    async fn term(&self) -> Result<()> {
        self.send(AckKind::Term, "term").await?;
        self.settled();
        Ok(())
    }

    async fn in_progress(&self) -> Result<()> {
        self.send(AckKind::Progress, "in_progress").await
    }
}
