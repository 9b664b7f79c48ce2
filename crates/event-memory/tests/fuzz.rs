//! Seeded random-input hunt over the memory provider's configuration: every
//! combination of prefixes, sizes and durations is accepted or refused with
//! `Error::InvalidConfig`, never a panic. See event-core's
//! `tests/fuzz_support` for the knobs.
#![allow(clippy::unwrap_used)]

#[path = "../../event-core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use event_core::{Error, Event, EventProvider};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use fuzz_support::{mutate_text, random_string, run};
use std::time::Duration;

#[tokio::test]
async fn configs_are_accepted_or_refused_with_invalid_config() {
    let mut seeds = Vec::new();
    run("memory/config-seeds", 1500, |rng| {
        seeds.push(rng.next_u64())
    });
    for seed in seeds {
        let mut rng = fuzz_support::Rng::new(seed);
        let size = |rng: &mut fuzz_support::Rng| *rng.pick(&[0usize, 1, 2, 1000, usize::MAX]);
        let duration = |rng: &mut fuzz_support::Rng| {
            *rng.pick(&[
                Duration::ZERO,
                Duration::from_nanos(1),
                Duration::from_secs(120),
                Duration::MAX,
            ])
        };
        let prefix = if rng.one_in(2) {
            mutate_text(&mut rng, "events")
        } else {
            random_string(&mut rng)
        };
        let config = MemoryConfig {
            subject_prefix: prefix.clone(),
            max_events: size(&mut rng),
            channel_capacity: size(&mut rng),
        };
        let limits = MemoryLimits {
            max_payload: size(&mut rng),
            duplicate_window: duration(&mut rng),
            max_dedup_entries: size(&mut rng),
            max_bytes: *rng.pick(&[0u64, 1, 1000, 2000, u64::MAX]),
            default_ack_wait: duration(&mut rng),
            default_max_ack_pending: *rng.pick(&[0u64, 1, u64::MAX]),
            stream_name: random_string(&mut rng),
        };
        match MemoryProvider::with_limits(config, limits) {
            Ok(provider) => {
                // usable: a publish under the prefix works or is refused typed
                let subject = format!("{prefix}.a.b");
                let event = Event::new(subject, "a", "s", "x", serde_json::json!({"k": 1}));
                match provider.publish(&event).await {
                    Ok(seq) => assert_eq!(seq, 1, "seed {seed:#x}"),
                    Err(err) => assert!(
                        matches!(
                            err,
                            Error::PayloadTooLarge { .. } | Error::InvalidSubject { .. }
                        ),
                        "seed {seed:#x}: {err:?}"
                    ),
                }
            }
            Err(err) => assert!(
                matches!(err, Error::InvalidConfig { .. }),
                "seed {seed:#x}: {err:?}"
            ),
        }
    }
}
