//! The provider on a three-node JetStream cluster (real `nats-server`
//! processes, random ports): an ephemeral subscription keeps delivering
//! when the node hosting its consumer is killed; `health()` follows the
//! stream's quorum; a stream the cluster cannot place is refused clearly.

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsCluster;
use event_core::EventProvider;
use event_nats::{NatsConfig, NatsOptions, NatsProvider};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Connects once the cluster has a meta leader (stream creation fails
/// until then); a cluster not ready in a minute fails the test with the
/// end of each node's log.
async fn connect(config: NatsConfig, cluster: &NatsCluster) -> NatsProvider {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let options = NatsOptions {
            replicas: 3,
            ..NatsOptions::default()
        };
        match NatsProvider::connect_with(config.clone(), options).await {
            Ok(p) => return p,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                let logs: Vec<String> = cluster
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, node)| {
                        let log = node.log();
                        let lines: Vec<&str> = log.lines().collect();
                        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                        format!("--- n{} log (end) ---\n{tail}", i + 1)
                    })
                    .collect();
                panic!("cluster not ready: {e}\n{}", logs.join("\n"));
            }
        }
    }
}

/// The name and the leader (a `server_name`) of the only consumer on
/// `stream`, asked through `url`.
async fn consumer_leader(url: &str, stream: &str) -> (String, String, usize) {
    let client = async_nats::connect(url).await.expect("connect probe");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(stream).await.expect("stream");
    let names: Vec<String> = {
        use futures_util::StreamExt as _;
        let mut names = Vec::new();
        let mut list = stream.consumer_names();
        while let Some(name) = list.next().await {
            names.push(name.expect("consumer name"));
        }
        names
    };
    assert_eq!(names.len(), 1, "consumers: {names:?}");
    let info = stream
        .consumer_info(names[0].as_str())
        .await
        .expect("consumer info");
    let cluster = info.cluster.as_ref().expect("cluster info");
    let leader = cluster.leader.clone().expect("consumer leader");
    (names[0].clone(), leader, cluster.replicas.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_survives_the_loss_of_its_consumer_node() {
    let Some(mut cluster) = NatsCluster::start("ephemeral_survives_the_loss_of_its_consumer_node")
    else {
        return;
    };
    let (stream_name, subject_prefix) = common::unique("clu");
    let config = NatsConfig {
        url: cluster.urls(),
        stream_name: stream_name.clone(),
        subject_prefix,
        max_events: 0,
        max_age_secs: 0,
        connect_timeout_secs: 5,
        request_timeout_secs: 2,
        ..NatsConfig::default()
    };
    let p = connect(config, &cluster).await;
    let filter = p.category_subject("clu");
    let mut sub = p.subscribe(&filter).await.expect("subscribe");

    // events until the first one is delivered: the consumer works
    let publish = |n: u64| {
        let p = &p;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            // retried until stored: the stream may be electing a leader
            while let Err(e) = p.publish(&common::numbered_event(p, "clu", n)).await {
                assert!(Instant::now() < deadline, "publish {n}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    publish(0).await;
    let first = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("first event in time")
        .expect("first event")
        .expect("subscription open");
    assert_eq!(first.event.payload["n"], 0);

    let (name, leader, replicas) = consumer_leader(&cluster.nodes[0].url(), &stream_name).await;
    eprintln!("consumer {name} leader {leader}, {replicas} other replicas");
    cluster.node(&leader).kill();
    let killed = Instant::now();

    for n in 1..=5 {
        publish(n).await;
    }
    eprintln!("events 1..=5 stored {:?} after the kill", killed.elapsed());
    // delivered within a bound while the node stays down
    let bound = Duration::from_secs(30);
    let mut seen = BTreeSet::new();
    while seen.len() < 5 {
        let left = bound.saturating_sub(killed.elapsed());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Ok(Some(received))) => {
                let n = received.event.payload["n"].as_u64().expect("n");
                if n > 0 {
                    seen.insert(n);
                }
            }
            Ok(Ok(None)) => panic!("subscription ended"),
            // transient errors while the cluster fails over: call again
            Ok(Err(e)) => {
                eprintln!("next: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => panic!(
                "only {seen:?} of events 1..=5 delivered {bound:?} after killing {leader}, \
                 the node of consumer {name}"
            ),
        }
    }
    eprintln!(
        "events 1..=5 delivered {:?} after the kill",
        killed.elapsed()
    );
}

/// Polls `health()` until it is `want` (`limit` at most); how long it took.
async fn health_becomes(provider: &NatsProvider, want: bool, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if provider.health().await.unwrap() == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "health() did not become {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Too many replicas for the cluster are refused naming the option. With
/// two of the three nodes of a replicated (R3) stream down, the node
/// left answers the stream lookup (naming itself leader for a while, then
/// no leader) while every write times out: `health()` says false, and true
/// again once a second node is back and the stream takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_false_while_a_replicated_stream_has_no_quorum() {
    let Some(mut cluster) =
        NatsCluster::start("health_is_false_while_a_replicated_stream_has_no_quorum")
    else {
        return;
    };
    let mut config = common::config(&cluster.nodes[0], "quorum");
    config.url = cluster.urls();
    config.request_timeout_secs = 2;
    let provider = connect(config.clone(), &cluster).await;
    health_becomes(&provider, true, Duration::from_secs(30)).await;

    // more replicas than the cluster has servers: refused, naming the option
    let mut five = common::config(&cluster.nodes[0], "five");
    five.url = config.url.clone();
    let refused = NatsProvider::connect_with(
        five,
        NatsOptions {
            replicas: 5,
            ..NatsOptions::default()
        },
    )
    .await
    .expect_err("5 replicas on 3 servers");
    assert!(
        matches!(refused, event_core::Error::InvalidConfig { .. })
            && refused.to_string().contains("NatsOptions::replicas is 5"),
        "{refused}"
    );

    // a single-replica stream grown to three by an update: a cluster takes
    // it (on a single server it is refused, see existing_stream.rs)
    let mut grow = common::config(&cluster.nodes[0], "grow");
    grow.url = config.url.clone();
    let one = NatsProvider::connect(grow.clone()).await.unwrap();
    one.publish(&common::numbered_event(&one, "g", 1))
        .await
        .unwrap();
    let three = NatsProvider::connect_with(
        grow,
        NatsOptions {
            replicas: 3,
            existing_stream: event_nats::ExistingStream::Update,
            ..NatsOptions::default()
        },
    )
    .await
    .expect("a cluster grows a stream to 3 replicas");
    assert_eq!(three.info().await.unwrap().messages, 1);

    let event = common::numbered_event(&provider, "q", 1);
    provider.publish(&event).await.unwrap();

    cluster.nodes[1].kill();
    cluster.nodes[2].kill();
    // (before `health()` checked the quorum it stayed true for 25 s and
    // more, answered by the node left, while every write failed). For the
    // first 5 s the node left still counts the others up (heard from
    // within `PEER_SILENCE`), and a lookup that times out meanwhile says
    // false, so only after that must it be false, and stay so.
    tokio::time::sleep(Duration::from_secs(6)).await;
    health_becomes(&provider, false, Duration::from_secs(10)).await;
    // and it stays false while the stream cannot take writes
    for _ in 0..3 {
        assert!(!provider.health().await.unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        provider
            .publish(&common::numbered_event(&provider, "q", 2))
            .await
            .is_err(),
        "the stream takes no writes without its quorum"
    );

    cluster.nodes[1].restart();
    health_becomes(&provider, true, Duration::from_secs(60)).await;
    let start = Instant::now();
    loop {
        match provider
            .publish(&common::numbered_event(&provider, "q", 3))
            .await
        {
            Ok(_) => break,
            Err(err) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "healthy, yet no write: {err}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}
