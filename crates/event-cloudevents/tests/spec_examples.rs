//! The CloudEvents specification's own example events, parsed with the SDK
//! and converted.

use cloudevents::AttributesReader;
use event_cloudevents::{CloudEvent, cloudevent_from_structured, from_structured};
use event_core::Event;
use serde_json::json;

/// spec.md, "Example" (v1.0.2): XML data.
const SPEC_XML: &str = r#"{
    "specversion" : "1.0",
    "type" : "com.github.pull_request.opened",
    "source" : "https://github.com/cloudevents/spec/pull",
    "subject" : "123",
    "id" : "A234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "text/xml",
    "data" : "<much wow=\"xml\"/>"
}"#;

/// json-format.md §3.1 "Example": binary (base64) data.
const JSON_FORMAT_BINARY: &str = r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "A234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/vnd.apache.thrift.binary",
    "data_base64" : "AAECAwQ="
}"#;

/// json-format.md §3.1 "Example": JSON data, with null attributes.
const JSON_FORMAT_JSON: &str = r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "subject": null,
    "id" : "C234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "unsetextension": null,
    "datacontenttype" : "application/json",
    "data" : {
        "appinfoA" : "abc",
        "appinfoB" : 123,
        "appinfoC" : true
    }
}"#;

/// json-format.md §3.1 "Example": XML data as a JSON string.
const JSON_FORMAT_STRING_DATA: &str = r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "B234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "unsetextension": null,
    "datacontenttype" : "text/xml",
    "data" : "<much wow=\"xml\"/>"
}"#;

/// The minimal event: required attributes only (spec.md "REQUIRED Attributes").
const MINIMAL: &str = r#"{
    "specversion" : "1.0",
    "type" : "com.example.object.deleted.v2",
    "source" : "urn:event:from:myapi/resource/123",
    "id" : "1234-1234-1234"
}"#;

/// A v0.3 event (the SDK reads both versions).
const V03: &str = r#"{
    "specversion" : "0.3",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "D234-1234-1234",
    "time" : "2018-04-05T17:31:00.123456789Z",
    "datacontenttype" : "application/json",
    "data" : [1, 2, 3]
}"#;

/// 2018-04-05T17:31:00Z in Unix milliseconds.
const APRIL_5_2018: u64 = 1_522_949_460_000;

#[test]
fn json_data_example_converts_with_foreign_extensions_in_metadata() {
    let event = from_structured(JSON_FORMAT_JSON.as_bytes()).unwrap();
    assert_eq!(event.id, "C234-1234-1234");
    assert_eq!(event.event_type, "com.example.someevent");
    assert_eq!(event.source, "/mycontext");
    assert_eq!(event.subject, "", "null subject is absent");
    assert_eq!(event.category, "", "no subject, no a3scategory");
    assert_eq!(event.summary, "");
    assert_eq!(event.version, 1);
    assert_eq!(event.timestamp, APRIL_5_2018);
    assert_eq!(
        event.payload,
        json!({"appinfoA": "abc", "appinfoB": 123, "appinfoC": true})
    );
    assert_eq!(event.metadata.len(), 2, "{:?}", event.metadata);
    assert_eq!(event.metadata["ce-comexampleextension1"], "value");
    assert_eq!(event.metadata["ce-comexampleothervalue"], "5");

    // And back: the foreign extensions are restored under their own names.
    let ce = CloudEvent::from(event.clone());
    assert_eq!(ce.id(), "C234-1234-1234");
    assert_eq!(ce.ty(), "com.example.someevent");
    assert_eq!(ce.source(), "/mycontext");
    assert_eq!(
        ce.extension("comexampleextension1")
            .map(ToString::to_string),
        Some("value".to_string())
    );
    assert_eq!(
        ce.extension("comexampleothervalue")
            .map(ToString::to_string),
        Some("5".to_string())
    );
    assert_eq!(
        ce.time().map(|t| t.to_rfc3339()),
        Some("2018-04-05T17:31:00+00:00".into())
    );
    assert_eq!(Event::try_from(ce).unwrap(), event);
}

#[test]
fn minimal_example_takes_documented_defaults() {
    let before = event_core::now_millis();
    let event = from_structured(MINIMAL.as_bytes()).unwrap();
    let after = event_core::now_millis();
    assert_eq!(event.id, "1234-1234-1234");
    assert_eq!(event.event_type, "com.example.object.deleted.v2");
    assert_eq!(event.source, "urn:event:from:myapi/resource/123");
    assert_eq!(
        event.payload,
        serde_json::Value::Null,
        "no data is a null payload"
    );
    assert!(event.metadata.is_empty());
    assert!(
        (before..=after).contains(&event.timestamp),
        "missing time is the conversion time"
    );
}

