//! The provider-backed DLQ on a real `nats-server` (JetStream): what a dead
//! letter records reads back whole, in plaintext or encrypted; dead letters
//! near the server's payload limit are stored in their smaller forms; many
//! handed over at once are all stored; and they survive a server restart,
//! re-drive going on where it stopped.
//!
//! Each test starts its own server (random port, temp store dir, 64 KiB
//! `max_payload`; see `crates/event-nats/tests/common`).
#![cfg(all(feature = "nats", feature = "crypto"))]
#![allow(clippy::unwrap_used)]

#[path = "../crates/event-nats/tests/common/mod.rs"]
mod common;

use a3s_event::crypto::Aes256GcmEncryptor;
use a3s_event::dlq::{META_PAYLOAD_DROPPED, ProviderDlqHandler};
use a3s_event::provider::nats::NatsProvider;
use a3s_event::{DeadLetterEvent, DlqHandler, Event, EventBus, EventProvider};
use common::NatsServer;
use serde_json::json;
use std::sync::Arc;

/// A dead letter with every field set, and text JSON and NATS headers
/// could mangle (non-ASCII, NUL, CR/LF, quotes, `u64::MAX`).
fn full_letter(provider: &dyn EventProvider, n: u64) -> DeadLetterEvent {
    let mut event = Event::typed(
        provider.build_subject("orders", "créé"),
        "orders",
        "order.created",
        3,
        format!("order ✓ {n}"),
        "shop",
        json!({"n": n, "big": u64::MAX, "neg": -5, "f": 0.1, "s": "a\u{0}b\n\"c\"", "arr": [null, true]}),
    );
    event.metadata.insert("k".into(), "v\r\n".into());
    DeadLetterEvent::new(event, format!("handler failed: ünïcode \u{1F600} {n}"))
        .with_attempts(5)
        .with_first_failure_at(1_700_000_000_123)
        .with_subscriber(format!("billing-{n}"))
}

async fn connect(config: &a3s_event::provider::nats::NatsConfig) -> Arc<dyn EventProvider> {
    Arc::new(NatsProvider::connect(config.clone()).await.unwrap())
}

#[tokio::test]
async fn dead_letters_read_back_whole_and_survive_a_restart() {
    let Some(mut server) = NatsServer::start("dlq_round_trip") else {
        return;
    };
    let config = common::config(&server, "dlqrt");
    let provider = connect(&config).await;
    let key = || Arc::new(Aes256GcmEncryptor::new("k1", &[7; 32]));
    for encrypted in [false, true] {
        let dlq = if encrypted {
            ProviderDlqHandler::new(provider.clone())
                .with_encryptor(key())
                .with_category("dlqenc")
                .unwrap()
        } else {
            ProviderDlqHandler::new(provider.clone())
        };
        let letters: Vec<_> = (0..3).map(|n| full_letter(&*provider, n)).collect();
        for letter in &letters {
            dlq.handle(letter.clone()).await.unwrap();
        }
        let newest_first: Vec<_> = letters.iter().rev().cloned().collect();
        assert_eq!(
            dlq.list(10).await.unwrap(),
            newest_first,
            "encrypted: {encrypted}"
        );
        assert_eq!(dlq.list(2).await.unwrap(), newest_first[..2].to_vec());
        assert_eq!(dlq.count().await.unwrap(), 3);
    }

    // re-drive stops at `max`; a graceful restart loses neither the letters
    // nor its position
    let bus = EventBus::from_arc(provider.clone());
    let dlq = ProviderDlqHandler::new(provider.clone());
    assert_eq!(dlq.redrive(&bus, 2).await.unwrap().redriven, 2);
    server.terminate();
    server.restart();
    let provider = connect(&config).await;
    let dlq = ProviderDlqHandler::new(provider.clone());
    let encrypted = ProviderDlqHandler::new(provider.clone())
        .with_encryptor(key())
        .with_category("dlqenc")
        .unwrap();
    assert_eq!(dlq.count().await.unwrap(), 3);
    assert_eq!(encrypted.list(10).await.unwrap().len(), 3);
    let bus = EventBus::from_arc(provider.clone());
    let report = dlq.redrive(&bus, 10).await.unwrap();
    assert_eq!((report.redriven, report.skipped), (1, 0), "{report:?}");
    let redriven = bus.list_events(Some("orders"), 10).await.unwrap();
    assert_eq!(redriven.len(), 3, "each letter re-driven once");
    assert!(
        redriven
            .iter()
            .all(|e| e.metadata.contains_key("a3s.redriven_from"))
    );
    let mut ns: Vec<_> = redriven.iter().map(|e| e.payload["n"].clone()).collect();
    ns.sort_by_key(|n| n.as_u64());
    assert_eq!(ns, [json!(0), json!(1), json!(2)]);
}

#[tokio::test]
async fn dead_letters_around_the_payload_limit_and_many_at_once_are_stored() {
    let Some(server) = NatsServer::start("dlq_limit") else {
        return;
    };
    let provider = connect(&common::config(&server, "dlqlim")).await;
    let dlq = Arc::new(ProviderDlqHandler::new(provider.clone()));
    let sized = |size: usize| {
        let mut event = Event::new(
            provider.build_subject("big", "x"),
            "big",
            "s",
            "src",
            json!(""),
        );
        let base = serde_json::to_vec(&event).unwrap().len();
        event.payload = json!("x".repeat(size - base));
        event
    };
    // 64 KiB max_payload: a 30,000-character reason on a 40 kB event is
    // cut; an event close to the limit loses its payload in its letter
    let cut = sized(40_000);
    let near = sized(65_000);
    for event in [&cut, &near] {
        provider.publish(event).await.unwrap();
        dlq.handle(DeadLetterEvent::new(event.clone(), "r".repeat(30_000)))
            .await
            .unwrap();
    }
    let listed = dlq.list(10).await.unwrap();
    assert_eq!(listed.len(), 2);
    let (stub, reason_cut) = (&listed[0], &listed[1]);
    assert_eq!(reason_cut.event, cut);
    assert!(reason_cut.reason.ends_with("… (30000 bytes)"));
    assert_eq!(stub.event.id, near.id);
    assert_eq!(stub.event.payload, serde_json::Value::Null);
    assert!(stub.event.metadata.contains_key(META_PAYLOAD_DROPPED));

    let tasks: Vec<_> = (0..64u64)
        .map(|n| {
            let (dlq, provider) = (dlq.clone(), provider.clone());
            tokio::spawn(async move { dlq.handle(full_letter(&*provider, 100 + n)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(dlq.count().await.unwrap(), 66);
    assert_eq!(dlq.list(100).await.unwrap().len(), 66);
}
