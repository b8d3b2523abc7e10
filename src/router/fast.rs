//! The route table for tenant ids of up to 24 bytes: one open-addressing array of atomic
//! words with a sequence lock per slot.
//!
//! A slot is seven `AtomicU64` words (56 bytes): sequence, the zero-padded tenant id (three
//! words), epoch, fetch time, and stamp + flags. A lookup hashes the id, goes to its home slot
//! and probes linearly; at the load this table is sized for (at most 3/4 at the size bound)
//! that is usually one or two adjacent cache lines. Readers only **load**: they read the
//! sequence, the words, then the sequence again, and retry if a writer was in between (the
//! seqlock pattern with all-atomic data, so it is data-race free and needs no `unsafe`).
//! Nothing a reader does writes memory, so reader threads never contend.
//!
//! Writers are serialized by the router's writer lock and update slots in place: no copying,
//! so a change is visible as soon as `apply` returns. Deletions leave a "grave" that keeps
//! probe chains intact; inserts reuse graves. When the table holds `max_entries`, an insert
//! evicts the entry loaded longest ago among the slots of its own probe chain and takes that
//! slot (so no chain is ever broken).
//!
//! The memory is allocated once, at build time: `⌈max_entries × 4/3⌉ × 56` bytes.

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};

use super::table::SlotData;

const WORDS: usize = 7;
const SEQ: usize = 0;
const KEY: usize = 1;
const EPOCH: usize = 4;
const FETCHED: usize = 5;
const STAMP_META: usize = 6;

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
    slots: usize,
    max_entries: usize,
    len: AtomicUsize,
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
        let max_entries = max_entries.max(1);
        let slots = max_entries.saturating_mul(4).div_ceil(3).clamp(4, u32::MAX as usize);
        FastTable {
            words: (0..slots * WORDS).map(|_| AtomicU64::new(0)).collect(),
            slots,
            max_entries: max_entries.min(slots - 1),
            len: AtomicUsize::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        (((hash >> 32) * self.slots as u64) >> 32) as usize
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

    /// Writes a slot (writer lock held).
    fn write(&self, slot: usize, key: Words, data: SlotData) {
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
    }

    /// The entry for `key`, if present.
    #[inline(always)]
    pub(crate) fn get(&self, key: &Words, hash: u64) -> Option<SlotData> {
        let mut i = self.home(hash);
        for _ in 0..self.slots {
            let r = self.read(i)?;
            if same(&r.key, key) {
                return Some(r.data);
            }
            if r.is_empty() {
                return None;
            }
            i += 1;
            if i == self.slots {
                i = 0;
            }
        }
        None
    }

    /// Finds the slot holding `key`, or where to put it: `(Some(slot), _)` when present, else
    /// `(None, free)` with the first grave or the empty slot ending the chain, and the chain's
    /// occupied slot loaded longest ago (eviction victim).
    fn locate(&self, key: &Words, hash: u64) -> (Option<usize>, Option<usize>, Option<(usize, u64)>) {
        let mut i = self.home(hash);
        let mut free = None;
        let mut oldest: Option<(usize, u64)> = None;
        for _ in 0..self.slots {
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
            i += 1;
            if i == self.slots {
                i = 0;
            }
        }
        (None, free, oldest)
    }

    /// Inserts or replaces `key`'s entry unless the table holds a larger epoch (writer lock
    /// held).
    pub(crate) fn upsert(&self, key: &Words, hash: u64, data: SlotData) -> Upsert {
        let (found, free, oldest) = self.locate(key, hash);
        if let Some(slot) = found {
            return match self.read(slot) {
                Some(old) if old.data.epoch > data.epoch => Upsert::Kept,
                _ => {
                    self.write(slot, *key, data);
                    Upsert::Replaced
                }
            };
        }
        if self.len() >= self.max_entries {
            if let Some((victim, _)) = oldest {
                self.write(victim, *key, data);
                return Upsert::Inserted { evicted: true };
            }
        }
        match free {
            Some(slot) => {
                // At the bound with nothing to evict in this chain: evict the next entry after
                // the free slot instead (leaving a grave keeps its own chain intact).
                let evicted = self.len() >= self.max_entries && self.evict_after(slot);
                self.write(slot, *key, data);
                if !evicted {
                    self.len.fetch_add(1, Ordering::Relaxed);
                }
                Upsert::Inserted { evicted }
            }
            None => match oldest {
                Some((victim, _)) => {
                    self.write(victim, *key, data);
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
                    self.write(i, [0; 3], GRAVE_DATA);
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
                self.write(slot, [0; 3], GRAVE_DATA);
                self.len.fetch_sub(1, Ordering::Relaxed);
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
                );
            }
        }
        self.len.store(0, Ordering::Relaxed);
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
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..200)) {
            let seeds = Seeds::random();
            let table = FastTable::new(64);
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
                prop_assert_eq!(table.len(), model.len());
                for k in 0u8..40 {
                    let w = key(k);
                    let got = table.get(&w, seeds.hash(&w)).map(|d| (d.epoch, d.stamp));
                    prop_assert_eq!(got, model.get(&k).map(|e| (*e, u32::from(k))));
                }
            }
        }

        /// At the bound, inserts evict: the table never holds more than `max_entries`, and the
        /// newest insert is always found.
        #[test]
        fn bound_holds(keys in proptest::collection::vec(0u8..200, 1..300)) {
            let seeds = Seeds::random();
            let table = FastTable::new(16);
            for (t, k) in keys.into_iter().enumerate() {
                let w = key(k);
                let data = SlotData { epoch: 1, fetched: t as u64, stamp: 1, meta: 0 };
                table.upsert(&w, seeds.hash(&w), data);
                prop_assert!(table.len() <= 16);
                prop_assert!(table.get(&w, seeds.hash(&w)).is_some());
            }
        }
    }
}
