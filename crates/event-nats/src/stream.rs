//! The provider's stream: created from the config when absent; when it
//! exists, adopted, updated or verified as
//! [`NatsOptions::existing_stream`](crate::NatsOptions::existing_stream)
//! says.

use crate::config::{
    DiscardPolicy, ExistingStream, NatsConfig, NatsOptions, StorageType, redact_url,
};
use crate::denial::{self, Denials, Rule};
use crate::{error, raw};
use async_nats::jetstream::{self, ErrorCode, stream};
use event_core::{Error, Result};
use std::time::Duration;

fn limit(value: u64) -> i64 {
    if value == 0 {
        -1
    } else {
        i64::try_from(value).unwrap_or(i64::MAX)
    }
}

fn desired_stream(config: &NatsConfig, options: &NatsOptions) -> stream::Config {
    stream::Config {
        name: config.stream_name.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        storage: match config.storage {
            StorageType::File => stream::StorageType::File,
            StorageType::Memory => stream::StorageType::Memory,
        },
        max_messages: limit(config.max_events),
        max_bytes: limit(config.max_bytes),
        max_age: Duration::from_secs(config.max_age_secs),
        duplicate_window: options.duplicate_window,
        num_replicas: options.replicas,
        discard: match options.discard {
            DiscardPolicy::Old => stream::DiscardPolicy::Old,
            DiscardPolicy::New => stream::DiscardPolicy::New,
        },
        // `history` steps through sparse matches with direct gets
        allow_direct: true,
        // spelled out: an existing stream is compared with (and updated
        // to) these, since other values lose events silently
        retention: stream::RetentionPolicy::Limits,
        max_messages_per_subject: -1,
        ..stream::Config::default()
    }
}

/// Whether stream subject `stream_subject` captures every subject that
/// `wanted` matches (`events.>` captures `events.billing.>`; JetStream
/// refuses a stream whose subjects overlap, so the narrower one cannot be
/// added beside it).
fn captures(stream_subject: &str, wanted: &str) -> bool {
    let mut have = stream_subject.split('.');
    let mut want = wanted.split('.');
    loop {
        match (have.next(), want.next()) {
            (None, None) => return true,
            // `>` matches one or more tokens; `wanted` has at least one here
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(token)) if token != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" => {}
            _ => return false,
        }
    }
}

/// Whether two stream subjects (with wildcards) match a subject in common,
/// as JetStream's overlap check reads them (`a.*` and `a.b.>` do not: `*`
/// is one token, `>` one or more).
fn overlaps(a: &str, b: &str) -> bool {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            _ => return false,
        }
    }
}

