//! Subscriptions under server faults, against a real `nats-server`:
//! graceful shutdowns, restarts and pauses while a subscription waits,
//! holds or settles deliveries.

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use event_core::{Event, EventProvider, SubscribeOptions, Subscription};
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

/// Waits until durable `name` has exactly `n` pull requests waiting at the
/// server (requests whose inbox nobody subscribes to any more are not
/// counted).
async fn until_waiting(p: &NatsProvider, name: &str, n: usize) {
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = stream.consumer_info(name).await.unwrap().num_waiting;
        if waiting == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} pull requests waiting, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
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

/// A durable subscription actively waiting (its task polling `next`) when
/// the server shuts down gracefully (SIGTERM, a rolling upgrade) goes on
/// with its durable once the server is back.
#[tokio::test]
async fn a_durable_waiting_through_a_graceful_shutdown_goes_on() {
    let mut server = server!("a_durable_waiting_through_a_graceful_shutdown_goes_on");
    let p = NatsProvider::connect(config(&server, "gsd")).await.unwrap();
    let mut sub = p
        .subscribe_durable("keep", &p.category_subject("t"))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            let r = sub.next_manual_ack().await;
            let stop =
                matches!(r, Ok(Some(_)) | Ok(None)) || matches!(&r, Err(e) if !e.is_transient());
            let _ = tx.send(r.map(|o| o.map(|p| p.received.event.payload["n"].as_u64())));
            if stop {
                return sub;
            }
        }
    });
    until_waiting(&p, "keep", 1).await;
    server.terminate();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    publish_once_back(&p, &event(&p, 1), deadline).await;
    let mut seen = Vec::new();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the reader reports")
            .expect("reader alive");
        match r {
            Ok(Some(n)) => {
                assert_eq!(n, Some(1), "after {seen:?}");
                break;
            }
            Err(e) if e.is_transient() => seen.push(format!("{e}")),
            other => panic!("after a graceful shutdown (errors before: {seen:?}): {other:?}"),
        }
    }
    let _ = reader.await;
}

fn manual(ack_wait: Duration) -> SubscribeOptions {
    SubscribeOptions {
        ack_wait: Some(ack_wait),
        ..SubscribeOptions::default()
    }
}

/// Two manual-ack subscriptions on the durable `d` of category `t`, with
/// `ack_wait`.
async fn two_on_one_durable(
    p: &NatsProvider,
    ack_wait: Duration,
) -> (Box<dyn Subscription>, Box<dyn Subscription>) {
    let filter = p.category_subject("t");
    let opts = manual(ack_wait);
    let a = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    let b = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    (a, b)
}

/// What `sub` delivers within `quiet` (numbers and delivery counts), acking
/// each.
async fn drain(sub: &mut Box<dyn Subscription>, quiet: Duration) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    while let Ok(r) = tokio::time::timeout(quiet, sub.next_manual_ack()).await {
        match r {
            Ok(Some(p)) => {
                got.push((
                    p.received.event.payload["n"].as_u64().unwrap(),
                    p.received.num_delivered,
                ));
                p.ack().await.unwrap();
            }
            Ok(None) => break,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("drain: {e:?}"),
        }
    }
    got
}

#[tokio::test]
async fn settling_after_the_subscription_is_dropped_or_closed_settles() {
    let server = server!("settling_after_the_subscription_is_dropped_or_closed");
    let p = NatsProvider::connect(config(&server, "sad")).await.unwrap();
    let filter = p.category_subject("t");
    let opts = manual(Duration::from_secs(1));
    for n in 0..4 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    let a = sub.next_manual_ack().await.unwrap().unwrap();
    let b = sub.next_manual_ack().await.unwrap().unwrap();
    sub.close().await.unwrap();
    a.ack().await.unwrap();
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    let c = sub.next_manual_ack().await.unwrap().unwrap();
    let c_n = c.received.event.payload["n"].as_u64().unwrap();
    drop(sub);
    b.term().await.unwrap();
    c.ack().await.unwrap();
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    let got = drain(&mut sub, Duration::from_secs(3)).await;
    let numbers: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert!(
        !numbers.contains(&0) && !numbers.contains(&1) && !numbers.contains(&c_n),
        "{got:?}"
    );
    assert_eq!(got.len(), 1, "{got:?}");
}

