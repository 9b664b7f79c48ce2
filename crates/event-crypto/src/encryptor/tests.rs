use super::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};

const K1: [u8; 32] = [1; 32];
const K2: [u8; 32] = [2; 32];

fn payload() -> Value {
    json!({
        "card": "4111-1111-1111-1111",
        "amount": 4200,
        "tags": ["a", "b"],
        "nested": {"unicode": "päyløad ✓", "null": null, "float": 1.5}
    })
}

fn enc() -> Aes256GcmEncryptor {
    Aes256GcmEncryptor::new("k1", &K1)
}

/// The decryption error message for `envelope`, failing if it is anything else.
fn decrypt_err(e: &Aes256GcmEncryptor, event_id: &str, envelope: &Value) -> String {
    match e.decrypt(event_id, envelope) {
        Err(Error::Decryption(msg)) => msg,
        other => panic!("expected Error::Decryption, got {other:?}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(s: &Value) -> Vec<u8> {
    STANDARD.decode(s.as_str().unwrap()).unwrap()
}

#[test]
fn round_trip_preserves_every_json_kind() {
    let e = enc();
    for value in [
        payload(),
        json!(null),
        json!(true),
        json!(-12.75),
        json!("just a string"),
        json!([]),
        json!({}),
        json!([1, {"a": [null, "x"]}]),
        json!({"big": "x".repeat(100_000)}),
    ] {
        let sealed = e.encrypt("evt-1", &value).unwrap();
        assert!(e.is_encrypted(&sealed));
        assert_eq!(e.decrypt("evt-1", &sealed).unwrap(), value);
    }
}

/// Floats come back bit for bit. About one computed `f64` in ten (a rate,
/// a measurement: 992.2532032103893) used to come back one ULP off.
#[test]
fn floats_round_trip_bit_for_bit() {
    let e = enc();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let floats: Vec<f64> = (0..2000)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
            unit * [1.0, 1e3, 1e6, 1e-3][i % 4]
        })
        .chain([
            992.253_203_210_389_3,
            0.1 + 0.2,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ])
        .collect();
    let value = json!({ "floats": floats });
    let sealed = e.encrypt("evt-f", &value).unwrap();
    let back = e.decrypt("evt-f", &sealed).unwrap();
    let back = back["floats"].as_array().unwrap();
    assert_eq!(back.len(), floats.len());
    for (sent, got) in floats.iter().zip(back) {
        let got = got.as_f64().unwrap();
        assert_eq!(sent.to_bits(), got.to_bits(), "{sent} came back as {got}");
    }
}

/// A payload nested too deep for the JSON reader to parse back is refused
/// when it is encrypted (a clear error at publish time), instead of being
/// stored as an envelope that can never be decrypted.
#[test]
fn payloads_too_deep_to_read_back_are_refused_when_encrypted() {
    let e = enc();
    let nested = |depth: usize| {
        let mut value = json!({"leaf": 1});
        for _ in 1..depth {
            value = Value::Array(vec![value]);
        }
        value
    };
    let deepest = nested(MAX_PAYLOAD_DEPTH);
    let sealed = e.encrypt("evt-d", &deepest).unwrap();
    assert_eq!(e.decrypt("evt-d", &sealed).unwrap(), deepest);

    let too_deep = nested(MAX_PAYLOAD_DEPTH + 1);
    match e.encrypt("evt-d", &too_deep) {
        Err(Error::Encryption(msg)) => {
            assert!(msg.contains("evt-d"), "{msg}");
            assert!(
                msg.contains(&format!("{MAX_PAYLOAD_DEPTH} levels")),
                "{msg}"
            );
        }
        other => panic!("expected Error::Encryption, got {other:?}"),
    }
    // far deeper: still an error, not a stack overflow
    let mut abyss = json!(0);
    for _ in 0..10_000 {
        abyss = Value::Array(vec![abyss]);
    }
    assert!(matches!(
        e.encrypt("evt-d", &abyss),
        Err(Error::Encryption(_))
    ));
    // dropping a deep `Value` recurses: unwind it iteratively
    while let Value::Array(mut inner) = abyss {
        abyss = inner.pop().unwrap_or(Value::Null);
    }
}

