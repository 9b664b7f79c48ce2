//! Seeded random-input hunt over everything event-core decodes or validates
//! on behalf of a caller: event JSON, options and records, subjects,
//! filters, categories, topics, consumer names, dedup ids and payload
//! depth. See `fuzz_support` for the knobs (`A3S_FUZZ_ITERS`, ...).
#![allow(clippy::unwrap_used)]

mod fuzz_support;

use event_core::subject::{
    self, MAX_CONSUMER_NAME_LEN, MAX_SUBJECT_LEN, SubjectPattern, validate_category,
    validate_consumer_name, validate_filter, validate_publish_subject, validate_subject,
    validate_topic,
};
use event_core::{
    DeliverPolicy, Error, Event, MAX_PAYLOAD_DEPTH, PublishOptions, SubscribeOptions,
    SubscriptionFilter, SubscriptionRecord, check_payload_depth,
};
use fuzz_support::{Rng, mutate_bytes, mutate_json, mutate_text, nested, random_json, run};
use serde_json::{Value, json};
use std::time::Duration;

/// A valid event with random content.
fn random_event(rng: &mut Rng) -> Event {
    let mut event = Event::typed(
        "events.market.forex",
        "market",
        fuzz_support::random_string(rng),
        rng.next_u64() as u32,
        fuzz_support::random_string(rng),
        fuzz_support::random_string(rng),
        random_json(rng, 4),
    );
    if rng.one_in(4) {
        event.id = fuzz_support::random_string(rng);
    }
    event.timestamp = rng.next_u64() >> rng.below(64);
    for _ in 0..rng.below(4) {
        event.metadata.insert(
            fuzz_support::random_string(rng),
            fuzz_support::random_string(rng),
        );
    }
    event
}

fn random_options(rng: &mut Rng) -> SubscribeOptions {
    let ms = |rng: &mut Rng| Duration::from_millis(rng.next_u64() >> rng.below(64));
    SubscribeOptions {
        max_deliver: rng.one_in(2).then(|| rng.next_u64() >> rng.below(64)),
        backoff: (0..rng.below(4)).map(|_| ms(rng)).collect(),
        max_ack_pending: rng.one_in(2).then(|| rng.next_u64()),
        deliver_policy: match rng.below(6) {
            0 => DeliverPolicy::All,
            1 => DeliverPolicy::Last,
            2 => DeliverPolicy::New,
            3 => DeliverPolicy::ByStartSequence {
                sequence: rng.next_u64(),
            },
            4 => DeliverPolicy::ByStartTime {
                timestamp: rng.next_u64(),
            },
            _ => DeliverPolicy::LastPerSubject,
        },
        ack_wait: rng.one_in(2).then(|| ms(rng)),
    }
}

#[test]
fn valid_events_round_trip_through_json() {
    run("core/event-roundtrip", 3000, |rng| {
        let event = random_event(rng);
        let bytes = serde_json::to_vec(&event).unwrap();
        let back: Event = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, event);
        let value = serde_json::to_value(&event).unwrap();
        let back: Event = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
    });
}

#[test]
fn mutated_event_json_never_panics_and_what_parses_round_trips() {
    let mut parsed = 0;
    let n = run("core/event-bytes", 2500, |rng| {
        let event = random_event(rng);
        let mut bytes = if rng.one_in(2) {
            serde_json::to_vec(&event).unwrap()
        } else {
            serde_json::to_vec_pretty(&event).unwrap()
        };
        mutate_bytes(rng, &mut bytes);
        if let Ok(back) = serde_json::from_slice::<Event>(&bytes) {
            parsed += 1;
            let again: Event = serde_json::from_slice(&serde_json::to_vec(&back).unwrap()).unwrap();
            assert_eq!(again, back);
        }
    });
    assert!(
        n == 0 || parsed > 0,
        "no mutated event parsed: the mutator is too rough"
    );
}

#[test]
fn structurally_mutated_events_never_panic() {
    run("core/event-value", 6000, |rng| {
        let mut value = serde_json::to_value(random_event(rng)).unwrap();
        mutate_json(rng, &mut value);
        if let Ok(event) = serde_json::from_value::<Event>(value.clone()) {
            // what decodes is what was there
            assert_eq!(value["id"], json!(event.id));
            assert_eq!(value["payload"], event.payload);
            let _ = check_payload_depth(&event.payload);
            let _ = PublishOptions::default().checked_dedup_id(&event);
        }
    });
}

#[test]
fn options_and_records_round_trip_and_mutations_never_panic() {
    run("core/options", 3000, |rng| {
        let options = random_options(rng);
        let value = serde_json::to_value(&options).unwrap();
        let back: SubscribeOptions = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(back, options);
        for redelivery in [0, 1, 2, u64::MAX, rng.next_u64()] {
            let _ = back.redelivery_delay(redelivery);
        }

        let record = SubscriptionRecord {
            filter: SubscriptionFilter {
                subscriber_id: fuzz_support::random_string(rng),
                subjects: (0..rng.below(3))
                    .map(|_| fuzz_support::random_string(rng))
                    .collect(),
                durable: rng.one_in(2),
            },
            options: rng.one_in(2).then_some(options),
        };
        let text = serde_json::to_string(&record).unwrap();
        let back: SubscriptionRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);

        let publish = PublishOptions {
            msg_id: rng.one_in(2).then(|| fuzz_support::random_string(rng)),
            expected_sequence: rng.one_in(2).then(|| rng.next_u64()),
            timeout: rng
                .one_in(2)
                .then(|| Duration::from_millis(rng.next_u64() >> rng.below(64))),
        };
        let back: PublishOptions =
            serde_json::from_value(serde_json::to_value(&publish).unwrap()).unwrap();
        assert_eq!(back, publish);

        // hostile versions of each
        let mut v = serde_json::to_value(&record).unwrap();
        mutate_json(rng, &mut v);
        if let Ok(r) = serde_json::from_value::<SubscriptionRecord>(v) {
            let again: SubscriptionRecord =
                serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
            assert_eq!(again, r);
            if let Some(o) = &r.options {
                let _ = o.redelivery_delay(rng.next_u64());
            }
        }
        let mut bytes = text.into_bytes();
        mutate_bytes(rng, &mut bytes);
        let _ = serde_json::from_slice::<SubscriptionRecord>(&bytes);
        let mut v = serde_json::to_value(&publish).unwrap();
        mutate_json(rng, &mut v);
        if let Ok(p) = serde_json::from_value::<PublishOptions>(v) {
            let event = Event::new("events.a.b", "a", "s", "x", json!(null));
            let _ = p.checked_dedup_id(&event);
        }
    });
}

