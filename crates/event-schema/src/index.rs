//! [`TypeIndex`]: the table validation looks schemas up in, by event type
//! and version.
//!
//! Each registry snapshot has its own (snapshots are immutable), so it is
//! laid out for lookups alone: an open-addressing table at most half full, keyed
//! by a name's length and first and last eight bytes. Those decide equality
//! for names of up to 16 bytes without `memcmp`, and hashing reads two words
//! instead of walking the name. Each type's versions are a sorted slice.
//! A changed snapshot's index is the previous one copied with the changed
//! types replaced or added (names and version lists are shared), not a
//! rebuild from the registry's types.

use crate::validate::CompiledSchema;
use std::sync::Arc;

/// Event type and version to compiled schema, for validation.
///
/// Names and version lists are shared (`Arc`), so a copy with one type
/// changed ([`with_types`](Self::with_types)) clones pointers, not names
/// and lists.
#[derive(Debug, Clone)]
pub(crate) struct TypeIndex {
    /// Open addressing with linear probing: `0` is empty, `i + 1` names
    /// `entries[i]`. The length is a power of two, at least twice the
    /// number of entries.
    slots: Box<[usize]>,
    /// `64 - log2(slots.len())`: a hash's top bits pick its first slot.
    shift: u32,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    head: Head,
    name: Arc<str>,
    /// Ascending by version.
    versions: Arc<[(u32, Arc<CompiledSchema>)]>,
}

impl Entry {
    /// `name` with `versions` (any order); `None` without versions (such a
    /// type is not indexed).
    fn new<'a>(
        name: &str,
        versions: impl IntoIterator<Item = (u32, &'a Arc<CompiledSchema>)>,
    ) -> Option<Self> {
        let mut versions: Vec<(u32, Arc<CompiledSchema>)> = versions
            .into_iter()
            .map(|(version, compiled)| (version, Arc::clone(compiled)))
            .collect();
        if versions.is_empty() {
            return None;
        }
        versions.sort_unstable_by_key(|(version, _)| *version);
        Some(Self {
            head: Head::of(name),
            name: name.into(),
            versions: versions.into(),
        })
    }
}

/// A name's length with its first and last eight bytes (overlapping, or
/// fewer for short names): equal heads mean equal names up to 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    len: usize,
    first: u64,
    last: u64,
}

impl Head {
    #[inline]
    fn of(name: &str) -> Self {
        let bytes = name.as_bytes();
        let len = bytes.len();
        let (first, last) = match (bytes.first_chunk::<8>(), bytes.last_chunk::<8>()) {
            (Some(first), Some(last)) => (u64::from_le_bytes(*first), u64::from_le_bytes(*last)),
            _ => match (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
                (Some(first), Some(last)) => (
                    u64::from(u32::from_le_bytes(*first)),
                    u64::from(u32::from_le_bytes(*last)),
                ),
                _ => {
                    // 0..=3 bytes, packed.
                    let packed = bytes
                        .iter()
                        .enumerate()
                        .fold(0, |word, (i, byte)| word | (u64::from(*byte) << (8 * i)));
                    (packed, 0)
                }
            },
        };
        Self { len, first, last }
    }

    /// Whether the head alone decides equality of two names with this head.
    #[inline]
    fn is_whole_name(self) -> bool {
        self.len <= 16
    }

