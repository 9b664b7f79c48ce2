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
