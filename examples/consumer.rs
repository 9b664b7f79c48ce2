//! A consumer runner with retries, backoff and a dead-letter queue.
//!
//! Orders with a negative total always fail: each is tried `max_deliver`
//! times with backoff, then dead-lettered with its metadata. Everything else
//! is acknowledged. Then the runner shuts down gracefully.
//!
//! ```text
//! cargo run --example consumer
//! ```
//!
//! In an application: `a3s-event` with its default feature (`memory`).

use a3s_event::consumer::ConsumerConfig;
use a3s_event::dlq::MemoryDlqHandler;
use a3s_event::provider::memory::MemoryProvider;
use a3s_event::{DlqHandler, EventBus, ReceivedEvent, SubscribeOptions, SubscriptionFilter};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> a3s_event::Result<()> {
    let bus = EventBus::new(MemoryProvider::default());
    let dlq = Arc::new(MemoryDlqHandler::default());
    bus.set_dlq_handler(dlq.clone());

    bus.update_subscription_with_options(
        SubscriptionFilter {
            subscriber_id: "billing".to_string(),
            subjects: vec!["events.orders.>".to_string()],
            durable: true,
        },
        SubscribeOptions {
            max_deliver: Some(3),
            backoff: vec![Duration::from_millis(50), Duration::from_millis(200)],
            ..SubscribeOptions::default()
        },
    )
    .await?;

    for (n, total) in [(1, 30), (2, -5), (3, 12), (4, 99)] {
        bus.publish(
            "orders",
            "created",
            &format!("Order {n}"),
            "shop",
            serde_json::json!({"order": n, "total": total}),
        )
        .await?;
    }

    let consumer = bus
        .consume(
            "billing",
            |received: ReceivedEvent| async move {
                let total = received.event.payload["total"].as_i64().unwrap_or(0);
                println!(
                    "attempt {} for {}",
                    received.num_delivered, received.event.summary
                );
                if total < 0 {
                    return Err(format!("cannot bill a negative total ({total})"));
                }
                Ok(())
            },
            ConsumerConfig::default().concurrency(4),
        )
        .await?;

    // Wait for the poison order to be dead-lettered.
    while dlq.count().await? == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = consumer.shutdown(Duration::from_secs(5)).await;
    println!("{report:?}");

    for dead in dlq.list(10).await? {
        // Times are Unix milliseconds.
        let waited = dead
            .first_failure_at
            .map(|first| dead.dead_lettered_at.saturating_sub(first));
        println!(
            "dead letter: {} from {} after {} attempts ({} ms from the first failure): {}",
            dead.event.summary,
            dead.original_subject,
            dead.delivery_attempts,
            waited.map_or_else(|| "?".to_string(), |ms| ms.to_string()),
            dead.reason
        );
    }
    Ok(())
}
