//! [`EncryptedPayload`]: the JSON envelope an encrypted payload travels in.

use event_core::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The envelope format version this crate writes and reads.
///
/// Version 1: AES-256-GCM, 96-bit random nonce, 128-bit tag appended to the
/// ciphertext, associated data binding the version, the key id and the event
/// id (see the crate docs).
pub const FORMAT_VERSION: u32 = 1;

/// An encrypted event payload, as it is stored and sent.
///
/// Serialized as camelCase JSON:
///
/// ```json
/// {
///   "encrypted": true,
///   "version": 1,
///   "keyId": "key-2025-01",
///   "nonce": "3q2+7wAAAAAAAAAA",
///   "ciphertext": "<base64 of ciphertext || 16-byte tag>"
/// }
/// ```
///
/// Nothing in it is secret: the key id names a key, it is not the key.
///
/// ```
/// use event_crypto::EncryptedPayload;
/// use serde_json::json;
///
/// let envelope = json!({
///     "encrypted": true, "version": 1, "keyId": "k1",
///     "nonce": "AAAAAAAAAAAAAAAA", "ciphertext": "AAAAAAAAAAAAAAAAAAAAAA=="
/// });
/// assert!(EncryptedPayload::is_encrypted(&envelope));
/// assert!(!EncryptedPayload::is_encrypted(&json!({"encrypted": true})));
/// let parsed = EncryptedPayload::from_value(&envelope)?;
/// assert_eq!(parsed.key_id, "k1");
/// assert_eq!(parsed.to_value(), envelope);
/// # Ok::<(), event_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedPayload {
    /// Always `true`: marks the payload as an envelope.
    pub encrypted: bool,
    /// Envelope format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Id of the key in the ring that encrypted the payload.
    pub key_id: String,
    /// The 12-byte nonce, standard base64.
    pub nonce: String,
    /// Ciphertext followed by the 16-byte authentication tag, standard base64.
    pub ciphertext: String,
}

impl EncryptedPayload {
    /// Whether `value` claims to be an envelope: an object with
    /// `"encrypted": true`, a `version` field and a `ciphertext` field.
    ///
    /// Every envelope version keeps those markers, so a claim is enough: an
    /// envelope that is malformed, or of a version this build does not read,
    /// is still recognised, and decrypting it is an error (a consumer
    /// dead-letters it) instead of its fields reaching a handler as data. A
    /// plaintext payload that merely contains `"encrypted": true` (or even
    /// `"encrypted": true`, a `version` and a `keyId`) is not an envelope, so
    /// it passes through the bus undecrypted; a user payload carrying those
    /// markers and a `ciphertext` field is taken for an envelope. The
    /// check does not decode anything; a recognised envelope can still fail
    /// to decrypt.
    ///
    /// ```
    /// use event_crypto::EncryptedPayload;
    /// use serde_json::json;
    ///
    /// // a future format without a nonce field: recognised, so decrypting
    /// // it fails with "unsupported envelope version 2"
    /// let future = json!({"encrypted": true, "version": 2, "keyId": "k2", "ciphertext": "AAAA"});
    /// assert!(EncryptedPayload::is_encrypted(&future));
    /// // user data that says "encrypted"
    /// assert!(!EncryptedPayload::is_encrypted(&json!({"encrypted": true, "version": 3, "keyId": "k"})));
    /// ```
    pub fn is_encrypted(value: &Value) -> bool {
        let Value::Object(map) = value else {
            return false;
        };
        map.get("encrypted") == Some(&Value::Bool(true))
            && map.contains_key("version")
            && map.contains_key("ciphertext")
    }

    /// Parses an envelope.
    ///
    /// # Errors
    /// [`Error::Decryption`] naming what is wrong: not an object, a missing
    /// or mistyped field, `encrypted` not `true`, an unsupported version.
    pub fn from_value(value: &Value) -> Result<Self> {
        EnvelopeRef::parse(value).map(|envelope| Self {
            encrypted: true,
            version: envelope.version,
            key_id: envelope.key_id.to_owned(),
            nonce: envelope.nonce.to_owned(),
            ciphertext: envelope.ciphertext.to_owned(),
        })
    }

    /// The envelope as a JSON value (the form stored in `Event::payload`).
    pub fn to_value(&self) -> Value {
        self.clone().into_value()
    }

