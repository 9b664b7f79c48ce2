//! Settling deliveries: `nak` (with and without a delay), ack timeouts,
//! `term`, `max_deliver` and the final delivery, `in_progress`, auto-ack.

use super::{
    ProviderFactory, expect_nothing_manual, manual_opts, n_of, publish_n, recv, recv_manual,
    redelivery_slack, subscribe_kind,
};
use crate::{EventProvider, SubscribeOptions, Subscription};
use std::time::{Duration, Instant};

/// A durable subscription named `category` and an ephemeral one, both on
/// `category`'s events with a 30 s ack wait (longer than any test: a
/// redelivery they see comes from a nak, not a timeout), labelled for
/// assertion messages.
async fn durable_and_ephemeral(
    p: &dyn EventProvider,
    category: &str,
) -> [(&'static str, Box<dyn Subscription>); 2] {
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(30)),
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject(category);
    let durable = p
        .subscribe_durable_with_options(category, &filter, &opts)
        .await
        .expect("durable");
    let ephemeral = p
        .subscribe_with_options(&filter, &opts)
        .await
        .expect("ephemeral");
    [("durable", durable), ("ephemeral", ephemeral)]
}

/// An event naked on every delivery (no `max_deliver`, no delay) does not
/// hold back the events published after it: they are delivered while it
/// keeps coming back, on durable and ephemeral subscriptions alike. A
/// provider that always serves a due redelivery first would hand out that
/// one event forever.
pub async fn naked_event_does_not_hold_back_later_ones(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let subs = durable_and_ephemeral(&*p, "naked").await;
    // event 1 is the one that fails; 0 and 2 to 4 are fine
    publish_n(&*p, "naked", "t", 0..5).await;
    for (kind, mut sub) in subs {
        let mut acked = Vec::new();
        let mut naked = 0u64;
        // generous: each fine event may wait behind a few redeliveries
        for _ in 0..40 {
            if acked.len() == 4 {
                break;
            }
            let pending = recv_manual(
                &mut sub,
                &caps,
                &format!("{kind}: events 0 to 4, event 1 naked on each delivery"),
            )
            .await;
            let n = n_of(&pending.received.event);
            if n == 1 {
                naked += 1;
                pending.nak().await.expect("nak");
            } else {
                acked.push(n);
                pending.ack().await.expect("ack");
            }
        }
        assert_eq!(
            acked,
            [0, 2, 3, 4],
            "{kind}: the events after a naked one must be delivered while it keeps \
             coming back (event 1 was naked {naked} times meanwhile)"
        );
        assert!(naked >= 1, "{kind}: event 1 was never delivered");
        // end it, so that nothing stays pending
        let last = recv_manual(&mut sub, &caps, &format!("{kind}: event 1 once more")).await;
        assert_eq!(
            n_of(&last.received.event),
            1,
            "{kind}: only event 1 is left"
        );
        last.term().await.expect("term");
    }
}

/// `nak` redelivers the event at once with `num_delivered` 2, on durable
/// and ephemeral subscriptions alike (delivery is at-least-once on both).
pub async fn nak_redelivers(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let subs = durable_and_ephemeral(&*p, "nak").await;
    publish_n(&*p, "nak", "t", 0..1).await;
    for (kind, mut sub) in subs {
        let first = recv_manual(&mut sub, &caps, &format!("{kind}: the first delivery")).await;
        assert_eq!(first.received.num_delivered, 1, "{kind}: first delivery");
        let seq = first.received.sequence;
        let started = Instant::now();
        first.nak().await.expect("nak");
        let again = recv_manual(
            &mut sub,
            &caps,
            &format!("{kind}: the redelivery after nak (delivery is at-least-once)"),
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{kind}: nak must redeliver now, not after the 30 s ack wait"
        );
        assert_eq!(
            again.received.sequence, seq,
            "{kind}: the naked event comes back"
        );
        assert_eq!(
            again.received.num_delivered, 2,
            "{kind}: num_delivered counts the redelivery"
        );
        again.ack().await.expect("ack");
        expect_nothing_manual(
            &mut sub,
            caps.ack_wait,
            &format!("{kind}: after the redelivery was acked"),
        )
        .await;
    }
}

