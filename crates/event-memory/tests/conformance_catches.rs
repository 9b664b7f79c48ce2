//! The conformance suite catches contract violations: a meta-test.
//!
//! Each mutant here is a `MemoryProvider` behind a wrapper that breaks
//! exactly one rule of the `EventProvider` contract (DESIGN.md, "The
//! contract"; the trait's "Contract" docs) and forwards everything else. For
//! every mutant, the conformance test(s) that check that rule run against it
//! and must FAIL, with a panic message that names the broken rule (so a
//! mutant is not counted as caught because the wrapper itself misbehaved).
//! A mutant that passed would be a hole in the suite: a broken provider
//! called conforming.
//!
//! The `faithful` module runs the whole suite against the same wrapper with
//! no mutation, so every kill below is due to the mutation alone; the plain
//! `MemoryProvider` runs it in `tests/conformance.rs`.
//!
//! Each mutant test's doc comment reads "the suite catches ...". To add a
//! rule to the suite, add the mutant that breaks it here first and watch it
//! survive.

#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use event_core::conformance::{self, Capabilities, ProviderFactory};
use event_core::subject::{
    validate_consumer_name, validate_filter_for_prefix, validate_publish_subject,
};
use event_core::{
    Acker, DeliverPolicy, Error, Event, EventProvider, PendingEvent, ProviderInfo, PublishOptions,
    PublishOutcome, ReceivedEvent, Result, SubjectPattern, SubscribeOptions, Subscription,
};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The payload limit the mutants claim (as the memory runner does).
const MAX_PAYLOAD: usize = 64 * 1024;

/// How far ahead the clock of the [`Kind::ClockAhead`] backend runs.
const CLOCK_AHEAD: Duration = Duration::from_millis(200);

/// The sequence [`Kind::SequenceGaps`] shows for the inner provider's
/// `seq`: 1, 3, 5, ... (0, "none", stays 0).
fn gapped(seq: u64) -> u64 {
    seq.saturating_mul(2).saturating_sub(1)
}

/// The inner sequence of the first event at or after the gapped sequence
/// `seq` (0 stays 0).
fn ungapped_start(seq: u64) -> u64 {
    if seq == 0 { 0 } else { seq / 2 + 1 }
}

/// The inner last sequence that is the gapped `expected` one (none for a
/// sequence in a gap: `u64::MAX`, which never matches).
fn ungapped_last(expected: u64) -> u64 {
    match expected {
        0 => 0,
        e if e % 2 == 1 => e / 2 + 1,
        _ => u64::MAX,
    }
}

/// The inner provider's error as [`Kind::SequenceGaps`] reports it.
fn gapped_error(error: Error, expected: Option<u64>) -> Error {
    match error {
        Error::WrongLastSequence { actual, .. } => Error::WrongLastSequence {
            expected: expected.unwrap_or_default(),
            actual: gapped(actual),
        },
        other => other,
    }
}

/// The one rule a mutant breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Breaks nothing: the control.
    Faithful,
    // ---- history
    HistoryOldestFirst,
    HistoryIgnoresLimit,
    HistoryIgnoresFilter,
    /// `history` matches a filter ending in `>` after literal tokens as a
    /// string prefix of the part before it (`events.wa.x.>` takes
    /// `events.wa.xy`).
    HistoryTailAsStringPrefix,
    /// The oldest `limit` matches (newest first among themselves).
    HistoryOldestMatches,
    /// Allocates `limit` slots up front: `usize::MAX` ("everything") panics.
    HistoryPreallocatesLimit,
    // ---- publish
    DedupIgnored,
    /// The dedup key includes the subject (the contract: per stream).
    DedupPerSubject,
    /// Only `publish_shared*` ignores the dedup id.
    SharedIgnoresDedup,
    /// Only `publish_shared*` takes an unusable dedup id (empty, control
    /// characters) as it is: one key that swallows every later publish
    /// using it, instead of `InvalidConfig`.
    SharedTakesUnusableDedupId,
    /// `publish_shared_with_outcome` calls every publish stored, repeats
    /// included.
    OutcomeMisreported,
    /// A repeated dedup id stores nothing and returns the first sequence,
    /// but the repeat is handed to the live ephemeral subscriptions anyway
    /// (fanned out before the dedup check).
    DuplicatesReachLiveSubscribers,
    ExpectedSequenceIgnored,
    /// `expected_sequence: Some(0)` (the stream must be empty) is taken as
    /// no condition.
    ExpectedSequenceZeroIgnored,
    /// A conflicting publish reports `WrongLastSequence` but is stored.
    ConflictStillStored,
    /// The sequence a delivery reports is not the one publish returned.
    DeliveredSequenceOffByOne,
    /// Metadata does not survive delivery.
    MetadataDropped,
    /// `publish_batch` stops at the first failing event.
    BatchStopsAtFirstError,
    /// `publish_batch` stores an event repeated inside the batch twice.
    BatchStoresRepeats,
    /// `publish_batch_with_outcome` reports every stored event as newly
    /// stored, repeats too.
    BatchOutcomeMisreported,
    /// `publish_batch` reports each stored event's sequence as the batch's
    /// first plus its place among the batch's distinct events, as if a
    /// refused event had taken a sequence too: every report after a refusal
    /// is one too high (repeats still report the first one's).
    BatchSequencesCountRefusals,
    /// `publish_batch` stores a payload nested deeper than
    /// `MAX_PAYLOAD_DEPTH` (as a pipelining path that skips the check
    /// would), here in a form the wrapped store takes.
    BatchSkipsDepthCheck,
    /// `publish_batch` skips the payload limit (as a pipelining path that
    /// skips the check would); the other paths enforce it.
    BatchSkipsSizeCheck,
    /// A published subject that breaks the rules is rewritten and stored.
    BadSubjectsAccepted,
    /// A bad filter is widened to `>` instead of refused.
    BadFiltersAccepted,
    /// A bad consumer name is escaped instead of refused.
    BadConsumerNamesAccepted,
    /// The store accepts events 16× over the claimed limit.
    PayloadLimitUnenforced,
    /// The limit is checked on the payload alone, not the encoded event.
    PayloadLimitCountsPayloadOnly,
    /// An event of exactly the limit is refused (`>=` for `>`).
    PayloadLimitOffByOne,
    /// `publish_shared_with_outcome` ignores its options (dedup id,
    /// expected sequence).
    OutcomeIgnoresOptions,
    /// `publish_shared_with_outcome` (the path the event bus takes with an
    /// encryptor or a router) skips what the other paths check: a bad
    /// subject is stored (rewritten), a payload over the limit or nested
    /// too deep is stored (the latter in a form the wrapped store takes).
    OutcomeSkipsAdmission,
    /// `expected_sequence` is compared with the last sequence of the
    /// event's subject, not the stream's.
    ExpectedSequencePerSubject,
    /// `publish` returns sequences from 1001 (the store's are from 1).
    SequencesStartAt1001,
    /// `publish` reserves its sequence (the last one plus one) before an
    /// await and stores after it, returning the reserved number: right for
    /// one publisher at a time (and for duplicates), unique and increasing
    /// under concurrency, but then not always the sequence the event was
    /// stored (and is delivered) at.
    SequenceReservedBeforeStore,
    /// `history` drops metadata (deliveries keep it).
    HistoryDropsMetadata,
    /// Durable deliveries (replays from the store) drop metadata; live
    /// ephemeral ones keep it.
    DurableDropsMetadata,
    /// A literal filter matches every subject it is a string prefix of.
    LiteralFilterPrefixMatch,
    /// [`Kind::LiteralFilterPrefixMatch`] on durables alone (a backend
    /// that filters durables another way than ephemerals).
    DurableLiteralPrefixMatch,
    /// A filter whose first token merely starts with the prefix is
    /// accepted (and matches nothing).
    FilterPrefixStringMatch,
    /// Consumer names are checked by a hand-rolled rule (no whitespace,
    /// `.`, `*`, `>`, `/`) and the rest escaped, not refused.
    ConsumerNameHandRolled,
    // ---- acknowledgement
    NakAcks,
    NakDelayIgnored,
    /// A nak delay is rounded down to whole seconds.
    NakDelayRoundedDown,
    /// A nak delay is added to the clock unchecked: `Duration::MAX`
    /// overflows (a panic) instead of being held to the longest wait.
    NakDelayOverflows,
    /// An ack wait beyond a year is refused instead of held.
    LongAckWaitRefused,
    /// A nak on an ephemeral subscription acks.
    EphemeralNakAcks,
    /// A nak delay on an ephemeral subscription is ignored (redelivered
    /// at once).
    EphemeralNakDelayIgnored,
    /// A `term` on an ephemeral subscription naks.
    EphemeralTermNaks,
    /// `in_progress` on an ephemeral subscription does nothing.
    EphemeralInProgressNoop,
    /// Manual-ack deliveries carry an empty stream name.
    StreamEmptyOnManualAck,
    TermNaks,
    /// `term` does nothing: the event comes back after the ack wait.
    TermNoop,
    NumDeliveredAlwaysOne,
    /// The consumer never stops redelivering (but reports `max_deliver`).
    MaxDeliverIgnored,
    /// One delivery more than `max_deliver` (reported as `max_deliver`).
    MaxDeliverOffByOne,
    /// Ephemeral subscriptions never stop redelivering (but report
    /// `max_deliver`); durables stop.
    EphemeralMaxDeliverIgnored,
    /// A final delivery left unsettled is never delivered again: the spare
    /// delivery is skipped (terminated unseen), so the event is lost
    /// unreported.
    SpareSkipped,
    /// [`Kind::SpareSkipped`] on ephemeral subscriptions alone.
    EphemeralSpareSkipped,
    /// A nak of the final delivery leaves it unsettled, so it comes back
    /// once more as the spare instead of ending.
    NakFinalLeftUnsettled,
    /// Options no provider can honour are repaired instead of refused: a
    /// zero ack wait becomes the default, extra backoff steps are cut.
    InvalidOptionsRepaired,
    InProgressNoop,
    /// `ack_wait` is ignored: the provider default (30 s) applies.
    AckWaitIgnored,
    /// An unsettled delivery is acked when dropped: never redelivered.
    UnsettledAckedOnDrop,
    /// An unsettled delivery of an ephemeral subscription is acked when
    /// dropped: ephemerals never redeliver after an ack timeout (durables
    /// do).
    EphemeralUnsettledAckedOnDrop,
    /// An unsettled delivery is naked when dropped: redelivered before the
    /// ack wait.
    UnsettledNakedOnDrop,
    /// `backoff` is ignored: every redelivery waits `ack_wait`.
    BackoffIgnored,
    /// [`Kind::BackoffIgnored`], with no ack wait reported: only the
    /// redelivery times show it.
    BackoffIgnoredUnreported,
    /// Delivery n waits `backoff[n]` instead of `backoff[n-1]` (the
    /// `redelivery_delay(n + 1)` off-by-one): the first redelivery waits
    /// the second step. The deliveries report the wait they apply.
    BackoffOffByOne,
    /// [`Kind::BackoffOffByOne`], with no ack wait reported: only the
    /// redelivery times show it.
    BackoffOffByOneUnreported,
    /// Once the backoff steps run out, deliveries wait `ack_wait` (or the
    /// default) instead of the last step again; no ack wait reported: only
    /// the redelivery times show it.
    BackoffLastStepNotRepeated,
    /// `max_ack_pending` is ignored.
    MaxAckPendingIgnored,
    /// `max_ack_pending` is ignored by ephemeral subscriptions.
    EphemeralMaxAckPendingIgnored,
    /// `backoff` is ignored by ephemeral subscriptions (every redelivery
    /// waits `ack_wait`).
    EphemeralBackoffIgnored,
    /// Auto-ack acks an event before the caller has seen it.
    AutoAckBeforeCallerSees,
    /// Auto-ack never acks (everything comes back after the ack wait).
    AutoAckNeverAcks,
    /// `close` drops the last auto-ack event instead of acking it.
    CloseDoesNotAck,
    /// Auto-ack acks the previous event once the next one arrives, not
    /// when the caller asks for it.
    AutoAckOnArrival,
    /// A `next_manual_ack` call leaves the event the previous `next`
    /// returned unacknowledged (it comes back after the ack wait).
    ManualFetchKeepsAutoUnacked,
    /// A fetch dropped after the event was taken loses the event.
    NotCancelSafe,
    /// [`Kind::NotCancelSafe`] for a durable's auto-ack fetches alone.
    DurableAutoNotCancelSafe,
    /// [`Kind::NotCancelSafe`] for an ephemeral's manual-ack fetches alone.
    EphemeralManualNotCancelSafe,
    /// An ephemeral subscribe dropped after the consumer was made leaves
    /// the consumer behind.
    CancelledSubscribeLeaks,
    // ---- subscriptions and consumers
    /// A resubscribed durable starts over instead of resuming.
    DurableRestartsFromStart,
    /// A second live subscription on a durable gets its own copy.
    DurableNotShared,
    /// Resubscribing a durable keeps its first filter and options.
    ChangedOptionsIgnored,
    /// Resubscribing a durable keeps its first ack wait (and applies the
    /// rest).
    ChangedAckWaitIgnored,
    /// Resubscribing a durable keeps its first `max_ack_pending` (and
    /// applies the rest).
    ChangedMaxAckPendingIgnored,
    /// Resubscribing a durable with another deliver policy keeps the first
    /// one (and applies the rest), without a `Conflict`.
    ChangedDeliverPolicyIgnored,
    UnsubscribeNoop,
    /// Unsubscribing a missing durable succeeds.
    UnsubscribeMissingOk,
    /// `unsubscribe` looks a name `validate_consumer_name` refuses up as
    /// it is (`NotFound`) instead of refusing it (`InvalidSubject`).
    UnsubscribeNameUnchecked,
    /// `close` on a durable's subscription acks the last auto-ack event
    /// but does not end the subscription: it goes on taking the
    /// durable's events.
    DurableCloseKeepsDelivering,
    PolicyLastAsAll,
    PolicyNewAsAll,
    PolicyByStartSequenceOffByOne,
    PolicyByStartTimeIgnored,
    /// `Last` starts at the stream's last event, whatever its subject.
    PolicyLastIgnoresFilter,
    /// `ByStartTime` starts after the start time's millisecond.
    PolicyByStartTimeExclusive,
    /// `ByStartTime` compares the events' own `timestamp`.
    PolicyByStartTimeByEventTimestamp,
    /// `ByStartTime` filters on storage times instead of setting a start
    /// position: with a start time ahead of the clock, the events stored
    /// before that time are skipped (as a query `stored_at >= start`
    /// would).
    PolicyByStartTimeFiltersStorageTime,
    /// Not a broken rule: a backend whose clock runs [`CLOCK_AHEAD`] ahead
    /// of the test machine's (its stored events carry later times), for
    /// the `Capabilities::clock_tolerance` tests.
    ClockAhead,
    PolicyLastPerSubjectAsLast,
    /// `LastPerSubject` starts with the newest stored event of every
    /// subject, not only of those the filter matches (new events are
    /// filtered).
    PolicyLastPerSubjectIgnoresFilter,
    /// Not a broken rule: a backend whose sequences leave gaps (1, 3, 5,
    /// ...: strictly increasing from 1, as the contract asks, but not
    /// contiguous, as a database sequence after a rolled-back insert).
    SequenceGaps,
    /// Ephemeral subscriptions ignore the deliver policy (always live).
    EphemeralPolicyIgnored,
    /// `subscribe` (live) replays the stored events.
    EphemeralNewReplays,
    /// `>` also matches zero tokens (the bare prefix).
    TailMatchesParent,
    /// `*` matches one or more tokens.
    StarMatchesMany,
    /// Every seventh delivery is skipped silently.
    DropsEvents,
    /// Deliveries available together are handed out swapped.
    Reorders,
    /// `Error::Lagged` is swallowed: overrun events vanish silently.
    LaggedSwallowed,
    // ---- info
    InfoMessagesOffByOne,
    /// `first_sequence` is always 1 (0 when empty; moves with retention).
    InfoFirstSequenceAlwaysOne,
    /// Ephemeral consumers are not counted.
    InfoIgnoresEphemeralConsumers,
    /// `bytes` is 1 whenever something is stored.
    InfoBytesConstant,
    /// `bytes` still counts the events retention removed (every event
    /// ever stored, of the stored ones' average size).
    InfoBytesCountsRemoved,
    /// `info().provider` is not `name()` (a wrapper forwarding the inner
    /// provider's info).
    InfoProviderNotName,
}

