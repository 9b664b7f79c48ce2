//! Malformed CloudEvents are rejected with clear, typed errors.

use event_cloudevents::{CloudEvent, cloudevent_from_structured, from_structured};
use event_core::{Error, Event};
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "specversion": "1.0",
        "id": "e-1",
        "source": "/svc",
        "type": "t.x",
        "subject": "events.a.b",
        "time": "2024-01-02T03:04:05.678Z",
        "datacontenttype": "application/json",
        "data": {"k": 1}
    })
}

fn with(pairs: &[(&str, Value)]) -> Vec<u8> {
    let mut doc = base();
    for (k, v) in pairs {
        if v.is_null() {
            doc.as_object_mut().expect("object").remove(*k);
        } else {
            doc[*k] = v.clone();
        }
    }
    doc.to_string().into_bytes()
}

/// Asserts a serialization error whose message contains every needle.
fn rejected(doc: &[u8], needles: &[&str]) {
    match from_structured(doc) {
        Err(Error::Serialization(reason)) => {
            for needle in needles {
                assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
            }
        }
        other => panic!("expected rejection mentioning {needles:?}, got {other:?}"),
    }
}

#[test]
fn the_base_document_is_accepted() {
    let event = from_structured(&with(&[])).unwrap();
    assert_eq!(event.category, "a", "category from the subject");
    assert_eq!(event.timestamp, 1_704_164_645_678);
}

#[test]
fn invalid_documents_are_rejected_by_the_sdk() {
    rejected(b"not json", &["invalid structured CloudEvent"]);
    rejected(b"[]", &["invalid structured CloudEvent"]);
    rejected(&with(&[("id", Value::Null)]), &["id"]);
    rejected(&with(&[("type", Value::Null)]), &["type"]);
    rejected(&with(&[("source", Value::Null)]), &["source"]);
    rejected(&with(&[("specversion", json!("2.0"))]), &["2.0"]);
    rejected(
        &with(&[("time", json!("yesterday"))]),
        &["invalid structured CloudEvent"],
    );
    rejected(
        &with(&[("dataschema", json!("not a url"))]),
        &["invalid structured CloudEvent"],
    );
    rejected(&with(&[("data_base64", json!("AAEC"))]), &["data_base64"]);
}

#[test]
fn data_the_mapping_cannot_hold_is_rejected() {
    // Text under a non-JSON type is held (as the payload string, the type in
    // metadata); data that is no string there is refused (the SDK's JSON
    // format refuses it already).
    let event = from_structured(&with(&[
        ("datacontenttype", json!("text/plain")),
        ("data", json!("hello")),
    ]))
    .unwrap();
    assert_eq!(event.payload, json!("hello"));
    assert_eq!(event.metadata["ce-datacontenttype"], "text/plain");
    rejected(
        &with(&[
            ("datacontenttype", json!("text/plain")),
            ("data", json!({"k": 1})),
        ]),
        &["invalid structured CloudEvent"],
    );
    rejected(
        &with(&[
            ("datacontenttype", json!("application/json-seq")),
            ("data", json!({"k": 1})),
        ]),
        &["application/json-seq", "must be a string"],
    );
    // JSON-typed data that is not JSON stays refused
    rejected(
        &with(&[
            ("datacontenttype", json!("application/vnd.x+json")),
            ("data", Value::Null),
            ("data_base64", json!("PGEvPg==")),
        ]),
        &["not valid JSON"],
    );
    rejected(
        &with(&[
            ("datacontenttype", json!("application/json")),
            ("data", Value::Null),
            ("data_base64", json!("bm90IGpzb24=")),
        ]),
        &["not valid JSON"],
    );
    // bytes with no type (as the Python SDK writes them): refused, saying
    // what to add
    rejected(
        &with(&[
            ("datacontenttype", Value::Null),
            ("data", Value::Null),
            ("data_base64", json!("AAH/")),
        ]),
        &[
            "not valid JSON",
            "no datacontenttype",
            "application/octet-stream",
        ],
    );
}

#[test]
fn a_bad_time_is_rejected_naming_the_attribute() {
    for time in ["yesterday", "2024-01-02", "2024-01-02T03:04:05", ""] {
        rejected(
            &with(&[("time", json!(time))]),
            &["attribute time", "RFC 3339"],
        );
    }
}

#[test]
fn a_bad_dataschema_is_rejected_naming_the_attribute() {
    // The SDK said only "relative URL without a base".
    for schema in ["/relative/schema", "schema.json", "not a url", ""] {
        rejected(
            &with(&[("dataschema", json!(schema))]),
            &["attribute dataschema", "URI"],
        );
    }
}

