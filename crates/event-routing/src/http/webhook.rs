use crate::sink::EventSink;
use crate::source::EventSource;
use crate::source::lifecycle::{Lifecycle, StopSignal};
use crate::warn_limit::WarnLimit;
use async_trait::async_trait;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use event_cloudevents::CloudEvent;
use event_cloudevents::cloudevents::{AttributesReader as _, AttributesWriter as _};
use event_cloudevents::http::client::{HttpStatusError, status_error};
use event_cloudevents::http::server::{HttpCloudEvent, HttpEvent};
use event_core::{Error, Event, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Sleep;

/// How long a webhook connection may go without sending a complete request
/// head (see [`WebhookSource::with_idle_timeout`]): 30 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a webhook connection may go without its answer making progress
/// (see [`WebhookSource::with_write_timeout`]): 30 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many connections a webhook serves at once (see
/// [`WebhookSource::with_max_connections`]): 512, leaving room for the
/// rest of the process under the common file-descriptor limit of 1,024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// How long a request's body may take to arrive completely once its head
/// has (see [`WebhookSource::with_body_timeout`]): 30 s, enough for the
/// default body limit ([`DEFAULT_BODY_LIMIT`], 2 MiB) at about 70 kB/s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request body a webhook takes (see
/// [`WebhookSource::with_body_limit`]): 2 MiB (2,097,152 bytes, axum's
/// default); a larger one is answered `413 Payload Too Large`.
///
/// The limit bounds a request, not what the store keeps: senders choose
/// their payloads' shape, and a parsed payload can take ten times its
/// encoded size in memory. In front of the in-memory provider, set its
/// `MemoryLimits::max_bytes` (see `docs/deployment.md`, section 1).
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// How long [`stop`](EventSource::stop) lets the requests in progress
/// finish before closing their connections (see
/// [`WebhookSource::with_shutdown_grace`]): 10 s, well inside the 30 s an
/// orchestrator such as Kubernetes gives a process between its stop signal
/// and killing it.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The longest idle, write or body timeout a webhook keeps: 30 years, as
/// good as none. A longer one (`Duration::MAX`, for no timeout, since zero
/// is refused) is taken as this long.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    bad_requests: AtomicU64,
    unauthorized: AtomicU64,
    /// Rate limit of the "delivery failed" warnings (see [`log_refusal`]).
    refusals: WarnLimit,
    /// Rate limit of the "not authorized" warnings (see [`receive`]).
    unauthorized_warnings: WarnLimit,
    /// Rate limit of the "too many connections" warnings (see [`serve`]).
    connections_full: WarnLimit,
}

/// What a [`WebhookSource`] did so far ([`WebhookSource::stats`]).
///
/// A counter missing from the JSON reads as zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct WebhookStats {
    /// Events delivered to the sink (answered `202 Accepted`).
    pub accepted: u64,
    /// Valid CloudEvents the sink refused (answered `400`, `413`, `500` or
    /// `503`, see [`WebhookSource`]), and requests whose authorization
    /// check or subject mapping panicked (`500`); malformed requests are
    /// not counted: they never reach the sink.
    pub refused: u64,
    /// Requests answered without reaching the sink: not a valid CloudEvent
    /// or A3S event (`400`), a CloudEvents format not read here or a
    /// `Content-Encoding` (`415`), a transfer coding besides `chunked`
    /// (`501`, or `400` for `chunked` twice), a
    /// body over the limit (`413`), or a body that did not arrive within
    /// the body timeout (`408`). Logged at `DEBUG` only: a sender's own
    /// fault, which its answer tells it. (A request head the HTTP server
    /// refuses, `431`, is answered before the webhook sees it and is not
    /// counted.)
    pub bad_requests: u64,
    /// Requests the [`with_authorization`](WebhookSource::with_authorization)
    /// check refused (answered `401`, their bodies not read).
    pub unauthorized: u64,
}

#[cfg(feature = "bus")]
#[cfg_attr(docsrs, doc(cfg(feature = "bus")))]
impl WebhookStats {
    /// Renders the stats in the Prometheus text exposition format
    /// (0.0.4), with the conventions of
    /// [`BrokerMetrics::to_prometheus`](crate::BrokerMetrics::to_prometheus):
    /// the counters `a3s_webhook_accepted_total`,
    /// `a3s_webhook_refused_total`, `a3s_webhook_bad_requests_total` and
    /// `a3s_webhook_unauthorized_total`.
    ///
    /// ```
    /// use event_bus::metrics::{PrometheusLabels, merge_expositions};
    /// use event_routing::http::WebhookSource;
    ///
    /// let webhook = WebhookSource::new("ingress", "127.0.0.1:0".parse().unwrap());
    /// // several webhooks in one process: label each
    /// let labels = PrometheusLabels::new([("webhook", "ingress")])?;
    /// let text = webhook.stats().to_prometheus_with_labels(&labels);
    /// assert!(text.contains("a3s_webhook_accepted_total{webhook=\"ingress\"} 0"));
    /// assert!(text.contains("a3s_webhook_refused_total{webhook=\"ingress\"} 0"));
    /// # Ok::<(), event_core::Error>(())
    /// ```
    pub fn to_prometheus(&self) -> String {
        self.to_prometheus_with_labels(&event_bus::metrics::PrometheusLabels::default())
    }

