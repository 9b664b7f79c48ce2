//! Seeded random-input hunt over NATS configuration validation (no server
//! needed): URLs, stream names, subject prefixes, limits, durations and
//! nkey seeds. See event-core's `tests/fuzz_support` for the knobs.
#![allow(clippy::unwrap_used)]

#[path = "../../event-core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use event_core::Error;
use event_nats::{NatsConfig, NatsOptions};
use fuzz_support::{Rng, mutate_text, random_string, run};
use std::time::Duration;

fn text(rng: &mut Rng, base: &str) -> String {
    match rng.below(3) {
        0 => base.to_owned(),
        1 => mutate_text(rng, base),
        _ => random_string(rng),
    }
}

fn big(rng: &mut Rng) -> u64 {
    let random = rng.next_u64();
    *rng.pick(&[
        0,
        1,
        60,
        i64::MAX as u64 / 1_000_000_000,
        i64::MAX as u64 / 1_000_000_000 + 1,
        i64::MAX as u64,
        u64::MAX,
        random,
    ])
}

#[test]
fn configs_validate_or_are_refused_with_invalid_config() {
    const URLS: &[&str] = &[
        "nats://127.0.0.1:4222",
        "tls://user:pa@ss@host:4222/x",
        "ws://[::1]:8080",
        "nats://a:4222,nats://b:65536",
        "host",
        "nats://:1",
        "nats://é:1",
    ];
    run("nats/config", 6000, |rng| {
        let base = *rng.pick(URLS);
        let config = NatsConfig {
            url: text(rng, base),
            stream_name: text(rng, "A3S_EVENTS"),
            subject_prefix: text(rng, "events"),
            max_events: big(rng),
            max_age_secs: big(rng),
            max_bytes: big(rng),
            connect_timeout_secs: big(rng),
            request_timeout_secs: big(rng),
            ..NatsConfig::default()
        };
        match config.validate() {
            Ok(()) => {
                assert!(i64::try_from(config.max_events).is_ok());
                assert!(config.connect_timeout_secs > 0);
            }
            Err(Error::InvalidConfig { reason, .. }) => {
                // the password of a well-formed URL is never echoed (in a
                // mangled one, an `@` after the first `/` is path, not
                // credentials)
                if config.url == base && base.contains("pa@ss") {
                    assert!(!reason.contains("pa@ss"), "{reason}");
                }
            }
            Err(other) => panic!("{:?}: {other:?}", config.url),
        }
        let _ = format!("{config:?}");
    });
}

#[test]
fn options_validate_or_are_refused_with_invalid_config() {
    const SEED: &str = "SUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY";
    run("nats/options", 4000, |rng| {
        let options = NatsOptions {
            user: rng.one_in(2).then(|| random_string(rng)),
            password: rng.one_in(2).then(|| random_string(rng)),
            nkey_seed: rng.one_in(2).then(|| text(rng, SEED)),
            duplicate_window: Duration::new(big(rng), (rng.next_u64() % 1_000_000_000) as u32),
            replicas: rng.below(8),
            max_inflight_acks: rng.below(3),
            max_prefetch: rng.below(3),
            ..NatsOptions::default()
        };
        match options.validate() {
            Ok(()) | Err(Error::InvalidConfig { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
        if let (Some(seed), Err(Error::InvalidConfig { field, reason })) =
            (&options.nkey_seed, options.validate())
            && field == "nkey_seed"
            && seed.len() > 8
        {
            assert!(!reason.contains(seed.as_str()), "echoes the seed: {reason}");
        }
    });
}
