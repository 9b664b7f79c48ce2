//! The provider when the server misbehaves on the publish side: a server
//! that stops answering (SIGSTOP), stream limits that refuse events, a
//! stream changed behind the provider's back.

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use event_core::{Error, Event, EventProvider, PublishOptions};
use event_nats::{NatsConfig, NatsOptions, NatsProvider};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

macro_rules! server {
    ($name:expr) => {
        match NatsServer::start($name) {
            Some(s) => s,
            None => return,
        }
    };
}

fn event(p: &NatsProvider, n: u64, blob: usize) -> Event {
    Event::new(
        p.build_subject("t", "x"),
        "t",
        format!("e{n}"),
        "test",
        json!({ "n": n, "blob": "x".repeat(blob) }),
    )
}

/// Publishes `events` again until every one is acknowledged (the server
/// is back), then checks that the stream holds each exactly once.
async fn retry_until_stored_once(p: &NatsProvider, events: &[Event]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let results = p.publish_batch(events).await.unwrap();
        if results.iter().all(Result::is_ok) {
            break;
        }
        assert!(Instant::now() < deadline, "never stored: {results:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = p.info().await.unwrap();
    assert_eq!(info.messages, events.len() as u64, "{info:?}");
    let stored: BTreeSet<String> = p
        .history(None, events.len() + 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stored.len(), events.len());
}

#[tokio::test]
async fn a_batch_to_a_stalled_server_ends_within_its_timeout_not_one_per_window() {
    let server = server!("a_batch_to_a_stalled_server_ends_within_its_timeout_not_one_per_window");
    let config = NatsConfig {
        request_timeout_secs: 1,
        ..common::config(&server, "stall")
    };
    let options = NatsOptions {
        max_inflight_acks: 8,
        ..NatsOptions::default()
    };
    let p = NatsProvider::connect_with(config, options).await.unwrap();
    let events: Vec<Event> = (0..80).map(|n| event(&p, n, 10)).collect();
    server.pause();
    // a window of 8 acks, each waited for 1 s once the server stopped
    // answering, was ten seconds for ten windows
    let started = Instant::now();
    let results = tokio::time::timeout(Duration::from_secs(30), p.publish_batch(&events))
        .await
        .expect("the batch hung")
        .unwrap();
    let elapsed = started.elapsed();
    server.resume();
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(results.len(), events.len());
    for r in &results {
        match r {
            Err(e @ Error::Timeout { .. }) => assert!(e.is_transient()),
            other => panic!("expected Timeout, got {other:?}"),
        }
    }
    // what was sent is stored once the server runs again; the retry with
    // the same ids stores the rest and deduplicates the rest
    retry_until_stored_once(&p, &events).await;
}

#[tokio::test]
async fn publishes_blocked_by_a_full_client_buffer_end_within_their_timeouts() {
    let server = server!("publishes_blocked_by_a_full_client_buffer_end_within_their_timeouts");
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "full")
    };
    // no ack is waited for before everything is written: the stalled
    // server's socket fills, then the client's command queue (2048)
    let options = NatsOptions {
        max_inflight_acks: 4096,
        ..NatsOptions::default()
    };
    let p = NatsProvider::connect_with(config, options).await.unwrap();
    let events: Vec<Event> = (0..2600).map(|n| event(&p, n, 16_000)).collect();
    server.pause();
    let started = Instant::now();
    let results = tokio::time::timeout(Duration::from_secs(30), p.publish_batch(&events))
        .await
        .expect("the batch hung: each event waited out the timeout for room in the queue")
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(Error::Timeout { .. }))),
        "{:?}",
        results
            .iter()
            .find(|r| !matches!(r, Err(Error::Timeout { .. })))
    );
    // the queue is still full: a single publish ends at its own timeout,
    // not at the longer request timeout
    let short = PublishOptions {
        timeout: Some(Duration::from_millis(300)),
        ..PublishOptions::default()
    };
    let started = Instant::now();
    match p.publish_with_options(&event(&p, 9_999, 10), &short).await {
        Err(Error::Timeout { elapsed, .. }) => assert_eq!(elapsed, Duration::from_millis(300)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    server.resume();
    retry_until_stored_once(&p, &events).await;
}
