//! Configuration of the memory provider.

use event_core::{Error, Result};
use std::time::Duration;

/// Basic configuration, as in the original `a3s-event` README.
///
/// ```
/// use event_memory::{MemoryConfig, MemoryProvider};
///
/// let provider = MemoryProvider::new(MemoryConfig {
///     subject_prefix: "events".to_string(),
///     max_events: 100_000,
///     channel_capacity: 10_000,
/// })?;
/// # Ok::<(), event_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// The tokens every subject starts with (`"events"`; several, such as
    /// `"acme.events"`, as on NATS): subjects are
    /// `{subject_prefix}.{category}.{topic}`. No wildcards, no empty
    /// tokens.
    pub subject_prefix: String,
    /// Events kept; the oldest is evicted beyond this. Each eviction visits
    /// every consumer the provider tracks (live subscriptions, and durables
    /// until they are unsubscribed, read or not): O(consumers) per publish
    /// once the store is full (see the crate docs).
    pub max_events: usize,
    /// Kept from the original configuration (which sized a broadcast
    /// channel with it) and validated to be non-zero. Subscriptions here,
    /// ephemeral or durable, read the stored log, so none is cut off while
    /// its events are still stored; a subscription that retention
    /// (`max_events`) overtakes gets [`Error::Lagged`] with the number of
    /// events it missed.
    pub channel_capacity: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            subject_prefix: "events".to_string(),
            max_events: 100_000,
            channel_capacity: 10_000,
        }
    }
}

/// Limits beyond [`MemoryConfig`], with production-sane defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Largest encoded event accepted (bytes), an explicit
    /// [`PublishOptions::msg_id`](event_core::PublishOptions::msg_id)
    /// included. Default 1 MiB, as NATS.
    pub max_payload: usize,
    /// How long a dedup id is remembered; must be non-zero. Default 2
    /// minutes, as JetStream.
    ///
    /// Zero is refused because it would switch dedup off; a tiny window (1
    /// ns, or anything shorter than your publishers' retry horizon) is
    /// accepted and in effect switches it off too, as a retry then comes
    /// after the id was forgotten. Nothing checks for that: size it to
    /// cover your retries.
    pub duplicate_window: Duration,
    /// Most dedup ids remembered at once; the oldest is forgotten first.
    /// Default 100,000.
    ///
    /// Memory: the window is held in full once a publisher reaches it (at
    /// the default 2-minute window, from about 830 publishes a second).
    /// At the default a full window holds at most 120 bytes per id (ids
    /// over 46 bytes, such as long explicit msg ids, add their length):
    /// about 11 MB. Other sizes cost up to about twice as much per id just
    /// past a power of two, as the tables grow by doubling. A service that
    /// publishes little, or has little memory, can lower it; a repeat
    /// older than the last `max_dedup_entries` publishes is then stored
    /// again. Zero is refused (it would switch dedup off), but a very low
    /// value (1 remembers only the latest id) in effect switches it off for
    /// any publisher whose retry comes after another publish; nothing checks
    /// for that.
    pub max_dedup_entries: usize,
    /// Encoded bytes of stored events kept (what
    /// [`ProviderInfo::bytes`](event_core::ProviderInfo::bytes) reports);
    /// beyond it the oldest events are evicted, as beyond `max_events`, and
    /// a consumer they overtake gets [`Error::Lagged`]. 0, the default: no
    /// byte limit (as NATS's `max_bytes`). When set, at least `max_payload`,
    /// so that every event accepted fits.
    ///
    /// This bounds memory where `max_events` alone does not (events of up
    /// to `max_payload` each). The process holds each event as an
    /// [`Event`](event_core::Event) with its payload parsed into a
    /// `serde_json::Value`, several times its encoded size (measured: about
    /// 7× for a payload of 40 numbers, about 1.1× for one long string), so
    /// size it from the memory you can give the store divided by your
    /// payloads' factor.
    pub max_bytes: u64,
    /// Ack wait when a subscription does not set one. Default 30 s.
    pub default_ack_wait: Duration,
    /// Unacknowledged deliveries per consumer when a subscription does not
    /// set `max_ack_pending`. Default 1,000.
    pub default_max_ack_pending: u64,
    /// Name reported as [`ReceivedEvent::stream`](event_core::ReceivedEvent::stream).
    /// Default `"memory"`.
    pub stream_name: String,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            max_payload: 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
            max_dedup_entries: 100_000,
            max_bytes: 0,
            default_ack_wait: Duration::from_secs(30),
            default_max_ack_pending: 1_000,
            stream_name: "memory".to_string(),
        }
    }
}

