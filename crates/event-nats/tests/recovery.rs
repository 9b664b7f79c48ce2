//! Recovery: SIGKILL and restart the server twice (same store, same port)
//! while 100,000 events are published through the batch API and a durable
//! consumer reads throughout.

mod common;

use common::NatsServer;
use event_core::{Event, EventProvider, SubscribeOptions};
use event_nats::{NatsConfig, NatsProvider};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOTAL: u64 = 100_000;
const CHUNK: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_twice_during_batch_publish() {
    let Some(server) = NatsServer::start("kill_and_restart_twice_during_batch_publish") else {
        return;
    };
    let config = NatsConfig {
        request_timeout_secs: 2,
        ..common::config(&server, "rec")
    };
    let server = Arc::new(Mutex::new(server));
    let p = Arc::new(NatsProvider::connect(config).await.expect("connect"));
    let deadline = Instant::now() + Duration::from_secs(150);

    // the durable reader, running throughout
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let p = p.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let opts = SubscribeOptions {
                ack_wait: Some(Duration::from_secs(2)),
                ..SubscribeOptions::default()
            };
            let filter = p.category_subject("rec");
            let mut seen: HashMap<u64, u64> = HashMap::new();
            let mut errors = 0u64;
            let mut sub = None;
            while (seen.len() as u64) < TOTAL && Instant::now() < deadline {
                if sub.is_none() {
                    match p
                        .subscribe_durable_with_options("reader", &filter, &opts)
                        .await
                    {
                        Ok(s) => sub = Some(s),
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
                let Some(s) = sub.as_mut() else { continue };
                match tokio::time::timeout(Duration::from_secs(5), s.next_manual_ack()).await {
                    Ok(Ok(Some(pending))) => {
                        let n = pending.received.event.payload["n"].as_u64().expect("n");
                        let seq = pending.received.sequence;
                        if let Some(prev) = seen.insert(n, seq) {
                            assert_eq!(prev, seq, "event {n} stored twice");
                        }
                        // an ack lost in an outage is redelivered: fine
                        let _ = pending.ack().await;
                    }
                    Ok(Ok(None)) => panic!("durable subscription ended"),
                    Ok(Err(_)) => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(_) => {
                        if done.load(Ordering::Relaxed) {
                            // idle although everything was published:
                            // resubscribe (resumes after the last ack)
                            sub = None;
                        }
                    }
                }
            }
            (seen, errors)
        })
    };

    // the killer: SIGKILL + restart at 30% and at 65% of acknowledged events
    let acked = Arc::new(AtomicU64::new(0));
    let killer = {
        let acked = acked.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let mut kills = 0;
            for threshold in [TOTAL * 30 / 100, TOTAL * 65 / 100] {
                while acked.load(Ordering::Relaxed) < threshold {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let server = server.clone();
                tokio::task::spawn_blocking(move || {
                    let mut s = server.lock().expect("server lock");
                    s.kill();
                    std::thread::sleep(Duration::from_millis(500));
                    s.restart();
                })
                .await
                .expect("restart");
                kills += 1;
            }
            kills
        })
    };

    let events: Vec<Event> = (0..TOTAL)
        .map(|n| {
            Event::new(
                p.build_subject("rec", "t"),
                "rec",
                "recovery",
                "test",
                json!({ "n": n }),
            )
        })
        .collect();
    let mut sequences: Vec<Option<u64>> = vec![None; events.len()];
    let mut failed_first_round = 0usize;
    for (c, chunk) in events.chunks(CHUNK).enumerate() {
        let started = Instant::now();
        let results = p.publish_batch(chunk).await.expect("batch");
        if started.elapsed() > Duration::from_secs(1) {
            eprintln!("recovery: chunk {c} took {:?}", started.elapsed());
        }
        assert_eq!(results.len(), chunk.len());
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(seq) => {
                    sequences[c * CHUNK + i] = Some(seq);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    assert!(
                        e.is_transient(),
                        "failures are reported as transient: {e:?}"
                    );
                    failed_first_round += 1;
                }
            }
        }
    }
    // the killer must have fired during the publishing
    acked.fetch_add(TOTAL, Ordering::Relaxed);
    assert_eq!(killer.await.expect("killer"), 2);

    // retry the failed ones with the same msg id (the event id)
    let mut rounds = 0;
    loop {
        let missing: Vec<usize> = (0..events.len())
            .filter(|i| sequences[*i].is_none())
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} events never published",
            missing.len()
        );
        rounds += 1;
        let batch: Vec<Event> = missing.iter().map(|i| events[*i].clone()).collect();
        let started = Instant::now();
        let mut last_error = None;
        for (i, r) in missing
            .iter()
            .zip(p.publish_batch(&batch).await.expect("batch"))
        {
            match r {
                Ok(seq) => sequences[*i] = Some(seq),
                Err(e) => last_error = Some(e),
            }
        }
        eprintln!(
            "recovery: retry round {rounds}: {} events in {:?}, last error {last_error:?}",
            batch.len(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done.store(true, Ordering::Relaxed);
    eprintln!(
        "recovery: {failed_first_round} publishes failed during the outages, retried in {rounds} round(s)"
    );

    // no loss, no duplicates: one stored message per event
    let info = p.info().await.expect("info");
    assert_eq!(info.messages, TOTAL, "exactly one stored message per event");
    let mut unique: Vec<u64> = sequences.iter().map(|s| s.expect("published")).collect();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len() as u64,
        TOTAL,
        "every event has its own sequence"
    );

    // the durable reader got everything, at the acknowledged sequences
    let (seen, reader_errors) = reader.await.expect("reader");
    assert_eq!(
        seen.len() as u64,
        TOTAL,
        "reader saw every event ({reader_errors} transient errors)"
    );
    for (n, seq) in sequences.iter().enumerate() {
        assert_eq!(
            seen.get(&(n as u64)),
            seq.as_ref(),
            "event {n} is stored at its acknowledged sequence"
        );
    }
    eprintln!("recovery: reader rode out {reader_errors} transient errors");
    drop(server);
}
