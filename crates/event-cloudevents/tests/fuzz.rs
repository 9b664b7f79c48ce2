//! Seeded random-input hunt over what event-cloudevents decodes: structured
//! documents and batches, binary and structured HTTP and NATS messages, and
//! the CloudEvent -> Event conversion, starting from real messages our own
//! encoders write and mutating them. Whatever is accepted must convert back
//! and forth without loss. See event-core's `tests/fuzz_support` for the
//! knobs (`A3S_FUZZ_ITERS`, ...).
#![allow(clippy::unwrap_used)]

#[path = "../../event-core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

mod common;

use event_cloudevents::{
    CloudEvent, cloudevent_from_structured, from_structured, from_structured_batch, to_structured,
    to_structured_batch,
};
use event_core::{Error, Event};
use fuzz_support::{Rng, mutate_bytes, mutate_json, mutate_text, run};
use serde_json::{Value, json};

/// A valid, awkward event from the shared generator, with a small payload.
fn event(rng: &mut Rng) -> Event {
    let mut event = common::Rng::new(rng.next_u64()).event();
    if event.payload.to_string().len() > 4096 {
        event.payload = json!({"blob": "x".repeat(100)});
    }
    event
}

/// A foreign CloudEvent from the shared generator.
fn foreign(rng: &mut Rng) -> CloudEvent {
    CloudEvent::from(common::Rng::new(rng.next_u64()).cloudevent())
}

fn expect_serialization<T: std::fmt::Debug>(what: &str, result: &event_core::Result<T>) {
    if let Err(err) = result {
        assert!(
            matches!(err, Error::Serialization(_)),
            "{what}: not a Serialization error: {err:?}"
        );
    }
}

/// `value`'s debug form, cut to a readable length.
fn short(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    match text.char_indices().nth(2000) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text,
    }
}

/// An event that was accepted once converts to a CloudEvent and back to
/// itself, through every representation that can carry it (HTTP headers
/// are limited in length: a binding may refuse, with a typed error, an
/// event it cannot carry, but what it sends must come back equal).
fn assert_stable(what: &str, event: &Event) {
    let ce = CloudEvent::from(event);
    let back = Event::try_from(ce.clone()).unwrap_or_else(|e| {
        panic!(
            "{what}: accepted event does not convert back: {e}\n{}",
            short(event)
        )
    });
    assert_eq!(&back, event, "{what}: memory");
    let doc = to_structured(event).unwrap();
    let read = from_structured(&doc).unwrap_or_else(|e| {
        panic!(
            "{what}: accepted event does not read back from structured JSON: {e}\n{}\n{}",
            short(event),
            short(&String::from_utf8_lossy(&doc))
        )
    });
    assert_eq!(&read, event, "{what}: structured");
    #[cfg(feature = "http")]
    for mode in [
        event_cloudevents::Mode::Binary,
        event_cloudevents::Mode::Structured,
    ] {
        use event_cloudevents::http::{from_http, to_http};
        match to_http(event, mode) {
            Ok(msg) => assert_eq!(
                &from_http(&msg.headers, msg.body).unwrap(),
                event,
                "{what}: http {mode:?}"
            ),
            Err(e) => expect_serialization(what, &Err::<(), _>(e)),
        }
    }
    #[cfg(feature = "nats")]
    for mode in [
        event_cloudevents::Mode::Binary,
        event_cloudevents::Mode::Structured,
    ] {
        use event_cloudevents::nats::{from_nats, to_nats};
        match to_nats(event, mode) {
            Ok(msg) => assert_eq!(
                &from_nats(Some(&msg.headers), &msg.payload).unwrap(),
                event,
                "{what}: nats {mode:?}"
            ),
            Err(e) => expect_serialization(what, &Err::<(), _>(e)),
        }
    }
}

/// A structured document to mutate: ours, or a foreign producer's.
fn document(rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(2) {
        to_structured(&event(rng)).unwrap()
    } else {
        serde_json::to_vec(&foreign(rng)).unwrap()
    }
}

#[test]
fn mutated_structured_documents_are_typed_errors_or_lossless_events() {
    let mut accepted = 0;
    run("ce/structured-bytes", 2500, |rng| {
        let mut doc = document(rng);
        mutate_bytes(rng, &mut doc);
        let result = from_structured(&doc);
        expect_serialization("structured", &result);
        let _ = cloudevent_from_structured(&doc);
        if let Ok(event) = result {
            accepted += 1;
            assert_stable("structured bytes", &event);
        }
    });
    assert!(accepted > 0);
}

