//! HttpSink against a local axum server; WebhookSource end to end.

#![allow(clippy::unwrap_used)] // test helpers

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use event_cloudevents::http::{Mode, to_http};
use event_core::{Error, Event, EventProvider};
use event_memory::MemoryProvider;
use event_routing::http::{HttpSink, WebhookSource};
use event_routing::{
    BackoffPolicy, Broker, CollectorSink, DeliverySpec, EventSink, EventSource, FailingSink,
    TopicSink, Trigger, TriggerFilter,
};
use parking_lot::Mutex;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

type Request = (HeaderMap, Vec<u8>);

#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<Request>>>,
    /// Status codes to answer, in order; then 200.
    statuses: Arc<Mutex<Vec<u16>>>,
}

async fn record(
    State(state): State<Received>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    state.requests.lock().push((headers, body.to_vec()));
    let mut statuses = state.statuses.lock();
    if statuses.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::from_u16(statuses.remove(0)).unwrap()
    }
}

async fn server(statuses: Vec<u16>) -> (String, Received) {
    let state = Received {
        statuses: Arc::new(Mutex::new(statuses)),
        ..Received::default()
    };
    let app = Router::new()
        .route("/hook", post(record))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), state)
}

/// `event` as an `HttpSink` posts it: one more hop.
fn forwarded(event: &Event) -> Event {
    let hops = event
        .metadata
        .get(event_routing::metadata::HOPS)
        .map_or(0, |hops| hops.parse::<u32>().unwrap());
    event
        .clone()
        .with_metadata(event_routing::metadata::HOPS, (hops + 1).to_string())
}

fn order() -> Event {
    Event::typed(
        "events.orders.created",
        "orders",
        "order.created",
        1,
        "order 7",
        "shop",
        json!({"id": 7}),
    )
    .with_metadata("region", "eu")
}

#[tokio::test]
async fn http_sink_posts_a_binary_mode_cloudevent() {
    let (url, received) = server(vec![]).await;
    let sink = HttpSink::new("hook", url).unwrap();
    let event = order();
    sink.deliver(&event).await.unwrap();
    let (headers, body) = received.requests.lock()[0].clone();
    assert_eq!(headers["ce-id"], event.id.as_str());
    assert_eq!(headers["ce-type"], "order.created");
    assert_eq!(headers["ce-source"], "shop");
    assert_eq!(headers["ce-subject"], "events.orders.created");
    assert_eq!(headers["ce-a3smregion"], "eu");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"id": 7})
    );
    assert_eq!(
        event_cloudevents::http::from_http(&headers, body).unwrap(),
        forwarded(&event)
    );
}

#[tokio::test]
async fn http_sink_posts_a_structured_mode_cloudevent() {
    let (url, received) = server(vec![]).await;
    let sink = HttpSink::new("hook", url)
        .unwrap()
        .with_mode(Mode::Structured);
    let event = order();
    sink.deliver(&event).await.unwrap();
    let (headers, body) = received.requests.lock()[0].clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/cloudevents+json")
    );
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["id"], event.id.as_str());
    assert_eq!(doc["data"], json!({"id": 7}));
    assert_eq!(
        event_cloudevents::http::from_http(&headers, body).unwrap(),
        forwarded(&event)
    );
}

#[tokio::test]
async fn non_2xx_answers_fail_the_delivery() {
    let (url, _) = server(vec![500, 404, 429, 400]).await;
    let sink = HttpSink::new("hook", url).unwrap();
    for (code, retryable) in [(500, true), (404, true), (429, true), (400, false)] {
        let err = sink.deliver(&order()).await.unwrap_err();
        let status = event_cloudevents::http::client::status_error(&err).expect("a status");
        assert_eq!((status.status, status.is_retryable()), (code, retryable));
        assert!(err.to_string().contains(&format!("HTTP {code}")), "{err}");
    }
    sink.deliver(&order()).await.unwrap();
}

/// A server whose `POST /hook` redirects with `status` to `/moved`, which
/// records the method and body of every request it gets.
async fn redirecting_server(status: u16) -> (String, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    let moved = Arc::new(Mutex::new(Vec::new()));
    let record = moved.clone();
    let app = Router::new()
        .route(
            "/hook",
            post(move || async move {
                (
                    StatusCode::from_u16(status).unwrap(),
                    [("location", "/moved")],
                )
            }),
        )
        .route(
            "/moved",
            axum::routing::any(
                move |method: axum::http::Method, body: axum::body::Bytes| async move {
                    record.lock().push((method.to_string(), body.to_vec()));
                    StatusCode::OK
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), moved)
}

#[tokio::test]
async fn a_redirect_that_would_drop_the_event_fails_the_delivery() {
    // 301, 302 and 303 turn a POST into a GET without a body: following
    // them "delivered" an event nobody received.
    for status in [301, 302, 303] {
        let (url, moved) = redirecting_server(status).await;
        for sink in [
            HttpSink::new("hook", url.clone()).unwrap(),
            HttpSink::new("hook", url.clone())
                .unwrap()
                .with_request_timeout(Duration::from_secs(5))
                .unwrap(),
        ] {
            let err = sink.deliver(&order()).await.unwrap_err();
            assert!(err.to_string().contains(&status.to_string()), "{err}");
        }
        let followed = moved.lock().clone();
        assert!(followed.is_empty(), "{status}: followed to {followed:?}");
    }
    // 307 and 308 repeat the POST with its body: followed.
    for status in [307, 308] {
        let (url, moved) = redirecting_server(status).await;
        let event = order();
        HttpSink::new("hook", url)
            .unwrap()
            .deliver(&event)
            .await
            .unwrap();
        let moved = moved.lock();
        assert_eq!(moved.len(), 1, "{status}");
        assert_eq!(moved[0].0, "POST");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&moved[0].1).unwrap(),
            event.payload
        );
    }
}

/// A raw server answering every request `200 OK` with `headers` and a
/// chunked body that never ends.
async fn endless_ok_server(headers: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0_u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let head =
                    format!("HTTP/1.1 200 OK\r\n{headers}transfer-encoding: chunked\r\n\r\n");
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 8192, "e".repeat(8192));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
    });
    format!("http://{addr}/hook")
}

#[tokio::test]
async fn an_endless_success_body_does_not_stall_the_delivery() {
    // The endpoint accepted the event (200): reading the whole answer, which
    // the sink ignores, stalled the delivery until its timeout failed it
    // (retried: delivered twice), and held the body in memory.
    for headers in [
        "content-type: text/plain\r\n",
        // A reply CloudEvent, which the sink ignores too.
        "ce-specversion: 1.0\r\nce-id: r1\r\nce-source: s\r\nce-type: t\r\n\
         content-type: application/json\r\n",
    ] {
        let sink = HttpSink::new("hook", endless_ok_server(headers).await).unwrap();
        tokio::time::timeout(Duration::from_secs(10), sink.deliver(&order()))
            .await
            .expect("the delivery does not wait for the answer's body")
            .unwrap();
    }
}

#[tokio::test]
async fn credentials_in_the_url_stay_out_of_errors_dead_letters_and_debug() {
    // Errors quoted the URL as configured, password included, into logs and
    // into the `dlqreason` of dead letters stored in the event stream.
    let (url, received) = server(vec![503, 404]).await;
    let url = url.replace("http://", "http://svc:s3cret@");
    let broker = Broker::new();
    let dead = Arc::new(CollectorSink::new("dead"));
    let sink = HttpSink::new("hook", url).unwrap();
    assert!(!format!("{sink:?}").contains("s3cret"), "{sink:?}");
    broker
        .add_trigger(
            Trigger::new("hook", TriggerFilter::all(), Arc::new(sink.clone()))
                .with_delivery(DeliverySpec::new().with_dead_letter_sink(dead.clone())),
        )
        .unwrap();
    for _ in 0..2 {
        assert_eq!(broker.route(&order()).await.dead_lettered, 1);
    }
    // The credentials were sent, as basic auth.
    assert!(received.requests.lock()[0].0.contains_key("authorization"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let unreachable = HttpSink::new("h", format!("http://svc:s3cret@{addr}/x")).unwrap();
    let mut reasons: Vec<String> = dead
        .events()
        .iter()
        .map(|e| e.metadata["dlqreason"].clone())
        .collect();
    reasons.push(unreachable.deliver(&order()).await.unwrap_err().to_string());
    for reason in &reasons {
        assert!(!reason.contains("s3cret"), "{reason}");
        assert!(reason.contains("127.0.0.1"), "{reason}");
    }
}

#[tokio::test]
async fn tokens_in_the_username_or_the_query_stay_out_of_errors_dead_letters_and_debug() {
    // Only a password was hidden: a token passed as the username
    // (`https://TOKEN@host`) or in the query (`?access_token=`, `?sig=`)
    // reached `Debug`, errors, logs and the `dlqreason` of dead letters
    // verbatim (the query through reqwest's own error text too).
    let secrets = ["ghp_usertoken", "qtoken", "qsig"];
    let with_secrets = |url: &str| {
        format!("{url}?access_token=qtoken&sig=qsig&v=1")
            .replace("http://", "http://ghp_usertoken@")
    };
    let (url, received) = server(vec![503, 404]).await;
    let url = with_secrets(&url);
    let broker = Broker::new();
    let dead = Arc::new(CollectorSink::new("dead"));
    let sink = HttpSink::new("hook", url.clone()).unwrap();
    assert_eq!(sink.url(), url, "the accessor gives the URL as configured");
    let mut shown = vec![format!("{sink:?}")];
    broker
        .add_trigger(
            Trigger::new("hook", TriggerFilter::all(), Arc::new(sink))
                .with_delivery(DeliverySpec::new().with_dead_letter_sink(dead.clone())),
        )
        .unwrap();
    for _ in 0..2 {
        assert_eq!(broker.route(&order()).await.dead_lettered, 1);
    }
    // The token was sent (as basic auth), the query too.
    assert!(received.requests.lock()[0].0.contains_key("authorization"));
    shown.extend(
        dead.events()
            .iter()
            .map(|e| e.metadata["dlqreason"].clone()),
    );
    // Nobody listens: a connection error, whose reqwest error names the URL.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let unreachable = HttpSink::new("h", with_secrets(&format!("http://{addr}/x"))).unwrap();
    let err = unreachable.deliver(&order()).await.unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    shown.push(err.to_string());
    shown.push(format!("{err:?}"));
    // A URL the sink refuses is named in its error, redacted too.
    for bad in [
        "ftp://ghp_usertoken@example.com/x?access_token=qtoken",
        "http://ghp_usertoken@exa mple.com/x?access_token=qtoken",
        // no scheme: a URL of scheme `qtoken`
        "qtoken:x@example.com/x?access_token=qtoken",
    ] {
        let err = HttpSink::new("h", bad).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        shown.push(err.to_string());
    }
    assert_eq!(shown.len(), 8);
    for text in &shown {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("access_token=***"), "{text}");
    }
    assert!(
        shown[0].contains("url: \"http://***@127.0.0.1:"),
        "{}",
        shown[0]
    );
    assert!(
        shown[0].contains("/hook?access_token=***&sig=***&v=***"),
        "{}",
        shown[0]
    );
}

#[tokio::test]
async fn a_trigger_retries_an_http_sink_then_dead_letters() {
    let (url, received) = server(vec![503, 503, 503]).await;
    let broker = Broker::new();
    let dead = Arc::new(CollectorSink::new("dead"));
    broker
        .add_trigger(
            Trigger::new(
                "webhook",
                TriggerFilter::all(),
                Arc::new(HttpSink::new("hook", url).unwrap()),
            )
            .with_delivery(
                DeliverySpec::new()
                    .with_retries(2)
                    .with_backoff(BackoffPolicy::Linear, Duration::from_millis(5))
                    .with_dead_letter_sink(dead.clone()),
            ),
        )
        .unwrap();
    let result = broker.route(&order()).await;
    assert_eq!((result.failed, result.dead_lettered), (1, 1));
    assert_eq!(received.requests.lock().len(), 3);
    assert!(
        dead.events()[0].metadata["dlqreason"].contains("503"),
        "{:?}",
        dead.events()[0].metadata
    );
    // The next event gets 200.
    assert_eq!(broker.route(&order()).await.delivered, 1);
}

#[tokio::test]
async fn bad_urls_and_unreachable_endpoints_are_typed_errors() {
    for url in ["not a url", "ftp://example.com/x", ""] {
        assert!(
            matches!(HttpSink::new("h", url), Err(Error::InvalidConfig { .. })),
            "{url}"
        );
    }
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let sink = HttpSink::new("h", format!("http://{addr}/x")).unwrap();
    assert!(matches!(
        sink.deliver(&order()).await,
        Err(Error::Connection(_))
    ));
}

async fn send(addr: SocketAddr, path: &str, headers: HeaderMap, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn webhook_into(provider: Arc<dyn EventProvider>) -> WebhookSource {
    let source = WebhookSource::new("ingest", "127.0.0.1:0".parse().unwrap());
    source
        .start(Arc::new(TopicSink::unchanged("ingest", provider)))
        .await
        .unwrap();
    source
}

#[tokio::test]
async fn webhook_publishes_binary_and_structured_cloudevents() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let source = webhook_into(provider.clone()).await;
    let addr = source.local_addr().unwrap();

    let binary = order();
    let msg = to_http(&binary, Mode::Binary).unwrap();
    assert_eq!(
        send(addr, "/events", msg.headers.clone(), msg.body.clone())
            .await
            .0,
        202
    );
    // A sender's retry of the same event is deduplicated by id.
    assert_eq!(send(addr, "/events", msg.headers, msg.body).await.0, 202);

    let structured = order();
    let msg = to_http(&structured, Mode::Structured).unwrap();
    assert_eq!(send(addr, "/events", msg.headers, msg.body).await.0, 202);

    let stored = provider.history(None, 10).await.unwrap();
    assert_eq!(stored, vec![structured, binary]);
    assert_eq!(source.accepted(), 3);
    let stats = source.stats();
    assert_eq!((stats.accepted, stats.refused), (3, 0));
    #[cfg(feature = "bus")]
    {
        let text = stats.to_prometheus();
        assert!(text.contains("a3s_webhook_accepted_total 3\n"), "{text}");
        assert!(text.contains("a3s_webhook_refused_total 0\n"), "{text}");
    }
    source.stop().await.unwrap();
}

/// Binary mode sends each metadata entry as a `ce-*` header: an event with
/// hundreds of them crosses from one A3S service to another (hyper's
/// default of 100 headers would answer `431`).
#[tokio::test]
async fn an_event_with_hundreds_of_metadata_entries_crosses_in_binary_mode() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let source = webhook_into(provider.clone()).await;
    let addr = source.local_addr().unwrap();
    let mut event = order();
    for i in 0..500 {
        event = event.with_metadata(format!("k{i}"), format!("v{i}"));
    }
    let sink = HttpSink::new("hop", format!("http://{addr}/events")).unwrap();
    sink.deliver(&event).await.unwrap();
    assert_eq!(
        provider.history(None, 1).await.unwrap(),
        vec![forwarded(&event)]
    );
    source.stop().await.unwrap();
}

