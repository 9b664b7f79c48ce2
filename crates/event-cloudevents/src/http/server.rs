//! Receiving events in an axum server, through the SDK's HTTP binding
//! (feature `http-server`).
//!
//! [`HttpEvent`] is an extractor: a handler taking it receives the A3S
//! [`Event`] of a CloudEvent POSTed in either mode; a malformed CloudEvent is
//! answered `400 Bad Request` with the reason, a CloudEvents message in a
//! format it does not read (batched mode, an event format other than JSON)
//! or with a body in a content coding (`Content-Encoding: gzip`, which it
//! does not decode) `415 Unsupported Media Type` with the reason, before
//! the body is read, a body over axum's
//! `DefaultBodyLimit` (2 MB unless configured) `413`. Unlike the SDK's own
//! extractor it honours the body limit and percent-decodes binary-mode
//! headers.
//!
//! ```
//! use axum::{Router, routing::post, http::StatusCode};
//! use event_cloudevents::http::server::HttpEvent;
//!
//! async fn receive(HttpEvent(event): HttpEvent) -> StatusCode {
//!     println!("{} on {}", event.id, event.subject);
//!     StatusCode::ACCEPTED
//! }
//!
//! let app: Router = Router::new().route("/events", post(receive));
//! ```

use super::{Mode, cloudevent_from_http, cloudevent_to_http, unread_format};
use crate::CloudEvent;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use event_core::Event;

/// Extracts the A3S [`Event`] of a CloudEvent request (binary or structured
/// mode). As a response it answers `200 OK` with the event in binary mode,
/// or in structured mode when binary mode cannot carry it or its headers
/// are more than HTTP clients read (see [`cloudevent_response`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpEvent(pub Event);

/// Extracts the CloudEvent of a request without converting it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCloudEvent(pub CloudEvent);

async fn read_cloudevent<S: Send + Sync>(req: Request, state: &S) -> Result<CloudEvent, Response> {
    let headers = req.headers().clone();
    if let Some(err) = unread_format(&headers) {
        // a CloudEvents message in a format not read here (or a body in a
        // content coding), not a malformed one: the sender can send its
        // events one by one in JSON, unencoded, instead
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, err.to_string()).into_response());
    }
    let body = Bytes::from_request(req, state)
        .await
        .map_err(IntoResponse::into_response)?;
    cloudevent_from_http(&headers, body.to_vec()).map_err(bad_request)
}

fn bad_request(err: event_core::Error) -> Response {
    (StatusCode::BAD_REQUEST, err.to_string()).into_response()
}

impl<S: Send + Sync> FromRequest<S> for HttpCloudEvent {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_cloudevent(req, state).await.map(HttpCloudEvent)
    }
}

impl<S: Send + Sync> FromRequest<S> for HttpEvent {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ce = read_cloudevent(req, state).await?;
        Event::try_from(ce).map(HttpEvent).map_err(bad_request)
    }
}

/// A `200 OK` response carrying `event` in `mode` (a reply event); see
/// [`cloudevent_response`].
pub fn http_response(event: &Event, mode: Mode) -> Response {
    cloudevent_response(CloudEvent::from(event), mode)
}

/// The most headers a binary-mode reply carries (its `ce-*` headers and
/// `Content-Type`): 64. HTTP clients read only so many (hyper's, and so
/// reqwest's, and Python's `http.client` stop at 100, headers the server
/// or a proxy adds included); a larger reply is answered in structured
/// mode (see [`cloudevent_response`]).
pub const MAX_BINARY_REPLY_HEADERS: usize = 64;

/// The most bytes of headers (names and values) a binary-mode reply
/// carries: 8 KiB. HTTP clients read only so much (Node's default is
/// 16 KiB for the whole head); a larger reply is answered in structured
/// mode (see [`cloudevent_response`]).
pub const MAX_BINARY_REPLY_HEADER_BYTES: usize = 8 * 1024;

/// A `200 OK` response carrying a CloudEvent in `mode`.
///
/// An event that binary mode cannot carry but structured mode can (more
/// than [`MAX_BINARY_ATTRIBUTES`](super::MAX_BINARY_ATTRIBUTES) attributes,
/// one header each; a `datacontenttype` naming a CloudEvents format, or
/// with whitespace at either end, which `Content-Type` loses), or whose
/// binary-mode headers are more than HTTP clients read (more than
/// [`MAX_BINARY_REPLY_HEADERS`] headers or [`MAX_BINARY_REPLY_HEADER_BYTES`]
/// bytes of them: many metadata entries, a long summary) is
/// answered in structured mode instead, which every CloudEvents receiver
/// reads (the binding leaves the mode of a reply to the responder): the
/// handler has done its work, and a `500`, or an answer the sender cannot
/// read (a transport error to it), would make the sender retry the
/// event, running the handler again. An event no mode can carry (say an
/// extension name that is no attribute name, from a hand-built CloudEvent)
/// is answered `500 Internal Server Error` with the reason.
pub fn cloudevent_response(event: CloudEvent, mode: Mode) -> Response {
    let mode = match mode {
        Mode::Binary if super::binary_refusal(&event).is_some() => Mode::Structured,
        mode => mode,
    };
    let message = match mode {
        // (percent-encoding at most triples a value: most replies are known
        // to fit without building them twice)
        Mode::Binary if surely_fits_clients(&event) => cloudevent_to_http(event, Mode::Binary),
        Mode::Binary => {
            let structured = event.clone();
            match cloudevent_to_http(event, Mode::Binary) {
                Ok(message) if too_large_for_clients(&message.headers) => {
                    cloudevent_to_http(structured, Mode::Structured)
                }
                other => other,
            }
        }
        Mode::Structured => cloudevent_to_http(event, Mode::Structured),
    };
    match message {
        Ok(message) => {
            let mut response = Response::new(Body::from(message.body));
            *response.headers_mut() = message.headers;
            response
        }
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Whether the event's binary-mode headers are surely no more than HTTP
/// clients read, whatever their percent-encoding.
fn surely_fits_clients(event: &CloudEvent) -> bool {
    let mut headers = 0;
    let mut bytes = 0;
    for (name, value) in event.iter() {
        headers += 1;
        bytes += "ce-".len() + name.len() + 3 * value.to_string().len();
    }
    headers <= MAX_BINARY_REPLY_HEADERS && bytes <= MAX_BINARY_REPLY_HEADER_BYTES
}

/// Whether binary-mode reply headers are more than HTTP clients read.
fn too_large_for_clients(headers: &axum::http::HeaderMap) -> bool {
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    headers.len() > MAX_BINARY_REPLY_HEADERS || bytes > MAX_BINARY_REPLY_HEADER_BYTES
}

impl IntoResponse for HttpEvent {
    fn into_response(self) -> Response {
        http_response(&self.0, Mode::Binary)
    }
}

impl IntoResponse for HttpCloudEvent {
    fn into_response(self) -> Response {
        cloudevent_response(self.0, Mode::Binary)
    }
}
