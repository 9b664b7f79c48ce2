//! Sending events to an HTTP endpoint with reqwest, through the SDK's reqwest
//! binding (feature `http-client`).

use super::{Mode, cloudevent_from_http, is_cloudevent, redact_url};
use crate::CloudEvent;
use bytes::Bytes;
use cloudevents::binding::reqwest::{RequestSerializer, event_to_request};
use cloudevents::message::StructuredDeserializer;
use event_core::{Error, Event, Result};
use std::fmt::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

/// How much of an error response's body is kept in the error.
const ERROR_BODY_LIMIT: usize = 512;

/// The largest reply event [`send_http`] reads, in bytes (2 MiB, the body
/// limit an axum receiver applies by default).
pub const MAX_REPLY_SIZE: usize = 2 * 1024 * 1024;

/// The longest wait for the body of a reply event, from the answer's head
/// (10 s: 2 MiB, [`MAX_REPLY_SIZE`], at 200 KiB/s). The endpoint has accepted
/// the event by then: a body that does not arrive in time is a
/// [`ReplyLost`], which is not retried.
pub const REPLY_WAIT: Duration = Duration::from_secs(10);

/// A success body nobody reads is still read to its end when it announces at
/// most this many bytes, so that the connection can be reused.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// The most `307` and `308` redirects followed for one event (see
/// [`send_http`]); one more fails the send with a [`RedirectError`].
pub const MAX_REDIRECTS: usize = 10;

/// The longest wait for the body of an answer whose status decided the
/// outcome (a success body drained for reuse, the start of an error body
/// kept in the error): an endpoint that announces a body and stalls must
/// not turn an accepted event into a timed-out (retried, so duplicated)
/// delivery, nor a `400` into a timeout, which is retried.
const BODY_WAIT: Duration = Duration::from_secs(1);

/// An endpoint answered with a non-success status (carried by
/// [`Error::Provider`] with provider `"http"`; [`status_error`] finds it).
///
/// Whether sending the same event again may succeed is
/// [`is_retryable`](Self::is_retryable), by the rule of Knative's event
/// delivery contract. [`Error::is_transient`] is `false` for every answered
/// status: it speaks of the transport (timeouts, lost or refused
/// connections), and the endpoint did answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpStatusError {
    /// The URL the event was sent to, redacted by [`redact_url`]: its
    /// userinfo, query values and fragment shown as `***`.
    pub url: String,
    /// The HTTP status code.
    pub status: u16,
    /// The start of the response body (at most 512 bytes, lossy UTF-8), as
    /// the endpoint sent it; `Display` escapes its control characters
    /// (`\r`, `\n`, `\u{1b}` ...), line separators and bidirectional
    /// overrides, so that an endpoint cannot break, reorder or forge log
    /// lines.
    pub body: String,
    /// How long a `429` or `503` answer asked the sender to wait before
    /// trying again, from its `Retry-After` header (delay-seconds or an
    /// HTTP-date; a date already past is zero). `None` for other statuses
    /// (as in Knative, which honours the header only on these two), without
    /// the header, or when its value is neither form.
    ///
    /// The endpoint chooses it: cap it before waiting (the router's
    /// `DeliverySpec::retry_after_max` does). At most `u32::MAX` seconds, so
    /// that adding it to an `Instant` cannot overflow.
    pub retry_after: Option<Duration>,
}

impl HttpStatusError {
    /// Whether the same request may succeed later, per the Knative Eventing
    /// data-plane contract: `404` (an endpoint still starting), `408`,
    /// `409` (processing in progress), `429` and any status from `500` up
    /// are retryable; any other `4xx` (a `400` for an unparsable event, a
    /// `403`, a `413` ...) and a redirect that was not followed are not.
    ///
    /// ```
    /// use event_cloudevents::http::client::HttpStatusError;
    ///
    /// let answer = |status| HttpStatusError {
    ///     url: "http://sink/events".into(),
    ///     status,
    ///     body: String::new(),
    ///     retry_after: None,
    /// };
    /// assert!(answer(503).is_retryable());
    /// assert!(answer(404).is_retryable());
    /// assert!(!answer(400).is_retryable());
    /// assert!(!answer(302).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 404 | 408 | 409 | 429) || self.status >= 500
    }
}