#[tokio::test]
async fn a_nak_with_a_zero_delay_redelivers_at_once() {
    let server = server!("a_nak_with_a_zero_delay_redelivers_at_once");
    let p = NatsProvider::connect(config(&server, "nz")).await.unwrap();
    let filter = p.category_subject("t");
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &manual(Duration::from_secs(60)))
        .await
        .unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    let first = sub.next_manual_ack().await.unwrap().unwrap();
    first.nak_with_delay(Duration::ZERO).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), sub.next_manual_ack())
        .await
        .expect("redelivered at once")
        .unwrap()
        .unwrap();
    assert_eq!(again.received.num_delivered, 2);
    again.ack().await.unwrap();
}

/// An ack made while the server is down is queued and sent on
/// reconnection: the event is not delivered again.
#[tokio::test]
async fn an_ack_made_while_the_server_is_down_settles_after_the_restart() {
    let mut server = server!("an_ack_made_while_the_server_is_down_settles");
    let p = NatsProvider::connect(config(&server, "akd")).await.unwrap();
    let filter = p.category_subject("t");
    let opts = manual(Duration::from_secs(2));
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    p.publish(&event(&p, 1)).await.unwrap();
    let zero = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(zero.received.event.payload["n"], 0);
    // a graceful stop: a killed server may forget its latest state
    server.terminate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.is_connected() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    zero.ack().await.unwrap();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    publish_once_back(&p, &event(&p, 2), deadline).await;
    let got = drain(&mut sub, Duration::from_secs(5)).await;
    let numbers: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(numbers, vec![1, 2], "{got:?}");
}

/// An ephemeral holding an unsettled delivery when the server restarts
/// (the consumer survives, or a lost one is recreated at the held
/// delivery): nothing is lost, the held event comes again.
#[tokio::test]
async fn an_ephemeral_restarted_server_redelivers_the_held_event_and_loses_nothing() {
    let mut server = server!("an_ephemeral_restarted_server_redelivers_the_held");
    let p = NatsProvider::connect(config(&server, "eh")).await.unwrap();
    let filter = p.category_subject("t");
    for n in 0..5 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    let opts = SubscribeOptions {
        deliver_policy: event_core::DeliverPolicy::All,
        ..manual(Duration::from_secs(2))
    };
    let mut sub = p.subscribe_with_options(&filter, &opts).await.unwrap();
    let held = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(held.received.event.payload["n"], 0);
    for n in 1..3 {
        let d = sub.next_manual_ack().await.unwrap().unwrap();
        assert_eq!(d.received.event.payload["n"], n);
        d.ack().await.unwrap();
    }
    server.terminate();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    publish_once_back(&p, &event(&p, 5), deadline).await;
    // dropped unsettled: it comes again after its ack wait
    drop(held);
    let got = drain(&mut sub, Duration::from_secs(6)).await;
    let numbers: Vec<u64> = got.iter().map(|g| g.0).collect();
    for n in [0, 3, 4, 5] {
        assert!(numbers.contains(&n), "{n} missing: {got:?}");
    }
}

/// One of two subscriptions on a durable dropped while its pull waits: an
/// event published then goes to the other at once, first delivery.
#[tokio::test]
async fn a_subscription_dropped_while_its_pull_waits_takes_no_event() {
    let server = server!("a_subscription_dropped_while_its_pull_waits");
    let p = NatsProvider::connect(config(&server, "dpw")).await.unwrap();
    let (mut a, mut b) = two_on_one_durable(&p, Duration::from_secs(60)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a.next_manual_ack())
            .await
            .is_err()
    );
    drop(a);
    until_waiting(&p, "d", 0).await;
    let waiting = tokio::spawn(async move {
        let r = tokio::time::timeout(Duration::from_secs(20), b.next_manual_ack()).await;
        r.map(|r| {
            r.map(|o| {
                o.map(|p| {
                    (
                        p.received.event.payload["n"].as_u64(),
                        p.received.num_delivered,
                    )
                })
            })
        })
    });
    until_waiting(&p, "d", 1).await;
    for n in 0..3 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    let got = waiting.await.unwrap();
    assert!(matches!(got, Ok(Ok(Some((Some(0), 1))))), "{got:?}");
}

