//! NATS-specific behaviour beyond the conformance suite: connection errors,
//! authentication, stream reconciliation, undecodable messages, consumer
//! cleanup, reconnection.

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use event_core::{DeliverPolicy, Error, Event, EventProvider, SubscribeOptions};
use event_nats::{ExistingStream, NatsConfig, NatsOptions, NatsProvider, StorageType};
use serde_json::json;
use std::time::{Duration, Instant};

macro_rules! server {
    ($name:expr) => {
        match NatsServer::start($name) {
            Some(s) => s,
            None => return,
        }
    };
    ($name:expr, $extra:expr) => {
        match NatsServer::start_with($name, $extra) {
            Some(s) => s,
            None => return,
        }
    };
}

/// Publishes `event` once the server is back after a restart, retrying
/// transient errors until `deadline`; its sequence.
async fn publish_once_back(p: &NatsProvider, event: &Event, deadline: Instant) -> u64 {
    loop {
        match p.publish(event).await {
            Ok(seq) => return seq,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publish after restart: {e:?}"),
        }
    }
}

fn event(p: &NatsProvider, n: u64) -> Event {
    common::numbered_event(p, "t", n)
}

#[tokio::test]
async fn bad_url_is_invalid_config() {
    for url in ["http://127.0.0.1:4222", "nats://127.0.0.1:notaport", ""] {
        let config = NatsConfig {
            url: url.into(),
            ..NatsConfig::default()
        };
        match NatsProvider::connect(config).await {
            Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "url"),
            other => panic!("{url:?}: expected InvalidConfig, got {other:?}"),
        }
    }
}

