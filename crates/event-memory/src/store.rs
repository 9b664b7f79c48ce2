//! The event log: a bounded ring (O(1) append; an eviction is O(1) in the
//! log but walks every consumer's cursor, see `Store::count_evicted`),
//! and the dedup window.

use event_core::{Error, Event, MAX_PAYLOAD_DEPTH, Result, SubjectPattern, check_payload_depth};
use hashbrown::hash_table::Entry as Slot;
use parking_lot::Mutex;
use std::collections::VecDeque;

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
// tokio's clock (std's unless the `test-util` feature pauses it), so that
// the dedup window follows a paused or advanced runtime clock in tests
use tokio::time::Instant;

/// A remembered dedup id: its hash under the store's seeded hasher
/// (foldhash: dedup ids are caller-supplied, and a seeded hash is fast and
/// resistant to chosen collisions), the id, and the sequence it was stored
/// under. The hash is computed once per publish: growing the table reuses
/// it, and the window's order queue finds the entry again by hash and
/// sequence, so the queue does not hold a second copy of the id.
struct DedupEntry {
    hash: u64,
    key: DedupKey,
    seq: u64,
}

/// `state` with `bytes` mixed in, a multiply per byte (Fibonacci hashing):
/// the byte path of this crate's integer hashers, which their keys never
/// take in practice.
pub(crate) fn mix_bytes(mut state: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        state = (state ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    state
}

/// Ids up to this many bytes (an event id, `evt-` and a UUID, is 40) are
/// kept inline in a [`DedupKey`].
const INLINE_KEY: usize = 46;

/// A dedup id: inline when short (no allocation per publish), shared
/// otherwise; equal and hashed by its bytes either way.
#[derive(Clone)]
pub(crate) enum DedupKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Shared(Arc<str>),
}

impl DedupKey {
    pub(crate) fn new(id: &str) -> Self {
        let mut bytes = [0; INLINE_KEY];
        match (bytes.get_mut(..id.len()), u8::try_from(id.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(id.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(Arc::from(id)),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(bytes),
            Self::Shared(id) => id.as_bytes(),
        }
    }
}

impl PartialEq for DedupKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for DedupKey {}

impl Hash for DedupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

/// Events per block of the subject summary (see [`Summary`]).
const BLOCK: u64 = 64;

/// Which category tokens (the second subject token) a block of [`BLOCK`]
/// consecutive sequences holds, one bit per token hash: a one-word Bloom
/// filter. A filter with a literal category skips every block whose bits
/// lack it, so a search for a rare category (history, a consumer catching
/// up) looks at its matches and one word per 64 events instead of every
/// stored event. (The category alone: a second word for the topic cost as
/// much again per publish, for filters that name a topic under a wildcard
/// category.) Bits are only ever added: a block's summary may also cover
/// evicted events (a false positive costs a scan of that block, never a
/// missed event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    category: u64,
}

impl Summary {
    /// The bits of one published subject, whose first `prefix_tokens`
    /// tokens are the provider's subject prefix (computed before the store
    /// is locked).
    pub(crate) fn of_subject(subject: &str, prefix_tokens: usize) -> Self {
        let mut rest = subject.as_bytes();
        for _ in 0..prefix_tokens {
            match find_dot(rest).and_then(|i| rest.get(i + 1..)) {
                Some(after) => rest = after,
                None => return Self::default(),
            }
        }
        let category = find_dot(rest).and_then(|i| rest.get(..i)).unwrap_or(rest);
        Self {
            category: token_bit(category),
        }
    }

    /// The bits every subject matching `filter` has (none when its category,
    /// the token after the `prefix_tokens` of the prefix, is a wildcard:
    /// nothing can be skipped).
    pub(crate) fn required_by(filter: &SubjectPattern, prefix_tokens: usize) -> Self {
        Self {
            category: filter
                .literal_token(prefix_tokens)
                .map_or(0, |t| token_bit(t.as_bytes())),
        }
    }

    fn is_empty(self) -> bool {
        self.category == 0
    }

    /// The category bit (0: none, a wildcard category).
    pub(crate) fn category(self) -> u64 {
        self.category
    }

    /// Whether a block with summary `self` may hold a subject with the
    /// `required` bits.
    fn may_hold(self, required: Self) -> bool {
        self.category & required.category == required.category
    }

