//! [`NatsProvider`]: connection, stream management, publish, history, info.

use crate::config::{
    NatsConfig, NatsOptions, StorageType, UrlCredentials, check_one_auth_method, redact_url,
    split_url_credentials,
};
use crate::connection::{ConnectionLog, Credentials, Refusal};
use crate::denial::{self, Denial, Denials, Rule};
use crate::error::{self, PROVIDER};
use crate::subscription::NatsSubscription;
use async_nats::HeaderMap;
use async_nats::jetstream::{
    self, ErrorCode, context::PublishAckFuture, context::PublishErrorKind, stream,
};
use async_trait::async_trait;
use event_core::subject::{
    validate_consumer_name, validate_filter, validate_filter_for_prefix, validate_publish_subject,
};
use event_core::{
    Error, Event, EventProvider, ProviderInfo, PublishOptions, PublishOutcome, Result,
    SubscribeOptions, Subscription, check_payload_depth,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A publish awaiting its acknowledgement.
#[derive(Clone, Copy)]
struct Sent<'a> {
    subject: &'a str,
    /// `PublishOptions::expected_sequence`, for the error.
    expected: Option<u64>,
    /// The permission violations recorded before it was sent.
    since: u64,
    /// Encoded size (payload and headers), for the error.
    size: usize,
}

/// Header carrying the dedup id (see [`msg_id_header`]).
const MSG_ID: &str = "Nats-Msg-Id";
/// First byte of every escaped `Nats-Msg-Id` value (see [`msg_id_header`]).
const ESCAPED: u8 = b'~';

/// The `Nats-Msg-Id` value for dedup id `id`: an injective function of the
/// id whose value nats-server keeps as sent, so two ids the memory
/// provider keeps apart are never merged by JetStream's dedup.
///
/// nats-server (tested in `tests/dedup_ids.rs`) skips the spaces before a
/// header value, so ` a` would be a duplicate of `a`, and takes an empty
/// value for no id at all; async-nats trims whitespace (Unicode's) at both
/// ends of the headers it reads, and refuses CR and LF. So:
///
/// - an id of printable ASCII (`0x20..=0x7E`) that neither starts nor ends
///   with a space and does not start with `~` is the value as it is (every
///   generated event id, and an id published before this escaping existed
///   still deduplicates with the same id published now);
/// - any other id is `~` followed by its UTF-8 bytes, each byte outside
///   `0x21..=0x7E` and each `%` written `%XX` (upper-case hex): ` a`
///   becomes `~%20a`, `~a` becomes `~~a`, `é` becomes `~%C3%A9`.
///
/// A verbatim value never starts with `~` and an escaped one always does,
/// and percent-encoding with `%` itself encoded is one-to-one, so distinct
/// ids give distinct values; an escaped value is printable ASCII without
/// spaces, which the server and the client keep as they are.
fn msg_id_header(id: &str) -> std::borrow::Cow<'_, str> {
    let bytes = id.as_bytes();
    // one pass without an early exit over the bytes: this runs on every
    // publish, and generated ids are printable ASCII
    let printable = bytes
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x20) < 0x5F));
    let verbatim = printable
        && bytes.first().is_some_and(|&b| b != b' ' && b != ESCAPED)
        && bytes.last().is_some_and(|&b| b != b' ');
    if verbatim {
        return std::borrow::Cow::Borrowed(id);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut escaped = String::with_capacity(1 + 3 * bytes.len());
    escaped.push(char::from(ESCAPED));
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'%' {
            escaped.push(char::from(b));
        } else {
            escaped.push('%');
            escaped.push(char::from(HEX[usize::from(b >> 4)]));
            escaped.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    std::borrow::Cow::Owned(escaped)
}
/// Header carrying the optimistic-concurrency expectation.
const EXPECTED_LAST_SEQ: &str = "Nats-Expected-Last-Sequence";

/// The [`EventProvider`] on NATS JetStream.
///
/// Cheap to clone: clones share one connection and stream handle.
#[derive(Clone)]
pub struct NatsProvider {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: stream::Stream,
    pub(crate) stream_name: Arc<str>,
    pub(crate) config: NatsConfig,
    pub(crate) options: NatsOptions,
    pub(crate) max_payload: AtomicUsize,
    /// The stream's `max_bytes` (0: unlimited), as last read from the
    /// server: at connect, by every stream-info request since, and before
    /// an event is refused against it.
    pub(crate) stream_max_bytes: AtomicU64,
    /// What the stream's storage counts per message against `max_bytes`
    /// beyond the subject, headers and payload ([`stored_overhead`]).
    pub(crate) stored_overhead: u64,
    pub(crate) link: Arc<Link>,
    /// Durables this provider (and its clones) deleted.
    pub(crate) unsubscribed: Arc<Unsubscribed>,
    /// The runtime that connected, which runs the client's connection
    /// task: where the last drop keeps the connection until what was
    /// queued is sent, wherever that drop happens.
    runtime: Option<tokio::runtime::Handle>,
}

impl Drop for Inner {
    /// The last handle (provider clone, subscription or delivery held) is
    /// gone: the client closes its connection next, a close the
    /// application caused (see [`ConnectionLog::closed`]). async-nats
    /// closes it as soon as its last client handle is dropped, without
    /// sending what was queued (the last acknowledgements: a delivery
    /// settled just before was redelivered after its ack wait), so a task
    /// keeps it until the server has read what was queued: until it answers
    /// a request sent after it (the stream's info, which every provider may
    /// ask for: a flush alone only hands the bytes to the socket, and a
    /// close with unread input resets the connection, which may discard
    /// them at the server), within the request timeout. The task runs on
    /// the runtime that connected, which runs the connection: a drop
    /// outside any runtime (synchronous code between two `block_on`s) or
    /// in another one sends what was queued too (once that runtime is shut
    /// down, the connection is gone and nothing can be sent).
    fn drop(&mut self) {
        self.link.closing.store(true, Ordering::Release);
        if self.link.is_gone() {
            return;
        }
        if let Some(runtime) = &self.runtime {
            let client = self.client.clone();
            let subject = format!("$JS.API.STREAM.INFO.{}", self.stream_name);
            let timeout = self.config.request_timeout();
            runtime.spawn(async move {
                let answered = client.request(subject, bytes::Bytes::new());
                if tokio::time::timeout(timeout, answered).await.is_err() {
                    tracing::debug!("NATS client dropped: sending what was queued timed out");
                }
            });
        }
    }
}

/// Durables deleted through this provider: a subscription opened on a
/// durable before it was deleted ends, even if a new durable of the same
/// name exists by the time it asks for more (JetStream serves a pull
/// request by name, and a new consumer's `created` time is no identity:
/// nats-server reports it differently after a restart).
///
/// Deletions are counted only for names that a live durable subscription
/// of this provider (or a clone) reads ([`watch`](Self::watch)); a name's
/// entry goes with its last subscription. A process that deletes durables
/// under ever new names (one per session or job) keeps nothing for them.
#[derive(Debug, Default)]
pub(crate) struct Unsubscribed {
    /// Bumped on every deletion: a subscription compares it with the value
    /// it saw last, and looks its own name up only when it changed.
    epoch: AtomicU64,
    /// Per durable name read by live subscriptions: how many read it, and
    /// how many times it was deleted since the first of them watched it.
    watched: std::sync::Mutex<std::collections::HashMap<String, Watched>>,
}

#[derive(Debug, Default)]
struct Watched {
    subscriptions: usize,
    deletions: u64,
}

impl Unsubscribed {
    fn watched(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Watched>> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that durable `name` was deleted.
    pub(crate) fn record(&self, name: &str) {
        if let Some(watched) = self.watched().get_mut(name) {
            watched.deletions += 1;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The deletion epoch (any name).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Starts counting the deletions of durable `name` for a subscription
    /// (until the returned watch is dropped); a deletion recorded from now
    /// on makes [`DeletionWatch::deleted`] true.
    pub(crate) fn watch(self: &Arc<Self>, name: &str) -> DeletionWatch {
        let seen = {
            let mut watched = self.watched();
            let entry = watched.entry(name.to_owned()).or_default();
            entry.subscriptions += 1;
            entry.deletions
        };
        DeletionWatch {
            registry: Arc::clone(self),
            name: name.to_owned(),
            seen,
        }
    }

    /// Names watched now (for tests).
    #[cfg(test)]
    fn watched_names(&self) -> usize {
        self.watched().len()
    }
}

/// A durable subscription's watch on deletions of its durable (see
/// [`Unsubscribed::watch`]).
#[derive(Debug)]
pub(crate) struct DeletionWatch {
    registry: Arc<Unsubscribed>,
    name: String,
    /// The name's deletion count when the watch started.
    seen: u64,
}

impl DeletionWatch {
    /// Whether the durable was deleted since the watch started.
    pub(crate) fn deleted(&self) -> bool {
        self.registry
            .watched()
            .get(&self.name)
            .is_some_and(|w| w.deletions != self.seen)
    }
}

impl Drop for DeletionWatch {
    fn drop(&mut self) {
        let mut watched = self.registry.watched();
        if let Some(entry) = watched.get_mut(&self.name) {
            entry.subscriptions = entry.subscriptions.saturating_sub(1);
            if entry.subscriptions == 0 {
                watched.remove(&self.name);
            }
        }
    }
}

/// The connection state as reported by async-nats connection events.
#[derive(Default)]
pub(crate) struct Link {
    /// Whether the client has a live connection.
    pub(crate) connected: AtomicBool,
    /// Woken (all waiters) when the connection is lost or closed: a pull
    /// request waiting at the server is gone with it.
    pub(crate) lost: tokio::sync::Notify,
    /// How many times the connection was lost or closed: a pull request
    /// sent before the count changed may be gone, although nobody was
    /// waiting on [`lost`](Self::lost) when it was.
    losses: AtomicU64,
    /// Woken (all waiters) when the connection is (re)established.
    pub(crate) restored: tokio::sync::Notify,
    /// The permission violations the server reported.
    pub(crate) denials: Denials,
    /// What the log said about the connection (see [`ConnectionLog`]).
    pub(crate) log: ConnectionLog,
    /// Whether the server's last word on a reconnection was a refusal of
    /// the credentials.
    pub(crate) credentials: Credentials,
    /// Set when the provider is dropped (its last handle): the connection
    /// closes because the application let it go.
    pub(crate) closing: AtomicBool,
    /// Set when the client's connection task has ended, for good (see
    /// [`TaskGuard`]): nothing reconnects it.
    gone: AtomicBool,
}

impl Link {
    /// Whether the client has a live connection.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire) && !self.is_gone()
    }

    /// How many times the connection was lost (or closed) so far.
    pub(crate) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Acquire)
    }

    /// The connection was lost (or closed): counted, and its waiters woken.
    fn mark_lost(&self) {
        self.connected.store(false, Ordering::Release);
        self.losses.fetch_add(1, Ordering::AcqRel);
        self.lost.notify_waiters();
    }

    /// Whether the client's connection task has ended: every request fails
    /// at once, and no reconnection comes.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// The client's connection task has ended: not connected, and never
    /// again; waiters for a loss or a reconnection are woken. Whether it
    /// was not known before.
    fn task_ended(&self) -> bool {
        let first = !self.gone.swap(true, Ordering::AcqRel);
        self.mark_lost();
        self.restored.notify_waiters();
        first
    }

    /// Waits up to `limit` for a live connection; whether there is one.
    pub(crate) async fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let restored = self.restored.notified();
            tokio::pin!(restored);
            // registered before the state is read: no wake-up is missed
            restored.as_mut().enable();
            if self.is_connected() {
                return true;
            }
            if self.is_gone() {
                return false;
            }
            if tokio::time::timeout_at(deadline, restored).await.is_err() {
                return self.is_connected();
            }
        }
    }
}

