//! The whole provider conformance suite against `MemoryProvider`.

use event_core::EventProvider;
use event_core::conformance::{Capabilities, ProviderFactory};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use std::sync::Arc;
use std::time::Duration;

struct Memory;

fn provider(max_events: usize) -> Arc<dyn EventProvider> {
    provider_under("events", max_events)
}

fn provider_under(prefix: &str, max_events: usize) -> Arc<dyn EventProvider> {
    let config = MemoryConfig {
        subject_prefix: prefix.to_owned(),
        max_events,
        ..MemoryConfig::default()
    };
    let limits = MemoryLimits {
        max_payload: 64 * 1024,
        ..MemoryLimits::default()
    };
    Arc::new(MemoryProvider::with_limits(config, limits).expect("valid config"))
}

#[async_trait::async_trait]
impl ProviderFactory for Memory {
    async fn create(&self) -> Arc<dyn EventProvider> {
        provider(MemoryConfig::default().max_events)
    }

    async fn create_with_max_events(&self, max_events: usize) -> Option<Arc<dyn EventProvider>> {
        Some(provider(max_events))
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }
}

fn capabilities() -> Capabilities {
    Capabilities {
        max_payload: Some(64 * 1024),
        ack_wait: Duration::from_millis(300),
        receive_timeout: Duration::from_secs(5),
        reports_lagged: true,
        ..Capabilities::default()
    }
}

event_core::conformance_tests!(Memory);

/// Outside the suite's macro while NATS fails it (see its docs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_due_at_close_comes_to_the_next_subscription() {
    event_core::conformance::spare_due_at_close_comes_to_the_next_subscription(&Memory).await;
}

/// The whole suite again under a prefix of two tokens (`acme.events`, as a
/// NATS deployment may use): a subject's category is the token after the
/// prefix, which the store's block summaries and wake-ups key on.
mod two_token_prefix {
    use super::*;

    struct Memory;

    #[async_trait::async_trait]
    impl ProviderFactory for Memory {
        async fn create(&self) -> Arc<dyn EventProvider> {
            provider_under("acme.events", MemoryConfig::default().max_events)
        }

        async fn create_with_max_events(
            &self,
            max_events: usize,
        ) -> Option<Arc<dyn EventProvider>> {
            Some(provider_under("acme.events", max_events))
        }

        fn capabilities(&self) -> Capabilities {
            capabilities()
        }
    }

    event_core::conformance_tests!(Memory);
}