impl fmt::Display for HttpStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "POST {} answered HTTP {}", self.url, self.status)?;
        if !self.body.is_empty() {
            // the endpoint's text: its control characters escaped, so that
            // it cannot break the log line (or dead-letter reason) it ends
            // up in, nor forge another one
            f.write_str(": ")?;
            for c in self.body.chars() {
                // control characters, the line and paragraph separators,
                // and the bidirectional overrides (which reorder a line)
                if c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
                    || ('\u{202a}'..='\u{202e}').contains(&c)
                    || ('\u{2066}'..='\u{2069}').contains(&c)
                {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    f.write_char(c)?;
                }
            }
        }
        if self.status == 431 {
            // what binary mode does with many metadata entries, and the
            // way out
            f.write_str(
                " (request headers too large; if it was sent in binary mode, which sends \
                 every attribute and metadata entry as a header, Mode::Structured carries \
                 them in the body)",
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpStatusError {}

/// The endpoint redirected the event and it was not delivered (carried by
/// [`Error::Provider`] with provider `"http"`; [`redirect_error`] finds it).
/// [`Error::is_transient`] is `false`: sending the same event to the same
/// URL again meets the same redirect.
///
/// A `307` or `308` (which repeat the POST with the event) within the
/// origin is followed, up to [`MAX_REDIRECTS`] times, and is no error. This
/// is the error for:
///
/// - a `301`, `302` or `303` (an HTTP client repeats the request as a GET
///   without the event) that the client did not follow: [`answer`](Self::answer)
///   is that status, which [`status_error`] returns too (never retryable);
/// - one the client did follow (reqwest's default policy does), detected
///   by the answer coming from another URL: no `answer`, `location` is
///   where the GET ended;
/// - a `307` or `308` to another origin (scheme, host or port): the client
///   would send its default headers, credentials perhaps, to a host the
///   caller did not name; send the event to `location` instead;
/// - more than [`MAX_REDIRECTS`] redirects, or a redirect without a
///   `Location` this crate can follow (any other `3xx`);
/// - the client giving up on redirects of its own policy (its own
///   "too many redirects"), with no `answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedirectError {
    /// The URL the event was sent to, redacted by [`redact_url`].
    pub url: String,
    /// The redirect answer not followed, when there was one.
    pub answer: Option<HttpStatusError>,
    /// Where the endpoint redirected the event (its `Location`, resolved),
    /// redacted by [`redact_url`]; `None` without one.
    pub location: Option<String>,
    /// Why the event was not delivered there.
    pub reason: String,
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let to = self
            .location
            .as_ref()
            .map(|location| format!(" to {location}"))
            .unwrap_or_default();
        match &self.answer {
            Some(answer) => write!(f, "{answer}; redirect{to} not followed")?,
            None => write!(f, "POST {} was redirected{to}", self.url)?,
        }
        write!(f, ", the event was not delivered: {}", self.reason)
    }
}

impl std::error::Error for RedirectError {}

/// The endpoint accepted the event with a `200` answer carrying a reply
/// event, whose body could not be read: it broke off, or did not arrive
/// within [`REPLY_WAIT`] or the client's timeout (carried by
/// [`Error::Provider`] with provider `"http"`; [`reply_lost`] finds it).
///
/// The event was delivered: do not send it again (the endpoint would
/// receive it twice). [`Error::is_transient`] is `false`, although what
/// failed is the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplyLost {
    /// The URL the event was sent to, redacted by [`redact_url`].
    pub url: String,
    /// The status of the answer (`200`).
    pub status: u16,
    /// What happened to the reply's body.
    pub reason: String,
}

impl fmt::Display for ReplyLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "POST {} answered HTTP {}: the event was delivered, but its reply was lost ({}); \
             do not send the event again",
            self.url, self.status, self.reason
        )
    }
}

impl std::error::Error for ReplyLost {}

/// The [`ReplyLost`] an error of [`send_http`] carries, if the event was
/// delivered but its reply could not be read.
pub fn reply_lost(err: &Error) -> Option<&ReplyLost> {
    match err {
        Error::Provider { source, .. } => source.downcast_ref::<ReplyLost>(),
        _ => None,
    }
}

/// The [`RedirectError`] an error of [`send_http`] or [`post_http`]
/// carries, if the endpoint redirected the event and it was not delivered.
pub fn redirect_error(err: &Error) -> Option<&RedirectError> {
    match err {
        Error::Provider { source, .. } => source.downcast_ref::<RedirectError>(),
        _ => None,
    }
}

