//! Logging of async-nats connection events: one warning when the
//! connection is lost, one when it is back, the reconnection attempts in
//! between at `DEBUG` (async-nats reports each failed attempt, a few per
//! second at first, as a client error event). Also what the server last
//! said about the client's credentials ([`Credentials`]): a refusal on
//! reconnection makes operations fail with [`Error::Authentication`]
//! instead of a transient [`Error::Connection`].

use event_core::Error;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use std::time::Instant;

/// While the connection stays down, a reminder `WARN` ("still
/// reconnecting") is logged at the first failed attempt at least this long
/// after the previous warning.
pub(crate) const STILL_DOWN_INTERVAL: Duration = Duration::from_secs(60);

/// Why the server refused the client's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `Authorization Violation`: credentials the server does not accept
    /// (a password or token rotated on the server, an unknown user, an
    /// expired or revoked JWT presented on reconnection).
    AuthorizationViolation,
    /// The user's or account's JWT expired on a live connection.
    Expired,
    /// The user's or account's credentials were revoked on a live
    /// connection.
    Revoked,
    /// The client could not sign the server's nonce with its key.
    Signing,
}

impl Refusal {
    const ALL: [Self; 4] = [
        Self::AuthorizationViolation,
        Self::Expired,
        Self::Revoked,
        Self::Signing,
    ];

    fn code(self) -> u8 {
        match self {
            Self::AuthorizationViolation => 1,
            Self::Expired => 2,
            Self::Revoked => 3,
            Self::Signing => 4,
        }
    }

    /// The refusal a failed (re)connection attempt reports. async-nats
    /// reports each failed attempt as `ClientError::Other` with the kind of
    /// its `ConnectError` as text (`authorization violation`, `failed
    /// signing nonce`, `IO error`, ...).
    pub(crate) fn of_attempt(error: &str) -> Option<Self> {
        let error = error.to_ascii_lowercase();
        if error.contains("authorization violation") {
            Some(Self::AuthorizationViolation)
        } else if error.contains("failed signing nonce") {
            Some(Self::Signing)
        } else {
            None
        }
    }

    /// The refusal an error the server sent on a live connection (`-ERR
    /// 'Authorization Violation'`, `'User Authentication Expired'`,
    /// `'Account Authentication Expired'`, `'... Authentication Revoked'`)
    /// reports; the server closes the connection after it.
    pub(crate) fn of_server_error(error: &async_nats::ServerError) -> Option<Self> {
        match error {
            async_nats::ServerError::AuthorizationViolation => Some(Self::AuthorizationViolation),
            async_nats::ServerError::Other(text) => {
                let text = text.to_ascii_lowercase();
                if text.contains("authentication expired") {
                    Some(Self::Expired)
                } else if text.contains("authentication revoked") {
                    Some(Self::Revoked)
                } else if text.contains("authorization violation") {
                    Some(Self::AuthorizationViolation)
                } else {
                    None
                }
            }
            async_nats::ServerError::SlowConsumer(_) => None,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::AuthorizationViolation => "authorization violation",
            Self::Expired => "the credentials expired",
            Self::Revoked => "the credentials were revoked",
            Self::Signing => "the client could not sign the server's nonce with its key",
        }
    }

    /// The error of operation `op` while the client reconnects to `url`
    /// and the server refuses its credentials: not transient, a retry
    /// cannot succeed until the credentials or the server's authorization
    /// change.
    pub(crate) fn error(self, op: &str, url: &str) -> Error {
        Error::Authentication(format!(
            "{op}: {url} refused the credentials on reconnect ({}): update the credentials \
             (or the server's authorization); the client keeps reconnecting and recovers by \
             itself once the server accepts them",
            self.reason()
        ))
    }
}

/// The server's last word on the client's credentials while it
/// reconnects: a [`Refusal`], or nothing (connected, or the last attempt
/// failed for another reason such as a server that is down). One atomic:
/// read only on the error path of an operation.
#[derive(Debug, Default)]
pub(crate) struct Credentials(AtomicU8);

impl Credentials {
    /// The refusal the server's last word was, if any.
    pub(crate) fn refused(&self) -> Option<Refusal> {
        let code = self.0.load(Ordering::Acquire);
        Refusal::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Records the server's last word; the previous one.
    pub(crate) fn set(&self, refusal: Option<Refusal>) -> Option<Refusal> {
        let previous = self
            .0
            .swap(refusal.map_or(0, Refusal::code), Ordering::AcqRel);
        Refusal::ALL.into_iter().find(|r| r.code() == previous)
    }

    /// The error of operation `op` while the client is not connected to
    /// `url`: [`Error::Authentication`] when the server refused the
    /// credentials, else a transient [`Error::Connection`].
    pub(crate) fn not_connected(&self, op: &str, url: &str) -> Error {
        match self.refused() {
            Some(refusal) => refusal.error(op, url),
            None => Error::Connection(format!("{op}: not connected to {url} (reconnecting)")),
        }
    }
}

/// What the log said about the connection so far.
#[derive(Debug, Default)]
pub(crate) struct ConnectionLog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the connection was lost; `None` while connected.
    down_since: Option<Instant>,
    /// Failed reconnection attempts since then.
    failed_attempts: u64,
    /// When the last warning about this outage was logged.
    last_warn: Option<Instant>,
    /// Whether this outage's refusal of the credentials was logged.
    refusal_logged: bool,
}

