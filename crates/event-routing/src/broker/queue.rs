//! The bounded queue between publishers and routing workers.

use super::metrics::Counters;
use super::{Core, QueueFullPolicy};
use event_core::{Error, Event, Result};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use parking_lot::RwLock;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

/// The broker's queue was full and its policy is
/// [`QueueFullPolicy::Reject`]; the source of the
/// [`Error::Provider`](event_core::Error::Provider) the broker returns.
///
/// ```
/// # use event_routing::QueueFullError;
/// fn is_queue_full(err: &event_core::Error) -> bool {
///     std::error::Error::source(err)
///         .is_some_and(|s| s.downcast_ref::<QueueFullError>().is_some())
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFullError {
    /// The queue's capacity.
    pub capacity: usize,
}

impl std::fmt::Display for QueueFullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "broker queue full ({} events); event refused per policy Reject",
            self.capacity
        )
    }
}

impl std::error::Error for QueueFullError {}

#[derive(Default)]
enum State {
    #[default]
    Idle,
    Running {
        tx: mpsc::Sender<Arc<Event>>,
        /// Becomes `true` when the dispatcher has routed everything and ended.
        done: watch::Receiver<bool>,
    },
    /// Shut down; `done` as in `Running` if a dispatcher ever ran.
    Closed { done: Option<watch::Receiver<bool>> },
}

#[derive(Default)]
pub(super) struct Queue {
    state: RwLock<State>,
}

fn closed() -> Error {
    Error::Closed("the broker is shut down".to_owned())
}