/// Held by the client's event callback, which async-nats's event task
/// owns: dropped when that task ends, which it does only with the
/// connection task (whose end closes the event channel) or with the Tokio
/// runtime that connected (whose shutdown drops both tasks). async-nats's
/// connection state is not updated in the second case: it still says
/// connected.
struct TaskGuard {
    link: Arc<Link>,
    url: String,
}

impl Drop for TaskGuard {
    /// Logged at `DEBUG` only: a runtime shut down while tasks still hold
    /// the provider is most often the process exiting; a provider used
    /// after that says so in every error.
    fn drop(&mut self) {
        if self.link.task_ended() && !self.link.closing.load(Ordering::Acquire) {
            tracing::debug!(
                server = %self.url,
                "NATS client's connection task ended (the Tokio runtime that connected was \
                 shut down?): every operation fails with Error::Closed; connect again"
            );
        }
    }
}

impl std::fmt::Debug for NatsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsProvider")
            .field("url", &redact_url(&self.inner.config.url))
            .field("stream", &self.inner.stream_name)
            .field("subject_prefix", &self.inner.config.subject_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsProvider {
    /// Connects with [`NatsOptions::default`] and creates or checks the stream.
    ///
    /// Errors: [`Error::InvalidConfig`] for a bad URL or field,
    /// [`Error::Connection`] when the server refuses or cannot be reached,
    /// [`Error::Authentication`] for rejected credentials or an account
    /// without JetStream, [`Error::Unsupported`] for a server running without
    /// JetStream or without the TLS the configuration requires (not
    /// transient; the message says what to change),
    /// [`Error::Timeout`] when the server does not answer in
    /// `connect_timeout_secs`, [`Error::Conflict`] when the stream exists with
    /// settings that cannot be changed in place (or, with
    /// [`ExistingStream::Verify`](crate::ExistingStream::Verify), any settings
    /// that differ).
    pub async fn connect(config: NatsConfig) -> Result<Self> {
        Self::connect_with(config, NatsOptions::default()).await
    }

    /// Connects with production [`NatsOptions`] (user/password, nkey, TLS,
    /// duplicate window, replicas, discard policy, flow control).
    pub async fn connect_with(config: NatsConfig, mut options: NatsOptions) -> Result<Self> {
        config.validate()?;
        options.validate()?;
        let (servers, url_credentials) = split_url_credentials(&config.url)?;
        check_one_auth_method(&config, &options, url_credentials.is_some())?;
        let max_age = Duration::from_secs(config.max_age_secs);
        if config.max_age_secs > 0 && options.duplicate_window > max_age {
            if options.duplicate_window != crate::config::DEFAULT_DUPLICATE_WINDOW {
                return Err(Error::invalid_config(
                    "duplicate_window",
                    format!(
                        "NatsOptions::duplicate_window is {} s, longer than NatsConfig::max_age_secs \
                         ({} s): JetStream refuses a window longer than the stream keeps its events; \
                         shorten the window or lengthen max_age_secs",
                        options.duplicate_window.as_secs_f64(),
                        config.max_age_secs
                    ),
                ));
            }
            // the default: as JetStream does for a stream created without
            // a window
            options.duplicate_window = max_age;
        }
        let link = Arc::new(Link::default());
        let connect_options =
            connect_options(&config, &options, url_credentials, link.clone()).await?;
        // a comma-separated list is several servers (async-nats parses a
        // single string as one URL); `servers` are without credentials
        let client = match connect_options.connect(servers.clone()).await {
            Ok(client) => client,
            Err(e) => {
                let url = redact_url(&config.url);
                let timeout = config.connect_timeout();
                return Err(error::connect_failed(e, &servers, &url, timeout).await);
            }
        };
        link.connected.store(true, Ordering::Release);
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout())
            // the batch window bounds in-flight acks per publish_batch call;
            // a shared bound here could deadlock concurrent batches
            .max_ack_inflight(1 << 24)
            .build(client.clone());
        let stream = crate::stream::ensure_stream(&js, &config, &options, &link.denials).await?;
        let max_payload = client.server_info().max_payload;
        let stream_max_bytes = AtomicU64::new(max_bytes_of(&stream.cached_info().config));
        let stored_overhead = stored_overhead(stream.cached_info().config.storage);
        tracing::info!(
            url = %redact_url(&config.url),
            stream = %config.stream_name,
            max_payload,
            "connected to NATS JetStream"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                js,
                stream,
                stream_name: Arc::from(config.stream_name.as_str()),
                max_payload: AtomicUsize::new(max_payload),
                stream_max_bytes,
                stored_overhead,
                config,
                options,
                link,
                unsubscribed: Arc::default(),
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        })
    }

    /// The async-nats client, for what the provider does not cover.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The JetStream stream name.
    pub fn stream_name(&self) -> &str {
        &self.inner.stream_name
    }

    /// The server's maximum message size (payload and headers), in bytes.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload.load(Ordering::Relaxed)
    }

    /// Encodes `event` and builds its headers, checking subject and size;
    /// also returns the size (payload and headers).
    fn prepare(
        &self,
        event: &Event,
        options: &PublishOptions,
    ) -> Result<(HeaderMap, bytes::Bytes, usize)> {
        validate_publish_subject(&event.subject, &self.inner.config.subject_prefix)?;
        let msg_id = msg_id_header(options.checked_dedup_id(event)?);
        // decoding stops at 128 levels: deeper would be stored unreadable
        check_payload_depth(&event.payload)?;
        let payload = serde_json::to_vec(event)?;
        let mut headers = HeaderMap::new();
        // "NATS/1.0\r\n" + "name: value\r\n"... + "\r\n"
        let mut header_len = 12 + MSG_ID.len() + 4 + msg_id.len();
        headers.insert(MSG_ID, msg_id.as_ref());
        if let Some(expected) = options.expected_sequence {
            let value = expected.to_string();
            header_len += EXPECTED_LAST_SEQ.len() + 4 + value.len();
            headers.insert(EXPECTED_LAST_SEQ, value.as_str());
        }
        let size = payload.len() + header_len;
        let mut max = self.max_payload();
        if max > 0 && size > max {
            // a reconnection may have raised the limit: the client has the
            // current one (read only here, to keep the common path cheap)
            max = self.refresh_max_payload();
            if max > 0 && size > max {
                return Err(Error::PayloadTooLarge { size, max });
            }
        }
        Ok((headers, payload.into(), size))
    }

    /// Refuses an event the stream could never hold: one of `size` bytes
    /// (payload and headers) on `subject` that, stored, would be over the
    /// stream's `max_bytes`. JetStream takes such an event and acknowledges
    /// it, then, to get back under the limit, discards the oldest events
    /// (discard Old): every one of them, the new one too; the publish
    /// returned a sequence and the stream was left empty. (Discard New
    /// called it "the stream is full", which waiting could never change.)
    ///
    /// The refusal is [`Error::PayloadTooLarge`] whose `max` is the largest
    /// `size` the stream holds on that subject. Before refusing, the limit
    /// is read again (once per publish or batch: `refreshed`), in case it
    /// was raised.
    async fn fits_stream(&self, subject: &str, size: usize, refreshed: &mut bool) -> Result<()> {
        let Err(refused) = self.check_fits_stream(subject, size) else {
            return Ok(());
        };
        if std::mem::replace(refreshed, true) || self.stream_info("publish").await.is_err() {
            return Err(refused);
        }
        self.check_fits_stream(subject, size)
    }

    /// [`fits_stream`](Self::fits_stream) against the limit as last read.
    fn check_fits_stream(&self, subject: &str, size: usize) -> Result<()> {
        let max_bytes = self.inner.stream_max_bytes.load(Ordering::Relaxed);
        if max_bytes == 0 {
            return Ok(());
        }
        // what the stream counts beyond the payload and headers
        let around = (subject.len() as u64).saturating_add(self.inner.stored_overhead);
        let room = max_bytes.saturating_sub(around);
        if size as u64 > room {
            return Err(Error::PayloadTooLarge {
                size,
                max: usize::try_from(room).unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }

    /// Remembers and returns the connected server's `max_payload` (the
    /// remembered one while the client does not know it).
    fn refresh_max_payload(&self) -> usize {
        let max = self.inner.client.server_info().max_payload;
        if max > 0 {
            self.inner.max_payload.store(max, Ordering::Relaxed);
        }
        self.max_payload()
    }

    /// Hands a publish to the client, waiting for room in its outgoing
    /// queue until `deadline` at most (a server that stopped reading leaves
    /// the queue full). `timeout` is what `deadline` was set from.
    async fn send(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: bytes::Bytes,
        expected: Option<u64>,
        (deadline, timeout): (tokio::time::Instant, Duration),
    ) -> Result<PublishAckFuture> {
        // fail fast while disconnected instead of queueing into a client
        // buffer that may never drain (the caller retries with the same id)
        self.require_connected("publish")?;
        let size = payload.len();
        // cancel-safe: a publish still waiting for room is not sent
        let queued = tokio::time::timeout_at(
            deadline,
            self.inner
                .js
                .publish_with_headers(subject.to_string(), headers, payload),
        )
        .await
        .map_err(|_| Error::Timeout {
            operation: "publish: not sent, the connection's outgoing queue stayed full \
                        (the server is not reading)"
                .into(),
            elapsed: timeout,
        })?;
        queued.map_err(|e| match self.publish_error(e, expected) {
            // the client refused it against the server's current limit,
            // which a reconnection lowered: remember that limit
            Error::PayloadTooLarge { .. } => Error::PayloadTooLarge {
                size,
                max: self.refresh_max_payload(),
            },
            other => other,
        })
    }

    /// Every batch publish: the events pipelined, up to
    /// `max_inflight_acks` acknowledgements awaited at a time, one outcome
    /// per event in order.
    async fn publish_batch_outcomes(&self, events: &[Event]) -> Vec<Result<PublishOutcome>> {
        let window = self.inner.options.max_inflight_acks;
        let mut results: Vec<Option<Result<PublishOutcome>>> = Vec::with_capacity(events.len());
        let timeout = self.inner.config.request_timeout();
        let mut inflight: VecDeque<(usize, Sent<'_>, tokio::time::Instant, PublishAckFuture)> =
            VecDeque::with_capacity(window);
        let options = PublishOptions::default();
        // Set once a publish of this batch got no answer within the whole
        // timeout (no ack, or no room in the client's queue): the server
        // has stalled. The events not sent yet are then failed at once
        // instead of waiting out the timeout window after window.
        let mut stalled = false;
        let mut refreshed = false;
        let stall = |result: &Result<PublishOutcome>| matches!(result, Err(Error::Timeout { .. }));
        for (i, event) in events.iter().enumerate() {
            results.push(None);
            let (headers, payload, size) = match self.prepare(event, &options) {
                Ok(prepared) => prepared,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            if let Err(e) = self.fits_stream(&event.subject, size, &mut refreshed).await {
                results[i] = Some(Err(e));
                continue;
            }
            if !stalled
                && inflight.len() >= window
                && let Some((j, sent, deadline, ack)) = inflight.pop_front()
            {
                let result = self.await_ack(ack, sent, deadline, timeout).await;
                stalled = stall(&result);
                results[j] = Some(result);
            }
            if stalled {
                results[i] = Some(Err(Error::Timeout {
                    operation: "publish: not sent, an earlier publish of this batch got no \
                                answer in time (the server is not answering)"
                        .into(),
                    elapsed: timeout,
                }));
                continue;
            }
            let deadline = deadline_after(timeout);
            let sent = Sent {
                subject: &event.subject,
                expected: None,
                since: self.inner.link.denials.mark(),
                size,
            };
            match self
                .send(&event.subject, headers, payload, None, (deadline, timeout))
                .await
            {
                Ok(ack) => inflight.push_back((i, sent, deadline, ack)),
                Err(e) => {
                    let result = Err(e);
                    stalled = stall(&result);
                    results[i] = Some(result);
                }
            }
        }
        while let Some((j, sent, deadline, ack)) = inflight.pop_front() {
            results[j] = Some(self.await_ack(ack, sent, deadline, timeout).await);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::provider(
                        PROVIDER,
                        "batch publish lost track of an event",
                    ))
                })
            })
            .collect()
    }

    /// Awaits an acknowledgement until `deadline` (async-nats starts its own
    /// timer only when the future is first polled, which in a pipelined batch
    /// would add up the timeouts of every pending ack).
    /// `timeout` is what `deadline` was set from, for the error. The server
    /// never acknowledges a publish to `subject` that the user's permissions
    /// deny: a violation for it recorded since `since` ends the wait.
    async fn await_ack(
        &self,
        ack: PublishAckFuture,
        sent: Sent<'_>,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<PublishOutcome> {
        let denials = &self.inner.link.denials;
        let rules = [Rule::Publish(sent.subject)];
        let acked = tokio::select! {
            biased;
            acked = tokio::time::timeout_at(deadline, ack.into_future()) => acked,
            denial = denials.wait(sent.since, &rules) => return Err(denial.error("publish")),
        };
        let result = match acked {
            Ok(Err(err)) if err.kind() == PublishErrorKind::StreamNotFound => {
                Err(self.no_stream_answered(deadline).await)
            }
            Ok(Err(err))
                if error::api_code(&err) == Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) =>
            {
                Err(self.too_large_for_stream(sent.size, deadline).await)
            }
            // its subjects were given to another stream: the event is not
            // in the provider's stream
            Ok(Ok(ack)) if *ack.stream != *self.inner.stream_name => {
                Err(self.stream_conflict(format!(
                    "the event on {} was stored by stream {} instead: this stream no longer \
                     captures its subject (its subjects were changed elsewhere)",
                    sent.subject, ack.stream
                )))
            }
            // a duplicate's sequence is the first publish's: nothing stored
            Ok(result) => result
                .map(|ack| match ack.duplicate {
                    true => PublishOutcome::duplicate(ack.sequence),
                    false => PublishOutcome::stored(ack.sequence),
                })
                .map_err(|e| self.publish_error(e, sent.expected)),
            Err(_) => Err(Error::Timeout {
                operation: "waiting for the publish acknowledgement".into(),
                elapsed: timeout,
            }),
        };
        result.map_err(|err| {
            // the server reports violations on the connection, and a burst
            // of them (a batch to a denied subject) can overflow the
            // client's event queue: an acknowledgement that never came for
            // a subject this connection was denied before was denied too
            let earlier = matches!(err, Error::Timeout { .. }).then_some(0);
            match denials
                .find(sent.since, &rules)
                .or_else(|| earlier.and_then(|since| denials.find(since, &rules)))
            {
                Some(denial) => denial.error("publish"),
                None => err,
            }
        })
    }

    fn publish_error(&self, err: jetstream::context::PublishError, expected: Option<u64>) -> Error {
        let timeout = self.inner.config.request_timeout();
        match err.kind() {
            PublishErrorKind::WrongLastSequence => Error::WrongLastSequence {
                expected: expected.unwrap_or(0),
                actual: error::actual_last_sequence(&err),
            },
            PublishErrorKind::TimedOut => Error::Timeout {
                operation: "waiting for the publish acknowledgement".into(),
                elapsed: timeout,
            },
            PublishErrorKind::BrokenPipe => {
                Error::Connection(format!("publish: connection lost before the ack: {err}"))
            }
            PublishErrorKind::StreamNotFound => self.stream_down(),
            PublishErrorKind::MaxPayloadExceeded => Error::PayloadTooLarge {
                size: 0,
                max: self.max_payload(),
            },
            // not an outage (the server answers 503): retrying at once
            // cannot succeed
            _ if error::api_code(&err) == Some(ErrorCode::STREAM_SEALED) => self.stream_conflict(
                "the stream is sealed (changed elsewhere): it takes no new events".into(),
            ),
            _ if let Some(limit) = error::stream_limit(&err) => self.stream_conflict(format!(
                "the stream is full ({limit}): its discard policy New refuses new events \
                 until old ones expire or are removed"
            )),
            // answered with 503 like an outage, but it lasts until space is
            // freed: a retry loop on `is_transient` would spin forever
            _ if let Some(full) = error::storage_exhausted(&err) => self.storage_full(&full),
            _ => error::map("publish", err, timeout),
        }
    }

    /// [`Error::Conflict`] on the stream for a publish refused because a
    /// storage limit beyond the stream is reached (see
    /// [`error::Exhausted`]), saying which limit and what frees it.
    fn storage_full(&self, full: &error::Exhausted) -> Error {
        let (kind, server_limit, account_limit) = match self.inner.config.storage {
            StorageType::File => ("file", "max_file_store", "max_file"),
            StorageType::Memory => ("memory", "max_memory_store", "max_mem"),
        };
        self.stream_conflict(match full {
            error::Exhausted::Server(said) => format!(
                "the server's JetStream {kind} store is full (its {server_limit}, or the \
                 {medium} it has): it refuses every new event to its {kind}-stored streams \
                 until space is freed; a stream that discards old events does not evict for \
                 it. Remove events or streams, or raise {server_limit} (nats-server said: \
                 {said})",
                medium = if kind == "file" { "disk" } else { "memory" },
            ),
            error::Exhausted::Account(said) => format!(
                "the account's JetStream {kind} storage is full (its {account_limit} limit): \
                 it has no room for this event in any stream of the account until space is \
                 freed; a stream that discards old events does not evict for it. Remove \
                 events or streams of the account, or raise its {account_limit} (nats-server \
                 said: {said})"
            ),
        })
    }

    /// No stream answered a publish: JetStream is down or recovering
    /// (transient), the stream was deleted, or its subjects were changed
    /// so that it no longer captures the provider's. One stream-info
    /// request, within the publish's deadline, tells them apart.
    async fn no_stream_answered(&self, deadline: tokio::time::Instant) -> Error {
        let info = tokio::time::timeout_at(deadline, self.inner.stream.get_info()).await;
        match info {
            Ok(Ok(info)) => {
                let own = format!("{}.>", self.inner.config.subject_prefix);
                if info.config.subjects.contains(&own) {
                    return self.stream_down();
                }
                self.stream_conflict(format!(
                    "the stream no longer captures {own} (its subjects are {:?}, changed \
                     elsewhere), so nothing stores the event; connecting again adds the \
                     subject back",
                    info.config.subjects
                ))
            }
            Ok(Err(err)) => match self.stream_error("publish", err, self.consumer_timeout()) {
                missing @ Error::NotFound { .. } => missing,
                _ => self.stream_down(),
            },
            Err(_) => self.stream_down(),
        }
    }

    /// The stream refused an event larger than its `max_msg_size`: the
    /// limit, from one stream-info request within the publish's deadline
    /// (0 if that fails too).
    async fn too_large_for_stream(&self, size: usize, deadline: tokio::time::Instant) -> Error {
        let info = tokio::time::timeout_at(deadline, self.inner.stream.get_info()).await;
        let max = match info {
            Ok(Ok(info)) => usize::try_from(info.config.max_message_size).unwrap_or(0),
            _ => 0,
        };
        Error::PayloadTooLarge { size, max }
    }

    /// [`Error::Conflict`] on the provider's stream.
    pub(crate) fn stream_conflict(&self, reason: String) -> Error {
        Error::Conflict {
            resource: format!("stream {}", self.inner.stream_name),
            reason,
        }
    }

    fn stream_down(&self) -> Error {
        Error::Connection(format!(
            "publish: no JetStream stream answered for stream {} (server down or recovering)",
            self.inner.stream_name
        ))
    }

    /// `Error::Connection` at once while the client is not connected: a
    /// request would only wait out its timeout. `Error::Authentication`
    /// instead when the server's last word on reconnecting was a refusal
    /// of the credentials (not transient: retrying cannot help), and
    /// `Error::Closed` when the client's connection task is gone (nothing
    /// reconnects it).
    fn require_connected(&self, op: &str) -> Result<()> {
        if self.inner.link.is_gone() {
            return Err(error::client_gone(op, None));
        }
        if self.inner.client.connection_state() == async_nats::connection::State::Connected {
            return Ok(());
        }
        Err(self
            .inner
            .link
            .credentials
            .not_connected(op, &redact_url(&self.inner.config.url)))
    }

    /// Maps the error of a request on the stream: a missing stream is
    /// [`Error::NotFound`] naming the stream (not the operation).
    pub(crate) fn stream_error(
        &self,
        op: &str,
        err: impl Into<event_core::BoxError>,
        timeout: Duration,
    ) -> Error {
        let err: event_core::BoxError = err.into();
        // not the caller's options, and lasts until a consumer is deleted
        if error::api_code(err.as_ref()) == Some(ErrorCode::MAXIMUM_CONSUMERS_LIMIT) {
            // `op`: a subscription's consumer name, or "history consumer"
            return self.stream_conflict(format!(
                "cannot create a consumer ({op}): the stream's max_consumers or the account's \
                 consumer limit is reached (every subscription, and each filtered history \
                 call while it runs, uses a consumer): unsubscribe durables no longer used, \
                 or raise the limit (nats-server said: {err})"
            ));
        }
        match error::map(op, err, timeout) {
            Error::NotFound { kind: "stream", .. } => Error::NotFound {
                kind: "stream",
                name: self.inner.stream_name.to_string(),
            },
            other => other,
        }
    }

    pub(crate) fn consumer_timeout(&self) -> Duration {
        self.inner.config.request_timeout()
    }

    /// Runs `request` (operation `op`), ended at once by a permission
    /// violation that `rules` match (see [`denial::guarded`]).
    pub(crate) async fn guarded<T>(
        &self,
        op: &str,
        rules: &[Rule<'_>],
        request: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        denial::guarded(&self.inner.link.denials, op, rules, request).await
    }

    /// What a JetStream API request on consumer `name` needs.
    pub(crate) fn consumer_rules<'a>(&'a self, name: &'a str) -> [Rule<'a>; 2] {
        [
            Rule::ReplyInbox,
            Rule::Consumer {
                stream: &self.inner.stream_name,
                name,
            },
        ]
    }

    /// The stream's info (operation `op`), a missing stream
    /// [`Error::NotFound`], a denied request [`Error::Authentication`].
    pub(crate) async fn stream_info(&self, op: &str) -> Result<stream::Info> {
        let subject = format!("$JS.API.STREAM.INFO.{}", self.inner.stream_name);
        let rules = [Rule::ReplyInbox, Rule::Publish(&subject)];
        let request = async {
            self.inner
                .stream
                .get_info()
                .await
                .map_err(|e| self.stream_error(op, e, self.consumer_timeout()))
        };
        let info = self.guarded(op, &rules, request).await?;
        // an administrator may have changed the limit since
        self.inner
            .stream_max_bytes
            .store(max_bytes_of(&info.config), Ordering::Relaxed);
        Ok(info)
    }
}