// ------------------------------------------------------------- the provider

/// Decrements a live-subscription counter when the subscription goes away.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Mutant {
    inner: MemoryProvider,
    kind: Kind,
    /// First filter and options per durable name, until unsubscribed.
    durables: Mutex<HashMap<String, (String, SubscribeOptions)>>,
    /// Live subscriptions per durable name.
    live: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// Live ephemeral subscriptions.
    ephemerals: Arc<AtomicUsize>,
    counter: AtomicU64,
    /// The last sequence reserved ([`Kind::SequenceReservedBeforeStore`]).
    reserved: AtomicU64,
    /// Last sequence per subject ([`Kind::ExpectedSequencePerSubject`]).
    last_by_subject: Mutex<HashMap<String, u64>>,
    /// (sequence, event timestamp) of each stored event, in order
    /// ([`Kind::PolicyByStartTimeByEventTimestamp`]).
    stamps: Mutex<Vec<(u64, u64)>>,
    /// Repeats fanned out to ephemerals
    /// ([`Kind::DuplicatesReachLiveSubscribers`]).
    repeats: tokio::sync::broadcast::Sender<ReceivedEvent>,
}

impl Mutant {
    fn new(kind: Kind, max_events: usize) -> Self {
        let max_payload = match kind {
            Kind::PayloadLimitUnenforced
            | Kind::PayloadLimitCountsPayloadOnly
            | Kind::OutcomeSkipsAdmission
            | Kind::BatchSkipsSizeCheck => MAX_PAYLOAD * 16,
            _ => MAX_PAYLOAD,
        };
        let inner = MemoryProvider::with_limits(
            MemoryConfig {
                max_events,
                ..MemoryConfig::default()
            },
            MemoryLimits {
                max_payload,
                ..MemoryLimits::default()
            },
        )
        .unwrap();
        Self {
            inner,
            kind,
            durables: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            ephemerals: Arc::new(AtomicUsize::new(0)),
            counter: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            last_by_subject: Mutex::new(HashMap::new()),
            stamps: Mutex::new(Vec::new()),
            repeats: tokio::sync::broadcast::channel(64).0,
        }
    }

