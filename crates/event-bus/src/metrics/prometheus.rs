//! Prometheus text exposition (format 0.0.4) of a [`MetricsSnapshot`].

use super::MetricsSnapshot;
use std::fmt::Write as _;

impl MetricsSnapshot {
    /// Renders the snapshot in the Prometheus text exposition format.
    ///
    /// Counters are named `a3s_event_<counter>` (with a `_total` suffix added
    /// where the name lacks one); the publish latency is a summary
    /// `a3s_event_publish_latency_seconds` with 0.5, 0.9 and 0.99 quantiles
    /// (`NaN` before the first observation), `_sum`, `_count`, plus a
    /// `a3s_event_publish_latency_max_seconds` gauge.
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
            // no observation, no quantile: NaN, as Prometheus clients write
            // it (0 would read as a 0 s latency)
            let v = if l.count == 0 { f64::NAN } else { secs(v) };
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {v}");
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
    use std::collections::{HashMap, HashSet};
    use std::time::Duration;

    /// Checks `text` against the text exposition format 0.0.4: each family
    /// has one `# HELP` and one `# TYPE` before its samples, names are valid,
    /// samples belong to a declared family (summaries: the bare name with a
    /// `quantile` label, `_sum`, `_count`), label values are quoted, values
    /// are Prometheus floats. Returns `sample -> value` (labels included in
    /// the key).
    fn parse_exposition(text: &str) -> HashMap<String, f64> {
        fn valid_name(n: &str) -> bool {
            let mut chars = n.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }
        let mut helped = HashSet::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = HashMap::new();
        assert!(text.ends_with('\n'), "the exposition ends with a newline");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(valid_name(name), "{line}");
                assert!(!help.contains('\\'), "unescaped help: {line}");
                assert!(helped.insert(name.to_string()), "second HELP: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(valid_name(name), "{line}");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(
                    ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "second TYPE: {line}"
                );
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').unwrap();
                    for label in labels.split(',') {
                        let (k, v) = label.split_once('=').unwrap();
                        assert!(valid_name(k), "{line}");
                        assert!(v.len() >= 2 && v.starts_with('"') && v.ends_with('"'));
                    }
                    name
                }
                None => series,
            };
            assert!(valid_name(name), "{line}");
            let family = if types.contains_key(name) {
                name
            } else {
                let base = name
                    .strip_suffix("_sum")
                    .or_else(|| name.strip_suffix("_count"))
                    .unwrap_or_else(|| panic!("sample of an undeclared family: {line}"));
                assert_eq!(
                    types.get(base).map(String::as_str),
                    Some("summary"),
                    "{line}"
                );
                base
            };
            if types[family] == "summary" && name == family {
                assert!(series.contains("{quantile=\""), "{line}");
            }
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "repeated sample: {line}"
            );
        }
        samples
    }

    #[test]
    fn exposition_is_valid_and_an_empty_summary_has_nan_quantiles() {
        let m = EventMetrics::new();
        let empty = parse_exposition(&m.snapshot().to_prometheus());
        let name = "a3s_event_publish_latency_seconds";
        for q in ["0.5", "0.9", "0.99"] {
            let v = empty[&format!("{name}{{quantile=\"{q}\"}}")];
            // no observation: no quantile (0 would claim 0 s latencies)
            assert!(v.is_nan(), "quantile {q} of no observations is {v}");
        }
        assert_eq!(empty[&format!("{name}_count")], 0.0);
        assert_eq!(empty[&format!("{name}_sum")], 0.0);

        m.record_publish(Duration::from_micros(250));
        m.record_publish(Duration::from_millis(3));
        m.add_publish_error(4);
        let full = parse_exposition(&m.snapshot().to_prometheus());
        assert_eq!(full["a3s_event_publish_total"], 2.0);
        assert_eq!(full["a3s_event_publish_errors_total"], 4.0);
        assert_eq!(full[&format!("{name}_count")], 2.0);
        assert!((full[&format!("{name}_sum")] - 0.00325).abs() < 1e-12);
        let p99 = full[&format!("{name}{{quantile=\"0.99\"}}")];
        assert!((0.003..=0.003 * 1.0625).contains(&p99), "{p99}");
        assert_eq!(full["a3s_event_publish_latency_max_seconds"], 0.003);
        assert_eq!(full.len(), empty.len());
    }

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
