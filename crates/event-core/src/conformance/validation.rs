//! What a provider refuses or holds: invalid subscribe options, values
//! beyond the backend's range, and invalid subjects, filters and names.

use super::{
    ProviderFactory, assert_invalid_subject, event, expect_nothing_manual, n_of, publish_n,
    recv_manual, redelivery_slack,
};
use crate::{Error, SubscribeOptions};
use std::time::Duration;

#[cfg(doc)]
use super::Capabilities;

/// Subscribe options no provider can honour are refused with
/// [`Error::InvalidConfig`] before anything is created, by ephemeral and
/// durable subscriptions alike: a zero `max_deliver`, `max_ack_pending`,
/// `ack_wait` (with or without a backoff) or backoff step, and fewer
/// deliveries than backoff steps (each step is the wait after one
/// delivery). Code that runs on one provider then runs on another. The
/// valid backoff steps it uses are [`Capabilities::ack_wait`], a duration
/// the provider honours.
pub async fn invalid_subscribe_options_refused(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let filter = p.category_subject("badopts");
    let step = caps.ack_wait;
    let cases: [(&str, SubscribeOptions); 6] = [
        (
            "max_deliver 0",
            SubscribeOptions {
                max_deliver: Some(0),
                ..SubscribeOptions::default()
            },
        ),
        (
            "max_ack_pending 0",
            SubscribeOptions {
                max_ack_pending: Some(0),
                ..SubscribeOptions::default()
            },
        ),
        (
            "ack_wait 0",
            SubscribeOptions {
                ack_wait: Some(Duration::ZERO),
                ..SubscribeOptions::default()
            },
        ),
        (
            "ack_wait 0 beside a backoff",
            SubscribeOptions {
                ack_wait: Some(Duration::ZERO),
                backoff: vec![step],
                // a limit, as some servers require one with a backoff
                max_deliver: Some(3),
                ..SubscribeOptions::default()
            },
        ),
        (
            "a zero backoff step",
            SubscribeOptions {
                backoff: vec![step, Duration::ZERO],
                max_deliver: Some(3),
                ..SubscribeOptions::default()
            },
        ),
        (
            "max_deliver 1 with 2 backoff steps",
            SubscribeOptions {
                max_deliver: Some(1),
                backoff: vec![step, step],
                ..SubscribeOptions::default()
            },
        ),
    ];
    for (what, options) in &cases {
        match p.subscribe_with_options(&filter, options).await {
            Err(Error::InvalidConfig { .. }) => {}
            Err(other) => panic!("subscribe with {what}: expected InvalidConfig, got {other:?}"),
            Ok(_) => panic!("subscribe with {what}: expected InvalidConfig, got a subscription"),
        }
        match p
            .subscribe_durable_with_options("badopts", &filter, options)
            .await
        {
            Err(Error::InvalidConfig { .. }) => {}
            Err(other) => panic!("durable with {what}: expected InvalidConfig, got {other:?}"),
            Ok(_) => panic!("durable with {what}: expected InvalidConfig, got a subscription"),
        }
    }
    // nothing was created: the durable name is free
    match p.unsubscribe("badopts").await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("a refused durable was created: unsubscribe gave {other:?}"),
    }
    // one delivery per step is fine
    let fine = SubscribeOptions {
        max_deliver: Some(2),
        backoff: vec![step, step],
        ..SubscribeOptions::default()
    };
    p.subscribe_durable_with_options("badopts", &filter, &fine)
        .await
        .expect("max_deliver 2 with 2 backoff steps");
}

