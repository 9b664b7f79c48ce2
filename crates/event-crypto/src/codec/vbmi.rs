//! Base64 of whole blocks with AVX-512 VBMI (x86-64, detected at run time).
//!
//! The only unsafe code in the workspace outside tests: the four 64-byte
//! loads and stores below, each in bounds by the block count computed from
//! the slices' lengths just before. Everything else uses safe intrinsics.
//! Blocks are the easy part of base64: 48 data bytes are exactly 64
//! characters, with no padding and no partial group. The caller hands what
//! is left over (and, when decoding, the first block that is not 64 valid
//! alphabet characters) to the `base64` crate, which therefore decides
//! every error and every padding rule.
//!
//! Encoding a block (48 bytes, 16 groups of 3):
//! 1. `vpermb` places each group `b0 b1 b2` in its own 32-bit lane as the
//!    bytes `b1 b0 b2 b1`: little-endian, the lane's low half is the
//!    big-endian `b0 b1` and its high half the big-endian `b1 b2`;
//! 2. `vpmultishiftqb` copies, into each output byte, the 8 bits of its
//!    64-bit lane starting at a chosen bit: the four 6-bit symbols of a
//!    group start at bits 10, 4, 22 and 16 of its 32-bit lane;
//! 3. `vpermb` with the alphabet as the table turns each byte's low 6 bits
//!    into its character (it ignores the top two).
//!
//! Decoding a block (64 characters, 16 quads):
//! 1. `vpermi2b` looks each character's low 7 bits up in a 128-entry table:
//!    its 6-bit value, or `0x80` for a byte outside the alphabet (including
//!    `=`); an input byte of 128 or more, or a `0x80` from the table, sets
//!    the top bit, and any top bit set in the block ends the fast path;
//! 2. `vpmaddubsw` joins symbol pairs into 12-bit values (`a × 64 + b`),
//!    `vpmaddwd` joins those into the group's 24 bits (`hi × 4096 + lo`);
//! 3. `vpermb` gathers the three data bytes of each 32-bit lane, most
//!    significant first, into 48 contiguous bytes.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512i, _mm512_loadu_si512, _mm512_madd_epi16, _mm512_maddubs_epi16, _mm512_mask_storeu_epi8,
    _mm512_maskz_loadu_epi8, _mm512_movepi8_mask, _mm512_multishift_epi64_epi8, _mm512_or_si512,
    _mm512_permutex2var_epi8, _mm512_permutexvar_epi8, _mm512_set1_epi32, _mm512_storeu_si512,
};
use std::sync::LazyLock;

/// Data bytes per block.
pub(super) const DATA: usize = 48;
/// Characters per block.
pub(super) const TEXT: usize = 64;

/// The low 48 of a register's 64 bytes.
const LOW48: u64 = (1 << DATA) - 1;

/// Whether this CPU runs the block code, probed once per process.
static AVAILABLE: LazyLock<bool> = LazyLock::new(|| {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vbmi")
});

/// Whether the block code runs on this CPU.
pub(super) fn available() -> bool {
    #[cfg(test)]
    if OFF.with(std::cell::Cell::get) {
        return false;
    }
    *AVAILABLE
}

#[cfg(test)]
thread_local! {
    /// Set by [`without`]: the block code is off on this thread.
    static OFF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the block code off on this thread, so that the tests
/// cover the fallback on a CPU that has the instructions too.
#[cfg(test)]
pub(super) fn without<R>(f: impl FnOnce() -> R) -> R {
    OFF.with(|off| off.set(true));
    let result = f();
    OFF.with(|off| off.set(false));
    result
}

/// A 64-byte table, aligned for one load.
#[repr(C, align(64))]
struct Table([u8; 64]);

/// The standard alphabet.
static ALPHABET: Table =
    Table(*b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");

/// Encoding step 1: group `i` (bytes `3i..3i+3`) to lane `i` as `b1 b0 b2 b1`.
static SPREAD: Table = Table({
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 16 {
        let g = 3 * i as u8;
        t[4 * i] = g + 1;
        t[4 * i + 1] = g;
        t[4 * i + 2] = g + 2;
        t[4 * i + 3] = g + 1;
        i += 1;
    }
    t
});

/// Encoding step 2: the bit where each symbol starts in its 64-bit lane
/// (two groups per lane).
static SHIFTS: Table = Table({
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = [10, 4, 22, 16, 42, 36, 54, 48][i % 8];
        i += 1;
    }
    t
});

/// Decoding step 1: the value of each 7-bit character, `0x80` if it is not
/// in the alphabet. Two halves, for the two table registers of `vpermi2b`.
static VALUES: [Table; 2] = {
    let mut t = [0x80u8; 128];
    let mut v = 0;
    while v < 64 {
        t[ALPHABET.0[v] as usize] = v as u8;
        v += 1;
    }
    let mut lo = [0u8; 64];
    let mut hi = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        lo[i] = t[i];
        hi[i] = t[64 + i];
        i += 1;
    }
    [Table(lo), Table(hi)]
};

