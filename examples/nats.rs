//! NATS JetStream provider against a local server.
//!
//! Start a server with JetStream (`nats-server -js`) on 127.0.0.1:4222, then:
//!
//! ```sh
//! cargo run --example nats
//! ```
//!
//! Set `NATS_URL` to use another server, for example a throwaway one:
//!
//! ```sh
//! nats-server -js -p 4333 -sd "$(mktemp -d)" &
//! NATS_URL=nats://127.0.0.1:4333 cargo run --example nats
//! ```
//!
//! The stream `A3S_EXAMPLE` (file storage) is created on first use and kept,
//! so each run adds its events to the previous runs'. In an application:
//! `a3s-event` with the feature `nats`.

use a3s_event::provider::nats::{NatsConfig, NatsProvider, StorageType};
use a3s_event::{DeliverPolicy, Event, EventProvider, SubscribeOptions};
use serde_json::json;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
    let config = NatsConfig {
        url: url.clone(),
        token: None,
        credentials_path: None,
        stream_name: "A3S_EXAMPLE".to_string(),
        subject_prefix: "example".to_string(),
        storage: StorageType::File,
        max_events: 10_000,
        max_age_secs: 3_600,
        max_bytes: 0,
        connect_timeout_secs: 5,
        request_timeout_secs: 10,
    };
    let provider = match NatsProvider::connect(config).await {
        Ok(provider) => provider,
        Err(err) => {
            eprintln!(
                "cannot use the NATS server at {url}: {err}\n\
                 start one with JetStream (`nats-server -js`) or set NATS_URL"
            );
            std::process::exit(1);
        }
    };
    println!("connected; stream {}", provider.stream_name());

    // publish one event and a pipelined batch
    let event = Event::new(
        provider.build_subject("market", "forex.usd_cny"),
        "market",
        "USD/CNY broke through 7.35",
        "reuters",
        json!({ "rate": 7.3521 }),
    );
    let seq = provider.publish(&event).await?;
    println!("published {} at sequence {seq}", event.id);
    let again = provider.publish(&event).await?;
    println!("republished the same id: deduplicated to sequence {again}");

    let batch: Vec<Event> = (0..5)
        .map(|i| {
            Event::new(
                provider.build_subject("market", "forex.eur_usd"),
                "market",
                format!("tick {i}"),
                "example",
                json!({ "tick": i }),
            )
        })
        .collect();
    for result in provider.publish_batch(&batch).await? {
        println!("batch event stored at sequence {}", result?);
    }

    // a durable consumer that starts at the first event published above and
    // reads on (it is deleted at the end, so every run starts afresh)
    let options = SubscribeOptions {
        deliver_policy: DeliverPolicy::ByStartSequence { sequence: seq },
        ack_wait: Some(Duration::from_secs(5)),
        ..SubscribeOptions::default()
    };
    let mut sub = provider
        .subscribe_durable_with_options(
            "example-reader",
            &provider.category_subject("market"),
            &options,
        )
        .await?;
    for _ in 0..6 {
        match tokio::time::timeout(Duration::from_secs(5), sub.next_manual_ack()).await {
            Ok(Ok(Some(pending))) => {
                println!(
                    "received #{} {} (delivery {})",
                    pending.received.sequence,
                    pending.received.event.summary,
                    pending.received.num_delivered
                );
                pending.ack().await?;
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => eprintln!("delivery error: {e}"),
            Err(_) => break,
        }
    }
    sub.close().await?;
    provider.unsubscribe("example-reader").await?;

    for e in provider
        .history(Some(&provider.category_subject("market")), 3)
        .await?
    {
        println!("history: {} {}", e.id, e.summary);
    }
    let info = provider.info().await?;
    println!(
        "stream: {} events, {} bytes, sequences {}..={}, healthy: {}",
        info.messages,
        info.bytes,
        info.first_sequence,
        info.last_sequence,
        provider.health().await?
    );
    Ok(())
}
