//! The HTTP binding end to end: a local axum server (127.0.0.1:0) receiving
//! events through the `HttpEvent` extractor, and `send_http` posting to it in
//! both modes.

mod common;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::Rng;
use event_cloudevents::http::client::{
    HttpStatusError, MAX_REPLY_SIZE, post_http, send_http, status_error,
};
use event_cloudevents::http::server::{HttpEvent, http_response};
use event_cloudevents::http::{Mode, to_http};
use event_core::{Error, Event};
use serde_json::json;
use std::time::Duration;
use tokio::sync::mpsc;

struct Server {
    base: String,
    received: mpsc::UnboundedReceiver<Event>,
}

async fn collect(
    State(tx): State<mpsc::UnboundedSender<Event>>,
    HttpEvent(event): HttpEvent,
) -> StatusCode {
    tx.send(event).expect("test receiver alive");
    StatusCode::ACCEPTED
}

async fn echo_binary(HttpEvent(event): HttpEvent) -> HttpEvent {
    HttpEvent(event)
}

async fn echo_structured(HttpEvent(event): HttpEvent) -> Response {
    http_response(&event, Mode::Structured)
}

async fn status(axum::extract::Path(code): axum::extract::Path<u16>) -> Response {
    (StatusCode::from_u16(code).expect("valid code"), "nope").into_response()
}

async fn slow() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(5)).await;
    StatusCode::OK
}

async fn start() -> Server {
    let (tx, received) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/events", post(collect))
        .route("/small", post(collect).layer(DefaultBodyLimit::max(1024)))
        .with_state(tx)
        .route("/echo/binary", post(echo_binary))
        .route("/echo/structured", post(echo_structured))
        .route("/status/{code}", post(status))
        .route("/slow", post(slow));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    Server {
        base: format!("http://{addr}"),
        received,
    }
}

impl Server {
    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(5), self.received.recv())
            .await
            .expect("received in time")
            .expect("channel open")
    }
}

fn odd_event() -> Event {
    Event::typed(
        "events.market.forex",
        "märket",
        "forex.rate_change",
        3,
        "  USD/CNY \"broke\" 7.35 — 100% ✓ 😀",
        "/sources/路透",
        json!({"rate": 7.3521, "note": "ünïcödé", "nested": {"a": [1, null, true]}}),
    )
    .with_metadata("X-Request-Id", "r-42")
    .with_metadata("a.b", " spaced ")
    .with_metadata("", "empty key")
    .with_metadata(
        "ce-traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
}

#[tokio::test]
async fn events_posted_in_both_modes_arrive_equal() {
    let mut server = start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/events", server.base);
    let event = odd_event();
    for mode in [Mode::Binary, Mode::Structured] {
        let reply = send_http(&client, &url, &event, mode).await.unwrap();
        assert_eq!(reply, None, "202 without a CloudEvent is no reply");
        assert_eq!(server.next().await, event, "{mode:?}");
    }
}

#[tokio::test]
async fn random_events_over_http_arrive_equal() {
    let mut server = start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/events", server.base);
    for seed in 0..60 {
        let event = Rng::new(seed).event();
        let mode = if seed % 2 == 0 {
            Mode::Binary
        } else {
            Mode::Structured
        };
        send_http(&client, &url, &event, mode)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(server.next().await, event, "seed {seed} {mode:?}");
    }
}

#[tokio::test]
async fn large_payload_round_trips() {
    let mut server = start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/events", server.base);
    let mut event = odd_event();
    event.payload = json!({"blob": "é".repeat(400_000), "n": 1}); // ~800 KB
    for mode in [Mode::Binary, Mode::Structured] {
        send_http(&client, &url, &event, mode).await.unwrap();
        assert_eq!(server.next().await, event, "{mode:?}");
    }
}

#[tokio::test]
async fn reply_events_are_read_back_in_both_modes() {
    let server = start().await;
    let client = reqwest::Client::new();
    let event = odd_event();
    for (path, send_mode) in [
        ("echo/binary", Mode::Structured),
        ("echo/structured", Mode::Binary),
    ] {
        let url = format!("{}/{path}", server.base);
        let reply = send_http(&client, &url, &event, send_mode).await.unwrap();
        assert_eq!(reply.as_ref(), Some(&event), "{path}");
    }
}

#[tokio::test]
async fn spec_binary_example_is_received() {
    // http-protocol-binding.md §3.1.4 "Example", with a JSON body.
    let mut server = start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/events", server.base))
        .header("ce-specversion", "1.0")
        .header("ce-type", "com.example.someevent")
        .header("ce-time", "2018-04-05T03:56:24Z")
        .header("ce-id", "1234-1234-1234")
        .header("ce-source", "/mycontext/subcontext")
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"app": "data"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let event = server.next().await;
    assert_eq!(event.id, "1234-1234-1234");
    assert_eq!(event.event_type, "com.example.someevent");
    assert_eq!(event.source, "/mycontext/subcontext");
    assert_eq!(event.timestamp, 1_522_900_584_000);
    assert_eq!(event.payload, json!({"app": "data"}));
    assert_eq!(
        event.metadata.get("ce-datacontenttype").map(String::as_str),
        Some("application/json; charset=utf-8")
    );
}

/// A binary-mode request as another producer sends it, with `body` under
/// `content_type`.
async fn post_binary(url: &str, content_type: &str, body: &[u8]) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "ext-1")
        .header("ce-source", "urn:example:producer")
        .header("ce-type", "com.example.upload")
        .header("ce-time", "2024-05-06T07:08:09.123Z")
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .expect("request sent")
}

