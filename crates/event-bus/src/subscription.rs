//! [`BusSubscription`]: a provider subscription that decrypts for the caller.

use crate::bus::{Inner, with_payload};
use crate::dlq::is_stored_dead_letter;
use async_trait::async_trait;
use event_core::{
    Acker, DeadLetterEvent, Error, Event, PendingEvent, ReceivedEvent, Result, Subscription,
    new_event_id,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;
use tracing::Instrument as _;

/// Addresses of the live bus subscriptions handed out boxed, so that one
/// given back to a bus to be wrapped (`consume_subscription(bus.subscribe(..))`)
/// is recognised and used as it is: wrapped twice, it would count every lag
/// report twice and dead-letter an undecodable message twice.
static HANDED_OUT: LazyLock<Mutex<HashMap<usize, HandedOut>>> = LazyLock::new(Mutex::default);

fn handed_out() -> std::sync::MutexGuard<'static, HashMap<usize, HandedOut>> {
    HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a consumer runner needs to know of a bus subscription handed out.
struct HandedOut {
    /// The managed subscriber it was opened for, if any (a consumer runner
    /// over it names that subscriber in its dead letters).
    subscriber: Option<String>,
    /// The dead letters it made itself (a consumer runner over it reports
    /// them).
    dead_letters: Arc<OwnDeadLetters>,
}

/// The undecryptable and undecodable deliveries a [`BusSubscription`]
/// dead-lettered itself, by outcome (a consumer runner adds them to its
/// report: the runner never sees those events). The bus metrics count them
/// already (`dlq_total`, `dlq_dropped`, `dlq_unsettled`).
#[derive(Debug, Default)]
pub(crate) struct OwnDeadLetters {
    /// Accepted by the DLQ handler (then terminated).
    dead_lettered: AtomicU64,
    /// Terminated without reaching a DLQ: none was set, it refused an
    /// undecodable message the provider had already terminated, or the
    /// delivery was an unreadable dead letter (never dead-lettered again).
    dropped: AtomicU64,
    /// Final deliveries left unsettled because the DLQ handler refused them.
    unsettled: AtomicU64,
}

/// A reading of [`OwnDeadLetters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OwnDeadLetterCounts {
    /// See [`OwnDeadLetters`].
    pub(crate) dead_lettered: u64,
    /// See [`OwnDeadLetters`].
    pub(crate) dropped: u64,
    /// See [`OwnDeadLetters`].
    pub(crate) unsettled: u64,
}

impl OwnDeadLetters {
    /// The counts so far.
    pub(crate) fn counts(&self) -> OwnDeadLetterCounts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        OwnDeadLetterCounts {
            dead_lettered: l(&self.dead_lettered),
            dropped: l(&self.dropped),
            unsettled: l(&self.unsettled),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl OwnDeadLetterCounts {
    /// The counts made since `earlier` (a reading of the same counters).
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            dead_lettered: self.dead_lettered.saturating_sub(earlier.dead_lettered),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            unsettled: self.unsettled.saturating_sub(earlier.unsettled),
        }
    }
}

/// Delay before an undecryptable event is offered again when the DLQ handler
/// refused it (so it is not lost; a final delivery is left unsettled
/// instead, see [`BusSubscription`]).
const DLQ_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How a bus subscription deals with the DLQ handler for the dead letters
/// of undecryptable events it makes itself: a consumer runner's
/// [`ConsumerConfig::dlq_timeout`](crate::ConsumerConfig::dlq_timeout) and
/// [`dlq_attempts`](crate::ConsumerConfig::dlq_attempts), or their
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DlqLimits {
    /// How long the subscription waits for the DLQ handler to take a dead
    /// letter before it abandons the call as a transient refusal (`None`:
    /// no limit).
    pub(crate) timeout: Option<Duration>,
    /// Deliveries after which an undecryptable event whose dead letter the
    /// DLQ handler refuses for good is terminated.
    pub(crate) attempts: u32,
}