#[test]
fn envelope_holds_only_ciphertext() {
    let e = enc();
    let plaintext = serde_json::to_vec(&payload()).unwrap();
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    let obj = sealed.as_object().unwrap();
    assert_eq!(obj.len(), 5, "{sealed}");
    assert_eq!(sealed["encrypted"], json!(true));
    assert_eq!(sealed["version"], json!(FORMAT_VERSION));
    assert_eq!(sealed["keyId"], json!("k1"));
    assert_eq!(unb64(&sealed["nonce"]).len(), NONCE_LEN);
    assert_eq!(
        unb64(&sealed["ciphertext"]).len(),
        plaintext.len() + TAG_LEN
    );
    let text = sealed.to_string();
    for secret in ["4111-1111", "\"card\"", "\"amount\"", "päyløad"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    // Same-shaped struct round trip.
    let parsed = EncryptedPayload::from_value(&sealed).unwrap();
    assert_eq!(parsed.into_value(), sealed);
}

#[test]
fn every_message_gets_a_fresh_nonce() {
    let e = enc();
    let mut nonces = std::collections::HashSet::new();
    let mut ciphertexts = std::collections::HashSet::new();
    for _ in 0..200 {
        let sealed = e.encrypt("evt-1", &payload()).unwrap();
        assert!(nonces.insert(sealed["nonce"].as_str().unwrap().to_owned()));
        assert!(ciphertexts.insert(sealed["ciphertext"].as_str().unwrap().to_owned()));
    }
}

#[test]
fn rotation_keeps_old_payloads_readable_and_uses_the_new_key() {
    let e = enc();
    let old = e.encrypt("evt-old", &json!({"n": 1})).unwrap();
    assert_eq!(old["keyId"], json!("k1"));

    e.add_key("k2", &K2).unwrap();
    assert_eq!(e.active_key_id(), "k1", "add_key must not activate");
    assert_eq!(e.key_ids(), vec!["k1".to_owned(), "k2".to_owned()]);
    assert_eq!(e.encrypt("evt-x", &json!(1)).unwrap()["keyId"], json!("k1"));

    e.rotate_to("k2").unwrap();
    assert_eq!(e.active_key_id(), "k2");
    let new = e.encrypt("evt-new", &json!({"n": 2})).unwrap();
    assert_eq!(new["keyId"], json!("k2"));

    assert_eq!(e.decrypt("evt-old", &old).unwrap(), json!({"n": 1}));
    assert_eq!(e.decrypt("evt-new", &new).unwrap(), json!({"n": 2}));

    // A reader that only has k2 cannot read the old payload, and says why.
    let only_k2 = Aes256GcmEncryptor::new("k2", &K2);
    assert_eq!(only_k2.decrypt("evt-new", &new).unwrap(), json!({"n": 2}));
    let msg = decrypt_err(&only_k2, "evt-old", &old);
    assert!(msg.contains("unknown key id \"k1\""), "{msg}");
    assert!(msg.contains("[\"k2\"]"), "{msg}");
    assert!(msg.contains("evt-old"), "{msg}");

    // Rotating back works too.
    e.rotate_to("k1").unwrap();
    assert_eq!(e.encrypt("evt-y", &json!(1)).unwrap()["keyId"], json!("k1"));
}

#[test]
fn rotate_to_unknown_key_is_not_found() {
    let e = enc();
    let err = e.rotate_to("nope").unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { kind: "encryption key", name } if name == "nope"),
        "{err:?}"
    );
    assert_eq!(e.active_key_id(), "k1");
}

#[test]
fn add_key_is_idempotent_but_refuses_to_replace_a_key() {
    let e = enc();
    e.add_key("k1", &K1).unwrap();
    let err = e.add_key("k1", &K2).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("\"k1\""), "{err}");
    // k1 still decrypts what it encrypted.
    let sealed = e.encrypt("evt-1", &json!(1)).unwrap();
    assert_eq!(e.decrypt("evt-1", &sealed).unwrap(), json!(1));
    assert_eq!(e.key_ids(), vec!["k1".to_owned()]);
}

#[test]
fn remove_key_retires_a_key_but_never_the_active_one() {
    let e = enc();
    let old = e.encrypt("evt-1", &json!(1)).unwrap();
    let err = e.remove_key("k1").unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(matches!(
        e.remove_key("zz").unwrap_err(),
        Error::NotFound { .. }
    ));

    e.add_key("k2", &K2).unwrap();
    e.rotate_to("k2").unwrap();
    e.remove_key("k1").unwrap();
    assert_eq!(e.key_ids(), vec!["k2".to_owned()]);
    assert!(decrypt_err(&e, "evt-1", &old).contains("unknown key id \"k1\""));
}

/// "A key id names exactly one key, forever": a removed id given other
/// bytes is refused like one still in the ring, while the key itself can
/// be given back (the recovery from a key removed too early).
#[test]
fn a_removed_key_id_is_not_reused_for_another_key() {
    let e = enc();
    let old = e.encrypt("evt-1", &payload()).unwrap();
    e.add_key("k2", &K2).unwrap();
    e.rotate_to("k2").unwrap();
    e.remove_key("k1").unwrap();

    let err = e.add_key("k1", &[9; 32]).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("\"k1\""), "{err}");
    assert!(err.to_string().contains("removed"), "{err}");
    assert_eq!(e.key_ids(), ["k2"]);
    assert!(matches!(e.rotate_to("k1"), Err(Error::NotFound { .. })));

    e.add_key("k1", &K1).unwrap();
    assert_eq!(e.key_ids(), ["k1", "k2"]);
    assert_eq!(e.decrypt("evt-1", &old).unwrap(), payload());
    assert!(matches!(
        e.add_key("k1", &[9; 32]),
        Err(Error::Conflict { .. })
    ));
    // removed again, still remembered
    e.remove_key("k1").unwrap();
    assert!(matches!(
        e.add_key("k1", &[9; 32]),
        Err(Error::Conflict { .. })
    ));
    e.add_key("k1", &K1).unwrap();
}

