//! Broker counters.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// A value alone on its cache line (no false sharing with its neighbours).
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// A counter alone on its cache line: publishers bump `enqueued` while
/// routing tasks on other threads bump `routed`, `delivered`, ...; sharing a
/// line would make every publish pull it from the router's core.
pub(crate) type Counter = Padded<AtomicU64>;

macro_rules! counters {
    ($($field:ident => $doc:literal),* $(,)?) => {
        /// Lock-free counters updated on the routing path.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $field: Counter,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self, queue_depth: usize, in_flight: usize, triggers: usize) -> BrokerMetrics {
                BrokerMetrics {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                    queue_depth,
                    in_flight,
                    triggers,
                }
            }
        }

        /// A snapshot of a broker's counters ([`Broker::metrics`](crate::Broker::metrics)).
        ///
        /// A counter missing from the JSON reads as zero, so snapshots
        /// written by a version with fewer counters still read.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        #[non_exhaustive]
        pub struct BrokerMetrics {
            $(#[doc = $doc] pub $field: u64,)*
            /// Events waiting in the queue now.
            pub queue_depth: usize,
            /// Events accepted and not settled yet: queued, being routed (from
            /// the queue or a [feed](crate::Broker::feed)), or waiting for room
            /// in a full queue (a waiting publisher's, a deferred forward).
            /// [`Broker::wait_idle`](crate::Broker::wait_idle) waits for zero.
            pub in_flight: usize,
            /// Triggers registered now.
            pub triggers: usize,
        }

        impl BrokerMetrics {
            /// Every counter: name, documentation, value.
            #[cfg_attr(not(feature = "bus"), allow(dead_code))]
            fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($field), $doc, self.$field),)*]
            }
        }
    };
}

counters! {
    routed => "Events routed (by `route`, the queue or a feed).",
    matched => "Trigger matches (one event matching three triggers counts three).",
    delivered => "Deliveries that succeeded.",
    retries => "Retry attempts made after a failed attempt.",
    timeouts => "Delivery attempts that timed out: cancelled by the per-attempt timeout, or failed with the sink's own `Error::Timeout` (an HTTP sink's request timeout, say). Attempts of dead-letter sinks are not counted.",
    failed => "Deliveries that failed (dead-lettered or not): every attempt failed, or an answer a retry cannot change (an HTTP `400`, say) ended them early.",
    dead_lettered => "Failed deliveries handed to the trigger's dead-letter sink. Logged at `WARN` once per trigger and [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) (with how many were logged at `DEBUG` since), so count them here.",
    dead_letter_failures => "Failed deliveries the dead-letter sink also refused, or that had none: lost unless the source redelivers (a durable feed does).",
    no_dead_letter_sink => "Failed deliveries of triggers without a dead-letter sink (a part of `dead_letter_failures`). Logged at `WARN` once per trigger and [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) (with how many were logged at `DEBUG` since), so count them here.",
    enqueued => "Events accepted into the queue.",
    queue_full => "Times the queue was full when an event arrived (the publisher waited or was refused).",
    hop_limit => "Events not routed because topic sinks had forwarded them, or brokers delivered them into brokers, `max_hops` times (a routing loop).",
    deferred => "Events a routing worker's own sink published into a full queue (policy `Wait`): they wait for room in a task of their own, so the worker never waits for the queue only workers drain.",
    rejected => "Events refused because the queue was full (policy `Reject`, or `WaitFor` timed out).",
    shutdown_unrouted => "Queued events discarded without being routed: still queued at the deadline of [`Broker::shutdown_within`](crate::Broker::shutdown_within) (forwards waiting for room in a full queue included), or when the Tokio runtime the queue's dispatcher ran on was dropped. Lost to their triggers (the provider still stores them).",
    shutdown_aborted => "Queued events whose routing was cancelled before it ended: in progress at the deadline of [`Broker::shutdown_within`](crate::Broker::shutdown_within), or when their Tokio runtime was dropped. Some of their deliveries may have reached their sinks, others not; none was dead-lettered.",
    shutdown_retries_cut => "Deliveries of queued events not retried because the retry's wait (backoff, or an HTTP `Retry-After` up to `retry_after_max`) would have ended after the deadline of [`Broker::shutdown_within`](crate::Broker::shutdown_within): they failed then (counted in `failed`) and went to the trigger's dead-letter sink, if it has one.",
}

