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
/// is back), then checks that the stream holds each exactly once; returns
/// their sequences.
async fn retry_until_stored_once(p: &NatsProvider, events: &[Event]) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let sequences = loop {
        let results = p.publish_batch(events).await.unwrap();
        if results.iter().all(Result::is_ok) {
            break results.into_iter().map(Result::unwrap).collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "never stored: {results:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
    sequences
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
    // (the first publishes may be acknowledged before SIGSTOP takes hold)
    let mut acked = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(sequence) => acked.push((i, *sequence)),
            Err(e @ Error::Timeout { .. }) => assert!(e.is_transient()),
            other => panic!("expected Timeout, got {other:?}"),
        }
    }
    assert!(acked.len() < 8, "{acked:?}");
    // what was sent is stored once the server runs again; the retry with
    // the same ids stores the rest and deduplicates the rest
    let retried = retry_until_stored_once(&p, &events).await;
    for (i, sequence) in acked {
        assert_eq!(retried[i], sequence, "event {i} was reported stored there");
    }
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
    let results = tokio::time::timeout(Duration::from_secs(60), p.publish_batch(&events))
        .await
        .expect("the batch hung: each event waited out the timeout for room in the queue")
        .unwrap();
    let elapsed = started.elapsed();
    // each event waiting out the 2 s timeout for room would take hours;
    // one timeout is 2 s, plus encoding and writing 41 MB (a debug build on
    // a loaded two-core machine took 14 s)
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    // (the first publishes may be acknowledged before SIGSTOP takes hold)
    let acked: Vec<(usize, u64)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().map(|sequence| (i, *sequence)))
        .collect();
    assert!(acked.len() < 100, "{} acknowledged", acked.len());
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(Error::Timeout { .. }))),
        "{:?}",
        results
            .iter()
            .find(|r| !matches!(r, Ok(_) | Err(Error::Timeout { .. })))
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
    let retried = retry_until_stored_once(&p, &events).await;
    for (i, sequence) in acked {
        assert_eq!(retried[i], sequence, "event {i} was reported stored there");
    }
}

/// The stream's settings, as an administrator would change them.
async fn stream_config(p: &NatsProvider) -> async_nats::jetstream::stream::Config {
    let js = async_nats::jetstream::new(p.client().clone());
    let mut stream = js.get_stream(p.stream_name()).await.unwrap();
    stream.info().await.unwrap().config.clone()
}

async fn update_stream(p: &NatsProvider, config: &async_nats::jetstream::stream::Config) {
    let js = async_nats::jetstream::new(p.client().clone());
    js.update_stream(config).await.unwrap();
}

#[tokio::test]
async fn a_full_stream_with_discard_new_is_a_conflict_naming_the_limit_not_an_outage() {
    let server =
        server!("a_full_stream_with_discard_new_is_a_conflict_naming_the_limit_not_an_outage");
    let options = NatsOptions {
        discard: event_nats::DiscardPolicy::New,
        ..NatsOptions::default()
    };
    for (limit, config) in [
        (
            "maximum messages exceeded",
            NatsConfig {
                max_events: 3,
                ..common::config(&server, "fullm")
            },
        ),
        (
            "maximum bytes exceeded",
            NatsConfig {
                max_bytes: 2_000,
                ..common::config(&server, "fullb")
            },
        ),
    ] {
        let p = NatsProvider::connect_with(config, options.clone())
            .await
            .unwrap();
        let mut stored = 0;
        while p.publish(&event(&p, stored, 300)).await.is_ok() {
            stored += 1;
            assert!(stored < 10, "{limit}: the stream never filled");
        }
        let single = p.publish(&event(&p, 100, 300)).await;
        let batch = p
            .publish_batch(&[event(&p, 101, 300), event(&p, 102, 300)])
            .await
            .unwrap();
        for result in std::iter::once(single).chain(batch) {
            match result {
                Err(e @ Error::Conflict { .. }) => {
                    assert!(!e.is_transient(), "{e}");
                    let text = e.to_string();
                    assert!(
                        text.contains(p.stream_name()) && text.contains(limit),
                        "{limit}: {text}"
                    );
                }
                other => panic!("{limit}: expected Conflict, got {other:?}"),
            }
        }
        assert_eq!(p.info().await.unwrap().messages, stored);
    }
}