#[test]
fn constructors_from_base64_and_key() {
    let key = EncryptionKey::generate().unwrap();
    let e1 = Aes256GcmEncryptor::from_base64("k", &key.to_base64()).unwrap();
    let e2 = Aes256GcmEncryptor::with_key("k", key.clone());
    let e3 = Aes256GcmEncryptor::new("k", key.as_bytes());
    let sealed = e1.encrypt("evt-1", &payload()).unwrap();
    assert_eq!(e2.decrypt("evt-1", &sealed).unwrap(), payload());
    assert_eq!(e3.decrypt("evt-1", &sealed).unwrap(), payload());

    let err = Aes256GcmEncryptor::from_base64("k", "AAAA").unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("got 3 bytes"), "{err}");
    let err = Aes256GcmEncryptor::from_env("k", "A3S_EVENT_CRYPTO_TEST_UNSET").unwrap_err();
    assert!(
        err.to_string().contains("A3S_EVENT_CRYPTO_TEST_UNSET"),
        "{err}"
    );
}

#[test]
fn debug_shows_key_ids_not_keys() {
    let e = Aes256GcmEncryptor::new("k1", &[0xAB; 32]);
    e.add_key("k2", &[0xCD; 32]).unwrap();
    let debug = format!("{e:?}");
    assert!(debug.contains("k1") && debug.contains("k2"), "{debug}");
    for leak in ["171", "205", "AB", "ab", "q6ur", "zc3N"] {
        assert!(!debug.contains(leak), "{leak} in {debug}");
    }
}

// ---- associated data binding ----

#[test]
fn payload_is_bound_to_its_event() {
    let e = enc();
    let sealed = e.encrypt("evt-a", &payload()).unwrap();
    for other in ["evt-b", "evt-a ", "EVT-A", "", "evt-"] {
        let msg = decrypt_err(&e, other, &sealed);
        assert!(msg.contains("authentication failed"), "{msg}");
        assert!(msg.contains("another event"), "{msg}");
    }
    assert_eq!(e.decrypt("evt-a", &sealed).unwrap(), payload());
}

#[test]
fn key_id_is_authenticated() {
    // Both keys in the ring are identical, so only the AAD can tell the
    // relabelled envelope apart.
    let e = enc();
    e.add_key("k1-copy", &K1).unwrap();
    let mut sealed = e.encrypt("evt-1", &payload()).unwrap();
    sealed["keyId"] = json!("k1-copy");
    assert!(decrypt_err(&e, "evt-1", &sealed).contains("authentication failed"));
}

#[test]
fn associated_data_is_unambiguous() {
    assert_ne!(associated_data("ab", "c"), associated_data("a", "bc"));
    assert_ne!(associated_data("", "abc"), associated_data("abc", ""));
    assert!(associated_data("k", "e").starts_with(AAD_PREFIX));
}

// ---- bad input: an error, never a panic ----

#[test]
fn wrong_key_fails() {
    let sealed = enc().encrypt("evt-1", &payload()).unwrap();
    let impostor = Aes256GcmEncryptor::new("k1", &K2);
    let msg = decrypt_err(&impostor, "evt-1", &sealed);
    assert!(
        msg.contains("authentication failed under key \"k1\""),
        "{msg}"
    );
    assert!(msg.contains("wrong key"), "{msg}");
}

#[test]
fn tampered_ciphertext_and_tag_fail_at_every_byte() {
    let e = enc();
    let sealed = e.encrypt("evt-1", &json!({"a": 1})).unwrap();
    let raw = unb64(&sealed["ciphertext"]);
    for i in 0..raw.len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = raw.clone();
            bytes[i] ^= bit;
            let mut bad = sealed.clone();
            bad["ciphertext"] = json!(b64(&bytes));
            let msg = decrypt_err(&e, "evt-1", &bad);
            assert!(msg.contains("authentication failed"), "byte {i}: {msg}");
        }
    }
}

#[test]
fn tampered_nonce_fails() {
    let e = enc();
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    let nonce = unb64(&sealed["nonce"]);
    for i in 0..nonce.len() {
        let mut bytes = nonce.clone();
        bytes[i] ^= 0x04;
        let mut bad = sealed.clone();
        bad["nonce"] = json!(b64(&bytes));
        assert!(decrypt_err(&e, "evt-1", &bad).contains("authentication failed"));
    }
}

