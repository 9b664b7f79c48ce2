//! Property-style round trips: random awkward events must come back equal
//! through every path (in memory, structured JSON, HTTP and NATS
//! binary/structured).

#![allow(clippy::unwrap_used)]

mod common;

use common::Rng;
use event_cloudevents::{
    CloudEvent, from_structured, from_structured_batch, to_structured, to_structured_batch,
};
use event_core::Event;

const CASES: u64 = 400;

fn check(path: &str, seed: u64, event: &Event, back: event_core::Result<Event>) {
    match back {
        Ok(back) => assert_eq!(&back, event, "{path}: seed {seed} did not round-trip"),
        Err(err) => panic!("{path}: seed {seed} failed: {err}\nevent: {event:?}"),
    }
}

#[test]
fn random_events_round_trip_in_memory() {
    for seed in 0..CASES {
        let event = Rng::new(seed).event();
        let ce = CloudEvent::from(&event);
        check("memory", seed, &event, Event::try_from(ce));
    }
}

#[test]
fn cloudevents_made_from_events_survive_the_reverse_trip() {
    // CloudEvent -> Event -> CloudEvent is the identity on CloudEvents this
    // crate produces.
    for seed in 0..CASES {
        let event = Rng::new(seed).event();
        let ce = CloudEvent::from(&event);
        let again = CloudEvent::from(Event::try_from(ce.clone()).unwrap());
        assert_eq!(again, ce, "seed {seed}");
    }
}

#[test]
fn random_events_round_trip_through_structured_json() {
    for seed in 0..CASES {
        let event = Rng::new(seed).event();
        let json = to_structured(&event).unwrap();
        check("structured", seed, &event, from_structured(&json));
    }
}

#[test]
fn random_batches_round_trip() {
    let mut rng = Rng::new(7);
    for _ in 0..20 {
        let events: Vec<Event> = (0..rng.below(6)).map(|_| rng.event()).collect();
        let json = to_structured_batch(&events).unwrap();
        assert_eq!(from_structured_batch(&json).unwrap(), events);
    }
}

#[cfg(feature = "http")]
#[test]
fn random_events_round_trip_through_http_messages() {
    use event_cloudevents::http::{Mode, from_http, to_http};
    for seed in 0..CASES {
        let event = Rng::new(seed).event();
        for mode in [Mode::Binary, Mode::Structured] {
            let msg = to_http(&event, mode).unwrap_or_else(|e| {
                panic!("seed {seed} {mode:?}: {e}\n{:?}", CloudEvent::from(&event))
            });
            for value in msg.headers.values() {
                assert!(
                    value.to_str().is_ok(),
                    "seed {seed}: non-ASCII header {value:?}"
                );
            }
            check(
                &format!("http {mode:?}"),
                seed,
                &event,
                from_http(&msg.headers, msg.body),
            );
        }
    }
}

#[cfg(feature = "nats")]
#[test]
fn random_events_round_trip_through_nats_messages() {
    use event_cloudevents::nats::{Mode, content_mode, from_nats, is_cloudevent, to_nats};
    for seed in 0..CASES {
        let event = Rng::new(seed).event();
        for mode in [Mode::Binary, Mode::Structured] {
            let msg = to_nats(&event, mode).unwrap_or_else(|e| {
                panic!("seed {seed} {mode:?}: {e}\n{:?}", CloudEvent::from(&event))
            });
            assert_eq!(content_mode(Some(&msg.headers)), mode, "seed {seed}");
            assert!(
                is_cloudevent(Some(&msg.headers), &msg.payload),
                "seed {seed}"
            );
            for (name, values) in msg.headers.iter() {
                for value in values {
                    // what a NATS header carries unchanged: printable ASCII,
                    // no surrounding whitespace
                    assert!(
                        value.as_str().bytes().all(|b| (0x21..0x7f).contains(&b)),
                        "seed {seed}: header {name} not printable ASCII: {value:?}"
                    );
                }
            }
            check(
                &format!("nats {mode:?}"),
                seed,
                &event,
                from_nats(Some(&msg.headers), &msg.payload),
            );
        }
    }
}

#[test]
fn every_extension_name_is_spec_valid() {
    for seed in 0..CASES {
        let ce = CloudEvent::from(Rng::new(seed).event());
        for (name, _) in ce.iter_extensions() {
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "seed {seed}: invalid extension name {name:?}"
            );
        }
    }
}

#[test]
fn millisecond_timestamps_are_exact_in_time() {
    use cloudevents::AttributesReader;
    let mut rng = Rng::new(99);
    for _ in 0..1000 {
        let mut event = rng.event();
        event.timestamp = rng.next_u64() % 253_402_300_800_000;
        let ce = CloudEvent::from(&event);
        let time = ce.time().expect("time set for four-digit years");
        assert_eq!(time.timestamp_millis() as u64, event.timestamp);
        assert_eq!(time.timestamp_subsec_nanos() % 1_000_000, 0);
    }
}

