//! [`EventMetrics`]: lock-free counters and a publish-latency histogram.
//!
//! ```
//! use event_bus::metrics::EventMetrics;
//! use std::time::Duration;
//!
//! let metrics = EventMetrics::new();
//! metrics.record_publish(Duration::from_micros(40));
//! let snapshot = metrics.snapshot();
//! assert_eq!(snapshot.publish_total, 1);
//! assert!(serde_json::to_value(&snapshot)?.get("publishTotal").is_some());
//! assert!(snapshot.to_prometheus().contains("a3s_event_publish_total 1"));
//! # Ok::<(), serde_json::Error>(())
//! ```

mod histogram;
mod prometheus;

pub use histogram::{LatencyHistogram, LatencySummary};

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

macro_rules! counters {
    ($( $field:ident => $inc:ident, $help:literal; )*) => {
        /// Lock-free metrics of an event bus.
        ///
        /// Every counter is an `AtomicU64` updated with relaxed ordering; the
        /// latency histogram is lock-free too (see [`LatencyHistogram`]).
        /// Read them with [`snapshot`](Self::snapshot), export with
        /// [`MetricsSnapshot::to_prometheus`] or serde (camelCase JSON).
        #[derive(Debug, Default)]
        pub struct EventMetrics {
            $( $field: AtomicU64, )*
            publish_latency: LatencyHistogram,
        }

        impl EventMetrics {
            $(
                #[doc = concat!("Adds `n` to `", stringify!($field), "`.")]
                pub fn $inc(&self, n: u64) {
                    self.$field.fetch_add(n, Ordering::Relaxed);
                }
            )*

            /// A point-in-time copy of every counter and the latency summary.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot {
                    $( $field: self.$field.load(Ordering::Relaxed), )*
                    publish_latency: self.publish_latency.summary(),
                }
            }

            /// Zeroes every counter and the histogram.
            pub fn reset(&self) {
                $( self.$field.store(0, Ordering::Relaxed); )*
                self.publish_latency.reset();
            }
        }

        /// Serializable point-in-time view of [`EventMetrics`] (camelCase).
        ///
        /// A field missing from the JSON reads as zero, so snapshots written
        /// by a version with fewer counters still read.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        pub struct MetricsSnapshot {
            $( #[doc = $help] pub $field: u64, )*
            /// Publish latency (whole pipeline, successful publishes).
            pub publish_latency: LatencySummary,
        }

        impl MetricsSnapshot {
            /// `(name, help, value)` of every counter, for exporters.
            fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![ $( (stringify!($field), $help, self.$field), )* ]
            }
        }
    };
}

counters! {
    publish_total => add_publish, "Events published successfully.";
    publish_errors => add_publish_error, "Publishes that failed (validation, encryption, provider or router).";
    subscribe_total => add_subscribe, "Subscriptions opened by the bus and handed to the caller (one per subject of a managed subscriber whose every subject opened, or one per subscribe call).";
    unsubscribe_total => add_unsubscribe, "Managed subscribers removed (remove_subscription).";
    dlq_total => add_dlq, "Events handed to the dead-letter queue.";
    dlq_errors => add_dlq_error, "Dead letters the DLQ handler refused (the event was kept or logged).";
    validation_errors => add_validation_error, "Publishes refused by subject or schema validation.";
    encrypt_total => add_encrypt, "Payloads encrypted.";
    decrypt_total => add_decrypt, "Payloads decrypted.";
    decrypt_errors => add_decrypt_error, "Payloads that failed to decrypt.";
    redeliveries => add_redelivery, "Events naked for redelivery by consumer runners.";
    lagged => add_lagged, "Stream positions skipped by lagging subscriptions.";
    handled_total => add_handled, "Events handled successfully by consumer runners (acked).";
    handler_errors => add_handler_error, "Handler failures (errors, panics, timeouts) in consumer runners.";
    router_errors => add_router_error, "Events the router (broker hook) refused.";
}

impl EventMetrics {
    /// A zeroed set of metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a successful publish and its pipeline latency.
    pub fn record_publish(&self, latency: Duration) {
        self.add_publish(1);
        self.publish_latency.record(latency);
    }

    /// The publish-latency histogram.
    pub fn publish_latency(&self) -> &LatencyHistogram {
        &self.publish_latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_serialises_camel_case() {
        let m = EventMetrics::new();
        m.record_publish(Duration::from_micros(10));
        m.add_publish_error(2);
        m.add_lagged(5);
        m.add_dlq(1);
        let v = serde_json::to_value(m.snapshot()).unwrap();
        assert_eq!(v["publishTotal"], 1);
        assert_eq!(v["publishErrors"], 2);
        assert_eq!(v["lagged"], 5);
        assert_eq!(v["dlqTotal"], 1);
        assert_eq!(v["publishLatency"]["count"], 1);
        assert_eq!(v["publishLatency"]["maxNs"], 10_000);
        let back: MetricsSnapshot = serde_json::from_value(v).unwrap();
        assert_eq!(back, m.snapshot());
    }

    #[test]
    fn snapshot_json_missing_fields_reads_as_zero() {
        // a snapshot written by a version with fewer counters
        let back: MetricsSnapshot = serde_json::from_value(serde_json::json!({
            "publishTotal": 7,
            "publishLatency": {"count": 7}
        }))
        .unwrap();
        assert_eq!(back.publish_total, 7);
        assert_eq!(back.publish_errors, 0);
        assert_eq!(back.publish_latency.count, 7);
        assert_eq!(back.publish_latency.max_ns, 0);
    }

    #[test]
    fn reset_zeroes_everything() {
        let m = EventMetrics::new();
        m.record_publish(Duration::from_micros(10));
        m.add_redelivery(3);
        m.reset();
        assert_eq!(m.snapshot(), MetricsSnapshot::default());
    }

    #[test]
    fn concurrent_counting_is_exact() {
        let m = std::sync::Arc::new(EventMetrics::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        m.record_publish(Duration::from_nanos(100));
                        m.add_decrypt(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = m.snapshot();
        assert_eq!(s.publish_total, 40_000);
        assert_eq!(s.decrypt_total, 40_000);
        assert_eq!(s.publish_latency.count, 40_000);
    }
}