#[test]
fn wrong_nonce_length_fails() {
    let e = enc();
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    for len in [0usize, 1, 8, 11, 13, 15, 16, 24, 64, 1000] {
        let mut bad = sealed.clone();
        bad["nonce"] = json!(b64(&vec![7u8; len]));
        let msg = decrypt_err(&e, "evt-1", &bad);
        assert!(msg.contains("nonce must be 12 bytes"), "len {len}: {msg}");
    }
}

/// A nonce of the wrong size is reported with its size: the decoded length
/// while the text is short enough to be a nonce at all (up to 20 base64
/// characters, 15 bytes), the text's length beyond that (it is not decoded).
#[test]
fn wrong_nonce_length_errors_name_the_length() {
    let e = enc();
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    for (len, reported) in [
        (11usize, "got 11"),
        (13, "got 13"),
        // 20 base64 characters: the longest text still decoded
        (15, "got 15"),
        // 24 characters
        (16, "got 24 base64 characters"),
        // 32 characters
        (24, "got 32 base64 characters"),
        (1000, "got 1336 base64 characters"),
    ] {
        let mut bad = sealed.clone();
        bad["nonce"] = json!(b64(&vec![7u8; len]));
        let msg = decrypt_err(&e, "evt-1", &bad);
        assert!(msg.contains("nonce must be 12 bytes"), "len {len}: {msg}");
        assert!(msg.contains(reported), "len {len}: {msg}");
    }
}

#[test]
fn bad_base64_fails() {
    let e = enc();
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    for bad_text in ["!!!!", "AAAA*AAA", "AAAAA", "AAA=AAAA", "  AAAA", "é"] {
        let mut bad = sealed.clone();
        bad["ciphertext"] = json!(bad_text);
        let msg = decrypt_err(&e, "evt-1", &bad);
        assert!(
            msg.contains("ciphertext is not valid base64"),
            "{bad_text}: {msg}"
        );

        let mut bad = sealed.clone();
        bad["nonce"] = json!(bad_text);
        let msg = decrypt_err(&e, "evt-1", &bad);
        assert!(
            msg.contains("nonce is not valid base64"),
            "{bad_text}: {msg}"
        );
    }
    // URL-safe alphabet is not the envelope's alphabet.
    let mut bad = sealed.clone();
    bad["nonce"] = json!("AAAAAAAAAAAAAA-_");
    assert!(decrypt_err(&e, "evt-1", &bad).contains("nonce is not valid base64"));
}

#[test]
fn truncated_ciphertext_fails() {
    let e = enc();
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    let raw = unb64(&sealed["ciphertext"]);
    for keep in [0, 1, 15] {
        let mut bad = sealed.clone();
        bad["ciphertext"] = json!(b64(&raw[..keep]));
        let msg = decrypt_err(&e, "evt-1", &bad);
        assert!(msg.contains("ciphertext is truncated"), "{keep}: {msg}");
    }
    for keep in [16, raw.len() / 2, raw.len() - 1] {
        let mut bad = sealed.clone();
        bad["ciphertext"] = json!(b64(&raw[..keep]));
        assert!(decrypt_err(&e, "evt-1", &bad).contains("authentication failed"));
    }
    // Extra bytes appended are tampering too.
    let mut longer = raw.clone();
    longer.push(0);
    let mut bad = sealed.clone();
    bad["ciphertext"] = json!(b64(&longer));
    assert!(decrypt_err(&e, "evt-1", &bad).contains("authentication failed"));
}

#[test]
fn malformed_envelopes_fail_with_the_reason() {
    let e = enc();
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (json!("ciphertext"), "expected a JSON object, got a string"),
        (json!(null), "got null"),
        (json!([sealed.clone()]), "got an array"),
        (payload(), "missing field `encrypted`"),
        (
            {
                let mut v = sealed.clone();
                v["version"] = json!(2);
                v
            },
            "unsupported envelope version 2",
        ),
        (
            {
                let mut v = sealed.clone();
                v["encrypted"] = json!(false);
                v
            },
            "`encrypted` is false",
        ),
        (
            {
                let mut v = sealed.clone();
                v["keyId"] = json!(7);
                v
            },
            "`keyId` must be a string",
        ),
        (
            {
                let mut v = sealed.clone();
                v["keyId"] = json!("k9");
                v
            },
            "unknown key id \"k9\"",
        ),
    ];
    for (value, expected) in cases {
        let msg = decrypt_err(&e, "evt-1", &value);
        assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
        assert!(msg.contains("evt-1"), "names the event: {msg}");
    }
    for field in ["encrypted", "version", "keyId", "nonce", "ciphertext"] {
        let mut v = sealed.clone();
        v.as_object_mut().unwrap().remove(field);
        let msg = decrypt_err(&e, "evt-1", &v);
        assert!(msg.contains(&format!("missing field `{field}`")), "{msg}");
    }
}

