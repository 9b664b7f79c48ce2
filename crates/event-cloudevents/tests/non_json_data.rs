//! CloudEvents whose data is not JSON (text, XML, binary) become events and
//! come back with the same `datacontenttype` and the same data bytes.
#![allow(clippy::unwrap_used)]

mod common;

use cloudevents::{AttributesReader, Data, EventBuilder, EventBuilderV10};
use event_cloudevents::{CloudEvent, cloudevent_from_structured, from_structured, to_structured};
use event_core::Event;
use serde_json::{Value, json};

/// PNG-like bytes: a signature with NUL and 0xFF.
const PNG: &[u8] = &[
    0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0x10,
];

fn document(content_type: &str, member: &str, data: Value) -> Vec<u8> {
    let mut doc = json!({
        "specversion": "1.0",
        "id": "evt-1",
        "source": "urn:example:producer",
        "type": "com.example.thing",
        "time": "2024-05-06T07:08:09.123Z",
        "datacontenttype": content_type,
    });
    doc[member] = data;
    serde_json::to_vec(&doc).unwrap()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn meta<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    event.metadata.get(key).map(String::as_str)
}

/// Reads a foreign structured document, checks the event, writes it back and
/// checks the document keeps the type and the data member.
fn structured_round_trip(
    content_type: &str,
    member: &str,
    data: Value,
    payload: &str,
    marked: bool,
) -> Event {
    let doc = document(content_type, member, data.clone());
    let event = from_structured(&doc).unwrap_or_else(|e| panic!("{content_type}: {e}"));
    assert_eq!(event.payload, json!(payload), "{content_type}");
    assert_eq!(
        meta(&event, "ce-datacontenttype"),
        Some(content_type),
        "{content_type}"
    );
    assert_eq!(
        meta(&event, "ce-data_base64"),
        marked.then_some("true"),
        "{content_type}"
    );
    let back: Value = serde_json::from_slice(&to_structured(&event).unwrap()).unwrap();
    assert_eq!(back["datacontenttype"], json!(content_type), "{back}");
    assert_eq!(back[member], data, "{back}");
    let other = if member == "data" {
        "data_base64"
    } else {
        "data"
    };
    assert!(back.get(other).is_none(), "{back}");
    // the marker is implied by data_base64, not written as an extension
    assert_eq!(back.as_object().unwrap().len(), 10, "{back}");
    assert_eq!(
        from_structured(&serde_json::to_vec(&back).unwrap()).unwrap(),
        event
    );
    event
}

#[test]
fn structured_text_xml_and_binary_data_round_trip() {
    structured_round_trip("text/plain", "data", json!("hello"), "hello", false);
    structured_round_trip(
        "application/xml",
        "data",
        json!("<much wow=\"xml\">é</much>"),
        "<much wow=\"xml\">é</much>",
        false,
    );
    structured_round_trip(
        "image/png",
        "data_base64",
        json!(base64(PNG)),
        &base64(PNG),
        true,
    );
    // text sent as base64 is text once read: written back as text
    let event = from_structured(&document(
        "text/plain; charset=utf-8",
        "data_base64",
        json!(base64("naïve".as_bytes())),
    ))
    .unwrap();
    assert_eq!(event.payload, json!("naïve"));
    assert_eq!(meta(&event, "ce-data_base64"), None);
}

#[test]
fn text_types_with_bytes_that_are_not_utf8_keep_the_bytes() {
    let bytes = [b'h', b'i', 0xff, 0x00, 0xc3];
    structured_round_trip(
        "text/plain",
        "data_base64",
        json!(base64(&bytes)),
        &base64(&bytes),
        true,
    );
    // text in a charset that is not UTF-8 is bytes, whatever they look like
    structured_round_trip(
        "text/plain; charset=iso-8859-1",
        "data_base64",
        json!(base64(b"caf\xe9")),
        &base64(b"caf\xe9"),
        true,
    );
    // the same through the SDK's event, exact
    let ce = EventBuilderV10::new()
        .id("1")
        .source("s")
        .ty("t")
        .data("text/csv", bytes.to_vec())
        .build()
        .unwrap();
    let event = Event::try_from(CloudEvent::new(ce)).unwrap();
    assert_eq!(event.payload, json!(base64(&bytes)));
    let back = CloudEvent::from(&event);
    assert_eq!(back.datacontenttype(), Some("text/csv"));
    assert_eq!(back.data(), Some(&Data::Binary(bytes.to_vec())));
    assert_eq!(Event::try_from(back).unwrap(), event);
}

