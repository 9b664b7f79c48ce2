//! Filters: every kind and composition, and the index against brute force.

#![allow(clippy::unwrap_used)] // test helpers

use event_core::Event;
use event_routing::{Broker, CollectorSink, FilterExpr, Trigger, TriggerFilter};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;

fn order(event_type: &str, source: &str, subject: &str) -> Event {
    Event::typed(subject, "orders", event_type, 1, "s", source, json!({}))
}

fn matches(filter: TriggerFilter, event: &Event) -> bool {
    filter.compile().unwrap().matches(event)
}

#[test]
fn empty_filter_matches_everything() {
    assert!(matches(TriggerFilter::all(), &order("", "", "events.a.b")));
}

#[test]
fn by_type_source_subject_and_attribute() {
    let e = order("order.created", "shop", "events.orders.created").with_metadata("region", "eu");
    assert!(matches(TriggerFilter::by_type("order.created"), &e));
    assert!(!matches(TriggerFilter::by_type("order.paid"), &e));
    assert!(matches(TriggerFilter::by_source("shop"), &e));
    assert!(!matches(TriggerFilter::by_source("shop2"), &e));
    assert!(matches(TriggerFilter::by_subject("events.orders.*"), &e));
    assert!(matches(TriggerFilter::by_subject("events.>"), &e));
    assert!(!matches(TriggerFilter::by_subject("events.orders"), &e));
    assert!(!matches(TriggerFilter::by_subject("events.payments.>"), &e));
    assert!(matches(
        TriggerFilter::all().with_attribute("region", "eu"),
        &e
    ));
    assert!(!matches(
        TriggerFilter::all().with_attribute("region", "us"),
        &e
    ));
    assert!(!matches(
        TriggerFilter::all().with_attribute("tier", "eu"),
        &e
    ));
}

#[test]
fn conditions_combine_with_and() {
    let e = order("order.created", "shop", "events.orders.created").with_metadata("region", "eu");
    let f = TriggerFilter::by_type("order.created")
        .with_source("shop")
        .with_subject("events.orders.>")
        .with_attribute("region", "eu");
    assert!(matches(f.clone(), &e));
    assert!(!matches(f.clone().with_source("other"), &e));
    assert!(!matches(f.clone().with_attribute("region", "us"), &e));
    assert!(!matches(
        f.with_filter(FilterExpr::exact("type", "order.paid")),
        &e
    ));
}

#[test]
fn exact_prefix_suffix_on_core_attributes_and_metadata() {
    let e =
        order("order.created", "shop-eu", "events.orders.created").with_metadata("tier", "gold");
    let cases = [
        (FilterExpr::exact("type", "order.created"), true),
        (FilterExpr::exact("type", "order"), false),
        (FilterExpr::exact("id", e.id.clone()), true),
        (FilterExpr::exact("category", "orders"), true),
        (FilterExpr::exact("tier", "gold"), true),
        (FilterExpr::exact("missing", "x"), false),
        (FilterExpr::prefix("type", "order."), true),
        (FilterExpr::prefix("type", "payment."), false),
        (FilterExpr::prefix("subject", "events.orders"), true),
        (FilterExpr::prefix("tier", "go"), true),
        (FilterExpr::prefix("missing", "x"), false),
        (FilterExpr::suffix("missing", "x"), false),
        (FilterExpr::suffix("source", "-eu"), true),
        (FilterExpr::suffix("source", "-us"), false),
        (FilterExpr::suffix("tier", "old"), true),
    ];
    for (expr, expected) in cases {
        assert_eq!(expr.matches(&e), expected, "{expr:?}");
        assert_eq!(
            matches(TriggerFilter::all().with_filter(expr.clone()), &e),
            expected,
            "{expr:?} in a trigger filter"
        );
    }
}

