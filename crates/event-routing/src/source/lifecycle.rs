//! Start/stop bookkeeping shared by the sources.

use event_core::{Error, Result};
use parking_lot::Mutex;
use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Becomes `true` when the task has ended; its sender is dropped
    /// without sending if the task panicked or was cancelled.
    done: watch::Receiver<bool>,
}

impl Running {
    /// Whether the task has ended (its last step sent `done`, or it
    /// panicked or was cancelled).
    fn ended(&self) -> bool {
        *self.done.borrow() || self.task.is_finished()
    }
}

/// Logs a source's task dropped before its end: its runtime shut down (or
/// it panicked, which Tokio reports to no one here). Holds the source's
/// name until the task ends.
struct CutOff(Option<String>);

impl CutOff {
    /// The task reached its end: nothing to log.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CutOff {
    fn drop(&mut self) {
        let Some(source) = self.0.take() else {
            return;
        };
        if std::thread::panicking() {
            tracing::error!(source = %source, "source task panicked; the source has stopped");
        } else {
            tracing::warn!(
                source = %source,
                "source task dropped before it was stopped (the Tokio runtime that started it \
                 shut down); the source has stopped"
            );
        }
    }
}

/// A source's background task, if running.
#[derive(Default)]
pub(crate) struct Lifecycle {
    running: Mutex<Option<Running>>,
}

/// A stop signal: resolves once stop was requested.
pub(crate) struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// Resolves once stop was requested (or the source was dropped).
    pub(crate) async fn requested(&mut self) {
        loop {
            if *self.0.borrow_and_update() {
                return;
            }
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Lifecycle {
    pub(crate) fn start<F, Fut>(&self, name: &str, run: F) -> Result<()>
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut running = self.running.lock();
        if running.as_ref().is_some_and(|r| !r.ended()) {
            return Err(Error::Conflict {
                resource: format!("source `{name}`"),
                reason: "already running; stop it first".to_owned(),
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_config("runtime", "a source needs a Tokio runtime to start")
        })?;
        let (stop, rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        let run = run(StopSignal(rx));
        let mut cut_off = CutOff(Some(name.to_owned()));
        let task = runtime.spawn(async move {
            run.await;
            cut_off.disarm();
            let _ = done_tx.send(true);
        });
        *running = Some(Running { stop, task, done });
        Ok(())
    }

    /// Asks the task to stop and waits until it has ended. Every call waits,
    /// also one made while another is waiting or after one was given up on;
    /// the source stays running (and cannot be started) until then.
    pub(crate) async fn stop(&self, name: &str) -> Result<()> {
        let mut done = {
            let running = self.running.lock();
            let Some(running) = running.as_ref() else {
                return Ok(());
            };
            let _ = running.stop.send(true);
            running.done.clone()
        };
        let ended = done.wait_for(|ended| *ended).await.is_ok();
        let mut running = self.running.lock();
        // Forget the task stopped, not one started since.
        if running.as_ref().is_some_and(Running::ended) {
            *running = None;
        }
        if ended {
            Ok(())
        } else {
            Err(Error::provider(
                format!("source `{name}`"),
                "the source's task ended abnormally (panicked or cancelled)",
            ))
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.lock().as_ref().is_some_and(|r| !r.ended())
    }
}
