//! Prometheus text exposition (format 0.0.4) of a [`MetricsSnapshot`].

use super::MetricsSnapshot;
use std::fmt::Write as _;

impl MetricsSnapshot {
    /// Renders the snapshot in the Prometheus text exposition format.
    ///
    /// Counters are named `a3s_event_<counter>` (with a `_total` suffix added
    /// where the name lacks one); the publish latency is a summary
    /// `a3s_event_publish_latency_seconds` with 0.5, 0.9 and 0.99 quantiles,
    /// `_sum`, `_count`, plus a `a3s_event_publish_latency_max_seconds`
    /// gauge.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(2048);
        for (name, help, value) in self.counters() {
            let metric = if name.ends_with("_total") {
                format!("a3s_event_{name}")
            } else {
                format!("a3s_event_{name}_total")
            };
            // writing to a String cannot fail
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} counter");
            let _ = writeln!(out, "{metric} {value}");
        }
        let l = &self.publish_latency;
        let secs = |ns: u64| ns as f64 / 1e9;
        let name = "a3s_event_publish_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Publish pipeline latency of successful publishes."
        );
        let _ = writeln!(out, "# TYPE {name} summary");
        for (q, v) in [("0.5", l.p50_ns), ("0.9", l.p90_ns), ("0.99", l.p99_ns)] {
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", secs(v));
        }
        let _ = writeln!(out, "{name}_sum {}", secs(l.sum_ns));
        let _ = writeln!(out, "{name}_count {}", l.count);
        let max = "a3s_event_publish_latency_max_seconds";
        let _ = writeln!(out, "# HELP {max} Largest publish latency observed.");
        let _ = writeln!(out, "# TYPE {max} gauge");
        let _ = writeln!(out, "{max} {}", secs(l.max_ns));
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::EventMetrics;
    use std::time::Duration;

    #[test]
    fn exposition_has_every_counter_and_the_summary() {
        let m = EventMetrics::new();
        m.record_publish(Duration::from_millis(2));
        m.add_lagged(7);
        let text = m.snapshot().to_prometheus();
        assert!(
            text.contains("# TYPE a3s_event_publish_total counter\na3s_event_publish_total 1\n")
        );
        assert!(text.contains("a3s_event_lagged_total 7\n"));
        assert!(text.contains("a3s_event_redeliveries_total 0\n"));
        assert!(text.contains("# TYPE a3s_event_publish_latency_seconds summary"));
        assert!(text.contains("a3s_event_publish_latency_seconds_count 1\n"));
        assert!(text.contains("a3s_event_publish_latency_max_seconds 0.002\n"));
        // every non-comment line is `name[{labels}] value`
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("a3s_event_"), "{line}");
            value.parse::<f64>().unwrap();
        }
    }
}
