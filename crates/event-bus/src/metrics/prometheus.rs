//! Prometheus text exposition (format 0.0.4) of a [`MetricsSnapshot`].

use super::MetricsSnapshot;
use std::fmt::Write as _;

impl MetricsSnapshot {
    /// Renders the snapshot in the Prometheus text exposition format.
    ///
    /// Counters are named `a3s_event_<counter>` (with a `_total` suffix added
    /// where the name lacks one). The publish latency is exported twice:
    ///
    /// - a histogram `a3s_event_publish_duration_seconds` (`_bucket` with
    ///   `le` bounds of `2^k - 1` ns, about 1 µs to 34 s doubling each time,
    ///   see [`LatencyBuckets`](super::LatencyBuckets); `_sum`, `_count`):
    ///   exact counts that can be summed across instances and rated over a
    ///   window, e.g. `histogram_quantile(0.99, sum by (le)
    ///   (rate(a3s_event_publish_duration_seconds_bucket[5m])))`;
    /// - a summary `a3s_event_publish_latency_seconds` with 0.5, 0.9 and 0.99
    ///   quantiles (`NaN` before the first observation), `_sum`, `_count`,
    ///   plus a `a3s_event_publish_latency_max_seconds` gauge: quantiles over
    ///   the process's whole life, which cannot be aggregated across
    ///   instances or windows (kept for existing dashboards).
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
            "# HELP {name} Publish pipeline latency of stored publishes (quantiles over the process lifetime)."
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
        let hist = "a3s_event_publish_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {hist} Publish pipeline latency of stored publishes (buckets: below 2^k ns)."
        );
        let _ = writeln!(out, "# TYPE {hist} histogram");
        for (bound_ns, count) in l.buckets.iter() {
            let _ = writeln!(out, "{hist}_bucket{{le=\"{}\"}} {count}", secs(bound_ns));
        }
        let _ = writeln!(out, "{hist}_bucket{{le=\"+Inf\"}} {}", l.count);
        let _ = writeln!(out, "{hist}_sum {}", secs(l.sum_ns));
        let _ = writeln!(out, "{hist}_count {}", l.count);
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
    /// `quantile` label, `_sum`, `_count`; histograms: `_bucket` with an `le`
    /// label, `_sum`, `_count`, and no bare name), a family's samples are
    /// contiguous, label values are quoted, values are Prometheus floats.
    /// A histogram's `le` bounds increase and end with `+Inf`, its bucket
    /// counts never decrease, and the `+Inf` bucket equals `_count`.
    /// Returns `sample -> value` (labels included in the key).
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
        // families whose samples ended (another family's sample followed)
        let mut closed: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        // histogram family -> its (le, count) buckets in order
        let mut buckets: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
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
            let mut labels: HashMap<&str, &str> = HashMap::new();
            let name = match series.split_once('{') {
                Some((name, list)) => {
                    let list = list.strip_suffix('}').unwrap();
                    for label in list.split(',') {
                        let (k, v) = label.split_once('=').unwrap();
                        assert!(valid_name(k), "{line}");
                        assert!(v.len() >= 2 && v.starts_with('"') && v.ends_with('"'));
                        assert!(
                            labels.insert(k, &v[1..v.len() - 1]).is_none(),
                            "repeated label: {line}"
                        );
                    }
                    name
                }
                None => series,
            };
            assert!(valid_name(name), "{line}");
            let family = if types.contains_key(name) {
                name
            } else {
                let (base, suffix) = ["_sum", "_count", "_bucket"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).map(|b| (b, *s)))
                    .unwrap_or_else(|| panic!("sample of an undeclared family: {line}"));
                let kind = types.get(base).map(String::as_str);
                match suffix {
                    "_bucket" => assert_eq!(kind, Some("histogram"), "{line}"),
                    _ => assert!(matches!(kind, Some("summary" | "histogram")), "{line}"),
                }
                base
            };
            if current.as_deref() != Some(family) {
                assert!(
                    !closed.contains(family),
                    "samples of {family} are not contiguous: {line}"
                );
                if let Some(previous) = current.replace(family.to_string()) {
                    closed.insert(previous);
                }
            }
            match types[family].as_str() {
                "summary" if name == family => {
                    assert!(labels.contains_key("quantile"), "{line}");
                }
                "histogram" => {
                    assert_ne!(name, family, "a histogram has no bare sample: {line}");
                    if name.ends_with("_bucket") {
                        let le = match labels.get("le") {
                            Some(&"+Inf") => f64::INFINITY,
                            Some(le) => le.parse().unwrap_or_else(|_| panic!("bad le: {line}")),
                            None => panic!("a bucket without le: {line}"),
                        };
                        let list = buckets.entry(family.to_string()).or_default();
                        if let Some(&(prev_le, prev)) = list.last() {
                            assert!(le > prev_le, "le does not increase: {line}");
                            assert!(value >= prev, "bucket counts decrease: {line}");
                        }
                        list.push((le, value));
                    } else {
                        assert!(labels.is_empty(), "{line}");
                    }
                }
                _ => {}
            }
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "repeated sample: {line}"
            );
        }
        for (family, kind) in &types {
            if kind == "histogram" {
                let list = &buckets[family];
                assert_eq!(
                    list.last().unwrap().0,
                    f64::INFINITY,
                    "{family}: no +Inf bucket"
                );
                assert_eq!(
                    list.last().unwrap().1,
                    samples[&format!("{family}_count")],
                    "{family}: +Inf bucket is not _count"
                );
                assert!(samples.contains_key(&format!("{family}_sum")), "{family}");
            }
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

    /// The HELP line of `metric`.
    fn help<'a>(text: &'a str, metric: &str) -> &'a str {
        let prefix = format!("# HELP {metric} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no HELP for {metric}"))
    }

    #[test]
    fn histogram_buckets_are_exact_cumulative_and_add_up_across_instances() {
        let hist = "a3s_event_publish_duration_seconds";
        let a = EventMetrics::new();
        // at a bound, just above it, well inside, beyond the last bound
        for ns in [1_000, 1_023, 1_024, 3_000_000, 40_000_000_000] {
            a.publish_latency().record_nanos(ns);
            a.add_publish(1);
        }
        let b = EventMetrics::new();
        for ns in [2_047, 2_048, 1_048_575, 1_048_576] {
            b.publish_latency().record_nanos(ns);
            b.add_publish(1);
        }
        let (ta, tb) = (a.snapshot().to_prometheus(), b.snapshot().to_prometheus());
        let (pa, pb) = (parse_exposition(&ta), parse_exposition(&tb));
        let bucket =
            |p: &HashMap<String, f64>, le: &str| p[&format!("{hist}_bucket{{le=\"{le}\"}}")];
        // "le" is inclusive: 2^10 - 1 ns holds 1000 and 1023, not 1024
        assert_eq!(bucket(&pa, "0.000001023"), 2.0, "{ta}");
        assert_eq!(bucket(&pa, "0.000002047"), 3.0);
        assert_eq!(bucket(&pa, "0.004194303"), 4.0);
        assert_eq!(
            bucket(&pa, "34.359738367"),
            4.0,
            "40 s is above the last bound"
        );
        assert_eq!(bucket(&pa, "+Inf"), 5.0);
        assert_eq!(pa[&format!("{hist}_count")], 5.0);
        assert!((pa[&format!("{hist}_sum")] - 40.003_003_047).abs() < 1e-9);
        assert_eq!(bucket(&pb, "0.000002047"), 1.0);
        assert_eq!(bucket(&pb, "0.000004095"), 2.0);
        assert_eq!(bucket(&pb, "0.001048575"), 3.0);
        assert_eq!(bucket(&pb, "0.002097151"), 4.0);
        // the same bounds in every process: summing per `le` is the fleet's
        // histogram, as if one process had recorded everything
        let both = EventMetrics::new();
        for ns in [
            1_000,
            1_023,
            1_024,
            3_000_000,
            40_000_000_000,
            2_047,
            2_048,
            1_048_575,
            1_048_576,
        ] {
            both.publish_latency().record_nanos(ns);
            both.add_publish(1);
        }
        let pboth = parse_exposition(&both.snapshot().to_prometheus());
        let les: Vec<&str> = ta
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{hist}_bucket{{le=\"")))
            .map(|l| l.split_once('"').unwrap().0)
            .collect();
        assert_eq!(les.len(), crate::metrics::LATENCY_BUCKETS + 1);
        for le in les {
            assert_eq!(
                bucket(&pa, le) + bucket(&pb, le),
                bucket(&pboth, le),
                "le {le}"
            );
        }
    }

    /// The validator itself refuses the histogram mistakes it is there for.
    #[test]
    fn the_validator_refuses_invalid_histograms() {
        let head = "# HELP h_seconds x\n# TYPE h_seconds histogram\n";
        let valid = format!(
            "{head}h_seconds_bucket{{le=\"1\"}} 1\nh_seconds_bucket{{le=\"+Inf\"}} 2\nh_seconds_sum 3\nh_seconds_count 2\n"
        );
        assert_eq!(parse_exposition(&valid).len(), 4);
        for bad in [
            // +Inf is not _count
            valid.replace("h_seconds_count 2", "h_seconds_count 3"),
            // counts decrease
            valid.replace("le=\"1\"} 1", "le=\"1\"} 5"),
            // a bare sample of a histogram
            format!("{head}h_seconds 1\n"),
            // no +Inf bucket
            format!("{head}h_seconds_bucket{{le=\"1\"}} 1\nh_seconds_sum 3\nh_seconds_count 1\n"),
            // a bucket of a summary
            valid.replace("histogram", "summary"),
            // samples of a family split by another family's
            valid.replace(
                "h_seconds_sum 3\n",
                "# HELP c_total y\n# TYPE c_total counter\nc_total 1\nh_seconds_sum 3\n",
            ),
        ] {
            let refused = std::panic::catch_unwind(|| parse_exposition(&bad)).is_err();
            assert!(refused, "accepted:\n{bad}");
        }
    }

    #[test]
    fn help_texts_say_what_is_counted() {
        let text = EventMetrics::new().snapshot().to_prometheus();
        // the handler's Ok is counted, not the ack (which may then fail)
        let handled = help(&text, "a3s_event_handled_total");
        assert!(handled.contains("returned Ok"), "{handled}");
        assert!(!handled.contains("(acked)"), "{handled}");
        assert!(help(&text, "a3s_event_settle_errors_total").contains("ack, nak, term"));
        // dead letters accepted vs refusals vs lost
        assert!(help(&text, "a3s_event_dlq_total").contains("accepted"));
        let refusals = help(&text, "a3s_event_dlq_errors_total");
        assert!(
            refusals.contains("counts refusals, not events"),
            "{refusals}"
        );
        assert!(help(&text, "a3s_event_dlq_dropped_total").contains("no DLQ handler"));
        assert!(help(&text, "a3s_event_dlq_unsettled_total").contains("left unsettled"));
        // a router refusal is not a failed publish
        assert!(
            help(&text, "a3s_event_publish_errors_total").contains("before the provider stored")
        );
        assert!(help(&text, "a3s_event_router_errors_total").contains("publish_total too"));
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
        for counter in [
            "dlq_dropped",
            "dlq_unsettled",
            "settle_errors",
            "consumer_aborted",
        ] {
            let line =
                format!("# TYPE a3s_event_{counter}_total counter\na3s_event_{counter}_total 0\n");
            assert!(text.contains(&line), "{counter} missing:\n{text}");
        }
        assert!(text.contains("# TYPE a3s_event_publish_duration_seconds histogram"));
        assert!(text.contains("a3s_event_publish_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("a3s_event_publish_duration_seconds_count 1\n"));
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