#[test]
fn version_downgrade_is_refused() {
    let e = enc();
    let mut sealed = e.encrypt("evt-1", &payload()).unwrap();
    sealed["version"] = json!(0);
    assert!(decrypt_err(&e, "evt-1", &sealed).contains("unsupported envelope version 0"));
}

#[test]
fn arbitrary_corruption_never_panics() {
    // Deterministic pseudo-random mutations of the serialized envelope: every
    // one either fails to parse as JSON or decrypts to an error (or, if the
    // mutation only touched insignificant bytes, to the original payload).
    let e = enc();
    let sealed = e.encrypt("evt-1", &json!({"k": "v"})).unwrap();
    let text = sealed.to_string().into_bytes();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for _ in 0..5_000 {
        let mut bytes = text.clone();
        for _ in 0..=(next() % 3) {
            let i = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[i] = (next() % 128) as u8,
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, (next() % 128) as u8),
            }
        }
        let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        match e.decrypt("evt-1", &value) {
            Ok(v) => assert_eq!(v, json!({"k": "v"})),
            Err(Error::Decryption(_)) => errors += 1,
            Err(other) => panic!("unexpected error kind {other:?}"),
        }
    }
    assert!(errors > 100, "mutations should mostly fail: {errors}");
}

#[test]
fn plaintext_is_not_mistaken_for_an_envelope() {
    let e = enc();
    assert!(!e.is_encrypted(&payload()));
    assert!(!e.is_encrypted(&json!({"encrypted": true, "note": "user data"})));
    assert!(!e.is_encrypted(&json!("encrypted")));
}

// ---- concurrency ----

#[test]
fn shared_encryptor_rotates_while_in_use() {
    let e = Arc::new(enc());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let e = Arc::clone(&e);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut key_ids = std::collections::HashSet::new();
                while !stop.load(Ordering::Relaxed) || n < 50 {
                    let id = format!("evt-{w}-{n}");
                    let value = json!({"w": w, "n": n});
                    let sealed = e.encrypt(&id, &value).unwrap();
                    key_ids.insert(sealed["keyId"].as_str().unwrap().to_owned());
                    assert_eq!(e.decrypt(&id, &sealed).unwrap(), value);
                    n += 1;
                }
                key_ids
            })
        })
        .collect();
    for i in 2..=20 {
        let id = format!("k{i}");
        e.add_key(id.clone(), &[i as u8; 32]).unwrap();
        e.rotate_to(&id).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::HashSet::new();
    for w in workers {
        seen.extend(w.join().unwrap());
    }
    assert_eq!(e.active_key_id(), "k20");
    assert_eq!(e.key_ids().len(), 20);
    assert!(
        seen.len() > 1,
        "workers should have seen rotations: {seen:?}"
    );
}

/// An encrypt racing rotations uses a key that was active at some point
/// during the call: never one rotated away from before it started, never
/// one not yet active when it returned (ids sort in rotation order), and
/// its envelope names that key.
#[test]
fn an_encrypt_racing_rotations_uses_a_key_active_during_the_call() {
    let e = Arc::new(Aes256GcmEncryptor::new("k000", &[0; 32]));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let e = Arc::clone(&e);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 50 {
                    let id = format!("evt-{w}-{n}");
                    let before = e.active_key_id();
                    let sealed = e.encrypt(&id, &json!(n)).unwrap();
                    let after = e.active_key_id();
                    let used = sealed["keyId"].as_str().unwrap();
                    assert!(
                        before.as_str() <= used && used <= after.as_str(),
                        "{before} <= {used} <= {after}"
                    );
                    assert_eq!(e.decrypt(&id, &sealed).unwrap(), json!(n));
                    n += 1;
                }
            })
        })
        .collect();
    for i in 1..=200u8 {
        let id = format!("k{i:03}");
        e.add_key(id.clone(), &[i; 32]).unwrap();
        e.rotate_to(&id).unwrap();
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(e.active_key_id(), "k200");
}