    fn add(&mut self, other: Self) {
        self.category |= other.category;
    }
}

/// Index of the first `.` in `s`, eight bytes at a time (SWAR: the lowest
/// zero lane of `word ^ dots` is exact; borrows only affect higher lanes).
fn find_dot(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const DOTS: u64 = ONES * b'.' as u64;
    let mut start = 0;
    let mut rest = s;
    while let Some((chunk, tail)) = rest.split_first_chunk::<8>() {
        let x = u64::from_le_bytes(*chunk) ^ DOTS;
        let lanes = x.wrapping_sub(ONES) & !x & HIGHS;
        if lanes != 0 {
            return Some(start + (lanes.trailing_zeros() / 8) as usize);
        }
        start += 8;
        rest = tail;
    }
    rest.iter().position(|&b| b == b'.').map(|i| start + i)
}

/// One of 64 bits, from a multiplicative hash of `token`'s length and its
/// first and last eight bytes (read with overlapping loads: constant time,
/// no copy). Tokens that differ only in the middle collide, which only
/// makes a block look like a candidate.
fn token_bit(token: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let (first, last) = match (token.first_chunk::<8>(), token.last_chunk::<8>()) {
        (Some(first), Some(last)) => (u64::from_le_bytes(*first), u64::from_le_bytes(*last)),
        _ => (short_word(token), 0),
    };
    let h = ((token.len() as u64 ^ first).wrapping_mul(K) ^ last).wrapping_mul(K);
    1 << (h >> 58)
}

pub(crate) struct Entry {
    pub(crate) event: Arc<Event>,
    pub(crate) size: usize,
    /// Store time, Unix ms, never decreasing along the log.
    pub(crate) stored_at: u64,
}

/// Where a consumer reads new events, registered with the store so that
/// retention overtaking the consumer counts the events its filter would have
/// delivered: its `Lagged` report says how many it missed, and a consumer
/// that missed none (only other subjects were evicted) gets no report.
///
/// Both counters are read and written only under the store lock (the
/// atomics give the shared handle interior mutability; `Relaxed` suffices).
pub(crate) struct Cursor {
    next_seq: AtomicU64,
    missed: AtomicU64,
    /// The category bits ([`Summary::required_by`]) of `filter`: an evicted
    /// event whose category lacks them cannot match, so the filter is not
    /// consulted (a consumer left behind on a rare category, a durable
    /// nobody resumes, costs one compare per eviction, not a match).
    required: AtomicU64,
    /// Consulted only when an eviction overtakes the cursor; a leaf lock.
    filter: Mutex<SubjectPattern>,
    /// The first evicted sequence that wakes the consumer's waiting
    /// fetches, once (`u64::MAX`: none; see [`wake_on_eviction`](Self::wake_on_eviction)).
    wake_at: AtomicU64,
    /// The consumer's own wake-up.
    notify: Arc<Notify>,
}

impl Cursor {
    /// Replaces the filter, whose category bits are `required`
    /// ([`Summary::required_by`]). Call under the store lock.
    pub(crate) fn set_filter(&self, filter: SubjectPattern, required: Summary) {
        self.required.store(required.category, Ordering::Relaxed);
        *self.filter.lock() = filter;
    }

    /// The category summary bit every subject the filter matches has (0:
    /// none, a wildcard category).
    pub(crate) fn required_category(&self) -> u64 {
        self.required.load(Ordering::Relaxed)
    }

    /// Replaces the count of missed events. Call under the store lock.
    pub(crate) fn set_missed(&self, missed: u64) {
        self.missed.store(missed, Ordering::Relaxed);
    }

    /// Records that the consumer reads `next_seq` next. Call under the
    /// store lock.
    pub(crate) fn advance_to(&self, next_seq: u64) {
        self.next_seq.store(next_seq, Ordering::Relaxed);
    }

    /// Wakes the consumer's waiting fetches once, when retention evicts
    /// `seq` or a later event, whatever the subject (a publish on another
    /// category wakes none of them, yet its eviction may have freed what
    /// they wait for). Call under the store lock.
    pub(crate) fn wake_on_eviction(&self, seq: u64) {
        self.wake_at.store(seq, Ordering::Relaxed);
    }

    /// Takes the count of matching events evicted before the consumer read
    /// them. Call under the store lock.
    pub(crate) fn take_missed(&self) -> u64 {
        self.missed.swap(0, Ordering::Relaxed)
    }
}

pub(crate) struct Store {
    log: VecDeque<Entry>,
    /// Sequence of `log[0]`; `last_seq + 1` when the log is empty.
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
    max_events: usize,
    /// Encoded bytes kept; 0: no limit.
    max_bytes: u64,
    /// The dedup window's ids, each hashed once.
    dedup: hashbrown::HashTable<DedupEntry>,
    /// Seeds the hashes of dedup ids ([`DedupEntry`]).
    dedup_hasher: foldhash::fast::RandomState,
    /// The window's ids in the order they were stored: when, their hash
    /// and sequence (which find the entry in `dedup`).
    dedup_order: VecDeque<(Instant, u64, u64)>,
    duplicate_window: Duration,
    max_dedup_entries: usize,
    /// Subject summary of each block of [`BLOCK`] sequences still (partly)
    /// stored; `blocks[0]` is the block of `first_seq`.
    blocks: VecDeque<Summary>,
    /// Every live consumer's cursor; a cursor only the store still holds
    /// belongs to a dropped consumer and is removed at the next eviction.
    cursors: Vec<Arc<Cursor>>,
    /// How many cursors were left by the last sweep of dropped ones (see
    /// [`add_cursor`](Self::add_cursor)).
    cursors_swept: usize,
    /// Tokens of the provider's subject prefix (see
    /// [`with_prefix_tokens`](Self::with_prefix_tokens)).
    prefix_tokens: usize,
}

pub(crate) enum Appended {
    New(u64),
    Duplicate(u64),
}

impl Store {
    pub(crate) fn new(
        max_events: usize,
        max_bytes: u64,
        duplicate_window: Duration,
        max_dedup_entries: usize,
    ) -> Self {
        Self {
            log: VecDeque::with_capacity(max_events.min(1 << 16)),
            first_seq: 1,
            last_seq: 0,
            bytes: 0,
            max_events,
            max_bytes,
            dedup: hashbrown::HashTable::new(),
            dedup_hasher: foldhash::fast::RandomState::default(),
            // reserved as the log is (address space only until used), so
            // that the first publishes do not copy the window as it doubles
            dedup_order: VecDeque::with_capacity(max_dedup_entries.min(1 << 16)),
            duplicate_window,
            max_dedup_entries,
            cursors: Vec::new(),
            cursors_swept: 0,
            blocks: VecDeque::with_capacity(max_events.min(1 << 16) / BLOCK as usize + 2),
            prefix_tokens: 1,
        }
    }

