//! What an operator reads when the NATS server goes away for a while and
//! comes back: one warning when the connection is lost and one when it is
//! back, not one per reconnection attempt. Captured by a recording
//! subscriber; kept in its own test binary (the subscriber is global).

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use common::logs::{install, lines, lines_with};
use event_nats::NatsProvider;
use std::time::{Duration, Instant};
use tracing::Level;

#[tokio::test]
async fn an_outage_logs_two_warnings_however_many_reconnection_attempts() {
    install();
    let Some(mut server) = NatsServer::start("connection_log") else {
        return;
    };
    let provider = NatsProvider::connect(common::config(&server, "connlog"))
        .await
        .unwrap();
    server.kill();
    // async-nats retries at once, then after 2, 4, 8 ... ms (at most 4 s):
    // about a dozen attempts in 3 s
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    let start = Instant::now();
    while !provider.is_connected() {
        assert!(start.elapsed() < Duration::from_secs(20), "no reconnection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the callback runs in async-nats's event task: let it log
    tokio::time::sleep(Duration::from_millis(200)).await;

    // async-nats logs every connection event itself (INFO, `event: ...`):
    // the failed attempts it reported to the callback
    let attempts = lines("async_nats", Level::INFO)
        .into_iter()
        .filter(|l| l.contains("event: client error"))
        .count();
    assert!(
        attempts >= 3,
        "expected several failed attempts, saw {attempts}"
    );
    let warns = lines("event_nats", Level::WARN);
    assert_eq!(warns.len(), 2, "{attempts} attempts: {warns:#?}");
    assert!(warns[0].contains("connection lost"), "{warns:?}");
    assert!(warns[1].contains("re-established"), "{warns:?}");
    assert!(
        warns[1].contains(&format!("failed_attempts={attempts}")),
        "{warns:?}"
    );
    let debug = lines("event_nats", Level::DEBUG);
    let at_debug = debug
        .iter()
        .filter(|l| l.contains("reconnection attempt failed"))
        .count();
    assert_eq!(at_debug, attempts, "{debug:#?}");
    assert!(lines("event_nats", Level::ERROR).is_empty());
    // async-nats itself logs each connection event at INFO (target
    // `async_nats`, see docs/deployment.md), never above
    assert!(lines("async_nats", Level::WARN).is_empty());
}

#[tokio::test]
async fn dropping_the_provider_closes_the_connection_without_a_warning() {
    install();
    let Some(server) = NatsServer::start("connection_log_drop") else {
        return;
    };
    let provider = NatsProvider::connect(common::config(&server, "conndrop"))
        .await
        .unwrap();
    let clone = provider.clone();
    drop(provider);
    // a clone keeps the connection
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(clone.is_connected());
    // a normal exit: the last handle goes
    drop(clone);
    let url = server.url();
    let start = Instant::now();
    let closed = loop {
        let closed: Vec<_> = lines_with("event_nats", "connection closed")
            .into_iter()
            .filter(|(_, line)| line.contains(&url))
            .collect();
        if !closed.is_empty() {
            break closed;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no close logged for {url}: {:#?}",
            lines_with("event_nats", "closed")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(closed.len(), 1, "{closed:#?}");
    assert!(
        closed[0].0 == Level::DEBUG || closed[0].0 == Level::INFO,
        "a close the application caused is not a warning: {closed:?}"
    );
    assert!(closed[0].1.contains("dropped"), "says why: {closed:?}");
    // nor is anything else about this connection
    let warned: Vec<_> = lines_with("event_nats", "closed")
        .into_iter()
        .filter(|(l, _)| *l <= Level::WARN)
        .map(|(_, line)| line)
        .collect();
    assert!(warned.is_empty(), "{warned:#?}");
}
