//! One trigger's delivery of one event: attempts, backoff, timeout,
//! dead-letter.

use super::cutoff::Cutoff;
use super::metrics::{Counters, TriggerCounters};
use crate::metadata;
use crate::sink::EventSink;
use crate::trigger::Trigger;
use event_core::{Error, Event, Result, now_millis};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The counters one delivery bumps: the broker's totals and its trigger's
/// own (held by the trigger's entry: no lookup).
#[derive(Clone, Copy)]
pub(crate) struct Tally<'a> {
    totals: &'a Counters,
    trigger: &'a TriggerCounters,
}

impl<'a> Tally<'a> {
    pub(crate) fn new(totals: &'a Counters, trigger: &'a TriggerCounters) -> Self {
        Self { totals, trigger }
    }
}

/// Counts one in `$field` of both the totals and the trigger's counters.
macro_rules! count {
    ($tally:expr, $field:ident) => {{
        Counters::add(&$tally.totals.$field, 1);
        $tally.trigger.$field.fetch_add(1, Ordering::Relaxed);
    }};
}

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered,
    /// Every attempt failed and the dead-letter sink took the event. Logged
    /// by the caller, which holds the trigger's rate limit.
    DeadLettered(DeadLetter),
    /// Every attempt failed and no dead-letter sink took the event. Not
    /// logged above `DEBUG` here: the caller knows whether the event is lost
    /// (the queue) or will come back (a feed), and logs it once.
    Failed(Failure),
}

/// Why a delivery was dead-lettered, for the caller's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    /// Attempts made.
    pub(crate) attempts: u64,
    /// The last attempt's error.
    pub(crate) error: String,
}

/// Why a delivery failed, for the caller's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Attempts made.
    pub(crate) attempts: u64,
    /// The last attempt's error.
    pub(crate) error: String,
    /// The dead-letter sink's refusal; `None`: the trigger has none.
    pub(crate) dead_letter_error: Option<String>,
}

async fn attempt(sink: &dyn EventSink, event: &Event, timeout: Option<Duration>) -> Result<()> {
    bounded(sink, sink.deliver(event), timeout).await
}

/// `work`, a delivery to `sink`, with `timeout` and a panic turned into an
/// error.
async fn bounded(
    sink: &dyn EventSink,
    work: impl std::future::Future<Output = Result<()>>,
    timeout: Option<Duration>,
) -> Result<()> {
    let call = AssertUnwindSafe(work).catch_unwind();
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => {
                return Err(Error::Timeout {
                    operation: format!("delivery to sink `{}`", sink.name()),
                    elapsed: limit,
                });
            }
        },
        None => call.await,
    };
    result.unwrap_or_else(|panic| {
        Err(Error::provider(
            format!("sink `{}`", sink.name()),
            format!("panicked: {}", crate::panic::message(&*panic)),
        ))
    })
}

/// What a failed attempt's error says about trying again.
struct Verdict {
    /// Whether another attempt may succeed.
    retry: bool,
    /// How long the sink asked to be left alone (HTTP `Retry-After`).
    retry_after: Option<Duration>,
}

/// Judges a failed attempt: an HTTP answer by its status, as Knative does
/// (see [`DeliverySpec`](crate::DeliverySpec)); a redirect the event was not
/// delivered through, and a reply lost after the endpoint accepted the
/// event, are not retried (the same redirect again; a second delivery);
/// any other error is retried, since user code may fail transiently with
/// any error.
fn judge(err: &Error) -> Verdict {
    #[cfg(feature = "http")]
    {
        use event_cloudevents::http::client::{redirect_error, reply_lost, status_error};
        if let Some(answer) = status_error(err) {
            return Verdict {
                retry: answer.is_retryable(),
                retry_after: answer.retry_after,
            };
        }
        if redirect_error(err).is_some() || reply_lost(err).is_some() {
            return Verdict {
                retry: false,
                retry_after: None,
            };
        }
    }
    let _ = err;
    Verdict {
        retry: true,
        retry_after: None,
    }
}