/// Publishes events of about 2 KB until the server refuses one; returns how
/// many it stored and the refusal.
async fn fill_until_refused(p: &NatsProvider) -> (u64, Error) {
    for n in 0..5_000 {
        if let Err(e) = p.publish(&event(p, n, 2_000)).await {
            return (n, e);
        }
    }
    panic!("5,000 events of 2 KB never filled the server's store");
}

/// A server-wide JetStream store that is full (`max_file_store`,
/// `max_memory_store`) refuses every publish until space is freed:
/// nats-server answers "insufficient resources" with status 503, as it
/// answers an outage, but nothing clears by retrying, so it is a
/// `Conflict` saying what is full and what to do, as a full stream is, not
/// a transient `Connection` that a retry loop would spin on forever. A
/// server that is down stays transient.
#[tokio::test]
async fn a_full_server_store_is_a_conflict_naming_it_not_an_outage() {
    for (limit, storage) in [
        ("max_file_store", event_nats::StorageType::File),
        ("max_memory_store", event_nats::StorageType::Memory),
    ] {
        let Some(mut server) = NatsServer::start_with_jetstream(
            "a_full_server_store_is_a_conflict_naming_it_not_an_outage",
            &format!("{limit}: 1MB"),
        ) else {
            return;
        };
        let config = NatsConfig {
            storage,
            ..common::config(&server, "srvfull")
        };
        let p = NatsProvider::connect(config).await.unwrap();
        let (stored, first) = fill_until_refused(&p).await;
        assert!(
            stored > 100,
            "{limit}: refused after {stored} events: {first:?}"
        );
        // a small event too, and a batch: the store is full, not the event
        // too large
        let small = p.publish(&event(&p, 10_000, 10)).await;
        let batch = p
            .publish_batch(&[event(&p, 10_001, 10), event(&p, 10_002, 2_000)])
            .await
            .unwrap();
        for result in [Err(first), small].into_iter().chain(batch) {
            match result {
                Err(e @ Error::Conflict { .. }) => {
                    assert!(!e.is_transient(), "{limit}: {e}");
                    let text = e.to_string();
                    assert!(
                        text.contains(p.stream_name())
                            && text.contains(limit)
                            && text.contains("full")
                            && text.contains("insufficient resources"),
                        "{limit}: {text}"
                    );
                }
                other => panic!("{limit}: expected Conflict, got {other:?}"),
            }
        }
        assert_eq!(p.info().await.unwrap().messages, stored, "{limit}");
        // the same provider on a server that is down: transient
        server.kill();
        let down = p.publish(&event(&p, 10_003, 10)).await.unwrap_err();
        assert!(down.is_transient(), "{limit}: a server down: {down:?}");
    }
}

/// JetStream reserves a new stream's `max_bytes` in its store: a
/// `max_bytes` larger than the server's store is refused at connect with
/// an error that names `max_bytes`, its value and the server limit to
/// raise (it quoted only the server's "insufficient storage resources").
#[tokio::test]
async fn a_max_bytes_beyond_the_server_store_is_refused_naming_it() {
    let Some(server) = NatsServer::start_with_jetstream(
        "a_max_bytes_beyond_the_server_store_is_refused_naming_it",
        "max_file_store: 1MB",
    ) else {
        return;
    };
    let config = NatsConfig {
        max_bytes: 10_000_000,
        ..common::config(&server, "reserve")
    };
    let err = NatsProvider::connect(config).await.err().unwrap();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("max_bytes is 10000000") && text.contains("max_file_store"),
        "{text}"
    );
}