/// A `431` (headers too large) says what to do about it.
#[tokio::test]
async fn a_431_answer_suggests_structured_mode() {
    let (url, _) = server(vec![431]).await;
    let err = HttpSink::new("hook", url)
        .unwrap()
        .deliver(&order())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("431") && text.contains("Mode::Structured"),
        "{text}"
    );
}

/// CloudEvents identify an event by source and id: two producers that
/// both send id `1` are two events, both stored, while each producer's
/// retry is stored once.
#[tokio::test]
async fn webhook_dedups_by_source_and_id() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let source = webhook_into(provider.clone()).await;
    let addr = source.local_addr().unwrap();
    let mut billing = order();
    billing.id = "1".into();
    billing.source = "https://billing.example".into();
    let mut shipping = billing.clone();
    shipping.source = "https://shipping.example".into();
    shipping.payload = json!({"parcel": "p-9"});
    for event in [&billing, &shipping, &billing, &shipping] {
        let msg = to_http(event, Mode::Binary).unwrap();
        assert_eq!(send(addr, "/events", msg.headers, msg.body).await.0, 202);
    }
    let stored = provider.history(None, 10).await.unwrap();
    assert_eq!(stored, vec![shipping, billing]);
    source.stop().await.unwrap();
}

/// Under a provider prefix of two tokens, told it, a webhook gives a foreign
/// CloudEvent (no `a3scategory`) the category after the prefix, with a
/// subject mapping or its own subject; an A3S event keeps its own.
#[tokio::test]
async fn a_webhook_told_a_two_token_prefix_gives_foreign_cloudevents_their_category() {
    use event_cloudevents::cloudevents::{EventBuilder, EventBuilderV10};
    let foreign = |id: &str, ty: &str, subject: Option<&str>| {
        let mut builder = EventBuilderV10::new()
            .id(id)
            .source("/k8s")
            .ty(ty)
            .data("application/json", json!({"name": "foo"}));
        if let Some(subject) = subject {
            builder = builder.subject(subject);
        }
        let ce = event_cloudevents::CloudEvent::from(builder.build().unwrap());
        event_cloudevents::http::cloudevent_to_http(ce, Mode::Binary).unwrap()
    };
    let provider: Arc<dyn EventProvider> = Arc::new(
        MemoryProvider::new(event_memory::MemoryConfig {
            subject_prefix: "acme.events".into(),
            ..Default::default()
        })
        .unwrap(),
    );
    let source = WebhookSource::new("k8s", "127.0.0.1:0".parse().unwrap())
        .with_subject_mapping(|ce| {
            use event_cloudevents::cloudevents::AttributesReader;
            (ce.ty() == "com.example.pod.created").then(|| "acme.events.k8s.pod_created".to_owned())
        })
        .with_provider_prefix("acme.events")
        .unwrap();
    source
        .start(Arc::new(TopicSink::unchanged("ingest", provider.clone())))
        .await
        .unwrap();
    let addr = source.local_addr().unwrap();
    let mapped = foreign("pod-1", "com.example.pod.created", Some("/pods/foo"));
    assert_eq!(
        send(addr, "/events", mapped.headers, mapped.body).await.0,
        202
    );
    let own = foreign(
        "pod-2",
        "com.example.other",
        Some("acme.events.nodes.ready"),
    );
    assert_eq!(send(addr, "/events", own.headers, own.body).await.0, 202);
    let a3s = Event::new("acme.events.x.y", "billing", "s", "svc", json!({}));
    let msg = to_http(&a3s, Mode::Binary).unwrap();
    assert_eq!(send(addr, "/events", msg.headers, msg.body).await.0, 202);
    let stored = provider.history(None, 10).await.unwrap();
    let categories: Vec<(&str, &str)> = stored
        .iter()
        .map(|e| (e.subject.as_str(), e.category.as_str()))
        .collect();
    assert_eq!(
        categories,
        [
            ("acme.events.x.y", "billing"),
            ("acme.events.nodes.ready", "nodes"),
            ("acme.events.k8s.pod_created", "k8s"),
        ]
    );
    source.stop().await.unwrap();
    assert!(
        WebhookSource::new("k8s", "127.0.0.1:0".parse().unwrap())
            .with_provider_prefix("acme.*")
            .is_err()
    );
}

/// A CloudEvent from elsewhere, without an A3S subject: refused without a
/// subject mapping; with one, stored under the mapped subject with its own
/// subject kept in metadata. A mapped subject that is not valid is refused.
#[tokio::test]
async fn a_subject_mapping_admits_foreign_cloudevents() {
    use event_cloudevents::cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
    let foreign = |subject: Option<&str>| {
        let mut builder = EventBuilderV10::new()
            .id("pod-1")
            .source("/k8s")
            .ty("com.example.pod.created")
            .data("application/json", json!({"name": "foo"}));
        if let Some(subject) = subject {
            builder = builder.subject(subject);
        }
        let ce = event_cloudevents::CloudEvent::from(builder.build().unwrap());
        event_cloudevents::http::cloudevent_to_http(ce, Mode::Binary).unwrap()
    };

    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let plain = webhook_into(provider.clone()).await;
    let msg = foreign(Some("/apis/v1/namespaces/default/pods/foo"));
    let addr = plain.local_addr().unwrap();
    assert_eq!(send(addr, "/events", msg.headers, msg.body).await.0, 400);
    plain.stop().await.unwrap();

    let mapped = WebhookSource::new("k8s", "127.0.0.1:0".parse().unwrap()).with_subject_mapping(
        |ce| match ce.ty() {
            "com.example.pod.created" => Some("events.k8s.pod_created".to_owned()),
            "com.example.bad" => Some("not a subject".to_owned()),
            _ => None,
        },
    );
    mapped
        .start(Arc::new(TopicSink::unchanged("ingest", provider.clone())))
        .await
        .unwrap();
    let addr = mapped.local_addr().unwrap();
    let msg = foreign(Some("/apis/v1/namespaces/default/pods/foo"));
    assert_eq!(send(addr, "/events", msg.headers, msg.body).await.0, 202);
    let msg = foreign(None);
    assert_eq!(send(addr, "/events", msg.headers, msg.body).await.0, 202);
    let stored = provider.history(None, 10).await.unwrap();
    assert_eq!(stored.len(), 1, "the same source and id: stored once");
    assert_eq!(stored[0].subject, "events.k8s.pod_created");
    assert_eq!(
        stored[0].metadata[event_routing::metadata::SENDER_SUBJECT],
        "/apis/v1/namespaces/default/pods/foo"
    );

    let mut bad = foreign(None);
    bad.headers
        .insert("ce-type", "com.example.bad".parse().unwrap());
    bad.headers.insert("ce-id", "pod-2".parse().unwrap());
    let (status, body) = send(addr, "/events", bad.headers, bad.body).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(provider.history(None, 10).await.unwrap().len(), 1);
    mapped.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_requests_get_400_and_publish_nothing() {
    let provider: Arc<dyn EventProvider> = Arc::new(MemoryProvider::default());
    let source = webhook_into(provider.clone()).await;
    let addr = source.local_addr().unwrap();

    let mut json_headers = HeaderMap::new();
    json_headers.insert("content-type", "application/json".parse().unwrap());
    let mut structured = HeaderMap::new();
    structured.insert(
        "content-type",
        "application/cloudevents+json".parse().unwrap(),
    );
    let valid = to_http(&order(), Mode::Binary).unwrap();
    let mut missing_id = valid.headers.clone();
    missing_id.remove("ce-id");
    let mut bad_version = valid.headers.clone();
    bad_version.insert("ce-specversion", "0.1".parse().unwrap());
    let mut bad_subject_event = order();
    bad_subject_event.subject = "not a subject".into();
    let bad_subject = to_http(&bad_subject_event, Mode::Binary).unwrap();

    let cases: Vec<(&str, HeaderMap, Vec<u8>)> = vec![
        (
            "plain JSON, not a CloudEvent",
            json_headers,
            br#"{"id": 1}"#.to_vec(),
        ),
        (
            "structured garbage",
            structured.clone(),
            b"{not json".to_vec(),
        ),
        (
            "structured without required attributes",
            structured,
            br#"{"specversion": "1.0"}"#.to_vec(),
        ),
        ("binary without ce-id", missing_id, valid.body.clone()),
        ("unknown spec version", bad_version, valid.body.clone()),
        ("invalid subject", bad_subject.headers, bad_subject.body),
    ];
    let sent = cases.len() as u64;
    for (what, headers, body) in cases {
        let (status, text) = send(addr, "/events", headers, body).await;
        assert_eq!(status, 400, "{what}: {text}");
    }
    // a batch is a CloudEvents message in a mode the webhook does not read:
    // unsupported rather than malformed
    let mut batch = HeaderMap::new();
    batch.insert(
        "content-type",
        "application/cloudevents-batch+json".parse().unwrap(),
    );
    let (status, text) = send(addr, "/events", batch, b"[]".to_vec()).await;
    assert_eq!(status, 415, "{text}");
    let sent = sent + 1;
    assert_eq!(provider.info().await.unwrap().messages, 0);
    // each counted once: those that never reached the sink as bad
    // requests, the sink's refusals (its invalid subject) as refused
    let stats = source.stats();
    assert_eq!(stats.accepted, 0);
    assert_eq!(stats.bad_requests + stats.refused, sent, "{stats:?}");
    assert!(stats.bad_requests >= 6, "{stats:?}");
    // Wrong path and method.
    let (status, _) = send(addr, "/other", valid.headers.clone(), valid.body.clone()).await;
    assert_eq!(status, 404);
    source.stop().await.unwrap();
}

#[tokio::test]
async fn webhook_maps_sink_failures_and_stops_listening() {
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_path("/in")
        .unwrap();
    source
        .start(Arc::new(FailingSink::new("down", "broker unreachable")))
        .await
        .unwrap();
    let addr = source.local_addr().unwrap();
    let msg = to_http(&order(), Mode::Binary).unwrap();
    let (status, text) = send(addr, "/in", msg.headers.clone(), msg.body.clone()).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("broker unreachable"));
    assert_eq!(source.refused(), 1);
    #[cfg(feature = "bus")]
    {
        let labels = event_bus::metrics::PrometheusLabels::new([("webhook", "w")]).unwrap();
        let text = source.stats().to_prometheus_with_labels(&labels);
        assert!(
            text.contains("a3s_webhook_refused_total{webhook=\"w\"} 1\n"),
            "{text}"
        );
    }
    assert!(matches!(
        source.start(Arc::new(CollectorSink::new("c"))).await,
        Err(Error::Conflict { .. })
    ));
    source.stop().await.unwrap();
    assert!(!source.is_running());
    let refused = reqwest::Client::new()
        .post(format!("http://{addr}/in"))
        .send()
        .await;
    assert!(refused.is_err(), "still listening after stop");
    assert!(WebhookSource::new("w", addr).with_path("in").is_err());
}

