//! The least-privilege user that `docs/deployment.md` documents, against a
//! real `nats-server` configured with exactly the block the guide shows: the
//! provider must do everything an application does (publish, batch publish,
//! ephemeral and durable subscriptions with every settlement, `unsubscribe`,
//! unfiltered, dense and sparse `history`, `info`, `health`) with those
//! permissions and no others.
//!
//! Without `nats-server` the tests print a `SKIPPED` line (or panic when
//! `A3S_REQUIRE_NATS=1`).
#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use event_core::{DeliverPolicy, Event, EventProvider, SubscribeOptions};
use event_nats::{NatsConfig, NatsOptions, NatsProvider};
use serde_json::json;
use std::time::Duration;

const GUIDE: &str = include_str!("../../../docs/deployment.md");

/// The documented `authorization` block, from the guide's text, with the
/// password variable replaced by a literal and, when `extra_publish` is
/// given, those subjects added to the service's publish permissions.
fn documented_authorization(extra_publish: &[&str]) -> String {
    let start = GUIDE
        .find("# nats-server.conf: the orders service\n")
        .expect("the guide documents the service's permissions");
    let block = &GUIDE[start..];
    let block = &block[..block.find("```").expect("the block ends")];
    assert!(
        block.contains("password: $ORDERS_PASSWORD"),
        "the documented block reads the password from the environment:\n{block}"
    );
    let mut block = block.replace("$ORDERS_PASSWORD", "\"orders-pw\"");
    // an account allowed to create the stream, as the guide says
    block = block.replace(
        "users = [",
        "users = [\n    { user: admin, password: \"admin-pw\" },",
    );
    for subject in extra_publish {
        block = block.replace(
            "publish: { allow: [",
            &format!("publish: {{ allow: [\n          \"{subject}\","),
        );
    }
    block
}

fn config(server: &NatsServer) -> NatsConfig {
    NatsConfig {
        url: server.url(),
        stream_name: "A3S_EVENTS".to_string(),
        subject_prefix: "events".to_string(),
        connect_timeout_secs: 5,
        request_timeout_secs: 5,
        ..NatsConfig::default()
    }
}

fn user(name: &str, password: &str) -> NatsOptions {
    NatsOptions {
        user: Some(name.to_string()),
        password: Some(password.to_string()),
        ..NatsOptions::default()
    }
}

fn order(p: &NatsProvider, topic: &str, n: u64) -> Event {
    Event::new(
        p.build_subject("orders", topic),
        "orders",
        format!("order {n}"),
        "shop",
        json!({ "n": n }),
    )
}

/// `step`, failing after 10 s: the server leaves a denied request
/// unanswered, so a missing permission would otherwise hang the test.
async fn within<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    const LIMIT: Duration = Duration::from_secs(10);
    tokio::time::timeout(LIMIT, step)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// Everything an application does.
