//! Core data types: [`Event`], [`ReceivedEvent`], options and filters.
//!
//! Every type serialises as camelCase JSON. [`Event`] keeps the JSON shape
//! of the original `a3s-event` 0.3/0.4, so events stored by either library
//! read back with the other.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A single event.
///
/// Events are published to subjects of the form
/// `{prefix}.{category}.{topic}[.{more}]`, for example
/// `events.market.forex.usd_cny`.
///
/// ```
/// use event_core::Event;
///
/// let event = Event::new(
///     "events.market.forex",
///     "market",
///     "USD/CNY rate change",
///     "reuters",
///     serde_json::json!({"rate": 7.35}),
/// )
/// .with_metadata("region", "asia");
/// assert!(event.id.starts_with("evt-"));
/// assert_eq!(event.version, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique identifier, `evt-<uuid>` for generated events.
    pub id: String,
    /// Subject the event is published to.
    pub subject: String,
    /// Top-level category (the subject's second token by convention).
    pub category: String,
    /// Event type for schema lookup (`"forex.rate_change"`); empty when untyped
    /// (read as empty when absent or `null`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub event_type: String,
    /// Schema version of `event_type`; 1 when not given (absent or `null`).
    #[serde(default = "default_version", deserialize_with = "null_as_version")]
    pub version: u32,
    /// Arbitrary JSON payload.
    pub payload: serde_json::Value,
    /// Human-readable summary.
    pub summary: String,
    /// System or service that produced the event.
    pub source: String,
    /// Creation time in Unix milliseconds.
    pub timestamp: u64,
    /// Free-form key/value metadata (read as empty when absent or `null`,
    /// as producers in other languages write an empty map).
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
}

fn default_version() -> u32 {
    1
}

/// Reads `null` as the field's default, as if the field were left out.
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads a `null` version as [`default_version`], as if it were left out.
fn null_as_version<'de, D>(deserializer: D) -> std::result::Result<u32, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<u32>::deserialize(deserializer)?.unwrap_or_else(default_version))
}

impl Event {
    /// Creates an untyped event with a fresh `evt-<uuid>` id and the current
    /// time.
    pub fn new(
        subject: impl Into<String>,
        category: impl Into<String>,
        summary: impl Into<String>,
        source: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self::typed(subject, category, "", 1, summary, source, payload)
    }

    /// Creates a typed, versioned event (validated by a schema registry when
    /// the bus has one).
    pub fn typed(
        subject: impl Into<String>,
        category: impl Into<String>,
        event_type: impl Into<String>,
        version: u32,
        summary: impl Into<String>,
        source: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            id: new_event_id(),
            subject: subject.into(),
            category: category.into(),
            event_type: event_type.into(),
            version,
            payload,
            summary: summary.into(),
            source: source.into(),
            timestamp: now_millis(),
            metadata: HashMap::new(),
        }
    }

    /// Adds a metadata entry (builder style).
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Whether the event carries an event type (and so is schema-validated
    /// against it): not empty nor blank (only whitespace, which names no
    /// type a schema can be registered under; validation takes such an
    /// event as untyped).
    pub fn is_typed(&self) -> bool {
        !self.event_type.trim().is_empty()
    }
}

/// A dedup id scoped to an event's source: `<length of the source>:<source><id>`
/// (the length makes it one-to-one: no other source and id give the same
/// text), with `%` and control characters percent-encoded (their UTF-8
/// bytes as `%XX`), as no provider takes a dedup id with control
/// characters. CloudEvents are unique by source and id together: this is
/// the dedup id `event_cloudevents::cloudevent_dedup_id` and
/// `event_routing::TopicSink::unchanged_dedup_id` give an event, one
/// definition so that the two always agree.
///
/// ```
/// assert_eq!(event_core::source_scoped_dedup_id("https://b.example", "1"), "17:https://b.example1");
/// assert_eq!(event_core::source_scoped_dedup_id("a\nb", "%"), "5:a%0Ab%25");
/// ```
pub fn source_scoped_dedup_id(source: &str, id: &str) -> String {
    let source = escape_controls(source);
    format!("{}:{}{}", source.len(), source, escape_controls(id))
}

