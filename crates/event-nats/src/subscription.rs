//! Pull-consumer subscriptions: [`NatsSubscription`] and its acker.

use crate::denial::{Action, Denial, Rule};
use crate::error::{self, PROVIDER};
use crate::provider::{DeletionWatch, Link, NatsProvider};
use crate::pull::Pull;
use crate::raw;
use crate::settings::{ConsumerSettings, LiveSettings};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, Acker as NatsMsgAcker};
use async_trait::async_trait;
use event_core::{
    Acker, DeliverPolicy, Error, LONGEST_WAIT, LiveAckWait, PendingEvent, ReceivedEvent, Result,
    SubscribeOptions, Subscription,
};
use futures_util::FutureExt;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Deliveries fetched one at a time at the start of a subscription, before
/// prefetching starts (see the crate docs).
const WARMUP: u64 = 8;
/// How long one pull request waits at the server for events.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Default `max_ack_pending` when the options leave it open.
const DEFAULT_MAX_ACK_PENDING: i64 = 1000;
/// Ephemeral consumers left behind by a crashed process vanish after this.
const EPHEMERAL_INACTIVE: Duration = Duration::from_secs(120);

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
fn server_max_deliver(n: u64) -> i64 {
    i64::try_from(n.saturating_add(1)).unwrap_or(i64::MAX)
}

/// `wait`, at most [`LONGEST_WAIT`] (a century). JetStream carries
/// durations as i64 nanoseconds (longer ones arrive wrapped:
/// `18_446_744_274 s` became 200 s, `Duration::MAX` unparsable, a nak delay
/// then a plain nak) and adds them to the current time, which overflows
/// past 2262 (an `i64::MAX` ack wait keeps nats-server busy). A longer
/// duration means "practically never", as on the memory provider.
fn jetstream_wait(wait: Duration) -> Duration {
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
fn consumer_differences(existing: &consumer::Config, desired: &pull::Config) -> Vec<String> {
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

enum Kind {
    /// Deleted when the subscription ends; recreated if the server dropped
    /// it (see [`NatsSubscription::resume_point`]).
    Ephemeral {
        config: Box<pull::Config>,
        /// Manual-mode deliveries handed out and not yet acked or
        /// terminated (a nak of a final delivery terminates it): a
        /// recreated consumer starts at the oldest of them. An event whose
        /// spare delivery came is struck off, settled or not: it is never
        /// delivered again. At most `max_ack_pending` are kept, the oldest
        /// dropped first: the server holds no more unsettled deliveries
        /// than that, so the others were ended on its side (evicted by the
        /// stream's limits, say) and will not come again.
        unsettled: Unsettled,
    },
    Durable,
}

/// Sequences of an ephemeral's manual deliveries that are not settled yet.
#[derive(Clone, Default)]
struct Unsettled(Arc<Mutex<BTreeSet<u64>>>);

impl Unsettled {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeSet<u64>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records delivery `seq` as handed out and unsettled, keeping at most
    /// `max` (the consumer's `max_ack_pending`: see [`Kind::Ephemeral`]).
    fn handed_out(&self, seq: u64, max: usize) {
        self.with(|set| {
            set.insert(seq);
            while set.len() > max.max(1) {
                set.pop_first();
            }
        });
    }
}

/// What the status a pull request ended with (`"<code>: <description>"`)
/// means for the next one.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Passes (a leadership change, too many waiting requests, an expired
    /// request): asked again.
    Passing,
    /// The request exceeds the consumer's `max_batch`, `max_expires` or
    /// `max_bytes`.
    Limits,
    /// No request gets past it (a push consumer has the name now).
    Never,
}

/// `None`: not a refusal (an error for the caller).
fn refusal_of(status: &str) -> Option<Refusal> {
    if status.contains("Exceeded MaxRequest") {
        Some(Refusal::Limits)
    } else if status.contains("Consumer is push based") {
        Some(Refusal::Never)
    } else if status.contains("409") || status.contains("408") {
        Some(Refusal::Passing)
    } else {
        None
    }
}

/// A consumer's limits on one pull request: JetStream answers a request
/// beyond them with a `409 Exceeded MaxRequest…` and delivers nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PullLimits {
    /// `max_batch` (0: none).
    max_batch: usize,
    /// `max_expires` (zero: none).
    max_expires: Duration,
}

impl PullLimits {
    pub(crate) fn of(config: &consumer::Config) -> Self {
        Self {
            max_batch: usize::try_from(config.max_batch.max(0)).unwrap_or(usize::MAX),
            max_expires: config.max_expires,
        }
    }

    /// `size` within `max_batch`.
    fn batch(self, size: usize) -> usize {
        if self.max_batch > 0 {
            size.min(self.max_batch)
        } else {
            size
        }
    }

    /// `expires` within `max_expires`.
    fn expires(self, expires: Duration) -> Duration {
        if self.max_expires.is_zero() {
            expires
        } else {
            expires.min(self.max_expires)
        }
    }
}

impl std::fmt::Display for PullLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.max_batch {
            0 => f.write_str("max_batch none")?,
            n => write!(f, "max_batch {n}")?,
        }
        if self.max_expires.is_zero() {
            f.write_str(", max_expires none")
        } else {
            write!(f, ", max_expires {:?}", self.max_expires)
        }
    }
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
fn ephemeral_replicas(stream: &async_nats::jetstream::stream::Config) -> usize {
    stream.num_replicas.max(1)
}