/// The [`HttpStatusError`] an error of [`send_http`] or [`post_http`] carries,
/// if the endpoint answered with a non-success status (a redirect not
/// followed included: the [`answer`](RedirectError::answer) of a
/// [`RedirectError`]).
///
/// ```
/// use event_cloudevents::http::client::{HttpStatusError, status_error};
/// use event_core::Error;
///
/// let err = Error::provider("http", HttpStatusError {
///     url: "http://sink/events".into(),
///     status: 429,
///     body: String::new(),
///     retry_after: Some(std::time::Duration::from_secs(2)),
/// });
/// assert_eq!(status_error(&err).map(|s| s.status), Some(429));
/// assert!(status_error(&Error::Connection("refused".into())).is_none());
/// ```
pub fn status_error(err: &Error) -> Option<&HttpStatusError> {
    match err {
        Error::Provider { source, .. } => source.downcast_ref::<HttpStatusError>().or_else(|| {
            source
                .downcast_ref::<RedirectError>()
                .and_then(|redirect| redirect.answer.as_ref())
        }),
        _ => None,
    }
}

/// POSTs `event` to `url` as a CloudEvent in `mode`.
///
/// Replies follow Knative's data-plane contract: the request carries
/// `Prefer: reply` (a sender that reads reply events must say so), and only
/// a `200` answer carrying a CloudEvent is a reply, returned as `Some`. Any
/// other 2xx answer is `None`, whose body is not waited for (see
/// [`post_http`]): a `202` means "accepted", and a CloudEvent in it must not
/// be taken for a reply.
///
/// Errors:
/// - `url` is not an absolute URL: [`Error::InvalidConfig`] (field `url`);
/// - the request cannot be built (say an extension name that is no header
///   name): [`Error::Serialization`];
/// - the request timed out (the client's timeout): [`Error::Timeout`];
/// - no connection: [`Error::Connection`];
/// - a non-2xx status: [`Error::Provider`] with provider `"http"` and an
///   [`HttpStatusError`] source ([`status_error`]), which says whether the
///   status is worth retrying ([`HttpStatusError::is_retryable`]: `404`,
///   `408`, `409`, `429`, `5xx`) and how long a `429` or `503` asked to wait;
/// - a redirect the event was not delivered through (below):
///   [`Error::Provider`] with provider `"http"` and a [`RedirectError`]
///   source ([`redirect_error`]), naming the `Location`;
/// - a reply that is a malformed CloudEvent (or, for `send_http`, one that
///   cannot become an A3S event): [`Error::Provider`] with provider
///   `"http"` and a [`ReplyLost`] source ([`reply_lost`]), as for a reply
///   body that breaks off (below): the endpoint has accepted the event;
/// - a reply event over [`MAX_REPLY_SIZE`]: [`Error::PayloadTooLarge`],
///   read no further (the endpoint did accept the event; only its reply is
///   refused);
/// - a reply event whose body breaks off, or does not arrive within
///   [`REPLY_WAIT`] (10 s) or the client's timeout: [`Error::Provider`]
///   with provider `"http"` and a [`ReplyLost`] source ([`reply_lost`]),
///   saying the event was delivered but the reply was lost. It is not
///   transient: the endpoint has accepted the event, and sending it again
///   would deliver it twice.
///
/// An error answer's body is read for at most a second (the start of it is
/// kept in the error), and a reply's for at most [`REPLY_WAIT`], so a
/// stalled body cannot stall the sender; this needs a Tokio runtime with the
/// time driver.
///
/// Only the timeout and the connection errors before an answer are
/// transient ([`Error::is_transient`]); an answered status is judged by
/// [`HttpStatusError::is_retryable`].
///
/// Redirects: a `307` or `308` answer, which repeats the POST with the
/// event, is followed within the origin (scheme, host and port), at most
/// [`MAX_REDIRECTS`] times, whatever the client's redirect policy. A `301`,
/// `302` or `303` is not a delivery: an HTTP client repeats it as a GET
/// without the event. With a client that follows no redirect
/// (`reqwest::redirect::Policy::none()`, which is what to give this
/// function) it fails with a [`RedirectError`] holding the answer. A
/// client that follows them (reqwest's default policy, that of
/// `reqwest::Client::new()`) hides them: this crate sees only the final
/// answer, and fails with a [`RedirectError`] when it comes from another
/// URL; a chain of them that ends back at `url` (a `302` to a login page
/// that sends the GET back) cannot be told from a delivery. A `307` or
/// `308` to another origin (the client would send its default headers,
/// credentials perhaps, to a host the caller did not name), more than
/// [`MAX_REDIRECTS`] redirects, and any other `3xx` fail with a
/// [`RedirectError`] too. None is transient,
/// and a redirect answer is never [retryable](HttpStatusError::is_retryable).
///
/// Every error names `url` redacted by [`redact_url`] (userinfo, query
/// values and fragment shown as `***`; scheme, host, port and path kept),
/// since errors end up in logs and dead letters: a token in the userinfo
/// (`https://TOKEN@host/hook`) or the query (`?access_token=...`, `?sig=`)
/// does not appear in them. A token in the path does.
///
/// ```no_run
/// # async fn demo(event: event_core::Event) -> event_core::Result<()> {
/// use event_cloudevents::http::{Mode, client::send_http};
///
/// let client = reqwest::Client::new();
/// let reply = send_http(&client, "http://localhost:8080/events", &event, Mode::Binary).await?;
/// # Ok(()) }
/// ```
pub async fn send_http(
    client: &reqwest::Client,
    url: &str,
    event: &Event,
    mode: Mode,
) -> Result<Option<Event>> {
    match send_cloudevent_http(client, url, CloudEvent::from(event), mode).await? {
        Some(reply) => Event::try_from(reply)
            .map(Some)
            .map_err(|err| unreadable_reply(url, err)),
        None => Ok(None),
    }
}