/// `text` with `%` and control characters percent-encoded.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c == '%' || c.is_control()) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '%' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                escaped.push_str(&format!("%{b:02X}"));
            }
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// A fresh event id: `evt-<uuid v4>`.
pub fn new_event_id() -> String {
    format!("evt-{}", uuid::Uuid::new_v4())
}

/// The current time in Unix milliseconds (0 if the clock is before 1970).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How deeply arrays and objects may nest in an event's payload: 126 levels.
///
/// JSON readers stop at the 128th level (`serde_json`'s limit: the NATS
/// provider's decoding, the CloudEvents bindings, decryption), and a stored
/// event is itself an object with the payload one level inside it. A payload
/// nested deeper could be published but never read back, so every provider
/// refuses it at publish, whatever its storage: see [`check_payload_depth`].
/// An event that carries another inside its payload nests it deeper still
/// (a dead letter by two levels), so dead letters of payloads within two
/// levels of the limit are refused too: a consumer runner then leaves the
/// event unsettled and counts it, nothing is dropped silently.
pub const MAX_PAYLOAD_DEPTH: usize = 126;

/// Checks that `payload` nests arrays and objects at most
/// [`MAX_PAYLOAD_DEPTH`] levels deep (a scalar is level 0, `[1]` level 1,
/// `{"a": [1]}` level 2). Providers call it before storing or sending an
/// event; it stops at the first level too deep, so it recurses at most
/// `MAX_PAYLOAD_DEPTH + 1` calls deep whatever the payload.
///
/// ```
/// use event_core::{Error, MAX_PAYLOAD_DEPTH, check_payload_depth};
/// use serde_json::{Value, json};
///
/// let mut payload = json!(1);
/// for _ in 0..MAX_PAYLOAD_DEPTH {
///     payload = Value::Array(vec![payload]);
/// }
/// assert!(check_payload_depth(&payload).is_ok());
/// let deeper = Value::Array(vec![payload]);
/// assert!(matches!(check_payload_depth(&deeper), Err(Error::Serialization(_))));
/// ```
///
/// # Errors
/// [`Error::Serialization`](crate::Error::Serialization) naming the limit.
pub fn check_payload_depth(payload: &serde_json::Value) -> crate::Result<()> {
    /// Whether `value`, found at nesting level `level`, keeps within the limit.
    fn within(value: &serde_json::Value, level: usize) -> bool {
        use serde_json::Value;
        match value {
            Value::Array(items) => {
                level < MAX_PAYLOAD_DEPTH && items.iter().all(|v| within(v, level + 1))
            }
            Value::Object(fields) => {
                level < MAX_PAYLOAD_DEPTH && fields.values().all(|v| within(v, level + 1))
            }
            _ => true,
        }
    }
    if within(payload, 0) {
        Ok(())
    } else {
        Err(crate::Error::Serialization(format!(
            "payload nests arrays and objects more than {MAX_PAYLOAD_DEPTH} levels deep: \
             JSON readers stop at 128 levels, so it could not be read back"
        )))
    }
}

/// An event together with its delivery context.
///
/// `event` is shared (`Arc`) so that fan-out to many subscribers does not copy
/// the event; field access works as on an owned [`Event`]
/// (`received.event.id`), and `Arc::unwrap_or_clone` gives an owned one.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The event.
    pub event: Arc<Event>,
    /// Stream sequence assigned at publish time.
    pub sequence: u64,
    /// How many times this event has been delivered to this consumer,
    /// counting this delivery (1 on first delivery).
    pub num_delivered: u64,
    /// Name of the stream (or provider store) the event came from.
    pub stream: Arc<str>,
}