#[tokio::test]
async fn webhook_paths_the_router_cannot_take_are_config_errors_not_panics() {
    // Accepted, then `start` panicked in the router ("path segments must not
    // start with `:`" ...).
    for path in ["/:id", "/hooks/*rest", "/{", "/a/{b}", "/a}"] {
        let err = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
            .with_path(path)
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { .. }),
            "{path}: {err:?}"
        );
    }
    for path in ["/", "/hooks/in", "/a:b", "/v1/events.json"] {
        let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
            .with_path(path)
            .unwrap();
        source
            .start(Arc::new(CollectorSink::new("c")))
            .await
            .unwrap();
        source.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_panicking_webhook_sink_is_answered_500_and_counted() {
    // The panic reset the connection: the sender got no status, and the
    // refusal was not counted.
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap());
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    source
        .start(Arc::new(event_routing::InProcessSink::new(
            "buggy",
            move |_| {
                let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                async move {
                    assert!(!first, "handler bug");
                    Ok(())
                }
            },
        )))
        .await
        .unwrap();
    let addr = source.local_addr().unwrap();
    let msg = to_http(&order(), Mode::Binary).unwrap();
    let (status, text) = send(addr, "/events", msg.headers.clone(), msg.body.clone()).await;
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("handler bug"), "{text}");
    assert_eq!((source.accepted(), source.refused()), (0, 1));
    let (status, _) = send(addr, "/events", msg.headers, msg.body).await;
    assert_eq!(status, 202);
    source.stop().await.unwrap();
}