/// The error for a reply read after a `200` that cannot be taken as a
/// (CloudEvent or A3S) event: the endpoint has accepted the event, so a
/// [`Error::Serialization`] becomes a [`ReplyLost`], not a failure to send
/// the event again for.
fn unreadable_reply(url: &str, err: Error) -> Error {
    match err {
        Error::Serialization(reason) => Error::provider(
            "http",
            ReplyLost {
                url: redact_url(url),
                status: reqwest::StatusCode::OK.as_u16(),
                reason: format!("the reply cannot be read: {reason}"),
            },
        ),
        other => other,
    }
}

/// POSTs `event` to `url` as a CloudEvent in `mode` and ignores any reply
/// (it sends no `Prefer: reply`, as the recipient then should send none):
/// a 2xx answer is `Ok` whatever its body, which is never waited for (an
/// endless or slow body cannot stall the sender, a huge one is never held);
/// a short body the server announced with its length is read in the
/// background (for at most a second, not waited for), so that the
/// connection can be reused. An error answer's body is
/// read for at most a second too (for the start the error keeps). Needs a
/// Tokio runtime with the time driver. Errors as [`send_http`]'s, but for those about
/// the reply.
///
/// ```no_run
/// # async fn demo(event: event_core::Event) -> event_core::Result<()> {
/// use event_cloudevents::http::{Mode, client::post_http};
///
/// let client = reqwest::Client::new();
/// post_http(&client, "http://localhost:8080/events", &event, Mode::Binary).await?;
/// # Ok(()) }
/// ```
pub async fn post_http(
    client: &reqwest::Client,
    url: &str,
    event: &Event,
    mode: Mode,
) -> Result<()> {
    let response = post(client, url, CloudEvent::from(event), mode, false).await?;
    discard_body(response);
    Ok(())
}

/// [`send_http`] for a CloudEvent (no A3S conversion on either side).
pub async fn send_cloudevent_http(
    client: &reqwest::Client,
    url: &str,
    event: CloudEvent,
    mode: Mode,
) -> Result<Option<CloudEvent>> {
    let response = post(client, url, event, mode, true).await?;
    let headers = response.headers().clone();
    // Only a 200 carries a reply: a 202 is "accepted", whatever its body.
    if response.status() != reqwest::StatusCode::OK || !is_cloudevent(&headers) {
        discard_body(response);
        return Ok(None);
    }
    let body = read_reply(response, url).await?;
    cloudevent_from_http(&headers, body)
        .map(Some)
        .map_err(|err| unreadable_reply(url, err))
}

