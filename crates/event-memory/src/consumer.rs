//! Consumers: a position in the log, the deliveries awaiting settlement and
//! their timers. Durable and ephemeral consumers share this machinery.

use crate::store::{Cursor, Store, Summary};
use async_trait::async_trait;
use event_core::{
    Acker, DeliverPolicy, Error, Event, LONGEST_WAIT, ReceivedEvent, Result, SubjectPattern,
    SubscribeOptions,
};
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
// tokio's clock (std's unless the `test-util` feature pauses it), so that
// ack timers follow a paused or advanced runtime clock in tests
use event_core::deadline_after as after;
use tokio::time::Instant;

/// Settings a consumer runs with, resolved against the provider defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) filter: SubjectPattern,
    /// What the store's block summaries must hold for `filter` to match.
    pub(crate) required: Summary,
    /// `filter` matches every subject the provider stores (`events.>`): new
    /// events are delivered without matching their subjects.
    pub(crate) matches_all: bool,
    pub(crate) options: SubscribeOptions,
    pub(crate) ack_wait: Duration,
    pub(crate) max_ack_pending: u64,
}

impl Settings {
    /// The ack wait of delivery number `deliveries`, held at
    /// [`LONGEST_WAIT`]: the wait applied, which is also what
    /// `PendingEvent::ack_wait` reports.
    fn in_flight_wait(&self, deliveries: u64) -> Duration {
        let wait = if self.options.backoff.is_empty() {
            self.ack_wait
        } else {
            self.options.redelivery_delay(deliveries)
        };
        wait.min(LONGEST_WAIT)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Delivered; the deadline is the ack timeout.
    InFlight,
    /// Nak'd; the deadline is the redelivery time.
    Scheduled,
}

/// Hasher for stream sequences: one multiply (Fibonacci hashing); the keys
/// are dense integers, not attacker-chosen strings.
#[derive(Default)]
struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = crate::store::mix_bytes(self.0, bytes);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PendingMap = HashMap<u64, Pending, BuildHasherDefault<SeqHasher>>;

/// A timer entry: (deadline, sequence, delivery token). It is live only while
/// the pending entry still has this token and deadline; acks and reschedules
/// leave stale entries behind, which are skipped (lazy deletion) and swept
/// once they outnumber the live ones (see `State::tidy_timers`).
type Timer = (Instant, u64, u64);

#[derive(Debug)]
struct Pending {
    deliveries: u64,
    deadline: Instant,
    token: u64,
    phase: Phase,
    /// This delivery was reported as the final one
    /// ([`PendingEvent::is_final_delivery`](event_core::PendingEvent::is_final_delivery)).
    reported_final: bool,
    /// This delivery is the spare: the one more delivery an event gets when
    /// its final delivery was never settled, or when a delivery failed at or
    /// past a limit lowered after it was handed out (see
    /// [`State::due_redelivery`]). When the spare is not settled either, the
    /// event ends.
    spare: bool,
    /// The subscription this delivery went to (see [`HANDOFF_GRACE`]).
    holder: u64,
}

impl Pending {
    /// Whether a failed (nak'd or timed-out) delivery is the end of the
    /// event: it was reported as the final delivery and `max_deliver` (which
    /// a reconfigured durable may have changed since) still says so. A
    /// delivery made under a higher limit was not reported as final, so it
    /// is delivered once more, flagged final, rather than dropped unreported.
    fn exhausted(&self, max_deliver: Option<u64>) -> bool {
        self.reported_final && is_final(max_deliver, self.deliveries)
    }
}

/// How long a redelivery offered to the other subscriptions of a durable
/// waits for one of them before the subscription that failed it may take it
/// back.
///
/// A subscription that fails a delivery (a nak, or an ack wait that ran out
/// while it kept fetching) asks for more work at once, before the
/// subscriptions waiting on the same durable have run; taking the
/// redelivery itself, it could fail the same event again and again while a
/// healthy subscription waits. So a due redelivery is left to the other
/// subscriptions while one of them is waiting. One that counts as waiting
/// but is not polled (its fetch future kept and forgotten) must not strand
/// the event: after this grace the failing subscription may take it.
pub(crate) const HANDOFF_GRACE: Duration = Duration::from_millis(100);

/// A due redelivery left to the other subscriptions: (sequence, delivery
/// token of the failed delivery, when it was left).
type Handoff = (u64, u64, Instant);

pub(crate) struct State {
    pub(crate) settings: Settings,
    next_seq: u64,
    /// `next_seq` and the filter as the store sees them (for exact `Lagged`
    /// counts).
    cursor: Arc<Cursor>,
    /// Sequences delivered before `next_seq` by the start policy
    /// (`Last`, `LastPerSubject`).
    initial: VecDeque<u64>,
    pending: PendingMap,
    /// Ack timers of first deliveries, in deadline order (constant wait).
    fifo: VecDeque<Timer>,
    /// Every other timer (redeliveries, naks, in-progress extensions).
    heap: BinaryHeap<Reverse<Timer>>,
    /// Due redeliveries left to subscriptions other than their holder (see
    /// [`HANDOFF_GRACE`]); their timers have fired, they stay pending.
    handoff: VecDeque<Handoff>,
    next_token: u64,
    /// At most the lowest sequence of a nak'd (scheduled) delivery;
    /// `u64::MAX` when there is none. Retention passing it may have evicted
    /// such an event (see [`State::drop_evicted_scheduled`]).
    scheduled_low: u64,
    /// The store's first sequence at the last [`State::drop_evicted_scheduled`]
    /// scan: a scan (which walks every pending delivery) waits for as many
    /// evictions since as there are pending deliveries.
    scanned_at: u64,
    lagged: u64,
    /// The last delivery was a redelivery: a new event waiting goes first
    /// next, so an event naked over and over (redelivered at once each time)
    /// cannot hold back the events behind it.
    new_turn: bool,
    pub(crate) deleted: bool,
}

/// One delivery handed to a subscription.
pub(crate) struct Delivery {
    pub(crate) event: Arc<Event>,
    pub(crate) sequence: u64,
    pub(crate) deliveries: u64,
    pub(crate) token: u64,
    pub(crate) max_deliver: Option<u64>,
    /// How long this delivery may stay unsettled before it is redelivered
    /// (`None`: untracked).
    pub(crate) ack_wait: Option<Duration>,
}

pub(crate) enum Next {
    Delivery(Delivery),
    Lagged(u64),
    /// Nothing now; wake at this instant at the latest (a timer).
    Wait(Option<Instant>),
    Deleted,
}

pub(crate) struct Consumer {
    pub(crate) state: Mutex<State>,
    /// Wakes the waiting fetches (shared with the store, see
    /// [`Cursor::wake_on_eviction`]).
    pub(crate) notify: Arc<Notify>,
    /// Subscriptions waiting for work (see [`Consumer::waiting`]).
    waiting: AtomicUsize,
    /// Identifiers handed to subscriptions (see [`Consumer::join`]).
    subscribers: AtomicU64,
}

/// Counts a subscription as waiting for work while it lives.
pub(crate) struct Waiting<'a> {
    consumer: &'a Consumer,
    /// Dropped without [`woken`](Self::woken): the fetch was cancelled.
    cancelled: bool,
}