impl DlqLimits {
    /// The limits of a consumer runner with `config`.
    pub(crate) fn of(config: &crate::ConsumerConfig) -> Self {
        Self {
            timeout: config.dlq_timeout,
            attempts: config.dlq_attempts,
        }
    }
}

impl Default for DlqLimits {
    /// Those of [`ConsumerConfig::default`](crate::ConsumerConfig::default):
    /// 30 s, 5 deliveries.
    fn default() -> Self {
        Self::of(&crate::ConsumerConfig::default())
    }
}

/// A subscription created by the bus: events come out decrypted.
///
/// # Undecryptable and undecodable events
///
/// An event whose payload fails to decrypt (unknown key, tampered, moved
/// from another event) is not handed to the caller. If the bus has a DLQ
/// handler, the event (payload still encrypted) is dead-lettered first and
/// then terminated. If the DLQ handler refuses it:
///
/// - on its final delivery under `max_deliver` (where a nak would end it),
///   it is left unsettled, so it comes once more after its ack wait (its
///   spare delivery, see the [`EventProvider`](event_core::EventProvider)
///   contract) and is offered to the DLQ again; it counts in the
///   `dlq_unsettled` metric (and a runner's
///   [`ConsumerReport::dlq_failed`](crate::ConsumerReport::dlq_failed));
/// - refused for good (an error that is not
///   [transient](event_core::Error::is_transient), or a panic) once the
///   event has been delivered 5 times (a consumer runner's
///   [`dlq_attempts`](crate::ConsumerConfig::dlq_attempts); the provider's
///   delivery count, which also counts deliveries refused for a transient
///   reason or made before), it is terminated: logged as an error naming
///   its id, subject and sequence, counted in the `dlq_dropped` metric
///   (and a runner's [`ConsumerReport::terminated`](crate::ConsumerReport::terminated)).
///   It stays in the stream. Without `max_deliver` it was redelivered
///   every 5 s without end;
/// - otherwise (a transient refusal, the DLQ's backend down, or a refusal
///   for good before that many deliveries) it is naked with a 5 s delay so
///   it is not lost, and offered again on its next delivery.
///
/// A DLQ call running longer than 30 s (a consumer runner's
/// [`dlq_timeout`](crate::ConsumerConfig::dlq_timeout)) is abandoned and
/// counts as a transient refusal, so a handler that hangs does not hold the
/// subscription. Without a DLQ handler it is terminated. Either way the call
/// returns [`Error::Decryption`] naming the event id (an id past 64
/// characters by its start and length) and sequence, once, and
/// the subscription stays usable. Such an event can never be processed by
/// this bus as configured, so redelivering it forever would only block the
/// consumer.
///
/// Except a delivery that is itself a dead letter (`event_type`
/// [`DEAD_LETTER_EVENT_TYPE`](crate::dlq::DEAD_LETTER_EVENT_TYPE), or an event carrying the `dlqreason`
/// metadata of a dead letter `event-routing`'s `SinkDlqHandler` or a
/// broker's dead-letter sink forwarded, to a subscription whose filter
/// covers the DLQ subjects): it is stored in its DLQ already and is never
/// offered to the DLQ handler again (a new letter would only nest it, or
/// forward it once more, unreadable for the same reason, and be delivered
/// here in turn). It is terminated at
/// once, whatever the DLQ handler, counted in `dlq_dropped` (and a runner's
/// [`ConsumerReport::terminated`](crate::ConsumerReport::terminated)),
/// logged as a `WARN`, and the call returns its [`Error::Decryption`] as
/// above (see [`PlaintextPolicy::Refuse`](crate::PlaintextPolicy::Refuse)).
///
/// A message the provider could not decode ([`Error::Undecodable`], already
/// terminated by the provider) is dead-lettered too when a DLQ handler is
/// set (payload: the raw body as a JSON string), then reported. That DLQ
/// call has no time limit: the dead letter is the message's only copy.
///
/// Each such delivery is logged once, saying what became of it and naming
/// its subject (escaped, as ids are) and sequence, and for an event its id
/// and deliveries: a `WARN` when the DLQ handler took it or it is kept to be
/// offered again (or it is an unreadable dead letter, kept in its DLQ), an
/// `ERROR` when it is lost to this subscription's
/// consumer group (terminated without a DLQ handler, an undecodable message
/// the handler refused, an undecryptable event refused for good). A
/// consumer runner over the subscription adds nothing above `DEBUG`.
///
/// `Error::Lagged` reports are counted in the bus metrics and passed on.
///
/// # Managed subscribers
///
/// A subscription opened for a managed subscriber
/// ([`create_subscriber`](crate::EventBus::create_subscriber),
/// [`consume`](crate::EventBus::consume)) ends (returns `Ok(None)`, and a
/// consumer runner over it stops) once
/// [`remove_subscription`](crate::EventBus::remove_subscription) removes the
/// subscriber, or an update drops its subject or changes its durability; it
/// delivers nothing published after that, also when the subscriber, the
/// subject or the durability is given back before the subscription looks
/// (the subscriptions opened after that deliver instead). A delivery already handed out is
/// unaffected and can still be settled. Changes to other subscribers do not
/// disturb it.
///
/// # Auto-ack
///
/// [`next`](Subscription::next) keeps the auto-ack contract (the previous
/// event is acknowledged when the next one is asked for, or on
/// [`close`](Subscription::close); dropping the subscription leaves it
/// unacknowledged). It is implemented over the provider's manual mode so an
/// undecryptable event can be settled as described above.
pub struct BusSubscription {
    inner: Box<dyn Subscription>,
    bus: Arc<Inner>,
    /// The last auto-ack delivery, acknowledged on the next call or close.
    unacked: Option<Box<dyn Acker>>,
    /// The managed subscriber this subscription serves, if any.
    membership: Option<Membership>,
    /// The subscriber no longer covers this subscription: it has ended.
    ended: bool,
    /// Limits of the DLQ handler calls for undecryptable events.
    dlq_limits: DlqLimits,
    /// The dead letters this subscription made itself.
    dead_letters: Arc<OwnDeadLetters>,
}

