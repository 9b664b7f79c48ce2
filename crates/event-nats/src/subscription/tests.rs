//! Unit tests of the subscription's helpers (no server needed).

use super::acker::Unsettled;
use super::limits::{PullLimits, Refusal, refusal_of};
use super::options::{SPARE_MARK, consumer_config};
use super::requests::{durable_update, filter_update_unsafe};
use event_core::SubscribeOptions;
use serde_json::json;
use std::time::Duration;

/// A durable's configuration as a 2.11+ server sends it, provisioned by
/// another team: settings async-nats's typed `consumer::Config` does not
/// model in this build (`metadata`, `pause_until`, priority groups, a
/// field of a later server), limits it models but subscriptions do not
/// set, and the subscription's own settings with other values. The
/// integration tests run nats-server 2.9, which refuses the fields it
/// does not know: those are checked here only.
fn provisioned() -> serde_json::Value {
    json!({
        "durable_name": "billing",
        "name": "billing",
        "description": "billing's reader",
        "deliver_policy": "all",
        "ack_policy": "explicit",
        "ack_wait": 30_000_000_000_u64,
        "max_deliver": -1,
        "filter_subjects": ["events.billing.>", "events.refunds.>"],
        "replay_policy": "instant",
        "max_waiting": 64,
        "max_ack_pending": 1000,
        "max_batch": 4,
        "max_expires": 1_000_000_000,
        "max_bytes": 1_048_576,
        "inactive_threshold": 3_600_000_000_000_u64,
        "num_replicas": 3,
        "mem_storage": true,
        "sample_freq": "50%",
        "backoff": [1_000_000_000, 5_000_000_000_u64],
        "metadata": {"team": "billing", "_nats.ver": "2.11.0"},
        "pause_until": "2030-01-01T00:00:00Z",
        "priority_groups": ["jobs"],
        "priority_policy": "pinned_client",
        "priority_timeout": 120_000_000_000_u64,
        "future_field": {"anything": [1, 2]},
    })
}

/// An update changes the subscription's settings only: every other
/// field of the server's JSON stays, those async-nats does not model
/// included; a setting the subscription leaves out (the backoff, the
/// 2.10+ filter list) goes, so the server applies its default.
#[test]
fn a_durable_update_changes_only_the_subscription_settings() {
    let options = SubscribeOptions {
        ack_wait: Some(Duration::from_secs(45)),
        max_deliver: Some(5),
        max_ack_pending: Some(10),
        ..SubscribeOptions::default()
    };
    let desired = consumer_config(Some("billing"), "events.billing.>", &options).unwrap();
    let update = durable_update(&provisioned(), &desired).unwrap();
    let mut want = provisioned();
    let object = want.as_object_mut().unwrap();
    object.insert("filter_subject".into(), json!("events.billing.>"));
    object.insert("ack_wait".into(), json!(45_000_000_000_u64));
    // the subscription's 5 and the spare, marked in the description
    object.insert("max_deliver".into(), json!(6));
    object.insert("description".into(), json!(SPARE_MARK));
    object.insert("max_ack_pending".into(), json!(10));
    object.remove("filter_subjects");
    object.remove("backoff");
    assert_eq!(update, want);
}

/// The spare's mark goes with the limit; another client's description
/// stays where the subscription sets no limit.
#[test]
fn a_durable_update_keeps_a_foreign_description_and_drops_a_stale_mark() {
    let desired = consumer_config(
        Some("billing"),
        "events.billing.>",
        &SubscribeOptions::default(),
    )
    .unwrap();
    let update = durable_update(&provisioned(), &desired).unwrap();
    assert_eq!(update["description"], json!("billing's reader"));
    assert_eq!(update["max_deliver"], json!(-1));
    assert_eq!(
        update["metadata"],
        json!({"team": "billing", "_nats.ver": "2.11.0"})
    );
    let mut marked = provisioned();
    marked["description"] = json!(SPARE_MARK);
    marked["max_deliver"] = json!(6);
    let update = durable_update(&marked, &desired).unwrap();
    assert_eq!(update.get("description"), None);
    assert_eq!(update["max_deliver"], json!(-1));
    assert_eq!(update["future_field"], json!({"anything": [1, 2]}));
}

/// A request beyond the consumer's limits is refused for good; those
/// that pass (max waiting, leadership change) are asked again.
#[test]
fn pull_refusals_are_told_apart() {
    for (status, want) in [
        ("409: Exceeded MaxRequestBatch of 4", Some(Refusal::Limits)),
        (
            "409: Exceeded MaxRequestExpires of 1s",
            Some(Refusal::Limits),
        ),
        (
            "409: Exceeded MaxRequestMaxBytes of 300",
            Some(Refusal::Limits),
        ),
        ("409: Consumer is push based", Some(Refusal::Never)),
        ("409: Exceeded MaxWaiting", Some(Refusal::Passing)),
        ("409: Leadership Change", Some(Refusal::Passing)),
        ("408: Request Timeout", Some(Refusal::Passing)),
        ("503: No Responders", None),
    ] {
        assert_eq!(refusal_of(status), want, "{status}");
    }
}

#[test]
fn pulls_are_sized_within_the_consumer_limits() {
    let none = PullLimits::default();
    assert_eq!(none.batch(64), 64);
    assert_eq!(none.expires(Duration::from_secs(5)), Duration::from_secs(5));
    let limited = PullLimits {
        max_batch: 4,
        max_expires: Duration::from_secs(1),
    };
    assert_eq!(limited.batch(64), 4);
    assert_eq!(limited.batch(1), 1);
    assert_eq!(
        limited.expires(Duration::from_secs(5)),
        Duration::from_secs(1)
    );
    assert_eq!(
        limited.expires(Duration::from_millis(200)),
        Duration::from_millis(200)
    );
    assert_eq!(limited.to_string(), "max_batch 4, max_expires 1s");
    assert_eq!(none.to_string(), "max_batch none, max_expires none");
}

/// Deliveries the server ended on its side (evicted while unsettled)
/// are never settled here: the set keeps no more than the consumer's
/// `max_ack_pending`, the newest.
#[test]
fn unsettled_deliveries_are_kept_up_to_max_ack_pending() {
    let unsettled = Unsettled::default();
    for seq in 1..=100_000 {
        unsettled.handed_out(seq, 1_000);
    }
    assert_eq!(unsettled.with(|set| set.len()), 1_000);
    assert_eq!(unsettled.with(|set| set.first().copied()), Some(99_001));
    unsettled.handed_out(100_001, 0);
    assert_eq!(unsettled.with(|set| set.len()), 1);
}

#[test]
fn filter_updates_are_unsafe_before_2_9_14() {
    for old in ["2.9.10", "v2.9.13", "2.8.4", "1.0.0"] {
        assert!(filter_update_unsafe(old), "{old}");
    }
    for new in ["2.9.14", "2.10.0", "2.11.1-RC.1", "3.0.0", "", "dev"] {
        assert!(!filter_update_unsafe(new), "{new}");
    }
}
