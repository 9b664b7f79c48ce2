//! Knative-style routing on an EventBus: triggers with filters, a topic sink
//! through the bus pipeline, retries and a dead-letter sink, a cron source
//! and typed scaling events.
//!
//! Run with `cargo run --example routing` (in an application: `a3s-event`
//! with the feature `routing`).

use a3s_event::EventBus;
use a3s_event::provider::memory::MemoryProvider;
use a3s_event::routing::scaling::{ScaleUpPayload, ScalingEvent};
use a3s_event::routing::{
    BackoffPolicy, Broker, CollectorSink, CronSource, DeliverySpec, EventSource, FailingSink,
    FilterExpr, InProcessSink, LogSink, SinkDlqHandler, TopicSink, Trigger, TriggerFilter,
};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> a3s_event::Result<()> {
    let bus = EventBus::new(MemoryProvider::default());
    let broker = Broker::new();
    broker.attach(&bus); // every published event is queued for routing

    // 1. Forex events from anyone but test sources go to an in-process handler.
    broker.add_trigger(Trigger::new(
        "forex-alerts",
        TriggerFilter::by_subject("events.market.forex.>")
            .with_filter(FilterExpr::not(FilterExpr::prefix("source", "test-"))),
        Arc::new(InProcessSink::new("alerts", |event| async move {
            println!("alert: {} ({})", event.summary, event.payload);
            Ok(())
        })),
    ))?;

    // 2. Scale-up requests are copied to an audit topic through the bus, so
    //    the copy is validated (and would be encrypted) like any event. The
    //    subject filter keeps the copy (same type, audit subject) from
    //    matching again: without it the copy would loop until `max_hops`.
    broker.add_trigger(Trigger::new(
        "audit-scaling",
        TriggerFilter::by_type(ScaleUpPayload::EVENT_TYPE).with_subject("events.scaling.>"),
        Arc::new(TopicSink::through_bus(
            "audit",
            bus.clone(),
            "events.audit.scaling",
        )?),
    ))?;

    // 3. Orders go to a flaky endpoint: 3 retries with exponential backoff,
    //    then the dead-letter sink.
    let dead_letters = Arc::new(CollectorSink::new("dead-letters"));
    broker.add_trigger(
        Trigger::new(
            "orders-webhook",
            TriggerFilter::by_subject("events.orders.>"),
            Arc::new(FailingSink::new("webhook", "503 Service Unavailable")),
        )
        .with_delivery(
            DeliverySpec::new()
                .with_retries(3)
                .with_backoff(BackoffPolicy::Exponential, Duration::from_millis(20))
                .with_timeout(Some(Duration::from_secs(1)))
                .with_dead_letter_sink(dead_letters.clone()),
        ),
    )?;

    // 4. Heartbeats are logged through `tracing` at INFO (this example installs
    //    no subscriber, so they print nothing here).
    broker.add_trigger(Trigger::new(
        "heartbeats",
        TriggerFilter::by_subject("events.system.heartbeat"),
        Arc::new(LogSink::new("heartbeat-log")),
    ))?;

    // The bus's own dead letters (from consumers) are forwarded through a
    // topic sink under `events.dlq`.
    bus.set_dlq_handler(Arc::new(SinkDlqHandler::new(
        Arc::new(TopicSink::unchanged_through_bus("dlq", bus.clone())),
        "events.dlq",
    )?));

    // Publish.
    bus.publish(
        "market",
        "forex.usd_cny",
        "USD/CNY 7.35",
        "reuters",
        serde_json::json!({"rate": 7.35}),
    )
    .await?;
    bus.publish(
        "market",
        "forex.eur_usd",
        "test tick",
        "test-feed",
        serde_json::json!({}),
    )
    .await?;
    bus.publish(
        "orders",
        "created",
        "order 42",
        "shop",
        serde_json::json!({"id": 42}),
    )
    .await?;
    let scale_up = ScaleUpPayload {
        service: "checkout".into(),
        desired_replicas: 5,
        reason: "p99 latency over budget".into(),
    };
    bus.publish_event(&scale_up.to_event("gateway")?).await?;

    // A cron source publishing heartbeats through the bus (three of them).
    let heartbeat = CronSource::every("heartbeat", Duration::from_millis(100), |tick| {
        a3s_event::Event::new(
            "events.system.heartbeat",
            "system",
            format!("heartbeat {tick}"),
            "cron",
            serde_json::json!({"tick": tick}),
        )
    })?;
    heartbeat
        .start(Arc::new(TopicSink::unchanged_through_bus(
            "heartbeats",
            bus.clone(),
        )))
        .await?;
    tokio::time::sleep(Duration::from_millis(350)).await;
    heartbeat.stop().await?;

    broker.wait_idle().await;
    let audit = bus.list_events(Some("audit"), 10).await?;
    println!("audit copies: {}", audit.len());
    println!(
        "dead letter: {} after {} attempts ({})",
        dead_letters.events()[0].summary,
        dead_letters.events()[0].metadata["dlqattempts"],
        dead_letters.events()[0].metadata["dlqreason"],
    );
    let m = broker.metrics();
    println!(
        "broker: routed {} matched {} delivered {} retries {} dead-lettered {}",
        m.routed, m.matched, m.delivered, m.retries, m.dead_lettered
    );
    assert_eq!(audit.len(), 1);
    assert_eq!(dead_letters.len(), 1);
    broker.shutdown().await;
    Ok(())
}