/// The bus's signal of managed-subscriber changes: how many there have
/// been, and whose the last one was (one subscriber's, or a batch's).
#[derive(Debug, Default)]
pub(crate) struct SubChange {
    pub(crate) generation: u64,
    /// The subscribers the last change added, updated or removed, sorted
    /// and without repeats (see [`changed_ids`]); empty before the first.
    subscribers: Box<[Box<str>]>,
}

impl SubChange {
    /// Records a change of `subscribers` (added, updated or removed), as
    /// [`changed_ids`] lists them.
    pub(crate) fn made(&mut self, subscribers: Box<[Box<str>]>) {
        self.generation += 1;
        self.subscribers = subscribers;
    }

    /// Whether the last change was (also) of subscriber `id`.
    pub(crate) fn names(&self, id: &str) -> bool {
        self.subscribers.binary_search_by(|s| (**s).cmp(id)).is_ok()
    }
}

/// The subscribers of one change, as [`SubChange::made`] takes them: built
/// before the signal's lock is taken, so that its readers do not wait for
/// a large batch to be sorted.
pub(crate) fn changed_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Box<[Box<str>]> {
    let mut ids: Vec<Box<str>> = ids.into_iter().map(Box::from).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_boxed_slice()
}

/// The managed subscriber (and subject) a [`BusSubscription`] was opened
/// for, and the bus's change signal to watch.
pub(crate) struct Membership {
    pub(crate) subscriber_id: String,
    pub(crate) subject: String,
    pub(crate) durable: bool,
    /// The stamp of the subject in the subscriber's record when this
    /// subscription was opened (see `SubState::stamp`).
    pub(crate) stamp: u64,
    pub(crate) changes: tokio::sync::watch::Receiver<SubChange>,
    /// The last change generation looked at.
    pub(crate) seen: u64,
    /// A change was signalled and not yet checked (the check can be
    /// interrupted by a delivery; it is redone on the next call).
    pub(crate) unchecked: bool,
}