#[tokio::test]
async fn a_foreign_cloudevents_extension_is_filtered_by_its_cloudevents_name() {
    // Another producer's CloudEvent with extension `tenant`, received by the
    // webhook: a Knative filter on `tenant` never matched it (the event
    // holds it as metadata `ce-tenant`).
    let broker = Broker::new();
    let acme = Arc::new(CollectorSink::new("acme"));
    broker
        .add_trigger(Trigger::new(
            "acme",
            TriggerFilter::all().with_filter(event_routing::FilterExpr::exact("tenant", "acme")),
            acme.clone(),
        ))
        .unwrap();
    let source = WebhookSource::new("in", "127.0.0.1:0".parse().unwrap());
    source.start(Arc::new(broker.clone())).await.unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "ext-1"),
        ("ce-source", "/billing"),
        ("ce-type", "invoice.paid"),
        ("ce-subject", "events.billing.paid"),
        ("ce-tenant", "acme"),
        ("content-type", "application/json"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    let (status, text) = send(
        source.local_addr().unwrap(),
        "/events",
        headers,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(acme.len(), 1);
    source.stop().await.unwrap();
}

#[tokio::test]
async fn webhook_into_a_broker_routes_end_to_end_over_http() {
    // Webhook -> broker -> HttpSink -> another server.
    let (url, received) = server(vec![]).await;
    let broker = Broker::new();
    broker
        .add_trigger(Trigger::new(
            "forward",
            TriggerFilter::by_type("order.created"),
            Arc::new(
                HttpSink::new("out", url)
                    .unwrap()
                    .with_mode(Mode::Structured),
            ),
        ))
        .unwrap();
    let source = WebhookSource::new("in", "127.0.0.1:0".parse().unwrap());
    source.start(Arc::new(broker.clone())).await.unwrap();
    let event = order();
    let msg = to_http(&event, Mode::Binary).unwrap();
    assert_eq!(
        send(
            source.local_addr().unwrap(),
            "/events",
            msg.headers,
            msg.body
        )
        .await
        .0,
        202
    );
    let (headers, body) = received.requests.lock()[0].clone();
    assert_eq!(
        event_cloudevents::http::from_http(&headers, body).unwrap(),
        forwarded(&event)
    );
    source.stop().await.unwrap();
}

#[tokio::test]
async fn a_reply_event_is_not_asked_for_and_not_routed() {
    // Unlike a Knative broker, the sink sends no `Prefer: reply` and drops
    // a reply CloudEvent in a `200` answer (see the `HttpSink` docs).
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().route(
        "/hook",
        post({
            let asked = asked.clone();
            move |headers: HeaderMap| async move {
                asked.lock().push(headers.get("prefer").cloned());
                let mut reply = order();
                reply.event_type = "order.reply".to_owned();
                let msg = to_http(&reply, Mode::Binary).unwrap();
                (StatusCode::OK, msg.headers, msg.body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let broker = Broker::new();
    let replies = Arc::new(CollectorSink::new("replies"));
    broker
        .add_trigger(Trigger::new(
            "out",
            TriggerFilter::by_type("order.created"),
            Arc::new(HttpSink::new("out", format!("http://{addr}/hook")).unwrap()),
        ))
        .unwrap();
    broker
        .add_trigger(Trigger::new(
            "replies",
            TriggerFilter::by_type("order.reply"),
            replies.clone(),
        ))
        .unwrap();
    for _ in 0..2 {
        let result = broker.route(&order()).await;
        assert_eq!((result.matched, result.delivered), (1, 1));
    }
    broker.wait_idle().await;
    assert_eq!(*asked.lock(), [None, None], "no Prefer: reply");
    assert!(replies.is_empty(), "the reply was routed");
}

/// One scripted answer: a status and extra headers.
type Answer = (u16, Vec<(&'static str, String)>);

/// A server whose `POST /hook` gives the scripted answers in order, then
/// `200`; returns the URL and when each request arrived.
async fn scripted_server(answers: Vec<Answer>) -> (String, Arc<Mutex<Vec<std::time::Instant>>>) {
    let answers = Arc::new(Mutex::new(answers));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let app = Router::new().route(
        "/hook",
        post(move || {
            let answers = answers.clone();
            let seen = seen.clone();
            async move {
                seen.lock().push(std::time::Instant::now());
                let (status, extra) = {
                    let mut answers = answers.lock();
                    if answers.is_empty() {
                        (200, Vec::new())
                    } else {
                        answers.remove(0)
                    }
                };
                let mut headers = HeaderMap::new();
                for (name, value) in extra {
                    headers.insert(name, value.parse().unwrap());
                }
                (StatusCode::from_u16(status).unwrap(), headers, "refused")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), arrivals)
}

/// A broker with one trigger delivering every event to `url` per `spec`,
/// dead-lettering into the returned collector.
fn broker_to(url: &str, spec: DeliverySpec) -> (Broker, Arc<CollectorSink>) {
    broker_to_sink(HttpSink::new("hook", url).unwrap(), spec)
}

fn quick_retries(retries: u32) -> DeliverySpec {
    DeliverySpec::new()
        .with_retries(retries)
        .with_backoff(BackoffPolicy::Linear, Duration::from_millis(10))
}

#[tokio::test]
async fn answers_knative_does_not_retry_are_dead_lettered_at_once() {
    // A 400 (the event is unparsable), 403, 410 ... cannot succeed by
    // sending the same event again: the broker retried them all the same,
    // `retries` more requests and backoff waits before the dead letter.
    for code in [400_u16, 401, 403, 405, 410, 413, 415, 422, 301] {
        let (url, arrivals) = scripted_server(vec![(code, vec![]); 4]).await;
        let (broker, dead) = broker_to(&url, quick_retries(3));
        let result = broker.route(&order()).await;
        assert_eq!(
            (result.matched, result.failed, result.dead_lettered),
            (1, 1, 1),
            "{code}"
        );
        assert_eq!(arrivals.lock().len(), 1, "{code}: retried");
        let letter = &dead.events()[0].metadata;
        assert_eq!(letter["dlqattempts"], "1", "{code}");
        assert!(
            letter["dlqreason"].contains(&format!("HTTP {code}")),
            "{code}: {letter:?}"
        );
        let metrics = broker.metrics();
        assert_eq!(
            (
                metrics.delivered,
                metrics.failed,
                metrics.dead_lettered,
                metrics.retries
            ),
            (0, 1, 1, 0),
            "{code}"
        );
    }
    // Without a dead-letter sink: a failure the metrics count as lost.
    let (url, arrivals) = scripted_server(vec![(400, vec![]); 4]).await;
    let broker = Broker::new();
    broker
        .add_trigger(
            Trigger::new(
                "hook",
                TriggerFilter::all(),
                Arc::new(HttpSink::new("hook", url).unwrap()),
            )
            .with_delivery(quick_retries(3)),
        )
        .unwrap();
    let result = broker.route(&order()).await;
    assert_eq!((result.failed, result.dead_lettered), (1, 0));
    assert_eq!(arrivals.lock().len(), 1);
    let metrics = broker.metrics();
    assert_eq!(
        (
            metrics.failed,
            metrics.dead_letter_failures,
            metrics.retries
        ),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn answers_knative_retries_are_retried() {
    // 404 (an endpoint still starting), 409 (processing in progress), 408,
    // 429 and 5xx may succeed later.
    for code in [404_u16, 408, 409, 429, 500, 502, 503, 504] {
        let (url, arrivals) = scripted_server(vec![(code, vec![]); 2]).await;
        let (broker, dead) = broker_to(&url, quick_retries(2));
        let result = broker.route(&order()).await;
        assert_eq!((result.delivered, result.failed), (1, 0), "{code}");
        assert_eq!(arrivals.lock().len(), 3, "{code}");
        assert!(dead.is_empty());
        assert_eq!(broker.metrics().retries, 2, "{code}");
    }
}

/// The time between the first and the second request.
fn first_gap(arrivals: &Mutex<Vec<std::time::Instant>>) -> Duration {
    let arrivals = arrivals.lock();
    assert!(arrivals.len() >= 2, "{} requests", arrivals.len());
    arrivals[1] - arrivals[0]
}

#[tokio::test]
async fn retry_after_on_429_and_503_delays_the_next_attempt() {
    // The endpoint asked for a pause (seconds or an HTTP date); the broker
    // came back after its own 10 ms backoff, adding to the overload.
    for (code, date) in [(503_u16, false), (429, true)] {
        // Seconds: 1 s. A date 3 s ahead, written to the second: over 2 s.
        let (value, at_least) = if date {
            let at = std::time::SystemTime::now() + Duration::from_secs(3);
            (httpdate::fmt_http_date(at), Duration::from_millis(1900))
        } else {
            ("1".to_owned(), Duration::from_millis(950))
        };
        let (url, arrivals) =
            scripted_server(vec![(code, vec![("retry-after", value.clone())])]).await;
        let (broker, _) = broker_to(&url, quick_retries(1));
        assert_eq!(broker.route(&order()).await.delivered, 1, "{code}");
        let gap = first_gap(&arrivals);
        assert!(gap >= at_least, "{code} {value}: {gap:?}");
    }
}

#[tokio::test]
async fn retry_after_never_shortens_the_backoff_and_applies_only_to_429_and_503() {
    // `Retry-After: 0` does not cut a 300 ms backoff short (Knative waits
    // the longer of the two).
    let (url, arrivals) = scripted_server(vec![(429, vec![("retry-after", "0".to_owned())])]).await;
    let (broker, _) = broker_to(
        &url,
        DeliverySpec::new()
            .with_retries(1)
            .with_backoff(BackoffPolicy::Linear, Duration::from_millis(300)),
    );
    assert_eq!(broker.route(&order()).await.delivered, 1);
    assert!(first_gap(&arrivals) >= Duration::from_millis(290));
    // On a 500 the header is not honoured (as in Knative): an hour asked
    // for, the retry comes after the backoff.
    let (url, _) = scripted_server(vec![(500, vec![("retry-after", "3600".to_owned())])]).await;
    let (broker, _) = broker_to(&url, quick_retries(1));
    let result = tokio::time::timeout(Duration::from_secs(20), broker.route(&order()))
        .await
        .expect("Retry-After on a 500 is not honoured");
    assert_eq!(result.delivered, 1);
}

#[tokio::test]
async fn errors_of_other_sinks_are_retried_whatever_they_are() {
    // User code may fail transiently with any error: only HTTP answers are
    // judged by their status.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let broker = Broker::new();
    let dead = Arc::new(CollectorSink::new("dead"));
    broker
        .add_trigger(
            Trigger::new(
                "handler",
                TriggerFilter::all(),
                Arc::new(event_routing::InProcessSink::new("handler", move |_| {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { Err(Error::invalid_config("db", "not ready yet")) }
                })),
            )
            .with_delivery(quick_retries(2).with_dead_letter_sink(dead.clone())),
        )
        .unwrap();
    assert_eq!(broker.route(&order()).await.dead_lettered, 1);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(dead.events()[0].metadata["dlqattempts"], "3");
}

#[tokio::test]
async fn a_webhook_passes_on_a_retryable_answer_of_its_http_sink_as_503() {
    // Webhook -> HttpSink -> an overloaded endpoint: the webhook's sender is
    // told to retry (503), not that the webhook failed for good.
    for code in [503_u16, 429, 500] {
        let (url, _) = scripted_server(vec![(code, vec![])]).await;
        let source = WebhookSource::new("in", "127.0.0.1:0".parse().unwrap());
        source
            .start(Arc::new(HttpSink::new("out", url).unwrap()))
            .await
            .unwrap();
        let msg = to_http(&order(), Mode::Binary).unwrap();
        let (status, text) = send(
            source.local_addr().unwrap(),
            "/events",
            msg.headers,
            msg.body,
        )
        .await;
        assert_eq!(status, 503, "{code}: {text}");
        source.stop().await.unwrap();
    }
}

#[tokio::test]
async fn retry_after_is_bounded_by_retry_after_max() {
    // An endpoint asking for a day does not park the delivery for a day:
    // the wait is capped at `retry_after_max` ...
    let (url, arrivals) =
        scripted_server(vec![(503, vec![("retry-after", "86400".to_owned())])]).await;
    let (broker, _) = broker_to(
        &url,
        quick_retries(1).with_retry_after_max(Duration::from_millis(300)),
    );
    let result = tokio::time::timeout(Duration::from_secs(20), broker.route(&order()))
        .await
        .expect("the wait is capped");
    assert_eq!(result.delivered, 1);
    assert!(first_gap(&arrivals) >= Duration::from_millis(290));
    // ... and zero ignores the header.
    let (url, _) = scripted_server(vec![(429, vec![("retry-after", "3600".to_owned())])]).await;
    let (broker, _) = broker_to(&url, quick_retries(1).with_retry_after_max(Duration::ZERO));
    let result = tokio::time::timeout(Duration::from_secs(20), broker.route(&order()))
        .await
        .expect("Retry-After ignored");
    assert_eq!(result.delivered, 1);
}

/// A consumer runner's DLQ that forwards through an `HttpSink` to an
/// endpoint that is down (answering `503`, as a proxy with no backend
/// does) keeps being offered the dead letter until the endpoint takes it:
/// the answer is worth retrying, so the `SinkDlqHandler` reports it as
/// transient (the runner judges DLQ errors by `Error::is_transient`). It
/// was a refusal for good: after `dlq_attempts` the event was left
/// unsettled, its deliveries exhausted, and the dead letter lost.
#[cfg(feature = "bus")]
#[tokio::test]
async fn a_consumer_dead_letters_through_an_http_dlq_that_answers_503_until_it_recovers() {
    use event_bus::{ConsumerConfig, EventBus};
    use event_core::{ReceivedEvent, SubscribeOptions, SubscriptionFilter};
    let (url, received) = server(vec![503, 503, 503, 503]).await;
    let dlq = event_routing::SinkDlqHandler::new(
        Arc::new(HttpSink::new("dlq-endpoint", url).unwrap()),
        "events.dlq",
    )
    .unwrap();
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_dlq_handler(Arc::new(dlq));
    bus.update_subscription_with_options(
        SubscriptionFilter {
            subscriber_id: "w".into(),
            subjects: vec!["events.orders.>".into()],
            durable: true,
        },
        SubscribeOptions {
            max_deliver: Some(1),
            ack_wait: Some(Duration::from_secs(5)),
            ..SubscribeOptions::default()
        },
    )
    .await
    .unwrap();
    bus.publish_event(&order()).await.unwrap();
    let consumer = bus
        .consume(
            "w",
            |_r: ReceivedEvent| async { Err::<(), _>("always") },
            ConsumerConfig {
                dlq_attempts: 2,
                ..ConsumerConfig::default()
            },
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let report = consumer.report();
        if report.dead_lettered + report.dlq_failed > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{report:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = consumer.shutdown(Duration::from_secs(1)).await;
    assert_eq!((report.dead_lettered, report.dlq_failed), (1, 0));
    assert_eq!(received.requests.lock().len(), 5);
}

/// Reads `conn` until the peer closes it; `Err` with what was read if it
/// is still open after `limit`.
async fn read_until_closed(
    conn: &mut tokio::net::TcpStream,
    limit: Duration,
) -> Result<Vec<u8>, Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Ok(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return Err(seen),
        }
    }
}

/// A connection that sends nothing (a peer that vanished without closing
/// it: a crashed host, a dropped NAT mapping) or stays open idle after a
/// request is closed after the idle timeout, instead of holding its socket
/// and task for as long as the server runs.
#[tokio::test]
async fn webhook_closes_connections_that_stay_silent_or_idle() {
    use tokio::io::AsyncWriteExt;
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_idle_timeout(Duration::from_millis(300))
        .unwrap();
    source
        .start(Arc::new(CollectorSink::new("c")))
        .await
        .unwrap();
    let addr = source.local_addr().unwrap();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    // a complete request on a kept-alive connection, answered, then nothing
    idle.write_all(b"GET /events HTTP/1.1\r\nHost: webhook\r\n\r\n")
        .await
        .unwrap();
    let limit = Duration::from_secs(5);
    let answered = read_until_closed(&mut idle, limit).await;
    let silent = read_until_closed(&mut silent, limit).await;
    assert!(
        answered
            .as_ref()
            .is_ok_and(|text| text.starts_with(b"HTTP/1.1 405")),
        "the idle connection was not closed: {:?}",
        answered.map_err(|text| String::from_utf8_lossy(&text).into_owned())
    );
    assert_eq!(
        silent,
        Ok(Vec::new()),
        "the silent connection was not closed"
    );
    assert_serves_a_working_client(addr).await;
    source.stop().await.unwrap();

    assert!(matches!(
        WebhookSource::new("w", addr).with_idle_timeout(Duration::ZERO),
        Err(Error::InvalidConfig { .. })
    ));
}

/// Deliveries that take `delay` (`None`: never end), counted as they start
/// and as they end.
struct SlowSink {
    delay: Option<Duration>,
    started: std::sync::atomic::AtomicUsize,
    delivered: std::sync::atomic::AtomicUsize,
}

impl SlowSink {
    fn new(delay: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            delay,
            started: 0.into(),
            delivered: 0.into(),
        })
    }

    fn started(&self) -> usize {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn delivered(&self) -> usize {
        self.delivered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (5 s at most) until a delivery has started.
    async fn wait_started(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.started() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no delivery started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait::async_trait]
impl EventSink for SlowSink {
    async fn deliver(&self, _event: &Event) -> event_core::Result<()> {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.delay {
            Some(delay) => tokio::time::sleep(delay).await,
            None => std::future::pending().await,
        }
        self.delivered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn name(&self) -> &str {
        "slow"
    }
}

/// The head (with `extra` headers) and the body of a binary-mode POST of
/// `event` to `/events`, as a raw HTTP/1.1 client sends them.
fn raw_request(event: &Event, extra: &str) -> (Vec<u8>, Vec<u8>) {
    let msg = to_http(event, Mode::Binary).unwrap();
    let mut head = format!(
        "POST /events HTTP/1.1\r\nHost: webhook\r\nContent-Length: {}\r\n{extra}",
        msg.body.len()
    );
    for (name, value) in &msg.headers {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    (head.into_bytes(), msg.body)
}

/// An order whose body is large enough to send in many pieces.
fn large_order() -> Event {
    let mut event = order();
    event.payload = json!({"id": 7, "note": "x".repeat(2_000)});
    event
}

/// Sends the head of a request with `Expect: 100-continue`, waits for the
/// server's `100 Continue` (the handler is reading the body then), sends
/// half of the body and stops: a sender that stalls mid-body.
async fn stalled_request(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (head, body) = raw_request(&large_order(), "Expect: 100-continue\r\n");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(&head).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("no 100 Continue")
            .unwrap();
        assert_ne!(n, 0, "closed before 100 Continue");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 100"), "{seen:?}");
    conn.write_all(&body[..body.len() / 2]).await.unwrap();
    conn
}

/// A sender that sends a request head and then only part of the body (a
/// slowloris, or a sender that hung mid-request) is answered `408` and
/// disconnected after the body timeout, instead of holding a socket and a
/// task for as long as the server runs; nothing is delivered.
#[tokio::test]
async fn webhook_answers_408_and_closes_when_a_request_body_stalls() {
    use tokio::io::AsyncWriteExt;
    let sink = Arc::new(CollectorSink::new("c"));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_body_timeout(Duration::from_millis(300))
        .unwrap();
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();

    // the head and half the body at once, then nothing
    let (head, body) = raw_request(&order(), "");
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&head).await.unwrap();
    stalled.write_all(&body[..body.len() / 2]).await.unwrap();
    // the same after a `100 Continue`
    let mut continued = stalled_request(addr).await;

    let limit = Duration::from_secs(5);
    for (what, conn) in [("stalled", &mut stalled), ("continued", &mut continued)] {
        let answer = read_until_closed(conn, limit)
            .await
            .map(|text| String::from_utf8_lossy(&text).into_owned());
        assert!(
            answer
                .as_ref()
                .is_ok_and(|text| text.contains("HTTP/1.1 408")),
            "the {what} request was not answered 408 and closed: {answer:?}"
        );
    }
    assert!(sink.is_empty());
    assert_eq!(source.stats().bad_requests, 2);

    assert_serves_a_working_client(addr).await;
    assert_eq!(sink.len(), 1);
    source.stop().await.unwrap();

    assert!(matches!(
        WebhookSource::new("w", addr).with_body_timeout(Duration::ZERO),
        Err(Error::InvalidConfig { .. })
    ));
}

/// The body timeout bounds the whole body, not the pause between two
/// pieces: a sender that trickles a byte at a time is cut off too.
#[tokio::test]
async fn webhook_closes_a_request_whose_body_trickles_past_the_body_timeout() {
    use tokio::io::AsyncWriteExt;
    let sink = Arc::new(CollectorSink::new("c"));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_body_timeout(Duration::from_millis(300))
        .unwrap();
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();

    let (head, body) = raw_request(&large_order(), "");
    let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let trickle = tokio::spawn(async move {
        write.write_all(&head).await?;
        // a byte every 20 ms: the whole body would take 40 s
        for byte in body.chunks(1) {
            write.write_all(byte).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::io::Result::Ok(write)
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        closed.is_ok(),
        "the trickling sender was not disconnected: {seen:?}"
    );
    // the 408 is written; whether it reaches a sender that keeps writing
    // into a closed connection depends on its TCP stack (a reset may drop it)
    assert!(
        seen.is_empty() || seen.starts_with("HTTP/1.1 408"),
        "{seen}"
    );
    assert!(sink.is_empty());
    source.stop().await.unwrap();
}

/// The body timeout bounds reading the body only: a sender that pauses
/// briefly mid-body, or whose event takes the sink longer than the body
/// timeout to deliver (a slow sink is not the sender's fault), is answered
/// 202.
#[tokio::test]
async fn a_slow_sink_or_a_brief_pause_mid_body_is_not_a_body_timeout() {
    use tokio::io::AsyncWriteExt;
    let sink = SlowSink::new(Some(Duration::from_millis(2_500)));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_body_timeout(Duration::from_millis(2_000))
        .unwrap();
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();

    // `Connection: close`: the server closes the connection after answering
    let (head, body) = raw_request(&large_order(), "Connection: close\r\n");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(&head).await.unwrap();
    conn.write_all(&body[..body.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.write_all(&body[body.len() / 2..]).await.unwrap();
    let answer = read_until_closed(&mut conn, Duration::from_secs(10))
        .await
        .map(|text| String::from_utf8_lossy(&text).into_owned());
    assert!(
        answer
            .as_ref()
            .is_ok_and(|text| text.starts_with("HTTP/1.1 202")),
        "{answer:?}"
    );
    assert_eq!(sink.delivered(), 1);
    source.stop().await.unwrap();
}

/// `stop` does not wait for a sender that stalls mid-body: it returns once
/// the shutdown grace period is over, with the connection closed and
/// nothing delivered (the sender got no answer, so it retries elsewhere).
#[tokio::test]
async fn webhook_stop_returns_within_the_grace_period_while_a_body_stalls() {
    let sink = Arc::new(CollectorSink::new("c"));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        // long enough that only the grace period can end the request
        .with_body_timeout(Duration::from_secs(60))
        .unwrap()
        .with_shutdown_grace(Duration::from_millis(300));
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();
    let mut stalled = stalled_request(addr).await;

    let stopped = tokio::time::timeout(Duration::from_secs(10), source.stop()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "stop did not return: {stopped:?}"
    );
    assert!(!source.is_running());
    let answer = read_until_closed(&mut stalled, Duration::from_secs(5))
        .await
        .map(|text| String::from_utf8_lossy(&text).into_owned());
    assert!(
        answer.as_ref().is_ok_and(|text| !text.contains(" 202 ")),
        "the stalled connection was not closed, or accepted: {answer:?}"
    );
    assert!(sink.is_empty());
}

/// A request in progress when `stop` is called finishes within the grace
/// period and is answered; a delivery still running when the grace period
/// ends (a stuck sink) is cancelled, the sender gets no answer (so it
/// retries) and `stop` returns.
#[tokio::test]
async fn stop_lets_a_request_finish_within_the_grace_period_and_cancels_a_stuck_sink_after_it() {
    let msg = to_http(&order(), Mode::Binary).unwrap();

    // a delivery that takes 300 ms, a 10 s grace period: answered 202
    let sink = SlowSink::new(Some(Duration::from_millis(300)));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_shutdown_grace(Duration::from_secs(10));
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();
    let request = tokio::spawn(send(addr, "/events", msg.headers.clone(), msg.body.clone()));
    sink.wait_started().await;
    source.stop().await.unwrap();
    assert_eq!(request.await.unwrap().0, 202);
    assert_eq!(sink.delivered(), 1);

    // a delivery that never ends, a 300 ms grace period: cancelled
    let sink = SlowSink::new(None);
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_shutdown_grace(Duration::from_millis(300));
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();
    let client = reqwest::Client::new();
    let request = tokio::spawn(
        client
            .post(format!("http://{addr}/events"))
            .headers(msg.headers.clone())
            .body(msg.body.clone())
            .send(),
    );
    sink.wait_started().await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), source.stop()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "stop did not return: {stopped:?}"
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the request was not cut off")
        .unwrap();
    assert!(
        answer.is_err(),
        "the sender got an answer for an event not delivered: {answer:?}"
    );
    assert_eq!(sink.delivered(), 0);
}

/// A raw server answering every request with `status` and a
/// `content-length: 16` body of which it sends nothing (the connection stays
/// open); returns the URL and how many requests arrived.
async fn stalled_body_server(status: &'static str) -> (String, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut request = vec![0_u8; 64 * 1024];
                if socket.read(&mut request).await.unwrap_or(0) == 0 {
                    return;
                }
                *seen.lock() += 1;
                let head = format!("HTTP/1.1 {status}\r\ncontent-length: 16\r\n\r\n");
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                // Never sends the body; holds the connection for a while.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    (format!("http://{addr}/hook"), requests)
}

#[tokio::test]
async fn an_answer_whose_body_stalls_is_judged_by_its_status() {
    // A short body the endpoint announced but never sent: the delivery waited
    // for it until the attempt timed out. A 200 then counted as a failure
    // and was retried (the endpoint got the event twice); a 400, which is
    // not retried, became a timeout, which is.
    let spec = quick_retries(1).with_timeout(Some(Duration::from_secs(2)));
    let (url, requests) = stalled_body_server("200 OK").await;
    let (broker, dead) = broker_to(&url, spec.clone());
    let result = tokio::time::timeout(Duration::from_secs(10), broker.route(&order()))
        .await
        .unwrap();
    assert_eq!(
        (result.delivered, result.failed),
        (1, 0),
        "{:?}",
        dead.events()
    );
    assert_eq!(*requests.lock(), 1, "an accepted event was sent again");

    let (url, requests) = stalled_body_server("400 Bad Request").await;
    let (broker, dead) = broker_to(&url, spec);
    let result = tokio::time::timeout(Duration::from_secs(10), broker.route(&order()))
        .await
        .unwrap();
    assert_eq!((result.failed, result.dead_lettered), (1, 1));
    assert_eq!(*requests.lock(), 1, "a 400 was retried");
    let reason = &dead.events()[0].metadata["dlqreason"];
    assert!(reason.contains("HTTP 400"), "{reason}");
}

#[tokio::test]
async fn an_accepted_event_whose_answer_body_stalls_is_delivered_under_a_short_attempt_timeout() {
    // The body of a 2xx answer was waited for (up to a second) inside the
    // delivery: an attempt timeout shorter than that cancelled the accepted
    // delivery as a timeout, retried it, and the endpoint got it twice.
    let spec = quick_retries(1).with_timeout(Some(Duration::from_millis(500)));
    let (url, requests) = stalled_body_server("200 OK").await;
    let (broker, dead) = broker_to(&url, spec);
    let result = tokio::time::timeout(Duration::from_secs(10), broker.route(&order()))
        .await
        .unwrap();
    assert_eq!(
        (result.delivered, result.failed),
        (1, 0),
        "{:?}",
        dead.events()
    );
    assert_eq!(*requests.lock(), 1, "an accepted event was sent again");
}

/// A raw keep-alive server answering every request `200` with a short body;
/// returns the URL and how many connections it accepted.
async fn counting_server() -> (String, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            *seen.lock() += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0_u8; 4096];
                loop {
                    // one request: its head, then `content-length` bytes
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/hook"), connections)
}

#[tokio::test]
async fn deliveries_answered_with_a_short_body_reuse_their_connection() {
    // The short body of a 2xx answer is read so that the connection goes
    // back to the pool: back-to-back deliveries share one connection.
    let (url, connections) = counting_server().await;
    let sink = HttpSink::new("hook", &url).unwrap();
    for _ in 0..5 {
        sink.deliver(&order()).await.unwrap();
    }
    assert_eq!(*connections.lock(), 1);
}

/// An event of `bytes` payload bytes (a JSON string), in binary mode: the
/// HTTP body is the payload.
fn event_of_size(bytes: usize) -> (HeaderMap, Vec<u8>) {
    let mut event = order();
    event.payload = json!("x".repeat(bytes - 2));
    let msg = to_http(&event, Mode::Binary).unwrap();
    assert_eq!(msg.body.len(), bytes);
    (msg.headers, msg.body)
}

/// A 3 MB event was answered `413 "Failed to buffer the request body:
/// length limit exceeded"`: the 2 MiB limit could not be raised. Now it
/// can (`with_body_limit`), and the `413` names the limit and the setting.
#[tokio::test]
async fn the_webhook_body_limit_is_2_mib_by_default_and_can_be_raised() {
    use event_routing::http::DEFAULT_BODY_LIMIT;
    assert_eq!(DEFAULT_BODY_LIMIT, 2 * 1024 * 1024);
    let sink = Arc::new(CollectorSink::new("in"));
    let start = |source: WebhookSource| {
        let sink = sink.clone();
        async move {
            source.start(sink).await.unwrap();
            source
        }
    };
    let default = start(WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())).await;
    let addr = default.local_addr().unwrap();
    let (headers, body) = event_of_size(DEFAULT_BODY_LIMIT);
    assert_eq!(send(addr, "/events", headers, body).await.0, 202);
    let (headers, body) = event_of_size(3_000_000);
    let (status, text) = send(addr, "/events", headers, body).await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("2097152 bytes") && text.contains("with_body_limit"),
        "{text}"
    );
    let stats = default.stats();
    assert_eq!((stats.accepted, stats.bad_requests), (1, 1));
    default.stop().await.unwrap();

    let raised = start(
        WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
            .with_body_limit(4 * 1024 * 1024)
            .unwrap(),
    )
    .await;
    let addr = raised.local_addr().unwrap();
    let (headers, body) = event_of_size(3_000_000);
    let (status, text) = send(addr, "/events", headers, body).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(sink.len(), 2);
    raised.stop().await.unwrap();

    // lowered: the router enforces it too
    let app = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_body_limit(1024)
        .unwrap()
        .router(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (headers, body) = event_of_size(1025);
    let (status, text) = send(addr, "/events", headers, body).await;
    assert_eq!(status, 413, "{text}");
    let (headers, body) = event_of_size(1024);
    assert_eq!(send(addr, "/events", headers, body).await.0, 202);
    server.abort();

    let zero = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap()).with_body_limit(0);
    assert!(matches!(zero, Err(Error::InvalidConfig { .. })));
}

/// A working client is served (`202`): what the connection limits and
/// timeouts of a test did to other connections left the webhook working.
async fn assert_serves_a_working_client(addr: SocketAddr) {
    let msg = to_http(&order(), Mode::Binary).unwrap();
    let (status, text) = send(addr, "/events", msg.headers, msg.body).await;
    assert_eq!(status, 202, "a working client: {text}");
}

/// Pipelines empty-bodied requests (each answered `400`) into a connection
/// with a small receive buffer and never reads the answers, until writing
/// fails (the server closed the connection) or `limit` passes. `Ok` with
/// how long after connecting writing failed; `Err` if the connection is
/// still open after `limit`.
async fn pipeline_without_reading(addr: SocketAddr, limit: Duration) -> Result<Duration, String> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let started = tokio::time::Instant::now();
    let mut conn = socket.connect(addr).await.unwrap();
    let chunk = b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".repeat(1_000);
    let mut last_progress = started;
    let mut sent = 0usize;
    let deadline = started + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.write_all(&chunk)).await {
            Ok(Ok(())) => {
                sent += chunk.len();
                last_progress = tokio::time::Instant::now();
            }
            Ok(Err(_closed)) => {
                return Ok(started.elapsed());
            }
            Err(_elapsed) => {
                return Err(format!(
                    "still open {limit:?} after connecting, {sent} bytes sent, the last \
                     {:?} ago",
                    last_progress.elapsed()
                ));
            }
        }
    }
}

/// A sender that pipelines requests and never reads the answers (so the
/// server's writes stall once the socket buffers are full) is disconnected
/// after the write timeout, instead of holding a socket, megabytes of
/// kernel buffers and a task for as long as the server runs; a sender that
/// reads its answers is served as before.
#[tokio::test]
async fn webhook_closes_a_connection_whose_sender_does_not_read_its_answers() {
    use event_routing::http::DEFAULT_WRITE_TIMEOUT;
    use tokio::io::AsyncWriteExt;
    assert_eq!(DEFAULT_WRITE_TIMEOUT, Duration::from_secs(30));
    let timeout = Duration::from_millis(1_000);
    // the idle and body timeouts (30 s) do not end such a connection
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_write_timeout(timeout)
        .unwrap();
    source
        .start(Arc::new(CollectorSink::new("c")))
        .await
        .unwrap();
    let addr = source.local_addr().unwrap();

    let since_connect = pipeline_without_reading(addr, Duration::from_secs(20))
        .await
        .unwrap();
    // not before the server had waited the timeout (its writes cannot have
    // stalled before the connection was open); the bound above is loose:
    // the server answers the requests buffered ahead of the stall first
    assert!(since_connect >= timeout, "{since_connect:?}");

    // an answer that fits the buffers is not timed, however long the
    // sender takes to read it
    let (head, body) = raw_request(&order(), "Connection: close\r\n");
    let mut slow_reader = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow_reader.write_all(&head).await.unwrap();
    slow_reader.write_all(&body).await.unwrap();
    tokio::time::sleep(timeout * 2).await;
    let answer = read_until_closed(&mut slow_reader, Duration::from_secs(10))
        .await
        .map(|text| String::from_utf8_lossy(&text).into_owned());
    assert!(
        answer
            .as_ref()
            .is_ok_and(|text| text.starts_with("HTTP/1.1 202")),
        "{answer:?}"
    );

    assert_serves_a_working_client(addr).await;
    source.stop().await.unwrap();

    assert!(matches!(
        WebhookSource::new("w", addr).with_write_timeout(Duration::ZERO),
        Err(Error::InvalidConfig { .. })
    ));
}

/// A sender that pipelines requests and reads its answers steadily, if
/// slowly, is not cut off by the write timeout: with a send buffer of
/// megabytes, the kernel reported the socket writable again only after
/// longer than the timeout, and the connection was closed.
#[tokio::test]
async fn a_sender_reading_its_answers_steadily_is_not_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = Duration::from_secs(2);
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_write_timeout(timeout)
        .unwrap();
    source
        .start(Arc::new(CollectorSink::new("c")))
        .await
        .unwrap();
    let addr = source.local_addr().unwrap();
    let (mut answers, mut requests) = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap()
        .into_split();
    let writer = tokio::spawn(async move {
        let chunk = b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".repeat(1_000);
        while requests.write_all(&chunk).await.is_ok() {}
    });
    // 16 KiB every 125 ms: 256 KiB per write timeout, the rate the docs
    // say is enough, far less than the server writes
    let started = tokio::time::Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0usize;
    while started.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(125)).await;
        match tokio::time::timeout(Duration::from_secs(10), answers.read_exact(&mut buf)).await {
            Ok(Ok(n)) => read += n,
            Ok(Err(err)) => panic!(
                "{err} {:?} after connecting, {read} bytes of answers read",
                started.elapsed()
            ),
            Err(_) => panic!("no answer for 10 s, {read} bytes read"),
        }
    }
    writer.abort();
    source.stop().await.unwrap();
}

/// At most `with_max_connections` connections are served at once: a
/// further one is served once one of them closes.
#[tokio::test]
async fn a_connection_over_the_limit_is_served_once_another_closes() {
    use event_routing::http::DEFAULT_MAX_CONNECTIONS;
    use tokio::io::AsyncWriteExt;
    assert_eq!(DEFAULT_MAX_CONNECTIONS, 512);
    let sink = Arc::new(CollectorSink::new("c"));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_max_connections(1)
        .unwrap();
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();

    // holds the only connection (the idle timeout, 30 s, does not end it
    // within the test)
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // let the server accept it before the next one connects
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (head, body) = raw_request(&order(), "Connection: close\r\n");
    let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
    waiting.write_all(&head).await.unwrap();
    waiting.write_all(&body).await.unwrap();
    let early = read_until_closed(&mut waiting, Duration::from_millis(500)).await;
    assert_eq!(early, Err(Vec::new()), "served over the limit");
    assert!(sink.is_empty());

    drop(silent);
    let answer = read_until_closed(&mut waiting, Duration::from_secs(10))
        .await
        .map(|text| String::from_utf8_lossy(&text).into_owned());
    assert!(
        answer
            .as_ref()
            .is_ok_and(|text| text.starts_with("HTTP/1.1 202")),
        "{answer:?}"
    );
    assert_eq!(sink.len(), 1);
    source.stop().await.unwrap();

    assert!(matches!(
        WebhookSource::new("w", addr).with_max_connections(0),
        Err(Error::InvalidConfig { .. })
    ));
}

/// A request that declares a body over the limit is answered `413` at
/// once, without waiting for the body (which is not read: with
/// `Expect: 100-continue` the sender is spared sending it), and the
/// connection is closed.
#[tokio::test]
async fn a_declared_body_over_the_limit_is_answered_413_at_once() {
    use tokio::io::AsyncWriteExt;
    let sink = Arc::new(CollectorSink::new("c"));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
        .with_body_limit(1024)
        .unwrap()
        // long enough that only the declared length can end the request
        .with_body_timeout(Duration::from_secs(60))
        .unwrap();
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();

    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /events HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n\
             Content-Length: 1025\r\n{expect}\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut conn, Duration::from_secs(10))
            .await
            .map(|text| String::from_utf8_lossy(&text).into_owned());
        assert!(
            answer
                .as_ref()
                .is_ok_and(|text| text.starts_with("HTTP/1.1 413")
                    && text.contains("1024 bytes")
                    && text.to_ascii_lowercase().contains("connection: close")),
            "{expect:?}: {answer:?}"
        );
    }
    assert!(sink.is_empty());
    assert_eq!(source.stats().bad_requests, 2);

    // at the limit: read and delivered
    let (headers, body) = event_of_size(1024);
    assert_eq!(send(addr, "/events", headers, body).await.0, 202);
    source.stop().await.unwrap();
}

/// A broker whose one trigger delivers to `sink` with `spec`, dead letters
/// collected.
fn broker_to_sink(sink: HttpSink, spec: DeliverySpec) -> (Broker, Arc<CollectorSink>) {
    let dead = Arc::new(CollectorSink::new("dead"));
    let broker = Broker::new();
    broker
        .add_trigger(
            Trigger::new("hook", TriggerFilter::all(), Arc::new(sink))
                .with_delivery(spec.with_dead_letter_sink(dead.clone())),
        )
        .unwrap();
    (broker, dead)
}

/// Redirects are not delivered and not retried, whatever the client: a
/// `302` that a client with reqwest's default policy followed with a GET
/// (the answer then came from another URL: no status of the endpoint's to
/// judge, and it used to be retried), and a `307` loop (it used to take 11
/// requests per attempt, 44 with 3 retries).
#[tokio::test]
async fn redirects_are_dead_lettered_at_once_whatever_the_client() {
    let (url, moved) = redirecting_server(302).await;
    let sink = HttpSink::new("hook", url)
        .unwrap()
        .with_client(reqwest::Client::new());
    let (broker, dead) = broker_to_sink(sink, quick_retries(3));
    let result = broker.route(&order()).await;
    assert_eq!((result.failed, result.dead_lettered), (1, 1));
    let followed = moved.lock().clone();
    assert_eq!(followed.len(), 1, "one GET, no retry: {followed:?}");
    let letter = &dead.events()[0].metadata;
    assert_eq!(letter["dlqattempts"], "1");
    assert!(letter["dlqreason"].contains("redirected"), "{letter:?}");
    assert_eq!(broker.metrics().retries, 0);

    // /loop redirects to itself, counting the requests
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = requests.clone();
    let app = Router::new().route(
        "/loop",
        post(move || {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { (StatusCode::TEMPORARY_REDIRECT, [("location", "/loop")]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sink = HttpSink::new("hook", format!("http://{addr}/loop")).unwrap();
    let (broker, dead) = broker_to_sink(sink, quick_retries(3));
    let result = broker.route(&order()).await;
    assert_eq!((result.failed, result.dead_lettered), (1, 1));
    // the POST and its 10 redirects, once
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 11);
    assert_eq!(dead.events()[0].metadata["dlqattempts"], "1");
}

/// `with_authorization`: a request without the token is answered 401
/// before its body is read (a sender stalling mid-body gets its answer at
/// once, not after the body timeout), reaches no sink and is counted; one
/// with it is delivered. The check applies to `router` too.
#[tokio::test]
async fn webhook_authorization_refuses_before_reading_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authorized = |headers: &HeaderMap| {
        headers.get("authorization").map(|v| v.as_bytes()) == Some(b"Bearer s3cret".as_slice())
    };
    let sink = Arc::new(CollectorSink::new("c"));
    let source =
        WebhookSource::new("w", "127.0.0.1:0".parse().unwrap()).with_authorization(authorized);
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();
    let msg = to_http(&order(), Mode::Binary).unwrap();

    let (status, text) = send(addr, "/events", msg.headers.clone(), msg.body.clone()).await;
    assert_eq!(status, 401, "{text}");
    let mut wrong = msg.headers.clone();
    wrong.insert("authorization", "Bearer guess".parse().unwrap());
    assert_eq!(send(addr, "/events", wrong, msg.body.clone()).await.0, 401);

    // the head alone, with a large body announced and never sent: answered
    let (head, _) = raw_request(&large_order(), "");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(&head).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 401"), "{answer:?}");
    assert!(sink.is_empty());

    let mut right = msg.headers.clone();
    right.insert("authorization", "Bearer s3cret".parse().unwrap());
    let (status, text) = send(addr, "/events", right.clone(), msg.body.clone()).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(sink.len(), 1);
    let stats = source.stats();
    assert_eq!((stats.unauthorized, stats.accepted), (3, 1), "{stats:?}");
    assert_eq!(stats.bad_requests, 0, "{stats:?}");
    source.stop().await.unwrap();

    // mounted in the caller's own app: the same check
    let own = WebhookSource::new("own", "127.0.0.1:0".parse().unwrap())
        .with_authorization(authorized)
        .router(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, own).await.unwrap() });
    assert_eq!(
        send(own_addr, "/events", msg.headers.clone(), msg.body.clone())
            .await
            .0,
        401
    );
    assert_eq!(send(own_addr, "/events", right, msg.body).await.0, 202);
    assert_eq!(sink.len(), 2);
}

#[tokio::test]
async fn a_panicking_subject_mapping_or_authorization_check_is_answered_500_and_counted() {
    // User code run on each request, with the peer's input: its panic
    // dropped the connection without an answer (the sender retried into the
    // same panic), and nothing counted it.
    let mapping = WebhookSource::new("mapped", "127.0.0.1:0".parse().unwrap())
        .with_subject_mapping(|ce| {
            use event_cloudevents::cloudevents::AttributesReader as _;
            let subject = ce.subject().expect("mapping bug: no subject");
            Some(subject.replace('/', "."))
        });
    let authorization = WebhookSource::new("checked", "127.0.0.1:0".parse().unwrap())
        .with_authorization(|headers| {
            headers
                .get("authorization")
                .expect("authorization bug: no header")
                == "Bearer t"
        });
    let msg = to_http(&order(), Mode::Binary).unwrap();
    let mut no_subject = msg.headers.clone();
    no_subject.remove("ce-subject");
    let mut with_token = msg.headers.clone();
    with_token.insert("authorization", "Bearer t".parse().unwrap());
    for (source, panicking, working) in [
        (mapping, no_subject, msg.headers.clone()),
        (authorization, msg.headers.clone(), with_token),
    ] {
        let collector = Arc::new(CollectorSink::new("c"));
        source.start(collector.clone()).await.unwrap();
        let addr = source.local_addr().unwrap();
        let answer = reqwest::Client::new()
            .post(format!("http://{addr}/events"))
            .headers(panicking)
            .body(msg.body.clone())
            .send()
            .await;
        let answer = answer.unwrap_or_else(|err| panic!("{source:?}: no answer: {err:?}"));
        assert_eq!(answer.status().as_u16(), 500, "{source:?}");
        let text = answer.text().await.unwrap();
        assert!(text.contains("bug: no"), "{source:?}: {text}");
        assert_eq!(source.stats().refused, 1, "{source:?}");
        assert!(collector.is_empty());
        // the webhook goes on serving
        let (status, text) = send(addr, "/events", working, msg.body.clone()).await;
        assert_eq!(status, 202, "{source:?}: {text}");
        assert_eq!(collector.len(), 1);
        assert_eq!((source.accepted(), source.refused()), (1, 1));
        source.stop().await.unwrap();
    }
}

/// Zero is refused, so a caller wanting no idle or write timeout gives the
/// longest one: `Duration::MAX` overflowed the deadline (`now + timeout`)
/// and panicked each connection's task, in hyper when a request head
/// arrived and in the write timer when an answer had to wait, dropping the
/// connection without an answer.
#[tokio::test]
async fn the_longest_timeouts_are_as_good_as_none_not_a_panic() {
    for longest in [Duration::MAX, Duration::from_secs(u64::MAX)] {
        let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
            .with_idle_timeout(longest)
            .unwrap()
            .with_write_timeout(longest)
            .unwrap()
            .with_body_timeout(longest)
            .unwrap();
        source
            .start(Arc::new(CollectorSink::new("c")))
            .await
            .unwrap();
        let addr = source.local_addr().unwrap();
        let msg = to_http(&order(), Mode::Binary).unwrap();
        let answer = reqwest::Client::new()
            .post(format!("http://{addr}/events"))
            .headers(msg.headers)
            .body(msg.body)
            .send()
            .await
            .map(|answer| answer.status().as_u16());
        assert!(matches!(answer, Ok(202)), "{longest:?}: {answer:?}");
        // a sender not reading its answers stalls the server's writes,
        // which wait without a limit
        let stalled = pipeline_without_reading(addr, Duration::from_secs(3)).await;
        assert!(stalled.is_err(), "{longest:?}: closed after {stalled:?}");
        assert_serves_a_working_client(addr).await;
        source.stop().await.unwrap();
    }
}

/// A routing loop through HTTP: a webhook feeding a broker whose trigger
/// posts every event back to the webhook with an `HttpSink`. The hop count
/// crosses HTTP so that such loops end (see `WebhookSource`), but nothing
/// counted a hop on the way: the event went round until the webhook's
/// connections ran out and the attempts timed out, every round delivered
/// to the broker's other triggers again.
#[tokio::test]
async fn a_routing_loop_through_an_http_sink_and_a_webhook_ends_at_max_hops() {
    let broker = Broker::new();
    let source = WebhookSource::new("in", "127.0.0.1:0".parse().unwrap())
        .with_max_connections(32)
        .unwrap();
    source.start(Arc::new(broker.clone())).await.unwrap();
    let addr = source.local_addr().unwrap();
    let tap = Arc::new(CollectorSink::new("tap"));
    broker
        .add_triggers([
            Trigger::new(
                "loop",
                TriggerFilter::by_type("order.created"),
                Arc::new(HttpSink::new("back", format!("http://{addr}/events")).unwrap()),
            )
            .with_delivery(DeliverySpec::new().with_timeout(Some(Duration::from_secs(3)))),
            Trigger::new("tap", TriggerFilter::by_type("order.created"), tap.clone()),
        ])
        .unwrap();
    let msg = to_http(&order(), Mode::Binary).unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        send(addr, "/events", msg.headers, msg.body),
    )
    .await
    .expect("the loop did not end");
    let max_hops = event_routing::BrokerConfig::default().max_hops;
    assert_eq!(
        answer.0,
        202,
        "{answer:?}; the tap saw {} copies",
        tap.len()
    );
    assert_eq!(tap.len(), max_hops as usize);
    assert_eq!(broker.metrics().hop_limit, 1);
    // each copy is the event, one more hop each time
    let hops: Vec<_> = tap
        .events()
        .iter()
        .map(|event| event.metadata.get("routinghops").cloned())
        .collect();
    assert_eq!(hops[0], None);
    assert_eq!(hops[1].as_deref(), Some("1"));
    source.stop().await.unwrap();
}

/// A binary-mode request as a raw client sends it, its body chunked as
/// `chunks` (raw chunk framing, so that it can be malformed).
fn chunked_request(event: &Event, chunks: &[u8]) -> Vec<u8> {
    let (head, body) = raw_request(event, "Transfer-Encoding: chunked\r\n");
    let head = String::from_utf8(head)
        .unwrap()
        .replace(&format!("Content-Length: {}\r\n", body.len()), "");
    let mut request = head.into_bytes();
    request.extend_from_slice(chunks);
    request
}

/// Malformed framing from a peer (a chunk size that is no number or
/// overflows, a `Content-Length` that cuts the body short, two lengths),
/// a nesting deeper than JSON parsing allows in either mode, and a request
/// pipelined behind a `415`: each answered with a typed 4xx, nothing half
/// read is delivered, and a well-formed request pipelined behind an answer
/// whose body was read in full is still served.
#[tokio::test]
async fn malformed_framing_and_deep_nesting_are_typed_4xx_and_deliver_nothing() {
    let sink = Arc::new(CollectorSink::new("c"));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap());
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();
    let exchange = |request: Vec<u8>| async move {
        use tokio::io::AsyncWriteExt;
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(&request).await.unwrap();
        let answer = read_until_closed(&mut conn, Duration::from_secs(10)).await;
        String::from_utf8_lossy(&answer.unwrap_or_else(|open| open)).into_owned()
    };
    let (head, body) = raw_request(&order(), "");
    let with_length = |length: &str| {
        let mut request = String::from_utf8(head.clone())
            .unwrap()
            .replace(&format!("Content-Length: {}\r\n", body.len()), length)
            .into_bytes();
        request.extend_from_slice(&body);
        request
    };
    for (what, request) in [
        (
            "chunk size no number",
            chunked_request(&order(), b"zz\r\n{}\r\n0\r\n\r\n"),
        ),
        (
            "chunk size overflowing",
            chunked_request(&order(), b"ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"),
        ),
        (
            "Content-Length cutting the body short",
            with_length(&format!("Content-Length: {}\r\n", body.len() - 2)),
        ),
        (
            "two Content-Lengths",
            with_length(&format!(
                "Content-Length: {}\r\nContent-Length: 3\r\n",
                body.len()
            )),
        ),
    ] {
        let answer = exchange(request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer:?}");
    }

    let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
    let binary = to_http(&order(), Mode::Binary).unwrap();
    let mut structured = HeaderMap::new();
    structured.insert(
        "content-type",
        "application/cloudevents+json".parse().unwrap(),
    );
    for depth in [200, 100_000] {
        let (status, text) = send(
            addr,
            "/events",
            binary.headers.clone(),
            nested(depth).into_bytes(),
        )
        .await;
        assert_eq!(status, 400, "binary, {depth} deep: {text}");
        let doc = format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{}}}"#,
            nested(depth)
        );
        let (status, text) = send(addr, "/events", structured.clone(), doc.into_bytes()).await;
        assert_eq!(status, 400, "structured, {depth} deep: {text}");
    }
    assert!(sink.is_empty());

    // A batch is answered 415 after its (whole) body was read; the request
    // pipelined behind it is served.
    let mut pipelined = b"POST /events HTTP/1.1\r\nHost: w\r\n\
        Content-Type: application/cloudevents-batch+json\r\nContent-Length: 2\r\n\r\n[]"
        .to_vec();
    let (head, body) = raw_request(&order(), "Connection: close\r\n");
    pipelined.extend_from_slice(&head);
    pipelined.extend_from_slice(&body);
    let answer = exchange(pipelined).await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer:?}");
    assert!(answer.contains("HTTP/1.1 202"), "{answer:?}");
    assert_eq!(sink.len(), 1);
    source.stop().await.unwrap();
}

/// `stop` while a request's delivery runs and another is pipelined behind
/// it: the first is answered (`Connection: close`), the second is neither
/// delivered nor answered (its sender retries it), so nothing is accepted
/// and then dropped.
#[tokio::test]
async fn stop_answers_the_request_in_progress_and_delivers_none_pipelined_behind_it() {
    use tokio::io::AsyncWriteExt;
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap());
    let (seen, on_start, wait) = (delivered.clone(), started.clone(), gate.clone());
    source
        .start(Arc::new(event_routing::InProcessSink::new(
            "gated",
            move |event| {
                let (seen, on_start, wait) = (seen.clone(), on_start.clone(), wait.clone());
                async move {
                    on_start.notify_one();
                    wait.acquire().await.unwrap().forget();
                    seen.lock().push(event.id);
                    Ok(())
                }
            },
        )))
        .await
        .unwrap();
    let addr = source.local_addr().unwrap();
    let (mut first, mut second) = (order(), order());
    first.id = "first".into();
    second.id = "second".into();
    let (h1, b1) = raw_request(&first, "");
    let (h2, b2) = raw_request(&second, "");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(&[h1, b1, h2, b2].concat()).await.unwrap();
    started.notified().await;
    let source = Arc::new(source);
    let stopping = source.clone();
    let stop = tokio::spawn(async move { stopping.stop().await });
    // the listener is closed once stop has begun the graceful shutdown
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        tokio::task::yield_now().await;
    }
    gate.add_permits(2);
    let answer = read_until_closed(&mut conn, Duration::from_secs(10)).await;
    let answer = String::from_utf8_lossy(&answer.unwrap_or_else(|open| open)).into_owned();
    stop.await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer:?}");
    assert_eq!(*delivered.lock(), ["first"]);
    assert_eq!(source.accepted(), 1);
}