/// What nats-server counts per message against a stream's `max_bytes`
/// beyond the subject, headers and payload: a file-backed stream's record
/// (length, sequence, time, subject and header lengths, hash: 34 bytes), a
/// memory-backed stream's sequence and time (16).
fn stored_overhead(storage: stream::StorageType) -> u64 {
    match storage {
        stream::StorageType::File => 34,
        stream::StorageType::Memory => 16,
    }
}

/// A stream's `max_bytes`, 0 for unlimited (JetStream's -1).
fn max_bytes_of(config: &stream::Config) -> u64 {
    u64::try_from(config.max_bytes).unwrap_or(0)
}

async fn connect_options(
    config: &NatsConfig,
    options: &NatsOptions,
    url_credentials: Option<UrlCredentials>,
    link: Arc<Link>,
) -> Result<async_nats::ConnectOptions> {
    let url = redact_url(&config.url);
    let guard = TaskGuard {
        link,
        url: url.clone(),
    };
    let mut co = async_nats::ConnectOptions::new()
        .connection_timeout(config.connect_timeout())
        .request_timeout(Some(config.request_timeout()))
        .ping_interval(options.ping_period())
        .event_callback(move |event| {
            let link = guard.link.clone();
            let url = url.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        link.credentials.set(None);
                        link.connected.store(true, Ordering::Release);
                        link.restored.notify_waiters();
                        link.log.connected();
                    }
                    async_nats::Event::Disconnected => {
                        link.mark_lost();
                        link.log.disconnected();
                    }
                    // async-nats reports each failed reconnection attempt
                    // so (a few a second at first); the last one tells
                    // whether the server refuses the credentials
                    async_nats::Event::ClientError(async_nats::ClientError::Other(error)) => {
                        let refusal = Refusal::of_attempt(&error);
                        link.credentials.set(refusal);
                        if let Some(refusal) = refusal {
                            link.log.refused(refusal);
                        }
                        link.log.attempt_failed(&error);
                    }
                    async_nats::Event::Closed => {
                        link.task_ended();
                        link.log.closed(&url, link.closing.load(Ordering::Acquire));
                    }
                    async_nats::Event::ServerError(async_nats::ServerError::Other(text))
                        if let Some((action, subject)) = Denial::parse(&text) =>
                    {
                        tracing::error!(
                            %subject,
                            action = ?action,
                            "the server denied a request (Permissions Violation)"
                        );
                        link.denials.record(action, subject);
                    }
                    // an expired or revoked credential on the live
                    // connection, which the server closes next
                    async_nats::Event::ServerError(error)
                        if let Some(refusal) = Refusal::of_server_error(&error) =>
                    {
                        tracing::warn!(%error, "NATS server error on the connection");
                        link.credentials.set(Some(refusal));
                        link.log.refused(refusal);
                    }
                    other => tracing::warn!(event = %other, "NATS connection event"),
                }
            }
        });
    if let Some(name) = &options.client_name {
        co = co.name(name);
    }
    if let Some(token) = &config.token {
        co = co.token(token.clone());
    }
    match url_credentials {
        Some(UrlCredentials::UserPassword { user, password }) => {
            co = co.user_and_password(user, password);
        }
        Some(UrlCredentials::Token(token)) => co = co.token(token),
        None => {}
    }
    if let (Some(user), Some(password)) = (&options.user, &options.password) {
        co = co.user_and_password(user.clone(), password.clone());
    }
    if let Some(seed) = &options.nkey_seed {
        co = co.nkey(seed.clone());
    }
    if let Some(path) = &config.credentials_path {
        co = co
            .credentials_file(path)
            .await
            .map_err(|e| Error::invalid_config("credentials_path", format!("{path}: {e}")))?;
    }
    let tls = &options.tls;
    if tls.require {
        co = co.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        co = co.add_root_certificates(ca.clone());
    }
    if let Some(cert) = &tls.client_cert {
        co = co.add_client_certificate(cert.cert_file.clone(), cert.key_file.clone());
    }
    Ok(co)
}

