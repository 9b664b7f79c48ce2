//! `ConsumerHandle::shutdown` keeps its deadline whatever the provider's
//! `close()` does: a NATS subscription closed while its server is down waits
//! out its request timeout (10 s by default) flushing its acknowledgements.
//! On tokio's paused clock, so the waits cost nothing and the times are
//! exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use event_bus::{ConsumerConfig, ConsumerHandle, EventBus, SHUTDOWN_CLOSE_GRACE};
use event_core::{
    Acker, BoxError, Event, PendingEvent, ReceivedEvent, SubscribeOptions, Subscription,
};
use event_memory::MemoryProvider;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Settles everything at once.
struct OkAcker;

#[async_trait::async_trait]
impl Acker for OkAcker {
    async fn ack(&self) -> event_core::Result<()> {
        Ok(())
    }
    async fn nak(&self, _delay: Option<Duration>) -> event_core::Result<()> {
        Ok(())
    }
    async fn term(&self) -> event_core::Result<()> {
        Ok(())
    }
    async fn in_progress(&self) -> event_core::Result<()> {
        Ok(())
    }
}

/// A subscription of a provider that is down: it hands out `deliveries`
/// events, then waits; its `close` takes `close_takes` (`None`: forever),
/// like a NATS close flushing its acknowledgements to a server that is gone.
struct StuckSubscription {
    deliveries: u64,
    close_takes: Option<Duration>,
    closed: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Subscription for StuckSubscription {
    async fn next(&mut self) -> event_core::Result<Option<ReceivedEvent>> {
        Ok(self.next_manual_ack().await?.map(|p| p.received))
    }
    async fn next_manual_ack(&mut self) -> event_core::Result<Option<PendingEvent>> {
        if self.deliveries == 0 {
            std::future::pending::<()>().await;
        }
        self.deliveries -= 1;
        let event = Event::new("events.a.b", "a", "s", "src", json!(self.deliveries));
        let received = ReceivedEvent {
            event: Arc::new(event),
            sequence: 100 - self.deliveries,
            num_delivered: 1,
            stream: Arc::from("test"),
        };
        Ok(Some(PendingEvent::new(received, None, Box::new(OkAcker))))
    }
    async fn close(&mut self) -> event_core::Result<()> {
        match self.close_takes {
            Some(takes) => tokio::time::sleep(takes).await,
            None => std::future::pending::<()>().await,
        }
        self.closed.store(true, Ordering::SeqCst);
        Err(event_core::Error::Timeout {
            operation: "closing consumer: flushing its acknowledgements".into(),
            elapsed: self.close_takes.unwrap_or_default(),
        })
    }
}

fn stuck(
    deliveries: u64,
    close_takes: Option<Duration>,
) -> (Box<dyn Subscription>, Arc<AtomicBool>) {
    let closed = Arc::new(AtomicBool::new(false));
    let sub = StuckSubscription {
        deliveries,
        close_takes,
        closed: closed.clone(),
    };
    (Box::new(sub), closed)
}

/// Shuts `handle` down with `deadline`; the report and how long it took
/// (failing, instead of hanging, if it never returns).
async fn timed_shutdown(
    handle: event_bus::ConsumerHandle,
    deadline: Duration,
) -> (event_bus::ConsumerReport, Duration) {
    let started = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(3600), handle.shutdown(deadline))
        .await
        .expect("shutdown never returned");
    (report, started.elapsed())
}

/// A runner over `sub` whose handler acks everything.
fn consume_acking(bus: &EventBus, sub: Box<dyn Subscription>) -> ConsumerHandle {
    bus.consume_subscription(
        sub,
        SubscribeOptions::default(),
        |_r: ReceivedEvent| async { Ok::<(), BoxError>(()) },
        ConsumerConfig::default(),
    )
    .unwrap()
}

/// The reported case: the provider is down and each close waits a request
/// timeout (10 s). `shutdown(1 s)` returned after 11 s; now within the
/// deadline plus `SHUTDOWN_CLOSE_GRACE`, the close left to finish in the
/// background and counted.
#[tokio::test(start_paused = true)]
async fn shutdown_keeps_its_deadline_when_close_waits_a_request_timeout() {
    let bus = EventBus::new(MemoryProvider::default());
    let (sub, closed) = stuck(0, Some(Duration::from_secs(10)));
    let handle = consume_acking(&bus, sub);
    let (report, took) = timed_shutdown(handle, Duration::from_secs(1)).await;
    assert!(
        took <= Duration::from_secs(1) + SHUTDOWN_CLOSE_GRACE,
        "shutdown(1 s) took {took:?}"
    );
    assert_eq!(report.unclosed, 1, "{report:?}");
    assert!(!closed.load(Ordering::SeqCst));
    // the close goes on in the background and finishes
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(closed.load(Ordering::SeqCst), "the close was not finished");
}

/// A handler that outlives the deadline and a close that never returns:
/// the handler is aborted at the deadline, the close gets the grace, and
/// shutdown returns then.
#[tokio::test(start_paused = true)]
async fn shutdown_keeps_its_deadline_when_close_hangs_after_an_abort() {
    let bus = EventBus::new(MemoryProvider::default());
    let (sub, _closed) = stuck(1, None);
    let started = Arc::new(AtomicU64::new(0));
    let count = started.clone();
    let handle = bus
        .consume_subscription(
            sub,
            SubscribeOptions::default(),
            move |_r: ReceivedEvent| {
                count.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    Ok::<(), BoxError>(())
                }
            },
            ConsumerConfig::default().handler_timeout(None),
        )
        .unwrap();
    while started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (report, took) = timed_shutdown(handle, Duration::from_secs(2)).await;
    assert!(
        took <= Duration::from_secs(2) + SHUTDOWN_CLOSE_GRACE,
        "shutdown(2 s) took {took:?}"
    );
    assert_eq!((report.aborted, report.unclosed), (1, 1), "{report:?}");
}

/// A close that finishes within the grace (the handler used the whole
/// deadline) is waited for and not counted.
#[tokio::test(start_paused = true)]
async fn a_close_finishing_within_the_grace_is_waited_for() {
    let bus = EventBus::new(MemoryProvider::default());
    let (sub, closed) = stuck(0, Some(SHUTDOWN_CLOSE_GRACE / 2));
    let handle = consume_acking(&bus, sub);
    let (report, took) = timed_shutdown(handle, Duration::ZERO).await;
    assert!(took <= SHUTDOWN_CLOSE_GRACE, "{took:?}");
    assert_eq!(report.unclosed, 0, "{report:?}");
    assert!(closed.load(Ordering::SeqCst));
}
