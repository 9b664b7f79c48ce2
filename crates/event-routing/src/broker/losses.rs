//! Logging of deliveries a trigger lost (every attempt failed and no
//! dead-letter sink took the event), without a line per event.

use parking_lot::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// After a trigger's first warning about a lost delivery, further ones are
/// logged at `DEBUG`; the next `WARN` comes at the first loss at least this
/// long after the previous warning and says how many were logged at
/// `DEBUG` in between. Broker metrics count every one
/// ([`BrokerMetrics::no_dead_letter_sink`](super::BrokerMetrics::no_dead_letter_sink)).
pub const LOSS_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// One trigger's rate limit for "lost delivery" warnings.
#[derive(Debug, Default)]
pub(crate) struct LossWarnings {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last warning was logged.
    last_warn: Option<Instant>,
    /// Losses logged at `DEBUG` since then.
    quiet: u64,
}

impl LossWarnings {
    /// Records a loss at `now`: `Some(n)` when it is to be logged at `WARN`
    /// (`n` losses were logged at `DEBUG` since the previous warning),
    /// `None` when at `DEBUG`.
    pub(crate) fn record(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        match state.last_warn {
            Some(at) if now.saturating_duration_since(at) < LOSS_WARN_INTERVAL => {
                state.quiet += 1;
                None
            }
            _ => {
                state.last_warn = Some(now);
                Some(std::mem::take(&mut state.quiet))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_warns_then_one_summary_per_interval() {
        let log = LossWarnings::default();
        let t0 = Instant::now();
        assert_eq!(log.record(t0), Some(0));
        assert_eq!(log.record(t0), None);
        assert_eq!(log.record(t0 + Duration::from_secs(59)), None);
        // the first loss after the interval warns, with the quiet ones
        assert_eq!(log.record(t0 + LOSS_WARN_INTERVAL), Some(2));
        assert_eq!(log.record(t0 + LOSS_WARN_INTERVAL), None);
        assert_eq!(log.record(t0 + 3 * LOSS_WARN_INTERVAL), Some(1));
    }
}