#[test]
fn a_map_with_several_entries_requires_all() {
    let e = order("t", "s", "events.a.b");
    let both: FilterExpr =
        serde_json::from_value(json!({"exact": {"type": "t", "source": "s"}})).unwrap();
    assert!(both.matches(&e));
    let one_wrong: FilterExpr =
        serde_json::from_value(json!({"exact": {"type": "t", "source": "x"}})).unwrap();
    assert!(!one_wrong.matches(&e));
}

#[test]
fn all_any_not_compose() {
    let e = order("order.created", "shop", "events.orders.created");
    let t = FilterExpr::exact("type", "order.created");
    let f = FilterExpr::exact("type", "nope");
    assert!(FilterExpr::all([t.clone(), t.clone()]).matches(&e));
    assert!(!FilterExpr::all([t.clone(), f.clone()]).matches(&e));
    assert!(FilterExpr::any([f.clone(), t.clone()]).matches(&e));
    assert!(!FilterExpr::any([f.clone(), f.clone()]).matches(&e));
    assert!(FilterExpr::not(f.clone()).matches(&e));
    assert!(!FilterExpr::not(t.clone()).matches(&e));
    // Nested: all(any(f, not(f)), not(all(t, f)))
    let nested = FilterExpr::all([
        FilterExpr::any([f.clone(), FilterExpr::not(f.clone())]),
        FilterExpr::not(FilterExpr::all([t.clone(), f.clone()])),
    ]);
    assert!(nested.matches(&e));
    assert!(!FilterExpr::not(nested).matches(&e));
}

#[test]
fn cloudevents_extensions_of_foreign_events_match_by_their_cloudevents_name() {
    // A foreign CloudEvent's extension `tenant` is metadata `ce-tenant`.
    let foreign = order("invoice.paid", "/billing", "events.billing.paid")
        .with_metadata("ce-tenant", "acme-eu");
    for expr in [
        FilterExpr::exact("tenant", "acme-eu"),
        FilterExpr::prefix("tenant", "acme"),
        FilterExpr::suffix("tenant", "-eu"),
        FilterExpr::not(FilterExpr::exact("tenant", "other")),
    ] {
        assert!(
            matches(TriggerFilter::all().with_filter(expr.clone()), &foreign),
            "{expr:?}"
        );
    }
    assert!(!matches(
        TriggerFilter::all().with_filter(FilterExpr::not(FilterExpr::exact("tenant", "acme-eu"))),
        &foreign
    ));
    // The event's own metadata key comes first.
    let both = foreign.clone().with_metadata("tenant", "globex");
    assert!(matches(
        TriggerFilter::all().with_filter(FilterExpr::exact("tenant", "globex")),
        &both
    ));
    assert!(!matches(
        TriggerFilter::all().with_filter(FilterExpr::exact("tenant", "acme-eu")),
        &both
    ));
    // Through the index (the exact condition is the trigger's index key).
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    for (name, tenant) in [("acme", "acme-eu"), ("globex", "globex")] {
        broker
            .add_trigger(Trigger::new(
                name,
                TriggerFilter::all().with_filter(FilterExpr::exact("tenant", tenant)),
                sink.clone(),
            ))
            .unwrap();
    }
    assert_eq!(broker.matching_triggers(&foreign), ["acme"]);
    assert_eq!(broker.matching_triggers(&both), ["globex"]);
    // `with_attribute` is about the event's metadata keys only.
    assert!(!matches(
        TriggerFilter::all().with_attribute("tenant", "acme-eu"),
        &foreign
    ));
}

#[test]
fn knative_json_round_trips() {
    let raw = json!({"any": [
        {"exact": {"type": "a"}},
        {"all": [{"prefix": {"source": "svc-"}}, {"not": {"suffix": {"subject": ".test"}}}]}
    ]});
    let expr: FilterExpr = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(serde_json::to_value(&expr).unwrap(), raw);
}