/// `timeout` from now; a timeout too long for the clock (a caller's
/// `Duration::MAX`) is a deadline [`LONGEST_WAIT`](event_core::LONGEST_WAIT)
/// ahead instead of a panic.
fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    event_core::deadline_after(tokio::time::Instant::now(), timeout)
}

impl NatsProvider {
    /// Publishes one event: what every single publish of the provider
    /// runs (`publish_with_options`, `publish_shared_with_outcome`, and the
    /// trait's defaults built on them).
    async fn publish_one(&self, event: &Event, options: &PublishOptions) -> Result<PublishOutcome> {
        let (headers, payload, size) = self.prepare(event, options)?;
        self.fits_stream(&event.subject, size, &mut false).await?;
        let timeout = options
            .timeout
            .unwrap_or_else(|| self.inner.config.request_timeout());
        let deadline = deadline_after(timeout);
        let sent = Sent {
            subject: &event.subject,
            expected: options.expected_sequence,
            since: self.inner.link.denials.mark(),
            size,
        };
        let ack = self
            .send(
                &event.subject,
                headers,
                payload,
                options.expected_sequence,
                (deadline, timeout),
            )
            .await?;
        self.await_ack(ack, sent, deadline, timeout).await
    }
}

#[async_trait]
impl EventProvider for NatsProvider {
    async fn publish_with_options(&self, event: &Event, options: &PublishOptions) -> Result<u64> {
        self.publish_one(event, options)
            .await
            .map(|outcome| outcome.sequence)
    }