impl Membership {
    /// Waits for a change that removes this subscription from its
    /// subscriber; never completes if the bus (the signal) is gone.
    async fn removed(&mut self, bus: &Inner) {
        loop {
            if !self.unchecked {
                if self.changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let (generation, other) = {
                    let change = self.changes.borrow_and_update();
                    (change.generation, !change.names(&self.subscriber_id))
                };
                // exactly one change since the last look, of other
                // subscribers only (one, or a batch that leaves this one
                // out): this one's record is as it was, and the lock is
                // not taken (with thousands of subscriptions open, each
                // change would otherwise queue every one of them on it);
                // several changes coalesced are checked
                let skip = other && generation == self.seen + 1;
                self.seen = generation;
                if skip {
                    continue;
                }
                self.unchecked = true;
            }
            let covered = bus.subs.lock().await.covers(
                &self.subscriber_id,
                &self.subject,
                self.durable,
                self.stamp,
            );
            self.unchecked = false;
            if !covered {
                return;
            }
        }
    }
}

impl std::fmt::Debug for BusSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusSubscription")
            .field("unacked", &self.unacked.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for BusSubscription {
    fn drop(&mut self) {
        handed_out().remove(&std::ptr::from_ref::<Self>(self).addr());
    }
}

impl BusSubscription {
    pub(crate) fn new(inner: Box<dyn Subscription>, bus: Arc<Inner>) -> Self {
        Self {
            inner,
            bus,
            unacked: None,
            membership: None,
            ended: false,
            dlq_limits: DlqLimits::default(),
            dead_letters: Arc::default(),
        }
    }

    /// Bounds each DLQ handler call, and the deliveries of an
    /// undecryptable event whose dead letter is refused for good, by
    /// `limits`.
    pub(crate) fn with_dlq_limits(mut self, limits: DlqLimits) -> Self {
        self.dlq_limits = limits;
        self
    }

    /// Boxes the subscription, remembering that it is one of ours (see
    /// [`is_bus_subscription`](Self::is_bus_subscription)).
    pub(crate) fn boxed(self) -> Box<dyn Subscription> {
        let handed = HandedOut {
            subscriber: self.membership.as_ref().map(|m| m.subscriber_id.clone()),
            dead_letters: self.dead_letters.clone(),
        };
        let boxed = Box::new(self);
        handed_out().insert(std::ptr::from_ref::<Self>(&boxed).addr(), handed);
        boxed
    }

    /// Whether `subscription` is a bus subscription handed out by
    /// [`boxed`](Self::boxed) (the address of a live allocation identifies
    /// it: no other object can share it while it lives).
    pub(crate) fn is_bus_subscription(subscription: &dyn Subscription) -> bool {
        let address = std::ptr::from_ref(subscription).cast::<()>().addr();
        handed_out().contains_key(&address)
    }

    /// The managed subscriber a bus subscription handed out by
    /// [`boxed`](Self::boxed) was opened for; `None` for any other
    /// subscription.
    pub(crate) fn subscriber_of(subscription: &dyn Subscription) -> Option<String> {
        let address = std::ptr::from_ref(subscription).cast::<()>().addr();
        handed_out()
            .get(&address)
            .and_then(|handed| handed.subscriber.clone())
    }

    /// The counters of the dead letters a bus subscription handed out by
    /// [`boxed`](Self::boxed) made itself; `None` for any other
    /// subscription.
    pub(crate) fn dead_letters_of(subscription: &dyn Subscription) -> Option<Arc<OwnDeadLetters>> {
        let address = std::ptr::from_ref(subscription).cast::<()>().addr();
        handed_out()
            .get(&address)
            .map(|handed| handed.dead_letters.clone())
    }

    /// Ties the subscription to a managed subscriber (see "Managed
    /// subscribers" above).
    pub(crate) fn member_of(mut self, membership: Membership) -> Self {
        self.membership = Some(membership);
        self
    }

    /// The provider's next delivery, or `None` once this subscription's
    /// subscriber no longer covers it. A change that leaves it covered does
    /// not interrupt the pending fetch.
    async fn next_delivery(&mut self) -> Option<Result<Option<PendingEvent>>> {
        let Some(membership) = self.membership.as_mut() else {
            return Some(self.inner.next_manual_ack().await);
        };
        tokio::select! {
            // a removal wins over a delivery that is ready at the same time
            biased;
            () = membership.removed(&self.bus) => None,
            next = self.inner.next_manual_ack() => Some(next),
        }
    }

    async fn ack_previous(&mut self) -> Result<()> {
        match self.unacked.take() {
            Some(acker) => acker.ack().await,
            None => Ok(()),
        }
    }

    async fn fetch(&mut self) -> Result<Option<PendingEvent>> {
        if self.ended {
            return Ok(None);
        }
        let Some(next) = self.next_delivery().await else {
            self.ended = true;
            if let Some(m) = &self.membership {
                tracing::debug!(
                    subscriber = %m.subscriber_id,
                    subject = %m.subject,
                    "subscriber removed or changed: subscription ends"
                );
            }
            self.inner.close().await?;
            return Ok(None);
        };
        let pending = match next {
            Ok(Some(pending)) => pending,
            Ok(None) => return Ok(None),
            Err(err) => {
                let subscriber = self.membership.as_ref().map(|m| m.subscriber_id.as_str());
                return Err(
                    Inner::report_error(&self.bus, err, subscriber, &self.dead_letters).await,
                );
            }
        };
        if !self.bus.hooks.encrypting() {
            return Ok(Some(pending));
        }
        let hooks = self.bus.hooks.load();
        let sequence = pending.received.sequence;
        match self
            .bus
            .decrypt_payload(&hooks, &pending.received.event, Some(sequence))
        {
            Ok(None) => Ok(Some(pending)),
            Ok(Some(plain)) => Ok(Some(pending.map_received(|received| {
                let event = Arc::new(with_payload(&received.event, plain));
                ReceivedEvent { event, ..received }
            }))),
            Err(err) if is_stored_dead_letter(&pending.received.event) => {
                // A dead letter (a subscriber covering the DLQ subjects) is
                // stored in its DLQ already: dead-lettered again, it would
                // only be nested in a new letter, unreadable for the same
                // reason, delivered here in turn, and so on without end.
                // counted, logged and terminated in a task of its own: a
                // caller that stops waiting (a runner shutting down drops its
                // fetch) must not leave it counted but unsettled, to be
                // counted again when it comes back
                let (received, _, acker) = pending.into_parts();
                let (bus, own, reason) =
                    (self.bus.clone(), self.dead_letters.clone(), err.to_string());
                detached("terminating an unreadable dead letter", async move {
                    bus.metrics.add_dlq_dropped(1);
                    OwnDeadLetters::bump(&own.dropped);
                    tracing::warn!(
                        event_id = ?received.event.id,
                        subject = ?received.event.subject,
                        sequence,
                        deliveries = received.num_delivered,
                        error = %reason,
                        "unreadable dead letter not dead-lettered again: it is stored in its DLQ \
                         already (a new dead letter would only nest it); terminated for this \
                         subscriber. Give the DLQ handler the bus's encryptor (letters it \
                         stored in clear before it had one stay unreadable under \
                         PlaintextPolicy::Refuse), or keep this subscriber's filter off the DLQ \
                         subjects"
                    );
                    acker.term().await
                })
                .await?;
                Err(err)
            }
            Err(err) => {
                let last = pending.is_final_delivery();
                let (received, _, acker) = pending.into_parts();
                let deliveries = received.num_delivered;
                let given_up = deliveries >= u64::from(self.dlq_limits.attempts);
                let (event_id, subject) =
                    (received.event.id.clone(), received.event.subject.clone());
                let mut dead = DeadLetterEvent::new(Event::clone(&received.event), err.to_string())
                    .with_attempts(received.num_delivered);
                if let Some(m) = &self.membership {
                    dead = dead.with_subscriber(m.subscriber_id.clone());
                }
                // decrypting fails the first time it is tried
                let at = dead.dead_lettered_at;
                let dead = dead.with_first_failure_at(at);
                let bus = self.bus.clone();
                let limit = self.dlq_limits.timeout;
                let own = self.dead_letters.clone();
                // logged in the task: a caller that stops waiting (a runner
                // shutting down drops its fetch) must not lose the line
                let (logged_event, reason) = (Arc::clone(&received.event), err.to_string());
                let settled = detached("dead-letter hand-off", async move {
                    let (fate, settled) = match bus.dead_letter(dead, sequence, limit).await {
                        Some(Ok(())) => {
                            OwnDeadLetters::bump(&own.dead_lettered);
                            (Fate::DeadLettered, acker.term().await)
                        }
                        None => {
                            bus.metrics.add_dlq_dropped(1);
                            OwnDeadLetters::bump(&own.dropped);
                            (Fate::Terminated, acker.term().await)
                        }
                        // a nak of a final delivery would end the event:
                        // left unsettled, it comes once more (its spare
                        // delivery, unless this was the spare), and the DLQ
                        // is offered it again then
                        Some(Err(_)) if last => {
                            bus.metrics.add_dlq_unsettled(1);
                            OwnDeadLetters::bump(&own.unsettled);
                            drop(acker);
                            (Fate::Unsettled, Ok(()))
                        }
                        // refused for good, and offered on enough
                        // deliveries: without `max_deliver` a nak would
                        // bring it back every few seconds for as long as
                        // the subscription runs
                        Some(Err(refusal)) if given_up && !refusal.is_transient() => {
                            tracing::error!(
                                event_id = ?event_id,
                                subject = ?subject,
                                sequence,
                                deliveries,
                                error = %refusal,
                                "the DLQ handler refused the dead letter of an undecryptable event for good; terminating the event (it stays in the stream)"
                            );
                            bus.metrics.add_dlq_dropped(1);
                            OwnDeadLetters::bump(&own.dropped);
                            (Fate::Logged, acker.term().await)
                        }
                        Some(Err(_)) => (
                            Fate::HandedBack,
                            acker.nak(Some(DLQ_RETRY_DELAY)).await,
                        ),
                    };
                    fate.log_undecryptable(&logged_event, sequence, deliveries, &reason);
                    Ok(settled)
                })
                .await?;
                settled?;
                Err(err)
            }
        }
    }
}

/// What became of a delivery a [`BusSubscription`] could not hand out (an
/// undecryptable event, an undecodable message), for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Accepted by the DLQ handler (an undecryptable event is then
    /// terminated on the stream).
    DeadLettered,
    /// Terminated without reaching a DLQ: none is set. The consumer group
    /// loses the event (it stays in the stream).
    Terminated,
    /// Refused by the DLQ handler (an undecodable message: then lost).
    Refused,
    /// Refused by the DLQ handler on its final delivery: left unsettled.
    Unsettled,
    /// Refused by the DLQ handler: handed back, offered again later.
    HandedBack,
    /// Refused for good and terminated; logged where that was decided.
    Logged,
}

