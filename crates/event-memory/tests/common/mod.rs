//! Helpers shared by this crate's integration tests (each test file uses
//! some of them).
#![allow(dead_code)]

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// A xorshift generator for model tests: the same sequence for a seed on
/// every run, so a failing seed can be replayed. The seed must not be 0.
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed` (not 0).
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Polls `fut` `polls` times, yielding to the runtime between polls, then
/// drops it; `Some(output)` when it completed within those polls.
pub async fn poll_then_drop<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(out) = polled {
            return Some(out);
        }
        tokio::task::yield_now().await;
    }
    None
}