    /// Converts the envelope into a JSON value without copying its strings.
    pub fn into_value(self) -> Value {
        let mut map = Map::new();
        map.insert("encrypted".to_owned(), Value::Bool(self.encrypted));
        map.insert("version".to_owned(), Value::from(self.version));
        map.insert("keyId".to_owned(), Value::String(self.key_id));
        map.insert("nonce".to_owned(), Value::String(self.nonce));
        map.insert("ciphertext".to_owned(), Value::String(self.ciphertext));
        Value::Object(map)
    }
}

/// A parsed, borrowed envelope (no copy of the ciphertext).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnvelopeRef<'a> {
    pub(crate) version: u32,
    pub(crate) key_id: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) ciphertext: &'a str,
}

impl<'a> EnvelopeRef<'a> {
    /// Checks a parsed envelope as [`parse`](Self::parse) checks a value.
    pub(crate) fn of(envelope: &'a EncryptedPayload) -> Result<Self> {
        if !envelope.encrypted {
            return Err(Error::Decryption(
                "payload is not an encrypted envelope: `encrypted` is false".to_owned(),
            ));
        }
        if envelope.version != FORMAT_VERSION {
            return Err(Error::Decryption(format!(
                "unsupported envelope version {} (this build reads version {FORMAT_VERSION})",
                envelope.version
            )));
        }
        Ok(Self {
            version: FORMAT_VERSION,
            key_id: &envelope.key_id,
            nonce: &envelope.nonce,
            ciphertext: &envelope.ciphertext,
        })
    }

    /// Parses and checks an envelope; the version must be [`FORMAT_VERSION`].
    pub(crate) fn parse(value: &'a Value) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(Error::Decryption(format!(
                "payload is not an encrypted envelope: expected a JSON object, got {}",
                kind(value)
            )));
        };
        // One pass over the fields instead of a lookup per field.
        let mut fields: [Option<&'a Value>; 5] = [None; 5];
        for (name, value) in map {
            let slot = match name.as_str() {
                "encrypted" => 0,
                "version" => 1,
                "keyId" => 2,
                "nonce" => 3,
                "ciphertext" => 4,
                _ => continue,
            };
            fields[slot] = Some(value);
        }
        let [encrypted, version, key_id, nonce, ciphertext] = fields;
        match encrypted {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => {
                return Err(Error::Decryption(
                    "payload is not an encrypted envelope: `encrypted` is false".to_owned(),
                ));
            }
            Some(other) => {
                return Err(Error::Decryption(format!(
                    "malformed envelope: `encrypted` must be true, got {}",
                    kind(other)
                )));
            }
            None => {
                return Err(Error::Decryption(
                    "payload is not an encrypted envelope: missing field `encrypted`".to_owned(),
                ));
            }
        }
        let version = match version {
            None => return Err(missing("version")),
            Some(v) => v.as_u64().ok_or_else(|| {
                Error::Decryption(format!(
                    "malformed envelope: `version` must be a non-negative integer, got {}",
                    kind(v)
                ))
            })?,
        };
        if version != u64::from(FORMAT_VERSION) {
            return Err(Error::Decryption(format!(
                "unsupported envelope version {version} (this build reads version {FORMAT_VERSION})"
            )));
        }
        Ok(Self {
            version: FORMAT_VERSION,
            key_id: string_field(key_id, "keyId")?,
            nonce: string_field(nonce, "nonce")?,
            ciphertext: string_field(ciphertext, "ciphertext")?,
        })
    }
}

fn string_field<'a>(value: Option<&'a Value>, field: &str) -> Result<&'a str> {
    match value {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::Decryption(format!(
            "malformed envelope: `{field}` must be a string, got {}",
            kind(other)
        ))),
        None => Err(missing(field)),
    }
}

