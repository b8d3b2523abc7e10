//! The route table for tenant ids of up to 24 bytes: one open-addressing array of atomic
//! words with a sequence lock per slot.
//!
//! A slot is seven `AtomicU64` words (56 bytes): sequence, the zero-padded tenant id (three
//! words), epoch, fetch time, and stamp + flags. Readers only **load**: they read the
//! sequence, the words, then the sequence again, and retry if a writer was in between (the
//! seqlock pattern with all-atomic data, so it is data-race free and needs no `unsafe`).
//! Nothing a reader does writes memory, so reader threads never contend.
//!
//! Two probe layouts, chosen by size when the table is built:
//!
//! - **Tagged** (up to [`TAGGED_MAX_SLOTS`] slots, about three million entries): slots come in
//!   groups of eight, and a separate array holds one tag byte per slot (empty, grave, or seven
//!   bits of the key's hash), a word per group. A lookup loads its home group's tag word,
//!   finds the slots whose tag matches with a few word operations (no branch per slot) and
//!   reads the matching slot: almost always one tag word and one slot, with predictable
//!   branches. The tag array (one byte per slot) stays in the CPU caches at these sizes.
//! - **Linear** (larger tables): plain linear probing from the home slot. Beyond a few
//!   megabytes the tag array no longer stays cached, and a second memory access per lookup
//!   costs more than the probing it saves.
//!
//! In both, the probe trusts only the slot's words (tags are hints), and a chain ends at its
//! first empty slot.
//!
//! Writers are serialized by the router's writer lock and update slots in place: no copying,
//! so a change is visible as soon as `apply` returns. An insert takes the first free slot of
//! its chain; deletions leave a "grave" that keeps chains intact, and inserts reuse graves, so
//! an entry never moves while it is present. When the table holds `max_entries`, an insert
//! evicts the entry loaded longest ago among the slots of its own chain and takes that slot
//! (so no chain is ever broken).
//!
//! The memory is allocated once, at build time: `⌈max_entries × 4/3⌉` slots rounded up to a
//! whole group, 56 bytes each, plus one tag byte per slot in the tagged layout.
//!
//! This file holds the layout (constants, hash seeds, the table's geometry); `slots` the
//! sequence-locked read and write of one slot, `probe` the lookups, `write` the writer's
//! operations (insert, evict, remove, clear, rebuild).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::table::SlotData;

mod probe;
mod slots;
#[cfg(test)]
mod tests;
mod write;

const WORDS: usize = 7;
const SEQ: usize = 0;
const KEY: usize = 1;
const EPOCH: usize = 4;
const FETCHED: usize = 5;
const STAMP_META: usize = 6;

/// Slots per group (one tag word).
const GROUP: usize = 8;
/// The largest table with a tag array (4 MiB of tags). Measured on a 2-core x86-64 machine
/// with 1 MiB of L2 per core and 32 MiB of L3 (route ÷ bare `HashMap::get`, uniform keys):
/// at 1.5 million slots the tagged layout was a few percent faster than linear probing
/// (1.63–1.66 against 1.70 in interleaved rounds) and needs fewer slot reads when chains
/// hold graves; at 15 million slots it was 20–40% slower (1.40–1.66 against 1.15–1.32 in
/// criterion runs), because the tag array no longer stays in cache.
pub(crate) const TAGGED_MAX_SLOTS: usize = 4 << 20;
/// Tag of a slot never used since the table was built or cleared.
const EMPTY_TAG: u8 = 0;
/// Tag of a deleted entry's slot.
const GRAVE_TAG: u8 = 1;

/// `meta` bit of a slot whose entry was deleted (probing continues past it).
pub(crate) const GRAVE: u32 = 1 << 29;

const GRAVE_DATA: SlotData = SlotData {
    epoch: 0,
    fetched: 0,
    stamp: 0,
    meta: GRAVE,
};

pub(crate) use super::table::Words;

/// Seeds of the inline-key hash (random per router: tenant ids come from the network).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seeds([u64; 4]);

impl Seeds {
    pub(crate) fn random() -> Seeds {
        use std::hash::BuildHasher;
        let s = foldhash::fast::RandomState::default();
        Seeds([s.hash_one(1u64), s.hash_one(2u64), s.hash_one(3u64), s.hash_one(4u64)])
    }

    /// A foldhash-style folded-multiply hash of the three key words.
    #[inline]
    pub(crate) fn hash(&self, w: &Words) -> u64 {
        #[inline]
        fn fold(a: u64, b: u64) -> u64 {
            let p = u128::from(a) * u128::from(b);
            (p as u64) ^ ((p >> 64) as u64)
        }
        let [s0, s1, s2, s3] = self.0;
        let [w0, w1, w2] = *w;
        fold(fold(w0 ^ s0, w1 ^ s1) ^ w2, s2) ^ s3
    }
}

/// The outcome of [`FastTable::upsert`].
pub(crate) use super::table::Upsert;

pub(crate) struct FastTable {
    words: Box<[AtomicU64]>,
    /// Tagged layout: one word per group, byte `j` the tag of the group's slot `j`. Empty in
    /// the linear layout.
    tags: Box<[AtomicU64]>,
    /// Which layout (fixed at build time).
    tagged: bool,
    slots: usize,
    groups: usize,
    max_entries: usize,
    len: AtomicUsize,
    /// Slots holding a grave (writer-side bookkeeping).
    graves: AtomicUsize,
}

impl std::fmt::Debug for FastTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastTable")
            .field("slots", &self.slots)
            .field("len", &self.len())
            .finish()
    }
}

impl FastTable {
    pub(crate) fn new(max_entries: usize) -> FastTable {
        FastTable::with_layout(max_entries, Self::tagged_for(max_entries))
    }

    /// Whether a table for `max_entries` uses the tagged layout.
    fn tagged_for(max_entries: usize) -> bool {
        max_entries.max(1).saturating_mul(4).div_ceil(3) <= TAGGED_MAX_SLOTS
    }

    /// A table in the given layout (tests use both at every size).
    pub(crate) fn with_layout(max_entries: usize, tagged: bool) -> FastTable {
        let max_entries = max_entries.max(1);
        let groups = max_entries
            .saturating_mul(4)
            .div_ceil(3)
            .div_ceil(GROUP)
            .clamp(1, u32::MAX as usize / GROUP);
        let slots = groups * GROUP;
        FastTable {
            words: (0..slots * WORDS).map(|_| AtomicU64::new(0)).collect(),
            tags: (0..if tagged { groups } else { 0 })
                .map(|_| AtomicU64::new(0))
                .collect(),
            tagged,
            slots,
            groups,
            max_entries: max_entries.min(slots - 1),
            len: AtomicUsize::new(0),
            graves: AtomicUsize::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The key's home group (tagged layout).
    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        (((hash >> 32) * self.groups as u64) >> 32) as usize
    }

    /// The key's home slot (linear layout).
    #[inline(always)]
    fn home_slot(&self, hash: u64) -> usize {
        (((hash >> 32) * self.slots as u64) >> 32) as usize
    }

    #[inline(always)]
    fn next_group(&self, g: usize) -> usize {
        if g + 1 == self.groups {
            0
        } else {
            g + 1
        }
    }
}