    /// [`to_prometheus`](Self::to_prometheus) with `labels` on every
    /// sample (say `webhook="ingress"`: the series of several webhooks in
    /// one process would otherwise clash).
    ///
    /// One `/metrics` text for a webhook → broker pipeline, merged with
    /// [`merge_expositions`](event_bus::metrics::merge_expositions) (which
    /// declares each family once when several texts share one):
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> event_core::Result<()> {
    /// use event_bus::metrics::{PrometheusLabels, merge_expositions};
    /// use event_core::SubscribeOptions;
    /// use event_memory::MemoryProvider;
    /// use event_routing::Broker;
    /// use event_routing::http::WebhookSource;
    ///
    /// let provider = MemoryProvider::default();
    /// let broker = Broker::new();
    /// let feed = broker
    ///     .feed_durable(&provider, "router", "events.>", &SubscribeOptions::default())
    ///     .await?;
    /// let webhook = WebhookSource::new("ingress", "127.0.0.1:0".parse().unwrap());
    /// let text = merge_expositions([
    ///     broker.metrics().to_prometheus(),
    ///     feed.stats().to_prometheus_with_labels(&PrometheusLabels::new([("feed", "router")])?),
    ///     webhook
    ///         .stats()
    ///         .to_prometheus_with_labels(&PrometheusLabels::new([("webhook", "ingress")])?),
    /// ]);
    /// assert!(text.contains("a3s_broker_routed_total 0\n"));
    /// assert!(text.contains("a3s_feed_acked_total{feed=\"router\"} 0\n"));
    /// assert!(text.contains("a3s_webhook_refused_total{webhook=\"ingress\"} 0\n"));
    /// feed.stop().await?;
    /// # Ok(()) }
    /// ```
    pub fn to_prometheus_with_labels(
        &self,
        labels: &event_bus::metrics::PrometheusLabels,
    ) -> String {
        use crate::prometheus::{Kind, write_family};
        let families = [
            (
                "a3s_webhook_accepted_total",
                "Events the webhook delivered to its sink (answered 202 Accepted).",
                self.accepted,
            ),
            (
                "a3s_webhook_refused_total",
                "Valid CloudEvents the webhook's sink refused (answered 400, 413, 500 or 503), and requests whose authorization check or subject mapping panicked (500); malformed requests are not counted.",
                self.refused,
            ),
            (
                "a3s_webhook_bad_requests_total",
                "Requests the webhook answered without reaching its sink: not a valid CloudEvent or A3S event (400), a CloudEvents format not read or a Content-Encoding (415), a transfer coding besides chunked (501), a body over the limit (413), or a body that did not arrive in time (408).",
                self.bad_requests,
            ),
            (
                "a3s_webhook_unauthorized_total",
                "Requests the webhook's authorization check refused (answered 401, their bodies not read).",
                self.unauthorized,
            ),
        ];
        let mut out = String::with_capacity(512);
        for (metric, help, value) in families {
            write_family(&mut out, labels, metric, help, Kind::Counter, value);
        }
        out
    }
}

#[derive(Clone)]
struct AppState {
    /// The source's name, for logs.
    name: Arc<str>,
    sink: Arc<dyn EventSink>,
    counters: Arc<Counters>,
    body_timeout: Duration,
    body_limit: usize,
    subject_mapper: Option<SubjectMapper>,
    /// [`WebhookSource::with_provider_prefix`]'s prefix.
    provider_prefix: Option<Arc<str>>,
    authorization: Option<Authorization>,
}

/// [`WebhookSource::with_subject_mapping`]'s function.
type SubjectMapper = Arc<dyn Fn(&CloudEvent) -> Option<String> + Send + Sync>;

/// [`WebhookSource::with_authorization`]'s check.
type Authorization = Arc<dyn Fn(&HeaderMap) -> bool + Send + Sync>;

/// Receives CloudEvents over HTTP (binary or structured mode) and delivers
/// each to the sink it was started with (a [`TopicSink`](crate::TopicSink)
/// publishes them, a [`Broker`](crate::Broker) routes them).
///
/// Answers, per request to `POST {path}`:
///
/// | outcome | status |
/// |---|---|
/// | delivered | `202 Accepted` |
/// | not a valid CloudEvent, or one that is not a valid A3S event | `400 Bad Request`, nothing delivered |
/// | a CloudEvents message in a format not read here: batched mode, an event format other than JSON | `415 Unsupported Media Type`, nothing delivered (send the events one by one, in binary or JSON structured mode) |
/// | a body with a `Content-Encoding` (gzip ...) other than `identity` | `415 Unsupported Media Type` and the connection is closed, nothing delivered (send the body unencoded) |
/// | a body with a `Transfer-Encoding` besides `chunked` (`gzip, chunked` ...) | `501 Not Implemented` (`400 Bad Request` for `chunked` twice) and the connection is closed, nothing delivered |
/// | a request head with more than 1,024 headers (binary mode sends one per attribute and metadata entry) or over about 400 KB | `431 Request Header Fields Too Large`, nothing delivered (send it in structured mode) |
/// | a body larger than [`with_body_limit`](Self::with_body_limit) (default 2 MiB) | `413 Payload Too Large` and the connection is closed, nothing delivered; at once, without waiting for the body, when the request's `Content-Length` says so |
/// | the body did not arrive completely within [`with_body_timeout`](Self::with_body_timeout) (default 30 s) of the head | `408 Request Timeout` and the connection is closed, nothing delivered (the sender should retry) |
/// | the sink refused it as invalid (bad subject, schema, serialization) | `400 Bad Request` |
/// | the sink refused it as too large | `413 Payload Too Large` |
/// | the sink failed transiently (connection, timeout), or an [`HttpSink`](crate::http::HttpSink) got an answer worth retrying (`404`, `408`, `409`, `429`, `5xx`) | `503 Service Unavailable` (the sender should retry) |
/// | any other sink failure (a panicking sink included) | `500 Internal Server Error` |
/// | the [authorization check](Self::with_authorization) or the [subject mapping](Self::with_subject_mapping) panicked | `500 Internal Server Error` and the connection is closed, nothing delivered (counted in [`refused`](Self::refused)) |
///
/// [`start`](EventSource::start) binds the address (port 0 picks a free one:
/// see [`local_addr`](Self::local_addr)) and serves HTTP/1.1. Every
/// connection is timed, so that a sender that vanished without closing its
/// connections (a crashed host, a dropped NAT mapping), or one that keeps
/// them open on purpose (slowloris), holds a socket and a task for a
/// bounded time only:
///
/// | while the connection waits for | it is closed after | then |
/// |---|---|---|
/// | a complete request head (a new connection, or a kept-alive one between requests) | [`with_idle_timeout`](Self::with_idle_timeout) (default 30 s) | closed without an answer |
/// | the request's body, once the head arrived (a sender trickling or stalling mid-body) | [`with_body_timeout`](Self::with_body_timeout) (default 30 s), for the whole body | answered `408 Request Timeout` and closed; nothing is delivered |
/// | the sender to read its answer, once the socket buffers are full (a sender that pipelines requests and never reads the answers, or a host that vanished with its receive window full) | [`with_write_timeout`](Self::with_write_timeout) (default 30 s) without any of the answer written | closed; the requests it sent after the answer stuck are not read |
///
/// A sender that keeps reading its answers is not cut off by the write
/// timeout, down to a rate set by both sides' socket buffers: each
/// connection's send buffer is 64 KiB, and one reading 256 KiB of answers
/// per write timeout (8.5 KB/s at the default 30 s) keeps its connection
/// (tested on Linux loopback), while a quarter of that rate could be cut
/// (the kernel reports a full socket writable only once much of its buffer
/// has drained). Nor is a sender cut off that keeps sending requests within
/// the idle timeout. So that such senders cannot hold every socket of the
/// process, at most [`with_max_connections`](Self::with_max_connections) (default
/// 512) connections are served at once: further ones wait in the
/// listening socket's backlog (their senders see no answer yet) until one
/// closes, and a `WARN` (one per
/// [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL)) says the limit was
/// reached. A connection holds, besides its socket, at most a request head
/// (about 400 KB, which also bounds the requests it pipelined ahead), an
/// answer, and a body up to the body limit while its request is read.
///
/// A sender may shut down its side of the connection once its request is
/// sent (HTTP/1.1 half-close) and still gets its answer. A delivery runs
/// to its end whatever the sender does meanwhile: one that closed its
/// connection (its own timeout, say) gets no answer and retries, so the
/// event may reach the sink twice, but a delivery is never cut off
/// half-way by a sender leaving.
///
/// The sink's delivery is not timed here: a slow sink is not the sender's
/// fault (bound it with the sink's own timeout, such as
/// [`HttpSink::with_request_timeout`](crate::http::HttpSink::with_request_timeout) or a
/// trigger's [`DeliverySpec`](crate::DeliverySpec) timeout).
///
/// [`stop`](EventSource::stop) stops accepting connections and closes the
/// idle ones at once, then lets the requests in progress finish (their
/// bodies still bounded by the body timeout), each answered and its
/// connection closed, for at most
/// [`with_shutdown_grace`](Self::with_shutdown_grace) (default 10 s). It
/// then closes the connections left, cancelling their requests, and
/// returns. A request cut off that way gets no answer, so its sender
/// retries: one still being received was not delivered; one whose delivery
/// was still running (a sink slower than the grace period) was cancelled
/// mid-way and may or may not have reached the sink, so the retry may
/// deliver it twice (a sink that publishes the event under its own source
/// and id, such as an [`unchanged`](crate::TopicSink::unchanged)
/// `TopicSink`, is saved by the provider's dedup window, which stores it
/// once; a forwarding `TopicSink` gives every delivery a new id, so its
/// retry stores a second copy). Through
/// [`unchanged_through_bus`](crate::TopicSink::unchanged_through_bus), a
/// broker attached to the bus is not handed the repeat again where the
/// provider reports duplicates (memory, NATS); with one that does not, it
/// routes each repeat to its triggers again: feed the broker from a
/// durable subscription ([`Broker::feed_durable`](crate::Broker::feed_durable))
/// instead, which routes each stored event once. A delivery that returned is not cut off before its
/// answer: the answer is written to the connection in the same step, so a
/// sender that reads its answers is not made to retry an event already
/// delivered.
///
/// A request whose event the sink refused is logged as one `WARN` per
/// [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) (naming the source,
/// the event id, the status and the error; the others at `DEBUG`, the next
/// `WARN` saying how many in `quiet_refusals`), so that a misbehaving
/// sender or a sink that is down does not write a line per request; every
/// one counts in [`refused`](Self::refused). Its
/// [`stats`](Self::stats) render as Prometheus text
/// (`WebhookStats::to_prometheus`, feature `bus`).
///
/// Without [`with_authorization`](Self::with_authorization) the webhook
/// does not authenticate senders: whoever reaches its address can post
/// events, with any attributes and metadata. Even an authorized sender
/// chooses those, and they include the
/// hop count ([`metadata::HOPS`](crate::metadata::HOPS), the CloudEvents
/// extension `a3smroutinghops`), which crosses HTTP so that loops through
/// HTTP sinks and webhooks end too: an event posted at its broker's
/// [`max_hops`](crate::BrokerConfig::max_hops) is answered `202` and routed
/// to no trigger (counted in `BrokerMetrics::hop_limit`, logged at `WARN`
/// once per interval). Check senders with `with_authorization` (or behind a
/// proxy that authenticates them, and, where the hop count matters, drops
/// the `ce-a3smroutinghops` header).
///
/// To mount the endpoint in your own axum app instead, use
/// [`router`](Self::router): the authorization check, the body timeout and
/// the body limit apply there too; the idle timeout, the write timeout, the connection limit and
/// the shutdown grace period are your server's.
pub struct WebhookSource {
    name: String,
    bind: SocketAddr,
    path: String,
    lifecycle: Lifecycle,
    local_addr: Mutex<Option<SocketAddr>>,
    counters: Arc<Counters>,
    idle_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    body_timeout: Duration,
    body_limit: usize,
    shutdown_grace: Duration,
    subject_mapper: Option<SubjectMapper>,
    provider_prefix: Option<Arc<str>>,
    authorization: Option<Authorization>,
}

impl std::fmt::Debug for WebhookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSource")
            .field("name", &self.name)
            .field("bind", &self.bind)
            .field("path", &self.path)
            .field("local_addr", &*self.local_addr.lock())
            .finish_non_exhaustive()
    }
}

