//! Set-up shared by the routing benches.

use event_routing::{Broker, BrokerConfig, InProcessSink, Trigger, TriggerFilter};
use std::sync::Arc;
use std::time::Duration;

/// A broker with one trigger on `events.orders.>` whose sink takes 10 ms,
/// and enough workers that such sinks never fill the queue at publish rate.
pub fn slow_sink_broker() -> Broker {
    let broker = Broker::with_config(BrokerConfig {
        queue_capacity: 65_536,
        workers: 65_536,
        ..BrokerConfig::default()
    })
    .unwrap();
    broker
        .add_trigger(Trigger::new(
            "slow",
            TriggerFilter::by_subject("events.orders.>"),
            Arc::new(InProcessSink::new("slow", |_| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(())
            })),
        ))
        .unwrap();
    broker
}
