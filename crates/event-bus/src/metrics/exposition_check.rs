//! A strict checker of the Prometheus text exposition format 0.0.4, for
//! tests (included with `#[path]` by the tests of event-bus and
//! event-routing).
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

/// Checks `text` against the text exposition format 0.0.4: each family
/// has one `# HELP` and one `# TYPE` before its samples, names are valid,
/// samples belong to a declared family (summaries: the bare name with a
/// `quantile` label, `_sum`, `_count`; histograms: `_bucket` with an `le`
/// label, `_sum`, `_count`, and no bare name), a family's samples are
/// contiguous, label values are quoted, values are Prometheus floats.
/// A histogram's `le` bounds increase and end with `+Inf`, its bucket
/// counts never decrease, and the `+Inf` bucket equals `_count`.
/// Returns `sample -> value` (labels included in the key).
pub(crate) fn parse_exposition(text: &str) -> HashMap<String, f64> {
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
    let mut unlabelled: HashMap<String, f64> = HashMap::new();
    // families whose samples ended (another family's sample followed)
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    // `family|labels but le` of a histogram -> its (le, count) buckets in
    // order
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
        // the series' labels but `le`, which tell the label sets of one
        // family apart (several buses merged into one page)
        let mut others: Vec<String> = labels
            .iter()
            .filter(|(k, _)| **k != "le")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        others.sort();
        let others = others.join(",");
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
                    let list = buckets.entry(format!("{family}|{others}")).or_default();
                    if let Some(&(prev_le, prev)) = list.last() {
                        assert!(le > prev_le, "le does not increase: {line}");
                        assert!(value >= prev, "bucket counts decrease: {line}");
                    }
                    list.push((le, value));
                } else {
                    assert!(!labels.contains_key("le"), "{line}");
                }
            }
            _ => {}
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "repeated sample: {line}"
        );
        unlabelled.insert(format!("{name}|{others}"), value);
    }
    for (family, kind) in &types {
        if kind == "histogram" {
            assert!(
                buckets.keys().any(|k| k.starts_with(&format!("{family}|"))),
                "{family}: no buckets"
            );
        }
    }
    for (series, list) in &buckets {
        let (family, others) = series.split_once('|').unwrap();
        assert_eq!(
            list.last().unwrap().0,
            f64::INFINITY,
            "{series}: no +Inf bucket"
        );
        assert_eq!(
            list.last().unwrap().1,
            unlabelled[&format!("{family}_count|{others}")],
            "{series}: +Inf bucket is not _count"
        );
        assert!(
            unlabelled.contains_key(&format!("{family}_sum|{others}")),
            "{series}: no _sum"
        );
    }
    samples
}
