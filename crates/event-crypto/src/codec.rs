//! The base64 codec for envelope ciphertexts.
//!
//! Envelopes carry their ciphertext as standard, padded base64 (RFC 4648,
//! `+`/`/`, `=` padding), decoded strictly: non-canonical trailing bits,
//! missing or misplaced padding and any character outside the alphabet are
//! errors.
//!
//! Two layers, both producing the text of the `base64` crate's
//! [`STANDARD`] engine and accepting exactly what it accepts, with the same
//! errors:
//!
//! - **Blocks** (x86-64 with AVX-512 VBMI, detected at run time; see
//!   [`vbmi`]): 48 bytes to 64 characters and back, several times faster
//!   than the next layer. Blocks have no padding and no partial group, and
//!   a block with any byte outside the alphabet is not decoded there: the
//!   rest of the text, from that block on, goes to the next layer, which
//!   decides the error (its offsets are then shifted to count from the
//!   start of the text).
//! - **The `base64` crate** for everything else: its SIMD engine where it
//!   has one (x86-64 with AVX2, detected at run time; aarch64 with NEON),
//!   its scalar engine otherwise. Its SIMD engine only accelerates whole,
//!   valid quads and leaves every error to its scalar decoder. That unsafe
//!   code lives in the `base64` crate (its default `simd-unsafe` feature).
//!
//! Without the base64 text these layers cost more than AES-GCM itself
//! (see `benches/crypto.rs`, rows `base64_*`).
//!
//! [`STANDARD`]: base64::engine::general_purpose::STANDARD

#[cfg(target_arch = "x86_64")]
mod vbmi;