#[test]
fn v03_example_converts_and_time_is_truncated_to_milliseconds() {
    let event = from_structured(V03.as_bytes()).unwrap();
    assert_eq!(event.id, "D234-1234-1234");
    assert_eq!(event.payload, json!([1, 2, 3]));
    assert_eq!(event.timestamp, APRIL_5_2018 + 123);
}

#[test]
fn non_json_examples_convert_and_come_back_with_the_same_data() {
    for (name, doc, ct, member, data, marked) in [
        (
            "spec xml",
            SPEC_XML,
            "text/xml",
            "data",
            "<much wow=\"xml\"/>",
            false,
        ),
        (
            "json-format xml",
            JSON_FORMAT_STRING_DATA,
            "text/xml",
            "data",
            "<much wow=\"xml\"/>",
            false,
        ),
        (
            "json-format base64",
            JSON_FORMAT_BINARY,
            "application/vnd.apache.thrift.binary",
            "data_base64",
            "AAECAwQ=",
            true,
        ),
    ] {
        // The SDK parses it ...
        let ce = cloudevent_from_structured(doc.as_bytes()).unwrap();
        assert_eq!(ce.datacontenttype(), Some(ct));
        // ... and the event holds the text, or the bytes as marked base64
        let event = Event::try_from(ce).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(event.payload, json!(data), "{name}");
        assert_eq!(event.metadata["ce-datacontenttype"], ct, "{name}");
        assert_eq!(
            event.metadata.get("ce-data_base64").map(String::as_str),
            marked.then_some("true"),
            "{name}"
        );
        // written back: the same type and data member as the example
        let back: serde_json::Value =
            serde_json::from_slice(&event_cloudevents::to_structured(&event).unwrap()).unwrap();
        assert_eq!(back["datacontenttype"], ct, "{name}");
        assert_eq!(back[member], data, "{name}");
        assert_eq!(back["id"], event.id, "{name}");
        assert_eq!(back["comexampleextension1"], "value", "{name}");
        assert_eq!(
            from_structured(back.to_string().as_bytes()).unwrap(),
            event,
            "{name}"
        );
    }
}

#[test]
fn spec_xml_example_without_data_converts() {
    // The same event minus its XML data is representable: the content type is
    // kept in metadata and written back.
    let mut doc: serde_json::Value = serde_json::from_str(SPEC_XML).unwrap();
    doc.as_object_mut().unwrap().remove("data");
    let event = from_structured(doc.to_string().as_bytes()).unwrap();
    assert_eq!(event.subject, "123");
    assert_eq!(event.category, "");
    assert_eq!(event.metadata["ce-datacontenttype"], "text/xml");
    let ce = CloudEvent::from(event.clone());
    assert_eq!(ce.subject(), Some("123"));
    assert_eq!(Event::try_from(ce).unwrap(), event);
}

#[test]
fn json_data_in_base64_is_accepted() {
    let doc = json!({
        "specversion": "1.0", "type": "t", "source": "s", "id": "1",
        "datacontenttype": "application/json",
        "data_base64": "eyJrIjogMX0=" // {"k": 1}
    });
    let event = from_structured(doc.to_string().as_bytes()).unwrap();
    assert_eq!(event.payload, json!({"k": 1}));
}

#[test]
fn a_null_data_base64_member_is_no_data() {
    // json-format.md §2.2: a `null` member is treated as unset or omitted.
    let doc = json!({
        "specversion": "1.0", "type": "t", "source": "s", "id": "1",
        "datacontenttype": "application/json",
        "data_base64": null
    });
    let event = from_structured(doc.to_string().as_bytes()).unwrap();
    assert_eq!(event.payload, serde_json::Value::Null);
    // Next to JSON `data`, it does not stop the data being read as JSON.
    let doc = json!({
        "specversion": "1.0", "type": "t", "source": "s", "id": "1",
        "datacontenttype": "application/vnd.a3s+json; charset=utf-8",
        "data": {"k": 1},
        "data_base64": null
    });
    let event = from_structured(doc.to_string().as_bytes()).unwrap();
    assert_eq!(event.payload, json!({"k": 1}));
}