    fn fresh_id(&self) -> String {
        format!("mutant-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// The event the inner provider is asked to store, or the mutant's own
    /// refusal.
    fn admit(&self, event: &Arc<Event>) -> Result<Arc<Event>> {
        match self.kind {
            Kind::BadSubjectsAccepted
                if validate_publish_subject(&event.subject, self.subject_prefix()).is_err() =>
            {
                let mut e = Event::clone(event);
                e.subject = self.build_subject("accepted", "t");
                Ok(Arc::new(e))
            }
            Kind::PayloadLimitCountsPayloadOnly => {
                let size = serde_json::to_vec(&event.payload).unwrap().len();
                if size > MAX_PAYLOAD {
                    return Err(Error::PayloadTooLarge {
                        size,
                        max: MAX_PAYLOAD,
                    });
                }
                Ok(event.clone())
            }
            // every path but the outcome's (see `publish_shared_with_outcome`)
            // or the batch's (see `publish_batch`)
            Kind::OutcomeSkipsAdmission | Kind::BatchSkipsSizeCheck => {
                let size = serde_json::to_vec(&**event).unwrap().len();
                if size > MAX_PAYLOAD {
                    return Err(Error::PayloadTooLarge {
                        size,
                        max: MAX_PAYLOAD,
                    });
                }
                Ok(event.clone())
            }
            Kind::PayloadLimitOffByOne => {
                let size = serde_json::to_vec(&**event).unwrap().len();
                if size >= MAX_PAYLOAD {
                    return Err(Error::PayloadTooLarge {
                        size,
                        max: MAX_PAYLOAD,
                    });
                }
                Ok(event.clone())
            }
            _ => Ok(event.clone()),
        }
    }

    fn publish_options(
        &self,
        event: &Event,
        options: &PublishOptions,
        shared: bool,
    ) -> PublishOptions {
        let mut out = options.clone();
        let id = options.dedup_id(event);
        // unusable ids stay unusable: only the dedup rule is broken
        let usable = !id.is_empty() && !id.chars().any(char::is_control);
        match self.kind {
            Kind::DedupIgnored if usable => out.msg_id = Some(self.fresh_id()),
            Kind::SharedIgnoresDedup if usable && shared => out.msg_id = Some(self.fresh_id()),
            // the raw key, in a form the wrapped store takes
            Kind::SharedTakesUnusableDedupId if !usable && shared => {
                out.msg_id = Some(format!("unusable-{}", id.escape_default()));
            }
            Kind::DedupPerSubject if usable => {
                out.msg_id = Some(format!("{}/{id}", event.subject));
            }
            Kind::ExpectedSequenceIgnored => out.expected_sequence = None,
            Kind::ExpectedSequenceZeroIgnored if out.expected_sequence == Some(0) => {
                out.expected_sequence = None;
            }
            _ => {}
        }
        out
    }

    async fn publish_arc(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
        shared: bool,
    ) -> Result<u64> {
        let event = self.admit(&event)?;
        if self.kind == Kind::SequenceReservedBeforeStore {
            return self.publish_reserved(event, options).await;
        }
        if self.kind == Kind::DuplicatesReachLiveSubscribers {
            let outcome = self
                .inner
                .publish_shared_with_outcome(event.clone(), options)
                .await?;
            if outcome.is_duplicate() {
                let _ = self.repeats.send(ReceivedEvent {
                    event,
                    sequence: outcome.sequence,
                    num_delivered: 1,
                    stream: Arc::from(self.inner.name()),
                });
            }
            return Ok(outcome.sequence);
        }
        let mut options = self.publish_options(&event, options, shared);
        if self.kind == Kind::SequenceGaps {
            let expected = options.expected_sequence;
            options.expected_sequence = expected.map(ungapped_last);
            let result = if shared {
                self.inner
                    .publish_shared_with_options(event.clone(), &options)
                    .await
            } else {
                self.inner.publish_with_options(&event, &options).await
            };
            return result.map(gapped).map_err(|e| gapped_error(e, expected));
        }
        if self.kind == Kind::ExpectedSequencePerSubject
            && let Some(expected) = options.expected_sequence.take()
        {
            let actual = self
                .last_by_subject
                .lock()
                .unwrap()
                .get(&event.subject)
                .copied()
                .unwrap_or(0);
            if actual != expected {
                return Err(Error::WrongLastSequence { expected, actual });
            }
        }
        let result = if shared {
            self.inner
                .publish_shared_with_options(event.clone(), &options)
                .await
        } else {
            self.inner.publish_with_options(&event, &options).await
        };
        match result {
            Err(e @ Error::WrongLastSequence { .. }) if self.kind == Kind::ConflictStillStored => {
                let unconditional = PublishOptions {
                    expected_sequence: None,
                    ..options
                };
                self.inner
                    .publish_with_options(&event, &unconditional)
                    .await?;
                Err(e)
            }
            Ok(seq) => {
                self.last_by_subject
                    .lock()
                    .unwrap()
                    .insert(event.subject.clone(), seq);
                let mut stamps = self.stamps.lock().unwrap();
                if stamps.last().is_none_or(|(last, _)| *last < seq) {
                    stamps.push((seq, event.timestamp));
                }
                Ok(if self.kind == Kind::SequencesStartAt1001 {
                    seq + 1000
                } else {
                    seq
                })
            }
            other => other,
        }
    }

    /// [`Kind::SequenceReservedBeforeStore`]: the sequence is taken (the
    /// stream's last, or the last reserved, plus one) before an await and
    /// the event stored after it; a duplicate or a failure gives the
    /// reservation back.
    async fn publish_reserved(&self, event: Arc<Event>, options: &PublishOptions) -> Result<u64> {
        let last = self.inner.info().await?.last_sequence;
        let reserved = self
            .reserved
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                Some(r.max(last) + 1)
            })
            .map_or(last + 1, |r| r.max(last) + 1);
        // the work between reserving and storing (encoding, a round trip)
        if reserved.is_multiple_of(3) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
        let give_back = || {
            let _ = self.reserved.compare_exchange(
                reserved,
                reserved - 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        };
        match self.inner.publish_shared_with_outcome(event, options).await {
            Ok(outcome) if outcome.is_duplicate() => {
                give_back();
                Ok(outcome.sequence)
            }
            Ok(_) => Ok(reserved),
            Err(e) => {
                give_back();
                Err(e)
            }
        }
    }

    fn filter<'a>(&self, filter: &'a str) -> std::borrow::Cow<'a, str> {
        match self.kind {
            Kind::BadFiltersAccepted if SubjectPattern::parse(filter).is_err() => ">".into(),
            // a filter that matches nothing, accepted as one that does
            Kind::FilterPrefixStringMatch
                if validate_filter_for_prefix(filter, self.subject_prefix()).is_err()
                    && SubjectPattern::parse(filter).is_ok()
                    && filter.starts_with(self.subject_prefix())
                    && filter.split('.').next() != Some(self.subject_prefix()) =>
            {
                format!("{}.never.matched", self.subject_prefix()).into()
            }
            Kind::LiteralFilterPrefixMatch
                if validate_filter_for_prefix(filter, self.subject_prefix()).is_ok()
                    && !filter.split('.').any(|t| t == "*" || t == ">") =>
            {
                ">".into()
            }
            // matched by the subscription with its own (broken) matcher
            Kind::TailMatchesParent | Kind::StarMatchesMany => ">".into(),
            _ => filter.into(),
        }
    }

    /// The options the inner provider gets, and the `max_deliver` the
    /// deliveries report instead of the inner one (if different).
    fn subscribe_options(
        &self,
        options: &SubscribeOptions,
        ephemeral: bool,
    ) -> (SubscribeOptions, Option<Option<u64>>) {
        let mut out = options.clone();
        let mut report_max = None;
        match self.kind {
            Kind::MaxDeliverIgnored => {
                out.max_deliver = None;
                report_max = Some(options.max_deliver);
            }
            // after the options were validated (a zero limit is still refused)
            Kind::EphemeralMaxDeliverIgnored
                if ephemeral
                    && options
                        .max_deliver
                        .is_some_and(|m| m > 0 && m >= options.backoff.len() as u64) =>
            {
                out.max_deliver = None;
                report_max = Some(options.max_deliver);
            }
            Kind::MaxDeliverOffByOne => {
                out.max_deliver = options.max_deliver.map(|m| m + 1);
                report_max = Some(options.max_deliver);
            }
            Kind::AckWaitIgnored => out.ack_wait = None,
            Kind::InvalidOptionsRepaired => {
                if out.ack_wait == Some(Duration::ZERO) {
                    out.ack_wait = None;
                }
                if let Some(n) = out.max_deliver {
                    out.backoff
                        .truncate(usize::try_from(n).unwrap_or(usize::MAX));
                }
            }
            Kind::BackoffIgnored | Kind::BackoffIgnoredUnreported => out.backoff.clear(),
            // delivery n waits the inner provider's delivery n + 1 step
            Kind::BackoffOffByOne | Kind::BackoffOffByOneUnreported if out.backoff.len() > 1 => {
                out.backoff.remove(0);
            }
            // the steps continued with the ack wait, as many as deliveries
            // may come (after the options were validated: too many steps
            // are still refused)
            Kind::BackoffLastStepNotRepeated if !out.backoff.is_empty() => {
                let fallback = out.ack_wait.unwrap_or(SubscribeOptions::DEFAULT_ACK_WAIT);
                let steps = out.max_deliver.map_or(out.backoff.len() + 8, |max| {
                    usize::try_from(max)
                        .unwrap_or(usize::MAX)
                        .min(out.backoff.len() + 8)
                });
                while out.backoff.len() < steps {
                    out.backoff.push(fallback);
                }
            }
            Kind::MaxAckPendingIgnored => out.max_ack_pending = None,
            // after the options were validated (a zero limit is still refused)
            Kind::EphemeralMaxAckPendingIgnored
                if ephemeral && options.max_ack_pending.is_some_and(|m| m > 0) =>
            {
                out.max_ack_pending = None;
            }
            Kind::EphemeralBackoffIgnored
                if ephemeral
                    && !options.backoff.iter().any(Duration::is_zero)
                    && options
                        .max_deliver
                        .is_none_or(|m| m >= options.backoff.len() as u64) =>
            {
                out.backoff.clear();
            }
            Kind::EphemeralPolicyIgnored if ephemeral => out.deliver_policy = DeliverPolicy::New,
            _ => {}
        }
        out.deliver_policy = match (self.kind, out.deliver_policy) {
            (Kind::PolicyLastAsAll, DeliverPolicy::Last)
            | (Kind::PolicyNewAsAll, DeliverPolicy::New)
            | (Kind::PolicyByStartTimeIgnored, DeliverPolicy::ByStartTime { .. }) => {
                DeliverPolicy::All
            }
            (Kind::EphemeralNewReplays, DeliverPolicy::New) if ephemeral => DeliverPolicy::All,
            // events stamped CLOCK_AHEAD late, compared with `timestamp`,
            // are the true stamps compared with `timestamp - CLOCK_AHEAD`
            (Kind::ClockAhead, DeliverPolicy::ByStartTime { timestamp }) => {
                DeliverPolicy::ByStartTime {
                    timestamp: timestamp.saturating_sub(CLOCK_AHEAD.as_millis() as u64),
                }
            }
            (Kind::PolicyByStartSequenceOffByOne, DeliverPolicy::ByStartSequence { sequence }) => {
                DeliverPolicy::ByStartSequence {
                    sequence: sequence + 1,
                }
            }
            (Kind::PolicyLastPerSubjectAsLast, DeliverPolicy::LastPerSubject) => {
                DeliverPolicy::Last
            }
            (Kind::SequenceGaps, DeliverPolicy::ByStartSequence { sequence }) => {
                DeliverPolicy::ByStartSequence {
                    sequence: ungapped_start(sequence),
                }
            }
            (Kind::PolicyByStartTimeExclusive, DeliverPolicy::ByStartTime { timestamp }) => {
                DeliverPolicy::ByStartTime {
                    timestamp: timestamp + 1,
                }
            }
            (Kind::PolicyByStartTimeByEventTimestamp, DeliverPolicy::ByStartTime { timestamp }) => {
                let stamps = self.stamps.lock().unwrap();
                match stamps.iter().find(|(_, stamp)| *stamp >= timestamp) {
                    Some((sequence, _)) => DeliverPolicy::ByStartSequence {
                        sequence: *sequence,
                    },
                    None => DeliverPolicy::New,
                }
            }
            (_, policy) => policy,
        };
        (out, report_max)
    }

    /// [`Kind::PolicyLastIgnoresFilter`]: `Last` as "from the stream's
    /// last event", filtered afterwards.
    async fn last_ignoring_filter(&self, options: &mut SubscribeOptions) -> Result<()> {
        if self.kind == Kind::PolicyLastIgnoresFilter
            && options.deliver_policy == DeliverPolicy::Last
        {
            let last = self.inner.info().await?.last_sequence;
            options.deliver_policy = if last == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence { sequence: last }
            };
        }
        Ok(())
    }

    /// [`Kind::PolicyByStartTimeFiltersStorageTime`]: the start time of a
    /// `ByStartTime` subscription (0 otherwise), before which deliveries
    /// are skipped.
    fn start_time_filter(&self, options: &SubscribeOptions) -> u64 {
        match options.deliver_policy {
            DeliverPolicy::ByStartTime { timestamp }
                if self.kind == Kind::PolicyByStartTimeFiltersStorageTime =>
            {
                timestamp
            }
            _ => 0,
        }
    }

    /// [`Kind::PolicyLastPerSubjectIgnoresFilter`]: for a `LastPerSubject`
    /// subscription, the stream's last sequence, up to which the inner
    /// subscription (on `>`) is not filtered.
    async fn last_per_subject_unfiltered(&self, options: &SubscribeOptions) -> Result<Option<u64>> {
        if self.kind == Kind::PolicyLastPerSubjectIgnoresFilter
            && options.deliver_policy == DeliverPolicy::LastPerSubject
        {
            return Ok(Some(self.inner.info().await?.last_sequence));
        }
        Ok(None)
    }

    fn subscription(
        &self,
        inner: Box<dyn Subscription>,
        filter: &str,
        report_max: Option<Option<u64>>,
        live: Live,
        durable: bool,
        window: PolicyWindow,
    ) -> Box<dyn Subscription> {
        let own_filter = (matches!(self.kind, Kind::TailMatchesParent | Kind::StarMatchesMany)
            || (self.kind == Kind::LiteralFilterPrefixMatch && self.filter(filter) == ">")
            || (self.kind == Kind::DurableLiteralPrefixMatch
                && durable
                && !filter.split('.').any(|t| t == "*" || t == ">"))
            || window.unfiltered_until.is_some())
        .then(|| filter.to_string());
        Box::new(MutSub {
            inner,
            kind: self.kind,
            durable,
            own_filter,
            report_max,
            held: None,
            buffered: VecDeque::new(),
            fetched: 0,
            repeats: (self.kind == Kind::DuplicatesReachLiveSubscribers && !durable)
                .then(|| self.repeats.subscribe()),
            unfiltered_until: window.unfiltered_until.unwrap_or(0),
            skip_until_ms: window.skip_until_ms,
            _live: live,
        })
    }
}

#[async_trait]
impl EventProvider for Mutant {
    async fn publish_with_options(&self, event: &Event, options: &PublishOptions) -> Result<u64> {
        self.publish_arc(Arc::new(event.clone()), options, false)
            .await
    }

    async fn publish_shared(&self, event: Arc<Event>) -> Result<u64> {
        self.publish_shared_with_options(event, &PublishOptions::default())
            .await
    }