/// The block layer where the CPU has none: nothing is done in blocks.
#[cfg(not(target_arch = "x86_64"))]
mod vbmi {
    #[cfg(test)]
    pub(super) fn available() -> bool {
        false
    }
    pub(super) fn encode_blocks(_: &[u8], _: &mut [u8]) -> (usize, usize) {
        (0, 0)
    }
    pub(super) fn decode_blocks(_: &[u8], _: &mut Vec<u8>) -> usize {
        0
    }
    #[cfg(test)]
    pub(super) fn without<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

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

use base64::{DecodeError, EncodeSliceError, Engine as _};

/// Whether this CPU encodes and decodes in 48-byte blocks (AVX-512 VBMI).
#[cfg(test)]
pub(crate) fn blocks_available() -> bool {
    vbmi::available()
}

/// Encodes `data` as padded standard base64 into the front of `out`, which
/// must hold its encoded length; returns the characters written.
pub(crate) fn encode_slice(data: &[u8], out: &mut [u8]) -> Result<usize, EncodeSliceError> {
    let (read, written) = vbmi::encode_blocks(data, out);
    let rest = data.get(read..).unwrap_or_default();
    let out = out.get_mut(written..).unwrap_or_default();
    Ok(written + engine().encode_slice(rest, out)?)
}

/// The standard alphabet, for [`encode_nonce`].
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A 12-byte nonce as its 16 base64 characters (no padding: 12 bytes are
/// four whole groups): the standard engine's text, without its set-up,
/// which costs more than these four groups.
pub(crate) fn encode_nonce(nonce: &[u8; 12]) -> String {
    let mut text = String::with_capacity(16);
    for group in nonce.chunks_exact(3) {
        let bits = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        for shift in [18, 12, 6, 0] {
            text.push(char::from(ALPHABET[(bits >> shift) as usize & 63]));
        }
    }
    text
}

/// Decodes padded standard base64 strictly, appending the bytes to `out`.
///
/// # Errors
/// The [`STANDARD`](base64::engine::general_purpose::STANDARD) engine's
/// error for the same text, offsets counted from its start. `out` then
/// holds an unspecified prefix of the data.
pub(crate) fn decode_vec(text: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let done = vbmi::decode_blocks(text, out);
    let rest = text.get(done..).unwrap_or_default();
    engine()
        .decode_vec(rest, out)
        .map_err(|err| offset_by(err, done))
}

/// An error about `text[by..]` as one about `text`.
fn offset_by(err: DecodeError, by: usize) -> DecodeError {
    match err {
        DecodeError::InvalidByte(at, byte) => DecodeError::InvalidByte(at + by, byte),
        // counted in alphabet characters: the `by` before were all such
        DecodeError::InvalidLength(len) => DecodeError::InvalidLength(len + by),
        DecodeError::InvalidLastSymbol {
            offset,
            symbol,
            symbol_value,
        } => DecodeError::InvalidLastSymbol {
            offset: offset + by,
            symbol,
            symbol_value,
        },
        DecodeError::InvalidPadding => DecodeError::InvalidPadding,
    }
}

/// Data up to this many bytes (payloads up to ~2 KiB, whole) is encoded
/// from a stack copy in one call; longer data takes about a dozen chunks
/// first (a chunk costs a call, and without AVX-512 VBMI a short scalar
/// tail).
const TAIL: usize = 2048;

/// The stack copy's size for short tails, so that sealing a payload of a
/// few hundred bytes does not zero a [`TAIL`]-byte copy each time.
const SHORT_TAIL: usize = 512;

/// Encodes `buf[read..]` (at most `N` bytes) from a stack copy into
/// `buf[written..]`; returns the characters written.
fn encode_from_copy<const N: usize>(
    buf: &mut [u8],
    read: usize,
    written: usize,
) -> Result<usize, LayoutError> {
    let mut copy = [0u8; N];
    let data = buf.get(read..).ok_or(LayoutError)?;
    let copy = copy.get_mut(..data.len()).ok_or(LayoutError)?;
    copy.copy_from_slice(data);
    let text = buf.get_mut(written..).ok_or(LayoutError)?;
    encode_slice(copy, text).map_err(|_| LayoutError)
}

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
/// whole number of 48-byte blocks (and so of 3-byte groups), so the chunks
/// concatenate to the one-shot encoding. The gap shrinks by a quarter per
/// chunk; the last bytes (at most [`TAIL`]) are encoded from a stack copy.
pub(crate) fn encode_tail_in_place(mut buf: Vec<u8>, start: usize) -> Result<String, LayoutError> {
    let total = buf.len();
    let data_len = total.checked_sub(start).ok_or(LayoutError)?;
    if base64::encoded_len(data_len, true) != Some(total) {
        return Err(LayoutError);
    }
    let mut read = start;
    let mut written = 0;
    while total - read > TAIL {
        // Whole blocks whose text fits in the gap (the gap is a third of
        // the remaining data, by the length check above, so many blocks
        // fit while more than TAIL bytes remain).
        let fits = (read - written) / 4 * 3;
        let chunk = fits.min(total - read) / 48 * 48;
        let (text, data) = buf.split_at_mut(read);
        let text = text.get_mut(written..).ok_or(LayoutError)?;
        let data = data.get(..chunk).ok_or(LayoutError)?;
        written += encode_slice(data, text).map_err(|_| LayoutError)?;
        read += chunk;
        if chunk == 0 {
            return Err(LayoutError);
        }
    }
    written += if total - read <= SHORT_TAIL {
        encode_from_copy::<SHORT_TAIL>(&mut buf, read, written)?
    } else {
        encode_from_copy::<TAIL>(&mut buf, read, written)?
    };
    if written != total {
        return Err(LayoutError);
    }
    String::from_utf8(buf).map_err(|_| LayoutError)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use base64::DecodeError;

    use super::ALPHABET;

    /// Runs `check` with the AVX-512 VBMI blocks (where the CPU has them)
    /// and without, so that both layers are tested on such a CPU.
    fn in_both_modes(check: impl Fn()) {
        check();
        super::vbmi::without(&check);
    }

    /// Our codec's encoding of `data`.
    fn encode(data: &[u8]) -> String {
        let mut out = vec![0u8; base64::encoded_len(data.len(), true).unwrap()];
        let written = super::encode_slice(data, &mut out).unwrap();
        assert_eq!(written, out.len());
        String::from_utf8(out).unwrap()
    }

    /// Our codec's decoding of `text`.
    fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        super::decode_vec(text.as_ref(), &mut out).map(|()| out)
    }

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

    /// The block layer runs wherever the CPU has its instructions, so the
    /// agreement tests below exercise it on such a machine (as CI's).
    #[test]
    fn blocks_run_where_the_cpu_has_avx512_vbmi() {
        #[cfg(target_arch = "x86_64")]
        let cpu = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vbmi");
        #[cfg(not(target_arch = "x86_64"))]
        let cpu = false;
        assert_eq!(super::blocks_available(), cpu);
        assert!(!super::vbmi::without(super::blocks_available));
        eprintln!("base64 blocks (AVX-512 VBMI) on this CPU: {cpu}");
    }

    /// Random data at random lengths up to 9 KiB, with one random byte of
    /// the text replaced in half the cases: same text, same data, same error
    /// (offsets included) as the standard engine.
    #[test]
    fn agrees_with_the_standard_engine_on_random_texts() {
        in_both_modes(|| {
            let mut seed = 0x5eed_u64;
            for round in 0..3000u64 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let len = (seed >> 33) as usize % 9216;
                let data = bytes(len, seed);
                let mut text = encode(&data).into_bytes();
                assert_eq!(text, STANDARD.encode(&data).into_bytes(), "len {len}");
                if round % 2 == 1 && !text.is_empty() {
                    let at = (seed >> 17) as usize % text.len();
                    text[at] = (seed >> 7) as u8;
                }
                assert_eq!(
                    decode(&text),
                    STANDARD.decode(&text),
                    "round {round}, len {len}"
                );
            }
        });
    }

    #[test]
    fn nonces_encode_as_the_standard_engine_does() {
        for seed in 0..2000u64 {
            let nonce: [u8; 12] = bytes(12, seed).try_into().unwrap();
            assert_eq!(
                super::encode_nonce(&nonce),
                STANDARD.encode(nonce),
                "{nonce:?}"
            );
        }
        assert_eq!(super::encode_nonce(&[0xff; 12]), "////////////////");
        assert_eq!(super::encode_nonce(&[0; 12]), "AAAAAAAAAAAAAAAA");
    }