fn status_for(err: &Error) -> StatusCode {
    match err {
        Error::InvalidSubject { .. }
        | Error::SchemaValidation { .. }
        | Error::Serialization(_)
        | Error::InvalidConfig { .. } => StatusCode::BAD_REQUEST,
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        e if e.is_transient() || status_error(e).is_some_and(HttpStatusError::is_retryable) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The answer to a request whose body did not arrive in time: `408`, the
/// rest of the body not read ([`closing`]).
fn body_timed_out(timeout: Duration, version: Version) -> Response {
    closing(
        (
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {timeout:?}"),
        ),
        version,
    )
}

/// `answer` to a request whose body is left unread: HTTP/1 closes the
/// connection after it (the unread body must not be taken for the next
/// request), and says so with `Connection: close` (a header HTTP/2, where
/// the router may be mounted, does not allow).
fn closing(answer: impl IntoResponse, version: Version) -> Response {
    let mut response = answer.into_response();
    if version <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The answer to a request whose body is over the limit: `413`, the rest
/// of the body not read ([`closing`]).
fn body_too_large(state: &AppState, version: Version) -> Response {
    state.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        limit = state.body_limit,
        "webhook: a request body is over the limit; answering 413"
    );
    closing(
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than this webhook's limit of {} bytes \
                 (WebhookSource::with_body_limit)",
                state.body_limit
            ),
        ),
        version,
    )
}

