//! Subscription changes in batches (`update_subscriptions`,
//! `set_subscriptions`: one save for many subscribers) and the
//! `state_save_errors` metric.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_trait::async_trait;
use common::{ends, filter};
use event_bus::{EventBus, MemoryStateStore, durable_consumer_name};
use event_core::{
    Error, EventProvider, Result, StateStore, SubscribeOptions, Subscription, SubscriptionFilter,
    SubscriptionRecord,
};
use event_memory::MemoryProvider;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn with_max_deliver(filter: SubscriptionFilter, max_deliver: u64) -> SubscriptionRecord {
    SubscriptionRecord {
        filter,
        options: Some(SubscribeOptions {
            max_deliver: Some(max_deliver),
            ..Default::default()
        }),
    }
}

/// `(id, subjects)` of each filter, in order.
fn summary(filters: Vec<SubscriptionFilter>) -> Vec<(String, Vec<String>)> {
    filters
        .into_iter()
        .map(|f| (f.subscriber_id, f.subjects))
        .collect()
}

async fn stored(store: &dyn StateStore) -> Vec<(String, Vec<String>)> {
    summary(
        store
            .load()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.filter)
            .collect(),
    )
}

/// A state store whose saves fail, hang or panic, as switched.
#[derive(Default)]
struct FaultyStore {
    fail: AtomicBool,
    hang: AtomicBool,
    panic: AtomicBool,
    inner: MemoryStateStore,
}

#[async_trait]
impl StateStore for FaultyStore {
    async fn load(&self) -> Result<Vec<SubscriptionRecord>> {
        self.inner.load().await
    }
    async fn save(&self, subscriptions: &[SubscriptionRecord]) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Connection("disk gone".into()));
        }
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        assert!(!self.panic.load(Ordering::SeqCst), "a state store bug");
        self.inner.save(subscriptions).await
    }
}

#[tokio::test]
async fn a_batch_is_saved_once_and_keeps_or_sets_options() {
    let store = Arc::new(MemoryStateStore::new());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store.clone()).await.unwrap();
    bus.set_subscription(with_max_deliver(filter("b", &["events.b.>"], true), 3))
        .await
        .unwrap();
    let before = store.saves();
    bus.update_subscriptions([
        filter("c", &["events.c.>"], false),
        filter("a", &["events.a.>"], true),
        filter("b", &["events.b.x"], true),
    ])
    .await
    .unwrap();
    assert_eq!(store.saves() - before, 1, "one save for the batch");
    let all = vec![
        ("a".to_owned(), vec!["events.a.>".to_owned()]),
        ("b".to_owned(), vec!["events.b.x".to_owned()]),
        ("c".to_owned(), vec!["events.c.>".to_owned()]),
    ];
    assert_eq!(summary(bus.list_subscriptions().await), all);
    assert_eq!(stored(&*store).await, all);
    // update_subscriptions keeps the options a subscriber had
    let b = bus.get_subscription_record("b").await.unwrap();
    assert_eq!(b.options.unwrap().max_deliver, Some(3));

    // set_subscriptions sets them exactly, `None` clearing them
    bus.set_subscriptions([
        SubscriptionRecord {
            filter: filter("b", &["events.b.>"], true),
            options: None,
        },
        with_max_deliver(filter("c", &["events.c.>"], false), 7),
    ])
    .await
    .unwrap();
    assert_eq!(store.saves() - before, 2);
    assert_eq!(
        bus.get_subscription_record("b").await.unwrap().options,
        None
    );
    let records = store.load().await.unwrap();
    assert_eq!(records[1].options, None);
    assert_eq!(records[2].options.as_ref().unwrap().max_deliver, Some(7));

    // an empty batch saves nothing
    bus.update_subscriptions([]).await.unwrap();
    bus.set_subscriptions([]).await.unwrap();
    assert_eq!(store.saves() - before, 2);
}