/// Status of a provider's store, computed in O(1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderInfo {
    /// Provider name (`"memory"`, `"nats"`, ...).
    pub provider: String,
    /// Events currently stored.
    pub messages: u64,
    /// Bytes currently stored (encoded events).
    pub bytes: u64,
    /// Consumers (durable and ephemeral) currently registered.
    pub consumers: usize,
    /// Sequence of the oldest stored event (0 when empty).
    #[serde(default)]
    pub first_sequence: u64,
    /// Sequence of the newest stored event (0 when nothing was ever published).
    #[serde(default)]
    pub last_sequence: u64,
}

/// Event counts grouped by category, as returned by `EventBus::counts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventCounts {
    /// Count per category.
    pub categories: HashMap<String, u64>,
    /// Total of all counts.
    pub total: u64,
}

/// Where a new consumer starts reading.
///
/// Every policy works on every conforming provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum DeliverPolicy {
    /// Every stored event matching the filter.
    #[default]
    All,
    /// The newest stored event matching the filter, then new ones.
    Last,
    /// Only events published after the consumer is created.
    New,
    /// Events from stream sequence `sequence` on.
    ///
    /// A start before the oldest stored event (a checkpoint saved before
    /// retention removed what followed it) goes on with the oldest stored
    /// event. The memory provider first returns [`Error::Lagged`] with the
    /// number of positions removed from `sequence` on (their subjects are
    /// gone, so every one counts: an upper bound); JetStream does not tell
    /// the consumer, so the NATS provider reports nothing.
    ///
    /// [`Error::Lagged`]: crate::Error::Lagged
    ByStartSequence {
        /// First stream sequence to deliver.
        sequence: u64,
    },
    /// Events from the first one stored at or after `timestamp` (Unix
    /// milliseconds, the provider's storage time, not the event's own
    /// `timestamp`) on, in stream order: the time sets the start position
    /// only, so a later event that carries an earlier storage time (a
    /// clock stepped back) is still delivered. A start time in the future
    /// (for the storage clock) starts at the next event stored, whatever
    /// its time: the position is fixed when the consumer is created, not
    /// when the time comes.
    ///
    /// Like every deliver policy, it applies when a durable is created: a
    /// durable resumed with another start (`now - 1 h` recomputed at each
    /// start of a service) is `Error::Conflict`, as the position cannot
    /// change. Give a durable a fixed timestamp, or `All`, and let it keep
    /// its position.
    ///
    /// A start time before the oldest stored event starts at the oldest
    /// stored event without an [`Error::Lagged`] report, on every provider:
    /// the removed events' storage times are gone, so whether any of them
    /// was at or after the start cannot be told. Resume from a saved
    /// position with `ByStartSequence`, which reports what retention removed
    /// (on the memory provider).
    ///
    /// [`Error::Lagged`]: crate::Error::Lagged
    ByStartTime {
        /// Start time in Unix milliseconds.
        timestamp: u64,
    },
    /// The newest stored event of each distinct subject, then new ones.
    LastPerSubject,
}

/// What a publish did ([`EventProvider::publish_shared_with_outcome`]):
/// the stream sequence, and whether the provider stored the event or found
/// its dedup id inside its window and stored nothing.
///
/// [`EventProvider::publish_shared_with_outcome`]: crate::EventProvider::publish_shared_with_outcome
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOutcome {
    /// The stream sequence: the new event's, or for a duplicate the
    /// sequence of the event first stored under the dedup id.
    pub sequence: u64,
    /// `Some(true)`: a duplicate, nothing was stored; `Some(false)`: the
    /// event was stored; `None`: the provider does not say.
    pub duplicate: Option<bool>,
}

impl PublishOutcome {
    /// An event stored at `sequence`.
    pub fn stored(sequence: u64) -> Self {
        Self {
            sequence,
            duplicate: Some(false),
        }
    }

