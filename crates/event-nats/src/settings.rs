//! A durable's settings as its subscriptions see them, kept current while
//! another subscription (in this process or another) may change them.
//!
//! A durable takes the options of whichever subscription subscribed last
//! (see [`resume`](crate::subscription)): a process that opened it with a
//! long ack wait keeps running when a later one shortens it, and JetStream
//! applies the shorter wait to every delivery, those the first process
//! holds included. Its subscriptions therefore read the consumer again
//! while they are in use ([`LiveSettings`]), and the ack waits they report
//! for their deliveries are live views of what they read
//! ([`LiveSettings::wait_of`]), so a holder keeping a delivery alive with
//! `in_progress` follows the change within [`REFRESH_AFTER`] (plus one
//! request).

use crate::subscription::{PullLimits, max_deliver_of};
use async_nats::jetstream::consumer;
use async_nats::jetstream::stream::Stream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How old a durable's settings may get, while they are in use, before
/// they are read from the server again (in the background: nothing waits
/// for the request). Another process that changes the durable's ack wait
/// is followed within this (plus one request).
pub(crate) const REFRESH_AFTER: Duration = Duration::from_secs(1);

/// The settings of a consumer that another subscription may change.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConsumerSettings {
    /// The subscription's delivery limit (JetStream's without the spare).
    pub(crate) max_deliver: Option<u64>,
    pub(crate) ack_wait: Duration,
    /// The consumer's backoff: the ack wait of each delivery.
    pub(crate) backoff: Vec<Duration>,
    /// The consumer's limits on one pull request.
    pub(crate) limits: PullLimits,
}

impl ConsumerSettings {
    pub(crate) fn of(config: &consumer::Config) -> Self {
        Self {
            max_deliver: max_deliver_of(config),
            ack_wait: config.ack_wait,
            backoff: config.backoff.clone(),
            limits: PullLimits::of(config),
        }
    }

    /// The ack wait JetStream applies to delivery number `delivery`: the
    /// backoff entry for it (the last one repeating), or the `ack_wait`
    /// without a backoff.
    pub(crate) fn wait_of(&self, delivery: u64) -> Duration {
        let index = usize::try_from(delivery.saturating_sub(1)).unwrap_or(usize::MAX);
        match self.backoff.get(index).or(self.backoff.last()) {
            Some(wait) => *wait,
            None => self.ack_wait,
        }
    }
}

/// What was read last, and when.
struct Read {
    settings: ConsumerSettings,
    /// When the request that read them was sent.
    at: Instant,
    /// When the last request was sent, whether it read them or failed:
    /// the next is due [`REFRESH_AFTER`] later.
    tried: Instant,
    /// Counts the changes, so a subscription copies them only when needed.
    version: u64,
}

impl Read {
    /// Records `settings` read by a request sent at `at`, unless what a
    /// later request read is recorded already.
    fn record(&mut self, settings: ConsumerSettings, at: Instant) {
        self.tried = self.tried.max(at);
        if at < self.at {
            return;
        }
        self.at = at;
        if self.settings != settings {
            self.settings = settings;
            self.version += 1;
        }
    }

    /// Records a request sent at `at` that read nothing: the values are
    /// kept, and the next request is due [`REFRESH_AFTER`] after it.
    fn failed(&mut self, at: Instant) {
        self.tried = self.tried.max(at);
    }
}

/// A durable's settings shared by its subscription and the live ack waits
/// of the deliveries it handed out, read again from the server in the
/// background when they are older than [`REFRESH_AFTER`] and in use (one
/// request in flight at most; a failed or timed-out one keeps the values).
pub(crate) struct LiveSettings {
    read: Mutex<Read>,
    refreshing: AtomicBool,
    stream: Stream,
    name: String,
    timeout: Duration,
}