#[test]
fn structurally_mutated_documents_are_typed_errors_or_lossless_events() {
    const ATTRIBUTES: &[&str] = &[
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
        "a3scategory",
        "a3ssummary",
        "a3sversion",
        "a3sdefaulted",
        "a3stimestamp",
        "a3smx",
        "a3sx6b",
        "a3sx",
        "a3sxzz",
        "a3sxff",
        "traceparent",
        "schemaurl",
        "datacontentencoding",
    ];
    let mut accepted = 0;
    run("ce/structured-value", 4000, |rng| {
        let mut doc: Value = serde_json::from_slice(&document(rng)).unwrap();
        match rng.below(4) {
            0 => mutate_json(rng, &mut doc),
            1 => {
                let name = *rng.pick(ATTRIBUTES);
                doc[name] = fuzz_support::hostile_value(rng);
            }
            2 => {
                let name = *rng.pick(ATTRIBUTES);
                let value = rng
                    .pick(&[
                        json!("0.3"),
                        json!("1.0"),
                        json!("id,source,type"),
                        json!("id,"),
                        json!("18446744073709551616"),
                        json!("253402300800000"),
                        json!("9999-12-31T23:59:59.999999999Z"),
                        json!("0000-01-01T00:00:00Z"),
                        json!("1969-12-31T23:59:59.999Z"),
                        json!("+275760-09-13T00:00:00Z"),
                        json!("2024-02-30T00:00:00Z"),
                        json!("2024-01-01T00:00:00+25:00"),
                        json!("application/json"),
                        json!("text/plain"),
                        json!("image/png"),
                        json!("application/json-seq"),
                        json!("text/plain; charset=latin1"),
                        json!("APPLICATION/JSON;"),
                        json!("base64"),
                        json!("AAAA"),
                        json!("e30="),
                        json!("e30"),
                        json!("not base64!"),
                        json!("urn:x"),
                        json!("http://[::1"),
                        json!(2147483648_u64),
                        json!(-1),
                        json!(4294967296_u64),
                    ])
                    .clone();
                doc[name] = value;
            }
            _ => {
                let name = *rng.pick(ATTRIBUTES);
                if let Some(map) = doc.as_object_mut() {
                    map.remove(name);
                }
            }
        }
        let bytes = serde_json::to_vec(&doc).unwrap();
        let result = from_structured(&bytes);
        expect_serialization("structured value", &result);
        if let Ok(event) = result {
            accepted += 1;
            assert_stable("structured value", &event);
        }
    });
    assert!(accepted > 0);
}

#[test]
fn mutated_batches_are_typed_errors() {
    run("ce/batch", 600, |rng| {
        let events: Vec<Event> = (0..rng.below(4)).map(|_| event(rng)).collect();
        let mut bytes = to_structured_batch(&events).unwrap();
        assert_eq!(from_structured_batch(&bytes).unwrap(), events);
        mutate_bytes(rng, &mut bytes);
        let result = from_structured_batch(&bytes);
        expect_serialization("batch", &result);
        if let Ok(events) = result {
            for event in &events {
                assert_stable("batch", event);
            }
        }
    });
}

#[test]
fn foreign_cloudevents_convert_to_events_that_are_stable() {
    run("ce/foreign", 2000, |rng| {
        let mut ce = foreign(rng);
        // attribute edits the JSON format cannot express (empty values,
        // odd extension names set through the SDK)
        use cloudevents::AttributesWriter;
        match rng.below(6) {
            0 => {
                ce.set_id(mutate_text(rng, "id-1"));
            }
            1 => {
                ce.set_source(mutate_text(rng, "/source"));
            }
            2 => {
                ce.set_type(mutate_text(rng, "t.x"));
            }
            3 => {
                ce.set_subject(Some(mutate_text(rng, "events.a.b")));
            }
            4 => {
                let name = mutate_text(rng, "a3sx6b6579");
                ce.set_extension(&name, mutate_text(rng, "value"));
            }
            _ => {}
        }
        let result = Event::try_from(ce);
        expect_serialization("foreign", &result);
        if let Ok(event) = result {
            assert_stable("foreign", &event);
        }
    });
}

