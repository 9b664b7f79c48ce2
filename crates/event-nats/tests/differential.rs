//! Differential test: `MemoryProvider` (the reference) against
//! `NatsProvider` (JetStream, a real `nats-server` per seed).
//!
//! The contract says code that works on the memory provider works the same
//! on NATS. The conformance suite checks fixed scenarios; this test generates
//! random sequences of 10-40 operations from a seed (a small splitmix64
//! generator, no crates), runs each sequence against a fresh provider of each
//! kind, operation by operation and on both at once, and compares what a
//! caller observes after every operation: publish results (sequences, error
//! variants, dedup, `expected_sequence`), `publish_batch` per-item results,
//! `history` contents and order, `info` counts, subscriptions (ephemeral and
//! durable, every deliver policy, wildcard filters) and what they deliver in
//! auto-ack and manual mode, settlement (`ack`, `nak`, `nak_with_delay`,
//! `term`, `in_progress`, dropping unsettled), ack-wait redelivery,
//! `max_deliver` exhaustion (`is_final_delivery`), `max_ack_pending`,
//! resuming a durable after a drop, two subscriptions sharing a durable,
//! `unsubscribe`, changed options on an existing durable, payload limits and
//! invalid input.
//!
//! The first difference in a sequence fails the seed; the report prints the
//! seed, the operations and both observation logs. Fixed seeds run by
//! default; `A3S_DIFF_SEEDS=N` runs seeds `0..N`, `A3S_DIFF_SEEDS=a..b` a
//! range, `A3S_DIFF_SEEDS=3,17` a list (hunting locally);
//! `A3S_DIFF_PARALLEL` seeds run at once (default 3); `A3S_DIFF_LOG=1`
//! prints every seed's log.
//!
//! # Normalizations (what legitimately differs)
//!
//! 1. **Stream name**: the memory provider is configured with the NATS
//!    stream's name (`MemoryLimits::stream_name`), so
//!    `ReceivedEvent::stream` is compared as is.
//! 2. **Payload limit**: the memory provider's `max_payload` is set to the
//!    test server's (64 KiB). The two count slightly different bytes
//!    (memory: the JSON plus an explicit msg id; NATS: the JSON plus the
//!    headers), so generated events are either far below or far above the
//!    limit, never within a few hundred bytes of it.
//! 3. **`info().bytes`** is provider-specific (memory counts encoded
//!    events, JetStream its stored records with subjects and headers): only
//!    "zero iff no messages" is compared.
//! 4. **`info().consumers`** on NATS counts consumers the server still has:
//!    a dropped ephemeral subscription and `history`'s short-lived
//!    consumers are deleted by a spawned task, so the count may lag. The
//!    NATS side is re-read for up to 2 s until it matches; a count that
//!    never matches is a difference.
//! 5. **Timing**: deliveries are compared per "drain" (every delivery within
//!    a window), sorted by (sequence, delivery count), because the order of
//!    a redelivery relative to new events is not part of the contract.
//!    First deliveries must still come in stream order on each side (checked
//!    as an invariant). Ack timers run on two clocks a few milliseconds
//!    apart, so the harness tracks every deadline it can infer (delivery
//!    time + ack wait, `in_progress`, `nak_with_delay`) and ends drain
//!    windows and sleeps at least 150 ms away from all of them.
//! 6. **A deleted durable's live subscription** ends with `Ok(None)` or
//!    `Err(NotFound)` (both allowed by the contract), and NATS notices only
//!    when a pull goes unanswered (up to 7 s), so after `unsubscribe` the
//!    subscriptions bound to that name count "ended", `NotFound` and
//!    "nothing yet" as the same observation. Deliveries still differ.
//! 7. **Error details**: errors are compared by variant (plus the
//!    `expected`/`actual` of `WrongLastSequence`), not by message text or
//!    the config field named.
//! 8. **Shared durables**: which of two subscriptions on one durable gets
//!    an event is not specified, so the `Shared` operation compares the
//!    union of what both received, and the generator never leaves one
//!    durable bound to two slots. That includes a slot left on a durable
//!    that `unsubscribe` deleted, when the name is subscribed again (both
//!    providers end such a subscription, NATS once its pull hears of the
//!    deletion, see normalization 6), so the old slot is dropped first.
//! 9. **Backoff limits**: nats-server 2.9 refuses a backoff with an
//!    unlimited `max_deliver`, a documented NATS limit; backoffs are
//!    generated with a limit (fewer deliveries than steps, which both
//!    providers refuse, included).
//! 10. **Filter changes on old servers**: nats-server before 2.9.14 cannot
//!     change a durable's filter in place (it kept matching with the old
//!     one: nats-server#3829), so the NATS provider refuses the change with
//!     `Conflict` there, which the contract allows, while memory applies
//!     it. Against such a server the harness skips (on both sides) a
//!     durable subscribe whose filter differs from the durable's current
//!     one.
//! 11. **Events caught by a cancelled call's pull request**: a `next` that
//!     times out leaves its JetStream pull request open (that is what makes
//!     it cancel-safe), so an event published meanwhile is delivered to the
//!     client at once and its ack timer starts then, not when a later call
//!     hands it out (memory starts it at hand-out). If the caller comes
//!     back later than the ack wait, NATS hands out the event and at once
//!     its redelivery. The same holds for a redelivery that comes due
//!     while no call waits (it is caught by the open pull, and its next ack
//!     wait starts then). This is a reported finding, not hidden: the
//!     harness tracks, per slot, whether a pull may be open and when events
//!     were published or redeliveries came due since, adds the NATS-side
//!     deadlines to the deadline set,
//!     and when a drain would come later than such an ack wait it
//!     "quarantines" the slot on both sides instead (drops its held
//!     deliveries and the subscription, and deletes its durable), so the
//!     rest of the sequence stays comparable.
//! 12. **A server bug**: nats-server 2.9.10 skips events of a
//!     `LastPerSubject` consumer whose `max_ack_pending` is 1 (reported,
//!     not the provider's doing): that combination is not generated.