/// For the server's "subjects overlap with an existing stream": which
/// stream (other than `own`) has a subject overlapping `subject`, and which
/// of its subjects, as a sentence to add to the error. `None` when that
/// cannot be found out within a couple of seconds (a user not allowed to
/// list streams gets no answer at all).
async fn overlap_detail(
    js: &jetstream::Context,
    own: &str,
    subject: &str,
    timeout: Duration,
) -> Option<String> {
    let lookup = async {
        // JetStream lists the streams whose subjects overlap a subject
        let page: serde_json::Value = js
            .request(
                "STREAM.NAMES",
                &serde_json::json!({ "offset": 0, "subject": subject }),
            )
            .await
            .ok()?;
        let names: Vec<String> = page
            .get("streams")?
            .as_array()?
            .iter()
            .filter_map(|name| name.as_str())
            .filter(|name| *name != own)
            .map(str::to_string)
            .collect();
        for name in names {
            let Ok(mut stream) = js.get_stream(&name).await else {
                continue;
            };
            let Ok(info) = stream.info().await else {
                continue;
            };
            let taken: Vec<&String> = info
                .config
                .subjects
                .iter()
                .filter(|s| overlaps(s, subject))
                .collect();
            if !taken.is_empty() {
                return Some(format!(
                    "stream {name} captures {}, which overlaps {subject:?} of stream {own} \
                     (choose another subject_prefix, or take the subject off stream {name})",
                    taken
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        None
    };
    tokio::time::timeout(timeout.min(Duration::from_secs(2)), lookup)
        .await
        .ok()
        .flatten()
}

/// Whether `err` is the server's "subjects overlap with an existing stream".
fn is_overlap(err: &(dyn std::error::Error + 'static)) -> bool {
    error::api_code(err) == Some(ErrorCode::STREAM_SUBJECT_OVERLAP)
}

/// `reason` with the overlap named when the server refused `desired` with
/// "subjects overlap with an existing stream" (`overlap`).
async fn with_overlap(
    reason: String,
    overlap: bool,
    js: &jetstream::Context,
    desired: &stream::Config,
    timeout: Duration,
) -> String {
    if !overlap {
        return reason;
    }
    match overlap_detail(js, &desired.name, &desired.subjects[0], timeout).await {
        Some(detail) => format!("{reason}: {detail}"),
        None => reason,
    }
}

/// A setting in which an existing stream differs from the config.
#[derive(Debug)]
struct Difference {
    /// The setting, by its config name where it has one (`max_events`,
    /// `replicas`, ...), else by JetStream's (`allow_direct`, ...).
    setting: &'static str,
    /// The stream's value, as a user reads it.
    stream: String,
    /// What the config wants.
    config: String,
    /// Whether the provider needs it changed to work (changed under
    /// [`ExistingStream::Adopt`] too); otherwise a setting that belongs to
    /// whoever created the stream (limits, dedup window, replicas, discard).
    required: bool,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: stream has {}, config wants {}",
            self.setting, self.stream, self.config
        )
    }
}

/// `differences` as one reason.
fn describe(differences: &[&Difference]) -> String {
    differences
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A JetStream count limit as a user reads it (-1 and 0: unlimited).
fn show_limit(value: i64) -> String {
    if value <= 0 {
        "unlimited".to_string()
    } else {
        value.to_string()
    }
}

/// `max_age` in seconds, as `max_age_secs` reads (0: unlimited).
fn show_age(age: Duration) -> String {
    if age.is_zero() {
        "unlimited".to_string()
    } else if age.subsec_nanos() == 0 {
        age.as_secs().to_string()
    } else {
        format!("{age:?}")
    }
}

/// The managed settings in which `existing` differs from `desired`.
fn stream_differences(existing: &stream::Config, desired: &stream::Config) -> Vec<Difference> {
    let mut diffs = Vec::new();
    let mut differ = |setting, stream: String, config: String, required| {
        diffs.push(Difference {
            setting,
            stream,
            config,
            required,
        });
    };
    let subject = &desired.subjects[0];
    if !existing.subjects.iter().any(|s| captures(s, subject)) {
        differ(
            "subjects",
            format!("{:?}", existing.subjects),
            format!("{subject:?} captured"),
            true,
        );
    }
    if existing.storage != desired.storage {
        differ(
            "storage",
            format!("{:?}", existing.storage),
            format!("{:?}", desired.storage),
            true,
        );
    }
    // interest or work-queue retention removes events once consumed (or at
    // once without consumers): history and new subscribers would miss them
    if existing.retention != desired.retention {
        differ(
            "retention",
            format!("{:?}", existing.retention),
            format!("{:?}", desired.retention),
            true,
        );
    }
    // a per-subject limit removes older events of a subject long before
    // max_events is reached (0 and -1 both mean unlimited)
    if existing.max_messages_per_subject > 0 {
        differ(
            "max_messages_per_subject",
            existing.max_messages_per_subject.to_string(),
            "unlimited".to_string(),
            true,
        );
    }
    // `history` steps through sparse matches with direct gets
    if existing.allow_direct != desired.allow_direct {
        differ(
            "allow_direct",
            existing.allow_direct.to_string(),
            desired.allow_direct.to_string(),
            true,
        );
    }
    // JetStream stores publishes to a no-ack stream without answering them:
    // every publish would time out
    if existing.no_ack != desired.no_ack {
        differ(
            "no_ack",
            existing.no_ack.to_string(),
            desired.no_ack.to_string(),
            true,
        );
    }
    // the settings of whoever created the stream
    if show_limit(existing.max_messages) != show_limit(desired.max_messages) {
        differ(
            "max_events",
            show_limit(existing.max_messages),
            show_limit(desired.max_messages),
            false,
        );
    }
    if show_limit(existing.max_bytes) != show_limit(desired.max_bytes) {
        differ(
            "max_bytes",
            show_limit(existing.max_bytes),
            show_limit(desired.max_bytes),
            false,
        );
    }
    if existing.max_age != desired.max_age {
        differ(
            "max_age_secs",
            show_age(existing.max_age),
            show_age(desired.max_age),
            false,
        );
    }
    if existing.duplicate_window != desired.duplicate_window {
        differ(
            "duplicate_window",
            format!("{:?}", existing.duplicate_window),
            format!("{:?}", desired.duplicate_window),
            false,
        );
    }
    if existing.num_replicas != desired.num_replicas {
        differ(
            "replicas",
            existing.num_replicas.to_string(),
            desired.num_replicas.to_string(),
            false,
        );
    }
    if existing.discard != desired.discard {
        differ(
            "discard",
            format!("{:?}", existing.discard),
            format!("{:?}", desired.discard),
            false,
        );
    }
    diffs
}

/// The JSON fields (as async-nats serializes `stream::Config`) an update
/// changes whatever the mode: what the provider needs to work.
const ADOPTED_FIELDS: &[&str] = &[
    "subjects",
    "allow_direct",
    "no_ack",
    "retention",
    "max_msgs_per_subject",
    "discard_new_per_subject",
];

/// The JSON fields an update changes under [`ExistingStream::Update`] too:
/// the settings of whoever created the stream.
const CONFIG_FIELDS: &[&str] = &[
    "max_msgs",
    "max_bytes",
    "max_age",
    "duplicate_window",
    "num_replicas",
    "discard",
];

/// The JSON update of a stream whose configuration the server sent as
/// `raw`: `fields` taken from `merged`, every other setting kept (see
/// [`raw::patched`]).
fn patched(
    raw: &serde_json::Value,
    merged: &stream::Config,
    fields: &[&str],
) -> std::result::Result<serde_json::Value, serde_json::Error> {
    Ok(raw::patched(raw, &serde_json::to_value(merged)?, fields))
}

/// [`reconcile_stream`], ended by a permission violation of its requests.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
    options: &NatsOptions,
    denials: &Denials,
) -> Result<stream::Stream> {
    let name = &config.stream_name;
    let subjects = ["INFO", "CREATE", "UPDATE"].map(|op| format!("$JS.API.STREAM.{op}.{name}"));
    let rules = [
        Rule::ReplyInbox,
        Rule::Publish(&subjects[0]),
        Rule::Publish(&subjects[1]),
        Rule::Publish(&subjects[2]),
    ];
    let op = format!("stream {name}");
    denial::guarded(denials, &op, &rules, reconcile_stream(js, config, options)).await
}

/// Creates the stream, or checks it and changes what differs as
/// `options.existing_stream` says.
async fn reconcile_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
    options: &NatsOptions,
) -> Result<stream::Stream> {
    let desired = desired_stream(config, options);
    let name = &config.stream_name;
    // a second round when another client created the stream between the
    // lookup and the create (services starting together)
    let mut rounds = 0;
    loop {
        rounds += 1;
        match update_or_create(js, config, &desired, options.existing_stream).await {
            Err(Reconciled::CreatedElsewhere(e)) if rounds < 2 => {
                tracing::debug!(stream = %name, error = %e, "stream created meanwhile; checking it");
            }
            Err(Reconciled::CreatedElsewhere(e)) => {
                return Err(Error::invalid_config(
                    "stream",
                    format!("the server refused to create stream {name}: {e}"),
                ));
            }
            Err(Reconciled::Failed(e)) => return Err(e),
            Ok(stream) => return Ok(stream),
        }
    }
}

/// Refuses `replicas` above 1 for a stream whose JetStream is not
/// clustered (`clustered`: its info names no cluster). Creating such a
/// stream is refused by the server itself, but an update to it is accepted
/// (nats-server 2.9), and from then on every consumer that takes the
/// stream's replicas is refused ("replicas > 1 not supported in
/// non-clustered mode"): every ephemeral subscription on the stream, for
/// every service using it. The stream's info is the one to ask: a server
/// whose config names a cluster without running one says so in its INFO,
/// and the server a client is connected to (a leaf node) may not be the one
/// holding the stream.
fn check_clustered(js: &jetstream::Context, clustered: bool, replicas: usize) -> Result<()> {
    if clustered {
        return Ok(());
    }
    let server = js.client().server_info().server_name;
    Err(Error::invalid_config(
        "replicas",
        format!(
            "NatsOptions::replicas is {replicas}, but the stream's JetStream (server {server}) \
             runs without a cluster (replicas above 1 need a JetStream cluster); the stream was \
             left as it is (updated to {replicas} replicas, every consumer that follows them \
             would be refused)"
        ),
    ))
}

/// Why [`update_or_create`] did not end with the stream.
enum Reconciled {
    /// The create was refused because the stream exists now (created by
    /// another client since the lookup): worth one more round.
    CreatedElsewhere(String),
    /// Anything else.
    Failed(Error),
}

impl From<Error> for Reconciled {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

/// One round of [`reconcile_stream`].
async fn update_or_create(
    js: &jetstream::Context,
    config: &NatsConfig,
    desired: &stream::Config,
    mode: ExistingStream,
) -> std::result::Result<stream::Stream, Reconciled> {
    let timeout = config.request_timeout();
    let name = &config.stream_name;
    match js.get_stream(name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| error::map("stream info", e, timeout))?;
            let current = info.config.clone();
            // a JetStream cluster names itself in the stream's info
            let clustered = info
                .cluster
                .as_ref()
                .and_then(|cluster| cluster.name.as_deref())
                .is_some_and(|name| !name.is_empty());
            let diffs = stream_differences(&current, desired);
            if diffs.is_empty() {
                return Ok(existing);
            }
            let all: Vec<&Difference> = diffs.iter().collect();
            if current.storage != desired.storage {
                return Err(Error::Conflict {
                    resource: format!("stream {name}"),
                    reason: format!(
                        "{} (JetStream cannot change the storage type)",
                        describe(&all)
                    ),
                }
                .into());
            }
            let apply_config = match mode {
                ExistingStream::Verify => {
                    return Err(Error::Conflict {
                        resource: format!("stream {name}"),
                        reason: format!(
                            "{} (NatsOptions::existing_stream is ExistingStream::Verify: \
                             nothing was changed; make the config match the stream, or \
                             change the stream)",
                            describe(&all)
                        ),
                    }
                    .into());
                }
                ExistingStream::Update => true,
                ExistingStream::Adopt => {
                    for kept in diffs.iter().filter(|d| !d.required) {
                        tracing::warn!(
                            stream = %name,
                            setting = kept.setting,
                            stream_value = %kept.stream,
                            config_value = %kept.config,
                            "stream {name} exists with {} {} where the config has {}: \
                             keeping the stream's (its settings belong to whoever created \
                             it; NatsOptions::existing_stream = ExistingStream::Update \
                             applies the config, and lowering a limit deletes the events \
                             beyond it)",
                            kept.setting,
                            kept.stream,
                            kept.config
                        );
                    }
                    false
                }
            };
            let changes: Vec<&Difference> = diffs
                .iter()
                .filter(|d| d.required || apply_config)
                .collect();
            if changes.is_empty() {
                return Ok(existing);
            }
            if apply_config
                && desired.num_replicas > 1
                && current.num_replicas != desired.num_replicas
            {
                check_clustered(js, clustered, desired.num_replicas)?;
            }
            let reason = describe(&changes);
            let mut merged = current.clone();
            if !merged
                .subjects
                .iter()
                .any(|s| captures(s, &desired.subjects[0]))
            {
                merged.subjects.push(desired.subjects[0].clone());
            }
            merged.allow_direct = desired.allow_direct;
            merged.no_ack = desired.no_ack;
            merged.retention = desired.retention;
            merged.max_messages_per_subject = desired.max_messages_per_subject;
            // only valid with a per-subject limit: the server refuses the
            // update that lifts the limit unless this goes too
            merged.discard_new_per_subject = false;
            if apply_config {
                merged.max_messages = desired.max_messages;
                merged.max_bytes = desired.max_bytes;
                merged.max_age = desired.max_age;
                merged.duplicate_window = desired.duplicate_window;
                merged.num_replicas = desired.num_replicas;
                merged.discard = desired.discard;
            }
            tracing::info!(stream = %name, changes = %reason, "updating stream settings");
            // from the server's own JSON: a typed update would drop every
            // setting `stream::Config` does not model (metadata,
            // compression, subject transforms, message TTLs on 2.10+)
            let mut fields = ADOPTED_FIELDS.to_vec();
            if apply_config {
                fields.extend_from_slice(CONFIG_FIELDS);
            }
            let info = raw::request(
                js,
                format!("STREAM.INFO.{name}"),
                &serde_json::json!({}),
                "stream info",
                timeout,
            )
            .await?
            .map_err(|e| error::map("stream info", e, timeout))?;
            let raw = raw::config_of(info, &format!("stream {name}"))?;
            let update = patched(&raw, &merged, &fields)
                .map_err(|e| Error::Serialization(format!("stream {name} update: {e}")))?;
            let updated = raw::request(
                js,
                format!("STREAM.UPDATE.{name}"),
                &update,
                "stream update",
                timeout,
            )
            .await?;
            if let Err(e) = updated {
                let reason = format!("{reason}; the server refused the update: {e}");
                return Err(Error::Conflict {
                    resource: format!("stream {name}"),
                    reason: with_overlap(reason, is_overlap(&e), js, desired, timeout).await,
                }
                .into());
            }
            Ok(js
                .get_stream(name)
                .await
                .map_err(|e| error::map("get stream", e, timeout))?)
        }
        Err(err) => {
            if error::no_responders(&err) {
                let url = redact_url(&config.url);
                return Err(error::unanswered("get stream", &js.client(), &url).into());
            }
            match error::map("get stream", err, timeout) {
                Error::NotFound { .. } => {}
                other => return Err(other.into()),
            }
            tracing::info!(stream = %name, "creating stream");
            let e = match js.create_stream(desired.clone()).await {
                Ok(stream) => return Ok(stream),
                Err(e) => e,
            };
            if error::api_code(&e) == Some(ErrorCode::STREAM_NAME_EXIST) {
                return Err(Reconciled::CreatedElsewhere(e.to_string()));
            }
            let mut reason =
                with_overlap(String::new(), is_overlap(&e), js, desired, timeout).await;
            if error::api_code(&e) == Some(ErrorCode::CLUSTER_NO_PEERS) {
                reason.push_str(&format!(
                    " (NatsOptions::replicas is {}: the cluster has fewer JetStream servers than \
                     that with room for the stream)",
                    desired.num_replicas
                ));
            }
            let reserves = [
                ErrorCode::STORAGE_RESOURCES_EXCEEDED,
                ErrorCode::MEMORY_RESOURCES_EXCEEDED,
            ];
            if error::api_code(&e).is_some_and(|code| reserves.contains(&code)) {
                // JetStream reserves a stream's max_bytes (times its
                // replicas, in an account) when it is created
                let store = "its JetStream store (max_file_store / max_memory_store, or the \
                             account's max_file / max_mem)";
                reason.push_str(&match u64::try_from(desired.max_bytes) {
                    Ok(max_bytes) => format!(
                        " (NatsConfig::max_bytes is {max_bytes}: the server reserves that much \
                         of {store} for the stream, per replica, and has less left; lower \
                         max_bytes or raise the server's limit)"
                    ),
                    Err(_) => format!(
                        " (NatsConfig::max_bytes is 0, unlimited: the server has no room left \
                         in {store} for another stream; free some, or raise the limit)"
                    ),
                });
            }
            Err(match error::map("create stream", e, timeout) {
                Error::Provider { source, .. } => Error::invalid_config(
                    "stream",
                    format!("the server refused to create stream {name}: {source}{reason}"),
                ),
                other => other,
            }
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ADOPTED_FIELDS, CONFIG_FIELDS, captures, overlaps, patched};
    use async_nats::jetstream::stream;
    use serde_json::json;
    use std::time::Duration;

    /// The stream's configuration as a 2.10+ server sends it: settings
    /// async-nats's `stream::Config` does not model in this build.
    fn raw() -> serde_json::Value {
        json!({
            "name": "S",
            "subjects": ["other.>"],
            "retention": "interest",
            "max_msgs": 10,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": 5,
            "discard_new_per_subject": true,
            "discard": "new",
            "storage": "file",
            "num_replicas": 1,
            "duplicate_window": 120_000_000_000_u64,
            "metadata": {"team": "billing"},
            "compression": "s2",
            "subject_transform": {"src": "in.>", "dest": "out.>"},
            "consumer_limits": {"max_ack_pending": 100},
            "allow_msg_ttl": true,
            "some_future_setting": [1, 2],
        })
    }

    fn merged() -> stream::Config {
        stream::Config {
            name: "S".into(),
            subjects: vec!["other.>".into(), "events.>".into()],
            retention: stream::RetentionPolicy::Limits,
            max_messages: 1_000,
            max_bytes: -1,
            max_messages_per_subject: -1,
            discard: stream::DiscardPolicy::Old,
            num_replicas: 3,
            duplicate_window: Duration::from_secs(60),
            allow_direct: true,
            ..Default::default()
        }
    }

    /// Adopting changes only what the provider needs: every other setting
    /// of the server's JSON stays, those this build does not know included.
    #[test]
    fn an_adopting_update_keeps_the_settings_it_does_not_change() {
        let update = patched(&raw(), &merged(), ADOPTED_FIELDS).unwrap();
        let mut want = raw();
        let object = want.as_object_mut().unwrap();
        object.insert("subjects".into(), json!(["other.>", "events.>"]));
        object.insert("retention".into(), json!("limits"));
        object.insert("max_msgs_per_subject".into(), json!(-1));
        object.insert("allow_direct".into(), json!(true));
        // serialized by async-nats only when set
        object.remove("discard_new_per_subject");
        assert_eq!(update, want);
    }

    /// Under `ExistingStream::Update` the config's limits are applied too.
    #[test]
    fn an_updating_update_changes_the_limits_too() {
        let fields: Vec<&str> = ADOPTED_FIELDS
            .iter()
            .chain(CONFIG_FIELDS)
            .copied()
            .collect();
        let update = patched(&raw(), &merged(), &fields).unwrap();
        assert_eq!(update["max_msgs"], json!(1_000));
        assert_eq!(update["num_replicas"], json!(3));
        assert_eq!(update["discard"], json!("old"));
        assert_eq!(update["duplicate_window"], json!(60_000_000_000_u64));
        assert_eq!(update["compression"], json!("s2"));
        assert_eq!(update["allow_msg_ttl"], json!(true));
        assert_eq!(update["metadata"], json!({"team": "billing"}));
    }

    #[test]
    fn captured_subjects() {
        for (stream, wanted, expected) in [
            ("events.>", "events.>", true),
            (">", "events.>", true),
            ("events.>", "events.billing.>", true),
            ("*.>", "events.billing.>", true),
            ("events.*.>", "events.billing.>", true),
            ("events.*", "events.>", false),
            ("events.*.>", "events.>", false),
            ("events.billing.>", "events.>", false),
            ("other.>", "events.>", false),
            ("events", "events.>", false),
            ("events.b", "events.billing.>", false),
        ] {
            assert_eq!(captures(stream, wanted), expected, "{stream} {wanted}");
        }
    }

    #[test]
    fn overlapping_subjects() {
        for (a, b, expected) in [
            ("events.>", "events.orders.>", true),
            ("events.orders.>", "events.>", true),
            ("events.*", "events.>", true),
            ("events.*.x", "events.a.*", true),
            (">", "anything.at.all", true),
            ("events.a", "events.a", true),
            ("events.a", "events.b", false),
            ("eventsx.a", "events.>", false),
            ("events", "events.>", false),
            ("events.*", "events.a.>", false),
            ("events.a.b", "events.*", false),
        ] {
            assert_eq!(overlaps(a, b), expected, "{a} {b}");
        }
    }
}
