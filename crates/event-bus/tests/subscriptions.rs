//! Managed subscriptions and state persistence.

mod common;

use async_trait::async_trait;
use common::{ends, filter};
use event_bus::{EventBus, FileStateStore, MemoryStateStore, durable_consumer_name};
use event_core::{
    Error, EventProvider, Result, StateStore, SubscribeOptions, Subscription, SubscriptionFilter,
    SubscriptionRecord,
};
use event_memory::MemoryProvider;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn next(sub: &mut Box<dyn Subscription>) -> event_core::ReceivedEvent {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("an event in time")
        .expect("no error")
        .expect("open")
}

#[tokio::test]
async fn update_get_list_remove() {
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription(filter("b", &["events.market.>"], true))
        .await
        .unwrap();
    bus.update_subscription(filter("a", &["events.*.x"], false))
        .await
        .unwrap();
    let ids: Vec<_> = bus
        .list_subscriptions()
        .await
        .into_iter()
        .map(|f| f.subscriber_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(
        bus.get_subscription("b").await.unwrap().subjects,
        ["events.market.>"]
    );
    bus.remove_subscription("b").await.unwrap();
    assert!(bus.get_subscription("b").await.is_none());
    assert!(matches!(
        bus.remove_subscription("b").await,
        Err(Error::NotFound {
            kind: "subscription",
            ..
        })
    ));
    assert!(matches!(
        bus.create_subscriber("nobody").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(bus.metrics().snapshot().unsubscribe_total, 1);
}

#[tokio::test]
async fn invalid_filters_are_refused() {
    let bus = EventBus::new(MemoryProvider::default());
    for f in [
        filter("", &["events.>"], true),
        filter("a", &[], true),
        filter("a", &["events.>.x"], true),
        filter("a", &["events..x"], true),
        filter("a\n", &["events.>"], true),
        filter("a", &["events.a.>", "events.b.>", "events.a.>"], false),
    ] {
        assert!(bus.update_subscription(f.clone()).await.is_err(), "{f:?}");
    }
    assert!(bus.list_subscriptions().await.is_empty());
}

#[tokio::test]
async fn options_are_kept_replaced_and_persisted() {
    let store = Arc::new(MemoryStateStore::new());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store.clone()).await.unwrap();
    let opts = SubscribeOptions {
        max_deliver: Some(4),
        backoff: vec![Duration::from_millis(10)],
        ..Default::default()
    };
    bus.update_subscription_with_options(filter("a", &["events.>"], true), opts.clone())
        .await
        .unwrap();
    // a plain update keeps the options
    bus.update_subscription(filter("a", &["events.x.>"], true))
        .await
        .unwrap();
    let rec = bus.get_subscription_record("a").await.unwrap();
    assert_eq!(rec.options.as_ref(), Some(&opts));
    assert_eq!(rec.filter.subjects, ["events.x.>"]);
    assert_eq!(store.load().await.unwrap(), vec![rec.clone()]);
    // set_subscription replaces exactly
    bus.set_subscription(SubscriptionRecord {
        filter: rec.filter.clone(),
        options: None,
    })
    .await
    .unwrap();
    assert_eq!(store.load().await.unwrap()[0].options, None);
    assert_eq!(store.saves(), 3);
}

#[tokio::test]
async fn durable_subscriber_resumes_and_removal_deletes_its_consumers() {
    let provider = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    bus.update_subscription(filter(
        "analyst",
        &["events.market.>", "events.system.>"],
        true,
    ))
    .await
    .unwrap();
    let e1 = bus
        .publish("market", "fx", "s", "src", json!(1))
        .await
        .unwrap();
    let mut subs = bus.create_subscriber("analyst").await.unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(next(&mut subs[0]).await.event.id, e1.id);
    subs[0].close().await.unwrap();
    drop(subs);
    let e2 = bus
        .publish("market", "fx", "s", "src", json!(2))
        .await
        .unwrap();
    // the durable resumes after the acknowledged event
    let mut subs = bus.create_subscriber("analyst").await.unwrap();
    assert_eq!(next(&mut subs[0]).await.event.id, e2.id);
    drop(subs);
    assert_eq!(provider.info().await.unwrap().consumers, 2);
    // dropping a subject deletes its durable; removal deletes the rest
    bus.update_subscription(filter("analyst", &["events.market.>"], true))
        .await
        .unwrap();
    assert!(matches!(
        provider
            .unsubscribe(&durable_consumer_name("analyst", "events.system.>"))
            .await,
        Err(Error::NotFound { .. })
    ));
    bus.remove_subscription("analyst").await.unwrap();
    assert_eq!(provider.info().await.unwrap().consumers, 0);
    assert_eq!(bus.metrics().snapshot().subscribe_total, 4);
}

#[tokio::test]
async fn ephemeral_subscriber_sees_new_events_only_unless_options_say_otherwise() {
    let bus = EventBus::new(MemoryProvider::default());
    let old = bus.publish("a", "b", "s", "src", json!(0)).await.unwrap();
    bus.update_subscription(filter("live", &["events.a.>"], false))
        .await
        .unwrap();
    let mut live = bus.create_subscriber("live").await.unwrap();
    let new = bus.publish("a", "b", "s", "src", json!(1)).await.unwrap();
    assert_eq!(next(&mut live[0]).await.event.id, new.id);
    bus.update_subscription_with_options(
        filter("replay", &["events.a.>"], false),
        SubscribeOptions::default(), // deliver policy All
    )
    .await
    .unwrap();
    let mut replay = bus.create_subscriber("replay").await.unwrap();
    assert_eq!(next(&mut replay[0]).await.event.id, old.id);
}

#[tokio::test]
async fn crash_test_subscriptions_restored_from_the_state_file() {
    let dir = common::temp_dir("crash");
    let path = dir.join("state/subscriptions.json");
    let provider = Arc::new(MemoryProvider::default());
    let opts = SubscribeOptions {
        max_deliver: Some(3),
        ..Default::default()
    };
    {
        let bus_a = EventBus::from_arc(provider.clone());
        bus_a
            .set_state_store(Arc::new(FileStateStore::new(&path)))
            .await
            .unwrap();
        bus_a
            .update_subscription(filter("analyst", &["events.market.>"], true))
            .await
            .unwrap();
        bus_a
            .update_subscription_with_options(filter("auditor", &["events.>"], true), opts.clone())
            .await
            .unwrap();
        bus_a
            .update_subscription(filter("gone", &["events.x.>"], false))
            .await
            .unwrap();
        bus_a.remove_subscription("gone").await.unwrap();
        // bus A is dropped without any shutdown step
    }
    let bus_b = EventBus::from_arc(provider.clone());
    assert!(bus_b.list_subscriptions().await.is_empty());
    bus_b
        .set_state_store(Arc::new(FileStateStore::new(&path)))
        .await
        .unwrap();
    let records = bus_b.list_subscription_records().await;
    let ids: Vec<_> = records
        .iter()
        .map(|r| r.filter.subscriber_id.as_str())
        .collect();
    assert_eq!(ids, ["analyst", "auditor"]);
    assert_eq!(records[1].options.as_ref(), Some(&opts));
    // and they work: the restored durable is the same consumer name
    let e = bus_b
        .publish("market", "fx", "s", "src", json!(1))
        .await
        .unwrap();
    let mut subs = bus_b.create_subscriber("analyst").await.unwrap();
    assert_eq!(next(&mut subs[0]).await.event.id, e.id);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn set_state_store_merges_and_a_corrupt_file_changes_nothing() {
    let dir = common::temp_dir("merge");
    let path = dir.join("s.json");
    let stored = FileStateStore::new(&path);
    stored
        .save(&[SubscriptionRecord {
            filter: filter("stored", &["events.a.>"], true),
            options: None,
        }])
        .await
        .unwrap();
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription(filter("early", &["events.b.>"], false))
        .await
        .unwrap();
    // a clone: one store (and its clones) at a time owns the file
    bus.set_state_store(Arc::new(stored.clone())).await.unwrap();
    let ids: Vec<_> = bus
        .list_subscriptions()
        .await
        .into_iter()
        .map(|f| f.subscriber_id)
        .collect();
    assert_eq!(ids, ["early", "stored"]);
    assert_eq!(stored.load().await.unwrap().len(), 2, "merged set saved");

    let bad = dir.join("bad.json");
    std::fs::write(&bad, b"{\"version\":1,\"subscriptions\":[{").unwrap();
    let other = EventBus::new(MemoryProvider::default());
    other
        .update_subscription(filter("x", &["events.>"], true))
        .await
        .unwrap();
    let err = other
        .set_state_store(Arc::new(FileStateStore::new(&bad)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad.json"), "{err}");
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        b"{\"version\":1,\"subscriptions\":[{"
    );
    // the bus kept its state and has no store: updates do not touch the file
    other
        .update_subscription(filter("y", &["events.>"], true))
        .await
        .unwrap();
    assert_eq!(other.list_subscriptions().await.len(), 2);
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        b"{\"version\":1,\"subscriptions\":[{"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[derive(Default)]
struct FailingStore {
    fail: AtomicBool,
    inner: MemoryStateStore,
}

#[async_trait]
impl StateStore for FailingStore {
    async fn load(&self) -> Result<Vec<SubscriptionRecord>> {
        self.inner.load().await
    }
    async fn save(&self, subscriptions: &[SubscriptionRecord]) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Connection("disk gone".into()));
        }
        self.inner.save(subscriptions).await
    }
}

#[tokio::test]
async fn a_change_that_cannot_be_saved_is_not_applied() {
    let store = Arc::new(FailingStore::default());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store.clone()).await.unwrap();
    bus.update_subscription(filter("a", &["events.>"], true))
        .await
        .unwrap();
    store.fail.store(true, Ordering::SeqCst);
    assert!(
        bus.update_subscription(filter("b", &["events.>"], true))
            .await
            .is_err()
    );
    assert!(bus.remove_subscription("a").await.is_err());
    // a changed subscriber keeps what it had
    assert!(
        bus.update_subscription(filter("a", &["events.orders.>"], true))
            .await
            .is_err()
    );
    let listed = bus.list_subscriptions().await;
    let ids: Vec<_> = listed.iter().map(|f| f.subscriber_id.as_str()).collect();
    assert_eq!(ids, ["a"]);
    assert_eq!(listed[0].subjects, ["events.>"]);
    assert_eq!(store.inner.load().await.unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_updates_all_land_in_the_store() {
    let dir = common::temp_dir("concurrent");
    let path = dir.join("s.json");
    let bus = EventBus::new(MemoryProvider::default());
    let store = FileStateStore::new(&path);
    bus.set_state_store(Arc::new(store.clone())).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let bus = bus.clone();
            tokio::spawn(async move {
                bus.update_subscription(filter(&format!("s{i:02}"), &["events.>"], i % 2 == 0))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.load().await.unwrap().len(), 20);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn removing_an_ephemeral_subscriber_ends_its_subscriptions() {
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription(filter("e", &["events.a.>", "events.b.>"], false))
        .await
        .unwrap();
    let mut subs = bus.create_subscriber("e").await.unwrap();
    let first = bus.publish("a", "x", "s", "src", json!(1)).await.unwrap();
    assert_eq!(next(&mut subs[0]).await.event.id, first.id);
    // one subscription waits idle while the subscriber is removed
    let mut idle = subs.pop().unwrap();
    let waiting = tokio::spawn(async move {
        ends(&mut idle).await;
        idle
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.remove_subscription("e").await.unwrap();
    let mut idle = waiting.await.unwrap();
    // nothing published after the removal reaches either subscription
    bus.publish("a", "x", "s", "src", json!(2)).await.unwrap();
    bus.publish("b", "x", "s", "src", json!(3)).await.unwrap();
    ends(&mut subs[0]).await;
    ends(&mut idle).await;
}

/// Changes of other subscribers, one at a time or coalesced, do not end a
/// subscription; its own subscriber's removal does, whether it comes alone
/// right after them or in the same burst.
#[tokio::test]
async fn other_subscribers_changes_leave_a_subscription_and_its_removal_ends_it() {
    let bus = EventBus::new(MemoryProvider::default());
    for id in ["mine", "again"] {
        bus.update_subscription(filter(id, &["events.a.>"], false))
            .await
            .unwrap();
    }
    let mut mine = bus.create_subscriber("mine").await.unwrap().remove(0);
    let mut again = bus.create_subscriber("again").await.unwrap().remove(0);
    let mine = tokio::spawn(async move { ends(&mut mine).await });
    let again = tokio::spawn(async move { ends(&mut again).await });
    for i in 0..50 {
        // one at a time (the waiting tasks look at each) ...
        bus.update_subscription(filter(&format!("other{i}"), &["events.b.>"], false))
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    // ... and coalesced
    for i in 0..5 {
        bus.remove_subscription(&format!("other{i}")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !mine.is_finished() && !again.is_finished(),
        "ended by others' changes"
    );
    bus.remove_subscription("mine").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), mine)
        .await
        .expect("removing its subscriber did not end the subscription")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !again.is_finished(),
        "ended by another subscriber's removal"
    );
    bus.remove_subscription("again").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), again)
        .await
        .expect("removing its subscriber did not end the subscription")
        .unwrap();
    // removed in a burst of changes that last named another subscriber,
    // all made before the subscription looks at them
    bus.update_subscription(filter("burst", &["events.a.>"], false))
        .await
        .unwrap();
    let mut burst = bus.create_subscriber("burst").await.unwrap().remove(0);
    bus.update_subscription(filter("other10", &["events.c.>"], false))
        .await
        .unwrap();
    bus.remove_subscription("burst").await.unwrap();
    bus.update_subscription(filter("other11", &["events.c.>"], false))
        .await
        .unwrap();
    ends(&mut burst).await;
}

#[tokio::test]
async fn an_update_that_drops_a_subject_ends_only_that_subscription() {
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription(filter("e", &["events.a.>", "events.b.>"], false))
        .await
        .unwrap();
    let mut subs = bus.create_subscriber("e").await.unwrap();
    bus.update_subscription(filter("e", &["events.a.>"], false))
        .await
        .unwrap();
    bus.publish("b", "x", "s", "src", json!(1)).await.unwrap();
    let kept = bus.publish("a", "x", "s", "src", json!(2)).await.unwrap();
    ends(&mut subs[1]).await;
    assert_eq!(next(&mut subs[0]).await.event.id, kept.id);
    // switching the subscriber to durable ends its ephemeral subscriptions
    bus.update_subscription(filter("e", &["events.a.>"], true))
        .await
        .unwrap();
    ends(&mut subs[0]).await;
}

/// A subscription whose subscriber is removed and added again with the
/// same subject (or whose subject is dropped and given back, or whose
/// durability is switched and switched back) before it looks at the
/// changes ends all the same: the subscriber it served was removed, and
/// nothing published after that reaches it. Only the subscriptions opened
/// after the change deliver. A change that keeps the subject (new options,
/// another subject added) leaves it open.
#[tokio::test]
async fn a_subscription_ends_when_its_subject_is_dropped_and_given_back_before_it_looks() {
    for durable in [false, true] {
        for case in 0..3 {
            // a bus of its own: a durable starts with every stored event
            let bus = EventBus::new(MemoryProvider::default());
            let id = format!("s{case}");
            bus.update_subscription(filter(&id, &["events.a.>"], durable))
                .await
                .unwrap();
            let mut old = bus.create_subscriber(&id).await.unwrap().remove(0);
            // kept: its subject stays, with new options and a subject more
            bus.update_subscription_with_options(
                filter(&id, &["events.a.>", "events.c.>"], durable),
                SubscribeOptions {
                    max_deliver: Some(7),
                    ..SubscribeOptions::default()
                },
            )
            .await
            .unwrap();
            let kept = bus
                .publish("a", "x", "s", "src", json!({"kept": case}))
                .await
                .unwrap();
            let got = next(&mut old).await;
            assert_eq!(got.event.id, kept.id, "durable {durable}, case {case}");
            // dropped and given back while `old` is not looking
            match case {
                // removed, then added again
                0 => bus.remove_subscription(&id).await.unwrap(),
                // its subject dropped, then given back
                1 => bus
                    .update_subscription(filter(&id, &["events.b.>"], durable))
                    .await
                    .unwrap(),
                // switched to the other durability, then back
                _ => bus
                    .update_subscription(filter(&id, &["events.a.>"], !durable))
                    .await
                    .unwrap(),
            }
            bus.update_subscription(filter(&id, &["events.a.>"], durable))
                .await
                .unwrap();
            bus.publish("a", "x", "s", "src", json!({"after": case}))
                .await
                .unwrap();
            let next = tokio::time::timeout(Duration::from_secs(5), old.next())
                .await
                .expect("an answer in time");
            assert!(
                matches!(next, Ok(None)),
                "durable {durable}, case {case}: the subscription of a removed subject \
                 went on: {next:?}"
            );
        }
    }
}

#[tokio::test]
async fn changes_to_other_subscribers_do_not_disturb_a_subscription() {
    const N: usize = 200;
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription(filter("x", &["events.a.>"], false))
        .await
        .unwrap();
    let mut sub = bus.create_subscriber("x").await.unwrap().remove(0);
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        for _ in 0..N {
            got.push(next(&mut sub).await.event.payload["n"].as_u64().unwrap());
        }
        got
    });
    for n in 0..N {
        bus.publish("a", "x", "s", "src", json!({"n": n}))
            .await
            .unwrap();
        let subjects: &[&str] = if n % 2 == 0 {
            &["events.a.>"]
        } else {
            &["events.b.>"]
        };
        bus.update_subscription(filter("y", subjects, false))
            .await
            .unwrap();
        if n % 50 == 0 {
            bus.remove_subscription("y").await.unwrap();
        }
        tokio::task::yield_now().await;
    }
    let got = reader.await.unwrap();
    assert_eq!(got, (0..N as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_state_file_naming_a_subscriber_twice_is_refused_and_left_untouched() {
    // Two records for one subscriber (a hand-edited file, or a legacy map
    // whose keys disagree with the ids): keeping either would silently drop
    // the other, and the next save would erase it from the file.
    let dir = common::temp_dir("duplicate");
    let path = dir.join("s.json");
    std::fs::create_dir_all(&dir).unwrap();
    let versioned = r#"{"version":1,"subscriptions":[
        {"subscriberId":"a","subjects":["events.x.>"],"durable":true},
        {"subscriberId":"a","subjects":["events.y.>"],"durable":true}]}"#;
    let legacy = r#"{"a":{"subscriberId":"a","subjects":["events.x.>"],"durable":true},
        "b":{"subscriberId":"a","subjects":["events.y.>"],"durable":true}}"#;
    for body in [versioned, legacy] {
        std::fs::write(&path, body).unwrap();
        for early in [false, true] {
            let bus = EventBus::new(MemoryProvider::default());
            if early {
                // a bus with subscriptions of its own saves the merged set
                bus.update_subscription(filter("early", &["events.z.>"], true))
                    .await
                    .unwrap();
            }
            let err = bus
                .set_state_store(Arc::new(FileStateStore::new(&path)))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
            assert!(err.to_string().contains("\"a\""), "{err}");
            // the operator is told which file to fix
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
            // the bus has no store: later changes do not touch the file
            bus.update_subscription(filter("later", &["events.z.>"], true))
                .await
                .unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A stored record the bus cannot open (a subject that is not valid) is
/// refused with an error naming the record and the file, which is left as
/// it is.
#[tokio::test]
async fn a_state_file_with_an_invalid_subscription_is_refused_naming_the_file() {
    let dir = common::temp_dir("invalid-record");
    let path = dir.join("s.json");
    std::fs::create_dir_all(&dir).unwrap();
    let body = r#"{"version":1,"subscriptions":[
        {"subscriberId":"audit","subjects":["events..x"],"durable":true}]}"#;
    std::fs::write(&path, body).unwrap();
    let bus = EventBus::new(MemoryProvider::default());
    let err = bus
        .set_state_store(Arc::new(FileStateStore::new(&path)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("events..x"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(bus.get_subscription_record("audit").await.is_none());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A state file that holds what the bus would not keep (a key given twice,
/// an option misspelt) is refused and left untouched, even by a bus that
/// declared subscribers of its own first (whose merge is saved): `"max_deliver"`
/// was ignored (deliveries unlimited) and erased by the next save, and a
/// second `"subscriptions"` key erased the first list.
#[tokio::test]
async fn a_state_file_with_what_the_bus_would_not_keep_is_refused_and_left_untouched() {
    let dir = common::temp_dir("unread");
    let path = dir.join("s.json");
    std::fs::create_dir_all(&dir).unwrap();
    let rec = r#"{"subscriberId":"billing","subjects":["events.pay.>"],"durable":true}"#;
    let misspelt = r#"{"version":1,"subscriptions":[{"subscriberId":"billing","subjects":["events.pay.>"],"durable":true,"options":{"max_deliver":3}}]}"#;
    let twice = format!(r#"{{"version":1,"subscriptions":[{rec}],"subscriptions":[]}}"#);
    for (body, names) in [(misspelt, "max_deliver"), (twice.as_str(), "subscriptions")] {
        std::fs::write(&path, body).unwrap();
        let bus = EventBus::new(MemoryProvider::default());
        bus.update_subscription(filter("declared", &["events.y.>"], true))
            .await
            .unwrap();
        let err = bus
            .set_state_store(Arc::new(FileStateStore::new(&path)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Serialization(_)), "{err}");
        assert!(err.to_string().contains(names), "{err}");
        assert!(err.to_string().contains("s.json"), "{err}");
        assert!(bus.get_subscription_record("billing").await.is_none());
        bus.update_subscription(filter("other", &["events.z.>"], true))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Two buses on one state file would each save their whole set, the last
/// save erasing the other's subscribers: the second is refused.
#[tokio::test]
async fn a_second_bus_on_the_same_state_file_is_refused_until_the_first_is_gone() {
    let dir = common::temp_dir("second-bus");
    let path = dir.join("s.json");
    let first = EventBus::new(MemoryProvider::default());
    first
        .set_state_store(Arc::new(FileStateStore::new(&path)))
        .await
        .unwrap();
    first
        .update_subscription(filter("first", &["events.a.>"], true))
        .await
        .unwrap();
    let body = std::fs::read(&path).unwrap();

    let second = EventBus::new(MemoryProvider::default());
    second
        .update_subscription(filter("second", &["events.b.>"], true))
        .await
        .unwrap();
    let err = second
        .set_state_store(Arc::new(FileStateStore::new(&path)))
        .await
        .unwrap_err();
    match &err {
        Error::Conflict { resource, reason } => {
            assert!(resource.contains(&path.display().to_string()), "{resource}");
            assert!(reason.contains("another store or process"), "{reason}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), body, "the file changed");
    // the second bus has no store: its changes do not touch the file
    second
        .update_subscription(filter("later", &["events.b.>"], true))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body, "the file changed");
    // the first bus keeps saving
    first
        .update_subscription(filter("first-too", &["events.a.>"], true))
        .await
        .unwrap();
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("first-too"),
        "the first bus's change is not saved"
    );

    // once the first bus is gone, the second takes the file over and merges
    drop(first);
    second
        .set_state_store(Arc::new(FileStateStore::new(&path)))
        .await
        .unwrap();
    let ids: Vec<_> = second
        .list_subscriptions()
        .await
        .into_iter()
        .map(|f| f.subscriber_id)
        .collect();
    assert_eq!(ids, ["first", "first-too", "later", "second"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A bus sets its own state store again (here with another time limit)
/// through the store it has; a new store on the same file is refused, as
/// its docs say, and the bus keeps the store it had.
#[tokio::test]
async fn a_bus_sets_its_own_file_store_again_through_the_store_it_has() {
    let dir = common::temp_dir("same-store");
    let path = dir.join("s.json");
    let bus = EventBus::new(MemoryProvider::default());
    let store = Arc::new(FileStateStore::new(&path));
    bus.set_state_store(store.clone()).await.unwrap();
    bus.update_subscription(filter("a", &["events.a.>"], true))
        .await
        .unwrap();
    bus.set_state_store_with_timeout(store.clone(), std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let err = bus
        .set_state_store(Arc::new(FileStateStore::new(&path)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    // still saving through the store it had
    bus.update_subscription(filter("b", &["events.b.>"], true))
        .await
        .unwrap();
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(
        saved.contains("\"a\"") && saved.contains("\"b\""),
        "{saved}"
    );
    drop(bus);
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A memory provider whose durable subscribes wait for a gate, so a test can
/// act while a subscriber is being opened.
struct GatedProvider {
    inner: MemoryProvider,
    entered: tokio::sync::Notify,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl EventProvider for GatedProvider {
    async fn publish_with_options(
        &self,
        event: &event_core::Event,
        options: &event_core::PublishOptions,
    ) -> Result<u64> {
        self.inner.publish_with_options(event, options).await
    }
    async fn subscribe_with_options(
        &self,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.inner
            .subscribe_with_options(filter_subject, options)
            .await
    }
    async fn subscribe_durable_with_options(
        &self,
        consumer_name: &str,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.entered.notify_one();
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| Error::Closed("gate closed".into()))?;
        self.inner
            .subscribe_durable_with_options(consumer_name, filter_subject, options)
            .await
    }
    async fn history(
        &self,
        filter_subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<event_core::Event>> {
        self.inner.history(filter_subject, limit).await
    }
    async fn unsubscribe(&self, consumer_name: &str) -> Result<()> {
        self.inner.unsubscribe(consumer_name).await
    }
    async fn info(&self) -> Result<event_core::ProviderInfo> {
        self.inner.info().await
    }
    fn name(&self) -> &str {
        "gated-memory"
    }
}

#[tokio::test]
async fn a_subscriber_removed_while_it_is_being_opened_leaves_no_consumer_behind() {
    // create_subscriber read the record, then removal ran (deleting the
    // durables, none yet), then the durable was created: an orphan consumer
    // retaining events forever, and a live subscription for a removed
    // subscriber.
    let provider = Arc::new(GatedProvider {
        inner: MemoryProvider::default(),
        entered: tokio::sync::Notify::new(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let bus = EventBus::from_arc(provider.clone());
    bus.update_subscription(filter("a", &["events.x.>"], true))
        .await
        .unwrap();
    let create = tokio::spawn({
        let bus = bus.clone();
        async move { bus.create_subscriber("a").await }
    });
    provider.entered.notified().await;
    let remove = tokio::spawn({
        let bus = bus.clone();
        async move { bus.remove_subscription("a").await }
    });
    // let the removal run as far as it can
    tokio::time::sleep(Duration::from_millis(50)).await;
    provider.gate.add_permits(1);
    let created = create.await.unwrap();
    remove.await.unwrap().unwrap();
    assert!(bus.get_subscription("a").await.is_none());
    bus.publish("x", "t", "s", "src", json!(1)).await.unwrap();
    match created {
        Ok(mut subs) => {
            assert_eq!(subs.len(), 1);
            ends(&mut subs[0]).await;
        }
        Err(err) => assert!(matches!(err, Error::NotFound { .. }), "{err}"),
    }
    assert_eq!(
        provider.info().await.unwrap().consumers,
        0,
        "orphan consumer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_and_removals_leave_the_file_equal_to_the_bus() {
    let dir = common::temp_dir("churn");
    let path = dir.join("s.json");
    let bus = EventBus::new(MemoryProvider::default());
    let store = FileStateStore::new(&path);
    bus.set_state_store(Arc::new(store.clone())).await.unwrap();
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..25 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = format!("s{}", x % 6);
                    if x % 3 == 0 {
                        // NotFound when another task removed it first
                        let _ = bus.remove_subscription(&id).await;
                    } else {
                        let subject = format!("events.t{}.>", x % 4);
                        bus.update_subscription(filter(&id, &[&subject], x % 2 == 0))
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let on_bus = bus.list_subscription_records().await;
    assert_eq!(store.load().await.unwrap(), on_bus);
    // a restarted bus sees the same set
    drop((bus, store));
    let restarted = EventBus::new(MemoryProvider::default());
    restarted
        .set_state_store(Arc::new(FileStateStore::new(&path)))
        .await
        .unwrap();
    assert_eq!(restarted.list_subscription_records().await, on_bus);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_stored_subject_listed_twice_is_loaded_once_and_delivers_once() {
    let store = Arc::new(MemoryStateStore::new());
    store
        .save(&[SubscriptionRecord {
            filter: filter("twice", &["events.a.>", "events.a.>"], false),
            options: None,
        }])
        .await
        .unwrap();
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store).await.unwrap();
    let listed = bus.list_subscriptions().await;
    assert_eq!(listed[0].subjects, vec!["events.a.>".to_string()]);
    let mut subs = bus.create_subscriber("twice").await.unwrap();
    assert_eq!(subs.len(), 1);
    bus.publish("a", "x", "s", "src", json!(1)).await.unwrap();
    next(&mut subs[0]).await;
    let again = tokio::time::timeout(Duration::from_millis(200), subs[0].next()).await;
    assert!(again.is_err(), "delivered twice: {again:?}");
}

/// A memory provider refusing subscriptions on one subject, whose
/// subscriptions count their `close` calls.
struct RefusingProvider {
    inner: MemoryProvider,
    refused: &'static str,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

struct CountingClose {
    inner: Box<dyn Subscription>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl Subscription for CountingClose {
    async fn next(&mut self) -> Result<Option<event_core::ReceivedEvent>> {
        self.inner.next().await
    }
    async fn next_manual_ack(&mut self) -> Result<Option<event_core::PendingEvent>> {
        self.inner.next_manual_ack().await
    }
    async fn close(&mut self) -> Result<()> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        self.inner.close().await
    }
}

impl RefusingProvider {
    fn check(
        &self,
        subject: &str,
        sub: Result<Box<dyn Subscription>>,
    ) -> Result<Box<dyn Subscription>> {
        if subject == self.refused {
            return Err(Error::provider(
                "refusing",
                format!("{subject}: permission denied"),
            ));
        }
        Ok(Box::new(CountingClose {
            inner: sub?,
            closed: self.closed.clone(),
        }))
    }
}

#[async_trait]
impl EventProvider for RefusingProvider {
    async fn publish_with_options(
        &self,
        event: &event_core::Event,
        options: &event_core::PublishOptions,
    ) -> Result<u64> {
        self.inner.publish_with_options(event, options).await
    }
    async fn subscribe_with_options(
        &self,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let sub = self
            .inner
            .subscribe_with_options(filter_subject, options)
            .await;
        self.check(filter_subject, sub)
    }
    async fn subscribe_durable_with_options(
        &self,
        consumer_name: &str,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let sub = self
            .inner
            .subscribe_durable_with_options(consumer_name, filter_subject, options)
            .await;
        self.check(filter_subject, sub)
    }
    async fn history(
        &self,
        filter_subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<event_core::Event>> {
        self.inner.history(filter_subject, limit).await
    }
    async fn unsubscribe(&self, consumer_name: &str) -> Result<()> {
        self.inner.unsubscribe(consumer_name).await
    }
    async fn info(&self) -> Result<event_core::ProviderInfo> {
        self.inner.info().await
    }
    fn name(&self) -> &str {
        "refusing-memory"
    }
}

#[tokio::test]
async fn a_subscriber_that_fails_to_open_partway_counts_nothing_and_closes_what_it_opened() {
    // `subscribe_total` counts subscriptions opened by the bus; a subscriber
    // whose second subject was refused counted its first subscription,
    // which the caller never got (and which was dropped without `close`).
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bus = EventBus::new(RefusingProvider {
        inner: MemoryProvider::default(),
        refused: "events.denied.>",
        closed: closed.clone(),
    });
    for durable in [false, true] {
        let id = format!("partial-{durable}");
        bus.update_subscription(filter(&id, &["events.ok.>", "events.denied.>"], durable))
            .await
            .unwrap();
        let Err(err) = bus.create_subscriber(&id).await else {
            panic!("a refused subject fails the subscriber");
        };
        assert!(err.to_string().contains("permission denied"), "{err}");
        let consumed = bus
            .consume(
                &id,
                |_: event_core::ReceivedEvent| async { Ok::<(), Error>(()) },
                event_bus::ConsumerConfig::default(),
            )
            .await;
        let Err(err) = consumed else {
            panic!("a refused subject fails the consumer");
        };
        assert!(err.to_string().contains("permission denied"), "{err}");
    }
    assert_eq!(bus.metrics().snapshot().subscribe_total, 0);
    assert_eq!(
        closed.load(Ordering::SeqCst),
        4,
        "each opened subscription closed"
    );
    // A subscriber that opens completely counts one per subject.
    bus.update_subscription(filter("whole", &["events.ok.>", "events.fine.>"], true))
        .await
        .unwrap();
    assert_eq!(bus.create_subscriber("whole").await.unwrap().len(), 2);
    assert_eq!(bus.metrics().snapshot().subscribe_total, 2);
}

/// A subscriber declared with `update_subscription` (which keeps the
/// options it had) before the state store is set keeps the options stored
/// for it: the common start-up order (declare the subscribers, then load
/// the state) wiped a `max_deliver` set at run time from the bus and, on
/// the merged save, from the file, so the restarted consumer retried
/// poison events forever instead of dead-lettering them. Options set on
/// the bus (`update_subscription_with_options`, `set_subscription`) still
/// win over the stored ones, as the newer, and so does the filter.
#[tokio::test]
async fn a_subscriber_declared_before_the_store_is_set_keeps_its_stored_options() {
    let dir = common::temp_dir("declared-early");
    let path = dir.join("s.json");
    let stored = SubscribeOptions {
        max_deliver: Some(3),
        ..Default::default()
    };
    {
        let bus = EventBus::new(MemoryProvider::default());
        bus.set_state_store(Arc::new(FileStateStore::new(&path)))
            .await
            .unwrap();
        for id in ["kept", "replaced", "cleared"] {
            bus.update_subscription_with_options(filter(id, &["events.a.>"], true), stored.clone())
                .await
                .unwrap();
        }
    }
    // the restarted process declares its subscribers, then loads the state
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription(filter("kept", &["events.a.>", "events.b.>"], true))
        .await
        .unwrap();
    let newer = SubscribeOptions {
        max_deliver: Some(5),
        ..Default::default()
    };
    bus.update_subscription_with_options(filter("replaced", &["events.a.>"], true), newer.clone())
        .await
        .unwrap();
    bus.set_subscription(SubscriptionRecord {
        filter: filter("cleared", &["events.a.>"], true),
        options: None,
    })
    .await
    .unwrap();
    let store = FileStateStore::new(&path);
    bus.set_state_store(Arc::new(store.clone())).await.unwrap();
    let options = |records: &[SubscriptionRecord], id: &str| {
        records
            .iter()
            .find(|r| r.filter.subscriber_id == id)
            .map(|r| r.options.clone())
    };
    for records in [
        bus.list_subscription_records().await,
        store.load().await.unwrap(),
    ] {
        assert_eq!(options(&records, "kept"), Some(Some(stored.clone())));
        assert_eq!(options(&records, "replaced"), Some(Some(newer.clone())));
        assert_eq!(options(&records, "cleared"), Some(None));
        let kept = records
            .iter()
            .find(|r| r.filter.subscriber_id == "kept")
            .unwrap();
        assert_eq!(kept.filter.subjects, ["events.a.>", "events.b.>"]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A state store whose `load` or `save` (as switched) never answers, as a
/// store on a hung network mount or an unreachable database does.
#[derive(Default)]
struct HangingStore {
    hang_load: AtomicBool,
    hang_save: AtomicBool,
    inner: MemoryStateStore,
}

#[async_trait]
impl StateStore for HangingStore {
    async fn load(&self) -> Result<Vec<SubscriptionRecord>> {
        if self.hang_load.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.load().await
    }
    async fn save(&self, subscriptions: &[SubscriptionRecord]) -> Result<()> {
        if self.hang_save.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.save(subscriptions).await
    }
}

#[tokio::test]
async fn a_state_store_that_never_answers_times_out_and_does_not_freeze_the_bus() {
    let limit = Duration::from_millis(200);
    let store = Arc::new(HangingStore::default());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store_with_timeout(store.clone(), limit)
        .await
        .unwrap();
    bus.update_subscription(filter("a", &["events.>"], true))
        .await
        .unwrap();

    store.hang_save.store(true, Ordering::SeqCst);
    // the change is refused with a timeout, in about the limit, not never
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        bus.update_subscription(filter("b", &["events.>"], true)),
    )
    .await
    .expect("the update returns instead of hanging");
    match refused {
        Err(Error::Timeout { elapsed, operation }) => {
            assert_eq!(elapsed, limit);
            assert!(operation.contains("state"), "{operation}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let removed = tokio::time::timeout(Duration::from_secs(10), bus.remove_subscription("a"))
        .await
        .expect("the removal returns instead of hanging");
    assert!(matches!(removed, Err(Error::Timeout { .. })), "{removed:?}");

    // the bus is not frozen: it reads, and what it holds is what was saved
    let ids: Vec<_> = tokio::time::timeout(Duration::from_secs(10), bus.list_subscriptions())
        .await
        .expect("listing returns")
        .into_iter()
        .map(|f| f.subscriber_id)
        .collect();
    assert_eq!(ids, ["a"]);

    // once the store answers again, changes go through
    store.hang_save.store(false, Ordering::SeqCst);
    bus.update_subscription(filter("b", &["events.>"], true))
        .await
        .unwrap();
    assert_eq!(store.inner.load().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_state_store_whose_load_never_answers_is_not_set() {
    let limit = Duration::from_millis(200);
    let store = Arc::new(HangingStore::default());
    store.hang_load.store(true, Ordering::SeqCst);
    let bus = EventBus::new(MemoryProvider::default());
    let set = tokio::time::timeout(
        Duration::from_secs(10),
        bus.set_state_store_with_timeout(store.clone(), limit),
    )
    .await
    .expect("returns instead of hanging");
    assert!(matches!(set, Err(Error::Timeout { .. })), "{set:?}");
    // the store was not set: changes are not saved to it, and do not hang
    store.hang_load.store(false, Ordering::SeqCst);
    store.hang_save.store(true, Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(10),
        bus.update_subscription(filter("a", &["events.>"], true)),
    )
    .await
    .expect("not saved to the store that was refused")
    .unwrap();
}

/// A filter that matches no subject the provider publishes (`orders.>`
/// under the prefix `events`; `events.orders`, a category without a topic)
/// is refused by every call that adds or changes a subscriber, with the
/// error `create_subscriber` gives for it, before anything is saved or
/// changed.
#[tokio::test]
async fn a_filter_outside_the_provider_prefix_is_refused_before_it_is_saved() {
    let store = Arc::new(MemoryStateStore::new());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store.clone()).await.unwrap();
    bus.update_subscription(filter("kept", &["events.orders.>"], true))
        .await
        .unwrap();
    let saves = store.saves();
    let before = store.load().await.unwrap();

    // what create_subscriber says of such a filter: a record loaded from a
    // store (not checked against the prefix) that names it
    let probe = Arc::new(MemoryStateStore::new());
    for bad in ["orders.>", "events.orders"] {
        probe
            .save(&[SubscriptionRecord {
                filter: filter("probe", &[bad], true),
                options: None,
            }])
            .await
            .unwrap();
        let other = EventBus::new(MemoryProvider::default());
        other.set_state_store(probe.clone()).await.unwrap();
        let expected = match other.create_subscriber("probe").await {
            Err(err @ Error::InvalidSubject { .. }) => err.to_string(),
            Err(err) => panic!("create_subscriber({bad:?}): unexpected {err:?}"),
            Ok(_) => panic!("create_subscriber({bad:?}) accepted it"),
        };
        assert!(
            expected.contains("matches no subject this provider publishes"),
            "{expected}"
        );

        for id in ["new", "kept"] {
            for durable in [true, false] {
                let f = filter(id, &["events.ok.>", bad], durable);
                let calls = [
                    bus.update_subscription(f.clone()).await,
                    bus.update_subscription_with_options(f.clone(), SubscribeOptions::default())
                        .await,
                    bus.set_subscription(SubscriptionRecord {
                        filter: f.clone(),
                        options: None,
                    })
                    .await,
                ];
                for (i, result) in calls.into_iter().enumerate() {
                    match result {
                        Err(err @ Error::InvalidSubject { .. }) => {
                            assert_eq!(err.to_string(), expected, "call {i}, {id}, {bad:?}");
                        }
                        other => panic!("call {i} for {id} with {bad:?}: {other:?}"),
                    }
                }
            }
        }
    }
    // nothing saved, nothing changed
    assert_eq!(store.saves(), saves);
    assert_eq!(store.load().await.unwrap(), before);
    assert!(bus.get_subscription("new").await.is_none());
    assert_eq!(
        bus.get_subscription("kept").await.unwrap().subjects,
        ["events.orders.>"]
    );
}

/// A stored subscriber whose filters lie outside the provider's prefix (a
/// file written under another prefix) still loads, and stays stored: it
/// cannot be opened, other subscribers change as usual, and it can be
/// given valid subjects or removed.
#[tokio::test]
async fn a_stored_subscriber_under_another_prefix_still_loads_and_can_be_fixed() {
    let store = Arc::new(MemoryStateStore::new());
    let foreign = SubscriptionRecord {
        filter: filter("old", &["orders.>"], true),
        options: None,
    };
    store.save(std::slice::from_ref(&foreign)).await.unwrap();
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store.clone()).await.unwrap();
    assert_eq!(
        bus.get_subscription_record("old").await,
        Some(foreign.clone())
    );
    assert!(matches!(
        bus.create_subscriber("old").await,
        Err(Error::InvalidSubject { .. })
    ));
    bus.update_subscription(filter("other", &["events.a.>"], true))
        .await
        .unwrap();
    assert!(store.load().await.unwrap().contains(&foreign));
    bus.update_subscription(filter("old", &["events.orders.>"], true))
        .await
        .unwrap();
    assert_eq!(bus.create_subscriber("old").await.unwrap().len(), 1);
}

/// The documented way to register many subscribers at start-up: added
/// before the state store is set, they are merged with the stored ones in
/// one save, not one save (of the whole set) per subscriber.
#[tokio::test]
async fn subscribers_added_before_the_store_is_set_are_saved_once() {
    let store = Arc::new(MemoryStateStore::new());
    store
        .save(&[SubscriptionRecord {
            filter: filter("stored", &["events.s.>"], true),
            options: None,
        }])
        .await
        .unwrap();
    let bus = EventBus::new(MemoryProvider::default());
    for i in 0..200 {
        bus.update_subscription(filter(&format!("s{i}"), &["events.a.>"], true))
            .await
            .unwrap();
    }
    let before = store.saves();
    bus.set_state_store(store.clone()).await.unwrap();
    assert_eq!(store.saves() - before, 1);
    assert_eq!(store.load().await.unwrap().len(), 201);
    assert_eq!(bus.list_subscriptions().await.len(), 201);
}

/// A state store whose save panics while `panic` is set.
#[derive(Default)]
struct PanickingStore {
    panic: AtomicBool,
    inner: MemoryStateStore,
}

#[async_trait]
impl StateStore for PanickingStore {
    async fn load(&self) -> Result<Vec<SubscriptionRecord>> {
        self.inner.load().await
    }
    async fn save(&self, subscriptions: &[SubscriptionRecord]) -> Result<()> {
        assert!(!self.panic.load(Ordering::SeqCst), "a state store bug");
        self.inner.save(subscriptions).await
    }
}

/// A change whose save panics is refused and not applied, and a later save
/// does not carry it into the store either.
#[tokio::test]
async fn a_change_whose_save_panics_is_not_applied() {
    let store = Arc::new(PanickingStore::default());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store.clone()).await.unwrap();
    bus.update_subscription(filter("a", &["events.>"], true))
        .await
        .unwrap();
    store.panic.store(true, Ordering::SeqCst);
    assert!(
        bus.update_subscription(filter("b", &["events.>"], true))
            .await
            .is_err()
    );
    assert!(
        bus.update_subscription(filter("a", &["events.orders.>"], true))
            .await
            .is_err()
    );
    assert!(bus.remove_subscription("a").await.is_err());
    let subjects = |records: Vec<SubscriptionFilter>| -> Vec<(String, Vec<String>)> {
        records
            .into_iter()
            .map(|f| (f.subscriber_id, f.subjects))
            .collect()
    };
    let only_a = vec![("a".to_owned(), vec!["events.>".to_owned()])];
    assert_eq!(subjects(bus.list_subscriptions().await), only_a);
    store.panic.store(false, Ordering::SeqCst);
    bus.update_subscription(filter("c", &["events.c.>"], true))
        .await
        .unwrap();
    let stored: Vec<_> = store
        .inner
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.filter)
        .collect();
    assert_eq!(
        subjects(stored),
        [
            only_a[0].clone(),
            ("c".to_owned(), vec!["events.c.>".to_owned()])
        ]
    );
}

/// A subscriber whose ack wait or backoff step is not a whole number of
/// milliseconds (the unit of the state file) opens before a restart, and
/// after one: restored from the file, it still opens, with waits no
/// shorter than it was given (a 500 µs ack wait once came back as 0, which
/// every provider refuses, and the subscriber could not open again).
#[tokio::test]
async fn a_subscriber_with_sub_millisecond_waits_still_opens_after_a_restart() {
    let dir = common::temp_dir("sub-ms");
    let path = dir.join("s.json");
    let waits = [
        SubscribeOptions {
            ack_wait: Some(Duration::from_micros(500)),
            ..Default::default()
        },
        SubscribeOptions {
            backoff: vec![Duration::from_micros(250), Duration::from_micros(1_500)],
            max_deliver: Some(3),
            ..Default::default()
        },
    ];
    {
        let bus = EventBus::new(MemoryProvider::default());
        bus.set_state_store(Arc::new(FileStateStore::new(&path)))
            .await
            .unwrap();
        for (i, options) in waits.iter().enumerate() {
            let id = format!("s{i}");
            bus.update_subscription_with_options(
                filter(&id, &["events.a.>"], true),
                options.clone(),
            )
            .await
            .unwrap();
            bus.create_subscriber(&id).await.unwrap();
        }
    }
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(Arc::new(FileStateStore::new(&path)))
        .await
        .unwrap();
    for (i, given) in waits.iter().enumerate() {
        let id = format!("s{i}");
        let restored = bus
            .get_subscription_record(&id)
            .await
            .unwrap()
            .options
            .unwrap();
        let (was, is) = (given.redelivery_delay(1), restored.redelivery_delay(1));
        assert!(is >= was, "{id}: restored wait {is:?} shorter than {was:?}");
        let (was, is) = (given.redelivery_delay(2), restored.redelivery_delay(2));
        assert!(is >= was, "{id}: restored wait {is:?} shorter than {was:?}");
        if let Err(err) = bus.create_subscriber(&id).await {
            panic!("{id} ({restored:?}) no longer opens after a restart: {err}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A subscriber declared before the state store is set replaces its
/// stored record (the newer wins): the durable consumers of the stored
/// subjects it no longer has, or of all of them when it is no longer
/// durable, are deleted, as an update replacing the record after the store
/// was set deletes them. (They were left on the provider, named in no
/// record, for good: with the file saved without them, nothing would ever
/// delete them, and on JetStream they keep their messages.)
#[tokio::test]
async fn a_subscriber_declared_before_the_store_deletes_the_durables_its_stored_record_drops() {
    let dir = common::temp_dir("declared-drops");
    let path = dir.join("s.json");
    let provider = Arc::new(MemoryProvider::default());
    {
        let bus = EventBus::from_arc(provider.clone());
        bus.set_state_store(Arc::new(FileStateStore::new(&path)))
            .await
            .unwrap();
        bus.update_subscription(filter(
            "analyst",
            &["events.market.>", "events.system.>"],
            true,
        ))
        .await
        .unwrap();
        bus.update_subscription(filter("auditor", &["events.audit.>"], true))
            .await
            .unwrap();
        for id in ["analyst", "auditor"] {
            for mut sub in bus.create_subscriber(id).await.unwrap() {
                sub.close().await.unwrap();
            }
        }
    }
    assert_eq!(provider.info().await.unwrap().consumers, 3);
    // the restarted process declares its subscribers as its code now has
    // them, then loads the state
    let bus = EventBus::from_arc(provider.clone());
    bus.update_subscription(filter("analyst", &["events.market.>"], true))
        .await
        .unwrap();
    bus.update_subscription(filter("auditor", &["events.audit.>"], false))
        .await
        .unwrap();
    bus.set_state_store(Arc::new(FileStateStore::new(&path)))
        .await
        .unwrap();
    for (id, subject) in [
        ("analyst", "events.system.>"),
        ("auditor", "events.audit.>"),
    ] {
        let name = durable_consumer_name(id, subject);
        assert!(
            matches!(
                provider.unsubscribe(&name).await,
                Err(Error::NotFound { .. })
            ),
            "the durable {name} of a subject the stored record had is left on the provider"
        );
    }
    // the one the subscriber kept is still there, and resumes
    assert_eq!(provider.info().await.unwrap().consumers, 1);
    provider
        .unsubscribe(&durable_consumer_name("analyst", "events.market.>"))
        .await
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
