//! The pull-consumer configuration for a subscription's options, and the
//! settings read back from a consumer.

use async_nats::jetstream::consumer::{self, AckPolicy, pull};
use event_core::{DeliverPolicy, Error, LONGEST_WAIT, Result, SubscribeOptions};
use std::time::Duration;

#[cfg(doc)]
use event_core::PendingEvent;

/// Default `max_ack_pending` when the options leave it open.
const DEFAULT_MAX_ACK_PENDING: i64 = 1000;

/// The description of every consumer the provider creates with a limited
/// `max_deliver`: it marks the consumer's JetStream `max_deliver` as the
/// subscription's plus one spare delivery (see [`server_max_deliver`]), so
/// that a subscription reading the settings back (another process may have
/// changed them) subtracts it. A consumer without it (made by another
/// client, or by an earlier version of this crate) has no spare.
pub(crate) const SPARE_MARK: &str =
    "a3s-event: max_deliver holds one spare delivery for a final delivery left unsettled";

/// JetStream's `max_deliver` for a subscription's `max_deliver` of `n`: one
/// more. JetStream stops at its limit whether or not the last delivery was
/// settled, so a final delivery whose holder crashed (or dropped it, or
/// stalled past the ack wait) would end the event unreported. With the spare
/// the event comes once more, still final
/// ([`PendingEvent::is_final_delivery`]), so it is dead-lettered instead of
/// lost; a nak of a final delivery is sent as a term, so only an unsettled
/// final delivery uses the spare.
pub(super) fn server_max_deliver(n: u64) -> i64 {
    i64::try_from(n.saturating_add(1)).unwrap_or(i64::MAX)
}

/// `wait`, at most [`LONGEST_WAIT`] (a century). JetStream carries
/// durations as i64 nanoseconds (longer ones arrive wrapped:
/// `18_446_744_274 s` became 200 s, `Duration::MAX` unparsable, a nak delay
/// then a plain nak) and adds them to the current time, which overflows
/// past 2262 (an `i64::MAX` ack wait keeps nats-server busy). A longer
/// duration means "practically never", as on the memory provider.
pub(super) fn jetstream_wait(wait: Duration) -> Duration {
    wait.min(LONGEST_WAIT)
}

/// Maps the contract's deliver policy into JetStream's.
pub(crate) fn deliver_policy(policy: &DeliverPolicy) -> Result<consumer::DeliverPolicy> {
    Ok(match policy {
        DeliverPolicy::All => consumer::DeliverPolicy::All,
        DeliverPolicy::Last => consumer::DeliverPolicy::Last,
        DeliverPolicy::New => consumer::DeliverPolicy::New,
        DeliverPolicy::LastPerSubject => consumer::DeliverPolicy::LastPerSubject,
        DeliverPolicy::ByStartSequence { sequence } => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: (*sequence).max(1),
        },
        DeliverPolicy::ByStartTime { timestamp } => {
            // JetStream reads the start time as i64 nanoseconds, which end
            // in 2262 (a later time wrapped and delivered every stored
            // event): no stored event is later than that end
            let nanos = (i128::from(*timestamp) * 1_000_000).min(i128::from(i64::MAX));
            let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .map_err(|e| Error::invalid_config("deliver_policy", e.to_string()))?;
            consumer::DeliverPolicy::ByStartTime { start_time }
        }
    })
}

