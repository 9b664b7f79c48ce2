//! Subscriptions under server faults, against a real `nats-server`:
//! graceful shutdowns, restarts and pauses while a subscription waits,
//! holds or settles deliveries.

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use event_core::{Event, EventProvider, Subscription};
use event_nats::{NatsConfig, NatsProvider};
use std::time::{Duration, Instant};

macro_rules! server {
    ($name:expr) => {
        match NatsServer::start($name) {
            Some(s) => s,
            None => return,
        }
    };
}

fn event(p: &NatsProvider, n: u64) -> Event {
    common::numbered_event(p, "t", n)
}

fn config(server: &NatsServer, tag: &str) -> NatsConfig {
    NatsConfig {
        request_timeout_secs: 2,
        ..common::config(server, tag)
    }
}

/// Publishes `event` once the server is back, retrying transient errors.
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

/// The next manual delivery, riding out transient errors until `deadline`.
async fn next_through_faults(
    sub: &mut Box<dyn Subscription>,
    deadline: Instant,
) -> event_core::PendingEvent {
    loop {
        assert!(Instant::now() < deadline, "no delivery before the deadline");
        match tokio::time::timeout(Duration::from_secs(30), sub.next_manual_ack()).await {
            Ok(Ok(Some(got))) => return got,
            Ok(Err(e)) if e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("next_manual_ack: {other:?}"),
        }
    }
}

/// A subscription whose pull request was open at the server while its
/// caller was busy with an event (not in a call, so nothing was waiting
/// for the connection's loss) when the server crashed and restarted: the
/// server forgot the request, and the next call waited for it until the
/// provider gave up on it, 7 s after it was sent (2 s past its expiry;
/// 4.6 s after the event published once the server was back had been
/// stored), before pulling again. The subscription now knows the
/// connection was lost since it sent the pull and pulls again at once: the
/// event comes before the forgotten request could have expired.
#[tokio::test]
async fn a_pull_forgotten_by_a_restart_while_the_caller_was_busy_is_not_waited_for() {
    let mut server = server!("a_pull_forgotten_by_a_restart_while_the_caller_was_busy");
    let p = NatsProvider::connect(config(&server, "fgt")).await.unwrap();
    let mut sub = p
        .subscribe_durable("d", &p.category_subject("t"))
        .await
        .unwrap();
    for n in 0..9 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    // eight pulls of one (the warm-up), then a pull of two that finds
    // event 8 and stays open at the server for one more
    for n in 0..8 {
        let got = sub.next_manual_ack().await.unwrap().unwrap();
        assert_eq!(got.received.event.payload["n"], n);
        got.ack().await.unwrap();
    }
    let opened = Instant::now();
    let busy_with = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(busy_with.received.event.payload["n"], 8);
    // the caller handles event 8 meanwhile; the server crashes (a graceful
    // shutdown ends the open pull with a status, which the subscription
    // receives)
    server.kill();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    publish_once_back(&p, &event(&p, 9), deadline).await;
    busy_with.ack().await.unwrap();
    // the forgotten request expires 5 s after it was sent (the provider
    // gives up on it 2 s later)
    let expiry = opened + Duration::from_secs(5);
    let discriminates = Instant::now() < expiry;
    if !discriminates {
        eprintln!("the restart took too long to tell whether the forgotten pull is waited for");
    }
    // a killed server may not have written the acks of the events before
    // it yet: those may come again first (at-least-once)
    let got = loop {
        let got = next_through_faults(&mut sub, deadline).await;
        if got.received.event.payload["n"] == 9 {
            break got;
        }
        got.ack().await.unwrap();
    };
    let arrived = Instant::now();
    if !discriminates {
        return;
    }
    assert!(
        arrived < expiry,
        "the call waited {:?} past the forgotten pull's expiry for it",
        arrived - expiry
    );
    got.ack().await.unwrap();
}