impl Fate {
    /// Logs what became of `event`, which failed to decrypt with `err` on
    /// its delivery number `deliveries`, at stream `sequence`: a `WARN`
    /// while the event is kept (dead-lettered, or to be offered to the DLQ
    /// again), an `ERROR` when this consumer group loses it. Ids and
    /// subjects are logged escaped (`Debug`): they are the publisher's.
    fn log_undecryptable(self, event: &Event, sequence: u64, deliveries: u64, err: &str) {
        let (lost, what) = match self {
            Self::DeadLettered => (
                false,
                "undecryptable event dead-lettered: the DLQ handler took it and it was terminated \
                 on the stream (re-drive it once this process can decrypt it)",
            ),
            Self::Terminated => (
                true,
                "undecryptable event terminated: no DLQ handler is set, so this consumer group \
                 loses it (it stays in the stream)",
            ),
            Self::Refused | Self::HandedBack => (
                false,
                "undecryptable event not dead-lettered: the DLQ handler refused it; handed back, \
                 it is offered to the DLQ again on its next delivery",
            ),
            Self::Unsettled => (
                false,
                "undecryptable event not dead-lettered: the DLQ handler refused it on its final \
                 delivery; left unsettled, it comes once more after its ack wait (unless this was \
                 its spare delivery) and is offered to the DLQ again",
            ),
            Self::Logged => return,
        };
        let (id, subject) = (&event.id, &event.subject);
        if lost {
            tracing::error!(event_id = ?id, subject = ?subject, sequence, deliveries, error = %err, "{what}");
        } else {
            tracing::warn!(event_id = ?id, subject = ?subject, sequence, deliveries, error = %err, "{what}");
        }
    }