/// Lets go of a success response whose body is not needed: reads it to its
/// end only when it announced a short length (the connection can then be
/// reused), and otherwise drops it unread. The read runs in a task of its
/// own, so the caller never waits for it: a delivery the endpoint accepted
/// is done, whatever its body does (waited for, a stalled body outlasted a
/// caller's timeout shorter than `BODY_WAIT`, which took the accepted event
/// for a failure and sent it again).
fn discard_body(mut response: reqwest::Response) {
    if response.content_length().is_some_and(|n| n <= DRAIN_LIMIT)
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let mut drain = Box::pin(async move {
            // Not sent within `BODY_WAIT`: dropped, with its connection.
            let _ = tokio::time::timeout(BODY_WAIT, async {
                while let Ok(Some(_)) = response.chunk().await {}
            })
            .await;
        });
        // Most short bodies came with the head: read at once, the
        // connection is back in the pool for the caller's next request.
        let mut now = std::task::Context::from_waker(std::task::Waker::noop());
        if drain.as_mut().poll(&mut now).is_pending() {
            runtime.spawn(drain);
        }
    }
}

/// The body of a reply event, at most [`MAX_REPLY_SIZE`] bytes, read for at
/// most [`REPLY_WAIT`]. The endpoint has accepted the event: a body that
/// breaks off or stalls is a [`ReplyLost`], not a transient error.
async fn read_reply(mut response: reqwest::Response, url: &str) -> Result<Vec<u8>> {
    let too_large = |size: usize| Error::PayloadTooLarge {
        size,
        max: MAX_REPLY_SIZE,
    };
    if let Some(announced) = response.content_length()
        && announced > MAX_REPLY_SIZE as u64
    {
        return Err(too_large(usize::try_from(announced).unwrap_or(usize::MAX)));
    }
    let status = response.status().as_u16();
    let lost = |reason: String| {
        Error::provider(
            "http",
            ReplyLost {
                url: redact_url(url),
                status,
                reason,
            },
        )
    };
    let mut body = Vec::new();
    let read = tokio::time::timeout(REPLY_WAIT, async {
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_REPLY_SIZE {
                return Ok(Some(body.len()));
            }
        }
        Ok::<_, reqwest::Error>(None)
    })
    .await;
    match read {
        Ok(Ok(None)) => Ok(body),
        Ok(Ok(Some(size))) => Err(too_large(size)),
        Ok(Err(err)) => {
            let err = err.without_url();
            Err(lost(if err.is_timeout() {
                "its body did not arrive within the client's timeout".to_string()
            } else {
                format!("its body broke off: {}", error_chain(&err))
            }))
        }
        Err(_) => Err(lost(format!(
            "its body did not arrive within {} s",
            REPLY_WAIT.as_secs()
        ))),
    }
}

