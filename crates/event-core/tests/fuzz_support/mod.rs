//! A small deterministic fuzzing kit shared by the crates' `tests/fuzz.rs`
//! (included with `#[path]`, so that no crate gains a dependency).
//!
//! - [`Rng`]: xorshift64*, seeded; the same seed gives the same inputs on
//!   every machine.
//! - [`mutate_bytes`] / [`mutate_text`]: byte flips, truncation, splicing,
//!   duplication, interesting bytes and tokens (JSON syntax, huge numbers,
//!   odd unicode, percent and base64 fragments, deep nesting).
//! - [`mutate_json`]: structure-aware edits of a `serde_json::Value` (wrong
//!   types, removed and added keys, huge numbers, long strings, nesting).
//! - [`run`]: the loop. `A3S_FUZZ_ITERS` sets the iterations (each test
//!   has a fast default), `A3S_FUZZ_SEED` the base seed (default fixed, so
//!   CI replays one plan). A panic fails the test naming the case seed;
//!   `A3S_FUZZ_VERBOSE=1` prints every case seed first (to find the case
//!   that aborts the process, such as a stack overflow).
#![allow(dead_code)]

use serde_json::{Map, Value, json};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// xorshift64* (Vigna): small, fast, good enough to drive mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        let mut rng = Self(seed ^ 0x9E37_79B9_7F4A_7C15);
        if rng.0 == 0 {
            rng.0 = 1;
        }
        // warm up: nearby seeds diverge at once
        for _ in 0..4 {
            rng.next_u64();
        }
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// Tokens spliced into inputs: JSON syntax, boundary numbers, odd unicode,
/// percent-encoding and base64 fragments.
pub const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "false",
    "0",
    "-0",
    "-1",
    "1.5",
    "1e999",
    "-1e999",
    "1e-999",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "NaN",
    "Infinity",
    "\"NaN\"",
    "\\u0000",
    "\\ud800",
    "\\udc00",
    "\\\"",
    "é",
    "😀",
    "\u{feff}",
    "\u{2028}",
    "\u{202e}",
    "\u{85}",
    "\u{7f}",
    "\u{0}",
    "\r\n",
    "\t",
    " ",
    "%",
    "%2",
    "%25",
    "%zz",
    "%C3%A9",
    "%FF",
    "%C0%A0",
    "%00",
    "=",
    "==",
    "+",
    "/",
    "-",
    "_",
    "AAAA",
    "*",
    ">",
    ".",
    "..",
    "\\",
    "'",
    "a3sx",
    "a3sm",
    "ce-",
    "$ref",
    "#",
    "@",
    "://",
];

/// Interesting single bytes.
const BYTES: &[u8] = &[
    0x00, 0x01, 0x09, 0x0a, 0x0d, 0x20, 0x22, 0x25, 0x2b, 0x2e, 0x2f, 0x3d, 0x5c, 0x7f, 0x80, 0xbf,
    0xc0, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xf5, 0xff,
];

/// One to four random edits of `data`.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>) {
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        let len = data.len();
        match rng.below(11) {
            // flip a bit
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            // set an interesting byte
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = *rng.pick(BYTES);
            }
            // set a random byte
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            // truncate
            3 if len > 0 => data.truncate(rng.below(len)),
            // delete a range
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(8)).min(len);
                data.drain(start..end);
            }
            // duplicate a range
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                let copy: Vec<u8> = data[start..end].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            // insert a token
            6 | 7 => {
                let at = rng.below(len + 1);
                let token = rng.pick(TOKENS).as_bytes().to_vec();
                data.splice(at..at, token);
            }
            // insert an interesting byte
            8 => {
                let at = rng.below(len + 1);
                data.insert(at, *rng.pick(BYTES));
            }
            // deep nesting at a random place
            9 => {
                let at = rng.below(len + 1);
                let depth = *rng.pick(&[64usize, 127, 128, 129, 1000, 20_000]);
                let open = *rng.pick(&[&b"["[..], b"{\"a\":"]);
                let nest: Vec<u8> = open.repeat(depth);
                data.splice(at..at, nest);
            }
            // swap two bytes
            _ if len > 1 => {
                let (i, j) = (rng.below(len), rng.below(len));
                data.swap(i, j);
            }
            _ => data.push(rng.byte()),
        }
    }
}

/// [`mutate_bytes`] on text, kept valid UTF-8 (lossily) so that it can be
/// given to `&str` APIs.
pub fn mutate_text(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    mutate_bytes(rng, &mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A random short string: mostly identifier-like, sometimes hostile.
pub fn random_string(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => String::new(),
        1 => rng.pick(TOKENS).to_string(),
        2 => "x".repeat(*rng.pick(&[255usize, 256, 1024, 1025, 70_000])),
        3 => {
            let n = rng.below(12);
            (0..n).map(|_| *rng.pick(TOKENS)).collect()
        }
        4 => {
            let n = rng.below(16);
            (0..n)
                .filter_map(|_| char::from_u32(rng.below(0x11_0000) as u32))
                .collect()
        }
        _ => {
            const ALPHA: &[u8] = b"abcz09._-*>A %\"";
            let n = 1 + rng.below(12);
            (0..n).map(|_| char::from(*rng.pick(ALPHA))).collect()
        }
    }
}

/// A random JSON value, nested at most `depth` levels.
pub fn random_json(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => json!(rng.next_u64()),
        3 => json!(-(rng.below(1 << 20) as i64)),
        4 => json!(f64::from_bits(rng.next_u64()))
            .as_f64()
            .map_or(json!(1.5), |f| json!(f)),
        5 => Value::String(random_string(rng)),
        6 | 7 => {
            let n = rng.below(4);
            let mut map = Map::new();
            for _ in 0..n {
                map.insert(random_string(rng), random_json(rng, depth - 1));
            }
            Value::Object(map)
        }
        _ => {
            let n = rng.below(4);
            Value::Array((0..n).map(|_| random_json(rng, depth - 1)).collect())
        }
    }
}