fn missing(field: &str) -> Error {
    Error::Decryption(format!("malformed envelope: missing field `{field}`"))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "encrypted": true,
            "version": 1,
            "keyId": "k1",
            "nonce": "AAAAAAAAAAAAAAAA",
            "ciphertext": "AAAAAAAAAAAAAAAAAAAAAA=="
        })
    }

    #[test]
    fn serde_shape_is_camel_case() {
        let parsed: EncryptedPayload = serde_json::from_value(sample()).unwrap();
        assert_eq!(parsed.key_id, "k1");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), sample());
        assert_eq!(parsed.to_value(), sample());
        assert_eq!(EncryptedPayload::from_value(&sample()).unwrap(), parsed);
    }

    #[test]
    fn is_encrypted_recognises_any_claim_to_be_an_envelope() {
        assert!(EncryptedPayload::is_encrypted(&sample()));
        // Without a marker: not an envelope.
        for field in ["encrypted", "version"] {
            let mut v = sample();
            v.as_object_mut().unwrap().remove(field);
            assert!(!EncryptedPayload::is_encrypted(&v), "without {field}");
        }
        let mut v = sample();
        v["encrypted"] = json!("true");
        assert!(!EncryptedPayload::is_encrypted(&v));
        v["encrypted"] = json!(false);
        assert!(!EncryptedPayload::is_encrypted(&v));
        // Markers and no ciphertext field: user data (a dead letter's
        // plaintext copy of such a payload must read as plaintext again).
        let mut v = sample();
        v.as_object_mut().unwrap().remove("ciphertext");
        assert!(!EncryptedPayload::is_encrypted(&v), "{v}");
        // A plaintext payload that happens to say "encrypted".
        assert!(!EncryptedPayload::is_encrypted(
            &json!({"encrypted": true, "disk": "sda"})
        ));
        for v in [json!(null), json!(1), json!("x"), json!([sample()])] {
            assert!(!EncryptedPayload::is_encrypted(&v), "{v}");
        }
        // Malformed or future envelopes are still envelopes (and fail to
        // parse), so they are never taken for plaintext.
        for field in ["keyId", "nonce"] {
            let mut v = sample();
            v.as_object_mut().unwrap().remove(field);
            assert!(EncryptedPayload::is_encrypted(&v), "without {field}");
            assert!(EnvelopeRef::parse(&v).is_err(), "without {field}");
        }
        for field in ["keyId", "nonce", "ciphertext"] {
            let mut v = sample();
            v[field] = json!([1, 2, 3]);
            assert!(EncryptedPayload::is_encrypted(&v), "{field} mistyped");
            assert!(EnvelopeRef::parse(&v).is_err(), "{field} mistyped");
        }
        for version in [json!(2), json!("1"), json!(null), json!(1.5)] {
            let mut v = sample();
            v["version"] = version;
            assert!(EncryptedPayload::is_encrypted(&v), "{v}");
            assert!(EnvelopeRef::parse(&v).is_err(), "{v}");
        }
        let future = json!({"encrypted": true, "version": 2, "keyId": "k2", "ciphertext": "AAAA"});
        assert!(EncryptedPayload::is_encrypted(&future));
        assert!(parse_err(&future).contains("unsupported envelope version 2"));
    }

    fn parse_err(v: &Value) -> String {
        match EnvelopeRef::parse(v) {
            Err(Error::Decryption(msg)) => msg,
            other => panic!("expected a decryption error, got {other:?}"),
        }
    }

    #[test]
    fn parse_names_what_is_wrong() {
        assert!(parse_err(&json!("abc")).contains("expected a JSON object, got a string"));
        assert!(parse_err(&json!([1])).contains("got an array"));
        assert!(parse_err(&json!({"a": 1})).contains("missing field `encrypted`"));
        for field in ["version", "keyId", "nonce", "ciphertext"] {
            let mut v = sample();
            v.as_object_mut().unwrap().remove(field);
            assert!(
                parse_err(&v).contains(&format!("missing field `{field}`")),
                "{field}"
            );
            v[field] = json!({"x": 1});
            let msg = parse_err(&v);
            assert!(
                msg.contains(&format!("`{field}` must be")),
                "{field}: {msg}"
            );
        }
        let mut v = sample();
        v["encrypted"] = json!(false);
        assert!(parse_err(&v).contains("`encrypted` is false"));
        v["encrypted"] = json!(1);
        assert!(parse_err(&v).contains("`encrypted` must be true, got a number"));
        let mut v = sample();
        v["version"] = json!(2);
        assert!(parse_err(&v).contains("unsupported envelope version 2"));
        v["version"] = json!(-1);
        assert!(parse_err(&v).contains("non-negative integer"));
        v["version"] = json!(1.5);
        assert!(parse_err(&v).contains("non-negative integer"));
    }
}