/// `nak_with_delay` redelivers, but not before the delay (a delay finer
/// than the backend's timers is rounded up, never down), on durable and
/// ephemeral subscriptions alike.
pub async fn nak_with_delay_redelivers_later(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(30)),
        ..SubscribeOptions::default()
    };
    for kind in ["durable", "ephemeral"] {
        let category = format!("nakd{kind}");
        let mut sub = subscribe_kind(&*p, kind, "nakd", &category, &opts).await;
        publish_n(&*p, &category, "t", 0..1).await;
        let first = recv_manual(&mut sub, &caps, &format!("{kind}: the first delivery")).await;
        // not a whole number of ack waits (nor, with the usual ack waits, of
        // seconds): a provider that rounds the delay down redelivers early
        let delay = caps.ack_wait * 5 / 2;
        let started = Instant::now();
        first.nak_with_delay(delay).await.expect("nak_with_delay");
        let again = recv_manual(
            &mut sub,
            &caps,
            &format!("{kind}: the redelivery after nak_with_delay({delay:?})"),
        )
        .await;
        let elapsed = started.elapsed();
        assert!(
            elapsed + Duration::from_millis(50) >= delay,
            "{kind}: redelivered after {elapsed:?}, before the {delay:?} delay (a nak delay \
             means \"not before\": one the backend cannot express exactly is rounded up, never \
             down)"
        );
        assert_eq!(again.received.num_delivered, 2, "{kind}: num_delivered");
        again.ack().await.expect("ack");
        sub.close().await.expect("close");
    }
}

/// An event not acknowledged within `ack_wait` is redelivered, on durable
/// and ephemeral subscriptions alike (delivery is at-least-once on both).
pub async fn ack_timeout_redelivers(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    for kind in ["durable", "ephemeral"] {
        let category = format!("aw{kind}");
        let mut sub = subscribe_kind(&*p, kind, "aw", &category, &manual_opts(&caps)).await;
        publish_n(&*p, &category, "t", 0..1).await;
        let started = Instant::now();
        let first = recv_manual(&mut sub, &caps, &format!("{kind}: the first delivery")).await;
        let seq = first.received.sequence;
        // a provider that reports the wait reports the one it applies
        assert!(
            first.ack_wait().is_none_or(|w| w == caps.ack_wait),
            "{kind}: reported ack wait {:?}, subscribed with {:?}",
            first.ack_wait(),
            caps.ack_wait
        );
        drop(first); // neither acked nor naked
        let again = recv_manual(
            &mut sub,
            &caps,
            &format!(
                "{kind}: the redelivery after the ack wait expired ({:?}, the delivery dropped \
                 unsettled)",
                caps.ack_wait
            ),
        )
        .await;
        assert!(
            started.elapsed() + Duration::from_millis(50) >= caps.ack_wait,
            "{kind}: redelivered before ack_wait"
        );
        assert_eq!(again.received.sequence, seq, "{kind}: the same event");
        assert_eq!(again.received.num_delivered, 2, "{kind}: num_delivered");
        assert!(again.ack_wait().is_none_or(|w| w == caps.ack_wait));
        again.ack().await.expect("ack");
        sub.close().await.expect("close");
    }
}

