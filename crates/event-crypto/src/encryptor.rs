//! [`Aes256GcmEncryptor`]: the key ring and the [`EventEncryptor`] impl.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{AeadInOut, Generate, KeyInit};
use aes_gcm::aes::cipher::consts::U12;
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use event_core::{Error, EventEncryptor, MAX_PAYLOAD_DEPTH, Result};
use parking_lot::RwLock;
use serde_json::Value;

use crate::codec;
use crate::envelope::{EncryptedPayload, EnvelopeRef, FORMAT_VERSION};
use crate::key::{EncryptionKey, KEY_LEN, describe_b64};
use crate::quote::Quoted;

/// Nonce length in bytes (96 bits, the GCM standard size).
pub const NONCE_LEN: usize = 12;
/// Authentication tag length in bytes (128 bits).
pub const TAG_LEN: usize = 16;

/// Domain-separation prefix of the associated data, format version 1.
const AAD_PREFIX: &[u8] = b"a3s-event/aes-256-gcm/v1";

/// AES-256-GCM payload encryption with a key ring.
///
/// - **Encrypt** serializes the payload to JSON and seals it under the
///   *active* key with a fresh random 96-bit nonce. The result is an
///   [`EncryptedPayload`] envelope as a JSON value.
/// - **Decrypt** picks the key named by the envelope's `keyId`, so payloads
///   encrypted before a [`rotate_to`](Self::rotate_to) still read as long as
///   their key stays in the ring.
/// - **Binding.** The associated data is the format version, the key id and
///   the event id (length-prefixed, so no two different pairs collide). A
///   ciphertext copied into another event, relabelled with another key id or
///   another version fails to decrypt.
/// - **Rotation through `&self`.** [`add_key`](Self::add_key),
///   [`rotate_to`](Self::rotate_to) and [`remove_key`](Self::remove_key)
///   work on a shared encryptor (`Arc<Aes256GcmEncryptor>`) while other
///   threads encrypt and decrypt: the ring sits behind a read-write lock
///   that is held only long enough to clone an `Arc` to the key.
/// - **Key hygiene.** Key bytes and AES round keys are zeroized when the
///   last reference to a key is dropped; `Debug` shows key ids only.
/// - **Errors, never panics.** Every failure is an [`Error::Encryption`] or
///   [`Error::Decryption`] whose message says what was wrong. Strings an
///   envelope's author or an event's publisher chooses (the event id, the
///   key id) are quoted bounded: up to 64 characters, escaped, then `…` and
///   their length in bytes (`"kkk…kkk"… (600000 bytes)`), so a message
///   stays small whatever the envelope holds; nonces and
///   ciphertexts are described by length and offset, never quoted.
///
/// ```
/// use event_core::EventEncryptor;
/// use event_crypto::Aes256GcmEncryptor;
/// use serde_json::json;
///
/// let encryptor = Aes256GcmEncryptor::new("k1", &[7u8; 32]);
/// let sealed = encryptor.encrypt("evt-1", &json!({"card": "4111 1111"}))?;
/// assert!(encryptor.is_encrypted(&sealed));
/// assert!(!sealed.to_string().contains("4111 1111"));
///
/// encryptor.add_key("k2", &[8u8; 32])?;
/// encryptor.rotate_to("k2")?;
/// assert_eq!(encryptor.active_key_id(), "k2");
/// // Encrypted under k1 before the rotation: still readable.
/// assert_eq!(encryptor.decrypt("evt-1", &sealed)?, json!({"card": "4111 1111"}));
/// // Bound to its event.
/// assert!(encryptor.decrypt("evt-2", &sealed).is_err());
/// # Ok::<(), event_core::Error>(())
/// ```
pub struct Aes256GcmEncryptor {
    ring: RwLock<KeyRing>,
}

struct KeyRing {
    active: Arc<RingKey>,
    keys: HashMap<String, Arc<RingKey>>,
    /// The check value of each key removed from the ring (not the key), so
    /// that its id is given back only that key.
    removed: HashMap<String, [u8; TAG_LEN]>,
}

