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
use event_nats::{ExistingStream, NatsConfig, NatsOptions, NatsProvider};
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
    // and updates its settings on the next connect (ExistingStream::Update;
    // the default adopts the stream's)
    let options = NatsOptions {
        duplicate_window: Duration::from_secs(300),
        existing_stream: ExistingStream::Update,
        ..user("orders", "orders-pw")
    };
    let service = NatsProvider::connect_with(config(&server), options)
        .await
        .expect("the service updates the stream");
    let js = async_nats::jetstream::new(service.client().clone());
    let mut stream = js.get_stream("A3S_EVENTS").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().config.duplicate_window,
        Duration::from_secs(300),
        "the update was not applied"
    );
    exercise(&service).await;
    assert!(
        !server.log().contains("Permissions Violation"),
        "the server denied a request:\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------
// A permission missing: every operation that needs it fails with
// `Error::Authentication` naming the denied subject, within a bounded time,
// and loses no event (the server answers nothing to a denied request: before
// this was detected, history returned `Ok([])`, subscriptions waited forever
// and requests timed out as if the server were slow).
// ---------------------------------------------------------------------------

/// The documented block with the publish permission on `subject` replaced by
/// `instead` (nothing when empty).
fn documented_without(subject: &str, instead: &[&str]) -> String {
    let block = documented_authorization(&[]);
    let quoted = format!("\"{subject}\"");
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with(&quoted))
        .unwrap_or_else(|| panic!("the guide grants {subject}:\n{block}"))
        .to_string();
    let replacement: String = instead
        .iter()
        .map(|s| format!("          \"{s}\"\n"))
        .collect();
    block.replace(&format!("{line}\n"), &replacement)
}

/// The documented block with the subscribe permission `"_INBOX.>"` replaced
/// by `subscribe`.
fn documented_subscribing_to(subscribe: &str) -> String {
    let block = documented_authorization(&[]);
    let documented = "subscribe: { allow: [\"_INBOX.>\"] }";
    assert!(block.contains(documented), "{block}");
    block.replace(
        documented,
        &format!("subscribe: {{ allow: [\"{subscribe}\"] }}"),
    )
}

/// A server with `authorization`, a stream made by the admin holding 53
/// `events.orders.created` events then 2,000 ticks with 2 rare ones (so a
/// sparse history query steps with direct gets), and the admin's provider.
async fn denied_setup(test: &str, authorization: &str) -> Option<(NatsServer, NatsProvider)> {
    let server = NatsServer::start_with(test, authorization)?;
    let admin = NatsProvider::connect_with(config(&server), user("admin", "admin-pw"))
        .await
        .expect("the admin creates the stream");
    let created: Vec<Event> = (0..53).map(|n| order(&admin, "created", n)).collect();
    let ticks: Vec<Event> = (1..=2_000)
        .map(|n| order(&admin, if n % 1_000 == 0 { "rare" } else { "tick" }, n))
        .collect();
    for batch in [created, ticks] {
        let results = admin.publish_batch(&batch).await.expect("publish");
        assert!(results.iter().all(Result::is_ok));
    }
    Some((server, admin))
}

async fn service(server: &NatsServer) -> NatsProvider {
    NatsProvider::connect_with(config(server), user("orders", "orders-pw"))
        .await
        .expect("the service connects")
}

/// An `Error::Authentication` naming `subject`.
#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: event_core::Result<T>, subject: &str) {
    match result {
        Err(event_core::Error::Authentication(message)) => assert!(
            message.contains(subject),
            "the error names {subject}: {message}"
        ),
        other => panic!("expected Authentication naming {subject}, got {other:?}"),
    }
}

/// The stream sequence up to which durable `name` is acknowledged.
async fn acked_floor(admin: &NatsProvider, name: &str) -> u64 {
    let js = async_nats::jetstream::new(admin.client().clone());
    let stream = js.get_stream("A3S_EVENTS").await.unwrap();
    stream
        .consumer_info(name)
        .await
        .unwrap()
        .ack_floor
        .stream_sequence
}