    /// A duplicate of the event stored at `sequence`; nothing was stored.
    pub fn duplicate(sequence: u64) -> Self {
        Self {
            sequence,
            duplicate: Some(true),
        }
    }

    /// A publish at `sequence` whose provider does not say whether it was a
    /// duplicate.
    pub fn unknown(sequence: u64) -> Self {
        Self {
            sequence,
            duplicate: None,
        }
    }

    /// Whether the provider said the event was a duplicate.
    pub fn is_duplicate(&self) -> bool {
        self.duplicate == Some(true)
    }
}

/// Options for publishing.
///
/// Defaults: dedup by the event id, no concurrency check, the provider's
/// timeout. In JSON the timeout is `timeoutMs`, whole milliseconds rounded
/// up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishOptions {
    /// Deduplication id. `None` means the event id. A repeat inside the
    /// provider's dedup window returns the first sequence and stores nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// Optimistic concurrency: publish only if the stream's last sequence is
    /// exactly this, else [`Error::WrongLastSequence`](crate::Error::WrongLastSequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_sequence: Option<u64>,
    /// Publish timeout, overriding the provider's default.
    #[serde(
        default,
        rename = "timeoutMs",
        with = "opt_duration_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl PublishOptions {
    /// The dedup id for `event`: `msg_id` if set, else the event id.
    pub fn dedup_id<'a>(&'a self, event: &'a Event) -> &'a str {
        self.msg_id.as_deref().unwrap_or(&event.id)
    }

    /// [`dedup_id`](Self::dedup_id), refused as the contract says when it
    /// cannot serve as one: an empty id (one key shared by every publish
    /// using it) or one with a control character (not a header value on
    /// NATS). Providers call it before storing or sending.
    ///
    /// ```
    /// use event_core::{Error, Event, PublishOptions};
    ///
    /// let event = Event::new("events.orders.created", "orders", "s", "src", serde_json::json!({}));
    /// assert_eq!(PublishOptions::default().checked_dedup_id(&event)?, event.id);
    /// let options = PublishOptions { msg_id: Some("order\n42".into()), ..Default::default() };
    /// assert!(matches!(options.checked_dedup_id(&event), Err(Error::InvalidConfig { .. })));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) with field
    /// `msg_id`.
    #[inline]
    pub fn checked_dedup_id<'a>(&'a self, event: &'a Event) -> crate::Result<&'a str> {
        let id = self.dedup_id(event);
        if usable_dedup_id(id) {
            Ok(id)
        } else {
            Err(crate::Error::invalid_config(
                "msg_id",
                format!("{id:?} must be non-empty without control characters"),
            ))
        }
    }
}

/// Whether `id` can serve as a dedup id: non-empty, no control character.
/// Printable ASCII (every generated event id) is settled in one byte pass
/// without an early exit, which the compiler vectorises, and without
/// decoding characters: this runs on every publish.
#[inline]
fn usable_dedup_id(id: &str) -> bool {
    let printable_ascii = id
        .bytes()
        .fold(true, |ok, b| ok & (b.wrapping_sub(0x20) < 0x5F));
    !id.is_empty() && (printable_ascii || !id.chars().any(char::is_control))
}

