//! The bounded queue between publishers and routing workers.

use super::metrics::Counters;
use super::{Core, PendingGuard, QueueFullPolicy};
use event_core::{Error, Event, Result};
use parking_lot::RwLock;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

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
        dispatcher: JoinHandle<()>,
    },
    Closed,
}

#[derive(Default)]
pub(super) struct Queue {
    state: RwLock<State>,
}

fn closed() -> Error {
    Error::Closed("the broker is shut down".to_owned())
}

impl Queue {
    /// The sender, starting the dispatcher on first use.
    fn sender(&self, core: &Arc<Core>) -> Result<mpsc::Sender<Arc<Event>>> {
        if let State::Running { tx, .. } = &*self.state.read() {
            return Ok(tx.clone());
        }
        let mut state = self.state.write();
        match &*state {
            State::Running { tx, .. } => Ok(tx.clone()),
            State::Closed => Err(closed()),
            State::Idle => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    Error::invalid_config("runtime", "the broker queue needs a Tokio runtime")
                })?;
                let (tx, rx) = mpsc::channel(core.config.queue_capacity);
                let dispatcher = runtime.spawn(dispatch(core.clone(), rx));
                *state = State::Running {
                    tx: tx.clone(),
                    dispatcher,
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
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(closed()),
                Err(mpsc::error::TrySendError::Full(event)) => event,
            },
            _ => event,
        };
        let tx = self.sender(core)?;
        let event = match tx.try_send(event) {
            Ok(()) => {
                admission.admitted = true;
                Counters::add(&core.counters.enqueued, 1);
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(closed()),
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        Counters::add(&core.counters.queue_full, 1);
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
        sent.map_err(|_| closed())?;
        admission.admitted = true;
        Counters::add(&core.counters.enqueued, 1);
        Ok(())
    }

    pub(super) fn depth(&self) -> usize {
        match &*self.state.read() {
            State::Running { tx, .. } => tx.max_capacity() - tx.capacity(),
            _ => 0,
        }
    }

    pub(super) async fn shutdown(&self) {
        let previous = std::mem::replace(&mut *self.state.write(), State::Closed);
        if let State::Running { tx, dispatcher } = previous {
            drop(tx);
            if let Err(err) = dispatcher.await {
                tracing::error!(error = %err, "broker dispatcher failed");
            }
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

/// Takes events off the queue and routes up to `workers` at a time; when the
/// queue closes, routes what is left and waits for the routings.
///
/// It takes a worker slot before taking an event, so that while every worker
/// is busy the events wait in the queue, where the capacity bounds them.
///
/// While events keep arriving it does not wait on the queue (which would
/// make every publish wake it, a cross-thread wake-up on the publisher's
/// path): it drains what is there, sleeps `linger`, and drains again. Only
/// when a sleep found nothing new does it go back to waiting, so an idle
/// broker costs nothing and the first event after a pause is taken at once.
async fn dispatch(core: Arc<Core>, mut rx: mpsc::Receiver<Arc<Event>>) {
    let workers = core.config.workers;
    let linger = core.config.dispatch_linger;
    let permits = Arc::new(Semaphore::new(workers));
    'idle: loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let Some(event) = rx.recv().await else {
            break;
        };
        spawn_routing(&core, event, permit);
        if linger.is_zero() {
            continue;
        }
        // Busy: drain without registering a waker, then linger.
        loop {
            let mut took = false;
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break 'idle;
                };
                match rx.try_recv() {
                    Ok(event) => {
                        spawn_routing(&core, event, permit);
                        took = true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => break 'idle,
                }
            }
            if !took && rx.is_empty() {
                continue 'idle;
            }
            tokio::time::sleep(linger).await;
        }
    }
    let all = u32::try_from(workers).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

fn spawn_routing(core: &Arc<Core>, event: Arc<Event>, permit: tokio::sync::OwnedSemaphorePermit) {
    let core = core.clone();
    tokio::spawn(async move {
        let _done = PendingGuard(core.clone());
        let _permit = permit;
        core.route(&event).await;
    });
}