#[cfg(feature = "bus")]
impl BrokerMetrics {
    /// Renders the snapshot in the Prometheus text exposition format
    /// (0.0.4), as [`MetricsSnapshot::to_prometheus`](event_bus::MetricsSnapshot::to_prometheus)
    /// does the bus's: each counter as `a3s_broker_<counter>_total`, and
    /// the gauges `a3s_broker_queue_depth`, `a3s_broker_in_flight` and
    /// `a3s_broker_triggers`.
    ///
    /// ```
    /// use event_routing::Broker;
    ///
    /// let broker = Broker::new();
    /// let text = broker.metrics().to_prometheus();
    /// assert!(text.contains("a3s_broker_routed_total 0"));
    /// assert!(text.contains("a3s_broker_queue_depth 0"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        self.to_prometheus_with_labels(&event_bus::metrics::PrometheusLabels::default())
    }

    /// [`to_prometheus`](Self::to_prometheus) with `labels` on every
    /// sample (say `broker="main"`, to tell brokers apart).
    pub fn to_prometheus_with_labels(
        &self,
        labels: &event_bus::metrics::PrometheusLabels,
    ) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(2048);
        let gauges = [
            (
                "queue_depth",
                "Events waiting in the broker's queue.",
                self.queue_depth,
            ),
            (
                "in_flight",
                "Events accepted and not settled yet (queued, being routed, or waiting for room).",
                self.in_flight,
            ),
            ("triggers", "Triggers registered.", self.triggers),
        ];
        let counters = self.counters();
        let families = counters
            .iter()
            .map(|&(name, doc, value)| (format!("a3s_broker_{name}_total"), doc, "counter", value))
            .chain(gauges.iter().map(|&(name, help, value)| {
                (format!("a3s_broker_{name}"), help, "gauge", value as u64)
            }));
        for (metric, doc, kind, value) in families {
            // writing to a String cannot fail
            let _ = writeln!(out, "# HELP {metric} {}", help_text(doc));
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            let _ = writeln!(out, "{} {value}", labels.series(&metric, None));
        }
        out
    }
}

/// A counter's documentation as a HELP text: its first sentence, with
/// Markdown link targets and code marks taken out, on one line.
#[cfg(feature = "bus")]
fn help_text(doc: &str) -> String {
    let mut text = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(open) = rest.find("](") {
        text.push_str(&rest[..open]);
        rest = rest[open + 2..]
            .split_once(')')
            .map_or("", |(_, after)| after);
    }
    text.push_str(rest);
    let text: String = text
        .chars()
        .filter(|c| !matches!(c, '[' | ']' | '`'))
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    // HELP escapes backslashes (and newlines, gone above)
    text.replace('\\', "\\\\")
}

impl Counters {
    pub(crate) fn add(counter: &Counter, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(all(test, feature = "bus"))]
#[path = "../../../event-bus/src/metrics/exposition_check.rs"]
mod exposition_check;

#[cfg(test)]
mod tests {
    use super::BrokerMetrics;

    /// The exposition is valid, has every counter and gauge with its value
    /// and HELP text without Markdown, and takes constant labels.
    #[cfg(feature = "bus")]
    #[test]
    fn prometheus_exposition_is_valid_with_and_without_labels() {
        use super::exposition_check::parse_exposition;
        use event_bus::metrics::PrometheusLabels;
        let metrics = BrokerMetrics {
            routed: 7,
            no_dead_letter_sink: 2,
            queue_depth: 3,
            triggers: 5,
            ..BrokerMetrics::default()
        };
        let text = metrics.to_prometheus();
        let samples = parse_exposition(&text);
        assert_eq!(samples["a3s_broker_routed_total"], 7.0);
        assert_eq!(samples["a3s_broker_no_dead_letter_sink_total"], 2.0);
        assert_eq!(samples["a3s_broker_queue_depth"], 3.0);
        assert_eq!(samples["a3s_broker_triggers"], 5.0);
        assert_eq!(samples["a3s_broker_in_flight"], 0.0);
        assert_eq!(samples.len(), metrics.counters().len() + 3);
        for line in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(
                !line.contains('`') && !line.contains("](") && !line.contains('['),
                "{line}"
            );
        }
        assert!(text.contains(
            "# HELP a3s_broker_no_dead_letter_sink_total Failed deliveries of triggers without a dead-letter sink"
        ));
        let labels = PrometheusLabels::new([("broker", "main")]).unwrap();
        let labelled = parse_exposition(&metrics.to_prometheus_with_labels(&labels));
        assert_eq!(labelled[r#"a3s_broker_routed_total{broker="main"}"#], 7.0);
        assert_eq!(labelled.len(), samples.len());
    }

    #[test]
    fn a_snapshot_written_before_a_counter_existed_still_reads() {
        // as written before `noDeadLetterSink` was added
        let old = r#"{"routed":3,"matched":2,"delivered":2,"retries":0,"timeouts":0,
            "failed":1,"deadLettered":0,"deadLetterFailures":1,"enqueued":3,
            "queueFull":0,"hopLimit":0,"deferred":0,"rejected":0,
            "queueDepth":0,"inFlight":0,"triggers":1}"#;
        let read: BrokerMetrics = serde_json::from_str(old).unwrap();
        assert_eq!(read.routed, 3);
        assert_eq!(read.dead_letter_failures, 1);
        assert_eq!(read.no_dead_letter_sink, 0);
    }
}
