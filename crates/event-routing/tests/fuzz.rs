//! Seeded random-input hunt over what event-routing reads from
//! configuration and events: Knative filter expressions (JSON), trigger
//! filters, cron expressions, delivery specs and the scaling payloads. See
//! event-core's `tests/fuzz_support` for the knobs (`A3S_FUZZ_ITERS`, ...).
#![allow(clippy::unwrap_used)]

#[path = "../../event-core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use chrono::{DateTime, Utc};
use event_core::{Error, Event};
use event_routing::scaling::{
    InstanceHealthPayload, InstanceReadyPayload, InstanceStoppedPayload, ScaleDownPayload,
    ScaleUpPayload,
};
use event_routing::{
    BackoffPolicy, DeliverySpec, FilterExpr, ScalingEvent, Schedule, TriggerFilter,
};
use fuzz_support::{Rng, mutate_bytes, mutate_json, mutate_text, random_string, run};
use serde_json::json;
use std::time::Duration;

fn expr(rng: &mut Rng, depth: usize) -> FilterExpr {
    let attr = |rng: &mut Rng| {
        (*rng.pick(&[
            "type", "source", "subject", "id", "category", "region", "ce-x", "", "é",
        ]))
        .to_owned()
    };
    match rng.below(if depth == 0 { 3 } else { 6 }) {
        0 => FilterExpr::exact(attr(rng), random_string(rng)),
        1 => FilterExpr::prefix(attr(rng), random_string(rng)),
        2 => FilterExpr::suffix(attr(rng), random_string(rng)),
        3 => FilterExpr::all((0..rng.below(3)).map(|_| expr(rng, depth - 1))),
        4 => FilterExpr::any((0..rng.below(3)).map(|_| expr(rng, depth - 1))),
        _ => FilterExpr::not(expr(rng, depth - 1)),
    }
}

fn event(rng: &mut Rng) -> Event {
    let mut e = Event::typed(
        *rng.pick(&["events.a.b", "events.orders.created", "x"]),
        "a",
        random_string(rng),
        1,
        "s",
        random_string(rng),
        json!(null),
    );
    for _ in 0..rng.below(3) {
        e.metadata.insert(
            (*rng.pick(&["region", "ce-x", "é"])).to_owned(),
            random_string(rng),
        );
    }
    e
}

#[test]
fn filter_expressions_decode_validate_and_match_without_panicking() {
    run("routing/filters", 4000, |rng| {
        let e = expr(rng, 4);
        let text = serde_json::to_string(&e).unwrap();
        let back: FilterExpr = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        let ev = event(rng);
        let _ = e.matches(&ev);
        if let Err(err) = e.validate() {
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        }
        // hostile JSON
        let mut bytes = text.into_bytes();
        mutate_bytes(rng, &mut bytes);
        if let Ok(decoded) = serde_json::from_slice::<FilterExpr>(&bytes) {
            let _ = decoded.validate();
            let _ = decoded.matches(&ev);
        }
        let mut value = serde_json::to_value(&e).unwrap();
        mutate_json(rng, &mut value);
        if let Ok(decoded) = serde_json::from_value::<FilterExpr>(value) {
            let filter = TriggerFilter::all().with_filter(decoded.clone());
            match filter.compile() {
                Ok(compiled) => assert_eq!(compiled.matches(&ev), decoded.matches(&ev)),
                Err(err) => assert!(
                    matches!(
                        err,
                        Error::InvalidConfig { .. } | Error::InvalidSubject { .. }
                    ),
                    "{err:?}"
                ),
            }
        }
    });
}