/// Options for creating a subscription (consumer).
///
/// In JSON (a persisted [`SubscriptionRecord`]) the durations are whole
/// milliseconds, `ackWaitMs` and `backoffMs`, rounded up: a wait promises
/// "not before", so one written and read back is never shorter, and a
/// sub-millisecond step never becomes the zero providers refuse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeOptions {
    /// Deliveries per event before it is given up (exhausted). `None`:
    /// unlimited. A final delivery left unsettled comes once more (the
    /// spare delivery, numbered `max_deliver + 1`; see the
    /// [`EventProvider`](crate::EventProvider) contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u64>,
    /// Redelivery delays: the n-th redelivery after an ack timeout waits
    /// `backoff[n-1]` (the last entry repeats). Empty: `ack_wait` each time.
    /// Consumer runners also use it as the `nak` delay.
    ///
    /// A backoff *replaces* `ack_wait` (as on JetStream): delivery number n
    /// may stay unsettled for `backoff[n-1]`, the first one for
    /// `backoff[0]`, before it is redelivered (see
    /// [`redelivery_delay`](Self::redelivery_delay)). A first step shorter
    /// than your handlers take gets events redelivered while they are still
    /// being handled, unless the handler (or a consumer runner, which does
    /// it for you) calls `in_progress` in time.
    #[serde(
        default,
        rename = "backoffMs",
        with = "vec_duration_ms",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub backoff: Vec<Duration>,
    /// Maximum delivered-but-unacknowledged events; delivery pauses at the
    /// limit. `None`: the provider default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ack_pending: Option<u64>,
    /// Where a newly created consumer starts.
    #[serde(default)]
    pub deliver_policy: DeliverPolicy,
    /// How long a delivered event may stay unacknowledged before it is
    /// redelivered. `None`: the provider default (30 s). Ignored where
    /// `backoff` is set: the backoff steps are then the ack waits.
    #[serde(
        default,
        rename = "ackWaitMs",
        with = "opt_duration_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub ack_wait: Option<Duration>,
}

impl SubscribeOptions {
    /// The default ack wait of conforming providers.
    pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

    /// The delay before redelivery number `redelivery` (1-based) after an ack
    /// timeout or a runner's nak: the backoff entry, or `ack_wait`. A
    /// provider uses it as the ack wait of delivery number `redelivery`.
    /// With neither set it is [`DEFAULT_ACK_WAIT`](Self::DEFAULT_ACK_WAIT),
    /// not a provider's own configured default: resolve `ack_wait` first if
    /// yours differs.
    pub fn redelivery_delay(&self, redelivery: u64) -> Duration {
        if self.backoff.is_empty() {
            return self.ack_wait.unwrap_or(Self::DEFAULT_ACK_WAIT);
        }
        let idx = usize::try_from(redelivery.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .min(self.backoff.len() - 1);
        self.backoff[idx]
    }
}

/// A subscriber's interest, as managed by `EventBus::update_subscription`.
///
/// ```
/// use event_core::SubscriptionFilter;
///
/// let filter = SubscriptionFilter {
///     subscriber_id: "analyst".to_string(),
///     subjects: vec!["events.market.>".to_string()],
///     durable: true,
/// };
/// assert_eq!(
///     serde_json::to_value(&filter).unwrap()["subscriberId"],
///     "analyst"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionFilter {
    /// Subscriber identifier.
    pub subscriber_id: String,
    /// Subject filters (wildcards allowed).
    pub subjects: Vec<String>,
    /// Whether the subscriber's consumers are durable.
    pub durable: bool,
}

/// A subscription as persisted by a `StateStore`: the filter and its options.
///
/// Serialises flat, as the original library's filter did:
/// `{"subscriberId": .., "subjects": [..], "durable": .., "options": {..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRecord {
    /// The filter.
    #[serde(flatten)]
    pub filter: SubscriptionFilter,
    /// Options for the subscriber's consumers, if any were set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SubscribeOptions>,
}