/// Whether `request` declares (`Content-Length`) a body over `limit`
/// bytes; a missing or unreadable length is not (the body limit then
/// applies as the body is read).
fn declares_more_than(request: &Request, limit: usize) -> bool {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .is_some_and(|length| u64::try_from(limit).is_ok_and(|limit| length > limit))
}

/// Answers a request ([`answer`]), containing a panic of the user code it
/// runs outside the sink (the authorization check, the subject mapping):
/// answered `500`, the connection closed (the body may be unread), counted
/// in [`WebhookStats::refused`] and logged as a refusal is, instead of the
/// connection dropping without an answer.
async fn receive(State(state): State<AppState>, request: Request) -> Response {
    let version = request.version();
    match crate::panic::caught(|| answer(&state, request)).await {
        Ok(response) => response,
        Err(panic) => {
            state.counters.refused.fetch_add(1, Ordering::Relaxed);
            let name = &*state.name;
            match state.counters.refusals.record(tokio::time::Instant::now()) {
                Some(quiet_refusals) => tracing::warn!(
                    source = %name, panic = %panic, quiet_refusals,
                    "webhook: the authorization check or the subject mapping panicked; \
                     answered 500 (further refusals of this webhook are logged at DEBUG for a \
                     while, counted in refused())"
                ),
                None => tracing::debug!(
                    source = %name, panic = %panic,
                    "webhook: the authorization check or the subject mapping panicked"
                ),
            }
            closing(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "the webhook's authorization check or subject mapping panicked: {panic}"
                    ),
                ),
                version,
            )
        }
    }
}

/// The answer to a request whose `Transfer-Encoding` is not `chunked`
/// alone: hyper decodes `chunked` only and passes any other coding's bytes
/// on as the body (`gzip, chunked` arrives still gzipped), so the body is
/// not the content. A coding not understood is `501` (RFC 9112, 6.1),
/// `chunked` more than once `400`.
fn transfer_coding_refusal(request: &Request) -> Option<(StatusCode, String)> {
    let mut codings = Vec::new();
    for value in request.headers().get_all(header::TRANSFER_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
        codings.extend(
            text.split(',')
                .map(|coding| coding.trim().to_owned())
                .filter(|coding| !coding.is_empty()),
        );
    }
    if let Some(other) = codings.iter().find(|coding| *coding != "chunked") {
        return Some((
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "the request has Transfer-Encoding {other:?}, which this webhook does not \
                 decode: send the body unencoded (chunked, or with a Content-Length)"
            ),
        ));
    }
    (codings.len() > 1).then(|| {
        (
            StatusCode::BAD_REQUEST,
            "the request has Transfer-Encoding chunked more than once".to_owned(),
        )
    })
}

/// The request's `Content-Encoding`, unless it is absent or `identity`
/// only: the body is then an encoded form of the content (gzip ...), which
/// the webhook does not decode, and must not take for the event's data.
fn content_coding(request: &Request) -> Option<String> {
    let codings = request.headers().get_all(header::CONTENT_ENCODING);
    let mut seen = Vec::new();
    for value in codings {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if text.split(',').any(|coding| {
            !coding.trim().is_empty() && !coding.trim().eq_ignore_ascii_case("identity")
        }) {
            seen.push(text);
        }
    }
    (!seen.is_empty()).then(|| seen.join(", "))
}

async fn answer(state: &AppState, request: Request) -> Response {
    let version = request.version();
    if let Some(authorized) = &state.authorization
        && !authorized(request.headers())
    {
        return unauthorized(state, version);
    }
    // Answered before reading the body (and before `100 Continue`), so that
    // the sender need not send it and the answer does not wait for a body
    // that may never come.
    if declares_more_than(&request, state.body_limit) {
        return body_too_large(state, version);
    }
    if let Some((status, reason)) = transfer_coding_refusal(&request) {
        state.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            source = %state.name, status = status.as_u16(),
            "webhook: a request body has a transfer coding besides chunked; refused"
        );
        return closing((status, reason), version);
    }
    if let Some(coding) = content_coding(&request) {
        state.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            source = %state.name, coding = ?coding,
            "webhook: a request body has a Content-Encoding; answering 415"
        );
        return closing(
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "the request has Content-Encoding {coding:?}, which this webhook does not \
                     decode: send the body unencoded"
                ),
            ),
            version,
        );
    }
    // Only reading the body is timed, not the delivery: a slow sink is not
    // the sender's fault.
    let read = tokio::time::timeout(state.body_timeout, read_event(request, state)).await;
    let event = match read {
        Ok(Ok(event)) => event,
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return body_too_large(state, version);
        }
        Ok(Err(rejection)) => {
            state.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                source = %state.name,
                status = rejection.status().as_u16(),
                "webhook: a request could not be read as a valid CloudEvent and A3S event; answered with its rejection"
            );
            return rejection;
        }
        Err(_elapsed) => {
            state.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                timeout = ?state.body_timeout,
                "webhook: a request body did not arrive in time; answering 408"
            );
            return body_timed_out(state.body_timeout, version);
        }
    };
    let delivered = crate::panic::caught(|| state.sink.deliver(&event))
        .await
        .unwrap_or_else(|panic| {
            Err(Error::provider(
                format!("sink `{}`", state.sink.name()),
                format!("panicked: {panic}"),
            ))
        });
    match delivered {
        Ok(()) => {
            state.counters.accepted.fetch_add(1, Ordering::Relaxed);
            StatusCode::ACCEPTED.into_response()
        }
        Err(err) => {
            state.counters.refused.fetch_add(1, Ordering::Relaxed);
            let status = status_for(&err);
            log_refusal(state, &event, &err, status);
            (status, err.to_string()).into_response()
        }
    }
}