/// Text and binary bodies in binary mode (what most HTTP producers send for
/// non-JSON data) used to be answered 400 "not JSON": now they arrive, and
/// an event echoed back goes out with the same Content-Type and body bytes.
#[tokio::test]
async fn text_and_binary_bodies_are_received_and_sent_back_unchanged() {
    use base64::Engine as _;
    let mut server = start().await;
    let png: &[u8] = &[0x89, b'P', b'N', b'G', 0x00, 0xff, 0x0a];
    let text = "hello, wörld\n".as_bytes();
    for (content_type, body, payload, marked) in [
        ("text/plain", text, json!("hello, wörld\n"), false),
        (
            "application/octet-stream",
            png,
            json!(base64::engine::general_purpose::STANDARD.encode(png)),
            true,
        ),
        (
            "text/plain; charset=utf-8",
            &[b'a', 0xff][..],
            json!("Yf8="),
            true,
        ),
        // a tab around a parameter's `;` (RFC 9110 OWS)
        (
            "text/plain;\tcharset=utf-8",
            text,
            json!("hello, wörld\n"),
            false,
        ),
    ] {
        let response = post_binary(&format!("{}/events", server.base), content_type, body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{content_type}");
        let event = server.next().await;
        assert_eq!(event.payload, payload, "{content_type}");
        assert_eq!(
            event.metadata.get("ce-datacontenttype").map(String::as_str),
            Some(content_type)
        );
        assert_eq!(
            event.metadata.get("ce-data_base64").map(String::as_str),
            marked.then_some("true")
        );

        let response =
            post_binary(&format!("{}/echo/binary", server.base), content_type, body).await;
        assert_eq!(response.status(), StatusCode::OK, "{content_type}");
        assert_eq!(
            response.headers()["content-type"],
            content_type,
            "{content_type}"
        );
        assert!(response.headers().get("ce-data_base64").is_none());
        assert_eq!(response.headers()["ce-id"], "ext-1");
        assert_eq!(&response.bytes().await.unwrap()[..], body, "{content_type}");

        // and the event itself over both modes
        for mode in [Mode::Binary, Mode::Structured] {
            let url = format!("{}/events", server.base);
            send_http(&reqwest::Client::new(), &url, &event, mode)
                .await
                .unwrap();
            assert_eq!(server.next().await, event, "{content_type} {mode:?}");
        }
    }
}

async fn post_raw(url: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().post(url).body(body.to_owned());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    (status, response.text().await.expect("body read"))
}

#[tokio::test]
async fn malformed_requests_are_answered_400_with_the_reason() {
    let server = start().await;
    let url = format!("{}/events", server.base);
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("content-type", "application/json"),
    ];

    // Not a CloudEvent at all.
    let (status, body) = post_raw(&url, &[("content-type", "application/json")], "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not a CloudEvent"), "{body}");

    // Binary mode without ce-type.
    let (status, body) = post_raw(&url, &binary, "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("type"), "{body}");

    // Body that is not JSON under a JSON content type.
    let mut with_type = binary.to_vec();
    with_type.push(("ce-type", "t"));
    let (status, body) = post_raw(&url, &with_type, "{oops").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not valid JSON"), "{body}");

    // A JSON content type other than application/json with a body that is
    // not JSON.
    let mut vnd = with_type.clone();
    vnd.retain(|(k, _)| *k != "content-type");
    vnd.push(("content-type", "application/vnd.x+json"));
    let (status, body) = post_raw(&url, &vnd, "<a/>").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not valid JSON"), "{body}");

    // Bad A3S extension.
    let mut bad_version = with_type.clone();
    bad_version.push(("ce-a3sversion", "two"));
    let (status, body) = post_raw(&url, &bad_version, "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("a3sversion"), "{body}");

    // Percent-encoding that is not UTF-8.
    let mut bad_pct = with_type.clone();
    bad_pct.push(("ce-a3ssummary", "%FF"));
    let (status, body) = post_raw(&url, &bad_pct, "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("a3ssummary"), "{body}");

    // Structured mode with a broken document.
    let (status, body) = post_raw(
        &url,
        &[("content-type", "application/cloudevents+json")],
        r#"{"specversion":"1.0","id":"1"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("invalid CloudEvent"), "{body}");

    // A datacontenttype that is no media type (RFC 2046: printable ASCII):
    // accepted, it could not be relayed in binary mode (as Content-Type).
    for ct in [
        "text/pl\u{e9}",
        "text/plain\r\nx: 1",
        "application/json\u{7f}",
    ] {
        let doc = json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "datacontenttype": ct, "data": "x"
        });
        let (status, body) = post_raw(
            &url,
            &[("content-type", "application/cloudevents+json")],
            &doc.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ct:?}");
        assert!(body.contains("datacontenttype"), "{ct:?}: {body}");
    }
}

/// A CloudEvents message in a format the extractor does not read (a batch,
/// structured mode in an event format other than JSON) is well-formed but
/// unsupported: `415 Unsupported Media Type`, so that a sender can tell it
/// from a malformed event (`400`) and fall back to single events in JSON.
#[tokio::test]
async fn cloudevents_formats_not_read_are_answered_415() {
    let server = start().await;
    let url = format!("{}/events", server.base);
    for (content_type, body, names) in [
        (
            "application/cloudevents-batch+json",
            "[]",
            "from_structured_batch",
        ),
        (
            "application/cloudevents+xml",
            "<event/>",
            "application/cloudevents+json",
        ),
    ] {
        let (status, text) = post_raw(&url, &[("content-type", content_type)], body).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}: {text}"
        );
        assert!(text.contains(names), "{content_type}: {text}");
    }
}

