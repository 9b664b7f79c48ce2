//! Triggers and their delivery specs.

use crate::filter::TriggerFilter;
use crate::sink::EventSink;
use event_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How the delay between delivery attempts grows (Knative's `backoffPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// Retry `n` waits `delay × n`.
    Linear,
    /// Retry `n` waits `delay × 2^(n-1)`.
    #[default]
    Exponential,
}

/// Per-trigger delivery guarantees, as Knative's `delivery` spec: retries,
/// backoff, per-attempt timeout and a dead-letter sink.
///
/// A delivery makes up to `1 + retries` attempts. Before retry `n` (1-based)
/// it waits per [`BackoffPolicy`] from `backoff_delay`, at most
/// `backoff_cap`. Each attempt is cancelled after `timeout` (a timeout is a
/// failed attempt). When every attempt failed, the event goes to the
/// dead-letter sink, if any, with the reason, the attempts and the trigger
/// name in metadata (see [`metadata`](crate::metadata)).
///
/// Failures are retried whatever they are, but for HTTP answers (feature
/// `http`): an error carrying an `HttpStatusError` (what `HttpSink`, or an
/// [`InProcessSink`](crate::InProcessSink) calling `event-cloudevents`'
/// HTTP client, returns for a non-2xx answer) is judged by its status as
/// Knative does. `404`, `408`, `409`, `429` and `5xx` are retried; any
/// other status (a `400` for an unparsable event, a `403`, a `410` ...)
/// cannot succeed by sending the same event again, so the delivery ends at
/// once and the event goes to the dead-letter sink, its `dlqattempts` the
/// attempts made and its `dlqreason` naming the status. Nor is a redirect
/// the event was not delivered through (a `RedirectError`) or a reply lost
/// after the endpoint accepted the event (a `ReplyLost`: sending it again
/// would deliver it twice). Errors of other sinks (a handler, a topic) are
/// always retried: user code may fail transiently with any error.
///
/// A `429` or `503` answer's `Retry-After` (seconds or an HTTP date) sets
/// the wait before the next retry, as Knative's `retryAfterMax` does: the
/// longer of the backoff and the asked delay, the latter capped at
/// `retry_after_max` (zero ignores the header). See
/// [`delay_honouring_retry_after`](Self::delay_honouring_retry_after).
///
/// Defaults: no retries, exponential backoff from 100 ms capped at 30 s,
/// `Retry-After` honoured up to 30 s, a 30 s timeout, no dead-letter sink.
///
/// As Knative's `delivery` (`retry`, `backoffPolicy`, `backoffDelay`,
/// `timeout`, `retryAfterMax`, `deadLetterSink`; `backoff_cap` is its
/// `backoffMax`), but: the first retry waits `backoff_delay` under either
/// policy (Knative's docs write `backoffDelay × n` and
/// `backoffDelay × 2^n`); `Retry-After` is honoured by default and always
/// bounded (30 s unless set), where Knative's alpha `delivery-retryafter`
/// feature honours it only once `retryAfterMax` is set (its planned
/// default: honoured without a bound); the dead-letter sink is tried once,
/// within `timeout`, and gets the failure as `dlq*` metadata (see
/// [`metadata`](crate::metadata)), not as Knative's `knativeerror*`
/// extensions.
///
/// ```
/// use event_routing::{BackoffPolicy, DeliverySpec};
/// use std::time::Duration;
///
/// let spec = DeliverySpec::new()
///     .with_retries(3)
///     .with_backoff(BackoffPolicy::Exponential, Duration::from_millis(100))
///     .with_backoff_cap(Duration::from_millis(250));
/// assert_eq!(spec.delay_before_retry(1), Duration::from_millis(100));
/// assert_eq!(spec.delay_before_retry(2), Duration::from_millis(200));
/// assert_eq!(spec.delay_before_retry(3), Duration::from_millis(250));
/// ```
#[derive(Clone)]
pub struct DeliverySpec {
    /// Attempts after the first one.
    pub retries: u32,
    /// How the delay grows.
    pub backoff_policy: BackoffPolicy,
    /// The base delay.
    pub backoff_delay: Duration,
    /// The longest delay between two attempts.
    pub backoff_cap: Duration,
    /// The longest wait a `Retry-After` answer (HTTP `429` or `503`) can
    /// impose before the next retry (Knative's `retryAfterMax`); zero
    /// ignores the header. Bounds a delay the endpoint chooses.
    pub retry_after_max: Duration,
    /// Per-attempt timeout; `None` waits as long as the sink takes.
    pub timeout: Option<Duration>,
    /// Receives events whose every attempt failed.
    pub dead_letter_sink: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for DeliverySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliverySpec")
            .field("retries", &self.retries)
            .field("backoff_policy", &self.backoff_policy)
            .field("backoff_delay", &self.backoff_delay)
            .field("backoff_cap", &self.backoff_cap)
            .field("retry_after_max", &self.retry_after_max)
            .field("timeout", &self.timeout)
            .field(
                "dead_letter_sink",
                &self.dead_letter_sink.as_ref().map(|s| s.name().to_owned()),
            )
            .finish()
    }
}