/// Sends the request (with `Prefer: reply` when `want_reply`), following
/// `307` and `308` redirects within the origin; a non-2xx answer is the
/// error it stands for.
async fn post(
    client: &reqwest::Client,
    url: &str,
    event: CloudEvent,
    mode: Mode,
    want_reply: bool,
) -> Result<reqwest::Response> {
    crate::mapping::check_writable(&event)?;
    let mut event = event.into_inner();
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        Error::invalid_config("url", format!("{:?} is not a URL: {e}", redact_url(url)))
    })?;
    let mut request = client.post(parsed);
    if want_reply {
        request = request.header("prefer", "reply");
    }
    let request = match mode {
        Mode::Binary => {
            super::prepare_binary(&mut event)?;
            event_to_request(event, request)
        }
        Mode::Structured => {
            StructuredDeserializer::deserialize_structured(event, RequestSerializer::new(request))
        }
    }
    .map_err(|e| Error::Serialization(format!("cannot encode CloudEvent for HTTP: {e}")))?;
    let template = request
        .build()
        .map_err(|e| transport_error(url, e, Duration::ZERO))?;
    let body = template
        .body()
        .and_then(reqwest::Body::as_bytes)
        .map(Bytes::copy_from_slice)
        .unwrap_or_default();

    let started = Instant::now();
    let mut target = template.url().clone();
    let mut redirects = 0;
    loop {
        let mut attempt = reqwest::Request::new(reqwest::Method::POST, target.clone());
        *attempt.headers_mut() = template.headers().clone();
        *attempt.version_mut() = template.version();
        *attempt.timeout_mut() = template.timeout().copied();
        *attempt.body_mut() = Some(reqwest::Body::wrap(EventBody(Some(body.clone()))));
        let response = client
            .execute(attempt)
            .await
            .map_err(|e| transport_error(url, e, started.elapsed()))?;
        if !same_resource(response.url(), &target) {
            // The client followed a redirect, and with this body only a
            // 301, 302 or 303 (see `EventBody`): the answer is to a GET.
            let location = redact_url(response.url().as_str());
            discard_body(response);
            return Err(Error::provider(
                "http",
                RedirectError {
                    url: redact_url(url),
                    answer: None,
                    location: Some(location),
                    reason: "the endpoint answered with a 301, 302 or 303, which the HTTP \
                             client followed with a GET without the event; send the event to \
                             the new URL"
                        .into(),
                },
            ));
        }
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| target.join(v).ok())
                .filter(|next| matches!(next.scheme(), "http" | "https"));
            let reason = match (location, status.as_u16()) {
                (Some(mut next), 307 | 308)
                    if redirects < MAX_REDIRECTS && same_origin(&next, &target) =>
                {
                    // the request's headers carry the credentials
                    let _ = next.set_username("");
                    let _ = next.set_password(None);
                    redirects += 1;
                    target = next;
                    discard_body(response);
                    continue;
                }
                (Some(next), 307 | 308) if redirects < MAX_REDIRECTS => (
                    Some(next),
                    "it leads to another origin (scheme, host or port), and a 307 or 308 is \
                     followed only within the origin (the client would send its default \
                     headers, credentials perhaps, along); send the event to that URL"
                        .to_string(),
                ),
                (Some(next), 307 | 308) => {
                    (Some(next), format!("more than {MAX_REDIRECTS} redirects"))
                }
                (Some(next), 301..=303) => (
                    Some(next),
                    "an HTTP client repeats a 301, 302 or 303 as a GET without the event; \
                     send the event to that URL"
                        .to_string(),
                ),
                (next, _) => (
                    next,
                    "no Location to repeat the POST at (a 307 or 308 with an http or https \
                     Location is followed)"
                        .to_string(),
                ),
            };
            let (location, reason) = reason;
            let answer = status_answer(response, url).await;
            return Err(Error::provider(
                "http",
                RedirectError {
                    url: redact_url(url),
                    answer: Some(answer),
                    location: location.map(|next| redact_url(next.as_str())),
                    reason,
                },
            ));
        }
        if !status.is_success() {
            return Err(Error::provider("http", status_answer(response, url).await));
        }
        return Ok(response);
    }
}

/// Whether two URLs name the same resource to reqwest (which keeps no
/// fragment and moves the userinfo into a header).
fn same_resource(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    same_origin(a, b) && a.path() == b.path() && a.query() == b.query()
}

/// Whether two URLs have the same origin: scheme, host and port.
fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The event as a request body that the HTTP client cannot send twice.
///
/// reqwest repeats a body it can copy when it follows a `307` or `308`, and
/// follows a `301`, `302` or `303` as a GET without it: the final answer
/// does not say which happened, so a delivery could not tell a GET's `200`
/// from the event's. With this body the client follows no `307` or `308`
/// (they come back to [`post`], which follows them within the origin), so
/// any redirect it did follow dropped the event. Empty, it still has no
/// exact size, which would let the client copy it.
struct EventBody(Option<Bytes>);

impl http_body::Body for EventBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(
            self.0
                .take()
                .filter(|bytes| !bytes.is_empty())
                .map(|bytes| Ok(http_body::Frame::data(bytes))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Some(bytes) if !bytes.is_empty() => http_body::SizeHint::with_exact(bytes.len() as u64),
            _ => http_body::SizeHint::default(),
        }
    }
}

/// The [`HttpStatusError`] a non-success answer stands for, with the start
/// of its body (read for at most `BODY_WAIT`).
async fn status_answer(mut response: reqwest::Response, url: &str) -> HttpStatusError {
    let code = response.status().as_u16();
    let retry_after = if code == 429 || code == 503 {
        response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
    } else {
        None
    };
    // Read only the part the error keeps, for at most `BODY_WAIT`: an
    // endless, huge or stalled error body must not stall the sender or
    // fill its memory.
    let mut body = Vec::new();
    let _ = tokio::time::timeout(BODY_WAIT, async {
        while body.len() <= ERROR_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                // The status is the error; a body cut short does not matter.
                Ok(None) | Err(_) => break,
            }
        }
    })
    .await;
    body.truncate(ERROR_BODY_LIMIT + 4); // room to finish a UTF-8 char
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if text.len() > ERROR_BODY_LIMIT {
        let mut cut = ERROR_BODY_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    HttpStatusError {
        url: redact_url(url),
        status: code,
        body: text,
        retry_after,
    }
}

