//! When a source fires.

use super::lifecycle::StopSignal;
use chrono::{DateTime, Utc};
use event_core::{Error, Result};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use tokio::time::Instant;

/// When a scheduled source fires: a fixed interval or a cron expression.
///
/// Cron expressions take three forms. Times are UTC.
///
/// - The classic five fields of crontab(5), `min hour dom month dow`,
///   firing at second 0, with crontab's meaning: day of week `0`-`7` (`0`
///   and `7` are Sunday, `1-5` is Monday to Friday) or names, and when both
///   the day of month and the day of week are restricted (neither starts
///   with `*`), a day matching **either** fires (`0 0 13 * 5`: every 13th
///   and every Friday).
/// - Six or seven fields (`sec min hour day-of-month month day-of-week
///   [year]`) in the [`cron`](https://docs.rs/cron) crate's (Quartz-like)
///   syntax: there, numeric days of week count from `1` (Sunday), and both
///   day fields must match. Prefer day names (`MON-FRI`).
/// - `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` (lowercase).
///
/// A running source reads the wall clock once, when it starts, and counts
/// from there on Tokio's monotonic clock (so a paused test clock drives it,
/// and a jump of the wall clock never fires a burst or skips a stretch).
/// The other side of this: a step of the wall clock after the start (an
/// NTP correction, a resumed virtual machine, a suspend, which the
/// monotonic clock does not count) shifts every later fire by that step
/// until the source is restarted. Restart long-running cron sources after
/// such a correction.
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
    /// Fires at the earliest next time of any of them (crontab's day of
    /// month OR day of week takes two).
    Cron(Box<[cron::Schedule]>),
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A crontab(5) day of week: `0`-`7` (`0` and `7` Sunday) or a name (its
/// first three letters or more: `mon`, `tues`, `thursday`).
fn crontab_day(token: &str) -> Option<usize> {
    if let Ok(n) = token.parse::<usize>() {
        return (n <= 7).then_some(n);
    }
    const FULL: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let lower = token.to_ascii_lowercase();
    if lower.len() < 3 {
        return None;
    }
    FULL.iter().position(|full| full.starts_with(&lower))
}

/// A crontab(5) day-of-week field (lists, ranges, steps, numbers 0-7 and
/// names) as a list of day names, which the `cron` crate reads the same
/// way. `None` if it is not a valid field.
fn crontab_days_of_week(field: &str) -> Option<String> {
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<usize>().ok().filter(|&s| s > 0)?),
            None => (item, 1),
        };
        let (first, last) = if range == "*" {
            (0, 7)
        } else if let Some((a, b)) = range.split_once('-') {
            // `5-7` and `fri-sun` are Friday to Sunday.
            let last = match crontab_day(b)? {
                0 if b.parse::<usize>().is_err() => 7,
                d => d,
            };
            (crontab_day(a)?, last)
        } else {
            let day = crontab_day(range)?;
            // `a/step`: from `a` to the end of the week.
            (day, if item.contains('/') { 7 } else { day })
        };
        if first > last {
            return None;
        }
        for day in (first..=last).step_by(step) {
            days[day % 7] = true;
        }
    }
    let names: Vec<&str> = DAY_NAMES
        .iter()
        .zip(days)
        .filter_map(|(name, on)| on.then_some(*name))
        .collect();
    Some(names.join(","))
}

impl Schedule {
    /// The longest interval [`every`](Self::every) accepts: 10 years (of
    /// 365 days). Longer ones may not fit the monotonic clock's arithmetic
    /// (on some platforms a deadline 100 years ahead overflows it).
    pub const MAX_INTERVAL: Duration = Duration::from_secs(10 * 365 * 86_400);

    /// Fires every `period`, first after one period. A zero period, or one
    /// over [`MAX_INTERVAL`](Self::MAX_INTERVAL), is [`Error::InvalidConfig`].
    /// Ticks missed while an emission ran long are skipped, not bunched up:
    /// the next emission starts on the first boundary (`start + k * period`)
    /// not before the long one ended (at once when it ended on one), as a
    /// cron schedule's does.
    pub fn every(period: Duration) -> Result<Self> {
        if period.is_zero() {
            return Err(Error::invalid_config(
                "schedule.interval",
                "the interval must be greater than zero",
            ));
        }
        if period > Self::MAX_INTERVAL {
            return Err(Error::invalid_config(
                "schedule.interval",
                format!("{period:?} is longer than the maximum, 10 years"),
            ));
        }
        Ok(Self(Kind::Interval(period)))
    }

