//! `history` against a real server, checked against a model of the stream:
//! exactly the newest `limit` matches, newest first, no duplicates, for
//! dense, sparse, clustered and absent matches, with fewer matches than
//! `limit`, with one match at the very start, across deleted sequences and
//! undecodable payloads, with and without direct gets.

mod common;

use event_core::subject::subject_matches;
use event_core::{Event, EventProvider};
use event_nats::NatsProvider;
use serde_json::json;

macro_rules! server {
    ($name:expr) => {
        match common::NatsServer::start($name) {
            Some(s) => s,
            None => return,
        }
    };
}

/// Publishes one event per subject (payload `n` = its index) and returns
/// the subjects in stream order.
async fn publish(p: &NatsProvider, subjects: Vec<String>) -> Vec<String> {
    let events: Vec<Event> = subjects
        .iter()
        .enumerate()
        .map(|(n, s)| Event::new(s.clone(), "h", "h", "test", json!({ "n": n })))
        .collect();
    for chunk in events.chunks(5000) {
        for r in p.publish_batch(chunk).await.expect("batch") {
            r.expect("published");
        }
    }
    subjects
}

/// The payload indexes of `events`, in order.
fn indexes(events: &[Event]) -> Vec<usize> {
    events
        .iter()
        .map(|e| e.payload["n"].as_u64().expect("n") as usize)
        .collect()
}

/// The model: indexes of the newest `limit` subjects matching `filter`,
/// newest first, skipping the indexes in `gone`.
fn model(subjects: &[String], filter: Option<&str>, limit: usize, gone: &[usize]) -> Vec<usize> {
    (0..subjects.len())
        .rev()
        .filter(|n| !gone.contains(n))
        .filter(|n| filter.is_none_or(|f| subject_matches(f, &subjects[*n])))
        .take(limit)
        .collect()
}

/// Deterministic pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn check(p: &NatsProvider, subjects: &[String], filter: Option<&str>, limit: usize) {
    check_without(p, subjects, filter, limit, &[]).await;
}

async fn check_without(
    p: &NatsProvider,
    subjects: &[String],
    filter: Option<&str>,
    limit: usize,
    gone: &[usize],
) {
    let got = indexes(&p.history(filter, limit).await.expect("history"));
    let want = model(subjects, filter, limit, gone);
    assert_eq!(
        got,
        want,
        "filter {filter:?} limit {limit}: got {} events, want {}",
        got.len(),
        want.len()
    );
}

/// 20,000 events at random over categories of ~70%, 25%, 4% and 0.5%
/// density, each with topic `x` or `y`.
fn random_subjects(prefix: &str, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..20_000)
        .map(|_| {
            let category = match rng.below(1000) {
                0..5 => "vrare",
                5..45 => "rare",
                45..300 => "mid",
                _ => "dense",
            };
            let topic = if rng.below(2) == 0 { "x" } else { "y" };
            format!("{prefix}.{category}.{topic}")
        })
        .collect()
}

#[tokio::test]
async fn history_is_the_newest_matches_newest_first_for_any_density() {
    let server = server!("history_is_the_newest_matches_newest_first_for_any_density");
    let p = NatsProvider::connect(common::config(&server, "dens"))
        .await
        .unwrap();
    let prefix = p.subject_prefix().to_string();
    let subjects = publish(&p, random_subjects(&prefix, 0x9e37_79b9_7f4a_7c15)).await;
    let filters = [
        None,
        Some(format!("{prefix}.>")),
        Some(format!("{prefix}.*.*")),
        Some(format!("{prefix}.dense.*")),
        Some(format!("{prefix}.mid.x")),
        Some(format!("{prefix}.rare.>")),
        Some(format!("{prefix}.vrare.*")),
        Some(format!("{prefix}.vrare.y")),
        Some(format!("{prefix}.*.y")),
        Some(format!("{prefix}.nothing.*")),
        Some("elsewhere.>".to_string()),
    ];
    for filter in &filters {
        for limit in [1, 7, 20, 100, 333, 100_000] {
            check(&p, &subjects, filter.as_deref(), limit).await;
        }
    }
}