/// A path no request can reach, since a request's path is
/// percent-encoded and holds no query or fragment (`/é`, `/my hooks`,
/// `/a?b`, `/a#b`), was accepted, and the webhook answered every post
/// `404`; now `InvalidConfig`, naming percent-encoding. A path written
/// percent-encoded is reached.
#[tokio::test]
async fn webhook_paths_no_request_can_reach_are_config_errors() {
    for path in [
        "/é",
        "/my hooks",
        "/a?b",
        "/a#b",
        "/a\0",
        "/a\nb",
        "/a%zz",
        "/a%4",
    ] {
        let err = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
            .with_path(path)
            .map(|source| format!("accepted: {source:?}"))
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { reason, .. } if reason.contains("percent-encode")),
            "{path:?}: {err:?}"
        );
    }
    let msg = to_http(&order(), Mode::Binary).unwrap();
    for path in [
        "/caf%C3%A9",
        "/my%20hooks",
        "/v1;tenant=a/events",
        "/a-b_c.d~e/@x!$&'()*+,=",
    ] {
        let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap())
            .with_path(path)
            .unwrap();
        source
            .start(Arc::new(CollectorSink::new("c")))
            .await
            .unwrap();
        let addr = source.local_addr().unwrap();
        let (status, text) = send(addr, path, msg.headers.clone(), msg.body.clone()).await;
        assert_eq!(status, 202, "{path}: {text}");
        source.stop().await.unwrap();
    }
}

