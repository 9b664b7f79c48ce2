//! Redirects: an event is delivered where the endpoint sends it, or the
//! send fails; a redirect that drops it is never reported as delivered.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{any, post};
use event_cloudevents::http::Mode;
use event_cloudevents::http::client::{
    MAX_REDIRECTS, post_http, redirect_error, send_http, status_error,
};
use event_core::{Error, Event};
use std::sync::{Arc, Mutex};

/// Requests a server received: method, path and body.
type Log = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A server whose `POST /hook/{status}` answers `status` with `Location:
/// {location}` (`{base}` replaced by its own address), `/loop/{status}`
/// redirects to itself, and any other request is recorded and answered
/// `200` (with a small HTML page, as a login page would be).
async fn server(location: &'static str) -> (String, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let here = base.clone();
    let app = Router::new()
        .route(
            "/hook/{status}",
            post(
                move |axum::extract::Path(status): axum::extract::Path<u16>| {
                    let location = location.replace("{base}", &here);
                    async move {
                        (
                            StatusCode::from_u16(status).unwrap(),
                            [("location", location)],
                        )
                    }
                },
            ),
        )
        .route(
            "/loop/{status}",
            any(
                |axum::extract::Path(status): axum::extract::Path<u16>| async move {
                    (
                        StatusCode::from_u16(status).unwrap(),
                        [("location", format!("/loop/{status}"))],
                    )
                },
            ),
        )
        .fallback(any(
            move |method: Method, uri: axum::http::Uri, _: HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push((
                        method.to_string(),
                        uri.path().to_owned(),
                        body.to_vec(),
                    ));
                    (
                        StatusCode::OK,
                        [("content-type", "text/html")],
                        "<p>sign in</p>",
                    )
                }
            },
        ));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, log)
}

fn event() -> Event {
    Event::new("events.a.b", "a", "s", "src", serde_json::json!({"k": 1}))
}

/// An event binary mode sends without a body.
fn event_without_data() -> Event {
    Event::new("events.a.b", "a", "s", "src", serde_json::Value::Null)
}

