//! The trigger index: which triggers can possibly match an event.
//!
//! Each trigger is filed under one key (see `CompiledFilter::index_keys`),
//! the rarest among the triggers of the exact conditions it has: its exact
//! event type, a literal token of its subject pattern (with its position),
//! its exact source, an exact metadata attribute (of `with_attribute` with a
//! non-empty value, or of an `exact` expression, which also matches a
//! foreign CloudEvent's extension as metadata `ce-<name>`); of equally rare
//! ones, the first in that order (of subject tokens, the last). So 1,000
//! triggers of one type that each name their own tenant attribute are filed
//! by tenant, not all under the type. Filters with none of these (only
//! `prefix`, `any`, `not`, ...) go to a fallback list that every event is
//! checked against.
//!
//! Routing an event looks up its type, its source, each of its subject tokens
//! and its metadata entries, so only the triggers in those buckets and the
//! fallback list have their filters evaluated. Every trigger sits in exactly
//! one bucket; an event can reach an expression's bucket twice (through
//! `name` and `ce-name`), so the candidates are deduplicated and no candidate
//! is evaluated twice.

use crate::filter::{CompiledFilter, FOREIGN_PREFIX, IndexKey};
use event_core::Event;
use std::collections::HashMap;

/// Candidate lookup over a fixed set of filters (positions in a slice).
#[derive(Debug, Default)]
pub(crate) struct TriggerIndex {
    by_type: HashMap<Box<str>, Vec<usize>>,
    by_source: HashMap<Box<str>, Vec<usize>>,
    /// `by_subject[i]`: literal token at position `i` → triggers.
    by_subject: Vec<HashMap<Box<str>, Vec<usize>>>,
    /// metadata key → value → triggers.
    by_attribute: HashMap<Box<str>, HashMap<Box<str>, Vec<usize>>>,
    /// expression attribute name (metadata `name` or `ce-name`) → value →
    /// triggers.
    by_extension: HashMap<Box<str>, HashMap<Box<str>, Vec<usize>>>,
    fallback: Vec<usize>,
}

