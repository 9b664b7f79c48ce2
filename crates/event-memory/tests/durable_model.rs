//! A durable shared by several subscriptions, driven through the public API
//! at random (fetches completed or dropped part-way, auto-ack and manual
//! fetches mixed, every settlement, dropped deliveries, subscriptions
//! dropped, closed and resumed, the paused clock moving), checked against
//! what the contract promises a caller can see. Retention (small stores,
//! events of another category taking room) evicts as it goes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Rng, poll_then_drop};
use event_core::{Event, EventProvider, PendingEvent, SubscribeOptions, Subscription};
use event_memory::MemoryProvider;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// What the caller knows of one event.
#[derive(Default)]
struct Seen {
    /// Deliveries seen so far (the last `num_delivered`).
    deliveries: u64,
    /// Not to be delivered again before this instant (its latest delivery
    /// is in flight, or it was nak'd with a delay).
    not_before: Option<Instant>,
    /// Settled for good (acked, termed, or ended by a failed final delivery).
    done: bool,
    /// A final delivery nak'd after its ack wait ran out: it ended, or the
    /// nak came too late and it comes once more (the spare).
    maybe_ended: bool,
    /// An auto-ack delivery whose subscription's next call was dropped
    /// part-way: that call may have acknowledged it.
    maybe_acked: bool,
    /// Settled after its ack wait ran out (the provider may have given it
    /// up meanwhile, as lagged if retention evicted it).
    late: bool,
}

struct Model {
    options: SubscribeOptions,
    seen: HashMap<u64, Seen>,
}

impl Model {
    fn wait(&self, deliveries: u64) -> Duration {
        self.options.redelivery_delay(deliveries)
    }

    fn max(&self) -> Option<u64> {
        self.options.max_deliver
    }

    fn delivered(&mut self, seed: u64, step: usize, seq: u64, n: u64, final_: Option<bool>) {
        let now = Instant::now();
        let max = self.max();
        let wait = self.wait(n);
        let s = self.seen.entry(seq).or_default();
        assert!(
            !s.done,
            "seed {seed} step {step}: {seq} delivered after it was settled"
        );
        assert_eq!(
            n,
            s.deliveries + 1,
            "seed {seed} step {step}: {seq} delivery numbers (a delivery lost or repeated)"
        );
        if let Some(at) = s.not_before {
            assert!(
                now >= at,
                "seed {seed} step {step}: {seq} delivered again {:?} early",
                at - now
            );
        }
        if let Some(max) = max {
            assert!(
                n <= max + 1,
                "seed {seed} step {step}: {seq} delivered {n} times"
            );
            if let Some(final_) = final_ {
                assert_eq!(
                    final_,
                    n >= max,
                    "seed {seed} step {step}: {seq} final flag"
                );
            }
        }
        s.deliveries = n;
        s.maybe_ended = false;
        s.maybe_acked = false;
        s.not_before = Some(now + wait);
    }

    fn settle(&mut self, seq: u64) {
        if let Some(s) = self.seen.get_mut(&seq) {
            if !s.done && s.not_before.is_some_and(|at| Instant::now() >= at) {
                s.late = true;
            }
            s.done = true;
        }
    }

    fn is_latest(&self, seq: u64, n: u64) -> bool {
        self.seen
            .get(&seq)
            .is_some_and(|s| s.deliveries == n && !s.done)
    }
}

/// Every delivery is numbered one past the last one seen (a fetch dropped
/// part-way took nothing, none was made twice), none comes after its
/// event was settled, or before its ack wait, backoff step or nak delay
/// ran out; the final-delivery flag follows `max_deliver`, with at most the
/// one spare after it. Once the failures stop, every event is delivered
/// and settled, except those ended by a failed final delivery (only with
/// `max_deliver`) and those retention removed, which `Lagged` counts.
/// `SEEDS=n` runs more seeds.
#[tokio::test(start_paused = true)]
async fn a_shared_durable_used_at_random_loses_duplicates_and_strands_nothing() {
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    for seed in 1..=seeds {
        run(seed).await;
    }
}

