//! Encrypt + decrypt through [`Aes256GcmEncryptor`] against raw `aes-gcm` on
//! the same bytes, measured in the same run.
//!
//! For each payload size (256 B, 1 KiB, 64 KiB of compact JSON):
//!
//! - `raw_aes_gcm`: fresh random nonce, `Aes256Gcm::encrypt` + `decrypt` of
//!   the payload's serialized bytes with the same associated data (the
//!   baseline: what an application calling `aes-gcm` directly pays);
//! - `raw_aes_gcm_base64` (x86-64 and aarch64 with NEON): `raw_aes_gcm` plus
//!   `ciphertext || tag` to a base64 `String` and back with the `base64`
//!   crate's SIMD engine (AVX2 or NEON): what a JSON envelope built on that
//!   crate pays over these bytes. The encryptor's own codec adds 48-byte
//!   blocks in AVX-512 VBMI where the CPU has it (see `src/codec.rs`), so
//!   on such a CPU `encryptor_bytes` can beat this row;
//! - `encryptor`: `EventEncryptor::encrypt` + `decrypt`, `Value` to envelope
//!   `Value` and back; this adds JSON serialization of the payload, base64 of
//!   the ciphertext and nonce, the envelope, and JSON parsing of the
//!   decrypted bytes back into a `Value`;
//! - `encryptor_bytes`: [`Aes256GcmEncryptor::encrypt_bytes`] +
//!   [`decrypt_bytes`](Aes256GcmEncryptor::decrypt_bytes) of the same bytes:
//!   our crypto path (nonce, AAD, key ring, base64, envelope) without JSON
//!   serialization of the payload, the envelope as a JSON `Value` (what an
//!   event carries: an object of five fields, eight allocations);
//! - `encryptor_payload`: [`Aes256GcmEncryptor::encrypt_bytes`] +
//!   [`decrypt_payload`](Aes256GcmEncryptor::decrypt_payload): the same, the
//!   envelope kept as the [`EncryptedPayload`](event_crypto::EncryptedPayload)
//!   struct (what an application storing envelopes itself, through serde,
//!   handles);
//! - `json_only`: serialize + parse the payload with no crypto, the part of
//!   the `encryptor` cost that any `Value -> Value` encryptor must pay;
//! - `base64_simd` / `base64_scalar`: base64 encode + strict decode of
//!   `ciphertext || tag` alone (payload size + 16 bytes), with the `base64`
//!   crate's runtime-detected SIMD engine (what the encryptor falls back to
//!   without AVX-512 VBMI, and uses for what is not a whole block) and with
//!   its scalar `STANDARD` engine, no crypto;
//! - then a paired report (`paired/...` lines): `raw_aes_gcm`,
//!   `raw_aes_gcm_base64`, `encryptor_bytes` and `encryptor_payload` run
//!   alternately, round after
//!   round, and the median of the per-round ratios is printed, which is
//!   steadier than separate criterion runs on a shared machine. The report
//!   says whether the encryptor ran its AVX-512 VBMI blocks.
//!
//! Run: `cargo bench -p event-crypto --bench crypto -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use event_core::EventEncryptor;
use event_crypto::Aes256GcmEncryptor;
use serde_json::{Value, json};
use std::time::Instant;

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

/// Our encryptor, the raw cipher with the same key, and associated data of
/// the same size as ours for the raw baseline.
fn setup() -> (Aes256GcmEncryptor, Aes256Gcm, Vec<u8>) {
    let encryptor = Aes256GcmEncryptor::new("k1", &KEY);
    let raw = Aes256Gcm::new((&KEY).into());
    let aad = [
        b"a3s-event/aes-256-gcm/v1".as_slice(),
        &[0u8; 8],
        b"k1",
        &[0u8; 8],
        EVENT_ID.as_bytes(),
    ]
    .concat();
    (encryptor, raw, aad)
}

/// `raw_aes_gcm`: fresh nonce, encrypt, decrypt.
fn raw_round_trip(raw: &Aes256Gcm, aad: &[u8], bytes: &[u8]) -> Vec<u8> {
    let nonce = Nonce::generate();
    let ct = raw
        .encrypt(&nonce, Payload { msg: bytes, aad })
        .expect("encrypt");
    raw.decrypt(&nonce, Payload { msg: &ct, aad })
        .expect("decrypt")
}

/// `raw_aes_gcm_base64`: [`raw_round_trip`] with the ciphertext taken to
/// base64 text and back in between (the `base64` crate's SIMD engine).
fn crate_base64_round_trip(raw: &Aes256Gcm, aad: &[u8], bytes: &[u8]) -> Vec<u8> {
    let nonce = Nonce::generate();
    let ct = raw
        .encrypt(&nonce, Payload { msg: bytes, aad })
        .expect("encrypt");
    let text: String = engine().encode(&ct);
    let ct = engine().decode(black_box(&text)).expect("decode");
    raw.decrypt(&nonce, Payload { msg: &ct, aad })
        .expect("decrypt")
}

