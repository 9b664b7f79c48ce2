//! Durable consumers: resuming, sharing one durable between subscriptions
//! (also under random settlements), and resubscribing with changed options.

use super::{
    ProviderFactory, drain_ns, event, expect_nothing_manual, manual_opts, n_of, publish_n,
    recv_manual,
};
use crate::{DeliverPolicy, Error, SubscribeOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A durable resumes after the last acknowledged event when resubscribed.
pub async fn durable_resumes_after_drop(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    publish_n(&*p, "dr", "t", 0..5).await;
    let filter = p.category_subject("dr");
    let mut sub = p.subscribe_durable("dr-1", &filter).await.expect("durable");
    for i in 0..5 {
        let pending = recv_manual(&mut sub, &caps, &format!("new durable: stored event {i}")).await;
        assert_eq!(n_of(&pending.received.event), i);
        pending.ack().await.expect("ack");
    }
    drop(sub);
    publish_n(&*p, "dr", "t", 5..8).await;
    let mut sub = p.subscribe_durable("dr-1", &filter).await.expect("resume");
    for i in 5..8 {
        let pending = recv_manual(
            &mut sub,
            &caps,
            &format!("resubscribed durable: event {i}, after the last acked one"),
        )
        .await;
        assert_eq!(
            n_of(&pending.received.event),
            i,
            "resumes after the last ack"
        );
        assert_eq!(pending.received.num_delivered, 1);
        pending.ack().await.expect("ack");
    }
    expect_nothing_manual(
        &mut sub,
        caps.ack_wait,
        "resubscribed durable, everything acked",
    )
    .await;
}

/// Two live subscriptions on one durable share the work.
pub async fn durable_shared_by_two_subscriptions(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let filter = p.category_subject("sh");
    let a = p.subscribe_durable("shared", &filter).await.expect("a");
    let b = p.subscribe_durable("shared", &filter).await.expect("b");
    publish_n(&*p, "sh", "t", 0..100).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let counts = Arc::new(std::sync::Mutex::new([0usize; 2]));
    let mut handles = Vec::new();
    for (idx, mut sub) in [a, b].into_iter().enumerate() {
        let seen = seen.clone();
        let counts = counts.clone();
        let timeout = caps.ack_wait * 4;
        handles.push(tokio::spawn(async move {
            while let Ok(Ok(Some(pending))) =
                tokio::time::timeout(timeout, sub.next_manual_ack()).await
            {
                seen.lock()
                    .expect("lock")
                    .push(n_of(&pending.received.event));
                counts.lock().expect("lock")[idx] += 1;
                // pace so that both subscribers get a share
                tokio::time::sleep(Duration::from_millis(2)).await;
                pending.ack().await.expect("ack");
            }
            sub
        }));
    }
    // keep both subscriptions alive until both loops ended
    let subs = join_all(handles).await;
    drop(subs);
    let mut seen = seen.lock().expect("lock").clone();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..100).collect::<Vec<_>>(),
        "each event delivered to exactly one subscription"
    );
    let counts = *counts.lock().expect("lock");
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "both subscriptions did work: {counts:?}"
    );
}

/// A small seeded generator (xorshift64*) for the randomised tests: the same
/// seed gives the same plan on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self((seed ^ 0x9E37_79B9_7F4A_7C15).max(1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// What the workers of
/// [`shared_durable_settles_every_event_under_random_settlements`] share:
/// each settled event, and whether its settling delivery had outlived its
/// ack wait (so may have been redelivered meanwhile, and may be again).
type Settled = Arc<std::sync::Mutex<std::collections::HashMap<u64, bool>>>;

