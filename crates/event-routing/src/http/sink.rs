use crate::sink::{EventSink, count_hop};
use async_trait::async_trait;
use event_cloudevents::http::{Mode, client::post_http, redact_url};
use event_core::{Error, Event, Result};
use std::time::Duration;

/// Delivers by POSTing the event as a CloudEvent to a URL.
///
/// The event is sent as it is (its id, subject and metadata) but for one
/// more hop in [`metadata::HOPS`](crate::metadata::HOPS) (the CloudEvents
/// extension `a3smroutinghops`), as a [`TopicSink`](crate::TopicSink)
/// counts its forwards: a routing loop back into a
/// [`WebhookSource`](crate::http::WebhookSource) feeding the broker (a
/// trigger posting to a webhook whose broker routes the event to it again)
/// ends at the broker's [`max_hops`](crate::BrokerConfig::max_hops).
///
/// A 2xx answer is a delivery; anything else fails it, so the trigger's
/// delivery spec retries and dead-letters:
///
/// - no connection, a timeout: [`Error::Connection`] or [`Error::Timeout`]
///   (transient), retried;
/// - a non-2xx status: [`Error::Provider`] with provider `"http"` and an
///   [`HttpStatusError`](event_cloudevents::http::client::HttpStatusError)
///   source carrying the status, the start of the body and a `429` or
///   `503` answer's `Retry-After`. As in Knative, `404`, `408`, `409`,
///   `429` and `5xx` are retried (after `Retry-After`, when given, within
///   the spec's `retry_after_max`); any other status is dead-lettered
///   without a retry (see [`DeliverySpec`](crate::DeliverySpec));
/// - an event this sink cannot encode as a CloudEvent, before anything is
///   sent (in binary mode, more metadata entries than an HTTP request
///   carries, say): [`Error::Serialization`]. The broker retries it as it
///   retries any sink error it cannot judge (the same event fails the same
///   way), then dead-letters it.
///
/// A reply event in the response (as Knative sinks may send) is ignored,
/// and the body of an answer is never waited for long: a 2xx body is not
/// waited for at all (a short one is drained in the background, so the
/// connection can be reused), the start of an error body is kept, read for
/// at most a second. An endless, slow or stalled body cannot hold up a
/// delivery the endpoint accepted (which a timeout would retry, sending it
/// twice), nor turn a status that is not retried into a timeout that is
/// (unless the trigger's attempt timeout is under a second).
///
/// Compared with a Knative broker delivering to a subscriber:
///
/// - **Replies**: a Knative broker sends `Prefer: reply` and publishes the
///   CloudEvent of a `200` answer back into the broker. This sink sends no
///   `Prefer: reply` and drops any reply; to route replies, deliver through
///   an [`InProcessSink`](crate::InProcessSink) that calls
///   `event_cloudevents::http::client::send_http` (which sends
///   `Prefer: reply` and returns the CloudEvent of a `200` answer, never of
///   a `202`) and hands the reply to the broker. Its errors are judged as
///   this sink's are.
/// - **Retries**: as Knative's (of the answers and transport errors, only
///   connection errors, timeouts, `404`, `408`, `409`, `429` and `5xx` are
///   retried; `Retry-After` honoured on
///   `429` and `503`), but `Retry-After` is always bounded, by the spec's
///   `retry_after_max` (30 s unless set).
///
/// Credentials: a token in the URL's userinfo (`https://TOKEN@host/hook`,
/// sent as basic auth) or query (`?access_token=...`, a signed URL's
/// `?sig=...`) stays out of this sink's `Debug` output and of its errors,
/// and so out of logs and dead-letter reasons: they show the URL redacted
/// by [`redact_url`] (`https://***@host/hook?access_token=***`; scheme,
/// host, port and path kept). A token in the path is shown: pass it in the
/// userinfo or query instead.
///
/// Redirects (see `event_cloudevents::http::client::send_http`): a `307`
/// or `308` answer within the origin (scheme, host and port) is followed,
/// at most 10 times, since it repeats the POST with the event. Any other
/// redirect fails the delivery, which is not retried (Knative does not
/// retry a `3xx` either): a `301`, `302` or `303`, which an HTTP client
/// turns into a GET without the event (so following it would count an
/// event nobody received as delivered), a `307` or `308` to another origin
/// (which would take the client's default headers, credentials perhaps,
/// to a host you did not name), and a redirect loop.
///
/// Timeouts and runtimes: [`new`](Self::new)'s client sets no request
/// timeout. Through a [`Broker`](crate::Broker), the trigger's
/// [`DeliverySpec`](crate::DeliverySpec) timeout bounds every attempt
/// (30 s unless set, none if set to `None`); a caller of
/// [`deliver`](EventSink::deliver) itself bounds it with
/// [`with_request_timeout`](Self::with_request_timeout) (or a client of
/// its own, or `tokio::time::timeout`), else a stalled
/// endpoint holds the call for ever. The client pools its connections, and
/// each pooled connection is driven by a task on the Tokio runtime that
/// opened it: a request that reuses it waits while that runtime is not
/// running (a current-thread runtime nobody is blocking on), without a
/// timeout for ever. Deliver from one long-lived runtime, or give each
/// runtime a sink (a client) of its own.
///
/// ```no_run
/// use event_routing::http::{HttpSink, Mode};
/// use std::time::Duration;
///
/// let sink = HttpSink::new("billing", "https://billing.internal/events")?
///     .with_mode(Mode::Structured)
///     .with_request_timeout(Duration::from_secs(5))?;
/// # Ok::<(), event_core::Error>(())
/// ```
#[derive(Clone)]
pub struct HttpSink {
    name: String,
    url: String,
    mode: Mode,
    client: reqwest::Client,
}

