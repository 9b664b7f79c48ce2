//! [`EventMetrics`]: lock-free counters and a publish-latency histogram.
//!
//! Each counter's field docs (also its Prometheus `# HELP`) say exactly what
//! it counts. How they relate:
//!
//! - **Publishing.** Every publish call lands in one of `publish_total` (the
//!   provider stored the event) or `publish_errors` (refused before the
//!   store: `validation_errors` says how many of those validation refused).
//!   A router refusal comes after the store: the call returns the router's
//!   error (`publish_event_stored` returns `Ok` with it inside), but it
//!   counts in `publish_total` and `router_errors`, not in `publish_errors`.
//! - **Consumer runners.** `handled_total` counts handlers that returned
//!   `Ok` (the ack comes after; one that fails counts in `settle_errors`),
//!   `handler_errors` the failures, `redeliveries` the naks among them.
//!   `redelivered` counts deliveries that were not their event's first,
//!   whatever brought them back (a nak, an expired ack wait, a consumer
//!   stopped mid-event). `consumer_aborted` counts deliveries abandoned at
//!   a shutdown deadline, `handler_stalls` handler runs (and DLQ calls)
//!   still going after [`STALL_THRESHOLD`](crate::consumer::STALL_THRESHOLD)
//!   (60 s; only work with no time limit, or one above that, can).
//! - **Dead letters.** `dlq_total` counts dead letters the DLQ handler
//!   accepted (hand-overs: an event whose termination was lost with the
//!   connection after its dead letter is dead-lettered again when it comes
//!   back, and counts again), `dlq_errors` its refusals (calls: one event refused
//!   three times counts three). An event that never reaches a DLQ counts in
//!   `dlq_dropped` (terminated: no handler set, an undecodable message the
//!   handler refused, an undecryptable event it refused for good on
//!   `dlq_attempts` deliveries, or an unreadable dead letter, which is never
//!   dead-lettered again: see
//!   [`PlaintextPolicy::Refuse`](crate::PlaintextPolicy::Refuse)) or `dlq_unsettled` (a runner gave up on a DLQ that
//!   refused it for good, or a bus subscription's DLQ refused an
//!   undecryptable event, on its final delivery, and left it unsettled: it
//!   comes once more, as its spare delivery, and counts again if refused
//!   again; a spare delivery does not come back). An operator alerts on
//!   `dlq_dropped` and `dlq_unsettled`: those events may be left only in
//!   the stream.
//! - **Encryption.** `encrypt_total`, `decrypt_total` and `decrypt_errors`
//!   count the bus's own encryptor calls wherever they happen: a failed
//!   decryption counts in `decrypt_errors` on every delivery to a bus
//!   subscription (a redelivery counts again), for every undecryptable
//!   event in every history read (`list_events`, `list_events_each`: a
//!   dashboard polling history during a key rotation raises it on each
//!   poll) and on every re-drive attempt. It says that something failed to
//!   decrypt, not that a consumer lost anything: what became of an
//!   undecryptable delivery is in `dlq_total` (dead-lettered),
//!   `dlq_dropped` (terminated: no DLQ handler, or a dead letter itself)
//!   and `dlq_unsettled`, and
//!   in the log line the bus subscription writes for it. A DLQ handler's
//!   own encryption (`ProviderDlqHandler::with_encryptor`) is not in the
//!   bus's metrics.
//! - **Subscription state.** `state_save_errors` counts saves of the
//!   subscription state store that failed (an error, the store's time
//!   limit, a panic), each a subscription change refused and not applied
//!   (logged at `WARN` with the error). An operator alerts on it: the
//!   application's subscription changes are failing.
//! - **Latency.** Exported both as a Prometheus histogram
//!   (`a3s_event_publish_duration_seconds`, fixed bounds, aggregatable
//!   across instances) and as the older lifetime summary
//!   (`a3s_event_publish_latency_seconds`); see
//!   [`MetricsSnapshot::to_prometheus`].
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

pub use prometheus::{PrometheusLabels, merge_expositions};

