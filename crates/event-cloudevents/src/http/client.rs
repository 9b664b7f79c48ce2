//! Sending events to an HTTP endpoint with reqwest, through the SDK's reqwest
//! binding (feature `http-client`).

use super::{Mode, cloudevent_from_http, is_cloudevent};
use crate::CloudEvent;
use cloudevents::binding::reqwest::{RequestSerializer, event_to_request};
use cloudevents::message::StructuredDeserializer;
use event_core::{Error, Event, Result};
use std::fmt;
use std::time::{Duration, Instant};

/// How much of an error response's body is kept in the error.
const ERROR_BODY_LIMIT: usize = 512;

/// An endpoint answered with a non-success status that is not retryable
/// (carried by [`Error::Provider`] with provider `"http"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpStatusError {
    /// The URL the event was sent to.
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
/// Returns the reply event when the endpoint answers with a CloudEvent (as a
/// Knative sink may), `None` for any other 2xx response.
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
/// - a reply that is a malformed CloudEvent: [`Error::Serialization`].
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

/// [`send_http`] for a CloudEvent (no A3S conversion on either side).
pub async fn send_cloudevent_http(
    client: &reqwest::Client,
    url: &str,
    event: CloudEvent,
    mode: Mode,
) -> Result<Option<CloudEvent>> {
    let mut event = event.into_inner();
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::invalid_config("url", format!("{url:?} is not a URL: {e}")))?;
    let request = client.post(parsed);
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
    let headers = response.headers().clone();

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
        if code == 408 || code == 429 || status.is_server_error() {
            return Err(Error::Connection(format!(
                "POST {url} answered HTTP {code}: {text}"
            )));
        }
        return Err(Error::provider(
            "http",
            HttpStatusError {
                url: url.to_string(),
                status: code,
                body: text,
            },
        ));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(url, &e, started.elapsed()))?;
    if is_cloudevent(&headers) {
        Ok(Some(cloudevent_from_http(&headers, body.to_vec())?))
    } else {
        Ok(None)
    }
}

fn transport_error(url: &str, err: &reqwest::Error, elapsed: Duration) -> Error {
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
