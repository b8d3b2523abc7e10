//! The route table: copy-on-write shards of inline-key hash tables.
//!
//! Readers load one shard through an [`ArcSwap`] (which touches only a per-thread debt slot,
//! never a cache line shared with other readers) and probe a hashbrown [`HashTable`] whose
//! slots hold tenant ids of up to [`INLINE`] bytes inline (no pointer chase). Writers are
//! serialized by the router; each write clones the shards it touches, edits the clones and
//! publishes them, so a reader always sees a whole shard as of one publish. Shards are small
//! (about 150 entries at the configured bound), so a clone costs a few microseconds.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::model::{AssignmentMode, TenantId, TenantIdError};

/// Tenant ids up to this many bytes are stored inline in the table slot.
pub(crate) const INLINE: usize = 24;

/// Target entries per shard at the size bound: 192 entries fit a 256-bucket table.
const PER_SHARD: usize = 192;

/// `meta` bit: the tenant's mode is not `Serving`; look it up in the shard's mode list.
pub(crate) const HAS_MODE: u32 = 1 << 31;
/// `meta` bit: the entry records that the tenant has no assignment.
pub(crate) const TOMBSTONE: u32 = 1 << 30;
/// `meta` bits holding the router generation the entry was loaded in.
pub(crate) const GEN_MASK: u32 = TOMBSTONE - 1;

/// A validated tenant id as the table keys it.
#[derive(Clone, Copy)]
pub(crate) enum Key<'a> {
    /// Zero-padded inline bytes (tenant ids never contain a zero byte, so padding is
    /// unambiguous).
    Short([u8; INLINE]),
    /// Longer ids, compared as text.
    Long(&'a str),
}

impl<'a> Key<'a> {
    /// Validates `tenant` (never allocating) and makes its key.
    #[inline]
    pub(crate) fn parse(tenant: &'a str) -> Result<Key<'a>, TenantIdError> {
        TenantId::validate(tenant)?;
        let bytes = tenant.as_bytes();
        if bytes.len() <= INLINE {
            let mut k = [0u8; INLINE];
            if let Some(dst) = k.get_mut(..bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            Ok(Key::Short(k))
        } else {
            Ok(Key::Long(tenant))
        }
    }
}

/// What a slot records besides its key (24 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotData {
    /// Assignment epoch (for tombstones: the version of the unassign).
    pub(crate) epoch: u64,
    /// When the entry was loaded or last confirmed, in clock milliseconds.
    pub(crate) fetched: u64,
    /// Serving stamp.
    pub(crate) stamp: u32,
    /// Flags and generation.
    pub(crate) meta: u32,
}

impl SlotData {
    pub(crate) fn generation(&self) -> u32 {
        self.meta & GEN_MASK
    }
    pub(crate) fn is_tombstone(&self) -> bool {
        self.meta & TOMBSTONE != 0
    }
    pub(crate) fn has_mode(&self) -> bool {
        self.meta & HAS_MODE != 0
    }
}

#[derive(Clone)]
struct Slot<K> {
    key: K,
    data: SlotData,
}

#[derive(Clone)]
struct ModeRec {
    tenant: Box<str>,
    mode: AssignmentMode,
}

/// One shard: inline-key slots, long-key slots, and the modes of the few tenants that are not
/// simply serving (dual-write, frozen).
#[derive(Clone, Default)]
pub(crate) struct Shard {
    short: HashTable<Slot<[u8; INLINE]>>,
    long: HashTable<Slot<Box<str>>>,
    modes: Vec<ModeRec>,
}

/// The outcome of an upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// The tenant was not in the shard.
    Inserted {
        /// Whether another entry was evicted to make room.
        evicted: bool,
    },
    /// An entry with a smaller epoch (or the same epoch, refreshed) was replaced.
    Replaced,
    /// The shard holds a larger epoch: nothing changed.
    Kept,
}

fn short_hash(hasher: &RandomState, k: &[u8; INLINE]) -> u64 {
    hasher.hash_one(k)
}

