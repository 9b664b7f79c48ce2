//! `history`: the newest matching events, read backwards in growing windows.
//!
//! Each window `[start, end)` of stream sequences is read by one short-lived
//! ephemeral consumer that starts at `start` with the caller's filter (the
//! server skips non-matching events), so a query touches only the tail of
//! the stream it needs: `limit` events when nothing is filtered out.

use crate::error;
use crate::provider::NatsProvider;
use async_nats::jetstream::consumer::{self, AckPolicy, pull};
use event_core::{Error, Event, Result};
use futures_util::StreamExt;
use std::time::Duration;

/// Largest window read in one step.
const MAX_WINDOW: u64 = 1 << 20;
/// Largest pull request.
const MAX_FETCH: usize = 4096;

pub(crate) async fn history(
    provider: &NatsProvider,
    filter: Option<&str>,
    limit: usize,
) -> Result<Vec<Event>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let timeout = provider.consumer_timeout();
    let state = provider
        .inner
        .stream
        .get_info()
        .await
        .map_err(|e| error::map("stream info", e, timeout))?
        .state;
    if state.messages == 0 {
        return Ok(Vec::new());
    }
    let first = state.first_sequence.max(1);
    let mut end = state.last_sequence + 1;
    let mut window = u64::try_from(limit)
        .unwrap_or(MAX_WINDOW)
        .clamp(16, MAX_WINDOW);
    let mut newest_first = Vec::with_capacity(limit.min(4096));
    while newest_first.len() < limit && end > first {
        let start = end.saturating_sub(window).max(first);
        let mut chunk = read_range(provider, filter, start, end).await?;
        while let Some(event) = chunk.pop() {
            newest_first.push(event);
            if newest_first.len() == limit {
                break;
            }
        }
        end = start;
        window = (window * 4).min(MAX_WINDOW);
    }
    Ok(newest_first)
}

/// Events with stream sequence in `[start, end)` matching `filter`, oldest
/// first.
async fn read_range(
    provider: &NatsProvider,
    filter: Option<&str>,
    start: u64,
    end: u64,
) -> Result<Vec<Event>> {
    let timeout = provider.consumer_timeout();
    let name = format!("hist-{}", uuid::Uuid::new_v4().simple());
    let config = pull::Config {
        name: Some(name.clone()),
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        ack_policy: AckPolicy::None,
        filter_subject: filter.unwrap_or_default().to_string(),
        inactive_threshold: Duration::from_secs(10),
        memory_storage: true,
        ..pull::Config::default()
    };
    let consumer = provider
        .inner
        .stream
        .create_consumer(config)
        .await
        .map_err(|e| error::map("history consumer", e, timeout))?;
    let result = async {
        let mut events = Vec::new();
        let span = end - start;
        'outer: loop {
            let want = usize::try_from(span).unwrap_or(MAX_FETCH).min(MAX_FETCH);
            let mut batch = consumer
                .fetch()
                .max_messages(want)
                .expires(timeout)
                .messages()
                .await
                .map_err(|e| error::map("history fetch", e, timeout))?;
            let mut got = 0usize;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| error::map("history fetch", e, timeout))?;
                got += 1;
                let info = message.info().map_err(|e| {
                    Error::provider(
                        error::PROVIDER,
                        format!("history delivery without metadata: {e}"),
                    )
                })?;
                let (sequence, pending) = (info.stream_sequence, info.pending);
                if sequence >= end {
                    break 'outer;
                }
                match serde_json::from_slice::<Event>(&message.payload) {
                    Ok(event) => events.push(event),
                    Err(e) => tracing::warn!(
                        sequence,
                        error = %e,
                        "history skipped a message that is not a valid event"
                    ),
                }
                if pending == 0 || sequence + 1 >= end {
                    break 'outer;
                }
            }
            if got == 0 {
                break;
            }
        }
        Ok::<_, Error>(events)
    }
    .await;
    let stream = provider.inner.stream.clone();
    tokio::spawn(async move {
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(consumer = %name, error = %e, "history consumer cleanup");
        }
    });
    result
}