/// A body in a content coding (`Content-Encoding: gzip`) is an encoded form
/// of the data, which the extractor does not decode: it is answered `415`
/// (RFC 9110 §8.4.1), as the routing webhook answers it, never taken for the
/// event's data. `identity` is no coding.
#[tokio::test]
async fn a_body_with_a_content_encoding_is_answered_415_not_taken_for_the_data() {
    let mut server = start().await;
    let url = format!("{}/events", server.base);
    // (a gzip stream's first bytes; the extractor must not store them)
    let gzip = "\u{1f}\u{8b}\u{8}\u{0}compressed";
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
        ("content-type", "application/octet-stream"),
    ];
    for coding in ["gzip", "identity, br", "GZIP"] {
        let mut headers = binary.to_vec();
        headers.push(("content-encoding", coding));
        let (status, text) = post_raw(&url, &headers, gzip).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{coding}: {text}"
        );
        assert!(text.contains("Content-Encoding"), "{coding}: {text}");
        assert!(
            text.contains("an encoded form of the event, which is not decoded here"),
            "{coding}: {text}"
        );
        let structured = [
            ("content-type", "application/cloudevents+json"),
            ("content-encoding", coding),
        ];
        let (status, text) = post_raw(&url, &structured, gzip).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{coding}: {text}"
        );
    }
    // `identity` is the body itself
    let mut headers = binary.to_vec();
    headers.push(("content-encoding", "identity"));
    let (status, text) = post_raw(&url, &headers, "raw").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert_eq!(
        event_cloudevents::data::data_bytes(&server.next().await),
        Some(b"raw".to_vec())
    );
    // nothing else arrived
    assert!(server.received.try_recv().is_err());
}

