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
use std::sync::atomic::{AtomicIsize, Ordering};

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