/// Decoding step 3: output byte `3i + k` is byte `2 - k` of lane `i`.
static GATHER: Table = Table({
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 16 {
        t[3 * i] = 4 * i as u8 + 2;
        t[3 * i + 1] = 4 * i as u8 + 1;
        t[3 * i + 2] = 4 * i as u8;
        i += 1;
    }
    t
});

/// Encodes the leading whole blocks of `data` into `out`, as many as both
/// hold; returns the bytes read and the characters written (0 and 0 when
/// the CPU lacks the instructions).
pub(super) fn encode_blocks(data: &[u8], out: &mut [u8]) -> (usize, usize) {
    if !available() {
        return (0, 0);
    }
    let blocks = (data.len() / DATA).min(out.len() / TEXT);
    // SAFETY: the CPU has AVX-512 F, BW and VBMI (checked above).
    unsafe { encode(data, out, blocks) };
    (blocks * DATA, blocks * TEXT)
}

/// Decodes the leading blocks of `text` that are 64 alphabet characters
/// each, appending their bytes to `out`; stops at the first block with any
/// other byte, and before a partial block. Returns the characters consumed.
pub(super) fn decode_blocks(text: &[u8], out: &mut Vec<u8>) -> usize {
    if !available() {
        return 0;
    }
    let blocks = text.len() / TEXT;
    out.reserve(blocks * DATA);
    // SAFETY: the CPU has AVX-512 F, BW and VBMI (checked above).
    let decoded = unsafe { decode(text, out, blocks) };
    decoded * TEXT
}

/// Loads a table.
#[target_feature(enable = "avx512f")]
fn table(t: &Table) -> __m512i {
    // SAFETY: `t` is 64 readable bytes.
    unsafe { _mm512_loadu_si512(t.0.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn encode(data: &[u8], out: &mut [u8], blocks: usize) {
    assert!(blocks * DATA <= data.len() && blocks * TEXT <= out.len());
    let (spread, shifts, alphabet) = (table(&SPREAD), table(&SHIFTS), table(&ALPHABET));
    for block in 0..blocks {
        // SAFETY: bytes `48 * block ..+48` of `data` exist (assert above);
        // the mask reads only those.
        let bytes =
            unsafe { _mm512_maskz_loadu_epi8(LOW48, data.as_ptr().add(block * DATA).cast()) };
        let groups = _mm512_permutexvar_epi8(spread, bytes);
        let symbols = _mm512_multishift_epi64_epi8(shifts, groups);
        let chars = _mm512_permutexvar_epi8(symbols, alphabet);
        // SAFETY: bytes `64 * block ..+64` of `out` exist (assert above).
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(block * TEXT).cast(), chars) };
    }
}

/// Decodes up to `blocks` blocks; returns how many were valid and decoded.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn decode(text: &[u8], out: &mut Vec<u8>, blocks: usize) -> usize {
    assert!(blocks * TEXT <= text.len() && out.capacity() - out.len() >= blocks * DATA);
    let (values_lo, values_hi, gather) = (table(&VALUES[0]), table(&VALUES[1]), table(&GATHER));
    let pairs = _mm512_set1_epi32(0x0140_0140);
    let quads = _mm512_set1_epi32(0x0001_1000);
    for block in 0..blocks {
        // SAFETY: characters `64 * block ..+64` exist (assert above).
        let chars = unsafe { _mm512_loadu_si512(text.as_ptr().add(block * TEXT).cast()) };
        let symbols = _mm512_permutex2var_epi8(values_lo, chars, values_hi);
        if _mm512_movepi8_mask(_mm512_or_si512(chars, symbols)) != 0 {
            return block;
        }
        let twelve = _mm512_maddubs_epi16(symbols, pairs);
        let groups = _mm512_madd_epi16(twelve, quads);
        let bytes = _mm512_permutexvar_epi8(gather, groups);
        let len = out.len();
        // SAFETY: the capacity holds 48 more bytes per block left (assert
        // above: one block's worth is used per iteration); the mask writes
        // only those 48, which are then initialized.
        unsafe {
            _mm512_mask_storeu_epi8(out.as_mut_ptr().add(len).cast(), LOW48, bytes);
            out.set_len(len + DATA);
        }
    }
    blocks
}