impl Queue {
    /// The sender, starting the dispatcher on first use, and again when the
    /// one running is gone without a shutdown (the runtime it ran on was
    /// dropped: a setup runtime, a test's).
    fn sender(&self, core: &Arc<Core>) -> Result<mpsc::Sender<Arc<Event>>> {
        if let State::Running { tx, .. } = &*self.state.read()
            && !tx.is_closed()
        {
            return Ok(tx.clone());
        }
        let mut state = self.state.write();
        match &*state {
            State::Running { tx, .. } if !tx.is_closed() => Ok(tx.clone()),
            State::Closed { .. } => Err(closed()),
            State::Idle | State::Running { .. } => {
                if matches!(*state, State::Running { .. }) {
                    tracing::warn!(
                        "the broker queue's dispatcher is gone (its Tokio runtime was dropped?); \
                         starting another on the current runtime"
                    );
                }
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    Error::invalid_config("runtime", "the broker queue needs a Tokio runtime")
                })?;
                let (tx, rx) = mpsc::channel(core.config.queue_capacity);
                let (done_tx, done) = watch::channel(false);
                let core = core.clone();
                // Dropped without sending if the dispatcher panics or the
                // runtime drops it: waiters then stop waiting too.
                runtime.spawn(async move {
                    dispatch(core, rx).await;
                    let _ = done_tx.send(true);
                });
                *state = State::Running {
                    tx: tx.clone(),
                    done,
                };
                Ok(tx)
            }
        }
    }

    pub(super) async fn enqueue(&self, core: &Arc<Core>, event: Arc<Event>) -> Result<()> {
        core.begin();
        let mut admission = Admission {
            core,
            admitted: false,
        };
        // Fast path: room in a running queue; no sender clone, no await.
        let event = match &*self.state.read() {
            State::Running { tx, .. } => match tx.try_send(event) {
                Ok(()) => {
                    admission.admitted = true;
                    Counters::add(&core.counters.enqueued, 1);
                    return Ok(());
                }
                // The dispatcher is gone: `sender` starts another.
                Err(
                    mpsc::error::TrySendError::Closed(event)
                    | mpsc::error::TrySendError::Full(event),
                ) => event,
            },
            _ => event,
        };
        let mut event = event;
        // The dispatcher may go (its runtime dropped) while this waits for
        // room: the event is then offered once more, to the dispatcher
        // `sender` starts again, unless the broker was shut down.
        let mut retried = false;
        loop {
            let tx = self.sender(core)?;
            event = match tx.try_send(event) {
                Ok(()) => {
                    admission.admitted = true;
                    Counters::add(&core.counters.enqueued, 1);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(event)) if !retried => {
                    retried = true;
                    event
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(closed()),
                Err(mpsc::error::TrySendError::Full(event)) => {
                    match self.wait_for_room(core, &mut admission, tx, event).await? {
                        None => return Ok(()),
                        Some(event) if !retried => {
                            retried = true;
                            event
                        }
                        Some(_) => return Err(closed()),
                    }
                }
            };
        }
    }

    /// Applies the full-queue policy to `event`, which found `tx`'s queue
    /// full. `None`: queued (or handed to a task that waits for room);
    /// `Some`: the dispatcher is gone, the event handed back.
    async fn wait_for_room(
        &self,
        core: &Arc<Core>,
        admission: &mut Admission<'_>,
        tx: mpsc::Sender<Arc<Event>>,
        event: Arc<Event>,
    ) -> Result<Option<Arc<Event>>> {
        Counters::add(&core.counters.queue_full, 1);
        let mut waiting = None;
        if core.config.full_policy != QueueFullPolicy::Reject {
            match WaitsFor::enter(core) {
                RoutingWait::NotAWorker => {}
                RoutingWait::Waiting(edge) => waiting = Some(edge),
                RoutingWait::WouldCycle if core.config.full_policy == QueueFullPolicy::Wait => {
                    Self::defer(core, admission, tx, event);
                    return Ok(None);
                }
                // `WaitFor`: a bounded wait, which ends (refused) at its
                // timeout if the cycle does not clear first
                RoutingWait::WouldCycle => {}
            }
        }
        let sent = match core.config.full_policy {
            QueueFullPolicy::Reject => {
                Counters::add(&core.counters.rejected, 1);
                return Err(Error::provider(
                    "broker",
                    QueueFullError {
                        capacity: core.config.queue_capacity,
                    },
                ));
            }
            QueueFullPolicy::Wait => tx.send(event).await,
            QueueFullPolicy::WaitFor { timeout } => {
                match tokio::time::timeout(timeout, tx.send(event)).await {
                    Ok(sent) => sent,
                    Err(_) => {
                        Counters::add(&core.counters.rejected, 1);
                        return Err(Error::Timeout {
                            operation: "waiting for room in the broker queue".to_owned(),
                            elapsed: timeout,
                        });
                    }
                }
            }
        };
        drop(waiting);
        match sent {
            Ok(()) => {
                admission.admitted = true;
                Counters::add(&core.counters.enqueued, 1);
                Ok(None)
            }
            // the dispatcher is gone (only it closes the queue)
            Err(mpsc::error::SendError(event)) => Ok(Some(event)),
        }
    }

    /// Hands `event`, for which a routing worker would wait for room in a
    /// cycle (see [`WAITS_FOR`]), to a task of its own that waits instead:
    /// the routing goes on. The task owns the event's pending count.
    fn defer(
        core: &Arc<Core>,
        admission: &mut Admission<'_>,
        tx: mpsc::Sender<Arc<Event>>,
        event: Arc<Event>,
    ) {
        admission.admitted = true; // the task below owns the pending count
        let pending = OwnedAdmission {
            core: core.clone(),
            admitted: false,
        };
        Counters::add(&core.counters.deferred, 1);
        core.deferring.fetch_add(1, Ordering::SeqCst);
        let deferring = Deferring {
            core: core.clone(),
            settled: false,
        };
        tokio::spawn(async move {
            let mut deferring = deferring;
            let mut pending = pending;
            let sent = tx.send(event).await;
            deferring.settled = true;
            if sent.is_ok() {
                pending.admitted = true;
                Counters::add(&pending.core.counters.enqueued, 1);
            } else {
                // Its publisher was answered `Ok` when it was deferred: lost
                // to shutdown, not refused (not in `rejected`).
                Counters::add(&pending.core.counters.shutdown_unrouted, 1);
                tracing::error!(
                    "broker shut down while a forwarded event waited for room; not routed"
                );
            }
        });
    }

    /// Closes the queue and waits until the dispatcher has routed what was
    /// queued. Every call waits, also one made while another is waiting or
    /// after one was given up on.
    pub(super) async fn shutdown(&self) {
        let done = {
            let mut state = self.state.write();
            let done = match std::mem::take(&mut *state) {
                State::Running { tx, done } => {
                    // Without a sender the dispatcher drains the queue and ends.
                    drop(tx);
                    Some(done)
                }
                State::Closed { done } => done,
                State::Idle => None,
            };
            *state = State::Closed { done: done.clone() };
            done
        };
        if let Some(mut done) = done
            && done.wait_for(|ended| *ended).await.is_err()
        {
            tracing::error!("broker dispatcher failed before routing every queued event");
        }
    }
}

