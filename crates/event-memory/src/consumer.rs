//! Consumers: a position in the log, the deliveries awaiting settlement and
//! their timers. Durable and ephemeral consumers share this machinery.

use crate::store::Store;
use async_trait::async_trait;
use event_core::{
    Acker, DeliverPolicy, Error, Event, ReceivedEvent, Result, SubjectPattern, SubscribeOptions,
};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Settings a consumer runs with, resolved against the provider defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) filter: SubjectPattern,
    pub(crate) options: SubscribeOptions,
    pub(crate) ack_wait: Duration,
    pub(crate) max_ack_pending: u64,
    /// Ephemeral consumers skip ahead past this many positions (lag bound).
    pub(crate) max_lag: Option<u64>,
}

impl Settings {
    fn in_flight_wait(&self, deliveries: u64) -> Duration {
        if self.options.backoff.is_empty() {
            self.ack_wait
        } else {
            self.options.redelivery_delay(deliveries)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Delivered; the deadline is the ack timeout.
    InFlight,
    /// Nak'd; the deadline is the redelivery time.
    Scheduled,
}

#[derive(Debug)]
struct Pending {
    deliveries: u64,
    deadline: Instant,
    token: u64,
    phase: Phase,
}

pub(crate) struct State {
    pub(crate) settings: Settings,
    next_seq: u64,
    /// Sequences delivered before `next_seq` by the start policy
    /// (`Last`, `LastPerSubject`).
    initial: VecDeque<u64>,
    pending: HashMap<u64, Pending>,
    timers: BTreeSet<(Instant, u64)>,
    next_token: u64,
    lagged: u64,
    pub(crate) deleted: bool,
}

/// One delivery handed to a subscription.
pub(crate) struct Delivery {
    pub(crate) event: Arc<Event>,
    pub(crate) sequence: u64,
    pub(crate) deliveries: u64,
    pub(crate) token: u64,
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
    pub(crate) notify: Notify,
}

impl Consumer {
    pub(crate) fn new(settings: Settings, store: &Store) -> Arc<Self> {
        let (next_seq, initial) = start_position(&settings, store);
        Arc::new(Self {
            state: Mutex::new(State {
                settings,
                next_seq,
                initial,
                pending: HashMap::new(),
                timers: BTreeSet::new(),
                next_token: 0,
                lagged: 0,
                deleted: false,
            }),
            notify: Notify::new(),
        })
    }

    /// Applies changed settings to an existing durable. The start policy
    /// only applies at creation; changing it is a conflict.
    pub(crate) fn reconfigure(&self, name: &str, settings: Settings) -> Result<()> {
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
        state.settings = settings;
        drop(state);
        self.notify.notify_waiters();
        Ok(())
    }

    pub(crate) fn mark_deleted(&self) {
        self.state.lock().deleted = true;
        self.notify.notify_waiters();
    }

    /// The next delivery, if any is due. Redeliveries go first, then the
    /// start-policy backlog, then new events in log order.
    pub(crate) fn try_next(&self, store: &parking_lot::Mutex<Store>) -> Next {
        let mut state = self.state.lock();
        if state.deleted {
            return Next::Deleted;
        }
        let now = Instant::now();
        let store = store.lock();
        if let Some(d) = state.due_redelivery(&store, now) {
            return Next::Delivery(d);
        }
        if state.lagged > 0 {
            return Next::Lagged(std::mem::take(&mut state.lagged));
        }
        if state.in_flight() < state.settings.max_ack_pending {
            while let Some(seq) = state.initial.pop_front() {
                if let Some(entry) = store.get(seq) {
                    let event = entry.event.clone();
                    return Next::Delivery(state.deliver_new(seq, event, now));
                }
                state.lagged += 1;
            }
            if let Some(next) = state.next_new(&store, now) {
                return next;
            }
        }
        Next::Wait(state.timers.first().map(|(at, _)| *at))
    }

    pub(crate) fn ack(&self, seq: u64) {
        let mut state = self.state.lock();
        if let Some(p) = state.pending.remove(&seq) {
            state.timers.remove(&(p.deadline, seq));
            drop(state);
            // room under max_ack_pending may wake a waiting subscriber
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
        let old = p.deadline;
        if max.is_some_and(|m| p.deliveries >= m) {
            state.pending.remove(&seq);
            state.timers.remove(&(old, seq));
        } else {
            let deadline = Instant::now() + delay.unwrap_or(Duration::ZERO);
            p.deadline = deadline;
            p.phase = Phase::Scheduled;
            state.timers.remove(&(old, seq));
            state.timers.insert((deadline, seq));
        }
        drop(state);
        self.notify.notify_waiters();
    }

    fn in_progress(&self, seq: u64, token: u64) {
        let mut state = self.state.lock();
        let Some(p) = state.pending.get(&seq) else {
            return;
        };
        if p.token != token || p.phase != Phase::InFlight {
            return;
        }
        let (old, deliveries) = (p.deadline, p.deliveries);
        let deadline = Instant::now() + state.settings.in_flight_wait(deliveries);
        if let Some(p) = state.pending.get_mut(&seq) {
            p.deadline = deadline;
        }
        state.timers.remove(&(old, seq));
        state.timers.insert((deadline, seq));
    }
}

impl State {
    fn in_flight(&self) -> u64 {
        self.pending.len() as u64
    }

    fn deliver_new(&mut self, seq: u64, event: Arc<Event>, now: Instant) -> Delivery {
        self.next_token += 1;
        let deadline = now + self.settings.in_flight_wait(1);
        self.pending.insert(
            seq,
            Pending {
                deliveries: 1,
                deadline,
                token: self.next_token,
                phase: Phase::InFlight,
            },
        );
        self.timers.insert((deadline, seq));
        Delivery {
            event,
            sequence: seq,
            deliveries: 1,
            token: self.next_token,
        }
    }

    fn due_redelivery(&mut self, store: &Store, now: Instant) -> Option<Delivery> {
        let max = self.settings.options.max_deliver;
        while let Some(&(at, seq)) = self.timers.first() {
            if at > now {
                return None;
            }
            self.timers.pop_first();
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            if max.is_some_and(|m| p.deliveries >= m) {
                // exhausted: its final delivery was reported as such
                self.pending.remove(&seq);
                continue;
            }
            let Some(entry) = store.get(seq) else {
                // evicted by retention before it could be redelivered
                self.pending.remove(&seq);
                self.lagged += 1;
                continue;
            };
            self.next_token += 1;
            p.deliveries += 1;
            p.token = self.next_token;
            p.phase = Phase::InFlight;
            p.deadline = now + self.settings.in_flight_wait(p.deliveries);
            self.timers.insert((p.deadline, seq));
            return Some(Delivery {
                event: entry.event.clone(),
                sequence: seq,
                deliveries: p.deliveries,
                token: p.token,
            });
        }
        None
    }

    fn next_new(&mut self, store: &Store, now: Instant) -> Option<Next> {
        if self.next_seq < store.first_seq() {
            self.lagged += store.first_seq() - self.next_seq;
            self.next_seq = store.first_seq();
        }
        if let Some(max_lag) = self.settings.max_lag {
            let behind = (store.last_seq() + 1).saturating_sub(self.next_seq);
            if behind > max_lag {
                self.lagged += behind - max_lag;
                self.next_seq += behind - max_lag;
            }
        }
        if self.lagged > 0 {
            return Some(Next::Lagged(std::mem::take(&mut self.lagged)));
        }
        while self.next_seq <= store.last_seq() {
            let seq = self.next_seq;
            self.next_seq += 1;
            if let Some(entry) = store.get(seq) {
                if self.settings.filter.matches(&entry.event.subject) {
                    let event = entry.event.clone();
                    return Some(Next::Delivery(self.deliver_new(seq, event, now)));
                }
            }
        }
        None
    }
}

fn start_position(settings: &Settings, store: &Store) -> (u64, VecDeque<u64>) {
    let end = store.last_seq() + 1;
    let filter = &settings.filter;
    match &settings.options.deliver_policy {
        DeliverPolicy::All => (store.first_seq(), VecDeque::new()),
        DeliverPolicy::New => (end, VecDeque::new()),
        DeliverPolicy::ByStartSequence { sequence } => {
            ((*sequence).max(store.first_seq()), VecDeque::new())
        }
        DeliverPolicy::ByStartTime { timestamp } => {
            (store.seq_at_time(*timestamp), VecDeque::new())
        }
        DeliverPolicy::Last => {
            let last = store
                .iter_rev()
                .find(|(_, e)| filter.matches(&e.event.subject))
                .map(|(seq, _)| seq);
            (end, last.into_iter().collect())
        }
        DeliverPolicy::LastPerSubject => {
            let mut seen = HashSet::new();
            let mut seqs: Vec<u64> = store
                .iter_rev()
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

pub(crate) fn received(d: &Delivery, stream: &Arc<str>) -> ReceivedEvent {
    ReceivedEvent {
        event: d.event.clone(),
        sequence: d.sequence,
        num_delivered: d.deliveries,
        stream: stream.clone(),
    }
}
