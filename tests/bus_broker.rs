//! EventBus + Broker: the hand-off to a full broker queue, end to end.
#![cfg(all(feature = "memory", feature = "routing"))]
#![allow(clippy::unwrap_used)]

use a3s_event::provider::memory::MemoryProvider;
use a3s_event::routing::{
    Broker, BrokerConfig, CollectorSink, EventSink, InProcessSink, QueueFullError, QueueFullPolicy,
    Trigger, TriggerFilter,
};
use a3s_event::{Event, EventBus};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

fn is_queue_full(err: &a3s_event::Error) -> bool {
    std::error::Error::source(err).is_some_and(|s| s.downcast_ref::<QueueFullError>().is_some())
}

#[tokio::test]
async fn a_full_broker_queue_under_reject_refuses_at_once_visibly_and_a_retry_is_routed() {
    let bus = EventBus::new(MemoryProvider::default());
    let broker = Broker::with_config(BrokerConfig {
        queue_capacity: 1,
        workers: 1,
        full_policy: QueueFullPolicy::Reject,
        ..BrokerConfig::default()
    })
    .unwrap();
    // a sink that holds the only worker until the gate opens
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(Semaphore::new(0));
    let done = Arc::new(CollectorSink::new("done"));
    let sink = {
        let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
        Arc::new(InProcessSink::new("gated", move |e| {
            let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
            async move {
                started.add_permits(1);
                gate.acquire().await.unwrap().forget();
                done.deliver(&e).await
            }
        }))
    };
    broker
        .add_trigger(Trigger::new("gated", TriggerFilter::all(), sink))
        .unwrap();
    broker.attach(&bus);

    bus.publish("orders", "new", "one", "shop", json!(1))
        .await
        .unwrap();
    started.acquire().await.unwrap().forget(); // the worker holds event one
    bus.publish("orders", "new", "two", "shop", json!(2))
        .await
        .unwrap(); // queued

    // the third finds the queue full: refused at once, not waited for
    let third = Event::new("events.orders.new", "orders", "three", "shop", json!(3));
    let err = tokio::time::timeout(Duration::from_secs(5), bus.publish_event(&third))
        .await
        .expect("a Reject broker never makes the publisher wait")
        .unwrap_err();
    assert!(is_queue_full(&err), "{err}");
    let batch = tokio::time::timeout(
        Duration::from_secs(5),
        bus.publish_batch(std::slice::from_ref(&third)),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(is_queue_full(batch[0].as_ref().unwrap_err()));

    // stored all the same, and counted: in the bus (stored publishes the
    // router refused, not failed publishes) and in the broker
    assert_eq!(bus.provider().info().await.unwrap().messages, 3);
    let m = bus.metrics().snapshot();
    assert_eq!(
        (m.publish_total, m.publish_errors, m.router_errors),
        (4, 0, 2)
    );
    let b = broker.metrics();
    assert_eq!((b.rejected, b.queue_full), (2, 2));

    // once there is room, a retry of the same event is deduplicated by the
    // provider and routed
    gate.add_permits(10);
    broker.wait_idle().await;
    assert_eq!(bus.publish_event(&third).await.unwrap(), 3);
    broker.wait_idle().await;
    assert_eq!(bus.provider().info().await.unwrap().messages, 3);
    let routed: Vec<String> = done.events().into_iter().map(|e| e.summary).collect();
    assert_eq!(routed, ["one", "two", "three"]);
}