/// Several subscriptions on one durable settle their deliveries at random:
/// ack, nak, nak with a delay, `in_progress` then ack, term, or keeping one
/// unsettled past its ack wait (then dropping it); now and then a fetch is
/// abandoned (dropped while waiting) or a subscription is closed and
/// replaced. Every event is settled in bounded time, and once all are,
/// nothing more is delivered (except, at most, an event whose settling
/// delivery had outlived its ack wait: its redelivery may be under way).
pub async fn shared_durable_settles_every_event_under_random_settlements(
    factory: &dyn ProviderFactory,
) {
    const EVENTS: u64 = 300;
    const WORKERS: u64 = 3;
    const SEED: u64 = 0x5EED_0FA3_5EED;
    let caps = factory.capabilities();
    let p = factory.create().await;
    let filter = p.category_subject("stress");
    let options = SubscribeOptions {
        ack_wait: Some(caps.ack_wait),
        max_ack_pending: Some(16),
        ..SubscribeOptions::default()
    };
    // created before the first publish, so the durable starts at the first
    let mut first = p
        .subscribe_durable_with_options("stress", &filter, &options)
        .await
        .expect("subscribe the stress durable");
    first.close().await.expect("close");
    let settled: Settled = Arc::default();
    let deadline = tokio::time::Instant::now() + caps.receive_timeout * 6;
    let mut workers = Vec::new();
    for index in 0..WORKERS {
        let (p, filter, options, settled) =
            (p.clone(), filter.clone(), options.clone(), settled.clone());
        let ack_wait = caps.ack_wait;
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new(SEED ^ (index + 1).wrapping_mul(0xA24B_AED4_963E_E407));
            let subscribe = || p.subscribe_durable_with_options("stress", &filter, &options);
            let mut sub = subscribe().await.expect("subscribe");
            let mut held = Vec::new();
            while settled.lock().expect("lock").len() < EVENTS as usize
                && tokio::time::Instant::now() < deadline
            {
                if rng.below(100) == 0 {
                    held.clear();
                    sub.close().await.expect("close");
                    sub = subscribe().await.expect("subscribe again");
                }
                let wait = if rng.below(4) == 0 {
                    Duration::from_millis(1)
                } else {
                    ack_wait / 4
                };
                let Ok(next) = tokio::time::timeout(wait, sub.next_manual_ack()).await else {
                    continue;
                };
                let pending = next
                    .expect("next_manual_ack")
                    .expect("the durable still exists");
                let fetched = Instant::now();
                let n = n_of(&pending.received.event);
                let settle = |settled: &Settled| {
                    let stale = fetched.elapsed() >= ack_wait;
                    settled.lock().expect("lock").insert(n, stale);
                };
                match rng.below(100) {
                    0..=3 => {
                        // redelivered after its ack wait; dropped unsettled
                        held.push(pending);
                        if held.len() > 2 {
                            held.clear();
                        }
                    }
                    4..=23 => pending.nak().await.expect("nak"),
                    24..=33 => {
                        let delay = Duration::from_millis(1 + rng.below(10));
                        pending.nak_with_delay(delay).await.expect("nak_with_delay");
                    }
                    34..=43 => {
                        pending.in_progress().await.expect("in_progress");
                        tokio::task::yield_now().await;
                        pending.ack().await.expect("ack");
                        settle(&settled);
                    }
                    44..=48 => {
                        pending.term().await.expect("term");
                        settle(&settled);
                    }
                    _ => {
                        pending.ack().await.expect("ack");
                        settle(&settled);
                    }
                }
            }
            drop(held);
            sub.close().await.expect("close");
        }));
    }
    publish_n(&*p, "stress", "t", 0..EVENTS).await;
    join_all(workers).await;
    let settled = settled.lock().expect("lock").clone();
    let missing: Vec<u64> = (0..EVENTS).filter(|n| !settled.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {EVENTS} events not settled within {:?} on a durable shared by {WORKERS} \
         subscriptions settling at random (lost or stranded); first: {:?}",
        missing.len(),
        caps.receive_timeout * 6,
        &missing[..missing.len().min(10)]
    );
    let mut sub = p
        .subscribe_durable_with_options("stress", &filter, &options)
        .await
        .expect("subscribe after");
    while let Ok(late) = tokio::time::timeout(caps.ack_wait * 3, sub.next_manual_ack()).await {
        let pending = late
            .expect("next_manual_ack")
            .expect("the durable still exists");
        let n = n_of(&pending.received.event);
        assert!(
            settled.get(&n) == Some(&true),
            "event {n} delivered again after it was settled (delivery {})",
            pending.received.num_delivered
        );
        pending.ack().await.expect("ack");
    }
}