    async fn publish_shared_with_options(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<u64> {
        self.publish_arc(event, options, true).await
    }

    async fn publish_shared_with_outcome(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        // the inner provider says what happened; the wrapper's own rules
        // (admission, dedup id) are those of its shared publish
        let event = if self.kind == Kind::OutcomeSkipsAdmission {
            let mut e = Event::clone(&event);
            if validate_publish_subject(&e.subject, self.subject_prefix()).is_err() {
                e.subject = self.build_subject("accepted", "t");
            }
            if event_core::check_payload_depth(&e.payload).is_err() {
                e.payload = serde_json::Value::String(e.payload.to_string());
            }
            Arc::new(e)
        } else {
            self.admit(&event)?
        };
        let options = if self.kind == Kind::OutcomeIgnoresOptions {
            PublishOptions::default()
        } else {
            options.clone()
        };
        let mut options = self.publish_options(&event, &options, true);
        let expected = options.expected_sequence;
        if self.kind == Kind::SequenceGaps {
            options.expected_sequence = expected.map(ungapped_last);
        }
        let mut outcome = self
            .inner
            .publish_shared_with_outcome(event, &options)
            .await
            .map_err(|e| match self.kind {
                Kind::SequenceGaps => gapped_error(e, expected),
                _ => e,
            })?;
        if self.kind == Kind::SequenceGaps {
            outcome.sequence = gapped(outcome.sequence);
        }
        Ok(if self.kind == Kind::OutcomeMisreported {
            PublishOutcome::stored(outcome.sequence)
        } else {
            outcome
        })
    }

    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<Result<u64>>> {
        let mut results = Vec::with_capacity(events.len());
        let mut seen = std::collections::HashSet::new();
        // [`Kind::BatchSequencesCountRefusals`]: (first stored sequence, its
        // place), the place of each distinct event, and the report of each id
        let mut first: Option<(u64, u64)> = None;
        let mut place = 0u64;
        let mut reported: HashMap<String, u64> = HashMap::new();
        for event in events {
            let repeat = !seen.insert(event.id.clone());
            if self.kind == Kind::BatchSequencesCountRefusals {
                let result = self.publish(event).await;
                results.push(match result {
                    Ok(_) if repeat => Ok(reported[&event.id]),
                    Ok(seq) => {
                        let (base, at) = *first.get_or_insert((seq, place));
                        let report = base + (place - at);
                        reported.insert(event.id.clone(), report);
                        place += 1;
                        Ok(report)
                    }
                    Err(e) => {
                        place += u64::from(!repeat);
                        Err(e)
                    }
                });
                continue;
            }
            let result = if repeat && self.kind == Kind::BatchStoresRepeats {
                // dedup checked against earlier batches only
                let fresh = PublishOptions {
                    msg_id: Some(format!("{}-again", event.id)),
                    ..PublishOptions::default()
                };
                self.publish_with_options(event, &fresh).await
            } else if self.kind == Kind::BatchSkipsSizeCheck {
                self.inner.publish(event).await
            } else if self.kind == Kind::BatchSkipsDepthCheck
                && event_core::check_payload_depth(&event.payload).is_err()
            {
                let mut stored = event.clone();
                stored.payload = serde_json::Value::String(event.payload.to_string());
                self.publish(&stored).await
            } else {
                self.publish(event).await
            };
            let failed = result.is_err();
            results.push(result);
            if failed && self.kind == Kind::BatchStopsAtFirstError {
                break;
            }
        }
        Ok(results)
    }

    async fn publish_batch_with_outcome(
        &self,
        events: &[Event],
    ) -> Result<Vec<Result<PublishOutcome>>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let outcome = self
                .publish_shared_with_outcome(Arc::new(event.clone()), &PublishOptions::default())
                .await;
            results.push(match outcome {
                Ok(outcome) if self.kind == Kind::BatchOutcomeMisreported => {
                    Ok(PublishOutcome::stored(outcome.sequence))
                }
                other => other,
            });
        }
        Ok(results)
    }

    async fn subscribe_with_options(
        &self,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let (mut options, report_max) = self.subscribe_options(options, true);
        self.last_ignoring_filter(&mut options).await?;
        let unfiltered_until = self.last_per_subject_unfiltered(&options).await?;
        let skip_until_ms = self.start_time_filter(&options);
        let inner_filter = if unfiltered_until.is_some() {
            ">".into()
        } else {
            self.filter(filter_subject)
        };
        let mut inner = self
            .inner
            .subscribe_with_options(&inner_filter, &options)
            .await?;
        if self.kind == Kind::CancelledSubscribeLeaks {
            // the consumer exists; a caller that stops waiting now leaks it
            struct Leak(Option<Box<dyn Subscription>>);
            impl Drop for Leak {
                fn drop(&mut self) {
                    std::mem::forget(self.0.take());
                }
            }
            let mut made = Leak(Some(inner));
            tokio::task::yield_now().await;
            inner = made.0.take().unwrap();
        }
        Ok(self.subscription(
            inner,
            filter_subject,
            report_max,
            Live::enter(&self.ephemerals),
            false,
            PolicyWindow {
                unfiltered_until,
                skip_until_ms,
            },
        ))
    }

    async fn subscribe_durable_with_options(
        &self,
        consumer_name: &str,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        if self.kind == Kind::LongAckWaitRefused
            && options
                .ack_wait
                .is_some_and(|wait| wait > Duration::from_secs(365 * 24 * 3600))
        {
            return Err(Error::invalid_config("ack_wait", "longer than a year"));
        }
        let mut name = consumer_name.to_string();
        let hand_rolled_ok = !name.is_empty()
            && !name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/'));
        if (self.kind == Kind::BadConsumerNamesAccepted
            || (self.kind == Kind::ConsumerNameHandRolled && hand_rolled_ok))
            && validate_consumer_name(&name).is_err()
        {
            name = format!(
                "x{}",
                name.bytes().map(|b| format!("{b:02x}")).collect::<String>()
            );
        }
        let (mut filter, mut options) = (filter_subject.to_string(), options.clone());
        let known = self.durables.lock().unwrap().get(&name).cloned();
        match (self.kind, known) {
            (Kind::DurableRestartsFromStart, Some(_)) => {
                let _ = self.inner.unsubscribe(&name).await;
            }
            (Kind::ChangedOptionsIgnored, Some(first)) => (filter, options) = first,
            (Kind::ChangedAckWaitIgnored, Some((_, first))) => options.ack_wait = first.ack_wait,
            (Kind::ChangedDeliverPolicyIgnored, Some((_, first))) => {
                options.deliver_policy = first.deliver_policy;
            }
            // after the options were validated (a zero limit is still refused)
            (Kind::ChangedMaxAckPendingIgnored, Some((_, first)))
                if options.max_ack_pending.is_none_or(|m| m > 0) =>
            {
                options.max_ack_pending = first.max_ack_pending;
            }
            (_, None) => {
                self.durables
                    .lock()
                    .unwrap()
                    .insert(name.clone(), (filter.clone(), options.clone()));
            }
            _ => {}
        }
        let counter = self
            .live
            .lock()
            .unwrap()
            .entry(name.clone())
            .or_default()
            .clone();
        if self.kind == Kind::DurableNotShared && counter.load(Ordering::SeqCst) > 0 {
            name = format!(
                "{name}-copy{}",
                self.counter.fetch_add(1, Ordering::Relaxed)
            );
        }
        let (mut options, report_max) = self.subscribe_options(&options, false);
        self.last_ignoring_filter(&mut options).await?;
        let unfiltered_until = self.last_per_subject_unfiltered(&options).await?;
        let skip_until_ms = self.start_time_filter(&options);
        let literal = !filter.split('.').any(|t| t == "*" || t == ">");
        let inner_filter = if unfiltered_until.is_some()
            || (self.kind == Kind::DurableLiteralPrefixMatch
                && literal
                && validate_filter_for_prefix(&filter, self.subject_prefix()).is_ok())
        {
            ">".into()
        } else {
            self.filter(&filter)
        };
        let inner = self
            .inner
            .subscribe_durable_with_options(&name, &inner_filter, &options)
            .await?;
        Ok(self.subscription(
            inner,
            &filter,
            report_max,
            Live::enter(&counter),
            true,
            PolicyWindow {
                unfiltered_until,
                skip_until_ms,
            },
        ))
    }

    async fn history(&self, filter_subject: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        let filter = filter_subject.map(|f| self.filter(f));
        let filter = filter.as_deref();
        match self.kind {
            Kind::HistoryDropsMetadata => {
                let mut events = self.inner.history(filter, limit).await?;
                for event in &mut events {
                    event.metadata.clear();
                }
                Ok(events)
            }
            Kind::LiteralFilterPrefixMatch if filter == Some(">") => {
                let literal = filter_subject.unwrap_or_default();
                let mut events = self.inner.history(None, usize::MAX).await?;
                events.retain(|e| e.subject.starts_with(literal));
                events.truncate(limit);
                Ok(events)
            }
            Kind::HistoryOldestFirst => {
                let mut events = self.inner.history(filter, limit).await?;
                events.reverse();
                Ok(events)
            }
            Kind::HistoryIgnoresLimit => self.inner.history(filter, usize::MAX).await,
            Kind::HistoryIgnoresFilter => self.inner.history(None, limit).await,
            // an index lookup for a literal head (a wildcard head is matched)
            Kind::HistoryTailAsStringPrefix
                if filter_subject.is_some_and(|f| f.ends_with(".>") && !f.contains('*')) =>
            {
                let head = filter_subject
                    .and_then(|f| f.strip_suffix(".>"))
                    .unwrap_or_default();
                let mut events = self.inner.history(None, usize::MAX).await?;
                events.retain(|e| e.subject.starts_with(head) && e.subject.len() > head.len());
                events.truncate(limit);
                Ok(events)
            }
            Kind::HistoryPreallocatesLimit => {
                let mut events = Vec::with_capacity(limit);
                events.extend(self.inner.history(filter, limit).await?);
                Ok(events)
            }
            Kind::HistoryOldestMatches => {
                let mut events = self.inner.history(filter, usize::MAX).await?;
                Ok(events.split_off(events.len().saturating_sub(limit)))
            }
            _ => self.inner.history(filter, limit).await,
        }
    }

    async fn unsubscribe(&self, consumer_name: &str) -> Result<()> {
        match self.kind {
            Kind::UnsubscribeNoop => return Ok(()),
            Kind::UnsubscribeNameUnchecked if validate_consumer_name(consumer_name).is_err() => {
                return Err(Error::NotFound {
                    kind: "consumer",
                    name: consumer_name.to_string(),
                });
            }
            Kind::UnsubscribeMissingOk => {
                if let Err(Error::NotFound { .. }) = self.inner.unsubscribe(consumer_name).await {
                    return Ok(());
                }
            }
            _ => self.inner.unsubscribe(consumer_name).await?,
        }
        self.durables.lock().unwrap().remove(consumer_name);
        Ok(())
    }

    async fn info(&self) -> Result<ProviderInfo> {
        let mut info = self.inner.info().await?;
        match self.kind {
            Kind::InfoMessagesOffByOne => info.messages += 1,
            Kind::InfoFirstSequenceAlwaysOne => info.first_sequence = 1,
            Kind::InfoIgnoresEphemeralConsumers => {
                info.consumers = info
                    .consumers
                    .saturating_sub(self.ephemerals.load(Ordering::SeqCst));
            }
            Kind::InfoBytesConstant => info.bytes = info.bytes.min(1),
            Kind::InfoBytesCountsRemoved if info.messages > 0 => {
                info.bytes = info.bytes / info.messages * info.last_sequence;
            }
            Kind::InfoProviderNotName => info.provider = "wrapped".into(),
            Kind::SequenceGaps => {
                info.first_sequence = gapped(info.first_sequence);
                info.last_sequence = gapped(info.last_sequence);
            }
            _ => {}
        }
        Ok(info)
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn subject_prefix(&self) -> &str {
        self.inner.subject_prefix()
    }

    async fn health(&self) -> Result<bool> {
        self.inner.health().await
    }
}

// ---------------------------------------------------------- subscriptions

/// What a subscription lets through unfiltered, or skips, for the deliver
/// policy mutants.
#[derive(Clone, Copy)]
struct PolicyWindow {
    /// Deliveries up to this sequence pass unfiltered
    /// ([`Kind::PolicyLastPerSubjectIgnoresFilter`]).
    unfiltered_until: Option<u64>,
    /// Deliveries are skipped until the clock reaches this, in Unix ms
    /// ([`Kind::PolicyByStartTimeFiltersStorageTime`]).
    skip_until_ms: u64,
}