/// `term` stops delivery for good, on durable and ephemeral subscriptions
/// alike.
pub async fn term_never_redelivers(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    for kind in ["durable", "ephemeral"] {
        let category = format!("term{kind}");
        let mut sub = subscribe_kind(&*p, kind, "term", &category, &manual_opts(&caps)).await;
        publish_n(&*p, &category, "t", 0..2).await;
        let first = recv_manual(&mut sub, &caps, &format!("{kind}: event 0")).await;
        assert_eq!(n_of(&first.received.event), 0, "{kind}: event 0 first");
        first.term().await.expect("term");
        let second = recv_manual(
            &mut sub,
            &caps,
            &format!("{kind}: event 1, after event 0 was terminated"),
        )
        .await;
        assert_eq!(
            n_of(&second.received.event),
            1,
            "{kind}: a terminated event is not redelivered"
        );
        second.ack().await.expect("ack");
        expect_nothing_manual(
            &mut sub,
            caps.ack_wait * 3,
            &format!("{kind}: after term and ack: a terminated event is not redelivered"),
        )
        .await;
        sub.close().await.expect("close");
    }
}

/// After `max_deliver` deliveries the event stops; its last delivery says so.
/// A nak of the final delivery (with or without a delay) ends the event. On
/// durable and ephemeral subscriptions alike (an ephemeral that ignored the
/// limit would hand a poison event out forever, never dead-lettered).
pub async fn max_deliver_stops_and_reports_final_delivery(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions {
        max_deliver: Some(3),
        ..manual_opts(&caps)
    };
    for kind in ["durable", "ephemeral"] {
        let category = format!("maxd{kind}");
        let mut sub = subscribe_kind(&*p, kind, "maxd", &category, &opts).await;
        publish_n(&*p, &category, "t", 0..1).await;
        for attempt in 1..=3 {
            let pending = recv_manual(
                &mut sub,
                &caps,
                &format!(
                    "{kind}: event 0, delivery {attempt} of max_deliver 3 (after a nak or an \
                     expired ack wait)"
                ),
            )
            .await;
            assert_eq!(n_of(&pending.received.event), 0);
            assert_eq!(
                pending.received.num_delivered, attempt,
                "{kind}: num_delivered counts every delivery"
            );
            assert_eq!(pending.max_deliver(), Some(3), "{kind}: max_deliver");
            assert_eq!(
                pending.is_final_delivery(),
                attempt == 3,
                "{kind}: final flag on attempt {attempt}"
            );
            if attempt == 2 {
                drop(pending); // an ack timeout counts as a failed delivery too
            } else {
                pending.nak().await.expect("nak");
            }
        }
        expect_nothing_manual(
            &mut sub,
            caps.ack_wait * 3,
            &format!("{kind}: event 0 naked on its 3rd delivery: max_deliver 3 stops it"),
        )
        .await;
        // the consumer keeps going with later events
        publish_n(&*p, &category, "t", 1..2).await;
        let next = recv_manual(
            &mut sub,
            &caps,
            &format!(
                "{kind}: event 1, published after event 0 was exhausted: the consumer keeps going"
            ),
        )
        .await;
        assert_eq!(n_of(&next.received.event), 1);
        next.ack().await.expect("ack");
        // a delayed nak of the final delivery ends it as well
        publish_n(&*p, &category, "t", 2..3).await;
        for attempt in 1..=3 {
            let pending = recv_manual(
                &mut sub,
                &caps,
                &format!(
                    "{kind}: event 2, delivery {attempt} of max_deliver 3 (naked with a delay)"
                ),
            )
            .await;
            assert_eq!(n_of(&pending.received.event), 2);
            assert_eq!(pending.received.num_delivered, attempt);
            pending
                .nak_with_delay(caps.ack_wait / 4)
                .await
                .expect("nak_with_delay");
        }
        expect_nothing_manual(
            &mut sub,
            caps.ack_wait * 3,
            &format!(
                "{kind}: event 2 naked with a delay on its 3rd delivery: max_deliver 3 stops it"
            ),
        )
        .await;
        sub.close().await.expect("close");
    }
}