/// Undoes `Core::begin` unless the event made it into the queue (also when
/// the enqueueing future is dropped while waiting for room).
struct Admission<'a> {
    core: &'a Core,
    admitted: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.admitted {
            self.core.end();
        }
    }
}

/// A forward waiting for room in a task of its own: counted in
/// `Core::deferring` while the task lives (also when its runtime drops it).
/// Dropped before its send `settled` (its runtime dropped the task, as it
/// drops the dispatcher and the events still queued), the forward is lost
/// to its triggers and counts in `shutdown_unrouted`, as those events do.
struct Deferring {
    core: Arc<Core>,
    settled: bool,
}

impl Drop for Deferring {
    fn drop(&mut self) {
        if !self.settled {
            Counters::add(&self.core.counters.shutdown_unrouted, 1);
            tracing::debug!(
                "broker task dropped (its runtime shut down) while a forwarded event waited \
                 for room; not routed"
            );
        }
        if self.core.deferring.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.core.deferring_done.notify_waiters();
        }
    }
}

/// [`Admission`] owned by a task.
struct OwnedAdmission {
    core: Arc<Core>,
    admitted: bool,
}

impl Drop for OwnedAdmission {
    fn drop(&mut self) {
        if !self.admitted {
            self.core.end();
        }
    }
}

tokio::task_local! {
    /// Set (to the address of its `Core`) while a task routes queued events.
    static ROUTING_WORKER: usize;
}

fn core_id(core: &Arc<Core>) -> usize {
    Arc::as_ptr(core) as usize
}

/// Which brokers' routing workers wait for room in which brokers' queues
/// now (policy `Wait`, or `WaitFor` until its timeout): an edge
/// `(worker's broker, queue's broker)` per waiting worker, keyed by [`core_id`] (both `Core`s outlive the edge: the
/// worker's run and the waiting call hold them).
///
/// Only routing workers make room in a queue. A worker that waited for
/// room in its own broker's queue, or in one whose broker's workers wait
/// (directly, or through other brokers' queues) for room in its own, would
/// close a cycle of workers each waiting for a queue only the others
/// drain: once every worker of the cycle does, all wait for ever, and
/// every publisher with them. That worker's event waits for room in a task
/// of its own instead ([`BrokerMetrics::deferred`](super::BrokerMetrics::deferred)),
/// so no such cycle ever forms. A worker waiting with `WaitFor` counts as
/// waiting (without it, a `Wait` worker would join it in a cycle that ends
/// only when the `WaitFor` wait times out, its event refused); one whose
/// wait would close a cycle still waits, at most its timeout, unrecorded.
/// Checking and adding an edge happen under one lock, so of two workers
/// closing a cycle at once one defers.
static WAITS_FOR: parking_lot::Mutex<Vec<(usize, usize)>> = parking_lot::Mutex::new(Vec::new());

/// What a task about to wait for room in a `Wait` or `WaitFor` queue does.
enum RoutingWait {
    /// Not a routing worker (a publisher, a feed): it waits; its waiting
    /// holds up no queue.
    NotAWorker,
    /// A routing worker whose wait closes no cycle: it waits, its edge in
    /// [`WAITS_FOR`] held until the wait ends (or is cancelled).
    Waiting(WaitsFor),
    /// A routing worker whose wait would close a cycle: it defers (policy
    /// `Wait`) or waits at most its timeout without an edge (`WaitFor`).
    WouldCycle,
}