/// The request's event: converted as it is, or (with a subject mapping)
/// read as a CloudEvent, given the mapped subject, then converted.
async fn read_event(request: Request, state: &AppState) -> std::result::Result<Event, Response> {
    if state.subject_mapper.is_none() && state.provider_prefix.is_none() {
        return HttpEvent::from_request(request, state)
            .await
            .map(|HttpEvent(event)| event);
    }
    let HttpCloudEvent(mut ce) = HttpCloudEvent::from_request(request, state).await?;
    let original = match state.subject_mapper.as_ref().and_then(|mapper| mapper(&ce)) {
        Some(subject) => {
            let original = ce.subject().map(str::to_owned);
            ce.set_subject(Some(subject));
            original
        }
        None => None,
    };
    let defaulted = ce.extension(event_cloudevents::mapping::CATEGORY).is_none();
    let mut event = Event::try_from(ce)
        .map_err(|err| (StatusCode::BAD_REQUEST, err.to_string()).into_response())?;
    if let Some(prefix) = state.provider_prefix.as_deref().filter(|_| defaulted) {
        event.category = event_core::subject::category_of(&event.subject, prefix)
            .unwrap_or_default()
            .to_owned();
    }
    if let Some(original) = original.filter(|original| *original != event.subject) {
        event
            .metadata
            .insert(crate::metadata::SENDER_SUBJECT.to_owned(), original);
    }
    Ok(event)
}

/// The answer to a request the authorization check refused: `401`, its
/// body not read ([`closing`]); counted, and logged at `WARN` once per
/// [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL).
fn unauthorized(state: &AppState, version: Version) -> Response {
    state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
    let name = &*state.name;
    match state
        .counters
        .unauthorized_warnings
        .record(tokio::time::Instant::now())
    {
        Some(quiet) => tracing::warn!(
            source = %name, quiet,
            "webhook: a request failed the authorization check; answered 401 (further ones \
             are logged at DEBUG for a while, counted in stats().unauthorized)"
        ),
        None => {
            tracing::debug!(source = %name, "webhook: a request failed the authorization check")
        }
    }
    closing(
        (
            StatusCode::UNAUTHORIZED,
            "the webhook's authorization check refused the request",
        ),
        version,
    )
}

/// Logs a request whose event the sink refused: the first one at `WARN`,
/// then `DEBUG` until [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL) has
/// passed since that warning; the next `WARN` counts them
/// (`quiet_refusals`). Every one counts in [`WebhookSource::refused`]. A
/// misbehaving sender (or a sink that is down) would otherwise write a
/// line per request.
fn log_refusal(state: &AppState, event: &event_core::Event, err: &Error, status: StatusCode) {
    let name = &*state.name;
    match state.counters.refusals.record(tokio::time::Instant::now()) {
        Some(quiet_refusals) => tracing::warn!(
            source = %name, event_id = ?event.id, subject = ?event.subject,
            status = status.as_u16(), error = %err, quiet_refusals,
            "webhook: delivery failed (further refusals of this webhook are logged at DEBUG for \
             a while, counted in refused())"
        ),
        None => tracing::debug!(
            source = %name, event_id = ?event.id, subject = ?event.subject,
            status = status.as_u16(), error = %err,
            "webhook: delivery failed"
        ),
    }
}

/// The most headers a request may have (hyper's default is 100): binary
/// mode sends one per CloudEvents attribute and metadata entry, so an event
/// with a hundred metadata entries would otherwise be refused with `431`.
/// The head's size stays bounded by hyper's read buffer (about 400 KB).
const MAX_HEADERS: usize = 1024;

/// How [`serve`] treats connections (from [`WebhookSource`]'s settings).
#[derive(Debug, Clone, Copy)]
struct ServeLimits {
    idle_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
    shutdown_grace: Duration,
}

/// Serves `app` on `listener` (HTTP/1.1) until `stop`, then lets the
/// requests in progress finish (idle connections are closed at once) for
/// at most `shutdown_grace`, and closes the connections left.
///
/// Unlike `axum::serve`, connections have timers: one that goes
/// `idle_timeout` without a complete request head (a new connection, or a
/// kept-alive one between requests), or `write_timeout` without its answer
/// making progress (see [`WriteTimed`]), is closed, so a peer that vanished
/// without closing (a crashed host, a dropped NAT mapping), keeps
/// connections open idle or does not read its answers does not hold a
/// socket and a task for as long as the server runs (the body is timed by
/// the handler, see `receive`). At most `max_connections` are served at
/// once: further ones wait in the listener's backlog.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: StopSignal,
    limits: ServeLimits,
    name: String,
    counters: Arc<Counters>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_headers(MAX_HEADERS)
        // A sender may shut down its side once its request is sent and
        // wait for the answer: the end of its input mid-request is no
        // vanished sender, and must not cancel the delivery unanswered.
        .half_close(true);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // The connections' tasks, to close those still open when the grace
    // period ends; the ended ones are reaped at each accept, so the set
    // holds at most `max_connections` tasks.
    let mut connections = JoinSet::new();
    loop {
        if slots.available_permits() == 0 {
            // rate-limited: senders that open and close connections at the
            // limit would otherwise write a line per connection
            match counters
                .connections_full
                .record(tokio::time::Instant::now())
            {
                Some(quiet_waits) => tracing::warn!(
                    source = %name,
                    max_connections = limits.max_connections,
                    quiet_waits,
                    "webhook: at its connection limit \
                     (WebhookSource::with_max_connections): a further connection waits until \
                     one closes (this webhook logs the next times at DEBUG for a while)"
                ),
                None => tracing::debug!(
                    source = %name,
                    max_connections = limits.max_connections,
                    "webhook: at its connection limit; a further connection waits"
                ),
            }
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = stop.requested() => break,
        };
        // never closed: `slots` is not closed
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.requested() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // out of file descriptors, say: the connections that hold
                // them may close; try again shortly
                tracing::warn!(source = %name, error = %err, "webhook: accepting a connection failed");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                    () = stop.requested() => break,
                }
            }
        };
        let stream = WriteTimed::new(stream, limits.write_timeout);
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "webhook connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let shutdown_grace = limits.shutdown_grace;
    if tokio::time::timeout(shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        while connections.try_join_next().is_some() {}
        tracing::warn!(
            source = %name,
            grace = ?shutdown_grace,
            connections = connections.len(),
            "webhook: requests still in progress after the shutdown grace period; \
             closing their connections (their senders get no answer and retry)"
        );
    }
    // Aborting a connection's task drops its socket and its request.
    connections.shutdown().await;
}

