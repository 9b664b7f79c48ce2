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

/// Tasks alive on the current runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Lets work the loop started in the background finish (runner loops,
/// detached hand-offs, consumer deletions): `pause`, and then, given
/// `tasks`, until no more tasks than that are alive (10 s at most: a task
/// that outlives its work never ends); returns the tasks alive then.
pub async fn settle(pause: Duration, tasks: Option<usize>) -> usize {
    tokio::time::sleep(pause).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tasks.is_some_and(|tasks| alive_tasks() > tasks) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    alive_tasks()
}

/// Polls `cond` until it holds (20 s at most): a few turns for the other
/// tasks first, then the timers' too.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    let mut polls = 0u32;
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        polls += 1;
        if polls > 16 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Runs `$body` (with `$n` counting) `$warmup` times, to reach the steady
/// state (buffers at their working size), then `$rounds` times more, and
/// asserts that live bytes did not grow by more than `$slack` and that no
/// task was left running. Before each measurement it lets background work
/// finish ([`settle`], with `$pause`, 20 ms when not given). Expanded in
/// place, so the body may borrow and `.await`. (The including file declares
/// this module `growth_support` at its root, with `#[macro_use]`.)
#[allow(unused_macros)]
macro_rules! stays_flat {
    ($what:expr, $slack:expr, $warmup:expr, $rounds:expr, |$n:ident| $body:block) => {
        stays_flat!(
            $what,
            $slack,
            $warmup,
            $rounds,
            std::time::Duration::from_millis(20),
            |$n| $body
        )
    };
    ($what:expr, $slack:expr, $warmup:expr, $rounds:expr, $pause:expr, |$n:ident| $body:block) => {{
        for $n in 0..$warmup {
            $body
        }
        let tasks = crate::growth_support::settle($pause, None).await;
        let before = crate::growth_support::live();
        for $n in $warmup..$warmup + $rounds {
            $body
        }
        let now = crate::growth_support::settle($pause, Some(tasks)).await;
        let grown = crate::growth_support::live() - before;
        assert!(
            grown <= $slack,
            "{}: {grown} bytes more are held after {} more rounds ({} per round)",
            $what,
            $rounds,
            grown / isize::try_from($rounds).unwrap_or(1)
        );
        assert!(now <= tasks, "{}: {tasks} tasks before, {now} after", $what);
    }};
}
