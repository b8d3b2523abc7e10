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

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};

use super::table::SlotData;

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

/// The tag of a live entry: the hash's low seven bits with the high bit set (so it is never
/// [`EMPTY_TAG`] or [`GRAVE_TAG`]); the group comes from the hash's high bits.
#[inline(always)]
fn tag_of(hash: u64) -> u8 {
    0x80 | (hash as u8 & 0x7f)
}

/// The high bit of every byte of `x` that is zero, and no other bit (exact: no false
/// positives, unlike the shorter has-zero-byte trick).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// Key equality on scalars (an array `==` may go through the stack as a vector compare and
/// stall on store forwarding).
#[inline(always)]
fn same(a: &Words, b: &Words) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2])) == 0
}

/// What one read of a slot saw.
#[derive(Clone, Copy)]
struct Read {
    key: Words,
    data: SlotData,
}

impl Read {
    fn is_empty(&self) -> bool {
        self.key[0] == 0 && self.data.meta & GRAVE == 0
    }
    fn is_grave(&self) -> bool {
        self.key[0] == 0 && self.data.meta & GRAVE != 0
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

    #[inline]
    fn word(&self, slot: usize, w: usize) -> Option<&AtomicU64> {
        self.words.get(slot * WORDS + w)
    }

    /// A consistent read of `slot` (retries while a writer is inside it).
    #[inline(always)]
    fn read(&self, slot: usize) -> Option<Read> {
        let base = slot * WORDS;
        let w = self.words.get(base..base + WORDS)?;
        let [seq, k0, k1, k2, epoch, fetched, sm] = w else {
            return None;
        };
        loop {
            let s1 = seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let key = [
                k0.load(Ordering::Relaxed),
                k1.load(Ordering::Relaxed),
                k2.load(Ordering::Relaxed),
            ];
            let e = epoch.load(Ordering::Relaxed);
            let f = fetched.load(Ordering::Relaxed);
            let x = sm.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == s1 {
                return Some(Read {
                    key,
                    data: SlotData {
                        epoch: e,
                        fetched: f,
                        stamp: x as u32,
                        meta: (x >> 32) as u32,
                    },
                });
            }
        }
    }

    /// Sets `slot`'s tag (writer lock held). Published after the slot's words, so a reader
    /// that sees the tag finds the words (and one that does not is concurrent with the write).
    fn set_tag(&self, slot: usize, tag: u8) {
        if let Some(w) = self.tags.get(slot / GROUP) {
            let shift = (slot % GROUP) * 8;
            let v = w.load(Ordering::Relaxed);
            w.store((v & !(0xff << shift)) | (u64::from(tag) << shift), Ordering::Release);
        }
    }

    /// Writes a slot and its tag (writer lock held).
    fn write(&self, slot: usize, key: Words, data: SlotData, tag: u8) {
        let Some(seq) = self.word(slot, SEQ) else { return };
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, k) in key.iter().enumerate() {
            if let Some(w) = self.word(slot, KEY + i) {
                w.store(*k, Ordering::Relaxed);
            }
        }
        if let Some(w) = self.word(slot, EPOCH) {
            w.store(data.epoch, Ordering::Relaxed);
        }
        if let Some(w) = self.word(slot, FETCHED) {
            w.store(data.fetched, Ordering::Relaxed);
        }
        if let Some(w) = self.word(slot, STAMP_META) {
            w.store(u64::from(data.stamp) | (u64::from(data.meta) << 32), Ordering::Relaxed);
        }
        seq.store(s.wrapping_add(2), Ordering::Release);
        self.set_tag(slot, tag);
    }

    /// The entry for `key`, if present.
    #[inline(always)]
    pub(crate) fn get(&self, key: &Words, hash: u64) -> Option<SlotData> {
        if self.tagged {
            self.get_tagged(key, hash)
        } else {
            self.get_linear(key, hash)
        }
    }