impl Waiting<'_> {
    /// The waiter was woken and fetches again (it takes what was left to it).
    pub(crate) fn woken(mut self) {
        self.cancelled = false;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.consumer.waiting.fetch_sub(1, Ordering::Relaxed);
        // a waiter that goes away without fetching again leaves what was
        // left to it to the others
        if self.cancelled && !self.consumer.state.lock().handoff.is_empty() {
            self.consumer.notify.notify_waiters();
        }
    }
}

impl Consumer {
    pub(crate) fn new(settings: Settings, store: &mut Store) -> Arc<Self> {
        let (next_seq, initial) = start_position(&settings, store);
        let notify = Arc::new(Notify::new());
        let cursor = store.add_cursor(settings.filter.clone(), next_seq, notify.clone());
        if next_seq < store.first_seq() {
            // a start sequence retention already passed: the events from it
            // on were evicted before this consumer existed, their subjects
            // are gone, so every evicted position counts (the upper bound
            // `Error::Lagged` allows); the first fetch reports them
            cursor.set_missed(store.first_seq() - next_seq);
        }
        Arc::new(Self {
            state: Mutex::new(State {
                settings,
                next_seq,
                cursor,
                initial,
                pending: PendingMap::default(),
                fifo: VecDeque::new(),
                heap: BinaryHeap::new(),
                handoff: VecDeque::new(),
                next_token: 0,
                scheduled_low: u64::MAX,
                scanned_at: 0,
                lagged: 0,
                new_turn: false,
                deleted: false,
            }),
            notify,
            waiting: AtomicUsize::new(0),
            subscribers: AtomicU64::new(0),
        })
    }

    /// An identifier for a new subscription to this consumer, which it
    /// passes to [`try_next`](Self::try_next).
    pub(crate) fn join(&self) -> u64 {
        self.subscribers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The category summary bit of the filter's subjects (0: a wildcard
    /// category), read under the state lock that filter changes take.
    pub(crate) fn required_category(&self) -> u64 {
        self.state.lock().cursor.required_category()
    }

    /// Counts the caller as waiting for work until the guard is dropped:
    /// due redeliveries are then left to it rather than taken back by the
    /// subscription that failed them (see [`HANDOFF_GRACE`]).
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting {
            consumer: self,
            cancelled: true,
        }
    }