#[cfg(feature = "http")]
#[test]
fn mutated_http_messages_are_typed_errors_or_lossless_events() {
    use event_cloudevents::Mode;
    use event_cloudevents::http::{
        cloudevent_from_http, cloudevent_to_http, from_http, is_cloudevent,
    };
    use http::{HeaderName, HeaderValue};
    let mut accepted = 0;
    run("ce/http", 3000, |rng| {
        let mode = if rng.one_in(3) {
            Mode::Structured
        } else {
            Mode::Binary
        };
        let msg = if rng.one_in(2) {
            event_cloudevents::http::to_http(&event(rng), mode).unwrap()
        } else {
            match cloudevent_to_http(foreign(rng), mode) {
                Ok(msg) => msg,
                Err(_) => return,
            }
        };
        let (mut headers, mut body) = (msg.headers, msg.body);
        for _ in 0..1 + rng.below(3) {
            match rng.below(6) {
                0 => mutate_bytes(rng, &mut body),
                1 | 2 => {
                    // a header's value, as raw bytes (obs-text included)
                    let names: Vec<HeaderName> = headers.keys().cloned().collect();
                    if names.is_empty() {
                        continue;
                    }
                    let name = rng.pick(&names).clone();
                    let mut value = headers[&name].as_bytes().to_vec();
                    mutate_bytes(rng, &mut value);
                    if let Ok(value) = HeaderValue::from_bytes(&value) {
                        headers.insert(name, value);
                    }
                }
                3 => {
                    let name = format!("ce-{}", fuzz_support::random_string(rng));
                    let value = fuzz_support::random_string(rng);
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_bytes(value.as_bytes()),
                    ) {
                        headers.append(n, v);
                    }
                }
                4 => {
                    let name = *rng.pick(&[
                        "ce-specversion",
                        "ce-id",
                        "ce-source",
                        "ce-type",
                        "ce-time",
                        "ce-subject",
                        "ce-dataschema",
                        "content-type",
                        "ce-a3sversion",
                        "ce-a3sdefaulted",
                    ]);
                    headers.remove(name);
                }
                _ => {
                    let (name, value) = rng
                        .pick(&[
                            ("content-type", "application/cloudevents+json"),
                            ("content-type", "Application/CloudEvents+JSON; charset=x"),
                            ("content-type", "application/cloudevents+jsonx"),
                            ("content-type", "application/cloudevents-batch+json"),
                            ("content-type", "text/plain"),
                            ("content-type", "application/octet-stream"),
                            ("content-type", "text/json5"),
                            ("ce-specversion", "0.3"),
                            ("ce-specversion", "2.0"),
                            ("ce-time", "yesterday"),
                            ("ce-time", "9999-12-31T23:59:59.999999999Z"),
                            ("ce-dataschema", "not a url"),
                            ("ce-a3sversion", "-1"),
                            ("ce-a3stimestamp", "18446744073709551616"),
                            ("ce-a3sdefaulted", "id"),
                            ("ce-datacontentencoding", "base64"),
                        ])
                        .to_owned();
                    headers.insert(name, HeaderValue::from_static(value));
                }
            }
        }
        let _ = is_cloudevent(&headers);
        let ce = cloudevent_from_http(&headers, body.clone());
        expect_serialization("http cloudevent", &ce);
        let result = from_http(&headers, body);
        expect_serialization("http", &result);
        if let Ok(event) = result {
            accepted += 1;
            assert_stable("http", &event);
        }
    });
    assert!(accepted > 0);
}

