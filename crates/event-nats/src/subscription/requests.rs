//! Consumer requests: lookups and creations, and resuming a durable
//! (applying changed options in place, or refusing them).

use super::options::{SPARE_MARK, consumer_differences};
use crate::error;
use crate::provider::NatsProvider;
use crate::raw;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer, pull};
use event_core::{Error, Result};

/// Consumer `name`'s info, `None` when the stream has no such consumer.
pub(super) async fn lookup(provider: &NatsProvider, name: &str) -> Result<Option<consumer::Info>> {
    let timeout = provider.consumer_timeout();
    let request = async {
        match provider.inner.stream.consumer_info(name).await {
            Ok(info) => Ok(Some(info)),
            Err(err) => match provider.stream_error(name, err, timeout) {
                Error::NotFound {
                    kind: "consumer", ..
                } => Ok(None),
                other => Err(other),
            },
        }
    };
    let op = format!("consumer {name}");
    provider
        .guarded(&op, &provider.consumer_rules(name), request)
        .await
}

/// Creates consumer `name` (JetStream updates one that exists).
pub(super) async fn create(
    provider: &NatsProvider,
    name: &str,
    config: pull::Config,
) -> Result<PullConsumer> {
    let request = async {
        provider
            .inner
            .stream
            .create_consumer(config.clone())
            .await
            .map_err(|e| creation_refused(provider, name, &config, e))
    };
    let op = format!("consumer {name}");
    provider
        .guarded(&op, &provider.consumer_rules(name), request)
        .await
}

/// Consumer `name` as a pull consumer (its callers run it inside
/// [`NatsProvider::guarded`]).
async fn get_consumer(provider: &NatsProvider, name: &str) -> Result<PullConsumer> {
    provider
        .inner
        .stream
        .get_consumer(name)
        .await
        .map_err(|e| consumer_error(provider, name, e))
}

/// Maps the error of a request creating (or updating) consumer `name` with
/// `config`.
fn creation_refused<E>(provider: &NatsProvider, name: &str, config: &pull::Config, err: E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let filter = &config.filter_subject;
    match error::api_code(&err) {
        Some(ErrorCode::CONSUMER_MAX_DELIVER_BACKOFF) => {
            backoff_refused(provider, config.backoff.len(), config.max_deliver, &err)
        }
        // a filter on the provider's own subjects that the stream does not
        // cover: the stream changed, not the options
        Some(ErrorCode::CONSUMER_FILTER_NOT_SUBSET)
            if filter.starts_with(&format!("{}.", provider.inner.config.subject_prefix)) =>
        {
            provider.stream_conflict(format!(
                "the stream does not capture {}.> (its subjects were changed elsewhere), so \
                 consumer {name} cannot filter {filter}; connecting again adds the subject back",
                provider.inner.config.subject_prefix
            ))
        }
        _ => consumer_error(provider, name, err),
    }
}

/// The JSON fields of a consumer's configuration (as async-nats serializes
/// it) that a durable update takes from the subscription: its names, its
/// filter (`filter_subjects`, a 2.10+ consumer's filters, which async-nats
/// does not model in this build, goes: the filter is the subscription's in
/// either form) and the settings [`consumer_differences`] compares (the
/// description apart, see [`durable_update`]). The deliver and ack
/// policies are the consumer's already (a different one is refused).
const OWNED_FIELDS: &[&str] = &[
    "durable_name",
    "name",
    "filter_subject",
    "filter_subjects",
    "ack_wait",
    "max_deliver",
    "max_ack_pending",
    "backoff",
];

/// The configuration (JSON) updating a durable whose configuration the
/// server sent as `raw` to `desired`: the [`OWNED_FIELDS`] from `desired`,
/// and the description when it is (or was) the spare's mark
/// ([`SPARE_MARK`]: set with a limited `max_deliver`, removed with an
/// unlimited one; another client's description is left alone unless the
/// mark replaces it). Every other setting stays as the server sent it:
/// those async-nats does not model (`metadata`, `pause_until`, priority
/// groups, whatever a later server adds) as well as the request limits,
/// replicas and storage.
pub(super) fn durable_update(
    raw: &serde_json::Value,
    desired: &pull::Config,
) -> std::result::Result<serde_json::Value, serde_json::Error> {
    let typed = serde_json::to_value(consumer::IntoConsumerConfig::into_consumer_config(desired))?;
    let marked = |config: &serde_json::Value| {
        config
            .get("description")
            .and_then(serde_json::Value::as_str)
            == Some(SPARE_MARK)
    };
    let mut fields = OWNED_FIELDS.to_vec();
    if marked(&typed) || marked(raw) {
        fields.push("description");
    }
    Ok(raw::patched(raw, &typed, &fields))
}

