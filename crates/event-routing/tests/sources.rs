//! Sources: cron expressions and intervals on a paused clock, graceful
//! shutdown, metrics polling.

#![allow(clippy::unwrap_used)] // test helpers

use async_trait::async_trait;
use event_core::{Error, Event, Result};
use event_routing::{
    CollectorSink, CronSource, EventSink, EventSource, FailingSink, InProcessSink, MetricSample,
    MetricsPoller, MetricsSource, Schedule,
};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

fn tick_event(tick: u64) -> Event {
    Event::new(
        "events.system.tick",
        "system",
        format!("tick {tick}"),
        "cron",
        json!({"tick": tick}),
    )
}

/// A sink recording when (on Tokio's clock) each event arrived.
fn timing_sink(times: Arc<parking_lot::Mutex<Vec<Instant>>>) -> Arc<InProcessSink> {
    Arc::new(InProcessSink::new("timing", move |_| {
        let times = times.clone();
        async move {
            times.lock().push(Instant::now());
            Ok(())
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn interval_source_fires_every_period_and_stops() {
    let source = CronSource::every("every-10s", Duration::from_secs(10), tick_event).unwrap();
    let sink = Arc::new(CollectorSink::new("c"));
    let start = Instant::now();
    source.start(sink.clone()).await.unwrap();
    assert!(source.is_running());
    tokio::time::sleep(Duration::from_secs(45)).await;
    source.stop().await.unwrap();
    assert!(!source.is_running());
    let ticks: Vec<_> = sink
        .events()
        .iter()
        .map(|e| e.payload["tick"].as_u64().unwrap())
        .collect();
    assert_eq!(ticks, [1, 2, 3, 4]);
    assert_eq!(source.emitted(), 4);
    // Stopped: nothing more arrives.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sink.len(), 4);
    assert!(start.elapsed() >= Duration::from_secs(105));
}

#[tokio::test(start_paused = true)]
async fn cron_source_fires_on_the_expression() {
    // Every 10 seconds (six-field form with seconds).
    let source = CronSource::cron("cron", "*/10 * * * * *", tick_event).unwrap();
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    source.start(timing_sink(times.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    source.stop().await.unwrap();
    let times = times.lock().clone();
    // Any 60 s window holds exactly six multiples of 10 s.
    assert_eq!(times.len(), 6, "{times:?}");
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(10));
    }
}

#[tokio::test(start_paused = true)]
async fn five_field_cron_fires_each_minute_at_second_zero() {
    let source = CronSource::cron("minutely", "* * * * *", tick_event).unwrap();
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    source.start(timing_sink(times.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    source.stop().await.unwrap();
    let times = times.lock().clone();
    assert_eq!(times.len(), 5);
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(60));
    }
}

#[test]
fn schedules_validate_their_input() {
    assert!(matches!(
        CronSource::every("zero", Duration::ZERO, tick_event),
        Err(Error::InvalidConfig { .. })
    ));
    for bad in ["", "every minute", "61 * * * * *", "* * *", "@fortnightly"] {
        assert!(
            matches!(Schedule::cron(bad), Err(Error::InvalidConfig { .. })),
            "{bad:?} accepted"
        );
    }
    let daily = Schedule::cron("@daily").unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(
        daily.next_after(at).unwrap().to_rfc3339(),
        "2026-01-02T00:00:00+00:00"
    );
    let weekdays = Schedule::cron("30 9 * * MON-FRI").unwrap();
    // 2026-01-02 is a Friday: the next one is Monday the 5th.
    let friday_noon = chrono::DateTime::parse_from_rfc3339("2026-01-02T12:00:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(
        weekdays.next_after(friday_noon).unwrap().to_rfc3339(),
        "2026-01-05T09:30:00+00:00"
    );
}

#[test]
fn cron_expressions_that_never_fire_are_refused() {
    // Valid syntax, but no such day (or only days in the past): accepted,
    // such a source started and ended at once without a word.
    for never in [
        "0 0 30 2 *",       // 30 February
        "0 0 31 4 *",       // 31 April
        "0 0 0 31 11 * *",  // 31 November
        "0 0 0 1 1 * 2020", // only in 2020
    ] {
        let err = Schedule::cron(never).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { reason, .. } if reason.contains("never fires")),
            "{never:?}: {err:?}"
        );
    }
    // Rare is fine: 29 February.
    assert!(Schedule::cron("0 0 29 2 *").is_ok());
}

#[tokio::test]
async fn an_interval_too_long_to_schedule_is_refused_not_a_panicking_source() {
    // `Duration::MAX` ("never") overflowed the first deadline: the source's
    // task panicked and the source silently stopped.
    for period in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        assert!(
            matches!(
                CronSource::every("never", period, tick_event),
                Err(Error::InvalidConfig { .. })
            ),
            "{period:?}"
        );
    }
    // The longest accepted period runs (and is stopped) without a panic.
    let longest = CronSource::every("rare", Schedule::MAX_INTERVAL, tick_event).unwrap();
    longest
        .start(Arc::new(CollectorSink::new("c")))
        .await
        .unwrap();
    tokio::task::yield_now().await;
    assert!(longest.is_running());
    longest.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stop_waits_for_the_emission_in_progress() {
    let source = CronSource::every("slow", Duration::from_secs(1), tick_event).unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(InProcessSink::new("slow", {
        let finished = finished.clone();
        move |_| {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                finished.store(true, Ordering::SeqCst);
                Ok(())
            }
        }
    }));
    source.start(sink).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // delivery in progress
    source.stop().await.unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "stop returned before the delivery completed"
    );
    assert_eq!(source.emitted(), 1);
}

#[tokio::test(start_paused = true)]
async fn start_twice_conflicts_restart_after_stop_works_and_failures_are_counted() {
    let source = CronSource::every("s", Duration::from_secs(1), tick_event).unwrap();
    let failing: Arc<dyn EventSink> = Arc::new(FailingSink::new("f", "down"));
    source.start(failing.clone()).await.unwrap();
    assert!(matches!(
        source.start(failing).await,
        Err(Error::Conflict { .. })
    ));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    source.stop().await.unwrap();
    assert_eq!((source.emitted(), source.failures()), (0, 3));
    source.stop().await.unwrap(); // no-op

    let sink = Arc::new(CollectorSink::new("c"));
    source.start(sink.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    source.stop().await.unwrap();
    assert_eq!(sink.len(), 2);
}

struct Gauges;

#[async_trait]
impl MetricsSource for Gauges {
    fn name(&self) -> &str {
        "gauges"
    }
    async fn collect(&self) -> Result<Vec<MetricSample>> {
        Ok(vec![
            MetricSample::new("in_flight", 3.0).with_label("route", "/orders"),
            MetricSample::new("cpu", 42.5),
        ])
    }
}

/// Under a provider prefix of two tokens, told it, the poller's events
/// have the category after the prefix (`metrics`), not the prefix's
/// second token (`events`); a subject not under it is refused.
#[test]
fn metrics_poller_under_a_two_token_prefix_takes_the_category_after_it() {
    let poller = MetricsPoller::new(
        Arc::new(Gauges),
        Schedule::every(Duration::from_secs(15)).unwrap(),
        "acme.events.metrics.gauges",
    )
    .unwrap()
    .with_provider_prefix("acme.events")
    .unwrap();
    let event = poller.event(&[MetricSample::new("cpu", 1.0)]);
    assert_eq!(event.subject, "acme.events.metrics.gauges");
    assert_eq!(event.category, "metrics");
    for (subject, prefix) in [
        ("acme.events.metrics", "acme.events"),
        ("other.events.metrics.gauges", "acme.events"),
        ("acme.events.metrics.gauges", "acme.*"),
    ] {
        let poller = MetricsPoller::new(
            Arc::new(Gauges),
            Schedule::every(Duration::from_secs(15)).unwrap(),
            subject,
        )
        .unwrap();
        assert!(
            poller.with_provider_prefix(prefix).is_err(),
            "{subject} under {prefix}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_poller_emits_samples_on_schedule() {
    let poller = MetricsPoller::new(
        Arc::new(Gauges),
        Schedule::every(Duration::from_secs(15)).unwrap(),
        "events.metrics.gauges",
    )
    .unwrap();
    let sink = Arc::new(CollectorSink::new("c"));
    poller.start(sink.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    poller.stop().await.unwrap();
    let events = sink.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_type, MetricsPoller::EVENT_TYPE);
    assert_eq!(events[0].category, "metrics");
    assert_eq!(events[0].source, "gauges");
    assert_eq!(
        events[0].payload,
        json!({"samples": [
            {"name": "in_flight", "value": 3.0, "labels": {"route": "/orders"}},
            {"name": "cpu", "value": 42.5}
        ]})
    );
    assert!(
        MetricsPoller::new(
            Arc::new(Gauges),
            Schedule::every(Duration::from_secs(1)).unwrap(),
            "events.>"
        )
        .is_err()
    );
}

/// Panics on its first call, succeeds after.
fn panicking_once_sink(sink: Arc<CollectorSink>) -> Arc<InProcessSink> {
    let panicked = Arc::new(AtomicBool::new(false));
    Arc::new(InProcessSink::new("panics once", move |event| {
        let (sink, panicked) = (sink.clone(), panicked.clone());
        async move {
            assert!(panicked.swap(true, Ordering::SeqCst), "sink bug");
            sink.deliver(&event).await
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn a_panicking_sink_or_factory_is_a_failed_emission_not_a_dead_source() {
    // A panic in the sink ended the source's task: no more emissions, ever,
    // and nothing counted.
    let sink = Arc::new(CollectorSink::new("c"));
    let source = CronSource::every("s", Duration::from_secs(1), tick_event).unwrap();
    source
        .start(panicking_once_sink(sink.clone()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(source.is_running());
    source.stop().await.unwrap();
    assert_eq!((source.emitted(), source.failures()), (2, 1));
    assert_eq!(sink.len(), 2);

    // The same for a factory that panics on one tick.
    let sink = Arc::new(CollectorSink::new("c"));
    let source = CronSource::every("f", Duration::from_secs(1), |tick| {
        assert_ne!(tick, 2, "factory bug");
        tick_event(tick)
    })
    .unwrap();
    source.start(sink.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(source.is_running());
    source.stop().await.unwrap();
    assert_eq!((source.emitted(), source.failures()), (2, 1));

    // And for a metrics poller.
    let sink = Arc::new(CollectorSink::new("c"));
    let poller = MetricsPoller::new(
        Arc::new(Gauges),
        Schedule::every(Duration::from_secs(1)).unwrap(),
        "events.metrics.gauges",
    )
    .unwrap();
    poller
        .start(panicking_once_sink(sink.clone()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(poller.is_running());
    poller.stop().await.unwrap();
    assert_eq!(sink.len(), 2);
}

fn at(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .to_utc()
}

fn next(expression: &str, after: &str) -> String {
    Schedule::cron(expression)
        .unwrap_or_else(|e| panic!("{expression:?}: {e}"))
        .next_after(at(after))
        .unwrap()
        .to_rfc3339()
}

/// The classic five-field form means what crontab(5) says: day of week 0-7
/// with 0 and 7 Sunday (not the six-field form's 1 = Sunday), and a day of
/// month and a day of week both restricted fire on either.
#[test]
fn five_field_cron_has_crontab_day_of_week_semantics() {
    // 2026-01-03 is a Saturday.
    let saturday = "2026-01-03T12:00:00Z";
    // 1-5 is Monday to Friday, as MON-FRI.
    assert_eq!(next("30 9 * * 1-5", saturday), "2026-01-05T09:30:00+00:00");
    assert_eq!(
        next("30 9 * * 1-5", "2026-01-09T12:00:00Z"),
        "2026-01-12T09:30:00+00:00"
    );
    // 0 and 7 are Sunday.
    assert_eq!(next("0 0 * * 0", saturday), "2026-01-04T00:00:00+00:00");
    assert_eq!(next("0 0 * * 7", saturday), "2026-01-04T00:00:00+00:00");
    // Steps and lists: Monday, Wednesday, Friday.
    assert_eq!(next("0 0 * * 1-5/2", saturday), "2026-01-05T00:00:00+00:00");
    assert_eq!(
        next("0 0 * * 1-5/2", "2026-01-05T12:00:00Z"),
        "2026-01-07T00:00:00+00:00"
    );
    assert_eq!(next("0 0 * * 2,4", saturday), "2026-01-06T00:00:00+00:00");
    // Every third day from Sunday: Sunday, Wednesday, Saturday.
    assert_eq!(next("0 0 * * */3", saturday), "2026-01-04T00:00:00+00:00");
    assert_eq!(
        next("0 0 * * */3", "2026-01-04T12:00:00Z"),
        "2026-01-07T00:00:00+00:00"
    );
    // Names still work; 5-7 is Friday to Sunday.
    assert_eq!(
        next("0 0 * * fri-sun", saturday),
        "2026-01-04T00:00:00+00:00"
    );
    assert_eq!(next("0 0 * * 5-7", saturday), "2026-01-04T00:00:00+00:00");
    // Day of month OR day of week when both are restricted: the 13th or
    // any Friday (Friday the 9th comes first), not only Friday the 13th.
    assert_eq!(next("0 0 13 * 5", saturday), "2026-01-09T00:00:00+00:00");
    assert_eq!(
        next("0 0 13 * 5", "2026-01-09T12:00:00Z"),
        "2026-01-13T00:00:00+00:00"
    );
    // A `*` day of month leaves the day of week alone in charge.
    assert_eq!(next("0 0 * 2 MON", saturday), "2026-02-02T00:00:00+00:00");
    // Across a year boundary, with months.
    assert_eq!(
        next("0 0 1 JAN 0", "2026-12-31T00:00:00Z"),
        "2027-01-01T00:00:00+00:00"
    );
    for bad in [
        "0 0 * * 8",
        "0 0 * * 5-2",
        "0 0 * * 1/0",
        "0 0 * * MON-",
        "0 0 * * ,",
    ] {
        assert!(
            matches!(Schedule::cron(bad), Err(Error::InvalidConfig { .. })),
            "{bad:?} accepted"
        );
    }
}

/// A gauge with no value yet (NaN, as Prometheus clients report an empty
/// summary's quantiles) or an infinite one reads back from the emitted
/// event as it was: JSON has no such numbers, so they must not turn into a
/// `null` that no `MetricSample` can be read from.
#[test]
fn non_finite_samples_read_back_from_the_event() {
    struct NonFinite;
    #[async_trait]
    impl MetricsSource for NonFinite {
        fn name(&self) -> &str {
            "non-finite"
        }
        async fn collect(&self) -> Result<Vec<MetricSample>> {
            Ok(Vec::new())
        }
    }
    let poller = MetricsPoller::new(
        Arc::new(NonFinite),
        Schedule::every(Duration::from_secs(1)).unwrap(),
        "events.metrics.gauges",
    )
    .unwrap();
    let samples = vec![
        MetricSample::new("p99", f64::NAN),
        MetricSample::new("up", f64::INFINITY),
        MetricSample::new("down", f64::NEG_INFINITY),
        MetricSample::new("cpu", 0.5),
    ];
    let event = poller.event(&samples);
    // as a consumer reads it, after the event went through a provider
    let stored: event_core::Event =
        serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
    let back: Vec<MetricSample> =
        serde_json::from_value(stored.payload["samples"].clone()).unwrap();
    assert_eq!(back.len(), 4);
    assert!(back[0].value.is_nan());
    assert_eq!(back[1].value, f64::INFINITY);
    assert_eq!(back[2].value, f64::NEG_INFINITY);
    assert_eq!(back[3], samples[3]);
    // written by earlier versions: `null`; integers; anything else refused
    let old: MetricSample = serde_json::from_value(json!({"name": "p99", "value": null})).unwrap();
    assert!(old.value.is_nan());
    let int: MetricSample = serde_json::from_value(json!({"name": "n", "value": 3})).unwrap();
    assert_eq!(int.value, 3.0);
    assert!(serde_json::from_value::<MetricSample>(json!({"name": "n", "value": "lots"})).is_err());
}

#[tokio::test(start_paused = true)]
async fn every_stop_call_waits_for_the_emission_in_progress() {
    // A second stop (concurrent, or after one given up on) returned at once
    // while the first was still waiting for the emission: a caller tearing
    // down the sink then lost it, and the source could be started twice.
    let source = Arc::new(CronSource::every("slow", Duration::from_secs(1), tick_event).unwrap());
    let finished = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(InProcessSink::new("slow", {
        let finished = finished.clone();
        move |_| {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                finished.store(true, Ordering::SeqCst);
                Ok(())
            }
        }
    }));
    source.start(sink.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // delivery in progress
    let first = tokio::spawn({
        let source = source.clone();
        async move { source.stop().await }
    });
    tokio::task::yield_now().await; // the first stop has begun
    assert!(source.is_running(), "the emission is still in progress");
    assert!(matches!(
        source.start(sink.clone()).await,
        Err(Error::Conflict { .. })
    ));
    source.stop().await.unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "the second stop returned before the delivery completed"
    );
    first.await.unwrap().unwrap();

    // A stop given up on (a timeout), then called again.
    finished.store(false, Ordering::SeqCst);
    source.start(sink).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), source.stop())
            .await
            .is_err()
    );
    source.stop().await.unwrap();
    assert!(finished.load(Ordering::SeqCst));
    assert!(!source.is_running());
    assert_eq!(source.emitted(), 2);
}

/// Periods and cron times longer than Tokio's timer wheel spans (about
/// 2.2 years) fire at their time, not early at the wheel's horizon.
#[tokio::test(start_paused = true)]
async fn schedules_beyond_the_timer_wheel_fire_on_time_not_early() {
    const YEAR: Duration = Duration::from_secs(365 * 86_400);
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let start = Instant::now();
    let longest = CronSource::every("rare", Schedule::MAX_INTERVAL, tick_event).unwrap();
    longest.start(timing_sink(times.clone())).await.unwrap();
    tokio::time::sleep(Schedule::MAX_INTERVAL + Duration::from_secs(1)).await;
    longest.stop().await.unwrap();
    assert_eq!(
        times.lock().iter().map(|t| *t - start).collect::<Vec<_>>(),
        [Schedule::MAX_INTERVAL],
        "fired at the wrong times"
    );

    // a cron time years ahead (a year field)
    let year = chrono::Datelike::year(&chrono::Utc::now()) + 4;
    let expression = format!("0 0 0 1 1 * {year}");
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let wall_start = chrono::Utc::now();
    let far_start = Instant::now();
    let far = CronSource::cron("far", &expression, tick_event).unwrap();
    far.start(timing_sink(times.clone())).await.unwrap();
    tokio::time::sleep(5 * YEAR).await;
    far.stop().await.unwrap();
    let due = Schedule::cron(&expression)
        .unwrap()
        .next_after(wall_start)
        .unwrap();
    let due = (due - wall_start).to_std().unwrap();
    let fired: Vec<Duration> = times.lock().iter().map(|t| *t - far_start).collect();
    assert_eq!(fired.len(), 1, "{fired:?}, due after {due:?}");
    // the source read the wall clock a moment after `wall_start`, and
    // Tokio's timer rounds up to its millisecond
    assert!(
        fired[0].abs_diff(due) < Duration::from_secs(1),
        "fired after {:?}, due after {due:?}",
        fired[0]
    );
}

/// An emission longer than the period skips the ticks it overran, as the
/// docs say: the next starts at the next period boundary, not at once
/// (a late tick fired on the spot put slow emissions back to back, a
/// 25 s metrics poll on a 10 s schedule polled without a pause).
#[tokio::test(start_paused = true)]
async fn ticks_overrun_by_a_long_emission_are_skipped_not_fired_late() {
    let secs = emission_starts(Duration::from_secs(25), Duration::from_secs(105)).await;
    assert_eq!(secs, [10, 40, 70, 100]);
}

/// An emission that takes exactly one period ends on the next boundary:
/// that tick is due, not overrun, and fires then (taking only boundaries
/// strictly after the end skipped it: 10, 30, 50 instead of 10, 20, 30).
#[tokio::test(start_paused = true)]
async fn an_emission_ending_on_the_next_boundary_does_not_skip_it() {
    let secs = emission_starts(Duration::from_secs(10), Duration::from_secs(55)).await;
    assert_eq!(secs, [10, 20, 30, 40, 50]);
}

/// Seconds (since start) at which a 10 s interval source's emissions
/// started, each taking `emission`, over `run_for` of Tokio's clock.
async fn emission_starts(emission: Duration, run_for: Duration) -> Vec<u64> {
    let starts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let start = Instant::now();
    let slow = Arc::new(InProcessSink::new("slow", {
        let starts = starts.clone();
        move |_| {
            let starts = starts.clone();
            async move {
                starts.lock().push(Instant::now() - start);
                tokio::time::sleep(emission).await;
                Ok(())
            }
        }
    }));
    let source = CronSource::every("every-10s", Duration::from_secs(10), tick_event).unwrap();
    source.start(slow).await.unwrap();
    tokio::time::sleep(run_for).await;
    source.stop().await.unwrap();
    starts.lock().iter().map(Duration::as_secs).collect()
}

/// A cron source's emission that takes exactly its period ends on the next
/// fire time: that one is due, not overrun, and fires then, as an interval
/// source's does (`every` says so). Taking only times strictly after the
/// end skipped it: starts 20 s apart on a 10 s schedule (2.8, 22.8, 42.8,
/// 62.8 s).
#[tokio::test(start_paused = true)]
async fn a_cron_emission_ending_on_the_next_fire_time_does_not_skip_it() {
    let starts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let slow = Arc::new(InProcessSink::new("slow", {
        let starts = starts.clone();
        move |_| {
            let starts = starts.clone();
            async move {
                starts.lock().push(Instant::now());
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            }
        }
    }));
    let source = CronSource::cron("every-10s", "*/10 * * * * *", tick_event).unwrap();
    source.start(slow).await.unwrap();
    tokio::time::sleep(Duration::from_secs(65)).await;
    source.stop().await.unwrap();
    let starts = starts.lock().clone();
    // any 65 s window holds six or seven multiples of 10 s
    assert!(starts.len() >= 6, "{starts:?}");
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        // (a fire time's tick comes up to Tokio's 1 ms resolution late)
        assert!(
            gap > Duration::from_millis(9_998) && gap < Duration::from_millis(10_002),
            "{starts:?}"
        );
    }
}