struct RingKey {
    id: String,
    /// Expanded AES key and GHASH key; zeroized on drop (`aes-gcm` feature
    /// `zeroize`).
    cipher: Aes256Gcm,
    /// Kept to tell an idempotent `add_key` from a conflicting one.
    key: EncryptionKey,
}

/// Nonce of a key's check value: none of the ring's nonces in practice
/// (they are random), and the check value is never shown anyway.
const CHECK_NONCE: [u8; NONCE_LEN] = *b"a3s-keycheck";
/// Associated data of a key's check value.
const CHECK_AAD: &[u8] = b"a3s-event/aes-256-gcm/key-check";

impl RingKey {
    fn new(id: String, key: EncryptionKey) -> Arc<Self> {
        let cipher = Aes256Gcm::new(key.as_bytes().into());
        Arc::new(Self { id, cipher, key })
    }

    /// A value that tells this key from another without revealing it: the
    /// authentication tag of an empty message under a fixed nonce.
    fn check_value(&self) -> [u8; TAG_LEN] {
        let mut empty: [u8; 0] = [];
        self.cipher
            .encrypt_inout_detached(&CHECK_NONCE.into(), CHECK_AAD, empty[..].as_mut().into())
            .map_or([0; TAG_LEN], Into::into)
    }
}

impl Aes256GcmEncryptor {
    /// Creates an encryptor whose ring holds one key, `key_id`, which is
    /// active.
    pub fn new(key_id: impl Into<String>, key: &[u8; KEY_LEN]) -> Self {
        Self::with_key(key_id, EncryptionKey::from_bytes(key))
    }

    /// Creates an encryptor from an [`EncryptionKey`] (loaded from base64 or
    /// the environment, or generated).
    pub fn with_key(key_id: impl Into<String>, key: EncryptionKey) -> Self {
        let id = key_id.into();
        let entry = RingKey::new(id.clone(), key);
        let mut keys = HashMap::new();
        keys.insert(id, Arc::clone(&entry));
        Self {
            ring: RwLock::new(KeyRing {
                active: entry,
                keys,
                removed: HashMap::new(),
            }),
        }
    }

    /// Creates an encryptor from a base64 key (see
    /// [`EncryptionKey::from_base64`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad base64 or a key that is not 32 bytes.
    pub fn from_base64(key_id: impl Into<String>, encoded: &str) -> Result<Self> {
        Ok(Self::with_key(key_id, EncryptionKey::from_base64(encoded)?))
    }

    /// Creates an encryptor from a base64 key in the environment variable
    /// `var` (see [`EncryptionKey::from_env`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable.
    pub fn from_env(key_id: impl Into<String>, var: &str) -> Result<Self> {
        Ok(Self::with_key(key_id, EncryptionKey::from_env(var)?))
    }

    /// Adds a key to the ring without making it active.
    ///
    /// Adding the same key under the same id again is a no-op, so a
    /// configuration can be re-applied.
    ///
    /// A key id must name exactly one key, forever, in every process: this
    /// ring refuses other bytes under an id it holds or held (an id
    /// [removed](Self::remove_key) takes back only its own key), but a
    /// process given other bytes under an id used elsewhere fails to
    /// decrypt that key's events (`authentication failed under key ...`).
    ///
    /// # Errors
    /// [`Error::Conflict`] when `key_id` is in the ring, or was removed from
    /// it, with a different key: replacing it would make every payload
    /// encrypted under the old key unreadable.
    pub fn add_key(&self, key_id: impl Into<String>, key: &[u8; KEY_LEN]) -> Result<()> {
        self.add_encryption_key(key_id, EncryptionKey::from_bytes(key))
    }

