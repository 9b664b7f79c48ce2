//! Key material never reaches the allocator: every heap block freed while a
//! scenario runs is searched, just before it is returned to the system, for
//! the key bytes and their base64 text. A block still holding them was
//! freed without being zeroized (a key in the ring, an expanded AES key, a
//! buffer used while loading a key, the old block of a buffer that grew).
#![allow(unsafe_code)] // a scanning global allocator needs it

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use event_core::EventEncryptor;
use event_crypto::{Aes256GcmEncryptor, EncryptionKey};
use serde_json::json;
use zeroize::Zeroizing;

/// Two keys of distinctive bytes, and the first as standard base64.
const KEY1: [u8; 32] = *b"\xa5\x5a\x3c\xc3key-one-that-is-32-bytes!\x01\x02\x03";
const KEY2: [u8; 32] = *b"\x5a\xa5\xc3\x3ckey-two-that-is-32-bytes!\x04\x05\x06";
const KEY1_B64: &str = "pVo8w2tleS1vbmUtdGhhdC1pcy0zMi1ieXRlcyEBAgM=";

struct Scanning;

static ARMED: AtomicBool = AtomicBool::new(false);
/// What was found, and in a block of what size; not allocated while armed
/// (a fixed array).
static FOUND: parking_lot::Mutex<[(usize, usize); 16]> = parking_lot::Mutex::new([(0, 0); 16]);

fn holds(block: &[u8], pattern: &[u8]) -> bool {
    block.windows(pattern.len()).any(|w| w == pattern)
}

// SAFETY: forwards to the system allocator; every block is handed out
// zeroed, so the bytes read in `dealloc` are initialized, and they are read
// before the block is returned.
unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::SeqCst) {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes, all
            // initialized (zeroed at allocation, written since).
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            for (i, pattern) in [&KEY1[..], &KEY2[..], KEY1_B64.as_bytes()]
                .into_iter()
                .enumerate()
            {
                if holds(block, pattern)
                    && let Some(mut found) = FOUND.try_lock()
                    && let Some(slot) = found.iter_mut().find(|s| s.0 == 0)
                {
                    *slot = (i + 1, layout.size());
                }
            }
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Scanning = Scanning;

/// Runs `scenario` armed and returns what the freed blocks held.
fn leaks(scenario: impl FnOnce()) -> Vec<(&'static str, usize)> {
    *FOUND.lock() = [(0, 0); 16];
    ARMED.store(true, Ordering::SeqCst);
    scenario();
    ARMED.store(false, Ordering::SeqCst);
    let names = ["", "KEY1 bytes", "KEY2 bytes", "KEY1 base64"];
    FOUND
        .lock()
        .iter()
        .filter(|s| s.0 != 0)
        .map(|&(i, size)| (names[i], size))
        .collect()
}

/// The only test of this binary, so no other test's blocks are scanned.
#[test]
fn freed_blocks_never_hold_key_material() {
    // the scanner finds what it should: a plain Vec of the key
    assert_eq!(
        leaks(|| drop(KEY1.to_vec())),
        [("KEY1 bytes", 32)],
        "the scanner is blind"
    );
    assert!(leaks(|| drop(Zeroizing::new(KEY1.to_vec()))).is_empty());
    // and an AES key schedule freed without its drop (AES-NI keeps the key
    // as its first two round keys; the portable bitsliced form does not)
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("aes") {
        use aes_gcm::{Aes256Gcm, KeyInit};
        let found = leaks(|| {
            let cipher = Box::into_raw(Box::new(Aes256Gcm::new(&KEY1.into())));
            // SAFETY: the block `Box::new` allocated, freed once, its
            // contents never used again (and never dropped: on purpose)
            unsafe { std::alloc::dealloc(cipher.cast(), Layout::new::<Aes256Gcm>()) };
        });
        assert!(
            found.iter().any(|&(what, _)| what == "KEY1 bytes"),
            "the scanner is blind to a key schedule: {found:?}"
        );
        let found = leaks(|| drop(Box::new(Aes256Gcm::new(&KEY1.into()))));
        assert!(found.is_empty(), "an AES-GCM key schedule: {found:?}");
    }

    // loading, cloning, encoding and dropping a key
    let found = leaks(|| {
        let key = EncryptionKey::from_base64(KEY1_B64).unwrap();
        let copy = key.clone();
        let text = copy.to_base64();
        assert_eq!(text.as_str(), KEY1_B64);
        drop(Box::new(key));
        drop(copy);
    });
    assert!(found.is_empty(), "{found:?}");

    // the diagnosed mistakes decode the key text in other forms
    let quoted = || {
        let mut text = Zeroizing::new(String::with_capacity(64));
        text.push('"');
        text.push_str(KEY1_B64);
        text.push('"');
        text
    };
    let twice = || {
        let mut inner = Zeroizing::new(String::with_capacity(64));
        inner.push_str(KEY1_B64);
        inner.push('\n');
        Zeroizing::new(STANDARD.encode(inner.as_bytes()))
    };
    let unpadded = || Zeroizing::new(KEY1_B64.trim_end_matches('=').to_owned());
    for (what, text) in [
        ("quoted", quoted()),
        ("twice", twice()),
        ("unpadded", unpadded()),
    ] {
        let found = leaks(|| assert!(EncryptionKey::from_base64(&text).is_err()));
        assert!(found.is_empty(), "{what}: {found:?}");
    }

    // from the environment, with the newline of `$(cat key.txt)`-like values
    const VAR: &str = "A3S_EVENT_CRYPTO_ZEROIZE_TEST_KEY";
    // SAFETY: the only test of this binary; no other thread reads the
    // environment meanwhile
    unsafe { std::env::set_var(VAR, format!("{KEY1_B64}\n")) };
    let found = leaks(|| {
        let key = EncryptionKey::from_env(VAR).unwrap();
        assert_eq!(key.as_bytes(), &KEY1);
        let e = Aes256GcmEncryptor::from_env("k1", VAR).unwrap();
        assert_eq!(e.active_key_id(), "k1");
    });
    assert!(found.is_empty(), "{found:?}");

    // a ring: keys added, one refused, one retired, the whole ring dropped
    let found = leaks(|| {
        let e = Aes256GcmEncryptor::with_key("k1", EncryptionKey::from_bytes(&KEY1));
        let sealed = e.encrypt("evt-1", &json!({"a": 1})).unwrap();
        e.add_key("k2", &KEY2).unwrap();
        e.add_key("k2", &KEY2).unwrap(); // the same again: its copy dropped
        assert!(e.add_key("k2", &KEY1).is_err()); // refused: its copy dropped
        e.rotate_to("k2").unwrap();
        assert_eq!(e.decrypt("evt-1", &sealed).unwrap(), json!({"a": 1}));
        e.remove_key("k1").unwrap(); // the last reference to k1
        let sealed = e.encrypt("evt-2", &json!([1, 2])).unwrap();
        assert_eq!(e.decrypt("evt-2", &sealed).unwrap(), json!([1, 2]));
        drop(e);
    });
    assert!(found.is_empty(), "{found:?}");
}
