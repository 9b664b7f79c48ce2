//! Sizing pull requests: the warm-up and prefetch pace, the consumer's
//! limits on one pull request, and what a refused pull means.

use super::NatsSubscription;
use crate::pull::Pull;
use async_nats::jetstream::consumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use event_core::Result;
use std::time::{Duration, Instant};

/// Deliveries fetched one at a time at the start of a subscription, before
/// prefetching starts (see the crate docs).
const WARMUP: u64 = 8;
/// How long one pull request waits at the server for events.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// What the status a pull request ended with (`"<code>: <description>"`)
/// means for the next one.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Passes (a leadership change, too many waiting requests, an expired
    /// request): asked again.
    Passing,
    /// The request exceeds the consumer's `max_batch`, `max_expires` or
    /// `max_bytes`.
    Limits,
    /// No request gets past it (a push consumer has the name now).
    Never,
}

/// `None`: not a refusal (an error for the caller).
pub(super) fn refusal_of(status: &str) -> Option<Refusal> {
    if status.contains("Exceeded MaxRequest") {
        Some(Refusal::Limits)
    } else if status.contains("Consumer is push based") {
        Some(Refusal::Never)
    } else if status.contains("409") || status.contains("408") {
        Some(Refusal::Passing)
    } else {
        None
    }
}

/// A consumer's limits on one pull request: JetStream answers a request
/// beyond them with a `409 Exceeded MaxRequest…` and delivers nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PullLimits {
    /// `max_batch` (0: none).
    pub(super) max_batch: usize,
    /// `max_expires` (zero: none).
    pub(super) max_expires: Duration,
}

impl PullLimits {
    pub(crate) fn of(config: &consumer::Config) -> Self {
        Self {
            max_batch: usize::try_from(config.max_batch.max(0)).unwrap_or(usize::MAX),
            max_expires: config.max_expires,
        }
    }

    /// `size` within `max_batch`.
    pub(super) fn batch(self, size: usize) -> usize {
        if self.max_batch > 0 {
            size.min(self.max_batch)
        } else {
            size
        }
    }

    /// `expires` within `max_expires`.
    pub(super) fn expires(self, expires: Duration) -> Duration {
        if self.max_expires.is_zero() {
            expires
        } else {
            expires.min(self.max_expires)
        }
    }
}

impl std::fmt::Display for PullLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.max_batch {
            0 => f.write_str("max_batch none")?,
            n => write!(f, "max_batch {n}")?,
        }
        if self.max_expires.is_zero() {
            f.write_str(", max_expires none")
        } else {
            write!(f, ", max_expires {:?}", self.max_expires)
        }
    }
}

impl NatsSubscription {
    /// How many events the next pull request asks for.
    ///
    /// One at a time for the first [`WARMUP`] deliveries, so a caller that
    /// stops early leaves nothing fetched-but-unseen behind; then doubling,
    /// bounded by `max_prefetch`, `max_ack_pending` and by how many events the
    /// caller handles in a quarter of the ack wait (so prefetched events are
    /// not redelivered while they wait in the buffer).
    fn next_batch_size(&self) -> usize {
        // with max_deliver, a fetched event the caller never sees (the
        // subscription is closed or dropped first) loses one of its
        // deliveries: a backlog read through a few restarts would use up
        // its events' attempts, the spare included, unseen
        if self.handed_out < WARMUP || self.max_deliver.is_some() {
            return self.limits.batch(1);
        }
        let max = self
            .provider
            .inner
            .options
            .max_prefetch
            .min(self.max_ack_pending);
        let by_pace = if self.avg_gap.is_zero() {
            max
        } else {
            let budget = self.ack_wait.as_nanos() / 4;
            usize::try_from(budget / self.avg_gap.as_nanos().max(1)).unwrap_or(max)
        };
        self.limits.batch(
            (self.last_batch.saturating_mul(2))
                .min(max)
                .min(by_pace)
                .max(1),
        )
    }

    pub(super) fn note_call(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.last_call {
            let gap = now - last;
            // exponential moving average, weight 1/8
            self.avg_gap = if self.avg_gap.is_zero() {
                gap
            } else {
                (self.avg_gap * 7 + gap) / 8
            };
        }
        self.last_call = Some(now);
    }

    pub(super) async fn start_batch(&mut self) -> Result<Pull> {
        let size = self.next_batch_size();
        self.last_batch = size;
        let request = BatchConfig {
            batch: size,
            expires: Some(self.limits.expires(PULL_EXPIRES)),
            ..BatchConfig::default()
        };
        let pull = Pull::start(&self.provider, &self.consumer, &self.name, request).await?;
        self.pull_inbox = Some(pull.inbox());
        Ok(pull)
    }
}