/// Updates durable `name` to `desired`: its configuration is read as the
/// server's JSON and sent back with only the subscription's settings
/// changed ([`durable_update`]), since JetStream replaces the whole
/// configuration and a typed one would drop what async-nats does not model.
/// A consumer deleted meanwhile is [`Error::NotFound`].
async fn update(
    provider: &NatsProvider,
    name: &str,
    desired: &pull::Config,
) -> Result<PullConsumer> {
    let js = &provider.inner.js;
    let stream = &*provider.inner.stream_name;
    let timeout = provider.consumer_timeout();
    let request = async {
        let info = raw::request(
            js,
            format!("CONSUMER.INFO.{stream}.{name}"),
            &serde_json::json!({}),
            name,
            timeout,
        )
        .await?
        .map_err(|e| consumer_error(provider, name, e))?;
        let current = raw::config_of(info, &format!("consumer {name}"))?;
        let config = durable_update(&current, desired)
            .map_err(|e| Error::Serialization(format!("consumer {name} update: {e}")))?;
        // the subject async-nats's own creation uses (nats-server 2.9 and
        // later): the filter in it lets an administrator grant creations
        // per filter
        let filter = &desired.filter_subject;
        let subject = if filter.is_empty() {
            format!("CONSUMER.CREATE.{stream}.{name}")
        } else {
            format!("CONSUMER.CREATE.{stream}.{name}.{filter}")
        };
        let body = serde_json::json!({ "stream_name": stream, "config": config });
        raw::request(js, subject, &body, name, timeout)
            .await?
            .map_err(|e| creation_refused(provider, name, desired, e))?;
        get_consumer(provider, name).await
    };
    let op = format!("consumer {name}");
    provider
        .guarded(&op, &provider.consumer_rules(name), request)
        .await
}

/// Resumes durable `name`, which exists as `existing`: changed options that
/// JetStream can change are applied, the others are [`Error::Conflict`].
pub(super) async fn resume(
    provider: &NatsProvider,
    name: &str,
    existing: &consumer::Info,
    desired: &pull::Config,
) -> Result<PullConsumer> {
    let existing = &existing.config;
    // made by another client: settling events one by one needs a pull
    // consumer with explicit acks (with `All`, acking one event would settle
    // every earlier one), decoding them needs their bodies, and the
    // subscription's pace is its caller's (not the stored one); none of
    // these can be changed in place (`headers_only` could, but the consumer
    // is another client's, made so on purpose)
    let foreign = if existing.deliver_subject.is_some() {
        Some("it is a push consumer (it has a deliver subject)".to_string())
    } else if existing.ack_policy != AckPolicy::Explicit {
        Some(format!(
            "ack_policy: consumer has {:?}, the provider acks each event (Explicit)",
            existing.ack_policy
        ))
    } else if existing.headers_only {
        // every event would come without its body: undecodable, terminated
        Some("headers_only: consumer delivers events without their bodies".to_string())
    } else if existing.replay_policy != consumer::ReplayPolicy::Instant {
        // JetStream cannot change it in place
        Some(format!(
            "replay_policy: consumer has {:?} (events at the pace they were stored), the \
             provider delivers them as fast as they are read (Instant), and JetStream cannot \
             change it",
            existing.replay_policy
        ))
    } else {
        None
    };
    if let Some(reason) = foreign {
        return Err(Error::Conflict {
            resource: format!("durable consumer {name}"),
            reason: format!("{reason}; unsubscribe it or use another name"),
        });
    }
    // the start policy applies at creation only: a different one would be
    // silently ignored, so it is refused
    if existing.deliver_policy != desired.deliver_policy {
        return Err(Error::Conflict {
            resource: format!("durable consumer {name}"),
            reason: format!(
                "deliver_policy: consumer has {:?}, subscription wants {:?} (it applies at \
                 creation only; unsubscribe the consumer first)",
                existing.deliver_policy, desired.deliver_policy
            ),
        });
    }
    // nats-server before 2.9.14 accepts a new filter but keeps matching
    // with parts of the old one (nats-server#3829, #3845): a literal filter
    // changed to a wildcard one then skips every event, so the change is
    // refused there rather than accepted and silently broken
    let version = provider.inner.client.server_info().version;
    if existing.filter_subject != desired.filter_subject && filter_update_unsafe(&version) {
        return Err(Error::Conflict {
            resource: format!("durable consumer {name}"),
            reason: format!(
                "filter_subject: consumer has {:?}, subscription wants {:?}; nats-server \
                 {version} cannot change a consumer's filter in place (fixed in 2.9.14): \
                 unsubscribe the consumer first, or upgrade the server",
                existing.filter_subject, desired.filter_subject
            ),
        });
    }
    let diffs = consumer_differences(existing, desired);
    if diffs.is_empty() {
        let op = format!("consumer {name}");
        return provider
            .guarded(
                &op,
                &provider.consumer_rules(name),
                get_consumer(provider, name),
            )
            .await;
    }
    let reason = diffs.join("; ");
    tracing::info!(consumer = name, changes = %reason, "updating durable consumer");
    let updated = match update(provider, name, desired).await {
        // deleted since it was looked up: made anew
        Err(Error::NotFound {
            kind: "consumer", ..
        }) => create(provider, name, desired.clone()).await,
        other => other,
    }
    .map_err(|err| match err {
        err @ (Error::Timeout { .. } | Error::Connection(_) | Error::Authentication(_)) => err,
        // options no consumer may have on this server, not a conflict
        // with the existing one
        err @ Error::InvalidConfig { .. } if is_backoff(&err) => err,
        err => Error::Conflict {
            resource: format!("durable consumer {name}"),
            reason: format!("{reason}; JetStream refused the change: {err}"),
        },
    })?;
    // a server that accepts the request but keeps old values (older servers
    // ignore some fields) is a conflict too
    let applied = consumer_differences(&updated.cached_info().config, desired);
    if !applied.is_empty() {
        return Err(Error::Conflict {
            resource: format!("durable consumer {name}"),
            reason: format!("JetStream kept the old settings: {}", applied.join("; ")),
        });
    }
    Ok(updated)
}

