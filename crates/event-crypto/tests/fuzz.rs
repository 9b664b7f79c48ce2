//! Seeded random-input hunt over what event-crypto decodes: envelopes
//! (parsed and decrypted after every kind of tampering) and base64 keys.
//! See event-core's `tests/fuzz_support` for the knobs (`A3S_FUZZ_ITERS`, ...).
#![allow(clippy::unwrap_used)]

#[path = "../../event-core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use event_core::{Error, EventEncryptor, MAX_PAYLOAD_DEPTH};
use event_crypto::{Aes256GcmEncryptor, EncryptedPayload, EncryptionKey, NONCE_LEN, TAG_LEN};
use fuzz_support::{Rng, mutate_json, mutate_text, nested, random_json, random_string, run};
use serde_json::{Value, json};

fn encryptor() -> Aes256GcmEncryptor {
    let e = Aes256GcmEncryptor::new("k1", &[7u8; 32]);
    e.add_key("k2", &[9u8; 32]).unwrap();
    e
}

/// A base64 variant of `bytes`: what a hand-edited or foreign envelope
/// might carry.
fn base64_variant(rng: &mut Rng, bytes: &[u8]) -> String {
    let text = STANDARD.encode(bytes);
    match rng.below(8) {
        0 => STANDARD_NO_PAD.encode(bytes),
        1 => URL_SAFE.encode(bytes),
        2 => format!(" {text}"),
        3 => format!("{text}\n"),
        4 => {
            let at = rng.below(text.len() + 1);
            format!(
                "{}{}{}",
                &text[..at],
                rng.pick(&["\n", " ", "=", "\r\n", "é"]),
                &text[at..]
            )
        }
        5 => format!("{text}="),
        6 => text.to_lowercase(),
        _ => mutate_text(rng, &text),
    }
}

/// A tampered copy of a real envelope.
fn tamper(rng: &mut Rng, envelope: &Value) -> Value {
    let mut v = envelope.clone();
    let sealed = STANDARD.decode(v["ciphertext"].as_str().unwrap()).unwrap();
    match rng.below(9) {
        0 => mutate_json(rng, &mut v),
        1 => v["nonce"] = json!(base64_variant(rng, &[0u8; NONCE_LEN])),
        2 => {
            // every nonce length from empty to well past 12 bytes
            let n = rng.below(24);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            v["nonce"] = json!(STANDARD.encode(bytes));
        }
        3 => {
            // the tag cut short, or only the tag, or nothing
            let keep = rng.below(sealed.len() + 1).min(TAG_LEN + 2);
            v["ciphertext"] = json!(STANDARD.encode(&sealed[..keep]));
        }
        4 => v["ciphertext"] = json!(base64_variant(rng, &sealed)),
        5 => {
            let mut bytes = sealed.clone();
            let i = rng.below(bytes.len());
            bytes[i] ^= 1 << rng.below(8);
            v["ciphertext"] = json!(STANDARD.encode(bytes));
        }
        6 => v["keyId"] = json!(rng.pick(&["k2", "", "nope", "K1", "k1\u{0}"]).to_string()),
        7 => {
            v["version"] = rng
                .pick(&[
                    json!(0),
                    json!(2),
                    json!(u64::MAX),
                    json!(-1),
                    json!(1.0),
                    json!("1"),
                ])
                .clone()
        }
        _ => {
            let field = *rng.pick(&["encrypted", "version", "keyId", "nonce", "ciphertext"]);
            v[field] = fuzz_support::hostile_value(rng);
        }
    }
    v
}

