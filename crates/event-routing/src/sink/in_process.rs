use super::EventSink;
use async_trait::async_trait;
use event_core::{Event, Result};
use futures_util::future::BoxFuture;
use std::future::Future;

type Handler = Box<dyn Fn(Event) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// Delivers by calling an async closure with (a copy of) the event.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
/// use event_routing::{EventSink, InProcessSink};
///
/// let sink = InProcessSink::new("audit", |event| async move {
///     println!("got {}", event.id);
///     Ok(())
/// });
/// let event = event_core::Event::new("events.a.b", "a", "s", "x", serde_json::json!({}));
/// sink.deliver(&event).await?;
/// # Ok(()) }
/// ```
pub struct InProcessSink {
    name: String,
    handler: Handler,
}

impl std::fmt::Debug for InProcessSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl InProcessSink {
    /// A sink calling `handler`; an `Err` from it is a failed delivery.
    pub fn new<F, Fut>(name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        Self {
            name: name.into(),
            handler: Box::new(move |event| Box::pin(handler(event))),
        }
    }
}

#[async_trait]
impl EventSink for InProcessSink {
    async fn deliver(&self, event: &Event) -> Result<()> {
        (self.handler)(event.clone()).await
    }

    fn name(&self) -> &str {
        &self.name
    }
}