/// A routing worker's edge in [`WAITS_FOR`], removed on drop.
struct WaitsFor {
    edge: (usize, usize),
}

impl WaitsFor {
    /// Decides, for the current task, whether it may wait for room in
    /// `core`'s queue (see [`WAITS_FOR`]).
    fn enter(core: &Arc<Core>) -> RoutingWait {
        let Ok(worker) = ROUTING_WORKER.try_with(|id| *id) else {
            return RoutingWait::NotAWorker;
        };
        let queue = core_id(core);
        let mut edges = WAITS_FOR.lock();
        if reaches(&edges, queue, worker) {
            return RoutingWait::WouldCycle;
        }
        edges.push((worker, queue));
        RoutingWait::Waiting(WaitsFor {
            edge: (worker, queue),
        })
    }
}

impl Drop for WaitsFor {
    fn drop(&mut self) {
        let mut edges = WAITS_FOR.lock();
        if let Some(i) = edges.iter().position(|edge| *edge == self.edge) {
            edges.swap_remove(i);
        }
    }
}

/// Whether broker `from` is broker `to`, or its workers wait (through any
/// chain of brokers' queues) for room in `to`'s queue.
fn reaches(edges: &[(usize, usize)], from: usize, to: usize) -> bool {
    let mut seen = vec![from];
    let mut next = vec![from];
    while let Some(broker) = next.pop() {
        if broker == to {
            return true;
        }
        for &(waiter, queue) in edges {
            if waiter == broker && !seen.contains(&queue) {
                seen.push(queue);
                next.push(queue);
            }
        }
    }
    false
}

/// Worker slots: how many more events may be routed now. Only the
/// dispatcher takes slots; routings give them back one by one.
struct Slots {
    free: AtomicUsize,
    total: usize,
    /// Signalled when `free` leaves zero or comes back to `total`.
    changed: Notify,
}

impl Slots {
    fn free(&self) -> usize {
        self.free.load(Ordering::Acquire)
    }

    /// Takes `n` slots; `n` is at most [`free`](Self::free) (only the
    /// dispatcher takes).
    fn take(&self, n: usize) {
        self.free.fetch_sub(n, Ordering::AcqRel);
    }

    fn give_back(&self) {
        let before = self.free.fetch_add(1, Ordering::AcqRel);
        if before == 0 || before + 1 == self.total {
            self.changed.notify_one();
        }
    }

    /// Waits until `ready(free)` holds.
    async fn wait(&self, ready: impl Fn(usize) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if ready(self.free()) {
                return;
            }
            changed.await;
        }
    }
}

/// Most events one routing task takes: a drain's events are routed by tasks
/// of up to this many concurrent routings, so a burst costs a few task
/// spawns rather than one per event, and still spreads over the runtime's
/// threads.
const BATCH: usize = 32;

/// Takes events off the queue and routes up to `workers` at a time; when the
/// queue closes, routes what is left and waits for the routings. At the
/// deadline of [`Broker::shutdown_within`](super::Broker::shutdown_within)
/// it stops: see [`abandon`].
async fn dispatch(core: Arc<Core>, rx: mpsc::Receiver<Arc<Event>>) {
    let teardown = Arc::new(Teardown::default());
    let mut queue = Leftovers {
        core: core.clone(),
        rx,
        teardown: teardown.clone(),
    };
    let mut routings = JoinSet::new();
    let finished = tokio::select! {
        biased;
        () = core.cutoff.passed() => false,
        () = async {
            drain(&core, &teardown, &mut queue.rx, &mut routings).await;
            while routings.join_next().await.is_some() {}
        } => true,
    };
    if !finished {
        teardown.deadline.store(true, Ordering::Relaxed);
        abandon(&core, &mut queue.rx, &mut routings).await;
    }
}

/// What a routing task shares with the dispatcher that spawned it.
#[derive(Clone)]
struct Run {
    core: Arc<Core>,
    slots: Arc<Slots>,
    teardown: Arc<Teardown>,
}