fn long_hash(hasher: &RandomState, s: &str) -> u64 {
    hasher.hash_one(s.as_bytes())
}

impl Shard {
    #[inline]
    pub(crate) fn get(&self, key: &Key<'_>, hash: u64) -> Option<SlotData> {
        match key {
            Key::Short(k) => self.short.find(hash, |s| s.key == *k).map(|s| s.data),
            Key::Long(t) => self.long.find(hash, |s| &*s.key == *t).map(|s| s.data),
        }
    }

    /// The mode of a tenant whose slot has [`HAS_MODE`].
    pub(crate) fn mode(&self, tenant: &str) -> AssignmentMode {
        self.modes
            .iter()
            .find(|m| &*m.tenant == tenant)
            .map_or(AssignmentMode::Serving, |m| m.mode)
    }

    pub(crate) fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    fn set_mode(&mut self, tenant: &str, mode: AssignmentMode) -> u32 {
        self.modes.retain(|m| &*m.tenant != tenant);
        if mode == AssignmentMode::Serving {
            0
        } else {
            self.modes.push(ModeRec {
                tenant: tenant.into(),
                mode,
            });
            HAS_MODE
        }
    }

    /// Inserts or replaces the tenant's entry unless the shard holds a larger epoch. Refuses to
    /// replace a live entry by a tombstone of the same epoch and vice versa only by epoch order.
    /// Evicts the entry loaded longest ago when the shard is at `bound`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upsert(
        &mut self,
        hasher: &RandomState,
        tenant: &str,
        key: &Key<'_>,
        hash: u64,
        mut data: SlotData,
        mode: AssignmentMode,
        bound: usize,
    ) -> Upsert {
        if let Some(old) = self.get(key, hash) {
            if old.epoch > data.epoch {
                return Upsert::Kept;
            }
            data.meta = (data.meta & !HAS_MODE) | self.set_mode(tenant, mode);
            match key {
                Key::Short(k) => {
                    if let Some(s) = self.short.find_mut(hash, |s| s.key == *k) {
                        s.data = data;
                    }
                }
                Key::Long(t) => {
                    if let Some(s) = self.long.find_mut(hash, |s| &*s.key == *t) {
                        s.data = data;
                    }
                }
            }
            return Upsert::Replaced;
        }
        let evicted = if self.len() >= bound.max(1) {
            self.evict_oldest(hasher)
        } else {
            false
        };
        data.meta = (data.meta & !HAS_MODE) | self.set_mode(tenant, mode);
        match key {
            Key::Short(k) => {
                self.short
                    .insert_unique(hash, Slot { key: *k, data }, |s| short_hash(hasher, &s.key));
            }
            Key::Long(t) => {
                self.long.insert_unique(
                    hash,
                    Slot {
                        key: Box::from(*t),
                        data,
                    },
                    |s| long_hash(hasher, &s.key),
                );
            }
        }
        Upsert::Inserted { evicted }
    }

    /// Removes the tenant's entry; returns whether there was one.
    pub(crate) fn remove(&mut self, tenant: &str, key: &Key<'_>, hash: u64) -> bool {
        let removed = match key {
            Key::Short(k) => self
                .short
                .find_entry(hash, |s| s.key == *k)
                .map(|e| {
                    e.remove();
                })
                .is_ok(),
            Key::Long(t) => self
                .long
                .find_entry(hash, |s| &*s.key == *t)
                .map(|e| {
                    e.remove();
                })
                .is_ok(),
        };
        if removed {
            self.modes.retain(|m| &*m.tenant != tenant);
        }
        removed
    }

    /// Evicts the entry loaded longest ago; returns whether one was evicted.
    fn evict_oldest(&mut self, hasher: &RandomState) -> bool {
        let oldest_short = self.short.iter().min_by_key(|s| s.data.fetched).map(|s| (s.data.fetched, s.key));
        let oldest_long = self
            .long
            .iter()
            .min_by_key(|s| s.data.fetched)
            .map(|s| (s.data.fetched, s.key.clone()));
        match (oldest_short, oldest_long) {
            (Some((fs, k)), Some((fl, _))) if fs <= fl => self.remove_short(hasher, k),
            (Some((_, k)), None) => self.remove_short(hasher, k),
            (_, Some((_, t))) => {
                let hash = long_hash(hasher, &t);
                self.remove(&t, &Key::Long(&t), hash)
            }
            (None, None) => false,
        }
    }

    fn remove_short(&mut self, hasher: &RandomState, k: [u8; INLINE]) -> bool {
        let hash = short_hash(hasher, &k);
        let len = k.iter().position(|b| *b == 0).unwrap_or(INLINE);
        let text = k.get(..len).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
        let text: Box<str> = text.into();
        self.remove(&text, &Key::Short(k), hash)
    }

    /// Calls `f` with every tenant id and slot (for merging).
    fn for_each(&self, mut f: impl FnMut(&str, Key<'_>, SlotData, AssignmentMode)) {
        for s in self.short.iter() {
            let len = s.key.iter().position(|b| *b == 0).unwrap_or(INLINE);
            let text = s.key.get(..len).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
            let mode = if s.data.has_mode() { self.mode(text) } else { AssignmentMode::Serving };
            f(text, Key::Short(s.key), s.data, mode);
        }
        for s in self.long.iter() {
            let mode = if s.data.has_mode() { self.mode(&s.key) } else { AssignmentMode::Serving };
            f(&s.key, Key::Long(&s.key), s.data, mode);
        }
    }
}