impl ConnectionLog {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection is (back) up. After an outage: one `WARN` with how
    /// long it lasted and how many attempts failed (a `WARN`, so that a log
    /// filtered at `WARN` shows the outage's end as well as its start). The
    /// first connection is logged by the provider itself: `DEBUG` here.
    pub(crate) fn connected(&self) {
        self.connected_at(Instant::now());
    }

    fn connected_at(&self, now: Instant) {
        let mut state = self.state();
        let failed_attempts = std::mem::take(&mut state.failed_attempts);
        state.last_warn = None;
        state.refusal_logged = false;
        match state.down_since.take() {
            Some(since) => tracing::warn!(
                down_for = ?now.saturating_duration_since(since),
                failed_attempts,
                "NATS connection re-established"
            ),
            None => tracing::debug!("NATS connection established"),
        }
    }

    /// The connection was lost: a `WARN` for the first loss of an outage,
    /// `DEBUG` for a repeat (async-nats reports one per broken connection).
    pub(crate) fn disconnected(&self) {
        self.disconnected_at(Instant::now());
    }

    fn disconnected_at(&self, now: Instant) {
        let mut state = self.state();
        if state.down_since.is_some() {
            tracing::debug!(
                failed_attempts = state.failed_attempts,
                "NATS connection lost again"
            );
            return;
        }
        state.down_since = Some(now);
        state.last_warn = Some(now);
        tracing::warn!(
            "NATS connection lost; reconnecting (attempts are logged at DEBUG, the \
             reconnection at WARN)"
        );
    }

    /// The client closed its connection to `url` for good. `requested`: the
    /// application caused it (the provider was dropped, its last handle
    /// gone, as on a normal exit): `DEBUG`. Otherwise a `WARN`: the
    /// provider does not close its connection by itself, so a close
    /// nobody asked for is worth an operator's look.
    pub(crate) fn closed(&self, url: &str, requested: bool) {
        if requested {
            tracing::debug!(server = %url, "NATS connection closed: the provider was dropped");
        } else {
            tracing::warn!(server = %url, "NATS connection closed (not requested by the application)");
        }
    }

    /// The server refused the credentials (a reconnection attempt, or an
    /// error on the live connection): one `WARN` per outage, at once
    /// rather than with the next reminder.
    pub(crate) fn refused(&self, refusal: Refusal) {
        let mut state = self.state();
        if std::mem::replace(&mut state.refusal_logged, true) {
            return;
        }
        tracing::warn!(
            reason = refusal.reason(),
            "NATS server refused the credentials; operations fail with \
             Error::Authentication until it accepts them (reconnecting)"
        );
    }

    /// A reconnection attempt failed with `error`: `DEBUG` with the count,
    /// or a reminder `WARN` once [`STILL_DOWN_INTERVAL`] has passed since
    /// the last warning.
    pub(crate) fn attempt_failed(&self, error: &str) {
        self.attempt_failed_at(Instant::now(), error);
    }