    /// Tagged lookup. Per group: one tag-word load, a word-wise match of the key's tag, and a
    /// consistent read of each matching slot (almost always exactly one). The chain ends at the
    /// first group with an empty slot. A tag that is out of date (a writer is inserting or
    /// deleting right now) can only make the lookup miss an entry written concurrently with it.
    #[inline(always)]
    fn get_tagged(&self, key: &Words, hash: u64) -> Option<SlotData> {
        let want = u64::from(tag_of(hash)) * 0x0101_0101_0101_0101;
        let mut g = self.home(hash);
        for _ in 0..self.groups {
            let tags = self.tags.get(g)?.load(Ordering::Acquire);
            let mut hits = zero_bytes(tags ^ want);
            while hits != 0 {
                let slot = g * GROUP + (hits.trailing_zeros() / 8) as usize;
                let r = self.read(slot)?;
                if same(&r.key, key) {
                    return Some(r.data);
                }
                hits &= hits - 1;
            }
            if zero_bytes(tags) != 0 {
                return None;
            }
            g = self.next_group(g);
        }
        None
    }

    /// Linear lookup. The probe compares only key words, without the sequence check; the slot
    /// that matches (and a slot that looks free, which may end the chain) is then read
    /// consistently. This is sound because an entry never moves while it is present, so a
    /// torn read of another key's slot can at worst look like that other key, and a torn read
    /// of a slot being rewritten for `key` itself shows `key`'s unchanged words.
    #[inline(always)]
    fn get_linear(&self, key: &Words, hash: u64) -> Option<SlotData> {
        let mut i = self.home_slot(hash);
        for _ in 0..self.slots {
            let base = i * WORDS;
            let [k0, k1, k2] = self.words.get(base + KEY..base + KEY + 3)? else {
                return None;
            };
            let k = [
                k0.load(Ordering::Relaxed),
                k1.load(Ordering::Relaxed),
                k2.load(Ordering::Relaxed),
            ];
            // A grave (zero key, grave bit) is passed without the consistent read; an empty-looking
            // slot is read consistently, since it may end the chain.
            let grave = k[0] == 0
                && self
                    .words
                    .get(base + STAMP_META)
                    .is_some_and(|w| (w.load(Ordering::Relaxed) >> 32) as u32 & GRAVE != 0);
            if same(&k, key) || (k[0] == 0 && !grave) {
                let r = self.read(i)?;
                if same(&r.key, key) {
                    return Some(r.data);
                }
                if r.is_empty() {
                    return None;
                }
            }
            i += 1;
            if i == self.slots {
                i = 0;
            }
        }
        None
    }

    /// The slots of `hash`'s chain in probe order, from its home (whole groups in the tagged
    /// layout, so the chain's first empty slot may be followed by more empty ones). The caller
    /// stops at the first empty slot.
    fn chain(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = if self.tagged {
            self.home(hash) * GROUP
        } else {
            self.home_slot(hash)
        };
        (start..self.slots).chain(0..start)
    }

    /// Finds the slot holding `key`, or where to put it: `(Some(slot), _)` when present, else
    /// `(None, free)` with the chain's first free slot (grave or empty), and the chain's
    /// occupied slot loaded longest ago (eviction victim).
    fn locate(&self, key: &Words, hash: u64) -> (Option<usize>, Option<usize>, Option<(usize, u64)>) {
        let mut free = None;
        let mut oldest: Option<(usize, u64)> = None;
        for i in self.chain(hash) {
            let Some(r) = self.read(i) else { break };
            if same(&r.key, key) {
                return (Some(i), free, oldest);
            }
            if r.is_empty() {
                return (None, free.or(Some(i)), oldest);
            }
            if r.is_grave() {
                free = free.or(Some(i));
            } else {
                let older = match oldest {
                    None => true,
                    Some((_, f)) => r.data.fetched < f,
                };
                if older {
                    oldest = Some((i, r.data.fetched));
                }
            }
        }
        (None, free, oldest)
    }

    /// Inserts or replaces `key`'s entry unless the table holds a larger epoch (writer lock
    /// held).
    pub(crate) fn upsert(&self, key: &Words, hash: u64, data: SlotData) -> Upsert {
        let tag = tag_of(hash);
        let (found, free, oldest) = self.locate(key, hash);
        if let Some(slot) = found {
            return match self.read(slot) {
                Some(old) if old.data.epoch > data.epoch => Upsert::Kept,
                _ => {
                    self.write(slot, *key, data, tag);
                    Upsert::Replaced
                }
            };
        }
        if self.len() >= self.max_entries {
            if let Some((victim, _)) = oldest {
                self.write(victim, *key, data, tag);
                return Upsert::Inserted { evicted: true };
            }
        }
        match free {
            Some(slot) => {
                // At the bound with nothing to evict in this chain: evict the next entry after
                // the free slot instead (leaving a grave keeps its own chain intact).
                let evicted = self.len() >= self.max_entries && self.evict_after(slot);
                if self.read(slot).is_some_and(|r| r.is_grave()) {
                    self.graves.fetch_sub(1, Ordering::Relaxed);
                }
                self.write(slot, *key, data, tag);
                if !evicted {
                    self.len.fetch_add(1, Ordering::Relaxed);
                }
                Upsert::Inserted { evicted }
            }
            None => match oldest {
                Some((victim, _)) => {
                    self.write(victim, *key, data, tag);
                    Upsert::Inserted { evicted: true }
                }
                None => Upsert::Kept,
            },
        }
    }