#[tokio::test]
async fn history_with_fewer_matches_than_limit_returns_them_all() {
    let server = server!("history_with_fewer_matches_than_limit_returns_them_all");
    let p = NatsProvider::connect(common::config(&server, "few"))
        .await
        .unwrap();
    let prefix = p.subject_prefix().to_string();
    // 5 matches spread over 10,000 events
    let subjects = publish(
        &p,
        (0..10_000)
            .map(|n| {
                let c = if n % 2000 == 1999 { "few" } else { "many" };
                format!("{prefix}.{c}.t")
            })
            .collect(),
    )
    .await;
    let filter = format!("{prefix}.few.t");
    let got = indexes(&p.history(Some(&filter), 100).await.unwrap());
    assert_eq!(got, vec![9999, 7999, 5999, 3999, 1999]);
    for limit in [1, 4, 5, 6, 1000] {
        check(&p, &subjects, Some(&filter), limit).await;
    }
    // an empty stream and a limit of 0
    let other = NatsProvider::connect(common::config(&server, "empty"))
        .await
        .unwrap();
    assert!(other.history(None, 10).await.unwrap().is_empty());
    assert!(other.history(Some(&filter), 10).await.unwrap().is_empty());
    assert!(p.history(Some(&filter), 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn history_finds_one_match_at_the_very_start_of_the_stream() {
    let server = server!("history_finds_one_match_at_the_very_start_of_the_stream");
    let p = NatsProvider::connect(common::config(&server, "start"))
        .await
        .unwrap();
    let prefix = p.subject_prefix().to_string();
    let subjects = publish(
        &p,
        (0..20_000)
            .map(|n| {
                let c = if n == 0 { "first" } else { "rest" };
                format!("{prefix}.{c}.t")
            })
            .collect(),
    )
    .await;
    for filter in [format!("{prefix}.first.t"), format!("{prefix}.first.*")] {
        for limit in [1, 100] {
            let got = indexes(&p.history(Some(&filter), limit).await.unwrap());
            assert_eq!(got, vec![0], "filter {filter} limit {limit}");
        }
    }
    // and the mirror image: the newest event is the only match
    let subjects = {
        let mut s = subjects;
        s.extend(publish(&p, vec![format!("{prefix}.last.t")]).await);
        s
    };
    let got = p
        .history(Some(&format!("{prefix}.last.*")), 100)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    check(&p, &subjects, Some(&format!("{prefix}.rest.t")), 150).await;
}

#[tokio::test]
async fn history_handles_clustered_matches() {
    let server = server!("history_handles_clustered_matches");
    let p = NatsProvider::connect(common::config(&server, "clu"))
        .await
        .unwrap();
    let prefix = p.subject_prefix().to_string();
    // "early": 300 in a block at the start; "middle": 200 in a block in the
    // middle; "late": 20 spread thinly then 980 packed at the end
    let subjects = publish(
        &p,
        (0..24_000)
            .map(|n| {
                let c = match n {
                    0..300 => "early",
                    10_000..10_200 => "middle",
                    _ if n >= 23_020 || n % 1000 == 500 => "late",
                    _ => "none",
                };
                format!("{prefix}.{c}.t")
            })
            .collect(),
    )
    .await;
    for c in ["early", "middle", "late"] {
        for limit in [1, 50, 150, 250, 990, 1500] {
            check(&p, &subjects, Some(&format!("{prefix}.{c}.*")), limit).await;
        }
    }
}

#[tokio::test]
async fn history_skips_deleted_sequences_and_undecodable_payloads() {
    let server = server!("history_skips_deleted_sequences_and_undecodable_payloads");
    let p = NatsProvider::connect(common::config(&server, "gaps"))
        .await
        .unwrap();
    let prefix = p.subject_prefix().to_string();
    let subjects = publish(
        &p,
        (0..10_000)
            .map(|n| {
                let c = if n % 100 == 0 { "sparse" } else { "dense" };
                format!("{prefix}.{c}.t")
            })
            .collect(),
    )
    .await;
    let js = async_nats::jetstream::new(p.client().clone());
    let stream = js.get_stream(p.stream_name()).await.unwrap();
    // delete the newest 40 sparse matches and 30 dense events (event n is
    // sequence n + 1)
    let mut gone: Vec<usize> = (0..40).map(|i| 9900 - i * 100).collect();
    gone.extend((0..30).map(|i| 9999 - i * 3));
    for n in &gone {
        assert!(stream.delete_message(*n as u64 + 1).await.unwrap());
    }
    for (filter, limit) in [
        (None, 100),
        (Some(format!("{prefix}.dense.*")), 100),
        (Some(format!("{prefix}.sparse.*")), 30),
        (Some(format!("{prefix}.sparse.t")), 1000),
    ] {
        check_without(&p, &subjects, filter.as_deref(), limit, &gone).await;
    }
    // undecodable payloads on matching subjects are skipped, not counted
    for _ in 0..3 {
        js.publish(format!("{prefix}.sparse.t"), "not an event".into())
            .await
            .unwrap()
            .await
            .unwrap();
        js.publish(format!("{prefix}.dense.t"), "{".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for (filter, limit) in [
        (None, 100),
        (Some(format!("{prefix}.dense.*")), 100),
        (Some(format!("{prefix}.sparse.*")), 30),
    ] {
        check_without(&p, &subjects, filter.as_deref(), limit, &gone).await;
    }
}

#[tokio::test]
async fn history_works_without_direct_gets() {
    let server = server!("history_works_without_direct_gets");
    let config_used = common::config(&server, "nodirect2");
    let p = NatsProvider::connect(config_used.clone()).await.unwrap();
    let js = async_nats::jetstream::new(p.client().clone());
    let mut stream = js.get_stream(p.stream_name()).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    assert!(config.allow_direct, "the provider enables direct gets");
    config.allow_direct = false;
    js.update_stream(&config).await.unwrap();
    let prefix = p.subject_prefix().to_string();
    let subjects = publish(&p, random_subjects(&prefix, 42)).await;
    for filter in ["vrare.*", "rare.x", "mid.>"] {
        for limit in [1, 20, 100] {
            check(&p, &subjects, Some(&format!("{prefix}.{filter}")), limit).await;
        }
    }
    // connecting again turns direct gets back on (updated in place)
    let again = NatsProvider::connect(config_used).await.unwrap();
    assert!(
        stream.info().await.unwrap().config.allow_direct,
        "reconnect re-enables allow_direct"
    );
    check(&again, &subjects, Some(&format!("{prefix}.vrare.*")), 20).await;
}

#[tokio::test]
async fn history_undecodable_matches_do_not_hide_older_events_in_the_same_window() {
    let server = server!("history_undecodable_matches_do_not_hide_older_events_in_the_same_window");
    let p = NatsProvider::connect(common::config(&server, "junkwin"))
        .await
        .unwrap();
    let prefix = p.subject_prefix().to_string();
    let js = async_nats::jetstream::new(p.client().clone());
    // 20,000 sequences: a cluster of 20 events at 19,000..19,020, then six
    // undecodable payloads on the same subject spread over the newer tail;
    // the sparse matches make `history` step through the tail window with
    // parallel message gets
    let junk = [19_200u64, 19_400, 19_600, 19_800, 19_900, 19_990];
    let mut cluster = Vec::new();
    let mut batch = Vec::new();
    for sequence in 1..=20_000u64 {
        if junk.contains(&sequence) {
            for r in p.publish_batch(&batch).await.unwrap() {
                r.unwrap();
            }
            batch.clear();
            let ack = js
                .publish(format!("{prefix}.m.t"), "not an event".into())
                .await
                .unwrap()
                .await
                .unwrap();
            assert_eq!(ack.sequence, sequence);
            continue;
        }
        let category = if (19_000..19_020).contains(&sequence) {
            cluster.push(sequence);
            "m"
        } else {
            "fill"
        };
        batch.push(Event::new(
            format!("{prefix}.{category}.t"),
            "h",
            "h",
            "test",
            json!({ "seq": sequence }),
        ));
        if batch.len() == 2000 {
            for r in p.publish_batch(&batch).await.unwrap() {
                r.unwrap();
            }
            batch.clear();
        }
    }
    for r in p.publish_batch(&batch).await.unwrap() {
        r.unwrap();
    }
    for limit in [1usize, 3, 5, 8, 20, 30] {
        let got: Vec<u64> = p
            .history(Some(&format!("{prefix}.m.*")), limit)
            .await
            .unwrap()
            .iter()
            .map(|e| e.payload["seq"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = cluster.iter().rev().take(limit).copied().collect();
        assert_eq!(got, want, "limit {limit}");
    }
}

/// Each `history` call's consumers are gone when it returns (the crate
/// docs: deleted before the call returns): `info` right after it counts
/// only the subscriptions' consumers (it counted the call's two, deleted
/// in the background), and the stream's `max_consumers` slots are free for
/// subscriptions.
#[tokio::test]
async fn history_consumers_are_gone_when_the_call_returns() {
    use async_nats::jetstream::stream;
    let server = server!("history_consumers_are_gone_when_the_call_returns");
    let config = common::config(&server, "histgone");
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // filtered history uses up to two consumers at once
    js.create_stream(stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        max_consumers: 2,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let p = NatsProvider::connect(config).await.unwrap();
    let prefix = p.subject_prefix().to_string();
    publish(
        &p,
        (0..200)
            .map(|n| format!("{prefix}.{}.t", if n % 2 == 0 { "a" } else { "b" }))
            .collect(),
    )
    .await;
    let filter = format!("{prefix}.a.t");
    for round in 0..20 {
        let filtered = p.history(Some(&filter), 5).await;
        assert!(filtered.is_ok(), "round {round}: filtered: {filtered:?}");
        assert_eq!(p.info().await.unwrap().consumers, 0, "round {round}");
        let unfiltered = p.history(None, 5).await;
        assert!(
            unfiltered.is_ok(),
            "round {round}: unfiltered: {unfiltered:?}"
        );
        assert_eq!(p.info().await.unwrap().consumers, 0, "round {round}");
        // the stream's two slots are free for subscriptions
        let first = p.subscribe_durable("d1", &filter).await;
        let second = p.subscribe(&filter).await;
        assert!(
            first.is_ok() && second.is_ok(),
            "round {round}: subscribing after history: {:?} / {:?}",
            first.err(),
            second.err()
        );
        let (mut first, mut second) = (first.unwrap(), second.unwrap());
        first.close().await.unwrap();
        second.close().await.unwrap();
        p.unsubscribe("d1").await.unwrap();
    }
}
