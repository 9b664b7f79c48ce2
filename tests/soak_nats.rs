//! Chaos soak of the production path, assembled as `docs/deployment.md`
//! says: an [`EventBus`] over a [`NatsProvider`] (file storage) with
//! AES-256-GCM encryption and a provider-backed (encrypted) DLQ, a managed
//! durable subscriber run by the consumer runner with bounded concurrency in
//! several "service instances" sharing one durable. Each instance has its
//! own tokio runtime, NATS connection, bus and key ring, as separate
//! processes would.
//!
//! While two publishers (their own connections and buses; one event by
//! event, one in batches) publish a known set of events, retrying
//! transient errors with the same events (the docs' advice), the fault
//! injector SIGKILLs and restarts the `nats-server` (same store), SIGSTOPs
//! and SIGCONTs it, restarts instances (graceful
//! shutdown, a dropped `ConsumerHandle`, and a killed runtime: a process
//! exit), rotates the encryption key (`add_key` everywhere, then
//! `rotate_to`), and has the DLQ refuse every dead letter with a
//! transient error for a few seconds (its backend down; other faults may
//! come meanwhile). Handlers fail per event: some on their first one or two
//! deliveries, some always (those must reach the DLQ after `max_deliver`).
//!
//! At the end the at-least-once contract is checked exactly: every event
//! whose publish returned `Ok` is stored (once, at the returned sequence)
//! and was either handled successfully or is in the DLQ (with the handler's
//! reason, `max_deliver` attempts (one more after its spare delivery),
//! decrypting), as its fate says; nothing was handled that was not
//! published; the metrics agree with what the handlers and the DLQ saw;
//! graceful shutdowns kept their deadline; nothing panicked; warnings and
//! errors logged are printed.
//!
//! A final delivery (`max_deliver`) in flight when its instance died or the
//! server went away comes once more, as its spare delivery, so the event is
//! still handled or dead-lettered. One loss is allowed, and printed: an
//! event whose spare delivery was lost the same way (docs/deployment.md,
//! "Guarantees"); the soak accepts it only when two distinct stops or
//! outages happened, one at the final delivery and one at the spare.
//!
//! The DLQ holds each event's dead letter once, but for one case, printed:
//! nats-server (2.9.10) SIGKILLed with many deliveries unsettled may come
//! back with the durable's state empty, so every event comes again from
//! its first delivery, and a dead letter offered again outside the dedup
//! window (120 s) is stored again (docs/deployment.md, "dead letters,
//! twice"). Every run prints the server's warnings and errors, from all
//! its starts (`A3S_SOAK_SERVER_LOG` saves the whole log).
//!
//! `A3S_SOAK_SECS` (default 20) sets the length of the fault phase: the
//! default runs each fault once; longer runs draw faults at random.
//! `A3S_SOAK_SEED` replays a run (the seed is printed); without it the
//! default run uses a fixed seed (so CI replays one plan of handler fates;
//! the faults' timing still varies) and a run with `A3S_SOAK_SECS` set
//! draws one from the clock. `A3S_SOAK_INSTANCES` (default 3) and
//! `A3S_SOAK_CONCURRENCY` (default 4) set the instances sharing the durable
//! and the handlers each runs at once.
//!
//! What the soaks share (all but the server, the instances' connections
//! and the server's faults) is in `tests/soak/mod.rs`.
#![cfg(all(feature = "nats", feature = "crypto"))]
#![allow(clippy::unwrap_used)]

#[path = "../crates/event-nats/tests/common/mod.rs"]
mod common;
mod soak;

use a3s_event::provider::nats::{NatsConfig, NatsProvider};
use a3s_event::{EventBus, EventProvider};
use common::NatsServer;
use soak::{Checks, Rng, Soak, Stop, random_stop};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The stream's dedup window (the provider's default, JetStream's): a
/// dead letter offered again later is stored again.
const DEDUP_WINDOW_MS: u64 = 120_000;

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillServer,
    PauseServer,
    RestartInstance(Stop),
    /// The server is paused (or killed) while an instance stops and its
    /// replacement starts.
    RestartInstanceDuringOutage {
        how: Stop,
        kill_server: bool,
    },
    RotateKey,
    /// The DLQ refuses every dead letter with a transient error for a
    /// while (its backend down, the event stream up).
    DlqOutage,
}

fn random_fault(rng: &mut Rng) -> Fault {
    let how = random_stop(rng);
    match rng.below(5) {
        4 => Fault::DlqOutage,
        0 => Fault::KillServer,
        1 => Fault::PauseServer,
        2 => Fault::RestartInstance(how),
        _ => Fault::RestartInstanceDuringOutage {
            how,
            kill_server: rng.below(2) == 0,
        },
    }
}

fn plan(rng: &mut Rng, secs: u64) -> Vec<Fault> {
    let faults = vec![
        Fault::DlqOutage,
        Fault::KillServer,
        Fault::PauseServer,
        Fault::RestartInstance(Stop::Graceful(Duration::from_secs(2))),
        Fault::RestartInstance(Stop::DropHandle),
        Fault::RestartInstance(Stop::Kill),
        Fault::RestartInstanceDuringOutage {
            how: Stop::Graceful(Duration::from_secs(2)),
            kill_server: false,
        },
        Fault::RestartInstanceDuringOutage {
            how: Stop::Kill,
            kill_server: true,
        },
    ];
    // longer runs: more faults, drawn at random (about one per 3 s)
    soak::plan(rng, secs, faults, 3, random_fault, Fault::RotateKey)
}