impl Default for DeliverySpec {
    fn default() -> Self {
        Self {
            retries: 0,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(30),
            timeout: Some(Duration::from_secs(30)),
            dead_letter_sink: None,
        }
    }
}

impl DeliverySpec {
    /// The default spec.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the number of retries after the first attempt.
    #[must_use]
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the backoff policy and base delay.
    #[must_use]
    pub fn with_backoff(mut self, policy: BackoffPolicy, delay: Duration) -> Self {
        self.backoff_policy = policy;
        self.backoff_delay = delay;
        self
    }

    /// Sets the longest delay between attempts.
    #[must_use]
    pub fn with_backoff_cap(mut self, cap: Duration) -> Self {
        self.backoff_cap = cap;
        self
    }

    /// Sets the longest wait a `Retry-After` answer can impose
    /// (`Duration::ZERO`: ignore the header).
    #[must_use]
    pub fn with_retry_after_max(mut self, max: Duration) -> Self {
        self.retry_after_max = max;
        self
    }

    /// Sets the per-attempt timeout (`None`: no timeout).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the dead-letter sink. A dead letter its sink's provider
    /// refuses as too large ([`Error::PayloadTooLarge`](event_core::Error::PayloadTooLarge),
    /// or an HTTP endpoint's `413` or `431`: an event near the limit, a long error)
    /// is sent in a smaller form, as
    /// a [`SinkDlqHandler`](crate::SinkDlqHandler) forwards one: the reason
    /// cut to 4,096 characters, else without the event's payload and own
    /// metadata, marked [`DLQ_PAYLOAD_DROPPED`](crate::metadata::DLQ_PAYLOAD_DROPPED).
    #[must_use]
    pub fn with_dead_letter_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.dead_letter_sink = Some(sink);
        self
    }

    /// The wait before retry `retry` (1-based).
    pub fn delay_before_retry(&self, retry: u32) -> Duration {
        let retry = retry.max(1);
        let delay = match self.backoff_policy {
            BackoffPolicy::Linear => self.backoff_delay.saturating_mul(retry),
            BackoffPolicy::Exponential => {
                let factor = 2u32.checked_pow(retry - 1).unwrap_or(u32::MAX);
                self.backoff_delay.saturating_mul(factor)
            }
        };
        delay.min(self.backoff_cap)
    }

    /// The wait before retry `retry` (1-based) after an answer that asked
    /// for `retry_after` (an HTTP `Retry-After`): the longer of the backoff
    /// ([`delay_before_retry`](Self::delay_before_retry)) and `retry_after`
    /// capped at `retry_after_max`, as Knative does. The header never
    /// shortens the backoff, and never makes a wait longer than both
    /// `backoff_cap` and `retry_after_max`.
    ///
    /// ```
    /// use event_routing::{BackoffPolicy, DeliverySpec};
    /// use std::time::Duration;
    ///
    /// let spec = DeliverySpec::new()
    ///     .with_backoff(BackoffPolicy::Linear, Duration::from_secs(1))
    ///     .with_retry_after_max(Duration::from_secs(60));
    /// let secs = Duration::from_secs;
    /// assert_eq!(spec.delay_honouring_retry_after(1, Some(secs(20))), secs(20));
    /// assert_eq!(spec.delay_honouring_retry_after(1, Some(secs(86_400))), secs(60));
    /// assert_eq!(spec.delay_honouring_retry_after(2, Some(secs(0))), secs(2));
    /// assert_eq!(spec.delay_honouring_retry_after(2, None), secs(2));
    /// ```
    pub fn delay_honouring_retry_after(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
    ) -> Duration {
        let asked = retry_after.map_or(Duration::ZERO, |d| d.min(self.retry_after_max));
        self.delay_before_retry(retry).max(asked)
    }

    /// Checks the spec: a zero timeout is [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_config(
                "delivery.timeout",
                "must be greater than zero (use None for no timeout)",
            ));
        }
        Ok(())
    }
}