/// `encryptor_bytes`: seal to the envelope `Value` and open it again.
fn ours_round_trip(encryptor: &Aes256GcmEncryptor, bytes: &[u8]) -> Vec<u8> {
    let sealed = encryptor
        .encrypt_bytes(EVENT_ID, bytes)
        .expect("encrypt")
        .into_value();
    encryptor.decrypt_bytes(EVENT_ID, &sealed).expect("decrypt")
}

/// `encryptor_payload`: seal to the envelope struct and open it again.
fn ours_payload_round_trip(encryptor: &Aes256GcmEncryptor, bytes: &[u8]) -> Vec<u8> {
    let sealed = encryptor.encrypt_bytes(EVENT_ID, bytes).expect("encrypt");
    encryptor
        .decrypt_payload(EVENT_ID, black_box(&sealed))
        .expect("decrypt")
}

/// The `base64` crate's engine the encryptor builds on (see `src/codec.rs`):
/// SIMD where the crate has it, its scalar engine elsewhere; the CPU is
/// probed once.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
fn engine() -> &'static base64::engine::Simd {
    static ENGINE: std::sync::LazyLock<base64::engine::Simd> = std::sync::LazyLock::new(|| {
        base64::engine::Simd::standard(base64::engine::general_purpose::PAD)
    });
    &ENGINE
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
)))]
fn engine() -> &'static base64::engine::GeneralPurpose {
    &STANDARD
}

fn bench(c: &mut Criterion) {
    let (encryptor, raw, aad) = setup();

    let mut group = c.benchmark_group("encrypt_decrypt");
    group.sample_size(30);
    for (label, size) in [("256B", 256usize), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let value = payload(size);
        let bytes = serde_json::to_vec(&value).expect("serializable");
        group.throughput(Throughput::Bytes(bytes.len() as u64));

        group.bench_with_input(
            BenchmarkId::new("raw_aes_gcm", label),
            &bytes,
            |b, bytes| b.iter(|| black_box(raw_round_trip(&raw, &aad, bytes))),
        );

        group.bench_with_input(
            BenchmarkId::new("raw_aes_gcm_base64", label),
            &bytes,
            |b, bytes| b.iter(|| black_box(crate_base64_round_trip(&raw, &aad, bytes))),
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
            |b, bytes| b.iter(|| black_box(ours_round_trip(&encryptor, bytes))),
        );

        group.bench_with_input(
            BenchmarkId::new("encryptor_payload", label),
            &bytes,
            |b, bytes| b.iter(|| black_box(ours_payload_round_trip(&encryptor, bytes))),
        );

        let sealed_len = bytes.len() + 16;
        let ciphertext: Vec<u8> = bytes.iter().copied().cycle().take(sealed_len).collect();
        // The `base64` crate's engine the encryptor builds on (see src/codec.rs).
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

/// Paired report: the raw baseline, raw with the base64 crate and our two
/// bytes paths run alternately, round after round (the order rotating), so
/// load changes on a shared machine hit all four alike; prints the median
/// of the per-round ratios against the raw baseline.
fn paired_report() {
    const ROUNDS: usize = 31;
    let (encryptor, raw, aad) = setup();
    #[cfg(target_arch = "x86_64")]
    let blocks = std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vbmi");
    #[cfg(not(target_arch = "x86_64"))]
    let blocks = false;
    println!("paired: the encryptor's base64 runs AVX-512 VBMI blocks on this CPU: {blocks}");
    for (label, size, iters) in [
        ("256B", 256usize, 4000u32),
        ("1KiB", 1024, 2000),
        ("64KiB", 64 * 1024, 60),
    ] {
        let bytes = serde_json::to_vec(&payload(size)).expect("serializable");
        let cases: [&dyn Fn() -> Vec<u8>; 4] = [
            &|| raw_round_trip(&raw, &aad, &bytes),
            &|| crate_base64_round_trip(&raw, &aad, &bytes),
            &|| ours_round_trip(&encryptor, &bytes),
            &|| ours_payload_round_trip(&encryptor, &bytes),
        ];
        // per round: each case's time; ratios are raw's time over the case's
        let mut ratios: [Vec<f64>; 4] = Default::default();
        for round in 0..ROUNDS {
            let mut t = [0f64; 4];
            for i in 0..4 {
                let case = (i + round) % 4;
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cases[case]());
                }
                t[case] = start.elapsed().as_secs_f64();
            }
            for (case, ratio) in ratios.iter_mut().enumerate() {
                ratio.push(t[0] / t[case]);
            }
        }
        let [_, with_crate, value, payload] = ratios.map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        });
        println!(
            "paired/{label} ({ROUNDS} rounds, median of per-round ratios against raw_aes_gcm): \
             encryptor_bytes (envelope Value) {value:.2}x; encryptor_payload (envelope struct) \
             {payload:.2}x; raw_aes_gcm_base64 (the base64 crate's SIMD engine) {with_crate:.2}x"
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    // only under `cargo bench` (which passes `--bench`): `cargo test --benches`
    // (CI's smoke run) and `cargo bench -- --test` run each case once instead
    if is_measuring() {
        paired_report();
    }
    Criterion::default().configure_from_args().final_summary();
}

/// Whether this is a measuring run (`cargo bench`), as criterion decides:
/// `--bench` given and neither `--test` nor `--list`.
fn is_measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}
