//! The whole provider conformance suite against real `nats-server`s: one
//! server per test, one fresh stream and subject prefix per provider.

mod common;

use common::NatsServer;
use event_core::EventProvider;
use event_core::conformance::{Capabilities, ProviderFactory};
use event_nats::NatsProvider;
use std::sync::Arc;
use std::time::Duration;

struct Nats {
    server: NatsServer,
}

impl Nats {
    fn new(test: &str) -> Option<Self> {
        NatsServer::start(test).map(|server| Self { server })
    }
}

#[async_trait::async_trait]
impl ProviderFactory for Nats {
    async fn create(&self) -> Arc<dyn EventProvider> {
        let config = common::config(&self.server, "conf");
        Arc::new(NatsProvider::connect(config).await.expect("connect"))
    }

    async fn create_with_max_events(&self, max_events: usize) -> Option<Arc<dyn EventProvider>> {
        let config = event_nats::NatsConfig {
            max_events: max_events as u64,
            ..common::config(&self.server, "conf")
        };
        Some(Arc::new(
            NatsProvider::connect(config).await.expect("connect"),
        ))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_payload: Some(65536),
            ack_wait: Duration::from_secs(1),
            receive_timeout: Duration::from_secs(10),
            // JetStream skips messages removed by retention without telling
            // the consumer
            reports_lagged: false,
            ..Capabilities::default()
        }
    }
}

// `return` leaves the generated test when there is no nats-server (after the
// fixture printed a SKIPPED line; with A3S_REQUIRE_NATS=1 it panics instead).
event_core::conformance_tests!({
    match Nats::new(module_path!()) {
        Some(factory) => factory,
        None => return,
    }
});

/// Outside the suite's macro: the known gap of the crate docs (a spare
/// delivery received by a closing subscription and never handed out ends
/// the event; see also `consumer.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known gap: a spare delivery fetched for a cancelled call and handed back by close is never delivered again by JetStream"]
async fn spare_due_at_close_comes_to_the_next_subscription() {
    let Some(factory) = Nats::new(module_path!()) else {
        return;
    };
    event_core::conformance::spare_due_at_close_comes_to_the_next_subscription(&factory).await;
}
