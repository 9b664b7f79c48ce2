//! Fixtures shared by the protocol bindings' unit tests.

use event_core::Event;
use serde_json::json;

/// An event with every awkward string a binding header must carry: spaces at
/// both ends, quotes, `%`, CR/LF, non-ASCII, an empty and a dotted metadata
/// key, and a metadata key that looks like a CloudEvents header.
pub(crate) fn odd_event() -> Event {
    Event::typed(
        "events.market.forex",
        "märket",
        "forex.rate_change",
        7,
        " leading space and \"quotes\" 100% ✓\r\nsecond line ",
        "/sources/路透",
        json!({"rate": 7.35, "note": "ünïcödé"}),
    )
    .with_metadata("X-Trace.Id", "  padded  ")
    .with_metadata("", "empty key")
    .with_metadata("newline", "a\nb\r\nc")
    .with_metadata(
        "ce-traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
}

/// JSON content types (in `ce-datacontenttype` metadata) that are no valid,
/// or no stable, header value; a binding must carry them anyway.
pub(crate) const HEADER_UNSAFE_CONTENT_TYPES: [&str; 5] = [
    "application/json\n",
    "application/json; name=\u{e9}",
    " application/json",
    "application/json\t",
    "application/vnd.a3s+json; x=\"a b\"",
];

/// Header values that are no valid percent-encoding under the bindings'
/// §3.1.3.2 (HTTP and NATS, same text: RFC 3986 percent-encoding, one
/// round, octets that must be UTF-8): a `%` that does not start a `%XX`
/// triplet, and triplets that decode to invalid UTF-8. Both bindings refuse
/// each one, naming the attribute.
pub(crate) const MALFORMED_PERCENT: [&str; 11] = [
    "a%zzb",
    "%",
    "%4",
    "100%",
    "%%",
    "%g0",
    "a%2",
    "\"quoted %4\"",
    "%C3%28",
    "%FF",
    "%C0%A0",
];

/// Header values that are valid percent-encoding, with what they decode to.
pub(crate) const WELL_FORMED_PERCENT: [(&str, &str); 5] = [
    ("%25zz", "%zz"),
    ("%c3%a9", "é"),
    ("%41%42", "AB"),
    ("plain", "plain"),
    ("\"%2541\"", "%41"),
];

/// Content types that name the CloudEvents formats themselves. In an HTTP
/// binary-mode `Content-Type` they announce structured or batched mode
/// (HTTP binding §3), so no binding may put an event's own
/// `datacontenttype` of this kind there.
pub(crate) const CLOUDEVENTS_CONTENT_TYPES: [&str; 4] = [
    "application/cloudevents+json",
    "Application/CloudEvents+JSON; charset=utf-8",
    "application/cloudevents-batch+json",
    "application/cloudevents",
];
