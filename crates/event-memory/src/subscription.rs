//! [`Subscription`] over a memory consumer.

use crate::consumer::{Consumer, Delivery, MemoryAcker, Next, received};

enum Polled {
    Ready(Option<Delivery>),
    Wait(Option<tokio::time::Instant>),
}
use crate::provider::Shared;
use async_trait::async_trait;
use event_core::{Error, LiveAckWait, PendingEvent, ReceivedEvent, Result, Subscription};
use std::sync::Arc;

pub(crate) struct MemorySubscription {
    shared: Arc<Shared>,
    consumer: Arc<Consumer>,
    /// This subscription's own handle on the stream name: every delivery
    /// clones it, and a handle shared by all subscriptions would make their
    /// reference-count updates contend across cores.
    stream: Arc<str>,
    /// This subscription's identifier with its consumer ([`Consumer::join`]).
    id: u64,
    /// Last auto-ack delivery, acknowledged on the next call or on close.
    unacked: Option<u64>,
    ephemeral: bool,
    /// Counted in the provider's ephemeral consumers (see `stop_counting`).
    counted: bool,
    closed: bool,
}

impl MemorySubscription {
    pub(crate) fn new(shared: Arc<Shared>, consumer: Arc<Consumer>, ephemeral: bool) -> Self {
        Self {
            stream: Arc::from(&*shared.stream),
            id: consumer.join(),
            shared,
            consumer,
            unacked: None,
            ephemeral,
            counted: ephemeral,
            closed: false,
        }
    }

    /// The next delivery; `auto_ack` for [`Subscription::next`].
    async fn fetch(&mut self, auto_ack: bool) -> Result<Option<Delivery>> {
        // a loop of fetches that always find work (a backlog, an event
        // nak'd and fetched again) must not hold the runtime worker: a
        // unit of the cooperative budget, spent before anything is taken,
        // so a fetch dropped while it yields took nothing
        crate::provider::cooperate().await;
        loop {
            if self.closed {
                self.ack_previous();
                return Ok(None);
            }
            // fast path: something is due now
            if let Polled::Ready(d) = self.poll_consumer(auto_ack)? {
                return Ok(d);
            }
            // register for wake-ups, then look again so nothing slips between
            let consumer = self.consumer.clone();
            let shared = self.shared.clone();
            let notified = consumer.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // read after the consumer's wake-up is enabled: a filter
            // changed later wakes this fetch, which registers again
            let category = consumer.required_category();
            let (published, _waiting) = shared.published.register(category);
            let deadline = match self.poll_consumer(auto_ack)? {
                Polled::Ready(d) => return Ok(d),
                Polled::Wait(deadline) => deadline,
            };
            // counted as waiting (due redeliveries failed by another
            // subscription are left to this one) until woken or cancelled
            let waiting = consumer.waiting();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = published => {}
                () = sleep => {}
            }
            waiting.woken();
        }
    }

    fn poll_consumer(&mut self, auto_ack: bool) -> Result<Polled> {
        // the previous auto-ack delivery is settled under the same lock
        match self.consumer.try_next(
            &self.shared.store,
            self.unacked.take(),
            auto_ack && self.ephemeral,
            self.id,
        ) {
            Next::Delivery(d) => Ok(Polled::Ready(Some(d))),
            Next::Lagged(missed) => {
                self.shared
                    .lagged
                    .fetch_add(missed, std::sync::atomic::Ordering::Relaxed);
                Err(Error::Lagged { missed })
            }
            Next::Deleted => {
                self.closed = true;
                Ok(Polled::Ready(None))
            }
            Next::Wait(deadline) => Ok(Polled::Wait(deadline)),
        }
    }

    fn ack_previous(&mut self) {
        if let Some(seq) = self.unacked.take() {
            self.consumer.ack(seq);
        }
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Option<ReceivedEvent>> {
        // `fetch` acknowledges the previous delivery (see `poll_consumer`)
        let Some(delivery) = self.fetch(true).await? else {
            return Ok(None);
        };
        // untracked deliveries (token 0, ephemeral consumers) need no ack;
        // redeliveries and durables' deliveries do
        if delivery.token != 0 {
            self.unacked = Some(delivery.sequence);
        }
        Ok(Some(received(delivery, &self.stream)))
    }

    async fn next_manual_ack(&mut self) -> Result<Option<PendingEvent>> {
        let Some(delivery) = self.fetch(false).await? else {
            return Ok(None);
        };
        let acker = MemoryAcker {
            consumer: self.consumer.clone(),
            seq: delivery.sequence,
            token: delivery.token,
        };
        let (max_deliver, ack_wait) = (delivery.max_deliver, delivery.ack_wait);
        let deliveries = delivery.deliveries;
        let pending = PendingEvent::new(
            received(delivery, &self.stream),
            max_deliver,
            Box::new(acker),
        );
        Ok(Some(match ack_wait {
            // a durable resubscribed with another ack wait or backoff
            // applies it to the deliveries already held from their next
            // `in_progress` on: reported live, so their holders follow
            Some(_) if !self.ephemeral => {
                let consumer = self.consumer.clone();
                pending
                    .with_live_ack_wait(LiveAckWait::new(move || consumer.current_wait(deliveries)))
            }
            Some(wait) => pending.with_ack_wait(wait),
            None => pending,
        }))
    }

    async fn close(&mut self) -> Result<()> {
        self.ack_previous();
        self.closed = true;
        self.stop_counting();
        Ok(())
    }
}

impl MemorySubscription {
    /// An ephemeral consumer counts in `info().consumers` until its
    /// subscription is closed or dropped, whichever comes first.
    fn stop_counting(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.shared
                .ephemeral
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.stop_counting();
    }
}
