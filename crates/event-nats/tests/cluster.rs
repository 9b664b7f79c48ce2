//! The provider on a three-node JetStream cluster (nats-server processes
//! of their own, random ports): what a cluster's own failures look like
//! from the provider.

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use event_core::EventProvider;
use event_nats::{NatsOptions, NatsProvider};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (for the cluster routes, which the nodes
/// must know before they start).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three nodes `n1`..`n3` routed to each other, JetStream on each; `None`
/// when nats-server is missing (see `common::require_bin`).
fn cluster(test: &str) -> Option<Vec<NatsServer>> {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let others: Vec<String> = routes
            .iter()
            .filter(|r| *r != route)
            .map(|r| format!("nats://127.0.0.1:{r}"))
            .collect();
        let extra = format!(
            "server_name: n{}\ncluster {{\n  name: a3s\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
            i + 1,
            others.join(", ")
        );
        nodes.push(NatsServer::start_with(test, &extra)?);
    }
    Some(nodes)
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
    let Some(mut nodes) = cluster("health_is_false_while_a_replicated_stream_has_no_quorum") else {
        return;
    };
    let mut config = common::config(&nodes[0], "quorum");
    config.url = nodes
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",");
    config.request_timeout_secs = 2;
    let options = NatsOptions {
        replicas: 3,
        ..NatsOptions::default()
    };
    // the cluster elects its meta leader after the nodes start
    let start = Instant::now();
    let provider = loop {
        match NatsProvider::connect_with(config.clone(), options.clone()).await {
            Ok(provider) => break provider,
            Err(err) => {
                assert!(start.elapsed() < Duration::from_secs(60), "connect: {err}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    health_becomes(&provider, true, Duration::from_secs(30)).await;

    // more replicas than the cluster has servers: refused, naming the option
    let mut five = common::config(&nodes[0], "five");
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

    let event = common::numbered_event(&provider, "q", 1);
    provider.publish(&event).await.unwrap();

    nodes[1].kill();
    nodes[2].kill();
    // (before `health()` checked the quorum it stayed true for 25 s and
    // more, answered by the node left, while every write failed)
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

    nodes[1].restart();
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
