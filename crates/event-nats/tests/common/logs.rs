//! A recording `tracing` subscriber for the tests that read the log. It is
//! global, so each such test file is a test binary of its own.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// `(level, target, message and fields)` of every event.
static LINES: Mutex<Vec<(Level, String, String)>> = Mutex::new(Vec::new());

struct Capture(AtomicU64);

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
        Id::from_u64(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = String::new();
        event.record(&mut Text(&mut text));
        LINES.lock().unwrap().push((
            *event.metadata().level(),
            event.metadata().target().to_string(),
            text,
        ));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Lines of targets starting with `prefix` at exactly `level`.
pub fn lines(prefix: &str, level: Level) -> Vec<String> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, t, _)| *l == level && t.starts_with(prefix))
        .map(|(_, _, text)| text.clone())
        .collect()
}

/// Installs the recording subscriber (once for the test binary).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(Capture(AtomicU64::new(0))).unwrap();
    });
}

/// Lines of targets starting with `prefix`, at any level, that contain
/// `text`.
pub fn lines_with(prefix: &str, text: &str) -> Vec<(Level, String)> {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, t, line)| t.starts_with(prefix) && line.contains(text))
        .map(|(l, _, line)| (*l, line.clone()))
        .collect()
}