    /// Says whether JetStream stored the event or found its dedup id inside
    /// the stream's duplicate window (its publish acknowledgement's
    /// `duplicate`, with the first publish's sequence).
    async fn publish_shared_with_outcome(
        &self,
        event: Arc<Event>,
        options: &PublishOptions,
    ) -> Result<PublishOutcome> {
        self.publish_one(&event, options).await
    }

    async fn publish_batch(&self, events: &[Event]) -> Result<Vec<Result<u64>>> {
        Ok(self
            .publish_batch_outcomes(events)
            .await
            .into_iter()
            .map(|result| result.map(|outcome| outcome.sequence))
            .collect())
    }

    /// Says, per event, whether JetStream stored it or found its dedup id
    /// inside the stream's duplicate window (each publish
    /// acknowledgement's `duplicate`; a repeat inside the batch too).
    async fn publish_batch_with_outcome(
        &self,
        events: &[Event],
    ) -> Result<Vec<Result<PublishOutcome>>> {
        Ok(self.publish_batch_outcomes(events).await)
    }

    async fn subscribe_with_options(
        &self,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        validate_filter_for_prefix(filter_subject, self.subject_prefix())?;
        self.require_connected("subscribe")?;
        let filter = crate::history::consumer_filter(filter_subject, self.subject_prefix());
        let sub = NatsSubscription::ephemeral(self.clone(), &filter, options).await?;
        Ok(Box::new(sub))
    }