/// The event a dead-letter sink receives: the original with the failure in
/// metadata.
pub(crate) fn dead_letter_event(
    event: &Event,
    trigger: &str,
    reason: &str,
    attempts: u64,
    first_failure_at: u64,
) -> Event {
    let mut out = event.clone();
    let m = &mut out.metadata;
    m.insert(metadata::DLQ_REASON.to_owned(), reason.to_owned());
    m.insert(metadata::DLQ_ATTEMPTS.to_owned(), attempts.to_string());
    m.insert(metadata::DLQ_TRIGGER.to_owned(), trigger.to_owned());
    m.insert(
        metadata::DLQ_ORIGINAL_SUBJECT.to_owned(),
        event.subject.clone(),
    );
    m.insert(
        metadata::DLQ_FIRST_FAILURE_AT.to_owned(),
        first_failure_at.to_string(),
    );
    m.insert(
        metadata::DLQ_DEAD_LETTERED_AT.to_owned(),
        now_millis().to_string(),
    );
    out
}

/// Delivers `event` to `trigger`'s sink per its delivery spec. With a
/// `cutoff` (a queued routing), a retry whose wait would end after the
/// broker's shutdown deadline is not made: the delivery fails then, with
/// the attempts made so far (and goes to the dead-letter sink).
pub(crate) async fn deliver(
    trigger: &Trigger,
    event: &Event,
    tally: Tally<'_>,
    cutoff: Option<&Cutoff>,
) -> Outcome {
    // the totals' `matched` is counted per routing, by the caller
    tally.trigger.matched.fetch_add(1, Ordering::Relaxed);
    let spec = &trigger.delivery;
    let attempts = u64::from(spec.retries) + 1;
    let mut made = 0;
    let mut first_failure_at = None;
    let mut last_error = String::new();
    for n in 1..=attempts {
        made = n;
        match attempt(&*trigger.sink, event, spec.timeout).await {
            Ok(()) => {
                count!(tally, delivered);
                return Outcome::Delivered;
            }
            Err(err) => {
                if matches!(err, Error::Timeout { .. }) {
                    count!(tally, timeouts);
                }
                first_failure_at.get_or_insert_with(now_millis);
                let verdict = judge(&err);
                last_error = err.to_string();
                if !verdict.retry {
                    tracing::debug!(
                        trigger = %trigger.name, event_id = ?event.id, attempt = n, error = %err,
                        "delivery refused with an answer a retry cannot change: not retried"
                    );
                    break;
                }
                tracing::debug!(
                    trigger = %trigger.name, event_id = ?event.id, attempt = n, error = %err,
                    "delivery attempt failed"
                );
                if n < attempts {
                    let retry = u32::try_from(n).unwrap_or(u32::MAX);
                    let wait = spec.delay_honouring_retry_after(retry, verdict.retry_after);
                    let waited = match cutoff {
                        Some(cutoff) => cutoff.wait_for_retry(wait).await,
                        None => {
                            tokio::time::sleep(wait).await;
                            true
                        }
                    };
                    if !waited {
                        count!(tally, shutdown_retries_cut);
                        tracing::debug!(
                            trigger = %trigger.name, event_id = ?event.id, attempt = n, wait = ?wait,
                            "the next attempt would come after the broker's shutdown deadline: not retried"
                        );
                        last_error = format!(
                            "{last_error} (not retried: the next attempt, {wait:?} later, would \
                             come after the broker's shutdown deadline)"
                        );
                        break;
                    }
                    count!(tally, retries);
                }
            }
        }
    }
    count!(tally, failed);
    let first_failure_at = first_failure_at.unwrap_or_else(now_millis);
    let Some(dls) = &spec.dead_letter_sink else {
        count!(tally, dead_letter_failures);
        count!(tally, no_dead_letter_sink);
        return Outcome::Failed(Failure {
            attempts: made,
            error: last_error,
            dead_letter_error: None,
        });
    };
    let dead = dead_letter_event(event, &trigger.name, &last_error, made, first_failure_at);
    // a dead letter its sink's provider refuses as too large (an event
    // near the limit, a long error) is sent in a smaller form
    let fitting = crate::dlq::deliver_fitting(&**dls, dead, &last_error);
    match bounded(&**dls, fitting, spec.timeout).await {
        Ok(()) => {
            count!(tally, dead_lettered);
            Outcome::DeadLettered(DeadLetter {
                attempts: made,
                error: last_error,
            })
        }
        Err(err) => {
            count!(tally, dead_letter_failures);
            Outcome::Failed(Failure {
                attempts: made,
                error: last_error,
                dead_letter_error: Some(err.to_string()),
            })
        }
    }
}
