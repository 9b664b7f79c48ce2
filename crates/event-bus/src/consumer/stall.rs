//! Watching work that may run without a time limit (a handler with
//! [`ConsumerConfig::handler_timeout`](super::ConsumerConfig::handler_timeout)
//! `None`, a DLQ handler's call with no
//! [`dlq_timeout`](super::ConsumerConfig::dlq_timeout)), so that one that
//! hangs is seen: it is never cancelled for it, only logged and counted.

use crate::metrics::EventMetrics;
use event_core::deadline_after as after;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How long a consumer runner's handler run, or a DLQ handler's call, may
/// go on before it is reported as stalled: 60 s.
///
/// Only work whose time limit is above it (or that has none: a
/// [`ConsumerConfig::handler_timeout`](super::ConsumerConfig::handler_timeout)
/// or [`dlq_timeout`](super::ConsumerConfig::dlq_timeout) of `None`, or the
/// dead letter of an undecodable message, which is never abandoned) is
/// watched. Once such a run has gone on this long, the runner logs a `WARN`
/// naming the subscriber (when the consumer runs a managed subscriber), the
/// event id, subject, sequence, delivery count and how long it has run,
/// and counts it in the bus's `handler_stalls` metric
/// ([`MetricsSnapshot::handler_stalls`](crate::MetricsSnapshot::handler_stalls),
/// once per run); again at each doubling (120 s, 240 s, ...); and once
/// more when the run ends, saying after how long and with what outcome
/// (`ok`, `failed` with the error, or `aborted` when a shutdown deadline
/// abandoned it).
/// The work is not cancelled: with no limit set, it runs as long as it
/// takes.
pub const STALL_THRESHOLD: Duration = Duration::from_secs(60);

/// What a watched run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// A consumer runner's handler.
    Handler,
    /// A DLQ handler taking a dead letter.
    DeadLetter,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Self::Handler => "handler",
            Self::DeadLetter => "DLQ handler",
        }
    }
}

/// The delivery a watched run is about, named in its log lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct About<'a> {
    /// The managed subscriber the consumer runs, if any.
    pub(crate) subscriber: Option<&'a str>,
    pub(crate) event_id: &'a str,
    pub(crate) subject: &'a str,
    pub(crate) sequence: u64,
    /// The delivery count (a dead letter's delivery attempts).
    pub(crate) deliveries: u64,
}

/// One run watched for a stall: when its next warning is due, and whether
/// it has stalled.
#[derive(Debug)]
pub(crate) struct StallWatch<'a> {
    work: Work,
    about: About<'a>,
    /// The run's time limit (above the threshold), for the log.
    limit: Option<Duration>,
    started: Instant,
    /// `started` plus [`STALL_THRESHOLD`] doubled once per warning so far.
    next: Instant,
    stalled: bool,
    /// The end was logged (or there was nothing to log).
    ended: bool,
}

impl<'a> StallWatch<'a> {
    /// Whether work under `limit` can run past [`STALL_THRESHOLD`]: no
    /// limit, or one above it.
    pub(crate) fn applies(limit: Option<Duration>) -> bool {
        limit.is_none_or(|limit| limit > STALL_THRESHOLD)
    }

    /// A watch over `work` starting now under `limit`; `None` (nothing to
    /// watch, and no clock read) when the limit ends it by the threshold.
    pub(crate) fn start(work: Work, limit: Option<Duration>, about: About<'a>) -> Option<Self> {
        if !Self::applies(limit) {
            return None;
        }
        let started = Instant::now();
        Some(Self {
            work,
            about,
            limit,
            started,
            next: after(started, STALL_THRESHOLD),
            stalled: false,
            ended: false,
        })
    }

    /// When the next warning is due.
    pub(crate) fn next_warning(&self) -> Instant {
        self.next
    }

    /// Warns when a warning is due at `now` (one line, however many
    /// doublings a late wake-up passed), and counts the run in
    /// `handler_stalls` the first time.
    pub(crate) fn check(&mut self, now: Instant, metrics: &EventMetrics) {
        if now < self.next {
            return;
        }
        if !self.stalled {
            self.stalled = true;
            metrics.add_handler_stall(1);
        }
        while self.next <= now {
            let since = self.next.saturating_duration_since(self.started);
            let doubled = since.checked_mul(2).unwrap_or(event_core::LONGEST_WAIT);
            let next = after(self.started, doubled);
            if next <= self.next {
                // saturated: no later warning
                self.next = after(now, event_core::LONGEST_WAIT);
                break;
            }
            self.next = next;
        }
        let about = &self.about;
        let running_for = now.saturating_duration_since(self.started);
        tracing::warn!(
            subscriber = about.subscriber,
            event_id = ?about.event_id,
            subject = ?about.subject,
            sequence = about.sequence,
            deliveries = about.deliveries,
            running_for = ?running_for,
            time_limit = ?self.limit,
            next_warning_after = ?self.next.saturating_duration_since(self.started),
            "{} still running after {running_for:?}: stalled? (not cancelled: it has no time \
             limit, or a longer one)",
            self.work.name(),
        );
    }

