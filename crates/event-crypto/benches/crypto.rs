//! Encrypt + decrypt through [`Aes256GcmEncryptor`] against raw `aes-gcm` on
//! the same bytes, measured in the same run.
//!
//! For each payload size (256 B, 1 KiB, 64 KiB of compact JSON):
//!
//! - `raw_aes_gcm`: fresh random nonce, `Aes256Gcm::encrypt` + `decrypt` of
//!   the payload's serialized bytes with the same associated data (the
//!   baseline: what an application calling `aes-gcm` directly pays);
//! - `encryptor`: `EventEncryptor::encrypt` + `decrypt`, `Value` to envelope
//!   `Value` and back; this adds JSON serialization of the payload, base64 of
//!   the ciphertext and nonce, the envelope, and JSON parsing of the
//!   decrypted bytes back into a `Value`;
//! - `encryptor_bytes`: [`Aes256GcmEncryptor::encrypt_bytes`] +
//!   [`decrypt_bytes`](Aes256GcmEncryptor::decrypt_bytes) of the same bytes:
//!   our crypto path (nonce, AAD, key ring, base64, envelope) without JSON;
//! - `json_only`: serialize + parse the payload with no crypto, the part of
//!   the `encryptor` cost that any `Value -> Value` encryptor must pay;
//! - `base64_simd` / `base64_scalar`: base64 encode + strict decode of
//!   `ciphertext || tag` alone (payload size + 16 bytes), with the `base64`
//!   crate's runtime-detected SIMD engine (what the encryptor uses) and with
//!   its scalar `STANDARD` engine, no crypto: the part of `encryptor_bytes`
//!   that the envelope format (base64 text in JSON) costs on top of
//!   `raw_aes_gcm`.
//!
//! Run: `cargo bench -p event-crypto --bench crypto -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use event_core::EventEncryptor;
use event_crypto::Aes256GcmEncryptor;
use serde_json::{Value, json};

const KEY: [u8; 32] = [0x42; 32];
const EVENT_ID: &str = "evt-6f1c2a8e-3b9d-4c57-9e21-8a0f4d7b5c13";

/// A JSON payload of order records whose compact serialization is about
/// `target` bytes.
fn payload(target: usize) -> Value {
    let mut value = json!({"orderId": "ord-000001", "customer": "c-42", "items": []});
    let mut len = value.to_string().len();
    let mut i = 0u64;
    while len < target {
        let item = json!({
            "sku": format!("SKU-{i:06}"),
            "qty": i % 7 + 1,
            "price": 19.99 + i as f64,
            "note": "gift wrap"
        });
        len += item.to_string().len() + 1;
        if let Some(items) = value["items"].as_array_mut() {
            items.push(item);
        }
        i += 1;
    }
    value
}

fn bench(c: &mut Criterion) {
    let encryptor = Aes256GcmEncryptor::new("k1", &KEY);
    let raw = Aes256Gcm::new((&KEY).into());
    // The raw baseline gets associated data of the same size as ours.
    let aad = [
        b"a3s-event/aes-256-gcm/v1".as_slice(),
        &[0u8; 8],
        b"k1",
        &[0u8; 8],
        EVENT_ID.as_bytes(),
    ]
    .concat();

    let mut group = c.benchmark_group("encrypt_decrypt");
    group.sample_size(30);
    for (label, size) in [("256B", 256usize), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let value = payload(size);
        let bytes = serde_json::to_vec(&value).expect("serializable");
        group.throughput(Throughput::Bytes(bytes.len() as u64));

        group.bench_with_input(
            BenchmarkId::new("raw_aes_gcm", label),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let nonce = Nonce::generate();
                    let ct = raw
                        .encrypt(
                            &nonce,
                            Payload {
                                msg: bytes,
                                aad: &aad,
                            },
                        )
                        .expect("encrypt");
                    let pt = raw
                        .decrypt(
                            &nonce,
                            Payload {
                                msg: &ct,
                                aad: &aad,
                            },
                        )
                        .expect("decrypt");
                    black_box(pt)
                });
            },
        );

        group.bench_with_input(BenchmarkId::new("encryptor", label), &value, |b, value| {
            b.iter(|| {
                let sealed = encryptor.encrypt(EVENT_ID, value).expect("encrypt");
                black_box(encryptor.decrypt(EVENT_ID, &sealed).expect("decrypt"))
            });
        });

        group.bench_with_input(
            BenchmarkId::new("encryptor_bytes", label),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let sealed = encryptor
                        .encrypt_bytes(EVENT_ID, bytes)
                        .expect("encrypt")
                        .into_value();
                    black_box(encryptor.decrypt_bytes(EVENT_ID, &sealed).expect("decrypt"))
                });
            },
        );

        let sealed_len = bytes.len() + 16;
        let ciphertext: Vec<u8> = bytes.iter().copied().cycle().take(sealed_len).collect();
        // The engine the encryptor uses (see src/codec.rs).
        #[cfg(any(
            target_arch = "x86_64",
            all(target_arch = "aarch64", target_feature = "neon")
        ))]
        {
            let simd = base64::engine::Simd::standard(base64::engine::general_purpose::PAD);
            group.bench_with_input(
                BenchmarkId::new("base64_simd", label),
                &ciphertext,
                |b, ciphertext| {
                    b.iter(|| {
                        let text = simd.encode(ciphertext);
                        black_box(simd.decode(&text).expect("decode"))
                    });
                },
            );
        }
        group.bench_with_input(
            BenchmarkId::new("base64_scalar", label),
            &ciphertext,
            |b, ciphertext| {
                b.iter(|| {
                    let text = STANDARD.encode(ciphertext);
                    black_box(STANDARD.decode(&text).expect("decode"))
                });
            },
        );

        group.bench_with_input(BenchmarkId::new("json_only", label), &value, |b, value| {
            b.iter(|| {
                let bytes = serde_json::to_vec(value).expect("serialize");
                black_box(serde_json::from_slice::<Value>(&bytes).expect("parse"))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
