//! Lookups: the tagged probe (one tag word per group of eight slots), the linear probe, and
//! the chain walk that writers use to find a key's slot.

use std::sync::atomic::Ordering;

use super::slots::{same, tag_of};
use super::{FastTable, SlotData, Words, GRAVE, GROUP, KEY, STAMP_META, WORDS};

/// The high bit of every byte of `x` that is zero, and no other bit (exact: no false
/// positives, unlike the shorter has-zero-byte trick).
#[inline(always)]
pub(super) fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

impl FastTable {
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
    pub(super) fn locate(&self, key: &Words, hash: u64) -> (Option<usize>, Option<usize>, Option<(usize, u64)>) {
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
}