/// A final delivery left unsettled (its holder crashed, dropped it, or
/// stalled past the ack wait) was never reported: it comes once more,
/// numbered `max_deliver + 1` and still final, so the event reaches a
/// dead-letter queue instead of vanishing. When that spare delivery is not
/// settled either, the event ends. On durable and ephemeral subscriptions
/// alike.
pub async fn unsettled_final_delivery_comes_once_more(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions {
        max_deliver: Some(2),
        ..manual_opts(&caps)
    };
    for kind in ["durable", "ephemeral"] {
        let category = format!("spare{kind}");
        let mut sub = subscribe_kind(&*p, kind, "spare", &category, &opts).await;
        publish_n(&*p, &category, "t", 0..1).await;
        for attempt in 1..=3 {
            let pending = recv_manual(
                &mut sub,
                &caps,
                &format!(
                    "{kind}: event 0, delivery {attempt} of max_deliver 2, each left unsettled \
                     (delivery 3 is the spare of an unsettled final delivery)"
                ),
            )
            .await;
            assert_eq!(n_of(&pending.received.event), 0);
            assert_eq!(
                pending.received.num_delivered, attempt,
                "{kind}: num_delivered"
            );
            assert_eq!(pending.max_deliver(), Some(2), "{kind}: max_deliver");
            assert_eq!(
                pending.is_final_delivery(),
                attempt >= 2,
                "{kind}: final flag on delivery {attempt} of max_deliver 2"
            );
            drop(pending); // ack timeout
        }
        expect_nothing_manual(
            &mut sub,
            caps.ack_wait * 3,
            &format!(
                "{kind}: event 0's spare delivery (3 of max_deliver 2) left unsettled too: the \
                 event ends"
            ),
        )
        .await;
        // settled, the spare ends the event as any delivery does
        publish_n(&*p, &category, "t", 1..2).await;
        for attempt in 1..=3 {
            let pending = recv_manual(
                &mut sub,
                &caps,
                &format!("{kind}: event 1, delivery {attempt} of max_deliver 2"),
            )
            .await;
            assert_eq!(n_of(&pending.received.event), 1);
            assert_eq!(
                pending.received.num_delivered, attempt,
                "{kind}: num_delivered"
            );
            if attempt < 3 {
                drop(pending);
            } else {
                pending.term().await.expect("term the spare delivery");
            }
        }
        expect_nothing_manual(
            &mut sub,
            caps.ack_wait * 3,
            &format!("{kind}: event 1's spare delivery was terminated: the event ends"),
        )
        .await;
        sub.close().await.expect("close");
    }
}

/// `in_progress` restarts the ack timer, on durable and ephemeral
/// subscriptions alike.
pub async fn in_progress_extends_ack_wait(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    for kind in ["durable", "ephemeral"] {
        let category = format!("prog{kind}");
        let mut sub = subscribe_kind(&*p, kind, "prog", &category, &manual_opts(&caps)).await;
        publish_n(&*p, &category, "t", 0..1).await;
        let pending = recv_manual(&mut sub, &caps, &format!("{kind}: the first delivery")).await;
        // keep it alive for 3× the ack wait
        let step = caps.ack_wait / 2;
        for _ in 0..6 {
            tokio::time::sleep(step).await;
            pending.in_progress().await.expect("in_progress");
        }
        // a concurrent fetch must not see a redelivery while we are in progress
        let poll = tokio::time::timeout(step, sub.next_manual_ack()).await;
        assert!(
            poll.is_err(),
            "{kind}: redelivered although in_progress kept extending the wait"
        );
        pending.ack().await.expect("ack");
        expect_nothing_manual(
            &mut sub,
            caps.ack_wait * 2,
            &format!("{kind}: after in_progress then ack"),
        )
        .await;
        sub.close().await.expect("close");
    }
}

