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
            pub(crate) fn snapshot(
                &self,
                queue_depth: usize,
                in_flight: usize,
                by_trigger: Vec<TriggerMetrics>,
            ) -> BrokerMetrics {
                BrokerMetrics {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                    queue_depth,
                    in_flight,
                    triggers: by_trigger.len(),
                    by_trigger,
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
            /// The counters of each trigger registered now, in the order
            /// they were added: which trigger's sink fails. A trigger's
            /// counters go when it is removed (the totals above keep its
            /// counts); one added again under the same name counts from
            /// zero.
            pub by_trigger: Vec<TriggerMetrics>,
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
    dead_letter_failures => "Failed deliveries the dead-letter sink also refused, or that had none: lost unless the source redelivers (a durable feed does, up to its max_deliver).",
    no_dead_letter_sink => "Failed deliveries of triggers without a dead-letter sink (a part of `dead_letter_failures`). Logged at `WARN` once per trigger and [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) (with how many were logged at `DEBUG` since), so count them here.",
    enqueued => "Events accepted into the queue.",
    queue_full => "Times the queue was full when an event arrived (the publisher waited or was refused).",
    hop_limit => "Events not routed because topic or HTTP sinks had forwarded them, or brokers delivered them into brokers, `max_hops` times (a routing loop).",
    deferred => "Events a routing's sink published into a full queue (policy `Wait`) that its worker could not wait on without closing a cycle: this broker's own queue, or a broker whose routings wait (directly or through other brokers) for room in the worker's broker's queue. They wait for room in a task of their own, so no worker waits for a queue only waiting workers drain. The sink's publish succeeds at once; each ends in `enqueued`, or in `shutdown_unrouted` when the broker shuts down first (never in `rejected`).",
    rejected => "Events refused because the queue was full (policy `Reject`, or `WaitFor` timed out).",
    shutdown_unrouted => "Queued events discarded without being routed: still queued at the deadline of [`Broker::shutdown_within`](crate::Broker::shutdown_within) (forwards waiting for room in a full queue included), or when the Tokio runtime the queue's dispatcher ran on was dropped. Lost to their triggers (the provider still stores them).",
    shutdown_aborted => "Queued events whose routing was cancelled before it ended: in progress at the deadline of [`Broker::shutdown_within`](crate::Broker::shutdown_within), or when their Tokio runtime was dropped. Some of their deliveries may have reached their sinks, others not; none was dead-lettered.",
    shutdown_retries_cut => "Deliveries of queued events not retried because the retry's wait (backoff, or an HTTP `Retry-After` up to `retry_after_max`) would have ended after the deadline of [`Broker::shutdown_within`](crate::Broker::shutdown_within): they failed then (counted in `failed`) and went to the trigger's dead-letter sink, if it has one.",
}

macro_rules! trigger_counters {
    ($($field:ident => $doc:literal),* $(,)?) => {
        /// One trigger's counters, held by its entry in the trigger set
        /// (bumped on the delivery path without a lookup; gone with the
        /// trigger).
        #[derive(Debug, Default)]
        pub(crate) struct TriggerCounters {
            $(pub(crate) $field: AtomicU64,)*
        }

        impl TriggerCounters {
            pub(crate) fn snapshot(&self, trigger: &str) -> TriggerMetrics {
                TriggerMetrics {
                    trigger: trigger.to_owned(),
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }
        }

        /// One trigger's counters in a [`BrokerMetrics`] snapshot
        /// ([`BrokerMetrics::by_trigger`]): the per-delivery counters of
        /// the broker's totals, for this trigger alone.
        ///
        /// A counter missing from the JSON reads as zero.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        #[non_exhaustive]
        pub struct TriggerMetrics {
            /// The trigger's name.
            pub trigger: String,
            $(#[doc = $doc] pub $field: u64,)*
        }

        impl TriggerMetrics {
            /// Every counter: name, documentation, value.
            #[cfg_attr(not(feature = "bus"), allow(dead_code))]
            fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($field), $doc, self.$field),)*]
            }

            /// Every counter's name and documentation (the families of the
            /// Prometheus exposition, present with no trigger too).
            #[cfg_attr(not(feature = "bus"), allow(dead_code))]
            fn families() -> &'static [(&'static str, &'static str)] {
                &[$((stringify!($field), $doc),)*]
            }
        }
    };
}