    async fn subscribe_durable_with_options(
        &self,
        consumer_name: &str,
        filter_subject: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        validate_consumer_name(consumer_name)?;
        validate_filter_for_prefix(filter_subject, self.subject_prefix())?;
        self.require_connected("subscribe")?;
        let filter = crate::history::consumer_filter(filter_subject, self.subject_prefix());
        let sub = NatsSubscription::durable(self.clone(), consumer_name, &filter, options).await?;
        Ok(Box::new(sub))
    }

    async fn history(&self, filter_subject: Option<&str>, limit: usize) -> Result<Vec<Event>> {
        if let Some(filter) = filter_subject {
            validate_filter(filter)?;
        }
        self.require_connected("history")?;
        crate::history::history(self, filter_subject, limit).await
    }

    async fn unsubscribe(&self, consumer_name: &str) -> Result<()> {
        validate_consumer_name(consumer_name)?;
        self.require_connected("unsubscribe")?;
        let delete = async {
            match self.inner.stream.delete_consumer(consumer_name).await {
                Ok(_) => {
                    self.inner.unsubscribed.record(consumer_name);
                    Ok(())
                }
                Err(e) => Err(
                    match error::map(consumer_name, e, self.consumer_timeout()) {
                        Error::NotFound { .. } => Error::NotFound {
                            kind: "consumer",
                            name: consumer_name.to_string(),
                        },
                        other => other,
                    },
                ),
            }
        };
        let op = format!("unsubscribe {consumer_name}");
        self.guarded(&op, &self.consumer_rules(consumer_name), delete)
            .await
    }

