//! The provider conformance suite.
//!
//! Every conforming [`EventProvider`] passes every test here. Each test is a
//! plain `pub async fn test_name(factory: &dyn ProviderFactory)` that panics
//! on failure; [`conformance_tests!`](crate::conformance_tests) expands to one
//! `#[tokio::test]` per test, so a provider crate runs the whole suite with
//! one macro call in a test file:
//!
//! ```ignore
//! use event_core::conformance::{Capabilities, ProviderFactory};
//!
//! struct Factory;
//!
//! #[async_trait::async_trait]
//! impl ProviderFactory for Factory {
//!     async fn create(&self) -> std::sync::Arc<dyn event_core::EventProvider> {
//!         std::sync::Arc::new(my_provider::MyProvider::new())
//!     }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities::default()
//!     }
//! }
//!
//! event_core::conformance_tests!(Factory);
//! ```
//!
//! The calling crate needs `tokio` (features `macros`, `rt-multi-thread`) as a
//! dev-dependency. Each test asks the factory for a fresh, empty provider.
//! A test that cannot apply to a provider is skipped only through an explicit
//! [`Capabilities`] flag (or, for the retention test, a factory that cannot
//! make a provider with a retention limit:
//! [`ProviderFactory::create_with_max_events`]), and the skip is printed.
//!
//! The suite is itself tested: `crates/event-memory/tests/conformance_catches.rs`
//! runs it against deliberately broken providers (one contract rule broken
//! each) and checks that it fails on every one.
//!
//! This module is test code shipped behind a feature: its `expect`s and
//! assertions are how a non-conforming provider is reported (as a failing
//! test), never reached in production paths.

use crate::{
    DeliverPolicy, Error, Event, EventProvider, PendingEvent, PublishOptions, ReceivedEvent,
    SubscribeOptions, Subscription,
};
use async_trait::async_trait;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a provider can do; tests that do not apply are skipped, visibly.
///
/// Fields may be added in minor releases: build it with
/// `..Capabilities::default()` so that your tests keep compiling.
///
/// ```
/// use event_core::conformance::Capabilities;
/// use std::time::Duration;
///
/// let caps = Capabilities {
///     max_payload: Some(256 * 1024),
///     ack_wait: Duration::from_millis(300),
///     ..Capabilities::default()
/// };
/// assert!(caps.reports_lagged);
/// ```
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// The provider's maximum encoded event size, for the payload-limit test.
    /// `None` skips that test.
    pub max_payload: Option<usize>,
    /// Ack wait used by the timing tests (redelivery, `in_progress`), and
    /// the unit of the durations the suite passes in options (backoff steps
    /// are multiples of it). Keep it short; it must be one the provider
    /// honours (a backend with whole-second timers sets whole seconds). A
    /// redelivery checked for lateness may come up to 1.5 × `ack_wait`
    /// after it is due.
    pub ack_wait: Duration,
    /// How long a test waits for an expected delivery before failing.
    pub receive_timeout: Duration,
    /// Whether a consumer that retention overtakes is told so with
    /// [`Error::Lagged`] (the trait's "Slow consumers" rule, "wherever the
    /// backend can tell"). JetStream skips removed messages without telling
    /// the consumer, so the NATS provider sets `false`; the retention test
    /// then checks only that the consumer skips nothing still stored.
    pub reports_lagged: bool,
    /// How far apart the clock that stamps stored events (the one
    /// `DeliverPolicy::ByStartTime` compares with) and the test machine's
    /// clock may be. [`deliver_policy_by_start_time`] takes its start time
    /// from the test machine ([`now_millis`](crate::now_millis)) and
    /// publishes this long before and after it, so a backend whose server
    /// clock is off by less than this still sees the events on the right
    /// sides. The default, 50 ms, suits a provider that stamps events with
    /// the test machine's clock (in-process, or a server on the same
    /// host); a backend that stamps with a remote server's clock (a Kafka
    /// broker, a database) sets the largest skew it must tolerate. It must
    /// exceed the backend's timestamp resolution.
    pub clock_tolerance: Duration,
    /// Whether the backend stamps stored events with the test machine's
    /// clock (an in-process provider, or a server on the same host), to the
    /// millisecond. [`deliver_policy_by_start_time_includes_its_millisecond`]
    /// then checks that `ByStartTime` is inclusive ("at or after"): an event
    /// stored within the very millisecond of the start time is delivered.
    /// That needs the two clocks to agree; a backend that stamps with
    /// another machine's clock sets `false`, which skips that test
    /// (visibly). Default `true`.
    pub stamps_with_test_clock: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            max_payload: Some(1024 * 1024),
            ack_wait: Duration::from_millis(500),
            receive_timeout: Duration::from_secs(10),
            reports_lagged: true,
            clock_tolerance: Duration::from_millis(50),
            stamps_with_test_clock: true,
        }
    }
}

/// Makes fresh, empty providers for the conformance tests.
#[async_trait]
pub trait ProviderFactory: Send + Sync {
    /// A new provider with an empty store and no consumers.
    async fn create(&self) -> Arc<dyn EventProvider>;

    /// The provider's capabilities.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// A new, empty provider as [`create`](Self::create) makes, except that
    /// it keeps at most `max_events` events and removes the oldest beyond
    /// that (retention); used by [`retention_overrun_reported_and_skipped`].
    /// `None`, the default, skips that test (visibly).
    async fn create_with_max_events(&self, max_events: usize) -> Option<Arc<dyn EventProvider>> {
        let _ = max_events;
        None
    }
}

/// Expands to one `#[tokio::test]` per conformance test, each calling
/// `event_core::conformance::<test>(&$factory)`.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            publish_subscribe_round_trip,
            wildcard_filtering_and_topic_isolation,
            wildcard_over_prefix_filters,
            ordering_of_1000_events,
            concurrent_publishers_lose_nothing,
            history_newest_first_with_limit_and_filter,
            durable_resumes_after_drop,
            durable_shared_by_two_subscriptions,
            shared_durable_settles_every_event_under_random_settlements,
            nak_redelivers,
            naked_event_does_not_hold_back_later_ones,
            nak_with_delay_redelivers_later,
            ack_timeout_redelivers,
            term_never_redelivers,
            max_deliver_stops_and_reports_final_delivery,
            unsettled_final_delivery_comes_once_more,
            in_progress_extends_ack_wait,
            auto_ack_never_loses_unfinished_event,
            auto_ack_acks_when_the_next_event_is_asked,
            cancelled_fetches_lose_nothing,
            cancelled_subscribe_and_close_leave_no_consumer,
            close_acks_and_ends_subscription,
            deliver_policy_all,
            deliver_policy_last,
            deliver_policy_new,
            deliver_policy_by_start_sequence,
            deliver_policy_by_start_sequence_beyond_the_end,
            deliver_policy_by_start_time,
            deliver_policy_by_start_time_includes_its_millisecond,
            deliver_policy_last_per_subject,
            max_ack_pending_pauses_delivery,
            backoff_spaces_redeliveries,
            retention_overrun_reported_and_skipped,
            msg_id_deduplicates,
            publish_outcome_reports_duplicates,
            unusable_msg_id_refused,
            expected_sequence_conflict,
            unsubscribe_deletes_durable,
            unsubscribe_ends_live_subscriptions,
            recreated_durable_does_not_feed_old_subscriptions,
            invalid_subscribe_options_refused,
            out_of_range_values_are_held_not_refused,
            changed_durable_options_applied_or_refused,
            changed_durable_filter_from_literal_to_wildcard,
            invalid_subjects_filters_and_names_rejected,
            payload_over_limit_rejected,
            payload_too_deep_rejected,
            info_counts,
            publish_batch_reports_each_result,
            publish_shared_follows_publish_contract,
            subscription_as_stream
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let factory = $factory;
                $crate::conformance::$name(&factory).await;
            }
        )*
    };
}

// ---------------------------------------------------------------- helpers

/// Prints a skip line straight to stderr: libtest captures `eprintln!` of
/// passing tests, which would hide it.
fn skip(test: &str, provider: &str, reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "conformance: SKIPPED {test} on {provider}: {reason}"
    );
}

