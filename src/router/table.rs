//! The table for long tenant ids (over 24 bytes) and for the negative cache: copy-on-write
//! shards of inline-key hash tables.
//!
//! Readers load one shard through an [`ArcSwap`] (which touches only a per-thread debt slot,
//! never a cache line shared with other readers) and probe a hashbrown [`HashTable`] whose
//! slots hold tenant ids of up to [`INLINE`] bytes inline (no pointer chase). Writers are
//! serialized by the router; each write clones the shards it touches, edits the clones and
//! publishes them, so a reader always sees a whole shard as of one publish. Shards are small
//! (about 192 entries at the bound), so a clone costs a few microseconds. Only ids longer than
//! 24 bytes and the negative cache live here; the rest is in [`super::fast`].

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::model::{AssignmentMode, TenantId, TenantIdError};

/// Tenant ids up to this many bytes are stored inline in the table slot.
pub(crate) const INLINE: usize = 24;

/// An inline key: the id's bytes, zero-padded to 24, as three little-endian words.
pub(crate) type Words = [u64; 3];

/// The id's bytes as words; `bytes` holds at most [`INLINE`] bytes. Reads the input in place
/// (a partial last word is read as an overlapping 8-byte load, shifted), never through a
/// stack buffer, so no store-forwarding stall follows.
#[inline]
fn load_words(bytes: &[u8]) -> Words {
    #[inline]
    fn word(b: &[u8], at: usize) -> u64 {
        b.get(at..at + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map_or(0, u64::from_le_bytes)
    }
    let len = bytes.len();
    let mut w = [0u64; 3];
    let full = len / 8;
    for (i, x) in w.iter_mut().enumerate().take(full) {
        *x = word(bytes, 8 * i);
    }
    let tail = len % 8;
    if tail > 0 {
        let v = if len >= 8 {
            word(bytes, len - 8) >> (8 * (8 - tail))
        } else {
            bytes.iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        };
        if let Some(x) = w.get_mut(full) {
            *x = v;
        }
    }
    w
}

/// The id's text from its words.
pub(crate) fn words_text(w: &Words) -> Option<String> {
    let mut bytes = Vec::with_capacity(INLINE);
    for x in w {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(INLINE);
    bytes.truncate(len);
    String::from_utf8(bytes).ok()
}

/// Target entries per shard at the size bound: 192 entries fit a 256-bucket table.
const PER_SHARD: usize = 192;

/// `meta` bit: the tenant's mode is not `Serving`; look it up in the shard's mode list.
pub(crate) const HAS_MODE: u32 = 1 << 31;
/// `meta` bit: the entry records that the tenant has no assignment.
pub(crate) const TOMBSTONE: u32 = 1 << 30;
/// `meta` bits holding the router generation the entry was loaded in (bit 29 is the fast
/// table's grave flag).
pub(crate) const GEN_MASK: u32 = (1 << 29) - 1;

/// A validated tenant id as the table keys it.
#[derive(Clone, Copy)]
pub(crate) enum Key<'a> {
    /// Zero-padded inline bytes as three little-endian words (tenant ids never contain a
    /// zero byte, so padding is unambiguous).
    Short(Words),
    /// Longer ids, compared as text.
    Long(&'a str),
}

/// The padded words of `tenant` when it could be an inline id held by a table: 1 to
/// [`INLINE`] bytes, the last one not NUL. This is not validation, and needs none: tables only
/// hold validated ids, and if `tenant`'s words equal a held id's, `tenant` **is** that id. The
/// words agree on the id's bytes and are zero past them, so `tenant` is the id followed by
/// NUL bytes only; its last byte is not NUL, so there are none. A lookup that finds nothing
/// validates the text in full ([`Key::parse`]) to tell "unknown" from "invalid".
#[inline(always)]
pub(crate) fn inline_words(tenant: &str) -> Option<Words> {
    let bytes = tenant.as_bytes();
    match bytes.last() {
        Some(&last) if last != 0 && bytes.len() <= INLINE => Some(load_words(bytes)),
        _ => None,
    }
}

impl<'a> Key<'a> {
    /// Validates `tenant` (never allocating) and makes its key: the same rules as
    /// [`TenantId::validate`], checked with a byte-class table in the same pass that copies
    /// the id into its padded form; the exact error comes from `TenantId::validate`.
    #[inline]
    pub(crate) fn parse(tenant: &'a str) -> Result<Key<'a>, TenantIdError> {
        let bytes = tenant.as_bytes();
        let len = bytes.len();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if len <= INLINE && first_ok {
            let w = load_words(bytes);
            if valid_padded(&w, len) {
                return Ok(Key::Short(w));
            }
        }
        TenantId::validate(tenant)?;
        Ok(Key::Long(tenant))
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Per byte of `x`: the high bit is set iff `m < byte < n` (for `m`, `n` at most 127; bytes
/// of 128 and above never match). No carries cross bytes (Bit Twiddling Hacks' `hasbetween`).
#[inline]
const fn between(x: u64, m: u64, n: u64) -> u64 {
    let low7 = x & (ONES * 127);
    (ONES * (127 + n)).wrapping_sub(low7) & !x & low7.wrapping_add(ONES * (127 - m)) & HIGH
}

/// Whether the first `len` bytes of the zero-padded `k` are all in `a-z 0-9 . _ -`, eight
/// bytes at a time (the first byte is checked by the caller).
#[inline]
fn valid_padded(w: &Words, len: usize) -> bool {
    let mut ok = true;
    for (i, &x) in w.iter().enumerate() {
        let allowed = between(x, b'a' as u64 - 1, b'z' as u64 + 1)
            | between(x, b'0' as u64 - 1, b'9' as u64 + 1)
            | between(x, b'.' as u64 - 1, b'.' as u64 + 1)
            | between(x, b'_' as u64 - 1, b'_' as u64 + 1)
            | between(x, b'-' as u64 - 1, b'-' as u64 + 1);
        let used = len.saturating_sub(8 * i).min(8) as u32;
        let padding = HIGH.checked_shl(8 * used).unwrap_or(0);
        ok &= (allowed | padding) == HIGH;
    }
    ok
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
    short: HashTable<Slot<Words>>,
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

fn short_hash(hasher: &RandomState, k: &Words) -> u64 {
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
        let oldest_short = self
            .short
            .iter()
            .min_by_key(|s| s.data.fetched)
            .map(|s| (s.data.fetched, s.key));
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

    fn remove_short(&mut self, hasher: &RandomState, k: Words) -> bool {
        let hash = short_hash(hasher, &k);
        let text = words_text(&k).unwrap_or_default();
        self.remove(&text, &Key::Short(k), hash)
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
        let n = shards
            .unwrap_or_else(|| max_entries.div_ceil(PER_SHARD))
            .clamp(1, 1 << 20);
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
        self.staged.entry(ix).or_insert_with(|| {
            table
                .shards
                .get(ix)
                .map(|s| Shard::clone(&s.load()))
                .unwrap_or_default()
        })
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
        let hasher = self.table.hasher;
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

    /// Publishes every staged shard.
    pub(crate) fn commit(self) {
        for (ix, shard) in self.staged {
            if let Some(s) = self.table.shards.get(ix) {
                s.store(Arc::new(shard));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9][a-z0-9._-]{0,30}",
            "[a-zA-Z0-9._/ \\x00-]{0,30}",
            any::<String>(),
        ]
    }

    /// Every ASCII byte and a few non-ASCII characters, at every position of ids of every
    /// inline length (and just past it): the word-wise byte-class check agrees with
    /// `TenantId::validate`.
    #[test]
    fn parse_agrees_with_validate_for_every_byte_at_every_position() {
        let others = ['é', 'ÿ', '\u{80}', '\u{7ff}', '😀'];
        for len in 1..=INLINE + 1 {
            for pos in 0..len {
                let ascii = (0u8..128).map(char::from);
                for c in ascii.chain(others) {
                    let mut text: String = "a".repeat(len);
                    text.replace_range(pos..pos + 1, c.encode_utf8(&mut [0; 4]));
                    assert_eq!(Key::parse(&text).is_ok(), TenantId::validate(&text).is_ok(), "{text:?}");
                }
            }
        }
    }

    proptest! {
        /// The fast parser accepts exactly what `TenantId::validate` accepts, and keeps the text.
        #[test]
        fn parse_agrees_with_validate(text in id_text()) {
            let parsed = Key::parse(&text);
            prop_assert_eq!(parsed.is_ok(), TenantId::validate(&text).is_ok());
            match parsed {
                Ok(Key::Short(w)) => {
                    prop_assert!(text.len() <= INLINE);
                    prop_assert_eq!(words_text(&w), Some(text.clone()));
                }
                Ok(Key::Long(t)) => {
                    prop_assert!(text.len() > INLINE);
                    prop_assert_eq!(t, text.as_str());
                }
                Err(e) => prop_assert_eq!(Err(e), TenantId::validate(&text)),
            }
        }
    }
}