    /// [`add_key`](Self::add_key) with an [`EncryptionKey`].
    ///
    /// # Errors
    /// As [`add_key`](Self::add_key).
    pub fn add_encryption_key(&self, key_id: impl Into<String>, key: EncryptionKey) -> Result<()> {
        let id = key_id.into();
        // Expand the key outside the lock.
        let entry = RingKey::new(id.clone(), key);
        let mut ring = self.ring.write();
        if let Some(existing) = ring.keys.get(&id) {
            return if existing.key.ct_eq(&entry.key) {
                Ok(())
            } else {
                Err(Error::Conflict {
                    resource: format!("encryption key {id:?}"),
                    reason: "a different key is already registered under this id; \
                             use a new key id for a new key"
                        .to_owned(),
                })
            };
        }
        if let Some(check) = ring.removed.get(&id) {
            let same = entry
                .check_value()
                .iter()
                .zip(check)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if !same {
                return Err(Error::Conflict {
                    resource: format!("encryption key {id:?}"),
                    reason: "a different key was registered under this id and removed; \
                             payloads encrypted under it name this id: use a new key id \
                             for a new key"
                        .to_owned(),
                });
            }
            ring.removed.remove(&id);
        }
        ring.keys.insert(id, entry);
        Ok(())
    }

    /// Makes `key_id` the key new payloads are encrypted with. Payloads
    /// encrypted under the previous key still decrypt.
    ///
    /// With several processes sharing a stream, add the key to every
    /// process's ring first (the old key still active) and rotate only once
    /// all have it: a process that reads a payload under a key it lacks
    /// cannot decrypt it (a bus dead-letters such an event if it has a DLQ
    /// handler, and without one terminates it, lost for that consumer
    /// group). The steps, and how to recover: [Key rotation](crate#key-rotation).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the ring has no such key.
    pub fn rotate_to(&self, key_id: &str) -> Result<()> {
        let mut ring = self.ring.write();
        let entry = ring
            .keys
            .get(key_id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "encryption key",
                name: key_id.to_owned(),
            })?;
        ring.active = entry;
        Ok(())
    }

    /// Removes a retired key from the ring. Payloads encrypted under it can
    /// no longer be decrypted. The ring keeps a check value of the key (not
    /// the key), so [`add_key`](Self::add_key) gives the id back that key
    /// only (to read its payloads again) and refuses other bytes under it.
    ///
    /// Remove a key only once nothing can still be encrypted under it: an
    /// `encrypt` that picked the key up just before [`rotate_to`](Self::rotate_to)
    /// may still store a payload under it afterwards, and every process
    /// sharing the ring's keys must have rotated too. Stored events under a
    /// removed key fail to decrypt until retention removes them (a bus
    /// dead-letters them on delivery, or terminates them without a DLQ
    /// handler; its `list_events` reports them as errors), so keep retired
    /// keys for at least the stream's retention (and the DLQ's), unless
    /// every event under them was re-encrypted.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the ring has no such key;
    /// [`Error::Conflict`] when it is the active key (rotate first).
    pub fn remove_key(&self, key_id: &str) -> Result<()> {
        let mut ring = self.ring.write();
        if ring.active.id == key_id {
            return Err(Error::Conflict {
                resource: format!("encryption key {key_id:?}"),
                reason: "it is the active key; rotate to another key before removing it".to_owned(),
            });
        }
        let entry = ring.keys.remove(key_id).ok_or_else(|| Error::NotFound {
            kind: "encryption key",
            name: key_id.to_owned(),
        })?;
        ring.removed.insert(entry.id.clone(), entry.check_value());
        Ok(())
    }

    /// The id of the key new payloads are encrypted with.
    pub fn active_key_id(&self) -> String {
        self.ring.read().active.id.clone()
    }

    /// The ids of every key in the ring, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.ring.read().keys.keys().cloned().collect();
        ids.sort_unstable();
        ids
    }

    /// Encrypts raw bytes for the event `event_id` under the active key.
    ///
    /// The trait's [`encrypt`](EventEncryptor::encrypt) is this applied to
    /// the payload's compact JSON; use this directly when the payload is
    /// already serialized. An envelope made from bytes that are not JSON
    /// decrypts with [`decrypt_bytes`](Self::decrypt_bytes), not with
    /// [`decrypt`](EventEncryptor::decrypt).
    ///
    /// # Errors
    /// [`Error::Encryption`] if the system RNG fails or the input exceeds
    /// AES-GCM's limit (64 GiB).
    pub fn encrypt_bytes(&self, event_id: &str, plaintext: &[u8]) -> Result<EncryptedPayload> {
        self.seal(event_id, plaintext)
    }

    /// Decrypts an envelope for the event `event_id` to the raw plaintext
    /// bytes (for a payload from [`encrypt`](EventEncryptor::encrypt), its
    /// compact JSON, which can be deserialized straight into an application
    /// type with `serde_json::from_slice`, skipping the `Value`).
    ///
    /// # Errors
    /// [`Error::Decryption`], as [`decrypt`](EventEncryptor::decrypt).
    pub fn decrypt_bytes(&self, event_id: &str, envelope: &Value) -> Result<Vec<u8>> {
        let envelope = EnvelopeRef::parse(envelope).map_err(|err| in_event(event_id, err))?;
        self.open(event_id, envelope)
    }

    /// Decrypts an envelope already parsed into an [`EncryptedPayload`]
    /// (for example deserialized with serde from your own storage) to the
    /// raw plaintext bytes: the counterpart of
    /// [`encrypt_bytes`](Self::encrypt_bytes), without going through a
    /// JSON `Value`.
    ///
    /// ```
    /// use event_crypto::Aes256GcmEncryptor;
    ///
    /// let encryptor = Aes256GcmEncryptor::new("k1", &[7u8; 32]);
    /// let sealed = encryptor.encrypt_bytes("evt-1", b"card 4111")?;
    /// assert_eq!(encryptor.decrypt_payload("evt-1", &sealed)?, b"card 4111");
    /// assert!(encryptor.decrypt_payload("evt-2", &sealed).is_err());
    /// # Ok::<(), event_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Decryption`], as [`decrypt`](EventEncryptor::decrypt); also
    /// for `encrypted: false` and a version other than [`FORMAT_VERSION`].
    pub fn decrypt_payload(&self, event_id: &str, envelope: &EncryptedPayload) -> Result<Vec<u8>> {
        let envelope = EnvelopeRef::of(envelope).map_err(|err| in_event(event_id, err))?;
        self.open(event_id, envelope)
    }

    fn active(&self) -> Arc<RingKey> {
        Arc::clone(&self.ring.read().active)
    }

    fn key(&self, key_id: &str, event_id: &str) -> Result<Arc<RingKey>> {
        let ring = self.ring.read();
        // most envelopes were sealed under the active key: no hashing
        if ring.active.id == key_id {
            return Ok(Arc::clone(&ring.active));
        }
        if let Some(entry) = ring.keys.get(key_id) {
            return Ok(Arc::clone(entry));
        }
        let mut known: Vec<String> = ring.keys.keys().map(|id| Quoted(id).to_string()).collect();
        known.sort_unstable();
        Err(Error::Decryption(format!(
            "event {}: unknown key id {} (the key ring holds [{}])",
            Quoted(event_id),
            Quoted(key_id),
            known.join(", ")
        )))
    }

    /// Encrypts `plaintext` and wraps it in an envelope.
    ///
    /// One buffer, sized for the base64 text: the plaintext is copied to its
    /// end, encrypted there in place with the tag appended, and base64-encoded
    /// front to back over itself (see [`codec::encode_tail_in_place`]); the
    /// buffer then becomes the envelope's `ciphertext` string.
    fn seal(&self, event_id: &str, plaintext: &[u8]) -> Result<EncryptedPayload> {
        let too_large = || {
            Error::Encryption(format!(
                "event {}: payload of {} bytes is too large for AES-GCM",
                Quoted(event_id),
                plaintext.len()
            ))
        };
        let sealed_len = plaintext.len().checked_add(TAG_LEN).ok_or_else(too_large)?;
        let text_len = base64::encoded_len(sealed_len, true).ok_or_else(too_large)?;
        let start = text_len - sealed_len;

        let key = self.active();
        let nonce = Nonce::try_generate().map_err(|err| {
            Error::Encryption(format!("system random number generator failed: {err}"))
        })?;
        let mut buffer = Vec::with_capacity(text_len);
        buffer.resize(start, 0);
        buffer.extend_from_slice(plaintext);
        let tag = with_associated_data(&key.id, event_id, |aad| {
            key.cipher
                .encrypt_inout_detached(&nonce, aad, buffer[start..].as_mut().into())
        })
        .map_err(|_| too_large())?;
        buffer.extend_from_slice(&tag);
        let ciphertext = codec::encode_tail_in_place(buffer, start).map_err(|_| {
            Error::Encryption(format!(
                "event {}: internal error: base64 buffer layout",
                Quoted(event_id)
            ))
        })?;
        Ok(EncryptedPayload {
            encrypted: true,
            version: FORMAT_VERSION,
            key_id: key.id.clone(),
            nonce: codec::encode_nonce(&nonce.into()),
            ciphertext,
        })
    }

    /// Decrypts an envelope to the serialized payload bytes.
    fn open(&self, event_id: &str, envelope: EnvelopeRef<'_>) -> Result<Vec<u8>> {
        let key = self.key(envelope.key_id, event_id)?;

        let mut nonce = Nonce::default();
        let nonce_len = decode_nonce(envelope.nonce, &mut nonce)
            .map_err(|reason| Error::Decryption(format!("event {}: {reason}", Quoted(event_id))))?;
        if nonce_len != NONCE_LEN {
            return Err(Error::Decryption(format!(
                "event {}: nonce must be {NONCE_LEN} bytes, got {nonce_len}",
                Quoted(event_id)
            )));
        }

        let mut buffer = Vec::with_capacity(envelope.ciphertext.len() / 4 * 3 + 3);
        codec::decode_vec(envelope.ciphertext.as_bytes(), &mut buffer).map_err(|err| {
            Error::Decryption(format!(
                "event {}: ciphertext is not valid base64: {}",
                Quoted(event_id),
                describe_b64(&err)
            ))
        })?;
        if buffer.len() < TAG_LEN {
            return Err(Error::Decryption(format!(
                "event {}: ciphertext is truncated: {} bytes is shorter than the \
                 {TAG_LEN}-byte authentication tag",
                Quoted(event_id),
                buffer.len()
            )));
        }

        with_associated_data(&key.id, event_id, |aad| {
            key.cipher.decrypt_in_place(&nonce, aad, &mut buffer)
        })
        .map_err(|_| {
            Error::Decryption(format!(
                "event {}: authentication failed under key {}: wrong key, \
                     tampered envelope, or a payload that belongs to another event",
                Quoted(event_id),
                Quoted(&key.id)
            ))
        })?;
        Ok(buffer)
    }
}