/// `timeout`, at most [`LONGEST_TIMEOUT`]: a deadline is `now + timeout`,
/// which overflows (a panic, in hyper's head timer and in [`WriteTimed`])
/// for a timeout near `Duration::MAX`.
fn bounded(timeout: Duration) -> Duration {
    timeout.min(LONGEST_TIMEOUT)
}

/// What in `path` a request's path never holds, if anything: a character
/// outside RFC 3986's path characters (non-ASCII, a space, a control
/// character, `?` and `#`, which start a query and a fragment ...), or a
/// `%` that starts no `%XX` triplet.
fn unreachable_path_part(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    for (i, c) in path.char_indices() {
        let allowed = c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c);
        if c == '%' {
            let hex = |j: usize| bytes.get(i + j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(1) && hex(2)) {
                return Some("a `%` that starts no `%XX` triplet".to_owned());
            }
        } else if !allowed {
            return Some(format!("{c:?}"));
        }
    }
    None
}

/// `value`, or [`Error::InvalidConfig`] naming `field` when it is zero
/// (a zero timeout, limit or count would refuse everything).
fn nonzero<T: PartialEq + Default>(field: &str, value: T) -> Result<T> {
    if value == T::default() {
        Err(Error::invalid_config(field, "must be greater than zero"))
    } else {
        Ok(value)
    }
}

/// Pause after a failed `accept`.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The send buffer of every connection (set on the listening socket, whose
/// connections inherit it): 64 KiB, where the kernel would otherwise grow
/// it to megabytes for a peer that reads slowly. The write timeout needs
/// this: the kernel reports a full socket writable again only once much of
/// its buffer has drained, so with megabytes queued a sender reading its
/// answers steadily (at 20 KB/s, say) showed no progress for longer than
/// the timeout. It also bounds the kernel memory a connection
/// holds. Answers are small, so it costs no throughput.
const SEND_BUFFER: u32 = 64 * 1024;

/// The webhook's listening socket, as `TcpListener::bind` makes it (address
/// reuse on Unix, a backlog of 1,024), with [`SEND_BUFFER`].
fn listen(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A connection's stream whose writes fail (`TimedOut`) once they have
/// made no progress for `timeout`: the peer does not read (its receive
/// window and our send buffer are full). Any byte written restarts the
/// clock. Reads are passed through untimed (the head
/// and the body have timeouts of their own).
struct WriteTimed<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write waits for room; `None` until the first wait.
    stall: Option<Pin<Box<Sleep>>>,
    /// Whether `stall` times the current wait (it is kept to be reset).
    stalled: bool,
}