trigger_counters! {
    matched => "Events that matched the trigger's filter (each one delivery to it).",
    delivered => "Deliveries to the trigger's sink that succeeded.",
    retries => "Retry attempts made after a failed attempt to the trigger's sink.",
    timeouts => "Delivery attempts to the trigger's sink that timed out (its dead-letter sink's are not counted).",
    failed => "Deliveries to the trigger that failed (dead-lettered or not): every attempt failed, or an answer a retry cannot change ended them early.",
    dead_lettered => "Failed deliveries handed to the trigger's dead-letter sink.",
    dead_letter_failures => "Failed deliveries the trigger's dead-letter sink also refused, or that had none: lost unless the source redelivers (a durable feed does, up to its max_deliver).",
    no_dead_letter_sink => "Failed deliveries lost because the trigger has no dead-letter sink (a part of `dead_letter_failures`).",
    shutdown_retries_cut => "Deliveries to the trigger not retried because the retry's wait would have ended after the deadline of [`Broker::shutdown_within`](crate::Broker::shutdown_within) (counted in `failed`).",
}

impl BrokerMetrics {
    /// The counters of the trigger named `name`, if it is registered.
    pub fn trigger(&self, name: &str) -> Option<&TriggerMetrics> {
        self.by_trigger.iter().find(|t| t.trigger == name)
    }
}

#[cfg(feature = "bus")]
#[cfg_attr(docsrs, doc(cfg(feature = "bus")))]
impl BrokerMetrics {
    /// Renders the snapshot in the Prometheus text exposition format
    /// (0.0.4), as [`MetricsSnapshot::to_prometheus`](event_bus::MetricsSnapshot::to_prometheus)
    /// does the bus's: each counter as `a3s_broker_<counter>_total`, the
    /// gauges `a3s_broker_queue_depth`, `a3s_broker_in_flight` and
    /// `a3s_broker_triggers`, and each trigger's counters
    /// ([`by_trigger`](Self::by_trigger)) as
    /// `a3s_broker_trigger_<counter>_total{trigger="<name>"}` (separate
    /// families, so that summing them does not count the totals twice).
    ///
    /// A removed trigger's series end with it (the totals keep its
    /// counts); added again, it starts from zero, which Prometheus takes as
    /// a counter reset. Each trigger is a series per counter: with
    /// thousands of triggers, mind your Prometheus's cardinality.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
    /// use event_core::Event;
    /// use event_routing::{Broker, CollectorSink, Trigger, TriggerFilter};
    /// use std::sync::Arc;
    ///
    /// let broker = Broker::new();
    /// let sink = Arc::new(CollectorSink::new("orders"));
    /// broker.add_trigger(Trigger::new("orders", TriggerFilter::all(), sink))?;
    /// broker.route(&Event::new("events.orders.x", "orders", "s", "shop", serde_json::json!({}))).await;
    /// let text = broker.metrics().to_prometheus();
    /// assert!(text.contains("a3s_broker_routed_total 1"));
    /// assert!(text.contains("a3s_broker_queue_depth 0"));
    /// assert!(text.contains("a3s_broker_trigger_delivered_total{trigger=\"orders\"} 1"));
    /// # Ok(()) }
    /// ```
    pub fn to_prometheus(&self) -> String {
        self.to_prometheus_with_labels(&event_bus::metrics::PrometheusLabels::default())
    }

    /// [`to_prometheus`](Self::to_prometheus) with `labels` on every
    /// sample (say `broker="main"`, to tell brokers apart); the per-trigger
    /// series carry them next to `trigger`.
    ///
    /// A constant label named `trigger` would clash with the per-trigger
    /// label (a sample may not repeat a label): with one, the per-trigger
    /// families are left out and the rest rendered as usual. Name it
    /// otherwise (`router`, say) to keep them.
    pub fn to_prometheus_with_labels(
        &self,
        labels: &event_bus::metrics::PrometheusLabels,
    ) -> String {
        use crate::prometheus::{Kind, TRIGGER_LABEL, write_family, write_header};
        use std::fmt::Write as _;
        let mut out = String::with_capacity(2048 + 1024 * self.by_trigger.len());
        for (name, doc, value) in self.counters() {
            let metric = format!("a3s_broker_{name}_total");
            write_family(&mut out, labels, &metric, doc, Kind::Counter, value);
        }
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
        for (name, help, value) in gauges {
            let metric = format!("a3s_broker_{name}");
            write_family(&mut out, labels, &metric, help, Kind::Gauge, value as u64);
        }
        if crate::prometheus::has_label(labels, TRIGGER_LABEL) {
            return out;
        }
        let values: Vec<_> = self
            .by_trigger
            .iter()
            .map(TriggerMetrics::counters)
            .collect();
        for (i, &(name, doc)) in TriggerMetrics::families().iter().enumerate() {
            let metric = format!("a3s_broker_trigger_{name}_total");
            write_header(&mut out, &metric, doc, Kind::Counter);
            for (trigger, counters) in self.by_trigger.iter().zip(&values) {
                let value = counters.get(i).map_or(0, |&(_, _, v)| v);
                // writing to a String cannot fail
                let _ = writeln!(
                    out,
                    "{} {value}",
                    labels.series(&metric, Some((TRIGGER_LABEL, &trigger.trigger)))
                );
            }
        }
        out
    }
}