    /// Applies changed settings to an existing durable. The start policy
    /// only applies at creation; changing it is a conflict.
    pub(crate) fn reconfigure(
        &self,
        name: &str,
        settings: Settings,
        store: &parking_lot::Mutex<Store>,
    ) -> Result<()> {
        let mut state = self.state.lock();
        if state.settings == settings {
            return Ok(());
        }
        if state.settings.options.deliver_policy != settings.options.deliver_policy {
            return Err(Error::Conflict {
                resource: format!("durable consumer {name:?}"),
                reason: format!(
                    "deliver policy cannot change on an existing consumer ({:?} -> {:?}); unsubscribe it first",
                    state.settings.options.deliver_policy, settings.options.deliver_policy
                ),
            });
        }
        if state.settings.filter != settings.filter {
            let store = store.lock();
            // the events already evicted past this consumer were counted
            // against the old filter; whether the new one matches them can
            // no longer be told, so every evicted position counts (the upper
            // bound `Error::Lagged` allows)
            if state.next_seq < store.first_seq() {
                state.cursor.set_missed(store.first_seq() - state.next_seq);
            }
            state
                .cursor
                .set_filter(settings.filter.clone(), settings.required);
        }
        state.settings = settings;
        // first-delivery timers are only ordered for one ack wait
        let fifo = std::mem::take(&mut state.fifo);
        state.heap.extend(fifo.into_iter().map(Reverse));
        drop(state);
        self.notify.notify_waiters();
        Ok(())
    }

    pub(crate) fn mark_deleted(&self) {
        self.state.lock().deleted = true;
        self.notify.notify_waiters();
    }

    /// The next delivery, if any is due. Due redeliveries go first, then
    /// the start-policy backlog, then new events in log order; except that
    /// right after a redelivery, a new event that is waiting goes first
    /// (see `State::new_turn`).
    ///
    /// `ack` acknowledges an earlier delivery first, under the same lock (the
    /// auto-ack path: the previous event is settled when the next is asked
    /// for).
    ///
    /// `untracked` delivers a new event without putting it in flight: no ack
    /// is expected, no timer is set. The auto-ack path of an ephemeral
    /// consumer uses it: its one subscription acknowledges a delivery when it
    /// asks for the next one, before anything could be redelivered to it, so
    /// tracking would be unobservable; if the subscription goes away first,
    /// so does the consumer.
    ///
    /// `sub` identifies the calling subscription ([`join`](Self::join)).
    pub(crate) fn try_next(
        &self,
        store: &parking_lot::Mutex<Store>,
        ack: Option<u64>,
        untracked: bool,
        sub: u64,
    ) -> Next {
        let mut state = self.state.lock();
        let freed = ack.is_some_and(|seq| state.ack(seq));
        // the caller is not waiting while it asks: any waiter is another
        let others_waiting = self.waiting.load(Ordering::Relaxed) > 0;
        let next = state.try_next(
            store,
            untracked,
            Caller {
                sub,
                others_waiting,
            },
        );
        drop(state);
        if freed {
            // room under max_ack_pending: wake a waiting subscriber
            self.notify.notify_waiters();
        }
        next
    }

    pub(crate) fn ack(&self, seq: u64) {
        let freed = self.state.lock().ack(seq);
        if freed {
            // room under max_ack_pending: wake a waiting subscriber
            self.notify.notify_waiters();
        }
    }

    fn nak(&self, seq: u64, token: u64, delay: Option<Duration>) {
        let mut state = self.state.lock();
        let max = state.settings.options.max_deliver;
        let Some(p) = state.pending.get_mut(&seq) else {
            return;
        };
        if p.token != token || p.phase != Phase::InFlight {
            return;
        }
        if p.exhausted(max) {
            // the final delivery failed: exhausted, never delivered again
            state.pending.remove(&seq);
        } else {
            let deadline = after(Instant::now(), delay.unwrap_or(Duration::ZERO));
            p.deadline = deadline;
            p.phase = Phase::Scheduled;
            state.scheduled_low = state.scheduled_low.min(seq);
            state.heap.push(Reverse((deadline, seq, token)));
        }
        state.tidy_timers();
        drop(state);
        self.notify.notify_waiters();
    }

    /// The ack wait this consumer applies now to delivery number
    /// `deliveries` (its settings change when a durable is resubscribed
    /// with other options): what `in_progress` restarts the timer with.
    pub(crate) fn current_wait(&self, deliveries: u64) -> Duration {
        self.state.lock().settings.in_flight_wait(deliveries)
    }

    fn in_progress(&self, seq: u64, token: u64) {
        let mut state = self.state.lock();
        let wait = {
            let Some(p) = state.pending.get(&seq) else {
                return;
            };
            if p.token != token || p.phase != Phase::InFlight {
                return;
            }
            state.settings.in_flight_wait(p.deliveries)
        };
        let deadline = after(Instant::now(), wait);
        match state.pending.get_mut(&seq) {
            // an unchanged deadline (a clock that did not move, as a paused
            // one) keeps its live timer: a second one would be live too,
            // and a loop of calls would grow the queue without bound
            Some(p) if p.deadline != deadline => p.deadline = deadline,
            _ => return,
        }
        state.heap.push(Reverse((deadline, seq, token)));
        state.tidy_timers();
    }
}

impl State {
    /// Acknowledges `seq`; true when that made room under a full
    /// `max_ack_pending` (waiting subscribers should be woken).
    fn ack(&mut self, seq: u64) -> bool {
        let was_full = self.in_flight() >= self.settings.max_ack_pending;
        if self.pending.remove(&seq).is_some() {
            self.tidy_timers();
            was_full
        } else {
            false
        }
    }