/// Readers of envelopes under four keys race a thread that retires and
/// gives back those keys (rotating away first): each read is the payload
/// or `unknown key id`, never another error or another payload, and a
/// retired key given back reads again.
#[test]
fn reads_racing_key_removal_and_return_get_the_payload_or_unknown_key() {
    let keys: Vec<(String, [u8; 32])> = (0..4u8).map(|i| (format!("k{i}"), [i + 10; 32])).collect();
    let e = Arc::new(Aes256GcmEncryptor::new("active", &[99; 32]));
    let mut sealed = Vec::new();
    for (n, (id, key)) in keys.iter().enumerate() {
        e.add_key(id.clone(), key).unwrap();
        e.rotate_to(id).unwrap();
        sealed.push((
            format!("evt-{n}"),
            json!({"n": n}),
            e.encrypt(&format!("evt-{n}"), &json!({"n": n})).unwrap(),
        ));
    }
    e.rotate_to("active").unwrap();
    let sealed = Arc::new(sealed);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (e, sealed, stop) = (Arc::clone(&e), Arc::clone(&sealed), Arc::clone(&stop));
            std::thread::spawn(move || {
                let (mut read, mut unknown) = (0u64, 0u64);
                let mut i = r;
                while !stop.load(Ordering::Relaxed) || read == 0 {
                    let (id, plain, envelope) = &sealed[i % sealed.len()];
                    match e.decrypt(id, envelope) {
                        Ok(back) => {
                            assert_eq!(&back, plain);
                            read += 1;
                        }
                        Err(Error::Decryption(msg)) if msg.contains("unknown key id") => {
                            unknown += 1;
                        }
                        other => panic!("{id}: {other:?}"),
                    }
                    i += 1;
                }
                (read, unknown)
            })
        })
        .collect();
    for round in 0..400usize {
        let (id, key) = &keys[round % keys.len()];
        e.remove_key(id).unwrap();
        assert!(matches!(
            e.add_key(id.clone(), &[7; 32]),
            Err(Error::Conflict { .. })
        ));
        e.add_key(id.clone(), key).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (mut read, mut unknown) = (0, 0);
    for r in readers {
        let (r, u) = r.join().unwrap();
        (read, unknown) = (read + r, unknown + u);
    }
    // (how many reads fell on a removed key depends on the scheduling)
    assert!(read >= 3, "{read} read, {unknown} unknown");
    for (id, plain, envelope) in sealed.iter() {
        assert_eq!(&e.decrypt(id, envelope).unwrap(), plain);
    }
}

#[test]
fn usable_as_a_trait_object() {
    let e: Arc<dyn EventEncryptor> = Arc::new(enc());
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    assert!(e.is_encrypted(&sealed));
    assert_eq!(e.decrypt("evt-1", &sealed).unwrap(), payload());
}

// ---- bytes API ----

#[test]
fn bytes_round_trip_and_interop_with_the_value_api() {
    let e = enc();
    let binary: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let sealed = e.encrypt_bytes("evt-1", &binary).unwrap();
    assert_eq!(sealed.key_id, "k1");
    let value = sealed.into_value();
    assert!(e.is_encrypted(&value));
    assert_eq!(e.decrypt_bytes("evt-1", &value).unwrap(), binary);
    assert!(e.decrypt_bytes("evt-2", &value).is_err());
    // Not JSON: the Value API refuses it with a clear error.
    let msg = decrypt_err(&e, "evt-1", &value);
    assert!(msg.contains("decrypted payload is not valid JSON"), "{msg}");

    // Value-encrypted payloads decrypt to their compact JSON bytes, which
    // deserialize straight into an application type.
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct Card {
        card: String,
        amount: u64,
    }
    let sealed = e
        .encrypt("evt-3", &json!({"card": "4111", "amount": 5}))
        .unwrap();
    let bytes = e.decrypt_bytes("evt-3", &sealed).unwrap();
    let card: Card = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        card,
        Card {
            card: "4111".into(),
            amount: 5
        }
    );
    // Bytes-encrypted JSON decrypts with the Value API.
    let sealed = e
        .encrypt_bytes("evt-4", br#"{"a":[1,2]}"#)
        .unwrap()
        .into_value();
    assert_eq!(e.decrypt("evt-4", &sealed).unwrap(), json!({"a": [1, 2]}));
    let msg = match e.decrypt_bytes("evt-4", &json!(3)) {
        Err(Error::Decryption(msg)) => msg,
        other => panic!("{other:?}"),
    };
    assert!(
        msg.contains("evt-4") && msg.contains("got a number"),
        "{msg}"
    );
}

// ---- compatibility ----

