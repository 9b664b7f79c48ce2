use crate::error::Result;
use serde_json::Value;

/// Encrypts and decrypts event payloads.
///
/// # Contract
///
/// - `encrypt` returns a JSON value that [`is_encrypted`](Self::is_encrypted)
///   recognises, bound to `event_id` (associated data): decrypting it under
///   another event id fails with [`Error::Decryption`](crate::Error::Decryption).
/// - `decrypt` of anything malformed, tampered, under an unknown key or for
///   another event is an error, never a panic.
/// - Implementations are called concurrently and must not block for long
///   (they are CPU-bound: no I/O).
pub trait EventEncryptor: Send + Sync {
    /// Encrypts `payload` for the event `event_id`.
    fn encrypt(&self, event_id: &str, payload: &Value) -> Result<Value>;

    /// Decrypts a payload produced by [`encrypt`](Self::encrypt) for `event_id`.
    fn decrypt(&self, event_id: &str, payload: &Value) -> Result<Value>;

    /// Whether `payload` is an envelope this encryptor produces (plaintext
    /// payloads pass through the bus undecrypted).
    fn is_encrypted(&self, payload: &Value) -> bool;
}
