use super::EventSource;
use super::lifecycle::Lifecycle;
use super::schedule::Schedule;
use crate::sink::EventSink;
use async_trait::async_trait;
use event_core::{Event, Result, subject};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One measurement an application exposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSample {
    /// Metric name (`http_requests_in_flight`).
    pub name: String,
    /// Current value. JSON has no NaN or infinities: those are written as
    /// the strings `"NaN"`, `"+Inf"` and `"-Inf"` (as Prometheus writes
    /// them) and read back; a `null` reads as NaN.
    #[serde(with = "sample_value")]
    pub value: f64,
    /// Labels (`{"route": "/orders"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl MetricSample {
    /// A sample without labels.
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
            labels: BTreeMap::new(),
        }
    }

    /// Adds a label.
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// [`MetricSample::value`] in JSON: a number when finite, else `"NaN"`,
/// `"+Inf"` or `"-Inf"` (serde_json would write `null`, which no `f64`
/// reads back).
mod sample_value {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if value.is_infinite() {
            serializer.serialize_str(if *value > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            serializer.serialize_f64(*value)
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
        Null(()),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        match Repr::deserialize(deserializer)? {
            Repr::Number(n) => Ok(n),
            Repr::Null(()) => Ok(f64::NAN),
            Repr::Text(text) => match text.as_str() {
                "NaN" => Ok(f64::NAN),
                "+Inf" | "Inf" => Ok(f64::INFINITY),
                "-Inf" => Ok(f64::NEG_INFINITY),
                other => Err(D::Error::custom(format!(
                    "expected a number, \"NaN\", \"+Inf\" or \"-Inf\", got {other:?}"
                ))),
            },
        }
    }
}

/// Application metrics to turn into events (for example the input of an
/// autoscaler). Implement it; [`MetricsPoller`] polls it on a schedule.
#[async_trait]
pub trait MetricsSource: Send + Sync {
    /// A name for logs; also the `source` of the emitted events.
    fn name(&self) -> &str;

    /// The current samples.
    async fn collect(&self) -> Result<Vec<MetricSample>>;
}

/// An [`EventSource`] that polls a [`MetricsSource`] on a [`Schedule`] and
/// emits one event per poll: type [`MetricsPoller::EVENT_TYPE`], payload
/// `{"samples": [...]}`, on the configured subject. A failed (or panicking)
/// `collect` or delivery is logged; polling goes on.
pub struct MetricsPoller {
    source: Arc<dyn MetricsSource>,
    schedule: Schedule,
    subject: String,
    /// Tokens of the provider's prefix: the category is the subject's
    /// token after them.
    prefix_tokens: usize,
    lifecycle: Lifecycle,
}

impl std::fmt::Debug for MetricsPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsPoller")
            .field("source", &self.source.name())
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl MetricsPoller {
    /// Event type of the emitted events.
    pub const EVENT_TYPE: &'static str = "a3s.metrics.samples";

    /// Polls `source` on `schedule`, emitting on `subject`
    /// (`{prefix}.{category}.{topic}`; [`Error::InvalidSubject`](event_core::Error::InvalidSubject)
    /// when it has wildcards or fewer than two tokens). The events'
    /// category is the subject's second token: the poller takes the
    /// provider's prefix to be one token unless told otherwise with
    /// [`with_provider_prefix`](Self::with_provider_prefix).
    pub fn new(
        source: Arc<dyn MetricsSource>,
        schedule: Schedule,
        subject: impl Into<String>,
    ) -> Result<Self> {
        let subject = subject.into();
        subject::validate_subject(&subject)?;
        if !subject.contains('.') {
            return Err(event_core::Error::invalid_subject(
                subject,
                "needs at least a prefix and a category token",
            ));
        }
        Ok(Self {
            source,
            schedule,
            subject,
            prefix_tokens: 1,
            lifecycle: Lifecycle::default(),
        })
    }

    /// Tells the poller the subject prefix of the provider its events go
    /// to, for a prefix of more than one token: the category of its events
    /// is then the subject's token after the prefix (`metrics` in
    /// `acme.events.metrics.gauges` under `acme.events`); without it the
    /// poller takes the prefix to be one token (the category would be
    /// `events`). [`Error::InvalidSubject`](event_core::Error::InvalidSubject)
    /// when the subject is not `{prefix}.{category}.{topic}`.
    ///
    /// ```
    /// # use event_routing::{MetricSample, MetricsPoller, MetricsSource, Schedule};
    /// # use std::{sync::Arc, time::Duration};
    /// # struct Gauges;
    /// # #[async_trait::async_trait]
    /// # impl MetricsSource for Gauges {
    /// #     fn name(&self) -> &str { "gauges" }
    /// #     async fn collect(&self) -> event_core::Result<Vec<MetricSample>> { Ok(vec![]) }
    /// # }
    /// let every = Schedule::every(Duration::from_secs(15))?;
    /// let poller = MetricsPoller::new(Arc::new(Gauges), every, "acme.events.metrics.gauges")?
    ///     .with_provider_prefix("acme.events")?;
    /// assert_eq!(poller.event(&[]).category, "metrics");
    /// # Ok::<(), event_core::Error>(())
    /// ```
    pub fn with_provider_prefix(mut self, prefix: &str) -> Result<Self> {
        subject::validate_subject(prefix)?;
        subject::validate_publish_subject(&self.subject, prefix)?;
        self.prefix_tokens = prefix.split('.').count();
        Ok(self)
    }

    /// The event for `samples`.
    pub fn event(&self, samples: &[MetricSample]) -> Event {
        let category = self
            .subject
            .split('.')
            .nth(self.prefix_tokens)
            .unwrap_or_default();
        Event::typed(
            self.subject.clone(),
            category,
            Self::EVENT_TYPE,
            1,
            format!("{} samples from {}", samples.len(), self.source.name()),
            self.source.name(),
            serde_json::json!({ "samples": samples }),
        )
    }
}

#[async_trait]
impl EventSource for MetricsPoller {
    fn name(&self) -> &str {
        self.source.name()
    }

    async fn start(&self, sink: Arc<dyn EventSink>) -> Result<()> {
        let schedule = self.schedule.clone();
        let source = self.source.clone();
        let template = MetricsPoller {
            source: self.source.clone(),
            schedule: self.schedule.clone(),
            subject: self.subject.clone(),
            prefix_tokens: self.prefix_tokens,
            lifecycle: Lifecycle::default(),
        };
        self.lifecycle.start(self.source.name(), move |stop| async move {
            schedule
                .run(stop, |_| {
                    let (source, sink, template) = (source.clone(), sink.clone(), &template);
                    async move {
                        // A panicking metrics source or sink fails this poll
                        // only; polling goes on.
                        let polled = crate::panic::caught(|| async {
                            let samples = match source.collect().await {
                                Ok(s) => s,
                                Err(err) => {
                                    tracing::warn!(source = %source.name(), error = %err, "metrics source: collect failed");
                                    return;
                                }
                            };
                            if let Err(err) = sink.deliver(&template.event(&samples)).await {
                                tracing::warn!(source = %source.name(), error = %err, "metrics source: delivery failed");
                            }
                        })
                        .await;
                        if let Err(panic) = polled {
                            tracing::error!(source = %source.name(), panic = %panic, "metrics source: collect or the sink panicked");
                        }
                    }
                })
                .await;
        })
    }

    async fn stop(&self) -> Result<()> {
        self.lifecycle.stop(self.source.name()).await
    }

    fn is_running(&self) -> bool {
        self.lifecycle.is_running()
    }
}
