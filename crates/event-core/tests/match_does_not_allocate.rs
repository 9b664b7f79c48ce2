//! `SubjectPattern::matches` must not allocate: counted with a global
//! allocator wrapper (this test binary only).
#![allow(unsafe_code)] // a counting global allocator needs it

use event_core::SubjectPattern;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    // per thread: the test harness allocates on its own threads meanwhile
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged, only counting calls.

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn matching_allocates_nothing() {
    let patterns: Vec<SubjectPattern> = [
        "events.>",
        "events.*.forex",
        "events.market.forex.usd",
        "*.*.*",
    ]
    .iter()
    .map(|p| SubjectPattern::parse(p).unwrap())
    .collect();
    let subjects = [
        "events.market.forex",
        "events.market.forex.usd",
        "other.a.b",
        "events",
        "events..x",
    ];
    let before = ALLOCATIONS.with(Cell::get);
    let mut hits = 0;
    for _ in 0..1000 {
        for p in &patterns {
            for s in &subjects {
                hits += usize::from(p.matches(s));
            }
        }
    }
    let after = ALLOCATIONS.with(Cell::get);
    assert_eq!(after - before, 0, "matching allocated");
    assert_eq!(hits, 1000 * 6);
}
