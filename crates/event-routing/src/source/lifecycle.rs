//! Start/stop bookkeeping shared by the sources.

use event_core::{Error, Result};
use parking_lot::Mutex;
use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
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
        if running.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return Err(Error::Conflict {
                resource: format!("source `{name}`"),
                reason: "already running; stop it first".to_owned(),
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_config("runtime", "a source needs a Tokio runtime to start")
        })?;
        let (stop, rx) = watch::channel(false);
        let task = runtime.spawn(run(StopSignal(rx)));
        *running = Some(Running { stop, task });
        Ok(())
    }

    pub(crate) async fn stop(&self, name: &str) -> Result<()> {
        let Some(running) = self.running.lock().take() else {
            return Ok(());
        };
        let _ = running.stop.send(true);
        running
            .task
            .await
            .map_err(|e| Error::provider(format!("source `{name}`"), e.to_string()))
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running
            .lock()
            .as_ref()
            .is_some_and(|r| !r.task.is_finished())
    }
}