    /// The store of a provider whose subject prefix has `tokens` tokens
    /// (1 unless set): a subject's category, which [`Summary`] records, is
    /// the token after them.
    pub(crate) fn with_prefix_tokens(mut self, tokens: usize) -> Self {
        self.prefix_tokens = tokens;
        self
    }

    /// Registers a consumer that reads `next_seq` next with `filter` (and
    /// wakes on `notify`, see [`Cursor::wake_on_eviction`]), and
    /// forgets the cursors of dropped consumers once the list has doubled
    /// since they were last swept (so subscribing and dropping in a loop
    /// does not grow the list while nothing is evicted, and subscribing is
    /// O(1) amortized, not O(consumers)).
    pub(crate) fn add_cursor(
        &mut self,
        filter: SubjectPattern,
        next_seq: u64,
        notify: Arc<Notify>,
    ) -> Arc<Cursor> {
        if self.cursors.len() >= 2 * self.cursors_swept.max(32) {
            self.cursors.retain(|cursor| Arc::strong_count(cursor) > 1);
            self.cursors_swept = self.cursors.len();
        }
        let cursor = Arc::new(Cursor {
            next_seq: AtomicU64::new(next_seq),
            missed: AtomicU64::new(0),
            required: AtomicU64::new(Summary::required_by(&filter, self.prefix_tokens).category),
            filter: Mutex::new(filter),
            wake_at: AtomicU64::new(u64::MAX),
            notify,
        });
        self.cursors.push(Arc::clone(&cursor));
        cursor
    }

