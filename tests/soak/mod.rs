//! What the chaos soaks (`tests/soak_nats.rs`, `tests/soak_memory.rs`)
//! share: handler fates and payloads, the recording handler and DLQ, the
//! service instances (each on its own thread and tokio runtime), the two
//! publishers, the faults every provider has (instance restarts, key
//! rotation, a DLQ outage) and the plan they are drawn in, the drain, and
//! the final checks of the at-least-once contract, the stored events, the
//! DLQ and the metrics, with the log summary. Each soak keeps only what is
//! its provider's: how an instance gets its provider, and its own faults.
//!
//! A directory module: Cargo makes no test target of `tests/soak/mod.rs`.

use a3s_event::consumer::{ConsumerConfig, ConsumerReport};
use a3s_event::crypto::Aes256GcmEncryptor;
use a3s_event::dlq::ProviderDlqHandler;
use a3s_event::metrics::MetricsSnapshot;
use a3s_event::{
    DeadLetterEvent, DlqHandler, Event, EventBus, EventProvider, ReceivedEvent, SubscribeOptions,
    SubscriptionFilter,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MAX_DELIVER: u64 = 4;
/// The attempts a dead letter reports: the final delivery, or the spare
/// that follows a final delivery left unsettled (its instance died).
pub const FINAL_ATTEMPTS: std::ops::RangeInclusive<u64> = MAX_DELIVER..=MAX_DELIVER + 1;
/// Service instances sharing the durable (`A3S_SOAK_INSTANCES`, default 3).
pub fn instance_count() -> usize {
    env_or("A3S_SOAK_INSTANCES", 3).max(1) as usize
}
/// Handlers each instance runs at once (`A3S_SOAK_CONCURRENCY`, default 4).
pub fn concurrency() -> u64 {
    env_or("A3S_SOAK_CONCURRENCY", 4).max(1)
}

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
pub const SUBSCRIBER: &str = "billing";
pub const REQUEST_TIMEOUT_SECS: u64 = 2;
pub const CONSUMER_SHUTDOWN: Duration = Duration::from_secs(3);
/// How long a publisher retries one event's transient errors.
pub const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------
// Seeded randomness
// ---------------------------------------------------------------------------

/// SplitMix64: small, seedable, good enough for a fault plan.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// How an event fares in the handler, drawn from the seed and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Ok,
    /// Fails its first `k` deliveries (`k < MAX_DELIVER`), then succeeds.
    FailsFirst(u64),
    /// Succeeds after this many milliseconds (in flight at shutdowns).
    Slow(u64),
    /// Fails every delivery: dead-lettered after `MAX_DELIVER`.
    FailsAlways,
}

pub fn fate(seed: u64, n: u64) -> Fate {
    let mut rng = Rng(seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
    match rng.below(100) {
        0..=7 => Fate::FailsAlways,
        8..=17 => Fate::FailsFirst(1),
        18..=22 => Fate::FailsFirst(2),
        23..=32 => Fate::Slow(200 + rng.below(1300)),
        _ => Fate::Ok,
    }
}

pub fn payload(n: u64) -> Value {
    json!({"n": n, "card": format!("4111-{n:06}")})
}

pub fn permanent_reason(n: u64) -> String {
    format!("event {n}: card declined")
}

// ---------------------------------------------------------------------------
// What happened: handler calls, DLQ offers, publishes
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Call {
    n: u64,
    id: String,
    delivery: u64,
    outcome: Result<(), String>,
    instance: usize,
    at: Instant,
}

#[derive(Debug, Clone)]
pub struct Offer {
    original_id: String,
    attempts: u64,
    reason: String,
    accepted: Result<(), String>,
    instance: usize,
}

#[derive(Default)]
pub struct Journal {
    calls: Mutex<Vec<Call>>,
    offers: Mutex<Vec<Offer>>,
    /// Payloads a handler got that were not what was published.
    corrupt: Mutex<Vec<String>>,
    /// The DLQ's backend is down: every offer fails with a transient error.
    dlq_down: AtomicBool,
}

/// The instance's DLQ: the provider-backed one, recording every offer.
pub struct RecordingDlq {
    inner: ProviderDlqHandler,
    instance: usize,
    journal: Arc<Journal>,
}

#[async_trait::async_trait]
impl DlqHandler for RecordingDlq {
    async fn handle(&self, dead: DeadLetterEvent) -> a3s_event::Result<()> {
        let (original_id, attempts, reason) = (
            dead.event.id.clone(),
            dead.delivery_attempts,
            dead.reason.clone(),
        );
        let result = if self.journal.dlq_down.load(Ordering::SeqCst) {
            Err(a3s_event::Error::Connection(
                "soak: the DLQ's backend is down".to_string(),
            ))
        } else {
            self.inner.handle(dead).await
        };
        self.journal.offers.lock().unwrap().push(Offer {
            original_id,
            attempts,
            reason,
            accepted: result.as_ref().map(|_| ()).map_err(ToString::to_string),
            instance: self.instance,
        });
        result
    }

    async fn list(&self, limit: usize) -> a3s_event::Result<Vec<DeadLetterEvent>> {
        self.inner.list(limit).await
    }

    async fn count(&self) -> a3s_event::Result<usize> {
        self.inner.count().await
    }
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
pub struct KeyState {
    has_k2: bool,
    on_k2: bool,
}

pub fn encryptor(keys: KeyState) -> Arc<Aes256GcmEncryptor> {
    let e = Aes256GcmEncryptor::new("k1", &[1; 32]);
    if keys.has_k2 {
        e.add_key("k2", &[2; 32]).unwrap();
    }
    if keys.on_k2 {
        e.rotate_to("k2").unwrap();
    }
    Arc::new(e)
}

// ---------------------------------------------------------------------------
// Service instances
// ---------------------------------------------------------------------------

/// Makes an instance's provider: a connection of its own (NATS), or the
/// one provider the process shares (memory).
pub type Connect = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = a3s_event::Result<Arc<dyn EventProvider>>> + Send>>
        + Send
        + Sync,
>;

pub struct Ctx {
    pub connect: Connect,
    pub seed: u64,
    pub journal: Arc<Journal>,
}

pub fn subscribe_options() -> SubscribeOptions {
    SubscribeOptions {
        max_deliver: Some(MAX_DELIVER),
        backoff: vec![
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_secs(1),
        ],
        ..SubscribeOptions::default()
    }
}

pub fn consumer_config() -> ConsumerConfig {
    ConsumerConfig::default()
        .concurrency(concurrency() as usize)
        .handler_timeout(Some(Duration::from_secs(5)))
        .shutdown_timeout(CONSUMER_SHUTDOWN)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `ConsumerHandle::shutdown(deadline)`, then the runtime ends.
    Graceful(Duration),
    /// The handle is dropped (background shutdown), then the runtime ends
    /// after the configured shutdown deadline.
    DropHandle,
    /// The runtime is torn down at once: a process killed.
    Kill,
}

#[derive(Debug)]
pub struct Exit {
    id: usize,
    stop: Stop,
    report: ConsumerReport,
    shutdown_took: Option<Duration>,
    metrics: MetricsSnapshot,
    /// When the stop was requested.
    stopped_at: Instant,
}

pub struct Instance {
    pub id: usize,
    encryptor: Arc<Aes256GcmEncryptor>,
    stop: tokio::sync::oneshot::Sender<Stop>,
    thread: std::thread::JoinHandle<Exit>,
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

pub fn handler(
    ctx: &Arc<Ctx>,
    instance: usize,
) -> impl Fn(ReceivedEvent) -> HandlerFuture + Send + Sync + 'static {
    let ctx = ctx.clone();
    move |received: ReceivedEvent| {
        let ctx = ctx.clone();
        Box::pin(async move {
            let n = received.event.payload["n"].as_u64().unwrap_or(u64::MAX);
            if received.event.payload != payload(n) {
                ctx.journal
                    .corrupt
                    .lock()
                    .unwrap()
                    .push(format!("{}: {}", received.event.id, received.event.payload));
            }
            let delivery = received.num_delivered;
            let outcome = match fate(ctx.seed, n) {
                Fate::Ok => Ok(()),
                Fate::Slow(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(())
                }
                Fate::FailsFirst(k) if delivery > k => Ok(()),
                Fate::FailsFirst(_) => Err(format!("event {n}: gateway timeout")),
                Fate::FailsAlways => Err(permanent_reason(n)),
            };
            ctx.journal.calls.lock().unwrap().push(Call {
                n,
                id: received.event.id.clone(),
                delivery,
                outcome: outcome.clone(),
                instance,
                at: Instant::now(),
            });
            outcome
        })
    }
}

/// Retries `op` while it fails with a transient error (the server is down
/// or paused), for up to 60 s.
pub async fn retry<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = a3s_event::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(err) if err.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("{what}: {err:?} (transient: {})", err.is_transient()),
        }
    }
}