#[cfg(feature = "nats")]
#[test]
fn mutated_nats_messages_are_typed_errors_or_lossless_events() {
    use async_nats::{HeaderMap, HeaderName, HeaderValue};
    use event_cloudevents::Mode;
    use event_cloudevents::nats::{
        cloudevent_from_nats, cloudevent_to_nats, content_mode, from_nats, is_cloudevent, to_nats,
    };
    use std::str::FromStr;
    let mut accepted = 0;
    run("ce/nats", 3000, |rng| {
        let mode = if rng.one_in(3) {
            Mode::Structured
        } else {
            Mode::Binary
        };
        let msg = if rng.one_in(2) {
            to_nats(&event(rng), mode).unwrap()
        } else {
            match cloudevent_to_nats(foreign(rng), mode) {
                Ok(msg) => msg,
                Err(_) => return,
            }
        };
        let mut payload = msg.payload.to_vec();
        // rebuilt pair by pair, so that values and names can be edited
        let mut pairs: Vec<(String, String)> = msg
            .headers
            .iter()
            .flat_map(|(n, vs)| {
                let n: &str = n.as_ref();
                vs.iter()
                    .map(move |v| (n.to_owned(), v.as_str().to_owned()))
            })
            .collect();
        for _ in 0..1 + rng.below(3) {
            match rng.below(6) {
                0 => mutate_bytes(rng, &mut payload),
                1 | 2 if !pairs.is_empty() => {
                    let i = rng.below(pairs.len());
                    pairs[i].1 = mutate_text(rng, &pairs[i].1);
                }
                3 if !pairs.is_empty() => {
                    let i = rng.below(pairs.len());
                    pairs[i].0 = mutate_text(rng, &pairs[i].0);
                }
                4 if !pairs.is_empty() => {
                    let i = rng.below(pairs.len());
                    let dup = pairs[i].clone();
                    if rng.one_in(2) {
                        pairs.push(dup);
                    } else {
                        pairs.remove(i);
                    }
                }
                _ => {
                    let (n, v) = *rng.pick(&[
                        ("Content-Type", "application/cloudevents+json"),
                        ("content-type", "application/cloudevents"),
                        ("CONTENT-TYPE", "application/cloudevents-batch+json"),
                        ("Content-Type", "application/cloudevents+avro"),
                        ("ce-specversion", "0.3"),
                        ("CE-SPECVERSION", "1.0"),
                        ("ce-time", "9999-12-31T23:59:59.999999999Z"),
                        ("ce-id", "\"unterminated"),
                        ("ce-id", "%"),
                        ("ce-a3sversion", "4294967296"),
                        ("ce-a3sx", "v"),
                        ("ce-datacontentencoding", "base64"),
                        ("ce-datacontenttype", "image/png"),
                        ("ce-datacontenttype", "text/plain"),
                        ("ce-data_base64", "true"),
                    ]);
                    pairs.push((n.to_owned(), v.to_owned()));
                }
            }
        }
        let mut headers = HeaderMap::new();
        for (n, v) in &pairs {
            if let (Ok(n), Ok(v)) = (HeaderName::from_str(n), HeaderValue::from_str(v)) {
                headers.append(n, v);
            }
        }
        for h in [Some(&headers), None] {
            let _ = content_mode(h);
            let _ = is_cloudevent(h, &payload);
            let ce = cloudevent_from_nats(h, &payload);
            expect_serialization("nats cloudevent", &ce);
            let result = from_nats(h, &payload);
            expect_serialization("nats", &result);
            if let Ok(event) = result {
                accepted += 1;
                assert_stable("nats", &event);
            }
        }
    });
    assert!(accepted > 0);
}

// --- regressions: minimal inputs the hunt found ------------------------------

/// `datacontentencoding` is an attribute of CloudEvents 0.3 only; in a 1.0
/// document it is an ordinary extension (here the event's
/// `ce-datacontentencoding` metadata). Reading a 1.0 document with one used
/// to leave JSON data under a JSON type the SDK does not recognise
/// (`Application/JSON`) to the SDK, which read it as a string: the event
/// our own `to_structured` wrote did not read back.
#[test]
fn regression_a_datacontentencoding_extension_does_not_hide_json_data() {
    let event = Event::new("events.a.b", "a", "s", "src", json!({"k": 1}))
        .with_metadata("ce-datacontenttype", "Application/JSON")
        .with_metadata("ce-datacontentencoding", "base64");
    let doc = to_structured(&event).unwrap();
    assert_eq!(from_structured(&doc).unwrap(), event);
}

/// Binary mode carries JSON data as the body, one level shallower than a
/// structured document holds it. Data nested 127 levels deep (one past
/// [`event_core::MAX_PAYLOAD_DEPTH`]) was read from a binary-mode message,
/// but the event's structured document, one level deeper, did not read
/// back (`recursion limit exceeded`). Data past the limit is now refused in
/// every mode; data at the limit travels everywhere.
#[cfg(all(feature = "http", feature = "nats"))]
#[test]
fn regression_binary_mode_refuses_data_too_deep_for_structured_mode() {
    use event_cloudevents::http::from_http;
    use event_cloudevents::nats::from_nats;
    use event_core::MAX_PAYLOAD_DEPTH;
    for depth in [MAX_PAYLOAD_DEPTH, MAX_PAYLOAD_DEPTH + 1] {
        let body = format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        let mut nats = async_nats::HeaderMap::new();
        let mut http = http::HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "deep"),
            ("ce-source", "urn:deep"),
            ("ce-type", "t"),
            ("ce-time", "2024-01-02T03:04:05Z"),
        ] {
            nats.insert(name, value);
            http.insert(name, http::HeaderValue::from_static(value));
        }
        nats.insert("ce-datacontenttype", "application/json");
        http.insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        for (what, read) in [
            ("nats", from_nats(Some(&nats), &body)),
            ("http", from_http(&http, body.clone())),
        ] {
            if depth <= MAX_PAYLOAD_DEPTH {
                assert_stable(what, &read.unwrap());
            } else {
                assert!(
                    matches!(read, Err(Error::Serialization(_))),
                    "{what}: {}",
                    short(&read)
                );
            }
        }
    }
}
