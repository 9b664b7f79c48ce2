//! Sending events to an HTTP endpoint with reqwest, through the SDK's reqwest
//! binding (feature `http-client`).

use super::{Mode, cloudevent_from_http, is_cloudevent};
use crate::CloudEvent;
use cloudevents::binding::reqwest::{RequestSerializer, event_to_request};
use cloudevents::message::StructuredDeserializer;
use event_core::{Error, Event, Result};
use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

/// How much of an error response's body is kept in the error.
const ERROR_BODY_LIMIT: usize = 512;

/// The largest reply event [`send_http`] reads, in bytes (2 MiB, the body
/// limit an axum receiver applies by default).
pub const MAX_REPLY_SIZE: usize = 2 * 1024 * 1024;

/// A success body nobody reads is still read to its end when it announces at
/// most this many bytes, so that the connection can be reused.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// An endpoint answered with a non-success status that is not retryable
/// (carried by [`Error::Provider`] with provider `"http"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpStatusError {
    /// The URL the event was sent to (a password in it shown as `***`).
    pub url: String,
    /// The HTTP status code.
    pub status: u16,
    /// The start of the response body (at most 512 bytes, lossy UTF-8).
    pub body: String,
}

impl fmt::Display for HttpStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "POST {} answered HTTP {}", self.url, self.status)?;
        if !self.body.is_empty() {
            write!(f, ": {}", self.body)?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpStatusError {}

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
/// - no connection, or the endpoint answered 408, 429 or 5xx:
///   [`Error::Connection`] (transient, worth retrying);
/// - any other non-2xx status: [`Error::Provider`] with provider `"http"`
///   and an [`HttpStatusError`] source;
/// - a reply that is a malformed CloudEvent: [`Error::Serialization`];
/// - a reply event over [`MAX_REPLY_SIZE`]: [`Error::PayloadTooLarge`],
///   read no further (the endpoint did accept the event; only its reply is
///   refused).
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
/// a short body the server announced with its length is read, so that the
/// connection can be reused. Errors as [`send_http`]'s, but for those about
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
    discard_body(response).await;
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
        discard_body(response).await;
        return Ok(None);
    }
    let body = read_reply(response, url, started).await?;
    Ok(Some(cloudevent_from_http(&headers, body)?))
}

/// Lets go of a success response whose body is not needed: reads it to its
/// end only when it announced a short length (the connection can then be
/// reused), and otherwise drops it unread.
async fn discard_body(mut response: reqwest::Response) {
    if response.content_length().is_some_and(|n| n <= DRAIN_LIMIT) {
        while let Ok(Some(_)) = response.chunk().await {}
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
        .map_err(|e| transport_error(url, &e, started.elapsed()))?
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
    let mut event = event.into_inner();
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::invalid_config("url", format!("{url:?} is not a URL: {e}")))?;
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
        .map_err(|e| transport_error(url, &e, started.elapsed()))?;
    let status = response.status();
    if !status.is_success() {
        // Read only the part the error keeps: an endless or huge error body
        // must not stall the sender or fill its memory.
        let mut body = Vec::new();
        while body.len() <= ERROR_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                // The status is the error; a body cut short does not matter.
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(ERROR_BODY_LIMIT + 4); // room to finish a UTF-8 char
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if text.len() > ERROR_BODY_LIMIT {
            let mut cut = ERROR_BODY_LIMIT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let code = status.as_u16();
        let url = shown(url);
        if code == 408 || code == 429 || status.is_server_error() {
            return Err(Error::Connection(format!(
                "POST {url} answered HTTP {code}: {text}"
            )));
        }
        return Err(Error::provider(
            "http",
            HttpStatusError {
                url: url.into_owned(),
                status: code,
                body: text,
            },
        ));
    }
    Ok(response)
}

/// `url` as errors show it: a password in it is `***`, so that errors (which
/// end up in logs and dead letters) do not carry credentials.
fn shown(url: &str) -> Cow<'_, str> {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            Cow::Owned(parsed.into())
        }
        _ => Cow::Borrowed(url),
    }
}

fn transport_error(url: &str, err: &reqwest::Error, elapsed: Duration) -> Error {
    let url = shown(url);
    if err.is_builder() {
        Error::Serialization(format!(
            "cannot build the HTTP request for POST {url}: {}",
            error_chain(err)
        ))
    } else if err.is_timeout() {
        Error::Timeout {
            operation: format!("POST {url}"),
            elapsed,
        }
    } else {
        Error::Connection(format!("POST {url}: {}", error_chain(err)))
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