/// Subjects, filters, tokens: valid ones, and mutations of them.
fn subject_like(rng: &mut Rng) -> String {
    const VALID: &[&str] = &[
        "events.market.forex",
        "events.market.forex.usd_cny",
        "events.*.forex",
        "events.market.>",
        ">",
        "*",
        "events.ünï.cödé",
        "a",
        "a.b",
    ];
    let base = (*rng.pick(VALID)).to_owned();
    match rng.below(4) {
        0 => base,
        1 => fuzz_support::random_string(rng),
        2 => {
            // long, around the length limit
            let token = rng.pick(&["a", "é", "😀", "a."]).to_string();
            let n = (MAX_SUBJECT_LEN - 8 + rng.below(16)) / token.len();
            token.repeat(n)
        }
        _ => mutate_text(rng, &base),
    }
}

fn assert_subject_error<T>(result: &event_core::Result<T>, input: &str) {
    match result {
        Ok(_) | Err(Error::InvalidSubject { .. }) => {}
        Err(other) => panic!("{input:?}: not an InvalidSubject error: {other:?}"),
    }
    if let Err(err) = result {
        // the message stays short even for a huge input
        assert!(
            err.to_string().len() < 4 * MAX_SUBJECT_LEN + 256,
            "{input:?}"
        );
    }
}

#[test]
fn subjects_and_filters_never_panic_and_agree_with_each_other() {
    run("core/subjects", 20_000, |rng| {
        let input = subject_like(rng);
        let subject_ok = validate_subject(&input);
        let filter = SubjectPattern::parse(&input);
        assert_subject_error(&subject_ok, &input);
        assert_subject_error(&filter, &input);
        assert_subject_error(&validate_filter(&input), &input);
        assert_subject_error(&validate_category(&input), &input);
        assert_subject_error(&validate_topic(&input), &input);
        assert_subject_error(&validate_consumer_name(&input), &input);
        assert_subject_error(&validate_publish_subject(&input, "events"), &input);
        if subject_ok.is_ok() {
            // a publishable subject is a literal filter that matches itself
            let pattern = SubjectPattern::parse(&input)
                .unwrap_or_else(|e| panic!("{input:?} is a subject but no filter: {e}"));
            assert!(pattern.is_literal());
            assert!(pattern.matches(&input), "{input:?}");
            assert_eq!(pattern.as_str(), input);
            assert!(validate_topic(&input).is_ok());
        }
        if validate_consumer_name(&input).is_ok() {
            assert!(input.len() <= MAX_CONSUMER_NAME_LEN);
        }
        if let Ok(pattern) = &filter {
            let other = subject_like(rng);
            let _ = pattern.matches(&other);
            let _ = pattern.matches("");
            for i in 0..4 {
                let _ = pattern.literal_token(i);
            }
            assert_eq!(
                subject::subject_matches(&input, &other),
                pattern.matches(&other)
            );
            // a match is only ever a valid subject
            if pattern.matches(&other) {
                assert!(
                    !other.split('.').any(str::is_empty),
                    "{input:?} matched {other:?}"
                );
            }
        }
    });
}

#[test]
fn payload_depth_check_is_exact_and_never_overflows() {
    run("core/depth", 60, |rng| {
        let levels = *rng.pick(&[
            0,
            1,
            MAX_PAYLOAD_DEPTH - 1,
            MAX_PAYLOAD_DEPTH,
            MAX_PAYLOAD_DEPTH + 1,
            MAX_PAYLOAD_DEPTH + 2,
            // deeper than JSON text can carry, shallower than what
            // serde_json itself can clone, serialize or drop on a test
            // thread's stack in a debug build (about 2,000 levels)
            1_000,
        ]);
        let objects = rng.one_in(2);
        let payload = nested(levels, objects, json!(1));
        let result = check_payload_depth(&payload);
        assert_eq!(result.is_ok(), levels <= MAX_PAYLOAD_DEPTH, "{levels}");
        if let Err(e) = result {
            assert!(matches!(e, Error::Serialization(_)), "{e:?}");
        }
        // an accepted payload reads back from JSON inside an event
        if levels <= MAX_PAYLOAD_DEPTH {
            let event = Event::new("events.a.b", "a", "s", "x", payload);
            let bytes = serde_json::to_vec(&event).unwrap();
            let back: Event = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back, event);
        }
    });
}

#[test]
fn deeply_nested_event_json_is_an_error_not_a_crash() {
    for levels in [127, 128, 129, 10_000, 200_000] {
        let text = format!(
            r#"{{"id":"e","subject":"events.a.b","category":"a","summary":"s","source":"x","timestamp":1,"payload":{}{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        );
        let result = serde_json::from_str::<Event>(&text);
        if levels + 1 > 128 {
            assert!(result.is_err(), "{levels}");
        }
        let _ = serde_json::from_str::<Value>(&text);
    }
}