#[test]
fn unsupported_knative_filter_shapes_do_not_deserialize() {
    // One dialect per object, as in Knative; no CESQL.
    for raw in [
        json!({"cesql": "type = 'order.created'"}),
        json!({"exact": {"type": "a"}, "prefix": {"source": "b"}}),
        json!({"exact": {"type": 1}}),
        json!({"not": [{"exact": {"type": "a"}}]}),
    ] {
        assert!(
            serde_json::from_value::<FilterExpr>(raw.clone()).is_err(),
            "{raw}"
        );
    }
    let err = serde_json::from_value::<FilterExpr>(json!({"cesql": "true"})).unwrap_err();
    assert!(err.to_string().contains("cesql"), "{err}");
}

#[test]
fn invalid_filters_are_typed_errors() {
    let bad_subject = TriggerFilter::by_subject("events.>.x")
        .compile()
        .unwrap_err();
    assert!(matches!(
        bad_subject,
        event_core::Error::InvalidSubject { .. }
    ));
    for expr in [
        FilterExpr::All(vec![]),
        FilterExpr::Any(vec![]),
        FilterExpr::Exact(Default::default()),
        FilterExpr::prefix("", "x"),
        FilterExpr::not(FilterExpr::Suffix(Default::default())),
    ] {
        let err = TriggerFilter::all()
            .with_filter(expr)
            .compile()
            .unwrap_err();
        assert!(
            matches!(err, event_core::Error::InvalidConfig { .. }),
            "{err}"
        );
    }
    let err = Broker::new()
        .add_trigger(Trigger::new(
            "t",
            TriggerFilter::by_subject("bad subject"),
            Arc::new(CollectorSink::new("c")),
        ))
        .unwrap_err();
    assert!(matches!(err, event_core::Error::InvalidSubject { .. }));
}

#[test]
fn empty_values_in_exact_prefix_suffix_are_refused_as_knative_does() {
    // Knative refuses an empty value in `exact`, `prefix` and `suffix` ("the
    // attribute name and value cannot be empty strings"). Here they were
    // accepted: an empty prefix or suffix matched every event having the
    // attribute, so a filter read from Knative-style configuration with a
    // value left blank routed everything instead of being refused.
    let blank = [
        FilterExpr::exact("type", ""),
        FilterExpr::prefix("type", ""),
        FilterExpr::suffix("source", ""),
        FilterExpr::not(FilterExpr::prefix("tenant", "")),
        FilterExpr::any([
            FilterExpr::exact("type", "a"),
            FilterExpr::suffix("type", ""),
        ]),
        FilterExpr::all([FilterExpr::Exact(
            [
                ("type".to_owned(), "a".to_owned()),
                ("source".to_owned(), String::new()),
            ]
            .into(),
        )]),
        serde_json::from_value(json!({"prefix": {"subject": ""}})).unwrap(),
    ];
    for expr in blank {
        let err = expr.validate().unwrap_err();
        assert!(
            matches!(&err, event_core::Error::InvalidConfig { field, .. } if field.starts_with("filters.")),
            "{expr:?}: {err}"
        );
        assert!(err.to_string().contains("empty"), "{err}");
        let err = Broker::new()
            .add_trigger(Trigger::new(
                "t",
                TriggerFilter::all().with_filter(expr.clone()),
                Arc::new(CollectorSink::new("c")),
            ))
            .unwrap_err();
        assert!(
            matches!(err, event_core::Error::InvalidConfig { .. }),
            "{expr:?}: {err}"
        );
    }
}

