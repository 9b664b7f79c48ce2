//! The bus's hook slots: swapped through `&self`, read with one uncontended
//! read lock on the publish path.

use event_core::{DlqHandler, EventEncryptor, EventRouter, SchemaValidator};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The hooks in effect at one moment.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) encryptor: Option<Arc<dyn EventEncryptor>>,
    pub(crate) validator: Option<Arc<dyn SchemaValidator>>,
    pub(crate) router: Option<Arc<dyn EventRouter>>,
    pub(crate) dlq: Option<Arc<dyn DlqHandler>>,
}

/// Copy-on-write slot: readers clone an `Arc<Hooks>` under a read lock held
/// for a few nanoseconds; writers replace the whole set. A flag lets the
/// delivery path skip the lock entirely when no encryptor is set.
#[derive(Default)]
pub(crate) struct HookSlot {
    hooks: RwLock<Arc<Hooks>>,
    encrypting: AtomicBool,
}

impl HookSlot {
    /// The current hooks.
    pub(crate) fn load(&self) -> Arc<Hooks> {
        // a panic while holding the lock cannot leave `Arc<Hooks>` half-written
        self.hooks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether an encryptor is set (no lock taken).
    pub(crate) fn encrypting(&self) -> bool {
        self.encrypting.load(Ordering::Acquire)
    }

    /// Replaces the hooks with `f` applied to a copy of the current ones.
    pub(crate) fn update(&self, f: impl FnOnce(&mut Hooks)) {
        let mut guard = self.hooks.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = Hooks::clone(&guard);
        f(&mut next);
        self.encrypting
            .store(next.encryptor.is_some(), Ordering::Release);
        *guard = Arc::new(next);
    }
}
