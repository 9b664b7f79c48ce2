//! Connecting to a stream that exists already (created by ops, or by
//! another service sharing it): by default the provider adopts it as it is
//! and changes only what it needs to work; `ExistingStream::Update` applies
//! the config in place; `ExistingStream::Verify` refuses any difference.
//! Kept in its own test binary: it records the log with a global
//! subscriber.

#![allow(clippy::unwrap_used)]

mod common;

use async_nats::jetstream::stream::Config;
use common::NatsServer;
use common::logs::{install, lines};
use event_core::Error;
use event_core::{Event, EventProvider};
use event_nats::{ExistingStream, NatsConfig, NatsOptions, NatsProvider};
use std::time::Duration;
use tracing::Level;

macro_rules! server {
    ($name:expr) => {
        match NatsServer::start($name) {
            Some(s) => s,
            None => return,
        }
    };
}

/// The WARN lines naming `stream` (the tests of this binary run in
/// parallel, each on its own stream).
fn warnings_about(stream: &str) -> Vec<String> {
    lines("event_nats", Level::WARN)
        .into_iter()
        .filter(|text| text.contains(stream))
        .collect()
}

/// Service A: creates the shared stream with `max_events: 1000`,
/// `max_age_secs: 0` and publishes 500 events.
async fn service_a(server: &NatsServer, tag: &str) -> (NatsConfig, NatsProvider) {
    let config = NatsConfig {
        max_events: 1000,
        max_age_secs: 0,
        ..common::config(server, tag)
    };
    let a = NatsProvider::connect(config.clone()).await.unwrap();
    let events: Vec<Event> = (0..500)
        .map(|n| common::numbered_event(&a, "a", n))
        .collect();
    for result in a.publish_batch(&events).await.unwrap() {
        result.unwrap();
    }
    assert_eq!(a.info().await.unwrap().messages, 500);
    (config, a)
}

/// Service B's config: the same stream, its own prefix, `max_events: 100`
/// and every other limit at its default (7 days).
fn service_b_config(a: &NatsConfig) -> NatsConfig {
    let (_, prefix) = common::unique("b");
    NatsConfig {
        url: a.url.clone(),
        stream_name: a.stream_name.clone(),
        subject_prefix: prefix,
        max_events: 100,
        ..NatsConfig::default()
    }
}

/// The stream's settings, read with a plain client.
async fn stream_config(config: &NatsConfig) -> Config {
    let client = async_nats::connect(&config.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&config.stream_name).await.unwrap();
    stream.info().await.unwrap().config.clone()
}

/// The reviewer's repro: B connecting with smaller (default) limits used to
/// cut A's stream to 100 events and set a 7-day max age, logging only at
/// INFO. By default the stream keeps A's events and A's limits, and B is
/// told at WARN what differs and how to apply it.
#[tokio::test]
async fn a_service_with_smaller_limits_keeps_the_shared_streams_events_and_limits() {
    install();
    let server =
        server!("a_service_with_smaller_limits_keeps_the_shared_streams_events_and_limits");
    let (a_config, a) = service_a(&server, "adopt").await;
    let b_config = service_b_config(&a_config);
    let b = NatsProvider::connect(b_config.clone()).await.unwrap();

    let info = a.info().await.unwrap();
    assert_eq!(
        info.messages, 500,
        "events deleted by B's connect: {info:?}"
    );
    assert_eq!(info.first_sequence, 1, "{info:?}");
    let stream = stream_config(&a_config).await;
    assert_eq!(stream.max_messages, 1000, "A's max_events changed");
    assert_eq!(stream.max_age, Duration::ZERO, "A's max_age changed");

    // B works on the stream as it is
    let sequence = b
        .publish(&common::numbered_event(&b, "b", 1))
        .await
        .unwrap();
    assert_eq!(sequence, 501);
    assert_eq!(b.history(None, 10).await.unwrap().len(), 1);

    let warnings = warnings_about(&a_config.stream_name);
    for (setting, stream_value, config_value) in [
        ("max_events", "1000", "100"),
        ("max_age_secs", "unlimited", "604800"),
    ] {
        let line = warnings
            .iter()
            .find(|line| line.contains(setting))
            .unwrap_or_else(|| panic!("no WARN naming {setting}: {warnings:#?}"));
        for part in [stream_value, config_value, "Update"] {
            assert!(line.contains(part), "{setting}: {part} missing from {line}");
        }
    }
    assert_eq!(
        warnings.len(),
        2,
        "one WARN per differing setting: {warnings:#?}"
    );
}

/// `ExistingStream::Update` applies the config in place, as connecting did
/// before: lowering `max_events` deletes the events beyond it.
#[tokio::test]
async fn update_applies_the_config_to_the_existing_stream() {
    let server = server!("update_applies_the_config_to_the_existing_stream");
    let (a_config, a) = service_a(&server, "update").await;
    let b_config = service_b_config(&a_config);
    let options = NatsOptions {
        existing_stream: ExistingStream::Update,
        ..NatsOptions::default()
    };
    NatsProvider::connect_with(b_config.clone(), options)
        .await
        .unwrap();
    let info = a.info().await.unwrap();
    assert_eq!(info.messages, 100, "{info:?}");
    assert_eq!(info.first_sequence, 401, "{info:?}");
    let stream = stream_config(&a_config).await;
    assert_eq!(stream.max_messages, 100);
    assert_eq!(stream.max_age, Duration::from_secs(604_800));
    assert!(
        stream
            .subjects
            .contains(&format!("{}.>", b_config.subject_prefix)),
        "{:?}",
        stream.subjects
    );
}

