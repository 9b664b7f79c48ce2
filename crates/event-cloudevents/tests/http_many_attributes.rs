//! Events with more attributes than HTTP binary mode carries (one header
//! each): refused with an error naming structured mode, or answered in
//! structured mode, never a panic in the `http` crate's `HeaderMap`.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use event_cloudevents::http::client::{post_http, send_http};
use event_cloudevents::http::server::HttpEvent;
use event_cloudevents::http::{MAX_BINARY_ATTRIBUTES, Mode, from_http};
use event_core::{Error, Event};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An event with `entries` metadata entries (one extension each).
fn many(entries: usize) -> Event {
    let mut event = Event::new("events.a.b", "a", "s", "src", serde_json::json!({"k": 1}));
    for i in 0..entries {
        event.metadata.insert(format!("k{i}"), "v".into());
    }
    event
}

/// A server echoing the event of `POST /echo` as `HttpEvent` (binary mode,
/// as documented) and counting the requests of `POST /count`.
async fn start() -> (String, Arc<Mutex<usize>>) {
    let count = Arc::new(Mutex::new(0));
    let seen = count.clone();
    let app = Router::new()
        .route(
            "/echo",
            post(|HttpEvent(event): HttpEvent| async move { HttpEvent(event) }),
        )
        .route(
            "/count",
            post(move |HttpEvent(_): HttpEvent| async move {
                *seen.lock().unwrap() += 1;
                StatusCode::ACCEPTED
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), count)
}

#[tokio::test]
async fn a_reply_with_too_many_attributes_for_binary_mode_is_answered_in_structured_mode() {
    // A 0.67 MB structured request (under axum's 2 MB limit) with 40,000
    // extensions: echoing it in binary mode panicked the handler's task
    // (`size overflows MAX_SIZE`) and the connection was dropped.
    let (base, _) = start().await;
    let mut doc = String::from(r#"{"specversion":"1.0","id":"1","source":"/s","type":"t""#);
    for i in 0..40_000 {
        doc.push_str(&format!(r#","a3smk{i}":"v""#));
    }
    doc.push('}');
    let response = reqwest::Client::new()
        .post(format!("{base}/echo"))
        .header("content-type", "application/cloudevents+json")
        .body(doc)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/cloudevents+json"
    );
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    let reply = from_http(&headers, body).unwrap();
    assert_eq!(reply.metadata.len(), 40_000);
    assert_eq!(reply.metadata["k39999"], "v");
}

#[tokio::test]
async fn sending_too_many_attributes_in_binary_mode_is_refused_naming_structured_mode() {
    // send_http and post_http panicked in reqwest's `RequestBuilder::header`.
    let (base, count) = start().await;
    let url = format!("{base}/count");
    let client = reqwest::Client::new();
    let refused = |result: Result<(), Error>| match result {
        Err(Error::Serialization(reason)) => {
            assert!(reason.contains("too many attributes"), "{reason}");
            assert!(reason.contains("structured mode"), "{reason}");
        }
        other => panic!("expected a serialization error, got {other:?}"),
    };
    refused(
        send_http(&client, &url, &many(40_000), Mode::Binary)
            .await
            .map(|_| ()),
    );
    // (just past the limit: the event has attributes besides its metadata)
    refused(post_http(&client, &url, &many(MAX_BINARY_ATTRIBUTES), Mode::Binary).await);
    assert_eq!(*count.lock().unwrap(), 0, "nothing was sent");
    // structured mode carries it
    send_http(&client, &url, &many(40_000), Mode::Structured)
        .await
        .unwrap();
    assert_eq!(*count.lock().unwrap(), 1);
}

/// The reply of an event with more headers than HTTP clients read (hyper's
/// and so reqwest's, and Python's http.client, stop at 100 headers; Node at
/// 16 KiB of them) is answered in structured mode: in binary mode the
/// endpoint had handled the event, but the sender could not read the answer
/// and got a transient error, so it sent the event again.
#[tokio::test]
async fn a_reply_too_large_for_http_clients_in_binary_mode_is_answered_in_structured_mode() {
    let (base, _) = start().await;
    let client = reqwest::Client::new();
    let url = format!("{base}/echo");
    let mut long_summary = many(3);
    long_summary.summary = "é".repeat(10_000); // 60 KB percent-encoded
    for event in [many(90), many(150), many(1_000), long_summary] {
        // (sent in structured mode: a binary request of as many headers is
        // answered 431)
        let reply = send_http(&client, &url, &event, Mode::Structured)
            .await
            .unwrap_or_else(|e| panic!("{} entries: {e}", event.metadata.len()))
            .expect("a reply");
        assert_eq!(reply, event);
    }
    // a reply binary mode carries well is still answered in binary mode
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/cloudevents+json")
        .body(event_cloudevents::to_structured(&many(20)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["ce-specversion"], "1.0");
}
