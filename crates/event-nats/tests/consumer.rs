//! Consumer-side behaviour against a real `nats-server`: option limits,
//! consumer names, start times, cancelled calls.

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use event_core::{DeliverPolicy, Error, Event, EventProvider, SubscribeOptions, Subscription};
use event_nats::{NatsConfig, NatsProvider};
use std::time::Duration;

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

/// The longest ack wait or nak delay the provider sends to JetStream.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

async fn consumer_config(p: &NatsProvider, name: &str) -> async_nats::jetstream::consumer::Config {
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    stream.consumer_info(name).await.unwrap().config.clone()
}

/// `n` of each delivery until none comes for `quiet`, acking each.
async fn drain(sub: &mut Box<dyn Subscription>, quiet: Duration) -> Vec<u64> {
    let mut seen = Vec::new();
    while let Ok(Ok(Some(pending))) = tokio::time::timeout(quiet, sub.next_manual_ack()).await {
        seen.push(pending.received.event.payload["n"].as_u64().unwrap());
        pending.ack().await.unwrap();
    }
    seen
}

/// An ack wait or backoff longer than JetStream's i64 nanoseconds was
/// serialised wrapped (`18_446_744_274 s` became a 200 s ack wait, and
/// `Duration::MAX` a refusal with a decoding error), and one that fits but
/// overflows the server's clock arithmetic (`i64::MAX` nanoseconds) kept
/// nats-server busy. A very long wait means "practically never", as on the
/// memory provider: the consumer gets a century, and a durable created with
/// it resumes with the same options.
#[tokio::test]
async fn ack_waits_longer_than_a_century_are_a_century() {
    let server = server!("ack_waits_longer_than_a_century_are_a_century");
    let p = NatsProvider::connect(common::config(&server, "aw"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    p.publish(&event(&p, 0)).await.unwrap();
    for (name, wait) in [
        ("wrap", Duration::from_secs(18_446_744_274)),
        ("max", Duration::MAX),
        ("i64", Duration::from_nanos(i64::MAX as u64)),
    ] {
        let opts = SubscribeOptions {
            ack_wait: Some(wait),
            ..SubscribeOptions::default()
        };
        let mut sub = p
            .subscribe_durable_with_options(name, &filter, &opts)
            .await
            .unwrap_or_else(|e| panic!("ack_wait {wait:?}: {e:?}"));
        assert_eq!(consumer_config(&p, name).await.ack_wait, CENTURY);
        let pending = sub.next_manual_ack().await.unwrap().unwrap();
        assert_eq!(pending.ack_wait(), Some(CENTURY));
        pending.ack().await.unwrap();
        drop(sub);
        // resuming with the same options changes nothing
        drop(
            p.subscribe_durable_with_options(name, &filter, &opts)
                .await
                .unwrap_or_else(|e| panic!("resume with ack_wait {wait:?}: {e:?}")),
        );
        // an ephemeral too
        drop(p.subscribe_with_options(&filter, &opts).await.unwrap());
    }
    let opts = SubscribeOptions {
        backoff: vec![Duration::from_secs(1), Duration::MAX],
        max_deliver: Some(3),
        ..SubscribeOptions::default()
    };
    drop(
        p.subscribe_durable_with_options("backoff", &filter, &opts)
            .await
            .unwrap(),
    );
    assert_eq!(
        consumer_config(&p, "backoff").await.backoff,
        vec![Duration::from_secs(1), CENTURY]
    );
}

/// A nak delay beyond JetStream's i64 nanoseconds was sent as a number the
/// server cannot parse, which it treats as a plain nak: the event came back
/// at once instead of (practically) never.
#[tokio::test]
async fn a_nak_delay_beyond_jetstream_nanoseconds_does_not_redeliver_at_once() {
    let server = server!("a_nak_delay_beyond_jetstream_nanoseconds_does_not_redeliver_at_once");
    let p = NatsProvider::connect(common::config(&server, "nak"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let mut sub = p.subscribe_durable("later", &filter).await.unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    let pending = sub.next_manual_ack().await.unwrap().unwrap();
    pending.nak_with_delay(Duration::MAX).await.unwrap();
    p.publish(&event(&p, 1)).await.unwrap();
    assert_eq!(
        drain(&mut sub, Duration::from_millis(1500)).await,
        [1],
        "the delayed event must not come back now"
    );
}

/// A start time after 2262-04-11 (the end of JetStream's i64 nanoseconds)
/// wrapped at the server and delivered every stored event; stored events
/// are all older than such a time, so none is delivered (as on the memory
/// provider), only later ones.
#[tokio::test]
async fn a_start_time_beyond_2262_delivers_no_stored_event() {
    let server = server!("a_start_time_beyond_2262_delivers_no_stored_event");
    let p = NatsProvider::connect(common::config(&server, "st"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    for n in 0..3 {
        p.publish(&event(&p, n)).await.unwrap();
    }
    // 2262-04-11T23:47:16.855Z, 9999-12-31 and the largest timestamp
    for (name, timestamp) in [
        ("after", 9_223_372_036_855),
        ("y9999", 253_402_300_799_000),
        ("max", u64::MAX),
    ] {
        let opts = SubscribeOptions {
            deliver_policy: DeliverPolicy::ByStartTime { timestamp },
            ..SubscribeOptions::default()
        };
        let mut eph = p.subscribe_with_options(&filter, &opts).await.unwrap();
        let mut durable = p
            .subscribe_durable_with_options(name, &filter, &opts)
            .await
            .unwrap();
        let quiet = Duration::from_millis(500);
        assert_eq!(drain(&mut eph, quiet).await, Vec::<u64>::new(), "{name}");
        assert_eq!(
            drain(&mut durable, quiet).await,
            Vec::<u64>::new(),
            "{name}"
        );
        drop(durable);
        // the durable resumes with the same options
        drop(
            p.subscribe_durable_with_options(name, &filter, &opts)
                .await
                .unwrap(),
        );
    }
}

/// nats-server builds ack subjects with the consumer name in a format
/// string: a `%` in the name garbled every ack subject, so no delivery
/// could be decoded or acknowledged. Such a name is refused before any I/O.
#[tokio::test]
async fn a_consumer_name_with_a_percent_sign_is_refused() {
    let server = server!("a_consumer_name_with_a_percent_sign_is_refused");
    let p = NatsProvider::connect(common::config(&server, "pct"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    match p.subscribe_durable("orders%eu", &filter).await {
        Err(Error::InvalidSubject { subject, reason }) => {
            assert_eq!(subject, "orders%eu");
            assert!(reason.contains('%'), "{reason}");
        }
        Err(other) => panic!("expected InvalidSubject, got {other:?}"),
        Ok(_) => panic!("a consumer name with % was accepted"),
    }
    assert!(matches!(
        p.unsubscribe("orders%eu").await,
        Err(Error::InvalidSubject { .. })
    ));
    assert_eq!(p.info().await.unwrap().consumers, 0);
}

/// A call cancelled after it took a delivery off the wire but before it
/// returned it (a durable's redelivery waits for a settings lookup) lost
/// that delivery: the server counted it, and on a final delivery it was
/// exhausted without ever being seen. A cancelled call (a `select!` branch
/// that lost, a timeout) keeps it for the next call.
#[tokio::test]
async fn a_cancelled_call_does_not_lose_the_delivery_it_was_reading() {
    let server = server!("a_cancelled_call_does_not_lose_the_delivery_it_was_reading");
    // The lookup must outlast the cancelled call by far: on a loaded
    // machine a stalled test thread wakes with both timers expired, and the
    // inner (lookup) one is polled first.
    let config = NatsConfig {
        request_timeout_secs: 60,
        ..common::config(&server, "cancel")
    };
    let p = NatsProvider::connect(config).await.unwrap();
    let filter = p.category_subject("t");
    let opts = SubscribeOptions {
        max_deliver: Some(2),
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("twice", &filter, &opts)
        .await
        .unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    let first = sub.next_manual_ack().await.unwrap().unwrap();
    assert_eq!(first.received.num_delivered, 1);
    drop(first); // redelivered after the ack wait
    // a call waiting at the server, abandoned: its pull request stays
    let short = Duration::from_millis(200);
    assert!(
        tokio::time::timeout(short, sub.next_manual_ack())
            .await
            .is_err()
    );
    // the redelivery arrives in that pull's buffer
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // a call that reads it and is cancelled while the (frozen) server
    // answers its lookup
    server.pause();
    let cancelled = tokio::time::timeout(Duration::from_millis(500), sub.next_manual_ack()).await;
    server.resume();
    assert!(
        cancelled.is_err(),
        "returned while the server was frozen: {cancelled:?}"
    );
    let again = tokio::time::timeout(Duration::from_secs(5), sub.next_manual_ack())
        .await
        .expect("the delivery the cancelled call was reading")
        .unwrap()
        .unwrap();
    assert_eq!(again.received.num_delivered, 2);
    assert!(again.is_final_delivery());
    again.ack().await.unwrap();
}

/// A provider on `server` (prefix tag `name`) with events 0 to `count` - 1
/// stored, and a durable `name` on them with `ack_wait`.
async fn durable_on_backlog(
    server: &NatsServer,
    name: &str,
    count: u64,
    ack_wait: Duration,
) -> (NatsProvider, Box<dyn Subscription>) {
    let p = NatsProvider::connect(common::config(server, name))
        .await
        .unwrap();
    let events: Vec<Event> = (0..count).map(|n| event(&p, n)).collect();
    for r in p.publish_batch(&events).await.unwrap() {
        r.unwrap();
    }
    let opts = SubscribeOptions {
        ack_wait: Some(ack_wait),
        ..SubscribeOptions::default()
    };
    let sub = p
        .subscribe_durable_with_options(name, &p.category_subject("t"), &opts)
        .await
        .unwrap();
    (p, sub)
}

/// async-nats ends a pull request 5 s after its expiry even when events it
/// received are still waiting to be handed out, and drops them: a caller
/// that slowed down after a fast start (a prefetch sized for the fast pace)
/// saw a gap, the skipped events coming back only after the ack wait (here
/// two minutes) with their delivery count raised. Every fetched event is
/// handed out, in order, on its first delivery.
#[tokio::test]
async fn events_fetched_ahead_are_handed_out_when_the_caller_slows_down() {
    let server = server!("events_fetched_ahead_are_handed_out_when_the_caller_slows_down");
    let (_p, mut sub) = durable_on_backlog(&server, "slow", 520, Duration::from_secs(120)).await;
    // fast through the warm-up and the growing pulls (up to 256 events
    // ahead), then 45 ms per event: the last pull takes 11 s to hand out
    for n in 0..500u64 {
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("event {n} not handed out"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.event.payload["n"].as_u64(), got.num_delivered),
            (Some(n), 1),
            "event {n}"
        );
        if n >= 262 {
            tokio::time::sleep(Duration::from_millis(45)).await;
        }
    }
}

/// Events fetched ahead at a fast pace used to wait in the prefetch buffer
/// with their ack wait running: once the caller slowed down (here from no
/// time per event to 150 ms, under the 1 s ack wait), those still waiting
/// after the ack wait were redelivered while their first delivery was yet
/// to be handed out, and so handled twice without any fault. Each call now
/// keeps what waits in the buffer alive (`in_progress`), so every event is
/// handed out once, on its first delivery, and nothing comes again.
#[tokio::test]
async fn events_waiting_in_the_prefetch_buffer_are_not_redelivered() {
    let server = server!("events_waiting_in_the_prefetch_buffer_are_not_redelivered");
    let (_p, mut sub) = durable_on_backlog(&server, "keep", 80, Duration::from_secs(1)).await;
    // fast through the warm-up and growing pulls, then 150 ms per event:
    // the events fetched ahead wait seconds in the buffer
    for n in 0..80u64 {
        let pending = tokio::time::timeout(Duration::from_secs(5), sub.next_manual_ack())
            .await
            .unwrap_or_else(|_| panic!("event {n} not handed out"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                pending.received.event.payload["n"].as_u64(),
                pending.received.num_delivered
            ),
            (Some(n), 1),
            "event {n}: handed out in order, on its first delivery"
        );
        if n >= 40 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        pending.ack().await.unwrap();
    }
    let again = drain(&mut sub, Duration::from_millis(2500)).await;
    assert!(again.is_empty(), "delivered again: {again:?}");
}

/// While the server is down, acknowledgements queue in the client; once its
/// buffer is full (an outage long enough for a busy consumer's acks and
/// `in_progress` calls), the next one waited for the reconnection,
/// possibly forever. Each settles or fails within the request timeout.
#[tokio::test]
async fn acknowledgements_while_the_server_is_down_fail_instead_of_hanging() {
    let mut server = server!("acknowledgements_while_the_server_is_down_fail_instead_of_hanging");
    let config = event_nats::NatsConfig {
        request_timeout_secs: 1,
        ..common::config(&server, "down")
    };
    let p = NatsProvider::connect(config).await.unwrap();
    let mut sub = p
        .subscribe_durable("busy", &p.category_subject("t"))
        .await
        .unwrap();
    let mut auto = p
        .subscribe_durable("auto", &p.category_subject("t"))
        .await
        .unwrap();
    p.publish(&event(&p, 0)).await.unwrap();
    let pending = sub.next_manual_ack().await.unwrap().unwrap();
    auto.next().await.unwrap().unwrap();
    server.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.is_connected() {
        assert!(
            std::time::Instant::now() < deadline,
            "the client did not notice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // a long task keeps reporting progress through the outage
    let mut failed = None;
    for call in 0..5000 {
        match tokio::time::timeout(Duration::from_secs(5), pending.in_progress()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed = Some((call, e));
                break;
            }
            Err(_) => panic!("in_progress call {call} hung while the server was down"),
        }
    }
    let (call, err) = failed.expect("the client's buffer never filled");
    assert!(matches!(err, Error::Timeout { .. }), "call {call}: {err:?}");
    match tokio::time::timeout(Duration::from_secs(5), pending.ack()).await {
        Ok(Err(e)) => assert!(e.is_transient(), "{e:?}"),
        Ok(Ok(())) => panic!("an ack was queued into a full buffer"),
        Err(_) => panic!("ack hung while the server was down"),
    }
    // auto-ack: the next call and close acknowledge the previous event
    match tokio::time::timeout(Duration::from_secs(5), auto.next()).await {
        Ok(Err(e)) => assert!(e.is_transient(), "{e:?}"),
        Ok(Ok(got)) => panic!("got {got:?} from a dead server"),
        Err(_) => panic!("next() hung on its auto-ack while the server was down"),
    }
    match tokio::time::timeout(Duration::from_secs(5), auto.close()).await {
        Ok(result) => assert!(result.is_err(), "close flushed to a dead server"),
        Err(_) => panic!("close() hung while the server was down"),
    }
}

/// A durable of the same name made by another client with a different ack
/// policy was used as it was: with `AckPolicy::All`, acking one event
/// silently settled every earlier one (a failed event was never
/// redelivered), and a push consumer was an `InvalidConfig` blaming the
/// subscription's options. Both are a `Conflict` naming the difference.
#[tokio::test]
async fn a_foreign_durable_that_cannot_ack_each_event_is_a_conflict() {
    use async_nats::jetstream::consumer::{self, AckPolicy};
    let server = server!("a_foreign_durable_that_cannot_ack_each_event_is_a_conflict");
    let p = NatsProvider::connect(common::config(&server, "foreign"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("ack-all".into()),
            ack_policy: AckPolicy::All,
            filter_subject: filter.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(consumer::push::Config {
            durable_name: Some("pushed".into()),
            deliver_subject: "elsewhere".into(),
            ack_policy: AckPolicy::Explicit,
            filter_subject: filter.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    for (name, difference) in [("ack-all", "ack_policy"), ("pushed", "push")] {
        match p.subscribe_durable(name, &filter).await {
            Err(Error::Conflict { resource, reason }) => {
                assert!(resource.contains(name), "{resource}");
                assert!(reason.contains(difference), "{reason}");
            }
            Err(other) => panic!("{name}: expected Conflict, got {other:?}"),
            Ok(_) => panic!("{name}: subscribed to a consumer that cannot ack each event"),
        }
    }
}

/// A zero backoff step after the first was sent to JetStream, which took
/// it (a zero first step was already refused, as the ack wait). Every zero
/// step is refused before any I/O, as the memory provider refuses it.
#[tokio::test]
async fn a_zero_backoff_step_is_invalid_config() {
    let server = server!("a_zero_backoff_step_is_invalid_config");
    let p = NatsProvider::connect(common::config(&server, "zero"))
        .await
        .unwrap();
    let opts = SubscribeOptions {
        backoff: vec![Duration::from_secs(1), Duration::ZERO],
        max_deliver: Some(5),
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject("t");
    match p.subscribe_durable_with_options("z", &filter, &opts).await {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "backoff"),
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
    match p.subscribe_with_options(&filter, &opts).await {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "backoff"),
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
    assert_eq!(p.info().await.unwrap().consumers, 0);
}

/// Two processes creating one durable at once with different start
/// policies both looked it up, found nothing and created it; JetStream took
/// the second creation as an update and refused the changed policy, which
/// came back as `InvalidConfig` on "subscribe options", while a caller
/// coming second gets `Conflict` naming `deliver_policy`. The loser of the
/// race now gets that same `Conflict`. Several rounds, so that most of them
/// really race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creations_of_one_durable_with_different_options_are_a_conflict() {
    let server = server!("racing_creations_of_one_durable_with_different_options_are_a_conflict");
    let config = common::config(&server, "race");
    let a = NatsProvider::connect(config.clone()).await.unwrap();
    let b = NatsProvider::connect(config).await.unwrap();
    let filter = a.category_subject("t");
    let all = SubscribeOptions {
        deliver_policy: DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let new = SubscribeOptions {
        deliver_policy: DeliverPolicy::New,
        ..SubscribeOptions::default()
    };
    let conflict = |round: usize, err: Error| match err {
        Error::Conflict { resource, reason } => {
            assert!(resource.contains(&format!("race{round}")), "{resource}");
            assert!(reason.contains("deliver_policy"), "{reason}");
        }
        other => panic!("round {round}: the loser got {other:?}, not Conflict"),
    };
    for round in 0..12 {
        let name = format!("race{round}");
        let (first, second) = tokio::join!(
            a.subscribe_durable_with_options(&name, &filter, &all),
            b.subscribe_durable_with_options(&name, &filter, &new),
        );
        match (first, second) {
            (Ok(_), Err(err)) | (Err(err), Ok(_)) => conflict(round, err),
            (first, second) => panic!(
                "round {round}: exactly one creation wins: {:?}, {:?}",
                first.map(|_| ()),
                second.map(|_| ())
            ),
        }
    }
}

/// nats-server 2.9 refuses a backoff with an unlimited `max_deliver`, or
/// with a JetStream `max_deliver` equal to the number of steps (newer
/// servers accept both; every server refuses fewer deliveries than steps,
/// which is refused before any I/O). The refusal came back as
/// `InvalidConfig` on "subscribe options" quoting the server; it now names
/// the option combination, the rule and the fix. A subscription's
/// `max_deliver` equal to the steps is JetStream's plus the spare delivery,
/// which every server takes.
#[tokio::test]
async fn a_backoff_the_server_refuses_names_the_options_and_the_rule() {
    let server = server!("a_backoff_the_server_refuses_names_the_options_and_the_rule");
    let p = NatsProvider::connect(common::config(&server, "bo"))
        .await
        .unwrap();
    let version = p.client().server_info().version;
    // 2.9 refuses both; releases since 2024 accept an unlimited max_deliver
    // (nats-server PR 5242), then one equal to the steps (PR 6154)
    let old = version.starts_with("2.9.") || version.starts_with("2.8.");
    let filter = p.category_subject("t");
    let backoff = vec![Duration::from_secs(1), Duration::from_secs(2)];
    {
        let opts = SubscribeOptions {
            backoff: backoff.clone(),
            max_deliver: None,
            ..SubscribeOptions::default()
        };
        for durable in [true, false] {
            let result = if durable {
                p.subscribe_durable_with_options("bo", &filter, &opts)
                    .await
                    .map(|_| ())
            } else {
                p.subscribe_with_options(&filter, &opts).await.map(|_| ())
            };
            match result {
                Err(Error::InvalidConfig { field, reason }) => {
                    assert_eq!(field, "backoff", "{reason}");
                    for part in [
                        format!("nats-server {version}"),
                        "2 step(s)".to_string(),
                        "max_deliver unlimited".to_string(),
                        "requires a limited max_deliver".to_string(),
                        "at least 2".to_string(),
                    ] {
                        assert!(reason.contains(&part), "{part:?} in {reason}");
                    }
                }
                Ok(()) if !old => {
                    p.unsubscribe("bo").await.ok();
                }
                other => panic!("unlimited max_deliver on nats-server {version}: {other:?}"),
            }
        }
    }
    // fewer deliveries than steps: refused by every server, before any I/O
    let opts = SubscribeOptions {
        backoff,
        max_deliver: Some(1),
        ..SubscribeOptions::default()
    };
    match p.subscribe_durable_with_options("bo", &filter, &opts).await {
        Err(Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "backoff");
            assert!(
                reason.contains("2 backoff steps with max_deliver 1"),
                "{reason}"
            );
        }
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
    // one delivery per step (JetStream: one more, the spare) and above:
    // every server takes it
    for max_deliver in [2, 3] {
        let opts = SubscribeOptions {
            max_deliver: Some(max_deliver),
            ..opts.clone()
        };
        p.subscribe_durable_with_options("bo", &filter, &opts)
            .await
            .unwrap_or_else(|e| panic!("max_deliver {max_deliver} on {version}: {e}"));
        p.subscribe_with_options(&filter, &opts)
            .await
            .unwrap_or_else(|e| panic!("max_deliver {max_deliver} on {version}: {e}"));
    }
}

/// JetStream ends an event at its `max_deliver` whether or not the last
/// delivery was settled, so the provider sets one spare delivery on the
/// consumer (a final delivery whose holder crashed comes once more, and is
/// dead-lettered rather than lost) and marks the consumer with it. A durable
/// made without the spare (by an earlier version of this crate, or another
/// client) is updated to carry it when a subscription resumes it.
#[tokio::test]
async fn a_durable_made_without_the_spare_delivery_gets_it_when_resumed() {
    use async_nats::jetstream::consumer::{self, AckPolicy};
    let server = server!("a_durable_made_without_the_spare_delivery_gets_it_when_resumed");
    let p = NatsProvider::connect(common::config(&server, "spare"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let wait = Duration::from_millis(600);
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("old".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: wait,
            max_deliver: 2,
            max_ack_pending: 1000,
            filter_subject: filter.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let opts = SubscribeOptions {
        max_deliver: Some(2),
        ack_wait: Some(wait),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("old", &filter, &opts)
        .await
        .unwrap();
    let config = consumer_config(&p, "old").await;
    assert_eq!(config.max_deliver, 3, "two deliveries and the spare");
    assert!(
        config
            .description
            .as_deref()
            .is_some_and(|d| d.starts_with("a3s-event") && d.contains("spare")),
        "{:?}",
        config.description
    );
    p.publish(&event(&p, 0)).await.unwrap();
    for delivery in 1..=3 {
        let pending = tokio::time::timeout(Duration::from_secs(10), sub.next_manual_ack())
            .await
            .unwrap_or_else(|_| panic!("delivery {delivery} of max_deliver 2 (3: the spare)"))
            .unwrap()
            .unwrap();
        assert_eq!(pending.received.num_delivered, delivery);
        assert_eq!(pending.max_deliver(), Some(2), "as the subscription set it");
        assert_eq!(pending.is_final_delivery(), delivery >= 2);
        drop(pending); // left unsettled: its ack wait expires
    }
    let more = tokio::time::timeout(wait * 4, sub.next_manual_ack()).await;
    assert!(more.is_err(), "the spare left unsettled ends the event");
    drop(sub);
    // a consumer without the mark whose JetStream limit already equals the
    // subscription's plus one: only the mark tells the two apart
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("old3".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: wait,
            max_deliver: 3,
            max_ack_pending: 1000,
            filter_subject: filter.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut sub = p
        .subscribe_durable_with_options("old3", &filter, &opts)
        .await
        .unwrap();
    let config = consumer_config(&p, "old3").await;
    assert_eq!(config.max_deliver, 3);
    assert!(config.description.is_some(), "marked when resumed");
    let pending = tokio::time::timeout(Duration::from_secs(10), sub.next_manual_ack())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pending.max_deliver(), Some(2), "as the subscription set it");
    pending.ack().await.unwrap();
}

/// The spare delivery's mark in the consumer description matters only with
/// a limited `max_deliver`: a durable provisioned by another client (an
/// administrator, an operator) with no limit and a description of its own
/// is resumed as it is, not updated to clear that description (an update
/// needs a permission a consuming client may not have).
#[tokio::test]
async fn an_unlimited_durable_with_a_description_of_its_own_is_resumed_unchanged() {
    use async_nats::jetstream::consumer::{self, AckPolicy};
    let server = server!("an_unlimited_durable_with_a_description_of_its_own_is_resumed_unchanged");
    let p = NatsProvider::connect(common::config(&server, "owndesc"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("ops".into()),
            description: Some("provisioned by ops".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: SubscribeOptions::DEFAULT_ACK_WAIT,
            max_deliver: -1,
            max_ack_pending: 1000,
            filter_subject: filter.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut sub = p.subscribe_durable("ops", &filter).await.unwrap();
    let config = consumer_config(&p, "ops").await;
    assert_eq!(
        config.description.as_deref(),
        Some("provisioned by ops"),
        "the durable was updated although nothing the subscription sets differs"
    );
    p.publish(&event(&p, 0)).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_secs(10), sub.next_manual_ack())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pending.max_deliver(), None);
    pending.ack().await.unwrap();
}

/// A durable provisioned elsewhere with request limits (`max_batch`,
/// `max_expires`, `max_bytes`) made every pull request a `409 Exceeded
/// MaxRequest…`, which the subscription took for a passing refusal and
/// sent again every 20 ms: `next()` never returned. Pull requests are
/// sized within the consumer's limits.
#[tokio::test]
async fn a_durable_with_request_limits_is_pulled_within_them() {
    use async_nats::jetstream::consumer::{self, AckPolicy};
    let server = server!("a_durable_with_request_limits_is_pulled_within_them");
    let p = NatsProvider::connect(common::config(&server, "limits"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("limited".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: SubscribeOptions::DEFAULT_ACK_WAIT,
            max_deliver: -1,
            max_ack_pending: 1000,
            filter_subject: filter.clone(),
            max_batch: 2,
            max_expires: Duration::from_secs(1),
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let events: Vec<Event> = (0..40).map(|n| event(&p, n)).collect();
    for r in p.publish_batch(&events).await.unwrap() {
        r.unwrap();
    }
    // an option that differs: the durable is updated, its limits kept
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(45)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("limited", &filter, &opts)
        .await
        .unwrap();
    let config = consumer_config(&p, "limited").await;
    assert_eq!(
        (
            config.ack_wait,
            config.max_batch,
            config.max_expires,
            config.max_bytes
        ),
        (Duration::from_secs(45), 2, Duration::from_secs(1), 1 << 20)
    );
    for n in 0..40u64 {
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("event {n} not handed out"))
            .unwrap()
            .unwrap();
        assert_eq!(got.event.payload["n"].as_u64(), Some(n));
    }
    // an idle pull expires within the consumer's max_expires, and the
    // next event still comes
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.publish(&event(&p, 40)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("event 40 not handed out")
        .unwrap()
        .unwrap();
    assert_eq!(got.event.payload["n"].as_u64(), Some(40));
}

/// Durable `name`'s configuration as the server's JSON.
async fn raw_consumer_config(p: &NatsProvider, name: &str) -> serde_json::Value {
    use async_nats::jetstream::response::Response;
    let js = async_nats::jetstream::new(p.client().clone());
    let info: Response<serde_json::Value> = js
        .request(
            format!("CONSUMER.INFO.{}.{name}", p.stream_name()),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    match info {
        Response::Ok(info) => info["config"].clone(),
        Response::Err { error } => panic!("consumer info {name}: {error}"),
    }
}

/// `config` without the fields a durable update sets.
fn not_owned(mut config: serde_json::Value) -> serde_json::Value {
    let object = config.as_object_mut().unwrap();
    for owned in [
        "ack_wait",
        "max_deliver",
        "description",
        "max_ack_pending",
        "backoff",
        "filter_subject",
    ] {
        object.remove(owned);
    }
    config
}

/// A durable update sent async-nats's typed configuration, in which
/// JetStream replaces the whole configuration: what the subscription did
/// not set was dropped from a durable provisioned elsewhere (its
/// description, and on nats-server 2.10+ its `metadata` and every other
/// setting async-nats does not model; nats-server 2.9 refuses those, so
/// they are unit-tested in `subscription.rs`). An update starts from the
/// server's JSON: everything but the changed settings stays.
#[tokio::test]
async fn a_durable_update_keeps_every_setting_the_subscription_does_not_set() {
    use async_nats::jetstream::response::Response;
    let server = server!("a_durable_update_keeps_every_setting_the_subscription_does_not_set");
    let p = NatsProvider::connect(common::config(&server, "kept"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let js = async_nats::jetstream::new(p.client().clone());
    // provisioned out of band, as the nats CLI or another team would
    let created: Response<serde_json::Value> = js
        .request(
            format!("CONSUMER.CREATE.{}.ops.{filter}", p.stream_name()),
            &serde_json::json!({
                "stream_name": p.stream_name(),
                "config": {
                    "durable_name": "ops",
                    "name": "ops",
                    "description": "provisioned by ops",
                    "deliver_policy": "all",
                    "ack_policy": "explicit",
                    "ack_wait": 30_000_000_000_u64,
                    "max_deliver": -1,
                    "filter_subject": filter,
                    "replay_policy": "instant",
                    "max_waiting": 7,
                    "max_ack_pending": 1000,
                    "max_batch": 3,
                    "max_expires": 2_000_000_000_u64,
                    "max_bytes": 65_536,
                    "inactive_threshold": 86_400_000_000_000_u64,
                    "sample_freq": "30%",
                    "mem_storage": true,
                },
            }),
        )
        .await
        .unwrap();
    if let Response::Err { error } = created {
        panic!("creating the provisioned durable: {error}");
    }
    let provisioned = raw_consumer_config(&p, "ops").await;
    for (setting, value) in [
        ("description", serde_json::json!("provisioned by ops")),
        ("max_waiting", serde_json::json!(7)),
        ("sample_freq", serde_json::json!("30%")),
        ("mem_storage", serde_json::json!(true)),
    ] {
        assert_eq!(provisioned[setting], value, "{setting} as provisioned");
    }
    p.publish(&event(&p, 0)).await.unwrap();

    // a changed ack wait: the durable is updated, the rest kept, the
    // description of its own included (no delivery limit, no mark)
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(45)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("ops", &filter, &opts)
        .await
        .unwrap();
    let updated = raw_consumer_config(&p, "ops").await;
    assert_eq!(updated["ack_wait"], serde_json::json!(45_000_000_000_u64));
    assert_eq!(updated["description"], provisioned["description"]);
    assert_eq!(not_owned(updated), not_owned(provisioned.clone()));
    read(&mut sub, 0).await;
    drop(sub);

    // a delivery limit too: set with the spare (marked in the description)
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(45)),
        max_deliver: Some(3),
        ..SubscribeOptions::default()
    };
    let sub = p
        .subscribe_durable_with_options("ops", &filter, &opts)
        .await
        .unwrap();
    let updated = raw_consumer_config(&p, "ops").await;
    assert_eq!(updated["max_deliver"], serde_json::json!(4));
    assert!(
        updated["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("a3s-event")),
        "{updated}"
    );
    assert_eq!(not_owned(updated), not_owned(provisioned));
    drop(sub);
}

async fn read(sub: &mut Box<dyn Subscription>, n: u64) {
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap_or_else(|_| panic!("event {n} not handed out"))
        .unwrap()
        .unwrap();
    assert_eq!(got.event.payload["n"].as_u64(), Some(n));
}

/// Request limits set on a durable while a subscription reads it are read
/// again when the server refuses a pull for them: the subscription goes on
/// within the new limits.
#[tokio::test]
async fn request_limits_set_while_subscribed_are_followed() {
    let server = server!("request_limits_set_while_subscribed_are_followed");
    let p = NatsProvider::connect(common::config(&server, "relimit"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let events: Vec<Event> = (0..60).map(|n| event(&p, n)).collect();
    for r in p.publish_batch(&events[..20]).await.unwrap() {
        r.unwrap();
    }
    let mut sub = p.subscribe_durable("relimit", &filter).await.unwrap();
    // past the warm-up: pulls ask for several events
    for n in 0..20 {
        read(&mut sub, n).await;
    }
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    let mut config = consumer_config(&p, "relimit").await;
    config.max_batch = 1;
    config.max_expires = Duration::from_secs(1);
    stream.create_consumer(config).await.unwrap();
    assert_eq!(consumer_config(&p, "relimit").await.max_batch, 1);
    for r in p.publish_batch(&events[20..]).await.unwrap() {
        r.unwrap();
    }
    for n in 20..60 {
        read(&mut sub, n).await;
    }
}

/// A durable of the same name made elsewhere with `headers_only` delivered
/// every event without its body: each was reported `Undecodable` and
/// terminated (the consumer's ack floor passed them). One with
/// `replay_policy: Original` handed events out at the pace they were
/// stored, and JetStream cannot change a consumer's replay policy. Both are
/// a `Conflict` naming the setting.
#[tokio::test]
async fn a_foreign_durable_without_bodies_or_instant_replay_is_a_conflict() {
    use async_nats::jetstream::consumer::{self, AckPolicy, ReplayPolicy};
    let server = server!("a_foreign_durable_without_bodies_or_instant_replay_is_a_conflict");
    let p = NatsProvider::connect(common::config(&server, "bodiless"))
        .await
        .unwrap();
    let filter = p.category_subject("t");
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    let base = consumer::pull::Config {
        ack_policy: AckPolicy::Explicit,
        ack_wait: SubscribeOptions::DEFAULT_ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: 1000,
        filter_subject: filter.clone(),
        ..Default::default()
    };
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("headers".into()),
            headers_only: true,
            ..base.clone()
        })
        .await
        .unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("paced".into()),
            replay_policy: ReplayPolicy::Original,
            ..base.clone()
        })
        .await
        .unwrap();
    // the replay policy is fixed at creation
    assert!(
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("paced".into()),
                ..base.clone()
            })
            .await
            .is_err(),
        "the server changed a consumer's replay policy"
    );
    p.publish(&event(&p, 0)).await.unwrap();
    for (name, setting) in [("headers", "headers_only"), ("paced", "replay_policy")] {
        match p.subscribe_durable(name, &filter).await {
            Err(Error::Conflict { resource, reason }) => {
                assert!(resource.contains(name), "{resource}");
                assert!(reason.contains(setting), "{reason}");
            }
            Err(other) => panic!("{name}: expected Conflict, got {other:?}"),
            Ok(_) => panic!("{name}: subscribed to a consumer that cannot deliver as asked"),
        }
    }
    let info = stream.consumer_info("headers").await.unwrap().clone();
    assert_eq!(info.ack_floor.stream_sequence, 0, "an event was settled");
}

/// A stream (or account) at its consumer limit refused a new consumer with
/// JetStream error 10026, which a subscription reported as an
/// `InvalidConfig` blaming its options and `history` as an untyped
/// `Provider` error. Both are a `Conflict` on the stream naming the limit.
#[tokio::test]
async fn the_consumer_limit_is_a_conflict_naming_it() {
    use async_nats::jetstream::stream;
    let server = server!("the_consumer_limit_is_a_conflict_naming_it");
    let config = common::config(&server, "maxcons");
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        max_consumers: 1,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let p = NatsProvider::connect(config).await.unwrap();
    let filter = p.category_subject("t");
    p.publish(&event(&p, 0)).await.unwrap();
    let _first = p.subscribe_durable("first", &filter).await.unwrap();
    let refusals = [
        (
            "durable",
            p.subscribe_durable("second", &filter).await.err(),
        ),
        ("ephemeral", p.subscribe(&filter).await.err()),
        ("history", p.history(Some(&filter), 10).await.err()),
    ];
    for (what, refusal) in refusals {
        match refusal {
            Some(Error::Conflict { resource, reason }) => {
                assert!(resource.contains(p.stream_name()), "{what}: {resource}");
                assert!(reason.contains("max_consumers"), "{what}: {reason}");
            }
            other => panic!("{what}: expected Conflict, got {other:?}"),
        }
    }
}
