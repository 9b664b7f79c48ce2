//! Prometheus text exposition (format 0.0.4) of a [`MetricsSnapshot`].

use super::MetricsSnapshot;
use event_core::{Error, Result};
use std::fmt::Write as _;

/// Constant labels put on every sample of an exposition, such as
/// `bus="orders"`: they tell apart the series of several buses (or
/// brokers) in one process, which would otherwise clash under the same
/// names.
///
/// Names are Prometheus label names (`[a-zA-Z_][a-zA-Z0-9_]*`), not
/// reserved (`__` prefix) and not `le` or `quantile` (the expositions use
/// those); values are any text, escaped as the format requires.
///
/// ```
/// use event_bus::EventMetrics;
/// use event_bus::metrics::PrometheusLabels;
///
/// let labels = PrometheusLabels::new([("bus", "orders")])?;
/// let metrics = EventMetrics::new();
/// metrics.add_publish(1);
/// let text = metrics.snapshot().to_prometheus_with_labels(&labels);
/// assert!(text.contains("a3s_event_publish_total{bus=\"orders\"} 1"));
/// # Ok::<(), event_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrometheusLabels {
    /// `name="value",...` in the order given, values escaped; empty for
    /// none.
    rendered: String,
}

impl PrometheusLabels {
    /// Labels from `(name, value)` pairs; an invalid, reserved or repeated
    /// name is [`Error::InvalidConfig`].
    pub fn new<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut rendered = String::new();
        let mut names: Vec<&str> = Vec::new();
        for (name, value) in labels {
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            let problem = if !valid {
                Some("is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)")
            } else if name.starts_with("__") {
                Some("is reserved (names starting with __ are Prometheus's own)")
            } else if name == "le" || name == "quantile" {
                Some("is used by the exposition's histograms and summaries")
            } else if names.contains(&name) {
                Some("is given twice")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(Error::invalid_config(
                    "prometheus label",
                    format!("{name:?} {problem}"),
                ));
            }
            names.push(name);
            if !rendered.is_empty() {
                rendered.push(',');
            }
            push_label(&mut rendered, name, value);
        }
        Ok(Self { rendered })
    }

    /// The series `name` with these labels and, if given, one more (a
    /// histogram's `le`, a summary's `quantile`, a broker's `trigger`):
    /// `name{bus="orders"}`, or `name` alone when there are no labels. The
    /// extra label's value is escaped as the others are; its name is the
    /// caller's to keep valid.
    pub fn series(&self, name: &str, extra: Option<(&str, &str)>) -> String {
        let Some((label, value)) = extra else {
            return if self.rendered.is_empty() {
                name.to_owned()
            } else {
                format!("{name}{{{}}}", self.rendered)
            };
        };
        let mut series = String::with_capacity(name.len() + self.rendered.len() + 32);
        series.push_str(name);
        series.push('{');
        series.push_str(&self.rendered);
        if !self.rendered.is_empty() {
            series.push(',');
        }
        push_label(&mut series, label, value);
        series.push('}');
        series
    }
}

/// Appends `name="value"` to `out`, the value escaped as the format
/// requires (`\`, `"` and line feeds).
fn push_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

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
    ///
    /// Several buses in one process (or a broker's metrics beside them)
    /// need [`to_prometheus_with_labels`](Self::to_prometheus_with_labels),
    /// or their series clash.
    pub fn to_prometheus(&self) -> String {
        self.to_prometheus_with_labels(&PrometheusLabels::default())
    }

    /// [`to_prometheus`](Self::to_prometheus) with `labels` on every
    /// sample.
    pub fn to_prometheus_with_labels(&self, labels: &PrometheusLabels) -> String {
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
            let _ = writeln!(out, "{} {value}", labels.series(&metric, None));
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
            let _ = writeln!(out, "{} {v}", labels.series(name, Some(("quantile", q))));
        }
        let _ = writeln!(
            out,
            "{} {}",
            labels.series(&format!("{name}_sum"), None),
            secs(l.sum_ns)
        );
        let _ = writeln!(
            out,
            "{} {}",
            labels.series(&format!("{name}_count"), None),
            l.count
        );
        let hist = "a3s_event_publish_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {hist} Publish pipeline latency of stored publishes (buckets: below 2^k ns)."
        );
        let _ = writeln!(out, "# TYPE {hist} histogram");
        let bucket = format!("{hist}_bucket");
        for (bound_ns, count) in l.buckets.iter() {
            let le = secs(bound_ns).to_string();
            let _ = writeln!(out, "{} {count}", labels.series(&bucket, Some(("le", &le))));
        }
        let _ = writeln!(
            out,
            "{} {}",
            labels.series(&bucket, Some(("le", "+Inf"))),
            l.count
        );
        let _ = writeln!(
            out,
            "{} {}",
            labels.series(&format!("{hist}_sum"), None),
            secs(l.sum_ns)
        );
        let _ = writeln!(
            out,
            "{} {}",
            labels.series(&format!("{hist}_count"), None),
            l.count
        );
        let max = "a3s_event_publish_latency_max_seconds";
        let _ = writeln!(out, "# HELP {max} Largest publish latency observed.");
        let _ = writeln!(out, "# TYPE {max} gauge");
        let _ = writeln!(out, "{} {}", labels.series(max, None), secs(l.max_ns));
        out
    }
}