/// A raw endpoint at a random local port that reads each request's head
/// and answers it with `answer` (`None`: never answers, holding the
/// connection), then closes the connection.
async fn raw_endpoint(answer: Option<&'static [u8]>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                match answer {
                    Some(answer) => {
                        let _ = conn.write_all(answer).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            });
        }
    });
    format!("http://{addr}/hook")
}

/// Peers that misbehave after the request: each outcome is typed, and
/// judged as a delivery, a retryable failure or a final one as the sink's
/// docs say.
#[tokio::test]
async fn misbehaving_endpoints_give_typed_outcomes() {
    let event = order();
    // a 200 whose announced body never comes, the connection closed: the
    // endpoint accepted the event
    let url = raw_endpoint(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")).await;
    HttpSink::new("h", url)
        .unwrap()
        .deliver(&event)
        .await
        .unwrap();
    // never answers: a timeout, transient
    let url = raw_endpoint(None).await;
    let sink = HttpSink::new("h", url)
        .unwrap()
        .with_request_timeout(Duration::from_millis(300))
        .unwrap();
    let err = sink.deliver(&event).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // closes without answering, or answers what is no HTTP: transient
    for answer in [&b""[..], b"SMTP ready\r\n\r\n"] {
        let url = raw_endpoint(Some(answer)).await;
        let err = HttpSink::new("h", url)
            .unwrap()
            .deliver(&event)
            .await
            .unwrap_err();
        assert!(
            err.is_transient(),
            "{:?}: {err:?}",
            String::from_utf8_lossy(answer)
        );
    }
    // a 503 whose Retry-After is a date already past: retried at once
    let url = raw_endpoint(Some(
        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
          content-length: 0\r\n\r\n",
    ))
    .await;
    let err = HttpSink::new("h", url)
        .unwrap()
        .deliver(&event)
        .await
        .unwrap_err();
    let answer = event_cloudevents::http::client::status_error(&err).unwrap();
    assert_eq!(
        (answer.status, answer.retry_after),
        (503, Some(Duration::ZERO))
    );
    assert!(answer.is_retryable());
}

/// A sender may shut down its side of the connection once its request is
/// sent, and wait for the answer (HTTP/1.1 half-close). The webhook took
/// the end of its input for a vanished sender and closed the connection
/// mid-delivery: the sink's delivery was cancelled, no answer was sent, and
/// every retry met the same fate, so such a sender could deliver nothing.
#[tokio::test]
async fn a_sender_that_half_closes_after_its_request_gets_its_answer() {
    use tokio::io::AsyncWriteExt;
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let (seen, gate) = (delivered.clone(), Arc::new(tokio::sync::Notify::new()));
    let (started, release) = (gate.clone(), Arc::new(tokio::sync::Semaphore::new(0)));
    let wait = release.clone();
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap());
    source
        .start(Arc::new(event_routing::InProcessSink::new(
            "gated",
            move |event| {
                let (seen, started, wait) = (seen.clone(), started.clone(), wait.clone());
                async move {
                    started.notify_one();
                    wait.acquire().await.unwrap().forget();
                    seen.lock().push(event.id);
                    Ok(())
                }
            },
        )))
        .await
        .unwrap();
    let addr = source.local_addr().unwrap();
    let (head, body) = raw_request(&order(), "");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(&[head, body].concat()).await.unwrap();
    gate.notified().await;
    // the request is in delivery: the sender is done writing
    conn.shutdown().await.unwrap();
    // (the webhook, watching for a closed connection, sees the end of its
    // input while the sink still waits; nothing waits on that but time)
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.add_permits(1);
    let answer = read_until_closed(&mut conn, Duration::from_secs(10)).await;
    let answer = String::from_utf8_lossy(&answer.unwrap_or_else(|open| open)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer:?}");
    assert_eq!(delivered.lock().len(), 1);
    assert_eq!(source.accepted(), 1);

    // A sender that leaves altogether does not cut the delivery off
    // half-way: it runs to its end (and counts), its answer going nowhere.
    let (head, body) = raw_request(&order(), "");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(&[head, body].concat()).await.unwrap();
    gate.notified().await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), async {
        while source.accepted() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the delivery was cut off");
    assert_eq!(delivered.lock().len(), 2);
    source.stop().await.unwrap();
}

