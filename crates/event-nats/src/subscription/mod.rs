//! Pull-consumer subscriptions: [`NatsSubscription`] and its acker.
//!
//! This module keeps the subscription type, its creation and the
//! [`Subscription`] implementation; its parts are in the submodules:
//! [`options`] (the consumer configuration for subscribe options),
//! [`requests`] (consumer lookups and creations, resuming a durable),
//! [`receive`] (waiting for and decoding deliveries), [`limits`] (sizing
//! pull requests), [`follow`] (following a durable's settings),
//! [`recovery`] (a lost consumer or a replaced stream), [`permissions`]
//! (permission violations) and [`acker`] (settling deliveries).

mod acker;
mod follow;
mod limits;
mod options;
mod permissions;
mod receive;
mod recovery;
mod requests;
#[cfg(test)]
mod tests;

pub(crate) use limits::PullLimits;
pub(crate) use options::max_deliver_of;

use crate::error;
use crate::provider::{DeletionWatch, NatsProvider};
use crate::pull::Pull;
use crate::settings::{ConsumerSettings, LiveSettings};
use acker::{NatsAcker, Unsettled};
use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::message::Acker as NatsMsgAcker;
use async_trait::async_trait;
use event_core::{
    Error, LiveAckWait, PendingEvent, ReceivedEvent, Result, SubscribeOptions, Subscription,
};
use options::{consumer_config, ephemeral_replicas};
use permissions::AckScope;
use requests::{create, lookup, resume};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ephemeral consumers left behind by a crashed process vanish after this.
const EPHEMERAL_INACTIVE: Duration = Duration::from_secs(120);

enum Kind {
    /// Deleted when the subscription ends; recreated if the server dropped
    /// it (see [`NatsSubscription::resume_point`]).
    Ephemeral {
        config: Box<pull::Config>,
        /// Manual-mode deliveries handed out and not yet acked or
        /// terminated (a nak of a final delivery terminates it): a
        /// recreated consumer starts at the oldest of them. An event whose
        /// spare delivery came is struck off, settled or not: it is never
        /// delivered again. At most `max_ack_pending` are kept, the oldest
        /// dropped first: the server holds no more unsettled deliveries
        /// than that, so the others were ended on its side (evicted by the
        /// stream's limits, say) and will not come again.
        unsettled: Unsettled,
    },
    Durable,
}