/// Envelopes written by an earlier build (before the SIMD base64 engine and
/// the stack-built associated data) under key `[0x42; 32]`, id `k1`: every
/// envelope ever written must keep decrypting.
#[test]
fn envelopes_from_earlier_builds_still_decrypt() {
    let e = Aes256GcmEncryptor::new("k1", &[0x42; 32]);
    let sealed = json!({
        "ciphertext": "8c8kE1iL7T+kBK0jBQpak2yzsGIk8xuByCPGk+EnNuGJJbHmN0cB5FEqC1CyUo35gonS5AngR96WniGurgOzhOzXarWekj975TU4G8e06KDWgW4=",
        "encrypted": true, "keyId": "k1", "nonce": "k+g3huU7w5Iy66Uu", "version": 1
    });
    assert_eq!(
        e.decrypt("evt-kat-1", &sealed).unwrap(),
        json!({"card": "4111 1111 1111 1111", "amount": 4200, "note": "päyløad ✓"})
    );
    assert!(e.decrypt("evt-kat-2", &sealed).is_err());

    let sealed = json!({
        "ciphertext": "jPEXtLO/CGDA2SCNLcYEBWzawsPQRfOHjIDZ9EXTX2urujleK4Tgzoj7aPUXxjzBuNWovU1UuTTlkI0wJfFX2cQgQPeuDnuxwl28QKKCX3QYTfqYdh8E8OAo+pgWwqqXQ2yxZFDPS+t/MlHRGOAeSCwgqmdnizVetM9p6bJZKaSAad+Clw+TOf3TdbxZSQipHIZ/uS/Rj1i3HcjLxhhe1t5udSdSnoB8FVNPDoSde4nWZ9HxsHIPr/z1Hk1wnQORv7jXPLlkn/WVV+lWp01iF5V7Zvd6/XLpPgz1rJfyW0D29hnNvAa4hhwEqWtD9cWGhzHoug1K87E8LvthT3p+6TJm0mdpSe1IZLLtla0CqGQ=",
        "encrypted": true, "keyId": "k1", "nonce": "glQp2NJ8ecbddcjT", "version": 1
    });
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    assert_eq!(e.decrypt_bytes("evt-kat-2", &sealed).unwrap(), all_bytes);
}

/// Ids too long for the stack-built associated data take the heap path,
/// with the same layout.
#[test]
fn long_ids_round_trip() {
    let long_key = "k".repeat(300);
    let long_event = "e".repeat(1000);
    let aad = associated_data(&long_key, &long_event);
    assert_eq!(aad.len(), AAD_PREFIX.len() + 16 + 1300);
    assert!(aad.starts_with(AAD_PREFIX));
    assert!(aad.ends_with(long_event.as_bytes()));
    let short = associated_data("k1", "evt-1");
    let mut expected = AAD_PREFIX.to_vec();
    expected.extend_from_slice(&2u64.to_be_bytes());
    expected.extend_from_slice(b"k1");
    expected.extend_from_slice(&5u64.to_be_bytes());
    expected.extend_from_slice(b"evt-1");
    assert_eq!(short, expected);

    let e = Aes256GcmEncryptor::new(long_key.clone(), &K1);
    let sealed = e.encrypt(&long_event, &payload()).unwrap();
    assert_eq!(e.decrypt(&long_event, &sealed).unwrap(), payload());
    assert!(e.decrypt("evt-1", &sealed).is_err());
}

/// Every field of a valid envelope replaced by each value from a list of
/// hostile ones (wrong JSON kinds, extreme numbers, empty, huge, non-ASCII,
/// URL-safe or whitespace-laden base64, lengths around each limit), alone
/// and with extra fields: always an `Error::Decryption`, never a panic or
/// another error kind, and never a successful decryption.
#[test]
fn hostile_field_values_are_decryption_errors() {
    let e = enc();
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    let nonce = sealed["nonce"].as_str().unwrap().to_owned();
    let ciphertext = sealed["ciphertext"].as_str().unwrap().to_owned();
    let mut hostile = vec![
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(1.0),
        json!(1.5),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(""),
        json!("="),
        json!("===="),
        json!("é"),
        json!("\u{0}"),
        json!([]),
        json!([1]),
        json!({}),
        json!({"k": "v"}),
        json!("A".repeat(1 << 20)),
        json!("k1 "),
        json!(" k1"),
        json!(format!("{nonce} ")),
        json!(format!("\n{nonce}")),
        json!(nonce.replace('+', "-").replace('/', "_") + "-_"),
        json!(ciphertext.replace('+', "-").replace('/', "_") + "-_"),
        json!(format!("{ciphertext}\n")),
        json!(ciphertext.trim_end_matches('=')),
        json!(format!("{ciphertext}=")),
        json!(ciphertext[..ciphertext.len() - 4].to_owned()),
    ];
    // Every nonce length from 0 to 24 characters, valid alphabet.
    for len in 0..=24 {
        hostile.push(json!("QUJD".repeat(6)[..len].to_owned()));
    }
    for field in ["encrypted", "version", "keyId", "nonce", "ciphertext"] {
        for value in &hostile {
            if sealed[field] == *value {
                continue;
            }
            for extra in [false, true] {
                let mut bad = sealed.clone();
                bad[field] = value.clone();
                if extra {
                    bad["extra"] = json!({"nested": [1, 2, 3]});
                    bad["Ciphertext"] = json!(ciphertext.clone());
                }
                match e.decrypt("evt-1", &bad) {
                    Err(Error::Decryption(_)) => {}
                    other => panic!("{field} = {value:.60}: {other:?}"),
                }
                assert!(e.decrypt_bytes("evt-1", &bad).is_err(), "{field}");
            }
        }
    }
    // Extra fields alone do not change what decrypts.
    let mut extra = sealed.clone();
    extra["note"] = json!("ignored");
    assert_eq!(e.decrypt("evt-1", &extra).unwrap(), payload());
}