    /// Fires at the times the cron expression `expression` names (see the
    /// type docs). An invalid expression, or one that names no time from now
    /// on (`0 0 30 2 *`, a year in the past), is [`Error::InvalidConfig`].
    pub fn cron(expression: &str) -> Result<Self> {
        let invalid = |reason: &dyn std::fmt::Display| {
            Error::invalid_config(
                "schedule.cron",
                format!("invalid cron expression {expression:?}: {reason}"),
            )
        };
        let parse = |e: &str| cron::Schedule::from_str(e).map_err(|e| invalid(&e));
        let trimmed = expression.trim();
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let schedules = match fields.as_slice() {
            [min, hour, dom, month, dow] if !trimmed.starts_with('@') => {
                let unrestricted = |f: &str| f.starts_with('*') || f == "?";
                let days = if matches!(*dow, "*" | "?") {
                    (*dow).to_owned()
                } else {
                    crontab_days_of_week(dow)
                        .ok_or_else(|| invalid(&format!("bad day of week {dow:?}")))?
                };
                if unrestricted(dom) || unrestricted(dow) {
                    vec![parse(&format!("0 {min} {hour} {dom} {month} {days}"))?]
                } else {
                    // crontab(5): either day field matching is enough.
                    vec![
                        parse(&format!("0 {min} {hour} {dom} {month} *"))?,
                        parse(&format!("0 {min} {hour} * {month} {days}"))?,
                    ]
                }
            }
            _ => vec![parse(trimmed)?],
        };
        if next_cron(&schedules, &Utc::now()).is_none() {
            return Err(invalid(&"it never fires (no such date from now on)"));
        }
        Ok(Self(Kind::Cron(schedules.into_boxed_slice())))
    }

    /// The first fire time strictly after `after` (`None` when a cron
    /// schedule has no more, or for an interval, which has no wall-clock
    /// times).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.0 {
            Kind::Interval(_) => None,
            Kind::Cron(s) => next_cron(s, &after),
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
        let mut n = 0u64;
        // for an interval: the last boundary (k of `start + k * period`)
        // fired
        let mut boundary = 0u128;
        // for a cron schedule: the last time fired
        let mut fired: Option<DateTime<Utc>> = None;
        loop {
            let mut next_boundary = boundary;
            let mut next_fired = fired;
            let wait = async {
                let deadline = match &self.0 {
                    Kind::Interval(period) => {
                        next_interval(start, *period, boundary).map(|(k, deadline)| {
                            next_boundary = k;
                            deadline
                        })
                    }
                    Kind::Cron(schedule) => {
                        let elapsed = chrono::Duration::from_std(start.elapsed())
                            .unwrap_or(chrono::Duration::MAX);
                        let now = wall_start
                            .checked_add_signed(elapsed)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC);
                        // the first time not yet fired and not yet past: a
                        // time reached right now is due (an emission that
                        // ended on it does not skip it), as for an interval.
                        // "Now" within Tokio's timer resolution (1 ms): a
                        // fire time has a wall clock's fraction of a second
                        // on the monotonic clock, and its tick, rounded up
                        // to the millisecond, fires that much after it.
                        let due = now
                            .checked_sub_signed(chrono::TimeDelta::milliseconds(1))
                            .unwrap_or(now);
                        let after = fired.map_or(due, |fired| fired.max(due));
                        next_cron(schedule, &after).and_then(|next| {
                            next_fired = Some(next);
                            start.checked_add((next - wall_start).to_std().unwrap_or_default())
                        })
                    }
                };
                let Some(deadline) = deadline else {
                    return false;
                };
                tokio::time::sleep_until(deadline).await;
                true
            };
            let fire = tokio::select! {
                biased;
                _ = stop.requested() => false,
                fire = wait => fire,
            };
            if !fire {
                break;
            }
            boundary = next_boundary;
            fired = next_fired;
            n += 1;
            tick(n).await;
        }
    }
}

/// The first boundary `start + k * period` (k = 1, 2, ...) not yet fired
/// (k above `fired`) and not yet past: the ticks an emission overran are
/// skipped, and the next fires on the period's boundary (a tick fired late,
/// at once, would put slow emissions back to back), while a boundary reached
/// right now is due and fires at once (an emission that took exactly one
/// period does not skip the next). Returns k with its time; `None` past what
/// an `Instant` holds.
fn next_interval(start: Instant, period: Duration, fired: u128) -> Option<(u128, Instant)> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let period = period.as_nanos(); // not zero: `every` refuses it
    let k = start
        .elapsed()
        .as_nanos()
        .div_ceil(period)
        .max(fired.checked_add(1)?);
    let offset = k.checked_mul(period)?;
    let secs = u64::try_from(offset / NANOS_PER_SEC).ok()?;
    // the remainder is under a billion
    let nanos = (offset % NANOS_PER_SEC) as u32;
    Some((k, start.checked_add(Duration::new(secs, nanos))?))
}

/// The earliest fire time strictly after `after` of any of `schedules`.
///
/// `None` within a second of the last instant chrono holds: there is no
/// later time, and the `cron` crate, which starts its search a second after
/// `after`, would panic on the overflow.
fn next_cron(schedules: &[cron::Schedule], after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
    after.checked_add_signed(chrono::TimeDelta::seconds(1))?;
    schedules.iter().filter_map(|s| s.after(after).next()).min()
}
