//! The one error type of A3S Event.

use std::time::Duration;

/// Result alias used throughout A3S Event.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed error source carried by [`Error::Provider`] and [`Error::Io`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every error A3S Event returns.
///
/// The variants are semantic: a caller can match on *what* went wrong
/// (a bad subject, a conflict, a timeout) without knowing which provider
/// produced it. Providers map their own errors into these variants and keep
/// the original as a `source` where one exists.
///
/// The enum is `#[non_exhaustive]`: new variants may be added in minor
/// releases, so always keep a wildcard arm when matching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subject, filter, category, topic or consumer name broke a rule.
    /// Raised before any I/O.
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The input that was rejected.
        subject: String,
        /// The rule it broke.
        reason: String,
    },

    /// A configuration value is unusable (zero capacity, bad URL, ...).
    #[error("invalid configuration `{field}`: {reason}")]
    InvalidConfig {
        /// The configuration field at fault.
        field: String,
        /// Why the value was refused.
        reason: String,
    },

    /// A named thing (consumer, subscription, key, schema) does not exist.
    #[error("{kind} not found: {name}")]
    NotFound {
        /// What was looked up (`"consumer"`, `"subscription"`, ...).
        kind: &'static str,
        /// The name that was not found.
        name: String,
    },

    /// An existing resource conflicts with what was asked for, for example a
    /// durable consumer that exists with different options that cannot be
    /// changed in place.
    #[error("conflict on {resource}: {reason}")]
    Conflict {
        /// The resource in conflict.
        resource: String,
        /// What differs and why it cannot be reconciled.
        reason: String,
    },

    /// The encoded event is larger than the provider accepts.
    #[error("payload too large: {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Encoded size of the event in bytes.
        size: usize,
        /// The provider's limit in bytes.
        max: usize,
    },

    /// Optimistic concurrency failed: the stream's last sequence was not the
    /// one the publisher expected.
    #[error("wrong last sequence: expected {expected}, stream is at {actual}")]
    WrongLastSequence {
        /// The sequence given in `PublishOptions::expected_sequence`.
        expected: u64,
        /// The stream's actual last sequence (0 when unknown).
        actual: u64,
    },

    /// An operation did not complete in time.
    #[error("timed out after {elapsed:?}: {operation}")]
    Timeout {
        /// What timed out.
        operation: String,
        /// How long was waited: the time limit that ran out, for most
        /// operations (the workspace's providers, bus and router report the
        /// limit; the CloudEvents HTTP client the time measured). On a
        /// starved executor a limit may run out noticeably later than it
        /// says.
        elapsed: Duration,
    },

    /// The backend cannot be reached (refused, reset, DNS, TLS, ...).
    #[error("connection error: {0}")]
    Connection(String),

    /// The backend refused the credentials, or an operation they are not
    /// permitted (an authorization failure: the message names what was
    /// denied).
    #[error("authentication failed: {0}")]
    Authentication(String),

    /// A live subscription fell behind and `missed` events it would have
    /// delivered were skipped (retention removed them first). The
    /// subscription remains usable; the next call continues with the oldest
    /// event still available.
    #[error("subscription lagged: {missed} events were skipped")]
    Lagged {
        /// Number of skipped events that matched the subscription's filter;
        /// a provider that cannot tell counts every skipped stream position,
        /// an upper bound.
        missed: u64,
    },

    /// The subscription or provider was closed.
    #[error("closed: {0}")]
    Closed(String),

    /// A payload failed schema validation.
    #[error(
        "schema validation failed for {} v{version} {}: {reason}",
        type_name(.event_type),
        payload_location(.path)
    )]
    SchemaValidation {
        /// The event type that was validated.
        event_type: String,
        /// The schema version that was validated against.
        version: u32,
        /// JSON pointer to the failing part of the payload (`""` = root).
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// A schema could not be registered (incompatible evolution, bad schema).
    #[error("schema error for {event_type} v{version}: {reason}")]
    Schema {
        /// The event type being registered.
        event_type: String,
        /// The version being registered.
        version: u32,
        /// Which rule or field broke.
        reason: String,
    },

    /// A payload could not be encrypted.
    #[error("encryption failed: {0}")]
    Encryption(String),

    /// A payload could not be decrypted (unknown key, wrong key, tampered or
    /// malformed envelope).
    #[error("decryption failed: {0}")]
    Decryption(String),

    /// A value could not be serialized or deserialized.
    #[error("serialization error: {0}")]
    Serialization(String),

    /// A stored or delivered message is not a valid event. The provider has
    /// terminated it (it is not redelivered); the subscription remains usable.
    #[error("undecodable message at sequence {sequence} on {subject:?}: {reason}")]
    Undecodable {
        /// Subject the message was stored under.
        subject: String,
        /// Stream sequence of the message.
        sequence: u64,
        /// Why it could not be decoded.
        reason: String,
        /// The raw message body, for dead-lettering: the body itself when
        /// it is UTF-8 text; a body that is not is carried as the provider
        /// documents (the NATS provider: `base64:` followed by the
        /// standard base64 of its bytes), else lossily converted to UTF-8.
        raw: String,
    },

    /// The provider does not support what was asked for.
    #[error("{provider} does not support {operation}")]
    Unsupported {
        /// Provider name.
        provider: String,
        /// The operation or option that is unsupported.
        operation: String,
    },

    /// Local I/O failed (state files and the like).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A provider-specific error that maps to no other variant.
    #[error("{provider} error: {source}")]
    Provider {
        /// Provider name.
        provider: String,
        /// The provider's own error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidSubject`].
    pub fn invalid_subject(subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidSubject {
            subject: subject.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::InvalidConfig`].
    pub fn invalid_config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Provider`].
    pub fn provider(provider: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Provider {
            provider: provider.into(),
            source: source.into(),
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(provider: impl Into<String>, operation: impl Into<String>) -> Self {
        Self::Unsupported {
            provider: provider.into(),
            operation: operation.into(),
        }
    }

    /// Whether the operation failed in transport, so that retrying it later
    /// may succeed: a timeout, a lost or refused connection. Validation and
    /// conflict errors are not transient.
    ///
    /// An answer the backend gave is not judged here: an [`Error::Provider`]
    /// is never transient by this test, and its source may say more (an
    /// HTTP status answered to `event-cloudevents`' client, say, tells
    /// whether it is worth retrying through its `is_retryable`).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Connection(_))
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::Serialization(err.to_string())
    }
}

/// Where in a payload a schema error is: `at `/a/b`` for a JSON pointer,
/// `at the payload root` for the empty one.
/// An event type as an error names it; an event without one (a schema
/// registered for the empty type) is said to be untyped.
fn type_name(event_type: &str) -> &str {
    if event_type.is_empty() {
        "untyped events"
    } else {
        event_type
    }
}

fn payload_location(path: &str) -> String {
    if path.is_empty() {
        "at the payload root".to_owned()
    } else {
        format!("at `{path}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_input_and_rule() {
        let err = Error::invalid_subject("events..x", "empty token");
        assert_eq!(
            err.to_string(),
            "invalid subject \"events..x\": empty token"
        );
        let err = Error::PayloadTooLarge { size: 10, max: 5 };
        assert!(err.to_string().contains("10 bytes"));
    }

    #[test]
    fn schema_errors_say_where_in_the_payload() {
        let at = |path: &str| {
            Error::SchemaValidation {
                event_type: "order.created".into(),
                version: 2,
                path: path.into(),
                reason: "bad".into(),
            }
            .to_string()
        };
        assert_eq!(
            at("/amount"),
            "schema validation failed for order.created v2 at `/amount`: bad"
        );
        assert_eq!(
            at(""),
            "schema validation failed for order.created v2 at the payload root: bad"
        );
        let untyped = Error::SchemaValidation {
            event_type: String::new(),
            version: 1,
            path: String::new(),
            reason: "bad".into(),
        };
        assert_eq!(
            untyped.to_string(),
            "schema validation failed for untyped events v1 at the payload root: bad"
        );
    }

    #[test]
    fn serde_errors_convert() {
        let err: Error = serde_json::from_str::<u32>("x").unwrap_err().into();
        assert!(matches!(err, Error::Serialization(_)));
    }

    #[test]
    fn transient_classification() {
        assert!(Error::Connection("refused".into()).is_transient());
        assert!(!Error::invalid_config("x", "y").is_transient());
    }
}