mod common;

use common::NatsServer;
use event_core::{
    DeliverPolicy, Error, Event, EventProvider, PendingEvent, PublishOptions, ReceivedEvent,
    SubscribeOptions, Subscription, now_millis,
};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use event_nats::{NatsConfig, NatsProvider};
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const PREFIX: &str = "events";
const STREAM: &str = "DIFF";
const MAX_PAYLOAD: usize = 65536;
/// The short ack wait most generated subscriptions use.
const ACK_WAIT: Duration = Duration::from_millis(400);
/// Drain windows and sleeps end at least this far from any known deadline.
const MARGIN: Duration = Duration::from_millis(150);
/// How long a drain collects deliveries (before deadline adjustment).
const DRAIN: Duration = Duration::from_millis(250);
const SLOTS: usize = 3;

/// The seeds run by default: each passes; most once showed a difference
/// (1, 4, 5, 7: wildcard filters over the prefix; 9, 11, 12, 23: a changed
/// durable filter; 132, 151, 181: a start sequence beyond the end; 135,
/// 177: normalization 12; 22: normalization 11), the rest are plain mixes.
const DEFAULT_SEEDS: &[u64] = &[
    1, 2, 3, 4, 5, 7, 9, 11, 12, 22, 23, 132, 135, 151, 177, 181, 200, 201, 202, 203, 204,
];

const SUBJECTS: &[&str] = &[
    "events.a.x",
    "events.a.y",
    "events.b.x",
    "events.a.x.deep",
    "events.b.y.z",
];
const FILTERS: &[&str] = &[
    "events.>",
    "events.a.>",
    "events.*.x",
    "events.a.x",
    "events.*.*",
    "events.b.*.z",
    "events.*.x.>",
    "events.c.>",
    "events.a.x.>",
    ">",
    "*.a.>",
    "*.*.x",
];
const BAD_FILTERS: &[&str] = &["events.>.a", "events.a*", "", "events..a", "events.a. b"];
const NAMES: &[&str] = &["d1", "d2", "d3"];
const BAD_NAMES: &[&str] = &["a.b", "a b", "", "a*", "a>"];
const BAD_SUBJECTS: &[&str] = &[
    "events.a.*",
    "events.a.>",
    "events..x",
    "other.a.x",
    "events.a x.y",
    "events.a",
    "events",
];

// ------------------------------------------------------------------ PRNG

/// splitmix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ------------------------------------------------------------ operations

#[derive(Debug, Clone)]
enum Expect {
    No,
    Exact(u64),
    /// The side's own `info().last_sequence` (succeeds unless raced).
    Last,
    /// One less than that (fails unless the stream is empty... then 0-1).
    LastMinusOne,
}

#[derive(Debug, Clone, Copy)]
enum Size {
    Small,
    /// ~40 KB: under both limits.
    Big,
    /// ~80 KB: over both limits.
    Huge,
    /// Nested deeper than `MAX_PAYLOAD_DEPTH`.
    Deep,
}

#[derive(Debug, Clone)]
enum Item {
    New(usize),
    Repeat(usize),
    BadSubject(usize),
    Huge(usize),
}

#[derive(Debug, Clone)]
enum Bad {
    Subject(usize),
    EmptyMsgId,
    ControlMsgId,
}

#[derive(Debug, Clone)]
enum How {
    Ack,
    Nak,
    NakDelay(u64),
    Term,
    InProgress,
    Drop,
}

#[derive(Debug, Clone)]
enum Policy {
    All,
    Last,
    New,
    Seq(u64),
    /// A time mark taken earlier (index), 0 when there is none.
    Time(usize),
    TimeFuture,
    LastPerSubject,
}

#[derive(Debug, Clone)]
struct Opts {
    policy: Policy,
    ack_wait: Option<Duration>,
    max_deliver: Option<u64>,
    max_ack_pending: Option<u64>,
    backoff: Vec<Duration>,
}

#[derive(Debug, Clone)]
enum Op {
    Publish {
        subject: usize,
        msg_id: Option<usize>,
        expect: Expect,
        size: Size,
    },
    Republish {
        event: usize,
    },
    Batch {
        items: Vec<Item>,
    },
    BadPublish {
        bad: Bad,
    },
    History {
        filter: Option<usize>,
        bad_filter: bool,
        limit: usize,
    },
    Info,
    Subscribe {
        slot: usize,
        durable: Option<usize>,
        bad_name: Option<usize>,
        filter: usize,
        bad_filter: bool,
        opts: Opts,
    },
    Drain {
        slot: usize,
        manual: bool,
    },
    Settle {
        pick: usize,
        how: How,
    },
    Close {
        slot: usize,
    },
    Drop {
        slot: usize,
    },
    Unsubscribe {
        name: usize,
        bad: bool,
    },
    Sleep {
        ms: u64,
    },
    Mark,
    Shared {
        name: usize,
        filter: usize,
    },
}

fn gen_opts(rng: &mut Rng) -> Opts {
    let policy = match rng.below(9) {
        0..=2 => Policy::All,
        3 => Policy::Last,
        4 => Policy::New,
        5 => Policy::Seq(rng.below(12)),
        6 => Policy::Time(rng.index(4)),
        7 => {
            if rng.chance(50) {
                Policy::TimeFuture
            } else {
                Policy::LastPerSubject
            }
        }
        _ => Policy::LastPerSubject,
    };
    let ack_wait = match rng.below(10) {
        0 => None,
        1 => Some(Duration::from_millis(700)),
        _ => Some(ACK_WAIT),
    };
    let max_deliver = match rng.below(6) {
        0 => Some(1),
        1 => Some(2),
        2 => Some(3),
        _ => None,
    };
    let max_ack_pending = match rng.below(6) {
        0 => Some(1),
        1 => Some(2),
        _ => None,
    };
    // a backoff always with a delivery limit: nats-server 2.9 refuses an
    // unlimited one (a documented NATS limit the memory provider does not
    // have; normalization 9); one delivery for two steps is refused by both
    let (max_deliver, backoff) = if rng.chance(8) {
        (
            Some(1 + rng.below(3)),
            vec![Duration::from_millis(300), Duration::from_millis(600)],
        )
    } else {
        (max_deliver, Vec::new())
    };
    // normalization 12: nats-server 2.9.10 skips events of a LastPerSubject
    // consumer held at max_ack_pending 1
    let max_ack_pending = match (&policy, max_ack_pending) {
        (Policy::LastPerSubject, Some(1)) => None,
        (_, m) => m,
    };
    Opts {
        policy,
        ack_wait,
        max_deliver,
        max_ack_pending,
        backoff,
    }
}

