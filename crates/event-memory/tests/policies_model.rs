//! Every deliver policy, on ephemerals and durables created at random points
//! of a log under retention (stores of 1 to 200 events, so starts fall
//! before, at and beyond the stored edges, and after evictions), read at
//! random: each subscription accounts for every event it is owed.

#![allow(clippy::unwrap_used)]

mod common;

use common::Rng;
use event_core::{
    DeliverPolicy, Error, Event, EventProvider, SubjectPattern, SubscribeOptions, Subscription,
};
use event_memory::{MemoryConfig, MemoryProvider};
use std::collections::HashSet;

/// The call's output if it is ready at its first poll (outside tokio's
/// cooperative budget, so only a wait makes it pend); `None` otherwise.
async fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(tokio::task::unconstrained(fut));
    match std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

struct Sub {
    sub: Box<dyn Subscription>,
    pattern: SubjectPattern,
    policy: DeliverPolicy,
    /// Events owed at creation (for a start before the oldest stored event,
    /// every evicted position from the start counts).
    owed: u64,
    /// The first sequence published later that is owed too.
    from: u64,
    delivered: Vec<u64>,
    lagged: u64,
}

impl Sub {
    /// Reads everything available now.
    async fn drain(&mut self) {
        while let Some(next) = poll_once(self.sub.next()).await {
            match next {
                Err(Error::Lagged { missed }) => self.lagged += missed,
                Ok(Some(r)) => {
                    assert!(self.pattern.matches(&r.event.subject), "{:?}", self.policy);
                    self.delivered.push(r.sequence);
                }
                other => panic!("{:?}: {other:?}", self.policy),
            }
        }
    }
}

/// Each subscription gets, in sequence order and once each, every event it
/// is owed that was still stored when it read that far, and `Lagged`
/// counts the rest: delivered + lagged = owed, where owed is what the
/// policy selects at creation (`All`: the stored matches; `Last`: the
/// newest; `LastPerSubject`: one per subject; `ByStartSequence`: the stored
/// matches from the start, plus every evicted position from a start before
/// the oldest stored event; `New`: none) and every later match (from the
/// start, for a start beyond the end).
#[tokio::test]
async fn every_deliver_policy_accounts_for_every_event_under_retention() {
    let mut rng = Rng::new(0x1234_5678_9ABC_DEF1);
    let mut rnd = move |n: u64| rng.below(n);
    let subjects = [
        "events.a.x",
        "events.a.y",
        "events.b.x",
        "events.rare.z",
        "events.b.y",
    ];
    let filters = [
        "events.>",
        "events.a.>",
        "events.*.x",
        "events.rare.>",
        "events.b.x",
        ">",
    ];
    for max_events in [1_usize, 3, 10, 63, 64, 65, 200] {
        for _ in 0..3 {
            let p = MemoryProvider::new(MemoryConfig {
                max_events,
                ..MemoryConfig::default()
            })
            .unwrap();
            let mut log: Vec<&str> = Vec::new();
            let mut subs: Vec<Sub> = Vec::new();
            for step in 0..1_500_u64 {
                match rnd(10) {
                    0..=5 => {
                        // mostly one busy subject, so whole blocks lack the others
                        let subject = if rnd(10) < 7 {
                            subjects[0]
                        } else {
                            subjects[rnd(subjects.len() as u64) as usize]
                        };
                        let event = Event::new(subject, "c", "s", "x", step.into());
                        p.publish(&event).await.unwrap();
                        log.push(subject);
                    }
                    6 => {
                        let filter = filters[rnd(filters.len() as u64) as usize];
                        let pattern = SubjectPattern::parse(filter).unwrap();
                        let last = log.len() as u64;
                        let first = last.saturating_sub(max_events as u64) + 1;
                        let stored: Vec<u64> = (first..=last)
                            .filter(|seq| pattern.matches(log[(*seq - 1) as usize]))
                            .collect();
                        let policy = match rnd(5) {
                            0 => DeliverPolicy::All,
                            1 => DeliverPolicy::New,
                            2 => DeliverPolicy::Last,
                            3 => DeliverPolicy::LastPerSubject,
                            _ => DeliverPolicy::ByStartSequence {
                                sequence: rnd(last + 4),
                            },
                        };
                        let (owed, from) = match &policy {
                            DeliverPolicy::All => (stored.len() as u64, last + 1),
                            DeliverPolicy::New => (0, last + 1),
                            DeliverPolicy::Last => (u64::from(!stored.is_empty()), last + 1),
                            DeliverPolicy::LastPerSubject => {
                                let subjects: HashSet<&str> =
                                    stored.iter().map(|seq| log[(*seq - 1) as usize]).collect();
                                (subjects.len() as u64, last + 1)
                            }
                            DeliverPolicy::ByStartSequence { sequence } => {
                                let start = (*sequence).max(1);
                                let evicted = first.saturating_sub(start);
                                let kept = stored.iter().filter(|seq| **seq >= start).count();
                                (evicted + kept as u64, start.max(last + 1))
                            }
                            DeliverPolicy::ByStartTime { .. } => unreachable!(),
                        };
                        let options = SubscribeOptions {
                            deliver_policy: policy.clone(),
                            ..SubscribeOptions::default()
                        };
                        let sub = if rnd(2) == 0 {
                            p.subscribe_with_options(filter, &options).await.unwrap()
                        } else {
                            let name = format!("d{step}");
                            p.subscribe_durable_with_options(&name, filter, &options)
                                .await
                                .unwrap()
                        };
                        subs.push(Sub {
                            sub,
                            pattern,
                            policy,
                            owed,
                            from,
                            delivered: Vec::new(),
                            lagged: 0,
                        });
                    }
                    _ if !subs.is_empty() => {
                        let i = rnd(subs.len() as u64) as usize;
                        subs[i].drain().await;
                    }
                    _ => {}
                }
            }
            let last = log.len() as u64;
            for s in &mut subs {
                s.drain().await;
                let later = (s.from..=last)
                    .filter(|seq| s.pattern.matches(log[(*seq - 1) as usize]))
                    .count() as u64;
                assert!(
                    s.delivered.windows(2).all(|w| w[0] < w[1]),
                    "{:?}: out of order or twice: {:?}",
                    s.policy,
                    s.delivered
                );
                assert_eq!(
                    s.delivered.len() as u64 + s.lagged,
                    s.owed + later,
                    "max_events {max_events}, {:?} on {:?}: delivered {:?}, lagged {}",
                    s.policy,
                    s.pattern,
                    s.delivered,
                    s.lagged
                );
            }
        }
    }
}