pub(crate) fn validate(config: &MemoryConfig, limits: &MemoryLimits) -> Result<()> {
    // the prefix is checked as one or more literal subject tokens (the
    // rules of a topic); the message names the prefix, not a topic
    event_core::subject::validate_topic(&config.subject_prefix).map_err(|e| {
        let reason = match e {
            Error::InvalidSubject { reason, .. } => reason.replace("topic", "prefix"),
            other => other.to_string(),
        };
        Error::invalid_config(
            "subject_prefix",
            format!(
                "{:?} is not a usable prefix (one or more subject tokens): {reason}",
                config.subject_prefix
            ),
        )
    })?;
    let positive = [
        ("max_events", config.max_events),
        ("channel_capacity", config.channel_capacity),
        ("max_payload", limits.max_payload),
        ("max_dedup_entries", limits.max_dedup_entries),
    ];
    for (field, value) in positive {
        if value == 0 {
            return Err(Error::invalid_config(field, "must be greater than zero"));
        }
    }
    // zero would expire every id at once: deduplication silently off
    if limits.duplicate_window.is_zero() {
        return Err(Error::invalid_config(
            "duplicate_window",
            "must be greater than zero",
        ));
    }
    if limits.default_ack_wait.is_zero() {
        return Err(Error::invalid_config(
            "default_ack_wait",
            "must be greater than zero",
        ));
    }
    if limits.default_max_ack_pending == 0 {
        return Err(Error::invalid_config(
            "default_max_ack_pending",
            "must be greater than zero",
        ));
    }
    if limits.max_bytes != 0 && limits.max_bytes < limits.max_payload as u64 {
        return Err(Error::invalid_config(
            "max_bytes",
            format!(
                "{} is below max_payload ({}): an event of the largest size accepted would not \
                 fit; raise it, or 0 for no byte limit",
                limits.max_bytes, limits.max_payload
            ),
        ));
    }
    if limits.stream_name.is_empty() {
        return Err(Error::invalid_config("stream_name", "must not be empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_are_config_errors() {
        let limits = MemoryLimits::default();
        for config in [
            MemoryConfig {
                max_events: 0,
                ..MemoryConfig::default()
            },
            MemoryConfig {
                channel_capacity: 0,
                ..MemoryConfig::default()
            },
            MemoryConfig {
                subject_prefix: String::new(),
                ..MemoryConfig::default()
            },
            MemoryConfig {
                subject_prefix: "a..b".into(),
                ..MemoryConfig::default()
            },
            MemoryConfig {
                subject_prefix: "a.*".into(),
                ..MemoryConfig::default()
            },
            MemoryConfig {
                subject_prefix: "*".into(),
                ..MemoryConfig::default()
            },
        ] {
            assert!(
                matches!(validate(&config, &limits), Err(Error::InvalidConfig { .. })),
                "{config:?}"
            );
        }
        let config = MemoryConfig::default();
        for limits in [
            MemoryLimits {
                max_payload: 0,
                ..MemoryLimits::default()
            },
            MemoryLimits {
                max_dedup_entries: 0,
                ..MemoryLimits::default()
            },
            MemoryLimits {
                default_ack_wait: Duration::ZERO,
                ..MemoryLimits::default()
            },
            MemoryLimits {
                default_max_ack_pending: 0,
                ..MemoryLimits::default()
            },
            MemoryLimits {
                stream_name: String::new(),
                ..MemoryLimits::default()
            },
            MemoryLimits {
                max_payload: 1000,
                max_bytes: 999,
                ..MemoryLimits::default()
            },
        ] {
            assert!(validate(&config, &limits).is_err(), "{limits:?}");
        }
        validate(&MemoryConfig::default(), &MemoryLimits::default()).unwrap();
        // a prefix of several tokens is fine, as on NATS
        for prefix in ["a.b", "acme.events.v1"] {
            let config = MemoryConfig {
                subject_prefix: prefix.into(),
                ..MemoryConfig::default()
            };
            validate(&config, &limits).unwrap();
        }
        // a bad prefix is named as the prefix, not as a subject's topic
        for prefix in ["", "a b", "a..b", ".a", "a.", ">", "a.>"] {
            let config = MemoryConfig {
                subject_prefix: prefix.into(),
                ..MemoryConfig::default()
            };
            let err = validate(&config, &limits).unwrap_err().to_string();
            assert!(err.contains(&format!("{prefix:?}")), "{err}");
            assert!(
                err.contains("prefix") && !err.contains("topic") && !err.contains("category"),
                "{err}"
            );
        }
        // a byte limit that holds one event of the largest size is fine
        validate(
            &MemoryConfig::default(),
            &MemoryLimits {
                max_payload: 1000,
                max_bytes: 1000,
                ..MemoryLimits::default()
            },
        )
        .unwrap();
    }
}
