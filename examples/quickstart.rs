//! Quickstart: publish, subscribe, query history, count and read metrics on
//! the in-memory provider.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! In an application: `a3s-event` with its default feature (`memory`).

use a3s_event::provider::memory::MemoryProvider;
use a3s_event::{EventBus, SubscriptionFilter};

#[tokio::main]
async fn main() -> a3s_event::Result<()> {
    // Create an event bus with any provider
    let bus = EventBus::new(MemoryProvider::default());

    // A durable subscriber for every market event
    bus.update_subscription(SubscriptionFilter {
        subscriber_id: "analyst".to_string(),
        subjects: vec!["events.market.>".to_string()],
        durable: true,
    })
    .await?;
    let mut subs = bus.create_subscriber("analyst").await?;

    // Publish
    let event = bus
        .publish(
            "market",
            "forex.usd_cny",
            "USD/CNY broke through 7.35",
            "reuters",
            serde_json::json!({"rate": 7.3521}),
        )
        .await?;
    println!("published {} on {}", event.id, event.subject);
    bus.publish(
        "system",
        "deploy.gateway",
        "Gateway deployed",
        "ci",
        serde_json::json!({"version": "1.4.2"}),
    )
    .await?;

    // Receive (auto-ack: acknowledged when the next one is asked for or on close)
    if let Some(received) = subs[0].next().await? {
        println!(
            "analyst received #{} {}: {}",
            received.sequence, received.event.subject, received.event.summary
        );
    }
    subs[0].close().await?;

    // History and counts
    let market = bus.list_events(Some("market"), 50).await?;
    println!("market events: {}", market.len());
    let counts = bus.counts(1000).await?;
    println!("counts: {:?} (total {})", counts.categories, counts.total);

    // Provider info and metrics
    let info = bus.info().await?;
    println!("{}: {} messages", info.provider, info.messages);
    let metrics = bus.metrics().snapshot();
    println!("metrics: {}", serde_json::to_string_pretty(&metrics)?);
    print!("{}", metrics.to_prometheus());
    Ok(())
}