/// The sharded copy-on-write table.
pub(crate) struct Table {
    shards: Box<[ArcSwap<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("shards", &self.shards.len())
            .field("per_shard", &self.per_shard)
            .finish()
    }
}

impl Table {
    /// A table bounded to about `max_entries` entries.
    pub(crate) fn new(max_entries: usize, shards: Option<usize>) -> Table {
        let max_entries = max_entries.max(1);
        let n = shards.unwrap_or_else(|| max_entries.div_ceil(PER_SHARD)).clamp(1, 1 << 20);
        let per_shard = max_entries.div_ceil(n).max(1);
        Table {
            shards: (0..n).map(|_| ArcSwap::from_pointee(Shard::default())).collect(),
            per_shard,
            hasher: RandomState::default(),
        }
    }

    /// The number of shards.
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    #[inline]
    pub(crate) fn hash(&self, key: &Key<'_>) -> u64 {
        match key {
            Key::Short(k) => short_hash(&self.hasher, k),
            Key::Long(t) => long_hash(&self.hasher, t),
        }
    }

    /// The shard index of a hash: bits 16..48 (hashbrown uses the low bits for the bucket and
    /// the top seven for the tag, so shards do not skew either).
    #[inline]
    pub(crate) fn index(&self, hash: u64) -> usize {
        let x = (hash >> 16) & 0xffff_ffff;
        ((x * self.shards.len() as u64) >> 32) as usize
    }

    /// The current version of shard `ix` (readers).
    #[inline]
    pub(crate) fn load(&self, ix: usize) -> Option<Guard<Arc<Shard>>> {
        self.shards.get(ix).map(ArcSwap::load)
    }

    /// Total entries (walks every shard; for stats, not the hot path).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.load().len()).sum()
    }

    /// Starts a batch of writes. The caller must hold the router's writer lock.
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch {
            table: self,
            staged: HashMap::new(),
        }
    }

    /// Replaces every shard by an empty one.
    pub(crate) fn clear(&self) {
        for s in self.shards.iter() {
            s.store(Arc::new(Shard::default()));
        }
    }
}

/// Staged shard copies, published together by [`Batch::commit`].
pub(crate) struct Batch<'t> {
    table: &'t Table,
    staged: HashMap<usize, Shard>,
}