async fn run(seed: u64) {
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let max_events = [100_000, 20, 7][rng.below(3) as usize];
    let p = MemoryProvider::new(event_memory::MemoryConfig {
        max_events,
        ..event_memory::MemoryConfig::default()
    })
    .unwrap();
    let mut lagged = 0u64;
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_millis(100)),
        max_deliver: [None, Some(2), Some(4)][rng.below(3) as usize],
        max_ack_pending: [None, Some(2), Some(5)][rng.below(3) as usize],
        backoff: if rng.below(2) == 0 {
            vec![]
        } else {
            vec![Duration::from_millis(50), Duration::from_millis(150)]
        },
        ..SubscribeOptions::default()
    };
    let mut model = Model {
        options: options.clone(),
        seen: HashMap::new(),
    };
    let sub = || p.subscribe_durable_with_options("d", "events.t.>", &options);
    let mut subs: Vec<Box<dyn Subscription>> = vec![sub().await.unwrap(), sub().await.unwrap()];
    // per subscription: the auto-ack delivery not yet acknowledged
    let mut auto: Vec<Option<u64>> = vec![None, None];
    let mut held: Vec<PendingEvent> = Vec::new();
    // the sequences of the events the durable's filter matches
    let mut published: Vec<u64> = Vec::new();
    for step in 0..400 {
        match rng.below(16) {
            0..=2 => {
                // now and then an event of another category: it only takes
                // room (and evicts)
                let category = if rng.below(4) == 0 { "u" } else { "t" };
                let subject = format!("events.{category}.x");
                let e = Event::new(subject, category, "s", "x", serde_json::json!(step));
                let seq = p.publish(&e).await.unwrap();
                p.publish(&e).await.unwrap();
                if category == "t" {
                    published.push(seq);
                }
            }
            3..=6 => {
                let i = rng.below(subs.len() as u64) as usize;
                let manual = rng.below(3) != 0;
                let polls = rng.below(4);
                let out = if manual {
                    poll_then_drop(subs[i].next_manual_ack(), polls as usize)
                        .await
                        .map(|r| r.map(|o| o.map(Ok)))
                } else {
                    poll_then_drop(subs[i].next(), polls as usize)
                        .await
                        .map(|r| r.map(|o| o.map(Err)))
                };
                let Some(out) = out else {
                    if let Some(seq) = auto[i]
                        && let Some(s) = model.seen.get_mut(&seq)
                    {
                        s.maybe_acked = true;
                    }
                    continue;
                };
                // a completed call acknowledged the previous auto-ack event
                if let Some(seq) = auto[i].take() {
                    model.settle(seq);
                }
                let out = match out {
                    Err(event_core::Error::Lagged { missed }) => {
                        lagged += missed;
                        continue;
                    }
                    other => other.unwrap(),
                };
                let subject = match &out {
                    Some(Ok(pending)) => pending.event().subject.clone(),
                    Some(Err(r)) => r.event.subject.clone(),
                    None => panic!("seed {seed} step {step}: subscription ended"),
                };
                assert_eq!(subject, "events.t.x", "seed {seed} step {step}: filter");
                match out {
                    Some(Ok(pending)) => {
                        let r = &pending.received;
                        let seq = r.sequence;
                        model.delivered(
                            seed,
                            step,
                            seq,
                            r.num_delivered,
                            Some(pending.is_final_delivery()),
                        );
                        held.push(pending);
                    }
                    Some(Err(r)) => {
                        model.delivered(seed, step, r.sequence, r.num_delivered, None);
                        auto[i] = Some(r.sequence);
                    }
                    None => panic!("seed {seed} step {step}: subscription ended"),
                }
            }
            7..=11 if !held.is_empty() => {
                let pending = held.swap_remove(rng.below(held.len() as u64) as usize);
                let seq = pending.received.sequence;
                let n = pending.received.num_delivered;
                let latest = model.is_latest(seq, n);
                let final_ = pending.is_final_delivery();
                match rng.below(6) {
                    0 => {
                        pending.ack().await.unwrap();
                        model.settle(seq);
                    }
                    1 => {
                        pending.term().await.unwrap();
                        model.settle(seq);
                    }
                    2 | 3 => {
                        let delay =
                            (rng.below(2) == 0).then(|| Duration::from_millis(rng.below(200)));
                        match delay {
                            Some(d) => pending.nak_with_delay(d).await.unwrap(),
                            None => pending.nak().await.unwrap(),
                        }
                        if latest {
                            let s = model.seen.get_mut(&seq).unwrap();
                            let in_flight = s.not_before.is_some_and(|at| Instant::now() < at);
                            if final_ && in_flight {
                                s.done = true;
                            } else if final_ {
                                s.maybe_ended = true;
                            } else if in_flight {
                                s.not_before = Some(Instant::now() + delay.unwrap_or_default());
                            }
                        }
                    }
                    4 => {
                        pending.in_progress().await.unwrap();
                        if latest {
                            let wait = model.wait(n);
                            let s = model.seen.get_mut(&seq).unwrap();
                            if s.not_before.is_some_and(|at| Instant::now() < at) {
                                s.not_before = Some(Instant::now() + wait);
                            }
                        }
                        held.push(pending);
                    }
                    // dropped unsettled: redelivered after its ack wait (a
                    // spare dropped ends the event)
                    _ => drop(pending),
                }
            }
            12 => {
                // a subscription dropped (its auto-ack event unacknowledged)
                // or closed, and the durable resumed
                let i = rng.below(subs.len() as u64) as usize;
                if rng.below(2) == 0 {
                    subs[i].close().await.unwrap();
                    if let Some(seq) = auto[i].take() {
                        model.settle(seq);
                    }
                }
                auto[i] = None;
                subs[i] = sub().await.unwrap();
            }
            _ => {
                tokio::time::advance(Duration::from_millis(rng.below(120))).await;
            }
        }
    }
    // settle everything held: ack it
    for pending in held.drain(..) {
        let seq = pending.received.sequence;
        pending.ack().await.unwrap();
        model.settle(seq);
    }
    // drain: every delivery is acked from now on
    let mut idle = 0;
    let mut i = 0;
    while idle < 4 {
        i = (i + 1) % subs.len();
        match tokio::time::timeout(Duration::from_secs(2), subs[i].next_manual_ack()).await {
            Ok(Ok(Some(pending))) => {
                if let Some(seq) = auto[i].take() {
                    model.settle(seq);
                }
                let r = &pending.received;
                model.delivered(
                    seed,
                    9999,
                    r.sequence,
                    r.num_delivered,
                    Some(pending.is_final_delivery()),
                );
                let seq = r.sequence;
                pending.ack().await.unwrap();
                model.settle(seq);
                idle = 0;
            }
            Ok(Err(event_core::Error::Lagged { missed })) => {
                if let Some(seq) = auto[i].take() {
                    model.settle(seq);
                }
                lagged += missed;
                idle = 0;
            }
            Ok(other) => panic!("seed {seed}: {other:?}"),
            Err(_) => {
                if let Some(seq) = auto[i].take() {
                    model.settle(seq);
                }
                idle += 1
            }
        }
    }
    // every event was delivered; each one not settled by the caller ended
    // on a failed final delivery (allowed only with max_deliver)
    let mut unsettled: Vec<u64> = Vec::new();
    let first = p.info().await.unwrap().first_sequence;
    let (mut lost, mut maybe_lost) = (0, 0);
    for &seq in &published {
        if seq < first {
            match model.seen.get(&seq) {
                None => lost += 1,
                Some(s) if s.done && s.late => maybe_lost += 1,
                Some(s) if s.done => {}
                Some(s)
                    if s.maybe_acked
                        || s.maybe_ended
                        || model.max().is_some_and(|m| s.deliveries >= m) =>
                {
                    maybe_lost += 1
                }
                Some(_) => lost += 1,
            }
            continue;
        }
        match model.seen.get(&seq) {
            None => panic!("seed {seed}: {seq} never delivered"),
            Some(s) if !s.done && !s.maybe_ended && !s.maybe_acked => unsettled.push(seq),
            _ => {}
        }
    }
    if model.max().is_none() {
        assert!(
            unsettled.is_empty(),
            "seed {seed}: ended without max_deliver: {unsettled:?}"
        );
    } else {
        for seq in &unsettled {
            let s = &model.seen[seq];
            assert!(
                s.deliveries >= model.max().unwrap(),
                "seed {seed}: {seq} ended after {} deliveries",
                s.deliveries
            );
        }
    }
    assert!(
        lost <= lagged && lagged <= lost + maybe_lost,
        "seed {seed}: {lost} events lost (and {maybe_lost} maybe), {lagged} reported lagged"
    );
}