/// A CloudEvent from another producer that declares a content type but
/// carries no data (a JSON `application/json` event with an empty body, a
/// deletion notice still typed `text/xml`, ...).
fn dataless_cloudevent(content_type: &str) -> CloudEvent {
    use cloudevents::{AttributesWriter, EventBuilder, EventBuilderV10};
    let mut ce = EventBuilderV10::new()
        .id("e-1")
        .source("/src")
        .ty("t.x")
        .subject("events.a.b")
        .build()
        .unwrap();
    ce.set_datacontenttype(Some(content_type));
    CloudEvent::new(ce)
}

/// Every path a CloudEvent can take through this crate, ending as an A3S
/// event: in memory, structured JSON, HTTP and NATS in both modes.
fn cloudevent_paths(ce: &CloudEvent) -> Vec<(&'static str, Event)> {
    #[cfg_attr(not(any(feature = "http", feature = "nats")), allow(unused_mut))]
    let mut paths = vec![
        ("memory", Event::try_from(ce.clone()).unwrap()),
        (
            "structured",
            from_structured(&event_cloudevents::cloudevent_to_structured(ce).unwrap()).unwrap(),
        ),
    ];
    #[cfg(feature = "http")]
    {
        use event_cloudevents::http::{Mode, cloudevent_to_http, from_http};
        for (name, mode) in [
            ("http binary", Mode::Binary),
            ("http structured", Mode::Structured),
        ] {
            let msg = cloudevent_to_http(ce.clone(), mode).unwrap();
            paths.push((name, from_http(&msg.headers, msg.body).unwrap()));
        }
    }
    #[cfg(feature = "nats")]
    {
        use event_cloudevents::nats::{Mode, cloudevent_to_nats, from_nats};
        for (name, mode) in [
            ("nats binary", Mode::Binary),
            ("nats structured", Mode::Structured),
        ] {
            let msg = cloudevent_to_nats(ce.clone(), mode).unwrap();
            paths.push((name, from_nats(Some(&msg.headers), &msg.payload).unwrap()));
        }
    }
    paths
}

#[test]
fn content_type_without_data_survives_every_path() {
    use cloudevents::AttributesReader;
    for ct in [
        "text/xml",
        "application/json",
        "application/vnd.a3s+json",
        "application/json; charset=utf-8",
    ] {
        let ce = dataless_cloudevent(ct);
        for (path, event) in cloudevent_paths(&ce) {
            assert_eq!(event.payload, serde_json::Value::Null, "{ct} {path}");
            let back = CloudEvent::from(event.clone());
            assert_eq!(back.datacontenttype(), Some(ct), "{ct} {path}: {back}");
            assert!(back.data().is_none(), "{ct} {path}");
            // The same CloudEvent again, so every path sees the same event.
            let again = cloudevent_paths(&back);
            for (path2, event2) in again {
                assert_eq!(event2, event, "{ct} {path} then {path2}");
            }
        }
    }
}

/// An event with an empty id, as a stored event in the original JSON shape
/// can hold one (`"id": ""` deserialises; `Event::new` never makes one).
fn event_with_empty_id() -> Event {
    serde_json::from_value(serde_json::json!({
        "id": "",
        "subject": "events.a.b",
        "category": "a",
        "eventType": "t.x",
        "version": 1,
        "payload": {"k": 1},
        "summary": "s",
        "source": "svc",
        "timestamp": 1_700_000_000_000_u64,
    }))
    .unwrap()
}

#[test]
fn an_empty_id_gives_the_same_cloudevent_on_every_path_every_time() {
    // A CloudEvent id identifies the event (consumers deduplicate by source
    // and id): a fresh random id per conversion turned one event into several.
    use cloudevents::AttributesReader;
    let event = event_with_empty_id();
    assert!(event.id.is_empty());
    let ce = CloudEvent::from(&event);
    assert!(
        ce.id()
            .starts_with(event_cloudevents::mapping::DERIVED_ID_PREFIX)
    );
    assert_eq!(CloudEvent::from(&event), ce);
    // Every message carries that one id (the SDK orders extensions as its hash
    // map does, so compare the documents, not their bytes).
    let doc = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap();
    let structured = doc(&to_structured(&event).unwrap());
    assert_eq!(structured["id"], ce.id());
    assert_eq!(doc(&to_structured(&event).unwrap()), structured);
    let batch = doc(&to_structured_batch(std::slice::from_ref(&event)).unwrap());
    assert_eq!(batch[0], structured);
    #[cfg(feature = "http")]
    {
        use event_cloudevents::http::{Mode, from_http, to_http};
        let msg = to_http(&event, Mode::Binary).unwrap();
        assert_eq!(msg.headers["ce-id"], ce.id());
        assert_eq!(msg, to_http(&event, Mode::Binary).unwrap());
        assert_eq!(
            doc(&to_http(&event, Mode::Structured).unwrap().body),
            structured
        );
        for mode in [Mode::Binary, Mode::Structured] {
            let msg = to_http(&event, mode).unwrap();
            assert_eq!(from_http(&msg.headers, msg.body).unwrap(), event);
        }
    }
    #[cfg(feature = "nats")]
    {
        use event_cloudevents::nats::{Mode, from_nats, to_nats};
        let msg = to_nats(&event, Mode::Binary).unwrap();
        assert_eq!(msg.headers.get("ce-id").map(|v| v.as_str()), Some(ce.id()));
        assert_eq!(msg, to_nats(&event, Mode::Binary).unwrap());
        assert_eq!(
            doc(&to_nats(&event, Mode::Structured).unwrap().payload),
            structured
        );
        for mode in [Mode::Binary, Mode::Structured] {
            let msg = to_nats(&event, mode).unwrap();
            assert_eq!(from_nats(Some(&msg.headers), &msg.payload).unwrap(), event);
        }
    }
    for (path, back) in cloudevent_paths(&ce) {
        assert_eq!(back, event, "{path}");
    }
}

