//! Logging of async-nats connection events: one warning when the
//! connection is lost, one when it is back, the reconnection attempts in
//! between at `DEBUG` (async-nats reports each failed attempt, a few per
//! second at first, as a client error event).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use std::time::Instant;

/// While the connection stays down, a reminder `WARN` ("still
/// reconnecting") is logged at the first failed attempt at least this long
/// after the previous warning.
pub(crate) const STILL_DOWN_INTERVAL: Duration = Duration::from_secs(60);

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