#[test]
fn an_empty_attribute_value_matches_any_value_as_in_knative() {
    // Knative's `filter.attributes`: "you can use the value '' to indicate
    // all strings match" (the attribute must still be present). Here
    // `with_attribute("region", "")` matched only an empty `region`.
    let eu = order("t", "s", "events.a.b").with_metadata("region", "eu");
    let blank = order("t", "s", "events.a.b").with_metadata("region", "");
    let none = order("t", "s", "events.a.b");
    let any_region = TriggerFilter::all().with_attribute("region", "");
    assert!(matches(any_region.clone(), &eu));
    assert!(matches(any_region.clone(), &blank));
    assert!(!matches(any_region.clone(), &none));
    // Next to an exact attribute, and through the broker's index.
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    for (name, filter) in [
        ("any-region", any_region),
        (
            "any-region-gold",
            TriggerFilter::all()
                .with_attribute("region", "")
                .with_attribute("tier", "gold"),
        ),
        (
            "typed-any-tier",
            TriggerFilter::by_type("t").with_attribute("tier", ""),
        ),
    ] {
        broker
            .add_trigger(Trigger::new(name, filter, sink.clone()))
            .unwrap();
    }
    assert_eq!(broker.matching_triggers(&eu), ["any-region"]);
    assert_eq!(
        broker.matching_triggers(&eu.clone().with_metadata("tier", "gold")),
        ["any-region", "any-region-gold", "typed-any-tier"]
    );
    assert_eq!(
        broker.matching_triggers(&none.clone().with_metadata("tier", "")),
        ["typed-any-tier"]
    );
    assert!(broker.matching_triggers(&none).is_empty());
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const TYPES: &[&str] = &["a", "b", "c", "order.created", ""];
const SOURCES: &[&str] = &["s1", "s2", "svc-x", "svc-y"];
const TOKENS: &[&str] = &["orders", "payments", "created", "eu", "x"];
const KEYS: &[&str] = &["region", "tier"];
const VALUES: &[&str] = &["eu", "us", "gold"];

fn random_expr(rng: &mut Rng, depth: u32) -> FilterExpr {
    let attrs = ["type", "source", "subject", "region", "tier", "category"];
    let attr = rng.pick(&attrs);
    let value = match attr {
        "type" => rng.pick(TYPES).to_owned(),
        "source" => rng.pick(SOURCES).to_owned(),
        "subject" => format!("events.{}.{}", rng.pick(TOKENS), rng.pick(TOKENS)),
        "category" => rng.pick(TOKENS).to_owned(),
        _ => rng.pick(VALUES).to_owned(),
    };
    let kind = if depth == 0 {
        rng.below(3)
    } else {
        rng.below(6)
    };
    match kind {
        0 => FilterExpr::exact(attr, value),
        1 => FilterExpr::prefix(attr, &value[..value.len().div_ceil(2)]),
        2 => FilterExpr::suffix(attr, &value[value.len() / 2..]),
        3 => FilterExpr::all((0..1 + rng.below(3)).map(|_| random_expr(rng, depth - 1))),
        4 => FilterExpr::any((0..1 + rng.below(3)).map(|_| random_expr(rng, depth - 1))),
        _ => FilterExpr::not(random_expr(rng, depth - 1)),
    }
}

fn random_pattern(rng: &mut Rng) -> String {
    let len = 2 + rng.below(3);
    let mut tokens = vec!["events".to_owned()];
    for i in 1..len {
        let t = match rng.below(5) {
            0 => "*".to_owned(),
            1 if i == len - 1 => ">".to_owned(),
            _ => rng.pick(TOKENS).to_owned(),
        };
        tokens.push(t);
    }
    tokens.join(".")
}

fn random_filter(rng: &mut Rng) -> TriggerFilter {
    let mut f = TriggerFilter::all();
    if rng.below(3) == 0 {
        f = f.with_type(rng.pick(TYPES));
    }
    if rng.below(4) == 0 {
        f = f.with_source(rng.pick(SOURCES));
    }
    if rng.below(2) == 0 {
        f = f.with_subject(random_pattern(rng));
    }
    if rng.below(4) == 0 {
        f = f.with_attribute(rng.pick(KEYS), rng.pick(VALUES));
    }
    for _ in 0..rng.below(3) {
        f = f.with_filter(random_expr(rng, 2));
    }
    f
}

fn random_event(rng: &mut Rng) -> Event {
    let len = 1 + rng.below(4);
    let subject = std::iter::once("events".to_owned())
        .chain((0..len).map(|_| rng.pick(TOKENS).to_owned()))
        .collect::<Vec<_>>()
        .join(".");
    let mut e = Event::typed(
        subject,
        rng.pick(TOKENS),
        rng.pick(TYPES),
        1,
        "s",
        rng.pick(SOURCES),
        json!(null),
    );
    for key in KEYS {
        if rng.below(2) == 0 {
            e = e.with_metadata(*key, rng.pick(VALUES));
        }
    }
    e
}

#[test]
fn indexed_routing_equals_brute_force_on_random_filters_and_events() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    let mut filters = Vec::new();
    for i in 0..600 {
        let filter = random_filter(&mut rng);
        if filter.compile().is_err() {
            continue; // a blank `exact` / `prefix` / `suffix` value
        }
        broker
            .add_trigger(Trigger::new(format!("t{i}"), filter.clone(), sink.clone()))
            .unwrap();
        filters.push((format!("t{i}"), filter.compile().unwrap()));
    }
    let mut total = 0;
    for _ in 0..3000 {
        let event = random_event(&mut rng);
        let expected: BTreeSet<String> = filters
            .iter()
            .filter(|(_, f)| f.matches(&event))
            .map(|(n, _)| n.clone())
            .collect();
        let got: BTreeSet<String> = broker.matching_triggers(&event).into_iter().collect();
        assert_eq!(got, expected, "event {event:?}");
        total += expected.len();
    }
    // The generator must exercise matches, not only misses.
    assert!(total > 3000, "only {total} matches");
}