/// Prefixes a decryption error with the event it concerns.
fn in_event(event_id: &str, err: Error) -> Error {
    match err {
        Error::Decryption(msg) => Error::Decryption(format!("event {}: {msg}", Quoted(event_id))),
        other => other,
    }
}

/// Decodes a base64 nonce into `out`, returning its decoded length (which
/// may be anything up to 15 bytes; the caller checks it).
fn decode_nonce(encoded: &str, out: &mut Nonce<U12>) -> std::result::Result<usize, String> {
    // 12 bytes are 16 base64 characters; anything longer cannot be a nonce,
    // and checking first keeps the decode into a fixed buffer in bounds.
    if encoded.len() > 20 {
        return Err(format!(
            "nonce must be {NONCE_LEN} bytes, got {} base64 characters",
            encoded.len()
        ));
    }
    let mut scratch = [0u8; 16];
    let len = STANDARD
        .decode_slice(encoded, &mut scratch)
        .map_err(|err| match err {
            base64::DecodeSliceError::DecodeError(err) => {
                format!("nonce is not valid base64: {}", describe_b64(&err))
            }
            base64::DecodeSliceError::OutputSliceTooSmall => {
                format!("nonce must be {NONCE_LEN} bytes, got more")
            }
        })?;
    if len == NONCE_LEN {
        out.copy_from_slice(&scratch[..NONCE_LEN]);
    }
    Ok(len)
}