/// Generates a sequence; `bound` tracks which durable each slot holds so
/// that one durable is never bound to two slots (normalization 8).
fn generate(seed: u64) -> Vec<Op> {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xA3A3);
    let len = 10 + rng.index(31);
    let mut ops = Vec::with_capacity(len + 4);
    let mut bound: [Option<usize>; SLOTS] = [None; SLOTS];
    let mut published = 0u64;
    while ops.len() < len {
        let roll = rng.below(100);
        let op = match roll {
            0..=21 => {
                published += 1;
                Op::Publish {
                    subject: rng.index(SUBJECTS.len()),
                    msg_id: rng.chance(20).then(|| rng.index(3)),
                    expect: match rng.below(10) {
                        0 => Expect::Exact(rng.below(published + 2)),
                        1 => Expect::Last,
                        2 => Expect::LastMinusOne,
                        _ => Expect::No,
                    },
                    size: match rng.below(30) {
                        0 => Size::Big,
                        1 => Size::Huge,
                        2 => Size::Deep,
                        _ => Size::Small,
                    },
                }
            }
            22..=25 => Op::Republish {
                event: rng.index(64),
            },
            26..=31 => {
                let n = 1 + rng.index(4);
                let items = (0..n)
                    .map(|_| match rng.below(12) {
                        0 => Item::Repeat(rng.index(64)),
                        1 => Item::BadSubject(rng.index(BAD_SUBJECTS.len())),
                        2 => Item::Huge(rng.index(SUBJECTS.len())),
                        _ => Item::New(rng.index(SUBJECTS.len())),
                    })
                    .collect();
                published += n as u64;
                Op::Batch { items }
            }
            32..=34 => Op::BadPublish {
                bad: match rng.below(3) {
                    0 => Bad::Subject(rng.index(BAD_SUBJECTS.len())),
                    1 => Bad::EmptyMsgId,
                    _ => Bad::ControlMsgId,
                },
            },
            35..=41 => Op::History {
                filter: (!rng.chance(20)).then(|| rng.index(FILTERS.len())),
                bad_filter: rng.chance(5),
                limit: match rng.below(8) {
                    0 => 0,
                    1 => 100,
                    n => n as usize,
                },
            },
            42..=45 => Op::Info,
            46..=56 => {
                let slot = rng.index(SLOTS);
                let durable = rng.chance(60).then(|| rng.index(NAMES.len()));
                if let Some(d) = durable {
                    for (s, b) in bound.iter_mut().enumerate() {
                        if s != slot && *b == Some(d) {
                            // never two slots on one durable
                            ops.push(Op::Drop { slot: s });
                            *b = None;
                        }
                    }
                }
                bound[slot] = durable;
                Op::Subscribe {
                    slot,
                    durable,
                    bad_name: rng.chance(3).then(|| rng.index(BAD_NAMES.len())),
                    filter: rng.index(FILTERS.len()),
                    bad_filter: rng.chance(3),
                    opts: gen_opts(&mut rng),
                }
            }
            57..=71 => Op::Drain {
                slot: rng.index(SLOTS),
                manual: rng.chance(60),
            },
            72..=82 => Op::Settle {
                pick: rng.index(16),
                how: match rng.below(12) {
                    0..=3 => How::Ack,
                    4..=5 => How::Nak,
                    6 => How::NakDelay(if rng.chance(50) { 300 } else { 900 }),
                    7..=8 => How::Term,
                    9 => How::InProgress,
                    _ => How::Drop,
                },
            },
            83..=84 => {
                let slot = rng.index(SLOTS);
                bound[slot] = None;
                Op::Close { slot }
            }
            85..=87 => {
                let slot = rng.index(SLOTS);
                bound[slot] = None;
                Op::Drop { slot }
            }
            88..=90 => Op::Unsubscribe {
                name: rng.index(NAMES.len()),
                bad: rng.chance(10),
            },
            91..=94 => Op::Sleep {
                ms: match rng.below(3) {
                    0 => 50,
                    1 => 700,
                    _ => 1000,
                },
            },
            95 => Op::Mark,
            _ => {
                let name = rng.index(NAMES.len());
                for (s, b) in bound.iter_mut().enumerate() {
                    if *b == Some(name) {
                        ops.push(Op::Drop { slot: s });
                        *b = None;
                    }
                }
                Op::Shared {
                    name,
                    filter: rng.index(FILTERS.len()),
                }
            }
        };
        ops.push(op);
    }
    ops
}

// ------------------------------------------------------------- execution

struct Slot {
    sub: Box<dyn Subscription>,
    /// The wait of an auto-ack delivery's first delivery (for deadlines).
    wait: Duration,
    durable: Option<String>,
    /// Its durable was deleted by `unsubscribe` (normalization 6).
    unsubscribed: bool,
}

/// One provider and the caller-side state the sequence built on it.
struct Side {
    p: Arc<dyn EventProvider>,
    nats: Option<NatsProvider>,
    slots: Vec<Option<Slot>>,
    held: Vec<(usize, PendingEvent)>,
}

/// What the operations share: the events (the same objects are published
/// to both sides) and time marks.
struct Ctx {
    events: Vec<Event>,
    marks: Vec<u64>,
}

