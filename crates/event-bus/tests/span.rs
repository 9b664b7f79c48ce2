//! The publish span covers the provider's await. Kept in its own test
//! binary: tracing caches callsite interest process-wide, so tests without a
//! subscriber running in parallel in the same binary could disable the span.

#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use event_bus::EventBus;
use event_core::{Event, EventProvider, ProviderInfo, PublishOptions, Result, Subscription};
use event_memory::MemoryProvider;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

mod span_probe {
    //! A minimal `tracing` subscriber that records, for each `probe` event,
    //! whether it was emitted inside the bus's publish span.
    #![allow(clippy::unwrap_used)]
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    thread_local! {
        static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    #[derive(Default)]
    pub struct Recorder {
        next: AtomicU64,
        names: Mutex<HashMap<u64, &'static str>>,
        pub probes: Mutex<Vec<(String, bool)>>,
    }

    impl Subscriber for Recorder {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
            self.names
                .lock()
                .unwrap()
                .insert(id, attrs.metadata().name());
            Id::from_u64(id)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if event.metadata().target() != "probe" {
                return;
            }
            let names = self.names.lock().unwrap();
            let inside = STACK.with(|s| {
                s.borrow()
                    .iter()
                    .any(|id| names.get(id) == Some(&"a3s_event.publish"))
            });
            let mut label = String::new();
            struct V<'a>(&'a mut String);
            impl tracing::field::Visit for V<'_> {
                fn record_debug(&mut self, _: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{v:?}"));
                }
            }
            event.record(&mut V(&mut label));
            self.probes.lock().unwrap().push((label, inside));
        }
        fn enter(&self, id: &Id) {
            STACK.with(|s| s.borrow_mut().push(id.into_u64()));
        }
        fn exit(&self, id: &Id) {
            STACK.with(|s| {
                let mut s = s.borrow_mut();
                if let Some(pos) = s.iter().rposition(|x| *x == id.into_u64()) {
                    s.remove(pos);
                }
            });
        }
    }
}

/// A provider whose publish awaits (yields and sleeps) before storing.
struct AwaitingProvider(MemoryProvider);

#[async_trait]
impl EventProvider for AwaitingProvider {
    async fn publish_with_options(&self, event: &Event, options: &PublishOptions) -> Result<u64> {
        tracing::info!(target: "probe", "before await");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        tracing::info!(target: "probe", "after await");
        self.0.publish_with_options(event, options).await
    }
    async fn subscribe_with_options(
        &self,
        filter: &str,
        options: &event_core::SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.0.subscribe_with_options(filter, options).await
    }
    async fn subscribe_durable_with_options(
        &self,
        name: &str,
        filter: &str,
        options: &event_core::SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.0
            .subscribe_durable_with_options(name, filter, options)
            .await
    }
    async fn history(&self, filter: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        self.0.history(filter, limit).await
    }
    async fn unsubscribe(&self, name: &str) -> Result<()> {
        self.0.unsubscribe(name).await
    }
    async fn info(&self) -> Result<ProviderInfo> {
        self.0.info().await
    }
    fn name(&self) -> &str {
        "awaiting"
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_publish_span_covers_the_provider_await() {
    let recorder = Arc::new(span_probe::Recorder::default());
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let bus = EventBus::new(AwaitingProvider(MemoryProvider::default()));
    // something else runs while the publish is suspended
    let other = tokio::spawn(async {
        for _ in 0..5 {
            tracing::info!(target: "probe", "other task");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    bus.publish("a", "b", "s", "src", json!(1)).await.unwrap();
    other.await.unwrap();
    tracing::info!(target: "probe", "after publish");
    let probes = recorder.probes.lock().unwrap().clone();
    let inside = |label: &str| -> Vec<bool> {
        probes
            .iter()
            .filter(|(l, _)| l.contains(label))
            .map(|(_, i)| *i)
            .collect()
    };
    assert_eq!(inside("before await"), [true]);
    assert_eq!(inside("after await"), [true], "span lost across the await");
    let other = inside("other task");
    assert!(!other.is_empty());
    assert!(other.iter().all(|i| !i), "span leaked into another task");
    assert_eq!(inside("after publish"), [false]);
}