struct MutSub {
    inner: Box<dyn Subscription>,
    kind: Kind,
    /// A durable's subscription (not an ephemeral one).
    durable: bool,
    /// The caller's filter, matched here with the mutant's matcher (the
    /// inner subscription gets `>`).
    own_filter: Option<String>,
    report_max: Option<Option<u64>>,
    /// The last auto-ack event, for mutants that emulate auto-ack.
    held: Option<PendingEvent>,
    buffered: VecDeque<ReceivedEvent>,
    fetched: u64,
    /// Repeats fanned out to this ephemeral
    /// ([`Kind::DuplicatesReachLiveSubscribers`]).
    repeats: Option<tokio::sync::broadcast::Receiver<ReceivedEvent>>,
    /// Deliveries up to this sequence pass unfiltered
    /// ([`Kind::PolicyLastPerSubjectIgnoresFilter`]).
    unfiltered_until: u64,
    /// Deliveries are skipped until the clock reaches this (Unix ms;
    /// [`Kind::PolicyByStartTimeFiltersStorageTime`]).
    skip_until_ms: u64,
    _live: Live,
}

/// `>` matching zero or more tokens, or `*` one or more: the two classic
/// wildcard bugs.
fn broken_match(kind: Kind, filter: &[&str], subject: &[&str]) -> bool {
    match (filter.first(), subject.first()) {
        (None, None) => true,
        (Some(&">"), _) => kind == Kind::TailMatchesParent || !subject.is_empty(),
        (Some(&"*"), Some(_)) if kind == Kind::StarMatchesMany => {
            (1..=subject.len()).any(|k| broken_match(kind, &filter[1..], &subject[k..]))
        }
        (Some(&"*"), Some(_)) => broken_match(kind, &filter[1..], &subject[1..]),
        (Some(lit), Some(tok)) => lit == tok && broken_match(kind, &filter[1..], &subject[1..]),
        _ => false,
    }
}

impl MutSub {
    /// Whether the caller should see `subject` (and the delivery count
    /// allows it).
    fn wanted(&mut self, received: &ReceivedEvent) -> bool {
        let subject = received.event.subject.as_str();
        if received.sequence <= self.unfiltered_until {
            return true;
        }
        if event_core::now_millis() < self.skip_until_ms {
            return false;
        }
        if let Some(filter) = &self.own_filter
            && matches!(
                self.kind,
                Kind::LiteralFilterPrefixMatch | Kind::DurableLiteralPrefixMatch
            )
        {
            return subject.starts_with(filter.as_str());
        }
        if let Some(filter) = &self.own_filter {
            let f: Vec<&str> = filter.split('.').collect();
            let s: Vec<&str> = subject.split('.').collect();
            if !broken_match(self.kind, &f, &s) {
                return false;
            }
        }
        if self.kind == Kind::DropsEvents {
            self.fetched += 1;
            return !self.fetched.is_multiple_of(7);
        }
        true
    }

    fn mutate(&self, mut received: ReceivedEvent) -> ReceivedEvent {
        match self.kind {
            Kind::NumDeliveredAlwaysOne => received.num_delivered = 1,
            Kind::DeliveredSequenceOffByOne => received.sequence += 1,
            Kind::SequenceGaps => received.sequence = gapped(received.sequence),
            Kind::MetadataDropped => Arc::make_mut(&mut received.event).metadata.clear(),
            Kind::DurableDropsMetadata if self.durable => {
                Arc::make_mut(&mut received.event).metadata.clear();
            }
            _ => {}
        }
        received
    }

    async fn fetch_auto(&mut self) -> Result<Option<ReceivedEvent>> {
        while let Some(Ok(repeat)) = self.repeats.as_mut().map(|r| r.try_recv()) {
            if self.wanted(&repeat) {
                return Ok(Some(repeat));
            }
        }
        loop {
            match self.inner.next().await {
                Err(Error::Lagged { .. }) if self.kind == Kind::LaggedSwallowed => continue,
                Ok(Some(received)) => {
                    if !self.wanted(&received) {
                        continue;
                    }
                    return Ok(Some(self.mutate(received)));
                }
                other => return other,
            }
        }
    }

    async fn fetch_manual(&mut self) -> Result<Option<PendingEvent>> {
        loop {
            match self.inner.next_manual_ack().await {
                Err(Error::Lagged { .. }) if self.kind == Kind::LaggedSwallowed => continue,
                Ok(Some(pending)) => {
                    if !self.wanted(&pending.received) {
                        pending.ack().await?;
                        continue;
                    }
                    if (self.kind == Kind::SpareSkipped
                        || (self.kind == Kind::EphemeralSpareSkipped && !self.durable))
                        && pending
                            .max_deliver()
                            .is_some_and(|max| pending.received.num_delivered > max)
                    {
                        pending.term().await?;
                        continue;
                    }
                    return Ok(Some(self.wrap(pending)));
                }
                other => return other,
            }
        }
    }

    fn wrap(&self, pending: PendingEvent) -> PendingEvent {
        let wait = match self.kind {
            Kind::BackoffOffByOneUnreported
            | Kind::BackoffIgnoredUnreported
            | Kind::BackoffLastStepNotRepeated => None,
            _ => pending.ack_wait(),
        };
        let (mut received, max_deliver, acker) = pending.into_parts();
        if self.kind == Kind::StreamEmptyOnManualAck {
            received.stream = Arc::from("");
        }
        let max_deliver = self.report_max.unwrap_or(max_deliver);
        let acker = MutAcker {
            inner: Some(acker),
            kind: self.kind,
            ephemeral: !self.durable,
            settled: AtomicBool::new(false),
            last: max_deliver.is_some_and(|max| received.num_delivered >= max),
        };
        let out = PendingEvent::new(self.mutate(received), max_deliver, Box::new(acker));
        match wait {
            Some(wait) => out.with_ack_wait(wait),
            None => out,
        }
    }

    /// Auto-ack emulated over manual ack, for the auto-ack mutants.
    async fn next_emulated(&mut self) -> Result<Option<ReceivedEvent>> {
        match self.kind {
            Kind::AutoAckNeverAcks => drop(self.held.take()),
            // acked below, once the next event came
            Kind::AutoAckOnArrival => {}
            _ => {
                if let Some(last) = self.held.take() {
                    last.ack().await?;
                }
            }
        }
        let Some(pending) = self.fetch_manual().await? else {
            return Ok(None);
        };
        if self.kind == Kind::AutoAckOnArrival
            && let Some(last) = self.held.take()
        {
            last.ack().await?;
        }
        let received = pending.received.clone();
        if self.kind == Kind::AutoAckBeforeCallerSees {
            pending.ack().await?;
        } else {
            self.held = Some(pending);
        }
        Ok(Some(received))
    }
}

#[async_trait]
impl Subscription for MutSub {
    async fn next(&mut self) -> Result<Option<ReceivedEvent>> {
        match self.kind {
            Kind::AutoAckBeforeCallerSees
            | Kind::AutoAckNeverAcks
            | Kind::CloseDoesNotAck
            | Kind::AutoAckOnArrival
            | Kind::ManualFetchKeepsAutoUnacked
            | Kind::DurableCloseKeepsDelivering => self.next_emulated().await,
            Kind::Reorders => {
                if let Some(received) = self.buffered.pop_front() {
                    return Ok(Some(received));
                }
                let Some(first) = self.fetch_auto().await? else {
                    return Ok(None);
                };
                match tokio::time::timeout(Duration::from_millis(20), self.fetch_auto()).await {
                    Ok(Ok(Some(second))) => {
                        self.buffered.push_back(first);
                        Ok(Some(second))
                    }
                    _ => Ok(Some(first)),
                }
            }
            Kind::NotCancelSafe | Kind::DurableAutoNotCancelSafe
                if self.kind == Kind::NotCancelSafe || self.durable =>
            {
                let result = self.fetch_auto().await;
                tokio::task::yield_now().await;
                result
            }
            _ => self.fetch_auto().await,
        }
    }

    async fn next_manual_ack(&mut self) -> Result<Option<PendingEvent>> {
        // the emulated auto-ack event is settled when the caller asks for
        // the next one, in either mode
        if self.kind != Kind::ManualFetchKeepsAutoUnacked
            && let Some(last) = self.held.take()
        {
            last.ack().await?;
        }
        let result = self.fetch_manual().await;
        if self.kind == Kind::NotCancelSafe
            || (self.kind == Kind::EphemeralManualNotCancelSafe && !self.durable)
        {
            tokio::task::yield_now().await;
        }
        result
    }

    async fn close(&mut self) -> Result<()> {
        match self.kind {
            Kind::CloseDoesNotAck | Kind::AutoAckNeverAcks => drop(self.held.take()),
            _ => {
                if let Some(last) = self.held.take() {
                    last.ack().await?;
                }
            }
        }
        if self.kind == Kind::DurableCloseKeepsDelivering && self.durable {
            return Ok(());
        }
        self.inner.close().await
    }
}

struct MutAcker {
    inner: Option<Box<dyn Acker>>,
    kind: Kind,
    /// The delivery of an ephemeral subscription.
    ephemeral: bool,
    settled: AtomicBool,
    /// The delivery is reported as the final one.
    last: bool,
}

impl MutAcker {
    fn inner(&self) -> &dyn Acker {
        self.inner.as_deref().unwrap()
    }
}

#[async_trait]
impl Acker for MutAcker {
    async fn ack(&self) -> Result<()> {
        self.settled.store(true, Ordering::SeqCst);
        self.inner().ack().await
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<()> {
        self.settled.store(true, Ordering::SeqCst);
        match self.kind {
            Kind::NakAcks => self.inner().ack().await,
            Kind::EphemeralNakAcks if self.ephemeral => self.inner().ack().await,
            Kind::NakDelayIgnored => self.inner().nak(None).await,
            Kind::EphemeralNakDelayIgnored if self.ephemeral => self.inner().nak(None).await,
            Kind::NakDelayRoundedDown => {
                let whole = delay.map(|d| Duration::from_secs(d.as_secs()));
                self.inner().nak(whole).await
            }
            Kind::NakDelayOverflows => {
                let due = std::time::Instant::now() + delay.unwrap_or_default();
                std::hint::black_box(due);
                self.inner().nak(delay).await
            }
            // the inner acker is dropped unsettled: the ack wait expires
            Kind::NakFinalLeftUnsettled if self.last => Ok(()),
            _ => self.inner().nak(delay).await,
        }
    }

    async fn term(&self) -> Result<()> {
        self.settled.store(true, Ordering::SeqCst);
        match self.kind {
            Kind::TermNaks => self.inner().nak(None).await,
            Kind::EphemeralTermNaks if self.ephemeral => self.inner().nak(None).await,
            Kind::TermNoop => Ok(()),
            _ => self.inner().term().await,
        }
    }

    async fn in_progress(&self) -> Result<()> {
        match self.kind {
            Kind::InProgressNoop => Ok(()),
            Kind::EphemeralInProgressNoop if self.ephemeral => Ok(()),
            _ => self.inner().in_progress().await,
        }
    }
}

impl Drop for MutAcker {
    fn drop(&mut self) {
        if self.settled.load(Ordering::SeqCst) {
            return;
        }
        let (Some(inner), Ok(runtime)) = (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        match self.kind {
            Kind::UnsettledAckedOnDrop => {
                runtime.spawn(async move { inner.ack().await });
            }
            Kind::EphemeralUnsettledAckedOnDrop if self.ephemeral => {
                runtime.spawn(async move { inner.ack().await });
            }
            Kind::UnsettledNakedOnDrop => {
                runtime.spawn(async move { inner.nak(None).await });
            }
            _ => {}
        }
    }
}

// ----------------------------------------------------------------- harness

struct MutantFactory(Kind);

#[async_trait]
impl ProviderFactory for MutantFactory {
    async fn create(&self) -> Arc<dyn EventProvider> {
        Arc::new(Mutant::new(self.0, MemoryConfig::default().max_events))
    }