/// What the harness knows of a slot's NATS pull request (normalization 11).
#[derive(Default, Clone)]
struct Track {
    /// A drain ended while waiting: its pull request may still be open.
    pull_open: bool,
    /// When it may have been opened.
    opened: Option<Instant>,
    /// When events were published since.
    published: Vec<Instant>,
    /// When deliveries of this slot come due for redelivery (ack waits,
    /// naks): a redelivery that comes due while the pull is open and no
    /// call waits is caught by the pull like a new event.
    due: Vec<Instant>,
    /// The shortest ack wait of a delivery on this slot.
    wait: Duration,
    /// Every ack wait a delivery on this slot may have.
    waits: Vec<Duration>,
    /// The slot's durable name, if any.
    durable: Option<String>,
}

fn variant(e: &Error) -> String {
    match e {
        Error::InvalidSubject { .. } => "InvalidSubject".into(),
        Error::InvalidConfig { .. } => "InvalidConfig".into(),
        Error::NotFound { kind, .. } => format!("NotFound({kind})"),
        Error::Conflict { .. } => "Conflict".into(),
        Error::PayloadTooLarge { .. } => "PayloadTooLarge".into(),
        Error::WrongLastSequence { expected, actual } => {
            format!("WrongLastSequence({expected},{actual})")
        }
        Error::Timeout { .. } => format!("Timeout({e})"),
        Error::Connection(_) => format!("Connection({e})"),
        Error::Lagged { missed } => format!("Lagged({missed})"),
        Error::Closed(_) => "Closed".into(),
        Error::Serialization(_) => "Serialization".into(),
        Error::Undecodable { .. } => "Undecodable".into(),
        Error::Unsupported { .. } => "Unsupported".into(),
        other => format!("Other({other})"),
    }
}

fn result<T: std::fmt::Display>(r: &event_core::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v}"),
        Err(e) => format!("err {}", variant(e)),
    }
}

fn label(e: &Event) -> u64 {
    e.payload["n"].as_u64().unwrap_or(u64::MAX)
}

fn new_event(ctx: &mut Ctx, subject: &str, size: Size) -> Event {
    let n = ctx.events.len() as u64;
    let payload = match size {
        Size::Small => json!({ "n": n }),
        Size::Big => json!({ "n": n, "pad": "x".repeat(40_000) }),
        Size::Huge => json!({ "n": n, "pad": "x".repeat(80_000) }),
        Size::Deep => {
            let mut v = json!(1);
            for _ in 0..130 {
                v = json!([v]);
            }
            json!({ "n": n, "deep": v })
        }
    };
    let category = subject.split('.').nth(1).unwrap_or("none").to_string();
    let event = Event::new(subject, category, format!("event {n}"), "diff", payload);
    ctx.events.push(event.clone());
    event
}

fn subscribe_options(opts: &Opts, marks: &[u64]) -> SubscribeOptions {
    SubscribeOptions {
        max_deliver: opts.max_deliver,
        backoff: opts.backoff.clone(),
        max_ack_pending: opts.max_ack_pending,
        deliver_policy: match &opts.policy {
            Policy::All => DeliverPolicy::All,
            Policy::Last => DeliverPolicy::Last,
            Policy::New => DeliverPolicy::New,
            Policy::Seq(s) => DeliverPolicy::ByStartSequence { sequence: *s },
            Policy::Time(i) => DeliverPolicy::ByStartTime {
                timestamp: marks.get(*i).copied().unwrap_or(0),
            },
            Policy::TimeFuture => DeliverPolicy::ByStartTime {
                timestamp: now_millis() + 3_600_000,
            },
            Policy::LastPerSubject => DeliverPolicy::LastPerSubject,
        },
        ack_wait: opts.ack_wait,
    }
}

fn first_wait(opts: &SubscribeOptions) -> Duration {
    opts.backoff
        .first()
        .copied()
        .unwrap_or(opts.ack_wait.unwrap_or(SubscribeOptions::DEFAULT_ACK_WAIT))
}

/// One delivery as observed (see normalization 5).
fn describe(r: &ReceivedEvent, ctx: &Ctx, extra: &str) -> (u64, u64, String) {
    let n = label(&r.event);
    let intact = ctx
        .events
        .get(n as usize)
        .is_some_and(|orig| *orig == *r.event);
    (
        r.sequence,
        r.num_delivered,
        format!(
            "n{n}@{}#{}{extra}{}{}",
            r.sequence,
            r.num_delivered,
            if intact { "" } else { " CORRUPT" },
            if &*r.stream == STREAM {
                ""
            } else {
                " WRONG-STREAM"
            }
        ),
    )
}

enum Got {
    Auto(ReceivedEvent),
    Manual(PendingEvent),
}

/// Everything `sub` delivers until `end`.
#[allow(clippy::too_many_arguments)] // test plumbing
async fn drain(
    sub: &mut Box<dyn Subscription>,
    manual: bool,
    end: Instant,
    auto_wait: Duration,
    ctx: &Ctx,
    slot: usize,
    held: &mut Vec<(usize, PendingEvent)>,
    deadlines: &mut Vec<Instant>,
) -> (Vec<(u64, u64, String)>, Vec<String>) {
    let mut got = Vec::new();
    let mut notes = Vec::new();
    let mut errors = 0;
    loop {
        let next = tokio::time::timeout_at(end, async {
            if manual {
                sub.next_manual_ack().await.map(|o| o.map(Got::Manual))
            } else {
                sub.next().await.map(|o| o.map(Got::Auto))
            }
        })
        .await;
        match next {
            Err(_) => break,
            Ok(Ok(None)) => {
                notes.push("end".to_string());
                break;
            }
            Ok(Err(e)) => {
                notes.push(format!("err {}", variant(&e)));
                errors += 1;
                if errors >= 3 {
                    break;
                }
            }
            Ok(Ok(Some(Got::Auto(r)))) => {
                let wait = if r.num_delivered > 1 {
                    ACK_WAIT.max(auto_wait)
                } else {
                    auto_wait
                };
                deadlines.push(Instant::now() + wait);
                got.push(describe(&r, ctx, ""));
            }
            Ok(Ok(Some(Got::Manual(p)))) => {
                let wait = p.ack_wait();
                if let Some(w) = wait {
                    deadlines.push(Instant::now() + w);
                }
                let extra = format!(
                    "{} w{:?} md{:?}",
                    if p.is_final_delivery() { " FINAL" } else { "" },
                    wait.map(|w| w.as_millis()),
                    p.max_deliver()
                );
                got.push(describe(&p.received, ctx, &extra));
                held.push((slot, p));
            }
        }
        if got.len() > 80 {
            notes.push("too many".into());
            break;
        }
    }
    (got, notes)
}

