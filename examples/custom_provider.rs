//! A small custom provider: an append-only in-process log with live
//! (ephemeral) subscriptions, plugged into the `EventBus`.
//!
//! It implements the `_with_options` methods, as conforming providers do,
//! and refuses what it cannot do (durable consumers, replaying deliver
//! policies, redelivery and the options that ask for it: `max_deliver`,
//! `ack_wait`, `backoff`, `max_ack_pending`) with `Error::Unsupported`
//! instead of pretending.
//! It is deliberately partial, not conforming: besides those, it has no
//! payload limit and its `history` scans the log, so the conformance suite
//! (feature `conformance`) fails on it wherever it checks them. Run the
//! suite against a provider before calling it conforming.
//!
//! ```text
//! cargo run --example custom_provider
//! ```
//!
//! In an application: `a3s-event` with no feature, plus `async-trait`,
//! `serde_json` and `tokio`. A provider crate depends on `event-core` alone
//! instead: the `provider`, `types` and `subject` modules used here are
//! re-exports of event-core's modules of the same names, so the same
//! imports with the crate name `event_core` in place of `a3s_event` compile
//! (see `docs/custom-providers.md`).

use a3s_event::provider::{Acker, EventProvider, PendingEvent, ProviderInfo, Subscription};
use a3s_event::subject::{SubjectPattern, validate_filter_for_prefix, validate_publish_subject};
use a3s_event::types::{
    DeliverPolicy, Event, PublishOptions, ReceivedEvent, SubscribeOptions, check_payload_depth,
};
use a3s_event::{Error, EventBus, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

#[derive(Default)]
struct Log {
    events: Vec<Arc<Event>>,
    bytes: u64,
    by_msg_id: HashMap<String, u64>,
}

/// The provider.
struct LogProvider {
    log: Mutex<Log>,
    live: broadcast::Sender<(u64, Arc<Event>)>,
}

impl LogProvider {
    fn new() -> Self {
        Self {
            log: Mutex::new(Log::default()),
            live: broadcast::channel(1024).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl EventProvider for LogProvider {
    async fn publish_with_options(&self, event: &Event, options: &PublishOptions) -> Result<u64> {
        validate_publish_subject(&event.subject, self.subject_prefix())?;
        // what JSON readers could not read back is refused by every provider
        check_payload_depth(&event.payload)?;
        let dedup_id = options.checked_dedup_id(event)?;
        let mut log = self.lock();
        if let Some(seq) = log.by_msg_id.get(dedup_id) {
            return Ok(*seq);
        }
        let last = log.events.len() as u64;
        if let Some(expected) = options.expected_sequence
            && expected != last
        {
            return Err(Error::WrongLastSequence {
                expected,
                actual: last,
            });
        }
        let seq = last + 1;
        log.bytes += serde_json::to_vec(event)?.len() as u64;
        log.events.push(Arc::new(event.clone()));
        log.by_msg_id.insert(dedup_id.to_string(), seq);
        let shared = log.events[log.events.len() - 1].clone();
        drop(log);
        // no live subscriber is fine
        let _ = self.live.send((seq, shared));
        Ok(seq)
    }

    async fn subscribe_with_options(
        &self,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        if options.deliver_policy != DeliverPolicy::New {
            return Err(Error::unsupported(
                self.name(),
                "replaying deliver policies",
            ));
        }
        // nothing is redelivered: options that only make sense with
        // redelivery are refused, not accepted and ignored
        if options.max_deliver.is_some()
            || options.ack_wait.is_some()
            || !options.backoff.is_empty()
            || options.max_ack_pending.is_some()
        {
            return Err(Error::unsupported(
                self.name(),
                "redelivery options (max_deliver, ack_wait, backoff, max_ack_pending)",
            ));
        }
        Ok(Box::new(LiveSubscription {
            // a filter that can match no subject under the prefix is refused
            filter: validate_filter_for_prefix(filter_subject, self.subject_prefix())?,
            rx: Some(self.live.subscribe()),
        }))
    }

    async fn subscribe_durable_with_options(
        &self,
        _consumer_name: &str,
        _filter_subject: &str,
        _options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        Err(Error::unsupported(self.name(), "durable consumers"))
    }

    async fn history(&self, filter_subject: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        let pattern = filter_subject.map(SubjectPattern::parse).transpose()?;
        let log = self.lock();
        Ok(log
            .events
            .iter()
            .rev()
            .filter(|e| pattern.as_ref().is_none_or(|p| p.matches(&e.subject)))
            .take(limit)
            .map(|e| Event::clone(e))
            .collect())
    }

    async fn unsubscribe(&self, consumer_name: &str) -> Result<()> {
        Err(Error::NotFound {
            kind: "consumer",
            name: consumer_name.to_string(),
        })
    }

    async fn info(&self) -> Result<ProviderInfo> {
        let log = self.lock();
        let n = log.events.len() as u64;
        Ok(ProviderInfo {
            provider: self.name().to_string(),
            messages: n,
            bytes: log.bytes,
            consumers: self.live.receiver_count(),
            first_sequence: u64::from(n > 0),
            last_sequence: n,
        })
    }

    fn name(&self) -> &str {
        "log"
    }
}

/// Live deliveries; acknowledgement is a no-op (nothing is redelivered).
struct LiveSubscription {
    filter: SubjectPattern,
    rx: Option<broadcast::Receiver<(u64, Arc<Event>)>>,
}

struct NoRedelivery;

#[async_trait]
impl Acker for NoRedelivery {
    async fn ack(&self) -> Result<()> {
        Ok(())
    }
    async fn nak(&self, _delay: Option<std::time::Duration>) -> Result<()> {
        Err(Error::unsupported("log", "redelivery"))
    }
    async fn term(&self) -> Result<()> {
        Ok(())
    }
    async fn in_progress(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Subscription for LiveSubscription {
    async fn next(&mut self) -> Result<Option<ReceivedEvent>> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(None);
        };
        loop {
            match rx.recv().await {
                Ok((sequence, event)) if self.filter.matches(&event.subject) => {
                    return Ok(Some(ReceivedEvent {
                        event,
                        sequence,
                        num_delivered: 1,
                        stream: Arc::from("log"),
                    }));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(Error::Lagged { missed });
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    async fn next_manual_ack(&mut self) -> Result<Option<PendingEvent>> {
        Ok(self
            .next()
            .await?
            .map(|received| PendingEvent::new(received, None, Box::new(NoRedelivery))))
    }

    async fn close(&mut self) -> Result<()> {
        self.rx = None;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let bus = EventBus::new(LogProvider::new());
    let mut live = bus.subscribe("events.market.>").await?;

    let event = bus
        .publish(
            "market",
            "forex",
            "Rate change",
            "source",
            serde_json::json!({"rate": 7.1}),
        )
        .await?;
    bus.publish_event(&event).await?; // deduplicated by the event id

    let received = live
        .next()
        .await?
        .ok_or(Error::Closed("subscription".into()))?;
    println!("live: #{} {}", received.sequence, received.event.summary);
    println!(
        "history: {} event(s)",
        bus.list_events(Some("market"), 10).await?.len()
    );
    let info = bus.info().await?;
    println!(
        "{}: {} messages, {} bytes",
        info.provider, info.messages, info.bytes
    );
    assert_eq!(info.messages, 1);

    // What the provider cannot do is an error, not a silent no-op.
    let err = bus
        .provider()
        .subscribe_durable("d", "events.>")
        .await
        .err();
    println!(
        "durable: {}",
        err.map(|e| e.to_string()).unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3s_event::SubscriptionFilter;
    use std::time::Duration;

    /// A subscription asked for redeliveries (`max_deliver`, `ack_wait`,
    /// `backoff`, `max_ack_pending`) this provider never makes is refused,
    /// not accepted and ignored: a consumer runner relying on them would
    /// otherwise lose every failed event silently.
    #[tokio::test]
    async fn redelivery_options_are_refused_not_ignored() {
        let provider = LogProvider::new();
        let new = SubscribeOptions {
            deliver_policy: DeliverPolicy::New,
            ..SubscribeOptions::default()
        };
        let asks_for_redelivery = [
            SubscribeOptions {
                max_deliver: Some(3),
                ..new.clone()
            },
            SubscribeOptions {
                ack_wait: Some(Duration::from_secs(5)),
                ..new.clone()
            },
            SubscribeOptions {
                backoff: vec![Duration::from_secs(1)],
                ..new.clone()
            },
            SubscribeOptions {
                max_ack_pending: Some(10),
                ..new.clone()
            },
        ];
        for options in &asks_for_redelivery {
            match provider.subscribe_with_options("events.>", options).await {
                Err(Error::Unsupported { .. }) => {}
                Err(err) => panic!("{options:?}: {err}"),
                Ok(_) => panic!("{options:?}: accepted, and would be ignored"),
            }
        }
        // the defaults still subscribe
        assert!(
            provider
                .subscribe_with_options("events.>", &new)
                .await
                .is_ok()
        );

        // and through the bus: a subscriber given such options is refused
        let bus = EventBus::new(LogProvider::new());
        bus.update_subscription_with_options(
            SubscriptionFilter {
                subscriber_id: "billing".to_string(),
                subjects: vec!["events.orders.>".to_string()],
                durable: false,
            },
            asks_for_redelivery[0].clone(),
        )
        .await
        .unwrap_or_else(|err| panic!("{err}"));
        assert!(matches!(
            bus.create_subscriber("billing").await.err(),
            Some(Error::Unsupported { .. })
        ));
    }
}