/// `d` in whole milliseconds, rounded up (saturating): a duration written
/// to JSON is a wait that promises "not before", so it is never shortened,
/// and a non-zero one never becomes the zero every provider refuses.
fn whole_millis_up(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_u64(super::whole_millis_up(*d)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

mod vec_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for d in v {
            seq.serialize_element(&super::whole_millis_up(*d))?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(Duration::from_millis)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_json_shape_matches_original() {
        let event = Event::typed("events.a.b", "a", "t.x", 2, "s", "src", json!({"k": 1}))
            .with_metadata("m", "v");
        let v = serde_json::to_value(&event).unwrap();
        for key in [
            "id",
            "subject",
            "category",
            "eventType",
            "version",
            "payload",
            "summary",
            "source",
            "timestamp",
            "metadata",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn old_events_without_new_fields_read_back() {
        let raw = r#"{"id":"evt-1","subject":"events.a.b","category":"a","payload":{},
            "summary":"s","source":"x","timestamp":5}"#;
        let e: Event = serde_json::from_str(raw).unwrap();
        assert_eq!(e.version, 1);
        assert_eq!(e.event_type, "");
        assert!(e.metadata.is_empty());
        assert!(!e.is_typed());
    }

    /// Producers in other languages write an absent map or string as `null`
    /// (Go's `encoding/json` marshals a nil map so): the fields that may be
    /// left out may also be `null`, and read as if left out.
    #[test]
    fn null_optional_fields_read_as_absent() {
        let raw = r#"{"id":"evt-1","subject":"events.a.b","category":"a","payload":{},
            "summary":"s","source":"x","timestamp":5,
            "eventType":null,"version":null,"metadata":null}"#;
        let e: Event = serde_json::from_str(raw).unwrap();
        assert_eq!(e.event_type, "");
        assert_eq!(e.version, 1);
        assert!(e.metadata.is_empty());
        // written back in the usual shape, not as null
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["metadata"], json!({}));
        assert_eq!(v["eventType"], json!(""));
        assert_eq!(v["version"], json!(1));
        // required fields stay required: null is not a subject
        let raw = raw.replace(r#""subject":"events.a.b""#, r#""subject":null"#);
        assert!(serde_json::from_str::<Event>(&raw).is_err());
        // a metadata value must still be a string
        let bad = r#"{"id":"evt-1","subject":"events.a.b","category":"a","payload":{},
            "summary":"s","source":"x","timestamp":5,"metadata":{"k":null}}"#;
        assert!(serde_json::from_str::<Event>(bad).is_err());
    }

    /// A blank event type (only whitespace) names no type a schema can be
    /// registered under, and schema validation takes such an event as
    /// untyped (event-schema's `UntypedPolicy`): `is_typed` says so too.
    #[test]
    fn a_blank_event_type_is_untyped() {
        let mut e = Event::new("events.a.b", "a", "s", "src", serde_json::json!({}));
        for blank in ["", " ", "\t\n", "\u{3000}"] {
            e.event_type = blank.to_owned();
            assert!(!e.is_typed(), "{blank:?}");
        }
        e.event_type = " order.created ".to_owned();
        assert!(e.is_typed());
    }

    #[test]
    fn options_round_trip_with_durations_in_ms() {
        let opts = SubscribeOptions {
            max_deliver: Some(5),
            backoff: vec![Duration::from_millis(100), Duration::from_secs(1)],
            max_ack_pending: Some(10),
            deliver_policy: DeliverPolicy::ByStartSequence { sequence: 7 },
            ack_wait: Some(Duration::from_secs(3)),
        };
        let v = serde_json::to_value(&opts).unwrap();
        assert_eq!(v["backoffMs"], json!([100, 1000]));
        assert_eq!(v["ackWaitMs"], json!(3000));
        assert_eq!(
            v["deliverPolicy"],
            json!({"type": "byStartSequence", "sequence": 7})
        );
        let back: SubscribeOptions = serde_json::from_value(v).unwrap();
        assert_eq!(back, opts);
        assert_eq!(
            serde_json::to_value(SubscribeOptions::default()).unwrap(),
            json!({"deliverPolicy": {"type": "all"}})
        );
    }

    /// A duration is written in whole milliseconds rounded up, never down:
    /// an ack wait, backoff step or publish timeout promises "not before"
    /// (the contract's Option values), and a valid sub-millisecond step
    /// written as 0 read back as one every provider refuses
    /// (`InvalidConfig`), so a persisted subscription could not be
    /// restored.
    #[test]
    fn durations_are_written_in_milliseconds_rounded_up() {
        let opts = SubscribeOptions {
            backoff: vec![
                Duration::from_micros(500),
                Duration::from_micros(1_500),
                Duration::from_millis(7),
            ],
            ack_wait: Some(Duration::from_nanos(1)),
            max_deliver: Some(5),
            ..SubscribeOptions::default()
        };
        let v = serde_json::to_value(&opts).unwrap();
        assert_eq!(v["backoffMs"], json!([1, 2, 7]));
        assert_eq!(v["ackWaitMs"], json!(1));
        let back: SubscribeOptions = serde_json::from_value(v).unwrap();
        for (read, written) in back.backoff.iter().zip(&opts.backoff) {
            assert!(read >= written, "{read:?} read back for {written:?}");
        }
        assert!(back.ack_wait >= opts.ack_wait);
        let publish = PublishOptions {
            timeout: Some(Duration::from_micros(2_001)),
            ..PublishOptions::default()
        };
        assert_eq!(
            serde_json::to_value(&publish).unwrap()["timeoutMs"],
            json!(3)
        );
        // zero stays zero, whole milliseconds stay as they are, and the
        // longest duration saturates
        let edges = SubscribeOptions {
            backoff: vec![Duration::ZERO, Duration::from_secs(2), Duration::MAX],
            ..SubscribeOptions::default()
        };
        assert_eq!(
            serde_json::to_value(&edges).unwrap()["backoffMs"],
            json!([0, 2000, u64::MAX])
        );
    }

    #[test]
    fn redelivery_delay_uses_backoff_then_repeats_last() {
        let mut opts = SubscribeOptions::default();
        assert_eq!(opts.redelivery_delay(1), SubscribeOptions::DEFAULT_ACK_WAIT);
        opts.backoff = vec![Duration::from_millis(10), Duration::from_millis(20)];
        assert_eq!(opts.redelivery_delay(1), Duration::from_millis(10));
        assert_eq!(opts.redelivery_delay(2), Duration::from_millis(20));
        assert_eq!(opts.redelivery_delay(9), Duration::from_millis(20));
        assert_eq!(opts.redelivery_delay(0), Duration::from_millis(10));
    }

    #[test]
    fn record_serialises_flat() {
        let rec = SubscriptionRecord {
            filter: SubscriptionFilter {
                subscriber_id: "a".into(),
                subjects: vec!["events.>".into()],
                durable: true,
            },
            options: None,
        };
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(
            v,
            json!({"subscriberId": "a", "subjects": ["events.>"], "durable": true})
        );
        let back: SubscriptionRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn publish_options_dedup_id_defaults_to_event_id() {
        let e = Event::new("events.a.b", "a", "s", "x", json!(null));
        assert_eq!(PublishOptions::default().dedup_id(&e), e.id);
        let o = PublishOptions {
            msg_id: Some("m".into()),
            ..Default::default()
        };
        assert_eq!(o.dedup_id(&e), "m");
    }
}

#[cfg(test)]
mod dedup_id_tests {
    use super::usable_dedup_id;

    #[test]
    fn dedup_ids_are_refused_exactly_for_empty_and_control_characters() {
        for id in ["evt-1", "order 42", "~!", "é", "注文-1", "a\u{A0}b"] {
            assert!(usable_dedup_id(id), "{id:?} refused");
        }
        // C0, DEL and C1 controls, in ASCII-only and non-ASCII ids
        for id in [
            "", "a\tb", "\u{0}", "a\u{7F}", "é\u{1F}", "a\u{85}b", "\u{9F}",
        ] {
            assert!(!usable_dedup_id(id), "{id:?} accepted");
        }
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let id = format!("x{c}");
            assert_eq!(usable_dedup_id(&id), !c.is_control(), "{c:?}");
        }
    }
}
