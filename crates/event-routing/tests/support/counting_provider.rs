use async_trait::async_trait;
use event_core::{
    Event, EventProvider, ProviderInfo, PublishOptions, PublishOutcome, Result, SubscribeOptions,
    Subscription,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts publishes, then delegates.
pub struct CountingProvider {
    inner: Arc<dyn EventProvider>,
    published: AtomicU64,
}

impl CountingProvider {
    pub fn new(inner: Arc<dyn EventProvider>) -> Self {
        Self {
            inner,
            published: AtomicU64::new(0),
        }
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl EventProvider for CountingProvider {
    async fn publish_with_options(&self, event: &Event, options: &PublishOptions) -> Result<u64> {
        let sequence = self.inner.publish_with_options(event, options).await?;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(sequence)
    }

    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<Result<u64>>> {
        let results = self.inner.publish_batch(events).await?;
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.published.fetch_add(ok, Ordering::Relaxed);
        Ok(results)
    }

    async fn publish_batch_with_outcome(
        &self,
        events: &[Event],
    ) -> Result<Vec<Result<PublishOutcome>>> {
        let results = self.inner.publish_batch_with_outcome(events).await?;
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.published.fetch_add(ok, Ordering::Relaxed);
        Ok(results)
    }

    async fn publish_shared(&self, event: Arc<Event>) -> Result<u64> {
        let sequence = self.inner.publish_shared(event).await?;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(sequence)
    }

    async fn publish_shared_with_options(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<u64> {
        let sequence = self
            .inner
            .publish_shared_with_options(event, options)
            .await?;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(sequence)
    }

    async fn publish_shared_with_outcome(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        let outcome = self
            .inner
            .publish_shared_with_outcome(event, options)
            .await?;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }

    async fn subscribe_with_options(
        &self,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.inner
            .subscribe_with_options(filter_subject, options)
            .await
    }

    async fn subscribe_durable_with_options(
        &self,
        consumer_name: &str,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.inner
            .subscribe_durable_with_options(consumer_name, filter_subject, options)
            .await
    }

    async fn history(&self, filter_subject: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        self.inner.history(filter_subject, limit).await
    }

    async fn history_shared(
        &self,
        filter_subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        self.inner.history_shared(filter_subject, limit).await
    }

    async fn unsubscribe(&self, consumer_name: &str) -> Result<()> {
        self.inner.unsubscribe(consumer_name).await
    }

    async fn info(&self) -> Result<ProviderInfo> {
        // `info().provider` is `name()` (the Contract): report our own name
        let mut info = self.inner.info().await?;
        info.provider = self.name().to_string();
        Ok(info)
    }

    async fn health(&self) -> Result<bool> {
        self.inner.health().await
    }

    fn name(&self) -> &str {
        "counting"
    }

    fn subject_prefix(&self) -> &str {
        self.inner.subject_prefix()
    }
}
