//! A stream replaced under its subscriptions: the server restarted on an
//! empty store, or the stream deleted and created again (another provider
//! connecting creates it). The new stream's sequences start again at 1, so
//! a subscription must not resume at the old stream's position there: that
//! skipped every event of the new stream up to the old last sequence,
//! silently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NatsServer, numbered_event};
use event_core::{DeliverPolicy, Error, EventProvider, SubscribeOptions, Subscription};
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

/// What a subscription gave over a while: its events (`n`) in order, and
/// the errors in between.
#[derive(Debug, Default)]
struct Outcome {
    events: Vec<u64>,
    errors: Vec<String>,
}

/// Reads `sub` (acking each event) until it handed out `want` events, it
/// ended, `stop` says so, or `limit` passed; errors are recorded and the
/// reading goes on after a short pause.
async fn read(
    sub: &mut Box<dyn Subscription>,
    want: usize,
    limit: Duration,
    stop: impl Fn(&Error) -> bool,
) -> Outcome {
    let mut outcome = Outcome::default();
    let deadline = Instant::now() + limit;
    while outcome.events.len() < want && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next_manual_ack()).await {
            Err(_) | Ok(Ok(None)) => break,
            Ok(Ok(Some(pending))) => {
                outcome
                    .events
                    .push(pending.received.event.payload["n"].as_u64().unwrap());
                pending.ack().await.unwrap();
            }
            Ok(Err(e)) => {
                let end = stop(&e);
                outcome.errors.push(e.to_string());
                if end {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    outcome
}

async fn publish(p: &NatsProvider, numbers: std::ops::Range<u64>) {
    for n in numbers {
        p.publish(&numbered_event(p, "t", n)).await.unwrap();
    }
}

fn config(server: &NatsServer, tag: &str) -> NatsConfig {
    NatsConfig {
        request_timeout_secs: 2,
        ..common::config(server, tag)
    }
}

async fn wait_connected(p: &NatsProvider) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !p.is_connected() {
        assert!(Instant::now() < deadline, "no reconnection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all() -> SubscribeOptions {
    SubscribeOptions {
        deliver_policy: DeliverPolicy::All,
        ..SubscribeOptions::default()
    }
}

/// How the stream is replaced.
#[derive(Debug, Clone, Copy)]
enum Replace {
    /// SIGKILL, and a restart on an empty store.
    EmptyStore,
    /// An administrator deletes the stream.
    Deleted,
}

async fn replace(how: Replace, server: &mut NatsServer, p: &NatsProvider) {
    match how {
        Replace::EmptyStore => {
            server.restart_with_empty_store();
            wait_connected(p).await;
        }
        Replace::Deleted => {
            let js = async_nats::jetstream::new(p.client().clone());
            js.delete_stream(p.stream_name()).await.unwrap();
        }
    }
}

/// The old stream had `old` events, all read; the new one gets `new`
/// (numbered from 100): the ephemeral subscription reads every one of them,
/// in order.
async fn ephemeral_reads_the_new_stream_from_its_start(
    test: &str,
    how: Replace,
    old: u64,
    new: u64,
) {
    let Some(mut server) = NatsServer::start(test) else {
        return;
    };
    let config = config(&server, "repl");
    let p = NatsProvider::connect(config.clone()).await.unwrap();
    let mut sub = p
        .subscribe_with_options(&p.category_subject("t"), &all())
        .await
        .unwrap();
    publish(&p, 0..old).await;
    let before = read(&mut sub, old as usize, Duration::from_secs(10), |_| false).await;
    assert_eq!(before.events, (0..old).collect::<Vec<_>>());

    replace(how, &mut server, &p).await;
    // while the stream is missing: NotFound naming it
    let missing = read(&mut sub, 1, Duration::from_secs(20), |_| true).await;
    assert!(
        missing.events.is_empty()
            && missing.errors.len() == 1
            && missing.errors[0].contains(&format!("stream not found: {}", p.stream_name())),
        "{how:?}: {missing:?}"
    );
    // another provider (or this service started again) creates the stream
    let p2 = NatsProvider::connect(config).await.unwrap();
    publish(&p2, 100..100 + new).await;
    let after = read(&mut sub, new as usize, Duration::from_secs(40), |_| false).await;
    assert_eq!(
        after.events,
        (100..100 + new).collect::<Vec<_>>(),
        "{how:?}: the ephemeral skipped events of the new stream ({} errors meanwhile: {:?})",
        after.errors.len(),
        after.errors
    );
    // and it goes on with the new stream's later events
    publish(&p2, 100 + new..101 + new).await;
    let later = read(&mut sub, 1, Duration::from_secs(10), |_| false).await;
    assert_eq!(later.events, [100 + new], "{later:?}");
    sub.close().await.unwrap();
}

#[tokio::test]
async fn an_ephemeral_reads_a_stream_recreated_after_an_empty_store_restart_from_its_start() {
    ephemeral_reads_the_new_stream_from_its_start(
        "an_ephemeral_reads_a_stream_recreated_after_an_empty_store_restart_from_its_start",
        Replace::EmptyStore,
        50,
        60,
    )
    .await;
}

#[tokio::test]
async fn an_ephemeral_reads_a_stream_deleted_and_created_again_from_its_start() {
    ephemeral_reads_the_new_stream_from_its_start(
        "an_ephemeral_reads_a_stream_deleted_and_created_again_from_its_start",
        Replace::Deleted,
        10,
        20,
    )
    .await;
}

/// Fewer events in the new stream than the subscription read from the old
/// one: nothing of the new stream is skipped either.
#[tokio::test]
async fn an_ephemeral_reads_a_shorter_new_stream_from_its_start() {
    ephemeral_reads_the_new_stream_from_its_start(
        "an_ephemeral_reads_a_shorter_new_stream_from_its_start",
        Replace::Deleted,
        30,
        5,
    )
    .await;
}

/// A durable lives in its stream: replaced with it, it is gone. Its
/// subscription says so (`NotFound` naming the consumer) instead of
/// reading on from a position of the old stream, and subscribing again
/// creates the durable on the new stream, which reads it from its start.
async fn durable_on_a_replaced_stream(test: &str, how: Replace) {
    let Some(mut server) = NatsServer::start(test) else {
        return;
    };
    let config = config(&server, "repld");
    let p = NatsProvider::connect(config.clone()).await.unwrap();
    let filter = p.category_subject("t");
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &all())
        .await
        .unwrap();
    publish(&p, 0..50).await;
    let before = read(&mut sub, 50, Duration::from_secs(10), |_| false).await;
    assert_eq!(before.events, (0..50).collect::<Vec<_>>());

    replace(how, &mut server, &p).await;
    let p2 = NatsProvider::connect(config).await.unwrap();
    publish(&p2, 100..160).await;
    let after = read(&mut sub, 60, Duration::from_secs(30), |e| {
        matches!(
            e,
            Error::NotFound {
                kind: "consumer",
                ..
            }
        )
    })
    .await;
    println!("{how:?}: old durable subscription: {after:?}");
    assert!(
        after.events.is_empty(),
        "{how:?}: the old durable subscription read on: {after:?}"
    );
    assert!(
        after
            .errors
            .last()
            .is_some_and(|e| e.contains("consumer not found: d")),
        "{how:?}: {after:?}"
    );
    // and stays ended
    let again = read(&mut sub, 1, Duration::from_secs(3), |_| true).await;
    assert!(
        again.events.is_empty() && again.errors.len() == 1,
        "{how:?}: {again:?}"
    );
    let mut resubscribed = p
        .subscribe_durable_with_options("d", &filter, &all())
        .await
        .unwrap();
    let all_new = read(&mut resubscribed, 60, Duration::from_secs(10), |_| false).await;
    assert_eq!(
        all_new.events,
        (100..160).collect::<Vec<_>>(),
        "{how:?}: {all_new:?}"
    );
}

#[tokio::test]
async fn a_durable_on_a_stream_lost_with_an_empty_store_is_not_found_then_reads_the_new_one() {
    durable_on_a_replaced_stream(
        "a_durable_on_a_stream_lost_with_an_empty_store_is_not_found_then_reads_the_new_one",
        Replace::EmptyStore,
    )
    .await;
}

#[tokio::test]
async fn a_durable_on_a_deleted_stream_is_not_found_then_reads_the_new_one() {
    durable_on_a_replaced_stream(
        "a_durable_on_a_deleted_stream_is_not_found_then_reads_the_new_one",
        Replace::Deleted,
    )
    .await;
}

/// The same stream, changed (its settings updated) and restarted, is not a
/// replaced one: an ephemeral the server lost resumes after the last event
/// it handed out instead of reading the stream again from its start.
#[tokio::test]
async fn an_ephemeral_lost_on_a_changed_and_restarted_stream_resumes_where_it_was() {
    let mut server =
        server!("an_ephemeral_lost_on_a_changed_and_restarted_stream_resumes_where_it_was");
    let p = NatsProvider::connect(config(&server, "same"))
        .await
        .unwrap();
    let mut sub = p
        .subscribe_with_options(&p.category_subject("t"), &all())
        .await
        .unwrap();
    publish(&p, 0..5).await;
    assert_eq!(
        read(&mut sub, 5, Duration::from_secs(10), |_| false)
            .await
            .events,
        [0, 1, 2, 3, 4]
    );
    let js = async_nats::jetstream::new(p.client().clone());
    let mut stream = js.get_stream(p.stream_name()).await.unwrap();
    let mut settings = stream.info().await.unwrap().config.clone();
    settings.max_messages = 1_000;
    js.update_stream(&settings).await.unwrap();
    server.restart();
    wait_connected(&p).await;
    // the server lost the consumer (or an administrator deleted it)
    use futures_util::TryStreamExt as _;
    let js = async_nats::jetstream::new(p.client().clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    let (stream, names) = loop {
        // JetStream answers a moment after the reconnection
        let attempt = async {
            let stream = js.get_stream(p.stream_name()).await.ok()?;
            let names: Vec<String> = stream.consumer_names().try_collect().await.ok()?;
            Some((stream, names))
        };
        if let Some(found) = attempt.await {
            break found;
        }
        assert!(Instant::now() < deadline, "JetStream did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(names.iter().any(|n| n.starts_with("eph-")), "{names:?}");
    for name in names.iter().filter(|n| n.starts_with("eph-")) {
        stream.delete_consumer(name).await.unwrap();
    }
    publish(&p, 5..7).await;
    let after = read(&mut sub, 2, Duration::from_secs(30), |_| false).await;
    assert_eq!(after.events, [5, 6], "{after:?}");
    sub.close().await.unwrap();
}