/// Whether nats-server `version` mishandles a consumer filter update (before
/// 2.9.14 it keeps matching with the old filter's wildcard flag and signal
/// subscription). An unparsable version is taken for a current one.
pub(super) fn filter_update_unsafe(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().ok());
    match (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten(),
    ) {
        (Some(major), Some(minor), Some(patch)) => (major, minor, patch) < (2, 9, 14),
        _ => false,
    }
}

/// The server refused a backoff of `steps` steps with JetStream
/// `max_deliver` (-1: unlimited; otherwise the subscription's plus the
/// spare). Servers differ: all refuse fewer deliveries than steps, and
/// older ones (nats-server 2.9, for example) also refuse an unlimited
/// `max_deliver` or one equal to the number of steps, which newer ones
/// accept. The provider refuses the first before any I/O; with the spare,
/// a limited `max_deliver` that passes that check satisfies every server,
/// so what is left to explain from the server's answer is an unlimited one.
fn backoff_refused(
    provider: &NatsProvider,
    steps: usize,
    max_deliver: i64,
    err: &(dyn std::error::Error + 'static),
) -> Error {
    // shown as the subscription set it: JetStream's holds the spare
    let max_deliver = if max_deliver < 0 {
        "unlimited (None)".to_string()
    } else {
        (max_deliver - 1).to_string()
    };
    let server = error::api_error(err).map_or_else(|| err.to_string(), ToString::to_string);
    Error::invalid_config(
        "backoff",
        format!(
            "nats-server {version} refused a backoff of {steps} step(s) with max_deliver \
             {max_deliver}: this server requires a limited max_deliver with a backoff, so set \
             max_deliver to at least {steps} (one delivery per backoff step; newer servers \
             also accept an unlimited max_deliver); the server said: {server}",
            version = provider.inner.client.server_info().version,
        ),
    )
}

/// Whether `err` is a refusal of the `backoff` option.
fn is_backoff(err: &Error) -> bool {
    matches!(err, Error::InvalidConfig { field, .. } if field == "backoff")
}

/// Maps the error of a request creating or reading consumer `name`: a
/// missing stream is `NotFound` naming the stream, another refusal of the
/// consumer (a JetStream API error; async-nats's own refusal of its name
/// or type) is `InvalidConfig` (the options). A request that got no answer
/// keeps its own error (a lost connection, a timeout, a client whose
/// connection task is gone): the options are not at fault.
fn consumer_error(
    provider: &NatsProvider,
    name: &str,
    err: impl Into<event_core::BoxError>,
) -> Error {
    use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
    let err: event_core::BoxError = err.into();
    let refused = error::api_code(err.as_ref()).is_some()
        || err.downcast_ref::<ConsumerError>().is_some_and(|e| {
            matches!(
                e.kind(),
                ConsumerErrorKind::InvalidName | ConsumerErrorKind::InvalidConsumerType
            )
        });
    let timeout = provider.consumer_timeout();
    match provider.stream_error(name, err, timeout) {
        Error::Provider { source, .. } if refused => Error::invalid_config(
            "subscribe options",
            format!("JetStream refused consumer {name}: {source}"),
        ),
        other => other,
    }
}