/// A subscription on one JetStream pull consumer.
pub(crate) struct NatsSubscription {
    provider: NatsProvider,
    consumer: PullConsumer,
    name: String,
    kind: Kind,
    max_deliver: Option<u64>,
    ack_wait: Duration,
    /// The consumer's backoff: the ack wait of each delivery.
    backoff: Vec<Duration>,
    max_ack_pending: usize,
    /// The consumer's limits on one pull request (a durable provisioned
    /// elsewhere may have them): pulls are sized within them.
    limits: PullLimits,
    /// A durable's settings as last read from the server, shared with the
    /// live ack waits of its deliveries and read again while in use
    /// (another subscription may change them: see [`crate::settings`]);
    /// `None` for an ephemeral. The fields above are copied from it.
    live: Option<Arc<LiveSettings>>,
    /// The version of `live` the fields above hold.
    live_version: u64,
    batch: Option<Pull>,
    auto_pending: Option<NatsMsgAcker>,
    handed_out: u64,
    last_call: Option<Instant>,
    avg_gap: Duration,
    last_batch: usize,
    last_sequence: u64,
    /// The highest stream sequence of an event received from the current
    /// stream: one it surely held (unlike `last_sequence`, which a
    /// recreation also sets to where it resumes).
    received_sequence: u64,
    /// When the server created the current consumer: a stream created
    /// later is not the one this subscription was reading (see
    /// [`stream_replaced`](Self::stream_replaced)).
    consumer_created: time::OffsetDateTime,
    /// The stream sequence the consumer started after (JetStream's
    /// delivered stream sequence at creation): where a recreated ephemeral
    /// resumes when it has handed nothing out.
    start_floor: u64,
    /// `batch` has delivered a message.
    batch_delivered: bool,
    /// A delivery taken from `batch` and not handed out yet: it stays here
    /// while the call waits (for a settings lookup), so a call cancelled
    /// meanwhile (a `select!` branch that lost, a timeout) leaves it to the
    /// next one instead of losing it (the server counted the delivery).
    held: Option<async_nats::jetstream::Message>,
    /// The connection was lost while `batch` was pending: its pull request
    /// is gone, only what it already received is left.
    stale: bool,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<name>`: where pulls are sent.
    pull_subject: String,
    /// Where acknowledgements go (shared with the deliveries' ackers).
    acks: Arc<AckScope>,
    /// The inbox of `batch`.
    pull_inbox: Option<Arc<str>>,
    /// Permission violations from this one on are not reported yet (see
    /// [`denied`](Self::denied)).
    since: u64,
    /// `close` was called: nothing more is delivered.
    closed: bool,
    /// The provider's deletion epoch this durable subscription saw last,
    /// and its watch on deletions of its name since it was opened (see
    /// [`deleted`](Self::deleted)); `None` for an ephemeral.
    epoch: u64,
    deletions: Option<DeletionWatch>,
    /// The durable this subscription reads was deleted: it ends, whatever
    /// consumer now has its name.
    gone: bool,
    /// `close` ran to its end. A close dropped part-way (a `timeout`, a
    /// `select!`) is not: the next `close` finishes it, and a drop without
    /// one deletes an ephemeral consumer as if `close` was never called.
    close_finished: bool,
}

/// What a subscription needs: publishing its pull requests
/// (`pull_subject`), subscribing to the inbox of its current pull,
/// publishing acknowledgements.
fn needs<'a>(pull_subject: &'a str, inbox: Option<&'a str>, acks: &'a AckScope) -> [Rule<'a>; 3] {
    [
        Rule::Publish(pull_subject),
        Rule::Subscribe(inbox.unwrap_or_default()),
        acks.rule(),
    ]
}

/// Where a subscription's acknowledgements go, to recognise their
/// permission violations.
struct AckScope {
    link: Arc<Link>,
    stream: Arc<str>,
    consumer: String,
}

impl AckScope {
    fn rule(&self) -> Rule<'_> {
        Rule::Ack {
            stream: &self.stream,
            name: &self.consumer,
        }
    }

    /// A violation of an acknowledgement recorded since `since`, as the
    /// error of operation `what`.
    fn denied(&self, since: u64, what: &str) -> Result<()> {
        match self.link.denials.find(since, &[self.rule()]) {
            Some(denial) => Err(denial.error(&format!("{what} on consumer {}", self.consumer))),
            None => Ok(()),
        }
    }
}

/// What a wait for the next delivery ended with.
// a short-lived value on the stack, matched at once: boxing the delivery
// would allocate for each one
#[allow(clippy::large_enum_variant)]
enum Woken {
    Delivery(Option<std::result::Result<async_nats::jetstream::Message, String>>),
    ConnectionLost,
    Denied(Denial),
}

impl NatsSubscription {
    pub(crate) async fn ephemeral(
        provider: NatsProvider,
        filter: &str,
        options: &SubscribeOptions,
    ) -> Result<Self> {
        let mut config = consumer_config(None, filter, options)?;
        let name = format!("eph-{}", uuid::Uuid::new_v4().simple());
        config.name = Some(name.clone());
        config.inactive_threshold = EPHEMERAL_INACTIVE;
        config.num_replicas = ephemeral_replicas(&provider.inner.stream.cached_info().config);
        let since = provider.inner.link.denials.mark();
        // the server may create the consumer although this call never
        // returns it (dropped while waiting for the answer, or timed out):
        // it is deleted then, not left for the inactivity threshold
        let mut orphan = OrphanGuard {
            provider: &provider,
            name: Some(&name),
        };
        let created = create(&provider, &name, config.clone()).await;
        // a refusal the server answered created nothing
        if !matches!(created, Err(Error::Timeout { .. } | Error::Connection(_))) {
            orphan.name = None;
        }
        let consumer = created?;
        drop(orphan);
        Ok(Self::new(
            provider,
            consumer,
            name,
            Kind::Ephemeral {
                config: Box::new(config),
                unsettled: Unsettled::default(),
            },
            since,
        ))
    }

    /// Creates durable `name`, or resumes it (applying changed options or
    /// refusing them, see [`resume`]). A creation that loses a race with
    /// another client creating the same durable (another process, maybe
    /// with other options) finds the consumer existing and is settled as if
    /// it had existed: the loser gets what a second caller would get.
    pub(crate) async fn durable(
        provider: NatsProvider,
        name: &str,
        filter: &str,
        options: &SubscribeOptions,
    ) -> Result<Self> {
        let desired = consumer_config(Some(name), filter, options)?;
        let since = provider.inner.link.denials.mark();
        // read before the consumer is looked up: a deletion from here on
        // may have deleted the one this subscription gets
        // (the epoch first: a deletion between the two is counted before
        // the watch starts, and the lookup below sees it)
        let epoch = provider.inner.unsubscribed.epoch();
        let deletions = provider.inner.unsubscribed.watch(name);
        let consumer = match lookup(&provider, name).await? {
            Some(existing) => resume(&provider, name, &existing, &desired).await?,
            None => match create(&provider, name, desired.clone()).await {
                Ok(created) => created,
                // the server refused the creation: a durable of that name
                // created meanwhile with other options is refused as an
                // update of it (JetStream creates or updates)
                Err(err @ Error::InvalidConfig { .. }) => match lookup(&provider, name).await? {
                    Some(existing) => resume(&provider, name, &existing, &desired).await?,
                    None => return Err(err),
                },
                Err(err) => return Err(err),
            },
        };
        let mut sub = Self::new(provider, consumer, name.to_string(), Kind::Durable, since);
        let info = sub.consumer.cached_info();
        sub.live = Some(LiveSettings::new(
            ConsumerSettings::of(&info.config),
            Instant::now(),
            sub.provider.inner.stream.clone(),
            sub.name.clone(),
            sub.provider.consumer_timeout(),
        ));
        sub.epoch = epoch;
        sub.deletions = Some(deletions);
        Ok(sub)
    }

    /// `since`: the permission-violation mark taken before the consumer was
    /// created.
    fn new(
        provider: NatsProvider,
        consumer: PullConsumer,
        name: String,
        kind: Kind,
        since: u64,
    ) -> Self {
        let info = consumer.cached_info();
        let max_deliver = max_deliver_of(&info.config);
        let ack_wait = info.config.ack_wait;
        let backoff = info.config.backoff.clone();
        let start_floor = info.delivered.stream_sequence;
        let consumer_created = info.created;
        let max_ack_pending = usize::try_from(info.config.max_ack_pending)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(usize::MAX);
        let pull_subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{name}",
            provider.inner.stream_name
        );
        let acks = Arc::new(AckScope {
            link: provider.inner.link.clone(),
            stream: provider.inner.stream_name.clone(),
            consumer: name.clone(),
        });
        let limits = PullLimits::of(&info.config);
        Self {
            provider,
            consumer,
            name,
            acks,
            kind,
            max_deliver,
            ack_wait,
            backoff,
            max_ack_pending,
            limits,
            live: None,
            live_version: 0,
            batch: None,
            auto_pending: None,
            handed_out: 0,
            last_call: None,
            avg_gap: Duration::ZERO,
            last_batch: 1,
            last_sequence: 0,
            received_sequence: 0,
            consumer_created,
            start_floor,
            batch_delivered: false,
            held: None,
            stale: false,
            pull_subject,
            pull_inbox: None,
            since,
            epoch: 0,
            deletions: None,
            gone: false,
            closed: false,
            close_finished: false,
        }
    }

    /// How many events the next pull request asks for.
    ///
    /// One at a time for the first [`WARMUP`] deliveries, so a caller that
    /// stops early leaves nothing fetched-but-unseen behind; then doubling,
    /// bounded by `max_prefetch`, `max_ack_pending` and by how many events the
    /// caller handles in a quarter of the ack wait (so prefetched events are
    /// not redelivered while they wait in the buffer).
    fn next_batch_size(&self) -> usize {
        // with max_deliver, a fetched event the caller never sees (the
        // subscription is closed or dropped first) loses one of its
        // deliveries: a backlog read through a few restarts would use up
        // its events' attempts, the spare included, unseen
        if self.handed_out < WARMUP || self.max_deliver.is_some() {
            return self.limits.batch(1);
        }
        let max = self
            .provider
            .inner
            .options
            .max_prefetch
            .min(self.max_ack_pending);
        let by_pace = if self.avg_gap.is_zero() {
            max
        } else {
            let budget = self.ack_wait.as_nanos() / 4;
            usize::try_from(budget / self.avg_gap.as_nanos().max(1)).unwrap_or(max)
        };
        self.limits.batch(
            (self.last_batch.saturating_mul(2))
                .min(max)
                .min(by_pace)
                .max(1),
        )
    }

    fn note_call(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.last_call {
            let gap = now - last;
            // exponential moving average, weight 1/8
            self.avg_gap = if self.avg_gap.is_zero() {
                gap
            } else {
                (self.avg_gap * 7 + gap) / 8
            };
        }
        self.last_call = Some(now);
    }

    async fn start_batch(&mut self) -> Result<Pull> {
        let size = self.next_batch_size();
        self.last_batch = size;
        let request = BatchConfig {
            batch: size,
            expires: Some(self.limits.expires(PULL_EXPIRES)),
            ..BatchConfig::default()
        };
        let pull = Pull::start(&self.provider, &self.consumer, &self.name, request).await?;
        self.pull_inbox = Some(pull.inbox());
        Ok(pull)
    }

    /// The oldest permission violation not reported yet of what this
    /// subscription needs: its pull requests, the inbox of its current
    /// pull, the acknowledgements of its deliveries. Violations of other
    /// subjects are skipped for good (one atomic load per call while the
    /// connection reports none).
    fn unreported_denial(&mut self) -> Option<Denial> {
        let denials = &self.provider.inner.link.denials;
        let mark = denials.mark();
        if mark <= self.since {
            return None;
        }
        let rules = needs(&self.pull_subject, self.pull_inbox.as_deref(), &self.acks);
        let found = denials.find(self.since, &rules);
        if found.is_none() {
            self.since = mark;
        }
        found
    }

    /// Reports `denial` (once): a denied pull or pull inbox ends the
    /// current pull (the server never answers it; the next call pulls
    /// again); a denied ack leaves the delivery to be redelivered after its
    /// ack wait.
    fn denied(&mut self, denial: &Denial) -> Error {
        self.since = self.since.max(denial.id + 1);
        if denial.action == Action::Subscribe || denial.subject == self.pull_subject {
            self.batch = None;
            self.pull_inbox = None;
        }
        denial.error(&format!("consumer {}", self.name))
    }

    /// Where a recreated ephemeral consumer starts: at the oldest delivery
    /// handed out and not settled (the old consumer's acks are lost with it,
    /// so those are delivered again), else after the last event handed out,
    /// else where the lost consumer started, so events published while it
    /// was gone are not skipped. `None` keeps the original policy: a
    /// `LastPerSubject` consumer that handed nothing out selects again.
    fn resume_point(&self) -> Option<u64> {
        let Kind::Ephemeral { config, unsettled } = &self.kind else {
            return None;
        };
        // (an auto-ack delivery is acked before the next pull: finished)
        if let Some(seq) = unsettled.with(|set| set.first().copied()) {
            return Some(seq);
        }
        if self.last_sequence > 0 {
            return Some(self.last_sequence + 1);
        }
        match config.deliver_policy {
            consumer::DeliverPolicy::LastPerSubject => None,
            _ => Some(self.start_floor + 1),
        }
    }

    /// Whether `stream` (the provider's stream as it is now) is not the
    /// stream the lost consumer read, but one created in its place (the
    /// server restarted on an empty store, or the stream was deleted and
    /// created again): created after that consumer, or ending before an
    /// event the subscription received from the old one. Its sequences
    /// started again at 1, so a position in the old stream means nothing
    /// there. (A stream's creation time survives restarts; a consumer is
    /// always created after its stream, on the same clock: the server's,
    /// or in a cluster the meta leader's.)
    fn stream_replaced(&self, stream: &async_nats::jetstream::stream::Info) -> bool {
        stream.created > self.consumer_created
            || stream.state.last_sequence < self.received_sequence
    }

    /// Recreates an ephemeral consumer the server dropped (a restart, or it
    /// was deleted), at [`resume_point`](Self::resume_point). Delivery
    /// counts start again at 1 on the new consumer.
    ///
    /// When the stream itself was replaced
    /// ([`stream_replaced`](Self::stream_replaced)), every event of the new
    /// stream was stored after this subscription started, so the new
    /// consumer starts at the new stream's first event (a `ByStartTime`
    /// subscription keeps its start time, which means the same in any
    /// stream). What the old stream held beyond what was received, and the
    /// deliveries handed out and not settled, were lost with it: the
    /// server cannot say how many, so no `Lagged` is reported; a warning
    /// is logged.
    async fn recreate_ephemeral(&mut self) -> Result<bool> {
        let Kind::Ephemeral { config, unsettled } = &self.kind else {
            return Ok(false);
        };
        let mut config = (**config).clone();
        let stream = self
            .provider
            .stream_info(&format!("recreating consumer {}", self.name))
            .await?;
        let replaced = self.stream_replaced(&stream);
        config.num_replicas = ephemeral_replicas(&stream.config);
        let resume = if replaced {
            if !matches!(
                config.deliver_policy,
                consumer::DeliverPolicy::ByStartTime { .. }
            ) {
                config.deliver_policy = consumer::DeliverPolicy::All;
            }
            None
        } else {
            self.resume_point()
        };
        if let Some(start_sequence) = resume {
            config.deliver_policy = consumer::DeliverPolicy::ByStartSequence { start_sequence };
        }
        let lost_unsettled = unsettled.with(|set| set.len());
        let consumer = create(&self.provider, &self.name, config).await?;
        if replaced {
            tracing::warn!(
                consumer = %self.name,
                stream = %self.provider.inner.stream_name,
                received_up_to = self.received_sequence,
                lost_unsettled,
                "the stream was replaced (created again: a server restarted on an empty store, \
                 or the stream deleted and created again) while this ephemeral consumer was lost: \
                 recreated at the new stream's first event; events of the old stream not \
                 received yet, and deliveries not settled, are gone with it"
            );
            self.last_sequence = 0;
            self.received_sequence = 0;
        } else {
            tracing::warn!(
                consumer = %self.name,
                resume_at = ?resume,
                lost_unsettled,
                "the server lost this ephemeral consumer: recreated (unsettled deliveries \
                 come again)"
            );
        }
        self.start_floor = consumer.cached_info().delivered.stream_sequence;
        self.consumer_created = consumer.cached_info().created;
        self.limits = PullLimits::of(&consumer.cached_info().config);
        self.consumer = consumer;
        if let Some(start_sequence) = resume {
            // lost again before redelivering: resume here again
            self.last_sequence = start_sequence.saturating_sub(1);
        }
        // deliveries of the old consumer come again from the new one; a fresh
        // set, so late settlements of the old deliveries cannot strike the
        // new ones
        if let Kind::Ephemeral { unsettled, .. } = &mut self.kind {
            *unsettled = Unsettled::default();
        }
        Ok(true)
    }

    /// Re-reads `max_deliver`, the ack wait and the backoff of a durable
    /// from the server: another subscription on it may have changed them,
    /// and a redelivery is when the final-delivery flag and the wait matter
    /// (redeliveries are rare, so this costs a request only on the failure
    /// path). Keeps the values it has if the server does not answer in time.
    /// Also re-reads the consumer's pull request limits. Whether the
    /// settings were read.
    async fn refresh_settings(&mut self) -> bool {
        if !matches!(self.kind, Kind::Durable) {
            return false;
        }
        let sent = Instant::now();
        let lookup = self.provider.inner.stream.consumer_info(&self.name);
        match tokio::time::timeout(self.provider.consumer_timeout(), lookup).await {
            Ok(Ok(info)) => {
                let settings = ConsumerSettings::of(&info.config);
                match &self.live {
                    // shared with the deliveries' live ack waits (unless a
                    // later background read was recorded meanwhile)
                    Some(live) => live.store(settings, sent),
                    None => self.apply(&settings),
                }
                self.sync_settings();
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(consumer = %self.name, error = %e, "could not refresh consumer settings");
                false
            }
            Err(_) => {
                tracing::debug!(consumer = %self.name, "consumer settings refresh timed out");
                false
            }
        }
    }

    /// Copies a durable's settings read (in the background) since the last
    /// copy into the subscription's fields.
    fn sync_settings(&mut self) {
        if let Some((settings, version)) = self
            .live
            .as_ref()
            .and_then(|live| live.changed_since(self.live_version))
        {
            self.apply(&settings);
            self.live_version = version;
        }
    }

    fn apply(&mut self, settings: &ConsumerSettings) {
        self.max_deliver = settings.max_deliver;
        self.ack_wait = settings.ack_wait;
        self.backoff.clone_from(&settings.backoff);
        self.limits = settings.limits;
    }

    /// Keeps a durable's settings current while the subscription is in use
    /// (handing out deliveries, keeping those it fetched ahead alive): a
    /// background read when they are older than the bound
    /// ([`crate::settings::REFRESH_AFTER`]), and what earlier reads found.
    /// Never waits for the server.
    fn follow_settings(&mut self) {
        if let Some(live) = &self.live {
            live.refresh_if_stale();
        }
        self.sync_settings();
    }

    /// [`refresh_settings`](Self::refresh_settings) before the held
    /// delivery is handed out, if it is a redelivery. The delivery stays
    /// held while this waits.
    async fn refresh_for_held(&mut self) {
        let redelivered = self
            .held
            .as_ref()
            .and_then(|message| message.info().ok())
            .is_some_and(|info| info.delivered > 1);
        if redelivered {
            self.refresh_settings().await;
        }
    }

    /// Whether the server still has the consumer; a lookup that fails
    /// otherwise than with "not found" (a timeout) says yes, one the
    /// server denies is [`Error::Authentication`].
    async fn consumer_exists(&self) -> Result<bool> {
        match lookup(&self.provider, &self.name).await {
            Ok(found) => Ok(found.is_some()),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(err @ Error::Authentication(_)) => Err(err),
            Err(_) => Ok(true),
        }
    }

    /// The server lost this subscription's consumer: an ephemeral is
    /// recreated, a durable (deleted by someone else) is `NotFound`, from
    /// then on.
    async fn replace_lost_consumer(&mut self) -> Result<()> {
        if self.recreate_ephemeral().await? {
            return Ok(());
        }
        self.gone = true;
        Err(self.gone_error())
    }

    fn gone_error(&self) -> Error {
        Error::NotFound {
            kind: "consumer",
            name: self.name.clone(),
        }
    }

    /// Whether this subscription's durable was deleted through this
    /// provider (or a clone) since it was opened: a pull request goes to
    /// whatever consumer has the name now, possibly a new durable, which
    /// this subscription must not read from. An atomic load unless some
    /// durable was deleted since the last call.
    fn deleted(&mut self) -> bool {
        let Some(deletions) = &self.deletions else {
            return false;
        };
        let epoch = self.provider.inner.unsubscribed.epoch();
        if epoch != self.epoch {
            self.epoch = epoch;
            if deletions.deleted() {
                self.gone = true;
            }
        }
        self.gone
    }

    async fn receive(&mut self) -> Result<Option<(ReceivedEvent, NatsMsgAcker)>> {
        if self.closed {
            return Ok(None);
        }
        if self.deleted() {
            return Err(self.gone_error());
        }
        self.note_call();
        self.follow_settings();
        self.keep_buffer_alive().await;
        loop {
            if let Some(denial) = self.unreported_denial() {
                return Err(self.denied(&denial));
            }
            if self.held.is_some() {
                self.refresh_for_held().await;
                if let Some(message) = self.held.take() {
                    return self.decode(message).await.map(Some);
                }
            }
            if self.batch.is_none() {
                let link = &self.provider.inner.link;
                if !link.wait_connected(self.provider.consumer_timeout()).await {
                    return Err(self.connection_lost());
                }
                self.batch = Some(self.start_batch().await?);
                self.batch_delivered = false;
                self.stale = false;
            }
            let Some(batch) = self.batch.as_mut() else {
                continue;
            };
            let next = if self.stale {
                // the pull request died with the connection: hand out what
                // was already received, then pull again
                match batch.next().now_or_never() {
                    Some(next) => next,
                    None => {
                        self.batch = None;
                        continue;
                    }
                }
            } else {
                let woken = {
                    let link = &self.provider.inner.link;
                    let lost = link.lost.notified();
                    tokio::pin!(lost);
                    // registered before the state is read: no loss is missed
                    lost.as_mut().enable();
                    if link.is_connected() {
                        let rules =
                            needs(&self.pull_subject, self.pull_inbox.as_deref(), &self.acks);
                        tokio::select! {
                            biased;
                            next = batch.next() => Woken::Delivery(next),
                            () = lost => Woken::ConnectionLost,
                            denial = link.denials.wait(self.since, &rules) => Woken::Denied(denial),
                        }
                    } else {
                        Woken::ConnectionLost
                    }
                };
                match woken {
                    Woken::Delivery(next) => next,
                    Woken::ConnectionLost => {
                        self.stale = true;
                        continue;
                    }
                    Woken::Denied(denial) => return Err(self.denied(&denial)),
                }
            };
            match next {
                None => {
                    self.batch = None;
                    // a pull request to a consumer the server no longer has
                    // is not answered at all: it ends like an idle one, by
                    // expiring, so an empty pull asks whether it still exists
                    if !std::mem::take(&mut self.batch_delivered) && !self.consumer_exists().await?
                    {
                        self.replace_lost_consumer().await?;
                    }
                }
                Some(Err(err)) => {
                    self.batch = None;
                    let text = err.to_string();
                    tracing::debug!(consumer = %self.name, error = %text, "pull request ended");
                    // the consumer this pull was sent to was deleted; one of
                    // the same name may exist already, which is not ours
                    if text.contains("Consumer Deleted") || !self.consumer_exists().await? {
                        self.replace_lost_consumer().await?;
                        continue;
                    }
                    match refusal_of(&text) {
                        Some(Refusal::Passing) => {
                            // max waiting, leadership change: ask again
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        Some(Refusal::Limits) => {
                            // pulls are sized within the limits read when
                            // the consumer was opened: someone changed
                            // them since, or the server reads them
                            // otherwise. Asked again if they changed (or
                            // could not be read); the same request again
                            // would be refused forever
                            let before = self.limits;
                            if !self.refresh_settings().await && matches!(self.kind, Kind::Durable)
                            {
                                // not read (a timeout, a lost connection):
                                // transient, and the caller's next call
                                // reads them again, rather than a loop
                                // here that may never end
                                return Err(Error::Connection(format!(
                                    "pull from consumer {}: {text}, and its settings could not \
                                     be read again to size the next pull",
                                    self.name
                                )));
                            }
                            if self.limits != before {
                                continue;
                            }
                            return Err(self.refused(&text));
                        }
                        Some(Refusal::Never) => {
                            return Err(Error::Conflict {
                                resource: format!("consumer {}", self.name),
                                reason: format!(
                                    "JetStream refuses every pull request to it ({text}): a \
                                     consumer of another kind has the name now; unsubscribe it \
                                     or use another name"
                                ),
                            });
                        }
                        None => {}
                    }
                    return Err(Error::Connection(format!(
                        "pull from consumer {}: {text}",
                        self.name
                    )));
                }
                Some(Ok(message)) => {
                    self.batch_delivered = true;
                    if self.before_start(&message) {
                        // settled so that it is not redelivered (and does
                        // not hold a place under max_ack_pending)
                        if let Err(e) = message.ack_with(AckKind::Ack).await {
                            tracing::debug!(consumer = %self.name, error = %e, "could not settle an event before the start sequence");
                        }
                        continue;
                    }
                    self.held = Some(message);
                }
            }
        }
    }

    /// Restarts the ack timers of the deliveries fetched ahead that have
    /// waited a quarter of the shortest ack wait (see [`Pull::keep_alive`]).
    async fn keep_buffer_alive(&mut self) {
        // (a pull that died with the connection still holds what it
        // received: kept alive again once the connection is back)
        if !self.provider.inner.link.is_connected() {
            return;
        }
        if let Some(batch) = self.batch.as_mut() {
            let wait = self
                .backoff
                .iter()
                .copied()
                .fold(self.ack_wait, Duration::min);
            batch.keep_alive(wait).await;
        }
    }

    /// Whether `message` comes before the consumer's start sequence:
    /// JetStream starts a `ByStartSequence` consumer whose start is beyond
    /// the stream's end at the next event stored, whatever its sequence,
    /// while the contract delivers events from that sequence on.
    fn before_start(&self, message: &async_nats::jetstream::Message) -> bool {
        let consumer::DeliverPolicy::ByStartSequence { start_sequence } =
            self.consumer.cached_info().config.deliver_policy
        else {
            return false;
        };
        message
            .info()
            .is_ok_and(|info| info.stream_sequence < start_sequence)
    }

    /// The ack wait JetStream applies to delivery number `delivery`: the
    /// consumer's backoff entry for it (the last one repeating), or its
    /// `ack_wait` without a backoff.
    fn ack_wait_of(&self, delivery: u64) -> Duration {
        let index = usize::try_from(delivery.saturating_sub(1)).unwrap_or(usize::MAX);
        match self.backoff.get(index).or(self.backoff.last()) {
            Some(wait) => *wait,
            None => self.ack_wait,
        }
    }

    /// The server refuses this consumer's pull requests for their size or
    /// expiry, with `status`, although they keep within the limits it
    /// reports (a `409` no retry gets past).
    fn refused(&self, status: &str) -> Error {
        Error::Conflict {
            resource: format!("consumer {}", self.name),
            reason: format!(
                "JetStream refuses its pull requests ({status}), although they keep within \
                 the limits it reports ({}); change the consumer (made elsewhere?) or \
                 unsubscribe it",
                self.limits
            ),
        }
    }

    fn connection_lost(&self) -> Error {
        let url = crate::config::redact_url(&self.provider.inner.config.url);
        if let Some(refusal) = self.provider.inner.link.credentials.refused() {
            return refusal.error(&format!("consumer {}", self.name), &url);
        }
        Error::Connection(format!(
            "consumer {}: not connected to {} for {:?} (reconnecting; the subscription \
             resumes when called again after the reconnection)",
            self.name,
            url,
            self.provider.consumer_timeout()
        ))
    }

    async fn decode(
        &mut self,
        message: async_nats::jetstream::Message,
    ) -> Result<(ReceivedEvent, NatsMsgAcker)> {
        let (sequence, delivered, stream) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                u64::try_from(info.delivered).unwrap_or(1).max(1),
                info.stream.to_string(),
            ),
            Err(e) => {
                return Err(Error::provider(
                    PROVIDER,
                    format!("delivery without JetStream metadata: {e}"),
                ));
            }
        };
        self.last_sequence = self.last_sequence.max(sequence);
        self.received_sequence = self.received_sequence.max(sequence);
        let subject = message.subject.to_string();
        let (message, acker) = message.split();
        match crate::stored::decode(&subject, &message.payload) {
            Ok(event) => {
                self.handed_out += 1;
                let stream = if stream == *self.provider.inner.stream_name {
                    self.provider.inner.stream_name.clone()
                } else {
                    Arc::from(stream.as_str())
                };
                Ok((
                    ReceivedEvent {
                        event: Arc::new(event),
                        sequence,
                        num_delivered: delivered,
                        stream,
                    },
                    acker,
                ))
            }
            Err(reason) => {
                if let Err(term_err) = acker.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %term_err, sequence, "could not terminate an undecodable message");
                }
                tracing::warn!(sequence, subject = %subject, error = %reason, "terminated undecodable message");
                Err(crate::stored::undecodable(
                    subject,
                    sequence,
                    reason,
                    &message.payload,
                ))
            }
        }
    }

    /// On close: naks the deliveries received and never handed out (fetched
    /// ahead, or held by a cancelled call), so that the durable's next
    /// subscription, here or in another process, gets them at once instead
    /// of after the ack wait. An ephemeral is deleted instead; a delivery
    /// still in flight from the server is left to the ack wait. Bounded by
    /// `deadline` (close's: one request timeout for all its waits).
    async fn hand_back_unseen(&mut self, deadline: tokio::time::Instant) {
        if !matches!(self.kind, Kind::Durable) {
            self.held = None;
            self.batch = None;
            return;
        }
        if self.batch.is_some() {
            // A round trip first: what the server sent before it answers
            // is then received (and not discarded when the pull's
            // subscription ends below). The held delivery and the pull stay
            // in place meanwhile: a close dropped here leaves them to the
            // next close.
            let _ = tokio::time::timeout_at(deadline, self.provider.inner.client.flush()).await;
        }
        let mut unseen: Vec<async_nats::jetstream::Message> =
            self.held.take().into_iter().collect();
        if let Some(mut pull) = self.batch.take() {
            // only what was received: `next` is cancel-safe
            while let Some(Some(Ok(message))) = pull.next().now_or_never() {
                unseen.push(message);
            }
        }
        if unseen.is_empty() {
            return;
        }
        let count = unseen.len();
        let naks = async {
            for message in &unseen {
                if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                    tracing::debug!(consumer = %self.name, error = %e, "could not hand back a fetched event");
                }
            }
        };
        if tokio::time::timeout_at(deadline, naks).await.is_err() {
            tracing::debug!(consumer = %self.name, "handing back fetched events timed out");
        }
        tracing::debug!(consumer = %self.name, count, "handed back events fetched ahead and never handed out");
    }

    async fn ack_auto_pending(&mut self) {
        let Some(acker) = self.auto_pending.take() else {
            return;
        };
        // bounded: with the connection down and the client's buffer full it
        // would wait for the reconnection (see `NatsAcker::send`)
        let timeout = self.provider.consumer_timeout();
        match tokio::time::timeout(timeout, acker.ack()).await {
            Ok(Ok(())) => {}
            // the event is redelivered: at-least-once still holds
            Ok(Err(e)) => tracing::warn!(consumer = %self.name, error = %e, "auto-ack failed"),
            Err(_) => {
                tracing::warn!(consumer = %self.name, "auto-ack timed out (connection lost?)");
            }
        }
    }
}

/// Consumer `name`'s info, `None` when the stream has no such consumer.
async fn lookup(provider: &NatsProvider, name: &str) -> Result<Option<consumer::Info>> {
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
async fn create(provider: &NatsProvider, name: &str, config: pull::Config) -> Result<PullConsumer> {
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
fn durable_update(
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
async fn resume(
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
fn filter_update_unsafe(version: &str) -> bool {
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
/// missing stream is `NotFound` naming the stream, another refusal is
/// `InvalidConfig` (the options).
fn consumer_error(
    provider: &NatsProvider,
    name: &str,
    err: impl Into<event_core::BoxError>,
) -> Error {
    let timeout = provider.consumer_timeout();
    match provider.stream_error(name, err, timeout) {
        Error::Provider { source, .. } => Error::invalid_config(
            "subscribe options",
            format!("JetStream refused consumer {name}: {source}"),
        ),
        other => other,
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Result<Option<ReceivedEvent>> {
        self.ack_auto_pending().await;
        match self.receive().await? {
            Some((received, acker)) => {
                self.auto_pending = Some(acker);
                Ok(Some(received))
            }
            None => Ok(None),
        }
    }

    async fn next_manual_ack(&mut self) -> Result<Option<PendingEvent>> {
        // asking for the next event settles an auto-ack one, in either mode
        self.ack_auto_pending().await;
        match self.receive().await? {
            Some((received, acker)) => {
                let delivery = received.num_delivered;
                let wait = self.ack_wait_of(delivery);
                let last = self
                    .max_deliver
                    .is_some_and(|max| received.num_delivered >= max);
                // the spare delivery is never delivered again, settled or
                // not: a recreated consumer must not resume at it, although
                // the final delivery before it, dropped unsettled, left its
                // sequence in the set
                let spare = self
                    .max_deliver
                    .is_some_and(|max| received.num_delivered > max);
                let unsettled = match &self.kind {
                    Kind::Ephemeral { unsettled, .. } if spare => {
                        unsettled.with(|set| set.remove(&received.sequence));
                        None
                    }
                    Kind::Ephemeral { unsettled, .. } => {
                        unsettled.handed_out(received.sequence, self.max_ack_pending);
                        Some((unsettled.clone(), received.sequence))
                    }
                    Kind::Durable => None,
                };
                let pending = PendingEvent::new(
                    received,
                    self.max_deliver,
                    Box::new(NatsAcker {
                        acker,
                        timeout: self.provider.consumer_timeout(),
                        unsettled,
                        acks: self.acks.clone(),
                        since: self.provider.inner.link.denials.mark(),
                        last,
                    }),
                )
                .with_ack_wait(wait);
                Ok(Some(match &self.live {
                    // another subscription may change a durable's wait while
                    // this delivery is held: reported live
                    Some(live) => {
                        let live = live.clone();
                        pending.with_live_ack_wait(LiveAckWait::new(move || live.wait_of(delivery)))
                    }
                    None => pending,
                }))
            }
            None => Ok(None),
        }
    }

    async fn keep_alive(&mut self) -> Result<()> {
        if !self.closed {
            self.follow_settings();
            self.keep_buffer_alive().await;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if self.close_finished {
            return Ok(());
        }
        let result = self.close_now().await;
        self.close_finished = true;
        result
    }
}

impl NatsSubscription {
    /// [`Subscription::close`]'s work; run again in full if a call was
    /// dropped before its end (each step is harmless to repeat).
    async fn close_now(&mut self) -> Result<()> {
        self.closed = true;
        self.ack_auto_pending().await;
        let timeout = self.provider.consumer_timeout();
        // the waits for the server below share one request timeout: with
        // the server down or stalled, each would otherwise wait it out
        let deadline = tokio::time::Instant::now() + timeout;
        self.hand_back_unseen(deadline).await;
        if let Kind::Ephemeral { .. } = self.kind {
            let delete = async {
                match self.provider.inner.stream.delete_consumer(&self.name).await {
                    Ok(_) => Ok(()),
                    Err(e) => match error::map(&self.name, e, timeout) {
                        Error::NotFound { .. } => Ok(()),
                        other => Err(other),
                    },
                }
            };
            let op = format!("closing consumer {}", self.name);
            let rules = self.provider.consumer_rules(&self.name);
            self.provider.guarded(&op, &rules, delete).await?;
        }
        // the flush waits for a connection: bounded, or a close while the
        // server is down would never return
        match tokio::time::timeout_at(deadline, self.provider.inner.client.flush()).await {
            Ok(flushed) => flushed.map_err(|e| error::map("flush", e, timeout))?,
            Err(_) => {
                return Err(Error::Timeout {
                    operation: format!(
                        "closing consumer {}: flushing its acknowledgements (connection lost?)",
                        self.name
                    ),
                    elapsed: timeout,
                });
            }
        }
        // the server answered the flush after the acknowledgements: a
        // violation it reported for one is (almost always) recorded by now
        self.acks.denied(self.since, "closing")
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        if self.close_finished {
            return;
        }
        if let Kind::Ephemeral { .. } = self.kind {
            delete_in_background(&self.provider, std::mem::take(&mut self.name));
        }
    }
}

/// Deletes short-lived consumer `name` (an ephemeral, or one of
/// `history`'s) from a spawned task, when dropped inside a tokio runtime
/// (outside one, or in one shutting down, the server removes it after its
/// inactivity threshold, [`EPHEMERAL_INACTIVE`] for an ephemeral).
pub(crate) fn delete_in_background(provider: &NatsProvider, name: String) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let stream = provider.inner.stream.clone();
        handle.spawn(async move {
            if let Err(e) = stream.delete_consumer(&name).await {
                tracing::debug!(consumer = %name, error = %e, "short-lived consumer cleanup");
            }
        });
    }
}

/// Deletes the ephemeral consumer being created unless `name` is cleared
/// once the creation was answered: a creation dropped after the request was
/// sent, or timed out, may have created it on the server.
struct OrphanGuard<'a> {
    provider: &'a NatsProvider,
    name: Option<&'a str>,
}

impl Drop for OrphanGuard<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name {
            delete_in_background(self.provider, name.to_string());
        }
    }
}

/// Settles one delivery with JetStream acknowledgements.
struct NatsAcker {
    acker: NatsMsgAcker,
    timeout: Duration,
    /// An ephemeral's delivery: struck from its unsettled set once acked or
    /// terminated.
    unsettled: Option<(Unsettled, u64)>,
    /// Where its acknowledgements go.
    acks: Arc<AckScope>,
    /// The permission-violation mark when it was handed out.
    since: u64,
    /// The final delivery: a nak ends the event (it is sent as a term,
    /// or JetStream would spend the spare delivery on it, see
    /// [`server_max_deliver`]).
    last: bool,
}

impl NatsAcker {
    fn settled(&self) {
        if let Some((unsettled, seq)) = &self.unsettled {
            unsettled.with(|set| set.remove(seq));
        }
    }

    /// Sends `kind`. While the connection is down the client queues it
    /// (it goes out on reconnection); once the client's buffer is full it
    /// would wait for the reconnection, so the wait is bounded by the
    /// request timeout. Acknowledgements get no reply: a denied one is
    /// known only from the violation the server reports, so an
    /// acknowledgement of this consumer denied since this delivery was
    /// handed out (an earlier one, or this one if the report is already
    /// in) makes this one fail too.
    async fn send(&self, kind: AckKind, what: &str) -> Result<()> {
        self.publish(kind, what).await?;
        self.acks.denied(self.since, what)
    }

    async fn publish(&self, kind: AckKind, what: &str) -> Result<()> {
        let Ok(sent) = tokio::time::timeout(self.timeout, self.acker.ack_with(kind)).await else {
            return Err(Error::Timeout {
                operation: format!(
                    "{what}: the client's outgoing buffer stayed full (connection lost?)"
                ),
                elapsed: self.timeout,
            });
        };
        sent.map_err(|e| Error::Connection(format!("{what}: {e}")))
            .map_err(|e| match e {
                Error::Connection(m) if m.contains("timed out") => Error::Timeout {
                    operation: m,
                    elapsed: self.timeout,
                },
                other => other,
            })
    }
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(&self) -> Result<()> {
        self.send(AckKind::Ack, "ack").await?;
        self.settled();
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<()> {
        if self.last {
            self.send(AckKind::Term, "nak (of a final delivery: term)")
                .await?;
            self.settled();
            return Ok(());
        }
        self.send(AckKind::Nak(delay.map(jetstream_wait)), "nak")
            .await
    }

    async fn term(&self) -> Result<()> {
        self.send(AckKind::Term, "term").await?;
        self.settled();
        Ok(())
    }

    async fn in_progress(&self) -> Result<()> {
        self.send(AckKind::Progress, "in_progress").await
    }
}

#[cfg(test)]
mod tests {
    use super::{
        PullLimits, Refusal, SPARE_MARK, Unsettled, consumer_config, durable_update,
        filter_update_unsafe, refusal_of,
    };
    use event_core::SubscribeOptions;
    use serde_json::json;
    use std::time::Duration;

    /// A durable's configuration as a 2.11+ server sends it, provisioned by
    /// another team: settings async-nats's typed `consumer::Config` does not
    /// model in this build (`metadata`, `pause_until`, priority groups, a
    /// field of a later server), limits it models but subscriptions do not
    /// set, and the subscription's own settings with other values. The
    /// integration tests run nats-server 2.9, which refuses the fields it
    /// does not know: those are checked here only.
    fn provisioned() -> serde_json::Value {
        json!({
            "durable_name": "billing",
            "name": "billing",
            "description": "billing's reader",
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "ack_wait": 30_000_000_000_u64,
            "max_deliver": -1,
            "filter_subjects": ["events.billing.>", "events.refunds.>"],
            "replay_policy": "instant",
            "max_waiting": 64,
            "max_ack_pending": 1000,
            "max_batch": 4,
            "max_expires": 1_000_000_000,
            "max_bytes": 1_048_576,
            "inactive_threshold": 3_600_000_000_000_u64,
            "num_replicas": 3,
            "mem_storage": true,
            "sample_freq": "50%",
            "backoff": [1_000_000_000, 5_000_000_000_u64],
            "metadata": {"team": "billing", "_nats.ver": "2.11.0"},
            "pause_until": "2030-01-01T00:00:00Z",
            "priority_groups": ["jobs"],
            "priority_policy": "pinned_client",
            "priority_timeout": 120_000_000_000_u64,
            "future_field": {"anything": [1, 2]},
        })
    }

    /// An update changes the subscription's settings only: every other
    /// field of the server's JSON stays, those async-nats does not model
    /// included; a setting the subscription leaves out (the backoff, the
    /// 2.10+ filter list) goes, so the server applies its default.
    #[test]
    fn a_durable_update_changes_only_the_subscription_settings() {
        let options = SubscribeOptions {
            ack_wait: Some(Duration::from_secs(45)),
            max_deliver: Some(5),
            max_ack_pending: Some(10),
            ..SubscribeOptions::default()
        };
        let desired = consumer_config(Some("billing"), "events.billing.>", &options).unwrap();
        let update = durable_update(&provisioned(), &desired).unwrap();
        let mut want = provisioned();
        let object = want.as_object_mut().unwrap();
        object.insert("filter_subject".into(), json!("events.billing.>"));
        object.insert("ack_wait".into(), json!(45_000_000_000_u64));
        // the subscription's 5 and the spare, marked in the description
        object.insert("max_deliver".into(), json!(6));
        object.insert("description".into(), json!(SPARE_MARK));
        object.insert("max_ack_pending".into(), json!(10));
        object.remove("filter_subjects");
        object.remove("backoff");
        assert_eq!(update, want);
    }

    /// The spare's mark goes with the limit; another client's description
    /// stays where the subscription sets no limit.
    #[test]
    fn a_durable_update_keeps_a_foreign_description_and_drops_a_stale_mark() {
        let desired = consumer_config(
            Some("billing"),
            "events.billing.>",
            &SubscribeOptions::default(),
        )
        .unwrap();
        let update = durable_update(&provisioned(), &desired).unwrap();
        assert_eq!(update["description"], json!("billing's reader"));
        assert_eq!(update["max_deliver"], json!(-1));
        assert_eq!(
            update["metadata"],
            json!({"team": "billing", "_nats.ver": "2.11.0"})
        );
        let mut marked = provisioned();
        marked["description"] = json!(SPARE_MARK);
        marked["max_deliver"] = json!(6);
        let update = durable_update(&marked, &desired).unwrap();
        assert_eq!(update.get("description"), None);
        assert_eq!(update["max_deliver"], json!(-1));
        assert_eq!(update["future_field"], json!({"anything": [1, 2]}));
    }

    /// A request beyond the consumer's limits is refused for good; those
    /// that pass (max waiting, leadership change) are asked again.
    #[test]
    fn pull_refusals_are_told_apart() {
        for (status, want) in [
            ("409: Exceeded MaxRequestBatch of 4", Some(Refusal::Limits)),
            (
                "409: Exceeded MaxRequestExpires of 1s",
                Some(Refusal::Limits),
            ),
            (
                "409: Exceeded MaxRequestMaxBytes of 300",
                Some(Refusal::Limits),
            ),
            ("409: Consumer is push based", Some(Refusal::Never)),
            ("409: Exceeded MaxWaiting", Some(Refusal::Passing)),
            ("409: Leadership Change", Some(Refusal::Passing)),
            ("408: Request Timeout", Some(Refusal::Passing)),
            ("503: No Responders", None),
        ] {
            assert_eq!(refusal_of(status), want, "{status}");
        }
    }

    #[test]
    fn pulls_are_sized_within_the_consumer_limits() {
        let none = PullLimits::default();
        assert_eq!(none.batch(64), 64);
        assert_eq!(none.expires(Duration::from_secs(5)), Duration::from_secs(5));
        let limited = PullLimits {
            max_batch: 4,
            max_expires: Duration::from_secs(1),
        };
        assert_eq!(limited.batch(64), 4);
        assert_eq!(limited.batch(1), 1);
        assert_eq!(
            limited.expires(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            limited.expires(Duration::from_millis(200)),
            Duration::from_millis(200)
        );
        assert_eq!(limited.to_string(), "max_batch 4, max_expires 1s");
        assert_eq!(none.to_string(), "max_batch none, max_expires none");
    }

    /// Deliveries the server ended on its side (evicted while unsettled)
    /// are never settled here: the set keeps no more than the consumer's
    /// `max_ack_pending`, the newest.
    #[test]
    fn unsettled_deliveries_are_kept_up_to_max_ack_pending() {
        let unsettled = Unsettled::default();
        for seq in 1..=100_000 {
            unsettled.handed_out(seq, 1_000);
        }
        assert_eq!(unsettled.with(|set| set.len()), 1_000);
        assert_eq!(unsettled.with(|set| set.first().copied()), Some(99_001));
        unsettled.handed_out(100_001, 0);
        assert_eq!(unsettled.with(|set| set.len()), 1);
    }

    #[test]
    fn filter_updates_are_unsafe_before_2_9_14() {
        for old in ["2.9.10", "v2.9.13", "2.8.4", "1.0.0"] {
            assert!(filter_update_unsafe(old), "{old}");
        }
        for new in ["2.9.14", "2.10.0", "2.11.1-RC.1", "3.0.0", "", "dev"] {
            assert!(!filter_update_unsafe(new), "{new}");
        }
    }
}