/// An account's JetStream storage limit (`max_file` / `max_mem` of the
/// account) refuses an event that does not fit (status 400, "resource limits
/// exceeded for account"): a `Conflict` naming the limit and what to do,
/// not a bare provider error.
#[tokio::test]
async fn an_account_storage_limit_is_a_conflict_naming_it() {
    for (limit, storage) in [
        ("max_file", event_nats::StorageType::File),
        ("max_mem", event_nats::StorageType::Memory),
    ] {
        let Some(server) = NatsServer::start_with(
            "an_account_storage_limit_is_a_conflict_naming_it",
            &format!(
                "accounts {{\n  JS: {{ jetstream: {{ {limit}: 1MB }}, users: [ {{ user: js, \
                 password: js }} ] }}\n}}"
            ),
        ) else {
            return;
        };
        let config = NatsConfig {
            storage,
            ..common::config(&server, "accfull")
        };
        let options = NatsOptions {
            user: Some("js".into()),
            password: Some("js".into()),
            ..NatsOptions::default()
        };
        let p = NatsProvider::connect_with(config, options).await.unwrap();
        let (stored, refused) = fill_until_refused(&p).await;
        match refused {
            e @ Error::Conflict { .. } => {
                assert!(!e.is_transient(), "{limit}: {e}");
                let text = e.to_string();
                assert!(
                    text.contains(p.stream_name())
                        && text.contains(limit)
                        && text.contains("account")
                        && text.contains("resource limits exceeded"),
                    "{limit}: {text}"
                );
            }
            other => panic!("{limit}: expected Conflict, got {other:?}"),
        }
        assert_eq!(p.info().await.unwrap().messages, stored, "{limit}");
    }
}

