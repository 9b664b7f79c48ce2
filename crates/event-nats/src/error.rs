//! Mapping async-nats errors into [`event_core::Error`].

use async_nats::jetstream::{Error as ApiError, ErrorCode};
use event_core::BoxError;
use event_core::Error;
use std::time::Duration;

pub(crate) const PROVIDER: &str = "nats";

/// The JetStream API error anywhere in `err`'s source chain.
pub(crate) fn api_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ApiError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(api) = e.downcast_ref::<ApiError>() {
            return Some(api);
        }
        current = e.source();
    }
    None
}

/// Maps any async-nats error of the operation `op` into a semantic error.
///
/// JetStream API errors are mapped by their error code; client-side failures
/// by their kind (timeouts, lost connections); anything else is kept as
/// [`Error::Provider`] with the original as its source.
pub(crate) fn map(op: &str, err: impl Into<BoxError>, timeout: Duration) -> Error {
    let err: BoxError = err.into();
    let text = err.to_string();
    // JetStream API errors sit either in the source chain or in the error
    // kind (`...Kind::JetStream(e)`), which only shows in the message
    let api = api_error(err.as_ref());
    let code = api
        .map(|api| (api.error_code(), api.code()))
        .or_else(|| api_codes(&text));
    if let Some((code, status)) = code {
        if code == ErrorCode::CONSUMER_NOT_FOUND {
            return Error::NotFound {
                kind: "consumer",
                name: op.to_string(),
            };
        }
        if code == ErrorCode::STREAM_NOT_FOUND {
            return Error::NotFound {
                kind: "stream",
                name: op.to_string(),
            };
        }
        if code == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT {
            // answered with status 503 like a passing outage, but permanent
            // until an operator enables JetStream for the account: not a
            // (transient) connection error that callers would retry forever
            return Error::Authentication(format!(
                "{op}: the account of these credentials has no JetStream: {text}"
            ));
        }
        if status == 503 {
            return Error::Connection(format!("{op}: JetStream is not available: {text}"));
        }
        return Error::provider(PROVIDER, format!("{op}: {text}"));
    }
    if says_client_gone(&text) {
        return client_gone(op, Some(&text));
    }
    // kinds without an API error, e.g. `ConsumerInfoErrorKind::NotFound`
    if text.contains("consumer not found") {
        return Error::NotFound {
            kind: "consumer",
            name: op.to_string(),
        };
    }
    if text.contains("stream not found") {
        return Error::NotFound {
            kind: "stream",
            name: op.to_string(),
        };
    }
    if text.contains("timed out") || text.contains("timeout") {
        return Error::Timeout {
            operation: format!("{op}: {text}"),
            elapsed: timeout,
        };
    }
    if text.contains("no responders")
        || text.contains("broken pipe")
        || text.contains("disconnected")
        || text.contains("connection")
        || text.contains("request error")
    {
        return Error::Connection(format!("{op}: {text}"));
    }
    Error::Provider {
        provider: PROVIDER.to_string(),
        source: format!("{op}: {text}").into(),
    }
}

/// Whether async-nats's error `text` says the client's command channel (or
/// a request's reply channel) is closed: its connection task has ended,
/// for good.
pub(crate) fn says_client_gone(text: &str) -> bool {
    text.contains("channel closed")
}

/// The error of operation `op` once the client's connection task is gone
/// (`said`: what async-nats said, if it said something):
/// [`Error::Closed`], not transient. async-nats runs the connection on the
/// Tokio runtime that connected; when that task ends (the runtime was shut
/// down, or the client closed the connection for good) every request fails
/// at once with "channel closed", and nothing reconnects.
pub(crate) fn client_gone(op: &str, said: Option<&str>) -> Error {
    let said = said.map_or_else(String::new, |said| format!(" (async-nats: {said})"));
    Error::Closed(format!(
        "{op}: the NATS client's connection task is gone, for example because the Tokio \
         runtime that called NatsProvider::connect was shut down; the provider does not \
         reconnect by itself: connect again{said}"
    ))
}

