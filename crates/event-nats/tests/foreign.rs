//! Messages in the stream that the provider did not write: bodies that are
//! not events (text, binary, empty) and events whose JSON claims another
//! subject than the one they are stored under: subscriptions (ephemeral,
//! durable, manual acks) report each once as `Error::Undecodable` with the
//! body recoverable byte for byte, `history` skips them, and a bus
//! dead-letters them with that body. Events stored with a header block
//! starting with a status line of its own are delivered and returned like
//! any other.

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::{NatsServer, provider};
use event_bus::EventBus;
use event_bus::dlq::MemoryDlqHandler;
use event_core::{DlqHandler, Error, Event, EventProvider, SubscribeOptions, Subscription};
use event_nats::NatsProvider;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

macro_rules! server {
    ($name:expr) => {
        match NatsServer::start($name) {
            Some(s) => s,
            None => return,
        }
    };
}

/// Publishes `payload` as another client would (core NATS, no headers) to
/// `subject`, and waits until the stream has stored it.
async fn raw_publish(p: &NatsProvider, subject: &str, payload: Vec<u8>) {
    let before = p.info().await.unwrap().messages;
    p.client()
        .publish(subject.to_owned(), payload.into())
        .await
        .unwrap();
    p.client().flush().await.unwrap();
    for _ in 0..500 {
        if p.info().await.unwrap().messages > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("raw message to {subject} not stored");
}

/// The body an `Error::Undecodable`'s `raw` holds, as the provider
/// documents it: `base64:` and the body in base64, else the body's text.
fn body_of(raw: &str) -> Vec<u8> {
    match raw.strip_prefix("base64:") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
        None => raw.as_bytes().to_vec(),
    }
}

async fn next(sub: &mut Box<dyn Subscription>) -> Result<Event, Error> {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an answer within 10 s")
        .map(|received| (*received.unwrap().event).clone())
}

async fn next_manual(sub: &mut Box<dyn Subscription>) -> Result<Event, Error> {
    let pending = tokio::time::timeout(Duration::from_secs(10), sub.next_manual_ack())
        .await
        .expect("an answer within 10 s")?
        .unwrap();
    let event = pending.event().clone();
    pending.ack().await.unwrap();
    Ok(event)
}

/// A message stored under `<prefix>.public.note` whose JSON is an event
/// claiming `<prefix>.admin.grant` is not handed out as that event: every
/// kind of subscription reports it once (naming both subjects, the body
/// kept) and goes on; `history` skips it on each of its read paths.
#[tokio::test]
async fn an_event_claiming_another_subject_is_reported_not_delivered() {
    let server = server!("an_event_claiming_another_subject_is_reported_not_delivered");
    let p = provider(&server, "spoof").await;
    let public = p.build_subject("public", "note");
    let admin = p.build_subject("admin", "grant");
    let all = format!("{}.>", p.subject_prefix());
    // opened before the messages exist, so the ephemeral sees them all
    let mut ephemeral = p.subscribe(&all).await.unwrap();
    let short_ack = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    let mut durable = p
        .subscribe_durable_with_options("reader", &p.category_subject("public"), &short_ack)
        .await
        .unwrap();
    let mut manual = p
        .subscribe_durable_with_options("manual", &all, &short_ack)
        .await
        .unwrap();

    let mut spoof = Event::new(&admin, "admin", "grant root", "iam", json!({"user": "m"}));
    spoof.id = "spoof-1".into();
    let spoof_json = serde_json::to_vec(&spoof).unwrap();
    raw_publish(&p, &public, spoof_json.clone()).await;
    let genuine = Event::new(&public, "public", "a note", "t", json!({"n": 1}));
    p.publish(&genuine).await.unwrap();

    let check = |what: &str, got: Result<Event, Error>| match got {
        Err(Error::Undecodable {
            subject,
            sequence,
            reason,
            raw,
        }) => {
            assert_eq!((subject.as_str(), sequence), (public.as_str(), 1), "{what}");
            assert!(
                reason.contains(&format!("{public:?}")) && reason.contains(&format!("{admin:?}")),
                "{what}: the reason names both subjects: {reason}"
            );
            assert_eq!(body_of(&raw), spoof_json, "{what}: the body is kept");
        }
        other => panic!("{what}: expected Undecodable, got {other:?}"),
    };
    check("ephemeral", next(&mut ephemeral).await);
    assert_eq!(next(&mut ephemeral).await.unwrap(), genuine);
    check("durable", next(&mut durable).await);
    assert_eq!(next(&mut durable).await.unwrap(), genuine);
    check("manual", next_manual(&mut manual).await);
    assert_eq!(next_manual(&mut manual).await.unwrap(), genuine);

    // terminated, not redelivered after the ack wait
    durable.close().await.unwrap();
    let mut durable = p
        .subscribe_durable_with_options("reader", &p.category_subject("public"), &short_ack)
        .await
        .unwrap();
    let again = tokio::time::timeout(Duration::from_secs(3), durable.next_manual_ack()).await;
    assert!(again.is_err(), "nothing redelivered, got {again:?}");

    // history: unfiltered, and filtered by either subject
    assert_eq!(p.history(None, 10).await.unwrap(), vec![genuine.clone()]);
    let admin_filter = p.category_subject("admin");
    assert_eq!(p.history(Some(&admin_filter), 10).await.unwrap(), vec![]);
    let public_filter = p.category_subject("public");
    assert_eq!(
        p.history(Some(&public_filter), 10).await.unwrap(),
        vec![genuine.clone()]
    );
}