fn event(p: &dyn EventProvider, category: &str, topic: &str, n: u64) -> Event {
    Event::new(
        p.build_subject(category, topic),
        category,
        format!("event {n}"),
        "conformance",
        json!({ "n": n }),
    )
}

fn n_of(e: &Event) -> u64 {
    e.payload["n"].as_u64().unwrap_or(u64::MAX)
}

async fn publish_n(
    p: &dyn EventProvider,
    category: &str,
    topic: &str,
    range: std::ops::Range<u64>,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    for n in range {
        seqs.push(
            p.publish(&event(p, category, topic, n))
                .await
                .expect("publish"),
        );
    }
    seqs
}

/// Waits for one auto-ack delivery; panics naming `what` (the step of the
/// test and the rule it checks) when none comes.
async fn recv(sub: &mut Box<dyn Subscription>, caps: &Capabilities, what: &str) -> ReceivedEvent {
    let got = tokio::time::timeout(caps.receive_timeout, sub.next()).await;
    match expected_delivery(got, caps) {
        Ok(received) => received,
        Err(failure) => panic!("{what}: {failure}"),
    }
}

/// Waits for one manual-ack delivery; panics naming `what` when none comes.
async fn recv_manual(
    sub: &mut Box<dyn Subscription>,
    caps: &Capabilities,
    what: &str,
) -> PendingEvent {
    match try_recv_manual(sub, caps).await {
        Ok(pending) => pending,
        Err(failure) => panic!("{what}: {failure}"),
    }
}

async fn try_recv_manual(
    sub: &mut Box<dyn Subscription>,
    caps: &Capabilities,
) -> Result<PendingEvent, String> {
    let got = tokio::time::timeout(caps.receive_timeout, sub.next_manual_ack()).await;
    expected_delivery(got, caps)
}

/// What went wrong when a delivery was expected, for the panic message.
fn expected_delivery<T>(
    got: Result<crate::Result<Option<T>>, tokio::time::error::Elapsed>,
    caps: &Capabilities,
) -> Result<T, String> {
    match got {
        Ok(Ok(Some(item))) => Ok(item),
        Ok(Ok(None)) => Err("subscription closed (Ok(None)) while an event was expected".into()),
        Ok(Err(e)) => Err(format!(
            "subscription error while an event was expected: {e}"
        )),
        Err(_) => Err(format!("no event within {:?}", caps.receive_timeout)),
    }
}

/// Checks that nothing is delivered for `wait`; panics naming `what`.
async fn expect_nothing_manual(sub: &mut Box<dyn Subscription>, wait: Duration, what: &str) {
    if let Ok(item) = tokio::time::timeout(wait, sub.next_manual_ack()).await {
        match item {
            Ok(Some(p)) => panic!(
                "{what}: expected no delivery, got event n={} (num_delivered {})",
                n_of(&p.received.event),
                p.received.num_delivered
            ),
            Ok(None) => panic!("{what}: subscription closed unexpectedly"),
            Err(e) => panic!("{what}: unexpected subscription error: {e}"),
        }
    }
}

/// How late after its due time a redelivery may come in the timing tests:
/// 1.5 × [`Capabilities::ack_wait`] (the backend's timers, the fetch that
/// carries the redelivery, a loaded machine). It is less than the spacing
/// the tests leave between steps that must not be confused.
fn redelivery_slack(caps: &Capabilities) -> Duration {
    caps.ack_wait + caps.ack_wait / 2
}

fn manual_opts(caps: &Capabilities) -> SubscribeOptions {
    SubscribeOptions {
        ack_wait: Some(caps.ack_wait),
        ..SubscribeOptions::default()
    }
}

fn assert_invalid_subject<T: std::fmt::Debug>(result: crate::Result<T>, what: &str) {
    match result {
        Err(Error::InvalidSubject { .. }) => {}
        other => panic!("{what}: expected Error::InvalidSubject, got {other:?}"),
    }
}

// ------------------------------------------------------------------ tests

/// A published event arrives with every field intact and its delivery
/// context, on a live subscription and read back from the store (replayed
/// to a durable created after the publish, in manual-ack mode, and from
/// `history`); the first publish on a fresh provider is sequence 1.
pub async fn publish_subscribe_round_trip(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe(&p.category_subject("rt"))
        .await
        .expect("subscribe");
    let sent = Event::typed(
        p.build_subject("rt", "forex.usd_cny"),
        "rt",
        "forex.rate_change",
        3,
        "USD/CNY broke 7.35 — ünïcödé ✓",
        "reuters",
        // a computed float that a JSON parser without exact float parsing
        // reads back one ULP off, and the extreme integers
        json!({
            "rate": 7.3521,
            "computed": 0.21291890726713458,
            "max": u64::MAX,
            "min": i64::MIN,
            "nested": {"list": [1, "two", null, true]}
        }),
    )
    .with_metadata("region", "asia")
    .with_metadata("odd key/with:chars", "v");
    let seq = p.publish(&sent).await.expect("publish");
    assert_eq!(
        seq, 1,
        "the first publish on a fresh provider: stream sequences start at 1 (the Contract, \
         \"Publish\")"
    );
    let got = recv(
        &mut sub,
        &caps,
        "the published event on a live subscription",
    )
    .await;
    assert_eq!(*got.event, sent, "event fields must round-trip exactly");
    assert_eq!(
        got.sequence, seq,
        "the delivery carries the publish sequence"
    );
    assert_eq!(got.num_delivered, 1, "first delivery");
    assert!(!got.stream.is_empty(), "stream name must be set");
    // read back from the store, not handed over live: every field intact too
    let mut durable = p
        .subscribe_durable("rt-replay", &p.category_subject("rt"))
        .await
        .expect("durable");
    let replayed = recv_manual(
        &mut durable,
        &caps,
        "the stored event, replayed to a durable created after the publish",
    )
    .await;
    assert_eq!(
        *replayed.received.event, sent,
        "a stored event replayed to a new durable must round-trip exactly (metadata, numbers \
         and all)"
    );
    assert_eq!(
        (replayed.received.sequence, replayed.received.num_delivered),
        (seq, 1),
        "the replayed delivery: (sequence, num_delivered)"
    );
    assert!(
        !replayed.received.stream.is_empty(),
        "stream name must be set on a manual-ack delivery too"
    );
    replayed.ack().await.expect("ack");
    assert_eq!(
        p.history(None, 1).await.expect("history"),
        vec![sent],
        "history must return the stored event exactly (metadata, numbers and all)"
    );
}