    async fn create_with_max_events(&self, max_events: usize) -> Option<Arc<dyn EventProvider>> {
        Some(Arc::new(Mutant::new(self.0, max_events)))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_payload: Some(MAX_PAYLOAD),
            ack_wait: Duration::from_millis(300),
            // a mutant that loses an event fails on this timeout
            receive_timeout: if self.0 == Kind::Faithful {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(3)
            },
            reports_lagged: true,
            ..Capabilities::default()
        }
    }
}

/// [`Kind::ClockAhead`] with the clock tolerance it declares.
struct SkewedFactory(Duration);

#[async_trait]
impl ProviderFactory for SkewedFactory {
    async fn create(&self) -> Arc<dyn EventProvider> {
        MutantFactory(Kind::ClockAhead).create().await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            clock_tolerance: self.0,
            ..MutantFactory(Kind::ClockAhead).capabilities()
        }
    }
}

/// A backend whose clock is ahead of the test machine's by less than the
/// `clock_tolerance` it declares passes `deliver_policy_by_start_time`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_within_declared_tolerance_passes() {
    conformance::deliver_policy_by_start_time(&SkewedFactory(CLOCK_AHEAD * 2)).await;
}

/// Beyond the declared tolerance (the default, 50 ms), it fails, with a
/// message that names the clock skew and the capability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_beyond_declared_tolerance_names_the_capability() {
    assert_killed(
        Kind::ClockAhead,
        "deliver_policy_by_start_time",
        "set Capabilities::clock_tolerance to the skew it must tolerate",
        tokio::spawn(async {
            conformance::deliver_policy_by_start_time(&MutantFactory(Kind::ClockAhead)).await;
        }),
    )
    .await;
}

/// A backend whose sequences leave gaps ([`Kind::SequenceGaps`]: strictly
/// increasing from 1, not contiguous) conforms: it passes every test that
/// reads sequences. (`deliver_policy_by_start_sequence_beyond_the_end`
/// assumed contiguous sequences and failed it.)
mod gapped_sequences {
    use super::{Kind, MutantFactory};
    event_core::conformance_tests!(@each MutantFactory(Kind::SequenceGaps);
        publish_subscribe_round_trip,
        ordering_of_1000_events,
        concurrent_publishers_lose_nothing,
        nak_redelivers,
        ack_timeout_redelivers,
        deliver_policy_by_start_sequence,
        deliver_policy_by_start_sequence_beyond_the_end,
        retention_overrun_reported_and_skipped,
        msg_id_deduplicates,
        publish_outcome_reports_duplicates,
        expected_sequence_conflict,
        publish_shared_follows_publish_contract,
        publish_batch_reports_each_result,
        publish_batch_with_outcome_reports_each_result,
        info_counts,
    );
}

/// Awaits a conformance test run against a mutant and asserts that it
/// failed with a panic whose message contains `expected`.
async fn assert_killed(kind: Kind, test: &str, expected: &str, run: tokio::task::JoinHandle<()>) {
    let error = match tokio::time::timeout(Duration::from_secs(120), run).await {
        Err(_) => panic!("{kind:?}: `{test}` hung instead of failing"),
        Ok(Ok(())) => panic!(
            "{kind:?} SURVIVED `{test}`: the suite passed against a provider that breaks the contract"
        ),
        Ok(Err(error)) => error,
    };
    assert!(
        error.is_panic(),
        "{kind:?}: `{test}` was cancelled: {error}"
    );
    let payload = error.into_panic();
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_default();
    assert!(
        message.contains(expected),
        "{kind:?}: `{test}` failed, but not with {expected:?}: {message}"
    );
}

/// `mutant!(name, Kind, test => "expected panic text", ...)`: one
/// `#[tokio::test]` asserting that each listed conformance test fails
/// against the mutant.
macro_rules! mutant {
    ($(#[doc = $doc:expr])* $name:ident, $kind:expr, $($test:ident => $expected:expr),+ $(,)?) => {
        $(#[doc = $doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $(
                assert_killed(
                    $kind,
                    stringify!($test),
                    $expected,
                    tokio::spawn(async move {
                        conformance::$test(&MutantFactory($kind)).await;
                    }),
                )
                .await;
            )+
        }
    };
}

/// The whole suite against the wrapper with no mutation: the wrapper itself
/// conforms, so the kills below are the mutations' doing.
mod faithful {
    use super::{Kind, MutantFactory};
    event_core::conformance_tests!(MutantFactory(Kind::Faithful));
}

// ----------------------------------------------------------------- history

mutant!(
    /// The suite catches a nak delay of `Duration::MAX` overflowing the
    /// clock instead of being held to the longest wait.
    nak_delay_overflows, Kind::NakDelayOverflows,
    out_of_range_values_are_held_not_refused => "overflow",
);
mutant!(
    /// The suite catches a valid ack wait beyond the backend's range
    /// refused instead of held.
    long_ack_wait_refused, Kind::LongAckWaitRefused,
    out_of_range_values_are_held_not_refused => "is held to the nearest one",
);

mutant!(
    /// The suite catches history returned oldest first.
    history_oldest_first, Kind::HistoryOldestFirst,
    history_newest_first_with_limit_and_filter => "history(None, 100): every event, newest first",
);
mutant!(
    /// The suite catches history ignoring its limit.
    history_ignores_limit, Kind::HistoryIgnoresLimit,
    history_newest_first_with_limit_and_filter => "history(category, 4): the newest 4",
);
mutant!(
    /// The suite catches history ignoring its filter.
    history_ignores_filter, Kind::HistoryIgnoresFilter,
    history_newest_first_with_limit_and_filter => "history(category, 4): the newest 4",
);
mutant!(
    /// The suite catches history matching a `>` filter as a string prefix.
    history_tail_as_string_prefix, Kind::HistoryTailAsStringPrefix,
    wildcard_filtering_and_topic_isolation => "history(`events.wa.x.>`), newest first",
);
mutant!(
    /// The suite catches history returning the oldest matches instead of the
    /// newest.
    history_oldest_matches, Kind::HistoryOldestMatches,
    history_newest_first_with_limit_and_filter => "history(category, 4): the newest 4",
);

mutant!(
    /// The suite catches history panicking on a `usize::MAX` limit.
    history_preallocates_limit, Kind::HistoryPreallocatesLimit,
    history_newest_first_with_limit_and_filter => "capacity overflow",
);

// ----------------------------------------------------------------- publish

mutant!(
    /// The suite catches a provider that never deduplicates.
    dedup_ignored, Kind::DedupIgnored,
    msg_id_deduplicates => "same event id: same sequence",
    publish_shared_follows_publish_contract => "same event id: same sequence",
);
mutant!(
    /// The suite catches dedup per subject instead of per stream.
    dedup_per_subject, Kind::DedupPerSubject,
    msg_id_deduplicates => "same msg id on another subject: same sequence (dedup is per stream)",
);
mutant!(
    /// The suite catches `publish_shared` skipping dedup.
    shared_ignores_dedup, Kind::SharedIgnoresDedup,
    publish_shared_follows_publish_contract => "same event id: same sequence",
);
mutant!(
    /// The suite catches `publish_shared*` taking an unusable dedup id as
    /// a key instead of refusing it.
    shared_takes_unusable_dedup_id, Kind::SharedTakesUnusableDedupId,
    unusable_msg_id_refused => "publish_shared_with_options, msg_id \"\": expected InvalidConfig",
);
mutant!(
    /// The suite catches a repeated dedup id handed to live subscriptions
    /// although nothing was stored.
    duplicates_reach_live_subscribers, Kind::DuplicatesReachLiveSubscribers,
    msg_id_deduplicates => "a live subscription gets each stored event once, and no repeat",
);
mutant!(
    /// The suite catches a publish outcome that calls a duplicate stored.
    outcome_misreported, Kind::OutcomeMisreported,
    publish_outcome_reports_duplicates => "its repeat a duplicate (Some(true))",
);
mutant!(
    /// The suite catches `expected_sequence` being ignored.
    expected_sequence_ignored, Kind::ExpectedSequenceIgnored,
    expected_sequence_conflict => "expected WrongLastSequence",
    publish_shared_follows_publish_contract => "expected WrongLastSequence",
);
mutant!(
    /// The suite catches `expected_sequence: Some(0)` taken as no
    /// condition.
    expected_sequence_zero_ignored, Kind::ExpectedSequenceZeroIgnored,
    expected_sequence_conflict => "0 is a sequence to compare",
);
mutant!(
    /// The suite catches a conflicting publish that is refused but stored.
    conflict_still_stored, Kind::ConflictStillStored,
    expected_sequence_conflict => "the conflicting event was not stored",
);
mutant!(
    /// The suite catches deliveries reporting another sequence than publish.
    delivered_sequence_off_by_one, Kind::DeliveredSequenceOffByOne,
    publish_subscribe_round_trip => "the delivery carries the publish sequence",
);
mutant!(
    /// The suite catches metadata lost in delivery.
    metadata_dropped, Kind::MetadataDropped,
    publish_subscribe_round_trip => "event fields must round-trip exactly",
);
mutant!(
    /// The suite catches a batch publish that stops at the first failure.
    batch_stops_at_first_error, Kind::BatchStopsAtFirstError,
    publish_batch_reports_each_result => "one result per event, failures included",
);
mutant!(
    /// The suite catches a batch publish that stores an event repeated
    /// inside the batch.
    batch_stores_repeats, Kind::BatchStoresRepeats,
    publish_batch_reports_each_result => "a repeat inside the batch returns the first one's sequence",
);
mutant!(
    /// The suite catches a batch publish that reports a repeat as newly
    /// stored (the bus would route it again).
    batch_outcome_misreported, Kind::BatchOutcomeMisreported,
    publish_batch_with_outcome_reports_each_result => "is a duplicate (Some(true))",
);
mutant!(
    /// The suite catches batch results that are not the sequences the
    /// events were stored at (one too high after a refused event).
    batch_sequences_count_refusals, Kind::BatchSequencesCountRefusals,
    publish_batch_reports_each_result => "the sequence it was stored at",
);
mutant!(
    /// The suite catches invalid published subjects being accepted.
    bad_subjects_accepted, Kind::BadSubjectsAccepted,
    invalid_subjects_filters_and_names_rejected => "publish to \"\": expected Error::InvalidSubject",
);
mutant!(
    /// The suite catches invalid filters being accepted.
    bad_filters_accepted, Kind::BadFiltersAccepted,
    invalid_subjects_filters_and_names_rejected => "filter \"\": expected Error::InvalidSubject",
    history_newest_first_with_limit_and_filter => "history with a bad filter: expected Error::InvalidSubject",
);
mutant!(
    /// The suite catches invalid consumer names being accepted.
    bad_consumer_names_accepted, Kind::BadConsumerNamesAccepted,
    invalid_subjects_filters_and_names_rejected => "consumer name \"\" (refused by event_core::subject::validate_consumer_name): expected Error::InvalidSubject",
);
mutant!(
    /// The suite catches a batch that stores a payload nested too deep.
    batch_skips_depth_check, Kind::BatchSkipsDepthCheck,
    payload_too_deep_rejected => "publish_batch of a payload nested deeper than MAX_PAYLOAD_DEPTH",
);
mutant!(
    /// The suite catches a batch that stores a payload over the limit.
    batch_skips_size_check, Kind::BatchSkipsSizeCheck,
    payload_over_limit_rejected => "publish_batch of an event over the limit",
);
mutant!(
    /// The suite catches a payload limit that is not enforced.
    payload_limit_unenforced, Kind::PayloadLimitUnenforced,
    payload_over_limit_rejected => "expected PayloadTooLarge, got Ok(1): the event's payload alone is over Capabilities::max_payload (65536 bytes)",
    publish_shared_follows_publish_contract => "publish_shared: expected PayloadTooLarge, got Ok(",
);
mutant!(
    /// The suite catches a payload limit applied to the payload alone
    /// instead of the encoded event.
    payload_limit_counts_payload_only, Kind::PayloadLimitCountsPayloadOnly,
    payload_over_limit_rejected => "a payload under the limit in an encoded event over it",
);