/// Drain result as compared: sorted deliveries, plus an invariant check
/// that first deliveries came in stream order.
fn drain_obs(mut got: Vec<(u64, u64, String)>, notes: Vec<String>) -> String {
    let firsts: Vec<u64> = got
        .iter()
        .filter(|(_, n, _)| *n == 1)
        .map(|(s, _, _)| *s)
        .collect();
    let mut out = String::new();
    if firsts.windows(2).any(|w| w[0] >= w[1]) {
        let _ = write!(out, "ORDER-VIOLATION {firsts:?} ");
    }
    got.sort_by_key(|(seq, delivered, _)| (*seq, *delivered));
    let items: Vec<String> = got.into_iter().map(|(_, _, s)| s).collect();
    let _ = write!(out, "[{}] {}", items.join(", "), notes.join(" "));
    out
}

fn sort_held(held: &mut [(usize, PendingEvent)]) {
    held.sort_by_key(|(slot, p)| (p.received.sequence, p.received.num_delivered, *slot));
}

/// The end of a window that should last about `want` from `start`, at least
/// [`MARGIN`] away from every known deadline.
fn window_end(start: Instant, want: Duration, deadlines: &mut Vec<Instant>) -> Instant {
    deadlines.retain(|d| *d + MARGIN > start);
    let mut end = start + want;
    loop {
        let near = deadlines
            .iter()
            .filter(|d| {
                let gap = if **d > end { **d - end } else { end - **d };
                gap < MARGIN
            })
            .max()
            .copied();
        match near {
            Some(d) => end = d + MARGIN,
            None => return end,
        }
    }
}

