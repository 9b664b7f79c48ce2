//! Sending events to an HTTP endpoint with reqwest, through the SDK's reqwest
//! binding (feature `http-client`).

use super::{Mode, cloudevent_from_http, is_cloudevent, redact_url};
use crate::CloudEvent;
use cloudevents::binding::reqwest::{RequestSerializer, event_to_request};
use cloudevents::message::StructuredDeserializer;
use event_core::{Error, Event, Result};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// How much of an error response's body is kept in the error.
const ERROR_BODY_LIMIT: usize = 512;

/// The largest reply event [`send_http`] reads, in bytes (2 MiB, the body
/// limit an axum receiver applies by default).
pub const MAX_REPLY_SIZE: usize = 2 * 1024 * 1024;

/// A success body nobody reads is still read to its end when it announces at
/// most this many bytes, so that the connection can be reused.
const DRAIN_LIMIT: u64 = 64 * 1024;

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
    /// The start of the response body (at most 512 bytes, lossy UTF-8).
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
            write!(f, ": {}", self.body)?;
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

/// The [`HttpStatusError`] an error of [`send_http`] or [`post_http`] carries,
/// if the endpoint answered with a non-success status.
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
        Error::Provider { source, .. } => source.downcast_ref::<HttpStatusError>(),
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
/// - a reply that is a malformed CloudEvent: [`Error::Serialization`];
/// - a reply event over [`MAX_REPLY_SIZE`]: [`Error::PayloadTooLarge`],
///   read no further (the endpoint did accept the event; only its reply is
///   refused).
///
/// An error answer's body is read for at most a second (the start of it is
/// kept in the error), so a stalled body cannot stall the sender; this needs
/// a Tokio runtime with the time driver.
///
/// Only the timeout and the connection errors are transient
/// ([`Error::is_transient`]); an answered status is judged by
/// [`HttpStatusError::is_retryable`].
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
        Some(reply) => Ok(Some(Event::try_from(reply)?)),
        None => Ok(None),
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
    let started = Instant::now();
    let response = post(client, url, event, mode, true).await?;
    let headers = response.headers().clone();
    // Only a 200 carries a reply: a 202 is "accepted", whatever its body.
    if response.status() != reqwest::StatusCode::OK || !is_cloudevent(&headers) {
        discard_body(response);
        return Ok(None);
    }
    let body = read_reply(response, url, started).await?;
    Ok(Some(cloudevent_from_http(&headers, body)?))
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

/// The body of a reply event, at most [`MAX_REPLY_SIZE`] bytes.
async fn read_reply(
    mut response: reqwest::Response,
    url: &str,
    started: Instant,
) -> Result<Vec<u8>> {
    let too_large = |size: usize| Error::PayloadTooLarge {
        size,
        max: MAX_REPLY_SIZE,
    };
    if let Some(announced) = response.content_length()
        && announced > MAX_REPLY_SIZE as u64
    {
        return Err(too_large(usize::try_from(announced).unwrap_or(usize::MAX)));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(url, e, started.elapsed()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_REPLY_SIZE {
            return Err(too_large(body.len()));
        }
    }
    Ok(body)
}

/// Sends the request (with `Prefer: reply` when `want_reply`); a non-2xx
/// answer is the error it stands for.
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

    let started = Instant::now();
    let mut response = request
        .send()
        .await
        .map_err(|e| transport_error(url, e, started.elapsed()))?;
    let status = response.status();
    if !status.is_success() {
        let code = status.as_u16();
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
        return Err(Error::provider(
            "http",
            HttpStatusError {
                url: redact_url(url),
                status: code,
                body: text,
                retry_after,
            },
        ));
    }
    Ok(response)
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
    if err.is_builder() {
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