/// A stream name longer than JetStream takes (255 bytes) is
/// `InvalidConfig` on `stream_name` before any I/O, however long: one of a
/// few thousand bytes made the server close the connection on the stream
/// lookup (its subject past the protocol's control line), which came back
/// as a transient `Timeout` after the request timeout.
#[tokio::test]
async fn a_stream_name_longer_than_jetstream_takes_is_invalid_config() {
    let Some(server) =
        NatsServer::start("a_stream_name_longer_than_jetstream_takes_is_invalid_config")
    else {
        return;
    };
    let mut config = common::config(&server, "longname");
    config.stream_name = "S".repeat(255);
    let p = NatsProvider::connect(config).await.unwrap();
    assert_eq!(p.stream_name().len(), 255);
    for len in [256, 5_000] {
        let mut config = common::config(&server, "longname");
        config.stream_name = "S".repeat(len);
        match NatsProvider::connect(config).await {
            Err(Error::InvalidConfig { field, reason }) => {
                assert_eq!(field, "stream_name", "{len}: {reason}");
                assert!(reason.contains("255"), "{len}: {reason}");
            }
            other => panic!("{len} bytes: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn refused_connection_is_connection_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: nothing listens there
    let config = NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        connect_timeout_secs: 2,
        ..NatsConfig::default()
    };
    match NatsProvider::connect(config).await {
        Err(e @ Error::Connection(_)) => assert!(e.is_transient()),
        other => panic!("expected Connection, got {other:?}"),
    }
}

/// A server running without JetStream answers every JetStream request with
/// "no responders", which looked like an outage (`Error::Connection`,
/// transient: retry loops spun forever). It is a clear, permanent error
/// saying how to enable JetStream; a server that is down stays transient.
#[tokio::test]
async fn a_server_without_jetstream_is_a_permanent_error_saying_how_to_enable_it() {
    let Some(mut server) = NatsServer::start_without_jetstream(
        "a_server_without_jetstream_is_a_permanent_error_saying_how_to_enable_it",
    ) else {
        return;
    };
    let config = common::config(&server, "nojs");
    match NatsProvider::connect(config.clone()).await {
        Err(e @ Error::Unsupported { .. }) => {
            assert!(!e.is_transient(), "{e:?}");
            let text = e.to_string();
            for named in [
                "JetStream",
                "disabled",
                "-js",
                "jetstream {}",
                &server.url(),
            ] {
                assert!(text.contains(named), "{named} missing from {text}");
            }
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // the same server down: a transient connection error, as before
    server.kill();
    let down = NatsConfig {
        connect_timeout_secs: 2,
        ..config
    };
    match NatsProvider::connect(down).await {
        Err(e @ Error::Connection(_)) => assert!(e.is_transient(), "{e:?}"),
        other => panic!("expected Connection, got {other:?}"),
    }
}

#[tokio::test]
async fn silent_server_is_timeout() {
    // accepts TCP but never speaks the protocol
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let config = NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        connect_timeout_secs: 1,
        ..NatsConfig::default()
    };
    let started = Instant::now();
    match NatsProvider::connect(config).await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    holder.abort();
}

#[tokio::test]
async fn token_auth_accepts_right_and_rejects_wrong() {
    let server = server!(
        "token_auth_accepts_right_and_rejects_wrong",
        "authorization { token: \"s3cret\" }"
    );
    let good = NatsConfig {
        token: Some("s3cret".into()),
        ..common::config(&server, "tok")
    };
    let p = NatsProvider::connect(good).await.expect("right token");
    p.publish(&event(&p, 1)).await.expect("publish");
    for token in [Some("wrong".to_string()), None] {
        let bad = NatsConfig {
            token,
            ..common::config(&server, "tok")
        };
        match NatsProvider::connect(bad).await {
            Err(Error::Authentication(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected Authentication, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn user_password_auth_accepts_right_and_rejects_wrong() {
    let server = server!(
        "user_password_auth_accepts_right_and_rejects_wrong",
        "authorization { users = [ { user: \"alice\", password: \"pa55\" } ] }"
    );
    let opts = |user: &str, pw: &str| NatsOptions {
        user: Some(user.into()),
        password: Some(pw.into()),
        ..NatsOptions::default()
    };
    let p = NatsProvider::connect_with(common::config(&server, "up"), opts("alice", "pa55"))
        .await
        .expect("right password");
    assert!(p.health().await.unwrap());
    for (user, pw) in [("alice", "nope"), ("bob", "pa55")] {
        match NatsProvider::connect_with(common::config(&server, "up"), opts(user, pw)).await {
            Err(Error::Authentication(_)) => {}
            other => panic!("{user}/{pw}: expected Authentication, got {other:?}"),
        }
    }
}

/// `nats://user:password@host` and `nats://token@host`, the convention of
/// every NATS client, authenticate as if the fields were set.
#[tokio::test]
async fn credentials_in_the_url_authenticate() {
    let server = server!(
        "credentials_in_the_url_authenticate",
        "authorization { users = [ { user: \"alice\", password: \"p@ss:w/rd\" } ] }"
    );
    let with_url = |url: String| NatsConfig {
        url,
        ..common::config(&server, "urlup")
    };
    let port = server.port();
    // percent-encoded, as a URL must carry `@`, `:` and `/` in a password
    let p = NatsProvider::connect(with_url(format!(
        "nats://alice:p%40ss%3Aw%2Frd@127.0.0.1:{port}"
    )))
    .await
    .expect("the URL's user and password are used");
    assert!(p.health().await.unwrap());
    // the same credentials on every server of a list
    NatsProvider::connect(with_url(format!(
        "nats://alice:p%40ss%3Aw%2Frd@127.0.0.1:{port}, nats://alice:p%40ss%3Aw%2Frd@127.0.0.1:{port}"
    )))
    .await
    .expect("a list whose servers carry the same credentials");
    // a `/` left unencoded (generated passwords hold them): nats:// URLs
    // have no path, so the credentials still end at the last `@`
    let p = NatsProvider::connect(with_url(format!(
        "nats://alice:p%40ss%3Aw/rd@127.0.0.1:{port}"
    )))
    .await
    .expect("a password with an unencoded `/` is used");
    assert!(p.health().await.unwrap());
    match NatsProvider::connect(with_url(format!("nats://alice:wrong@127.0.0.1:{port}"))).await {
        Err(Error::Authentication(_)) => {}
        other => panic!("a wrong password in the URL: expected Authentication, got {other:?}"),
    }

    let server = server!(
        "credentials_in_the_url_authenticate_token",
        "authorization { token: \"s3cret\" }"
    );
    let config = NatsConfig {
        url: format!("nats://s3cret@127.0.0.1:{}", server.port()),
        ..common::config(&server, "urltok")
    };
    let p = NatsProvider::connect(config)
        .await
        .expect("the URL's token is used");
    assert!(p.health().await.unwrap());
}

/// Two authentication methods at once would send the server both, and which
/// one it checks depends on its configuration: refused before connecting,
/// naming both.
#[tokio::test]
async fn two_authentication_methods_are_invalid_config_before_connecting() {
    // nothing listens here: a refusal must come before any network I/O
    let config = |url: &str, token: Option<&str>, creds: Option<&str>| NatsConfig {
        url: url.to_string(),
        token: token.map(str::to_string),
        credentials_path: creds.map(str::to_string),
        ..NatsConfig::default()
    };
    let user = NatsOptions {
        user: Some("alice".into()),
        password: Some("pa55".into()),
        ..NatsOptions::default()
    };
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    let nkey = NatsOptions {
        nkey_seed: Some(seed),
        ..NatsOptions::default()
    };
    let closed = "nats://127.0.0.1:1";
    let cases: Vec<(&str, NatsConfig, NatsOptions, [&str; 2])> = vec![
        (
            "token + user",
            config(closed, Some("t"), None),
            user.clone(),
            ["token", "user/password"],
        ),
        (
            "token + nkey",
            config(closed, Some("t"), None),
            nkey.clone(),
            ["token", "nkey_seed"],
        ),
        (
            "user + nkey",
            config(closed, None, None),
            NatsOptions {
                nkey_seed: nkey.nkey_seed.clone(),
                ..user.clone()
            },
            ["user/password", "nkey_seed"],
        ),
        (
            "creds + nkey",
            config(closed, None, Some("/nonexistent.creds")),
            nkey.clone(),
            ["nkey_seed", "credentials_path"],
        ),
        (
            "creds + token",
            config(closed, Some("t"), Some("/nonexistent.creds")),
            NatsOptions::default(),
            ["token", "credentials_path"],
        ),
        (
            "url + user",
            config("nats://bob:pw@127.0.0.1:1", None, None),
            user.clone(),
            ["url", "user/password"],
        ),
        (
            "url token + token",
            config("nats://tok@127.0.0.1:1", Some("t"), None),
            NatsOptions::default(),
            ["url", "token"],
        ),
        (
            "two urls, two users",
            config("nats://a:1@127.0.0.1:1,nats://b:2@127.0.0.1:2", None, None),
            NatsOptions::default(),
            ["url", "different"],
        ),
    ];
    for (case, config, options, named) in cases {
        match NatsProvider::connect_with(config, options).await {
            Err(Error::InvalidConfig { field, reason }) => {
                let text = format!("{field}: {reason}");
                for name in named {
                    assert!(text.contains(name), "{case}: {text:?} does not name {name}");
                }
                assert!(
                    !text.contains("pa55") && !text.contains(":pw@") && !text.contains("tok@"),
                    "{case}: a secret in {text:?}"
                );
            }
            other => panic!("{case}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn stream_settings_updated_or_refused() {
    let server = server!("stream_settings_updated_or_refused");
    let config = NatsConfig {
        max_events: 100,
        ..common::config(&server, "upd")
    };
    let p = NatsProvider::connect(config.clone()).await.expect("create");
    drop(p);
    // an updatable change is applied, with ExistingStream::Update (the
    // default adopts the stream's limits)
    let bigger = NatsConfig {
        max_events: 500,
        max_age_secs: 3600,
        ..config.clone()
    };
    let update = NatsOptions {
        existing_stream: ExistingStream::Update,
        ..NatsOptions::default()
    };
    let p = NatsProvider::connect_with(bigger, update)
        .await
        .expect("update");
    let js = async_nats::jetstream::new(p.client().clone());
    let mut stream = js.get_stream(&config.stream_name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_messages, 500);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    // the storage type cannot change: a conflict naming it
    let memory = NatsConfig {
        storage: StorageType::Memory,
        ..config
    };
    match NatsProvider::connect(memory).await {
        Err(Error::Conflict { reason, .. }) => assert!(reason.contains("storage"), "{reason}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn undecodable_message_is_terminated_and_reported_once() {
    let server = server!("undecodable_message_is_terminated_and_reported_once");
    let p = NatsProvider::connect(common::config(&server, "bad"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(p.client().clone());
    let raw_subject = p.build_subject("t", "x");
    js.publish(raw_subject.clone(), "not json {".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let good = event(&p, 1);
    p.publish(&good).await.unwrap();
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject("t");
    let mut sub = p
        .subscribe_durable_with_options("reader", &filter, &opts)
        .await
        .unwrap();
    match sub.next().await {
        Err(Error::Undecodable {
            sequence,
            raw,
            subject,
            ..
        }) => {
            assert_eq!(sequence, 1);
            assert_eq!(raw, "not json {");
            assert_eq!(subject, raw_subject);
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }
    let got = sub.next().await.unwrap().unwrap();
    assert_eq!(*got.event, good, "the subscription stays usable");
    sub.close().await.unwrap();
    // the bad message was terminated: not redelivered after the ack wait
    let mut sub = p
        .subscribe_durable_with_options("reader", &filter, &opts)
        .await
        .unwrap();
    let again = tokio::time::timeout(Duration::from_secs(3), sub.next_manual_ack()).await;
    assert!(again.is_err(), "nothing redelivered, got {again:?}");
}

async fn consumers(p: &NatsProvider) -> usize {
    p.info().await.expect("info").consumers
}

#[tokio::test]
async fn ephemeral_consumers_are_deleted_on_close_and_drop() {
    let server = server!("ephemeral_consumers_are_deleted_on_close_and_drop");
    let p = NatsProvider::connect(common::config(&server, "eph"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let mut sub = p.subscribe(&filter).await.unwrap();
    assert_eq!(consumers(&p).await, 1);
    sub.close().await.unwrap();
    assert_eq!(consumers(&p).await, 0, "close deletes the ephemeral");
    let sub = p.subscribe(&filter).await.unwrap();
    let durable = p.subscribe_durable("keep", &filter).await.unwrap();
    assert_eq!(consumers(&p).await, 2);
    drop(sub);
    drop(durable);
    let deadline = Instant::now() + Duration::from_secs(5);
    while consumers(&p).await != 1 {
        assert!(
            Instant::now() < deadline,
            "drop did not delete the ephemeral"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the durable stays until unsubscribed
    p.unsubscribe("keep").await.unwrap();
    assert_eq!(consumers(&p).await, 0);
}

#[tokio::test]
async fn changed_durable_options_are_applied_or_named() {
    let server = server!("changed_durable_options_are_applied_or_named");
    let p = NatsProvider::connect(common::config(&server, "chg"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    drop(p.subscribe_durable("d", &filter).await.unwrap());
    // ack wait can change in place
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(7)),
        ..SubscribeOptions::default()
    };
    drop(
        p.subscribe_durable_with_options("d", &filter, &opts)
            .await
            .expect("ack_wait is updatable"),
    );
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    let info = stream.consumer_info("d").await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
    // a new filter is applied, or refused naming the filter
    match p
        .subscribe_durable_with_options("d", &p.category_subject("other"), &opts)
        .await
    {
        Ok(_) => {
            let info = stream.consumer_info("d").await.unwrap();
            assert_eq!(info.config.filter_subject, p.category_subject("other"));
        }
        Err(Error::Conflict { reason, .. }) => {
            assert!(reason.contains("filter_subject"), "{reason}")
        }
        Err(other) => panic!("expected Ok or Conflict, got {other}"),
    }
}

#[tokio::test]
async fn bad_subscribe_options_are_invalid_config() {
    let server = server!("bad_subscribe_options_are_invalid_config");
    let p = NatsProvider::connect(common::config(&server, "opt"))
        .await
        .unwrap();
    let opts = SubscribeOptions {
        // fewer deliveries than backoff steps: refused by every nats-server
        // (more combinations, refused by some versions only, in
        // `consumer.rs`)
        backoff: vec![Duration::from_millis(100), Duration::from_millis(200)],
        max_deliver: Some(1),
        ..SubscribeOptions::default()
    };
    match p
        .subscribe_durable_with_options("b", &p.category_subject("t"), &opts)
        .await
    {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "backoff"),
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn health_follows_the_server_and_publishing_resumes_after_restart() {
    let mut server = server!("health_follows_the_server_and_publishing_resumes_after_restart");
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "hl")
    };
    let p = NatsProvider::connect(config).await.unwrap();
    p.publish(&event(&p, 1)).await.unwrap();
    assert!(p.health().await.unwrap());
    server.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.health().await.unwrap() {
        assert!(Instant::now() < deadline, "health still true after kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match p.publish(&event(&p, 2)).await {
        Err(e) => assert!(e.is_transient(), "publish while down: {e:?}"),
        Ok(seq) => panic!("published to a dead server: {seq}"),
    }
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.health().await.unwrap() {
        assert!(Instant::now() < deadline, "no reconnection after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seq = p.publish(&event(&p, 3)).await.unwrap();
    assert!(seq >= 2, "the stream survived the restart: {seq}");
    assert!(p.is_connected());
}

#[tokio::test]
async fn history_reads_only_the_tail_of_a_large_stream() {
    let server = server!("history_reads_only_the_tail_of_a_large_stream");
    let p = NatsProvider::connect(common::config(&server, "hist"))
        .await
        .unwrap();
    let events: Vec<Event> = (0..5000)
        .map(|n| {
            let cat = if n % 100 == 0 { "rare" } else { "t" };
            Event::new(
                p.build_subject(cat, "x"),
                cat,
                "h",
                "test",
                json!({ "n": n }),
            )
        })
        .collect();
    for r in p.publish_batch(&events).await.unwrap() {
        r.unwrap();
    }
    let newest = p.history(None, 10).await.unwrap();
    let ns: Vec<u64> = newest
        .iter()
        .map(|e| e.payload["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (4990..5000).rev().collect::<Vec<_>>());
    let rare = p
        .history(Some(&p.category_subject("rare")), 1000)
        .await
        .unwrap();
    let ns: Vec<u64> = rare
        .iter()
        .map(|e| e.payload["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..50).rev().map(|i| i * 100).collect::<Vec<_>>());
    // history leaves no consumers behind
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.info().await.unwrap().consumers != 0 {
        assert!(
            Instant::now() < deadline,
            "history consumers not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn prefetched_events_of_a_dropped_subscription_are_not_lost() {
    let server = server!("prefetched_events_of_a_dropped_subscription_are_not_lost");
    let p = NatsProvider::connect(common::config(&server, "pre"))
        .await
        .unwrap();
    let events: Vec<Event> = (0..200).map(|n| event(&p, n)).collect();
    for r in p.publish_batch(&events).await.unwrap() {
        r.unwrap();
    }
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject("t");
    let mut sub = p
        .subscribe_durable_with_options("pre", &filter, &opts)
        .await
        .unwrap();
    // past the one-at-a-time warm-up, so later events are fetched ahead
    for n in 0..100u64 {
        let got = sub.next().await.unwrap().unwrap();
        assert_eq!(got.event.payload["n"], n);
    }
    drop(sub); // event 99 unfinished, some later ones fetched but unseen
    let mut sub = p
        .subscribe_durable_with_options("pre", &filter, &opts)
        .await
        .unwrap();
    let mut rest = std::collections::BTreeSet::new();
    while rest.len() < 101 {
        let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("redelivery within the ack wait")
            .unwrap()
            .unwrap();
        rest.insert(got.event.payload["n"].as_u64().unwrap());
    }
    assert_eq!(
        rest,
        (99..200).collect(),
        "nothing lost, nothing acked twice"
    );
}

#[tokio::test]
async fn prefetched_events_of_a_closed_durable_subscription_come_back_at_once() {
    let server = server!("prefetched_events_of_a_closed_durable_subscription_come_back_at_once");
    let p = NatsProvider::connect(common::config(&server, "close"))
        .await
        .unwrap();
    let events: Vec<Event> = (0..200).map(|n| event(&p, n)).collect();
    for r in p.publish_batch(&events).await.unwrap() {
        r.unwrap();
    }
    // the default ack wait (30 s): what close hands back must not wait for it
    let filter = p.category_subject("t");
    let mut sub = p.subscribe_durable("handover", &filter).await.unwrap();
    // past the one-at-a-time warm-up, so later events are fetched ahead
    for n in 0..100u64 {
        let pending = sub.next_manual_ack().await.unwrap().unwrap();
        assert_eq!(pending.received.event.payload["n"], n);
        pending.ack().await.unwrap();
    }
    sub.close().await.unwrap(); // a graceful stop: some events fetched, unseen
    let started = Instant::now();
    let mut sub = p.subscribe_durable("handover", &filter).await.unwrap();
    let mut rest = std::collections::BTreeSet::new();
    while rest.len() < 100 {
        let pending = tokio::time::timeout(Duration::from_secs(10), sub.next_manual_ack())
            .await
            .expect("the next event without waiting out the ack wait")
            .unwrap()
            .unwrap();
        rest.insert(pending.received.event.payload["n"].as_u64().unwrap());
        pending.ack().await.unwrap();
    }
    assert_eq!(
        rest,
        (100..200).collect(),
        "nothing lost, nothing acked twice"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "handed back after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_event_handed_back_on_close_is_not_swallowed_by_the_open_pull_request() {
    let server = server!("an_event_handed_back_on_close_is_not_swallowed_by_the_open_pull_request");
    let p = NatsProvider::connect(common::config(&server, "close"))
        .await
        .unwrap();
    let events: Vec<Event> = (0..12).map(|n| event(&p, n)).collect();
    for r in p.publish_batch(&events).await.unwrap() {
        r.unwrap();
    }
    let filter = p.category_subject("t");
    let mut sub = p.subscribe_durable("handover", &filter).await.unwrap();
    // 8 one at a time, a pull of 2, then a pull of 4 that finds events 10
    // and 11 and waits at the server for two more: event 11 is received
    // and not handed out when the subscription closes
    for n in 0..11u64 {
        let pending = sub.next_manual_ack().await.unwrap().unwrap();
        assert_eq!(pending.received.event.payload["n"], n);
        pending.ack().await.unwrap();
    }
    sub.close().await.unwrap();
    let mut sub = p.subscribe_durable("handover", &filter).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_secs(10), sub.next_manual_ack())
        .await
        .expect("event 11 without waiting out the ack wait")
        .unwrap()
        .unwrap();
    assert_eq!(pending.received.event.payload["n"], 11);
}

#[tokio::test]
async fn changed_deliver_policy_on_an_existing_durable_is_refused() {
    let server = server!("changed_deliver_policy_on_an_existing_durable_is_refused");
    let p = NatsProvider::connect(common::config(&server, "dp"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    for n in 0..3 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    drop(p.subscribe_durable("d", &filter).await.unwrap());
    let live = SubscribeOptions {
        deliver_policy: DeliverPolicy::New,
        ..SubscribeOptions::default()
    };
    // the consumer would go on delivering all three stored events
    match p.subscribe_durable_with_options("d", &filter, &live).await {
        Err(Error::Conflict { reason, .. }) => {
            assert!(reason.contains("deliver_policy"), "{reason}")
        }
        other => panic!("expected Conflict, got {:?}", other.map(|_| ())),
    }
    // the same policy resumes; after unsubscribe the new policy applies
    drop(p.subscribe_durable("d", &filter).await.unwrap());
    p.unsubscribe("d").await.unwrap();
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &live)
        .await
        .unwrap();
    p.publish(&event(&p, 3)).await.unwrap();
    let got = sub.next().await.unwrap().unwrap();
    assert_eq!(got.event.payload["n"], 3);
}

#[tokio::test]
async fn fetched_but_unseen_events_are_not_exhausted_by_close() {
    let server = server!("fetched_but_unseen_events_are_not_exhausted_by_close");
    let p = NatsProvider::connect(common::config(&server, "md"))
        .await
        .unwrap();
    let events: Vec<Event> = (0..100).map(|n| event(&p, n)).collect();
    for r in p.publish_batch(&events).await.unwrap() {
        r.unwrap();
    }
    let opts = SubscribeOptions {
        max_deliver: Some(1),
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject("t");
    let mut sub = p
        .subscribe_durable_with_options("once", &filter, &opts)
        .await
        .unwrap();
    // well past the one-at-a-time warm-up
    for n in 0..30u64 {
        assert_eq!(sub.next().await.unwrap().unwrap().event.payload["n"], n);
    }
    sub.close().await.unwrap();
    // a fetched event the caller never saw would have used its one delivery
    let mut sub = p
        .subscribe_durable_with_options("once", &filter, &opts)
        .await
        .unwrap();
    for n in 30..100u64 {
        let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("event {n} never delivered"))
            .unwrap()
            .unwrap();
        assert_eq!(got.event.payload["n"], n);
        assert_eq!(got.num_delivered, 1);
    }
}

#[tokio::test]
async fn subscription_reports_a_lost_server_and_resumes_after_restart() {
    let mut server = server!("subscription_reports_a_lost_server_and_resumes_after_restart");
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "down")
    };
    let p = NatsProvider::connect(config).await.unwrap();
    let filter = p.category_subject("t");
    let mut sub = p.subscribe_durable("d", &filter).await.unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    assert_eq!(sub.next().await.unwrap().unwrap().event.payload["n"], 0);
    // waiting at the server when it dies
    let waiting = tokio::spawn(async move {
        let r = tokio::time::timeout(Duration::from_secs(30), sub.next()).await;
        (sub, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let (mut sub, r) = waiting.await.unwrap();
    match r {
        Ok(Err(e)) => assert!(
            matches!(e, Error::Connection(_)),
            "a lost server is a connection error: {e:?}"
        ),
        Ok(Ok(got)) => panic!("got {got:?} from a dead server"),
        Err(_) => panic!("next() waited silently for a dead server"),
    }
    // still down: every call reports it, within the request timeout
    let r = tokio::time::timeout(Duration::from_secs(30), sub.next()).await;
    assert!(
        matches!(r, Ok(Err(Error::Connection(_)))),
        "while down: {r:?}"
    );
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.health().await.unwrap() {
        assert!(Instant::now() < deadline, "no reconnection after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.publish(&event(&p, 1)).await.unwrap();
    // the same subscription resumes (transient errors while JetStream
    // recovers are allowed)
    let got = loop {
        assert!(Instant::now() < deadline, "the subscription did not resume");
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Ok(Some(got))) => break got,
            Ok(Err(e)) if e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("after restart: {other:?}"),
        }
    };
    assert_eq!(got.event.payload["n"], 1);
}

#[tokio::test]
async fn close_while_the_server_is_down_returns_within_the_timeout() {
    let mut server = server!("close_while_the_server_is_down_returns_within_the_timeout");
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "cl")
    };
    let p = NatsProvider::connect(config).await.unwrap();
    let filter = p.category_subject("t");
    p.publish(&event(&p, 0)).await.unwrap();
    let mut sub = p.subscribe_durable("d", &filter).await.unwrap();
    sub.next().await.unwrap().unwrap();
    server.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.is_connected() {
        assert!(Instant::now() < deadline, "the client did not notice");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the auto-ack of event 0 cannot be flushed: a typed error, not a hang
    match tokio::time::timeout(Duration::from_secs(20), sub.close()).await {
        Ok(Err(e)) => assert!(e.is_transient(), "{e:?}"),
        Ok(Ok(())) => panic!("close flushed acknowledgements to a dead server"),
        Err(_) => panic!("close() hung while the server was down"),
    }
    // closed all the same
    assert!(matches!(sub.next().await, Ok(None)));
}

/// Manual deliveries report the ack wait JetStream applies to them: the
/// consumer's `ack_wait`, or the backoff entry of the delivery (the last
/// one repeating).
#[tokio::test]
async fn manual_deliveries_report_their_ack_wait() {
    let server = server!("manual_deliveries_report_their_ack_wait");
    let p = NatsProvider::connect(common::config(&server, "aw"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    p.publish(&event(&p, 0)).await.unwrap();
    let waited = SubscribeOptions {
        ack_wait: Some(Duration::from_millis(1500)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("waited", &filter, &waited)
        .await
        .unwrap();
    let first = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(first.ack_wait(), Some(Duration::from_millis(1500)));
    first.ack().await.unwrap();
    let backed = SubscribeOptions {
        backoff: vec![Duration::from_millis(100), Duration::from_millis(200)],
        max_deliver: Some(5),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("backed", &filter, &backed)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let pending = tokio::time::timeout(Duration::from_secs(40), sub.next_manual_ack())
            .await
            .expect("a delivery in time")
            .unwrap()
            .unwrap();
        seen.push((pending.received.num_delivered, pending.ack_wait()));
        pending.nak().await.unwrap();
    }
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(seen, vec![(1, ms(100)), (2, ms(200)), (3, ms(200))]);
}

/// Two processes (two connections) on one durable: the old one opened it
/// with a long ack wait, holds a delivery, and the new one shortens the
/// wait, which JetStream applies to the held delivery too. What that
/// delivery reports follows within about a second (the old subscription
/// reads the durable again in the background), so its holder keeps it
/// alive in time: kept alive at half the reported wait for longer than the
/// new wait, it is not redelivered to the new process. It used to report
/// the wait its subscription read when it opened, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_delivery_follows_a_wait_another_process_shortened() {
    let server = server!("a_held_delivery_follows_a_wait_another_process_shortened");
    let config = common::config(&server, "roll");
    let old = NatsProvider::connect(config.clone()).await.unwrap();
    let new = NatsProvider::connect(config).await.unwrap();
    let filter = old.category_subject("t");
    let long = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(6)),
        ..SubscribeOptions::default()
    };
    let short = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(2)),
        ..SubscribeOptions::default()
    };
    let mut old_sub = old
        .subscribe_durable_with_options("roll", &filter, &long)
        .await
        .unwrap();
    old.publish(&event(&old, 0)).await.unwrap();
    let held = old_sub.next_manual_ack().await.unwrap().unwrap();
    let handed_out = Instant::now();
    assert_eq!(held.ack_wait(), Some(Duration::from_secs(6)));
    let mut new_sub = new
        .subscribe_durable_with_options("roll", &filter, &short)
        .await
        .unwrap();
    let changed = Instant::now();
    // followed within the bound (1 s) and one request
    while held.ack_wait() != Some(Duration::from_secs(2)) {
        assert!(
            changed.elapsed() < Duration::from_secs(3),
            "the held delivery still reports {:?}",
            held.ack_wait()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // kept alive at half the reported wait (since it was handed out: at
    // once now, as the bus's consumer runner does), past the new wait: the
    // new process gets nothing meanwhile
    let keep = async {
        let mut last = handed_out;
        loop {
            let half = held.ack_wait().unwrap() / 2;
            if last.elapsed() >= half {
                held.in_progress().await.unwrap();
                last = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = keep => {}
        got = new_sub.next_manual_ack() => {
            panic!("redelivered to the new process while kept alive: {got:?}");
        }
        () = tokio::time::sleep(Duration::from_secs(4)) => {}
    }
    held.ack().await.unwrap();
}

/// A second subscription that lowers `max_deliver` on a durable changes
/// what the first one reports: its redelivery at the new limit is flagged
/// final (so a bus consumer dead-letters it instead of naking it into
/// silent exhaustion).
#[tokio::test]
async fn a_lowered_max_deliver_is_seen_by_the_other_subscriptions() {
    let server = server!("a_lowered_max_deliver_is_seen_by_the_other_subscriptions");
    let p = NatsProvider::connect(common::config(&server, "md"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let five = SubscribeOptions {
        max_deliver: Some(5),
        ..SubscribeOptions::default()
    };
    let mut first = p
        .subscribe_durable_with_options("shared", &filter, &five)
        .await
        .unwrap();
    let two = SubscribeOptions {
        max_deliver: Some(2),
        ..SubscribeOptions::default()
    };
    drop(
        p.subscribe_durable_with_options("shared", &filter, &two)
            .await
            .unwrap(),
    );
    p.publish(&event(&p, 0)).await.unwrap();
    let within = Duration::from_secs(10);
    let pending = tokio::time::timeout(within, first.next_manual_ack())
        .await
        .expect("a delivery in time")
        .unwrap()
        .unwrap();
    assert_eq!(pending.received.num_delivered, 1);
    pending.nak().await.unwrap();
    let again = tokio::time::timeout(within, first.next_manual_ack())
        .await
        .expect("a redelivery in time")
        .unwrap()
        .unwrap();
    assert_eq!(again.received.num_delivered, 2);
    assert_eq!(again.max_deliver(), Some(2));
    assert!(again.is_final_delivery(), "the lowered limit was not seen");
    again.ack().await.unwrap();
}

/// Deletes the stream's ephemeral consumers behind the provider's back, as a
/// server restart or an administrator would.
async fn delete_ephemerals(server: &NatsServer, stream: &str) {
    use futures_util::TryStreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js.get_stream(stream).await.unwrap();
    let names: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    let ephemerals: Vec<&String> = names.iter().filter(|n| n.starts_with("eph-")).collect();
    assert!(!ephemerals.is_empty(), "no ephemeral consumer in {names:?}");
    for name in ephemerals {
        stream.delete_consumer(name).await.unwrap();
    }
}

async fn next_n(sub: &mut Box<dyn event_core::Subscription>) -> event_core::PendingEvent {
    // a lost consumer is noticed when a pull goes unanswered (7 s)
    tokio::time::timeout(Duration::from_secs(30), sub.next_manual_ack())
        .await
        .expect("an event within 30 s")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_lost_ephemeral_is_recreated_without_skipping_or_dropping_events() {
    let server = server!("a_lost_ephemeral_is_recreated_without_skipping_or_dropping_events");
    let config = common::config(&server, "lost");
    let stream = config.stream_name.clone();
    let p = NatsProvider::connect(config).await.unwrap();
    let filter = p.category_subject("t");

    // lost with a manual delivery handed out and not settled
    let mut sub = p.subscribe(&filter).await.unwrap();
    for n in 0..3 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    next_n(&mut sub).await.ack().await.unwrap();
    let held = next_n(&mut sub).await;
    assert_eq!(held.received.event.payload["n"], 1);
    delete_ephemerals(&server, &stream).await;
    p.publish(&event(&p, 3)).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let got = next_n(&mut sub).await;
        seen.push(got.received.event.payload["n"].as_u64().unwrap());
        got.ack().await.unwrap();
    }
    assert_eq!(
        seen,
        [1, 2, 3],
        "the unsettled event comes again, nothing is skipped"
    );
    sub.close().await.unwrap();

    // lost before it delivered anything: events published meanwhile arrive
    let mut sub = p.subscribe(&filter).await.unwrap();
    delete_ephemerals(&server, &stream).await;
    p.publish(&event(&p, 4)).await.unwrap();
    assert_eq!(next_n(&mut sub).await.received.event.payload["n"], 4);
}

/// A recreated ephemeral resumes at its oldest unsettled delivery. A final
/// delivery that was naked ended its event (the nak is a term), so it is
/// not resumed at; one left unsettled is owed its spare delivery, so it is,
/// as any unsettled delivery.
#[tokio::test]
async fn a_lost_ephemeral_resumes_at_an_unsettled_final_delivery_not_a_naked_one() {
    let server = server!("a_lost_ephemeral_resumes_at_an_unsettled_final_delivery_not_a_naked_one");
    let config = common::config(&server, "lostfinal");
    let stream = config.stream_name.clone();
    let p = NatsProvider::connect(config).await.unwrap();
    let filter = p.category_subject("t");
    let options = SubscribeOptions {
        max_deliver: Some(1),
        ..SubscribeOptions::default()
    };
    let mut sub = p.subscribe_with_options(&filter, &options).await.unwrap();
    for n in 0..3 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    // event 0's only delivery is nak'd (which ends it), event 1's is
    // dropped unsettled (owed its spare delivery), event 2 is acked
    let first = next_n(&mut sub).await;
    assert!(first.is_final_delivery());
    first.nak().await.unwrap();
    drop(next_n(&mut sub).await);
    next_n(&mut sub).await.ack().await.unwrap();
    delete_ephemerals(&server, &stream).await;
    p.publish(&event(&p, 3)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let pending = next_n(&mut sub).await;
        got.push(pending.received.event.payload["n"].as_u64().unwrap());
        pending.ack().await.unwrap();
    }
    assert_eq!(
        got,
        vec![1, 2, 3],
        "a recreated consumer resumes at the unsettled final delivery (the acked event after \
         it comes again: at-least-once), never at the naked one"
    );
    sub.close().await.unwrap();
}

/// A spare delivery is the event's last: once it is acked, a recreated
/// ephemeral does not resume at the event (the final delivery before it was
/// dropped unsettled), which would hand out again every event acked since.
#[tokio::test]
async fn a_lost_ephemeral_does_not_resume_at_an_acked_spare_delivery() {
    let server = server!("a_lost_ephemeral_does_not_resume_at_an_acked_spare_delivery");
    let config = common::config(&server, "lostspare");
    let stream = config.stream_name.clone();
    let p = NatsProvider::connect(config).await.unwrap();
    let filter = p.category_subject("t");
    let options = SubscribeOptions {
        max_deliver: Some(1),
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    let mut sub = p.subscribe_with_options(&filter, &options).await.unwrap();
    for n in 0..2 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    let dropped = next_n(&mut sub).await;
    assert_eq!(dropped.received.event.payload["n"], 0);
    assert!(dropped.is_final_delivery());
    drop(dropped); // unsettled: owed its spare delivery
    let second = next_n(&mut sub).await;
    assert_eq!(second.received.event.payload["n"], 1);
    second.ack().await.unwrap();
    let spare = next_n(&mut sub).await;
    assert_eq!(spare.received.event.payload["n"], 0);
    assert_eq!(spare.received.num_delivered, 2);
    spare.ack().await.unwrap();
    delete_ephemerals(&server, &stream).await;
    p.publish(&event(&p, 2)).await.unwrap();
    let got = next_n(&mut sub).await;
    assert_eq!(
        got.received.event.payload["n"], 2,
        "a recreated consumer resumed at an event whose spare delivery was acked: {got:?}"
    );
    got.ack().await.unwrap();
    sub.close().await.unwrap();
}

#[tokio::test]
async fn an_ephemeral_resumes_after_a_server_restart() {
    let mut server = server!("an_ephemeral_resumes_after_a_server_restart");
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "ephrs")
    };
    let p = NatsProvider::connect(config).await.unwrap();
    let filter = p.category_subject("t");
    let mut sub = p.subscribe(&filter).await.unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    assert_eq!(sub.next().await.unwrap().unwrap().event.payload["n"], 0);
    server.kill();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !p.health().await.unwrap() {
        assert!(Instant::now() < deadline, "no reconnection after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let published = publish_once_back(&p, &event(&p, 1), deadline).await;
    let got = loop {
        assert!(Instant::now() < deadline, "the ephemeral did not resume");
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            // event 0's auto-ack went out around the restart and may be
            // lost: at-least-once allows it again
            Ok(Ok(Some(got))) if got.event.payload["n"] == 0 => {}
            Ok(Ok(Some(got))) => break got,
            Ok(Err(e)) if e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("after restart: {other:?}"),
        }
    };
    assert_eq!(
        (got.event.payload["n"].as_u64(), got.sequence),
        (Some(1), published)
    );
}

#[tokio::test]
async fn a_durable_deleted_elsewhere_is_not_found_not_a_silent_wait() {
    let server = server!("a_durable_deleted_elsewhere_is_not_found_not_a_silent_wait");
    let p = NatsProvider::connect(common::config(&server, "deld"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let mut sub = p.subscribe_durable("gone", &filter).await.unwrap();
    p.unsubscribe("gone").await.unwrap();
    match tokio::time::timeout(Duration::from_secs(30), sub.next_manual_ack()).await {
        Ok(Err(Error::NotFound { name, .. })) => assert_eq!(name, "gone"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_timeout_of_the_caller_is_honoured_and_never_panics() {
    let server = server!("publish_timeout_of_the_caller_is_honoured_and_never_panics");
    let p = NatsProvider::connect(common::config(&server, "ptimeout"))
        .await
        .unwrap();
    // a timeout too long for the clock is just a long timeout
    let forever = event_core::PublishOptions {
        timeout: Some(Duration::MAX),
        ..event_core::PublishOptions::default()
    };
    assert_eq!(
        p.publish_with_options(&event(&p, 1), &forever)
            .await
            .unwrap(),
        1
    );
    // without the stream, a core subscriber that never answers takes the
    // publish: no ack comes, and the caller's 1 s (not the 5 s request
    // timeout) is what expires and is reported
    let js = async_nats::jetstream::new(p.client().clone());
    js.delete_stream(p.stream_name()).await.unwrap();
    let _silent = p
        .client()
        .subscribe(p.build_subject("t", "x"))
        .await
        .unwrap();
    p.client().flush().await.unwrap();
    let short = event_core::PublishOptions {
        timeout: Some(Duration::from_secs(1)),
        ..event_core::PublishOptions::default()
    };
    let started = Instant::now();
    match p.publish_with_options(&event(&p, 2), &short).await {
        Err(Error::Timeout { elapsed, .. }) => assert_eq!(elapsed, Duration::from_secs(1)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_max_age_beyond_i64_nanoseconds_is_refused_not_truncated() {
    let server = server!("a_max_age_beyond_i64_nanoseconds_is_refused_not_truncated");
    // in i64 nanoseconds this wraps to about 200 s: events would expire
    // after minutes instead of centuries
    let config = NatsConfig {
        max_age_secs: 18_446_744_274,
        ..common::config(&server, "maxage")
    };
    match NatsProvider::connect(config).await {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "max_age_secs"),
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(p) => {
            let js = async_nats::jetstream::new(p.client().clone());
            let mut stream = js.get_stream(p.stream_name()).await.unwrap();
            let max_age = stream.info().await.unwrap().config.max_age;
            panic!("connected; the stream keeps events for {max_age:?}");
        }
    }
}

#[tokio::test]
async fn a_comma_separated_server_list_connects() {
    let server = server!("a_comma_separated_server_list_connects");
    // the first address refuses connections: the client goes on to the next
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for url in [
        format!("nats://127.0.0.1:{refused},{}", server.url()),
        format!("{}, nats://127.0.0.1:{refused}", server.url()),
    ] {
        let config = NatsConfig {
            url: url.clone(),
            ..common::config(&server, "list")
        };
        config.validate().unwrap();
        let p = NatsProvider::connect(config)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:?}"));
        assert_eq!(p.publish(&event(&p, 1)).await.unwrap(), 1, "{url}");
    }
}

#[tokio::test]
async fn a_deleted_stream_is_not_found_naming_the_stream() {
    let server = server!("a_deleted_stream_is_not_found_naming_the_stream");
    let p = NatsProvider::connect(common::config(&server, "gone"))
        .await
        .unwrap();
    p.publish(&event(&p, 1)).await.unwrap();
    let js = async_nats::jetstream::new(p.client().clone());
    js.delete_stream(p.stream_name()).await.unwrap();
    let filter = p.build_subject("t", "*");
    for (what, result) in [
        ("info", p.info().await.map(|_| ())),
        ("history", p.history(None, 3).await.map(|_| ())),
        (
            "filtered history",
            p.history(Some(&filter), 3).await.map(|_| ()),
        ),
        ("publish", p.publish(&event(&p, 2)).await.map(|_| ())),
        ("subscribe", p.subscribe(&filter).await.map(|_| ())),
        (
            "subscribe_durable",
            p.subscribe_durable("d", &filter).await.map(|_| ()),
        ),
    ] {
        match result {
            Err(Error::NotFound { kind, name }) => {
                assert_eq!((kind, name.as_str()), ("stream", p.stream_name()), "{what}")
            }
            other => panic!("{what}: expected NotFound, got {other:?}"),
        }
    }
    assert!(!p.health().await.unwrap());
}

#[tokio::test]
async fn a_limit_lowered_by_a_restart_is_reported_with_the_real_sizes() {
    let mut server = server!("a_limit_lowered_by_a_restart_is_reported_with_the_real_sizes");
    let p = NatsProvider::connect(common::config(&server, "lim"))
        .await
        .unwrap();
    assert_eq!(p.max_payload(), 65_536);
    server.set_extra("max_payload: 16384");
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.client().server_info().max_payload != 16_384 {
        assert!(Instant::now() < deadline, "no reconnection after restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut big = event(&p, 1);
    big.payload = json!({ "blob": "x".repeat(30_000) });
    let size = serde_json::to_vec(&big).unwrap().len();
    for attempt in [
        "first (the client refuses it)",
        "second (refused before sending)",
    ] {
        match p.publish(&big).await {
            Err(Error::PayloadTooLarge { size: got, max }) => {
                assert!(got >= size, "{attempt}: size {got} < {size}");
                assert_eq!(max, 16_384, "{attempt}");
            }
            other => panic!("{attempt}: expected PayloadTooLarge, got {other:?}"),
        }
    }
    assert_eq!(p.max_payload(), 16_384);
}

#[tokio::test]
async fn requests_while_disconnected_fail_at_once() {
    let mut server = server!("requests_while_disconnected_fail_at_once");
    let p = NatsProvider::connect(common::config(&server, "down2"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    server.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.health().await.unwrap() {
        assert!(Instant::now() < deadline, "the loss was not noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the request timeout is 5 s: each must answer well before it
    let started = Instant::now();
    let results = [
        ("info", p.info().await.map(|_| ())),
        ("history", p.history(None, 3).await.map(|_| ())),
        ("unsubscribe", p.unsubscribe("d").await),
        ("subscribe", p.subscribe(&filter).await.map(|_| ())),
        (
            "subscribe_durable",
            p.subscribe_durable("d", &filter).await.map(|_| ()),
        ),
        ("publish", p.publish(&event(&p, 0)).await.map(|_| ())),
    ];
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for (what, result) in results {
        match result {
            Err(e @ Error::Connection(_)) => assert!(e.is_transient(), "{what}"),
            other => panic!("{what}: expected Connection, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_durable_deleted_and_created_again_elsewhere_ends_a_waiting_subscription() {
    // another process deletes the durable and creates one of the same name
    // while this subscription waits on a pull: the pull ends with "409
    // Consumer Deleted", and the subscription must end, not go on reading
    // the new durable (a lookup by name finds that one)
    let server = server!("a_durable_deleted_and_created_again_elsewhere");
    let config = common::config(&server, "drce");
    let here = NatsProvider::connect(config.clone()).await.unwrap();
    let elsewhere = NatsProvider::connect(config).await.unwrap();
    let filter = here.category_subject("t");
    let mut old = here.subscribe_durable("shared", &filter).await.unwrap();
    here.publish(&event(&here, 0)).await.unwrap();
    let first = old.next_manual_ack().await.unwrap().unwrap();
    first.ack().await.unwrap();
    // a call that gives up leaves its pull open (cancel safety): the
    // server's "409 Consumer Deleted" for it waits until the next call,
    // by which time a durable of the same name exists again
    assert!(
        tokio::time::timeout(Duration::from_millis(300), old.next_manual_ack())
            .await
            .is_err()
    );
    elsewhere.unsubscribe("shared").await.unwrap();
    let mut new = elsewhere
        .subscribe_durable("shared", &filter)
        .await
        .unwrap();
    elsewhere.publish(&event(&elsewhere, 1)).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(20), old.next_manual_ack()).await;
    match waited {
        Ok(Err(Error::NotFound { .. }) | Ok(None)) => {}
        Ok(Ok(Some(p))) => panic!(
            "the deleted durable's subscription took event {} from the new durable",
            p.received.event.payload["n"]
        ),
        other => panic!("the deleted durable's subscription: {other:?}"),
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        let p = tokio::time::timeout(Duration::from_secs(10), new.next_manual_ack())
            .await
            .expect("the new durable delivers")
            .unwrap()
            .unwrap();
        got.push(p.received.event.payload["n"].as_u64().unwrap());
        p.ack().await.unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, vec![0, 1]);
}

#[tokio::test]
async fn a_durable_deleted_here_ends_its_idle_subscriptions() {
    // no pull of the old subscription is open when its durable is deleted
    // and created again: its next pull would go to the new durable by name
    let server = server!("a_durable_deleted_here_ends_its_idle_subscriptions");
    let p = NatsProvider::connect(common::config(&server, "ddis"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let mut old = p.subscribe_durable("again", &filter).await.unwrap();
    p.unsubscribe("again").await.unwrap();
    let mut new = p.subscribe_durable("again", &filter).await.unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), old.next_manual_ack()).await {
        Ok(Err(Error::NotFound { .. }) | Ok(None)) => {}
        Ok(Ok(Some(_))) => panic!("the deleted durable's subscription read the new durable"),
        other => panic!("the deleted durable's subscription: {other:?}"),
    }
    let got = tokio::time::timeout(Duration::from_secs(10), new.next_manual_ack())
        .await
        .expect("the new durable delivers")
        .unwrap()
        .unwrap();
    assert_eq!(got.received.event.payload["n"], 0);
}

#[tokio::test]
async fn a_durable_subscription_waiting_on_a_pull_survives_a_graceful_server_restart() {
    // a graceful shutdown (SIGTERM: a rolling upgrade) stops the server's
    // consumers; the subscription must go on with its durable after the
    // restart, not take the stop for a deletion
    let mut server = server!("a_durable_subscription_waiting_on_a_pull_survives_a_graceful");
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "graceful")
    };
    let p = NatsProvider::connect(config).await.unwrap();
    let mut sub = p
        .subscribe_durable("keep", &p.category_subject("t"))
        .await
        .unwrap();
    // a call that gives up leaves its pull open at the server
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next_manual_ack())
            .await
            .is_err()
    );
    server.terminate();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seq = publish_once_back(&p, &event(&p, 1), deadline).await;
    let got = loop {
        assert!(Instant::now() < deadline, "the durable did not resume");
        match tokio::time::timeout(Duration::from_secs(30), sub.next_manual_ack()).await {
            Ok(Ok(Some(got))) => break got,
            Ok(Err(e)) if e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("after a graceful restart: {other:?}"),
        }
    };
    assert_eq!(got.received.sequence, seq);
    got.ack().await.unwrap();
}

/// The 255-byte limit counts bytes, as JetStream does: a name of 255 bytes
/// in 128 characters (`é` is two) works end to end with the longest
/// durable name and a long filter (its API and acknowledgement subjects
/// fit the protocol's control line), and one of 256 bytes in 128
/// characters is `InvalidConfig` on `stream_name` before any I/O.
#[tokio::test]
async fn the_stream_name_limit_counts_bytes_and_the_longest_name_works() {
    let Some(server) =
        NatsServer::start("the_stream_name_limit_counts_bytes_and_the_longest_name_works")
    else {
        return;
    };
    let mut config = common::config(&server, "bytename");
    config.stream_name = format!("{}a", "é".repeat(127));
    assert_eq!(config.stream_name.len(), 255);
    let p = NatsProvider::connect(config).await.unwrap();
    let category = "c".repeat(900);
    let filter = p.category_subject(&category);
    let durable = "d".repeat(event_core::subject::MAX_CONSUMER_NAME_LEN);
    let all = SubscribeOptions {
        deliver_policy: DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options(&durable, &filter, &all)
        .await
        .unwrap();
    let event = Event::new(
        p.build_subject(&category, "t"),
        &category,
        "long",
        "test",
        json!({}),
    );
    p.publish(&event).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_secs(10), sub.next_manual_ack())
        .await
        .expect("a delivery within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(pending.event().id, event.id);
    pending.ack().await.unwrap();
    let history = p.history(Some(&filter), 5).await.unwrap();
    assert_eq!(history.len(), 1);
    sub.close().await.unwrap();
    p.unsubscribe(&durable).await.unwrap();

    let mut config = common::config(&server, "bytename");
    config.stream_name = "é".repeat(128);
    match NatsProvider::connect(config).await {
        Err(Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "stream_name", "{reason}");
            assert!(reason.contains("256 bytes"), "{reason}");
        }
        other => panic!("256 bytes in 128 characters: expected InvalidConfig, got {other:?}"),
    }
}