#[tokio::test]
async fn a_subscriber_given_twice_refuses_the_batch() {
    let store = Arc::new(MemoryStateStore::new());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store.clone()).await.unwrap();
    let before = store.saves();
    let twice = bus
        .update_subscriptions([
            filter("a", &["events.a.>"], true),
            filter("b", &["events.b.>"], true),
            filter("a", &["events.c.>"], true),
        ])
        .await;
    match twice {
        Err(Error::InvalidConfig { reason, .. }) => {
            assert!(reason.contains("\"a\" is given twice"), "{reason}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let twice = bus
        .set_subscriptions([
            with_max_deliver(filter("x", &["events.x.>"], true), 1),
            with_max_deliver(filter("x", &["events.x.>"], true), 2),
        ])
        .await;
    assert!(
        matches!(twice, Err(Error::InvalidConfig { .. })),
        "{twice:?}"
    );
    assert!(bus.list_subscriptions().await.is_empty());
    assert_eq!(store.saves(), before);
}

#[tokio::test]
async fn one_invalid_filter_refuses_the_batch() {
    let store = Arc::new(MemoryStateStore::new());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store.clone()).await.unwrap();
    bus.update_subscription(filter("a", &["events.a.>"], true))
        .await
        .unwrap();
    let before = store.saves();
    let only_a = vec![("a".to_owned(), vec!["events.a.>".to_owned()])];
    // a subject outside the provider's prefix, as update_subscription refuses it
    let refused = bus
        .update_subscriptions([
            filter("a", &["events.z.>"], true),
            filter("b", &["orders.>"], true),
            filter("c", &["events.c.>"], true),
        ])
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidSubject { .. })),
        "{refused:?}"
    );
    // no subjects, last in the batch
    let refused = bus
        .set_subscriptions([
            with_max_deliver(filter("a", &["events.z.>"], true), 1),
            with_max_deliver(filter("d", &[], true), 1),
        ])
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidConfig { .. })),
        "{refused:?}"
    );
    assert_eq!(summary(bus.list_subscriptions().await), only_a);
    assert_eq!(
        bus.get_subscription_record("a").await.unwrap().options,
        None
    );
    assert_eq!(store.saves(), before);
    assert_eq!(stored(&*store).await, only_a);
}

#[tokio::test]
async fn a_refused_save_changes_nothing_and_counts() {
    let store = Arc::new(FaultyStore::default());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store(store.clone()).await.unwrap();
    bus.update_subscription(filter("a", &["events.a.>"], true))
        .await
        .unwrap();
    assert_eq!(bus.metrics().snapshot().state_save_errors, 0);
    store.fail.store(true, Ordering::SeqCst);
    let refused = bus
        .update_subscriptions([
            filter("a", &["events.z.>"], true),
            filter("b", &["events.b.>"], true),
        ])
        .await;
    assert!(matches!(refused, Err(Error::Connection(_))), "{refused:?}");
    let only_a = vec![("a".to_owned(), vec!["events.a.>".to_owned()])];
    assert_eq!(summary(bus.list_subscriptions().await), only_a);
    assert_eq!(stored(&store.inner).await, only_a);
    assert_eq!(bus.metrics().snapshot().state_save_errors, 1);
    // the single calls count too
    assert!(bus.remove_subscription("a").await.is_err());
    assert_eq!(bus.metrics().snapshot().state_save_errors, 2);
    // as does a panicking save
    store.fail.store(false, Ordering::SeqCst);
    store.panic.store(true, Ordering::SeqCst);
    assert!(
        bus.update_subscription(filter("b", &["events.b.>"], true))
            .await
            .is_err()
    );
    assert_eq!(summary(bus.list_subscriptions().await), only_a);
    assert_eq!(bus.metrics().snapshot().state_save_errors, 3);
    // a save that works counts nothing
    store.panic.store(false, Ordering::SeqCst);
    bus.update_subscription(filter("b", &["events.b.>"], true))
        .await
        .unwrap();
    assert_eq!(bus.metrics().snapshot().state_save_errors, 3);
}

