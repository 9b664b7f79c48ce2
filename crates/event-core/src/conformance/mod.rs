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
    Error, Event, EventProvider, PendingEvent, ReceivedEvent, SubscribeOptions, Subscription,
};
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

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
            publish_batch_with_outcome_reports_each_result,
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

/// A subscription of `kind` ("durable", named `name`, or "ephemeral") on
/// `category`'s events with `options`: for the tests that check a rule on
/// each kind in turn (the second subscribed after the first is done, so
/// that no delivery waits, and ages, while the other is tested).
async fn subscribe_kind(
    p: &dyn EventProvider,
    kind: &str,
    name: &str,
    category: &str,
    options: &SubscribeOptions,
) -> Box<dyn Subscription> {
    let filter = p.category_subject(category);
    if kind == "durable" {
        p.subscribe_durable_with_options(name, &filter, options)
            .await
            .expect("durable")
    } else {
        p.subscribe_with_options(&filter, options)
            .await
            .expect("ephemeral")
    }
}

fn assert_invalid_subject<T: std::fmt::Debug>(result: crate::Result<T>, what: &str) {
    match result {
        Err(Error::InvalidSubject { .. }) => {}
        other => panic!("{what}: expected Error::InvalidSubject, got {other:?}"),
    }
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

// ------------------------------------------------------------------ tests

mod durable;
mod lifecycle;
mod policies;
mod publish;
mod pubsub;
mod settlement;
mod validation;

pub use durable::{
    changed_durable_filter_from_literal_to_wildcard, changed_durable_options_applied_or_refused,
    durable_resumes_after_drop, durable_shared_by_two_subscriptions,
    shared_durable_settles_every_event_under_random_settlements,
};
pub use lifecycle::{
    cancelled_fetches_lose_nothing, cancelled_subscribe_and_close_leave_no_consumer,
    close_acks_and_ends_subscription, recreated_durable_does_not_feed_old_subscriptions,
    spare_due_at_close_comes_to_the_next_subscription, unsubscribe_deletes_durable,
    unsubscribe_ends_live_subscriptions,
};
pub use policies::{
    backoff_spaces_redeliveries, deliver_policy_all, deliver_policy_by_start_sequence,
    deliver_policy_by_start_sequence_beyond_the_end, deliver_policy_by_start_time,
    deliver_policy_by_start_time_includes_its_millisecond, deliver_policy_last,
    deliver_policy_last_per_subject, deliver_policy_new, max_ack_pending_pauses_delivery,
    retention_overrun_reported_and_skipped,
};
pub use publish::{
    expected_sequence_conflict, info_counts, msg_id_deduplicates, payload_over_limit_rejected,
    payload_too_deep_rejected, publish_batch_reports_each_result,
    publish_batch_with_outcome_reports_each_result, publish_outcome_reports_duplicates,
    publish_shared_follows_publish_contract, unusable_msg_id_refused,
};
pub use pubsub::{
    concurrent_publishers_lose_nothing, history_newest_first_with_limit_and_filter,
    ordering_of_1000_events, publish_subscribe_round_trip, subscription_as_stream,
    wildcard_filtering_and_topic_isolation, wildcard_over_prefix_filters,
};
pub use settlement::{
    ack_timeout_redelivers, auto_ack_acks_when_the_next_event_is_asked,
    auto_ack_never_loses_unfinished_event, in_progress_extends_ack_wait,
    max_deliver_stops_and_reports_final_delivery, nak_redelivers, nak_with_delay_redelivers_later,
    naked_event_does_not_hold_back_later_ones, term_never_redelivers,
    unsettled_final_delivery_comes_once_more,
};
pub use validation::{
    invalid_subjects_filters_and_names_rejected, invalid_subscribe_options_refused,
    out_of_range_values_are_held_not_refused,
};