#[test]
fn time_before_1970_is_rejected() {
    rejected(
        &with(&[("time", json!("1969-12-31T23:59:59.999Z"))]),
        &["before 1970"],
    );
}

#[test]
fn bad_a3s_extensions_are_rejected_naming_the_extension() {
    for (name, value, needle) in [
        ("a3sversion", json!("two"), "a3sversion"),
        ("a3sversion", json!(-1), "a3sversion"),
        ("a3sversion", json!(4_294_967_296_i64), "a3sversion"),
        ("a3sversion", json!(true), "a3sversion"),
        ("a3scategory", json!(5), "a3scategory"),
        ("a3ssummary", json!(false), "a3ssummary"),
        ("a3stimestamp", json!("soon"), "a3stimestamp"),
        ("a3stimestamp", json!(12), "a3stimestamp"),
        ("a3sdefaulted", json!("type,subject"), "subject"),
        // an id that is not the one derived from the event
        ("a3sdefaulted", json!("id"), "derived"),
        ("a3sxzz", json!("v"), "a3sxzz"),
        ("a3sx6", json!("v"), "odd number"),
        ("a3sxff", json!("v"), "UTF-8"),
    ] {
        match from_structured(&with(&[(name, value.clone())])) {
            Err(Error::Serialization(reason)) => {
                assert!(reason.contains(needle), "{name}={value}: {reason}")
            }
            other => panic!("{name}={value}: expected rejection, got {other:?}"),
        }
    }
}