impl Counters {
    pub(crate) fn add(counter: &Counter, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{BrokerMetrics, TriggerMetrics};

    /// The exposition is valid, has every counter and gauge with its value
    /// and HELP text without Markdown, and takes constant labels.
    #[cfg(feature = "bus")]
    #[test]
    fn prometheus_exposition_is_valid_with_and_without_labels() {
        use crate::prometheus::exposition_check::parse_exposition;
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

    fn with_triggers() -> BrokerMetrics {
        BrokerMetrics {
            delivered: 5,
            failed: 3,
            triggers: 2,
            by_trigger: vec![
                TriggerMetrics {
                    trigger: "orders".to_owned(),
                    delivered: 5,
                    failed: 1,
                    ..TriggerMetrics::default()
                },
                TriggerMetrics {
                    // any name: escaped as a label value
                    trigger: "a\"b\\c\nd".to_owned(),
                    failed: 2,
                    no_dead_letter_sink: 2,
                    ..TriggerMetrics::default()
                },
            ],
            ..BrokerMetrics::default()
        }
    }

    /// Each trigger's counters are series of their own families, labelled
    /// `trigger` (escaped), next to the constant labels; the exposition
    /// stays valid.
    #[cfg(feature = "bus")]
    #[test]
    fn per_trigger_series_carry_a_trigger_label() {
        use crate::prometheus::exposition_check::parse_exposition;
        use event_bus::metrics::PrometheusLabels;
        let metrics = with_triggers();
        let text = metrics.to_prometheus();
        let samples = parse_exposition(&text);
        let per_trigger = TriggerMetrics::families().len();
        assert_eq!(
            samples.len(),
            metrics.counters().len() + 3 + 2 * per_trigger,
            "{text}"
        );
        assert_eq!(
            samples[r#"a3s_broker_trigger_delivered_total{trigger="orders"}"#],
            5.0
        );
        assert_eq!(
            samples[r#"a3s_broker_trigger_no_dead_letter_sink_total{trigger="a\"b\\c\nd"}"#],
            2.0
        );
        assert_eq!(samples["a3s_broker_delivered_total"], 5.0);
        assert!(text.contains(
            "# HELP a3s_broker_trigger_failed_total Deliveries to the trigger that failed"
        ));
        let labels = PrometheusLabels::new([("broker", "main")]).unwrap();
        let labelled = parse_exposition(&metrics.to_prometheus_with_labels(&labels));
        assert_eq!(labelled.len(), samples.len());
        assert_eq!(
            labelled[r#"a3s_broker_trigger_failed_total{broker="main",trigger="orders"}"#],
            1.0
        );
    }

    /// No trigger: the per-trigger families are declared, without samples.
    #[cfg(feature = "bus")]
    #[test]
    fn no_trigger_no_per_trigger_sample() {
        use crate::prometheus::exposition_check::parse_exposition;
        let text = BrokerMetrics::default().to_prometheus();
        let samples = parse_exposition(&text);
        assert!(samples.keys().all(|k| !k.contains("trigger=")), "{text}");
        assert!(text.contains("# TYPE a3s_broker_trigger_delivered_total counter"));
    }

    /// A constant label named `trigger` would repeat the per-trigger label
    /// (an invalid sample): the per-trigger families are left out, the
    /// rest is rendered.
    #[cfg(feature = "bus")]
    #[test]
    fn a_constant_trigger_label_leaves_out_the_per_trigger_families() {
        use crate::prometheus::exposition_check::parse_exposition;
        use event_bus::metrics::PrometheusLabels;
        let metrics = with_triggers();
        let labels = PrometheusLabels::new([("trigger", "x")]).unwrap();
        let text = metrics.to_prometheus_with_labels(&labels);
        let samples = parse_exposition(&text);
        assert_eq!(samples.len(), metrics.counters().len() + 3, "{text}");
        assert_eq!(samples[r#"a3s_broker_delivered_total{trigger="x"}"#], 5.0);
        assert!(!text.contains("a3s_broker_trigger_"), "{text}");
    }

    #[test]
    fn per_trigger_counters_read_and_write_as_json() {
        let metrics = with_triggers();
        let json = serde_json::to_value(&metrics).unwrap();
        assert_eq!(json["byTrigger"][0]["trigger"], "orders");
        assert_eq!(json["byTrigger"][1]["noDeadLetterSink"], 2);
        let back: BrokerMetrics = serde_json::from_value(json).unwrap();
        assert_eq!(back, metrics);
        assert_eq!(back.trigger("orders").map(|t| t.delivered), Some(5));
        assert!(back.trigger("nope").is_none());
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
        assert!(read.by_trigger.is_empty());
    }
}