impl Side {
    async fn run(
        &mut self,
        op: &Op,
        ctx: &Ctx,
        event: Option<&Event>,
        batch: &[Event],
        end: Instant,
        deadlines: &mut Vec<Instant>,
    ) -> String {
        let p = self.p.clone();
        match op {
            Op::Publish { msg_id, expect, .. } => {
                let Some(event) = event else {
                    return "no event".into();
                };
                let expected_sequence = match expect {
                    Expect::No => None,
                    Expect::Exact(n) => Some(*n),
                    Expect::Last | Expect::LastMinusOne => {
                        let last = match p.info().await {
                            Ok(i) => i.last_sequence,
                            Err(e) => return format!("info err {}", variant(&e)),
                        };
                        Some(if matches!(expect, Expect::Last) {
                            last
                        } else {
                            last.wrapping_sub(1).min(1_000_000)
                        })
                    }
                };
                let options = PublishOptions {
                    msg_id: msg_id.map(|m| format!("m{m}")),
                    expected_sequence,
                    timeout: None,
                };
                result(&p.publish_with_options(event, &options).await)
            }
            Op::Republish { .. } => match event {
                Some(event) => result(&p.publish(event).await),
                None => "no event".into(),
            },
            Op::Batch { .. } => match p.publish_batch(batch).await {
                Ok(results) => results.iter().map(result).collect::<Vec<_>>().join("; "),
                Err(e) => format!("batch err {}", variant(&e)),
            },
            Op::BadPublish { bad } => {
                let Some(event) = event else {
                    return "no event".into();
                };
                let options = PublishOptions {
                    msg_id: match bad {
                        Bad::EmptyMsgId => Some(String::new()),
                        Bad::ControlMsgId => Some("m\n1".into()),
                        Bad::Subject(_) => None,
                    },
                    ..PublishOptions::default()
                };
                result(&p.publish_with_options(event, &options).await)
            }
            Op::History {
                filter,
                bad_filter,
                limit,
            } => {
                let f = if *bad_filter {
                    filter.map(|i| BAD_FILTERS[i % BAD_FILTERS.len()])
                } else {
                    filter.map(|i| FILTERS[i])
                };
                match p.history(f, *limit).await {
                    Ok(events) => {
                        let items: Vec<String> = events
                            .iter()
                            .map(|e| {
                                let n = label(e);
                                let intact =
                                    ctx.events.get(n as usize).is_some_and(|orig| orig == e);
                                format!("n{n}{}", if intact { "" } else { " CORRUPT" })
                            })
                            .collect();
                        format!("[{}]", items.join(", "))
                    }
                    Err(e) => format!("err {}", variant(&e)),
                }
            }
            Op::Info => match p.info().await {
                Ok(i) => format!(
                    "m{} f{} l{} bytes{} c{}",
                    i.messages,
                    i.first_sequence,
                    i.last_sequence,
                    if (i.bytes == 0) == (i.messages == 0) {
                        "ok"
                    } else {
                        "WRONG"
                    },
                    i.consumers
                ),
                Err(e) => format!("err {}", variant(&e)),
            },
            Op::Subscribe {
                slot,
                durable,
                bad_name,
                filter,
                bad_filter,
                opts,
            } => {
                // the slot's previous subscription is dropped first
                self.slots[*slot] = None;
                let options = subscribe_options(opts, &ctx.marks);
                let f = if *bad_filter {
                    BAD_FILTERS[*filter % BAD_FILTERS.len()]
                } else {
                    FILTERS[*filter]
                };
                let name = match (durable, bad_name) {
                    (Some(_), Some(b)) => Some(BAD_NAMES[*b].to_string()),
                    (Some(d), None) => Some(NAMES[*d].to_string()),
                    (None, _) => None,
                };
                let r = match &name {
                    Some(name) => p.subscribe_durable_with_options(name, f, &options).await,
                    None => p.subscribe_with_options(f, &options).await,
                };
                match r {
                    Ok(sub) => {
                        self.slots[*slot] = Some(Slot {
                            sub,
                            wait: first_wait(&options),
                            durable: name,
                            unsubscribed: false,
                        });
                        "ok".into()
                    }
                    Err(e) => format!("err {}", variant(&e)),
                }
            }
            Op::Drain { slot, manual } => {
                let Some(s) = self.slots[*slot].as_mut() else {
                    return "no sub".into();
                };
                let (got, mut notes) = drain(
                    &mut s.sub,
                    *manual,
                    end,
                    s.wait,
                    ctx,
                    *slot,
                    &mut self.held,
                    deadlines,
                )
                .await;
                sort_held(&mut self.held);
                if s.unsubscribed {
                    notes.retain(|n| n != "end" && n != "err NotFound(consumer)");
                }
                drain_obs(got, notes)
            }
            Op::Settle { pick, how } => {
                if self.held.is_empty() {
                    return "none held".into();
                }
                let i = pick % self.held.len();
                let what = format!(
                    "n{}#{}",
                    label(self.held[i].1.event()),
                    self.held[i].1.received.num_delivered
                );
                let r = match how {
                    How::InProgress => {
                        let p = &self.held[i].1;
                        if let Some(w) = p.ack_wait() {
                            deadlines.push(Instant::now() + w);
                        }
                        p.in_progress().await
                    }
                    How::Ack => self.held.remove(i).1.ack().await,
                    How::Nak => self.held.remove(i).1.nak().await,
                    How::NakDelay(ms) => {
                        let d = Duration::from_millis(*ms);
                        deadlines.push(Instant::now() + d);
                        self.held.remove(i).1.nak_with_delay(d).await
                    }
                    How::Term => self.held.remove(i).1.term().await,
                    How::Drop => {
                        drop(self.held.remove(i));
                        Ok(())
                    }
                };
                format!("{what} {}", result(&r.map(|()| "")))
            }
            Op::Close { slot } => match self.slots[*slot].take() {
                Some(mut s) => result(&s.sub.close().await.map(|()| "")),
                None => "no sub".into(),
            },
            Op::Drop { slot } => {
                let had = self.slots[*slot].take().is_some();
                format!("dropped {had}")
            }
            Op::Unsubscribe { name, bad } => {
                let n = if *bad { BAD_NAMES[*name] } else { NAMES[*name] };
                let r = p.unsubscribe(n).await;
                if r.is_ok() {
                    for s in self.slots.iter_mut().flatten() {
                        if s.durable.as_deref() == Some(n) {
                            s.unsubscribed = true;
                        }
                    }
                }
                result(&r.map(|()| ""))
            }
            Op::Sleep { .. } => {
                tokio::time::sleep_until(end).await;
                String::new()
            }
            Op::Mark => String::new(),
            Op::Shared { name, filter } => {
                let name = NAMES[*name];
                let options = SubscribeOptions {
                    ack_wait: Some(ACK_WAIT),
                    ..SubscribeOptions::default()
                };
                let mut subs = Vec::new();
                for _ in 0..2 {
                    match p
                        .subscribe_durable_with_options(name, FILTERS[*filter], &options)
                        .await
                    {
                        Ok(sub) => subs.push(sub),
                        Err(e) => return format!("err {}", variant(&e)),
                    }
                }
                let mut all = Vec::new();
                let mut notes = Vec::new();
                let (a, b) = subs.split_at_mut(1);
                let (ra, rb) = tokio::join!(
                    shared_drain(&mut a[0], end, ctx),
                    shared_drain(&mut b[0], end, ctx)
                );
                for (got, n) in [ra, rb] {
                    all.extend(got);
                    notes.extend(n);
                }
                for mut sub in subs {
                    if let Err(e) = sub.close().await {
                        notes.push(format!("close err {}", variant(&e)));
                    }
                }
                all.sort();
                let dups = all.windows(2).filter(|w| w[0] == w[1]).count();
                format!(
                    "[{}]{} {}",
                    all.iter()
                        .map(|(s, n)| format!("{s}#{n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if dups > 0 { " DUPLICATES" } else { "" },
                    notes.join(" ")
                )
            }
        }
    }
}

impl Side {
    /// Normalization 11: forgets `slot` (its held deliveries, the
    /// subscription and its durable).
    async fn quarantine(&mut self, slot: usize) -> String {
        self.held.retain(|(s, _)| *s != slot);
        let durable = self.slots[slot].take().and_then(|s| s.durable);
        match durable {
            Some(name) if !BAD_NAMES.contains(&name.as_str()) => {
                result(&self.p.unsubscribe(&name).await.map(|()| "quarantined"))
            }
            _ => "quarantined".into(),
        }
    }
}

/// Reads and acks everything until `end`; (sequence, delivery count) pairs.
async fn shared_drain(
    sub: &mut Box<dyn Subscription>,
    end: Instant,
    ctx: &Ctx,
) -> (Vec<(u64, u64)>, Vec<String>) {
    let mut got = Vec::new();
    let mut notes = Vec::new();
    loop {
        match tokio::time::timeout_at(end, sub.next_manual_ack()).await {
            Err(_) => break,
            Ok(Ok(Some(p))) => {
                let (seq, n, _) = describe(&p.received, ctx, "");
                got.push((seq, n));
                if let Err(e) = p.ack().await {
                    notes.push(format!("ack err {}", variant(&e)));
                }
            }
            Ok(Ok(None)) => {
                notes.push("end".into());
                break;
            }
            Ok(Err(e)) => {
                notes.push(format!("err {}", variant(&e)));
                break;
            }
        }
    }
    (got, notes)
}

async fn memory_side() -> Side {
    let provider = MemoryProvider::with_limits(
        MemoryConfig {
            subject_prefix: PREFIX.into(),
            max_events: 100_000,
            channel_capacity: 1_000,
        },
        MemoryLimits {
            max_payload: MAX_PAYLOAD,
            stream_name: STREAM.into(),
            ..MemoryLimits::default()
        },
    )
    .expect("memory provider");
    Side {
        p: Arc::new(provider),
        nats: None,
        slots: (0..SLOTS).map(|_| None).collect(),
        held: Vec::new(),
    }
}

async fn nats_side(server: &NatsServer) -> Side {
    let config = NatsConfig {
        url: server.url(),
        stream_name: STREAM.into(),
        subject_prefix: PREFIX.into(),
        max_events: 0,
        max_age_secs: 0,
        connect_timeout_secs: 5,
        request_timeout_secs: 5,
        ..NatsConfig::default()
    };
    let provider = NatsProvider::connect(config).await.expect("connect");
    Side {
        p: Arc::new(provider.clone()),
        nats: Some(provider),
        slots: (0..SLOTS).map(|_| None).collect(),
        held: Vec::new(),
    }
}

/// Re-reads NATS `info` until its consumer count matches memory's
/// (normalization 4).
async fn settle_info(nats: &Side, mem_obs: &str, nats_obs: String) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut obs = nats_obs;
    while obs != mem_obs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(p) = &nats.nats {
            let _ = p.client().flush().await;
        }
        obs = match nats.p.info().await {
            Ok(i) => format!(
                "m{} f{} l{} bytes{} c{}",
                i.messages,
                i.first_sequence,
                i.last_sequence,
                if (i.bytes == 0) == (i.messages == 0) {
                    "ok"
                } else {
                    "WRONG"
                },
                i.consumers
            ),
            Err(e) => format!("err {}", variant(&e)),
        };
    }
    obs
}