    /// Turns the first live entry after `slot` into a grave; returns whether one was found.
    fn evict_after(&self, slot: usize) -> bool {
        let mut i = slot;
        for _ in 0..self.slots {
            i += 1;
            if i == self.slots {
                i = 0;
            }
            if let Some(r) = self.read(i) {
                if !r.is_empty() && !r.is_grave() {
                    self.write(i, [0; 3], GRAVE_DATA, GRAVE_TAG);
                    self.graves.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
            }
        }
        false
    }

    /// Deletes `key`'s entry, leaving a grave (writer lock held).
    pub(crate) fn remove(&self, key: &Words, hash: u64) -> bool {
        let (found, _, _) = self.locate(key, hash);
        match found {
            Some(slot) => {
                self.write(slot, [0; 3], GRAVE_DATA, GRAVE_TAG);
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.graves.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Empties the table (writer lock held).
    pub(crate) fn clear(&self) {
        for slot in 0..self.slots {
            if self.read(slot).is_some_and(|r| !r.is_empty()) {
                self.write(
                    slot,
                    [0; 3],
                    SlotData {
                        epoch: 0,
                        fetched: 0,
                        stamp: 0,
                        meta: 0,
                    },
                    EMPTY_TAG,
                );
            }
        }
        for t in self.tags.iter() {
            t.store(0, Ordering::Release);
        }
        self.len.store(0, Ordering::Relaxed);
        self.graves.store(0, Ordering::Relaxed);
    }

    /// Slots holding a grave.
    pub(crate) fn graves(&self) -> usize {
        self.graves.load(Ordering::Relaxed)
    }

    /// Rebuilds the table when graves fill more than an eighth of it (writer lock held);
    /// returns whether it did. Graves are never reclaimed otherwise, so a router whose host
    /// invalidates tenant after tenant (or that keeps evicting at its bound) would end with no
    /// empty slot, and a lookup of an uncached id would probe the whole table. Live entries
    /// fill at most three quarters of the slots, so with at most an eighth in graves at least
    /// an eighth stays empty. The rebuild re-inserts the live entries
    /// (`hash` must be the hash they were inserted with); lookups during it may miss entries
    /// that are being moved, which only costs them a registry read.
    pub(crate) fn rebuild_if_full_of_graves(&self, hash: impl Fn(&Words) -> u64) -> bool {
        if self.graves() <= self.slots / 8 {
            return false;
        }
        let live: Vec<(Words, SlotData)> = (0..self.slots)
            .filter_map(|i| self.read(i))
            .filter(|r| !r.is_empty() && !r.is_grave())
            .map(|r| (r.key, r.data))
            .collect();
        self.clear();
        for (key, data) in live {
            self.upsert(&key, hash(&key), data);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::router::table::Key;

    fn key(i: u8) -> Words {
        match Key::parse(&format!("t{i}")) {
            Ok(Key::Short(w)) => w,
            _ => [0; 3],
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(u8, u64),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..40, 0u64..20).prop_map(|(k, e)| Op::Upsert(k, e)),
            1 => (0u8..40).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Model-based: without hitting the bound, the table answers like a map that keeps the
        /// largest epoch; the length matches; removals and graves never hide other keys.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..200), tagged in any::<bool>()) {
            let seeds = Seeds::random();
            let table = FastTable::with_layout(64, tagged);
            let mut model: HashMap<u8, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Upsert(k, e) => {
                        let data = SlotData { epoch: e, fetched: e, stamp: u32::from(k), meta: 0 };
                        let w = key(k);
                        let up = table.upsert(&w, seeds.hash(&w), data);
                        let cur = model.get(&k).copied();
                        match cur {
                            Some(old) if old > e => prop_assert_eq!(up, Upsert::Kept),
                            Some(_) => prop_assert_eq!(up, Upsert::Replaced),
                            None => prop_assert_eq!(up, Upsert::Inserted { evicted: false }),
                        }
                        if cur.map_or(true, |old| old <= e) {
                            model.insert(k, e);
                        }
                    }
                    Op::Remove(k) => {
                        let w = key(k);
                        prop_assert_eq!(table.remove(&w, seeds.hash(&w)), model.remove(&k).is_some());
                    }
                }
                table.rebuild_if_full_of_graves(|w| seeds.hash(w));
                prop_assert!(table.graves() <= table.slots / 8);
                prop_assert_eq!(table.len(), model.len());
                for k in 0u8..40 {
                    let w = key(k);
                    let got = table.get(&w, seeds.hash(&w)).map(|d| (d.epoch, d.stamp));
                    prop_assert_eq!(got, model.get(&k).map(|e| (*e, u32::from(k))));
                }
            }
        }

        /// The same with hashes from a tiny set, so that keys share home groups and tags:
        /// chains run over several groups, several slots of a group match a tag, and graves
        /// sit in the middle of chains.
        #[test]
        fn behaves_like_a_map_under_collisions(
            ops in proptest::collection::vec(op(), 1..300),
            spread in 1u64..4,
            tagged in any::<bool>(),
            with_rebuild in any::<bool>(),
        ) {
            let hash = |k: u8| (u64::from(k) % spread).wrapping_mul(0x9e37_79b9_7f4a_7c15) & !0x7f;
            let table = FastTable::with_layout(48, tagged);
            let mut model: HashMap<u8, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Upsert(k, e) => {
                        let data = SlotData { epoch: e, fetched: e, stamp: u32::from(k), meta: 0 };
                        let up = table.upsert(&key(k), hash(k), data);
                        let cur = model.get(&k).copied();
                        match cur {
                            Some(old) if old > e => prop_assert_eq!(up, Upsert::Kept),
                            Some(_) => prop_assert_eq!(up, Upsert::Replaced),
                            None => prop_assert_eq!(up, Upsert::Inserted { evicted: false }),
                        }
                        if cur.map_or(true, |old| old <= e) {
                            model.insert(k, e);
                        }
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(table.remove(&key(k), hash(k)), model.remove(&k).is_some());
                    }
                }
                if with_rebuild {
                    let by_key: HashMap<Words, u64> = (0u8..40).map(|k| (key(k), hash(k))).collect();
                    table.rebuild_if_full_of_graves(|w| by_key.get(w).copied().unwrap_or(0));
                }
                prop_assert_eq!(table.len(), model.len());
                for k in 0u8..40 {
                    let got = table.get(&key(k), hash(k)).map(|d| (d.epoch, d.stamp));
                    prop_assert_eq!(got, model.get(&k).map(|e| (*e, u32::from(k))));
                }
            }
        }

        /// At the bound, inserts evict: the table never holds more than `max_entries`, and the
        /// newest insert is always found.
        #[test]
        fn bound_holds(keys in proptest::collection::vec(0u8..200, 1..300), tagged in any::<bool>()) {
            let seeds = Seeds::random();
            let table = FastTable::with_layout(16, tagged);
            for (t, k) in keys.into_iter().enumerate() {
                let w = key(k);
                let data = SlotData { epoch: 1, fetched: t as u64, stamp: 1, meta: 0 };
                table.upsert(&w, seeds.hash(&w), data);
                prop_assert!(table.len() <= 16);
                prop_assert!(table.get(&w, seeds.hash(&w)).is_some());
            }
        }
    }

    /// `zero_bytes` flags exactly the zero bytes, for every byte value at every position.
    #[test]
    fn zero_bytes_is_exact() {
        for pos in 0..8 {
            for b in 0u64..256 {
                for fill in [0u64, 1, 0x7f, 0x80, 0xff] {
                    let mut x = 0u64;
                    for i in 0..8 {
                        let byte = if i == pos { b } else { fill };
                        x |= byte << (8 * i);
                    }
                    let want = (0..8)
                        .filter(|i| (x >> (8 * i)) & 0xff == 0)
                        .fold(0u64, |m, i| m | (0x80 << (8 * i)));
                    assert_eq!(zero_bytes(x), want, "{x:#018x}");
                }
            }
        }
    }

    /// After `clear`, nothing is found, and the table fills again to its bound.
    #[test]
    fn clear_empties_slots_and_tags() {
        for tagged in [false, true] {
            clear_empties(tagged);
        }
    }

    fn clear_empties(tagged: bool) {
        let seeds = Seeds::random();
        let table = FastTable::with_layout(30, tagged);
        let data = SlotData {
            epoch: 1,
            fetched: 1,
            stamp: 1,
            meta: 0,
        };
        for k in 0..30 {
            let w = key(k);
            table.upsert(&w, seeds.hash(&w), data);
        }
        table.clear();
        assert_eq!(table.len(), 0);
        assert!(table.tags.iter().all(|t| t.load(Ordering::Relaxed) == 0));
        for k in 0..30 {
            let w = key(k);
            assert_eq!(table.get(&w, seeds.hash(&w)), None);
            assert_eq!(
                table.upsert(&w, seeds.hash(&w), data),
                Upsert::Inserted { evicted: false }
            );
        }
        assert_eq!(table.len(), 30);
    }

    /// The layout follows the size: tagged up to `TAGGED_MAX_SLOTS` slots.
    #[test]
    fn layout_follows_size() {
        assert!(FastTable::new(1_000).tagged);
        assert!(FastTable::tagged_for(1_000_000));
        assert!(FastTable::tagged_for(TAGGED_MAX_SLOTS * 3 / 4));
        assert!(!FastTable::tagged_for(TAGGED_MAX_SLOTS));
        assert!(!FastTable::tagged_for(10_000_000));
        assert!(!FastTable::with_layout(1_000, false).tagged);
    }

    /// Invalidation churn (insert a new key, remove an old one, forever) keeps free slots:
    /// graves are reclaimed by rebuilds, so a lookup of an absent key stays short.
    #[test]
    fn churn_does_not_fill_the_table_with_graves() {
        for tagged in [false, true] {
            let seeds = Seeds::random();
            let table = FastTable::with_layout(1_000, tagged);
            let data = SlotData {
                epoch: 1,
                fetched: 1,
                stamp: 1,
                meta: 0,
            };
            let w = |i: u32| match Key::parse(&format!("churn-{i}")) {
                Ok(Key::Short(w)) => w,
                _ => [0; 3],
            };
            let mut rebuilds = 0;
            for i in 0..20_000u32 {
                let k = w(i);
                table.upsert(&k, seeds.hash(&k), data);
                if i >= 500 {
                    let old = w(i - 500);
                    assert!(table.remove(&old, seeds.hash(&old)));
                    if table.rebuild_if_full_of_graves(|w| seeds.hash(w)) {
                        rebuilds += 1;
                    }
                }
                assert!(table.graves() <= table.slots / 8);
            }
            assert!(rebuilds > 0, "tagged {tagged}");
            assert_eq!(table.len(), 500);
            for i in 19_500..20_000 {
                assert!(table.get(&w(i), seeds.hash(&w(i))).is_some());
            }
            let empty = (0..table.slots)
                .filter(|&i| table.read(i).is_some_and(|r| r.is_empty()))
                .count();
            assert!(empty >= table.slots / 2, "{empty} of {}", table.slots);
        }
    }

    /// Eviction at the bound (no removals at all) keeps free slots too: the linear layout used
    /// to end with none (each insert whose chain held no live entry took an empty slot and
    /// evicted elsewhere, leaving a grave).
    #[test]
    fn eviction_churn_keeps_empty_slots() {
        for tagged in [false, true] {
            let seeds = Seeds::random();
            let table = FastTable::with_layout(1_000, tagged);
            let w = |i: u32| match Key::parse(&format!("k{i}")) {
                Ok(Key::Short(w)) => w,
                _ => [0; 3],
            };
            for i in 0..100_000u32 {
                let k = w(i);
                let up = table.upsert(
                    &k,
                    seeds.hash(&k),
                    SlotData {
                        epoch: 1,
                        fetched: u64::from(i),
                        stamp: 1,
                        meta: 0,
                    },
                );
                if up == (Upsert::Inserted { evicted: true }) {
                    table.rebuild_if_full_of_graves(|w| seeds.hash(w));
                }
                assert!(table.graves() <= table.slots / 8);
                assert!(table.get(&k, seeds.hash(&k)).is_some());
            }
            assert_eq!(table.len(), table.max_entries);
            let empty = (0..table.slots)
                .filter(|&i| table.read(i).is_some_and(|r| r.is_empty()))
                .count();
            assert!(empty >= table.slots / 8, "tagged {tagged}: {empty} of {}", table.slots);
        }
    }

    proptest! {
        /// At the bound, under collisions and removals, in both layouts: every entry the table
        /// counts is reachable (len == number of keys `get` finds), no key is stored twice,
        /// and the newest insert is found.
        #[test]
        fn eviction_keeps_entries_reachable(
            ops in proptest::collection::vec((0u8..120, any::<bool>()), 1..400),
            spread in 1u64..6,
            tagged in any::<bool>(),
            max in 1usize..24,
        ) {
            let hash = |k: u8| (u64::from(k) % spread).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(k);
            let by_key: HashMap<Words, u64> = (0u8..120).map(|k| (key(k), hash(k))).collect();
            let table = FastTable::with_layout(max, tagged);
            for (t, (k, del)) in ops.into_iter().enumerate() {
                if del && k % 3 == 0 {
                    table.remove(&key(k), hash(k));
                } else {
                    let data = SlotData { epoch: t as u64, fetched: t as u64, stamp: u32::from(k), meta: 0 };
                    table.upsert(&key(k), hash(k), data);
                    prop_assert_eq!(table.get(&key(k), hash(k)).map(|d| d.epoch), Some(t as u64));
                }
                table.rebuild_if_full_of_graves(|w| by_key.get(w).copied().unwrap_or(0));
                let found = (0u8..120)
                    .filter(|k| table.get(&key(*k), hash(*k)).is_some_and(|d| d.stamp == u32::from(*k)))
                    .count();
                prop_assert!(table.len() <= table.max_entries);
                prop_assert_eq!(found, table.len());
                let live = (0..table.slots)
                    .filter(|s| table.read(*s).is_some_and(|r| !r.is_empty() && !r.is_grave()))
                    .count();
                prop_assert_eq!(live, table.len());
            }
        }
    }

    /// Readers never miss an entry nobody writes, and see one key's epochs in order, while a
    /// writer churns (inserts, replaces, removes) other keys of the same chains.
    fn concurrent(tagged: bool) {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let hash = |k: u8| (u64::from(k) % 3).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(k);
        let table = Arc::new(FastTable::with_layout(64, tagged));
        for k in 0u8..16 {
            let d = SlotData {
                epoch: 1,
                fetched: 1,
                stamp: u32::from(k),
                meta: 0,
            };
            table.upsert(&key(k), hash(k), d);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (table, stop) = (table.clone(), stop.clone());
            std::thread::spawn(move || {
                for round in 0..20_000u64 {
                    for k in 16u8..56 {
                        if (u64::from(k) + round) % 3 == 0 {
                            table.remove(&key(k), hash(k));
                        } else {
                            let d = SlotData {
                                epoch: round,
                                fetched: round,
                                stamp: u32::from(k),
                                meta: 0,
                            };
                            table.upsert(&key(k), hash(k), d);
                        }
                    }
                    let d = SlotData {
                        epoch: round + 2,
                        fetched: round + 2,
                        stamp: 200,
                        meta: 0,
                    };
                    table.upsert(&key(200), hash(200), d);
                }
                stop.store(true, Ordering::Release);
            })
        };
        let reader = {
            let (table, stop) = (table.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    for k in 0u8..16 {
                        let got = table.get(&key(k), hash(k));
                        assert_eq!(got.map(|d| d.stamp), Some(u32::from(k)), "stable key {k} missed");
                    }
                    for k in 16u8..56 {
                        if let Some(d) = table.get(&key(k), hash(k)) {
                            assert_eq!(d.stamp, u32::from(k));
                        }
                    }
                    if let Some(d) = table.get(&key(200), hash(200)) {
                        assert!(d.epoch >= last, "epoch went back {} -> {}", last, d.epoch);
                        last = d.epoch;
                    }
                    n += 1;
                }
                n
            })
        };
        assert!(writer.join().is_ok());
        assert!(reader.join().is_ok_and(|n| n > 0));
    }

    #[test]
    fn readers_are_consistent_under_churn_tagged() {
        concurrent(true);
    }

    #[test]
    fn readers_are_consistent_under_churn_linear() {
        concurrent(false);
    }
}