/// A server paused past the ack wait while a delivery is held: the
/// redelivery says it is the second.
#[tokio::test]
async fn a_pause_past_the_ack_wait_redelivers_with_an_honest_count() {
    let server = server!("a_pause_past_the_ack_wait_redelivers");
    let p = NatsProvider::connect(config(&server, "pz")).await.unwrap();
    let filter = p.category_subject("t");
    let opts = manual(Duration::from_secs(1));
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    let held = sub.next_manual_ack().await.unwrap().unwrap();
    server.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(60);
    let again = next_through_faults(&mut sub, deadline).await;
    assert_eq!(again.received.event.payload["n"], 0);
    assert_eq!(again.received.num_delivered, 2);
    held.ack().await.unwrap();
    again.ack().await.unwrap();
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

/// A delivery kept alive with `in_progress` (every 400 ms against a 2 s
/// ack wait) through a server crash and restart is not redelivered to the
/// other subscription on the durable: the progress made while the server
/// is down goes out on reconnection.
#[tokio::test]
async fn in_progress_keeps_a_delivery_across_a_server_crash() {
    let mut server = server!("in_progress_keeps_a_delivery_across_a_server_crash");
    let cfg = config(&server, "ipr");
    let p = NatsProvider::connect(cfg.clone()).await.unwrap();
    let q = NatsProvider::connect(cfg).await.unwrap();
    let filter = p.category_subject("t");
    let opts = manual(Duration::from_secs(2));
    let mut a = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    let held = a.next_manual_ack().await.unwrap().unwrap();
    let held = std::sync::Arc::new(held);
    let keeper = {
        let held = held.clone();
        tokio::spawn(async move {
            loop {
                // while the server is down: queued, or a transient error
                let _ = held.in_progress().await;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };
    let mut b = q
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    publish_once_back(&p, &event(&p, 1), deadline).await;
    // three ack waits after the restart: the held event stays with its
    // holder, the other subscription gets the new one only
    let got = drain(&mut b, Duration::from_secs(6)).await;
    assert_eq!(got, vec![(1, 1)]);
    keeper.abort();
    let _ = keeper.await;
    let held = std::sync::Arc::try_unwrap(held).unwrap();
    held.ack().await.unwrap();
}

/// An ephemeral lost (deleted behind the provider's back) while its caller
/// was busy with events fetched ahead (auto-ack mode): it is recreated
/// after the last event handed out; nothing is skipped or handed out twice,
/// events published while it was lost included.
#[tokio::test]
async fn an_ephemeral_lost_with_events_fetched_ahead_resumes_after_them() {
    let server = server!("an_ephemeral_lost_with_events_fetched_ahead_resumes");
    let cfg = config(&server, "efa");
    let stream = cfg.stream_name.clone();
    let p = NatsProvider::connect(cfg).await.unwrap();
    let filter = p.category_subject("t");
    for n in 0..30 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    let opts = SubscribeOptions {
        deliver_policy: event_core::DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let mut sub = p.subscribe_with_options(&filter, &opts).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..12 {
        got.push(
            sub.next().await.unwrap().unwrap().event.payload["n"]
                .as_u64()
                .unwrap(),
        );
    }
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(&stream).await.unwrap();
    let names: Vec<String> = {
        use futures_util::TryStreamExt;
        stream.consumer_names().try_collect().await.unwrap()
    };
    assert_eq!(names.len(), 1, "{names:?}");
    stream.delete_consumer(&names[0]).await.unwrap();
    for n in 30..36 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.last() != Some(&35) {
        assert!(Instant::now() < deadline, "{got:?}");
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Ok(Some(r))) => got.push(r.event.payload["n"].as_u64().unwrap()),
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    assert_eq!(got, (0..36).collect::<Vec<u64>>());
}

/// Waits (bounded) until the stream has `expected` consumers.
async fn await_consumers(p: &NatsProvider, expected: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let consumers = p.info().await.map(|info| info.consumers);
        if consumers.as_ref().is_ok_and(|c| *c == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: {consumers:?} consumers on the stream, expected {expected} (a consumer leaked)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `p` is connected again and its stream answers.
async fn until_back(p: &NatsProvider) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !p.health().await.unwrap() {
        assert!(Instant::now() < deadline, "no reconnection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An ephemeral's `close` while the server is unreachable (paused, noticed
/// by the pings) fails, transient; once the server answers again no
/// consumer is left on the stream, whether the caller closes again (which
/// returns `Ok` and the subscription yields nothing more) or drops it: the
/// deletion request the failed close queued goes out on reconnection.
#[tokio::test]
async fn an_ephemeral_close_failed_while_the_server_was_unreachable_leaves_no_consumer() {
    let server = server!("an_ephemeral_close_failed_while_the_server_was_unreachable");
    // a silent server is noticed after a few pings
    let options = event_nats::NatsOptions {
        ping_interval: Duration::from_secs(1),
        ..event_nats::NatsOptions::default()
    };
    let p = NatsProvider::connect_with(config(&server, "cfd"), options)
        .await
        .unwrap();
    let filter = p.category_subject("t");
    for retry_with_close in [true, false] {
        let mut sub = p.subscribe(&filter).await.unwrap();
        await_consumers(&p, 1, "subscribed").await;
        server.pause();
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.is_connected() {
            assert!(Instant::now() < deadline, "the client did not notice");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let closed = tokio::time::timeout(Duration::from_secs(20), sub.close()).await;
        server.resume();
        match closed {
            Ok(Err(e)) => assert!(e.is_transient(), "{e:?}"),
            other => panic!("close while the server is unreachable: {other:?}"),
        }
        until_back(&p).await;
        if retry_with_close {
            sub.close().await.unwrap();
            assert!(matches!(sub.next().await, Ok(None)));
        } else {
            drop(sub);
        }
        let when = if retry_with_close {
            "closed again"
        } else {
            "dropped"
        };
        await_consumers(&p, 0, when).await;
    }
}

/// A durable read as a `Stream` (`into_manual_stream`) whose `next()` is
/// given up again and again (a `timeout` shorter than the gaps between
/// events) hands out every event once, in order, on its first delivery; the
/// subscription comes back out of the stream between fetches.
#[tokio::test]
async fn a_manual_stream_polled_with_timeouts_loses_nothing() {
    use futures_util::StreamExt;
    let server = server!("a_manual_stream_polled_with_timeouts_loses_nothing");
    let p = NatsProvider::connect(config(&server, "stm")).await.unwrap();
    let filter = p.category_subject("t");
    let sub = p
        .subscribe_durable_with_options("d", &filter, &manual(Duration::from_secs(60)))
        .await
        .unwrap();
    let mut stream = sub.into_manual_stream();
    let publisher = {
        let p = p.clone();
        tokio::spawn(async move {
            for n in 0..40 {
                p.publish(&event(&p, n)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(7 * (n % 5))).await;
            }
        })
    };
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 40 {
        assert!(Instant::now() < deadline, "{got:?}");
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(3), stream.next()).await {
            let pending = item.expect("the stream goes on").unwrap();
            got.push((
                pending.received.event.payload["n"].as_u64().unwrap(),
                pending.received.num_delivered,
            ));
            pending.ack().await.unwrap();
        }
    }
    publisher.await.unwrap();
    assert_eq!(got, (0..40).map(|n| (n, 1)).collect::<Vec<_>>());
    let mut sub = stream.into_inner().expect("no fetch in progress");
    sub.close().await.unwrap();
}

/// A durable's delivery count survives a server restart: the delivery after
/// it is the final one when it should be, and a nak of it ends the event.
#[tokio::test]
async fn the_final_delivery_is_reported_after_a_server_restart() {
    let mut server = server!("the_final_delivery_is_reported_after_a_server_restart");
    let p = NatsProvider::connect(config(&server, "fin")).await.unwrap();
    let filter = p.category_subject("t");
    let opts = SubscribeOptions {
        max_deliver: Some(2),
        ..manual(Duration::from_secs(1))
    };
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    let first = sub.next_manual_ack().await.unwrap().unwrap();
    assert!(!first.is_final_delivery());
    first.nak().await.unwrap();
    let second = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(second.received.num_delivered, 2);
    // held across a graceful restart (its ack wait passes meanwhile)
    server.terminate();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    publish_once_back(&p, &event(&p, 1), deadline).await;
    drop(second);
    let mut got = Vec::new();
    while got.len() < 2 {
        let pending = next_through_faults(&mut sub, deadline).await;
        let n = pending.received.event.payload["n"].as_u64().unwrap();
        got.push((
            n,
            pending.received.num_delivered,
            pending.is_final_delivery(),
        ));
        if n == 0 {
            // the spare delivery: final, its nak ends the event
            pending.nak().await.unwrap();
        } else {
            pending.ack().await.unwrap();
        }
    }
    got.sort_unstable();
    assert_eq!(got, vec![(0, 3, true), (1, 1, false)]);
    assert!(drain(&mut sub, Duration::from_secs(3)).await.is_empty());
}

/// One of two subscriptions on a durable has a delivery in hand (received
/// by its pull, its call dropped before handing it out) when it is dropped
/// without `close`: the event is not acknowledged with it; it comes to the
/// other subscription after the ack wait, as its second delivery.
#[tokio::test]
async fn a_delivery_received_by_a_dropped_subscription_comes_again() {
    use futures_util::FutureExt;
    let server = server!("a_delivery_received_by_a_dropped_subscription");
    let p = NatsProvider::connect(config(&server, "rds")).await.unwrap();
    let (mut a, mut b) = two_on_one_durable(&p, Duration::from_secs(1)).await;
    {
        // polled once: the pull goes out and waits at the server
        let mut call = a.next_manual_ack().boxed();
        assert!((&mut call).now_or_never().is_none());
        until_waiting(&p, "d", 1).await;
        p.publish(&event(&p, 0)).await.unwrap();
        // delivered to it (waiting for its ack) and never polled again
        let js = async_nats::jetstream::new(p.client().clone());
        let stream = js.get_stream(p.stream_name()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stream.consumer_info("d").await.unwrap().num_ack_pending < 1 {
            assert!(Instant::now() < deadline, "not delivered");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    drop(a);
    let got = drain(&mut b, Duration::from_secs(4)).await;
    assert_eq!(got, vec![(0, 2)]);
}

/// A delivery settled after its subscription and the provider (every
/// handle of it) were dropped, as a shutdown that lets in-flight handlers
/// finish does: `ack` returned `Ok`, but the acknowledgement never reached
/// the server (an observer of `$JS.ACK.>` saw nothing, and the event was
/// still pending 10 s later; with a subscription or a provider clone
/// still alive it was settled at once), so the event came again after its
/// ack wait, handled twice. A delivery held keeps the provider's
/// connection, as its subscription does: its settlement reaches the server.
#[tokio::test]
async fn a_delivery_settled_after_its_provider_was_dropped_is_settled() {
    let server = server!("a_delivery_settled_after_its_provider_was_dropped");
    let cfg = config(&server, "apd");
    let p = NatsProvider::connect(cfg.clone()).await.unwrap();
    let observer = NatsProvider::connect(cfg).await.unwrap();
    let filter = p.category_subject("t");
    let opts = manual(Duration::from_secs(60));
    let mut sub = p
        .subscribe_durable_with_options("d", &filter, &opts)
        .await
        .unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    let held = sub.next_manual_ack().await.unwrap().unwrap();
    drop(sub);
    drop(p);
    held.ack().await.unwrap();
    let js = async_nats::jetstream::new(observer.client().clone());
    let stream = js.get_stream(observer.stream_name()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // (the ack wait is a minute: nothing is redelivered meanwhile)
    while stream.consumer_info("d").await.unwrap().num_ack_pending > 0 {
        assert!(
            Instant::now() < deadline,
            "the acknowledgement never reached the server: the event is still pending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The provider's last handle dropped outside the runtime (by synchronous
/// code between two `block_on`s) just after a delivery was acknowledged:
/// the runtime still runs the connection, and the acknowledgement reaches
/// the server as when it is dropped inside it.
#[test]
fn an_ack_queued_before_the_provider_was_dropped_outside_the_runtime_is_settled() {
    let server = server!("an_ack_queued_before_the_provider_was_dropped_outside");
    let cfg = config(&server, "apo");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (p, observer) = runtime.block_on(async {
        let p = NatsProvider::connect(cfg.clone()).await.unwrap();
        let observer = NatsProvider::connect(cfg).await.unwrap();
        let filter = p.category_subject("t");
        let opts = manual(Duration::from_secs(60));
        let mut sub = p
            .subscribe_durable_with_options("d", &filter, &opts)
            .await
            .unwrap();
        p.publish(&event(&p, 0)).await.unwrap();
        let held = sub.next_manual_ack().await.unwrap().unwrap();
        drop(sub);
        held.ack().await.unwrap();
        (p, observer)
    });
    drop(p);
    runtime.block_on(async {
        let js = async_nats::jetstream::new(observer.client().clone());
        let stream = js.get_stream(observer.stream_name()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // (the ack wait is a minute: nothing is redelivered meanwhile)
        while stream.consumer_info("d").await.unwrap().num_ack_pending > 0 {
            assert!(
                Instant::now() < deadline,
                "the acknowledgement never reached the server: the event is still pending"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}