/// The longest delay a `Retry-After` value is read as (about 136 years).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(u32::MAX as u64);

/// The wait a `Retry-After` value asks for, from `now` (RFC 9110, 10.2.3):
/// delay-seconds, or an HTTP-date in any of its three forms (a date already
/// past is zero). At most [`MAX_RETRY_AFTER`]; `None` for anything else.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 are a delay longer than the maximum.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// The error a failed request stands for, naming `url` redacted
/// ([`redact_url`]). reqwest's own text names the URL it failed on (after
/// a redirect, not even the one given) unredacted: it is left out.
fn transport_error(url: &str, err: reqwest::Error, elapsed: Duration) -> Error {
    let url = redact_url(url);
    let err = err.without_url();
    if err.is_redirect() {
        // The client's own redirect policy gave up (say "too many
        // redirects"): only after a 301, 302 or 303, which had dropped the
        // event (see `EventBody`). Not transient: it would happen again.
        Error::provider(
            "http",
            RedirectError {
                url,
                answer: None,
                location: None,
                reason: format!(
                    "the HTTP client followed a 301, 302 or 303 with a GET without the event, \
                     then gave up: {}",
                    error_chain(&err)
                ),
            },
        )
    } else if err.is_builder() {
        Error::Serialization(format!(
            "cannot build the HTTP request for POST {url}: {}",
            error_chain(&err)
        ))
    } else if err.is_timeout() {
        Error::Timeout {
            operation: format!("POST {url}"),
            elapsed,
        }
    } else {
        Error::Connection(format!("POST {url}: {}", error_chain(&err)))
    }
}

/// The error and its sources, so "error sending request" names the cause.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint's error body goes into logs and dead-letter reasons
    /// through `Display`: its line breaks and terminal escapes are shown
    /// escaped, never written raw; the field keeps what was sent.
    #[test]
    fn an_error_body_cannot_break_or_forge_a_log_line() {
        let sent = "denied\r\n2026-12-01T00:00:00Z INFO FAKE LOG LINE \u{1b}[31mred\u{7}\0 é\u{2028}\u{202e}";
        let answer = HttpStatusError {
            url: "http://host/hook".into(),
            status: 403,
            body: sent.into(),
            retry_after: None,
        };
        let shown = answer.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(
            shown.ends_with(
                "denied\\r\\n2026-12-01T00:00:00Z INFO FAKE LOG LINE \\u{1b}[31mred\\u{7}\\u{0} é\\u{2028}\\u{202e}"
            ),
            "{shown}"
        );
        assert_eq!(answer.body, sent);
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_reads_delay_seconds() {
        let now = at(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // A server's choice, however long, is read bounded (never a panic).
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("18446744073709551615", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_reads_the_three_http_date_forms() {
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777 s after the epoch.
        let now = at(784_111_777 - 90);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(form, now),
                Some(Duration::from_secs(90)),
                "{form}"
            );
        }
        // A date already past asks for no wait.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 + 5)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_ignores_what_is_neither_form() {
        let now = at(1_000_000_000);
        for value in [
            "",
            "  ",
            "-1",
            "1.5",
            "+3",
            "soon",
            "120s",
            "0x10",
            "Sun, 06 Nov 1994",
        ] {
            assert_eq!(parse_retry_after(value, now), None, "{value:?}");
        }
    }

    #[test]
    fn retryable_statuses_are_knatives() {
        let answer = |status| HttpStatusError {
            url: String::new(),
            status,
            body: String::new(),
            retry_after: None,
        };
        for status in [404, 408, 409, 429, 500, 501, 502, 503, 504, 599, 600] {
            assert!(answer(status).is_retryable(), "{status}");
        }
        for status in [
            100, 300, 301, 302, 303, 304, 400, 401, 403, 405, 406, 410, 411, 412, 413, 414, 415,
            422, 451, 499,
        ] {
            assert!(!answer(status).is_retryable(), "{status}");
        }
    }
}