/// The pull-consumer configuration for `options`.
pub(crate) fn consumer_config(
    durable: Option<&str>,
    filter: &str,
    options: &SubscribeOptions,
) -> Result<pull::Config> {
    let max_deliver = match options.max_deliver {
        None => -1,
        Some(0) => {
            return Err(Error::invalid_config("max_deliver", "must be at least 1"));
        }
        Some(n) => server_max_deliver(n),
    };
    if options.backoff.iter().any(Duration::is_zero) {
        return Err(Error::invalid_config(
            "backoff",
            "every step must be positive",
        ));
    }
    // JetStream would ignore it beside a backoff; refused as on every
    // provider, so the mistake shows wherever the code runs
    if options.ack_wait.is_some_and(|wait| wait.is_zero()) {
        return Err(Error::invalid_config("ack_wait", "must be positive"));
    }
    // fewer deliveries than backoff steps: every nats-server refuses it (in
    // its own terms, with the spare, some would accept one fewer, but a
    // limit is kept the same on every server); what else a server requires
    // of max_deliver with a backoff depends on its version (see
    // `backoff_refused`)
    if let Some(n) = options.max_deliver
        && n < u64::try_from(options.backoff.len()).unwrap_or(u64::MAX)
    {
        return Err(Error::invalid_config(
            "backoff",
            format!(
                "{} backoff steps with max_deliver {n}: JetStream refuses fewer deliveries \
                 than backoff steps (each step is the wait after one delivery)",
                options.backoff.len()
            ),
        ));
    }
    let max_ack_pending = match options.max_ack_pending {
        None => DEFAULT_MAX_ACK_PENDING,
        Some(0) => {
            return Err(Error::invalid_config(
                "max_ack_pending",
                "must be at least 1",
            ));
        }
        Some(n) => i64::try_from(n).unwrap_or(i64::MAX),
    };
    let backoff: Vec<Duration> = options
        .backoff
        .iter()
        .copied()
        .map(jetstream_wait)
        .collect();
    let ack_wait = match backoff.first() {
        // JetStream uses the first backoff step as the ack wait
        Some(first) => *first,
        None => jetstream_wait(
            options
                .ack_wait
                .unwrap_or(SubscribeOptions::DEFAULT_ACK_WAIT),
        ),
    };
    if ack_wait.is_zero() {
        return Err(Error::invalid_config("ack_wait", "must be positive"));
    }
    Ok(pull::Config {
        durable_name: durable.map(str::to_string),
        name: durable.map(str::to_string),
        deliver_policy: deliver_policy(&options.deliver_policy)?,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver,
        description: (max_deliver > 0).then(|| SPARE_MARK.to_string()),
        filter_subject: filter.to_string(),
        max_ack_pending,
        backoff,
        ..pull::Config::default()
    })
}

/// Settings of `existing` that differ from `desired` and can change after
/// creation (a different deliver policy is refused before this).
pub(super) fn consumer_differences(
    existing: &consumer::Config,
    desired: &pull::Config,
) -> Vec<String> {
    let desired = consumer::IntoConsumerConfig::into_consumer_config(desired);
    let mut diffs = Vec::new();
    macro_rules! cmp {
        ($field:ident) => {
            if existing.$field != desired.$field {
                diffs.push(format!(
                    concat!(
                        stringify!($field),
                        ": consumer has {:?}, subscription wants {:?}"
                    ),
                    existing.$field, desired.$field
                ));
            }
        };
    }
    cmp!(filter_subject);
    cmp!(ack_wait);
    cmp!(max_deliver);
    // the spare's mark: a consumer made without it has no spare (a limit of
    // `n` there is `n - 1` here), so it is updated to carry both. Without a
    // limit there is no spare to mark: a description of another client's
    // own (an administrator's provisioned durable) is left alone, so
    // resuming it needs no update (nor the permission to make one)
    if desired.max_deliver > 0 {
        cmp!(description);
    }
    cmp!(max_ack_pending);
    cmp!(backoff);
    diffs
}

/// A consumer's delivery limit as subscriptions see it (`None`:
/// unlimited): JetStream's minus the spare on consumers that carry one
/// ([`SPARE_MARK`]).
pub(crate) fn max_deliver_of(config: &consumer::Config) -> Option<u64> {
    let server = u64::try_from(config.max_deliver).ok().filter(|n| *n > 0)?;
    if config.description.as_deref() == Some(SPARE_MARK) && server > 1 {
        Some(server - 1)
    } else {
        Some(server)
    }
}

/// The replicas of an ephemeral consumer on `stream`: as many as the
/// stream has. JetStream makes an ephemeral consumer of a limits-retention
/// stream a single replica unless told otherwise, and a single-replica
/// consumer is unreachable while its one node is down (its lookups time
/// out instead of answering "not found", so it is never recreated either):
/// the subscription would stall although the stream has a leader. With the
/// stream's replicas, the consumer fails over with it.
pub(super) fn ephemeral_replicas(stream: &async_nats::jetstream::stream::Config) -> usize {
    stream.num_replicas.max(1)
}