/// A subscription on one JetStream pull consumer.
pub(crate) struct NatsSubscription {
    provider: NatsProvider,
    consumer: PullConsumer,
    name: String,
    kind: Kind,
    max_deliver: Option<u64>,
    ack_wait: Duration,
    /// The consumer's backoff: the ack wait of each delivery.
    backoff: Vec<Duration>,
    max_ack_pending: usize,
    /// The consumer's limits on one pull request (a durable provisioned
    /// elsewhere may have them): pulls are sized within them.
    limits: PullLimits,
    /// A durable's settings as last read from the server, shared with the
    /// live ack waits of its deliveries and read again while in use
    /// (another subscription may change them: see [`crate::settings`]);
    /// `None` for an ephemeral. The fields above are copied from it.
    live: Option<Arc<LiveSettings>>,
    /// The version of `live` the fields above hold.
    live_version: u64,
    batch: Option<Pull>,
    auto_pending: Option<NatsMsgAcker>,
    handed_out: u64,
    last_call: Option<Instant>,
    avg_gap: Duration,
    last_batch: usize,
    last_sequence: u64,
    /// The highest stream sequence of an event received from the current
    /// stream: one it surely held (unlike `last_sequence`, which a
    /// recreation also sets to where it resumes).
    received_sequence: u64,
    /// When the server created the current consumer: a stream created
    /// later is not the one this subscription was reading (see
    /// [`stream_replaced`](Self::stream_replaced)).
    consumer_created: time::OffsetDateTime,
    /// The stream sequence the consumer started after (JetStream's
    /// delivered stream sequence at creation): where a recreated ephemeral
    /// resumes when it has handed nothing out.
    start_floor: u64,
    /// `batch` has delivered a message.
    batch_delivered: bool,
    /// A delivery taken from `batch` and not handed out yet: it stays here
    /// while the call waits (for a settings lookup), so a call cancelled
    /// meanwhile (a `select!` branch that lost, a timeout) leaves it to the
    /// next one instead of losing it (the server counted the delivery).
    held: Option<async_nats::jetstream::Message>,
    /// The connection was lost while `batch` was pending: its pull request
    /// is gone, only what it already received is left.
    stale: bool,
    /// The connection's loss count ([`Link::losses`](crate::provider::Link::losses))
    /// when `batch` was sent: a loss since, even one no call was waiting
    /// for, makes it stale.
    batch_losses: u64,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<name>`: where pulls are sent.
    pull_subject: String,
    /// Where acknowledgements go (shared with the deliveries' ackers).
    acks: Arc<AckScope>,
    /// The inbox of `batch`.
    pull_inbox: Option<Arc<str>>,
    /// Permission violations from this one on are not reported yet (see
    /// [`denied`](Self::denied)).
    since: u64,
    /// `close` was called: nothing more is delivered.
    closed: bool,
    /// The provider's deletion epoch this durable subscription saw last,
    /// and its watch on deletions of its name since it was opened (see
    /// [`deleted`](Self::deleted)); `None` for an ephemeral.
    epoch: u64,
    deletions: Option<DeletionWatch>,
    /// The durable this subscription reads was deleted: it ends, whatever
    /// consumer now has its name.
    gone: bool,
    /// `close` ran to its end. A close dropped part-way (a `timeout`, a
    /// `select!`) is not: the next `close` finishes it, and a drop without
    /// one deletes an ephemeral consumer as if `close` was never called.
    close_finished: bool,
}

impl NatsSubscription {
    pub(crate) async fn ephemeral(
        provider: NatsProvider,
        filter: &str,
        options: &SubscribeOptions,
    ) -> Result<Self> {
        let mut config = consumer_config(None, filter, options)?;
        let name = format!("eph-{}", uuid::Uuid::new_v4().simple());
        config.name = Some(name.clone());
        config.inactive_threshold = EPHEMERAL_INACTIVE;
        config.num_replicas = ephemeral_replicas(&provider.inner.stream.cached_info().config);
        let since = provider.inner.link.denials.mark();
        // the server may create the consumer although this call never
        // returns it (dropped while waiting for the answer, or timed out):
        // it is deleted then, not left for the inactivity threshold
        let mut orphan = OrphanGuard {
            provider: &provider,
            name: Some(&name),
        };
        let created = create(&provider, &name, config.clone()).await;
        // a refusal the server answered created nothing
        if !matches!(created, Err(Error::Timeout { .. } | Error::Connection(_))) {
            orphan.name = None;
        }
        let consumer = created?;
        drop(orphan);
        Ok(Self::new(
            provider,
            consumer,
            name,
            Kind::Ephemeral {
                config: Box::new(config),
                unsettled: Unsettled::default(),
            },
            since,
        ))
    }

    /// Creates durable `name`, or resumes it (applying changed options or
    /// refusing them, see [`resume`]). A creation that loses a race with
    /// another client creating the same durable (another process, maybe
    /// with other options) finds the consumer existing and is settled as if
    /// it had existed: the loser gets what a second caller would get.
    pub(crate) async fn durable(
        provider: NatsProvider,
        name: &str,
        filter: &str,
        options: &SubscribeOptions,
    ) -> Result<Self> {
        let desired = consumer_config(Some(name), filter, options)?;
        let since = provider.inner.link.denials.mark();
        // read before the consumer is looked up: a deletion from here on
        // may have deleted the one this subscription gets
        // (the epoch first: a deletion between the two is counted before
        // the watch starts, and the lookup below sees it)
        let epoch = provider.inner.unsubscribed.epoch();
        let deletions = provider.inner.unsubscribed.watch(name);
        let consumer = match lookup(&provider, name).await? {
            Some(existing) => resume(&provider, name, &existing, &desired).await?,
            None => match create(&provider, name, desired.clone()).await {
                Ok(created) => created,
                // the server refused the creation: a durable of that name
                // created meanwhile with other options is refused as an
                // update of it (JetStream creates or updates)
                Err(err @ Error::InvalidConfig { .. }) => match lookup(&provider, name).await? {
                    Some(existing) => resume(&provider, name, &existing, &desired).await?,
                    None => return Err(err),
                },
                Err(err) => return Err(err),
            },
        };
        let mut sub = Self::new(provider, consumer, name.to_string(), Kind::Durable, since);
        let info = sub.consumer.cached_info();
        sub.live = Some(LiveSettings::new(
            ConsumerSettings::of(&info.config),
            Instant::now(),
            sub.provider.inner.stream.clone(),
            sub.name.clone(),
            sub.provider.consumer_timeout(),
        ));
        sub.epoch = epoch;
        sub.deletions = Some(deletions);
        Ok(sub)
    }

    /// `since`: the permission-violation mark taken before the consumer was
    /// created.
    fn new(
        provider: NatsProvider,
        consumer: PullConsumer,
        name: String,
        kind: Kind,
        since: u64,
    ) -> Self {
        let info = consumer.cached_info();
        let max_deliver = max_deliver_of(&info.config);
        let ack_wait = info.config.ack_wait;
        let backoff = info.config.backoff.clone();
        let start_floor = info.delivered.stream_sequence;
        let consumer_created = info.created;
        let max_ack_pending = usize::try_from(info.config.max_ack_pending)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(usize::MAX);
        let pull_subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{name}",
            provider.inner.stream_name
        );
        let acks = Arc::new(AckScope {
            link: provider.inner.link.clone(),
            stream: provider.inner.stream_name.clone(),
            consumer: name.clone(),
        });
        let limits = PullLimits::of(&info.config);
        Self {
            provider,
            consumer,
            name,
            acks,
            kind,
            max_deliver,
            ack_wait,
            backoff,
            max_ack_pending,
            limits,
            live: None,
            live_version: 0,
            batch: None,
            auto_pending: None,
            handed_out: 0,
            last_call: None,
            avg_gap: Duration::ZERO,
            last_batch: 1,
            last_sequence: 0,
            received_sequence: 0,
            consumer_created,
            start_floor,
            batch_delivered: false,
            held: None,
            stale: false,
            batch_losses: 0,
            pull_subject,
            pull_inbox: None,
            since,
            epoch: 0,
            deletions: None,
            gone: false,
            closed: false,
            close_finished: false,
        }
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Result<Option<ReceivedEvent>> {
        self.ack_auto_pending().await;
        match self.receive().await? {
            Some((received, acker)) => {
                self.auto_pending = Some(acker);
                Ok(Some(received))
            }
            None => Ok(None),
        }
    }

    async fn next_manual_ack(&mut self) -> Result<Option<PendingEvent>> {
        // asking for the next event settles an auto-ack one, in either mode
        self.ack_auto_pending().await;
        match self.receive().await? {
            Some((received, acker)) => {
                let delivery = received.num_delivered;
                let wait = self.ack_wait_of(delivery);
                let last = self
                    .max_deliver
                    .is_some_and(|max| received.num_delivered >= max);
                // the spare delivery is never delivered again, settled or
                // not: a recreated consumer must not resume at it, although
                // the final delivery before it, dropped unsettled, left its
                // sequence in the set
                let spare = self
                    .max_deliver
                    .is_some_and(|max| received.num_delivered > max);
                let unsettled = match &self.kind {
                    Kind::Ephemeral { unsettled, .. } if spare => {
                        unsettled.with(|set| set.remove(&received.sequence));
                        None
                    }
                    Kind::Ephemeral { unsettled, .. } => {
                        unsettled.handed_out(received.sequence, self.max_ack_pending);
                        Some((unsettled.clone(), received.sequence))
                    }
                    Kind::Durable => None,
                };
                let pending = PendingEvent::new(
                    received,
                    self.max_deliver,
                    Box::new(NatsAcker {
                        acker,
                        timeout: self.provider.consumer_timeout(),
                        unsettled,
                        acks: self.acks.clone(),
                        since: self.provider.inner.link.denials.mark(),
                        last,
                        _provider: self.provider.clone(),
                    }),
                )
                .with_ack_wait(wait);
                Ok(Some(match &self.live {
                    // another subscription may change a durable's wait while
                    // this delivery is held: reported live
                    Some(live) => {
                        let live = live.clone();
                        pending.with_live_ack_wait(LiveAckWait::new(move || live.wait_of(delivery)))
                    }
                    None => pending,
                }))
            }
            None => Ok(None),
        }
    }

    async fn keep_alive(&mut self) -> Result<()> {
        if !self.closed {
            self.follow_settings();
            self.keep_buffer_alive().await;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if self.close_finished {
            return Ok(());
        }
        let result = self.close_now().await;
        self.close_finished = true;
        result
    }
}

impl NatsSubscription {
    /// [`Subscription::close`]'s work; run again in full if a call was
    /// dropped before its end (each step is harmless to repeat).
    async fn close_now(&mut self) -> Result<()> {
        self.closed = true;
        self.ack_auto_pending().await;
        let timeout = self.provider.consumer_timeout();
        // the waits for the server below share one request timeout: with
        // the server down or stalled, each would otherwise wait it out
        let deadline = tokio::time::Instant::now() + timeout;
        self.hand_back_unseen(deadline).await;
        if let Kind::Ephemeral { .. } = self.kind {
            let delete = async {
                match self.provider.inner.stream.delete_consumer(&self.name).await {
                    Ok(_) => Ok(()),
                    Err(e) => match error::map(&self.name, e, timeout) {
                        Error::NotFound { .. } => Ok(()),
                        other => Err(other),
                    },
                }
            };
            let op = format!("closing consumer {}", self.name);
            let rules = self.provider.consumer_rules(&self.name);
            self.provider.guarded(&op, &rules, delete).await?;
        }
        // the flush waits for a connection: bounded, or a close while the
        // server is down would never return
        match tokio::time::timeout_at(deadline, self.provider.inner.client.flush()).await {
            Ok(flushed) => flushed.map_err(|e| error::map("flush", e, timeout))?,
            Err(_) => {
                return Err(Error::Timeout {
                    operation: format!(
                        "closing consumer {}: flushing its acknowledgements (connection lost?)",
                        self.name
                    ),
                    elapsed: timeout,
                });
            }
        }
        // the server answered the flush after the acknowledgements: a
        // violation it reported for one is (almost always) recorded by now
        self.acks.denied(self.since, "closing")
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        if self.close_finished {
            return;
        }
        if let Kind::Ephemeral { .. } = self.kind {
            delete_in_background(&self.provider, std::mem::take(&mut self.name));
        }
    }
}

/// Deletes short-lived consumer `name` (an ephemeral, or one of
/// `history`'s) from a spawned task, when dropped inside a tokio runtime
/// (outside one, or in one shutting down, the server removes it after its
/// inactivity threshold, [`EPHEMERAL_INACTIVE`] for an ephemeral).
pub(crate) fn delete_in_background(provider: &NatsProvider, name: String) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let stream = provider.inner.stream.clone();
        handle.spawn(async move {
            if let Err(e) = stream.delete_consumer(&name).await {
                tracing::debug!(consumer = %name, error = %e, "short-lived consumer cleanup");
            }
        });
    }
}

/// Deletes the ephemeral consumer being created unless `name` is cleared
/// once the creation was answered: a creation dropped after the request was
/// sent, or timed out, may have created it on the server.
struct OrphanGuard<'a> {
    provider: &'a NatsProvider,
    name: Option<&'a str>,
}

impl Drop for OrphanGuard<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name {
            delete_in_background(self.provider, name.to_string());
        }
    }
}