/// Starts instance `id` on its own thread and runtime; returns once its
/// consumer runs.
pub async fn start_instance(ctx: &Arc<Ctx>, id: usize, keys: KeyState) -> Instance {
    let encryptor = encryptor(keys);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Stop>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = {
        let (ctx, encryptor) = (ctx.clone(), encryptor.clone());
        std::thread::Builder::new()
            .name(format!("instance-{id}"))
            .spawn(move || run_instance(ctx, id, encryptor, ready_tx, stop_rx))
            .unwrap()
    };
    ready_rx.await.expect("instance started");
    Instance {
        id,
        encryptor,
        stop: stop_tx,
        thread,
    }
}

pub fn run_instance(
    ctx: Arc<Ctx>,
    id: usize,
    encryptor: Arc<Aes256GcmEncryptor>,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: tokio::sync::oneshot::Receiver<Stop>,
) -> Exit {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (bus, consumer, stop) = rt.block_on(async {
        let provider = retry("connect", || (ctx.connect)()).await;
        let bus = EventBus::from_arc(provider.clone());
        bus.set_encryptor(encryptor.clone());
        bus.set_dlq_handler(Arc::new(RecordingDlq {
            inner: ProviderDlqHandler::new(provider.clone()).with_encryptor(encryptor.clone()),
            instance: id,
            journal: ctx.journal.clone(),
        }));
        bus.update_subscription_with_options(
            SubscriptionFilter {
                subscriber_id: SUBSCRIBER.to_string(),
                subjects: vec![provider.category_subject("orders")],
                durable: true,
            },
            subscribe_options(),
        )
        .await
        .unwrap();
        let consumer = retry("consume", || {
            bus.consume(SUBSCRIBER, handler(&ctx, id), consumer_config())
        })
        .await;
        let _ = ready.send(());
        let stop = stop.await.unwrap_or(Stop::Kill);
        (bus, consumer, stop)
    });
    let stopped_at = Instant::now();
    let (report, shutdown_took) = match stop {
        Stop::Graceful(deadline) => {
            let (report, took) = rt.block_on(async {
                let began = Instant::now();
                let report = consumer.shutdown(deadline).await;
                (report, began.elapsed())
            });
            rt.shutdown_timeout(Duration::from_secs(1));
            (report, Some(took))
        }
        Stop::DropHandle => {
            let report_before = consumer.report();
            drop(consumer);
            rt.block_on(async {
                tokio::time::sleep(
                    CONSUMER_SHUTDOWN + Duration::from_secs(REQUEST_TIMEOUT_SECS + 1),
                )
                .await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
            (report_before, None)
        }
        Stop::Kill => {
            let report = consumer.report();
            rt.shutdown_timeout(Duration::ZERO);
            drop(consumer);
            (report, None)
        }
    };
    let metrics = bus.metrics().snapshot();
    drop(bus);
    Exit {
        id,
        stop,
        report,
        shutdown_took,
        metrics,
        stopped_at,
    }
}

impl Instance {
    pub async fn stop(self, how: Stop) -> Exit {
        let _ = self.stop.send(how);
        tokio::task::spawn_blocking(move || self.thread.join().expect("instance thread"))
            .await
            .unwrap()
    }
}

// ---------------------------------------------------------------------------
// Publishers
// ---------------------------------------------------------------------------

#[derive(Default)]
pub struct Published {
    /// n → event id, for every event a publish was attempted for.
    attempted: BTreeMap<u64, String>,
    /// n → sequence, for every publish that returned `Ok`.
    ok: BTreeMap<u64, u64>,
    /// n → the non-transient error (or the last transient one) it ended with.
    failed: BTreeMap<u64, String>,
    /// `Err` results returned by `publish_event` (each retry counts).
    errors: u64,
}

/// A publisher: its bus, the subject it publishes to, the number of its
/// next event, and where it records what it published.
pub struct Publisher {
    pub bus: EventBus,
    pub subject: String,
    pub next: u64,
    pub stop: Arc<AtomicBool>,
    pub rng: Rng,
    pub out: Arc<Mutex<Published>>,
}

impl Publisher {
    /// The next event (its number and the event), recorded as attempted.
    fn order(&mut self) -> (u64, Event) {
        let n = self.next;
        self.next += 1;
        let event = Event::new(
            self.subject.clone(),
            "orders",
            format!("order {n}"),
            "soak",
            payload(n),
        );
        self.out
            .lock()
            .unwrap()
            .attempted
            .insert(n, event.id.clone());
        (n, event)
    }

    /// Publishes event by event with `publish_event`, retrying an event's
    /// transient errors with the same event.
    pub async fn publish_loop(mut self) {
        let out = self.out.clone();
        while !self.stop.load(Ordering::Relaxed) {
            let (n, event) = self.order();
            let began = Instant::now();
            loop {
                match self.bus.publish_event(&event).await {
                    Ok(sequence) => {
                        out.lock().unwrap().ok.insert(n, sequence);
                        break;
                    }
                    Err(err) => {
                        let mut out = out.lock().unwrap();
                        out.errors += 1;
                        if !err.is_transient() || began.elapsed() > PUBLISH_RETRY_FOR {
                            out.failed.insert(n, format!("{err:?}"));
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(self.rng.millis(5, 30)).await;
        }
    }

    /// Publishes batches of 1 to 8 events with `publish_batch`, retrying the
    /// events whose result (or the whole call) was a transient error, with
    /// the same events.
    pub async fn publish_batch_loop(mut self) {
        let out = self.out.clone();
        while !self.stop.load(Ordering::Relaxed) {
            let size = 1 + self.rng.below(8);
            let mut events: Vec<(u64, Event)> = (0..size).map(|_| self.order()).collect();
            let began = Instant::now();
            while !events.is_empty() {
                let batch: Vec<Event> = events.iter().map(|(_, e)| e.clone()).collect();
                let given_up = began.elapsed() > PUBLISH_RETRY_FOR;
                match self.bus.publish_batch(&batch).await {
                    Ok(results) => {
                        assert_eq!(results.len(), batch.len(), "one result per event");
                        let mut out = out.lock().unwrap();
                        let mut left = Vec::new();
                        for ((n, event), result) in events.into_iter().zip(results) {
                            match result {
                                Ok(sequence) => {
                                    out.ok.insert(n, sequence);
                                }
                                Err(err) => {
                                    out.errors += 1;
                                    if !err.is_transient() || given_up {
                                        out.failed.insert(n, format!("{err:?}"));
                                    } else {
                                        left.push((n, event));
                                    }
                                }
                            }
                        }
                        events = left;
                    }
                    Err(err) => {
                        let mut out = out.lock().unwrap();
                        out.errors += events.len() as u64;
                        if !err.is_transient() || given_up {
                            for (n, _) in events.drain(..) {
                                out.failed.insert(n, format!("{err:?}"));
                            }
                        }
                    }
                }
                if !events.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            // the pace of the other publisher, per event: the consumers keep up
            tokio::time::sleep(self.rng.millis(5, 30) * size as u32).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Observing the process: panics and warnings
// ---------------------------------------------------------------------------

pub static PANICS: AtomicU64 = AtomicU64::new(0);

pub mod capture {
    //! A minimal `tracing` subscriber keeping every WARN and ERROR event.
    use std::fmt::Write as _;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::level_filters::LevelFilter;
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    pub(crate) static LINES: Mutex<Vec<(Level, String, String)>> = Mutex::new(Vec::new());

    pub(crate) struct Capture(pub(crate) AtomicU64);

    struct Fields(String, String);

    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            } else {
                let _ = write!(self.1, "{}={value:?} ", field.name());
            }
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() <= Level::WARN
        }
        fn max_level_hint(&self) -> Option<LevelFilter> {
            Some(LevelFilter::WARN)
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(self.0.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields(String::new(), String::new());
            event.record(&mut fields);
            LINES.lock().unwrap_or_else(|e| e.into_inner()).push((
                *event.metadata().level(),
                event.metadata().target().to_string(),
                format!("{} [{}]", fields.0, fields.1.trim_end()),
            ));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

pub fn observe_process() {
    let _ = tracing::subscriber::set_global_default(capture::Capture(AtomicU64::new(0)));
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

/// The warnings and errors logged, grouped by message (fields stripped of
/// their values after the first example).
pub fn log_summary() -> BTreeMap<(String, String), (usize, String)> {
    let lines = capture::LINES.lock().unwrap();
    let mut grouped: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
    for (level, target, line) in lines.iter() {
        let message = line.split(" [").next().unwrap_or(line).to_string();
        let entry = grouped
            .entry((format!("{level} {target}"), message))
            .or_insert((0, line.clone()));
        entry.0 += 1;
    }
    grouped
}
// ---------------------------------------------------------------------------
// Faults common to every provider
// ---------------------------------------------------------------------------

/// How an instance is stopped, drawn at random.
pub fn random_stop(rng: &mut Rng) -> Stop {
    match rng.below(3) {
        0 => Stop::Graceful(Duration::from_secs(2)),
        1 => Stop::DropHandle,
        _ => Stop::Kill,
    }
}

/// The fault plan from the faults every run has: longer runs get more,
/// drawn with `random` (about one per `secs_per_fault`), all shuffled, and
/// `rotate_key` goes in the middle.
pub fn plan<F>(
    rng: &mut Rng,
    secs: u64,
    mut faults: Vec<F>,
    secs_per_fault: u64,
    random: impl Fn(&mut Rng) -> F,
    rotate_key: F,
) -> Vec<F> {
    while (faults.len() as u64 + 1) * secs_per_fault < secs {
        faults.push(random(rng));
    }
    // Fisher-Yates
    for i in (1..faults.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        faults.swap(i, j);
    }
    let mid = faults.len() / 2;
    faults.insert(mid, rotate_key);
    faults
}

// ---------------------------------------------------------------------------
// The soak: set-up, common faults, drain, verification
// ---------------------------------------------------------------------------

/// The seed of the default run.
const DEFAULT_SEED: u64 = 20_261_129;

/// A run's settings, from the environment (printed).
pub struct Settings {
    pub secs: u64,
    pub seed: u64,
    pub rng: Rng,
}

/// Starts observing panics and warnings, and reads the run's settings.
pub fn settings() -> Settings {
    observe_process();
    let secs: u64 = std::env::var("A3S_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("A3S_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            // the default (CI) run replays one plan; a longer run hunts
            if std::env::var_os("A3S_SOAK_SECS").is_none() {
                return DEFAULT_SEED;
            }
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!(
        "chaos soak: A3S_SOAK_SEED={seed} A3S_SOAK_SECS={secs} A3S_SOAK_INSTANCES={} \
         A3S_SOAK_CONCURRENCY={}",
        instance_count(),
        concurrency()
    );
    Settings {
        secs,
        seed,
        rng: Rng(seed),
    }
}

/// A run under way: its publishers, its instances and what they did.
pub struct Soak {
    pub secs: u64,
    pub seed: u64,
    pub rng: Rng,
    pub ctx: Arc<Ctx>,
    pub journal: Arc<Journal>,
    pub keys: KeyState,
    pub instances: Vec<Instance>,
    pub next_id: usize,
    pub exits: Vec<Exit>,
    /// When the fault phase began.
    pub began: Instant,
    stop_publishing: Arc<AtomicBool>,
    published: Arc<Mutex<Published>>,
    publisher_buses: Vec<EventBus>,
    publisher_keys: Vec<Arc<Aes256GcmEncryptor>>,
    publishers: Vec<tokio::task::JoinHandle<()>>,
}

impl Soak {
    /// Starts the publishers (their own buses, given with the subject they
    /// publish to: the first publishes event by event, the second in
    /// batches), then the instances.
    pub async fn start(
        settings: Settings,
        connect: Connect,
        publisher_buses: Vec<(EventBus, String)>,
    ) -> Soak {
        let Settings { secs, seed, rng } = settings;
        let journal = Arc::new(Journal::default());
        let ctx = Arc::new(Ctx {
            connect,
            seed,
            journal: journal.clone(),
        });
        let mut soak = Soak {
            secs,
            seed,
            rng,
            ctx,
            journal,
            keys: KeyState::default(),
            instances: Vec::new(),
            next_id: 0,
            exits: Vec::new(),
            began: Instant::now(),
            stop_publishing: Arc::new(AtomicBool::new(false)),
            published: Arc::new(Mutex::new(Published::default())),
            publisher_buses: Vec::new(),
            publisher_keys: Vec::new(),
            publishers: Vec::new(),
        };
        for (p, (bus, subject)) in (0u64..).zip(publisher_buses) {
            let enc = encryptor(soak.keys);
            bus.set_encryptor(enc.clone());
            soak.publisher_keys.push(enc);
            soak.publisher_buses.push(bus.clone());
            // one publishes event by event, the other in batches
            let publisher = Publisher {
                bus,
                subject,
                next: p * 1_000_000,
                stop: soak.stop_publishing.clone(),
                rng: Rng(soak.rng.next()),
                out: soak.published.clone(),
            };
            soak.publishers.push(if p == 0 {
                tokio::spawn(publisher.publish_loop())
            } else {
                tokio::spawn(publisher.publish_batch_loop())
            });
        }
        for _ in 0..instance_count() {
            soak.start_instance().await;
        }
        soak
    }

    /// Starts the next instance, with the keys of the moment.
    pub async fn start_instance(&mut self) {
        let instance = start_instance(&self.ctx, self.next_id, self.keys).await;
        self.instances.push(instance);
        self.next_id += 1;
    }

    /// Takes a random instance out of the running ones.
    pub fn pick_instance(&mut self) -> Instance {
        let i = self.rng.below(self.instances.len() as u64) as usize;
        self.instances.remove(i)
    }

    /// Prints the fault plan and begins the fault phase; returns the gap
    /// between faults.
    pub fn begin_faults<F: std::fmt::Debug>(&mut self, faults: &[F]) -> Duration {
        eprintln!("fault plan: {faults:?}");
        let gap = Duration::from_secs(self.secs) / (faults.len() as u32 + 1);
        self.began = Instant::now();
        gap
    }

    /// The DLQ refuses every dead letter (transiently) for 1 to 5 s; the
    /// next fault may come while it is down.
    pub fn dlq_outage(&mut self, at: Duration) {
        let down = self.rng.millis(1000, 5000);
        eprintln!("{at:?}: the DLQ refuses (transiently) for {down:?}");
        self.journal.dlq_down.store(true, Ordering::SeqCst);
        let journal = self.journal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(down).await;
            journal.dlq_down.store(false, Ordering::SeqCst);
        });
    }

    /// A random instance stops (`how`), then its replacement starts.
    pub async fn restart_instance(&mut self, how: Stop, at: Duration) {
        let instance = self.pick_instance();
        eprintln!("{at:?}: instance {} stops ({how:?})", instance.id);
        let exit = instance.stop(how).await;
        self.exited(exit);
        self.start_instance().await;
    }

    /// Records (and prints) an instance's exit.
    pub fn exited(&mut self, exit: Exit) {
        eprintln!(
            "  instance {} exit: {:?} in {:?}",
            exit.id, exit.report, exit.shutdown_took
        );
        self.exits.push(exit);
    }

    /// Key rotation: `add_key` k2 on every ring (instances', publishers'),
    /// then `rotate_to` k2.
    pub async fn rotate_key(&mut self, at: Duration) {
        eprintln!("{at:?}: key rotation: add k2 everywhere, then rotate_to k2");
        self.keys.has_k2 = true;
        let rings = self
            .instances
            .iter()
            .map(|i| &i.encryptor)
            .chain(self.publisher_keys.iter());
        for ring in rings.clone() {
            ring.add_key("k2", &[2; 32]).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.keys.on_k2 = true;
        for ring in rings {
            ring.rotate_to("k2").unwrap();
        }
    }

    /// After the last fault: a gap more, then the publishers stop, the DLQ
    /// is back, and (once every acknowledged event is settled, or nothing
    /// moved for 8 s) every instance shuts down gracefully.
    pub async fn stop_and_drain(&mut self, gap: Duration) {
        tokio::time::sleep(gap).await;
        self.stop_publishing.store(true, Ordering::Relaxed);
        for p in self.publishers.drain(..) {
            tokio::time::timeout(PUBLISH_RETRY_FOR + Duration::from_secs(10), p)
                .await
                .expect("publisher finished")
                .unwrap();
        }
        eprintln!("{:?}: publishing stopped", self.began.elapsed());
        self.journal.dlq_down.store(false, Ordering::SeqCst);

        // ---- drain: every acknowledged event handled or dead-lettered ----
        let ok: BTreeMap<u64, u64> = self.published.lock().unwrap().ok.clone();
        let attempted: BTreeMap<u64, String> = self.published.lock().unwrap().attempted.clone();
        let settled = |journal: &Journal| -> BTreeSet<u64> {
            let handled: BTreeSet<u64> = journal
                .calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.outcome.is_ok())
                .map(|c| c.n)
                .collect();
            let dead: BTreeSet<String> = journal
                .offers
                .lock()
                .unwrap()
                .iter()
                .filter(|o| o.accepted.is_ok())
                .map(|o| o.original_id.clone())
                .collect();
            ok.keys()
                .copied()
                .filter(|n| handled.contains(n) || dead.contains(&attempted[n]))
                .collect()
        };
        let journal = self.journal.clone();
        let drain_began = Instant::now();
        let progress = |j: &Journal| j.calls.lock().unwrap().len() + j.offers.lock().unwrap().len();
        let (mut last_progress, mut moved_at) = (progress(&journal), Instant::now());
        // until all settled, or nothing happened for 8 s (well past the
        // longest backoff step: what is left will not come)
        while settled(&journal).len() < ok.len() && moved_at.elapsed() < Duration::from_secs(8) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if progress(&journal) != last_progress {
                (last_progress, moved_at) = (progress(&journal), Instant::now());
            }
        }
        eprintln!("drained in {:?}", drain_began.elapsed());
        // acknowledgements in flight reach the server
        tokio::time::sleep(Duration::from_millis(500)).await;
        for instance in std::mem::take(&mut self.instances) {
            self.exits
                .push(instance.stop(Stop::Graceful(Duration::from_secs(5))).await);
        }
    }
}

/// What a provider's faults add to the checks.
pub struct Checks<'a> {
    /// When the server went away (NATS: SIGKILL, SIGSTOP): incidents that
    /// may lose a final or spare delivery, as an instance's stop may.
    pub outages: &'a [Instant],
    /// `Some(window)`: the provider may lose the durable's state
    /// (nats-server SIGKILLed), so that events come again from their first
    /// delivery, and its DLQ dedups dead letters for `window` ms: a second
    /// copy stored that far apart after such a reset is printed, not a
    /// finding. `None`: the DLQ holds every dead letter once.
    pub dlq_dedup_window_ms: Option<u64>,
}

/// The findings of a run, for [`Outcome::assert_passed`].
pub struct Outcome {
    seed: u64,
    acknowledged: usize,
    findings: Vec<String>,
}

impl Outcome {
    /// Enough events were published, and nothing was found.
    pub fn assert_passed(self) {
        let Outcome {
            seed,
            acknowledged,
            findings,
        } = self;
        assert!(
            acknowledged > 100,
            "too few events published: {acknowledged}"
        );
        assert!(
            findings.is_empty(),
            "chaos soak (A3S_SOAK_SEED={seed}): {} findings:\n{}",
            findings.len(),
            findings.join("\n")
        );
    }
}

/// Checks the at-least-once contract, the stored events and dead letters
/// (through `verifier`, a provider of its own where it can have one), and
/// the metrics; prints what happened and the warnings and errors logged.
pub async fn verify(soak: &Soak, verifier: Arc<dyn EventProvider>, checks: Checks<'_>) -> Outcome {
    let (seed, began, journal, exits, publisher_buses) = (
        soak.seed,
        soak.began,
        &soak.journal,
        &soak.exits,
        &soak.publisher_buses,
    );
    // ---- verify ----
    let mut findings: Vec<String> = Vec::new();
    let published = std::mem::take(&mut *soak.published.lock().unwrap());
    let ok: BTreeMap<u64, u64> = published.ok.clone();
    let attempted: BTreeMap<u64, String> = published.attempted.clone();
    let calls = journal.calls.lock().unwrap().clone();
    let offers = journal.offers.lock().unwrap().clone();

    // publishers: non-transient errors, and every Ok stored once at its sequence
    for (n, err) in &published.failed {
        findings.push(format!("publish of event {n} failed: {err}"));
    }
    let verifier_keys = encryptor(KeyState {
        has_k2: true,
        on_k2: true,
    });
    let stored = verifier
        .history(Some(&verifier.category_subject("orders")), 1_000_000)
        .await
        .unwrap();
    let mut stored_at: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in &stored {
        stored_at.entry(event.id.clone()).or_default().push(0);
    }
    let by_id: BTreeMap<&str, u64> = attempted.iter().map(|(n, id)| (id.as_str(), *n)).collect();
    for event in &stored {
        if !by_id.contains_key(event.id.as_str()) {
            findings.push(format!("stored event {} was never published", event.id));
        }
    }
    for (id, copies) in &stored_at {
        if copies.len() > 1 {
            findings.push(format!("event {id} stored {} times", copies.len()));
        }
    }
    for (n, sequence) in &ok {
        let id = &attempted[n];
        match stored.iter().find(|e| &e.id == id) {
            None => findings.push(format!(
                "event {n} ({id}) acknowledged at {sequence}, not stored"
            )),
            Some(event) => {
                let plain = a3s_event::EventEncryptor::decrypt(&*verifier_keys, id, &event.payload);
                if plain.ok() != Some(payload(*n)) {
                    findings.push(format!("stored event {n} does not decrypt to its payload"));
                }
            }
        }
    }
    let stored_seq: BTreeMap<String, u64> = {
        // history gives events; read the sequences through a fresh ordered
        // consumer so "Ok(sequence)" can be checked too
        let mut seqs = BTreeMap::new();
        let mut sub = verifier
            .subscribe_durable_with_options(
                "soak-verify",
                &verifier.category_subject("orders"),
                &SubscribeOptions::default(),
            )
            .await
            .unwrap();
        while seqs.len() < stored.len() {
            match tokio::time::timeout(Duration::from_secs(5), sub.next_manual_ack()).await {
                Ok(Ok(Some(pending))) => {
                    seqs.insert(pending.received.event.id.clone(), pending.received.sequence);
                    pending.ack().await.unwrap();
                }
                other => {
                    findings.push(format!("reading the stream back: {other:?}"));
                    break;
                }
            }
        }
        let _ = sub.close().await;
        seqs
    };
    for (n, sequence) in &ok {
        if let Some(at) = stored_seq.get(&attempted[n])
            && at != sequence
        {
            findings.push(format!(
                "event {n}: publish said sequence {sequence}, stored at {at}"
            ));
        }
    }

    // handlers: only published events, with their payload
    for bad in journal.corrupt.lock().unwrap().iter() {
        findings.push(format!("handler got a wrong payload: {bad}"));
    }
    for call in &calls {
        if attempted.get(&call.n) != Some(&call.id) {
            findings.push(format!(
                "handled {} (n {}) was never published",
                call.id, call.n
            ));
        }
    }

    // the contract, per acknowledged event
    let mut handled_ok: BTreeMap<u64, usize> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.outcome.is_ok()) {
        *handled_ok.entry(call.n).or_default() += 1;
    }
    let mut accepted: BTreeMap<&str, Vec<&Offer>> = BTreeMap::new();
    for offer in offers.iter().filter(|o| o.accepted.is_ok()) {
        accepted
            .entry(offer.original_id.as_str())
            .or_default()
            .push(offer);
    }
    // An event whose final delivery (`max_deliver`) was in progress, or
    // fetched and not yet started, in an instance that died (or whose
    // shutdown gave up on it), or that the server sent just before it went
    // away (SIGKILL, SIGSTOP: it counted the delivery, no instance got it),
    // comes once more: the spare delivery. Only when the spare is lost the
    // same way is the event neither handled nor dead-lettered (the
    // documented limit, docs/deployment.md, "Guarantees"). Such a loss is
    // told apart by two distinct incidents: one near the final delivery,
    // and one near the spare's delivery (or, if the spare was never seen,
    // in the seconds after the first incident, when it was due); it is
    // reported, not counted as a finding. Any other loss is a finding.
    let incidents: Vec<(Instant, String)> = exits
        .iter()
        .filter(|e| matches!(e.stop, Stop::Kill | Stop::DropHandle) || e.report.aborted > 0)
        .map(|e| {
            (
                e.stopped_at,
                format!("instance {} stopped ({:?})", e.id, e.stop),
            )
        })
        .chain(checks.outages.iter().map(|at| {
            (
                *at,
                format!("the server went away at {:?}", at.duration_since(began)),
            )
        }))
        .collect();
    let near = |at: Instant, seen: Instant| {
        at + Duration::from_secs(1) >= seen && at <= seen + Duration::from_secs(4)
    };
    let lost_twice = |n: u64| -> Option<String> {
        let seen = |delivery: u64| {
            calls
                .iter()
                .filter(|c| c.n == n && c.delivery == delivery)
                .map(|c| c.at)
                .max()
        };
        // the final delivery as seen, or (unseen) the last delivery seen
        let last_seen = calls.iter().filter(|c| c.n == n).map(|c| c.at).max()?;
        let at_final = seen(MAX_DELIVER).unwrap_or(last_seen);
        let (first_at, first) = incidents.iter().find(|(at, _)| near(*at, at_final))?;
        let (_, second) = match seen(MAX_DELIVER + 1) {
            Some(at_spare) => incidents
                .iter()
                .find(|(at, why)| why != first && near(*at, at_spare))?,
            None => incidents.iter().find(|(at, why)| {
                why != first && *at >= *first_at && *at <= *first_at + Duration::from_secs(6)
            })?,
        };
        Some(format!("{first}, then {second}"))
    };
    // Deliveries counted from 1 again: an event delivered once more as its
    // first delivery after a later one (the durable's state was reset, or
    // it was made anew). Printed with when they started, to tell which
    // fault did it.
    let mut restarted: Vec<(Instant, u64, usize)> = Vec::new();
    {
        let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
        let mut by_time: Vec<&Call> = calls.iter().collect();
        by_time.sort_by_key(|c| c.at);
        for call in by_time {
            let highest = seen.entry(call.n).or_default();
            if call.delivery < *highest && call.delivery == 1 {
                restarted.push((call.at, call.n, call.instance));
            }
            *highest = (*highest).max(call.delivery);
        }
    }
    // dead letters stored a second time (see below)
    let mut stored_again = 0;
    if let Some((first, n, instance)) = restarted.first()
        && checks.dlq_dedup_window_ms.is_some()
    {
        eprintln!(
            "deliveries counted from 1 again: {} events, the first (event {n}, instance \
             {instance}) at {:?}",
            restarted.len(),
            first.duration_since(began)
        );
    }
    let mut lost_with_an_instance: Vec<String> = Vec::new();
    let (mut n_ok, mut n_dead, mut redelivered) = (0, 0, 0);
    for n in ok.keys() {
        let id = attempted[n].as_str();
        let times = handled_ok.get(n).copied().unwrap_or(0);
        let dead = accepted.get(id).cloned().unwrap_or_default();
        redelivered += usize::from(times > 1);
        match fate(seed, *n) {
            Fate::FailsAlways => {
                n_dead += 1;
                if times > 0 {
                    findings.push(format!("event {n} (fails always) handled successfully"));
                }
                if dead.is_empty() {
                    let tries: Vec<(usize, u64)> = calls
                        .iter()
                        .filter(|c| c.n == *n)
                        .map(|c| (c.instance, c.delivery))
                        .collect();
                    let last = calls.iter().filter(|c| c.n == *n).map(|c| c.at).max();
                    if let Some(why) = lost_twice(*n) {
                        lost_with_an_instance.push(format!(
                            "event {n} (fails always; deliveries {tries:?}, the last at {:?}): \
                             {why}, at its final and its spare delivery",
                            last.map(|l| l.duration_since(began))
                        ));
                        continue;
                    }
                    findings.push(format!(
                        "event {n} ({id}, fails always) never reached the DLQ; deliveries \
                         (instance, number): {tries:?}, the last at {:?}",
                        last.map(|l| l.duration_since(began))
                    ));
                }
                if dead.len() > 1 {
                    let tries: Vec<(usize, u64)> = calls
                        .iter()
                        .filter(|c| c.n == *n)
                        .map(|c| (c.instance, c.delivery))
                        .collect();
                    eprintln!(
                        "event {n} dead-lettered {} times: {dead:?}; deliveries {tries:?}",
                        dead.len()
                    );
                }
                for offer in &dead {
                    if !FINAL_ATTEMPTS.contains(&offer.attempts)
                        || offer.reason != permanent_reason(*n)
                    {
                        findings.push(format!("event {n}: dead letter {offer:?}"));
                    }
                }
            }
            _ => {
                n_ok += 1;
                if times == 0 {
                    let tries: Vec<(usize, u64, Result<(), String>)> = calls
                        .iter()
                        .filter(|c| c.n == *n)
                        .map(|c| (c.instance, c.delivery, c.outcome.clone()))
                        .collect();
                    // the final delivery and its spare never ran to an end
                    let final_due = tries.iter().all(|t| t.1 < MAX_DELIVER)
                        && tries.iter().any(|t| t.1 == MAX_DELIVER - 1);
                    if final_due && let Some(why) = lost_twice(*n) {
                        lost_with_an_instance.push(format!(
                            "event {n} ({:?}; deliveries {tries:?}): {why}, at its final and its \
                             spare delivery",
                            fate(seed, *n),
                        ));
                        continue;
                    }
                    findings.push(format!(
                        "event {n} ({id}, {:?}) never handled successfully; deliveries: {tries:?}",
                        fate(seed, *n)
                    ));
                }
                if !dead.is_empty() {
                    findings.push(format!(
                        "event {n} ({:?}) dead-lettered: {dead:?}",
                        fate(seed, *n)
                    ));
                }
            }
        }
    }

    // the DLQ as stored: decrypts, and each dead letter is the one offered
    let dlq = ProviderDlqHandler::new(verifier.clone()).with_encryptor(verifier_keys.clone());
    let listed = dlq.list(100_000).await;
    match &listed {
        Err(err) => findings.push(format!("the DLQ does not list (decrypt): {err:?}")),
        Ok(letters) => {
            let mut seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
            for letter in letters {
                seen.entry(letter.event.id.as_str())
                    .or_default()
                    .push(letter.dead_lettered_at);
                let Some(n) = by_id.get(letter.event.id.as_str()) else {
                    findings.push(format!("dead letter of unknown event {}", letter.event.id));
                    continue;
                };
                if letter.event.payload != payload(*n)
                    || letter.reason != permanent_reason(*n)
                    || !FINAL_ATTEMPTS.contains(&letter.delivery_attempts)
                    || letter.original_subject != letter.event.subject
                    || letter
                        .first_failure_at
                        .is_none_or(|f| f > letter.dead_lettered_at)
                {
                    findings.push(format!("dead letter of event {n} is wrong: {letter:?}"));
                }
            }
            for (id, at) in &seen {
                let Some(dedup_window_ms) = checks.dlq_dedup_window_ms else {
                    // every dead letter once
                    if at.len() > 1 {
                        findings.push(format!(
                            "event {id} dead-lettered {} times in the DLQ",
                            at.len()
                        ));
                    }
                    continue;
                };
                // A second copy is stored only outside the dedup window
                // (docs/deployment.md, "dead letters, twice"): after
                // nats-server lost the durable's state in a SIGKILL, so
                // that the event came again from its first delivery.
                let again_from_scratch = by_id
                    .get(id)
                    .is_some_and(|n| restarted.iter().any(|r| r.1 == *n));
                let apart = at.iter().max().unwrap_or(&0) - at.iter().min().unwrap_or(&0);
                if at.len() == 2 && again_from_scratch && apart >= dedup_window_ms {
                    stored_again += 1;
                } else if at.len() > 1 {
                    findings.push(format!(
                        "event {id} dead-lettered {} times in the DLQ, {apart} ms apart",
                        at.len()
                    ));
                }
            }
            for id in accepted.keys() {
                if !seen.contains_key(id) {
                    findings.push(format!("dead letter of {id} accepted but not in the DLQ"));
                }
            }
        }
    }

    // metrics against what handlers and the DLQ saw
    let mut total = MetricsSnapshot::default();
    for exit in exits {
        let m = &exit.metrics;
        total.handled_total += m.handled_total;
        total.handler_errors += m.handler_errors;
        total.redeliveries += m.redeliveries;
        total.dlq_total += m.dlq_total;
        total.dlq_errors += m.dlq_errors;
        total.decrypt_errors += m.decrypt_errors;
        total.decrypt_total += m.decrypt_total;
        let mine: Vec<&Call> = calls.iter().filter(|c| c.instance == exit.id).collect();
        let ok_calls = mine.iter().filter(|c| c.outcome.is_ok()).count() as u64;
        let err_calls = mine.len() as u64 - ok_calls;
        let final_errs = mine
            .iter()
            .filter(|c| c.outcome.is_err() && c.delivery >= MAX_DELIVER)
            .count() as u64;
        let my_offers: Vec<&Offer> = offers.iter().filter(|o| o.instance == exit.id).collect();
        let dlq_ok = my_offers.iter().filter(|o| o.accepted.is_ok()).count() as u64;
        let dlq_err = my_offers.len() as u64 - dlq_ok;
        let exact = (m.handled_total, m.handler_errors, m.dlq_total, m.dlq_errors);
        let seen = (ok_calls, err_calls, dlq_ok, dlq_err);
        // a killed instance may die between a handler (or the DLQ)
        // returning and the runner counting it: at most one per handler
        // running at once
        let counted = |metric: u64, saw: u64| match exit.stop {
            Stop::Kill => metric <= saw && saw - metric <= concurrency(),
            _ => metric == saw,
        };
        if !(counted(exact.0, seen.0)
            && counted(exact.1, seen.1)
            && counted(exact.2, seen.2)
            && counted(exact.3, seen.3))
        {
            findings.push(format!(
                "instance {} ({:?}): metrics (handled, handler errors, dlq, dlq errors) = \
                 {exact:?}, handlers and DLQ saw {:?}",
                exit.id, exit.stop, seen
            ));
        }
        // a killed instance may die between a nak and counting it
        let naked = err_calls - final_errs;
        let redeliveries_ok = match exit.stop {
            Stop::Kill => m.redeliveries <= naked,
            _ => m.redeliveries == naked,
        };
        if !redeliveries_ok {
            findings.push(format!(
                "instance {}: redeliveries metric {} for {naked} failed non-final deliveries",
                exit.id, m.redeliveries
            ));
        }
        if m.decrypt_errors != 0 {
            findings.push(format!(
                "instance {}: {} decrypt errors",
                exit.id, m.decrypt_errors
            ));
        }
        if let (Stop::Graceful(deadline), Some(took)) = (exit.stop, exit.shutdown_took) {
            let bound = deadline + Duration::from_secs(REQUEST_TIMEOUT_SECS + 1);
            if took > bound {
                findings.push(format!(
                    "instance {}: graceful shutdown({deadline:?}) took {took:?}",
                    exit.id
                ));
            }
            if exit.report.acked > m.handled_total {
                findings.push(format!(
                    "instance {}: report {:?} vs {m:?}",
                    exit.id, exit.report
                ));
            }
        }
    }
    let publish_metrics: Vec<MetricsSnapshot> = publisher_buses
        .iter()
        .map(|b| b.metrics().snapshot())
        .collect();
    let (publish_total, publish_errors) = publish_metrics.iter().fold((0, 0), |(t, e), m| {
        (t + m.publish_total, e + m.publish_errors)
    });
    if (publish_total, publish_errors) != (ok.len() as u64, published.errors) {
        findings.push(format!(
            "publisher metrics (ok, errors) = {:?}, publishers saw {:?}",
            (publish_total, publish_errors),
            (ok.len(), published.errors)
        ));
    }

    // ---- report ----
    let panics = PANICS.load(Ordering::SeqCst);
    if panics > 0 {
        findings.push(format!("{panics} panics"));
    }
    eprintln!(
        "chaos soak (seed {seed}): {} attempted, {} acknowledged ({} publish errors retried), \
         {} handler calls, {n_ok} to handle ({redelivered} handled more than once), \
         {n_dead} to dead-letter, {} DLQ offers ({} accepted); total metrics: handled {}, \
         handler errors {}, redeliveries {}, dlq {}, dlq errors {}, decrypts {}",
        attempted.len(),
        ok.len(),
        published.errors,
        calls.len(),
        offers.len(),
        offers.iter().filter(|o| o.accepted.is_ok()).count(),
        total.handled_total,
        total.handler_errors,
        total.redeliveries,
        total.dlq_total,
        total.dlq_errors,
        total.decrypt_total,
    );
    for exit in exits {
        eprintln!(
            "  instance {} {:?}: shutdown took {:?}, {:?}",
            exit.id, exit.stop, exit.shutdown_took, exit.report
        );
    }
    eprintln!(
        "lost with their instances at their final and spare deliveries (documented limitation): {}",
        lost_with_an_instance.len()
    );
    for lost in &lost_with_an_instance {
        eprintln!("  {lost}");
    }
    if !restarted.is_empty() && checks.dlq_dedup_window_ms.is_some() {
        eprintln!(
            "the durable's state was lost (nats-server, in a SIGKILL): events delivered again \
             from their first delivery; dead letters stored again outside the dedup window: \
             {stored_again}"
        );
    }
    eprintln!("warnings and errors logged:");
    for ((level, message), (count, example)) in log_summary() {
        eprintln!("  {count:>5} × {level}: {message}\n          e.g. {example}");
    }
    Outcome {
        seed,
        acknowledged: ok.len(),
        findings,
    }
}