impl Batch<'_> {
    fn shard(&mut self, ix: usize) -> &mut Shard {
        let table = self.table;
        self.staged
            .entry(ix)
            .or_insert_with(|| table.shards.get(ix).map(|s| Shard::clone(&s.load())).unwrap_or_default())
    }

    /// The entry for `tenant` as staged (or published).
    pub(crate) fn get(&mut self, key: &Key<'_>) -> Option<SlotData> {
        let hash = self.table.hash(key);
        let ix = self.table.index(hash);
        match self.staged.get(&ix) {
            Some(s) => s.get(key, hash),
            None => self.table.load(ix).and_then(|s| s.get(key, hash)),
        }
    }

    /// Stages an upsert.
    pub(crate) fn upsert(&mut self, tenant: &str, key: &Key<'_>, data: SlotData, mode: AssignmentMode) -> Upsert {
        let hash = self.table.hash(key);
        let ix = self.table.index(hash);
        let bound = self.table.per_shard;
        let hasher = self.table.hasher.clone();
        self.shard(ix).upsert(&hasher, tenant, key, hash, data, mode, bound)
    }

    /// Stages a removal.
    pub(crate) fn remove(&mut self, tenant: &str, key: &Key<'_>) -> bool {
        let hash = self.table.hash(key);
        let ix = self.table.index(hash);
        let present = match self.staged.get(&ix) {
            Some(s) => s.get(key, hash).is_some(),
            None => self.table.load(ix).and_then(|s| s.get(key, hash)).is_some(),
        };
        present && self.shard(ix).remove(tenant, key, hash)
    }

    /// Merges `from` (entries built off-line) into the staged table, keeping larger epochs.
    pub(crate) fn merge_shard(&mut self, ix: usize, from: &Shard) -> usize {
        let bound = self.table.per_shard;
        let hasher = self.table.hasher.clone();
        let shard = self.shard(ix);
        let mut n = 0;
        from.for_each(|tenant, key, data, mode| {
            let hash = match &key {
                Key::Short(k) => short_hash(&hasher, k),
                Key::Long(t) => long_hash(&hasher, t),
            };
            if shard.upsert(&hasher, tenant, &key, hash, data, mode, bound) != Upsert::Kept {
                n += 1;
            }
        });
        n
    }

    /// Publishes every staged shard.
    pub(crate) fn commit(self) {
        for (ix, shard) in self.staged {
            if let Some(s) = self.table.shards.get(ix) {
                s.store(Arc::new(shard));
            }
        }
    }
}

/// Builds shards off-line (warm-up, preload) before merging them into a [`Table`].
pub(crate) struct Builder<'t> {
    table: &'t Table,
    shards: HashMap<usize, Shard>,
}

impl<'t> Builder<'t> {
    pub(crate) fn new(table: &'t Table) -> Self {
        Builder {
            table,
            shards: HashMap::new(),
        }
    }

    pub(crate) fn add(&mut self, tenant: &str, key: &Key<'_>, data: SlotData, mode: AssignmentMode) {
        let hash = self.table.hash(key);
        let ix = self.table.index(hash);
        let bound = self.table.per_shard;
        let hasher = &self.table.hasher;
        let shard = self.shards.entry(ix).or_default();
        if shard.len() == 0 {
            shard.short.reserve(bound.min(256), |s| short_hash(hasher, &s.key));
        }
        shard.upsert(hasher, tenant, key, hash, data, mode, bound);
    }

    /// Merges everything built into the table (caller holds the writer lock).
    pub(crate) fn finish(self) -> usize {
        let mut n = 0;
        for (ix, built) in self.shards {
            let Some(slot) = self.table.shards.get(ix) else { continue };
            let current = slot.load();
            if current.len() == 0 {
                n += built.len();
                slot.store(Arc::new(built));
            } else {
                let mut batch = self.table.batch();
                n += batch.merge_shard(ix, &built);
                batch.commit();
            }
        }
        n
    }
}