impl<S> WriteTimed<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stall: None,
            stalled: false,
        }
    }

    /// `poll`, the result of a write (`progress` when ready) or of a flush
    /// or shutdown of the inner stream, with the stall timer applied: a
    /// write's progress stops the timer, a wait starts it (or keeps it
    /// running), and a wait past the timeout is an error.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
        progress: bool,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            if progress {
                self.stalled = false;
            }
            return poll;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let stall = match (&mut self.stall, self.stalled) {
            (Some(stall), true) => stall,
            (Some(stall), false) => {
                stall.as_mut().reset(deadline);
                stall
            }
            (stall @ None, _) => stall.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.stalled = true;
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer did not read its answer for {:?} (WebhookSource::with_write_timeout)",
                    self.timeout
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.timed(cx, poll, true)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.timed(cx, poll, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed(cx, poll, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.timed(cx, poll, false)
    }
}

impl WebhookSource {
    /// A source that will listen on `bind` at `POST /events`.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Self {
        Self {
            name: name.into(),
            bind,
            path: "/events".to_owned(),
            lifecycle: Lifecycle::default(),
            local_addr: Mutex::new(None),
            counters: Arc::new(Counters::default()),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            subject_mapper: None,
            provider_prefix: None,
            authorization: None,
        }
    }

    /// Closes a connection that has not sent a complete request head for
    /// `timeout`: a new one, or a kept-alive one between requests. Zero is
    /// [`Error::InvalidConfig`]; a timeout over 30 years
    /// (`Duration::MAX`, say) is 30 years, as good as none. Default
    /// [`DEFAULT_IDLE_TIMEOUT`].
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Result<Self> {
        let timeout = bounded(nonzero("webhook.idle_timeout", timeout)?);
        self.idle_timeout = timeout;
        Ok(self)
    }

    /// Closes a connection whose answer has made no progress for
    /// `timeout`: not a byte of it could be written, because the sender
    /// does not read its answers (it pipelines requests without reading
    /// them, or its host vanished with its receive window full) and the
    /// socket buffers are full. The requests it sent after that are not
    /// read. A sender that keeps reading its answers (256 KiB per `timeout`
    /// is enough) is not cut off (see the type docs and
    /// [`with_max_connections`](Self::with_max_connections)). Zero is
    /// [`Error::InvalidConfig`]; a timeout over 30 years is 30 years,
    /// as good as none. Default [`DEFAULT_WRITE_TIMEOUT`].
    pub fn with_write_timeout(mut self, timeout: Duration) -> Result<Self> {
        let timeout = bounded(nonzero("webhook.write_timeout", timeout)?);
        self.write_timeout = timeout;
        Ok(self)
    }

    /// Serves at most `max` connections at once: a further one is accepted
    /// only when one of them closes (until then it waits in the listening
    /// socket's backlog, its sender getting no answer yet), and a `WARN`
    /// (one per [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL)) says the
    /// limit was reached. It bounds the sockets, tasks and buffers senders
    /// can hold, whatever they do within the timeouts: keep it below the
    /// process's file-descriptor limit (`ulimit -n`), with room for the
    /// rest of the process, and above the connections your senders keep
    /// open (their connection pools). Zero is [`Error::InvalidConfig`].
    /// Default [`DEFAULT_MAX_CONNECTIONS`] (512).
    pub fn with_max_connections(mut self, max: usize) -> Result<Self> {
        let max = nonzero("webhook.max_connections", max)?;
        // a semaphore holds at most `Semaphore::MAX_PERMITS`
        self.max_connections = max.min(Semaphore::MAX_PERMITS);
        Ok(self)
    }

    /// Closes a connection whose request body has not arrived completely
    /// `timeout` after its head, answering `408 Request Timeout` (a sender
    /// trickling or stalling mid-body, or one that vanished mid-request).
    /// The timeout bounds the whole body, not each pause within it; it does
    /// not include the sink's delivery. It applies to
    /// [`router`](Self::router) too. Zero is [`Error::InvalidConfig`]; a
    /// timeout over 30 years is 30 years, as good as none.
    /// Default [`DEFAULT_BODY_TIMEOUT`].
    pub fn with_body_timeout(mut self, timeout: Duration) -> Result<Self> {
        let timeout = bounded(nonzero("webhook.body_timeout", timeout)?);
        self.body_timeout = timeout;
        Ok(self)
    }

    /// Answers `413 Payload Too Large` to a request whose body is larger
    /// than `limit` bytes, without reading the rest (nothing is
    /// delivered). The body is the event's payload in binary mode, the
    /// whole CloudEvent JSON in structured mode. It applies to
    /// [`router`](Self::router) too. Zero is [`Error::InvalidConfig`].
    /// Default [`DEFAULT_BODY_LIMIT`] (2 MiB).
    ///
    /// A larger body is also held in memory longer and needs a longer
    /// [`with_body_timeout`](Self::with_body_timeout) from slow senders.
    /// The sink has limits of its own: a provider refuses events above its
    /// maximum payload size (NATS: the server's `max_payload`, 1 MiB by
    /// default) with `Error::PayloadTooLarge`, which is answered `413` too.
    pub fn with_body_limit(mut self, limit: usize) -> Result<Self> {
        let limit = nonzero("webhook.body_limit", limit)?;
        self.body_limit = limit;
        Ok(self)
    }

    /// How long [`stop`](EventSource::stop) lets the requests in progress
    /// finish before closing their connections and returning; zero closes
    /// them at once. Default [`DEFAULT_SHUTDOWN_GRACE`]. See the
    /// [type's documentation](Self) for what happens to a request cut off.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Listens at `path` instead of `/events`: a literal path starting with
    /// `/`, without `{` or `}` and without a segment starting with `:` or
    /// `*` (route parameters, which the router would refuse), written as a
    /// request carries it: percent-encoded (`/caf%C3%A9`, `/my%20hooks`),
    /// without `?` or `#`; [`Error::InvalidConfig`] otherwise (such a path
    /// would never match a request, and every post would be answered
    /// `404`).
    pub fn with_path(mut self, path: impl Into<String>) -> Result<Self> {
        let path = path.into();
        if !path.starts_with('/') {
            return Err(Error::invalid_config(
                "webhook.path",
                format!("{path:?} must start with `/`"),
            ));
        }
        if path.contains(['{', '}']) || path.split('/').any(|s| s.starts_with([':', '*'])) {
            return Err(Error::invalid_config(
                "webhook.path",
                format!(
                    "{path:?} must be a literal path: no `{{` or `}}`, no segment starting \
                     with `:` or `*`"
                ),
            ));
        }
        if let Some(bad) = unreachable_path_part(&path) {
            return Err(Error::invalid_config(
                "webhook.path",
                format!(
                    "{path:?} holds {bad}, which no request's path does (a request's path is \
                     percent-encoded, without a query or fragment): percent-encode it \
                     (`/caf%C3%A9`, `/my%20hooks`)"
                ),
            ));
        }
        self.path = path;
        Ok(self)
    }

    /// Gives each received event the A3S subject `mapper` returns for it.
    ///
    /// A3S events need a subject under the provider's prefix
    /// (`events.<category>.<topic>`); CloudEvents from elsewhere (Knative
    /// sources, other systems) have none, or a free-form one
    /// (`/apis/v1/namespaces/default/pods/foo`), and are refused with `400`
    /// without a mapping. `mapper` sees the CloudEvent as received and
    /// returns `Some(subject)` to set it, or `None` to keep the event's own
    /// subject (refused if it is not an A3S subject). A subject it replaces
    /// is kept in the event's metadata under
    /// [`metadata::SENDER_SUBJECT`](crate::metadata::SENDER_SUBJECT), so
    /// it goes back out as an extension when the event is sent on as a
    /// CloudEvent. A subject the mapper returns that is not a valid publish
    /// subject is refused like any other (`400`). A CloudEvent whose own
    /// `subject` is present but empty (which CloudEvents forbids) is
    /// refused (`400`) before `mapper` sees it, as is one with an empty
    /// `id`, `source` or `type`. A `mapper` that panics
    /// (on a CloudEvent it did not expect) has the request answered `500`,
    /// counted in [`refused`](Self::refused).
    ///
    /// ```
    /// use event_cloudevents::cloudevents::AttributesReader;
    /// use event_routing::http::WebhookSource;
    ///
    /// let webhook = WebhookSource::new("k8s", "127.0.0.1:0".parse().unwrap())
    ///     .with_subject_mapping(|ce| {
    ///         // com.example.pod.created -> events.k8s.pod_created
    ///         let topic = ce.ty().rsplit('.').take(2).collect::<Vec<_>>();
    ///         (topic.len() == 2).then(|| format!("events.k8s.{}_{}", topic[1], topic[0]))
    ///     });
    /// # let _ = webhook;
    /// ```
    #[must_use]
    pub fn with_subject_mapping(
        mut self,
        mapper: impl Fn(&CloudEvent) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.subject_mapper = Some(Arc::new(mapper));
        self
    }

    /// Tells the webhook the subject prefix of the provider its events go
    /// to, for a prefix of more than one token (one or more literal tokens,
    /// [`Error::InvalidSubject`] otherwise). A CloudEvent without an
    /// `a3scategory` extension (one from another producer) gets as category
    /// its subject's token after the prefix (`k8s` in
    /// `acme.events.k8s.pod_created` under `acme.events`). Without it the
    /// webhook cannot know the prefix, and such an event's category is its
    /// subject's second token (`events` there), the CloudEvents mapping's
    /// default.
    pub fn with_provider_prefix(mut self, prefix: &str) -> Result<Self> {
        event_core::subject::validate_subject(prefix)?;
        self.provider_prefix = Some(Arc::from(prefix));
        Ok(self)
    }

    /// Checks each request before anything else, its body unread: `check`
    /// gets the request's headers and says whether the sender may post. A
    /// request it refuses is answered `401 Unauthorized` without reading
    /// its body, reaches no sink, and counts in
    /// [`WebhookStats::unauthorized`] (logged at `WARN` once per
    /// [`LOSS_WARN_INTERVAL`](crate::LOSS_WARN_INTERVAL), the others at
    /// `DEBUG`). A `check` that panics has the request answered `500`
    /// (counted in [`refused`](Self::refused)), its body unread. It applies
    /// to [`router`](Self::router) too. Without one,
    /// whoever reaches the address can post (see the type's docs).
    ///
    /// A check that compares a secret should take the same time whatever
    /// the guess (below: every byte compared), so that the time of a
    /// refusal does not give the secret away. A signature over the body
    /// (an HMAC) cannot be checked here, before the body is read: verify it
    /// in the sink, or in a proxy.
    ///
    /// ```
    /// use event_routing::http::WebhookSource;
    ///
    /// let token = std::env::var("WEBHOOK_TOKEN").unwrap_or_else(|_| "s3cret".into());
    /// let expected = format!("Bearer {token}").into_bytes();
    /// let webhook = WebhookSource::new("ingress", "127.0.0.1:0".parse().unwrap())
    ///     .with_authorization(move |headers| {
    ///         let given = headers
    ///             .get("authorization")
    ///             .map(|value| value.as_bytes())
    ///             .unwrap_or_default();
    ///         given.len() == expected.len()
    ///             && given.iter().zip(&expected).fold(0, |diff, (a, b)| diff | (a ^ b)) == 0
    ///     });
    /// # let _ = webhook;
    /// ```
    #[must_use]
    pub fn with_authorization(
        mut self,
        check: impl Fn(&HeaderMap) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.authorization = Some(Arc::new(check));
        self
    }

    /// The address the server listens on while it runs: `None` before
    /// [`start`](EventSource::start), after [`stop`](EventSource::stop), and
    /// once the server's task has ended otherwise (the runtime that started
    /// it shut down, see [`EventSource`]).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        let addr = *self.local_addr.lock();
        addr.filter(|_| self.lifecycle.is_running())
    }

    /// The endpoint as an axum router delivering to `sink`, to mount in an
    /// existing application. Its body limit
    /// ([`with_body_limit`](Self::with_body_limit)) and body timeout apply
    /// to its route whatever the application's own settings.
    pub fn router(&self, sink: Arc<dyn EventSink>) -> Router {
        Router::new()
            .route(
                &self.path,
                post(receive).layer(DefaultBodyLimit::max(self.body_limit)),
            )
            .with_state(AppState {
                name: Arc::from(self.name.as_str()),
                sink,
                counters: self.counters.clone(),
                body_timeout: self.body_timeout,
                body_limit: self.body_limit,
                subject_mapper: self.subject_mapper.clone(),
                provider_prefix: self.provider_prefix.clone(),
                authorization: self.authorization.clone(),
            })
    }

    /// Events delivered so far.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Valid CloudEvents the sink refused so far, and requests whose
    /// authorization check or subject mapping panicked (malformed requests are not
    /// counted: they never reach the sink; see [`WebhookStats::bad_requests`]). Every one counts, also those
    /// whose log line was at `DEBUG` (see the type's documentation).
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// The counts so far (for JSON, or Prometheus text with
    /// `WebhookStats::to_prometheus`, feature `bus`), with
    /// [`WebhookStats::bad_requests`], the requests that never reached the
    /// sink.
    pub fn stats(&self) -> WebhookStats {
        WebhookStats {
            accepted: self.accepted(),
            refused: self.refused(),
            bad_requests: self.counters.bad_requests.load(Ordering::Relaxed),
            unauthorized: self.counters.unauthorized.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl EventSource for WebhookSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self, sink: Arc<dyn EventSink>) -> Result<()> {
        if self.lifecycle.is_running() {
            return Err(Error::Conflict {
                resource: format!("source `{}`", self.name),
                reason: "already running; stop it first".to_owned(),
            });
        }
        let listener = listen(self.bind).map_err(|source| Error::Io {
            context: format!("webhook `{}`: binding {}", self.name, self.bind),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            context: format!("webhook `{}`: local address", self.name),
            source,
        })?;
        let app = self.router(sink);
        let name = self.name.clone();
        let limits = ServeLimits {
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            max_connections: self.max_connections,
            shutdown_grace: self.shutdown_grace,
        };
        let counters = self.counters.clone();
        self.lifecycle.start(&self.name, move |stop| {
            serve(listener, app, stop, limits, name, counters)
        })?;
        *self.local_addr.lock() = Some(addr);
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        self.lifecycle.stop(&self.name).await
    }

    fn is_running(&self) -> bool {
        self.lifecycle.is_running()
    }
}

#[cfg(all(test, feature = "bus"))]
mod tests {
    use super::WebhookStats;
    use crate::prometheus::exposition_check::parse_exposition;
    use event_bus::metrics::PrometheusLabels;

    #[test]
    fn webhook_stats_render_a_valid_exposition_with_and_without_labels() {
        let stats = WebhookStats {
            accepted: 5,
            refused: 2,
            bad_requests: 4,
            unauthorized: 6,
        };
        let samples = parse_exposition(&stats.to_prometheus());
        assert_eq!(samples.len(), 4);
        assert_eq!(samples["a3s_webhook_unauthorized_total"], 6.0);
        assert_eq!(samples["a3s_webhook_accepted_total"], 5.0);
        assert_eq!(samples["a3s_webhook_refused_total"], 2.0);
        assert_eq!(samples["a3s_webhook_bad_requests_total"], 4.0);
        let labels = PrometheusLabels::new([("webhook", "ingress")]).unwrap();
        let labelled = parse_exposition(&stats.to_prometheus_with_labels(&labels));
        assert_eq!(
            labelled[r#"a3s_webhook_refused_total{webhook="ingress"}"#],
            2.0
        );
        assert_eq!(labelled.len(), 4);
    }
}