/// Merges Prometheus text expositions (format 0.0.4) into one page, for
/// one `/metrics` endpoint serving several buses, brokers, feeds or
/// webhooks.
///
/// Plain concatenation is only valid when no two texts share a metric
/// family: two buses' texts (told apart by their
/// [`PrometheusLabels`]) both declare `a3s_event_publish_total`, and a
/// second `# HELP` or `# TYPE` for a family, or a family's samples split
/// in two, is refused by strict parsers (`promtool check metrics`,
/// Prometheus client parsers) though a lenient scraper takes it. The merge
/// writes each family once, in the order families first appear, with the
/// `# HELP` and `# TYPE` of its first text and then the samples of every
/// text, in order. A sample line belongs to the family of the `# HELP` or
/// `# TYPE` line before it in its text (so a histogram's `_bucket`,
/// `_sum` and `_count` stay with it); one with none before it is a family
/// of its own name. Blank lines are dropped; other comments stay with
/// their family.
///
/// The merge does not tell series apart: two texts with the same series
/// (the same name and labels; two buses without labels, say) still clash,
/// so give each its labels.
///
/// ```
/// use event_bus::EventMetrics;
/// use event_bus::metrics::{PrometheusLabels, merge_expositions};
///
/// let (orders, billing) = (EventMetrics::new(), EventMetrics::new());
/// orders.add_publish(2);
/// billing.add_publish(5);
/// let page = merge_expositions([
///     orders.snapshot().to_prometheus_with_labels(&PrometheusLabels::new([("bus", "orders")])?),
///     billing.snapshot().to_prometheus_with_labels(&PrometheusLabels::new([("bus", "billing")])?),
/// ]);
/// assert_eq!(page.matches("# TYPE a3s_event_publish_total counter").count(), 1);
/// assert!(page.contains(
///     "a3s_event_publish_total{bus=\"orders\"} 2\na3s_event_publish_total{bus=\"billing\"} 5\n"
/// ));
/// # Ok::<(), event_core::Error>(())
/// ```
pub fn merge_expositions<I>(texts: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    /// A family's header lines (its first text's) and every text's samples.
    #[derive(Default)]
    struct Family<'a> {
        help: Option<&'a str>,
        kind: Option<&'a str>,
        lines: Vec<&'a str>,
    }
    /// The family `name`, added after the others if new.
    fn family<'a, 'm>(
        families: &'m mut Vec<(&'a str, Family<'a>)>,
        name: &'a str,
    ) -> &'m mut Family<'a> {
        let at = match families.iter().position(|(known, _)| *known == name) {
            Some(at) => at,
            None => {
                families.push((name, Family::default()));
                families.len() - 1
            }
        };
        &mut families[at].1
    }
    let texts: Vec<I::Item> = texts.into_iter().collect();
    // a page holds some dozens of families: a linear search is enough
    let mut families: Vec<(&str, Family<'_>)> = Vec::new();
    for text in &texts {
        let mut current: Option<&str> = None;
        for line in text.as_ref().lines().map(str::trim) {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split_whitespace().next().unwrap_or_default();
                family(&mut families, name).help.get_or_insert(line);
                current = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split_whitespace().next().unwrap_or_default();
                family(&mut families, name).kind.get_or_insert(line);
                current = Some(name);
            } else if let Some(name) = current {
                family(&mut families, name).lines.push(line);
            } else if !line.starts_with('#') {
                let name = line
                    .split(|c: char| c == '{' || c.is_whitespace())
                    .next()
                    .unwrap_or_default();
                family(&mut families, name).lines.push(line);
            }
        }
    }
    let mut out = String::new();
    for (_, family) in &families {
        for line in family.help.iter().chain(&family.kind).chain(&family.lines) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
#[path = "exposition_check.rs"]
mod exposition_check;

#[cfg(test)]
mod tests {
    use super::exposition_check::parse_exposition;
    use crate::metrics::EventMetrics;
    use std::collections::HashMap;
    use std::time::Duration;

    /// The extra label's value is any text, escaped as the constant
    /// labels' values are (a caller's label, a broker's trigger name).
    #[test]
    fn a_series_extra_label_value_is_escaped() {
        use super::PrometheusLabels;
        let value = "a\"b\\c\nd";
        let escaped = "a\\\"b\\\\c\\nd";
        let none = PrometheusLabels::default();
        assert_eq!(
            none.series("x", Some(("k", value))),
            format!("x{{k=\"{escaped}\"}}")
        );
        let some = PrometheusLabels::new([("bus", value)]).unwrap();
        assert_eq!(
            some.series("x", Some(("k", value))),
            format!("x{{bus=\"{escaped}\",k=\"{escaped}\"}}")
        );
        let text = format!(
            "# HELP x h\n# TYPE x counter\n{} 1\n",
            some.series("x", Some(("k", value)))
        );
        let samples = parse_exposition(&text);
        assert_eq!(samples.len(), 1, "{text}");
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

    /// Constant labels go on every sample, next to `le` and `quantile`,
    /// escaped; the exposition stays valid and has the same samples.
    #[test]
    fn constant_labels_are_on_every_sample_and_escaped() {
        use super::PrometheusLabels;
        let m = EventMetrics::new();
        m.record_publish(Duration::from_micros(250));
        let labels = PrometheusLabels::new([("bus", "orders"), ("zone", "a\"b\\c\nd")]).unwrap();
        let text = m.snapshot().to_prometheus_with_labels(&labels);
        let labelled = parse_exposition(&text);
        let plain = parse_exposition(&m.snapshot().to_prometheus());
        assert_eq!(labelled.len(), plain.len());
        let set = r#"bus="orders",zone="a\"b\\c\nd""#;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains(&format!("{{{set}")), "{line}");
        }
        assert_eq!(labelled[&format!("a3s_event_publish_total{{{set}}}")], 1.0);
        assert_eq!(
            labelled[&format!("a3s_event_publish_duration_seconds_bucket{{{set},le=\"+Inf\"}}")],
            1.0
        );
        // no labels: the plain exposition, byte for byte
        assert_eq!(
            m.snapshot()
                .to_prometheus_with_labels(&PrometheusLabels::default()),
            m.snapshot().to_prometheus()
        );
        for bad in [
            vec![("", "x")],
            vec![("1bus", "x")],
            vec![("bus-name", "x")],
            vec![("__name__", "x")],
            vec![("le", "x")],
            vec![("quantile", "x")],
            vec![("bus", "a"), ("bus", "b")],
        ] {
            let err = PrometheusLabels::new(bad.clone()).unwrap_err();
            assert!(
                matches!(err, event_core::Error::InvalidConfig { .. }),
                "{bad:?}: {err}"
            );
        }
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

    /// Two buses' texts, concatenated, repeat every family's HELP and
    /// TYPE (strict parsers refuse the page); merged, each family is
    /// declared once with both buses' samples, histograms included.
    #[test]
    fn merged_expositions_declare_each_family_once() {
        let (a, b) = (EventMetrics::new(), EventMetrics::new());
        a.record_publish(std::time::Duration::from_micros(40));
        b.add_handled(3);
        b.record_publish(std::time::Duration::from_millis(2));
        let label = |bus| super::PrometheusLabels::new([("bus", bus)]).unwrap();
        let texts = [
            a.snapshot().to_prometheus_with_labels(&label("a")),
            b.snapshot().to_prometheus_with_labels(&label("b")),
        ];
        let concatenated = texts.concat();
        let refused = std::panic::catch_unwind(|| parse_exposition(&concatenated))
            .expect_err("the concatenation is refused");
        let why = refused
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(why.contains("second HELP"), "{why}");

        let merged = super::merge_expositions(&texts);
        let samples = parse_exposition(&merged);
        let alone = parse_exposition(&texts[0]).len() + parse_exposition(&texts[1]).len();
        assert_eq!(samples.len(), alone, "every sample kept");
        assert_eq!(samples["a3s_event_publish_total{bus=\"a\"}"], 1.0);
        assert_eq!(samples["a3s_event_handled_total{bus=\"b\"}"], 3.0);
        assert_eq!(
            samples["a3s_event_publish_duration_seconds_count{bus=\"b\"}"],
            1.0
        );
        assert_eq!(
            merged.matches("# HELP ").count(),
            texts[0].matches("# HELP ").count()
        );
        // a text without headers, and blank lines: kept as families of
        // their own
        let merged = super::merge_expositions(["\nup 1\n\n", texts[0].as_str()]);
        assert!(merged.starts_with("up 1\n# HELP "), "{merged}");
        assert!(super::merge_expositions(Vec::<String>::new()).is_empty());
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
        let dropped = help(&text, "a3s_event_dlq_dropped_total");
        assert!(dropped.contains("no DLQ handler"), "{dropped}");
        // an unreadable dead letter is terminated, never dead-lettered again
        assert!(dropped.contains("not dead-lettered again"), "{dropped}");
        assert!(help(&text, "a3s_event_dlq_unsettled_total").contains("left unsettled"));
        // a router refusal is not a failed publish
        assert!(
            help(&text, "a3s_event_publish_errors_total").contains("before the provider stored")
        );
        assert!(help(&text, "a3s_event_router_errors_total").contains("publish_total too"));
        // a stall is counted per run, and the run is not cancelled
        let stalls = help(&text, "a3s_event_handler_stalls_total");
        assert!(
            stalls.contains("STALL_THRESHOLD (60 s)")
                && stalls.contains("once per run")
                && stalls.contains("not cancelled"),
            "{stalls}"
        );
        // a failed save is a refused change
        assert!(help(&text, "a3s_event_state_save_errors_total").contains("not applied"));
    }

    /// Extremes stay a valid exposition: every counter at `u64::MAX`, a
    /// zero duration, durations on each fixed bound and one past it, and
    /// `Duration::MAX` (a saturated sum): the buckets are cumulative, the
    /// `+Inf` bucket is `_count`, and every value parses.
    #[test]
    fn extreme_values_stay_a_valid_exposition() {
        let m = EventMetrics::new();
        let counters = m.snapshot().counters().len();
        // every counter (a number at the top of the JSON) at u64::MAX
        let mut json = serde_json::to_value(m.snapshot()).unwrap();
        for (_, value) in json.as_object_mut().unwrap() {
            if value.is_u64() {
                *value = serde_json::json!(u64::MAX);
            }
        }
        let mut snapshot: crate::metrics::MetricsSnapshot = serde_json::from_value(json).unwrap();
        assert!(snapshot.counters().iter().all(|&(_, _, v)| v == u64::MAX));
        let h = m.publish_latency();
        h.record(Duration::ZERO);
        for k in 0..crate::metrics::LATENCY_BUCKETS {
            let bound = crate::metrics::LatencyBuckets::bound_ns(k);
            h.record_nanos(bound);
            h.record_nanos(bound + 1);
        }
        h.record(Duration::MAX);
        snapshot.publish_latency = h.summary();
        let text = snapshot.to_prometheus();
        let samples = parse_exposition(&text);
        let n = 2 + 2 * crate::metrics::LATENCY_BUCKETS;
        let hist = "a3s_event_publish_duration_seconds";
        assert_eq!(samples[&format!("{hist}_count")], n as f64);
        assert_eq!(samples[&format!("{hist}_bucket{{le=\"+Inf\"}}")], n as f64);
        // zero and the first bound in the first bucket
        assert_eq!(
            samples[&format!("{hist}_bucket{{le=\"0.000001023\"}}")],
            2.0
        );
        assert_eq!(samples[&format!("{hist}_sum")], u64::MAX as f64 / 1e9);
        assert_eq!(
            samples["a3s_event_publish_latency_max_seconds"],
            u64::MAX as f64 / 1e9
        );
        let maxed = samples
            .iter()
            .filter(|(k, v)| k.ends_with("_total") && **v == u64::MAX as f64)
            .count();
        assert_eq!(maxed, counters);
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
            "handler_stalls",
            "state_save_errors",
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
