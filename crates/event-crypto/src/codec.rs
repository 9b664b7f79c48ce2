//! The base64 engine for envelope ciphertexts.
//!
//! Envelopes carry their ciphertext as standard, padded base64 (RFC 4648,
//! `+`/`/`, `=` padding), decoded strictly: non-canonical trailing bits,
//! missing or misplaced padding and any character outside the alphabet are
//! errors.
//!
//! Where the `base64` crate has a SIMD engine (x86-64, detected at run time:
//! AVX2; aarch64 with NEON) the ciphertext goes through it: encoding and
//! decoding are then 3–5× faster than the scalar engine, which otherwise
//! costs more than AES-GCM itself (see `benches/crypto.rs`). The SIMD engine
//! uses the same alphabet and configuration as [`STANDARD`], produces the
//! same text, accepts exactly the same input and reports the same errors
//! (it only accelerates whole, valid quads and leaves everything else,
//! including every error, to the scalar decoder); without the CPU feature
//! it *is* the scalar engine. The unsafe SIMD code lives in the `base64`
//! crate (its default `simd-unsafe` feature), not here.
//!
//! [`STANDARD`]: base64::engine::general_purpose::STANDARD

#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
mod imp {
    use std::sync::LazyLock;

    use base64::engine::{Simd, general_purpose::PAD};

    /// Detects the instruction set once per process.
    static ENGINE: LazyLock<Simd> = LazyLock::new(|| Simd::standard(PAD));

    /// Standard padded base64 with strict decoding, SIMD-accelerated.
    pub(crate) fn engine() -> &'static Simd {
        &ENGINE
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
)))]
mod imp {
    use base64::engine::GeneralPurpose;
    use base64::engine::general_purpose::STANDARD;

    /// Standard padded base64 with strict decoding (scalar on this target).
    pub(crate) fn engine() -> &'static GeneralPurpose {
        &STANDARD
    }
}

pub(crate) use imp::engine;

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::engine;

    /// Deterministic pseudo-random bytes.
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn same_text_as_the_standard_engine_at_every_length() {
        let lengths = (0..600).chain([1023, 1024, 1040, 4096, 65_536 + 16, 100_001]);
        for len in lengths {
            let data = bytes(len, len as u64);
            let text = engine().encode(&data);
            assert_eq!(text, STANDARD.encode(&data), "len {len}");
            assert_eq!(engine().decode(&text).unwrap(), data, "len {len}");
        }
    }

    /// Every kind of bad input, placed both in the SIMD-decoded bulk and in
    /// the scalar tail: the SIMD engine must reject exactly what the scalar
    /// engine rejects, with the same error.
    #[test]
    fn rejects_exactly_what_the_standard_engine_rejects() {
        for len in [0usize, 1, 2, 3, 47, 48, 200, 1000, 4099] {
            let good = STANDARD.encode(bytes(len, 7));
            let mut cases: Vec<String> = Vec::new();
            for pos in [0, 1, good.len() / 2, good.len().saturating_sub(5)] {
                for bad in [b'!', b'-', b'_', b'=', b' ', b'\n', 0x80, b'.'] {
                    if pos < good.len() {
                        let mut text = good.clone().into_bytes();
                        text[pos] = bad;
                        cases.push(String::from_utf8_lossy(&text).into_owned());
                    }
                }
            }
            // Padding removed, doubled, or trailing bits set.
            cases.push(good.trim_end_matches('=').to_owned());
            cases.push(format!("{good}="));
            cases.push(format!("{good}=="));
            cases.push(format!("{good}A"));
            cases.push(format!("{good}AB"));
            if let Some(stripped) = good.strip_suffix("==") {
                let mut text = stripped.as_bytes().to_vec();
                if let Some(last) = text.last_mut() {
                    *last = b'B';
                }
                cases.push(format!("{}==", String::from_utf8_lossy(&text)));
            }
            for case in cases {
                assert_eq!(
                    engine().decode(&case),
                    STANDARD.decode(&case),
                    "len {len}: {case:?}"
                );
            }
        }
    }
}