/// A named subscription of a sink to the events a filter selects.
///
/// ```
/// use event_routing::{CollectorSink, DeliverySpec, Trigger, TriggerFilter};
/// use std::sync::Arc;
///
/// let trigger = Trigger::new(
///     "orders-to-audit",
///     TriggerFilter::by_subject("events.orders.>"),
///     Arc::new(CollectorSink::new("audit")),
/// )
/// .with_delivery(DeliverySpec::new().with_retries(3));
/// assert_eq!(trigger.delivery.retries, 3);
/// ```
#[derive(Clone)]
pub struct Trigger {
    /// Unique name within a broker.
    pub name: String,
    /// Which events it receives.
    pub filter: TriggerFilter,
    /// Where they go.
    pub sink: Arc<dyn EventSink>,
    /// Retries, backoff, timeout and dead-letter sink.
    pub delivery: DeliverySpec,
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trigger")
            .field("name", &self.name)
            .field("filter", &self.filter)
            .field("sink", &self.sink.name())
            .field("delivery", &self.delivery)
            .finish()
    }
}

impl Trigger {
    /// A trigger with the default [`DeliverySpec`].
    pub fn new(name: impl Into<String>, filter: TriggerFilter, sink: Arc<dyn EventSink>) -> Self {
        Self {
            name: name.into(),
            filter,
            sink,
            delivery: DeliverySpec::default(),
        }
    }

    /// Sets the delivery spec.
    #[must_use]
    pub fn with_delivery(mut self, delivery: DeliverySpec) -> Self {
        self.delivery = delivery;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_backoff_grows_by_the_base_and_caps() {
        let spec = DeliverySpec::new()
            .with_backoff(BackoffPolicy::Linear, Duration::from_millis(10))
            .with_backoff_cap(Duration::from_millis(35));
        let delays: Vec<_> = (1..=5).map(|n| spec.delay_before_retry(n)).collect();
        assert_eq!(
            delays,
            [10, 20, 30, 35, 35].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn exponential_backoff_doubles_and_never_overflows() {
        let spec = DeliverySpec::new()
            .with_backoff(BackoffPolicy::Exponential, Duration::from_millis(10))
            .with_backoff_cap(Duration::from_secs(3600));
        assert_eq!(spec.delay_before_retry(1), Duration::from_millis(10));
        assert_eq!(spec.delay_before_retry(4), Duration::from_millis(80));
        assert_eq!(spec.delay_before_retry(200), Duration::from_secs(3600));
    }

    #[test]
    fn retry_after_is_capped_and_zero_ignores_it() {
        let spec = DeliverySpec::new()
            .with_backoff(BackoffPolicy::Exponential, Duration::from_millis(100))
            .with_backoff_cap(Duration::from_secs(1))
            .with_retry_after_max(Duration::from_secs(5));
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            spec.delay_honouring_retry_after(1, hour),
            Duration::from_secs(5)
        );
        assert_eq!(
            spec.delay_honouring_retry_after(1, Some(Duration::from_millis(250))),
            Duration::from_millis(250)
        );
        // Past the backoff cap, within `retry_after_max`.
        assert_eq!(
            spec.delay_honouring_retry_after(9, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            spec.delay_honouring_retry_after(9, None),
            Duration::from_secs(1)
        );
        // Defaults: honoured up to 30 s.
        assert_eq!(
            DeliverySpec::new().delay_honouring_retry_after(1, hour),
            Duration::from_secs(30)
        );
        let ignoring = spec.with_retry_after_max(Duration::ZERO);
        assert_eq!(
            ignoring.delay_honouring_retry_after(1, hour),
            Duration::from_millis(100)
        );
        assert_eq!(
            ignoring.delay_honouring_retry_after(1, Some(Duration::MAX)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let err = DeliverySpec::new()
            .with_timeout(Some(Duration::ZERO))
            .validate()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }));
    }
}