/// Auto-ack acknowledges on the next call; an event the caller never finished
/// is redelivered to the durable.
pub async fn auto_ack_never_loses_unfinished_event(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let filter = p.category_subject("auto");
    let opts = manual_opts(&caps);
    publish_n(&*p, "auto", "t", 0..3).await;
    let mut sub = p
        .subscribe_durable_with_options("auto", &filter, &opts)
        .await
        .expect("durable");
    assert_eq!(
        n_of(&recv(&mut sub, &caps, "auto-ack: event 0").await.event),
        0
    );
    assert_eq!(
        n_of(&recv(&mut sub, &caps, "auto-ack: event 1").await.event),
        1
    ); // acks 0
    drop(sub); // crashed while working on 1
    let mut sub = p
        .subscribe_durable_with_options("auto", &filter, &opts)
        .await
        .expect("resume");
    // event 2 is new and may come first; event 1 comes back after the ack wait
    const AFTER_CRASH: &str = "resubscribed after a subscription was dropped mid-event: \
                               the unfinished event 1 comes back and the new event 2 arrives";
    let a = recv(&mut sub, &caps, AFTER_CRASH).await;
    let b = recv(&mut sub, &caps, AFTER_CRASH).await;
    let mut got = [
        (n_of(&a.event), a.num_delivered),
        (n_of(&b.event), b.num_delivered),
    ];
    got.sort_unstable();
    assert_eq!(got[0].0, 1, "the unfinished event comes back: {got:?}");
    assert!(got[0].1 >= 2, "it is a redelivery: {got:?}");
    assert_eq!(got[1], (2, 1), "the next event is delivered once: {got:?}");
    sub.close().await.expect("close acks the last event");
    let mut sub = p
        .subscribe_durable_with_options("auto", &filter, &opts)
        .await
        .expect("resume");
    expect_nothing_manual(
        &mut sub,
        caps.ack_wait * 2,
        "resubscribed after `close`: close acks the last event",
    )
    .await;
}

/// Auto-ack acknowledges the previous event when the caller asks for the
/// next one, before waiting for it, not when the next event arrives: a
/// caller done with the last event of a quiet stream, waiting for more,
/// does not get that event back after the ack wait. Asking with
/// `next_manual_ack` is asking too: a subscription that mixes the modes
/// does not get its auto-ack event back either.
pub async fn auto_ack_acks_when_the_next_event_is_asked(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    publish_n(&*p, "ask", "t", 0..1).await;
    let mut sub = p
        .subscribe_durable_with_options("ask", &p.category_subject("ask"), &manual_opts(&caps))
        .await
        .expect("durable");
    let first = recv(&mut sub, &caps, "auto-ack: event 0").await;
    assert_eq!(n_of(&first.event), 0);
    // done with event 0; nothing else is published while we wait for more
    let wait = caps.ack_wait + redelivery_slack(&caps);
    match tokio::time::timeout(wait, sub.next()).await {
        Err(_) => {}
        Ok(Ok(Some(again))) => panic!(
            "auto-ack: next() waiting for a second event got event {} again (num_delivered \
             {}): next() must acknowledge the event it returned last when the caller asks for \
             the next one, not only once another event arrives",
            n_of(&again.event),
            again.num_delivered
        ),
        Ok(other) => panic!("auto-ack: next() waiting for a second event: got {other:?}"),
    }
    sub.close().await.expect("close");

    publish_n(&*p, "mix", "t", 0..2).await;
    let mut sub = p
        .subscribe_durable_with_options("mix", &p.category_subject("mix"), &manual_opts(&caps))
        .await
        .expect("durable");
    let auto = recv(&mut sub, &caps, "mixed modes: event 0 with next()").await;
    assert_eq!(n_of(&auto.event), 0);
    let manual = recv_manual(
        &mut sub,
        &caps,
        "mixed modes: event 1 with next_manual_ack()",
    )
    .await;
    assert_eq!(n_of(&manual.received.event), 1);
    manual.ack().await.expect("ack");
    expect_nothing_manual(
        &mut sub,
        caps.ack_wait + redelivery_slack(&caps),
        "mixed modes: next_manual_ack() asks for the next event, so it acknowledges the event \
         the previous next() returned",
    )
    .await;
}
