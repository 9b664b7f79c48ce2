//! # event-crypto: AES-256-GCM payload encryption for A3S Event
//!
//! [`Aes256GcmEncryptor`] implements event-core's
//! [`EventEncryptor`](event_core::EventEncryptor): give it to the event bus
//! (`EventBus::set_encryptor`) and payloads are encrypted after schema
//! validation and before they reach the provider, and decrypted for
//! subscribers. Brokers such as NATS then store and replicate only
//! ciphertext.
//!
//! - **AES-256-GCM** ([RustCrypto `aes-gcm`](https://docs.rs/aes-gcm)),
//!   a fresh random 96-bit nonce per message, hardware AES and carry-less
//!   multiplication when the CPU has them.
//! - **Bound to the event.** The event id is associated data: a payload
//!   copied into another event does not decrypt.
//! - **Key ring with rotation** through `&self`: [`add_key`], [`rotate_to`],
//!   [`remove_key`]. New payloads use the active key; old ones decrypt with
//!   the key their envelope names. Across processes, see
//!   [Key rotation](#key-rotation).
//! - **Key hygiene.** [`EncryptionKey`] and the expanded cipher state are
//!   zeroized on drop and redacted in `Debug`; keys load from base64 or an
//!   environment variable with a clear [`Error::InvalidConfig`] for a bad one.
//! - **Errors, never panics**, for every malformed, truncated, tampered or
//!   foreign envelope: [`Error::Decryption`] saying what was wrong, in a
//!   message of bounded size (ids from the envelope or the event are quoted
//!   cut to 64 characters and their length).
//!
//! [`add_key`]: Aes256GcmEncryptor::add_key
//! [`Error::Conflict`]: event_core::Error::Conflict
//! [`rotate_to`]: Aes256GcmEncryptor::rotate_to
//! [`remove_key`]: Aes256GcmEncryptor::remove_key
//! [`Error::InvalidConfig`]: event_core::Error::InvalidConfig
//! [`Error::Decryption`]: event_core::Error::Decryption
//!
//! ## Example
//!
//! ```
//! use event_core::{Event, EventEncryptor};
//! use event_crypto::{Aes256GcmEncryptor, EncryptedPayload, EncryptionKey};
//! use serde_json::json;
//!
//! // In production: EncryptionKey::from_env("A3S_EVENT_KEY")?
//! let key = EncryptionKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
//! let encryptor = Aes256GcmEncryptor::with_key("2025-01", key);
//!
//! let mut event = Event::new(
//!     "events.payment.captured", "payment", "Payment captured", "billing",
//!     json!({"card": "4111 1111 1111 1111", "amount": 4200}),
//! );
//! let plaintext = event.payload.clone();
//! event.payload = encryptor.encrypt(&event.id, &event.payload)?;
//!
//! assert!(EncryptedPayload::is_encrypted(&event.payload));
//! assert!(!serde_json::to_string(&event)?.contains("4111 1111"));
//! assert_eq!(encryptor.decrypt(&event.id, &event.payload)?, plaintext);
//!
//! // Rotate: new payloads use the new key, old ones still decrypt.
//! encryptor.add_key("2025-02", EncryptionKey::generate()?.as_bytes())?;
//! encryptor.rotate_to("2025-02")?;
//! assert_eq!(encryptor.decrypt(&event.id, &event.payload)?, plaintext);
//!
//! // The ciphertext is bound to its event.
//! let err = encryptor.decrypt("evt-someone-else", &event.payload).unwrap_err();
//! assert!(matches!(err, event_core::Error::Decryption(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Key rotation
//!
//! Every envelope names the key it was encrypted under (`keyId`), and a ring
//! decrypts with whichever of its keys that names. With several processes
//! sharing a stream (a rolling deployment), rotate in three steps:
//!
//! 1. **Give every process the new key, the old one still active.** Roll
//!    out a ring holding both keys with the **old** key active (the first
//!    rollout). Nothing is encrypted under the new key yet, so processes
//!    still running the previous ring read everything.
//! 2. **Then make the new key active**, once every process holds it: a
//!    second rollout with the new key active, or [`rotate_to`] at run time
//!    on each process.
//! 3. **Remove the old key last.** [`remove_key`] only once no event under
//!    the old key is left to read: all past the stream's retention (and the
//!    DLQ's), or re-encrypted.
//!
//! A process whose ring lacks the key an event was encrypted under cannot
//! decrypt it (`unknown key id`). On an event bus (`event-bus`) using this
//! encryptor, its consumers then **dead-letter** the event (payload still
//! encrypted) and terminate it on the stream **if the bus has a DLQ
//! handler**. Without one the event is only **terminated**: logged as an error,
//! counted in `dlq_dropped` and `ConsumerReport::terminated`, and lost for
//! that consumer group (it stays in the stream until retention, but the
//! group is not offered it again). Give every bus that consumes encrypted
//! events a DLQ handler (`ProviderDlqHandler`, which can re-drive). To
//! recover, give the process the key (`add_key`, or a redeploy), then
//! re-drive the dead letters (`ProviderDlqHandler::redrive` with a bus that
//! holds the key): each event is decrypted and republished with a **new
//! id**, its original id in the metadata key `a3s.redriven_from`, and
//! reaches **every** consumer group of its subject again, those that had
//! handled it included. Idempotent handlers should deduplicate on
//! `a3s.redriven_from` when it is present, else on the event id.
//!
//! **A key id names exactly one key, forever.** Other key bytes under an id
//! already used (a key regenerated under the old name, on another process
//! or after a restart) make every event encrypted under the first key fail
//! with `authentication failed under key "<id>"`. [`add_key`] refuses that
//! within one ring ([`Error::Conflict`]), for an id [`remove_key`] removed
//! too (which takes back only its own key), but cannot see other processes
//! or a restarted one: give each new key a new id.
//!
//! **Rotate before a key has encrypted 2³² payloads**, counted over every
//! process that encrypts under it. Nonces are random (96 bits), and NIST
//! SP 800-38D (section 8.3) allows a key with random nonces at most 2³²
//! encryptions: past that, the chance that two payloads share a nonce,
//! which under GCM reveals the XOR of their plaintexts and lets the
//! authentication key be recovered (envelopes forged under that key),
//! grows beyond 2⁻³². That is about 50 days at 1,000 payloads per second,
//! 5 days at 10,000. The ring does not count them: size the rotation
//! period from the publish rate (a bus counts its encryptions in its
//! `encrypt_total` metric).
//!
//! Loading the ring from environment variables, one per key id
//! (`A3S_KEY_<ID>`, standard base64), with the ids and the active one in
//! two more (a process reads them at start, so a rollout changes them):
//!
//! ```standalone_crate
//! use event_crypto::{Aes256GcmEncryptor, EncryptionKey};
//!
//! /// The ring of every id in `A3S_KEY_IDS` (comma-separated), each key read
//! /// from `A3S_KEY_<ID>`; `A3S_ACTIVE_KEY_ID` names the key new payloads
//! /// are encrypted with.
//! fn key_ring_from_env() -> event_core::Result<Aes256GcmEncryptor> {
//!     let var = |name: &str| {
//!         std::env::var(name).map_err(|_| {
//!             event_core::Error::invalid_config(format!("environment variable {name}"), "is not set")
//!         })
//!     };
//!     let key = |id: &str| EncryptionKey::from_env(&format!("A3S_KEY_{id}"));
//!     let active = var("A3S_ACTIVE_KEY_ID")?;
//!     let ring = Aes256GcmEncryptor::with_key(active.as_str(), key(&active)?);
//!     for id in var("A3S_KEY_IDS")?.split(',').map(str::trim) {
//!         ring.add_encryption_key(id, key(id)?)?; // the active key again: a no-op
//!     }
//!     Ok(ring)
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // SAFETY: a doctest of its own (`standalone_crate`), in its own
//! # // process; no other thread runs yet
//! # unsafe {
//! #     std::env::set_var("A3S_KEY_2025_01", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
//! #     std::env::set_var("A3S_KEY_2025_02", "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=");
//! #     std::env::set_var("A3S_KEY_IDS", "2025_01, 2025_02");
//! #     std::env::set_var("A3S_ACTIVE_KEY_ID", "2025_01");
//! # }
//! // First rollout: A3S_KEY_IDS=2025_01,2025_02 and A3S_ACTIVE_KEY_ID=2025_01
//! let ring = key_ring_from_env()?;
//! assert_eq!(ring.key_ids(), ["2025_01", "2025_02"]);
//! assert_eq!(ring.active_key_id(), "2025_01");
//! // Second rollout: A3S_ACTIVE_KEY_ID=2025_02; or, at run time:
//! ring.rotate_to("2025_02")?;
//! // One id, one key: other bytes under a used id are refused
//! assert!(ring.add_key("2025_01", &[9; 32]).is_err());
//! # Ok(())
//! # }
//! ```
//!
//! ## Envelope (format version 1)
//!
//! ```json
//! {"encrypted": true, "version": 1, "keyId": "2025-01",
//!  "nonce": "<12 bytes, base64>", "ciphertext": "<ciphertext || 16-byte tag, base64>"}
//! ```
//!
//! A payload that claims to be an envelope (`"encrypted": true`, a
//! `version` and a `ciphertext` field) is treated as
//! one, whoever wrote it: a malformed one, one of a later format version,
//! or a user payload of that shape fails as undecryptable rather than
//! passing through as data (see [`EncryptedPayload::is_encrypted`]).
//!
//! The plaintext is the payload serialized as compact JSON. The associated
//! data is `"a3s-event/aes-256-gcm/v1"`, then the key id and the event id,
//! each preceded by its length as a big-endian `u64`, so the version, the key
//! id and the event id are all authenticated.
//!
//! ## What it does not protect
//!
//! Only the payload is encrypted. The subject, summary, source, metadata,
//! event type and timestamps stay in clear so that brokers can route and
//! filter; keep secrets out of them. The key id is visible (it names a key,
//! it is not one). Only key material is zeroized: decrypted payloads are
//! ordinary `serde_json::Value`s owned by the caller.
//!
//! ## Cost
//!
//! Encrypting a `Value` serializes it to JSON and base64-encodes the
//! ciphertext; decrypting parses the JSON back into a `Value`. For
//! structured payloads the JSON work costs several times the AES-GCM work
//! (see `benches/crypto.rs`, rows `encryptor` and `json_only`). When the
//! payload is already bytes, or the reader deserializes into its own type,
//! use [`encrypt_bytes`](Aes256GcmEncryptor::encrypt_bytes) and
//! [`decrypt_bytes`](Aes256GcmEncryptor::decrypt_bytes): on top of AES-GCM
//! they pay the base64 text, one buffer per direction and the envelope
//! object (a JSON object of five fields: eight allocations, about 0.2 µs);
//! [`decrypt_payload`](Aes256GcmEncryptor::decrypt_payload) reads the
//! envelope as the [`EncryptedPayload`] struct `encrypt_bytes` returns,
//! without the object, for envelopes stored through serde. The base64 runs in 48-byte blocks with AVX-512 VBMI where the CPU
//! has it (detected at run time), and
//! otherwise through the `base64` crate's SIMD engine (AVX2 or NEON) or its
//! scalar one. The block code is the workspace's only `unsafe` code outside
//! tests: four 64-byte loads and stores, in bounds by construction, checked
//! against the `base64` crate's own engine byte for byte and error for
//! error by the crate's tests.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod encryptor;
mod envelope;
mod key;
mod quote;

pub use encryptor::{Aes256GcmEncryptor, NONCE_LEN, TAG_LEN};
pub use envelope::{EncryptedPayload, FORMAT_VERSION};
pub use key::{EncryptionKey, KEY_LEN};