/// `levels` nested arrays (or objects) around `leaf`.
pub fn nested(levels: usize, objects: bool, leaf: Value) -> Value {
    let mut value = leaf;
    for _ in 0..levels {
        value = if objects {
            json!({ "a": value })
        } else {
            Value::Array(vec![value])
        };
    }
    value
}

/// Values of the wrong type, or at a boundary, for any field.
pub fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(1.5),
        6 => json!(1e300),
        7 => json!("NaN"),
        8 => json!(""),
        9 => json!([]),
        10 => json!({}),
        11 => Value::String("é".repeat(rng.below(2000))),
        12 => nested(
            *rng.pick(&[10usize, 126, 127, 200]),
            rng.one_in(2),
            json!(1),
        ),
        _ => random_json(rng, 3),
    }
}

/// Walks to a random node of `value` and returns it (possibly the root).
fn random_node<'a>(rng: &mut Rng, value: &'a mut Value) -> &'a mut Value {
    let mut node = value;
    loop {
        let children = match node {
            Value::Array(items) if !items.is_empty() => items.len(),
            Value::Object(map) if !map.is_empty() => map.len(),
            _ => return node,
        };
        if rng.one_in(3) {
            return node;
        }
        let i = rng.below(children);
        node = match node {
            Value::Array(items) => &mut items[i],
            Value::Object(map) => map.values_mut().nth(i).expect("index in range"),
            _ => unreachable!("only containers have children"),
        };
    }
}

/// One to three structure-aware edits of `value`.
pub fn mutate_json(rng: &mut Rng, value: &mut Value) {
    let edits = 1 + rng.below(3);
    for _ in 0..edits {
        let node = random_node(rng, value);
        match rng.below(7) {
            // replace with a hostile value
            0 | 1 => *node = hostile_value(rng),
            // remove a key or an item
            2 => match node {
                Value::Object(map) if !map.is_empty() => {
                    let key = map.keys().nth(rng.below(map.len())).cloned();
                    if let Some(key) = key {
                        map.remove(&key);
                    }
                }
                Value::Array(items) if !items.is_empty() => {
                    items.remove(rng.below(items.len()));
                }
                _ => *node = Value::Null,
            },
            // add a key or an item
            3 => match node {
                Value::Object(map) => {
                    map.insert(random_string(rng), hostile_value(rng));
                }
                Value::Array(items) => items.push(hostile_value(rng)),
                _ => *node = json!([node.clone()]),
            },
            // mutate a string in place
            4 => match node {
                Value::String(s) => *s = mutate_text(rng, s),
                _ => *node = Value::String(random_string(rng)),
            },
            // a number at a boundary
            5 => {
                *node = rng
                    .pick(&[
                        json!(0),
                        json!(u64::MAX),
                        json!(u32::MAX),
                        json!(u64::from(u32::MAX) + 1),
                        json!(i64::MAX),
                        json!(i64::MIN),
                        json!(-0.0),
                        json!(f64::MAX),
                        json!(1e-300),
                    ])
                    .clone()
            }
            // wrap in nesting
            _ => *node = nested(1 + rng.below(4), rng.one_in(2), node.clone()),
        }
    }
}

/// The iteration count: `A3S_FUZZ_ITERS`, else `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("A3S_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The base seed: `A3S_FUZZ_SEED` (decimal or 0x-hex), else fixed.
pub fn base_seed() -> u64 {
    std::env::var("A3S_FUZZ_SEED")
        .ok()
        .and_then(|v| match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        })
        .unwrap_or(0x0A35_F022)
}

/// Runs `case` `iterations(default_iters)` times, each with an [`Rng`]
/// seeded from the base seed, `name` and the iteration. A panic is
/// re-raised after naming the case seed (`A3S_FUZZ_CASE=<seed>` replays
/// that case alone). Returns the number of cases run.
pub fn run(name: &str, default_iters: usize, mut case: impl FnMut(&mut Rng)) -> usize {
    let verbose = std::env::var_os("A3S_FUZZ_VERBOSE").is_some();
    let only: Option<u64> = std::env::var("A3S_FUZZ_CASE").ok().and_then(|v| {
        v.strip_prefix("0x")
            .map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
    });
    let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut seeds = Rng::new(base_seed() ^ name_hash);
    let cases: Vec<u64> = match only {
        Some(seed) => vec![seed],
        None => (0..iterations(default_iters))
            .map(|_| seeds.next_u64())
            .collect(),
    };
    for &seed in &cases {
        if verbose {
            eprintln!("{name}: case {seed:#x}");
        }
        let mut rng = Rng::new(seed);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(&mut rng))) {
            eprintln!("{name}: case {seed:#x} panicked (replay with A3S_FUZZ_CASE={seed:#x})");
            resume_unwind(panic);
        }
    }
    cases.len()
}
