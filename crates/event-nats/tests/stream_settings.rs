//! A stream that an administrator created beforehand with settings the
//! provider does not manage, but which break its contract (every event is
//! kept until the stream's own limits remove it): connecting either puts
//! them right or refuses with a conflict naming them, never silently uses
//! them.

#![allow(clippy::unwrap_used)]

mod common;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use common::NatsServer;
use event_core::{Error, Event, EventProvider};
use event_nats::{NatsConfig, NatsProvider};
use serde_json::json;

macro_rules! server {
    ($name:expr) => {
        match NatsServer::start($name) {
            Some(s) => s,
            None => return,
        }
    };
}

/// Creates the stream `config` names, as the provider would, then changed
/// by `change`, with a plain client.
async fn precreate(config: &NatsConfig, change: impl FnOnce(&mut Config)) {
    let client = async_nats::connect(&config.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = Config {
        name: config.stream_name.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        storage: StorageType::File,
        allow_direct: true,
        ..Config::default()
    };
    change(&mut stream);
    js.create_stream(stream).await.unwrap();
}

fn event(p: &NatsProvider, topic: &str, n: u64) -> Event {
    Event::new(
        format!("{}.probe.{topic}", p.subject_prefix()),
        "test",
        "probe",
        "stream-settings",
        json!({ "n": n }),
    )
}

/// Connecting to the stream: `Ok` only when three events published to one
/// subject without any subscriber are all kept (history returns them).
async fn kept_or_conflict(config: NatsConfig, setting: &str) {
    match NatsProvider::connect(config).await {
        Ok(p) => {
            for n in 0..3 {
                p.publish(&event(&p, "one", n)).await.unwrap();
            }
            let history = p.history(None, 10).await.unwrap();
            assert_eq!(
                history.len(),
                3,
                "{setting}: the provider used the stream as it was and lost events"
            );
        }
        Err(Error::Conflict { reason, .. }) => {
            assert!(reason.contains(setting), "{setting} not named: {reason}")
        }
        Err(other) => panic!("{setting}: expected Ok or Conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn an_existing_interest_retention_stream_is_not_silently_used() {
    let server = server!("an_existing_interest_retention_stream_is_not_silently_used");
    let config = common::config(&server, "interest");
    precreate(&config, |s| s.retention = RetentionPolicy::Interest).await;
    kept_or_conflict(config, "retention").await;
}

#[tokio::test]
async fn an_existing_work_queue_stream_is_not_silently_used() {
    let server = server!("an_existing_work_queue_stream_is_not_silently_used");
    let config = common::config(&server, "workq");
    precreate(&config, |s| s.retention = RetentionPolicy::WorkQueue).await;
    kept_or_conflict(config, "retention").await;
}

/// A per-subject limit can be lifted in place: connecting must do so (and
/// keep every event), not refuse.
#[tokio::test]
async fn an_existing_per_subject_limit_is_lifted() {
    let server = server!("an_existing_per_subject_limit_is_lifted");
    let config = common::config(&server, "persubj");
    precreate(&config, |s| s.max_messages_per_subject = 1).await;
    let p = NatsProvider::connect(config.clone())
        .await
        .expect("the per-subject limit is updatable");
    drop(p);
    kept_or_conflict(config, "max_messages_per_subject").await;
}

/// The same with discard-new-per-subject, which the server accepts only
/// together with a per-subject limit and the discard-new policy: lifting
/// the limit must clear it too, or the server refuses the update.
#[tokio::test]
async fn an_existing_discard_new_per_subject_limit_is_lifted() {
    let server = server!("an_existing_discard_new_per_subject_limit_is_lifted");
    let config = common::config(&server, "dnps");
    precreate(&config, |s| {
        s.discard = DiscardPolicy::New;
        s.max_messages_per_subject = 1;
        s.discard_new_per_subject = true;
    })
    .await;
    let p = NatsProvider::connect(config.clone())
        .await
        .expect("the per-subject limit is updatable");
    drop(p);
    kept_or_conflict(config, "max_messages_per_subject").await;
}

/// Two services with different subject prefixes and the same (default)
/// stream name share one stream: the second adds its subjects to it. The
/// history of each, without a filter, holds its own events only.
#[tokio::test]
async fn a_stream_shared_with_another_prefix_keeps_history_to_the_own_subjects() {
    let server = server!("a_stream_shared_with_another_prefix_keeps_history_to_the_own_subjects");
    let first_config = common::config(&server, "first");
    let first = NatsProvider::connect(first_config.clone()).await.unwrap();
    let (_, second_prefix) = common::unique("second");
    let second = NatsProvider::connect(NatsConfig {
        subject_prefix: second_prefix,
        ..first_config
    })
    .await
    .unwrap();
    for n in 0..3 {
        first.publish(&event(&first, "one", n)).await.unwrap();
    }
    second.publish(&event(&second, "one", 9)).await.unwrap();
    for (p, want) in [(&first, 3), (&second, 1)] {
        let history = p.history(None, 10).await.unwrap();
        let subjects: Vec<&str> = history.iter().map(|e| e.subject.as_str()).collect();
        assert_eq!(history.len(), want, "{subjects:?}");
        let own = format!("{}.", p.subject_prefix());
        assert!(subjects.iter().all(|s| s.starts_with(&own)), "{subjects:?}");
    }
}

/// An administrator's stream capturing a wider subject space (`events.>`)
/// already captures the provider's subjects (`events.billing.>`): it is
/// used as it is, not refused because the update adding the narrower,
/// overlapping subject fails.
#[tokio::test]
async fn a_stream_capturing_a_wider_subject_space_is_used_as_it_is() {
    let server = server!("a_stream_capturing_a_wider_subject_space_is_used_as_it_is");
    let wide = common::config(&server, "wide");
    precreate(&wide, |_| {}).await;
    let config = NatsConfig {
        subject_prefix: format!("{}.billing", wide.subject_prefix),
        ..wide.clone()
    };
    let p = NatsProvider::connect(config.clone())
        .await
        .expect("the stream already captures the provider's subjects");
    p.publish(&event(&p, "one", 1)).await.unwrap();
    assert_eq!(p.history(None, 10).await.unwrap().len(), 1);
    let client = async_nats::connect(&config.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&config.stream_name).await.unwrap();
    let subjects = stream.info().await.unwrap().config.subjects.clone();
    assert_eq!(subjects, vec![format!("{}.>", wide.subject_prefix)]);
}

/// Services starting together (replicas of one deployment mid-rollout, or
/// two services sharing the default stream name) race to create the
/// stream: the loser's create is refused as "already in use with a
/// different configuration". It must go on as if the stream had existed
/// (check and update it), not fail with a permanent configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_racing_to_create_the_stream_all_connect() {
    let server = server!("services_racing_to_create_the_stream_all_connect");
    for _ in 0..5 {
        // The race, not the server's latency, is under test: on a loaded
        // machine (the whole suite in parallel) six concurrent stream
        // creations and updates once took the server past the default 5 s
        // request timeout.
        let config = NatsConfig {
            request_timeout_secs: 30,
            ..common::config(&server, "race")
        };
        let (_, other_prefix) = common::unique("other");
        let variants = [
            config.clone(),
            NatsConfig {
                max_events: 1000,
                ..config.clone()
            },
            NatsConfig {
                subject_prefix: other_prefix,
                ..config.clone()
            },
        ];
        let tasks: Vec<_> = variants
            .into_iter()
            .cycle()
            .take(6)
            .map(|config| tokio::spawn(NatsProvider::connect(config)))
            .collect();
        for task in tasks {
            task.await.unwrap().expect("every racing service connects");
        }
    }
}

/// A stream whose subjects overlap another stream's is refused by the
/// server ("subjects overlap with an existing stream") without saying
/// which: the error names the other stream and the overlapping subject,
/// when the provider creates its stream and when it adds its subject to an
/// existing one.
#[tokio::test]
async fn subjects_overlapping_another_stream_name_it_and_the_subject() {
    let server = server!("subjects_overlapping_another_stream_name_it_and_the_subject");
    let config = common::config(&server, "overlap");
    let (other_name, _) = common::unique("other");
    let taken = format!("{}.orders.>", config.subject_prefix);
    let client = async_nats::connect(&config.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(Config {
        name: other_name.clone(),
        subjects: vec![
            format!("{}x.unrelated", config.subject_prefix),
            taken.clone(),
        ],
        ..Config::default()
    })
    .await
    .unwrap();
    let named = |text: &str| {
        for part in [other_name.as_str(), taken.as_str(), "overlap"] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        assert!(
            !text.contains(&format!("{}x.unrelated", config.subject_prefix)),
            "a subject that does not overlap is named: {text}"
        );
    };
    // creating the stream
    match NatsProvider::connect(config.clone()).await {
        Err(e @ Error::InvalidConfig { .. }) => named(&e.to_string()),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    // adding the subject to an existing stream
    precreate(&config, |s| s.subjects = vec!["elsewhere.>".into()]).await;
    match NatsProvider::connect(config.clone()).await {
        Err(e @ Error::Conflict { .. }) => named(&e.to_string()),
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// A `max_age_secs` shorter than the default 120 s duplicate window: the
/// original library created such streams (JetStream then takes the max age
/// as the window), and so does this one, with the window at the max age.
/// A longer window set explicitly is refused, naming both values.
#[tokio::test]
async fn a_short_max_age_shortens_the_default_duplicate_window() {
    let server = server!("a_short_max_age_shortens_the_default_duplicate_window");
    let config = NatsConfig {
        max_age_secs: 60,
        ..common::config(&server, "short_age")
    };
    let provider = NatsProvider::connect(config.clone()).await.unwrap();
    provider.publish(&event(&provider, "a", 1)).await.unwrap();
    let client = async_nats::connect(&config.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&config.stream_name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.config.duplicate_window,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(info.config.max_age, std::time::Duration::from_secs(60));

    let explicit = event_nats::NatsOptions {
        duplicate_window: std::time::Duration::from_secs(300),
        ..event_nats::NatsOptions::default()
    };
    let err = NatsProvider::connect_with(config, explicit)
        .await
        .expect_err("a window longer than the max age");
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "duplicate_window")
            && err.to_string().contains("300 s")
            && err.to_string().contains("(60 s)"),
        "{err}"
    );
}
