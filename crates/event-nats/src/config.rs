//! Configuration: [`NatsConfig`] (the original README's fields) and
//! [`NatsOptions`] (what production needs beyond them).

use async_nats::rustls::pki_types::pem::PemObject;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use event_core::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Where JetStream keeps the stream's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StorageType {
    /// On disk: survives server restarts (the default).
    #[default]
    File,
    /// In memory: faster, lost when the server restarts.
    Memory,
}

/// What JetStream does when a stream limit (`max_events`, `max_bytes`) is hit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DiscardPolicy {
    /// Remove the oldest events to make room (the default).
    #[default]
    Old,
    /// Refuse new events while the stream is full.
    New,
}

/// What connecting does to a stream that exists already (created by an
/// operator, by another service sharing it, or by an earlier version of this
/// one): [`NatsOptions::existing_stream`], by default
/// [`Adopt`](Self::Adopt).
///
/// ```
/// use event_nats::{ExistingStream, NatsOptions};
///
/// // this service owns its stream: apply its limits on every connect
/// let options = NatsOptions {
///     existing_stream: ExistingStream::Update,
///     ..NatsOptions::default()
/// };
/// assert_eq!(NatsOptions::default().existing_stream, ExistingStream::Adopt);
/// # let _ = options;
/// ```
///
/// The stream's settings belong to whoever created it: the limits
/// (`max_events`, `max_age_secs`, `max_bytes`), the dedup window, the
/// replicas and the discard policy of [`NatsConfig`] and [`NatsOptions`]
/// are the settings the provider creates a missing stream with. A stream of
/// another storage type is [`Error::Conflict`] in every mode (JetStream
/// cannot change it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ExistingStream {
    /// Use the stream with its own limits, replicas, discard policy and
    /// dedup window (the default). The provider changes only what it needs
    /// to work: it adds its missing `{subject_prefix}.>` subject, turns on
    /// `allow_direct` (for `history`), turns off `no_ack` (publishes would
    /// never be acknowledged), lifts a per-subject message limit and sets
    /// limits retention where the server allows it (each of those would
    /// lose events the contract keeps). Each setting that differs from the
    /// config is logged once at `WARN` (the stream, the setting, both
    /// values), so a service cannot delete a shared stream's events by
    /// connecting with smaller limits (the defaults included).
    #[default]
    Adopt,
    /// Apply the config's limits, dedup window, replicas and discard policy
    /// to the stream in place, besides what [`Adopt`](Self::Adopt) changes.
    /// Lowering a limit deletes the stored events beyond it at once (a
    /// `max_events` of 100 on a stream holding 500 events removes the
    /// oldest 400): use it where this service alone owns the stream. A
    /// change the server refuses is [`Error::Conflict`].
    Update,
    /// Change nothing: any difference from the config (limits, dedup
    /// window, replicas, discard policy, and what
    /// [`Adopt`](Self::Adopt) would change) is [`Error::Conflict`] naming
    /// each one, for deployments that want configuration drift to fail
    /// loudly.
    Verify,
}