/// `*` matches one token, `>` one or more (never zero: `a.b.>` does not
/// match `a.b`); a literal filter matches only that subject (not one it is
/// a string prefix of), on subscriptions and in `history`; unrelated
/// subjects stay isolated.
pub async fn wildcard_filtering_and_topic_isolation(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let prefix = p.subject_prefix().to_string();
    let mut star = p
        .subscribe(&format!("{prefix}.wa.*"))
        .await
        .expect("subscribe *");
    let mut tail = p
        .subscribe(&format!("{prefix}.wa.>"))
        .await
        .expect("subscribe >");
    let mut mid = p
        .subscribe(&format!("{prefix}.*.x"))
        .await
        .expect("subscribe mid *");
    let mut exact = p
        .subscribe(&format!("{prefix}.wb.x"))
        .await
        .expect("subscribe exact");
    // `>` needs at least one more token: `wa.x.>` does not match `wa.x`
    let mut deep = p
        .subscribe(&format!("{prefix}.wa.x.>"))
        .await
        .expect("subscribe deep >");

    p.publish(&event(&*p, "wa", "x", 1)).await.expect("publish");
    p.publish(&event(&*p, "wa", "x.y", 2))
        .await
        .expect("publish");
    p.publish(&event(&*p, "wb", "x", 3)).await.expect("publish");
    p.publish(&event(&*p, "wb", "y", 4)).await.expect("publish");
    // a literal filter is a whole subject, not a string prefix: `wb.x`
    // matches neither `wb.xy` nor `wb.x.y`
    p.publish(&event(&*p, "wb", "xy", 5))
        .await
        .expect("publish");
    p.publish(&event(&*p, "wb", "x.y", 6))
        .await
        .expect("publish");
    // sentinels so that "nothing else arrived" is checked by order, not sleeps
    p.publish(&event(&*p, "wa", "end", 100))
        .await
        .expect("publish");
    p.publish(&event(&*p, "wb", "x", 101))
        .await
        .expect("publish");
    p.publish(&event(&*p, "wa", "x.end", 102))
        .await
        .expect("publish");

    let collect = async |sub: &mut Box<dyn Subscription>, filter: &str, sentinel: u64| {
        let mut seen = Vec::new();
        loop {
            let n = n_of(
                &recv(
                    sub,
                    &caps,
                    &format!("filter `{filter}`: the events up to the sentinel n={sentinel}"),
                )
                .await
                .event,
            );
            if n == sentinel {
                return seen;
            }
            seen.push(n);
        }
    };
    assert_eq!(
        collect(&mut star, "wa.*", 100).await,
        vec![1],
        "`wa.*` matches exactly one token"
    );
    assert_eq!(
        collect(&mut tail, "wa.>", 100).await,
        vec![1, 2],
        "`wa.>` matches one or more tokens"
    );
    assert_eq!(
        collect(&mut mid, "*.x", 101).await,
        vec![1, 3],
        "`*.x` matches any category"
    );
    assert_eq!(
        collect(&mut exact, "wb.x", 101).await,
        vec![3],
        "a literal filter matches only itself (not `wb.xy`, not `wb.x.y`)"
    );
    assert_eq!(
        collect(&mut deep, "wa.x.>", 102).await,
        vec![2],
        "`wa.x.>` matches one or more tokens after `wa.x`, not `wa.x` itself"
    );
    let literal = p.build_subject("wb", "x");
    assert_eq!(
        p.history(Some(&literal), 10)
            .await
            .expect("history")
            .iter()
            .map(n_of)
            .collect::<Vec<_>>(),
        vec![101, 3],
        "history(`{literal}`): a literal filter matches only itself (not `wb.xy`, not `wb.x.y`)"
    );
}

/// A wildcard may stand for the prefix token too (`*` is a whole token
/// anywhere, `>` may be the whole filter): `*.{category}.>`, `*.*.{topic}`
/// and `>` subscribe, ephemeral or durable, to what they match among the
/// provider's subjects, as `history` reads them.
pub async fn wildcard_over_prefix_filters(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let all = SubscribeOptions::default();
    let mut category = p
        .subscribe_with_options("*.wpa.>", &all)
        .await
        .expect("subscribe `*.wpa.>`");
    let mut topic = p
        .subscribe_durable_with_options("wildcard_prefix", "*.*.wpt", &all)
        .await
        .expect("subscribe durable `*.*.wpt`");
    let mut everything = p
        .subscribe_with_options(">", &all)
        .await
        .expect("subscribe `>`");
    p.publish(&event(&*p, "wpa", "x", 1))
        .await
        .expect("publish");
    p.publish(&event(&*p, "wpb", "wpt", 2))
        .await
        .expect("publish");
    p.publish(&event(&*p, "wpa", "wpt", 3))
        .await
        .expect("publish");
    let take = async |sub: &mut Box<dyn Subscription>, filter: &str, count: usize| {
        let mut seen = Vec::new();
        for _ in 0..count {
            let what = format!("filter `{filter}`: event {} of {count}", seen.len() + 1);
            seen.push(n_of(&recv(sub, &caps, &what).await.event));
        }
        seen
    };
    assert_eq!(take(&mut category, "*.wpa.>", 2).await, vec![1, 3]);
    assert_eq!(take(&mut topic, "*.*.wpt", 2).await, vec![2, 3]);
    assert_eq!(take(&mut everything, ">", 3).await, vec![1, 2, 3]);
    let history = p
        .history(Some("*.wpa.>"), 10)
        .await
        .expect("history `*.wpa.>`");
    assert_eq!(history.iter().map(n_of).collect::<Vec<_>>(), vec![3, 1]);
}

/// 1,000 events arrive in publish order with strictly increasing sequences.
pub async fn ordering_of_1000_events(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut live = p
        .subscribe(&p.category_subject("ord"))
        .await
        .expect("subscribe");
    let seqs = publish_n(&*p, "ord", "t", 0..1000).await;
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "publish sequences must increase"
    );
    let mut durable = p
        .subscribe_durable("ord-durable", &p.category_subject("ord"))
        .await
        .expect("durable");
    for (i, seq) in seqs.iter().enumerate() {
        let a = recv(
            &mut live,
            &caps,
            &format!("live subscription: event {i} of 1000"),
        )
        .await;
        assert_eq!((n_of(&a.event), a.sequence), (i as u64, *seq), "live order");
        let b = recv(&mut durable, &caps, &format!("durable: event {i} of 1000")).await;
        assert_eq!(
            (n_of(&b.event), b.sequence),
            (i as u64, *seq),
            "durable order"
        );
    }
}

/// 50 concurrent publishers × 100 events: none lost, sequences unique.
pub async fn concurrent_publishers_lose_nothing(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..100u64 {
                let e = event(&*p, "conc", &format!("p{t}"), t * 1000 + i);
                seqs.push(p.publish(&e).await.expect("publish"));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.expect("publisher task");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one publisher's sequences increase"
        );
        all.extend(seqs);
    }
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), 5000, "every publish gets a unique sequence");

    let mut sub = p
        .subscribe_durable("conc-reader", &p.category_subject("conc"))
        .await
        .expect("durable");
    let mut last = 0;
    let mut seen = HashSet::new();
    for _ in 0..5000 {
        let r = recv(
            &mut sub,
            &caps,
            &format!(
                "durable: every concurrently published event (got {} of 5000)",
                seen.len()
            ),
        )
        .await;
        assert!(r.sequence > last, "delivery sequences increase");
        last = r.sequence;
        seen.insert(n_of(&r.event));
    }
    assert_eq!(seen.len(), 5000, "every event delivered once");
}