pub use histogram::{LATENCY_BUCKETS, LatencyBuckets, LatencyHistogram, LatencySummary};

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
        /// by a version with fewer counters still read. New counters are
        /// added as new fields: build a snapshot with `..Default::default()`
        /// (or from [`EventMetrics::snapshot`]), not by listing every field.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        pub struct MetricsSnapshot {
            $( #[doc = $help] pub $field: u64, )*
            /// Publish latency (whole pipeline) of the publishes counted in
            /// `publish_total`.
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
    publish_total => add_publish, "Publishes the provider stored (a deduplicated repeat included), whether or not the router then took the event (a router refusal also counts in router_errors).";
    publish_errors => add_publish_error, "Publishes that failed before the provider stored the event (validation, encryption or provider errors); a router refusal after the store is not one (see router_errors).";
    subscribe_total => add_subscribe, "Subscriptions opened by the bus and handed to the caller (one per subject of a managed subscriber whose every subject opened, or one per subscribe call).";
    unsubscribe_total => add_unsubscribe, "Managed subscribers removed (remove_subscription).";
    dlq_total => add_dlq, "Dead letters the DLQ handler accepted (exhausted, undecryptable or undecodable events; an event dead-lettered again after a lost termination counts again).";
    dlq_errors => add_dlq_error, "DLQ handler calls that failed (an error or a panic): a dead letter offered again after a refusal counts once per refusal, so this counts refusals, not events.";
    dlq_dropped => add_dlq_dropped, "Dead letters that reached no DLQ and were terminated: no DLQ handler was set (an exhausted, undecryptable or undecodable delivery), the handler refused an undecodable message the provider had already terminated, or it refused an undecryptable event for good once that had been delivered dlq_attempts times. Also an unreadable dead letter (event_type a3s.dead_letter: refused as plaintext or undecryptable) delivered to a subscriber whose filter covers the DLQ subjects: it is not dead-lettered again, since it is stored in its DLQ already. The event is left only in the stream.";
    dlq_unsettled => add_dlq_unsettled, "Final deliveries left unsettled because the DLQ handler refused their dead letter (a consumer runner: for good, dlq_attempts times; a bus subscription: an undecryptable event, once). A final delivery comes once more (its spare delivery) and is offered to the DLQ again, counting again if refused; a spare delivery does not, and its event is left only in the stream.";
    validation_errors => add_validation_error, "Publishes refused by subject or schema validation.";
    encrypt_total => add_encrypt, "Payloads the bus encrypted on publish (re-driven events included), counted before the store: a publish that then fails, or whose call is dropped, or a retry, counts again, so this can exceed publish_total. A DLQ handler's own encryption (ProviderDlqHandler::with_encryptor) is not counted.";
    decrypt_total => add_decrypt, "Payloads the bus decrypted: deliveries to its subscriptions, history reads (list_events, list_events_each) and re-drives alike. A DLQ handler's own decryption is not counted.";
    decrypt_errors => add_decrypt_error, "Payloads the bus failed to decrypt (unknown key id, tampered or moved envelope, or plaintext it refuses), counted per attempt: each delivery to a bus subscription (a redelivered event counts again), each event in each history read (list_events, list_events_each: every call counts again) and each re-drive attempt. Not a consumer-health signal on its own: a dashboard polling history during a key rotation raises it. A DLQ handler's own decryption is not counted.";
    redeliveries => add_redelivery, "Deliveries consumer runners naked for redelivery (a handler's error that was not its event's last attempt); redeliveries for any cause count in redelivered_total.";
    redelivered => add_redelivered, "Deliveries consumer runners received that were not their event's first (a delivery count above 1), whatever the cause: a nak (see redeliveries), an ack wait that expired (a handler slower than the ack wait, a lost ack), a consumer stopped with the event in flight. Growing faster than redeliveries: look at ack waits.";
    lagged => add_lagged, "Stream positions skipped by lagging subscriptions.";
    handled_total => add_handled, "Deliveries whose handler returned Ok in consumer runners, counted before the ack (an ack that then fails counts in settle_errors too, and the provider redelivers the event).";
    handler_errors => add_handler_error, "Handler failures (errors, panics, timeouts) in consumer runners.";
    settle_errors => add_settle_error, "Acknowledgement calls (ack, nak, term) of consumer runners that failed.";
    consumer_aborted => add_consumer_aborted, "Deliveries a consumer runner abandoned at its shutdown deadline, unsettled (the provider redelivers them after their ack wait, a final delivery once more as its spare delivery; a spare delivery is not redelivered).";
    handler_stalls => add_handler_stall, "Handler runs of consumer runners, and DLQ handler calls (of runners and bus subscriptions), that went on past STALL_THRESHOLD (60 s) without finishing: possible only without a time limit (handler_timeout or dlq_timeout None, or the dead letter of an undecodable message) or with one above 60 s. Counted once per run, however long it goes on; the run is not cancelled (a WARN names the event then, at each doubling of the time, and when the run ends).";
    router_errors => add_router_error, "Stored events the router (broker hook) refused: the publish returned the router's error although the provider stored the event (counted in publish_total too).";
    state_save_errors => add_state_save_error, "Saves of subscription state to the state store that failed (the store's error, its time limit, a panic): the change they carried (a subscription update or removal, or set_state_store's merged set) was refused and not applied.";
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