#[test]
fn foreign_sdk_events_with_text_and_binary_data_come_back_the_same() {
    for (ct, data) in [
        ("text/plain", Data::String("hello".into())),
        ("application/xml", Data::Binary(b"<a/>".to_vec())),
        ("application/octet-stream", Data::Binary(PNG.to_vec())),
        (
            "application/x-protobuf",
            Data::Binary(vec![0x08, 0x96, 0x01]),
        ),
    ] {
        let ce = EventBuilderV10::new()
            .id("1")
            .source("s")
            .ty("t")
            .data(ct, data.clone())
            .build()
            .unwrap();
        let event = Event::try_from(CloudEvent::new(ce)).unwrap_or_else(|e| panic!("{ct}: {e}"));
        let back = CloudEvent::from(&event);
        assert_eq!(back.datacontenttype(), Some(ct));
        let bytes = |d: &Data| -> Vec<u8> { Vec::try_from(d.clone()).unwrap() };
        assert_eq!(bytes(back.data().unwrap()), bytes(&data), "{ct}");
        // and through the JSON format
        let doc = serde_json::to_vec(&back).unwrap();
        let read = cloudevent_from_structured(&doc).unwrap();
        assert_eq!(read.datacontenttype(), Some(ct));
        assert_eq!(bytes(read.data().unwrap()), bytes(&data), "{ct}");
        assert_eq!(Event::try_from(read).unwrap(), event, "{ct}");
    }
}

#[test]
fn json_typed_data_that_is_not_json_is_still_refused() {
    for (ct, member, data) in [
        (
            "application/json",
            "data_base64",
            json!(base64(b"not json")),
        ),
        ("application/vnd.x+json", "data_base64", json!(base64(b"{"))),
    ] {
        let err = from_structured(&document(ct, member, data))
            .unwrap_err()
            .to_string();
        assert!(err.contains("JSON"), "{ct}: {err}");
    }
}

/// Types the SDK's JSON format mistakes for JSON by their prefix
/// (`application/json-seq`, `text/json5`, `application/jsonl`): their data is
/// text or bytes like any other non-JSON data, in structured mode too.
#[test]
fn non_json_types_with_a_json_prefix_round_trip_in_structured_mode() {
    use event_cloudevents::data::{data_bytes, data_content_type, with_data};
    let base = Event::new("events.a.b", "a", "s", "src", Value::Null);
    for ct in ["application/json-seq", "text/json5", "application/jsonl"] {
        for bytes in [
            &b"{}"[..],
            b"\"x\"",
            b"1",
            b"{a:1}",
            b"\x1e[1]\n",
            &[0xff, 0x00],
        ] {
            let event = with_data(base.clone(), ct, bytes).unwrap();
            assert_eq!(data_bytes(&event).as_deref(), Some(bytes), "{ct}");
            assert_eq!(data_content_type(&event), Some(ct));
            let doc = to_structured(&event).unwrap();
            let read = from_structured(&doc).unwrap_or_else(|e| {
                panic!("{ct} {bytes:?}: {e}\n{}", String::from_utf8_lossy(&doc))
            });
            assert_eq!(read, event, "{ct} {bytes:?}");
        }
    }
    // a foreign document: text, as the JSON format's `data` string
    let event = from_structured(&document("text/json5", "data", json!("{a: 1, /* c */}"))).unwrap();
    assert_eq!(event.payload, json!("{a: 1, /* c */}"));
    // and data that is not a string is refused, as for any non-JSON type
    let err = from_structured(&document("application/json-seq", "data", json!({"a": 1})))
        .unwrap_err()
        .to_string();
    assert!(err.contains("application/json-seq"), "{err}");
}