/// At the shutdown deadline: discards the events still queued and cancels
/// the routings in progress (each counts itself, see [`route_queued`]),
/// counted and logged.
async fn abandon(core: &Core, rx: &mut mpsc::Receiver<Arc<Event>>, routings: &mut JoinSet<()>) {
    let unrouted_before = core.counters.shutdown_unrouted.load(Ordering::Relaxed);
    // Forwards waiting for room (`Deferring`) fail their send from here on.
    rx.close();
    let mut unrouted = 0_u64;
    while let Ok(event) = rx.try_recv() {
        unrouted += 1;
        core.dequeued.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            event_id = ?event.id, subject = ?event.subject,
            "broker shutdown deadline: a queued event is not routed"
        );
        core.end();
    }
    Counters::add(&core.counters.shutdown_unrouted, unrouted);
    let aborted_before = core.counters.shutdown_aborted.load(Ordering::Relaxed);
    routings.abort_all();
    while routings.join_next().await.is_some() {}
    // The forwards that were waiting for room count themselves as they
    // fail (the queue is closed): wait for them, so the report and the
    // metrics read after this have them.
    loop {
        let done = core.deferring_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if core.deferring.load(Ordering::SeqCst) == 0 {
            break;
        }
        done.await;
    }
    let unrouted = core
        .counters
        .shutdown_unrouted
        .load(Ordering::Relaxed)
        .saturating_sub(unrouted_before);
    let aborted = core
        .counters
        .shutdown_aborted
        .load(Ordering::Relaxed)
        .saturating_sub(aborted_before);
    if unrouted > 0 || aborted > 0 {
        tracing::warn!(
            unrouted,
            aborted,
            "broker shutdown deadline reached: queued events discarded without routing, \
             routings in progress cancelled (lost to their triggers; the provider still \
             stores the events)"
        );
    }
}

/// Takes events off the queue and starts their routings, up to `workers`
/// at a time, until the queue is closed and empty.
///
/// It takes an event only while a worker slot is free, so that while every
/// worker is busy the events wait in the queue, where the capacity bounds
/// them.
///
/// While events keep arriving it does not wait on the queue (which would
/// make every publish wake it, a cross-thread wake-up on the publisher's
/// path): it drains what is there, sleeps `linger`, and drains again. Only
/// when a sleep found nothing new does it go back to waiting, so an idle
/// broker costs nothing and the first event after a pause is taken at once.
///
/// What one drain takes is routed by one task per [`BATCH`] events, each
/// driving its routings concurrently, instead of one task per event; the
/// tasks go into `routings` (so that a shutdown deadline can cancel them),
/// which sheds the finished ones as it goes.
async fn drain(
    core: &Arc<Core>,
    teardown: &Arc<Teardown>,
    rx: &mut mpsc::Receiver<Arc<Event>>,
    routings: &mut JoinSet<()>,
) {
    let workers = core.config.workers;
    let linger = core.config.dispatch_linger;
    let run = Run {
        core: core.clone(),
        slots: Arc::new(Slots {
            free: AtomicUsize::new(workers),
            total: workers,
            changed: Notify::new(),
        }),
        teardown: teardown.clone(),
    };
    let slots = &run.slots;
    let mut batch = Vec::new();
    'idle: loop {
        slots.wait(|free| free > 0).await;
        let Some(event) = rx.recv().await else {
            break;
        };
        batch.push(event);
        // Busy: drain without registering a waker, then linger.
        loop {
            let room = slots.free().saturating_sub(batch.len());
            // Polled once: if the queue is empty this registers a no-op
            // waker, which the next publish clears without a wake-up. Zero
            // taken (with room) means closed and drained.
            let open = room == 0 || rx.recv_many(&mut batch, room).now_or_never() != Some(0);
            let took = !batch.is_empty();
            if took {
                slots.take(batch.len());
                core.dequeued
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                while routings.try_join_next().is_some() {}
                let mut taken = batch.drain(..);
                while taken.len() > 0 {
                    spawn_routings(&run, routings, taken.by_ref().take(BATCH).collect());
                }
            }
            if !open {
                break 'idle;
            }
            if linger.is_zero() || (!took && rx.is_empty()) {
                continue 'idle;
            }
            if slots.free() == 0 {
                // Every worker busy: the events wait in the queue.
                slots.wait(|free| free > 0).await;
                continue;
            }
            tokio::time::sleep(linger).await;
        }
    }
}

