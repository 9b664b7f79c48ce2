//! A lost consumer: an ephemeral recreated where it left off (or at the
//! first event of a stream created in place of its own), a durable deleted
//! elsewhere reported as gone.

use super::options::ephemeral_replicas;
use super::requests::{create, lookup};
use super::{Kind, NatsSubscription, PullLimits, Unsettled};
use async_nats::jetstream::consumer;
use event_core::{Error, Result};

impl NatsSubscription {
    /// Where a recreated ephemeral consumer starts: at the oldest delivery
    /// handed out and not settled (the old consumer's acks are lost with it,
    /// so those are delivered again), else after the last event handed out,
    /// else where the lost consumer started, so events published while it
    /// was gone are not skipped. `None` keeps the original policy: a
    /// `LastPerSubject` consumer that handed nothing out selects again.
    fn resume_point(&self) -> Option<u64> {
        let Kind::Ephemeral { config, unsettled } = &self.kind else {
            return None;
        };
        // (an auto-ack delivery is acked before the next pull: finished)
        if let Some(seq) = unsettled.with(|set| set.first().copied()) {
            return Some(seq);
        }
        if self.last_sequence > 0 {
            return Some(self.last_sequence + 1);
        }
        match config.deliver_policy {
            consumer::DeliverPolicy::LastPerSubject => None,
            _ => Some(self.start_floor + 1),
        }
    }

    /// Whether `stream` (the provider's stream as it is now) is not the
    /// stream the lost consumer read, but one created in its place (the
    /// server restarted on an empty store, or the stream was deleted and
    /// created again): created after that consumer, or ending before an
    /// event the subscription received from the old one. Its sequences
    /// started again at 1, so a position in the old stream means nothing
    /// there. (A stream's creation time survives restarts; a consumer is
    /// always created after its stream, on the same clock: the server's,
    /// or in a cluster the meta leader's.)
    fn stream_replaced(&self, stream: &async_nats::jetstream::stream::Info) -> bool {
        stream.created > self.consumer_created
            || stream.state.last_sequence < self.received_sequence
    }

    /// Recreates an ephemeral consumer the server dropped (a restart, or it
    /// was deleted), at [`resume_point`](Self::resume_point). Delivery
    /// counts start again at 1 on the new consumer.
    ///
    /// When the stream itself was replaced
    /// ([`stream_replaced`](Self::stream_replaced)), every event of the new
    /// stream was stored after this subscription started, so the new
    /// consumer starts at the new stream's first event (a `ByStartTime`
    /// subscription keeps its start time, which means the same in any
    /// stream). What the old stream held beyond what was received, and the
    /// deliveries handed out and not settled, were lost with it: the
    /// server cannot say how many, so no `Lagged` is reported; a warning
    /// is logged.
    async fn recreate_ephemeral(&mut self) -> Result<bool> {
        let Kind::Ephemeral { config, unsettled } = &self.kind else {
            return Ok(false);
        };
        let mut config = (**config).clone();
        let stream = self
            .provider
            .stream_info(&format!("recreating consumer {}", self.name))
            .await?;
        let replaced = self.stream_replaced(&stream);
        config.num_replicas = ephemeral_replicas(&stream.config);
        let resume = if replaced {
            if !matches!(
                config.deliver_policy,
                consumer::DeliverPolicy::ByStartTime { .. }
            ) {
                config.deliver_policy = consumer::DeliverPolicy::All;
            }
            None
        } else {
            self.resume_point()
        };
        if let Some(start_sequence) = resume {
            config.deliver_policy = consumer::DeliverPolicy::ByStartSequence { start_sequence };
        }
        let lost_unsettled = unsettled.with(|set| set.len());
        let consumer = create(&self.provider, &self.name, config).await?;
        if replaced {
            tracing::warn!(
                consumer = %self.name,
                stream = %self.provider.inner.stream_name,
                received_up_to = self.received_sequence,
                lost_unsettled,
                "the stream was replaced (created again: a server restarted on an empty store, \
                 or the stream deleted and created again) while this ephemeral consumer was lost: \
                 recreated at the new stream's first event; events of the old stream not \
                 received yet, and deliveries not settled, are gone with it"
            );
            self.last_sequence = 0;
            self.received_sequence = 0;
        } else {
            tracing::warn!(
                consumer = %self.name,
                resume_at = ?resume,
                lost_unsettled,
                "the server lost this ephemeral consumer: recreated (unsettled deliveries \
                 come again)"
            );
        }
        self.start_floor = consumer.cached_info().delivered.stream_sequence;
        self.consumer_created = consumer.cached_info().created;
        self.limits = PullLimits::of(&consumer.cached_info().config);
        self.consumer = consumer;
        if let Some(start_sequence) = resume {
            // lost again before redelivering: resume here again
            self.last_sequence = start_sequence.saturating_sub(1);
        }
        // deliveries of the old consumer come again from the new one; a fresh
        // set, so late settlements of the old deliveries cannot strike the
        // new ones
        if let Kind::Ephemeral { unsettled, .. } = &mut self.kind {
            *unsettled = Unsettled::default();
        }
        Ok(true)
    }

    /// Whether the server still has the consumer; a lookup that fails
    /// otherwise than with "not found" (a timeout) says yes, one the
    /// server denies is [`Error::Authentication`].
    pub(super) async fn consumer_exists(&self) -> Result<bool> {
        match lookup(&self.provider, &self.name).await {
            Ok(found) => Ok(found.is_some()),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(err @ Error::Authentication(_)) => Err(err),
            Err(_) => Ok(true),
        }
    }

    /// The server lost this subscription's consumer: an ephemeral is
    /// recreated, a durable (deleted by someone else) is `NotFound`, from
    /// then on.
    pub(super) async fn replace_lost_consumer(&mut self) -> Result<()> {
        if self.recreate_ephemeral().await? {
            return Ok(());
        }
        self.gone = true;
        Err(self.gone_error())
    }

    pub(super) fn gone_error(&self) -> Error {
        Error::NotFound {
            kind: "consumer",
            name: self.name.clone(),
        }
    }

    /// Whether this subscription's durable was deleted through this
    /// provider (or a clone) since it was opened: a pull request goes to
    /// whatever consumer has the name now, possibly a new durable, which
    /// this subscription must not read from. An atomic load unless some
    /// durable was deleted since the last call.
    pub(super) fn deleted(&mut self) -> bool {
        let Some(deletions) = &self.deletions else {
            return false;
        };
        let epoch = self.provider.inner.unsubscribed.epoch();
        if epoch != self.epoch {
            self.epoch = epoch;
            if deletions.deleted() {
                self.gone = true;
            }
        }
        self.gone
    }
}
