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
    pub(crate) plaintext: PlaintextPolicy,
}

/// What a bus does with payloads that are not encrypted
/// ([`EventBus::set_plaintext_policy`](crate::EventBus::set_plaintext_policy)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlaintextPolicy {
    /// The default: a bus without an encryptor publishes plaintext, and a
    /// payload that is not an envelope is delivered and listed as it is
    /// (events published before encryption was turned on, or by a bus
    /// without the encryptor, stay readable).
    #[default]
    Accept,
    /// Fail closed. Publishing without an encryptor fails
    /// ([`Error::Encryption`](event_core::Error::Encryption), nothing
    /// stored), so a deployment that lost its key configuration cannot
    /// publish in clear. Reading a payload that is not one of the
    /// encryptor's envelopes (or any payload, without an encryptor) is a
    /// decryption failure, handled as an undecryptable event is: dead-
    /// lettered with the reason (subscriptions and consumers), an error in
    /// `list_events` ([`Error::Decryption`](event_core::Error::Decryption)),
    /// counted in `decrypt_errors`. Someone who can write to the stream
    /// directly then cannot pass a forged plaintext payload off as a
    /// decrypted one; a re-drive
    /// ([`ProviderDlqHandler`](crate::ProviderDlqHandler)) skips such a
    /// dead letter instead of republishing it encrypted, and skips as well
    /// every dead letter stored in plaintext (not an envelope of the
    /// handler's encryptor: written before encryption was enabled, or
    /// planted in the DLQ stream), which it cannot tell from a forgery.
    /// Re-drive a genuine one from a bus with [`Accept`](Self::Accept).
    ///
    /// A delivery that is itself a dead letter (`event_type`
    /// [`DEAD_LETTER_EVENT_TYPE`](crate::dlq::DEAD_LETTER_EVENT_TYPE), or
    /// the `dlqreason` metadata of a dead letter `event-routing`'s
    /// `SinkDlqHandler` forwarded, to a
    /// subscriber whose filter covers the DLQ subjects, `{prefix}.>` say)
    /// and that the bus refuses as plaintext (a
    /// [`ProviderDlqHandler`](crate::ProviderDlqHandler) without
    /// [`with_encryptor`](crate::ProviderDlqHandler::with_encryptor) stores
    /// its letters in clear) or cannot decrypt is **not dead-lettered
    /// again**, whatever the policy: it is stored in its DLQ already, and a
    /// new letter would only nest it, unreadable for the same reason, and be
    /// delivered in turn, without end. It is terminated for that subscriber
    /// instead, logged as a `WARN` naming it and why, and counted in
    /// `dlq_dropped` (and [`ConsumerReport::terminated`](crate::ConsumerReport::terminated)),
    /// as well as in `decrypt_errors`. Other events the bus refuses or
    /// cannot decrypt are dead-lettered as described above.
    Refuse,
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

    /// Whether a delivered payload needs looking at: an encryptor is set,
    /// or plaintext is refused (no lock taken).
    pub(crate) fn encrypting(&self) -> bool {
        self.encrypting.load(Ordering::Acquire)
    }

    /// Replaces the hooks with `f` applied to a copy of the current ones.
    pub(crate) fn update(&self, f: impl FnOnce(&mut Hooks)) {
        let mut guard = self.hooks.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = Hooks::clone(&guard);
        f(&mut next);
        self.encrypting.store(
            next.encryptor.is_some() || next.plaintext == PlaintextPolicy::Refuse,
            Ordering::Release,
        );
        *guard = Arc::new(next);
    }
}