#[tokio::test]
async fn a_stream_message_limit_below_max_payload_is_payload_too_large() {
    let server = server!("a_stream_message_limit_below_max_payload_is_payload_too_large");
    let p = NatsProvider::connect(common::config(&server, "msgsize"))
        .await
        .unwrap();
    // an administrator limits the stream's messages to 1000 bytes, far
    // below the server's 64 KiB max_payload
    let mut config = stream_config(&p).await;
    config.max_message_size = 1_000;
    update_stream(&p, &config).await;
    let big = event(&p, 1, 5_000);
    let size = serde_json::to_vec(&big).unwrap().len();
    let single = p.publish(&big).await;
    let batch = p
        .publish_batch(&[event(&p, 2, 5_000), event(&p, 3, 10)])
        .await
        .unwrap();
    for result in [single, batch.into_iter().next().unwrap()] {
        match result {
            Err(Error::PayloadTooLarge { size: got, max }) => {
                assert!(got >= size && got < size + 200, "{got} vs {size}");
                assert_eq!(max, 1_000);
            }
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
    }
    // small events still go through
    assert!(p.publish(&event(&p, 4, 10)).await.is_ok());
}

/// An event larger than the stream's `max_bytes` can never be stored.
/// JetStream (discard Old) acknowledged it and then, to get under the
/// limit, discarded every event of the stream, the new one too: the publish
/// returned a sequence and the stream was left empty. Discard New called it
/// "the stream is full". Both refuse it before sending now, with the
/// largest size the stream holds on its subject, and the stream keeps what
/// it held; an event that fits to the byte is stored, on file and memory
/// storage (which count different overheads).
#[tokio::test]
async fn an_event_larger_than_the_stream_max_bytes_is_refused_not_acked_and_lost() {
    use event_nats::{DiscardPolicy, StorageType};
    let server = server!("an_event_larger_than_the_stream_max_bytes_is_refused_not_acked_and_lost");
    for (discard, storage, overhead) in [
        (DiscardPolicy::Old, StorageType::File, 34),
        (DiscardPolicy::New, StorageType::File, 34),
        (DiscardPolicy::Old, StorageType::Memory, 16),
    ] {
        let case = format!("{discard:?} {storage:?}");
        let config = NatsConfig {
            max_bytes: 4_000,
            storage,
            ..common::config(&server, "maxbytes")
        };
        let options = NatsOptions {
            discard,
            ..NatsOptions::default()
        };
        let p = NatsProvider::connect_with(config, options).await.unwrap();
        for n in 1..=3 {
            p.publish(&event(&p, n, 10)).await.unwrap();
        }
        // payload and headers as sent, and what the stream counts for them
        let headers = |e: &Event| 12 + "Nats-Msg-Id".len() + 4 + e.id.len();
        let sent = |e: &Event| serde_json::to_vec(e).unwrap().len() + headers(e);
        let room = 4_000 - p.build_subject("t", "x").len() - overhead;
        let big = event(&p, 4, 5_000);
        let single = p.publish(&big).await;
        let batch = p
            .publish_batch(&[event(&p, 5, 5_000), event(&p, 6, 10)])
            .await
            .unwrap();
        let mut results = std::iter::once(single).chain(batch);
        for result in results.by_ref().take(2) {
            match result {
                Err(Error::PayloadTooLarge { size, max }) => {
                    assert_eq!(max, room, "{case}");
                    assert!(size > 5_000 && size < 5_400, "{case}: {size}");
                }
                other => panic!("{case}: expected PayloadTooLarge, got {other:?}"),
            }
        }
        assert_eq!(results.next().unwrap().unwrap(), 4, "{case}");
        let info = p.info().await.unwrap();
        assert_eq!((info.messages, info.first_sequence), (4, 1), "{case}");
        assert_eq!(p.history(None, 10).await.unwrap().len(), 4, "{case}");
        if discard == DiscardPolicy::Old {
            // the bound is exact: an event one byte over is refused, one
            // that takes the whole limit is stored (the four events before
            // it are discarded to make room) and kept
            let mut over = event(&p, 7, 3_000);
            let grow = room + 1 - sent(&over);
            over.payload = json!({ "n": 7, "blob": "x".repeat(3_000 + grow) });
            assert_eq!(sent(&over), room + 1);
            match p.publish(&over).await {
                Err(Error::PayloadTooLarge { size, max }) => {
                    assert_eq!((size, max), (room + 1, room), "{case}")
                }
                other => panic!("{case}: expected PayloadTooLarge, got {other:?}"),
            }
            let mut fits = event(&p, 8, 3_000);
            let grow = room - sent(&fits);
            fits.payload = json!({ "n": 8, "blob": "x".repeat(3_000 + grow) });
            assert_eq!(sent(&fits), room);
            let sequence = p.publish(&fits).await.unwrap();
            let info = p.info().await.unwrap();
            assert_eq!((info.messages, info.last_sequence), (1, sequence), "{case}");
            assert_eq!(p.history(None, 10).await.unwrap()[0].id, fits.id, "{case}");
        }
    }
}

/// A stream `max_bytes` changed by an administrator after connect: a lower
/// one applies once the provider reads the stream's info again (`info`,
/// `health`), a higher one at the next event refused against the old one
/// (which reads the limit again before refusing).
#[tokio::test]
async fn a_stream_max_bytes_changed_elsewhere_is_used() {
    let server = server!("a_stream_max_bytes_changed_elsewhere_is_used");
    let p = NatsProvider::connect(common::config(&server, "changed"))
        .await
        .unwrap();
    p.publish(&event(&p, 1, 10)).await.unwrap();
    let mut config = stream_config(&p).await;
    config.max_bytes = 3_000;
    update_stream(&p, &config).await;
    assert!(p.health().await.unwrap());
    let room = 3_000 - p.build_subject("t", "x").len() - 34;
    match p.publish(&event(&p, 2, 5_000)).await {
        Err(Error::PayloadTooLarge { max, .. }) => assert_eq!(max, room),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert_eq!(p.info().await.unwrap().messages, 1);
    config.max_bytes = 100_000;
    update_stream(&p, &config).await;
    assert_eq!(p.publish(&event(&p, 3, 5_000)).await.unwrap(), 2);
    let batch = p.publish_batch(&[event(&p, 4, 5_000)]).await.unwrap();
    assert_eq!(batch[0].as_ref().unwrap(), &3);
}

#[tokio::test]
async fn a_max_payload_raised_by_a_restart_is_used() {
    let mut server = match NatsServer::start_with(
        "a_max_payload_raised_by_a_restart_is_used",
        "max_payload: 16384",
    ) {
        Some(s) => s,
        None => return,
    };
    let p = NatsProvider::connect(common::config(&server, "raised"))
        .await
        .unwrap();
    assert_eq!(p.max_payload(), 16_384);
    server.set_extra("");
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while p.client().server_info().max_payload != 65_536 {
        assert!(Instant::now() < deadline, "no reconnection after restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 30 KB fits the server's limit now: refusing it against the old one
    // would refuse it until someone called health()
    let sequence = p.publish(&event(&p, 1, 30_000)).await;
    assert_eq!(sequence.unwrap(), 1);
    assert_eq!(p.max_payload(), 65_536);
}

#[tokio::test]
async fn a_stream_whose_subjects_were_changed_elsewhere_is_a_conflict_not_an_outage() {
    let server =
        server!("a_stream_whose_subjects_were_changed_elsewhere_is_a_conflict_not_an_outage");
    let p = NatsProvider::connect(common::config(&server, "subj"))
        .await
        .unwrap();
    p.publish(&event(&p, 1, 10)).await.unwrap();
    let mut config = stream_config(&p).await;
    let own = format!("{}.>", p.subject_prefix());
    config.subjects = vec![format!("{}other.>", p.subject_prefix())];
    update_stream(&p, &config).await;
    // nothing stores the event now: this is not a server that is down or
    // recovering (a transient error a caller would retry forever)
    match p.publish(&event(&p, 2, 10)).await {
        Err(e @ Error::Conflict { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(p.stream_name()) && text.contains(&own),
                "{text}"
            );
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    // a consumer on the provider's subjects is refused for the same reason:
    // the stream, not the subscribe options
    let filter = p.category_subject("t");
    for (what, result) in [
        ("subscribe", p.subscribe(&filter).await.map(|_| ())),
        (
            "subscribe_durable",
            p.subscribe_durable("d", &filter).await.map(|_| ()),
        ),
    ] {
        match result {
            Err(e @ Error::Conflict { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(p.stream_name()) && text.contains(&own),
                    "{what}: {text}"
                );
            }
            other => panic!("{what}: expected Conflict, got {other:?}"),
        }
    }
    // another stream takes the subjects: an event it stores is not in the
    // provider's stream, and must not be reported as published there
    let js = async_nats::jetstream::new(p.client().clone());
    let other = format!("{}_OTHER", p.stream_name());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: other.clone(),
        subjects: vec![own.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let single = p.publish(&event(&p, 3, 10)).await;
    let batch = p.publish_batch(&[event(&p, 4, 10)]).await.unwrap();
    for result in [single, batch.into_iter().next().unwrap()] {
        match result {
            Err(e @ Error::Conflict { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(p.stream_name()) && text.contains(&other),
                    "{text}"
                );
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
    }
    assert_eq!(p.info().await.unwrap().messages, 1);
}

#[tokio::test]
async fn a_sealed_stream_refuses_with_a_conflict() {
    let server = server!("a_sealed_stream_refuses_with_a_conflict");
    let p = NatsProvider::connect(common::config(&server, "sealed"))
        .await
        .unwrap();
    p.publish(&event(&p, 1, 10)).await.unwrap();
    let mut config = stream_config(&p).await;
    config.sealed = true;
    update_stream(&p, &config).await;
    let single = p.publish(&event(&p, 2, 10)).await;
    let batch = p.publish_batch(&[event(&p, 3, 10)]).await.unwrap();
    for result in [single, batch.into_iter().next().unwrap()] {
        match result {
            Err(e @ Error::Conflict { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(p.stream_name()) && text.contains("sealed"),
                    "{text}"
                );
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stream_created_elsewhere_without_publish_acks_gets_them_on_connect() {
    let server = server!("a_stream_created_elsewhere_without_publish_acks_gets_them_on_connect");
    let config = NatsConfig {
        request_timeout_secs: 1,
        ..common::config(&server, "noack")
    };
    // created by an operations tool with `--no-ack`: JetStream stores
    // publishes without answering them, so every publish timed out (and
    // was retried, as a timeout invites) although it was stored
    let client = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: config.stream_name.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            no_ack: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let p = NatsProvider::connect(config).await.unwrap();
    assert_eq!(p.publish(&event(&p, 1, 10)).await.unwrap(), 1);
    assert!(!stream_config(&p).await.no_ack);
}

#[tokio::test]
async fn closing_a_durable_with_a_pull_outstanding_while_the_server_is_down_takes_one_timeout() {
    let mut server = server!(
        "closing_a_durable_with_a_pull_outstanding_while_the_server_is_down_takes_one_timeout"
    );
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "closepull")
    };
    let p = NatsProvider::connect(config).await.unwrap();
    let mut sub = p
        .subscribe_durable("d", &p.category_subject("t"))
        .await
        .unwrap();
    // a call waiting for events, cancelled (a consumer runner's shutdown
    // does this): its pull request stays open
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next_manual_ack())
            .await
            .is_err()
    );
    server.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.is_connected() {
        assert!(Instant::now() < deadline, "the client did not notice");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // close waited once for a round trip to collect what the pull had
    // brought, then once more to flush: twice the request timeout
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(20), sub.close())
        .await
        .expect("close hung");
    let took = started.elapsed();
    assert!(
        matches!(closed, Err(ref e) if e.is_transient()),
        "{closed:?}"
    );
    assert!(took < Duration::from_secs(3), "close took {took:?}");
}

/// A server that stops answering without closing the connection (a paused
/// process here; a network partition that drops packets looks the same to
/// the client: a half-open connection) is noticed once about three pings
/// go unanswered, `NatsOptions::ping_interval` apart: the connection is then
/// reported lost, and re-established once the server answers again. With
/// async-nats's default (60 s) that took three minutes.
#[tokio::test]
async fn a_server_that_stops_answering_is_noticed_after_a_few_pings() {
    let server = server!("a_server_that_stops_answering_is_noticed_after_a_few_pings");
    let options = NatsOptions {
        ping_interval: Duration::from_secs(1),
        ..NatsOptions::default()
    };
    let p = NatsProvider::connect_with(common::config(&server, "ping"), options)
        .await
        .unwrap();
    assert!(p.is_connected());
    server.pause();
    let paused = Instant::now();
    while p.is_connected() {
        assert!(
            paused.elapsed() < Duration::from_secs(15),
            "a silent server not noticed after 15 pings"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // not on the first missed ping: a busy server may answer late
    assert!(
        paused.elapsed() >= Duration::from_secs(1),
        "{:?}",
        paused.elapsed()
    );
    server.resume();
    let resumed = Instant::now();
    while !p.is_connected() {
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "not reconnected after the server answered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(p.health().await.unwrap());
    for short in [Duration::ZERO, Duration::from_millis(999)] {
        assert!(
            matches!(
                NatsOptions {
                    ping_interval: short,
                    ..NatsOptions::default()
                }
                .validate(),
                Err(Error::InvalidConfig { .. })
            ),
            "{short:?}"
        );
    }
}

/// A ping interval beyond what the client's timers hold is held at
/// `MAX_PING_INTERVAL` ("practically never"), not a panic of the
/// connection's task: the provider connects, publishes and stays healthy.
#[tokio::test]
async fn a_ping_interval_beyond_range_is_held() {
    let server = server!("a_ping_interval_beyond_range_is_held");
    let options = NatsOptions {
        ping_interval: Duration::MAX,
        ..NatsOptions::default()
    };
    let p = NatsProvider::connect_with(common::config(&server, "pingmax"), options)
        .await
        .unwrap();
    for n in 0..20 {
        p.publish(&event(&p, n, 10)).await.unwrap();
    }
    assert!(p.health().await.unwrap());
    assert_eq!(p.info().await.unwrap().messages, 20);
}