    /// Logs what became of the undecodable message `err` (which names its
    /// subject, escaped, and sequence; its body is not logged): a `WARN`
    /// when the DLQ handler took it, an `ERROR` when it is lost (the
    /// provider has already dropped it).
    fn log_undecodable(self, subject: &str, sequence: u64, err: &str) {
        let why_lost = match self {
            Self::DeadLettered => {
                tracing::warn!(
                    subject = ?subject,
                    sequence,
                    error = %err,
                    "undecodable message dead-lettered (the provider has dropped it; the dead \
                     letter holds its body)"
                );
                return;
            }
            Self::Terminated => "no DLQ handler is set",
            _ => "the DLQ handler refused its dead letter",
        };
        tracing::error!(
            subject = ?subject,
            sequence,
            error = %err,
            "undecodable message lost: the provider has dropped it and {why_lost}"
        );
    }
}

/// Runs `work` (`what`, for the error if its task fails) to completion even
/// if the caller stops waiting for it. A consumer runner shutting down drops
/// a pending `fetch`, and a dead letter handed over but not followed by
/// `term` would be dead-lettered again on redelivery (or, for an
/// undecodable message the provider already terminated, lost); a
/// subscription change dropped while its state is saved would leave the
/// store and the bus disagreeing. Runs inline outside a tokio runtime.
pub(crate) async fn detached<T: Send + 'static>(
    what: &str,
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            // in the caller's span: its logs name the consumer
            .spawn(work.in_current_span())
            .await
            .unwrap_or_else(|e| Err(Error::provider("event-bus", format!("{what} failed: {e}")))),
        Err(_) => work.await,
    }
}