async fn with_server<R: Send + 'static>(
    server: &Arc<Mutex<NatsServer>>,
    f: impl FnOnce(&mut NatsServer) -> R + Send + 'static,
) -> R {
    let server = server.clone();
    tokio::task::spawn_blocking(move || f(&mut server.lock().unwrap()))
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// The soak
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_every_acknowledged_event_is_handled_or_dead_lettered() {
    let Some(server) = NatsServer::start("chaos_soak") else {
        return;
    };
    let settings = soak::settings();

    let config = NatsConfig {
        request_timeout_secs: soak::REQUEST_TIMEOUT_SECS,
        ..common::config(&server, "soak")
    };
    let server = Arc::new(Mutex::new(server));

    // the publishers: their own connections and buses
    let mut publishers = Vec::new();
    for _ in 0..2 {
        let nats = NatsProvider::connect(config.clone()).await.unwrap();
        let subject = nats.build_subject("orders", "created");
        publishers.push((EventBus::new(nats), subject));
    }
    // each instance: a connection of its own
    let connect: soak::Connect = {
        let config = config.clone();
        Box::new(move || {
            let config = config.clone();
            Box::pin(async move {
                let nats = NatsProvider::connect(config).await?;
                Ok(Arc::new(nats) as Arc<dyn EventProvider>)
            })
        })
    };
    let mut soak = Soak::start(settings, connect, publishers).await;

    // ---- faults ----
    let faults = plan(&mut soak.rng, soak.secs);
    let gap = soak.begin_faults(&faults);
    // the logs of the server's starts before the one running
    let mut server_logs = String::new();
    // when the server went away (SIGKILL or SIGSTOP)
    let mut outages: Vec<Instant> = Vec::new();
    for fault in faults {
        tokio::time::sleep(gap).await;
        let at = soak.began.elapsed();
        match fault {
            Fault::DlqOutage => soak.dlq_outage(at),
            Fault::KillServer => {
                let down = soak.rng.millis(300, 1500);
                eprintln!("{at:?}: SIGKILL nats-server, restart after {down:?}");
                outages.push(Instant::now());
                let log = with_server(&server, move |s| {
                    // each start writes a log of its own
                    let log = s.log();
                    s.kill();
                    std::thread::sleep(down);
                    s.restart();
                    log
                })
                .await;
                server_logs.push_str(&log);
            }
            Fault::PauseServer => {
                let paused = soak.rng.millis(500, 2500);
                eprintln!("{at:?}: SIGSTOP nats-server for {paused:?}");
                outages.push(Instant::now());
                with_server(&server, |s| s.pause()).await;
                tokio::time::sleep(paused).await;
                with_server(&server, |s| s.resume()).await;
            }
            Fault::RestartInstance(how) => soak.restart_instance(how, at).await,
            Fault::RestartInstanceDuringOutage { how, kill_server } => {
                let instance = soak.pick_instance();
                let before = soak.rng.millis(200, 800);
                eprintln!(
                    "{at:?}: nats-server {} for {before:?}, then instance {} stops ({how:?}) \
                     and its replacement starts; then the server comes back",
                    if kill_server {
                        "SIGKILLed"
                    } else {
                        "SIGSTOPped"
                    },
                    instance.id
                );
                outages.push(Instant::now());
                let log = with_server(&server, move |s| {
                    if kill_server {
                        let log = s.log();
                        s.kill();
                        log
                    } else {
                        s.pause();
                        String::new()
                    }
                })
                .await;
                server_logs.push_str(&log);
                tokio::time::sleep(before).await;
                let exit = instance.stop(how).await;
                soak.exited(exit);
                let replacement = {
                    let (ctx, id, keys) = (soak.ctx.clone(), soak.next_id, soak.keys);
                    tokio::spawn(async move { soak::start_instance(&ctx, id, keys).await })
                };
                soak.next_id += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
                with_server(
                    &server,
                    move |s| {
                        if kill_server { s.restart() } else { s.resume() }
                    },
                )
                .await;
                soak.instances.push(replacement.await.unwrap());
            }
            Fault::RotateKey => soak.rotate_key(at).await,
        }
    }
    soak.stop_and_drain(gap).await;

    // ---- verify ----
    let verifier = NatsProvider::connect(config.clone()).await.unwrap();
    let outcome = soak::verify(
        &soak,
        Arc::new(verifier),
        Checks {
            outages: &outages,
            dlq_dedup_window_ms: Some(DEDUP_WINDOW_MS),
        },
    )
    .await;
    // the logs of every start of the server
    server_logs.push_str(&server.lock().unwrap().log());
    let log = server_logs;
    let server_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[ERR]") || l.contains("[FTL]") || l.contains("panic"))
        .collect();
    eprintln!("nats-server errors logged: {}", server_errors.len());
    for line in server_errors.iter().take(20) {
        eprintln!("  {line}");
    }
    let server_warnings: Vec<&str> = log.lines().filter(|l| l.contains("[WRN]")).collect();
    eprintln!("nats-server warnings logged: {}", server_warnings.len());
    for line in server_warnings.iter().take(20) {
        eprintln!("  {line}");
    }
    // the whole server log, for a run to look into
    if let Some(path) = std::env::var_os("A3S_SOAK_SERVER_LOG") {
        let _ = std::fs::write(path, &log);
    }
    outcome.assert_passed();
}
