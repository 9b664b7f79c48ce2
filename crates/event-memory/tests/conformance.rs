//! The whole provider conformance suite against `MemoryProvider`.

use event_core::EventProvider;
use event_core::conformance::{Capabilities, ProviderFactory};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use std::sync::Arc;
use std::time::Duration;

struct Memory;

#[async_trait::async_trait]
impl ProviderFactory for Memory {
    async fn create(&self) -> Arc<dyn EventProvider> {
        let limits = MemoryLimits {
            max_payload: 64 * 1024,
            ..MemoryLimits::default()
        };
        Arc::new(
            MemoryProvider::with_limits(MemoryConfig::default(), limits).expect("valid config"),
        )
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_payload: Some(64 * 1024),
            ack_wait: Duration::from_millis(300),
            receive_timeout: Duration::from_secs(5),
        }
    }
}

event_core::conformance_tests!(Memory);