impl TriggerIndex {
    /// Builds the index over `filters`; ids are positions in the iterator.
    pub(crate) fn build<'a>(filters: impl IntoIterator<Item = &'a CompiledFilter>) -> Self {
        let keys: Vec<Vec<IndexKey>> = filters
            .into_iter()
            .map(CompiledFilter::index_keys)
            .collect();
        // how many filters could go under each key: each goes under its
        // rarest, so triggers that share a type (or a subject token) but
        // differ in another exact condition are told apart by that one
        let mut counts: HashMap<&IndexKey, usize> = HashMap::new();
        for key in keys.iter().flatten() {
            *counts.entry(key).or_default() += 1;
        }
        let chosen: Vec<Option<IndexKey>> = keys
            .iter()
            .map(|keys| {
                // `min_by_key` keeps the first of equals: the preferred kind
                keys.iter().min_by_key(|key| counts[key]).cloned()
            })
            .collect();
        let mut index = Self::default();
        for (id, key) in chosen.into_iter().enumerate() {
            match key {
                Some(IndexKey::Type(t)) => index.by_type.entry(t).or_default().push(id),
                Some(IndexKey::Source(s)) => index.by_source.entry(s).or_default().push(id),
                Some(IndexKey::SubjectToken(pos, token)) => {
                    if index.by_subject.len() <= pos {
                        index.by_subject.resize_with(pos + 1, HashMap::new);
                    }
                    index.by_subject[pos].entry(token).or_default().push(id);
                }
                Some(IndexKey::Attribute(k, v)) => index
                    .by_attribute
                    .entry(k)
                    .or_default()
                    .entry(v)
                    .or_default()
                    .push(id),
                Some(IndexKey::Extension(k, v)) => index
                    .by_extension
                    .entry(k)
                    .or_default()
                    .entry(v)
                    .or_default()
                    .push(id),
                None => index.fallback.push(id),
            }
        }
        index
    }

    /// Ids of the triggers that may match `event`, ascending, each once.
    pub(crate) fn candidates(&self, event: &Event, out: &mut Vec<usize>) {
        out.clear();
        out.extend_from_slice(&self.fallback);
        if let Some(ids) = self.by_type.get(event.event_type.as_str()) {
            out.extend_from_slice(ids);
        }
        if let Some(ids) = self.by_source.get(event.source.as_str()) {
            out.extend_from_slice(ids);
        }
        if !self.by_subject.is_empty() {
            for (pos, token) in event.subject.split('.').enumerate() {
                let Some(map) = self.by_subject.get(pos) else {
                    break;
                };
                if let Some(ids) = map.get(token) {
                    out.extend_from_slice(ids);
                }
            }
        }
        if !self.by_attribute.is_empty() {
            if self.by_attribute.len() <= event.metadata.len() {
                for (key, values) in &self.by_attribute {
                    if let Some(ids) = event
                        .metadata
                        .get(&**key)
                        .and_then(|v| values.get(v.as_str()))
                    {
                        out.extend_from_slice(ids);
                    }
                }
            } else {
                for (key, value) in &event.metadata {
                    if let Some(ids) = self
                        .by_attribute
                        .get(key.as_str())
                        .and_then(|values| values.get(value.as_str()))
                    {
                        out.extend_from_slice(ids);
                    }
                }
            }
        }
        if !self.by_extension.is_empty() {
            let mut lookup = |name: &str, value: &str| {
                if let Some(ids) = self.by_extension.get(name).and_then(|v| v.get(value)) {
                    out.extend_from_slice(ids);
                }
            };
            for (key, value) in &event.metadata {
                lookup(key, value);
                if let Some(name) = key.strip_prefix(FOREIGN_PREFIX) {
                    lookup(name, value);
                }
            }
            out.sort_unstable();
            out.dedup();
            return;
        }
        out.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FilterExpr, TriggerFilter};
    use serde_json::json;

    fn compile(filters: &[TriggerFilter]) -> Vec<CompiledFilter> {
        filters.iter().map(|f| f.compile().unwrap()).collect()
    }

    #[test]
    fn files_each_filter_under_its_most_selective_key() {
        let filters = compile(&[
            TriggerFilter::by_type("a").with_source("s"),
            TriggerFilter::by_subject("events.orders.>"),
            TriggerFilter::by_source("s"),
            TriggerFilter::all().with_attribute("region", "eu"),
            TriggerFilter::all().with_filter(FilterExpr::prefix("type", "a")),
            TriggerFilter::by_subject("events.*.>"),
        ]);
        let index = TriggerIndex::build(&filters);
        assert_eq!(index.by_type["a"], vec![0]);
        assert_eq!(index.by_subject[1]["orders"], vec![1]);
        assert_eq!(index.by_subject[0]["events"], vec![5]);
        assert_eq!(index.by_source["s"], vec![2]);
        assert_eq!(index.by_attribute["region"]["eu"], vec![3]);
        assert_eq!(index.fallback, vec![4]);
    }

    #[test]
    fn triggers_sharing_a_type_are_filed_by_their_rarer_condition() {
        // per-tenant triggers of one type: filed by tenant, not all under
        // the type; a trigger whose type is rarer stays under its type
        let mut filters: Vec<_> = (0..100)
            .map(|i| {
                TriggerFilter::by_type("order.created").with_attribute("tenant", format!("t{i}"))
            })
            .collect();
        filters.push(TriggerFilter::by_type("audit").with_attribute("tenant", "t7"));
        filters.extend((0..50).map(|i| TriggerFilter::by_subject(format!("events.t{i}.orders"))));
        let compiled = compile(&filters);
        let index = TriggerIndex::build(&compiled);
        assert!(!index.by_type.contains_key("order.created"));
        assert_eq!(index.by_type["audit"], vec![100]);
        assert_eq!(index.by_attribute["tenant"]["t42"], vec![42]);
        // `orders` is shared by all 50: each is filed by its tenant token
        assert_eq!(index.by_subject[1]["t3"], vec![104]);
        let event =
            event_core::Event::typed("events.x.y", "x", "order.created", 1, "", "s", json!(null))
                .with_metadata("tenant", "t42");
        let mut out = Vec::new();
        index.candidates(&event, &mut out);
        assert_eq!(out, vec![42]);
    }

    #[test]
    fn candidates_skip_filters_that_cannot_match() {
        let filters: Vec<_> = (0..100)
            .map(|i| TriggerFilter::by_type(format!("t{i}")))
            .collect();
        let compiled = compile(&filters);
        let index = TriggerIndex::build(&compiled);
        let event = event_core::Event::typed("events.a.b", "a", "t42", 1, "", "x", json!(null));
        let mut out = Vec::new();
        index.candidates(&event, &mut out);
        assert_eq!(out, vec![42]);
    }
}