/// The dispatcher's end of the queue. Dropped before the queue was drained
/// (the runtime dropped the dispatcher), it closes the queue and settles the
/// events left in it, which will never be routed, so that they do not stay
/// pending forever ([`Broker::wait_idle`](super::Broker::wait_idle)); they
/// count in its [`Teardown`].
struct Leftovers {
    core: Arc<Core>,
    rx: mpsc::Receiver<Arc<Event>>,
    teardown: Arc<Teardown>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        self.rx.close();
        let mut lost = 0_u64;
        while let Ok(event) = self.rx.try_recv() {
            lost += 1;
            self.core.dequeued.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                event_id = ?event.id, subject = ?event.subject,
                "broker dispatcher dropped (its runtime shut down); a queued event is not routed"
            );
            self.core.end();
        }
        Counters::add(&self.core.counters.shutdown_unrouted, lost);
        self.teardown.unrouted.fetch_add(lost, Ordering::Relaxed);
    }
}

/// What a dispatcher lost because its runtime dropped it and its routing
/// tasks: shared by the dispatcher and the tasks, so the last of them
/// dropped logs it all in one `ERROR` (none if nothing was lost).
#[derive(Default)]
struct Teardown {
    /// Queued events never routed (see [`Leftovers`]).
    unrouted: AtomicU64,
    /// Routings in progress dropped unfinished (see [`route_queued`]), but
    /// for those a shutdown deadline cancelled, which [`abandon`] logs.
    aborted: AtomicU64,
    /// Set by [`abandon`] before it cancels the routings.
    deadline: AtomicBool,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let unrouted = *self.unrouted.get_mut();
        let aborted = *self.aborted.get_mut();
        if unrouted > 0 || aborted > 0 {
            tracing::error!(
                unrouted,
                aborted,
                "broker dispatcher dropped (its Tokio runtime shut down): queued events not \
                 routed, routings in progress cut off; lost to their triggers (the provider \
                 still stores the events; counted in shutdown_unrouted and shutdown_aborted)"
            );
        }
    }
}

/// Routes `events` (each holding a worker slot) concurrently in one task,
/// spawned into `routings`.
fn spawn_routings(run: &Run, routings: &mut JoinSet<()>, events: Vec<Arc<Event>>) {
    let id = core_id(&run.core);
    let run = run.clone();
    routings.spawn(ROUTING_WORKER.scope(id, async move {
        if let [event] = events.as_slice() {
            route_queued(&run, event).await;
            return;
        }
        let mut routings: FuturesUnordered<_> = events
            .iter()
            .map(|event| route_queued(&run, event))
            .collect();
        while routings.next().await.is_some() {}
    }));
}

/// Routes one queued event, then gives back its slot and ends its pending
/// count (also if routing panics, or the routing is cancelled: at a
/// shutdown deadline, or because the runtime drops the task; that counts
/// in `shutdown_aborted`, and the latter in the run's [`Teardown`]).
async fn route_queued(run: &Run, event: &Event) {
    struct Settle<'a> {
        run: &'a Run,
        routed: bool,
    }
    impl Drop for Settle<'_> {
        fn drop(&mut self) {
            let Run {
                core,
                slots,
                teardown,
            } = self.run;
            if !self.routed {
                Counters::add(&core.counters.shutdown_aborted, 1);
                if !teardown.deadline.load(Ordering::Relaxed) {
                    teardown.aborted.fetch_add(1, Ordering::Relaxed);
                }
            }
            slots.give_back();
            core.end();
        }
    }
    let core = &*run.core;
    let mut settle = Settle { run, routed: false };
    // Sinks' panics are caught per attempt; this keeps a bug in routing
    // itself from cancelling the other routings of the task.
    if AssertUnwindSafe(core.route_queued(event))
        .catch_unwind()
        .await
        .is_err()
    {
        tracing::error!(event_id = ?event.id, "routing panicked; the event was not fully routed");
    }
    settle.routed = true;
}