mutant!(
    /// The suite catches an event of exactly the payload limit refused.
    payload_limit_off_by_one, Kind::PayloadLimitOffByOne,
    payload_over_limit_rejected => "only an event that exceeds the limit is refused (size > max)",
);
mutant!(
    /// The suite catches `publish_shared_with_outcome` ignoring its options.
    outcome_ignores_options, Kind::OutcomeIgnoresOptions,
    publish_outcome_reports_duplicates => "the repeat must return the first one's sequence",
);
mutant!(
    /// The suite catches `publish_shared_with_outcome` skipping the checks
    /// of the other publish paths (subject, payload limit, depth).
    outcome_skips_admission, Kind::OutcomeSkipsAdmission,
    publish_shared_follows_publish_contract => "publish_shared_with_outcome",
    payload_too_deep_rejected => "publish_shared_with_outcome of a payload nested deeper",
);
mutant!(
    /// The suite catches `expected_sequence` compared per subject.
    expected_sequence_per_subject, Kind::ExpectedSequencePerSubject,
    expected_sequence_conflict => "the last sequence of the event's subject",
);
mutant!(
    /// The suite catches a publish that returns a sequence reserved before
    /// storing, not always the one the event was stored at when publishers
    /// race.
    sequence_reserved_before_store, Kind::SequenceReservedBeforeStore,
    concurrent_publishers_lose_nothing => "the sequence its publish returned",
);
mutant!(
    /// The suite catches sequences that do not start at 1.
    sequences_start_at_1001, Kind::SequencesStartAt1001,
    publish_subscribe_round_trip => "stream sequences start at 1",
);
mutant!(
    /// The suite catches metadata lost by `history` alone.
    history_drops_metadata, Kind::HistoryDropsMetadata,
    publish_subscribe_round_trip => "history must return the stored event exactly",
);
mutant!(
    /// The suite catches metadata lost when a stored event is replayed to a
    /// durable (live deliveries keep it).
    durable_drops_metadata, Kind::DurableDropsMetadata,
    publish_subscribe_round_trip => "a stored event replayed to a new durable must round-trip exactly",
);
mutant!(
    /// The suite catches a literal filter matched as a string prefix.
    literal_filter_prefix_match, Kind::LiteralFilterPrefixMatch,
    wildcard_filtering_and_topic_isolation => "a literal filter matches only itself",
);
mutant!(
    /// The suite catches a literal filter matched as a string prefix by
    /// durables alone.
    durable_literal_prefix_match, Kind::DurableLiteralPrefixMatch,
    wildcard_filtering_and_topic_isolation => "durable: a literal filter matches only itself",
);
mutant!(
    /// The suite catches a filter whose first token merely starts with the
    /// prefix being accepted.
    filter_prefix_string_match, Kind::FilterPrefixStringMatch,
    invalid_subjects_filters_and_names_rejected => "x.inv.t\", outside",
);
mutant!(
    /// The suite catches consumer names checked by a hand-rolled rule
    /// weaker than `validate_consumer_name`.
    consumer_name_hand_rolled, Kind::ConsumerNameHandRolled,
    invalid_subjects_filters_and_names_rejected => "(refused by event_core::subject::validate_consumer_name): expected Error::InvalidSubject",
);

// --------------------------------------------------------- acknowledgement

mutant!(
    /// The suite catches a `nak` that acks (no redelivery).
    nak_acks, Kind::NakAcks,
    nak_redelivers => "durable: the redelivery after nak (delivery is at-least-once): no event within",
);
mutant!(
    /// The suite catches `nak_with_delay` redelivering at once.
    nak_delay_ignored, Kind::NakDelayIgnored,
    nak_with_delay_redelivers_later => "before the 750ms delay",
);
mutant!(
    /// The suite catches a nak delay ignored on ephemeral subscriptions.
    ephemeral_nak_delay_ignored, Kind::EphemeralNakDelayIgnored,
    nak_with_delay_redelivers_later => "ephemeral: redelivered after",
);
mutant!(
    /// The suite catches a `term` that naks on ephemeral subscriptions.
    ephemeral_term_naks, Kind::EphemeralTermNaks,
    term_never_redelivers => "ephemeral: a terminated event is not redelivered",
);
mutant!(
    /// The suite catches `in_progress` as a no-op on ephemeral
    /// subscriptions.
    ephemeral_in_progress_noop, Kind::EphemeralInProgressNoop,
    in_progress_extends_ack_wait => "ephemeral: redelivered although in_progress kept extending the wait",
);
mutant!(
    /// The suite catches a `term` that naks (redelivers).
    term_naks, Kind::TermNaks,
    term_never_redelivers => "a terminated event is not redelivered",
);
mutant!(
    /// The suite catches a `term` that does nothing.
    term_noop, Kind::TermNoop,
    term_never_redelivers => "a terminated event is not redelivered: expected no delivery, got event n=0 (num_delivered 2)",
);
mutant!(
    /// The suite catches `num_delivered` always 1.
    num_delivered_always_one, Kind::NumDeliveredAlwaysOne,
    nak_redelivers => "num_delivered counts the redelivery",
    max_deliver_stops_and_reports_final_delivery => "num_delivered counts every delivery",
);
mutant!(
    /// The suite catches `max_deliver` being ignored.
    max_deliver_ignored, Kind::MaxDeliverIgnored,
    max_deliver_stops_and_reports_final_delivery => "max_deliver 3 stops it: expected no delivery, got event n=0 (num_delivered 4)",
);
mutant!(
    /// The suite catches ephemeral subscriptions ignoring `max_deliver`.
    ephemeral_max_deliver_ignored, Kind::EphemeralMaxDeliverIgnored,
    max_deliver_stops_and_reports_final_delivery => "ephemeral: event 0 naked on its 3rd delivery: max_deliver 3 stops it: expected no delivery, got event n=0 (num_delivered 4)",
);
mutant!(
    /// The suite catches one delivery too many.
    max_deliver_off_by_one, Kind::MaxDeliverOffByOne,
    max_deliver_stops_and_reports_final_delivery => "max_deliver 3 stops it: expected no delivery, got event n=0 (num_delivered 4)",
    unsettled_final_delivery_comes_once_more => "the event ends: expected no delivery, got event n=0 (num_delivered 4)",
);
mutant!(
    /// The suite catches a final delivery left unsettled that is never
    /// delivered again (lost instead of dead-lettered).
    spare_skipped, Kind::SpareSkipped,
    unsettled_final_delivery_comes_once_more => "event 0, delivery 3 of max_deliver 2",
);
mutant!(
    /// The suite catches subscribe options no provider can honour being
    /// repaired instead of refused.
    invalid_options_repaired, Kind::InvalidOptionsRepaired,
    invalid_subscribe_options_refused => "subscribe with ack_wait 0: expected InvalidConfig, got a subscription",
);
mutant!(
    /// The suite catches a nak of the final delivery that does not end the
    /// event (the spare delivery brings it back).
    nak_final_left_unsettled, Kind::NakFinalLeftUnsettled,
    max_deliver_stops_and_reports_final_delivery => "max_deliver 3 stops it: expected no delivery, got event n=0 (num_delivered 4)",
);
mutant!(
    /// The suite catches `in_progress` as a no-op.
    in_progress_noop, Kind::InProgressNoop,
    in_progress_extends_ack_wait => "redelivered although in_progress kept extending the wait",
);
mutant!(
    /// The suite catches `ack_wait` being ignored.
    ack_wait_ignored, Kind::AckWaitIgnored,
    ack_timeout_redelivers => "reported ack wait Some(30s), subscribed with 300ms",
);
mutant!(
    /// The suite catches an unsettled delivery that is never redelivered.
    unsettled_acked_on_drop, Kind::UnsettledAckedOnDrop,
    ack_timeout_redelivers => "the redelivery after the ack wait expired (300ms, the delivery dropped unsettled): no event within",
);
mutant!(
    /// The suite catches an ephemeral subscription that never redelivers a
    /// delivery left unsettled past its ack wait.
    ephemeral_unsettled_acked_on_drop, Kind::EphemeralUnsettledAckedOnDrop,
    ack_timeout_redelivers => "ephemeral: the redelivery after the ack wait expired",
);
mutant!(
    /// The suite catches an unsettled delivery redelivered before its ack
    /// wait.
    unsettled_naked_on_drop, Kind::UnsettledNakedOnDrop,
    ack_timeout_redelivers => "redelivered before ack_wait",
);
mutant!(
    /// The suite catches auto-ack acknowledging before the caller sees the
    /// event (lost if the caller crashes).
    auto_ack_before_caller_sees, Kind::AutoAckBeforeCallerSees,
    auto_ack_never_loses_unfinished_event => "the unfinished event 1 comes back and the new event 2 arrives: no event within",
);
mutant!(
    /// The suite catches auto-ack that never acknowledges.
    auto_ack_never_acks, Kind::AutoAckNeverAcks,
    auto_ack_never_loses_unfinished_event => "the unfinished event comes back",
);
mutant!(
    /// The suite catches `close` not acknowledging the last event.
    close_does_not_ack, Kind::CloseDoesNotAck,
    auto_ack_never_loses_unfinished_event => "close acks the last event: expected no delivery, got event n=1",
);
mutant!(
    /// The suite catches an ephemeral subscribe that, dropped part-way,
    /// leaves its consumer behind.
    cancelled_subscribe_leaks, Kind::CancelledSubscribeLeaks,
    cancelled_subscribe_and_close_leave_no_consumer => "a consumer was left behind",
);
mutant!(
    /// The suite catches fetches that lose their event when cancelled.
    not_cancel_safe, Kind::NotCancelSafe,
    cancelled_fetches_lose_nothing => "a fetch cancelled at an await must not take an event it does not return; missing (n, num_delivered): [",
);