/// Empty non-JSON data is no data (binary mode sends an empty body for
/// both): the type is kept, and an event with an empty text payload is not
/// turned into one without data on the way.
#[test]
fn empty_non_json_data_is_no_data_and_empty_text_survives() {
    for data in [Data::String(String::new()), Data::Binary(Vec::new())] {
        let ce = EventBuilderV10::new()
            .id("1")
            .source("s")
            .ty("t")
            .data("image/png", data)
            .build()
            .unwrap();
        let event = Event::try_from(CloudEvent::new(ce)).unwrap();
        assert_eq!(event.payload, Value::Null);
        assert_eq!(meta(&event, "ce-datacontenttype"), Some("image/png"));
        assert_eq!(meta(&event, "ce-data_base64"), None);
        let back = CloudEvent::from(&event);
        assert_eq!(back.datacontenttype(), Some("image/png"));
        assert_eq!(back.data(), None);
    }
    let event = Event::new("events.a.b", "a", "s", "src", json!(""))
        .with_metadata("ce-datacontenttype", "text/plain");
    let doc = to_structured(&event).unwrap();
    assert_eq!(from_structured(&doc).unwrap(), event);
    #[cfg(feature = "http")]
    {
        use event_cloudevents::http::{Mode, from_http, to_http};
        let msg = to_http(&event, Mode::Binary).unwrap();
        assert_eq!(from_http(&msg.headers, msg.body).unwrap(), event);
    }
    #[cfg(feature = "nats")]
    {
        use event_cloudevents::nats::{Mode, from_nats, to_nats};
        let msg = to_nats(&event, Mode::Binary).unwrap();
        assert_eq!(from_nats(Some(&msg.headers), &msg.payload).unwrap(), event);
    }
}

/// A media type may have a tab around a parameter's `;` (RFC 9110 `OWS`),
/// and reading accepts one; the type used to stay encoded metadata when
/// written back, so such a foreign CloudEvent came back `application/json`
/// with its text or bytes as a JSON string.
#[test]
fn a_tab_between_media_type_parameters_keeps_the_type() {
    structured_round_trip(
        "text/plain;\tcharset=utf-8",
        "data",
        json!("héllo"),
        "héllo",
        false,
    );
    structured_round_trip(
        "application/octet-stream;\tx=1",
        "data_base64",
        json!(base64(PNG)),
        &base64(PNG),
        true,
    );
    let doc = document("application/vnd.a3s+json; \tv=1", "data", json!({"k": 1}));
    let event = from_structured(&doc).unwrap();
    let back: Value = serde_json::from_slice(&to_structured(&event).unwrap()).unwrap();
    assert_eq!(back["datacontenttype"], "application/vnd.a3s+json; \tv=1");
    assert_eq!(back["data"], json!({"k": 1}));
}

/// Types with tabs (after `;`, before `;`, several, inside a quoted value
/// or the type itself) with each kind of data go through structured JSON
/// and HTTP and NATS, binary and structured, and come back the same.
#[cfg(all(feature = "http", feature = "nats"))]
#[test]
fn types_with_tabs_round_trip_in_every_mode() {
    for ct in [
        "text/plain;\tcharset=utf-8",
        "text/plain\t;\tcharset=utf-8",
        "text/plain;\t\t\tcharset=utf-8;\tformat=flowed",
        "text/plain; charset=\"utf\t8\"",
        "application/json;\tcharset=utf-8",
        "application/vnd.a3s+json;\t\tv=1",
        "application/octet-stream;\tx=1",
        "text/x\tweird",
    ] {
        for payload in [
            Value::Null,
            json!("héllo\tthere"),
            json!({"k": [1, "x"]}),
            json!(base64(PNG)),
            json!(""),
        ] {
            for b64 in [false, true] {
                let mut event = Event::new("events.a.b", "a", "s", "src", payload.clone())
                    .with_metadata("ce-datacontenttype", ct);
                if b64 {
                    event = event.with_metadata("ce-data_base64", "true");
                }
                let doc = to_structured(&event).unwrap();
                assert_eq!(
                    from_structured(&doc).unwrap(),
                    event,
                    "structured {ct:?} {payload}"
                );
                {
                    use event_cloudevents::http::{Mode, from_http, to_http};
                    for mode in [Mode::Binary, Mode::Structured] {
                        let msg = to_http(&event, mode).unwrap();
                        assert_eq!(
                            from_http(&msg.headers, msg.body).unwrap(),
                            event,
                            "http {ct:?} {payload} {b64}"
                        );
                    }
                }
                {
                    use event_cloudevents::nats::{Mode, from_nats, to_nats};
                    for mode in [Mode::Binary, Mode::Structured] {
                        let msg = to_nats(&event, mode).unwrap();
                        assert_eq!(
                            from_nats(Some(&msg.headers), &msg.payload).unwrap(),
                            event,
                            "nats {ct:?} {payload} {b64}"
                        );
                    }
                }
            }
        }
    }
}