/// A body sent with a `Content-Encoding` (gzip, say) is the encoded form
/// of the data: the webhook, which decodes none, took the compressed bytes
/// for the event's data and accepted them (`202`), the encoding lost. It
/// answers `415` now (RFC 9110: a coding the server does not support),
/// delivering nothing; `identity` is no encoding.
#[tokio::test]
async fn a_content_encoded_body_is_refused_415_not_taken_for_the_data() {
    let sink = Arc::new(CollectorSink::new("c"));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap());
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();
    let mut event = order();
    event.payload = json!("hello");
    event = event.with_metadata("ce-datacontenttype", "text/plain");
    let text = to_http(&event, Mode::Binary).unwrap();
    assert_eq!(text.headers["content-type"], "text/plain");
    // the gzip form of the text, as a sender compressing its body sends it
    let gzipped = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xcbH\xcd\xc9\xc9\x07\x00\x86\xa6\x106\x05\x00\x00\x00".to_vec();
    let structured = to_http(&order(), Mode::Structured).unwrap();
    for (headers, body) in [
        (text.headers.clone(), gzipped),
        (structured.headers, structured.body),
    ] {
        for coding in ["gzip", "br", "identity, gzip"] {
            let mut headers = headers.clone();
            headers.insert("content-encoding", coding.parse().unwrap());
            let (status, answer) = send(addr, "/events", headers, body.clone()).await;
            assert_eq!(status, 415, "{coding}: {answer}");
            assert!(answer.contains("Content-Encoding"), "{answer}");
        }
    }
    assert!(sink.is_empty(), "{:?}", sink.events());
    assert_eq!(source.stats().bad_requests, 6);
    // `identity` is the body as it is
    let mut headers = text.headers.clone();
    headers.insert("content-encoding", "identity".parse().unwrap());
    let (status, answer) = send(addr, "/events", headers, text.body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(sink.events()[0].payload, json!("hello"));
    source.stop().await.unwrap();
}

