//! Consumer policies: every `DeliverPolicy`, `max_ack_pending`, `backoff`,
//! and a consumer that retention overtakes.

use super::{
    ProviderFactory, drain_ns, event, expect_nothing_manual, manual_opts, n_of, publish_n,
    recv_manual, redelivery_slack, skip, subscribe_kind,
};
use crate::{DeliverPolicy, Error, EventProvider, SubscribeOptions, Subscription};
use std::time::{Duration, Instant};

#[cfg(doc)]
use super::Capabilities;
#[cfg(doc)]
use crate::PendingEvent;

async fn policy_fixture(p: &dyn EventProvider) -> Vec<u64> {
    let mut seqs = Vec::new();
    for (n, topic) in [(0, "x"), (1, "y"), (2, "x"), (3, "y"), (4, "x")] {
        seqs.push(
            p.publish(&event(p, "pol", topic, n))
                .await
                .expect("publish"),
        );
    }
    seqs
}

/// A durable and an ephemeral subscription on the fixture's category with
/// `policy`, both created now: every policy works on both kinds.
async fn policy_subs(
    p: &dyn EventProvider,
    name: &str,
    policy: DeliverPolicy,
) -> Vec<(&'static str, Box<dyn Subscription>)> {
    let opts = SubscribeOptions {
        deliver_policy: policy,
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject("pol");
    let durable = p
        .subscribe_durable_with_options(name, &filter, &opts)
        .await
        .expect("durable with policy");
    let ephemeral = p
        .subscribe_with_options(&filter, &opts)
        .await
        .expect("ephemeral with policy");
    vec![("durable", durable), ("ephemeral", ephemeral)]
}

/// `DeliverPolicy::All` delivers every stored event (durable and ephemeral).
pub async fn deliver_policy_all(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    policy_fixture(&*p).await;
    for (kind, mut sub) in policy_subs(&*p, "pol-all", DeliverPolicy::All).await {
        assert_eq!(
            drain_ns(
                &mut sub,
                &caps,
                5,
                &format!("{kind} subscription with DeliverPolicy::All")
            )
            .await,
            vec![0, 1, 2, 3, 4],
            "{kind} subscription with DeliverPolicy::All"
        );
    }
}

/// `DeliverPolicy::Last` delivers the newest stored event matching the
/// filter (not the stream's newest, when that one is on another subject),
/// then new ones (durable and ephemeral).
pub async fn deliver_policy_last(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    policy_fixture(&*p).await;
    // the stream's newest event is outside the filter
    p.publish(&event(&*p, "pol-other", "x", 99))
        .await
        .expect("publish");
    let mut subs = policy_subs(&*p, "pol-last", DeliverPolicy::Last).await;
    for (kind, sub) in &mut subs {
        assert_eq!(
            drain_ns(
                sub,
                &caps,
                1,
                &format!(
                    "{kind} subscription with DeliverPolicy::Last (the newest event matching \
                     the filter, n=4; the stream's newest is on another category)"
                )
            )
            .await,
            vec![4],
            "{kind} subscription with DeliverPolicy::Last"
        );
    }
    p.publish(&event(&*p, "pol", "y", 5))
        .await
        .expect("publish");
    for (kind, sub) in &mut subs {
        assert_eq!(
            drain_ns(
                sub,
                &caps,
                1,
                &format!("{kind} subscription with DeliverPolicy::Last, then new events")
            )
            .await,
            vec![5],
            "{kind} subscription with DeliverPolicy::Last, then new events"
        );
    }
}

/// `DeliverPolicy::New` delivers only events published after creation
/// (durable, ephemeral, and [`EventProvider::subscribe`], which is live).
pub async fn deliver_policy_new(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    policy_fixture(&*p).await;
    let mut subs = policy_subs(&*p, "pol-new", DeliverPolicy::New).await;
    subs.push((
        "subscribe()",
        p.subscribe(&p.category_subject("pol"))
            .await
            .expect("subscribe"),
    ));
    for (kind, sub) in &mut subs {
        expect_nothing_manual(
            sub,
            caps.ack_wait,
            &format!(
                "{kind} subscription with DeliverPolicy::New, before anything new was published"
            ),
        )
        .await;
    }
    p.publish(&event(&*p, "pol", "y", 5))
        .await
        .expect("publish");
    for (kind, sub) in &mut subs {
        assert_eq!(
            drain_ns(
                sub,
                &caps,
                1,
                &format!("{kind} subscription with DeliverPolicy::New")
            )
            .await,
            vec![5],
            "{kind} subscription with DeliverPolicy::New"
        );
    }
}

/// `DeliverPolicy::ByStartSequence` starts at the given sequence (durable
/// and ephemeral).
pub async fn deliver_policy_by_start_sequence(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let seqs = policy_fixture(&*p).await;
    let policy = DeliverPolicy::ByStartSequence { sequence: seqs[2] };
    for (kind, mut sub) in policy_subs(&*p, "pol-seq", policy).await {
        assert_eq!(
            drain_ns(
                &mut sub,
                &caps,
                3,
                &format!("{kind} subscription with DeliverPolicy::ByStartSequence")
            )
            .await,
            vec![2, 3, 4],
            "{kind} subscription with DeliverPolicy::ByStartSequence"
        );
    }
}

/// `DeliverPolicy::ByStartSequence` beyond the stream's end waits for that
/// sequence: events published meanwhile with lower sequences are not
/// delivered, those at or after it are (durable and ephemeral). Sequences
/// need not be contiguous (the contract asks for strictly increasing ones),
/// so what is expected follows from the sequences the publishes return.
pub async fn deliver_policy_by_start_sequence_beyond_the_end(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let seqs = policy_fixture(&*p).await;
    let start = seqs[4] + 3;
    let policy = DeliverPolicy::ByStartSequence { sequence: start };
    let mut subs = policy_subs(&*p, "pol-beyond", policy).await;
    // contiguous sequences are seqs[4]+1 ..= seqs[4]+4: the first two are
    // before the start; the last is at or after it whatever the gaps
    let mut expected = Vec::new();
    for n in 5..9 {
        let seq = p
            .publish(&event(&*p, "pol", "x", n))
            .await
            .expect("publish");
        if seq >= start {
            expected.push(n);
        }
    }
    for (kind, sub) in &mut subs {
        assert_eq!(
            drain_ns(
                sub,
                &caps,
                expected.len(),
                &format!(
                    "{kind} subscription with DeliverPolicy::ByStartSequence {start} beyond the end"
                )
            )
            .await,
            expected,
            "{kind} subscription with DeliverPolicy::ByStartSequence {start}: the events at or \
             after it, nothing before it"
        );
    }
}

/// `DeliverPolicy::ByStartTime` starts at the first event stored at or after
/// the time (durable and ephemeral): the provider's storage time, not the
/// events' own `timestamp` (here set far after the start time on the events
/// before it, and far before it on the events after it).
///
/// The start time is the test machine's clock, with
/// [`Capabilities::clock_tolerance`] between it and the publishes on either
/// side: a backend that stamps events with a clock further off than that
/// fails here although its logic is right, and sets the capability.
///
/// A start time an hour ahead starts at the next event stored, whatever its
/// storage time: the start sets a position, fixed when the consumer is
/// created, not a filter on storage times.
pub async fn deliver_policy_by_start_time(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let margin = caps.clock_tolerance;
    // the events' own timestamps say the opposite of their storage times
    // (a producer's clock off by an hour, an old event published again)
    let publish_stamped = async |range: std::ops::Range<u64>, timestamp: u64| {
        for n in range {
            let mut e = event(&*p, "pol", "x", n);
            e.timestamp = timestamp;
            p.publish(&e).await.expect("publish");
        }
    };
    publish_stamped(0..2, crate::now_millis() + 3_600_000).await;
    tokio::time::sleep(margin).await;
    let start = crate::now_millis();
    tokio::time::sleep(margin).await;
    publish_stamped(2..4, 1).await;
    let policy = DeliverPolicy::ByStartTime { timestamp: start };
    for (kind, mut sub) in policy_subs(&*p, "pol-time", policy).await {
        let what = format!(
            "{kind} subscription with DeliverPolicy::ByStartTime (events 0 and 1 published \
             {margin:?} before the start time by the test machine's clock, 2 and 3 {margin:?} \
             after it; a backend that stamps events with a clock off by more than that fails \
             here: set Capabilities::clock_tolerance to the skew it must tolerate; the events' \
             own `timestamp`s are an hour after the start time on 0 and 1, and 1 on 2 and 3: \
             ByStartTime compares the storage time, not Event::timestamp)"
        );
        assert_eq!(
            drain_ns(&mut sub, &caps, 2, &what).await,
            vec![2, 3],
            "{what}"
        );
    }
    let ahead = crate::now_millis() + 3_600_000;
    let policy = DeliverPolicy::ByStartTime { timestamp: ahead };
    let mut subs = policy_subs(&*p, "pol-ahead", policy).await;
    publish_stamped(4..5, crate::now_millis()).await;
    for (kind, sub) in &mut subs {
        let what = format!(
            "{kind} subscription with DeliverPolicy::ByStartTime an hour ahead (the start sets \
             a position when the consumer is created, the next event stored, 4: not a filter \
             on storage times)"
        );
        assert_eq!(drain_ns(sub, &caps, 1, &what).await, vec![4], "{what}");
    }
}

/// `DeliverPolicy::ByStartTime` is inclusive ("at or after"): an event
/// stored within the very millisecond of the start time is delivered
/// (durable and ephemeral). The test publishes until one publish starts
/// and returns within one millisecond of the test machine's clock, so its
/// storage time is that millisecond, and starts there; it needs the
/// backend to stamp events with the test machine's clock
/// ([`Capabilities::stamps_with_test_clock`], otherwise skipped).
pub async fn deliver_policy_by_start_time_includes_its_millisecond(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    if !caps.stamps_with_test_clock {
        skip(
            "deliver_policy_by_start_time_includes_its_millisecond",
            p.name(),
            "capabilities.stamps_with_test_clock is false",
        );
        return;
    }
    let mut found = None;
    for n in 0..1000 {
        let before = crate::now_millis();
        p.publish(&event(&*p, "incl", "t", n))
            .await
            .expect("publish");
        if crate::now_millis() == before {
            found = Some((n, before));
            break;
        }
    }
    let Some((n, start)) = found else {
        panic!(
            "1,000 publishes in a row each took a millisecond or more (by the test machine's \
             clock): no event is known to be stored within one millisecond, so ByStartTime's \
             inclusive start cannot be checked"
        );
    };
    // a sentinel stored in a later millisecond
    tokio::time::sleep(Duration::from_millis(2)).await;
    p.publish(&event(&*p, "incl", "t", 1000))
        .await
        .expect("publish");
    let policy = DeliverPolicy::ByStartTime { timestamp: start };
    let opts = SubscribeOptions {
        deliver_policy: policy,
        ..SubscribeOptions::default()
    };
    let filter = p.category_subject("incl");
    let durable = p
        .subscribe_durable_with_options("incl", &filter, &opts)
        .await
        .expect("durable with ByStartTime");
    let ephemeral = p
        .subscribe_with_options(&filter, &opts)
        .await
        .expect("ephemeral with ByStartTime");
    for (kind, mut sub) in [("durable", durable), ("ephemeral", ephemeral)] {
        let what = format!(
            "{kind} subscription with DeliverPolicy::ByStartTime {start}: event {n}, published \
             and acknowledged within millisecond {start} by the test machine's clock, comes \
             before the sentinel n=1000 stored later (the start is inclusive: at or after; a \
             backend whose clock is not the test machine's sets \
             Capabilities::stamps_with_test_clock to false)"
        );
        loop {
            let pending = recv_manual(&mut sub, &caps, &what).await;
            let got = n_of(&pending.received.event);
            pending.ack().await.expect("ack");
            assert_ne!(got, 1000, "{what}");
            if got == n {
                break;
            }
        }
    }
}

/// `DeliverPolicy::LastPerSubject` delivers the newest event of each
/// subject the filter matches (not of the stream's other subjects), then
/// new ones (durable and ephemeral).
pub async fn deliver_policy_last_per_subject(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    policy_fixture(&*p).await;
    // the newest event of a subject outside the filter
    p.publish(&event(&*p, "pol-other", "x", 99))
        .await
        .expect("publish");
    let mut subs = policy_subs(&*p, "pol-lps", DeliverPolicy::LastPerSubject).await;
    for (kind, sub) in &mut subs {
        assert_eq!(
            drain_ns(
                sub,
                &caps,
                2,
                &format!("{kind} subscription with DeliverPolicy::LastPerSubject")
            )
            .await,
            vec![3, 4],
            "{kind} subscription with DeliverPolicy::LastPerSubject (the newest event of each \
             subject the filter matches; n=99 is on another category)"
        );
    }
    p.publish(&event(&*p, "pol", "z", 5))
        .await
        .expect("publish");
    for (kind, sub) in &mut subs {
        assert_eq!(
            drain_ns(
                sub,
                &caps,
                1,
                &format!("{kind} subscription with DeliverPolicy::LastPerSubject, then new events")
            )
            .await,
            vec![5],
            "{kind} subscription with DeliverPolicy::LastPerSubject, then new events"
        );
    }
}

/// `max_ack_pending` caps the deliveries awaiting settlement: delivery
/// pauses at the limit and resumes when one is settled, on durable and
/// ephemeral subscriptions alike.
pub async fn max_ack_pending_pauses_delivery(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions {
        max_ack_pending: Some(2),
        // nothing is redelivered while the test runs
        ack_wait: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    };
    for kind in ["durable", "ephemeral"] {
        let category = format!("map{kind}");
        let mut sub = subscribe_kind(&*p, kind, "map", &category, &opts).await;
        publish_n(&*p, &category, "t", 0..4).await;
        let what = format!("{kind}, max_ack_pending 2");
        let a = recv_manual(&mut sub, &caps, &format!("{what}: the first delivery")).await;
        let b = recv_manual(&mut sub, &caps, &format!("{what}: the second delivery")).await;
        assert_eq!(
            (n_of(&a.received.event), n_of(&b.received.event)),
            (0, 1),
            "{what}"
        );
        if let Ok(item) = tokio::time::timeout(caps.ack_wait, sub.next_manual_ack()).await {
            panic!("{what}: a third delivery while two await settlement: {item:?}");
        }
        a.ack().await.expect("ack");
        let c = recv_manual(
            &mut sub,
            &caps,
            &format!("{what}: delivery resumes after an ack"),
        )
        .await;
        assert_eq!(
            n_of(&c.received.event),
            2,
            "{what}: delivery resumes after an ack"
        );
        if let Ok(item) = tokio::time::timeout(caps.ack_wait, sub.next_manual_ack()).await {
            panic!("{what}: a third delivery while two await settlement: {item:?}");
        }
        b.ack().await.expect("ack");
        c.ack().await.expect("ack");
        let d = recv_manual(
            &mut sub,
            &caps,
            &format!("{what}: the 4th event, after every delivery was acked"),
        )
        .await;
        assert_eq!(n_of(&d.received.event), 3, "{what}");
        d.ack().await.expect("ack");
        sub.close().await.expect("close");
    }
}

/// `backoff` spaces the redeliveries after ack timeouts: the n-th delivery
/// waits `backoff[n-1]` (the last entry repeats), so the first redelivery
/// comes `backoff[0]` after the first delivery, the second `backoff[1]`
/// after the first redelivery and the third `backoff[1]` again (not
/// `ack_wait`, nor the provider's default, once the steps run out), not a
/// flat `ack_wait`. Each comes no earlier
/// than its step and no later than its step plus a slack of 1.5 ×
/// [`Capabilities::ack_wait`] (a provider off by one step, waiting
/// `backoff[n]` after delivery n, is late by `backoff[1] - backoff[0]`,
/// 3 × `ack_wait`), and a delivery that reports its ack wait
/// ([`PendingEvent::ack_wait`]) reports the step it waits. On durable and
/// ephemeral subscriptions alike.
pub async fn backoff_spaces_redeliveries(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let (short, long) = (caps.ack_wait, caps.ack_wait * 4);
    let slack = redelivery_slack(&caps);
    let opts = SubscribeOptions {
        ack_wait: Some(short),
        backoff: vec![short, long],
        // JetStream needs more deliveries than backoff entries
        max_deliver: Some(5),
        ..SubscribeOptions::default()
    };
    // (delivery number, the step it waits, what that step is)
    let steps = [
        (1, short, "backoff[0]"),
        (2, long, "backoff[1]"),
        (3, long, "backoff[1], the last step repeating"),
        (4, long, "backoff[1], the last step repeating"),
    ];
    for kind in ["durable", "ephemeral"] {
        let category = format!("backoff{kind}");
        let mut sub = subscribe_kind(&*p, kind, "backoff", &category, &opts).await;
        publish_n(&*p, &category, "t", 0..1).await;
        let mut pending =
            recv_manual(&mut sub, &caps, &format!("{kind}: the first delivery")).await;
        let mut delivered = Instant::now();
        for window in steps.windows(2) {
            let [(n, wait, step), (next, ..)] = window else {
                unreachable!("windows(2)")
            };
            assert_eq!(pending.received.num_delivered, *n, "{kind}: num_delivered");
            assert!(
                pending.ack_wait().is_none_or(|w| w == *wait),
                "{kind}: delivery {n} reports ack wait {:?}, but with backoff {:?} it waits \
                 {step} = {wait:?} (delivery n waits backoff[n-1])",
                pending.ack_wait(),
                opts.backoff
            );
            drop(pending); // ack timeout
            pending = recv_manual(
                &mut sub,
                &caps,
                &format!("{kind}: redelivery {next}, {step} = {wait:?} after delivery {n}"),
            )
            .await;
            let waited = delivered.elapsed();
            delivered = Instant::now();
            assert_eq!(
                pending.received.num_delivered, *next,
                "{kind}: num_delivered"
            );
            assert!(
                waited + Duration::from_millis(50) >= *wait,
                "{kind}: delivery {next} came {waited:?} after delivery {n}, before {step} = \
                 {wait:?}"
            );
            assert!(
                waited <= *wait + slack,
                "{kind}: delivery {next} came {waited:?} after delivery {n}, later than {step} \
                 = {wait:?} plus the slack {slack:?} (1.5 x Capabilities::ack_wait): delivery \
                 n waits backoff[n-1] (a provider that waits backoff[n] is off by one step)"
            );
        }
        let (n, wait, step) = steps[3];
        assert!(
            pending.ack_wait().is_none_or(|w| w == wait),
            "{kind}: delivery {n} reports ack wait {:?}, but with backoff {:?} it waits {step} \
             = {wait:?}",
            pending.ack_wait(),
            opts.backoff
        );
        pending.ack().await.expect("ack");
        sub.close().await.expect("close");
    }
}

/// When retention removes events a consumer has not read yet, the consumer
/// continues with the oldest stored event: it skips nothing still stored,
/// and (where the backend can tell, [`Capabilities::reports_lagged`]) it
/// first reports [`Error::Lagged`] with the number it missed, so nothing is
/// lost silently. `info` (its counts and its `bytes`) and `history` see
/// only the retained events.
pub async fn retention_overrun_reported_and_skipped(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let Some(p) = factory.create_with_max_events(10).await else {
        skip(
            "retention_overrun_reported_and_skipped",
            factory.create().await.name(),
            "ProviderFactory::create_with_max_events returns None",
        );
        return;
    };
    let filter = p.category_subject("ret");
    let durable = p
        .subscribe_durable_with_options("ret", &filter, &manual_opts(&caps))
        .await
        .expect("durable");
    let live = p.subscribe(&filter).await.expect("subscribe");
    let mut seqs = publish_n(&*p, "ret", "t", 0..10).await;
    // ten events of about the same size stored, as after the overrun below
    let full = p.info().await.expect("info").bytes;
    seqs.extend(publish_n(&*p, "ret", "t", 10..30).await);
    for (kind, mut sub, manual) in [("durable", durable, true), ("ephemeral", live, false)] {
        let (mut got, mut missed) = (Vec::new(), 0);
        while got.last() != Some(&29) {
            let next = async {
                if manual {
                    let pending = sub.next_manual_ack().await?;
                    let n = pending.as_ref().map(|p| n_of(&p.received.event));
                    if let Some(pending) = pending {
                        pending.ack().await?;
                    }
                    Ok::<_, Error>(n)
                } else {
                    Ok(sub.next().await?.map(|r| n_of(&r.event)))
                }
            };
            match tokio::time::timeout(caps.receive_timeout, next).await {
                Ok(Ok(Some(n))) => got.push(n),
                Ok(Err(Error::Lagged { missed: m })) => missed += m,
                Ok(other) => panic!("{kind}: expected an event or Lagged, got {other:?}"),
                Err(_) => panic!(
                    "{kind}: no event within {:?}; got {got:?}",
                    caps.receive_timeout
                ),
            }
        }
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{kind}: events in order, none twice: {got:?}"
        );
        assert!(
            got.ends_with(&(20..30).collect::<Vec<_>>()),
            "{kind}: every retained event delivered: {got:?}"
        );
        if caps.reports_lagged {
            assert_eq!(
                missed + got.len() as u64,
                30,
                "{kind}: delivered {got:?} and reported {missed} missed: events lost silently"
            );
        }
        if manual {
            expect_nothing_manual(
                &mut sub,
                caps.ack_wait,
                &format!("{kind}: every retained event delivered and acked"),
            )
            .await;
        }
    }
    let info = p.info().await.expect("info");
    assert_eq!(
        (info.messages, info.first_sequence, info.last_sequence),
        (10, seqs[20], seqs[29]),
        "info after retention: (messages, first_sequence, last_sequence)"
    );
    assert!(
        info.bytes < full * 2,
        "info after retention: bytes {} for the 10 retained events, but 10 events of the same \
         size took {full} before the overrun: the removed events' bytes must not be counted",
        info.bytes
    );
    assert_eq!(
        p.history(None, 100)
            .await
            .expect("history")
            .iter()
            .map(n_of)
            .collect::<Vec<_>>(),
        (20..30).rev().collect::<Vec<_>>(),
        "history holds the retained events"
    );
}