/// `history` with 2,055 events stored and no permission to pull returned
/// `Ok([])` (after 10 s): the read of a consumer whose pull requests the
/// server denies looked like an empty stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_without_the_pull_permission_is_an_authorization_error() {
    let test = "history_without_the_pull_permission_is_an_authorization_error";
    let authorization = documented_without("$JS.API.CONSUMER.MSG.NEXT.A3S_EVENTS.>", &[]);
    let Some((server, _admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let p = service(&server).await;
    let next = "$JS.API.CONSUMER.MSG.NEXT.A3S_EVENTS.";
    assert_denied(within("history", p.history(None, 5)).await, next);
    // dense filter: read with a consumer too
    let dense = p.history(Some("events.orders.tick"), 5);
    assert_denied(within("dense history", dense).await, next);
    // what needs no pull still works
    assert_eq!(p.info().await.unwrap().messages, 2_053);
}

/// A sparse `history` query steps with direct gets; without the permission
/// it timed out as if the server were slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_without_the_direct_get_permission_is_an_authorization_error() {
    let test = "history_without_the_direct_get_permission_is_an_authorization_error";
    let authorization = documented_without("$JS.API.DIRECT.GET.A3S_EVENTS", &[]);
    let Some((server, _admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let p = service(&server).await;
    let started = std::time::Instant::now();
    let sparse = p.history(Some("events.orders.rare"), 1);
    assert_denied(
        within("sparse history", sparse).await,
        "$JS.API.DIRECT.GET.A3S_EVENTS",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the denial ends the request at once, not after the request timeout: {:?}",
        started.elapsed()
    );
    // the unfiltered tail needs no direct get
    assert_eq!(p.history(None, 2).await.unwrap().len(), 2);
}

/// Without the pull permission, `next()` on an ephemeral or durable
/// subscription waited forever (each pull expired unanswered and was sent
/// again). It now fails each time it is called, and the durable's events
/// stay unacknowledged on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_without_the_pull_permission_fail_instead_of_waiting() {
    let test = "subscriptions_without_the_pull_permission_fail_instead_of_waiting";
    let authorization = documented_without("$JS.API.CONSUMER.MSG.NEXT.A3S_EVENTS.>", &[]);
    let Some((server, admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let p = service(&server).await;
    let all = SubscribeOptions {
        deliver_policy: DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let next = "$JS.API.CONSUMER.MSG.NEXT.A3S_EVENTS.";
    let mut ephemeral = p
        .subscribe_with_options("events.orders.>", &all)
        .await
        .expect("creating the consumer is allowed");
    assert_denied(within("ephemeral next", ephemeral.next()).await, next);
    // and again on the next call, not a wait
    assert_denied(within("ephemeral next again", ephemeral.next()).await, next);

    let mut durable = p
        .subscribe_durable("billing", "events.orders.>")
        .await
        .expect("creating the durable is allowed");
    let first = within("durable next", durable.next_manual_ack()).await;
    assert_denied(first.map(|p| p.map(|p| p.received.sequence)), next);
    durable.close().await.unwrap();
    assert_eq!(acked_floor(&admin, "billing").await, 0, "nothing settled");
}

/// Acks are published without a reply: a denied one was silently dropped
/// and the caller carried on as if its events were settled (each came back
/// after the ack wait, forever). The subscription now reports the denied
/// ack, and the event is redelivered, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_acks_are_reported_and_the_events_redelivered() {
    let test = "denied_acks_are_reported_and_the_events_redelivered";
    let authorization = documented_without("$JS.ACK.A3S_EVENTS.>", &[]);
    let Some((server, admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let p = service(&server).await;
    // one event in flight, redelivered after a second
    let options = SubscribeOptions {
        max_ack_pending: Some(1),
        ack_wait: Some(Duration::from_secs(1)),
        ..SubscribeOptions::default()
    };
    let ack = "$JS.ACK.A3S_EVENTS.manual.";
    let mut manual = p
        .subscribe_durable_with_options("manual", "events.orders.>", &options)
        .await
        .unwrap();
    let first = within("manual next", manual.next_manual_ack())
        .await
        .unwrap()
        .unwrap();
    let first_id = first.event().id.clone();
    let _ = first.ack().await;
    let second = within("manual next after the denied ack", manual.next_manual_ack()).await;
    assert_denied(second.map(|p| p.map(|p| p.received.sequence)), ack);
    let again = within("redelivery", manual.next_manual_ack())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.event().id.as_str(), again.received.num_delivered),
        (first_id.as_str(), 2),
        "the event whose ack was denied is redelivered"
    );
    manual.close().await.ok();
    assert_eq!(acked_floor(&admin, "manual").await, 0, "nothing settled");

    // auto-ack: the ack sent by the second `next()` is denied
    let ack = "$JS.ACK.A3S_EVENTS.auto.";
    let mut auto = p
        .subscribe_durable_with_options("auto", "events.orders.>", &options)
        .await
        .unwrap();
    let first = within("auto next", auto.next()).await.unwrap().unwrap();
    assert_denied(
        within("auto next after the denied ack", auto.next()).await,
        ack,
    );
    let again = within("auto redelivery", auto.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.event.id.as_str(), again.num_delivered),
        (first.event.id.as_str(), 2)
    );
    assert_eq!(acked_floor(&admin, "auto").await, 0, "nothing settled");
}

/// Without the permission to create consumers, `subscribe`,
/// `subscribe_durable` and `history` timed out as if the server were slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_without_the_consumer_create_permission_is_an_authorization_error() {
    let test = "subscribing_without_the_consumer_create_permission_is_an_authorization_error";
    let authorization = documented_without(
        "$JS.API.CONSUMER.*.A3S_EVENTS.>",
        &[
            "$JS.API.CONSUMER.INFO.A3S_EVENTS.>",
            "$JS.API.CONSUMER.DELETE.A3S_EVENTS.>",
        ],
    );
    let Some((server, _admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let p = service(&server).await;
    let started = std::time::Instant::now();
    let create = "$JS.API.CONSUMER.CREATE.A3S_EVENTS.";
    let ephemeral = p.subscribe("events.orders.>");
    assert_denied(within("subscribe", ephemeral).await.map(|_| ()), create);
    let durable = p.subscribe_durable("billing", "events.orders.>");
    assert_denied(
        within("subscribe_durable", durable).await.map(|_| ()),
        create,
    );
    assert_denied(within("history", p.history(None, 5)).await, create);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "each denial ends its request at once: {:?}",
        started.elapsed()
    );
}

/// Pulled events arrive on an inbox the client subscribes to: a user who
/// may subscribe only to reply inboxes (`_INBOX.*.*`, what requests use)
/// waited forever in `next()` and got `Ok([])` from `history`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_without_the_inbox_subscribe_permission_are_an_authorization_error() {
    let test = "pulls_without_the_inbox_subscribe_permission_are_an_authorization_error";
    let authorization = documented_subscribing_to("_INBOX.*.*");
    let Some((server, _admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let p = service(&server).await;
    let all = SubscribeOptions {
        deliver_policy: DeliverPolicy::All,
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_with_options("events.orders.>", &all)
        .await
        .expect("requests are answered");
    let inbox = "subscribe to \"_INBOX.";
    assert_denied(within("next", sub.next()).await, inbox);
    assert_denied(within("history", p.history(None, 5)).await, inbox);
}

/// With no subscribe permission at all, no JetStream reply can arrive:
/// connecting timed out as if the server were slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_without_any_inbox_permission_is_an_authorization_error() {
    let test = "connecting_without_any_inbox_permission_is_an_authorization_error";
    let authorization = documented_subscribing_to("nothing.allowed");
    let Some((server, _admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let connect = NatsProvider::connect_with(config(&server), user("orders", "orders-pw"));
    assert_denied(
        within("connect", connect).await.map(|_| ()),
        "subscribe to \"_INBOX.",
    );
}

/// A publish to a subject the user may not publish to timed out waiting for
/// the acknowledgement the server never sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_outside_the_permissions_is_an_authorization_error() {
    let test = "publishing_outside_the_permissions_is_an_authorization_error";
    let authorization = documented_authorization(&[]);
    let Some((server, _admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let p = service(&server).await;
    let payment = Event::new(
        p.build_subject("payments", "settled"),
        "payments",
        "not this service's",
        "shop",
        json!({}),
    );
    let started = std::time::Instant::now();
    assert_denied(
        within("publish", p.publish(&payment)).await,
        "publish to \"events.payments.settled\"",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the denial ends the wait for the acknowledgement: {:?}",
        started.elapsed()
    );
    // a batch mixing allowed and denied subjects, more than the acks kept
    // in flight: each result is its own
    let batch: Vec<Event> = (0..600)
        .map(|n| {
            if n % 3 == 2 {
                Event::new(
                    p.build_subject("payments", "settled"),
                    "payments",
                    "not this service's",
                    "shop",
                    json!({ "n": n }),
                )
            } else {
                order(&p, "created", n)
            }
        })
        .collect();
    let results = within("publish_batch", p.publish_batch(&batch))
        .await
        .unwrap();
    for (n, result) in results.into_iter().enumerate() {
        if n % 3 == 2 {
            assert_denied(result, "publish to \"events.payments.settled\"");
        } else {
            assert!(result.is_ok(), "{n}: {result:?}");
        }
    }
    // its own events still go through
    p.publish(&order(&p, "created", 99)).await.unwrap();
}

/// A denied subject with a `"` in it (a valid subject token) is recognised
/// in the server's report, which names the subject Go-quoted (`%q`: the
/// quote and the backslash escaped with a backslash): the publish is
/// `Error::Authentication` naming the whole subject, at once, not a
/// `Timeout` after waiting for an acknowledgement that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_subject_with_a_quote_is_an_authorization_error() {
    let test = "a_denied_subject_with_a_quote_is_an_authorization_error";
    let authorization = documented_authorization(&[]);
    let Some((server, _admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let p = service(&server).await;
    for category in ["pay\"ments", "\"payments\"", "a\"b\"c", "back\\slash\\"] {
        let subject = p.build_subject(category, "settled");
        let payment = Event::new(&subject, category, "not this service's", "shop", json!({}));
        // not a Timeout: the denial ends the wait for the acknowledgement
        let result = within("publish", p.publish(&payment)).await;
        assert_denied(result, &format!("{subject:?}"));
    }
    p.publish(&order(&p, "created", 99)).await.unwrap();
}

/// A sparse `history` query steps with direct gets, whose answers need no
/// more than what every request's reply needs (`_INBOX.*.*`): made with
/// a one-token inbox of their own, each get was denied its subscription,
/// unrecognised, and the query timed out as if the server were slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_history_needs_only_the_reply_inbox_permission() {
    let test = "sparse_history_needs_only_the_reply_inbox_permission";
    let authorization = documented_subscribing_to("_INBOX.*.*");
    let Some((server, _admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    let p = service(&server).await;
    let sparse = within("sparse history", p.history(Some("events.orders.rare"), 1)).await;
    let events = sparse.expect("direct gets are answered on a reply inbox");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["n"], 2_000);
}

/// `history` deletes its consumers before it returns: a user who may
/// create consumers but not delete them had every call wait, after the
/// events were read, a whole request timeout for each deletion the server
/// never answers (it reports the violation instead). The denial ends that
/// wait at once; the events read are returned and the consumers are left to
/// their inactivity threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_without_the_consumer_delete_permission_does_not_wait_for_the_deletion() {
    let test = "history_without_the_consumer_delete_permission_does_not_wait_for_the_deletion";
    let authorization = documented_without(
        "$JS.API.CONSUMER.*.A3S_EVENTS.>",
        &[
            "$JS.API.CONSUMER.CREATE.A3S_EVENTS.>",
            "$JS.API.CONSUMER.INFO.A3S_EVENTS.>",
        ],
    );
    let Some((server, _admin)) = denied_setup(test, &authorization).await else {
        return;
    };
    // a request timeout longer than `within` allows: a call waiting for a
    // denied deletion's answer cannot finish in time
    let config = NatsConfig {
        request_timeout_secs: 30,
        ..config(&server)
    };
    let p = NatsProvider::connect_with(config, user("orders", "orders-pw"))
        .await
        .expect("the service connects");
    let tail = within("history", p.history(None, 5)).await.unwrap();
    assert_eq!(tail.len(), 5);
    let dense = within("dense history", p.history(Some("events.orders.tick"), 5)).await;
    assert_eq!(dense.unwrap().len(), 5);
}