/// `decrypt_payload` reads a parsed envelope as `decrypt_bytes` reads its
/// value: the same bytes, and the same refusals.
#[test]
fn decrypt_payload_is_decrypt_bytes_without_the_value() {
    let e = enc();
    let sealed = e.encrypt_bytes("evt-1", b"not json at all").unwrap();
    assert_eq!(
        e.decrypt_payload("evt-1", &sealed).unwrap(),
        b"not json at all"
    );
    assert_eq!(
        e.decrypt_bytes("evt-1", &sealed.to_value()).unwrap(),
        b"not json at all"
    );
    let refused =
        |envelope: &EncryptedPayload, event_id: &str| match e.decrypt_payload(event_id, envelope) {
            Err(Error::Decryption(msg)) => msg,
            other => panic!("expected Error::Decryption, got {other:?}"),
        };
    assert!(refused(&sealed, "evt-2").contains("authentication failed"));
    let mut other = sealed.clone();
    other.encrypted = false;
    assert!(refused(&other, "evt-1").contains("`encrypted` is false"));
    let mut other = sealed.clone();
    other.version = 2;
    assert!(refused(&other, "evt-1").contains("unsupported envelope version 2"));
    let mut other = sealed.clone();
    other.key_id = "k9".into();
    assert!(refused(&other, "evt-1").contains("unknown key id"));
    let mut other = sealed.clone();
    other.ciphertext.replace_range(0..1, "!");
    assert!(refused(&other, "evt-1").contains("not valid base64"));
    let mut other = sealed;
    other.nonce = "AAAA".into();
    assert!(refused(&other, "evt-1").contains("nonce must be 12 bytes"));
}

/// The error message for `envelope`, from `decrypt` and `decrypt_bytes`
/// alike (they must agree).
fn both_errs(e: &Aes256GcmEncryptor, event_id: &str, envelope: &Value) -> String {
    let msg = decrypt_err(e, event_id, envelope);
    match e.decrypt_bytes(event_id, envelope) {
        Err(Error::Decryption(bytes_msg)) => assert_eq!(bytes_msg, msg),
        other => panic!("expected Error::Decryption, got {other:?}"),
    }
    msg
}

/// Strings an envelope's author (or an event's publisher) controls are
/// quoted in errors bounded: their start and their length, never whole.
/// A 1 MiB key id used to give a 1 MB message, which a dead letter then
/// carried (twice: reason and summary).
#[test]
fn attacker_controlled_strings_are_quoted_bounded() {
    let e = enc();
    let sealed = e.encrypt("evt-1", &payload()).unwrap();
    let long = "k".repeat(1 << 20);
    let mut foreign_key = sealed.clone();
    foreign_key["keyId"] = json!(long);
    let mut long_nonce = sealed.clone();
    long_nonce["nonce"] = json!("A".repeat(1 << 20));
    let mut bad_ciphertext = sealed.clone();
    bad_ciphertext["ciphertext"] = json!(format!("{}!", "A".repeat(1 << 20)));
    let long_event = format!("evt-{}", "x".repeat(1 << 20));
    let plain = payload();
    let cases: Vec<(&str, &str, &Value)> = vec![
        ("key id", "evt-1", &foreign_key),
        ("nonce", "evt-1", &long_nonce),
        ("ciphertext", "evt-1", &bad_ciphertext),
        ("event id, authentication", &long_event, &sealed),
        ("event id, key id", &long_event, &foreign_key),
        ("event id, envelope shape", &long_event, &plain),
    ];
    for (what, event_id, envelope) in cases {
        let msg = both_errs(&e, event_id, envelope);
        assert!(msg.len() < 600, "{what}: {} bytes: {msg:.300}", msg.len());
    }
    let msg = both_errs(&e, "evt-1", &foreign_key);
    assert!(
        msg.contains(&format!(
            "unknown key id \"{}\"… (1048576 bytes)",
            &long[..64]
        )),
        "{msg}"
    );
    let msg = both_errs(&e, &long_event, &sealed);
    assert!(
        msg.starts_with(&format!("event \"{}\"… (1048580 bytes)", &long_event[..64])),
        "{msg}"
    );
    // a short id is quoted whole, escaped as before
    let mut control = sealed.clone();
    control["keyId"] = json!("\u{1b}[31m\0k1\n");
    let msg = both_errs(&e, "evt-1", &control);
    assert!(
        msg.contains(r#"unknown key id "\u{1b}[31m\0k1\n" (the key ring"#),
        "{msg}"
    );
    // 64 characters, not bytes, and never split inside one
    let mut wide = sealed;
    wide["keyId"] = json!("é".repeat(100));
    let msg = both_errs(&e, "evt-1", &wide);
    assert!(
        msg.contains(&format!("\"{}\"… (200 bytes)", "é".repeat(64))),
        "{msg}"
    );
}
