//! The NATS binding end to end: a real `nats-server` (core NATS, no
//! JetStream) on a random port, events published with `nats::publish` and
//! messages shaped as other SDKs send them, received with a plain
//! `async_nats` subscription and read with `nats::from_message`.
//!
//! Without `nats-server` (NATS_SERVER_BIN, PATH, /usr/sbin) each test prints
//! a SKIPPED line and passes, unless A3S_REQUIRE_NATS=1, which makes it fail.
#![allow(clippy::unwrap_used)]

mod common;

use async_nats::{Client, HeaderMap, Subscriber};
use common::Rng;
use event_cloudevents::nats::{
    Mode, NatsMessage, cloudevent_from_message, from_message, is_cloudevent, publish,
    publish_cloudevent, to_nats,
};
use event_cloudevents::{CloudEvent, to_structured};
use event_core::{Error, Event};
use futures_util::StreamExt;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server's `max_payload`: large enough for most generated events,
/// small enough that the generator's big payloads exceed it.
const MAX_PAYLOAD: usize = 256 * 1024;

/// A `nats-server` process in its own temporary directory, killed and
/// removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    url: String,
}

fn server_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(bin)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .find(|p| p.is_file())
}

impl Server {
    /// `None` (after a visible SKIPPED line) without a `nats-server` binary;
    /// a panic instead when A3S_REQUIRE_NATS=1.
    fn start(test: &str) -> Option<Self> {
        let Some(bin) = server_bin() else {
            assert!(
                std::env::var("A3S_REQUIRE_NATS").as_deref() != Ok("1"),
                "{test}: nats-server not found (NATS_SERVER_BIN, PATH) and A3S_REQUIRE_NATS=1"
            );
            // Straight to stderr: libtest captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: nats-server not found (set NATS_SERVER_BIN or put it on PATH)"
            );
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("a3s-ce-nats-{}-{test}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("server.conf");
        let log = dir.join("server.log");
        // port -1: the server picks a free port and logs it
        std::fs::write(
            &conf,
            format!("listen: 127.0.0.1:-1\nmax_payload: {MAX_PAYLOAD}\n"),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            dir,
            url: String::new(),
        };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let port = text.lines().find_map(|line| {
                line.split("Listening for client connections on ")
                    .nth(1)?
                    .trim()
                    .rsplit(':')
                    .next()?
                    .parse::<u16>()
                    .ok()
            });
            if let (Some(port), true) = (port, text.contains("Server is ready")) {
                server.url = format!("nats://127.0.0.1:{port}");
                return Some(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("nats-server exited with {status}: {text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "nats-server not ready: {text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    async fn client(&self) -> Client {
        async_nats::connect(&self.url).await.unwrap()
    }

    /// A subscriber on `subject` whose subscription the server has
    /// registered, and a separate publishing connection.
    async fn pair(&self, subject: &str) -> (Client, Subscriber) {
        let sub_client = self.client().await;
        let subscriber = sub_client.subscribe(subject.to_string()).await.unwrap();
        sub_client.flush().await.unwrap();
        (self.client().await, subscriber)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn next(subscriber: &mut Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(5), subscriber.next())
        .await
        .expect("message in time")
        .expect("subscription open")
}

fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn odd_event() -> Event {
    Event::typed(
        "events.market.forex",
        "märket",
        "forex.rate_change",
        3,
        "  USD/CNY \"broke\" 7.35 — 100% ✓ 😀\r\nline two ",
        "/sources/路透",
        json!({"rate": 7.3521, "note": "ünïcödé", "nested": {"a": [1, null, true]}}),
    )
    .with_metadata("X-Request-Id", "r-42")
    .with_metadata("a.b", " spaced ")
    .with_metadata("", "empty key")
    .with_metadata(
        "ce-datacontenttype",
        "application/vnd.a3s+json; charset=utf-8",
    )
    .with_metadata(
        "ce-traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
}

#[tokio::test]
async fn events_published_in_both_modes_arrive_equal() {
    let Some(server) = Server::start("events_published_in_both_modes_arrive_equal") else {
        return;
    };
    let (client, mut subscriber) = server.pair("events.market.>").await;
    let event = odd_event();
    for mode in [Mode::Binary, Mode::Structured] {
        publish(&client, "events.market.forex", &event, mode)
            .await
            .unwrap();
        let message = next(&mut subscriber).await;
        assert_eq!(message.subject.as_str(), "events.market.forex");
        match mode {
            Mode::Binary => {
                assert_eq!(header(&message, "ce-specversion"), Some("1.0"));
                assert_eq!(header(&message, "ce-type"), Some("forex.rate_change"));
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&message.payload).unwrap(),
                    event.payload
                );
            }
            Mode::Structured => {
                assert_eq!(
                    header(&message, "Content-Type"),
                    Some("application/cloudevents+json")
                );
                let doc: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
                assert_eq!(doc["specversion"], "1.0");
                assert_eq!(doc["data"], event.payload);
            }
        }
        assert!(is_cloudevent(message.headers.as_ref(), &message.payload));
        assert_eq!(from_message(&message).unwrap(), event, "{mode:?}");
    }
}

#[tokio::test]
async fn random_events_over_nats_arrive_equal_or_are_too_large() {
    let Some(server) = Server::start("random_events_over_nats") else {
        return;
    };
    let (client, mut subscriber) = server.pair("rand").await;
    let (mut delivered, mut too_large) = (0, 0);
    for seed in 0..80 {
        let event = Rng::new(seed).event();
        let mode = if seed % 2 == 0 {
            Mode::Binary
        } else {
            Mode::Structured
        };
        let NatsMessage { headers, payload } = to_nats(&event, mode).unwrap();
        let header_bytes: usize = headers
            .iter()
            .map(|(n, vs)| {
                vs.iter()
                    .map(|v| n.to_string().len() + v.as_str().len() + 4)
                    .sum::<usize>()
            })
            .sum();
        match publish(&client, "rand", &event, mode).await {
            Ok(()) => {
                let message = next(&mut subscriber).await;
                assert_eq!(
                    from_message(&message).unwrap_or_else(|e| panic!("seed {seed}: {e}")),
                    event,
                    "seed {seed} {mode:?}"
                );
                delivered += 1;
            }
            Err(Error::PayloadTooLarge { size, max }) => {
                assert_eq!(max, MAX_PAYLOAD, "seed {seed}");
                assert!(size > max, "seed {seed}: {size} <= {max}");
                assert!(
                    payload.len() + header_bytes > MAX_PAYLOAD,
                    "seed {seed}: rejected though {} + {header_bytes} bytes fit",
                    payload.len()
                );
                too_large += 1;
            }
            Err(e) => panic!("seed {seed} {mode:?}: {e}"),
        }
    }
    assert!(delivered > 60, "{delivered} delivered");
    assert!(
        too_large > 0,
        "the generator's large payloads exceed max_payload"
    );
}

#[tokio::test]
async fn messages_shaped_like_other_sdks_are_read() {
    let Some(server) = Server::start("messages_shaped_like_other_sdks_are_read") else {
        return;
    };
    let (client, mut subscriber) = server.pair("foreign.>").await;

    // Binary mode as the Go SDK's JetStream protocol writes it: lowercase
    // names, values not percent-encoded, here with the datacontenttype in
    // `content-type` (which it also reads).
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "go-1"),
        ("ce-source", "urn:example:go"),
        ("ce-type", "com.example.order.created"),
        ("ce-time", "2024-05-06T07:08:09.123Z"),
        ("ce-subject", "orders.42"),
        ("ce-tenant", "acme"),
        ("content-type", "application/vnd.example+json"),
    ] {
        headers.insert(name, value);
    }
    client
        .publish_with_headers("foreign.binary", headers, r#"{"order":42}"#.into())
        .await
        .unwrap();
    let message = next(&mut subscriber).await;
    let event = from_message(&message).unwrap();
    assert_eq!(event.id, "go-1");
    assert_eq!(event.source, "urn:example:go");
    assert_eq!(event.event_type, "com.example.order.created");
    assert_eq!(event.subject, "orders.42");
    assert_eq!(event.timestamp, 1_714_979_289_123);
    assert_eq!(event.payload, json!({"order": 42}));
    assert_eq!(
        event.metadata.get("ce-datacontenttype").map(String::as_str),
        Some("application/vnd.example+json")
    );
    assert_eq!(
        event.metadata.get("ce-tenant").map(String::as_str),
        Some("acme")
    );

    // Structured mode without any header (the Go SDK's, or any sender on a
    // server before 2.2).
    let original = odd_event();
    client
        .publish(
            "foreign.structured",
            to_structured(&original).unwrap().into(),
        )
        .await
        .unwrap();
    let message = next(&mut subscriber).await;
    assert!(message.headers.is_none());
    assert!(is_cloudevent(None, &message.payload));
    assert_eq!(from_message(&message).unwrap(), original);

    // A plain NATS message is no CloudEvent: a typed error.
    client
        .publish("foreign.plain", r#"{"just":"json"}"#.into())
        .await
        .unwrap();
    let message = next(&mut subscriber).await;
    assert!(!is_cloudevent(message.headers.as_ref(), &message.payload));
    match from_message(&message) {
        Err(Error::Serialization(reason)) => {
            assert!(reason.contains("not a CloudEvent"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    // Percent-encoding that is not UTF-8: rejected, as the binding requires.
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "%C0%A0"),
        ("ce-source", "s"),
        ("ce-type", "t"),
    ] {
        headers.insert(name, value);
    }
    client
        .publish_with_headers("foreign.bad", headers, "".into())
        .await
        .unwrap();
    let message = next(&mut subscriber).await;
    match cloudevent_from_message(&message) {
        Err(Error::Serialization(reason)) => assert!(reason.contains("UTF-8"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn foreign_cloudevents_keep_every_string_over_the_wire() {
    use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
    let Some(server) = Server::start("foreign_cloudevents_keep_every_string") else {
        return;
    };
    let (client, mut subscriber) = server.pair("ce").await;
    // Surrounding whitespace and line breaks: what NATS headers cannot carry.
    let nasty = " \t a\r\nb \"c\" 100% é ";
    let ce = EventBuilderV10::new()
        .id(nasty)
        .source(nasty)
        .ty(nasty)
        .subject(nasty)
        .extension("note", nasty)
        .data("application/json", json!({"k": nasty}))
        .build()
        .unwrap();
    publish_cloudevent(&client, "ce", CloudEvent::new(ce), Mode::Binary)
        .await
        .unwrap();
    let back = cloudevent_from_message(&next(&mut subscriber).await).unwrap();
    assert_eq!(back.id(), nasty);
    assert_eq!(back.source(), nasty);
    assert_eq!(back.ty(), nasty);
    assert_eq!(back.subject(), Some(nasty));
    assert_eq!(
        back.extension("note").map(|v| v.to_string()).as_deref(),
        Some(nasty)
    );
}

#[tokio::test]
async fn invalid_subjects_are_typed_errors() {
    let Some(server) = Server::start("invalid_subjects_are_typed_errors") else {
        return;
    };
    let (client, mut everything) = server.pair(">").await;
    // Empty tokens: the server drops the message (no subscriber, not even
    // `>`, receives it) while the publish succeeds. Wildcard tokens: the
    // message is delivered under a subject that is a pattern.
    for subject in [
        "",
        "has space",
        "tab\there",
        "events..x",
        ".a",
        "a.",
        ".",
        "events.*",
        "events.>",
        "a.>.b",
    ] {
        match publish(&client, subject, &odd_event(), Mode::Binary).await {
            Err(Error::InvalidSubject { subject: s, .. }) => assert_eq!(s, subject),
            other => panic!("{subject:?}: {other:?}"),
        }
    }
    // `*` and `>` inside a token are literal characters
    publish(&client, "events.a*b.c>d", &odd_event(), Mode::Binary)
        .await
        .unwrap();
    assert_eq!(
        next(&mut everything).await.subject.as_str(),
        "events.a*b.c>d"
    );
}

/// Binary-mode messages with text or binary data (what other SDKs publish
/// for non-JSON data) used to be refused as "not JSON": now they become
/// events, and an event republished in binary mode carries the same
/// `ce-datacontenttype` and the same payload bytes; in structured mode the
/// same data.
#[tokio::test]
async fn text_and_binary_payloads_are_read_and_republished_unchanged() {
    use base64::Engine as _;
    let Some(server) = Server::start("text_and_binary_payloads") else {
        return;
    };
    let (client, mut subscriber) = server.pair("data.>").await;
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
        ("text/xml", &[b'<', 0xff, b'>'][..], json!("PP8+"), true),
    ] {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "ext-1"),
            ("ce-source", "urn:example:producer"),
            ("ce-type", "com.example.upload"),
            ("ce-time", "2024-05-06T07:08:09.123Z"),
            ("ce-datacontenttype", content_type),
        ] {
            headers.insert(name, value);
        }
        client
            .publish_with_headers("data.in", headers, body.to_vec().into())
            .await
            .unwrap();
        let event = from_message(&next(&mut subscriber).await)
            .unwrap_or_else(|e| panic!("{content_type}: {e}"));
        assert_eq!(event.payload, payload, "{content_type}");
        assert_eq!(
            event.metadata.get("ce-datacontenttype").map(String::as_str),
            Some(content_type)
        );
        assert_eq!(
            event.metadata.get("ce-data_base64").map(String::as_str),
            marked.then_some("true")
        );

        publish(&client, "data.out", &event, Mode::Binary)
            .await
            .unwrap();
        let message = next(&mut subscriber).await;
        assert_eq!(header(&message, "ce-datacontenttype"), Some(content_type));
        assert_eq!(header(&message, "ce-data_base64"), None);
        assert_eq!(&message.payload[..], body, "{content_type}");
        assert_eq!(from_message(&message).unwrap(), event, "{content_type}");

        publish(&client, "data.out", &event, Mode::Structured)
            .await
            .unwrap();
        let message = next(&mut subscriber).await;
        let doc: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(doc["datacontenttype"], content_type);
        if marked {
            assert_eq!(doc["data_base64"], payload);
        } else {
            assert_eq!(doc["data"], payload);
        }
        assert_eq!(from_message(&message).unwrap(), event, "{content_type}");
    }
}