#[test]
fn tampered_envelopes_are_refused_with_decryption_errors() {
    let enc = encryptor();
    let mut refused = 0;
    run("crypto/tamper", 1500, |rng| {
        let payload = random_json(rng, 3);
        let id = random_string(rng);
        let envelope = enc.encrypt(&id, &payload).unwrap();
        assert!(EncryptedPayload::is_encrypted(&envelope));
        assert_eq!(enc.decrypt(&id, &envelope).unwrap(), payload);
        let parsed = EncryptedPayload::from_value(&envelope).unwrap();
        assert_eq!(parsed.to_value(), envelope);

        let tampered = tamper(rng, &envelope);
        // the shape check and the parser never panic
        let shaped = EncryptedPayload::is_encrypted(&tampered);
        match EncryptedPayload::from_value(&tampered) {
            Ok(p) => {
                assert!(shaped, "parsed but not shaped: {tampered}");
                assert_eq!(p.to_value()["keyId"], tampered["keyId"]);
            }
            Err(Error::Decryption(_)) => {}
            Err(other) => panic!("not a decryption error: {other:?}"),
        }
        let other_id = if rng.one_in(4) {
            random_string(rng)
        } else {
            id.clone()
        };
        match enc.decrypt(&other_id, &tampered) {
            // only an edit that changes nothing that is authenticated
            // (an unknown extra field, say) may still decrypt, and then
            // to the very same payload
            Ok(back) => assert_eq!(back, payload, "{tampered}"),
            Err(Error::Decryption(msg)) => {
                refused += 1;
                assert!(!msg.is_empty());
            }
            Err(other) => panic!("not a decryption error: {other:?}"),
        }
        match enc.decrypt_bytes(&other_id, &tampered) {
            Ok(bytes) => assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), payload),
            Err(Error::Decryption(_)) => {}
            Err(other) => panic!("not a decryption error: {other:?}"),
        }
    });
    assert!(refused > 0);
}

#[test]
fn random_values_are_never_mistaken_for_envelopes() {
    let enc = encryptor();
    run("crypto/random", 4000, |rng| {
        let value = random_json(rng, 4);
        let _ = EncryptedPayload::is_encrypted(&value);
        match enc.decrypt("evt-1", &value) {
            Ok(v) => panic!("random value decrypted to {v}: {value}"),
            Err(Error::Decryption(_)) => {}
            Err(other) => panic!("not a decryption error: {other:?}"),
        }
    });
}

#[test]
fn payloads_round_trip_up_to_the_depth_limit_and_are_refused_beyond() {
    let enc = encryptor();
    run("crypto/depth", 40, |rng| {
        let levels = *rng.pick(&[0, 1, MAX_PAYLOAD_DEPTH, MAX_PAYLOAD_DEPTH + 1, 1_000]);
        let payload = nested(levels, rng.one_in(2), json!("leaf"));
        match enc.encrypt("evt-deep", &payload) {
            Ok(envelope) => {
                assert!(levels <= MAX_PAYLOAD_DEPTH);
                assert_eq!(enc.decrypt("evt-deep", &envelope).unwrap(), payload);
            }
            Err(Error::Encryption(_)) => assert!(levels > MAX_PAYLOAD_DEPTH),
            Err(other) => panic!("{levels}: {other:?}"),
        }
    });
}

#[test]
fn key_text_is_decoded_strictly_and_never_echoed() {
    run("crypto/keys", 3000, |rng| {
        let key: [u8; 32] = std::array::from_fn(|_| rng.byte());
        let valid = STANDARD.encode(key);
        let text = match rng.below(5) {
            0 => valid.clone(),
            1 => base64_variant(rng, &key),
            2 => {
                let n = rng.below(48);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                base64_variant(rng, &bytes)
            }
            3 => random_string(rng),
            _ => mutate_text(rng, &valid),
        };
        match EncryptionKey::from_base64(&text) {
            Ok(k) => {
                // only standard base64 of 32 bytes, surrounded by ASCII
                // whitespace at most
                let decoded = STANDARD.decode(text.trim_ascii()).unwrap();
                assert_eq!(k.as_bytes().as_slice(), decoded.as_slice());
                assert_eq!(
                    EncryptionKey::from_base64(&k.to_base64())
                        .unwrap()
                        .as_bytes(),
                    k.as_bytes()
                );
            }
            Err(Error::InvalidConfig { reason, .. }) => {
                if text.len() >= 24 {
                    let secret = &valid[..16];
                    assert!(!reason.contains(secret), "echoes key material: {reason}");
                    let trimmed = text.trim_ascii();
                    if trimmed.len() >= 16 && trimmed.is_char_boundary(16) {
                        assert!(
                            !reason.contains(&trimmed[..16]),
                            "echoes its input: {reason}"
                        );
                    }
                }
            }
            Err(other) => panic!("{text:?}: not an InvalidConfig error: {other:?}"),
        }
    });
}