async fn exercise(p: &NatsProvider) {
    let first = order(p, "created", 0);
    within("publish", p.publish(&first)).await.expect("publish");
    // 2,000 events with two rare ones: the sparse history query below steps
    // through a window with direct gets instead of reading it with a consumer
    let batch: Vec<Event> = (1..=2_000)
        .map(|n| order(p, if n % 1_000 == 0 { "rare" } else { "tick" }, n))
        .collect();
    let results = within("publish_batch", p.publish_batch(&batch))
        .await
        .expect("publish_batch");
    assert!(results.iter().all(Result::is_ok), "batch publish refused");

    // ephemeral, from the start, auto-ack
    let options = SubscribeOptions {
        deliver_policy: DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let mut sub = within(
        "subscribe",
        p.subscribe_with_options("events.orders.>", &options),
    )
    .await
    .expect("subscribe");
    let got = within("ephemeral next", sub.next())
        .await
        .expect("ephemeral next")
        .expect("an event");
    assert_eq!(got.event.id, first.id);
    sub.close().await.expect("close the ephemeral");

    // durable, manual acks: in_progress, nak, then ack of the redelivery,
    // term; one event in flight at a time, so the redelivery comes next
    let one_at_a_time = SubscribeOptions {
        max_ack_pending: Some(1),
        ..SubscribeOptions::default()
    };
    let mut durable = within(
        "subscribe_durable",
        p.subscribe_durable_with_options("billing", "events.orders.>", &one_at_a_time),
    )
    .await
    .expect("subscribe_durable");
    let pending = within("durable next", durable.next_manual_ack())
        .await
        .expect("durable next")
        .expect("an event");
    assert_eq!(pending.event().id, first.id);
    pending.in_progress().await.expect("in_progress");
    pending.nak().await.expect("nak");
    let again = within("redelivery", durable.next_manual_ack())
        .await
        .expect("redelivery")
        .expect("the naked event again");
    assert_eq!(
        (again.event().id.as_str(), again.received.num_delivered),
        (first.id.as_str(), 2),
        "the nak reached the server"
    );
    again.ack().await.expect("ack");
    let next = within("durable next after ack", durable.next_manual_ack())
        .await
        .expect("durable next after ack")
        .expect("the next event");
    assert_eq!(next.event().id, batch[0].id, "the ack reached the server");
    next.term().await.expect("term");
    durable.close().await.expect("close the durable");
    within("unsubscribe", p.unsubscribe("billing"))
        .await
        .expect("unsubscribe");

    // history: unfiltered, a dense filter, a sparse one
    let all = within("history", p.history(None, 3))
        .await
        .expect("history");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].id, batch[1_999].id);
    let dense = within("dense history", p.history(Some("events.orders.tick"), 5))
        .await
        .expect("dense history");
    assert_eq!(dense.len(), 5);
    let rare = within("sparse history", p.history(Some("events.orders.rare"), 1))
        .await
        .expect("sparse history");
    assert_eq!(
        rare.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec![batch[1_999].id.as_str()]
    );

    let info = within("info", p.info()).await.expect("info");
    assert_eq!(info.messages, 2_001);
    assert!(p.health().await.expect("health"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_service_permissions_are_enough_on_a_stream_made_by_an_admin() {
    let test = "the_documented_service_permissions_are_enough_on_a_stream_made_by_an_admin";
    let Some(server) = NatsServer::start_with(test, &documented_authorization(&[])) else {
        return;
    };
    // the stream, created once by an account allowed to
    let admin = NatsProvider::connect_with(config(&server), user("admin", "admin-pw"))
        .await
        .expect("the admin creates the stream");
    drop(admin);

    let service = NatsProvider::connect_with(config(&server), user("orders", "orders-pw"))
        .await
        .expect("the service connects with the documented permissions");
    exercise(&service).await;
    assert!(
        !server.log().contains("Permissions Violation"),
        "the server denied a request:\n{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_permissions_plus_create_and_update_let_the_service_make_the_stream() {
    let test = "the_documented_permissions_plus_create_and_update_let_the_service_make_the_stream";
    let extra = [
        "$JS.API.STREAM.CREATE.A3S_EVENTS",
        "$JS.API.STREAM.UPDATE.A3S_EVENTS",
    ];
    let Some(server) = NatsServer::start_with(test, &documented_authorization(&extra)) else {
        return;
    };
    let service = NatsProvider::connect_with(config(&server), user("orders", "orders-pw"))
        .await
        .expect("the service creates the stream");
    drop(service);
    // and updates its settings on the next connect
    let options = NatsOptions {
        duplicate_window: Duration::from_secs(300),
        ..user("orders", "orders-pw")
    };
    let service = NatsProvider::connect_with(config(&server), options)
        .await
        .expect("the service updates the stream");
    exercise(&service).await;
    assert!(
        !server.log().contains("Permissions Violation"),
        "the server denied a request:\n{}",
        server.log()
    );
}
