//! The whole provider conformance suite against `MemoryProvider`.

use event_core::EventProvider;
use event_core::conformance::{Capabilities, ProviderFactory};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use std::sync::Arc;
use std::time::Duration;

struct Memory;

fn provider(max_events: usize) -> Arc<dyn EventProvider> {
    let config = MemoryConfig {
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
        Capabilities {
            max_payload: Some(64 * 1024),
            ack_wait: Duration::from_millis(300),
            receive_timeout: Duration::from_secs(5),
            reports_lagged: true,
            ..Capabilities::default()
        }
    }
}

event_core::conformance_tests!(Memory);