async fn join_all<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// Resubscribing a durable with different options (filter, `max_deliver`,
/// `ack_wait`, `max_ack_pending`, deliver policy) applies them or refuses
/// with `Conflict`; it never silently keeps the old ones. (A deliver policy
/// sets where a durable starts, so the memory and NATS providers refuse a
/// changed one; a provider that applies it moves the durable to the new
/// start.)
pub async fn changed_durable_options_applied_or_refused(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let sub = p
        .subscribe_durable("chg", &p.category_subject("chga"))
        .await
        .expect("durable");
    drop(sub);
    match p
        .subscribe_durable("chg", &p.category_subject("chgb"))
        .await
    {
        Ok(mut sub) => {
            p.publish(&event(&*p, "chga", "t", 1))
                .await
                .expect("publish");
            p.publish(&event(&*p, "chgb", "t", 2))
                .await
                .expect("publish");
            let got = recv_manual(
                &mut sub,
                &caps,
                "durable resubscribed with another filter: the event on the new filter",
            )
            .await;
            assert_eq!(
                n_of(&got.received.event),
                2,
                "the new filter must be in effect"
            );
            got.ack().await.expect("ack");
        }
        Err(Error::Conflict { .. }) => {}
        Err(other) => panic!("changed filter: expected Ok or Conflict, got {other}"),
    }
    let stricter = SubscribeOptions {
        max_deliver: Some(2),
        ack_wait: Some(caps.ack_wait),
        ..SubscribeOptions::default()
    };
    match p
        .subscribe_durable_with_options(
            "chg2",
            &p.category_subject("chgc"),
            &SubscribeOptions::default(),
        )
        .await
    {
        Ok(s) => drop(s),
        Err(e) => panic!("durable: {e}"),
    }
    match p
        .subscribe_durable_with_options("chg2", &p.category_subject("chgc"), &stricter)
        .await
    {
        Ok(mut sub) => {
            p.publish(&event(&*p, "chgc", "t", 1))
                .await
                .expect("publish");
            let a = recv_manual(
                &mut sub,
                &caps,
                "durable resubscribed with max_deliver 2: the first delivery",
            )
            .await;
            assert_eq!(
                a.max_deliver(),
                Some(2),
                "the new max_deliver must be in effect"
            );
            a.nak().await.expect("nak");
            let b = recv_manual(
                &mut sub,
                &caps,
                "durable resubscribed with max_deliver 2: the redelivery after nak",
            )
            .await;
            assert!(
                b.is_final_delivery(),
                "the new max_deliver must be in effect"
            );
            b.nak().await.expect("nak");
            expect_nothing_manual(
                &mut sub,
                caps.ack_wait * 2,
                "durable resubscribed with max_deliver 2: max_deliver 2 stops it",
            )
            .await;
        }
        Err(Error::Conflict { .. }) => {}
        Err(other) => panic!("changed options: expected Ok or Conflict, got {other}"),
    }
    // a changed ack wait, from one longer than the test to the capability's
    let long = SubscribeOptions {
        ack_wait: Some(caps.receive_timeout * 6),
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject("chgd");
    match p
        .subscribe_durable_with_options("chg3", &filter, &long)
        .await
    {
        Ok(s) => drop(s),
        Err(e) => panic!("durable: {e}"),
    }
    match p
        .subscribe_durable_with_options("chg3", &filter, &manual_opts(&caps))
        .await
    {
        Ok(mut sub) => {
            p.publish(&event(&*p, "chgd", "t", 1))
                .await
                .expect("publish");
            let what = format!(
                "durable created with ack_wait {:?}, resubscribed with ack_wait {:?}",
                long.ack_wait.unwrap_or_default(),
                caps.ack_wait
            );
            let first = recv_manual(&mut sub, &caps, &format!("{what}: the first delivery")).await;
            assert!(
                first.ack_wait().is_none_or(|w| w == caps.ack_wait),
                "{what}: the delivery reports ack wait {:?}: the new ack_wait must be in effect",
                first.ack_wait()
            );
            drop(first); // ack timeout
            let again = recv_manual(
                &mut sub,
                &caps,
                &format!(
                    "{what}: the redelivery of a delivery dropped unsettled, after the new ack \
                     wait (the new ack_wait must be in effect)"
                ),
            )
            .await;
            assert_eq!(again.received.num_delivered, 2);
            again.ack().await.expect("ack");
        }
        Err(Error::Conflict { .. }) => {}
        Err(other) => panic!("changed ack_wait: expected Ok or Conflict, got {other}"),
    }
    // a limit on deliveries awaiting settlement set on a durable that had
    // the provider's default
    let filter = p.category_subject("chge");
    match p
        .subscribe_durable_with_options("chg4", &filter, &manual_opts(&caps))
        .await
    {
        Ok(s) => drop(s),
        Err(e) => panic!("durable: {e}"),
    }
    let limited = SubscribeOptions {
        max_ack_pending: Some(1),
        ..manual_opts(&caps)
    };
    match p
        .subscribe_durable_with_options("chg4", &filter, &limited)
        .await
    {
        Ok(mut sub) => {
            publish_n(&*p, "chge", "t", 0..2).await;
            let what = "durable resubscribed with max_ack_pending 1";
            let first = recv_manual(&mut sub, &caps, &format!("{what}: the first delivery")).await;
            if let Ok(item) = tokio::time::timeout(caps.ack_wait / 2, sub.next_manual_ack()).await {
                panic!(
                    "{what}: a second delivery while the first awaits settlement: {item:?} (the \
                     new max_ack_pending must be in effect)"
                );
            }
            first.ack().await.expect("ack");
            recv_manual(
                &mut sub,
                &caps,
                &format!("{what}: the second, after the ack"),
            )
            .await
            .ack()
            .await
            .expect("ack");
        }
        Err(Error::Conflict { .. }) => {}
        Err(other) => panic!("changed max_ack_pending: expected Ok or Conflict, got {other}"),
    }
    // a changed deliver policy, on a durable created with `New` over two
    // stored events: applied, `All` delivers them; ignored, nothing comes
    publish_n(&*p, "chgf", "t", 0..2).await;
    let filter = p.category_subject("chgf");
    let new_only = SubscribeOptions {
        deliver_policy: DeliverPolicy::New,
        ..manual_opts(&caps)
    };
    match p
        .subscribe_durable_with_options("chg5", &filter, &new_only)
        .await
    {
        Ok(s) => drop(s),
        Err(e) => panic!("durable: {e}"),
    }
    let all = SubscribeOptions {
        deliver_policy: DeliverPolicy::All,
        ..manual_opts(&caps)
    };
    match p
        .subscribe_durable_with_options("chg5", &filter, &all)
        .await
    {
        Ok(mut sub) => {
            let what = "durable created with DeliverPolicy::New, resubscribed with \
                        DeliverPolicy::All (accepted: the new deliver policy must be in effect; \
                        or refuse it with Error::Conflict)";
            assert_eq!(
                drain_ns(&mut sub, &caps, 2, what).await,
                [0, 1],
                "{what}: the stored events"
            );
        }
        Err(Error::Conflict { .. }) => {}
        Err(other) => panic!("changed deliver policy: expected Ok or Conflict, got {other}"),
    }
}

/// A durable that has delivered events on a literal filter, resubscribed
/// with a wildcard filter, delivers what the new filter matches, or refuses
/// the change with `Conflict`: it never accepts the filter and then
/// delivers nothing.
pub async fn changed_durable_filter_from_literal_to_wildcard(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe_durable_with_options(
            "chlit",
            &p.build_subject("chlit", "a"),
            &manual_opts(&caps),
        )
        .await
        .expect("durable on a literal filter");
    p.publish(&event(&*p, "chlit", "a", 1))
        .await
        .expect("publish");
    recv_manual(&mut sub, &caps, "the event on the literal filter")
        .await
        .ack()
        .await
        .expect("ack");
    sub.close().await.expect("close");
    drop(sub);
    match p
        .subscribe_durable_with_options("chlit", &p.category_subject("chlit"), &manual_opts(&caps))
        .await
    {
        Ok(mut sub) => {
            p.publish(&event(&*p, "chlit", "b", 2))
                .await
                .expect("publish");
            let got = recv_manual(
                &mut sub,
                &caps,
                "durable resubscribed with a wildcard filter: the event it matches",
            )
            .await;
            assert_eq!(
                n_of(&got.received.event),
                2,
                "the new filter must be in effect"
            );
            got.ack().await.expect("ack");
        }
        Err(Error::Conflict { .. }) => {}
        Err(other) => panic!("changed filter: expected Ok or Conflict, got {other}"),
    }
}