    /// The run ended at `now` with `outcome`: one `WARN` if it had stalled
    /// (nothing otherwise). A watch dropped before this (the run was
    /// aborted: a shutdown deadline) logs its end as `aborted`.
    pub(crate) fn ended<E: Display>(&mut self, now: Instant, outcome: &Result<(), E>) {
        self.ended = true;
        if self.stalled {
            match outcome {
                Ok(()) => self.log_end(now, "ok", None),
                Err(err) => self.log_end(now, "failed", Some(err)),
            }
        }
    }

    fn log_end(&self, now: Instant, outcome: &'static str, error: Option<&dyn Display>) {
        let about = &self.about;
        let ran_for = now.saturating_duration_since(self.started);
        tracing::warn!(
            subscriber = about.subscriber,
            event_id = ?about.event_id,
            subject = ?about.subject,
            sequence = about.sequence,
            deliveries = about.deliveries,
            ran_for = ?ran_for,
            outcome,
            error = error.map(tracing::field::display),
            "stalled {} ended after {ran_for:?}: {outcome}",
            self.work.name(),
        );
    }
}

impl Drop for StallWatch<'_> {
    /// A stalled run dropped before it ended was aborted (a shutdown
    /// deadline passed, or its task was cancelled): its end line says so.
    fn drop(&mut self) {
        if self.stalled && !self.ended {
            self.log_end(Instant::now(), "aborted", None);
        }
    }
}

/// Runs `work` under `watch` with a timer of its own (for work outside a
/// loop that already wakes periodically, such as a single DLQ call).
pub(crate) async fn watched<E: Display>(
    mut watch: StallWatch<'_>,
    metrics: &EventMetrics,
    work: impl Future<Output = Result<(), E>>,
) -> Result<(), E> {
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            () = tokio::time::sleep_until(watch.next_warning()) => {
                watch.check(Instant::now(), metrics);
            }
        }
    };
    watch.ended(Instant::now(), &outcome);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about() -> About<'static> {
        About {
            subscriber: Some("s"),
            event_id: "evt-1",
            subject: "events.a.b",
            sequence: 1,
            deliveries: 1,
        }
    }

    #[test]
    fn only_work_that_can_outlast_the_threshold_is_watched() {
        assert!(StallWatch::applies(None));
        assert!(StallWatch::applies(Some(
            STALL_THRESHOLD + Duration::from_millis(1)
        )));
        assert!(!StallWatch::applies(Some(STALL_THRESHOLD)));
        assert!(!StallWatch::applies(Some(Duration::from_secs(30))));
    }

    /// Warnings at 60, 120, 240 s; a wake-up that passed several doublings
    /// warns once and is due at the next doubling after it; the run counts
    /// once.
    #[tokio::test(start_paused = true)]
    async fn warnings_come_at_each_doubling_and_the_run_counts_once() {
        let metrics = EventMetrics::new();
        let mut watch = StallWatch::start(Work::Handler, None, about()).unwrap();
        let start = watch.started;
        let secs = |s| start + Duration::from_secs(s);
        assert_eq!(watch.next_warning(), secs(60));
        watch.check(secs(59), &metrics);
        assert!(!watch.stalled);
        watch.check(secs(60), &metrics);
        assert!(watch.stalled);
        assert_eq!(watch.next_warning(), secs(120));
        watch.check(secs(120), &metrics);
        assert_eq!(watch.next_warning(), secs(240));
        watch.check(secs(1_000), &metrics);
        assert_eq!(watch.next_warning(), secs(1_920));
        assert_eq!(metrics.snapshot().handler_stalls, 1);
        // far past many doublings: no overflow, no panic, still later
        let far = after(start, Duration::from_secs(1 << 40));
        watch.check(far, &metrics);
        assert!(watch.next_warning() > far);
        assert_eq!(metrics.snapshot().handler_stalls, 1);
    }
}
