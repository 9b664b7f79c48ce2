//! Warnings that a flood of the same fault must not turn into a flood of
//! log lines: the first one per interval at `WARN`, saying how many were
//! logged at `DEBUG` since the previous one; the others at `DEBUG`.

use parking_lot::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How often a repeated fault is logged at `WARN`: after the first warning
/// about a fault, further ones are logged at `DEBUG`; the next `WARN` comes
/// at the first one at least this long after the previous warning and says
/// how many were logged at `DEBUG` in between. Counters count every one.
///
/// Rate-limited so, each with its own count:
///
/// - a trigger's deliveries lost for want of a dead-letter sink (`WARN`
///   field `quiet_losses`; counted in
///   [`BrokerMetrics::no_dead_letter_sink`](crate::BrokerMetrics::no_dead_letter_sink));
/// - a trigger's dead letters (`quiet_dead_letters`; counted in
///   [`BrokerMetrics::dead_lettered`](crate::BrokerMetrics::dead_lettered));
/// - a broker's events not routed for its hop limit (`quiet`; counted in
///   [`BrokerMetrics::hop_limit`](crate::BrokerMetrics::hop_limit)): a
///   sender can set the hop count of what it posts to a webhook;
/// - a webhook's requests whose event its sink refused (`quiet_refusals`;
///   counted in `WebhookSource::refused`, feature `http`);
/// - a webhook reaching its connection limit (`quiet_waits`, not
///   counted; `WebhookSource::with_max_connections`, feature `http`).
pub const LOSS_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The rate limit of one kind of warning (per trigger, per webhook).
#[derive(Debug, Default)]
pub(crate) struct WarnLimit {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last warning was logged.
    last_warn: Option<Instant>,
    /// Occurrences logged at `DEBUG` since then.
    quiet: u64,
}

impl WarnLimit {
    /// Records an occurrence at `now`: `Some(n)` when it is to be logged at
    /// `WARN` (`n` were logged at `DEBUG` since the previous warning),
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
        let log = WarnLimit::default();
        let t0 = Instant::now();
        assert_eq!(log.record(t0), Some(0));
        assert_eq!(log.record(t0), None);
        assert_eq!(log.record(t0 + Duration::from_secs(59)), None);
        // the first one after the interval warns, with the quiet ones
        assert_eq!(log.record(t0 + LOSS_WARN_INTERVAL), Some(2));
        assert_eq!(log.record(t0 + LOSS_WARN_INTERVAL), None);
        assert_eq!(log.record(t0 + 3 * LOSS_WARN_INTERVAL), Some(1));
    }
}