    async fn info(&self) -> Result<ProviderInfo> {
        self.require_connected("stream info")?;
        let info = self.stream_info("stream info").await?;
        let state = info.state;
        Ok(ProviderInfo {
            provider: PROVIDER.to_string(),
            messages: state.messages,
            bytes: state.bytes,
            consumers: state.consumer_count,
            first_sequence: if state.messages == 0 {
                0
            } else {
                state.first_sequence
            },
            last_sequence: state.last_sequence,
        })
    }

    fn name(&self) -> &str {
        PROVIDER
    }

    fn subject_prefix(&self) -> &str {
        &self.inner.config.subject_prefix
    }

    async fn health(&self) -> Result<bool> {
        if self.inner.link.is_gone()
            || self.inner.client.connection_state() != async_nats::connection::State::Connected
        {
            return Ok(false);
        }
        // ended at once by a denied request, not after the request timeout
        match self.stream_info("health").await {
            Ok(info) => {
                let max = self.inner.client.server_info().max_payload;
                if max > 0 {
                    self.inner.max_payload.store(max, Ordering::Relaxed);
                }
                if let Err(problem) = writable(&info) {
                    tracing::warn!(
                        stream = %self.inner.stream_name,
                        problem = %problem,
                        "NATS health check: the stream cannot take writes"
                    );
                    return Ok(false);
                }
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "NATS health check: stream lookup failed");
                Ok(false)
            }
        }
    }
}

/// How long a replicated stream's leader may have not heard from a replica
/// before [`writable`] counts it down: replicas answer the leader's
/// heartbeats about once a second, and the server itself marks a silent
/// replica not current only after some ten seconds and offline later
/// still.
const PEER_SILENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a replicated stream, as `info` describes it, can take writes: it
/// has a leader, and the leader and the replicas up (not offline, heard
/// from within [`PEER_SILENCE`]) make a quorum of its `num_replicas`. A
/// member that answers after losing the others still names itself leader,
/// with the others current, for some ten seconds (and then none), and
/// every write times out meanwhile. A stream of one replica (or a server
/// that reports no cluster) is writable whenever it answers.
pub(crate) fn writable(
    info: &async_nats::jetstream::stream::Info,
) -> std::result::Result<(), String> {
    let replicas = info.config.num_replicas;
    if replicas <= 1 {
        return Ok(());
    }
    let Some(cluster) = &info.cluster else {
        return Ok(());
    };
    let Some(leader) = &cluster.leader else {
        return Err(format!(
            "no leader for its {replicas} replicas (an election in progress, or too few of them up)"
        ));
    };
    let up = 1 + cluster
        .replicas
        .iter()
        .filter(|peer| !peer.offline && peer.active < PEER_SILENCE)
        .count();
    let quorum = replicas / 2 + 1;
    if up < quorum {
        return Err(format!(
            "its leader {leader:?} sees {up} of {replicas} replicas up, under the quorum of {quorum}"
        ));
    }
    Ok(())
}