    #[inline]
    fn hash(self) -> u64 {
        (self.first ^ self.last.rotate_left(32) ^ self.len as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl Default for TypeIndex {
    fn default() -> Self {
        Self::build(std::iter::empty::<(
            &str,
            std::iter::Empty<(u32, &Arc<CompiledSchema>)>,
        )>())
    }
}

impl TypeIndex {
    /// Indexes `types`: each name with its versions (any order).
    pub(crate) fn build<'a, V>(types: impl IntoIterator<Item = (&'a str, V)>) -> Self
    where
        V: IntoIterator<Item = (u32, &'a Arc<CompiledSchema>)>,
    {
        let entries: Vec<Entry> = types
            .into_iter()
            .filter_map(|(name, versions)| Entry::new(name, versions))
            .collect();
        let (slots, shift) = Self::slots_for(&entries);
        Self {
            slots,
            shift,
            entries,
        }
    }

    /// This index with the versions of each of `changed` (a name at most
    /// once) replaced by the given ones, or added if the name is not
    /// indexed. Copies the table, pointers only, and rebuilds the slots
    /// only when the table grows; a type given no versions is left as it is.
    pub(crate) fn with_types<'a, V>(&self, changed: impl IntoIterator<Item = (&'a str, V)>) -> Self
    where
        V: IntoIterator<Item = (u32, &'a Arc<CompiledSchema>)>,
    {
        let mut next = self.clone();
        for (name, versions) in changed {
            let Some(entry) = Entry::new(name, versions) else {
                continue;
            };
            if let Some(index) = next.position(entry.head, name) {
                if let Some(slot) = next.entries.get_mut(index) {
                    *slot = entry;
                }
                continue;
            }
            let head = entry.head;
            next.entries.push(entry);
            if 2 * next.entries.len() > next.slots.len() {
                (next.slots, next.shift) = Self::slots_for(&next.entries);
            } else {
                Self::place(&mut next.slots, next.shift, head, next.entries.len() - 1);
            }
        }
        next
    }

    /// A slot table (and its shift) for `entries`, at most half full.
    fn slots_for(entries: &[Entry]) -> (Box<[usize]>, u32) {
        let len = (2 * entries.len()).next_power_of_two().max(2);
        let shift = 64 - len.trailing_zeros();
        let mut slots = vec![0usize; len].into_boxed_slice();
        for (i, entry) in entries.iter().enumerate() {
            Self::place(&mut slots, shift, entry.head, i);
        }
        (slots, shift)
    }

    /// Puts entry `index`, with `head`, in the first free slot of its probe
    /// sequence (the table has one: it is at most half full).
    fn place(slots: &mut [usize], shift: u32, head: Head, index: usize) {
        let mask = slots.len() - 1;
        let mut slot = (head.hash() >> shift) as usize;
        while slots.get(slot).is_some_and(|s| *s != 0) {
            slot = (slot + 1) & mask;
        }
        if let Some(s) = slots.get_mut(slot) {
            *s = index + 1;
        }
    }

    /// The position in `entries` of `name`, whose head is `head`.
    #[inline]
    fn position(&self, head: Head, name: &str) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut slot = (head.hash() >> self.shift) as usize;
        // The table is at most half full, so the probe ends at an empty slot.
        loop {
            let index = (*self.slots.get(slot)?).checked_sub(1)?;
            let entry = self.entries.get(index)?;
            if entry.head == head && (head.is_whole_name() || *entry.name == *name) {
                return Some(index);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The schema of `event_type` at `version`.
    #[inline]
    pub(crate) fn get(&self, event_type: &str, version: u32) -> Option<&CompiledSchema> {
        let entry = self
            .entries
            .get(self.position(Head::of(event_type), event_type)?)?;
        let found = entry
            .versions
            .binary_search_by_key(&version, |(v, _)| *v)
            .ok()?;
        entry.versions.get(found).map(|(_, compiled)| &**compiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::EventSchema;

    fn compiled(event_type: &str, version: u32) -> Arc<CompiledSchema> {
        Arc::new(
            CompiledSchema::new(EventSchema::new(event_type, version))
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn heads_decide_short_names() {
        let names = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmnop",
            "abcdefghijklmnoq",
            "a\0",
            "a\0\0",
            "\0a",
            "é",
        ];
        for a in names {
            for b in names {
                assert_eq!(Head::of(a) == Head::of(b), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn finds_every_type_and_version_and_nothing_else() {
        let names: Vec<String> = (0..200)
            .map(|i| match i % 4 {
                0 => format!("t{i}"),
                1 => format!("order.created.{i}"),
                2 => format!("a.very.long.event.type.name.shared.prefix.{i}"),
                _ => format!("{i}.a.very.long.event.type.name.shared.suffix"),
            })
            .collect();
        let schemas: Vec<Vec<(u32, Arc<CompiledSchema>)>> = names
            .iter()
            .map(|name| [3, 1, 7].map(|v| (v, compiled(name, v))).to_vec())
            .collect();
        let index = TypeIndex::build(
            names
                .iter()
                .zip(&schemas)
                .map(|(name, versions)| (name.as_str(), versions.iter().map(|(v, c)| (*v, c)))),
        );
        for name in &names {
            for version in [1, 3, 7] {
                let found = index
                    .get(name, version)
                    .map(|c| (&*c.schema.event_type, c.schema.version));
                assert_eq!(found, Some((name.as_str(), version)));
            }
            for version in [0, 2, 4, 8] {
                assert!(index.get(name, version).is_none());
            }
            for other in [format!("{name}x"), name[1..].to_owned()] {
                if !names.contains(&other) {
                    assert!(index.get(&other, 1).is_none(), "{other}");
                }
            }
        }
        assert!(index.get("", 1).is_none());
        assert!(TypeIndex::default().get("t0", 1).is_none());
    }

    #[test]
    fn updated_copies_find_what_a_rebuild_finds() {
        let names: Vec<String> = (0..300)
            .map(|i| match i % 3 {
                0 => format!("t{i}"),
                1 => format!("a.very.long.event.type.name.shared.prefix.{i}"),
                _ => format!("{i}.a.very.long.event.type.name.shared.suffix"),
            })
            .collect();
        let v1: Vec<Arc<CompiledSchema>> = names.iter().map(|n| compiled(n, 1)).collect();
        let v2: Vec<Arc<CompiledSchema>> = names.iter().map(|n| compiled(n, 2)).collect();
        // Every name added with v1, one at a time or several at once
        // (crossing each growth of the table), then every third given v2.
        let mut index = TypeIndex::default();
        let mut start = 0;
        for chunk in [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 68] {
            let changed = (start..start + chunk).map(|i| (names[i].as_str(), [(1, &v1[i])]));
            let before = index.clone();
            index = index.with_types(changed);
            // The copy changed, not the original.
            assert!(before.get(&names[start], 1).is_none());
            start += chunk;
        }
        assert_eq!(start, names.len());
        let third = (0..names.len()).step_by(3);
        index = index.with_types(
            third
                .clone()
                .map(|i| (names[i].as_str(), [(2, &v2[i]), (1, &v1[i])])),
        );
        let rebuilt = TypeIndex::build(names.iter().enumerate().map(|(i, name)| {
            let versions: Vec<(u32, &Arc<CompiledSchema>)> = if i % 3 == 0 {
                vec![(1, &v1[i]), (2, &v2[i])]
            } else {
                vec![(1, &v1[i])]
            };
            (name.as_str(), versions)
        }));
        for name in &names {
            for version in 0..=3 {
                let found = |index: &TypeIndex| {
                    index
                        .get(name, version)
                        .map(|c| (c.schema.event_type.clone(), c.schema.version))
                };
                assert_eq!(found(&index), found(&rebuilt), "{name} v{version}");
            }
            assert!(index.get(&format!("{name}x"), 1).is_none());
        }
        assert!(index.get(&names[0], 2).is_some());
        assert_eq!(index.entries.len(), names.len());
    }
}