/// Associated data up to this many bytes (ids up to ~80 bytes together) is
/// built on the stack; longer ids take a heap buffer.
const AAD_INLINE: usize = 128;

/// Calls `f` with the associated data of a payload:
/// `prefix || len(key_id) || key_id || len(event_id) || event_id`, lengths
/// as 8-byte big-endian integers.
fn with_associated_data<R>(key_id: &str, event_id: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let len = AAD_PREFIX.len() + 16 + key_id.len() + event_id.len();
    if len <= AAD_INLINE {
        let mut inline = [0u8; AAD_INLINE];
        let aad = &mut inline[..len];
        write_associated_data(aad, key_id, event_id);
        f(aad)
    } else {
        let mut heap = vec![0u8; len];
        write_associated_data(&mut heap, key_id, event_id);
        f(&heap)
    }
}

/// Writes the associated data into `out`, which is exactly its length.
fn write_associated_data(out: &mut [u8], key_id: &str, event_id: &str) {
    let parts: [&[u8]; 5] = [
        AAD_PREFIX,
        &(key_id.len() as u64).to_be_bytes(),
        key_id.as_bytes(),
        &(event_id.len() as u64).to_be_bytes(),
        event_id.as_bytes(),
    ];
    let mut at = 0;
    for part in parts {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, out.len());
}