/// Connection and stream settings, field for field as in the original
/// `a3s-event` README.
///
/// ```
/// use event_nats::{NatsConfig, StorageType};
///
/// let config = NatsConfig {
///     url: "nats://127.0.0.1:4222".to_string(),
///     token: None,
///     credentials_path: None,
///     stream_name: "A3S_EVENTS".to_string(),
///     subject_prefix: "events".to_string(),
///     storage: StorageType::File,
///     max_events: 100_000,
///     max_age_secs: 604_800, // 7 days
///     max_bytes: 0,          // unlimited
///     connect_timeout_secs: 5,
///     request_timeout_secs: 10,
/// };
/// assert!(config.validate().is_ok());
/// ```
///
/// `Debug` output redacts the token and any `user:password@` in the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URL(s), comma separated: `nats://host:4222`, `tls://host:4222`.
    /// A URL may carry credentials, as with every NATS client:
    /// `nats://user:password@host:4222` or `nats://token@host:4222`
    /// (percent-encode `@`, `:`, `/` and `%` in them; in a nats:// or
    /// tls:// URL, which has no path, the credentials end at the last `@`,
    /// so an unencoded `/` in a password still works, while in a ws:// URL
    /// it starts the path); every server that
    /// carries some must carry the same, and they count as the one
    /// authentication method (beside them, any other is
    /// [`Error::InvalidConfig`]).
    pub url: String,
    /// Token authentication (the one authentication method: setting two of
    /// the token, user/password, nkey seed, credentials file and credentials
    /// in the URL is [`Error::InvalidConfig`] when connecting).
    pub token: Option<String>,
    /// A `.creds` file (JWT + nkey seed) for decentralised authentication.
    pub credentials_path: Option<String>,
    /// JetStream stream name (created if absent): at most 255 bytes, no
    /// whitespace, `.`, `*`, `>`, `/`, `\` or `%`.
    pub stream_name: String,
    /// Subject prefix; the stream captures `{subject_prefix}.>`. Not in the
    /// namespaces the server reserves (`$JS`, `$SYS`, ... and `_INBOX`).
    pub subject_prefix: String,
    /// File or memory storage.
    pub storage: StorageType,
    /// Maximum events kept in the stream (0: unlimited). Like every stream
    /// limit, applied when the provider creates the stream; an existing
    /// stream keeps its own unless [`NatsOptions::existing_stream`] says
    /// otherwise.
    pub max_events: u64,
    /// Maximum event age in seconds (0: unlimited). Applied when the
    /// provider creates the stream (see [`max_events`](Self::max_events)).
    pub max_age_secs: u64,
    /// Maximum stream size in bytes (0: unlimited). Applied when the
    /// provider creates the stream (see [`max_events`](Self::max_events)).
    /// An event the stream could never hold (larger than this, with its
    /// subject and the server's per-message overhead) is refused with
    /// `Error::PayloadTooLarge`.
    pub max_bytes: u64,
    /// Timeout for establishing the connection, in seconds.
    pub connect_timeout_secs: u64,
    /// Timeout for JetStream requests and publish acknowledgements, in seconds.
    pub request_timeout_secs: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_string(),
            token: None,
            credentials_path: None,
            stream_name: "A3S_EVENTS".to_string(),
            subject_prefix: "events".to_string(),
            storage: StorageType::File,
            max_events: 100_000,
            max_age_secs: 604_800,
            max_bytes: 0,
            connect_timeout_secs: 5,
            request_timeout_secs: 10,
        }
    }
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("credentials_path", &self.credentials_path)
            .field("stream_name", &self.stream_name)
            .field("subject_prefix", &self.subject_prefix)
            .field("storage", &self.storage)
            .field("max_events", &self.max_events)
            .field("max_age_secs", &self.max_age_secs)
            .field("max_bytes", &self.max_bytes)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .finish()
    }
}

/// `url` (comma-separated server URLs) with the credentials of every
/// `user:password@host` or `token@host` replaced by `<redacted>`: all of a
/// server URL up to its last `@`, wherever it is (a password with an
/// unencoded `/` is hidden too; a ws:// path holding an `@` is hidden with
/// it, which costs a log line some detail, not a secret).
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, one),
            };
            let rest = match rest.rfind('@') {
                Some(at) => format!("<redacted>{}", &rest[at..]),
                None => rest.to_string(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{rest}"),
                None => rest,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Credentials carried in a server URL, as every NATS client reads them:
/// `nats://user:password@host` or `nats://token@host`, percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum UrlCredentials {
    UserPassword { user: String, password: String },
    Token(String),
}

/// Where the credentials of one server URL end: the index in `rest` (the URL
/// after `scheme://`) of the `@` after them, if it has any. ws:// and wss://
/// URLs have paths, so there the credentials end before the first `/`, `?`
/// or `#`, as URL parsers read them. nats://, tls:// and scheme-less server
/// addresses have none, so their last `@` ends the credentials (a password
/// may hold an unencoded `/`, as generated base64 passwords do), as
/// [`NatsConfig::validate`] reads the host.
fn credentials_end(scheme: Option<&str>, rest: &str) -> Option<usize> {
    let authority_end = if matches!(scheme, Some("ws" | "wss")) {
        rest.find(['/', '?', '#']).unwrap_or(rest.len())
    } else {
        rest.len()
    };
    rest[..authority_end].rfind('@')
}

/// The servers of `url` (comma-separated) without the credentials in them,
/// and those credentials: the same on every server that has any, or
/// [`Error::InvalidConfig`]. (async-nats ignores credentials in a URL, so
/// the provider applies them itself, and keeps them out of the addresses it
/// hands on.)
pub(crate) fn split_url_credentials(url: &str) -> Result<(Vec<String>, Option<UrlCredentials>)> {
    let mut servers = Vec::new();
    let mut found: Option<UrlCredentials> = None;
    for one in url.split(',').map(str::trim) {
        let (scheme, rest) = match one.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, one),
        };
        let Some(at) = credentials_end(scheme, rest) else {
            servers.push(one.to_string());
            continue;
        };
        let userinfo = &rest[..at];
        let bad =
            |reason: &str| Error::invalid_config("url", format!("{:?}: {reason}", redact_url(one)));
        let decode = |part: &str, what: &str| {
            percent_decode(part)
                .ok_or_else(|| bad(&format!("the {what} is not valid percent-encoded UTF-8")))
        };
        let credentials = match userinfo.split_once(':') {
            Some((user, password)) => UrlCredentials::UserPassword {
                user: decode(user, "user")?,
                password: decode(password, "password")?,
            },
            None => UrlCredentials::Token(decode(userinfo, "token")?),
        };
        match &credentials {
            UrlCredentials::UserPassword { user, .. } if user.is_empty() => {
                return Err(bad("empty user before the password"));
            }
            UrlCredentials::Token(token) if token.is_empty() => {
                return Err(bad("empty credentials before `@`"));
            }
            _ => {}
        }
        if found.as_ref().is_some_and(|seen| *seen != credentials) {
            return Err(Error::invalid_config(
                "url",
                "the servers carry different credentials; give every server the same ones, \
                 or set them once in the token or user/password fields",
            ));
        }
        found = Some(credentials);
        let stripped = &rest[at + 1..];
        servers.push(match scheme {
            Some(scheme) => format!("{scheme}://{stripped}"),
            None => stripped.to_string(),
        });
    }
    Ok((servers, found))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not
/// UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            // two hex digits (`from_str_radix` alone would take a sign)
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Refuses more than one authentication method: the client would send the
/// server all of them, and which one the server checks depends on its
/// configuration (a token beside a user, say, authenticates as whichever the
/// server is set up for; an nkey beside a `.creds` file fails as a signature
/// mismatch).
pub(crate) fn check_one_auth_method(
    config: &NatsConfig,
    options: &NatsOptions,
    in_url: bool,
) -> Result<()> {
    let methods: Vec<&str> = [
        (in_url, "credentials in the url"),
        (config.token.is_some(), "token"),
        (
            options.user.is_some() || options.password.is_some(),
            "user/password",
        ),
        (options.nkey_seed.is_some(), "nkey_seed"),
        (config.credentials_path.is_some(), "credentials_path"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if methods.len() > 1 {
        return Err(Error::invalid_config(
            "authentication",
            format!(
                "set one method (the server would be sent them all, and which it checks \
                 depends on its configuration); got {}",
                methods.join(" and ")
            ),
        ));
    }
    Ok(())
}

impl NatsConfig {
    /// Checks every field that can be checked without a server, the
    /// credentials in the URL included (well-formed, the same on every
    /// server, not beside `token` or `credentials_path`).
    pub fn validate(&self) -> Result<()> {
        if self.url.trim().is_empty() {
            return Err(Error::invalid_config("url", "must not be empty"));
        }
        for url in self.url.split(',') {
            validate_url(url.trim())?;
        }
        // credentials in the URL: well-formed, the same on every server, and
        // not beside the token or the credentials file
        let (_, url_credentials) = split_url_credentials(&self.url)?;
        check_one_auth_method(self, &NatsOptions::default(), url_credentials.is_some())?;
        if self.stream_name.is_empty()
            || self
                .stream_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\%".contains(c))
        {
            // (nats-server builds ack subjects with the stream name inside a
            // format string: a `%` garbles every one of them)
            return Err(Error::invalid_config(
                "stream_name",
                format!(
                    "{:?} must be non-empty without whitespace, `.`, `*`, `>`, `/`, `\\` or `%`",
                    self.stream_name
                ),
            ));
        }
        // JetStream refuses a longer one; one of a few thousand bytes puts
        // the stream's API subjects past the protocol's control line, and
        // the server closes the connection instead of answering
        if self.stream_name.len() > MAX_STREAM_NAME_LEN {
            return Err(Error::invalid_config(
                "stream_name",
                format!(
                    "is {} bytes long, more than the {MAX_STREAM_NAME_LEN} JetStream allows",
                    self.stream_name.len()
                ),
            ));
        }
        event_core::subject::validate_subject(&self.subject_prefix).map_err(|e| {
            Error::invalid_config("subject_prefix", format!("{:?}: {e}", self.subject_prefix))
        })?;
        // a stream capturing `$JS.>` stores (and acknowledges) every
        // JetStream API request of the account, breaking every JetStream
        // client in it; `_INBOX.>` captures every reply. nats-server 2.9
        // creates either.
        let first = self.subject_prefix.split('.').next().unwrap_or_default();
        if first.starts_with('$') || first == "_INBOX" {
            return Err(Error::invalid_config(
                "subject_prefix",
                format!(
                    "{:?} is in a namespace the server reserves (`$...`, `_INBOX`)",
                    self.subject_prefix
                ),
            ));
        }
        if self.connect_timeout_secs == 0 {
            return Err(Error::invalid_config(
                "connect_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.request_timeout_secs == 0 {
            return Err(Error::invalid_config(
                "request_timeout_secs",
                "must be at least 1",
            ));
        }
        for (field, value) in [
            ("max_events", self.max_events),
            ("max_bytes", self.max_bytes),
        ] {
            if i64::try_from(value).is_err() {
                return Err(Error::invalid_config(field, "must fit in an i64"));
            }
        }
        // JetStream carries durations as i64 nanoseconds; async-nats
        // truncates longer ones (a max_age of 18_446_744_274 s arrives as
        // about 200 s)
        for (field, value) in [
            ("max_age_secs", self.max_age_secs),
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
        ] {
            if value > MAX_SECS {
                return Err(Error::invalid_config(
                    field,
                    format!("{value} is more than {MAX_SECS} (292 years in nanoseconds)"),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

/// The longest duration, in seconds, that JetStream's i64 nanoseconds hold.
const MAX_SECS: u64 = i64::MAX as u64 / 1_000_000_000;

/// The longest stream name JetStream takes, in bytes.
const MAX_STREAM_NAME_LEN: usize = 255;

fn validate_url(url: &str) -> Result<()> {
    let bad =
        |reason: &str| Error::invalid_config("url", format!("{:?}: {reason}", redact_url(url)));
    if url.is_empty() {
        return Err(bad("empty server address"));
    }
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                return Err(bad("scheme must be nats://, tls://, ws:// or wss://"));
            }
            rest
        }
        None => url,
    };
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    let host_port = credentials_end(scheme, rest).map_or(rest, |at| &rest[at + 1..]);
    let host_port = host_port.split('/').next().unwrap_or_default();
    if host_port.is_empty() {
        return Err(bad("missing host"));
    }
    if host_port.chars().any(char::is_whitespace) {
        return Err(bad("host contains whitespace"));
    }
    if let Some((host, port)) = host_port.rsplit_once(':')
        && !host.ends_with(']')
        && !host.contains(':')
    {
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if port.parse::<u16>().is_err() {
            return Err(bad("port must be a number from 0 to 65535"));
        }
    }
    Ok(())
}

/// TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Refuse to talk to a server that does not offer TLS.
    pub require: bool,
    /// PEM file with the CA certificate(s) that signed the server certificate.
    /// When set, these CAs replace the system roots (async-nats loads the
    /// platform roots only when no CA file is given).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients.
    pub client_cert: Option<ClientCert>,
}

/// A client certificate and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

/// Production settings beyond [`NatsConfig`]: further authentication methods,
/// TLS, stream durability and flow control. Passed to
/// [`NatsProvider::connect_with`](crate::NatsProvider::connect_with).
///
/// ```
/// use event_nats::{DiscardPolicy, NatsOptions};
/// use std::time::Duration;
///
/// let options = NatsOptions {
///     user: Some("svc".into()),
///     password: Some("secret".into()),
///     duplicate_window: Duration::from_secs(600),
///     discard: DiscardPolicy::New,
///     ..NatsOptions::default()
/// };
/// assert_eq!(options.max_inflight_acks, 256);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// User for user/password authentication.
    pub user: Option<String>,
    /// Password for user/password authentication.
    pub password: Option<String>,
    /// NKey seed (`SU...`) for nkey authentication.
    pub nkey_seed: Option<String>,
    /// TLS settings. A `tls://` URL also enables TLS.
    pub tls: TlsOptions,
    /// Client name shown by the server's monitoring.
    pub client_name: Option<String>,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    /// Like `replicas` and `discard`, a setting of the stream: applied when
    /// the provider creates it; an existing stream keeps its own unless
    /// [`existing_stream`](Self::existing_stream) says otherwise (the
    /// stream's window is the one deduplication uses).
    ///
    /// Default 120 s, or the stream's `max_age_secs` when that is shorter
    /// (as JetStream does for a stream created without a window: a window
    /// longer than the stream keeps its events is refused). A longer
    /// window set explicitly is
    /// [`Error::InvalidConfig`](event_core::Error::InvalidConfig).
    pub duplicate_window: Duration,
    /// Stream replicas (1 on a single server; 3 or 5 in a cluster). More
    /// than 1 where JetStream runs without a cluster is
    /// [`Error::InvalidConfig`](event_core::Error::InvalidConfig), when
    /// creating the stream and when
    /// [`ExistingStream::Update`] would apply it to an existing one (the
    /// server would take that update, then refuse every consumer that
    /// follows the stream's replicas).
    pub replicas: usize,
    /// What happens when the stream is full.
    pub discard: DiscardPolicy,
    /// What connecting does to a stream that exists already: adopt it as
    /// it is (the default), update it to the config, or verify that it
    /// matches the config (see [`ExistingStream`]).
    pub existing_stream: ExistingStream,
    /// Publishes awaiting their acknowledgement at once within one
    /// [`publish_batch`](event_core::EventProvider::publish_batch) call
    /// (concurrent batches and single publishes are not bounded together:
    /// a shared bound could deadlock them).
    pub max_inflight_acks: usize,
    /// Most events a subscription fetches ahead of the caller (see the crate
    /// docs on prefetch). 1 fetches strictly one event per call.
    pub max_prefetch: usize,
    /// How often the client pings the server when the connection is quiet.
    /// A connection whose server has gone silent (a network partition that
    /// drops packets without closing the connection: a half-open TCP
    /// connection) is declared lost two to three intervals after the
    /// server's last message, then the client reconnects and subscriptions
    /// report it (see the crate docs on connection loss). Default 20 s, so
    /// within a minute; async-nats's own default of 60 s took up to three
    /// minutes, with no log line and subscriptions waiting silently
    /// meanwhile. Less than a second is [`Error::InvalidConfig`] (two pings
    /// unanswered within a round trip would make a slow link look lost);
    /// more than [`MAX_PING_INTERVAL`] (a year) is held at it.
    pub ping_interval: Duration,
}

/// [`NatsOptions::duplicate_window`]'s default: 120 s (JetStream's own).
pub(crate) const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            user: None,
            password: None,
            nkey_seed: None,
            tls: TlsOptions::default(),
            client_name: None,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            replicas: 1,
            discard: DiscardPolicy::Old,
            existing_stream: ExistingStream::Adopt,
            max_inflight_acks: 256,
            max_prefetch: 256,
            ping_interval: DEFAULT_PING_INTERVAL,
        }
    }
}

/// [`NatsOptions::ping_interval`]'s default: 20 s (a half-open connection
/// is noticed within a minute).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);

/// The longest [`NatsOptions::ping_interval`] used: a year ("practically
/// never"). A longer one is held at it: the client's timers add the
/// interval to the clock, which some tokio versions overflow (a panic).
pub const MAX_PING_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

impl NatsOptions {
    /// The ping interval the client uses: [`ping_interval`](Self::ping_interval)
    /// held at [`MAX_PING_INTERVAL`].
    pub(crate) fn ping_period(&self) -> Duration {
        self.ping_interval.min(MAX_PING_INTERVAL)
    }
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("client_name", &self.client_name)
            .field("duplicate_window", &self.duplicate_window)
            .field("replicas", &self.replicas)
            .field("discard", &self.discard)
            .field("existing_stream", &self.existing_stream)
            .field("max_inflight_acks", &self.max_inflight_acks)
            .field("max_prefetch", &self.max_prefetch)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

impl NatsOptions {
    /// Checks every field that can be checked without a server, the
    /// credentials in the URL included (well-formed, the same on every
    /// server, not beside `token` or `credentials_path`).
    pub fn validate(&self) -> Result<()> {
        if self.user.is_some() != self.password.is_some() {
            return Err(Error::invalid_config(
                "user/password",
                "set both or neither",
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err(Error::invalid_config("replicas", "must be from 1 to 5"));
        }
        if self.max_inflight_acks == 0 {
            return Err(Error::invalid_config(
                "max_inflight_acks",
                "must be at least 1",
            ));
        }
        if self.ping_interval < Duration::from_secs(1) {
            return Err(Error::invalid_config(
                "ping_interval",
                format!(
                    "{:?} is less than 1 s: two pings unanswered within a round trip \
                     would make a slow link look lost",
                    self.ping_interval
                ),
            ));
        }
        if self.max_prefetch == 0 {
            return Err(Error::invalid_config("max_prefetch", "must be at least 1"));
        }
        if self.duplicate_window.is_zero() {
            return Err(Error::invalid_config(
                "duplicate_window",
                "must be positive (deduplication is part of the contract)",
            ));
        }
        if self.duplicate_window.as_nanos() > i64::MAX as u128 {
            return Err(Error::invalid_config(
                "duplicate_window",
                format!(
                    "{:?} is longer than {MAX_SECS} s (292 years in nanoseconds)",
                    self.duplicate_window
                ),
            ));
        }
        if let Some(seed) = &self.nkey_seed {
            // checked here so that a typo fails before any network I/O (the
            // client would only report a generic authentication failure);
            // the reason never echoes the secret
            match nkeys::KeyPair::from_seed(seed) {
                Ok(pair) if pair.public_key().starts_with('U') => {}
                Ok(_) => {
                    return Err(Error::invalid_config(
                        "nkey_seed",
                        "is not a user seed (user seeds start with `SU`)",
                    ));
                }
                Err(e) => {
                    return Err(Error::invalid_config(
                        "nkey_seed",
                        format!("is not a valid nkey seed: {}", e.kind()),
                    ));
                }
            }
        }
        for (field, path) in [
            ("tls.ca_file", self.tls.ca_file.as_ref()),
            (
                "tls.client_cert.cert_file",
                self.tls.client_cert.as_ref().map(|c| &c.cert_file),
            ),
            (
                "tls.client_cert.key_file",
                self.tls.client_cert.as_ref().map(|c| &c.key_file),
            ),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(Error::invalid_config(
                    field,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        // the client reads these files only in the TLS handshake, where a
        // malformed one is a (transient-looking) connection error
        if let Some(ca) = &self.tls.ca_file {
            check_certificates("tls.ca_file", ca)?;
        }
        if let Some(cert) = &self.tls.client_cert {
            check_certificates("tls.client_cert.cert_file", &cert.cert_file)?;
            if let Err(e) = PrivateKeyDer::from_pem_file(&cert.key_file) {
                return Err(Error::invalid_config(
                    "tls.client_cert.key_file",
                    format!("{}: no PEM private key: {e}", cert.key_file.display()),
                ));
            }
        }
        Ok(())
    }
}

/// `path` holds at least one PEM certificate, and nothing malformed.
fn check_certificates(field: &str, path: &std::path::Path) -> Result<()> {
    let bad =
        |reason: String| Error::invalid_config(field, format!("{}: {reason}", path.display()));
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("malformed PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(bad("no PEM certificate in the file".to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        NatsConfig::default().validate().unwrap();
        NatsOptions::default().validate().unwrap();
    }

    #[test]
    fn bad_urls_are_invalid_config() {
        for url in [
            "",
            "http://x:4222",
            "nats://:4222",
            "nats://host:notaport",
            "nats://host:99999",
            "nats://",
            "nats://a b:4222",
        ] {
            let config = NatsConfig {
                url: url.into(),
                ..NatsConfig::default()
            };
            match config.validate() {
                Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "url", "{url}"),
                other => panic!("{url:?}: expected InvalidConfig, got {other:?}"),
            }
        }
        for url in [
            "nats://127.0.0.1:4222",
            "localhost:4222",
            "tls://user:pw@host:4443",
            "nats://a:1,nats://b:2",
            "nats://[::1]:4222",
        ] {
            let config = NatsConfig {
                url: url.into(),
                ..NatsConfig::default()
            };
            config.validate().unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn a_ping_interval_beyond_a_year_is_held_at_a_year() {
        let held = |ping_interval| {
            NatsOptions {
                ping_interval,
                ..NatsOptions::default()
            }
            .ping_period()
        };
        assert_eq!(held(Duration::MAX), MAX_PING_INTERVAL);
        assert_eq!(held(MAX_PING_INTERVAL * 2), MAX_PING_INTERVAL);
        assert_eq!(held(Duration::from_secs(20)), Duration::from_secs(20));
    }

    #[test]
    fn bad_fields_name_the_field() {
        let cases: Vec<(NatsConfig, &str)> = vec![
            (
                NatsConfig {
                    stream_name: "a.b".into(),
                    ..NatsConfig::default()
                },
                "stream_name",
            ),
            (
                NatsConfig {
                    stream_name: "EVENTS%d".into(),
                    ..NatsConfig::default()
                },
                "stream_name",
            ),
            (
                NatsConfig {
                    subject_prefix: "a..b".into(),
                    ..NatsConfig::default()
                },
                "subject_prefix",
            ),
            (
                NatsConfig {
                    subject_prefix: "ev.*".into(),
                    ..NatsConfig::default()
                },
                "subject_prefix",
            ),
            (
                NatsConfig {
                    subject_prefix: "$JS".into(),
                    ..NatsConfig::default()
                },
                "subject_prefix",
            ),
            (
                NatsConfig {
                    subject_prefix: "_INBOX.app".into(),
                    ..NatsConfig::default()
                },
                "subject_prefix",
            ),
            (
                NatsConfig {
                    connect_timeout_secs: 0,
                    ..NatsConfig::default()
                },
                "connect_timeout_secs",
            ),
            (
                NatsConfig {
                    max_bytes: u64::MAX,
                    ..NatsConfig::default()
                },
                "max_bytes",
            ),
        ];
        for (config, expected) in cases {
            match config.validate() {
                Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: got {other:?}"),
            }
        }
        let opts = NatsOptions {
            user: Some("u".into()),
            ..NatsOptions::default()
        };
        assert!(matches!(opts.validate(), Err(Error::InvalidConfig { .. })));
        let opts = NatsOptions {
            tls: TlsOptions {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..TlsOptions::default()
            },
            ..NatsOptions::default()
        };
        match opts.validate() {
            Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "tls.ca_file"),
            other => panic!("got {other:?}"),
        }
    }

    #[test]
    fn durations_beyond_i64_nanoseconds_are_invalid_config() {
        // 18_446_744_274 s in nanoseconds wraps to about 200 s in i64
        for (field, secs) in [
            ("max_age_secs", 18_446_744_274),
            ("max_age_secs", u64::MAX),
            ("connect_timeout_secs", u64::MAX),
            ("request_timeout_secs", u64::MAX),
            ("request_timeout_secs", MAX_SECS + 1),
        ] {
            let mut config = NatsConfig::default();
            match field {
                "max_age_secs" => config.max_age_secs = secs,
                "connect_timeout_secs" => config.connect_timeout_secs = secs,
                _ => config.request_timeout_secs = secs,
            }
            match config.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field, "{secs}"),
                other => panic!("{field} = {secs}: expected InvalidConfig, got {other:?}"),
            }
        }
        let config = NatsConfig {
            max_age_secs: MAX_SECS,
            request_timeout_secs: MAX_SECS,
            ..NatsConfig::default()
        };
        config.validate().unwrap();
        for window in [Duration::from_secs(18_446_744_274), Duration::MAX] {
            let opts = NatsOptions {
                duplicate_window: window,
                ..NatsOptions::default()
            };
            match opts.validate() {
                Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "duplicate_window"),
                other => panic!("{window:?}: expected InvalidConfig, got {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_tls_files_are_invalid_config() {
        let dir = std::env::temp_dir().join(format!("a3s-tls-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a pem file").unwrap();
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let cases = [
            (
                TlsOptions {
                    ca_file: Some(garbage.clone()),
                    ..TlsOptions::default()
                },
                "tls.ca_file",
            ),
            (
                TlsOptions {
                    ca_file: Some(broken.clone()),
                    ..TlsOptions::default()
                },
                "tls.ca_file",
            ),
            (
                TlsOptions {
                    client_cert: Some(ClientCert {
                        cert_file: garbage.clone(),
                        key_file: garbage.clone(),
                    }),
                    ..TlsOptions::default()
                },
                "tls.client_cert.cert_file",
            ),
        ];
        for (tls, field) in cases {
            let opts = NatsOptions {
                tls,
                ..NatsOptions::default()
            };
            match opts.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A unique enough directory name for parallel test runs.
    fn uuid_like() -> String {
        format!(
            "{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
    }

    #[test]
    fn config_secrets_are_redacted_in_debug() {
        let config = NatsConfig {
            url: "tls://svc:hunter2@nats-1:4222, nats://s3cr3t@nats-2:4222,nats-3:4222".into(),
            token: Some("tok3n".into()),
            ..NatsConfig::default()
        };
        let s = format!("{config:?}");
        for secret in ["hunter2", "svc:", "s3cr3t", "tok3n"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        for kept in [
            "tls://<redacted>@nats-1:4222",
            "nats://<redacted>@nats-2:4222",
            "nats-3:4222",
            "A3S_EVENTS",
        ] {
            assert!(s.contains(kept), "{kept} missing from {s}");
        }
        assert_eq!(
            redact_url("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222",
            "nothing to redact"
        );
        // a bad URL is named without its credentials
        let bad = NatsConfig {
            url: "nats://svc:hunter2@host:notaport".into(),
            ..NatsConfig::default()
        };
        match bad.validate() {
            Err(Error::InvalidConfig { field, reason }) => {
                assert_eq!(field, "url");
                assert!(!reason.contains("hunter2"), "{reason}");
                assert!(reason.contains("<redacted>@host:notaport"), "{reason}");
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let opts = NatsOptions {
            user: Some("u".into()),
            password: Some("hunter2".into()),
            nkey_seed: Some("SUSEED".into()),
            ..NatsOptions::default()
        };
        let s = format!("{opts:?}");
        assert!(!s.contains("hunter2") && !s.contains("SUSEED"), "{s}");
    }
}

#[cfg(test)]
mod url_credential_tests {
    use super::{UrlCredentials, split_url_credentials};
    use event_core::Error;

    fn user(user: &str, password: &str) -> Option<UrlCredentials> {
        Some(UrlCredentials::UserPassword {
            user: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn credentials_are_taken_out_of_the_server_urls() {
        let (servers, creds) = split_url_credentials("nats://127.0.0.1:4222").unwrap();
        assert_eq!(servers, ["nats://127.0.0.1:4222"]);
        assert!(creds.is_none());

        let (servers, creds) =
            split_url_credentials("tls://al%40ice:p%3Aw@h1:4222/x, h2:4222").unwrap();
        assert_eq!(servers, ["tls://h1:4222/x", "h2:4222"]);
        assert!(creds == user("al@ice", "p:w"));

        let (servers, creds) = split_url_credentials("s3cret@[::1]:4222").unwrap();
        assert_eq!(servers, ["[::1]:4222"]);
        assert!(creds == Some(UrlCredentials::Token("s3cret".into())));

        // an `@` after the host is part of the path, not credentials
        let (servers, creds) = split_url_credentials("ws://h:80/a@b").unwrap();
        assert_eq!(servers, ["ws://h:80/a@b"]);
        assert!(creds.is_none());

        // an empty password is a password
        let (_, creds) = split_url_credentials("nats://u:@h").unwrap();
        assert!(creds == user("u", ""));
    }

    #[test]
    fn malformed_or_conflicting_url_credentials_are_invalid_config_without_the_secret() {
        for url in [
            "nats://u:p%zz@h",
            "nats://u:p%4@h",
            "nats://u:%ff%fe@h",
            "nats://:secret@h",
            "nats://@h",
            "nats://a:secret1@h1,nats://a:secret2@h2",
            "nats://secret1@h1,nats://a:secret1@h2",
        ] {
            match split_url_credentials(url) {
                Err(Error::InvalidConfig { field, reason }) => {
                    assert_eq!(field, "url", "{url}");
                    assert!(!reason.contains("secret"), "{url}: {reason}");
                    assert!(
                        !reason.contains("%zz") && !reason.contains("%ff"),
                        "{url}: {reason}"
                    );
                }
                other => panic!(
                    "{url}: expected InvalidConfig, got {:?}",
                    other.map(|(s, _)| s)
                ),
            }
        }
    }
}

#[cfg(test)]
mod url_credential_edge_tests {
    use super::{NatsConfig, split_url_credentials};
    use event_core::Error;

    /// A password with an unencoded `/` (common in generated passwords:
    /// base64 has `/` and `+`) in a nats:// or tls:// URL, whose servers have
    /// no path: the credentials end at the last `@`, as `validate` reads the
    /// host; they are used, and never shown.
    #[test]
    fn an_unencoded_slash_in_the_password_is_neither_shown_nor_lost() {
        for (url, server) in [
            ("nats://app:Xk/Zq9+@h:4222", "nats://h:4222"),
            ("tls://app:Xk/Zq9+@h:4222/x", "tls://h:4222/x"),
            ("app:Xk/Zq9+@h:4222", "h:4222"),
        ] {
            let config = NatsConfig {
                url: url.into(),
                ..NatsConfig::default()
            };
            let debug = format!("{config:?}");
            assert!(!debug.contains("Xk") && !debug.contains("Zq9"), "{debug}");
            config.validate().unwrap_or_else(|e| panic!("{url}: {e}"));
            let (servers, creds) = split_url_credentials(url).unwrap();
            assert_eq!(servers, [server], "{url}");
            assert!(
                creds
                    == Some(super::UrlCredentials::UserPassword {
                        user: "app".into(),
                        password: "Xk/Zq9+".into(),
                    }),
                "{url}"
            );
        }
        // ws:// has paths: there the credentials end before the first `/`,
        // so such a URL is a bad port, named without the secret
        let config = NatsConfig {
            url: "ws://app:Xk/Zq9@h:80".into(),
            ..NatsConfig::default()
        };
        assert!(!format!("{config:?}").contains("Xk"));
        match config.validate() {
            Err(Error::InvalidConfig { field, reason }) => {
                assert_eq!(field, "url");
                assert!(
                    !reason.contains("Xk") && !reason.contains("Zq9"),
                    "{reason}"
                );
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
        // and an `@` in a ws path is no credentials
        let (servers, creds) = split_url_credentials("wss://h:443/a@b").unwrap();
        assert_eq!(servers, ["wss://h:443/a@b"]);
        assert!(creds.is_none());
    }

    /// `%` must be followed by two hex digits (`u8::from_str_radix` alone
    /// takes `+1`).
    #[test]
    fn a_percent_escape_with_a_sign_is_malformed() {
        for url in ["nats://u:p%+1@h", "nats://u:p%-1@h", "nats://%+4ser:p@h"] {
            match split_url_credentials(url) {
                Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "url", "{url}"),
                other => panic!(
                    "{url}: expected InvalidConfig, got {:?}",
                    other.map(|(s, _)| s)
                ),
            }
        }
    }

    /// `validate` checks every field that can be checked without a server:
    /// the URL's credentials too.
    #[test]
    fn validate_checks_the_credentials_in_the_url() {
        for (url, token) in [
            ("nats://a:s3cret1@h1,nats://a:s3cret2@h2", None),
            ("nats://u:p%zz@h", None),
            ("nats://u:s3cret@h", Some("t")),
        ] {
            let config = NatsConfig {
                url: url.into(),
                token: token.map(str::to_string),
                ..NatsConfig::default()
            };
            match config.validate() {
                Err(Error::InvalidConfig { reason, .. }) => {
                    assert!(!reason.contains("s3cret"), "{url}: {reason}");
                }
                other => panic!("{url}: expected InvalidConfig, got {other:?}"),
            }
        }
    }
}