#[tokio::test]
async fn a_refused_merge_save_of_set_state_store_counts() {
    let store = Arc::new(FaultyStore::default());
    store.fail.store(true, Ordering::SeqCst);
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription(filter("a", &["events.a.>"], true))
        .await
        .unwrap();
    let set = bus.set_state_store(store.clone()).await;
    assert!(matches!(set, Err(Error::Connection(_))), "{set:?}");
    assert_eq!(bus.metrics().snapshot().state_save_errors, 1);
    // not set: changes are not saved to it (and count nothing)
    bus.update_subscription(filter("b", &["events.b.>"], true))
        .await
        .unwrap();
    assert_eq!(bus.metrics().snapshot().state_save_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn a_save_that_times_out_changes_nothing_and_counts() {
    let limit = Duration::from_secs(2);
    let store = Arc::new(FaultyStore::default());
    let bus = EventBus::new(MemoryProvider::default());
    bus.set_state_store_with_timeout(store.clone(), limit)
        .await
        .unwrap();
    store.hang.store(true, Ordering::SeqCst);
    let refused = bus
        .update_subscriptions([
            filter("a", &["events.a.>"], true),
            filter("b", &["events.b.>"], true),
        ])
        .await;
    match refused {
        Err(Error::Timeout { elapsed, .. }) => assert_eq!(elapsed, limit),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(bus.list_subscriptions().await.is_empty());
    assert_eq!(bus.metrics().snapshot().state_save_errors, 1);
    let text = bus.metrics().snapshot().to_prometheus();
    assert!(
        text.contains("\na3s_event_state_save_errors_total 1\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_batch_deletes_the_durables_of_the_subjects_it_drops() {
    let provider = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    bus.update_subscriptions([
        filter("a", &["events.a.>"], true),
        filter("m", &["events.m.>", "events.n.>"], true),
        filter("u", &["events.u.>"], true),
    ])
    .await
    .unwrap();
    for id in ["a", "m", "u"] {
        bus.create_subscriber(id).await.unwrap();
    }
    assert_eq!(provider.info().await.unwrap().consumers, 4);
    let gone = |id: &str, subject: &str| {
        let provider = provider.clone();
        let name = durable_consumer_name(id, subject);
        async move {
            matches!(
                provider.unsubscribe(&name).await,
                Err(Error::NotFound { .. })
            )
        }
    };
    // "m" drops a subject, "u" becomes ephemeral (every durable goes), "a"
    // is unchanged, "new" is added
    bus.update_subscriptions([
        filter("a", &["events.a.>"], true),
        filter("m", &["events.m.>"], true),
        filter("new", &["events.x.>"], true),
        filter("u", &["events.u.>"], false),
    ])
    .await
    .unwrap();
    assert!(gone("m", "events.n.>").await);
    assert!(gone("u", "events.u.>").await);
    assert_eq!(provider.info().await.unwrap().consumers, 2);
    // those kept are still there (deleted now by the test itself)
    assert!(!gone("a", "events.a.>").await);
    assert!(!gone("m", "events.m.>").await);
}

async fn next_id(sub: &mut Box<dyn Subscription>) -> String {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("an event in time")
        .expect("no error")
        .expect("open")
        .event
        .id
        .clone()
}

/// A subscription looks at a change only when the change names its
/// subscriber (or several changes came at once): a batch names every
/// subscriber it changes, the one in the middle of it too.
#[tokio::test]
async fn a_batch_ends_the_subscriptions_it_drops_and_leaves_the_others() {
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscriptions([
        filter("mine", &["events.a.>", "events.b.>"], false),
        filter("other", &["events.a.>"], false),
    ])
    .await
    .unwrap();
    let mut mine = bus.create_subscriber("mine").await.unwrap();
    let mut other = bus.create_subscriber("other").await.unwrap().remove(0);
    let mut dropped = mine.pop().unwrap();
    let mut kept = mine.pop().unwrap();
    // waiting while the batch comes
    let waiting = tokio::spawn(async move {
        ends(&mut dropped).await;
        dropped
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.update_subscriptions([
        filter("first", &["events.c.>"], false),
        filter("mine", &["events.a.>"], false),
        filter("zlast", &["events.c.>"], false),
    ])
    .await
    .unwrap();
    let mut dropped = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the dropped subject's subscription ended")
        .unwrap();
    let b = bus.publish("b", "x", "s", "src", json!(1)).await.unwrap();
    let a = bus.publish("a", "x", "s", "src", json!(2)).await.unwrap();
    ends(&mut dropped).await;
    // the subject kept, and the subscriber left out of the batch, deliver
    assert_eq!(next_id(&mut kept).await, a.id);
    assert_eq!(next_id(&mut other).await, a.id);
    drop(b);

    // a batch that makes the subscriber durable ends its ephemeral
    // subscriptions, also when they look at it only afterwards
    bus.set_subscriptions([
        SubscriptionRecord {
            filter: filter("another", &["events.c.>"], false),
            options: None,
        },
        SubscriptionRecord {
            filter: filter("mine", &["events.a.>"], true),
            options: None,
        },
    ])
    .await
    .unwrap();
    ends(&mut kept).await;
    let a2 = bus.publish("a", "x", "s", "src", json!(3)).await.unwrap();
    assert_eq!(next_id(&mut other).await, a2.id);
}

/// Passes `future` through, and fails to compile unless it is `Send` (so it
/// can be spawned, or held across an `.await` in a spawned task).
fn sendable<F: std::future::Future + Send>(future: F) -> F {
    future
}

/// A batch is taken from its iterator when the call is made, so the future
/// does not hold the iterator: a batch built from data that is not `Send`
/// (here an `Rc` the mapping closures hold) still gives a `Send` future.
#[tokio::test]
async fn a_batch_from_an_iterator_that_is_not_send_gives_a_send_future() {
    let bus = EventBus::new(MemoryProvider::default());
    let names = std::rc::Rc::new(["a", "b"]);
    let filters = {
        let names = names.clone();
        (0..2).map(move |i| filter(names[i], &["events.jobs.>"], true))
    };
    let records =
        (0..2).map(move |i| with_max_deliver(filter(names[i], &["events.jobs.>"], false), 3));
    sendable(bus.update_subscriptions(filters)).await.unwrap();
    assert!(
        bus.get_subscription_record("a")
            .await
            .unwrap()
            .filter
            .durable
    );
    sendable(bus.set_subscriptions(records)).await.unwrap();
    let b = bus.get_subscription_record("b").await.unwrap();
    assert!(!b.filter.durable);
    assert_eq!(b.options.unwrap().max_deliver, Some(3));
}

/// Two changes land before the subscription looks: a batch leaving it out,
/// then one naming it (either order). It must look, and end.
#[tokio::test]
async fn coalesced_changes_are_checked_whatever_their_order() {
    for batch_first in [true, false] {
        let bus = EventBus::new(MemoryProvider::default());
        bus.update_subscriptions([
            filter("mine", &["events.a.>"], false),
            filter("other", &["events.b.>"], false),
        ])
        .await
        .unwrap();
        let mut sub = bus.create_subscriber("mine").await.unwrap().remove(0);
        if batch_first {
            bus.update_subscriptions([filter("other", &["events.c.>"], false)])
                .await
                .unwrap();
            bus.remove_subscription("mine").await.unwrap();
        } else {
            bus.remove_subscription("mine").await.unwrap();
            bus.update_subscriptions([filter("other", &["events.c.>"], false)])
                .await
                .unwrap();
        }
        bus.publish("a", "x", "s", "src", json!(1)).await.unwrap();
        ends(&mut sub).await;
    }
}

/// A batch naming the subscriber but keeping its subject: the subscription
/// looks (takes the lock) and stays open.
#[tokio::test]
async fn a_batch_naming_the_subscriber_and_keeping_the_subject_keeps_it() {
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscription(filter("mine", &["events.a.>"], false))
        .await
        .unwrap();
    let mut sub = bus.create_subscriber("mine").await.unwrap().remove(0);
    bus.update_subscriptions([
        filter("aaa", &["events.c.>"], false),
        filter("mine", &["events.a.>", "events.b.>"], false),
    ])
    .await
    .unwrap();
    let e = bus.publish("a", "x", "s", "src", json!(1)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .expect("open");
    assert_eq!(got.event.id, e.id);
}

/// `remove_subscriptions` removes several subscribers in one save: their
/// subscriptions end and their durables are deleted; an unknown or repeated
/// id removes nothing.
#[tokio::test]
async fn several_subscribers_are_removed_in_one_save_or_not_at_all() {
    let provider = Arc::new(MemoryProvider::default());
    let bus = EventBus::from_arc(provider.clone());
    let store = Arc::new(MemoryStateStore::new());
    bus.set_state_store(store.clone()).await.unwrap();
    bus.update_subscriptions([
        filter("a", &["events.a.>"], true),
        filter("m", &["events.m.>", "events.n.>"], true),
        filter("e", &["events.e.>"], false),
        filter("keep", &["events.k.>"], true),
    ])
    .await
    .unwrap();
    let mut opened = Vec::new();
    for id in ["a", "m", "e", "keep"] {
        opened.push(bus.create_subscriber(id).await.unwrap());
    }
    assert_eq!(provider.info().await.unwrap().consumers, 5);

    // refused, nothing removed
    let before = store.saves();
    assert!(matches!(
        bus.remove_subscriptions(["a", "nobody"]).await,
        Err(Error::NotFound { name, .. }) if name == "nobody"
    ));
    assert!(matches!(
        bus.remove_subscriptions(["a", "m", "a"]).await,
        Err(Error::InvalidConfig { .. })
    ));
    assert_eq!(store.saves(), before);
    assert_eq!(bus.list_subscriptions().await.len(), 4);
    bus.remove_subscriptions([]).await.unwrap();
    assert_eq!(store.saves(), before, "no ids: nothing to save");

    bus.remove_subscriptions(["a", "m", "e"]).await.unwrap();
    assert_eq!(store.saves() - before, 1, "one save for the batch");
    assert_eq!(
        summary(bus.list_subscriptions().await),
        [("keep".to_owned(), vec!["events.k.>".to_owned()])]
    );
    assert_eq!(stored(&*store).await.len(), 1);
    for (id, subject) in [
        ("a", "events.a.>"),
        ("m", "events.m.>"),
        ("m", "events.n.>"),
    ] {
        let name = durable_consumer_name(id, subject);
        assert!(
            matches!(
                provider.unsubscribe(&name).await,
                Err(Error::NotFound { .. })
            ),
            "{name} deleted"
        );
    }
    for subs in opened.iter_mut().take(3) {
        for sub in subs.iter_mut() {
            ends(sub).await;
        }
    }
    // "e"'s ephemeral consumer goes with its subscription
    opened.truncate(3);
    opened.remove(2);
    assert_eq!(provider.info().await.unwrap().consumers, 1);
    assert_eq!(bus.metrics().snapshot().unsubscribe_total, 3);
}

/// Tens of thousands of ids in one `remove_subscriptions` call are checked
/// for repeats in linear time, as `update_subscriptions` checks its
/// filters: the call answers at once (here `NotFound`, nothing removed).
#[tokio::test]
async fn removing_many_subscribers_at_once_checks_their_ids_in_linear_time() {
    let bus = EventBus::new(MemoryProvider::default());
    let ids: Vec<String> = (0..60_000).map(|i| format!("subscriber-{i}")).collect();
    let started = std::time::Instant::now();
    let result = bus
        .remove_subscriptions(ids.iter().map(String::as_str))
        .await;
    let took = started.elapsed();
    assert!(
        matches!(&result, Err(Error::NotFound { name, .. }) if name == "subscriber-0"),
        "{result:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "checking 60,000 ids for repeats took {took:?}"
    );
}

/// `remove_subscriptions` too takes its ids when the call is made: ids
/// from data that is not `Send` (an `Rc`) still give a `Send` future, as
/// `update_subscriptions` and `set_subscriptions` do.
#[tokio::test]
async fn removing_with_ids_that_are_not_send_gives_a_send_future() {
    let bus = EventBus::new(MemoryProvider::default());
    bus.update_subscriptions([
        filter("a", &["events.jobs.>"], true),
        filter("b", &["events.jobs.>"], false),
    ])
    .await
    .unwrap();
    let names = std::rc::Rc::new(["a", "b"]);
    let ids = (0..2).map(move |i| names[i]);
    sendable(bus.remove_subscriptions(ids)).await.unwrap();
    assert!(bus.list_subscriptions().await.is_empty());
}
