//! Chaos soak of the in-process production path: the memory analogue of
//! `tests/soak_nats.rs`. An [`EventBus`] over one shared [`MemoryProvider`]
//! with AES-256-GCM encryption and a provider-backed (encrypted) DLQ, a
//! managed durable subscriber run by the consumer runner with bounded
//! concurrency in several "service instances" sharing one durable. Each
//! instance has its own tokio runtime, bus and key ring; the provider is
//! the one thing they share (a memory provider lives as long as its
//! process, so the faults here are the instances' own).
//!
//! While two publishers (their own buses; one event by event, one in
//! batches) publish a known set of events, the fault injector restarts
//! instances, one or two at once (graceful shutdown, a dropped
//! `ConsumerHandle`, and a runtime torn down at once), rotates the
//! encryption key (`add_key` everywhere, then `rotate_to`), and has the DLQ
//! refuse every dead letter with a transient error for a few seconds (its
//! backend down; other faults may come meanwhile). Handlers fail per
//! event: some on their first one or two deliveries, some always (those
//! must reach the DLQ after `max_deliver`).
//!
//! At the end the at-least-once contract is checked exactly, as the NATS
//! soak does: every event whose publish returned `Ok` is stored (once, at
//! the returned sequence) and was either handled successfully or is in the
//! DLQ (with the handler's reason, `max_deliver` attempts (one more after
//! its spare delivery), decrypting); nothing was handled that was not
//! published; the metrics agree with what the handlers and the DLQ saw;
//! graceful shutdowns kept their deadline; nothing panicked; warnings and
//! errors logged are printed.
//!
//! A final delivery in flight when its instance died comes once more, as
//! its spare delivery. One loss is allowed, and printed: an event whose
//! spare delivery was lost the same way, only when two distinct instance
//! stops happened, one at the final delivery and one at the spare.
//!
//! `A3S_SOAK_SECS` (default 20) sets the length of the fault phase;
//! `A3S_SOAK_SEED` replays a run (the seed is printed; the default run
//! uses a fixed seed, a run with `A3S_SOAK_SECS` set draws one from the
//! clock). `A3S_SOAK_INSTANCES` (default 3) and `A3S_SOAK_CONCURRENCY`
//! (default 4) set the instances sharing the durable and the handlers each
//! runs at once.
//!
//! What the soaks share (all but how an instance gets its provider and
//! each provider's faults) is in `tests/soak/mod.rs`.
#![cfg(all(feature = "memory", feature = "crypto"))]
#![allow(clippy::unwrap_used)]

mod soak;

use a3s_event::provider::memory::{MemoryConfig, MemoryProvider};
use a3s_event::{EventBus, EventProvider};
use soak::{Checks, Rng, Soak, Stop, random_stop};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    RestartInstance(Stop),
    /// Two instances stop at once (as a deployment rolls), and their
    /// replacements start.
    RestartTwoInstances(Stop, Stop),
    RotateKey,
    /// The DLQ refuses every dead letter with a transient error for a
    /// while (its backend down, the event stream up).
    DlqOutage,
}

fn random_fault(rng: &mut Rng) -> Fault {
    match rng.below(4) {
        3 => Fault::DlqOutage,
        0 => Fault::RestartTwoInstances(random_stop(rng), random_stop(rng)),
        _ => Fault::RestartInstance(random_stop(rng)),
    }
}

fn plan(rng: &mut Rng, secs: u64) -> Vec<Fault> {
    let faults = vec![
        Fault::DlqOutage,
        Fault::RestartInstance(Stop::Graceful(Duration::from_secs(2))),
        Fault::RestartInstance(Stop::DropHandle),
        Fault::RestartInstance(Stop::Kill),
        Fault::RestartTwoInstances(Stop::Kill, Stop::Graceful(Duration::from_secs(2))),
    ];
    // longer runs: more faults, drawn at random (about one per 2 s)
    soak::plan(rng, secs, faults, 2, random_fault, Fault::RotateKey)
}

// ---------------------------------------------------------------------------
// The soak
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_every_acknowledged_event_is_handled_or_dead_lettered() {
    let settings = soak::settings();

    // one provider, shared as a process's instances would share it; room
    // for every event and dead letter of a long run
    let memory = MemoryProvider::new(MemoryConfig {
        max_events: 1_000_000,
        ..MemoryConfig::default()
    })
    .unwrap();
    let provider: Arc<dyn EventProvider> = Arc::new(memory);

    // the publishers: their own buses
    let publishers = (0..2)
        .map(|_| {
            let subject = provider.build_subject("orders", "created");
            (EventBus::from_arc(provider.clone()), subject)
        })
        .collect();
    // each instance: the shared provider
    let connect: soak::Connect = {
        let provider = provider.clone();
        Box::new(move || {
            let provider = provider.clone();
            Box::pin(async move { Ok(provider) })
        })
    };
    let mut soak = Soak::start(settings, connect, publishers).await;

    // ---- faults ----
    let faults = plan(&mut soak.rng, soak.secs);
    let gap = soak.begin_faults(&faults);
    for fault in faults {
        tokio::time::sleep(gap).await;
        let at = soak.began.elapsed();
        match fault {
            Fault::DlqOutage => soak.dlq_outage(at),
            Fault::RestartInstance(how) => soak.restart_instance(how, at).await,
            Fault::RestartTwoInstances(first, second) => {
                let mut stopping = Vec::new();
                for how in [first, second] {
                    if soak.instances.is_empty() {
                        break;
                    }
                    let instance = soak.pick_instance();
                    eprintln!("{at:?}: instance {} stops ({how:?})", instance.id);
                    stopping.push(tokio::spawn(instance.stop(how)));
                }
                for stopped in stopping {
                    soak.exited(stopped.await.unwrap());
                    soak.start_instance().await;
                }
            }
            Fault::RotateKey => soak.rotate_key(at).await,
        }
    }
    soak.stop_and_drain(gap).await;

    // ---- verify ----
    soak::verify(
        &soak,
        provider,
        Checks {
            outages: &[],
            dlq_dedup_window_ms: None,
        },
    )
    .await
    .assert_passed();
}