/// A structured-mode document that names an attribute twice is refused as
/// ambiguous, as binary mode refuses a repeated `ce-*` header: JSON parsers
/// disagree on which member wins (first, last, or an error), so a relay and
/// the final receiver could each read a different event.
#[tokio::test]
async fn a_structured_document_repeating_an_attribute_is_refused() {
    let server = start().await;
    let url = format!("{}/events", server.base);
    let structured = [("content-type", "application/cloudevents+json")];
    let (status, text) = post_raw(
        &url,
        &structured,
        r#"{"specversion":"1.0","id":"z8","id":"z9","source":"/s","type":"t"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains(r#"member "id" more than once"#), "{text}");
    // `data` counts as a member too: two of them are as ambiguous
    let (status, text) = post_raw(
        &url,
        &structured,
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data":2}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains(r#""data" more than once"#), "{text}");
    // repeated keys inside `data` are the data's own JSON, not attributes
    // (read as serde_json reads them: the last one wins)
    let mut event = odd_event();
    event.payload = json!({"k": 1});
    let document = String::from_utf8(event_cloudevents::to_structured(&event).expect("encoded"))
        .expect("UTF-8");
    let document = document.replacen(r#""k":1"#, r#""k":1,"k":2"#, 1);
    let (status, text) = post_raw(&url, &structured, &document).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let server = start().await;
    let mut event = odd_event();
    event.payload = json!("x".repeat(4096));
    let err = send_http(
        &reqwest::Client::new(),
        &format!("{}/small", server.base),
        &event,
        Mode::Binary,
    )
    .await
    .unwrap_err();
    match err {
        Error::Provider { provider, source } => {
            assert_eq!(provider, "http");
            let status = source
                .downcast_ref::<HttpStatusError>()
                .expect("status error");
            assert_eq!(status.status, 413);
        }
        other => panic!("expected a 413 provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn status_errors_are_typed_by_retryability() {
    // Every answered status is an HttpStatusError, retryable by Knative's
    // rule. 408, 429 and 5xx were `Error::Connection` (the endpoint did
    // answer), and 404 and 409, which Knative retries, were not retryable.
    let server = start().await;
    let client = reqwest::Client::new();
    let event = odd_event();
    for (code, retryable) in [
        (500_u16, true),
        (503, true),
        (429, true),
        (408, true),
        (404, true),
        (409, true),
        (400, false),
        (403, false),
        (410, false),
        (422, false),
    ] {
        let url = format!("{}/status/{code}", server.base);
        let err = send_http(&client, &url, &event, Mode::Binary)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Provider { provider, .. } if provider == "http"),
            "{code}: {err:?}"
        );
        assert!(
            !err.is_transient(),
            "{code}: an answer, not a transport failure"
        );
        let status = status_error(&err).expect("status error");
        assert_eq!(status.status, code);
        assert_eq!(status.body, "nope");
        assert_eq!(status.url, url);
        assert_eq!(status.retry_after, None, "{code}");
        assert_eq!(status.is_retryable(), retryable, "{code}");
        assert!(err.to_string().contains(&format!("HTTP {code}")), "{err}");
    }
}

/// A server whose `POST /{code}` answers `code` with `Retry-After: {value}`
/// (the value from the query string).
async fn retry_after_server() -> String {
    let app = Router::new().route(
        "/{code}",
        post(
            |axum::extract::Path(code): axum::extract::Path<u16>,
             axum::extract::RawQuery(value): axum::extract::RawQuery| async move {
                let value = value.map(|v| v.replace("%20", " ")).unwrap_or_default();
                (
                    StatusCode::from_u16(code).expect("valid code"),
                    [("retry-after", value)],
                )
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

#[tokio::test]
async fn retry_after_is_read_from_429_and_503_answers() {
    let base = retry_after_server().await;
    let client = reqwest::Client::new();
    let retry_after = |code: u16, value: &str| {
        let url = format!("{base}/{code}?{}", value.replace(' ', "%20"));
        let client = client.clone();
        async move {
            let err = post_http(&client, &url, &odd_event(), Mode::Binary)
                .await
                .unwrap_err();
            status_error(&err).expect("status error").retry_after
        }
    };
    assert_eq!(retry_after(429, "7").await, Some(Duration::from_secs(7)));
    assert_eq!(retry_after(503, "0").await, Some(Duration::ZERO));
    let in_a_minute =
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
    let waited = retry_after(503, &in_a_minute).await.expect("a date");
    assert!(
        waited > Duration::from_secs(55) && waited <= Duration::from_secs(60),
        "{waited:?}"
    );
    assert_eq!(
        retry_after(429, "Sun, 06 Nov 1994 08:49:37 GMT").await,
        Some(Duration::ZERO),
        "a date already past"
    );
    // Not a delay, or not a status it applies to (as in Knative): none.
    assert_eq!(retry_after(429, "soon").await, None);
    assert_eq!(retry_after(500, "7").await, None);
    assert_eq!(retry_after(404, "7").await, None);
}

#[tokio::test]
async fn unreachable_endpoint_is_a_connection_error() {
    // Bind, note the port, close: nothing listens there any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = send_http(
        &reqwest::Client::new(),
        &format!("http://{addr}/events"),
        &odd_event(),
        Mode::Binary,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn client_timeout_is_a_timeout_error() {
    let server = start().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = send_http(
        &client,
        &format!("{}/slow", server.base),
        &odd_event(),
        Mode::Structured,
    )
    .await
    .unwrap_err();
    match err {
        Error::Timeout { operation, elapsed } => {
            assert!(operation.contains("/slow"), "{operation}");
            assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn binary_messages_carry_only_ascii_headers() {
    let msg = to_http(&odd_event(), Mode::Binary).unwrap();
    for (name, value) in &msg.headers {
        assert!(value.to_str().is_ok(), "{name}: {value:?}");
    }
}

/// A raw server that answers every request with `status_line`, `headers`
/// and a chunked body that never ends.
async fn endless_body_server(status_line: &'static str, headers: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0_u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 {status_line}\r\n{headers}transfer-encoding: chunked\r\n\r\n"
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 8192, "e".repeat(8192));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    format!("http://{addr}/events")
}

#[tokio::test]
async fn an_error_response_body_is_read_only_as_far_as_it_is_kept() {
    // The error keeps at most 512 bytes of the body; reading all of it first
    // let an endpoint stall the sender forever with an endless body.
    for (status_line, code) in [("500 Internal Server Error", 500), ("404 Not Found", 404)] {
        let url = endless_body_server(status_line, "content-type: text/plain\r\n").await;
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            send_http(&reqwest::Client::new(), &url, &odd_event(), Mode::Binary),
        )
        .await
        .expect("the sender stops reading after the part it keeps")
        .unwrap_err();
        assert_eq!(status_error(&err).map(|s| s.status), Some(code), "{err}");
        assert!(err.to_string().contains("eeee"), "{err}");
    }
}

#[tokio::test]
async fn a_success_response_body_is_never_read_without_bound() {
    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .unwrap_or_else(|_| panic!("{what}: stalled on an endless body"))
    }
    let client = reqwest::Client::new();
    // Not a CloudEvent: nothing to read; the body is not waited for.
    let url = endless_body_server("200 OK", "content-type: text/plain\r\n").await;
    let reply = within(
        "plain reply",
        send_http(&client, &url, &odd_event(), Mode::Binary),
    )
    .await;
    assert_eq!(reply.unwrap(), None);
    // A reply CloudEvent that never ends: read up to the limit, then refused.
    let url = endless_body_server(
        "200 OK",
        "ce-specversion: 1.0\r\nce-id: r\r\nce-source: s\r\nce-type: t\r\n\
         content-type: application/json\r\n",
    )
    .await;
    let reply = within(
        "reply event",
        send_http(&client, &url, &odd_event(), Mode::Binary),
    )
    .await;
    match reply {
        Err(Error::PayloadTooLarge { size, max }) => {
            assert_eq!(max, MAX_REPLY_SIZE);
            assert!(size > MAX_REPLY_SIZE);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // post_http ignores the reply altogether.
    within(
        "post_http",
        post_http(&client, &url, &odd_event(), Mode::Binary),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn requests_that_cannot_be_built_are_not_transient() {
    use event_cloudevents::CloudEvent;
    use event_cloudevents::http::client::send_cloudevent_http;
    let client = reqwest::Client::new();

    // An unusable URL is a configuration error, not a connection problem to retry.
    let err = send_http(&client, "not a url", &odd_event(), Mode::Binary)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(
        matches!(err, Error::InvalidConfig { ref field, .. } if field == "url"),
        "{err:?}"
    );

    // An extension name that cannot be a header name: as `cloudevent_to_http`.
    let server = start().await;
    let mut ce = CloudEvent::from(odd_event());
    ce.set_extension("not valid", "x");
    let err = send_cloudevent_http(
        &client,
        &format!("{}/events", server.base),
        ce,
        Mode::Binary,
    )
    .await
    .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(matches!(err, Error::Serialization(_)), "{err:?}");
}

/// A server whose `POST /{code}` answers `code` with `reply` as a binary-mode
/// CloudEvent; returns its base URL and the `Prefer` header of each request.
async fn replying_server(
    reply: Event,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
) {
    let prefer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = prefer.clone();
    let app = Router::new().route(
        "/{code}",
        post(
            move |axum::extract::Path(code): axum::extract::Path<u16>,
                  headers: axum::http::HeaderMap| {
                let reply = reply.clone();
                let seen = seen.clone();
                async move {
                    seen.lock().expect("lock").push(
                        headers
                            .get("prefer")
                            .map(|v| v.to_str().expect("ascii").to_owned()),
                    );
                    let msg = to_http(&reply, Mode::Binary).expect("encodes");
                    (
                        StatusCode::from_u16(code).expect("valid code"),
                        msg.headers,
                        msg.body,
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}"), prefer)
}

#[tokio::test]
async fn send_http_asks_for_a_reply_and_post_http_does_not() {
    // Knative's data plane: a sender that processes reply events MUST send
    // `Prefer: reply`; send_http read replies without asking for them.
    let answer = odd_event();
    let (base, prefer) = replying_server(answer.clone()).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/200");
    for mode in [Mode::Binary, Mode::Structured] {
        let reply = send_http(&client, &url, &odd_event(), mode).await.unwrap();
        assert_eq!(reply.as_ref(), Some(&answer), "{mode:?}");
        post_http(&client, &url, &odd_event(), mode).await.unwrap();
    }
    assert_eq!(
        *prefer.lock().unwrap(),
        [
            Some("reply".to_owned()),
            None,
            Some("reply".to_owned()),
            None
        ]
    );
}

#[tokio::test]
async fn only_a_200_answer_carries_a_reply_event() {
    // A CloudEvent in a 202 answer MUST NOT be processed as a reply
    // (Knative's data plane: 202 is "accepted", 200 "accepted, event in
    // reply"); send_http returned it as one.
    let answer = odd_event();
    let (base, _) = replying_server(answer.clone()).await;
    let client = reqwest::Client::new();
    for code in [202_u16, 201, 203] {
        let reply = send_http(
            &client,
            &format!("{base}/{code}"),
            &odd_event(),
            Mode::Binary,
        )
        .await
        .unwrap();
        assert_eq!(reply, None, "{code}");
    }
    let reply = send_http(&client, &format!("{base}/200"), &odd_event(), Mode::Binary)
        .await
        .unwrap();
    assert_eq!(reply, Some(answer));
}

#[tokio::test]
async fn tokens_in_the_username_or_the_query_stay_out_of_errors() {
    // Only a password was hidden: a token passed as the username
    // (`https://TOKEN@host`) or in the query (`?access_token=`, `?sig=`)
    // was quoted verbatim by every error (the query through reqwest's own
    // error text too), and errors end up in logs and dead letters.
    let secrets = ["ghp_usertoken", "qtoken", "qsig"];
    let with_secrets = |url: &str| {
        format!("{url}?access_token=qtoken&sig=qsig&v=1")
            .replace("http://", "http://ghp_usertoken@")
    };
    let server = start().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let event = odd_event();
    let mut shown = Vec::new();

    // An answered status.
    let url = with_secrets(&format!("{}/status/503", server.base));
    let err = send_http(&client, &url, &event, Mode::Binary)
        .await
        .unwrap_err();
    let status = status_error(&err).expect("status error");
    assert_eq!(
        status.url,
        format!(
            "{}/status/503?access_token=***&sig=***&v=***",
            server.base.replace("http://", "http://***@")
        )
    );
    shown.extend([err.to_string(), format!("{err:?}")]);

    // A timeout.
    let url = with_secrets(&format!("{}/slow", server.base));
    let err = post_http(&client, &url, &event, Mode::Binary)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    shown.extend([err.to_string(), format!("{err:?}")]);

    // Nobody listens: a connection error.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = with_secrets(&format!("http://{addr}/events"));
    let err = send_http(&client, &url, &event, Mode::Binary)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    shown.extend([err.to_string(), format!("{err:?}")]);

    // Not a URL at all.
    let err = send_http(
        &client,
        &with_secrets("http://exa mple/x"),
        &event,
        Mode::Binary,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    shown.extend([err.to_string(), format!("{err:?}")]);

    for text in &shown {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("access_token=***&sig=***&v=***"), "{text}");
    }
}

/// A relay passes a CloudEvent on as it came: a `datacontenttype` with
/// whitespace at either end (which a structured document may carry) cannot
/// travel in binary mode's `Content-Type`, whose surrounding whitespace
/// every HTTP parser drops. Sending it so is refused naming structured
/// mode, which carries it, and an extractor's reply falls back to
/// structured mode, instead of the receiver reading another type.
#[tokio::test]
async fn a_datacontenttype_with_surrounding_whitespace_is_never_changed_on_the_way() {
    use event_cloudevents::cloudevents::AttributesReader as _;
    use event_cloudevents::http::client::send_cloudevent_http;
    use event_cloudevents::http::server::HttpCloudEvent;

    async fn echo(HttpCloudEvent(ce): HttpCloudEvent) -> HttpCloudEvent {
        HttpCloudEvent(ce)
    }
    let app = Router::new().route("/echo", post(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/echo", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let client = reqwest::Client::new();

    for ct in ["text/plain ", " text/plain", "text/plain;\tcharset=utf-8\t"] {
        let doc = json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "datacontenttype": ct, "data": "hi"
        });
        let ce = event_cloudevents::cloudevent_from_structured(doc.to_string().as_bytes())
            .expect("a structured document");
        match send_cloudevent_http(&client, &url, ce.clone(), Mode::Binary).await {
            Err(Error::Serialization(reason)) => {
                assert!(reason.contains("datacontenttype"), "{ct:?}: {reason}");
                assert!(reason.contains("structured mode"), "{ct:?}: {reason}");
            }
            Ok(reply) => panic!(
                "{ct:?}: sent in binary mode, came back as {:?}",
                reply.map(|r| r.datacontenttype().map(str::to_owned))
            ),
            Err(other) => panic!("{ct:?}: expected a serialization error, got {other}"),
        }
        // structured mode carries it there, and the reply (binary mode
        // asked for, structured given) brings it back
        let reply = send_cloudevent_http(&client, &url, ce.clone(), Mode::Structured)
            .await
            .unwrap_or_else(|e| panic!("{ct:?}: {e}"))
            .expect("a reply");
        assert_eq!(reply.datacontenttype(), Some(ct));
        assert_eq!(reply, ce, "{ct:?}");
    }
}