    /// Evicts the oldest event, counting it for the consumers it
    /// overtakes; `false` when there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some(old) = self.log.pop_front() else {
            return false;
        };
        self.count_evicted(self.first_seq, &old.event.subject);
        self.bytes -= old.size as u64;
        if self.first_seq.is_multiple_of(BLOCK) {
            // the last of its block
            self.blocks.pop_front();
        }
        self.first_seq += 1;
        true
    }

    /// Counts evicted event `seq` against every cursor it overtakes whose
    /// filter matches it, and forgets the cursors of dropped consumers.
    ///
    /// O(cursors): every tracked consumer (durables until unsubscribed) is
    /// visited on every eviction, and the filter of each one `seq`
    /// overtakes is matched unless its category rules it out.
    fn count_evicted(&mut self, seq: u64, subject: &str) {
        let prefix_tokens = self.prefix_tokens;
        // computed once, and only if some cursor is overtaken
        let mut evicted: Option<Summary> = None;
        self.cursors.retain(|cursor| {
            if cursor.wake_at.load(Ordering::Relaxed) <= seq {
                cursor.wake_at.store(u64::MAX, Ordering::Relaxed);
                cursor.notify.notify_waiters();
            }
            if cursor.next_seq.load(Ordering::Relaxed) <= seq {
                let evicted =
                    *evicted.get_or_insert_with(|| Summary::of_subject(subject, prefix_tokens));
                let required = Summary {
                    category: cursor.required.load(Ordering::Relaxed),
                };
                if evicted.may_hold(required) && cursor.filter.lock().matches(subject) {
                    cursor.missed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Arc::strong_count(cursor) > 1
        });
        self.cursors_swept = self.cursors.len();
    }

    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub(crate) fn len(&self) -> usize {
        self.log.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry with sequence `seq`, if still stored.
    pub(crate) fn get(&self, seq: u64) -> Option<&Entry> {
        let idx = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.log.get(idx)
    }

    /// Entries newest first, skipping whole blocks that cannot hold a
    /// subject with the `required` bits (see [`Summary::required_by`]); the
    /// caller still matches each entry returned.
    pub(crate) fn iter_rev_candidates(
        &self,
        required: Summary,
    ) -> impl Iterator<Item = (u64, &Entry)> {
        self.candidate_runs(required)
            .flat_map(|(lo, hi)| self.range_rev(lo, hi))
    }

    /// Sequence ranges `(lo, hi)`, newest first, covering every block that
    /// may hold a subject with the `required` bits; adjacent candidate
    /// blocks form one range, so a filter that skips nothing reads one range
    /// (the cost of a plain scan).
    pub(crate) fn candidate_runs(&self, required: Summary) -> impl Iterator<Item = (u64, u64)> {
        let first_block = (self.first_seq - 1) / BLOCK;
        let candidate = move |i: usize| self.blocks.get(i).is_some_and(|b| b.may_hold(required));
        // blocks [0, remaining) are still to be searched
        let mut remaining = self.blocks.len();
        std::iter::from_fn(move || {
            while remaining > 0 && !candidate(remaining - 1) {
                remaining -= 1;
            }
            let end = remaining;
            while remaining > 0 && candidate(remaining - 1) {
                remaining -= 1;
            }
            (end > remaining).then(|| {
                let lo = ((first_block + remaining as u64) * BLOCK + 1).max(self.first_seq);
                let hi = ((first_block + end as u64) * BLOCK).min(self.last_seq);
                (lo, hi)
            })
        })
    }

    /// The stored entries with sequences `lo..=hi`, newest first.
    pub(crate) fn range_rev(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, &Entry)> {
        let index =
            |seq: u64| usize::try_from(seq.saturating_sub(self.first_seq)).unwrap_or(usize::MAX);
        let (start, end) = (index(lo), index(hi).saturating_add(1).min(self.log.len()));
        self.log
            .range(start.min(end)..end)
            .rev()
            .enumerate()
            .map(move |(back, e)| (hi - back as u64, e))
    }

    /// The first sequence at or after `seq` in a block that may hold a
    /// subject with the `required` bits; when none stored does, the first
    /// sequence not yet stored (`last_seq + 1`), or `seq` itself if that is
    /// further on (a start beyond the log), never a sequence in between.
    pub(crate) fn next_candidate(&self, seq: u64, required: Summary) -> u64 {
        if required.is_empty() {
            return seq;
        }
        let first_block = (self.first_seq - 1) / BLOCK;
        let mut next = seq.max(self.first_seq);
        while next <= self.last_seq {
            let block = (next - 1) / BLOCK;
            let index = usize::try_from(block - first_block).unwrap_or(usize::MAX);
            match self.blocks.get(index) {
                Some(summary) if !summary.may_hold(required) => next = (block + 1) * BLOCK + 1,
                _ => return next,
            }
        }
        seq.max(self.last_seq + 1)
    }

    /// First sequence stored at or after `ms`.
    pub(crate) fn seq_at_time(&self, ms: u64) -> u64 {
        self.first_seq + self.log.partition_point(|e| e.stored_at < ms) as u64
    }

    fn expire_dedup(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.dedup_order.front() {
            let expired = now.duration_since(*at) >= self.duplicate_window;
            if !expired && self.dedup_order.len() <= self.max_dedup_entries {
                break;
            }
            if let Some((_, hash, seq)) = self.dedup_order.pop_front()
                && let Ok(entry) = self.dedup.find_entry(hash, |e| e.seq == seq)
            {
                entry.remove();
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn append(
        &mut self,
        key: DedupKey,
        expected: Option<u64>,
        event: Arc<Event>,
        size: usize,
        now_ms: u64,
    ) -> Result<Appended> {
        let summary = Summary::of_subject(&event.subject, self.prefix_tokens);
        self.append_event(key, expected, event, size, now_ms, summary)
    }

    /// Appends `event` (of `size` encoded bytes, whose subject has
    /// `summary`) unless `key` is a duplicate or `expected` is not the last
    /// sequence; evicts the oldest event when full.
    pub(crate) fn append_event(
        &mut self,
        key: DedupKey,
        expected: Option<u64>,
        event: Arc<Event>,
        size: usize,
        now_ms: u64,
        summary: Summary,
    ) -> Result<Appended> {
        let now = Instant::now();
        self.expire_dedup(now);
        let hash = self.dedup_hasher.hash_one(key.as_bytes());
        // one hash for the duplicate check, the insert and the removal
        let slot = match self
            .dedup
            .entry(hash, |e| e.hash == hash && e.key == key, |e| e.hash)
        {
            Slot::Occupied(first) => return Ok(Appended::Duplicate(first.get().seq)),
            Slot::Vacant(slot) => slot,
        };
        if let Some(expected) = expected
            && expected != self.last_seq
        {
            return Err(Error::WrongLastSequence {
                expected,
                actual: self.last_seq,
            });
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        slot.insert(DedupEntry { hash, key, seq });
        if (seq - 1).is_multiple_of(BLOCK) {
            self.blocks.push_back(Summary::default());
        }
        if let Some(block) = self.blocks.back_mut() {
            block.add(summary);
        }
        let stored_at = self.log.back().map_or(now_ms, |e| e.stored_at.max(now_ms));
        // one event out for the count; for bytes as many as it takes (each
        // event is evicted once: one eviction per publish, amortized, each
        // O(cursors))
        while self.log.len() >= self.max_events
            || (self.max_bytes != 0 && self.bytes.saturating_add(size as u64) > self.max_bytes)
        {
            if !self.evict_oldest() {
                break;
            }
        }
        self.bytes += size as u64;
        self.log.push_back(Entry {
            event,
            size,
            stored_at,
        });
        self.dedup_order.push_back((now, hash, seq));
        if self.dedup_order.len() > self.max_dedup_entries {
            self.expire_dedup(now);
        }
        Ok(Appended::New(seq))
    }

    #[cfg(test)]
    pub(crate) fn cursor_count(&self) -> usize {
        self.cursors.len()
    }

    #[cfg(test)]
    pub(crate) fn dedup_len(&self) -> usize {
        self.dedup.len()
    }
}

/// Exact size of `event` encoded as JSON by serde_json, computed without
/// encoding it: the fixed shape is counted directly, only the payload goes
/// through the serializer (into a byte counter). A payload nested deeper
/// than [`MAX_PAYLOAD_DEPTH`] is refused as [`check_payload_depth`] refuses
/// it.
pub(crate) fn encoded_len(event: &Event) -> Result<usize> {
    const FIXED: usize = r#"{"id":,"subject":,"category":,"eventType":,"version":,"payload":,"summary":,"source":,"timestamp":,"metadata":{}}"#.len();
    let mut n = FIXED;
    for s in [
        &event.id,
        &event.subject,
        &event.category,
        &event.event_type,
        &event.summary,
        &event.source,
    ] {
        n += json_str_len(s);
    }
    n += decimal_digits(u64::from(event.version)) + decimal_digits(event.timestamp);
    // the walk that sizes the payload also keeps to the depth every
    // provider enforces; the shared check then words the refusal
    n += match payload_len(&event.payload, 0)? {
        Some(len) => len,
        None => return check_payload_depth(&event.payload).map(|()| 0),
    };
    for (k, v) in &event.metadata {
        n += json_str_len(k) + 1 + json_str_len(v);
    }
    n += event.metadata.len().saturating_sub(1);
    Ok(n)
}

/// Length of `s` as a JSON string literal, escapes and quotes included.
/// Inlined (a publish sizes ten or so strings: a call each cost about as
/// much as the scan of a short one), the rare escaped case kept out of line.
#[inline(always)]
fn json_str_len(s: &str) -> usize {
    if needs_escape(s.as_bytes()) {
        escaped_str_len(s)
    } else {
        s.len() + 2
    }
}

/// [`json_str_len`] of a string that may need escapes.
#[cold]
#[inline(never)]
fn escaped_str_len(s: &str) -> usize {
    let extra: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0C => 1,
            0..=0x1F => 5,
            _ => 0,
        })
        .sum();
    s.len() + 2 + extra
}

/// Whether any byte may need a JSON escape (a control byte, `"` or `\\`),
/// eight bytes at a time (SWAR), so the common case, nothing to escape, costs
/// about two instructions per byte. Never misses such a byte; it may rarely
/// say `true` for a string that needs no escape (a borrow out of a
/// non-ASCII lane), which only sends the caller down the exact slow path.
#[inline(always)]
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // high bit set in every lane that is zero (and possibly above one)
    let zero_lanes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let flagged = |v: u64| {
        let ascii_lanes = !v & HIGHS; // bytes >= 0x80 never need escaping
        let a = v & !HIGHS;
        let control = a.wrapping_sub(ONES * 0x20) & !a & HIGHS;
        let quote = zero_lanes(a ^ (ONES * u64::from(b'"')));
        let backslash = zero_lanes(a ^ (ONES * u64::from(b'\\')));
        (control | quote | backslash) & ascii_lanes != 0
    };
    let Some(last) = bytes.last_chunk::<8>() else {
        return flagged(short_word(bytes));
    };
    let mut rest = bytes;
    while let Some((chunk, tail)) = rest.split_first_chunk::<8>() {
        if flagged(u64::from_le_bytes(*chunk)) {
            return true;
        }
        rest = tail;
    }
    // the last (overlapping) eight bytes cover the remainder
    !rest.is_empty() && flagged(u64::from_le_bytes(*last))
}

/// The bytes of a string shorter than eight bytes as one word, read with two
/// overlapping loads (no copy loop, no `memcpy` call); lanes the bytes do
/// not fill hold `a`, which never needs escaping. A byte may appear twice,
/// which does not change whether any byte needs escaping.
fn short_word(bytes: &[u8]) -> u64 {
    const PAD: u64 = u64::from_le_bytes([b'a'; 8]);
    if let (Some(lo), Some(hi)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        return u64::from(u32::from_le_bytes(*lo)) | u64::from(u32::from_le_bytes(*hi)) << 32;
    }
    if let (Some(lo), Some(hi)) = (bytes.first_chunk::<2>(), bytes.last_chunk::<2>()) {
        return u64::from(u16::from_le_bytes(*lo))
            | u64::from(u16::from_le_bytes(*hi)) << 16
            | PAD << 32;
    }
    match bytes.first() {
        Some(&b) => u64::from(b) | PAD << 8,
        None => PAD,
    }
}

fn decimal_digits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Exact serde_json length of a JSON value (compact form), by walking it;
/// `None` once arrays and objects nest deeper than [`MAX_PAYLOAD_DEPTH`]
/// (`level` is the value's own nesting level, 0 at the payload's root), so
/// the walk never recurses past that limit.
fn payload_len(payload: &serde_json::Value, level: usize) -> Result<Option<usize>> {
    use serde_json::Value;
    let container = |len: usize| (level < MAX_PAYLOAD_DEPTH).then_some(len);
    Ok(match payload {
        Value::Null => Some(4),
        Value::Bool(true) => Some(4),
        Value::Bool(false) => Some(5),
        Value::Number(n) => Some(number_len(n)?),
        Value::String(s) => Some(json_str_len(s)),
        Value::Array(items) => {
            let Some(mut n) = container(2 + items.len().saturating_sub(1)) else {
                return Ok(None);
            };
            for item in items {
                let Some(len) = payload_len(item, level + 1)? else {
                    return Ok(None);
                };
                n += len;
            }
            Some(n)
        }
        Value::Object(map) => {
            let Some(mut n) = container(2 + map.len().saturating_sub(1)) else {
                return Ok(None);
            };
            for (k, v) in map {
                let Some(len) = payload_len(v, level + 1)? else {
                    return Ok(None);
                };
                n += json_str_len(k) + 1 + len;
            }
            Some(n)
        }
    })
}

fn number_len(n: &serde_json::Number) -> Result<usize> {
    if let Some(u) = n.as_u64() {
        return Ok(decimal_digits(u));
    }
    if let Some(i) = n.as_i64() {
        return Ok(1 + decimal_digits(i.unsigned_abs()));
    }
    // floats: serde_json's own float formatter writes into a byte counter,
    // so the length is the encoded one whatever formatter serde_json uses
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, n)?;
    Ok(counter.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> DedupKey {
        DedupKey::new(id)
    }

    fn append_n(store: &mut Store, subject: &str, n: u64) {
        for i in 0..n {
            let event = Arc::new(Event::new(subject, "a", "s", "x", serde_json::json!(i)));
            store
                .append(DedupKey::new(&event.id), None, event, 1, 0)
                .unwrap();
        }
    }

    /// The block summaries never hide a match: for random subjects (few
    /// tokens, so hashes and blocks collide) under eviction, searching with
    /// skipping finds exactly what a full scan finds, newest first and
    /// forward from every position.
    #[test]
    fn block_skipping_finds_exactly_what_a_full_scan_finds() {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let names = ["a", "b", "rare", "orders", "x", "a_much_longer_token_name"];
        let filters = [
            "events.>",
            "events.rare.>",
            "events.*.x",
            "events.a.b",
            "events.orders.*",
            "events.*.a_much_longer_token_name.>",
            "events.b.*.x",
            "events.nothing.>",
        ];
        for max_events in [1, 63, 64, 65, 300, 5_000] {
            let mut store = Store::new(max_events, 0, Duration::from_secs(60), 100_000);
            for i in 0..2_000 {
                // mostly one busy subject, so whole blocks lack the others
                let subject = if next(10) < 8 {
                    "events.a.a".to_owned()
                } else {
                    let depth = 2 + next(3) as usize;
                    let tokens: Vec<&str> = (0..depth)
                        .map(|_| names[next(names.len() as u64) as usize])
                        .collect();
                    format!("events.{}", tokens.join("."))
                };
                let event = Arc::new(Event::new(subject, "c", "s", "x", serde_json::json!(i)));
                store
                    .append(DedupKey::new(&event.id), None, event, 1, 0)
                    .unwrap();
                if i % 97 != 0 {
                    continue;
                }
                for filter in filters {
                    let pattern = SubjectPattern::parse(filter).unwrap();
                    let required = Summary::required_by(&pattern, 1);
                    let matches = |seq: &u64| {
                        store
                            .get(*seq)
                            .is_some_and(|e| pattern.matches(&e.event.subject))
                    };
                    let all: Vec<u64> = (store.first_seq()..=store.last_seq())
                        .filter(matches)
                        .collect();
                    let newest_first: Vec<u64> = store
                        .iter_rev_candidates(required)
                        .map(|(seq, _)| seq)
                        .filter(matches)
                        .collect();
                    let mut expected = all.clone();
                    expected.reverse();
                    assert_eq!(newest_first, expected, "{filter}, max {max_events}");
                    let mut forward = Vec::new();
                    let mut seq = store.first_seq();
                    loop {
                        seq = store.next_candidate(seq, required);
                        if seq > store.last_seq() {
                            break;
                        }
                        if matches(&seq) {
                            forward.push(seq);
                        }
                        seq += 1;
                    }
                    assert_eq!(forward, all, "{filter}, max {max_events}");
                    for beyond in 1..3 {
                        let start = store.last_seq() + beyond;
                        assert_eq!(store.next_candidate(start, required), start);
                    }
                }
            }
        }
    }

    #[test]
    fn rare_subjects_are_found_without_visiting_every_block() {
        let mut store = Store::new(100_000, 0, Duration::from_secs(60), 100_000);
        for i in 0..10_000u64 {
            let subject = if i == 5_000 {
                "events.rare.x"
            } else {
                "events.busy.x"
            };
            let event = Arc::new(Event::new(subject, "c", "s", "x", serde_json::json!(i)));
            store
                .append(DedupKey::new(&event.id), None, event, 1, 0)
                .unwrap();
        }
        let required = Summary::required_by(&SubjectPattern::parse("events.rare.>").unwrap(), 1);
        // only the rare event's block is visited (unless the two hashes
        // collide, which they do not)
        assert_eq!(store.iter_rev_candidates(required).count(), 64);
        assert_eq!(store.next_candidate(1, required), 4_993);
        assert_eq!(store.next_candidate(5_002, required), 5_002);
        assert_eq!(store.next_candidate(5_057, required), 10_001);
    }

    #[test]
    fn cursors_of_dropped_consumers_are_forgotten() {
        let mut store = Store::new(4, 0, Duration::from_secs(60), 10_000);
        let pattern = || SubjectPattern::parse("events.>").unwrap();
        let kept = store.add_cursor(pattern(), 1, Arc::default());
        for _ in 0..100 {
            drop(store.add_cursor(pattern(), 1, Arc::default()));
        }
        // swept when the list has doubled, without any eviction: bounded
        // by twice the live cursors (at least 64), not by the drops
        let after_drops = store.cursor_count();
        assert!((2..=64).contains(&after_drops), "{after_drops} cursors");
        append_n(&mut store, "events.a.b", 4);
        drop(store.add_cursor(pattern(), 5, Arc::default()));
        // and at the next eviction
        append_n(&mut store, "events.a.b", 1);
        assert_eq!(store.cursor_count(), 1);
        assert_eq!(kept.take_missed(), 1);
    }

    #[test]
    fn dropped_cursors_stay_bounded_by_the_live_ones() {
        let mut store = Store::new(4, 0, Duration::from_secs(60), 10_000);
        let pattern = || SubjectPattern::parse("events.>").unwrap();
        let live: Vec<_> = (0..1_000)
            .map(|_| store.add_cursor(pattern(), 1, Arc::default()))
            .collect();
        for _ in 0..20_000 {
            drop(store.add_cursor(pattern(), 1, Arc::default()));
            assert!(store.cursor_count() <= 2 * live.len() + 1);
        }
        drop(live);
        for _ in 0..2_000 {
            drop(store.add_cursor(pattern(), 1, Arc::default()));
        }
        assert!(store.cursor_count() <= 64, "{}", store.cursor_count());
    }

    /// A subject's category is the token after the prefix, however many
    /// tokens the prefix has: under `acme.events` the summaries tell
    /// `orders` from `users` (keyed on the second token, every subject's
    /// `events`, they could skip nothing), and a filter's required bits are
    /// its own category's.
    #[test]
    fn summaries_key_on_the_token_after_the_prefix() {
        let orders = Summary::of_subject("acme.events.orders.created", 2);
        let users = Summary::of_subject("acme.events.users.created", 2);
        assert_eq!(orders, Summary::of_subject("events.orders.created", 1));
        assert_ne!(orders, users);
        let filter = SubjectPattern::parse("acme.events.orders.>").unwrap();
        assert_eq!(Summary::required_by(&filter, 2), orders);
        assert!(orders.may_hold(Summary::required_by(&filter, 2)));
        assert!(!users.may_hold(Summary::required_by(&filter, 2)));
        let wildcard = SubjectPattern::parse("acme.events.*.created").unwrap();
        assert!(Summary::required_by(&wildcard, 2).is_empty());
    }

    #[test]
    fn dedup_keys_of_every_length_are_told_apart_and_found_again() {
        let mut store = Store::new(1_000, 0, Duration::from_secs(60), 10_000);
        let ids: Vec<String> = (0..=100)
            .flat_map(|len| {
                let base = "k".repeat(len);
                // same length, last byte different; a trailing NUL (the
                // inline padding byte) must not make two ids equal
                [
                    base.clone(),
                    format!("{base}\0"),
                    format!("{}é", "k".repeat(len)),
                ]
            })
            .collect();
        let mut seqs = Vec::new();
        for id in &ids {
            match store.append(key(id), None, ev(0), 1, 0).unwrap() {
                Appended::New(seq) => seqs.push(seq),
                Appended::Duplicate(_) => panic!("{id:?} taken for a duplicate"),
            }
        }
        for (id, seq) in ids.iter().zip(&seqs) {
            match store.append(key(id), None, ev(0), 1, 0).unwrap() {
                Appended::Duplicate(first) => assert_eq!(first, *seq, "{id:?}"),
                Appended::New(_) => panic!("{id:?} not recognised as a duplicate"),
            }
        }
        assert!(matches!(
            key(&"x".repeat(INLINE_KEY)),
            DedupKey::Inline { .. }
        ));
        assert!(matches!(
            key(&"x".repeat(INLINE_KEY + 1)),
            DedupKey::Shared(_)
        ));
    }

    fn ev(n: u64) -> Arc<Event> {
        Arc::new(Event::new(
            "events.a.b",
            "a",
            "s",
            "x",
            serde_json::json!({ "n": n }),
        ))
    }

    #[test]
    fn ring_evicts_oldest_in_constant_time() {
        let mut store = Store::new(3, 0, Duration::from_secs(60), 100);
        for n in 0..5 {
            let e = ev(n);
            let id = e.id.clone();
            store.append(key(&id), None, e, 10, n).unwrap();
        }
        assert_eq!(store.len(), 3);
        assert_eq!((store.first_seq(), store.last_seq()), (3, 5));
        assert_eq!(store.bytes(), 30);
        assert!(store.get(2).is_none());
        assert_eq!(store.get(3).unwrap().event.payload["n"], 2);
        let seqs: Vec<u64> = store
            .iter_rev_candidates(Summary::default())
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, vec![5, 4, 3]);
    }

    #[test]
    fn dedup_is_bounded_in_entries_and_time() {
        let mut store = Store::new(100, 0, Duration::from_millis(30), 4);
        for n in 0..10 {
            store
                .append(key(&format!("id{n}")), None, ev(n), 1, 0)
                .unwrap();
        }
        assert_eq!(store.dedup_len(), 4, "entry bound");
        assert!(matches!(
            store.append(key("id9"), None, ev(9), 1, 0).unwrap(),
            Appended::Duplicate(10)
        ));
        assert!(
            matches!(
                store.append(key("id0"), None, ev(0), 1, 0).unwrap(),
                Appended::New(11)
            ),
            "forgotten"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            matches!(
                store.append(key("id9"), None, ev(9), 1, 0).unwrap(),
                Appended::New(12)
            ),
            "time bound"
        );
    }

    #[test]
    fn store_time_never_decreases() {
        let mut store = Store::new(10, 0, Duration::from_secs(60), 100);
        store.append(key("a"), None, ev(0), 1, 100).unwrap();
        store.append(key("b"), None, ev(1), 1, 50).unwrap();
        store.append(key("c"), None, ev(2), 1, 200).unwrap();
        assert_eq!(store.seq_at_time(100), 1);
        assert_eq!(store.seq_at_time(101), 3);
        assert_eq!(store.seq_at_time(201), 4);
    }

    #[test]
    fn escape_detection_agrees_with_a_byte_loop() {
        let slow = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        let mut seed = 0x1234_5678_9abc_def0_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: Vec<u8> = (0u8..=255).collect();
        for len in 0..40 {
            for _ in 0..300 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        // mostly harmless bytes, sometimes one that needs escaping
                        let r = next();
                        if r % 7 == 0 {
                            alphabet[(r >> 8) as usize % 256]
                        } else {
                            b'a' + (r % 26) as u8
                        }
                    })
                    .collect();
                if slow(&bytes) {
                    assert!(needs_escape(&bytes), "missed an escape in {bytes:?}");
                }
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    assert_eq!(
                        json_str_len(text),
                        serde_json::to_string(text).unwrap().len()
                    );
                }
            }
        }
        for special in [
            0u8, 0x1F, b'"', b'\\', 0x7F, 0x80, 0xA2, 0xDC, 0xFF, 0x20, 0x9F,
        ] {
            // short strings (one overlapping word) and the tail word
            for len in 1..=12 {
                for pos in 0..len {
                    let mut bytes = vec![b'x'; len];
                    bytes[pos] = special;
                    assert_eq!(
                        needs_escape(&bytes),
                        slow(&bytes),
                        "{special:#x} at {pos} of {len}"
                    );
                }
            }
            for pos in 0..16 {
                let mut bytes = vec![b'x'; 16];
                bytes[pos] = special;
                assert_eq!(needs_escape(&bytes), slow(&bytes), "{special:#x} at {pos}");
                let text = String::from_utf8_lossy(&bytes);
                assert_eq!(
                    json_str_len(&text),
                    serde_json::to_string(&text).unwrap().len()
                );
            }
        }
    }

    #[test]
    fn encoded_len_matches_serialization() {
        let mut cases = vec![
            Event::new("events.a.b", "a", "s", "x", serde_json::json!({"k": "ü"})),
            Event::typed(
                "events.a.b",
                "a",
                "t.v",
                4_000_000_000,
                "",
                "",
                serde_json::json!(null),
            ),
            Event::new(
                "events.a.b",
                "a",
                "q\"uote\\ \n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}",
                "ü✓𝄞",
                serde_json::json!([1.5, -2, "x\u{0}", i64::MIN, u64::MAX, 1e300, -0.0, 2.5e-8,
                    {"a": [], "b": {}, "c": [true, false, null], "d": 0.1}]),
            )
            .with_metadata("k1", "v\"1")
            .with_metadata("", "")
            .with_metadata("ключ", "значение"),
        ];
        cases[1].timestamp = 0;
        cases[1].metadata.insert("only".into(), "one".into());
        for e in &cases {
            assert_eq!(
                encoded_len(e).unwrap(),
                serde_json::to_vec(e).unwrap().len(),
                "{e:?}"
            );
        }
    }
}