/// `history`'s sparse path (message gets stepping through a long window
/// in parallel cursors) counts only real events towards its limit: a
/// newer message claiming another subject neither comes back nor makes it
/// stop before the newest real event.
#[tokio::test]
async fn history_by_message_gets_skips_an_event_claiming_another_subject() {
    let server = server!("history_by_message_gets_skips_an_event_claiming_another_subject");
    let p = provider(&server, "spoofh").await;
    let public = p.build_subject("public", "note");
    let mut next_fill = 0;
    let mut fill = async |count: u64| {
        let events: Vec<Event> = (next_fill..next_fill + count)
            .map(|n| common::numbered_event(&p, "fill", n))
            .collect();
        next_fill += count;
        for result in p.publish_batch(&events).await.unwrap() {
            result.unwrap();
        }
    };
    let genuine: Vec<Event> = (0..2)
        .map(|n| Event::new(&public, "public", "a note", "t", json!({ "n": n })))
        .collect();
    let spoof = Event::new(
        p.build_subject("admin", "grant"),
        "admin",
        "grant root",
        "iam",
        json!({}),
    );
    // 3 of 3,003 sequences match the filter: the window for the newest
    // one is [1895, 3004), read by message gets in two cursors, the older
    // from 1895 (two real events), the newer from 2449 (the spoof)
    fill(2_000).await;
    p.publish(&genuine[0]).await.unwrap(); // 2001
    fill(99).await;
    p.publish(&genuine[1]).await.unwrap(); // 2101
    fill(499).await;
    raw_publish(&p, &public, serde_json::to_vec(&spoof).unwrap()).await; // 2601
    fill(402).await;
    assert_eq!(p.info().await.unwrap().last_sequence, 3_003);
    let filter = p.category_subject("public");
    assert_eq!(
        p.history(Some(&filter), 1).await.unwrap(),
        vec![genuine[1].clone()]
    );
}

/// Bodies that are not events: each is reported once, its `raw` the text
/// when it is UTF-8 (and does not start with `base64:`), else `base64:`
/// and the bytes in base64; a bus dead-letters each with that text as its
/// payload, so the bytes can be recovered from the dead letter.
#[tokio::test]
async fn foreign_bodies_are_reported_and_dead_lettered_with_their_bytes() {
    let server = server!("foreign_bodies_are_reported_and_dead_lettered_with_their_bytes");
    let p = provider(&server, "foreign").await;
    let subject = p.build_subject("x", "foreign");
    let filter = p.category_subject("x");
    let mut sub = p.subscribe(&filter).await.unwrap();
    let bus = EventBus::new(p.clone());
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());
    let mut bus_sub = bus.subscribe(&filter).await.unwrap();

    let binary: Vec<u8> = (0u8..=255).collect();
    let foreign: Vec<(Vec<u8>, Option<&str>)> = vec![
        (b"hello".to_vec(), Some("hello")),
        (Vec::new(), Some("")),
        (binary.clone(), None),
        (b"base64:aGk=".to_vec(), Some("base64:YmFzZTY0OmFHaz0=")),
        (b"\xff\xfe".to_vec(), Some("base64://4=")),
    ];
    for (body, _) in &foreign {
        raw_publish(&p, &subject, body.clone()).await;
    }
    let last = Event::new(&subject, "x", "last", "t", json!({"n": 2}));
    p.publish(&last).await.unwrap();

    for (i, (body, want)) in foreign.iter().enumerate() {
        match next(&mut sub).await {
            Err(Error::Undecodable {
                sequence,
                raw,
                reason,
                ..
            }) => {
                assert_eq!(sequence, i as u64 + 1);
                if let Some(want) = want {
                    assert_eq!(raw, *want);
                }
                assert_eq!(body_of(&raw), *body, "message {sequence}");
                assert_eq!(
                    reason.contains("base64"),
                    raw.starts_with("base64:"),
                    "the reason says when raw is base64: {reason}"
                );
            }
            other => panic!("message {i}: expected Undecodable, got {other:?}"),
        }
        assert!(matches!(
            next(&mut bus_sub).await,
            Err(Error::Undecodable { .. })
        ));
    }
    assert_eq!(next(&mut sub).await.unwrap(), last);
    assert_eq!(next(&mut bus_sub).await.unwrap(), last);

    let mut letters = Vec::new();
    for _ in 0..500 {
        letters = dlq.list(100).await.unwrap();
        if letters.len() == foreign.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut kept: Vec<Vec<u8>> = letters
        .iter()
        .map(|letter| body_of(letter.event.payload.as_str().unwrap()))
        .collect();
    let mut sent: Vec<Vec<u8>> = foreign.into_iter().map(|(body, _)| body).collect();
    kept.sort();
    sent.sort();
    assert_eq!(kept, sent, "each dead letter holds its message's bytes");
}