    fn attempt_failed_at(&self, now: Instant, error: &str) {
        let mut state = self.state();
        state.failed_attempts += 1;
        let since = *state.down_since.get_or_insert(now);
        let last = *state.last_warn.get_or_insert(now);
        if now.saturating_duration_since(last) >= STILL_DOWN_INTERVAL {
            state.last_warn = Some(now);
            tracing::warn!(
                failed_attempts = state.failed_attempts,
                down_for = ?now.saturating_duration_since(since),
                %error,
                "NATS connection still down; reconnecting"
            );
        } else {
            tracing::debug!(
                attempt = state.failed_attempts,
                %error,
                "NATS reconnection attempt failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    /// Records `(level, message and fields)` of every event.
    #[derive(Default)]
    struct Capture(Mutex<Vec<(Level, String)>>);

    struct Text<'a>(&'a mut String);

    impl Visit for Text<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            use std::fmt::Write as _;
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut text = String::new();
            event.record(&mut Text(&mut text));
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), text));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    impl Capture {
        fn at(&self, level: Level) -> Vec<String> {
            let lines = self.0.lock().unwrap();
            lines
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, t)| t.clone())
                .collect()
        }
    }

    #[test]
    fn an_outage_is_two_warnings_and_its_attempts_debug_lines() {
        let capture = Arc::new(Capture::default());
        let _guard = tracing::subscriber::set_default(capture.clone());
        let log = ConnectionLog::default();
        let mut now = Instant::now();
        log.connected_at(now); // the first connection
        log.disconnected_at(now);
        for _ in 0..300 {
            log.attempt_failed_at(now, "nats: IO error");
            now += Duration::from_millis(100);
        }
        log.disconnected_at(now); // a repeat within the outage
        log.connected_at(now);
        let warns = capture.at(Level::WARN);
        assert_eq!(warns.len(), 2, "{warns:#?}");
        assert!(warns[0].contains("connection lost"), "{warns:?}");
        assert!(warns[1].contains("re-established"), "{warns:?}");
        assert!(warns[1].contains("failed_attempts=300"), "{warns:?}");
        assert!(warns[1].contains("down_for=30s"), "{warns:?}");
        let debug = capture.at(Level::DEBUG);
        assert_eq!(
            debug.len(),
            302,
            "attempts, the repeat, the first connection"
        );
        assert!(debug[1].contains("attempt=1"), "{debug:?}");

        // the next outage starts over
        log.disconnected_at(now);
        log.attempt_failed_at(now, "nats: IO error");
        log.connected_at(now);
        let warns = capture.at(Level::WARN);
        assert_eq!(warns.len(), 4, "{warns:#?}");
        assert!(warns[3].contains("failed_attempts=1"), "{warns:?}");
    }

    #[test]
    fn refusals_are_told_from_other_failures_and_warned_once_per_outage() {
        use async_nats::ServerError;
        assert_eq!(
            Refusal::of_attempt("authorization violation"),
            Some(Refusal::AuthorizationViolation)
        );
        assert_eq!(
            Refusal::of_attempt("failed signing nonce"),
            Some(Refusal::Signing)
        );
        assert_eq!(Refusal::of_attempt("IO error"), None);
        assert_eq!(Refusal::of_attempt("timed out"), None);
        assert_eq!(
            Refusal::of_server_error(&ServerError::Other("User Authentication Expired".into())),
            Some(Refusal::Expired)
        );
        assert_eq!(
            Refusal::of_server_error(&ServerError::Other("Account Authentication Revoked".into())),
            Some(Refusal::Revoked)
        );
        assert_eq!(
            Refusal::of_server_error(&ServerError::AuthorizationViolation),
            Some(Refusal::AuthorizationViolation)
        );
        assert_eq!(
            Refusal::of_server_error(&ServerError::Other(
                "Permissions Violation for Publish to \"x\"".into()
            )),
            None
        );

        let credentials = Credentials::default();
        let e = credentials.not_connected("publish", "nats://h:1");
        assert!(
            matches!(e, Error::Connection(_)) && e.is_transient(),
            "{e:?}"
        );
        assert_eq!(credentials.set(Some(Refusal::Expired)), None);
        let e = credentials.not_connected("publish", "nats://h:1");
        assert!(
            matches!(&e, Error::Authentication(m) if m.contains("nats://h:1 refused the credentials on reconnect (the credentials expired)")),
            "{e:?}"
        );
        assert_eq!(credentials.set(None), Some(Refusal::Expired));
        assert!(credentials.refused().is_none());

        let capture = Arc::new(Capture::default());
        let _guard = tracing::subscriber::set_default(capture.clone());
        let log = ConnectionLog::default();
        log.disconnected();
        for _ in 0..5 {
            log.refused(Refusal::AuthorizationViolation);
        }
        log.connected();
        log.disconnected();
        log.refused(Refusal::AuthorizationViolation);
        let warns = capture.at(Level::WARN);
        let refusals = warns
            .iter()
            .filter(|w| w.contains("refused the credentials"))
            .count();
        assert_eq!(refusals, 2, "one per outage: {warns:#?}");
    }

    #[test]
    fn a_close_is_a_warning_only_when_the_application_did_not_ask_for_it() {
        let capture = Arc::new(Capture::default());
        let _guard = tracing::subscriber::set_default(capture.clone());
        let log = ConnectionLog::default();
        log.closed("nats://h:1", true);
        assert!(capture.at(Level::WARN).is_empty());
        let debug = capture.at(Level::DEBUG);
        assert!(
            debug.len() == 1 && debug[0].contains("dropped") && debug[0].contains("nats://h:1"),
            "{debug:?}"
        );
        log.closed("nats://h:1", false);
        let warns = capture.at(Level::WARN);
        assert!(
            warns.len() == 1 && warns[0].contains("not requested"),
            "{warns:?}"
        );
    }

    #[test]
    fn a_long_outage_is_reminded_once_per_interval() {
        let capture = Arc::new(Capture::default());
        let _guard = tracing::subscriber::set_default(capture.clone());
        let log = ConnectionLog::default();
        let mut now = Instant::now();
        log.disconnected_at(now);
        // 4 s between attempts (async-nats's longest delay) for 248 s
        for _ in 0..62 {
            now += Duration::from_secs(4);
            log.attempt_failed_at(now, "nats: IO error");
        }
        let warns = capture.at(Level::WARN);
        // lost, then reminders at 60 s, 120 s, 180 s, 240 s
        assert_eq!(warns.len(), 5, "{warns:#?}");
        assert!(warns[1].contains("still down"), "{warns:?}");
        assert!(warns[1].contains("failed_attempts=15"), "{warns:?}");
    }
}