/// A body sent with a transfer coding besides `chunked` (`gzip, chunked`)
/// reached the webhook chunk-decoded only: the still gzipped bytes were
/// taken for the event's data and accepted (`202`), as were codings
/// nobody knows and a body chunked twice. A coding the server does not
/// understand is answered `501` (RFC 9112, 6.1), chunked twice `400`;
/// nothing is delivered.
#[tokio::test]
async fn a_transfer_coding_besides_chunked_is_refused_not_taken_for_the_data() {
    let sink = Arc::new(CollectorSink::new("c"));
    let source = WebhookSource::new("w", "127.0.0.1:0".parse().unwrap());
    source.start(sink.clone()).await.unwrap();
    let addr = source.local_addr().unwrap();
    let mut event = order();
    event.payload = json!("hello");
    event = event.with_metadata("ce-datacontenttype", "text/plain");
    let exchange = |codings: &str| {
        let (head, body) = raw_request(&event, &format!("Transfer-Encoding: {codings}\r\n"));
        let head = String::from_utf8(head)
            .unwrap()
            .replace(&format!("Content-Length: {}\r\n", body.len()), "");
        let mut request = head.into_bytes();
        request.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        request.extend_from_slice(&body);
        request.extend_from_slice(b"\r\n0\r\n\r\n");
        async move {
            use tokio::io::AsyncWriteExt;
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            conn.write_all(&request).await.unwrap();
            let answer = read_until_closed(&mut conn, Duration::from_secs(10)).await;
            String::from_utf8_lossy(&answer.unwrap_or_else(|open| open)).into_owned()
        }
    };
    for (codings, status) in [
        ("gzip, chunked", "501"),
        ("x-unknown, chunked", "501"),
        ("chunked, chunked", "400"),
    ] {
        let answer = exchange(codings).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{codings}: {answer:?}"
        );
        assert!(
            answer.contains("Transfer-Encoding"),
            "{codings}: {answer:?}"
        );
    }
    assert!(sink.is_empty(), "{:?}", sink.events());
    assert_eq!(source.stats().bad_requests, 3);
    // chunked alone is the body as it is (the connection closed after it)
    let answer = exchange("chunked\r\nConnection: close").await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer:?}");
    assert_eq!(sink.events()[0].payload, json!("hello"));
    source.stop().await.unwrap();
}

/// A zero request timeout times every request out before it is sent: the
/// sink could deliver nothing, each failure a transient `Timeout` retried
/// to the dead-letter sink. It is a configuration error, as the webhook's
/// zero timeouts are.
#[tokio::test]
async fn a_zero_request_timeout_is_a_config_error() {
    let (url, received) = server(vec![]).await;
    let sink = HttpSink::new("h", url.clone())
        .unwrap()
        .with_request_timeout(Duration::ZERO);
    let outcome = match sink {
        Ok(sink) => format!("accepted; delivering: {:?}", sink.deliver(&order()).await),
        Err(err) => {
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
            String::new()
        }
    };
    assert!(outcome.is_empty(), "{outcome}");
    assert!(received.requests.lock().is_empty());
    // any other timeout is kept
    let sink = HttpSink::new("h", url)
        .unwrap()
        .with_request_timeout(Duration::from_secs(5))
        .unwrap();
    sink.deliver(&order()).await.unwrap();
}

/// A dead-letter endpoint that refuses the dead letter as too large (`413`,
/// as a proxy's body limit answers: nginx's is 1 MiB by default, the size
/// of the largest event) gets it again in a smaller form, without the
/// event's payload, as a provider's `PayloadTooLarge` does. It was a
/// refusal for good: a consumer runner left the event unsettled and, after
/// its spare delivery, no dead letter existed.
#[tokio::test]
async fn a_sink_dlq_handler_resends_smaller_what_the_endpoint_refuses_as_too_large() {
    use event_core::{DeadLetterEvent, DlqHandler};
    let (url, received) = server(vec![413]).await;
    let dlq = event_routing::SinkDlqHandler::new(
        Arc::new(HttpSink::new("dlq-endpoint", url).unwrap()),
        "events.dlq",
    )
    .unwrap();
    let event = order().with_metadata("region", "eu");
    dlq.handle(DeadLetterEvent::new(event.clone(), "handler failed").with_attempts(3))
        .await
        .unwrap();
    let requests = received.requests.lock();
    assert_eq!(requests.len(), 2);
    let (headers, body) = &requests[1];
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert!(header("ce-a3smdlqpayloaddropped").unwrap().contains("413"));
    // header values are percent-encoded (CloudEvents HTTP binding)
    assert_eq!(header("ce-a3smdlqreason").unwrap(), "handler%20failed");
    assert_eq!(header("ce-a3smoriginalid").unwrap(), event.id);
    assert_eq!(header("ce-a3smregion"), None);
    assert!(
        !String::from_utf8_lossy(body).contains("\"id\""),
        "{body:?}"
    );
}

/// In binary mode (an `HttpSink`'s default) a dead letter's reason and
/// metadata travel as headers, so an endpoint refuses one too large with
/// `431 Request Header Fields Too Large`, not `413`: a `WebhookSource` past
/// hyper's head buffer (here a 2 MB reason), hyper past 100 headers, nginx
/// past 8 KB a line.
/// The handler tried its smaller forms on a `413` only, so the dead letter
/// of a long error was refused for good (`431` is not retried) and lost.
/// A `431` is a refusal as too large too: the reason is cut.
#[tokio::test]
async fn a_sink_dlq_handler_resends_smaller_what_the_endpoint_refuses_with_431() {
    use event_core::{DeadLetterEvent, DlqHandler};
    let collector = Arc::new(CollectorSink::new("dead"));
    let source = WebhookSource::new("dead-letters", "127.0.0.1:0".parse().unwrap());
    source.start(collector.clone()).await.unwrap();
    let url = format!("http://{}/events", source.local_addr().unwrap());
    let dlq = event_routing::SinkDlqHandler::new(
        Arc::new(HttpSink::new("dlq-endpoint", url).unwrap()),
        "events.dlq",
    )
    .unwrap();
    let reason = format!("handler failed: {}", "r".repeat(2_000_000));
    let event = order().with_metadata("region", "eu");
    dlq.handle(DeadLetterEvent::new(event.clone(), reason.clone()).with_attempts(3))
        .await
        .unwrap();
    let received = collector.events();
    assert_eq!(received.len(), 1);
    let m = &received[0].metadata;
    assert_eq!(received[0].payload, event.payload, "the event is whole");
    assert_eq!(m["region"], "eu");
    assert!(m["dlqreason"].starts_with(&reason[..1000]));
    assert!(m["dlqreason"].len() < 5000, "{}", m["dlqreason"].len());
    source.stop().await.unwrap();
}