/// The index against brute force where attribute names collide: metadata
/// keys named like event fields (`type`, `id`, `subject`, ...), exact
/// filters on `id` and `category`, odd subjects (one token, empty tokens,
/// other prefixes) and several triggers with one key.
#[test]
fn indexed_routing_equals_brute_force_with_colliding_attribute_names() {
    const NAMES: &[&str] = &[
        "type", "source", "subject", "id", "category", "k", "ce-k", "ce-type", "ce-ce-k",
    ];
    const VALS: &[&str] = &["a", "b", "x.a", "a.b", ""];
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    let mut filters = Vec::new();
    let leaf = |rng: &mut Rng| {
        let name = rng.pick(NAMES);
        // Not "" (refused in expressions), which the attributes still get.
        let value = rng.pick(&VALS[..VALS.len() - 1]);
        match rng.below(3) {
            0 => FilterExpr::exact(name, value),
            1 => FilterExpr::prefix(name, value),
            _ => FilterExpr::suffix(name, value),
        }
    };
    for i in 0..400 {
        let mut f = TriggerFilter::all();
        if rng.below(4) == 0 {
            f = f.with_type(rng.pick(VALS));
        }
        if rng.below(4) == 0 {
            f = f.with_source(rng.pick(VALS));
        }
        if rng.below(3) == 0 {
            let pattern = ["a", "b", "*", "x", "a.*", "*.b", "a.>", "x.a.b", "*.>", ">"];
            f = f.with_subject(rng.pick(&pattern));
        }
        if rng.below(3) == 0 {
            f = f.with_attribute(rng.pick(NAMES), rng.pick(VALS));
        }
        for _ in 0..rng.below(3) {
            let expr = match rng.below(4) {
                0 => FilterExpr::all((0..1 + rng.below(3)).map(|_| leaf(&mut rng))),
                1 => FilterExpr::any((0..1 + rng.below(2)).map(|_| leaf(&mut rng))),
                2 => FilterExpr::not(leaf(&mut rng)),
                _ => leaf(&mut rng),
            };
            f = f.with_filter(expr);
        }
        if f.compile().is_err() {
            continue;
        }
        broker
            .add_trigger(Trigger::new(format!("t{i}"), f.clone(), sink.clone()))
            .unwrap();
        filters.push((format!("t{i}"), f.compile().unwrap()));
    }
    let subjects = ["a", "b", "x.a", "a.b", "x.a.b", "a..b", "", "a.b.c"];
    let mut total = 0;
    for _ in 0..4000 {
        let mut e = Event::typed(
            rng.pick(&subjects),
            rng.pick(VALS),
            rng.pick(VALS),
            1,
            "s",
            rng.pick(VALS),
            json!(null),
        );
        if rng.below(3) == 0 {
            e.id = rng.pick(VALS).to_owned();
        }
        for name in NAMES {
            if rng.below(3) == 0 {
                e = e.with_metadata(*name, rng.pick(VALS));
            }
        }
        let expected: BTreeSet<String> = filters
            .iter()
            .filter(|(_, f)| f.matches(&e))
            .map(|(n, _)| n.clone())
            .collect();
        let got: BTreeSet<String> = broker.matching_triggers(&e).into_iter().collect();
        assert_eq!(got, expected, "event {e:?}");
        total += expected.len();
    }
    assert!(total > 4000, "only {total} matches");
}

