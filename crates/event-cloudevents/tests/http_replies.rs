//! Reply events after a `200`: the endpoint accepted the event, so a reply
//! that cannot be read is bounded in time and never reported as a failure
//! to retry (which would deliver the event twice).
#![allow(clippy::unwrap_used)]

use event_cloudevents::http::Mode;
use event_cloudevents::http::client::{REPLY_WAIT, reply_lost, send_http};
use event_core::{Error, Event};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The head of a `200` answer carrying a binary-mode reply event whose body
/// announces 100 bytes.
const REPLY_HEAD: &str = "HTTP/1.1 200 OK\r\nce-specversion: 1.0\r\nce-id: r\r\nce-source: /s\r\n\
                          ce-type: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":";

/// A server answering every request with `REPLY_HEAD` and then closing the
/// connection (`close`) or holding it open; returns its URL and a count of
/// the requests it received (each an accepted event).
async fn server(close: bool) -> (String, Arc<AtomicUsize>) {
    answering(REPLY_HEAD, close).await
}

/// [`server`] answering `answer` instead of `REPLY_HEAD`.
async fn answering(answer: &'static str, close: bool) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                // the head and the (small) body of the request
                let mut request = Vec::new();
                let mut buf = [0_u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = socket.write_all(answer.as_bytes()).await;
                if close {
                    let _ = socket.shutdown().await;
                } else {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                }
            });
        }
    });
    (url, requests)
}

fn event() -> Event {
    Event::new("events.a.b", "a", "s", "src", serde_json::json!({"k": 1}))
}

/// The error says the event was delivered and must not be sent again.
fn assert_delivered_reply_lost(err: &Error, what: &str) {
    assert!(!err.is_transient(), "{what}: retried as transient: {err}");
    let lost = reply_lost(err).unwrap_or_else(|| panic!("{what}: {err:?}"));
    assert_eq!(lost.status, 200);
    let text = err.to_string();
    assert!(text.contains("delivered"), "{what}: {text}");
    assert!(text.contains("reply"), "{what}: {text}");
}

#[tokio::test]
async fn a_stalled_reply_body_is_waited_for_a_bounded_time() {
    // With reqwest's default client (no timeout) send_http waited forever.
    let (url, requests) = server(false).await;
    let started = Instant::now();
    let result = tokio::time::timeout(
        REPLY_WAIT + Duration::from_secs(10),
        send_http(&reqwest::Client::new(), &url, &event(), Mode::Binary),
    )
    .await
    .expect("send_http returned");
    assert!(started.elapsed() >= REPLY_WAIT);
    assert_delivered_reply_lost(&result.unwrap_err(), "default client");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_reply_lost_after_a_200_is_not_transient() {
    // The client's timeout during the reply body was a transient Timeout,
    // and a body cut short a transient Connection error: the caller sent
    // again an event the endpoint had accepted.
    let (stalled, _) = server(false).await;
    let (cut, _) = server(true).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for (what, url) in [("client timeout", stalled), ("body cut short", cut)] {
        let started = Instant::now();
        let err = send_http(&client, &url, &event(), Mode::Binary)
            .await
            .unwrap_err();
        assert!(started.elapsed() < REPLY_WAIT, "{what}");
        assert_delivered_reply_lost(&err, what);
    }
}

/// A `200` whose reply is no valid CloudEvent (here, without the required
/// `type`): the endpoint accepted the event, so the error says it was
/// delivered and is not to be retried. It was `Error::Serialization`, which
/// a broker retries: the endpoint received the event again on every
/// attempt.
#[tokio::test]
async fn a_malformed_reply_after_a_200_is_a_lost_reply_not_a_failure() {
    const MALFORMED: &str = "HTTP/1.1 200 OK\r\nce-specversion: 1.0\r\nce-id: r\r\n\
                             ce-source: /s\r\ncontent-type: application/json\r\n\
                             content-length: 2\r\n\r\n{}";
    let (url, requests) = answering(MALFORMED, true).await;
    let err = send_http(&reqwest::Client::new(), &url, &event(), Mode::Binary)
        .await
        .unwrap_err();
    assert_delivered_reply_lost(&err, "malformed reply");
    assert!(err.to_string().contains("type"), "{err}");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}