/// `ExistingStream::Verify` refuses any difference, naming each, and
/// changes nothing (not even the subject the provider would add); a stream
/// that matches is used.
#[tokio::test]
async fn verify_refuses_a_different_stream_and_changes_nothing() {
    let server = server!("verify_refuses_a_different_stream_and_changes_nothing");
    let (a_config, a) = service_a(&server, "verify").await;
    let before = stream_config(&a_config).await;
    let verify = NatsOptions {
        existing_stream: ExistingStream::Verify,
        ..NatsOptions::default()
    };
    let b_config = service_b_config(&a_config);
    match NatsProvider::connect_with(b_config.clone(), verify.clone()).await {
        Err(Error::Conflict { resource, reason }) => {
            assert!(resource.contains(&a_config.stream_name), "{resource}");
            for named in [
                "max_events: stream has 1000, config wants 100",
                "max_age_secs: stream has unlimited, config wants 604800",
                "subjects",
                &b_config.subject_prefix,
                "Verify",
            ] {
                assert!(reason.contains(named), "{named} missing from {reason}");
            }
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let after = stream_config(&a_config).await;
    assert_eq!(after, before, "Verify changed the stream");
    assert_eq!(a.info().await.unwrap().messages, 500);

    // the same config as the stream's: used as it is
    let same = NatsProvider::connect_with(a_config.clone(), verify)
        .await
        .expect("a matching stream passes Verify");
    assert_eq!(same.info().await.unwrap().messages, 500);
    assert_eq!(stream_config(&a_config).await, before);
}

/// Under the default, the provider still changes what it needs to work on
/// a stream ops created: its subject is added and direct gets turned on,
/// while the stream's limits, dedup window and discard policy stay.
#[tokio::test]
async fn adopt_adds_the_subject_and_turns_on_direct_gets_but_keeps_the_limits() {
    let server = server!("adopt_adds_the_subject_and_turns_on_direct_gets_but_keeps_the_limits");
    let config = common::config(&server, "ops");
    let client = async_nats::connect(&config.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let (_, other_prefix) = common::unique("other");
    let ops = Config {
        name: config.stream_name.clone(),
        subjects: vec![format!("{other_prefix}.>")],
        max_messages: 50,
        max_bytes: 1 << 20,
        max_age: Duration::from_secs(3600),
        duplicate_window: Duration::from_secs(30),
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        allow_direct: false,
        ..Config::default()
    };
    js.create_stream(ops.clone()).await.unwrap();

    let p = NatsProvider::connect(config.clone()).await.unwrap();
    let stream = stream_config(&config).await;
    assert_eq!(
        stream.subjects,
        vec![
            format!("{other_prefix}.>"),
            format!("{}.>", config.subject_prefix)
        ]
    );
    assert!(stream.allow_direct, "direct gets not turned on");
    assert_eq!(stream.max_messages, 50);
    assert_eq!(stream.max_bytes, 1 << 20);
    assert_eq!(stream.max_age, Duration::from_secs(3600));
    assert_eq!(stream.duplicate_window, Duration::from_secs(30));
    assert_eq!(
        stream.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
    p.publish(&common::numbered_event(&p, "x", 1))
        .await
        .unwrap();
    assert_eq!(p.history(None, 10).await.unwrap().len(), 1);
}

/// A server whose JetStream is not clustered accepts an update of a stream
/// to three replicas, and then refuses every consumer that takes the
/// stream's replicas (every ephemeral subscription). `ExistingStream::Update`
/// with `replicas: 3` is refused instead, naming the option, and the stream
/// is left as it was: subscriptions keep working.
#[tokio::test]
async fn more_replicas_on_a_single_server_are_refused_not_applied() {
    let server = server!("more_replicas_on_a_single_server_are_refused_not_applied");
    more_replicas_are_refused(&server).await;
    // a server whose config names a cluster it does not run announces the
    // name in its INFO: still a single server for JetStream
    let named = match NatsServer::start_with(
        "more_replicas_on_a_single_server_are_refused_not_applied_named",
        "cluster { name: \"named\" }",
    ) {
        Some(s) => s,
        None => return,
    };
    more_replicas_are_refused(&named).await;
}

async fn more_replicas_are_refused(server: &NatsServer) {
    let config = common::config(server, "replicas");
    let one = NatsProvider::connect(config.clone()).await.unwrap();
    let refused = NatsProvider::connect_with(
        config.clone(),
        NatsOptions {
            replicas: 3,
            existing_stream: ExistingStream::Update,
            ..NatsOptions::default()
        },
    )
    .await
    .expect_err("3 replicas on a server without a cluster");
    assert!(
        matches!(&refused, Error::InvalidConfig { field, .. } if field == "replicas")
            && refused.to_string().contains("NatsOptions::replicas is 3")
            && refused.to_string().contains("without a cluster"),
        "{refused}"
    );
    assert_eq!(stream_config(&config).await.num_replicas, 1);
    // an ephemeral subscription still works
    let mut sub = one
        .subscribe(&format!("{}.>", config.subject_prefix))
        .await
        .unwrap();
    let event = common::numbered_event(&one, "r", 1);
    one.publish(&event).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.event.id, event.id);
}