impl Inner {
    /// Hands `dead` (the delivery at stream `sequence`) to the DLQ
    /// handler, if any; `None` when there is none. A call running longer
    /// than `limit` is abandoned ([`Error::Timeout`], a transient refusal).
    pub(crate) async fn dead_letter(
        &self,
        dead: DeadLetterEvent,
        sequence: u64,
        limit: Option<Duration>,
    ) -> Option<Result<()>> {
        let dlq = self.hooks.load().dlq.clone()?;
        let (id, subject) = (dead.event.id.clone(), dead.event.subject.clone());
        let result =
            crate::consumer::guard::offer_dead_letter(&*dlq, dead, limit, &self.metrics, sequence)
                .await;
        match &result {
            Ok(()) => self.metrics.add_dlq(1),
            Err(err) => {
                self.metrics.add_dlq_error(1);
                tracing::error!(
                    event_id = ?id,
                    subject = ?subject,
                    sequence,
                    error = %err,
                    "DLQ handler refused a dead letter"
                );
            }
        }
        Some(result)
    }

    /// Counts lag, dead-letters undecodable messages (naming `subscriber`,
    /// the managed subscriber that read them, if any, and counting the
    /// outcome in `own`, the reading subscription's); returns the error to
    /// report.
    ///
    /// The DLQ call for an undecodable message is not bounded: the
    /// provider already terminated the message, so the dead letter is its
    /// only copy, and abandoning a slow call would lose it.
    pub(crate) async fn report_error(
        this: &Arc<Self>,
        err: Error,
        subscriber: Option<&str>,
        own: &Arc<OwnDeadLetters>,
    ) -> Error {
        match &err {
            Error::Lagged { missed } => this.metrics.add_lagged(*missed),
            Error::Undecodable {
                subject,
                sequence,
                reason,
                raw,
            } => {
                // the token after the provider's prefix (of one or more tokens)
                let category =
                    event_core::subject::category_of(subject, this.provider.subject_prefix())
                        .unwrap_or("unknown");
                let event = Event {
                    id: new_event_id(),
                    subject: subject.clone(),
                    category: category.to_string(),
                    event_type: String::new(),
                    version: 1,
                    payload: serde_json::Value::String(raw.clone()),
                    summary: "undecodable message".to_string(),
                    source: "a3s-event".to_string(),
                    timestamp: event_core::now_millis(),
                    metadata: [("a3s.sequence".to_string(), sequence.to_string())]
                        .into_iter()
                        .collect(),
                };
                let mut dead =
                    DeadLetterEvent::new(event, format!("undecodable: {reason}")).with_attempts(1);
                if let Some(subscriber) = subscriber {
                    dead = dead.with_subscriber(subscriber);
                }
                let at = dead.dead_lettered_at;
                let dead = dead.with_first_failure_at(at);
                // The provider already terminated the message; a refusal is
                // logged and counted by `dead_letter`, and the dead letter
                // is then gone (counted as dropped, as without a handler).
                // The line is logged in the task: a caller that stops
                // waiting must not lose it.
                let (bus, own, seq) = (this.clone(), own.clone(), *sequence);
                let (logged_subject, reason) = (subject.clone(), err.to_string());
                let handed = detached("dead-letter hand-off", async move {
                    let fate = match bus.dead_letter(dead, seq, None).await {
                        Some(Ok(())) => {
                            OwnDeadLetters::bump(&own.dead_lettered);
                            Fate::DeadLettered
                        }
                        None => Fate::Terminated,
                        Some(Err(_)) => Fate::Refused,
                    };
                    if fate != Fate::DeadLettered {
                        bus.metrics.add_dlq_dropped(1);
                        OwnDeadLetters::bump(&own.dropped);
                    }
                    fate.log_undecodable(&logged_subject, seq, &reason);
                    Ok(())
                })
                .await;
                if let Err(failed) = handed {
                    tracing::error!(
                        subject = ?subject,
                        sequence,
                        error = %err,
                        failure = %failed,
                        "undecodable message: handing it to the DLQ failed"
                    );
                }
            }
            _ => {}
        }
        err
    }
}

#[async_trait]
impl Subscription for BusSubscription {
    async fn next(&mut self) -> Result<Option<ReceivedEvent>> {
        self.ack_previous().await?;
        let Some(pending) = self.fetch().await? else {
            return Ok(None);
        };
        let (received, _, acker) = pending.into_parts();
        self.unacked = Some(acker);
        Ok(Some(received))
    }

    async fn next_manual_ack(&mut self) -> Result<Option<PendingEvent>> {
        self.fetch().await
    }

    async fn keep_alive(&mut self) -> Result<()> {
        self.inner.keep_alive().await
    }

    async fn close(&mut self) -> Result<()> {
        let acked = self.ack_previous().await;
        let closed = self.inner.close().await;
        acked.and(closed)
    }
}