/// Runs one seed; `Err` describes the first difference.
async fn run_seed(seed: u64) -> Result<(), String> {
    let ops = generate(seed);
    let Some(server) = NatsServer::start(&format!("differential seed {seed}")) else {
        return Ok(());
    };
    let mut mem = memory_side().await;
    let mut nats = nats_side(&server).await;
    let mut ctx = Ctx {
        events: Vec::new(),
        marks: Vec::new(),
    };
    let mut deadlines: Vec<Instant> = Vec::new();
    let mut tracks: Vec<Track> = vec![Track::default(); SLOTS];
    // durable name -> its current filter (normalization 10)
    let mut durables: HashMap<String, String> = HashMap::new();
    let old_server = nats
        .nats
        .as_ref()
        .is_some_and(|p| server_before_2_9_14(&p.client().server_info().version));
    let mut quarantined = 0;
    let mut log = String::new();
    for (i, op) in ops.iter().enumerate() {
        // normalization 10: a filter change the old server cannot apply
        let changed_filter = match op {
            Op::Subscribe {
                durable: Some(d),
                bad_name: None,
                filter,
                bad_filter: false,
                ..
            } => durables
                .get(NAMES[*d])
                .is_some_and(|f| f != FILTERS[*filter]),
            Op::Shared { name, filter } => durables
                .get(NAMES[*name])
                .is_some_and(|f| f != FILTERS[*filter]),
            _ => false,
        };
        if old_server && changed_filter {
            let _ = writeln!(log, "{i:>3} {op:?}\n      skipped (normalization 10)");
            continue;
        }
        // normalization 11: a drain later than the ack wait of an event a
        // cancelled call's pull request may have caught
        if let Op::Drain { slot, .. } = op {
            let t = &tracks[*slot];
            let now = Instant::now();
            let caught: Vec<Instant> = t
                .published
                .iter()
                .copied()
                .chain(
                    t.due
                        .iter()
                        .copied()
                        .filter(|d| t.opened.is_some_and(|o| o < *d) && *d < now),
                )
                .collect();
            let late = t.pull_open && caught.iter().any(|c| *c + t.wait < now + DRAIN + MARGIN);
            if late {
                let (m, n) = tokio::join!(mem.quarantine(*slot), nats.quarantine(*slot));
                if let Some(name) = &t.durable {
                    durables.remove(name);
                }
                tracks[*slot] = Track::default();
                quarantined += 1;
                let _ = writeln!(
                    log,
                    "{i:>3} {op:?} quarantined (normalization 11)\n      mem:  {m}\n      nats: {n}"
                );
                if m != n {
                    return Err(format!(
                        "seed {seed}: DIFFERENCE quarantining slot {slot} at op {i}\n  memory: {m}\n  \
                         nats:   {n}\n--- log ---\n{log}"
                    ));
                }
                continue;
            }
            for c in &caught {
                // when NATS may redeliver what that pull caught
                deadlines.extend(t.waits.iter().map(|w| *c + *w));
            }
        }
        // shared inputs, made once for both sides
        let mut event = None;
        let mut batch = Vec::new();
        match op {
            Op::Publish { subject, size, .. } => {
                event = Some(new_event(&mut ctx, SUBJECTS[*subject], *size));
            }
            Op::Republish { event: k } if !ctx.events.is_empty() => {
                event = Some(ctx.events[k % ctx.events.len()].clone());
            }
            Op::Batch { items } => {
                for item in items {
                    match item {
                        Item::New(s) => batch.push(new_event(&mut ctx, SUBJECTS[*s], Size::Small)),
                        Item::Huge(s) => batch.push(new_event(&mut ctx, SUBJECTS[*s], Size::Huge)),
                        Item::BadSubject(b) => {
                            let mut e = new_event(&mut ctx, SUBJECTS[0], Size::Small);
                            e.subject = BAD_SUBJECTS[*b].to_string();
                            batch.push(e);
                        }
                        Item::Repeat(k) => {
                            if let Some(e) = ctx
                                .events
                                .get(k % ctx.events.len().max(1))
                                .filter(|e| !e.subject.is_empty())
                                .cloned()
                            {
                                batch.push(e);
                            }
                        }
                    }
                }
            }
            Op::BadPublish { bad } => {
                let mut e = new_event(&mut ctx, SUBJECTS[0], Size::Small);
                if let Bad::Subject(b) = bad {
                    e.subject = BAD_SUBJECTS[*b].to_string();
                }
                event = Some(e);
            }
            Op::Mark => {
                tokio::time::sleep(Duration::from_millis(40)).await;
                ctx.marks.push(now_millis());
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            _ => {}
        }
        let start = Instant::now();
        let end = match op {
            Op::Drain { .. } | Op::Shared { .. } => window_end(start, DRAIN, &mut deadlines),
            Op::Sleep { ms } => window_end(start, Duration::from_millis(*ms), &mut deadlines),
            _ => start,
        };
        let mut mem_deadlines = Vec::new();
        let mut nats_deadlines = Vec::new();
        let (m, n) = tokio::join!(
            mem.run(op, &ctx, event.as_ref(), &batch, end, &mut mem_deadlines),
            nats.run(op, &ctx, event.as_ref(), &batch, end, &mut nats_deadlines)
        );
        match op {
            Op::Drain { slot, .. } => {
                tracks[*slot].due.extend(&mem_deadlines);
                tracks[*slot].due.extend(&nats_deadlines);
            }
            Op::Settle { how, .. } => {
                for t in &mut tracks {
                    t.due.extend(&mem_deadlines);
                    t.due.extend(&nats_deadlines);
                    if matches!(how, How::Nak) {
                        t.due.push(Instant::now());
                    }
                }
            }
            _ => {}
        }
        deadlines.extend(mem_deadlines);
        deadlines.extend(nats_deadlines);
        let n = if matches!(op, Op::Info) && m != n {
            let first = n.clone();
            let settled = settle_info(&nats, &m, n).await;
            if settled == m {
                eprintln!("seed {seed} op {i}: NATS info converged late ({first} -> {settled})");
            }
            settled
        } else {
            n
        };
        // what the harness tracks, from the (agreeing) observations
        match op {
            Op::Publish { .. } | Op::Republish { .. } | Op::Batch { .. } => {
                let now = Instant::now();
                for t in tracks.iter_mut().filter(|t| t.pull_open) {
                    t.published.push(now);
                }
            }
            Op::Subscribe {
                slot,
                durable,
                bad_name,
                filter,
                bad_filter,
                opts,
            } => {
                tracks[*slot] = Track::default();
                if m == "ok" {
                    let options = subscribe_options(opts, &ctx.marks);
                    tracks[*slot].wait = first_wait(&options);
                    let mut waits = options.backoff.clone();
                    waits.push(first_wait(&options));
                    waits.push(
                        options
                            .ack_wait
                            .unwrap_or(SubscribeOptions::DEFAULT_ACK_WAIT),
                    );
                    tracks[*slot].waits = waits;
                    if let (Some(d), None, false) = (durable, bad_name, bad_filter) {
                        durables.insert(NAMES[*d].to_string(), FILTERS[*filter].to_string());
                        tracks[*slot].durable = Some(NAMES[*d].to_string());
                    }
                }
            }
            Op::Shared { name, filter } if !m.starts_with("err") => {
                durables.insert(NAMES[*name].to_string(), FILTERS[*filter].to_string());
            }
            Op::Drain { slot, .. } => {
                let t = &mut tracks[*slot];
                let now = Instant::now();
                t.published.clear();
                t.due.retain(|d| *d > now);
                t.pull_open = !m.contains("no sub") && !m.contains("end");
                t.opened = Some(now);
            }
            Op::Close { slot } | Op::Drop { slot } => tracks[*slot] = Track::default(),
            Op::Unsubscribe { name, bad: false } if m.starts_with("ok") => {
                durables.remove(NAMES[*name]);
            }
            _ => {}
        }
        let _ = writeln!(log, "{i:>3} {op:?}\n      mem:  {m}\n      nats: {n}");
        if m != n {
            return Err(format!(
                "seed {seed}: DIFFERENCE at op {i} ({op:?})\n  memory: {m}\n  nats:   {n}\n\
                 --- log ---\n{log}"
            ));
        }
    }
    if quarantined > 0 {
        eprintln!("seed {seed}: {quarantined} slot(s) quarantined (normalization 11)");
    }
    if std::env::var_os("A3S_DIFF_LOG").is_some() {
        eprintln!("seed {seed}: log\n{log}");
    }
    drop(nats);
    drop(server);
    Ok(())
}

/// Whether nats-server `version` predates 2.9.14 (normalization 10).
fn server_before_2_9_14(version: &str) -> bool {
    let parts: Vec<u64> = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .take(3)
        .filter_map(|p| p.parse().ok())
        .collect();
    parts.len() == 3 && (parts[0], parts[1], parts[2]) < (2, 9, 14)
}

fn seeds() -> Vec<u64> {
    match std::env::var("A3S_DIFF_SEEDS") {
        Ok(spec) if !spec.trim().is_empty() => {
            let spec = spec.trim();
            if let Some((a, b)) = spec.split_once("..") {
                let a: u64 = a.parse().expect("A3S_DIFF_SEEDS a..b");
                let b: u64 = b.parse().expect("A3S_DIFF_SEEDS a..b");
                (a..b).collect()
            } else if spec.contains(',') {
                spec.split(',')
                    .map(|s| s.trim().parse().expect("A3S_DIFF_SEEDS list"))
                    .collect()
            } else {
                (0..spec.parse().expect("A3S_DIFF_SEEDS count")).collect()
            }
        }
        _ => DEFAULT_SEEDS.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_nats_agree_on_random_sequences() {
    if common::require_bin("differential").is_none() {
        return;
    }
    let seeds = seeds();
    let parallel: usize = std::env::var("A3S_DIFF_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut failures = Vec::new();
    for chunk in seeds.chunks(parallel.max(1)) {
        let runs: Vec<_> = chunk
            .iter()
            .map(|&seed| tokio::spawn(run_seed(seed)))
            .collect();
        for run in runs {
            match run.await {
                Ok(Ok(())) => {}
                Ok(Err(report)) => {
                    eprintln!("{report}");
                    failures.push(report.lines().next().unwrap_or_default().to_string());
                }
                Err(join) => failures.push(format!("a seed panicked: {join}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds differ:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}