#[test]
fn two_attributes_for_one_metadata_key_are_rejected() {
    // a3smregion and the hex form of "region" both claim metadata key "region".
    rejected(
        &with(&[("a3smregion", json!("a")), ("a3sx726567696f6e", json!("b"))]),
        &["region"],
    );
    // A foreign dataschema and an encoded metadata entry "ce-dataschema".
    let hex_ce_dataschema = format!(
        "a3sx{}",
        "ce-dataschema"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    rejected(
        &with(&[
            ("dataschema", json!("https://x.example/s")),
            (&hex_ce_dataschema, json!("y")),
        ]),
        &["ce-dataschema"],
    );
}

#[test]
fn accepted_variants_of_a3s_extensions() {
    // Binary-mode HTTP carries every extension as a string: numbers in
    // strings are accepted where the mapping expects integers.
    let event = from_structured(&with(&[
        ("a3sversion", json!("7")),
        ("a3sdefaulted", json!("source,type")),
        ("source", json!("a3s")),
        ("type", json!("a3s.event")),
        ("a3stimestamp", json!("99")),
        ("time", Value::Null),
    ]))
    .unwrap();
    assert_eq!(event.version, 7);
    assert_eq!(event.source, "", "defaulted source restores empty");
    assert_eq!(event.event_type, "", "defaulted type restores empty");
    assert_eq!(event.timestamp, 99);
}

#[test]
fn publishing_path_never_panics_on_weird_sdk_events() {
    // An SDK event built by hand, with names the spec forbids, still converts
    // (into ce-… metadata) and back.
    let mut ce = cloudevent_from_structured(&with(&[])).unwrap();
    ce.set_extension("Not_Valid", "x");
    ce.set_extension("a3sfuture", 3_i64);
    let event = Event::try_from(ce).unwrap();
    assert_eq!(event.metadata["ce-Not_Valid"], "x");
    assert_eq!(event.metadata["ce-a3sfuture"], "3");
    let again = Event::try_from(CloudEvent::from(event.clone())).unwrap();
    assert_eq!(again, event);
}

#[test]
fn json_content_types_the_sdk_misses_round_trip_in_structured_mode() {
    // Media types are case-insensitive and may carry parameters; the SDK only
    // recognises JSON by a case-sensitive prefix or a bare `+json` suffix, and
    // read such data as a string (an object failed, a JSON string holding
    // JSON text came back parsed).
    for ct in [
        "application/vnd.a3s+json; charset=utf-8",
        "Application/JSON",
        "TEXT/JSON",
        "application/cloudevents-ish+JSON",
    ] {
        for payload in [
            json!({"k": 1}),
            json!("hello"),
            json!("{\"a\":1}"),
            json!(7),
        ] {
            let mut event = Event::new("events.a.b", "a", "s", "src", payload.clone())
                .with_metadata("ce-datacontenttype", ct);
            event.payload = payload.clone();
            let doc = event_cloudevents::to_structured(&event).unwrap();
            assert_eq!(from_structured(&doc).unwrap(), event, "{ct} {payload}");
            let batch =
                event_cloudevents::to_structured_batch(std::slice::from_ref(&event)).unwrap();
            assert_eq!(
                event_cloudevents::from_structured_batch(&batch).unwrap(),
                vec![event.clone()],
                "batch {ct} {payload}"
            );
        }
    }
    // A foreign document of that kind is read as the JSON it holds.
    let event = from_structured(&with(&[
        (
            "datacontenttype",
            json!("application/vnd.x+json; charset=utf-8"),
        ),
        ("data", json!("{\"a\":1}")),
    ]))
    .unwrap();
    assert_eq!(event.payload, json!("{\"a\":1}"));
    // data and data_base64 together are still refused.
    rejected(
        &with(&[
            ("datacontenttype", json!("Application/JSON")),
            ("data_base64", json!("e30=")),
        ]),
        &["data_base64"],
    );
}

#[test]
fn empty_required_attributes_are_rejected() {
    // spec.md: id, source and type MUST be non-empty.
    rejected(&with(&[("id", json!(""))]), &["`id`", "empty"]);
    rejected(&with(&[("source", json!(""))]), &["`source`", "empty"]);
    rejected(&with(&[("type", json!(""))]), &["`type`", "empty"]);
}

/// The bindings (HTTP, NATS) refuse a CloudEvent with an empty `id`,
/// `source`, `type` or `subject` in either mode, which CloudEvents forbids;
/// the JSON event format's own reader handed it on (a relay reading
/// documents from a queue passed on what no binding reads), and so did
/// `serde_json` into a `CloudEvent`.
#[test]
fn empty_required_attributes_are_refused_as_a_cloudevent_too() {
    for attribute in ["id", "source", "type", "subject"] {
        let doc = with(&[(attribute, json!(""))]);
        match cloudevent_from_structured(&doc) {
            Err(Error::Serialization(reason)) => {
                assert!(reason.contains(&format!("`{attribute}`")), "{reason}");
                assert!(reason.contains("empty"), "{reason}");
            }
            other => panic!("{attribute}: expected a serialization error, got {other:?}"),
        }
        assert!(
            serde_json::from_slice::<CloudEvent>(&doc).is_err(),
            "{attribute}"
        );
    }
}

#[test]
fn an_empty_subject_is_rejected() {
    // spec.md: `subject`, when present, MUST be a non-empty string. An A3S
    // event holds "no subject" as an empty one, so an empty subject would come
    // back absent: refused, as an empty id is, rather than changed.
    rejected(&with(&[("subject", json!(""))]), &["`subject`", "empty"]);
}

#[test]
fn a_defaulted_mark_on_a_value_that_is_not_the_default_is_rejected() {
    // `a3sdefaulted: source` says the source is the placeholder `a3s` for an
    // empty one; on any other source (changed on the way) the mark is stale,
    // and honouring it would throw that source away.
    rejected(
        &with(&[("a3sdefaulted", json!("source"))]),
        &["a3sdefaulted", "source", "/svc"],
    );
    rejected(
        &with(&[("a3sdefaulted", json!("type"))]),
        &["a3sdefaulted", "type", "t.x"],
    );
}

#[test]
fn a3stimestamp_next_to_time_is_rejected() {
    // `a3stimestamp` stands in for a `time` past year 9999; next to a `time`
    // one of the two would be dropped.
    rejected(
        &with(&[("a3stimestamp", json!("99"))]),
        &["a3stimestamp", "time"],
    );
}

/// Attribute names are lowercase letters and digits (CloudEvents 1.0
/// §3.1.1): structured mode refuses the others as binary mode refuses a
/// `ce-a_b` header, instead of storing an extension no CloudEvent may have.
#[test]
fn structured_mode_refuses_invalid_attribute_names() {
    for name in ["BadName", "a-b", "a_b", "a.b", "ünï"] {
        rejected(&with(&[(name, json!("x"))]), &["attribute name", name]);
    }
    // `data_base64` is a member of the JSON format, not an attribute.
    let doc = json!({
        "specversion": "1.0", "id": "e-1", "source": "/svc", "type": "t.x",
        "subject": "events.a.b", "datacontenttype": "application/octet-stream",
        "data_base64": "AAEC"
    });
    assert!(from_structured(doc.to_string().as_bytes()).is_ok());
    // A very long bad name is named by its start only.
    let long = "X".repeat(100_000);
    match from_structured(&with(&[(long.as_str(), json!("x"))])) {
        Err(Error::Serialization(reason)) => assert!(reason.len() < 400, "{}", reason.len()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}
