//! A global allocator that counts the bytes currently allocated, shared by
//! the workspace's growth tests (`tests/growth.rs` of the memory, NATS, bus
//! and routing crates include this file with `#[path]`). Each of those
//! binaries installs it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: growth_support::Counting = growth_support::Counting;
//! ```
//!
//! and reads [`LIVE`] before and after a loop.

#![allow(unsafe_code)] // a counting global allocator needs it
#![allow(dead_code)] // not every binary reads every item

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

/// Bytes allocated through [`Counting`] and not yet freed.
pub static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Forwards every call to [`System`] and keeps [`LIVE`] up to date.
pub struct Counting;

fn size(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded to `System` unchanged; the counter is a
// side effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(size(layout.size()), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(size(layout.size()), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(size(layout.size()), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(size(new_size) - size(layout.size()), Ordering::Relaxed);
        }
        p
    }
}

/// Bytes allocated and not yet freed, now.
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// One measurement at a time.
pub static TURN: Mutex<()> = Mutex::new(());

/// Runs `test` on a runtime of its own, when no other test of this binary
/// runs.
pub fn measured(test: impl std::future::Future<Output = ()>) {
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(test);
}

/// Lets tasks the loop ended (runner loops, detached hand-offs) finish.
pub async fn settle() {
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs `$body` (with `$n` counting) `$warmup` times, to reach the steady
/// state (buffers at their working size), then `$rounds` times more, and
/// asserts that live bytes did not grow by more than `$slack` and that no
/// task was left running. Expanded in place, so the body may borrow and
/// `.await`. (The including file declares this module `growth_support` at
/// its root, with `#[macro_use]`.)
#[allow(unused_macros)]
macro_rules! stays_flat {
    ($what:expr, $slack:expr, $warmup:expr, $rounds:expr, |$n:ident| $body:block) => {{
        for $n in 0..$warmup {
            $body
        }
        crate::growth_support::settle().await;
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let before = crate::growth_support::live();
        for $n in $warmup..$warmup + $rounds {
            $body
        }
        crate::growth_support::settle().await;
        let grown = crate::growth_support::live() - before;
        assert!(
            grown <= $slack,
            "{}: {grown} bytes more are held after {} more rounds ({} per round)",
            $what,
            $rounds,
            grown / isize::try_from($rounds).unwrap_or(1)
        );
        let now = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert!(now <= tasks, "{}: {tasks} tasks before, {now} after", $what);
    }};
}