#[test]
fn trigger_filters_compile_or_refuse_and_agree_with_their_parts() {
    run("routing/trigger-filters", 4000, |rng| {
        let mut f = TriggerFilter::all();
        if rng.one_in(2) {
            f = f.with_type(random_string(rng));
        }
        if rng.one_in(2) {
            f = f.with_source(random_string(rng));
        }
        if rng.one_in(2) {
            let base = *rng.pick(&["events.>", "events.*.b", "a.b"]);
            let pattern = mutate_text(rng, base);
            f = f.with_subject(pattern);
        }
        if rng.one_in(3) {
            f = f.with_attribute(random_string(rng), random_string(rng));
        }
        if rng.one_in(2) {
            f = f.with_filter(expr(rng, 3));
        }
        match f.compile() {
            Ok(compiled) => {
                let ev = event(rng);
                let expected = f.event_type().is_none_or(|t| t == ev.event_type)
                    && f.source().is_none_or(|s| s == ev.source)
                    && f.filters().iter().all(|x| x.matches(&ev));
                if compiled.matches(&ev) {
                    assert!(expected, "{f:?} matched {ev:?}");
                }
            }
            Err(err) => assert!(
                matches!(
                    err,
                    Error::InvalidConfig { .. } | Error::InvalidSubject { .. }
                ),
                "{err:?}"
            ),
        }
    });
}