/// The associated data as an owned buffer (for tests).
#[cfg(test)]
fn associated_data(key_id: &str, event_id: &str) -> Vec<u8> {
    with_associated_data(key_id, event_id, <[u8]>::to_vec)
}

impl EventEncryptor for Aes256GcmEncryptor {
    /// Serializes `payload` to compact JSON and seals it.
    ///
    /// # Errors
    /// [`Error::Encryption`] as [`encrypt_bytes`](Self::encrypt_bytes), and
    /// for a payload whose arrays and objects nest more than
    /// [`MAX_PAYLOAD_DEPTH`] levels deep (as every provider refuses in plaintext).
    fn encrypt(&self, event_id: &str, payload: &Value) -> Result<Value> {
        // what every provider refuses in plaintext, refused before it is
        // hidden in an envelope (decryption could never parse it back)
        event_core::check_payload_depth(payload).map_err(|_| {
            Error::Encryption(format!(
                "event {}: payload nests arrays and objects more than \
                 {MAX_PAYLOAD_DEPTH} levels deep, which could not be decrypted back",
                Quoted(event_id)
            ))
        })?;
        let mut buffer = Vec::with_capacity(128);
        serde_json::to_writer(&mut buffer, payload).map_err(|err| {
            Error::Encryption(format!(
                "event {}: payload is not serializable: {err}",
                Quoted(event_id)
            ))
        })?;
        Ok(self.seal(event_id, &buffer)?.into_value())
    }

    fn decrypt(&self, event_id: &str, payload: &Value) -> Result<Value> {
        let plaintext = self.decrypt_bytes(event_id, payload)?;
        serde_json::from_slice(&plaintext).map_err(|err| {
            Error::Decryption(format!(
                "event {}: decrypted payload is not valid JSON: {err}",
                Quoted(event_id)
            ))
        })
    }

    fn is_encrypted(&self, payload: &Value) -> bool {
        EncryptedPayload::is_encrypted(payload)
    }
}

impl fmt::Debug for Aes256GcmEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aes256GcmEncryptor")
            .field("active_key_id", &self.active_key_id())
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
