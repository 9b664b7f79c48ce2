//! When a source fires.

use super::lifecycle::StopSignal;
use chrono::{DateTime, Utc};
use event_core::{Error, Result};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// When a scheduled source fires: a fixed interval or a cron expression.
///
/// Cron expressions use the [`cron`](https://docs.rs/cron) crate's syntax:
/// six or seven fields (`sec min hour day-of-month month day-of-week [year]`),
/// or the classic five fields (`min hour dom month dow`, firing at second 0),
/// or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. Times are UTC.
/// Prefer day names (`MON-FRI`) to numbers in the day-of-week field: the
/// `cron` crate numbers days from 1 (Sunday).
///
/// ```
/// use event_routing::Schedule;
/// use std::time::Duration;
///
/// assert!(Schedule::every(Duration::from_secs(5)).is_ok());
/// assert!(Schedule::every(Duration::ZERO).is_err());
/// assert!(Schedule::cron("0 */5 * * * *").is_ok());   // every 5 minutes
/// assert!(Schedule::cron("30 9 * * MON-FRI").is_ok()); // 09:30 on weekdays
/// assert!(Schedule::cron("every tuesday").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Schedule(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Interval(Duration),
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    /// Fires every `period`, first after one period. A zero period is
    /// [`Error::InvalidConfig`]. Ticks missed while an emission ran long are
    /// skipped, not bunched up.
    pub fn every(period: Duration) -> Result<Self> {
        if period.is_zero() {
            return Err(Error::invalid_config(
                "schedule.interval",
                "the interval must be greater than zero",
            ));
        }
        Ok(Self(Kind::Interval(period)))
    }

    /// Fires at the times the cron expression `expression` names (see the
    /// type docs). An invalid expression is [`Error::InvalidConfig`].
    pub fn cron(expression: &str) -> Result<Self> {
        let trimmed = expression.trim();
        let fields = trimmed.split_whitespace().count();
        let full = if fields == 5 && !trimmed.starts_with('@') {
            format!("0 {trimmed}")
        } else {
            trimmed.to_owned()
        };
        cron::Schedule::from_str(&full)
            .map(|s| Self(Kind::Cron(Box::new(s))))
            .map_err(|e| {
                Error::invalid_config(
                    "schedule.cron",
                    format!("invalid cron expression {expression:?}: {e}"),
                )
            })
    }

    /// The first fire time strictly after `after` (`None` when a cron
    /// schedule has no more, or for an interval, which has no wall-clock
    /// times).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.0 {
            Kind::Interval(_) => None,
            Kind::Cron(s) => s.after(&after).next(),
        }
    }

    /// Calls `tick(n)` (n = 1, 2, ...) at every fire time until `stop`.
    ///
    /// Cron times are computed from the wall clock at start plus the
    /// monotonic time since (Tokio's clock), so a wall-clock jump does not
    /// fire a burst, and a paused Tokio clock drives the schedule in tests.
    pub(crate) async fn run<F, Fut>(&self, mut stop: StopSignal, mut tick: F)
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = ()>,
    {
        let start = Instant::now();
        let wall_start = Utc::now();
        let mut interval = match &self.0 {
            Kind::Interval(period) => {
                let mut i = tokio::time::interval_at(start + *period, *period);
                i.set_missed_tick_behavior(MissedTickBehavior::Skip);
                Some(i)
            }
            Kind::Cron(_) => None,
        };
        let mut n = 0u64;
        loop {
            let wait = async {
                match (&mut interval, &self.0) {
                    (Some(i), _) => {
                        i.tick().await;
                        true
                    }
                    (None, Kind::Cron(schedule)) => {
                        let elapsed = chrono::Duration::from_std(start.elapsed())
                            .unwrap_or(chrono::Duration::MAX);
                        let now = wall_start
                            .checked_add_signed(elapsed)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC);
                        let Some(next) = schedule.after(&now).next() else {
                            return false;
                        };
                        let offset = (next - wall_start).to_std().unwrap_or_default();
                        let Some(deadline) = start.checked_add(offset) else {
                            return false;
                        };
                        tokio::time::sleep_until(deadline).await;
                        true
                    }
                    (None, Kind::Interval(_)) => false,
                }
            };
            let fire = tokio::select! {
                biased;
                _ = stop.requested() => false,
                fire = wait => fire,
            };
            if !fire {
                break;
            }
            n += 1;
            tick(n).await;
        }
    }
}