impl LiveSettings {
    /// `settings`, read from the server at `at`, of durable `name` in
    /// `stream`; `timeout` bounds each request.
    pub(crate) fn new(
        settings: ConsumerSettings,
        at: Instant,
        stream: Stream,
        name: String,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            read: Mutex::new(Read {
                settings,
                at,
                tried: at,
                version: 0,
            }),
            refreshing: AtomicBool::new(false),
            stream,
            name,
            timeout,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Read) -> R) -> R {
        f(&mut self.read.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The settings and their version, if the version is not `seen`.
    pub(crate) fn changed_since(&self, seen: u64) -> Option<(ConsumerSettings, u64)> {
        self.with(|read| (read.version != seen).then(|| (read.settings.clone(), read.version)))
    }

    /// Records `settings` read by a request sent at `at`, unless what a
    /// later request read was recorded already (a later request that
    /// failed does not count: it read nothing).
    pub(crate) fn store(&self, settings: ConsumerSettings, at: Instant) {
        self.with(|read| read.record(settings, at));
    }

    /// The ack wait applied now to delivery number `delivery` (as last
    /// read), starting a background refresh if that is too old.
    pub(crate) fn wait_of(self: &Arc<Self>, delivery: u64) -> Duration {
        let (wait, stale) = self.with(|read| {
            (
                read.settings.wait_of(delivery),
                read.tried.elapsed() >= REFRESH_AFTER,
            )
        });
        if stale {
            self.refresh_in_background();
        }
        wait
    }

    /// Starts a background refresh if the settings are older than
    /// [`REFRESH_AFTER`].
    pub(crate) fn refresh_if_stale(self: &Arc<Self>) {
        if self.with(|read| read.tried.elapsed() >= REFRESH_AFTER) {
            self.refresh_in_background();
        }
    }

    /// Reads the settings again in a spawned task, unless one is running
    /// (or there is no runtime to spawn it on).
    fn refresh_in_background(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        // made before the spawn, so the flag is cleared however the task
        // ends, also when it is dropped before it first runs (a runtime
        // shutting down)
        let running = Running(self.clone());
        runtime.spawn(async move {
            let running = running;
            let live = &running.0;
            let sent = Instant::now();
            let lookup = live.stream.consumer_info(&live.name);
            match tokio::time::timeout(live.timeout, lookup).await {
                Ok(Ok(info)) => live.store(ConsumerSettings::of(&info.config), sent),
                failed => {
                    match failed {
                        Ok(Err(e)) => {
                            tracing::debug!(consumer = %live.name, error = %e, "could not refresh consumer settings");
                        }
                        _ => {
                            tracing::debug!(consumer = %live.name, "consumer settings refresh timed out");
                        }
                    }
                    // kept, and tried again after the bound (not at every
                    // read while the server refuses)
                    live.with(|read| read.failed(sent));
                }
            }
        });
    }
}

/// Clears a refresh's in-flight flag when dropped.
struct Running(Arc<LiveSettings>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ack_wait: u64, backoff: &[u64]) -> ConsumerSettings {
        ConsumerSettings {
            max_deliver: None,
            ack_wait: Duration::from_secs(ack_wait),
            backoff: backoff.iter().map(|s| Duration::from_secs(*s)).collect(),
            limits: PullLimits::default(),
        }
    }

    /// A later request that failed does not discard what an earlier one,
    /// answered after it, read; a later answer wins over an earlier one.
    #[test]
    fn a_failed_later_request_does_not_discard_an_earlier_answer() {
        let start = Instant::now();
        let mut read = Read {
            settings: settings(6, &[]),
            at: start,
            tried: start,
            version: 0,
        };
        let (first, second) = (
            start + Duration::from_millis(10),
            start + Duration::from_millis(20),
        );
        read.failed(second);
        read.record(settings(2, &[]), first);
        assert_eq!(read.settings.ack_wait, Duration::from_secs(2));
        assert_eq!((read.at, read.tried, read.version), (first, second, 1));
        // an answer to a request sent before the one recorded is stale
        read.record(settings(9, &[]), start);
        assert_eq!(read.settings.ack_wait, Duration::from_secs(2));
    }

    #[test]
    fn wait_of_follows_the_backoff_and_its_last_step() {
        let s = settings(30, &[1, 2]);
        assert_eq!(s.wait_of(1), Duration::from_secs(1));
        assert_eq!(s.wait_of(2), Duration::from_secs(2));
        assert_eq!(s.wait_of(9), Duration::from_secs(2));
        assert_eq!(settings(6, &[]).wait_of(3), Duration::from_secs(6));
    }
}