impl HttpSink {
    /// A sink POSTing to `url` (http or https) in binary mode, with a default
    /// client, which sets no request timeout (see the type's docs on
    /// timeouts and runtimes). A URL that does not parse, or has another
    /// scheme, is [`Error::InvalidConfig`].
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            Error::invalid_config("http_sink.url", format!("{:?}: {e}", redact_url(&url)))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_config(
                "http_sink.url",
                format!("{:?}: the scheme must be http or https", redact_url(&url)),
            ));
        }
        Ok(Self {
            name: name.into(),
            url,
            mode: Mode::Binary,
            client: client(reqwest::Client::builder())?,
        })
    }

    /// Sends in `mode` instead of binary mode.
    ///
    /// Binary mode sends every CloudEvents attribute and every metadata
    /// entry as a `ce-*` header, and HTTP servers cap a request's headers:
    /// many servers (hyper and axum by default) at 100, about 90 metadata
    /// entries, others at a few KiB of header text. Such a server answers
    /// `431`, which is not retried: the delivery is dead-lettered, its
    /// error saying so. For events with many or long metadata entries, or a
    /// receiver whose limits you do not know, use [`Mode::Structured`],
    /// which carries everything in the body. (A [`WebhookSource`]
    /// accepts up to 1,024 headers.)
    ///
    /// [`WebhookSource`]: crate::http::WebhookSource
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Uses `client` (TLS settings, proxies, pools, timeouts).
    ///
    /// Give it `.redirect(reqwest::redirect::Policy::none())`, as
    /// [`new`](Self::new)'s client has: redirects are then handled as the
    /// type docs say. The event's body cannot be replayed by the client,
    /// so it follows no `307` or `308` itself whatever its policy; but a
    /// client that follows `301`, `302` and `303` (reqwest's default
    /// policy) hides them, and a chain of them that ends back at the
    /// sink's URL (a login page sending the GET back) counts as delivered.
    /// One ending elsewhere fails the delivery, without retries.
    #[must_use]
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// Uses a client whose requests time out after `timeout` (prefer the
    /// trigger's [`DeliverySpec`](crate::DeliverySpec) timeout, which covers
    /// any sink), following no redirect itself, as [`new`](Self::new)'s.
    /// Zero, which would time every request out before it is sent, is
    /// [`Error::InvalidConfig`] (without this call requests have no timeout).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Result<Self> {
        if timeout.is_zero() {
            return Err(Error::invalid_config(
                "http_sink.request_timeout",
                "must be greater than zero",
            ));
        }
        self.client = client(reqwest::Client::builder().timeout(timeout))?;
        Ok(self)
    }

    /// The endpoint, as given to [`new`](Self::new): with its credentials,
    /// so do not log it; [`redact_url`] gives the form this sink's `Debug`
    /// and errors show.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The content mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// A client that follows no redirect itself: every redirect answer comes
/// back to `post_http`, which follows a `307` or `308` within the origin
/// and fails the delivery on any other.
fn client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client> {
    builder
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::invalid_config("http_sink.client", e.to_string()))
}

#[async_trait]
impl EventSink for HttpSink {
    async fn deliver(&self, event: &Event) -> Result<()> {
        // a forward, as a topic sink's: one more hop, so that a loop back
        // into a webhook feeding the broker ends at its `max_hops`
        let mut out = event.clone();
        count_hop(&mut out, event);
        post_http(&self.client, &self.url, &out, self.mode).await
    }

    fn name(&self) -> &str {
        &self.name
    }
}
