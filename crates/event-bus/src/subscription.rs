//! [`BusSubscription`]: a provider subscription that decrypts for the caller.

use crate::bus::{Inner, with_payload};
use async_trait::async_trait;
use event_core::{
    Acker, DeadLetterEvent, Error, Event, PendingEvent, ReceivedEvent, Result, Subscription,
    new_event_id,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Delay before an undecryptable event is offered again when the DLQ handler
/// refused it (so it is not lost).
const DLQ_RETRY_DELAY: Duration = Duration::from_secs(5);

/// A subscription created by the bus: events come out decrypted.
///
/// # Undecryptable and undecodable events
///
/// An event whose payload fails to decrypt (unknown key, tampered, moved
/// from another event) is not handed to the caller. If the bus has a DLQ
/// handler, the event (payload still encrypted) is dead-lettered first and
/// then terminated; if the DLQ handler refuses it, it is naked with a delay so
/// it is not lost. Without a DLQ handler it is terminated. Either way the call
/// returns [`Error::Decryption`] naming the event id and sequence, once, and
/// the subscription stays usable. Such an event can never be processed by
/// this bus as configured, so redelivering it forever would only block the
/// consumer.
///
/// A message the provider could not decode ([`Error::Undecodable`], already
/// terminated by the provider) is dead-lettered too when a DLQ handler is
/// set (payload: the raw body as a JSON string), then reported.
///
/// `Error::Lagged` reports are counted in the bus metrics and passed on.
///
/// # Auto-ack
///
/// [`next`](Subscription::next) keeps the auto-ack contract (the previous
/// event is acknowledged when the next one is asked for, or on
/// [`close`](Subscription::close); dropping the subscription leaves it
/// unacknowledged). It is implemented over the provider's manual mode so an
/// undecryptable event can be settled as described above.
pub struct BusSubscription {
    inner: Box<dyn Subscription>,
    bus: Arc<Inner>,
    /// The last auto-ack delivery, acknowledged on the next call or close.
    unacked: Option<Box<dyn Acker>>,
}

impl std::fmt::Debug for BusSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusSubscription")
            .field("unacked", &self.unacked.is_some())
            .finish_non_exhaustive()
    }
}

impl BusSubscription {
    pub(crate) fn new(inner: Box<dyn Subscription>, bus: Arc<Inner>) -> Self {
        Self {
            inner,
            bus,
            unacked: None,
        }
    }

    async fn ack_previous(&mut self) -> Result<()> {
        match self.unacked.take() {
            Some(acker) => acker.ack().await,
            None => Ok(()),
        }
    }

    async fn fetch(&mut self) -> Result<Option<PendingEvent>> {
        let pending = match self.inner.next_manual_ack().await {
            Ok(Some(pending)) => pending,
            Ok(None) => return Ok(None),
            Err(err) => return Err(Inner::report_error(&self.bus, err).await),
        };
        if !self.bus.hooks.encrypting() {
            return Ok(Some(pending));
        }
        let hooks = self.bus.hooks.load();
        let sequence = pending.received.sequence;
        match self
            .bus
            .decrypt_payload(&hooks, &pending.received.event, Some(sequence))
        {
            Ok(None) => Ok(Some(pending)),
            Ok(Some(plain)) => {
                let (received, max_deliver, acker) = pending.into_parts();
                let event = Arc::new(with_payload(&received.event, plain));
                let received = ReceivedEvent { event, ..received };
                Ok(Some(PendingEvent::new(received, max_deliver, acker)))
            }
            Err(err) => {
                let (received, _, acker) = pending.into_parts();
                let dead = DeadLetterEvent::new(Event::clone(&received.event), err.to_string())
                    .with_attempts(received.num_delivered);
                let bus = self.bus.clone();
                detached(async move {
                    match bus.dead_letter(dead).await {
                        Some(Ok(())) | None => acker.term().await,
                        Some(Err(_)) => acker.nak(Some(DLQ_RETRY_DELAY)).await,
                    }
                })
                .await?;
                Err(err)
            }
        }
    }
}

/// Runs `work` to completion even if the caller stops waiting for it: a
/// consumer runner shutting down drops a pending `fetch`, and a dead letter
/// handed over but not followed by `term` would be dead-lettered again on
/// redelivery (or, for an undecodable message the provider already
/// terminated, lost). Runs inline outside a tokio runtime.
async fn detached(work: impl Future<Output = Result<()>> + Send + 'static) -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn(work).await.unwrap_or_else(|e| {
            Err(Error::provider(
                "event-bus",
                format!("dead-letter hand-off failed: {e}"),
            ))
        }),
        Err(_) => work.await,
    }
}

impl Inner {
    /// Hands `dead` to the DLQ handler, if any; `None` when there is none.
    pub(crate) async fn dead_letter(&self, dead: DeadLetterEvent) -> Option<Result<()>> {
        let dlq = self.hooks.load().dlq.clone()?;
        let id = dead.event.id.clone();
        let result = crate::consumer::guard::offer_dead_letter(&*dlq, dead).await;
        match &result {
            Ok(()) => self.metrics.add_dlq(1),
            Err(err) => {
                self.metrics.add_dlq_error(1);
                tracing::error!(event_id = %id, error = %err, "DLQ handler refused a dead letter");
            }
        }
        Some(result)
    }

    /// Counts lag, dead-letters undecodable messages; returns the error to
    /// report.
    pub(crate) async fn report_error(this: &Arc<Self>, err: Error) -> Error {
        match &err {
            Error::Lagged { missed } => this.metrics.add_lagged(*missed),
            Error::Undecodable {
                subject,
                sequence,
                reason,
                raw,
            } => {
                let category = subject.split('.').nth(1).unwrap_or("unknown");
                let event = Event {
                    id: new_event_id(),
                    subject: subject.clone(),
                    category: category.to_string(),
                    event_type: String::new(),
                    version: 1,
                    payload: serde_json::Value::String(raw.clone()),
                    summary: "undecodable message".to_string(),
                    source: "a3s-event".to_string(),
                    timestamp: event_core::now_millis(),
                    metadata: [("a3s.sequence".to_string(), sequence.to_string())]
                        .into_iter()
                        .collect(),
                };
                let dead =
                    DeadLetterEvent::new(event, format!("undecodable: {reason}")).with_attempts(1);
                // The provider already terminated the message; a refusal is
                // logged and counted by `dead_letter`.
                let bus = this.clone();
                let _ = detached(async move {
                    let _ = bus.dead_letter(dead).await;
                    Ok(())
                })
                .await;
            }
            _ => {}
        }
        err
    }
}

#[async_trait]
impl Subscription for BusSubscription {
    async fn next(&mut self) -> Result<Option<ReceivedEvent>> {
        self.ack_previous().await?;
        let Some(pending) = self.fetch().await? else {
            return Ok(None);
        };
        let (received, _, acker) = pending.into_parts();
        self.unacked = Some(acker);
        Ok(Some(received))
    }

    async fn next_manual_ack(&mut self) -> Result<Option<PendingEvent>> {
        self.fetch().await
    }

    async fn close(&mut self) -> Result<()> {
        let acked = self.ack_previous().await;
        let closed = self.inner.close().await;
        acked.and(closed)
    }
}