/// `history` returns the newest matching events, newest first, up to `limit`.
pub async fn history_newest_first_with_limit_and_filter(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    for n in 0..30 {
        let cat = if n % 3 == 0 { "ha" } else { "hb" };
        p.publish(&event(&*p, cat, "t", n)).await.expect("publish");
    }
    let all = p.history(None, 100).await.expect("history");
    assert_eq!(
        all.iter().map(n_of).collect::<Vec<_>>(),
        (0..30).rev().collect::<Vec<_>>(),
        "history(None, 100): every event, newest first"
    );
    let ha = p
        .history(Some(&p.category_subject("ha")), 4)
        .await
        .expect("history");
    assert_eq!(
        ha.iter().map(n_of).collect::<Vec<_>>(),
        vec![27, 24, 21, 18],
        "history(category, 4): the newest 4 matching events, newest first"
    );
    let hb = p
        .history(Some(&p.category_subject("hb")), 1000)
        .await
        .expect("history");
    assert_eq!(hb.len(), 20, "a limit above the matches returns them all");
    assert!(
        p.history(Some(&p.category_subject("none")), 10)
            .await
            .expect("history")
            .is_empty()
    );
    assert!(
        p.history(None, 0).await.expect("history").is_empty(),
        "limit 0 returns nothing"
    );
    // callers ask for "everything" this way; sizing a buffer by the limit
    // must not overflow
    match p.history(None, usize::MAX).await {
        Ok(all) => assert_eq!(all.len(), 30, "history(None, usize::MAX): every event"),
        Err(e) => panic!("history(None, usize::MAX) (everything): {e}"),
    }
    assert_invalid_subject(
        p.history(Some("bad..filter"), 10).await,
        "history with a bad filter",
    );
    // the shared form returns the same events in the same order
    for (filter, limit) in [(None, 100), (Some(p.category_subject("ha")), 4)] {
        let owned = p.history(filter.as_deref(), limit).await.expect("history");
        let shared = p
            .history_shared(filter.as_deref(), limit)
            .await
            .expect("history_shared");
        assert_eq!(
            shared.iter().map(|e| (**e).clone()).collect::<Vec<_>>(),
            owned,
            "history_shared({filter:?}, {limit}) differs from history"
        );
    }
    assert!(
        p.history_shared(None, 0)
            .await
            .expect("history_shared")
            .is_empty()
    );
    assert_invalid_subject(
        p.history_shared(Some("bad..filter"), 10).await,
        "history_shared with a bad filter",
    );
}

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
/// than the backend's timers is rounded up, never down).
pub async fn nak_with_delay_redelivers_later(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(30)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("nakd", &p.category_subject("nakd"), &opts)
        .await
        .expect("durable");
    publish_n(&*p, "nakd", "t", 0..1).await;
    let first = recv_manual(&mut sub, &caps, "the first delivery").await;
    // not a whole number of ack waits (nor, with the usual ack waits, of
    // seconds): a provider that rounds the delay down redelivers early
    let delay = caps.ack_wait * 5 / 2;
    let started = Instant::now();
    first.nak_with_delay(delay).await.expect("nak_with_delay");
    let again = recv_manual(
        &mut sub,
        &caps,
        &format!("the redelivery after nak_with_delay({delay:?})"),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed + Duration::from_millis(50) >= delay,
        "redelivered after {elapsed:?}, before the {delay:?} delay (a nak delay means \
         \"not before\": one the backend cannot express exactly is rounded up, never down)"
    );
    assert_eq!(again.received.num_delivered, 2);
    again.ack().await.expect("ack");
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

/// An event not acknowledged within `ack_wait` is redelivered.
pub async fn ack_timeout_redelivers(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe_durable_with_options("aw", &p.category_subject("aw"), &manual_opts(&caps))
        .await
        .expect("durable");
    publish_n(&*p, "aw", "t", 0..1).await;
    let started = Instant::now();
    let first = recv_manual(&mut sub, &caps, "the first delivery").await;
    let seq = first.received.sequence;
    // a provider that reports the wait reports the one it applies
    assert!(
        first.ack_wait().is_none_or(|w| w == caps.ack_wait),
        "reported ack wait {:?}, subscribed with {:?}",
        first.ack_wait(),
        caps.ack_wait
    );
    drop(first); // neither acked nor naked
    let again = recv_manual(
        &mut sub,
        &caps,
        &format!(
            "the redelivery after the ack wait expired ({:?}, the delivery dropped unsettled)",
            caps.ack_wait
        ),
    )
    .await;
    assert!(
        started.elapsed() + Duration::from_millis(50) >= caps.ack_wait,
        "redelivered before ack_wait"
    );
    assert_eq!(again.received.sequence, seq);
    assert_eq!(again.received.num_delivered, 2);
    assert!(again.ack_wait().is_none_or(|w| w == caps.ack_wait));
    again.ack().await.expect("ack");
}

/// `term` stops delivery for good.
pub async fn term_never_redelivers(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe_durable_with_options("term", &p.category_subject("term"), &manual_opts(&caps))
        .await
        .expect("durable");
    publish_n(&*p, "term", "t", 0..2).await;
    let first = recv_manual(&mut sub, &caps, "event 0").await;
    assert_eq!(n_of(&first.received.event), 0);
    first.term().await.expect("term");
    let second = recv_manual(&mut sub, &caps, "event 1, after event 0 was terminated").await;
    assert_eq!(
        n_of(&second.received.event),
        1,
        "a terminated event is not redelivered"
    );
    second.ack().await.expect("ack");
    expect_nothing_manual(
        &mut sub,
        caps.ack_wait * 3,
        "after term and ack: a terminated event is not redelivered",
    )
    .await;
}

/// After `max_deliver` deliveries the event stops; its last delivery says so.
/// A nak of the final delivery (with or without a delay) ends the event.
pub async fn max_deliver_stops_and_reports_final_delivery(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions {
        max_deliver: Some(3),
        ..manual_opts(&caps)
    };
    let mut sub = p
        .subscribe_durable_with_options("maxd", &p.category_subject("maxd"), &opts)
        .await
        .expect("durable");
    publish_n(&*p, "maxd", "t", 0..1).await;
    for attempt in 1..=3 {
        let pending = recv_manual(
            &mut sub,
            &caps,
            &format!(
                "event 0, delivery {attempt} of max_deliver 3 (after a nak or an expired ack wait)"
            ),
        )
        .await;
        assert_eq!(n_of(&pending.received.event), 0);
        assert_eq!(
            pending.received.num_delivered, attempt,
            "num_delivered counts every delivery"
        );
        assert_eq!(pending.max_deliver(), Some(3));
        assert_eq!(
            pending.is_final_delivery(),
            attempt == 3,
            "final flag on attempt {attempt}"
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
        "event 0 naked on its 3rd delivery: max_deliver 3 stops it",
    )
    .await;
    // the consumer keeps going with later events
    publish_n(&*p, "maxd", "t", 1..2).await;
    let next = recv_manual(
        &mut sub,
        &caps,
        "event 1, published after event 0 was exhausted: the consumer keeps going",
    )
    .await;
    assert_eq!(n_of(&next.received.event), 1);
    next.ack().await.expect("ack");
    // a delayed nak of the final delivery ends it as well
    publish_n(&*p, "maxd", "t", 2..3).await;
    for attempt in 1..=3 {
        let pending = recv_manual(
            &mut sub,
            &caps,
            &format!("event 2, delivery {attempt} of max_deliver 3 (naked with a delay)"),
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
        "event 2 naked with a delay on its 3rd delivery: max_deliver 3 stops it",
    )
    .await;
}

/// A final delivery left unsettled (its holder crashed, dropped it, or
/// stalled past the ack wait) was never reported: it comes once more,
/// numbered `max_deliver + 1` and still final, so the event reaches a
/// dead-letter queue instead of vanishing. When that spare delivery is not
/// settled either, the event ends.
pub async fn unsettled_final_delivery_comes_once_more(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions {
        max_deliver: Some(2),
        ..manual_opts(&caps)
    };
    let mut sub = p
        .subscribe_durable_with_options("spare", &p.category_subject("spare"), &opts)
        .await
        .expect("durable");
    publish_n(&*p, "spare", "t", 0..1).await;
    for attempt in 1..=3 {
        let pending = recv_manual(
            &mut sub,
            &caps,
            &format!(
                "event 0, delivery {attempt} of max_deliver 2, each left unsettled (delivery 3 \
                 is the spare of an unsettled final delivery)"
            ),
        )
        .await;
        assert_eq!(n_of(&pending.received.event), 0);
        assert_eq!(pending.received.num_delivered, attempt);
        assert_eq!(pending.max_deliver(), Some(2));
        assert_eq!(
            pending.is_final_delivery(),
            attempt >= 2,
            "final flag on delivery {attempt} of max_deliver 2"
        );
        drop(pending); // ack timeout
    }
    expect_nothing_manual(
        &mut sub,
        caps.ack_wait * 3,
        "event 0's spare delivery (3 of max_deliver 2) left unsettled too: the event ends",
    )
    .await;
    // settled, the spare ends the event as any delivery does
    publish_n(&*p, "spare", "t", 1..2).await;
    for attempt in 1..=3 {
        let pending = recv_manual(
            &mut sub,
            &caps,
            &format!("event 1, delivery {attempt} of max_deliver 2"),
        )
        .await;
        assert_eq!(n_of(&pending.received.event), 1);
        assert_eq!(pending.received.num_delivered, attempt);
        if attempt < 3 {
            drop(pending);
        } else {
            pending.term().await.expect("term the spare delivery");
        }
    }
    expect_nothing_manual(
        &mut sub,
        caps.ack_wait * 3,
        "event 1's spare delivery was terminated: the event ends",
    )
    .await;
}

/// `in_progress` restarts the ack timer.
pub async fn in_progress_extends_ack_wait(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe_durable_with_options("prog", &p.category_subject("prog"), &manual_opts(&caps))
        .await
        .expect("durable");
    publish_n(&*p, "prog", "t", 0..1).await;
    let pending = recv_manual(&mut sub, &caps, "the first delivery").await;
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
        "redelivered although in_progress kept extending the wait"
    );
    pending.ack().await.expect("ack");
    expect_nothing_manual(&mut sub, caps.ack_wait * 2, "after in_progress then ack").await;
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

/// A fetch dropped before it completes (a `select!` branch that lost, a
/// `timeout`) loses and skips nothing: every event still arrives, in order,
/// on its first delivery, not after an ack wait. Half the fetches are
/// dropped right after their first poll, half after a window that doubles
/// from 1 ms to 32 ms and starts over (so a provider whose fetch needs a
/// round trip of a few milliseconds completes some and makes progress).
pub async fn cancelled_fetches_lose_nothing(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let filter = p.category_subject("cancel");
    let opts = SubscribeOptions {
        // a lost delivery would come back only after this
        ack_wait: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    };
    let mut durable = p
        .subscribe_durable_with_options("cancel", &filter, &opts)
        .await
        .expect("durable");
    let mut live = p.subscribe(&filter).await.expect("subscribe");
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
    let (mut manual, mut auto) = (Vec::new(), Vec::new());
    let mut round = 0u32;
    while (manual.len() < 100 || auto.len() < 100) && Instant::now() < deadline {
        // every other round drops the fetch at its first await (a zero
        // `timeout` would not: tokio rounds its deadline up to the next
        // millisecond tick, so the fetch may run past several awaits first)
        round += 1;
        let first_poll_only = round.is_multiple_of(2);
        let window = Duration::from_millis(1 << ((round / 2) % 6));
        if manual.len() < 100
            && let Some(item) =
                fetch_or_cancel(durable.next_manual_ack(), first_poll_only, window).await
        {
            let pending = item.expect("delivery").expect("subscription open");
            manual.push((
                n_of(&pending.received.event),
                pending.received.num_delivered,
            ));
            pending.ack().await.expect("ack");
        }
        if auto.len() < 100
            && let Some(item) = fetch_or_cancel(live.next(), first_poll_only, window).await
        {
            let received = item.expect("delivery").expect("subscription open");
            auto.push((n_of(&received.event), received.num_delivered));
        }
    }
    publisher.await.expect("publisher");
    let expected: Vec<(u64, u64)> = (0..100).map(|n| (n, 1)).collect();
    for (mode, got) in [("manual-ack", &manual), ("auto-ack", &auto)] {
        if *got != expected {
            let missing: Vec<_> = expected.iter().filter(|e| !got.contains(e)).collect();
            let unexpected: Vec<_> = got.iter().filter(|g| !expected.contains(g)).collect();
            panic!(
                "{mode} fetches dropped mid-way: a fetch cancelled at an await must not take \
                 an event it does not return; missing (n, num_delivered): {missing:?}, \
                 unexpected: {unexpected:?}, received in this order: {got:?} (within the \
                 receive timeout {:?}, half the fetches dropped after their first poll, half \
                 after 1 to 32 ms)",
                caps.receive_timeout
            );
        }
    }
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

/// `close` acknowledges and ends the subscription with `Ok(None)`.
pub async fn close_acks_and_ends_subscription(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe(&p.category_subject("close"))
        .await
        .expect("subscribe");
    publish_n(&*p, "close", "t", 0..1).await;
    recv(&mut sub, &caps, "the published event").await;
    sub.close().await.expect("close");
    let after = tokio::time::timeout(caps.receive_timeout, sub.next()).await;
    assert!(
        matches!(after, Ok(Ok(None))),
        "a closed subscription yields None, got {after:?}"
    );
}

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

/// Receives and acks `count` events, then checks that nothing more comes;
/// returns their `n`s. Panics naming `what` and what arrived so far.
async fn drain_ns(
    sub: &mut Box<dyn Subscription>,
    caps: &Capabilities,
    count: usize,
    what: &str,
) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..count {
        match try_recv_manual(sub, caps).await {
            Ok(pending) => {
                out.push(n_of(&pending.received.event));
                pending.ack().await.expect("ack");
            }
            Err(failure) => panic!("{what}: expected {count} events, got {out:?}, then {failure}"),
        }
    }
    expect_nothing_manual(sub, caps.ack_wait, &format!("{what}: after {out:?}")).await;
    out
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
/// delivered (durable and ephemeral).
pub async fn deliver_policy_by_start_sequence_beyond_the_end(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let seqs = policy_fixture(&*p).await;
    let start = seqs[4] + 3;
    let policy = DeliverPolicy::ByStartSequence { sequence: start };
    let mut subs = policy_subs(&*p, "pol-beyond", policy).await;
    // sequences seqs[4]+1 ..= seqs[4]+4: the first two are before the start
    for n in 5..9 {
        p.publish(&event(&*p, "pol", "x", n))
            .await
            .expect("publish");
    }
    for (kind, sub) in &mut subs {
        assert_eq!(
            drain_ns(
                sub,
                &caps,
                2,
                &format!(
                    "{kind} subscription with DeliverPolicy::ByStartSequence {start} beyond the end"
                )
            )
            .await,
            vec![7, 8],
            "{kind} subscription with DeliverPolicy::ByStartSequence {start}: nothing before it"
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
/// subject, then new ones (durable and ephemeral).
pub async fn deliver_policy_last_per_subject(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    policy_fixture(&*p).await;
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
            "{kind} subscription with DeliverPolicy::LastPerSubject"
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
/// pauses at the limit and resumes when one is settled.
pub async fn max_ack_pending_pauses_delivery(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let opts = SubscribeOptions {
        max_ack_pending: Some(2),
        // nothing is redelivered while the test runs
        ack_wait: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    };
    let mut sub = p
        .subscribe_durable_with_options("map", &p.category_subject("map"), &opts)
        .await
        .expect("durable");
    publish_n(&*p, "map", "t", 0..4).await;
    let a = recv_manual(&mut sub, &caps, "max_ack_pending 2: the first delivery").await;
    let b = recv_manual(&mut sub, &caps, "max_ack_pending 2: the second delivery").await;
    assert_eq!((n_of(&a.received.event), n_of(&b.received.event)), (0, 1));
    if let Ok(item) = tokio::time::timeout(caps.ack_wait, sub.next_manual_ack()).await {
        panic!("max_ack_pending 2: a third delivery while two await settlement: {item:?}");
    }
    a.ack().await.expect("ack");
    let c = recv_manual(
        &mut sub,
        &caps,
        "max_ack_pending 2: delivery resumes after an ack",
    )
    .await;
    assert_eq!(n_of(&c.received.event), 2, "delivery resumes after an ack");
    if let Ok(item) = tokio::time::timeout(caps.ack_wait, sub.next_manual_ack()).await {
        panic!("max_ack_pending 2: a third delivery while two await settlement: {item:?}");
    }
    b.ack().await.expect("ack");
    c.ack().await.expect("ack");
    let d = recv_manual(
        &mut sub,
        &caps,
        "max_ack_pending 2: the 4th event, after every delivery was acked",
    )
    .await;
    assert_eq!(n_of(&d.received.event), 3);
    d.ack().await.expect("ack");
}

/// `backoff` spaces the redeliveries after ack timeouts: the n-th delivery
/// waits `backoff[n-1]` (the last entry repeats), so the first redelivery
/// comes `backoff[0]` after the first delivery and the second `backoff[1]`
/// after the first redelivery, not a flat `ack_wait`. Each comes no earlier
/// than its step and no later than its step plus a slack of 1.5 ×
/// [`Capabilities::ack_wait`] (a provider off by one step, waiting
/// `backoff[n]` after delivery n, is late by `backoff[1] - backoff[0]`,
/// 3 × `ack_wait`), and a delivery that reports its ack wait
/// ([`PendingEvent::ack_wait`]) reports the step it waits.
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
    let mut sub = p
        .subscribe_durable_with_options("backoff", &p.category_subject("backoff"), &opts)
        .await
        .expect("durable");
    publish_n(&*p, "backoff", "t", 0..1).await;
    // (delivery number, the step it waits, what that step is)
    let steps = [
        (1, short, "backoff[0]"),
        (2, long, "backoff[1]"),
        (3, long, "backoff[1], the last step repeating"),
    ];
    let mut pending = recv_manual(&mut sub, &caps, "the first delivery").await;
    let mut delivered = Instant::now();
    for window in steps.windows(2) {
        let [(n, wait, step), (next, ..)] = window else {
            unreachable!("windows(2)")
        };
        assert_eq!(pending.received.num_delivered, *n);
        assert!(
            pending.ack_wait().is_none_or(|w| w == *wait),
            "delivery {n} reports ack wait {:?}, but with backoff {:?} it waits {step} = \
             {wait:?} (delivery n waits backoff[n-1])",
            pending.ack_wait(),
            opts.backoff
        );
        drop(pending); // ack timeout
        pending = recv_manual(
            &mut sub,
            &caps,
            &format!("redelivery {next}, {step} = {wait:?} after delivery {n}"),
        )
        .await;
        let waited = delivered.elapsed();
        delivered = Instant::now();
        assert_eq!(pending.received.num_delivered, *next);
        assert!(
            waited + Duration::from_millis(50) >= *wait,
            "delivery {next} came {waited:?} after delivery {n}, before {step} = {wait:?}"
        );
        assert!(
            waited <= *wait + slack,
            "delivery {next} came {waited:?} after delivery {n}, later than {step} = {wait:?} \
             plus the slack {slack:?} (1.5 x Capabilities::ack_wait): delivery n waits \
             backoff[n-1] (a provider that waits backoff[n] is off by one step)"
        );
    }
    let (n, wait, step) = steps[2];
    assert!(
        pending.ack_wait().is_none_or(|w| w == wait),
        "delivery {n} reports ack wait {:?}, but with backoff {:?} it waits {step} = {wait:?}",
        pending.ack_wait(),
        opts.backoff
    );
    pending.ack().await.expect("ack");
}

/// When retention removes events a consumer has not read yet, the consumer
/// continues with the oldest stored event: it skips nothing still stored,
/// and (where the backend can tell, [`Capabilities::reports_lagged`]) it
/// first reports [`Error::Lagged`] with the number it missed, so nothing is
/// lost silently. `info` and `history` see only the retained events.
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
    let seqs = publish_n(&*p, "ret", "t", 0..30).await;
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

/// A repeated dedup id returns the first sequence and stores nothing, on
/// any subject: dedup is per stream, not per subject.
pub async fn msg_id_deduplicates(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let e = event(&*p, "dup", "t", 1);
    let first = p.publish(&e).await.expect("publish");
    let again = p.publish(&e).await.expect("republish");
    assert_eq!(first, again, "same event id: same sequence");
    let opts = PublishOptions {
        msg_id: Some("order-42".into()),
        ..PublishOptions::default()
    };
    let a = p
        .publish_with_options(&event(&*p, "dup", "t", 2), &opts)
        .await
        .expect("publish");
    let b = p
        .publish_with_options(&event(&*p, "dup", "t", 3), &opts)
        .await
        .expect("publish");
    assert_eq!(a, b, "same msg id: same sequence");
    let c = p
        .publish_with_options(&event(&*p, "dup", "other", 4), &opts)
        .await
        .expect("publish");
    assert_eq!(
        a, c,
        "same msg id on another subject: same sequence (dedup is per stream)"
    );
    let mut moved = e.clone();
    moved.subject = p.build_subject("dup", "elsewhere");
    assert_eq!(
        p.publish(&moved).await.expect("republish"),
        first,
        "same event id on another subject: same sequence (dedup is per stream)"
    );
    let history = p
        .history(Some(&p.category_subject("dup")), 10)
        .await
        .expect("history");
    assert_eq!(
        history.iter().map(n_of).collect::<Vec<_>>(),
        vec![2, 1],
        "duplicates stored nothing"
    );
    assert_eq!(p.info().await.expect("info").messages, 2);
}

/// [`EventProvider::publish_shared_with_outcome`] tells a stored event from
/// a duplicate, when the provider says at all: the first publish of a dedup
/// id is stored, a repeat inside the window is a duplicate with the first
/// sequence. A provider that does not say (the trait's default, `None`)
/// says so for both. Its [`PublishOptions`] count as in
/// `publish_with_options`: a repeated `msg_id` is a duplicate, a stale
/// `expected_sequence` is `WrongLastSequence`.
pub async fn publish_outcome_reports_duplicates(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let e = Arc::new(event(&*p, "outcome", "t", 1));
    let opts = PublishOptions::default();
    let first = p
        .publish_shared_with_outcome(Arc::clone(&e), &opts)
        .await
        .expect("publish");
    let again = p
        .publish_shared_with_outcome(Arc::clone(&e), &opts)
        .await
        .expect("republish");
    assert_eq!(
        first.sequence, again.sequence,
        "a duplicate: the first sequence"
    );
    match (first.duplicate, again.duplicate) {
        (None, None) => println!(
            "conformance: {} does not say whether a publish was a duplicate \
             (publish_shared_with_outcome returns None); the bus then routes every repeat",
            p.name()
        ),
        (Some(false), Some(true)) => {}
        other => panic!(
            "publish_shared_with_outcome: the first publish must be stored (Some(false)) and \
             its repeat a duplicate (Some(true)), or both None; got {other:?}"
        ),
    }
    // A plain publish of the same id is a duplicate too, and a new id is not.
    let plain = p.publish(&e).await.expect("publish");
    assert_eq!(plain, first.sequence);
    let other = p
        .publish_shared_with_outcome(Arc::new(event(&*p, "outcome", "t", 2)), &opts)
        .await
        .expect("publish");
    assert!(other.sequence > first.sequence);
    if first.duplicate.is_some() {
        assert_eq!(other.duplicate, Some(false), "a new dedup id is stored");
    }
    assert_eq!(p.info().await.expect("info").messages, 2);
    // the options count as in publish_with_options: the dedup id ...
    let by_id = PublishOptions {
        msg_id: Some("outcome-key".into()),
        ..PublishOptions::default()
    };
    let keyed = p
        .publish_shared_with_outcome(Arc::new(event(&*p, "outcome", "t", 3)), &by_id)
        .await
        .expect("publish");
    let rekeyed = p
        .publish_shared_with_outcome(Arc::new(event(&*p, "outcome", "t", 4)), &by_id)
        .await
        .expect("publish");
    assert_eq!(
        keyed.sequence, rekeyed.sequence,
        "publish_shared_with_outcome of two events with the same PublishOptions::msg_id: the \
         repeat must return the first one's sequence (the options count as in \
         publish_with_options)"
    );
    if keyed.duplicate.is_some() {
        assert_eq!(
            (keyed.duplicate, rekeyed.duplicate),
            (Some(false), Some(true)),
            "publish_shared_with_outcome with a repeated PublishOptions::msg_id: (first, repeat)"
        );
    }
    // ... and the expected sequence
    let stale = PublishOptions {
        expected_sequence: Some(first.sequence),
        ..PublishOptions::default()
    };
    match p
        .publish_shared_with_outcome(Arc::new(event(&*p, "outcome", "t", 5)), &stale)
        .await
    {
        Err(Error::WrongLastSequence { expected, .. }) => assert_eq!(expected, first.sequence),
        other => panic!(
            "publish_shared_with_outcome with a stale PublishOptions::expected_sequence: \
             expected WrongLastSequence (the options count as in publish_with_options), got \
             {other:?}"
        ),
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        3,
        "the repeated msg_id and the conflict stored nothing"
    );
}

/// An empty dedup id (or one with control characters) is refused before
/// sending, as JetStream refuses it; it never becomes one dedup key that
/// silently swallows every later publish using it.
pub async fn unusable_msg_id_refused(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    for id in ["", "a\r\nb", "\u{0}"] {
        let opts = PublishOptions {
            msg_id: Some(id.to_string()),
            ..PublishOptions::default()
        };
        for n in 0..2 {
            match p
                .publish_with_options(&event(&*p, "badid", "t", n), &opts)
                .await
            {
                Err(Error::InvalidConfig { .. }) => {}
                other => panic!("msg_id {id:?}: expected InvalidConfig, got {other:?}"),
            }
        }
    }
    let mut e = event(&*p, "badid", "t", 9);
    e.id = String::new();
    match p.publish(&e).await {
        Err(Error::InvalidConfig { .. }) => {}
        other => panic!("empty event id as dedup id: expected InvalidConfig, got {other:?}"),
    }
    assert_eq!(p.info().await.expect("info").messages, 0, "nothing stored");
}

/// `expected_sequence` publishes only on the expected last sequence, the
/// stream's (any subject's), not the last one of the event's subject.
pub async fn expected_sequence_conflict(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let s1 = p
        .publish(&event(&*p, "exp", "t", 1))
        .await
        .expect("publish");
    let ok = PublishOptions {
        expected_sequence: Some(s1),
        ..PublishOptions::default()
    };
    let s2 = p
        .publish_with_options(&event(&*p, "exp", "t", 2), &ok)
        .await
        .expect("expected matches");
    assert!(s2 > s1);
    let stale = PublishOptions {
        expected_sequence: Some(s1),
        ..PublishOptions::default()
    };
    match p
        .publish_with_options(&event(&*p, "exp", "t", 3), &stale)
        .await
    {
        Err(Error::WrongLastSequence { expected, .. }) => assert_eq!(expected, s1),
        other => panic!("expected WrongLastSequence, got {other:?}"),
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        2,
        "the conflicting event was not stored"
    );
    // the stream's last sequence, whatever subject it was published on
    let s3 = p
        .publish(&event(&*p, "exp", "other", 4))
        .await
        .expect("publish");
    let subject_last = PublishOptions {
        expected_sequence: Some(s2),
        ..PublishOptions::default()
    };
    match p
        .publish_with_options(&event(&*p, "exp", "t", 5), &subject_last)
        .await
    {
        Err(Error::WrongLastSequence { expected, .. }) => assert_eq!(expected, s2),
        other => panic!(
            "expected_sequence {s2}, the last sequence of the event's subject, while the \
             stream's last is {s3} (on another subject): expected WrongLastSequence \
             (expected_sequence is the stream's last sequence, not the subject's), got \
             {other:?}"
        ),
    }
    let stream_last = PublishOptions {
        expected_sequence: Some(s3),
        ..PublishOptions::default()
    };
    let s4 = p
        .publish_with_options(&event(&*p, "exp", "t", 6), &stream_last)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "expected_sequence {s3}, the stream's last sequence (published on another \
                 subject): expected the publish to succeed, got {e}"
            )
        });
    assert!(s4 > s3);
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

/// Resubscribing a durable with different options (filter, `max_deliver`,
/// `ack_wait`) applies them or refuses with `Conflict`; it never silently
/// keeps the old ones.
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

/// Bad subjects, filters and consumer names (every name
/// [`validate_consumer_name`](crate::subject::validate_consumer_name)
/// refuses) are `InvalidSubject`, before I/O, and so is a filter that
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
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        0,
        "nothing was stored"
    );
}

/// An event whose encoded size is over the provider's limit is
/// `PayloadTooLarge` and not stored, even when its payload alone is under
/// the limit; an event of exactly the limit is accepted ("exceeds" is
/// strict), and a refusal reports a size over the limit.
pub async fn payload_over_limit_rejected(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let Some(max) = caps.max_payload else {
        skip(
            "payload_over_limit_rejected",
            p.name(),
            "capabilities.max_payload is None",
        );
        return;
    };
    let mut e = event(&*p, "big", "t", 0);
    e.payload = json!({ "blob": "x".repeat(max + 1) });
    match p.publish(&e).await {
        Err(Error::PayloadTooLarge { size, max: limit }) => {
            assert!(size > limit);
        }
        other => panic!(
            "expected PayloadTooLarge, got {other:?}: the event's payload alone is over \
             Capabilities::max_payload ({max} bytes); set it to the provider's real limit (or \
             None, to skip the payload-limit checks)"
        ),
    }
    // the limit applies to the encoded event, not to the payload alone: a
    // payload just under it leaves no room for the id, subject and the rest
    let mut e = event(&*p, "big", "t", 0);
    e.payload = json!({ "blob": "x".repeat(max.saturating_sub(16)) });
    match p.publish(&e).await {
        Err(Error::PayloadTooLarge { size, max: limit }) => {
            assert!(size > limit);
        }
        other => panic!(
            "a payload under the limit in an encoded event over it: expected \
             PayloadTooLarge, got {other:?}"
        ),
    }
    // "exceeds" is strict: an event of exactly the limit is accepted. Its
    // JSON is `max` bytes; a provider that counts more than the JSON (what
    // its backend stores beside the event) refuses it, and must then say a
    // size over the limit, and accept the event that many bytes smaller
    let at_limit = |n: u64, bytes: usize| -> Event {
        let mut e = event(&*p, "big", "t", n);
        e.payload = json!({ "blob": "" });
        let base = serde_json::to_vec(&e).map_or(0, |json| json.len());
        e.payload = json!({ "blob": "x".repeat(bytes.saturating_sub(base)) });
        e
    };
    let exact = at_limit(2, max);
    match p.publish(&exact).await {
        Ok(_) => {}
        Err(Error::PayloadTooLarge { size, max: limit }) if size > limit => {
            let framing = size - limit;
            let smaller = at_limit(3, max.saturating_sub(framing));
            if let Err(e) = p.publish(&smaller).await {
                panic!(
                    "the provider refused an event whose JSON is {max} bytes as {size} bytes, \
                     over its limit {limit}; the same event {framing} bytes smaller ({limit} \
                     bytes by the provider's own count) must be accepted (only an event that \
                     exceeds the limit is PayloadTooLarge), got {e}"
                );
            }
        }
        Err(Error::PayloadTooLarge { size, max: limit }) => panic!(
            "an event whose JSON is exactly Capabilities::max_payload ({max} bytes) was refused \
             as PayloadTooLarge of {size} bytes with a limit of {limit}: only an event that \
             exceeds the limit is refused (size > max)"
        ),
        Err(other) => panic!(
            "an event whose JSON is exactly Capabilities::max_payload ({max} bytes): expected \
             it accepted (or PayloadTooLarge over the limit, if the provider counts more than \
             the JSON), got {other}"
        ),
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        1,
        "the events over the limit stored nothing, the one at the limit is stored"
    );
    let mut small = event(&*p, "big", "t", 1);
    small.payload = json!({ "blob": "x".repeat(max / 2) , "n": 1});
    p.publish(&small)
        .await
        .expect("an event under the limit is accepted");
    assert_eq!(p.info().await.expect("info").messages, 2);
}

/// A payload nested [`MAX_PAYLOAD_DEPTH`](crate::MAX_PAYLOAD_DEPTH) levels
/// deep is stored and read back intact; one level deeper is
/// `Error::Serialization` at publish and nothing is stored (JSON readers
/// could never read it back: accepting it would lose it).
pub async fn payload_too_deep_rejected(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let nested = |levels: usize| {
        let mut payload = json!({ "leaf": true });
        for _ in 1..levels {
            payload = json!([payload]);
        }
        payload
    };
    let mut sub = p
        .subscribe(&p.category_subject("deep"))
        .await
        .expect("subscribe");
    let mut deepest = event(&*p, "deep", "t", 0);
    deepest.payload = nested(crate::MAX_PAYLOAD_DEPTH);
    p.publish(&deepest)
        .await
        .expect("a payload nested MAX_PAYLOAD_DEPTH levels deep is accepted");
    let got = recv(
        &mut sub,
        &caps,
        "the payload nested MAX_PAYLOAD_DEPTH levels deep",
    )
    .await;
    assert_eq!(
        *got.event, deepest,
        "a payload nested MAX_PAYLOAD_DEPTH levels deep must read back intact"
    );
    let mut too_deep = event(&*p, "deep", "t", 1);
    too_deep.payload = nested(crate::MAX_PAYLOAD_DEPTH + 1);
    match p.publish(&too_deep).await {
        Err(Error::Serialization(_)) => {}
        other => panic!(
            "a payload nested deeper than MAX_PAYLOAD_DEPTH: expected Error::Serialization \
             at publish, got {other:?}"
        ),
    }
    match p.publish_shared(Arc::new(too_deep.clone())).await {
        Err(Error::Serialization(_)) => {}
        other => panic!(
            "publish_shared of a payload nested deeper than MAX_PAYLOAD_DEPTH: expected \
             Error::Serialization, got {other:?}"
        ),
    }
    match p
        .publish_shared_with_options(Arc::new(too_deep.clone()), &PublishOptions::default())
        .await
    {
        Err(Error::Serialization(_)) => {}
        other => panic!(
            "publish_shared_with_options of a payload nested deeper than MAX_PAYLOAD_DEPTH: \
             expected Error::Serialization, got {other:?}"
        ),
    }
    // a batch refuses that event alone (a pipelining provider's own path)
    let flat = event(&*p, "deep", "t", 2);
    let results = p
        .publish_batch(&[too_deep, flat])
        .await
        .expect("publish_batch");
    match results.as_slice() {
        [Err(Error::Serialization(_)), Ok(_)] => {}
        other => panic!(
            "publish_batch of a payload nested deeper than MAX_PAYLOAD_DEPTH and a flat one: \
             expected [Err(Error::Serialization), Ok], got {other:?}"
        ),
    }
    assert_eq!(
        p.info().await.expect("info").messages,
        2,
        "the payload nested too deep must not be stored"
    );
}

/// `publish_shared` and `publish_shared_with_options` keep every rule of
/// `publish`: delivery with fields intact, dedup, expected sequence, subject
/// validation and the payload limit.
pub async fn publish_shared_follows_publish_contract(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let mut sub = p
        .subscribe(&p.category_subject("shared"))
        .await
        .expect("subscribe");
    let e = std::sync::Arc::new(event(&*p, "shared", "t", 1).with_metadata("trace", "abc"));
    let seq = p
        .publish_shared(std::sync::Arc::clone(&e))
        .await
        .expect("publish_shared");
    let got = recv(&mut sub, &caps, "the event published with publish_shared").await;
    assert_eq!(got.sequence, seq);
    assert_eq!(*got.event, *e, "every field intact");
    assert_eq!(
        p.publish_shared(std::sync::Arc::clone(&e))
            .await
            .expect("republish"),
        seq,
        "same event id: same sequence"
    );
    let by_id = PublishOptions {
        msg_id: Some("shared-1".into()),
        ..PublishOptions::default()
    };
    let a = p
        .publish_shared_with_options(std::sync::Arc::new(event(&*p, "shared", "t", 2)), &by_id)
        .await
        .expect("publish");
    let b = p
        .publish_shared_with_options(std::sync::Arc::new(event(&*p, "shared", "t", 3)), &by_id)
        .await
        .expect("publish");
    assert_eq!(a, b, "same msg id: same sequence");
    let stale = PublishOptions {
        expected_sequence: Some(seq),
        ..PublishOptions::default()
    };
    match p
        .publish_shared_with_options(std::sync::Arc::new(event(&*p, "shared", "t", 4)), &stale)
        .await
    {
        Err(Error::WrongLastSequence { expected, .. }) => assert_eq!(expected, seq),
        other => panic!("expected WrongLastSequence, got {other:?}"),
    }
    let mut bad = event(&*p, "shared", "t", 5);
    bad.subject = format!("{}.shared.*", p.subject_prefix());
    assert_invalid_subject(
        p.publish_shared(std::sync::Arc::new(bad)).await,
        "wildcard in a published subject",
    );
    match caps.max_payload {
        Some(max) => {
            let mut big = event(&*p, "shared", "t", 6);
            big.payload = json!({ "blob": "x".repeat(max + 1) });
            match p.publish_shared(std::sync::Arc::new(big)).await {
                Err(Error::PayloadTooLarge { size, max: limit }) => assert!(size > limit),
                other => panic!(
                    "publish_shared: expected PayloadTooLarge, got {other:?}: the event's \
                     payload alone is over Capabilities::max_payload ({max} bytes); set it to \
                     the provider's real limit (or None, to skip the payload-limit checks)"
                ),
            }
        }
        None => skip(
            "publish_shared_follows_publish_contract",
            p.name(),
            "capabilities.max_payload is None: its payload-limit check (the rest runs)",
        ),
    }
    let history = p
        .history(Some(&p.category_subject("shared")), 10)
        .await
        .expect("history");
    assert_eq!(
        history.iter().map(n_of).collect::<Vec<_>>(),
        vec![2, 1],
        "duplicates, conflicts and refusals stored nothing"
    );
}

/// `info` counts messages, bytes, consumers (durable and ephemeral) and
/// sequences; an empty provider reports zeros.
pub async fn info_counts(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let empty = p.info().await.expect("info");
    assert_eq!(
        empty.provider,
        p.name(),
        "info().provider must be name() (the Contract, \"Info and health\"): a wrapper that \
         overrides name() sets its own name in the ProviderInfo it forwards from info()"
    );
    assert_eq!(
        (
            empty.messages,
            empty.bytes,
            empty.consumers,
            empty.first_sequence,
            empty.last_sequence
        ),
        (0, 0, 0, 0, 0),
        "an empty provider: (messages, bytes, consumers, first_sequence, last_sequence)"
    );
    let seqs = publish_n(&*p, "info", "t", 0..7).await;
    let _durable = p
        .subscribe_durable("info-d", &p.category_subject("info"))
        .await
        .expect("durable");
    let _ephemeral = p
        .subscribe(&p.category_subject("info"))
        .await
        .expect("subscribe");
    let info = p.info().await.expect("info");
    assert_eq!(info.messages, 7, "messages stored");
    assert!(info.bytes > 0, "bytes stored");
    assert!(
        info.consumers >= 2,
        "the durable and the ephemeral consumer are counted: {}",
        info.consumers
    );
    assert_eq!(info.last_sequence, seqs[6], "last_sequence");
    assert_eq!(info.first_sequence, seqs[0], "first_sequence");
    let seq = p
        .publish(&event(&*p, "info", "t", 7))
        .await
        .expect("publish");
    let more = p.info().await.expect("info");
    assert_eq!(
        (more.messages, more.last_sequence),
        (8, seq),
        "(messages, last_sequence) after one more publish"
    );
    assert!(
        more.bytes > info.bytes,
        "bytes grow with what is stored: {} then {}",
        info.bytes,
        more.bytes
    );
    assert!(p.health().await.expect("health"));
}

/// `publish_batch` reports one result per event, in order, and
/// deduplicates as `publish` does, within the batch too.
pub async fn publish_batch_reports_each_result(factory: &dyn ProviderFactory) {
    let p = factory.create().await;
    let mut events: Vec<Event> = (0..20).map(|n| event(&*p, "batch", "t", n)).collect();
    events[7].subject = "bad..subject".into();
    // the same event twice in one batch, as a retried publish would send it
    events[12] = events[3].clone();
    let results = p.publish_batch(&events).await.expect("batch");
    assert_eq!(results.len(), 20, "one result per event, failures included");
    let mut last = 0;
    for (i, r) in results.iter().enumerate() {
        if i == 7 {
            assert!(
                matches!(r, Err(Error::InvalidSubject { .. })),
                "bad event reported: {r:?}"
            );
        } else if i == 12 {
            assert_eq!(
                r.as_ref().ok(),
                results[3].as_ref().ok(),
                "a repeat inside the batch returns the first one's sequence (dedup by event id)"
            );
        } else {
            let seq = *r.as_ref().expect("good event published");
            assert!(seq > last, "batch sequences increase in order");
            last = seq;
        }
    }
    let stored = p
        .history(Some(&p.category_subject("batch")), 100)
        .await
        .expect("history");
    assert_eq!(
        stored.len(),
        18,
        "every good event of the batch is stored, the repeated one once"
    );
}

/// A subscription works as a `futures::Stream`.
pub async fn subscription_as_stream(factory: &dyn ProviderFactory) {
    let caps = factory.capabilities();
    let p = factory.create().await;
    let sub = p
        .subscribe(&p.category_subject("strm"))
        .await
        .expect("subscribe");
    let mut stream = sub.into_stream();
    publish_n(&*p, "strm", "t", 0..3).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let item = tokio::time::timeout(
            caps.receive_timeout,
            std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
            }),
        )
        .await
        .expect("stream item in time")
        .expect("stream not ended")
        .expect("delivery");
        got.push(n_of(&item.event));
    }
    assert_eq!(got, vec![0, 1, 2]);
}