impl NatsProvider {
    /// Whether the client currently has a live connection (updated from
    /// async-nats connection events; reconnection is automatic). False for
    /// good once the client's connection task is gone: the Tokio runtime
    /// that called [`connect`](Self::connect) was shut down (see the crate
    /// docs, "Reconnection").
    pub fn is_connected(&self) -> bool {
        self.inner.link.is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::{ESCAPED, Unsubscribed, msg_id_header, writable};

    /// A stream info as a three-node cluster's server answers it, with
    /// `num_replicas`, the leader and the other members' `offline` flags.
    /// `peers`: each other member's name, `offline` flag and how long ago
    /// the leader heard from it.
    fn stream_info(
        replicas: usize,
        leader: Option<&str>,
        peers: &[(&str, bool)],
    ) -> async_nats::jetstream::stream::Info {
        let peers: Vec<_> = peers
            .iter()
            .map(|(name, offline)| (*name, *offline, 1))
            .collect();
        stream_info_heard(replicas, leader, &peers)
    }

    fn stream_info_heard(
        replicas: usize,
        leader: Option<&str>,
        peers: &[(&str, bool, u64)],
    ) -> async_nats::jetstream::stream::Info {
        let peers: Vec<_> = peers
            .iter()
            .map(|(name, offline, ms)| {
                serde_json::json!({
                    "name": name, "current": true, "offline": offline,
                    "active": ms * 1_000_000,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "config": async_nats::jetstream::stream::Config {
                name: "S".into(),
                subjects: vec!["events.>".into()],
                num_replicas: replicas,
                ..Default::default()
            },
            "created": "2026-11-30T00:00:00Z",
            "state": {"messages": 0, "bytes": 0, "first_seq": 0, "first_ts": "0001-01-01T00:00:00Z",
                      "last_seq": 0, "last_ts": "0001-01-01T00:00:00Z", "consumer_count": 0},
            "cluster": {"name": "a3s", "leader": leader, "replicas": peers},
        }))
        .expect("a stream info")
    }

    #[test]
    fn a_replicated_stream_without_a_quorum_is_not_writable() {
        let healthy = stream_info(3, Some("n1"), &[("n2", false), ("n3", false)]);
        assert_eq!(writable(&healthy), Ok(()));
        let one_down = stream_info(3, Some("n1"), &[("n2", false), ("n3", true)]);
        assert_eq!(writable(&one_down), Ok(()));
        let alone = stream_info(3, Some("n2"), &[("n1", true), ("n3", true)]);
        let problem = writable(&alone).unwrap_err();
        assert!(problem.contains("1 of 3 replicas up"), "{problem}");
        // the member left, right after losing the others: still leader,
        // the others still current and not offline, but silent
        let stale = stream_info_heard(3, Some("n1"), &[("n2", false, 6_000), ("n3", false, 6_000)]);
        assert!(writable(&stale).unwrap_err().contains("1 of 3 replicas up"));
        let heartbeat =
            stream_info_heard(3, Some("n1"), &[("n2", false, 1_200), ("n3", false, 6_000)]);
        assert_eq!(writable(&heartbeat), Ok(()));
        let electing = stream_info(3, None, &[("n1", true), ("n3", false)]);
        assert!(writable(&electing).unwrap_err().contains("no leader"));
        // one replica: writable whenever it answers, cluster or not
        assert_eq!(writable(&stream_info(1, None, &[])), Ok(()));
        let mut single = stream_info(1, None, &[]);
        single.cluster = None;
        assert_eq!(writable(&single), Ok(()));
        // R5 with two members offline still has its quorum of three
        let r5 = stream_info(
            5,
            Some("n1"),
            &[("n2", false), ("n3", false), ("n4", true), ("n5", true)],
        );
        assert_eq!(writable(&r5), Ok(()));
    }
    use std::sync::Arc;

    /// The dedup id a `Nats-Msg-Id` value was made from: the inverse of
    /// [`msg_id_header`], which is therefore injective.
    fn msg_id_of(value: &str) -> Option<String> {
        let Some(rest) = value.strip_prefix(char::from(ESCAPED)) else {
            return Some(value.to_owned());
        };
        let mut bytes = Vec::new();
        let mut rest = rest.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'%' {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
            } else {
                bytes.push(b);
                rest = tail;
            }
        }
        String::from_utf8(bytes).ok()
    }

    #[test]
    fn msg_id_headers_are_verbatim_for_ordinary_ids_and_escaped_otherwise() {
        for id in [
            "0192d5a4-7c1e-7b3a-9f00-5e8d2c4b1a77",
            "order-42",
            "a b",
            "x~",
            "100%",
            "!",
        ] {
            assert_eq!(msg_id_header(id), id);
        }
        for (id, value) in [
            (" dup", "~%20dup"),
            ("dup ", "~dup%20"),
            ("~x", "~~x"),
            ("~%20dup", "~~%2520dup"),
            ("a b ", "~a%20b%20"),
            ("é", "~%C3%A9"),
            ("\u{a0}x", "~%C2%A0x"),
            ("x\u{2028}", "~x%E2%80%A8"),
            ("", "~"),
            (" ", "~%20"),
            ("\r\n\t\0\u{7f}", "~%0D%0A%09%00%7F"),
        ] {
            assert_eq!(msg_id_header(id), value, "{id:?}");
        }
    }

    /// Every value is printable ASCII that the server and async-nats keep
    /// as sent (no space at either end, never empty), and decodes back to
    /// its id: distinct ids never share a value.
    #[test]
    fn msg_id_headers_are_injective_and_header_safe() {
        let pieces = [
            "",
            " ",
            "  ",
            "~",
            "%",
            "%20",
            "~%20",
            "a",
            "A",
            "é",
            "\u{a0}",
            "\u{2028}",
            "\t",
            "\r",
            "\n",
            "\0",
            "\u{7f}",
            "\u{10ffff}",
            ":",
            "x y",
        ];
        let mut seen = std::collections::HashMap::new();
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let id = format!("{a}{b}{c}");
                    let value = msg_id_header(&id);
                    assert!(!value.is_empty(), "{id:?}");
                    assert!(
                        value.bytes().all(|b| (0x20..=0x7E).contains(&b))
                            && !value.starts_with(' ')
                            && !value.ends_with(' '),
                        "{id:?} -> {value:?}"
                    );
                    assert_eq!(msg_id_of(&value).as_deref(), Some(id.as_str()));
                    if let Some(other) = seen.insert(value.clone().into_owned(), id.clone()) {
                        assert_eq!(other, id, "both are {value:?}");
                    }
                }
            }
        }
    }

    /// Deletions of names no subscription reads leave nothing behind; a
    /// watched name is kept while a subscription watches it, and each
    /// watch sees only the deletions after it started.
    #[test]
    fn deletions_are_kept_only_for_watched_names() {
        let registry = Arc::new(Unsubscribed::default());
        for n in 0..100_000 {
            registry.record(&format!("session-{n}"));
        }
        assert_eq!(registry.watched_names(), 0);
        assert_eq!(registry.epoch(), 100_000);

        let first = registry.watch("d");
        registry.record("d");
        let second = registry.watch("d");
        assert!(first.deleted());
        assert!(!second.deleted());
        drop(first);
        assert_eq!(registry.watched_names(), 1);
        registry.record("d");
        assert!(second.deleted());
        drop(second);
        assert_eq!(registry.watched_names(), 0);
        // a new subscription on the name starts afresh
        assert!(!registry.watch("d").deleted());
        assert_eq!(registry.watched_names(), 0);
    }
}
