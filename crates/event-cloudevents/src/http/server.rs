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
/// or in structured mode when binary mode cannot carry it (see
/// [`cloudevent_response`]).
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

/// A `200 OK` response carrying a CloudEvent in `mode`.
///
/// An event that binary mode cannot carry but structured mode can (more
/// than [`MAX_BINARY_ATTRIBUTES`](super::MAX_BINARY_ATTRIBUTES) attributes,
/// one header each; a `datacontenttype` naming a CloudEvents format, or
/// with whitespace at either end, which `Content-Type` loses) is
/// answered in structured mode instead, which every CloudEvents receiver
/// reads (the binding leaves the mode of a reply to the responder): the
/// handler has done its work, and a `500` would make the sender retry the
/// event, running the handler again. An event no mode can carry (say an
/// extension name that is no attribute name, from a hand-built CloudEvent)
/// is answered `500 Internal Server Error` with the reason.
pub fn cloudevent_response(event: CloudEvent, mode: Mode) -> Response {
    let mode = match mode {
        Mode::Binary if super::binary_refusal(&event).is_some() => Mode::Structured,
        mode => mode,
    };
    match cloudevent_to_http(event, mode) {
        Ok(message) => {
            let mut response = Response::new(Body::from(message.body));
            *response.headers_mut() = message.headers;
            response
        }
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
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