mutant!(
    /// The suite catches a durable's auto-ack fetches losing their event
    /// when cancelled (its manual-ack ones do not).
    durable_auto_not_cancel_safe, Kind::DurableAutoNotCancelSafe,
    cancelled_fetches_lose_nothing => "durable, auto-ack fetches dropped mid-way",
);
mutant!(
    /// The suite catches an ephemeral's manual-ack fetches losing their
    /// event when cancelled (its auto-ack ones do not).
    ephemeral_manual_not_cancel_safe, Kind::EphemeralManualNotCancelSafe,
    cancelled_fetches_lose_nothing => "ephemeral, manual-ack fetches dropped mid-way",
);
mutant!(
    /// The suite catches `max_ack_pending` ignored by ephemeral
    /// subscriptions.
    ephemeral_max_ack_pending_ignored, Kind::EphemeralMaxAckPendingIgnored,
    max_ack_pending_pauses_delivery => "ephemeral, max_ack_pending 2: a third delivery",
);
mutant!(
    /// The suite catches `backoff` ignored by ephemeral subscriptions.
    ephemeral_backoff_ignored, Kind::EphemeralBackoffIgnored,
    backoff_spaces_redeliveries => "ephemeral: delivery 2 reports ack wait Some(300ms)",
);
mutant!(
    /// The suite catches the spare delivery skipped on ephemeral
    /// subscriptions.
    ephemeral_spare_skipped, Kind::EphemeralSpareSkipped,
    unsettled_final_delivery_comes_once_more => "ephemeral: event 0, delivery 3 of max_deliver 2",
);
mutant!(
    /// The suite catches a nak delay rounded down.
    nak_delay_rounded_down, Kind::NakDelayRoundedDown,
    nak_with_delay_redelivers_later => "a nak delay means",
);
mutant!(
    /// The suite catches a nak that acks on ephemeral subscriptions.
    ephemeral_nak_acks, Kind::EphemeralNakAcks,
    nak_redelivers => "ephemeral: the redelivery after nak",
);
mutant!(
    /// The suite catches manual-ack deliveries without a stream name.
    stream_empty_on_manual_ack, Kind::StreamEmptyOnManualAck,
    publish_subscribe_round_trip => "stream name must be set on a manual-ack delivery too",
);
mutant!(
    /// The suite catches auto-ack acking the previous event only once the
    /// next one arrives.
    auto_ack_on_arrival, Kind::AutoAckOnArrival,
    auto_ack_acks_when_the_next_event_is_asked => "must acknowledge the event it returned last",
);
mutant!(
    /// The suite catches a `next_manual_ack` call that leaves the previous
    /// `next` event unacknowledged.
    manual_fetch_keeps_auto_unacked, Kind::ManualFetchKeepsAutoUnacked,
    auto_ack_acks_when_the_next_event_is_asked => "so it acknowledges the event the previous next() returned",
);

// --------------------------------------------- subscriptions and consumers

mutant!(
    /// The suite catches a durable that starts over instead of resuming.
    durable_restarts_from_start, Kind::DurableRestartsFromStart,
    durable_resumes_after_drop => "resumes after the last ack",
);
mutant!(
    /// The suite catches two subscriptions on one durable each getting
    /// every event.
    durable_not_shared, Kind::DurableNotShared,
    durable_shared_by_two_subscriptions => "each event delivered to exactly one subscription",
);
mutant!(
    /// The suite catches changed durable options silently ignored.
    changed_options_ignored, Kind::ChangedOptionsIgnored,
    changed_durable_options_applied_or_refused => "the new filter must be in effect",
);
mutant!(
    /// The suite catches `unsubscribe` not deleting the durable.
    unsubscribe_noop, Kind::UnsubscribeNoop,
    unsubscribe_deletes_durable => "a durable recreated after unsubscribe starts over: expected 3 events, got []",
);
mutant!(
    /// The suite catches unsubscribing a missing durable succeeding.
    unsubscribe_missing_ok, Kind::UnsubscribeMissingOk,
    unsubscribe_deletes_durable => "unsubscribing a missing durable: expected NotFound",
);
mutant!(
    /// The suite catches `unsubscribe` taking a bad consumer name for a
    /// missing one.
    unsubscribe_name_unchecked, Kind::UnsubscribeNameUnchecked,
    invalid_subjects_filters_and_names_rejected => "unsubscribe \"\" (refused by event_core::subject::validate_consumer_name): expected Error::InvalidSubject, got Err(NotFound",
);
mutant!(
    /// The suite catches a closed durable subscription that keeps taking
    /// the durable's events.
    durable_close_keeps_delivering, Kind::DurableCloseKeepsDelivering,
    close_acks_and_ends_subscription => "durable: a closed subscription yields None",
);
mutant!(
    /// The suite catches `DeliverPolicy::Last` delivering everything.
    policy_last_as_all, Kind::PolicyLastAsAll,
    deliver_policy_last => "the stream's newest is on another category): after [0]: expected no delivery, got event n=1",
);
mutant!(
    /// The suite catches `DeliverPolicy::New` delivering stored events.
    policy_new_as_all, Kind::PolicyNewAsAll,
    deliver_policy_new => "durable subscription with DeliverPolicy::New, before anything new was published: expected no delivery, got event n=0",
);
mutant!(
    /// The suite catches `ByStartSequence` off by one.
    policy_by_start_sequence_off_by_one, Kind::PolicyByStartSequenceOffByOne,
    deliver_policy_by_start_sequence => "subscription with DeliverPolicy::ByStartSequence: expected 3 events, got [3, 4], then no event within",
);
mutant!(
    /// The suite catches `ByStartTime` ignored.
    policy_by_start_time_ignored, Kind::PolicyByStartTimeIgnored,
    deliver_policy_by_start_time => "not Event::timestamp): after [0, 1]: expected no delivery, got event n=2",
);
mutant!(
    /// The suite catches `LastPerSubject` treated as `Last`.
    policy_last_per_subject_as_last, Kind::PolicyLastPerSubjectAsLast,
    deliver_policy_last_per_subject => "subscription with DeliverPolicy::LastPerSubject: expected 2 events, got [4], then no event within",
);
mutant!(
    /// The suite catches ephemeral subscriptions ignoring the deliver policy.
    ephemeral_policy_ignored, Kind::EphemeralPolicyIgnored,
    deliver_policy_all => "ephemeral subscription with DeliverPolicy::All: expected 5 events, got [], then no event within",
);
mutant!(
    /// The suite catches `subscribe` (live) replaying stored events.
    ephemeral_new_replays, Kind::EphemeralNewReplays,
    deliver_policy_new => "ephemeral subscription with DeliverPolicy::New, before anything new was published: expected no delivery, got event n=0",
);
mutant!(
    /// The suite catches a `>` that also matches the bare prefix.
    tail_matches_parent, Kind::TailMatchesParent,
    wildcard_filtering_and_topic_isolation => "`wa.x.>` matches one or more tokens after `wa.x`",
);
mutant!(
    /// The suite catches a `*` that matches several tokens.
    star_matches_many, Kind::StarMatchesMany,
    wildcard_filtering_and_topic_isolation => "`wa.*` matches exactly one token",
);
mutant!(
    /// The suite catches events silently dropped from a subscription.
    drops_events, Kind::DropsEvents,
    ordering_of_1000_events => "live order",
);
mutant!(
    /// The suite catches a subscription that reorders events.
    reorders, Kind::Reorders,
    ordering_of_1000_events => "live order",
);
mutant!(
    /// The suite catches `max_ack_pending` ignored.
    max_ack_pending_ignored, Kind::MaxAckPendingIgnored,
    max_ack_pending_pauses_delivery => "max_ack_pending 2: a third delivery",
);
mutant!(
    /// The suite catches `backoff` ignored, by the ack wait the deliveries
    /// report.
    backoff_ignored, Kind::BackoffIgnored,
    backoff_spaces_redeliveries => "delivery 2 reports ack wait Some(300ms), but with backoff [300ms, 1.2s] it waits backoff[1] = 1.2s",
);
mutant!(
    /// The suite catches `backoff` ignored by the redelivery times alone,
    /// when no ack wait is reported.
    backoff_ignored_unreported, Kind::BackoffIgnoredUnreported,
    backoff_spaces_redeliveries => "before backoff[1] = 1.2s",
);
mutant!(
    /// The suite catches delivery n waiting `backoff[n]` (one step late) by
    /// the ack wait the deliveries report.
    backoff_off_by_one, Kind::BackoffOffByOne,
    backoff_spaces_redeliveries => "delivery 1 reports ack wait Some(1.2s), but with backoff [300ms, 1.2s] it waits backoff[0] = 300ms",
);
mutant!(
    /// The suite catches delivery n waiting `backoff[n]` (one step late) by
    /// the redelivery times alone, when no ack wait is reported.
    backoff_off_by_one_unreported, Kind::BackoffOffByOneUnreported,
    backoff_spaces_redeliveries => "later than backoff[0] = 300ms plus the slack 450ms",
);
mutant!(
    /// The suite catches a backoff whose last step does not repeat.
    backoff_last_step_not_repeated, Kind::BackoffLastStepNotRepeated,
    backoff_spaces_redeliveries => "before backoff[1], the last step repeating",
);
mutant!(
    /// The suite catches `Error::Lagged` swallowed (events dropped silently).
    lagged_swallowed, Kind::LaggedSwallowed,
    retention_overrun_reported_and_skipped => "events lost silently",
);

mutant!(
    /// The suite catches a changed ack wait silently ignored.
    changed_ack_wait_ignored, Kind::ChangedAckWaitIgnored,
    changed_durable_options_applied_or_refused => "the new ack_wait must be in effect",
);
mutant!(
    /// The suite catches a changed `max_ack_pending` silently ignored.
    changed_max_ack_pending_ignored, Kind::ChangedMaxAckPendingIgnored,
    changed_durable_options_applied_or_refused => "the new max_ack_pending must be in effect",
);
mutant!(
    /// The suite catches a changed deliver policy silently ignored.
    changed_deliver_policy_ignored, Kind::ChangedDeliverPolicyIgnored,
    changed_durable_options_applied_or_refused => "the new deliver policy must be in effect",
);
mutant!(
    /// The suite catches `Last` starting at the stream's last event
    /// whatever its subject.
    policy_last_ignores_filter, Kind::PolicyLastIgnoresFilter,
    deliver_policy_last => "DeliverPolicy::Last (the newest event matching",
);
mutant!(
    /// The suite catches `LastPerSubject` starting with subjects the
    /// filter does not match.
    policy_last_per_subject_ignores_filter, Kind::PolicyLastPerSubjectIgnoresFilter,
    deliver_policy_last_per_subject => "after [3, 4]: expected no delivery, got event n=99",
);
mutant!(
    /// The suite catches `ByStartTime` taken as a filter on storage times.
    policy_by_start_time_filters_storage_time, Kind::PolicyByStartTimeFiltersStorageTime,
    deliver_policy_by_start_time => "ByStartTime an hour ahead",
);
mutant!(
    /// The suite catches an exclusive `ByStartTime`.
    policy_by_start_time_exclusive, Kind::PolicyByStartTimeExclusive,
    deliver_policy_by_start_time_includes_its_millisecond => "the start is inclusive",
);
mutant!(
    /// The suite catches `ByStartTime` compared with the events' own
    /// timestamps.
    policy_by_start_time_by_event_timestamp, Kind::PolicyByStartTimeByEventTimestamp,
    deliver_policy_by_start_time => "ByStartTime compares the storage time",
);

// -------------------------------------------------------------------- info

mutant!(
    /// The suite catches a miscounted `info().messages`.
    info_messages_off_by_one, Kind::InfoMessagesOffByOne,
    info_counts => "an empty provider",
);
mutant!(
    /// The suite catches a `first_sequence` that is always 1.
    info_first_sequence_always_one, Kind::InfoFirstSequenceAlwaysOne,
    info_counts => "an empty provider",
    retention_overrun_reported_and_skipped => "info after retention",
);
mutant!(
    /// The suite catches ephemeral consumers missing from `info().consumers`.
    info_ignores_ephemeral_consumers, Kind::InfoIgnoresEphemeralConsumers,
    info_counts => "the durable and the ephemeral consumer are counted",
);
mutant!(
    /// The suite catches an `info().provider` that is not `name()`.
    info_provider_not_name, Kind::InfoProviderNotName,
    info_counts => "info().provider must be name()",
);
mutant!(
    /// The suite catches a constant `info().bytes`.
    info_bytes_constant, Kind::InfoBytesConstant,
    info_counts => "bytes grow with what is stored",
);
mutant!(
    /// The suite catches `bytes` that retention does not bring down.
    info_bytes_counts_removed, Kind::InfoBytesCountsRemoved,
    retention_overrun_reported_and_skipped => "the removed events' bytes must not be counted",
);