#[test]
fn cron_expressions_are_parsed_or_refused_without_panicking_or_hanging() {
    const FIELDS: &[&str] = &[
        "*",
        "0",
        "59",
        "60",
        "*/0",
        "*/1",
        "*/61",
        "5-1",
        "1-5",
        "0-4294967295",
        "1,2,3",
        "MON-FRI",
        "fri-sun",
        "7",
        "8",
        "0/7",
        "?",
        "L",
        "W",
        "#",
        "SUN#2",
        "2100",
        "1970-2099",
        "2000-2001",
        "31",
        "29",
        "2",
        "FEB",
        "JAN-DEC",
        "-1",
        "",
        "99999999999999999999",
        "1/4294967296",
        "*/",
        "/5",
        "1-",
        "-",
        ",",
        "a",
    ];
    let now: DateTime<Utc> = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    run("routing/cron", 3000, |rng| {
        let expression = match rng.below(4) {
            0 => {
                let n = *rng.pick(&[5usize, 6, 7, 4, 8]);
                (0..n)
                    .map(|_| *rng.pick(FIELDS))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            1 => rng
                .pick(&[
                    "@hourly",
                    "@daily",
                    "@weekly",
                    "@monthly",
                    "@yearly",
                    "@reboot",
                    "@",
                    "@every 5s",
                ])
                .to_string(),
            2 => {
                let base = *rng.pick(&[
                    "0 */5 * * * *",
                    "30 9 * * MON-FRI",
                    "0 0 13 * 5",
                    "0 0 0 1 1 * 2099",
                ]);
                mutate_text(rng, base)
            }
            _ => random_string(rng),
        };
        let started = std::time::Instant::now();
        match Schedule::cron(&expression) {
            Ok(schedule) => {
                let mut at = now;
                for _ in 0..3 {
                    match schedule.next_after(at) {
                        Some(next) => {
                            assert!(next > at, "{expression:?}: {next} after {at}");
                            at = next;
                        }
                        None => break,
                    }
                }
                for edge in edges() {
                    if let Some(next) = schedule.next_after(edge) {
                        assert!(next > edge, "{expression:?}: {next} after {edge}");
                    }
                }
            }
            Err(err) => assert!(
                matches!(err, Error::InvalidConfig { .. }),
                "{expression:?}: {err:?}"
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{expression:?} took {:?}",
            started.elapsed()
        );
    });
}

#[test]
fn delivery_delays_never_overflow() {
    run("routing/delivery", 4000, |rng| {
        let d = |rng: &mut Rng| {
            Duration::new(
                rng.next_u64() >> rng.below(64),
                (rng.next_u64() % 1_000_000_000) as u32,
            )
        };
        let spec = DeliverySpec::new()
            .with_retries(rng.next_u64() as u32)
            .with_backoff(
                if rng.one_in(2) {
                    BackoffPolicy::Linear
                } else {
                    BackoffPolicy::Exponential
                },
                d(rng),
            )
            .with_backoff_cap(d(rng))
            .with_retry_after_max(d(rng))
            .with_timeout(rng.one_in(2).then(|| d(rng)));
        let _ = spec.validate();
        for retry in [0, 1, 2, 31, 32, 33, 64, u32::MAX, rng.next_u64() as u32] {
            let delay = spec.delay_before_retry(retry);
            assert!(delay <= spec.delay_before_retry(retry.saturating_add(1)).max(delay));
            let _ = spec.delay_honouring_retry_after(retry, Some(d(rng)));
        }
        let _ = Schedule::every(d(rng));
    });
}

fn check_scaling<T: ScalingEvent + PartialEq + std::fmt::Debug>(rng: &mut Rng, sample: T) {
    let event = match sample.to_event("fuzz") {
        Ok(e) => e,
        Err(err) => {
            assert!(matches!(err, Error::SchemaValidation { .. }), "{err:?}");
            return;
        }
    };
    assert_eq!(T::from_event(&event).unwrap(), sample);
    let mut hostile = event.clone();
    mutate_json(rng, &mut hostile.payload);
    if rng.one_in(5) {
        hostile.event_type = mutate_text(rng, &hostile.event_type);
    }
    match T::from_event(&hostile) {
        Ok(read) => {
            // what reads back is valid and converts again
            read.validate().unwrap();
            assert_eq!(
                T::from_event(&read.to_event("fuzz").unwrap()).unwrap(),
                read
            );
        }
        Err(err) => assert!(
            matches!(
                err,
                Error::SchemaValidation { .. } | Error::Serialization(_)
            ),
            "{err:?}"
        ),
    }
}

#[test]
fn scaling_payloads_read_back_or_are_refused() {
    run("routing/scaling", 3000, |rng| {
        let s = |rng: &mut Rng| random_string(rng);
        match rng.below(5) {
            0 => {
                let p = ScaleUpPayload {
                    service: s(rng),
                    desired_replicas: rng.next_u64() as u32,
                    reason: s(rng),
                };
                check_scaling(rng, p);
            }
            1 => {
                let p = ScaleDownPayload {
                    service: s(rng),
                    target_replicas: rng.next_u64() as u32,
                    drain_timeout_secs: rng.next_u64(),
                };
                check_scaling(rng, p);
            }
            2 => {
                let p = InstanceReadyPayload {
                    service: s(rng),
                    instance_id: s(rng),
                    endpoint: s(rng),
                };
                check_scaling(rng, p);
            }
            3 => {
                let p = InstanceStoppedPayload {
                    service: s(rng),
                    instance_id: s(rng),
                };
                check_scaling(rng, p);
            }
            _ => {
                let cpu = *rng.pick(&[
                    0.0,
                    50.5,
                    100.0,
                    -0.0,
                    100.1,
                    f64::NAN,
                    f64::INFINITY,
                    1e300,
                ]);
                let p = InstanceHealthPayload {
                    instance_id: s(rng),
                    cpu_percent: cpu,
                    memory_bytes: rng.next_u64(),
                    in_flight: rng.next_u64() as u32,
                };
                check_scaling(rng, p);
            }
        }
    });
}

/// The first and last instants chrono holds, and their neighbours.
fn edges() -> Vec<DateTime<Utc>> {
    let max = DateTime::<Utc>::MAX_UTC;
    let min = DateTime::<Utc>::MIN_UTC;
    let second = chrono::TimeDelta::seconds(1);
    let day = chrono::TimeDelta::days(1);
    vec![
        max,
        max - second,
        max - day,
        max - chrono::TimeDelta::days(400),
        min,
        min + second,
        DateTime::from_timestamp(253_402_300_799, 0).unwrap(),
        DateTime::from_timestamp(-1, 0).unwrap(),
    ]
}

// --- regressions: minimal inputs the hunt found ------------------------------

/// `Schedule::next_after` with the last instant chrono holds used to panic
/// inside the `cron` crate (which adds a second to it); a source whose
/// clock arithmetic saturates falls back to that instant too. There is no
/// later fire time: `None`.
#[test]
fn regression_next_after_the_last_instant_is_none_not_a_panic() {
    let schedule = Schedule::cron("0 * * * * *").unwrap();
    for edge in edges() {
        if let Some(next) = schedule.next_after(edge) {
            assert!(next > edge, "{next} after {edge}");
        }
    }
    assert_eq!(schedule.next_after(DateTime::<Utc>::MAX_UTC), None);
}