/// A valid value beyond what the backend can represent is held to the
/// nearest one that keeps its promise, not refused and never a panic (the
/// contract's limits): an ack wait, a backoff step and a nak delay of
/// `Duration::MAX` wait "practically never", and a `max_deliver` or
/// `max_ack_pending` of `u64::MAX` is the largest the backend holds. Checks
/// that an event dropped under such a wait, or naked with such a delay, is
/// not redelivered within 2.5 ack waits, and that a backoff whose second
/// step is `Duration::MAX` still redelivers after its first.
pub async fn out_of_range_values_are_held_not_refused(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let quiet = caps.ack_wait + redelivery_slack(&caps);
    let huge = SubscribeOptions {
        ack_wait: Some(Duration::MAX),
        max_deliver: Some(u64::MAX),
        max_ack_pending: Some(u64::MAX),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("huge", &p.category_subject("huge"), &huge)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "subscribing with ack_wait Duration::MAX and max_deliver and \
                 max_ack_pending u64::MAX: {e} (a valid value beyond the backend's range \
                 is held to the nearest one it can represent, not refused)"
            )
        });
    publish_n(&*p, "huge", "t", 0..2).await;
    let first = recv_manual(
        &mut sub,
        &caps,
        "the first delivery under ack_wait Duration::MAX",
    )
    .await;
    assert!(
        !first.is_final_delivery(),
        "delivery 1 of max_deliver u64::MAX reported final"
    );
    first
        .nak_with_delay(Duration::MAX)
        .await
        .unwrap_or_else(|e| panic!("nak_with_delay(Duration::MAX): {e} (held, not refused)"));
    let second = recv_manual(
        &mut sub,
        &caps,
        "the next event, with event 0 naked with a delay of Duration::MAX",
    )
    .await;
    assert_eq!(
        n_of(&second.received.event),
        1,
        "event 0 came back at once after nak_with_delay(Duration::MAX)"
    );
    drop(second); // unsettled, under an ack wait of Duration::MAX
    expect_nothing_manual(
        &mut sub,
        quiet,
        "event 0 naked with a delay of Duration::MAX, event 1 dropped unsettled under \
         ack_wait Duration::MAX: both wait \"practically never\"",
    )
    .await;
    drop(sub);

    let stepped = SubscribeOptions {
        ack_wait: Some(caps.ack_wait),
        backoff: vec![caps.ack_wait, Duration::MAX],
        max_deliver: Some(5),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("hugeb", &p.category_subject("hugeb"), &stepped)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "subscribing with backoff [{:?}, Duration::MAX]: {e} (held, not refused)",
                caps.ack_wait
            )
        });
    publish_n(&*p, "hugeb", "t", 0..1).await;
    drop(
        recv_manual(
            &mut sub,
            &caps,
            "the first delivery under backoff [ack wait, Duration::MAX]",
        )
        .await,
    );
    let again = recv_manual(
        &mut sub,
        &caps,
        &format!(
            "the redelivery after backoff[0] ({:?}, the first delivery dropped unsettled)",
            caps.ack_wait
        ),
    )
    .await;
    assert_eq!(again.received.num_delivered, 2);
    drop(again);
    expect_nothing_manual(
        &mut sub,
        quiet,
        "delivery 2 dropped unsettled under backoff[1] = Duration::MAX",
    )
    .await;
}

/// Bad subjects, filters and consumer names (every name
/// [`validate_consumer_name`](crate::subject::validate_consumer_name)
/// refuses, given to `subscribe_durable` or `unsubscribe`) are
/// `InvalidSubject`, before I/O, and so is a filter that
/// matches no subject the provider publishes (`<prefix>.<category>.<topic>`,
/// the prefix a whole token, see
/// [`validate_filter_for_prefix`](crate::subject::validate_filter_for_prefix)).
pub async fn invalid_subjects_filters_and_names_rejected(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let prefix = p.subject_prefix().to_string();
    for subject in [
        String::new(),
        format!("{prefix}..x"),
        format!("{prefix}.a.*"),
        format!("{prefix}.a.>"),
        format!("{prefix}.a b.c"),
        format!("{prefix}.only"),
        "elsewhere.a.b".to_string(),
    ] {
        let mut e = event(&*p, "inv", "t", 0);
        e.subject = subject.clone();
        assert_invalid_subject(p.publish(&e).await, &format!("publish to {subject:?}"));
    }
    for filter in ["", "a..b", "a.>.b", "a.b*", "a b"] {
        assert_invalid_subject(
            p.subscribe(filter).await.map(|_| ()),
            &format!("filter {filter:?}"),
        );
        assert_invalid_subject(
            p.subscribe_durable("ok-name", filter).await.map(|_| ()),
            &format!("durable filter {filter:?}"),
        );
    }
    // well formed, but matching nothing this provider publishes: refused
    // rather than waited on forever
    for filter in [
        format!("elsewhere-{prefix}.>"),
        prefix.clone(),
        format!("{prefix}.inv"),
        format!("{prefix}.*"),
        // the prefix is a whole token, not a string prefix
        format!("{prefix}x.inv.t"),
        format!("{prefix}2.>"),
    ] {
        assert_invalid_subject(
            p.subscribe(&filter).await.map(|_| ()),
            &format!("filter {filter:?}, outside `{prefix}.<category>.<topic>`"),
        );
        assert_invalid_subject(
            p.subscribe_durable("ok-name", &filter).await.map(|_| ()),
            &format!("durable filter {filter:?}, outside `{prefix}.<category>.<topic>`"),
        );
    }
    // every name validate_consumer_name refuses, the same on every provider
    let too_long = "n".repeat(crate::subject::MAX_CONSUMER_NAME_LEN + 1);
    for name in [
        "",
        "a.b",
        "a*",
        "a>",
        "a b",
        "a/b",
        "a\\b",
        "a%b",
        "a\u{1}b",
        too_long.as_str(),
    ] {
        assert_invalid_subject(
            p.subscribe_durable(name, &p.category_subject("inv"))
                .await
                .map(|_| ()),
            &format!(
                "consumer name {name:?} (refused by event_core::subject::validate_consumer_name)"
            ),
        );
        assert_invalid_subject(
            p.unsubscribe(name).await,
            &format!(
                "unsubscribe {name:?} (refused by event_core::subject::validate_consumer_name)"
            ),
        );
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        0,
        "nothing was stored"
    );
}