/// A client following redirects by reqwest's default policy (what the docs
/// use), and one following none.
fn clients() -> [(&'static str, reqwest::Client); 2] {
    [
        ("default client", reqwest::Client::new()),
        (
            "client following no redirect",
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        ),
    ]
}

/// Sends `event` with both functions; both results.
async fn send_both(
    client: &reqwest::Client,
    url: &str,
    event: &Event,
    mode: Mode,
) -> [Result<(), Error>; 2] {
    [
        send_http(client, url, event, mode).await.map(|_| ()),
        post_http(client, url, event, mode).await,
    ]
}

#[tokio::test]
async fn a_301_302_or_303_that_drops_the_event_is_not_reported_as_delivered() {
    // The default client followed them with a GET without the event, and
    // the GET's 200 was reported as a delivery: send_http Ok(None),
    // post_http Ok(()).
    for status in [301_u16, 302, 303] {
        let (base, log) = server("/moved").await;
        let url = format!("{base}/hook/{status}");
        for (name, client) in clients() {
            for (event, mode) in [
                (event(), Mode::Binary),
                (event(), Mode::Structured),
                (event_without_data(), Mode::Binary),
            ] {
                for result in send_both(&client, &url, &event, mode).await {
                    let err = result.expect_err(&format!("{status} {name} {mode:?}: delivered?"));
                    assert!(!err.is_transient(), "{status} {name}: {err}");
                    let redirect =
                        redirect_error(&err).unwrap_or_else(|| panic!("{status} {name}: {err:?}"));
                    assert!(
                        redirect.location.as_deref().unwrap().ends_with("/moved"),
                        "{status} {name}: {err}"
                    );
                    let text = err.to_string();
                    assert!(text.contains("not delivered"), "{text}");
                    // a redirect the client did not follow is its status, not
                    // retryable (as before)
                    if let Some(answer) = status_error(&err) {
                        assert_eq!(answer.status, status, "{name}");
                        assert!(!answer.is_retryable());
                        assert!(text.contains(&format!("HTTP {status}")), "{text}");
                    } else {
                        assert_eq!(name, "default client", "{err}");
                    }
                }
            }
        }
        // what the default client followed carried no event
        for (method, path, body) in log.lock().unwrap().iter() {
            assert_eq!((method.as_str(), path.as_str()), ("GET", "/moved"));
            assert!(body.is_empty());
        }
    }
}

#[tokio::test]
async fn a_307_or_308_within_the_origin_is_followed_with_the_event() {
    for status in [307_u16, 308] {
        for location in ["/moved", "{base}/moved"] {
            let (base, log) = server(location).await;
            let url = format!("{base}/hook/{status}");
            for (name, client) in clients() {
                for (event, mode) in [
                    (event(), Mode::Binary),
                    (event(), Mode::Structured),
                    (event_without_data(), Mode::Binary),
                ] {
                    for result in send_both(&client, &url, &event, mode).await {
                        result.unwrap_or_else(|e| panic!("{status} {location} {name}: {e}"));
                        let (method, path, body) = log.lock().unwrap().pop().unwrap();
                        assert_eq!((method.as_str(), path.as_str()), ("POST", "/moved"));
                        if mode == Mode::Binary {
                            assert_eq!(
                                body,
                                event_cloudevents::http::to_http(&event, mode).unwrap().body
                            );
                        }
                    }
                }
            }
            assert!(log.lock().unwrap().is_empty(), "each event once");
        }
    }
}

#[tokio::test]
async fn a_307_or_308_to_another_origin_is_not_followed() {
    // The client would send its default headers, credentials perhaps, to a
    // host the caller did not name: refused, naming where it leads.
    let (other, other_log) = server("/moved").await;
    let location: &'static str = format!("{other}/elsewhere").leak();
    for status in [307_u16, 308] {
        let (base, log) = server(location).await;
        let url = format!("{base}/hook/{status}");
        for (name, client) in clients() {
            for result in send_both(&client, &url, &event(), Mode::Binary).await {
                let err = result.expect_err(name);
                assert!(!err.is_transient());
                let answer = status_error(&err).unwrap();
                assert_eq!(answer.status, status);
                assert!(!answer.is_retryable());
                assert_eq!(
                    redirect_error(&err).unwrap().location.as_deref(),
                    Some(location)
                );
                assert!(err.to_string().contains("origin"), "{err}");
            }
        }
        assert!(log.lock().unwrap().is_empty());
    }
    assert!(
        other_log.lock().unwrap().is_empty(),
        "nothing sent elsewhere"
    );
}

#[tokio::test]
async fn a_redirect_loop_is_not_transient() {
    // reqwest's "too many redirects" was a transient connection error, so
    // retried as if the endpoint were down.
    let (base, log) = server("/moved").await;
    for status in [307_u16, 308, 301, 302, 303] {
        let url = format!("{base}/loop/{status}");
        for (name, client) in clients() {
            for result in send_both(&client, &url, &event(), Mode::Binary).await {
                let err = result.expect_err(name);
                assert!(!err.is_transient(), "{status} {name}: {err}");
                assert!(redirect_error(&err).is_some(), "{status} {name}: {err:?}");
                if let Some(answer) = status_error(&err) {
                    assert!(!answer.is_retryable(), "{status} {name}");
                }
                if matches!(status, 307 | 308) {
                    assert!(
                        err.to_string()
                            .contains(&format!("more than {MAX_REDIRECTS} redirects")),
                        "{err}"
                    );
                }
            }
        }
    }
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_redirect_names_its_location_redacted() {
    let (base, _) = server("http://user:SECRET1@127.0.0.1:1/x?token=SECRET2#SECRET3").await;
    for status in [301_u16, 307] {
        let url = format!("{base}/hook/{status}?sig=SECRET4");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let err = post_http(&client, &url, &event(), Mode::Binary)
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("127.0.0.1:1/x?token=***"), "{shown}");
    }
}