/// What a foreign CloudEvent comes back as after a trip through an A3S
/// event, by the documented mapping: the A3S extensions added (when it had
/// none), `time` truncated to milliseconds, extension values in their string
/// form, JSON data held as JSON (not bytes) and typed `application/json`
/// when it had no type, JSON `null` data as no data; data under a non-JSON
/// type keeps the type and its bytes, as text when the type is textual and
/// the bytes UTF-8, else as bytes (empty data is no data).
fn expected_back(ce: &CloudEvent) -> CloudEvent {
    use cloudevents::{AttributesReader, AttributesWriter, Data};
    use event_cloudevents::mapping::{is_json_content_type, is_text_content_type};
    if let (Some(ct), Some(data)) = (ce.datacontenttype(), ce.data())
        && !is_json_content_type(ct)
    {
        let ct = ct.to_string();
        let bytes: Vec<u8> = Vec::try_from(data.clone()).unwrap();
        let mut expected = expected_back_attributes(ce);
        if bytes.is_empty() {
            // no data, as binary mode carries it
            let (_, schema, _) = expected.take_data();
            expected.set_dataschema(schema);
            expected.set_datacontenttype(Some(ct));
            return expected;
        }
        let data = match String::from_utf8(bytes) {
            Ok(text) if is_text_content_type(&ct) => Data::String(text),
            Ok(text) => Data::Binary(text.into_bytes()),
            Err(not_utf8) => Data::Binary(not_utf8.into_bytes()),
        };
        expected.set_data(ct, data);
        return expected;
    }
    let mut expected = expected_back_attributes(ce);
    let (content_type, schema, data) = expected.take_data();
    let data = data.map(|data| match data {
        Data::Binary(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Data::String(text) => serde_json::from_str(&text).unwrap(),
        Data::Json(value) => value,
    });
    expected.set_dataschema(schema);
    match data {
        Some(value) if !value.is_null() => {
            let ct = content_type.unwrap_or_else(|| "application/json".to_string());
            expected.set_data(ct, Data::Json(value));
        }
        _ => {
            expected.set_datacontenttype(content_type);
        }
    }
    expected
}

/// [`expected_back`] for everything but the data.
fn expected_back_attributes(ce: &CloudEvent) -> CloudEvent {
    use cloudevents::event::ExtensionValue;
    use cloudevents::{AttributesReader, AttributesWriter};
    let mut expected = ce.clone();
    if let Some(time) = ce.time() {
        let millis = time.timestamp_millis();
        expected.set_time(chrono::DateTime::from_timestamp_millis(millis));
    }
    let extensions: Vec<(String, String)> = ce
        .iter_extensions()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    for (name, value) in extensions {
        expected.set_extension(&name, ExtensionValue::String(value));
    }
    if ce.extension("a3scategory").is_none() {
        let category = ce
            .subject()
            .and_then(|s| s.split('.').nth(1))
            .unwrap_or_default()
            .to_string();
        expected.set_extension("a3scategory", category);
        expected.set_extension("a3ssummary", "");
        expected.set_extension("a3sversion", 1_i64);
    }
    expected
}

#[test]
fn random_foreign_cloudevents_convert_alike_on_every_path_and_come_back() {
    for seed in 0..CASES {
        let ce = CloudEvent::new(Rng::new(seed).cloudevent());
        let paths = cloudevent_paths(&ce);
        let (_, event) = &paths[0];
        for (path, other) in &paths[1..] {
            assert_eq!(
                other, event,
                "seed {seed}: {path} differs from memory\n{ce}"
            );
        }
        let back = CloudEvent::from(event.clone());
        assert_eq!(
            back,
            expected_back(&ce),
            "seed {seed}: came back changed\n{ce}"
        );
        for (path, again) in cloudevent_paths(&back) {
            assert_eq!(&again, event, "seed {seed}: second trip through {path}");
        }
    }
}