/// Whether `err` (anywhere in its source chain) is a request no one
/// answered: async-nats's "no responders" (the server's 503 status for a
/// subject without subscribers), which a JetStream API request gets from a
/// server running without JetStream, and, for a moment, from one whose
/// JetStream is starting.
pub(crate) fn no_responders(err: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{RequestError, RequestErrorKind};
    let mut current = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<RequestError>()
            .is_some_and(|e| e.kind() == RequestErrorKind::NoResponders)
            || e.downcast_ref::<async_nats::RequestError>()
                .is_some_and(|e| e.kind() == async_nats::RequestErrorKind::NoResponders)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// A JetStream request no one answered on a connection to `url`: the
/// server runs without JetStream ([`Error::Unsupported`], permanent: a
/// retry cannot succeed until an operator enables it) when it says so in
/// its INFO, else its JetStream is not answering yet ([`Error::Connection`],
/// transient).
pub(crate) fn unanswered(op: &str, client: &async_nats::Client, url: &str) -> Error {
    if client.server_info().jetstream {
        return Error::Connection(format!(
            "{op}: no JetStream answered on {url} (the server has JetStream enabled: it may \
             be starting or recovering)"
        ));
    }
    Error::unsupported(
        PROVIDER,
        format!(
            "connecting to {url}, whose server has JetStream disabled (the provider stores \
             events in a JetStream stream): start nats-server with `-js`, or add a \
             `jetstream {{}}` block (with a `store_dir`) to its configuration file"
        ),
    )
}

/// The JetStream API error code of `err`: from the API error in its source
/// chain, else from its message.
pub(crate) fn api_code(err: &(dyn std::error::Error + 'static)) -> Option<ErrorCode> {
    api_error(err)
        .map(ApiError::error_code)
        .or_else(|| api_codes(&err.to_string()).map(|(code, _)| code))
}

/// The stream limit a publish was refused for (`maximum messages exceeded`,
/// `maximum bytes exceeded`, `maximum messages per subject exceeded`): a
/// full stream whose discard policy refuses new messages. The server
/// answers these with status 503, like an unavailable JetStream.
pub(crate) fn stream_limit(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let api = api_error(err)?;
    if api.error_code() != ErrorCode::STREAM_STORE_FAILED {
        return None;
    }
    let text = api.to_string();
    let description = text.split(" (code ").next()?;
    (description.starts_with("maximum ") && description.ends_with(" exceeded"))
        .then(|| description.to_string())
}

/// A storage limit beyond the stream that a publish was refused for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exhausted {
    /// The server's whole JetStream store is full (its `max_file_store` /
    /// `max_memory_store`, or the disk): "insufficient resources", answered
    /// with status 503 like an unavailable JetStream although it lasts
    /// until space is freed. The server's words.
    Server(String),
    /// The account's JetStream storage limit (`max_file` / `max_mem` of the
    /// account) leaves no room for the event: "resource limits exceeded for
    /// account". The server's words.
    Account(String),
}

/// The storage limit beyond the stream that refused a publish, if `err`
/// is such a refusal. Only for publishes: creating a stream in a cluster
/// gets the same "insufficient resources" while too few servers are up,
/// which passes.
pub(crate) fn storage_exhausted(err: &(dyn std::error::Error + 'static)) -> Option<Exhausted> {
    let api = api_error(err)?;
    match api.error_code() {
        ErrorCode::INSUFFICIENT_RESOURCES => Some(Exhausted::Server(api.to_string())),
        ErrorCode::ACCOUNT_RESOURCES_EXCEEDED => Some(Exhausted::Account(api.to_string())),
        _ => None,
    }
}

/// `(error code, status)` from an API error's message:
/// `... (code 404, error code 10059)`.
fn api_codes(text: &str) -> Option<(ErrorCode, usize)> {
    let number = |after: &str| -> Option<u64> {
        let rest = text.rsplit(after).next()?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    if !text.contains("error code ") {
        return None;
    }
    let code = number("error code ")?;
    let status = number("(code ")
        .and_then(|s| usize::try_from(s).ok())
        .unwrap_or(0);
    Some((ErrorCode(code), status))
}

/// Maps a connection error. The URL was validated before, so a parse error
/// here still names the URL.
pub(crate) fn connect(err: async_nats::ConnectError, url: &str, timeout: Duration) -> Error {
    use async_nats::ConnectErrorKind as K;
    match err.kind() {
        K::ServerParse => Error::invalid_config("url", format!("{url:?}: {err}")),
        K::Authentication | K::AuthorizationViolation => {
            Error::Authentication(format!("{url}: {err}"))
        }
        K::TimedOut => Error::Timeout {
            operation: format!("connecting to {url}"),
            elapsed: timeout,
        },
        K::Tls => Error::Connection(format!("TLS to {url}: {err}")),
        // handshake failures arrive as I/O errors wrapping a rustls error
        K::Io if let Some(tls) = tls_error(&err) => {
            Error::Connection(format!("TLS to {url}: {}: {err}", tls_hint(tls)))
        }
        K::Dns | K::Io | K::MaxReconnects => Error::Connection(format!("{url}: {err}")),
    }
}

/// Maps a failed first connection to the servers `servers` (`url` as
/// shown): like [`connect`], except that a TLS handshake failure against
/// servers whose INFO offers no TLS is [`Error::Unsupported`] (a
/// configuration to change, not transient: a retry cannot succeed) saying
/// what to change. The INFO is read on a plain connection of its own
/// (servers send it before any TLS), within `timeout`; a server that does
/// not answer with one leaves the error as it was.
pub(crate) async fn connect_failed(
    err: async_nats::ConnectError,
    servers: &[String],
    url: &str,
    timeout: Duration,
) -> Error {
    let handshake = err.kind() == async_nats::ConnectErrorKind::Tls
        || (err.kind() == async_nats::ConnectErrorKind::Io && tls_error(&err).is_some());
    if handshake && let Some(plain) = without_tls(servers, timeout).await {
        return Error::unsupported(
            PROVIDER,
            format!(
                "TLS to {url}, whose server ({plain}) has TLS disabled (its INFO offers none), \
                 while the configuration requires it (`tls.require`, a `tls://` URL): enable \
                 TLS on the server (a `tls {{}}` block with its certificate and key), or, \
                 where the connection need not be encrypted, use a `nats://` URL without \
                 `tls.require`"
            ),
        );
    }
    connect(err, url, timeout)
}

/// The first of `servers` (`host:port`) whose INFO offers no TLS, when
/// every server that answers with an INFO within `timeout` offers none;
/// `None` when one offers TLS or none answers. WebSocket servers are
/// skipped (their INFO comes inside the WebSocket).
async fn without_tls(servers: &[String], timeout: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut plain = None;
    for server in servers {
        let Ok(addr) = server.parse::<async_nats::ServerAddr>() else {
            continue;
        };
        if addr.is_websocket() {
            continue;
        }
        let target = format!("{}:{}", addr.host(), addr.port());
        match tokio::time::timeout_at(deadline, read_info(&target)).await {
            Ok(Some(info)) if offers_tls(&info) => return None,
            Ok(Some(_)) => {
                plain.get_or_insert(target);
            }
            Ok(None) | Err(_) => {}
        }
    }
    plain
}

/// The INFO a NATS server at `target` greets a connection with.
async fn read_info(target: &str) -> Option<serde_json::Value> {
    use tokio::io::AsyncReadExt as _;
    let mut stream = tokio::net::TcpStream::connect(target).await.ok()?;
    let mut line = Vec::new();
    let mut chunk = [0u8; 1024];
    // an INFO is a few hundred bytes; a cluster's lists of URLs more
    while !line.ends_with(b"\r\n") && line.len() < 64 * 1024 {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        line.extend_from_slice(chunk.get(..n)?);
    }
    let json = line.strip_prefix(b"INFO ")?;
    serde_json::from_slice(json.trim_ascii_end()).ok()
}

/// Whether a server's INFO says it does TLS (required, or available to
/// clients that ask).
fn offers_tls(info: &serde_json::Value) -> bool {
    ["tls_required", "tls_available"]
        .iter()
        .any(|field| info.get(field).and_then(serde_json::Value::as_bool) == Some(true))
}

/// The rustls error anywhere in `err`'s source chain (also inside an
/// `io::Error`, whose `source()` skips the wrapped error).
fn tls_error(err: &async_nats::ConnectError) -> Option<&async_nats::rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

/// What a TLS failure most likely means for the configuration.
fn tls_hint(err: &async_nats::rustls::Error) -> &'static str {
    use async_nats::rustls::{AlertDescription as A, Error as E};
    match err {
        E::InvalidCertificate(_) => {
            "the server certificate is not trusted (check tls.ca_file and the host name)"
        }
        E::AlertReceived(
            A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::AccessDenied,
        ) => "the server refused the client certificate (check tls.client_cert)",
        E::InvalidMessage(_) => {
            "the server did not answer the TLS handshake (is TLS enabled on the server?)"
        }
        _ => "handshake failed",
    }
}

/// Parses the stream's last sequence out of a "wrong last sequence: N" error.
pub(crate) fn actual_last_sequence(err: &(dyn std::error::Error + 'static)) -> u64 {
    let text = api_error(err).map_or_else(|| err.to_string(), ToString::to_string);
    text.split("wrong last sequence:")
        .nth(1)
        .and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|digits| digits.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_connection_errors_are_classified() {
        let e = map(
            "publish",
            std::io::Error::other("timed out: didn't receive ack in time"),
            Duration::from_secs(1),
        );
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        let e = map(
            "publish",
            std::io::Error::other("broken pipe"),
            Duration::from_secs(1),
        );
        assert!(matches!(e, Error::Connection(_)), "{e:?}");
        let e = map("x", std::io::Error::other("weird"), Duration::from_secs(1));
        assert!(matches!(e, Error::Provider { .. }), "{e:?}");
    }

    #[test]
    fn a_closed_command_channel_is_a_client_gone_for_good() {
        // what async-nats says once its connection task has ended
        let e = map(
            "history",
            std::io::Error::other("request failed: request failed: channel closed"),
            Duration::from_secs(1),
        );
        assert!(matches!(e, Error::Closed(_)), "{e:?}");
        assert!(!e.is_transient(), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("connection task is gone"), "{text}");
        assert!(text.contains("connect again"), "{text}");
        assert!(
            text.ends_with("(async-nats: request failed: request failed: channel closed)"),
            "{text}"
        );
    }

    #[test]
    fn api_errors_are_mapped_by_code() {
        let api: ApiError = serde_json::from_str(
            r#"{"code":404,"err_code":10014,"description":"consumer not found"}"#,
        )
        .unwrap();
        let wrapped = async_nats::jetstream::stream::ConsumerError::with_source(
            async_nats::jetstream::stream::ConsumerErrorKind::Other,
            api,
        );
        assert!(matches!(
            map("c1", wrapped, Duration::from_secs(1)),
            Error::NotFound {
                kind: "consumer",
                ..
            }
        ));
        let in_kind =
            std::io::Error::other("jetstream error: stream not found (code 404, error code 10059)");
        assert!(matches!(
            map("s", in_kind, Duration::from_secs(1)),
            Error::NotFound { kind: "stream", .. }
        ));
    }

    #[test]
    fn storage_limits_beyond_the_stream_are_recognised() {
        let api = |json: &str| -> ApiError { serde_json::from_str(json).unwrap() };
        let server = api(r#"{"code":503,"err_code":10023,"description":"insufficient resources"}"#);
        assert!(matches!(
            storage_exhausted(&server),
            Some(Exhausted::Server(said)) if said.contains("insufficient resources")
        ));
        let account = api(
            r#"{"code":400,"err_code":10002,"description":"resource limits exceeded for account"}"#,
        );
        assert!(matches!(
            storage_exhausted(&account),
            Some(Exhausted::Account(said)) if said.contains("resource limits exceeded")
        ));
        // an outage is not one
        let outage = api(r#"{"code":503,"err_code":10039,"description":"jetstream not enabled"}"#);
        assert_eq!(storage_exhausted(&outage), None);
        assert_eq!(
            storage_exhausted(&std::io::Error::other("no responders")),
            None
        );
    }

    #[test]
    fn wrong_last_sequence_is_parsed() {
        let api: ApiError = serde_json::from_str(
            r#"{"code":400,"err_code":10071,"description":"wrong last sequence: 17"}"#,
        )
        .unwrap();
        assert_eq!(actual_last_sequence(&api), 17);
        assert_eq!(actual_last_sequence(&std::io::Error::other("nope")), 0);
    }
}
