//! Writes (the router's writer lock held): insert, replace, eviction at the bound, removal
//! (leaving a grave), clearing, and the rebuild that reclaims graves.

use std::sync::atomic::Ordering;

use super::slots::tag_of;
use super::{FastTable, SlotData, Upsert, Words, EMPTY_TAG, GRAVE_DATA, GRAVE_TAG};

impl FastTable {
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