    fn try_next(
        &mut self,
        store: &parking_lot::Mutex<Store>,
        untracked: bool,
        caller: Caller,
    ) -> Next {
        if self.deleted {
            return Next::Deleted;
        }
        // the clock is needed only for timers: none are pending and an
        // untracked delivery sets none
        let now = (!untracked || !self.pending.is_empty()).then(Instant::now);
        if now.is_none() {
            // nothing is pending: what is left in the hand-off list was
            // settled, and its grace deadlines (past ones included, as no
            // clock was read to drop them) are no reason to wake
            self.handoff.clear();
        }
        let store = store.lock();
        let first = store.first_seq();
        if first > self.scheduled_low
            && first.saturating_sub(self.scanned_at) >= self.pending.len() as u64
        {
            self.drop_evicted_scheduled(&store);
        }
        // due redeliveries go first, but after one of them a new event that
        // is waiting takes its turn (see `new_turn`)
        let new_turn = std::mem::take(&mut self.new_turn);
        if !new_turn
            && let Some(now) = now
            && let Some(d) = self.due_redelivery(&store, now, caller)
        {
            self.new_turn = true;
            return Next::Delivery(d);
        }
        if self.lagged > 0 {
            return Next::Lagged(std::mem::take(&mut self.lagged));
        }
        let track = if untracked { None } else { now };
        if self.in_flight() < self.settings.max_ack_pending {
            while let Some(seq) = self.initial.pop_front() {
                if let Some(entry) = store.get(seq) {
                    let event = entry.event.clone();
                    return Next::Delivery(self.deliver_new(seq, event, track, caller.sub));
                }
                self.lagged += 1;
            }
            if let Some(next) = self.next_new(&store, track, caller.sub) {
                return next;
            }
        }
        if new_turn
            && let Some(now) = now
            && let Some(d) = self.due_redelivery(&store, now, caller)
        {
            self.new_turn = true;
            return Next::Delivery(d);
        }
        // a nak'd delivery whose event retention evicts is dropped at the
        // next fetch (`drop_evicted_scheduled`), which may free the slot a
        // waiting fetch needs: the eviction that makes that scan due wakes
        // it, also when its publish was on a category the waiter's filter
        // does not match (such a publish wakes no waiter of this consumer)
        if self.scheduled_low != u64::MAX {
            let scan_due = (self.scanned_at + self.pending.len() as u64).saturating_sub(1);
            self.cursor
                .wake_on_eviction(self.scheduled_low.max(scan_due));
        }
        let handoff = self.handoff.iter().map(|h| after(h.2, HANDOFF_GRACE)).min();
        Next::Wait(match (self.next_deadline(), handoff) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Drops the nak'd deliveries (waiting for their redelivery time, or
    /// left to other subscriptions) whose events retention evicted, and
    /// counts them as lagged, as their redelivery would have: a long nak
    /// delay must not hold a `max_ack_pending` slot for an event that can
    /// never be delivered again. Runs only when retention passed
    /// `scheduled_low`, and then only once as many events were evicted since
    /// the last scan as there are pending deliveries (the scan walks them
    /// all: amortised, O(1) per eviction; a slot is freed within that many
    /// publishes, not after the nak delay). It raises `scheduled_low` to the
    /// lowest scheduled delivery left. Deliveries in flight stay: their
    /// holders may still settle them.
    fn drop_evicted_scheduled(&mut self, store: &Store) {
        let first = store.first_seq();
        self.scanned_at = first;
        let (mut low, mut dropped) = (u64::MAX, 0);
        self.pending.retain(|&seq, p| {
            if p.phase != Phase::Scheduled {
                return true;
            }
            if seq < first {
                dropped += 1;
                return false;
            }
            low = low.min(seq);
            true
        });
        self.scheduled_low = low;
        if dropped > 0 {
            self.lagged += dropped;
            let pending = &self.pending;
            self.handoff
                .retain(|h| pending.get(&h.0).is_some_and(|p| p.token == h.1));
            self.tidy_timers();
        }
    }

    fn in_flight(&self) -> u64 {
        self.pending.len() as u64
    }

    fn is_live(&self, timer: &Timer) -> bool {
        is_live(&self.pending, timer)
    }

    /// Called whenever a timer went stale (its delivery was settled or its
    /// deadline moved): pops stale timers off the fronts and, when stale
    /// timers behind a live front (a delivery held unsettled for a long ack
    /// wait) outnumber the live ones, sweeps them all. Every timer is live
    /// once, so the sweep is amortised O(1) per timer and the queues stay
    /// proportional to the unsettled deliveries, not to the deliveries made
    /// during one ack wait.
    fn tidy_timers(&mut self) {
        self.drop_stale_timers();
        let timers = self.fifo.len() + self.heap.len();
        if timers > 2 * self.pending.len() + 32 {
            let pending = &self.pending;
            self.fifo.retain(|t| is_live(pending, t));
            self.heap.retain(|Reverse(t)| is_live(pending, t));
        }
    }

    /// Pops stale timers off the fronts so the queues stay as small as the
    /// in-flight set.
    fn drop_stale_timers(&mut self) {
        while let Some(front) = self.fifo.front() {
            if self.is_live(front) {
                break;
            }
            self.fifo.pop_front();
        }
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale_timers();
        let fifo = self.fifo.front().map(|t| t.0);
        let heap = self.heap.peek().map(|Reverse(t)| t.0);
        match (fifo, heap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Pops the earliest live timer if it is due.
    fn pop_due(&mut self, now: Instant) -> Option<u64> {
        let at = self.next_deadline()?;
        if at > now {
            return None;
        }
        let from_fifo = self.fifo.front().is_some_and(|t| t.0 == at);
        let timer = if from_fifo {
            self.fifo.pop_front()
        } else {
            self.heap.pop().map(|Reverse(t)| t)
        };
        timer.map(|(_, seq, _)| seq)
    }

    /// A first delivery of `seq`, in flight from `track` (the current time)
    /// until settled; `None` delivers it untracked (see
    /// [`Consumer::try_next`]).
    fn deliver_new(
        &mut self,
        seq: u64,
        event: Arc<Event>,
        track: Option<Instant>,
        holder: u64,
    ) -> Delivery {
        let mut token = 0;
        let mut ack_wait = None;
        if let Some(now) = track {
            self.next_token += 1;
            token = self.next_token;
            let wait = self.settings.in_flight_wait(1);
            ack_wait = Some(wait);
            let deadline = after(now, wait);
            self.pending.insert(
                seq,
                Pending {
                    deliveries: 1,
                    deadline,
                    token,
                    phase: Phase::InFlight,
                    reported_final: is_final(self.settings.options.max_deliver, 1),
                    spare: false,
                    holder,
                },
            );
            self.fifo.push_back((deadline, seq, token));
        }
        Delivery {
            event,
            sequence: seq,
            deliveries: 1,
            token,
            max_deliver: self.settings.options.max_deliver,
            ack_wait,
        }
    }

    /// A redelivery due now, if any: first one left to other subscriptions
    /// that the caller may take, then the due timers in deadline order. A due
    /// redelivery whose holder is the caller is left to the others while one
    /// of them waits (see [`HANDOFF_GRACE`]).
    fn due_redelivery(&mut self, store: &Store, now: Instant, caller: Caller) -> Option<Delivery> {
        if let Some(d) = self.take_handoff(store, now, caller) {
            return Some(d);
        }
        let max = self.settings.options.max_deliver;
        while let Some(seq) = self.pop_due(now) {
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            if p.exhausted(max) && p.spare {
                // the spare delivery was not settled either: the event ends
                self.pending.remove(&seq);
                continue;
            }
            if p.holder == caller.sub && caller.others_waiting {
                // failed by the caller: offered to the waiting ones first;
                // the holder's token can no longer nak or extend it (an ack
                // or term, by sequence, still settles it)
                p.phase = Phase::Scheduled;
                self.scheduled_low = self.scheduled_low.min(seq);
                self.handoff.push_back((seq, p.token, now));
                continue;
            }
            if let Some(d) = self.redeliver(store, seq, now, caller.sub) {
                return Some(d);
            }
        }
        None
    }

    /// A redelivery from the hand-off list the caller may take: one it did
    /// not fail, or any once nobody else waits or the grace has run out.
    /// Entries settled meanwhile are dropped.
    fn take_handoff(&mut self, store: &Store, now: Instant, caller: Caller) -> Option<Delivery> {
        let mut i = 0;
        while let Some(&(seq, token, since)) = self.handoff.get(i) {
            let Some(p) = self.pending.get(&seq).filter(|p| p.token == token) else {
                // settled (an ack by sequence) after it was left
                self.handoff.remove(i);
                continue;
            };
            let grace_over = after(since, HANDOFF_GRACE) <= now;
            if p.holder != caller.sub || !caller.others_waiting || grace_over {
                self.handoff.remove(i);
                if let Some(d) = self.redeliver(store, seq, now, caller.sub) {
                    return Some(d);
                }
                continue;
            }
            i += 1;
        }
        None
    }

    /// Delivers pending `seq` again, to `holder`; `None` when retention
    /// evicted it meanwhile (reported as lag).
    fn redeliver(
        &mut self,
        store: &Store,
        seq: u64,
        now: Instant,
        holder: u64,
    ) -> Option<Delivery> {
        let max = self.settings.options.max_deliver;
        let p = self.pending.get_mut(&seq)?;
        // A final delivery that reaches its deadline unsettled (its
        // holder crashed, stalled or dropped it) was never reported (a
        // final delivery nak'd or terminated ends at once). It is delivered
        // once more, still final, so that it reaches a dead-letter queue
        // instead of vanishing. So is a delivery at or past a limit
        // lowered after it was handed out (not reported final, so nak'd
        // or not): either way the next delivery is past the limit, the
        // event's one spare, and the event ends when that one fails too.
        let spare = is_final(max, p.deliveries);
        let Some(entry) = store.get(seq) else {
            // evicted by retention before it could be redelivered
            self.pending.remove(&seq);
            self.lagged += 1;
            return None;
        };
        self.next_token += 1;
        p.deliveries += 1;
        p.token = self.next_token;
        p.phase = Phase::InFlight;
        p.reported_final = is_final(max, p.deliveries);
        p.spare = spare;
        p.holder = holder;
        let wait = self.settings.in_flight_wait(p.deliveries);
        p.deadline = after(now, wait);
        let (deadline, token, deliveries) = (p.deadline, p.token, p.deliveries);
        self.heap.push(Reverse((deadline, seq, token)));
        Some(Delivery {
            event: entry.event.clone(),
            sequence: seq,
            deliveries,
            token,
            max_deliver: max,
            ack_wait: Some(wait),
        })
    }

    fn next_new(&mut self, store: &Store, track: Option<Instant>, holder: u64) -> Option<Next> {
        if self.next_seq < store.first_seq() {
            // retention overtook this consumer: the store counted the
            // evicted events its filter matches
            self.lagged += self.cursor.take_missed();
            self.next_seq = store.first_seq();
        }
        if self.lagged > 0 {
            self.cursor.advance_to(self.next_seq);
            return Some(Next::Lagged(std::mem::take(&mut self.lagged)));
        }
        let mut found = None;
        loop {
            // whole blocks without a possible match are skipped
            self.next_seq = store.next_candidate(self.next_seq, self.settings.required);
            if self.next_seq > store.last_seq() {
                break;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            if let Some(entry) = store.get(seq)
                && (self.settings.matches_all || self.settings.filter.matches(&entry.event.subject))
            {
                found = Some((seq, entry.event.clone()));
                break;
            }
        }
        self.cursor.advance_to(self.next_seq);
        let (seq, event) = found?;
        Some(Next::Delivery(self.deliver_new(seq, event, track, holder)))
    }
}

/// Who asks [`State::try_next`] for a delivery.
#[derive(Clone, Copy)]
struct Caller {
    /// The asking subscription ([`Consumer::join`]).
    sub: u64,
    /// Another subscription of the consumer is waiting for work.
    others_waiting: bool,
}

/// Whether delivery number `deliveries` is the last one `max_deliver`
/// allows (what [`PendingEvent::is_final_delivery`](event_core::PendingEvent::is_final_delivery) reports).
fn is_final(max_deliver: Option<u64>, deliveries: u64) -> bool {
    max_deliver.is_some_and(|m| deliveries >= m)
}

fn is_live(pending: &PendingMap, (deadline, seq, token): &Timer) -> bool {
    pending
        .get(seq)
        .is_some_and(|p| p.token == *token && p.deadline == *deadline)
}

fn start_position(settings: &Settings, store: &Store) -> (u64, VecDeque<u64>) {
    let end = store.last_seq() + 1;
    let filter = &settings.filter;
    match &settings.options.deliver_policy {
        DeliverPolicy::All => (store.first_seq(), VecDeque::new()),
        DeliverPolicy::New => (end, VecDeque::new()),
        // a start before the oldest stored event is kept (sequences start at
        // 1): the consumer reports the evicted ones as lag (see
        // `Consumer::new`) and goes on with the oldest stored event
        DeliverPolicy::ByStartSequence { sequence } => ((*sequence).max(1), VecDeque::new()),
        // a start time before the oldest stored event is not reported: the
        // evicted events' times are gone, so whether any was at or after it
        // cannot be told
        DeliverPolicy::ByStartTime { timestamp } => {
            (store.seq_at_time(*timestamp), VecDeque::new())
        }
        DeliverPolicy::Last => {
            let last = store
                .iter_rev_candidates(settings.required)
                .find(|(_, e)| filter.matches(&e.event.subject))
                .map(|(seq, _)| seq);
            (end, last.into_iter().collect())
        }
        DeliverPolicy::LastPerSubject => {
            let mut seen = HashSet::new();
            let mut seqs: Vec<u64> = store
                .iter_rev_candidates(settings.required)
                .filter(|(_, e)| {
                    filter.matches(&e.event.subject) && seen.insert(e.event.subject.as_str())
                })
                .map(|(seq, _)| seq)
                .collect();
            seqs.reverse();
            (end, seqs.into())
        }
    }
}

/// Settles one delivery of a memory consumer.
pub(crate) struct MemoryAcker {
    pub(crate) consumer: Arc<Consumer>,
    pub(crate) seq: u64,
    pub(crate) token: u64,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<()> {
        self.consumer.ack(self.seq);
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<()> {
        self.consumer.nak(self.seq, self.token, delay);
        Ok(())
    }

    async fn term(&self) -> Result<()> {
        self.consumer.ack(self.seq);
        Ok(())
    }

    async fn in_progress(&self) -> Result<()> {
        self.consumer.in_progress(self.seq, self.token);
        Ok(())
    }
}

pub(crate) fn received(d: Delivery, stream: &Arc<str>) -> ReceivedEvent {
    ReceivedEvent {
        event: d.event,
        sequence: d.sequence,
        num_delivered: d.deliveries,
        stream: stream.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(store: &mut Store, ack_wait: Duration) -> Arc<Consumer> {
        let filter = SubjectPattern::parse("events.>").unwrap();
        let settings = Settings {
            required: Summary::required_by(&filter, 1),
            matches_all: filter.matches_all_under("events"),
            filter,
            options: SubscribeOptions::default(),
            ack_wait,
            max_ack_pending: 10_000,
        };
        Consumer::new(settings, store)
    }

    fn append(store: &parking_lot::Mutex<Store>, n: u64) {
        let event = Arc::new(Event::new(
            "events.a.b",
            "a",
            "s",
            "x",
            serde_json::json!({ "n": n }),
        ));
        let key = crate::store::DedupKey::new(&event.id);
        store.lock().append(key, None, event, 1, n).unwrap();
    }

    fn deliver(c: &Consumer, store: &parking_lot::Mutex<Store>) -> Delivery {
        match c.try_next(store, None, false, 0) {
            Next::Delivery(d) => d,
            _ => panic!("expected a delivery"),
        }
    }

    /// One delivery held unsettled (a long ack wait, "forever" included)
    /// must not make every later, settled delivery leave its timer behind:
    /// the timer queues stay proportional to the unsettled deliveries.
    #[test]
    fn settled_deliveries_leave_no_timers_behind_a_held_one() {
        let store =
            parking_lot::Mutex::new(Store::new(100_000, 0, Duration::from_secs(60), 100_000));
        for wait in [Duration::from_secs(3600), Duration::MAX] {
            let c = consumer(&mut store.lock(), wait);
            append(&store, 0);
            let held = deliver(&c, &store);
            for n in 1..=20_000 {
                append(&store, n);
                let d = deliver(&c, &store);
                if n % 2 == 0 {
                    c.ack(d.sequence);
                } else {
                    // a nak and in_progress also retire the timer they replace
                    c.in_progress(d.sequence, d.token);
                    c.nak(d.sequence, d.token, Some(Duration::from_secs(3600)));
                    c.ack(d.sequence);
                }
            }
            let state = c.state.lock();
            assert_eq!(
                state.pending.len(),
                1,
                "only the held delivery is unsettled"
            );
            let timers = state.fifo.len() + state.heap.len();
            assert!(
                timers <= 64,
                "{timers} timers kept for 1 unsettled delivery"
            );
            drop(state);
            c.ack(held.sequence);
        }
    }

    /// A small seeded generator for the model test below.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
        }
    }

    /// What the model knows of the newest delivery of one event.
    struct Held {
        token: u64,
        /// The ack deadline (`None`: nak'd, released to be redelivered).
        deadline: Option<Instant>,
    }

    /// Every pending event has a way out: a live timer, or an entry in the
    /// hand-off list for its current delivery (a pending event with
    /// neither would never be redelivered).
    fn assert_nothing_stranded(state: &State, step: usize) {
        for (seq, p) in &state.pending {
            let timer = |t: &Timer| t.1 == *seq && is_live(&state.pending, t);
            let timed = state.fifo.iter().any(timer) || state.heap.iter().any(|r| timer(&r.0));
            let handed = state.handoff.iter().any(|h| h.0 == *seq && h.1 == p.token);
            assert!(
                timed || handed,
                "step {step}: event {seq} pending with no live timer and not handed off: {p:?}"
            );
            if handed {
                assert_eq!(p.phase, Phase::Scheduled, "step {step}: event {seq}");
            }
        }
    }

    /// Several subscriptions of one durable fetch (tracked, now and then
    /// untracked), settle at random (ack, nak, nak with a delay,
    /// in_progress, nothing), wait (guards held and
    /// dropped) while the paused clock moves, retention evicts and the
    /// durable is reconfigured: no event is ever stranded, none is delivered
    /// while an earlier delivery of it is still in flight, none is
    /// delivered after its ack, no wait deadline is already past, and once
    /// the failures stop every event settles.
    #[tokio::test(start_paused = true)]
    async fn a_shared_consumer_strands_and_duplicates_nothing_under_random_use() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let store = parking_lot::Mutex::new(Store::new(24, 0, Duration::from_secs(60), 1_000));
            let ack_wait = Duration::from_millis(50);
            let c = consumer(&mut store.lock(), ack_wait);
            let subs = [c.join(), c.join(), c.join()];
            let mut waiting = Vec::new();
            let mut held: HashMap<u64, Held> = HashMap::new();
            let mut acked: HashSet<u64> = HashSet::new();
            let mut appended = 0;
            for step in 0..3_000 {
                let now = Instant::now();
                match rng.below(20) {
                    0..=2 => {
                        append(&store, appended);
                        appended += 1;
                    }
                    3..=8 => {
                        let sub = subs[rng.below(3) as usize];
                        // now and then untracked (an ephemeral auto-ack fetch)
                        let untracked = rng.below(8) == 0;
                        let next = c.try_next(&store, None, untracked, sub);
                        if let Next::Wait(Some(at)) = next {
                            assert!(at > now, "step {step}: a wait deadline in the past");
                        }
                        if let Next::Delivery(d) = next
                            && d.token != 0
                        {
                            let seq = d.sequence;
                            assert!(!acked.contains(&seq), "step {step}: {seq} after its ack");
                            if let Some(h) = held.get(&seq) {
                                assert!(
                                    h.deadline.is_none_or(|at| at <= now),
                                    "step {step}: {seq} delivered again while in flight"
                                );
                            }
                            let deadline = Some(now + d.ack_wait.unwrap_or(ack_wait));
                            held.insert(
                                seq,
                                Held {
                                    token: d.token,
                                    deadline,
                                },
                            );
                        }
                    }
                    9..=13 if !held.is_empty() => {
                        let seqs: Vec<u64> = held.keys().copied().collect();
                        let seq = seqs[rng.below(seqs.len() as u64) as usize];
                        let token = held[&seq].token;
                        match rng.below(5) {
                            0 => {
                                c.ack(seq);
                                held.remove(&seq);
                                acked.insert(seq);
                            }
                            1 => {
                                c.nak(seq, token, None);
                                held.get_mut(&seq).unwrap().deadline = None;
                            }
                            2 => {
                                c.nak(seq, token, Some(Duration::from_millis(rng.below(30))));
                                held.get_mut(&seq).unwrap().deadline = None;
                            }
                            _ => {
                                c.in_progress(seq, token);
                                let h = held.get_mut(&seq).unwrap();
                                if h.deadline.is_some_and(|at| at > now) {
                                    h.deadline = Some(now + ack_wait);
                                }
                            }
                        }
                    }
                    14..=15 => {
                        if rng.below(2) == 0 && waiting.len() < 3 {
                            waiting.push(c.waiting());
                        } else if let Some(w) = waiting.pop()
                            && rng.below(2) == 0
                        {
                            w.woken();
                        }
                    }
                    16 => {
                        let mut settings = c.state.lock().settings.clone();
                        settings.options.max_deliver =
                            [None, Some(2), Some(3)][rng.below(3) as usize];
                        c.reconfigure("d", settings, &store).unwrap();
                    }
                    _ => {
                        tokio::time::advance(Duration::from_millis(rng.below(60))).await;
                    }
                }
                assert_nothing_stranded(&c.state.lock(), step);
            }
            // failures stop (the waiters stay, never polled): everything
            // delivered from now on is acked, and every event settles
            let mut idle = 0;
            while idle < 5 {
                let sub = subs[rng.below(3) as usize];
                match c.try_next(&store, None, false, sub) {
                    Next::Delivery(d) => {
                        assert!(!acked.contains(&d.sequence), "{} after its ack", d.sequence);
                        c.ack(d.sequence);
                        acked.insert(d.sequence);
                        idle = 0;
                    }
                    Next::Lagged(_) => idle = 0,
                    Next::Wait(Some(at)) => {
                        assert!(
                            at > Instant::now(),
                            "seed {seed}: a wait deadline in the past"
                        );
                        tokio::time::advance(at - Instant::now()).await;
                        idle = 0;
                    }
                    Next::Wait(None) => idle += 1,
                    Next::Deleted => unreachable!(),
                }
            }
            let state = c.state.lock();
            assert!(
                state.pending.is_empty(),
                "seed {seed}: unsettled {:?}",
                state.pending
            );
            drop(state);
            drop(waiting);
        }
    }

    /// A hand-off entry whose event was acked (by sequence) meanwhile is
    /// no reason to wake: an ephemeral consumer's untracked path, which
    /// reads no clock once nothing is pending, must not keep returning the
    /// grace deadline of such an entry after it passed (a fetch would spin
    /// on it until the next publish). Only a waiter that never runs (its
    /// fetch future leaked) makes another subscription count as waiting.
    #[tokio::test(start_paused = true)]
    async fn an_acked_hand_off_entry_gives_no_wait_deadline_in_the_past() {
        let store = parking_lot::Mutex::new(Store::new(100, 0, Duration::from_secs(60), 100));
        let c = consumer(&mut store.lock(), Duration::from_millis(50));
        let sub = c.join();
        let leaked = c.waiting();
        append(&store, 0);
        let Next::Delivery(d) = c.try_next(&store, None, false, sub) else {
            panic!("expected a delivery");
        };
        tokio::time::advance(Duration::from_millis(60)).await;
        // timed out while the other counts as waiting: handed off
        assert!(matches!(
            c.try_next(&store, None, false, sub),
            Next::Wait(Some(_))
        ));
        // the late ack settles it; the entry in the hand-off list is stale
        c.ack(d.sequence);
        tokio::time::advance(HANDOFF_GRACE * 2).await;
        for _ in 0..3 {
            match c.try_next(&store, None, true, sub) {
                Next::Wait(Some(at)) => assert!(
                    at > Instant::now(),
                    "a wait deadline {:?} in the past, returned again and again",
                    Instant::now() - at
                ),
                Next::Wait(None) => {}
                _ => panic!("nothing to deliver"),
            }
        }
        drop(leaked);
    }

    /// `in_progress` called again and again while the clock does not move
    /// (tokio's paused clock, which the timers follow) keeps one live timer,
    /// not one per call.
    #[tokio::test(start_paused = true)]
    async fn in_progress_under_a_still_clock_keeps_one_timer() {
        let store = parking_lot::Mutex::new(Store::new(100, 0, Duration::from_secs(60), 100));
        let c = consumer(&mut store.lock(), Duration::from_secs(30));
        append(&store, 0);
        let d = deliver(&c, &store);
        for _ in 0..10_000 {
            c.in_progress(d.sequence, d.token);
        }
        let state = c.state.lock();
        let timers = state.fifo.len() + state.heap.len();
        assert!(timers <= 2, "{timers} timers kept for 1 delivery");
    }
}