    #[test]
    fn in_place_encoding_matches_the_standard_engine() {
        in_both_modes(|| {
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
        });
    }

    #[test]
    fn same_text_as_the_standard_engine_at_every_length() {
        in_both_modes(|| {
            let lengths = (0..600).chain([1023, 1024, 1040, 4096, 65_536 + 16, 100_001]);
            for len in lengths {
                let data = bytes(len, len as u64);
                let text = encode(&data);
                assert_eq!(text, STANDARD.encode(&data), "len {len}");
                assert_eq!(decode(&text).unwrap(), data, "len {len}");
            }
        });
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
        in_both_modes(|| {
            const PROBES: &[u8] = b"-_= \n\r\t\x00\x7f\x80\xff.,:@[`{*/+09AZaz";
            for len in (0..=120usize).chain([160, 200]) {
                let good = STANDARD.encode(bytes(len, 3 * len as u64 + 1)).into_bytes();
                for pos in 0..good.len() {
                    for &probe in PROBES {
                        let mut replaced = good.clone();
                        replaced[pos] = probe;
                        assert_eq!(
                            decode(&replaced),
                            STANDARD.decode(&replaced),
                            "len {len}, byte {probe:#04x} at {pos}"
                        );
                        let mut inserted = good.clone();
                        inserted.insert(pos, probe);
                        assert_eq!(
                            decode(&inserted),
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
                            decode(&text),
                            STANDARD.decode(&text),
                            "len {len}, last symbol {}",
                            symbol as char
                        );
                    }
                }
            }
        });
    }

    /// Every text up to 300 characters derived from a valid one: each
    /// truncation, each byte that matters (whitespace, padding, the other
    /// alphabets, bytes of 0x80 and above, the neighbours of each alphabet
    /// range) written over, and inserted at, each position near a block
    /// boundary or the end (the main kinds at every position); padding added, removed or doubled; every last symbol; and two
    /// encodings run together (padding in the middle, after whole blocks).
    /// Decoded in both layers, the result is the standard engine's, byte
    /// for byte or error for error.
    #[test]
    fn agrees_with_the_standard_engine_on_every_text_up_to_300_characters() {
        const PROBES: &[u8] =
            b"= \t\n\r\x0b\x0c\x00\x7f\x80\x81\xbf\xc0\xc3\xe2\xfe\xff-_.!,:@[`{*/+09AZaz";
        let check = |text: &[u8], what: &dyn Fn() -> String| {
            assert_eq!(decode(text), STANDARD.decode(text), "{}", what());
        };
        in_both_modes(|| {
            for len in 0..=225usize {
                let good = STANDARD.encode(bytes(len, 7 * len as u64 + 5)).into_bytes();
                for cut in 0..=good.len() {
                    check(&good[..cut], &|| format!("len {len} cut to {cut}"));
                }
                for pos in 0..=good.len() {
                    // every probe near block boundaries and the end, the
                    // main kinds everywhere
                    let near = pos % 64 < 2 || pos % 64 > 61 || pos + 6 > good.len();
                    let probes = if near { PROBES } else { b"= \n\x80\xff-!" };
                    for &probe in probes {
                        if pos < good.len() {
                            let mut replaced = good.clone();
                            replaced[pos] = probe;
                            check(&replaced, &|| format!("len {len}, {probe:#04x} at {pos}"));
                        }
                        let mut inserted = good.clone();
                        inserted.insert(pos, probe);
                        check(&inserted, &|| {
                            format!("len {len}, {probe:#04x} inserted at {pos}")
                        });
                    }
                }
                let bare = good.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
                for pad in 0..=4 {
                    let mut text = good[..bare].to_vec();
                    text.extend(std::iter::repeat_n(b'=', pad));
                    check(&text, &|| format!("len {len} with {pad} padding"));
                }
                if bare > 0 {
                    for symbol in ALPHABET.iter().copied() {
                        let mut text = good.clone();
                        text[bare - 1] = symbol;
                        check(&text, &|| {
                            format!("len {len}, last symbol {}", symbol as char)
                        });
                    }
                }
            }
            for first in [48usize, 49, 50, 96, 97, 98, 144] {
                for second in 0..=8usize {
                    let mut text = STANDARD.encode(bytes(first, 1)).into_bytes();
                    text.extend(STANDARD.encode(bytes(second, 2)).into_bytes());
                    check(&text, &|| format!("{first} then {second} bytes"));
                }
            }
        });
    }

    /// Every kind of bad input, placed both in the SIMD-decoded bulk and in
    /// the scalar tail: the SIMD engine must reject exactly what the scalar
    /// engine rejects, with the same error.
    #[test]
    fn rejects_exactly_what_the_standard_engine_rejects() {
        in_both_modes(|| {
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
                    assert_eq!(decode(&case), STANDARD.decode(&case), "len {len}: {case:?}");
                }
            }
        });
    }
}
