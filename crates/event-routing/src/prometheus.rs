//! Prometheus text exposition (format 0.0.4) shared by the broker's, a
//! feed's and a webhook's `to_prometheus`, with the conventions of
//! `event_bus`'s: constant labels from a
//! [`PrometheusLabels`](event_bus::metrics::PrometheusLabels) on every
//! sample, one `# HELP` (a counter's documentation without Markdown) and
//! one `# TYPE` per family.

use event_bus::metrics::PrometheusLabels;
use std::fmt::Write as _;

/// The label of per-trigger series (`trigger="orders"`).
pub(crate) const TRIGGER_LABEL: &str = "trigger";

/// A family's type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// Writes the `# HELP` and `# TYPE` lines of `metric`.
pub(crate) fn write_header(out: &mut String, metric: &str, doc: &str, kind: Kind) {
    // writing to a String cannot fail
    let _ = writeln!(out, "# HELP {metric} {}", help_text(doc));
    let _ = writeln!(out, "# TYPE {metric} {}", kind.as_str());
}

/// Writes a family of one sample, `metric` with `labels`.
pub(crate) fn write_family(
    out: &mut String,
    labels: &PrometheusLabels,
    metric: &str,
    doc: &str,
    kind: Kind,
    value: u64,
) {
    write_header(out, metric, doc, kind);
    // writing to a String cannot fail
    let _ = writeln!(out, "{} {value}", labels.series(metric, None));
}

/// A documentation as a HELP text: Markdown link targets and code marks
/// taken out, on one line, backslashes escaped.
pub(crate) fn help_text(doc: &str) -> String {
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

/// Whether `labels` has a label named `name` (read from a series it
/// renders: `x{a="v",b="w"}`, values escaped).
pub(crate) fn has_label(labels: &PrometheusLabels, name: &str) -> bool {
    let series = labels.series("x", None);
    let Some(list) = series
        .strip_prefix("x{")
        .and_then(|rest| rest.strip_suffix('}'))
    else {
        return false;
    };
    let mut rest = list;
    while let Some((label, after)) = rest.split_once("=\"") {
        if label == name {
            return true;
        }
        // skip the value: up to its closing, unescaped quote
        let mut escaped = false;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        rest = after
            .get(end + 1..)
            .map_or("", |r| r.strip_prefix(',').unwrap_or(r));
    }
    false
}

#[cfg(test)]
#[path = "../../event-bus/src/metrics/exposition_check.rs"]
pub(crate) mod exposition_check;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_label_reads_names_not_values() {
        let labels = PrometheusLabels::new([
            ("broker", "x\",trigger=\"y"),
            ("zone", "a\\\\"),
            ("trigger", "t"),
        ])
        .unwrap();
        assert!(has_label(&labels, "trigger"));
        assert!(has_label(&labels, "zone"));
        assert!(has_label(&labels, "broker"));
        let labels =
            PrometheusLabels::new([("broker", "x\",trigger=\"y"), ("zone", "\\")]).unwrap();
        assert!(!has_label(&labels, "trigger"));
        assert!(!has_label(&PrometheusLabels::default(), "trigger"));
    }
}
