//! A spare delivery (the contract's `max_deliver + 1`, JetStream's last)
//! that arrives for the pull request of a cancelled call and is not handed
//! out before the subscription is closed: JetStream never delivers it
//! again, so the close's hand-back (a `nak`) ends the event neither handled
//! nor dead-lettered. A known gap (see the crate docs); until it is closed
//! the provider logs a warning for each such spare. Kept in its own test
//! binary: it reads the log through a global recording subscriber.

#![allow(clippy::unwrap_used)]

mod common;

use common::NatsServer;
use common::logs::{install, lines_with};
use event_core::{EventProvider, PendingEvent, SubscribeOptions, Subscription};
use event_nats::NatsProvider;
use std::time::Duration;
use tracing::Level;

const WAIT: Duration = Duration::from_secs(1);

fn options() -> SubscribeOptions {
    SubscribeOptions {
        max_deliver: Some(1),
        ack_wait: Some(WAIT),
        ..SubscribeOptions::default()
    }
}

async fn receive(sub: &mut Box<dyn Subscription>, what: &str) -> PendingEvent {
    tokio::time::timeout(Duration::from_secs(10), sub.next_manual_ack())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing came"))
        .unwrap()
        .unwrap()
}

/// Durable `name`: events 0 and 1 published, their final deliveries left
/// unsettled (a crash) half an ack wait apart, event 0's spare received and
/// acked, then a call that gives up before event 1's spare is due (a poll
/// with a timeout, a consumer runner told to stop while it waits): its pull
/// request stays, event 1's spare arrives for it while no call waits, and
/// the subscription is closed (the graceful shutdown).
async fn close_with_an_unseen_spare(p: &NatsProvider, name: &str) {
    let filter = p.category_subject(name);
    let mut sub = p
        .subscribe_durable_with_options(name, &filter, &options())
        .await
        .unwrap();
    for n in 0..2 {
        p.publish(&common::numbered_event(p, name, n))
            .await
            .unwrap();
    }
    let first = receive(&mut sub, "event 0, delivery 1").await;
    assert_eq!(first.received.event.payload["n"], 0);
    assert!(first.is_final_delivery());
    drop(first);
    tokio::time::sleep(WAIT / 2).await;
    let first = receive(&mut sub, "event 1, delivery 1").await;
    assert_eq!(first.received.event.payload["n"], 1);
    drop(first);
    let spare = receive(&mut sub, "event 0, the spare").await;
    assert_eq!(spare.received.event.payload["n"], 0);
    assert_eq!(spare.received.num_delivered, 2);
    spare.ack().await.unwrap();
    let early = tokio::time::timeout(WAIT / 10, sub.next_manual_ack()).await;
    assert!(early.is_err(), "event 1's spare is not due yet: {early:?}");
    tokio::time::sleep(WAIT).await;
    sub.close().await.unwrap();
}

/// The rule (the conformance suite's
/// `spare_due_at_close_comes_to_the_next_subscription`, which the memory
/// provider passes): the durable's next subscription gets event 1's spare.
#[tokio::test]
#[ignore = "known gap: a spare delivery that arrives for a cancelled call's pull request and is handed back by close is never delivered again by JetStream"]
async fn a_spare_received_for_a_cancelled_call_and_not_handed_out_comes_after_the_close() {
    let Some(server) = NatsServer::start("unseen_spare_comes") else {
        return;
    };
    let p = common::provider(&server, "unseenspare").await;
    close_with_an_unseen_spare(&p, "rule").await;
    let mut sub = p
        .subscribe_durable_with_options("rule", &p.category_subject("rule"), &options())
        .await
        .unwrap();
    let spare = receive(&mut sub, "event 1's spare, not handed out before the close").await;
    assert_eq!(spare.received.event.payload["n"], 1);
    assert_eq!(spare.received.num_delivered, 2);
    assert!(spare.is_final_delivery());
    spare.ack().await.unwrap();
    sub.close().await.unwrap();
}

/// Meanwhile the loss is not silent: the close logs a warning naming the
/// consumer and the event's stream sequence.
#[tokio::test]
async fn a_spare_handed_back_by_close_is_logged_as_a_warning() {
    install();
    let Some(server) = NatsServer::start("unseen_spare_logged") else {
        return;
    };
    let p = common::provider(&server, "unseenspare").await;
    close_with_an_unseen_spare(&p, "logged").await;
    let warned: Vec<_> = lines_with("event_nats", "spare delivery")
        .into_iter()
        .filter(|(level, line)| *level == Level::WARN && line.contains("logged"))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].1.contains("sequence=2"), "{warned:?}");
}
