//! [`EncryptionKey`]: 256 bits of key material, zeroized on drop.

use std::fmt;

use aes_gcm::aead::Generate;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use event_core::{Error, Result};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of an AES-256 key in bytes.
pub const KEY_LEN: usize = 32;

/// A 256-bit AES key.
///
/// - The bytes are overwritten with zeros when the key is dropped
///   ([`ZeroizeOnDrop`]).
/// - `Debug` prints `EncryptionKey(<redacted>)`; there is no `Display`, and
///   no error message ever contains key material.
/// - Load it from standard base64 (44 characters, for example the output of
///   `openssl rand -base64 32`) with [`from_base64`](Self::from_base64) or
///   [`from_env`](Self::from_env); anything that is not exactly 32 bytes of
///   valid base64 is an [`Error::InvalidConfig`].
///
/// ```
/// use event_crypto::EncryptionKey;
///
/// let key = EncryptionKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
/// assert_eq!(key.as_bytes()[31], 31);
/// assert_eq!(format!("{key:?}"), "EncryptionKey(<redacted>)");
///
/// let err = EncryptionKey::from_base64("c2hvcnQ=").unwrap_err();
/// assert!(err.to_string().contains("must be 32 bytes"));
/// # Ok::<(), event_core::Error>(())
/// ```
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl EncryptionKey {
    /// Wraps 32 raw key bytes (copied; zeroize your own copy if it matters).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        Self {
            bytes: Zeroizing::new(*bytes),
        }
    }

    /// Takes a key from a byte slice, which must be exactly 32 bytes long.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the actual length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let array: &[u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| wrong_length("encryption key", bytes.len()))?;
        Ok(Self::from_bytes(array))
    }

    /// Decodes a key from standard base64 (RFC 4648 alphabet with `=`
    /// padding). Leading and trailing ASCII whitespace (a newline at the end
    /// of a file or variable) is ignored.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the text is not base64 or does not
    /// decode to exactly 32 bytes. The message names the position of the
    /// first bad character (counted from the start of `encoded`, leading
    /// whitespace included) or the decoded length, never the key itself, and
    /// says so when the text is a 32-byte key in another usual form: 64 hex
    /// digits (`openssl rand -hex 32`), URL-safe base64, standard base64
    /// without its `=` padding (43 characters instead of 44), wrapped in
    /// quotes, or base64-encoded twice. Unpadded base64 is refused, not
    /// accepted: the key is read exactly as documented.
    pub fn from_base64(encoded: &str) -> Result<Self> {
        decode_key("encryption key", encoded)
    }

    /// Reads a base64 key (see [`from_base64`](Self::from_base64)) from the
    /// environment variable `var`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable when it is unset, not
    /// Unicode (saying so when it holds 32 raw bytes: the key itself instead
    /// of its base64), not base64 or not 32 bytes long.
    pub fn from_env(var: &str) -> Result<Self> {
        key_from_env_value(var, std::env::var(var))
    }

    /// Generates a fresh random key from the operating system's secure
    /// random number generator.
    ///
    /// # Errors
    /// [`Error::Encryption`] if the system RNG fails (it practically never does).
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        *bytes = <[u8; KEY_LEN]>::try_generate().map_err(|err| {
            Error::Encryption(format!("system random number generator failed: {err}"))
        })?;
        Ok(Self { bytes })
    }

    /// The raw key bytes. Handle with care: do not log them.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The key as standard base64, in a string that is zeroized on drop
    /// (for storing a generated key in a secret manager).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_slice()))
    }

    /// Compares two keys in constant time.
    pub(crate) fn ct_eq(&self, other: &Self) -> bool {
        self.bytes
            .iter()
            .zip(other.bytes.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

impl Zeroize for EncryptionKey {
    fn zeroize(&mut self) {
        self.bytes.zeroize();
    }
}

// `Zeroizing` clears the bytes when it is dropped.
impl ZeroizeOnDrop for EncryptionKey {}

impl From<[u8; KEY_LEN]> for EncryptionKey {
    fn from(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self::from_bytes(&bytes);
        bytes.zeroize();
        key
    }
}

/// Decodes a base64 key, naming `what` in errors.
pub(crate) fn decode_key(what: &str, encoded: &str) -> Result<EncryptionKey> {
    let trimmed = encoded.trim_ascii();
    if trimmed.is_empty() {
        return Err(Error::invalid_config(
            what,
            "is empty; expected 32 bytes of standard base64 (44 characters)",
        ));
    }
    let mut decoded = Zeroizing::new(Vec::with_capacity(trimmed.len()));
    let diagnosed = |reason: String| match format_mistake(trimmed) {
        Some(mistake) => Error::invalid_config(
            what,
            format!("{reason}; {mistake}, expected standard base64 (`openssl rand -base64 32`)"),
        ),
        None => Error::invalid_config(what, reason),
    };
    // offsets count in the text as given, the ignored leading whitespace too
    let lead = encoded.len() - encoded.trim_ascii_start().len();
    STANDARD.decode_vec(trimmed, &mut decoded).map_err(|err| {
        let err = match err {
            base64::DecodeError::InvalidByte(offset, byte) => {
                base64::DecodeError::InvalidByte(offset + lead, byte)
            }
            base64::DecodeError::InvalidLastSymbol {
                offset,
                symbol,
                symbol_value,
            } => base64::DecodeError::InvalidLastSymbol {
                offset: offset + lead,
                symbol,
                symbol_value,
            },
            other => other,
        };
        diagnosed(format!("is not valid base64: {}", describe_b64(&err)))
    })?;
    if decoded.len() != KEY_LEN {
        return Err(diagnosed(wrong_length_reason(decoded.len())));
    }
    EncryptionKey::from_slice(&decoded)
}

/// Names the usual way a key text that did not decode was mangled: only
/// when the text *is* a 32-byte key in that other form (so nothing is
/// guessed from a text that is merely wrong), and from its form alone.
fn format_mistake(text: &str) -> Option<&'static str> {
    let decodes_to_key = |engine: &base64::engine::GeneralPurpose, text: &str| {
        let mut decoded = Zeroizing::new(Vec::with_capacity(text.len()));
        engine.decode_vec(text, &mut decoded).is_ok() && decoded.len() == KEY_LEN
    };
    let bytes = text.as_bytes();
    if bytes.len() == 2 * KEY_LEN && bytes.iter().all(u8::is_ascii_hexdigit) {
        return Some("it looks like 64 hex digits (`openssl rand -hex 32`)");
    }
    if text.contains(['-', '_']) && decodes_to_key(&URL_SAFE_NO_PAD, text.trim_end_matches('=')) {
        return Some("it uses the URL-safe base64 alphabet (`-` and `_`)");
    }
    if !text.ends_with('=') && decodes_to_key(&STANDARD_NO_PAD, text) {
        return Some(
            "its `=` padding is missing (a 32-byte key in standard base64 is 44 characters, \
             ending in `=`)",
        );
    }
    let unquoted = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .or_else(|| text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')));
    if unquoted.is_some_and(|inner| decodes_to_key(&STANDARD, inner)) {
        return Some("it is wrapped in quotes (a line read literally, as by docker --env-file)");
    }
    let mut once = Zeroizing::new(Vec::with_capacity(text.len()));
    let twice = STANDARD.decode_vec(text, &mut once).is_ok()
        && std::str::from_utf8(&once)
            .is_ok_and(|inner| decodes_to_key(&STANDARD, inner.trim_ascii()));
    if twice {
        return Some(
            "it is a base64 key encoded in base64 twice (a Kubernetes `stringData:` \
             value must be the key itself)",
        );
    }
    None
}

fn wrong_length(what: &str, len: usize) -> Error {
    Error::invalid_config(what, wrong_length_reason(len))
}

fn wrong_length_reason(len: usize) -> String {
    format!("must be {KEY_LEN} bytes for AES-256, got {len} bytes")
}

fn key_from_env_value(
    var: &str,
    value: std::result::Result<String, std::env::VarError>,
) -> Result<EncryptionKey> {
    match value {
        Ok(value) => {
            let value = Zeroizing::new(value);
            decode_key(&format!("environment variable {var}"), &value)
        }
        Err(std::env::VarError::NotPresent) => Err(Error::invalid_config(
            format!("environment variable {var}"),
            "is not set; expected a base64 AES-256 key (generate one with `openssl rand -base64 32`)",
        )),
        Err(std::env::VarError::NotUnicode(raw)) => {
            let raw = Zeroizing::new(raw.into_encoded_bytes());
            let hint = if raw.len() == KEY_LEN {
                "; it holds 32 raw bytes, the key itself rather than its base64 (a Kubernetes \
                 secret's `data:` value is base64-decoded once before it reaches the variable)"
            } else {
                ""
            };
            Err(Error::invalid_config(
                format!("environment variable {var}"),
                format!("is not valid Unicode; expected a base64 AES-256 key{hint}"),
            ))
        }
    }
}

/// Describes a base64 error without echoing the offending (secret) byte.
pub(crate) fn describe_b64(err: &base64::DecodeError) -> String {
    match err {
        base64::DecodeError::InvalidByte(offset, _) => {
            format!("invalid character at offset {offset}")
        }
        base64::DecodeError::InvalidLength(len) => {
            format!("invalid length ({len} significant characters)")
        }
        base64::DecodeError::InvalidLastSymbol { offset, .. } => {
            format!("invalid last symbol at offset {offset}")
        }
        base64::DecodeError::InvalidPadding => "invalid or missing `=` padding".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn counting() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn from_base64_decodes_32_bytes() {
        let key = EncryptionKey::from_base64(KEY_B64).unwrap();
        assert_eq!(key.as_bytes(), &counting());
        assert_eq!(key.to_base64().as_str(), KEY_B64);
    }

    #[test]
    fn from_base64_ignores_surrounding_whitespace() {
        let key = EncryptionKey::from_base64(&format!("  {KEY_B64}\n")).unwrap();
        assert_eq!(key.as_bytes(), &counting());
    }

    #[test]
    fn from_base64_rejects_wrong_length() {
        // 16 bytes: an AES-128 key.
        let err = EncryptionKey::from_base64("AAECAwQFBgcICQoLDA0ODw==").unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        assert!(err.to_string().contains("must be 32 bytes"), "{err}");
        assert!(err.to_string().contains("got 16 bytes"), "{err}");
        // 33 bytes.
        let err = EncryptionKey::from_base64(&STANDARD.encode([7u8; 33])).unwrap_err();
        assert!(err.to_string().contains("got 33 bytes"), "{err}");
    }

    #[test]
    fn from_base64_rejects_bad_encoding_without_echoing_it() {
        let bad = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx!dHh8=";
        let err = EncryptionKey::from_base64(bad).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        assert!(msg.contains("not valid base64"), "{msg}");
        assert!(msg.contains("offset 38"), "{msg}");
        assert!(!msg.contains("AAECAw"), "error echoes key material: {msg}");
        assert!(!msg.contains('!'), "error echoes the bad byte: {msg}");

        let err =
            EncryptionKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap_err();
        assert!(err.to_string().contains("padding"), "{err}");
        let err = EncryptionKey::from_base64("   ").unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    /// The offset an error names counts in the text as given: the leading
    /// whitespace that is ignored (an indented line of a secrets file, a
    /// `KEY= value`) is counted too, or the position named is off by its
    /// length.
    #[test]
    fn error_offsets_count_the_ignored_leading_whitespace() {
        let bad = " \tAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx!dHh8=";
        assert_eq!(bad.find('!'), Some(40));
        let msg = EncryptionKey::from_base64(bad).unwrap_err().to_string();
        assert!(msg.contains("invalid character at offset 40"), "{msg}");
        // a nonzero trailing bit in the last symbol, `9` where `8` is
        let bad = "\n\n AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=\n";
        assert_eq!(bad.find('9'), Some(45));
        let msg = EncryptionKey::from_base64(bad).unwrap_err().to_string();
        assert!(msg.contains("invalid last symbol at offset 45"), "{msg}");
        // without leading whitespace, as before
        let msg = EncryptionKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx!dHh8=\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("invalid character at offset 38"), "{msg}");
    }

    /// The usual ways a key gets mangled on its way into a variable or a
    /// file each get an error that names the mistake, without echoing the
    /// key.
    #[test]
    fn common_key_format_mistakes_are_named() {
        // 0xfb bytes: standard base64 is all `+` and `/`, so the URL-safe
        // form is all `-` and `_`
        let key = [0xfb_u8; 32];
        let standard = STANDARD.encode(key);
        let url_safe = standard.replace('+', "-").replace('/', "_");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let cases = [
            // `openssl rand -hex 32`
            (hex.clone(), "hex"),
            (format!("{}\n", hex.to_uppercase()), "hex"),
            // Python's `secrets.token_urlsafe(32)`, with and without padding
            (url_safe.clone(), "URL-safe"),
            (url_safe.trim_end_matches('=').to_owned(), "URL-safe"),
            // standard base64 with its `=` padding stripped (43 characters)
            (
                standard.trim_end_matches('=').to_owned(),
                "padding is missing",
            ),
            (
                format!("{}\n", KEY_B64.trim_end_matches('=')),
                "padding is missing",
            ),
            // `KEY="..."` in a file read literally (docker --env-file, k8s)
            (format!("\"{standard}\""), "quotes"),
            (format!("'{standard}'\n"), "quotes"),
            // a Kubernetes `stringData:` value given as `echo $KEY | base64`
            (STANDARD.encode(format!("{standard}\n")), "twice"),
            (STANDARD.encode(&standard), "twice"),
        ];
        for (text, named) in cases {
            let err = EncryptionKey::from_base64(&text).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
            assert!(msg.contains(named), "{text:?}: {msg}");
            assert!(msg.contains("standard base64"), "{text:?}: {msg}");
            for secret in [&hex[..16], &url_safe[..16], &standard[..16]] {
                assert!(!msg.contains(secret), "echoes key material: {msg}");
            }
        }
        // a text that is merely wrong gets no invented diagnosis
        for text in [
            "AAECAwQFBgcICQoLDA0ODw==".to_owned(),
            "event-crypto".to_owned(),
            "\"not-a-key\"".to_owned(),
            // unpadded, but 16 bytes (an AES-128 key): not a 32-byte key
            "AAECAwQFBgcICQoLDA0ODw".to_owned(),
            format!("{}=", &hex[..62]),
        ] {
            let msg = EncryptionKey::from_base64(&text).unwrap_err().to_string();
            assert!(!msg.contains("; it"), "{text:?}: {msg}");
        }
    }

    /// Only a text of exactly 64 hex digits is called a hex key: a shorter
    /// hex key (`openssl rand -hex 16`, an AES-128 key) or 64 characters
    /// that are not all hex digits get the plain error, not a diagnosis
    /// that names the wrong mistake.
    #[test]
    fn only_64_hex_digits_are_diagnosed_as_a_hex_key() {
        let hex_128 = "000102030405060708090a0b0c0d0e0f";
        let msg = EncryptionKey::from_base64(hex_128).unwrap_err().to_string();
        assert!(msg.contains("got 24 bytes"), "{msg}");
        assert!(!msg.contains("hex"), "{msg}");
        // 64 base64 characters (48 bytes), hex digits but for one `g`
        let not_hex = format!("{}g", &"0123456789abcdef".repeat(4)[..63]);
        let msg = EncryptionKey::from_base64(&not_hex)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("got 48 bytes"), "{msg}");
        assert!(!msg.contains("hex"), "{msg}");
    }

    /// A Kubernetes secret whose `data:` value is the key text itself is
    /// base64-decoded by Kubernetes: the variable then holds the 32 raw key
    /// bytes, which are (almost always) not Unicode.
    #[cfg(unix)]
    #[test]
    fn raw_key_bytes_in_a_variable_are_named() {
        use std::os::unix::ffi::OsStringExt;
        let raw = std::ffi::OsString::from_vec(vec![0xfb; 32]);
        let err = key_from_env_value("K", Err(std::env::VarError::NotUnicode(raw))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not valid Unicode"), "{msg}");
        assert!(msg.contains("32 raw bytes"), "{msg}");
        let other = std::ffi::OsString::from_vec(vec![0xfb; 7]);
        let err = key_from_env_value("K", Err(std::env::VarError::NotUnicode(other))).unwrap_err();
        assert!(!err.to_string().contains("raw"), "{err}");
    }

    #[test]
    fn from_slice_checks_length() {
        assert_eq!(
            EncryptionKey::from_slice(&counting()).unwrap().as_bytes(),
            &counting()
        );
        let err = EncryptionKey::from_slice(&[1, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("got 3 bytes"), "{err}");
    }

    #[test]
    fn from_env_reports_the_variable() {
        let err = EncryptionKey::from_env("A3S_EVENT_CRYPTO_TEST_SURELY_UNSET_VAR").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("A3S_EVENT_CRYPTO_TEST_SURELY_UNSET_VAR"),
            "{msg}"
        );
        assert!(msg.contains("is not set"), "{msg}");

        // Cargo sets CARGO_PKG_NAME for tests: present, but not a key.
        let err = EncryptionKey::from_env("CARGO_PKG_NAME").unwrap_err();
        assert!(
            err.to_string()
                .contains("environment variable CARGO_PKG_NAME"),
            "{err}"
        );

        let key = key_from_env_value("K", Ok(format!("{KEY_B64}\n"))).unwrap();
        assert_eq!(key.as_bytes(), &counting());
        let err = key_from_env_value(
            "K",
            Err(std::env::VarError::NotUnicode(std::ffi::OsString::new())),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not valid Unicode"), "{err}");
    }

    #[test]
    fn debug_is_redacted() {
        let key = EncryptionKey::from_base64(KEY_B64).unwrap();
        let debug = format!("{key:?} {key:#?}");
        assert!(!debug.contains("AAECAw"), "{debug}");
        assert!(!debug.contains("31"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn generate_gives_distinct_keys() {
        let a = EncryptionKey::generate().unwrap();
        let b = EncryptionKey::generate().unwrap();
        assert!(!a.ct_eq(&b));
        assert!(a.ct_eq(&a.clone()));
        assert_ne!(a.as_bytes(), &[0u8; 32]);
    }

    #[test]
    fn zeroize_clears_and_drop_zeroizes() {
        fn zeroized_on_drop<T: ZeroizeOnDrop>() {}
        zeroized_on_drop::<EncryptionKey>();

        let mut key = EncryptionKey::from_bytes(&[0xAB; 32]);
        key.zeroize();
        assert_eq!(key.as_bytes(), &[0u8; 32]);

        let key = EncryptionKey::from([0xCD; 32]);
        assert_eq!(key.as_bytes(), &[0xCD; 32]);
    }
}