/// The index against brute force while the trigger set changes in batches:
/// random `add_triggers`, `remove_triggers` and `replace_trigger` (with a
/// different filter, so the replacement is filed under another key) on a
/// model of the registered triggers; after every change, random events
/// match exactly the triggers the model's filters select, in registration
/// order (a replacement keeps its place).
#[test]
fn indexed_routing_equals_brute_force_across_batches_of_trigger_changes() {
    let mut rng = Rng(0xA076_1D64_78BD_642F);
    let broker = Broker::new();
    let sink = Arc::new(CollectorSink::new("c"));
    let mut model: Vec<(String, TriggerFilter)> = Vec::new();
    let mut next = 0;
    let valid = |rng: &mut Rng| loop {
        let f = random_filter(rng);
        if f.compile().is_ok() {
            return f;
        }
    };
    let mut total = 0;
    for _ in 0..150 {
        match rng.below(3) {
            0 => {
                let batch: Vec<_> = (0..1 + rng.below(20))
                    .map(|_| {
                        next += 1;
                        (format!("t{next}"), valid(&mut rng))
                    })
                    .collect();
                broker
                    .add_triggers(
                        batch
                            .iter()
                            .map(|(n, f)| Trigger::new(n.clone(), f.clone(), sink.clone())),
                    )
                    .unwrap();
                model.extend(batch);
            }
            1 if !model.is_empty() => {
                let names: Vec<String> = (0..1 + rng.below(8))
                    .map(|_| model[rng.below(model.len() as u64) as usize].0.clone())
                    .chain(["never-added".to_owned()])
                    .collect();
                let distinct: BTreeSet<&String> = names.iter().collect();
                let distinct = distinct.len() - 1;
                assert_eq!(broker.remove_triggers(&names), distinct);
                model.retain(|(n, _)| !names.contains(n));
            }
            _ if !model.is_empty() => {
                let at = rng.below(model.len() as u64) as usize;
                let filter = valid(&mut rng);
                let name = model[at].0.clone();
                assert!(
                    broker
                        .replace_trigger(Trigger::new(name, filter.clone(), sink.clone()))
                        .unwrap()
                );
                model[at].1 = filter;
            }
            _ => continue,
        }
        let names: Vec<String> = model.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(broker.trigger_names(), names);
        let compiled: Vec<_> = model
            .iter()
            .map(|(n, f)| (n.clone(), f.compile().unwrap()))
            .collect();
        for _ in 0..40 {
            let event = random_event(&mut rng);
            let expected: Vec<String> = compiled
                .iter()
                .filter(|(_, f)| f.matches(&event))
                .map(|(n, _)| n.clone())
                .collect();
            assert_eq!(
                broker.matching_triggers(&event),
                expected,
                "event {event:?}"
            );
            total += expected.len();
        }
    }
    assert!(total > 1000, "only {total} matches");
}
