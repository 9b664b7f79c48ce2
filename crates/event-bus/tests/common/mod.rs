//! Test doubles for the bus hooks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use event_core::{
    DeadLetterEvent, DlqHandler, Error, Event, EventEncryptor, EventRouter, Result, SchemaValidator,
};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A reversible "encryptor" with the real contract: the envelope is bound to
/// the event id, wrong ids and malformed envelopes fail to decrypt.
#[derive(Default)]
pub struct TestEncryptor {
    pub key: u8,
}

impl EventEncryptor for TestEncryptor {
    fn encrypt(&self, event_id: &str, payload: &Value) -> Result<Value> {
        let plain = serde_json::to_vec(payload)?;
        let data: Vec<u8> = plain.iter().map(|b| b ^ self.key ^ 0x5a).collect();
        Ok(json!({"encrypted": true, "aad": event_id, "key": self.key, "data": data}))
    }

    fn decrypt(&self, event_id: &str, payload: &Value) -> Result<Value> {
        if payload["aad"] != event_id {
            return Err(Error::Decryption("associated data mismatch".into()));
        }
        if payload["key"] != self.key {
            return Err(Error::Decryption("unknown key".into()));
        }
        let data: Vec<u8> = serde_json::from_value(payload["data"].clone())
            .map_err(|e| Error::Decryption(format!("malformed envelope: {e}")))?;
        let plain: Vec<u8> = data.iter().map(|b| b ^ self.key ^ 0x5a).collect();
        serde_json::from_slice(&plain).map_err(|e| Error::Decryption(e.to_string()))
    }

    fn is_encrypted(&self, payload: &Value) -> bool {
        payload.get("encrypted") == Some(&Value::Bool(true))
    }
}

/// Rejects typed events whose payload lacks `required`.
pub struct RequireField(pub &'static str);

impl SchemaValidator for RequireField {
    fn validate(&self, event: &Event) -> Result<()> {
        if event.is_typed() && event.payload.get(self.0).is_none() {
            return Err(Error::SchemaValidation {
                event_type: event.event_type.clone(),
                version: event.version,
                path: format!("/{}", self.0),
                reason: "required field missing".into(),
            });
        }
        Ok(())
    }
}

/// Records routed events; can be told to refuse.
#[derive(Default)]
pub struct CollectRouter {
    pub routed: Mutex<Vec<(Arc<Event>, u64)>>,
    pub refuse: AtomicBool,
}

impl CollectRouter {
    /// How many times the router took the event `id`.
    pub fn times_routed(&self, id: &str) -> usize {
        let routed = self.routed.lock().unwrap();
        routed.iter().filter(|(e, _)| e.id == id).count()
    }
}

#[async_trait]
impl EventRouter for CollectRouter {
    async fn route_published(&self, event: Arc<Event>, sequence: u64) -> Result<()> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Error::Closed("router queue full".into()));
        }
        self.routed.lock().unwrap().push((event, sequence));
        Ok(())
    }
}

/// A DLQ that refuses the first `refusals` dead letters, then stores.
#[derive(Default)]
pub struct FlakyDlq {
    pub refusals: AtomicUsize,
    /// Refuse with a permanent error (a conflict) instead of a transient
    /// one (the DLQ's backend down).
    pub permanent: AtomicBool,
    /// Permanent refusals (a conflict) once `refusals` are used up.
    pub then_permanent: AtomicUsize,
    pub stored: Mutex<Vec<DeadLetterEvent>>,
}

#[async_trait]
impl DlqHandler for FlakyDlq {
    async fn handle(&self, dead_letter: DeadLetterEvent) -> Result<()> {
        if self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            if self.permanent.load(Ordering::SeqCst) {
                return Err(Error::Conflict {
                    resource: "dlq".into(),
                    reason: "refused for good".into(),
                });
            }
            return Err(Error::Connection("dlq down".into()));
        }
        if self
            .then_permanent
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::Conflict {
                resource: "dlq".into(),
                reason: "refused for good".into(),
            });
        }
        self.stored.lock().unwrap().insert(0, dead_letter);
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetterEvent>> {
        Ok(self
            .stored
            .lock()
            .unwrap()
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn count(&self) -> Result<usize> {
        Ok(self.stored.lock().unwrap().len())
    }
}

/// A unique temp directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "a3s-bus-test-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a consumer runner with a handler that always succeeds over `sub`,
/// with default options, until the subscription ends (5 s at most); its
/// report.
pub async fn run_to_end(
    bus: &event_bus::EventBus,
    sub: Box<dyn event_core::Subscription>,
) -> event_bus::ConsumerReport {
    let consumer = bus
        .consume_subscription(
            sub,
            event_core::SubscribeOptions::default(),
            |_r: event_core::ReceivedEvent| async { Ok::<(), event_core::BoxError>(()) },
            event_bus::ConsumerConfig::default(),
        )
        .expect("a consumer over the subscription");
    tokio::time::timeout(std::time::Duration::from_secs(5), consumer.join())
        .await
        .expect("the consumer ends with its subscription")
}

/// A subscriber's filter: `id` on `subjects`, durable or not.
pub fn filter(id: &str, subjects: &[&str], durable: bool) -> event_core::SubscriptionFilter {
    event_core::SubscriptionFilter {
        subscriber_id: id.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        durable,
    }
}

/// `next` on `sub` ends (`Ok(None)`) within five seconds.
pub async fn ends(sub: &mut Box<dyn event_core::Subscription>) {
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
        .await
        .expect("the subscription did not end");
    assert!(
        next.expect("no error").is_none(),
        "expected the end, got an event"
    );
}

/// A dead letter of `event` as someone who can write to the stream would
/// plant it under the DLQ subjects: stored in plaintext, shaped as a
/// `ProviderDlqHandler` stores its letters (type `DEAD_LETTER_EVENT_TYPE`,
/// the whole `DeadLetterEvent` as payload). Publish it on the provider.
pub fn planted_dead_letter(event: Event) -> Event {
    let letter = DeadLetterEvent::new(event, "handler failed");
    let mut carrier = Event::new(
        "events.dlq.orders",
        "dlq",
        "d",
        "a3s-event-dlq",
        serde_json::to_value(&letter).expect("a dead letter serializes"),
    );
    carrier.event_type = event_bus::dlq::DEAD_LETTER_EVENT_TYPE.into();
    carrier
}

/// Waits (polling every 5 ms) until `cond` holds; fails naming `what` after
/// ten seconds.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A consumer of subscriber `id` on `bus` whose handler succeeds at once,
/// with the default configuration.
pub async fn succeeding_consumer(bus: &event_bus::EventBus, id: &str) -> event_bus::ConsumerHandle {
    bus.consume(
        id,
        |_r: event_core::ReceivedEvent| async { Ok::<(), event_core::BoxError>(()) },
        event_bus::ConsumerConfig::default(),
    )
    .await
    .unwrap()
}