/// Publishes `payload` to `subject` over a raw client connection with
/// `header` as the whole header block (its version line included), as a
/// bridge relaying whole NATS messages would, and waits until the stream
/// has stored it.
async fn raw_publish_with_header_block(
    p: &NatsProvider,
    port: u16,
    subject: &str,
    header: &str,
    payload: &[u8],
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let before = p.info().await.unwrap().messages;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let info = lines.next_line().await.unwrap().unwrap_or_default();
    assert!(info.starts_with("INFO"), "{info}");
    let mut out = Vec::new();
    out.extend_from_slice(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n");
    out.extend_from_slice(
        format!(
            "HPUB {subject} {} {}\r\n",
            header.len(),
            header.len() + payload.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\nPING\r\n");
    write.write_all(&out).await.unwrap();
    loop {
        let line = lines.next_line().await.unwrap().unwrap_or_default();
        assert!(!line.starts_with("-ERR"), "{line}");
        if line == "PONG" {
            break;
        }
    }
    for _ in 0..500 {
        if p.info().await.unwrap().messages > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("raw message to {subject} not stored");
}

/// A stored message whose header block carries a status line (`NATS/1.0
/// 404 No Messages`, `408`, `503`: what a bridge relaying whole messages,
/// replies with a status included, stores) is a delivery like any other:
/// subscriptions hand it out (its body is an event) in its place in the
/// stream, and `history` returns it and the events around it. The status
/// is the stored message's, not the server's answer to the pull request.
#[tokio::test]
async fn a_stored_message_with_a_status_line_is_delivered_not_taken_for_the_pulls_end() {
    let server = server!("a_stored_message_with_a_status_line_is_delivered");
    let p = provider(&server, "status").await;
    let mut published = Vec::new();
    for (n, header) in [
        "NATS/1.0 404 No Messages\r\n\r\n",
        "NATS/1.0 408 Request Timeout\r\n\r\n",
        "NATS/1.0 503\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let before = common::numbered_event(&p, "s", 2 * n as u64);
        p.publish(&before).await.unwrap();
        let relayed = common::numbered_event(&p, "s", 2 * n as u64 + 1);
        let body = serde_json::to_vec(&relayed).unwrap();
        raw_publish_with_header_block(&p, server.port(), &relayed.subject, header, &body).await;
        published.extend([before, relayed]);
    }
    let last = common::numbered_event(&p, "s", 6);
    p.publish(&last).await.unwrap();
    published.push(last);
    let ids = |events: &[Event]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();

    let filter = p.category_subject("s");
    let all = SubscribeOptions {
        deliver_policy: event_core::DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let mut durable = p
        .subscribe_durable_with_options("relay", &filter, &all)
        .await
        .unwrap();
    let mut ephemeral = p.subscribe_with_options(&filter, &all).await.unwrap();
    let (mut from_durable, mut from_ephemeral) = (Vec::new(), Vec::new());
    for _ in 0..published.len() {
        from_durable.push(next_manual(&mut durable).await.unwrap());
        from_ephemeral.push(next(&mut ephemeral).await.unwrap());
    }
    assert_eq!(ids(&from_durable), ids(&published), "durable");
    assert_eq!(ids(&from_ephemeral), ids(&published), "ephemeral");

    let newest_first: Vec<Event> = published.iter().rev().cloned().collect();
    assert_eq!(
        ids(&p.history(None, 100).await.unwrap()),
        ids(&newest_first),
        "unfiltered history"
    );
    assert_eq!(
        ids(&p.history(Some(&filter), 100).await.unwrap()),
        ids(&newest_first),
        "filtered history"
    );
}

/// `history`'s sparse path (message gets stepping through a long window)
/// returns stored messages whose header block starts with a status line of
/// their own like any other: a `404` or `408` one is neither taken for
/// "no match from here" (hiding the matches after it) nor an error.
#[tokio::test]
async fn history_by_message_gets_returns_stored_messages_with_a_status_line() {
    let server = server!("history_by_message_gets_returns_stored_messages_with_a_status_line");
    let p = provider(&server, "statush").await;
    let mut next_fill = 0;
    let mut fill = async |count: u64| {
        let events: Vec<Event> = (next_fill..next_fill + count)
            .map(|n| common::numbered_event(&p, "fill", n))
            .collect();
        next_fill += count;
        for result in p.publish_batch(&events).await.unwrap() {
            result.unwrap();
        }
    };
    let genuine = common::numbered_event(&p, "s", 0);
    let relayed: Vec<Event> = (1..4).map(|n| common::numbered_event(&p, "s", n)).collect();
    fill(2_000).await;
    p.publish(&genuine).await.unwrap();
    for (event, header) in relayed.iter().zip([
        "NATS/1.0 404 No Messages\r\n\r\n",
        "NATS/1.0 408 Request Timeout\r\n\r\n",
        "NATS/1.0 503\r\n\r\n",
    ]) {
        fill(99).await;
        let body = serde_json::to_vec(event).unwrap();
        raw_publish_with_header_block(&p, server.port(), &event.subject, header, &body).await;
    }
    fill(900).await;
    let filter = p.category_subject("s");
    let ids = |events: &[Event]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    for limit in 1..=4 {
        let want: Vec<Event> = relayed
            .iter()
            .rev()
            .chain([&genuine])
            .take(limit)
            .cloned()
            .collect();
        let got = p.history(Some(&filter), limit).await;
        assert!(got.is_ok(), "limit {limit}: {got:?}");
        assert_eq!(ids(&got.unwrap()), ids(&want), "limit {limit}");
    }
}

/// A stored message whose header block the NATS client cannot parse (a
/// line without a colon, stored by a raw `HPUB`) drops the client's
/// connection when it arrives, a known limitation the crate documents: it
/// is not reported, but it does not stop a subscription (the events around
/// it are delivered once each and in order, the provider goes on working),
/// and a `history` read covering it fails rather than returning some of
/// the events: the deliveries lost with the connection are not taken for
/// the end of the stream.
#[tokio::test]
async fn an_unparsable_header_block_drops_the_connection_but_loses_nothing_silently() {
    let server = server!("an_unparsable_header_block_drops_the_connection");
    // a pull whose replies were lost waits out its expiry: keep it short
    let p = NatsProvider::connect(event_nats::NatsConfig {
        request_timeout_secs: 1,
        ..common::config(&server, "badhdr")
    })
    .await
    .unwrap();
    let before = common::numbered_event(&p, "s", 0);
    p.publish(&before).await.unwrap();
    let poison = common::numbered_event(&p, "s", 1);
    let body = serde_json::to_vec(&poison).unwrap();
    raw_publish_with_header_block(
        &p,
        server.port(),
        &poison.subject,
        "NATS/1.0\r\nno colon here\r\n\r\n",
        &body,
    )
    .await;
    let after: Vec<Event> = (2..6).map(|n| common::numbered_event(&p, "s", n)).collect();
    for event in &after {
        p.publish(event).await.unwrap();
    }
    let connects = || {
        p.client()
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let filter = p.category_subject("s");

    for (round, history_filter) in [None, Some(filter.as_str())].into_iter().enumerate() {
        let dropped = connects();
        let read = p.history(history_filter, 10).await;
        assert!(
            connects() > dropped,
            "round {round}: the connection did not drop"
        );
        match read {
            Err(Error::Connection(reason)) if reason.contains("lost in transit") => {}
            other => panic!(
                "round {round} ({history_filter:?}): a read that lost deliveries returned {:?}",
                other.map(|events| events.len())
            ),
        }
    }

    let options = SubscribeOptions {
        deliver_policy: event_core::DeliverPolicy::All,
        ack_wait: Some(Duration::from_millis(500)),
        max_deliver: Some(2),
        ..SubscribeOptions::default()
    };
    let mut durable = p
        .subscribe_durable_with_options("badhdr", &filter, &options)
        .await
        .unwrap();
    let want: Vec<String> = [&before]
        .into_iter()
        .chain(&after)
        .map(|e| e.id.clone())
        .collect();
    let mut seen = Vec::new();
    while seen.len() < want.len() {
        let pending = tokio::time::timeout(Duration::from_secs(10), durable.next_manual_ack())
            .await
            .unwrap_or_else(|_| panic!("no delivery in 10 s; seen {seen:?}"))
            .unwrap()
            .unwrap();
        seen.push(pending.event().id.clone());
        pending.ack().await.unwrap();
    }
    assert_eq!(seen, want);
    let last = common::numbered_event(&p, "s", 6);
    p.publish(&last).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), durable.next_manual_ack())
        .await
        .expect("a delivery within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(next.event().id, last.id);
}

/// A sparse `history` query reads by direct gets: one reaching a stored
/// message whose header block the client cannot parse drops the
/// connection, and the gets' answers with it. As the crate docs say of
/// every read a dropped connection lost, the query fails with
/// `Error::Connection`, not a `Timeout` naming a server that never
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_get_whose_answer_drops_the_connection_is_a_connection_error() {
    let server = server!("a_direct_get_whose_answer_drops_the_connection");
    let p = NatsProvider::connect(event_nats::NatsConfig {
        request_timeout_secs: 1,
        ..common::config(&server, "badget")
    })
    .await
    .unwrap();
    let ticks = |from: u64| -> Vec<Event> {
        (from..from + 2_000)
            .map(|n| common::numbered_event(&p, "tick", n))
            .collect()
    };
    p.publish(&common::numbered_event(&p, "s", 0))
        .await
        .unwrap();
    assert!(
        p.publish_batch(&ticks(1))
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let poison = common::numbered_event(&p, "s", 1);
    let body = serde_json::to_vec(&poison).unwrap();
    raw_publish_with_header_block(
        &p,
        server.port(),
        &poison.subject,
        "NATS/1.0\r\nno colon here\r\n\r\n",
        &body,
    )
    .await;
    assert!(
        p.publish_batch(&ticks(3_000))
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    let connects = || {
        p.client()
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let dropped = connects();
    let read = p.history(Some(&p.category_subject("s")), 1).await;
    assert!(connects() > dropped, "the connection did not drop");
    match read {
        Err(Error::Connection(_)) => {}
        other => panic!(
            "a sparse read whose answers the dropped connection lost returned {:?}",
            other.map(|events| events.len())
        ),
    }
}

/// A message another stream republished (or a bridge copied) carries that
/// stream's `Nats-Sequence` and `Nats-Subject` headers; a direct get's
/// answer adds the server's own after them. `history`'s sparse path takes
/// the server's (the last), so such a message is read under its own
/// subject and sequence, neither skipped nor an error.
#[tokio::test]
async fn history_by_direct_gets_takes_the_servers_sequence_and_subject_over_stored_ones() {
    let server = server!("history_by_direct_gets_takes_the_servers_sequence_and_subject");
    let p = provider(&server, "hdrseq").await;
    let fill = |from: u64| -> Vec<Event> {
        (from..from + 1_000)
            .map(|n| common::numbered_event(&p, "fill", n))
            .collect()
    };
    let copied: Vec<Event> = (0..3).map(|n| common::numbered_event(&p, "s", n)).collect();
    for (i, (event, header)) in copied
        .iter()
        .zip([
            "NATS/1.0\r\nNats-Sequence: not-a-number\r\nNats-Subject: elsewhere.x\r\n\r\n",
            "NATS/1.0\r\nNats-Stream: OTHER\r\nNats-Sequence: 1\r\nNats-Subject: hdrseq.s.y\r\n\r\n",
            "NATS/1.0\r\nNats-Subject: hdrseq.fill.x\r\n\r\n",
        ])
        .enumerate()
    {
        for result in p.publish_batch(&fill(i as u64 * 1_000)).await.unwrap() {
            result.unwrap();
        }
        let body = serde_json::to_vec(event).unwrap();
        raw_publish_with_header_block(&p, server.port(), &event.subject, header, &body).await;
    }
    for result in p.publish_batch(&fill(9_000)).await.unwrap() {
        result.unwrap();
    }
    let filter = p.category_subject("s");
    for limit in 1..=3 {
        let got = p.history(Some(&filter), limit).await;
        let ids: Vec<String> = got
            .unwrap_or_else(|e| panic!("limit {limit}: {e:?}"))
            .iter()
            .map(|e| e.id.clone())
            .collect();
        let want: Vec<String> = copied
            .iter()
            .rev()
            .take(limit)
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(ids, want, "limit {limit}");
    }
}
