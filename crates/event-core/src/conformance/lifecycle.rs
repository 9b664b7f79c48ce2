//! The end of a subscription or a durable: cancelled fetches, subscribes
//! and closes, `close`, `unsubscribe`, and a durable created again.

use super::{
    ProviderFactory, drain_ns, event, n_of, publish_n, recv, recv_manual, subscribe_kind,
    try_recv_manual,
};
use crate::{Error, SubscribeOptions, Subscription};
use std::time::{Duration, Instant};

/// A fetch dropped before it completes (a `select!` branch that lost, a
/// `timeout`) loses and skips nothing: every event still arrives, in order,
/// on its first delivery, not after an ack wait, in both modes on durable
/// and ephemeral subscriptions. Half the fetches are dropped right after
/// their first poll, half after a window that doubles from 1 ms to 32 ms
/// and starts over (so a provider whose fetch needs a round trip of a few
/// milliseconds completes some and makes progress).
pub async fn cancelled_fetches_lose_nothing(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let filter = p.category_subject("cancel");
    let opts = SubscribeOptions {
        // a lost delivery would come back only after this
        ack_wait: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    };
    let fetcher = |what, sub, manual| Fetcher {
        what,
        sub,
        manual,
        got: Vec::new(),
    };
    let mut subs = vec![
        fetcher(
            "durable, manual-ack",
            p.subscribe_durable_with_options("cancel", &filter, &opts)
                .await
                .expect("durable"),
            true,
        ),
        fetcher(
            "durable, auto-ack",
            p.subscribe_durable_with_options("cancel-auto", &filter, &opts)
                .await
                .expect("durable"),
            false,
        ),
        fetcher(
            "ephemeral, manual-ack",
            p.subscribe_with_options(&filter, &opts)
                .await
                .expect("ephemeral"),
            true,
        ),
        fetcher(
            "ephemeral, auto-ack",
            p.subscribe(&filter).await.expect("subscribe"),
            false,
        ),
    ];
    let publisher = {
        let p = p.clone();
        tokio::spawn(async move {
            for n in 0..100 {
                p.publish(&event(&*p, "cancel", "t", n))
                    .await
                    .expect("publish");
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let deadline = Instant::now() + caps.receive_timeout;
    let mut round = 0u32;
    while subs.iter().any(|f| f.got.len() < 100) && Instant::now() < deadline {
        // every other round drops the fetch at its first await (a zero
        // `timeout` would not: tokio rounds its deadline up to the next
        // millisecond tick, so the fetch may run past several awaits first)
        round += 1;
        let first_poll_only = round.is_multiple_of(2);
        let window = Duration::from_millis(1 << ((round / 2) % 6));
        for Fetcher {
            sub, manual, got, ..
        } in &mut subs
        {
            if got.len() >= 100 {
                continue;
            }
            if *manual {
                if let Some(item) =
                    fetch_or_cancel(sub.next_manual_ack(), first_poll_only, window).await
                {
                    let pending = item.expect("delivery").expect("subscription open");
                    got.push((
                        n_of(&pending.received.event),
                        pending.received.num_delivered,
                    ));
                    pending.ack().await.expect("ack");
                }
            } else if let Some(item) = fetch_or_cancel(sub.next(), first_poll_only, window).await {
                let received = item.expect("delivery").expect("subscription open");
                got.push((n_of(&received.event), received.num_delivered));
            }
        }
    }
    publisher.await.expect("publisher");
    let expected: Vec<(u64, u64)> = (0..100).map(|n| (n, 1)).collect();
    for Fetcher { what, got, .. } in &subs {
        if *got != expected {
            let missing: Vec<_> = expected.iter().filter(|e| !got.contains(e)).collect();
            let unexpected: Vec<_> = got.iter().filter(|g| !expected.contains(g)).collect();
            panic!(
                "{what} fetches dropped mid-way: a fetch cancelled at an await must not take \
                 an event it does not return; missing (n, num_delivered): {missing:?}, \
                 unexpected: {unexpected:?}, received in this order: {got:?} (within the \
                 receive timeout {:?}, half the fetches dropped after their first poll, half \
                 after 1 to 32 ms)",
                caps.receive_timeout
            );
        }
    }
}

/// One subscription of [`cancelled_fetches_lose_nothing`]: what it is, in
/// which mode it fetches, and the (n, num_delivered) it received.
struct Fetcher {
    what: &'static str,
    sub: Box<dyn Subscription>,
    manual: bool,
    got: Vec<(u64, u64)>,
}

/// Runs `fetch` until its first poll returns (`first_poll_only`) or for
/// `window`, then drops it unfinished: `None` when it was cancelled.
async fn fetch_or_cancel<F: std::future::Future>(
    fetch: F,
    first_poll_only: bool,
    window: Duration,
) -> Option<F::Output> {
    if !first_poll_only {
        return tokio::time::timeout(window, fetch).await.ok();
    }
    let mut fetch = std::pin::pin!(fetch);
    std::future::poll_fn(|cx| match fetch.as_mut().poll(cx) {
        std::task::Poll::Ready(item) => std::task::Poll::Ready(Some(item)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// An ephemeral `subscribe`, or a `close`, dropped part-way (a `select!`
/// branch that lost, a `timeout`) leaves no consumer behind: once the
/// subscriptions are gone, `info().consumers` is back where it was (within
/// the receive timeout: a provider may delete consumers in the
/// background). A second `close` after a dropped one returns and ends the
/// subscription.
pub async fn cancelled_subscribe_and_close_leave_no_consumer(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let filter = p.category_subject("dropsub");
    let baseline = p.info().await.expect("info").consumers;
    let settled = |when: String| {
        let p = p.clone();
        async move {
            let deadline = Instant::now() + caps.receive_timeout;
            loop {
                let consumers = p.info().await.expect("info").consumers;
                if consumers == baseline {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{when}: {consumers} consumers, {baseline} before: a consumer was left behind"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    for polls in 0..6 {
        let made = poll_then_drop(p.subscribe(&filter), polls).await;
        drop(made);
        settled(format!(
            "subscribe dropped after {polls} polls (or finished and dropped)"
        ))
        .await;
    }
    for second_close in [true, false] {
        let mut sub = p.subscribe(&filter).await.expect("subscribe");
        let _ = poll_then_drop(sub.close(), 1).await;
        if second_close {
            tokio::time::timeout(caps.receive_timeout, sub.close())
                .await
                .expect("a close after a dropped one hung")
                .expect("a close after a dropped one");
            let next = tokio::time::timeout(caps.receive_timeout, sub.next())
                .await
                .expect("next after close hung")
                .expect("next after close");
            assert!(next.is_none(), "a closed subscription delivered {next:?}");
        }
        drop(sub);
        settled(format!(
            "close dropped after its first poll (closed again: {second_close})"
        ))
        .await;
    }
}

/// Polls `fut` `polls` times, a millisecond apart (so a provider that
/// needs a round trip makes progress), then drops it: `None` when it did
/// not complete.
async fn poll_then_drop<F: std::future::Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    for poll in 0..polls {
        if poll > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(out) = polled {
            return Some(out);
        }
    }
    None
}

/// `close` acknowledges and ends the subscription: every later call
/// returns `Ok(None)` and takes nothing, not even an event published after
/// the close (on a durable, that event goes to the next subscription on
/// it), on ephemeral and durable subscriptions alike. (That `close`
/// acknowledges the last auto-ack event, `auto_ack_never_loses_unfinished_event`
/// checks.)
pub async fn close_acks_and_ends_subscription(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions::default();
    for kind in ["ephemeral", "durable"] {
        let category = format!("close{kind}");
        let mut sub = subscribe_kind(&*p, kind, "close", &category, &opts).await;
        publish_n(&*p, &category, "t", 0..1).await;
        recv(&mut sub, &caps, &format!("{kind}: the published event")).await;
        sub.close().await.expect("close");
        publish_n(&*p, &category, "t", 1..2).await;
        let after = tokio::time::timeout(caps.receive_timeout, sub.next()).await;
        assert!(
            matches!(after, Ok(Ok(None))),
            "{kind}: a closed subscription yields None (an event was published after the \
             close), got {after:?}"
        );
        let after = tokio::time::timeout(caps.receive_timeout, sub.next_manual_ack()).await;
        assert!(
            matches!(after, Ok(Ok(None))),
            "{kind}: a closed subscription yields None to next_manual_ack too, got {after:?}"
        );
        if kind == "durable" {
            drop(sub);
            let mut sub = subscribe_kind(&*p, kind, "close", &category, &opts).await;
            assert_eq!(
                drain_ns(
                    &mut sub,
                    &caps,
                    1,
                    "durable resubscribed after a close: the event published after the close"
                )
                .await,
                [1],
                "durable resubscribed after a close"
            );
        }
    }
}

/// `unsubscribe` deletes a durable: a new one starts over.
pub async fn unsubscribe_deletes_durable(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    publish_n(&*p, "uns", "t", 0..3).await;
    let filter = p.category_subject("uns");
    let mut sub = p.subscribe_durable("uns", &filter).await.expect("durable");
    assert_eq!(
        drain_ns(&mut sub, &caps, 3, "new durable: the stored events").await,
        vec![0, 1, 2]
    );
    drop(sub);
    p.unsubscribe("uns").await.expect("unsubscribe");
    let mut sub = p
        .subscribe_durable("uns", &filter)
        .await
        .expect("new durable");
    assert_eq!(
        drain_ns(
            &mut sub,
            &caps,
            3,
            "a durable recreated after unsubscribe starts over"
        )
        .await,
        vec![0, 1, 2],
        "a recreated durable starts over"
    );
    drop(sub);
    p.unsubscribe("uns").await.expect("unsubscribe");
    match p.unsubscribe("uns").await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("unsubscribing a missing durable: expected NotFound, got {other:?}"),
    }
}

/// A subscription waiting on a durable that is unsubscribed ends with
/// `Ok(None)` or `Error::NotFound` instead of waiting forever.
pub async fn unsubscribe_ends_live_subscriptions(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let filter = p.category_subject("une");
    let mut sub = p.subscribe_durable("une", &filter).await.expect("durable");
    publish_n(&*p, "une", "t", 0..1).await;
    assert_eq!(
        drain_ns(&mut sub, &caps, 1, "new durable: the stored event").await,
        vec![0]
    );
    // a backend may notice only when its pending fetch expires
    let limit = caps.receive_timeout.max(Duration::from_secs(30));
    let (waited, unsubscribed) = tokio::join!(tokio::time::timeout(limit, sub.next()), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.unsubscribe("une").await
    });
    unsubscribed.expect("unsubscribe");
    match waited {
        Ok(Ok(None) | Err(Error::NotFound { .. })) => {}
        Ok(other) => panic!("a subscription on an unsubscribed durable: got {other:?}"),
        Err(_) => panic!("a subscription on an unsubscribed durable kept waiting for {limit:?}"),
    }
}

/// A subscription on a durable that was unsubscribed and then created again
/// under the same name ends (`Ok(None)` or `Error::NotFound`): it does not
/// take events from the new durable, which gets every one of them.
pub async fn recreated_durable_does_not_feed_old_subscriptions(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let filter = p.category_subject("rdo");
    let mut old = p.subscribe_durable("rdo", &filter).await.expect("durable");
    publish_n(&*p, "rdo", "t", 0..1).await;
    assert_eq!(
        drain_ns(&mut old, &caps, 1, "first durable: the stored event").await,
        vec![0]
    );
    p.unsubscribe("rdo").await.expect("unsubscribe");
    let mut new = p
        .subscribe_durable("rdo", &filter)
        .await
        .expect("the durable created again");
    publish_n(&*p, "rdo", "t", 1..4).await;
    let limit = caps.receive_timeout.max(Duration::from_secs(30));
    match tokio::time::timeout(limit, old.next_manual_ack()).await {
        Ok(Ok(None) | Err(Error::NotFound { .. })) => {}
        Ok(Ok(Some(pending))) => panic!(
            "a subscription of the deleted durable took event {} from the new durable of \
             the same name",
            n_of(&pending.received.event)
        ),
        Ok(Err(other)) => panic!("a subscription of the deleted durable: got {other:?}"),
        Err(_) => panic!("a subscription of the deleted durable kept waiting for {limit:?}"),
    }
    let mut got = Vec::new();
    while got.len() < 4 {
        match try_recv_manual(&mut new, &caps).await {
            Ok(pending) => {
                got.push(n_of(&pending.received.event));
                pending.ack().await.expect("ack");
            }
            Err(failure) => {
                panic!("the new durable: expected events 0..4, got {got:?}, then {failure}")
            }
        }
    }
    got.sort_unstable();
    assert_eq!(
        got,
        vec![0, 1, 2, 3],
        "the new durable delivers every stored event"
    );
}

/// A spare delivery (see [`unsettled_final_delivery_comes_once_more`](super::unsettled_final_delivery_comes_once_more))
/// that becomes due while a durable's subscription is idle and is not
/// handed out before the subscription is closed still comes, to the
/// durable's next subscription: a close hands back what it did not hand
/// out, and a spare handed back is no exception (the event would end
/// neither handled nor dead-lettered). The steps: two events' final
/// deliveries left unsettled (a crash), half an ack wait apart; the first
/// event's spare received; a call that gives up before the second's spare
/// is due (a poll with a timeout, a `select!` with a shutdown signal); the
/// spare falls due; the subscription is closed (the graceful shutdown) and
/// the durable subscribed again.
///
/// Not in [`conformance_tests!`](crate::conformance_tests) yet: NATS fails it
/// (a known gap, see the `event-nats` crate docs); the memory provider runs
/// it.
pub async fn spare_due_at_close_comes_to_the_next_subscription(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions {
        max_deliver: Some(1),
        ack_wait: Some(caps.ack_wait),
        ..SubscribeOptions::default()
    };
    let mut sub = subscribe_kind(&*p, "durable", "sparedue", "sparedue", &opts).await;
    publish_n(&*p, "sparedue", "t", 0..2).await;
    let first = recv_manual(&mut sub, &caps, "event 0, delivery 1").await;
    assert_eq!(n_of(&first.received.event), 0);
    assert!(first.is_final_delivery(), "delivery 1 of max_deliver 1");
    drop(first); // the holder crashed: its ack wait runs out
    tokio::time::sleep(caps.ack_wait / 2).await;
    let first = recv_manual(&mut sub, &caps, "event 1, delivery 1").await;
    assert_eq!(n_of(&first.received.event), 1);
    drop(first);
    let spare = recv_manual(&mut sub, &caps, "event 0's spare (delivery 2 of max 1)").await;
    assert_eq!(n_of(&spare.received.event), 0);
    assert_eq!(spare.received.num_delivered, 2, "event 0's spare");
    spare.ack().await.expect("ack");
    let early = tokio::time::timeout(caps.ack_wait / 10, sub.next_manual_ack()).await;
    if let Ok(got) = early {
        panic!(
            "event 1's spare is due half an ack wait after event 0's: got {:?}",
            got.map(|p| p.map(|p| (n_of(&p.received.event), p.received.num_delivered)))
        );
    }
    tokio::time::sleep(caps.ack_wait).await;
    sub.close().await.expect("close");
    drop(sub);
    let mut sub = subscribe_kind(&*p, "durable", "sparedue", "sparedue", &opts).await;
    let spare = recv_manual(
        &mut sub,
        &caps,
        "event 1's spare, due while the closed subscription was idle: it comes to the next one",
    )
    .await;
    assert_eq!(n_of(&spare.received.event), 1);
    assert_eq!(spare.received.num_delivered, 2, "event 1's spare");
    assert!(spare.is_final_delivery());
    spare.ack().await.expect("ack");
    sub.close().await.expect("close");
}
