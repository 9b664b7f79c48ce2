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

use base64::Engine as _;

/// Data up to this many bytes (payloads up to ~2 KiB, whole) is encoded
/// from a stack copy in one call; longer data takes about a dozen chunks
/// first (a chunk costs a call and a short scalar tail).
const TAIL: usize = 2048;

/// Why [`encode_tail_in_place`] could not encode (never expected: a bug).
#[derive(Debug)]
pub(crate) struct LayoutError;

/// Encodes `buf[start..]` as padded standard base64 into `buf` itself and
/// returns it as the text, without a second buffer.
///
/// `buf.len()` must be exactly the encoded length of the `buf.len() - start`
/// data bytes at its end. The output grows 4/3 as fast as the input is
/// consumed and starts `start` (about a third of the data) ahead of it, so
/// encoding front to back in chunks that fit in the gap between the written
/// text and the unread data never overwrites unread data; each chunk is a
/// whole number of 3-byte groups, so the chunks concatenate to the one-shot
/// encoding. The gap shrinks by a quarter per chunk; the last two KiB are
/// encoded from a stack copy.
pub(crate) fn encode_tail_in_place(mut buf: Vec<u8>, start: usize) -> Result<String, LayoutError> {
    let total = buf.len();
    let data_len = total.checked_sub(start).ok_or(LayoutError)?;
    if base64::encoded_len(data_len, true) != Some(total) {
        return Err(LayoutError);
    }
    let mut read = start;
    let mut written = 0;
    while total - read > TAIL {
        // Whole groups whose text fits in the gap (at least a quarter of
        // the remaining data, by the length check above).
        let fits = (read - written) / 4 * 3;
        let chunk = fits.min(total - read) / 3 * 3;
        let (text, data) = buf.split_at_mut(read);
        let text = text.get_mut(written..).ok_or(LayoutError)?;
        let data = data.get(..chunk).ok_or(LayoutError)?;
        written += engine().encode_slice(data, text).map_err(|_| LayoutError)?;
        read += chunk;
        if chunk == 0 {
            return Err(LayoutError);
        }
    }
    let mut rest = [0u8; TAIL];
    let rest = &mut rest[..total - read];
    rest.copy_from_slice(&buf[read..]);
    let text = buf.get_mut(written..).ok_or(LayoutError)?;
    written += engine()
        .encode_slice(&*rest, text)
        .map_err(|_| LayoutError)?;
    if written != total {
        return Err(LayoutError);
    }
    String::from_utf8(buf).map_err(|_| LayoutError)
}

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
    fn in_place_encoding_matches_the_standard_engine() {
        let lengths = (0..2000).chain([4095, 4096, 65_536 + 16, 100_001, 1 << 20]);
        for len in lengths {
            let data = bytes(len, !(len as u64));
            let total = base64::encoded_len(len, true).unwrap();
            let start = total - len;
            let mut buf = vec![0u8; start];
            buf.extend_from_slice(&data);
            let text = super::encode_tail_in_place(buf, start).unwrap();
            assert_eq!(text, STANDARD.encode(&data), "len {len}");
        }
        // A buffer of the wrong size is an error, not a panic or bad text.
        assert!(super::encode_tail_in_place(vec![0; 10], 2).is_err());
        assert!(super::encode_tail_in_place(vec![0; 10], 11).is_err());
        assert!(super::encode_tail_in_place(vec![0; 8], 0).is_err());
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

    /// Exhaustive over short texts, at every data length up to 120 bytes
    /// and at 160 and 200 (the SIMD bulk starts at 64 characters): each
    /// byte that matters (the other alphabet, padding, whitespace,
    /// non-ASCII, the neighbours of each alphabet range) written over, and
    /// inserted at, every position; and every possible last symbol
    /// (canonical and non-canonical trailing bits) in each padding case.
    /// The result is the scalar engine's, byte for byte or error for error.
    #[test]
    fn agrees_with_the_standard_engine_on_every_short_edit() {
        const PROBES: &[u8] = b"-_= \n\r\t\x00\x7f\x80\xff.,:@[`{*/+09AZaz";
        for len in (0..=120usize).chain([160, 200]) {
            let good = STANDARD.encode(bytes(len, 3 * len as u64 + 1)).into_bytes();
            for pos in 0..good.len() {
                for &probe in PROBES {
                    let mut replaced = good.clone();
                    replaced[pos] = probe;
                    assert_eq!(
                        engine().decode(&replaced),
                        STANDARD.decode(&replaced),
                        "len {len}, byte {probe:#04x} at {pos}"
                    );
                    let mut inserted = good.clone();
                    inserted.insert(pos, probe);
                    assert_eq!(
                        engine().decode(&inserted),
                        STANDARD.decode(&inserted),
                        "len {len}, byte {probe:#04x} inserted at {pos}"
                    );
                }
            }
            // Every symbol in the last data position: canonical and
            // non-canonical trailing bits, in each padding case.
            let last = good.iter().rposition(|&b| b != b'=');
            if let Some(last) = last {
                for symbol in (b'A'..=b'Z')
                    .chain(b'a'..=b'z')
                    .chain(b'0'..=b'9')
                    .chain(*b"+/")
                {
                    let mut text = good.clone();
                    text[last] = symbol;
                    assert_eq!(
                        engine().decode(&text),
                        STANDARD.decode(&text),
                        "len {len}, last symbol {}",
                        symbol as char
                    );
                }
            }
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
