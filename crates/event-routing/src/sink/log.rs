use super::EventSink;
use async_trait::async_trait;
use event_core::{Event, Result};
use tracing::Level;

/// Delivers by logging the event through `tracing` (id, subject, type,
/// source, summary, each quoted and escaped as `Debug` writes it, so a line
/// break in an event cannot start a log line of its own), at `INFO` unless
/// set otherwise. Never fails.
#[derive(Debug, Clone)]
pub struct LogSink {
    name: String,
    level: Level,
}

impl LogSink {
    /// A sink logging at `INFO`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            level: Level::INFO,
        }
    }

    /// Logs at `level` instead.
    #[must_use]
    pub fn with_level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
}

macro_rules! log_event {
    ($level:expr, $sink:expr, $e:expr) => {
        tracing::event!(
            $level,
            sink = %$sink,
            id = ?$e.id,
            subject = ?$e.subject,
            event_type = ?$e.event_type,
            source = ?$e.source,
            summary = ?$e.summary,
            "routed event"
        )
    };
}

#[async_trait]
impl EventSink for LogSink {
    async fn deliver(&self, event: &Event) -> Result<()> {
        match self.level {
            Level::ERROR => log_event!(Level::ERROR, self.name, event),
            Level::WARN => log_event!(Level::WARN, self.name, event),
            Level::INFO => log_event!(Level::INFO, self.name, event),
            Level::DEBUG => log_event!(Level::DEBUG, self.name, event),
            Level::TRACE => log_event!(Level::TRACE, self.name, event),
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
